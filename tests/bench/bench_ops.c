/* tests/bench/bench_ops: fp32 op throughput at SD-UNet shapes (linear, conv2d 3x3, attention),
 * the addc side of tests/bench/run.sh (tests/bench/bench_ops_torch.py is the PyTorch side; both
 * print the same table, run.sh joins them).
 *
 * Thread count from ADDC_THREADS (default: all online CPUs). Each op runs `warmup` times, then
 * `reps` timed times; the median is reported in GFLOP/s, counting 2 FLOPs per multiply-add
 * (attention: 4 * B * NH * Nq * Nk * Dh). The forward runs without a tape. With --bwd a second
 * column times forward + backward on a tape (the work counted as 3x the forward for linear and
 * conv, 3.5x for attention, as FlashAttention counts its backward as 2.5 forwards).
 *
 * Usage: bench_ops [--bwd] [--reps N] [--warmup N] [--filter SUBSTRING] [--list]
 * (--list prints the "op shape" keys, one a line, and exits.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/test_util.h"

typedef enum BenchKind { BENCH_LINEAR, BENCH_CONV2D, BENCH_ATTENTION } BenchKind;

typedef struct BenchCase {
    BenchKind kind;
    const char *shape; /* the key run.sh joins on; same text in bench_ops_torch.py */
    int64_t a, b, c, d, e, f;
    /* linear: a = M rows, b = Din, c = Dout
     * conv2d: a = B, b = H, c = W, d = Cin, e = Cout (3x3, stride 1, pad 1, bias)
     * attention: a = B, b = NH, c = Nq, d = Nk, e = Dh */
} BenchCase;

static const BenchCase cases[] = {
    {BENCH_LINEAR, "8192x320->1280", 8192, 320, 1280, 0, 0, 0},
    {BENCH_LINEAR, "2048x640->5120", 2048, 640, 5120, 0, 0, 0},
    {BENCH_LINEAR, "512x1280->1280", 512, 1280, 1280, 0, 0, 0},
    {BENCH_CONV2D, "2x64x64x320->320", 2, 64, 64, 320, 320, 0},
    {BENCH_CONV2D, "2x32x32x640->640", 2, 32, 32, 640, 640, 0},
    {BENCH_CONV2D, "2x16x16x1280->1280", 2, 16, 16, 1280, 1280, 0},
    /* the Fashion-MNIST toy (configs/models/toy_unet.yaml, batch 64): small maps, few channels */
    {BENCH_CONV2D, "64x16x16x32->32", 64, 16, 16, 32, 32, 0},
    {BENCH_CONV2D, "64x8x8x48->48", 64, 8, 8, 48, 48, 0},
    {BENCH_ATTENTION, "B2.NH5.4096x4096.Dh64", 2, 5, 4096, 4096, 64, 0},
    {BENCH_ATTENTION, "B2.NH5.4096x77.Dh64", 2, 5, 4096, 77, 64, 0},
    {BENCH_ATTENTION, "B2.NH10.1024x1024.Dh64", 2, 10, 1024, 1024, 64, 0},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static const char *kind_name[] = {"linear", "conv2d", "attention"};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double case_flops(const BenchCase *bc) {
    switch (bc->kind) {
    case BENCH_LINEAR: return 2.0 * (double)bc->a * (double)bc->b * (double)bc->c;
    case BENCH_CONV2D: return 2.0 * (double)(bc->a * bc->b * bc->c) * (double)bc->e * (double)bc->d * 9.0;
    default: return 4.0 * (double)(bc->a * bc->b) * (double)bc->c * (double)bc->d * (double)bc->e;
    }
}

typedef struct BenchInputs {
    Var *in[3];
    int n;
} BenchInputs;

/* Fresh leaves in arena memory (uniform in [-0.5, 0.5)); requires_grad for the backward column. */
static void inputs_make(Ctx *c, TestRng *r, const BenchCase *bc, bool grad, BenchInputs *bi) {
    int64_t s[3][4];
    int nd[3];
    switch (bc->kind) {
    case BENCH_LINEAR:
        bi->n = 3;
        nd[0] = 2, s[0][0] = bc->a, s[0][1] = bc->b;
        nd[1] = 2, s[1][0] = bc->c, s[1][1] = bc->b;
        nd[2] = 1, s[2][0] = bc->c;
        break;
    case BENCH_CONV2D:
        bi->n = 3;
        nd[0] = 4, s[0][0] = bc->a, s[0][1] = bc->b, s[0][2] = bc->c, s[0][3] = bc->d;
        nd[1] = 4, s[1][0] = bc->e, s[1][1] = 3, s[1][2] = 3, s[1][3] = bc->d;
        nd[2] = 1, s[2][0] = bc->e;
        break;
    default:
        bi->n = 3;
        nd[0] = 3, s[0][0] = bc->a, s[0][1] = bc->c, s[0][2] = bc->b * bc->e;
        nd[1] = 3, s[1][0] = bc->a, s[1][1] = bc->d, s[1][2] = bc->b * bc->e;
        nd[2] = 3, s[2][0] = bc->a, s[2][1] = bc->d, s[2][2] = bc->b * bc->e;
        break;
    }
    for (int i = 0; i < bi->n; i++) {
        bi->in[i] = var_new(c, DTYPE_F32, nd[i], s[i]);
        trng_fill_f32(r, bi->in[i]->v.data, tensor_numel(&bi->in[i]->v), -0.5, 0.5);
        bi->in[i]->requires_grad = grad;
    }
}

static Var *case_run(Ctx *c, const BenchCase *bc, BenchInputs *bi) {
    switch (bc->kind) {
    case BENCH_LINEAR: return op_linear(c, bi->in[0], bi->in[1], bi->in[2]);
    case BENCH_CONV2D: return op_conv2d(c, bi->in[0], bi->in[1], bi->in[2], 1, 1);
    default: return op_attention(c, bi->in[0], bi->in[1], bi->in[2], (int)bc->b, 0.0, false);
    }
}

/* Median seconds of one forward (bwd false, no tape) or forward + backward (bwd true); < 0 on error. */
static double case_time(const BenchCase *bc, bool bwd, int warmup, int reps) {
    Arena arena;
    Tape tape;
    arena_init(&arena, 64 << 20, 0);
    tape_init(&tape);
    Ctx c = ctx_make(&arena, bwd ? &tape : NULL, DEVICE_CPU);
    TestRng r = {42};
    BenchInputs bi;
    inputs_make(&c, &r, bc, bwd, &bi);
    Tensor dy = {0};
    float *dyd = NULL;
    ArenaMark mark = arena_mark(&arena);
    double *t = malloc(sizeof(double) * (size_t)reps);
    double result = -1;
    for (int it = 0; it < warmup + reps; it++) {
        for (int i = 0; i < bi.n; i++) bi.in[i]->g = (Tensor){0};
        double t0 = now_s();
        Var *y = case_run(&c, bc, &bi);
        if (!y) goto out;
        if (bwd) {
            if (!dyd) {
                int64_t n = tensor_numel(&y->v);
                dyd = malloc((size_t)n * 4);
                trng_fill_f32(&r, dyd, n, -0.5, 0.5);
                dy = tensor_make(dyd, DTYPE_F32, DEVICE_CPU, y->v.ndim, y->v.shape);
            }
            if (tape_backward_seed(&c, y, &dy) != ADDC_OK) goto out;
        }
        double t1 = now_s();
        if (it >= warmup) t[it - warmup] = t1 - t0;
        tape_clear(&tape);
        arena_reset_to(&arena, mark);
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    result = t[reps / 2];
out:
    if (result < 0) fprintf(stderr, "%s %s: %s\n", kind_name[bc->kind], bc->shape, addc_error_message());
    addc_error_clear();
    free(t);
    free(dyd);
    tape_free(&tape);
    arena_free(&arena);
    return result;
}

int main(int argc, char **argv) {
    bool bwd = false;
    int reps = 5, warmup = 1;
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bwd") == 0) bwd = true;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--warmup") == 0 && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (strcmp(argv[i], "--filter") == 0 && i + 1 < argc) filter = argv[++i];
        else if (strcmp(argv[i], "--list") == 0) {
            for (int k = 0; k < N_CASES; k++) printf("%s %s\n", kind_name[cases[k].kind], cases[k].shape);
            return 0;
        } else {
            fprintf(stderr, "usage: %s [--bwd] [--reps N] [--warmup N] [--filter SUBSTRING] [--list]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    printf("# addc fp32, %d threads, median of %d after %d warm-up\n", parallel_threads(), reps, warmup);
    printf("%-10s %-24s %12s %12s %s\n", "op", "shape", "fwd GFLOP/s", bwd ? "f+b GFLOP/s" : "-", "note");
    for (int i = 0; i < N_CASES; i++) {
        const BenchCase *bc = &cases[i];
        char key[96];
        snprintf(key, sizeof key, "%s %s", kind_name[bc->kind], bc->shape);
        if (filter && !strstr(key, filter)) continue;
        double fl = case_flops(bc);
        double tf = case_time(bc, false, warmup, reps);
        double gf = tf > 0 ? fl / tf * 1e-9 : 0;
        double gb = 0;
        if (bwd) {
            double tb = case_time(bc, true, warmup, reps);
            gb = tb > 0 ? (bc->kind == BENCH_ATTENTION ? 3.5 : 3.0) * fl / tb * 1e-9 : 0;
        }
        printf("%-10s %-24s %12.1f %12.1f %s\n", kind_name[bc->kind], bc->shape, gf, gb, "-");
        fflush(stdout);
    }
    return 0;
}
