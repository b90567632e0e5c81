/* tests/unit/test_xent: op_cross_entropy (core/ops/xent.c).
 *
 * - forward against the f64 reference (tests/ref_xent.c) and backward against f64 finite
 *   differences (check_op), from 1 x 1 to 64 x 1000, logits in [-3, 3] and [-1e4, 1e4];
 * - logits of 1e4: a finite loss and gradient equal to the closed form (loss 0 or 2e4, the
 *   gradient's rows summing to 0) and equal to the reference gradient;
 * - the gradient accumulates (two losses of the same logits give twice the gradient), and
 *   scales with the upstream gradient; bit-identical on 1 and 3 threads;
 * - labels copied into the node (the caller's buffer may change after the call);
 * - a meta run gives shape () and no data;
 * - refusals: a label outside [0, K) (row and value named), negative labels, no labels,
 *   logits that are not (B, K). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/ref_xent.h"
#include "tests/test_util.h"

typedef struct {
    int64_t b, k;
    int32_t *labels; /* (b) */
} XentCase;

static Var *build_xent(Ctx *c, Var **in, void *u) {
    const XentCase *xc = u;
    return op_cross_entropy(c, in[0], xc->labels);
}

static void ref_xent(double *const *in, double *out, void *u) {
    const XentCase *xc = u;
    out[0] = ref_cross_entropy(in[0], xc->b, xc->k, xc->labels);
}

static void run_case(const char *name, int64_t b, int64_t k, double range, uint64_t seed) {
    TestRng r = {seed};
    XentCase xc = {b, k, malloc((size_t)b * sizeof(int32_t))};
    for (int64_t i = 0; i < b; i++) xc.labels[i] = (int32_t)(trng_uniform(&r) * (double)k);
    OpCheck oc = {.name = name, .n_in = 1, .ndim = {2}, .shape = {{b, k}}, .lo = {-range}, .hi = {range},
                  .build = build_xent, .ref = ref_xent, .user = &xc, .max_fd = 64, .seed = seed};
    /* finite differences of a loss ~1e4 in f64: h relative to the values */
    if (range > 100) oc.fd_h = 1e-4;
    check_op(&oc);
    free(xc.labels);
}

/* rows of +-1e4: softmax is one-hot up to exp(-1e4) = 0 */
static void test_large_logits(void) {
    TestCtx t;
    tctx_init(&t);
    const float x[] = {1e4f, -1e4f, 0.0f, /* label 0: loss 0 */
                       1e4f, -1e4f, 0.0f, /* label 1: loss 2e4 */
                       1e4f, 1e4f, -1e4f /* label 0: two tied maxima, loss log 2 */};
    const int32_t labels[] = {0, 1, 0};
    int64_t sh[2] = {3, 3};
    Var *lv = tvar_from(&t, x, true, 2, sh);
    Var *y = op_cross_entropy(&t.c, lv, labels);
    CHECK_VAR(y);
    if (!y) {
        tctx_free(&t);
        return;
    }
    float loss = ((float *)y->v.data)[0];
    double want = (0.0 + 2e4 + log(2.0)) / 3.0;
    CHECK(isfinite(loss) && fabs(loss - want) <= 1e-6 * want, "logits 1e4: loss %.9g, want %.9g", loss, want);
    CHECK_OK(tape_backward(&t.c, y));
    const float *g = lv->g.data;
    double x64[9], g64[9];
    for (int i = 0; i < 9; i++) x64[i] = x[i];
    ref_cross_entropy_grad(x64, 3, 3, labels, g64);
    bool finite = g != NULL;
    double err = 0, rowsum = 0;
    for (int i = 0; finite && i < 9; i++) {
        finite = isfinite(g[i]);
        err = fmax(err, fabs(g[i] - g64[i]));
    }
    for (int b = 0; finite && b < 3; b++) rowsum = fmax(rowsum, fabs((double)g[3 * b] + g[3 * b + 1] + g[3 * b + 2]));
    printf("  logits 1e4: loss %.6g (want %.6g), gradient max abs err %.2e, row sums %.1e\n", loss, want, err, rowsum);
    CHECK(finite && err < 1e-7 && rowsum < 1e-7, "logits 1e4: gradient err %.3g, row sums %.3g", err, rowsum);
    /* closed form: row 1 (label 1) is (1, -1, 0) / 3; row 2 (tied) is (-1/2, 1/2, 0) / 3 */
    CHECK(finite && fabs(g[3] - 1.0 / 3) < 1e-7 && fabs(g[4] + 1.0 / 3) < 1e-7 && fabs(g[6] + 0.5 / 3) < 1e-7,
          "logits 1e4: gradient rows (%g %g %g) (%g %g %g)", g[3], g[4], g[5], g[6], g[7], g[8]);
    tctx_free(&t);
}

/* two losses of the same logits: += gives twice the gradient; an upstream g scales it; the
 * labels are the node's own copy */
static void test_accumulate_and_copy(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {5};
    const int64_t B = 6, K = 4;
    int64_t sh[2] = {B, K};
    int32_t labels[6] = {0, 3, 1, 2, 2, 0};
    Var *x = tvar_rand(&t, &r, true, -2, 2, 2, sh);
    Var *a = op_cross_entropy(&t.c, x, labels);
    int32_t keep[6];
    memcpy(keep, labels, sizeof keep);
    for (int i = 0; i < 6; i++) labels[i] = 99; /* the node must not read the caller's buffer again */
    Var *bb = op_cross_entropy(&t.c, x, keep);
    Var *loss = op_scale(&t.c, op_add(&t.c, a, bb), 1.5, 0.0);
    CHECK_VAR(loss);
    if (loss) {
        CHECK_OK(tape_backward(&t.c, loss));
        double x64[24], g64[24];
        for (int i = 0; i < 24; i++) x64[i] = ((float *)x->v.data)[i];
        ref_cross_entropy_grad(x64, B, K, keep, g64);
        for (int i = 0; i < 24; i++) g64[i] *= 3.0;
        double e = compare_f32_f64("2 x 1.5 x d CE", x->g.data, g64, 24, 1e-6, 1e-6);
        CHECK(e <= 1e-6, "two losses, upstream 1.5: gradient rel err %.3g", e);
        printf("  accumulation (two losses, upstream 1.5), labels copied: gradient rel err %.2e\n", e);
    }
    tctx_free(&t);
}

static void test_threads(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {17};
    const int64_t B = 257, K = 37;
    int64_t sh[2] = {B, K};
    int32_t *labels = malloc((size_t)B * sizeof(int32_t));
    for (int64_t i = 0; i < B; i++) labels[i] = (int32_t)(trng_uniform(&r) * (double)K);
    float *vals = malloc((size_t)(B * K) * 4);
    trng_fill_f32(&r, vals, B * K, -5, 5);
    float loss[2];
    float *g[2] = {malloc((size_t)(B * K) * 4), malloc((size_t)(B * K) * 4)};
    int th = parallel_threads();
    for (int k = 0; k < 2; k++) {
        parallel_set_threads(k ? 3 : 1);
        tctx_reset(&t);
        Var *x = tvar_from(&t, vals, true, 2, sh);
        Var *y = op_cross_entropy(&t.c, x, labels);
        CHECK_VAR(y);
        if (!y) break;
        CHECK_OK(tape_backward(&t.c, y));
        loss[k] = ((float *)y->v.data)[0];
        memcpy(g[k], x->g.data, (size_t)(B * K) * 4);
    }
    parallel_set_threads(th);
    CHECK(memcmp(&loss[0], &loss[1], 4) == 0 && memcmp(g[0], g[1], (size_t)(B * K) * 4) == 0,
          "cross entropy differs between 1 and 3 threads");
    free(g[0]);
    free(g[1]);
    free(vals);
    free(labels);
    tctx_free(&t);
}

static void test_meta(void) {
    Arena arena;
    arena_init(&arena, 1 << 16, 0);
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&arena, &tape, DEVICE_META);
    int64_t sh[2] = {8, 10};
    Var *x = var_new(&c, DTYPE_F32, 2, sh);
    x->requires_grad = true;
    int32_t labels[8] = {0, 1, 2, 3, 4, 5, 6, 9};
    Var *y = op_cross_entropy(&c, x, labels);
    CHECK(y && y->v.ndim == 0 && y->v.data == NULL && tape.n == 1, "meta cross entropy: shape () without data");
    tape_free(&tape);
    arena_free(&arena);
}

static void test_errors(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {3};
    int64_t sh[2] = {4, 7}, sh3[3] = {4, 7, 1}, sh0[2] = {0, 7};
    Var *x = tvar_rand(&t, &r, true, -1, 1, 2, sh);
    int32_t bad[4] = {1, 0, 7, 2};
    CHECK(op_cross_entropy(&t.c, x, bad) == NULL && strstr(addc_error_message(), "label 7 of row 2") &&
              strstr(addc_error_message(), "7 classes"),
          "label 7 of 7 classes: %s", addc_error_message());
    addc_error_clear();
    bad[2] = 2;
    bad[3] = -1;
    CHECK(op_cross_entropy(&t.c, x, bad) == NULL && strstr(addc_error_message(), "label -1 of row 3"),
          "negative label: %s", addc_error_message());
    addc_error_clear();
    CHECK(op_cross_entropy(&t.c, x, NULL) == NULL && strstr(addc_error_message(), "no labels"), "NULL labels: %s",
          addc_error_message());
    addc_error_clear();
    int32_t ok[4] = {0, 1, 2, 3};
    Var *x3 = tvar_rand(&t, &r, true, -1, 1, 3, sh3);
    CHECK(op_cross_entropy(&t.c, x3, ok) == NULL && strstr(addc_error_message(), "(B, K)"), "3-D logits: %s",
          addc_error_message());
    addc_error_clear();
    Var *x0 = var_new(&t.nt, DTYPE_F32, 2, sh0);
    CHECK(op_cross_entropy(&t.c, x0, ok) == NULL, "an empty batch must be refused");
    addc_error_clear();
    CHECK(op_cross_entropy(&t.c, NULL, ok) == NULL, "a NULL input passes through as NULL");
    tctx_free(&t);
}

int main(void) {
    run_case("xent (1, 1)", 1, 1, 3.0, 1);
    run_case("xent (5, 7)", 5, 7, 3.0, 2);
    run_case("xent (64, 10)", 64, 10, 3.0, 3);
    run_case("xent (3, 1000) wide", 3, 1000, 3.0, 4);
    run_case("xent (16, 10) logits 1e4", 16, 10, 1e4, 5);
    test_large_logits();
    test_accumulate_and_copy();
    test_threads();
    test_meta();
    test_errors();
    return test_main_end("test_xent");
}
