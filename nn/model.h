/* nn/model: any network addc knows, built from its model YAML, and what `addc inspect`
 * measures about it on the meta device (shapes, no data, no weight memory).
 *
 * Which network a YAML describes is read from its top-level keys, as diffusers and transformers
 * tell their config.json files apart:
 *   _class_name: UNet2DConditionModel   nn/unet.h
 *   _class_name: AutoencoderKL          nn/vae.h
 *   model_type: dinov2                  nn/vit.h
 *   model_type: clip_text_model         nn/clip.h
 *   model_type: convnet                 nn/convnet.h (addc's evaluation classifier)
 *   n_heads (and none of the above)     nn/disc.h (the discriminator heads have no ecosystem config)
 * Then the network's own loader binds the file (unknown keys, types, did-you-mean) and its
 * *_init declares the parameters.
 *
 * model_probe runs the network's forward on meta inputs, once without and once with per-block
 * checkpointing, with a tape and every parameter trainable, and reads the Ctx counters (FLOPs,
 * op-output bytes; core/autograd.h). With checkpointing, the bytes a region (block) makes are
 * freed when it returns, except its output: each checkpoint node on the tape is run again on
 * meta to count what it makes inside, which is also what its recompute holds in backward.
 *
 * model_memory_plan is the FSDP arithmetic of ARCHITECTURE §5 over the store's units. */
#ifndef ADDC_NN_MODEL_H
#define ADDC_NN_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/clip.h"
#include "nn/convnet.h"
#include "nn/disc.h"
#include "nn/unet.h"
#include "nn/vae.h"
#include "nn/vit.h"

typedef enum ModelKind {
    MODEL_UNET = 0,
    MODEL_VAE,
    MODEL_DINOV2,
    MODEL_CLIP_TEXT,
    MODEL_DISC_HEADS,
    MODEL_CONVNET,
    MODEL_KIND_COUNT
} ModelKind;

/* "UNet2DConditionModel", "AutoencoderKL", "Dinov2Model", "CLIPTextModel[WithProjection]"
 * (by kind only: "CLIPTextModel"), "DiscHeads", "ConvNet" */
const char *model_kind_name(ModelKind k);

/* Reads the top-level keys of a model YAML (see the top of this file). */
Status model_kind_detect(const char *path, ModelKind *kind);

typedef struct Model {
    ModelKind kind;
    const char *class_name; /* as model_kind_name, CLIP with or without "WithProjection" */
    ParamStore params;      /* the network's parameters */
    ParamStore state;       /* non-parameter buffers (the heads' spectral-norm u, v); empty otherwise */
    bool built;             /* *_init ran (model_free must free the network) */
    union {
        UNet2D unet;
        AutoencoderKL vae;
        Dinov2 vit;
        ClipText clip;
        DiscHeads disc;
        ConvNet convnet;
    } net;
} Model;

/* Loads path (then `a.b=value` overrides), declares every parameter and allocates the stores
 * on dev (DEVICE_META: nothing allocated). Call model_free afterwards, also when it fails. */
Status model_build(Model *m, const char *path, const char *const *overrides, int32_t n_overrides, Device dev,
                   bool trainable);
void model_free(Model *m);
/* Turns per-block checkpointing on or off (the heads have none: no effect there). */
void model_set_checkpointing(Model *m, bool on);

/* The input of a probe; 0 = the default named below. */
typedef struct ModelInput {
    int64_t batch;         /* per-rank micro-batch (default 1) */
    int64_t height, width; /* UNet: latent (default sample_size); VAE: image (default sample_size);
                              ViT: its input (default input_size); ConvNet: its input (default
                              image_size); not used by CLIP and the heads */
    bool pixels;           /* height, width are image pixels: a UNet's latent is 1/8 of them (the
                              SD / SDXL VAE); a VAE's image; with false a VAE's are latent */
    int64_t tokens;        /* UNet context length (77); CLIP sequence (max_position_embeddings);
                              the heads' tokens per head (256: ViT-S/14 at 224 px) */
} ModelInput;

#define MODEL_MAX_PASSES 2

typedef struct ModelPass {
    char name[16];      /* "forward", "encode", "decode" */
    char input[160];    /* the shapes it ran on, as text */
    double flops;       /* 2 x multiply-adds of matmul, linear, conv, attention (core/ops/flops.c) */
    int64_t act_bytes;  /* op outputs of a taped forward without checkpointing: all kept to backward */
    int64_t kept_bytes; /* with checkpointing: outputs outside any region plus each region's output */
    int64_t block_bytes;/* with checkpointing: the most op-output bytes one region makes (its recompute) */
    int32_t n_regions;
} ModelPass;

/* Runs the network's passes on meta inputs: a UNet, ViT (with its classifier), CLIP, ConvNet
 * forward; all heads; a VAE's encode (image -> posterior) and decode (latent -> image). m must be
 * built on meta. */
Status model_probe(Model *m, const ModelInput *in, ModelPass *passes, int32_t *n_passes);

typedef struct MemoryPlan {
    int64_t world;
    int64_t numel;           /* parameters */
    int64_t shard_numel;     /* per rank: sum over units of ceil(unit numel / world) */
    int32_t n_units;
    int32_t largest_unit;    /* index into the store's units */
    int64_t largest_numel;
    int64_t weights_shard;   /* bytes: fp32 master shard */
    int64_t weights_gather;  /* bf16 gathered units: the largest x 2 (computing + prefetched) */
    int64_t grads_shard;     /* fp32 gradient shard */
    int64_t grads_unit;      /* bf16 whole-unit gradients before reduce-scatter: the largest x 2 */
    int64_t adam;            /* two fp32 moments per shard element */
} MemoryPlan;

/* Classifier forward on images (B, H, W, C) in [-1, 1]: a DINOv2 with num_labels (preprocessed with
 * dinov2_preprocess; a 1-channel image is repeated to the network's 3 channels) gives its final-norm
 * CLS as features; a convnet its pooled features. features (B, F), logits (B, num_labels). Taped when
 * c has a tape. features or logits may be NULL when not wanted; a convnet also takes a 1-channel
 * image repeated to its in_channels. Any other kind, or a DINOv2 without num_labels, is refused. */
Status model_classify(Ctx *c, const Model *m, Var *images, Var **features, Var **logits);
/* F and num_labels of a classifier model; error for other kinds or num_labels 0. */
Status model_classifier_dims(const Model *m, int64_t *features, int64_t *labels);

/* The per-rank persistent bytes of training the store's parameters with FSDP on `world` ranks. */
void model_memory_plan(const ParamStore *s, int64_t world, MemoryPlan *p);

/* Parameters of the store whose name starts with prefix ("encoder."). */
int64_t model_numel_prefix(const ParamStore *s, const char *prefix);

#endif
