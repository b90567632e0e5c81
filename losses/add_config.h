/* losses/add_config: every knob of the ADD objective and of plain diffusion training, as one
 * struct bound from YAML through core/config.h (the training config embeds it as `loss:`).
 * Defaults are ADD.md's; where the paper is silent the default is named in the help text.
 *
 *   schedule:   scaled_linear, T 1000, betas sqrt-linspace(0.00085, 0.012)^2, no zero terminal SNR
 *   prediction: epsilon (SDXL-Turbo and SD-Turbo are epsilon models)
 *   timesteps:  student [999, 749, 499, 249]; teacher uniform over 1..999
 *   distill:    lambda 2.5, c(t) exponential (alpha_t), per-sample mean over elements, pixel space,
 *               teacher CFG scale 1 (none)
 *   adv:        heads summed, exact R1, gamma 1e-5, gamma/2 times the batch mean (StyleGAN2)
 *               approximated R1: lambda 100, sigma 0.01
 *   diffusion:  t uniform over 0..999, min-SNR weighting off */
#ifndef ADDC_LOSSES_ADD_CONFIG_H
#define ADDC_LOSSES_ADD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

#define ADD_MAX_STUDENT_TIMESTEPS 16
#define SCHEDULE_MAX_T 4096

typedef enum ScheduleKind {
    SCHEDULE_SCALED_LINEAR = 0, /* betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (SD, SDXL) */
    SCHEDULE_LINEAR,            /* betas = linspace(beta_start, beta_end, T) (DDPM) */
    SCHEDULE_KIND_COUNT
} ScheduleKind;

typedef enum Prediction {
    PREDICTION_EPSILON = 0, /* the network predicts the noise */
    PREDICTION_V,           /* v = alpha eps - sigma x0 (Salimans & Ho 2022) */
    PREDICTION_COUNT
} Prediction;

typedef enum DistillWeighting {
    DISTILL_WEIGHTING_EXPONENTIAL = 0, /* c(t) = alpha_t */
    DISTILL_WEIGHTING_SDS,             /* c(t) = alpha_t / (2 sigma_t) * w(t) */
    DISTILL_WEIGHTING_NFSD,            /* SDS's c(t) with the noise-free target (distill.h) */
    DISTILL_WEIGHTING_COUNT
} DistillWeighting;

typedef enum SdsWeight {
    SDS_WEIGHT_SIGMA_SQ = 0, /* w(t) = sigma_t^2 = 1 - alphabar_t (DreamFusion, threestudio "sds") */
    SDS_WEIGHT_ONE,          /* w(t) = 1 (threestudio "uniform") */
    SDS_WEIGHT_COUNT
} SdsWeight;

typedef enum LossReduce {
    LOSS_REDUCE_MEAN = 0,
    LOSS_REDUCE_SUM,
    LOSS_REDUCE_COUNT
} LossReduce;

typedef enum DistillSpace {
    DISTILL_SPACE_PIXEL = 0, /* distance between VAE decodes (ADD) */
    DISTILL_SPACE_LATENT,
    DISTILL_SPACE_COUNT
} DistillSpace;

typedef enum R1Mode {
    R1_EXACT = 0, /* gradient penalty on each head's input features (create-graph backward) */
    R1_APPROX,    /* lambda_a ||D(x) - D(x + sigma n)||^2 (Seaweed-APT, arXiv 2501.08316) */
    R1_NONE,
    R1_MODE_COUNT
} R1Mode;

typedef struct ScheduleConfig {
    int32_t kind;                /* ScheduleKind */
    int64_t num_train_timesteps; /* T: timesteps 0 .. T-1 */
    double beta_start, beta_end;
    bool zero_terminal_snr;      /* diffusers' rescale_zero_terminal_snr on the betas */
    double terminal_alpha_bar;   /* alphabar_{T-1} after that rescale (exactly 0 there); >0 keeps
                                    1/alpha finite, as EulerDiscreteScheduler's 2^-24 does */
} ScheduleConfig;

typedef struct TimestepConfig {
    int64_t student[ADD_MAX_STUDENT_TIMESTEPS]; /* T_student, drawn uniformly */
    int32_t n_student;
    int64_t teacher_min, teacher_max; /* teacher t uniform over [min, max] */
} TimestepConfig;

typedef struct DistillConfig {
    double lambda;            /* L = L_adv^G + lambda L_distill */
    int32_t weighting;        /* DistillWeighting */
    int32_t sds_weight;       /* SdsWeight: w(t) of SDS and NFSD */
    int32_t reduce;           /* LossReduce over one sample's elements (the batch is averaged) */
    int32_t space;            /* DistillSpace (read by the training step) */
    double cfg_scale;         /* teacher guidance w: eps_u + w (eps_c - eps_u); 1 = conditional only */
    int64_t nfsd_t_threshold; /* NFSD: below it delta_D = eps_uncond (Katzir et al.: 200) */
} DistillConfig;

typedef struct AdvConfig {
    int32_t head_reduce;      /* LossReduce over heads: sum (ADD.md) or mean (StyleGAN-T's mean
                                 over the concatenated logits of equally sized heads) */
    int32_t r1;               /* R1Mode */
    double r1_gamma;
    bool r1_half;             /* gamma / 2 (StyleGAN2's loss.py) instead of gamma */
    int32_t r1_batch;         /* LossReduce of the per-sample squared norms over the batch */
    double r1_approx_lambda;
    double r1_approx_sigma;
} AdvConfig;

typedef struct DiffusionLossConfig {
    int64_t t_min, t_max;     /* training t uniform over [t_min, t_max] */
    double min_snr_gamma;     /* min-SNR weighting (Hang et al. 2023) when > 0; 5 in the paper */
} DiffusionLossConfig;

typedef struct AddLossConfig {
    ScheduleConfig schedule;
    int32_t prediction;       /* Prediction of student and teacher */
    TimestepConfig timesteps;
    DistillConfig distill;
    AdvConfig adv;
    DiffusionLossConfig diffusion;
} AddLossConfig;

extern const ConfigSchema add_loss_config_schema;

/* Every field at its default. */
Status add_loss_config_default(AddLossConfig *cfg);
/* Ranges that the schema cannot express (timesteps inside [0, T), min <= max, positive
 * scales, ...); each failure names the dotted key. */
Status add_loss_config_check(const AddLossConfig *cfg);
/* config_load + add_loss_config_check. */
Status add_loss_config_load(AddLossConfig *cfg, const char *const *files, int32_t n_files,
                            const char *const *overrides, int32_t n_overrides);

#endif
