/* tests/bench/bench_unet: one UNet2DConditionModel's forward and forward + backward step time,
 * the addc side of tests/bench/run_unet.sh (CPU) and tests/bench/run_cuda.sh (GPU);
 * tests/bench/bench_unet_torch.py is the diffusers side.
 *
 * Builds the model YAML's network with random weights (seed 1) and writes them to
 * DIR/weights.safetensors (diffusers names and layout, F32), and its inputs to
 * DIR/inputs.safetensors in the layout `addc forward` and diffusers take (sample NCHW, timestep,
 * encoder_hidden_states, text_embeds, time_ids) plus dy, the upstream gradient of the output
 * (NCHW): the PyTorch side loads both, so the two time exactly the same computation. With
 * --no-share nothing is written (full SDXL's weight file is 10 GB): the PyTorch side then uses
 * its own random weights of the same config and inputs of the same shapes (timing only).
 * Then times, on --device cpu (ADDC_THREADS threads, default all CPUs) or cuda, computing in
 * --dtype f32 or bf16 (cuda only: Ctx.compute = bf16, the layers cast the fp32 master weights and
 * the f32 inputs to bf16; gradients stay f32), with or without per-block activation
 * checkpointing (--checkpointing 0|1):
 *   fwd      the forward without a tape (frozen network, as a teacher runs);
 *   fwd+bwd  the forward on a tape and the backward seeded with dy, into every parameter's
 *            gradient (zeroed before the timer starts, as torch's zero_grad runs outside it).
 * On cuda the parameters move to the device after the random init (param_store_to_device), the
 * inputs are uploaded, the step's tensors come from a device arena attached to the host arena,
 * and each step is timed with CUDA events on the compute stream (then cuda_synchronize).
 * The median of `reps` runs after `warmup` is reported. Unless --no-share,
 * DIR/out_addc.safetensors receives the output (NCHW, f32) and two parameter gradients (file
 * layout) for the PyTorch side to compare.
 *
 * MFU = 3 x forward FLOPs (counted by the ops of the forward, Ctx.flops: forward + backward, the
 * recompute of checkpointing not counted) / median fwd+bwd time / --peak-tflops (default 989.4,
 * H100/H200 SXM dense bf16). Peak memory: on cuda the peaks of the device memory categories
 * (core/cuda.h) other than activations, plus the most bytes the device arena held live at once
 * (arena_peak: what torch.cuda.max_memory_allocated counts, the arena's unused block tails
 * excluded); on cpu the host arena's peak plus the parameter values and gradients.
 *
 * Prints "# ..." lines and one result line:
 * "result <name> <params> <fwd GFLOPs> <fwd ms> <fwd+bwd ms> <fwd min ms> <fwd+bwd min ms> <fwd+bwd MFU %>
 *  <peak GiB>".
 * --phase fwd or bwd times only that part (the other runs once: the forward always, for its FLOPs).
 * Usage: bench_unet --model YAML (--dir DIR | --no-share) [--batch 2] [--size 32] [--tokens 77] [--warmup 2]
 *                   [--reps 5] [--phase fwd|bwd|both] [--device cpu|cuda] [--dtype f32|bf16]
 *                   [--checkpointing 0|1] [--peak-tflops 989.4] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cuda.h"
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

static void fail(const char *what) {
    fprintf(stderr, "bench_unet: %s: %s\n", what, addc_error_message());
    exit(1);
}

static void check(Status st, const char *what) {
    if (st != ADDC_OK) fail(what);
}

/* A step timer: the wall clock on the cpu; on cuda two events on the compute stream around the
 * step, then cuda_synchronize, so the time is the device's from the first kernel to the last. */
typedef struct StepTimer {
    Device dev;
    void *ev[2];
    double t0;
} StepTimer;

static void timer_init(StepTimer *t, Device dev) {
    memset(t, 0, sizeof *t);
    t->dev = dev;
    if (dev == DEVICE_CUDA)
        for (int i = 0; i < 2; i++) check(cuda_event_create(&t->ev[i]), "cuda event");
}

static void timer_start(StepTimer *t) {
    if (t->dev == DEVICE_CUDA) check(cuda_event_record(t->ev[0], cuda_stream()), "cuda event record");
    else t->t0 = now_s();
}

/* seconds since timer_start */
static double timer_stop(StepTimer *t) {
    if (t->dev != DEVICE_CUDA) return now_s() - t->t0;
    check(cuda_event_record(t->ev[1], cuda_stream()), "cuda event record");
    check(cuda_synchronize(), "cuda_synchronize");
    float ms = 0;
    check(cuda_event_elapsed_ms(t->ev[0], t->ev[1], &ms), "cuda event time");
    return 1e-3 * ms;
}

static void timer_free(StepTimer *t) {
    if (t->dev == DEVICE_CUDA)
        for (int i = 0; i < 2; i++) cuda_event_destroy(t->ev[i]);
}

/* (B, H, W, C) host f32 -> (B, C, H, W) copy for the file */
static float *to_nchw(const float *x, const int64_t *s) {
    int64_t B = s[0], HW = s[1] * s[2], C = s[3];
    float *d = malloc(sizeof(float) * (size_t)(B * HW * C));
    for (int64_t b = 0; b < B; b++)
        for (int64_t p = 0; p < HW; p++)
            for (int64_t c = 0; c < C; c++) d[(b * C + c) * HW + p] = x[(b * HW + p) * C + c];
    return d;
}

/* A host f32 copy (malloc'd) of a tensor of any float dtype on the cpu or the device. */
static float *host_f32(const Tensor *t) {
    int64_t n = tensor_numel(t);
    size_t raw = (size_t)tensor_nbytes(t);
    void *h = malloc(raw ? raw : 1);
    if (t->device == DEVICE_CUDA) check(cuda_copy_to_host(h, t->data, raw), "output to host");
    else memcpy(h, t->data, raw);
    if (t->dtype == DTYPE_F32) return h;
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    dtype_convert(f, DTYPE_F32, h, t->dtype, n);
    free(h);
    return f;
}

static StTensor st_f32(const char *name, int32_t nd, const int64_t *shape, const float *data) {
    StTensor t = {(char *)name, DTYPE_F32, nd, {0}, data, 4};
    for (int32_t d = 0; d < nd; d++) {
        t.shape[d] = shape[d];
        t.nbytes *= shape[d];
    }
    return t;
}

/* a file tensor of an NHWC shape in NCHW order */
static StTensor st_nchw(const char *name, const int64_t *nhwc, float *nchw) {
    int64_t s[4] = {nhwc[0], nhwc[3], nhwc[1], nhwc[2]};
    return st_f32(name, 4, s, nchw);
}

/* An f32 leaf on c's device holding host (copied; host stays the caller's). */
static Var *leaf(Ctx *c, int32_t nd, const int64_t *shape, const float *host) {
    Var *v = var_new(c, DTYPE_F32, nd, shape);
    if (!v) fail("input tensor");
    size_t bytes = (size_t)tensor_nbytes(&v->v);
    if (c->device == DEVICE_CUDA) {
        check(cuda_copy_to_device(v->v.data, host, bytes), "input upload");
        check(cuda_synchronize(), "input upload");
    } else {
        memcpy(v->v.data, host, bytes);
    }
    return v;
}

/* uniform(-1, 1) host values of a shape (malloc'd) */
static float *rand_host(TestRng *r, int32_t nd, const int64_t *s) {
    int64_t n = 1;
    for (int32_t d = 0; d < nd; d++) n *= s[d];
    float *h = malloc(sizeof(float) * (size_t)n);
    trng_fill_f32(r, h, n, -1.0, 1.0);
    return h;
}

typedef struct BenchInputs {
    Var *x, *t, *e, *dy;
    UNetAddedCond add;
    bool tt;
    /* host copies: x (B,S,S,Cin), t (B), e (B,T,D), txt (B,dtxt), ids (B,6), dy (B,S,S,Cout) */
    float *hx, *ht, *he, *htxt, *hids, *hdy;
} BenchInputs;

static Var *run(Ctx *c, const UNet2D *u, const BenchInputs *in) {
    return unet2d_forward(c, u, in->x, in->t, in->e, in->tt ? &in->add : NULL);
}

static void usage(void) {
    fprintf(stderr, "usage: bench_unet --model YAML (--dir DIR | --no-share) [--batch 2] [--size 32] [--tokens 77] "
                    "[--warmup 2] [--reps 5] [--phase fwd|bwd|both] [--device cpu|cuda] [--dtype f32|bf16] "
                    "[--checkpointing 0|1] [--peak-tflops 989.4]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *model = NULL, *dir = NULL;
    int64_t B = 2, S = 32, T = 77;
    int warmup = 2, reps = 5, ckpt = 0;
    bool fwd_only = false, bwd_only = false, share = true;
    Device dev = DEVICE_CPU;
    DType dt = DTYPE_F32;
    double peak_tflops = 989.4;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "--no-share")) {
            share = false;
            continue;
        }
        if (!v) usage();
        if (!strcmp(o, "--model")) model = v;
        else if (!strcmp(o, "--dir")) dir = v;
        else if (!strcmp(o, "--batch")) B = atoll(v);
        else if (!strcmp(o, "--size")) S = atoll(v);
        else if (!strcmp(o, "--tokens")) T = atoll(v);
        else if (!strcmp(o, "--warmup")) warmup = atoi(v);
        else if (!strcmp(o, "--reps")) reps = atoi(v);
        else if (!strcmp(o, "--peak-tflops")) peak_tflops = atof(v);
        else if (!strcmp(o, "--checkpointing") && (!strcmp(v, "0") || !strcmp(v, "1"))) ckpt = atoi(v);
        else if (!strcmp(o, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            dev = !strcmp(v, "cuda") ? DEVICE_CUDA : DEVICE_CPU;
        else if (!strcmp(o, "--dtype") && (!strcmp(v, "f32") || !strcmp(v, "bf16")))
            dt = !strcmp(v, "bf16") ? DTYPE_BF16 : DTYPE_F32;
        else if (!strcmp(o, "--phase") && (!strcmp(v, "fwd") || !strcmp(v, "bwd") || !strcmp(v, "both"))) {
            fwd_only = !strcmp(v, "fwd");
            bwd_only = !strcmp(v, "bwd");
        }
        else usage();
        i++;
    }
    if (!model || (share && !dir) || B < 1 || S < 1 || T < 1 || reps < 1 || warmup < 0 || !(peak_tflops > 0))
        usage();
    if (dt == DTYPE_BF16 && dev != DEVICE_CUDA) {
        fprintf(stderr, "bench_unet: --dtype bf16 needs --device cuda (the CPU kernels compute in f32)\n");
        return 2;
    }
    char devname[256] = "cpu";
    if (dev == DEVICE_CUDA) {
        if (cuda_device_count() == 0) {
            fprintf(stderr, "bench_unet: --device cuda: no usable GPU: %s\n", cuda_unavailable_reason());
            return 1;
        }
        check(cuda_init(0), "cuda_init");
        check(cuda_device_describe(0, devname, sizeof devname), "cuda device");
    }

    Model m;
    if (model_build(&m, model, NULL, 0, DEVICE_CPU, true) != ADDC_OK) fail(model);
    if (m.kind != MODEL_UNET) {
        fprintf(stderr, "bench_unet: %s is not a UNet2DConditionModel\n", model);
        return 1;
    }
    model_set_checkpointing(&m, ckpt);
    const UNet2D *u = &m.net.unet;
    const UNet2DConfig *cfg = &u->cfg;
    double t_init = now_s();
    check(param_store_init_random(&m.params, 1), "random weights");
    t_init = now_s() - t_init;
    char path[1024];
    if (share) {
        snprintf(path, sizeof path, "%s/weights.safetensors", dir);
        check(weights_save(&m.params, path, DTYPE_F32, NULL), path);
    }
    if (dev == DEVICE_CUDA) check(param_store_to_device(&m.params, DEVICE_CUDA), "parameters to the device");

    Arena arena, darena;
    arena_init(&arena, dev == DEVICE_CUDA ? 64 << 20 : 256 << 20, 0);
    if (dev == DEVICE_CUDA) {
        arena_init_device(&darena, (int64_t)1 << 30, 0);
        arena_attach_device(&arena, &darena);
    }
    Tape tape;
    tape_init(&tape);
    Ctx nt = ctx_make(&arena, NULL, dev), c = ctx_make(&arena, &tape, dev);
    nt.compute = c.compute = dt;

    TestRng r = {7};
    BenchInputs in = {0};
    in.tt = cfg->addition_embed_type[0] != 0;
    int64_t dtxt = cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim;
    int64_t sx[4] = {B, S, S, cfg->in_channels}, se[3] = {B, T, cfg->cross_attention_dim}, stxt[2] = {B, dtxt},
            sids[2] = {B, 6}, sdy[4] = {B, S, S, cfg->out_channels};
    in.hx = rand_host(&r, 4, sx);
    in.ht = malloc(sizeof(float) * (size_t)B);
    in.he = rand_host(&r, 3, se);
    for (int64_t b = 0; b < B; b++) in.ht[b] = (float)(999 - (250 * b) % 1000);
    if (in.tt) {
        in.htxt = rand_host(&r, 2, stxt);
        in.hids = malloc(sizeof(float) * (size_t)(6 * B));
        static const float ids[6] = {512, 512, 0, 0, 512, 512};
        for (int64_t b = 0; b < B; b++) memcpy(in.hids + 6 * b, ids, sizeof ids);
    }
    in.hdy = rand_host(&r, 4, sdy);
    in.x = leaf(&nt, 4, sx, in.hx);
    in.t = leaf(&nt, 1, &B, in.ht);
    in.e = leaf(&nt, 3, se, in.he);
    if (in.tt) {
        in.add.text_embeds = leaf(&nt, 2, stxt, in.htxt);
        in.add.time_ids = leaf(&nt, 2, sids, in.hids);
    }
    in.dy = leaf(&nt, 4, sdy, in.hdy);
    if (share) {
        float *x_nchw = to_nchw(in.hx, sx), *dy_nchw = to_nchw(in.hdy, sdy);
        StTensor ins[6] = {st_nchw("sample", sx, x_nchw), st_f32("timestep", 1, &B, in.ht),
                           st_f32("encoder_hidden_states", 3, se, in.he), st_nchw("dy", sdy, dy_nchw)};
        int32_t n_in = 4;
        if (in.tt) {
            ins[n_in++] = st_f32("text_embeds", 2, stxt, in.htxt);
            ins[n_in++] = st_f32("time_ids", 2, sids, in.hids);
        }
        snprintf(path, sizeof path, "%s/inputs.safetensors", dir);
        check(safetensors_write(path, ins, n_in, NULL), path);
        free(x_nchw);
        free(dy_nchw);
    }

    StepTimer timer;
    timer_init(&timer, dev);
    ArenaMark mark = arena_mark(&arena);
    double *tf = malloc(sizeof(double) * (size_t)reps), *tb = malloc(sizeof(double) * (size_t)reps);
    double flops = 0;
    float *out_nchw = NULL;
    int64_t out_shape[4] = {0};
    StTensor outs[1 + N_GRADS];
    int64_t peak_fwd = 0;
    for (int it = 0; it < (bwd_only ? 1 : warmup + reps); it++) {
        nt.flops = 0;
        timer_start(&timer);
        Var *y = run(&nt, u, &in);
        if (!y) fail("forward");
        tf[it < warmup ? 0 : it - warmup] = timer_stop(&timer);
        if (it == 0) {
            flops = nt.flops;
            if (share) {
                memcpy(out_shape, y->v.shape, sizeof out_shape);
                float *o = host_f32(&y->v);
                out_nchw = to_nchw(o, out_shape);
                free(o);
                outs[0] = st_nchw("sample", out_shape, out_nchw);
            }
        }
        int64_t used = arena_used(dev == DEVICE_CUDA ? &darena : &arena);
        if (used > peak_fwd) peak_fwd = used;
        arena_reset_to(&arena, mark);
    }
    for (int it = 0; it < (fwd_only ? 1 : warmup + reps); it++) {
        param_store_zero_grad(&m.params);
        timer_start(&timer);
        Var *y = run(&c, u, &in);
        if (!y || tape_backward_seed(&c, y, &in.dy->v) != ADDC_OK) fail("forward + backward");
        tb[it < warmup ? 0 : it - warmup] = timer_stop(&timer);
        tape_clear(&tape);
        arena_reset_to(&arena, mark);
    }
    float *grads[N_GRADS] = {0};
    if (share) {
        for (int k = 0; k < N_GRADS; k++) {
            Param *p = param_store_find(&m.params, grad_names[k]);
            if (!p) fail(grad_names[k]);
            int64_t fs[TENSOR_MAX_DIMS];
            int32_t nd = weights_file_shape(p, fs);
            float *g = host_f32(&p->var.g);
            grads[k] = malloc(sizeof(float) * (size_t)tensor_numel(&p->var.v));
            weights_layout_to_file(p, g, grads[k]);
            free(g);
            char *name = malloc(strlen(grad_names[k]) + 6);
            sprintf(name, "grad.%s", grad_names[k]);
            outs[1 + k] = st_f32(name, nd, fs, grads[k]);
        }
        snprintf(path, sizeof path, "%s/out_addc.safetensors", dir);
        check(safetensors_write(path, outs, 1 + N_GRADS, NULL), path);
    }

    for (int i = 1; i < reps; i++) {
        if (bwd_only) tf[i] = tf[0];
        if (fwd_only) tb[i] = tb[0];
    }
    qsort(tf, (size_t)reps, sizeof(double), cmp_double);
    qsort(tb, (size_t)reps, sizeof(double), cmp_double);
    double mfu_fwd = 100.0 * flops / tf[reps / 2] / (peak_tflops * 1e12);
    double mfu = fwd_only ? NAN : 100.0 * 3.0 * flops / tb[reps / 2] / (peak_tflops * 1e12);
    const double gib = 1024.0 * 1024.0 * 1024.0;
    double peak_bytes;
    char mem[512];
    if (dev == DEVICE_CUDA) {
        peak_bytes = (double)arena_peak(&darena);
        for (int k = 0; k < CUDA_MEM_COUNT; k++)
            if (k != CUDA_MEM_ACTIVATIONS) peak_bytes += (double)cuda_mem_peak((CudaMemCategory)k);
        snprintf(mem, sizeof mem, "device arena peak %.2f GiB (blocks %.2f GiB); %s", arena_peak(&darena) / gib,
                 darena.reserved / gib, cuda_mem_report((char[400]){0}, 400));
    } else {
        peak_bytes = (double)arena_peak(&arena) + 4.0 * (double)m.params.numel * (m.params.grad ? 2 : 1);
        snprintf(mem, sizeof mem, "host arena peak %.2f GiB, parameters + gradients %.2f GiB", arena_peak(&arena) / gib,
                 4.0 * (double)m.params.numel * (m.params.grad ? 2 : 1) / gib);
    }
    printf("# addc %s on %s, %s, checkpointing %s: %lld parameters (random init %.1f s), batch %lld, %lldx%lld "
           "latent, %lld tokens, %d threads, median of %d after %d\n",
           model, devname, dtype_name(dt), ckpt ? "on" : "off", (long long)m.params.numel, t_init, (long long)B,
           (long long)S, (long long)S, (long long)T, parallel_threads(), reps, warmup);
    printf("# addc fwd %.2f GFLOPs (%.1f GFLOP/s, MFU %.1f%% of %.1f TFLOP/s), fwd arena %.0f MiB; fwd min/max "
           "%.1f/%.1f ms, fwd+bwd min/max %.1f/%.1f ms%s\n",
           flops * 1e-9, flops / tf[reps / 2] * 1e-9, mfu_fwd, peak_tflops, peak_fwd / 1048576.0, 1e3 * tf[0],
           1e3 * tf[reps - 1], 1e3 * tb[0], 1e3 * tb[reps - 1],
           bwd_only ? " (fwd: one run)" : fwd_only ? " (fwd+bwd: one run)" : "");
    printf("# addc memory: %s\n", mem);
    const char *base = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
    printf("result %.*s %lld %.3f %.2f %.2f %.2f %.2f %.2f %.3f\n", (int)(strcspn(base, ".")), base,
           (long long)m.params.numel, flops * 1e-9, 1e3 * tf[reps / 2], 1e3 * tb[reps / 2], 1e3 * tf[0], 1e3 * tb[0],
           mfu, peak_bytes / gib);
    for (int k = 0; k < N_GRADS; k++) {
        free(grads[k]);
        if (share) free(outs[1 + k].name);
    }
    free(out_nchw);
    free(tf);
    free(tb);
    free(in.hx);
    free(in.ht);
    free(in.he);
    free(in.htxt);
    free(in.hids);
    free(in.hdy);
    timer_free(&timer);
    tape_free(&tape);
    arena_free(&arena);
    if (dev == DEVICE_CUDA) arena_free(&darena);
    model_free(&m);
    return 0;
}
