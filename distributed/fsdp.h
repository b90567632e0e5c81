/* distributed/fsdp: fully sharded parameters (ARCHITECTURE §5). A ParamStore (nn/param.h) is
 * already one flat buffer cut into units (a resnet or transformer block each); fsdp_wrap turns it
 * into a sharded store:
 *
 *   - Unit u (numel n_u) is split into N shards of S_u = ceil(n_u / N) elements; rank r owns
 *     elements [r S_u, min((r+1) S_u, n_u)) of the unit, zero-padded to S_u. The rank's shard of
 *     the store is the concatenation over units: shard_numel = sum_u S_u. Values (fp32 master),
 *     gradients and (in launch/) optimizer moments and EMA live only as such shards.
 *   - The store's full `data` and `grad` buffers become reserved address space (mmap, no memory
 *     behind it until touched), so every Param's Var keeps a stable address and views of
 *     parameters (op_reshape aliases) stay valid. A unit is "resident" while its range holds the
 *     gathered values; releasing it returns its pages to the system (madvise), so a rank holds the
 *     resident units plus its shards, not the whole network.
 *   - core/autograd calls the unit's VarHome (every Param Var of the unit points to it; views
 *     inherit it) before any kernel, forward or backward, reads a Var of that unit: acquire
 *     all-gathers the unit if it is not resident (waiting for a prefetch in flight), starts the
 *     prefetch of the unit that came next the last time the walk went the same way (at first
 *     the next unit in declaration order in forward, the previous one in backward: networks do
 *     not run their units in declaration order), and releases the least recently used units
 *     beyond max_resident (never one acquired for the node about to run). After the last
 *     node of a backward walk that reads a unit, grads_done reduce-scatters that unit's
 *     gradient range (sum over ranks, scaled by 1/N: the trainer's losses are per-rank means
 *     over equal local batches, so the result is the gradient of the global-batch mean) into
 *     the gradient shard (accumulating: grads_done may run more than once per step, the sum is
 *     linear), zeroes the range and releases the unit. The reduce-scatter is left in flight
 *     while the backward of the next units runs, and lands (is added into the shard) when the
 *     next one is posted or at flush: the same additions in the same order, so the same bits. fsdp_grads_flush does the same for
 *     every unit with gradients still pending; the trainer calls it after each backward,
 *     before the optimizer step.
 *   - While wrapped, the store's `data` and `grad` must not be read or written directly (a
 *     released unit reads as zeros, a write is lost at the next gather), so no
 *     param_store_zero_grad or weights_save on it: zeroing, optimizer steps, the EMA and saving
 *     go through the shards (fsdp_zero_grad, fsdp_shard_values / grads, fsdp_gather_full) or
 *     come after fsdp_free.
 *   - Every rank must run the same ops on a wrapped store (acquire and grads_done are
 *     collective): forward passes for sample grids and evaluation are run by every rank.
 *
 * World size 1 needs no wrapping (the trainer then uses the store's own buffers); wrapping at
 * world 1 works too and gives the same numbers.
 *
 * GPU stores (param_store_to_device): the same contract with device memory. Shards, and every
 * buffer fsdp_gather_full / fsdp_scatter_full take, are device memory; the store's `data` and
 * `grad` become reserved device address space (cuda_va_reserve) whose granules are mapped while a
 * resident (values) or dirty (gradients) unit touches them and unmapped afterwards, so reading a
 * released unit's range faults rather than reading zeros: never touch the store's buffers while
 * wrapped. Every copy and kernel is issued on the compute stream (cuda_stream()), the collectives
 * through comm on device buffers. On an MPI communicator comm_enable_device must have been called
 * (fsdp_wrap refuses otherwise); the solo communicator needs nothing. The 1/N scaling of reduced
 * gradients is a multiplication by 1/N on the GPU (a division on the CPU): the same bits for a
 * power-of-two world. */
#ifndef ADDC_DISTRIBUTED_FSDP_H
#define ADDC_DISTRIBUTED_FSDP_H

#include <stdbool.h>
#include <stdint.h>

#include "distributed/comm.h"
#include "nn/param.h"

typedef struct FsdpOptions {
    bool prefetch;          /* gather the next unit while the current one computes (default on) */
    CommDType reduce_dtype; /* COMM_F32 (default) or COMM_BF16 for gradient reduce-scatter */
    int32_t max_resident;   /* units kept gathered at once, >= 2 (default 3) */
} FsdpOptions;

void fsdp_options_default(FsdpOptions *o);

typedef struct Fsdp Fsdp;

/* Shards `store` (allocated on the CPU or the GPU, values identical on every rank: checked by an
 * all-reduced checksum (on the GPU: of the sum of squares), an error names the store `name`
 * otherwise) over `comm`; collective. o may be NULL (defaults). Gradients start at zero (the
 * store's gradient buffer is dropped). The store must outlive the Fsdp. */
Status fsdp_wrap(Fsdp **out, ParamStore *store, Comm *comm, const FsdpOptions *o, const char *name);
/* Restores the store to plain full buffers (as param_store_alloc made them) holding the current
 * values and the reduced gradients (all-gathered from the shards; pending gradients not flushed
 * are dropped), frees the shards; collective. On a failure (no memory, communication) the error
 * is left set and the values are lost (zero, or data NULL). */
void fsdp_free(Fsdp *f);

int64_t fsdp_shard_numel(const Fsdp *f);
float *fsdp_shard_values(Fsdp *f); /* (shard_numel) this rank's values; padding stays 0 */
float *fsdp_shard_grads(Fsdp *f);  /* (shard_numel) this rank's reduced gradients */
/* Where unit u's elements of this rank sit: shard[off .. off + len) holds unit elements
 * [first, first + len) (len may be < S_u, or 0 on the last ranks of a small unit). */
void fsdp_shard_range(const Fsdp *f, int32_t unit, int64_t *off, int64_t *first, int64_t *len);

/* Reduce-scatters every unit with pending gradients (see top); collective. Afterwards no
 * collective of f is in flight, so the shards may be changed. */
Status fsdp_grads_flush(Fsdp *f);
/* Zeroes the gradient shard and any pending full-range gradients (no communication). */
void fsdp_zero_grad(Fsdp *f);
/* Releases every resident unit (after writing shard values, e.g. an optimizer step, the next
 * acquire re-gathers the new values) and returns the pages of the others too (the full values
 * fsdp_gather_full may have written into the store's own buffer to save it). Call after changing
 * fsdp_shard_values; pending gradients are kept. */
void fsdp_invalidate(Fsdp *f);

/* All-gathers every unit of an arbitrary shard-shaped buffer `shard` (shard_numel, e.g. an
 * optimizer moment or the EMA) into the full flat buffer `full` (store numel); collective. */
Status fsdp_gather_full(Fsdp *f, const float *shard, float *full);
/* The inverse: this rank's shard of a full flat buffer (no communication). On the GPU a CUDA
 * failure is left set (addc_error_status) and reported by the next acquire. */
void fsdp_scatter_full(const Fsdp *f, const float *full, float *shard);

/* The same with `full` in host memory whatever the store's device: on the GPU each unit is gathered
 * into the device gather buffer and copied down (a full copy of a large network never has to fit
 * in device memory), and the scatter copies this rank's ranges up; both return once `full` may be
 * reused. On the CPU they are fsdp_gather_full and fsdp_scatter_full. Collective (the gather). */
Status fsdp_gather_full_host(Fsdp *f, const float *shard, float *full);
Status fsdp_scatter_full_host(Fsdp *f, const float *full, float *shard);

typedef struct FsdpMemory {
    int64_t shard_bytes;         /* values + gradients shards */
    int64_t resident_peak_bytes; /* peak of gathered values + pending gradient ranges at once (the
                                    gather and reduce-scatter buffers, 2 x world x the largest
                                    shard, come on top) */
    int64_t gathers, reduce_scatters;
    int64_t prefetched; /* gathers that were prefetches (the rest waited for their all-gather) */
    int64_t bytes_gathered, bytes_reduced; /* received by all-gathers, sent to reduce-scatters */
    /* GPU stores (0 on the CPU): the granule size of the reserved space, the granules of values
     * and gradients mapped now, and the most mapped at once */
    int64_t granule_bytes, granules_mapped, granules_peak;
} FsdpMemory;
FsdpMemory fsdp_memory(const Fsdp *f);

#endif
