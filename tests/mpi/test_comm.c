/* tests/mpi/test_comm: the collectives of distributed/comm on any number of ranks, and the solo
 * communicator when run without mpirun.
 *
 * Data are integer-valued (exact in f32 sums on a few ranks), so every f32/f64/u64 result is
 * checked for equality against the same reduction done here in f64; the bf16 paths are checked
 * against the f64 sum of the bf16-rounded inputs within bf16 rounding, for bf16-representable
 * results and for bitwise repeatability. Rank 0 prints one line per check with its own verdict;
 * any rank that fails prints the first mismatch, and the closing line sums failures over ranks.
 *
 * `test_comm --hang` only runs allreduces in a loop: with ADDC_TEST_HANG=1:5 it is the watchdog
 * test driven by tests/mpi/comm_hang.sh. */
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "distributed/comm.h"
#include "tests/test_util.h"

static Comm *g_c;
static int g_rank, g_size;

static const char *const dt_names[] = {"f32", "f64", "u64", "bf16"};
static const char *const op_names[] = {"sum", "max", "min"};

/* ---- checks ---- */

/* Counts one check; rank 0 prints its line, a failing rank prints the detail. */
static void verdict(bool ok, const char *label, const char *detail) {
    CHECK(ok, "rank %d: %s: %s", g_rank, label, detail ? detail : "");
    if (g_rank == 0) printf("%s %s\n", ok ? "ok  " : "FAIL", label);
}

static void verdict_status(Status st, const char *label) {
    char buf[512];
    snprintf(buf, sizeof buf, "status %s: %s", addc_status_name(st), addc_error_message());
    if (st != ADDC_OK) addc_error_clear();
    verdict(st == ADDC_OK, label, buf);
}

static char *fmt(char *buf, size_t cap, const char *f, ...) __attribute__((format(printf, 3, 4)));
static char *fmt(char *buf, size_t cap, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, cap, f, ap);
    va_end(ap);
    return buf;
}

/* ---- typed buffers ---- */

static size_t mem_size(CommDType dt) { return dt == COMM_F64 || dt == COMM_U64 ? 8 : 4; }

static void *buf_new(CommDType dt, int64_t n) { return calloc((size_t)(n > 0 ? n : 1), mem_size(dt)); }

static void buf_set(CommDType dt, void *p, int64_t i, double v) {
    if (dt == COMM_F64)
        ((double *)p)[i] = v;
    else if (dt == COMM_U64)
        ((uint64_t *)p)[i] = (uint64_t)v;
    else
        ((float *)p)[i] = (float)v;
}

static double buf_get(CommDType dt, const void *p, int64_t i) {
    if (dt == COMM_F64) return ((const double *)p)[i];
    if (dt == COMM_U64) return (double)((const uint64_t *)p)[i];
    return ((const float *)p)[i];
}

/* The value rank r contributes at element i: integers, exact in every dtype and in f32 sums on a
 * few ranks (u64 gets large nonnegative ones to exercise 64 bits). */
static double gen(CommDType dt, int r, int64_t i, int salt) {
    int64_t k = ((int64_t)(r + 1) * 7919 + i * 31 + (int64_t)salt * 17) % 101;
    if (dt == COMM_U64) return (double)((1ull << 40) + (uint64_t)k * 1000003ull);
    return (double)(k - 50);
}

static double reduce_ref(CommDType dt, CommOp op, int64_t i, int salt) {
    double acc = gen(dt, 0, i, salt);
    for (int r = 1; r < g_size; r++) {
        double v = gen(dt, r, i, salt);
        acc = op == COMM_SUM ? acc + v : op == COMM_MAX ? fmax(acc, v) : fmin(acc, v);
    }
    return acc;
}

static float bf16_ref(float x) { /* round to nearest even, as the wire does */
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static bool is_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u & 0xffffu) == 0;
}

/* First element where got != want(i); -1 if none. */
typedef double (*WantFn)(int64_t i, const void *ctx);
static int64_t first_mismatch(CommDType dt, const void *got, int64_t n, WantFn want, const void *ctx, double *g,
                              double *w) {
    for (int64_t i = 0; i < n; i++) {
        *g = buf_get(dt, got, i);
        *w = want(i, ctx);
        if (*g != *w) return i;
    }
    return -1;
}

static void verdict_exact(CommDType dt, const void *got, int64_t n, WantFn want, const void *ctx, const char *label) {
    double g = 0, w = 0;
    int64_t bad = first_mismatch(dt, got, n, want, ctx, &g, &w);
    char d[160];
    verdict(bad < 0, label, fmt(d, sizeof d, "element %lld: got %.17g, want %.17g", (long long)bad, g, w));
}

typedef struct RefCtx {
    CommDType dt;
    CommOp op;
    int salt;
    int root;
    int64_t count;
} RefCtx;

static double want_reduce(int64_t i, const void *ctx) {
    const RefCtx *x = ctx;
    return reduce_ref(x->dt, x->op, i, x->salt);
}

static double want_gather(int64_t i, const void *ctx) { /* recv[r * count + j] = gen(r, j) */
    const RefCtx *x = ctx;
    return gen(x->dt, (int)(i / x->count), i % x->count, x->salt);
}

static double want_scatter(int64_t i, const void *ctx) { /* this rank's block of the reduction */
    const RefCtx *x = ctx;
    return reduce_ref(x->dt, x->op, (int64_t)g_rank * x->count + i, x->salt);
}

static double want_root(int64_t i, const void *ctx) {
    const RefCtx *x = ctx;
    return gen(x->dt, x->root, i, x->salt);
}

/* ---- the collectives ---- */

static const int64_t counts_reduce[] = {0, 1, 7, 1000, 4099};
static const int64_t counts_block[] = {0, 1, 5, 257, 1001};
#define NCOUNTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void test_allreduce(void) {
    for (int dt = COMM_F32; dt <= COMM_U64; dt++)
        for (int op = COMM_SUM; op <= COMM_MIN; op++)
            for (int ci = 0; ci < NCOUNTS(counts_reduce); ci++)
                for (int in_place = 0; in_place < 2; in_place++) {
                    int64_t n = counts_reduce[ci];
                    int salt = dt * 10 + op;
                    void *send = buf_new(dt, n), *recv = in_place ? send : buf_new(dt, n);
                    for (int64_t i = 0; i < n; i++) buf_set(dt, send, i, gen(dt, g_rank, i, salt));
                    char label[128];
                    fmt(label, sizeof label, "allreduce %s %s n=%lld%s", dt_names[dt], op_names[op], (long long)n,
                        in_place ? " in place" : "");
                    Status st = comm_allreduce(g_c, send, recv, n, dt, op, label);
                    if (st != ADDC_OK) {
                        verdict_status(st, label);
                    } else {
                        RefCtx x = {dt, op, salt, 0, n};
                        verdict_exact(dt, recv, n, want_reduce, &x, label);
                    }
                    if (!in_place) free(recv);
                    free(send);
                }
}

static void test_allgather(void) {
    for (int dt = COMM_F32; dt <= COMM_U64; dt++)
        for (int ci = 0; ci < NCOUNTS(counts_block); ci++)
            for (int in_place = 0; in_place < 2; in_place++) {
                int64_t n = counts_block[ci];
                int salt = 40 + dt;
                void *recv = buf_new(dt, n * g_size);
                void *send = in_place ? (char *)recv + (size_t)g_rank * (size_t)n * mem_size(dt) : buf_new(dt, n);
                for (int64_t i = 0; i < n; i++) buf_set(dt, send, i, gen(dt, g_rank, i, salt));
                char label[128];
                fmt(label, sizeof label, "allgather %s n=%lld%s", dt_names[dt], (long long)n,
                    in_place ? " in place" : "");
                Status st = comm_allgather(g_c, send, recv, n, dt, label);
                if (st != ADDC_OK) {
                    verdict_status(st, label);
                } else {
                    RefCtx x = {dt, COMM_SUM, salt, 0, n};
                    verdict_exact(dt, recv, n * g_size, want_gather, &x, label);
                }
                if (!in_place) free(send);
                free(recv);
            }
}

static void test_reduce_scatter(void) {
    for (int dt = COMM_F32; dt <= COMM_U64; dt++)
        for (int op = COMM_SUM; op <= COMM_MIN; op++)
            for (int ci = 0; ci < NCOUNTS(counts_block); ci++) {
                int64_t n = counts_block[ci];
                int salt = 60 + dt * 10 + op;
                void *send = buf_new(dt, n * g_size), *recv = buf_new(dt, n);
                for (int64_t i = 0; i < n * g_size; i++) buf_set(dt, send, i, gen(dt, g_rank, i, salt));
                char label[128];
                fmt(label, sizeof label, "reduce_scatter %s %s n=%lld", dt_names[dt], op_names[op], (long long)n);
                Status st = comm_reduce_scatter(g_c, send, recv, n, dt, op, label);
                if (st != ADDC_OK) {
                    verdict_status(st, label);
                } else {
                    RefCtx x = {dt, op, salt, 0, n};
                    verdict_exact(dt, recv, n, want_scatter, &x, label);
                }
                free(send);
                free(recv);
            }
}

static void test_broadcast(void) {
    static const int64_t counts[] = {0, 1, 1001};
    for (int dt = COMM_F32; dt <= COMM_U64; dt++)
        for (int ci = 0; ci < NCOUNTS(counts); ci++)
            for (int root = 0; root < g_size; root++) {
                int64_t n = counts[ci];
                int salt = 90 + dt;
                void *buf = buf_new(dt, n);
                for (int64_t i = 0; i < n; i++) buf_set(dt, buf, i, gen(dt, g_rank, i, salt));
                char label[128];
                fmt(label, sizeof label, "broadcast %s n=%lld root %d", dt_names[dt], (long long)n, root);
                Status st = comm_broadcast(g_c, buf, n, dt, root, label);
                if (st != ADDC_OK) {
                    verdict_status(st, label);
                } else {
                    RefCtx x = {dt, COMM_SUM, salt, root, n};
                    verdict_exact(dt, buf, n, want_root, &x, label);
                }
                free(buf);
            }
}

/* ---- bf16 ---- */

static void fill_random(float *x, int64_t n, int rank, uint64_t seed) {
    TestRng rng = {seed * 1000003ull + (uint64_t)rank};
    trng_fill_f32(&rng, x, n, -1.0, 1.0);
}

static void test_bf16(void) {
    const int64_t n = 1003;
    char label[128], d[200];
    /* reduce_scatter sum on random data: within bf16 rounding of the exact sum of bf16 inputs */
    float *send = malloc((size_t)(n * g_size) * sizeof *send), *recv = malloc((size_t)n * sizeof *recv),
          *again = malloc((size_t)n * sizeof *again), *x = malloc((size_t)(n * g_size) * sizeof *x);
    fill_random(send, n * g_size, g_rank, 7);
    fmt(label, sizeof label, "reduce_scatter bf16 sum n=%lld (random)", (long long)n);
    Status st = comm_reduce_scatter(g_c, send, recv, n, COMM_BF16, COMM_SUM, label);
    if (st != ADDC_OK) {
        verdict_status(st, label);
    } else {
        double worst = 0;
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; i++) {
            double ref = 0, mag = 0;
            for (int r = 0; r < g_size; r++) {
                fill_random(x, n * g_size, r, 7);
                double v = bf16_ref(x[(int64_t)g_rank * n + i]);
                ref += v;
                mag += fabs(v);
            }
            double err = fabs(recv[i] - ref), tol = g_size * ldexp(mag, -8) + 1e-30;
            if (err / tol > worst) worst = err / tol;
            if (err > tol || !is_bf16(recv[i])) bad = i;
        }
        verdict(bad < 0, label, fmt(d, sizeof d, "element %lld outside bf16 rounding or not bf16", (long long)bad));
        if (g_rank == 0) printf("     (worst error / bf16 bound %.3f)\n", worst);
        /* the same call again gives the same bits */
        fmt(label, sizeof label, "reduce_scatter bf16 sum repeatable");
        st = comm_reduce_scatter(g_c, send, again, n, COMM_BF16, COMM_SUM, label);
        if (st != ADDC_OK)
            verdict_status(st, label);
        else
            verdict(memcmp(recv, again, (size_t)n * sizeof *recv) == 0, label, "bits differ between two calls");
    }
    /* integer data: bf16 sums of small integers are exact */
    for (int op = COMM_SUM; op <= COMM_MIN; op++) {
        for (int64_t i = 0; i < n * g_size; i++) send[i] = (float)gen(COMM_F32, g_rank, i, 5);
        fmt(label, sizeof label, "reduce_scatter bf16 %s n=%lld (integers, exact)", op_names[op], (long long)n);
        st = comm_reduce_scatter(g_c, send, recv, n, COMM_BF16, op, label);
        if (st != ADDC_OK) {
            verdict_status(st, label);
        } else {
            RefCtx rx = {COMM_F32, op, 5, 0, n};
            verdict_exact(COMM_F32, recv, n, want_scatter, &rx, label);
        }
    }
    /* allreduce bf16 in place: every rank the same bits, all bf16 */
    fill_random(recv, n, g_rank, 11);
    fmt(label, sizeof label, "allreduce bf16 sum in place, same bits on every rank");
    st = comm_allreduce(g_c, recv, recv, n, COMM_BF16, COMM_SUM, label);
    if (st != ADDC_OK) {
        verdict_status(st, label);
    } else {
        bool all_bf16 = true;
        for (int64_t i = 0; i < n; i++) all_bf16 = all_bf16 && is_bf16(recv[i]);
        float *gathered = malloc((size_t)(n * g_size) * sizeof *gathered);
        st = comm_allgather(g_c, recv, gathered, n, COMM_F32, "gather bf16 allreduce results");
        bool same = st == ADDC_OK;
        for (int r = 0; same && r < g_size; r++) same = memcmp(gathered + (int64_t)r * n, recv, (size_t)n * 4) == 0;
        verdict(all_bf16 && same, label, all_bf16 ? "ranks differ" : "a result is not bf16");
        free(gathered);
    }
    /* allgather and broadcast bf16: the rounded values of the sender */
    fill_random(send, n, g_rank, 13);
    float *all = malloc((size_t)(n * g_size) * sizeof *all);
    fmt(label, sizeof label, "allgather bf16 n=%lld", (long long)n);
    st = comm_allgather(g_c, send, all, n, COMM_BF16, label);
    if (st != ADDC_OK) {
        verdict_status(st, label);
    } else {
        int64_t bad = -1;
        for (int r = 0; r < g_size && bad < 0; r++) {
            fill_random(x, n, r, 13);
            for (int64_t i = 0; i < n && bad < 0; i++)
                if (all[(int64_t)r * n + i] != bf16_ref(x[i])) bad = (int64_t)r * n + i;
        }
        verdict(bad < 0, label, fmt(d, sizeof d, "element %lld", (long long)bad));
    }
    free(all);
    int root = g_size - 1;
    fill_random(recv, n, g_rank, 17);
    fmt(label, sizeof label, "broadcast bf16 n=%lld root %d", (long long)n, root);
    st = comm_broadcast(g_c, recv, n, COMM_BF16, root, label);
    if (st != ADDC_OK) {
        verdict_status(st, label);
    } else {
        fill_random(x, n, root, 17);
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; i++)
            if (recv[i] != bf16_ref(x[i])) bad = i;
        verdict(bad < 0, label, fmt(d, sizeof d, "element %lld", (long long)bad));
    }
    free(send);
    free(recv);
    free(again);
    free(x);
}

/* Random f32 sums (not exact): every rank gets the same bits, and so does a second call. */
static void test_allreduce_agreement(void) {
    const int64_t n = 5000;
    float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4), *g = malloc((size_t)(n * g_size) * 4);
    fill_random(a, n, g_rank, 23);
    fill_random(b, n, g_rank, 23);
    Status st = comm_allreduce(g_c, a, a, n, COMM_F32, COMM_SUM, "random sum, first");
    if (st == ADDC_OK) st = comm_allreduce(g_c, b, b, n, COMM_F32, COMM_SUM, "random sum, second");
    if (st == ADDC_OK) st = comm_allgather(g_c, a, g, n, COMM_F32, "random sum results");
    const char *label = "allreduce f32 random: same bits on every rank and on a repeat";
    if (st != ADDC_OK) {
        verdict_status(st, label);
    } else {
        bool same = memcmp(a, b, (size_t)n * 4) == 0;
        for (int r = 0; same && r < g_size; r++) same = memcmp(g + (int64_t)r * n, a, (size_t)n * 4) == 0;
        verdict(same, label, "bits differ");
    }
    free(a);
    free(b);
    free(g);
}

static void test_barrier_and_gatherv(void) {
    verdict_status(comm_barrier(g_c, "barrier"), "barrier");
    for (int root = 0; root < g_size; root++) {
        int64_t n = g_rank + 1, total = 0;
        int64_t *counts = malloc((size_t)g_size * sizeof *counts);
        for (int r = 0; r < g_size; r++) total += (counts[r] = r + 1);
        char *send = malloc((size_t)n), *recv = calloc((size_t)total, 1);
        memset(send, 'a' + g_rank, (size_t)n);
        char label[64];
        fmt(label, sizeof label, "gatherv_bytes root %d", root);
        Status st =
            comm_gatherv_bytes(g_c, send, n, g_rank == root ? recv : NULL, g_rank == root ? counts : NULL, root, label);
        if (st != ADDC_OK) {
            verdict_status(st, label);
        } else {
            bool ok = true;
            if (g_rank == root)
                for (int r = 0, at = 0; r < g_size; r++)
                    for (int k = 0; k <= r; k++) ok = ok && recv[at++] == 'a' + r;
            verdict(ok, label, "bytes on the root differ");
        }
        free(counts);
        free(send);
        free(recv);
    }
}

static void test_nonblocking(void) {
    const int64_t n = 301; /* odd: no nice divisions */
    float *ag_send = malloc((size_t)n * 4), *ag_recv = malloc((size_t)(n * g_size) * 4);
    float *rs_send = malloc((size_t)(n * g_size) * 4), *rs_recv = malloc((size_t)n * 4);
    double *ar = malloc((size_t)n * 8);
    for (int64_t i = 0; i < n; i++) ag_send[i] = (float)gen(COMM_F32, g_rank, i, 101);
    for (int64_t i = 0; i < n * g_size; i++) rs_send[i] = (float)gen(COMM_F32, g_rank, i, 102);
    for (int64_t i = 0; i < n; i++) ar[i] = gen(COMM_F64, g_rank, i, 103);
    for (int order = 0; order < 2; order++) {
        CommRequest *q[3] = {NULL, NULL, NULL};
        Status st = comm_iallgather(g_c, ag_send, ag_recv, n, COMM_F32, "iallgather", &q[0]);
        if (st == ADDC_OK)
            st = comm_ireduce_scatter(g_c, rs_send, rs_recv, n, COMM_F32, COMM_MAX, "ireduce_scatter", &q[1]);
        if (st == ADDC_OK)
            st = comm_iallreduce(g_c, ar, ar, n, COMM_F64, order ? COMM_MIN : COMM_SUM, "iallreduce", &q[2]);
        for (int k = 0; k < 3; k++) {
            int j = order ? 2 - k : k;
            Status sw = comm_wait(g_c, q[j]);
            if (st == ADDC_OK) st = sw;
        }
        char label[96];
        fmt(label, sizeof label, "three non-blocking collectives in flight, waited %s",
            order ? "in reverse" : "in order");
        if (st != ADDC_OK) {
            verdict_status(st, label);
            break;
        }
        RefCtx g = {COMM_F32, COMM_SUM, 101, 0, n}, s = {COMM_F32, COMM_MAX, 102, 0, n};
        double gv = 0, wv = 0;
        bool ok = first_mismatch(COMM_F32, ag_recv, n * g_size, want_gather, &g, &gv, &wv) < 0 &&
                  first_mismatch(COMM_F32, rs_recv, n, want_scatter, &s, &gv, &wv) < 0;
        /* the allreduce ran on its own result the second time: sum, then min of the (equal) sums */
        RefCtx a = {COMM_F64, COMM_SUM, 103, 0, n};
        ok = ok && first_mismatch(COMM_F64, ar, n, want_reduce, &a, &gv, &wv) < 0;
        verdict(ok, label, fmt((char[160]){0}, 160, "got %.17g want %.17g", gv, wv));
    }
    verdict_status(comm_wait(g_c, NULL), "comm_wait(NULL) is a no-op");
    free(ag_send);
    free(ag_recv);
    free(rs_send);
    free(rs_recv);
    free(ar);
}

static void test_bytes(void) {
    comm_bytes_sent_take(g_c);
    float f[64 * 4] = {0}, g[64 * 4];
    double dbl[10 * 4] = {0}, dr[10 * 4];
    Status st = comm_allreduce(g_c, f, g, 37, COMM_F32, COMM_SUM, "bytes allreduce");
    int64_t want = 37 * 4;
    if (st == ADDC_OK) st = comm_allgather(g_c, dbl, dr, 10, COMM_F64, "bytes allgather");
    want += 10 * 8;
    if (st == ADDC_OK) st = comm_reduce_scatter(g_c, f, g, 11, COMM_F32, COMM_SUM, "bytes reduce_scatter");
    want += 11 * 4 * g_size;
    if (st == ADDC_OK) st = comm_reduce_scatter(g_c, f, g, 13, COMM_BF16, COMM_SUM, "bytes reduce_scatter bf16");
    want += 13 * 2 * g_size;
    if (st == ADDC_OK) st = comm_broadcast(g_c, f, 17, COMM_F32, 0, "bytes broadcast");
    want += g_rank == 0 ? 17 * 4 : 0;
    if (st == ADDC_OK) st = comm_barrier(g_c, "bytes barrier");
    if (st != ADDC_OK) {
        verdict_status(st, "comm_bytes_sent_take");
        return;
    }
    int64_t got = comm_bytes_sent_take(g_c), again = comm_bytes_sent_take(g_c);
    char d[96];
    verdict(
        got == want && again == 0, "comm_bytes_sent_take counts this rank's send bytes, then resets",
        fmt(d, sizeof d, "got %lld then %lld, want %lld then 0", (long long)got, (long long)again, (long long)want));
}

/* Refused calls: a Status and a message naming `what`; nothing reaches MPI. */
static void verdict_refused(Status st, const char *what, const char *label) {
    bool named = strstr(addc_error_message(), what) != NULL;
    char d[320];
    fmt(d, sizeof d, "status %s, message '%s'", addc_status_name(st), addc_error_message());
    addc_error_clear();
    verdict(st == ADDC_ERR_INVALID && named, label, d);
}

static void test_invalid(void) {
    float f[4] = {0};
    verdict_refused(comm_allreduce(g_c, f, f, -1, COMM_F32, COMM_SUM, "negative count case"), "negative count case",
                    "negative count is ADDC_ERR_INVALID naming the collective");
    verdict_refused(comm_broadcast(g_c, f, 4, COMM_F32, g_size, "bad root case"), "bad root case",
                    "root out of range is ADDC_ERR_INVALID naming the collective");
    verdict_refused(comm_reduce_scatter(g_c, NULL, f, 1, COMM_F32, COMM_SUM, "null buffer case"), "null buffer case",
                    "NULL buffer with count > 0 is ADDC_ERR_INVALID naming the collective");
    verdict_refused(comm_allreduce(g_c, f, f + 1, 2, COMM_F32, COMM_SUM, "overlap case"), "overlap case",
                    "overlapping send and recv is ADDC_ERR_INVALID naming the collective");
    verdict_status(comm_barrier(g_c, "barrier after refused calls"), "barrier after refused calls");
}

static void test_basics(bool launched) {
    char d[160];
    const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
    bool ok = comm_is_mpi(g_c) == launched && g_rank >= 0 && g_rank < g_size && (!ws || atoi(ws) == g_size) &&
              (launched || (g_rank == 0 && g_size == 1));
    verdict(ok, launched ? "MPI communicator: rank and size as the launcher says" : "solo communicator: rank 0 of 1",
            fmt(d, sizeof d, "mpi %d rank %d size %d", comm_is_mpi(g_c), g_rank, g_size));
    void *h = comm_mpi_handle(g_c);
    int h_size = -1;
    if (h) MPI_Comm_size(*(MPI_Comm *)h, &h_size);
    verdict(launched ? h_size == g_size : h == NULL, "comm_mpi_handle: an MPI_Comm of the world's size, NULL solo",
            fmt(d, sizeof d, "handle %p, its size %d", h, h_size));
    const char *t = getenv("ADDC_COMM_TIMEOUT");
    double want = t ? strtod(t, NULL) : 600.0, before = comm_timeout(g_c);
    comm_set_timeout(g_c, 42.5);
    double set = comm_timeout(g_c);
    comm_set_timeout(g_c, before);
    verdict(before == want && set == 42.5, "timeout: default 600 or ADDC_COMM_TIMEOUT, settable",
            fmt(d, sizeof d, "%g (want %g), set %g", before, want, set));
    comm_set_phase(g_c, "testing");
}

static int run_hang(void) {
    comm_set_phase(g_c, "hang test");
    float v = 1.0f;
    for (int i = 1; i <= 20; i++) {
        char what[64];
        fmt(what, sizeof what, "hang test step %d", i);
        Status st = comm_allreduce(g_c, &v, &v, 1, COMM_F32, COMM_SUM, what);
        if (st != ADDC_OK) {
            fprintf(stderr, "rank %d: %s\n", g_rank, addc_error_message());
            return 1;
        }
    }
    printf("rank %d: all 20 collectives completed (is ADDC_TEST_HANG set?)\n", g_rank);
    comm_finalize();
    return 0;
}

int main(int argc, char **argv) {
    bool launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
    Status st = comm_world(&g_c);
    if (st != ADDC_OK) {
        fprintf(stderr, "comm_world: %s\n", addc_error_message());
        return 1;
    }
    g_rank = comm_rank(g_c);
    g_size = comm_size(g_c);
    if (argc > 1 && strcmp(argv[1], "--hang") == 0) return run_hang();
    const char *chunk = getenv("ADDC_COMM_CHUNK");
    if (g_rank == 0)
        printf("test_comm: %s, %d rank%s%s%s\n", launched ? "mpirun" : "no launcher", g_size, g_size == 1 ? "" : "s",
               chunk ? ", ADDC_COMM_CHUNK=" : "", chunk ? chunk : "");
    test_basics(launched);
    test_allreduce();
    test_allgather();
    test_reduce_scatter();
    test_broadcast();
    test_bf16();
    test_allreduce_agreement();
    test_barrier_and_gatherv();
    test_nonblocking();
    test_bytes();
    test_invalid();

    uint64_t counts[2] = {(uint64_t)test_passed, (uint64_t)test_failed};
    st = comm_allreduce(g_c, counts, counts, 2, COMM_U64, COMM_SUM, "test totals");
    if (st != ADDC_OK) {
        fprintf(stderr, "rank %d: totals: %s\n", g_rank, addc_error_message());
        return 1;
    }
    if (g_rank == 0)
        printf("test_comm (%d rank%s): %llu passed, %llu failed over all ranks\n", g_size, g_size == 1 ? "" : "s",
               (unsigned long long)counts[0], (unsigned long long)counts[1]);
    comm_finalize();
    return counts[1] ? 1 : 0;
}
