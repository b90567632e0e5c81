/* distributed/comm: collectives on MPI (or a solo communicator) with a watchdog; see comm.h.
 *
 * Every collective, blocking or not, is posted as non-blocking MPI calls into a CommRequest and
 * completed by request_finish(): MPI_Testall with a backoff sleep (10 us doubling to 1 ms), and
 * after the timeout the watchdog (side exchange, one line to stderr, MPI_Abort). The solo
 * communicator runs the same post/finish steps with the MPI call replaced by a local copy, so
 * the bf16 rounding and the byte count are the same at np 1 with and without mpirun.
 *
 * Counts above the chunk size (INT_MAX / 8 elements; ADDC_COMM_CHUNK for tests) are split: the
 * contiguous collectives post one call per chunk; allgather receives each chunk through a type
 * whose extent is a whole rank block; reduce-scatter becomes one MPI_Ireduce per rank block per
 * chunk (slower, but no staging copy of the whole send buffer).
 *
 * COMM_BF16: f32 buffers in memory, bf16 (round to nearest even) on the wire; reductions add bf16
 * pairs in f32 and round back (user MPI_Ops), and results are widened to f32 on completion.
 *
 * Device buffers (after comm_enable_device): each post_* function validates and counts the call as
 * for host buffers, then hands it to distributed/comm_nccl.c when its buffers are CUDA device
 * memory; the request then carries a device work item instead of MPI requests. The device side's
 * watchdog reports through watchdog_fire_named, so a hung device collective ends the job with the
 * same line as a hung MPI one. */
#include "distributed/comm.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/parallel.h"
#include "distributed/comm_nccl.h"

enum { COMM_SIDE_TAG = 7001, COMM_ABORT_CODE = 70,  COMM_INLINE_REQS = 4, COMM_PHASE_CAP = 96 };
#define COMM_CHUNK_DEFAULT ((int64_t)(INT_MAX / 8))
#define COMM_DEFAULT_TIMEOUT 600.0
#define COMM_GRACE_MAX 5.0

typedef enum CommKind {
    COMM_KIND_BARRIER = 0,
    COMM_KIND_BROADCAST,
    COMM_KIND_ALLREDUCE,
    COMM_KIND_ALLGATHER,
    COMM_KIND_REDUCE_SCATTER,
    COMM_KIND_GATHERV,
    COMM_KIND_NCCL_INIT, /* comm_enable_device's NCCL set-up, watched like a collective */
    COMM_KIND_COUNT
} CommKind;
static const char *const comm_kind_names[] = {"barrier",   "broadcast",      "allreduce", "allgather",
                                              "reduce_scatter", "gatherv", "nccl_init"};
_Static_assert(sizeof comm_kind_names / sizeof comm_kind_names[0] == COMM_KIND_COUNT, "kind names");

struct Comm {
    bool mpi;            /* false: the solo communicator */
    bool we_initialised; /* MPI_Init_thread was ours, so MPI_Finalize is too */
    int rank, size;
    MPI_Comm coll;      /* dup of MPI_COMM_WORLD for the collectives */
    MPI_Comm side;      /* dup for the watchdog's side exchange */
    MPI_Op bf16_ops[3]; /* indexed by CommOp */
    double timeout_s;
    char phase[COMM_PHASE_CAP];
    int64_t seq;        /* collectives entered so far */
    int64_t bytes_sent; /* since the last comm_bytes_sent_take */
    int hang_rank;      /* ADDC_TEST_HANG; -1: none */
    int64_t hang_seq;
    int64_t chunk; /* max elements per MPI call */
    CommDev *dev;  /* comm_enable_device ran; NULL: every buffer is host memory */
};

struct CommRequest {
    CommKind kind;
    int64_t seq;
    char what[128];
    bool heap; /* malloc'd by a non-blocking variant (freed by comm_wait) */
    int n_req, cap_req;
    MPI_Request inline_reqs[COMM_INLINE_REQS];
    MPI_Request *reqs;         /* inline_reqs or malloc'd (cap_req) */
    void *wire;                /* bf16 staging, malloc'd; NULL when not used */
    const uint16_t *widen_src; /* on completion: widen_n bf16 from widen_src into widen_dst */
    float *widen_dst;
    int64_t widen_n;
    bool device;           /* device buffers: dev_work instead of MPI requests */
    CommDevWork *dev_work; /* NULL when nothing is left in flight (solo, count 0) */
};

static Comm comm_the;
static bool comm_started, comm_finished;

/* ---- small helpers ---- */

static double comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void comm_sleep_ns(long ns) {
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&ts, NULL);
}

static const char *mpi_error_text(int code) {
    static char buf[MPI_MAX_ERROR_STRING + 32];
    int len = 0;
    if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) snprintf(buf, sizeof buf, "code %d", code);
    return buf;
}

#define MPI_CHECK(expr) ADDC_CHECK_GEN("MPI", expr, int, r_ == MPI_SUCCESS, "%s", mpi_error_text(r_), ADDC_ERR_EXTERNAL)

static const char *what_or_default(const char *what) { return what && *what ? what : "(unnamed)"; }

/* Bytes of one element in memory and on the wire. */
static size_t dtype_mem_size(CommDType dt) { return dt == COMM_F32 || dt == COMM_BF16 ? 4 : 8; }
static size_t dtype_wire_size(CommDType dt) { return dt == COMM_BF16 ? 2 : dtype_mem_size(dt); }

static MPI_Datatype dtype_mpi(CommDType dt) {
    switch (dt) {
    case COMM_F32: return MPI_FLOAT;
    case COMM_F64: return MPI_DOUBLE;
    case COMM_U64: return MPI_UINT64_T;
    default: return MPI_UINT16_T; /* COMM_BF16 */
    }
}

static MPI_Op op_mpi(const Comm *c, CommDType dt, CommOp op) {
    if (dt == COMM_BF16) return c->bf16_ops[op];
    return op == COMM_SUM ? MPI_SUM : op == COMM_MAX ? MPI_MAX : MPI_MIN;
}

static bool ranges_overlap(const void *a, size_t na, const void *b, size_t nb) {
    const char *pa = a, *pb = b;
    return na && nb && pa < pb + nb && pb < pa + na;
}

/* ---- bf16 ---- */

static inline uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* NaN stays NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float bf16_widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

typedef struct Bf16Job {
    const float *src_f;
    uint16_t *dst_h;
    const uint16_t *src_h;
    float *dst_f;
} Bf16Job;

static void bf16_round_range(void *ctx, int64_t b, int64_t e) {
    const Bf16Job *j = ctx;
    for (int64_t i = b; i < e; i++) j->dst_h[i] = bf16_round(j->src_f[i]);
}

static void bf16_widen_range(void *ctx, int64_t b, int64_t e) {
    const Bf16Job *j = ctx;
    for (int64_t i = b; i < e; i++) j->dst_f[i] = bf16_widen(j->src_h[i]);
}

static void bf16_round_buf(const float *src, uint16_t *dst, int64_t n) {
    Bf16Job j = {.src_f = src, .dst_h = dst};
    parallel_for(n, 1 << 16, bf16_round_range, &j);
}

static void bf16_widen_buf(const uint16_t *src, float *dst, int64_t n) {
    Bf16Job j = {.src_h = src, .dst_f = dst};
    parallel_for(n, 1 << 16, bf16_widen_range, &j);
}

/* User reductions on bf16 pairs: combine in f32, round back. Commutative. */
static void bf16_op_sum(void *in, void *inout, int *len, MPI_Datatype *dt) {
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = bf16_round(bf16_widen(a[i]) + bf16_widen(b[i]));
}
static void bf16_op_max(void *in, void *inout, int *len, MPI_Datatype *dt) {
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = bf16_widen(a[i]) > bf16_widen(b[i]) ? a[i] : b[i];
}
static void bf16_op_min(void *in, void *inout, int *len, MPI_Datatype *dt) {
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = bf16_widen(a[i]) < bf16_widen(b[i]) ? a[i] : b[i];
}

/* ---- environment ---- */

static bool comm_launched_by_mpi(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i])) return true;
    return false;
}

static Status comm_read_env(Comm *c) {
    const char *t = getenv("ADDC_COMM_TIMEOUT");
    if (t && *t) {
        char *end = NULL;
        double v = strtod(t, &end);
        if (end == t || *end || !isfinite(v))
            return addc_error_set(ADDC_ERR_INVALID,
                                  "ADDC_COMM_TIMEOUT='%s' is not a number of seconds (<= 0 turns the watchdog off)", t);
        c->timeout_s = v;
    }
    const char *h = getenv("ADDC_TEST_HANG");
    if (h && *h) {
        int r = -1, used = 0;
        long long s = 0;
        if (sscanf(h, "%d:%lld%n", &r, &s, &used) != 2 || h[used] || r < 0 || s < 1)
            return addc_error_set(ADDC_ERR_INVALID, "ADDC_TEST_HANG='%s' is not RANK:SEQ (rank >= 0, seq >= 1)", h);
        c->hang_rank = r;
        c->hang_seq = s;
    }
    const char *k = getenv("ADDC_COMM_CHUNK");
    if (k && *k) {
        char *end = NULL;
        long long v = strtoll(k, &end, 10);
        if (end == k || *end || v < 1 || v > COMM_CHUNK_DEFAULT)
            return addc_error_set(ADDC_ERR_INVALID, "ADDC_COMM_CHUNK='%s' is not an element count in [1, %lld]", k,
                                  (long long)COMM_CHUNK_DEFAULT);
        c->chunk = v;
    }
    return ADDC_OK;
}

static Status comm_mpi_start(Comm *c) {
    int inited = 0;
    MPI_CHECK(MPI_Initialized(&inited));
    if (!inited) {
        int provided = 0;
        MPI_CHECK(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided));
        c->we_initialised = true;
        if (provided < MPI_THREAD_FUNNELED)
            return addc_error_set(ADDC_ERR_UNSUPPORTED, "MPI provides thread level %d, below MPI_THREAD_FUNNELED",
                                  provided);
    }
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c->coll));
    MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &c->side));
    MPI_CHECK(MPI_Comm_set_errhandler(c->coll, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_set_errhandler(c->side, MPI_ERRORS_RETURN));
    MPI_CHECK(MPI_Comm_rank(c->coll, &c->rank));
    MPI_CHECK(MPI_Comm_size(c->coll, &c->size));
    MPI_CHECK(MPI_Op_create(bf16_op_sum, 1, &c->bf16_ops[COMM_SUM]));
    MPI_CHECK(MPI_Op_create(bf16_op_max, 1, &c->bf16_ops[COMM_MAX]));
    MPI_CHECK(MPI_Op_create(bf16_op_min, 1, &c->bf16_ops[COMM_MIN]));
    c->mpi = true;
    return ADDC_OK;
}

Status comm_world(Comm **out) {
    if (comm_finished)
        return addc_error_set(ADDC_ERR_INVALID, "comm_world called after comm_finalize (MPI cannot be restarted)");
    if (!comm_started) {
        Comm *c = &comm_the;
        memset(c, 0, sizeof *c);
        c->rank = 0;
        c->size = 1;
        c->timeout_s = COMM_DEFAULT_TIMEOUT;
        c->hang_rank = -1;
        c->chunk = COMM_CHUNK_DEFAULT;
        snprintf(c->phase, sizeof c->phase, "%s", "none");
        TRY(comm_read_env(c));
        if (comm_launched_by_mpi()) {
            Status st = comm_mpi_start(c);
            if (st != ADDC_OK) return addc_error_context(st, "starting MPI (launched by mpirun)");
        }
        comm_started = true;
    }
    *out = &comm_the;
    return ADDC_OK;
}

void comm_finalize(void) {
    if (!comm_started || comm_finished) return;
    Comm *c = &comm_the;
    if (c->dev) {
        comm_dev_close(c->dev, true);
        c->dev = NULL;
    }
    if (c->mpi) {
        for (int i = 0; i < 3; i++) MPI_Op_free(&c->bf16_ops[i]);
        MPI_Comm_free(&c->side);
        MPI_Comm_free(&c->coll);
        if (c->we_initialised) MPI_Finalize();
    }
    comm_finished = true;
}

void comm_abort(Comm *c, int code) {
    fflush(stdout);
    fflush(stderr);
    if (c && c->mpi) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

int comm_rank(const Comm *c) { return c->rank; }
int comm_size(const Comm *c) { return c->size; }
bool comm_is_mpi(const Comm *c) { return c->mpi; }
void *comm_mpi_handle(Comm *c) { return c->mpi ? &c->coll : NULL; }

void comm_set_phase(Comm *c, const char *phase) { snprintf(c->phase, sizeof c->phase, "%s", phase ? phase : ""); }
void comm_set_timeout(Comm *c, double seconds) {
    c->timeout_s = seconds;
    if (c->dev) comm_dev_set_timeout(c->dev, seconds);
}
double comm_timeout(const Comm *c) { return c->timeout_s; }

int64_t comm_bytes_sent_take(Comm *c) {
    int64_t b = c->bytes_sent;
    c->bytes_sent = 0;
    return b;
}

/* ---- the watchdog ---- */

typedef struct SideMsg {
    int64_t seq;
    int32_t kind;
    char what[128];
} SideMsg;

/* After a timeout: tell every other rank what we wait in, listen for a grace period, name the
 * ranks not heard from, and end the job (aborting NCCL first when it is in use). */
static _Noreturn void watchdog_fire_named(Comm *c, CommKind kind, int64_t seq, const char *what, const char *phase) {
    if (c->dev) comm_dev_firing(c->dev);
    int n = c->size;
    SideMsg mine = {.seq = seq, .kind = (int32_t)kind};
    snprintf(mine.what, sizeof mine.what, "%s", what);
    MPI_Request *sends = calloc((size_t)n, sizeof *sends);
    SideMsg *theirs = calloc((size_t)n, sizeof *theirs);
    bool *heard = calloc((size_t)n, sizeof *heard);
    int n_heard = 1;
    if (sends && theirs && heard) {
        heard[c->rank] = true;
        for (int d = 0; d < n; d++) {
            sends[d] = MPI_REQUEST_NULL;
            if (d != c->rank) MPI_Isend(&mine, (int)sizeof mine, MPI_BYTE, d, COMM_SIDE_TAG, c->side, &sends[d]);
        }
        double grace = c->timeout_s < COMM_GRACE_MAX ? c->timeout_s : COMM_GRACE_MAX;
        double t0 = comm_now();
        while (n_heard < n && comm_now() - t0 < grace) {
            int flag = 0;
            MPI_Status st;
            if (MPI_Iprobe(MPI_ANY_SOURCE, COMM_SIDE_TAG, c->side, &flag, &st) != MPI_SUCCESS) break;
            if (!flag) {
                comm_sleep_ns(1000000L);
                continue;
            }
            SideMsg m;
            if (MPI_Recv(&m, (int)sizeof m, MPI_BYTE, st.MPI_SOURCE, COMM_SIDE_TAG, c->side, MPI_STATUS_IGNORE) !=
                MPI_SUCCESS)
                break;
            m.what[sizeof m.what - 1] = 0;
            if (st.MPI_SOURCE >= 0 && st.MPI_SOURCE < n && !heard[st.MPI_SOURCE]) {
                heard[st.MPI_SOURCE] = true;
                theirs[st.MPI_SOURCE] = m;
                n_heard++;
            }
        }
    }
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);
    if (!f) f = stderr;
    fprintf(f,
            "addc: rank %d: collective '%s' (%s #%lld) in phase '%s' timed out after %g s; ranks not in it: ", c->rank,
            what, comm_kind_names[kind], (long long)seq, phase, c->timeout_s);
    if (!heard) {
        fprintf(f, "unknown (out of memory)");
    } else if (n_heard == n) {
        fprintf(f, "none");
    } else {
        bool first = true;
        for (int q = 0; q < n; q++)
            if (!heard[q]) {
                fprintf(f, "%s%d", first ? "" : ", ", q);
                first = false;
            }
    }
    for (int q = 0; heard && q < n; q++) {
        if (q == c->rank || !heard[q] || theirs[q].seq == seq) continue;
        int k = theirs[q].kind >= 0 && theirs[q].kind < COMM_KIND_COUNT ? theirs[q].kind : 0;
        fprintf(f, "; rank %d waits in '%s' (%s #%lld)", q, theirs[q].what, comm_kind_names[k],
                (long long)theirs[q].seq);
    }
    fputc('\n', f);
    if (f != stderr) {
        fclose(f);
        fputs(line, stderr);
    }
    fflush(stderr);
    if (c->dev) comm_dev_abort(c->dev);
    MPI_Abort(MPI_COMM_WORLD, COMM_ABORT_CODE);
    _exit(COMM_ABORT_CODE);
}

static _Noreturn void watchdog_fire(Comm *c, const CommRequest *r) {
    watchdog_fire_named(c, r->kind, r->seq, r->what, c->phase);
}

/* Device collectives in flight: retires the completed ones and fires the watchdog for one that
 * started on the device more than the timeout ago (the list is empty without comm_enable_device
 * on an MPI communicator). watch/watch_done: see comm_dev_poll. */
static Status device_poll(Comm *c, CommDevWork *watch, bool *watch_done) {
    CommDevTimeout to;
    Status st = comm_dev_poll(c->dev, watch, watch_done, &to);
    if (to.fired) watchdog_fire_named(c, (CommKind)to.kind, to.seq, to.what, to.phase);
    return st;
}

/* ---- requests ---- */

static void request_release(CommRequest *r) {
    free(r->wire);
    r->wire = NULL;
    if (r->reqs != r->inline_reqs) free(r->reqs);
    r->reqs = r->inline_reqs;
    r->n_req = r->cap_req = 0;
}

/* Validated arguments come in; counts the collective, applies the hang hook, readies *r. */
static Status request_begin(Comm *c, CommRequest *r, CommKind kind, const char *what, int64_t n_mpi_calls) {
    if (c->dev) TRY(device_poll(c, NULL, NULL));
    memset(r, 0, sizeof *r);
    r->kind = kind;
    snprintf(r->what, sizeof r->what, "%s", what_or_default(what));
    r->reqs = r->inline_reqs;
    r->cap_req = COMM_INLINE_REQS;
    c->seq++;
    r->seq = c->seq;
    if (c->hang_rank == c->rank && c->hang_seq == c->seq) {
        fprintf(stderr, "addc: rank %d: ADDC_TEST_HANG: hanging in collective '%s' (%s #%lld)\n", c->rank, r->what,
                comm_kind_names[kind], (long long)c->seq);
        fflush(stderr);
        for (;;) sleep(1);
    }
    if (c->mpi && n_mpi_calls > COMM_INLINE_REQS) {
        if (n_mpi_calls > INT_MAX)
            return addc_error_set(ADDC_ERR_INVALID, "%s '%s': too many chunks", comm_kind_names[kind], r->what);
        r->reqs = malloc((size_t)n_mpi_calls * sizeof *r->reqs);
        if (!r->reqs) {
            r->reqs = r->inline_reqs;
            return addc_error_set(ADDC_ERR_NOMEM, "%s '%s': %lld MPI requests", comm_kind_names[kind], r->what,
                                  (long long)n_mpi_calls);
        }
        r->cap_req = (int)n_mpi_calls;
    }
    return ADDC_OK;
}

static MPI_Request *request_slot(CommRequest *r) {
    assert(r->n_req < r->cap_req); /* request_begin sized the array for every call posted */
    return &r->reqs[r->n_req++];
}

static Status request_wire_alloc(CommRequest *r, int64_t n_halfs, const char *what) {
    r->wire = malloc((size_t)(n_halfs > 0 ? n_halfs : 1) * sizeof(uint16_t));
    if (!r->wire) {
        request_release(r);
        return addc_error_set(ADDC_ERR_NOMEM, "%s '%s': %lld bytes of bf16 staging", comm_kind_names[r->kind], what,
                              (long long)n_halfs * 2);
    }
    return ADDC_OK;
}

/* Completes every MPI request of r under the watchdog, then widens bf16 results. */
static Status request_finish(Comm *c, CommRequest *r) {
    if (r->n_req > 0) {
        double t0 = comm_now();
        long nap = 10000L;
        for (;;) {
            int done = 0;
            int rc = MPI_Testall(r->n_req, r->reqs, &done, MPI_STATUSES_IGNORE);
            if (rc != MPI_SUCCESS) {
                Status st = addc_error_set(ADDC_ERR_EXTERNAL, "%s '%s' (#%lld): MPI error %s while waiting",
                                           comm_kind_names[r->kind], r->what, (long long)r->seq, mpi_error_text(rc));
                request_release(r);
                return st;
            }
            if (done) break;
            if (c->timeout_s > 0 && comm_now() - t0 >= c->timeout_s) watchdog_fire(c, r);
            comm_sleep_ns(nap);
            nap = nap * 2 > 1000000L ? 1000000L : nap * 2;
        }
    }
    if (r->widen_dst) bf16_widen_buf(r->widen_src, r->widen_dst, r->widen_n);
    request_release(r);
    return ADDC_OK;
}

/* An MPI call that posts part of r failed. Requests already posted are left to MPI: the
 * communicator is not usable after an MPI error anyway. */
static Status request_post_failed(CommRequest *r, int rc, const char *call) {
    request_release(r);
    return addc_error_set(ADDC_ERR_EXTERNAL, "%s '%s' (#%lld): MPI error %s in %s", comm_kind_names[r->kind], r->what,
                          (long long)r->seq, mpi_error_text(rc), call);
}

static int64_t chunk_count(const Comm *c, int64_t count) { return count <= 0 ? 1 : (count + c->chunk - 1) / c->chunk; }

/* Never pass NULL to MPI, even for zero counts. */
static char comm_dummy[16];
static void *nz(void *p) { return p ? p : comm_dummy; }
static const void *cnz(const void *p) { return p ? p : comm_dummy; }

/* ---- argument checks ---- */

static Status check_common(const Comm *c, CommKind kind, const char *what, int64_t count, CommDType dt) {
    if (!c)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': NULL communicator", comm_kind_names[kind],
                              what_or_default(what));
    if (!comm_started || comm_finished)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': communicator used outside comm_world..comm_finalize",
                              comm_kind_names[kind], what_or_default(what));
    if (count < 0)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': negative count %lld", comm_kind_names[kind],
                              what_or_default(what), (long long)count);
    if ((int)dt < 0 || dt > COMM_BF16)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': unknown dtype %d", comm_kind_names[kind],
                              what_or_default(what), (int)dt);
    return ADDC_OK;
}

static Status check_op(CommKind kind, const char *what, CommOp op) {
    if ((int)op < 0 || op > COMM_MIN)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': unknown reduce op %d", comm_kind_names[kind],
                              what_or_default(what), (int)op);
    return ADDC_OK;
}

static Status check_buf(CommKind kind, const char *what, const void *p, int64_t count, const char *name) {
    if (!p && count > 0)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': NULL %s buffer with count %lld", comm_kind_names[kind],
                              what_or_default(what), name, (long long)count);
    return ADDC_OK;
}

/* ---- posting ---- */

static void bytes_add(Comm *c, int64_t n) { c->bytes_sent += n; }

/* *device: the buffers are CUDA device memory (only once comm_enable_device ran; before, every
 * buffer is taken for host memory and nothing of CUDA is touched). A host/device mix is refused. */
static Status route(Comm *c, CommKind kind, const char *what, const void *a, const char *a_name, const void *b,
                    const char *b_name, bool *device) {
    *device = false;
    if (!c->dev) return ADDC_OK;
    return comm_dev_where(c->dev, comm_kind_names[kind], what_or_default(what), a, a_name, b, b_name, device);
}

/* Hands a begun, counted request with device buffers to comm_nccl.c. */
static Status post_device(Comm *c, CommRequest *r, CommDevColl coll, const void *send, void *recv, int64_t count,
                          CommDType dt, CommOp op, int root) {
    r->device = true;
    CommDevTag tag = {.seq = r->seq, .kind = (int)r->kind, .kind_name = comm_kind_names[r->kind], .what = r->what,
                      .phase = c->phase};
    bool stalled = false;
    Status st = comm_dev_post(c->dev, coll, send, recv, count, dt, op, root, &tag, &r->dev_work, &stalled);
    if (stalled) watchdog_fire(c, r);
    return st;
}

static Status post_allreduce(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                             const char *what, CommRequest *r) {
    TRY(check_common(c, COMM_KIND_ALLREDUCE, what, count, dt));
    TRY(check_op(COMM_KIND_ALLREDUCE, what, op));
    TRY(check_buf(COMM_KIND_ALLREDUCE, what, send, count, "send"));
    TRY(check_buf(COMM_KIND_ALLREDUCE, what, recv, count, "recv"));
    size_t bytes = (size_t)count * dtype_mem_size(dt);
    if (send != recv && ranges_overlap(send, bytes, recv, bytes))
        return addc_error_set(ADDC_ERR_INVALID, "allreduce '%s': send and recv overlap without being equal",
                              what_or_default(what));
    bool dev = false;
    TRY(route(c, COMM_KIND_ALLREDUCE, what, send, "send", recv, "recv", &dev));
    TRY(request_begin(c, r, COMM_KIND_ALLREDUCE, what, dev ? 1 : chunk_count(c, count)));
    bytes_add(c, count * (int64_t)dtype_wire_size(dt));
    if (dev) return post_device(c, r, COMM_DEV_ALLREDUCE, send, recv, count, dt, op, 0);
    /* The reduction runs in place on `buf`: recv (after a copy of send), or the bf16 staging. */
    void *buf = recv;
    if (dt == COMM_BF16) {
        TRY(request_wire_alloc(r, count, r->what));
        bf16_round_buf(send, r->wire, count);
        buf = r->wire;
        r->widen_src = r->wire;
        r->widen_dst = recv;
        r->widen_n = count;
    } else if (send != recv && count > 0) {
        if (!c->mpi) memcpy(recv, send, bytes);
    }
    if (!c->mpi) return ADDC_OK;
    size_t w = dtype_wire_size(dt);
    bool in_place = dt == COMM_BF16 || send == recv;
    for (int64_t off = 0; off < count || (off == 0 && count == 0); off += c->chunk) {
        int64_t n = count - off < c->chunk ? count - off : c->chunk;
        const void *s = in_place ? MPI_IN_PLACE : (const char *)cnz(send) + (size_t)off * w;
        int rc = MPI_Iallreduce(s, (char *)nz(buf) + (size_t)off * w, (int)n, dtype_mpi(dt), op_mpi(c, dt, op), c->coll,
                                request_slot(r));
        if (rc != MPI_SUCCESS) return request_post_failed(r, rc, "MPI_Iallreduce");
        if (count == 0) break;
    }
    return ADDC_OK;
}

static Status post_broadcast(Comm *c, void *buf, int64_t count, CommDType dt, int root, const char *what,
                             CommRequest *r) {
    TRY(check_common(c, COMM_KIND_BROADCAST, what, count, dt));
    TRY(check_buf(COMM_KIND_BROADCAST, what, buf, count, "data"));
    if (root < 0 || root >= c->size)
        return addc_error_set(ADDC_ERR_INVALID, "broadcast '%s': root %d out of range [0, %d)", what_or_default(what),
                              root, c->size);
    bool dev = false;
    TRY(route(c, COMM_KIND_BROADCAST, what, buf, "data", NULL, NULL, &dev));
    TRY(request_begin(c, r, COMM_KIND_BROADCAST, what, dev ? 1 : chunk_count(c, count)));
    if (c->rank == root) bytes_add(c, count * (int64_t)dtype_wire_size(dt));
    if (dev) return post_device(c, r, COMM_DEV_BROADCAST, buf, buf, count, dt, COMM_SUM, root);
    void *wbuf = buf;
    if (dt == COMM_BF16) {
        TRY(request_wire_alloc(r, count, r->what));
        if (c->rank == root) bf16_round_buf(buf, r->wire, count);
        wbuf = r->wire;
        r->widen_src = r->wire;
        r->widen_dst = buf;
        r->widen_n = count;
    }
    if (!c->mpi) return ADDC_OK;
    size_t w = dtype_wire_size(dt);
    for (int64_t off = 0; off < count || (off == 0 && count == 0); off += c->chunk) {
        int64_t n = count - off < c->chunk ? count - off : c->chunk;
        int rc = MPI_Ibcast((char *)nz(wbuf) + (size_t)off * w, (int)n, dtype_mpi(dt), root, c->coll, request_slot(r));
        if (rc != MPI_SUCCESS) return request_post_failed(r, rc, "MPI_Ibcast");
        if (count == 0) break;
    }
    return ADDC_OK;
}

static Status post_allgather(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, const char *what,
                             CommRequest *r) {
    TRY(check_common(c, COMM_KIND_ALLGATHER, what, count, dt));
    TRY(check_buf(COMM_KIND_ALLGATHER, what, send, count, "send"));
    TRY(check_buf(COMM_KIND_ALLGATHER, what, recv, count, "recv"));
    size_t m = dtype_mem_size(dt);
    size_t block = (size_t)count * m;
    /* In place: send is this rank's own block of recv. */
    bool in_place = count > 0 && (const char *)send == (const char *)recv + (size_t)c->rank * block;
    if (!in_place && ranges_overlap(send, block, recv, block * (size_t)c->size))
        return addc_error_set(ADDC_ERR_INVALID,
                              "allgather '%s': send overlaps recv without being this rank's block of it",
                              what_or_default(what));
    bool dev = false;
    TRY(route(c, COMM_KIND_ALLGATHER, what, send, "send", recv, "recv", &dev));
    TRY(request_begin(c, r, COMM_KIND_ALLGATHER, what, dev ? 1 : chunk_count(c, count)));
    bytes_add(c, count * (int64_t)dtype_wire_size(dt));
    if (dev) return post_device(c, r, COMM_DEV_ALLGATHER, send, recv, count, dt, COMM_SUM, 0);
    const void *wsend = send;
    void *wrecv = recv;
    if (dt == COMM_BF16) {
        TRY(request_wire_alloc(r, count * (c->size + 1), r->what));
        uint16_t *ws = r->wire, *wr = ws + count;
        bf16_round_buf(send, ws, count);
        wsend = ws;
        wrecv = wr;
        in_place = false;
        r->widen_src = wr;
        r->widen_dst = recv;
        r->widen_n = count * c->size;
    }
    if (!c->mpi) {
        if (!in_place && count > 0) memcpy(wrecv, wsend, (size_t)count * dtype_wire_size(dt));
        return ADDC_OK;
    }
    size_t w = dtype_wire_size(dt);
    MPI_Datatype base = dtype_mpi(dt);
    for (int64_t off = 0; off < count || (off == 0 && count == 0); off += c->chunk) {
        int64_t n = count - off < c->chunk ? count - off : c->chunk;
        const void *s = in_place ? MPI_IN_PLACE : (const char *)cnz(wsend) + (size_t)off * w;
        char *d = (char *)nz(wrecv) + (size_t)off * w;
        int rc;
        if (n == count) {
            rc = MPI_Iallgather(s, (int)n, base, d, (int)n, base, c->coll, request_slot(r));
        } else {
            /* A chunk of every rank's block: n elements with the extent of a whole block. */
            MPI_Datatype chunk_t, block_t;
            rc = MPI_Type_contiguous((int)n, base, &chunk_t);
            if (rc == MPI_SUCCESS) {
                rc = MPI_Type_create_resized(chunk_t, 0, (MPI_Aint)((size_t)count * w), &block_t);
                MPI_Type_free(&chunk_t);
            }
            if (rc == MPI_SUCCESS) rc = MPI_Type_commit(&block_t);
            if (rc == MPI_SUCCESS) {
                rc = MPI_Iallgather(s, (int)n, base, d, 1, block_t, c->coll, request_slot(r));
                MPI_Type_free(&block_t); /* freed by MPI when the request completes */
            }
        }
        if (rc != MPI_SUCCESS) return request_post_failed(r, rc, "MPI_Iallgather");
        if (count == 0) break;
    }
    return ADDC_OK;
}

static Status post_reduce_scatter(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                                  const char *what, CommRequest *r) {
    TRY(check_common(c, COMM_KIND_REDUCE_SCATTER, what, count, dt));
    TRY(check_op(COMM_KIND_REDUCE_SCATTER, what, op));
    TRY(check_buf(COMM_KIND_REDUCE_SCATTER, what, send, count, "send"));
    TRY(check_buf(COMM_KIND_REDUCE_SCATTER, what, recv, count, "recv"));
    size_t m = dtype_mem_size(dt);
    if (ranges_overlap(send, (size_t)count * m * (size_t)c->size, recv, (size_t)count * m))
        return addc_error_set(ADDC_ERR_INVALID, "reduce_scatter '%s': send and recv overlap", what_or_default(what));
    bool dev = false;
    TRY(route(c, COMM_KIND_REDUCE_SCATTER, what, send, "send", recv, "recv", &dev));
    int64_t chunks = dev ? 1 : chunk_count(c, count);
    TRY(request_begin(c, r, COMM_KIND_REDUCE_SCATTER, what, chunks == 1 ? 1 : chunks * c->size));
    int64_t total = count * c->size;
    bytes_add(c, total * (int64_t)dtype_wire_size(dt));
    if (dev) return post_device(c, r, COMM_DEV_REDUCE_SCATTER, send, recv, count, dt, op, 0);
    const void *wsend = send;
    void *wrecv = recv;
    if (dt == COMM_BF16) {
        TRY(request_wire_alloc(r, total + count, r->what));
        uint16_t *ws = r->wire, *wr = ws + total;
        bf16_round_buf(send, ws, total);
        wsend = ws;
        wrecv = wr;
        r->widen_src = wr;
        r->widen_dst = recv;
        r->widen_n = count;
    }
    size_t w = dtype_wire_size(dt);
    if (!c->mpi) {
        if (count > 0) memcpy(wrecv, wsend, (size_t)count * w);
        return ADDC_OK;
    }
    MPI_Datatype t = dtype_mpi(dt);
    MPI_Op o = op_mpi(c, dt, op);
    if (chunks == 1) {
        int rc = MPI_Ireduce_scatter_block(cnz(wsend), nz(wrecv), (int)count, t, o, c->coll, request_slot(r));
        if (rc != MPI_SUCCESS) return request_post_failed(r, rc, "MPI_Ireduce_scatter_block");
        return ADDC_OK;
    }
    for (int q = 0; q < c->size; q++) {
        for (int64_t off = 0; off < count; off += c->chunk) {
            int64_t n = count - off < c->chunk ? count - off : c->chunk;
            const char *s = (const char *)wsend + ((size_t)q * (size_t)count + (size_t)off) * w;
            void *d = q == c->rank ? (char *)wrecv + (size_t)off * w : NULL;
            int rc = MPI_Ireduce(s, d, (int)n, t, o, q, c->coll, request_slot(r));
            if (rc != MPI_SUCCESS) return request_post_failed(r, rc, "MPI_Ireduce");
        }
    }
    return ADDC_OK;
}

static Status post_barrier(Comm *c, const char *what, CommRequest *r) {
    TRY(check_common(c, COMM_KIND_BARRIER, what, 0, COMM_F32));
    TRY(request_begin(c, r, COMM_KIND_BARRIER, what, 1));
    if (!c->mpi) return ADDC_OK;
    int rc = MPI_Ibarrier(c->coll, request_slot(r));
    if (rc != MPI_SUCCESS) return request_post_failed(r, rc, "MPI_Ibarrier");
    return ADDC_OK;
}

static Status post_gatherv(Comm *c, const void *send, int64_t n, void *recv, const int64_t *counts, int root,
                           const char *what, CommRequest *r) {
    TRY(check_common(c, COMM_KIND_GATHERV, what, n, COMM_F32));
    TRY(check_buf(COMM_KIND_GATHERV, what, send, n, "send"));
    const char *wh = what_or_default(what);
    if (root < 0 || root >= c->size)
        return addc_error_set(ADDC_ERR_INVALID, "gatherv '%s': root %d out of range [0, %d)", wh, root, c->size);
    bool dev_send = false, dev_recv = false;
    TRY(route(c, COMM_KIND_GATHERV, what, send, "send", NULL, NULL, &dev_send));
    if (c->rank == root) TRY(route(c, COMM_KIND_GATHERV, what, recv, "recv", NULL, NULL, &dev_recv));
    if (dev_send || dev_recv)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "gatherv '%s': takes host buffers only (device memory given)", wh);
    int *icounts = NULL, *displs = NULL;
    if (c->rank == root) {
        if (!counts) return addc_error_set(ADDC_ERR_INVALID, "gatherv '%s': NULL counts on the root", wh);
        int64_t total = 0;
        for (int q = 0; q < c->size; q++) {
            if (counts[q] < 0)
                return addc_error_set(ADDC_ERR_INVALID, "gatherv '%s': counts[%d] = %lld is negative", wh, q,
                                      (long long)counts[q]);
            total += counts[q];
        }
        if (counts[root] != n)
            return addc_error_set(ADDC_ERR_INVALID, "gatherv '%s': the root sends %lld bytes but counts[%d] = %lld", wh,
                                  (long long)n, root, (long long)counts[root]);
        if (total > INT_MAX)
            return addc_error_set(ADDC_ERR_UNSUPPORTED,
                                  "gatherv '%s': %lld bytes in all exceed the %d bytes one MPI gatherv can place", wh,
                                  (long long)total, INT_MAX);
        TRY(check_buf(COMM_KIND_GATHERV, wh, recv, total, "recv"));
        if (c->mpi) {
            icounts = malloc(2 * (size_t)c->size * sizeof *icounts);
            if (!icounts) return addc_error_set(ADDC_ERR_NOMEM, "gatherv '%s': counts for %d ranks", wh, c->size);
            displs = icounts + c->size;
            int at = 0;
            for (int q = 0; q < c->size; q++) {
                icounts[q] = (int)counts[q];
                displs[q] = at;
                at += icounts[q];
            }
        }
    } else if (n > INT_MAX) {
        return addc_error_set(ADDC_ERR_UNSUPPORTED,
                              "gatherv '%s': %lld bytes exceed the %d bytes one MPI gatherv can send", wh, (long long)n,
                              INT_MAX);
    }
    Status st = request_begin(c, r, COMM_KIND_GATHERV, what, 1);
    if (st != ADDC_OK) {
        free(icounts);
        return st;
    }
    bytes_add(c, n);
    if (!c->mpi) {
        if (n > 0) memcpy(recv, send, (size_t)n);
        return ADDC_OK;
    }
    /* Open MPI copies the count and displacement arrays when the call is posted, but MPI does not
     * promise it: keep them with the request (as its staging buffer) until it completes. */
    r->wire = icounts;
    int rc = MPI_Igatherv(cnz(send), (int)n, MPI_BYTE, c->rank == root ? nz(recv) : NULL, icounts, displs, MPI_BYTE,
                          root, c->coll, request_slot(r));
    if (rc != MPI_SUCCESS) return request_post_failed(r, rc, "MPI_Igatherv");
    return ADDC_OK;
}

/* ---- public: blocking ---- */

/* A device request: the compute stream waits for the collective (and widens a bf16 result). With
 * host_wait (comm_wait) and the watchdog on, the host first waits for its completion, polling the
 * device collectives in flight under the watchdog. */
static Status request_finish_device(Comm *c, CommRequest *r, bool host_wait) {
    CommDevWork *w = r->dev_work;
    r->dev_work = NULL;
    if (!w) return ADDC_OK;
    if (host_wait && c->timeout_s > 0) {
        long nap = 5000L; /* doubling to 100 us: a finished collective is seen soon */
        for (;;) {
            bool done = false;
            Status st = device_poll(c, w, &done);
            if (st != ADDC_OK) {
                (void)comm_dev_finish(c->dev, w);
                return st;
            }
            if (done) break;
            comm_sleep_ns(nap);
            nap = nap * 2 > 100000L ? 100000L : nap * 2;
        }
    }
    return comm_dev_finish(c->dev, w);
}

static Status run_blocking(Comm *c, CommRequest *r, Status posted) {
    if (posted != ADDC_OK) return posted;
    if (r->device) return request_finish_device(c, r, false);
    return request_finish(c, r);
}

Status comm_barrier(Comm *c, const char *what) {
    CommRequest r;
    return run_blocking(c, &r, post_barrier(c, what, &r));
}

Status comm_broadcast(Comm *c, void *buf, int64_t count, CommDType dt, int root, const char *what) {
    CommRequest r;
    return run_blocking(c, &r, post_broadcast(c, buf, count, dt, root, what, &r));
}

Status comm_allreduce(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op, const char *what) {
    CommRequest r;
    return run_blocking(c, &r, post_allreduce(c, send, recv, count, dt, op, what, &r));
}

Status comm_allgather(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, const char *what) {
    CommRequest r;
    return run_blocking(c, &r, post_allgather(c, send, recv, count, dt, what, &r));
}

Status comm_reduce_scatter(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                           const char *what) {
    CommRequest r;
    return run_blocking(c, &r, post_reduce_scatter(c, send, recv, count, dt, op, what, &r));
}

Status comm_gatherv_bytes(Comm *c, const void *send, int64_t n, void *recv, const int64_t *counts, int root,
                          const char *what) {
    CommRequest r;
    return run_blocking(c, &r, post_gatherv(c, send, n, recv, counts, root, what, &r));
}

/* ---- public: non-blocking ---- */

static Status request_new(CommRequest **req, const char *what) {
    *req = NULL;
    CommRequest *r = malloc(sizeof *r);
    if (!r) return addc_error_set(ADDC_ERR_NOMEM, "request for '%s'", what_or_default(what));
    *req = r;
    return ADDC_OK;
}

/* Hands the posted request to the caller, or frees it when posting failed. */
static Status request_hand_out(CommRequest **req, Status posted) {
    if (posted != ADDC_OK) {
        free(*req);
        *req = NULL;
        return posted;
    }
    (*req)->heap = true;
    return ADDC_OK;
}

Status comm_iallgather(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, const char *what,
                       CommRequest **req) {
    TRY(request_new(req, what));
    return request_hand_out(req, post_allgather(c, send, recv, count, dt, what, *req));
}

Status comm_ireduce_scatter(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                            const char *what, CommRequest **req) {
    TRY(request_new(req, what));
    return request_hand_out(req, post_reduce_scatter(c, send, recv, count, dt, op, what, *req));
}

Status comm_iallreduce(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op, const char *what,
                       CommRequest **req) {
    TRY(request_new(req, what));
    return request_hand_out(req, post_allreduce(c, send, recv, count, dt, op, what, *req));
}

Status comm_wait(Comm *c, CommRequest *req) {
    if (!req) return ADDC_OK;
    Status st = req->device ? request_finish_device(c, req, true) : request_finish(c, req);
    if (req->heap) free(req);
    return st;
}

/* ---- device buffers ---- */

/* Every rank learns whether every rank succeeded (a host allreduce), so a rank that failed does
 * not leave the others waiting in the next step of the set-up. */
static Status device_agree(Comm *c, Status local, const char *what) {
    uint64_t ok = local == ADDC_OK;
    Status st = comm_allreduce(c, &ok, &ok, 1, COMM_U64, COMM_MIN, what);
    if (local != ADDC_OK) return local;
    if (st != ADDC_OK) return st;
    if (!ok)
        return addc_error_set(ADDC_ERR_EXTERNAL, "%s: another rank failed (its message is in that rank's output)", what);
    return ADDC_OK;
}

/* NCCL set-up of an MPI communicator: rank 0's unique id over MPI, then the non-blocking init,
 * watched like a collective. */
static Status device_connect(Comm *c, CommDev *d) {
    uint64_t idbuf[1 + COMM_DEV_ID_BYTES / sizeof(uint64_t)]; /* [0]: rank 0 made the id; then the id */
    memset(idbuf, 0, sizeof idbuf);
    Status made = ADDC_OK;
    if (c->rank == 0) {
        made = comm_dev_nccl_unique_id(d, (unsigned char *)(idbuf + 1));
        idbuf[0] = made == ADDC_OK;
    }
    Status st = comm_broadcast(c, idbuf, (int64_t)(sizeof idbuf / sizeof idbuf[0]), COMM_U64, 0,
                               "comm_enable_device: NCCL unique id");
    if (made != ADDC_OK) return made;
    if (st != ADDC_OK) return st;
    if (!idbuf[0]) return addc_error_set(ADDC_ERR_EXTERNAL, "comm_enable_device: rank 0 could not make the NCCL unique id");
    CommRequest r;
    TRY(request_begin(c, &r, COMM_KIND_NCCL_INIT, "comm_enable_device: NCCL init", 0));
    TRY(comm_dev_nccl_connect_start(d, (const unsigned char *)(idbuf + 1)));
    double t0 = comm_now();
    long nap = 10000L;
    for (;;) {
        bool done = false;
        TRY(comm_dev_nccl_connect_poll(d, &done));
        if (done) return ADDC_OK;
        if (c->timeout_s > 0 && comm_now() - t0 >= c->timeout_s) {
            c->dev = d; /* so that the watchdog aborts the init */
            watchdog_fire(c, &r);
        }
        comm_sleep_ns(nap);
        nap = nap * 2 > 1000000L ? 1000000L : nap * 2;
    }
}

Status comm_enable_device(Comm *c, int local_device) {
    if (!c || !comm_started || comm_finished)
        return addc_error_set(ADDC_ERR_INVALID, "comm_enable_device: communicator used outside comm_world..comm_finalize");
    if (c->dev) {
        if (comm_dev_device(c->dev) == local_device) return ADDC_OK;
        return addc_error_set(ADDC_ERR_INVALID, "comm_enable_device(%d): already enabled on CUDA device %d", local_device,
                              comm_dev_device(c->dev));
    }
    CommDev *d = NULL;
    Status st = comm_dev_open(&d, local_device, c->rank, c->size, c->mpi, c->timeout_s);
    if (c->mpi) {
        st = device_agree(c, st, "comm_enable_device: every rank opened its CUDA device");
        if (st == ADDC_OK) st = device_connect(c, d);
        if (st == ADDC_OK) st = comm_dev_nccl_ready(d);
        st = device_agree(c, st, "comm_enable_device: NCCL ready on every rank");
    }
    if (st != ADDC_OK) {
        c->dev = NULL;
        comm_dev_close(d, false);
        return st;
    }
    c->dev = d;
    return ADDC_OK;
}

bool comm_device_enabled(const Comm *c) { return c && c->dev; }
