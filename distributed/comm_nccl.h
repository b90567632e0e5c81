/* distributed/comm_nccl: internal interface between distributed/comm.c (arguments, sequence
 * numbers, byte counts, the MPI watchdog) and distributed/comm_nccl.c (collectives of CUDA device
 * buffers: NCCL on an MPI communicator, device copies on the solo one). Only comm.c includes it.
 *
 * A device collective is enqueued, never waited for on the host when it is posted: its producers
 * are the compute stream's earlier kernels (an event the communication stream waits for), it runs
 * on cuda_comm_stream() between a `start` and a `done` event, and comm_dev_finish makes the compute
 * stream wait for `done` (then widens a bf16 result there). Every collective in flight is on a
 * list in stream order that comm_dev_poll (main thread) and a watchdog thread inspect: a
 * collective whose start was seen more than the timeout ago and that has not completed has hung. */
#ifndef ADDC_DISTRIBUTED_COMM_NCCL_H
#define ADDC_DISTRIBUTED_COMM_NCCL_H

#include <stdbool.h>
#include <stdint.h>

#include "distributed/comm.h"

#define COMM_DEV_ID_BYTES 128 /* sizeof(ncclUniqueId) */

typedef struct CommDev CommDev;         /* the device state of a communicator */
typedef struct CommDevWork CommDevWork; /* one device collective in flight */

typedef enum CommDevColl {
    COMM_DEV_ALLREDUCE = 0,
    COMM_DEV_BROADCAST,
    COMM_DEV_ALLGATHER,
    COMM_DEV_REDUCE_SCATTER
} CommDevColl;

/* What the watchdog names: copied into the work item when it is posted. kind_name must be static. */
typedef struct CommDevTag {
    int64_t seq;
    int kind;
    const char *kind_name;
    const char *what;
    const char *phase;
} CommDevTag;

/* A collective that timed out on the device (filled by comm_dev_poll). */
typedef struct CommDevTimeout {
    bool fired;
    int64_t seq;
    int kind;
    char what[128];
    char phase[96];
} CommDevTimeout;

/* Selects the CUDA device (cuda_init) and makes the streams, events and locks. use_nccl (an MPI
 * communicator): collectives go through NCCL, which needs comm_dev_nccl_connect before any.
 * Reports why when CUDA or NCCL was not built or no device is there. */
Status comm_dev_open(CommDev **out, int local_device, int rank, int size, bool use_nccl, double timeout_s);
/* NCCL set-up in three steps, driven by comm.c around its own broadcast of the id: rank 0 makes
 * the id; every rank starts the non-blocking init and polls it (done: finished; the watchdog's
 * timeout is comm.c's to apply). */
Status comm_dev_nccl_unique_id(CommDev *d, unsigned char id[COMM_DEV_ID_BYTES]);
Status comm_dev_nccl_connect_start(CommDev *d, const unsigned char id[COMM_DEV_ID_BYTES]);
Status comm_dev_nccl_connect_poll(CommDev *d, bool *done);
/* After a successful connect: starts the watchdog thread. */
Status comm_dev_nccl_ready(CommDev *d);
/* graceful: waits (bounded by the timeout) for the collectives in flight and finalizes NCCL with
 * the other ranks (comm_finalize); otherwise aborts NCCL at once (a failed comm_enable_device).
 * Then stops the watchdog thread and frees NCCL and device memory; failures go to stderr. */
void comm_dev_close(CommDev *d, bool graceful);
/* The watchdog fires on the main thread: tells the watchdog thread (which ends the process itself
 * if the firing does not finish within a grace period), then ncclCommAbort. */
void comm_dev_firing(CommDev *d);
void comm_dev_abort(CommDev *d);
void comm_dev_set_timeout(CommDev *d, double seconds);
int comm_dev_device(const CommDev *d);

/* Where the buffers of a collective live: *device = true when a non-NULL one is CUDA device
 * memory of this device. A host/device mix, or memory of another device, is ADDC_ERR_INVALID
 * naming kind_name and what. */
Status comm_dev_where(const CommDev *d, const char *kind_name, const char *what, const void *a, const char *a_name,
                      const void *b, const char *b_name, bool *device);

/* Enqueues one collective of device buffers (arguments already validated by comm.c, the same
 * meaning as the host collectives; for broadcast `recv` is the buffer and `send` is unused).
 * *work: the item to finish, NULL when nothing is left in flight (solo, count 0). When NCCL does
 * not accept the call within the timeout, *stalled is set (comm.c fires the watchdog). */
Status comm_dev_post(CommDev *d, CommDevColl coll, const void *send, void *recv, int64_t count, CommDType dt, CommOp op,
                     int root, const CommDevTag *tag, CommDevWork **work, bool *stalled);
/* The compute stream waits for the collective; a bf16 result is widened into the caller's buffer
 * (on the compute stream); its staging is free for the next collective. The item is released. */
Status comm_dev_finish(CommDev *d, CommDevWork *w);
/* Inspects the collectives in flight: *to gets the first one started more than the timeout ago
 * and not complete (to->fired); when watch is not NULL, *watch_done says whether it completed.
 * Errors: a CUDA or NCCL failure seen while polling. */
Status comm_dev_poll(CommDev *d, CommDevWork *watch, bool *watch_done, CommDevTimeout *to);

#endif
