/* launch/train_config: the YAML schema of one `addc train` run. Several files merge in order,
 * then `a.b=value` overrides (core/config.h); the merged, bound config is written into the run
 * directory as config.yaml, which reads back to the same struct.
 *
 * Roles (each a model YAML from configs/models/, optional weights, and overrides of the model
 * file's own fields):
 *   student        the network trained: the ADD student, in diffusion mode the teacher-to-be, in
 *                  classify mode a classifier (a DINOv2 or convnet model with num_labels)
 *   teacher        ADD only: frozen, no tape; the student starts from its weights (student_init)
 *   codec          image <-> latent: a VAE, the toy's pixel unshuffle or none (nn/latent.h)
 *   text           the UNet's text conditioning (launch/text_cond.h): text.source encoder is the
 *                  CLIP BPE tokenizer and a frozen CLIP text encoder (text.encoder): the context is
 *                  its penultimate (or last) hidden states, the pooled vector its text_embeds (with a
 *                  projection) else pooled; with text.encoder2 as well (SDXL: CLIP-L then bigG) the
 *                  context is both encoders' hidden states concatenated along the features and the
 *                  pooled vector the second's. text.source embeddings reads the same from a file
 *                  `addc embed` precomputed with those encoders (text.embeddings: every caption the
 *                  run meets must have a row, "" too when captions are dropped or guided). The
 *                  pooled vector also conditions the discriminator heads
 *   feature        ADD only: frozen DINOv2, taped on the fake path; its taps feed the heads
 *   image_encoder  ADD, optional: a second DINOv2 whose CLS of the real image conditions the heads
 *   heads          ADD only: the discriminator heads (nn/disc.h)
 * A role's weights "" means fresh weights keyed by its init_seed (what a toy's frozen text
 * encoder uses: the same seed gives the same encoder in every run).
 *
 * Classify mode builds the student alone (a model with num_labels == classes) and reads the label
 * from each sample's json (data.label_field); codec, teacher, feature, image_encoder and heads are
 * not built (their keys are ignored), text.source must be none (refused otherwise: a classifier
 * that silently ignored a configured text encoder would surprise), and sample grids are refused. */
#ifndef ADDC_LAUNCH_TRAIN_CONFIG_H
#define ADDC_LAUNCH_TRAIN_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "losses/add_config.h"

#define TRAIN_PATH_MAX 512
#define TRAIN_MAX_MODEL_OVERRIDES 8
#define TRAIN_OVERRIDE_MAX 128
#define TRAIN_MAX_PROMPTS 16
#define TRAIN_PROMPT_MAX 160

typedef enum TrainMode { TRAIN_MODE_ADD = 0, TRAIN_MODE_DIFFUSION, TRAIN_MODE_CLASSIFY, TRAIN_MODE_COUNT } TrainMode;
typedef enum StudentInit { STUDENT_INIT_TEACHER = 0, STUDENT_INIT_WEIGHTS, STUDENT_INIT_RANDOM } StudentInit;
typedef enum TextSource { TEXT_SOURCE_NONE = 0, TEXT_SOURCE_ENCODER, TEXT_SOURCE_EMBEDDINGS } TextSource;
typedef enum OptimDecay { OPTIM_DECAY_NONE = 0, OPTIM_DECAY_COSINE } OptimDecay;
typedef enum TextLayer { TEXT_LAYER_PENULTIMATE = 0, TEXT_LAYER_LAST } TextLayer;

extern const char *const train_mode_names[TRAIN_MODE_COUNT];

typedef struct TrainModelConfig {
    char config[TRAIN_PATH_MAX];  /* model YAML; "" = role not used */
    char weights[TRAIN_PATH_MAX]; /* safetensors; "" = fresh weights keyed by init_seed */
    int64_t init_seed;
    char overrides[TRAIN_MAX_MODEL_OVERRIDES][TRAIN_OVERRIDE_MAX]; /* "field=value" of the model YAML */
    int32_t n_overrides;
    bool checkpointing; /* per-block activation checkpointing (recomputed in backward; same numbers) */
} TrainModelConfig;

typedef struct TrainCodecConfig {
    int32_t kind; /* LatentCodecKind */
    TrainModelConfig vae;
    double scale; /* unshuffle / none: latent = scale * image */
} TrainCodecConfig;

typedef struct TrainTextConfig {
    int32_t source; /* TextSource */
    TrainModelConfig encoder;
    TrainModelConfig encoder2;           /* optional second encoder (SDXL's bigG); config "": none */
    char tokenizer[TRAIN_PATH_MAX];      /* one BPE vocabulary for both; each pads with its pad_token */
    int32_t clean;      /* TokenizerClean */
    int32_t layer;      /* TextLayer: the UNet's context */
    char embeddings[TRAIN_PATH_MAX];     /* source embeddings: the file addc embed wrote */
    double drop_prob;   /* diffusion mode: caption replaced by "" (for classifier-free guidance) */
} TrainTextConfig;

typedef struct TrainDataConfig {
    char shards[TRAIN_PATH_MAX]; /* WebDataset spec (data/wds.h) */
    int64_t size;                /* images resized and cropped to size x size */
    int64_t channels;            /* 1 (gray: the first channel) or 3 */
    int64_t shuffle, threads;
    bool flip;
    bool fixed_batch;            /* train on the first batch every step (overfitting checks) */
    char label_field[64];        /* json number holding the class: classify mode and eval's real images */
    int64_t streams;             /* data streams the global batch is drawn from (0: the world size of a
                                    fresh run); fixed for the run, so any world size dividing it resumes */
} TrainDataConfig;

/* Ranks (`mpirun -np N addc train ...`): FSDP of every network (distributed/fsdp.h). */
typedef struct TrainDistConfig {
    bool prefetch;        /* gather the next unit while the current one computes */
    int32_t reduce_dtype; /* gradient reduce-scatter: 0 f32, 1 bf16 */
    int64_t max_resident; /* units kept gathered at once */
    double timeout;       /* seconds a collective may wait before the job is ended */
} TrainDistConfig;

/* Training checkpoints (launch/train_ckpt.h): RUN/checkpoints/step-N.h5. */
typedef struct TrainCheckpointConfig {
    int64_t every; /* steps (default 500); 0 = only on signals and at the end */
    int64_t keep;  /* newest committed kept (0: all) */
    bool final;    /* the end-of-run checkpoint and weights (false: step benchmarks of huge models only) */
} TrainCheckpointConfig;

/* Non-finite losses and gradients. */
typedef struct TrainGuardConfig {
    int64_t max_nonfinite;    /* skipped steps in a row that stop the run */
    int64_t inject_nan_at;    /* test hook: steps inject_nan_at .. + inject_nan_count - 1 (1-based) get a NaN loss */
    int64_t inject_nan_count;
} TrainGuardConfig;

typedef struct TrainOptimConfig {
    double lr, beta1, beta2, eps, weight_decay;
    int64_t warmup;   /* linear warmup steps from lr/warmup to lr */
    int32_t decay;    /* OptimDecay after warmup: constant, or cosine down to lr * min_lr_ratio at `steps` */
    double min_lr_ratio;
    double grad_clip; /* global norm; 0 = off */
} TrainOptimConfig;

/* Sample grids written into the run directory during training: one row per prompt, the student's
 * ADD samples beside the teacher's (fixed seeds, so grids of different steps compare). */
typedef struct TrainSampleConfig {
    int64_t every; /* steps; 0 = never */
    char prompts[TRAIN_MAX_PROMPTS][TRAIN_PROMPT_MAX];
    int32_t n_prompts;
    int64_t per_prompt;      /* images per prompt and sampler */
    int64_t seed;
    int64_t student_steps[4]; /* ADD sampler steps, one grid block each */
    int32_t n_student_steps;
    int32_t teacher_sampler;  /* SamplerKind; the teacher block (diffusion mode: the student itself) */
    int64_t teacher_steps;    /* 0: no teacher block */
    double teacher_cfg;
} TrainSampleConfig;

/* What `addc eval` measures: generated images of every class prompt against real labelled images,
 * in the feature space of an evaluation classifier that training never sees. */
typedef struct TrainEvalConfig {
    char shards[TRAIN_PATH_MAX];  /* real labelled images (the test split); labels from data.label_field */
    TrainModelConfig net;         /* the evaluation classifier (configs/models/, weights) */
    char prompts[TRAIN_MAX_PROMPTS][TRAIN_PROMPT_MAX]; /* one caption per class, in label order */
    int32_t n_prompts;
    int64_t per_class;            /* generated images per class */
    int64_t real_max;             /* real images read (0: all) */
    int64_t batch;                /* images per network call */
    int64_t seed;                 /* noise seed of the generated images */
} TrainEvalConfig;

typedef struct TrainConfig {
    int32_t mode; /* TrainMode */
    int32_t device; /* Device: DEVICE_CPU or DEVICE_CUDA (the networks, the step and the optimizer on the
                       GPU; the frozen text encoders stay on the CPU, their embeddings are copied up) */
    int32_t compute; /* DType the layers compute in: f32, or bf16 (CUDA only; fp32 masters) */
    int64_t seed, steps, batch;
    int64_t log_every, save_every; /* steps; 0 = never (weights are saved at the end anyway) */
    TrainDataConfig data;
    TrainModelConfig student;
    int32_t student_init; /* StudentInit (ADD); diffusion mode: weights if given, else random */
    TrainModelConfig teacher, feature, image_encoder, heads;
    TrainCodecConfig codec;
    TrainTextConfig text;
    TrainOptimConfig opt_g, opt_d;
    int64_t classes;  /* classify mode: the student's classes (labels 0 .. classes-1) */
    TrainSampleConfig sample;
    TrainEvalConfig eval;
    double ema_decay; /* EMA of the student; 0 = off */
    double adv_weight; /* L_G = adv_weight L_adv^G + lambda L_distill: 0 for the distillation-only ablation */
    AddLossConfig loss;
    TrainDistConfig dist;
    TrainCheckpointConfig checkpoint;
    TrainGuardConfig guard;
} TrainConfig;

extern const ConfigSchema train_config_schema;

/* Files merged in order, then overrides, then bound and checked (train_config_check). */
Status train_config_load(TrainConfig *cfg, const char *const *files, int32_t n_files, const char *const *overrides,
                         int32_t n_overrides);
/* What the schema cannot say: roles a mode needs, positive sizes, ... (each names the key). */
Status train_config_check(const TrainConfig *cfg);

#endif
