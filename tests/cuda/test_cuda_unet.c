/* The tiny SDXL-family UNets (tests/ref/fixtures/unet, diffusers weights) forward and backward on the
 * GPU against the same on the CPU and against diffusers' own outputs in the fixture: output, input
 * gradients and every parameter gradient, with activation checkpointing off and on. f32 on both
 * sides (the CPU kernels are f32); tolerance 1e-4 of each tensor's scale. Skips (77) without a GPU. */
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "nn/unet.h"
#include "tests/test_util.h"

#define TOL 1e-4

static char *src_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", ADDC_SOURCE_DIR, rel);
    return buf;
}

typedef struct Run {
    float *out, *g_sample, *g_ehs, *g_params;
    int64_t n_out, n_sample, n_ehs, n_params;
} Run;

static void run_free(Run *r) {
    free(r->out);
    free(r->g_sample);
    free(r->g_ehs);
    free(r->g_params);
    memset(r, 0, sizeof *r);
}

/* A fixture tensor as a leaf on the context's device. */
static Var *io_var(Ctx *c, const SafeTensors *io, const char *name, bool requires_grad) {
    const StTensor *t = safetensors_find(io, name);
    CHECK(t != NULL, "fixture tensor %s missing", name);
    if (!t) return NULL;
    Var *v = var_new(c, DTYPE_F32, t->ndim, t->shape);
    if (!v) return NULL;
    int64_t n = tensor_numel(&v->v);
    float *h = malloc((size_t)(n ? n : 1) * 4);
    CHECK_OK(safetensors_read_f32(t, h, n));
    if (c->device == DEVICE_CUDA) {
        CHECK_OK(cuda_copy_to_device(v->v.data, h, (size_t)n * 4));
        CHECK_OK(cuda_synchronize());
    } else {
        memcpy(v->v.data, h, (size_t)n * 4);
    }
    free(h);
    v->requires_grad = requires_grad;
    return v;
}

static float *download(const Tensor *t, int64_t *n_out) {
    int64_t n = tensor_numel(t);
    *n_out = n;
    float *h = malloc((size_t)(n ? n : 1) * 4);
    if (!t->data) {
        memset(h, 0, (size_t)(n ? n : 1) * 4);
        return h;
    }
    if (t->device == DEVICE_CUDA)
        CHECK_OK(cuda_copy_to_host(h, t->data, (size_t)n * 4));
    else
        memcpy(h, t->data, (size_t)n * 4);
    return h;
}

static void run_unet(UNet2D *m, ParamStore *s, const SafeTensors *io, Device dev, Run *r) {
    Arena arena, darena;
    arena_init(&arena, 16 << 20, 0);
    if (dev == DEVICE_CUDA) {
        arena_init_device(&darena, 64 << 20, 0);
        arena_attach_device(&arena, &darena);
    }
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&arena, &tape, dev), nt = ctx_make(&arena, NULL, dev);
    param_store_zero_grad(s);
    Var *x = io_var(&nt, io, "sample", true), *t = io_var(&nt, io, "timesteps", false);
    Var *e = io_var(&nt, io, "encoder_hidden_states", true);
    UNetAddedCond add = {NULL, NULL};
    bool tt = m->has_add_embedding;
    if (tt) add = (UNetAddedCond){io_var(&nt, io, "text_embeds", false), io_var(&nt, io, "time_ids", false)};
    Var *y = unet2d_forward(&c, m, x, t, e, tt ? &add : NULL);
    CHECK(y != NULL, "%s forward: %s", device_name(dev), addc_error_message());
    Var *R = io_var(&nt, io, "R", false);
    if (y && R) {
        CHECK_OK(tape_backward_seed(&c, y, &R->v));
        r->out = download(&y->v, &r->n_out);
        r->g_sample = download(&x->g, &r->n_sample);
        r->g_ehs = download(&e->g, &r->n_ehs);
        r->n_params = s->numel;
        r->g_params = malloc((size_t)s->numel * 4);
        float *vals = malloc((size_t)s->numel * 4);
        CHECK_OK(param_store_download(s, vals, r->g_params));
        free(vals);
    }
    addc_error_clear();
    tape_free(&tape);
    arena_free(&arena);
    if (dev == DEVICE_CUDA) {
        printf("  device arena peak %.1f MiB; %s\n", arena_peak(&darena) / 1048576.0,
               cuda_mem_report((char[512]){0}, 512));
        arena_free(&darena);
    }
}

static double cmp(const char *label, const float *got, const float *want, int64_t n) {
    if (!got || !want) {
        CHECK(0, "%s: missing", label);
        return 1;
    }
    double e = compare_f32(label, got, want, n, TOL, 1e-6);
    CHECK(e <= TOL, "%s: max rel err %.3g > %g", label, e, TOL);
    return e;
}

static void test_tiny(const char *tag, const char *yaml_rel) {
    char path[512], rel[256];
    printf("%s (%s):\n", tag, yaml_rel);
    UNet2DConfig cfg;
    CHECK_OK(unet2d_config_load(&cfg, src_path(path, sizeof path, yaml_rel), NULL, 0));
    ParamStore s;
    param_store_init(&s, DEVICE_CPU);
    UNet2D m;
    CHECK_OK(unet2d_init(&m, &cfg, &s));
    CHECK_OK(param_store_alloc(&s, true));
    snprintf(rel, sizeof rel, "tests/ref/fixtures/unet/%s/diffusion_pytorch_model.safetensors", tag);
    WeightsReport rep;
    CHECK_OK(unet2d_load(&m, &s, src_path(path, sizeof path, rel), NULL, &rep));
    weights_report_free(&rep);
    SafeTensors io;
    snprintf(rel, sizeof rel, "tests/ref/fixtures/unet/%s_io.safetensors", tag);
    CHECK_OK(safetensors_open(&io, src_path(path, sizeof path, rel)));

    Run cpu, gpu;
    m.gradient_checkpointing = false;
    run_unet(&m, &s, &io, DEVICE_CPU, &cpu);
    CHECK_OK(param_store_to_device(&s, DEVICE_CUDA));
    for (int ck = 0; ck < 2; ck++) {
        m.gradient_checkpointing = ck;
        run_unet(&m, &s, &io, DEVICE_CUDA, &gpu);
        const StTensor *want = safetensors_find(&io, "out");
        float *ref = want ? malloc((size_t)want->nbytes) : NULL;
        if (ref) safetensors_read_f32(want, ref, want->nbytes / 4);
        printf("  cuda f32, checkpointing %s: out %.2e (diffusers %.2e), grad sample %.2e, encoder_hidden_states %.2e, "
               "params %.2e\n",
               ck ? "on" : "off", cmp("out", gpu.out, cpu.out, cpu.n_out),
               ref ? compare_f32("out vs diffusers", gpu.out, ref, cpu.n_out, 1e-3, 1e-6) : -1.0,
               cmp("grad.sample", gpu.g_sample, cpu.g_sample, cpu.n_sample),
               cmp("grad.encoder_hidden_states", gpu.g_ehs, cpu.g_ehs, cpu.n_ehs),
               cmp("grad.params", gpu.g_params, cpu.g_params, cpu.n_params));
        free(ref);
        run_free(&gpu);
    }
    run_free(&cpu);
    safetensors_close(&io);
    unet2d_free(&m);
    param_store_free(&s);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("test_cuda_unet: skipped: %s\n", cuda_unavailable_reason());
        return 77;
    }
    cuda_poison_set(true);
    test_tiny("tiny_xl", "configs/models/tiny_unet.yaml");
    test_tiny("tiny_sd21", "configs/models/tiny_sd21_unet.yaml");
    return test_main_end("test_cuda_unet");
}
