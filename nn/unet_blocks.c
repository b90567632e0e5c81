/* nn/unet_blocks: diffusers UNet building blocks on NHWC feature maps (see unet_blocks.h).
 * The forward passes follow diffusers' resnet.py, attention.py, transformer_2d.py and
 * embeddings.py op for op; a block's region function reads only its region inputs and its
 * own parameters, so it can be recomputed in backward. */
#include "nn/unet_blocks.h"

#include <stdlib.h>
#include <string.h>

static char *sub(char *out, const char *prefix, const char *suffix) { return param_name(out, prefix, suffix); }

/* ---- ResnetBlock2D ---- */

Status resnet_block_init(ResnetBlock2D *r, ParamStore *s, const char *prefix, int64_t cin, int64_t cout,
                         int64_t temb_channels, int groups, double eps, double output_scale_factor) {
    char n[PARAM_NAME_MAX];
    memset(r, 0, sizeof *r);
    r->output_scale_factor = output_scale_factor;
    TRY(param_store_begin_unit(s, prefix));
    TRY(group_norm_init(&r->norm1, s, sub(n, prefix, "norm1"), groups, cin, eps, true));
    TRY(conv2d_init(&r->conv1, s, sub(n, prefix, "conv1"), cin, cout, 3, 1, 1, true));
    if (temb_channels > 0) TRY(linear_init(&r->time_emb_proj, s, sub(n, prefix, "time_emb_proj"), temb_channels, cout, true));
    TRY(group_norm_init(&r->norm2, s, sub(n, prefix, "norm2"), groups, cout, eps, true));
    TRY(conv2d_init(&r->conv2, s, sub(n, prefix, "conv2"), cout, cout, 3, 1, 1, true));
    if (cin != cout) TRY(conv2d_init(&r->conv_shortcut, s, sub(n, prefix, "conv_shortcut"), cin, cout, 1, 1, 0, true));
    return ADDC_OK;
}

/* in: x, then skip (up path), then temb_act (when the block has a time embedding) */
static Var *resnet_region(Ctx *c, Var *const *in, int n_in, void *user) {
    const ResnetBlock2D *r = user;
    bool has_temb = r->time_emb_proj.weight != NULL;
    Var *x = in[0];
    if (n_in - (has_temb ? 1 : 0) == 2) x = op_concat(c, x, in[1], -1);
    Var *temb = has_temb ? in[n_in - 1] : NULL;
    Var *h = conv2d_forward(c, &r->conv1, group_norm_silu_forward(c, &r->norm1, x));
    if (temb) {
        Var *t = linear_forward(c, &r->time_emb_proj, temb);
        if (!t || !h) return NULL;
        int64_t sh[4] = {t->v.shape[0], 1, 1, t->v.shape[1]};
        h = op_add(c, h, op_reshape(c, t, 4, sh));
    }
    h = conv2d_forward(c, &r->conv2, group_norm_silu_forward(c, &r->norm2, h));
    if (r->conv_shortcut.weight) x = conv2d_forward(c, &r->conv_shortcut, x);
    Var *y = op_add(c, x, h);
    if (r->output_scale_factor != 1.0) y = op_scale(c, y, 1.0 / r->output_scale_factor, 0.0);
    return y;
}

Var *resnet_block_forward(Ctx *c, const ResnetBlock2D *r, Var *x, Var *skip, Var *temb_act, bool ckpt) {
    bool has_temb = r->time_emb_proj.weight != NULL;
    if (!x) return NULL;
    if (has_temb && !temb_act) {
        addc_error_set(ADDC_ERR_INVALID, "resnet block %s needs a time embedding", r->conv1.weight->name);
        return NULL;
    }
    Var *in[3];
    int n = 0;
    in[n++] = x;
    if (skip) in[n++] = skip;
    if (has_temb) in[n++] = temb_act;
    if (ckpt) return op_checkpoint(c, resnet_region, (void *)r, in, n);
    return resnet_region(c, in, n, (void *)r);
}

/* ---- Attention ---- */

Status attention_init(Attention *a, ParamStore *s, const char *prefix, int64_t query_dim, int64_t cross_dim,
                      int heads, int64_t head_dim, bool qkv_bias) {
    char n[PARAM_NAME_MAX];
    memset(a, 0, sizeof *a);
    a->heads = heads;
    int64_t inner = heads * head_dim, kv_dim = cross_dim > 0 ? cross_dim : query_dim;
    TRY(linear_init(&a->to_q, s, sub(n, prefix, "to_q"), query_dim, inner, qkv_bias));
    TRY(linear_init(&a->to_k, s, sub(n, prefix, "to_k"), kv_dim, inner, qkv_bias));
    TRY(linear_init(&a->to_v, s, sub(n, prefix, "to_v"), kv_dim, inner, qkv_bias));
    TRY(linear_init(&a->to_out, s, sub(n, prefix, "to_out.0"), inner, query_dim, true));
    return ADDC_OK;
}

Var *attention_forward(Ctx *c, const Attention *a, Var *x, Var *ctx) {
    Var *kv = ctx ? ctx : x;
    Var *q = linear_forward(c, &a->to_q, x);
    Var *k = linear_forward(c, &a->to_k, kv);
    Var *v = linear_forward(c, &a->to_v, kv);
    return linear_forward(c, &a->to_out, op_attention(c, q, k, v, a->heads, 0.0, false));
}

/* ---- BasicTransformerBlock ---- */

Status transformer_block_init(TransformerBlock *b, ParamStore *s, const char *prefix, int64_t dim, int heads,
                              int64_t head_dim, int64_t cross_dim) {
    char n[PARAM_NAME_MAX];
    memset(b, 0, sizeof *b);
    int64_t ff_inner = 4 * dim;
    TRY(param_store_begin_unit(s, prefix));
    TRY(layer_norm_init(&b->norm1, s, sub(n, prefix, "norm1"), dim, 1e-5, true));
    TRY(attention_init(&b->attn1, s, sub(n, prefix, "attn1"), dim, 0, heads, head_dim, false));
    TRY(layer_norm_init(&b->norm2, s, sub(n, prefix, "norm2"), dim, 1e-5, true));
    TRY(attention_init(&b->attn2, s, sub(n, prefix, "attn2"), dim, cross_dim, heads, head_dim, false));
    TRY(layer_norm_init(&b->norm3, s, sub(n, prefix, "norm3"), dim, 1e-5, true));
    TRY(linear_init(&b->ff_in, s, sub(n, prefix, "ff.net.0.proj"), dim, 2 * ff_inner, true));
    TRY(linear_init(&b->ff_out, s, sub(n, prefix, "ff.net.2"), ff_inner, dim, true));
    return ADDC_OK;
}

/* in: x (B, N, dim), ctx (B, T, cross_dim) */
static Var *transformer_block_region(Ctx *c, Var *const *in, int n_in, void *user) {
    const TransformerBlock *b = user;
    Var *h = in[0], *ctx = in[1];
    h = op_add(c, h, attention_forward(c, &b->attn1, layer_norm_forward(c, &b->norm1, h), NULL));
    h = op_add(c, h, attention_forward(c, &b->attn2, layer_norm_forward(c, &b->norm2, h), ctx));
    Var *f = linear_forward(c, &b->ff_in, layer_norm_forward(c, &b->norm3, h));
    return op_add(c, h, linear_forward(c, &b->ff_out, op_geglu(c, f)));
}

Var *transformer_block_forward(Ctx *c, const TransformerBlock *b, Var *x, Var *ctx, bool ckpt) {
    if (!x || !ctx) return NULL;
    Var *in[2] = {x, ctx};
    if (ckpt) return op_checkpoint(c, transformer_block_region, (void *)b, in, 2);
    return transformer_block_region(c, in, 2, (void *)b);
}

/* ---- Transformer2DModel ---- */

Status transformer2d_init(Transformer2D *t, ParamStore *s, const char *prefix, int64_t channels, int heads,
                          int64_t head_dim, int32_t depth, int64_t cross_dim, int groups) {
    char n[PARAM_NAME_MAX];
    memset(t, 0, sizeof *t);
    int64_t inner = heads * head_dim;
    TRY(param_store_begin_unit(s, prefix));
    TRY(group_norm_init(&t->norm, s, sub(n, prefix, "norm"), groups, channels, 1e-6, true));
    TRY(linear_init(&t->proj_in, s, sub(n, prefix, "proj_in"), channels, inner, true));
    t->blocks = calloc((size_t)(depth > 0 ? depth : 1), sizeof *t->blocks);
    if (!t->blocks) return addc_error_set(ADDC_ERR_NOMEM, "out of memory for %s", prefix);
    t->depth = depth;
    for (int32_t i = 0; i < depth; i++)
        TRY(transformer_block_init(&t->blocks[i], s, param_namef(n, prefix, "transformer_blocks.%d", i), inner, heads,
                                   head_dim, cross_dim));
    TRY(param_store_begin_unit(s, sub(n, prefix, "proj_out")));
    TRY(linear_init(&t->proj_out, s, sub(n, prefix, "proj_out"), inner, channels, true));
    return ADDC_OK;
}

void transformer2d_free(Transformer2D *t) {
    free(t->blocks);
    t->blocks = NULL;
    t->depth = 0;
}

Var *transformer2d_forward(Ctx *c, const Transformer2D *t, Var *x, Var *ctx, bool ckpt) {
    if (!x) return NULL;
    int64_t B = x->v.shape[0], H = x->v.shape[1], W = x->v.shape[2], C = x->v.shape[3];
    int64_t tok[3] = {B, H * W, C}, img[4] = {B, H, W, C};
    Var *h = linear_forward(c, &t->proj_in, op_reshape(c, group_norm_forward(c, &t->norm, x), 3, tok));
    for (int32_t i = 0; i < t->depth; i++) h = transformer_block_forward(c, &t->blocks[i], h, ctx, ckpt);
    return op_add(c, op_reshape(c, linear_forward(c, &t->proj_out, h), 4, img), x);
}

/* ---- Downsample2D / Upsample2D ---- */

Status downsample_init(Resample2D *d, ParamStore *s, const char *prefix, int64_t channels, int pad) {
    char n[PARAM_NAME_MAX];
    TRY(param_store_begin_unit(s, prefix));
    return conv2d_init(&d->conv, s, sub(n, prefix, "conv"), channels, channels, 3, 2, pad, true);
}

Var *downsample_forward(Ctx *c, const Resample2D *d, Var *x) { return conv2d_forward(c, &d->conv, x); }

Status upsample_init(Resample2D *u, ParamStore *s, const char *prefix, int64_t channels) {
    char n[PARAM_NAME_MAX];
    TRY(param_store_begin_unit(s, prefix));
    return conv2d_init(&u->conv, s, sub(n, prefix, "conv"), channels, channels, 3, 1, 1, true);
}

Var *upsample_forward(Ctx *c, const Resample2D *u, Var *x) {
    return conv2d_forward(c, &u->conv, op_upsample_nearest2x(c, x));
}

/* ---- TimestepEmbedding ---- */

Status timestep_embedding_init(TimestepEmbedding *e, ParamStore *s, const char *prefix, int64_t din, int64_t dout) {
    char n[PARAM_NAME_MAX];
    TRY(param_store_begin_unit(s, prefix));
    TRY(linear_init(&e->linear_1, s, sub(n, prefix, "linear_1"), din, dout, true));
    return linear_init(&e->linear_2, s, sub(n, prefix, "linear_2"), dout, dout, true);
}

Var *timestep_embedding_forward(Ctx *c, const TimestepEmbedding *e, Var *x) {
    return linear_forward(c, &e->linear_2, op_silu(c, linear_forward(c, &e->linear_1, x)));
}
