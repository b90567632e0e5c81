/* Shape ops: concat, slice, split, permute, nearest 2x upsampling, area and bicubic resizing.
 * Forward vs f64 reference, backward vs finite differences; create-graph backward for
 * concat, slice and permute, alone and squared (so that second order runs through the graph
 * the first-order backward built); the resizes also against values PyTorch printed; errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/ref_shape.h"
#include "tests/test_util.h"

typedef struct {
    int nd;
    int64_t sa[6], sb[6];
    int axis;           /* as passed to the op (may be negative) */
    int64_t start, len; /* slice */
    int parts;          /* split */
    int32_t perm[6];
    int64_t oh, ow;
    bool squared;       /* y * y: second order through the create-graph backward */
} ShapeCase;

static int norm_axis(const ShapeCase *sc) { return sc->axis < 0 ? sc->axis + sc->nd : sc->axis; }

static int64_t numel(const int64_t *s, int nd) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= s[i];
    return n;
}

static Var *maybe_square(Ctx *c, Var *y, const ShapeCase *sc) { return sc->squared ? op_mul(c, y, y) : y; }
static void ref_maybe_square(double *out, int64_t n, const ShapeCase *sc) {
    if (sc->squared)
        for (int64_t i = 0; i < n; i++) out[i] *= out[i];
}

static void fill_case_check(OpCheck *oc, const ShapeCase *sc, int n_in) {
    oc->n_in = n_in;
    oc->ndim[0] = oc->ndim[1] = sc->nd;
    memcpy(oc->shape[0], sc->sa, sizeof sc->sa);
    memcpy(oc->shape[1], sc->sb, sizeof sc->sb);
    oc->max_fd = 64;
}

/* ---- concat ---- */

static Var *build_concat(Ctx *c, Var **in, void *u) {
    ShapeCase *sc = u;
    return maybe_square(c, op_concat(c, in[0], in[1], sc->axis), sc);
}
static void ref_concat_fn(double *const *in, double *out, void *u) {
    ShapeCase *sc = u;
    ref_concat(in[0], sc->sa, in[1], sc->sb, sc->nd, norm_axis(sc), out);
    ref_maybe_square(out, numel(sc->sa, sc->nd) + numel(sc->sb, sc->nd), sc);
}

static void run_concat(const char *name, int nd, const int64_t *sa, const int64_t *sb, int axis,
                       bool squared) {
    ShapeCase sc = {.nd = nd, .axis = axis, .squared = squared};
    memcpy(sc.sa, sa, (size_t)nd * 8);
    memcpy(sc.sb, sb, (size_t)nd * 8);
    OpCheck oc = {.name = name, .build = build_concat, .ref = ref_concat_fn, .user = &sc, .graph = true};
    fill_case_check(&oc, &sc, 2);
    check_op(&oc);
}

static void test_concat(void) {
    int64_t a[] = {2, 3, 4, 5}, b0[] = {1, 3, 4, 5}, b1[] = {2, 7, 4, 5}, b3[] = {2, 3, 4, 3};
    run_concat("concat axis 0", 4, a, b0, 0, false);
    run_concat("concat axis 1", 4, a, b1, 1, false);
    run_concat("concat axis -1", 4, a, b3, -1, false);
    run_concat("concat axis -3 squared", 4, a, b1, -3, true);
    run_concat("concat axis 3 squared", 4, a, b3, 3, true);
    int64_t c1[] = {3, 7}, c2[] = {3, 9};
    run_concat("concat 2-D axis 1", 2, c1, c2, 1, false);
    int64_t big_a[] = {2, 9, 17, 64}, big_b[] = {2, 9, 17, 80};
    run_concat("concat (2,9,17,64|80) threaded", 4, big_a, big_b, 3, false);
}

/* ---- slice and split ---- */

static Var *build_slice(Ctx *c, Var **in, void *u) {
    ShapeCase *sc = u;
    return maybe_square(c, op_slice(c, in[0], sc->axis, sc->start, sc->len), sc);
}
static void ref_slice_fn(double *const *in, double *out, void *u) {
    ShapeCase *sc = u;
    ref_slice(in[0], sc->sa, sc->nd, norm_axis(sc), sc->start, sc->len, out);
    ref_maybe_square(out, numel(sc->sa, sc->nd) / sc->sa[norm_axis(sc)] * sc->len, sc);
}

static void run_slice(const char *name, int nd, const int64_t *s, int axis, int64_t start, int64_t len,
                      bool squared) {
    ShapeCase sc = {.nd = nd, .axis = axis, .start = start, .len = len, .squared = squared};
    memcpy(sc.sa, s, (size_t)nd * 8);
    OpCheck oc = {.name = name, .build = build_slice, .ref = ref_slice_fn, .user = &sc, .graph = true};
    fill_case_check(&oc, &sc, 1);
    check_op(&oc);
}

/* the parts of a split, reordered: concat(out[parts-1], out[0]) */
static Var *build_split(Ctx *c, Var **in, void *u) {
    ShapeCase *sc = u;
    Var *out[8];
    if (op_split(c, in[0], sc->axis, sc->parts, out) != ADDC_OK) return NULL;
    return op_concat(c, out[sc->parts - 1], out[0], sc->axis);
}
static void ref_split_fn(double *const *in, double *out, void *u) {
    ShapeCase *sc = u;
    int ax = norm_axis(sc);
    int64_t part = sc->sa[ax] / sc->parts, sp[6];
    memcpy(sp, sc->sa, sizeof sp);
    sp[ax] = part;
    int64_t n = numel(sp, sc->nd);
    double *last = malloc((size_t)n * 8), *first = malloc((size_t)n * 8);
    ref_slice(in[0], sc->sa, sc->nd, ax, (sc->parts - 1) * part, part, last);
    ref_slice(in[0], sc->sa, sc->nd, ax, 0, part, first);
    ref_concat(last, sp, first, sp, sc->nd, ax, out);
    free(last);
    free(first);
}

static void test_slice_split(void) {
    int64_t s[] = {3, 5, 4, 7};
    run_slice("slice axis 0 [1, 3)", 4, s, 0, 1, 2, false);
    run_slice("slice axis 1 [0, 2)", 4, s, 1, 0, 2, false);
    run_slice("slice axis -1 [3, 7)", 4, s, -1, 3, 4, false);
    run_slice("slice axis 2 [1, 2) squared", 4, s, 2, 1, 1, true);
    run_slice("slice axis -2 [0, 3) squared", 4, s, -2, 0, 3, true);
    run_slice("slice axis 3 [2, 7) squared", 4, s, 3, 2, 5, true);
    int64_t big[] = {2, 33, 29, 96};
    run_slice("slice (2,33,29,96) axis 3 [17, 81) threaded", 4, big, 3, 17, 64, false);
    ShapeCase sc = {.nd = 3, .sa = {2, 9, 5}, .axis = 1, .parts = 3};
    OpCheck oc = {.name = "split 3 parts axis 1", .build = build_split, .ref = ref_split_fn, .user = &sc,
                  .graph = true};
    fill_case_check(&oc, &sc, 1);
    check_op(&oc);
    ShapeCase sc2 = {.nd = 3, .sa = {2, 3, 8}, .axis = -1, .parts = 2};
    oc.name = "split 2 parts axis -1";
    oc.user = &sc2;
    fill_case_check(&oc, &sc2, 1);
    check_op(&oc);
}

/* ---- permute ---- */

static Var *build_permute(Ctx *c, Var **in, void *u) {
    ShapeCase *sc = u;
    return maybe_square(c, op_permute(c, in[0], sc->perm), sc);
}
static void ref_permute_fn(double *const *in, double *out, void *u) {
    ShapeCase *sc = u;
    int32_t perm[6];
    for (int i = 0; i < sc->nd; i++) perm[i] = sc->perm[i] < 0 ? sc->perm[i] + sc->nd : sc->perm[i];
    ref_permute(in[0], sc->sa, sc->nd, perm, out);
    ref_maybe_square(out, numel(sc->sa, sc->nd), sc);
}

static void run_permute(const char *name, int nd, const int64_t *s, const int32_t *perm, bool graph,
                        bool squared) {
    ShapeCase sc = {.nd = nd, .squared = squared};
    memcpy(sc.sa, s, (size_t)nd * 8);
    memcpy(sc.perm, perm, (size_t)nd * 4);
    OpCheck oc = {.name = name, .build = build_permute, .ref = ref_permute_fn, .user = &sc, .graph = graph};
    fill_case_check(&oc, &sc, 1);
    check_op(&oc);
}

static void test_permute(void) {
    int64_t s4[] = {2, 3, 4, 5};
    int32_t nchw[] = {0, 3, 1, 2}, heads[] = {0, 2, 1, 3}, rev[] = {3, 2, 1, 0}, keep[] = {1, 0, 2, 3};
    run_permute("permute NHWC->NCHW", 4, s4, nchw, true, false);
    run_permute("permute (0,2,1,3)", 4, s4, heads, true, false);
    run_permute("permute reversed squared", 4, s4, rev, true, true);
    run_permute("permute (1,0,2,3) squared", 4, s4, keep, true, true);
    int32_t neg[] = {-1, 0, -3, 2};
    run_permute("permute negative entries", 4, s4, neg, false, false);
    int64_t s6[] = {2, 1, 3, 2, 4, 3};
    int32_t p6[] = {4, 0, 5, 2, 1, 3};
    run_permute("permute 6-D with a 1", 6, s6, p6, true, false);
    int64_t t2[] = {67, 45};
    int32_t tr[] = {1, 0};
    run_permute("permute (67,45) transpose, partial tiles", 2, t2, tr, false, false);
    int64_t big[] = {2, 64, 70, 33};
    run_permute("permute (2,64,70,33) NHWC->NCHW threaded", 4, big, nchw, false, false);
    run_permute("permute (2,64,70,33) (0,2,1,3) threaded", 4, big, heads, false, false);
    int64_t one[] = {1, 1, 1};
    int32_t p3[] = {2, 0, 1};
    run_permute("permute all ones", 3, one, p3, false, false);
}

/* ---- upsample and resizes ---- */

enum { RS_NEAREST, RS_AREA, RS_BICUBIC };
typedef struct {
    int kind;
    int64_t b, h, w, c, oh, ow;
} ResizeCase;

static Var *build_resize(Ctx *c, Var **in, void *u) {
    ResizeCase *rc = u;
    switch (rc->kind) {
    case RS_NEAREST: return op_upsample_nearest2x(c, in[0]);
    case RS_AREA: return op_resize_area(c, in[0], rc->oh, rc->ow);
    default: return op_resize_bicubic(c, in[0], rc->oh, rc->ow);
    }
}
static void ref_resize_fn(double *const *in, double *out, void *u) {
    ResizeCase *rc = u;
    switch (rc->kind) {
    case RS_NEAREST: ref_upsample_nearest2x(in[0], rc->b, rc->h, rc->w, rc->c, out); break;
    case RS_AREA: ref_resize_area(in[0], rc->b, rc->h, rc->w, rc->c, rc->oh, rc->ow, out); break;
    default: ref_resize_bicubic(in[0], rc->b, rc->h, rc->w, rc->c, rc->oh, rc->ow, out); break;
    }
}

static void run_resize(const char *name, int kind, int64_t b, int64_t h, int64_t w, int64_t c, int64_t oh,
                       int64_t ow) {
    ResizeCase rc = {kind, b, h, w, c, oh, ow};
    OpCheck oc = {.name = name, .n_in = 1, .ndim = {4}, .shape = {{b, h, w, c}}, .build = build_resize,
                  .ref = ref_resize_fn, .user = &rc, .max_fd = 64};
    check_op(&oc);
}

static void test_resize(void) {
    run_resize("upsample_nearest2x (2,3,5,4)", RS_NEAREST, 2, 3, 5, 4, 0, 0);
    run_resize("upsample_nearest2x (1,16,24,64) threaded", RS_NEAREST, 1, 16, 24, 64, 0, 0);
    run_resize("area 37x53 -> 14x17", RS_AREA, 2, 37, 53, 3, 14, 17);
    run_resize("area 256 -> 224", RS_AREA, 1, 256, 256, 2, 224, 224);
    run_resize("area 5x7 -> 12x9 (up)", RS_AREA, 1, 5, 7, 2, 12, 9);
    run_resize("area 8x8 -> 4x4 (integer)", RS_AREA, 2, 8, 8, 3, 4, 4);
    run_resize("area 6x6 -> 6x6 (identity)", RS_AREA, 1, 6, 6, 2, 6, 6);
    run_resize("bicubic 16x16 -> 37x37", RS_BICUBIC, 2, 16, 16, 3, 37, 37);
    run_resize("bicubic 37x29 -> 16x11 (down)", RS_BICUBIC, 1, 37, 29, 2, 16, 11);
    run_resize("bicubic 30x30 -> 10x10 (down by 3)", RS_BICUBIC, 1, 30, 30, 1, 10, 10);
    run_resize("bicubic 5x7 -> 3x12 (mixed)", RS_BICUBIC, 1, 5, 7, 2, 3, 12);
    run_resize("bicubic 1x1 -> 4x4 (all clamped)", RS_BICUBIC, 1, 1, 1, 2, 4, 4);
    run_resize("bicubic 9x9 -> 9x9 (identity)", RS_BICUBIC, 1, 9, 9, 2, 9, 9);
    run_resize("bicubic 48x40 -> 150x130 threaded", RS_BICUBIC, 1, 48, 40, 2, 150, 130);
}

/* Values printed by PyTorch 2.x (float64) for x[i] = sin(0.37 i + 0.1) in NHWC order:
 * F.interpolate(x.permute(0, 3, 1, 2), size, mode=...).permute(0, 2, 3, 1). */
static void test_resize_torch_values(void) {
    static const double bicubic_1x4x5x2_to_7x3[] = {
        0.390432867,  0.756269917,  1.182828030,  1.079835753,  0.272135758,  -0.151393070, -0.165426313,
        -0.028358737, 0.293603851,  0.369815972,  0.329890373,  0.235513500,  -0.757062679, -0.916297700,
        -0.796553395, -0.535492259, 0.310868241,  0.616338315,  0.190165772,  0.028174776,  -0.349553233,
        -0.437656368, -0.385970233, -0.273330767, 0.934199163,  0.942542070,  0.470949950,  0.127822102,
        -0.670393561, -0.870941709, -0.157330337, -0.019460575, 0.299671319,  0.372991221,  0.325193127,
        0.228393974,  -1.078501857, -0.858213552, 0.081946055,  0.503718281,  1.124404460,  1.140374543};
    static const double area_1x7x5x1_to_3x4[] = {0.124262499,  0.087417363,  0.038740696,  -0.015179342,
                                                 -0.063722875, -0.011485725, 0.042305965,  0.090371740,
                                                 -0.016175754, -0.067935275, -0.110500076, -0.138109209};
    const struct {
        const char *name;
        int kind;
        int64_t h, w, c, oh, ow;
        const double *want;
    } cases[] = {{"bicubic (1,4,5,2) -> 7x3 vs torch", RS_BICUBIC, 4, 5, 2, 7, 3, bicubic_1x4x5x2_to_7x3},
                 {"area (1,7,5,1) -> 3x4 vs torch", RS_AREA, 7, 5, 1, 3, 4, area_1x7x5x1_to_3x4}};
    for (int k = 0; k < 2; k++) {
        TestCtx t;
        tctx_init(&t);
        int64_t sh[] = {1, cases[k].h, cases[k].w, cases[k].c};
        Var *x = var_new(&t.nt, DTYPE_F32, 4, sh);
        for (int64_t i = 0; i < tensor_numel(&x->v); i++)
            ((float *)x->v.data)[i] = (float)sin(0.37 * (double)i + 0.1);
        ResizeCase rc = {cases[k].kind, 1, cases[k].h, cases[k].w, cases[k].c, cases[k].oh, cases[k].ow};
        Var *in[1] = {x};
        Var *y = build_resize(&t.nt, in, &rc);
        CHECK_VAR(y);
        if (y) {
            double e =
                compare_f32_f64(cases[k].name, y->v.data, cases[k].want, tensor_numel(&y->v), 2e-6, 1e-6);
            printf("  %-40s max rel err %.2e\n", cases[k].name, e);
            CHECK(e < 2e-6, "%s: max rel err %.3g", cases[k].name, e);
        }
        tctx_free(&t);
    }
}

static void test_errors(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {2};
    int64_t s[] = {2, 3, 4}, s2[] = {2, 5, 5}, s3[] = {3, 4};
    Var *x = tvar_rand(&t, &r, false, -1, 1, 3, s), *y = tvar_rand(&t, &r, false, -1, 1, 3, s2);
    Var *z = tvar_rand(&t, &r, false, -1, 1, 2, s3);
    CHECK(op_concat(&t.c, x, x, 3) == NULL && strstr(addc_error_message(), "axis 3 is out of range"),
          "concat axis 3 of 3 dims: %s", addc_error_message());
    addc_error_clear();
    CHECK(op_concat(&t.c, x, x, -4) == NULL, "concat axis -4 of 3 dims must fail");
    addc_error_clear();
    CHECK(op_concat(&t.c, x, y, 1) == NULL && strstr(addc_error_message(), "differ outside axis"),
          "concat of mismatched shapes: %s", addc_error_message());
    addc_error_clear();
    CHECK(op_concat(&t.c, x, z, 0) == NULL, "concat of different ranks must fail");
    addc_error_clear();
    CHECK(op_slice(&t.c, x, 2, 3, 2) == NULL && strstr(addc_error_message(), "outside axis"),
          "slice past the end: %s", addc_error_message());
    addc_error_clear();
    CHECK(op_slice(&t.c, x, 1, -1, 1) == NULL, "slice from a negative start must fail");
    addc_error_clear();
    CHECK(op_slice(&t.c, x, 7, 0, 1) == NULL, "slice of a bad axis must fail");
    addc_error_clear();
    Var *parts[3];
    CHECK(op_split(&t.c, x, 2, 3, parts) != ADDC_OK && parts[0] == NULL &&
              strstr(addc_error_message(), "3 equal parts"),
          "split 4 into 3: %s", addc_error_message());
    addc_error_clear();
    int32_t dup[] = {0, 1, 1}, oob[] = {0, 1, 3}, neg[] = {0, -4, 1};
    CHECK(op_permute(&t.c, x, dup) == NULL && strstr(addc_error_message(), "(0, 1, 1) is not a permutation"),
          "duplicate permutation: %s", addc_error_message());
    addc_error_clear();
    CHECK(op_permute(&t.c, x, oob) == NULL, "out-of-range permutation must fail");
    addc_error_clear();
    CHECK(op_permute(&t.c, x, neg) == NULL, "permutation entry -4 of 3 dims must fail");
    addc_error_clear();
    int32_t id[] = {0, 1, 2};
    CHECK(op_permute(&t.c, x, id) == x, "the identity permutation returns x itself");
    CHECK(op_resize_area(&t.c, x, 2, 2) == NULL && strstr(addc_error_message(), "NHWC"),
          "resize of a 3-D tensor: %s", addc_error_message());
    addc_error_clear();
    int64_t img[] = {1, 4, 4, 2};
    Var *im = tvar_rand(&t, &r, false, -1, 1, 4, img);
    CHECK(op_resize_bicubic(&t.c, im, 0, 3) == NULL, "resize to zero rows must fail");
    addc_error_clear();
    CHECK(op_upsample_nearest2x(&t.c, z) == NULL, "upsample of a 2-D tensor must fail");
    addc_error_clear();
    CHECK(op_slice(&t.c, NULL, 0, 0, 1) == NULL, "NULL propagates");
    tctx_free(&t);
}

int main(void) {
    test_concat();
    test_slice_split();
    test_permute();
    test_resize();
    test_resize_torch_values();
    test_errors();
    return test_main_end("test_shape");
}
