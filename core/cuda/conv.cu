// core/cuda/conv: the CUDA kernels of op_conv2d, op_conv1d and op_conv1d_t (core/ops/conv.c).
//
// Two complete paths for conv2d, chosen per shape:
// - igemm: our implicit-GEMM kernel. A convolution is a GEMM whose operands are gathered on the
//   fly: forward y (B*OH*OW, Cout) = patches(x) (B*OH*OW, KH*KW*Cin) @ w^T; input gradient
//   dx (B*H*W, Cin) = taps(dy) (B*H*W, KH*KW*Cout) @ w (KH*KW*Cout, Cin), where taps(dy) picks,
//   for input pixel i and tap k, the output o with o*stride - pad + k = i (zero when none);
//   weight gradient dw (Cout, KH*KW*Cin) = dy^T (Cout, B*OH*OW) @ patches(x). One tiled kernel
//   (64x64 tiles, 16-deep K steps through shared memory, 4x4 outputs per thread, f32
//   accumulation) serves all three through small "problem" structs that load an element of
//   either operand and store an output; each output element is owned by one thread, which sums
//   its K range in order. When the tiles are too few to fill the GPU the K range is cut into a
//   number of slices fixed by the shape (split-K); the slices' partial sums go to scratch and
//   a second kernel adds them in slice order. So the result is the same bits on every run.
// - cuDNN (#ifdef ADDC_HAVE_CUDNN): NHWC descriptors, algorithms from cudnnGet*_v7 heuristics
//   picked once per shape and cached with their descriptors; only deterministic algorithms for
//   the data and filter gradients; for f32 values FMA math only (no TF32) and no FFT/Winograd
//   (their rounding exceeds the f32 tolerance); workspace from one cached CUDA_MEM_WORKSPACE
//   buffer, grown (after a stream synchronisation) when an algorithm needs more. The gradients
//   of bf16 values (ADDC_CONV_GRAD=bf16, the default) run as bf16 convolutions on tensor cores,
//   as matmul's backward does: dy (f32) is rounded to a bf16 copy, cuDNN writes the gradient in
//   bf16 (it cannot write f32 from bf16 operands) into scratch, and a kernel adds it into the f32
//   gradient. ADDC_CONV_GRAD=tf32 runs them instead as f32 convolutions on f32 copies of x and w
//   (bf16 -> f32 is exact; TF32 tensor cores, half bf16's rate) written straight into the f32
//   gradients with beta = 1: no bf16 rounding of the result, for comparison on the card.
// Which path: ADDC_CONV_ALGO=cudnn (the default when built with cuDNN), =igemm (the default
// without), or =auto: the first time a shape (and dtype) is seen, each direction (forward, input
// gradient, weight gradient) times both paths once with CUDA events into scratch outputs and caches
// the faster. The default is a fixed path because a timed choice can differ from process to process
// (load, clocks), and a resumed run must repeat the uninterrupted one bit for bit; under cudnn a
// shape cuDNN has no algorithm for runs igemm.
// conv1d (H = 1, "same" padding K/2, zero or circular) and conv1d_t use the igemm kernel only.
//
// Gradient rule: ACCUMULATE (+=) into the f32 gradients: igemm adds its sums to the gradient
// element it owns, cuDNN blends with beta = 1, the bias gradient is the deterministic column sum
// of core/cuda/matmul.cu (cuda_colsum_accum).
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef ADDC_HAVE_CUDNN
#include <cudnn.h>
#endif

#include "core/cuda/cuda_internal.cuh"

// ---- geometry ----

// One convolution: x (B, H, W, Cin), w (Cout, KH, KW, Cin), y (B, OH, OW, Cout). Output o along
// a dim of length L reads input o*stride - pad + k for tap k: zero outside [0, L), or wrapped
// when circ (conv1d only: stride 1, OL = L). conv1d is H = KH = OH = 1, ph = 0, pw = K/2.
struct Geo {
    int B, H, W, Cin, Cout, KH, KW, stride, ph, pw, OH, OW;
    int circ;
};

static Status geo_make(Geo *g, const int64_t *v, int circ) {
    for (int i = 0; i < 12; i++)
        if (v[i] < 0 || v[i] > INT_MAX)
            return addc_error_set(ADDC_ERR_UNSUPPORTED, "conv: dimension %lld is out of the CUDA kernels' range",
                                  (long long)v[i]);
    *g = Geo{(int)v[0], (int)v[1], (int)v[2], (int)v[3], (int)v[4], (int)v[5],
             (int)v[6], (int)v[7], (int)v[8], (int)v[9], (int)v[10], (int)v[11], circ};
    return ADDC_OK;
}

// x (B, H, W, Cin), w (Cout, KH, KW, Cin)
static Status conv2d_geo(Geo *g, const Tensor *x, const Tensor *w, int64_t stride, int64_t pad) {
    int64_t v[12] = {x->shape[0], x->shape[1], x->shape[2], x->shape[3], w->shape[0], w->shape[1], w->shape[2],
                     stride, pad, pad, (x->shape[1] + 2 * pad - w->shape[1]) / stride + 1,
                     (x->shape[2] + 2 * pad - w->shape[2]) / stride + 1};
    return geo_make(g, v, 0);
}

// seq (B, N, any) with w (Cout, K, Cin)
static Status conv1d_geo(Geo *g, const Tensor *seq, const Tensor *w, PadMode mode) {
    int64_t N = seq->shape[1], K = w->shape[1];
    int64_t v[12] = {seq->shape[0], 1, N, w->shape[2], w->shape[0], 1, K, 1, 0, K / 2, 1, N};
    return geo_make(g, v, mode == PAD_CIRCULAR);
}

// input index read by output o at tap k (false: padding zero)
__device__ __forceinline__ bool conv_src(int o, int k, int stride, int pad, int L, int circ, int *i) {
    int p = o * stride - pad + k;
    if (circ) {
        p %= L;
        if (p < 0) p += L;
        *i = p;
        return true;
    }
    *i = p;
    return p >= 0 && p < L;
}

// output index that reads input i at tap k (false: none)
__device__ __forceinline__ bool conv_dst(int i, int k, int stride, int pad, int OL, int L, int circ, int *o) {
    int t = i + pad - k;
    if (circ) { // stride 1 and OL == L: exactly one output per tap
        t %= L;
        if (t < 0) t += L;
        *o = t;
        return true;
    }
    if (t < 0 || t % stride) return false;
    t /= stride;
    *o = t;
    return t < OL;
}

// ---- the implicit-GEMM kernel ----
//
// C (M, N) = sum over k of P.a(m, k) * P.b(k, n), handed to P.out(m, n, sum). A problem P also
// says which index of each operand is contiguous in memory (A_KFAST: consecutive k), so that
// consecutive threads load consecutive addresses.

#define IG_BM 64
#define IG_BN 64
#define IG_BK 16
#define IG_THREADS 256
#define IG_TARGET_BLOCKS 264 // split K until about this many blocks (a constant: same bits on any GPU)
#define IG_MIN_SLICE 256     // K elements per split-K slice at least
#define IG_MAX_SPLITS 64

template <class P>
__global__ static void __launch_bounds__(IG_THREADS)
    igemm_kernel(P p, int M, int N, int K, int kchunk, float *part) {
    __shared__ float As[IG_BK][IG_BM + 1];
    __shared__ float Bs[IG_BK][IG_BN + 1];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.x * IG_BM, n0 = blockIdx.y * IG_BN;
    const int kbeg = blockIdx.z * kchunk;
    const int kend = K - kbeg < kchunk ? K : kbeg + kchunk;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = kbeg; k0 < kend; k0 += IG_BK) {
#pragma unroll
        for (int e = 0; e < IG_BK * IG_BM / IG_THREADS; e++) {
            int idx = tid + e * IG_THREADS, kk, mm;
            if (P::A_KFAST) {
                kk = idx % IG_BK;
                mm = idx / IG_BK;
            } else {
                mm = idx % IG_BM;
                kk = idx / IG_BM;
            }
            int m = m0 + mm, k = k0 + kk;
            As[kk][mm] = m < M && k < kend ? p.a(m, k) : 0.0f;
        }
#pragma unroll
        for (int e = 0; e < IG_BK * IG_BN / IG_THREADS; e++) {
            int idx = tid + e * IG_THREADS, kk, nn;
            if (P::B_KFAST) {
                kk = idx % IG_BK;
                nn = idx / IG_BK;
            } else {
                nn = idx % IG_BN;
                kk = idx / IG_BN;
            }
            int n = n0 + nn, k = k0 + kk;
            Bs[kk][nn] = n < N && k < kend ? p.b(k, n) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < IG_BK; kk++) {
            float av[4], bv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) av[i] = As[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; j++) bv[j] = Bs[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
            if (m >= M || n >= N) continue;
            if (part) part[((int64_t)blockIdx.z * M + m) * N + n] = acc[i][j];
            else p.out(m, n, acc[i][j]);
        }
}

// out(m, n, sum of the slices' partials in slice order); splits = 0: an empty sum (K = 0)
template <class P>
__global__ static void igemm_reduce_kernel(P p, const float *part, int splits, int M, int N) {
    int64_t total = (int64_t)M * N;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; z++) s += part[z * total + idx];
        p.out((int)(idx / N), (int)(idx % N), s);
    }
}

template <class P>
static Status igemm_run(Ctx *c, const P &p, int64_t M, int64_t N, int64_t K) {
    if (M <= 0 || N <= 0) return ADDC_OK;
    if (M > INT_MAX - IG_BM || N > (int64_t)65535 * IG_BN || K > INT_MAX - IG_BK)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "conv: implicit GEMM of %lld x %lld x %lld is too large",
                              (long long)M, (long long)N, (long long)K);
    if (K == 0) {
        igemm_reduce_kernel<P><<<cuda_grid(M * N, 256), 256, 0, STREAM>>>(p, NULL, 0, (int)M, (int)N);
        CUDA_LAUNCH_CHECK();
        return ADDC_OK;
    }
    int64_t tm = (M + IG_BM - 1) / IG_BM, tn = (N + IG_BN - 1) / IG_BN, splits = 1;
    if (tm * tn < IG_TARGET_BLOCKS && K >= 2 * IG_MIN_SLICE) {
        splits = (IG_TARGET_BLOCKS + tm * tn - 1) / (tm * tn);
        if (splits > K / IG_MIN_SLICE) splits = K / IG_MIN_SLICE;
        if (splits > IG_MAX_SPLITS) splits = IG_MAX_SPLITS;
    }
    int64_t kchunk = (K + splits - 1) / splits;
    kchunk = (kchunk + IG_BK - 1) / IG_BK * IG_BK;
    splits = (K + kchunk - 1) / kchunk;
    dim3 grid((unsigned)tm, (unsigned)tn, (unsigned)splits);
    if (splits == 1) {
        igemm_kernel<P><<<grid, IG_THREADS, 0, STREAM>>>(p, (int)M, (int)N, (int)K, (int)kchunk, NULL);
        CUDA_LAUNCH_CHECK();
        return ADDC_OK;
    }
    ArenaMark mark = arena_mark(c->arena);
    float *part = (float *)dev_scratch(c, splits * M * N * (int64_t)sizeof(float));
    if (!part) return addc_error_status();
    igemm_kernel<P><<<grid, IG_THREADS, 0, STREAM>>>(p, (int)M, (int)N, (int)K, (int)kchunk, part);
    CUDA_LAUNCH_CHECK();
    igemm_reduce_kernel<P><<<cuda_grid(M * N, 256), 256, 0, STREAM>>>(p, part, (int)splits, (int)M, (int)N);
    CUDA_LAUNCH_CHECK();
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

// y (B*OH*OW, Cout) = patches(x) @ w^T (+ bias), stored (TO) or, when ACC, added to an f32 y.
template <typename TX, typename TW, typename TO, bool ACC>
struct FwdProb {
    static constexpr bool A_KFAST = true, B_KFAST = true; // k = (kh, kw, ci): ci contiguous in x and w
    Geo g;
    const TX *x;
    const TW *w;
    const TW *bias; // (Cout) or NULL, not with ACC
    TO *y;
    __device__ float a(int m, int k) const {
        int ow = m % g.OW, t = m / g.OW, oh = t % g.OH, b = t / g.OH;
        int ci = k % g.Cin, r = k / g.Cin, kw = r % g.KW, kh = r / g.KW;
        int ih, iw;
        if (!conv_src(oh, kh, g.stride, g.ph, g.H, g.circ, &ih) || !conv_src(ow, kw, g.stride, g.pw, g.W, g.circ, &iw))
            return 0.0f;
        return ld<TX>(x, (((int64_t)b * g.H + ih) * g.W + iw) * g.Cin + ci);
    }
    __device__ float b(int k, int n) const { return ld<TW>(w, (int64_t)n * g.KH * g.KW * g.Cin + k); }
    __device__ void out(int m, int n, float v) const {
        int64_t i = (int64_t)m * g.Cout + n;
        if constexpr (ACC) y[i] += v;
        else st<TO>(y, i, bias ? v + ld<TW>(bias, n) : v);
    }
};

// dx (B*H*W, Cin) = taps(dy) @ w, k = (kh, kw, co), stored (TO) or, when ACC, added to an f32 dx.
template <typename TD, typename TW, typename TO, bool ACC>
struct DxProb {
    static constexpr bool A_KFAST = true, B_KFAST = false; // co contiguous in dy, ci (= n) in w
    Geo g;
    const TD *dy;
    const TW *w;
    TO *dx;
    __device__ float a(int m, int k) const {
        int iw = m % g.W, t = m / g.W, ih = t % g.H, b = t / g.H;
        int co = k % g.Cout, r = k / g.Cout, kw = r % g.KW, kh = r / g.KW;
        int oh, ow;
        if (!conv_dst(ih, kh, g.stride, g.ph, g.OH, g.H, g.circ, &oh) ||
            !conv_dst(iw, kw, g.stride, g.pw, g.OW, g.W, g.circ, &ow))
            return 0.0f;
        return ld<TD>(dy, (((int64_t)b * g.OH + oh) * g.OW + ow) * g.Cout + co);
    }
    __device__ float b(int k, int n) const { // w[co, kh, kw, n] with r = kh*KW + kw
        int co = k % g.Cout, r = k / g.Cout;
        return ld<TW>(w, ((int64_t)co * g.KH * g.KW + r) * g.Cin + n);
    }
    __device__ void out(int m, int n, float v) const {
        int64_t i = (int64_t)m * g.Cin + n;
        if constexpr (ACC) dx[i] += v;
        else st<TO>(dx, i, v);
    }
};

// dw (Cout, KH*KW*Cin) += dy^T @ patches(x), k = output position
template <typename TD, typename TX>
struct DwProb {
    static constexpr bool A_KFAST = false, B_KFAST = false; // co (= m) contiguous in dy, ci in x
    Geo g;
    const TD *dy;
    const TX *x;
    float *dw;
    __device__ float a(int m, int k) const { return ld<TD>(dy, (int64_t)k * g.Cout + m); }
    __device__ float b(int k, int n) const {
        int ow = k % g.OW, t = k / g.OW, oh = t % g.OH, b = t / g.OH;
        int ci = n % g.Cin, r = n / g.Cin, kw = r % g.KW, kh = r / g.KW;
        int ih, iw;
        if (!conv_src(oh, kh, g.stride, g.ph, g.H, g.circ, &ih) || !conv_src(ow, kw, g.stride, g.pw, g.W, g.circ, &iw))
            return 0.0f;
        return ld<TX>(x, (((int64_t)b * g.H + ih) * g.W + iw) * g.Cin + ci);
    }
    __device__ void out(int m, int n, float v) const { dw[(int64_t)m * g.KH * g.KW * g.Cin + n] += v; }
};

template <typename TX, typename TW, typename TO, bool ACC>
static Status ig_fwd(Ctx *c, const Geo &g, const TX *x, const TW *w, const TW *bias, TO *y) {
    FwdProb<TX, TW, TO, ACC> p{g, x, w, bias, y};
    return igemm_run(c, p, (int64_t)g.B * g.OH * g.OW, g.Cout, (int64_t)g.KH * g.KW * g.Cin);
}

template <typename TD, typename TW, typename TO, bool ACC>
static Status ig_dx(Ctx *c, const Geo &g, const TD *dy, const TW *w, TO *dx) {
    DxProb<TD, TW, TO, ACC> p{g, dy, w, dx};
    return igemm_run(c, p, (int64_t)g.B * g.H * g.W, g.Cin, (int64_t)g.KH * g.KW * g.Cout);
}

template <typename TD, typename TX>
static Status ig_dw(Ctx *c, const Geo &g, const TD *dy, const TX *x, float *dw) {
    DwProb<TD, TX> p{g, dy, x, dw};
    return igemm_run(c, p, g.Cout, (int64_t)g.KH * g.KW * g.Cin, (int64_t)g.B * g.OH * g.OW);
}

// ---- per-shape choice of path ----

enum { PATH_UNSET = 0, PATH_IGEMM, PATH_CUDNN };

#ifdef ADDC_HAVE_CUDNN
#define DNN_CHECK(expr) \
    ADDC_CHECK_GEN("cuDNN", expr, cudnnStatus_t, r_ == CUDNN_STATUS_SUCCESS, "%s", cudnnGetErrorString(r_), ADDC_ERR_EXTERNAL)

#define DNN_WS_MAX ((size_t)1 << 30) // algorithms needing more workspace are passed over

struct DnnDescs {
    cudnnTensorDescriptor_t x, y; // (B, H, W, Cin), (B, OH, OW, Cout) NHWC
    cudnnFilterDescriptor_t w;    // (Cout, KH, KW, Cin) NHWC
    cudnnConvolutionDescriptor_t conv;
};

struct DnnAlgo {
    bool ok; // an algorithm was found
    int algo;
    cudnnMathType_t math;
    size_t ws;
};

// One shape of conv2d (and dtype): the chosen path per direction, cuDNN's descriptors and
// algorithms. A process-wide list, never freed.
struct ConvEntry {
    int64_t key[10];
    int fwd_path, dx_path, dw_path;
    int dnn_broken; // cuDNN failed to set up for this shape: igemm only
    bool dnn_made, fwd_picked, bwd_picked;
    bool grad_bf16;     // the gradients run on the bf16 descriptors (val), else on grad
    DnnDescs val, grad; // in the values' dtype (forward, bf16 gradients); f32 (gradients otherwise)
    DnnAlgo fwd, dx, dw;
    ConvEntry *next;
};

static ConvEntry *conv_cache;

static Status conv_entry(const Geo &g, DType dt, ConvEntry **out) {
    int64_t key[10] = {g.B, g.H, g.W, g.Cin, g.Cout, g.KH, g.KW, g.stride, g.ph, (int64_t)dt};
    for (ConvEntry *e = conv_cache; e; e = e->next)
        if (!memcmp(e->key, key, sizeof key)) {
            *out = e;
            return ADDC_OK;
        }
    ConvEntry *e = (ConvEntry *)calloc(1, sizeof *e);
    if (!e) return addc_error_set(ADDC_ERR_NOMEM, "conv2d: no memory for the algorithm cache");
    memcpy(e->key, key, sizeof key);
    e->next = conv_cache;
    conv_cache = e;
    *out = e;
    return ADDC_OK;
}
#endif

// ADDC_CONV_ALGO: PATH_UNSET (auto: time both), PATH_IGEMM or PATH_CUDNN; unset: cudnn if built
// with it, else igemm (a fixed path: see the top of the file)
static Status conv_forced_path(int *path) {
    const char *e = getenv("ADDC_CONV_ALGO");
    *path = PATH_UNSET;
    if (!e || !*e) {
#ifdef ADDC_HAVE_CUDNN
        *path = PATH_CUDNN;
#else
        *path = PATH_IGEMM;
#endif
        return ADDC_OK;
    }
    if (!strcmp(e, "auto")) return ADDC_OK;
    if (!strcmp(e, "igemm")) {
        *path = PATH_IGEMM;
        return ADDC_OK;
    }
    if (!strcmp(e, "cudnn")) {
#ifndef ADDC_HAVE_CUDNN
        return addc_error_set(ADDC_ERR_UNSUPPORTED,
                              "ADDC_CONV_ALGO=cudnn but addc was built without cuDNN: set it to igemm or auto");
#endif
        *path = PATH_CUDNN;
        return ADDC_OK;
    }
    return addc_error_set(ADDC_ERR_INVALID, "ADDC_CONV_ALGO=%s: expected cudnn, igemm or auto", e);
}

// Milliseconds of one run of fn on the stream, after a warm-up run (module loading, workspace).
template <class F>
static Status time_run(F fn, float *ms) {
    static cudaEvent_t ev[2];
    if (!ev[0]) {
        CUDA_CHECK(cudaEventCreate(&ev[0]));
        CUDA_CHECK(cudaEventCreate(&ev[1]));
    }
    TRY(fn());
    CUDA_CHECK(cudaEventRecord(ev[0], STREAM));
    TRY(fn());
    CUDA_CHECK(cudaEventRecord(ev[1], STREAM));
    CUDA_CHECK(cudaEventSynchronize(ev[1]));
    CUDA_CHECK(cudaEventElapsedTime(ms, ev[0], ev[1]));
    return ADDC_OK;
}

// The faster of two runs (igemm first); a failing cuDNN run loses (its error is dropped).
template <class FI, class FD>
static Status time_pick(FI run_igemm, FD run_cudnn, int *path) {
    float t_ig = 0, t_dn = 0;
    TRY(time_run(run_igemm, &t_ig));
    if (time_run(run_cudnn, &t_dn) != ADDC_OK) {
        addc_error_clear();
        *path = PATH_IGEMM;
        return ADDC_OK;
    }
    *path = t_dn < t_ig ? PATH_CUDNN : PATH_IGEMM;
    return ADDC_OK;
}

// ---- cuDNN ----

#ifdef ADDC_HAVE_CUDNN
// y (n elements, channels last) += bias (C): the forward's bias after cudnnConvolutionForward
template <typename T>
__global__ static void bias_add_kernel(T *y, const T *bias, int64_t n, int64_t C) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st<T>(y, i, ld<T>(y, i) + ld<T>(bias, i % C));
}

static Status dnn_descs_make(DnnDescs *d, const Geo &g, cudnnDataType_t dt) {
    DNN_CHECK(cudnnCreateTensorDescriptor(&d->x));
    DNN_CHECK(cudnnCreateTensorDescriptor(&d->y));
    DNN_CHECK(cudnnCreateFilterDescriptor(&d->w));
    DNN_CHECK(cudnnCreateConvolutionDescriptor(&d->conv));
    DNN_CHECK(cudnnSetTensor4dDescriptor(d->x, CUDNN_TENSOR_NHWC, dt, g.B, g.Cin, g.H, g.W));
    DNN_CHECK(cudnnSetTensor4dDescriptor(d->y, CUDNN_TENSOR_NHWC, dt, g.B, g.Cout, g.OH, g.OW));
    DNN_CHECK(cudnnSetFilter4dDescriptor(d->w, dt, CUDNN_TENSOR_NHWC, g.Cout, g.Cin, g.KH, g.KW));
    DNN_CHECK(cudnnSetConvolution2dDescriptor(d->conv, g.ph, g.pw, g.stride, g.stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                              CUDNN_DATA_FLOAT));
    int on, oc, oh, ow;
    DNN_CHECK(cudnnGetConvolution2dForwardOutputDim(d->conv, d->x, d->w, &on, &oc, &oh, &ow));
    if (on != g.B || oc != g.Cout || oh != g.OH || ow != g.OW)
        return addc_error_set(ADDC_ERR_EXTERNAL, "cuDNN computes a (%d, %d, %d, %d) output where conv2d expects (%d, %d, %d, %d)",
                              on, oh, ow, oc, g.B, g.OH, g.OW, g.Cout);
    return ADDC_OK;
}

// The three directions for dnn_pick: heuristics, workspace query, and which algorithms round
// finely enough for f32 (not FFT, not Winograd).
struct DnnFwd {
    typedef cudnnConvolutionFwdAlgoPerf_t Perf;
    enum { COUNT = CUDNN_CONVOLUTION_FWD_ALGO_COUNT, BACKWARD = 0 };
    static cudnnStatus_t get(cudnnHandle_t h, const DnnDescs *d, int *got, Perf *p) {
        return cudnnGetConvolutionForwardAlgorithm_v7(h, d->x, d->w, d->conv, d->y, COUNT, got, p);
    }
    static cudnnStatus_t ws(cudnnHandle_t h, const DnnDescs *d, int algo, size_t *b) {
        return cudnnGetConvolutionForwardWorkspaceSize(h, d->x, d->w, d->conv, d->y, (cudnnConvolutionFwdAlgo_t)algo, b);
    }
    static bool fine(int a) {
        return a != CUDNN_CONVOLUTION_FWD_ALGO_FFT && a != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
               a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD && a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
    }
};

struct DnnBwdData {
    typedef cudnnConvolutionBwdDataAlgoPerf_t Perf;
    enum { COUNT = CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, BACKWARD = 1 };
    static cudnnStatus_t get(cudnnHandle_t h, const DnnDescs *d, int *got, Perf *p) {
        return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d->w, d->y, d->conv, d->x, COUNT, got, p);
    }
    static cudnnStatus_t ws(cudnnHandle_t h, const DnnDescs *d, int algo, size_t *b) {
        return cudnnGetConvolutionBackwardDataWorkspaceSize(h, d->w, d->y, d->conv, d->x,
                                                            (cudnnConvolutionBwdDataAlgo_t)algo, b);
    }
    static bool fine(int a) {
        return a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT && a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
               a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD && a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
    }
};

struct DnnBwdFilter {
    typedef cudnnConvolutionBwdFilterAlgoPerf_t Perf;
    enum { COUNT = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, BACKWARD = 1 };
    static cudnnStatus_t get(cudnnHandle_t h, const DnnDescs *d, int *got, Perf *p) {
        return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d->x, d->y, d->conv, d->w, COUNT, got, p);
    }
    static cudnnStatus_t ws(cudnnHandle_t h, const DnnDescs *d, int algo, size_t *b) {
        return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d->x, d->y, d->conv, d->w,
                                                              (cudnnConvolutionBwdFilterAlgo_t)algo, b);
    }
    static bool fine(int a) {
        return a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT && a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING &&
               a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
    }
};

// The first usable algorithm of the heuristics' ranking: succeeded, deterministic (gradients),
// no conversion of the data to fp16, within DNN_WS_MAX, accepted by the workspace query under the
// math type it will run with; for exact (f32 values): FMA math on the descriptor and no FFT /
// Winograd. out->ok = false when none.
template <class D>
static Status dnn_pick(cudnnHandle_t h, DnnDescs *d, bool exact, DnnAlgo *out) {
    typename D::Perf perf[D::COUNT];
    int got = 0;
    out->ok = false;
    DNN_CHECK(cudnnSetConvolutionMathType(d->conv, exact ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
    DNN_CHECK(D::get(h, d, &got, perf));
    for (int i = 0; i < got; i++) {
        const typename D::Perf &q = perf[i];
        if (q.status != CUDNN_STATUS_SUCCESS || q.memory > DNN_WS_MAX) continue;
        if (D::BACKWARD && q.determinism != CUDNN_DETERMINISTIC) continue;
        if (q.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue; // f32 data rounded to fp16
        if (exact && (q.mathType == CUDNN_TENSOR_OP_MATH || !D::fine((int)q.algo))) continue;
        cudnnMathType_t mt = exact ? CUDNN_FMA_MATH : q.mathType;
        size_t ws = 0;
        if (cudnnSetConvolutionMathType(d->conv, mt) != CUDNN_STATUS_SUCCESS ||
            D::ws(h, d, (int)q.algo, &ws) != CUDNN_STATUS_SUCCESS || ws > DNN_WS_MAX)
            continue;
        out->ok = true;
        out->algo = (int)q.algo;
        out->math = mt;
        out->ws = ws > q.memory ? ws : q.memory;
        return ADDC_OK;
    }
    return ADDC_OK;
}

static void *dnn_ws;
static size_t dnn_ws_bytes;

// the cached cuDNN workspace, at least `need` bytes (NULL for 0)
static Status dnn_workspace(size_t need, void **p) {
    *p = NULL;
    if (need == 0) return ADDC_OK;
    if (need > dnn_ws_bytes) {
        if (dnn_ws) { // the stream may still use it
            CUDA_CHECK(cudaStreamSynchronize(STREAM));
            TRY(cuda_mem_free(CUDA_MEM_WORKSPACE, dnn_ws, dnn_ws_bytes));
            dnn_ws = NULL;
            dnn_ws_bytes = 0;
        }
        size_t bytes = (need + ((size_t)16 << 20) - 1) / ((size_t)16 << 20) * ((size_t)16 << 20);
        TRY(cuda_mem_alloc(CUDA_MEM_WORKSPACE, &dnn_ws, bytes));
        dnn_ws_bytes = bytes;
    }
    *p = dnn_ws;
    return ADDC_OK;
}

// ADDC_CONV_GRAD (see the top): whether the gradients of bf16 values run as bf16 convolutions.
static Status dnn_grad_mode(bool *bf16) {
    const char *e = getenv("ADDC_CONV_GRAD");
    *bf16 = !e || !*e || !strcmp(e, "bf16");
    if (*bf16 || !strcmp(e, "tf32")) return ADDC_OK;
    return addc_error_set(ADDC_ERR_INVALID, "ADDC_CONV_GRAD=%s: expected bf16 or tf32", e);
}

// y (n) += x (n, bf16): a bf16 gradient from cuDNN accumulated into the f32 one
__global__ static void accum_bf16_kernel(float *y, const __nv_bfloat16 *x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += __bfloat162float(x[i]);
}

// descriptors (once) and the algorithms of the forward or of both gradients (once)
static Status dnn_prepare(ConvEntry *e, const Geo &g, DType dt, bool backward, cudnnHandle_t *h) {
    *h = (cudnnHandle_t)cuda_cudnn_handle();
    if (!*h) return addc_error_status();
    bool exact = dt == DTYPE_F32;
    if (!e->dnn_made) {
        TRY(dnn_descs_make(&e->val, g, dt == DTYPE_BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT));
        TRY(dnn_descs_make(&e->grad, g, CUDNN_DATA_FLOAT));
        e->dnn_made = true;
    }
    if (!backward && !e->fwd_picked) {
        TRY(dnn_pick<DnnFwd>(*h, &e->val, exact, &e->fwd));
        e->fwd_picked = true;
    }
    if (backward && !e->bwd_picked) {
        bool bf16;
        TRY(dnn_grad_mode(&bf16));
        e->grad_bf16 = bf16 && dt == DTYPE_BF16;
        DnnDescs *d = e->grad_bf16 ? &e->val : &e->grad;
        TRY(dnn_pick<DnnBwdData>(*h, d, exact, &e->dx));
        TRY(dnn_pick<DnnBwdFilter>(*h, d, exact, &e->dw));
        e->bwd_picked = true;
    }
    return ADDC_OK;
}

// Whether cuDNN can run direction `which` (0 fwd, 1 dx, 2 dw) of this shape. Forced: errors are
// returned; auto: a failure marks the shape igemm-only.
static Status dnn_usable(ConvEntry *e, const Geo &g, DType dt, int which, bool forced, cudnnHandle_t *h, bool *ok) {
    *ok = false;
    if (e->dnn_broken) return ADDC_OK;
    Status st = dnn_prepare(e, g, dt, which != 0, h);
    if (st != ADDC_OK) {
        if (forced) return st;
        addc_error_clear();
        e->dnn_broken = 1;
        return ADDC_OK;
    }
    *ok = which == 0 ? e->fwd.ok : which == 1 ? e->dx.ok : e->dw.ok;
    return ADDC_OK;
}

// y = conv(x, w) (+ bias), all in the values' dtype
template <typename T>
static Status dnn_fwd(cudnnHandle_t h, ConvEntry *e, const Geo &g, const T *x, const T *w, const T *bias, T *y) {
    void *ws;
    TRY(dnn_workspace(e->fwd.ws, &ws));
    float alpha = 1.0f, beta = 0.0f;
    DNN_CHECK(cudnnSetConvolutionMathType(e->val.conv, e->fwd.math));
    DNN_CHECK(cudnnConvolutionForward(h, &alpha, e->val.x, x, e->val.w, w, e->val.conv,
                                      (cudnnConvolutionFwdAlgo_t)e->fwd.algo, ws, e->fwd.ws, &beta, e->val.y, y));
    if (bias) {
        int64_t n = (int64_t)g.B * g.OH * g.OW * g.Cout;
        bias_add_kernel<T><<<cuda_grid(n, 256), 256, 0, STREAM>>>(y, bias, n, g.Cout);
        CUDA_LAUNCH_CHECK();
    }
    return ADDC_OK;
}

// An f32 view of a device tensor of n elements of dtype dt (a converted copy from the arena).
static const float *as_f32(Ctx *c, const void *p, DType dt, int64_t n) {
    if (dt == DTYPE_F32) return (const float *)p;
    float *q = (float *)dev_scratch(c, (n ? n : 1) * (int64_t)sizeof(float));
    if (!q || cuda_convert(q, DTYPE_F32, p, dt, n) != ADDC_OK) return NULL;
    return q;
}

// The bf16 gradients (e->grad_bf16): dy rounded to bf16, the gradient in bf16 scratch, added into out.
static Status dnn_bwd_bf16(Ctx *c, cudnnHandle_t h, ConvEntry *e, const Geo &g, int which, const float *dy,
                           const void *wx, float *out) {
    int64_t ny = (int64_t)g.B * g.OH * g.OW * g.Cout;
    int64_t nout = which == 1 ? (int64_t)g.B * g.H * g.W * g.Cin : (int64_t)g.Cout * g.KH * g.KW * g.Cin;
    __nv_bfloat16 *dy16 = (__nv_bfloat16 *)dev_scratch(c, (ny ? ny : 1) * (int64_t)sizeof(__nv_bfloat16));
    __nv_bfloat16 *o16 = (__nv_bfloat16 *)dev_scratch(c, (nout ? nout : 1) * (int64_t)sizeof(__nv_bfloat16));
    if (!dy16 || !o16) return addc_error_status();
    TRY(cuda_convert(dy16, DTYPE_BF16, dy, DTYPE_F32, ny));
    const DnnAlgo &a = which == 1 ? e->dx : e->dw;
    void *ws;
    TRY(dnn_workspace(a.ws, &ws));
    float alpha = 1.0f, beta = 0.0f;
    DNN_CHECK(cudnnSetConvolutionMathType(e->val.conv, a.math));
    if (which == 1)
        DNN_CHECK(cudnnConvolutionBackwardData(h, &alpha, e->val.w, wx, e->val.y, dy16, e->val.conv,
                                               (cudnnConvolutionBwdDataAlgo_t)a.algo, ws, a.ws, &beta, e->val.x, o16));
    else
        DNN_CHECK(cudnnConvolutionBackwardFilter(h, &alpha, e->val.x, wx, e->val.y, dy16, e->val.conv,
                                                 (cudnnConvolutionBwdFilterAlgo_t)a.algo, ws, a.ws, &beta, e->val.w,
                                                 o16));
    accum_bf16_kernel<<<cuda_grid(nout, 256), 256, 0, STREAM>>>(out, o16, nout);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// dx += conv^T(dy, w) (dx: 1, weight given in the values' dtype) or dw += dy (x) x (dw: 2)
static Status dnn_bwd(Ctx *c, cudnnHandle_t h, ConvEntry *e, const Geo &g, DType dt, int which, const float *dy,
                      const void *wx, float *out) {
    ArenaMark mark = arena_mark(c->arena);
    if (e->grad_bf16) {
        Status st = dnn_bwd_bf16(c, h, e, g, which, dy, wx, out);
        arena_reset_to(c->arena, mark); // the scratch is released in stream order
        return st;
    }
    int64_t n = which == 1 ? (int64_t)g.Cout * g.KH * g.KW * g.Cin : (int64_t)g.B * g.H * g.W * g.Cin;
    const float *v = as_f32(c, wx, dt, n);
    if (!v) return addc_error_status();
    const DnnAlgo &a = which == 1 ? e->dx : e->dw;
    void *ws;
    TRY(dnn_workspace(a.ws, &ws));
    float alpha = 1.0f, beta = 1.0f;
    DNN_CHECK(cudnnSetConvolutionMathType(e->grad.conv, a.math));
    if (which == 1)
        DNN_CHECK(cudnnConvolutionBackwardData(h, &alpha, e->grad.w, v, e->grad.y, dy, e->grad.conv,
                                               (cudnnConvolutionBwdDataAlgo_t)a.algo, ws, a.ws, &beta, e->grad.x, out));
    else
        DNN_CHECK(cudnnConvolutionBackwardFilter(h, &alpha, e->grad.x, v, e->grad.y, dy, e->grad.conv,
                                                 (cudnnConvolutionBwdFilterAlgo_t)a.algo, ws, a.ws, &beta, e->grad.w,
                                                 out));
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}
#endif

// ---- conv2d ----

template <typename T>
static Status conv2d_fwd_t(Ctx *c, Node *n, const Geo &g) {
    const T *x = (const T *)n->in[0]->v.data, *w = (const T *)n->in[1]->v.data;
    const T *bias = n->in[2] ? (const T *)n->in[2]->v.data : NULL;
    T *y = (T *)n->out->v.data;
    int forced;
    TRY(conv_forced_path(&forced));
#ifdef ADDC_HAVE_CUDNN
    if (forced != PATH_IGEMM) {
        ConvEntry *e;
        TRY(conv_entry(g, n->in[0]->v.dtype, &e));
        cudnnHandle_t h = NULL;
        bool ok;
        TRY(dnn_usable(e, g, n->in[0]->v.dtype, 0, forced == PATH_CUDNN, &h, &ok));
        if (ok && forced == PATH_UNSET && e->fwd_path == PATH_UNSET) {
            ArenaMark mark = arena_mark(c->arena);
            T *tmp = (T *)dev_scratch(c, tensor_nbytes(&n->out->v) ? tensor_nbytes(&n->out->v) : 1);
            if (!tmp) return addc_error_status();
            TRY(time_pick([&]() { return ig_fwd<T, T, T, false>(c, g, x, w, bias, tmp); },
                          [&]() { return dnn_fwd<T>(h, e, g, x, w, bias, tmp); }, &e->fwd_path));
            arena_reset_to(c->arena, mark);
        }
        if (ok && (forced == PATH_CUDNN || e->fwd_path == PATH_CUDNN)) return dnn_fwd<T>(h, e, g, x, w, bias, y);
    }
#endif
    return ig_fwd<T, T, T, false>(c, g, x, w, bias, y);
}

static Status conv2d_fwd(Ctx *c, Node *n) {
    Geo g;
    TRY(conv2d_geo(&g, &n->in[0]->v, &n->in[1]->v, n->ip[0], n->ip[1]));
    Status st = ADDC_OK;
    DISPATCH_FLOAT(n->in[0]->v.dtype, T, { st = conv2d_fwd_t<T>(c, n, g); });
    return st;
}

// The path of gradient direction `which` (1: input, 2: weight) of this shape.
template <typename T>
static Status conv2d_bwd_path(Ctx *c, Node *n, const Geo &g, int which, int forced, int *path, void **dnn) {
    *path = PATH_IGEMM;
    *dnn = NULL;
#ifdef ADDC_HAVE_CUDNN
    if (forced == PATH_IGEMM) return ADDC_OK;
    DType dt = n->in[0]->v.dtype;
    ConvEntry *e;
    TRY(conv_entry(g, dt, &e));
    cudnnHandle_t h = NULL;
    bool ok;
    TRY(dnn_usable(e, g, dt, which, forced == PATH_CUDNN, &h, &ok));
    if (!ok) return ADDC_OK;
    int *cached = which == 1 ? &e->dx_path : &e->dw_path;
    if (forced == PATH_UNSET && *cached == PATH_UNSET) { // time both into a zeroed scratch gradient
        const Tensor *in = which == 1 ? &n->in[0]->v : &n->in[1]->v;
        int64_t nel = tensor_numel(in);
        const float *dy = (const float *)n->out->g.data;
        const T *x = (const T *)n->in[0]->v.data, *w = (const T *)n->in[1]->v.data;
        ArenaMark mark = arena_mark(c->arena);
        float *tmp = (float *)dev_scratch(c, (nel ? nel : 1) * (int64_t)sizeof(float));
        if (!tmp) return addc_error_status();
        TRY(cuda_memset(tmp, 0, (size_t)nel * sizeof(float)));
        auto run_ig = [&]() {
            return which == 1 ? ig_dx<float, T, float, true>(c, g, dy, w, tmp) : ig_dw<float, T>(c, g, dy, x, tmp);
        };
        auto run_dn = [&]() { return dnn_bwd(c, h, e, g, dt, which, dy, which == 1 ? (const void *)w : x, tmp); };
        TRY(time_pick(run_ig, run_dn, cached));
        arena_reset_to(c->arena, mark);
    }
    if (forced == PATH_CUDNN || *cached == PATH_CUDNN) {
        *path = PATH_CUDNN;
        *dnn = (void *)e;
    }
#else
    (void)c, (void)n, (void)g, (void)which, (void)forced;
#endif
    return ADDC_OK;
}

template <typename T>
static Status conv2d_bwd_t(Ctx *c, Node *n, const Geo &g, float *gx, float *gw) {
    const float *dy = (const float *)n->out->g.data;
    const T *x = (const T *)n->in[0]->v.data, *w = (const T *)n->in[1]->v.data;
    int forced;
    TRY(conv_forced_path(&forced));
    for (int which = 1; which <= 2; which++) {
        float *out = which == 1 ? gx : gw;
        if (!out) continue;
        int path;
        void *dnn;
        TRY(conv2d_bwd_path<T>(c, n, g, which, forced, &path, &dnn));
#ifdef ADDC_HAVE_CUDNN
        if (path == PATH_CUDNN) {
            cudnnHandle_t h = (cudnnHandle_t)cuda_cudnn_handle();
            if (!h) return addc_error_status();
            TRY(dnn_bwd(c, h, (ConvEntry *)dnn, g, n->in[0]->v.dtype, which, dy,
                        which == 1 ? (const void *)w : (const void *)x, out));
            continue;
        }
#endif
        if (which == 1) TRY((ig_dx<float, T, float, true>(c, g, dy, w, out)));
        else TRY((ig_dw<float, T>(c, g, dy, x, out)));
    }
    return ADDC_OK;
}

static Status conv2d_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gw = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    Geo g;
    TRY(conv2d_geo(&g, &n->in[0]->v, &n->in[1]->v, n->ip[0], n->ip[1]));
    if (gx || gw) DISPATCH_FLOAT(n->in[0]->v.dtype, T, { st = conv2d_bwd_t<T>(c, n, g, gx, gw); });
    if (st) return st;
    if (gb) TRY(cuda_colsum_accum(c, gb, (const float *)n->out->g.data, (int64_t)g.B * g.OH * g.OW, g.Cout));
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_conv2d = {conv2d_fwd, conv2d_bwd, NULL};

// ---- conv1d and its transpose (igemm) ----

template <typename T>
static Status conv1d_fwd_t(Ctx *c, Node *n, const Geo &g) {
    return ig_fwd<T, T, T, false>(c, g, (const T *)n->in[0]->v.data, (const T *)n->in[1]->v.data,
                                  n->in[2] ? (const T *)n->in[2]->v.data : NULL, (T *)n->out->v.data);
}

static Status conv1d_fwd(Ctx *c, Node *n) {
    Geo g;
    TRY(conv1d_geo(&g, &n->in[0]->v, &n->in[1]->v, (PadMode)n->ip[0]));
    Status st = ADDC_OK;
    DISPATCH_FLOAT(n->in[0]->v.dtype, T, { st = conv1d_fwd_t<T>(c, n, g); });
    return st;
}

// dx += conv1d^T(dy), dw += dy (x) x
template <typename T>
static Status conv1d_bwd_t(Ctx *c, Node *n, const Geo &g, float *gx, float *gw) {
    const float *dy = (const float *)n->out->g.data;
    if (gx) TRY((ig_dx<float, T, float, true>(c, g, dy, (const T *)n->in[1]->v.data, gx)));
    if (gw) TRY((ig_dw<float, T>(c, g, dy, (const T *)n->in[0]->v.data, gw)));
    return ADDC_OK;
}

static Status conv1d_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gw = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    Geo g;
    TRY(conv1d_geo(&g, &n->in[0]->v, &n->in[1]->v, (PadMode)n->ip[0]));
    if (gx || gw) DISPATCH_FLOAT(n->in[0]->v.dtype, T, { st = conv1d_bwd_t<T>(c, n, g, gx, gw); });
    if (st) return st;
    if (gb) TRY(cuda_colsum_accum(c, gb, (const float *)n->out->g.data, (int64_t)g.B * g.OW, g.Cout));
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_conv1d = {conv1d_fwd, conv1d_bwd, NULL};

// out (B, N, Cin) = conv1d^T(y (B, N, Cout)): conv1d's input-gradient kernel, stored
template <typename T>
static Status conv1d_t_fwd_t(Ctx *c, Node *n, const Geo &g) {
    return ig_dx<T, T, T, false>(c, g, (const T *)n->in[0]->v.data, (const T *)n->in[1]->v.data, (T *)n->out->v.data);
}

static Status conv1d_t_fwd(Ctx *c, Node *n) {
    Geo g;
    TRY(conv1d_geo(&g, &n->in[0]->v, &n->in[1]->v, (PadMode)n->ip[0]));
    Status st = ADDC_OK;
    DISPATCH_FLOAT(n->in[0]->v.dtype, T, { st = conv1d_t_fwd_t<T>(c, n, g); });
    return st;
}

// with g = d(out) (B, N, Cin): d(y) += conv1d(g, w); d(w) += y (x) g (conv1d's weight gradient
// at input g with upstream y)
template <typename T>
static Status conv1d_t_bwd_t(Ctx *c, Node *n, const Geo &g, float *gy, float *gw) {
    const float *go = (const float *)n->out->g.data;
    const T *y = (const T *)n->in[0]->v.data, *w = (const T *)n->in[1]->v.data;
    if (gy) TRY((ig_fwd<float, T, float, true>(c, g, go, w, NULL, gy)));
    if (gw) TRY((ig_dw<T, float>(c, g, y, go, gw)));
    return ADDC_OK;
}

static Status conv1d_t_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gy = ops_in_grad(c, n, 0, &st);
    float *gw = ops_in_grad(c, n, 1, &st);
    if (st) return st;
    if (!gy && !gw) return ADDC_OK;
    Geo g;
    TRY(conv1d_geo(&g, &n->in[0]->v, &n->in[1]->v, (PadMode)n->ip[0]));
    DISPATCH_FLOAT(n->in[0]->v.dtype, T, { st = conv1d_t_bwd_t<T>(c, n, g, gy, gw); });
    return st;
}

extern "C" const OpImpl cuda_op_conv1d_t = {conv1d_t_fwd, conv1d_t_bwd, NULL};
