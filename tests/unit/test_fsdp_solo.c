/* tests/unit/test_fsdp_solo: FSDP (distributed/fsdp.h) on the solo communicator (world 1, no
 * mpirun), through the real network code: the tiny SDXL-family UNet (configs/models/tiny_unet.yaml)
 * with random weights, loss = mean over the batch of sum(out * R).
 *
 * - wrapped with max_resident 2 (so units are evicted and gathered again), with and without
 *   prefetch, with and without per-block activation checkpointing: the output, the input
 *   gradient and every gradient shard are bit-identical to the unwrapped run; more gathers than
 *   units; the resident peak is a fraction of the full values + gradients;
 * - an SGD step on the shard values, fsdp_invalidate (after which only the pages shared by two
 *   units are resident: mincore), and the next forward equals the unwrapped network after the
 *   same step; fsdp_free gives back a plain store with those values and the
 *   reduced gradients (freed by param_store_free, checked under ASan in CI);
 * - a frozen store (no gradient buffer) wrapped: the untaped forward and the input gradient of
 *   a taped one are bit-identical;
 * - bad options are refused with a message naming the store. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "distributed/fsdp.h"
#include "nn/unet.h"
#include "tests/test_util.h"

#define B 2
#define HW 8
#define CIN 4
#define T 5
#define D_CTX 16
#define D_TEXT 8

typedef TestUNet Net; /* tests/test_util.h */

typedef struct Inputs {
    float x[B * HW * HW * CIN], t[B], e[B * T * D_CTX], text[B * D_TEXT], ids[B * 6], R[B * HW * HW * CIN];
} Inputs;

typedef struct RunOut {
    float *out, *gx; /* (B, H, W, C) each */
    float *g;        /* (numel) parameter gradients (NULL untaped or frozen) */
} RunOut;

static void run_out_free(RunOut *r) {
    free(r->out);
    free(r->gx);
    free(r->g);
    memset(r, 0, sizeof *r);
}

static void inputs_make(Inputs *in) {
    TestRng r = {77};
    trng_fill_f32(&r, in->x, B * HW * HW * CIN, -1, 1);
    trng_fill_f32(&r, in->t, B, 0, 999);
    trng_fill_f32(&r, in->e, B * T * D_CTX, -1, 1);
    trng_fill_f32(&r, in->text, B * D_TEXT, -1, 1);
    trng_fill_f32(&r, in->ids, B * 6, 0, 64);
    trng_fill_f32(&r, in->R, B * HW * HW * CIN, -1, 1);
}

static float *dup_f32(const void *src, int64_t n) {
    if (!src) return NULL;
    float *d = malloc((size_t)n * sizeof(float));
    if (d) memcpy(d, src, (size_t)n * sizeof(float));
    return d;
}

/* One forward (and, taped, backward + flush) of the UNet on `in`; f may be NULL (unwrapped). */
static void run(Net *n, Fsdp *f, const Inputs *in, bool taped, RunOut *r) {
    memset(r, 0, sizeof *r);
    TestCtx tc;
    tctx_init(&tc);
    Ctx *c = taped ? &tc.c : &tc.nt;
    int64_t sx[4] = {B, HW, HW, CIN}, st[1] = {B}, se[3] = {B, T, D_CTX}, stx[2] = {B, D_TEXT}, si[2] = {B, 6};
    Var *x = tvar_from(&tc, in->x, taped, 4, sx), *t = tvar_from(&tc, in->t, false, 1, st);
    Var *e = tvar_from(&tc, in->e, false, 3, se);
    UNetAddedCond add = {tvar_from(&tc, in->text, false, 2, stx), tvar_from(&tc, in->ids, false, 2, si)};
    Var *R = tvar_from(&tc, in->R, false, 4, sx);
    Var *y = unet2d_forward(c, &n->m, x, t, e, &add);
    CHECK_VAR(y);
    if (y) r->out = dup_f32(y->v.data, B * HW * HW * CIN);
    if (y && taped) {
        Var *loss = op_scale(c, op_sum(c, op_mul(c, y, R)), 1.0 / B, 0.0);
        CHECK_VAR(loss);
        if (loss) CHECK_OK(tape_backward(c, loss));
        r->gx = dup_f32(x->g.data, B * HW * HW * CIN);
        if (n->s.grad) {
            r->g = malloc((size_t)n->s.numel * sizeof(float));
            if (f) {
                CHECK_OK(fsdp_grads_flush(f));
                CHECK_OK(fsdp_gather_full(f, fsdp_shard_grads(f), r->g));
            } else {
                memcpy(r->g, n->s.grad, (size_t)n->s.numel * sizeof(float));
            }
        }
    }
    tctx_free(&tc);
}

static bool same_f32(const float *a, const float *b, int64_t n) {
    return a && b && memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static int64_t first_diff(const float *a, const float *b, int64_t n) {
    for (int64_t i = 0; a && b && i < n; i++)
        if (memcmp(a + i, b + i, sizeof(float)) != 0) return i;
    return -1;
}

/* Pages of the store's (mapped) values that are resident, that hold a boundary between two
 * units (a release keeps those), and in all. */
static void resident_pages(const ParamStore *s, int64_t *kept, int64_t *edges, int64_t *pages) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = (size_t)s->numel * sizeof(float);
    *pages = (int64_t)((bytes + page - 1) / page);
    unsigned char *vec = calloc((size_t)*pages, 1);
    bool *edge = calloc((size_t)*pages + 1, sizeof(bool));
    CHECK(vec && edge && mincore(s->data, bytes, vec) == 0, "mincore on the store's values");
    *kept = *edges = 0;
    for (int32_t u = 0; vec && edge && u <= s->n_units; u++) {
        size_t b = (size_t)(u < s->n_units ? s->units[u].offset : s->numel) * sizeof(float);
        if (b % page) edge[b / page] = true;
    }
    for (int64_t i = 0; vec && edge && i < *pages; i++) {
        *kept += vec[i] & 1;
        *edges += edge[i];
    }
    free(vec);
    free(edge);
}

static void sgd_step(float *w, const float *g, int64_t n) {
    for (int64_t i = 0; i < n; i++) w[i] -= 0.05f * g[i];
}

/* Wrapped runs against the unwrapped reference `ref` (same network, same inputs). */
static void test_trainable(Comm *comm) {
    Net n;
    if (!test_unet_build(&n, true, DEVICE_CPU)) return;
    Inputs in;
    inputs_make(&in);
    const int64_t numel = n.s.numel, nout = B * HW * HW * CIN;
    float *w0 = dup_f32(n.s.data, numel);
    RunOut ref;
    param_store_zero_grad(&n.s);
    run(&n, NULL, &in, true, &ref);
    int32_t units_used = 0;
    for (int32_t u = 0; u < n.s.n_units; u++) units_used += n.s.units[u].numel > 0;
    printf("tiny UNet: %lld parameters in %d units (%d with parameters)\n", (long long)numel, n.s.n_units, units_used);

    for (int k = 0; k < 4; k++) {
        bool prefetch = k & 1, ckpt = k & 2;
        n.m.gradient_checkpointing = ckpt;
        FsdpOptions o;
        fsdp_options_default(&o);
        o.prefetch = prefetch;
        o.max_resident = 2;
        Fsdp *f = NULL;
        CHECK_OK(fsdp_wrap(&f, &n.s, comm, &o, "unet"));
        if (!f) break;
        CHECK(fsdp_shard_numel(f) == numel, "world 1: shard of %lld elements, store %lld", (long long)fsdp_shard_numel(f),
              (long long)numel);
        /* step 1 prefetches in declaration order, step 2 in the order step 1 ran the units */
        RunOut w;
        FsdpMemory m1 = {0}, mem = {0};
        for (int step = 1; step <= 2; step++) {
            if (step == 2) {
                m1 = fsdp_memory(f);
                fsdp_zero_grad(f);
                run_out_free(&w);
            }
            run(&n, f, &in, true, &w);
            bool eo = same_f32(w.out, ref.out, nout), ex = same_f32(w.gx, ref.gx, nout), eg = same_f32(w.g, ref.g, numel);
            CHECK(eo && ex && eg, "prefetch %d checkpointing %d step %d: output %s, input gradient %s, parameter "
                  "gradients %s (first differing element %lld)", prefetch, ckpt, step, eo ? "equal" : "DIFFERS",
                  ex ? "equal" : "DIFFERS", eg ? "equal" : "DIFFER", (long long)first_diff(w.g, ref.g, numel));
            mem = fsdp_memory(f);
            if (step == 1) continue;
            int64_t full = 2 * numel * (int64_t)sizeof(float), gathers = mem.gathers - m1.gathers;
            int64_t pf = mem.prefetched - m1.prefetched, rs = mem.reduce_scatters - m1.reduce_scatters;
            CHECK(gathers > units_used, "only %lld gathers for %d units: nothing was evicted", (long long)gathers,
                  units_used);
            CHECK(mem.resident_peak_bytes < full / 2, "resident peak %lld bytes of %lld",
                  (long long)mem.resident_peak_bytes, (long long)full);
            CHECK(rs >= units_used, "%lld reduce-scatters for %d units", (long long)rs, units_used);
            CHECK(prefetch ? pf > gathers / 2 : pf == 0, "%lld of %lld gathers prefetched", (long long)pf,
                  (long long)gathers);
            printf("  prefetch %d, checkpointing %d: output, input and %lld parameter gradients bitwise %s (2 steps); "
                   "step 2: %lld gathers (%lld prefetched; step 1: %lld of %lld), %lld reduce-scatters; resident peak "
                   "%.1f KiB of %.1f KiB values + gradients\n",
                   prefetch, ckpt, (long long)numel, eo && ex && eg ? "identical" : "DIFFERENT", (long long)gathers,
                   (long long)pf, (long long)m1.prefetched, (long long)m1.gathers, (long long)rs,
                   mem.resident_peak_bytes / 1024.0, full / 1024.0);
        }

        if (k == 1) {
            /* an optimizer step on the shard, then the next forward sees it */
            sgd_step(fsdp_shard_values(f), fsdp_shard_grads(f), numel);
            fsdp_invalidate(f);
            fsdp_zero_grad(f);
            int64_t kept = 0, edges = 0, pages = 0;
            resident_pages(&n.s, &kept, &edges, &pages);
            CHECK(kept <= edges, "after fsdp_invalidate %lld of %lld value pages are resident, only the %lld pages "
                  "shared by two units may be", (long long)kept, (long long)pages, (long long)edges);
            printf("  after fsdp_invalidate: %lld of %lld pages of the values resident (%lld pages straddle two units)\n",
                   (long long)kept, (long long)pages, (long long)edges);
            RunOut w2;
            run(&n, f, &in, false, &w2);
            fsdp_free(f);
            f = NULL;
            float *w1 = dup_f32(w0, numel);
            sgd_step(w1, ref.g, numel);
            CHECK(same_f32(n.s.data, w1, numel), "fsdp_free: the store does not hold the stepped values");
            bool zero = n.s.grad != NULL;
            for (int64_t i = 0; zero && i < numel; i++) zero &= n.s.grad[i] == 0.0f;
            CHECK(zero, "fsdp_free after fsdp_zero_grad: gradients not zero");
            RunOut p2;
            run(&n, NULL, &in, false, &p2);
            CHECK(same_f32(w2.out, p2.out, nout), "after an SGD step on the shard: wrapped and plain outputs differ");
            printf("  SGD step on the shard + fsdp_invalidate: next output bitwise %s; fsdp_free restores the stepped "
                   "values\n", same_f32(w2.out, p2.out, nout) ? "identical" : "DIFFERENT");
            memcpy(n.s.data, w0, (size_t)numel * sizeof(float));
            run_out_free(&w2);
            run_out_free(&p2);
            free(w1);
        } else {
            fsdp_free(f);
            CHECK(same_f32(n.s.data, w0, numel), "fsdp_free: the values changed");
            CHECK(same_f32(n.s.grad, ref.g, numel), "fsdp_free: the gradients are not the reduced ones");
        }
        bool unhooked = true;
        for (int32_t i = 0; i < n.s.n; i++) unhooked &= param_store_get(&n.s, i)->var.home == NULL;
        CHECK(unhooked, "fsdp_free left parameters with a home");
        run_out_free(&w);
    }
    n.m.gradient_checkpointing = false;

    /* refusals */
    FsdpOptions o;
    fsdp_options_default(&o);
    o.max_resident = 1;
    Fsdp *f = NULL;
    Status st = fsdp_wrap(&f, &n.s, comm, &o, "student");
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "student") && strstr(addc_error_message(), "max_resident"),
          "max_resident 1: %s", addc_error_message());
    printf("  refused: %s\n", addc_error_message());
    addc_error_clear();
    run_out_free(&ref);
    free(w0);
    test_unet_free(&n);
}

static void test_frozen(Comm *comm) {
    Net n;
    if (!test_unet_build(&n, false, DEVICE_CPU)) return;
    Inputs in;
    inputs_make(&in);
    const int64_t nout = B * HW * HW * CIN;
    RunOut ref, ref_t;
    run(&n, NULL, &in, false, &ref);
    run(&n, NULL, &in, true, &ref_t);
    FsdpOptions o;
    fsdp_options_default(&o);
    o.max_resident = 2;
    Fsdp *f = NULL;
    CHECK_OK(fsdp_wrap(&f, &n.s, comm, &o, "teacher"));
    if (f) {
        CHECK(fsdp_shard_grads(f) == NULL, "a frozen store has no gradient shard");
        RunOut w, wt;
        run(&n, f, &in, false, &w);
        run(&n, f, &in, true, &wt);
        bool eo = same_f32(w.out, ref.out, nout), et = same_f32(wt.out, ref_t.out, nout),
             ex = same_f32(wt.gx, ref_t.gx, nout);
        CHECK(eo && et && ex, "frozen: untaped output %s, taped output %s, input gradient %s", eo ? "equal" : "DIFFERS",
              et ? "equal" : "DIFFERS", ex ? "equal" : "DIFFERS");
        FsdpMemory mem = fsdp_memory(f);
        CHECK(mem.reduce_scatters == 0 && mem.shard_bytes == n.s.numel * 4, "frozen: %lld reduce-scatters, %lld shard bytes",
              (long long)mem.reduce_scatters, (long long)mem.shard_bytes);
        printf("frozen store: forward and input gradient bitwise %s; %lld gathers, resident peak %.1f KiB of %.1f KiB\n",
               eo && et && ex ? "identical" : "DIFFERENT", (long long)mem.gathers, mem.resident_peak_bytes / 1024.0,
               n.s.numel * 4 / 1024.0);
        run_out_free(&w);
        run_out_free(&wt);
        fsdp_free(f);
    }
    run_out_free(&ref);
    run_out_free(&ref_t);
    test_unet_free(&n);
}

int main(void) {
    Comm *comm = NULL;
    CHECK_OK(comm_world(&comm));
    if (!comm) return test_main_end("fsdp_solo");
    CHECK(!comm_is_mpi(comm) && comm_size(comm) == 1, "expected the solo communicator");
    test_trainable(comm);
    test_frozen(comm);
    comm_finalize();
    return test_main_end("fsdp_solo");
}
