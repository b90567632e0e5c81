/* distributed/comm: the collectives every distributed feature uses (ARCHITECTURE §5), on MPI for
 * CPU tensors and on NCCL for CUDA tensors (after comm_enable_device; see "Device buffers" below).
 *
 * One process per rank. comm_world() starts MPI only when the process was launched by an MPI
 * launcher (mpirun/srun set OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_SIZE); otherwise it returns a
 * solo communicator (rank 0 of 1) on which every collective is a local copy and nothing of MPI is
 * touched, so `addc train` and the unit tests run without mpirun.
 *
 * Collectives work on f32 (and, for reductions, f64 and u64) buffers. Every rank must call the
 * same collectives in the same order with the same counts (the usual MPI rule). Each call carries
 * a `what` string (e.g. "fsdp gather down_blocks.1.resnets.0") and the communicator carries the
 * current training phase (comm_set_phase: "forward", "backward", "checkpoint save", ...); both
 * name the collective in the watchdog's message.
 *
 * Watchdog. A collective that has not completed after `timeout_s` seconds (comm_set_timeout;
 * default 600, env ADDC_COMM_TIMEOUT overrides) ends the job: every waiting rank prints
 *   addc: rank R: collective 'WHAT' (KIND #SEQ) in phase 'PHASE' timed out after T s;
 *   ranks not in it: 3, 5
 * to stderr and calls MPI_Abort (exit code 70), so mpirun ends every rank (a hung one included) within the
 * timeout plus a few seconds. The ranks not in it are found only after a timeout, by a small
 * side exchange on a duplicate communicator (every waiting rank tells every other rank the
 * sequence number it waits in; ranks that do not answer within a grace period are the ones
 * named), so a normal collective costs nothing extra. A rank that dies is reported by the
 * launcher (Open MPI ends the job); the watchdog is for ranks that hang.
 *
 * The timeout counts from the start of the wait (comm_wait for the non-blocking variants), so
 * computing while a non-blocking collective is in flight does not count against it.
 *
 * Non-blocking variants return a CommRequest that comm_wait completes (under the same
 * watchdog); the buffers must stay untouched until then.
 *
 * COMM_BF16 means f32 buffers in memory and bf16 (round to nearest even) on the wire, for every
 * collective: reductions add bf16 pairs in f32 and round back to bf16, and the results are widened
 * to f32, so every rank (the solo one too) ends with bf16-representable values.
 *
 * Threads: only the main thread calls comm (MPI is started at MPI_THREAD_FUNNELED).
 *
 * Device buffers. After comm_enable_device(c, local_device) the same functions take CUDA device
 * buffers: a collective whose buffers are device memory (cudaPointerGetAttributes, asked at each
 * call) runs on NCCL (an MPI communicator; rank 0's ncclUniqueId reaches the others over MPI) or
 * as device-to-device copies (the solo communicator); one whose buffers are host memory stays on
 * MPI as before (use host buffers for scalars the host reads, e.g. f64/u64 totals). A host and a
 * device buffer in one call is ADDC_ERR_INVALID; gatherv_bytes and barrier are host-only. Before
 * comm_enable_device every buffer is taken for host memory and CUDA is never touched.
 *   Ordering, without host synchronisation: a device collective runs on cuda_comm_stream() after
 * everything enqueued on cuda_stream() before the call (the kernels that wrote its input), and
 * everything enqueued on cuda_stream() after the blocking call returns, or after comm_wait for the
 * non-blocking variants, sees its result. Between the post and comm_wait, kernels on cuda_stream()
 * must not touch the buffers (they run concurrently with the collective).
 *   The semantics are those of the host collectives: the same dtypes and ops (F32/F64/U64 as
 * ncclFloat32/Float64/Uint64; COMM_BF16 rounds into a bf16 device staging buffer, category
 * CUDA_MEM_COMM, reused across calls, runs in ncclBfloat16 and is widened back on cuda_stream()),
 * the same in-place rules, the same byte counts and sequence numbers. ADDC_COMM_CHUNK does not
 * apply (NCCL takes 64-bit counts). A count of 0 moves nothing and synchronises nothing.
 *   Watchdog: a device collective hangs when its turn on the communication stream came (its start
 * event completed) more than the timeout ago and it has not completed. The time counts from then,
 * not from a host wait. It is noticed at every comm call and, for the non-blocking variants, in
 * comm_wait, which with the watchdog on (timeout > 0) waits on the host for the collective,
 * polling it; the watchdog then fires as for MPI (the same line, the side exchange naming the
 * ranks not in it), aborts NCCL (ncclCommAbort) and MPI_Abort ends the job. If the main thread is
 * blocked elsewhere (e.g. a copy to the host that waits for the hung collective), a watchdog
 * thread prints the line with "ranks not in it: unknown (...)" 10 s later and exits the process
 * with code 70 (mpirun then ends the job). The NCCL set-up in comm_enable_device is watched too
 * (kind "nccl_init"). */
#ifndef ADDC_DISTRIBUTED_COMM_H
#define ADDC_DISTRIBUTED_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct Comm Comm;
typedef struct CommRequest CommRequest;

typedef enum CommDType { COMM_F32 = 0, COMM_F64, COMM_U64, COMM_BF16 } CommDType;
typedef enum CommOp { COMM_SUM = 0, COMM_MAX, COMM_MIN } CommOp;

/* The process-wide communicator (started on the first call; the same one afterwards). Reads
 * ADDC_COMM_TIMEOUT and the test hooks below; an unreadable value is ADDC_ERR_INVALID. */
Status comm_world(Comm **out);
/* Finalizes MPI if comm_world started it (and NCCL, after the device collectives in flight,
 * when comm_enable_device ran); the communicator is unusable afterwards. */
void comm_finalize(void);

/* A rank that cannot go on while others may wait in a collective: MPI_Abort(code) under mpirun
 * (mpirun then ends every rank), exit(code) on the solo communicator. Does not return. */
void comm_abort(Comm *c, int code) __attribute__((noreturn));

int comm_rank(const Comm *c);
int comm_size(const Comm *c);
bool comm_is_mpi(const Comm *c); /* false for the solo communicator */
/* A pointer to the MPI_Comm under c (for HDF5's MPI-IO file access list, the one use of MPI
 * outside comm.c), NULL for the solo communicator. */
void *comm_mpi_handle(Comm *c);

/* Device buffers from now on (see the top of the file): selects CUDA device local_device for
 * this process (cuda_init; refused if CUDA was already started on another device) and, on an MPI
 * communicator, sets up NCCL with every rank (collective: every rank calls it). Calling it again
 * with the same device is a no-op. Built without CUDA, without NCCL on an MPI communicator, or
 * with no such device: ADDC_ERR_UNSUPPORTED / ADDC_ERR_INVALID saying why, on every rank (they
 * agree over MPI first, so none is left waiting in the set-up). */
Status comm_enable_device(Comm *c, int local_device);
bool comm_device_enabled(const Comm *c);

void comm_set_phase(Comm *c, const char *phase); /* copied; shown by the watchdog */
void comm_set_timeout(Comm *c, double seconds);  /* <= 0: no watchdog */
double comm_timeout(const Comm *c);

/* Blocking collectives. counts are elements of `dt`. */
Status comm_barrier(Comm *c, const char *what);
Status comm_broadcast(Comm *c, void *buf, int64_t count, CommDType dt, int root, const char *what);
Status comm_allreduce(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                      const char *what); /* send == recv: in place */
/* recv (size * count) = concat over ranks of each rank's send (count). send may be this rank's
 * block of recv (recv + rank * count): in place. */
Status comm_allgather(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, const char *what);
/* send (size * count): block r of the element-wise reduction over ranks lands in rank r's recv
 * (count). COMM_BF16 reduces in bf16 on the wire and is widened back on arrival (the configurable
 * reduce dtype of FSDP); the others reduce in their own type. send and recv must not overlap. */
Status comm_reduce_scatter(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                           const char *what);
/* Bytes, everyone to root: rank r's send (n bytes) lands in root's recv at offset counts[0] + ...
 * + counts[r - 1]; counts[r] must equal rank r's n (total below 2^31). To send strings or blobs of
 * unequal size from the root to everyone, use comm_broadcast twice (size, then data). */
Status comm_gatherv_bytes(Comm *c, const void *send, int64_t n, void *recv, const int64_t *counts, int root,
                          const char *what); /* recv/counts used on root only */

/* Non-blocking variants; *req is owned by the communicator until comm_wait returns. */
Status comm_iallgather(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, const char *what,
                       CommRequest **req);
Status comm_ireduce_scatter(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                            const char *what, CommRequest **req);
Status comm_iallreduce(Comm *c, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                       const char *what, CommRequest **req);
Status comm_wait(Comm *c, CommRequest *req); /* completes and frees req; NULL: no-op */

/* Number of bytes this rank sent in collectives since the last call (for the benchmark's
 * "bytes per step"), then resets the counter. A collective counts the bytes of what this rank
 * contributes, at the wire dtype (bf16: 2 bytes): allreduce and allgather count, reduce_scatter
 * size * count, broadcast count on the root only, gatherv n, barrier nothing. The solo
 * communicator counts the same way. */
int64_t comm_bytes_sent_take(Comm *c);

/* Test hook: with ADDC_TEST_HANG="RANK:SEQ" in the environment, rank RANK sleeps forever when it
 * enters its collective number SEQ (1-based, counted over all collectives of the process), as a
 * hung rank would. Read once by comm_world.
 * Test hook: ADDC_COMM_CHUNK=N (elements, default and maximum INT_MAX / 8) splits larger counts
 * into several MPI calls, so tests can exercise the splitting with small buffers.
 * Test hook: with ADDC_TEST_DEVICE_HANG=SEQ (numbered as ADDC_TEST_HANG), device collective SEQ
 * stalls on the communication stream after it has started (a host function there that returns
 * only when the watchdog fires), as one waiting for a hung peer would. Read by comm_enable_device. */

#endif
