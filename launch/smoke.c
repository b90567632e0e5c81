/* launch/smoke: `addc smoke` runs every op forward and backward at small UNet-like shapes on
 * the CPU backend, checks the results are finite, and prints one line per op with times and
 * the arena's peak. It is the quick "does this build work on this machine" run; the tests
 * check correctness. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "launch/cli.h"

typedef struct SmokeEnv {
    Ctx *c;
    uint64_t rng;
    int scale; /* 1 small, 2 medium */
} SmokeEnv;

static float smoke_uniform(SmokeEnv *e) {
    e->rng = e->rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((e->rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static Var *rnd(SmokeEnv *e, int nd, int64_t a, int64_t b, int64_t c2, int64_t d) {
    int64_t s[4] = {a, b, c2, d};
    Var *v = var_new(e->c, DTYPE_F32, nd, s);
    if (!v) return NULL;
    float *p = v->v.data;
    for (int64_t i = 0, n = tensor_numel(&v->v); i < n; i++) p[i] = smoke_uniform(e);
    v->requires_grad = 1;
    return v;
}

static Var *ids(SmokeEnv *e, int64_t n, int64_t vocab) {
    int64_t s[1] = {n};
    Tensor t = tensor_make(NULL, DTYPE_I32, DEVICE_CPU, 1, s);
    t.data = ctx_alloc(e->c, n * 4);
    if (!t.data) return NULL;
    for (int64_t i = 0; i < n; i++) ((int32_t *)t.data)[i] = (int32_t)(i * 7 % vocab);
    return var_leaf(e->c, t, false);
}

static Var *ts(SmokeEnv *e, int64_t n) {
    int64_t s[1] = {n};
    Var *v = var_new(e->c, DTYPE_F32, 1, s);
    if (!v) return NULL;
    for (int64_t i = 0; i < n; i++) ((float *)v->v.data)[i] = (float)(999 - 250 * i);
    return v;
}

/* one smoke case: builds the op's output from fresh inputs */
typedef Var *(*SmokeFn)(SmokeEnv *e);

#define S(e) ((e)->scale)
static Var *sm_add(SmokeEnv *e) { return op_add(e->c, rnd(e, 4, 2, 16 * S(e), 16, 64), rnd(e, 1, 64, 0, 0, 0)); }
static Var *sm_mul(SmokeEnv *e) { return op_mul(e->c, rnd(e, 3, 2, 64, 32, 0), rnd(e, 3, 2, 64, 32, 0)); }
static Var *sm_div(SmokeEnv *e) {
    Var *b = rnd(e, 2, 64, 32, 0, 0);
    return op_div(e->c, rnd(e, 2, 64, 32, 0, 0), op_scale(e->c, op_mul(e->c, b, b), 1.0, 0.5));
}
static Var *sm_mean_sq(SmokeEnv *e) { return op_mean_square(e->c, rnd(e, 2, 256, 64 * S(e), 0, 0)); }
static Var *sm_silu(SmokeEnv *e) { return op_silu(e->c, rnd(e, 4, 2, 16 * S(e), 16, 64)); }
static Var *sm_gelu(SmokeEnv *e) { return op_gelu(e->c, rnd(e, 3, 2, 256, 64, 0), GELU_TANH); }
static Var *sm_geglu(SmokeEnv *e) { return op_geglu(e->c, rnd(e, 3, 2, 256, 128, 0)); }
static Var *sm_lrelu(SmokeEnv *e) { return op_leaky_relu(e->c, rnd(e, 3, 8, 256, 32, 0), 0.2); }
static Var *sm_hinge(SmokeEnv *e) { return op_mean(e->c, op_hinge(e->c, rnd(e, 2, 8, 256, 0, 0), -1.0)); }
static Var *sm_matmul(SmokeEnv *e) { return op_matmul(e->c, rnd(e, 3, 4, 64, 32, 0), rnd(e, 3, 4, 48, 32, 0), false, true); }
static Var *sm_linear(SmokeEnv *e) {
    return op_linear(e->c, rnd(e, 3, 2, 256 * S(e), 320, 0), rnd(e, 2, 320, 320, 0, 0), rnd(e, 1, 320, 0, 0, 0));
}
static Var *sm_conv3(SmokeEnv *e) {
    return op_conv2d(e->c, rnd(e, 4, 2, 16 * S(e), 16 * S(e), 64), rnd(e, 4, 64, 3, 3, 64), rnd(e, 1, 64, 0, 0, 0), 1, 1);
}
static Var *sm_conv_down(SmokeEnv *e) {
    return op_conv2d(e->c, rnd(e, 4, 2, 16 * S(e), 16 * S(e), 64), rnd(e, 4, 64, 3, 3, 64), rnd(e, 1, 64, 0, 0, 0), 2, 1);
}
static Var *sm_conv1d(SmokeEnv *e) {
    return op_conv1d(e->c, rnd(e, 3, 8, 256, 32, 0), rnd(e, 3, 32, 9, 32, 0), rnd(e, 1, 32, 0, 0, 0), PAD_CIRCULAR);
}
static Var *sm_gn(SmokeEnv *e) {
    return op_group_norm(e->c, rnd(e, 4, 2, 16 * S(e), 16, 64), rnd(e, 1, 64, 0, 0, 0), rnd(e, 1, 64, 0, 0, 0), 32, 1e-5);
}
static Var *sm_ln(SmokeEnv *e) {
    return op_layer_norm(e->c, rnd(e, 3, 2, 256, 384, 0), rnd(e, 1, 384, 0, 0, 0), rnd(e, 1, 384, 0, 0, 0), 1e-6);
}
static Var *sm_bnl(SmokeEnv *e) {
    return op_batch_norm_local(e->c, rnd(e, 3, 16, 64, 32, 0), rnd(e, 1, 32, 0, 0, 0), rnd(e, 1, 32, 0, 0, 0), 8, 1e-5);
}
static Var *sm_softmax(SmokeEnv *e) { return op_softmax(e->c, rnd(e, 3, 4, 64, 77, 0)); }
static Var *sm_attn(SmokeEnv *e) {
    int64_t n = 256 * S(e) * S(e);
    return op_attention(e->c, rnd(e, 3, 2, n, 320, 0), rnd(e, 3, 2, n, 320, 0), rnd(e, 3, 2, n, 320, 0), 5, 0, false);
}
static Var *sm_xattn(SmokeEnv *e) {
    return op_attention(e->c, rnd(e, 3, 2, 256, 320, 0), rnd(e, 3, 2, 77, 320, 0), rnd(e, 3, 2, 77, 320, 0), 5, 0, true);
}
static Var *sm_concat(SmokeEnv *e) { return op_concat(e->c, rnd(e, 4, 2, 8, 8, 64), rnd(e, 4, 2, 8, 8, 32), -1); }
static Var *sm_slice(SmokeEnv *e) { return op_slice(e->c, rnd(e, 4, 2, 8, 8, 64), 3, 16, 32); }
static Var *sm_permute(SmokeEnv *e) {
    int32_t p[3] = {0, 2, 1};
    return op_permute(e->c, rnd(e, 3, 4, 64, 32, 0), p);
}
static Var *sm_up(SmokeEnv *e) { return op_upsample_nearest2x(e->c, rnd(e, 4, 2, 16, 16, 64)); }
static Var *sm_area(SmokeEnv *e) { return op_resize_area(e->c, rnd(e, 4, 2, 256, 256, 3), 224, 224); }
static Var *sm_bicubic(SmokeEnv *e) { return op_resize_bicubic(e->c, rnd(e, 4, 1, 37, 37, 384), 16, 16); }
static Var *sm_temb(SmokeEnv *e) { return op_timestep_embedding(e->c, ts(e, 4), 320, true, 0.0, 10000.0); }
static Var *sm_embed(SmokeEnv *e) { return op_embedding(e->c, ids(e, 77, 1000), rnd(e, 2, 1000, 64, 0, 0)); }
static Var *sm_spectral(SmokeEnv *e) {
    int64_t ur[1] = {32}, vr[1] = {9 * 32};
    Tensor u = tensor_make(ctx_alloc(e->c, 32 * 4), DTYPE_F32, DEVICE_CPU, 1, ur);
    Tensor v = tensor_make(ctx_alloc(e->c, 9 * 32 * 4), DTYPE_F32, DEVICE_CPU, 1, vr);
    for (int i = 0; i < 32; i++) ((float *)u.data)[i] = smoke_uniform(e);
    for (int i = 0; i < 9 * 32; i++) ((float *)v.data)[i] = smoke_uniform(e);
    return op_spectral_norm(e->c, rnd(e, 3, 32, 9, 32, 0), &u, &v, 1, 1e-12, true);
}

static Var *block_fn(Ctx *c, Var *const *in, int n_in, void *user) {
    (void)n_in, (void)user;
    Var *h = op_silu(c, op_group_norm(c, in[0], NULL, NULL, 8, 1e-5));
    return op_add(c, op_conv2d(c, h, in[1], NULL, 1, 1), in[0]);
}
static Var *sm_checkpoint(SmokeEnv *e) {
    Var *in[2] = {rnd(e, 4, 2, 16, 16, 32), rnd(e, 4, 32, 3, 3, 32)};
    return op_checkpoint(e->c, block_fn, NULL, in, 2);
}

static const struct {
    const char *name;
    SmokeFn fn;
} cases[] = {
    {"add (broadcast)", sm_add},     {"mul", sm_mul},
    {"div", sm_div},                 {"mean_square", sm_mean_sq},
    {"silu", sm_silu},               {"gelu (tanh)", sm_gelu},
    {"geglu", sm_geglu},             {"leaky_relu", sm_lrelu},
    {"hinge + mean", sm_hinge},      {"matmul (batched, b^T)", sm_matmul},
    {"linear", sm_linear},           {"conv2d 3x3", sm_conv3},
    {"conv2d 3x3 stride 2", sm_conv_down}, {"conv1d k9 circular", sm_conv1d},
    {"group_norm", sm_gn},           {"layer_norm", sm_ln},
    {"batch_norm_local", sm_bnl},    {"softmax", sm_softmax},
    {"attention (self)", sm_attn},   {"attention (cross, causal)", sm_xattn},
    {"concat", sm_concat},           {"slice", sm_slice},
    {"permute", sm_permute},         {"upsample_nearest2x", sm_up},
    {"resize_area 256->224", sm_area}, {"resize_bicubic 37->16", sm_bicubic},
    {"timestep_embedding", sm_temb}, {"embedding", sm_embed},
    {"spectral_norm", sm_spectral},  {"checkpointed block", sm_checkpoint},
};

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int all_finite(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(p[i])) return 0;
    return 1;
}

int cmd_smoke(int argc, char **argv) {
    int scale = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: addc smoke [--medium]\n\n"
                   "Runs every op forward and backward (with a tape) on random inputs on the CPU and\n"
                   "prints: op, output shape, forward and backward milliseconds, whether all values\n"
                   "and gradients are finite. --medium uses larger shapes. Exit code 1 if any op\n"
                   "fails or produces a non-finite value. Threads: ADDC_THREADS.\n");
            return 0;
        } else if (!strcmp(argv[i], "--medium")) {
            scale = 2;
        } else {
            fprintf(stderr, "addc smoke: unknown option '%s' (see addc smoke --help)\n", argv[i]);
            return 2;
        }
    }
    Arena arena;
    arena_init(&arena, 64 << 20, 0);
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&arena, &tape, DEVICE_CPU);
    SmokeEnv e = {&c, 42, scale};
    int failures = 0;
    printf("addc smoke: %zu ops on the CPU, %d threads\n", sizeof cases / sizeof cases[0], parallel_threads());
    printf("%-28s %-24s %9s %9s  %s\n", "op", "output", "fwd ms", "bwd ms", "finite");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        arena_reset(&arena);
        tape_clear(&tape);
        addc_error_clear();
        double t0 = now_ms();
        Var *y = cases[k].fn(&e);
        double t1 = now_ms();
        if (!y) {
            printf("%-28s FAILED: %s\n", cases[k].name, addc_error_message());
            failures++;
            continue;
        }
        /* backward of sum(y * r) for a fixed random r */
        int64_t n = tensor_numel(&y->v);
        float *seed = ctx_alloc(&c, n * 4);
        for (int64_t i = 0; i < n; i++) seed[i] = smoke_uniform(&e);
        Tensor sd = tensor_make(seed, DTYPE_F32, DEVICE_CPU, y->v.ndim, y->v.shape);
        Status st = tape_backward_seed(&c, y, &sd);
        double t2 = now_ms();
        char shape[64];
        int finite = all_finite(y->v.data, n);
        for (int32_t i = 0; i < tape.n && finite; i++)
            for (int j = 0; j < tape.nodes[i].n_in; j++) {
                Var *x = tape.nodes[i].in[j];
                if (x && x->g.data && !all_finite(x->g.data, tensor_numel(&x->v))) finite = 0;
            }
        if (st != ADDC_OK) {
            printf("%-28s backward FAILED: %s\n", cases[k].name, addc_error_message());
            failures++;
            continue;
        }
        tensor_shape_str(&y->v, shape, sizeof shape);
        char *sp = strchr(shape, ')');
        if (sp) sp[1] = 0;
        printf("%-28s %-24s %9.2f %9.2f  %s\n", cases[k].name, shape, t1 - t0, t2 - t1, finite ? "yes" : "NO");
        if (!finite) failures++;
    }
    printf("arena peak %.1f MiB; %d of %zu ops failed\n", arena_peak(&arena) / 1048576.0, failures,
           sizeof cases / sizeof cases[0]);
    tape_free(&tape);
    arena_free(&arena);
    return failures ? 1 : 0;
}

