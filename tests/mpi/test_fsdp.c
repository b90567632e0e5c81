/* tests/mpi/test_fsdp: FSDP (distributed/fsdp.h) on N ranks (tests/mpi/fsdp.cmake runs it at
 * np 2, 3 and 4; 3 divides neither the batch split's units nor most unit sizes, so shards are
 * padded) with the tiny SDXL-family UNet (configs/models/tiny_unet.yaml), random weights.
 *
 * Every rank builds the same network and the same global batch of B = 12 samples and computes,
 * unwrapped, the full-batch reference: loss = mean over the 12 samples of sum(out * R), its
 * output and parameter gradients. Then the store is wrapped and rank r runs samples
 * [r B/N, (r+1) B/N) with loss = mean over its local samples:
 *   - after backward + fsdp_grads_flush, the all-gathered gradient shards equal the reference
 *     gradients (max relative difference <= 1e-5, printed), for two steps (the second prefetches
 *     in the order the first ran the units), and the local outputs equal the reference's rows;
 *   - with bf16 gradient reduction: within 1e-2;
 *   - a frozen store (no gradients), forward only: bit-identical to the unwrapped forward;
 *   - shard sizes: sum over units of ceil(n_u / N), every element owned by exactly one rank,
 *     fsdp_memory's shard_bytes about 1/N of the store; gather_full of the value shards and
 *     fsdp_free give back the exact values;
 *   - a store whose values differ on one rank is refused on every rank, naming the store.
 * Run alone (no mpirun) it runs the same checks at world 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "distributed/fsdp.h"
#include "nn/unet.h"
#include "tests/test_util.h"

#define B 12
#define HW 8
#define CIN 4
#define T 5
#define D_CTX 16
#define D_TEXT 8
#define PIX (HW * HW * CIN) /* one sample's elements */
#define GRAD_TOL 1e-5
#define BF16_TOL 1e-2

typedef TestUNet Net; /* tests/test_util.h */

typedef struct Inputs {
    float x[B * PIX], t[B], e[B * T * D_CTX], text[B * D_TEXT], ids[B * 6], R[B * PIX];
} Inputs;

static int rank, world;

static void inputs_make(Inputs *in) {
    TestRng r = {4242};
    trng_fill_f32(&r, in->x, B * PIX, -1, 1);
    trng_fill_f32(&r, in->t, B, 0, 999);
    trng_fill_f32(&r, in->e, B * T * D_CTX, -1, 1);
    trng_fill_f32(&r, in->text, B * D_TEXT, -1, 1);
    trng_fill_f32(&r, in->ids, B * 6, 0, 64);
    trng_fill_f32(&r, in->R, B * PIX, -1, 1);
}

/* Forward of samples [b0, b0 + nb) (and, taped, backward of the mean over them of
 * sum(out * R)); writes the output rows to out (nb * PIX), and the parameter gradients to g
 * (numel; the gathered shards when f is set) unless g is NULL. */
static void run(Net *n, Fsdp *f, const Inputs *in, int64_t b0, int64_t nb, bool taped, float *out, float *g) {
    TestCtx tc;
    tctx_init(&tc);
    Ctx *c = taped ? &tc.c : &tc.nt;
    int64_t sx[4] = {nb, HW, HW, CIN}, st[1] = {nb}, se[3] = {nb, T, D_CTX}, stx[2] = {nb, D_TEXT}, si[2] = {nb, 6};
    Var *x = tvar_from(&tc, in->x + b0 * PIX, false, 4, sx), *t = tvar_from(&tc, in->t + b0, false, 1, st);
    Var *e = tvar_from(&tc, in->e + b0 * T * D_CTX, false, 3, se);
    UNetAddedCond add = {tvar_from(&tc, in->text + b0 * D_TEXT, false, 2, stx), tvar_from(&tc, in->ids + b0 * 6, false, 2, si)};
    Var *R = tvar_from(&tc, in->R + b0 * PIX, false, 4, sx);
    Var *y = unet2d_forward(c, &n->m, x, t, e, &add);
    CHECK_VAR(y);
    if (y) memcpy(out, y->v.data, (size_t)(nb * PIX) * sizeof(float));
    if (y && taped) {
        Var *loss = op_scale(c, op_sum(c, op_mul(c, y, R)), 1.0 / (double)nb, 0.0);
        CHECK_VAR(loss);
        if (loss) CHECK_OK(tape_backward(c, loss));
        if (f) {
            CHECK_OK(fsdp_grads_flush(f));
            if (g) CHECK_OK(fsdp_gather_full(f, fsdp_shard_grads(f), g));
        } else if (g) {
            memcpy(g, n->s.grad, (size_t)n->s.numel * sizeof(float));
        }
    }
    tctx_free(&tc);
}

/* max |a - b| / max |b|, the largest over all ranks */
static double rel_diff(Comm *comm, const float *a, const float *b, int64_t n) {
    double d[2] = {0, 0};
    for (int64_t i = 0; i < n; i++) {
        d[0] = fmax(d[0], fabs((double)a[i] - b[i]));
        d[1] = fmax(d[1], fabs((double)b[i]));
    }
    double e = d[0] / fmax(d[1], 1e-30);
    CHECK_OK(comm_allreduce(comm, &e, &e, 1, COMM_F64, COMM_MAX, "test max relative difference"));
    return e;
}

static bool all_ranks(Comm *comm, bool ok) {
    uint64_t v = ok ? 0 : 1;
    CHECK_OK(comm_allreduce(comm, &v, &v, 1, COMM_U64, COMM_MAX, "test all ranks"));
    return v == 0;
}

static void test_trainable(Comm *comm, const Inputs *in) {
    Net n;
    if (!test_unet_build(&n, true, DEVICE_CPU)) return;
    const int64_t numel = n.s.numel, nb = B / world, b0 = rank * nb;
    float *w0 = malloc((size_t)numel * sizeof(float)), *g_ref = malloc((size_t)numel * sizeof(float));
    float *g = malloc((size_t)numel * sizeof(float)), *full = malloc((size_t)numel * sizeof(float));
    float *out_ref = malloc(B * PIX * sizeof(float)), *out = malloc(B * PIX * sizeof(float));
    memcpy(w0, n.s.data, (size_t)numel * sizeof(float));
    param_store_zero_grad(&n.s);
    run(&n, NULL, in, 0, B, true, out_ref, g_ref);

    /* refused when one rank's values differ */
    if (world > 1) {
        if (rank == world - 1) n.s.data[numel / 2] += 1.0f;
        Fsdp *bad = NULL;
        Status st = fsdp_wrap(&bad, &n.s, comm, NULL, "student");
        bool ok = st == ADDC_ERR_INVALID && bad == NULL && strstr(addc_error_message(), "'student'") &&
                  strstr(addc_error_message(), "differ");
        CHECK(all_ranks(comm, ok), "rank %d: differing values: status %d: %s", rank, (int)st, addc_error_message());
        if (rank == 0) printf("differing values refused on every rank: %s\n", addc_error_message());
        addc_error_clear();
        memcpy(n.s.data, w0, (size_t)numel * sizeof(float));
    }

    for (int k = 0; k < 2; k++) {
        bool bf16 = k == 1;
        FsdpOptions o;
        fsdp_options_default(&o);
        if (bf16) o.reduce_dtype = COMM_BF16;
        Fsdp *f = NULL;
        CHECK_OK(fsdp_wrap(&f, &n.s, comm, &o, "student"));
        if (!f) break;
        if (!bf16) {
            /* shard arithmetic */
            int64_t want = 0, owned = 0;
            for (int32_t u = 0; u < n.s.n_units; u++) {
                int64_t S = (n.s.units[u].numel + world - 1) / world, off, first, len;
                want += S;
                fsdp_shard_range(f, u, &off, &first, &len);
                owned += len;
                CHECK(len >= 0 && len <= S && first == (rank * S < n.s.units[u].numel ? rank * S : n.s.units[u].numel),
                      "unit %d: rank %d owns [%lld, +%lld) of %lld", u, rank, (long long)first, (long long)len,
                      (long long)n.s.units[u].numel);
            }
            uint64_t total = (uint64_t)owned;
            CHECK_OK(comm_allreduce(comm, &total, &total, 1, COMM_U64, COMM_SUM, "test owned"));
            FsdpMemory mem = fsdp_memory(f);
            CHECK(fsdp_shard_numel(f) == want && (int64_t)total == numel && mem.shard_bytes == 8 * want,
                  "shard %lld (want %lld), %lld elements owned of %lld, %lld shard bytes", (long long)fsdp_shard_numel(f),
                  (long long)want, (long long)total, (long long)numel, (long long)mem.shard_bytes);
            CHECK(mem.shard_bytes * world >= 8 * numel && mem.shard_bytes * world <= 8 * (numel + world * n.s.n_units),
                  "shard bytes %lld x %d ranks for %lld bytes of values + gradients", (long long)mem.shard_bytes, world,
                  (long long)(8 * numel));
            CHECK_OK(fsdp_gather_full(f, fsdp_shard_values(f), full));
            CHECK(all_ranks(comm, memcmp(full, w0, (size_t)numel * sizeof(float)) == 0),
                  "gather_full of the value shards differs from the values");
            if (rank == 0)
                printf("np %d: %lld parameters in %d units, shard %lld elements (%.4f of the store; padding %lld), "
                       "%lld shard bytes\n", world, (long long)numel, n.s.n_units, (long long)want,
                       (double)want / (double)numel, (long long)(want * world - numel), (long long)mem.shard_bytes);
        }
        for (int step = 1; step <= 2; step++) {
            FsdpMemory m0 = fsdp_memory(f);
            fsdp_zero_grad(f);
            run(&n, f, in, b0, nb, true, out, g);
            double eg = rel_diff(comm, g, g_ref, numel), eo = rel_diff(comm, out, out_ref + b0 * PIX, nb * PIX);
            double tol = bf16 ? BF16_TOL : GRAD_TOL;
            CHECK(eg <= tol && eo <= GRAD_TOL, "np %d %s step %d: gradients max rel diff %.3g (tol %.0e), outputs %.3g",
                  world, bf16 ? "bf16" : "f32", step, eg, tol, eo);
            FsdpMemory m = fsdp_memory(f);
            if (rank == 0)
                printf("  %s reduce, step %d: gradients vs the full-batch reference max rel diff %.3g, outputs %.3g; "
                       "%lld gathers (%lld prefetched), %lld reduce-scatters, resident peak %.1f KiB of %.1f KiB\n",
                       bf16 ? "bf16" : "f32", step, eg, eo, (long long)(m.gathers - m0.gathers),
                       (long long)(m.prefetched - m0.prefetched), (long long)(m.reduce_scatters - m0.reduce_scatters),
                       m.resident_peak_bytes / 1024.0, 8.0 * (double)numel / 1024.0);
        }
        fsdp_free(f);
        CHECK(all_ranks(comm, memcmp(n.s.data, w0, (size_t)numel * sizeof(float)) == 0),
              "fsdp_free: the values changed");
    }
    free(w0);
    free(g_ref);
    free(g);
    free(full);
    free(out_ref);
    free(out);
    test_unet_free(&n);
}

static void test_frozen(Comm *comm, const Inputs *in) {
    Net n;
    if (!test_unet_build(&n, false, DEVICE_CPU)) return;
    const int64_t nb = B / world, b0 = rank * nb;
    float *ref = malloc((size_t)(nb * PIX) * sizeof(float)), *out = malloc((size_t)(nb * PIX) * sizeof(float));
    run(&n, NULL, in, b0, nb, false, ref, NULL);
    FsdpOptions o;
    fsdp_options_default(&o);
    o.max_resident = 2;
    Fsdp *f = NULL;
    CHECK_OK(fsdp_wrap(&f, &n.s, comm, &o, "teacher"));
    if (f) {
        bool same = true;
        for (int step = 0; step < 2; step++) {
            run(&n, f, in, b0, nb, false, out, NULL);
            same &= memcmp(out, ref, (size_t)(nb * PIX) * sizeof(float)) == 0;
        }
        FsdpMemory m = fsdp_memory(f);
        CHECK(all_ranks(comm, same), "frozen store: wrapped forward differs from the unwrapped one");
        CHECK(m.reduce_scatters == 0 && fsdp_shard_grads(f) == NULL, "frozen store reduced gradients");
        if (rank == 0)
            printf("frozen store, forward only: 2 passes bitwise %s, %lld gathers (%lld prefetched), resident peak "
                   "%.1f KiB of %.1f KiB\n", same ? "identical" : "DIFFERENT", (long long)m.gathers, (long long)m.prefetched,
                   m.resident_peak_bytes / 1024.0, 4.0 * (double)n.s.numel / 1024.0);
        fsdp_free(f);
    }
    free(ref);
    free(out);
    test_unet_free(&n);
}

int main(void) {
    Comm *comm = NULL;
    CHECK_OK(comm_world(&comm));
    if (!comm) return test_main_end("fsdp");
    rank = comm_rank(comm);
    world = comm_size(comm);
    if (B % world != 0) {
        if (rank == 0) printf("np %d does not divide the batch of %d: skipped\n", world, B);
        comm_finalize();
        return 77;
    }
    Inputs *in = malloc(sizeof *in);
    inputs_make(in);
    test_trainable(comm, in);
    test_frozen(comm, in);
    free(in);
    /* every rank's verdict */
    uint64_t failed = (uint64_t)test_failed;
    comm_allreduce(comm, &failed, &failed, 1, COMM_U64, COMM_SUM, "test failures");
    comm_finalize();
    if (rank != 0) return test_failed ? 1 : 0;
    if (failed && !test_failed) test_failed = (int)failed;
    return test_main_end("fsdp");
}
