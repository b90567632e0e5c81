// core/cuda/norm: the CUDA kernels of core/ops/norm.c: group norm (optionally fused with a SiLU),
// StyleGAN-T BatchNormLocal and layer norm, forward and backward, values f32 or bf16.
//
// Group norm and BatchNormLocal share norm.c's segment view: x is (S, R, C), NG groups of
// cg = C / NG channels, statistics per (segment, group) over R * cg values; node parameters
// ip = {S, R, C, NG, silu}, fp = {eps} exactly as norm.c sets them (ip[4] is the fused-SiLU flag
// of op_group_norm_silu, 0 for BatchNormLocal).
// Forward, three kernels:
//   seg_stats_part  one block per (segment, chunk of rows); per channel, Welford's running mean
//                   and M2 (f32) of x - x0 over the chunk's rows, x0 its first row's value
//                   (shifted data: the sums stay small when |mean| >> std) -> partials (S, nch, C)
//   seg_stats_final one block per (segment, group): merges the chunk x channel partials with
//                   Chan's pairwise formula in double, each thread over a fixed strided subset,
//                   then a shared-memory tree -> the statistics below
//   seg_apply       y = xhat * gamma + beta, then z * sigmoid(z) when fused
// Backward (dz = dy, or dy * silu'(z) with z recomputed from x and the statistics):
//   seg_bwd_part    per (segment, chunk, channel): sums of dz and dz * xhat
//   seg_bwd_group   one block per (segment, group): m1 = mean(dz gamma), m2 = mean(dz gamma xhat)
//   colsum_param    one thread per channel: dgamma += sum dz xhat, dbeta += sum dz over the
//                   segments' and chunks' partials in order (double)
//   seg_bwd_dx      dx += rstd * (dz gamma - m1 - xhat m2)
// The chunk kernels (seg_stats_part, seg_apply, seg_bwd_part, seg_bwd_dx) run one block per
// (segment, chunk of about SEG_CHUNK_ELEMS values), each thread one channel (strided) over the
// chunk's rows: a warp reads consecutive channels of a row, and no index is divided per element.
// Layer norm: one block per row, two-pass mean (of x - x[0]) and biased variance (fixed-tree
// block sums); backward: one block per row for dx, and dgamma, dbeta as per-chunk column
// partials summed over the chunks in order.
// Saved statistics (f32, shape (S, NG) or (rows)): saved[0] = mu, the mean rounded to f32,
// saved[1] = rstd, saved[2] = dl = mean - mu (the rounding error, from a double mean), and
// xhat = ((x - mu) - dl) * rstd everywhere: x - mu is exact for x near the mean, so inputs
// whose mean is far larger than their spread stay accurate (as norm.c's CPU kernels).
// Nothing uses atomics: each output has one writer and a fixed summation order, so results are
// bitwise reproducible. Gradients accumulate (+=) into the f32 buffers of ops_in_grad.
#include <math.h>

#include "core/cuda/cuda_internal.cuh"

#define GN_IP_SILU 4         // n->ip slot of the fused-SiLU flag (norm.c)
#define SEG_MAX_THREADS 512  // threads of a (segment, chunk) block: one channel each, strided
#define SEG_CHUNK_ELEMS 8192 // target elements per partial-statistics block
#define RED_THREADS 256      // threads of the per-(segment, group) merge blocks
#define LN_THREADS 128       // one layer-norm or softmax row per block
#define LN_CHUNK_ROWS 64     // rows per partial of the layer-norm parameter gradient
#define COL_THREADS 256      // columns per block of the column-sum kernels

// ---- reductions (fixed order: the same bits on every run) ----

// Butterfly sum over a warp: every lane ends with the same value (each step adds the same two
// operands in every lane, and addition is commutative).
template <typename F> __device__ __forceinline__ static F warp_sum(F v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over the block (blockDim.x a multiple of 32), returned to every thread. red: 32 entries of
// shared memory. Every thread of the block must call it.
template <typename F> __device__ static F block_sum(F v, F *red) {
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    F t = 0;
    for (int i = 0; i < (int)(blockDim.x >> 5); i++) t += red[i];
    __syncthreads();
    return t;
}

// Count, mean and sum of squared deviations of a set of values.
template <typename F> struct Moments { F n, mean, m2; };

// Welford's update with one value
__device__ __forceinline__ static void mom_push(Moments<float> &a, float x) {
    a.n += 1.0f;
    float d = x - a.mean;
    a.mean += d / a.n;
    a.m2 += d * (x - a.mean);
}

// a <- a merged with b (Chan et al.)
template <typename F> __device__ __forceinline__ static void mom_merge(Moments<F> &a, const Moments<F> &b) {
    if (b.n == 0) return;
    if (a.n == 0) {
        a = b;
        return;
    }
    F n = a.n + b.n, d = b.mean - a.mean, f = b.n / n;
    a.mean += d * f;
    a.m2 += b.m2 + d * d * a.n * f;
    a.n = n;
}

// the normalised value from the saved statistics (see the top of the file)
__device__ __forceinline__ static float norm_xhat(float x, float mu, float dl, float rs) {
    return ((x - mu) - dl) * rs;
}

template <typename T> __device__ __forceinline__ static float ld_or(const T *p, int64_t i, float dflt) {
    return p ? ld<T>(p, i) : dflt;
}

// The upstream gradient of the normalised value z = xhat * gamma + beta: dy itself, or with the
// fused SiLU dy * silu'(z), silu'(z) = s (1 + z (1 - s)), s = sigmoid(z).
__device__ __forceinline__ static float seg_dz(float dy, float xh, float gm, float bt, bool silu) {
    if (!silu) return dy;
    float z = xh * gm + bt, s = 1.0f / (1.0f + expf(-z));
    return dy * s * (1.0f + z * (1.0f - s));
}

// ---- group norm / BatchNormLocal ----

struct SegDims {
    int64_t S, R, C, NG, cg;
    int64_t chunk_rows, nch; // rows per partial chunk, chunks per segment
};

static SegDims seg_dims(const Node *n) {
    SegDims d;
    d.S = n->ip[0];
    d.R = n->ip[1];
    d.C = n->ip[2];
    d.NG = n->ip[3];
    d.cg = d.C / d.NG;
    d.chunk_rows = SEG_CHUNK_ELEMS / (d.C > 0 ? d.C : 1);
    if (d.chunk_rows < 1) d.chunk_rows = 1;
    d.nch = (d.R + d.chunk_rows - 1) / d.chunk_rows;
    return d;
}

// threads of a (segment, chunk) block: the C channels in as few strided passes as
// SEG_MAX_THREADS allows, split evenly (C = 640: 2 x 320), whole warps
static int seg_chunk_threads(int64_t C) {
    int64_t passes = (C + SEG_MAX_THREADS - 1) / SEG_MAX_THREADS;
    if (passes < 1) passes = 1;
    int64_t t = ((C + passes - 1) / passes + 31) / 32 * 32;
    return (int)(t < 32 ? 32 : t);
}

// block (s * nch + ch), for each channel c, over x[s, rows of chunk ch, c]: pshift = the first
// row's value x0, pmean, pm2 = Welford moments of x - x0 (partials (S, nch, C))
template <typename T>
__global__ static void __launch_bounds__(SEG_MAX_THREADS)
    seg_stats_part(const T *__restrict__ x, SegDims d, float *__restrict__ pshift, float *__restrict__ pmean,
                   float *__restrict__ pm2) {
    int64_t blk = blockIdx.x, s = blk / d.nch, ch = blk % d.nch;
    int64_t r0 = ch * d.chunk_rows, r1 = r0 + d.chunk_rows < d.R ? r0 + d.chunk_rows : d.R;
    const T *xs = x + s * d.R * d.C;
    for (int64_t c = threadIdx.x; c < d.C; c += blockDim.x) {
        float x0 = ld<T>(xs, r0 * d.C + c);
        Moments<float> m = {0.0f, 0.0f, 0.0f};
        for (int64_t r = r0; r < r1; r++) mom_push(m, ld<T>(xs, r * d.C + c) - x0);
        pshift[blk * d.C + c] = x0;
        pmean[blk * d.C + c] = m.mean;
        pm2[blk * d.C + c] = m.m2;
    }
}

// block (s * NG + g): the statistics mu, rstd, dl (S, NG) of the group from the partials of its
// chunks x channels
__global__ static void seg_stats_final(const float *__restrict__ pshift, const float *__restrict__ pmean,
                                       const float *__restrict__ pm2, SegDims d, double eps, float *__restrict__ mu,
                                       float *__restrict__ rstd, float *__restrict__ dl) {
    __shared__ double sn[RED_THREADS], smu[RED_THREADS], sm2[RED_THREADS];
    int64_t blk = blockIdx.x, s = blk / d.NG, g = blk % d.NG, items = d.nch * d.cg;
    int t = threadIdx.x;
    Moments<double> m = {0.0, 0.0, 0.0};
    for (int64_t it = t; it < items; it += RED_THREADS) {
        int64_t ch = it / d.cg, k = g * d.cg + it % d.cg, idx = (s * d.nch + ch) * d.C + k;
        int64_t rows = d.R - ch * d.chunk_rows < d.chunk_rows ? d.R - ch * d.chunk_rows : d.chunk_rows;
        Moments<double> b = {(double)rows, (double)pshift[idx] + (double)pmean[idx], (double)pm2[idx]};
        mom_merge(m, b);
    }
    sn[t] = m.n;
    smu[t] = m.mean;
    sm2[t] = m.m2;
    __syncthreads();
    for (int st = RED_THREADS / 2; st > 0; st >>= 1) {
        if (t < st) {
            Moments<double> a = {sn[t], smu[t], sm2[t]}, b = {sn[t + st], smu[t + st], sm2[t + st]};
            mom_merge(a, b);
            sn[t] = a.n;
            smu[t] = a.mean;
            sm2[t] = a.m2;
        }
        __syncthreads();
    }
    if (t == 0) {
        double n = sn[0], mean = n > 0 ? smu[0] : 0.0, var = n > 0 ? sm2[0] / n : 0.0;
        float m32 = (float)mean;
        mu[blk] = m32;
        dl[blk] = (float)(mean - (double)m32);
        rstd[blk] = (float)(1.0 / sqrt((var > 0 ? var : 0.0) + eps));
    }
}

// The saved statistics of a norm node: mu, rstd, dl, (S, NG) or (rows) each (see the top of the file).
struct NormStats {
    const float *mu, *rstd, *dl;
};

// block (s * nch + ch): y = xhat * gamma + beta (then z * sigmoid(z)) over the chunk's rows
template <typename T>
__global__ static void __launch_bounds__(SEG_MAX_THREADS)
    seg_apply(const T *__restrict__ x, const T *__restrict__ gamma, const T *__restrict__ beta, NormStats sn,
              T *__restrict__ y, SegDims d, bool silu) {
    int64_t blk = blockIdx.x, s = blk / d.nch, ch = blk % d.nch;
    int64_t r0 = ch * d.chunk_rows, r1 = r0 + d.chunk_rows < d.R ? r0 + d.chunk_rows : d.R;
    for (int64_t c = threadIdx.x; c < d.C; c += blockDim.x) {
        int64_t sg = s * d.NG + c / d.cg;
        float mu = sn.mu[sg], rs = sn.rstd[sg], dl = sn.dl[sg];
        float gm = ld_or<T>(gamma, c, 1.0f), bt = ld_or<T>(beta, c, 0.0f);
        for (int64_t r = r0; r < r1; r++) {
            int64_t i = (s * d.R + r) * d.C + c;
            float z = norm_xhat(ld<T>(x, i), mu, dl, rs) * gm + bt;
            if (silu) z = z / (1.0f + expf(-z));
            st<T>(y, i, z);
        }
    }
}

// block (s * nch + ch): p1, p2 (S, nch, C) = sums over the chunk's rows of dz and dz * xhat
template <typename T>
__global__ static void __launch_bounds__(SEG_MAX_THREADS)
    seg_bwd_part(const T *__restrict__ x, const float *__restrict__ dy, const T *__restrict__ gamma,
                 const T *__restrict__ beta, NormStats sn, SegDims d, bool silu, float *__restrict__ p1,
                 float *__restrict__ p2) {
    int64_t blk = blockIdx.x, s = blk / d.nch, ch = blk % d.nch;
    int64_t r0 = ch * d.chunk_rows, r1 = r0 + d.chunk_rows < d.R ? r0 + d.chunk_rows : d.R;
    for (int64_t c = threadIdx.x; c < d.C; c += blockDim.x) {
        int64_t sg = s * d.NG + c / d.cg;
        float mu = sn.mu[sg], rs = sn.rstd[sg], dl = sn.dl[sg];
        float gm = ld_or<T>(gamma, c, 1.0f), bt = ld_or<T>(beta, c, 0.0f), a1 = 0.0f, a2 = 0.0f;
        for (int64_t r = r0; r < r1; r++) {
            int64_t i = (s * d.R + r) * d.C + c;
            float xh = norm_xhat(ld<T>(x, i), mu, dl, rs), dz = seg_dz(dy[i], xh, gm, bt, silu);
            a1 += dz;
            a2 += dz * xh;
        }
        p1[blk * d.C + c] = a1;
        p2[blk * d.C + c] = a2;
    }
}

// block (s * NG + g): m1, m2 (S, NG) = means over the group of dz * gamma and dz * gamma * xhat
template <typename T>
__global__ static void seg_bwd_group(const float *__restrict__ p1, const float *__restrict__ p2,
                                     const T *__restrict__ gamma, SegDims d, float *__restrict__ m1,
                                     float *__restrict__ m2) {
    __shared__ double red[32];
    int64_t blk = blockIdx.x, s = blk / d.NG, g = blk % d.NG, items = d.nch * d.cg;
    double t1 = 0.0, t2 = 0.0;
    for (int64_t it = threadIdx.x; it < items; it += blockDim.x) {
        int64_t k = g * d.cg + it % d.cg, idx = (s * d.nch + it / d.cg) * d.C + k;
        double gm = ld_or<T>(gamma, k, 1.0f);
        t1 += gm * p1[idx];
        t2 += gm * p2[idx];
    }
    t1 = block_sum(t1, red);
    t2 = block_sum(t2, red);
    if (threadIdx.x == 0) {
        double cnt = (double)d.R * (double)d.cg;
        m1[blk] = (float)(t1 / cnt);
        m2[blk] = (float)(t2 / cnt);
    }
}

// one thread per channel: gg[c] += sum_j p2[j, c], gb[c] += sum_j p1[j, c] over j < nrows in order
__global__ static void colsum_param(const float *__restrict__ p1, const float *__restrict__ p2, int64_t nrows,
                                    int64_t ld, int64_t C, float *__restrict__ gg, float *__restrict__ gb) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double a = 0.0, b = 0.0;
    for (int64_t j = 0; j < nrows; j++) {
        a += p2[j * ld + c];
        b += p1[j * ld + c];
    }
    if (gg) gg[c] += (float)a;
    if (gb) gb[c] += (float)b;
}

// block (s * nch + ch): gx += rstd * (dz gamma - m1 - xhat m2) over the chunk's rows
template <typename T>
__global__ static void __launch_bounds__(SEG_MAX_THREADS)
    seg_bwd_dx(const T *__restrict__ x, const float *__restrict__ dy, const T *__restrict__ gamma,
               const T *__restrict__ beta, NormStats sn, const float *__restrict__ m1, const float *__restrict__ m2,
               SegDims d, bool silu, float *__restrict__ gx) {
    int64_t blk = blockIdx.x, s = blk / d.nch, ch = blk % d.nch;
    int64_t r0 = ch * d.chunk_rows, r1 = r0 + d.chunk_rows < d.R ? r0 + d.chunk_rows : d.R;
    for (int64_t c = threadIdx.x; c < d.C; c += blockDim.x) {
        int64_t sg = s * d.NG + c / d.cg;
        float mu = sn.mu[sg], rs = sn.rstd[sg], dl = sn.dl[sg], a1 = m1[sg], a2 = m2[sg];
        float gm = ld_or<T>(gamma, c, 1.0f), bt = ld_or<T>(beta, c, 0.0f);
        for (int64_t r = r0; r < r1; r++) {
            int64_t i = (s * d.R + r) * d.C + c;
            float xh = norm_xhat(ld<T>(x, i), mu, dl, rs), dz = seg_dz(dy[i], xh, gm, bt, silu);
            gx[i] += rs * (dz * gm - a1 - xh * a2);
        }
    }
}

// The three statistics tensors (S, NG) or (rows): saved[0..2] when the node saves, else scratch.
static Status norm_stats_alloc(Ctx *c, Node *n, int32_t nd, const int64_t *shape, float **st3) {
    for (int i = 0; i < 3; i++) {
        Tensor t = tensor_make(NULL, DTYPE_F32, DEVICE_CUDA, nd, shape);
        t.data = dev_scratch(c, tensor_nbytes(&t));
        if (!t.data) return addc_error_status();
        if (n->save) n->saved[i] = t;
        st3[i] = (float *)t.data;
    }
    return ADDC_OK;
}

static Status seg_fwd(Ctx *c, Node *n) {
    SegDims d = seg_dims(n);
    bool silu = n->ip[GN_IP_SILU] != 0;
    DType dt = n->in[0]->v.dtype;
    const void *x = n->in[0]->v.data;
    const void *gamma = n->in[1] ? n->in[1]->v.data : NULL, *beta = n->in[2] ? n->in[2]->v.data : NULL;
    int64_t sshape[2] = {d.S, d.NG};
    float *st3[3];
    ArenaMark mark = arena_mark(c->arena); /* released at the end unless the node saves */
    TRY(norm_stats_alloc(c, n, 2, sshape, st3));
    if (n->save) mark = arena_mark(c->arena);
    if (d.S * d.R * d.C > 0) {
        int64_t np = d.S * d.nch * d.C;
        float *pshift = (float *)dev_scratch(c, np * 4), *pmean = (float *)dev_scratch(c, np * 4);
        float *pm2 = (float *)dev_scratch(c, np * 4);
        if (!pshift || !pmean || !pm2) return addc_error_status();
        NormStats sn = {st3[0], st3[1], st3[2]};
        DISPATCH_FLOAT(dt, T, {
            seg_stats_part<T>
                <<<(unsigned)(d.S * d.nch), seg_chunk_threads(d.C), 0, STREAM>>>((const T *)x, d, pshift, pmean, pm2);
            CUDA_LAUNCH_CHECK();
            seg_stats_final<<<(unsigned)(d.S * d.NG), RED_THREADS, 0, STREAM>>>(pshift, pmean, pm2, d, n->fp[0], st3[0],
                                                                                st3[1], st3[2]);
            CUDA_LAUNCH_CHECK();
            seg_apply<T><<<(unsigned)(d.S * d.nch), seg_chunk_threads(d.C), 0, STREAM>>>(
                (const T *)x, (const T *)gamma, (const T *)beta, sn, (T *)n->out->v.data, d, silu);
            CUDA_LAUNCH_CHECK();
        });
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

static Status seg_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gg = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    if (!gx && !gg && !gb) return ADDC_OK;
    SegDims d = seg_dims(n);
    if (d.S * d.R * d.C == 0) return ADDC_OK;
    bool silu = n->ip[GN_IP_SILU] != 0;
    DType dt = n->in[0]->v.dtype;
    const void *x = n->in[0]->v.data;
    const void *gamma = n->in[1] ? n->in[1]->v.data : NULL, *beta = n->in[2] ? n->in[2]->v.data : NULL;
    const float *dy = (const float *)n->out->g.data;
    NormStats sn = {(const float *)n->saved[0].data, (const float *)n->saved[1].data, (const float *)n->saved[2].data};
    ArenaMark mark = arena_mark(c->arena);
    float *p1 = (float *)dev_scratch(c, d.S * d.nch * d.C * 4), *p2 = (float *)dev_scratch(c, d.S * d.nch * d.C * 4);
    float *m1 = (float *)dev_scratch(c, d.S * d.NG * 4), *m2 = (float *)dev_scratch(c, d.S * d.NG * 4);
    if (!p1 || !p2 || !m1 || !m2) return addc_error_status();
    DISPATCH_FLOAT(dt, T, {
        seg_bwd_part<T><<<(unsigned)(d.S * d.nch), seg_chunk_threads(d.C), 0, STREAM>>>(
            (const T *)x, dy, (const T *)gamma, (const T *)beta, sn, d, silu, p1, p2);
        CUDA_LAUNCH_CHECK();
        if (gg || gb) {
            colsum_param<<<cuda_grid(d.C, COL_THREADS), COL_THREADS, 0, STREAM>>>(p1, p2, d.S * d.nch, d.C, d.C, gg,
                                                                                  gb);
            CUDA_LAUNCH_CHECK();
        }
        if (gx) {
            seg_bwd_group<T><<<(unsigned)(d.S * d.NG), RED_THREADS, 0, STREAM>>>(p1, p2, (const T *)gamma, d, m1, m2);
            CUDA_LAUNCH_CHECK();
            seg_bwd_dx<T><<<(unsigned)(d.S * d.nch), seg_chunk_threads(d.C), 0, STREAM>>>(
                (const T *)x, dy, (const T *)gamma, (const T *)beta, sn, m1, m2, d, silu, gx);
            CUDA_LAUNCH_CHECK();
        }
    });
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

// ---- layer norm ----

// one block per row: y = xhat * gamma + beta; the statistics mu, rstd, dl (rows) written when
// mu_out is non-NULL
template <typename T>
__global__ static void ln_fwd_kernel(const T *__restrict__ x, const T *__restrict__ gamma, const T *__restrict__ beta,
                                     T *__restrict__ y, int64_t D, double eps, float *__restrict__ mu_out,
                                     float *__restrict__ rstd_out, float *__restrict__ dl_out) {
    __shared__ float red[32];
    const T *xr = x + (int64_t)blockIdx.x * D;
    T *yr = y + (int64_t)blockIdx.x * D;
    float x0 = ld<T>(xr, 0), s = 0.0f;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) s += ld<T>(xr, k) - x0;
    double mean = (double)x0 + (double)block_sum(s, red) / (double)D;
    float mu = (float)mean, dl = (float)(mean - (double)mu), s2 = 0.0f;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
        float v = (ld<T>(xr, k) - mu) - dl;
        s2 += v * v;
    }
    float rstd = (float)(1.0 / sqrt((double)block_sum(s2, red) / (double)D + eps));
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x)
        st<T>(yr, k, norm_xhat(ld<T>(xr, k), mu, dl, rstd) * ld_or<T>(gamma, k, 1.0f) + ld_or<T>(beta, k, 0.0f));
    if (threadIdx.x == 0 && mu_out) {
        mu_out[blockIdx.x] = mu;
        rstd_out[blockIdx.x] = rstd;
        dl_out[blockIdx.x] = dl;
    }
}

// one block per row: gx += rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gamma
template <typename T>
__global__ static void ln_bwd_dx_kernel(const T *__restrict__ x, const float *__restrict__ dy,
                                        const T *__restrict__ gamma, NormStats sn, int64_t D, float *__restrict__ gx) {
    __shared__ float red[32];
    int64_t off = (int64_t)blockIdx.x * D;
    float mu = sn.mu[blockIdx.x], rs = sn.rstd[blockIdx.x], dl = sn.dl[blockIdx.x], a1 = 0.0f, a2 = 0.0f;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
        float xh = norm_xhat(ld<T>(x, off + k), mu, dl, rs), dxh = dy[off + k] * ld_or<T>(gamma, k, 1.0f);
        a1 += dxh;
        a2 += dxh * xh;
    }
    float m1 = block_sum(a1, red) / (float)D, m2 = block_sum(a2, red) / (float)D;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
        float xh = norm_xhat(ld<T>(x, off + k), mu, dl, rs), dxh = dy[off + k] * ld_or<T>(gamma, k, 1.0f);
        gx[off + k] += rs * (dxh - m1 - xh * m2);
    }
}

// block (ch * ndb + db), one column each: part (nch, 2, D) = per-chunk sums of dy * xhat, dy
template <typename T>
__global__ static void ln_bwd_part_kernel(const T *__restrict__ x, const float *__restrict__ dy, NormStats sn,
                                          int64_t rows, int64_t D, int64_t ndb, float *__restrict__ part) {
    int64_t ch = blockIdx.x / ndb, k = blockIdx.x % ndb * blockDim.x + threadIdx.x;
    if (k >= D) return;
    int64_t r0 = ch * LN_CHUNK_ROWS, r1 = r0 + LN_CHUNK_ROWS < rows ? r0 + LN_CHUNK_ROWS : rows;
    float a = 0.0f, b = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        float xh = norm_xhat(ld<T>(x, r * D + k), sn.mu[r], sn.dl[r], sn.rstd[r]), g = dy[r * D + k];
        a += g * xh;
        b += g;
    }
    part[ch * 2 * D + k] = a;
    part[ch * 2 * D + D + k] = b;
}

static Status ln_fwd(Ctx *c, Node *n) {
    int64_t rows = n->ip[0], D = n->ip[1];
    float *st3[3] = {NULL, NULL, NULL};
    if (n->save) TRY(norm_stats_alloc(c, n, 1, &rows, st3));
    if (rows == 0 || D == 0) return ADDC_OK;
    const void *gamma = n->in[1] ? n->in[1]->v.data : NULL, *beta = n->in[2] ? n->in[2]->v.data : NULL;
    DISPATCH_FLOAT(n->in[0]->v.dtype, T, {
        ln_fwd_kernel<T><<<(unsigned)rows, LN_THREADS, 0, STREAM>>>((const T *)n->in[0]->v.data, (const T *)gamma,
                                                                    (const T *)beta, (T *)n->out->v.data, D, n->fp[0],
                                                                    st3[0], st3[1], st3[2]);
        CUDA_LAUNCH_CHECK();
    });
    return ADDC_OK;
}

static Status ln_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gg = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    int64_t rows = n->ip[0], D = n->ip[1];
    if ((!gx && !gg && !gb) || rows == 0 || D == 0) return ADDC_OK;
    const void *x = n->in[0]->v.data, *gamma = n->in[1] ? n->in[1]->v.data : NULL;
    const float *dy = (const float *)n->out->g.data;
    NormStats sn = {(const float *)n->saved[0].data, (const float *)n->saved[1].data, (const float *)n->saved[2].data};
    ArenaMark mark = arena_mark(c->arena);
    int64_t nch = (rows + LN_CHUNK_ROWS - 1) / LN_CHUNK_ROWS, ndb = (D + COL_THREADS - 1) / COL_THREADS;
    float *part = NULL;
    if (gg || gb) {
        part = (float *)dev_scratch(c, nch * 2 * D * 4);
        if (!part) return addc_error_status();
    }
    DISPATCH_FLOAT(n->in[0]->v.dtype, T, {
        if (gx) {
            ln_bwd_dx_kernel<T>
                <<<(unsigned)rows, LN_THREADS, 0, STREAM>>>((const T *)x, dy, (const T *)gamma, sn, D, gx);
            CUDA_LAUNCH_CHECK();
        }
        if (part) {
            ln_bwd_part_kernel<T>
                <<<(unsigned)(nch * ndb), COL_THREADS, 0, STREAM>>>((const T *)x, dy, sn, rows, D, ndb, part);
            CUDA_LAUNCH_CHECK();
            // part rows are (dgamma, dbeta) pairs: p2 = part, p1 = part + D, stride 2D
            colsum_param<<<cuda_grid(D, COL_THREADS), COL_THREADS, 0, STREAM>>>(part + D, part, nch, 2 * D, D, gg, gb);
            CUDA_LAUNCH_CHECK();
        }
    });
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_group_norm = {seg_fwd, seg_bwd, NULL};
extern "C" const OpImpl cuda_op_batch_norm_local = {seg_fwd, seg_bwd, NULL};
extern "C" const OpImpl cuda_op_layer_norm = {ln_fwd, ln_bwd, NULL};
