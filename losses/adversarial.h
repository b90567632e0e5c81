/* losses/adversarial: the hinge losses of ADD's generator and discriminator over K
 * discriminator heads, the exact and approximated R1 penalties, and the two totals.
 *
 * Head k gives logits_k (B, N_k), one per token. H_k[.] below is sum_k (adv.head_reduce = sum,
 * ADD.md) or (1/K) sum_k (mean: StyleGAN-T's ProjectedDiscriminator concatenates the heads'
 * logits and takes one mean, which is this when every N_k is equal); every mean is over all
 * B N_k logits of a head.
 *   generator       L_adv^G = -H_k[ mean D_k(fake) ]
 *   discriminator   L_hinge = H_k[ mean relu(1 - D_k(real)) + mean relu(1 + D_k(fake)) ]
 *   exact R1        R1 = H_k[ R_b ||g_k,b||^2 ],  g_k = d (sum_{b,n} D_k(x_k)_{b,n}) / d x_k
 *                   x_k (B, N, C) the head's input features of the real images (the gradient
 *                   stops there: nothing below the heads is differentiated); R_b the mean over
 *                   the batch (adv.r1_batch = mean) or the sum. g_k comes from
 *                   autograd_grad(create_graph), so R1 is differentiable for the head's
 *                   parameters. The heads' BatchNormLocal couples the samples of a group, so
 *                   g_k,b is the gradient of the whole batch's summed logits with respect to
 *                   sample b's features, as torch.autograd.grad(logits.sum(), x) gives.
 *   approximated R1 R1a = H_k[ mean (D_k(x_k) - D_k(x_k + sigma n_k))^2 ]  (Seaweed-APT; first
 *                   order; n_k from adv_features_perturb)
 *   L_D = L_hinge + r1_weight R1, r1_weight = gamma / 2 (adv.r1_half; StyleGAN2-ADA's loss.py:
 *   r1_penalty = grad^2 summed per sample, loss_Dr1 = r1_penalty * gamma / 2, averaged over the
 *   batch) or gamma; lambda_a for the approximation; 0 for none.
 *   L_G = L_adv^G + lambda L_distill.
 * Normalisation sources: StyleGAN-T's training/loss.py has no R1 at all (hinge only, whose means
 * it further divides by the batch size: not done here); ADD gives gamma = 1e-5 without a
 * normalisation, so the StyleGAN2 convention is the default and the rest is configurable. */
#ifndef ADDC_LOSSES_ADVERSARIAL_H
#define ADDC_LOSSES_ADVERSARIAL_H

#include "core/ops.h"
#include "losses/add_config.h"
#include "losses/draw.h"

Var *adv_generator_loss(Ctx *c, Var *const *fake_logits, int n_heads, int32_t head_reduce);
Var *adv_disc_hinge_loss(Ctx *c, Var *const *real_logits, Var *const *fake_logits, int n_heads,
                         int32_t head_reduce);

/* Exact R1 (unweighted) from each head's real logits and the features x_k they were computed
 * from on c->tape (x_k must require grad; c->tape must be set). */
Var *adv_r1_exact(Ctx *c, Var *const *real_logits, Var *const *real_features, int n_heads, const AdvConfig *cfg);

/* x + sigma n, n ~ N(0, 1) keyed by (seed, RNG_PURPOSE_NOISE, sample, step) at head k's
 * element range (draw.h). x (B, ...). */
Var *adv_features_perturb(Ctx *c, Var *x, double sigma, const DrawKey *key, int head);
/* Approximated R1 (unweighted) from the real logits and the logits of the perturbed features. */
Var *adv_r1_approx(Ctx *c, Var *const *real_logits, Var *const *perturbed_logits, int n_heads, int32_t head_reduce);

/* The weight of R1 in L_D for the configured mode. */
double adv_r1_weight(const AdvConfig *cfg);
/* L_D = hinge + adv_r1_weight(cfg) r1; with adv.r1 = none the hinge alone (r1 unused). */
Var *adv_disc_loss(Ctx *c, const AdvConfig *cfg, Var *hinge, Var *r1);
/* L_G = adv + lambda distill (the ablations use one term alone). */
Var *adv_generator_total(Ctx *c, const DistillConfig *cfg, Var *adv, Var *distill);

#endif
