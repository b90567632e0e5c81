/* nn/convnet: a small pre-activation ResNet image classifier, addc's evaluation network for the
 * Fashion-MNIST experiment: Fréchet distance, class accuracy and within-class diversity are
 * measured in its pooled features. It is deliberately not the DINOv2 architecture the
 * discriminator uses, so that the metric does not reward fitting the discriminator's features.
 *
 * The configuration (configs/models/toy_evalnet.yaml) has no ecosystem twin; `model_type: convnet`
 * names it. Architecture, NHWC throughout:
 *   stem                    conv3x3 (in_channels -> widths[0])
 *   per stage i             blocks_per_stage pre-activation residual blocks: GroupNorm, SiLU,
 *                           conv3x3, GroupNorm, SiLU, conv3x3, plus a 1x1 shortcut when the channels
 *                           change (diffusers' ResnetBlock2D without a time embedding; the first
 *                           block of stage i > 0 goes widths[i-1] -> widths[i]);
 *                           then, except after the last stage, a stride-2 conv3x3 (widths[i] ->
 *                           widths[i]) halving H and W
 *   norm_out                GroupNorm + SiLU
 *   features                the mean over H and W: (B, widths[-1])
 *   classifier              Linear(widths[-1] -> num_labels)
 * Parameter names, PyTorch style: stem.weight, stages.0.blocks.0.norm1.weight,
 * stages.0.blocks.0.conv1.weight, stages.1.blocks.0.conv_shortcut.weight,
 * stages.0.downsample.weight, norm_out.weight, classifier.weight (every conv and linear has a
 * bias). tests/ref/make_convnet_fixture.py is the torch twin. Units: "stem", each block
 * "stages.<i>.blocks.<j>" (a checkpointed region with gradient_checkpointing), each
 * "stages.<i>.downsample", "norm_out", "classifier".
 *
 * Input: images (B, H, W, in_channels) in [-1, 1] as they are (no normalisation). Any H, W >= 1
 * runs; image_size is the size it is trained and probed at. */
#ifndef ADDC_NN_CONVNET_H
#define ADDC_NN_CONVNET_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "nn/layers.h"
#include "nn/unet_blocks.h"
#include "nn/weights.h"

#define CONVNET_MAX_STAGES 8
#define CONVNET_NAME_LEN 32

typedef struct ConvNetConfig {
    char model_type[CONVNET_NAME_LEN]; /* "convnet" */
    int64_t in_channels, image_size;
    int64_t widths[CONVNET_MAX_STAGES]; /* channels per stage */
    int32_t n_widths;                   /* stages */
    int64_t blocks_per_stage;
    int64_t norm_num_groups;
    double norm_eps;
    int64_t num_labels;
} ConvNetConfig;

extern const ConfigSchema convnet_config_schema;

Status convnet_config_load(ConvNetConfig *cfg, const char *path, const char *const *overrides, int32_t n_overrides);
Status convnet_config_check(const ConvNetConfig *cfg);

typedef struct ConvNet {
    ConvNetConfig cfg;
    Conv2d stem;                             /* (widths[0], 3, 3, in_channels) */
    ResnetBlock2D *blocks;                   /* (n_widths * blocks_per_stage), stage-major, malloc'd */
    Conv2d downsample[CONVNET_MAX_STAGES];   /* (widths[i], 3, 3, widths[i]) stride 2; none after the last */
    Norm norm_out;                           /* GroupNorm(norm_num_groups, widths[-1]) */
    Linear classifier;                       /* (num_labels, widths[-1]) */
    bool gradient_checkpointing;
} ConvNet;

/* Declares every parameter in s (not yet allocated); s may be on the meta device. */
Status convnet_init(ConvNet *m, const ConvNetConfig *cfg, ParamStore *s);
void convnet_free(ConvNet *m);

/* images (B, H, W, in_channels) in [-1, 1] -> features (B, widths[-1]) and logits
 * (B, num_labels); either output pointer may be NULL. */
Status convnet_forward(Ctx *c, const ConvNet *m, Var *images, Var **features, Var **logits);

/* Loads a safetensors file holding the convnet's parameters under their names (what addc saves;
 * torch's state_dict of the twin). opt and rep may be NULL. */
Status convnet_load(const ConvNet *m, ParamStore *s, const char *path, const WeightsLoadOptions *opt,
                    WeightsReport *rep);

#endif
