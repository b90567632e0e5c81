/* launch/train_setup: the networks, batch, conditioning, features and optimizer of a training
 * run (see train_setup.h). */
#include "launch/train_setup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/rng.h"
#include "losses/draw.h"

/* ---- networks ---- */

static Status model_load_weights(Model *m, const char *path) {
    switch (m->kind) {
    case MODEL_UNET: return unet2d_load(&m->net.unet, &m->params, path, NULL, NULL);
    case MODEL_VAE: return vae_load(&m->net.vae, &m->params, path, NULL, NULL);
    case MODEL_DINOV2: return dinov2_load(&m->net.vit, &m->params, path, NULL, NULL);
    case MODEL_CLIP_TEXT: return clip_text_load(&m->net.clip, &m->params, path, NULL, NULL, NULL);
    case MODEL_DISC_HEADS: return disc_heads_load(&m->net.disc, &m->params, &m->state, path, NULL, NULL);
    default: return addc_error_set(ADDC_ERR_INVALID, "model kind %d", (int)m->kind);
    }
}

/* Builds a role's network (kind checked), then loads its weights or draws fresh ones. */
static Status role_build(Model **out, const TrainModelConfig *mc, const char *role, ModelKind kind, bool trainable) {
    Model *m = calloc(1, sizeof *m);
    if (!m) return addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory", role);
    *out = m;
    const char *ov[TRAIN_MAX_MODEL_OVERRIDES];
    for (int32_t i = 0; i < mc->n_overrides; i++) ov[i] = mc->overrides[i];
    Status st = model_build(m, mc->config, ov, mc->n_overrides, DEVICE_CPU, trainable);
    if (st != ADDC_OK) return addc_error_context(st, "%s", role);
    if (m->kind != kind)
        return addc_error_set(ADDC_ERR_INVALID, "%s.config: %s is a %s, the role needs a %s", role, mc->config,
                              model_kind_name(m->kind), model_kind_name(kind));
    if (mc->weights[0]) {
        st = model_load_weights(m, mc->weights);
        if (st != ADDC_OK) return addc_error_context(st, "%s.weights", role);
        return ADDC_OK;
    }
    if (kind == MODEL_DISC_HEADS)
        return disc_heads_init_weights(&m->net.disc, &m->params, &m->state, (uint64_t)mc->init_seed);
    return param_store_init_random(&m->params, (uint64_t)mc->init_seed);
}

static void role_free(Model **m) {
    if (*m) {
        model_free(*m);
        free(*m);
    }
    *m = NULL;
}

/* The student starts as a copy of the teacher (ADD.md "Networks"). */
static Status student_from_teacher(Trainer *t) {
    ParamStore *s = &t->student->params, *te = &t->teacher->params;
    if (s->n != te->n || s->numel != te->numel)
        return addc_error_set(ADDC_ERR_INVALID,
                              "student_init teacher: student.config and teacher.config describe different UNets "
                              "(%d tensors, %lld values vs %d, %lld)",
                              s->n, (long long)s->numel, te->n, (long long)te->numel);
    memcpy(s->data, te->data, (size_t)s->numel * sizeof(float));
    return ADDC_OK;
}

static Status optimizer_init(Optimizer *o, ParamStore *p, const TrainOptimConfig *cfg) {
    o->cfg = cfg;
    o->params = p;
    o->m = calloc((size_t)p->numel, sizeof(float));
    o->v = calloc((size_t)p->numel, sizeof(float));
    o->step = 0;
    if (!o->m || !o->v) return addc_error_set(ADDC_ERR_NOMEM, "optimizer state: out of memory");
    return ADDC_OK;
}

static Status check_shapes(const Trainer *t) {
    const UNet2DConfig *u = &t->student->net.unet.cfg;
    int64_t lc = latent_codec_channels(&t->codec);
    if (u->in_channels != lc || u->out_channels != lc)
        return addc_error_set(ADDC_ERR_INVALID,
                              "student.config: the UNet has %lld in / %lld out channels, the codec's latents %lld",
                              (long long)u->in_channels, (long long)u->out_channels, (long long)lc);
    int64_t f = latent_codec_downscale(&t->codec) << (t->student->net.unet.n_blocks - 1);
    if (t->cfg.data.size % f)
        return addc_error_set(ADDC_ERR_INVALID, "data.size: %lld is not a multiple of %lld (codec x UNet levels)",
                              (long long)t->cfg.data.size, (long long)f);
    if (t->text) {
        const ClipText *ct = &t->text->net.clip;
        if (ct->cfg.hidden_size != u->cross_attention_dim)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "text.encoder: hidden size %lld, the UNet's cross_attention_dim is %lld",
                                  (long long)ct->cfg.hidden_size, (long long)u->cross_attention_dim);
    }
    if (t->heads) {
        const DiscHeadsConfig *h = &t->heads->net.disc.cfg;
        const Dinov2Config *v = &t->feature->net.vit.cfg;
        int64_t taps = v->n_tap_blocks + (v->tap_patch_embedding ? 1 : 0);
        if (h->n_heads != taps || h->channels != v->hidden_size)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "heads.config: %lld heads of %lld channels, the feature network gives %lld taps of "
                                  "%lld",
                                  (long long)h->n_heads, (long long)h->channels, (long long)taps,
                                  (long long)v->hidden_size);
        int64_t c_dim = 0;
        if (t->text) {
            const ClipText *ct = &t->text->net.clip;
            c_dim += ct->text_projection.weight ? ct->cfg.projection_dim : ct->cfg.hidden_size;
        }
        if (t->image_encoder) c_dim += t->image_encoder->net.vit.cfg.hidden_size;
        if (h->c_dim != c_dim)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "heads.config: c_dim %lld, but the text and image conditioning give %lld",
                                  (long long)h->c_dim, (long long)c_dim);
    }
    return ADDC_OK;
}

static Status loader_start(Trainer *t) {
    const TrainConfig *c = &t->cfg;
    LoaderConfig lc;
    loader_config_default(&lc);
    lc.shards = c->data.shards;
    lc.batch_size = c->batch;
    lc.height = lc.width = (int32_t)c->data.size;
    lc.flip = c->data.flip;
    lc.seed = (uint64_t)c->seed;
    lc.threads = (int32_t)c->data.threads;
    lc.shuffle = (int32_t)c->data.shuffle;
    lc.require_caption = c->text.source == TEXT_SOURCE_ENCODER;
    TRY(loader_open(&lc, NULL, &t->loader));
    TrainBatch *b = &t->batch;
    b->B = c->batch;
    b->S = c->data.size;
    b->C = c->data.channels;
    b->images = malloc((size_t)(b->B * b->S * b->S * b->C) * sizeof(float));
    b->captions = calloc((size_t)b->B, sizeof(char *));
    b->time_ids = malloc((size_t)b->B * 6 * sizeof(float));
    if (!b->images || !b->captions || !b->time_ids) return addc_error_set(ADDC_ERR_NOMEM, "batch: out of memory");
    return ADDC_OK;
}

Status trainer_init(Trainer *t, const TrainConfig *cfg) {
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    const TrainConfig *c = &t->cfg;
    bool add = c->mode == TRAIN_MODE_ADD;
    arena_init(&t->arena, 64 << 20, 0);
    tape_init(&t->tape);
    TRY(noise_schedule_init(&t->schedule, &c->loss.schedule));

    if (add) {
        TRY(role_build(&t->teacher, &c->teacher, "teacher", MODEL_UNET, false));
        t->teacher_sumsq = trainer_teacher_sumsq(t);
    }
    TRY(role_build(&t->student, &c->student, "student", MODEL_UNET, true));
    if (add && c->student_init == STUDENT_INIT_TEACHER) TRY(student_from_teacher(t));

    t->codec.kind = (LatentCodecKind)c->codec.kind;
    t->codec.image_channels = c->data.channels;
    t->codec.scale = c->codec.scale;
    if (t->codec.kind == LATENT_CODEC_VAE) {
        TRY(role_build(&t->vae, &c->codec.vae, "codec.vae", MODEL_VAE, false));
        t->codec.vae = &t->vae->net.vae;
        if (t->vae->net.vae.cfg.in_channels != c->data.channels)
            return addc_error_set(ADDC_ERR_INVALID, "codec.vae: the VAE takes %lld channels, data.channels is %lld",
                                  (long long)t->vae->net.vae.cfg.in_channels, (long long)c->data.channels);
    }
    if (c->text.source == TEXT_SOURCE_ENCODER) {
        TRY(role_build(&t->text, &c->text.encoder, "text.encoder", MODEL_CLIP_TEXT, false));
        Status st = clip_tokenizer_load(&t->tokenizer, c->text.tokenizer);
        if (st != ADDC_OK) return addc_error_context(st, "text.tokenizer");
        t->has_tokenizer = true;
        t->pad_id = clip_tokenizer_token_id(&t->tokenizer, t->text->net.clip.cfg.pad_token);
        if (t->pad_id < 0)
            return addc_error_set(ADDC_ERR_INVALID, "text.encoder: pad_token '%s' is not in the tokenizer's vocabulary",
                                  t->text->net.clip.cfg.pad_token);
    }
    if (add) {
        TRY(role_build(&t->feature, &c->feature, "feature", MODEL_DINOV2, false));
        if (c->image_encoder.config[0])
            TRY(role_build(&t->image_encoder, &c->image_encoder, "image_encoder", MODEL_DINOV2, false));
        TRY(role_build(&t->heads, &c->heads, "heads", MODEL_DISC_HEADS, true));
        TRY(optimizer_init(&t->opt_d, &t->heads->params, &c->opt_d));
    }
    TRY(check_shapes(t));
    TRY(optimizer_init(&t->opt_g, &t->student->params, &c->opt_g));
    if (c->ema_decay > 0) {
        t->ema = malloc((size_t)t->student->params.numel * sizeof(float));
        if (!t->ema) return addc_error_set(ADDC_ERR_NOMEM, "ema: out of memory");
        memcpy(t->ema, t->student->params.data, (size_t)t->student->params.numel * sizeof(float));
    }
    return loader_start(t);
}

void trainer_free(Trainer *t) {
    if (t->loader) loader_free(t->loader);
    if (t->batch.captions)
        for (int64_t i = 0; i < t->batch.B; i++) free(t->batch.captions[i]);
    free(t->batch.captions);
    free(t->batch.images);
    free(t->batch.time_ids);
    free(t->opt_g.m);
    free(t->opt_g.v);
    free(t->opt_d.m);
    free(t->opt_d.v);
    free(t->ema);
    if (t->has_tokenizer) clip_tokenizer_free(&t->tokenizer);
    role_free(&t->student);
    role_free(&t->teacher);
    role_free(&t->feature);
    role_free(&t->image_encoder);
    role_free(&t->heads);
    role_free(&t->vae);
    role_free(&t->text);
    tape_free(&t->tape);
    arena_free(&t->arena);
}

/* ---- batch ---- */

Status trainer_next_batch(Trainer *t) {
    if (t->have_batch && t->cfg.data.fixed_batch) return ADDC_OK;
    Batch *lb;
    TRY(loader_next(t->loader, &lb));
    TrainBatch *b = &t->batch;
    int64_t px = b->S * b->S;
    for (int64_t i = 0; i < b->B * px; i++)
        for (int64_t ch = 0; ch < b->C; ch++) b->images[i * b->C + ch] = lb->images[i * 3 + ch];
    for (int64_t i = 0; i < b->B; i++) {
        free(b->captions[i]);
        b->captions[i] = strdup(lb->captions[i] ? lb->captions[i] : "");
        if (!b->captions[i]) return addc_error_set(ADDC_ERR_NOMEM, "batch: out of memory");
        float *ti = b->time_ids + 6 * i;
        ti[0] = (float)lb->original_size[2 * i];
        ti[1] = (float)lb->original_size[2 * i + 1];
        ti[2] = (float)lb->crop_top_left[2 * i];
        ti[3] = (float)lb->crop_top_left[2 * i + 1];
        ti[4] = (float)lb->target_size[2 * i];
        ti[5] = (float)lb->target_size[2 * i + 1];
    }
    t->have_batch = true;
    return ADDC_OK;
}

Var *batch_images(Ctx *c, const TrainBatch *b) {
    int64_t shape[4] = {b->B, b->S, b->S, b->C};
    return var_leaf(c, tensor_make(b->images, DTYPE_F32, DEVICE_CPU, 4, shape), false);
}

/* ---- conditioning ---- */

static Var *zeros(Ctx *c, int32_t nd, const int64_t *shape) { return var_zeros(c, DTYPE_F32, nd, shape); }

Status text_condition(Ctx *c, Trainer *t, double drop_prob, bool uncond, TrainCond *out) {
    memset(out, 0, sizeof *out);
    const TrainBatch *b = &t->batch;
    const UNet2D *u = &t->student->net.unet;
    int64_t B = b->B;
    int64_t tshape[2] = {B, 6};
    out->time_ids = var_leaf(c, tensor_make(b->time_ids, DTYPE_F32, DEVICE_CPU, 2, tshape), false);
    if (t->text) {
        const ClipText *ct = &t->text->net.clip;
        int32_t T = (int32_t)ct->cfg.max_position_embeddings;
        int64_t ishape[2] = {B, T};
        Var *ids = var_new(c, DTYPE_I32, 2, ishape);
        if (!ids) return addc_error_status();
        float drop[1];
        for (int64_t i = 0; i < B; i++) {
            bool empty = uncond;
            if (!empty && drop_prob > 0) {
                RngKey k = rng_key((uint64_t)t->cfg.seed, RNG_PURPOSE_DROPOUT, (uint64_t)(t->step * B + i),
                                   (uint32_t)t->step);
                rng_fill_uniform(&k, 0, 1, drop);
                empty = drop[0] < drop_prob;
            }
            TRY(clip_tokenizer_tokenize(&t->tokenizer, empty ? "" : b->captions[i], -1,
                                        (TokenizerClean)t->cfg.text.clean, T, t->pad_id,
                                        (int32_t *)ids->v.data + i * T));
        }
        ClipTextOutput o;
        TRY(clip_text_forward(c, ct, ids, &o));
        out->context = t->cfg.text.layer == TEXT_LAYER_LAST ? o.last : o.penultimate;
        out->pooled = o.text_embeds ? o.text_embeds : o.pooled;
    } else {
        int64_t cshape[3] = {B, 1, u->cfg.cross_attention_dim};
        out->context = zeros(c, 3, cshape);
    }
    if (u->has_add_embedding) {
        int64_t P = u->cfg.projection_class_embeddings_input_dim - 6 * u->cfg.addition_time_embed_dim;
        Var *pooled = out->pooled;
        if (!pooled || pooled->v.shape[1] != P) {
            if (pooled)
                return addc_error_set(ADDC_ERR_INVALID,
                                      "text.encoder: pooled width %lld, the UNet's text_time embedding takes %lld",
                                      (long long)pooled->v.shape[1], (long long)P);
            int64_t pshape[2] = {B, P};
            pooled = zeros(c, 2, pshape);
        }
        out->added.text_embeds = pooled;
        out->added.time_ids = out->time_ids;
        out->has_added = true;
    }
    return out->context ? ADDC_OK : addc_error_status();
}

/* ---- discriminator ---- */

int disc_head_count(const Trainer *t) { return (int)t->heads->net.disc.cfg.n_heads; }

/* (B, S, S, C) -> what the network takes: gray images repeated to its channels */
static Var *vit_input(Ctx *c, const Dinov2 *vit, Var *images) {
    if (!images) return NULL;
    if (images->v.shape[3] != vit->cfg.num_channels) {
        int64_t shape[4] = {images->v.shape[0], images->v.shape[1], images->v.shape[2], vit->cfg.num_channels};
        images = op_broadcast_to(c, images, 4, shape);
    }
    return dinov2_preprocess(c, vit, images);
}

Status disc_features(Ctx *c, const Trainer *t, Var *images, Var **features) {
    const Dinov2 *vit = &t->feature->net.vit;
    Var *px = vit_input(c, vit, images);
    if (!px) return addc_error_status();
    Dinov2Output o;
    TRY(dinov2_forward(c, vit, px, false, &o));
    for (int k = 0; k < o.n_taps; k++) {
        features[k] = disc_tokens_readout(c, o.taps[k]);
        if (!features[k]) return addc_error_status();
    }
    return ADDC_OK;
}

Var *disc_condition(Ctx *c, const Trainer *t, const TrainCond *cond, Var *real_images) {
    Var *text = t->text ? cond->pooled : NULL;
    Var *img = NULL;
    if (t->image_encoder) {
        const Dinov2 *vit = &t->image_encoder->net.vit;
        Dinov2Output o;
        Var *px = vit_input(c, vit, real_images);
        if (!px || dinov2_forward(c, vit, px, true, &o) != ADDC_OK) return NULL;
        img = o.cls;
    }
    if (text && img) return op_concat(c, text, img, 1);
    return text ? text : img;
}

Status disc_logits(Ctx *c, const Trainer *t, Var *const *features, Var *cond, bool update_sn, Var **logits) {
    for (int k = 0; k < disc_head_count(t); k++) {
        logits[k] = disc_head_forward(c, &t->heads->net.disc, k, features[k], cond, update_sn);
        if (!logits[k]) return addc_error_status();
    }
    return ADDC_OK;
}

/* ---- optimizer ---- */

double optimizer_lr(const Optimizer *o) {
    double lr = o->cfg->lr;
    if (o->cfg->warmup > 0 && o->step < o->cfg->warmup) lr *= (double)(o->step + 1) / (double)o->cfg->warmup;
    return lr;
}

double optimizer_step(Optimizer *o) {
    ParamStore *p = o->params;
    float *g[1] = {p->grad};
    int64_t n[1] = {p->numel};
    double norm = o->cfg->grad_clip > 0 ? grad_clip_global_norm(g, n, 1, o->cfg->grad_clip) : grad_global_norm(g, n, 1);
    AdamWConfig a = {optimizer_lr(o), o->cfg->beta1, o->cfg->beta2, o->cfg->eps, o->cfg->weight_decay};
    o->step++;
    adamw_update(p->data, p->grad, o->m, o->v, p->numel, &a, o->step);
    param_store_zero_grad(p);
    return norm;
}

void trainer_ema_update(Trainer *t) {
    if (t->ema) ema_update(t->ema, t->student->params.data, t->student->params.numel, t->cfg.ema_decay);
}

Status trainer_save_student(Trainer *t, const char *path, bool ema) {
    ParamStore *p = &t->student->params;
    if (!ema) return weights_save(p, path, DTYPE_F32, NULL);
    size_t bytes = (size_t)p->numel * sizeof(float);
    float *keep = malloc(bytes);
    if (!keep) return addc_error_set(ADDC_ERR_NOMEM, "saving the EMA: out of memory");
    memcpy(keep, p->data, bytes);
    memcpy(p->data, t->ema, bytes);
    Status st = weights_save(p, path, DTYPE_F32, NULL);
    memcpy(p->data, keep, bytes);
    free(keep);
    return st;
}

double trainer_teacher_sumsq(const Trainer *t) {
    return t->teacher ? sum_squares(t->teacher->params.data, t->teacher->params.numel) : 0.0;
}
