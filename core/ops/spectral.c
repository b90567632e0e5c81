/* core/ops/spectral: spectral normalisation, torch.nn.utils.spectral_norm (the hook version,
 * dim = 0) for the discriminator heads.
 *
 * W = w viewed as (rows = shape[0], cols = the rest, in addc's memory order: a conv1d weight
 * (Cout, K, Cin) has its columns in (K, Cin) order where torch's (Cout, Cin, K) has (Cin, K);
 * sigma and u agree, v is permuted). When `update`, n_iter power iterations run on the
 * caller's u (rows) and v (cols) in place, with normalize(x) = x / max(||x||, eps):
 *   v = normalize(W^T u), u = normalize(W v).
 * Then sigma = u . (W v) and y = w / sigma. The node saves copies of u, v as this forward used
 * them (a later forward moves the caller's state). Inside a checkpoint recompute the update is
 * skipped: the caller's state then already holds what the original forward used.
 *
 * Gradient rule (+=), u and v held constant as in torch:
 *   dw += dy / sigma - (sum(dy * w) / sigma^2) u v^T.
 * The create-graph backward builds the same expression from ops, with sigma = sum(w * u v^T)
 * recomputed from w, so the result is differentiable in both w and dy. */
#include <math.h>
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

#define SN_ROW_GRAIN 16

typedef struct {
    const float *w; /* (rows, cols) */
    const float *x; /* input vector: cols for W x, rows for W^T x */
    double *out;    /* rows for W x; cols for W^T x */
    int64_t rows, cols;
} MatVecJob;

static void matvec_rows(void *ctx, int64_t r0, int64_t r1) {
    MatVecJob *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = j->w + r * j->cols;
        double t = 0;
        for (int64_t k = 0; k < j->cols; k++) t += (double)wr[k] * j->x[k];
        j->out[r] = t;
    }
}

#define SN_COL_BLOCK 256

/* out[k] = sum_r W[r, k] x[r] over blocks of columns, rows walked in order: each column's sum
 * has a fixed order whatever the thread count. */
static void matvec_t_cols(void *ctx, int64_t b0, int64_t b1) {
    MatVecJob *j = ctx;
    for (int64_t b = b0; b < b1; b++) {
        int64_t k0 = b * SN_COL_BLOCK, k1 = k0 + SN_COL_BLOCK < j->cols ? k0 + SN_COL_BLOCK : j->cols;
        double *o = j->out;
        for (int64_t k = k0; k < k1; k++) o[k] = 0;
        for (int64_t r = 0; r < j->rows; r++) {
            const float *wr = j->w + r * j->cols;
            double xr = j->x[r];
            for (int64_t k = k0; k < k1; k++) o[k] += (double)wr[k] * xr;
        }
    }
}

static void sn_matvec(const float *w, const float *x, double *out, int64_t rows, int64_t cols) {
    MatVecJob j = {w, x, out, rows, cols};
    parallel_for(rows, SN_ROW_GRAIN, matvec_rows, &j);
}

static void sn_matvec_t(const float *w, const float *x, double *out, int64_t rows, int64_t cols) {
    MatVecJob j = {w, x, out, rows, cols};
    parallel_for((cols + SN_COL_BLOCK - 1) / SN_COL_BLOCK, 1, matvec_t_cols, &j);
}

/* dst = t / max(||t||, eps), in f32 like F.normalize */
static void sn_normalize(float *dst, const double *t, int64_t n, double eps) {
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += t[i] * t[i];
    float nrm = (float)sqrt(ss);
    if (nrm < (float)eps) nrm = (float)eps;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)t[i] / nrm;
}

typedef struct {
    const float *w;
    float *y;
    float sigma;
} ScaleJob;

static void divide_range(void *ctx, int64_t b, int64_t e) {
    ScaleJob *j = ctx;
    for (int64_t i = b; i < e; i++) j->y[i] = j->w[i] / j->sigma;
}

static Status spectral_fwd(Ctx *c, Node *n) {
    const Tensor *tw = &n->in[0]->v;
    Tensor *tu = n->pp[0], *tv = n->pp[1];
    int64_t rows = tw->shape[0], cols = tensor_numel(tw) / rows;
    const float *w = tw->data;
    float *u = tu->data, *v = tv->data;
    int n_iter = (int)n->ip[0];
    bool update = n->ip[1] && c->recomputing == 0;
    double eps = n->fp[0];
    ArenaMark mark = arena_mark(c->arena);
    double *tr = ctx_alloc(c, rows * (int64_t)sizeof(double));
    double *tc = ctx_alloc(c, cols * (int64_t)sizeof(double));
    if (!tr || !tc) return addc_error_status();
    bool have_wv = false; /* tr holds W v for the current v */
    for (int it = 0; update && it < n_iter; it++) {
        sn_matvec_t(w, u, tc, rows, cols);
        sn_normalize(v, tc, cols, eps);
        sn_matvec(w, v, tr, rows, cols);
        sn_normalize(u, tr, rows, eps);
        have_wv = true;
    }
    if (!have_wv) sn_matvec(w, v, tr, rows, cols);
    double s = 0;
    for (int64_t r = 0; r < rows; r++) s += (double)u[r] * tr[r];
    arena_reset_to(c->arena, mark);
    float sigma = (float)s;
    ScaleJob j = {w, n->out->v.data, sigma};
    parallel_for(tensor_numel(tw), 1 << 15, divide_range, &j);
    n->fp[1] = sigma;
    if (n->save) {
        int64_t sr[1] = {rows}, sc[1] = {cols};
        n->saved[0] = ctx_tensor(c, DTYPE_F32, 1, sr);
        n->saved[1] = ctx_tensor(c, DTYPE_F32, 1, sc);
        if (!n->saved[0].data || !n->saved[1].data) return addc_error_status();
        memcpy(n->saved[0].data, u, (size_t)rows * 4);
        memcpy(n->saved[1].data, v, (size_t)cols * 4);
    }
    return ADDC_OK;
}

typedef struct {
    const float *w, *dy, *u, *v;
    float *dw;
    double *partial; /* (rows) sum(dy * w) over each row */
    int64_t cols;
    double inv_sigma, coef; /* coef = sum(dy * w) / sigma^2 */
} SnBwdJob;

static void dot_rows(void *ctx, int64_t r0, int64_t r1) {
    SnBwdJob *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *wr = j->w + r * j->cols, *dr = j->dy + r * j->cols;
        double t = 0;
        for (int64_t k = 0; k < j->cols; k++) t += (double)dr[k] * wr[k];
        j->partial[r] = t;
    }
}

static void grad_rows(void *ctx, int64_t r0, int64_t r1) {
    SnBwdJob *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *dr = j->dy + r * j->cols;
        float *gr = j->dw + r * j->cols;
        double cu = j->coef * j->u[r];
        for (int64_t k = 0; k < j->cols; k++) gr[k] += (float)(dr[k] * j->inv_sigma - cu * j->v[k]);
    }
}

static Status spectral_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *dw = ops_in_grad(c, n, 0, &st);
    if (!dw) return st;
    const Tensor *tw = &n->in[0]->v;
    int64_t rows = tw->shape[0], cols = tensor_numel(tw) / rows;
    ArenaMark mark = arena_mark(c->arena);
    double *partial = ctx_alloc(c, rows * (int64_t)sizeof(double));
    if (!partial) return addc_error_status();
    double sigma = n->fp[1];
    SnBwdJob j = {tw->data, n->out->g.data, n->saved[0].data, n->saved[1].data, dw, partial, cols,
                  1.0 / sigma, 0.0};
    parallel_for(rows, SN_ROW_GRAIN, dot_rows, &j);
    double s = 0;
    for (int64_t r = 0; r < rows; r++) s += partial[r];
    j.coef = s / (sigma * sigma);
    parallel_for(rows, SN_ROW_GRAIN, grad_rows, &j);
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

static Status spectral_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    Var *w0 = n->in[0], *dy = n->out->gv;
    /* a bf16 w (CUDA) enters the f32 expression through a cast: dw (f32) is the gradient of w0, and
     * a later backward through dw reaches w0 through the cast */
    Var *w = w0->v.dtype == DTYPE_F32 ? w0 : op_cast(c, w0, DTYPE_F32);
    int64_t rows = n->saved[0].shape[0], cols = n->saved[1].shape[0];
    int64_t sr[2] = {rows, 1}, sc[2] = {1, cols};
    Var *u = op_reshape(c, ops_const(c, n->saved[0]), 2, sr);
    Var *v = op_reshape(c, ops_const(c, n->saved[1]), 2, sc);
    Var *uv = op_reshape(c, op_mul(c, u, v), w->v.ndim, w->v.shape);
    Var *sigma = op_sum(c, op_mul(c, w, uv));
    Var *coef = op_div(c, op_sum(c, op_mul(c, dy, w)), op_mul(c, sigma, sigma));
    Var *dw = op_sub(c, op_div(c, dy, sigma), op_mul(c, uv, coef));
    return var_accum_gv(c, w0, dw);
}

static bool state_ok(const char *what, const Tensor *t, int64_t n, Device dev) {
    if (!t || (dev != DEVICE_META && !t->data)) {
        ops_fail("spectral_norm", "%s state has no storage", what);
        return false;
    }
    if (t->dtype != DTYPE_F32 || tensor_numel(t) != n || t->device != dev) {
        char s[96];
        ops_fail("spectral_norm", "%s state must be f32 on %s with %lld elements, got %s %s on %s", what,
                 device_name(dev), (long long)n, ops_shape_str(t, s, sizeof s), dtype_name(t->dtype),
                 device_name(t->device));
        return false;
    }
    return true;
}

Var *op_spectral_norm(Ctx *c, Var *w, Tensor *u, Tensor *v, int n_iter, double eps, bool update) {
    OPS_NULL_GUARD1(w);
    if (!ops_require_float("spectral_norm", "w", w)) return NULL;
    if (w->v.ndim < 1 || w->v.shape[0] == 0 || tensor_numel(&w->v) == 0) {
        char s[96];
        return ops_fail("spectral_norm", "w must have at least one row and one column, got %s",
                        ops_shape_str(&w->v, s, sizeof s));
    }
    if (n_iter < 0) return ops_fail("spectral_norm", "n_iter must be >= 0, got %d", n_iter);
    if (!(eps > 0)) return ops_fail("spectral_norm", "eps must be > 0, got %g", eps);
    int64_t rows = w->v.shape[0], cols = tensor_numel(&w->v) / rows;
    if (!state_ok("u", u, rows, w->v.device) || !state_ok("v", v, cols, w->v.device)) return NULL;
    Node n = node_make(OP_SPECTRAL_NORM, 1, &w);
    n.ip[0] = n_iter;
    n.ip[1] = update;
    n.fp[0] = eps;
    n.pp[0] = u;
    n.pp[1] = v;
    return op_exec(c, &n, w->v.dtype, w->v.ndim, w->v.shape);
}

const OpImpl cpu_op_spectral_norm = {spectral_fwd, spectral_bwd, spectral_bwd_graph};
