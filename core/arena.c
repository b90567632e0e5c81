/* core/arena: chained-block bump allocator (see arena.h). */
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "core/error.h"
#include "core/tensor.h"

#define ARENA_ALIGN 64

struct ArenaBlock {
    ArenaBlock *next;
    int64_t cap, off;
    unsigned char *base; /* aligned start (device memory in a device arena) */
};

void arena_init(Arena *a, int64_t block_bytes, int64_t limit_bytes) {
    memset(a, 0, sizeof *a);
    a->block_bytes = block_bytes > 0 ? block_bytes : (64 << 20);
    a->limit_bytes = limit_bytes;
}

void arena_init_device(Arena *a, int64_t block_bytes, int64_t limit_bytes) {
    arena_init(a, block_bytes, limit_bytes);
    a->device = DEVICE_CUDA;
}

void arena_free(Arena *a) {
    ArenaBlock *b = a->first;
    while (b) {
        ArenaBlock *n = b->next;
        if (a->device == DEVICE_CUDA) cuda_mem_free(CUDA_MEM_ACTIVATIONS, b->base, (size_t)b->cap);
        free(b);
        b = n;
    }
    memset(a, 0, sizeof *a);
}

void arena_attach_device(Arena *a, Arena *dev) { a->dev = dev; }

/* A device block: the header on the host, the bytes on the device (cudaMalloc aligns to 256). */
static ArenaBlock *block_new_device(int64_t cap) {
    ArenaBlock *b = malloc(sizeof(ArenaBlock));
    if (!b) return NULL;
    void *p = NULL;
    if (cuda_mem_alloc(CUDA_MEM_ACTIVATIONS, &p, (size_t)cap) != ADDC_OK) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->cap = cap;
    b->off = 0;
    b->base = p;
    return b;
}

static ArenaBlock *block_new(int64_t cap) {
    ArenaBlock *b = malloc(sizeof(ArenaBlock) + (size_t)cap + ARENA_ALIGN);
    if (!b) return NULL;
    b->next = NULL;
    b->cap = cap;
    b->off = 0;
    uintptr_t p = (uintptr_t)(b + 1);
    b->base = (unsigned char *)((p + ARENA_ALIGN - 1) & ~(uintptr_t)(ARENA_ALIGN - 1));
    return b;
}

void *arena_alloc(Arena *a, int64_t bytes) {
    if (bytes < 0) {
        addc_error_set(ADDC_ERR_INVALID, "arena_alloc of %lld bytes", (long long)bytes);
        return NULL;
    }
    int64_t need = (bytes + ARENA_ALIGN - 1) & ~(int64_t)(ARENA_ALIGN - 1);
    if (need == 0) need = ARENA_ALIGN;
    if (a->limit_bytes > 0 && a->used + need > a->limit_bytes) {
        addc_error_set(ADDC_ERR_NOMEM,
                       "step arena exhausted: %lld bytes live, %lld more asked, limit %lld "
                       "(raise the arena limit)",
                       (long long)a->used, (long long)need, (long long)a->limit_bytes);
        return NULL;
    }
    /* find room in the current block or a later (kept) one */
    while (a->cur && a->cur->off + need > a->cur->cap) {
        if (!a->cur->next) break;
        a->cur = a->cur->next;
        a->cur->off = 0;
    }
    if (!a->cur || a->cur->off + need > a->cur->cap) {
        int64_t cap = need > a->block_bytes ? need : a->block_bytes;
        ArenaBlock *b = a->device == DEVICE_CUDA ? block_new_device(cap) : block_new(cap);
        if (!b) {
            if (a->device != DEVICE_CUDA) /* the device path has set its own message */
                addc_error_set(ADDC_ERR_NOMEM, "out of memory: arena block of %lld bytes", (long long)cap);
            return NULL;
        }
        a->reserved += cap;
        if (!a->first) {
            a->first = b;
        } else if (!a->cur) {
            b->next = a->first; /* cannot happen: cur is set once first is */
            a->first = b;
        } else {
            /* insert after cur so kept blocks after it stay usable */
            b->next = a->cur->next;
            a->cur->next = b;
        }
        a->cur = b;
    }
    void *p = a->cur->base + a->cur->off;
    a->cur->off += need;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    if (a->device == DEVICE_CUDA && cuda_poison_enabled()) {
        /* 0x7fc07fc0 is a NaN as one f32 and as each of its two bf16 halves */
        const uint32_t bits = 0x7fc07fc0u;
        float nan_pattern;
        memcpy(&nan_pattern, &bits, sizeof nan_pattern);
        if (cuda_fill_f32(p, need / 4, nan_pattern) != ADDC_OK) return NULL;
    }
    return p;
}

void *arena_calloc(Arena *a, int64_t bytes) {
    void *p = arena_alloc(a, bytes);
    if (!p) return NULL;
    if (a->device == DEVICE_CUDA) {
        if (cuda_memset(p, 0, (size_t)bytes) != ADDC_OK) return NULL;
    } else {
        memset(p, 0, (size_t)bytes);
    }
    return p;
}

ArenaMark arena_mark(const Arena *a) {
    ArenaMark m = {a->cur, a->cur ? a->cur->off : 0, a->used, NULL, 0, 0};
    if (a->dev) {
        m.dblock = a->dev->cur;
        m.doffset = a->dev->cur ? a->dev->cur->off : 0;
        m.dused = a->dev->used;
    }
    return m;
}

static void reset_one(Arena *a, ArenaBlock *block, int64_t offset, int64_t used) {
    if (!block) {
        a->cur = a->first;
        if (a->cur) a->cur->off = 0;
        a->used = 0;
        return;
    }
    a->cur = block;
    a->cur->off = offset;
    a->used = used;
}

void arena_reset_to(Arena *a, ArenaMark m) {
    reset_one(a, m.block, m.offset, m.used);
    if (a->dev) reset_one(a->dev, m.dblock, m.doffset, m.dused);
}

void arena_reset(Arena *a) {
    reset_one(a, NULL, 0, 0);
    if (a->dev) reset_one(a->dev, NULL, 0, 0);
}

int64_t arena_peak(const Arena *a) { return a->peak; }
int64_t arena_used(const Arena *a) { return a->used; }
