/* tests/bench/bench_unet: one UNet2DConditionModel's forward and forward + backward step time,
 * the addc side of tests/bench/run_unet.sh (tests/bench/bench_unet_torch.py is the diffusers side).
 *
 * Builds the model YAML's network with random weights (seed 1) and writes them to
 * DIR/weights.safetensors (diffusers names and layout, F32), and its inputs to
 * DIR/inputs.safetensors in the layout `addc forward` and diffusers take (sample NCHW, timestep,
 * encoder_hidden_states, text_embeds, time_ids) plus dy, the upstream gradient of the output
 * (NCHW): the PyTorch side loads both, so the two time exactly the same computation. Then times,
 * fp32 on ADDC_THREADS threads (default all CPUs), without activation checkpointing:
 *   fwd      the forward without a tape (frozen network, as a teacher runs);
 *   fwd+bwd  the forward on a tape and the backward seeded with dy, into every parameter's
 *            gradient (zeroed before the timer starts, as torch's zero_grad runs outside it).
 * The median of `reps` runs after `warmup` is reported. DIR/out_addc.safetensors receives the
 * output (NCHW) and two parameter gradients (file layout) for the PyTorch side to compare.
 *
 * Prints "# ..." lines and one result line:
 * "result <name> <params> <fwd GFLOPs> <fwd ms> <fwd+bwd ms> <fwd min ms> <fwd+bwd min ms>".
 * --phase fwd or bwd times only that part (the other runs once; for profiling).
 * Usage: bench_unet --model YAML --dir DIR [--batch 2] [--size 32] [--tokens 77] [--warmup 2] [--reps 5]
 *                   [--phase fwd|bwd|both] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/model.h"
#include "tests/test_util.h"

static const char *const grad_names[] = {"conv_in.weight", "mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight"};
#define N_GRADS 2

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* (B, H, W, C) -> (B, C, H, W) copy for the file */
static float *to_nchw(const Var *v) {
    const int64_t *s = v->v.shape;
    int64_t B = s[0], HW = s[1] * s[2], C = s[3];
    float *d = malloc(sizeof(float) * (size_t)(B * HW * C));
    const float *x = v->v.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t p = 0; p < HW; p++)
            for (int64_t c = 0; c < C; c++) d[(b * C + c) * HW + p] = x[(b * HW + p) * C + c];
    return d;
}

static StTensor st_f32(const char *name, int32_t nd, const int64_t *shape, const float *data) {
    StTensor t = {(char *)name, DTYPE_F32, nd, {0}, data, 4};
    for (int32_t d = 0; d < nd; d++) {
        t.shape[d] = shape[d];
        t.nbytes *= shape[d];
    }
    return t;
}

static StTensor st_nchw(const char *name, const Var *v, float *nchw) {
    int64_t s[4] = {v->v.shape[0], v->v.shape[3], v->v.shape[1], v->v.shape[2]};
    return st_f32(name, 4, s, nchw);
}

static Var *rand_var(Ctx *c, TestRng *r, int32_t nd, int64_t a, int64_t b, int64_t d2, int64_t d3) {
    int64_t s[4] = {a, b, d2, d3};
    Var *v = var_new(c, DTYPE_F32, nd, s);
    trng_fill_f32(r, v->v.data, tensor_numel(&v->v), -1.0, 1.0);
    return v;
}

typedef struct BenchInputs {
    Var *x, *t, *e, *dy;
    UNetAddedCond add;
    bool tt;
} BenchInputs;

static Var *run(Ctx *c, const UNet2D *u, const BenchInputs *in) {
    return unet2d_forward(c, u, in->x, in->t, in->e, in->tt ? &in->add : NULL);
}

static void fail(const char *what) {
    fprintf(stderr, "bench_unet: %s: %s\n", what, addc_error_message());
    exit(1);
}

int main(int argc, char **argv) {
    const char *model = NULL, *dir = NULL;
    int64_t B = 2, S = 32, T = 77;
    int warmup = 2, reps = 5;
    bool fwd_only = false, bwd_only = false;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) goto usage;
        if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--dir")) dir = v;
        else if (!strcmp(o, "--batch")) B = atoll(v);
        else if (!strcmp(o, "--size")) S = atoll(v);
        else if (!strcmp(o, "--tokens")) T = atoll(v);
        else if (!strcmp(o, "--warmup")) warmup = atoi(v);
        else if (!strcmp(o, "--reps")) reps = atoi(v);
        else if (!strcmp(o, "--phase") && (!strcmp(v, "fwd") || !strcmp(v, "bwd") || !strcmp(v, "both"))) {
            fwd_only = !strcmp(v, "fwd");
            bwd_only = !strcmp(v, "bwd");
        }
        else goto usage;
        i++;
    }
    if (!model || !dir || B < 1 || S < 1 || T < 1 || reps < 1 || warmup < 0) goto usage;

    Model m;
    if (model_build(&m, model, NULL, 0, DEVICE_CPU, true) != ADDC_OK) fail(model);
    if (m.kind != MODEL_UNET) {
        fprintf(stderr, "bench_unet: %s is not a UNet2DConditionModel\n", model);
        return 1;
    }
    const UNet2D *u = &m.net.unet;
    const UNet2DConfig *cfg = &u->cfg;
    if (param_store_init_random(&m.params, 1) != ADDC_OK) fail("random weights");
    char path[1024];
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    if (weights_save(&m.params, path, DTYPE_F32, NULL) != ADDC_OK) fail(path);

    Arena arena;
    Tape tape;
    arena_init(&arena, 256 << 20, 0);
    tape_init(&tape);
    Ctx nt = ctx_make(&arena, NULL, DEVICE_CPU), c = ctx_make(&arena, &tape, DEVICE_CPU);
    TestRng r = {7};
    BenchInputs in = {0};
    in.tt = cfg->addition_embed_type[0] != 0;
    int64_t dtxt = cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim;
    in.x = rand_var(&nt, &r, 4, B, S, S, cfg->in_channels);
    in.t = var_new(&nt, DTYPE_F32, 1, &B);
    in.e = rand_var(&nt, &r, 3, B, T, cfg->cross_attention_dim, 0);
    for (int64_t b = 0; b < B; b++) ((float *)in.t->v.data)[b] = (float)(999 - (250 * b) % 1000);
    if (in.tt) {
        in.add.text_embeds = rand_var(&nt, &r, 2, B, dtxt, 0, 0);
        int64_t s6[2] = {B, 6};
        in.add.time_ids = var_new(&nt, DTYPE_F32, 2, s6);
        static const float ids[6] = {512, 512, 0, 0, 512, 512};
        for (int64_t b = 0; b < B; b++) memcpy((float *)in.add.time_ids->v.data + 6 * b, ids, sizeof ids);
    }
    in.dy = rand_var(&nt, &r, 4, B, S, S, cfg->out_channels);
    float *x_nchw = to_nchw(in.x), *dy_nchw = to_nchw(in.dy);
    StTensor ins[6] = {st_nchw("sample", in.x, x_nchw), st_f32("timestep", 1, &B, in.t->v.data),
                       st_f32("encoder_hidden_states", 3, in.e->v.shape, in.e->v.data), st_nchw("dy", in.dy, dy_nchw)};
    int32_t n_in = 4;
    if (in.tt) {
        ins[n_in++] = st_f32("text_embeds", 2, in.add.text_embeds->v.shape, in.add.text_embeds->v.data);
        ins[n_in++] = st_f32("time_ids", 2, in.add.time_ids->v.shape, in.add.time_ids->v.data);
    }
    snprintf(path, sizeof path, "%s/inputs.safetensors", dir);
    if (safetensors_write(path, ins, n_in, NULL) != ADDC_OK) fail(path);
    free(x_nchw);
    free(dy_nchw);

    ArenaMark mark = arena_mark(&arena);
    double *tf = malloc(sizeof(double) * (size_t)reps), *tb = malloc(sizeof(double) * (size_t)reps);
    double flops = 0;
    float *out_nchw = NULL;
    StTensor outs[1 + N_GRADS];
    int64_t peak_fwd = 0, peak_bwd = 0;
    for (int it = 0; it < (bwd_only ? 1 : warmup + reps); it++) {
        nt.flops = 0;
        double t0 = now_s();
        Var *y = run(&nt, u, &in);
        double t1 = now_s();
        if (!y) fail("forward");
        tf[it < warmup ? 0 : it - warmup] = t1 - t0;
        if (!out_nchw) {
            flops = nt.flops;
            out_nchw = to_nchw(y);
            outs[0] = st_nchw("sample", y, out_nchw);
        }
        if (arena_used(&arena) > peak_fwd) peak_fwd = arena_used(&arena);
        arena_reset_to(&arena, mark);
    }
    float *grads[N_GRADS] = {0};
    for (int it = 0; it < (fwd_only ? 1 : warmup + reps); it++) {
        param_store_zero_grad(&m.params);
        double t0 = now_s();
        Var *y = run(&c, u, &in);
        if (!y || tape_backward_seed(&c, y, &in.dy->v) != ADDC_OK) fail("forward + backward");
        double t1 = now_s();
        tb[it < warmup ? 0 : it - warmup] = t1 - t0;
        if (arena_peak(&arena) > peak_bwd) peak_bwd = arena_peak(&arena);
        tape_clear(&tape);
        arena_reset_to(&arena, mark);
    }
    for (int k = 0; k < N_GRADS; k++) {
        Param *p = param_store_find(&m.params, grad_names[k]);
        if (!p) fail(grad_names[k]);
        int64_t fs[TENSOR_MAX_DIMS];
        int32_t nd = weights_file_shape(p, fs);
        grads[k] = malloc(sizeof(float) * (size_t)tensor_numel(&p->var.v));
        weights_layout_to_file(p, p->var.g.data, grads[k]);
        char *name = malloc(strlen(grad_names[k]) + 6);
        sprintf(name, "grad.%s", grad_names[k]);
        outs[1 + k] = st_f32(name, nd, fs, grads[k]);
    }
    snprintf(path, sizeof path, "%s/out_addc.safetensors", dir);
    if (safetensors_write(path, outs, 1 + N_GRADS, NULL) != ADDC_OK) fail(path);

    for (int i = 1; i < reps; i++) {
        if (bwd_only) tf[i] = tf[0];
        if (fwd_only) tb[i] = tb[0];
    }
    qsort(tf, (size_t)reps, sizeof(double), cmp_double);
    qsort(tb, (size_t)reps, sizeof(double), cmp_double);
    printf("# addc %s: %lld parameters, batch %lld, %lldx%lld latent, %lld tokens, %d threads, median of %d after %d\n",
           model, (long long)m.params.numel, (long long)B, (long long)S, (long long)S, (long long)T, parallel_threads(),
           reps, warmup);
    printf("# addc fwd %.2f GFLOPs (%.1f GFLOP/s), arena %.0f MiB; fwd+bwd arena peak %.0f MiB; fwd min/max %.1f/%.1f ms, "
           "fwd+bwd min/max %.1f/%.1f ms\n",
           flops * 1e-9, flops / tf[reps / 2] * 1e-9, peak_fwd / 1048576.0, peak_bwd / 1048576.0, 1e3 * tf[0],
           1e3 * tf[reps - 1], 1e3 * tb[0], 1e3 * tb[reps - 1]);
    const char *base = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
    printf("result %.*s %lld %.3f %.2f %.2f %.2f %.2f\n", (int)(strcspn(base, ".")), base, (long long)m.params.numel,
           flops * 1e-9, 1e3 * tf[reps / 2], 1e3 * tb[reps / 2], 1e3 * tf[0], 1e3 * tb[0]);
    for (int k = 0; k < N_GRADS; k++) {
        free(grads[k]);
        free(outs[1 + k].name);
    }
    free(out_nchw);
    free(tf);
    free(tb);
    tape_free(&tape);
    arena_free(&arena);
    model_free(&m);
    return 0;
usage:
    fprintf(stderr, "usage: bench_unet --model YAML --dir DIR [--batch 2] [--size 32] [--tokens 77] [--warmup 2] "
                    "[--reps 5] [--phase fwd|bwd|both]\n");
    return 2;
}
