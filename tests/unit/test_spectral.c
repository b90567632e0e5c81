/* Spectral normalisation: the op as a pure function of w (update = false) through check_op
 * (forward, backward vs finite differences, create-graph first and second order); the power
 * iteration's u, v against an f64 reference; the node keeping u, v as its forward used them;
 * no second update when a checkpointed region recomputes; the same bits on 1 and 3 threads;
 * argument errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "tests/ref_spectral.h"
#include "tests/test_util.h"

#define SN_MAX 512

typedef struct {
    int32_t ndim;
    int64_t shape[4];
    int64_t rows, cols;
    float u[SN_MAX], v[SN_MAX]; /* (rows), (cols): the op's state */
    double u64[SN_MAX], v64[SN_MAX];
    Tensor tu, tv;
} SnCase;

static void sn_case_init(SnCase *s, int32_t ndim, const int64_t *shape) {
    memset(s, 0, sizeof *s);
    s->ndim = ndim;
    memcpy(s->shape, shape, (size_t)ndim * 8);
    s->rows = shape[0];
    s->cols = 1;
    for (int i = 1; i < ndim; i++) s->cols *= shape[i];
    s->tu = tensor_make(s->u, DTYPE_F32, DEVICE_CPU, 1, &s->rows);
    s->tv = tensor_make(s->v, DTYPE_F32, DEVICE_CPU, 1, &s->cols);
}

/* random unit u, v as f32, with their f64 copies */
static void sn_state_random(SnCase *s, TestRng *r) {
    double nu = 0, nv = 0;
    for (int64_t i = 0; i < s->rows; i++) {
        s->u64[i] = trng_normal(r);
        nu += s->u64[i] * s->u64[i];
    }
    for (int64_t i = 0; i < s->cols; i++) {
        s->v64[i] = trng_normal(r);
        nv += s->v64[i] * s->v64[i];
    }
    for (int64_t i = 0; i < s->rows; i++) s->u64[i] = s->u[i] = (float)(s->u64[i] / sqrt(nu));
    for (int64_t i = 0; i < s->cols; i++) s->v64[i] = s->v[i] = (float)(s->v64[i] / sqrt(nv));
}

static void to_f64(const float *x, double *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i];
}

/* ---- check_op: update = false, u and v set to a few f64 power iterations on w ---- */

static Var *build_sn_pure(Ctx *c, Var **in, void *user) {
    SnCase *s = user;
    if (in[0]->v.device != DEVICE_CUDA) return op_spectral_norm(c, in[0], &s->tu, &s->tv, 1, 1e-12, false);
    /* check_op's device mode: the state goes to the GPU with the weight (update = false leaves it) */
    Tensor *du = ctx_alloc(c, sizeof *du), *dv = ctx_alloc(c, sizeof *dv); /* the node keeps the pointers */
    if (!du || !dv) return NULL;
    *du = s->tu;
    *dv = s->tv;
    du->device = dv->device = DEVICE_CUDA;
    du->data = ctx_dev_alloc(c, tensor_nbytes(&s->tu));
    dv->data = ctx_dev_alloc(c, tensor_nbytes(&s->tv));
    if (!du->data || !dv->data ||
        cuda_copy_to_device(du->data, s->tu.data, (size_t)tensor_nbytes(&s->tu)) != ADDC_OK ||
        cuda_copy_to_device(dv->data, s->tv.data, (size_t)tensor_nbytes(&s->tv)) != ADDC_OK)
        return NULL;
    return op_spectral_norm(c, in[0], du, dv, 1, 1e-12, false);
}

static void ref_sn_pure(double *const *in, double *out, void *user) {
    SnCase *s = user;
    ref_spectral_norm(in[0], s->rows, s->cols, s->u64, s->v64, out);
}

static void check_pure(const char *name, int32_t ndim, const int64_t *shape, uint64_t seed) {
    SnCase *s = malloc(sizeof *s);
    sn_case_init(s, ndim, shape);
    TestRng r = {seed};
    int64_t n = s->rows * s->cols;
    float *w = malloc((size_t)n * 4);
    double *w64 = malloc((size_t)n * 8);
    trng_fill_f32(&r, w, n, -1, 1);
    to_f64(w, w64, n);
    sn_state_random(s, &r);
    ref_power_iteration(w64, s->rows, s->cols, s->u64, s->v64, 3, 1e-12);
    for (int64_t i = 0; i < s->rows; i++) s->u64[i] = s->u[i] = (float)s->u64[i];
    for (int64_t i = 0; i < s->cols; i++) s->v64[i] = s->v[i] = (float)s->v64[i];
    OpCheck oc = {.name = name, .n_in = 1, .ndim = {ndim}, .build = build_sn_pure, .ref = ref_sn_pure,
                  .user = s, .graph = true, .fixed = {w}, .seed = seed + 1000};
    memcpy(oc.shape[0], shape, (size_t)ndim * 8);
    float u0[SN_MAX], v0[SN_MAX];
    memcpy(u0, s->u, sizeof u0);
    memcpy(v0, s->v, sizeof v0);
    check_op(&oc);
    CHECK(memcmp(u0, s->u, sizeof u0) == 0 && memcmp(v0, s->v, sizeof v0) == 0,
          "%s: update = false must leave u, v alone", name);
    free(w);
    free(w64);
    free(s);
}

static void test_check_op(void) {
    int64_t lin[] = {5, 7}, c1[] = {6, 3, 4}, c2[] = {4, 3, 3, 2}, col[] = {8, 1};
    check_pure("spectral_norm linear (5, 7)", 2, lin, 11);
    check_pure("spectral_norm conv1d (6, 3, 4)", 3, c1, 12);
    check_pure("spectral_norm conv2d (4, 3, 3, 2)", 4, c2, 13);
    check_pure("spectral_norm one column (8, 1)", 2, col, 14);
}

/* ---- power iteration in the op vs f64 ---- */

static double max_rel(const float *a, const double *b, int64_t n) {
    double m = 1e-12, e = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(b[i]));
    for (int64_t i = 0; i < n; i++) e = fmax(e, fabs(a[i] - b[i]));
    return e / m;
}

static void test_power_iteration(void) {
    int64_t shape[] = {6, 2, 5};
    SnCase *s = malloc(sizeof *s);
    sn_case_init(s, 3, shape);
    TestRng r = {21};
    TestCtx t;
    tctx_init(&t);
    Var *w = tvar_rand(&t, &r, true, -1, 1, 3, shape);
    int64_t n = s->rows * s->cols;
    double *w64 = malloc((size_t)n * 8), *y64 = malloc((size_t)n * 8);
    to_f64(w->v.data, w64, n);
    sn_state_random(s, &r);
    double eu = 0, ev = 0, ey = 0;
    /* three forwards of one iteration, then one of three: the state after each vs f64 */
    int iters[] = {1, 1, 1, 3};
    for (int f = 0; f < 4; f++) {
        Var *y = op_spectral_norm(&t.c, w, &s->tu, &s->tv, iters[f], 1e-12, true);
        CHECK_VAR(y);
        if (!y) break;
        ref_power_iteration(w64, s->rows, s->cols, s->u64, s->v64, iters[f], 1e-12);
        ref_spectral_norm(w64, s->rows, s->cols, s->u64, s->v64, y64);
        eu = fmax(eu, max_rel(s->u, s->u64, s->rows));
        ev = fmax(ev, max_rel(s->v, s->v64, s->cols));
        ey = fmax(ey, max_rel(y->v.data, y64, n));
    }
    printf("  power iteration (6, 2, 5), 6 iterations: u err %.2e  v err %.2e  y err %.2e\n", eu, ev, ey);
    CHECK(eu < 1e-5 && ev < 1e-5 && ey < 1e-5, "power iteration: u %.3g v %.3g y %.3g vs f64", eu, ev, ey);
    /* n_iter = 0 with update: the state is used as is */
    float u0[SN_MAX];
    memcpy(u0, s->u, sizeof u0);
    Var *y0 = op_spectral_norm(&t.nt, w, &s->tu, &s->tv, 0, 1e-12, true);
    CHECK(y0 && memcmp(u0, s->u, (size_t)s->rows * 4) == 0, "n_iter = 0 must not move u");
    /* no tape: the state still updates (a discriminator forward without a tape in eval code) */
    Var *y1 = op_spectral_norm(&t.nt, w, &s->tu, &s->tv, 1, 1e-12, true);
    ref_power_iteration(w64, s->rows, s->cols, s->u64, s->v64, 1, 1e-12);
    CHECK(y1 && max_rel(s->u, s->u64, s->rows) < 1e-5, "untaped forward with update must update u");
    tctx_free(&t);
    free(w64);
    free(y64);
    free(s);
}

/* ---- the node keeps u, v of its own forward ---- */

static void test_saved_state(void) {
    int64_t shape[] = {5, 9};
    SnCase *s = malloc(sizeof *s);
    sn_case_init(s, 2, shape);
    TestRng r = {31};
    TestCtx t;
    tctx_init(&t);
    Var *w = tvar_rand(&t, &r, true, -1, 1, 2, shape);
    int64_t n = 45;
    double w64[45], dy64[45], dw64[45];
    float dy[45];
    to_f64(w->v.data, w64, n);
    trng_fill_f32(&r, dy, n, -1, 1);
    to_f64(dy, dy64, n);
    sn_state_random(s, &r);
    Var *y1 = op_spectral_norm(&t.c, w, &s->tu, &s->tv, 1, 1e-12, true);
    ref_power_iteration(w64, 5, 9, s->u64, s->v64, 1, 1e-12);
    double u1[5], v1[9];
    memcpy(u1, s->u64, sizeof u1);
    memcpy(v1, s->v64, sizeof v1);
    /* a second forward moves the state on (a second head call in the same step) */
    Var *y2 = op_spectral_norm(&t.c, w, &s->tu, &s->tv, 1, 1e-12, true);
    CHECK(y1 && y2, "forwards failed: %s", addc_error_message());
    if (y1 && y2) {
        double moved = 0;
        for (int i = 0; i < 5; i++) moved = fmax(moved, fabs(s->u[i] - u1[i]));
        CHECK(moved > 1e-4, "the second forward should move u (moved %.3g)", moved);
        Tensor seed = tensor_make(dy, DTYPE_F32, DEVICE_CPU, 2, shape);
        CHECK_OK(tape_backward_seed(&t.c, y1, &seed));
        ref_spectral_norm_grad(w64, 5, 9, u1, v1, dy64, dw64);
        double e = compare_f32_f64("saved state dw", w->g.data, dw64, n, 1e-5, 1e-6);
        printf("  backward of the first of two forwards: dw err %.2e\n", e);
        CHECK(e < 1e-5, "the backward must use the forward's own u, v: err %.3g", e);
    }
    tctx_free(&t);
    free(s);
}

/* ---- checkpointed region: the recompute does not update u, v again ---- */

static Var *region_sn(Ctx *c, Var *const *in, int n_in, void *user) {
    (void)n_in;
    SnCase *s = user;
    return op_scale(c, op_spectral_norm(c, in[0], &s->tu, &s->tv, 1, 1e-12, true), 3.0, 0.0);
}

static void test_checkpoint(void) {
    int64_t shape[] = {4, 6};
    SnCase *s = malloc(sizeof *s);
    sn_case_init(s, 2, shape);
    TestRng r = {41};
    TestCtx t;
    tctx_init(&t);
    Var *w = tvar_rand(&t, &r, true, -1, 1, 2, shape);
    double w64[24], dy64[24], dw64[24];
    float dy[24];
    to_f64(w->v.data, w64, 24);
    trng_fill_f32(&r, dy, 24, -1, 1);
    for (int i = 0; i < 24; i++) dy64[i] = 3.0 * dy[i];
    sn_state_random(s, &r);
    Var *y = op_checkpoint(&t.c, region_sn, s, &w, 1);
    CHECK_VAR(y);
    ref_power_iteration(w64, 4, 6, s->u64, s->v64, 1, 1e-12);
    float u1[4];
    memcpy(u1, s->u, sizeof u1);
    if (y) {
        Tensor seed = tensor_make(dy, DTYPE_F32, DEVICE_CPU, 2, shape);
        CHECK_OK(tape_backward_seed(&t.c, y, &seed));
        CHECK(memcmp(u1, s->u, sizeof u1) == 0, "the checkpoint recompute must not update u again");
        ref_spectral_norm_grad(w64, 4, 6, s->u64, s->v64, dy64, dw64);
        double e = compare_f32_f64("checkpoint dw", w->g.data, dw64, 24, 1e-5, 1e-6);
        printf("  checkpointed region: dw err %.2e\n", e);
        CHECK(e < 1e-5, "checkpointed spectral norm gradient err %.3g", e);
    }
    tctx_free(&t);
    free(s);
}

/* forward (with update) and backward give the same bits on 1 and 3 threads */
static void test_threads(void) {
    int64_t shape[] = {64, 3, 200}, rows = 64, cols = 600, n = 64 * 600;
    float *res[2][4]; /* u, v, y, dw per run */
    for (int run = 0; run < 2; run++) {
        TestRng r = {61};
        TestCtx t;
        tctx_init(&t);
        Var *w = tvar_rand(&t, &r, true, -1, 1, 3, shape);
        float *dy = malloc((size_t)n * 4), *u = calloc((size_t)rows, 4), *v = calloc((size_t)cols, 4);
        trng_fill_f32(&r, dy, n, -1, 1);
        for (int64_t i = 0; i < rows; i++) u[i] = (float)trng_normal(&r) / 8.0f;
        Tensor tu = tensor_make(u, DTYPE_F32, DEVICE_CPU, 1, &rows);
        Tensor tv = tensor_make(v, DTYPE_F32, DEVICE_CPU, 1, &cols);
        int th = parallel_threads();
        parallel_set_threads(run ? 3 : 1);
        Var *y = op_spectral_norm(&t.c, w, &tu, &tv, 2, 1e-12, true);
        Tensor seed = tensor_make(dy, DTYPE_F32, DEVICE_CPU, 3, shape);
        Status st = y ? tape_backward_seed(&t.c, y, &seed) : addc_error_status();
        parallel_set_threads(th);
        CHECK_OK(st);
        res[run][0] = u;
        res[run][1] = v;
        res[run][2] = calloc((size_t)n, 4);
        res[run][3] = calloc((size_t)n, 4);
        if (st == ADDC_OK) {
            memcpy(res[run][2], y->v.data, (size_t)n * 4);
            memcpy(res[run][3], w->g.data, (size_t)n * 4);
        }
        free(dy);
        tctx_free(&t);
    }
    size_t bytes[4] = {(size_t)rows * 4, (size_t)cols * 4, (size_t)n * 4, (size_t)n * 4};
    const char *what[4] = {"u", "v", "y", "dw"};
    for (int k = 0; k < 4; k++) {
        CHECK(memcmp(res[0][k], res[1][k], bytes[k]) == 0, "spectral norm %s differs between 1 and 3 threads", what[k]);
        free(res[0][k]);
        free(res[1][k]);
    }
}

static void test_errors(void) {
    int64_t shape[] = {4, 6}, bad = 5;
    SnCase *s = malloc(sizeof *s);
    sn_case_init(s, 2, shape);
    TestRng r = {51};
    TestCtx t;
    tctx_init(&t);
    Var *w = tvar_rand(&t, &r, true, -1, 1, 2, shape);
    Tensor tu = tensor_make(s->u, DTYPE_F32, DEVICE_CPU, 1, &bad);
    Var *y = op_spectral_norm(&t.c, w, &tu, &s->tv, 1, 1e-12, true);
    CHECK(y == NULL && strstr(addc_error_message(), "u state"), "a u of the wrong size must be refused: %s",
          addc_error_message());
    addc_error_clear();
    y = op_spectral_norm(&t.c, w, &s->tu, &s->tv, 1, 0.0, true);
    CHECK(y == NULL, "eps = 0 must be refused");
    addc_error_clear();
    CHECK(op_spectral_norm(&t.c, NULL, &s->tu, &s->tv, 1, 1e-12, true) == NULL, "NULL w propagates");
    addc_error_clear();
    tctx_free(&t);
    free(s);
}

int main(void) {
    test_check_op();
    test_power_iteration();
    test_saved_state();
    test_checkpoint();
    test_threads();
    test_errors();
    return test_main_end("test_spectral");
}
