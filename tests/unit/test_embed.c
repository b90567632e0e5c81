/* Embeddings: the timestep embedding against an f64 reference and values diffusers printed
 * (odd dim, flip, freq shift), its no-op backward; the table embedding forward and
 * scatter-add backward vs finite differences with repeated ids, i64 ids, the same gradient
 * bits on 1 and 3 threads, and bounds errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/ref_embed.h"
#include "tests/test_util.h"

typedef struct {
    int dim;
    bool flip;
    double shift, max_period;
    int64_t b;
    int64_t n, d; /* embedding: ids, width */
} EmbCase;

static Var *build_temb(Ctx *c, Var **in, void *u) {
    EmbCase *ec = u;
    return op_timestep_embedding(c, in[0], ec->dim, ec->flip, ec->shift, ec->max_period);
}
static void ref_temb(double *const *in, double *out, void *u) {
    EmbCase *ec = u;
    ref_timestep_embedding(in[0], ec->b, ec->dim, ec->flip, ec->shift, ec->max_period, out);
}

static void run_temb(const char *name, int64_t b, int dim, bool flip, double shift) {
    EmbCase ec = {.dim = dim, .flip = flip, .shift = shift, .max_period = 10000.0, .b = b};
    OpCheck oc = {.name = name, .n_in = 1, .ndim = {1}, .shape = {{b}}, .lo = {0}, .hi = {1000},
                  .no_grad = {true}, .build = build_temb, .ref = ref_temb, .user = &ec};
    check_op(&oc);
}

static void test_timestep_embedding(void) {
    run_temb("temb SDXL (4, 320) flip, shift 0", 4, 320, true, 0.0);
    run_temb("temb (3, 7) odd, shift 1", 3, 7, false, 1.0);
    run_temb("temb (5, 256) shift 1", 5, 256, false, 1.0);
    run_temb("temb (2, 1) only padding", 2, 1, false, 1.0);
    run_temb("temb (64, 1280) threaded", 64, 1280, true, 0.0);

    /* diffusers.models.embeddings.get_timestep_embedding, t = (0, 1, 37.5, 999); it computes in
     * float32, whose angle at t = 999 is off by up to ~1e-4, hence the tolerance */
    static const double want7[] = {
        0.0000000,  0.0000000, 0.0000000,  1.0000000,  1.0000000,  1.0000000,  0.0000000,
        0.8414710,  0.0099998, 0.0001000,  0.5403023,  0.9999500,  1.0000000,  0.0000000,
        -0.1977988, 0.3662725, 0.0037500,  0.9802427,  0.9305076,  0.9999930,  0.0000000,
        -0.0264608, -0.5356032, 0.0997339, 0.9996498,  -0.8444698, 0.9950141,  0.0000000};
    static const double want6[] = {1.0000000,  1.0000000,  1.0000000,  0.0000000,  0.0000000,  0.0000000,
                                   0.5403023,  0.9989229,  0.9999977,  0.8414710,  0.0463992,  0.0021544,
                                   0.9802427,  -0.1689848, 0.9967381,  -0.1977988, 0.9856187,  0.0807034,
                                   0.9996498,  -0.7286733, -0.5492647, -0.0264608, 0.6848614,  0.8356485};
    TestCtx t;
    tctx_init(&t);
    float ts[] = {0.0f, 1.0f, 37.5f, 999.0f};
    int64_t sh[] = {4};
    Var *tv = tvar_from(&t, ts, false, 1, sh);
    Var *e7 = op_timestep_embedding(&t.nt, tv, 7, false, 1.0, 10000.0);
    Var *e6 = op_timestep_embedding(&t.nt, tv, 6, true, 0.0, 10000.0);
    CHECK_VAR(e7);
    CHECK_VAR(e6);
    if (e7 && e6) {
        double err7 = 0, err6 = 0;
        for (int i = 0; i < 28; i++) err7 = fmax(err7, fabs(((float *)e7->v.data)[i] - want7[i]));
        for (int i = 0; i < 24; i++) err6 = fmax(err6, fabs(((float *)e6->v.data)[i] - want6[i]));
        printf("  temb vs diffusers: dim 7 max abs err %.2e, dim 6 flip %.2e\n", err7, err6);
        CHECK(err7 < 1e-4 && err6 < 1e-4, "timestep embedding differs from diffusers: %.3g, %.3g", err7,
              err6);
    }

    /* a t that requires grad records a node whose backward runs and gives t nothing */
    tctx_reset(&t);
    Var *tg = tvar_from(&t, ts, true, 1, sh);
    Var *y = op_timestep_embedding(&t.c, tg, 8, true, 0.0, 10000.0);
    CHECK(y && y->requires_grad, "timestep embedding of a t that requires grad must be recorded");
    if (y) {
        Var *s = op_sum(&t.c, op_mul(&t.c, y, y));
        CHECK_OK(tape_backward(&t.c, s));
        bool zero = true;
        for (int i = 0; tg->g.data && i < 4; i++) zero = zero && ((float *)tg->g.data)[i] == 0.0f;
        CHECK(zero, "the timestep embedding must give t no gradient");
    }
    tctx_free(&t);
}

/* ---- embedding ---- */

static Var *build_emb(Ctx *c, Var **in, void *u) {
    (void)u;
    return op_embedding(c, in[0], in[1]);
}
static void ref_emb(double *const *in, double *out, void *u) {
    EmbCase *ec = u;
    ref_embedding(in[0], ec->n, in[1], ec->d, out);
}

static void run_emb(const char *name, int32_t nd, const int64_t *ids_shape, int64_t v, int64_t d) {
    EmbCase ec = {.n = 1, .d = d};
    for (int i = 0; i < nd; i++) ec.n *= ids_shape[i];
    OpCheck oc = {.name = name, .n_in = 2, .ndim = {nd, 2}, .lo = {0, -1}, .hi = {(double)v, 1},
                  .is_int = {true, false}, .build = build_emb, .ref = ref_emb, .user = &ec, .max_fd = 64};
    memcpy(oc.shape[0], ids_shape, (size_t)nd * 8);
    oc.shape[1][0] = v;
    oc.shape[1][1] = d;
    check_op(&oc);
}

/* i64 ids give the same output and table gradient as i32 ids; the gradient bits do not
 * depend on the thread count */
static void test_embedding_i64_and_threads(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {11};
    const int64_t n = 4 * 77, v = 40, d = 300;
    int64_t ish[] = {4, 77}, tsh[] = {v, d};
    Tensor i32 = tensor_make(arena_alloc(&t.arena, n * 4), DTYPE_I32, DEVICE_CPU, 2, ish);
    Tensor i64 = tensor_make(arena_alloc(&t.arena, n * 8), DTYPE_I64, DEVICE_CPU, 2, ish);
    for (int64_t p = 0; p < n; p++) {
        int64_t id = (int64_t)(trng_uniform(&r) * (double)v);
        ((int32_t *)i32.data)[p] = (int32_t)id;
        ((int64_t *)i64.data)[p] = id;
    }
    Var *table = tvar_rand(&t, &r, true, -1, 1, 2, tsh);
    float *dy = malloc((size_t)(n * d) * 4);
    trng_fill_f32(&r, dy, n * d, -1, 1);
    int64_t osh[] = {4, 77, d};
    Tensor seed = tensor_make(dy, DTYPE_F32, DEVICE_CPU, 3, osh);
    float *g[3];
    float *y32 = NULL;
    int threads[3] = {1, 3, 1};
    int th = parallel_threads();
    for (int k = 0; k < 3; k++) {
        parallel_set_threads(threads[k]);
        tape_clear(&t.tape); /* a fresh walk: only this iteration's node */
        table->g.data = NULL;
        Var *ids = var_leaf(&t.nt, k == 2 ? i64 : i32, false);
        Var *y = op_embedding(&t.c, ids, table);
        CHECK_VAR(y);
        if (!y) break;
        if (k == 0) y32 = y->v.data;
        if (k == 2)
            CHECK(memcmp(y->v.data, y32, (size_t)(n * d) * 4) == 0, "i64 ids give another forward than i32");
        CHECK_OK(tape_backward_seed(&t.c, y, &seed));
        g[k] = table->g.data;
    }
    parallel_set_threads(th);
    CHECK(memcmp(g[0], g[1], (size_t)(v * d) * 4) == 0, "table gradient differs between 1 and 3 threads");
    CHECK(memcmp(g[0], g[2], (size_t)(v * d) * 4) == 0, "table gradient differs between i32 and i64 ids");
    free(dy);
    tctx_free(&t);
}

static void test_errors(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {3};
    int64_t tsh[] = {7, 4}, ish[] = {3};
    Var *table = tvar_rand(&t, &r, true, -1, 1, 2, tsh);
    Tensor it = tensor_make(arena_alloc(&t.arena, 12), DTYPE_I32, DEVICE_CPU, 1, ish);
    int32_t bad[] = {1, 7, 2};
    memcpy(it.data, bad, 12);
    Var *ids = var_leaf(&t.nt, it, false);
    CHECK(op_embedding(&t.c, ids, table) == NULL && strstr(addc_error_message(), "id 7 at position 1") &&
              strstr(addc_error_message(), "7 rows"),
          "out-of-range id: %s", addc_error_message());
    addc_error_clear();
    ((int32_t *)it.data)[1] = -2;
    CHECK(op_embedding(&t.c, ids, table) == NULL && strstr(addc_error_message(), "id -2"), "negative id: %s",
          addc_error_message());
    addc_error_clear();
    Var *fids = tvar_rand(&t, &r, false, 0, 3, 1, ish);
    CHECK(op_embedding(&t.c, fids, table) == NULL && strstr(addc_error_message(), "i32 or i64"),
          "f32 ids: %s", addc_error_message());
    addc_error_clear();
    int64_t t3[] = {7, 4, 1};
    Var *table3 = tvar_rand(&t, &r, true, -1, 1, 3, t3);
    ((int32_t *)it.data)[1] = 0;
    CHECK(op_embedding(&t.c, ids, table3) == NULL && strstr(addc_error_message(), "(V, D)"), "3-D table: %s",
          addc_error_message());
    addc_error_clear();

    int64_t b[] = {2}, b2[] = {2, 1};
    Var *tv = tvar_rand(&t, &r, false, 0, 999, 1, b), *tv2 = tvar_rand(&t, &r, false, 0, 999, 2, b2);
    CHECK(op_timestep_embedding(&t.c, tv2, 8, true, 0, 10000) == NULL, "2-D t must fail");
    addc_error_clear();
    CHECK(op_timestep_embedding(&t.c, tv, 0, true, 0, 10000) == NULL, "dim 0 must fail");
    addc_error_clear();
    CHECK(op_timestep_embedding(&t.c, tv, 2, true, 1.0, 10000) == NULL &&
              strstr(addc_error_message(), "freq_shift"),
          "dim 2 with shift 1 divides by zero: %s", addc_error_message());
    addc_error_clear();
    CHECK(op_timestep_embedding(&t.c, tv, 8, true, 0, 0) == NULL, "max_period 0 must fail");
    addc_error_clear();
    tctx_free(&t);
}

int main(void) {
    test_timestep_embedding();
    int64_t s2[] = {2, 5}, s1[] = {3}, big[] = {4, 77};
    run_emb("embedding ids (2,5) table (7,9) repeats", 2, s2, 7, 9);
    run_emb("embedding ids (3) table (11,4)", 1, s1, 11, 4);
    run_emb("embedding ids (4,77) table (50,130) threaded", 2, big, 50, 130);
    test_embedding_i64_and_threads();
    test_errors();
    return test_main_end("test_embed");
}
