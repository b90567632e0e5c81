/* launch/generate: a UNet, its codec, text conditioning and schedule turned into images (see
 * generate.h). */
#include "launch/generate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ops.h"
#include "data/image.h"
#include "launch/cli.h"
#include "nn/forward.h"

const GeneratorKeys generator_keys_cli = {"--model", "--weights", "--vae", "--vae-weights", "--size"};
static const GeneratorKeys keys_student = {"student.config", "student.weights", "codec.vae.config",
                                           "codec.vae.weights", "data.size"};
static const GeneratorKeys keys_teacher = {"teacher.config", "teacher.weights", "codec.vae.config",
                                           "codec.vae.weights", "data.size"};

void generator_options_default(GeneratorOptions *o) {
    memset(o, 0, sizeof *o);
    o->codec = LATENT_CODEC_UNSHUFFLE;
    o->latent_scale = 1;
    text_cond_options_default(&o->text, &text_cond_keys_cli);
    o->schedule = (ScheduleConfig){SCHEDULE_SCALED_LINEAR, 1000, 0.00085, 0.012, false, 0x1p-24};
    o->prediction = PREDICTION_EPSILON;
    o->keys = generator_keys_cli;
}

Status generator_options_from_train(GeneratorOptions *o, const TrainConfig *cfg, const char *role) {
    generator_options_default(o);
    bool student = !strcmp(role, "student");
    if (!student && strcmp(role, "teacher"))
        return addc_error_set(ADDC_ERR_INVALID, "role '%s': student or teacher", role);
    const TrainModelConfig *m = student ? &cfg->student : &cfg->teacher;
    if (!m->config[0])
        return addc_error_set(ADDC_ERR_INVALID, "%s.config: the %s role has no model YAML in this config", role, role);
    net_spec_from_train(&o->unet, m);
    if (student && !m->weights[0] && cfg->mode == TRAIN_MODE_ADD && cfg->student_init == STUDENT_INIT_TEACHER) {
        o->unet.weights = cfg->teacher.weights; /* the student starts as the teacher */
        o->unet.seed = (uint64_t)cfg->teacher.init_seed;
    }
    o->keys = student ? keys_student : keys_teacher;
    o->codec = (LatentCodecKind)cfg->codec.kind;
    if (o->codec == LATENT_CODEC_VAE) net_spec_from_train(&o->vae, &cfg->codec.vae);
    o->latent_scale = o->codec == LATENT_CODEC_VAE ? 1 : cfg->codec.scale;
    text_cond_options_from_train(&o->text, &cfg->text);
    o->embeddings_by_caption = true;
    o->schedule = cfg->loss.schedule;
    o->prediction = cfg->loss.prediction;
    o->h = o->w = cfg->data.size;
    return ADDC_OK;
}

/* ---- init ---- */

Status generator_init(Generator *g, const GeneratorOptions *opt) {
    memset(g, 0, sizeof *g);
    g->opt = *opt;
    const GeneratorKeys *k = &g->opt.keys;
    if (!opt->unet.config) return addc_error_set(ADDC_ERR_INVALID, "%s: no UNet model YAML given", k->unet);
    TRY(net_spec_build(&g->unet, &opt->unet, k->unet, k->weights, MODEL_UNET));
    const UNet2DConfig *u = &g->unet.net.unet.cfg;
    if (opt->codec == LATENT_CODEC_VAE) {
        if (!opt->vae.config) return addc_error_set(ADDC_ERR_INVALID, "%s: the VAE codec needs a model YAML", k->vae);
        g->has_vae = true;
        TRY(net_spec_build(&g->vae, &opt->vae, k->vae, k->vae_weights, MODEL_VAE));
        g->codec = (LatentCodec){LATENT_CODEC_VAE, &g->vae.net.vae, g->vae.net.vae.cfg.out_channels, opt->latent_scale};
    } else if (opt->codec == LATENT_CODEC_NONE) {
        g->codec = (LatentCodec){LATENT_CODEC_NONE, NULL, u->in_channels, opt->latent_scale};
    } else {
        if (u->in_channels % 4)
            return addc_error_set(ADDC_ERR_INVALID, "the unshuffle codec needs the UNet's in_channels (%lld) to be a multiple of 4",
                                  (long long)u->in_channels);
        g->codec = (LatentCodec){LATENT_CODEC_UNSHUFFLE, NULL, u->in_channels / 4, opt->latent_scale};
    }
    if (latent_codec_channels(&g->codec) != u->in_channels)
        return addc_error_set(ADDC_ERR_INVALID, "the latents have %lld channels; the UNet takes %lld",
                              (long long)latent_codec_channels(&g->codec), (long long)u->in_channels);
    int64_t f = latent_codec_downscale(&g->codec), mult = f << (g->unet.net.unet.n_blocks - 1);
    g->h = opt->h ? opt->h : u->sample_size * f;
    g->w = opt->w ? opt->w : u->sample_size * f;
    if (g->h % mult || g->w % mult)
        return addc_error_set(ADDC_ERR_INVALID, "%s %lldx%lld: both sides must be multiples of %lld", k->size,
                              (long long)g->h, (long long)g->w, (long long)mult);
    g->oh = opt->oh ? opt->oh : g->h;
    g->ow = opt->ow ? opt->ow : g->w;

    TRY(text_cond_init(&g->text, &opt->text));
    TRY(text_cond_check_unet(&g->text, &g->unet.net.unet));
    TRY(noise_schedule_init(&g->schedule, &opt->schedule));
    /* no tape: every block is a memory scope that keeps only its output */
    model_set_checkpointing(&g->unet, true);
    if (g->has_vae) model_set_checkpointing(&g->vae, true);
    return ADDC_OK;
}

void generator_free(Generator *g) {
    text_cond_free(&g->text);
    if (g->has_vae) model_free(&g->vae);
    model_free(&g->unet);
    memset(g, 0, sizeof *g);
}

int64_t generator_image_channels(const Generator *g) { return g->codec.image_channels; }

/* ---- sampling ---- */

/* One generator_run call: what the denoiser needs (conditional, and with guidance unconditional). */
typedef struct GenCall {
    const Generator *g;
    Var *context[2]; /* (B, T, D) */
    Var *pooled[2];  /* (B, P) or NULL */
    Var *time_ids;   /* (B, 6) */
    double cfg;
} GenCall;

/* One row of conditioning, broadcast to B images: context (B, T, D), pooled (B, P) or NULL.
 * uncond: the empty prompt. */
static Status condition(Ctx *c, const Generator *g, const char *prompt, int64_t row, int64_t B, bool uncond,
                        Var **context, Var **pooled) {
    const UNet2D *un = &g->unet.net.unet;
    int64_t P = text_cond_unet_pooled_width(un);
    Var *ctx1 = NULL, *pool1 = NULL;
    const TextCond *tc = &g->text;
    const char *caption = uncond || !prompt ? "" : prompt;
    if (tc->kind == TEXT_COND_EMBEDDINGS && !g->opt.embeddings_by_caption) {
        TRY(text_cond_rows(c, tc, &row, 1, &ctx1, &pool1));
    } else if (tc->kind != TEXT_COND_NONE) {
        TRY(text_cond_encode(c, tc, &caption, 1, &ctx1, &pool1));
    } else {
        int64_t cs[3] = {1, 1, un->cfg.cross_attention_dim};
        ctx1 = var_zeros(c, DTYPE_F32, 3, cs);
    }
    if (!ctx1) return addc_error_status();
    if (P && !pool1) {
        int64_t ps[2] = {1, P};
        if (!(pool1 = var_zeros(c, DTYPE_F32, 2, ps))) return addc_error_status();
    }
    int64_t cs[3] = {B, ctx1->v.shape[1], ctx1->v.shape[2]}, ps[2] = {B, P};
    *context = op_broadcast_to(c, ctx1, 3, cs);
    *pooled = P ? op_broadcast_to(c, pool1, 2, ps) : NULL;
    return *context && (!P || *pooled) ? ADDC_OK : addc_error_status();
}

static Var *unet_call(Ctx *c, const GenCall *k, Var *z, Var *tv, int i) {
    const UNet2D *u = &k->g->unet.net.unet;
    UNetAddedCond add = {k->pooled[i], k->time_ids};
    return unet2d_forward(c, u, z, tv, k->context[i], u->has_add_embedding ? &add : NULL);
}

static Var *denoise(Ctx *c, Var *z, int64_t t, void *user) {
    const GenCall *k = user;
    int64_t B = z->v.shape[0];
    Var *tv = var_new(c, DTYPE_F32, 1, &B);
    if (!tv) return NULL;
    for (int64_t b = 0; b < B; b++) ((float *)tv->v.data)[b] = (float)t;
    Var *cond = unet_call(c, k, z, tv, 0);
    if (k->cfg == 1 || !cond) return cond;
    return generator_cfg_combine(c, unet_call(c, k, z, tv, 1), cond, k->cfg);
}

Var *generator_cfg_combine(Ctx *c, Var *uncond, Var *cond, double cfg) {
    if (!uncond || !cond) return NULL;
    int64_t B = cond->v.shape[0];
    double *w = ctx_alloc(c, 2 * B * (int64_t)sizeof(double));
    if (!w) return NULL;
    for (int64_t b = 0; b < B; b++) {
        w[b] = 1 - cfg;
        w[B + b] = cfg;
    }
    return diffusion_combine(c, uncond, w, cond, w + B);
}

Status generator_run(Generator *g, Ctx *c, const char *prompt, int64_t row, int64_t B, uint64_t seed,
                     uint64_t first_index, const SamplerConfig *sampler, double cfg_scale, Var **images) {
    *images = NULL;
    if (B < 1) return addc_error_set(ADDC_ERR_INVALID, "generate: batch %lld", (long long)B);
    bool by_caption = g->text.kind == TEXT_COND_ENCODER ||
                      (g->text.kind == TEXT_COND_EMBEDDINGS && g->opt.embeddings_by_caption);
    if (cfg_scale != 1 && !by_caption)
        return addc_error_set(ADDC_ERR_INVALID, "classifier-free guidance (cfg %g) needs a text encoder (the empty prompt)",
                              cfg_scale);
    GenCall k = {g, {NULL, NULL}, {NULL, NULL}, NULL, cfg_scale};
    TRY(condition(c, g, prompt, row, B, false, &k.context[0], &k.pooled[0]));
    if (cfg_scale != 1) TRY(condition(c, g, prompt, row, B, true, &k.context[1], &k.pooled[1]));
    int64_t ts[2] = {B, 6};
    if (!(k.time_ids = var_new(c, DTYPE_F32, 2, ts))) return addc_error_status();
    for (int64_t b = 0; b < B; b++) {
        float *ti = (float *)k.time_ids->v.data + 6 * b;
        ti[0] = (float)g->oh, ti[1] = (float)g->ow, ti[2] = 0, ti[3] = 0, ti[4] = (float)g->h, ti[5] = (float)g->w;
    }
    int64_t f = latent_codec_downscale(&g->codec);
    int64_t shape[4] = {B, g->h / f, g->w / f, g->unet.net.unet.cfg.in_channels};
    SamplerConfig sc = *sampler;
    sc.prediction = g->opt.prediction;
    SamplerNoise nz = {seed, first_index, NULL};
    Var *z = sampler_run(c, &g->schedule, &sc, 4, shape, &nz, denoise, &k, NULL, NULL);
    *images = z ? latent_decode(c, &g->codec, z) : NULL;
    return *images ? ADDC_OK : addc_error_status();
}

void generator_pixels_quantise(const float *x, int64_t n, uint8_t *out) {
    for (int64_t i = 0; i < n; i++) {
        double v = ((double)x[i] + 1.0) * 127.5;
        out[i] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : (int)(v + 0.5));
    }
}

Status generator_png_save(const uint8_t *px, int64_t H, int64_t W, int64_t C, const char *path) {
    uint8_t *png = NULL;
    int64_t len = 0;
    TRY(image_png_encode(px, (int32_t)H, (int32_t)W, (int32_t)C, &png, &len));
    char tmp[1300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        free(png);
        return addc_error_set(ADDC_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    int64_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, png + done, (size_t)(len - done));
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        done += w;
    }
    free(png);
    bool ok = done == len && fsync(fd) == 0;
    if (close(fd) != 0) ok = false;
    if (!ok || rename(tmp, path) != 0) {
        Status st = addc_error_set(ADDC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return st;
    }
    return ADDC_OK;
}

Status generator_png_write(const float *image, int64_t H, int64_t W, int64_t C, const char *path) {
    if (C != 1 && C != 3)
        return addc_error_set(ADDC_ERR_INVALID, "decoded images have %lld channels; PNGs take 1 or 3", (long long)C);
    uint8_t *px = malloc((size_t)(H * W * C));
    if (!px) return addc_error_set(ADDC_ERR_NOMEM, "images: out of memory");
    generator_pixels_quantise(image, H * W * C, px);
    Status st = generator_png_save(px, H, W, C, path);
    free(px);
    return st;
}
