/* losses/distill: c(t), the distillation loss, teacher guidance and the NFSD target (distill.h). */
#include "losses/distill.h"

#include <math.h>
#include <stdlib.h>

double distill_weight(const NoiseSchedule *s, const DistillConfig *cfg, int64_t t) {
    double al = noise_schedule_alpha(s, t), sg = noise_schedule_sigma(s, t);
    if (cfg->weighting == DISTILL_WEIGHTING_EXPONENTIAL) return al;
    double w = cfg->sds_weight == SDS_WEIGHT_ONE ? 1.0 : sg * sg;
    return al / (2.0 * sg) * w;
}

#define DISTILL_MAX_STACK 256

static bool t_ok(const NoiseSchedule *s, const int64_t *t, int64_t B, const char *what) {
    for (int64_t b = 0; b < B; b++)
        if (t[b] < 0 || t[b] >= s->T) {
            addc_error_set(ADDC_ERR_INVALID, "%s: timestep t[%lld] = %lld is outside [0, %lld)", what, (long long)b,
                           (long long)t[b], (long long)s->T);
            return false;
        }
    return true;
}

/* per-sample scratch: the stack up to DISTILL_MAX_STACK samples, else malloc */
static double *scratch(double *stack, int64_t n, const char *what) {
    if (n <= DISTILL_MAX_STACK) return stack;
    double *p = malloc((size_t)n * sizeof(double));
    if (!p) addc_error_set(ADDC_ERR_NOMEM, "%s: %lld per-sample values", what, (long long)n);
    return p;
}

Var *distill_loss(Ctx *c, const NoiseSchedule *s, const DistillConfig *cfg, Var *x_student, Var *x_teacher,
                  const int64_t *t) {
    if (!x_student || !x_teacher) return NULL;
    if (x_student->v.ndim < 1) {
        addc_error_set(ADDC_ERR_INVALID, "distill_loss: expected tensors (B, ...)");
        return NULL;
    }
    if (cfg->weighting < 0 || cfg->weighting >= DISTILL_WEIGHTING_COUNT) {
        addc_error_set(ADDC_ERR_INVALID, "distill_loss: unknown weighting %d", (int)cfg->weighting);
        return NULL;
    }
    int64_t B = x_student->v.shape[0];
    if (!t_ok(s, t, B, "distill_loss")) return NULL;
    double stack[DISTILL_MAX_STACK] = {0}, *w = scratch(stack, B, "distill_loss");
    if (!w) return NULL;
    for (int64_t b = 0; b < B; b++) w[b] = distill_weight(s, cfg, t[b]);
    Var *out = loss_mse_per_sample(c, x_student, x_teacher, w, cfg->reduce);
    if (w != stack) free(w);
    return out;
}

Var *distill_cfg_combine(Ctx *c, Var *eps_uncond, Var *eps_cond, double w) {
    if (!eps_cond) return NULL;
    if (w == 1.0) return eps_cond;
    if (!eps_uncond) {
        addc_error_set(ADDC_ERR_INVALID, "distill_cfg_combine: guidance scale %g needs the unconditional prediction", w);
        return NULL;
    }
    return op_add(c, eps_uncond, op_scale(c, op_sub(c, eps_cond, eps_uncond), w, 0.0));
}

static Var *sg(Ctx *c, Var *v) { return v ? var_leaf(c, v->v, false) : NULL; }

Var *distill_nfsd_target(Ctx *c, const NoiseSchedule *s, const DistillConfig *cfg, Var *x_student, Var *eps_uncond,
                         Var *eps_cond, Var *eps_neg, const int64_t *t) {
    if (!x_student || !eps_uncond || !eps_cond) return NULL;
    if (x_student->v.ndim < 1) {
        addc_error_set(ADDC_ERR_INVALID, "distill_nfsd_target: expected tensors (B, ...)");
        return NULL;
    }
    int64_t B = x_student->v.shape[0];
    if (!t_ok(s, t, B, "distill_nfsd_target")) return NULL;
    double st_u[DISTILL_MAX_STACK], st_c[DISTILL_MAX_STACK], st_n[DISTILL_MAX_STACK];
    double *ku = scratch(st_u, B, "distill_nfsd_target"), *kc = scratch(st_c, B, "distill_nfsd_target"),
           *kn = scratch(st_n, B, "distill_nfsd_target");
    Var *out = NULL;
    if (ku && kc && kn) {
        /* target = x - r (delta_D + s (eps_c - eps_u)), r = sigma / alpha, delta_D = eps_u below
         * the threshold, else eps_u - eps_neg, or 0 without a negative prediction */
        double scale = cfg->cfg_scale;
        int64_t b = 0;
        for (; b < B; b++) {
            double al = noise_schedule_alpha(s, t[b]);
            if (al == 0) {
                addc_error_set(ADDC_ERR_INVALID,
                               "distill_nfsd_target: t[%lld] = %lld has alpha 0 (zero terminal SNR: set "
                               "schedule.terminal_alpha_bar > 0)",
                               (long long)b, (long long)t[b]);
                break;
            }
            double r = noise_schedule_sigma(s, t[b]) / al;
            bool low = t[b] < cfg->nfsd_t_threshold;
            ku[b] = low || eps_neg ? -r * (1.0 - scale) : r * scale;
            kc[b] = -r * scale;
            kn[b] = low ? 0.0 : r;
        }
        if (b == B) {
            Var *y = op_add(c, sg(c, x_student), diffusion_combine(c, sg(c, eps_uncond), ku, sg(c, eps_cond), kc));
            if (eps_neg) y = op_add(c, y, diffusion_scale_per_sample(c, sg(c, eps_neg), kn));
            out = y;
        }
    }
    if (ku && ku != st_u) free(ku);
    if (kc && kc != st_c) free(kc);
    if (kn && kn != st_n) free(kn);
    return out;
}
