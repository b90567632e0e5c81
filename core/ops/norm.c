/* core/ops/norm: group norm (optionally fused with a SiLU), layer norm and StyleGAN-T's
 * BatchNormLocal, channels last.
 *
 * Group norm and BatchNormLocal share one kernel: x viewed as (S, R, C), S segments of R
 * rows, C channels cut into NG groups of C/NG; statistics per (segment, group), biased
 * variance, eps inside the sqrt; y = (x - mean) * rstd * gamma + beta. Group norm is
 * S = B, R = positions, NG = groups; BatchNormLocal is S = G groups of B/G samples,
 * R = (B/G) * N, NG = C. Node parameters: ip = {S, R, C, NG, silu}, fp = {eps}; ip[4]
 * (GN_IP_SILU) is 1 for op_group_norm_silu, which is the same op (OP_GROUP_NORM) followed
 * by y = z * sigmoid(z) on the normalised z, and 0 otherwise. Layer norm is its own row
 * kernel. Statistics are summed in double over fixed chunks (results do not depend on the
 * thread count); the forward saves mean and rstd in f64 (saved[0], saved[1]: (S, NG), or
 * (rows) for layer norm), and normalising subtracts the mean before scaling, so inputs
 * whose mean is far larger than their spread stay accurate. The CUDA kernels
 * (core/cuda/norm.cu) save their own f32 statistics in the same slots.
 *
 * Gradient rule: += into dx, dgamma, dbeta. With xhat = (x - mean) * rstd and
 * dxhat = dy * gamma, dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) (means
 * over the statistics' set), dgamma = sum dy * xhat, dbeta = sum dy. With the fused SiLU,
 * dy is first multiplied by silu'(z), z recomputed from x and the saved statistics (the
 * pre-activation is not saved).
 * BatchNormLocal also has a create-graph backward that recomputes the normalisation from x
 * with differentiable ops, so the exact R1 penalty can differentiate through it.
 * Values are f32 on the CPU; the CUDA kernels also take bf16 (gamma and beta of x's dtype),
 * the output has x's dtype. */
#include <math.h>
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"
#include "core/ops/simd.h"

#define NORM_CHUNK_ELEMS 32768 /* elements per row chunk of the statistics pass */
#define LN_CHUNK_ROWS 64       /* rows per chunk of the layer-norm parameter gradient */
#define GN_IP_SILU 4           /* n->ip slot of the fused-SiLU flag (OP_GROUP_NORM; 0 for BatchNormLocal) */

typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));

static inline v4d v4d_load_f32(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return __builtin_convertvector(v, v4d);
}
static inline v4d v4d_load(const double *p) {
    v4d v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v4d_store(double *p, v4d v) { memcpy(p, &v, sizeof v); }

/* ---- the fused SiLU ---- */


typedef struct {
    float *z;       /* (n): pre-activations; overwritten with the result */
    const float *dy; /* (n) or NULL */
} SiluJob;

/* dy NULL: z <- z * sigmoid(z) (forward); else z <- dy * silu'(z), silu'(z) = s + z s (1 - s)
 * with s = sigmoid(z) (the upstream gradient of the normalisation) */
static void silu_items(void *ctx, int64_t i0, int64_t i1) {
    SiluJob *j = ctx;
    const v8f one = v8_set1(1.0f);
    for (int64_t i = i0; i < i1; i += 8) {
        int64_t m = i1 - i < 8 ? i1 - i : 8;
        float zb[8] = {0}, db[8] = {0};
        memcpy(zb, j->z + i, (size_t)m * 4);
        v8f z = v8_load(zb), s = one / (one + v8_exp(-z)), r;
        if (j->dy) {
            memcpy(db, j->dy + i, (size_t)m * 4);
            r = v8_load(db) * (s + z * s * (one - s));
        } else {
            r = z * s;
        }
        v8_store(zb, r);
        memcpy(j->z + i, zb, (size_t)m * 4);
    }
}

static void silu_run(float *z, const float *dy, int64_t n) {
    SiluJob j = {z, dy};
    parallel_for(n, NORM_CHUNK_ELEMS, silu_items, &j);
}

/* s1[c] += sum_r a[r, c], s2[c] += sum_r a[r, c] * b[r, c] over rows of length C, in double */
static void colsum_rows(const float *a, const float *b, int64_t rows, int64_t C, double *s1, double *s2) {
    for (int64_t r = 0; r < rows; r++) {
        const float *pa = a + r * C, *pb = b + r * C;
        int64_t c = 0;
        for (; c + 4 <= C; c += 4) {
            v4d va = v4d_load_f32(pa + c), vb = v4d_load_f32(pb + c);
            v4d_store(s1 + c, v4d_load(s1 + c) + va);
            v4d_store(s2 + c, v4d_load(s2 + c) + va * vb);
        }
        for (; c < C; c++) {
            s1[c] += pa[c];
            s2[c] += (double)pa[c] * pb[c];
        }
    }
}

/* y[c] (+)= a[c] * (x[c] - sh[c]) + k[c] (+ b[c] * z[c] when z is set); subtracting the
 * shift (the mean) first keeps the result accurate when |mean| >> std */
static void affine_row(float *y, const float *x, const float *sh, const float *a, const float *k, const float *z,
                       const float *b, int64_t C, bool accum) {
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
        v8f t = v8_load(a + c) * (v8_load(x + c) - v8_load(sh + c)) + v8_load(k + c);
        if (z) t += v8_load(b + c) * v8_load(z + c);
        v8_store(y + c, accum ? v8_load(y + c) + t : t);
    }
    for (; c < C; c++) {
        float t = a[c] * (x[c] - sh[c]) + k[c];
        if (z) t += b[c] * z[c];
        y[c] = accum ? y[c] + t : t;
    }
}

/* ---- the segment/group kernel shared by group norm and BatchNormLocal ---- */

typedef struct {
    int64_t S, R, C, NG; /* x viewed as (S, R, C), NG groups of C / NG channels */
    double eps;
} SegNorm;

typedef struct {
    const SegNorm *p;
    const float *a, *b; /* (S, R, C) */
    int64_t chunk_rows, nch;
    double *part; /* (S * nch, 2, C): per-chunk sums of a and a * b */
} ColSumJob;

static void colsum_items(void *ctx, int64_t i0, int64_t i1) {
    ColSumJob *j = ctx;
    int64_t R = j->p->R, C = j->p->C;
    for (int64_t it = i0; it < i1; it++) {
        int64_t s = it / j->nch, ch = it % j->nch;
        int64_t r0 = ch * j->chunk_rows, r1 = r0 + j->chunk_rows < R ? r0 + j->chunk_rows : R;
        double *s1 = j->part + it * 2 * C, *s2 = s1 + C;
        memset(s1, 0, (size_t)(2 * C) * sizeof(double));
        int64_t off = (s * R + r0) * C;
        colsum_rows(j->a + off, j->b + off, r1 - r0, C, s1, s2);
    }
}

/* sum1, sum2 (S, C) = per-segment column sums of a and a * b, deterministic. Scratch from
 * the arena above the caller's mark. */
static Status seg_colsums(Ctx *c, const SegNorm *p, const float *a, const float *b, double *sum1, double *sum2) {
    ColSumJob j = {.p = p, .a = a, .b = b};
    j.chunk_rows = NORM_CHUNK_ELEMS / (p->C ? p->C : 1);
    if (j.chunk_rows < 1) j.chunk_rows = 1;
    j.nch = (p->R + j.chunk_rows - 1) / j.chunk_rows;
    if (j.nch < 1) j.nch = 1;
    j.part = ctx_alloc(c, p->S * j.nch * 2 * p->C * (int64_t)sizeof(double));
    if (!j.part) return addc_error_status();
    parallel_for(p->S * j.nch, 1, colsum_items, &j);
    memset(sum1, 0, (size_t)(p->S * p->C) * sizeof(double));
    memset(sum2, 0, (size_t)(p->S * p->C) * sizeof(double));
    for (int64_t s = 0; s < p->S; s++)
        for (int64_t ch = 0; ch < j.nch; ch++) {
            const double *s1 = j.part + (s * j.nch + ch) * 2 * p->C, *s2 = s1 + p->C;
            for (int64_t k = 0; k < p->C; k++) {
                sum1[s * p->C + k] += s1[k];
                sum2[s * p->C + k] += s2[k];
            }
        }
    return ADDC_OK;
}

typedef struct {
    int64_t R, C;
    const float *x, *z;         /* (S, R, C); z may be NULL */
    const float *sh, *a, *k, *b; /* (S, C) per-segment coefficients */
    float *y;
    bool accum;
} RowAffJob;

static void rowaff_rows(void *ctx, int64_t r0, int64_t r1) {
    RowAffJob *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        int64_t off = r * j->C, so = r / j->R * j->C;
        affine_row(j->y + off, j->x + off, j->sh + so, j->a + so, j->k + so, j->z ? j->z + off : NULL,
                   j->b ? j->b + so : NULL, j->C, j->accum);
    }
}

static void rowaff_run(const SegNorm *p, RowAffJob *j) {
    j->R = p->R;
    j->C = p->C;
    int64_t grain = NORM_CHUNK_ELEMS / (p->C ? p->C : 1);
    parallel_for(p->S * p->R, grain < 1 ? 1 : grain, rowaff_rows, j);
}

/* Per-(segment, channel) coefficients of y = a * (x - sh) + k from the statistics mean,
 * rstd (S, NG): sh = mean rounded to f32, a = rstd * gamma, k = beta + a * (sh - mean) */
static void seg_coefs(const SegNorm *p, const double *mean, const double *rstd, const float *gamma, const float *beta,
                      float *csh, float *ca, float *ck) {
    int64_t C = p->C, NG = p->NG, cg = C / NG;
    for (int64_t s = 0; s < p->S; s++)
        for (int64_t g = 0; g < NG; g++) {
            double mu = mean[s * NG + g], rs = rstd[s * NG + g];
            for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
                float sh = (float)mu;
                double a = rs * (gamma ? gamma[k] : 1.0);
                csh[s * C + k] = sh;
                ca[s * C + k] = (float)a;
                ck[s * C + k] = (float)((beta ? beta[k] : 0.0) + a * (sh - mu));
            }
        }
}

static Status segnorm_fwd(Ctx *c, Node *n, const SegNorm *p, bool silu) {
    const float *x = n->in[0]->v.data;
    const float *gamma = n->in[1] ? n->in[1]->v.data : NULL, *beta = n->in[2] ? n->in[2]->v.data : NULL;
    int64_t S = p->S, C = p->C, NG = p->NG, cg = C / NG;
    int64_t st_shape[2] = {S, NG};
    Tensor mean_t = {0}, rstd_t = {0};
    if (n->save) {
        mean_t = ctx_tensor(c, DTYPE_F64, 2, st_shape);
        rstd_t = ctx_tensor(c, DTYPE_F64, 2, st_shape);
        if (!mean_t.data || !rstd_t.data) return addc_error_status();
    }
    ArenaMark mark = arena_mark(c->arena);
    double *s1 = ctx_alloc(c, S * C * (int64_t)sizeof(double));
    double *s2 = ctx_alloc(c, S * C * (int64_t)sizeof(double));
    double *mean = n->save ? mean_t.data : ctx_alloc(c, S * NG * (int64_t)sizeof(double));
    double *rstd = n->save ? rstd_t.data : ctx_alloc(c, S * NG * (int64_t)sizeof(double));
    float *csh = ctx_alloc(c, S * C * 4), *ca = ctx_alloc(c, S * C * 4), *ck = ctx_alloc(c, S * C * 4);
    if (!s1 || !s2 || !mean || !rstd || !csh || !ca || !ck) return addc_error_status();
    Status st = seg_colsums(c, p, x, x, s1, s2);
    if (st) return st;
    double cnt = (double)p->R * (double)cg;
    for (int64_t s = 0; s < S; s++)
        for (int64_t g = 0; g < NG; g++) {
            double t1 = 0, t2 = 0;
            for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
                t1 += s1[s * C + k];
                t2 += s2[s * C + k];
            }
            double mu = cnt > 0 ? t1 / cnt : 0.0;
            double var = cnt > 0 ? t2 / cnt - mu * mu : 0.0;
            if (var < 0) var = 0;
            mean[s * NG + g] = mu;
            rstd[s * NG + g] = 1.0 / sqrt(var + p->eps);
        }
    seg_coefs(p, mean, rstd, gamma, beta, csh, ca, ck);
    RowAffJob j = {.x = x, .sh = csh, .a = ca, .k = ck, .y = n->out->v.data};
    rowaff_run(p, &j);
    if (silu) silu_run(n->out->v.data, NULL, S * p->R * C);
    arena_reset_to(c->arena, mark);
    n->saved[0] = mean_t;
    n->saved[1] = rstd_t;
    return ADDC_OK;
}

static Status segnorm_bwd(Ctx *c, Node *n, const SegNorm *p, bool silu) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gg = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    if (!gx && !gg && !gb) return ADDC_OK;
    const float *x = n->in[0]->v.data, *dy = n->out->g.data;
    const float *gamma = n->in[1] ? n->in[1]->v.data : NULL, *beta = n->in[2] ? n->in[2]->v.data : NULL;
    const double *mean = n->saved[0].data, *rstd = n->saved[1].data;
    int64_t S = p->S, C = p->C, NG = p->NG, cg = C / NG;
    ArenaMark mark = arena_mark(c->arena);
    double *sdy = ctx_alloc(c, S * C * (int64_t)sizeof(double));
    double *sxdy = ctx_alloc(c, S * C * (int64_t)sizeof(double));
    double *dgb = arena_calloc(c->arena, 2 * C * (int64_t)sizeof(double));
    float *csh = ctx_alloc(c, S * C * 4), *ca = ctx_alloc(c, S * C * 4), *cb = ctx_alloc(c, S * C * 4);
    float *ck = ctx_alloc(c, S * C * 4);
    if (!sdy || !sxdy || !dgb || !csh || !ca || !cb || !ck) return addc_error_status();
    if (silu) {
        /* dy <- dy * silu'(z), z recomputed exactly as the forward computed it */
        int64_t numel = S * p->R * C;
        float *dz = ctx_alloc(c, numel * 4);
        if (!dz) return addc_error_status();
        seg_coefs(p, mean, rstd, gamma, beta, csh, ca, ck);
        RowAffJob z = {.x = x, .sh = csh, .a = ca, .k = ck, .y = dz};
        rowaff_run(p, &z);
        silu_run(dz, dy, numel);
        dy = dz;
    }
    st = seg_colsums(c, p, dy, x, sdy, sxdy);
    if (st) return st;
    double cnt = (double)p->R * (double)cg;
    for (int64_t s = 0; s < S; s++)
        for (int64_t g = 0; g < NG; g++) {
            double mu = mean[s * NG + g], rs = rstd[s * NG + g], m1 = 0, m2 = 0;
            for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
                double a = sdy[s * C + k], dyxh = rs * (sxdy[s * C + k] - mu * a); /* sum dy * xhat */
                double gm = gamma ? gamma[k] : 1.0;
                dgb[k] += dyxh;
                dgb[C + k] += a;
                m1 += gm * a;
                m2 += gm * dyxh;
            }
            m1 /= cnt;
            m2 /= cnt;
            for (int64_t k = g * cg; k < (g + 1) * cg; k++) {
                float sh = (float)mu;
                double a = -rs * rs * m2;
                csh[s * C + k] = sh;
                ca[s * C + k] = (float)a;
                ck[s * C + k] = (float)(-rs * m1 + a * (sh - mu));
                cb[s * C + k] = (float)(rs * (gamma ? gamma[k] : 1.0));
            }
        }
    for (int64_t k = 0; k < C; k++) {
        if (gg) gg[k] += (float)dgb[k];
        if (gb) gb[k] += (float)dgb[C + k];
    }
    if (gx) {
        RowAffJob j = {.x = x, .sh = csh, .a = ca, .k = ck, .z = dy, .b = cb, .y = gx, .accum = true};
        rowaff_run(p, &j);
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

/* gamma and beta: (C) or NULL, of x's dtype */
static bool check_affine(const char *op, const Var *x, Var *gamma, Var *beta, int64_t C) {
    Var *pv[2] = {gamma, beta};
    const char *nm[2] = {"gamma", "beta"};
    for (int i = 0; i < 2; i++) {
        if (!pv[i]) continue;
        if (!ops_require_float(op, nm[i], pv[i])) return false;
        if (pv[i]->v.dtype != x->v.dtype) {
            ops_fail(op, "%s is %s but x is %s: cast it with op_cast", nm[i], dtype_name(pv[i]->v.dtype),
                     dtype_name(x->v.dtype));
            return false;
        }
        if (pv[i]->v.ndim != 1 || pv[i]->v.shape[0] != C) {
            char s[96];
            ops_fail(op, "%s must have shape (%lld), got %s", nm[i], (long long)C,
                     ops_shape_str(&pv[i]->v, s, sizeof s));
            return false;
        }
    }
    return true;
}

static SegNorm seg_params(const Node *n) { return (SegNorm){n->ip[0], n->ip[1], n->ip[2], n->ip[3], n->fp[0]}; }

static Status seg_fwd(Ctx *c, Node *n) {
    SegNorm p = seg_params(n);
    return segnorm_fwd(c, n, &p, n->ip[GN_IP_SILU] != 0);
}

static Status seg_bwd(Ctx *c, Node *n) {
    SegNorm p = seg_params(n);
    return segnorm_bwd(c, n, &p, n->ip[GN_IP_SILU] != 0);
}

/* ---- group norm ---- */

static Var *group_norm_node(Ctx *c, const char *op, Var *x, Var *gamma, Var *beta, int groups, double eps, bool silu) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float(op, "x", x)) return NULL;
    if (x->v.ndim < 2) return ops_fail(op, "x must be (B, ..., C), got rank %d", x->v.ndim);
    int64_t B = x->v.shape[0], C = x->v.shape[x->v.ndim - 1];
    if (groups < 1 || C % groups != 0)
        return ops_fail(op, "%lld channels cannot be split into %d equal groups; choose groups dividing C",
                        (long long)C, groups);
    if (!check_affine(op, x, gamma, beta, C)) return NULL;
    int64_t R = 1;
    for (int d = 1; d < x->v.ndim - 1; d++) R *= x->v.shape[d];
    Var *in[3] = {x, gamma, beta};
    Node n = node_make(OP_GROUP_NORM, 3, in);
    n.ip[0] = B;
    n.ip[1] = R;
    n.ip[2] = C;
    n.ip[3] = groups;
    n.ip[GN_IP_SILU] = silu;
    n.fp[0] = eps;
    return op_exec(c, &n, x->v.dtype, x->v.ndim, x->v.shape);
}

Var *op_group_norm(Ctx *c, Var *x, Var *gamma, Var *beta, int groups, double eps) {
    return group_norm_node(c, "group_norm", x, gamma, beta, groups, eps, false);
}

Var *op_group_norm_silu(Ctx *c, Var *x, Var *gamma, Var *beta, int groups, double eps) {
    return group_norm_node(c, "group_norm_silu", x, gamma, beta, groups, eps, true);
}

const OpImpl cpu_op_group_norm = {seg_fwd, seg_bwd, NULL};

/* ---- BatchNormLocal ---- */

/* Recomputes xhat from x with ops; every term is then a differentiable function of x,
 * gamma, beta and dy. */
static Status bnl_bwd_graph(Ctx *c, Node *n) {
    Var *x = n->in[0], *gamma = n->in[1], *beta = n->in[2], *dy = n->out->gv;
    bool wx = ops_in_wants_gv(n, 0), wg = gamma && ops_in_wants_gv(n, 1), wb = beta && ops_in_wants_gv(n, 2);
    int64_t G = n->ip[0], C = n->ip[2], N = x->v.shape[1], Bg = x->v.shape[0] / G;
    int64_t s4[4] = {G, Bg, N, C}, st4[4] = {G, 1, 1, C}, c1[1] = {C};
    Var *dyr = op_reshape(c, dy, 4, s4);
    Status st = ADDC_OK;
    if (wb) st = var_accum_gv(c, beta, op_sum_to(c, dyr, 1, c1));
    if (st || (!wx && !wg)) return st;
    Var *xr = op_reshape(c, x, 4, s4);
    Var *xc = op_sub(c, xr, op_mean_to(c, xr, 4, st4));
    Var *rstd = op_rsqrt(c, op_mean_to(c, op_mul(c, xc, xc), 4, st4), n->fp[0]);
    Var *xhat = op_mul(c, xc, rstd);
    if (wg) st = var_accum_gv(c, gamma, op_sum_to(c, op_mul(c, dyr, xhat), 1, c1));
    if (st || !wx) return st;
    Var *dxhat = gamma ? op_mul(c, dyr, gamma) : dyr;
    Var *m1 = op_mean_to(c, dxhat, 4, st4);
    Var *m2 = op_mean_to(c, op_mul(c, dxhat, xhat), 4, st4);
    Var *dx = op_mul(c, op_sub(c, op_sub(c, dxhat, m1), op_mul(c, xhat, m2)), rstd);
    return var_accum_gv(c, x, op_reshape(c, dx, x->v.ndim, x->v.shape));
}

Var *op_batch_norm_local(Ctx *c, Var *x, Var *gamma, Var *beta, int virtual_bs, double eps) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("batch_norm_local", "x", x)) return NULL;
    if (x->v.ndim != 3) return ops_fail("batch_norm_local", "x must be (B, N, C), got rank %d", x->v.ndim);
    if (virtual_bs < 1) return ops_fail("batch_norm_local", "virtual_bs must be >= 1, got %d", virtual_bs);
    int64_t B = x->v.shape[0], N = x->v.shape[1], C = x->v.shape[2];
    int64_t G = (B + virtual_bs - 1) / virtual_bs;
    if (G < 1 || B % G != 0)
        return ops_fail("batch_norm_local",
                        "batch %lld cannot be cut into %lld equal groups (virtual_bs %d); use a batch size "
                        "divisible by ceil(B / virtual_bs)",
                        (long long)B, (long long)G, virtual_bs);
    if (!check_affine("batch_norm_local", x, gamma, beta, C)) return NULL;
    Var *in[3] = {x, gamma, beta};
    Node n = node_make(OP_BATCH_NORM_LOCAL, 3, in);
    n.ip[0] = G;
    n.ip[1] = (B / G) * N;
    n.ip[2] = C;
    n.ip[3] = C;
    n.fp[0] = eps;
    return op_exec(c, &n, x->v.dtype, 3, x->v.shape);
}

const OpImpl cpu_op_batch_norm_local = {seg_fwd, seg_bwd, bnl_bwd_graph};

/* ---- layer norm ---- */

typedef struct {
    int64_t rows, D;
    double eps;
    const float *x, *dy;      /* (rows, D) */
    const float *gamma, *beta; /* (D) or NULL */
    float *y, *gx;            /* (rows, D); gx NULL when x needs no gradient */
    double *mean, *rstd;      /* (rows), NULL when not saved */
    float *part;              /* (nchunks, 2, D): per-chunk dgamma, dbeta partials, or NULL */
} LnJob;

static void ln_fwd_rows(void *ctx, int64_t r0, int64_t r1) {
    LnJob *j = ctx;
    int64_t D = j->D;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * D;
        float *y = j->y + r * D;
        v4d a1 = {0, 0, 0, 0}, a2 = {0, 0, 0, 0};
        int64_t k = 0;
        for (; k + 4 <= D; k += 4) {
            v4d v = v4d_load_f32(x + k);
            a1 += v;
            a2 += v * v;
        }
        double t1 = a1[0] + a1[1] + a1[2] + a1[3], t2 = a2[0] + a2[1] + a2[2] + a2[3];
        for (; k < D; k++) {
            t1 += x[k];
            t2 += (double)x[k] * x[k];
        }
        double mean = t1 / (double)D, var = t2 / (double)D - mean * mean;
        if (var < 0) var = 0;
        double rs = 1.0 / sqrt(var + j->eps);
        if (j->mean) {
            j->mean[r] = mean;
            j->rstd[r] = rs;
        }
        float fm = (float)mean, fr = (float)rs, corr = (float)(((double)fm - mean) * rs);
        v8f vm = v8_set1(fm), vr = v8_set1(fr), vc = v8_set1(corr);
        k = 0;
        for (; k + 8 <= D; k += 8) {
            v8f t = (v8_load(x + k) - vm) * vr + vc;
            if (j->gamma) t = t * v8_load(j->gamma + k);
            if (j->beta) t = t + v8_load(j->beta + k);
            v8_store(y + k, t);
        }
        for (; k < D; k++) {
            float t = (x[k] - fm) * fr + corr;
            if (j->gamma) t *= j->gamma[k];
            if (j->beta) t += j->beta[k];
            y[k] = t;
        }
    }
}

static Status ln_fwd(Ctx *c, Node *n) {
    LnJob j = {.rows = n->ip[0], .D = n->ip[1], .eps = n->fp[0], .x = n->in[0]->v.data,
               .gamma = n->in[1] ? n->in[1]->v.data : NULL, .beta = n->in[2] ? n->in[2]->v.data : NULL,
               .y = n->out->v.data};
    if (n->save) {
        n->saved[0] = ctx_tensor(c, DTYPE_F64, 1, &j.rows);
        n->saved[1] = ctx_tensor(c, DTYPE_F64, 1, &j.rows);
        if (!n->saved[0].data || !n->saved[1].data) return addc_error_status();
        j.mean = n->saved[0].data;
        j.rstd = n->saved[1].data;
    }
    int64_t grain = NORM_CHUNK_ELEMS / (j.D ? j.D : 1);
    parallel_for(j.rows, grain < 1 ? 1 : grain, ln_fwd_rows, &j);
    return ADDC_OK;
}

static inline v8f v8_load_or1(const float *p, int64_t k) { return p ? v8_load(p + k) : v8_set1(1.0f); }

/* one chunk of LN_CHUNK_ROWS rows per index: dx rows and this chunk's dgamma/dbeta partials */
static void ln_bwd_chunks(void *ctx, int64_t c0, int64_t c1) {
    LnJob *j = ctx;
    int64_t D = j->D, D8 = D / 8 * 8;
    const float *gm = j->gamma;
    for (int64_t ch = c0; ch < c1; ch++) {
        float *pg = j->part ? j->part + ch * 2 * D : NULL, *pb = pg ? pg + D : NULL;
        if (pg) memset(pg, 0, (size_t)(2 * D) * 4);
        int64_t r0 = ch * LN_CHUNK_ROWS, r1 = r0 + LN_CHUNK_ROWS < j->rows ? r0 + LN_CHUNK_ROWS : j->rows;
        for (int64_t r = r0; r < r1; r++) {
            const float *x = j->x + r * D, *dy = j->dy + r * D;
            float mu = (float)j->mean[r], rs = (float)j->rstd[r];
            float corr = (float)(((double)mu - j->mean[r]) * j->rstd[r]);
            v8f vmu = v8_set1(mu), vrs = v8_set1(rs), vc = v8_set1(corr), a1 = v8_set1(0.0f), a2 = a1;
            for (int64_t k = 0; k < D8; k += 8) {
                v8f vdy = v8_load(dy + k), xh = (v8_load(x + k) - vmu) * vrs + vc, dxh = vdy * v8_load_or1(gm, k);
                a1 += dxh;
                a2 += dxh * xh;
                if (pg) {
                    v8_store(pg + k, v8_load(pg + k) + vdy * xh);
                    v8_store(pb + k, v8_load(pb + k) + vdy);
                }
            }
            double m1 = v8_hsum(a1), m2 = v8_hsum(a2);
            for (int64_t k = D8; k < D; k++) {
                float xh = (x[k] - mu) * rs + corr, dxh = gm ? dy[k] * gm[k] : dy[k];
                m1 += dxh;
                m2 += (double)dxh * xh;
                if (pg) {
                    pg[k] += dy[k] * xh;
                    pb[k] += dy[k];
                }
            }
            if (!j->gx) continue;
            float f1 = (float)(m1 / (double)D), f2 = (float)(m2 / (double)D);
            float *gx = j->gx + r * D;
            v8f vf1 = v8_set1(f1), vf2 = v8_set1(f2);
            for (int64_t k = 0; k < D8; k += 8) {
                v8f xh = (v8_load(x + k) - vmu) * vrs + vc, dxh = v8_load(dy + k) * v8_load_or1(gm, k);
                v8_store(gx + k, v8_load(gx + k) + vrs * (dxh - vf1 - xh * vf2));
            }
            for (int64_t k = D8; k < D; k++) {
                float xh = (x[k] - mu) * rs + corr, dxh = gm ? dy[k] * gm[k] : dy[k];
                gx[k] += rs * (dxh - f1 - xh * f2);
            }
        }
    }
}

static Status ln_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gg = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    LnJob j = {.rows = n->ip[0], .D = n->ip[1], .x = n->in[0]->v.data,
               .gamma = n->in[1] ? n->in[1]->v.data : NULL, .dy = n->out->g.data, .mean = n->saved[0].data,
               .rstd = n->saved[1].data, .gx = gx};
    if (j.rows == 0 || j.D == 0) return ADDC_OK;
    int64_t nch = (j.rows + LN_CHUNK_ROWS - 1) / LN_CHUNK_ROWS;
    ArenaMark mark = arena_mark(c->arena);
    if (gg || gb) {
        j.part = ctx_alloc(c, nch * 2 * j.D * 4);
        if (!j.part) return addc_error_status();
    }
    parallel_for(nch, 1, ln_bwd_chunks, &j);
    if (j.part) {
        for (int64_t k = 0; k < j.D; k++) {
            double sg = 0, sb = 0;
            for (int64_t ch = 0; ch < nch; ch++) {
                sg += j.part[ch * 2 * j.D + k];
                sb += j.part[ch * 2 * j.D + j.D + k];
            }
            if (gg) gg[k] += (float)sg;
            if (gb) gb[k] += (float)sb;
        }
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

Var *op_layer_norm(Ctx *c, Var *x, Var *gamma, Var *beta, double eps) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("layer_norm", "x", x)) return NULL;
    if (x->v.ndim < 1) return ops_fail("layer_norm", "x must have at least one dim");
    int64_t D = x->v.shape[x->v.ndim - 1];
    if (!check_affine("layer_norm", x, gamma, beta, D)) return NULL;
    Var *in[3] = {x, gamma, beta};
    Node n = node_make(OP_LAYER_NORM, 3, in);
    n.ip[0] = D ? tensor_numel(&x->v) / D : 0;
    n.ip[1] = D;
    n.fp[0] = eps;
    return op_exec(c, &n, x->v.dtype, x->v.ndim, x->v.shape);
}

const OpImpl cpu_op_layer_norm = {ln_fwd, ln_bwd, NULL};
