// core/cuda/reduce: the CUDA kernels of core/ops/reduce.c: sum_to and broadcast_to (each the
// other's gradient) and the scalar reductions sum, mean and mean_square; also cuda_sum_to_accum,
// the device twin of reduce_sum_to_accum (core/ops/ops_internal.h), which elementwise.cu uses for
// the gradient of a broadcast input.
//
// Values f32 or bf16 (sum_to and broadcast_to keep the input's dtype, the scalar reductions give
// f32); gradients f32, ACCUMULATED (+=). Deterministic: every sum runs in a fixed order that
// depends on the shapes only, with double accumulators:
// - sum_to: one thread per destination element walking its summed elements in row-major order,
//   or, when few destinations sum many elements each, one block per destination element with a
//   fixed shared-memory tree;
// - scalar reductions: a fixed grid of blocks, each a fixed strided set of elements and a fixed
//   tree, then one block adding the partials in a fixed tree (as cuda_sum_squares).
#include <string.h>

#include "core/cuda/cuda_internal.cuh"

extern "C" {
#include "core/cuda/cuda_impls.h"
}

// n->ip[0] of the scalar reductions: the values of core/ops/reduce.c
enum { RED_SUM, RED_MEAN, RED_MEAN_SQUARE };

#define SUM_TO_THREADS 256 // threads per block of both sum_to kernels (the block tree's width)
#define RED_THREADS 256
#define RED_MAX_BLOCKS 1024

// Element offset of the row-major index i of a BC_DIMS-dim padded shape under strides st
// (dims of size 1 contribute nothing).
__device__ __forceinline__ static int64_t bc_offset(int64_t i, const int64_t *shape, const int64_t *st) {
    int64_t off = 0;
    for (int k = BC_DIMS - 1; k >= 0; k--) {
        int64_t s = shape[k];
        if (s > 1) {
            off += (i % s) * st[k];
            i /= s;
        }
    }
    return off;
}

// ---- dst (small) = or += src (large) summed over the dims where dst is 1 or missing ----

// Destination element d reads the source elements base(d) + offset(r), r < R: the destination
// dims index the kept dims, r the summed ones (row-major), both under the source's strides.
struct SumPlan {
    int64_t dsh[BC_DIMS]; // padded destination shape
    int64_t rsh[BC_DIMS]; // sizes of the summed dims (source size where dsh is 1, else 1)
    int64_t ss[BC_DIMS];  // element strides of the source (0 on its dims of size 1)
    int64_t d, r;         // destination elements, source elements summed into each
};

static SumPlan sum_plan_make(int32_t dnd, const int64_t *dshape, int32_t snd, const int64_t *sshape) {
    SumPlan p;
    Tensor dt = tensor_make(NULL, DTYPE_F32, DEVICE_META, dnd, dshape);
    Tensor stn = tensor_make(NULL, DTYPE_F32, DEVICE_META, snd, sshape);
    int64_t ds[BC_DIMS], ps[BC_DIMS];
    broadcast_strides(&dt, p.dsh, ds);
    broadcast_strides(&stn, ps, p.ss);
    p.d = p.r = 1;
    for (int k = 0; k < BC_DIMS; k++) {
        p.rsh[k] = p.dsh[k] == 1 ? ps[k] : 1;
        p.d *= p.dsh[k];
        p.r *= p.rsh[k];
    }
    return p;
}

// Writes one result element: += into an f32 gradient (ACC), or a store in the value dtype.
template <typename D, bool ACC> __device__ __forceinline__ static void val_put(D *dst, int64_t i, float v);
template <> __device__ __forceinline__ void val_put<float, true>(float *dst, int64_t i, float v) { dst[i] += v; }
template <> __device__ __forceinline__ void val_put<float, false>(float *dst, int64_t i, float v) { dst[i] = v; }
template <> __device__ __forceinline__ void val_put<__nv_bfloat16, false>(__nv_bfloat16 *dst, int64_t i, float v) {
    st<__nv_bfloat16>(dst, i, v);
}

// one thread per destination element, its R source elements in order
template <typename S, typename D, bool ACC>
__global__ static void sum_to_thread_kernel(D *dst, const S *src, SumPlan p) {
    for (int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; d < p.d; d += (int64_t)gridDim.x * blockDim.x) {
        const S *s = src + bc_offset(d, p.dsh, p.ss);
        double acc = 0;
        for (int64_t r = 0; r < p.r; r++) acc += (double)ld<S>(s, bc_offset(r, p.rsh, p.ss));
        val_put<D, ACC>(dst, d, (float)acc);
    }
}

// one block per destination element: thread t sums r = t, t + SUM_TO_THREADS, ..., then a
// fixed tree over the threads
template <typename S, typename D, bool ACC>
__global__ static void sum_to_block_kernel(D *dst, const S *src, SumPlan p) {
    __shared__ double sh[SUM_TO_THREADS];
    for (int64_t d = blockIdx.x; d < p.d; d += gridDim.x) { // uniform over the block
        const S *s = src + bc_offset(d, p.dsh, p.ss);
        double acc = 0;
        for (int64_t r = threadIdx.x; r < p.r; r += SUM_TO_THREADS) acc += (double)ld<S>(s, bc_offset(r, p.rsh, p.ss));
        sh[threadIdx.x] = acc;
        __syncthreads();
        for (int w = SUM_TO_THREADS / 2; w > 0; w >>= 1) {
            if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) val_put<D, ACC>(dst, d, (float)sh[0]);
        __syncthreads(); // sh[0] read before the next destination overwrites sh
    }
}

template <typename S, typename D, bool ACC> static Status sum_to_launch(D *dst, const S *src, const SumPlan &p) {
    if (p.d <= 0) return ADDC_OK;
    // the kernel is chosen from the shapes alone, so a given sum always takes the same order
    if (p.r >= 256 && p.d <= 16384) {
        unsigned blocks = (unsigned)(p.d < 65535 * 8 ? p.d : 65535 * 8);
        sum_to_block_kernel<S, D, ACC><<<blocks, SUM_TO_THREADS, 0, STREAM>>>(dst, src, p);
    } else {
        sum_to_thread_kernel<S, D, ACC><<<cuda_grid(p.d, SUM_TO_THREADS), SUM_TO_THREADS, 0, STREAM>>>(dst, src, p);
    }
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" Status cuda_sum_to_accum(float *dst, int32_t dnd, const int64_t *dshape, const float *src, int32_t snd,
                                    const int64_t *sshape) {
    SumPlan p = sum_plan_make(dnd, dshape, snd, sshape);
    return sum_to_launch<float, float, true>(dst, src, p);
}

// ---- dst (large) = or += src (small) broadcast ----

template <typename S, typename D, bool ACC>
__global__ static void broadcast_kernel(D *dst, const S *src, Broadcast b, int64_t n) {
    // b.out: the padded destination shape; b.sa: the source's strides into it
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        val_put<D, ACC>(dst, i, ld<S>(src, bc_offset(i, b.out, b.sa)));
    }
}

// plan for dst (dshape) from src (sshape): the destination's padded shape and the source's
// strides into it
static Broadcast broadcast_plan_gather(const Tensor *dt, const Tensor *stn) {
    Broadcast b;
    int64_t ds[BC_DIMS], ps[BC_DIMS];
    memset(&b, 0, sizeof b);
    b.ndim = dt->ndim;
    broadcast_strides(dt, b.out, ds);
    broadcast_strides(stn, ps, b.sa);
    return b;
}

template <typename S, typename D, bool ACC>
static Status broadcast_launch(D *dst, const Tensor *dt, const S *src, const Tensor *stn) {
    int64_t n = tensor_numel(dt);
    if (n <= 0) return ADDC_OK;
    Broadcast b = broadcast_plan_gather(dt, stn);
    broadcast_kernel<S, D, ACC><<<cuda_grid(n, 256), 256, 0, STREAM>>>(dst, src, b, n);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// ---- sum_to ----

static Status sum_to_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    Tensor *y = &n->out->v;
    SumPlan p = sum_plan_make(y->ndim, y->shape, x->ndim, x->shape);
    DISPATCH_FLOAT(x->dtype, T, { TRY((sum_to_launch<T, T, false>((T *)y->data, (const T *)x->data, p))); });
    return ADDC_OK;
}

// dx += broadcast(dy)
static Status sum_to_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    return broadcast_launch<float, float, true>(gx, &n->in[0]->v, (const float *)n->out->g.data, &n->out->v);
}

extern "C" const OpImpl cuda_op_sum_to = {sum_to_fwd, sum_to_bwd, NULL};

// ---- broadcast_to ----

static Status broadcast_to_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    Tensor *y = &n->out->v;
    DISPATCH_FLOAT(x->dtype, T, { TRY((broadcast_launch<T, T, false>((T *)y->data, y, (const T *)x->data, x))); });
    return ADDC_OK;
}

// dx += sum_to(dy)
static Status broadcast_to_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v, *y = &n->out->v;
    return cuda_sum_to_accum(gx, x->ndim, x->shape, (const float *)n->out->g.data, y->ndim, y->shape);
}

extern "C" const OpImpl cuda_op_broadcast_to = {broadcast_to_fwd, broadcast_to_bwd, NULL};

// ---- scalar reductions ----

// block b sums x[i] (or x[i]^2) for i = b * RED_THREADS + t + k * nb * RED_THREADS, then a fixed tree
template <typename T> __global__ static void red_partial_kernel(const T *x, int64_t m, int square, double *partial) {
    __shared__ double sh[RED_THREADS];
    double s = 0;
    for (int64_t i = blockIdx.x * (int64_t)RED_THREADS + threadIdx.x; i < m; i += (int64_t)gridDim.x * RED_THREADS) {
        double v = (double)ld<T>(x, i);
        s += square ? v * v : v;
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = RED_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

// one block: the nb partials in a fixed tree; out = sum, or sum / m for the means
__global__ static void red_final_kernel(const double *partial, int nb, int kind, int64_t m, float *out) {
    __shared__ double sh[RED_THREADS];
    double s = 0;
    for (int i = threadIdx.x; i < nb; i += RED_THREADS) s += partial[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = RED_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        double t = sh[0];
        if (kind != RED_SUM && m > 0) t /= (double)m;
        out[0] = (float)t;
    }
}

static Status red_fwd(Ctx *c, Node *n) {
    const Tensor *x = &n->in[0]->v;
    int64_t m = tensor_numel(x);
    int64_t nb64 = (m + RED_THREADS - 1) / RED_THREADS;
    int nb = (int)(nb64 < 1 ? 1 : nb64 > RED_MAX_BLOCKS ? RED_MAX_BLOCKS : nb64);
    int kind = (int)n->ip[0];
    ArenaMark mark = arena_mark(c->arena);
    double *partial = (double *)dev_scratch(c, nb * (int64_t)sizeof(double));
    if (!partial) return addc_error_status();
    DISPATCH_FLOAT(x->dtype, T, {
        red_partial_kernel<T><<<nb, RED_THREADS, 0, STREAM>>>((const T *)x->data, m, kind == RED_MEAN_SQUARE, partial);
    });
    CUDA_LAUNCH_CHECK();
    red_final_kernel<<<1, RED_THREADS, 0, STREAM>>>(partial, nb, kind, m, (float *)n->out->v.data);
    CUDA_LAUNCH_CHECK();
    arena_reset_to(c->arena, mark); // later kernels reuse the scratch in stream order
    return ADDC_OK;
}

// gx += dy, dy / m or (2 dy / m) x; dy is the scalar output gradient on the device
template <typename T>
__global__ static void red_bwd_kernel(float *gx, const T *x, const float *dy, int64_t m, int kind) {
    float g = dy[0];
    float s = kind == RED_SUM ? g : kind == RED_MEAN ? g / (float)m : 2.0f * g / (float)m;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < m; i += (int64_t)gridDim.x * blockDim.x) {
        if (kind == RED_MEAN_SQUARE)
            gx[i] += s * ld<T>(x, i);
        else
            gx[i] += s;
    }
}

static Status red_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    int64_t m = tensor_numel(x);
    if (m <= 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        red_bwd_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>(gx, (const T *)x->data, (const float *)n->out->g.data,
                                                                  m, (int)n->ip[0]);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_sum = {red_fwd, red_bwd, NULL};
extern "C" const OpImpl cuda_op_mean = {red_fwd, red_bwd, NULL};
extern "C" const OpImpl cuda_op_mean_square = {red_fwd, red_bwd, NULL};
