// core/cuda/cuda_internal: what the .cu kernel files share (not a public header; C++ for nvcc).
//
// Conventions for an op kernel (the CUDA half of a core/ops family, core/ops.h OpImpl):
// - Values are f32 or bf16; every floating input of one op has the same dtype (the op_* front-end
//   checks it); the output has that dtype unless the op says otherwise. Gradients (Var.g) are
//   always f32. Arithmetic in f32, statistics (norms, softmax, losses, reductions) in f32 or
//   double; load with ld<T>() and store with st<T>() so one template serves both dtypes.
// - Everything is issued on cuda_stream() (the macro STREAM). No host synchronisation inside a
//   kernel wrapper; no cudaMalloc: scratch comes from dev_scratch(c, bytes) (the Ctx's device
//   arena, released with the step) or a workspace of category CUDA_MEM_WORKSPACE made once.
// - Deterministic: no floating-point atomics whose order changes results between runs; reduce
//   with a fixed tree (per-block partials, then a second pass).
// - Backward kernels ACCUMULATE (+=) into the f32 gradient of each input that requires one
//   (ops_in_grad(c, n, i, &st) returns the device pointer, allocated zeroed on first use, or
//   NULL when that input needs no gradient).
#ifndef ADDC_CORE_CUDA_INTERNAL_CUH
#define ADDC_CORE_CUDA_INTERNAL_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "core/autograd.h"
#include "core/cuda.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/ops/ops_internal.h"
}

// CUDA_CHECK: the generic check macro specialised for the CUDA runtime (returns a Status).
#define CUDA_CHECK(expr) \
    ADDC_CHECK_GEN("CUDA", expr, cudaError_t, r_ == cudaSuccess, "%s", cudaGetErrorString(r_), ADDC_ERR_EXTERNAL)
// After a kernel launch: reports a bad launch configuration at once (no synchronisation).
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

#define STREAM ((cudaStream_t)cuda_stream())

// Grid for a grid-stride loop over n elements with `threads` per block.
static inline unsigned cuda_grid(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535 * 8) b = 65535 * 8;
    return (unsigned)b;
}

// Element load/store in f32 arithmetic for the two value dtypes.
template <typename T> __device__ __forceinline__ float ld(const T *p, int64_t i);
template <> __device__ __forceinline__ float ld<float>(const float *p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ float ld<__nv_bfloat16>(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
template <typename T> __device__ __forceinline__ void st(T *p, int64_t i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, int64_t i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<__nv_bfloat16>(__nv_bfloat16 *p, int64_t i, float v) {
    p[i] = __float2bfloat16_rn(v);
}

// Dispatches a templated launcher on a value dtype: DISPATCH_FLOAT(dt, T, { body using T }).
#define DISPATCH_FLOAT(dt, T, ...)                                                                  \
    do {                                                                                            \
        if ((dt) == DTYPE_F32) {                                                                    \
            typedef float T;                                                                        \
            __VA_ARGS__                                                                             \
        } else if ((dt) == DTYPE_BF16) {                                                            \
            typedef __nv_bfloat16 T;                                                                \
            __VA_ARGS__                                                                             \
        } else {                                                                                    \
            return addc_error_set(ADDC_ERR_UNSUPPORTED, "CUDA kernels take f32 or bf16 values, not %s", \
                                  dtype_name(dt));                                                  \
        }                                                                                           \
    } while (0)

// Device scratch from the Ctx's device arena (released with the step or the enclosing mark).
extern "C" void *dev_scratch(Ctx *c, int64_t bytes);

// dst (cols) += column sums of the f32 device matrix src (rows, cols), deterministic (two passes in
// double; core/cuda/matmul.cu): the bias gradients of linear and conv.
extern "C" Status cuda_colsum_accum(Ctx *c, float *dst, const float *src, int64_t rows, int64_t cols);

// dst (dshape, f32) += src (sshape, f32) summed over the dims where dshape is 1 or missing,
// deterministic (core/cuda/reduce.cu; the device twin of reduce_sum_to_accum): broadcast gradients.
extern "C" Status cuda_sum_to_accum(float *dst, int32_t dnd, const int64_t *dshape, const float *src, int32_t snd,
                                    const int64_t *sshape);

// Shared library handles of this process, created on first use on the compute stream, with a
// workspace of category CUDA_MEM_WORKSPACE (32 MiB) for cuBLASLt. Types are opaque here so that
// files that do not use a library need not include its header.
extern "C" void *cuda_cublaslt_handle(void);     // cublasLtHandle_t
extern "C" void *cuda_cublaslt_workspace(size_t *bytes);
extern "C" void *cuda_cudnn_handle(void);        // cudnnHandle_t (set to STREAM); NULL + error without
                                                 // cuDNN (ADDC_HAVE_CUDNN undefined)

#endif
