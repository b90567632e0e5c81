// core/cuda/xent: the CUDA kernels of core/ops/xent.c: softmax cross-entropy of logits (B, K)
// (f32 or bf16) against labels (B) -> the f32 scalar mean over rows of lse_b - logits[b, label_b].
//
// The labels are the node's second input, an i32 device tensor the front-end copied from the
// caller's (checked) host labels. Forward: one block per row: the row max (an exact max, so the
// tree's order does not matter), then sum_k exp(x - m) in double in a fixed tree, lse = m + log s;
// the per-row losses (double) are added in row order by one thread, as the CPU: deterministic.
// The forward saves per row (m_b, log s_b) (B, 2) f32 when the node is recorded.
// Gradient rule: ACCUMULATES (+=) into the f32 logits gradient
//     dlogits[b, k] += g / B * (softmax(logits)[b, k] - [k == label_b])
// one thread per element, softmax recomputed from the saved statistics in double.
#include <math.h>

#include "core/cuda/cuda_internal.cuh"

extern "C" {
#include "core/cuda/cuda_impls.h"
}

#define XENT_THREADS 256

// block b = row b: stats[b] = (m, log s), loss[b] = m + log s - x[b, label_b]
template <typename T>
__global__ static void xent_rows_kernel(const T *x, const int32_t *label, int64_t k, float *stats, double *loss) {
    __shared__ float shm[XENT_THREADS];
    __shared__ double shs[XENT_THREADS];
    const T *row = x + (int64_t)blockIdx.x * k;
    int t = threadIdx.x;
    float m = ld<T>(row, 0);
    for (int64_t i = t; i < k; i += XENT_THREADS) {
        float v = ld<T>(row, i);
        m = v > m ? v : m;
    }
    shm[t] = m;
    __syncthreads();
    for (int w = XENT_THREADS / 2; w > 0; w >>= 1) {
        if (t < w) shm[t] = shm[t + w] > shm[t] ? shm[t + w] : shm[t];
        __syncthreads();
    }
    m = shm[0];
    double s = 0.0;
    for (int64_t i = t; i < k; i += XENT_THREADS) s += exp((double)ld<T>(row, i) - (double)m);
    shs[t] = s;
    __syncthreads();
    for (int w = XENT_THREADS / 2; w > 0; w >>= 1) {
        if (t < w) shs[t] += shs[t + w];
        __syncthreads();
    }
    if (t == 0) {
        double ls = log(shs[0]); /* >= 0: the max term contributes exp(0) */
        int64_t b = blockIdx.x;
        stats[2 * b] = m;
        stats[2 * b + 1] = (float)ls;
        loss[b] = (double)m + ls - (double)ld<T>(row, label[b]);
    }
}

// one thread: out = (sum of the row losses in row order) / B
__global__ static void xent_mean_kernel(const double *loss, int64_t B, float *out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double sum = 0.0;
    for (int64_t b = 0; b < B; b++) sum += loss[b];
    out[0] = (float)(sum / (double)B);
}

static Status xent_fwd(Ctx *c, Node *n) {
    const Tensor *x = &n->in[0]->v;
    int64_t B = x->shape[0], K = x->shape[1], two[2] = {B, 2};
    if (B > 0x7fffffff) return addc_error_set(ADDC_ERR_UNSUPPORTED, "cross_entropy: %lld rows, at most 2^31 - 1 on CUDA",
                                              (long long)B);
    /* the statistics are saved for backward when the node is recorded, else they are scratch */
    if (n->save) {
        n->saved[0] = tensor_make(NULL, DTYPE_F32, DEVICE_CUDA, 2, two);
        n->saved[0].data = dev_scratch(c, tensor_nbytes(&n->saved[0]));
        if (!n->saved[0].data) return addc_error_status();
    }
    ArenaMark mark = arena_mark(c->arena);
    float *stats = n->save ? (float *)n->saved[0].data : (float *)dev_scratch(c, 2 * B * (int64_t)sizeof(float));
    double *loss = (double *)dev_scratch(c, B * (int64_t)sizeof(double));
    if (!stats || !loss) return addc_error_status();
    const int32_t *label = (const int32_t *)n->in[1]->v.data;
    DISPATCH_FLOAT(x->dtype, T, {
        xent_rows_kernel<T><<<(unsigned)B, XENT_THREADS, 0, STREAM>>>((const T *)x->data, label, K, stats, loss);
    });
    CUDA_LAUNCH_CHECK();
    xent_mean_kernel<<<1, 1, 0, STREAM>>>(loss, B, (float *)n->out->v.data);
    CUDA_LAUNCH_CHECK();
    arena_reset_to(c->arena, mark); /* later kernels reuse the scratch in stream order */
    return ADDC_OK;
}

// gx[b, i] += (g / B) * (exp(x - m - log s) - [i == label_b]); g the scalar output gradient
template <typename T>
__global__ static void xent_bwd_kernel(float *gx, const T *x, const int32_t *label, const float *stats,
                                       const float *g, int64_t B, int64_t k) {
    float scale = (float)((double)g[0] / (double)B);
    int64_t n = B * k;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = i / k, j = i % k;
        double m = stats[2 * b], ls = stats[2 * b + 1];
        double p = exp((double)ld<T>(x, i) - m - ls);
        gx[i] += (float)((double)scale * (p - (j == label[b] ? 1.0 : 0.0)));
    }
}

static Status xent_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    int64_t B = x->shape[0], K = x->shape[1];
    DISPATCH_FLOAT(x->dtype, T, {
        xent_bwd_kernel<T><<<cuda_grid(B * K, 256), 256, 0, STREAM>>>(
            gx, (const T *)x->data, (const int32_t *)n->in[1]->v.data, (const float *)n->saved[0].data,
            (const float *)n->out->g.data, B, K);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_cross_entropy = {xent_fwd, xent_bwd, NULL};
