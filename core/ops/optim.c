/* core/ops/optim: optimizer updates on flat f32 buffers (not tape ops): AdamW, EMA, sums of
 * squares, the global gradient norm and clipping.
 *
 * AdamW follows torch.optim.AdamW's CPU for-loop implementation (_single_tensor_adam with
 * decoupled weight decay) operation by operation in f32, with the scalars torch derives in
 * double and rounds to f32 where torch's kernels do:
 *   p = p * (1 - lr wd)
 *   m = lerp(m, g, 1 - b1)                  (torch's vectorised lerp: one fused multiply-add)
 *   v = fma((1 - b2) g, g, v b2)            (torch's vectorised addcmul, fused likewise)
 *   p = p + (-(lr / (1 - b1^t)) m) / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * m and v then match torch bit for bit (tests/unit/test_optim.c); p can differ by a few ulp
 * because torch's CPU sqrt (MKL vector math) is not correctly rounded on ~17% of inputs where
 * sqrtf is.
 * Sums of squares accumulate in double over fixed blocks added in block order: the result does
 * not depend on the thread count. */
#include <math.h>

#include "core/ops.h"
#include "core/parallel.h"

#define OPTIM_GRAIN (1 << 14)
#define SUMSQ_BLOCK 4096
#define SUMSQ_BATCH 1024 /* blocks whose partials are summed per round */

typedef struct {
    float *p, *m, *v;
    const float *g;
    float decay;      /* 1 - lr wd */
    float w1;         /* 1 - b1, the lerp weight */
    float b2, one_b2; /* b2, 1 - b2 */
    float neg_step;   /* -lr / (1 - b1^t) */
    float bc2_sqrt;   /* sqrt(1 - b2^t) */
    float eps;
    int decoupled;
} AdamJob;

static void adamw_range(void *ctx, int64_t b, int64_t e) {
    const AdamJob *j = ctx;
    int small = fabsf(j->w1) < 0.5f;
    float coeff = small ? j->w1 : j->w1 - 1.0f;
    for (int64_t i = b; i < e; i++) {
        float p = j->p[i], g = j->g[i], m = j->m[i], v = j->v[i];
        if (j->decoupled) p = p * j->decay;
        m = fmaf(coeff, g - m, small ? m : g);
        v = fmaf(j->one_b2 * g, g, v * j->b2);
        float denom = sqrtf(v) / j->bc2_sqrt + j->eps;
        p = p + j->neg_step * m / denom;
        j->p[i] = p;
        j->m[i] = m;
        j->v[i] = v;
    }
}

void adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, const AdamWConfig *cfg,
                  int64_t step) {
    double t = (double)step;
    double bc1 = 1.0 - pow(cfg->beta1, t);
    double bc2 = 1.0 - pow(cfg->beta2, t);
    AdamJob j = {
        .p = param,
        .m = m,
        .v = v,
        .g = grad,
        .decay = (float)(1.0 - cfg->lr * cfg->weight_decay),
        .w1 = (float)(1.0 - cfg->beta1),
        .b2 = (float)cfg->beta2,
        .one_b2 = (float)(1.0 - cfg->beta2),
        .neg_step = (float)(-(cfg->lr / bc1)),
        .bc2_sqrt = (float)pow(bc2, 0.5),
        .eps = (float)cfg->eps,
        .decoupled = cfg->weight_decay != 0,
    };
    parallel_for(n, OPTIM_GRAIN, adamw_range, &j);
}

typedef struct {
    float *ema;
    const float *p;
    double decay;
} EmaJob;

static void ema_range(void *ctx, int64_t b, int64_t e) {
    const EmaJob *j = ctx;
    double d = j->decay, one_d = 1.0 - j->decay;
    for (int64_t i = b; i < e; i++) j->ema[i] = (float)(d * j->ema[i] + one_d * j->p[i]);
}

void ema_update(float *ema, const float *param, int64_t n, double decay) {
    EmaJob j = {ema, param, decay};
    parallel_for(n, OPTIM_GRAIN, ema_range, &j);
}

typedef struct {
    const float *x;
    int64_t n, first_block;
    double *partial; /* SUMSQ_BATCH */
} SumSqJob;

static void sumsq_blocks(void *ctx, int64_t b0, int64_t b1) {
    SumSqJob *j = ctx;
    for (int64_t b = b0; b < b1; b++) {
        int64_t s = (j->first_block + b) * SUMSQ_BLOCK;
        int64_t e = s + SUMSQ_BLOCK < j->n ? s + SUMSQ_BLOCK : j->n;
        double t = 0;
        for (int64_t i = s; i < e; i++) t += (double)j->x[i] * j->x[i];
        j->partial[b] = t;
    }
}

double sum_squares(const float *x, int64_t n) {
    double partial[SUMSQ_BATCH];
    int64_t nb = (n + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    double total = 0;
    for (int64_t b0 = 0; b0 < nb; b0 += SUMSQ_BATCH) {
        int64_t cnt = nb - b0 < SUMSQ_BATCH ? nb - b0 : SUMSQ_BATCH;
        SumSqJob j = {x, n, b0, partial};
        parallel_for(cnt, 1, sumsq_blocks, &j);
        for (int64_t b = 0; b < cnt; b++) total += partial[b];
    }
    return total;
}

double grad_global_norm(float *const *grads, const int64_t *sizes, int n) {
    double ss = 0;
    for (int i = 0; i < n; i++)
        if (grads[i]) ss += sum_squares(grads[i], sizes[i]);
    return sqrt(ss);
}

typedef struct {
    float *x;
    float s;
} MulJob;

static void mul_range(void *ctx, int64_t b, int64_t e) {
    const MulJob *j = ctx;
    for (int64_t i = b; i < e; i++) j->x[i] *= j->s;
}

double grad_clip_global_norm(float *const *grads, const int64_t *sizes, int n, double max_norm) {
    double norm = grad_global_norm(grads, sizes, n);
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
        for (int i = 0; i < n; i++) {
            if (!grads[i]) continue;
            MulJob j = {grads[i], (float)coef};
            parallel_for(sizes[i], OPTIM_GRAIN, mul_range, &j);
        }
    return norm;
}
