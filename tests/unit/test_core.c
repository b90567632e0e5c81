/* core: dtype conversions (round to nearest even, NaN kept), arena (peak, marks, limit),
 * thread pool, meta device, autograd (frozen inputs, shared inputs, checkpointed regions
 * bit-equal to plain backward, create-graph basics). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

static float bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static uint32_t f_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* the float nearest to x among all 65536 values of a 16-bit format (ties to even), found by
 * brute force: an independent reference for the converters */
static int nearest16(double x, float (*to32)(uint16_t), uint16_t *best_out) {
    double best = INFINITY;
    uint16_t bestv = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = to32((uint16_t)h);
        if (isnan(f)) continue;
        double d = fabs((double)f - x);
        if (d < best || (d == best && ((h & 1) == 0) && (bestv & 1))) {
            if (d == best && signbit(f) != signbit(x)) continue;
            best = d;
            bestv = (uint16_t)h;
        }
    }
    *best_out = bestv;
    return 1;
}

static void test_dtype(void) {
    /* every 16-bit value round-trips exactly */
    int bad_bf = 0, bad_h = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float fb = bf16_to_f32((uint16_t)h), fh = f16_to_f32((uint16_t)h);
        if (!isnan(fb) && f32_to_bf16(fb) != h) bad_bf++;
        if (!isnan(fh) && f32_to_f16(fh) != h) bad_h++;
        if (isnan(fb) && !isnan(bf16_to_f32(f32_to_bf16(fb)))) bad_bf++;
        if (isnan(fh) && !isnan(f16_to_f32(f32_to_f16(fh)))) bad_h++;
    }
    CHECK(bad_bf == 0, "%d bf16 values do not round-trip", bad_bf);
    CHECK(bad_h == 0, "%d f16 values do not round-trip", bad_h);
    /* random floats (normal, subnormal for f16, near overflow) against brute-force nearest,
     * exact midpoints for ties-to-even */
    TestRng r = {99};
    int wrong_b = 0, wrong_h = 0;
    for (int i = 0; i < 400; i++) {
        double mag = pow(2.0, trng_range(&r, -26, 16.5));
        float x = (float)(trng_uniform(&r) < 0.5 ? -mag : mag);
        uint16_t want;
        nearest16(x, f16_to_f32, &want);
        if (fabs((double)x) >= 65520.0) want = (uint16_t)(signbit(x) ? 0xfc00 : 0x7c00);
        if (f32_to_f16(x) != want && !(f16_to_f32(want) == f16_to_f32(f32_to_f16(x)))) wrong_h++;
        nearest16(x, bf16_to_f32, &want);
        if (f32_to_bf16(x) != want && bf16_to_f32(want) != bf16_to_f32(f32_to_bf16(x))) wrong_b++;
    }
    CHECK(wrong_h == 0, "%d floats not rounded to the nearest f16", wrong_h);
    CHECK(wrong_b == 0, "%d floats not rounded to the nearest bf16", wrong_b);
    /* ties to even: 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125 -> 1.0 (even) */
    CHECK(f32_to_bf16(1.00390625f) == 0x3f80, "bf16 tie not to even: %04x", f32_to_bf16(1.00390625f));
    CHECK(f32_to_bf16(1.01171875f) == 0x3f82, "bf16 tie (odd below) not to even: %04x", f32_to_bf16(1.01171875f));
    CHECK(f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00, "f16 tie not to even");
    CHECK(f32_to_f16(65520.0f) == 0x7c00 && f32_to_f16(65519.0f) == 0x7bff, "f16 overflow threshold");
    CHECK(isnan(bf16_to_f32(f32_to_bf16(NAN))) && isnan(f16_to_f32(f32_to_f16(-NAN))), "NaN not kept");
    CHECK(f32_to_bf16(bits_f(0x7f800001u)) != 0x7f80, "signalling NaN became inf in bf16");
    CHECK(f32_to_f16(bits_f(0x7f800001u)) != 0x7c00, "signalling NaN became inf in f16");
    CHECK(f32_to_bf16(INFINITY) == 0x7f80 && f32_to_f16(-INFINITY) == 0xfc00, "inf kept");
    CHECK(f32_to_f16(5.9604644775390625e-8f) == 1 && f32_to_f16(2.98023223876953125e-8f) == 0,
          "f16 smallest subnormal / half of it (tie to even 0)");
    CHECK(f_bits(f16_to_f32(0x8000)) == 0x80000000u, "f16 -0");
    /* generic convert + names */
    float src[4] = {1.5f, -2.25f, 300.0f, NAN};
    int32_t i32[4];
    uint8_t u8[4];
    dtype_convert(i32, DTYPE_I32, src, DTYPE_F32, 4);
    dtype_convert(u8, DTYPE_U8, src, DTYPE_F32, 4);
    CHECK(i32[0] == 1 && i32[1] == -2 && i32[2] == 300 && i32[3] == 0, "f32 -> i32");
    CHECK(u8[0] == 1 && u8[1] == 0 && u8[2] == 255, "f32 -> u8 saturates");
    CHECK(dtype_parse("bfloat16") == DTYPE_BF16 && dtype_parse("nope") == DTYPE_COUNT, "dtype_parse");
    CHECK(dtype_size(DTYPE_F16) == 2 && dtype_size(DTYPE_I64) == 8, "dtype_size");
}

static void test_arena(void) {
    Arena a;
    arena_init(&a, 1024, 0);
    void *p = arena_alloc(&a, 100);
    CHECK(p && ((uintptr_t)p % 64) == 0, "arena alignment");
    ArenaMark m = arena_mark(&a);
    void *q = arena_alloc(&a, 5000); /* bigger than a block */
    CHECK(q != NULL, "large allocation");
    int64_t peak = arena_peak(&a);
    CHECK(peak >= 5100, "peak %lld", (long long)peak);
    arena_reset_to(&a, m);
    CHECK(arena_used(&a) == 128, "used after reset_to: %lld", (long long)arena_used(&a));
    void *q2 = arena_alloc(&a, 10);
    CHECK(q2 != NULL, "alloc after reset");
    arena_reset(&a);
    CHECK(arena_used(&a) == 0 && arena_peak(&a) == peak, "reset keeps peak");
    int64_t reserved = a.reserved;
    for (int k = 0; k < 3; k++) {
        arena_reset(&a);
        arena_alloc(&a, 100);
        arena_alloc(&a, 5000);
    }
    CHECK(a.reserved == reserved, "steady state allocates no new blocks (%lld -> %lld)", (long long)reserved,
          (long long)a.reserved);
    arena_free(&a);
    Arena lim;
    arena_init(&lim, 1024, 4096);
    CHECK(arena_alloc(&lim, 4000) != NULL, "within limit");
    CHECK(arena_alloc(&lim, 200) == NULL && strstr(addc_error_message(), "arena exhausted"),
          "limit not enforced: %s", addc_error_message());
    addc_error_clear();
    arena_free(&lim);
}

typedef struct {
    int64_t *hits;
} ParJob;
static void par_body(void *ctx, int64_t b, int64_t e) {
    ParJob *j = ctx;
    for (int64_t i = b; i < e; i++) j->hits[i]++;
}

static void test_parallel(void) {
    int saved = parallel_threads();
    int counts[] = {1, 2, 3, 7};
    for (int k = 0; k < 4; k++) {
        parallel_set_threads(counts[k]);
        int64_t n = 100003;
        int64_t *hits = calloc((size_t)n, 8);
        ParJob j = {hits};
        parallel_for(n, 1, par_body, &j);
        parallel_for(n, 1000, par_body, &j);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) bad += hits[i] != 2;
        CHECK(bad == 0, "%d threads: %lld indices not visited exactly once per loop", counts[k], (long long)bad);
        free(hits);
    }
    parallel_set_threads(saved);
}

static void test_meta(void) {
    Arena a;
    arena_init(&a, 1 << 16, 0);
    Ctx c = ctx_make(&a, NULL, DEVICE_META);
    int64_t s[] = {4096, 4096, 64};
    Var *x = var_new(&c, DTYPE_F32, 3, s);
    CHECK(x && x->v.data == NULL && x->v.device == DEVICE_META, "meta var has no data");
    Var *y = op_sum_to(&c, op_mul(&c, x, x), 1, s + 2);
    CHECK(y && y->v.data == NULL && y->v.shape[0] == 64, "meta ops give shapes only");
    CHECK(arena_peak(&a) < 4096, "meta allocated %lld bytes", (long long)arena_peak(&a));
    addc_error_clear();
    arena_free(&a);
}

/* ---- autograd ---- */

typedef struct {
    Var *w; /* parameter read inside the region (persistent grad buffer) */
} RegionUser;

static Var *region(Ctx *c, Var *const *in, int n_in, void *user) {
    (void)n_in;
    RegionUser *u = user;
    Var *h = op_mul(c, in[0], u->w);
    h = op_add(c, op_mul(c, h, h), in[1]);
    h = op_rsqrt(c, op_mul(c, h, h), 1.0);
    return op_scale(c, op_mul(c, h, in[0]), 3.0, 0.5);
}

static Var *nested(Ctx *c, Var *const *in, int n_in, void *user) {
    Var *h = op_checkpoint(c, region, user, in, n_in);
    Var *in2[2] = {h, in[1]};
    return op_checkpoint(c, region, user, in2, 2);
}

static void run_region(int mode, float *gx, float *gb, float *gw, float *y_out) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {5};
    int64_t s[] = {3, 8, 5}, sw[] = {5};
    Var *x = tvar_rand(&t, &r, true, -1, 1, 3, s);
    Var *b = tvar_rand(&t, &r, true, -1, 1, 3, s);
    float wv[5], wg[5] = {0};
    trng_fill_f32(&r, wv, 5, 0.5, 1.5);
    Var w;
    var_init_param(&w, tensor_make(wv, DTYPE_F32, DEVICE_CPU, 1, sw), tensor_make(wg, DTYPE_F32, DEVICE_CPU, 1, sw),
                   true, "w");
    RegionUser u = {&w};
    Var *in[2] = {x, b};
    Var *y;
    if (mode == 0) {
        y = region(&t.c, in, 2, &u);
        Var *in2[2] = {y, b};
        y = region(&t.c, in2, 2, &u);
    } else {
        y = nested(&t.c, in, 2, &u);
    }
    Var *loss = op_sum(&t.c, op_mul(&t.c, y, y));
    CHECK_OK(tape_backward(&t.c, loss));
    memcpy(gx, x->g.data, 120 * 4);
    memcpy(gb, b->g.data, 120 * 4);
    memcpy(gw, wg, 5 * 4);
    memcpy(y_out, y->v.data, 120 * 4);
    tctx_free(&t);
}

static void test_checkpoint(void) {
    float gx0[120], gb0[120], gw0[5], y0[120], gx1[120], gb1[120], gw1[5], y1[120];
    run_region(0, gx0, gb0, gw0, y0);
    run_region(1, gx1, gb1, gw1, y1);
    CHECK(memcmp(y0, y1, sizeof y0) == 0, "checkpointed forward differs");
    CHECK(memcmp(gx0, gx1, sizeof gx0) == 0, "checkpointed input gradient differs from plain");
    CHECK(memcmp(gb0, gb1, sizeof gb0) == 0, "checkpointed second input gradient differs from plain");
    CHECK(memcmp(gw0, gw1, sizeof gw0) == 0, "checkpointed parameter gradient differs from plain");
    double sum = 0;
    for (int i = 0; i < 120; i++) sum += fabs(gx0[i]);
    CHECK(sum > 0, "gradients are all zero: the comparison would be empty");

    /* a region must receive every outer variable it differentiates through as an input */
    TestCtx t;
    tctx_init(&t);
    TestRng r = {6};
    int64_t s[] = {4};
    Var *x = tvar_rand(&t, &r, true, -1, 1, 1, s);
    Var *hidden = op_scale(&t.c, x, 2.0, 0.0); /* an outer non-leaf */
    RegionUser u = {hidden}; /* read inside via user data, not passed as an input: not allowed */
    Var *in[2] = {x, x};
    Var *y = op_checkpoint(&t.c, region, &u, in, 2);
    Status st = tape_backward(&t.c, op_sum(&t.c, y));
    CHECK(st != ADDC_OK && strstr(addc_error_message(), "from outside the region"),
          "outer variable misuse not reported: %s", addc_error_message());
    addc_error_clear();
    tctx_free(&t);
}

static void test_frozen_and_shared(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {8};
    int64_t s[] = {6};
    Var *x = tvar_rand(&t, &r, true, -1, 1, 1, s);
    Var *w = tvar_rand(&t, &r, false, -1, 1, 1, s); /* frozen weight */
    Var *y = op_sum(&t.c, op_mul(&t.c, op_mul(&t.c, x, w), x)); /* x used twice */
    CHECK_OK(tape_backward(&t.c, y));
    float *g = x->g.data, *xv = x->v.data, *wv = w->v.data;
    double err = 0;
    for (int i = 0; i < 6; i++) err = fmax(err, fabs(g[i] - 2 * wv[i] * xv[i]));
    CHECK(err < 1e-6, "shared-input gradient err %g", err);
    CHECK(w->g.data == NULL, "frozen weight got a gradient");
    /* no tape: nothing recorded */
    int32_t before = t.tape.n;
    Var *z = op_mul(&t.nt, x, w);
    CHECK(z && !z->requires_grad && t.tape.n == before, "no-tape op was recorded");
    /* nothing requiring grad: nothing recorded even with a tape */
    Var *q = op_mul(&t.c, w, w);
    CHECK(q && !q->requires_grad && t.tape.n == before, "op on frozen inputs was recorded");
    tctx_free(&t);
}

/* create-graph: d/dx of sum((d/dx sum(x^3))^2) = d/dx sum(9 x^4) = 36 x^3 */
static void test_double_backward(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {9};
    int64_t s[] = {5};
    Var *x = tvar_rand(&t, &r, true, -1, 1, 1, s);
    Var *y = op_sum(&t.c, op_mul(&t.c, op_mul(&t.c, x, x), x));
    Var *g = NULL;
    CHECK_OK(autograd_grad(&t.c, y, NULL, &x, 1, &g, true));
    CHECK(g && g->requires_grad, "create-graph gradient is not differentiable");
    if (!g) return;
    Var *r1 = op_sum(&t.c, op_mul(&t.c, g, g));
    CHECK_OK(tape_backward(&t.c, r1));
    const float *xv = x->v.data, *gv = g->v.data, *g2 = x->g.data;
    double e1 = 0, e2 = 0;
    for (int i = 0; i < 5; i++) {
        e1 = fmax(e1, fabs(gv[i] - 3 * xv[i] * xv[i]));
        e2 = fmax(e2, fabs(g2[i] - 36 * xv[i] * xv[i] * xv[i]));
    }
    CHECK(e1 < 1e-6 && e2 < 1e-5, "double backward errors %g %g", e1, e2);
    /* an op with no create-graph backward on the path is refused by name */
    Var *z = op_sum(&t.c, op_rsqrt(&t.c, op_mul(&t.c, x, x), 1.0));
    Var *gz = NULL;
    Status st = autograd_grad(&t.c, z, NULL, &x, 1, &gz, true);
    CHECK(st != ADDC_OK && strstr(addc_error_message(), "rsqrt"), "missing graph backward not named: %s",
          addc_error_message());
    addc_error_clear();
    tctx_free(&t);
}

/* two backward passes over one tape: the second must not see the first's gradients */
static void test_two_backwards(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {10};
    int64_t s[] = {4};
    Var *x = tvar_rand(&t, &r, true, -1, 1, 1, s);
    Var *h = op_mul(&t.c, x, x); /* shared intermediate */
    Var *l1 = op_sum(&t.c, h);
    Var *l2 = op_sum(&t.c, op_scale(&t.c, h, 3.0, 0.0));
    CHECK_OK(tape_backward(&t.c, l1));
    float g1[4];
    memcpy(g1, x->g.data, sizeof g1);
    CHECK_OK(tape_backward(&t.c, l2));
    const float *xv = x->v.data, *g = x->g.data;
    double err = 0;
    for (int i = 0; i < 4; i++) err = fmax(err, fabs(g[i] - (g1[i] + 6.0f * xv[i])));
    CHECK(err < 1e-6, "second backward over a shared intermediate is off by %g", err);
    tctx_free(&t);
}

int main(void) {
    test_two_backwards();
    test_dtype();
    test_arena();
    test_parallel();
    test_meta();
    test_checkpoint();
    test_frozen_and_shared();
    test_double_backward();
    return test_main_end("test_core");
}
