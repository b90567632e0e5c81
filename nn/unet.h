/* nn/unet: diffusers UNet2DConditionModel (SDXL, SD 2.1 and tiny presets), NHWC.
 *
 * The configuration is diffusers' config.json as YAML (configs/models/sdxl_unet.yaml,
 * sd21_unet.yaml, tiny_unet.yaml, tiny_sd21_unet.yaml); field names and meanings are
 * diffusers'. Lists that diffusers also accepts as a single int (attention_head_dim,
 * transformer_layers_per_block, num_attention_heads) are lists here; one element applies to
 * every block. Nullable diffusers ints (num_class_embeds, time_cond_proj_dim, ...) are 0 for
 * null: leave them out of the YAML. Features SDXL and SD 2.x do not use are refused at
 * unet2d_config_check with a message naming the field.
 *
 * Note diffusers' naming: when num_attention_heads is empty, attention_head_dim gives the
 * number of HEADS per block (SDXL 5, 10, 20: 64-dim heads), not their width.
 *
 * Parameters are declared in diffusers' state-dict order with diffusers' names, so the
 * store lists exactly what `UNet2DConditionModel(**config).state_dict()` lists. Units:
 * conv_in, time_embedding, add_embedding, every resnet block, every Transformer2D's
 * norm + proj_in, every transformer block, every proj_out, every down/up sampler,
 * conv_norm_out, conv_out. */
#ifndef ADDC_NN_UNET_H
#define ADDC_NN_UNET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "nn/unet_blocks.h"
#include "nn/weights.h"

#define UNET_MAX_BLOCKS 8  /* levels */
#define UNET_MAX_LAYERS 64 /* layers_per_block */
#define UNET_NAME_LEN 48

typedef struct UNet2DConfig {
    char _class_name[UNET_NAME_LEN];
    int64_t sample_size, in_channels, out_channels;
    bool center_input_sample, flip_sin_to_cos;
    int64_t freq_shift;
    char down_block_types[UNET_MAX_BLOCKS][UNET_NAME_LEN];
    int32_t n_down_block_types;
    char mid_block_type[UNET_NAME_LEN];
    char up_block_types[UNET_MAX_BLOCKS][UNET_NAME_LEN];
    int32_t n_up_block_types;
    bool only_cross_attention;
    int64_t block_out_channels[UNET_MAX_BLOCKS];
    int32_t n_block_out_channels;
    int64_t layers_per_block, downsample_padding;
    double mid_block_scale_factor, dropout;
    char act_fn[UNET_NAME_LEN];
    int64_t norm_num_groups;
    double norm_eps;
    int64_t cross_attention_dim;
    int64_t transformer_layers_per_block[UNET_MAX_BLOCKS];
    int32_t n_transformer_layers_per_block;
    int64_t reverse_transformer_layers_per_block[UNET_MAX_BLOCKS];
    int32_t n_reverse_transformer_layers_per_block;
    int64_t encoder_hid_dim;
    char encoder_hid_dim_type[UNET_NAME_LEN];
    int64_t attention_head_dim[UNET_MAX_BLOCKS];
    int32_t n_attention_head_dim;
    int64_t num_attention_heads[UNET_MAX_BLOCKS];
    int32_t n_num_attention_heads;
    bool dual_cross_attention, use_linear_projection;
    char class_embed_type[UNET_NAME_LEN];
    char addition_embed_type[UNET_NAME_LEN]; /* "" (null) or "text_time" */
    int64_t addition_time_embed_dim, num_class_embeds;
    bool upcast_attention; /* f32 compute: no effect */
    char resnet_time_scale_shift[UNET_NAME_LEN];
    bool resnet_skip_time_act;
    double resnet_out_scale_factor;
    char time_embedding_type[UNET_NAME_LEN];
    int64_t time_embedding_dim;
    char time_embedding_act_fn[UNET_NAME_LEN], timestep_post_act[UNET_NAME_LEN];
    int64_t time_cond_proj_dim, conv_in_kernel, conv_out_kernel, projection_class_embeddings_input_dim;
    char attention_type[UNET_NAME_LEN];
    bool class_embeddings_concat, mid_block_only_cross_attention;
    char cross_attention_norm[UNET_NAME_LEN];
    int64_t addition_embed_type_num_heads;
} UNet2DConfig;

extern const ConfigSchema unet2d_config_schema;

/* Loads a model YAML (then `a.b=value` overrides) and checks it. */
Status unet2d_config_load(UNet2DConfig *cfg, const char *path, const char *const *overrides, int32_t n_overrides);
/* Refuses what addc does not implement, with the field's name; checks list lengths. */
Status unet2d_config_check(const UNet2DConfig *cfg);

typedef struct UNetBlock {
    bool cross_attn;            /* CrossAttn{Down,Up}Block2D */
    int32_t n_layers;           /* resnets (and attentions when cross_attn) */
    ResnetBlock2D *resnets;     /* n_layers */
    Transformer2D *attentions;  /* n_layers, or NULL */
    bool has_sampler;
    Resample2D sampler;         /* downsamplers.0 / upsamplers.0 */
} UNetBlock;

typedef struct UNet2D {
    UNet2DConfig cfg;
    int32_t n_blocks;
    int64_t time_embed_dim;     /* 4 x block_out_channels[0] */
    Conv2d conv_in;
    TimestepEmbedding time_embedding;
    TimestepEmbedding add_embedding; /* text_time only */
    bool has_add_embedding;
    UNetBlock down[UNET_MAX_BLOCKS];
    ResnetBlock2D mid_resnets[2];
    Transformer2D mid_attention;
    UNetBlock up[UNET_MAX_BLOCKS];
    Norm conv_norm_out;
    Conv2d conv_out;
    bool gradient_checkpointing; /* recompute every resnet and transformer block in backward */
} UNet2D;

/* Declares every parameter in s (not yet allocated); s may be on the meta device. Call
 * unet2d_free afterwards, also when it fails. */
Status unet2d_init(UNet2D *m, const UNet2DConfig *cfg, ParamStore *s);
void unet2d_free(UNet2D *m);

/* SDXL's added conditioning (addition_embed_type text_time) */
typedef struct UNetAddedCond {
    Var *text_embeds; /* (B, projection_class_embeddings_input_dim - 6 * addition_time_embed_dim): pooled text */
    Var *time_ids;    /* (B, 6): original h, w, crop top, left, target h, w */
} UNetAddedCond;

/* sample (B, H, W, in_channels), timesteps (B) f32, encoder_hidden_states (B, T,
 * cross_attention_dim), added NULL unless text_time -> (B, H, W, out_channels). H and W must be
 * divisible by 2^(blocks - 1). */
Var *unet2d_forward(Ctx *c, const UNet2D *m, Var *sample, Var *timesteps, Var *encoder_hidden_states,
                    const UNetAddedCond *added);

/* The original Stability single-file layout: module key -> "model.diffusion_model.<ldm key>".
 * Writes the file key into out (WEIGHTS_KEY_MAX); false for a name the layout lacks. */
bool unet2d_ldm_key(const UNet2DConfig *cfg, const char *module_key, char *out);
/* The key map of that layout (scope "model.diffusion_model."); m must outlive it. */
WeightsKeyMap unet2d_key_map_ldm(const UNet2D *m);
/* Loads a diffusers unet/diffusion_pytorch_model.safetensors or a Stability single file
 * (sd_xl_base_1.0.safetensors, sd_xl_turbo_1.0_fp16.safetensors, v2-1_768-ema-pruned...),
 * telling them apart by the "model.diffusion_model." keys. opt and rep may be NULL. */
Status unet2d_load(const UNet2D *m, ParamStore *s, const char *path, const WeightsLoadOptions *opt,
                   WeightsReport *rep);

#endif
