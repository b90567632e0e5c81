/* matmul and linear: forward vs f64 reference, backward vs finite differences, create-graph
 * backward vs plain and second order; shape errors; bias-gradient determinism. */
#include <string.h>

#include "tests/ref_matmul.h"
#include "tests/test_util.h"

typedef struct {
    bool ta, tb, gram;
    int na, nb;            /* batch dims of a and b */
    int64_t sa[4], sb[4];  /* their batch shapes */
    int64_t M, N, K;
} MMCase;

static Var *build_matmul(Ctx *c, Var **in, void *u) {
    MMCase *m = u;
    return m->gram ? op_matmul(c, in[0], in[0], true, false) : op_matmul(c, in[0], in[1], m->ta, m->tb);
}
static void ref_matmul_fn(double *const *in, double *out, void *u) {
    MMCase *m = u;
    if (m->gram) ref_matmul(in[0], 0, NULL, in[0], 0, NULL, out, m->M, m->N, m->K, true, false);
    else ref_matmul(in[0], m->na, m->sa, in[1], m->nb, m->sb, out, m->M, m->N, m->K, m->ta, m->tb);
}

/* a with batch dims sa[0..na), b with sb[0..nb) (numpy broadcasting between them) */
static void run_matmul(const char *name, int na, const int64_t *sa, int nb, const int64_t *sb, int64_t M, int64_t N,
                       int64_t K, bool ta, bool tb) {
    MMCase m = {.ta = ta, .tb = tb, .na = na, .nb = nb, .M = M, .N = N, .K = K};
    for (int d = 0; d < na; d++) m.sa[d] = sa[d];
    for (int d = 0; d < nb; d++) m.sb[d] = sb[d];
    OpCheck oc = {.name = name, .n_in = 2, .build = build_matmul, .ref = ref_matmul_fn, .user = &m, .graph = true};
    for (int which = 0; which < 2; which++) {
        int nd = which ? nb : na;
        for (int d = 0; d < nd; d++) oc.shape[which][d] = which ? sb[d] : sa[d];
        int64_t r = which ? K : M, cdim = which ? N : K; /* the op() shape */
        bool tr = which ? tb : ta;
        oc.shape[which][nd] = tr ? cdim : r;
        oc.shape[which][nd + 1] = tr ? r : cdim;
        oc.ndim[which] = nd + 2;
    }
    check_op(&oc);
}

static void test_matmul_ops(void) {
    const char *tn[] = {"nn", "tn", "nt", "tt"};
    char name[96];
    int64_t b3[] = {3}, b23[] = {2, 3}, b21[] = {2, 1}, b1[] = {1};
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        snprintf(name, sizeof name, "matmul 2-D %s", tn[t]);
        run_matmul(name, 0, NULL, 0, NULL, 5, 6, 7, ta, tb);
        snprintf(name, sizeof name, "matmul batched (2,3) %s", tn[t]);
        run_matmul(name, 2, b23, 2, b23, 4, 3, 5, ta, tb);
        snprintf(name, sizeof name, "matmul b shared %s", tn[t]);
        run_matmul(name, 1, b3, 0, NULL, 4, 6, 5, ta, tb);
        snprintf(name, sizeof name, "matmul a shared %s", tn[t]);
        run_matmul(name, 0, NULL, 1, b3, 4, 6, 5, ta, tb);
        snprintf(name, sizeof name, "matmul bcast (2,3)@(3) %s", tn[t]);
        run_matmul(name, 2, b23, 1, b3, 3, 4, 5, ta, tb);
    }
    run_matmul("matmul b shared, 2 batch dims", 2, b23, 0, NULL, 3, 4, 5, false, false);
    run_matmul("matmul bcast (2,1)@(3)", 2, b21, 1, b3, 3, 4, 5, false, true);
    run_matmul("matmul bcast (1)@(2,3)", 1, b1, 2, b23, 3, 4, 5, true, false);
    run_matmul("matmul bcast (2,3)@(1)", 2, b23, 1, b1, 3, 4, 5, false, false);
    /* the same Var on both sides: x^T x */
    MMCase g = {.gram = true, .M = 5, .N = 5, .K = 6};
    OpCheck oc = {.name = "matmul gram x^T x", .n_in = 1, .ndim = {2}, .shape = {{6, 5}}, .build = build_matmul,
                  .ref = ref_matmul_fn, .user = &g, .graph = true};
    check_op(&oc);
    /* a larger product (sgemm's blocked paths), few finite differences */
    MMCase big = {.M = 130, .N = 70, .K = 300};
    OpCheck ob = {.name = "matmul 130x300 @ 300x70", .n_in = 2, .ndim = {2, 2}, .shape = {{130, 300}, {300, 70}},
                  .build = build_matmul, .ref = ref_matmul_fn, .user = &big, .max_fd = 16, .grad_tol = 2e-4};
    check_op(&ob);
}

typedef struct {
    bool bias;
    int64_t rows, Din, Dout;
} LinCase;

static Var *build_linear(Ctx *c, Var **in, void *u) {
    LinCase *l = u;
    return op_linear(c, in[0], in[1], l->bias ? in[2] : NULL);
}
static void ref_linear_fn(double *const *in, double *out, void *u) {
    LinCase *l = u;
    ref_linear(in[0], in[1], l->bias ? in[2] : NULL, out, l->rows, l->Din, l->Dout);
}

static void run_linear(const char *name, int xnd, const int64_t *xs, int64_t Dout, bool bias, bool graph,
                       int64_t max_fd) {
    LinCase l = {bias, 1, xs[xnd - 1], Dout};
    for (int i = 0; i < xnd - 1; i++) l.rows *= xs[i];
    OpCheck oc = {.name = name, .n_in = bias ? 3 : 2, .build = build_linear, .ref = ref_linear_fn, .user = &l,
                  .graph = graph, .max_fd = max_fd};
    oc.ndim[0] = xnd;
    memcpy(oc.shape[0], xs, (size_t)xnd * sizeof(int64_t));
    oc.ndim[1] = 2;
    oc.shape[1][0] = Dout;
    oc.shape[1][1] = l.Din;
    oc.ndim[2] = 1;
    oc.shape[2][0] = Dout;
    check_op(&oc);
}

static void test_linear_ops(void) {
    int64_t x2[] = {7, 5}, x3[] = {2, 3, 5}, x1[] = {5}, xb[] = {2, 40, 96};
    run_linear("linear 2-D bias", 2, x2, 4, true, true, 64);
    run_linear("linear 2-D no bias", 2, x2, 4, false, true, 64);
    run_linear("linear 3-D bias", 3, x3, 6, true, true, 64);
    run_linear("linear 3-D no bias", 3, x3, 6, false, true, 64);
    run_linear("linear 1-D bias", 1, x1, 3, true, true, 64);
    run_linear("linear (2,40,96) -> 80 bias", 3, xb, 80, true, false, 16);
}

/* the bias gradient (column sums) is identical with 1 and 2 threads */
static void test_linear_bias_grad_deterministic(void) {
    float g[2][200];
    int th = parallel_threads();
    for (int k = 0; k < 2; k++) {
        parallel_set_threads(k ? 2 : 1);
        TestCtx t;
        tctx_init(&t);
        TestRng r = {11};
        int64_t sx[] = {1000, 8}, sw[] = {200, 8}, sb[] = {200};
        Var *x = tvar_rand(&t, &r, false, -1, 1, 2, sx), *w = tvar_rand(&t, &r, false, -1, 1, 2, sw);
        Var *b = tvar_rand(&t, &r, true, -1, 1, 1, sb);
        Var *y = op_linear(&t.c, x, w, b);
        CHECK_VAR(y);
        int64_t sy[] = {1000, 200};
        Var *dy = tvar_rand(&t, &r, false, -1, 1, 2, sy);
        CHECK_OK(tape_backward_seed(&t.c, y, &dy->v));
        if (b->g.data) memcpy(g[k], b->g.data, sizeof g[k]);
        tctx_free(&t);
    }
    parallel_set_threads(th);
    CHECK(memcmp(g[0], g[1], sizeof g[0]) == 0, "linear bias gradient differs between 1 and 2 threads");
}

static void expect_fail(Var *v, const char *what, const char *needle) {
    CHECK(v == NULL && strstr(addc_error_message(), needle), "%s: expected an error containing '%s', got '%s'",
          what, needle, v ? "(success)" : addc_error_message());
    addc_error_clear();
}

static void test_errors(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {1};
    int64_t s23[] = {2, 3}, s34[] = {3, 4}, s44[] = {4, 4}, s3[] = {3}, b234[] = {2, 3, 4}, b345[] = {3, 4, 5},
            s4[] = {4}, s5[] = {5};
    Var *a = tvar_rand(&t, &r, true, -1, 1, 2, s23), *b = tvar_rand(&t, &r, true, -1, 1, 2, s34);
    Var *sq = tvar_rand(&t, &r, true, -1, 1, 2, s44), *v3 = tvar_rand(&t, &r, true, -1, 1, 1, s3);
    Var *ba = tvar_rand(&t, &r, true, -1, 1, 3, b234), *bb = tvar_rand(&t, &r, true, -1, 1, 3, b345);
    CHECK_VAR(op_matmul(&t.c, a, b, false, false));
    expect_fail(op_matmul(&t.c, a, b, true, false), "inner dims", "inner dims differ");
    expect_fail(op_matmul(&t.c, a, sq, false, false), "inner dims 2", "inner dims differ");
    expect_fail(op_matmul(&t.c, v3, b, false, false), "1-D operand", "at least 2 dims");
    expect_fail(op_matmul(&t.c, ba, bb, false, false), "batch dims", "do not broadcast");
    CHECK(op_matmul(&t.c, NULL, b, false, false) == NULL, "NULL must propagate");
    Var *w = tvar_rand(&t, &r, true, -1, 1, 2, s34), *bias4 = tvar_rand(&t, &r, true, -1, 1, 1, s4);
    Var *bias5 = tvar_rand(&t, &r, true, -1, 1, 1, s5);
    expect_fail(op_linear(&t.c, a, w, NULL), "linear Din", "(Dout, Din)");
    expect_fail(op_linear(&t.c, ba, v3, NULL), "linear 1-D w", "(Dout, Din)");
    Var *x4 = tvar_rand(&t, &r, true, -1, 1, 2, s34);
    int64_t s54[] = {5, 4};
    Var *w54 = tvar_rand(&t, &r, true, -1, 1, 2, s54);
    CHECK_VAR(op_linear(&t.c, x4, w54, bias5));
    expect_fail(op_linear(&t.c, x4, w54, bias4), "linear bias", "bias");
    tctx_free(&t);
}

int main(void) {
    test_matmul_ops();
    test_linear_ops();
    test_linear_bias_grad_deterministic();
    test_errors();
    return test_main_end("test_matmul");
}
