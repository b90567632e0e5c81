/* core/ops/shape: concat, slice (and split), permute, nearest 2x upsampling, and area and
 * bicubic resizing (torch F.interpolate semantics). Images are NHWC (B, H, W, C).
 *
 * Gradient rule: every backward ACCUMULATES (+=) into the input gradients. concat, slice and
 * permute are linear maps with create-graph backwards built from each other: concat's is two
 * slices, slice's pads the gradient back with zero constants by concat, permute's is the
 * inverse permutation. The resizes are separable linear maps y = Rh x Rw^T: one tap table per
 * axis (output index -> input indices and weights) applied axis by axis, and the backward
 * applies the transposed tables (input index -> output indices), so every pass gathers and
 * threads never write to the same element.
 * Values are f32 (also bf16 on CUDA: core/cuda/shape.cu; outputs keep the input dtype); gradients
 * f32. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

#define SHAPE_GRAIN 16384 /* elements per parallel chunk, at least */

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= s[i];
    return p;
}

static int64_t grain_rows(int64_t row_elems) {
    return row_elems >= SHAPE_GRAIN ? 1 : SHAPE_GRAIN / (row_elems > 0 ? row_elems : 1);
}

/* d[k] (+)= w * s[k]: blocks of a fixed length, which GCC's -O2 cost model vectorises */
#define VEC_BLOCK 16
static void vec_axpy(float *restrict d, float w, const float *restrict s, int64_t n, bool accumulate) {
    int64_t k = 0;
    if (accumulate) {
        for (; k + VEC_BLOCK <= n; k += VEC_BLOCK)
            for (int64_t e = 0; e < VEC_BLOCK; e++) d[k + e] += w * s[k + e];
        for (; k < n; k++) d[k] += w * s[k];
    } else {
        for (; k + VEC_BLOCK <= n; k += VEC_BLOCK)
            for (int64_t e = 0; e < VEC_BLOCK; e++) d[k + e] = w * s[k + e];
        for (; k < n; k++) d[k] = w * s[k];
    }
}

static void vec_add(float *restrict d, const float *restrict s, int64_t n) {
    int64_t k = 0;
    for (; k + VEC_BLOCK <= n; k += VEC_BLOCK)
        for (int64_t e = 0; e < VEC_BLOCK; e++) d[k + e] += s[k + e];
    for (; k < n; k++) d[k] += s[k];
}

/* axis in [-ndim, ndim) -> [0, ndim), or -1 with an error */
static int shape_axis(const char *op, int axis, const Tensor *t) {
    if (axis < -t->ndim || axis >= t->ndim) {
        char s[96];
        ops_fail(op, "axis %d is out of range for x %s (%d dims; negative axes count from the end)", axis,
                 ops_shape_str(t, s, sizeof s), t->ndim);
        return -1;
    }
    return axis < 0 ? axis + t->ndim : axis;
}

/* ---- strided row copy: dst[r * ds + k] (=|+=) src[r * ss + k], k < len ---- */

typedef struct {
    float *dst;          /* (rows, ds) */
    const float *src;    /* (rows, ss) */
    int64_t ds, ss, len; /* row strides and the copied length */
    bool accumulate;
} RowsJob;

static void rows_range(void *ctx, int64_t r0, int64_t r1) {
    const RowsJob *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        float *d = j->dst + r * j->ds;
        const float *s = j->src + r * j->ss;
        if (j->accumulate)
            vec_add(d, s, j->len);
        else
            memcpy(d, s, (size_t)j->len * 4);
    }
}

static void rows_copy(float *dst, int64_t ds, const float *src, int64_t ss, int64_t rows, int64_t len,
                      bool accumulate) {
    if (len == 0) return;
    RowsJob j = {dst, src, ds, ss, len, accumulate};
    parallel_for(rows, grain_rows(len), rows_range, &j);
}

/* ---- concat: (..., La, ...) and (..., Lb, ...) -> (..., La + Lb, ...) along axis ip[0] ---- */

static void concat_geometry(const Node *n, int64_t *outer, int64_t *ra, int64_t *rb) {
    const Tensor *a = &n->in[0]->v, *b = &n->in[1]->v;
    int ax = (int)n->ip[0];
    int64_t inner = prod(a->shape, ax + 1, a->ndim);
    *outer = prod(a->shape, 0, ax);
    *ra = a->shape[ax] * inner;
    *rb = b->shape[ax] * inner;
}

static Status concat_fwd(Ctx *c, Node *n) {
    (void)c;
    int64_t outer, ra, rb;
    concat_geometry(n, &outer, &ra, &rb);
    float *y = n->out->v.data;
    rows_copy(y, ra + rb, n->in[0]->v.data, ra, outer, ra, false);
    rows_copy(y + ra, ra + rb, n->in[1]->v.data, rb, outer, rb, false);
    return ADDC_OK;
}

static Status concat_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *ga = ops_in_grad(c, n, 0, &st);
    float *gb = ops_in_grad(c, n, 1, &st);
    if (st) return st;
    int64_t outer, ra, rb;
    concat_geometry(n, &outer, &ra, &rb);
    const float *dy = n->out->g.data;
    if (ga) rows_copy(ga, ra, dy, ra + rb, outer, ra, true);
    if (gb) rows_copy(gb, rb, dy + ra, ra + rb, outer, rb, true);
    return ADDC_OK;
}

static Status concat_bwd_graph(Ctx *c, Node *n) {
    int ax = (int)n->ip[0];
    int64_t la = n->in[0]->v.shape[ax], lb = n->in[1]->v.shape[ax];
    Status st = ADDC_OK;
    if (ops_in_wants_gv(n, 0)) st = var_accum_gv(c, n->in[0], op_slice(c, n->out->gv, ax, 0, la));
    if (!st && ops_in_wants_gv(n, 1)) st = var_accum_gv(c, n->in[1], op_slice(c, n->out->gv, ax, la, lb));
    return st;
}

Var *op_concat(Ctx *c, Var *a, Var *b, int axis) {
    OPS_NULL_GUARD2(a, b);
    if (!ops_require_same_float("concat", a, b)) return NULL;
    int ax = shape_axis("concat", axis, &a->v);
    if (ax < 0) return NULL;
    bool ok = a->v.ndim == b->v.ndim;
    for (int i = 0; ok && i < a->v.ndim; i++) ok = i == ax || a->v.shape[i] == b->v.shape[i];
    if (!ok) {
        char sa[96], sb[96];
        return ops_fail("concat", "shapes %s and %s differ outside axis %d",
                        ops_shape_str(&a->v, sa, sizeof sa), ops_shape_str(&b->v, sb, sizeof sb), axis);
    }
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, a->v.shape, sizeof shape);
    shape[ax] += b->v.shape[ax];
    Var *in[2] = {a, b};
    Node n = node_make(OP_CONCAT, 2, in);
    n.ip[0] = ax;
    return op_exec(c, &n, a->v.dtype, a->v.ndim, shape);
}

const OpImpl cpu_op_concat = {concat_fwd, concat_bwd, concat_bwd_graph};

/* ---- slice: x (..., L, ...) -> (..., len, ...), elements [start, start + len) of axis ip[0] ---- */

static void slice_geometry(const Node *n, int64_t *outer, int64_t *rx, int64_t *ry, int64_t *off) {
    const Tensor *x = &n->in[0]->v;
    int ax = (int)n->ip[0];
    int64_t inner = prod(x->shape, ax + 1, x->ndim);
    *outer = prod(x->shape, 0, ax);
    *rx = x->shape[ax] * inner;
    *ry = n->ip[2] * inner;
    *off = n->ip[1] * inner;
}

static Status slice_fwd(Ctx *c, Node *n) {
    (void)c;
    int64_t outer, rx, ry, off;
    slice_geometry(n, &outer, &rx, &ry, &off);
    rows_copy(n->out->v.data, ry, (const float *)n->in[0]->v.data + off, rx, outer, ry, false);
    return ADDC_OK;
}

static Status slice_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    int64_t outer, rx, ry, off;
    slice_geometry(n, &outer, &rx, &ry, &off);
    rows_copy(gx + off, rx, n->out->g.data, ry, outer, ry, true);
    return ADDC_OK;
}

/* the gradient padded back to x's shape with zero constants before and after the slice */
static Status slice_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    Var *x = n->in[0], *g = n->out->gv;
    DType gdt = g ? g->v.dtype : DTYPE_F32; /* the zeros match the gradient's dtype */
    int ax = (int)n->ip[0];
    int64_t start = n->ip[1], len = n->ip[2], after = x->v.shape[ax] - start - len;
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->v.shape, sizeof shape);
    if (start > 0) {
        shape[ax] = start;
        g = op_concat(c, var_zeros(c, gdt, x->v.ndim, shape), g, ax);
    }
    if (after > 0) {
        shape[ax] = after;
        g = op_concat(c, g, var_zeros(c, gdt, x->v.ndim, shape), ax);
    }
    return var_accum_gv(c, x, g);
}

Var *op_slice(Ctx *c, Var *x, int axis, int64_t start, int64_t len) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("slice", "x", x)) return NULL;
    int ax = shape_axis("slice", axis, &x->v);
    if (ax < 0) return NULL;
    int64_t l = x->v.shape[ax];
    if (start < 0 || len < 0 || start + len > l) {
        char s[96];
        return ops_fail("slice", "[%lld, %lld) is outside axis %d of x %s (length %lld)", (long long)start,
                        (long long)(start + len), axis, ops_shape_str(&x->v, s, sizeof s), (long long)l);
    }
    if (start == 0 && len == l) return x;
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->v.shape, sizeof shape);
    shape[ax] = len;
    Node n = node_make(OP_SLICE, 1, &x);
    n.ip[0] = ax;
    n.ip[1] = start;
    n.ip[2] = len;
    return op_exec(c, &n, x->v.dtype, x->v.ndim, shape);
}

Status op_split(Ctx *c, Var *x, int axis, int n, Var **out) {
    for (int i = 0; i < n; i++) out[i] = NULL;
    if (!x) return addc_error_status() ? addc_error_status() : ADDC_ERR_INVALID;
    int ax = shape_axis("split", axis, &x->v);
    if (ax < 0) return addc_error_status();
    int64_t l = x->v.shape[ax];
    if (n < 1 || l % n != 0) {
        char s[96];
        ops_fail("split", "axis %d of x %s (length %lld) cannot be cut into %d equal parts", axis,
                 ops_shape_str(&x->v, s, sizeof s), (long long)l, n);
        return addc_error_status();
    }
    for (int i = 0; i < n; i++) {
        out[i] = op_slice(c, x, ax, i * (l / n), l / n);
        if (!out[i]) return addc_error_status();
    }
    return ADDC_OK;
}

const OpImpl cpu_op_slice = {slice_fwd, slice_bwd, slice_bwd_graph};

/* ---- permute: y.shape[i] = x.shape[perm[i]], perm in ip[0..ndim) ---- */

/* Output dims after merging runs that are contiguous in both tensors and dropping 1s; each
 * with its element stride in x and in y. */
typedef struct {
    int nd;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t xs[TENSOR_MAX_DIMS], ys[TENSOR_MAX_DIMS];
    int q;           /* the dim with x stride 1 (x's innermost), when it is not the last */
    int64_t tiles_q, tiles_l, outer; /* transposed case: tile counts and outer positions */
} PermPlan;

#define PERM_TILE 32

static void perm_plan(const Tensor *x, const int64_t *perm, PermPlan *p) {
    int64_t xst[TENSOR_MAX_DIMS], st = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
        xst[i] = st;
        st *= x->shape[i];
    }
    p->nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        int64_t d = x->shape[perm[i]], s = xst[perm[i]];
        if (d == 1) continue;
        if (p->nd > 0 && p->xs[p->nd - 1] == s * d) { /* continues the previous dim in x */
            p->shape[p->nd - 1] *= d;
            p->xs[p->nd - 1] = s;
            continue;
        }
        p->shape[p->nd] = d;
        p->xs[p->nd] = s;
        p->nd++;
    }
    st = 1;
    for (int i = p->nd - 1; i >= 0; i--) {
        p->ys[i] = st;
        st *= p->shape[i];
    }
    p->q = -1;
    for (int i = 0; i < p->nd - 1; i++)
        if (p->xs[i] == 1) p->q = i;
    if (p->q >= 0) {
        int l = p->nd - 1;
        p->tiles_q = (p->shape[p->q] + PERM_TILE - 1) / PERM_TILE;
        p->tiles_l = (p->shape[l] + PERM_TILE - 1) / PERM_TILE;
        p->outer = 1;
        for (int i = 0; i < l; i++)
            if (i != p->q) p->outer *= p->shape[i];
    }
}

typedef struct {
    const PermPlan *p;
    const float *src; /* forward: x; backward: dy */
    float *dst;       /* forward: y; backward: gx (+=) */
    bool backward;
} PermJob;

/* offsets in x and y of the position whose indices along dims [0, last) other than `skip`
 * are the row-major decomposition of r (and 0 along the others) */
static void perm_offsets(const PermPlan *p, int64_t r, int last, int skip, int64_t *xo, int64_t *yo) {
    *xo = *yo = 0;
    for (int d = last - 1; d >= 0; d--) {
        if (d == skip) continue;
        int64_t i = r % p->shape[d];
        r /= p->shape[d];
        *xo += i * p->xs[d];
        *yo += i * p->ys[d];
    }
}

/* x's innermost dim is y's innermost: contiguous rows of the last dim */
static void perm_rows(void *ctx, int64_t r0, int64_t r1) {
    const PermJob *j = ctx;
    const PermPlan *p = j->p;
    int l = p->nd - 1;
    int64_t len = p->shape[l];
    for (int64_t r = r0; r < r1; r++) {
        int64_t xo, yo;
        perm_offsets(p, r, l, -1, &xo, &yo);
        if (j->backward) {
            vec_add(j->dst + xo, j->src + yo, len);
        } else {
            memcpy(j->dst + yo, j->src + xo, (size_t)len * 4);
        }
    }
}

/* a transposition between dim q (x stride 1) and the last dim (y stride 1), in tiles */
static void perm_tiles(void *ctx, int64_t t0, int64_t t1) {
    const PermJob *j = ctx;
    const PermPlan *p = j->p;
    int l = p->nd - 1, q = p->q;
    int64_t xsl = p->xs[l], ysq = p->ys[q];
    for (int64_t t = t0; t < t1; t++) {
        int64_t tl = t % p->tiles_l, tq = (t / p->tiles_l) % p->tiles_q, r = t / (p->tiles_l * p->tiles_q);
        int64_t xo, yo;
        perm_offsets(p, r, l, q, &xo, &yo);
        int64_t a0 = tq * PERM_TILE, a1 = a0 + PERM_TILE < p->shape[q] ? a0 + PERM_TILE : p->shape[q];
        int64_t b0 = tl * PERM_TILE, b1 = b0 + PERM_TILE < p->shape[l] ? b0 + PERM_TILE : p->shape[l];
        for (int64_t a = a0; a < a1; a++) {
            int64_t xa = xo + a, ya = yo + a * ysq;
            if (j->backward)
                for (int64_t b = b0; b < b1; b++) j->dst[xa + b * xsl] += j->src[ya + b];
            else
                for (int64_t b = b0; b < b1; b++) j->dst[ya + b] = j->src[xa + b * xsl];
        }
    }
}

static void perm_run(const Tensor *x, const int64_t *perm, const float *src, float *dst, bool backward) {
    PermPlan p;
    perm_plan(x, perm, &p);
    PermJob j = {&p, src, dst, backward};
    int64_t numel = tensor_numel(x);
    if (numel == 0) return;
    if (p.nd == 0) { /* one element */
        dst[0] = backward ? dst[0] + src[0] : src[0];
        return;
    }
    if (p.q < 0) {
        int64_t len = p.shape[p.nd - 1];
        parallel_for(numel / len, grain_rows(len), perm_rows, &j);
    } else {
        parallel_for(p.outer * p.tiles_q * p.tiles_l, SHAPE_GRAIN / (PERM_TILE * PERM_TILE), perm_tiles, &j);
    }
}

static Status permute_fwd(Ctx *c, Node *n) {
    (void)c;
    perm_run(&n->in[0]->v, n->ip, n->in[0]->v.data, n->out->v.data, false);
    return ADDC_OK;
}

static Status permute_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    perm_run(&n->in[0]->v, n->ip, n->out->g.data, gx, true);
    return ADDC_OK;
}

static Status permute_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    int32_t inv[TENSOR_MAX_DIMS];
    for (int i = 0; i < n->in[0]->v.ndim; i++) inv[n->ip[i]] = i;
    return var_accum_gv(c, n->in[0], op_permute(c, n->out->gv, inv));
}

Var *op_permute(Ctx *c, Var *x, const int32_t *perm) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("permute", "x", x)) return NULL;
    int nd = x->v.ndim;
    bool seen[TENSOR_MAX_DIMS] = {false}, ok = true, identity = true;
    int64_t p[TENSOR_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        p[i] = perm[i] < 0 ? perm[i] + nd : perm[i];
        ok = ok && p[i] >= 0 && p[i] < nd && !seen[p[i]];
        if (ok) seen[p[i]] = true;
        identity = identity && p[i] == i;
    }
    if (!ok) {
        char s[96], ps[64];
        int k = snprintf(ps, sizeof ps, "(");
        for (int i = 0; i < nd && k < (int)sizeof ps; i++)
            k += snprintf(ps + k, sizeof ps - (size_t)k, i ? ", %d" : "%d", perm[i]);
        if (k < (int)sizeof ps) snprintf(ps + k, sizeof ps - (size_t)k, ")");
        return ops_fail("permute", "%s is not a permutation of the %d dims of x %s", ps, nd,
                        ops_shape_str(&x->v, s, sizeof s));
    }
    if (identity) return x;
    int64_t shape[TENSOR_MAX_DIMS];
    Node n = node_make(OP_PERMUTE, 1, &x);
    for (int i = 0; i < nd; i++) {
        shape[i] = x->v.shape[p[i]];
        n.ip[i] = p[i];
    }
    return op_exec(c, &n, x->v.dtype, nd, shape);
}

const OpImpl cpu_op_permute = {permute_fwd, permute_bwd, permute_bwd_graph};

/* ---- upsample_nearest2x: (B, H, W, C) -> (B, 2H, 2W, C) ---- */

typedef struct {
    const float *src; /* forward: x (B, H, W, C); backward: dy (B, 2H, 2W, C) */
    float *dst;       /* forward: y; backward: gx (+=) */
    int64_t w, c;     /* W, C */
} UpJob;

/* input rows (b, h) -> output rows (b, 2h) and (b, 2h + 1) */
static void up_fwd_rows(void *ctx, int64_t r0, int64_t r1) {
    const UpJob *j = ctx;
    int64_t w = j->w, c = j->c;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->src + r * w * c;
        float *y0 = j->dst + 2 * r * 2 * w * c;
        for (int64_t i = 0; i < w; i++) {
            memcpy(y0 + 2 * i * c, x + i * c, (size_t)c * 4);
            memcpy(y0 + (2 * i + 1) * c, x + i * c, (size_t)c * 4);
        }
        memcpy(y0 + 2 * w * c, y0, (size_t)(2 * w * c) * 4);
    }
}

static void up_bwd_rows(void *ctx, int64_t r0, int64_t r1) {
    const UpJob *j = ctx;
    int64_t w = j->w, c = j->c;
    for (int64_t r = r0; r < r1; r++) {
        float *gx = j->dst + r * w * c;
        const float *d0 = j->src + 2 * r * 2 * w * c, *d1 = d0 + 2 * w * c;
        for (int64_t i = 0; i < w; i++) {
            const float *a = d0 + 2 * i * c, *b = d1 + 2 * i * c;
            float *g = gx + i * c;
            for (int64_t k = 0; k < c; k++) g[k] += (a[k] + a[c + k]) + (b[k] + b[c + k]);
        }
    }
}

static Status up_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    UpJob j = {x->data, n->out->v.data, x->shape[2], x->shape[3]};
    parallel_for(x->shape[0] * x->shape[1], grain_rows(4 * j.w * j.c), up_fwd_rows, &j);
    return ADDC_OK;
}

static Status up_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    UpJob j = {n->out->g.data, gx, x->shape[2], x->shape[3]};
    parallel_for(x->shape[0] * x->shape[1], grain_rows(4 * j.w * j.c), up_bwd_rows, &j);
    return ADDC_OK;
}

static bool shape_require_nhwc(const char *op, const Var *x) {
    if (!ops_require_float(op, "x", x)) return false;
    if (x->v.ndim != 4) {
        char s[96];
        ops_fail(op, "x must be an NHWC image (B, H, W, C), got %s", ops_shape_str(&x->v, s, sizeof s));
        return false;
    }
    return true;
}

Var *op_upsample_nearest2x(Ctx *c, Var *x) {
    OPS_NULL_GUARD1(x);
    if (!shape_require_nhwc("upsample_nearest2x", x)) return NULL;
    int64_t shape[4] = {x->v.shape[0], 2 * x->v.shape[1], 2 * x->v.shape[2], x->v.shape[3]};
    Node n = node_make(OP_UPSAMPLE_NEAREST2X, 1, &x);
    return op_exec(c, &n, x->v.dtype, 4, shape);
}

const OpImpl cpu_op_upsample_nearest2x = {up_fwd, up_bwd, NULL};

/* ---- separable resampling: area and bicubic ---- */

/* One axis of a resize as a sparse matrix in rows: output i reads inputs idx[k] with
 * weights w[k], k in [ptr[i], ptr[i + 1]). */
typedef struct {
    int64_t n;    /* rows (outputs) */
    int64_t *ptr; /* (n + 1) */
    int64_t *idx; /* (ptr[n]) */
    float *w;     /* (ptr[n]) */
} Taps;

enum { RESIZE_AREA, RESIZE_BICUBIC };

static bool taps_alloc(Ctx *c, Taps *t, int64_t n, int64_t nnz) {
    t->n = n;
    t->ptr = ctx_alloc(c, (n + 1) * 8);
    t->idx = ctx_alloc(c, (nnz ? nnz : 1) * 8);
    t->w = ctx_alloc(c, (nnz ? nnz : 1) * 4);
    return t->ptr && t->idx && t->w;
}

/* adaptive average pooling windows [floor(i L / O), ceil((i + 1) L / O)) */
static bool taps_area(Ctx *c, Taps *t, int64_t l, int64_t o) {
    int64_t nnz = 0;
    for (int64_t i = 0; i < o; i++) nnz += ((i + 1) * l + o - 1) / o - (i * l) / o;
    if (!taps_alloc(c, t, o, nnz)) return false;
    int64_t k = 0;
    for (int64_t i = 0; i < o; i++) {
        int64_t s = (i * l) / o, e = ((i + 1) * l + o - 1) / o;
        t->ptr[i] = k;
        for (int64_t j = s; j < e; j++, k++) {
            t->idx[k] = j;
            t->w[k] = (float)(1.0 / (double)(e - s));
        }
    }
    t->ptr[o] = k;
    return true;
}

/* torch's cubic convolution kernel, A = -0.75 */
static double cubic_near(double x) { return ((-0.75 + 2) * x - (-0.75 + 3)) * x * x + 1; } /* |x| <= 1 */
static double cubic_far(double x) { return ((-0.75 * x + 3.75) * x - 6.0) * x + 3.0; }     /* 1 < |x| < 2 */

/* align_corners=False: source x = (i + 0.5) L / O - 0.5, 4 taps around it, indices clamped */
static bool taps_bicubic(Ctx *c, Taps *t, int64_t l, int64_t o) {
    if (!taps_alloc(c, t, o, 4 * o)) return false;
    double scale = (double)l / (double)o;
    for (int64_t i = 0; i < o; i++) {
        double src = scale * ((double)i + 0.5) - 0.5, f = floor(src), u = src - f;
        double w[4] = {cubic_far(u + 1), cubic_near(u), cubic_near(1 - u), cubic_far(2 - u)};
        t->ptr[i] = 4 * i;
        for (int k = 0; k < 4; k++) {
            int64_t j = (int64_t)f - 1 + k;
            t->idx[4 * i + k] = j < 0 ? 0 : j >= l ? l - 1 : j;
            t->w[4 * i + k] = (float)w[k];
        }
    }
    t->ptr[o] = 4 * o;
    return true;
}

/* The transposed table (input j -> the outputs reading it, in increasing order). */
static bool taps_transpose(Ctx *c, const Taps *t, int64_t l, Taps *tt) {
    int64_t nnz = t->ptr[t->n];
    if (!taps_alloc(c, tt, l, nnz)) return false;
    memset(tt->ptr, 0, (size_t)(l + 1) * 8);
    for (int64_t k = 0; k < nnz; k++) tt->ptr[t->idx[k] + 1]++;
    for (int64_t j = 0; j < l; j++) tt->ptr[j + 1] += tt->ptr[j];
    int64_t *fill = ctx_alloc(c, (l ? l : 1) * 8);
    if (!fill) return false;
    memcpy(fill, tt->ptr, (size_t)l * 8);
    for (int64_t i = 0; i < t->n; i++)
        for (int64_t k = t->ptr[i]; k < t->ptr[i + 1]; k++) {
            int64_t q = fill[t->idx[k]]++;
            tt->idx[q] = i;
            tt->w[q] = t->w[k];
        }
    return true;
}

typedef struct {
    const Taps *t;
    const float *src; /* (outer, L, inner) */
    float *dst;       /* (outer, t->n, inner) */
    int64_t l, inner;
    bool accumulate;
} ResampleJob;

static void resample_rows(void *ctx, int64_t r0, int64_t r1) {
    const ResampleJob *j = ctx;
    const Taps *t = j->t;
    int64_t inner = j->inner, o = r0 / t->n, i = r0 % t->n;
    for (int64_t r = r0; r < r1; r++) {
        float *d = j->dst + r * inner;
        const float *s = j->src + o * j->l * inner;
        bool acc = j->accumulate;
        for (int64_t k = t->ptr[i]; k < t->ptr[i + 1]; k++, acc = true)
            vec_axpy(d, t->w[k], s + t->idx[k] * inner, inner, acc);
        if (!acc) memset(d, 0, (size_t)inner * 4); /* no taps */
        if (++i == t->n) {
            i = 0;
            o++;
        }
    }
}

/* dst (outer, t->n, inner) (=|+=) t applied along the middle axis of src (outer, l, inner) */
static void resample_axis(const Taps *t, const float *src, float *dst, int64_t outer, int64_t l,
                          int64_t inner, bool accumulate) {
    ResampleJob j = {t, src, dst, l, inner, accumulate};
    int64_t per_row = inner * (t->n ? (t->ptr[t->n] + t->n - 1) / t->n : 1);
    parallel_for(outer * t->n, grain_rows(per_row), resample_rows, &j);
}

/* forward: y = Rh x Rw^T in two passes, the cheaper order first; backward: the transposed
 * tables in the reverse order, accumulating into gx */
static Status resize_run(Ctx *c, Node *n, bool backward, float *gx) {
    const Tensor *x = &n->in[0]->v;
    int64_t b = x->shape[0], h = x->shape[1], w = x->shape[2], ch = x->shape[3];
    int64_t oh = n->out->v.shape[1], ow = n->out->v.shape[2];
    ArenaMark mark = arena_mark(c->arena);
    Taps th, tw;
    bool ok = n->ip[0] == RESIZE_AREA ? taps_area(c, &th, h, oh) && taps_area(c, &tw, w, ow)
                                      : taps_bicubic(c, &th, h, oh) && taps_bicubic(c, &tw, w, ow);
    bool h_first = oh * w <= h * ow;
    float *tmp = ok ? ctx_alloc(c, b * (h_first ? oh * w : h * ow) * ch * 4) : NULL;
    if (!tmp) {
        arena_reset_to(c->arena, mark);
        return addc_error_status();
    }
    if (!backward) {
        const float *xd = x->data;
        float *y = n->out->v.data;
        if (h_first) {
            resample_axis(&th, xd, tmp, b, h, w * ch, false);
            resample_axis(&tw, tmp, y, b * oh, w, ch, false);
        } else {
            resample_axis(&tw, xd, tmp, b * h, w, ch, false);
            resample_axis(&th, tmp, y, b, h, ow * ch, false);
        }
    } else {
        Taps tht, twt;
        if (!taps_transpose(c, &th, h, &tht) || !taps_transpose(c, &tw, w, &twt)) {
            arena_reset_to(c->arena, mark);
            return addc_error_status();
        }
        const float *dy = n->out->g.data;
        if (h_first) {
            resample_axis(&twt, dy, tmp, b * oh, ow, ch, false);
            resample_axis(&tht, tmp, gx, b, oh, w * ch, true);
        } else {
            resample_axis(&tht, dy, tmp, b, oh, ow * ch, false);
            resample_axis(&twt, tmp, gx, b * h, ow, ch, true);
        }
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

static Status resize_fwd(Ctx *c, Node *n) { return resize_run(c, n, false, NULL); }

static Status resize_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    return resize_run(c, n, true, gx);
}

static Var *resize_op(Ctx *c, int op, int kind, Var *x, int64_t oh, int64_t ow) {
    OPS_NULL_GUARD1(x);
    const char *name = op_name(op);
    if (!shape_require_nhwc(name, x)) return NULL;
    if (oh < 1 || ow < 1)
        return ops_fail(name, "output size %lld x %lld must be positive", (long long)oh, (long long)ow);
    if (x->v.shape[1] < 1 || x->v.shape[2] < 1) {
        char s[96];
        return ops_fail(name, "cannot resize the empty image %s", ops_shape_str(&x->v, s, sizeof s));
    }
    int64_t shape[4] = {x->v.shape[0], oh, ow, x->v.shape[3]};
    Node n = node_make(op, 1, &x);
    n.ip[0] = kind;
    return op_exec(c, &n, x->v.dtype, 4, shape);
}

Var *op_resize_area(Ctx *c, Var *x, int64_t oh, int64_t ow) {
    return resize_op(c, OP_RESIZE_AREA, RESIZE_AREA, x, oh, ow);
}

Var *op_resize_bicubic(Ctx *c, Var *x, int64_t oh, int64_t ow) {
    return resize_op(c, OP_RESIZE_BICUBIC, RESIZE_BICUBIC, x, oh, ow);
}

const OpImpl cpu_op_resize_area = {resize_fwd, resize_bwd, NULL};
const OpImpl cpu_op_resize_bicubic = {resize_fwd, resize_bwd, NULL};
