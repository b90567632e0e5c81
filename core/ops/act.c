/* core/ops/act: activations: silu, gelu (exact erf form and PyTorch's tanh approximation),
 * geglu (diffusers GEGLU after its projection), leaky_relu, relu and the hinge max(0, 1 + s x).
 *
 * Gradient rule: the input gradient is ACCUMULATED (+=) with dy * f'(x), recomputed from the
 * input (nothing is saved). leaky_relu, relu and hinge are piecewise linear: their
 * create-graph backward multiplies the incoming gradient Var by a constant mask Var holding
 * f'(x) (PyTorch's conventions at the kinks: relu' = 0 and leaky' = slope at x = 0), made on
 * CUDA by the CUDA backward kernel itself.
 *
 * The kernels run over UNet activations of millions of elements, so exp and erf are
 * branch-free float approximations (exp to ~1 ulp, erf to 3.5e-7 absolute) that the compiler
 * vectorises without -ffast-math, and loops run in blocks of ACT_VB elements (GCC's -O2 cost
 * model vectorises only loops of a known trip count) split over threads with parallel_for. */
#include <math.h>
#include <string.h>

#include "core/cuda.h"
#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

#define ACT_GRAIN (1 << 14)
#define ACT_VB 16

/* runs STMT for i in [b, e): blocks of ACT_VB (vectorised), then the tail */
#define ACT_FOR(i, b, e, STMT)                                                    \
    do {                                                                          \
        int64_t i##_0 = (b), i##_e = (e);                                         \
        for (; i##_0 + ACT_VB <= i##_e; i##_0 += ACT_VB)                          \
            for (int64_t i##_k = 0; i##_k < ACT_VB; i##_k++) {                    \
                int64_t i = i##_0 + i##_k;                                        \
                STMT;                                                             \
            }                                                                     \
        for (int64_t i = i##_0; i < i##_e; i++) {                                 \
            STMT;                                                                 \
        }                                                                         \
    } while (0)

enum { ACT_SILU, ACT_GELU_ERF, ACT_GELU_TANH, ACT_LEAKY_RELU, ACT_RELU, ACT_HINGE };

/* ---- vectorisable float math ---- */

/* x with |x| clamped to the float whose bits are lim (bit operations: no branches, and a
 * NaN input stays harmless because every caller multiplies the result by x again) */
static inline float act_clamp_abs(float x, uint32_t lim) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t m = u & 0x7fffffffu;
    m = m < lim ? m : lim;
    u = (u & 0x80000000u) | m;
    memcpy(&x, &u, 4);
    return x;
}

/* exp(x) for |x| <= 87 (beyond, the argument is clamped there): Cody-Waite reduction by
 * ln 2 and a degree-6 polynomial, relative error ~1e-7 */
static inline float act_exp(float x) {
    x = act_clamp_abs(x, 0x42ae0000u); /* 87.0f */
    float fn = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)fn + 127) << 23;
    float s;
    memcpy(&s, &bits, 4);
    return p * s;
}

/* erf(x): rational approximation on [-4, 4] (erf is +-1 in float beyond), as in XLA/Eigen */
static inline float act_erf(float x) {
    x = act_clamp_abs(x, 0x40800000u); /* 4.0f */
    float x2 = x * x;
    float p = -2.72614225801306e-10f;
    p = p * x2 + 2.77068142495902e-08f;
    p = p * x2 + -2.10102402082508e-06f;
    p = p * x2 + -5.69250639462346e-05f;
    p = p * x2 + -7.34990630326855e-04f;
    p = p * x2 + -2.95459980854025e-03f;
    p = p * x2 + -1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * x2 + -2.13374055278905e-04f;
    q = q * x2 + -1.68282697438203e-03f;
    q = q * x2 + -7.37332916720468e-03f;
    q = q * x2 + -1.42647390514189e-02f;
    return x * p / q;
}

static inline float act_sigmoid(float x) { return 1.0f / (1.0f + act_exp(-x)); }

/* ---- the functions and their derivatives ---- */

#define ACT_INV_SQRT2 0.70710678118654752f
#define ACT_INV_SQRT_2PI 0.39894228040143268f
#define ACT_SQRT_2_OVER_PI 0.79788456080286536f
#define ACT_GELU_TANH_C 0.044715f

static inline float silu_f(float x) { return x * act_sigmoid(x); }
static inline float silu_d(float x) {
    float s = act_sigmoid(x);
    return s + x * s * (1.0f - s);
}

static inline float gelu_erf_f(float x) { return 0.5f * x * (1.0f + act_erf(x * ACT_INV_SQRT2)); }
static inline float gelu_erf_d(float x) {
    return 0.5f * (1.0f + act_erf(x * ACT_INV_SQRT2)) + x * ACT_INV_SQRT_2PI * act_exp(-0.5f * x * x);
}

/* 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) */
static inline float gelu_tanh_f(float x) {
    float u = ACT_SQRT_2_OVER_PI * (x + ACT_GELU_TANH_C * x * x * x);
    return x * act_sigmoid(2.0f * u);
}
static inline float gelu_tanh_d(float x) {
    float u = ACT_SQRT_2_OVER_PI * (x + ACT_GELU_TANH_C * x * x * x);
    float du = ACT_SQRT_2_OVER_PI * (1.0f + 3.0f * ACT_GELU_TANH_C * x * x);
    float s = act_sigmoid(2.0f * u);
    return s + x * s * (1.0f - s) * 2.0f * du;
}

/* c > 0 ? a : b (a when c is NaN, so that NaN propagates), by bit masks: GCC turns a plain
 * ?: here back into a branch and then leaves the loop scalar */
static inline float act_select_pos(float c, float a, float b) {
    uint32_t m = -(uint32_t)!(c <= 0.0f), ua, ub;
    memcpy(&ua, &a, 4);
    memcpy(&ub, &b, 4);
    ua = (ua & m) | (ub & ~m);
    memcpy(&a, &ua, 4);
    return a;
}

static inline float leaky_d(float x, float slope) { return act_select_pos(x, 1.0f, slope); }
static inline float leaky_f(float x, float slope) { return leaky_d(x, slope) * x; }
static inline float relu_d(float x) { return act_select_pos(x, 1.0f, 0.0f); }
static inline float relu_f(float x) { return act_select_pos(x, x, 0.0f); }
static inline float hinge_f(float x, float sign) {
    float v = 1.0f + sign * x;
    return act_select_pos(v, v, 0.0f);
}
static inline float hinge_d(float x, float sign) { return act_select_pos(1.0f + sign * x, sign, 0.0f); }

/* the derivative of a piecewise-linear kind, for the create-graph mask */
static inline float act_piecewise_d(int kind, float x, float p) {
    switch (kind) {
    case ACT_LEAKY_RELU: return leaky_d(x, p);
    case ACT_RELU: return relu_d(x);
    default: return hinge_d(x, p);
    }
}

/* ---- elementwise kernels ---- */

typedef struct {
    const float *x, *dy; /* (n) each, n = numel of x */
    float *out;          /* (n): y (forward), gx (backward, +=) or the mask */
    int kind;
    float p; /* slope (leaky_relu) or sign (hinge) */
} ActJob;

/* the pointers are restrict parameters (GCC ignores restrict on local pointers) */
static void act_fwd_span(int kind, float p, const float *restrict x, float *restrict y, int64_t n) {
    switch (kind) {
    case ACT_SILU: ACT_FOR(i, 0, n, y[i] = silu_f(x[i])); break;
    case ACT_GELU_ERF: ACT_FOR(i, 0, n, y[i] = gelu_erf_f(x[i])); break;
    case ACT_GELU_TANH: ACT_FOR(i, 0, n, y[i] = gelu_tanh_f(x[i])); break;
    case ACT_LEAKY_RELU: ACT_FOR(i, 0, n, y[i] = leaky_f(x[i], p)); break;
    case ACT_RELU: ACT_FOR(i, 0, n, y[i] = relu_f(x[i])); break;
    default: ACT_FOR(i, 0, n, y[i] = hinge_f(x[i], p)); break;
    }
}

static void act_bwd_span(int kind, float p, const float *restrict x, const float *restrict dy,
                         float *restrict g, int64_t n) {
    switch (kind) {
    case ACT_SILU: ACT_FOR(i, 0, n, g[i] += dy[i] * silu_d(x[i])); break;
    case ACT_GELU_ERF: ACT_FOR(i, 0, n, g[i] += dy[i] * gelu_erf_d(x[i])); break;
    case ACT_GELU_TANH: ACT_FOR(i, 0, n, g[i] += dy[i] * gelu_tanh_d(x[i])); break;
    case ACT_LEAKY_RELU: ACT_FOR(i, 0, n, g[i] += dy[i] * leaky_d(x[i], p)); break;
    case ACT_RELU: ACT_FOR(i, 0, n, g[i] += dy[i] * relu_d(x[i])); break;
    default: ACT_FOR(i, 0, n, g[i] += dy[i] * hinge_d(x[i], p)); break;
    }
}

static void act_fwd_range(void *ctx, int64_t b, int64_t e) {
    const ActJob *j = ctx;
    act_fwd_span(j->kind, j->p, j->x + b, j->out + b, e - b);
}

static void act_bwd_range(void *ctx, int64_t b, int64_t e) {
    const ActJob *j = ctx;
    act_bwd_span(j->kind, j->p, j->x + b, j->dy + b, j->out + b, e - b);
}

static void act_mask_range(void *ctx, int64_t b, int64_t e) {
    const ActJob *j = ctx;
    for (int64_t i = b; i < e; i++) j->out[i] = act_piecewise_d(j->kind, j->x[i], j->p);
}

static Status act_fwd(Ctx *c, Node *n) {
    (void)c;
    ActJob j = {n->in[0]->v.data, NULL, n->out->v.data, (int)n->ip[0], (float)n->fp[0]};
    parallel_for(tensor_numel(&n->out->v), ACT_GRAIN, act_fwd_range, &j);
    return ADDC_OK;
}

static Status act_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    ActJob j = {n->in[0]->v.data, n->out->g.data, gx, (int)n->ip[0], (float)n->fp[0]};
    parallel_for(tensor_numel(&n->out->v), ACT_GRAIN, act_bwd_range, &j);
    return ADDC_OK;
}

/* The mask on a device: that backend's own backward kernel run with an upstream gradient of
 * ones into a zeroed buffer, mask = 0 + 1 * f'(x) exactly. */
static Status act_mask_device(Ctx *c, Node *n, Tensor *m) {
    int64_t cnt = tensor_numel(m), bytes = tensor_nbytes(m);
    const Backend *be = backend_for(m->device);
    if (!be) return addc_error_status();
    const OpImpl *impl = be->ops[n->op];
    if (!impl || !impl->bwd)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "%s: no %s backward kernel to make the create-graph mask",
                              op_name(n->op), be->name);
    m->data = ctx_dev_alloc(c, bytes);
    if (!m->data) return addc_error_status();
    TRY(cuda_memset(m->data, 0, (size_t)bytes));
    ArenaMark mark = arena_mark(c->arena);
    float *ones = ctx_dev_alloc(c, bytes);
    if (!ones) return addc_error_status();
    TRY(cuda_fill_f32(ones, cnt, 1.0f));
    Var xin = *n->in[0], yout = *n->out;
    xin.requires_grad = 1;
    xin.g = *m;
    yout.g = tensor_make(ones, DTYPE_F32, m->device, n->out->v.ndim, n->out->v.shape);
    Node k = *n;
    k.in[0] = &xin;
    k.out = &yout;
    Status st = impl->bwd(c, &k);
    arena_reset_to(c->arena, mark); /* the ones: later kernels reuse them in stream order */
    return st;
}

/* dx = dy * mask, the mask f'(x) a constant (piecewise-linear kinds only), f32 (or the
 * upstream gradient's dtype on CUDA) */
static Status act_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    Var *x = n->in[0];
    Tensor m = tensor_make(NULL, DTYPE_F32, x->v.device, x->v.ndim, x->v.shape);
    if (x->v.device == DEVICE_CPU) {
        m.data = ctx_alloc(c, tensor_nbytes(&m));
        if (!m.data) return addc_error_status();
        ActJob j = {x->v.data, NULL, m.data, (int)n->ip[0], (float)n->fp[0]};
        parallel_for(tensor_numel(&m), ACT_GRAIN, act_mask_range, &j);
    } else if (x->v.device == DEVICE_CUDA) {
        TRY(act_mask_device(c, n, &m));
    } else if (x->v.device != DEVICE_META) {
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "%s: no create-graph mask on %s", op_name(n->op),
                              device_name(x->v.device));
    }
    Var *mv = ops_const(c, m);
    Var *gv = n->out->gv;
    if (mv && gv && gv->v.dtype != DTYPE_F32) mv = op_cast(c, mv, gv->v.dtype);
    return var_accum_gv(c, x, op_mul(c, gv, mv));
}

static Var *act_op(Ctx *c, int op, int kind, Var *x, double p) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float(op_name(op), "x", x)) return NULL;
    Node n = node_make(op, 1, &x);
    n.ip[0] = kind;
    n.fp[0] = p;
    return op_exec(c, &n, x->v.dtype, x->v.ndim, x->v.shape);
}

Var *op_silu(Ctx *c, Var *x) { return act_op(c, OP_SILU, ACT_SILU, x, 0.0); }
Var *op_relu(Ctx *c, Var *x) { return act_op(c, OP_RELU, ACT_RELU, x, 0.0); }
Var *op_leaky_relu(Ctx *c, Var *x, double slope) {
    return act_op(c, OP_LEAKY_RELU, ACT_LEAKY_RELU, x, slope);
}
Var *op_hinge(Ctx *c, Var *x, double sign) { return act_op(c, OP_HINGE, ACT_HINGE, x, sign); }

Var *op_gelu(Ctx *c, Var *x, GeluApprox approx) {
    if (approx != GELU_ERF && approx != GELU_TANH)
        return ops_fail("gelu", "unknown approximation %d", (int)approx);
    return act_op(c, OP_GELU, approx == GELU_ERF ? ACT_GELU_ERF : ACT_GELU_TANH, x, 0.0);
}

const OpImpl cpu_op_silu = {act_fwd, act_bwd, NULL};
const OpImpl cpu_op_gelu = {act_fwd, act_bwd, NULL};
const OpImpl cpu_op_leaky_relu = {act_fwd, act_bwd, act_bwd_graph};
const OpImpl cpu_op_relu = {act_fwd, act_bwd, act_bwd_graph};
const OpImpl cpu_op_hinge = {act_fwd, act_bwd, act_bwd_graph};

/* ---- geglu: x (..., 2D) = [h | gate] -> y (..., D) = h * gelu_erf(gate) ---- */

typedef struct {
    const float *x, *dy;
    float *out; /* y (R, D) or gx (R, 2D) */
    int64_t d;  /* D */
} GegluJob;

static void geglu_fwd_row(const float *restrict h, const float *restrict g, float *restrict y, int64_t d) {
    ACT_FOR(k, 0, d, y[k] = h[k] * gelu_erf_f(g[k]));
}

static void geglu_bwd_row(const float *restrict h, const float *restrict g, const float *restrict dy,
                          float *restrict gh, float *restrict gg, int64_t d) {
    ACT_FOR(k, 0, d, gh[k] += dy[k] * gelu_erf_f(g[k]));
    ACT_FOR(k, 0, d, gg[k] += dy[k] * h[k] * gelu_erf_d(g[k]));
}

static void geglu_fwd_rows(void *ctx, int64_t r0, int64_t r1) {
    const GegluJob *j = ctx;
    int64_t d = j->d;
    for (int64_t r = r0; r < r1; r++)
        geglu_fwd_row(j->x + r * 2 * d, j->x + r * 2 * d + d, j->out + r * d, d);
}

static void geglu_bwd_rows(void *ctx, int64_t r0, int64_t r1) {
    const GegluJob *j = ctx;
    int64_t d = j->d;
    for (int64_t r = r0; r < r1; r++) {
        const float *h = j->x + r * 2 * d;
        float *gh = j->out + r * 2 * d;
        geglu_bwd_row(h, h + d, j->dy + r * d, gh, gh + d, d);
    }
}

static int64_t geglu_grain(int64_t d) { return d >= ACT_GRAIN ? 1 : ACT_GRAIN / (d ? d : 1); }

static Status geglu_fwd(Ctx *c, Node *n) {
    (void)c;
    int64_t d = n->out->v.shape[n->out->v.ndim - 1];
    GegluJob j = {n->in[0]->v.data, NULL, n->out->v.data, d};
    int64_t rows = d ? tensor_numel(&n->out->v) / d : 0;
    parallel_for(rows, geglu_grain(d), geglu_fwd_rows, &j);
    return ADDC_OK;
}

static Status geglu_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    int64_t d = n->out->v.shape[n->out->v.ndim - 1];
    GegluJob j = {n->in[0]->v.data, n->out->g.data, gx, d};
    int64_t rows = d ? tensor_numel(&n->out->v) / d : 0;
    parallel_for(rows, geglu_grain(d), geglu_bwd_rows, &j);
    return ADDC_OK;
}

Var *op_geglu(Ctx *c, Var *x) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("geglu", "x", x)) return NULL;
    char s[96];
    if (x->v.ndim < 1 || x->v.shape[x->v.ndim - 1] % 2 != 0)
        return ops_fail("geglu", "the last dim of x %s must be even: [hidden | gate]",
                        ops_shape_str(&x->v, s, sizeof s));
    int64_t shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->v.shape, sizeof shape);
    shape[x->v.ndim - 1] /= 2;
    Node n = node_make(OP_GEGLU, 1, &x);
    return op_exec(c, &n, x->v.dtype, x->v.ndim, shape);
}

const OpImpl cpu_op_geglu = {geglu_fwd, geglu_bwd, NULL};
