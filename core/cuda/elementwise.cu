// core/cuda/elementwise: the CUDA kernels of core/ops/elementwise.c: add, sub, mul, div with
// numpy broadcasting (the Broadcast plan of ops_internal.h, made on the host and passed to the
// kernel by value), scale (alpha x + beta), rsqrt (x + eps)^-1/2 and cast (f32 <-> bf16).
//
// Values f32 or bf16, both inputs of one dtype, the output in that dtype; arithmetic in f32 as
// the CPU kernels (rsqrt in double). Gradient rule: each input's f32 gradient is ACCUMULATED
// (+=) with the upstream gradient times the local derivative. An input that has the output's
// shape gets it directly, element by element; a broadcast input gets it through an output-sized
// f32 scratch of per-element contributions summed down to its shape by cuda_sum_to_accum
// (reduce.cu: a fixed order per element, double accumulators), so the result does not depend
// on timing: no atomics.
#include "core/cuda/cuda_internal.cuh"

extern "C" {
#include "core/cuda/cuda_impls.h"
}

// n->ip[0] of the binary ops: the values of core/ops/elementwise.c
enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV };

__device__ __forceinline__ static float bin_apply(int kind, float x, float z) {
    switch (kind) {
    case BIN_ADD: return x + z;
    case BIN_SUB: return x - z;
    case BIN_MUL: return x * z;
    default: return x / z;
    }
}

// Offsets into a and b of output element i (row-major over the padded output shape).
__device__ __forceinline__ static void bin_offsets(const Broadcast &bc, int64_t i, int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int d = BC_DIMS - 1; d >= 0; d--) {
        int64_t s = bc.out[d];
        if (s > 1) {
            int64_t k = i % s;
            i /= s;
            a += k * bc.sa[d];
            b += k * bc.sb[d];
        }
    }
    *oa = a;
    *ob = b;
}

// ---- forward ----

// same: a, b and y have one shape (no index arithmetic)
template <typename T>
__global__ static void bin_fwd_kernel(T *y, const T *a, const T *b, Broadcast bc, int kind, int same, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t oa = i, ob = i;
        if (!same) bin_offsets(bc, i, &oa, &ob);
        st<T>(y, i, bin_apply(kind, ld<T>(a, oa), ld<T>(b, ob)));
    }
}

static Status bin_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *a = &n->in[0]->v, *b = &n->in[1]->v;
    Broadcast bc;
    if (!broadcast_plan(op_name(n->op), a, b, &bc)) return addc_error_status();
    int64_t ny = tensor_numel(&n->out->v);
    if (ny <= 0) return ADDC_OK;
    int same = tensor_numel(a) == ny && tensor_numel(b) == ny;
    DISPATCH_FLOAT(a->dtype, T, {
        bin_fwd_kernel<T><<<cuda_grid(ny, 256), 256, 0, STREAM>>>((T *)n->out->v.data, (const T *)a->data,
                                                                   (const T *)b->data, bc, (int)n->ip[0], same, ny);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// ---- backward ----

// The contribution of output element i to the gradient of input `which` (code = kind * 2 + which),
// the CPU's expressions: add, sub: +-dy; mul: dy * other; div: dy / b and -(dy * a / b^2).
__device__ __forceinline__ static float bin_contrib(int code, float dy, float a, float b) {
    switch (code) {
    case BIN_ADD * 2 + 0:
    case BIN_ADD * 2 + 1:
    case BIN_SUB * 2 + 0: return dy;
    case BIN_SUB * 2 + 1: return -dy;
    case BIN_MUL * 2 + 0: return dy * b;
    case BIN_MUL * 2 + 1: return dy * a;
    case BIN_DIV * 2 + 0: return dy / b;
    default: return -(dy * a / (b * b));
    }
}

// dst[i] += (ACC) or = the contribution of output element i; dst is the gradient itself when the
// input has the output's shape, else the output-sized scratch
template <typename T, bool ACC>
__global__ static void bin_bwd_kernel(float *dst, const float *dy, const T *a, const T *b, Broadcast bc, int code,
                                      int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t oa, ob;
        bin_offsets(bc, i, &oa, &ob);
        float v = bin_contrib(code, dy[i], ld<T>(a, oa), ld<T>(b, ob));
        if (ACC)
            dst[i] += v;
        else
            dst[i] = v;
    }
}

template <typename T>
static Status bin_bwd_launch(float *dst, bool acc, const float *dy, const T *a, const T *b, const Broadcast &bc,
                             int code, int64_t n) {
    if (acc)
        bin_bwd_kernel<T, true><<<cuda_grid(n, 256), 256, 0, STREAM>>>(dst, dy, a, b, bc, code, n);
    else
        bin_bwd_kernel<T, false><<<cuda_grid(n, 256), 256, 0, STREAM>>>(dst, dy, a, b, bc, code, n);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status bin_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *ga = ops_in_grad(c, n, 0, &st);
    float *gb = ops_in_grad(c, n, 1, &st);
    if (st) return st;
    const Tensor *ta = &n->in[0]->v, *tb = &n->in[1]->v, *ty = &n->out->v;
    Broadcast bc;
    if (!broadcast_plan(op_name(n->op), ta, tb, &bc)) return addc_error_status();
    int64_t ny = tensor_numel(ty);
    if (ny <= 0) return ADDC_OK; /* nothing flows back */
    const float *dy = (const float *)n->out->g.data;
    int kind = (int)n->ip[0];
    for (int which = 0; which < 2; which++) {
        float *g = which ? gb : ga;
        if (!g) continue;
        const Tensor *tx = which ? tb : ta;
        int code = kind * 2 + which;
        if (tensor_numel(tx) == ny) { /* the output's shape: element i is input element i */
            DISPATCH_FLOAT(ta->dtype, T, {
                TRY(bin_bwd_launch<T>(g, true, dy, (const T *)ta->data, (const T *)tb->data, bc, code, ny));
            });
            continue;
        }
        ArenaMark mark = arena_mark(c->arena);
        float *scratch = (float *)dev_scratch(c, ny * (int64_t)sizeof(float));
        if (!scratch) return addc_error_status();
        DISPATCH_FLOAT(ta->dtype, T, {
            TRY(bin_bwd_launch<T>(scratch, false, dy, (const T *)ta->data, (const T *)tb->data, bc, code, ny));
        });
        st = cuda_sum_to_accum(g, tx->ndim, tx->shape, scratch, ty->ndim, ty->shape);
        arena_reset_to(c->arena, mark); /* later kernels reuse the scratch in stream order */
        if (st) return st;
    }
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_add = {bin_fwd, bin_bwd, NULL};
extern "C" const OpImpl cuda_op_sub = {bin_fwd, bin_bwd, NULL};
extern "C" const OpImpl cuda_op_mul = {bin_fwd, bin_bwd, NULL};
extern "C" const OpImpl cuda_op_div = {bin_fwd, bin_bwd, NULL};

// ---- scale: y = alpha x + beta; dx += alpha dy ----

template <typename T> __global__ static void scale_kernel(T *y, const T *x, int64_t n, float alpha, float beta) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st<T>(y, i, alpha * ld<T>(x, i) + beta);
}

static Status scale_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    int64_t m = tensor_numel(x);
    if (m <= 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        scale_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>((T *)n->out->v.data, (const T *)x->data, m,
                                                                (float)n->fp[0], (float)n->fp[1]);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status scale_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    return cuda_axpy_f32(gx, (const float *)n->out->g.data, tensor_numel(&n->out->v), (float)n->fp[0]);
}

extern "C" const OpImpl cuda_op_scale = {scale_fwd, scale_bwd, NULL};

// ---- rsqrt: y = (x + eps)^-1/2 in double; dx += -y^3 / 2 dy ----

template <typename T> __device__ __forceinline__ static float rsqrt_at(const T *x, int64_t i, double eps) {
    return (float)(1.0 / sqrt((double)ld<T>(x, i) + eps));
}

template <typename T> __global__ static void rsqrt_fwd_kernel(T *y, const T *x, int64_t n, double eps) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st<T>(y, i, rsqrt_at<T>(x, i, eps));
}

// y recomputed from x in f32 (the f32 output's own value; for bf16 not its rounding)
template <typename T>
__global__ static void rsqrt_bwd_kernel(float *gx, const float *dy, const T *x, int64_t n, double eps) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float y = rsqrt_at<T>(x, i, eps);
        gx[i] += -0.5f * y * y * y * dy[i];
    }
}

static Status rsqrt_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    int64_t m = tensor_numel(x);
    if (m <= 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        rsqrt_fwd_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>((T *)n->out->v.data, (const T *)x->data, m,
                                                                    n->fp[0]);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status rsqrt_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    int64_t m = tensor_numel(x);
    if (m <= 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        rsqrt_bwd_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>(gx, (const float *)n->out->g.data,
                                                                    (const T *)x->data, m, n->fp[0]);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_rsqrt = {rsqrt_fwd, rsqrt_bwd, NULL};

// ---- cast: f32 <-> bf16 (or a copy) by cuda_convert; the gradient passes through in f32 ----

static Status cast_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    return cuda_convert(n->out->v.data, n->out->v.dtype, x->data, x->dtype, tensor_numel(x));
}

static Status cast_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    return cuda_axpy_f32(gx, (const float *)n->out->g.data, tensor_numel(&n->out->v), 1.0f);
}

extern "C" const OpImpl cuda_op_cast = {cast_fwd, cast_bwd, NULL};
