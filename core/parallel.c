/* core/parallel: persistent pthread pool (see parallel.h). Workers sleep on a condition
 * variable between loops; a loop publishes one job, everyone (the caller too) takes chunks of
 * it, and the caller waits for the chunks to finish, not for every worker to wake: on an
 * oversubscribed machine a descheduled worker costs nothing. */
#include "core/parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define POOL_MAX 256

void openblas_set_num_threads(int num_threads); /* from OpenBLAS */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    pthread_t tid[POOL_MAX];
    int nthreads;  /* including the caller */
    int nworkers;  /* started threads */
    int64_t generation;
    /* current job */
    ParallelFn fn;
    void *ctx;
    int64_t n, chunk;
    int nchunks;
    int next_chunk;  /* next chunk to hand out */
    int done_chunks; /* chunks finished */
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .start = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static _Thread_local int in_parallel;
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER; /* one loop at a time */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

/* Takes chunks of the current job until none is left. The job is read under the lock with the
 * chunk, so a worker that wakes late (the machine is oversubscribed) finds nothing left, or
 * the next job, and never a stale one; the caller waits for chunks, not for workers. */
static void run_chunks(void) {
    for (;;) {
        pthread_mutex_lock(&pool.mu);
        if (pool.next_chunk >= pool.nchunks) {
            pthread_mutex_unlock(&pool.mu);
            return;
        }
        int c = pool.next_chunk++;
        ParallelFn fn = pool.fn;
        void *ctx = pool.ctx;
        int64_t b = (int64_t)c * pool.chunk;
        int64_t e = b + pool.chunk < pool.n ? b + pool.chunk : pool.n;
        pthread_mutex_unlock(&pool.mu);
        fn(ctx, b, e);
        pthread_mutex_lock(&pool.mu);
        if (++pool.done_chunks == pool.nchunks) pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.mu);
    }
}

static void *worker(void *arg) {
    (void)arg;
    in_parallel = 1;
    int64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool.mu);
        while (pool.generation == seen) pthread_cond_wait(&pool.start, &pool.mu);
        seen = pool.generation;
        pthread_mutex_unlock(&pool.mu);
        run_chunks();
    }
    return NULL;
}

static void pool_start_workers(int want) {
    while (pool.nworkers < want - 1 && pool.nworkers < POOL_MAX) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&pool.tid[pool.nworkers], &at, worker, NULL) != 0) {
            pthread_attr_destroy(&at);
            break;
        }
        pthread_attr_destroy(&at);
        pool.nworkers++;
    }
}

static void pool_init(void) {
    int n = 0;
    const char *env = getenv("ADDC_THREADS");
    if (env) n = atoi(env);
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) n = 1;
    if (n > POOL_MAX) n = POOL_MAX;
    pool.nthreads = n;
    openblas_set_num_threads(n);
}

int parallel_threads(void) {
    pthread_once(&pool_once, pool_init);
    return pool.nthreads;
}

void parallel_set_threads(int n) {
    pthread_once(&pool_once, pool_init);
    if (n < 1) n = 1;
    if (n > POOL_MAX) n = POOL_MAX;
    pool.nthreads = n;
    openblas_set_num_threads(n);
}

void parallel_for(int64_t n, int64_t grain, ParallelFn fn, void *ctx) {
    if (n <= 0) return;
    int nt = parallel_threads();
    if (grain < 1) grain = 1;
    int64_t max_chunks = (n + grain - 1) / grain;
    /* serial when there is nothing to split, when nested, or when another thread (a data
     * loader's decoder, say) holds the pool */
    if (nt <= 1 || in_parallel || max_chunks <= 1 || pthread_mutex_trylock(&pool_busy) != 0) {
        fn(ctx, 0, n);
        return;
    }
    int nchunks = (int)(max_chunks < 4 * nt ? max_chunks : 4 * nt);
    int nwork = nt - 1 < nchunks - 1 ? nt - 1 : nchunks - 1; /* workers to wake */
    pthread_mutex_lock(&pool.mu);
    pool_start_workers(nwork + 1);
    if (nwork > pool.nworkers) nwork = pool.nworkers;
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.chunk = (n + nchunks - 1) / nchunks;
    pool.nchunks = (int)((n + pool.chunk - 1) / pool.chunk);
    pool.next_chunk = 0;
    pool.done_chunks = 0;
    pool.generation++;
    pthread_cond_broadcast(&pool.start);
    pthread_mutex_unlock(&pool.mu);
    in_parallel = 1;
    run_chunks();
    in_parallel = 0;
    pthread_mutex_lock(&pool.mu);
    while (pool.done_chunks < pool.nchunks) pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool_busy);
}
