/* nn/forward: one network's forward on named tensors, the work behind `addc forward`
 * (launch/forward.c): how a user checks an imported checkpoint against diffusers, transformers
 * or the StyleGAN-T heads in torch.
 *
 * Tensors are named as the reference libraries name their forward arguments and output fields,
 * and lie in their layout: images NCHW (B, C, H, W) as diffusers and torch keep them, the heads'
 * features (B, C, N) as StyleGAN-T's DiscHead takes them. They are converted to addc's
 * channels-last layout inside and back for the outputs, so files compare directly with what the
 * Python libraries give. Float inputs may be F32, F16, BF16 or F64 (read as f32); token ids are
 * I64 or I32. Outputs are F32 (token ids I64).
 *
 *   UNet2DConditionModel  in   sample (B, in_channels, H, W), timestep () (1) or (B),
 *                              encoder_hidden_states (B, T, cross_attention_dim);
 *                              text_time (SDXL): text_embeds (B, Dt), time_ids (B, 6)
 *                         out  sample (B, out_channels, H, W)
 *   AutoencoderKL encode  in   sample (B, in_channels, H, W)
 *                         out  latent_dist.mean, latent_dist.logvar (B, latent_channels, h, w)
 *                 decode  in   z (B, latent_channels, h, w) (or `sample` with FORWARD_VAE_DECODE)
 *                         out  sample (B, out_channels, H, W)
 *   Dinov2Model           in   pixel_values (B, C, H, W), normalised as the image processor
 *                              gives them, H and W multiples of patch_size; or image (B, C, H, W)
 *                              in [-1, 1], which addc preprocesses (area resize to input_size,
 *                              ImageNet normalisation) and writes as pixel_values
 *                         out  hidden_states[i] (B, 1 + N, D) for each tap (i = 0 the patch
 *                              embedding, b + 1 block b: transformers' output_hidden_states
 *                              indices), pooler_output (B, D), last_hidden_state when the last
 *                              block is tapped; logits (B, num_labels) with addc's classifier
 *   CLIPTextModel[WithProjection]
 *                         in   input_ids (B, T), or captions tokenised by ForwardOptions
 *                         out  last_hidden_state, hidden_states[-2] (B, T, D), pooler_output (B, D)
 *                              (the end-of-text row), text_embeds (B, projection_dim) with the
 *                              projection; input_ids when captions were given
 *   DiscHeads             in   per head k: features.k (B, C, N) or tokens.k (B, 1 + N, C) (DINOv2
 *                              hidden states, CLS first: StyleGAN-T's readout is applied); when
 *                              conditioned: c (B, c_dim) or c_text and c_img (concatenated, text
 *                              first: ADD's ViT-g-14 text embedding and DINOv2 ViT-L CLS)
 *                         out  logits.k (B, N); with heads_train the spectral-norm vectors after
 *                              the power iteration, under their state-dict names
 *   ConvNet               in   image (B, in_channels, H, W) in [-1, 1]
 *                         out  features (B, widths[-1]), logits (B, num_labels) */
#ifndef ADDC_NN_FORWARD_H
#define ADDC_NN_FORWARD_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/model.h"
#include "nn/safetensors.h"
#include "nn/tokenizer.h"

#define FORWARD_MAX_OUTPUTS 96
#define FORWARD_NAME_MAX 96

typedef enum ForwardVae {
    FORWARD_VAE_AUTO = 0, /* by the input names: sample -> encode, z -> decode, both -> both */
    FORWARD_VAE_ENCODE,
    FORWARD_VAE_DECODE,
} ForwardVae;

typedef struct ForwardOptions {
    ForwardVae vae;
    bool heads_train;               /* one power iteration per spectral norm, as torch's train() */
    const ClipTokenizer *tokenizer; /* needed with captions */
    const char *const *captions;    /* CLIP: tokenised to max_position_embeddings ids each */
    int32_t n_captions;
    TokenizerClean clean;
} ForwardOptions;

typedef struct ForwardResult {
    int32_t n;
    StTensor t[FORWARD_MAX_OUTPUTS]; /* name and data malloc'd; file layout */
    char unused[512];                /* input names the network did not read, ", "-separated */
    char inputs[1024];               /* what it ran on, as text: "sample (2, 4, 8, 8), ..." */
} ForwardResult;

/* Loads weights from a diffusers / transformers / Stability single-file / torch heads file into
 * a model built on the CPU. opt and rep may be NULL (rep is not filled for the heads). */
Status forward_weights_load(Model *m, const char *path, const WeightsLoadOptions *opt, WeightsReport *rep);
/* Random weights keyed by seed (param_store_init_random; the heads' own initialisation). */
Status forward_weights_random(Model *m, uint64_t seed);

/* Runs the network on the tensors of `in` (see the top of this file) and fills r. A missing
 * input, a wrong shape or dtype is refused with a message naming what the network expects. Call
 * forward_result_free afterwards, also when it fails. `in` may be NULL (captions only). */
Status forward_run(Model *m, const SafeTensors *in, const ForwardOptions *o, ForwardResult *r);
void forward_result_free(ForwardResult *r);

#endif
