/* nn/unet_blocks: the diffusers building blocks of UNet2DConditionModel, reusable by the VAE:
 * ResnetBlock2D, Attention, BasicTransformerBlock (self-attention, cross-attention, GEGLU
 * feed-forward), Transformer2DModel, Downsample2D, Upsample2D, TimestepEmbedding.
 *
 * Parameter names are the diffusers suffixes under the prefix given to *_init
 * ("norm1.weight", "attn2.to_k.weight", "ff.net.0.proj.weight", ...). Feature maps are NHWC
 * (B, H, W, C); tokens (B, N, D). Every resnet block and every transformer block starts a
 * ParamStore unit named by its prefix and, with `ckpt` set, runs as one checkpointed region
 * (recomputed in backward; ARCHITECTURE §8). */
#ifndef ADDC_NN_UNET_BLOCKS_H
#define ADDC_NN_UNET_BLOCKS_H

#include <stdbool.h>

#include "nn/layers.h"

/* diffusers ResnetBlock2D (time_embedding_norm "default", SiLU, no up/down sampling) */
typedef struct ResnetBlock2D {
    Norm norm1, norm2;     /* GroupNorm(groups, cin / cout, eps) */
    Conv2d conv1, conv2;   /* 3x3, pad 1 */
    Linear time_emb_proj;  /* (cout, temb) ; weight NULL without a time embedding */
    Conv2d conv_shortcut;  /* 1x1 when cin != cout; weight NULL otherwise */
    double output_scale_factor;
} ResnetBlock2D;

/* temb_channels 0: no time embedding (the VAE). Begins a unit named prefix. */
Status resnet_block_init(ResnetBlock2D *r, ParamStore *s, const char *prefix, int64_t cin, int64_t cout,
                         int64_t temb_channels, int groups, double eps, double output_scale_factor);
/* x (B, H, W, cin); temb_act (B, temb) = silu(temb) or NULL; skip (B, H, W, cs) or NULL is
 * concatenated after x along channels first (the up path), so cin counts both. */
Var *resnet_block_forward(Ctx *c, const ResnetBlock2D *r, Var *x, Var *skip, Var *temb_act, bool ckpt);

/* diffusers Attention as the transformer blocks use it: to_q, to_k, to_v, to_out.0 */
typedef struct Attention {
    Linear to_q, to_k, to_v, to_out;
    int heads;
} Attention;

/* cross_dim 0: self-attention (keys from the queries' width) */
Status attention_init(Attention *a, ParamStore *s, const char *prefix, int64_t query_dim, int64_t cross_dim,
                      int heads, int64_t head_dim, bool qkv_bias);
/* x (B, N, query_dim); ctx (B, T, cross_dim) or NULL for self-attention -> (B, N, query_dim) */
Var *attention_forward(Ctx *c, const Attention *a, Var *x, Var *ctx);

/* diffusers BasicTransformerBlock, norm_type "layer_norm", activation "geglu" */
typedef struct TransformerBlock {
    Norm norm1, norm2, norm3; /* LayerNorm(dim, 1e-5) */
    Attention attn1, attn2;
    Linear ff_in;  /* ff.net.0.proj (2 * 4 dim, dim) */
    Linear ff_out; /* ff.net.2 (dim, 4 dim) */
} TransformerBlock;

/* Begins a unit named prefix. */
Status transformer_block_init(TransformerBlock *b, ParamStore *s, const char *prefix, int64_t dim, int heads,
                              int64_t head_dim, int64_t cross_dim);
/* x (B, N, dim), ctx (B, T, cross_dim) -> (B, N, dim) */
Var *transformer_block_forward(Ctx *c, const TransformerBlock *b, Var *x, Var *ctx, bool ckpt);

/* diffusers Transformer2DModel (continuous input, use_linear_projection): GroupNorm(eps 1e-6),
 * proj_in, blocks, proj_out, residual */
typedef struct Transformer2D {
    Norm norm;
    Linear proj_in, proj_out; /* (inner, C), (C, inner) */
    TransformerBlock *blocks; /* depth of them, malloc'd */
    int32_t depth;
} Transformer2D;

/* Units: prefix (norm, proj_in), each block, prefix + ".proj_out". */
Status transformer2d_init(Transformer2D *t, ParamStore *s, const char *prefix, int64_t channels, int heads,
                          int64_t head_dim, int32_t depth, int64_t cross_dim, int groups);
void transformer2d_free(Transformer2D *t);
/* x (B, H, W, C), ctx (B, T, cross_dim) -> (B, H, W, C) */
Var *transformer2d_forward(Ctx *c, const Transformer2D *t, Var *x, Var *ctx, bool ckpt);

/* diffusers Downsample2D (conv 3x3, stride 2, padding `pad`) and Upsample2D (nearest 2x, conv 3x3) */
typedef struct Resample2D {
    Conv2d conv;
} Resample2D;

/* Each begins a unit named prefix ("down_blocks.0.downsamplers.0"); the conv is prefix.conv. */
Status downsample_init(Resample2D *d, ParamStore *s, const char *prefix, int64_t channels, int pad);
Var *downsample_forward(Ctx *c, const Resample2D *d, Var *x);
Status upsample_init(Resample2D *u, ParamStore *s, const char *prefix, int64_t channels);
Var *upsample_forward(Ctx *c, const Resample2D *u, Var *x);

/* diffusers TimestepEmbedding: linear_1, SiLU, linear_2 */
typedef struct TimestepEmbedding {
    Linear linear_1, linear_2;
} TimestepEmbedding;

/* Begins a unit named prefix. */
Status timestep_embedding_init(TimestepEmbedding *e, ParamStore *s, const char *prefix, int64_t din, int64_t dout);
Var *timestep_embedding_forward(Ctx *c, const TimestepEmbedding *e, Var *x);

#endif
