// core/cuda/runtime: device discovery, memory and a fill kernel behind core/cuda.h.
// Compiled as C++ by nvcc; everything exported is extern "C" so the rest stays C11.
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "core/cuda.h"
}

// CUDA_CHECK: the generic check macro specialised for the CUDA runtime.
#define CUDA_CHECK(expr) \
    ADDC_CHECK_GEN("CUDA", expr, cudaError_t, r_ == cudaSuccess, "%s", cudaGetErrorString(r_), ADDC_ERR_EXTERNAL)

static char unavailable[256];

extern "C" int cuda_device_count(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        snprintf(unavailable, sizeof unavailable, "%s", cudaGetErrorString(e));
        cudaGetLastError();  // clear the sticky error
        return 0;
    }
    if (n == 0) snprintf(unavailable, sizeof unavailable, "no CUDA device present");
    return n;
}

extern "C" const char *cuda_unavailable_reason(void) { return unavailable; }

extern "C" Status cuda_device_describe(int dev, char *buf, int cap) {
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    snprintf(buf, (size_t)cap, "%s, sm_%d%d, %.1f GiB", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return ADDC_OK;
}

extern "C" Status cuda_malloc(void **p, size_t bytes) {
    CUDA_CHECK(cudaMalloc(p, bytes));
    return ADDC_OK;
}

extern "C" Status cuda_free(void *p) {
    CUDA_CHECK(cudaFree(p));
    return ADDC_OK;
}

extern "C" Status cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    return ADDC_OK;
}

extern "C" Status cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
    return ADDC_OK;
}

__global__ static void fill_f32_kernel(float *dst, int64_t n, float value) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = value;
}

extern "C" Status cuda_fill_f32(float *dst, int64_t n, float value) {
    if (n <= 0) return ADDC_OK;
    int64_t blocks = (n + 255) / 256;
    if (blocks > 65535) blocks = 65535;
    fill_f32_kernel<<<(unsigned)blocks, 256>>>(dst, n, value);
    CUDA_CHECK(cudaGetLastError());
    return ADDC_OK;
}

extern "C" Status cuda_synchronize(void) {
    CUDA_CHECK(cudaDeviceSynchronize());
    return ADDC_OK;
}
