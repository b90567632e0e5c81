/* distributed/comm_nccl: collectives of CUDA device buffers for distributed/comm (see comm.h for
 * the contract and comm_nccl.h for the split of work with comm.c): NCCL on an MPI communicator,
 * device-to-device copies on the solo one.
 *
 * Streams. A collective waits for the compute stream's work enqueued before it (the event `ready`,
 * recorded on cuda_stream() and waited for by cuda_comm_stream()), runs on the communication
 * stream between its own `start` and `done` events, and comm_dev_finish makes the compute stream
 * wait for `done`. The host never waits, except where comm.c asks for it (comm_wait under the
 * watchdog).
 *
 * COMM_BF16: the f32 input is rounded into a bf16 device staging buffer (cuda_convert, on the
 * compute stream, before `ready`), the collective runs in ncclBfloat16 in place there, and the
 * result is widened into the caller's buffer on the compute stream by comm_dev_finish. Staging
 * buffers form a pool (category CUDA_MEM_COMM) where each collective in flight holds one; a slot
 * grows only when a larger collective needs it, so a steady state allocates nothing.
 *
 * NCCL communicators are created non-blocking (config.blocking = 0): a call may answer
 * ncclInProgress, and ncclCommGetAsyncError is polled until it settles, under the watchdog's
 * timeout. Hangs on the device: every collective in flight stays on a list in stream order until
 * it has completed and its owner has finished it. comm_dev_poll (the main thread, at every comm
 * call and while comm_wait waits) reports one whose start was seen more than the timeout ago and
 * that has not completed, and comm.c fires the watchdog (side exchange, message, ncclCommAbort,
 * MPI_Abort). A watchdog thread polls the same list every 100 ms, so the start times are exact
 * even when the main thread is busy, and ends the process itself (message, exit 70) when a
 * collective has hung DEV_THREAD_GRACE seconds longer than the timeout: the main thread is then
 * blocked outside comm, e.g. in a copy to the host that waits for the hung collective. */
#include "distributed/comm_nccl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"

#ifdef ADDC_HAVE_CUDA

#include <cuda_runtime_api.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>
#ifdef ADDC_HAVE_NCCL
#include <nccl.h>
_Static_assert(sizeof(ncclUniqueId) == COMM_DEV_ID_BYTES, "ncclUniqueId size");
#endif

enum { DEV_ABORT_CODE = 70 };
#define DEV_THREAD_NAP_NS 100000000L /* the watchdog thread looks every 100 ms */
#define DEV_THREAD_GRACE 10.0        /* and fires this much later than the main thread would */
#define DEV_FIRING_MAX 30.0          /* a main-thread firing that has not ended the job by then */
#define DEV_SCRATCH_ROUND ((size_t)1 << 20)

#define CU_CHECK(expr) \
    ADDC_CHECK_GEN("CUDA", expr, cudaError_t, r_ == cudaSuccess, "%s", cudaGetErrorString(r_), ADDC_ERR_EXTERNAL)

typedef struct DevScratch {
    void *p; /* device bytes (cap) */
    size_t cap;
    bool busy;
} DevScratch;

struct CommDevWork {
    CommDevWork *next;        /* the list in flight, or the spare list */
    cudaEvent_t start, done;  /* on the communication stream, around the NCCL call */
    int64_t seq;              /* what the watchdog names */
    int kind;
    const char *kind_name;
    char what[128];
    char phase[96];
    double t_started;         /* when a poll first saw `start` complete; 0: not yet */
    bool completed;           /* a poll saw `done` complete */
    bool finished;            /* comm_dev_finish ran: the owner is done with it */
    int scratch;              /* staging slot held, -1: none */
    const void *widen_src;    /* bf16 result (device, widen_n) to widen into widen_dst; NULL: none */
    float *widen_dst;
    int64_t widen_n;
};

struct CommDev {
    int device, rank, size;
    bool use_nccl;
    bool connected; /* NCCL init finished */
#ifdef ADDC_HAVE_NCCL
    ncclComm_t nccl;
#endif
    cudaEvent_t ready; /* compute-stream point the next collective waits for */
    DevScratch *scratch;
    int n_scratch;
    CommDevWork *head, *tail; /* in flight, in stream order (under mu) */
    CommDevWork *spare;       /* recycled items with their events (main thread only) */
    pthread_mutex_t mu;
    bool thread_on;
    pthread_t thread;
    atomic_bool stop;
    double timeout_s;    /* under mu (the main thread also reads it unlocked: it is the only writer) */
    double firing_since; /* under mu; 0: the main thread is not firing */
    int64_t hang_seq;    /* ADDC_TEST_DEVICE_HANG; 0: none */
};

/* ADDC_TEST_DEVICE_HANG: the host function that stalls the communication stream returns once the
 * watchdog fires (so ncclCommAbort never waits behind it). */
static atomic_int dev_hang_release;

static double dev_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void dev_sleep_ns(long ns) {
    struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
    nanosleep(&ts, NULL);
}

static size_t dev_mem_size(CommDType dt) { return dt == COMM_F32 || dt == COMM_BF16 ? 4 : 8; }

/* ---- staging pool ---- */

static Status scratch_get(CommDev *d, size_t bytes, int *slot) {
    int best = -1, grow = -1;
    for (int i = 0; i < d->n_scratch; i++) {
        DevScratch *s = &d->scratch[i];
        if (s->busy) continue;
        if (s->cap >= bytes) {
            if (best < 0 || s->cap < d->scratch[best].cap) best = i;
        } else if (grow < 0 || s->cap > d->scratch[grow].cap) {
            grow = i;
        }
    }
    if (best < 0) {
        if (grow < 0) {
            DevScratch *more = realloc(d->scratch, (size_t)(d->n_scratch + 1) * sizeof *more);
            if (!more) return addc_error_set(ADDC_ERR_NOMEM, "device collective staging: slot %d", d->n_scratch);
            d->scratch = more;
            grow = d->n_scratch++;
            memset(&d->scratch[grow], 0, sizeof d->scratch[grow]);
        }
        DevScratch *s = &d->scratch[grow];
        /* cudaFree synchronises the device: only while the pool is still growing (the first steps) */
        if (s->p) TRY(cuda_mem_free(CUDA_MEM_COMM, s->p, s->cap));
        s->p = NULL;
        s->cap = 0;
        size_t cap = (bytes + DEV_SCRATCH_ROUND - 1) / DEV_SCRATCH_ROUND * DEV_SCRATCH_ROUND;
        TRY(cuda_mem_alloc(CUDA_MEM_COMM, &s->p, cap));
        s->cap = cap;
        best = grow;
    }
    d->scratch[best].busy = true;
    *slot = best;
    return ADDC_OK;
}

static void scratch_put(CommDev *d, int slot) {
    if (slot >= 0 && slot < d->n_scratch) d->scratch[slot].busy = false;
}

/* ---- work items ---- */

static void work_destroy(CommDevWork *w) {
    if (w->start) cudaEventDestroy(w->start);
    if (w->done) cudaEventDestroy(w->done);
    free(w);
}

#ifdef ADDC_HAVE_NCCL
static Status work_get(CommDev *d, CommDevWork **out) {
    CommDevWork *w = d->spare;
    if (w) {
        d->spare = w->next;
    } else {
        w = calloc(1, sizeof *w);
        if (!w) return addc_error_set(ADDC_ERR_NOMEM, "device collective: work item");
        cudaError_t e = cudaEventCreateWithFlags(&w->start, cudaEventDisableTiming);
        if (e == cudaSuccess) e = cudaEventCreateWithFlags(&w->done, cudaEventDisableTiming);
        if (e != cudaSuccess) {
            work_destroy(w);
            return addc_error_set(ADDC_ERR_EXTERNAL, "device collective: cudaEventCreate: %s", cudaGetErrorString(e));
        }
    }
    w->next = NULL;
    w->t_started = 0;
    w->completed = w->finished = false;
    w->scratch = -1;
    w->widen_src = NULL;
    w->widen_dst = NULL;
    w->widen_n = 0;
    *out = w;
    return ADDC_OK;
}
#endif

static void work_spare(CommDev *d, CommDevWork *w) {
    w->next = d->spare;
    d->spare = w;
}

/* Under mu: notes completions and start times; returns the first real CUDA error seen. */
static cudaError_t works_update(CommDev *d, double now) {
    cudaError_t bad = cudaSuccess;
    for (CommDevWork *w = d->head; w; w = w->next) {
        if (w->completed) continue;
        cudaError_t e = cudaEventQuery(w->done);
        if (e == cudaSuccess) {
            w->completed = true;
            continue;
        }
        if (e == cudaErrorNotReady)
            (void)cudaGetLastError(); /* not an error: keep it from later launch checks */
        else if (bad == cudaSuccess)
            bad = e;
        if (w->t_started == 0) {
            e = cudaEventQuery(w->start);
            if (e == cudaSuccess)
                w->t_started = now;
            else if (e == cudaErrorNotReady)
                (void)cudaGetLastError();
        }
    }
    return bad;
}

/* Under mu: items completed and finished go to the spare list. */
static void works_retire(CommDev *d) {
    CommDevWork **pp = &d->head;
    d->tail = NULL;
    while (*pp) {
        CommDevWork *w = *pp;
        if (w->completed && w->finished) {
            *pp = w->next;
            work_spare(d, w);
        } else {
            d->tail = w;
            pp = &w->next;
        }
    }
}

/* ---- the watchdog thread ---- */

static _Noreturn void thread_fire(CommDev *d, const CommDevWork *w, double now) {
    if (w)
        fprintf(stderr,
                "addc: rank %d: collective '%s' (%s #%lld) in phase '%s' timed out after %g s on the device; "
                "ranks not in it: unknown (seen by the device watchdog thread while this rank's main thread was "
                "blocked outside comm)\n",
                d->rank, w->what, w->kind_name, (long long)w->seq, w->phase, d->timeout_s);
    else
        fprintf(stderr,
                "addc: rank %d: the watchdog fired %.0f s ago and the job has not ended (ncclCommAbort or MPI_Abort "
                "did not return): exiting\n",
                d->rank, now - d->firing_since);
    fflush(stderr);
    _exit(DEV_ABORT_CODE);
}

static void *dev_watch_main(void *arg) {
    CommDev *d = arg;
    (void)cudaSetDevice(d->device);
    while (!atomic_load(&d->stop)) {
        dev_sleep_ns(DEV_THREAD_NAP_NS);
        pthread_mutex_lock(&d->mu);
        double now = dev_now();
        (void)works_update(d, now); /* errors are the main thread's to report */
        if (d->firing_since > 0) {
            if (now - d->firing_since > DEV_FIRING_MAX) thread_fire(d, NULL, now);
        } else if (d->timeout_s > 0) {
            for (const CommDevWork *w = d->head; w; w = w->next)
                if (!w->completed && w->t_started > 0 && now - w->t_started >= d->timeout_s + DEV_THREAD_GRACE)
                    thread_fire(d, w, now);
        }
        pthread_mutex_unlock(&d->mu);
    }
    return NULL;
}

/* ---- NCCL ---- */

#ifdef ADDC_HAVE_NCCL
static const char *dev_nccl_last(const CommDev *d) {
    const char *m = ncclGetLastError(d->nccl);
    return m && *m ? m : "no detail";
}

static Status dev_nccl_error(const CommDev *d, ncclResult_t r, const char *call, const CommDevTag *tag) {
    return addc_error_set(ADDC_ERR_EXTERNAL, "%s '%s' (#%lld): NCCL error in %s on rank %d: %s (%s)", tag->kind_name,
                          tag->what, (long long)tag->seq, call, d->rank, ncclGetErrorString(r), dev_nccl_last(d));
}

static ncclDataType_t dev_nccl_type(CommDType dt) {
    switch (dt) {
    case COMM_F32: return ncclFloat32;
    case COMM_F64: return ncclFloat64;
    case COMM_U64: return ncclUint64;
    default: return ncclBfloat16; /* COMM_BF16: bf16 on the wire */
    }
}

static ncclRedOp_t dev_nccl_op(CommOp op) { return op == COMM_SUM ? ncclSum : op == COMM_MAX ? ncclMax : ncclMin; }

/* A call on the non-blocking communicator returned nr: wait until NCCL has enqueued it. */
static Status dev_nccl_settle(CommDev *d, ncclResult_t nr, const char *call, const CommDevTag *tag, bool *stalled) {
    if (nr == ncclSuccess) return ADDC_OK;
    if (nr != ncclInProgress) return dev_nccl_error(d, nr, call, tag);
    double t0 = dev_now();
    long nap = 10000L;
    for (;;) {
        ncclResult_t state = ncclInProgress;
        ncclResult_t q = ncclCommGetAsyncError(d->nccl, &state);
        if (q != ncclSuccess) return dev_nccl_error(d, q, "ncclCommGetAsyncError", tag);
        if (state == ncclSuccess) return ADDC_OK;
        if (state != ncclInProgress) return dev_nccl_error(d, state, call, tag);
        if (d->timeout_s > 0 && dev_now() - t0 >= d->timeout_s) {
            *stalled = true;
            return addc_error_set(ADDC_ERR_EXTERNAL, "%s '%s' (#%lld): %s was not enqueued within %g s", tag->kind_name,
                                  tag->what, (long long)tag->seq, call, d->timeout_s);
        }
        dev_sleep_ns(nap);
        nap = nap * 2 > 1000000L ? 1000000L : nap * 2;
    }
}

static void CUDART_CB dev_hang_fn(void *arg) {
    (void)arg;
    while (!atomic_load(&dev_hang_release)) dev_sleep_ns(10000000L);
}
#endif

/* ---- open and close ---- */

static void dev_free(CommDev *d) {
    for (int i = 0; i < d->n_scratch; i++)
        if (d->scratch[i].p) (void)cuda_mem_free(CUDA_MEM_COMM, d->scratch[i].p, d->scratch[i].cap);
    free(d->scratch);
    while (d->head) {
        CommDevWork *w = d->head;
        d->head = w->next;
        work_destroy(w);
    }
    while (d->spare) {
        CommDevWork *w = d->spare;
        d->spare = w->next;
        work_destroy(w);
    }
    if (d->ready) cudaEventDestroy(d->ready);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

Status comm_dev_open(CommDev **out, int local_device, int rank, int size, bool use_nccl, double timeout_s) {
    *out = NULL;
#ifndef ADDC_HAVE_NCCL
    if (use_nccl)
        return addc_error_set(ADDC_ERR_UNSUPPORTED,
                              "comm_enable_device: device buffers on an MPI communicator (%d ranks) need NCCL, and addc "
                              "was built without it (nccl.h or libnccl not found at configure time; set NCCL_ROOT)",
                              size);
#endif
    int n = cuda_device_count();
    if (n == 0)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "comm_enable_device: no CUDA device: %s", cuda_unavailable_reason());
    if (local_device < 0 || local_device >= n)
        return addc_error_set(ADDC_ERR_INVALID, "comm_enable_device: CUDA device %d asked on rank %d, %d present",
                              local_device, rank, n);
    TRY(cuda_init(local_device));
    int cur = -1;
    CU_CHECK(cudaGetDevice(&cur));
    if (cur != local_device)
        return addc_error_set(ADDC_ERR_INVALID,
                              "comm_enable_device(%d): CUDA was already started on device %d in this process "
                              "(enable the communicator's device before any other CUDA call)",
                              local_device, cur);
    if (!cuda_stream() || !cuda_comm_stream())
        return addc_error_set(ADDC_ERR_EXTERNAL, "comm_enable_device: no CUDA streams on device %d", local_device);
    int64_t hang_seq = 0;
    const char *h = getenv("ADDC_TEST_DEVICE_HANG");
    if (h && *h) {
        char *end = NULL;
        long long v = strtoll(h, &end, 10);
        if (end == h || *end || v < 1)
            return addc_error_set(ADDC_ERR_INVALID, "ADDC_TEST_DEVICE_HANG='%s' is not a collective number >= 1", h);
        hang_seq = v;
    }
    CommDev *d = calloc(1, sizeof *d);
    if (!d) return addc_error_set(ADDC_ERR_NOMEM, "comm_enable_device: device state");
    if (pthread_mutex_init(&d->mu, NULL) != 0) {
        free(d);
        return addc_error_set(ADDC_ERR_EXTERNAL, "comm_enable_device: pthread_mutex_init failed");
    }
    d->device = local_device;
    d->rank = rank;
    d->size = size;
    d->use_nccl = use_nccl;
    d->timeout_s = timeout_s;
    d->hang_seq = hang_seq;
    atomic_init(&d->stop, false);
    cudaError_t e = cudaEventCreateWithFlags(&d->ready, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        d->ready = NULL;
        dev_free(d);
        return addc_error_set(ADDC_ERR_EXTERNAL, "comm_enable_device: cudaEventCreate: %s", cudaGetErrorString(e));
    }
    *out = d;
    return ADDC_OK;
}

Status comm_dev_nccl_unique_id(CommDev *d, unsigned char id[COMM_DEV_ID_BYTES]) {
#ifdef ADDC_HAVE_NCCL
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess)
        return addc_error_set(ADDC_ERR_EXTERNAL, "comm_enable_device: ncclGetUniqueId on rank %d: %s (%s)", d->rank,
                              ncclGetErrorString(r), dev_nccl_last(d));
    memcpy(id, &u, sizeof u);
    return ADDC_OK;
#else
    (void)d, (void)id;
    return addc_error_set(ADDC_ERR_UNSUPPORTED, "comm_enable_device: addc was built without NCCL");
#endif
}

Status comm_dev_nccl_connect_start(CommDev *d, const unsigned char id[COMM_DEV_ID_BYTES]) {
#ifdef ADDC_HAVE_NCCL
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0; /* init and calls return at once; ncclCommGetAsyncError says when they are done */
    ncclResult_t r = ncclCommInitRankConfig(&d->nccl, d->size, u, d->rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
        Status st = addc_error_set(ADDC_ERR_EXTERNAL, "comm_enable_device: ncclCommInitRankConfig on rank %d of %d: %s (%s)",
                                   d->rank, d->size, ncclGetErrorString(r), dev_nccl_last(d));
        if (d->nccl) ncclCommAbort(d->nccl);
        d->nccl = NULL;
        return st;
    }
    return ADDC_OK;
#else
    (void)d, (void)id;
    return addc_error_set(ADDC_ERR_UNSUPPORTED, "comm_enable_device: addc was built without NCCL");
#endif
}

Status comm_dev_nccl_connect_poll(CommDev *d, bool *done) {
    *done = false;
#ifdef ADDC_HAVE_NCCL
    if (!d->nccl) return addc_error_set(ADDC_ERR_INVALID, "comm_enable_device: NCCL init was not started");
    ncclResult_t state = ncclInProgress;
    ncclResult_t q = ncclCommGetAsyncError(d->nccl, &state);
    if (q != ncclSuccess) state = q;
    if (state == ncclInProgress) return ADDC_OK;
    if (state != ncclSuccess)
        return addc_error_set(ADDC_ERR_EXTERNAL, "comm_enable_device: NCCL init on rank %d of %d (device %d): %s (%s)",
                              d->rank, d->size, d->device, ncclGetErrorString(state), dev_nccl_last(d));
    d->connected = true;
    *done = true;
    return ADDC_OK;
#else
    return addc_error_set(ADDC_ERR_UNSUPPORTED, "comm_enable_device: addc was built without NCCL");
#endif
}

Status comm_dev_nccl_ready(CommDev *d) {
    if (d->thread_on) return ADDC_OK;
    int rc = pthread_create(&d->thread, NULL, dev_watch_main, d);
    if (rc != 0) return addc_error_set(ADDC_ERR_EXTERNAL, "comm_enable_device: the device watchdog thread: error %d", rc);
    d->thread_on = true;
    return ADDC_OK;
}

void comm_dev_close(CommDev *d, bool graceful) {
    if (!d) return;
    bool abort_nccl = !graceful;
    if (graceful && d->connected) {
        /* the collectives in flight first (bounded by the timeout) */
        double t0 = dev_now();
        for (;;) {
            pthread_mutex_lock(&d->mu);
            (void)works_update(d, dev_now());
            bool left = false;
            for (const CommDevWork *w = d->head; w; w = w->next) left = left || !w->completed;
            pthread_mutex_unlock(&d->mu);
            if (!left) break;
            if (d->timeout_s > 0 && dev_now() - t0 >= d->timeout_s) {
                fprintf(stderr, "addc: rank %d: comm_finalize: device collectives still in flight after %g s; aborting NCCL\n",
                        d->rank, d->timeout_s);
                abort_nccl = true;
                break;
            }
            dev_sleep_ns(1000000L);
        }
    }
    if (d->thread_on) {
        atomic_store(&d->stop, true);
        pthread_join(d->thread, NULL);
        d->thread_on = false;
    }
#ifdef ADDC_HAVE_NCCL
    if (d->nccl) {
        if (!abort_nccl && d->connected) {
            ncclResult_t r = ncclCommFinalize(d->nccl);
            double t0 = dev_now();
            while (r == ncclSuccess || r == ncclInProgress) {
                ncclResult_t state = ncclInProgress;
                if (ncclCommGetAsyncError(d->nccl, &state) != ncclSuccess) {
                    r = ncclInternalError;
                    break;
                }
                if (state != ncclInProgress) {
                    r = state;
                    break;
                }
                if (d->timeout_s > 0 && dev_now() - t0 >= d->timeout_s) {
                    r = ncclInProgress;
                    break;
                }
                dev_sleep_ns(1000000L);
            }
            if (r == ncclSuccess) {
                ncclCommDestroy(d->nccl);
            } else {
                fprintf(stderr, "addc: rank %d: comm_finalize: ncclCommFinalize: %s; aborting NCCL\n", d->rank,
                        r == ncclInProgress ? "not finished within the timeout" : ncclGetErrorString(r));
                ncclCommAbort(d->nccl);
            }
        } else {
            ncclCommAbort(d->nccl);
        }
        d->nccl = NULL;
        d->connected = false;
    }
#else
    (void)abort_nccl;
#endif
    dev_free(d);
}

void comm_dev_firing(CommDev *d) {
    pthread_mutex_lock(&d->mu);
    if (d->firing_since == 0) d->firing_since = dev_now();
    pthread_mutex_unlock(&d->mu);
}

void comm_dev_abort(CommDev *d) {
    atomic_store(&dev_hang_release, 1);
#ifdef ADDC_HAVE_NCCL
    if (d && d->nccl) {
        ncclCommAbort(d->nccl);
        d->nccl = NULL;
        d->connected = false;
    }
#else
    (void)d;
#endif
}

void comm_dev_set_timeout(CommDev *d, double seconds) {
    pthread_mutex_lock(&d->mu);
    d->timeout_s = seconds;
    pthread_mutex_unlock(&d->mu);
}

int comm_dev_device(const CommDev *d) { return d->device; }

/* ---- routing ---- */

/* *on_device: 1 when p is device memory, 0 otherwise; *dev: its device. */
static Status dev_pointer(const char *kind_name, const char *what, const char *name, const void *p, int *on_device,
                          int *dev) {
    struct cudaPointerAttributes a;
    memset(&a, 0, sizeof a);
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return addc_error_set(ADDC_ERR_EXTERNAL, "%s '%s': cudaPointerGetAttributes(%s %p): %s", kind_name, what, name,
                              p, cudaGetErrorString(e));
    }
    *on_device = a.type == cudaMemoryTypeDevice;
    *dev = a.device;
    return ADDC_OK;
}

Status comm_dev_where(const CommDev *d, const char *kind_name, const char *what, const void *a, const char *a_name,
                      const void *b, const char *b_name, bool *device) {
    *device = false;
    int ka = -1, kb = -1, da = -1, db = -1;
    if (a) TRY(dev_pointer(kind_name, what, a_name, a, &ka, &da));
    if (b) TRY(dev_pointer(kind_name, what, b_name, b, &kb, &db));
    if (ka >= 0 && kb >= 0 && ka != kb)
        return addc_error_set(ADDC_ERR_INVALID,
                              "%s '%s': %s is %s memory but %s is %s memory (a collective's buffers must all be on the "
                              "host or all on the device)",
                              kind_name, what, a_name, ka ? "CUDA device" : "host", b_name, kb ? "CUDA device" : "host");
    if (ka == 1 && da != d->device)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': %s is memory of CUDA device %d, the communicator's is %d",
                              kind_name, what, a_name, da, d->device);
    if (kb == 1 && db != d->device)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': %s is memory of CUDA device %d, the communicator's is %d",
                              kind_name, what, b_name, db, d->device);
    *device = ka == 1 || kb == 1;
    return ADDC_OK;
}

/* ---- collectives ---- */

/* The solo communicator: the result is the input (bf16 rounded when asked), on the compute stream. */
static Status dev_post_local(CommDev *d, CommDevColl coll, const void *send, void *recv, int64_t count, CommDType dt) {
    const void *src = coll == COMM_DEV_BROADCAST ? recv : send;
    if (dt == COMM_BF16) {
        int slot = -1;
        TRY(scratch_get(d, (size_t)count * 2, &slot));
        void *s = d->scratch[slot].p;
        Status st = cuda_convert(s, DTYPE_BF16, src, DTYPE_F32, count);
        if (st == ADDC_OK) st = cuda_convert(recv, DTYPE_F32, s, DTYPE_BF16, count);
        scratch_put(d, slot); /* later users are ordered after these kernels on the same stream */
        return st;
    }
    if (src == recv) return ADDC_OK;
    return cuda_copy_device(recv, src, (size_t)count * dev_mem_size(dt));
}

#ifdef ADDC_HAVE_NCCL
static Status dev_post_nccl(CommDev *d, CommDevColl coll, const void *send, void *recv, int64_t count, CommDType dt,
                            CommOp op, int root, const CommDevTag *tag, CommDevWork **work, bool *stalled) {
    cudaStream_t cs = (cudaStream_t)cuda_stream(), ms = (cudaStream_t)cuda_comm_stream();
    const void *s = coll == COMM_DEV_BROADCAST ? recv : send;
    void *r = recv;
    int slot = -1;
    const void *widen_src = NULL;
    float *widen_dst = NULL;
    int64_t widen_n = 0;
    if (dt == COMM_BF16) {
        /* staging: the whole send (allreduce, broadcast: count; reduce-scatter: size * count) or the
         * whole result (allgather: size * count); this rank's block sits at rank * count */
        int64_t n_stage = coll == COMM_DEV_ALLGATHER || coll == COMM_DEV_REDUCE_SCATTER ? count * d->size : count;
        TRY(scratch_get(d, (size_t)n_stage * 2, &slot));
        char *p = d->scratch[slot].p;
        char *mine = p + (size_t)d->rank * (size_t)count * 2;
        Status st = ADDC_OK;
        switch (coll) {
        case COMM_DEV_ALLREDUCE:
            st = cuda_convert(p, DTYPE_BF16, send, DTYPE_F32, count);
            s = r = p;
            widen_src = p;
            widen_n = count;
            break;
        case COMM_DEV_BROADCAST:
            if (d->rank == root) st = cuda_convert(p, DTYPE_BF16, recv, DTYPE_F32, count);
            s = r = p;
            widen_src = p;
            widen_n = count;
            break;
        case COMM_DEV_ALLGATHER:
            st = cuda_convert(mine, DTYPE_BF16, send, DTYPE_F32, count);
            s = mine;
            r = p;
            widen_src = p;
            widen_n = count * d->size;
            break;
        case COMM_DEV_REDUCE_SCATTER:
            st = cuda_convert(p, DTYPE_BF16, send, DTYPE_F32, count * d->size);
            s = p;
            r = mine;
            widen_src = mine;
            widen_n = count;
            break;
        }
        widen_dst = recv;
        if (st != ADDC_OK) {
            scratch_put(d, slot);
            return st;
        }
    }
    CommDevWork *w = NULL;
    Status st = work_get(d, &w);
    if (st != ADDC_OK) {
        scratch_put(d, slot);
        return st;
    }
    /* after the producers on the compute stream (and the rounding above) */
    cudaError_t e = cudaEventRecord(d->ready, cs);
    if (e == cudaSuccess) e = cudaStreamWaitEvent(ms, d->ready, 0);
    if (e == cudaSuccess) e = cudaEventRecord(w->start, ms);
    if (e == cudaSuccess && tag->seq == d->hang_seq) {
        fprintf(stderr, "addc: rank %d: ADDC_TEST_DEVICE_HANG: collective '%s' (%s #%lld) stalls on the device\n",
                d->rank, tag->what, tag->kind_name, (long long)tag->seq);
        fflush(stderr);
        e = cudaLaunchHostFunc(ms, dev_hang_fn, NULL);
    }
    if (e != cudaSuccess) {
        work_spare(d, w);
        scratch_put(d, slot);
        return addc_error_set(ADDC_ERR_EXTERNAL, "%s '%s' (#%lld): CUDA error %s ordering it after the compute stream",
                              tag->kind_name, tag->what, (long long)tag->seq, cudaGetErrorString(e));
    }
    ncclDataType_t t = dev_nccl_type(dt);
    size_t n = (size_t)count;
    ncclResult_t nr = ncclSuccess;
    const char *call = "?";
    switch (coll) {
    case COMM_DEV_ALLREDUCE:
        call = "ncclAllReduce";
        nr = ncclAllReduce(s, r, n, t, dev_nccl_op(op), d->nccl, ms);
        break;
    case COMM_DEV_BROADCAST:
        call = "ncclBroadcast";
        nr = ncclBroadcast(s, r, n, t, root, d->nccl, ms);
        break;
    case COMM_DEV_ALLGATHER:
        call = "ncclAllGather";
        nr = ncclAllGather(s, r, n, t, d->nccl, ms);
        break;
    case COMM_DEV_REDUCE_SCATTER:
        call = "ncclReduceScatter";
        nr = ncclReduceScatter(s, r, n, t, dev_nccl_op(op), d->nccl, ms);
        break;
    }
    st = dev_nccl_settle(d, nr, call, tag, stalled);
    if (st == ADDC_OK) {
        e = cudaEventRecord(w->done, ms);
        if (e != cudaSuccess)
            st = addc_error_set(ADDC_ERR_EXTERNAL, "%s '%s' (#%lld): CUDA error %s after %s", tag->kind_name, tag->what,
                                (long long)tag->seq, cudaGetErrorString(e), call);
    }
    if (st != ADDC_OK) {
        work_spare(d, w);
        scratch_put(d, slot);
        return st;
    }
    w->seq = tag->seq;
    w->kind = tag->kind;
    w->kind_name = tag->kind_name;
    snprintf(w->what, sizeof w->what, "%s", tag->what);
    snprintf(w->phase, sizeof w->phase, "%s", tag->phase);
    w->scratch = slot;
    w->widen_src = widen_src;
    w->widen_dst = widen_dst;
    w->widen_n = widen_n;
    pthread_mutex_lock(&d->mu);
    if (d->tail)
        d->tail->next = w;
    else
        d->head = w;
    d->tail = w;
    pthread_mutex_unlock(&d->mu);
    *work = w;
    return ADDC_OK;
}
#endif

Status comm_dev_post(CommDev *d, CommDevColl coll, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                     int root, const CommDevTag *tag, CommDevWork **work, bool *stalled) {
    *work = NULL;
    *stalled = false;
    if (count == 0) return ADDC_OK; /* every rank has the same count: all skip */
    if (!d->use_nccl) return dev_post_local(d, coll, send, recv, count, dt);
#ifdef ADDC_HAVE_NCCL
    if (!d->connected)
        return addc_error_set(ADDC_ERR_INVALID, "%s '%s': the communicator's NCCL set-up did not finish", tag->kind_name,
                              tag->what);
    return dev_post_nccl(d, coll, send, recv, count, dt, op, root, tag, work, stalled);
#else
    (void)op, (void)root;
    return addc_error_set(ADDC_ERR_UNSUPPORTED, "%s '%s': addc was built without NCCL", tag->kind_name, tag->what);
#endif
}

Status comm_dev_finish(CommDev *d, CommDevWork *w) {
    if (!w) return ADDC_OK;
    Status st = ADDC_OK;
    cudaError_t e = cudaStreamWaitEvent((cudaStream_t)cuda_stream(), w->done, 0);
    if (e != cudaSuccess)
        st = addc_error_set(ADDC_ERR_EXTERNAL, "%s '%s' (#%lld): CUDA error %s making the compute stream wait for it",
                            w->kind_name, w->what, (long long)w->seq, cudaGetErrorString(e));
    if (st == ADDC_OK && w->widen_src) st = cuda_convert(w->widen_dst, DTYPE_F32, w->widen_src, DTYPE_BF16, w->widen_n);
    /* the staging is free: its next user writes it on the compute stream, after this wait */
    scratch_put(d, w->scratch);
    w->scratch = -1;
    pthread_mutex_lock(&d->mu);
    w->finished = true;
    works_retire(d);
    pthread_mutex_unlock(&d->mu);
    return st;
}

Status comm_dev_poll(CommDev *d, CommDevWork *watch, bool *watch_done, CommDevTimeout *to) {
    memset(to, 0, sizeof *to);
    if (watch_done) *watch_done = false;
    pthread_mutex_lock(&d->mu);
    double now = dev_now();
    cudaError_t bad = works_update(d, now);
    for (const CommDevWork *w = d->head; w && d->timeout_s > 0; w = w->next) {
        if (!w->completed && w->t_started > 0 && now - w->t_started >= d->timeout_s) {
            to->fired = true;
            to->seq = w->seq;
            to->kind = w->kind;
            snprintf(to->what, sizeof to->what, "%s", w->what);
            snprintf(to->phase, sizeof to->phase, "%s", w->phase);
            break;
        }
    }
    if (watch && watch_done) *watch_done = watch->completed;
    works_retire(d);
    pthread_mutex_unlock(&d->mu);
    if (bad != cudaSuccess)
        return addc_error_set(ADDC_ERR_EXTERNAL, "rank %d: CUDA error %s while polling the device collectives in flight",
                              d->rank, cudaGetErrorString(bad));
#ifdef ADDC_HAVE_NCCL
    if (d->connected) {
        ncclResult_t state = ncclSuccess;
        ncclResult_t q = ncclCommGetAsyncError(d->nccl, &state);
        if (q != ncclSuccess) state = q;
        if (state != ncclSuccess && state != ncclInProgress)
            return addc_error_set(ADDC_ERR_EXTERNAL, "rank %d: NCCL reports an asynchronous error: %s (%s)", d->rank,
                                  ncclGetErrorString(state), dev_nccl_last(d));
    }
#endif
    return ADDC_OK;
}

#else /* !ADDC_HAVE_CUDA */

static Status dev_unavailable(void) {
    return addc_error_set(ADDC_ERR_UNSUPPORTED,
                          "comm_enable_device: addc was built without CUDA (nvcc not found at configure time), so "
                          "collectives cannot take device buffers");
}

Status comm_dev_open(CommDev **out, int local_device, int rank, int size, bool use_nccl, double timeout_s) {
    (void)local_device, (void)rank, (void)size, (void)use_nccl, (void)timeout_s;
    *out = NULL;
    return dev_unavailable();
}
Status comm_dev_nccl_unique_id(CommDev *d, unsigned char id[COMM_DEV_ID_BYTES]) {
    (void)d, (void)id;
    return dev_unavailable();
}
Status comm_dev_nccl_connect_start(CommDev *d, const unsigned char id[COMM_DEV_ID_BYTES]) {
    (void)d, (void)id;
    return dev_unavailable();
}
Status comm_dev_nccl_connect_poll(CommDev *d, bool *done) {
    (void)d;
    *done = false;
    return dev_unavailable();
}
Status comm_dev_nccl_ready(CommDev *d) {
    (void)d;
    return dev_unavailable();
}
void comm_dev_close(CommDev *d, bool graceful) { (void)d, (void)graceful; }
void comm_dev_firing(CommDev *d) { (void)d; }
void comm_dev_abort(CommDev *d) { (void)d; }
void comm_dev_set_timeout(CommDev *d, double seconds) { (void)d, (void)seconds; }
int comm_dev_device(const CommDev *d) {
    (void)d;
    return -1;
}
Status comm_dev_where(const CommDev *d, const char *kind_name, const char *what, const void *a, const char *a_name,
                      const void *b, const char *b_name, bool *device) {
    (void)d, (void)kind_name, (void)what, (void)a, (void)a_name, (void)b, (void)b_name;
    *device = false;
    return dev_unavailable();
}
Status comm_dev_post(CommDev *d, CommDevColl coll, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                     int root, const CommDevTag *tag, CommDevWork **work, bool *stalled) {
    (void)d, (void)coll, (void)send, (void)recv, (void)count, (void)dt, (void)op, (void)root, (void)tag;
    *work = NULL;
    *stalled = false;
    return dev_unavailable();
}
Status comm_dev_finish(CommDev *d, CommDevWork *w) {
    (void)d;
    return w ? dev_unavailable() : ADDC_OK;
}
Status comm_dev_poll(CommDev *d, CommDevWork *watch, bool *watch_done, CommDevTimeout *to) {
    (void)d, (void)watch;
    if (watch_done) *watch_done = true;
    memset(to, 0, sizeof *to);
    return ADDC_OK;
}

#endif /* ADDC_HAVE_CUDA */
