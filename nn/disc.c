/* nn/disc: StyleGAN-T discriminator heads (see disc.h): config, construction in torch's parameter
 * order, initialisation, the readout and the head forward built from create-graph-capable ops. */
#include "nn/disc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* ---- configuration ---- */

static const ConfigField disc_fields[] = {
    CONFIG_INT(DiscHeadsConfig, n_heads, "5", 1, DISC_MAX_HEADS, "one head per feature tap"),
    CONFIG_INT(DiscHeadsConfig, channels, "384", 1, 1 << 16, "feature width C"),
    CONFIG_INT(DiscHeadsConfig, c_dim, "0", 0, 1 << 20, "conditioning width (0: unconditional)"),
    CONFIG_INT(DiscHeadsConfig, cmap_dim, "64", 1, 1 << 16, "projection width"),
    CONFIG_INT(DiscHeadsConfig, kernel_size, "9", 1, 255, "odd kernel of the residual block's circular conv"),
    CONFIG_INT(DiscHeadsConfig, virtual_bs, "8", 1, 1 << 20, "BatchNormLocal group size"),
    CONFIG_FLOAT(DiscHeadsConfig, bn_eps, "1e-5", "BatchNormLocal epsilon"),
    CONFIG_FLOAT(DiscHeadsConfig, leaky_slope, "0.2", "LeakyReLU negative slope"),
    CONFIG_FLOAT(DiscHeadsConfig, sn_eps, "1e-12", "spectral norm epsilon"),
    CONFIG_INT(DiscHeadsConfig, sn_power_iterations, "1", 1, 100, "power iterations per training forward"),
    CONFIG_BOOL(DiscHeadsConfig, cmapper_equalized_lr, "false",
                "StyleGAN-T FullyConnectedLayer (weight / sqrt(c_dim) at run time) instead of nn.Linear"),
};

const ConfigSchema disc_heads_config_schema = CONFIG_SCHEMA("disc_heads", disc_fields);

Status disc_heads_config_check(const DiscHeadsConfig *c) {
    if (c->kernel_size % 2 == 0)
        return addc_error_set(ADDC_ERR_INVALID, "disc_heads config: kernel_size %lld must be odd",
                              (long long)c->kernel_size);
    if (!(c->bn_eps > 0) || !(c->sn_eps > 0))
        return addc_error_set(ADDC_ERR_INVALID, "disc_heads config: bn_eps and sn_eps must be positive");
    return ADDC_OK;
}

Status disc_heads_config_load(DiscHeadsConfig *cfg, const char *path, const char *const *overrides,
                              int32_t n_overrides) {
    Status s = config_load(&disc_heads_config_schema, cfg, &path, 1, overrides, n_overrides);
    if (s != ADDC_OK) return s;
    s = disc_heads_config_check(cfg);
    if (s != ADDC_OK) return addc_error_context(s, "%s", path);
    return ADDC_OK;
}

/* ---- construction ---- */

static Status declare(Var **out, ParamStore *s, const char *name, int32_t nd, const int64_t *shape) {
    *out = param_new(s, name, nd, shape, PARAM_PLAIN);
    return *out ? ADDC_OK : addc_error_status();
}

static Status sn_conv_init(SnConv1d *m, ParamStore *p, ParamStore *st, const char *prefix, int64_t cin, int64_t cout,
                           int64_t k) {
    char n[PARAM_NAME_MAX];
    int64_t w[3] = {cout, cin, k}, vlen = cin * k;
    m->pad = k > 1 ? PAD_CIRCULAR : PAD_ZEROS;
    TRY(declare(&m->bias, p, param_name(n, prefix, "bias"), 1, &cout));
    TRY(declare(&m->weight_orig, p, param_name(n, prefix, "weight_orig"), 3, w));
    TRY(declare(&m->u, st, param_name(n, prefix, "weight_u"), 1, &cout));
    return declare(&m->v, st, param_name(n, prefix, "weight_v"), 1, &vlen);
}

Status disc_heads_init(DiscHeads *d, const DiscHeadsConfig *cfg, ParamStore *params, ParamStore *state) {
    memset(d, 0, sizeof *d);
    TRY(disc_heads_config_check(cfg));
    d->cfg = *cfg;
    int64_t C = cfg->channels, K = cfg->kernel_size, out = cfg->c_dim > 0 ? cfg->cmap_dim : 1;
    char h[PARAM_NAME_MAX], n[PARAM_NAME_MAX];
    for (int64_t k = 0; k < cfg->n_heads; k++) {
        DiscHead *hd = &d->heads[k];
        param_namef(h, NULL, "heads.%lld", (long long)k);
        TRY(param_store_begin_unit(params, h));
        TRY(param_store_begin_unit(state, h));
        TRY(sn_conv_init(&hd->conv0, params, state, param_name(n, h, "main.0.0"), C, C, 1));
        TRY(layer_norm_init(&hd->bn0, params, param_name(n, h, "main.0.1"), C, cfg->bn_eps, true));
        TRY(sn_conv_init(&hd->conv1, params, state, param_name(n, h, "main.1.fn.0"), C, C, K));
        TRY(layer_norm_init(&hd->bn1, params, param_name(n, h, "main.1.fn.1"), C, cfg->bn_eps, true));
        if (cfg->c_dim > 0) TRY(linear_init(&hd->cmapper, params, param_name(n, h, "cmapper"), cfg->c_dim, cfg->cmap_dim, true));
        TRY(sn_conv_init(&hd->cls, params, state, param_name(n, h, "cls"), C, out, 1));
    }
    return ADDC_OK;
}

static void fill(Var *v, float x) {
    float *d = v->v.data;
    for (int64_t i = 0, n = tensor_numel(&v->v); i < n; i++) d[i] = x;
}

/* a unit vector of normal draws (torch: normalize(randn)) */
static void unit_vector(Var *v, uint64_t seed, uint64_t index) {
    float *d = v->v.data;
    int64_t n = tensor_numel(&v->v);
    RngKey k = rng_key(seed, RNG_PURPOSE_INIT, index, 1);
    rng_fill_normal(&k, 0, n, d);
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)d[i] * d[i];
    double s = 1.0 / fmax(sqrt(ss), 1e-12);
    for (int64_t i = 0; i < n; i++) d[i] = (float)(d[i] * s);
}

Status disc_heads_init_weights(DiscHeads *d, ParamStore *params, ParamStore *state, uint64_t seed) {
    TRY(param_store_init_random(params, seed));
    if (!params->data || !state->data) return ADDC_OK;
    uint64_t idx = 0;
    for (int64_t k = 0; k < d->cfg.n_heads; k++) {
        DiscHead *h = &d->heads[k];
        fill(h->bn0.weight, 1.0f);
        fill(h->bn0.bias, 0.0f);
        fill(h->bn1.weight, 1.0f);
        fill(h->bn1.bias, 0.0f);
        if (h->cmapper.weight && d->cfg.cmapper_equalized_lr) {
            RngKey key = rng_key(seed, RNG_PURPOSE_INIT, (uint64_t)(params->n + k), 2);
            rng_fill_normal(&key, 0, tensor_numel(&h->cmapper.weight->v), h->cmapper.weight->v.data);
            fill(h->cmapper.bias, 0.0f);
        }
        SnConv1d *convs[3] = {&h->conv0, &h->conv1, &h->cls};
        for (int i = 0; i < 3; i++) {
            unit_vector(convs[i]->u, seed, idx++);
            unit_vector(convs[i]->v, seed, idx++);
        }
    }
    return ADDC_OK;
}

/* ---- forward ---- */

Var *disc_tokens_readout(Ctx *c, Var *tokens) {
    if (!tokens) return NULL;
    if (tokens->v.ndim != 3 || tokens->v.shape[1] < 2) {
        char s[96];
        addc_error_set(ADDC_ERR_INVALID, "disc: tokens %s must be (B, 1 + N, C) with the CLS token first",
                       tensor_shape_str(&tokens->v, s, sizeof s));
        return NULL;
    }
    int64_t T = tokens->v.shape[1];
    return op_add(c, op_slice(c, tokens, 1, 1, T - 1), op_slice(c, tokens, 1, 0, 1));
}

/* the spectral-normalised weight in op_conv1d's (Cout, K, Cin) order, then the conv */
static Var *sn_conv(Ctx *c, const DiscHeadsConfig *cfg, const SnConv1d *m, Var *x, bool update) {
    Var *w = op_spectral_norm(c, m->weight_orig, &m->u->v, &m->v->v, (int)cfg->sn_power_iterations, cfg->sn_eps, update);
    const Tensor *t = &m->weight_orig->v;
    if (t->shape[2] == 1) {
        int64_t s[3] = {t->shape[0], 1, t->shape[1]};
        w = op_reshape(c, w, 3, s);
    } else {
        static const int32_t perm[3] = {0, 2, 1};
        w = op_permute(c, w, perm);
    }
    return op_conv1d(c, x, w, m->bias, m->pad);
}

static Var *sn_block(Ctx *c, const DiscHeadsConfig *cfg, const SnConv1d *m, const Norm *bn, Var *x, bool update) {
    Var *y = op_batch_norm_local(c, sn_conv(c, cfg, m, x, update), bn->weight, bn->bias, (int)cfg->virtual_bs, bn->eps);
    return op_leaky_relu(c, y, cfg->leaky_slope);
}

Var *disc_head_forward(Ctx *c, const DiscHeads *d, int k, Var *x, Var *cond, bool update_sn) {
    if (!x) return NULL;
    const DiscHeadsConfig *cfg = &d->cfg;
    if (k < 0 || k >= cfg->n_heads) {
        addc_error_set(ADDC_ERR_INVALID, "disc: head %d of %lld", k, (long long)cfg->n_heads);
        return NULL;
    }
    const Tensor *t = &x->v;
    if (t->ndim != 3 || t->shape[2] != cfg->channels) {
        char s[96];
        addc_error_set(ADDC_ERR_INVALID, "disc: features %s must be (B, N, %lld)", tensor_shape_str(t, s, sizeof s),
                       (long long)cfg->channels);
        return NULL;
    }
    int64_t B = t->shape[0], N = t->shape[1];
    if (cfg->c_dim > 0 && (!cond || cond->v.ndim != 2 || cond->v.shape[0] != B || cond->v.shape[1] != cfg->c_dim)) {
        addc_error_set(ADDC_ERR_INVALID, "disc: the heads are conditioned: cond must be (%lld, %lld)", (long long)B,
                       (long long)cfg->c_dim);
        return NULL;
    }
    const DiscHead *h = &d->heads[k];
    Var *a = sn_block(c, cfg, &h->conv0, &h->bn0, x, update_sn);
    Var *hid = op_scale(c, op_add(c, sn_block(c, cfg, &h->conv1, &h->bn1, a, update_sn), a), M_SQRT1_2, 0.0);
    Var *out = sn_conv(c, cfg, &h->cls, hid, update_sn);
    int64_t logit[2] = {B, N};
    if (cfg->c_dim == 0) return op_reshape(c, out, 2, logit);
    Var *w = h->cmapper.weight;
    if (cfg->cmapper_equalized_lr) w = op_scale(c, w, 1.0 / sqrt((double)cfg->c_dim), 0.0);
    int64_t s_cmap[3] = {B, 1, cfg->cmap_dim}, s_sum[3] = {B, N, 1};
    Var *cmap = op_reshape(c, op_linear(c, cond, w, h->cmapper.bias), 3, s_cmap);
    Var *proj = op_sum_to(c, op_mul(c, out, cmap), 3, s_sum);
    return op_scale(c, op_reshape(c, proj, 2, logit), 1.0 / sqrt((double)cfg->cmap_dim), 0.0);
}

/* ---- loading ---- */

/* the checks of a load into both stores: missing, mis-shaped and (the union of both stores'
 * names against the file) unexpected keys */
static Status load_check(const DiscHeads *d, const SafeTensors *st, const WeightsKeyMap *map,
                         const WeightsLoadOptions *o) {
    ParamStore mp, ms;
    param_store_init(&mp, DEVICE_META);
    param_store_init(&ms, DEVICE_META);
    DiscHeads twin;
    WeightsLoadOptions lenient = {o->allow_missing, true};
    WeightsReport rp, rs;
    memset(&rp, 0, sizeof rp);
    memset(&rs, 0, sizeof rs);
    Status s = disc_heads_init(&twin, &d->cfg, &mp, &ms);
    if (s == ADDC_OK) s = param_store_alloc(&mp, false);
    if (s == ADDC_OK) s = param_store_alloc(&ms, false);
    if (s == ADDC_OK) s = weights_load(&mp, st, map, &lenient, &rp);
    if (s == ADDC_OK) s = weights_load(&ms, st, map, &lenient, &rs);
    if (s == ADDC_OK && !o->allow_unexpected && rp.n_loaded + rs.n_loaded != st->n - rp.n_ignored)
        s = addc_error_set(ADDC_ERR_FORMAT,
                           "disc: %s holds %d tensors under '%s' but the heads have only %d parameters and %d "
                           "spectral-norm vectors there (%d unexpected)",
                           st->path, st->n - rp.n_ignored, map->scope ? map->scope : "", rp.n_loaded, rs.n_loaded,
                           st->n - rp.n_ignored - rp.n_loaded - rs.n_loaded);
    weights_report_free(&rp);
    weights_report_free(&rs);
    param_store_free(&mp);
    param_store_free(&ms);
    return s;
}

Status disc_heads_load(const DiscHeads *d, ParamStore *params, ParamStore *state, const char *path,
                       const char *prefix, const WeightsLoadOptions *opt) {
    SafeTensors st;
    TRY(safetensors_open(&st, path));
    WeightsLoadOptions o = opt ? *opt : (WeightsLoadOptions){false, false};
    WeightsLoadOptions each = {o.allow_missing, true}; /* each store sees the other's keys as unexpected */
    WeightsKeyMap map = weights_map_prefix(prefix && *prefix ? prefix : NULL);
    Status s = load_check(d, &st, &map, &o);
    if (s == ADDC_OK) s = weights_load(params, &st, &map, &each, NULL);
    if (s == ADDC_OK) s = weights_load(state, &st, &map, &each, NULL);
    safetensors_close(&st);
    return s;
}
