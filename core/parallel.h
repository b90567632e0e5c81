/* core/parallel: a small persistent thread pool for CPU kernels.
 *
 * parallel_for(n, fn, ctx) splits [0, n) into contiguous chunks over the pool's threads
 * (the calling thread takes one) and returns when all are done. The thread count comes
 * from ADDC_THREADS, else the number of online CPUs; nothing assumes a particular count.
 * OpenBLAS is told the same count. Calls from inside a parallel region run serially. */
#ifndef ADDC_CORE_PARALLEL_H
#define ADDC_CORE_PARALLEL_H

#include <stdint.h>

typedef void (*ParallelFn)(void *ctx, int64_t begin, int64_t end);

int parallel_threads(void);
/* Sets the thread count (>= 1) for the pool and for OpenBLAS. Not while a loop runs. */
void parallel_set_threads(int n);
/* Runs fn over [0, n) in chunks of at least `grain` iterations. */
void parallel_for(int64_t n, int64_t grain, ParallelFn fn, void *ctx);

#endif
