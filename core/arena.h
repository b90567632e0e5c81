/* core/arena: the step arena. Activations, saved tensors and autograd bookkeeping of one
 * step are bump-allocated here and released all at once with arena_reset (or back to a
 * mark). Blocks are kept across resets, so after the first step the loop mallocs nothing.
 * arena_peak reports the most bytes ever live at once: size the arena from it.
 * Allocations are 64-byte aligned (cache lines, AVX-512). Not thread-safe: one per stream.
 * A device arena (arena_init_device) hands out CUDA memory of category CUDA_MEM_ACTIVATIONS
 * (core/cuda.h): its blocks come from cuda_mem_alloc, arena_calloc zeroes on the compute stream,
 * and with cuda_poison_enabled() every allocation is first filled with NaN.
 * A host arena may have a device companion (arena_attach_device): marks and resets of the host
 * arena then cover the companion too, so every memory scope of the code (checkpointed regions,
 * kernel scratch, var_compact) releases device tensors with the host bookkeeping. */
#ifndef ADDC_CORE_ARENA_H
#define ADDC_CORE_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct ArenaBlock ArenaBlock;

typedef struct Arena {
    ArenaBlock *first, *cur;
    int64_t block_bytes; /* default size of a new block */
    int64_t limit_bytes; /* 0 = no limit; else allocations beyond it fail */
    int64_t used;        /* bytes live now (including alignment padding) */
    int64_t peak;
    int64_t reserved;    /* bytes held in blocks */
    int32_t device;      /* Device (core/tensor.h): DEVICE_CPU, or DEVICE_CUDA for a device arena */
    struct Arena *dev;   /* device companion of a host arena (not owned), or NULL */
} Arena;

typedef struct ArenaMark {
    ArenaBlock *block;
    int64_t offset;
    int64_t used;
    ArenaBlock *dblock; /* the same for the device companion */
    int64_t doffset, dused;
} ArenaMark;

void arena_init(Arena *a, int64_t block_bytes, int64_t limit_bytes);
/* A device arena: blocks of CUDA memory (fails at the first allocation when CUDA is absent). */
void arena_init_device(Arena *a, int64_t block_bytes, int64_t limit_bytes);
void arena_free(Arena *a);
/* Makes dev (a device arena) the companion of host a: arena_mark/arena_reset_to/arena_reset of a
 * then also mark/reset dev. NULL detaches. */
void arena_attach_device(Arena *a, Arena *dev);
/* NULL (with an error set) if the limit would be exceeded or malloc fails. */
void *arena_alloc(Arena *a, int64_t bytes);
void *arena_calloc(Arena *a, int64_t bytes);
ArenaMark arena_mark(const Arena *a);
void arena_reset_to(Arena *a, ArenaMark m);
void arena_reset(Arena *a);
int64_t arena_peak(const Arena *a);
int64_t arena_used(const Arena *a);

#endif
