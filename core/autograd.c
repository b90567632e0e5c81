/* core/autograd: tape, backward walks and checkpointed regions (see autograd.h).
 * Gradient rule: every backward kernel accumulates (+=) into its inputs' Var.g. */
#include "core/autograd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "core/ops.h"
#include "core/profile.h"

#define REGION_MAX_DEPTH 16

void tape_init(Tape *t) { memset(t, 0, sizeof *t); }
void tape_free(Tape *t) {
    free(t->nodes);
    memset(t, 0, sizeof *t);
}
void tape_clear(Tape *t) {
    t->n = 0;
    t->has_homes = 0;
}

static Status tape_push(Tape *t, const Node *n, int32_t *idx) {
    if (t->n == t->cap) {
        int32_t cap = t->cap ? t->cap * 2 : 256;
        Node *nn = realloc(t->nodes, (size_t)cap * sizeof(Node));
        if (!nn) return addc_error_set(ADDC_ERR_NOMEM, "tape: cannot grow to %d nodes", cap);
        t->nodes = nn;
        t->cap = cap;
    }
    t->nodes[t->n] = *n;
    *idx = t->n++;
    return ADDC_OK;
}

Ctx ctx_make(Arena *arena, Tape *tape, Device dev) {
    Ctx c;
    memset(&c, 0, sizeof c);
    c.arena = arena;
    c.tape = tape;
    c.device = dev;
    return c;
}

void *ctx_alloc(Ctx *c, int64_t bytes) { return arena_alloc(c->arena, bytes); }

void *ctx_dev_alloc(Ctx *c, int64_t bytes) {
    if (!c->arena->dev) {
        addc_error_set(ADDC_ERR_INVALID, "a CUDA tensor was asked for but the step arena has no device "
                                         "companion (arena_attach_device)");
        return NULL;
    }
    return arena_alloc(c->arena->dev, bytes);
}

/* Tensor storage on dev: the host arena, or its device companion. */
static void *data_alloc(Ctx *c, Device dev, int64_t bytes) {
    return dev == DEVICE_CUDA ? ctx_dev_alloc(c, bytes) : arena_alloc(c->arena, bytes);
}

static Status data_zero(void *p, Device dev, int64_t bytes) {
    if (dev == DEVICE_CUDA) return cuda_memset(p, 0, (size_t)bytes);
    memset(p, 0, (size_t)bytes);
    return ADDC_OK;
}

Tensor ctx_tensor(Ctx *c, DType dt, int32_t ndim, const int64_t *shape) {
    Tensor t = tensor_make(NULL, dt, c->device, ndim, shape);
    if (c->device != DEVICE_META) t.data = data_alloc(c, c->device, tensor_nbytes(&t));
    return t;
}

static Var *var_new_on(Ctx *c, Device dev, DType dt, int32_t ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS) {
        addc_error_set(ADDC_ERR_INVALID, "tensor rank %d is outside 0..%d", ndim, TENSOR_MAX_DIMS);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            addc_error_set(ADDC_ERR_INVALID, "negative dimension %lld", (long long)shape[i]);
            return NULL;
        }
    Var *v = arena_alloc(c->arena, sizeof(Var));
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->v = tensor_make(NULL, dt, dev, ndim, shape);
    v->node = -1;
    if (dev != DEVICE_META) {
        v->v.data = data_alloc(c, dev, tensor_nbytes(&v->v));
        if (!v->v.data) return NULL;
    }
    v->g = tensor_make(NULL, DTYPE_F32, dev, ndim, shape);
    return v;
}

Var *var_new(Ctx *c, DType dt, int32_t ndim, const int64_t *shape) {
    return var_new_on(c, c->device, dt, ndim, shape);
}

Var *var_zeros(Ctx *c, DType dt, int32_t ndim, const int64_t *shape) {
    Var *v = var_new(c, dt, ndim, shape);
    if (v && v->v.data && data_zero(v->v.data, v->v.device, tensor_nbytes(&v->v)) != ADDC_OK) return NULL;
    return v;
}

Var *var_leaf(Ctx *c, Tensor value, bool requires_grad) {
    Var *v = arena_alloc(c->arena, sizeof(Var));
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->v = value;
    v->node = -1;
    v->requires_grad = requires_grad;
    v->g = tensor_make(NULL, DTYPE_F32, value.device, value.ndim, value.shape);
    return v;
}

Var *var_from_host(Ctx *c, DType dt, int32_t ndim, const int64_t *shape, const void *host) {
    Var *v = var_new(c, dt, ndim, shape);
    if (!v || !v->v.data) return v;
    size_t bytes = (size_t)tensor_nbytes(&v->v);
    if (v->v.device == DEVICE_CUDA) {
        if (cuda_copy_to_device(v->v.data, host, bytes) != ADDC_OK || cuda_synchronize() != ADDC_OK) return NULL;
    } else if (bytes) {
        memcpy(v->v.data, host, bytes);
    }
    return v;
}

Var *var_to_device(Ctx *c, Var *x, Device dev) {
    if (!x || x->v.device == dev) return x;
    if (x->v.device == DEVICE_META || dev == DEVICE_META) {
        addc_error_set(ADDC_ERR_INVALID, "var_to_device: %s -> %s", device_name(x->v.device), device_name(dev));
        return NULL;
    }
    Ctx on = *c;
    on.device = dev;
    Var *y = var_new(&on, x->v.dtype, x->v.ndim, x->v.shape);
    if (!y) return NULL;
    size_t bytes = (size_t)tensor_nbytes(&x->v);
    Status st = dev == DEVICE_CUDA ? cuda_copy_to_device(y->v.data, x->v.data, bytes)
                                   : cuda_copy_to_host(y->v.data, x->v.data, bytes);
    if (st == ADDC_OK && dev == DEVICE_CUDA) st = cuda_synchronize(); /* x's host storage may be released next */
    return st == ADDC_OK ? y : NULL;
}

Status var_download_f32(const Var *x, float *host) {
    int64_t n = tensor_numel(&x->v);
    if (x->v.device == DEVICE_META || (!x->v.data && n > 0))
        return addc_error_set(ADDC_ERR_INVALID, "var_download_f32: a tensor without data (%s)", device_name(x->v.device));
    if (x->v.device != DEVICE_CUDA) {
        dtype_convert(host, DTYPE_F32, x->v.data, x->v.dtype, n);
        return ADDC_OK;
    }
    if (x->v.dtype == DTYPE_F32) return cuda_copy_to_host(host, x->v.data, (size_t)n * 4);
    size_t bytes = (size_t)tensor_nbytes(&x->v);
    void *staged = malloc(bytes ? bytes : 1);
    if (!staged) return addc_error_set(ADDC_ERR_NOMEM, "var_download_f32: %zu bytes", bytes);
    Status st = cuda_copy_to_host(staged, x->v.data, bytes);
    if (st == ADDC_OK) dtype_convert(host, DTYPE_F32, staged, x->v.dtype, n);
    free(staged);
    return st;
}

double var_scalar(const Var *x) {
    if (!x) return NAN;
    if (x->v.device != DEVICE_CUDA) {
        float f;
        dtype_convert(&f, DTYPE_F32, x->v.data, x->v.dtype, 1);
        return f;
    }
    float f = NAN;
    unsigned char raw[8];
    if (cuda_copy_to_host(raw, x->v.data, dtype_size(x->v.dtype)) != ADDC_OK) return NAN;
    dtype_convert(&f, DTYPE_F32, raw, x->v.dtype, 1);
    return f;
}

void var_init_param(Var *p, Tensor value, Tensor grad, bool requires_grad, const char *name) {
    memset(p, 0, sizeof *p);
    p->v = value;
    p->g = grad;
    p->g.dtype = DTYPE_F32;
    p->g.ndim = value.ndim;
    memcpy(p->g.shape, value.shape, sizeof p->g.shape);
    p->node = -1;
    p->requires_grad = requires_grad;
    p->name = name;
}

float *var_grad_f32(Ctx *c, Var *v) {
    if (v->g.data) return (float *)v->g.data;
    if (v->v.device == DEVICE_META) return NULL;
    if (c->recomputing > 0 && v->tape != c->region_tape) {
        addc_error_set(ADDC_ERR_INVALID,
                       "checkpointed region: %s%s%s comes from outside the region and has no "
                       "gradient buffer; pass it as a region input or give it a persistent "
                       "gradient buffer",
                       v->name ? "'" : "a variable", v->name ? v->name : "", v->name ? "'" : "");
        return NULL;
    }
    v->g = tensor_make(NULL, DTYPE_F32, v->v.device, v->v.ndim, v->v.shape);
    int64_t bytes = tensor_numel(&v->v) * 4;
    v->g.data = data_alloc(c, v->v.device, bytes);
    if (v->g.data && data_zero(v->g.data, v->v.device, bytes) != ADDC_OK) v->g.data = NULL;
    return (float *)v->g.data;
}

Status var_accum_gv(Ctx *c, Var *v, Var *contrib) {
    if (!contrib) return addc_error_status() ? addc_error_status() : ADDC_ERR_INVALID;
    if (!tensor_same_shape(&v->v, &contrib->v)) {
        char a[96], b[96];
        return addc_error_set(ADDC_ERR_INVALID, "create-graph gradient shape %s does not match %s",
                              tensor_shape_str(&contrib->v, b, sizeof b),
                              tensor_shape_str(&v->v, a, sizeof a));
    }
    if (!v->gv) {
        v->gv = contrib;
        return ADDC_OK;
    }
    Var *s = op_add(c, v->gv, contrib);
    if (!s) return addc_error_status();
    v->gv = s;
    return ADDC_OK;
}

Node node_make(int op, int n_in, Var *const *in) {
    Node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.n_in = n_in;
    for (int i = 0; i < n_in; i++) n.in[i] = in[i];
    return n;
}

/* Calls acquire of every input's home (see VarHome), naming the op on failure. */
static Status node_homes_acquire(const Node *n, bool backward) {
    for (int i = 0; i < n->n_in; i++) {
        VarHome *h = n->in[i] ? n->in[i]->home : NULL;
        if (!h) continue;
        Status st = h->acquire(h, backward);
        if (st != ADDC_OK) return addc_error_context(st, "%s: making a sharded parameter resident", op_name(n->op));
    }
    return ADDC_OK;
}

Var *op_exec(Ctx *c, Node *n, DType out_dt, int32_t out_ndim, const int64_t *out_shape) {
    Device dev = c->device;
    int have_dev = 0, record = 0, homes = 0;
    for (int i = 0; i < n->n_in; i++) {
        Var *x = n->in[i];
        if (!x) continue;
        if (!have_dev) {
            dev = x->v.device;
            have_dev = 1;
        } else if (x->v.device != dev) {
            addc_error_set(ADDC_ERR_INVALID, "%s: inputs on different devices (%s and %s)",
                           op_name(n->op), device_name(dev), device_name(x->v.device));
            return NULL;
        }
        if (x->requires_grad) record = 1;
        if (x->home) homes = 1;
    }
    record = record && c->tape != NULL;
    n->save = (uint8_t)record;
    Var *y = var_new_on(c, dev, out_dt, out_ndim, out_shape);
    if (!y) return NULL;
    n->out = y;
    c->flops += op_node_flops(n);
    c->out_bytes += tensor_nbytes(&y->v);
    if (dev != DEVICE_META) {
        const Backend *be = backend_for(dev);
        if (!be) return NULL;
        const OpImpl *impl = be->ops[n->op];
        if (!impl || !impl->fwd) {
            addc_error_set(ADDC_ERR_UNSUPPORTED, "op %s has no %s kernel", op_name(n->op), be->name);
            return NULL;
        }
        /* a recompute is part of a backward walk: its units are about to get gradients */
        if (homes && node_homes_acquire(n, c->recomputing > 0) != ADDC_OK) return NULL;
        double t0 = profile_enabled() ? profile_now() : 0;
        Status st = impl->fwd(c, n);
        if (t0 > 0) profile_add(n, false, profile_now() - t0);
        if (st != ADDC_OK) {
            addc_error_context(st, "%s forward", op_name(n->op));
            return NULL;
        }
    }
    if (record) {
        int32_t idx;
        if (tape_push(c->tape, n, &idx) != ADDC_OK) return NULL;
        c->tape->has_homes |= (uint8_t)homes;
        y->tape = c->tape;
        y->node = idx;
        y->requires_grad = 1;
    }
    return y;
}

/* ---- checkpointed regions ---- */

static _Thread_local Tape region_tapes[REGION_MAX_DEPTH];

Var *op_checkpoint(Ctx *c, RegionFn fn, void *user, Var *const *in, int n_in) {
    for (int i = 0; i < n_in; i++)
        if (!in[i]) return NULL;
    if (n_in > NODE_MAX_IN) {
        addc_error_set(ADDC_ERR_INVALID, "checkpoint: %d region inputs, at most %d", n_in, NODE_MAX_IN);
        return NULL;
    }
    ArenaMark mark = arena_mark(c->arena);
    Ctx inner = *c;
    inner.tape = NULL; /* forward saves nothing inside the region */
    Var *y = fn(&inner, in, n_in, user);
    c->flops = inner.flops;
    c->out_bytes = inner.out_bytes;
    if (!y) return NULL;
    bool is_input = false;
    for (int i = 0; i < n_in; i++) is_input |= y == in[i];
    if (!is_input) y = var_compact(c, mark, y);
    if (!y || !c->tape) return y;
    Node n = node_make(OP_CHECKPOINT, n_in, in);
    n.region = fn;
    n.pp[0] = user;
    n.out = y;
    int32_t idx;
    if (tape_push(c->tape, &n, &idx) != ADDC_OK) return NULL;
    for (int i = 0; i < n_in; i++) c->tape->has_homes |= (uint8_t)(in[i]->home != NULL);
    y->tape = c->tape;
    y->node = idx;
    y->requires_grad = 1;
    return y;
}

Var *var_compact(Ctx *c, ArenaMark m, Var *y) {
    if (!y) return NULL;
    Var keep = *y;
    int64_t nbytes = keep.v.data ? tensor_nbytes(&keep.v) : 0;
    arena_reset_to(c->arena, m);
    /* data first: it lands at or below its old place (same block order), so memmove is safe */
    Device dev = keep.v.device;
    void *d = keep.v.data ? data_alloc(c, dev, nbytes) : NULL;
    if (keep.v.data && !d) return NULL;
    if (d && dev == DEVICE_CUDA) {
        /* a new block may come first in a device arena as in a host one: below or elsewhere */
        Status st = (char *)d <= (char *)keep.v.data ? cuda_move_down(d, keep.v.data, (size_t)nbytes)
                                                     : cuda_copy_device(d, keep.v.data, (size_t)nbytes);
        if (st != ADDC_OK) return NULL;
    } else if (d) {
        memmove(d, keep.v.data, (size_t)nbytes);
    }
    Var *v = arena_alloc(c->arena, sizeof(Var));
    if (!v) return NULL;
    *v = keep;
    v->v.data = d;
    return v;
}

static Status backward_walk(Ctx *c, Tape *t, int32_t from);

static Status checkpoint_backward(Ctx *c, const Node *n) {
    int depth = c->recomputing;
    if (depth >= REGION_MAX_DEPTH)
        return addc_error_set(ADDC_ERR_INVALID, "checkpointed regions nested deeper than %d",
                              REGION_MAX_DEPTH);
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i]->requires_grad && !var_grad_f32(c, n->in[i])) return addc_error_status();
    ArenaMark mark = arena_mark(c->arena);
    Tape *local = &region_tapes[depth];
    tape_clear(local);
    Ctx lc = *c;
    lc.tape = local;
    lc.recomputing = depth + 1;
    lc.region_tape = local;
    Var *y = n->region(&lc, n->in, n->n_in, n->pp[0]);
    if (!y) return addc_error_context(addc_error_status(), "checkpoint recompute");
    if (!tensor_same_shape(&y->v, &n->out->v))
        return addc_error_set(ADDC_ERR_INVALID, "checkpoint recompute gave another shape");
    Status st = ADDC_OK;
    if (y->requires_grad && y->tape == local && y->node >= 0) {
        y->g = n->out->g; /* the incoming gradient seeds the local walk */
        lc.tape = NULL;
        st = backward_walk(&lc, local, y->node);
    }
    tape_clear(local);
    arena_reset_to(c->arena, mark);
    return st;
}

/* ---- plain backward ---- */

/* One home whose last reader among the walked nodes is `node` (see VarHome.grads_done). */
typedef struct HomeLast {
    int32_t node;
    VarHome *home;
} HomeLast;

/* The homes read by nodes [0, from] of t, each with its lowest reading node, ascending by node;
 * *n_out of them (0 and NULL when the tape reads no home). Kept in the walk's own list, so a
 * nested walk (a checkpoint recompute) reusing walk_last cannot disturb it. */
static HomeLast *walk_homes_plan(Ctx *c, const Tape *t, int32_t from, int32_t *n_out) {
    *n_out = 0;
    if (!t->has_homes) return NULL;
    for (int32_t i = from; i >= 0; i--) /* descending: the lowest reader is written last */
        for (int j = 0; j < t->nodes[i].n_in; j++) {
            const Var *x = t->nodes[i].in[j];
            if (x && x->home) x->home->walk_last = i;
        }
    int32_t n = 0;
    for (int32_t i = 0; i <= from; i++) /* count each home once, marking it -(i + 2) */
        for (int j = 0; j < t->nodes[i].n_in; j++) {
            const Var *x = t->nodes[i].in[j];
            if (x && x->home && x->home->walk_last == i) {
                x->home->walk_last = -(i + 2);
                n++;
            }
        }
    HomeLast *plan = arena_alloc(c->arena, (int64_t)sizeof(HomeLast) * (n ? n : 1));
    if (!plan) return NULL;
    int32_t k = 0;
    for (int32_t i = 0; i <= from; i++)
        for (int j = 0; j < t->nodes[i].n_in; j++) {
            const Var *x = t->nodes[i].in[j];
            if (x && x->home && x->home->walk_last == -(i + 2)) {
                x->home->walk_last = -1;
                plan[k++] = (HomeLast){i, x->home};
            }
        }
    *n_out = n;
    return plan;
}

static Status backward_node(Ctx *c, const Node *n) {
    if (!n->out->g.data) return ADDC_OK;
    if (n->op == OP_CHECKPOINT) { /* the recompute acquires what it reads */
        Status st = checkpoint_backward(c, n);
        n->out->g.data = NULL;
        return st;
    }
    const Backend *be = backend_for(n->out->v.device);
    if (!be) return addc_error_status();
    const OpImpl *impl = be->ops[n->op];
    if (!impl || !impl->bwd)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "op %s has no %s backward", op_name(n->op), be->name);
    TRY(node_homes_acquire(n, true));
    double t0 = profile_enabled() ? profile_now() : 0;
    Status st = impl->bwd(c, (Node *)n);
    if (t0 > 0) profile_add(n, true, profile_now() - t0);
    if (st != ADDC_OK) addc_error_context(st, "%s backward", op_name(n->op));
    n->out->g.data = NULL; /* consumed: a later backward on this tape starts from zero */
    return st;
}

static Status backward_walk(Ctx *c, Tape *t, int32_t from) {
    int32_t n_last = 0;
    HomeLast *last = walk_homes_plan(c, t, from, &n_last);
    if (t->has_homes && !last) return addc_error_status();
    Tape *saved = c->tape;
    c->tape = NULL; /* kernels may call ops for scratch work; nothing is recorded */
    Status st = ADDC_OK;
    for (int32_t i = from, k = n_last - 1; i >= 0 && st == ADDC_OK; i--) {
        st = backward_node(c, &t->nodes[i]);
        for (; st == ADDC_OK && k >= 0 && last[k].node == i; k--) {
            st = last[k].home->grads_done(last[k].home);
            if (st != ADDC_OK) addc_error_context(st, "backward: reducing sharded gradients");
        }
    }
    c->tape = saved;
    return st;
}

Status tape_backward_seed(Ctx *c, Var *y, const Tensor *dy) {
    if (!y) return addc_error_status() ? addc_error_status() : ADDC_ERR_INVALID;
    if (y->v.device == DEVICE_META) return ADDC_OK;
    if (!y->requires_grad) return ADDC_OK; /* nothing upstream needs a gradient */
    if (dy->dtype != DTYPE_F32 || tensor_numel(dy) != tensor_numel(&y->v))
        return addc_error_set(ADDC_ERR_INVALID, "backward seed must be f32 with y's %lld elements",
                              (long long)tensor_numel(&y->v));
    float *g = var_grad_f32(c, y);
    if (!g) return addc_error_status();
    const float *d = dy->data;
    if (y->v.device == DEVICE_CUDA) {
        int64_t n = tensor_numel(dy);
        if (dy->device != DEVICE_CUDA) { /* a host seed (the loss's 1): staged on the device */
            float *staged = ctx_dev_alloc(c, n * 4);
            if (!staged) return addc_error_status();
            TRY(cuda_copy_to_device(staged, d, (size_t)n * 4));
            TRY(cuda_synchronize()); /* the host buffer may be a local */
            d = staged;
        }
        if (g != d) TRY(cuda_axpy_f32(g, d, n, 1.0f));
    } else if (g != d) {
        for (int64_t i = 0, n = tensor_numel(dy); i < n; i++) g[i] += d[i];
    }
    if (!y->tape || y->node < 0) return ADDC_OK; /* a leaf */
    return backward_walk(c, y->tape, y->node);
}

Status tape_backward(Ctx *c, Var *loss) {
    if (!loss) return addc_error_status() ? addc_error_status() : ADDC_ERR_INVALID;
    if (tensor_numel(&loss->v) != 1)
        return addc_error_set(ADDC_ERR_INVALID, "tape_backward needs a one-element loss, got %lld elements",
                              (long long)tensor_numel(&loss->v));
    float one = 1.0f;
    Tensor seed = tensor_make(&one, DTYPE_F32, DEVICE_CPU, 0, NULL);
    return tape_backward_seed(c, loss, &seed);
}

/* ---- create-graph / functional gradients ---- */

static int is_wrt(const Var *v, Var *const *wrt, int n) {
    for (int k = 0; k < n; k++)
        if (wrt[k] == v) return 1;
    return 0;
}

Status autograd_grad(Ctx *c, Var *y, Var *dy, Var *const *wrt, int n, Var **grads, bool create_graph) {
    if (!y) return addc_error_status() ? addc_error_status() : ADDC_ERR_INVALID;
    for (int k = 0; k < n; k++) grads[k] = NULL;
    if (create_graph && !c->tape)
        return addc_error_set(ADDC_ERR_INVALID, "autograd_grad(create_graph) needs a tape to record on");
    if (!y->tape || y->node < 0) {
        for (int k = 0; k < n; k++)
            if (wrt[k] == y) grads[k] = dy;
        return ADDC_OK;
    }
    if (create_graph && c->tape != y->tape)
        return addc_error_set(ADDC_ERR_INVALID, "autograd_grad: y was recorded on another tape");
    Tape *t = y->tape;
    int32_t top = y->node;
    uint8_t *dep = arena_calloc(c->arena, top + 1);
    Var **touched = arena_alloc(c->arena, (int64_t)sizeof(Var *) * ((top + 1) * (NODE_MAX_IN + 1) + 1));
    if (!dep || !touched) return addc_error_status();
    int64_t ntouched = 0;
    for (int32_t i = 0; i <= top; i++) {
        const Node *nd = &t->nodes[i];
        for (int j = 0; j < nd->n_in; j++) {
            const Var *x = nd->in[j];
            if (!x) continue;
            if (is_wrt(x, wrt, n) || (x->tape == t && x->node >= 0 && x->node < i && dep[x->node])) dep[i] = 1;
        }
    }
    if (!dep[top]) return ADDC_OK; /* no path from wrt to y */
    Var *seed = dy;
    if (!seed) {
        Ctx sc = *c;
        sc.tape = NULL;
        seed = var_new(&sc, DTYPE_F32, y->v.ndim, y->v.shape);
        if (!seed) return addc_error_status();
        if (seed->v.data)
            for (int64_t i = 0, m = tensor_numel(&seed->v); i < m; i++) ((float *)seed->v.data)[i] = 1.0f;
    }
    y->gv = seed;
    touched[ntouched++] = y;
    Ctx gc = *c;
    if (!create_graph) gc.tape = NULL;
    Status st = ADDC_OK;
    for (int32_t i = top; i >= 0 && st == ADDC_OK; i--) {
        if (!dep[i]) continue;
        Node nd = t->nodes[i]; /* a copy: recording may move t->nodes */
        if (!nd.out->gv) continue;
        if (nd.op == OP_CHECKPOINT) {
            st = addc_error_set(ADDC_ERR_UNSUPPORTED,
                                "autograd_grad cannot pass through a checkpointed region");
            break;
        }
        const Backend *be = backend_for(nd.out->v.device);
        const OpImpl *impl = be ? be->ops[nd.op] : NULL;
        if (!impl || !impl->bwd_graph) {
            st = addc_error_set(ADDC_ERR_UNSUPPORTED, "op %s has no create-graph backward",
                                op_name(nd.op));
            break;
        }
        for (int j = 0; j < nd.n_in; j++) {
            Var *x = nd.in[j];
            if (!x) continue;
            x->want_gv = (uint8_t)(is_wrt(x, wrt, n) || (x->tape == t && x->node >= 0 && dep[x->node]));
            touched[ntouched++] = x;
        }
        st = node_homes_acquire(&nd, false); /* reads values; writes no Var.g */
        if (st == ADDC_OK) st = impl->bwd_graph(&gc, &nd);
        if (st != ADDC_OK) addc_error_context(st, "%s create-graph backward", op_name(nd.op));
        for (int j = 0; j < nd.n_in; j++)
            if (nd.in[j]) nd.in[j]->want_gv = 0;
    }
    if (st == ADDC_OK)
        for (int k = 0; k < n; k++) grads[k] = wrt[k]->gv;
    for (int64_t i = 0; i < ntouched; i++) touched[i]->gv = NULL;
    return st;
}
