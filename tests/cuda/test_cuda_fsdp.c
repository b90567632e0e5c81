/* tests/cuda/test_cuda_fsdp: FSDP (distributed/fsdp.h) of a GPU store on the solo communicator
 * (world 1), the GPU twin of tests/unit/test_fsdp_solo.c: the tiny SDXL-family UNet
 * (configs/models/tiny_unet.yaml) with random weights moved to the GPU, loss = mean over the batch
 * of sum(out * R).
 *
 * - wrapped with max_resident 2 (so units are evicted and gathered again: more gathers than
 *   units), with and without prefetch, with and without per-block activation checkpointing, two
 *   steps each: the output, the input gradient and every reduced gradient are bit-identical to the
 *   unwrapped GPU store's; after fsdp_grads_flush + fsdp_zero_grad + fsdp_invalidate no granule of
 *   the reserved space is mapped; fsdp_free gives back the values and the reduced gradients, and the
 *   device memory counters of params / grads / comm return to where they were;
 * - all of it twice: first with the collectives as fsdp's own device copies (no
 *   comm_enable_device), then through comm's device path (comm_enable_device on the solo
 *   communicator);
 * - an SGD step on the shard values (cuda_axpy_f32), fsdp_invalidate, and the next wrapped forward
 *   equals the unwrapped one of the store fsdp_free gives back;
 * - a frozen store (no gradients): the untaped forward is bit-identical.
 * Skips (77) without a GPU. */
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "distributed/fsdp.h"
#include "nn/unet.h"
#include "tests/test_util.h"

#define B 2
#define HW 8
#define CIN 4
#define T 5
#define D_CTX 16
#define D_TEXT 8
#define NOUT (B * HW * HW * CIN)

typedef TestUNet Net; /* tests/test_util.h */

typedef struct Inputs {
    float x[NOUT], t[B], e[B * T * D_CTX], text[B * D_TEXT], ids[B * 6], R[NOUT];
} Inputs;

typedef struct RunOut {
    float *out, *gx; /* (B, H, W, C) each, host */
    float *g;        /* (numel) parameter gradients, host (NULL untaped or frozen) */
} RunOut;

static void run_out_free(RunOut *r) {
    free(r->out);
    free(r->gx);
    free(r->g);
    memset(r, 0, sizeof *r);
}

static void inputs_make(Inputs *in) {
    TestRng r = {77};
    trng_fill_f32(&r, in->x, NOUT, -1, 1);
    trng_fill_f32(&r, in->t, B, 0, 999);
    trng_fill_f32(&r, in->e, B * T * D_CTX, -1, 1);
    trng_fill_f32(&r, in->text, B * D_TEXT, -1, 1);
    trng_fill_f32(&r, in->ids, B * 6, 0, 64);
    trng_fill_f32(&r, in->R, NOUT, -1, 1);
}

/* A leaf on the device holding n host floats. */
static Var *dev_var(Ctx *c, const float *h, bool requires_grad, int32_t nd, const int64_t *shape) {
    Var *v = var_new(c, DTYPE_F32, nd, shape);
    CHECK_VAR(v);
    if (!v) return NULL;
    CHECK_OK(cuda_copy_to_device(v->v.data, h, (size_t)tensor_numel(&v->v) * sizeof(float)));
    v->requires_grad = requires_grad;
    return v;
}

static float *download(const void *d, int64_t n) {
    float *h = calloc((size_t)(n ? n : 1), sizeof(float));
    if (h && d) CHECK_OK(cuda_copy_to_host(h, d, (size_t)n * sizeof(float)));
    return h;
}

/* The store's values (host copy): plain store directly, wrapped through fsdp_gather_full. */
static float *values_of(Net *n, Fsdp *f) {
    int64_t numel = n->s.numel;
    if (!f) return download(n->s.data, numel);
    float *d = NULL;
    CHECK_OK(cuda_mem_alloc(CUDA_MEM_WORKSPACE, (void **)&d, (size_t)numel * sizeof(float)));
    CHECK_OK(fsdp_gather_full(f, fsdp_shard_values(f), d));
    float *h = download(d, numel);
    cuda_mem_free(CUDA_MEM_WORKSPACE, d, (size_t)numel * sizeof(float));
    return h;
}

/* One forward (and, taped, backward + flush) of the UNet on `in` on the GPU; f may be NULL. */
static void run(Net *n, Fsdp *f, const Inputs *in, bool taped, RunOut *r) {
    memset(r, 0, sizeof *r);
    Arena arena, darena;
    arena_init(&arena, 16 << 20, 0);
    arena_init_device(&darena, 64 << 20, 0);
    arena_attach_device(&arena, &darena);
    Tape tape;
    tape_init(&tape);
    Ctx tc = ctx_make(&arena, &tape, DEVICE_CUDA), nt = ctx_make(&arena, NULL, DEVICE_CUDA);
    Ctx *c = taped ? &tc : &nt;
    int64_t sx[4] = {B, HW, HW, CIN}, st[1] = {B}, se[3] = {B, T, D_CTX}, stx[2] = {B, D_TEXT}, si[2] = {B, 6};
    Var *x = dev_var(&nt, in->x, taped, 4, sx), *t = dev_var(&nt, in->t, false, 1, st);
    Var *e = dev_var(&nt, in->e, false, 3, se);
    UNetAddedCond add = {dev_var(&nt, in->text, false, 2, stx), dev_var(&nt, in->ids, false, 2, si)};
    Var *R = dev_var(&nt, in->R, false, 4, sx);
    CHECK_OK(cuda_synchronize()); /* the host inputs are read before anything else runs */
    Var *y = x && t && e && R ? unet2d_forward(c, &n->m, x, t, e, &add) : NULL;
    CHECK_VAR(y);
    if (y) r->out = download(y->v.data, NOUT);
    if (y && taped) {
        Var *loss = op_scale(c, op_sum(c, op_mul(c, y, R)), 1.0 / B, 0.0);
        CHECK_VAR(loss);
        if (loss) CHECK_OK(tape_backward(c, loss));
        r->gx = download(x->g.data, NOUT);
        if (n->s.grad) {
            if (f) {
                CHECK_OK(fsdp_grads_flush(f));
                float *d = NULL;
                size_t bytes = (size_t)n->s.numel * sizeof(float);
                CHECK_OK(cuda_mem_alloc(CUDA_MEM_WORKSPACE, (void **)&d, bytes));
                CHECK_OK(fsdp_gather_full(f, fsdp_shard_grads(f), d));
                r->g = download(d, n->s.numel);
                cuda_mem_free(CUDA_MEM_WORKSPACE, d, bytes);
            } else {
                r->g = download(n->s.grad, n->s.numel);
            }
        }
    }
    addc_error_clear();
    tape_free(&tape);
    arena_free(&arena);
    arena_free(&darena);
}

static bool same_f32(const float *a, const float *b, int64_t n) {
    return a && b && memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static int64_t first_diff(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; a && b && i < n; i++)
        if (memcmp(a + i, b + i, sizeof(float)) != 0) return i;
    return -1;
}

typedef struct Live {
    int64_t params, grads, comm;
} Live;

static Live live_now(void) {
    return (Live){cuda_mem_live(CUDA_MEM_PARAMS), cuda_mem_live(CUDA_MEM_GRADS), cuda_mem_live(CUDA_MEM_COMM)};
}

static void test_trainable(Comm *comm, const char *mode) {
    Net n;
    if (!test_unet_build(&n, true, DEVICE_CUDA)) return;
    Inputs in;
    inputs_make(&in);
    const int64_t numel = n.s.numel;
    float *w0 = values_of(&n, NULL);
    RunOut ref;
    param_store_zero_grad(&n.s);
    run(&n, NULL, &in, true, &ref);
    int32_t units_used = 0;
    for (int32_t u = 0; u < n.s.n_units; u++) units_used += n.s.units[u].numel > 0;
    printf("%s: tiny UNet on the GPU, %lld parameters in %d units (%d with parameters)\n", mode, (long long)numel,
           n.s.n_units, units_used);

    for (int k = 0; k < 4; k++) {
        bool prefetch = k & 1, ckpt = k & 2;
        n.m.gradient_checkpointing = ckpt;
        FsdpOptions o;
        fsdp_options_default(&o);
        o.prefetch = prefetch;
        o.max_resident = 2;
        Live before = live_now();
        Fsdp *f = NULL;
        CHECK_OK(fsdp_wrap(&f, &n.s, comm, &o, "unet"));
        if (!f) break;
        CHECK(fsdp_shard_numel(f) == numel, "world 1: shard of %lld elements, store %lld", (long long)fsdp_shard_numel(f),
              (long long)numel);
        FsdpMemory mem = fsdp_memory(f), m1 = {0};
        CHECK(mem.granules_mapped == 0 && mem.granule_bytes > 0, "after fsdp_wrap: %lld granules of %lld bytes mapped",
              (long long)mem.granules_mapped, (long long)mem.granule_bytes);
        RunOut w = {0};
        for (int step = 1; step <= 2; step++) {
            if (step == 2) {
                m1 = fsdp_memory(f);
                fsdp_zero_grad(f);
                run_out_free(&w);
            }
            run(&n, f, &in, true, &w);
            bool eo = same_f32(w.out, ref.out, NOUT), ex = same_f32(w.gx, ref.gx, NOUT), eg = same_f32(w.g, ref.g, numel);
            CHECK(eo && ex && eg, "%s prefetch %d checkpointing %d step %d: output %s, input gradient %s, parameter "
                  "gradients %s (first differing element %lld)", mode, prefetch, ckpt, step, eo ? "equal" : "DIFFERS",
                  ex ? "equal" : "DIFFERS", eg ? "equal" : "DIFFER", (long long)first_diff(w.g, ref.g, numel));
            mem = fsdp_memory(f);
            if (step == 1) continue;
            int64_t gathers = mem.gathers - m1.gathers, pf = mem.prefetched - m1.prefetched;
            int64_t rs = mem.reduce_scatters - m1.reduce_scatters;
            CHECK(gathers > units_used, "only %lld gathers for %d units: nothing was evicted", (long long)gathers,
                  units_used);
            CHECK(rs >= units_used, "%lld reduce-scatters for %d units", (long long)rs, units_used);
            CHECK(prefetch ? pf > gathers / 2 : pf == 0, "%lld of %lld gathers prefetched", (long long)pf,
                  (long long)gathers);
            printf("  prefetch %d, checkpointing %d: output, input and %lld parameter gradients bitwise %s (2 steps); "
                   "step 2: %lld gathers (%lld prefetched), %lld reduce-scatters; granules of %lld KiB: %lld mapped "
                   "now, peak %lld\n",
                   prefetch, ckpt, (long long)numel, eo && ex && eg ? "identical" : "DIFFERENT", (long long)gathers,
                   (long long)pf, (long long)rs, (long long)(mem.granule_bytes / 1024), (long long)mem.granules_mapped,
                   (long long)mem.granules_peak);
        }
        CHECK(mem.granules_peak > 0, "no granule was ever mapped");

        /* nothing pending, nothing resident: nothing mapped */
        fsdp_zero_grad(f);
        fsdp_invalidate(f);
        mem = fsdp_memory(f);
        CHECK(mem.granules_mapped == 0, "after flush, fsdp_zero_grad and fsdp_invalidate %lld granules are mapped",
              (long long)mem.granules_mapped);

        if (k == 1) {
            /* an SGD step on the shard with the reference gradients, then the next forward sees it */
            float *gd = NULL;
            size_t bytes = (size_t)numel * sizeof(float);
            CHECK_OK(cuda_mem_alloc(CUDA_MEM_WORKSPACE, (void **)&gd, bytes));
            CHECK_OK(cuda_copy_to_device(gd, ref.g, bytes));
            CHECK_OK(cuda_axpy_f32(fsdp_shard_values(f), gd, numel, -0.05f)); /* world 1: the shard is the store */
            CHECK_OK(cuda_synchronize());
            cuda_mem_free(CUDA_MEM_WORKSPACE, gd, bytes);
            fsdp_invalidate(f);
            RunOut w2;
            run(&n, f, &in, false, &w2);
            float *w1 = values_of(&n, f);
            /* the host-side gather and scatter (checkpoints, saved weights) agree with the device ones */
            float *wh = malloc(bytes);
            CHECK(wh != NULL, "out of memory");
            CHECK_OK(fsdp_gather_full_host(f, fsdp_shard_values(f), wh));
            CHECK(same_f32(wh, w1, numel), "fsdp_gather_full_host differs from fsdp_gather_full");
            CHECK_OK(fsdp_scatter_full_host(f, w0, fsdp_shard_values(f)));
            CHECK_OK(fsdp_gather_full_host(f, fsdp_shard_values(f), wh));
            CHECK(same_f32(wh, w0, numel), "fsdp_scatter_full_host then fsdp_gather_full_host: not the values scattered");
            CHECK_OK(fsdp_scatter_full_host(f, w1, fsdp_shard_values(f)));
            fsdp_invalidate(f);
            free(wh);
            fsdp_free(f);
            f = NULL;
            CHECK_OK(addc_error_status());
            float *wf = values_of(&n, NULL);
            CHECK(same_f32(wf, w1, numel) && !same_f32(wf, w0, numel),
                  "fsdp_free: the store does not hold the stepped values");
            RunOut p2;
            run(&n, NULL, &in, false, &p2);
            bool eq = same_f32(w2.out, p2.out, NOUT);
            CHECK(eq, "after an SGD step on the shard: wrapped and plain outputs differ");
            printf("  SGD step on the shard + fsdp_invalidate: next output bitwise %s; fsdp_free restores the stepped "
                   "values\n", eq ? "identical" : "DIFFERENT");
            CHECK_OK(cuda_copy_to_device(n.s.data, w0, bytes));
            CHECK_OK(cuda_synchronize());
            run_out_free(&w2);
            run_out_free(&p2);
            free(w1);
            free(wf);
        } else {
            fsdp_free(f);
            CHECK_OK(addc_error_status());
            float *wf = values_of(&n, NULL), *gf = download(n.s.grad, numel);
            CHECK(same_f32(wf, w0, numel), "fsdp_free: the values changed");
            bool zero = gf != NULL;
            for (int64_t i = 0; zero && i < numel; i++) zero &= gf[i] == 0.0f;
            CHECK(zero, "fsdp_free after fsdp_zero_grad: gradients not zero");
            free(wf);
            free(gf);
        }
        Live after = live_now();
        CHECK(after.params == before.params && after.grads == before.grads && after.comm == before.comm,
              "device memory after fsdp_free: params %lld (before %lld), grads %lld (%lld), comm %lld (%lld)",
              (long long)after.params, (long long)before.params, (long long)after.grads, (long long)before.grads,
              (long long)after.comm, (long long)before.comm);
        bool unhooked = true;
        for (int32_t i = 0; i < n.s.n; i++) unhooked &= param_store_get(&n.s, i)->var.home == NULL;
        CHECK(unhooked, "fsdp_free left parameters with a home");
        run_out_free(&w);
    }
    n.m.gradient_checkpointing = false;

    /* fsdp_free hands back the reduced gradients when they were not zeroed */
    {
        FsdpOptions o;
        fsdp_options_default(&o);
        o.max_resident = 2;
        Fsdp *f = NULL;
        CHECK_OK(fsdp_wrap(&f, &n.s, comm, &o, "unet"));
        if (f) {
            RunOut w;
            run(&n, f, &in, true, &w);
            fsdp_free(f);
            CHECK_OK(addc_error_status());
            float *gf = download(n.s.grad, numel);
            CHECK(same_f32(gf, ref.g, numel), "fsdp_free: the gradients are not the reduced ones");
            free(gf);
            run_out_free(&w);
        }
    }
    run_out_free(&ref);
    free(w0);
    test_unet_free(&n);
}

static void test_frozen(Comm *comm) {
    Net n;
    if (!test_unet_build(&n, false, DEVICE_CUDA)) return;
    Inputs in;
    inputs_make(&in);
    RunOut ref;
    run(&n, NULL, &in, false, &ref);
    FsdpOptions o;
    fsdp_options_default(&o);
    o.max_resident = 2;
    Fsdp *f = NULL;
    CHECK_OK(fsdp_wrap(&f, &n.s, comm, &o, "teacher"));
    if (f) {
        CHECK(fsdp_shard_grads(f) == NULL, "a frozen store has no gradient shard");
        RunOut w;
        run(&n, f, &in, false, &w);
        bool eo = same_f32(w.out, ref.out, NOUT);
        CHECK(eo, "frozen: untaped output differs");
        FsdpMemory mem = fsdp_memory(f);
        printf("frozen store on the GPU: forward bitwise %s; %lld gathers, granule peak %lld\n",
               eo ? "identical" : "DIFFERENT", (long long)mem.gathers, (long long)mem.granules_peak);
        fsdp_invalidate(f);
        CHECK(fsdp_memory(f).granules_mapped == 0, "frozen: granules mapped after fsdp_invalidate");
        run_out_free(&w);
        fsdp_free(f);
        CHECK_OK(addc_error_status());
    }
    run_out_free(&ref);
    test_unet_free(&n);
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("SKIP: no CUDA device (%s)\n", cuda_unavailable_reason());
        return 77;
    }
    Comm *comm = NULL;
    CHECK_OK(comm_world(&comm));
    if (!comm) return test_main_end("test_cuda_fsdp");
    if (comm_is_mpi(comm) || comm_size(comm) != 1) {
        printf("SKIP: this test runs on the solo communicator (no mpirun)\n");
        comm_finalize();
        return 77;
    }
    CHECK_OK(cuda_init(0));
    test_trainable(comm, "solo, fsdp's own device copies");
    test_frozen(comm);
    CHECK_OK(comm_enable_device(comm, 0));
    test_trainable(comm, "solo, comm device collectives");
    comm_finalize();
    return test_main_end("test_cuda_fsdp");
}
