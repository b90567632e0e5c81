/* Normalisation ops: group norm (4-D and 3-D inputs, groups 1, 2, C, with and without
 * affine), group norm fused with a SiLU (against an f64 reference, and against op_silu of
 * op_group_norm), layer norm and BatchNormLocal (with its create-graph backward, second order
 * included) against f64 references and finite differences; accuracy and timing at a UNet
 * shape; thread-count independence; error cases. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/ref_norm.h"
#include "tests/test_util.h"

enum { NK_GROUP, NK_GROUP_SILU, NK_LAYER, NK_BNL };

typedef struct {
    int kind;
    int nd;
    int64_t shape[6];
    int groups, vbs;
    bool affine;
    double eps;
} NormCase;

static Var *build_norm(Ctx *c, Var **in, void *u) {
    NormCase *nc = u;
    Var *g = nc->affine ? in[1] : NULL, *b = nc->affine ? in[2] : NULL;
    switch (nc->kind) {
    case NK_GROUP: return op_group_norm(c, in[0], g, b, nc->groups, nc->eps);
    case NK_GROUP_SILU: return op_group_norm_silu(c, in[0], g, b, nc->groups, nc->eps);
    case NK_LAYER: return op_layer_norm(c, in[0], g, b, nc->eps);
    default: return op_batch_norm_local(c, in[0], g, b, nc->vbs, nc->eps);
    }
}

static void ref_norm(double *const *in, double *out, void *u) {
    NormCase *nc = u;
    int64_t B = nc->shape[0], C = nc->shape[nc->nd - 1], P = 1;
    for (int d = 1; d < nc->nd - 1; d++) P *= nc->shape[d];
    const double *g = nc->affine ? in[1] : NULL, *b = nc->affine ? in[2] : NULL;
    switch (nc->kind) {
    case NK_GROUP: ref_group_norm(in[0], g, b, out, B, P, C, nc->groups, nc->eps); break;
    case NK_GROUP_SILU: ref_group_norm_silu(in[0], g, b, out, B, P, C, nc->groups, nc->eps); break;
    case NK_LAYER: ref_layer_norm(in[0], g, b, out, B * P, C, nc->eps); break;
    default: ref_batch_norm_local(in[0], g, b, out, B, P, C, nc->vbs, nc->eps); break;
    }
}

static void run_norm(const char *name, NormCase nc, bool graph) {
    OpCheck oc = {.name = name, .n_in = nc.affine ? 3 : 1, .build = build_norm, .ref = ref_norm, .user = &nc,
                  .graph = graph};
    oc.ndim[0] = nc.nd;
    memcpy(oc.shape[0], nc.shape, sizeof nc.shape);
    for (int i = 1; i < 3; i++) {
        oc.ndim[i] = 1;
        oc.shape[i][0] = nc.shape[nc.nd - 1];
    }
    oc.lo[1] = 0.5; /* gamma away from zero so every channel's gradient is exercised */
    oc.hi[1] = 1.5;
    check_op(&oc);
}

static void test_group_norm(void) {
    const int g4[] = {1, 2, 6};
    for (int a = 0; a < 2; a++)
        for (int k = 0; k < 3; k++) {
            char nm[96];
            NormCase nc = {NK_GROUP, 4, {2, 3, 4, 6}, g4[k], 0, a == 1, 1e-5};
            snprintf(nm, sizeof nm, "group_norm (2,3,4,6) G=%d%s", g4[k], a ? " affine" : "");
            run_norm(nm, nc, false);
            NormCase n3 = {NK_GROUP, 3, {2, 5, 6}, g4[k], 0, a == 1, 1e-5};
            snprintf(nm, sizeof nm, "group_norm (2,5,6) G=%d%s", g4[k], a ? " affine" : "");
            run_norm(nm, n3, false);
        }
    NormCase wide = {NK_GROUP, 3, {2, 7, 22}, 2, 0, true, 1e-6};
    run_norm("group_norm (2,7,22) G=2 affine", wide, false);
}

static void test_group_norm_silu(void) {
    NormCase a = {NK_GROUP_SILU, 4, {2, 3, 4, 6}, 2, 0, true, 1e-5};
    run_norm("group_norm_silu (2,3,4,6) G=2 affine", a, false);
    NormCase b = {NK_GROUP_SILU, 4, {2, 3, 4, 6}, 6, 0, false, 1e-5};
    run_norm("group_norm_silu (2,3,4,6) G=6", b, false);
    NormCase c = {NK_GROUP_SILU, 3, {2, 5, 6}, 1, 0, true, 1e-5};
    run_norm("group_norm_silu (2,5,6) G=1 affine", c, false);
    NormCase d = {NK_GROUP_SILU, 3, {2, 7, 22}, 2, 0, true, 1e-6};
    run_norm("group_norm_silu (2,7,22) G=2 affine", d, false);
    NormCase e = {NK_GROUP_SILU, 4, {3, 5, 7, 12}, 4, 0, true, 1e-5}; /* 35 positions x 3 channels per group */
    run_norm("group_norm_silu (3,5,7,12) G=4 affine", e, false);
}

/* The fused op against op_silu(op_group_norm(...)) at a UNet-like shape: output and all three
 * gradients agree to f32 rounding (the two differ only in where the SiLU is evaluated). */
static void test_group_norm_silu_matches_unfused(void) {
    int64_t shape[4] = {2, 8, 8, 64}, cs[1] = {64}, n = 2 * 8 * 8 * 64;
    Var *y[2] = {NULL, NULL};
    float *res[2][4] = {{NULL}};
    for (int fused = 0; fused < 2; fused++) {
        TestCtx t;
        tctx_init(&t);
        TestRng r = {17};
        Var *x = tvar_rand(&t, &r, true, -2, 3, 4, shape);
        Var *g = tvar_rand(&t, &r, true, 0.5, 1.5, 1, cs), *b = tvar_rand(&t, &r, true, -0.5, 0.5, 1, cs);
        y[fused] = fused ? op_group_norm_silu(&t.c, x, g, b, 8, 1e-5)
                         : op_silu(&t.c, op_group_norm(&t.c, x, g, b, 8, 1e-5));
        CHECK_VAR(y[fused]);
        if (y[fused]) {
            CHECK_OK(tape_backward(&t.c, op_mean_square(&t.c, y[fused])));
            const Tensor *src[4] = {&y[fused]->v, &x->g, &g->g, &b->g};
            for (int i = 0; i < 4; i++) {
                int64_t nb = i == 0 || i == 1 ? n * 4 : 64 * 4;
                res[fused][i] = malloc((size_t)nb);
                if (src[i]->data) memcpy(res[fused][i], src[i]->data, (size_t)nb);
                else memset(res[fused][i], 0, (size_t)nb);
            }
        }
        tctx_free(&t);
    }
    if (y[0] && y[1]) {
        const char *nm[4] = {"output", "dx", "dgamma", "dbeta"};
        double emax = 0;
        for (int i = 0; i < 4; i++) {
            int64_t ne = i < 2 ? n : 64;
            double e = compare_f32(nm[i], res[1][i], res[0][i], ne, 1e-5, 1e-6);
            emax = e > emax ? e : emax;
            CHECK(e <= 1e-5, "group_norm_silu %s differs from silu(group_norm): max rel err %.3g", nm[i], e);
        }
        printf("  group_norm_silu vs silu(group_norm) (2,8,8,64) G=8: max rel err %.2e\n", emax);
    }
    for (int f = 0; f < 2; f++)
        for (int i = 0; i < 4; i++) free(res[f][i]);
}

static void test_layer_norm(void) {
    NormCase a = {NK_LAYER, 3, {3, 4, 10}, 0, 0, true, 1e-5};
    run_norm("layer_norm (3,4,10) affine", a, false);
    NormCase b = {NK_LAYER, 2, {5, 37}, 0, 0, false, 1e-6};
    run_norm("layer_norm (5,37)", b, false);
    NormCase c = {NK_LAYER, 3, {2, 70, 19}, 0, 0, true, 1e-5}; /* 140 rows: several gradient chunks */
    run_norm("layer_norm (2,70,19) affine", c, false);
}

static void test_batch_norm_local(void) {
    NormCase a = {NK_BNL, 3, {16, 3, 4}, 0, 8, true, 1e-5};
    run_norm("batch_norm_local B=16 vbs=8 (G=2)", a, true);
    NormCase b = {NK_BNL, 3, {12, 2, 5}, 0, 8, true, 1e-5};
    run_norm("batch_norm_local B=12 vbs=8 (G=2 of 6)", b, true);
    NormCase c = {NK_BNL, 3, {4, 5, 3}, 0, 8, true, 1e-5};
    run_norm("batch_norm_local B=4 vbs=8 (G=1)", c, true);
    NormCase d = {NK_BNL, 3, {6, 3, 9}, 0, 2, false, 1e-5};
    run_norm("batch_norm_local B=6 vbs=2 (G=3) no affine", d, true);
}

/* A UNet shape, (2, 64, 64, 320) with 32 groups (and layer norm over its rows), with
 * values far from zero (mean 100, std 0.58): statistics and normalisation must stay
 * accurate; forward and backward against the f64 references. */
static void test_unet_shape_offset(void) {
    Arena ar;
    arena_init(&ar, 64 << 20, 0);
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&ar, &tape, DEVICE_CPU);
    int64_t shape[4] = {2, 64, 64, 320}, cs[1] = {320}, n = 2 * 64 * 64 * 320;
    TestRng r = {99};
    Var *x = var_new(&c, DTYPE_F32, 4, shape);
    Var *g = var_new(&c, DTYPE_F32, 1, cs), *b = var_new(&c, DTYPE_F32, 1, cs);
    float *seed = malloc((size_t)n * 4);
    trng_fill_f32(&r, x->v.data, n, 99.0, 101.0);
    trng_fill_f32(&r, g->v.data, 320, 0.5, 1.5);
    trng_fill_f32(&r, b->v.data, 320, -0.5, 0.5);
    trng_fill_f32(&r, seed, n, -1, 1);
    double *x64 = malloc((size_t)n * 8), *dy64 = malloc((size_t)n * 8), *y64 = malloc((size_t)n * 8);
    double *dx64 = malloc((size_t)n * 8), g64[320], b64[320], dg64[320], db64[320];
    for (int64_t i = 0; i < n; i++) {
        x64[i] = ((float *)x->v.data)[i];
        dy64[i] = seed[i];
    }
    for (int i = 0; i < 320; i++) {
        g64[i] = ((float *)g->v.data)[i];
        b64[i] = ((float *)b->v.data)[i];
    }
    Tensor sd = tensor_make(seed, DTYPE_F32, DEVICE_CPU, 4, shape);
    for (int kind = 0; kind < 2; kind++) {
        const char *nm = kind ? "layer_norm (8192 rows, 320)" : "group_norm (2,64,64,320) G=32";
        int64_t B = kind ? 2 * 64 * 64 : 2, P = kind ? 1 : 64 * 64, G = kind ? 1 : 32;
        x->requires_grad = g->requires_grad = b->requires_grad = true;
        x->g.data = g->g.data = b->g.data = NULL;
        Var *y = kind ? op_layer_norm(&c, x, g, b, 1e-5) : op_group_norm(&c, x, g, b, (int)G, 1e-5);
        CHECK_VAR(y);
        if (!y) continue;
        Status st = tape_backward_seed(&c, y, &sd);
        CHECK_OK(st);
        ref_group_norm(x64, g64, b64, y64, B, P, 320, G, 1e-5);
        ref_group_norm_backward(x64, g64, dy64, dx64, dg64, db64, B, P, 320, G, 1e-5);
        double ef = compare_f32_f64("offset fwd", y->v.data, y64, n, 1e-6, 1e-6);
        double ex = st ? 1 : compare_f32_f64("offset dx", x->g.data, dx64, n, 1e-5, 1e-6);
        double eg = st ? 1 : compare_f32_f64("offset dgamma", g->g.data, dg64, 320, 1e-5, 1e-6);
        double eb = st ? 1 : compare_f32_f64("offset dbeta", b->g.data, db64, 320, 1e-5, 1e-6);
        CHECK(ef <= 1e-6, "%s with offset 100: forward max rel err %.3g", nm, ef);
        CHECK(ex <= 1e-5 && eg <= 1e-5 && eb <= 1e-5, "%s with offset 100: dx %.3g dgamma %.3g dbeta %.3g", nm, ex,
              eg, eb);
        printf("  %s offset 100: err fwd %.2e dx %.2e dgamma %.2e dbeta %.2e\n", nm, ef, ex, eg, eb);
        tape_clear(&tape);
    }
    free(x64), free(dy64), free(y64), free(dx64), free(seed);
    tape_free(&tape);
    arena_free(&ar);
}

/* results are bitwise the same for 1 and 3 threads (fixed chunks) */
static void test_thread_independence(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {5};
    int64_t s[4] = {2, 16, 16, 64};
    Var *x = tvar_rand(&t, &r, false, -2, 2, 4, s);
    int th = parallel_threads();
    parallel_set_threads(1);
    Var *y1 = op_group_norm(&t.nt, x, NULL, NULL, 8, 1e-5);
    parallel_set_threads(3);
    Var *y3 = op_group_norm(&t.nt, x, NULL, NULL, 8, 1e-5);
    parallel_set_threads(th);
    CHECK(y1 && y3 && memcmp(y1->v.data, y3->v.data, (size_t)tensor_nbytes(&y1->v)) == 0,
          "group norm differs between 1 and 3 threads");
    tctx_free(&t);
}

static void test_errors(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {1};
    int64_t s[4] = {2, 3, 3, 10}, s3[3] = {10, 4, 6}, c5[1] = {5};
    Var *x = tvar_rand(&t, &r, false, -1, 1, 4, s);
    CHECK(op_group_norm(&t.c, x, NULL, NULL, 3, 1e-5) == NULL && strstr(addc_error_message(), "groups"),
          "C %% groups != 0 not refused: %s", addc_error_message());
    addc_error_clear();
    Var *g = tvar_rand(&t, &r, false, -1, 1, 1, c5);
    CHECK(op_group_norm(&t.c, x, g, g, 5, 1e-5) == NULL, "gamma of the wrong size not refused");
    addc_error_clear();
    CHECK(op_group_norm_silu(&t.c, x, NULL, NULL, 3, 1e-5) == NULL && strstr(addc_error_message(), "group_norm_silu"),
          "group_norm_silu: C %% groups != 0 not refused with the op's name: %s", addc_error_message());
    addc_error_clear();
    Var *xh = var_zeros(&t.nt, DTYPE_BF16, 4, s); /* bf16 values run on CUDA only */
    CHECK(xh && op_group_norm(&t.c, xh, NULL, NULL, 2, 1e-5) == NULL && strstr(addc_error_message(), "CUDA"),
          "bf16 x on the CPU not refused with a message naming CUDA: %s", addc_error_message());
    addc_error_clear();
    int64_t s10[1] = {10};
    Var *gh = var_zeros(&t.nt, DTYPE_BF16, 1, s10);
    CHECK(gh && op_layer_norm(&t.c, x, gh, NULL, 1e-5) == NULL && strstr(addc_error_message(), "gamma"),
          "layer_norm: bf16 gamma with f32 x not refused: %s", addc_error_message());
    addc_error_clear();
    Var *xb = tvar_rand(&t, &r, false, -1, 1, 3, s3);
    CHECK(op_batch_norm_local(&t.c, xb, NULL, NULL, 4, 1e-5) == NULL && strstr(addc_error_message(), "groups"),
          "B=10 virtual_bs=4 (G=3) not refused: %s", addc_error_message());
    addc_error_clear();
    CHECK(op_batch_norm_local(&t.c, xb, NULL, NULL, 5, 1e-5) != NULL, "B=10 virtual_bs=5 must work");
    CHECK(op_layer_norm(&t.c, NULL, NULL, NULL, 1e-5) == NULL, "NULL input must propagate");
    addc_error_clear();
    tctx_free(&t);
}

int main(void) {
    test_group_norm();
    test_group_norm_silu();
    test_group_norm_silu_matches_unfused();
    test_layer_norm();
    test_batch_norm_local();
    test_unet_shape_offset();
    test_thread_independence();
    test_errors();
    return test_main_end("test_norm");
}
