/* losses/diffusion: the discrete noise schedule of SD / SDXL, the conversions between the
 * epsilon, x0 and v parameterisations, forward noising, and the plain diffusion training loss
 * (for making and fine-tuning teachers).
 *
 * Schedule (diffusers DDPMScheduler / EulerDiscreteScheduler, computed here in double):
 *   scaled_linear  beta_i = (sqrt(b0) + (sqrt(b1) - sqrt(b0)) i / (T-1))^2    (SD, SDXL)
 *   linear         beta_i = b0 + (b1 - b0) i / (T-1)
 *   alphabar_t = prod_{i<=t} (1 - beta_i);  alpha_t = sqrt(alphabar_t), sigma_t = sqrt(1 - alphabar_t)
 *   (SDXL: alphabar_999 = 0.0046600985, alphabar_499 = 0.27766965; diffusers' float32 table
 *   agrees to 1e-6 relative.)
 *   zero_terminal_snr: diffusers' rescale_zero_terminal_snr (Lin et al. 2023, Algorithm 1):
 *   s = sqrt(alphabar); s <- (s - s_{T-1}) s_0 / (s_0 - s_{T-1}); alphabar = s^2, so
 *   alphabar_{T-1} = 0; it is then set to cfg.terminal_alpha_bar (default 2^-24, what
 *   EulerDiscreteScheduler does) so that 1/alpha stays finite for epsilon models.
 *
 * Conversions, per sample b with t = t[b] (tensors are (B, ...); any layout, the
 * coefficients are per sample). All are Var ops, so gradients flow to every input:
 *   z   = alpha x0 + sigma eps                 (diffusion_noise_add; DDPMScheduler.add_noise)
 *   x0  = (z - sigma eps) / alpha              (epsilon model's pred_original_sample)
 *   eps = (z - alpha x0) / sigma
 *   v   = alpha eps - sigma x0                 (DDPMScheduler.get_velocity)
 *   x0  = alpha z - sigma v                    (v model's pred_original_sample)
 *   eps = sigma z + alpha v
 * A division by alpha = 0 (zero terminal SNR with terminal_alpha_bar 0) fails with a message. */
#ifndef ADDC_LOSSES_DIFFUSION_H
#define ADDC_LOSSES_DIFFUSION_H

#include <stdint.h>

#include "core/ops.h"
#include "losses/add_config.h"

typedef struct NoiseSchedule {
    int64_t T;
    double alpha_bar[SCHEDULE_MAX_T]; /* (T) alphabar_t, t = 0 .. T-1 */
} NoiseSchedule;

Status noise_schedule_init(NoiseSchedule *s, const ScheduleConfig *cfg);
double noise_schedule_alpha(const NoiseSchedule *s, int64_t t); /* sqrt(alphabar_t) */
double noise_schedule_sigma(const NoiseSchedule *s, int64_t t); /* sqrt(1 - alphabar_t) */
double noise_schedule_snr(const NoiseSchedule *s, int64_t t);   /* alphabar_t / (1 - alphabar_t) */

/* x (B, ...) times w[b] for each sample b (w a constant: no gradient to it). */
Var *diffusion_scale_per_sample(Ctx *c, Var *x, const double *w);
/* a[b] x + b[b] y for each sample (x, y the same shape (B, ...)). */
Var *diffusion_combine(Ctx *c, Var *x, const double *a, Var *y, const double *b);

Var *diffusion_noise_add(Ctx *c, const NoiseSchedule *s, Var *x0, Var *eps, const int64_t *t);
Var *diffusion_x0_from_eps(Ctx *c, const NoiseSchedule *s, Var *z, Var *eps, const int64_t *t);
Var *diffusion_eps_from_x0(Ctx *c, const NoiseSchedule *s, Var *z, Var *x0, const int64_t *t);
Var *diffusion_v_from_x0_eps(Ctx *c, const NoiseSchedule *s, Var *x0, Var *eps, const int64_t *t);
Var *diffusion_x0_from_v(Ctx *c, const NoiseSchedule *s, Var *z, Var *v, const int64_t *t);
Var *diffusion_eps_from_v(Ctx *c, const NoiseSchedule *s, Var *z, Var *v, const int64_t *t);
/* x0 and eps from a network output `pred` of parameterisation p (a Prediction). */
Var *diffusion_x0_from_pred(Ctx *c, const NoiseSchedule *s, int32_t p, Var *z, Var *pred, const int64_t *t);
Var *diffusion_eps_from_pred(Ctx *c, const NoiseSchedule *s, int32_t p, Var *z, Var *pred, const int64_t *t);

/* (1/B) sum_b w[b] * R_e (pred_b - target_b)^2 -> () with R_e the mean (LOSS_REDUCE_MEAN)
 * or sum over the sample's elements; w NULL means 1. `target` is a constant: its value is
 * used and no gradient reaches it (stop-gradient). */
Var *loss_mse_per_sample(Ctx *c, Var *pred, Var *target, const double *w, int32_t reduce);

/* Min-SNR weight (Hang et al. 2023, as diffusers' train_text_to_image.py): with
 * snr = alphabar / (1 - alphabar), min(snr, gamma) / snr for epsilon (1 at snr = 0, its
 * limit), min(snr, gamma) / (snr + 1) for v; 1 when gamma <= 0. */
double diffusion_min_snr_weight(const NoiseSchedule *s, int32_t prediction, double gamma, int64_t t);

/* The plain diffusion loss: target eps (epsilon) or alpha eps - sigma x0 (v), per-sample
 * mean squared error over elements, min-SNR weighted when gamma > 0, averaged over the batch:
 *   L = (1/B) sum_b w_b mean_e (pred_b - target_b)^2.
 * pred, x0, eps (B, ...); t (B). */
Var *diffusion_loss(Ctx *c, const NoiseSchedule *s, int32_t prediction, double min_snr_gamma, Var *pred, Var *x0,
                    Var *eps, const int64_t *t);

#endif
