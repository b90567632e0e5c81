// core/cuda/embed: the CUDA kernels of core/ops/embed.c: the sinusoidal timestep embedding
// (diffusers get_timestep_embedding) and the table lookup embedding.
//
// timestep_embedding: t (B) f32 or bf16 -> (B, dim) in t's dtype, angles t * freq and their sin
// and cos in double as the CPU; no gradient to t (its backward does nothing).
// embedding: ids (N) i32 or i64, table (V, D) f32 or bf16 -> (N, D) in the table's dtype, rows
// copied bit for bit. The ids live on the device, so the forward cannot refuse an id outside
// [0, V) with a message (that would synchronise with the host): such a row of the output is
// NaN instead, and the backward skips it; nothing outside the table is ever read or written.
// Gradient rule: each output row's gradient is ACCUMULATED (+=) into the table row of its id.
// Deterministic without atomics: one thread per table column walks all ids in order, so a
// repeated id sums its rows in position order (the CPU's order: the same bits).
#include "core/cuda/cuda_internal.cuh"

extern "C" {
#include "core/cuda/cuda_impls.h"
}

// ---- timestep embedding: ip[0] flip_sin_to_cos, fp[0] freq_shift, fp[1] max_period ----

// y[b, j]: j < half the first half, [half, 2 half) the second (sin then cos, or cos then sin
// when flip), j = 2 half (odd dim) the zero pad; frequency i = j mod half is exp(scale * i)
template <typename T>
__global__ static void temb_kernel(T *y, const T *t, int64_t n, int64_t dim, int64_t half, int flip, double scale) {
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = idx / dim, j = idx % dim;
        float v = 0.0f;
        if (j < 2 * half) {
            bool first = j < half;
            int64_t i = first ? j : j - half;
            double a = (double)ld<T>(t, b) * exp(scale * (double)i);
            v = first != (flip != 0) ? (float)sin(a) : (float)cos(a);
        }
        st<T>(y, idx, v);
    }
}

static Status temb_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *t = &n->in[0]->v, *y = &n->out->v;
    int64_t dim = y->shape[1], half = dim / 2, m = tensor_numel(y);
    if (m <= 0) return ADDC_OK;
    double scale = -log(n->fp[1]) / ((double)half - n->fp[0]); /* unused when half = 0 */
    DISPATCH_FLOAT(t->dtype, T, {
        temb_kernel<T><<<cuda_grid(m, 256), 256, 0, STREAM>>>((T *)y->data, (const T *)t->data, m, dim, half,
                                                               n->ip[0] != 0, scale);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status temb_bwd(Ctx *c, Node *n) {
    (void)c;
    (void)n;
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_timestep_embedding = {temb_fwd, temb_bwd, NULL};

// ---- embedding: ids (N) (any shape, read flat), table (V, D) -> (N, D) ----

template <typename T, typename I>
__global__ static void emb_fwd_kernel(T *y, const T *table, const I *ids, int64_t n, int64_t v, int64_t d) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t p = i / d, k = i % d;
        int64_t id = (int64_t)ids[p];
        if (id >= 0 && id < v)
            y[i] = table[id * d + k];
        else
            st<T>(y, i, __int_as_float(0x7fc00000)); /* NaN: an id outside the table */
    }
}

// thread k owns column k of every table row: g[ids[p], k] += dy[p, k] for p = 0, 1, ... in order
template <typename I>
__global__ static void emb_bwd_kernel(float *g, const float *dy, const I *ids, int64_t np, int64_t v, int64_t d) {
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < d; k += (int64_t)gridDim.x * blockDim.x) {
        for (int64_t p = 0; p < np; p++) {
            int64_t id = (int64_t)ids[p];
            if (id >= 0 && id < v) g[id * d + k] += dy[p * d + k];
        }
    }
}

template <typename T>
static Status emb_fwd_launch(T *y, const T *table, const Tensor *ids, int64_t n, int64_t v, int64_t d) {
    unsigned g = cuda_grid(n, 256);
    if (ids->dtype == DTYPE_I64)
        emb_fwd_kernel<T, int64_t><<<g, 256, 0, STREAM>>>(y, table, (const int64_t *)ids->data, n, v, d);
    else
        emb_fwd_kernel<T, int32_t><<<g, 256, 0, STREAM>>>(y, table, (const int32_t *)ids->data, n, v, d);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status emb_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *ids = &n->in[0]->v, *table = &n->in[1]->v;
    if (ids->dtype != DTYPE_I32 && ids->dtype != DTYPE_I64)
        return addc_error_set(ADDC_ERR_INVALID, "embedding: ids must be i32 or i64, got %s", dtype_name(ids->dtype));
    int64_t v = table->shape[0], d = table->shape[1], m = tensor_numel(&n->out->v);
    if (m <= 0) return ADDC_OK;
    DISPATCH_FLOAT(table->dtype, T, {
        TRY(emb_fwd_launch<T>((T *)n->out->v.data, (const T *)table->data, ids, m, v, d));
    });
    return ADDC_OK;
}

static Status emb_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gt = ops_in_grad(c, n, 1, &st);
    if (!gt) return st;
    const Tensor *ids = &n->in[0]->v;
    int64_t v = n->in[1]->v.shape[0], d = n->in[1]->v.shape[1], np = tensor_numel(ids);
    if (d <= 0 || np <= 0) return ADDC_OK;
    const float *dy = (const float *)n->out->g.data;
    unsigned g = cuda_grid(d, 128);
    if (ids->dtype == DTYPE_I64)
        emb_bwd_kernel<int64_t><<<g, 128, 0, STREAM>>>(gt, dy, (const int64_t *)ids->data, np, v, d);
    else
        emb_bwd_kernel<int32_t><<<g, 128, 0, STREAM>>>(gt, dy, (const int32_t *)ids->data, np, v, d);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_embedding = {emb_fwd, emb_bwd, NULL};
