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
//
// Tensor-core path (attn_tc_*, see "tensor-core path" below): bf16 values with Dh and Dv <= 128
// (any widths: padded with zero columns to multiples of 16; any Nq, Nk, causal or not) run the
// same three-kernel FlashAttention-2 structure with nvcuda::wmma m16n16k16 products: bf16
// operands (Q, K, V, dO, P, dS rounded to bf16 in shared memory), f32 accumulation, softmax
// statistics in f32, saved[0] the same f32 logsumexp, every gradient element += once, fixed
// order (bitwise reproducible). Tiles of 64 x 64, 4 warps of 16 rows, 70 KiB of shared memory
// per block at Dh = 64 (three blocks per SM on an H100), 110 KiB at 128 (two). Its backward
// computes D = rowsum(dO * O) from dO rounded to bf16, as dP uses it. attn_tc_pick selects it;
// f32 values and wider heads keep the CUDA-core kernels (f32 stays within 1e-5 of float64).
// ADDC_ATTN_TC=0 forces the CUDA-core kernels for bf16 too (comparison); unset or 1: default.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda/cuda_internal.cuh"

#include <mma.h> // nvcuda::wmma (after cuda_bf16.h: the host emulation needs __nv_bfloat16)

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

// gx += y * (dy - sum(dy * y)) per row. With x (bf16 values) y is recomputed in f32 from x instead of
// read from the bf16 output: y (1 - y) of a dominant probability loses all its digits to the bf16
// rounding of y near 1 (found in host emulation, tests/cuemu: cuda_test_attention_bf16 "softmax
// (2,37)" had a gradient error of 3e-2 against the 1e-2 bf16 tolerance).
template <typename T>
__global__ static void softmax_bwd_kernel(const T *__restrict__ y, const T *__restrict__ x, const float *__restrict__ dy,
                                          float *__restrict__ gx, int64_t D) {
    __shared__ float red[32];
    int64_t off = (int64_t)blockIdx.x * D;
    float m = 0.0f, inv = 1.0f;
    if (x) {
        m = -INFINITY;
        for (int64_t k = threadIdx.x; k < D; k += blockDim.x) m = fmaxf(m, ld<T>(x, off + k));
        m = block_reduce(m, red, true);
        float z = 0.0f;
        for (int64_t k = threadIdx.x; k < D; k += blockDim.x) z += expf(ld<T>(x, off + k) - m);
        inv = 1.0f / block_reduce(z, red, false);
    }
    float s = 0.0f;
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
        float yk = x ? expf(ld<T>(x, off + k) - m) * inv : ld<T>(y, off + k);
        s += dy[off + k] * yk;
    }
    s = block_reduce(s, red, false);
    for (int64_t k = threadIdx.x; k < D; k += blockDim.x) {
        float yk = x ? expf(ld<T>(x, off + k) - m) * inv : ld<T>(y, off + k);
        gx[off + k] += yk * (dy[off + k] - s);
    }
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
        const T *x = y->dtype == DTYPE_BF16 ? (const T *)n->in[0]->v.data : nullptr; // see the kernel
        softmax_bwd_kernel<T><<<(unsigned)rows, SM_THREADS, 0, STREAM>>>((const T *)y->data, x,
                                                                         (const float *)n->out->g.data, gx, D);
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
    int dhp, dvp;     // tensor-core path: Dh, Dv rounded up to multiples of 16 (zero-padded columns)
    int vec_qkv;      // tensor-core path: q, k, v load 8 bf16 at a time (widths % 8, 16-byte aligned)
    int vec_do;       // tensor-core path: dO loads 8 f32 at a time (Dv % 8, 16-byte aligned)
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
    a.dhp = (a.Dh + 15) / 16 * 16;
    a.dvp = (a.Dv + 15) / 16 * 16;
    a.vec_qkv = a.vec_do = 0;
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

// Dvec (B, NH, Nq) = rowsum(dO * O) per head, one warp per row. round_do: dO rounded to bf16 first,
// as the tensor-core kernels use it in dP = dO V^T (dP - D then cancels consistently).
template <typename T>
__global__ static void attn_bwd_dot_kernel(AttnDims a, const T *__restrict__ o, const float *__restrict__ dout,
                                           float *__restrict__ Dvec, bool round_do) {
    int64_t row = (int64_t)blockIdx.x * DOT_WARPS + (threadIdx.x >> 5); // (b * NH + h) * Nq + i
    if (row >= (int64_t)a.B * a.NH * a.Nq) return;                      // the whole warp
    int64_t bh = row / a.Nq, i = row % a.Nq, b = bh / a.NH, h = bh % a.NH;
    int64_t off = (b * a.Nq + i) * a.ldv + h * a.Dv;
    float s = 0.0f;
    for (int c = threadIdx.x & 31; c < a.Dv; c += 32) {
        const float d = round_do ? __bfloat162float(__float2bfloat16_rn(dout[off + c])) : dout[off + c];
        s += d * ld<T>(o, off + c);
    }
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

// ---- tensor-core path: bf16 values, heads up to TC_DMAX wide ----
//
// nvcuda::wmma m16n16k16 tiles, bf16 operands in shared memory, f32 accumulation. A block is 4
// warps; each warp owns 16 of the block's 64 rows (query rows in the forward and the dQ kernel,
// keys in the dK/dV kernel) and steps over tiles of 64 columns (keys, or queries). Head widths are
// padded with zero columns to dhp, dvp (multiples of 16), rows past Nq / Nk are zero-filled and
// masked, so any Dh, Dv <= TC_DMAX and any Nq, Nk work. Per tile a warp's 16 x 64 scores go
// through a f32 slice of shared memory (Ss) for the elementwise softmax / gradient step, which
// two lanes per row do (lane pair: row lane / 2, columns 32 (lane % 2) ..); the result is
// rounded to bf16 in its slice (Ps, dSs) for the next product. Hand-offs inside a warp are
// separated by __syncwarp, between warps by __syncthreads.
// The forward keeps O (f32) in shared memory: the online-softmax rescale multiplies rows of it,
// which accumulator fragments cannot do (their element layout is undefined), then O += P V runs
// as load_matrix_sync of O into an accumulator, 4 mma over the tile's keys, store back. The
// backward kernels accumulate dK, dV or dQ in register fragments across their whole loop (no
// rescaling there) and add them to the f32 gradients once at the end.

#define TC_ROWS 64                // rows (queries, or keys) a block owns
#define TC_COLS 64                // columns (keys, or queries) per step
#define TC_THREADS 128            // 4 warps x 16 rows
#define TC_DMAX 128               // widest head, Dh and Dv
#define TC_LDS (TC_COLS + 4)      // row stride (floats) of the f32 score slice Ss
#define TC_LDP (TC_COLS + 8)      // row stride (elements) of the bf16 P / dS slices
#define TC_LOG2E 1.4426950408889634f
#define TC_LN2 0.6931471805599453f
#define TC_FULL 0xffffffffu

static_assert(TC_THREADS == ATTN_THREADS, "attn_launch launches ATTN_THREADS threads");
static_assert(TC_ROWS == TC_COLS, "the causal skipping of the dK/dV kernel needs query tiles aligned to key tiles");

typedef __nv_bfloat16 tc_bf16;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, tc_bf16, nvcuda::wmma::row_major> TcFragA;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, tc_bf16, nvcuda::wmma::row_major> TcFragBRow;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, tc_bf16, nvcuda::wmma::col_major> TcFragBCol;
typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> TcFragC;

struct alignas(16) TcVec { // 8 bf16 (one 16-byte shared or global access)
    unsigned int w[4];
};
struct alignas(16) TcF4 { // 4 f32
    float x[4];
};

// Byte offsets of a tensor-core kernel's shared buffers (every size a multiple of 128 bytes, so
// every 16 x 16 fragment pointer is 32-byte aligned as wmma requires); -1: not used by `kind`.
//   q  bf16 (64, dhp + 8)  query rows          k  bf16 (64, dhp + 8)  keys
//   v  bf16 (64, dvp + 8)  keys                dO bf16 (64, dvp + 8)  query rows (backward)
//   s  f32 (64, TC_LDS)    scores / dP         p  bf16 (64, TC_LDP)   P (forward, dK/dV)
//   ds bf16 (64, TC_LDP)   P then dS (backward) o f32 (64, dvp + 4)   O (forward)
//   st f32 (2, 64)         lse * log2(e) and D per query (backward)
struct TcSmem {
    int q, k, v, dO, s, p, ds, o, st, total;
};

__host__ __device__ static TcSmem tc_smem_layout(int kind, int dhp, int dvp) {
    const int bh = TC_ROWS * (dhp + 8) * 2, bv = TC_ROWS * (dvp + 8) * 2;
    const int bs = TC_ROWS * TC_LDS * 4, bp = TC_ROWS * TC_LDP * 2;
    TcSmem m = {-1, -1, -1, -1, -1, -1, -1, -1, -1, 0};
    int off = 0;
    m.q = off, off += bh;
    m.k = off, off += bh;
    m.v = off, off += bv;
    m.s = off, off += bs;
    if (kind == ATTN_FWD) {
        m.p = off, off += bp;
        m.o = off, off += TC_ROWS * (dvp + 4) * 4;
    } else {
        m.dO = off, off += bv;
        if (kind == ATTN_BWD_KV) m.p = off, off += bp;
        m.ds = off, off += bp;
        m.st = off, off += 2 * TC_COLS * 4;
    }
    m.total = off;
    return m;
}

__device__ __forceinline__ static unsigned int tc_bits(float x) {
    return (unsigned int)__bfloat16_as_ushort(__float2bfloat16_rn(x));
}
__device__ __forceinline__ static TcVec tc_load8(const tc_bf16 *s) { return *(const TcVec *)s; }
__device__ __forceinline__ static TcVec tc_load8(const float *s) {
    const TcF4 lo = ((const TcF4 *)s)[0], hi = ((const TcF4 *)s)[1];
    TcVec o;
    o.w[0] = tc_bits(lo.x[0]) | tc_bits(lo.x[1]) << 16;
    o.w[1] = tc_bits(lo.x[2]) | tc_bits(lo.x[3]) << 16;
    o.w[2] = tc_bits(hi.x[0]) | tc_bits(hi.x[1]) << 16;
    o.w[3] = tc_bits(hi.x[2]) | tc_bits(hi.x[3]) << 16;
    return o;
}

// dst (TC_ROWS x colsp bf16, row stride ldd) = src rows [0, rows) x columns [0, cols) (row stride
// lds, values f32 or bf16, rounded to bf16), 0 elsewhere; colsp a multiple of 16. vec: cols and
// lds multiples of 8 and src 16-byte aligned, 8 elements per load. One 16-byte store per 8.
template <typename S>
__device__ __forceinline__ static void tc_tile_load(tc_bf16 *dst, int ldd, const S *src, int64_t lds, int rows,
                                                    int cols, int colsp, int vec) {
    const int cpr = colsp >> 3; // 8-element chunks per row
    for (int i = threadIdx.x; i < TC_ROWS * cpr; i += TC_THREADS) {
        const int r = i / cpr, c = (i - r * cpr) << 3;
        TcVec o = {{0u, 0u, 0u, 0u}};
        if (r < rows && c < cols) {
            const S *s = src + (int64_t)r * lds + c;
            if (vec) o = tc_load8(s);
            else
                for (int e = 0; e < 8 && c + e < cols; e++) o.w[e >> 1] |= tc_bits(ld<S>(s, e)) << (16 * (e & 1));
        }
        *(TcVec *)(dst + r * ldd + c) = o;
    }
}

// s (16 x 64 f32, row stride TC_LDS) = A B^T for the 16 rows of A (row stride lda) and the 64 rows
// of B (row stride ldb), both bf16 and nf16 * 16 wide: the warp's scores (or dP) of one tile.
__device__ __forceinline__ static void tc_scores(float *s, const tc_bf16 *A, int lda, const tc_bf16 *B, int ldb,
                                                 int nf16) {
    TcFragC acc[4];
#pragma unroll
    for (int j = 0; j < 4; j++) nvcuda::wmma::fill_fragment(acc[j], 0.0f);
    for (int kk = 0; kk < nf16; kk++) {
        TcFragA fa;
        nvcuda::wmma::load_matrix_sync(fa, A + kk * 16, (unsigned)lda);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            TcFragBCol fb; // B^T (k, j) = B[j][k]: column-major B^T is row-major B
            nvcuda::wmma::load_matrix_sync(fb, B + j * 16 * ldb + kk * 16, (unsigned)ldb);
            nvcuda::wmma::mma_sync(acc[j], fa, fb, acc[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < 4; j++) nvcuda::wmma::store_matrix_sync(s + j * 16, acc[j], TC_LDS, nvcuda::wmma::mem_row_major);
}

// acc[f] += X B[:, 16 f ..] for f < nf16, X the warp's 16 x 64 bf16 slice (row stride TC_LDP) and B
// (64 x 16 nf16 bf16, row stride ldb): dV, dK or dQ of one tile.
template <int NF>
__device__ __forceinline__ static void tc_accum(TcFragC *acc, const tc_bf16 *X, const tc_bf16 *B, int ldb, int nf16) {
    TcFragA xa[4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++) nvcuda::wmma::load_matrix_sync(xa[kk], X + kk * 16, TC_LDP);
#pragma unroll
    for (int f = 0; f < NF; f++) {
        if (f >= nf16) break;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            TcFragBRow fb;
            nvcuda::wmma::load_matrix_sync(fb, B + kk * 16 * ldb + f * 16, (unsigned)ldb);
            nvcuda::wmma::mma_sync(acc[f], xa[kk], fb, acc[f]);
        }
    }
}

// g[(row0 + r) * ldg + c] += alpha * acc(r, c) for the warp's 16 rows r (row0 + r < nrows) and
// columns c < width, staged 16 x 16 at a time through the warp's f32 slice s.
template <int NF>
__device__ __forceinline__ static void tc_store_grad(float *g, int64_t ldg, int row0, int nrows, int width,
                                                     const TcFragC *acc, float *s, float alpha) {
    const int lane = threadIdx.x & 31, nf16 = (width + 15) >> 4;
#pragma unroll
    for (int f = 0; f < NF; f++) {
        if (f >= nf16) break;
        __syncwarp();
        nvcuda::wmma::store_matrix_sync(s, acc[f], TC_LDS, nvcuda::wmma::mem_row_major);
        __syncwarp();
        for (int i = lane; i < 256; i += 32) {
            const int r = i >> 4, c = f * 16 + (i & 15);
            if (row0 + r < nrows && c < width) g[(int64_t)(row0 + r) * ldg + c] += alpha * s[r * TC_LDS + (i & 15)];
        }
    }
}

// one block per (batch, head, 64 query rows): o and the row logsumexp (lse NULL: not saved)
__global__ static void __launch_bounds__(TC_THREADS)
    attn_tc_fwd_kernel(AttnDims a, const tc_bf16 *__restrict__ q, const tc_bf16 *__restrict__ k,
                       const tc_bf16 *__restrict__ v, tc_bf16 *__restrict__ out, float *__restrict__ lse) {
    extern __shared__ __align__(128) unsigned char tc_smem[];
    const TcSmem L = tc_smem_layout(ATTN_FWD, a.dhp, a.dvp);
    const int ldh = a.dhp + 8, ldv = a.dvp + 8, ldo = a.dvp + 4;
    tc_bf16 *Qs = (tc_bf16 *)(tc_smem + L.q), *Ks = (tc_bf16 *)(tc_smem + L.k), *Vs = (tc_bf16 *)(tc_smem + L.v);
    tc_bf16 *Ps = (tc_bf16 *)(tc_smem + L.p);
    float *Ss = (float *)(tc_smem + L.s), *Os = (float *)(tc_smem + L.o);
    const int nqt = (a.Nq + TC_ROWS - 1) / TC_ROWS, bh = blockIdx.x / nqt, q0 = blockIdx.x % nqt * TC_ROWS;
    const int b = bh / a.NH, h = bh % a.NH, rows = min(TC_ROWS, a.Nq - q0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, rr = lane >> 1, half = lane & 1;
    const int r = warp * 16 + rr, hw = a.dvp >> 1; // the lane pair's row; O columns per lane
    const tc_bf16 *kh = k + (int64_t)b * a.Nk * a.ldq + (int64_t)h * a.Dh;
    const tc_bf16 *vh = v + (int64_t)b * a.Nk * a.ldv + (int64_t)h * a.Dv;
    tc_tile_load(Qs, ldh, q + ((int64_t)b * a.Nq + q0) * a.ldq + (int64_t)h * a.Dh, a.ldq, rows, a.Dh, a.dhp,
                 a.vec_qkv);
    for (int i = threadIdx.x; i < TC_ROWS * ldo; i += TC_THREADS) Os[i] = 0.0f;
    const tc_bf16 *Qw = Qs + warp * 16 * ldh;
    float *Sw = Ss + warp * 16 * TC_LDS, *Ow = Os + warp * 16 * ldo;
    tc_bf16 *Pw = Ps + warp * 16 * TC_LDP;
    const float sl2 = a.scale * TC_LOG2E; // scores in log2 units: exp2f
    float m = -INFINITY, l = 0.0f;        // the row's running max (log2 units) and sum, in both lanes
    const int kend = a.causal ? min(a.Nk, q0 + TC_ROWS) : a.Nk; // causal: later keys are seen by no row
    for (int kb0 = 0; kb0 < kend; kb0 += TC_COLS) {
        const int nk = min(TC_COLS, a.Nk - kb0);
        __syncthreads(); // the previous tile's readers of Ks, Vs are done; Qs, Os are written
        tc_tile_load(Ks, ldh, kh + (int64_t)kb0 * a.ldq, a.ldq, nk, a.Dh, a.dhp, a.vec_qkv);
        tc_tile_load(Vs, ldv, vh + (int64_t)kb0 * a.ldv, a.ldv, nk, a.Dv, a.dvp, a.vec_qkv);
        __syncthreads();
        tc_scores(Sw, Qw, ldh, Ks, ldh, a.dhp >> 4); // the warp's Q K^T (unscaled)
        __syncwarp();
        // online softmax of row r: P = exp(S - new max) rounded to bf16, masked entries 0
        const int vis = attn_tile_visible(a, q0 + r, kb0, nk), c0 = half * 32;
        const float *sr = Sw + rr * TC_LDS + c0;
        tc_bf16 *pr = Pw + rr * TC_LDP + c0;
        float mx = -INFINITY;
        for (int c = 0; c < 32; c++)
            if (c0 + c < vis) mx = fmaxf(mx, sr[c] * sl2);
        mx = fmaxf(mx, __shfl_xor_sync(TC_FULL, mx, 1));
        const float mn = fmaxf(m, mx);
        float sum = 0.0f;
        for (int c = 0; c < 32; c++) {
            const float p = c0 + c < vis ? exp2f(sr[c] * sl2 - mn) : 0.0f;
            pr[c] = __float2bfloat16_rn(p);
            sum += p; // f32: the saved logsumexp as exact as the CUDA-core kernel's
        }
        sum += __shfl_xor_sync(TC_FULL, sum, 1);
        const float corr = m == -INFINITY ? 0.0f : exp2f(m - mn);
        l = l * corr + sum;
        m = mn;
        if (corr != 1.0f) {
            float *orow = Ow + rr * ldo + half * hw;
            for (int c = 0; c < hw; c++) orow[c] *= corr;
        }
        __syncwarp();
        // O += P V, O through accumulator fragments
        TcFragA pa[4];
#pragma unroll
        for (int kk = 0; kk < 4; kk++) nvcuda::wmma::load_matrix_sync(pa[kk], Pw + kk * 16, TC_LDP);
        for (int f = 0; f < (a.dvp >> 4); f++) {
            TcFragC acc;
            nvcuda::wmma::load_matrix_sync(acc, Ow + f * 16, (unsigned)ldo, nvcuda::wmma::mem_row_major);
            __syncwarp(); // every lane has read this O tile before any lane stores it back
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                TcFragBRow fb;
                nvcuda::wmma::load_matrix_sync(fb, Vs + kk * 16 * ldv + f * 16, (unsigned)ldv);
                nvcuda::wmma::mma_sync(acc, pa[kk], fb, acc);
            }
            nvcuda::wmma::store_matrix_sync(Ow + f * 16, acc, (unsigned)ldo, nvcuda::wmma::mem_row_major);
        }
    }
    __syncwarp(); // the warp's O stores are visible to the lanes that write its rows
    const int qi = q0 + r;
    if (qi < a.Nq) {
        tc_bf16 *orow = out + ((int64_t)b * a.Nq + qi) * a.ldv + (int64_t)h * a.Dv;
        const float *os = Ow + rr * ldo;
        for (int c = half * hw; c < min(a.Dv, half * hw + hw); c++) orow[c] = __float2bfloat16_rn(os[c] / l);
        if (lse && half == 0) lse[(int64_t)bh * a.Nq + qi] = (m + log2f(l)) * TC_LN2;
    }
}

// lse * log2(e) and D of query rows q0.. of head bh into Ls, Ds (0 past Nq)
__device__ __forceinline__ static void tc_load_rowstats(const AttnDims &a, float *Ls, float *Ds, const float *lse,
                                                        const float *Dvec, int64_t bh, int q0, int rows) {
    for (int i = threadIdx.x; i < TC_COLS; i += TC_THREADS) {
        Ls[i] = i < rows ? lse[bh * a.Nq + q0 + i] * TC_LOG2E : 0.0f;
        Ds[i] = i < rows ? Dvec[bh * a.Nq + q0 + i] : 0.0f;
    }
}

// one block per (batch, head, 64 keys): gk += scale dS^T Q, gv += P^T dO over the query tiles that
// see the keys (either may be NULL). Warp w owns keys kb0 + 16 w ..; its slices hold the transposed
// tiles (16 keys x 64 queries). NF: accumulator fragments per row, >= dhp / 16 and dvp / 16.
template <int NF>
__global__ static void __launch_bounds__(TC_THREADS)
    attn_tc_bwd_kv_kernel(AttnDims a, const tc_bf16 *__restrict__ q, const tc_bf16 *__restrict__ k,
                          const tc_bf16 *__restrict__ v, const float *__restrict__ dout, const float *__restrict__ lse,
                          const float *__restrict__ Dvec, float *__restrict__ gk, float *__restrict__ gv) {
    extern __shared__ __align__(128) unsigned char tc_smem[];
    const TcSmem L = tc_smem_layout(ATTN_BWD_KV, a.dhp, a.dvp);
    const int ldh = a.dhp + 8, ldv = a.dvp + 8;
    tc_bf16 *Qs = (tc_bf16 *)(tc_smem + L.q), *Ks = (tc_bf16 *)(tc_smem + L.k), *Vs = (tc_bf16 *)(tc_smem + L.v);
    tc_bf16 *dOs = (tc_bf16 *)(tc_smem + L.dO), *Ps = (tc_bf16 *)(tc_smem + L.p), *dSs = (tc_bf16 *)(tc_smem + L.ds);
    float *Ss = (float *)(tc_smem + L.s), *Ls = (float *)(tc_smem + L.st), *Ds = Ls + TC_COLS;
    const int nkt = (a.Nk + TC_ROWS - 1) / TC_ROWS, bh = blockIdx.x / nkt, kb0 = blockIdx.x % nkt * TC_ROWS;
    const int b = bh / a.NH, h = bh % a.NH, nk = min(TC_ROWS, a.Nk - kb0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, rr = lane >> 1, c0 = (lane & 1) * 32;
    const int key = kb0 + warp * 16 + rr; // the lane pair's key
    const int nfh = a.dhp >> 4, nfv = a.dvp >> 4;
    const tc_bf16 *qh = q + (int64_t)b * a.Nq * a.ldq + (int64_t)h * a.Dh;
    const float *doh = dout + (int64_t)b * a.Nq * a.ldv + (int64_t)h * a.Dv;
    const int64_t koff = ((int64_t)b * a.Nk + kb0) * a.ldq + (int64_t)h * a.Dh;
    const int64_t voff = ((int64_t)b * a.Nk + kb0) * a.ldv + (int64_t)h * a.Dv;
    tc_tile_load(Ks, ldh, k + koff, a.ldq, nk, a.Dh, a.dhp, a.vec_qkv);
    tc_tile_load(Vs, ldv, v + voff, a.ldv, nk, a.Dv, a.dvp, a.vec_qkv);
    const tc_bf16 *Kw = Ks + warp * 16 * ldh, *Vw = Vs + warp * 16 * ldv;
    float *Sw = Ss + warp * 16 * TC_LDS;
    tc_bf16 *Pw = Ps + warp * 16 * TC_LDP, *dSw = dSs + warp * 16 * TC_LDP;
    const float sl2 = a.scale * TC_LOG2E;
    TcFragC dk[NF], dv[NF];
#pragma unroll
    for (int f = 0; f < NF; f++) {
        nvcuda::wmma::fill_fragment(dk[f], 0.0f);
        nvcuda::wmma::fill_fragment(dv[f], 0.0f);
    }
    // causal: rows before kb0 see none of these keys (kb0 is a multiple of TC_COLS: a query tile start)
    for (int q0 = a.causal ? kb0 : 0; q0 < a.Nq; q0 += TC_COLS) {
        const int rows = min(TC_COLS, a.Nq - q0);
        __syncthreads(); // the previous tile's readers of Qs, dOs, Ls, Ds are done
        tc_tile_load(Qs, ldh, qh + (int64_t)q0 * a.ldq, a.ldq, rows, a.Dh, a.dhp, a.vec_qkv);
        tc_tile_load(dOs, ldv, doh + (int64_t)q0 * a.ldv, a.ldv, rows, a.Dv, a.dvp, a.vec_do);
        tc_load_rowstats(a, Ls, Ds, lse, Dvec, bh, q0, rows);
        __syncthreads();
        tc_scores(Sw, Kw, ldh, Qs, ldh, nfh); // S^T: 16 keys x 64 queries
        __syncwarp();
        for (int c = c0; c < c0 + 32; c++) { // P^T, masked entries 0
            const int qi = q0 + c;
            const bool ok = c < rows && key < a.Nk && (!a.causal || key <= qi);
            Pw[rr * TC_LDP + c] = __float2bfloat16_rn(ok ? exp2f(Sw[rr * TC_LDS + c] * sl2 - Ls[c]) : 0.0f);
        }
        __syncwarp();
        if (gv) tc_accum<NF>(dv, Pw, dOs, ldv, nfv); // dV += P^T dO
        if (gk) {
            tc_scores(Sw, Vw, ldv, dOs, ldv, nfv); // dP^T = V dO^T (S^T is no longer needed)
            __syncwarp();
            for (int c = c0; c < c0 + 32; c++) { // dS^T = P^T (dP^T - D)
                const float p = __bfloat162float(Pw[rr * TC_LDP + c]);
                dSw[rr * TC_LDP + c] = __float2bfloat16_rn(p * (Sw[rr * TC_LDS + c] - Ds[c]));
            }
            __syncwarp();
            tc_accum<NF>(dk, dSw, Qs, ldh, nfh); // dK += dS^T Q (scaled at the end)
        }
    }
    if (gk) tc_store_grad<NF>(gk + koff, a.ldq, warp * 16, nk, a.Dh, dk, Sw, a.scale);
    if (gv) tc_store_grad<NF>(gv + voff, a.ldv, warp * 16, nk, a.Dv, dv, Sw, 1.0f);
}

// one block per (batch, head, 64 query rows): gq += scale dS K over the key tiles it sees. Warp w
// owns query rows q0 + 16 w ..
template <int NF>
__global__ static void __launch_bounds__(TC_THREADS)
    attn_tc_bwd_q_kernel(AttnDims a, const tc_bf16 *__restrict__ q, const tc_bf16 *__restrict__ k,
                         const tc_bf16 *__restrict__ v, const float *__restrict__ dout, const float *__restrict__ lse,
                         const float *__restrict__ Dvec, float *__restrict__ gq) {
    extern __shared__ __align__(128) unsigned char tc_smem[];
    const TcSmem L = tc_smem_layout(ATTN_BWD_Q, a.dhp, a.dvp);
    const int ldh = a.dhp + 8, ldv = a.dvp + 8;
    tc_bf16 *Qs = (tc_bf16 *)(tc_smem + L.q), *Ks = (tc_bf16 *)(tc_smem + L.k), *Vs = (tc_bf16 *)(tc_smem + L.v);
    tc_bf16 *dOs = (tc_bf16 *)(tc_smem + L.dO), *dSs = (tc_bf16 *)(tc_smem + L.ds);
    float *Ss = (float *)(tc_smem + L.s), *Ls = (float *)(tc_smem + L.st), *Ds = Ls + TC_COLS;
    const int nqt = (a.Nq + TC_ROWS - 1) / TC_ROWS, bh = blockIdx.x / nqt, q0 = blockIdx.x % nqt * TC_ROWS;
    const int b = bh / a.NH, h = bh % a.NH, rows = min(TC_ROWS, a.Nq - q0);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, rr = lane >> 1, c0 = (lane & 1) * 32;
    const int r = warp * 16 + rr; // the lane pair's query row in the tile
    const int nfh = a.dhp >> 4, nfv = a.dvp >> 4;
    const int64_t qoff = ((int64_t)b * a.Nq + q0) * a.ldq + (int64_t)h * a.Dh;
    const tc_bf16 *kh = k + (int64_t)b * a.Nk * a.ldq + (int64_t)h * a.Dh;
    const tc_bf16 *vh = v + (int64_t)b * a.Nk * a.ldv + (int64_t)h * a.Dv;
    tc_tile_load(Qs, ldh, q + qoff, a.ldq, rows, a.Dh, a.dhp, a.vec_qkv);
    tc_tile_load(dOs, ldv, dout + ((int64_t)b * a.Nq + q0) * a.ldv + (int64_t)h * a.Dv, a.ldv, rows, a.Dv, a.dvp,
                 a.vec_do);
    tc_load_rowstats(a, Ls, Ds, lse, Dvec, bh, q0, rows);
    const tc_bf16 *Qw = Qs + warp * 16 * ldh, *dOw = dOs + warp * 16 * ldv;
    float *Sw = Ss + warp * 16 * TC_LDS;
    tc_bf16 *dSw = dSs + warp * 16 * TC_LDP;
    const float sl2 = a.scale * TC_LOG2E;
    TcFragC dq[NF];
#pragma unroll
    for (int f = 0; f < NF; f++) nvcuda::wmma::fill_fragment(dq[f], 0.0f);
    const int kend = a.causal ? min(a.Nk, q0 + TC_ROWS) : a.Nk;
    for (int kb0 = 0; kb0 < kend; kb0 += TC_COLS) {
        const int nk = min(TC_COLS, a.Nk - kb0);
        __syncthreads(); // the previous tile's readers of Ks, Vs are done; Qs, dOs, Ls, Ds are written
        tc_tile_load(Ks, ldh, kh + (int64_t)kb0 * a.ldq, a.ldq, nk, a.Dh, a.dhp, a.vec_qkv);
        tc_tile_load(Vs, ldv, vh + (int64_t)kb0 * a.ldv, a.ldv, nk, a.Dv, a.dvp, a.vec_qkv);
        __syncthreads();
        tc_scores(Sw, Qw, ldh, Ks, ldh, nfh); // S: 16 queries x 64 keys
        __syncwarp();
        const int vis = r < rows ? attn_tile_visible(a, q0 + r, kb0, nk) : 0;
        for (int c = c0; c < c0 + 32; c++) // P (bf16) into the dS slice, masked entries 0
            dSw[rr * TC_LDP + c] = __float2bfloat16_rn(c < vis ? exp2f(Sw[rr * TC_LDS + c] * sl2 - Ls[r]) : 0.0f);
        __syncwarp();
        tc_scores(Sw, dOw, ldv, Vs, ldv, nfv); // dP = dO V^T
        __syncwarp();
        for (int c = c0; c < c0 + 32; c++) { // dS = P (dP - D), in place
            const float p = __bfloat162float(dSw[rr * TC_LDP + c]);
            dSw[rr * TC_LDP + c] = __float2bfloat16_rn(p * (Sw[rr * TC_LDS + c] - Ds[r]));
        }
        __syncwarp();
        tc_accum<NF>(dq, dSw, Ks, ldh, nfh); // dQ += dS K (scaled at the end)
    }
    tc_store_grad<NF>(gq + qoff, a.ldq, warp * 16, rows, a.Dh, dq, Sw, a.scale);
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

// Tensor-core path for kernel `kind`? (bf16 values, Dh and Dv <= TC_DMAX, its shared memory fits;
// ADDC_ATTN_TC=0 forces the CUDA-core kernels.) Sets *bytes and the vector-load flags of *a.
static Status attn_tc_pick(const Node *n, AttnDims *a, int kind, bool *use, size_t *bytes) {
    *use = false;
    const char *e = getenv("ADDC_ATTN_TC");
    if (e && *e && strcmp(e, "0") != 0 && strcmp(e, "1") != 0)
        return addc_error_set(ADDC_ERR_INVALID,
                              "ADDC_ATTN_TC=%s: expected 0 (CUDA-core attention kernels) or 1 (tensor cores for bf16 "
                              "heads up to %d wide, the default)",
                              e, TC_DMAX);
    if ((e && !strcmp(e, "0")) || n->in[0]->v.dtype != DTYPE_BF16 || a->Dh > TC_DMAX || a->Dv > TC_DMAX)
        return ADDC_OK;
    int dev = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    const TcSmem m = tc_smem_layout(kind, a->dhp, a->dvp);
    if (m.total > optin) return ADDC_OK;
    const void *p[3] = {n->in[0]->v.data, n->in[1]->v.data, n->in[2]->v.data};
    a->vec_qkv = a->Dh % 8 == 0 && a->Dv % 8 == 0 && ((uintptr_t)p[0] | (uintptr_t)p[1] | (uintptr_t)p[2]) % 16 == 0;
    a->vec_do = a->Dv % 8 == 0 && (uintptr_t)n->out->g.data % 16 == 0;
    *bytes = (size_t)m.total;
    *use = true;
    return ADDC_OK;
}

// tensor-core kernel KERN<NF> for the accumulator fragments that heads of dhp, dvp need
#define ATTN_TC_NF_SWITCH(a, KERN, ...)                                                                               \
    do {                                                                                                               \
        if ((a).dhp <= 64 && (a).dvp <= 64) TRY(attn_launch(KERN<4>, __VA_ARGS__));                                   \
        else TRY(attn_launch(KERN<8>, __VA_ARGS__));                                                                   \
    } while (0)

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
    bool tc = false;
    size_t bytes = 0;
    TRY(attn_tc_pick(n, &a, ATTN_FWD, &tc, &bytes));
    if (tc) {
        unsigned blocks = (unsigned)((int64_t)a.B * a.NH * ((a.Nq + TC_ROWS - 1) / TC_ROWS));
        TRY(attn_launch(attn_tc_fwd_kernel, blocks, bytes, a, (const tc_bf16 *)n->in[0]->v.data,
                        (const tc_bf16 *)n->in[1]->v.data, (const tc_bf16 *)n->in[2]->v.data,
                        (tc_bf16 *)n->out->v.data, lse));
        return ADDC_OK;
    }
    int bt = 0;
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
        int bt = 0;
        size_t bytes = 0, bytes_q = 0;
        bool tc = false, tc_q = false;
        if (gk || gv) TRY(attn_tc_pick(n, &a, ATTN_BWD_KV, &tc, &bytes));
        if (gq) TRY(attn_tc_pick(n, &a, ATTN_BWD_Q, &tc_q, &bytes_q));
        attn_bwd_dot_kernel<T><<<(unsigned)((nrows + DOT_WARPS - 1) / DOT_WARPS), DOT_WARPS * 32, 0, STREAM>>>(
            a, (const T *)n->out->v.data, dout, Dvec, tc || tc_q);
        CUDA_LAUNCH_CHECK();
        if (tc) {
            unsigned blocks = (unsigned)((int64_t)a.B * a.NH * ((a.Nk + TC_ROWS - 1) / TC_ROWS));
            ATTN_TC_NF_SWITCH(a, attn_tc_bwd_kv_kernel, blocks, bytes, a, (const tc_bf16 *)q, (const tc_bf16 *)k,
                              (const tc_bf16 *)v, dout, lse, (const float *)Dvec, gk, gv);
        } else if (gk || gv) {
            TRY(attn_pick_tile(ATTN_BWD_KV, a, &bt, &bytes));
            unsigned blocks = (unsigned)((int64_t)a.B * a.NH * ((a.Nk + bt - 1) / bt));
            ATTN_BT_SWITCH(bt, attn_bwd_kv_kernel, T, blocks, bytes, a, q, k, v, dout, lse, (const float *)Dvec, gk,
                           gv);
        }
        if (tc_q) {
            unsigned blocks = (unsigned)((int64_t)a.B * a.NH * ((a.Nq + TC_ROWS - 1) / TC_ROWS));
            ATTN_TC_NF_SWITCH(a, attn_tc_bwd_q_kernel, blocks, bytes_q, a, (const tc_bf16 *)q, (const tc_bf16 *)k,
                              (const tc_bf16 *)v, dout, lse, (const float *)Dvec, gq);
        } else if (gq) {
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
