/* Softmax and multi-head attention: forward vs f64 references, backward vs finite
 * differences (self and cross attention, 1 and 3 heads, Dh != Dv, causal and not, query
 * counts that are not a multiple of the block); a 4096 x 4096 two-head forward and backward
 * under an arena limit far below one full score matrix (memory efficiency), checked on
 * sampled rows; error cases. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/ref_attention.h"
#include "tests/test_util.h"

typedef struct {
    int64_t rows, D;
} SmCase;

static Var *build_softmax(Ctx *c, Var **in, void *u) {
    (void)u;
    return op_softmax(c, in[0]);
}
static void ref_softmax_fn(double *const *in, double *out, void *u) {
    SmCase *s = u;
    ref_softmax(in[0], out, s->rows, s->D);
}

static void test_softmax(void) {
    SmCase a = {12, 10};
    OpCheck oc = {.name = "softmax (3,4,10)", .n_in = 1, .ndim = {3}, .shape = {{3, 4, 10}}, .lo = {-3},
                  .hi = {3}, .build = build_softmax, .ref = ref_softmax_fn, .user = &a};
    check_op(&oc);
    SmCase b = {2, 37};
    OpCheck ob = {.name = "softmax (2,37)", .n_in = 1, .ndim = {2}, .shape = {{2, 37}}, .lo = {-20},
                  .hi = {20}, .build = build_softmax, .ref = ref_softmax_fn, .user = &b};
    check_op(&ob);
}

static Var *build_attn(Ctx *c, Var **in, void *u) {
    RefAttnShape *s = u;
    return op_attention(c, in[0], in[1], in[2], (int)s->NH, s->scale, s->causal);
}
static void ref_attn_fn(double *const *in, double *out, void *u) { ref_attention(u, in[0], in[1], in[2], out); }

static void run_attn(const char *name, RefAttnShape s, int64_t max_fd) {
    OpCheck oc = {.name = name, .n_in = 3, .build = build_attn, .ref = ref_attn_fn, .user = &s, .max_fd = max_fd};
    int64_t w[3] = {s.NH * s.Dh, s.NH * s.Dh, s.NH * s.Dv}, n[3] = {s.Nq, s.Nk, s.Nk};
    double r[3] = {2.0, 2.0, 1.0}; /* wider q, k ranges: peaked attention rows */
    for (int i = 0; i < 3; i++) {
        oc.ndim[i] = 3;
        oc.shape[i][0] = s.B;
        oc.shape[i][1] = n[i];
        oc.shape[i][2] = w[i];
        oc.lo[i] = -r[i];
        oc.hi[i] = r[i];
    }
    check_op(&oc);
}

static void test_attention_small(void) {
    run_attn("attention self NH=1 Dh=4 Dv=3", (RefAttnShape){2, 6, 6, 1, 4, 3, 0, false}, 64);
    run_attn("attention self NH=3 Dh=4 Dv=5", (RefAttnShape){2, 7, 7, 3, 4, 5, 0, false}, 64);
    run_attn("attention cross NH=3 Nq=9 Nk=4 Dh=8 Dv=2", (RefAttnShape){2, 9, 4, 3, 8, 2, 0, false}, 64);
    run_attn("attention cross NH=1 scale=0.3", (RefAttnShape){1, 5, 11, 1, 9, 6, 0.3, false}, 64);
    run_attn("attention causal NH=1", (RefAttnShape){2, 8, 8, 1, 4, 4, 0, true}, 64);
    run_attn("attention causal NH=3 Dh=4 Dv=3", (RefAttnShape){2, 9, 9, 3, 4, 3, 0, true}, 64);
    run_attn("attention causal Nq=6 < Nk=9 NH=2", (RefAttnShape){1, 6, 9, 2, 4, 5, 0, true}, 64);
    run_attn("attention causal Nq=9 > Nk=5 NH=2", (RefAttnShape){1, 9, 5, 2, 4, 5, 0, true}, 64);
}

/* Several query blocks with a partial last one, and several key blocks (the online softmax
 * rescaling across key blocks, and the causal skipping of blocks): 600 queries and 8192
 * keys are not multiples of the block sizes (96 query rows, 512 keys). */
static void test_attention_blocks(void) {
    run_attn("attention Nq=600 Nk=5 NH=2 (query blocks)", (RefAttnShape){1, 600, 5, 2, 4, 3, 0, false}, 12);
    run_attn("attention causal Nq=Nk=600 NH=2 (q/k blocks)", (RefAttnShape){1, 600, 600, 2, 4, 3, 0, true}, 12);
    run_attn("attention Nq=100 Nk=8192 (key blocks)", (RefAttnShape){1, 100, 8192, 1, 4, 3, 0, false}, 8);
    run_attn("attention causal Nq=100 Nk=1100 NH=2", (RefAttnShape){1, 100, 1100, 2, 4, 3, 0, true}, 12);
}

/* Inputs and gradient buffers in exact-size heap allocations, with head widths that are
 * not multiples of 16: a sanitizer build (ADDC_SANITIZE) catches any access past a head's
 * columns at the end of a tensor. Values and all three gradients against the f64 reference. */
static void test_attention_heap_exact(void) {
    for (int causal = 0; causal < 2; causal++) {
        RefAttnShape s = {2, 13, 11, 3, 5, 3, 0, causal == 1};
        int64_t wq = s.NH * s.Dh, wv = s.NH * s.Dv;
        int64_t n[3] = {s.B * s.Nq * wq, s.B * s.Nk * wq, s.B * s.Nk * wv}, no = s.B * s.Nq * wv;
        int64_t shp[3][3] = {{s.B, s.Nq, wq}, {s.B, s.Nk, wq}, {s.B, s.Nk, wv}}, so[3] = {s.B, s.Nq, wv};
        TestCtx t;
        tctx_init(&t);
        TestRng r = {77 + (uint64_t)causal};
        float *val[3], *grad[3], *seed = malloc((size_t)no * 4);
        double *v64[3], *g64[3], *d64 = malloc((size_t)no * 8), *o64 = malloc((size_t)no * 8);
        Var *in[3];
        for (int i = 0; i < 3; i++) {
            val[i] = malloc((size_t)n[i] * 4);
            grad[i] = calloc((size_t)n[i], 4);
            v64[i] = malloc((size_t)n[i] * 8);
            g64[i] = malloc((size_t)n[i] * 8);
            trng_fill_f32(&r, val[i], n[i], -1.5, 1.5);
            for (int64_t e = 0; e < n[i]; e++) v64[i][e] = val[i][e];
            in[i] = var_leaf(&t.nt, tensor_make(val[i], DTYPE_F32, DEVICE_CPU, 3, shp[i]), true);
            in[i]->g.data = grad[i];
        }
        trng_fill_f32(&r, seed, no, -1, 1);
        for (int64_t e = 0; e < no; e++) d64[e] = seed[e];
        Var *y = op_attention(&t.c, in[0], in[1], in[2], (int)s.NH, 0, s.causal);
        CHECK_VAR(y);
        if (y) {
            Tensor sd = tensor_make(seed, DTYPE_F32, DEVICE_CPU, 3, so);
            CHECK_OK(tape_backward_seed(&t.c, y, &sd));
            ref_attention(&s, v64[0], v64[1], v64[2], o64);
            ref_attention_backward(&s, v64[0], v64[1], v64[2], d64, g64[0], g64[1], g64[2]);
            double ef = compare_f32_f64("heap fwd", y->v.data, o64, no, 1e-5, 1e-6), eg = 0;
            for (int i = 0; i < 3; i++) {
                double e = compare_f32_f64("heap grad", grad[i], g64[i], n[i], 1e-5, 1e-3);
                eg = e > eg ? e : eg;
            }
            CHECK(ef <= 1e-5 && eg <= 1e-5, "attention on exact heap buffers (causal %d): fwd %.3g grad %.3g", causal,
                  ef, eg);
            printf("  attention heap buffers Dh=5 Dv=3%s: fwd %.2e  grad %.2e (vs analytic f64)\n",
                   causal ? " causal" : "", ef, eg);
        }
        for (int i = 0; i < 3; i++) free(val[i]), free(grad[i]), free(v64[i]), free(g64[i]);
        free(seed), free(d64), free(o64);
        tctx_free(&t);
    }
}

/* forward and backward are bitwise the same on 1 and 3 threads (one item per thread) */
static void test_attention_threads(void) {
    int64_t sq[3] = {2, 150, 24}, sv[3] = {2, 150, 18};
    float *res[2][4];
    int th = parallel_threads(), counts[2] = {1, 3};
    for (int t = 0; t < 2; t++) {
        parallel_set_threads(counts[t]);
        TestCtx tc;
        tctx_init(&tc);
        TestRng r = {31};
        Var *q = tvar_rand(&tc, &r, true, -2, 2, 3, sq), *k = tvar_rand(&tc, &r, true, -2, 2, 3, sq);
        Var *v = tvar_rand(&tc, &r, true, -1, 1, 3, sv);
        Var *y = op_attention(&tc.c, q, k, v, 3, 0, true);
        CHECK_VAR(y);
        if (!y) {
            tctx_free(&tc);
            parallel_set_threads(th);
            for (int u = 0; u < t; u++)
                for (int i = 0; i < 4; i++) free(res[u][i]);
            return;
        }
        CHECK_OK(tape_backward(&tc.c, op_mean_square(&tc.c, y)));
        Var *outs[4] = {y, q, k, v};
        for (int i = 0; i < 4; i++) {
            const Tensor *src = i == 0 ? &y->v : &outs[i]->g;
            int64_t nb = tensor_nbytes(&outs[i]->v);
            res[t][i] = malloc((size_t)nb);
            if (src->data) memcpy(res[t][i], src->data, (size_t)nb);
            else memset(res[t][i], 0, (size_t)nb);
        }
        tctx_free(&tc);
    }
    parallel_set_threads(th);
    int64_t nb[4] = {2 * 150 * 18 * 4, 2 * 150 * 24 * 4, 2 * 150 * 24 * 4, 2 * 150 * 18 * 4};
    const char *nm[4] = {"output", "dq", "dk", "dv"};
    for (int i = 0; i < 4; i++) {
        CHECK(memcmp(res[0][i], res[1][i], (size_t)nb[i]) == 0, "attention %s differs between 1 and 3 threads", nm[i]);
        free(res[0][i]);
        free(res[1][i]);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Nq = Nk = 4096, NH = 2, Dh = 64 forward and backward under a 24 MB arena limit (one head's
 * full score matrix alone is 64 MB, all heads 128 MB); output rows and dq rows (which
 * depend only on their own query) compared against f64 references on sampled rows. */
static void test_attention_memory(void) {
    const int64_t N = 4096, NH = 2, D = 64, W = NH * D;
    const int64_t limit = 24 << 20;
    CHECK(limit < NH * N * N * 4 / 4, "the limit must be below a quarter of the all-heads score matrix");
    Arena ar;
    arena_init(&ar, 4 << 20, limit);
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&ar, &tape, DEVICE_CPU);
    int64_t sh[3] = {1, N, W};
    TestRng r = {2024};
    Var *in[3];
    for (int i = 0; i < 3; i++) {
        in[i] = var_new(&c, DTYPE_F32, 3, sh);
        CHECK_VAR(in[i]);
        if (!in[i]) goto out;
        trng_fill_f32(&r, in[i]->v.data, N * W, i < 2 ? -1.5 : -1.0, i < 2 ? 1.5 : 1.0);
        in[i]->requires_grad = true;
    }
    double t0 = now_s();
    Var *y = op_attention(&c, in[0], in[1], in[2], (int)NH, 0, false);
    double t1 = now_s();
    CHECK(y != NULL, "attention 4096x4096 under a %lld MB arena limit failed: %s", (long long)(limit >> 20),
          addc_error_message());
    if (!y) goto out;
    float *seed = malloc((size_t)(N * W) * 4);
    trng_fill_f32(&r, seed, N * W, -1, 1);
    Tensor sd = tensor_make(seed, DTYPE_F32, DEVICE_CPU, 3, sh);
    double t2 = now_s();
    Status st = tape_backward_seed(&c, y, &sd);
    double t3 = now_s();
    CHECK(st == ADDC_OK, "attention backward under the arena limit failed: %s", addc_error_message());
    printf("  attention 1x4096x4096 NH=2 Dh=64: fwd %.1f ms, bwd %.1f ms, arena peak %.1f MB (limit %lld MB)\n",
           (t1 - t0) * 1e3, (t3 - t2) * 1e3, (double)arena_peak(&ar) / (1 << 20), (long long)(limit >> 20));

    RefAttnShape s = {1, N, N, NH, D, D, 0, false};
    double *q64 = malloc((size_t)(N * W) * 8), *k64 = malloc((size_t)(N * W) * 8), *v64 = malloc((size_t)(N * W) * 8);
    for (int64_t i = 0; i < N * W; i++) {
        q64[i] = ((float *)in[0]->v.data)[i];
        k64[i] = ((float *)in[1]->v.data)[i];
        v64[i] = ((float *)in[2]->v.data)[i];
    }
    const int64_t rows[] = {0, 1, 511, 512, 2047, 3000, 4095};
    double ef = 0, eg = 0, *ro = malloc((size_t)W * 8), *p = malloc((size_t)N * 8), *dq = malloc((size_t)W * 8);
    double scale = 1.0 / sqrt((double)D);
    for (size_t t = 0; t < sizeof rows / sizeof rows[0]; t++) {
        int64_t i = rows[t];
        ref_attention_row(&s, q64, k64, v64, 0, i, ro);
        double e = compare_f32_f64(NULL, (float *)y->v.data + i * W, ro, W, 0, 1e-6);
        ef = e > ef ? e : ef;
        if (st != ADDC_OK) continue;
        /* dq_i = scale * sum_j P_ij (dO_i . v_j - dO_i . O_i) k_j, per head */
        for (int64_t h = 0; h < NH; h++) {
            double m = -INFINITY, z = 0, di = 0;
            for (int64_t j = 0; j < N; j++) {
                double d = 0;
                for (int64_t e2 = 0; e2 < D; e2++) d += q64[i * W + h * D + e2] * k64[j * W + h * D + e2];
                p[j] = scale * d;
                m = p[j] > m ? p[j] : m;
            }
            for (int64_t j = 0; j < N; j++) z += (p[j] = exp(p[j] - m));
            for (int64_t e2 = 0; e2 < D; e2++) di += (double)seed[i * W + h * D + e2] * ro[h * D + e2];
            for (int64_t e2 = 0; e2 < D; e2++) dq[h * D + e2] = 0;
            for (int64_t j = 0; j < N; j++) {
                double dp = 0;
                for (int64_t e2 = 0; e2 < D; e2++) dp += (double)seed[i * W + h * D + e2] * v64[j * W + h * D + e2];
                double ds = p[j] / z * (dp - di);
                for (int64_t e2 = 0; e2 < D; e2++) dq[h * D + e2] += scale * ds * k64[j * W + h * D + e2];
            }
        }
        e = compare_f32_f64(NULL, (float *)in[0]->g.data + i * W, dq, W, 0, 1e-4);
        eg = e > eg ? e : eg;
    }
    CHECK(ef <= 1e-5, "4096x4096 attention: sampled rows max rel err %.3g", ef);
    CHECK(eg <= 1e-4, "4096x4096 attention: sampled dq rows max rel err %.3g", eg);
    printf("  attention 1x4096x4096 sampled rows: out err %.2e, dq err %.2e\n", ef, eg);
    free(q64), free(k64), free(v64), free(ro), free(p), free(dq), free(seed);
out:
    tape_free(&tape);
    arena_free(&ar);
    addc_error_clear();
}

static void test_errors(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {1};
    int64_t sq[3] = {2, 5, 12}, sk[3] = {2, 7, 12}, sv[3] = {2, 7, 9}, sb[3] = {2, 6, 9}, s0[3] = {2, 0, 12};
    Var *q = tvar_rand(&t, &r, false, -1, 1, 3, sq), *k = tvar_rand(&t, &r, false, -1, 1, 3, sk);
    Var *v = tvar_rand(&t, &r, false, -1, 1, 3, sv), *vb = tvar_rand(&t, &r, false, -1, 1, 3, sb);
    Var *k0 = var_new(&t.nt, DTYPE_F32, 3, s0), *v0 = var_new(&t.nt, DTYPE_F32, 3, s0);
    CHECK(op_attention(&t.c, q, k, v, 3, 0, false) != NULL, "valid attention failed: %s", addc_error_message());
    CHECK(op_attention(&t.c, q, k, v, 2, 0, false) == NULL && strstr(addc_error_message(), "heads"),
          "heads not dividing v's width not refused: %s", addc_error_message());
    addc_error_clear();
    CHECK(op_attention(&t.c, q, k, vb, 3, 0, false) == NULL, "k and v with different Nk not refused");
    addc_error_clear();
    CHECK(op_attention(&t.c, q, k0, v0, 3, 0, false) == NULL, "Nk = 0 not refused");
    addc_error_clear();
    CHECK(op_softmax(&t.c, NULL) == NULL, "NULL input must propagate");
    addc_error_clear();
    tctx_free(&t);
}

int main(void) {
    test_softmax();
    test_attention_small();
    test_attention_blocks();
    test_attention_heap_exact();
    test_attention_threads();
    test_attention_memory();
    test_errors();
    return test_main_end("test_attention");
}
