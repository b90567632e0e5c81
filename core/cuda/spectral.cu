// core/cuda/spectral: the CUDA kernels of spectral normalisation (core/ops/spectral.c, whose top
// comment states the op): W = w viewed as (rows, cols), power iteration on the caller's u (rows)
// and v (cols) in place when `update` (not inside a checkpoint recompute), sigma = u . (W v),
// y = w / sigma; backward dw += dy / sigma - (sum(dy * w) / sigma^2) u v^T with u, v constant.
//
// w is f32 or bf16 (y keeps its dtype); u, v are the caller's f32 device tensors (n->pp); sums in
// double as the CPU. The matrices are small (discriminator heads), so the kernels are simple and
// deterministic: W^T u one thread per column walking the rows in order (the CPU's order); W v and
// the row dots of the backward one block per row with a fixed-shape tree; the vector norms, u . Wv
// and sum(dy * w) one block each. sigma never leaves the device: the CPU's host copy in n->fp[1]
// is replaced by a 1-element f32 tensor saved[2] (saved[0], saved[1] are u, v as this forward used
// them, as on the CPU), so no kernel wrapper synchronises with the host.
#include <math.h>

#include "core/cuda/cuda_internal.cuh"

extern "C" {
#include "core/cuda/cuda_impls.h"
}

#define SN_THREADS 256      // block size of every reduction here (a power of two)
#define SN_MAX_ROW_BLOCKS 65535

// Sum of one double per thread of a SN_THREADS block in a fixed tree; every thread gets the total.
// All threads of the block must call it (it synchronises).
static __device__ double block_sum(double x) {
    __shared__ double sh[SN_THREADS];
    sh[threadIdx.x] = x;
    __syncthreads();
    for (int s = SN_THREADS / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double total = sh[0];
    __syncthreads(); // sh may be reused by the next call
    return total;
}

// out[k] = sum_r W[r, k] x[r] (double), rows in order: one thread per column
template <typename T>
__global__ static void matvec_t_kernel(const T *w, const float *x, double *out, int64_t rows, int64_t cols) {
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < cols; k += (int64_t)gridDim.x * blockDim.x) {
        double t = 0;
        for (int64_t r = 0; r < rows; r++) t += (double)ld<T>(w, r * cols + k) * (double)x[r];
        out[k] = t;
    }
}

// out[r] = sum_k W[r, k] x[k] (double): one block per row
template <typename T>
__global__ static void matvec_kernel(const T *w, const float *x, double *out, int64_t rows, int64_t cols) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *wr = w + r * cols;
        double t = 0;
        for (int64_t k = threadIdx.x; k < cols; k += SN_THREADS) t += (double)ld<T>(wr, k) * (double)x[k];
        t = block_sum(t);
        if (threadIdx.x == 0) out[r] = t;
    }
}

// dst = t / max(||t||, eps) in f32 like F.normalize (the CPU's sn_normalize): one block
__global__ static void normalize_kernel(float *dst, const double *t, int64_t n, float eps) {
    double ss = 0;
    for (int64_t i = threadIdx.x; i < n; i += SN_THREADS) ss += t[i] * t[i];
    ss = block_sum(ss);
    float nrm = (float)sqrt(ss);
    if (nrm < eps) nrm = eps;
    for (int64_t i = threadIdx.x; i < n; i += SN_THREADS) dst[i] = (float)t[i] / nrm;
}

// *sigma = (float)(u . tr): one block
__global__ static void sigma_kernel(const float *u, const double *tr, int64_t rows, float *sigma) {
    double s = 0;
    for (int64_t r = threadIdx.x; r < rows; r += SN_THREADS) s += (double)u[r] * tr[r];
    s = block_sum(s);
    if (threadIdx.x == 0) *sigma = (float)s;
}

template <typename T>
__global__ static void divide_kernel(T *y, const T *w, const float *sigma, int64_t n) {
    float s = *sigma;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st<T>(y, i, ld<T>(w, i) / s);
}

static unsigned row_blocks(int64_t rows) { return (unsigned)(rows < SN_MAX_ROW_BLOCKS ? rows : SN_MAX_ROW_BLOCKS); }

template <typename T>
static Status sn_matvec_t(const T *w, const float *x, double *out, int64_t rows, int64_t cols) {
    matvec_t_kernel<T><<<cuda_grid(cols, SN_THREADS), SN_THREADS, 0, STREAM>>>(w, x, out, rows, cols);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

template <typename T>
static Status sn_matvec(const T *w, const float *x, double *out, int64_t rows, int64_t cols) {
    matvec_kernel<T><<<row_blocks(rows), SN_THREADS, 0, STREAM>>>(w, x, out, rows, cols);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status sn_normalize(float *dst, const double *t, int64_t n, double eps) {
    normalize_kernel<<<1, SN_THREADS, 0, STREAM>>>(dst, t, n, (float)eps);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// W^T u -> v, W v -> u (n_iter times when update), sigma = u . W v, y = w / sigma
template <typename T>
static Status sn_forward(const T *w, T *y, float *u, float *v, int64_t rows, int64_t cols, int n_iter, bool update,
                         double eps, double *tr, double *tc, float *sigma) {
    bool have_wv = false; // tr holds W v for the current v
    for (int it = 0; update && it < n_iter; it++) {
        TRY(sn_matvec_t<T>(w, u, tc, rows, cols));
        TRY(sn_normalize(v, tc, cols, eps));
        TRY(sn_matvec<T>(w, v, tr, rows, cols));
        TRY(sn_normalize(u, tr, rows, eps));
        have_wv = true;
    }
    if (!have_wv) TRY(sn_matvec<T>(w, v, tr, rows, cols));
    sigma_kernel<<<1, SN_THREADS, 0, STREAM>>>(u, tr, rows, sigma);
    CUDA_LAUNCH_CHECK();
    int64_t n = rows * cols;
    divide_kernel<T><<<cuda_grid(n, SN_THREADS), SN_THREADS, 0, STREAM>>>(y, w, sigma, n);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status sn_check_dtype(DType dt) {
    if (dt == DTYPE_F32 || dt == DTYPE_BF16) return ADDC_OK;
    return addc_error_set(ADDC_ERR_UNSUPPORTED, "spectral_norm: CUDA kernels take f32 or bf16 w, not %s",
                          dtype_name(dt));
}

// an f32 tensor of n elements on the device, from the step arena
static Tensor sn_dev_tensor(Ctx *c, int64_t n) {
    Tensor t = tensor_make(NULL, DTYPE_F32, DEVICE_CUDA, 1, &n);
    t.data = dev_scratch(c, tensor_nbytes(&t));
    return t;
}

static Status spectral_fwd(Ctx *c, Node *n) {
    const Tensor *tw = &n->in[0]->v;
    Tensor *tu = (Tensor *)n->pp[0], *tv = (Tensor *)n->pp[1];
    int64_t rows = tw->shape[0], cols = tensor_numel(tw) / rows;
    float *u = (float *)tu->data, *v = (float *)tv->data;
    int n_iter = (int)n->ip[0];
    bool update = n->ip[1] && c->recomputing == 0;
    double eps = n->fp[0];
    TRY(sn_check_dtype(tw->dtype));
    n->fp[1] = NAN; // sigma stays on the device: saved[2]
    float *sigma = NULL;
    if (n->save) { // kept past this call: allocated before the scratch mark
        n->saved[0] = sn_dev_tensor(c, rows);
        n->saved[1] = sn_dev_tensor(c, cols);
        n->saved[2] = sn_dev_tensor(c, 1);
        if (!n->saved[0].data || !n->saved[1].data || !n->saved[2].data) return addc_error_status();
        sigma = (float *)n->saved[2].data;
    }
    ArenaMark mark = arena_mark(c->arena);
    double *tr = (double *)dev_scratch(c, rows * (int64_t)sizeof(double));
    double *tc = (double *)dev_scratch(c, cols * (int64_t)sizeof(double));
    if (!sigma) sigma = (float *)dev_scratch(c, 4);
    Status st = tr && tc && sigma ? ADDC_OK : addc_error_status();
    if (!st) {
        if (tw->dtype == DTYPE_F32)
            st = sn_forward<float>((const float *)tw->data, (float *)n->out->v.data, u, v, rows, cols, n_iter, update,
                                   eps, tr, tc, sigma);
        else
            st = sn_forward<__nv_bfloat16>((const __nv_bfloat16 *)tw->data, (__nv_bfloat16 *)n->out->v.data, u, v,
                                           rows, cols, n_iter, update, eps, tr, tc, sigma);
    }
    if (!st && n->save) {
        st = cuda_copy_device(n->saved[0].data, u, (size_t)rows * 4);
        if (!st) st = cuda_copy_device(n->saved[1].data, v, (size_t)cols * 4);
    }
    arena_reset_to(c->arena, mark); // the kernels reading the scratch are ordered before any later use
    return st;
}

// partial[r] = sum_k dy[r, k] w[r, k] (double): one block per row
template <typename T>
__global__ static void dot_rows_kernel(const T *w, const float *dy, double *partial, int64_t rows, int64_t cols) {
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *wr = w + r * cols;
        const float *dr = dy + r * cols;
        double t = 0;
        for (int64_t k = threadIdx.x; k < cols; k += SN_THREADS) t += (double)dr[k] * (double)ld<T>(wr, k);
        t = block_sum(t);
        if (threadIdx.x == 0) partial[r] = t;
    }
}

// coef[0] = 1 / sigma, coef[1] = sum(partial) / sigma^2 (sigma the forward's f32 value): one block
__global__ static void coef_kernel(const double *partial, int64_t rows, const float *sigma, double *coef) {
    double s = 0;
    for (int64_t r = threadIdx.x; r < rows; r += SN_THREADS) s += partial[r];
    s = block_sum(s);
    if (threadIdx.x == 0) {
        double sg = (double)*sigma;
        coef[0] = 1.0 / sg;
        coef[1] = s / (sg * sg);
    }
}

// dw[r, k] += (float)(dy[r, k] / sigma - coef u[r] v[k])
__global__ static void grad_kernel(float *dw, const float *dy, const float *u, const float *v, const double *coef,
                                   int64_t rows, int64_t cols) {
    double inv_sigma = coef[0], c1 = coef[1];
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < rows * cols;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / cols, k = e % cols;
        double cu = c1 * (double)u[r];
        dw[e] += (float)((double)dy[e] * inv_sigma - cu * (double)v[k]);
    }
}

template <typename T>
static Status sn_backward(const T *w, const float *dy, const float *u, const float *v, const float *sigma, float *dw,
                          int64_t rows, int64_t cols, double *partial, double *coef) {
    dot_rows_kernel<T><<<row_blocks(rows), SN_THREADS, 0, STREAM>>>(w, dy, partial, rows, cols);
    CUDA_LAUNCH_CHECK();
    coef_kernel<<<1, SN_THREADS, 0, STREAM>>>(partial, rows, sigma, coef);
    CUDA_LAUNCH_CHECK();
    grad_kernel<<<cuda_grid(rows * cols, SN_THREADS), SN_THREADS, 0, STREAM>>>(dw, dy, u, v, coef, rows, cols);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status spectral_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *dw = ops_in_grad(c, n, 0, &st);
    if (!dw) return st;
    const Tensor *tw = &n->in[0]->v;
    int64_t rows = tw->shape[0], cols = tensor_numel(tw) / rows;
    TRY(sn_check_dtype(tw->dtype));
    const float *dy = (const float *)n->out->g.data;
    const float *u = (const float *)n->saved[0].data, *v = (const float *)n->saved[1].data;
    const float *sigma = (const float *)n->saved[2].data;
    ArenaMark mark = arena_mark(c->arena);
    double *partial = (double *)dev_scratch(c, rows * (int64_t)sizeof(double));
    double *coef = (double *)dev_scratch(c, 2 * (int64_t)sizeof(double));
    st = partial && coef ? ADDC_OK : addc_error_status();
    if (!st) {
        if (tw->dtype == DTYPE_F32)
            st = sn_backward<float>((const float *)tw->data, dy, u, v, sigma, dw, rows, cols, partial, coef);
        else
            st = sn_backward<__nv_bfloat16>((const __nv_bfloat16 *)tw->data, dy, u, v, sigma, dw, rows, cols, partial,
                                            coef);
    }
    arena_reset_to(c->arena, mark);
    return st;
}

extern "C" const OpImpl cuda_op_spectral_norm = {spectral_fwd, spectral_bwd, NULL};
