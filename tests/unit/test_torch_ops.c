/* Every op against PyTorch: tests/ref/fixtures/ops_<family>.bin (tests/ref/make_fixtures.py).
 *
 * Each fixture case "<op>:<variant>" holds the inputs in addc layout (in<i>, absent = NULL), the
 * op's parameters (p), an upstream gradient (dy), torch's output (out) and the gradient of every
 * differentiated input (g<i>; its presence marks the input as requiring grad). The op runs on the
 * CPU backend with a tape, the backward is seeded with dy, and output and gradients are compared
 * as max |addc - torch| / max |torch| (tolerance 1e-4 unless the op's entry below says otherwise).
 * The whole set runs twice: with the default thread count and with 3 threads. The test also
 * fails when some op (other than the checkpoint) has no fixture case. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

#define TOL_DEFAULT 1e-4
#define MAX_IN 4

typedef Var *(*CaseBuildFn)(Ctx *c, Var **in, const float *p, int64_t np);

static Var *b_add(Ctx *c, Var **in, const float *p, int64_t np) { return op_add(c, in[0], in[1]); }
static Var *b_sub(Ctx *c, Var **in, const float *p, int64_t np) { return op_sub(c, in[0], in[1]); }
static Var *b_mul(Ctx *c, Var **in, const float *p, int64_t np) { return op_mul(c, in[0], in[1]); }
static Var *b_div(Ctx *c, Var **in, const float *p, int64_t np) { return op_div(c, in[0], in[1]); }
static Var *b_scale(Ctx *c, Var **in, const float *p, int64_t np) { return op_scale(c, in[0], p[0], p[1]); }
static Var *b_rsqrt(Ctx *c, Var **in, const float *p, int64_t np) { return op_rsqrt(c, in[0], p[0]); }
static Var *b_cast(Ctx *c, Var **in, const float *p, int64_t np) { return op_cast(c, in[0], (DType)(int)p[0]); }

static int shape_from_params(const float *p, int64_t np, int64_t *shape) {
    for (int64_t i = 0; i < np; i++) shape[i] = (int64_t)p[i];
    return (int)np;
}
static Var *b_sum_to(Ctx *c, Var **in, const float *p, int64_t np) {
    int64_t s[TENSOR_MAX_DIMS];
    return op_sum_to(c, in[0], shape_from_params(p, np, s), s);
}
static Var *b_broadcast_to(Ctx *c, Var **in, const float *p, int64_t np) {
    int64_t s[TENSOR_MAX_DIMS];
    return op_broadcast_to(c, in[0], shape_from_params(p, np, s), s);
}
static Var *b_mean_to(Ctx *c, Var **in, const float *p, int64_t np) {
    int64_t s[TENSOR_MAX_DIMS];
    return op_mean_to(c, in[0], shape_from_params(p, np, s), s);
}
static Var *b_reshape(Ctx *c, Var **in, const float *p, int64_t np) {
    int64_t s[TENSOR_MAX_DIMS];
    return op_reshape(c, in[0], shape_from_params(p, np, s), s);
}
static Var *b_sum(Ctx *c, Var **in, const float *p, int64_t np) { return op_sum(c, in[0]); }
static Var *b_mean(Ctx *c, Var **in, const float *p, int64_t np) { return op_mean(c, in[0]); }
static Var *b_mean_square(Ctx *c, Var **in, const float *p, int64_t np) { return op_mean_square(c, in[0]); }

static Var *b_silu(Ctx *c, Var **in, const float *p, int64_t np) { return op_silu(c, in[0]); }
static Var *b_gelu(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_gelu(c, in[0], p[0] != 0 ? GELU_TANH : GELU_ERF);
}
static Var *b_geglu(Ctx *c, Var **in, const float *p, int64_t np) { return op_geglu(c, in[0]); }
static Var *b_leaky_relu(Ctx *c, Var **in, const float *p, int64_t np) { return op_leaky_relu(c, in[0], p[0]); }
static Var *b_relu(Ctx *c, Var **in, const float *p, int64_t np) { return op_relu(c, in[0]); }
static Var *b_hinge(Ctx *c, Var **in, const float *p, int64_t np) { return op_hinge(c, in[0], p[0]); }

static Var *b_matmul(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_matmul(c, in[0], in[1], p[0] != 0, p[1] != 0);
}
static Var *b_linear(Ctx *c, Var **in, const float *p, int64_t np) { return op_linear(c, in[0], in[1], in[2]); }

static Var *b_conv2d(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_conv2d(c, in[0], in[1], in[2], (int)p[0], (int)p[1]);
}
static Var *b_conv1d(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_conv1d(c, in[0], in[1], in[2], p[0] != 0 ? PAD_CIRCULAR : PAD_ZEROS);
}
static Var *b_conv1d_t(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_conv1d_t(c, in[0], in[1], p[0] != 0 ? PAD_CIRCULAR : PAD_ZEROS);
}

static Var *b_group_norm(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_group_norm(c, in[0], in[1], in[2], (int)p[0], p[1]);
}
static Var *b_layer_norm(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_layer_norm(c, in[0], in[1], in[2], p[0]);
}
static Var *b_batch_norm_local(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_batch_norm_local(c, in[0], in[1], in[2], (int)p[0], p[1]);
}

static Var *b_softmax(Ctx *c, Var **in, const float *p, int64_t np) { return op_softmax(c, in[0]); }
static Var *b_attention(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_attention(c, in[0], in[1], in[2], (int)p[0], p[1], p[2] != 0);
}

static Var *b_concat(Ctx *c, Var **in, const float *p, int64_t np) { return op_concat(c, in[0], in[1], (int)p[0]); }
static Var *b_slice(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_slice(c, in[0], (int)p[0], (int64_t)p[1], (int64_t)p[2]);
}
static Var *b_permute(Ctx *c, Var **in, const float *p, int64_t np) {
    int32_t perm[TENSOR_MAX_DIMS];
    for (int64_t i = 0; i < np; i++) perm[i] = (int32_t)p[i];
    return op_permute(c, in[0], perm);
}
static Var *b_upsample(Ctx *c, Var **in, const float *p, int64_t np) { return op_upsample_nearest2x(c, in[0]); }
static Var *b_resize_area(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_resize_area(c, in[0], (int64_t)p[0], (int64_t)p[1]);
}
static Var *b_resize_bicubic(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_resize_bicubic(c, in[0], (int64_t)p[0], (int64_t)p[1]);
}

static Var *b_timestep_embedding(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_timestep_embedding(c, in[0], (int)p[0], p[1] != 0, p[2], p[3]);
}
/* ids are stored as floats; p[0] picks i32 (0) or i64 (1) */
static Var *b_embedding(Ctx *c, Var **in, const float *p, int64_t np) {
    DType dt = p[0] != 0 ? DTYPE_I64 : DTYPE_I32;
    Var *ids = var_new(c, dt, in[0]->v.ndim, in[0]->v.shape);
    if (!ids) return NULL;
    dtype_convert(ids->v.data, dt, in[0]->v.data, DTYPE_F32, tensor_numel(&ids->v));
    return op_embedding(c, ids, in[1]);
}
/* in[1], in[2] are the power-iteration state u, v (updated in place when training) */
static Var *b_spectral_norm(Ctx *c, Var **in, const float *p, int64_t np) {
    return op_spectral_norm(c, in[0], &in[1]->v, &in[2]->v, (int)p[0], p[1], p[2] != 0);
}

/* labels are stored as floats in in1 */
static Var *b_cross_entropy(Ctx *c, Var **in, const float *p, int64_t np) {
    int64_t B = in[1]->v.shape[0];
    int32_t *labels = ctx_alloc(c, B * (int64_t)sizeof(int32_t));
    if (!labels) return NULL;
    for (int64_t b = 0; b < B; b++) labels[b] = (int32_t)((const float *)in[1]->v.data)[b];
    return op_cross_entropy(c, in[0], labels);
}

typedef struct CaseOp {
    const char *op; /* the op name (op_info) or a composite ("mean_to") */
    CaseBuildFn build;
    double tol;     /* 0 = TOL_DEFAULT */
} CaseOp;

static const CaseOp case_ops[] = {
    {"add", b_add, 0},
    {"sub", b_sub, 0},
    {"mul", b_mul, 0},
    {"div", b_div, 0},
    {"scale", b_scale, 0},
    {"rsqrt", b_rsqrt, 0},
    {"cast", b_cast, 0},
    {"sum_to", b_sum_to, 0},
    {"broadcast_to", b_broadcast_to, 0},
    {"mean_to", b_mean_to, 0},
    {"sum", b_sum, 0},
    {"mean", b_mean, 0},
    {"mean_square", b_mean_square, 0},
    {"reshape", b_reshape, 0},
    {"silu", b_silu, 0},
    {"gelu", b_gelu, 0},
    {"geglu", b_geglu, 0},
    {"leaky_relu", b_leaky_relu, 0},
    {"relu", b_relu, 0},
    {"hinge", b_hinge, 0},
    {"matmul", b_matmul, 0},
    {"linear", b_linear, 0},
    {"conv2d", b_conv2d, 0},
    {"conv1d", b_conv1d, 0},
    {"conv1d_t", b_conv1d_t, 0},
    {"group_norm", b_group_norm, 0},
    {"layer_norm", b_layer_norm, 0},
    {"batch_norm_local", b_batch_norm_local, 0},
    {"softmax", b_softmax, 0},
    {"attention", b_attention, 0},
    {"concat", b_concat, 0},
    {"slice", b_slice, 0},
    {"permute", b_permute, 0},
    {"upsample_nearest2x", b_upsample, 0},
    {"resize_area", b_resize_area, 0},
    {"resize_bicubic", b_resize_bicubic, 0},
    {"timestep_embedding", b_timestep_embedding, 0},
    {"embedding", b_embedding, 0},
    {"spectral_norm", b_spectral_norm, 0},
    {"cross_entropy", b_cross_entropy, 0},
};
#define N_CASE_OPS ((int)(sizeof case_ops / sizeof case_ops[0]))

static const char *families[] = {"elementwise", "reduce", "act",   "matmul",   "conv",
                                 "norm",        "attention", "shape", "embed", "spectral", "xent"};

/* per-op results over all cases */
typedef struct OpResult {
    int cases, failed;
    double max_err;
} OpResult;
static OpResult results[N_CASE_OPS];

static const CaseOp *case_op_find(const char *case_name, int *idx) {
    const char *colon = strchr(case_name, ':');
    size_t len = colon ? (size_t)(colon - case_name) : strlen(case_name);
    for (int i = 0; i < N_CASE_OPS; i++)
        if (strlen(case_ops[i].op) == len && strncmp(case_ops[i].op, case_name, len) == 0) {
            *idx = i;
            return &case_ops[i];
        }
    return NULL;
}

static const FixTensor *fix_part(const Fixture *f, const char *case_name, const char *part) {
    char nm[160];
    snprintf(nm, sizeof nm, "%s/%s", case_name, part);
    return fixture_get(f, nm);
}

static bool same_shape(const Tensor *t, const FixTensor *r) {
    if (t->ndim != r->ndim) return false;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] != r->shape[d]) return false;
    return true;
}

/* compares got against the reference tensor; returns the relative error (INFINITY on a shape
 * mismatch or a missing buffer) */
static double compare_part(const char *case_name, const char *part, const float *got, const Tensor *shape,
                           const FixTensor *ref, double tol, bool verbose) {
    char label[200];
    snprintf(label, sizeof label, "%s %s", case_name, part);
    if (!got) {
        fprintf(stderr, "  %s: no value (gradient never written)\n", label);
        return INFINITY;
    }
    if (shape && !same_shape(shape, ref)) {
        char buf[96], rbuf[96];
        Tensor rt = tensor_make(NULL, DTYPE_F32, DEVICE_CPU, ref->ndim, ref->shape);
        fprintf(stderr, "  %s: shape %s, torch has %s\n", label, tensor_shape_str(shape, buf, sizeof buf),
                tensor_shape_str(&rt, rbuf, sizeof rbuf));
        return INFINITY;
    }
    return compare_f32(verbose ? label : NULL, got, ref->data, ref->numel, tol, 1e-6);
}

/* Runs one case; returns false on failure. */
static bool run_case(TestCtx *tc, const Fixture *f, const char *case_name, bool verbose) {
    int oi;
    const CaseOp *co = case_op_find(case_name, &oi);
    CHECK(co != NULL, "%s: no builder for this op in test_torch_ops.c", case_name);
    if (!co) return false;
    double tol = co->tol > 0 ? co->tol : TOL_DEFAULT;
    tctx_reset(tc);
    const FixTensor *pt = fix_part(f, case_name, "p"), *dyt = fix_part(f, case_name, "dy");
    const FixTensor *outt = fix_part(f, case_name, "out");
    if (!pt || !dyt || !outt) {
        CHECK(0, "%s: fixture lacks p, dy or out", case_name);
        return false;
    }
    Var *in[MAX_IN] = {0};
    const FixTensor *gref[MAX_IN] = {0};
    for (int i = 0; i < MAX_IN; i++) {
        char part[16];
        snprintf(part, sizeof part, "in%d", i);
        const FixTensor *xt = fix_part(f, case_name, part);
        snprintf(part, sizeof part, "g%d", i);
        gref[i] = fix_part(f, case_name, part);
        if (xt) in[i] = tvar_from(tc, xt->data, gref[i] != NULL, xt->ndim, xt->shape);
    }
    Var *y = co->build(&tc->c, in, pt->data, pt->numel);
    CHECK(y != NULL, "%s: op failed: %s", case_name, addc_error_message());
    addc_error_clear();
    if (!y) {
        if (verbose) printf("  %-40s FAILED (no result)\n", case_name);
        results[oi].cases++;
        results[oi].failed++;
        results[oi].max_err = INFINITY;
        return false;
    }

    const float *yv = y->v.data;
    float *conv = NULL;
    if (y->v.dtype != DTYPE_F32) {
        conv = malloc((size_t)tensor_numel(&y->v) * 4 + 4);
        dtype_convert(conv, DTYPE_F32, y->v.data, y->v.dtype, tensor_numel(&y->v));
        yv = conv;
    }
    char line[512];
    int ln = 0;
    double worst = compare_part(case_name, "out", yv, &y->v, outt, tol, verbose);
    ln += snprintf(line + ln, sizeof line - (size_t)ln, "out %.1e", worst);
    free(conv);

    /* state written in place (spectral_norm's u and v) */
    static const char *const state[][2] = {{"out_u", "u"}, {"out_v", "v"}};
    for (int s = 0; s < 2; s++) {
        const FixTensor *st = fix_part(f, case_name, state[s][0]);
        if (!st) continue;
        Var *holder = in[1 + s];
        double e = holder ? compare_part(case_name, state[s][0], holder->v.data, &holder->v, st, tol, verbose)
                          : INFINITY;
        ln += snprintf(line + ln, sizeof line - (size_t)ln, "  %s %.1e", state[s][1], e);
        if (e > worst) worst = e;
    }

    bool any_grad = false;
    for (int i = 0; i < MAX_IN; i++) any_grad = any_grad || gref[i];
    if (any_grad) {
        Tensor seed = tensor_make(dyt->data, DTYPE_F32, DEVICE_CPU, dyt->ndim, dyt->shape);
        Status st = tape_backward_seed(&tc->c, y, &seed);
        CHECK(st == ADDC_OK, "%s: backward failed: %s", case_name, addc_error_message());
        addc_error_clear();
        for (int i = 0; i < MAX_IN; i++) {
            if (!gref[i]) continue;
            char part[16];
            snprintf(part, sizeof part, "g%d", i);
            double e = st == ADDC_OK ? compare_part(case_name, part, in[i]->g.data, &in[i]->v, gref[i], tol, verbose)
                                     : INFINITY;
            ln += snprintf(line + ln, sizeof line - (size_t)ln, "  %s %.1e", part, e);
            if (e > worst) worst = e;
        }
    }
    bool ok = worst <= tol;
    CHECK(ok, "%s: max rel err %.3g > %.3g (%s)", case_name, worst, tol, line);
    if (verbose) printf("  %-40s %s%s\n", case_name, line, ok ? "" : "   FAILED");
    results[oi].cases++;
    results[oi].failed += !ok;
    if (worst > results[oi].max_err || isnan(worst)) results[oi].max_err = worst;
    return ok;
}

static void run_all(bool verbose) {
    TestCtx tc;
    tctx_init(&tc);
    for (size_t fi = 0; fi < sizeof families / sizeof families[0]; fi++) {
        char name[64];
        snprintf(name, sizeof name, "ops_%s", families[fi]);
        Fixture f;
        bool loaded = fixture_load(name, &f);
        CHECK(loaded, "fixture %s missing or malformed", name);
        if (!loaded) continue;
        if (verbose) printf("%s\n", name);
        for (int i = 0; i < f.n; i++) {
            const char *nm = f.t[i].name;
            size_t len = strlen(nm);
            if (len < 4 || strcmp(nm + len - 4, "/out") != 0) continue;
            char case_name[128];
            snprintf(case_name, sizeof case_name, "%.*s", (int)(len - 4), nm);
            run_case(&tc, &f, case_name, verbose);
        }
        fixture_free(&f);
    }
    tctx_free(&tc);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the table in order with the mismatch lines on stderr */
    int threads = parallel_threads();
    printf("ops vs PyTorch (max |addc - torch| / max |torch| per tensor), %d threads\n", threads);
    run_all(true);

    printf("\nper op: cases, max rel err (tolerance)\n");
    for (int i = 0; i < N_CASE_OPS; i++) {
        const OpResult *r = &results[i];
        double tol = case_ops[i].tol > 0 ? case_ops[i].tol : TOL_DEFAULT;
        printf("  %-20s %2d  %.2e (%.0e)%s\n", case_ops[i].op, r->cases, r->max_err, tol,
               r->failed ? "  FAILED" : "");
    }
    for (int op = 1; op < OP_COUNT; op++) {
        int idx = -1;
        for (int i = 0; i < N_CASE_OPS; i++)
            if (strcmp(case_ops[i].op, op_name(op)) == 0) idx = i;
        CHECK(idx >= 0 && results[idx].cases > 0, "op %s has no PyTorch fixture case", op_name(op));
    }

    /* again with 3 threads (uneven splits); prints only mismatches */
    int failed_before = test_failed;
    parallel_set_threads(3);
    memset(results, 0, sizeof results);
    run_all(false);
    printf("3 threads: %s\n", test_failed == failed_before ? "all cases agree" : "mismatches (see above)");
    parallel_set_threads(threads);
    return test_main_end("test_torch_ops");
}
