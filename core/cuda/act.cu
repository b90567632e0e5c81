// core/cuda/act: the CUDA kernels of core/ops/act.c: silu, gelu (erf and tanh forms), geglu,
// leaky_relu, relu and the hinge max(0, 1 + s x).
//
// Values f32 or bf16, the output in the input's dtype, arithmetic in f32 with the CPU's
// formulas (CUDA's expf and erff in place of the CPU's vectorisable approximations; the exp
// argument clamped to +-87 as there). Gradient rule: the f32 input gradient is ACCUMULATED (+=)
// with dy * f'(x), recomputed from the input; one thread per element, so nothing is summed
// across threads. Kink conventions as the CPU: relu'(0) = 0, leaky'(0) = slope, hinge' = 0 where
// 1 + s x = 0; NaN propagates.
#include "core/cuda/cuda_internal.cuh"

extern "C" {
#include "core/cuda/cuda_impls.h"
}

// n->ip[0] of the elementwise activations: the values of core/ops/act.c
enum { ACT_SILU, ACT_GELU_ERF, ACT_GELU_TANH, ACT_LEAKY_RELU, ACT_RELU, ACT_HINGE };

#define ACT_INV_SQRT2 0.70710678118654752f
#define ACT_INV_SQRT_2PI 0.39894228040143268f
#define ACT_SQRT_2_OVER_PI 0.79788456080286536f
#define ACT_GELU_TANH_C 0.044715f

// exp with |x| clamped to 87 (a NaN stays NaN) as the CPU's act_exp
__device__ __forceinline__ static float act_exp(float x) {
    x = x > 87.0f ? 87.0f : x < -87.0f ? -87.0f : x;
    return expf(x);
}

__device__ __forceinline__ static float act_sigmoid(float x) { return 1.0f / (1.0f + act_exp(-x)); }

__device__ __forceinline__ static float silu_f(float x) { return x * act_sigmoid(x); }
__device__ __forceinline__ static float silu_d(float x) {
    float s = act_sigmoid(x);
    return s + x * s * (1.0f - s);
}

__device__ __forceinline__ static float gelu_erf_f(float x) { return 0.5f * x * (1.0f + erff(x * ACT_INV_SQRT2)); }
__device__ __forceinline__ static float gelu_erf_d(float x) {
    return 0.5f * (1.0f + erff(x * ACT_INV_SQRT2)) + x * ACT_INV_SQRT_2PI * act_exp(-0.5f * x * x);
}

// 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
__device__ __forceinline__ static float gelu_tanh_f(float x) {
    float u = ACT_SQRT_2_OVER_PI * (x + ACT_GELU_TANH_C * x * x * x);
    return x * act_sigmoid(2.0f * u);
}
__device__ __forceinline__ static float gelu_tanh_d(float x) {
    float u = ACT_SQRT_2_OVER_PI * (x + ACT_GELU_TANH_C * x * x * x);
    float du = ACT_SQRT_2_OVER_PI * (1.0f + 3.0f * ACT_GELU_TANH_C * x * x);
    float s = act_sigmoid(2.0f * u);
    return s + x * s * (1.0f - s) * 2.0f * du;
}

// c > 0 ? a : b, and a when c is NaN (the CPU's act_select_pos)
__device__ __forceinline__ static float select_pos(float c, float a, float b) { return !(c <= 0.0f) ? a : b; }

__device__ __forceinline__ static float act_f(int kind, float x, float p) {
    switch (kind) {
    case ACT_SILU: return silu_f(x);
    case ACT_GELU_ERF: return gelu_erf_f(x);
    case ACT_GELU_TANH: return gelu_tanh_f(x);
    case ACT_LEAKY_RELU: return select_pos(x, 1.0f, p) * x;
    case ACT_RELU: return select_pos(x, x, 0.0f);
    default: { /* hinge, p = sign */
        float v = 1.0f + p * x;
        return select_pos(v, v, 0.0f);
    }
    }
}

__device__ __forceinline__ static float act_d(int kind, float x, float p) {
    switch (kind) {
    case ACT_SILU: return silu_d(x);
    case ACT_GELU_ERF: return gelu_erf_d(x);
    case ACT_GELU_TANH: return gelu_tanh_d(x);
    case ACT_LEAKY_RELU: return select_pos(x, 1.0f, p);
    case ACT_RELU: return select_pos(x, 1.0f, 0.0f);
    default: return select_pos(1.0f + p * x, p, 0.0f);
    }
}

// ---- silu, gelu, leaky_relu, relu, hinge: ip[0] kind, fp[0] slope or sign ----

template <typename T> __global__ static void act_fwd_kernel(T *y, const T *x, int64_t n, int kind, float p) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st<T>(y, i, act_f(kind, ld<T>(x, i), p));
}

template <typename T>
__global__ static void act_bwd_kernel(float *gx, const float *dy, const T *x, int64_t n, int kind, float p) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        gx[i] += dy[i] * act_d(kind, ld<T>(x, i), p);
}

static Status act_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    int64_t m = tensor_numel(x);
    if (m <= 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        act_fwd_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>((T *)n->out->v.data, (const T *)x->data, m,
                                                                  (int)n->ip[0], (float)n->fp[0]);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status act_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    int64_t m = tensor_numel(x);
    if (m <= 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        act_bwd_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>(gx, (const float *)n->out->g.data, (const T *)x->data,
                                                                  m, (int)n->ip[0], (float)n->fp[0]);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_silu = {act_fwd, act_bwd, NULL};
extern "C" const OpImpl cuda_op_gelu = {act_fwd, act_bwd, NULL};
extern "C" const OpImpl cuda_op_leaky_relu = {act_fwd, act_bwd, NULL};
extern "C" const OpImpl cuda_op_relu = {act_fwd, act_bwd, NULL};
extern "C" const OpImpl cuda_op_hinge = {act_fwd, act_bwd, NULL};

// ---- geglu: x (R, 2D) = [h | gate] -> y (R, D) = h * gelu_erf(gate) ----

// one thread per output element (r, k): it alone reads h = x[r, k], gate = x[r, D + k] and
// (backward) writes their two gradients
template <typename T> __global__ static void geglu_fwd_kernel(T *y, const T *x, int64_t n, int64_t d) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / d, k = i % d;
        const T *h = x + r * 2 * d;
        st<T>(y, i, ld<T>(h, k) * gelu_erf_f(ld<T>(h, d + k)));
    }
}

template <typename T>
__global__ static void geglu_bwd_kernel(float *gx, const float *dy, const T *x, int64_t n, int64_t d) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / d, k = i % d;
        const T *h = x + r * 2 * d;
        float hv = ld<T>(h, k), gv = ld<T>(h, d + k), g = dy[i];
        float *gh = gx + r * 2 * d;
        gh[k] += g * gelu_erf_f(gv);
        gh[d + k] += g * hv * gelu_erf_d(gv);
    }
}

static Status geglu_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v, *y = &n->out->v;
    int64_t d = y->shape[y->ndim - 1], m = tensor_numel(y);
    if (m <= 0 || d <= 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        geglu_fwd_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>((T *)y->data, (const T *)x->data, m, d);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status geglu_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v, *y = &n->out->v;
    int64_t d = y->shape[y->ndim - 1], m = tensor_numel(y);
    if (m <= 0 || d <= 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        geglu_bwd_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>(gx, (const float *)n->out->g.data,
                                                                    (const T *)x->data, m, d);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_geglu = {geglu_fwd, geglu_bwd, NULL};
