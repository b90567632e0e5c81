/* nn/disc: the discriminator heads of ADD (StyleGAN-T's DiscHead, networks/discriminator.py), one
 * per tapped feature layer of the frozen DINOv2 (ADD.md "Networks").
 *
 * A head maps features (B, N, C) (tokens with the CLS token added to every patch token:
 * disc_tokens_readout) to logits (B, N):
 *   main.0:  spectral-norm Conv1d(C, C, k=1) -> BatchNormLocal(C, virtual_bs) -> LeakyReLU(0.2)
 *   main.1:  ResidualBlock of the same with k = kernel_size (9), circular padding: (f(h) + h) / sqrt 2
 *   cls:     spectral-norm Conv1d(C, cmap_dim, k=1)
 *   logits = sum_channels(cls(h) * cmapper(c)) / sqrt(cmap_dim), cmapper = Linear(c_dim -> cmap_dim);
 *   with c_dim 0 (unconditional) cls has one channel and is the logit.
 * ADD conditions on the ViT-g-14 text embedding and the DINOv2 ViT-L/14 CLS of the real image,
 * concatenated (disc_heads.yaml: c_dim 2048). cmapper_equalized_lr selects StyleGAN-T's
 * FullyConnectedLayer (weight times 1/sqrt(c_dim) at run time, initialised N(0, 1)) instead of a
 * plain Linear.
 *
 * Parameters carry torch's names under "heads.<k>." in DiscHead's parameter order
 * ("heads.0.main.0.0.bias", "heads.0.main.0.0.weight_orig", "heads.0.main.1.fn.1.weight",
 * "heads.0.cmapper.weight", "heads.0.cls.weight_orig"). Conv weights are kept in torch's
 * (Cout, Cin, K) order, not addc's (Cout, K, Cin), so that the spectral norm's power-iteration
 * vectors (weight_u (Cout), weight_v (Cin K)) are torch's exactly and state dicts round-trip; the
 * normalised weight is permuted for op_conv1d (a view for k = 1). u and v are not parameters:
 * they live in a second, non-trainable store (`state`), saved and loaded by the same weights API.
 * Each head is one ParamStore unit. Heads are never checkpointed: R1 differentiates them twice
 * (every op here has a create-graph backward). */
#ifndef ADDC_NN_DISC_H
#define ADDC_NN_DISC_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "nn/layers.h"
#include "nn/weights.h"

#define DISC_MAX_HEADS 16

typedef struct DiscHeadsConfig {
    int64_t n_heads;   /* one per feature tap */
    int64_t channels;  /* C: the feature width (384 for ViT-S) */
    int64_t c_dim;     /* conditioning width (0: unconditional) */
    int64_t cmap_dim;
    int64_t kernel_size;
    int64_t virtual_bs; /* BatchNormLocal group size */
    double bn_eps, leaky_slope, sn_eps;
    int64_t sn_power_iterations;
    bool cmapper_equalized_lr;
} DiscHeadsConfig;

extern const ConfigSchema disc_heads_config_schema;

Status disc_heads_config_load(DiscHeadsConfig *cfg, const char *path, const char *const *overrides,
                              int32_t n_overrides);
Status disc_heads_config_check(const DiscHeadsConfig *cfg);

typedef struct SnConv1d {
    Var *weight_orig; /* (Cout, Cin, K), torch order */
    Var *bias;        /* (Cout) */
    Var *u, *v;       /* state: (Cout), (Cin K) unit vectors */
    PadMode pad;
} SnConv1d;

typedef struct DiscHead {
    SnConv1d conv0, conv1, cls; /* main.0.0, main.1.fn.0, cls */
    Norm bn0, bn1;              /* main.0.1, main.1.fn.1: BatchNormLocal affine */
    Linear cmapper;             /* (cmap_dim, c_dim); weight NULL when unconditional */
} DiscHead;

typedef struct DiscHeads {
    DiscHeadsConfig cfg;
    DiscHead heads[DISC_MAX_HEADS];
} DiscHeads;

/* Declares the heads' parameters in `params` and their spectral-norm vectors in `state` (a
 * separate store; either may be on the meta device). */
Status disc_heads_init(DiscHeads *d, const DiscHeadsConfig *cfg, ParamStore *params, ParamStore *state);
/* Fresh weights after both stores are allocated: torch's default conv / linear initialisation
 * bounds (param_store_init_random), BatchNormLocal scale 1 and shift 0, N(0, 1) for an
 * equalized-lr cmapper, and random unit vectors u, v; keyed by seed (RNG_PURPOSE_INIT). */
Status disc_heads_init_weights(DiscHeads *d, ParamStore *params, ParamStore *state, uint64_t seed);

/* tokens (B, 1 + N, C), CLS first -> (B, N, C): every patch token plus the CLS token
 * (StyleGAN-T's AddReadout). */
Var *disc_tokens_readout(Ctx *c, Var *tokens);

/* Head k: x (B, N, C) features, cond (B, c_dim) (NULL when unconditional) -> logits (B, N).
 * update_sn runs the power iteration (training mode), updating u and v in place: once per
 * forward, as torch does, so call it once per head per discriminator step. B must be a
 * multiple of virtual_bs (or smaller than it). */
Var *disc_head_forward(Ctx *c, const DiscHeads *d, int k, Var *x, Var *cond, bool update_sn);

/* Loads a torch state dict of the heads (a ProjectedDiscriminator's "heads.*" or this module's
 * own save) into both stores: parameters from `params`' names, u / v into `state`; prefix is
 * prepended to every name (NULL or ""). */
Status disc_heads_load(const DiscHeads *d, ParamStore *params, ParamStore *state, const char *path,
                       const char *prefix, const WeightsLoadOptions *opt);

#endif
