/* nn/model: build any network from its model YAML; probe its forward on the meta device; the
 * FSDP memory arithmetic. See nn/model.h. */
#include "nn/model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <yaml.h>

#include "core/ops.h"

#define MODEL_UNET_LATENT_FACTOR 8 /* the SD / SDXL VAE: 512 px <-> 64 latent */
#define MODEL_DISC_TOKENS 256      /* DINOv2 ViT-S/14 at 224 px: 16 x 16 patches */
#define MODEL_UNET_TOKENS 77       /* the CLIP context */

const char *model_kind_name(ModelKind k) {
    static const char *const names[MODEL_KIND_COUNT] = {"UNet2DConditionModel", "AutoencoderKL", "Dinov2Model",
                                                        "CLIPTextModel", "DiscHeads", "ConvNet"};
    return k >= 0 && k < MODEL_KIND_COUNT ? names[k] : "?";
}

/* ---- which network a YAML describes ---- */

typedef struct TopKeys {
    char class_name[64], model_type[64];
    bool n_heads;
} TopKeys;

static void top_key_seen(TopKeys *k, const char *key, const char *value) {
    if (!strcmp(key, "_class_name") && value) snprintf(k->class_name, sizeof k->class_name, "%s", value);
    if (!strcmp(key, "model_type") && value) snprintf(k->model_type, sizeof k->model_type, "%s", value);
    if (!strcmp(key, "n_heads")) k->n_heads = true;
}

/* the scalar keys of the top-level mapping and their scalar values */
static Status top_keys_read(const char *path, TopKeys *k) {
    memset(k, 0, sizeof *k);
    FILE *f = fopen(path, "rb");
    if (!f) return addc_error_set(ADDC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p)) {
        fclose(f);
        return addc_error_set(ADDC_ERR_NOMEM, "libyaml: cannot initialise a parser");
    }
    yaml_parser_set_input_file(&p, f);
    Status st = ADDC_OK;
    int depth = 0;
    bool want_key = true;
    char key[128] = "";
    for (bool done = false; !done && st == ADDC_OK;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            st = addc_error_set(ADDC_ERR_FORMAT, "%s:%zu:%zu: %s", path, p.problem_mark.line + 1,
                                p.problem_mark.column + 1, p.problem ? p.problem : "YAML syntax error");
            break;
        }
        switch (ev.type) {
        case YAML_MAPPING_START_EVENT:
        case YAML_SEQUENCE_START_EVENT:
            if (depth == 1 && !want_key) {
                top_key_seen(k, key, NULL);
                want_key = true;
            }
            depth++;
            break;
        case YAML_MAPPING_END_EVENT:
        case YAML_SEQUENCE_END_EVENT: depth--; break;
        case YAML_SCALAR_EVENT:
            if (depth != 1) break;
            if (want_key) {
                snprintf(key, sizeof key, "%s", (const char *)ev.data.scalar.value);
            } else {
                top_key_seen(k, key, (const char *)ev.data.scalar.value);
            }
            want_key = !want_key;
            break;
        case YAML_ALIAS_EVENT:
            if (depth == 1) want_key = !want_key;
            break;
        case YAML_DOCUMENT_END_EVENT:
        case YAML_STREAM_END_EVENT: done = true; break;
        default: break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    fclose(f);
    return st;
}

Status model_kind_detect(const char *path, ModelKind *kind) {
    TopKeys k;
    TRY(top_keys_read(path, &k));
    if (!strcmp(k.class_name, "UNet2DConditionModel")) *kind = MODEL_UNET;
    else if (!strcmp(k.class_name, "AutoencoderKL")) *kind = MODEL_VAE;
    else if (!strcmp(k.model_type, "dinov2")) *kind = MODEL_DINOV2;
    else if (!strcmp(k.model_type, "clip_text_model")) *kind = MODEL_CLIP_TEXT;
    else if (!strcmp(k.model_type, "convnet")) *kind = MODEL_CONVNET;
    else if (!k.class_name[0] && !k.model_type[0] && k.n_heads) *kind = MODEL_DISC_HEADS;
    else if (k.class_name[0] || k.model_type[0])
        return addc_error_set(ADDC_ERR_UNSUPPORTED,
                              "%s: %s '%s' is not a network addc builds (UNet2DConditionModel, AutoencoderKL, "
                              "model_type dinov2, clip_text_model or convnet)",
                              path, k.class_name[0] ? "_class_name" : "model_type",
                              k.class_name[0] ? k.class_name : k.model_type);
    else
        return addc_error_set(ADDC_ERR_FORMAT,
                              "%s: cannot tell which network this is: a model YAML names it with `_class_name: "
                              "UNet2DConditionModel` or `AutoencoderKL`, `model_type: dinov2`, `clip_text_model` or "
                              "`convnet`, or is the discriminator heads' (`n_heads: ...`); see configs/models/",
                              path);
    return ADDC_OK;
}

/* ---- building ---- */

static Status model_build_net(Model *m, const char *path, const char *const *ov, int32_t nov) {
    switch (m->kind) {
    case MODEL_UNET: {
        UNet2DConfig cfg;
        TRY(unet2d_config_load(&cfg, path, ov, nov));
        m->built = true;
        return unet2d_init(&m->net.unet, &cfg, &m->params);
    }
    case MODEL_VAE: {
        VaeConfig cfg;
        TRY(vae_config_load(&cfg, path, ov, nov));
        m->built = true;
        return vae_init(&m->net.vae, &cfg, &m->params);
    }
    case MODEL_DINOV2: {
        Dinov2Config cfg;
        TRY(dinov2_config_load(&cfg, path, ov, nov));
        m->built = true;
        return dinov2_init(&m->net.vit, &cfg, &m->params);
    }
    case MODEL_CLIP_TEXT: {
        ClipTextConfig cfg;
        TRY(clip_text_config_load(&cfg, path, ov, nov));
        m->built = true;
        TRY(clip_text_init(&m->net.clip, &cfg, &m->params));
        if (m->net.clip.cfg.n_architectures > 0) m->class_name = m->net.clip.cfg.architectures[0];
        return ADDC_OK;
    }
    case MODEL_DISC_HEADS: {
        DiscHeadsConfig cfg;
        TRY(disc_heads_config_load(&cfg, path, ov, nov));
        m->built = true;
        return disc_heads_init(&m->net.disc, &cfg, &m->params, &m->state);
    }
    case MODEL_CONVNET: {
        ConvNetConfig cfg;
        TRY(convnet_config_load(&cfg, path, ov, nov));
        m->built = true;
        return convnet_init(&m->net.convnet, &cfg, &m->params);
    }
    default: return addc_error_set(ADDC_ERR_INVALID, "model: kind %d", (int)m->kind);
    }
}

Status model_build(Model *m, const char *path, const char *const *overrides, int32_t n_overrides, Device dev,
                   bool trainable) {
    memset(m, 0, sizeof *m);
    param_store_init(&m->params, dev);
    param_store_init(&m->state, dev);
    TRY(model_kind_detect(path, &m->kind));
    m->class_name = model_kind_name(m->kind);
    Status st = model_build_net(m, path, overrides, n_overrides);
    if (st != ADDC_OK) return addc_error_context(st, "%s (%s)", path, model_kind_name(m->kind));
    TRY(param_store_alloc(&m->params, trainable));
    return param_store_alloc(&m->state, false);
}

void model_free(Model *m) {
    if (m->built) {
        switch (m->kind) {
        case MODEL_UNET: unet2d_free(&m->net.unet); break;
        case MODEL_VAE: vae_free(&m->net.vae); break;
        case MODEL_DINOV2: dinov2_free(&m->net.vit); break;
        case MODEL_CLIP_TEXT: clip_text_free(&m->net.clip); break;
        case MODEL_CONVNET: convnet_free(&m->net.convnet); break;
        default: break;
        }
    }
    param_store_free(&m->params);
    param_store_free(&m->state);
    m->built = false;
}

void model_set_checkpointing(Model *m, bool on) {
    switch (m->kind) {
    case MODEL_UNET: m->net.unet.gradient_checkpointing = on; break;
    case MODEL_VAE: m->net.vae.gradient_checkpointing = on; break;
    case MODEL_DINOV2: m->net.vit.gradient_checkpointing = on; break;
    case MODEL_CLIP_TEXT: m->net.clip.gradient_checkpointing = on; break;
    case MODEL_CONVNET: m->net.convnet.gradient_checkpointing = on; break;
    default: break;
    }
}

/* ---- probing on meta ---- */

/* the resolved input of a probe */
typedef struct ProbeDims {
    int64_t B, H, W, T;
} ProbeDims;

static Var *meta_input(Ctx *c, DType dt, int32_t nd, int64_t a, int64_t b, int64_t d2, int64_t d3) {
    int64_t s[4] = {a, b, d2, d3};
    Var *v = var_new(c, dt, nd, s);
    if (v) v->requires_grad = dt == DTYPE_F32;
    return v;
}

static Status probe_dims(const Model *m, const ModelInput *in, ProbeDims *d) {
    d->B = in->batch > 0 ? in->batch : 1;
    d->H = in->height;
    d->W = in->width;
    d->T = in->tokens;
    bool sized = in->height > 0 || in->width > 0;
    if (sized && (in->height <= 0 || in->width <= 0))
        return addc_error_set(ADDC_ERR_INVALID, "give both height and width");
    switch (m->kind) {
    case MODEL_UNET:
        if (!sized) d->H = d->W = m->net.unet.cfg.sample_size;
        else if (in->pixels) {
            if (d->H % MODEL_UNET_LATENT_FACTOR || d->W % MODEL_UNET_LATENT_FACTOR)
                return addc_error_set(ADDC_ERR_INVALID, "a UNet's latent is 1/%d of the image: %lldx%lld px is not a "
                                                        "multiple of %d",
                                      MODEL_UNET_LATENT_FACTOR, (long long)d->H, (long long)d->W,
                                      MODEL_UNET_LATENT_FACTOR);
            d->H /= MODEL_UNET_LATENT_FACTOR;
            d->W /= MODEL_UNET_LATENT_FACTOR;
        }
        if (d->T <= 0) d->T = MODEL_UNET_TOKENS;
        return ADDC_OK;
    case MODEL_VAE: {
        int64_t f = vae_downscale(&m->net.vae);
        if (!sized) d->H = d->W = m->net.vae.cfg.sample_size;
        else if (!in->pixels) {
            d->H *= f;
            d->W *= f;
        }
        if (d->H % f || d->W % f)
            return addc_error_set(ADDC_ERR_INVALID, "the VAE downsamples by %lld: %lldx%lld px is not a multiple",
                                  (long long)f, (long long)d->H, (long long)d->W);
        return ADDC_OK;
    }
    case MODEL_DINOV2: {
        const Dinov2Config *cfg = &m->net.vit.cfg;
        if (sized && !in->pixels)
            return addc_error_set(ADDC_ERR_INVALID, "a ViT has no latent: give its input size in pixels");
        if (!sized) d->H = d->W = cfg->input_size;
        if (d->H % cfg->patch_size || d->W % cfg->patch_size)
            return addc_error_set(ADDC_ERR_INVALID, "the ViT's input %lldx%lld is not a multiple of its %lld-px patches",
                                  (long long)d->H, (long long)d->W, (long long)cfg->patch_size);
        return ADDC_OK;
    }
    case MODEL_CLIP_TEXT:
        if (sized) return addc_error_set(ADDC_ERR_INVALID, "a text encoder takes tokens, not an image size");
        if (d->T <= 0) d->T = m->net.clip.cfg.max_position_embeddings;
        if (d->T > m->net.clip.cfg.max_position_embeddings)
            return addc_error_set(ADDC_ERR_INVALID, "%lld tokens: the text encoder has %lld positions", (long long)d->T,
                                  (long long)m->net.clip.cfg.max_position_embeddings);
        return ADDC_OK;
    case MODEL_DISC_HEADS:
        if (sized) return addc_error_set(ADDC_ERR_INVALID, "the heads take feature tokens, not an image size");
        if (d->T <= 0) d->T = MODEL_DISC_TOKENS;
        return ADDC_OK;
    case MODEL_CONVNET:
        if (sized && !in->pixels)
            return addc_error_set(ADDC_ERR_INVALID, "a convnet classifier has no latent: give its input size in pixels");
        if (!sized) d->H = d->W = m->net.convnet.cfg.image_size;
        return ADDC_OK;
    default: return addc_error_set(ADDC_ERR_INVALID, "model: kind %d", (int)m->kind);
    }
}

/* Runs pass `k` of the network on meta inputs made in c; writes what it ran on into desc. */
static Status probe_run(Ctx *c, Model *m, int k, const ProbeDims *d, char *desc, size_t cap) {
    long long B = d->B, H = d->H, W = d->W, T = d->T;
    switch (m->kind) {
    case MODEL_UNET: {
        const UNet2DConfig *cfg = &m->net.unet.cfg;
        Var *x = meta_input(c, DTYPE_F32, 4, B, H, W, cfg->in_channels), *t = meta_input(c, DTYPE_F32, 1, B, 0, 0, 0);
        Var *e = meta_input(c, DTYPE_F32, 3, B, T, cfg->cross_attention_dim, 0);
        bool tt = cfg->addition_embed_type[0] != 0;
        int64_t dtxt = cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim;
        UNetAddedCond add = {tt ? meta_input(c, DTYPE_F32, 2, B, dtxt, 0, 0) : NULL,
                             tt ? meta_input(c, DTYPE_F32, 2, B, 6, 0, 0) : NULL};
        int o = snprintf(desc, cap, "sample (%lld, %lld, %lld, %lld), encoder_hidden_states (%lld, %lld, %lld)", B, H,
                         W, (long long)cfg->in_channels, B, T, (long long)cfg->cross_attention_dim);
        if (tt) snprintf(desc + o, cap - (size_t)o, ", text_embeds (%lld, %lld), time_ids (%lld, 6)", B, (long long)dtxt, B);
        return unet2d_forward(c, &m->net.unet, x, t, e, tt ? &add : NULL) ? ADDC_OK : addc_error_status();
    }
    case MODEL_VAE: {
        const AutoencoderKL *v = &m->net.vae;
        int64_t f = vae_downscale(v), lc = v->cfg.latent_channels;
        if (k == 0) {
            snprintf(desc, cap, "image (%lld, %lld, %lld, %lld) -> latent (%lld, %lld, %lld, %lld)", B, H, W,
                     (long long)v->cfg.in_channels, B, H / f, W / f, (long long)lc);
            Var *mean, *logvar;
            return vae_encode(c, v, meta_input(c, DTYPE_F32, 4, B, H, W, v->cfg.in_channels), &mean, &logvar);
        }
        snprintf(desc, cap, "latent (%lld, %lld, %lld, %lld) -> image (%lld, %lld, %lld, %lld)", B, H / f, W / f,
                 (long long)lc, B, H, W, (long long)v->cfg.out_channels);
        return vae_decode(c, v, meta_input(c, DTYPE_F32, 4, B, H / f, W / f, lc)) ? ADDC_OK : addc_error_status();
    }
    case MODEL_DINOV2: {
        const Dinov2 *v = &m->net.vit;
        int o = snprintf(desc, cap,
                         "pixels (%lld, %lld, %lld, %lld): %lld patch tokens + CLS, every block and the final norm", B,
                         H, W, (long long)v->cfg.num_channels, (H / v->cfg.patch_size) * (W / v->cfg.patch_size));
        if (v->cfg.num_labels) snprintf(desc + o, cap - (size_t)o, ", classifier -> (%lld, %lld)", B, (long long)v->cfg.num_labels);
        Dinov2Output out;
        TRY(dinov2_forward(c, v, meta_input(c, DTYPE_F32, 4, B, H, W, v->cfg.num_channels), true, &out));
        return !v->cfg.num_labels || dinov2_classifier_forward(c, v, out.cls) ? ADDC_OK : addc_error_status();
    }
    case MODEL_CONVNET: {
        const ConvNetConfig *cfg = &m->net.convnet.cfg;
        snprintf(desc, cap, "images (%lld, %lld, %lld, %lld) -> features (%lld, %lld), logits (%lld, %lld)", B, H, W,
                 (long long)cfg->in_channels, B, (long long)cfg->widths[cfg->n_widths - 1], B, (long long)cfg->num_labels);
        Var *f, *l;
        return convnet_forward(c, &m->net.convnet, meta_input(c, DTYPE_F32, 4, B, H, W, cfg->in_channels), &f, &l);
    }
    case MODEL_CLIP_TEXT: {
        snprintf(desc, cap, "token ids (%lld, %lld)", B, T);
        ClipTextOutput out;
        return clip_text_forward(c, &m->net.clip, meta_input(c, DTYPE_I32, 2, B, T, 0, 0), &out);
    }
    case MODEL_DISC_HEADS: {
        const DiscHeadsConfig *cfg = &m->net.disc.cfg;
        snprintf(desc, cap, "%lld heads, features (%lld, %lld, %lld) each%s", (long long)cfg->n_heads, B, T,
                 (long long)cfg->channels, cfg->c_dim ? ", cond" : "");
        if (cfg->c_dim) {
            size_t o = strlen(desc);
            snprintf(desc + o, cap - o, " (%lld, %lld)", B, (long long)cfg->c_dim);
        }
        Var *cond = cfg->c_dim ? meta_input(c, DTYPE_F32, 2, B, cfg->c_dim, 0, 0) : NULL;
        for (int h = 0; h < cfg->n_heads; h++)
            if (!disc_head_forward(c, &m->net.disc, h, meta_input(c, DTYPE_F32, 3, B, T, cfg->channels, 0), cond, true))
                return addc_error_status();
        return ADDC_OK;
    }
    default: return addc_error_set(ADDC_ERR_INVALID, "model: kind %d", (int)m->kind);
    }
}

/* one taped meta run; with checkpointing also the regions' own bytes */
static Status probe_once(Model *m, int k, const ProbeDims *d, bool ckpt, ModelPass *p) {
    Arena arena;
    arena_init(&arena, 1 << 20, 0);
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&arena, &tape, DEVICE_META);
    model_set_checkpointing(m, ckpt);
    Status st = probe_run(&c, m, k, d, p->input, sizeof p->input);
    if (st == ADDC_OK && !ckpt) {
        p->flops = c.flops;
        p->act_bytes = c.out_bytes;
    }
    if (st == ADDC_OK && ckpt) {
        int64_t inside = 0, block = 0;
        int32_t regions = 0;
        for (int32_t i = 0; i < tape.n && st == ADDC_OK; i++) {
            const Node *n = &tape.nodes[i];
            if (n->op != OP_CHECKPOINT) continue;
            Ctx rc = ctx_make(&arena, NULL, DEVICE_META);
            if (!n->region(&rc, n->in, n->n_in, n->pp[0])) {
                st = addc_error_context(addc_error_status(), "recounting a checkpointed region");
                break;
            }
            regions++;
            inside += rc.out_bytes - tensor_nbytes(&n->out->v);
            if (rc.out_bytes > block) block = rc.out_bytes;
        }
        p->kept_bytes = c.out_bytes - inside;
        p->block_bytes = block;
        p->n_regions = regions;
    }
    model_set_checkpointing(m, false);
    tape_free(&tape);
    arena_free(&arena);
    return st;
}

Status model_probe(Model *m, const ModelInput *in, ModelPass *passes, int32_t *n_passes) {
    if (m->params.device != DEVICE_META)
        return addc_error_set(ADDC_ERR_INVALID, "model_probe: build the model on the meta device");
    ProbeDims d;
    TRY(probe_dims(m, in, &d));
    int32_t n = m->kind == MODEL_VAE ? 2 : 1;
    for (int32_t k = 0; k < n; k++) {
        ModelPass *p = &passes[k];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", m->kind == MODEL_VAE ? (k ? "decode" : "encode") : "forward");
        TRY(probe_once(m, k, &d, false, p));
        TRY(probe_once(m, k, &d, true, p));
    }
    *n_passes = n;
    return ADDC_OK;
}

/* ---- classifiers ---- */

Status model_classifier_dims(const Model *m, int64_t *features, int64_t *labels) {
    if (m->kind == MODEL_DINOV2) {
        const Dinov2Config *cfg = &m->net.vit.cfg;
        if (cfg->num_labels == 0)
            return addc_error_set(ADDC_ERR_INVALID, "this DINOv2 has no classification head: set num_labels > 0 in its "
                                                    "model YAML");
        *features = cfg->hidden_size;
        *labels = cfg->num_labels;
        return ADDC_OK;
    }
    if (m->kind == MODEL_CONVNET) {
        const ConvNetConfig *cfg = &m->net.convnet.cfg;
        *features = cfg->widths[cfg->n_widths - 1];
        *labels = cfg->num_labels;
        return ADDC_OK;
    }
    return addc_error_set(ADDC_ERR_INVALID, "%s is not an image classifier (a DINOv2 with num_labels, or a convnet)",
                          m->class_name ? m->class_name : model_kind_name(m->kind));
}

/* a 1-channel image repeated to the network's channels; other channel counts must match */
static Var *classify_channels(Ctx *c, Var *images, int64_t C) {
    const Tensor *t = &images->v;
    if (t->ndim != 4 || (t->shape[3] != C && t->shape[3] != 1)) {
        char s[96];
        addc_error_set(ADDC_ERR_INVALID, "classify: images %s must be (B, H, W, %lld) or gray (B, H, W, 1)",
                       tensor_shape_str(t, s, sizeof s), (long long)C);
        return NULL;
    }
    if (t->shape[3] == C) return images;
    int64_t shape[4] = {t->shape[0], t->shape[1], t->shape[2], C};
    return op_broadcast_to(c, images, 4, shape);
}

Status model_classify(Ctx *c, const Model *m, Var *images, Var **features, Var **logits) {
    if (features) *features = NULL;
    if (logits) *logits = NULL;
    int64_t F, K;
    TRY(model_classifier_dims(m, &F, &K));
    if (!images) return addc_error_status() ? addc_error_status() : addc_error_set(ADDC_ERR_INVALID, "classify: no images");
    if (m->kind == MODEL_CONVNET) {
        Var *x = classify_channels(c, images, m->net.convnet.cfg.in_channels);
        if (!x) return addc_error_status();
        return convnet_forward(c, &m->net.convnet, x, features, logits);
    }
    const Dinov2 *v = &m->net.vit;
    Var *x = classify_channels(c, images, v->cfg.num_channels);
    Dinov2Output out;
    TRY(dinov2_forward(c, v, dinov2_preprocess(c, v, x), true, &out));
    if (features) *features = out.cls;
    if (logits) {
        *logits = dinov2_classifier_forward(c, v, out.cls);
        if (!*logits) return addc_error_status();
    }
    return ADDC_OK;
}

/* ---- memory ---- */

void model_memory_plan(const ParamStore *s, int64_t world, MemoryPlan *p) {
    memset(p, 0, sizeof *p);
    p->world = world > 0 ? world : 1;
    p->numel = s->numel;
    p->n_units = s->n_units;
    p->largest_unit = -1;
    for (int32_t u = 0; u < s->n_units; u++) {
        int64_t n = s->units[u].numel;
        p->shard_numel += (n + p->world - 1) / p->world;
        if (n > p->largest_numel) {
            p->largest_numel = n;
            p->largest_unit = u;
        }
    }
    p->weights_shard = 4 * p->shard_numel;
    p->weights_gather = 2 * 2 * p->largest_numel;
    p->grads_shard = 4 * p->shard_numel;
    p->grads_unit = 2 * 2 * p->largest_numel;
    p->adam = 2 * 4 * p->shard_numel;
}

int64_t model_numel_prefix(const ParamStore *s, const char *prefix) {
    int64_t n = 0;
    size_t l = strlen(prefix);
    for (int32_t i = 0; i < s->n; i++) {
        Param *q = param_store_get((ParamStore *)s, i);
        if (!strncmp(q->name, prefix, l)) n += tensor_numel(&q->var.v);
    }
    return n;
}
