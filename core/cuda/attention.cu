// core/cuda/attention: the CUDA kernels of core/ops/attention.c: softmax over the last dim, and
// flash-style multi-head attention, forward and backward, values f32 or bf16 (f32 arithmetic).
//
// Softmax: one block per row; max, sum of exp and sum(dy * y) are fixed-tree block reductions.
//
// Attention, q (B, Nq, NH*Dh), k (B, Nk, NH*Dh), v (B, Nk, NH*Dv) -> o (B, Nq, NH*Dv); node
// parameters ip = {NH, causal}, fp = {scale} as attention.c sets them. Every kernel works on
// square tiles of BT query rows / BT keys of one (batch, head) held in shared memory, with any
// Dh, Dv (columns past a width are never read; rows past Nq or Nk are zero-filled and masked):
//   forward   one block per (batch, head, query tile): walks the key tiles with an online
//             softmax (per-row running max and sum in shared memory, f32); the output tile is
//             accumulated in shared memory and rescaled when a row's max moves. The (Nq, Nk)
//             score matrix never exists in global memory; saved[0] is the row logsumexp
//             (B, NH, Nq) f32, as the CPU saves it.
//   backward  FlashAttention-2: D = rowsum(dO * O) (one warp per row); then one block per
//             (batch, head, key tile) loops over the query tiles that can see it, recomputing
//             P = exp(S - lse) and dS = P * (dP - D), dP = dO V^T, and accumulates
//             dV = P^T dO, dK = scale dS^T Q in shared memory; a second kernel, one block per
//             (batch, head, query tile), loops over the key tiles and accumulates
//             dQ = scale dS K. Each block owns its rows of dk, dv or dq (+= once at the end):
//             no atomics, a fixed summation order, bitwise reproducible.
// Products are shared-memory register-tiled loops (tile_mm: 128 threads as 8 x 16, each owning
// a (BT/8) x TC micro-tile). BT is 64, 32 or 16: the largest whose shared memory lets two blocks
// share an SM, else the largest that fits at all (heads up to about 600 wide).
#include <math.h>

#include "core/cuda/cuda_internal.cuh"

#define SM_THREADS 128   // softmax: one row per block
#define ATTN_THREADS 128 // attention blocks: 8 rows x 16 columns of threads in tile_mm
#define DOT_WARPS 8      // rows (one warp each) per block of the D = rowsum(dO * O) kernel

// ---- reductions (fixed order: the same bits on every run) ----

// Butterfly reductions over a warp: every lane ends with the same value (each step combines the
// same two operands in every lane; + and max are commutative).
__device__ __forceinline__ static float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ static float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum or max over the block (blockDim.x a multiple of 32), returned to every thread. red: 32
// floats of shared memory. Every thread of the block must call it.
__device__ static float block_reduce(float v, float *red, bool is_max) {
    v = is_max ? warp_max(v) : warp_sum(v);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    __syncthreads();
    float t = red[0];
    for (int i = 1; i < (int)(blockDim.x >> 5); i++) t = is_max ? fmaxf(t, red[i]) : t + red[i];
    __syncthreads();
    return t;
}

// ---- softmax ----

template <typename T> __global__ static void softmax_fwd_kernel(const T *__restrict__ x, T *__restrict__ y, int64_t D) {
    __shared__ float red[32];
    int64_t off = (int64_t)blockIdx.x * D;
    float m = -INFINITY;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) m = fmaxf(m, ld<T>(x, off + k));
    m = block_reduce(m, red, true);
    float s = 0.0f;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) s += expf(ld<T>(x, off + k) - m);
    float inv = 1.0f / block_reduce(s, red, false);
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) st<T>(y, off + k, expf(ld<T>(x, off + k) - m) * inv);
}

// gx += y * (dy - sum(dy * y)) per row
template <typename T>
__global__ static void softmax_bwd_kernel(const T *__restrict__ y, const float *__restrict__ dy, float *__restrict__ gx,
                                          int64_t D) {
    __shared__ float red[32];
    int64_t off = (int64_t)blockIdx.x * D;
    float s = 0.0f;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) s += dy[off + k] * ld<T>(y, off + k);
    s = block_reduce(s, red, false);
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) gx[off + k] += ld<T>(y, off + k) * (dy[off + k] - s);
}

static Status sm_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    int64_t D = x->shape[x->ndim - 1], rows = D ? tensor_numel(x) / D : 0;
    if (rows == 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        softmax_fwd_kernel<T><<<(unsigned)rows, SM_THREADS, 0, STREAM>>>((const T *)x->data, (T *)n->out->v.data, D);
        CUDA_LAUNCH_CHECK();
    });
    return ADDC_OK;
}

static Status sm_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *y = &n->out->v;
    int64_t D = y->shape[y->ndim - 1], rows = D ? tensor_numel(y) / D : 0;
    if (rows == 0) return ADDC_OK;
    DISPATCH_FLOAT(y->dtype, T, {
        softmax_bwd_kernel<T>
            <<<(unsigned)rows, SM_THREADS, 0, STREAM>>>((const T *)y->data, (const float *)n->out->g.data, gx, D);
        CUDA_LAUNCH_CHECK();
    });
    return ADDC_OK;
}

// ---- attention ----

struct AttnDims {
    int B, Nq, Nk, NH, Dh, Dv;
    int64_t ldq, ldv; // global row strides: NH*Dh (q, k, dq, dk) and NH*Dv (v, o, dv, dO)
    int ldh, ldvs;    // shared-memory row strides of Dh- and Dv-wide tiles (odd: no bank conflicts)
    float scale;
    int causal;
};

static AttnDims attn_dims(const Node *n) {
    const Tensor *q = &n->in[0]->v, *k = &n->in[1]->v, *v = &n->in[2]->v;
    AttnDims a;
    a.NH = (int)n->ip[0];
    a.causal = n->ip[1] != 0;
    a.B = (int)q->shape[0];
    a.Nq = (int)q->shape[1];
    a.Nk = (int)k->shape[1];
    a.ldq = q->shape[2];
    a.ldv = v->shape[2];
    a.Dh = (int)(a.ldq / a.NH);
    a.Dv = (int)(a.ldv / a.NH);
    a.ldh = a.Dh | 1;
    a.ldvs = a.Dv | 1;
    a.scale = (float)n->fp[0];
    return a;
}

enum { ATTN_FWD = 0, ATTN_BWD_KV = 1, ATTN_BWD_Q = 2 };

// Shared-memory floats of one block of kernel `kind` with BT-row tiles (the kernels carve their
// buffers in the order listed).
static int64_t attn_smem_floats(int kind, int BT, const AttnDims &a) {
    int64_t h = (int64_t)BT * a.ldh, v = (int64_t)BT * a.ldvs, p = (int64_t)BT * (BT + 1);
    switch (kind) {
    case ATTN_FWD: return 2 * h + 2 * v + p + 3 * BT;        // Qs Ks | Vs Os | Ss | m l corr
    case ATTN_BWD_KV: return 3 * h + 3 * v + 2 * p + 2 * BT; // Ks Qs dKs | Vs dOs dVs | Ps dSs | lse D
    default: return 3 * h + 2 * v + 2 * p + 2 * BT;          // Qs Ks dQs | dOs Vs | Ps dSs | lse D
    }
}

// The tile rows BT of kernel `kind` and its dynamic shared memory in bytes.
static Status attn_pick_tile(int kind, const AttnDims &a, int *bt, size_t *bytes) {
    int dev = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const int cand[3] = {64, 32, 16};
    int64_t limits[2] = {optin / 2 - 1024, optin}; // two blocks per SM if possible, else one
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 3; i++) {
            int64_t b = attn_smem_floats(kind, cand[i], a) * 4;
            if (b <= limits[pass]) {
                *bt = cand[i];
                *bytes = (size_t)b;
                return ADDC_OK;
            }
        }
    return addc_error_set(ADDC_ERR_UNSUPPORTED,
                          "attention: heads of width Dh %d, Dv %d need %lld bytes of shared memory per block even "
                          "with 16-row tiles, the device allows %d; use narrower heads (more heads)",
                          a.Dh, a.Dv, (long long)(attn_smem_floats(kind, 16, a) * 4), optin);
}

// dst[r * ldd + c] = src[r * lds + c] for r < rows, 0 for rows <= r < BT (c < cols)
template <typename T>
__device__ __forceinline__ static void tile_load(float *dst, int ldd, const T *src, int64_t lds, int rows, int BT,
                                                 int cols) {
    for (int i = threadIdx.x; i < BT * cols; i += ATTN_THREADS) {
        int r = i / cols, c = i - r * cols;
        dst[r * ldd + c] = r < rows ? ld<T>(src, (int64_t)r * lds + c) : 0.0f;
    }
}

__device__ __forceinline__ static void smem_zero(float *p, int n) {
    for (int i = threadIdx.x; i < n; i += ATTN_THREADS) p[i] = 0.0f;
}

enum { MM_SET = 0, MM_ADD = 1, MM_RESCALE = 2 };

// C (M x N) op= alpha * A B over K, all in shared memory: A(r, k) = A[r * sar + k * sak],
// B(k, c) = B[k * sbk + c * sbc], C(r, c) = C[r * ldc + c]. op: MM_SET (=), MM_ADD (+=) or
// MM_RESCALE (C = C * rowscale[r] + alpha A B). The 128 threads are 8 x 16; thread (ty, tx)
// owns rows ty + 8i (i < TR) and columns tx + 16j (j < TC) of each (8 TR) x (16 TC) block of C,
// summing over k in order. Out-of-range rows and columns read clamped (valid) addresses and are
// not stored. No synchronisation inside: callers separate phases with __syncthreads.
template <int TR, int TC>
__device__ __forceinline__ static void tile_mm(int M, int N, int K, const float *A, int sar, int sak, const float *B,
                                               int sbk, int sbc, float *C, int ldc, float alpha, int mode,
                                               const float *rowscale) {
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    for (int r0 = 0; r0 < M; r0 += TR * 8)
        for (int c0 = 0; c0 < N; c0 += TC * 16) {
            int ao[TR], bo[TC];
#pragma unroll
            for (int i = 0; i < TR; i++) ao[i] = min(r0 + ty + 8 * i, M - 1) * sar;
#pragma unroll
            for (int j = 0; j < TC; j++) bo[j] = min(c0 + tx + 16 * j, N - 1) * sbc;
            float acc[TR][TC];
#pragma unroll
            for (int i = 0; i < TR; i++)
#pragma unroll
                for (int j = 0; j < TC; j++) acc[i][j] = 0.0f;
#pragma unroll 2
            for (int kk = 0; kk < K; kk++) {
                const float *ak = A + kk * sak, *bk = B + kk * sbk;
                float av[TR], bv[TC];
#pragma unroll
                for (int i = 0; i < TR; i++) av[i] = ak[ao[i]];
#pragma unroll
                for (int j = 0; j < TC; j++) bv[j] = bk[bo[j]];
#pragma unroll
                for (int i = 0; i < TR; i++)
#pragma unroll
                    for (int j = 0; j < TC; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
            }
#pragma unroll
            for (int i = 0; i < TR; i++) {
                int r = r0 + ty + 8 * i;
                if (r >= M) continue;
#pragma unroll
                for (int j = 0; j < TC; j++) {
                    int cc = c0 + tx + 16 * j;
                    if (cc >= N) continue;
                    float *p = C + r * ldc + cc, v = alpha * acc[i][j];
                    if (mode == MM_SET) *p = v;
                    else if (mode == MM_ADD) *p += v;
                    else *p = *p * rowscale[r] + v;
                }
            }
        }
}

// keys [0, visible) of this tile (starting at kb0, nk keys) that query row qi may see
__device__ __forceinline__ static int attn_tile_visible(const AttnDims &a, int qi, int kb0, int nk) {
    int vis = (a.causal ? min(qi + 1, a.Nk) : a.Nk) - kb0;
    return max(0, min(vis, nk));
}

// one block per (batch, head, query tile): o and the row logsumexp (lse NULL: not saved)
template <typename T, int BT>
__global__ static void __launch_bounds__(ATTN_THREADS)
    attn_fwd_kernel(AttnDims a, const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v,
                    T *__restrict__ out, float *__restrict__ lse) {
    extern __shared__ float smem[];
    constexpr int TR = BT / 8, ldp = BT + 1;
    const int ldh = a.ldh, ldv = a.ldvs;
    float *Qs = smem, *Ks = Qs + BT * ldh, *Vs = Ks + BT * ldh, *Os = Vs + BT * ldv, *Ss = Os + BT * ldv;
    float *ms = Ss + BT * ldp, *ls = ms + BT, *cs = ls + BT;
    const int nqt = (a.Nq + BT - 1) / BT, bh = blockIdx.x / nqt, q0 = blockIdx.x % nqt * BT;
    const int b = bh / a.NH, h = bh % a.NH, rows = min(BT, a.Nq - q0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const T *kh = k + (int64_t)b * a.Nk * a.ldq + (int64_t)h * a.Dh;
    const T *vh = v + (int64_t)b * a.Nk * a.ldv + (int64_t)h * a.Dv;
    tile_load(Qs, ldh, q + ((int64_t)b * a.Nq + q0) * a.ldq + (int64_t)h * a.Dh, a.ldq, rows, BT, a.Dh);
    smem_zero(Os, BT * ldv);
    for (int r = threadIdx.x; r < BT; r += ATTN_THREADS) {
        ms[r] = -INFINITY;
        ls[r] = 0.0f;
    }
    const int kend = a.causal ? min(a.Nk, q0 + BT) : a.Nk; // causal: later keys are seen by no row
    for (int kb0 = 0; kb0 < kend; kb0 += BT) {
        const int nk = min(BT, a.Nk - kb0);
        __syncthreads(); // the previous tile's readers of Ks, Vs, Ss are done
        tile_load(Ks, ldh, kh + (int64_t)kb0 * a.ldq, a.ldq, nk, BT, a.Dh);
        tile_load(Vs, ldv, vh + (int64_t)kb0 * a.ldv, a.ldv, nk, BT, a.Dv);
        __syncthreads();
        tile_mm<TR, BT / 16>(BT, BT, a.Dh, Qs, ldh, 1, Ks, 1, ldh, Ss, ldp, a.scale, MM_SET, nullptr);
        __syncthreads();
        // online softmax, one warp per row: Ss <- exp(S - new max), masked entries 0
        for (int r = warp; r < BT; r += ATTN_THREADS / 32) {
            float *sr = Ss + r * ldp;
            const int vis = attn_tile_visible(a, q0 + r, kb0, nk);
            float mx = -INFINITY;
            for (int cc = lane; cc < vis; cc += 32) mx = fmaxf(mx, sr[cc]);
            mx = warp_max(mx);
            const float mo = ms[r], mn = fmaxf(mo, mx);
            float sum = 0.0f;
            for (int cc = lane; cc < BT; cc += 32) {
                float p = cc < vis ? expf(sr[cc] - mn) : 0.0f;
                sr[cc] = p;
                sum += p;
            }
            sum = warp_sum(sum);
            if (lane == 0) {
                float corr = mo == -INFINITY ? 0.0f : expf(mo - mn);
                ls[r] = ls[r] * corr + sum;
                ms[r] = mn;
                cs[r] = corr;
            }
        }
        __syncthreads();
        tile_mm<TR, 4>(BT, a.Dv, BT, Ss, ldp, 1, Vs, ldv, 1, Os, ldv, 1.0f, MM_RESCALE, cs);
    }
    __syncthreads();
    T *oh = out + ((int64_t)b * a.Nq + q0) * a.ldv + (int64_t)h * a.Dv;
    for (int i = threadIdx.x; i < rows * a.Dv; i += ATTN_THREADS) {
        int r = i / a.Dv, cc = i - r * a.Dv;
        st<T>(oh, (int64_t)r * a.ldv + cc, Os[r * ldv + cc] / ls[r]);
    }
    if (lse)
        for (int r = threadIdx.x; r < rows; r += ATTN_THREADS) lse[(int64_t)bh * a.Nq + q0 + r] = ms[r] + logf(ls[r]);
}

// Dvec (B, NH, Nq) = rowsum(dO * O) per head, one warp per row
template <typename T>
__global__ static void attn_bwd_dot_kernel(AttnDims a, const T *__restrict__ o, const float *__restrict__ dout,
                                           float *__restrict__ Dvec) {
    int64_t row = (int64_t)blockIdx.x * DOT_WARPS + (threadIdx.x >> 5); // (b * NH + h) * Nq + i
    if (row >= (int64_t)a.B * a.NH * a.Nq) return;                      // the whole warp
    int64_t bh = row / a.Nq, i = row % a.Nq, b = bh / a.NH, h = bh % a.NH;
    int64_t off = (b * a.Nq + i) * a.ldv + h * a.Dv;
    float s = 0.0f;
    for (int c = threadIdx.x & 31; c < a.Dv; c += 32) s += dout[off + c] * ld<T>(o, off + c);
    s = warp_sum(s);
    if ((threadIdx.x & 31) == 0) Dvec[row] = s;
}

// P = exp(S - lse) and dS = P * (dP - D) in place over a BT x BT tile (query rows q0.., keys
// kb0..); masked and out-of-range entries 0. Ps holds scale * Q K^T, dSs holds dO V^T (when
// with_ds).
template <int BT>
__device__ __forceinline__ static void attn_tile_grads(const AttnDims &a, float *Ps, float *dSs, const float *Ls,
                                                       const float *Ds, int q0, int rows, int kb0, int nk,
                                                       bool with_ds) {
    constexpr int ldp = BT + 1;
    for (int i = threadIdx.x; i < BT * BT; i += ATTN_THREADS) {
        int r = i / BT, cc = i - r * BT;
        bool ok = r < rows && cc < attn_tile_visible(a, q0 + r, kb0, nk);
        float p = ok ? expf(Ps[r * ldp + cc] - Ls[r]) : 0.0f;
        Ps[r * ldp + cc] = p;
        if (with_ds) dSs[r * ldp + cc] = p * (dSs[r * ldp + cc] - Ds[r]);
    }
}

// lse and D of query rows q0.. of head bh into Ls, Ds (0 past Nq)
template <int BT>
__device__ __forceinline__ static void attn_load_rowstats(const AttnDims &a, float *Ls, float *Ds, const float *lse,
                                                          const float *Dvec, int64_t bh, int q0, int rows) {
    for (int r = threadIdx.x; r < BT; r += ATTN_THREADS) {
        Ls[r] = r < rows ? lse[bh * a.Nq + q0 + r] : 0.0f;
        Ds[r] = r < rows ? Dvec[bh * a.Nq + q0 + r] : 0.0f;
    }
}

// one block per (batch, head, key tile): gk += scale dS^T Q, gv += P^T dO over the query tiles
// (either may be NULL)
template <typename T, int BT>
__global__ static void __launch_bounds__(ATTN_THREADS)
    attn_bwd_kv_kernel(AttnDims a, const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v,
                       const float *__restrict__ dout, const float *__restrict__ lse, const float *__restrict__ Dvec,
                       float *__restrict__ gk, float *__restrict__ gv) {
    extern __shared__ float smem[];
    constexpr int TR = BT / 8, ldp = BT + 1;
    const int ldh = a.ldh, ldv = a.ldvs;
    float *Ks = smem, *Qs = Ks + BT * ldh, *dKs = Qs + BT * ldh, *Vs = dKs + BT * ldh, *dOs = Vs + BT * ldv;
    float *dVs = dOs + BT * ldv, *Ps = dVs + BT * ldv, *dSs = Ps + BT * ldp, *Ls = dSs + BT * ldp, *Ds = Ls + BT;
    const int nkt = (a.Nk + BT - 1) / BT, bh = blockIdx.x / nkt, kb0 = blockIdx.x % nkt * BT;
    const int b = bh / a.NH, h = bh % a.NH, nk = min(BT, a.Nk - kb0);
    const int64_t koff = ((int64_t)b * a.Nk + kb0) * a.ldq + (int64_t)h * a.Dh;
    const int64_t voff = ((int64_t)b * a.Nk + kb0) * a.ldv + (int64_t)h * a.Dv;
    const T *qh = q + (int64_t)b * a.Nq * a.ldq + (int64_t)h * a.Dh;
    const float *doh = dout + (int64_t)b * a.Nq * a.ldv + (int64_t)h * a.Dv;
    tile_load(Ks, ldh, k + koff, a.ldq, nk, BT, a.Dh);
    tile_load(Vs, ldv, v + voff, a.ldv, nk, BT, a.Dv);
    smem_zero(dKs, BT * ldh);
    smem_zero(dVs, BT * ldv);
    // causal: rows before kb0 see none of these keys (kb0 is a multiple of BT: a query tile start)
    for (int q0 = a.causal ? kb0 : 0; q0 < a.Nq; q0 += BT) {
        const int rows = min(BT, a.Nq - q0);
        __syncthreads(); // the previous tile's readers of Qs, dOs, Ps, dSs are done
        tile_load(Qs, ldh, qh + (int64_t)q0 * a.ldq, a.ldq, rows, BT, a.Dh);
        tile_load(dOs, ldv, doh + (int64_t)q0 * a.ldv, a.ldv, rows, BT, a.Dv);
        attn_load_rowstats<BT>(a, Ls, Ds, lse, Dvec, bh, q0, rows);
        __syncthreads();
        tile_mm<TR, BT / 16>(BT, BT, a.Dh, Qs, ldh, 1, Ks, 1, ldh, Ps, ldp, a.scale, MM_SET, nullptr);
        if (gk) tile_mm<TR, BT / 16>(BT, BT, a.Dv, dOs, ldv, 1, Vs, 1, ldv, dSs, ldp, 1.0f, MM_SET, nullptr);
        __syncthreads();
        attn_tile_grads<BT>(a, Ps, dSs, Ls, Ds, q0, rows, kb0, nk, gk != nullptr);
        __syncthreads();
        // (P^T)(key, query) = Ps[query][key]: A read transposed
        if (gv) tile_mm<TR, 4>(BT, a.Dv, BT, Ps, 1, ldp, dOs, ldv, 1, dVs, ldv, 1.0f, MM_ADD, nullptr);
        if (gk) tile_mm<TR, 4>(BT, a.Dh, BT, dSs, 1, ldp, Qs, ldh, 1, dKs, ldh, a.scale, MM_ADD, nullptr);
    }
    __syncthreads();
    if (gk)
        for (int i = threadIdx.x; i < nk * a.Dh; i += ATTN_THREADS) {
            int r = i / a.Dh, cc = i - r * a.Dh;
            gk[koff + (int64_t)r * a.ldq + cc] += dKs[r * ldh + cc];
        }
    if (gv)
        for (int i = threadIdx.x; i < nk * a.Dv; i += ATTN_THREADS) {
            int r = i / a.Dv, cc = i - r * a.Dv;
            gv[voff + (int64_t)r * a.ldv + cc] += dVs[r * ldv + cc];
        }
}

// one block per (batch, head, query tile): gq += scale dS K over the key tiles it sees
template <typename T, int BT>
__global__ static void __launch_bounds__(ATTN_THREADS)
    attn_bwd_q_kernel(AttnDims a, const T *__restrict__ q, const T *__restrict__ k, const T *__restrict__ v,
                      const float *__restrict__ dout, const float *__restrict__ lse, const float *__restrict__ Dvec,
                      float *__restrict__ gq) {
    extern __shared__ float smem[];
    constexpr int TR = BT / 8, ldp = BT + 1;
    const int ldh = a.ldh, ldv = a.ldvs;
    float *Qs = smem, *Ks = Qs + BT * ldh, *dQs = Ks + BT * ldh, *dOs = dQs + BT * ldh, *Vs = dOs + BT * ldv;
    float *Ps = Vs + BT * ldv, *dSs = Ps + BT * ldp, *Ls = dSs + BT * ldp, *Ds = Ls + BT;
    const int nqt = (a.Nq + BT - 1) / BT, bh = blockIdx.x / nqt, q0 = blockIdx.x % nqt * BT;
    const int b = bh / a.NH, h = bh % a.NH, rows = min(BT, a.Nq - q0);
    const int64_t qoff = ((int64_t)b * a.Nq + q0) * a.ldq + (int64_t)h * a.Dh;
    const T *kh = k + (int64_t)b * a.Nk * a.ldq + (int64_t)h * a.Dh;
    const T *vh = v + (int64_t)b * a.Nk * a.ldv + (int64_t)h * a.Dv;
    tile_load(Qs, ldh, q + qoff, a.ldq, rows, BT, a.Dh);
    tile_load(dOs, ldv, dout + ((int64_t)b * a.Nq + q0) * a.ldv + (int64_t)h * a.Dv, a.ldv, rows, BT, a.Dv);
    attn_load_rowstats<BT>(a, Ls, Ds, lse, Dvec, bh, q0, rows);
    smem_zero(dQs, BT * ldh);
    const int kend = a.causal ? min(a.Nk, q0 + BT) : a.Nk;
    for (int kb0 = 0; kb0 < kend; kb0 += BT) {
        const int nk = min(BT, a.Nk - kb0);
        __syncthreads(); // the previous tile's readers of Ks, Vs, Ps, dSs are done
        tile_load(Ks, ldh, kh + (int64_t)kb0 * a.ldq, a.ldq, nk, BT, a.Dh);
        tile_load(Vs, ldv, vh + (int64_t)kb0 * a.ldv, a.ldv, nk, BT, a.Dv);
        __syncthreads();
        tile_mm<TR, BT / 16>(BT, BT, a.Dh, Qs, ldh, 1, Ks, 1, ldh, Ps, ldp, a.scale, MM_SET, nullptr);
        tile_mm<TR, BT / 16>(BT, BT, a.Dv, dOs, ldv, 1, Vs, 1, ldv, dSs, ldp, 1.0f, MM_SET, nullptr);
        __syncthreads();
        attn_tile_grads<BT>(a, Ps, dSs, Ls, Ds, q0, rows, kb0, nk, true);
        __syncthreads();
        tile_mm<TR, 4>(BT, a.Dh, BT, dSs, ldp, 1, Ks, ldh, 1, dQs, ldh, a.scale, MM_ADD, nullptr);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < rows * a.Dh; i += ATTN_THREADS) {
        int r = i / a.Dh, cc = i - r * a.Dh;
        gq[qoff + (int64_t)r * a.ldq + cc] += dQs[r * ldh + cc];
    }
}

// Sets the kernel's dynamic shared memory limit and launches it on `blocks` blocks.
template <typename Kern, typename... Args>
static Status attn_launch(Kern kern, unsigned blocks, size_t bytes, Args... args) {
    CUDA_CHECK(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    kern<<<blocks, ATTN_THREADS, bytes, STREAM>>>(args...);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// kern<BT> for the tile size picked at run time
#define ATTN_BT_SWITCH(bt, KERN, T, ...)                                                                               \
    do {                                                                                                               \
        switch (bt) {                                                                                                  \
        case 64: TRY(attn_launch(KERN<T, 64>, __VA_ARGS__)); break;                                                    \
        case 32: TRY(attn_launch(KERN<T, 32>, __VA_ARGS__)); break;                                                    \
        default: TRY(attn_launch(KERN<T, 16>, __VA_ARGS__)); break;                                                    \
        }                                                                                                              \
    } while (0)

static_assert(ATTN_THREADS == 128, "tile_mm lays the block out as 8 x 16 threads");

static Status attn_fwd(Ctx *c, Node *n) {
    AttnDims a = attn_dims(n);
    float *lse = NULL;
    if (n->save) {
        int64_t ls[3] = {a.B, a.NH, a.Nq};
        Tensor t = tensor_make(NULL, DTYPE_F32, DEVICE_CUDA, 3, ls);
        t.data = dev_scratch(c, tensor_nbytes(&t));
        if (!t.data) return addc_error_status();
        n->saved[0] = t;
        lse = (float *)t.data;
    }
    if (a.B == 0 || a.Nq == 0) return ADDC_OK;
    int bt = 0;
    size_t bytes = 0;
    TRY(attn_pick_tile(ATTN_FWD, a, &bt, &bytes));
    unsigned blocks = (unsigned)((int64_t)a.B * a.NH * ((a.Nq + bt - 1) / bt));
    DISPATCH_FLOAT(n->in[0]->v.dtype, T, {
        ATTN_BT_SWITCH(bt, attn_fwd_kernel, T, blocks, bytes, a, (const T *)n->in[0]->v.data,
                       (const T *)n->in[1]->v.data, (const T *)n->in[2]->v.data, (T *)n->out->v.data, lse);
    });
    return ADDC_OK;
}

static Status attn_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gq = ops_in_grad(c, n, 0, &st);
    float *gk = ops_in_grad(c, n, 1, &st);
    float *gv = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    if (!gq && !gk && !gv) return ADDC_OK;
    AttnDims a = attn_dims(n);
    if (a.B == 0 || a.Nq == 0) return ADDC_OK;
    const float *dout = (const float *)n->out->g.data, *lse = (const float *)n->saved[0].data;
    ArenaMark mark = arena_mark(c->arena);
    int64_t nrows = (int64_t)a.B * a.NH * a.Nq;
    float *Dvec = (float *)dev_scratch(c, nrows * 4);
    if (!Dvec) return addc_error_status();
    DISPATCH_FLOAT(n->in[0]->v.dtype, T, {
        const T *q = (const T *)n->in[0]->v.data, *k = (const T *)n->in[1]->v.data, *v = (const T *)n->in[2]->v.data;
        attn_bwd_dot_kernel<T><<<(unsigned)((nrows + DOT_WARPS - 1) / DOT_WARPS), DOT_WARPS * 32, 0, STREAM>>>(
            a, (const T *)n->out->v.data, dout, Dvec);
        CUDA_LAUNCH_CHECK();
        int bt = 0;
        size_t bytes = 0;
        if (gk || gv) {
            TRY(attn_pick_tile(ATTN_BWD_KV, a, &bt, &bytes));
            unsigned blocks = (unsigned)((int64_t)a.B * a.NH * ((a.Nk + bt - 1) / bt));
            ATTN_BT_SWITCH(bt, attn_bwd_kv_kernel, T, blocks, bytes, a, q, k, v, dout, lse, (const float *)Dvec, gk,
                           gv);
        }
        if (gq) {
            TRY(attn_pick_tile(ATTN_BWD_Q, a, &bt, &bytes));
            unsigned blocks = (unsigned)((int64_t)a.B * a.NH * ((a.Nq + bt - 1) / bt));
            ATTN_BT_SWITCH(bt, attn_bwd_q_kernel, T, blocks, bytes, a, q, k, v, dout, lse, (const float *)Dvec, gq);
        }
    });
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_softmax = {sm_fwd, sm_bwd, NULL};
extern "C" const OpImpl cuda_op_attention = {attn_fwd, attn_bwd, NULL};
