/* core/ops/matmul: batched matrix products and the linear layer, on OpenBLAS sgemm.
 *
 * op_matmul: op(a) @ op(b) where op() is the identity or the last-two-dims transpose; the
 * transposes are sgemm flags with the stored leading dimensions, never copies. Batch dims
 * broadcast as in numpy / torch.matmul (right-aligned, a dim of 1 or a missing one is shared):
 * a 2-D operand is shared by the whole batch.
 * op_linear: x (..., Din) @ w^T, w (Dout, Din), plus bias (Dout): one sgemm over all rows.
 *
 * Gradient rule: ACCUMULATE (+=) into input gradients, by sgemm with beta = 1 straight into
 * the gradient buffers (a broadcast operand sums over the products sharing it the same way).
 * The bias gradient is the column sum of dy (fixed row blocks, double accumulation: the same
 * bits for any thread count).
 * Both ops have a create-graph backward built from op_matmul, op_reshape and op_sum_to.
 * Values are f32 (bf16 too on CUDA: core/cuda/matmul.cu, cuBLASLt); the output has their dtype. */
#include <cblas.h>
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

/* Row-major C (M, N) = alpha op(A) op(B) + beta C; lda/ldb are the stored row lengths. */
static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (K == 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                (blasint)N, (blasint)K, 1.0f, A, (blasint)(lda > 1 ? lda : 1), B, (blasint)(ldb > 1 ? ldb : 1),
                beta, C, (blasint)(ldc > 1 ? ldc : 1));
}

/* ---- matmul ---- */

#define MM_BATCH_DIMS (TENSOR_MAX_DIMS - 2)

typedef struct {
    int64_t batch;                       /* number of products: numel of the output batch dims */
    int32_t nbd;                         /* output batch dims */
    int64_t bshape[MM_BATCH_DIMS];       /* output batch shape */
    int64_t astr[MM_BATCH_DIMS], bstr[MM_BATCH_DIMS]; /* matrix strides per batch dim, 0: broadcast */
    int64_t M, N, K;                     /* op(a) (M, K), op(b) (K, N) */
    int64_t lda, ldb;                    /* stored row lengths */
    bool ta, tb;
} MatmulPlan;

static int64_t dims_numel(const int64_t *s, int n) {
    int64_t p = 1;
    for (int i = 0; i < n; i++) p *= s[i];
    return p;
}

/* matrix strides of t's batch dims (t->ndim - 2 of them) right-aligned into nbd output dims */
static void batch_strides(const Tensor *t, int nbd, const int64_t *bshape, int64_t *str) {
    int nt = t->ndim - 2;
    int64_t st = 1;
    for (int d = nbd - 1; d >= 0; d--) {
        int dt = d - (nbd - nt);
        int64_t size = dt >= 0 ? t->shape[dt] : 1;
        str[d] = size == 1 && bshape[d] != 1 ? 0 : st;
        st *= size;
    }
}

/* Fills p and the output shape; false with an error when the shapes do not fit. */
static bool matmul_plan(const Tensor *a, const Tensor *b, bool ta, bool tb, MatmulPlan *p, int32_t *out_nd,
                        int64_t *out_shape) {
    char s1[96], s2[96];
    if (a->ndim < 2 || b->ndim < 2) {
        ops_fail("matmul", "operands must have at least 2 dims, got a %s and b %s", ops_shape_str(a, s1, sizeof s1),
                 ops_shape_str(b, s2, sizeof s2));
        return false;
    }
    int na = a->ndim - 2, nb = b->ndim - 2;
    p->nbd = na > nb ? na : nb;
    for (int d = 0; d < p->nbd; d++) {
        int da = d - (p->nbd - na), db = d - (p->nbd - nb);
        int64_t x = da >= 0 ? a->shape[da] : 1, y = db >= 0 ? b->shape[db] : 1;
        if (x != y && x != 1 && y != 1) {
            ops_fail("matmul",
                     "batch dims of a %s and b %s do not broadcast: each must be equal, 1 or missing "
                     "(a 2-D operand is shared by the whole batch)",
                     ops_shape_str(a, s1, sizeof s1), ops_shape_str(b, s2, sizeof s2));
            return false;
        }
        p->bshape[d] = x == 1 ? y : x;
    }
    const int64_t *ra = a->shape + na, *rb = b->shape + nb;
    p->ta = ta;
    p->tb = tb;
    p->M = ta ? ra[1] : ra[0];
    p->K = ta ? ra[0] : ra[1];
    int64_t kb = tb ? rb[1] : rb[0];
    p->N = tb ? rb[0] : rb[1];
    if (p->K != kb) {
        ops_fail("matmul", "inner dims differ: a %s%s has %lld columns, b %s%s has %lld rows",
                 ops_shape_str(a, s1, sizeof s1), ta ? " (transposed)" : "", (long long)p->K,
                 ops_shape_str(b, s2, sizeof s2), tb ? " (transposed)" : "", (long long)kb);
        return false;
    }
    p->batch = dims_numel(p->bshape, p->nbd);
    batch_strides(a, p->nbd, p->bshape, p->astr);
    batch_strides(b, p->nbd, p->bshape, p->bstr);
    p->lda = ra[1];
    p->ldb = rb[1];
    *out_nd = p->nbd + 2;
    memcpy(out_shape, p->bshape, (size_t)p->nbd * sizeof(int64_t));
    out_shape[p->nbd] = p->M;
    out_shape[p->nbd + 1] = p->N;
    return true;
}

/* element offsets of product i's operands */
static void matmul_offsets(const MatmulPlan *p, int64_t i, int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int d = p->nbd - 1; d >= 0; d--) {
        int64_t k = i % p->bshape[d];
        i /= p->bshape[d];
        a += k * p->astr[d];
        b += k * p->bstr[d];
    }
    *oa = a * p->M * p->K;
    *ob = b * p->K * p->N;
}

/* b shared by a whole, untransposed a: the batch is one product with batch * M rows */
static void matmul_flatten(MatmulPlan *p, const Tensor *a) {
    bool b_shared = true;
    for (int d = 0; d < p->nbd; d++) b_shared = b_shared && p->bstr[d] == 0;
    if (p->batch > 1 && b_shared && !p->ta && dims_numel(a->shape, a->ndim - 2) == p->batch) {
        p->M *= p->batch;
        p->batch = 1;
        p->nbd = 0;
    }
}

static Status matmul_fwd(Ctx *c, Node *n) {
    (void)c;
    MatmulPlan p;
    int32_t nd;
    int64_t shape[TENSOR_MAX_DIMS];
    if (!matmul_plan(&n->in[0]->v, &n->in[1]->v, n->ip[0], n->ip[1], &p, &nd, shape)) return addc_error_status();
    matmul_flatten(&p, &n->in[0]->v);
    const float *A = n->in[0]->v.data, *B = n->in[1]->v.data;
    float *C = n->out->v.data;
    for (int64_t i = 0; i < p.batch; i++) {
        int64_t oa, ob;
        matmul_offsets(&p, i, &oa, &ob);
        gemm(p.ta, p.tb, p.M, p.N, p.K, A + oa, p.lda, B + ob, p.ldb, 0.0f, C + i * p.M * p.N, p.N);
    }
    return ADDC_OK;
}

/* a broadcast operand receives the sum over the products that share it, in product order */
static Status matmul_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gA = ops_in_grad(c, n, 0, &st);
    float *gB = ops_in_grad(c, n, 1, &st);
    if (st) return st;
    MatmulPlan p;
    int32_t nd;
    int64_t shape[TENSOR_MAX_DIMS];
    if (!matmul_plan(&n->in[0]->v, &n->in[1]->v, n->ip[0], n->ip[1], &p, &nd, shape)) return addc_error_status();
    matmul_flatten(&p, &n->in[0]->v);
    const float *A = n->in[0]->v.data, *B = n->in[1]->v.data, *dC = n->out->g.data;
    int64_t M = p.M, N = p.N, K = p.K;
    for (int64_t i = 0; i < p.batch; i++) {
        int64_t oa, ob;
        matmul_offsets(&p, i, &oa, &ob);
        const float *a = A + oa, *b = B + ob, *dc = dC + i * M * N;
        if (gA) {
            float *ga = gA + oa;
            if (!p.ta) /* dA (M, K) += dC op(B)^T */
                gemm(false, !p.tb, M, K, N, dc, N, b, p.ldb, 1.0f, ga, K);
            else /* dA stored (K, M) += op(B) dC^T */
                gemm(p.tb, true, K, M, N, b, p.ldb, dc, N, 1.0f, ga, M);
        }
        if (gB) {
            float *gb = gB + ob;
            if (!p.tb) /* dB (K, N) += op(A)^T dC */
                gemm(!p.ta, false, K, N, M, a, p.lda, dc, N, 1.0f, gb, N);
            else /* dB stored (N, K) += dC^T op(A) */
                gemm(true, p.ta, N, K, M, dc, N, a, p.lda, 1.0f, gb, K);
        }
    }
    return ADDC_OK;
}

/* Accumulates contrib into x's create-graph gradient, summed over the batch dims x was
 * broadcast along. */
static Status accum_to(Ctx *c, Var *x, Var *contrib) {
    if (contrib && !tensor_same_shape(&contrib->v, &x->v)) contrib = op_sum_to(c, contrib, x->v.ndim, x->v.shape);
    return var_accum_gv(c, x, contrib);
}

static Status matmul_bwd_graph(Ctx *c, Node *n) {
    Var *a = n->in[0], *b = n->in[1], *dC = n->out->gv;
    bool ta = n->ip[0], tb = n->ip[1];
    if (ops_in_wants_gv(n, 0)) {
        Var *d = ta ? op_matmul(c, b, dC, tb, true) : op_matmul(c, dC, b, false, !tb);
        TRY(accum_to(c, a, d));
    }
    if (ops_in_wants_gv(n, 1)) {
        Var *aa = a, *dd = dC;
        if (b->v.ndim == 2 && a->v.ndim > 2 && !ta) { /* flatten the batch into the rows */
            int64_t rows = dims_numel(a->v.shape, a->v.ndim - 1);
            int64_t sa[2] = {rows, a->v.shape[a->v.ndim - 1]}, sd[2] = {rows, dC->v.shape[dC->v.ndim - 1]};
            aa = op_reshape(c, a, 2, sa);
            dd = op_reshape(c, dC, 2, sd);
        }
        Var *d = tb ? op_matmul(c, dd, aa, true, ta) : op_matmul(c, aa, dd, !ta, false);
        TRY(accum_to(c, b, d));
    }
    return ADDC_OK;
}

Var *op_matmul(Ctx *c, Var *a, Var *b, bool trans_a, bool trans_b) {
    OPS_NULL_GUARD2(a, b);
    if (!ops_require_same_float("matmul", a, b)) return NULL;
    MatmulPlan p;
    int32_t nd;
    int64_t shape[TENSOR_MAX_DIMS];
    if (!matmul_plan(&a->v, &b->v, trans_a, trans_b, &p, &nd, shape)) return NULL;
    Var *in[2] = {a, b};
    Node n = node_make(OP_MATMUL, 2, in);
    n.ip[0] = trans_a;
    n.ip[1] = trans_b;
    return op_exec(c, &n, a->v.dtype, nd, shape);
}

const OpImpl cpu_op_matmul = {matmul_fwd, matmul_bwd, matmul_bwd_graph};

/* ---- linear ---- */

static int64_t linear_rows(const Tensor *x) { return dims_numel(x->shape, x->ndim - 1); }

typedef struct {
    float *y;          /* (rows, D) */
    const float *bias; /* (D) */
    int64_t D;
} BiasFillJob;

static void bias_fill_rows(void *ctx, int64_t r0, int64_t r1) {
    BiasFillJob *j = ctx;
    for (int64_t r = r0; r < r1; r++) memcpy(j->y + r * j->D, j->bias, (size_t)j->D * sizeof(float));
}

typedef struct {
    const float *src; /* (rows, D) */
    double *part;     /* (nblocks, D) partial sums */
    int64_t rows, D;
} ColSumJob;

#define COLSUM_ROWS 256

/* partial column sums of row blocks [b0, b1), each over its rows in order */
static void colsum_blocks(void *ctx, int64_t b0, int64_t b1) {
    ColSumJob *j = ctx;
    for (int64_t blk = b0; blk < b1; blk++) {
        double *acc = j->part + blk * j->D;
        int64_t r1 = (blk + 1) * COLSUM_ROWS < j->rows ? (blk + 1) * COLSUM_ROWS : j->rows;
        for (int64_t k = 0; k < j->D; k++) acc[k] = 0;
        int64_t D8 = j->D - j->D % 8;
        for (int64_t r = blk * COLSUM_ROWS; r < r1; r++) {
            const float *s = j->src + r * j->D;
            for (int64_t k = 0; k < D8; k += 8) /* fixed width: vectorised at -O2 */
                for (int q = 0; q < 8; q++) acc[k + q] += s[k + q];
            for (int64_t k = D8; k < j->D; k++) acc[k] += s[k];
        }
    }
}

/* dst (D) += column sums of src (rows, D): fixed row blocks, partials added in block order,
 * so the result does not depend on the thread count */
static Status colsum_accum(Ctx *c, float *dst, const float *src, int64_t rows, int64_t D) {
    int64_t nb = (rows + COLSUM_ROWS - 1) / COLSUM_ROWS;
    ArenaMark mark = arena_mark(c->arena);
    double *part = ctx_alloc(c, (nb ? nb : 1) * (D ? D : 1) * (int64_t)sizeof(double));
    if (!part) return addc_error_status();
    ColSumJob j = {src, part, rows, D};
    parallel_for(nb, 1, colsum_blocks, &j);
    for (int64_t k = 0; k < D; k++) {
        double t = 0;
        for (int64_t blk = 0; blk < nb; blk++) t += part[blk * D + k];
        dst[k] += (float)t;
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

static Status linear_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v, *w = &n->in[1]->v;
    int64_t rows = linear_rows(x), Din = w->shape[1], Dout = w->shape[0];
    float *y = n->out->v.data;
    Var *bias = n->in[2];
    if (bias) {
        BiasFillJob j = {y, bias->v.data, Dout};
        parallel_for(rows, 1 + 16384 / (Dout ? Dout : 1), bias_fill_rows, &j);
    }
    gemm(false, true, rows, Dout, Din, x->data, Din, w->data, Din, bias ? 1.0f : 0.0f, y, Dout);
    return ADDC_OK;
}

static Status linear_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gw = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    const Tensor *x = &n->in[0]->v, *w = &n->in[1]->v;
    int64_t rows = linear_rows(x), Din = w->shape[1], Dout = w->shape[0];
    const float *dy = n->out->g.data;
    if (gx) gemm(false, false, rows, Din, Dout, dy, Dout, w->data, Din, 1.0f, gx, Din);
    if (gw) gemm(true, false, Dout, Din, rows, dy, Dout, x->data, Din, 1.0f, gw, Din);
    if (gb) return colsum_accum(c, gb, dy, rows, Dout);
    return ADDC_OK;
}

static Status linear_bwd_graph(Ctx *c, Node *n) {
    Var *x = n->in[0], *w = n->in[1], *bias = n->in[2], *dy = n->out->gv;
    int64_t rows = linear_rows(&x->v), Din = w->v.shape[1], Dout = w->v.shape[0];
    int64_t sdy[2] = {rows, Dout}, sx[2] = {rows, Din};
    Var *dy2 = op_reshape(c, dy, 2, sdy);
    if (ops_in_wants_gv(n, 0))
        TRY(var_accum_gv(c, x, op_reshape(c, op_matmul(c, dy2, w, false, false), x->v.ndim, x->v.shape)));
    if (ops_in_wants_gv(n, 1)) TRY(var_accum_gv(c, w, op_matmul(c, dy2, op_reshape(c, x, 2, sx), true, false)));
    if (bias && ops_in_wants_gv(n, 2)) TRY(var_accum_gv(c, bias, op_sum_to(c, dy, 1, &Dout)));
    return ADDC_OK;
}

Var *op_linear(Ctx *c, Var *x, Var *w, Var *bias) {
    OPS_NULL_GUARD2(x, w);
    if (!ops_require_same_float("linear", x, w)) return NULL;
    if (bias && !ops_require_float("linear", "bias", bias)) return NULL;
    if (bias && bias->v.dtype != x->v.dtype)
        return ops_fail("linear", "bias is %s but x and w are %s: cast one with op_cast", dtype_name(bias->v.dtype),
                        dtype_name(x->v.dtype));
    char s1[96], s2[96];
    if (x->v.ndim < 1 || w->v.ndim != 2 || x->v.shape[x->v.ndim - 1] != w->v.shape[1])
        return ops_fail("linear", "x %s must end in Din and w %s must be (Dout, Din)",
                        ops_shape_str(&x->v, s1, sizeof s1), ops_shape_str(&w->v, s2, sizeof s2));
    if (bias && (bias->v.ndim != 1 || bias->v.shape[0] != w->v.shape[0]))
        return ops_fail("linear", "bias %s must be (Dout) = (%lld)", ops_shape_str(&bias->v, s1, sizeof s1),
                        (long long)w->v.shape[0]);
    Var *in[3] = {x, w, bias};
    Node n = node_make(OP_LINEAR, 3, in);
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->v.shape, sizeof shape);
    shape[x->v.ndim - 1] = w->v.shape[0];
    return op_exec(c, &n, x->v.dtype, x->v.ndim, shape);
}

const OpImpl cpu_op_linear = {linear_fwd, linear_bwd, linear_bwd_graph};
