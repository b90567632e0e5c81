/* Activations: forward vs f64 reference, backward vs finite differences, create-graph
 * backward (leaky_relu, relu, hinge) alone and inside a product so that second order is not
 * trivially zero; a dense sweep of the float exp/erf approximations; kink conventions; NaN
 * propagation; errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/ref_act.h"
#include "tests/test_util.h"

typedef struct {
    RefActKind kind;
    double p;
    int64_t n;      /* elements of x */
    bool times_x;   /* the op output multiplied by x again */
    int64_t d;      /* geglu: D (x has rows x 2D) */
} ActCase;

static Var *act_build_one(Ctx *c, Var *x, const ActCase *ac) {
    switch (ac->kind) {
    case REF_ACT_SILU: return op_silu(c, x);
    case REF_ACT_GELU_ERF: return op_gelu(c, x, GELU_ERF);
    case REF_ACT_GELU_TANH: return op_gelu(c, x, GELU_TANH);
    case REF_ACT_LEAKY_RELU: return op_leaky_relu(c, x, ac->p);
    case REF_ACT_RELU: return op_relu(c, x);
    default: return op_hinge(c, x, ac->p);
    }
}

static Var *build_act(Ctx *c, Var **in, void *u) {
    const ActCase *ac = u;
    Var *y = act_build_one(c, in[0], ac);
    return ac->times_x ? op_mul(c, y, in[0]) : y;
}

static void ref_act_fn(double *const *in, double *out, void *u) {
    const ActCase *ac = u;
    ref_act(ac->kind, ac->p, in[0], out, ac->n);
    if (ac->times_x)
        for (int64_t i = 0; i < ac->n; i++) out[i] *= in[0][i];
}

/* uniform values in [lo, hi) kept at least `gap` away from the kink at `kink` (finite
 * differences, first and second order, must not straddle it) */
static float *values_off_kink(int64_t n, double lo, double hi, double kink, double gap, uint64_t seed) {
    TestRng r = {seed};
    float *v = malloc((size_t)n * 4);
    for (int64_t i = 0; i < n; i++) {
        double x = trng_range(&r, lo, hi);
        if (fabs(x - kink) < gap) x = x < kink ? kink - gap - 0.01 : kink + gap + 0.01;
        v[i] = (float)x;
    }
    return v;
}

static void run_act(const char *name, RefActKind kind, double p, int32_t nd, const int64_t *shape, double lo,
                    double hi, bool graph, bool times_x) {
    ActCase ac = {.kind = kind, .p = p, .n = 1, .times_x = times_x};
    for (int i = 0; i < nd; i++) ac.n *= shape[i];
    OpCheck oc = {.name = name, .n_in = 1, .ndim = {nd}, .lo = {lo}, .hi = {hi}, .build = build_act,
                  .ref = ref_act_fn, .user = &ac, .graph = graph, .max_fd = 64};
    memcpy(oc.shape[0], shape, (size_t)nd * 8);
    float *fixed = NULL;
    if (kind == REF_ACT_LEAKY_RELU || kind == REF_ACT_RELU || kind == REF_ACT_HINGE) {
        double kink = kind == REF_ACT_HINGE ? -1.0 / p : 0.0;
        fixed = values_off_kink(ac.n, lo, hi, kink, 0.05, 99);
        oc.fixed[0] = fixed;
    }
    check_op(&oc);
    free(fixed);
}

static void test_smooth(void) {
    int64_t s3[] = {3, 5, 7}, big[] = {5, 13, 1001}, odd[] = {4099};
    run_act("silu (3,5,7)", REF_ACT_SILU, 0, 3, s3, -6, 6, false, false);
    run_act("silu (5,13,1001) threaded", REF_ACT_SILU, 0, 3, big, -8, 8, false, false);
    run_act("gelu erf (3,5,7)", REF_ACT_GELU_ERF, 0, 3, s3, -6, 6, false, false);
    run_act("gelu erf (4099)", REF_ACT_GELU_ERF, 0, 1, odd, -3, 3, false, false);
    run_act("gelu erf (5,13,1001) threaded", REF_ACT_GELU_ERF, 0, 3, big, -7, 7, false, false);
    run_act("gelu tanh (3,5,7)", REF_ACT_GELU_TANH, 0, 3, s3, -6, 6, false, false);
    run_act("gelu tanh (5,13,1001) threaded", REF_ACT_GELU_TANH, 0, 3, big, -7, 7, false, false);
}

static void test_piecewise(void) {
    int64_t s3[] = {3, 5, 7}, big[] = {5, 13, 1001}, s2[] = {6, 9};
    run_act("leaky_relu 0.2", REF_ACT_LEAKY_RELU, 0.2, 3, s3, -2, 2, true, false);
    run_act("leaky_relu 0.2 threaded", REF_ACT_LEAKY_RELU, 0.2, 3, big, -2, 2, false, false);
    run_act("leaky_relu 0.2 * x", REF_ACT_LEAKY_RELU, 0.2, 2, s2, -2, 2, true, true);
    run_act("relu", REF_ACT_RELU, 0, 3, s3, -2, 2, true, false);
    run_act("relu * x", REF_ACT_RELU, 0, 2, s2, -2, 2, true, true);
    run_act("hinge sign +1", REF_ACT_HINGE, 1.0, 3, s3, -3, 3, true, false);
    run_act("hinge sign -1", REF_ACT_HINGE, -1.0, 3, s3, -3, 3, true, false);
    run_act("hinge sign -1 * x", REF_ACT_HINGE, -1.0, 2, s2, -3, 3, true, true);
    run_act("hinge sign +1 threaded", REF_ACT_HINGE, 1.0, 3, big, -3, 3, false, false);
}

static Var *build_geglu(Ctx *c, Var **in, void *u) {
    (void)u;
    return op_geglu(c, in[0]);
}
static void ref_geglu_fn(double *const *in, double *out, void *u) {
    const ActCase *ac = u;
    ref_geglu(in[0], out, ac->n / (2 * ac->d), ac->d);
}

static void run_geglu(const char *name, int32_t nd, const int64_t *shape) {
    ActCase ac = {.n = 1, .d = shape[nd - 1] / 2};
    for (int i = 0; i < nd; i++) ac.n *= shape[i];
    OpCheck oc = {.name = name, .n_in = 1, .ndim = {nd}, .lo = {-4}, .hi = {4}, .build = build_geglu,
                  .ref = ref_geglu_fn, .user = &ac, .max_fd = 64};
    memcpy(oc.shape[0], shape, (size_t)nd * 8);
    check_op(&oc);
}

static void test_geglu(void) {
    int64_t a[] = {2, 3, 74}, b[] = {6}, big[] = {3, 40, 1282};
    run_geglu("geglu (2,3,2*37)", 3, a);
    run_geglu("geglu (2*3)", 1, b);
    run_geglu("geglu (3,40,2*641) threaded", 3, big);
}

/* the float exp/erf approximations over a dense range, including the clamped tails */
static void test_sweep(void) {
    TestCtx t;
    tctx_init(&t);
    const int64_t n = 400001;
    int64_t sh[] = {n};
    Var *x = var_new(&t.nt, DTYPE_F32, 1, sh);
    float *xd = x->v.data;
    for (int64_t i = 0; i < n; i++) xd[i] = (float)(-100.0 + 200.0 * (double)i / (double)(n - 1));
    double *ref = malloc((size_t)n * 8), *x64 = malloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++) x64[i] = xd[i];
    const struct {
        const char *name;
        RefActKind k;
    } cases[] = {{"silu", REF_ACT_SILU}, {"gelu erf", REF_ACT_GELU_ERF}, {"gelu tanh", REF_ACT_GELU_TANH}};
    for (int c = 0; c < 3; c++) {
        ActCase ac = {.kind = cases[c].k};
        Var *y = act_build_one(&t.nt, x, &ac);
        CHECK_VAR(y);
        if (!y) continue;
        ref_act(cases[c].k, 0, x64, ref, n);
        /* error relative to max(1, |y|): absolute near 0, relative for large |x| */
        double worst = 0, at = 0;
        for (int64_t i = 0; i < n; i++) {
            double e = fabs(((float *)y->v.data)[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
            if (!(e <= worst)) {
                worst = e;
                at = x64[i];
            }
        }
        printf("  sweep %-10s over [-100, 100]: max err %.2e (at x = %.4g)\n", cases[c].name, worst, at);
        CHECK(worst < 2e-6, "%s sweep: max error %.3g at x = %g", cases[c].name, worst, at);
    }
    free(ref);
    free(x64);
    tctx_free(&t);
}

/* relu'(0) = 0, leaky'(0) = slope, hinge' = 0 where 1 + s x = 0; NaN propagates */
static void test_conventions(void) {
    TestCtx t;
    tctx_init(&t);
    float xs[] = {0.0f, -0.0f, 1.0f, -1.0f};
    int64_t sh[] = {4};
    const struct {
        RefActKind k;
        double p;
        float want_g[4];
    } cases[] = {
        {REF_ACT_RELU, 0, {0, 0, 1, 0}},
        {REF_ACT_LEAKY_RELU, 0.2, {0.2f, 0.2f, 1, 0.2f}},
        {REF_ACT_HINGE, 1.0, {1, 1, 1, 0}},
        {REF_ACT_HINGE, -1.0, {-1, -1, 0, -1}},
    };
    for (int c = 0; c < 4; c++) {
        tctx_reset(&t);
        Var *x = tvar_from(&t, xs, true, 1, sh);
        ActCase ac = {.kind = cases[c].k, .p = cases[c].p};
        Var *y = act_build_one(&t.c, x, &ac);
        float ones[4] = {1, 1, 1, 1};
        Tensor seed = tensor_make(ones, DTYPE_F32, DEVICE_CPU, 1, sh);
        CHECK_OK(tape_backward_seed(&t.c, y, &seed));
        for (int i = 0; i < 4; i++)
            CHECK(((float *)x->g.data)[i] == cases[c].want_g[i],
                  "kind %d p %g: gradient at x = %g is %g, want %g", (int)cases[c].k, cases[c].p, xs[i],
                  ((float *)x->g.data)[i], cases[c].want_g[i]);
    }
    tctx_reset(&t);
    float nan_in[] = {NAN, 1.0f};
    int64_t s2[] = {2};
    Var *x = tvar_from(&t, nan_in, false, 1, s2);
    for (int k = REF_ACT_SILU; k <= REF_ACT_HINGE; k++) {
        ActCase ac = {.kind = (RefActKind)k, .p = k == REF_ACT_HINGE ? 1.0 : 0.2};
        Var *y = act_build_one(&t.nt, x, &ac);
        CHECK(y && isnan(((float *)y->v.data)[0]), "activation kind %d must propagate NaN", k);
    }
    tctx_free(&t);
}

static void test_errors(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {5};
    int64_t odd[] = {2, 5};
    Var *x = tvar_rand(&t, &r, false, -1, 1, 2, odd);
    CHECK(op_geglu(&t.c, x) == NULL && strstr(addc_error_message(), "even"), "geglu of an odd last dim: %s",
          addc_error_message());
    addc_error_clear();
    CHECK(op_gelu(&t.c, x, (GeluApprox)7) == NULL, "gelu with an unknown approximation must fail");
    addc_error_clear();
    Tensor it = tensor_make(NULL, DTYPE_I32, DEVICE_CPU, 2, odd);
    it.data = arena_calloc(&t.arena, 40);
    Var *xi = var_leaf(&t.nt, it, false);
    CHECK(op_silu(&t.c, xi) == NULL && strstr(addc_error_message(), "f32"), "silu of i32: %s",
          addc_error_message());
    addc_error_clear();
    CHECK(op_relu(&t.c, NULL) == NULL, "NULL input must propagate");
    /* silu has no create-graph backward: autograd_grad must say so */
    Var *xg = tvar_rand(&t, &r, true, -1, 1, 2, odd);
    Var *y = op_silu(&t.c, xg), *g = NULL;
    CHECK(autograd_grad(&t.c, y, NULL, &xg, 1, &g, true) != ADDC_OK && strstr(addc_error_message(), "silu"),
          "create-graph through silu must fail naming it: %s", addc_error_message());
    addc_error_clear();
    tctx_free(&t);
}

int main(void) {
    test_smooth();
    test_piecewise();
    test_geglu();
    test_sweep();
    test_conventions();
    test_errors();
    return test_main_end("test_act");
}
