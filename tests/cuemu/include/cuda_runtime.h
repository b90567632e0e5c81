// tests/cuemu/include/cuda_runtime.h: the CUDA C++ language surface of the host emulator (cuemu).
//
// core/cuda/*.cu are compiled by g++ after tests/cuemu/transform.cpp has rewritten each launch
// `k<<<grid, block, smem, stream>>>(args)` into `cuemu_launch("k", k, __FILE__, __LINE__, grid,
// block, smem, stream)(args)` and each `extern __shared__ T name[];` into a pointer to the block's
// dynamic shared memory. Everything else is here, as macros and host functions:
// - __global__, __device__, __host__, __forceinline__, __restrict__, __launch_bounds__ (checked by
//   the launch: transform.cpp turns it into cuemu_launch_bounds(N) at the top of the kernel body);
// - __shared__ variables are function statics: one copy, shared by the threads of the block that
//   runs (blocks run one after the other, see cuemu.cpp);
// - threadIdx, blockIdx, blockDim, gridDim: globals the emulator sets before it resumes a thread;
// - __syncthreads and the warp shuffles switch threads (coroutines, tests/cuemu/cuemu.cpp);
// - the device math intrinsics addc uses, with the rounding they have on the device (no FMA
//   contraction: this file is compiled with -ffp-contract=off);
// - dim3, cudaFuncSetAttribute for kernel pointers.
#ifndef CUEMU_CUDA_RUNTIME_H
#define CUEMU_CUDA_RUNTIME_H

#include "cuda_runtime_api.h"

#ifdef __cplusplus
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __noinline__ __attribute__((noinline))
#define __forceinline__ inline
#define __shared__ static
#define __constant__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#ifndef __restrict__
#define __restrict__ __restrict
#endif

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

// ---- thread switching (tests/cuemu/cuemu.cpp) ----
void cuemu_syncthreads(void);
// The calling lane offers `bits` (up to 8 bytes) and asks for lane `src` of its warp; returns that
// lane's offer once every lane of `mask` (the whole warp) has arrived. src outside [0, 32): own value.
uint64_t cuemu_shuffle(unsigned mask, uint64_t bits, int src, const char *what);
void cuemu_launch_bounds(unsigned max_threads);
void *cuemu_dynamic_smem(void);

#define __syncthreads() cuemu_syncthreads()

template <typename T> static inline T cuemu_shfl(unsigned mask, T v, int src, const char *what) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a value over 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof v);
    b = cuemu_shuffle(mask, b, src, what);
    T r;
    memcpy(&r, &b, sizeof r);
    return r;
}
static inline int cuemu_lane(void) { return (int)((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) & 31u); }
// a warp barrier: every lane of the (full) mask arrives before any goes on
static inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)cuemu_shuffle(mask, 0, -1, "__syncwarp"); }
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    int l = cuemu_lane(), seg = l & ~(width - 1), src = l ^ lane_mask;
    return cuemu_shfl(mask, v, src < seg + width ? src : l, "__shfl_xor_sync");
}
template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int l = cuemu_lane(), seg = l & ~(width - 1), src = l + (int)delta;
    return cuemu_shfl(mask, v, src < seg + width ? src : l, "__shfl_down_sync");
}
template <typename T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    int l = cuemu_lane(), seg = l & ~(width - 1), src = l - (int)delta;
    return cuemu_shfl(mask, v, src >= seg ? src : l, "__shfl_up_sync");
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int lane, int width = 32) {
    int l = cuemu_lane(), seg = l & ~(width - 1);
    return cuemu_shfl(mask, v, seg + (lane & (width - 1)), "__shfl_sync");
}

// ---- device math ----
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
static inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }
static inline double min(double a, double b) { return fmin(a, b); }
static inline double max(double a, double b) { return fmax(a, b); }

static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
static inline double rsqrt(double a) { return 1.0 / sqrt(a); }
static inline float __saturatef(float a) { return a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a); }
static inline float __int_as_float(int v) {
    float f;
    memcpy(&f, &v, 4);
    return f;
}
static inline int __float_as_int(float f) {
    int v;
    memcpy(&v, &f, 4);
    return v;
}
static inline unsigned __float_as_uint(float f) {
    unsigned v;
    memcpy(&v, &f, 4);
    return v;
}
static inline float __uint_as_float(unsigned v) {
    float f;
    memcpy(&f, &v, 4);
    return f;
}
static inline double __longlong_as_double(long long v) {
    double d;
    memcpy(&d, &v, 8);
    return d;
}
static inline long long __double_as_longlong(double d) {
    long long v;
    memcpy(&v, &d, 8);
    return v;
}

// ---- kernel attributes and launches ----

template <typename F> static inline cudaError_t cudaFuncSetAttribute(F *func, cudaFuncAttribute attr, int value) {
    return cuemu_func_set_attribute((const void *)func, attr, value);
}

namespace cuemu {
// Validates a launch (sets the last error and returns false when the GPU would refuse it) and runs
// body(arg) as every thread of every block of the grid, on the stream's order.
bool launch_run(const char *name, const void *fn, const char *file, int line, dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, void (*body)(void *), void *arg);

template <typename... P> struct Launch {
    void (*fn)(P...);
    const char *name, *file;
    int line;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    // the arguments convert to the kernel's parameter types at the call, as in a real launch
    void operator()(P... a) const {
        struct State {
            void (*fn)(P...);
            std::tuple<typename std::decay<P>::type...> args;
        } st{fn, std::tuple<typename std::decay<P>::type...>(a...)};
        launch_run(name, (const void *)fn, file, line, grid, block, smem, stream,
                   [](void *p) {
                       State *s = (State *)p;
                       std::apply(s->fn, s->args);
                   },
                   &st);
    }
};
} // namespace cuemu

template <typename... P>
static inline cuemu::Launch<P...> cuemu_launch(const char *name, void (*fn)(P...), const char *file, int line, dim3 grid,
                                               dim3 block, size_t smem = 0, cudaStream_t stream = 0) {
    return cuemu::Launch<P...>{fn, name, file, line, grid, block, smem, stream};
}

#endif // __cplusplus
#endif
