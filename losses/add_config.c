/* losses/add_config: the schema of AddLossConfig (see add_config.h) and its range checks. */
#include "losses/add_config.h"

#include <math.h>

static const char *const schedule_kind_names[] = {"scaled_linear", "linear"};
static const char *const prediction_names[] = {"epsilon", "v_prediction"};
static const char *const weighting_names[] = {"exponential", "sds", "nfsd"};
static const char *const sds_weight_names[] = {"sigma_sq", "one"};
static const char *const reduce_names[] = {"mean", "sum"};
static const char *const space_names[] = {"pixel", "latent"};
static const char *const r1_names[] = {"exact", "approx", "none"};
_Static_assert(sizeof schedule_kind_names / sizeof *schedule_kind_names == SCHEDULE_KIND_COUNT, "schedule names");
_Static_assert(sizeof prediction_names / sizeof *prediction_names == PREDICTION_COUNT, "prediction names");
_Static_assert(sizeof weighting_names / sizeof *weighting_names == DISTILL_WEIGHTING_COUNT, "weighting names");
_Static_assert(sizeof sds_weight_names / sizeof *sds_weight_names == SDS_WEIGHT_COUNT, "sds weight names");
_Static_assert(sizeof reduce_names / sizeof *reduce_names == LOSS_REDUCE_COUNT, "reduce names");
_Static_assert(sizeof space_names / sizeof *space_names == DISTILL_SPACE_COUNT, "space names");
_Static_assert(sizeof r1_names / sizeof *r1_names == R1_MODE_COUNT, "r1 names");

static const ConfigField schedule_fields[] = {
    CONFIG_ENUM(ScheduleConfig, kind, "scaled_linear", schedule_kind_names,
                "betas: scaled_linear = linspace(sqrt(start), sqrt(end), T)^2 (SD/SDXL); linear"),
    CONFIG_INT(ScheduleConfig, num_train_timesteps, "1000", 2, SCHEDULE_MAX_T, "T"),
    CONFIG_FLOAT(ScheduleConfig, beta_start, "0.00085", "first beta"),
    CONFIG_FLOAT(ScheduleConfig, beta_end, "0.012", "last beta"),
    CONFIG_BOOL(ScheduleConfig, zero_terminal_snr, "false", "rescale betas to zero terminal SNR (Lin et al. 2023)"),
    CONFIG_FLOAT(ScheduleConfig, terminal_alpha_bar, "5.9604644775390625e-08",
                 "alphabar at t = T-1 under zero_terminal_snr (2^-24 as diffusers' Euler; 0: exact)"),
};
static const ConfigSchema schedule_schema = CONFIG_SCHEMA("schedule", schedule_fields);

static const ConfigField timestep_fields[] = {
    CONFIG_LIST(TimestepConfig, student, n_student, CONFIG_TYPE_INT, "[999, 749, 499, 249]",
                "student timesteps, drawn uniformly (trailing spacing; not published)"),
    CONFIG_INT(TimestepConfig, teacher_min, "1", 0, SCHEDULE_MAX_T - 1, "teacher t uniform from here"),
    CONFIG_INT(TimestepConfig, teacher_max, "999", 0, SCHEDULE_MAX_T - 1, "... to here (inclusive)"),
};
static const ConfigSchema timestep_schema = CONFIG_SCHEMA("timesteps", timestep_fields);

static const ConfigField distill_fields[] = {
    CONFIG_FLOAT(DistillConfig, lambda, "2.5", "L = L_adv^G + lambda L_distill"),
    CONFIG_ENUM(DistillConfig, weighting, "exponential", weighting_names,
                "c(t): exponential alpha_t; sds alpha_t/(2 sigma_t) w(t); nfsd (noise-free target)"),
    CONFIG_ENUM(DistillConfig, sds_weight, "sigma_sq", sds_weight_names, "w(t) of sds and nfsd: sigma_t^2 or 1"),
    CONFIG_ENUM(DistillConfig, reduce, "mean", reduce_names, "over one sample's elements (batch averaged)"),
    CONFIG_ENUM(DistillConfig, space, "pixel", space_names, "distance between VAE decodes or latents"),
    CONFIG_FLOAT(DistillConfig, cfg_scale, "1.0", "teacher guidance scale (not in the paper; 1 = none)"),
    CONFIG_INT(DistillConfig, nfsd_t_threshold, "200", 0, SCHEDULE_MAX_T, "NFSD: delta_D = eps_uncond below it"),
};
static const ConfigSchema distill_schema = CONFIG_SCHEMA("distill", distill_fields);

static const ConfigField adv_fields[] = {
    CONFIG_ENUM(AdvConfig, head_reduce, "sum", reduce_names,
                "over discriminator heads: sum (ADD) or mean (StyleGAN-T's concatenated logits)"),
    CONFIG_ENUM(AdvConfig, r1, "exact", r1_names, "R1 penalty: exact, approx or none"),
    CONFIG_FLOAT(AdvConfig, r1_gamma, "1e-5", "exact R1 weight gamma"),
    CONFIG_BOOL(AdvConfig, r1_half, "true", "weight gamma/2 (StyleGAN2 loss.py) instead of gamma"),
    CONFIG_ENUM(AdvConfig, r1_batch, "mean", reduce_names, "per-sample squared norms over the batch"),
    CONFIG_FLOAT(AdvConfig, r1_approx_lambda, "100", "approximated R1 weight"),
    CONFIG_FLOAT(AdvConfig, r1_approx_sigma, "0.01", "approximated R1 feature noise"),
};
static const ConfigSchema adv_schema = CONFIG_SCHEMA("adv", adv_fields);

static const ConfigField diffusion_fields[] = {
    CONFIG_INT(DiffusionLossConfig, t_min, "0", 0, SCHEDULE_MAX_T - 1, "training t uniform from here"),
    CONFIG_INT(DiffusionLossConfig, t_max, "999", 0, SCHEDULE_MAX_T - 1, "... to here (inclusive)"),
    CONFIG_FLOAT(DiffusionLossConfig, min_snr_gamma, "0", "min-SNR weighting gamma (0: off; 5 is usual)"),
};
static const ConfigSchema diffusion_schema = CONFIG_SCHEMA("diffusion", diffusion_fields);

static const ConfigField add_fields[] = {
    CONFIG_STRUCT(AddLossConfig, schedule, schedule_schema, "noise schedule"),
    CONFIG_ENUM(AddLossConfig, prediction, "epsilon", prediction_names, "what student and teacher predict"),
    CONFIG_STRUCT(AddLossConfig, timesteps, timestep_schema, "student and teacher timesteps"),
    CONFIG_STRUCT(AddLossConfig, distill, distill_schema, "distillation loss"),
    CONFIG_STRUCT(AddLossConfig, adv, adv_schema, "adversarial losses and R1"),
    CONFIG_STRUCT(AddLossConfig, diffusion, diffusion_schema, "plain diffusion training"),
};
const ConfigSchema add_loss_config_schema = CONFIG_SCHEMA("loss", add_fields);

Status add_loss_config_default(AddLossConfig *cfg) { return config_load(&add_loss_config_schema, cfg, NULL, 0, NULL, 0); }

static Status bad(const char *key, const char *what) {
    return addc_error_set(ADDC_ERR_INVALID, "loss config: %s %s", key, what);
}

Status add_loss_config_check(const AddLossConfig *c) {
    const ScheduleConfig *s = &c->schedule;
    int64_t T = s->num_train_timesteps;
    if (!(s->beta_start > 0 && s->beta_start < s->beta_end && s->beta_end < 1))
        return bad("schedule.beta_start/beta_end", "must satisfy 0 < beta_start < beta_end < 1");
    if (!(s->terminal_alpha_bar >= 0 && s->terminal_alpha_bar < 1e-3))
        return bad("schedule.terminal_alpha_bar", "must be in [0, 1e-3)");
    if (c->timesteps.n_student < 1) return bad("timesteps.student", "needs at least one timestep");
    for (int32_t i = 0; i < c->timesteps.n_student; i++)
        if (c->timesteps.student[i] < 0 || c->timesteps.student[i] >= T)
            return addc_error_set(ADDC_ERR_INVALID, "loss config: timesteps.student[%d] = %lld is outside [0, %lld)",
                                  (int)i, (long long)c->timesteps.student[i], (long long)T);
    if (c->timesteps.teacher_min > c->timesteps.teacher_max || c->timesteps.teacher_max >= T)
        return bad("timesteps.teacher_min/teacher_max", "must satisfy teacher_min <= teacher_max < T");
    if (c->diffusion.t_min > c->diffusion.t_max || c->diffusion.t_max >= T)
        return bad("diffusion.t_min/t_max", "must satisfy t_min <= t_max < T");
    if (!(c->distill.lambda >= 0) || !isfinite(c->distill.lambda)) return bad("distill.lambda", "must be >= 0");
    if (!isfinite(c->distill.cfg_scale)) return bad("distill.cfg_scale", "must be finite");
    if (!(c->adv.r1_gamma >= 0) || !isfinite(c->adv.r1_gamma)) return bad("adv.r1_gamma", "must be >= 0");
    if (!(c->adv.r1_approx_lambda >= 0) || !isfinite(c->adv.r1_approx_lambda))
        return bad("adv.r1_approx_lambda", "must be >= 0");
    if (!(c->adv.r1_approx_sigma > 0) || !isfinite(c->adv.r1_approx_sigma))
        return bad("adv.r1_approx_sigma", "must be > 0");
    if (!(c->diffusion.min_snr_gamma >= 0) || !isfinite(c->diffusion.min_snr_gamma))
        return bad("diffusion.min_snr_gamma", "must be >= 0 (0: off)");
    return ADDC_OK;
}

Status add_loss_config_load(AddLossConfig *cfg, const char *const *files, int32_t n_files,
                            const char *const *overrides, int32_t n_overrides) {
    TRY(config_load(&add_loss_config_schema, cfg, files, n_files, overrides, n_overrides));
    return add_loss_config_check(cfg);
}
