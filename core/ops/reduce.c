/* core/ops/reduce: sum_to / broadcast_to (each the other's gradient), and the scalar
 * reductions sum, mean and mean-square.
 *
 * Gradient rule: += into the input gradient. Scalar reductions sum in fixed blocks of
 * REDUCE_BLOCK elements with double partials, added in block order: the result does not
 * depend on the thread count. */
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

#define REDUCE_BLOCK 8192

static bool shape_reducible(const char *op, const Tensor *x, int32_t ndim, const int64_t *shape) {
    if (ndim > x->ndim) {
        ops_fail(op, "target rank %d exceeds the input's %d", ndim, x->ndim);
        return false;
    }
    for (int i = 0; i < ndim; i++) {
        int64_t xd = x->shape[x->ndim - ndim + i];
        if (shape[i] != xd && shape[i] != 1) {
            char s[96];
            ops_fail(op, "cannot reduce %s to a shape with dim %d = %lld", ops_shape_str(x, s, sizeof s), i,
                     (long long)shape[i]);
            return false;
        }
    }
    return true;
}

/* ---- sum_to ---- */

static Status sum_to_fwd(Ctx *c, Node *n) {
    Tensor *y = &n->out->v;
    memset(y->data, 0, (size_t)tensor_nbytes(y));
    return reduce_sum_to_accum(c, y->data, y->ndim, y->shape, n->in[0]->v.data, n->in[0]->v.ndim,
                               n->in[0]->v.shape);
}

/* dx += broadcast(dy) */
static void broadcast_accum(float *dst, const Tensor *dt, const float *src, const Tensor *stn) {
    int64_t pd[BC_DIMS], ds[BC_DIMS], ps[BC_DIMS], ss[BC_DIMS];
    broadcast_strides(dt, pd, ds);
    broadcast_strides(stn, ps, ss);
    int64_t idx[BC_DIMS] = {0};
    for (int64_t i = 0, m = tensor_numel(dt); i < m; i++) {
        int64_t off = 0;
        for (int d = 0; d < BC_DIMS; d++) off += idx[d] * ss[d];
        dst[i] += src[off];
        for (int k = BC_DIMS - 1; k >= 0; k--) {
            if (++idx[k] < pd[k]) break;
            idx[k] = 0;
        }
    }
}

static Status sum_to_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    broadcast_accum(gx, &n->in[0]->v, n->out->g.data, &n->out->v);
    return ADDC_OK;
}

static Status sum_to_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    Var *x = n->in[0];
    return var_accum_gv(c, x, op_broadcast_to(c, n->out->gv, x->v.ndim, x->v.shape));
}

Var *op_sum_to(Ctx *c, Var *x, int32_t ndim, const int64_t *shape) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("sum_to", "x", x) || !shape_reducible("sum_to", &x->v, ndim, shape)) return NULL;
    Tensor t = tensor_make(NULL, DTYPE_F32, DEVICE_META, ndim, shape);
    if (t.ndim == x->v.ndim && tensor_same_shape(&t, &x->v)) return x; /* nothing to sum */
    Node n = node_make(OP_SUM_TO, 1, &x);
    return op_exec(c, &n, x->v.dtype, ndim, shape);
}

Var *op_mean_to(Ctx *c, Var *x, int32_t ndim, const int64_t *shape) {
    OPS_NULL_GUARD1(x);
    Var *s = op_sum_to(c, x, ndim, shape);
    if (!s) return NULL;
    double cnt = (double)tensor_numel(&x->v) / (double)(tensor_numel(&s->v) ? tensor_numel(&s->v) : 1);
    return op_scale(c, s, 1.0 / cnt, 0.0);
}

const OpImpl cpu_op_sum_to = {sum_to_fwd, sum_to_bwd, sum_to_bwd_graph};

/* ---- broadcast_to ---- */

static Status broadcast_to_fwd(Ctx *c, Node *n) {
    (void)c;
    Tensor *y = &n->out->v;
    memset(y->data, 0, (size_t)tensor_nbytes(y));
    broadcast_accum(y->data, y, n->in[0]->v.data, &n->in[0]->v);
    return ADDC_OK;
}

static Status broadcast_to_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    return reduce_sum_to_accum(c, gx, x->ndim, x->shape, n->out->g.data, n->out->v.ndim, n->out->v.shape);
}

static Status broadcast_to_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    Var *x = n->in[0];
    return var_accum_gv(c, x, op_sum_to(c, n->out->gv, x->v.ndim, x->v.shape));
}

Var *op_broadcast_to(Ctx *c, Var *x, int32_t ndim, const int64_t *shape) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("broadcast_to", "x", x)) return NULL;
    Tensor t = tensor_make(NULL, DTYPE_F32, DEVICE_META, ndim, shape);
    if (!shape_reducible("broadcast_to", &t, x->v.ndim, x->v.shape)) return NULL;
    if (tensor_same_shape(&t, &x->v)) return x;
    Node n = node_make(OP_BROADCAST_TO, 1, &x);
    return op_exec(c, &n, x->v.dtype, ndim, shape);
}

const OpImpl cpu_op_broadcast_to = {broadcast_to_fwd, broadcast_to_bwd, broadcast_to_bwd_graph};

/* ---- scalar reductions ---- */

enum { RED_SUM, RED_MEAN, RED_MEAN_SQUARE };

typedef struct {
    const float *x;
    int64_t n;
    int square;
    double *partial;
} RedJob;

static void red_blocks(void *ctx, int64_t b0, int64_t b1) {
    RedJob *j = ctx;
    for (int64_t b = b0; b < b1; b++) {
        int64_t s = b * REDUCE_BLOCK, e = s + REDUCE_BLOCK < j->n ? s + REDUCE_BLOCK : j->n;
        double t = 0;
        if (j->square)
            for (int64_t i = s; i < e; i++) t += (double)j->x[i] * j->x[i];
        else
            for (int64_t i = s; i < e; i++) t += j->x[i];
        j->partial[b] = t;
    }
}

static Status red_fwd(Ctx *c, Node *n) {
    int64_t m = tensor_numel(&n->in[0]->v);
    int64_t nb = (m + REDUCE_BLOCK - 1) / REDUCE_BLOCK;
    ArenaMark mark = arena_mark(c->arena);
    double *partial = ctx_alloc(c, (nb ? nb : 1) * (int64_t)sizeof(double));
    if (!partial) return addc_error_status();
    RedJob j = {n->in[0]->v.data, m, n->ip[0] == RED_MEAN_SQUARE, partial};
    parallel_for(nb, 1, red_blocks, &j);
    double t = 0;
    for (int64_t b = 0; b < nb; b++) t += partial[b];
    if (n->ip[0] != RED_SUM && m > 0) t /= (double)m;
    arena_reset_to(c->arena, mark);
    *(float *)n->out->v.data = (float)t;
    return ADDC_OK;
}

static Status red_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    int64_t m = tensor_numel(&n->in[0]->v);
    float dy = *(const float *)n->out->g.data;
    const float *x = n->in[0]->v.data;
    switch (n->ip[0]) {
    case RED_SUM:
        for (int64_t i = 0; i < m; i++) gx[i] += dy;
        break;
    case RED_MEAN: {
        float s = dy / (float)m;
        for (int64_t i = 0; i < m; i++) gx[i] += s;
        break;
    }
    default: {
        float s = 2.0f * dy / (float)m;
        for (int64_t i = 0; i < m; i++) gx[i] += s * x[i];
        break;
    }
    }
    return ADDC_OK;
}

static Status red_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    Var *x = n->in[0];
    int64_t m = tensor_numel(&x->v);
    Var *g = op_broadcast_to(c, n->out->gv, x->v.ndim, x->v.shape);
    switch (n->ip[0]) {
    case RED_SUM: break;
    case RED_MEAN: g = op_scale(c, g, 1.0 / (double)m, 0.0); break;
    default: g = op_scale(c, op_mul(c, g, x), 2.0 / (double)m, 0.0); break;
    }
    return var_accum_gv(c, x, g);
}

static Var *red_op(Ctx *c, int op, int kind, Var *x) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float(op_name(op), "x", x)) return NULL;
    if (kind != RED_SUM && tensor_numel(&x->v) == 0) return ops_fail(op_name(op), "mean of an empty tensor");
    Node n = node_make(op, 1, &x);
    n.ip[0] = kind;
    return op_exec(c, &n, DTYPE_F32, 0, NULL);
}

Var *op_sum(Ctx *c, Var *x) { return red_op(c, OP_SUM, RED_SUM, x); }
Var *op_mean(Ctx *c, Var *x) { return red_op(c, OP_MEAN, RED_MEAN, x); }
Var *op_mean_square(Ctx *c, Var *x) { return red_op(c, OP_MEAN_SQUARE, RED_MEAN_SQUARE, x); }

const OpImpl cpu_op_sum = {red_fwd, red_bwd, red_bwd_graph};
const OpImpl cpu_op_mean = {red_fwd, red_bwd, red_bwd_graph};
const OpImpl cpu_op_mean_square = {red_fwd, red_bwd, red_bwd_graph};
