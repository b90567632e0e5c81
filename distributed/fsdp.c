/* distributed/fsdp: fully sharded parameters (see fsdp.h for the contract).
 *
 * Memory. The store's `data` and `grad` become private anonymous mappings with no swap
 * reservation (MAP_NORESERVE): address space whose pages exist only once written. Every
 * Param's Var points into them at its old offset, so views of parameters stay valid and
 * nothing outside this file changes. Releasing a unit is madvise(MADV_DONTNEED) on the whole
 * pages inside its range (they read as zero when touched again); the partial pages at its two
 * ends are shared with the neighbouring units and stay. A released unit's value range is never
 * read: acquire all-gathers it first. A unit's gradient range is all zero unless the unit is
 * "dirty" (gradients written and not yet reduce-scattered): partial end pages are zeroed by hand.
 *
 * Gather: every rank sends its S_u-element shard, the padded N * S_u result lands in
 * gather_buf, and the unit's n_u elements are copied into place. A prefetch is one
 * comm_iallgather into the same buffer; at most one is in flight, and any other gather first
 * waits for it and lands it (so the buffer is free and every rank lands the same units).
 *
 * Reduce: the unit's gradient range is copied into a zero-padded N * S_u buffer,
 * reduce-scattered (sum, in reduce_dtype), divided by N and added into the rank's gradient
 * shard; the range is then zeroed. Doing this early (an eviction) and again later is the same
 * sum, since gradients only accumulate.
 *   The reduce-scatter is non-blocking: it is posted and left in flight while the backward goes on
 * with the next units (on the GPU it runs on the communication stream beside their kernels), and
 * is "landed" (waited for, then its 1/N share added into the gradient shard) only when the next
 * reduce needs the buffers, or at fsdp_grads_flush / fsdp_zero_grad / fsdp_gather_full /
 * fsdp_free. One is in flight at most and they land in the order they were posted, so the
 * gradient shard receives the same additions in the same order as if each had been waited for at
 * once: the bits do not depend on the overlap.
 *
 * Residency. acquire gathers a unit that is not resident, stamps it with a clock that counts
 * acquire calls, and then releases least recently stamped units while more than max_resident
 * are resident, reduce-scattering a dirty one first. Pinning: core/autograd calls acquire for
 * the inputs of one node in turn (at most NODE_MAX_IN calls) right before its kernel, so a unit
 * stamped by one of the last NODE_MAX_IN calls may belong to the node about to run and is never
 * evicted; residency then exceeds max_resident for a moment rather than evict a unit in use.
 * Only gathering raises residency, so the nested ops some kernels run on their (resident)
 * inputs evict nothing.
 *
 * Prefetch. When acquire moves to another unit than the last one, it prefetches the unit that
 * followed this one the last time the walk went the same way (forward, or backward: set for
 * backward kernels and checkpoint recomputes), at first the next unit of the store in
 * declaration order (forward) or the previous one (backward). Networks do not run their units
 * in declaration order (diffusers declares a block's resnets before its attentions, and runs
 * them interleaved), so the order seen in one step is the prediction for the next. A prefetch
 * that turns out not to be needed next is landed like any gather (just outside the pinned
 * window, so it is the last unpinned unit to be evicted).
 *
 * Every decision depends only on the sequence of acquire / grads_done / API calls, which is
 * the same on every rank (they run the same ops), so the collectives match.
 *
 * GPU stores (store->device == DEVICE_CUDA): the same design in device memory. The shards live in
 * cuda_mem_alloc memory (params / grads), the gather and reduce-scatter buffers in category comm,
 * and `data` / `grad` become reserved device address space (cuda_va_reserve) in which memory is
 * mapped in whole granules (cuda_va_map, the allocation granularity, typically 2 MiB). Unit ranges
 * are not granule-aligned and cannot be padded (every Param's Var points at its fixed offset), so
 * each granule carries a reference count: the resident units (values) or dirty units (gradients)
 * that touch it. A unit becoming resident / dirty maps the granules whose count goes 0 -> 1, a
 * unit released / cleaned unmaps those whose count goes back to 0 (cuda_va_unmap waits for the
 * compute stream first, since kernels that read the range may still be queued). A freshly mapped
 * granule's bytes are undefined: a gather writes the unit's own value range whole (the rest of the
 * granule belongs to units that are not resident and is never read), and a freshly mapped
 * gradient granule is zeroed whole, so the invariant of the CPU version holds: in a mapped
 * gradient granule every element outside the dirty units is zero (a cleaned unit zeroes its range).
 *   Copies, zeroing and the 1/N accumulation into the gradient shard (cuda_axpy_f32) are issued
 * on the compute stream; the collectives run through comm on device buffers (NCCL after
 * comm_enable_device), which orders them against the compute stream, so nothing here waits on the
 * host except cuda_va_unmap. On the solo communicator without comm_enable_device the collectives
 * are device copies made here (world 1: the all-gather is the shard, the reduce-scatter the sum
 * itself, rounded through bf16 for a bf16 reduce dtype as comm would). */
#include "distributed/fsdp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/cuda.h"

#define FSDP_WHAT_MAX (PARAM_NAME_MAX + 96)

typedef struct FsdpUnit {
    VarHome home; /* first member: the hooks get &unit->home */
    Fsdp *f;
    int32_t index;
    int64_t offset, numel; /* element range in the store's flat buffers */
    int64_t S;             /* shard length ceil(numel / world) */
    int64_t shard_off;     /* where its shard starts in the rank's shard buffers */
    bool resident;         /* the value range holds the gathered values */
    bool dirty;            /* the gradient range holds gradients not yet reduce-scattered */
    int64_t stamp;         /* Fsdp.clock at its last acquire */
    int32_t next[2];       /* the unit acquired after this one last time, forward [0] / backward [1] */
} FsdpUnit;

struct Fsdp {
    ParamStore *store;
    Comm *comm;
    FsdpOptions opt;
    int rank, world;
    char name[64];
    FsdpUnit *units; /* (n_units) the store's units, same indices */
    int32_t n_units;
    float *map_data, *map_grad; /* (numel) the store's data / grad while wrapped; grad may be NULL */
    size_t map_bytes, page;
    bool dev;                   /* the store is on the GPU: every buffer below is device memory */
    bool local;                 /* dev on the solo communicator without device collectives: copies */
    size_t gran;                /* dev: granule bytes (map_bytes is a multiple) */
    int64_t n_gran;             /* dev: granules of each reservation */
    int32_t *gref_v, *gref_g;   /* (n_gran) dev: resident / dirty units touching each granule */
    size_t shard_bytes, buf_bytes, recv_bytes; /* dev: sizes of the device allocations below */
    float *shard_v, *shard_g;   /* (shard_numel) values, gradients (NULL for a frozen store) */
    int64_t shard_numel, max_S;
    float *gather_buf;          /* (world * max_S) where all-gathers land */
    float *rs_send, *rs_recv;   /* (world * max_S), (max_S) reduce-scatter buffers (trainable) */
    int32_t rs_unit;            /* unit whose reduce-scatter is in flight in rs_send/rs_recv, -1 for none */
    CommRequest *rs_req;
    const float *rs_out;        /* where its S_u summed elements will be (rs_recv, or rs_send when local) */
    int32_t pf_unit;            /* unit being prefetched into gather_buf, -1 for none */
    CommRequest *pf_req;
    int32_t last_unit;          /* unit of the last acquire, -1 at first */
    int32_t n_resident;
    int64_t clock;              /* acquire calls so far */
    int64_t live_bytes;         /* resident values + dirty gradient ranges */
    FsdpMemory mem;
    Status err; /* a failure inside a call that returns nothing; reported by the next acquire */
    char err_msg[256];
    char what[FSDP_WHAT_MAX]; /* the name of the collective being posted */
};

void fsdp_options_default(FsdpOptions *o) {
    o->prefetch = true;
    o->reduce_dtype = COMM_F32;
    o->max_resident = 3;
}

/* ---- pages and bookkeeping ---- */

/* Gives back the whole pages inside elements [off, off + n) of base; with zero_edges the
 * elements on the partial end pages are zeroed, so the whole range then reads 0. */
static void range_release(const Fsdp *f, float *base, int64_t off, int64_t n, bool zero_edges) {
    if (n <= 0) return;
    uintptr_t a = (uintptr_t)(base + off), b = (uintptr_t)(base + off + n);
    uintptr_t pa = (a + f->page - 1) & ~(uintptr_t)(f->page - 1), pb = b & ~(uintptr_t)(f->page - 1);
    if (pb <= pa) {
        if (zero_edges) memset((void *)a, 0, b - a);
        return;
    }
    if (madvise((void *)pa, pb - pa, MADV_DONTNEED) != 0 && zero_edges) memset((void *)pa, 0, pb - pa);
    if (zero_edges) {
        memset((void *)a, 0, pa - a);
        memset((void *)pb, 0, b - pb);
    }
}

static void live_add(Fsdp *f, int64_t bytes) {
    f->live_bytes += bytes;
    if (f->live_bytes > f->mem.resident_peak_bytes) f->mem.resident_peak_bytes = f->live_bytes;
}

/* ---- host or device memory ---- */

static Status mem_copy(const Fsdp *f, void *dst, const void *src, size_t bytes) {
    if (f->dev) return cuda_copy_device(dst, src, bytes);
    if (bytes) memcpy(dst, src, bytes);
    return ADDC_OK;
}

/* Copies between a unit-sized range of f's memory and `full`, which is host memory when full_host
 * (on a GPU store: a copy to or from the host; to the host it waits for the data). */
static Status full_copy(const Fsdp *f, void *dst, const void *src, size_t bytes, bool to_full, bool full_host) {
    if (!f->dev || !full_host) return mem_copy(f, dst, src, bytes);
    return to_full ? cuda_copy_to_host(dst, src, bytes) : cuda_copy_to_device(dst, src, bytes);
}

static Status mem_zero(const Fsdp *f, void *dst, size_t bytes) {
    if (f->dev) return cuda_memset(dst, 0, bytes);
    if (bytes) memset(dst, 0, bytes);
    return ADDC_OK;
}

/* ---- granules of the reserved device space (GPU stores) ---- */

/* Maps the granules of elements [off, off + n) of base that no unit holds yet (zeroing them when
 * `zero_fresh`) and counts this unit in each. */
static Status gran_ref(Fsdp *f, float *base, int32_t *ref, CudaMemCategory cat, int64_t off, int64_t n,
                       bool zero_fresh) {
    if (n <= 0) return ADDC_OK;
    int64_t g0 = (int64_t)((size_t)off * sizeof(float) / f->gran);
    int64_t g1 = (int64_t)(((size_t)(off + n) * sizeof(float) + f->gran - 1) / f->gran);
    for (int64_t g = g0; g < g1; g++) {
        if (ref[g] == 0) {
            char *a = (char *)base + (size_t)g * f->gran;
            TRY(cuda_va_map(a, f->gran, cat));
            f->mem.granules_mapped++;
            if (f->mem.granules_mapped > f->mem.granules_peak) f->mem.granules_peak = f->mem.granules_mapped;
            ref[g]++; /* counted before the zeroing: an error there leaves the mapping accounted */
            if (zero_fresh) TRY(cuda_memset(a, 0, f->gran));
        } else {
            ref[g]++;
        }
    }
    return ADDC_OK;
}

/* The inverse: uncounts the unit and unmaps the granules no unit holds any more. */
static Status gran_unref(Fsdp *f, float *base, int32_t *ref, CudaMemCategory cat, int64_t off, int64_t n) {
    if (n <= 0) return ADDC_OK;
    int64_t g0 = (int64_t)((size_t)off * sizeof(float) / f->gran);
    int64_t g1 = (int64_t)(((size_t)(off + n) * sizeof(float) + f->gran - 1) / f->gran);
    for (int64_t g = g0; g < g1; g++) {
        if (ref[g] <= 0)
            return addc_error_set(ADDC_ERR_INVALID, "fsdp %s: granule %lld released more often than mapped", f->name,
                                  (long long)g);
        if (--ref[g] == 0) {
            TRY(cuda_va_unmap((char *)base + (size_t)g * f->gran, f->gran, cat));
            f->mem.granules_mapped--;
        }
    }
    return ADDC_OK;
}

/* Unmaps every granule still mapped (fsdp_free), whatever holds it. */
static Status gran_unmap_all(Fsdp *f, float *base, int32_t *ref, CudaMemCategory cat) {
    Status st = ADDC_OK;
    for (int64_t g = 0; base && ref && g < f->n_gran; g++) {
        if (ref[g] <= 0) continue;
        ref[g] = 0;
        Status s1 = cuda_va_unmap((char *)base + (size_t)g * f->gran, f->gran, cat);
        if (s1 == ADDC_OK) f->mem.granules_mapped--;
        else if (st == ADDC_OK) st = s1;
    }
    return st;
}

/* ---- collectives (device copies on the solo communicator without device collectives) ---- */

static Status coll_allgather(Fsdp *f, const float *send, float *recv, int64_t count, const char *what) {
    if (f->local) return cuda_copy_device(recv, send, (size_t)count * sizeof(float));
    return comm_allgather(f->comm, send, recv, count, COMM_F32, what);
}

static Status coll_iallgather(Fsdp *f, const float *send, float *recv, int64_t count, const char *what,
                              CommRequest **req) {
    if (f->local) {
        *req = NULL; /* comm_wait(NULL) is a no-op; the copy is ordered on the compute stream */
        return cuda_copy_device(recv, send, (size_t)count * sizeof(float));
    }
    return comm_iallgather(f->comm, send, recv, count, COMM_F32, what, req);
}

/* Posts the reduce-scatter of rs_send (world * S); *out: where this rank's S summed elements will
 * be once *req has completed (comm_wait; NULL when it already has). */
static Status coll_ireduce_scatter(Fsdp *f, int64_t S, const char *what, const float **out, CommRequest **req) {
    *req = NULL;
    if (!f->local) {
        TRY(comm_ireduce_scatter(f->comm, f->rs_send, f->rs_recv, S, f->opt.reduce_dtype, COMM_SUM, what, req));
        *out = f->rs_recv;
        return ADDC_OK;
    }
    if (f->opt.reduce_dtype == COMM_BF16) { /* bf16 on the wire: rs_recv (4 S bytes) holds the 2 S */
        TRY(cuda_convert(f->rs_recv, DTYPE_BF16, f->rs_send, DTYPE_F32, S));
        TRY(cuda_convert(f->rs_send, DTYPE_F32, f->rs_recv, DTYPE_BF16, S));
    }
    *out = f->rs_send;
    return ADDC_OK;
}

static const char *unit_what(Fsdp *f, char *buf, const char *kind, const FsdpUnit *u) {
    const char *un = f->store->units[u->index].name;
    if (un[0]) snprintf(buf, FSDP_WHAT_MAX, "fsdp %s %s:%s", kind, f->name, un);
    else snprintf(buf, FSDP_WHAT_MAX, "fsdp %s %s:unit %d", kind, f->name, u->index);
    return buf;
}

static Status fsdp_failed(Fsdp *f, Status st) {
    if (f->err == ADDC_OK) {
        f->err = st;
        snprintf(f->err_msg, sizeof f->err_msg, "%s", addc_error_message());
    }
    return st;
}

/* ---- gather ---- */

/* gather_buf holds unit u's gathered values: copy them into place (mapped first on the GPU). */
static Status unit_land(Fsdp *f, FsdpUnit *u) {
    if (f->dev) TRY(gran_ref(f, f->map_data, f->gref_v, CUDA_MEM_PARAMS, u->offset, u->numel, false));
    Status st = mem_copy(f, f->map_data + u->offset, f->gather_buf, (size_t)u->numel * sizeof(float));
    if (st != ADDC_OK) {
        if (f->dev) gran_unref(f, f->map_data, f->gref_v, CUDA_MEM_PARAMS, u->offset, u->numel);
        return st;
    }
    u->resident = true;
    f->n_resident++;
    live_add(f, u->numel * (int64_t)sizeof(float));
    f->mem.gathers++;
    f->mem.bytes_gathered += (int64_t)f->world * u->S * (int64_t)sizeof(float);
    return ADDC_OK;
}

/* Waits for the prefetch in flight, if any, and lands it. */
static Status prefetch_finish(Fsdp *f) {
    if (f->pf_unit < 0) return ADDC_OK;
    FsdpUnit *u = &f->units[f->pf_unit];
    CommRequest *r = f->pf_req;
    f->pf_unit = -1;
    f->pf_req = NULL;
    TRY(comm_wait(f->comm, r));
    TRY(unit_land(f, u)); /* a unit being prefetched is never gathered meanwhile */
    f->mem.prefetched++;
    u->stamp = f->clock - NODE_MAX_IN; /* its acquire (if it is being acquired) restamps it */
    return ADDC_OK;
}

static Status prefetch_start(Fsdp *f, FsdpUnit *u) {
    if (!u || !f->opt.prefetch || f->pf_unit >= 0 || u->resident) return ADDC_OK;
    TRY(coll_iallgather(f, f->shard_v + u->shard_off, f->gather_buf, u->S, unit_what(f, f->what, "prefetch", u),
                        &f->pf_req));
    f->pf_unit = u->index;
    return ADDC_OK;
}

static Status unit_gather(Fsdp *f, FsdpUnit *u) {
    TRY(prefetch_finish(f));
    if (u->resident) return ADDC_OK; /* it was the prefetched one */
    TRY(coll_allgather(f, f->shard_v + u->shard_off, f->gather_buf, u->S, unit_what(f, f->what, "gather", u)));
    return unit_land(f, u);
}

/* ---- reduce and release ---- */

static Status unit_drop_values(Fsdp *f, FsdpUnit *u) {
    if (!u->resident) return ADDC_OK;
    u->resident = false;
    f->n_resident--;
    f->live_bytes -= u->numel * (int64_t)sizeof(float);
    if (f->dev) return gran_unref(f, f->map_data, f->gref_v, CUDA_MEM_PARAMS, u->offset, u->numel);
    range_release(f, f->map_data, u->offset, u->numel, false);
    return ADDC_OK;
}

/* Marks a unit's gradient range as written from now on (mapped, reading zero, on the GPU). */
static Status unit_dirty(Fsdp *f, FsdpUnit *u) {
    if (u->dirty || !f->map_grad) return ADDC_OK;
    if (f->dev) TRY(gran_ref(f, f->map_grad, f->gref_g, CUDA_MEM_GRADS, u->offset, u->numel, true));
    u->dirty = true;
    live_add(f, u->numel * (int64_t)sizeof(float));
    return ADDC_OK;
}

static Status unit_clear_grads(Fsdp *f, FsdpUnit *u) {
    if (!u->dirty) return ADDC_OK;
    u->dirty = false;
    f->live_bytes -= u->numel * (int64_t)sizeof(float);
    if (f->dev) { /* zero for the granules a neighbour keeps mapped */
        TRY(cuda_memset(f->map_grad + u->offset, 0, (size_t)u->numel * sizeof(float)));
        return gran_unref(f, f->map_grad, f->gref_g, CUDA_MEM_GRADS, u->offset, u->numel);
    }
    range_release(f, f->map_grad, u->offset, u->numel, true);
    return ADDC_OK;
}

/* Lands the reduce-scatter in flight, if any: waits for it and adds its 1/N share into the
 * gradient shard (see "Reduce" at the top). */
static Status reduce_land(Fsdp *f) {
    if (f->rs_unit < 0) return ADDC_OK;
    int32_t unit = f->rs_unit;
    CommRequest *r = f->rs_req;
    f->rs_unit = -1;
    f->rs_req = NULL;
    TRY(comm_wait(f->comm, r));
    int64_t off, first, len;
    fsdp_shard_range(f, unit, &off, &first, &len);
    float *dst = f->shard_g + off;
    const float *red = f->rs_out;
    const float world = (float)f->world;
    if (f->dev) { /* x * (1/N): the same as x / N for a power-of-two world, exact at world 1 */
        TRY(cuda_axpy_f32(dst, red, len, 1.0f / world));
    } else {
        for (int64_t i = 0; i < len; i++) dst[i] += red[i] / world;
    }
    return ADDC_OK;
}

/* Posts the reduce-scatter of a dirty unit's gradient range (landing the one before it first) and
 * zeroes the range; the sum reaches the gradient shard when it lands. */
static Status unit_reduce(Fsdp *f, FsdpUnit *u) {
    if (!u->dirty) return ADDC_OK;
    TRY(reduce_land(f)); /* rs_send / rs_recv are free afterwards */
    int64_t padded = (int64_t)f->world * u->S;
    TRY(mem_copy(f, f->rs_send, f->map_grad + u->offset, (size_t)u->numel * sizeof(float)));
    TRY(mem_zero(f, f->rs_send + u->numel, (size_t)(padded - u->numel) * sizeof(float)));
    TRY(coll_ireduce_scatter(f, u->S, unit_what(f, f->what, "reduce-scatter", u), &f->rs_out, &f->rs_req));
    f->rs_unit = u->index;
    f->mem.reduce_scatters++;
    f->mem.bytes_reduced += padded * (f->opt.reduce_dtype == COMM_BF16 ? 2 : 4);
    return unit_clear_grads(f, u); /* the collective reads rs_send, not the range */
}

/* Reduces pending gradients, then releases the values. */
static Status unit_retire(Fsdp *f, FsdpUnit *u) {
    TRY(unit_reduce(f, u));
    return unit_drop_values(f, u);
}

static Status evict(Fsdp *f) {
    while (f->n_resident > f->opt.max_resident) {
        FsdpUnit *lru = NULL;
        for (int32_t i = 0; i < f->n_units; i++) {
            FsdpUnit *u = &f->units[i];
            if (!u->resident || f->clock - u->stamp < NODE_MAX_IN) continue; /* pinned: see top */
            if (!lru || u->stamp < lru->stamp) lru = u;
        }
        if (!lru) break;
        TRY(unit_retire(f, lru));
    }
    return ADDC_OK;
}

/* ---- the hooks ---- */

/* The nearest unit with elements before (step -1) or after (step +1) unit i, or -1. */
static int32_t unit_neighbour(const Fsdp *f, int32_t i, int step) {
    for (i += step; i >= 0 && i < f->n_units; i += step)
        if (f->units[i].numel > 0) return i;
    return -1;
}

static Status fsdp_home_acquire(VarHome *h, bool backward) {
    FsdpUnit *u = (FsdpUnit *)h;
    Fsdp *f = u->f;
    if (f->err != ADDC_OK) return addc_error_set(f->err, "fsdp %s: an earlier failure: %s", f->name, f->err_msg);
    f->clock++;
    bool gathered = !u->resident;
    if (gathered) TRY(unit_gather(f, u));
    u->stamp = f->clock;
    if (backward) TRY(unit_dirty(f, u));
    if (gathered) TRY(evict(f));
    if (u->index != f->last_unit) {
        if (f->last_unit >= 0) f->units[f->last_unit].next[backward] = u->index;
        int32_t nx = u->next[backward];
        TRY(prefetch_start(f, nx >= 0 ? &f->units[nx] : NULL));
        f->last_unit = u->index;
    }
    return ADDC_OK;
}

static Status fsdp_home_grads_done(VarHome *h) {
    FsdpUnit *u = (FsdpUnit *)h;
    return unit_retire(u->f, u);
}

/* ---- wrap and free ---- */

/* FNV-1a over the values' 32-bit patterns. */
static uint64_t values_checksum(const float *d, int64_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, d + i, sizeof b);
        h = (h ^ b) * 0x100000001b3ull;
    }
    return h;
}

/* Frees everything f holds and f itself; the first failure (GPU) is left set. */
static void fsdp_release_buffers(Fsdp *f) {
    if (f->dev) {
        Status st = ADDC_OK, s1;
#define KEEP(call) (s1 = (call), st = st == ADDC_OK ? s1 : st)
        KEEP(gran_unmap_all(f, f->map_data, f->gref_v, CUDA_MEM_PARAMS));
        KEEP(gran_unmap_all(f, f->map_grad, f->gref_g, CUDA_MEM_GRADS));
        KEEP(cuda_va_free(f->map_data, f->map_bytes));
        KEEP(cuda_va_free(f->map_grad, f->map_bytes));
        KEEP(cuda_mem_free(CUDA_MEM_PARAMS, f->shard_v, f->shard_bytes));
        KEEP(cuda_mem_free(CUDA_MEM_GRADS, f->shard_g, f->shard_bytes));
        KEEP(cuda_mem_free(CUDA_MEM_COMM, f->gather_buf, f->buf_bytes));
        KEEP(cuda_mem_free(CUDA_MEM_COMM, f->rs_send, f->buf_bytes));
        KEEP(cuda_mem_free(CUDA_MEM_COMM, f->rs_recv, f->recv_bytes));
#undef KEEP
        if (st != ADDC_OK) addc_error_context(st, "fsdp: freeing the device buffers of store '%s'", f->name);
        free(f->gref_v);
        free(f->gref_g);
    } else {
        if (f->map_data) munmap(f->map_data, f->map_bytes);
        if (f->map_grad) munmap(f->map_grad, f->map_bytes);
        free(f->shard_v);
        free(f->shard_g);
        free(f->gather_buf);
        free(f->rs_send);
        free(f->rs_recv);
    }
    free(f->units);
    free(f);
}

static float *map_reserve(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* GPU store: the device buffers (shards zeroed) and the two reservations with their granule counts. */
static Status fsdp_alloc_device(Fsdp *f, bool trainable) {
    const ParamStore *store = f->store;
    f->shard_bytes = (size_t)(f->shard_numel ? f->shard_numel : 1) * sizeof(float);
    f->buf_bytes = (size_t)(f->max_S ? f->max_S : 1) * (size_t)f->world * sizeof(float);
    f->recv_bytes = (size_t)(f->max_S ? f->max_S : 1) * sizeof(float);
    size_t bytes = (size_t)(store->numel ? store->numel : 1) * sizeof(float);
    TRY(cuda_mem_alloc(CUDA_MEM_PARAMS, (void **)&f->shard_v, f->shard_bytes));
    TRY(cuda_mem_alloc(CUDA_MEM_COMM, (void **)&f->gather_buf, f->buf_bytes));
    void *base = NULL;
    TRY(cuda_va_reserve(&base, bytes, &f->gran));
    f->map_data = base;
    f->map_bytes = (bytes + f->gran - 1) / f->gran * f->gran; /* as cuda_va_reserve rounded it */
    if (trainable) {
        TRY(cuda_mem_alloc(CUDA_MEM_GRADS, (void **)&f->shard_g, f->shard_bytes));
        TRY(cuda_mem_alloc(CUDA_MEM_COMM, (void **)&f->rs_send, f->buf_bytes));
        TRY(cuda_mem_alloc(CUDA_MEM_COMM, (void **)&f->rs_recv, f->recv_bytes));
        TRY(cuda_va_reserve(&base, bytes, NULL));
        f->map_grad = base;
        TRY(cuda_memset(f->shard_g, 0, f->shard_bytes));
    }
    f->n_gran = (int64_t)(f->map_bytes / f->gran);
    f->mem.granule_bytes = (int64_t)f->gran;
    f->gref_v = calloc((size_t)f->n_gran, sizeof *f->gref_v);
    if (trainable) f->gref_g = calloc((size_t)f->n_gran, sizeof *f->gref_g);
    if (!f->gref_v || (trainable && !f->gref_g))
        return addc_error_set(ADDC_ERR_NOMEM, "fsdp: out of memory for the granule counts of store '%s'", f->name);
    return ADDC_OK;
}

/* This rank's shard of `full` (host memory when full_host, else f's memory). */
static Status scatter_full(const Fsdp *f, const float *full, float *shard, bool full_host) {
    for (int32_t i = 0; i < f->n_units; i++) {
        const FsdpUnit *u = &f->units[i];
        int64_t off, first, len;
        fsdp_shard_range(f, i, &off, &first, &len);
        TRY(full_copy(f, shard + off, full + u->offset + first, (size_t)len * sizeof(float), false, full_host));
        TRY(mem_zero(f, shard + off + len, (size_t)(u->S - len) * sizeof(float)));
    }
    return ADDC_OK;
}

Status fsdp_wrap(Fsdp **out, ParamStore *store, Comm *comm, const FsdpOptions *o, const char *name) {
    *out = NULL;
    FsdpOptions opt;
    if (o) opt = *o;
    else fsdp_options_default(&opt);
    if (!name) name = "";
    const bool dev = store->device == DEVICE_CUDA;
    if (!store->allocated || (store->device != DEVICE_CPU && !dev) || !store->data)
        return addc_error_set(ADDC_ERR_INVALID,
                              "fsdp: store '%s' must be allocated on the CPU or the GPU to be sharded (it is on %s%s)",
                              name, device_name(store->device), store->allocated ? "" : ", not allocated");
    if (dev && comm_is_mpi(comm) && !comm_device_enabled(comm))
        return addc_error_set(ADDC_ERR_INVALID,
                              "fsdp: store '%s' is on the GPU but the communicator has no device collectives: call "
                              "comm_enable_device(comm, local_device) on every rank before fsdp_wrap",
                              name);
    if (opt.max_resident < 2)
        return addc_error_set(ADDC_ERR_INVALID, "fsdp: store '%s': max_resident is %d, it must be at least 2", name,
                              (int)opt.max_resident);
    if (opt.reduce_dtype != COMM_F32 && opt.reduce_dtype != COMM_BF16)
        return addc_error_set(ADDC_ERR_INVALID, "fsdp: store '%s': the gradient reduce dtype must be f32 or bf16",
                              name);
    for (int32_t i = 0; i < store->n; i++)
        if (param_store_get(store, i)->var.home)
            return addc_error_set(ADDC_ERR_INVALID, "fsdp: store '%s' is already sharded", name);

    /* every rank must start from the same values (on the GPU: the same sum of squares, bitwise) */
    uint64_t sum[2];
    if (dev) {
        double ss = 0;
        TRY(cuda_sum_squares(store->data, store->numel, &ss));
        memcpy(&sum[0], &ss, sizeof ss);
    } else {
        sum[0] = values_checksum(store->data, store->numel);
    }
    sum[1] = ~sum[0];
    char what[FSDP_WHAT_MAX];
    snprintf(what, sizeof what, "fsdp checksum %s", name);
    TRY(comm_allreduce(comm, sum, sum, 2, COMM_U64, COMM_MAX, what));
    if (sum[0] != ~sum[1])
        return addc_error_set(ADDC_ERR_INVALID,
                              "fsdp: the values of store '%s' differ between ranks; every rank must load or "
                              "initialise the same weights (same file, same seed) before sharding",
                              name);

    Fsdp *f = calloc(1, sizeof *f);
    if (!f) return addc_error_set(ADDC_ERR_NOMEM, "fsdp: out of memory for store '%s'", name);
    f->store = store;
    f->comm = comm;
    f->opt = opt;
    f->rank = comm_rank(comm);
    f->world = comm_size(comm);
    f->dev = dev;
    f->local = dev && !comm_device_enabled(comm); /* the solo communicator (MPI ones refused above) */
    snprintf(f->name, sizeof f->name, "%s", name);
    f->pf_unit = -1;
    f->rs_unit = -1;
    f->last_unit = -1;
    f->page = (size_t)sysconf(_SC_PAGESIZE);
    f->n_units = store->n_units;
    f->units = calloc((size_t)(f->n_units ? f->n_units : 1), sizeof *f->units);
    if (!f->units) {
        fsdp_release_buffers(f);
        return addc_error_set(ADDC_ERR_NOMEM, "fsdp: out of memory for store '%s'", name);
    }
    for (int32_t i = 0; i < f->n_units; i++) {
        FsdpUnit *u = &f->units[i];
        u->home.acquire = fsdp_home_acquire;
        u->home.grads_done = fsdp_home_grads_done;
        u->home.walk_last = -1;
        u->f = f;
        u->index = i;
        u->offset = store->units[i].offset;
        u->numel = store->units[i].numel;
        u->S = (u->numel + f->world - 1) / f->world;
        u->shard_off = f->shard_numel;
        f->shard_numel += u->S;
        if (u->S > f->max_S) f->max_S = u->S;
    }
    for (int32_t i = 0; i < f->n_units; i++) {
        f->units[i].next[0] = unit_neighbour(f, i, 1);
        f->units[i].next[1] = unit_neighbour(f, i, -1);
    }
    bool trainable = store->grad != NULL;
    size_t shard_bytes = (size_t)(f->shard_numel ? f->shard_numel : 1) * sizeof(float);
    size_t store_bytes = (size_t)(store->numel ? store->numel : 1) * sizeof(float);
    if (dev) {
        Status st = fsdp_alloc_device(f, trainable);
        /* this rank's shard straight from the store's device buffer */
        if (st == ADDC_OK) st = scatter_full(f, store->data, f->shard_v, false);
        if (st == ADDC_OK) st = cuda_synchronize(); /* the copies are done before the buffers go */
        if (st != ADDC_OK) {
            fsdp_release_buffers(f);
            return addc_error_context(st, "fsdp: sharding store '%s' on the GPU (%.1f MiB of shards per rank)", name,
                                      (double)shard_bytes * (trainable ? 2 : 1) / 1048576.0);
        }
        cuda_mem_free(CUDA_MEM_PARAMS, store->data, store_bytes); /* the sizes param_store_to_device used */
        if (store->grad) cuda_mem_free(CUDA_MEM_GRADS, store->grad, store_bytes);
    } else {
        size_t buf_bytes = (size_t)(f->max_S ? f->max_S : 1) * (size_t)f->world * sizeof(float);
        f->map_bytes = ((store_bytes + f->page - 1) / f->page) * f->page;
        f->shard_v = calloc(1, shard_bytes);
        f->gather_buf = malloc(buf_bytes);
        f->map_data = map_reserve(f->map_bytes);
        if (trainable) {
            f->shard_g = calloc(1, shard_bytes);
            f->rs_send = malloc(buf_bytes);
            f->rs_recv = malloc((size_t)(f->max_S ? f->max_S : 1) * sizeof(float));
            f->map_grad = map_reserve(f->map_bytes);
        }
        if (!f->shard_v || !f->gather_buf || !f->map_data ||
            (trainable && (!f->shard_g || !f->rs_send || !f->rs_recv || !f->map_grad))) {
            fsdp_release_buffers(f);
            return addc_error_set(ADDC_ERR_NOMEM,
                                  "fsdp: cannot allocate the shards of store '%s' (%.1f MiB per rank)", name,
                                  (double)shard_bytes * (trainable ? 2 : 1) / 1048576.0);
        }
        /* values into the mapping, this rank's shard out of it; the gradients start at zero */
        memcpy(f->map_data, store->data, (size_t)store->numel * sizeof(float));
        scatter_full(f, f->map_data, f->shard_v, false);
        free(store->data);
        free(store->grad);
    }
    f->mem.shard_bytes = f->shard_numel * (int64_t)sizeof(float) * (trainable ? 2 : 1);
    store->data = f->map_data;
    store->grad = f->map_grad;
    for (int32_t i = 0; i < store->n; i++) {
        Param *p = param_store_get(store, i);
        p->var.v.data = f->map_data + p->offset;
        p->var.g.data = f->map_grad ? f->map_grad + p->offset : NULL;
        p->var.home = &f->units[p->unit].home;
    }
    if (!dev) madvise(f->map_data, f->map_bytes, MADV_DONTNEED); /* nothing is resident */
    *out = f;
    return ADDC_OK;
}

void fsdp_free(Fsdp *f) {
    if (!f) return;
    ParamStore *s = f->store;
    if (prefetch_finish(f) != ADDC_OK) fsdp_failed(f, addc_error_status());
    if (reduce_land(f) != ADDC_OK) fsdp_failed(f, addc_error_status());
    size_t bytes = (size_t)(s->numel ? s->numel : 1) * sizeof(float);
    float *data = NULL, *grad = NULL;
    bool ok;
    if (f->dev) {
        ok = cuda_mem_alloc(CUDA_MEM_PARAMS, (void **)&data, bytes) == ADDC_OK &&
             cuda_memset(data, 0, bytes) == ADDC_OK &&
             (!f->map_grad || (cuda_mem_alloc(CUDA_MEM_GRADS, (void **)&grad, bytes) == ADDC_OK &&
                               cuda_memset(grad, 0, bytes) == ADDC_OK));
        if (!ok) {
            addc_error_context(addc_error_status(), "fsdp: unsharding store '%s' on the GPU; its values are lost",
                               f->name);
            cuda_mem_free(CUDA_MEM_PARAMS, data, bytes);
            cuda_mem_free(CUDA_MEM_GRADS, grad, bytes);
            data = grad = NULL;
        }
    } else {
        data = calloc(1, bytes);
        grad = f->map_grad ? calloc(1, bytes) : NULL;
        ok = data && (!f->map_grad || grad);
        if (!ok) {
            addc_error_set(ADDC_ERR_NOMEM,
                           "fsdp: cannot allocate %.1f MiB to unshard store '%s'; its values are lost",
                           (double)bytes / 1048576.0, f->name);
            free(data);
            free(grad);
            data = grad = NULL;
        }
    }
    if (ok) {
        if (fsdp_gather_full(f, f->shard_v, data) != ADDC_OK ||
            (grad && fsdp_gather_full(f, f->shard_g, grad) != ADDC_OK))
            addc_error_context(addc_error_status(), "fsdp: unsharding store '%s'", f->name);
    }
    s->data = data;
    s->grad = grad;
    for (int32_t i = 0; i < s->n; i++) {
        Param *p = param_store_get(s, i);
        p->var.v.data = data ? data + p->offset : NULL;
        p->var.g.data = grad ? grad + p->offset : NULL;
        p->var.home = NULL;
    }
    fsdp_release_buffers(f); /* unmapping waits for the gathers above */
}

/* ---- shards ---- */

int64_t fsdp_shard_numel(const Fsdp *f) { return f->shard_numel; }
float *fsdp_shard_values(Fsdp *f) { return f->shard_v; }
float *fsdp_shard_grads(Fsdp *f) { return f->shard_g; }

void fsdp_shard_range(const Fsdp *f, int32_t unit, int64_t *off, int64_t *first, int64_t *len) {
    const FsdpUnit *u = &f->units[unit];
    int64_t a = (int64_t)f->rank * u->S, n = u->numel - a;
    *off = u->shard_off;
    *first = a < u->numel ? a : u->numel;
    *len = n <= 0 ? 0 : n < u->S ? n : u->S;
}

Status fsdp_grads_flush(Fsdp *f) {
    TRY(prefetch_finish(f)); /* afterwards nothing is in flight: shard values may change */
    for (int32_t i = 0; i < f->n_units; i++)
        if (f->units[i].dirty) TRY(unit_retire(f, &f->units[i]));
    return reduce_land(f);
}

void fsdp_zero_grad(Fsdp *f) {
    if (!f->shard_g) return;
    if (reduce_land(f) != ADDC_OK) fsdp_failed(f, addc_error_status()); /* its sum is zeroed with the rest */
    if (mem_zero(f, f->shard_g, (size_t)f->shard_numel * sizeof(float)) != ADDC_OK) fsdp_failed(f, addc_error_status());
    for (int32_t i = 0; i < f->n_units; i++)
        if (unit_clear_grads(f, &f->units[i]) != ADDC_OK) fsdp_failed(f, addc_error_status());
}

void fsdp_invalidate(Fsdp *f) {
    if (prefetch_finish(f) != ADDC_OK) fsdp_failed(f, addc_error_status());
    for (int32_t i = 0; i < f->n_units; i++) {
        FsdpUnit *u = &f->units[i];
        if (u->resident) {
            if (unit_drop_values(f, u) != ADDC_OK) fsdp_failed(f, addc_error_status());
        } else if (!f->dev) {
            range_release(f, f->map_data, u->offset, u->numel, false); /* pages written around the units */
        }
    }
}

/* Every unit of `shard` all-gathered into `full` (host memory when full_host), unit by unit. */
static Status gather_full(Fsdp *f, const float *shard, float *full, bool full_host) {
    TRY(prefetch_finish(f)); /* gather_buf is needed */
    TRY(reduce_land(f));     /* `shard` may be the gradient shard */
    for (int32_t i = 0; i < f->n_units; i++) {
        const FsdpUnit *u = &f->units[i];
        if (u->S == 0) continue;
        TRY(coll_allgather(f, shard + u->shard_off, f->gather_buf, u->S, unit_what(f, f->what, "gather full", u)));
        TRY(full_copy(f, full + u->offset, f->gather_buf, (size_t)u->numel * sizeof(float), true, full_host));
    }
    return ADDC_OK;
}

Status fsdp_gather_full(Fsdp *f, const float *shard, float *full) { return gather_full(f, shard, full, false); }

Status fsdp_gather_full_host(Fsdp *f, const float *shard, float *full) { return gather_full(f, shard, full, true); }

Status fsdp_scatter_full_host(Fsdp *f, const float *full, float *shard) {
    TRY(scatter_full(f, full, shard, true));
    return f->dev ? cuda_synchronize() : ADDC_OK; /* `full` may be freed once this returns */
}

void fsdp_scatter_full(const Fsdp *f, const float *full, float *shard) {
    if (scatter_full(f, full, shard, false) != ADDC_OK) fsdp_failed((Fsdp *)f, addc_error_status()); /* f is not const */
}

FsdpMemory fsdp_memory(const Fsdp *f) { return f->mem; }
