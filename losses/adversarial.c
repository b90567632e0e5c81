/* losses/adversarial: hinge losses over heads, exact R1 through the create-graph backward,
 * approximated R1, and the generator / discriminator totals (formulas in adversarial.h). */
#include "losses/adversarial.h"

static bool heads_ok(int n_heads, int32_t head_reduce, const char *what) {
    if (n_heads < 1) {
        addc_error_set(ADDC_ERR_INVALID, "%s: needs at least one head", what);
        return false;
    }
    if (head_reduce != LOSS_REDUCE_SUM && head_reduce != LOSS_REDUCE_MEAN) {
        addc_error_set(ADDC_ERR_INVALID, "%s: unknown head reduction %d", what, (int)head_reduce);
        return false;
    }
    return true;
}

/* sum or mean of the per-head terms, times `sign` */
static Var *reduce_heads(Ctx *c, Var *total, int n_heads, int32_t head_reduce, double sign) {
    double k = head_reduce == LOSS_REDUCE_MEAN ? 1.0 / (double)n_heads : 1.0;
    return k * sign == 1.0 ? total : op_scale(c, total, k * sign, 0.0);
}

static Var *accumulate(Ctx *c, Var *total, Var *term) { return total ? op_add(c, total, term) : term; }

Var *adv_generator_loss(Ctx *c, Var *const *fake_logits, int n_heads, int32_t head_reduce) {
    if (!heads_ok(n_heads, head_reduce, "adv_generator_loss")) return NULL;
    Var *total = NULL;
    for (int k = 0; k < n_heads; k++) {
        if (!fake_logits[k]) return NULL;
        total = accumulate(c, total, op_mean(c, fake_logits[k]));
    }
    return reduce_heads(c, total, n_heads, head_reduce, -1.0);
}

Var *adv_disc_hinge_loss(Ctx *c, Var *const *real_logits, Var *const *fake_logits, int n_heads,
                         int32_t head_reduce) {
    if (!heads_ok(n_heads, head_reduce, "adv_disc_hinge_loss")) return NULL;
    Var *total = NULL;
    for (int k = 0; k < n_heads; k++) {
        if (!real_logits[k] || !fake_logits[k]) return NULL;
        Var *real = op_mean(c, op_hinge(c, real_logits[k], -1.0)); /* relu(1 - D) */
        Var *fake = op_mean(c, op_hinge(c, fake_logits[k], 1.0));  /* relu(1 + D) */
        total = accumulate(c, total, op_add(c, real, fake));
    }
    return reduce_heads(c, total, n_heads, head_reduce, 1.0);
}

Var *adv_r1_exact(Ctx *c, Var *const *real_logits, Var *const *real_features, int n_heads, const AdvConfig *cfg) {
    if (!heads_ok(n_heads, cfg->head_reduce, "adv_r1_exact")) return NULL;
    if (!c->tape) {
        addc_error_set(ADDC_ERR_INVALID, "adv_r1_exact: needs a tape (the penalty is differentiated)");
        return NULL;
    }
    Var *total = NULL;
    for (int k = 0; k < n_heads; k++) {
        Var *y = real_logits[k], *x = real_features[k];
        if (!y || !x) return NULL;
        if (!x->requires_grad || !y->requires_grad) {
            addc_error_set(ADDC_ERR_INVALID,
                           "adv_r1_exact: head %d's features must require grad and its logits be computed from them "
                           "on the tape",
                           k);
            return NULL;
        }
        Var *g = NULL;
        Status st = autograd_grad(c, op_sum(c, y), NULL, &x, 1, &g, true);
        if (st != ADDC_OK) {
            addc_error_context(st, "adv_r1_exact: head %d", k);
            return NULL;
        }
        if (!g) {
            addc_error_set(ADDC_ERR_INVALID, "adv_r1_exact: head %d's logits do not depend on its features", k);
            return NULL;
        }
        Var *sq = op_sum(c, op_mul(c, g, g));
        if (cfg->r1_batch == LOSS_REDUCE_MEAN) sq = op_scale(c, sq, 1.0 / (double)x->v.shape[0], 0.0);
        total = accumulate(c, total, sq);
    }
    return reduce_heads(c, total, n_heads, cfg->head_reduce, 1.0);
}

Var *adv_features_perturb(Ctx *c, Var *x, double sigma, const DrawKey *key, int head) {
    if (!x) return NULL;
    if (x->v.ndim < 1 || head < 0 || head >= (int)((RNG_ELEMENT_LIMIT - DRAW_R1_NOISE_OFFSET) / DRAW_R1_NOISE_STRIDE)) {
        addc_error_set(ADDC_ERR_INVALID, "adv_features_perturb: needs features (B, ...) and a head index in range");
        return NULL;
    }
    int64_t per = x->v.shape[0] ? tensor_numel(&x->v) / x->v.shape[0] : 0;
    if (per > DRAW_R1_NOISE_STRIDE) {
        addc_error_set(ADDC_ERR_INVALID, "adv_features_perturb: %lld features per sample exceed the stream's 2^29",
                       (long long)per);
        return NULL;
    }
    Var *n = draw_noise(c, key, RNG_PURPOSE_NOISE, DRAW_R1_NOISE_OFFSET + (int64_t)head * DRAW_R1_NOISE_STRIDE,
                        x->v.ndim, x->v.shape);
    return op_add(c, x, op_scale(c, n, sigma, 0.0));
}

Var *adv_r1_approx(Ctx *c, Var *const *real_logits, Var *const *perturbed_logits, int n_heads, int32_t head_reduce) {
    if (!heads_ok(n_heads, head_reduce, "adv_r1_approx")) return NULL;
    Var *total = NULL;
    for (int k = 0; k < n_heads; k++) {
        if (!real_logits[k] || !perturbed_logits[k]) return NULL;
        total = accumulate(c, total, op_mean_square(c, op_sub(c, real_logits[k], perturbed_logits[k])));
    }
    return reduce_heads(c, total, n_heads, head_reduce, 1.0);
}

double adv_r1_weight(const AdvConfig *cfg) {
    if (cfg->r1 == R1_EXACT) return cfg->r1_half ? 0.5 * cfg->r1_gamma : cfg->r1_gamma;
    if (cfg->r1 == R1_APPROX) return cfg->r1_approx_lambda;
    return 0.0;
}

Var *adv_disc_loss(Ctx *c, const AdvConfig *cfg, Var *hinge, Var *r1) {
    if (!hinge) return NULL;
    if (cfg->r1 == R1_NONE) return hinge;
    if (!r1) return NULL;
    return op_add(c, hinge, op_scale(c, r1, adv_r1_weight(cfg), 0.0));
}

Var *adv_generator_total(Ctx *c, const DistillConfig *cfg, Var *adv, Var *distill) {
    if (!adv || !distill) return NULL;
    return op_add(c, adv, op_scale(c, distill, cfg->lambda, 0.0));
}
