/* losses/diffusion: noise schedules, parameterisation conversions and the plain diffusion loss
 * (formulas in diffusion.h). Conversions are compositions of differentiable ops with per-sample
 * constant coefficients (B, 1, ..., 1), so gradients reach every tensor input. */
#include "losses/diffusion.h"

#include <math.h>
#include <stdlib.h>

#include "core/cuda.h"

/* ---- schedule ---- */

Status noise_schedule_init(NoiseSchedule *s, const ScheduleConfig *cfg) {
    int64_t T = cfg->num_train_timesteps;
    if (T < 2 || T > SCHEDULE_MAX_T)
        return addc_error_set(ADDC_ERR_INVALID, "noise schedule: num_train_timesteps %lld is outside [2, %d]",
                              (long long)T, SCHEDULE_MAX_T);
    if (!(cfg->beta_start > 0 && cfg->beta_start < cfg->beta_end && cfg->beta_end < 1))
        return addc_error_set(ADDC_ERR_INVALID, "noise schedule: need 0 < beta_start (%g) < beta_end (%g) < 1",
                              cfg->beta_start, cfg->beta_end);
    s->T = T;
    double lo, hi;
    if (cfg->kind == SCHEDULE_SCALED_LINEAR) {
        lo = sqrt(cfg->beta_start);
        hi = sqrt(cfg->beta_end);
    } else if (cfg->kind == SCHEDULE_LINEAR) {
        lo = cfg->beta_start;
        hi = cfg->beta_end;
    } else {
        return addc_error_set(ADDC_ERR_INVALID, "noise schedule: unknown kind %d", (int)cfg->kind);
    }
    double prod = 1.0;
    for (int64_t i = 0; i < T; i++) {
        double b = lo + (hi - lo) * (double)i / (double)(T - 1);
        if (cfg->kind == SCHEDULE_SCALED_LINEAR) b *= b;
        prod *= 1.0 - b;
        s->alpha_bar[i] = prod;
    }
    if (cfg->zero_terminal_snr) {
        double s0 = sqrt(s->alpha_bar[0]), sT = sqrt(s->alpha_bar[T - 1]);
        for (int64_t i = 0; i < T; i++) {
            double r = (sqrt(s->alpha_bar[i]) - sT) * s0 / (s0 - sT);
            s->alpha_bar[i] = r * r;
        }
        s->alpha_bar[T - 1] = cfg->terminal_alpha_bar;
    }
    return ADDC_OK;
}

double noise_schedule_alpha(const NoiseSchedule *s, int64_t t) { return sqrt(s->alpha_bar[t]); }
double noise_schedule_sigma(const NoiseSchedule *s, int64_t t) { return sqrt(1.0 - s->alpha_bar[t]); }
double noise_schedule_snr(const NoiseSchedule *s, int64_t t) { return s->alpha_bar[t] / (1.0 - s->alpha_bar[t]); }

/* ---- per-sample coefficients ---- */

static Var *coef_var(Ctx *c, const Var *like, const double *w) {
    int64_t B = like->v.ndim ? like->v.shape[0] : 1, shape[TENSOR_MAX_DIMS];
    int32_t nd = like->v.ndim ? like->v.ndim : 1;
    shape[0] = B;
    for (int32_t i = 1; i < nd; i++) shape[i] = 1;
    Var *v = var_new(c, DTYPE_F32, nd, shape);
    if (!v || !v->v.data) return v; /* meta: shapes only */
    if (c->device == DEVICE_CPU) {
        for (int64_t b = 0; b < B; b++) ((float *)v->v.data)[b] = (float)w[b];
        return v;
    }
    float *host = malloc((size_t)B * sizeof(float));
    if (!host) {
        addc_error_set(ADDC_ERR_NOMEM, "per-sample coefficients: %lld floats", (long long)B);
        return NULL;
    }
    for (int64_t b = 0; b < B; b++) host[b] = (float)w[b];
    Status st = cuda_copy_to_device(v->v.data, host, (size_t)B * sizeof(float));
    free(host);
    return st == ADDC_OK ? v : NULL;
}

static bool f32_batch(const Var *x, const char *what) {
    if (x->v.dtype != DTYPE_F32 || x->v.ndim < 1) {
        addc_error_set(ADDC_ERR_INVALID, "%s: expected an f32 tensor (B, ...), got rank %d dtype %d", what,
                       (int)x->v.ndim, (int)x->v.dtype);
        return false;
    }
    return true;
}

Var *diffusion_scale_per_sample(Ctx *c, Var *x, const double *w) {
    if (!x || !f32_batch(x, "diffusion_scale_per_sample")) return NULL;
    return op_mul(c, x, coef_var(c, x, w));
}

Var *diffusion_combine(Ctx *c, Var *x, const double *a, Var *y, const double *b) {
    if (!x || !y) return NULL;
    if (!tensor_same_shape(&x->v, &y->v)) {
        char sx[96], sy[96];
        addc_error_set(ADDC_ERR_INVALID, "diffusion: tensors of different shapes %s and %s",
                       tensor_shape_str(&x->v, sx, sizeof sx), tensor_shape_str(&y->v, sy, sizeof sy));
        return NULL;
    }
    return op_add(c, diffusion_scale_per_sample(c, x, a), diffusion_scale_per_sample(c, y, b));
}

/* per-sample coefficient arrays live on the stack up to this batch, else in a short malloc */
#define COEF_MAX_STACK 256

/* (alpha_t, sigma_t) -> the coefficients (a, b) of a conversion a x + b y; false when it would
 * divide by zero */
typedef bool (*CoefFn)(double alpha, double sigma, double *a, double *b);

/* a[b] x + b[b] y with (a, b) = fn(alpha_t[b], sigma_t[b]) */
static Var *convert(Ctx *c, const NoiseSchedule *s, Var *x, Var *y, const int64_t *t, CoefFn fn, const char *what) {
    if (!x || !y) return NULL;
    if (!f32_batch(x, what)) return NULL;
    int64_t B = x->v.shape[0];
    double stack_a[COEF_MAX_STACK], stack_b[COEF_MAX_STACK];
    double *ca = stack_a, *cb = stack_b;
    if (B > COEF_MAX_STACK) {
        ca = malloc((size_t)B * 2 * sizeof(double));
        if (!ca) {
            addc_error_set(ADDC_ERR_NOMEM, "%s: coefficients for %lld samples", what, (long long)B);
            return NULL;
        }
        cb = ca + B;
    }
    Var *out = NULL;
    int64_t b = 0;
    for (; b < B; b++) {
        if (t[b] < 0 || t[b] >= s->T) {
            addc_error_set(ADDC_ERR_INVALID, "%s: timestep t[%lld] = %lld is outside [0, %lld)", what, (long long)b,
                           (long long)t[b], (long long)s->T);
            break;
        }
        if (!fn(noise_schedule_alpha(s, t[b]), noise_schedule_sigma(s, t[b]), &ca[b], &cb[b])) {
            addc_error_set(ADDC_ERR_INVALID,
                           "%s: t[%lld] = %lld has alpha %g, sigma %g: the conversion divides by zero (zero terminal "
                           "SNR: use v-prediction or schedule.terminal_alpha_bar > 0)",
                           what, (long long)b, (long long)t[b], noise_schedule_alpha(s, t[b]),
                           noise_schedule_sigma(s, t[b]));
            break;
        }
    }
    if (b == B) out = diffusion_combine(c, x, ca, y, cb);
    if (ca != stack_a) free(ca);
    return out;
}

static bool k_noise_add(double al, double sg, double *a, double *b) { /* x0, eps */
    *a = al, *b = sg;
    return true;
}
static bool k_x0_from_eps(double al, double sg, double *a, double *b) { /* z, eps */
    if (al == 0) return false;
    *a = 1.0 / al, *b = -sg / al;
    return true;
}
static bool k_eps_from_x0(double al, double sg, double *a, double *b) { /* z, x0 */
    if (sg == 0) return false;
    *a = 1.0 / sg, *b = -al / sg;
    return true;
}
static bool k_v_from_x0_eps(double al, double sg, double *a, double *b) { /* x0, eps */
    *a = -sg, *b = al;
    return true;
}
static bool k_x0_from_v(double al, double sg, double *a, double *b) { /* z, v */
    *a = al, *b = -sg;
    return true;
}
static bool k_eps_from_v(double al, double sg, double *a, double *b) { /* z, v */
    *a = sg, *b = al;
    return true;
}

Var *diffusion_noise_add(Ctx *c, const NoiseSchedule *s, Var *x0, Var *eps, const int64_t *t) {
    return convert(c, s, x0, eps, t, k_noise_add, "diffusion_noise_add");
}
Var *diffusion_x0_from_eps(Ctx *c, const NoiseSchedule *s, Var *z, Var *eps, const int64_t *t) {
    return convert(c, s, z, eps, t, k_x0_from_eps, "diffusion_x0_from_eps");
}
Var *diffusion_eps_from_x0(Ctx *c, const NoiseSchedule *s, Var *z, Var *x0, const int64_t *t) {
    return convert(c, s, z, x0, t, k_eps_from_x0, "diffusion_eps_from_x0");
}
Var *diffusion_v_from_x0_eps(Ctx *c, const NoiseSchedule *s, Var *x0, Var *eps, const int64_t *t) {
    return convert(c, s, x0, eps, t, k_v_from_x0_eps, "diffusion_v_from_x0_eps");
}
Var *diffusion_x0_from_v(Ctx *c, const NoiseSchedule *s, Var *z, Var *v, const int64_t *t) {
    return convert(c, s, z, v, t, k_x0_from_v, "diffusion_x0_from_v");
}
Var *diffusion_eps_from_v(Ctx *c, const NoiseSchedule *s, Var *z, Var *v, const int64_t *t) {
    return convert(c, s, z, v, t, k_eps_from_v, "diffusion_eps_from_v");
}

static bool prediction_ok(int32_t p) {
    if (p == PREDICTION_EPSILON || p == PREDICTION_V) return true;
    addc_error_set(ADDC_ERR_INVALID, "diffusion: unknown prediction type %d", (int)p);
    return false;
}

Var *diffusion_x0_from_pred(Ctx *c, const NoiseSchedule *s, int32_t p, Var *z, Var *pred, const int64_t *t) {
    if (!prediction_ok(p)) return NULL;
    return p == PREDICTION_EPSILON ? diffusion_x0_from_eps(c, s, z, pred, t) : diffusion_x0_from_v(c, s, z, pred, t);
}

Var *diffusion_eps_from_pred(Ctx *c, const NoiseSchedule *s, int32_t p, Var *z, Var *pred, const int64_t *t) {
    if (!prediction_ok(p)) return NULL;
    return p == PREDICTION_EPSILON ? pred : diffusion_eps_from_v(c, s, z, pred, t);
}

/* ---- losses ---- */

/* a no-grad leaf over v's value: what stop-gradient means on a tape */
static Var *stop_gradient(Ctx *c, Var *v) { return v ? var_leaf(c, v->v, false) : NULL; }

Var *loss_mse_per_sample(Ctx *c, Var *pred, Var *target, const double *w, int32_t reduce) {
    if (!pred || !target) return NULL;
    if (!f32_batch(pred, "loss_mse_per_sample")) return NULL;
    if (!tensor_same_shape(&pred->v, &target->v)) {
        char sp[96], st[96];
        addc_error_set(ADDC_ERR_INVALID, "loss_mse_per_sample: prediction %s and target %s differ in shape",
                       tensor_shape_str(&pred->v, sp, sizeof sp), tensor_shape_str(&target->v, st, sizeof st));
        return NULL;
    }
    if (reduce != LOSS_REDUCE_MEAN && reduce != LOSS_REDUCE_SUM) {
        addc_error_set(ADDC_ERR_INVALID, "loss_mse_per_sample: unknown reduction %d", (int)reduce);
        return NULL;
    }
    int64_t B = pred->v.shape[0], per = B ? tensor_numel(&pred->v) / B : 0;
    double stack_w[COEF_MAX_STACK], *cw = stack_w;
    if (B > COEF_MAX_STACK && !(cw = malloc((size_t)B * sizeof(double)))) {
        addc_error_set(ADDC_ERR_NOMEM, "loss_mse_per_sample: weights for %lld samples", (long long)B);
        return NULL;
    }
    double elem = reduce == LOSS_REDUCE_MEAN && per > 0 ? 1.0 / (double)per : 1.0;
    for (int64_t b = 0; b < B; b++) cw[b] = (w ? w[b] : 1.0) * elem / (double)(B ? B : 1);
    int64_t shape[TENSOR_MAX_DIMS];
    shape[0] = B;
    for (int32_t i = 1; i < pred->v.ndim; i++) shape[i] = 1;
    Var *d = op_sub(c, pred, stop_gradient(c, target));
    Var *per_sample = op_sum_to(c, op_mul(c, d, d), pred->v.ndim, shape);
    Var *out = op_sum(c, diffusion_scale_per_sample(c, per_sample, cw));
    if (cw != stack_w) free(cw);
    return out;
}

double diffusion_min_snr_weight(const NoiseSchedule *s, int32_t prediction, double gamma, int64_t t) {
    if (gamma <= 0) return 1.0;
    double snr = noise_schedule_snr(s, t), m = snr < gamma ? snr : gamma;
    if (prediction == PREDICTION_V) return m / (snr + 1.0);
    return snr > 0 ? m / snr : 1.0;
}

Var *diffusion_loss(Ctx *c, const NoiseSchedule *s, int32_t prediction, double min_snr_gamma, Var *pred, Var *x0,
                    Var *eps, const int64_t *t) {
    if (!pred || !x0 || !eps) return NULL;
    if (!prediction_ok(prediction) || !f32_batch(pred, "diffusion_loss")) return NULL;
    int64_t B = pred->v.shape[0];
    double stack_w[COEF_MAX_STACK], *w = stack_w;
    if (B > COEF_MAX_STACK && !(w = malloc((size_t)B * sizeof(double)))) {
        addc_error_set(ADDC_ERR_NOMEM, "diffusion_loss: weights for %lld samples", (long long)B);
        return NULL;
    }
    Var *out = NULL;
    int64_t b = 0;
    for (; b < B; b++) {
        if (t[b] < 0 || t[b] >= s->T) {
            addc_error_set(ADDC_ERR_INVALID, "diffusion_loss: timestep t[%lld] = %lld is outside [0, %lld)",
                           (long long)b, (long long)t[b], (long long)s->T);
            break;
        }
        w[b] = diffusion_min_snr_weight(s, prediction, min_snr_gamma, t[b]);
    }
    if (b == B) {
        Var *target = prediction == PREDICTION_EPSILON
                          ? eps
                          : diffusion_v_from_x0_eps(c, s, stop_gradient(c, x0), stop_gradient(c, eps), t);
        out = loss_mse_per_sample(c, pred, target, w, LOSS_REDUCE_MEAN);
    }
    if (w != stack_w) free(w);
    return out;
}
