/* Elementwise and reduction ops: forward vs f64 reference, backward vs finite differences,
 * create-graph backward vs plain and second order. */
#include <math.h>
#include <string.h>

#include "tests/ref_basic.h"
#include "tests/test_util.h"

typedef struct {
    int kind;
    int na, nb;
    int64_t sa[6], sb[6];
    int no;
    int64_t so[6];
    double p0, p1;
} BinCase;

static Var *build_bin(Ctx *c, Var **in, void *u) {
    BinCase *bc = u;
    switch (bc->kind) {
    case REF_ADD: return op_add(c, in[0], in[1]);
    case REF_SUB: return op_sub(c, in[0], in[1]);
    case REF_MUL: return op_mul(c, in[0], in[1]);
    default: return op_div(c, in[0], in[1]);
    }
}
static void ref_bin(double *const *in, double *out, void *u) {
    BinCase *bc = u;
    ref_binary((RefBinKind)bc->kind, in[0], bc->na, bc->sa, in[1], bc->nb, bc->sb, out, bc->no, bc->so);
}

static void run_binary(const char *name, int kind, int na, const int64_t *sa, int nb, const int64_t *sb) {
    BinCase bc = {.kind = kind, .na = na, .nb = nb};
    memcpy(bc.sa, sa, (size_t)na * 8);
    memcpy(bc.sb, sb, (size_t)nb * 8);
    bc.no = na > nb ? na : nb;
    for (int d = 0; d < bc.no; d++) {
        int da = d - (bc.no - na), db = d - (bc.no - nb);
        int64_t x = da >= 0 ? sa[da] : 1, y = db >= 0 ? sb[db] : 1;
        bc.so[d] = x == 1 ? y : x;
    }
    OpCheck oc = {.name = name, .n_in = 2, .build = build_bin, .ref = ref_bin, .user = &bc, .graph = true};
    oc.ndim[0] = na;
    oc.ndim[1] = nb;
    memcpy(oc.shape[0], sa, (size_t)na * 8);
    memcpy(oc.shape[1], sb, (size_t)nb * 8);
    if (kind == REF_DIV) {
        oc.lo[1] = 0.5;
        oc.hi[1] = 2.0;
    }
    check_op(&oc);
}

static Var *build_scale(Ctx *c, Var **in, void *u) {
    BinCase *bc = u;
    return op_scale(c, in[0], bc->p0, bc->p1);
}
static void ref_scale(double *const *in, double *out, void *u) {
    BinCase *bc = u;
    int64_t n = 1;
    for (int d = 0; d < bc->na; d++) n *= bc->sa[d];
    for (int64_t i = 0; i < n; i++) out[i] = bc->p0 * in[0][i] + bc->p1;
}
static Var *build_rsqrt(Ctx *c, Var **in, void *u) {
    BinCase *bc = u;
    return op_rsqrt(c, in[0], bc->p0);
}
static void ref_rsqrt(double *const *in, double *out, void *u) {
    BinCase *bc = u;
    int64_t n = 1;
    for (int d = 0; d < bc->na; d++) n *= bc->sa[d];
    for (int64_t i = 0; i < n; i++) out[i] = 1.0 / sqrt(in[0][i] + bc->p0);
}

static Var *build_sum_to(Ctx *c, Var **in, void *u) {
    BinCase *bc = u;
    return op_sum_to(c, in[0], bc->no, bc->so);
}
static void ref_sum_to_fn(double *const *in, double *out, void *u) {
    BinCase *bc = u;
    ref_sum_to(in[0], bc->na, bc->sa, out, bc->no, bc->so);
}
static Var *build_bcast(Ctx *c, Var **in, void *u) {
    BinCase *bc = u;
    return op_broadcast_to(c, in[0], bc->no, bc->so);
}
static void ref_bcast_fn(double *const *in, double *out, void *u) {
    BinCase *bc = u;
    ref_broadcast_to(in[0], bc->na, bc->sa, out, bc->no, bc->so);
}

static Var *build_red(Ctx *c, Var **in, void *u) {
    BinCase *bc = u;
    return bc->kind == 0 ? op_sum(c, in[0]) : bc->kind == 1 ? op_mean(c, in[0]) : op_mean_square(c, in[0]);
}
static void ref_red(double *const *in, double *out, void *u) {
    BinCase *bc = u;
    int64_t n = 1;
    for (int d = 0; d < bc->na; d++) n *= bc->sa[d];
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += bc->kind == 2 ? in[0][i] * in[0][i] : in[0][i];
    out[0] = bc->kind == 0 ? s : s / (double)n;
}

static void test_binary_ops(void) {
    int64_t s4[] = {2, 3, 4, 5}, c1[] = {5}, s41[] = {2, 1, 4, 1}, row[] = {3, 1, 5};
    const char *names[] = {"add", "sub", "mul", "div"};
    for (int k = 0; k < 4; k++) {
        char nm[64];
        snprintf(nm, sizeof nm, "%s same shape", names[k]);
        run_binary(nm, k, 4, s4, 4, s4);
        snprintf(nm, sizeof nm, "%s broadcast channel", names[k]);
        run_binary(nm, k, 4, s4, 1, c1);
        snprintf(nm, sizeof nm, "%s broadcast both", names[k]);
        run_binary(nm, k, 4, s41, 3, row);
    }
}

static void test_unary_and_reductions(void) {
    BinCase bc = {.na = 3, .sa = {3, 4, 5}, .p0 = -1.5, .p1 = 0.25};
    OpCheck oc = {.name = "scale", .n_in = 1, .ndim = {3}, .shape = {{3, 4, 5}}, .build = build_scale,
                  .ref = ref_scale, .user = &bc, .graph = true};
    check_op(&oc);
    bc.p0 = 1e-5;
    OpCheck rs = {.name = "rsqrt", .n_in = 1, .ndim = {3}, .shape = {{3, 4, 5}}, .lo = {0.2}, .hi = {3.0},
                  .build = build_rsqrt, .ref = ref_rsqrt, .user = &bc};
    check_op(&rs);

    BinCase st = {.na = 4, .sa = {2, 3, 4, 5}, .no = 3, .so = {3, 1, 5}};
    OpCheck os = {.name = "sum_to (3,1,5)", .n_in = 1, .ndim = {4}, .shape = {{2, 3, 4, 5}},
                  .build = build_sum_to, .ref = ref_sum_to_fn, .user = &st, .graph = true};
    check_op(&os);
    BinCase st2 = {.na = 4, .sa = {2, 3, 4, 5}, .no = 1, .so = {5}};
    OpCheck os2 = os;
    os2.name = "sum_to (5)";
    os2.user = &st2;
    check_op(&os2);
    BinCase bt = {.na = 2, .sa = {1, 5}, .no = 3, .so = {2, 3, 5}};
    OpCheck ob = {.name = "broadcast_to", .n_in = 1, .ndim = {2}, .shape = {{1, 5}}, .build = build_bcast,
                  .ref = ref_bcast_fn, .user = &bt, .graph = true};
    check_op(&ob);
    const char *rn[] = {"sum", "mean", "mean_square"};
    for (int k = 0; k < 3; k++) {
        BinCase rc = {.kind = k, .na = 3, .sa = {4, 7, 9}};
        OpCheck orc = {.name = rn[k], .n_in = 1, .ndim = {3}, .shape = {{4, 7, 9}}, .build = build_red,
                       .ref = ref_red, .user = &rc, .graph = true};
        check_op(&orc);
    }
}

static Var *build_reshape(Ctx *c, Var **in, void *u) {
    (void)u;
    int64_t s[] = {6, 10};
    /* scaled so the view is not the last op, and the gradient must pass through it */
    return op_scale(c, op_reshape(c, in[0], 2, s), 2.0, 0.0);
}
static void ref_reshape(double *const *in, double *out, void *u) {
    (void)u;
    for (int i = 0; i < 60; i++) out[i] = 2.0 * in[0][i];
}

static void test_reshape(void) {
    OpCheck oc = {.name = "reshape", .n_in = 1, .ndim = {3}, .shape = {{3, 4, 5}}, .build = build_reshape,
                  .ref = ref_reshape, .graph = true};
    check_op(&oc);
    TestCtx t;
    tctx_init(&t);
    TestRng r = {3};
    int64_t a[] = {2, 3}, bad[] = {4, 2};
    Var *x = tvar_rand(&t, &r, false, -1, 1, 2, a);
    CHECK(op_reshape(&t.c, x, 2, bad) == NULL, "reshape to another numel must fail");
    addc_error_clear();
    tctx_free(&t);
}

/* sums do not depend on the thread count: blocks are fixed */
static void test_sum_deterministic(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {7};
    int64_t n[] = {300001};
    Var *x = tvar_rand(&t, &r, false, -1, 1, 1, n);
    int th = parallel_threads();
    parallel_set_threads(1);
    float s1 = *(float *)op_sum(&t.nt, x)->v.data;
    parallel_set_threads(3);
    float s3 = *(float *)op_sum(&t.nt, x)->v.data;
    parallel_set_threads(th);
    CHECK(memcmp(&s1, &s3, 4) == 0, "sum differs between 1 and 3 threads: %.9g vs %.9g", s1, s3);
    tctx_free(&t);
}

static void test_errors(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {1};
    int64_t a[] = {2, 3}, b[] = {4};
    Var *x = tvar_rand(&t, &r, false, -1, 1, 2, a), *y = tvar_rand(&t, &r, false, -1, 1, 1, b);
    Var *z = op_add(&t.c, x, y);
    CHECK(z == NULL && strstr(addc_error_message(), "do not broadcast"), "bad broadcast not refused: %s",
          addc_error_message());
    addc_error_clear();
    CHECK(op_mul(&t.c, NULL, y) == NULL, "NULL input must propagate");
    int64_t bad[] = {3, 3};
    CHECK(op_sum_to(&t.c, x, 2, bad) == NULL, "sum_to to an incompatible shape must fail");
    addc_error_clear();
    tctx_free(&t);
}

int main(void) {
    test_binary_ops();
    test_unary_and_reductions();
    test_reshape();
    test_sum_deterministic();
    test_errors();
    return test_main_end("test_elementwise");
}
