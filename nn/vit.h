/* nn/vit: the DINOv2 vision transformer (transformers Dinov2Model: ViT-S/14, ViT-L/14 and tiny
 * presets), the discriminator's frozen feature network and the image-conditioning encoder.
 *
 * The configuration is transformers' config.json as YAML (configs/models/dinov2_vits14.yaml,
 * dinov2_vitl14.yaml, tiny_dinov2.yaml) plus addc's fields: which blocks' outputs to tap, the
 * input size and the ImageNet mean / std of the preprocessing. Parameter names and order are
 * transformers' ("embeddings.cls_token", "encoder.layer.3.attention.attention.query.weight",
 * "encoder.layer.3.layer_scale1.lambda1", "layernorm.weight"), so a Dinov2Model
 * model.safetensors loads by name.
 *
 * Forward (transformers modeling_dinov2.py): 14x14 patch embedding (a stride-14 conv), CLS
 * token, learned position embeddings interpolated bicubically (align_corners false, as
 * transformers' interpolate_pos_encoding) to the input's patch grid, pre-norm blocks with
 * LayerScale on both branches (attention with biased q/k/v, erf GELU MLP), final LayerNorm.
 *
 * Taps are the hidden states (B, 1 + N, D) with the CLS token first, before the final norm:
 * the patch-embedding output (CLS + patches + positions) when tap_patch_embedding, then the
 * output of each block in tap_blocks (0-based; StyleGAN-T and ADD tap 2, 5, 8, 11). The CLS
 * output is the final LayerNorm's CLS row (transformers' pooler_output): ADD's image
 * conditioning from ViT-L/14. Blocks after the last one needed are not run.
 *
 * Classification head (addc's, for the toy experiment where addc trains this network itself):
 * with num_labels K > 0, classifier.weight (K, D) and classifier.bias (K) map the final-norm CLS
 * to logits (own unit "classifier", declared last, so the other parameters keep their order and
 * random initialisation). This is NOT transformers' Dinov2ForImageClassification head, which
 * reads [CLS, mean of the patch tokens] (2D wide); a facebook checkpoint has no classifier and
 * loads with num_labels 0 (the default) exactly as before.
 *
 * Every block is a ParamStore unit and, with gradient_checkpointing, a checkpointed region.
 * DINOv2 is frozen in ADD but taped on the fake path: the generator's gradient flows through it
 * to the image (and through vit_preprocess's area resize to the decoded image). */
#ifndef ADDC_NN_VIT_H
#define ADDC_NN_VIT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "nn/layers.h"
#include "nn/weights.h"

#define VIT_MAX_TAPS 16
#define VIT_NAME_LEN 32

typedef struct Dinov2Config {
    char model_type[VIT_NAME_LEN];
    int64_t hidden_size, num_hidden_layers, num_attention_heads;
    double mlp_ratio;
    char hidden_act[VIT_NAME_LEN];
    double hidden_dropout_prob, attention_probs_dropout_prob, initializer_range, layer_norm_eps;
    int64_t image_size, patch_size, num_channels;
    bool qkv_bias;
    double layerscale_value, drop_path_rate;
    bool use_swiglu_ffn, use_mask_token;
    /* addc */
    int64_t tap_blocks[VIT_MAX_TAPS];
    int32_t n_tap_blocks;
    bool tap_patch_embedding;
    int64_t input_size; /* vit_preprocess resizes to input_size x input_size */
    double image_mean[4], image_std[4];
    int32_t n_image_mean, n_image_std;
    int64_t num_labels; /* > 0: the classification head (see the top of this file) */
} Dinov2Config;

extern const ConfigSchema dinov2_config_schema;

Status dinov2_config_load(Dinov2Config *cfg, const char *path, const char *const *overrides, int32_t n_overrides);
Status dinov2_config_check(const Dinov2Config *cfg);

typedef struct ViTBlock {
    Norm norm1, norm2;             /* LayerNorm(D, layer_norm_eps) */
    Linear query, key, value;      /* attention.attention.* (D, D) */
    Linear dense;                  /* attention.output.dense (D, D) */
    Var *ls1, *ls2;                /* layer_scale{1,2}.lambda1 (D) */
    Linear fc1, fc2;               /* mlp.fc1 (Dm, D), mlp.fc2 (D, Dm) */
    int heads;
} ViTBlock;

typedef struct Dinov2 {
    Dinov2Config cfg;
    Var *cls_token;           /* (1, 1, D) */
    Var *mask_token;          /* (1, D), unused by the forward; NULL without use_mask_token */
    Var *position_embeddings; /* (1, 1 + S*S, D), S = image_size / patch_size */
    Conv2d patch;             /* embeddings.patch_embeddings.projection: (D, P, P, C), stride P */
    int64_t pos_side;         /* S */
    ViTBlock *blocks;         /* num_hidden_layers, malloc'd */
    Norm layernorm;
    Linear classifier;        /* (num_labels, D) and (num_labels); weight NULL when num_labels is 0 */
    bool gradient_checkpointing;
} Dinov2;

/* Declares every parameter in s (not yet allocated); s may be on the meta device. Units:
 * "embeddings", each "encoder.layer.<i>", "layernorm", and "classifier" with num_labels. */
Status dinov2_init(Dinov2 *m, const Dinov2Config *cfg, ParamStore *s);
void dinov2_free(Dinov2 *m);

/* image (B, H, W, C) in [-1, 1] -> (B, input_size, input_size, C): [0, 1], area resize (torch
 * interpolate mode "area"), then (x - image_mean) / image_std per channel. */
Var *dinov2_preprocess(Ctx *c, const Dinov2 *m, Var *image);

typedef struct Dinov2Output {
    int32_t n_taps;
    Var *taps[VIT_MAX_TAPS]; /* (B, 1 + N, D) each: patch embedding first (if tapped), then tap_blocks in order */
    Var *cls;                /* (B, D) final-norm CLS row, or NULL when not asked for */
} Dinov2Output;

/* pixels (B, H, W, C) normalised (dinov2_preprocess), H and W multiples of patch_size. With
 * want_cls every block and the final norm run; otherwise only up to the last tapped block. */
Status dinov2_forward(Ctx *c, const Dinov2 *m, Var *pixels, bool want_cls, Dinov2Output *out);

/* The classification head on the final-norm CLS (B, D) -> logits (B, num_labels); NULL with an
 * error when num_labels is 0. */
Var *dinov2_classifier_forward(Ctx *c, const Dinov2 *m, Var *cls);

/* Loads transformers' Dinov2Model model.safetensors (facebook/dinov2-small, -large: the names
 * as they are). opt and rep may be NULL. */
Status dinov2_load(const Dinov2 *m, ParamStore *s, const char *path, const WeightsLoadOptions *opt,
                   WeightsReport *rep);

#endif
