/* conv2d, conv1d and conv1d_t: forward vs f64 reference, backward vs finite differences,
 * create-graph backward (conv1d, conv1d_t) vs plain and second order; a UNet-like forward;
 * shape errors. */
#include <string.h>

#include "tests/ref_conv.h"
#include "tests/test_util.h"

typedef struct {
    int64_t B, H, W, Cin, Cout, KH, KW, stride, pad;
    bool bias;
} C2Case;

static Var *build_conv2d(Ctx *c, Var **in, void *u) {
    C2Case *k = u;
    return op_conv2d(c, in[0], in[1], k->bias ? in[2] : NULL, (int)k->stride, (int)k->pad);
}
static void ref_conv2d_fn(double *const *in, double *out, void *u) {
    C2Case *k = u;
    ref_conv2d(in[0], in[1], k->bias ? in[2] : NULL, out, k->B, k->H, k->W, k->Cin, k->Cout, k->KH, k->KW,
               k->stride, k->pad);
}

static void run_conv2d(const char *name, C2Case k, int64_t max_fd) {
    OpCheck oc = {.name = name, .n_in = k.bias ? 3 : 2, .ndim = {4, 4, 1}, .build = build_conv2d,
                  .ref = ref_conv2d_fn, .user = &k, .max_fd = max_fd};
    int64_t xs[4] = {k.B, k.H, k.W, k.Cin}, ws[4] = {k.Cout, k.KH, k.KW, k.Cin};
    memcpy(oc.shape[0], xs, sizeof xs);
    memcpy(oc.shape[1], ws, sizeof ws);
    oc.shape[2][0] = k.Cout;
    check_op(&oc);
}

static void test_conv2d_ops(void) {
    /*                                 B  H  W Cin Cout KH KW s  p  bias */
    run_conv2d("conv2d k1 s1 p0 bias", (C2Case){2, 3, 4, 5, 6, 1, 1, 1, 0, true}, 64);
    run_conv2d("conv2d k1 s1 p1", (C2Case){1, 3, 2, 2, 3, 1, 1, 1, 1, false}, 64);
    run_conv2d("conv2d k3 s1 p1 bias odd", (C2Case){2, 5, 3, 3, 4, 3, 3, 1, 1, true}, 64);
    run_conv2d("conv2d k3 s1 p1 no bias", (C2Case){2, 4, 6, 4, 2, 3, 3, 1, 1, false}, 64);
    run_conv2d("conv2d k3 s1 p0", (C2Case){1, 5, 6, 3, 4, 3, 3, 1, 0, true}, 64);
    run_conv2d("conv2d k3x2 s1 p2", (C2Case){2, 3, 4, 2, 3, 3, 2, 1, 2, true}, 64);
    run_conv2d("conv2d k3 s2 p1 bias odd", (C2Case){2, 7, 5, 3, 4, 3, 3, 2, 1, true}, 64);
    run_conv2d("conv2d k3 s2 p0", (C2Case){1, 6, 7, 2, 5, 3, 3, 2, 0, false}, 64);
    run_conv2d("conv2d k1 s2 p0", (C2Case){2, 5, 4, 3, 2, 1, 1, 2, 0, true}, 64);
    run_conv2d("conv2d k14 s14 p0 (patches)", (C2Case){2, 28, 14, 3, 4, 14, 14, 14, 0, true}, 64);
    /* stride 1: images of >= 512 outputs run the forward by im2col along W, the backward on
     * the padded grid when it wastes little; a flat image runs both on the grid */
    run_conv2d("conv2d grid k3 s1 p1 (1,4,100,2)", (C2Case){1, 4, 100, 2, 3, 3, 3, 1, 1, true}, 64);
    run_conv2d("conv2d grid k3 s1 p1 (2,64,64,2)", (C2Case){2, 64, 64, 2, 3, 3, 3, 1, 1, true}, 64);
    run_conv2d("conv2d grid k3x2 s1 p2 (2,64,64,2)", (C2Case){2, 64, 64, 2, 3, 3, 2, 1, 2, false}, 64);
    run_conv2d("conv2d grid k3 s1 p0 (1,48,40,3)", (C2Case){1, 48, 40, 3, 2, 3, 3, 1, 0, true}, 64);
    /* UNet-like shapes: few finite differences; the forward is the point */
    run_conv2d("conv2d (1,16,16,64)->64 k3 s1 p1", (C2Case){1, 16, 16, 64, 64, 3, 3, 1, 1, true}, 3);
    run_conv2d("conv2d (1,32,32,64)->64 k3 s1 p1", (C2Case){1, 32, 32, 64, 64, 3, 3, 1, 1, true}, 2);
    run_conv2d("conv2d (1,16,16,64)->64 k3 s2 p1", (C2Case){1, 16, 16, 64, 64, 3, 3, 2, 1, true}, 3);
    /* im2col chunks of about 1 MiB: several chunks of whole images (col2im by image), and
     * images larger than a chunk (col2im by channel block, chunks starting mid-image) */
    run_conv2d("conv2d chunks of images (9,8,8,64)->3", (C2Case){9, 8, 8, 64, 3, 3, 3, 1, 1, true}, 64);
    run_conv2d("conv2d chunks mid-image (3,16,16,128)->2", (C2Case){3, 16, 16, 128, 2, 3, 3, 1, 1, false}, 64);
}

typedef struct {
    int64_t B, N, Cin, Cout, K;
    bool circular, bias, transpose;
} C1Case;

static Var *build_conv1d(Ctx *c, Var **in, void *u) {
    C1Case *k = u;
    PadMode m = k->circular ? PAD_CIRCULAR : PAD_ZEROS;
    if (k->transpose) return op_conv1d_t(c, in[0], in[1], m);
    return op_conv1d(c, in[0], in[1], k->bias ? in[2] : NULL, m);
}
static void ref_conv1d_fn(double *const *in, double *out, void *u) {
    C1Case *k = u;
    if (k->transpose) ref_conv1d_t(in[0], in[1], out, k->B, k->N, k->Cin, k->Cout, k->K, k->circular);
    else ref_conv1d(in[0], in[1], k->bias ? in[2] : NULL, out, k->B, k->N, k->Cin, k->Cout, k->K, k->circular);
}

static void run_conv1d(const char *name, C1Case k) {
    OpCheck oc = {.name = name, .n_in = k.bias && !k.transpose ? 3 : 2, .ndim = {3, 3, 1},
                  .build = build_conv1d, .ref = ref_conv1d_fn, .user = &k, .graph = true};
    int64_t xs[3] = {k.B, k.N, k.transpose ? k.Cout : k.Cin}, ws[3] = {k.Cout, k.K, k.Cin};
    memcpy(oc.shape[0], xs, sizeof xs);
    memcpy(oc.shape[1], ws, sizeof ws);
    oc.shape[2][0] = k.Cout;
    check_op(&oc);
}

static void test_conv1d_ops(void) {
    /*                                    B  N Cin Cout K  circ   bias   transpose */
    run_conv1d("conv1d k1 zeros bias", (C1Case){2, 6, 4, 3, 1, false, true, false});
    run_conv1d("conv1d k1 circular", (C1Case){2, 6, 4, 3, 1, true, false, false});
    run_conv1d("conv1d k9 zeros bias", (C1Case){2, 10, 4, 3, 9, false, true, false});
    run_conv1d("conv1d k9 circular bias", (C1Case){2, 10, 4, 3, 9, true, true, false});
    run_conv1d("conv1d k9 circular N=4 (wraps)", (C1Case){2, 4, 3, 2, 9, true, true, false});
    run_conv1d("conv1d k9 zeros N=3", (C1Case){1, 3, 2, 3, 9, false, false, false});
    run_conv1d("conv1d k3 circular", (C1Case){1, 5, 2, 5, 3, true, false, false});
    run_conv1d("conv1d k9 circular (8,300) blocks", (C1Case){8, 300, 2, 3, 9, true, true, false});
    run_conv1d("conv1d_t k9 circular (8,300) blocks", (C1Case){8, 300, 3, 2, 9, true, false, true});
    run_conv1d("conv1d_t k1 zeros", (C1Case){2, 6, 4, 3, 1, false, false, true});
    run_conv1d("conv1d_t k9 zeros", (C1Case){2, 10, 4, 3, 9, false, false, true});
    run_conv1d("conv1d_t k9 circular", (C1Case){2, 10, 4, 3, 9, true, false, true});
    run_conv1d("conv1d_t k9 circular N=4", (C1Case){1, 4, 2, 3, 9, true, false, true});
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
    int64_t xs[] = {1, 5, 5, 3}, ws[] = {4, 3, 3, 3}, wbad[] = {4, 3, 3, 2}, wbig[] = {4, 9, 9, 3}, b4[] = {4},
            b3[] = {3}, x3[] = {5, 5, 3};
    Var *x = tvar_rand(&t, &r, true, -1, 1, 4, xs), *w = tvar_rand(&t, &r, true, -1, 1, 4, ws);
    Var *bias = tvar_rand(&t, &r, true, -1, 1, 1, b4), *bias3 = tvar_rand(&t, &r, true, -1, 1, 1, b3);
    CHECK_VAR(op_conv2d(&t.c, x, w, bias, 1, 1));
    expect_fail(op_conv2d(&t.c, x, tvar_rand(&t, &r, true, -1, 1, 4, wbad), NULL, 1, 1), "Cin", "(Cout, KH, KW, Cin)");
    expect_fail(op_conv2d(&t.c, tvar_rand(&t, &r, true, -1, 1, 3, x3), w, NULL, 1, 1), "rank", "(B, H, W, Cin)");
    expect_fail(op_conv2d(&t.c, x, tvar_rand(&t, &r, true, -1, 1, 4, wbig), NULL, 1, 1), "big kernel", "does not fit");
    expect_fail(op_conv2d(&t.c, x, w, NULL, 0, 1), "stride 0", "stride");
    expect_fail(op_conv2d(&t.c, x, w, NULL, 1, -1), "negative pad", "pad");
    expect_fail(op_conv2d(&t.c, x, w, bias3, 1, 1), "bias", "bias");
    CHECK(op_conv2d(&t.c, NULL, w, NULL, 1, 1) == NULL, "NULL must propagate");

    int64_t s1[] = {2, 6, 4}, w9[] = {3, 9, 4}, w4[] = {3, 4, 4}, w9b[] = {3, 9, 5}, sshort[] = {2, 3, 4};
    Var *x1 = tvar_rand(&t, &r, true, -1, 1, 3, s1), *k9 = tvar_rand(&t, &r, true, -1, 1, 3, w9);
    CHECK_VAR(op_conv1d(&t.c, x1, k9, bias3, PAD_CIRCULAR));
    expect_fail(op_conv1d(&t.c, x1, tvar_rand(&t, &r, true, -1, 1, 3, w4), NULL, PAD_ZEROS), "even K", "odd");
    expect_fail(op_conv1d(&t.c, x1, tvar_rand(&t, &r, true, -1, 1, 3, w9b), NULL, PAD_ZEROS), "Cin", "(B, N, Cin)");
    expect_fail(op_conv1d(&t.c, x1, k9, bias, PAD_ZEROS), "conv1d bias", "bias");
    expect_fail(op_conv1d(&t.c, tvar_rand(&t, &r, true, -1, 1, 3, sshort), k9, NULL, PAD_CIRCULAR), "short circular",
                "circular padding");
    expect_fail(op_conv1d(&t.c, x1, k9, NULL, (PadMode)7), "mode", "padding mode");
    int64_t y3[] = {2, 6, 3};
    Var *y = tvar_rand(&t, &r, true, -1, 1, 3, y3);
    Var *xt = op_conv1d_t(&t.c, y, k9, PAD_ZEROS);
    CHECK(xt && xt->v.shape[2] == 4, "conv1d_t output must be (B, N, Cin)");
    expect_fail(op_conv1d_t(&t.c, x1, k9, PAD_ZEROS), "conv1d_t channels", "(B, N, Cout)");
    tctx_free(&t);
}

int main(void) {
    test_conv2d_ops();
    test_conv1d_ops();
    test_errors();
    return test_main_end("test_conv");
}
