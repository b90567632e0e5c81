/* tests/bench/bench_sample: the latency of one sampling step as `addc sample` runs it for a 1-step
 * ADD student: the UNet forward on one noisy latent batch (t = 999) and the VAE decode of its output
 * to images, without a tape. The addc side of the sampling row of tests/bench/run_cuda.sh;
 * tests/bench/bench_sample_torch.py is the diffusers side.
 *
 * Builds the UNet (--model) and the VAE (--vae) from their model YAMLs with random weights (seeds 1
 * and 2; timing only), inputs uniform(-1, 1) (latent noise (B, S, S, in_channels), text states
 * (B, T, cross_attention_dim), pooled text; time_ids 512 512 0 0 512 512), on --device cpu or cuda
 * (parameters moved by param_store_to_device, step tensors from a device arena attached to the host
 * arena), computing in --dtype f32 or bf16 (cuda only: Ctx.compute = bf16 over fp32 weights). Each
 * run: UNet forward, then vae_decode_latents of the UNet output (its values do not matter for the
 * time; the scheduler's few elementwise ops on the (B, S, S, 4) latent between the two are left
 * out on both sides). Timed with three CUDA events on the compute stream (start, between the UNet
 * and the VAE, end) and cuda_synchronize, or the wall clock on the cpu. Median of `reps` after
 * `warmup`.
 * MFU = (UNet + VAE decode FLOPs, Ctx.flops) / median total time / --peak-tflops (989.4: H100/H200
 * SXM dense bf16). Peak memory as bench_unet: device categories other than activations plus the
 * device arena's peak (cpu: host arena peak plus the weights).
 *
 * Prints "# ..." lines and one result line:
 * "result <unet> <vae> <image size> <unet GFLOPs> <vae GFLOPs> <unet ms> <vae ms> <total ms> <total min ms> <MFU %>
 * <peak GiB>" (unet ms and vae ms: the medians of each part; image size: its height in pixels).
 * Usage: bench_sample --model UNET.yaml --vae VAE.yaml [--batch 1] [--size 64] [--tokens 77] [--warmup 2]
 *                     [--reps 5] [--device cpu|cuda] [--dtype f32|bf16] [--peak-tflops 989.4] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cuda.h"
#include "nn/model.h"
#include "tests/test_util.h"

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
    fprintf(stderr, "bench_sample: %s: %s\n", what, addc_error_message());
    exit(1);
}

static void check(Status st, const char *what) {
    if (st != ADDC_OK) fail(what);
}

/* Time stamps of one run: the wall clock on the cpu; on cuda events recorded on the compute stream,
 * read after cuda_synchronize. */
#define N_STAMPS 3
typedef struct Stamps {
    Device dev;
    void *ev[N_STAMPS];
    double t[N_STAMPS];
} Stamps;

static void stamps_init(Stamps *s, Device dev) {
    memset(s, 0, sizeof *s);
    s->dev = dev;
    if (dev == DEVICE_CUDA)
        for (int i = 0; i < N_STAMPS; i++) check(cuda_event_create(&s->ev[i]), "cuda event");
}

static void stamp(Stamps *s, int i) {
    if (s->dev == DEVICE_CUDA) check(cuda_event_record(s->ev[i], cuda_stream()), "cuda event record");
    else s->t[i] = now_s();
}

/* waits for the device (cuda) */
static void stamps_wait(Stamps *s) {
    if (s->dev == DEVICE_CUDA) check(cuda_synchronize(), "cuda_synchronize");
}

/* seconds from stamp i to stamp j (after stamps_wait) */
static double stamps_s(Stamps *s, int i, int j) {
    if (s->dev != DEVICE_CUDA) return s->t[j] - s->t[i];
    float ms = 0;
    check(cuda_event_elapsed_ms(s->ev[i], s->ev[j], &ms), "cuda event time");
    return 1e-3 * ms;
}

static void stamps_free(Stamps *s) {
    if (s->dev == DEVICE_CUDA)
        for (int i = 0; i < N_STAMPS; i++) cuda_event_destroy(s->ev[i]);
}

/* An f32 leaf on c's device, uniform(-1, 1) (or `fill` when r is NULL). */
static Var *input(Ctx *c, TestRng *r, const float *fill, int32_t nd, const int64_t *shape) {
    Var *v = var_new(c, DTYPE_F32, nd, shape);
    if (!v) fail("input tensor");
    int64_t n = tensor_numel(&v->v);
    float *h = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (r) trng_fill_f32(r, h, n, -1.0, 1.0);
    else memcpy(h, fill, sizeof(float) * (size_t)n);
    if (c->device == DEVICE_CUDA) {
        check(cuda_copy_to_device(v->v.data, h, (size_t)n * 4), "input upload");
        check(cuda_synchronize(), "input upload");
    } else {
        memcpy(v->v.data, h, (size_t)n * 4);
    }
    free(h);
    return v;
}

static const char *stem(const char *path, int *len) {
    const char *b = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    *len = (int)strcspn(b, ".");
    return b;
}

static void usage(void) {
    fprintf(stderr, "usage: bench_sample --model UNET.yaml --vae VAE.yaml [--batch 1] [--size 64] [--tokens 77] "
                    "[--warmup 2] [--reps 5] [--device cpu|cuda] [--dtype f32|bf16] [--peak-tflops 989.4]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *unet_path = NULL, *vae_path = NULL;
    int64_t B = 1, S = 64, T = 77;
    int warmup = 2, reps = 5;
    Device dev = DEVICE_CPU;
    DType dt = DTYPE_F32;
    double peak_tflops = 989.4;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(o, "--model")) unet_path = v;
        else if (!strcmp(o, "--vae")) vae_path = v;
        else if (!strcmp(o, "--batch")) B = atoll(v);
        else if (!strcmp(o, "--size")) S = atoll(v);
        else if (!strcmp(o, "--tokens")) T = atoll(v);
        else if (!strcmp(o, "--warmup")) warmup = atoi(v);
        else if (!strcmp(o, "--reps")) reps = atoi(v);
        else if (!strcmp(o, "--peak-tflops")) peak_tflops = atof(v);
        else if (!strcmp(o, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            dev = !strcmp(v, "cuda") ? DEVICE_CUDA : DEVICE_CPU;
        else if (!strcmp(o, "--dtype") && (!strcmp(v, "f32") || !strcmp(v, "bf16")))
            dt = !strcmp(v, "bf16") ? DTYPE_BF16 : DTYPE_F32;
        else usage();
        i++;
    }
    if (!unet_path || !vae_path || B < 1 || S < 1 || T < 1 || reps < 1 || warmup < 0 || !(peak_tflops > 0)) usage();
    if (dt == DTYPE_BF16 && dev != DEVICE_CUDA) {
        fprintf(stderr, "bench_sample: --dtype bf16 needs --device cuda (the CPU kernels compute in f32)\n");
        return 2;
    }
    char devname[256] = "cpu";
    if (dev == DEVICE_CUDA) {
        if (cuda_device_count() == 0) {
            fprintf(stderr, "bench_sample: --device cuda: no usable GPU: %s\n", cuda_unavailable_reason());
            return 1;
        }
        check(cuda_init(0), "cuda_init");
        check(cuda_device_describe(0, devname, sizeof devname), "cuda device");
    }

    Model mu, mv;
    if (model_build(&mu, unet_path, NULL, 0, DEVICE_CPU, false) != ADDC_OK) fail(unet_path);
    if (model_build(&mv, vae_path, NULL, 0, DEVICE_CPU, false) != ADDC_OK) fail(vae_path);
    if (mu.kind != MODEL_UNET || mv.kind != MODEL_VAE) {
        fprintf(stderr, "bench_sample: --model %s must be a UNet2DConditionModel and --vae %s an AutoencoderKL\n",
                unet_path, vae_path);
        return 1;
    }
    const UNet2D *u = &mu.net.unet;
    const AutoencoderKL *vae = &mv.net.vae;
    const UNet2DConfig *cfg = &u->cfg;
    if (cfg->out_channels != vae->cfg.latent_channels) {
        fprintf(stderr, "bench_sample: the UNet's out_channels %lld differ from the VAE's latent_channels %lld\n",
                (long long)cfg->out_channels, (long long)vae->cfg.latent_channels);
        return 1;
    }
    double t_init = now_s();
    check(param_store_init_random(&mu.params, 1), "random UNet weights");
    check(param_store_init_random(&mv.params, 2), "random VAE weights");
    t_init = now_s() - t_init;
    if (dev == DEVICE_CUDA) {
        check(param_store_to_device(&mu.params, DEVICE_CUDA), "UNet parameters to the device");
        check(param_store_to_device(&mv.params, DEVICE_CUDA), "VAE parameters to the device");
    }

    Arena arena, darena;
    arena_init(&arena, dev == DEVICE_CUDA ? 16 << 20 : 256 << 20, 0);
    if (dev == DEVICE_CUDA) {
        arena_init_device(&darena, 512 << 20, 0);
        arena_attach_device(&arena, &darena);
    }
    Ctx nt = ctx_make(&arena, NULL, dev);
    nt.compute = dt;

    TestRng r = {7};
    int64_t sx[4] = {B, S, S, cfg->in_channels}, se[3] = {B, T, cfg->cross_attention_dim}, sids[2] = {B, 6};
    int64_t stxt[2] = {B, cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim};
    float *fills = malloc(sizeof(float) * (size_t)(6 * B));
    static const float ids[6] = {512, 512, 0, 0, 512, 512};
    for (int64_t b = 0; b < B; b++) memcpy(fills + 6 * b, ids, sizeof ids);
    Var *x = input(&nt, &r, NULL, 4, sx), *e = input(&nt, &r, NULL, 3, se);
    float *t999 = malloc(sizeof(float) * (size_t)B);
    for (int64_t b = 0; b < B; b++) t999[b] = 999.0f;
    Var *t = input(&nt, NULL, t999, 1, &B);
    UNetAddedCond add = {NULL, NULL};
    bool tt = cfg->addition_embed_type[0] != 0;
    if (tt) add = (UNetAddedCond){input(&nt, &r, NULL, 2, stxt), input(&nt, NULL, fills, 2, sids)};
    free(fills);
    free(t999);

    Stamps st;
    stamps_init(&st, dev);
    ArenaMark mark = arena_mark(&arena);
    double *tu = malloc(sizeof(double) * (size_t)reps), *tv = malloc(sizeof(double) * (size_t)reps),
           *ttot = malloc(sizeof(double) * (size_t)reps);
    double flops_u = 0, flops_v = 0;
    int64_t img[4] = {0};
    for (int it = 0; it < warmup + reps; it++) {
        nt.flops = 0;
        stamp(&st, 0);
        Var *y = unet2d_forward(&nt, u, x, t, e, tt ? &add : NULL);
        if (!y) fail("UNet forward");
        stamp(&st, 1);
        double fu = nt.flops;
        Var *im = vae_decode_latents(&nt, vae, y);
        if (!im) fail("VAE decode");
        stamp(&st, 2);
        stamps_wait(&st);
        if (it == 0) {
            flops_u = fu;
            flops_v = nt.flops - fu;
            memcpy(img, im->v.shape, sizeof img);
        }
        if (it >= warmup) {
            tu[it - warmup] = stamps_s(&st, 0, 1);
            tv[it - warmup] = stamps_s(&st, 1, 2);
            ttot[it - warmup] = stamps_s(&st, 0, 2);
        }
        arena_reset_to(&arena, mark);
    }
    qsort(tu, (size_t)reps, sizeof(double), cmp_double);
    qsort(tv, (size_t)reps, sizeof(double), cmp_double);
    qsort(ttot, (size_t)reps, sizeof(double), cmp_double);
    double flops = flops_u + flops_v, med = ttot[reps / 2];
    double mfu = 100.0 * flops / med / (peak_tflops * 1e12);
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
        double w = 4.0 * (double)(mu.params.numel + mv.params.numel);
        peak_bytes = (double)arena_peak(&arena) + w;
        snprintf(mem, sizeof mem, "host arena peak %.2f GiB, weights %.2f GiB", arena_peak(&arena) / gib, w / gib);
    }
    int lu, lv;
    const char *nu = stem(unet_path, &lu), *nv = stem(vae_path, &lv);
    printf("# addc sample on %s, %s: %.*s (%lld parameters) + %.*s decode (%lld parameters), random init %.1f s; "
           "batch %lld, %lldx%lld latent -> %lldx%lld image, %lld tokens, no tape, %d threads, median of %d after %d\n",
           devname, dtype_name(dt), lu, nu, (long long)mu.params.numel, lv, nv, (long long)mv.params.numel, t_init,
           (long long)B, (long long)S, (long long)S, (long long)img[1], (long long)img[2], (long long)T,
           parallel_threads(), reps, warmup);
    printf("# addc UNet %.2f GFLOPs, VAE decode %.2f GFLOPs; MFU %.1f%% of %.1f TFLOP/s; min/max: UNet %.2f/%.2f ms, "
           "VAE %.2f/%.2f ms, total %.2f/%.2f ms\n",
           flops_u * 1e-9, flops_v * 1e-9, mfu, peak_tflops, 1e3 * tu[0], 1e3 * tu[reps - 1], 1e3 * tv[0],
           1e3 * tv[reps - 1], 1e3 * ttot[0], 1e3 * ttot[reps - 1]);
    printf("# addc memory: %s\n", mem);
    printf("result %.*s %.*s %lld %.3f %.3f %.2f %.2f %.2f %.2f %.2f %.3f\n", lu, nu, lv, nv, (long long)img[1],
           flops_u * 1e-9, flops_v * 1e-9,
           1e3 * tu[reps / 2], 1e3 * tv[reps / 2], 1e3 * med, 1e3 * ttot[0], mfu, peak_bytes / gib);
    free(tu);
    free(tv);
    free(ttot);
    stamps_free(&st);
    arena_free(&arena);
    if (dev == DEVICE_CUDA) arena_free(&darena);
    model_free(&mu);
    model_free(&mv);
    return 0;
}
