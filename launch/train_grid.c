/* launch/train_grid: sample grids during training (see train_grid.h). */
#include "launch/train_grid.h"

#include <stdlib.h>
#include <string.h>

#include "launch/generate.h"
#include "losses/samplers.h"

/* One block of a grid row: a network and its sampler. */
typedef struct GridBlock {
    Model *unet;
    SamplerConfig sampler;
    double cfg; /* classifier-free guidance; 1 = off */
} GridBlock;

/* What the denoiser callback needs: the network, its conditioning (uncond only when guided). */
typedef struct GridDenoise {
    const Model *unet;
    const TrainCond *cond, *uncond;
    double cfg;
} GridDenoise;

static int32_t grid_blocks(const Trainer *t, GridBlock *blocks) {
    const TrainConfig *c = &t->cfg;
    const TrainSampleConfig *s = &c->sample;
    int32_t n = 0;
    if (c->mode == TRAIN_MODE_ADD)
        for (int32_t i = 0; i < s->n_student_steps; i++) {
            SamplerConfig add = {SAMPLER_ADD, (int32_t)s->student_steps[i], c->loss.prediction, true};
            blocks[n++] = (GridBlock){t->student, add, 1};
        }
    if (s->teacher_steps > 0) {
        SamplerConfig sc = {s->teacher_sampler, (int32_t)s->teacher_steps, c->loss.prediction, true};
        blocks[n++] = (GridBlock){c->mode == TRAIN_MODE_ADD ? t->teacher : t->student, sc, s->teacher_cfg};
    }
    return n;
}

int32_t train_grid_blocks(const TrainConfig *c) {
    const TrainSampleConfig *s = &c->sample;
    return (c->mode == TRAIN_MODE_ADD ? s->n_student_steps : 0) + (s->teacher_steps > 0 ? 1 : 0);
}

void train_grid_size(const TrainConfig *cfg, int64_t *height, int64_t *width) {
    int64_t S = cfg->data.size, nb = train_grid_blocks(cfg);
    *height = cfg->sample.n_prompts * S;
    *width = nb * cfg->sample.per_prompt * S + (nb > 0 ? nb - 1 : 0) * TRAIN_GRID_GAP;
}

static Var *grid_denoise(Ctx *c, Var *z, int64_t t, void *user) {
    const GridDenoise *g = user;
    int64_t B = z->v.shape[0], ts[B];
    for (int64_t b = 0; b < B; b++) ts[b] = t;
    Var *cond = unet_pred(c, g->unet, z, ts, g->cond);
    if (!g->uncond || !cond) return cond;
    return generator_cfg_combine(c, unet_pred(c, g->unet, z, ts, g->uncond), cond, g->cfg);
}

/* images (B, S, S, C) in [-1, 1] (any device) -> canvas (H, W, C) at row y0, columns x0, x0 + S, ... */
static Status grid_paste(uint8_t *canvas, int64_t W, const Var *img, int64_t y0, int64_t x0) {
    int64_t B = img->v.shape[0], S = img->v.shape[1], C = img->v.shape[3];
    float *x = malloc((size_t)(B * S * S * C) * sizeof(float));
    if (!x) return addc_error_set(ADDC_ERR_NOMEM, "sample grid: out of memory");
    Status st = var_download_f32(img, x);
    for (int64_t b = 0; b < B && st == ADDC_OK; b++)
        for (int64_t i = 0; i < S; i++)
            generator_pixels_quantise(x + (b * S + i) * S * C, S * C, canvas + ((y0 + i) * W + x0 + b * S) * C);
    free(x);
    return st;
}

/* One row: the prompt's conditioning, then every block's images into the canvas. */
static Status grid_row(Ctx *c, Trainer *t, int32_t p, const GridBlock *blocks, int32_t nb, uint8_t *canvas,
                       int64_t W) {
    const TrainSampleConfig *s = &t->cfg.sample;
    int64_t B = s->per_prompt, S = t->cfg.data.size, f = latent_codec_downscale(&t->codec);
    const char *captions[B], *empty[B];
    for (int64_t b = 0; b < B; b++) captions[b] = s->prompts[p], empty[b] = "";
    TrainCond cond, uncond;
    TRY(text_condition_prompts(c, t, captions, B, &cond));
    bool guided = false;
    for (int32_t k = 0; k < nb; k++) guided |= blocks[k].cfg != 1;
    if (guided) TRY(text_condition_prompts(c, t, empty, B, &uncond));
    int64_t shape[4] = {B, S / f, S / f, latent_codec_channels(&t->codec)};
    SamplerNoise noise = {(uint64_t)s->seed, (uint64_t)(p * B), NULL};
    for (int32_t k = 0; k < nb; k++) {
        ArenaMark m = arena_mark(c->arena);
        GridDenoise g = {blocks[k].unet, &cond, blocks[k].cfg != 1 ? &uncond : NULL, blocks[k].cfg};
        /* no tape: per-block checkpointing frees each block's insides as it returns */
        UNet2D *u = &blocks[k].unet->net.unet;
        bool was = u->gradient_checkpointing;
        u->gradient_checkpointing = true;
        Var *z = sampler_run(c, &t->schedule, &blocks[k].sampler, 4, shape, &noise, grid_denoise, &g, NULL, NULL);
        u->gradient_checkpointing = was;
        Var *img = z ? latent_decode(c, &t->codec, z) : NULL;
        if (!img) return addc_error_status();
        TRY(grid_paste(canvas, W, img, p * S, k * (B * S + TRAIN_GRID_GAP)));
        arena_reset_to(c->arena, m);
    }
    return ADDC_OK;
}

Status train_grid_write(Trainer *t, const char *path) {
    const TrainConfig *c = &t->cfg;
    GridBlock blocks[8]; /* up to 4 student blocks and the teacher's */
    int32_t nb = grid_blocks(t, blocks);
    int64_t H, W, C = c->data.channels;
    train_grid_size(c, &H, &W);
    uint8_t *canvas = malloc((size_t)(H * W * C));
    if (!canvas) return addc_error_set(ADDC_ERR_NOMEM, "sample grid: out of memory");
    memset(canvas, 255, (size_t)(H * W * C));
    /* an arena of its own (the step arena's peak stays the step's), with a device companion on cuda */
    Arena arena, darena;
    arena_init(&arena, 16 << 20, 0);
    if (t->device == DEVICE_CUDA) {
        arena_init_device(&darena, 64 << 20, 0);
        arena_attach_device(&arena, &darena);
    }
    Ctx ctx = ctx_make(&arena, NULL, t->device);
    bool ema = c->mode == TRAIN_MODE_DIFFUSION && t->ema;
    if (ema) trainer_ema_swap(t);
    Status st = ADDC_OK;
    for (int32_t p = 0; p < c->sample.n_prompts && st == ADDC_OK; p++) st = grid_row(&ctx, t, p, blocks, nb, canvas, W);
    if (ema) trainer_ema_swap(t);
    arena_free(&arena);
    if (t->device == DEVICE_CUDA) arena_free(&darena);
    if (st == ADDC_OK && path) st = generator_png_save(canvas, H, W, C, path); /* NULL: ranks > 0 */
    free(canvas);
    return st == ADDC_OK ? st : addc_error_context(st, "sample grid %s", path);
}
