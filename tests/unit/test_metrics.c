/* tests/unit/test_metrics: losses/metrics against numpy / scipy (fixture metrics/fd,
 * tests/ref/make_metrics_fixture.py) and against exact cases:
 * - means and unbiased covariances of correlated float features (300 and 400 x 64) as numpy.cov;
 * - the Frechet distance as pytorch-fid computes it (scipy.linalg.sqrtm of S1 S2), to 1e-9 relative;
 * - the same set gives 0 (to 1e-9 of tr S), a pure mean shift |d|^2, an isotropic scale s about the
 *   mean (1 - s)^2 tr S, also with fewer vectors than features (rank-deficient covariances);
 * - the eigensolver: A v = w v, orthonormal vectors, ascending values, repeated eigenvalues;
 * - mean pairwise distances and their per-class average as scipy's pdist; argmax accuracy;
 * - the same bits with 1 and 2 threads; F = 512 (a mean shift, timed). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "losses/metrics.h"
#include "tests/test_util.h"

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-300); }

static double fix_scalar2(const Fixture *f, const char *base) {
    char hi[64], lo[64];
    snprintf(hi, sizeof hi, "%s_hi", base);
    snprintf(lo, sizeof lo, "%s_lo", base);
    return (double)fixture_get(f, hi)->data[0] + (double)fixture_get(f, lo)->data[0];
}

static double fd_of(const float *a, int64_t na, const float *b, int64_t nb, int64_t F) {
    GaussianFit ga, gb;
    double fd = NAN;
    if (metrics_gaussian_fit(a, na, F, &ga) != ADDC_OK) return NAN;
    if (metrics_gaussian_fit(b, nb, F, &gb) == ADDC_OK) {
        if (metrics_frechet_distance(&ga, &gb, &fd) != ADDC_OK) fprintf(stderr, "  fd: %s\n", addc_error_message());
        metrics_gaussian_free(&gb);
    }
    metrics_gaussian_free(&ga);
    return fd;
}

static void test_fixture(const Fixture *f) {
    const FixTensor *a = fixture_get(f, "a"), *b = fixture_get(f, "b");
    int64_t F = a->shape[1];
    GaussianFit ga, gb;
    CHECK_OK(metrics_gaussian_fit(a->data, a->shape[0], F, &ga));
    CHECK_OK(metrics_gaussian_fit(b->data, b->shape[0], F, &gb));
    const char *names[4] = {"mu_a", "cov_a", "mu_b", "cov_b"};
    const double *mine[4] = {ga.mu, ga.cov, gb.mu, gb.cov};
    for (int k = 0; k < 4; k++) {
        const FixTensor *t = fixture_get(f, names[k]);
        double scale = 0, err = 0;
        for (int64_t i = 0; i < t->numel; i++) scale = fmax(scale, fabs(t->data[i]));
        for (int64_t i = 0; i < t->numel; i++) err = fmax(err, fabs(mine[k][i] - t->data[i]));
        CHECK(err <= 1e-6 * scale, "%s: max error %.3g of max %.3g (numpy, stored as float32)", names[k], err, scale);
    }
    double fd = NAN, want = fix_scalar2(f, "fd");
    CHECK_OK(metrics_frechet_distance(&ga, &gb, &fd));
    CHECK(rel(fd, want) <= 1e-9, "FD %.15g, pytorch-fid %.15g (rel %.3g)", fd, want, rel(fd, want));
    double tr = 0, d2 = 0;
    for (int64_t k = 0; k < F; k++) {
        tr += ga.cov[k * F + k] + gb.cov[k * F + k];
        d2 += (ga.mu[k] - gb.mu[k]) * (ga.mu[k] - gb.mu[k]);
    }
    double trs = (d2 + tr - fd) / 2;
    CHECK(rel(trs, fix_scalar2(f, "trsqrt")) <= 1e-9, "tr sqrt(S1 S2) %.15g, scipy %.15g", trs, fix_scalar2(f, "trsqrt"));
    double fd_ba = NAN;
    CHECK_OK(metrics_frechet_distance(&gb, &ga, &fd_ba));
    CHECK(rel(fd_ba, want) <= 1e-9, "FD(b, a) %.15g, want %.15g: symmetric", fd_ba, want);
    printf("  FD %.12f vs pytorch-fid %.12f: rel %.2g\n", fd, want, rel(fd, want));
    metrics_gaussian_free(&ga);
    metrics_gaussian_free(&gb);

    double div = metrics_mean_pairwise_distance(a->data, a->shape[0], F);
    CHECK(rel(div, fix_scalar2(f, "div_a")) <= 1e-10, "mean pairwise distance %.15g, pdist %.15g", div,
          fix_scalar2(f, "div_a"));
    const FixTensor *g = fixture_get(f, "group_a");
    int32_t grp[300];
    for (int64_t i = 0; i < g->numel; i++) grp[i] = (int32_t)g->data[i];
    double per[5], mean = NAN;
    CHECK_OK(metrics_diversity(a->data, a->shape[0], F, grp, 5, per, &mean));
    CHECK(rel(mean, fix_scalar2(f, "div_group")) <= 1e-10, "within-class diversity %.15g, pdist %.15g", mean,
          fix_scalar2(f, "div_group"));
    /* a row left out (group -1) and a class with one member do not count */
    grp[0] = 6;
    double per7[7], mean7 = NAN;
    CHECK_OK(metrics_diversity(a->data, a->shape[0], F, grp, 7, per7, &mean7));
    CHECK(isnan(per7[5]) && isnan(per7[6]) && isfinite(mean7) && fabs(mean7 - mean) < 0.5,
          "groups 5 (empty) and 6 (one row) left out: %g %g, mean %g", per7[5], per7[6], mean7);

    const FixTensor *lg = fixture_get(f, "logits"), *lb = fixture_get(f, "labels");
    int32_t labels[50];
    for (int i = 0; i < 50; i++) labels[i] = (int32_t)lb->data[i];
    double acc = metrics_accuracy(lg->data, 50, 7, labels);
    CHECK(fabs(acc - fixture_get(f, "acc")->data[0]) < 1e-7, "accuracy %g, numpy %g", acc, fixture_get(f, "acc")->data[0]);
}

/* features on a dyadic grid, so that x + d and 2 x are exact in float */
static void grid_features(float *x, int64_t n, int64_t F, uint64_t seed) {
    TestRng r = {seed};
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < F; j++) {
            double z = trng_normal(&r) * (1 + 0.1 * (double)j) + (j % 3 ? 0.5 * x[(i * F + j) - 1] : 0);
            x[i * F + j] = (float)(round(z * 64) / 64);
        }
}

static void test_exact(int64_t n, int64_t F) {
    float *a = malloc((size_t)(n * F) * sizeof(float)), *b = malloc((size_t)(n * F) * sizeof(float));
    grid_features(a, n, F, 11 + (uint64_t)n);
    GaussianFit g;
    CHECK_OK(metrics_gaussian_fit(a, n, F, &g));
    double tr = 0, mu2 = 0;
    for (int64_t k = 0; k < F; k++) tr += g.cov[k * F + k], mu2 += g.mu[k] * g.mu[k];
    metrics_gaussian_free(&g);

    double same = fd_of(a, n, a, n, F);
    CHECK(fabs(same) <= 1e-9 * tr, "n %lld F %lld: FD of a set with itself %.3g (tr S %.3g)", (long long)n, (long long)F, same, tr);
    double d2 = 0;
    for (int64_t j = 0; j < F; j++) {
        double d = (double)((j * 7) % 5 - 2) * 0.25;
        d2 += d * d;
        for (int64_t i = 0; i < n; i++) b[i * F + j] = a[i * F + j] + (float)d;
    }
    double shift = fd_of(a, n, b, n, F);
    CHECK(fabs(shift - d2) <= 1e-9 * (tr + d2), "n %lld F %lld: mean shift FD %.15g, want |d|^2 = %.15g", (long long)n,
          (long long)F, shift, d2);
    for (int64_t i = 0; i < n * F; i++) b[i] = 2 * a[i]; /* mean 2 mu, S 4 S: FD = |mu|^2 + (1 - 2)^2 tr S */
    double scale = fd_of(a, n, b, n, F);
    CHECK(rel(scale, mu2 + tr) <= 1e-9, "n %lld F %lld: scale 2 FD %.15g, want |mu|^2 + tr S = %.15g", (long long)n,
          (long long)F, scale, mu2 + tr);
    free(a);
    free(b);
}

static void test_eigh(void) {
    enum { N = 40 };
    static double a[N * N], w[N], v[N * N], orig[N * N];
    TestRng r = {5};
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) orig[i * N + j] = orig[j * N + i] = trng_range(&r, -1, 1);
    memcpy(a, orig, sizeof a);
    CHECK_OK(metrics_eigh(a, N, w, v));
    double res = 0, orth = 0;
    bool ascending = true;
    for (int k = 0; k < N; k++) {
        if (k && w[k] < w[k - 1]) ascending = false;
        for (int i = 0; i < N; i++) {
            double s = 0;
            for (int j = 0; j < N; j++) s += orig[i * N + j] * v[k * N + j];
            res = fmax(res, fabs(s - w[k] * v[k * N + i]));
        }
        for (int l = 0; l < N; l++) {
            double s = 0;
            for (int j = 0; j < N; j++) s += v[k * N + j] * v[l * N + j];
            orth = fmax(orth, fabs(s - (k == l)));
        }
    }
    CHECK(res < 1e-12 && orth < 1e-12 && ascending, "eigh 40x40: |Av - wv| %.3g, |V V^T - I| %.3g, ascending %d", res,
          orth, ascending);
    /* repeated eigenvalues (3 I plus a rank-one term) and a 1 x 1 matrix */
    double u[N];
    for (int i = 0; i < N; i++) u[i] = trng_range(&r, -1, 1);
    double uu = 0;
    for (int i = 0; i < N; i++) uu += u[i] * u[i];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) a[i * N + j] = 3 * (i == j) + u[i] * u[j];
    CHECK_OK(metrics_eigh(a, N, w, NULL));
    double err = fabs(w[N - 1] - (3 + uu));
    for (int k = 0; k < N - 1; k++) err = fmax(err, fabs(w[k] - 3));
    CHECK(err < 1e-12, "3 I + u u^T: eigenvalues off by %.3g", err);
    double one = -2.5, w1;
    CHECK(metrics_eigh(&one, 1, &w1, NULL) == ADDC_OK && w1 == -2.5, "1 x 1: %g", w1);
    a[3] = NAN;
    CHECK(metrics_eigh(a, N, w, NULL) != ADDC_OK && strstr(addc_error_message(), "not finite"), "NaN refused");
}

static void test_errors_and_threads(void) {
    float x[4 * 3] = {0};
    GaussianFit g, h;
    CHECK(metrics_gaussian_fit(x, 1, 3, &g) != ADDC_OK && strstr(addc_error_message(), "at least 2"), "n = 1 refused");
    CHECK_OK(metrics_gaussian_fit(x, 4, 3, &g));
    CHECK_OK(metrics_gaussian_fit(x, 2, 2, &h));
    double fd;
    CHECK(metrics_frechet_distance(&g, &h, &fd) != ADDC_OK && strstr(addc_error_message(), "width 3 and 2"),
          "widths differ: refused");
    metrics_gaussian_free(&g);
    metrics_gaussian_free(&h);

    enum { N = 257, F = 33 };
    static float y[N * F];
    TestRng r = {9};
    trng_fill_f32(&r, y, N * F, -1, 1);
    int32_t grp[N];
    for (int i = 0; i < N; i++) grp[i] = i % 3;
    int threads = parallel_threads();
    double m1, m2;
    parallel_set_threads(1);
    double d1 = metrics_mean_pairwise_distance(y, N, F);
    CHECK_OK(metrics_diversity(y, N, F, grp, 3, NULL, &m1));
    parallel_set_threads(2);
    double d2 = metrics_mean_pairwise_distance(y, N, F);
    CHECK_OK(metrics_diversity(y, N, F, grp, 3, NULL, &m2));
    parallel_set_threads(threads);
    CHECK(d1 == d2 && m1 == m2, "1 and 2 threads: %.17g %.17g, %.17g %.17g", d1, d2, m1, m2);
}

static void test_large(void) {
    enum { N = 600, F = 512 };
    float *a = malloc(sizeof(float) * N * F), *b = malloc(sizeof(float) * N * F);
    grid_features(a, N, F, 3);
    double d2 = 0;
    for (int64_t j = 0; j < F; j++) {
        double d = (j % 4) * 0.5;
        d2 += d * d;
        for (int64_t i = 0; i < N; i++) b[i * F + j] = a[i * F + j] + (float)d;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double fd = fd_of(a, N, b, N, F);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    CHECK(fabs(fd - d2) <= 1e-8 * d2, "F 512: mean shift FD %.12g, want %.12g", fd, d2);
    printf("  F 512, n 600: two fits and the FD in %.2f s\n", secs);
    free(a);
    free(b);
}

int main(void) {
    Fixture f;
    if (!fixture_load("metrics/fd", &f)) {
        CHECK(0, "cannot load fixture metrics/fd (python3 tests/ref/make_metrics_fixture.py)");
        return test_main_end("metrics");
    }
    test_fixture(&f);
    fixture_free(&f);
    test_exact(300, 64);
    test_exact(20, 64); /* n < F: rank-deficient covariances */
    test_eigh();
    test_errors_and_threads();
    test_large();
    return test_main_end("metrics");
}
