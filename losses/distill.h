/* losses/distill: ADD's distillation term (ADD.md step 5) and the teacher-side helpers.
 *
 *   L_distill = (1/B) sum_b c(t_b) R_e (x_student_b,e - sg(x_teacher_b,e))^2
 * with R_e the mean over the sample's elements (distill.reduce = mean, the default; sum as an
 * option) and the batch averaged. The two tensors are whatever the distance is taken on:
 * VAE decodes in pixel space (ADD), or latents; decoding happens outside. x_teacher is the
 * teacher's single-step x0 prediction on the re-noised student sample; its value is used and
 * no gradient reaches it (stop-gradient), whatever tape it came from.
 *
 * c(t), with alpha_t, sigma_t of the schedule:
 *   exponential  c(t) = alpha_t  (ADD's ablation default)
 *   sds          c(t) = alpha_t / (2 sigma_t) w(t): then, per element and with R_e = sum,
 *                d/dx_student = 2 c (x_s - x_t) = w(t) (eps_teacher - eps'), exactly the SDS gradient
 *                (DreamFusion; ADD appendix), since x_s - x_t = (sigma / alpha)(eps_teacher - eps').
 *                w(t) = sigma_t^2 = 1 - alphabar_t (DreamFusion's choice, threestudio's "sds"), or 1.
 *   nfsd         the same c(t), with the target from distill_nfsd_target (below).
 *
 * NFSD (Katzir et al., "Noise-Free Score Distillation", arXiv 2310.17590): the SDS direction
 * eps_cfg - eps' is replaced by delta_D + s delta_C with delta_C = eps_c - eps_u and
 * delta_D = eps_u for t < threshold (200), eps_u - eps_neg otherwise (eps_neg: the teacher on a
 * negative prompt; without one delta_D = 0 there). ADD names NFSD as the weighting of its
 * released models without giving its form; here it is realised as the x0 target
 *   x_teacher = sg(x_student) - (sigma_t / alpha_t) (delta_D + s delta_C)
 * so that with c(t) = alpha_t / (2 sigma_t) w(t) and R_e = sum the gradient with respect to the
 * student sample is w(t) (delta_D + s delta_C), NFSD's. This is our reading, not a published
 * ADD formula; threshold and w(t) are configurable. In latent space only: the epsilons live
 * there (with distill.space = pixel the training step must use the latent distance for NFSD). */
#ifndef ADDC_LOSSES_DISTILL_H
#define ADDC_LOSSES_DISTILL_H

#include "losses/diffusion.h"

/* c(t) of the configured weighting. */
double distill_weight(const NoiseSchedule *s, const DistillConfig *cfg, int64_t t);

/* The distillation loss above: x_student, x_teacher (B, ...); t (B) the teacher timesteps. */
Var *distill_loss(Ctx *c, const NoiseSchedule *s, const DistillConfig *cfg, Var *x_student, Var *x_teacher,
                  const int64_t *t);

/* Classifier-free guidance: eps_u + w (eps_c - eps_u). With w == 1 it returns eps_c and
 * eps_uncond may be NULL (the unconditional pass can be skipped). */
Var *distill_cfg_combine(Ctx *c, Var *eps_uncond, Var *eps_cond, double w);

/* The NFSD target above (a constant: no gradient flows through it). x_student (B, ...) the
 * student's x0 (latents); eps_* the teacher's noise predictions on z_t (convert v outputs with
 * diffusion_eps_from_pred); eps_neg may be NULL. s = cfg->cfg_scale, threshold
 * cfg->nfsd_t_threshold. */
Var *distill_nfsd_target(Ctx *c, const NoiseSchedule *s, const DistillConfig *cfg, Var *x_student, Var *eps_uncond,
                         Var *eps_cond, Var *eps_neg, const int64_t *t);

#endif
