/* Optimizer updates: 10 AdamW steps against torch.optim.AdamW (fixture adamw.bin from
 * tests/ref/make_optim_fixture.py: moments bit-exact, parameter within 1e-6 relative) and
 * against an f64 reference; EMA, sum of squares, global
 * gradient norm and clipping against f64, with thread-count independence. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/ref_spectral.h"
#include "tests/test_util.h"

static const char *const ADAMW_CONFIGS[] = {"d_beta1_0", "g_beta1_0.9", "no_wd"};
#define ADAMW_STEPS 10

static const FixTensor *fx_get(const Fixture *f, const char *cfg, const char *what) {
    char nm[128];
    snprintf(nm, sizeof nm, "%s/%s", cfg, what);
    const FixTensor *t = fixture_get(f, nm);
    CHECK(t != NULL, "fixture adamw has no tensor %s", nm);
    return t;
}

/* max |a - b| in units of b's float spacing, and the max relative error */
static void ulp_diff(const float *a, const float *b, int64_t n, double *max_ulp, double *max_abs) {
    *max_ulp = 0;
    *max_abs = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        double ulp = fabs(nextafterf(b[i], INFINITY) - b[i]);
        if (d / ulp > *max_ulp) *max_ulp = d / ulp;
        if (d > *max_abs) *max_abs = d;
    }
}

static void test_adamw_vs_torch(void) {
    Fixture f;
    bool ok = fixture_load("adamw", &f);
    CHECK(ok, "cannot load fixture adamw (python3 tests/ref/make_optim_fixture.py)");
    if (!ok) return;
    for (size_t k = 0; k < sizeof ADAMW_CONFIGS / sizeof ADAMW_CONFIGS[0]; k++) {
        const char *cfg = ADAMW_CONFIGS[k];
        const FixTensor *tc = fx_get(&f, cfg, "cfg"), *tp0 = fx_get(&f, cfg, "p0");
        const FixTensor *tp = fx_get(&f, cfg, "p"), *tm = fx_get(&f, cfg, "m"), *tv = fx_get(&f, cfg, "v");
        if (!tc || !tp0 || !tp || !tm || !tv) continue;
        int64_t n = tp0->numel;
        AdamWConfig ac = {.lr = tc->data[0], .beta1 = tc->data[1], .beta2 = tc->data[2], .eps = tc->data[3],
                          .weight_decay = tc->data[4]};
        float *p = malloc((size_t)n * 4), *m = calloc((size_t)n, 4), *v = calloc((size_t)n, 4);
        double *p64 = malloc((size_t)n * 8), *m64 = calloc((size_t)n, 8), *v64 = calloc((size_t)n, 8),
               *g64 = malloc((size_t)n * 8);
        memcpy(p, tp0->data, (size_t)n * 4);
        for (int64_t i = 0; i < n; i++) p64[i] = tp0->data[i];
        for (int t = 1; t <= ADAMW_STEPS; t++) {
            char gn[16];
            snprintf(gn, sizeof gn, "g%d", t);
            const FixTensor *tg = fx_get(&f, cfg, gn);
            if (!tg) break;
            adamw_update(p, tg->data, m, v, n, &ac, t);
            for (int64_t i = 0; i < n; i++) g64[i] = tg->data[i];
            ref_adamw_step(p64, g64, m64, v64, n, ac.lr, ac.beta1, ac.beta2, ac.eps, ac.weight_decay, t);
        }
        double up, ap, um, am, uv, av;
        ulp_diff(p, tp->data, n, &up, &ap);
        ulp_diff(m, tm->data, n, &um, &am);
        ulp_diff(v, tv->data, n, &uv, &av);
        double e64 = compare_f32_f64("adamw p vs f64", p, p64, n, 1e-5, 1e-6);
        printf("  adamw %-12s 10 steps vs torch: p max diff %.3g (%.1f ulp)  m %.3g (%.1f ulp)  v %.3g (%.1f ulp)"
               "  | p vs f64 rel %.2e\n", cfg, ap, up, am, um, av, uv, e64);
        char label[64];
        snprintf(label, sizeof label, "adamw %s p", cfg);
        double ep = compare_f32(label, p, tp->data, n, 1e-6, 1e-6);
        /* m and v follow torch's float operations exactly; p differs only through torch's CPU
         * sqrt (MKL vector math, not correctly rounded), a few ulp */
        CHECK(um == 0 && uv == 0, "adamw %s: m, v must match torch bit for bit (%.1f, %.1f ulp)", cfg, um, uv);
        CHECK(ep <= 1e-6, "adamw %s: parameter rel err %.3g vs torch", cfg, ep);
        CHECK(e64 <= 1e-5, "adamw %s: parameter rel err %.3g vs f64", cfg, e64);
        free(p), free(m), free(v), free(p64), free(m64), free(v64), free(g64);
    }
    fixture_free(&f);
}

/* the update is elementwise: a big buffer on several threads equals the same on one */
static void test_adamw_threads(void) {
    int64_t n = 300007;
    TestRng r = {5};
    float *p1 = malloc((size_t)n * 4), *g = malloc((size_t)n * 4), *p3 = malloc((size_t)n * 4);
    float *m1 = calloc((size_t)n, 4), *v1 = calloc((size_t)n, 4), *m3 = calloc((size_t)n, 4),
          *v3 = calloc((size_t)n, 4);
    trng_fill_f32(&r, p1, n, -1, 1);
    trng_fill_f32(&r, g, n, -1, 1);
    memcpy(p3, p1, (size_t)n * 4);
    AdamWConfig ac = {1e-3, 0.9, 0.999, 1e-8, 0.01};
    int th = parallel_threads();
    parallel_set_threads(1);
    for (int t = 1; t <= 3; t++) adamw_update(p1, g, m1, v1, n, &ac, t);
    parallel_set_threads(3);
    for (int t = 1; t <= 3; t++) adamw_update(p3, g, m3, v3, n, &ac, t);
    parallel_set_threads(th);
    CHECK(memcmp(p1, p3, (size_t)n * 4) == 0 && memcmp(v1, v3, (size_t)n * 4) == 0,
          "adamw differs between 1 and 3 threads");
    free(p1), free(g), free(p3), free(m1), free(v1), free(m3), free(v3);
}

static void test_ema(void) {
    int64_t n = 70001;
    TestRng r = {6};
    float *e = malloc((size_t)n * 4), *p = malloc((size_t)n * 4);
    double *e64 = malloc((size_t)n * 8);
    trng_fill_f32(&r, e, n, -1, 1);
    for (int64_t i = 0; i < n; i++) e64[i] = e[i];
    for (int s = 0; s < 5; s++) {
        trng_fill_f32(&r, p, n, -1, 1);
        ema_update(e, p, n, 0.999);
        for (int64_t i = 0; i < n; i++) e64[i] = 0.999 * e64[i] + 0.001 * p[i];
    }
    double err = compare_f32_f64("ema", e, e64, n, 1e-6, 1e-6);
    printf("  ema 5 updates (decay 0.999): rel err %.2e\n", err);
    CHECK(err <= 1e-6, "ema rel err %.3g", err);
    free(e), free(p), free(e64);
}

static double ref_sumsq(const float *x, int64_t n) {
    long double s = 0;
    for (int64_t i = 0; i < n; i++) s += (long double)x[i] * x[i];
    return (double)s;
}

static void test_norms(void) {
    int64_t n = 5000003; /* more than one round of blocks */
    TestRng r = {7};
    float *x = malloc((size_t)n * 4);
    trng_fill_f32(&r, x, n, -1, 1);
    int th = parallel_threads();
    parallel_set_threads(1);
    double s1 = sum_squares(x, n);
    parallel_set_threads(3);
    double s3 = sum_squares(x, n);
    parallel_set_threads(th);
    double ref = ref_sumsq(x, n);
    printf("  sum_squares n=%lld: rel err %.2e\n", (long long)n, fabs(s1 - ref) / ref);
    CHECK(memcmp(&s1, &s3, sizeof s1) == 0, "sum_squares differs between 1 and 3 threads: %.17g vs %.17g", s1, s3);
    CHECK(fabs(s1 - ref) <= 1e-12 * ref, "sum_squares %.17g vs %.17g", s1, ref);
    CHECK(sum_squares(x, 0) == 0.0, "sum of squares of nothing is 0");

    /* three buffers, one NULL-free, sizes below and above a block */
    int64_t sizes[3] = {17, 100000, 4097};
    float *g[3];
    double ss = 0;
    for (int i = 0; i < 3; i++) {
        g[i] = malloc((size_t)sizes[i] * 4);
        trng_fill_f32(&r, g[i], sizes[i], -2, 2);
        ss += ref_sumsq(g[i], sizes[i]);
    }
    double norm = grad_global_norm(g, sizes, 3);
    CHECK(fabs(norm - sqrt(ss)) <= 1e-12 * sqrt(ss), "grad_global_norm %.17g vs %.17g", norm, sqrt(ss));

    /* no clipping when the norm is below max_norm: buffers untouched */
    float *keep = malloc((size_t)sizes[1] * 4);
    memcpy(keep, g[1], (size_t)sizes[1] * 4);
    double before = grad_clip_global_norm(g, sizes, 3, 2.0 * norm);
    CHECK(before == norm && memcmp(keep, g[1], (size_t)sizes[1] * 4) == 0, "clip above the norm must not scale");
    /* clipping: scaled by max_norm / (norm + 1e-6) in f32 */
    double max_norm = 0.25 * norm, coef = max_norm / (norm + 1e-6);
    before = grad_clip_global_norm(g, sizes, 3, max_norm);
    double after = grad_global_norm(g, sizes, 3), maxd = 0;
    for (int64_t i = 0; i < sizes[1]; i++) maxd = fmax(maxd, fabs(g[1][i] - (double)keep[i] * coef));
    printf("  clip: norm %.6g -> %.6g (max_norm %.6g), max elem err %.2e\n", before, after, max_norm, maxd);
    CHECK(before == norm, "clip returns the norm before clipping");
    CHECK(fabs(after - max_norm) <= 1e-6 * max_norm, "clipped norm %.9g, want %.9g", after, max_norm);
    CHECK(maxd <= 1e-6, "clipped elements differ by %.3g", maxd);
    for (int i = 0; i < 3; i++) free(g[i]);
    free(keep);
    free(x);
}

int main(void) {
    test_adamw_vs_torch();
    test_adamw_threads();
    test_ema();
    test_norms();
    return test_main_end("test_optim");
}
