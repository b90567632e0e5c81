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
 * the same on every rank (they run the same ops), so the collectives match. */
#include "distributed/fsdp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
    float *shard_v, *shard_g;   /* (shard_numel) values, gradients (NULL for a frozen store) */
    int64_t shard_numel, max_S;
    float *gather_buf;          /* (world * max_S) where all-gathers land */
    float *rs_send, *rs_recv;   /* (world * max_S), (max_S) reduce-scatter buffers (trainable) */
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

/* gather_buf holds unit u's gathered values: copy them into place. */
static void unit_land(Fsdp *f, FsdpUnit *u) {
    memcpy(f->map_data + u->offset, f->gather_buf, (size_t)u->numel * sizeof(float));
    u->resident = true;
    f->n_resident++;
    live_add(f, u->numel * (int64_t)sizeof(float));
    f->mem.gathers++;
    f->mem.bytes_gathered += (int64_t)f->world * u->S * (int64_t)sizeof(float);
}

/* Waits for the prefetch in flight, if any, and lands it. */
static Status prefetch_finish(Fsdp *f) {
    if (f->pf_unit < 0) return ADDC_OK;
    FsdpUnit *u = &f->units[f->pf_unit];
    CommRequest *r = f->pf_req;
    f->pf_unit = -1;
    f->pf_req = NULL;
    TRY(comm_wait(f->comm, r));
    unit_land(f, u); /* a unit being prefetched is never gathered meanwhile */
    f->mem.prefetched++;
    u->stamp = f->clock - NODE_MAX_IN; /* its acquire (if it is being acquired) restamps it */
    return ADDC_OK;
}

static Status prefetch_start(Fsdp *f, FsdpUnit *u) {
    if (!u || !f->opt.prefetch || f->pf_unit >= 0 || u->resident) return ADDC_OK;
    TRY(comm_iallgather(f->comm, f->shard_v + u->shard_off, f->gather_buf, u->S, COMM_F32,
                        unit_what(f, f->what, "prefetch", u), &f->pf_req));
    f->pf_unit = u->index;
    return ADDC_OK;
}

static Status unit_gather(Fsdp *f, FsdpUnit *u) {
    TRY(prefetch_finish(f));
    if (u->resident) return ADDC_OK; /* it was the prefetched one */
    TRY(comm_allgather(f->comm, f->shard_v + u->shard_off, f->gather_buf, u->S, COMM_F32,
                       unit_what(f, f->what, "gather", u)));
    unit_land(f, u);
    return ADDC_OK;
}

/* ---- reduce and release ---- */

static void unit_drop_values(Fsdp *f, FsdpUnit *u) {
    if (!u->resident) return;
    range_release(f, f->map_data, u->offset, u->numel, false);
    u->resident = false;
    f->n_resident--;
    f->live_bytes -= u->numel * (int64_t)sizeof(float);
}

static void unit_clear_grads(Fsdp *f, FsdpUnit *u) {
    if (!u->dirty) return;
    range_release(f, f->map_grad, u->offset, u->numel, true);
    u->dirty = false;
    f->live_bytes -= u->numel * (int64_t)sizeof(float);
}

/* Reduce-scatters a dirty unit's gradient range into the gradient shard and zeroes the range. */
static Status unit_reduce(Fsdp *f, FsdpUnit *u) {
    if (!u->dirty) return ADDC_OK;
    int64_t padded = (int64_t)f->world * u->S;
    memcpy(f->rs_send, f->map_grad + u->offset, (size_t)u->numel * sizeof(float));
    memset(f->rs_send + u->numel, 0, (size_t)(padded - u->numel) * sizeof(float));
    TRY(comm_reduce_scatter(f->comm, f->rs_send, f->rs_recv, u->S, f->opt.reduce_dtype, COMM_SUM,
                            unit_what(f, f->what, "reduce-scatter", u)));
    int64_t off, first, len;
    fsdp_shard_range(f, u->index, &off, &first, &len);
    float *dst = f->shard_g + off;
    const float world = (float)f->world;
    for (int64_t i = 0; i < len; i++) dst[i] += f->rs_recv[i] / world;
    f->mem.reduce_scatters++;
    f->mem.bytes_reduced += padded * (f->opt.reduce_dtype == COMM_BF16 ? 2 : 4);
    unit_clear_grads(f, u);
    return ADDC_OK;
}

/* Reduces pending gradients, then releases the values. */
static Status unit_retire(Fsdp *f, FsdpUnit *u) {
    TRY(unit_reduce(f, u));
    unit_drop_values(f, u);
    return ADDC_OK;
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
    if (backward && f->map_grad && !u->dirty) {
        u->dirty = true;
        live_add(f, u->numel * (int64_t)sizeof(float));
    }
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

static void fsdp_release_buffers(Fsdp *f) {
    if (f->map_data) munmap(f->map_data, f->map_bytes);
    if (f->map_grad) munmap(f->map_grad, f->map_bytes);
    free(f->units);
    free(f->shard_v);
    free(f->shard_g);
    free(f->gather_buf);
    free(f->rs_send);
    free(f->rs_recv);
    free(f);
}

static float *map_reserve(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

Status fsdp_wrap(Fsdp **out, ParamStore *store, Comm *comm, const FsdpOptions *o, const char *name) {
    *out = NULL;
    FsdpOptions opt;
    if (o) opt = *o;
    else fsdp_options_default(&opt);
    if (!name) name = "";
    if (!store->allocated || store->device != DEVICE_CPU || !store->data)
        return addc_error_set(ADDC_ERR_INVALID, "fsdp: store '%s' must be allocated on the CPU to be sharded", name);
    if (opt.max_resident < 2)
        return addc_error_set(ADDC_ERR_INVALID, "fsdp: store '%s': max_resident is %d, it must be at least 2", name,
                              (int)opt.max_resident);
    if (opt.reduce_dtype != COMM_F32 && opt.reduce_dtype != COMM_BF16)
        return addc_error_set(ADDC_ERR_INVALID, "fsdp: store '%s': the gradient reduce dtype must be f32 or bf16",
                              name);
    for (int32_t i = 0; i < store->n; i++)
        if (param_store_get(store, i)->var.home)
            return addc_error_set(ADDC_ERR_INVALID, "fsdp: store '%s' is already sharded", name);

    /* every rank must start from the same values */
    uint64_t sum[2];
    sum[0] = values_checksum(store->data, store->numel);
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
    snprintf(f->name, sizeof f->name, "%s", name);
    f->pf_unit = -1;
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
    size_t buf_bytes = (size_t)(f->max_S ? f->max_S : 1) * (size_t)f->world * sizeof(float);
    f->map_bytes = (((size_t)(store->numel ? store->numel : 1) * sizeof(float) + f->page - 1) / f->page) * f->page;
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
        return addc_error_set(ADDC_ERR_NOMEM, "fsdp: cannot allocate the shards of store '%s' (%.1f MiB per rank)",
                              name, (double)shard_bytes * (trainable ? 2 : 1) / 1048576.0);
    }
    f->mem.shard_bytes = f->shard_numel * (int64_t)sizeof(float) * (trainable ? 2 : 1);

    /* values into the mapping, this rank's shard out of it; the gradients start at zero */
    memcpy(f->map_data, store->data, (size_t)store->numel * sizeof(float));
    fsdp_scatter_full(f, f->map_data, f->shard_v);
    free(store->data);
    free(store->grad);
    store->data = f->map_data;
    store->grad = f->map_grad;
    for (int32_t i = 0; i < store->n; i++) {
        Param *p = param_store_get(store, i);
        p->var.v.data = f->map_data + p->offset;
        p->var.g.data = f->map_grad ? f->map_grad + p->offset : NULL;
        p->var.home = &f->units[p->unit].home;
    }
    madvise(f->map_data, f->map_bytes, MADV_DONTNEED); /* nothing is resident */
    *out = f;
    return ADDC_OK;
}

void fsdp_free(Fsdp *f) {
    if (!f) return;
    ParamStore *s = f->store;
    if (prefetch_finish(f) != ADDC_OK) fsdp_failed(f, addc_error_status());
    size_t bytes = (size_t)(s->numel ? s->numel : 1) * sizeof(float);
    float *data = calloc(1, bytes), *grad = f->map_grad ? calloc(1, bytes) : NULL;
    if (!data || (f->map_grad && !grad)) {
        addc_error_set(ADDC_ERR_NOMEM, "fsdp: cannot allocate %.1f MiB to unshard store '%s'; its values are lost",
                       (double)bytes / 1048576.0, f->name);
        free(data);
        free(grad);
        data = grad = NULL;
    } else {
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
    fsdp_release_buffers(f);
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
    return ADDC_OK;
}

void fsdp_zero_grad(Fsdp *f) {
    if (!f->shard_g) return;
    memset(f->shard_g, 0, (size_t)f->shard_numel * sizeof(float));
    for (int32_t i = 0; i < f->n_units; i++) unit_clear_grads(f, &f->units[i]);
}

void fsdp_invalidate(Fsdp *f) {
    if (prefetch_finish(f) != ADDC_OK) fsdp_failed(f, addc_error_status());
    for (int32_t i = 0; i < f->n_units; i++) {
        FsdpUnit *u = &f->units[i];
        if (u->resident) unit_drop_values(f, u);
        else range_release(f, f->map_data, u->offset, u->numel, false); /* pages written around the units */
    }
}

Status fsdp_gather_full(Fsdp *f, const float *shard, float *full) {
    TRY(prefetch_finish(f)); /* gather_buf is needed */
    for (int32_t i = 0; i < f->n_units; i++) {
        const FsdpUnit *u = &f->units[i];
        if (u->S == 0) continue;
        TRY(comm_allgather(f->comm, shard + u->shard_off, f->gather_buf, u->S, COMM_F32,
                           unit_what(f, f->what, "gather full", u)));
        memcpy(full + u->offset, f->gather_buf, (size_t)u->numel * sizeof(float));
    }
    return ADDC_OK;
}

void fsdp_scatter_full(const Fsdp *f, const float *full, float *shard) {
    for (int32_t i = 0; i < f->n_units; i++) {
        const FsdpUnit *u = &f->units[i];
        int64_t off, first, len;
        fsdp_shard_range(f, i, &off, &first, &len);
        memcpy(shard + off, full + u->offset + first, (size_t)len * sizeof(float));
        memset(shard + off + len, 0, (size_t)(u->S - len) * sizeof(float));
    }
}

FsdpMemory fsdp_memory(const Fsdp *f) { return f->mem; }
