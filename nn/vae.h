/* nn/vae: diffusers AutoencoderKL (the SDXL / SD VAE), NHWC.
 *
 * The configuration is diffusers' vae/config.json as YAML (configs/models/sdxl_vae.yaml,
 * tiny_vae.yaml); field names and meanings are diffusers'. Parameters carry diffusers' names
 * in diffusers' state-dict order ("encoder.down_blocks.0.resnets.0.conv1.weight", ...,
 * "quant_conv.weight", "post_quant_conv.weight"), so a diffusers vae/ folder loads by name
 * and the original single-file layout ("first_stage_model.encoder.down.0.block.0...") through
 * vae_key_map_ldm.
 *
 * Units: encoder and decoder conv_in, every resnet block, each mid-block attention, every
 * down/up sampler, each conv_norm_out and conv_out, quant_conv, post_quant_conv. With
 * gradient_checkpointing every resnet block and attention runs as a checkpointed region: the
 * decoder on the fake path of an ADD step holds the step's largest activations (ARCHITECTURE
 * §9) and is taped there for its input gradient only.
 *
 * Latents: vae_encode gives the posterior's mean and log-variance (after quant_conv);
 * vae_encode_latents returns scaling_factor * (z - shift_factor), z the mean or a sample;
 * vae_decode_latents undoes that scaling and decodes. Images are (B, H, W, 3) in [-1, 1]. */
#ifndef ADDC_NN_VAE_H
#define ADDC_NN_VAE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/rng.h"
#include "nn/unet_blocks.h"
#include "nn/weights.h"

#define VAE_MAX_BLOCKS 8
#define VAE_NAME_LEN 48

typedef struct VaeConfig {
    char _class_name[VAE_NAME_LEN];
    int64_t in_channels, out_channels, latent_channels;
    char down_block_types[VAE_MAX_BLOCKS][VAE_NAME_LEN];
    int32_t n_down_block_types;
    char up_block_types[VAE_MAX_BLOCKS][VAE_NAME_LEN];
    int32_t n_up_block_types;
    int64_t block_out_channels[VAE_MAX_BLOCKS];
    int32_t n_block_out_channels;
    int64_t layers_per_block;
    char act_fn[VAE_NAME_LEN];
    int64_t norm_num_groups;
    int64_t sample_size;
    double scaling_factor;
    double shift_factor; /* 0 for diffusers' null */
    bool force_upcast;   /* f16 compute in diffusers; addc computes in f32: no effect */
    bool use_quant_conv, use_post_quant_conv, mid_block_add_attention;
} VaeConfig;

extern const ConfigSchema vae_config_schema;

/* Loads a model YAML (then `a.b=value` overrides) and checks it. */
Status vae_config_load(VaeConfig *cfg, const char *path, const char *const *overrides, int32_t n_overrides);
Status vae_config_check(const VaeConfig *cfg);

/* diffusers UNetMidBlock2D without time embedding: resnet, attention (one head over all
 * channels, GroupNorm, residual), resnet */
typedef struct VaeMidBlock {
    ResnetBlock2D resnets[2];
    bool has_attention;
    Norm attn_norm;  /* attentions.0.group_norm */
    Attention attn;  /* attentions.0.to_q / to_k / to_v / to_out.0 (with biases) */
} VaeMidBlock;

/* DownEncoderBlock2D / UpDecoderBlock2D */
typedef struct VaeBlock {
    int32_t n_layers;
    ResnetBlock2D *resnets; /* n_layers, malloc'd */
    bool has_sampler;
    Resample2D sampler;     /* downsamplers.0 (stride 2 after a right/bottom zero pad) / upsamplers.0 */
} VaeBlock;

typedef struct VaeEncoder {
    Conv2d conv_in;
    VaeBlock down[VAE_MAX_BLOCKS];
    VaeMidBlock mid;
    Norm conv_norm_out;
    Conv2d conv_out; /* 2 x latent_channels: mean and log-variance */
} VaeEncoder;

typedef struct VaeDecoder {
    Conv2d conv_in;
    VaeMidBlock mid;
    VaeBlock up[VAE_MAX_BLOCKS];
    Norm conv_norm_out;
    Conv2d conv_out;
} VaeDecoder;

typedef struct AutoencoderKL {
    VaeConfig cfg;
    int32_t n_blocks;
    VaeEncoder encoder;
    VaeDecoder decoder;
    Conv2d quant_conv, post_quant_conv; /* 1x1; weight NULL when the config disables them */
    bool gradient_checkpointing;        /* recompute every resnet block and attention in backward */
} AutoencoderKL;

/* Declares every parameter in s (not yet allocated); s may be on the meta device. */
Status vae_init(AutoencoderKL *m, const VaeConfig *cfg, ParamStore *s);
void vae_free(AutoencoderKL *m);

/* Downsampling factor between image and latent: 2^(blocks - 1). */
int64_t vae_downscale(const AutoencoderKL *m);

/* x (B, H, W, in_channels), H and W multiples of vae_downscale -> the posterior's mean and
 * log-variance, each (B, H/f, W/f, latent_channels). */
Status vae_encode(Ctx *c, const AutoencoderKL *m, Var *x, Var **mean, Var **logvar);
/* scaling_factor * (z - shift_factor), z = mean when eps is NULL, else mean + exp(logvar/2)
 * eps with logvar clamped to [-30, 20] as diffusers does; eps (B, h, w, latent_channels) is
 * standard normal noise (vae_noise draws it). A sample's gradient reaches the mean only. */
Var *vae_encode_latents(Ctx *c, const AutoencoderKL *m, Var *x, Var *eps);
/* Standard normal noise of the latent shape for a batch: sample b is drawn from stream
 * (key->seed, key->purpose, key->index + b, key->step), so it does not depend on the batch
 * split. */
Var *vae_noise(Ctx *c, const AutoencoderKL *m, int64_t B, int64_t h, int64_t w, const RngKey *key);

/* z (B, h, w, latent_channels), as the encoder's posterior gives it -> (B, f h, f w, out_channels) */
Var *vae_decode(Ctx *c, const AutoencoderKL *m, Var *z);
/* the same from scaled latents: z / scaling_factor + shift_factor first */
Var *vae_decode_latents(Ctx *c, const AutoencoderKL *m, Var *latents);

/* The original Stability single-file layout: module key -> "first_stage_model.<ldm key>".
 * Writes the file key into out (WEIGHTS_KEY_MAX); false for a name the layout lacks. */
bool vae_ldm_key(const VaeConfig *cfg, const char *module_key, char *out);
/* The key map of that layout (scope "first_stage_model."; 1x1-conv attention weights load into
 * the linear layers); m must outlive it. */
WeightsKeyMap vae_key_map_ldm(const AutoencoderKL *m);
/* Loads a diffusers vae/diffusion_pytorch_model.safetensors or a Stability single file, telling
 * them apart by the "first_stage_model." keys. opt and rep may be NULL. */
Status vae_load(const AutoencoderKL *m, ParamStore *s, const char *path, const WeightsLoadOptions *opt,
                WeightsReport *rep);

#endif
