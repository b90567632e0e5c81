/* nn/vit: DINOv2 (transformers Dinov2Model): config schema, construction in the state-dict order
 * of transformers' files, preprocessing, forward with feature taps (see vit.h). */
#include "nn/vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ---- */

static const ConfigField dinov2_fields[] = {
    CONFIG_STRING(Dinov2Config, model_type, "dinov2", "dinov2"),
    CONFIG_INT(Dinov2Config, hidden_size, "384", 1, 1 << 16, "token width D"),
    CONFIG_INT(Dinov2Config, num_hidden_layers, "12", 1, 1024, "transformer blocks"),
    CONFIG_INT(Dinov2Config, num_attention_heads, "6", 1, 1024, "heads (D / heads wide each)"),
    CONFIG_FLOAT(Dinov2Config, mlp_ratio, "4", "MLP width = int(D * mlp_ratio)"),
    CONFIG_STRING(Dinov2Config, hidden_act, "gelu", "gelu (erf)"),
    CONFIG_FLOAT(Dinov2Config, hidden_dropout_prob, "0", "must be 0"),
    CONFIG_FLOAT(Dinov2Config, attention_probs_dropout_prob, "0", "must be 0"),
    CONFIG_FLOAT(Dinov2Config, initializer_range, "0.02", "unused (weights are loaded)"),
    CONFIG_FLOAT(Dinov2Config, layer_norm_eps, "1e-6", "LayerNorm epsilon"),
    CONFIG_INT(Dinov2Config, image_size, "518", 1, 1 << 16, "size the position embeddings were learned at"),
    CONFIG_INT(Dinov2Config, patch_size, "14", 1, 1024, "patch size (conv kernel and stride)"),
    CONFIG_INT(Dinov2Config, num_channels, "3", 1, 64, "image channels"),
    CONFIG_BOOL(Dinov2Config, qkv_bias, "true", "biases on query, key, value"),
    CONFIG_FLOAT(Dinov2Config, layerscale_value, "1.0", "LayerScale init (unused: weights are loaded)"),
    CONFIG_FLOAT(Dinov2Config, drop_path_rate, "0", "must be 0"),
    CONFIG_BOOL(Dinov2Config, use_swiglu_ffn, "false", "must be false (ViT-g/14 uses SwiGLU; not supported)"),
    CONFIG_BOOL(Dinov2Config, use_mask_token, "true", "the (unused) mask token is a parameter"),
    CONFIG_LIST(Dinov2Config, tap_blocks, n_tap_blocks, CONFIG_TYPE_INT, "[2, 5, 8, 11]",
                "addc: blocks (0-based) whose outputs are feature taps"),
    CONFIG_BOOL(Dinov2Config, tap_patch_embedding, "true", "addc: the patch-embedding output is a tap too (the first)"),
    CONFIG_INT(Dinov2Config, input_size, "224", 1, 1 << 16, "addc: dinov2_preprocess resizes to this square size"),
    CONFIG_LIST(Dinov2Config, image_mean, n_image_mean, CONFIG_TYPE_FLOAT, "[0.485, 0.456, 0.406]",
                "addc: per-channel mean of the [0, 1] image"),
    CONFIG_LIST(Dinov2Config, image_std, n_image_std, CONFIG_TYPE_FLOAT, "[0.229, 0.224, 0.225]",
                "addc: per-channel standard deviation"),
    CONFIG_INT(Dinov2Config, num_labels, "0", 0, 1 << 20,
               "addc: > 0 adds a Linear(D -> num_labels) on the final-norm CLS (not transformers' "
               "Dinov2ForImageClassification head)"),
};

const ConfigSchema dinov2_config_schema = CONFIG_SCHEMA("dinov2", dinov2_fields);

static int64_t mlp_width(const Dinov2Config *c) { return (int64_t)((double)c->hidden_size * c->mlp_ratio); }

Status dinov2_config_check(const Dinov2Config *c) {
    static const char *unsup = "dinov2 config: %s = %s is not supported by addc";
    if (strcmp(c->model_type, "dinov2")) return addc_error_set(ADDC_ERR_UNSUPPORTED, unsup, "model_type", c->model_type);
    if (strcmp(c->hidden_act, "gelu")) return addc_error_set(ADDC_ERR_UNSUPPORTED, unsup, "hidden_act", c->hidden_act);
    if (c->use_swiglu_ffn) return addc_error_set(ADDC_ERR_UNSUPPORTED, unsup, "use_swiglu_ffn", "true");
    if (c->hidden_dropout_prob != 0 || c->attention_probs_dropout_prob != 0 || c->drop_path_rate != 0)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "dinov2 config: dropout and drop_path must be 0 (addc runs DINOv2 "
                                                    "as a frozen network)");
    if (c->hidden_size % c->num_attention_heads)
        return addc_error_set(ADDC_ERR_INVALID, "dinov2 config: %lld heads do not divide hidden_size %lld",
                              (long long)c->num_attention_heads, (long long)c->hidden_size);
    if (mlp_width(c) < 1) return addc_error_set(ADDC_ERR_INVALID, "dinov2 config: mlp_ratio %g gives no MLP", c->mlp_ratio);
    if (c->image_size % c->patch_size)
        return addc_error_set(ADDC_ERR_INVALID, "dinov2 config: image_size %lld is not a multiple of patch_size %lld",
                              (long long)c->image_size, (long long)c->patch_size);
    for (int32_t i = 0; i < c->n_tap_blocks; i++)
        if (c->tap_blocks[i] < 0 || c->tap_blocks[i] >= c->num_hidden_layers ||
            (i > 0 && c->tap_blocks[i] <= c->tap_blocks[i - 1]))
            return addc_error_set(ADDC_ERR_INVALID,
                                  "dinov2 config: tap_blocks must be increasing block indices in 0..%lld",
                                  (long long)(c->num_hidden_layers - 1));
    if (c->n_tap_blocks + (c->tap_patch_embedding ? 1 : 0) > VIT_MAX_TAPS)
        return addc_error_set(ADDC_ERR_INVALID, "dinov2 config: at most %d taps", VIT_MAX_TAPS);
    if (c->n_image_mean != c->num_channels || c->n_image_std != c->num_channels)
        return addc_error_set(ADDC_ERR_INVALID, "dinov2 config: image_mean and image_std need %lld values each",
                              (long long)c->num_channels);
    for (int32_t i = 0; i < c->n_image_std; i++)
        if (!(c->image_std[i] > 0)) return addc_error_set(ADDC_ERR_INVALID, "dinov2 config: image_std must be positive");
    return ADDC_OK;
}

Status dinov2_config_load(Dinov2Config *cfg, const char *path, const char *const *overrides, int32_t n_overrides) {
    Status s = config_load(&dinov2_config_schema, cfg, &path, 1, overrides, n_overrides);
    if (s != ADDC_OK) return s;
    s = dinov2_config_check(cfg);
    if (s != ADDC_OK) return addc_error_context(s, "%s", path);
    return ADDC_OK;
}

/* ---- construction ---- */

static Status declare(Var **out, ParamStore *s, const char *name, int32_t nd, const int64_t *shape) {
    *out = param_new(s, name, nd, shape, PARAM_PLAIN);
    return *out ? ADDC_OK : addc_error_status();
}

static Status block_init(ViTBlock *b, ParamStore *s, const char *prefix, const Dinov2Config *c) {
    char n[PARAM_NAME_MAX];
    int64_t D = c->hidden_size;
    double eps = c->layer_norm_eps;
    memset(b, 0, sizeof *b);
    b->heads = (int)c->num_attention_heads;
    TRY(param_store_begin_unit(s, prefix));
    TRY(layer_norm_init(&b->norm1, s, param_name(n, prefix, "norm1"), D, eps, true));
    TRY(linear_init(&b->query, s, param_name(n, prefix, "attention.attention.query"), D, D, c->qkv_bias));
    TRY(linear_init(&b->key, s, param_name(n, prefix, "attention.attention.key"), D, D, c->qkv_bias));
    TRY(linear_init(&b->value, s, param_name(n, prefix, "attention.attention.value"), D, D, c->qkv_bias));
    TRY(linear_init(&b->dense, s, param_name(n, prefix, "attention.output.dense"), D, D, true));
    TRY(declare(&b->ls1, s, param_name(n, prefix, "layer_scale1.lambda1"), 1, &D));
    TRY(layer_norm_init(&b->norm2, s, param_name(n, prefix, "norm2"), D, eps, true));
    TRY(linear_init(&b->fc1, s, param_name(n, prefix, "mlp.fc1"), D, mlp_width(c), true));
    TRY(linear_init(&b->fc2, s, param_name(n, prefix, "mlp.fc2"), mlp_width(c), D, true));
    return declare(&b->ls2, s, param_name(n, prefix, "layer_scale2.lambda1"), 1, &D);
}

Status dinov2_init(Dinov2 *m, const Dinov2Config *cfg, ParamStore *s) {
    memset(m, 0, sizeof *m);
    TRY(dinov2_config_check(cfg));
    m->cfg = *cfg;
    const Dinov2Config *c = &m->cfg;
    int64_t D = c->hidden_size, P = c->patch_size;
    m->pos_side = c->image_size / P;
    char n[PARAM_NAME_MAX];
    TRY(param_store_begin_unit(s, "embeddings"));
    int64_t cls[3] = {1, 1, D}, mask[2] = {1, D}, pos[3] = {1, 1 + m->pos_side * m->pos_side, D};
    TRY(declare(&m->cls_token, s, "embeddings.cls_token", 3, cls));
    if (c->use_mask_token) TRY(declare(&m->mask_token, s, "embeddings.mask_token", 2, mask));
    TRY(declare(&m->position_embeddings, s, "embeddings.position_embeddings", 3, pos));
    TRY(conv2d_init(&m->patch, s, "embeddings.patch_embeddings.projection", c->num_channels, D, (int)P, (int)P, 0, true));
    m->blocks = calloc((size_t)c->num_hidden_layers, sizeof *m->blocks);
    if (!m->blocks) return addc_error_set(ADDC_ERR_NOMEM, "out of memory building DINOv2");
    for (int64_t i = 0; i < c->num_hidden_layers; i++)
        TRY(block_init(&m->blocks[i], s, param_namef(n, NULL, "encoder.layer.%lld", (long long)i), c));
    TRY(param_store_begin_unit(s, "layernorm"));
    TRY(layer_norm_init(&m->layernorm, s, "layernorm", D, c->layer_norm_eps, true));
    if (c->num_labels == 0) return ADDC_OK;
    TRY(param_store_begin_unit(s, "classifier"));
    return linear_init(&m->classifier, s, "classifier", D, c->num_labels, true);
}

void dinov2_free(Dinov2 *m) {
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

/* ---- forward ---- */

/* a constant (C) vector from the arena (no data on meta) */
static Var *channel_const(Ctx *c, const double *v, int64_t C) {
    float f[C > 0 ? C : 1];
    for (int64_t i = 0; i < C; i++) f[i] = (float)v[i];
    return var_from_host(c, DTYPE_F32, 1, &C, f);
}

Var *dinov2_preprocess(Ctx *c, const Dinov2 *m, Var *image) {
    if (!image) return NULL;
    const Dinov2Config *cfg = &m->cfg;
    int64_t C = cfg->num_channels;
    if (image->v.ndim != 4 || image->v.shape[3] != C) {
        char s[96];
        addc_error_set(ADDC_ERR_INVALID, "dinov2: image %s must be (B, H, W, %lld)",
                       tensor_shape_str(&image->v, s, sizeof s), (long long)C);
        return NULL;
    }
    /* ((x + 1) / 2 - mean) / std = x * a + b; the area resize is linear, so it goes first */
    double a[4], b[4];
    for (int64_t i = 0; i < C; i++) {
        a[i] = 0.5 / cfg->image_std[i];
        b[i] = (0.5 - cfg->image_mean[i]) / cfg->image_std[i];
    }
    Var *x = image;
    if (image->v.shape[1] != cfg->input_size || image->v.shape[2] != cfg->input_size)
        x = op_resize_area(c, image, cfg->input_size, cfg->input_size);
    return op_add(c, op_mul(c, x, channel_const(c, a, C)), channel_const(c, b, C));
}

/* in[0]: x (B, T, D) */
static Var *block_region(Ctx *c, Var *const *in, int n_in, void *user) {
    const ViTBlock *b = user;
    Var *x = in[0];
    Var *h = layer_norm_forward(c, &b->norm1, x);
    Var *q = linear_forward(c, &b->query, h), *k = linear_forward(c, &b->key, h), *v = linear_forward(c, &b->value, h);
    Var *a = linear_forward(c, &b->dense, op_attention(c, q, k, v, b->heads, 0.0, false));
    x = op_add(c, x, op_mul(c, a, b->ls1));
    h = linear_forward(c, &b->fc1, layer_norm_forward(c, &b->norm2, x));
    h = linear_forward(c, &b->fc2, op_gelu(c, h, GELU_ERF));
    return op_add(c, x, op_mul(c, h, b->ls2));
}

/* position embeddings for an nh x nw patch grid: (1, 1 + nh nw, D) */
static Var *position_embeddings(Ctx *c, const Dinov2 *m, int64_t nh, int64_t nw) {
    Var *pos = m->position_embeddings;
    int64_t S = m->pos_side, D = m->cfg.hidden_size;
    if (nh == S && nw == S) return pos;
    int64_t grid[4] = {1, S, S, D}, flat[3] = {1, nh * nw, D};
    Var *patch = op_reshape(c, op_slice(c, pos, 1, 1, S * S), 4, grid);
    patch = op_reshape(c, op_resize_bicubic(c, patch, nh, nw), 3, flat);
    return op_concat(c, op_slice(c, pos, 1, 0, 1), patch, 1);
}

Status dinov2_forward(Ctx *c, const Dinov2 *m, Var *pixels, bool want_cls, Dinov2Output *out) {
    memset(out, 0, sizeof *out);
    if (!pixels) return addc_error_status() ? addc_error_status() : addc_error_set(ADDC_ERR_INVALID, "dinov2: no input");
    const Dinov2Config *cfg = &m->cfg;
    const Tensor *t = &pixels->v;
    int64_t P = cfg->patch_size, D = cfg->hidden_size;
    if (t->ndim != 4 || t->shape[3] != cfg->num_channels || t->shape[1] < P || t->shape[2] < P ||
        t->shape[1] % P || t->shape[2] % P) {
        char s[96];
        return addc_error_set(ADDC_ERR_INVALID, "dinov2: pixels %s must be (B, H, W, %lld) with H and W multiples of %lld",
                              tensor_shape_str(t, s, sizeof s), (long long)cfg->num_channels, (long long)P);
    }
    int64_t B = t->shape[0], nh = t->shape[1] / P, nw = t->shape[2] / P, N = nh * nw;
    int64_t tok[3] = {B, N, D}, cls_shape[3] = {B, 1, D};
    Var *x = op_reshape(c, conv2d_forward(c, &m->patch, pixels), 3, tok);
    x = op_concat(c, op_broadcast_to(c, m->cls_token, 3, cls_shape), x, 1);
    x = op_add(c, x, position_embeddings(c, m, nh, nw));
    if (cfg->tap_patch_embedding) out->taps[out->n_taps++] = x;
    int64_t last = want_cls ? cfg->num_hidden_layers - 1 : cfg->n_tap_blocks ? cfg->tap_blocks[cfg->n_tap_blocks - 1] : -1;
    int32_t next_tap = 0;
    for (int64_t i = 0; i <= last; i++) {
        const ViTBlock *b = &m->blocks[i];
        x = m->gradient_checkpointing ? op_checkpoint(c, block_region, (void *)b, &x, 1) : block_region(c, &x, 1, (void *)b);
        if (next_tap < cfg->n_tap_blocks && cfg->tap_blocks[next_tap] == i) {
            out->taps[out->n_taps++] = x;
            next_tap++;
        }
    }
    if (want_cls) {
        int64_t cls2[2] = {B, D};
        out->cls = op_reshape(c, op_slice(c, layer_norm_forward(c, &m->layernorm, x), 1, 0, 1), 2, cls2);
        if (!out->cls) return addc_error_status();
    }
    for (int32_t i = 0; i < out->n_taps; i++)
        if (!out->taps[i]) return addc_error_status();
    return x ? ADDC_OK : addc_error_status();
}

Var *dinov2_classifier_forward(Ctx *c, const Dinov2 *m, Var *cls) {
    if (!cls) return NULL;
    if (!m->classifier.weight) {
        addc_error_set(ADDC_ERR_INVALID, "dinov2: no classification head (set num_labels > 0 in the model YAML)");
        return NULL;
    }
    return linear_forward(c, &m->classifier, cls);
}

Status dinov2_load(const Dinov2 *m, ParamStore *s, const char *path, const WeightsLoadOptions *opt,
                   WeightsReport *rep) {
    (void)m;
    WeightsKeyMap map = weights_map_prefix(NULL);
    return weights_load_file(s, path, &map, opt, rep);
}
