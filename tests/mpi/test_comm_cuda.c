/* tests/mpi/test_comm_cuda: distributed/comm on CUDA device buffers (comm_enable_device).
 *
 * Every collective, dtype (f32, f64, u64, bf16 on the wire) and op on device buffers is checked
 * against the same collective on host buffers of the same data (MPI under mpirun, the local copy
 * of the solo communicator without it): the results must have the same bits (integer data are
 * exact in every order of summation; bf16-rounded random data too at one rank, within bf16
 * rounding on several). Then: the non-blocking variants with several in flight waited in reverse,
 * stream ordering without host synchronisation (a slow chain of kernels writes the send buffer
 * right before the collective and a kernel reads the result right after it or after comm_wait;
 * only the final copy to the host synchronises), the bf16 staging pool's steady state (no comm
 * memory allocated on a repeat), refused calls, byte counts, host buffers still going to MPI.
 *
 * Runs without a launcher (solo: device copies) and under mpirun (NCCL; one rank per GPU, so one
 * rank on a one-GPU machine). Exits 77 (skipped) without a CUDA device.
 *
 * `test_comm_cuda --probe` exits 0 with a CUDA device, 77 without. `--hang-wait` and
 * `--hang-blocked` only run device allreduces in a loop (non-blocking + comm_wait, or blocking and
 * then a copy to the host): with ADDC_TEST_DEVICE_HANG set they are the device watchdog tests
 * driven by tests/mpi/comm_cuda_hang.sh. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "distributed/comm.h"
#include "tests/test_util.h"

static Comm *g_c;
static int g_rank, g_size, g_local; /* g_local: this rank's CUDA device */

static const char *const dt_names[] = {"f32", "f64", "u64", "bf16"};
static const char *const op_names[] = {"sum", "max", "min"};

/* ---- verdicts ---- */

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

/* ---- buffers ---- */

static size_t mem_size(CommDType dt) { return dt == COMM_F64 || dt == COMM_U64 ? 8 : 4; }

/* Device memory of the workspace category, so that CUDA_MEM_COMM counts comm's staging only. */
static void *dev_new(size_t bytes) {
    void *p = NULL;
    Status st = cuda_mem_alloc(CUDA_MEM_WORKSPACE, &p, bytes ? bytes : 1);
    CHECK_OK(st);
    return st == ADDC_OK ? p : NULL;
}

static void dev_del(void *p, size_t bytes) {
    if (p) CHECK_OK(cuda_mem_free(CUDA_MEM_WORKSPACE, p, bytes ? bytes : 1));
}

static void *host_new(size_t bytes) { return calloc(bytes ? bytes : 1, 1); }

/* The value rank r contributes at element i: integers, exact in every dtype, in bf16 (|v| <= 50)
 * and in sums over a few ranks (u64: large ones, to exercise 64 bits). */
static double gen(CommDType dt, int r, int64_t i, int salt) {
    int64_t k = ((int64_t)(r + 1) * 7919 + i * 31 + (int64_t)salt * 17) % 101;
    if (dt == COMM_U64) return (double)((1ull << 40) + (uint64_t)k * 1000003ull);
    return (double)(k - 50);
}

static void fill_input(CommDType dt, void *p, int64_t n, int r, int salt, bool random) {
    if (random) { /* f32 / bf16 buffers only */
        TestRng rng = {(uint64_t)salt * 1000003ull + (uint64_t)r + 1};
        trng_fill_f32(&rng, p, n, -1.0, 1.0);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        double v = gen(dt, r, i, salt);
        if (dt == COMM_F64)
            ((double *)p)[i] = v;
        else if (dt == COMM_U64)
            ((uint64_t *)p)[i] = (uint64_t)v;
        else
            ((float *)p)[i] = (float)v;
    }
}

/* ---- one collective on host or device buffers ---- */

typedef enum Coll { C_ALLREDUCE = 0, C_ALLGATHER, C_REDUCE_SCATTER, C_BROADCAST } Coll;
static const char *const coll_names[] = {"allreduce", "allgather", "reduce_scatter", "broadcast"};

typedef struct Case {
    Coll coll;
    CommDType dt;
    CommOp op;
    int64_t n;
    int root;
    bool in_place, nonblocking, random;
    int salt;
} Case;

static int64_t send_count(const Case *k) { return k->coll == C_REDUCE_SCATTER ? k->n * g_size : k->n; }
static int64_t recv_count(const Case *k) { return k->coll == C_ALLGATHER ? k->n * g_size : k->n; }

/* A buffer of `bytes` on the side asked, holding `src` (src_bytes of it; the rest poisoned with
 * 0xff bytes: NaN in f32/f64). */
static void *side_buf(bool device, size_t bytes, const void *src, size_t src_off, size_t src_bytes) {
    if (!device) {
        char *p = host_new(bytes);
        memset(p, 0xff, bytes);
        if (src_bytes) memcpy(p + src_off, src, src_bytes);
        return p;
    }
    char *p = dev_new(bytes);
    if (!p) return NULL;
    CHECK_OK(cuda_memset(p, 0xff, bytes ? bytes : 1));
    if (src_bytes) CHECK_OK(cuda_copy_to_device(p + src_off, src, src_bytes));
    return p;
}

static void side_free(bool device, void *p, size_t bytes) {
    if (device)
        dev_del(p, bytes);
    else
        free(p);
}

/* Runs case k on host or device buffers; the result (recv_count elements) lands in out (host). */
static Status run_on(const Case *k, bool device, void *out, const char *label) {
    size_t m = mem_size(k->dt);
    int64_t sn = send_count(k), rn = recv_count(k);
    size_t sbytes = (size_t)sn * m, rbytes = (size_t)rn * m;
    void *in = host_new(sbytes);
    fill_input(k->dt, in, sn, g_rank, k->salt, k->random);
    void *send = NULL, *recv = NULL, *own = NULL; /* own: the single buffer of an in-place call */
    size_t own_bytes = 0;
    if (k->coll == C_BROADCAST || (k->coll == C_ALLREDUCE && k->in_place)) {
        own = side_buf(device, sbytes, in, 0, sbytes);
        own_bytes = sbytes;
        send = recv = own;
    } else if (k->coll == C_ALLGATHER && k->in_place) {
        own = side_buf(device, rbytes, in, (size_t)g_rank * sbytes, sbytes);
        own_bytes = rbytes;
        recv = own;
        send = own ? (char *)own + (size_t)g_rank * sbytes : NULL;
    } else {
        send = side_buf(device, sbytes, in, 0, sbytes);
        recv = side_buf(device, rbytes, NULL, 0, 0);
    }
    Status st = (send && recv) ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "%s: buffers", label);
    CommRequest *q = NULL;
    if (st == ADDC_OK) {
        switch (k->coll) {
        case C_ALLREDUCE:
            st = k->nonblocking ? comm_iallreduce(g_c, send, recv, k->n, k->dt, k->op, label, &q)
                                : comm_allreduce(g_c, send, recv, k->n, k->dt, k->op, label);
            break;
        case C_ALLGATHER:
            st = k->nonblocking ? comm_iallgather(g_c, send, recv, k->n, k->dt, label, &q)
                                : comm_allgather(g_c, send, recv, k->n, k->dt, label);
            break;
        case C_REDUCE_SCATTER:
            st = k->nonblocking ? comm_ireduce_scatter(g_c, send, recv, k->n, k->dt, k->op, label, &q)
                                : comm_reduce_scatter(g_c, send, recv, k->n, k->dt, k->op, label);
            break;
        case C_BROADCAST: st = comm_broadcast(g_c, recv, k->n, k->dt, k->root, label); break;
        }
    }
    if (st == ADDC_OK && q) st = comm_wait(g_c, q);
    if (st == ADDC_OK && rbytes) {
        if (device)
            st = cuda_copy_to_host(out, recv, rbytes);
        else
            memcpy(out, recv, rbytes);
    }
    if (own) {
        side_free(device, own, own_bytes);
    } else {
        side_free(device, send, sbytes);
        side_free(device, recv, rbytes);
    }
    free(in);
    return st;
}

static double get_as_double(CommDType dt, const void *p, int64_t i) {
    if (dt == COMM_F64) return ((const double *)p)[i];
    if (dt == COMM_U64) return (double)((const uint64_t *)p)[i];
    return ((const float *)p)[i];
}

static bool is_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u & 0xffffu) == 0;
}

/* The case on the device against the same on the host. */
static void check_case(const Case *k) {
    bool reduces = k->coll == C_ALLREDUCE || k->coll == C_REDUCE_SCATTER;
    char label[160], root[32] = "";
    if (k->coll == C_BROADCAST) fmt(root, sizeof root, " root %d", k->root);
    fmt(label, sizeof label, "device %s%s %s%s%s n=%lld%s%s%s", k->nonblocking ? "i" : "", coll_names[k->coll],
        dt_names[k->dt], reduces ? " " : "", reduces ? op_names[k->op] : "", (long long)k->n,
        k->in_place ? " in place" : "", k->random ? " random" : "", root);
    int64_t rn = recv_count(k);
    size_t rbytes = (size_t)rn * mem_size(k->dt);
    void *h = host_new(rbytes), *d = host_new(rbytes);
    Status st = run_on(k, false, h, label);
    if (st != ADDC_OK) {
        verdict_status(st, label);
        free(h);
        free(d);
        return;
    }
    st = run_on(k, true, d, label);
    if (st != ADDC_OK) {
        verdict_status(st, label);
        free(h);
        free(d);
        return;
    }
    /* bf16 sums of random data on several ranks may round in another order: within bf16 rounding of
     * the host result (and bf16 values); everything else: the same bits */
    bool loose = k->dt == COMM_BF16 && k->random && g_size > 1 && k->op == COMM_SUM &&
                 (k->coll == C_ALLREDUCE || k->coll == C_REDUCE_SCATTER);
    int64_t bad = -1;
    for (int64_t i = 0; i < rn && bad < 0; i++) {
        if (!loose) {
            if (memcmp((char *)h + (size_t)i * mem_size(k->dt), (char *)d + (size_t)i * mem_size(k->dt),
                       mem_size(k->dt)) != 0)
                bad = i;
        } else {
            float hv = ((float *)h)[i], dv = ((float *)d)[i];
            if (!(fabsf(hv - dv) <= (float)g_size * (float)g_size * 0x1p-7f) || !is_bf16(dv)) bad = i;
        }
    }
    char detail[200];
    fmt(detail, sizeof detail, "element %lld: device %.9g, host %.9g", (long long)bad,
        bad >= 0 ? get_as_double(k->dt, d, bad) : 0.0, bad >= 0 ? get_as_double(k->dt, h, bad) : 0.0);
    verdict(bad < 0, label, detail);
    free(h);
    free(d);
}

static const int64_t counts_reduce[] = {0, 1, 7, 1000, 4099};
static const int64_t counts_block[] = {0, 1, 5, 257, 1001};
#define NCOUNTS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* dt 0..3 with integer data, then 4: bf16 with random data */
static void case_dt(Case *k, int v) {
    k->dt = v < 4 ? (CommDType)v : COMM_BF16;
    k->random = v == 4;
}

static void test_collectives(void) {
    for (int nb = 0; nb < 2; nb++)
        for (int v = 0; v < 5; v++) {
            for (int op = COMM_SUM; op <= COMM_MIN; op++)
                for (int ci = 0; ci < NCOUNTS(counts_reduce); ci++)
                    for (int in_place = 0; in_place < 2; in_place++) {
                        Case k = {.coll = C_ALLREDUCE, .op = op, .n = counts_reduce[ci], .in_place = in_place,
                                  .nonblocking = nb, .salt = 10 * v + op};
                        case_dt(&k, v);
                        check_case(&k);
                    }
            for (int ci = 0; ci < NCOUNTS(counts_block); ci++)
                for (int in_place = 0; in_place < 2; in_place++) {
                    Case k = {.coll = C_ALLGATHER, .n = counts_block[ci], .in_place = in_place, .nonblocking = nb,
                              .salt = 40 + v};
                    case_dt(&k, v);
                    check_case(&k);
                }
            for (int op = COMM_SUM; op <= COMM_MIN; op++)
                for (int ci = 0; ci < NCOUNTS(counts_block); ci++) {
                    Case k = {.coll = C_REDUCE_SCATTER, .op = op, .n = counts_block[ci], .nonblocking = nb,
                              .salt = 60 + 10 * v + op};
                    case_dt(&k, v);
                    check_case(&k);
                }
            if (!nb) {
                static const int64_t counts[] = {0, 1, 1001};
                for (int ci = 0; ci < NCOUNTS(counts); ci++)
                    for (int root = 0; root < g_size; root++) {
                        Case k = {.coll = C_BROADCAST, .n = counts[ci], .root = root, .salt = 90 + v};
                        case_dt(&k, v);
                        check_case(&k);
                    }
            }
        }
}

/* ---- several non-blocking collectives in flight ---- */

static void test_inflight(void) {
    const int64_t n = 3001;
    Case ag = {.coll = C_ALLGATHER, .dt = COMM_F32, .n = n, .salt = 201};
    Case rs = {.coll = C_REDUCE_SCATTER, .dt = COMM_BF16, .op = COMM_MAX, .n = n, .salt = 202};
    Case ar = {.coll = C_ALLREDUCE, .dt = COMM_F64, .op = COMM_SUM, .n = n, .salt = 203};
    Case *cs[3] = {&ag, &rs, &ar};
    void *want[3], *got[3], *hin[3], *dsend[3], *drecv[3];
    size_t sb[3], rb[3];
    Status st = ADDC_OK;
    for (int j = 0; j < 3; j++) {
        sb[j] = (size_t)send_count(cs[j]) * mem_size(cs[j]->dt);
        rb[j] = (size_t)recv_count(cs[j]) * mem_size(cs[j]->dt);
        want[j] = host_new(rb[j]);
        got[j] = host_new(rb[j]);
        hin[j] = host_new(sb[j]);
        fill_input(cs[j]->dt, hin[j], send_count(cs[j]), g_rank, cs[j]->salt, false);
        if (st == ADDC_OK) st = run_on(cs[j], false, want[j], "in flight: host reference");
        dsend[j] = side_buf(true, sb[j], hin[j], 0, sb[j]);
        drecv[j] = side_buf(true, rb[j], NULL, 0, 0);
    }
    for (int order = 0; order < 2 && st == ADDC_OK; order++) {
        CommRequest *q[3] = {NULL, NULL, NULL};
        st = comm_iallgather(g_c, dsend[0], drecv[0], n, COMM_F32, "in flight iallgather", &q[0]);
        if (st == ADDC_OK)
            st = comm_ireduce_scatter(g_c, dsend[1], drecv[1], n, COMM_BF16, COMM_MAX, "in flight ireduce_scatter",
                                      &q[1]);
        if (st == ADDC_OK)
            st = comm_iallreduce(g_c, dsend[2], drecv[2], n, COMM_F64, COMM_SUM, "in flight iallreduce", &q[2]);
        for (int k = 0; k < 3; k++) {
            Status sw = comm_wait(g_c, q[order ? 2 - k : k]);
            if (st == ADDC_OK) st = sw;
        }
        bool same = true;
        for (int j = 0; j < 3 && st == ADDC_OK; j++) {
            st = cuda_copy_to_host(got[j], drecv[j], rb[j]);
            same = same && memcmp(got[j], want[j], rb[j]) == 0;
        }
        char label[128];
        fmt(label, sizeof label, "three device collectives in flight (f32, bf16, f64), waited %s",
            order ? "in reverse" : "in order");
        if (st != ADDC_OK)
            verdict_status(st, label);
        else
            verdict(same, label, "a result differs from the host collective's");
        for (int j = 0; j < 3; j++) CHECK_OK(cuda_memset(drecv[j], 0xff, rb[j]));
    }
    if (st != ADDC_OK) verdict_status(st, "three device collectives in flight");
    for (int j = 0; j < 3; j++) {
        free(want[j]);
        free(got[j]);
        free(hin[j]);
        dev_del(dsend[j], sb[j]);
        dev_del(drecv[j], rb[j]);
    }
}

/* ---- ordering without host synchronisation ---- */

/* Each round: a chain of K kernels makes the send buffer K (it is 0 before), the collective runs,
 * and a kernel adds its result to an accumulator at once; after R rounds one copy to the host
 * must show R times the collective of K everywhere. A collective that did not wait for the chain
 * reads values below K; a consumer that did not wait for the collective reads the NaN poison
 * written before it. Only the final copy synchronises. */
static void test_ordering(void) {
    const int64_t n = (int64_t)1 << 22; /* 16 MiB per rank block: the chain takes a while */
    const int K = 24, R = 3;
    const size_t big = (size_t)n * (size_t)g_size * sizeof(float);
    float *x = dev_new(big), *ones = dev_new(big), *y = dev_new(big), *acc = dev_new(big);
    float *h = malloc(big);
    if (!x || !ones || !y || !acc || !h) {
        verdict(false, "ordering", "no memory");
        return;
    }
    CHECK_OK(cuda_fill_f32(ones, n * g_size, 1.0f));
    for (int variant = 0; variant < 5; variant++) {
        static const char *const names[] = {"allgather f32 blocking", "iallgather f32 + comm_wait",
                                            "iallreduce bf16 + comm_wait", "ireduce_scatter f32 + comm_wait",
                                            "broadcast f32 blocking"};
        int64_t rn = variant == 0 || variant == 1 ? n * g_size : n; /* result elements */
        float want = variant == 2 || variant == 3 ? (float)(K * g_size) : (float)K;
        char label[128];
        fmt(label, sizeof label, "ordering: %s between kernels, no synchronisation", names[variant]);
        Status st = cuda_fill_f32(acc, rn, 0.0f);
        for (int round = 0; round < R && st == ADDC_OK; round++) {
            /* the broadcast's non-roots make K - 1, so only the root's K may arrive */
            int chain = variant == 4 && g_rank != g_size - 1 ? K - 1 : K;
            st = cuda_fill_f32(x, n * g_size, 0.0f);
            for (int k = 0; k < chain && st == ADDC_OK; k++) st = cuda_axpy_f32(x, ones, n * g_size, 1.0f);
            if (st == ADDC_OK) st = cuda_fill_f32(y, n * g_size, NAN);
            CommRequest *q = NULL;
            float *result = y;
            if (st == ADDC_OK) {
                switch (variant) {
                case 0: st = comm_allgather(g_c, x, y, n, COMM_F32, label); break;
                case 1: st = comm_iallgather(g_c, x, y, n, COMM_F32, label, &q); break;
                case 2: st = comm_iallreduce(g_c, x, y, n, COMM_BF16, COMM_SUM, label, &q); break;
                case 3: st = comm_ireduce_scatter(g_c, x, y, n, COMM_F32, COMM_SUM, label, &q); break;
                default:
                    st = comm_broadcast(g_c, x, n, COMM_F32, g_size - 1, label);
                    result = x;
                    break;
                }
            }
            if (st == ADDC_OK && q) st = comm_wait(g_c, q);
            if (st == ADDC_OK) st = cuda_axpy_f32(acc, result, rn, 1.0f);
        }
        if (st == ADDC_OK) st = cuda_copy_to_host(h, acc, (size_t)rn * sizeof(float));
        if (st != ADDC_OK) {
            verdict_status(st, label);
            continue;
        }
        int64_t bad = -1;
        for (int64_t i = 0; i < rn && bad < 0; i++)
            if (h[i] != want * (float)R) bad = i;
        char d[160];
        verdict(bad < 0, label,
                fmt(d, sizeof d, "element %lld: %.9g, want %.9g", (long long)bad, bad >= 0 ? h[bad] : 0.0f,
                    want * (float)R));
    }
    dev_del(x, big);
    dev_del(ones, big);
    dev_del(y, big);
    dev_del(acc, big);
    free(h);
}

/* ---- the staging pool allocates nothing in a steady state ---- */

static Status staging_round(float *a, float *b, float *c, int64_t n_big) {
    static const int64_t sizes[] = {1000, 100000, 5000};
    for (int s = 0; s < 3; s++) {
        int64_t n = sizes[s];
        TRY(comm_allreduce(g_c, a, b, n, COMM_BF16, COMM_SUM, "staging allreduce"));
        TRY(comm_reduce_scatter(g_c, a, b, n, COMM_BF16, COMM_SUM, "staging reduce_scatter"));
        TRY(comm_allgather(g_c, a, c, n, COMM_BF16, "staging allgather"));
    }
    /* two in flight at once: two staging buffers */
    CommRequest *q1 = NULL, *q2 = NULL;
    TRY(comm_iallgather(g_c, a, c, n_big, COMM_BF16, "staging iallgather", &q1));
    Status st = comm_iallreduce(g_c, a, b, n_big, COMM_BF16, COMM_MAX, "staging iallreduce", &q2);
    Status s1 = comm_wait(g_c, q1), s2 = q2 ? comm_wait(g_c, q2) : ADDC_OK;
    TRY(st);
    TRY(s1);
    return s2;
}

static void test_staging(void) {
    const int64_t n_big = 200000;
    size_t bytes = (size_t)n_big * (size_t)g_size * sizeof(float);
    float *a = dev_new(bytes), *b = dev_new(bytes), *c = dev_new(bytes);
    if (!a || !b || !c) return;
    CHECK_OK(cuda_fill_f32(a, n_big * g_size, 0.5f));
    Status st = staging_round(a, b, c, n_big);
    int64_t live1 = cuda_mem_live(CUDA_MEM_COMM), peak1 = cuda_mem_peak(CUDA_MEM_COMM);
    for (int i = 0; i < 3 && st == ADDC_OK; i++) st = staging_round(a, b, c, n_big);
    int64_t live2 = cuda_mem_live(CUDA_MEM_COMM), peak2 = cuda_mem_peak(CUDA_MEM_COMM);
    const char *label = "bf16 staging: repeating the same collectives allocates no comm memory";
    if (st != ADDC_OK) {
        verdict_status(st, label);
    } else {
        char d[160];
        verdict(live1 > 0 && live2 == live1 && peak2 == peak1, label,
                fmt(d, sizeof d, "comm live %lld -> %lld, peak %lld -> %lld", (long long)live1, (long long)live2,
                    (long long)peak1, (long long)peak2));
        if (g_rank == 0) printf("     (comm staging: %.2f MiB live)\n", (double)live2 / 1048576.0);
    }
    dev_del(a, bytes);
    dev_del(b, bytes);
    dev_del(c, bytes);
}

/* ---- refusals, byte counts, the set-up ---- */

static void verdict_refused(Status st, Status want, const char *what, const char *label) {
    bool named = strstr(addc_error_message(), what) != NULL;
    char d[400];
    fmt(d, sizeof d, "status %s, message '%s'", addc_status_name(st), addc_error_message());
    addc_error_clear();
    verdict(st == want && named, label, d);
}

static void test_refused(int ndev) {
    float host[8] = {0};
    float *dev = dev_new(8 * sizeof(float));
    if (!dev) return;
    verdict_refused(comm_allreduce(g_c, host, dev, 8, COMM_F32, COMM_SUM, "mixed case"), ADDC_ERR_INVALID,
                    "mixed case", "host send with device recv is ADDC_ERR_INVALID naming the collective");
    verdict_refused(comm_allgather(g_c, dev, host, 1, COMM_F32, "mixed gather case"), ADDC_ERR_INVALID,
                    "mixed gather case", "device send with host recv is ADDC_ERR_INVALID naming the collective");
    int64_t counts[64];
    for (int r = 0; r < 64; r++) counts[r] = 4;
    char sink[4 * 64];
    verdict_refused(comm_gatherv_bytes(g_c, dev, 4, g_rank == 0 ? sink : NULL, g_rank == 0 ? counts : NULL, 0,
                                       "device gatherv case"),
                    ADDC_ERR_UNSUPPORTED, "device gatherv case", "gatherv_bytes of device memory is refused");
    verdict_status(comm_enable_device(g_c, g_local), "comm_enable_device again on the same device is a no-op");
    verdict_refused(comm_enable_device(g_c, ndev + 3), ADDC_ERR_INVALID, "already enabled",
                    "comm_enable_device on another device is refused");
    verdict_status(comm_barrier(g_c, "barrier after refused calls"), "barrier after refused calls");
    dev_del(dev, 8 * sizeof(float));
}

static void test_bytes(void) {
    size_t fb = 64 * (size_t)g_size * sizeof(float), db = 10 * (size_t)g_size * sizeof(double);
    float *f = dev_new(fb), *g = dev_new(fb);
    double *dbl = dev_new(db), *dr = dev_new(db);
    if (!f || !g || !dbl || !dr) return;
    CHECK_OK(cuda_fill_f32(f, 64 * g_size, 1.0f));
    CHECK_OK(cuda_memset(dbl, 0, db));
    comm_bytes_sent_take(g_c);
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
    CommRequest *q = NULL;
    if (st == ADDC_OK) st = comm_iallreduce(g_c, f, g, 5, COMM_BF16, COMM_SUM, "bytes iallreduce bf16", &q);
    want += 5 * 2;
    if (st == ADDC_OK) st = comm_wait(g_c, q);
    if (st != ADDC_OK) {
        verdict_status(st, "comm_bytes_sent_take on device buffers");
    } else {
        int64_t got = comm_bytes_sent_take(g_c);
        char d[96];
        verdict(got == want, "comm_bytes_sent_take counts device collectives as host ones",
                fmt(d, sizeof d, "got %lld, want %lld", (long long)got, (long long)want));
    }
    dev_del(f, fb);
    dev_del(g, fb);
    dev_del(dbl, db);
    dev_del(dr, db);
}

/* ---- the watchdog tests (tests/mpi/comm_cuda_hang.sh) ---- */

static int run_hang(bool blocked) {
    comm_set_phase(g_c, "device hang test");
    const int64_t n = 1000;
    float *x = dev_new((size_t)n * sizeof(float));
    if (!x || cuda_fill_f32(x, n, 1.0f) != ADDC_OK) return 1;
    for (int i = 1; i <= 20; i++) {
        char what[64];
        fmt(what, sizeof what, "device hang step %d", i);
        Status st;
        if (blocked) {
            st = comm_allreduce(g_c, x, x, n, COMM_F32, COMM_SUM, what);
        } else {
            CommRequest *q = NULL;
            st = comm_iallreduce(g_c, x, x, n, COMM_F32, COMM_SUM, what, &q);
            if (st == ADDC_OK) st = comm_wait(g_c, q);
        }
        if (st != ADDC_OK) {
            fprintf(stderr, "rank %d: %s\n", g_rank, addc_error_message());
            return 1;
        }
    }
    float v = 0;
    Status st = cuda_copy_to_host(&v, x, sizeof v); /* --hang-blocked: waits here for the hung collective */
    printf("rank %d: all 20 device collectives completed (%s; is ADDC_TEST_DEVICE_HANG set?)\n", g_rank,
           st == ADDC_OK ? "ok" : addc_error_message());
    comm_finalize();
    return 0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    int ndev = cuda_device_count();
    if (strcmp(mode, "--probe") == 0) return ndev > 0 ? 0 : 77;
    bool launched = getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
    Status st = comm_world(&g_c);
    if (st != ADDC_OK) {
        fprintf(stderr, "comm_world: %s\n", addc_error_message());
        return 1;
    }
    g_rank = comm_rank(g_c);
    g_size = comm_size(g_c);
    if (ndev == 0) {
        if (g_rank == 0) printf("test_comm_cuda: skipped (no CUDA device: %s)\n", cuda_unavailable_reason());
        comm_finalize();
        return 77;
    }
    const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    g_local = (lr ? atoi(lr) : 0) % ndev;
    bool before = comm_device_enabled(g_c);
    st = comm_enable_device(g_c, g_local);
    if (st != ADDC_OK) {
        fprintf(stderr, "rank %d: comm_enable_device(%d): %s\n", g_rank, g_local, addc_error_message());
        comm_finalize();
        return 1;
    }
    if (strcmp(mode, "--hang-wait") == 0) return run_hang(false);
    if (strcmp(mode, "--hang-blocked") == 0) return run_hang(true);
    if (g_rank == 0) {
        char desc[160] = "";
        (void)cuda_device_describe(g_local, desc, sizeof desc);
        printf("test_comm_cuda: %s, %d rank%s, device %d (%s)\n", launched ? "mpirun (NCCL)" : "no launcher (solo)",
               g_size, g_size == 1 ? "" : "s", g_local, desc);
    }
    verdict(!before && comm_device_enabled(g_c), "comm_device_enabled: false before comm_enable_device, true after",
            NULL);
    test_collectives();
    test_inflight();
    test_ordering();
    test_staging();
    test_bytes();
    test_refused(ndev);

    uint64_t counts[2] = {(uint64_t)test_passed, (uint64_t)test_failed};
    st = comm_allreduce(g_c, counts, counts, 2, COMM_U64, COMM_SUM, "test totals"); /* host buffers: MPI */
    if (st != ADDC_OK) {
        fprintf(stderr, "rank %d: totals: %s\n", g_rank, addc_error_message());
        return 1;
    }
    if (g_rank == 0)
        printf("test_comm_cuda (%d rank%s): %llu passed, %llu failed over all ranks\n", g_size, g_size == 1 ? "" : "s",
               (unsigned long long)counts[0], (unsigned long long)counts[1]);
    comm_finalize();
    return counts[1] ? 1 : 0;
}
