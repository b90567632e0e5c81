/* core/ops/elementwise: add, sub, mul, div with numpy broadcasting; scale (alpha x + beta),
 * rsqrt (x + eps)^-1/2 and cast.
 *
 * Gradient rule: each input's gradient is ACCUMULATED (+=): the upstream gradient times the
 * local derivative, summed over the dims the input was broadcast along (reduce_sum_to_accum).
 * The create-graph backward (add, sub, mul, div, scale) builds the same expressions from ops. */
#include <math.h>
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV };

/* ---- forward: out = a (op) b over a broadcast plan ---- */

typedef struct {
    const float *a, *b;
    float *y;
    int kind;
    Broadcast bc;
    int64_t inner; /* length of the innermost output dim */
} BinJob;

static inline float bin_apply(int kind, float x, float z) {
    switch (kind) {
    case BIN_ADD: return x + z;
    case BIN_SUB: return x - z;
    case BIN_MUL: return x * z;
    default: return x / z;
    }
}

/* element offsets into a and b of the first element of output row r (rows of the
 * innermost output dim) */
static inline void bc_row_offsets(const Broadcast *bc, int64_t r, int64_t *oa, int64_t *ob) {
    int64_t rem = r;
    *oa = *ob = 0;
    for (int d = BC_DIMS - 2; d >= 0; d--) {
        int64_t i = rem % bc->out[d];
        rem /= bc->out[d];
        *oa += i * bc->sa[d];
        *ob += i * bc->sb[d];
    }
}

/* rows of the innermost output dim in [r0, r1) */
static void bin_rows(void *ctx, int64_t r0, int64_t r1) {
    BinJob *j = ctx;
    const Broadcast *bc = &j->bc;
    int64_t inner = j->inner, sai = bc->sa[BC_DIMS - 1], sbi = bc->sb[BC_DIMS - 1];
    for (int64_t r = r0; r < r1; r++) {
        int64_t oa, ob;
        bc_row_offsets(bc, r, &oa, &ob);
        const float *pa = j->a + oa, *pb = j->b + ob;
        float *py = j->y + r * inner;
        if (sai && sbi) {
            switch (j->kind) {
            case BIN_ADD: for (int64_t k = 0; k < inner; k++) py[k] = pa[k] + pb[k]; break;
            case BIN_SUB: for (int64_t k = 0; k < inner; k++) py[k] = pa[k] - pb[k]; break;
            case BIN_MUL: for (int64_t k = 0; k < inner; k++) py[k] = pa[k] * pb[k]; break;
            default: for (int64_t k = 0; k < inner; k++) py[k] = pa[k] / pb[k]; break;
            }
        } else {
            for (int64_t k = 0; k < inner; k++) py[k] = bin_apply(j->kind, pa[k * sai], pb[k * sbi]);
        }
    }
}

static Status bin_fwd(Ctx *c, Node *n) {
    (void)c;
    BinJob j;
    j.a = n->in[0]->v.data;
    j.b = n->in[1]->v.data;
    j.y = n->out->v.data;
    j.kind = (int)n->ip[0];
    if (!broadcast_plan(op_name(n->op), &n->in[0]->v, &n->in[1]->v, &j.bc)) return addc_error_status();
    j.inner = j.bc.out[BC_DIMS - 1];
    int64_t rows = j.inner ? tensor_numel(&n->out->v) / j.inner : 0;
    parallel_for(rows, (16384 + j.inner - 1) / (j.inner ? j.inner : 1), bin_rows, &j);
    return ADDC_OK;
}

static Var *bin_op(Ctx *c, int op, int kind, Var *a, Var *b) {
    OPS_NULL_GUARD2(a, b);
    const char *name = op_name(op);
    if (!ops_require_same_float(name, a, b)) return NULL;
    Broadcast bc;
    if (!broadcast_plan(name, &a->v, &b->v, &bc)) return NULL;
    Var *in[2] = {a, b};
    Node n = node_make(op, 2, in);
    n.ip[0] = kind;
    return op_exec(c, &n, a->v.dtype, bc.ndim, bc.shape);
}

Var *op_add(Ctx *c, Var *a, Var *b) { return bin_op(c, OP_ADD, BIN_ADD, a, b); }
Var *op_sub(Ctx *c, Var *a, Var *b) { return bin_op(c, OP_SUB, BIN_SUB, a, b); }
Var *op_mul(Ctx *c, Var *a, Var *b) { return bin_op(c, OP_MUL, BIN_MUL, a, b); }
Var *op_div(Ctx *c, Var *a, Var *b) { return bin_op(c, OP_DIV, BIN_DIV, a, b); }

/* ---- backward ---- */

/* Local contribution for input `which`, row by row of the innermost output dim, added into
 * dst: the input's gradient itself when it has the output's shape, else a zeroed
 * output-shaped scratch. Rows run in parallel; each row touches only its own output positions. */
typedef struct {
    const float *a, *b, *dy;
    float *dst;
    int kind, which;
    Broadcast bc;
    int64_t inner;
} BinBwdJob;

static void bin_bwd_rows(void *ctx, int64_t r0, int64_t r1) {
    BinBwdJob *j = ctx;
    const Broadcast *bc = &j->bc;
    int64_t inner = j->inner, sai = bc->sa[BC_DIMS - 1], sbi = bc->sb[BC_DIMS - 1];
    for (int64_t r = r0; r < r1; r++) {
        int64_t oa, ob;
        bc_row_offsets(bc, r, &oa, &ob);
        const float *pa = j->a + oa, *pb = j->b + ob, *dy = j->dy + r * inner;
        float *o = j->dst + r * inner;
        switch (j->kind * 2 + j->which) {
        case BIN_ADD * 2 + 0:
        case BIN_ADD * 2 + 1:
        case BIN_SUB * 2 + 0:
            for (int64_t k = 0; k < inner; k++) o[k] = o[k] + dy[k];
            break;
        case BIN_SUB * 2 + 1:
            for (int64_t k = 0; k < inner; k++) o[k] = o[k] - dy[k];
            break;
        case BIN_MUL * 2 + 0:
            for (int64_t k = 0; k < inner; k++) o[k] = o[k] + dy[k] * pb[k * sbi];
            break;
        case BIN_MUL * 2 + 1:
            for (int64_t k = 0; k < inner; k++) o[k] = o[k] + dy[k] * pa[k * sai];
            break;
        case BIN_DIV * 2 + 0:
            for (int64_t k = 0; k < inner; k++) o[k] = o[k] + dy[k] / pb[k * sbi];
            break;
        default: /* d(a/b)/db = -a / b^2 */
            for (int64_t k = 0; k < inner; k++) {
                float bv = pb[k * sbi];
                o[k] = o[k] - dy[k] * pa[k * sai] / (bv * bv);
            }
            break;
        }
    }
}

/* Each input's gradient: directly when it has the output's shape, else through an
 * output-sized scratch summed down to the input's shape. */
static Status bin_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *ga = ops_in_grad(c, n, 0, &st);
    float *gb = ops_in_grad(c, n, 1, &st);
    if (st) return st;
    const Tensor *ty = &n->out->v;
    int64_t ny = tensor_numel(ty);
    BinBwdJob j;
    j.a = n->in[0]->v.data;
    j.b = n->in[1]->v.data;
    j.dy = n->out->g.data;
    j.kind = (int)n->ip[0];
    if (!broadcast_plan(op_name(n->op), &n->in[0]->v, &n->in[1]->v, &j.bc)) return addc_error_status();
    j.inner = j.bc.out[BC_DIMS - 1];
    int64_t rows = j.inner ? ny / j.inner : 0;
    int64_t grain = (16384 + j.inner - 1) / (j.inner ? j.inner : 1);
    for (int which = 0; which < 2; which++) {
        float *g = which ? gb : ga;
        if (!g) continue;
        const Tensor *tx = &n->in[which]->v;
        bool direct = tensor_numel(tx) == ny;
        ArenaMark mark = arena_mark(c->arena);
        j.which = which;
        j.dst = direct ? g : arena_calloc(c->arena, ny * 4);
        if (!j.dst) return addc_error_status();
        parallel_for(rows, grain, bin_bwd_rows, &j);
        if (!direct) {
            st = reduce_sum_to_accum(c, g, tx->ndim, tx->shape, j.dst, ty->ndim, ty->shape);
            arena_reset_to(c->arena, mark);
            if (st) return st;
        }
    }
    return ADDC_OK;
}

static Status accum_sum_to(Ctx *c, Var *x, Var *contrib) {
    Var *r = op_sum_to(c, contrib, x->v.ndim, x->v.shape);
    return var_accum_gv(c, x, r);
}

static Status bin_bwd_graph(Ctx *c, Node *n) {
    Var *a = n->in[0], *b = n->in[1], *dy = n->out->gv;
    int kind = (int)n->ip[0];
    Status st = ADDC_OK;
    if (ops_in_wants_gv(n, 0)) {
        Var *d = kind == BIN_MUL ? op_mul(c, dy, b) : kind == BIN_DIV ? op_div(c, dy, b) : dy;
        st = accum_sum_to(c, a, d);
        if (st) return st;
    }
    if (ops_in_wants_gv(n, 1)) {
        Var *d;
        switch (kind) {
        case BIN_ADD: d = dy; break;
        case BIN_SUB: d = op_scale(c, dy, -1.0, 0.0); break;
        case BIN_MUL: d = op_mul(c, dy, a); break;
        default: /* -dy * a / b^2 = -(dy * y) / b */
            d = op_scale(c, op_div(c, op_mul(c, dy, n->out), b), -1.0, 0.0);
            break;
        }
        st = accum_sum_to(c, b, d);
    }
    return st;
}

const OpImpl cpu_op_add = {bin_fwd, bin_bwd, bin_bwd_graph};
const OpImpl cpu_op_sub = {bin_fwd, bin_bwd, bin_bwd_graph};
const OpImpl cpu_op_mul = {bin_fwd, bin_bwd, bin_bwd_graph};
const OpImpl cpu_op_div = {bin_fwd, bin_bwd, bin_bwd_graph};

/* ---- unary: scale, rsqrt, cast ---- */

typedef struct {
    const float *x;
    float *y;
    double p0, p1;
} UnJob;

static void scale_range(void *ctx, int64_t b, int64_t e) {
    UnJob *j = ctx;
    float al = (float)j->p0, be = (float)j->p1;
    for (int64_t i = b; i < e; i++) j->y[i] = al * j->x[i] + be;
}

static Status scale_fwd(Ctx *c, Node *n) {
    (void)c;
    UnJob j = {n->in[0]->v.data, n->out->v.data, n->fp[0], n->fp[1]};
    parallel_for(tensor_numel(&n->out->v), 1 << 15, scale_range, &j);
    return ADDC_OK;
}

typedef struct {
    float *gx;
    const float *dy;
    float alpha;
} ScaleBwdJob;

static void scale_bwd_range(void *ctx, int64_t b, int64_t e) {
    ScaleBwdJob *j = ctx;
    for (int64_t i = b; i < e; i++) j->gx[i] += j->alpha * j->dy[i];
}

static Status scale_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    ScaleBwdJob j = {gx, n->out->g.data, (float)n->fp[0]};
    parallel_for(tensor_numel(&n->out->v), 1 << 15, scale_bwd_range, &j);
    return ADDC_OK;
}

static Status scale_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    return var_accum_gv(c, n->in[0], op_scale(c, n->out->gv, n->fp[0], 0.0));
}

Var *op_scale(Ctx *c, Var *x, double alpha, double beta) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("scale", "x", x)) return NULL;
    Node n = node_make(OP_SCALE, 1, &x);
    n.fp[0] = alpha;
    n.fp[1] = beta;
    return op_exec(c, &n, x->v.dtype, x->v.ndim, x->v.shape);
}

const OpImpl cpu_op_scale = {scale_fwd, scale_bwd, scale_bwd_graph};

static void rsqrt_range(void *ctx, int64_t b, int64_t e) {
    UnJob *j = ctx;
    for (int64_t i = b; i < e; i++) j->y[i] = (float)(1.0 / sqrt((double)j->x[i] + j->p0));
}

static Status rsqrt_fwd(Ctx *c, Node *n) {
    (void)c;
    UnJob j = {n->in[0]->v.data, n->out->v.data, n->fp[0], 0};
    parallel_for(tensor_numel(&n->out->v), 1 << 14, rsqrt_range, &j);
    return ADDC_OK;
}

static Status rsqrt_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const float *dy = n->out->g.data, *y = n->out->v.data;
    for (int64_t i = 0, m = tensor_numel(&n->out->v); i < m; i++) gx[i] += -0.5f * y[i] * y[i] * y[i] * dy[i];
    return ADDC_OK;
}

Var *op_rsqrt(Ctx *c, Var *x, double eps) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("rsqrt", "x", x)) return NULL;
    Node n = node_make(OP_RSQRT, 1, &x);
    n.fp[0] = eps;
    return op_exec(c, &n, x->v.dtype, x->v.ndim, x->v.shape);
}

const OpImpl cpu_op_rsqrt = {rsqrt_fwd, rsqrt_bwd, NULL};

static Status cast_fwd(Ctx *c, Node *n) {
    (void)c;
    dtype_convert(n->out->v.data, n->out->v.dtype, n->in[0]->v.data, n->in[0]->v.dtype,
                  tensor_numel(&n->out->v));
    return ADDC_OK;
}

static Status cast_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const float *dy = n->out->g.data;
    for (int64_t i = 0, m = tensor_numel(&n->out->v); i < m; i++) gx[i] += dy[i];
    return ADDC_OK;
}

Var *op_cast(Ctx *c, Var *x, DType dt) {
    OPS_NULL_GUARD1(x);
    if (dt >= DTYPE_COUNT) return ops_fail("cast", "unknown dtype %d", (int)dt);
    Node n = node_make(OP_CAST, 1, &x);
    return op_exec(c, &n, dt, x->v.ndim, x->v.shape);
}

const OpImpl cpu_op_cast = {cast_fwd, cast_bwd, NULL};
