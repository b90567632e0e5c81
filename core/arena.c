/* core/arena: chained-block bump allocator (see arena.h). */
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define ARENA_ALIGN 64

struct ArenaBlock {
    ArenaBlock *next;
    int64_t cap, off;
    unsigned char *base; /* aligned start */
};

void arena_init(Arena *a, int64_t block_bytes, int64_t limit_bytes) {
    memset(a, 0, sizeof *a);
    a->block_bytes = block_bytes > 0 ? block_bytes : (64 << 20);
    a->limit_bytes = limit_bytes;
}

void arena_free(Arena *a) {
    ArenaBlock *b = a->first;
    while (b) {
        ArenaBlock *n = b->next;
        free(b);
        b = n;
    }
    memset(a, 0, sizeof *a);
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
        ArenaBlock *b = block_new(cap);
        if (!b) {
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
    return p;
}

void *arena_calloc(Arena *a, int64_t bytes) {
    void *p = arena_alloc(a, bytes);
    if (p) memset(p, 0, (size_t)bytes);
    return p;
}

ArenaMark arena_mark(const Arena *a) {
    ArenaMark m = {a->cur, a->cur ? a->cur->off : 0, a->used};
    return m;
}

void arena_reset_to(Arena *a, ArenaMark m) {
    if (!m.block) {
        arena_reset(a);
        return;
    }
    a->cur = m.block;
    a->cur->off = m.offset;
    a->used = m.used;
}

void arena_reset(Arena *a) {
    a->cur = a->first;
    if (a->cur) a->cur->off = 0;
    a->used = 0;
}

int64_t arena_peak(const Arena *a) { return a->peak; }
int64_t arena_used(const Arena *a) { return a->used; }
