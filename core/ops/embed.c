/* core/ops/embed: the sinusoidal timestep embedding (diffusers get_timestep_embedding) and
 * the table lookup embedding (token ids -> rows of a (V, D) table).
 *
 * Gradient rule: the timestep embedding gives no gradient to t (OPF_NO_INPUT_GRAD; its
 * backward exists and does nothing). The embedding ACCUMULATES (+=) each output row's
 * gradient into the table row of its id; threads own disjoint column ranges of the table
 * and walk the ids in order, so repeated ids sum in the same order on any thread count. */
#include <math.h>
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

/* ---- timestep embedding: t (B) -> (B, dim); fp[0] freq_shift, fp[1] max_period, ip[0]
 * flip_sin_to_cos ---- */

typedef struct {
    const float *t;
    float *y;
    const double *freq; /* (half) */
    int64_t dim, half;
    bool flip;
} TembJob;

static void temb_rows(void *ctx, int64_t b0, int64_t b1) {
    const TembJob *j = ctx;
    int64_t half = j->half;
    for (int64_t b = b0; b < b1; b++) {
        float *y = j->y + b * j->dim;
        float *ys = j->flip ? y + half : y, *yc = j->flip ? y : y + half;
        double t = j->t[b];
        for (int64_t i = 0; i < half; i++) {
            double a = t * j->freq[i];
            ys[i] = (float)sin(a);
            yc[i] = (float)cos(a);
        }
        if (j->dim % 2) y[j->dim - 1] = 0.0f;
    }
}

static Status temb_fwd(Ctx *c, Node *n) {
    int64_t dim = n->out->v.shape[1], half = dim / 2;
    ArenaMark mark = arena_mark(c->arena);
    double *freq = ctx_alloc(c, (half ? half : 1) * 8);
    if (!freq) return addc_error_status();
    double scale = -log(n->fp[1]) / ((double)half - n->fp[0]);
    for (int64_t i = 0; i < half; i++) freq[i] = exp(scale * (double)i);
    TembJob j = {n->in[0]->v.data, n->out->v.data, freq, dim, half, n->ip[0] != 0};
    parallel_for(n->out->v.shape[0], half >= 256 ? 1 : 256 / (half ? half : 1), temb_rows, &j);
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

static Status temb_bwd(Ctx *c, Node *n) {
    (void)c;
    (void)n;
    return ADDC_OK;
}

Var *op_timestep_embedding(Ctx *c, Var *t, int dim, bool flip_sin_to_cos, double freq_shift,
                           double max_period) {
    OPS_NULL_GUARD1(t);
    if (!ops_require_float("timestep_embedding", "t", t)) return NULL;
    char s[96];
    if (t->v.ndim != 1)
        return ops_fail("timestep_embedding", "t must be one timestep per sample (B), got %s",
                        ops_shape_str(&t->v, s, sizeof s));
    if (dim < 1) return ops_fail("timestep_embedding", "dim must be positive, got %d", dim);
    if (dim >= 2 && !((double)(dim / 2) - freq_shift > 0))
        return ops_fail("timestep_embedding", "dim / 2 - freq_shift must be positive (dim %d, freq_shift %g)",
                        dim, freq_shift);
    if (!(max_period > 0))
        return ops_fail("timestep_embedding", "max_period must be positive, got %g", max_period);
    int64_t shape[2] = {t->v.shape[0], dim};
    Node n = node_make(OP_TIMESTEP_EMBEDDING, 1, &t);
    n.ip[0] = flip_sin_to_cos;
    n.fp[0] = freq_shift;
    n.fp[1] = max_period;
    return op_exec(c, &n, t->v.dtype, 2, shape);
}

const OpImpl cpu_op_timestep_embedding = {temb_fwd, temb_bwd, NULL};

/* ---- embedding: ids (...) i32/i64, table (V, D) -> (..., D) ---- */

static int64_t ids_at(const Tensor *ids, int64_t p) {
    return ids->dtype == DTYPE_I64 ? ((const int64_t *)ids->data)[p] : ((const int32_t *)ids->data)[p];
}

typedef struct {
    const Tensor *ids; /* (N) as a flat list */
    const float *src;  /* forward: the table (V, D); backward: dy (N, D) */
    float *dst;        /* forward: y (N, D); backward: the table gradient (V, D), += */
    int64_t d, n;      /* D, N */
    int64_t cols;      /* backward: columns per chunk */
} EmbJob;

static void row_add(float *restrict g, const float *restrict dy, int64_t n) {
    int64_t e = 0;
    for (; e + 16 <= n; e += 16)
        for (int64_t k = 0; k < 16; k++) g[e + k] += dy[e + k];
    for (; e < n; e++) g[e] += dy[e];
}

static void emb_fwd_rows(void *ctx, int64_t p0, int64_t p1) {
    const EmbJob *j = ctx;
    for (int64_t p = p0; p < p1; p++)
        memcpy(j->dst + p * j->d, j->src + ids_at(j->ids, p) * j->d, (size_t)j->d * 4);
}

/* column chunk [c0, c1) of every table row, all ids in order */
static void emb_bwd_cols(void *ctx, int64_t k0, int64_t k1) {
    const EmbJob *j = ctx;
    int64_t c0 = k0 * j->cols, c1 = k1 * j->cols < j->d ? k1 * j->cols : j->d;
    for (int64_t p = 0; p < j->n; p++)
        row_add(j->dst + ids_at(j->ids, p) * j->d + c0, j->src + p * j->d + c0, c1 - c0);
}

static Status emb_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *ids = &n->in[0]->v, *table = &n->in[1]->v;
    int64_t v = table->shape[0], np = tensor_numel(ids);
    for (int64_t p = 0; p < np; p++) {
        int64_t id = ids_at(ids, p);
        if (id < 0 || id >= v)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "embedding: id %lld at position %lld is outside the table of %lld rows "
                                  "(ids must lie in 0..%lld)",
                                  (long long)id, (long long)p, (long long)v, (long long)v - 1);
    }
    EmbJob j = {ids, table->data, n->out->v.data, table->shape[1], np, 0};
    parallel_for(np, j.d >= 4096 ? 1 : 4096 / (j.d ? j.d : 1), emb_fwd_rows, &j);
    return ADDC_OK;
}

static Status emb_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gt = ops_in_grad(c, n, 1, &st);
    if (!gt) return st;
    int64_t d = n->in[1]->v.shape[1];
    EmbJob j = {&n->in[0]->v, n->out->g.data, gt, d, tensor_numel(&n->in[0]->v), 64};
    int64_t chunks = (d + j.cols - 1) / j.cols;
    int64_t work = j.n * j.cols; /* elements per chunk */
    parallel_for(chunks, work >= 16384 ? 1 : 16384 / (work ? work : 1), emb_bwd_cols, &j);
    return ADDC_OK;
}

Var *op_embedding(Ctx *c, Var *ids, Var *table) {
    OPS_NULL_GUARD2(ids, table);
    char s[96];
    if (ids->v.dtype != DTYPE_I32 && ids->v.dtype != DTYPE_I64)
        return ops_fail("embedding", "ids must be i32 or i64, got %s", dtype_name(ids->v.dtype));
    if (!ops_require_float("embedding", "table", table)) return NULL;
    if (table->v.ndim != 2)
        return ops_fail("embedding", "table must be (V, D), got %s", ops_shape_str(&table->v, s, sizeof s));
    if (ids->v.ndim + 1 > TENSOR_MAX_DIMS)
        return ops_fail("embedding", "ids %s have too many dims for a (..., D) output (at most %d)",
                        ops_shape_str(&ids->v, s, sizeof s), TENSOR_MAX_DIMS - 1);
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, ids->v.shape, (size_t)ids->v.ndim * 8);
    shape[ids->v.ndim] = table->v.shape[1];
    Var *in[2] = {ids, table};
    Node n = node_make(OP_EMBEDDING, 2, in);
    return op_exec(c, &n, table->v.dtype, ids->v.ndim + 1, shape);
}

const OpImpl cpu_op_embedding = {emb_fwd, emb_bwd, NULL};
