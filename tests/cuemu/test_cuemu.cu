// tests/cuemu/test_cuemu: the host emulator's own checks (built only with -DADDC_CUDA_EMU=ON, compiled
// through transform.cpp like core/cuda/*.cu). What a kernel test relies on the emulator to do:
// bf16 conversions bit-exact with CUDA's; 3-D indices; barriers and warp shuffles that exchange the
// right values; launch-configuration errors reported by cudaGetLastError; the dynamic shared-memory
// limit and its opt-in; device/host pointer attributes; the cuBLASLt mock against a naive product;
// and, in child processes, that a divergent barrier aborts, that a missing barrier changes the
// result when the thread order does (CUEMU_ORDER), and that an unmapped VMM range faults.
#include <cublasLt.h>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int failed = 0, passed = 0;
#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (cond) {                                                                                                    \
            passed++;                                                                                                  \
        } else {                                                                                                       \
            failed++;                                                                                                  \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                                \
            printf(__VA_ARGS__);                                                                                       \
            printf("\n");                                                                                              \
        }                                                                                                              \
    } while (0)

// the reference rounding (as core/dtype.c, but CUDA's canonical NaN)
static unsigned short ref_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

static void test_bf16(void) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int bad = 0;
    for (int i = 0; i < 1000000; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint32_t u = (uint32_t)s;
        if (i < 4) u = i == 0 ? 0x3f808000u : i == 1 ? 0x3f818000u : i == 2 ? 0x7f7fffffu : 0xff800001u; // ties, overflow, NaN
        float f;
        memcpy(&f, &u, 4);
        __nv_bfloat16 h = __float2bfloat16_rn(f);
        if (__bfloat16_as_ushort(h) != ref_bf16(f)) bad++;
        uint32_t back = (uint32_t)__bfloat16_as_ushort(h) << 16;
        float g = __bfloat162float(h);
        if (memcmp(&g, &back, 4) != 0) bad++;
    }
    CHECK(bad == 0, "bf16 conversions: %d mismatches", bad);
    CHECK(__bfloat16_as_ushort(__float2bfloat16_rn(1.00390625f)) == 0x3f80, "tie to even (down)");
    CHECK(__bfloat16_as_ushort(__float2bfloat16_rn(1.01171875f)) == 0x3f82, "tie to even (up)");
}

__global__ static void index_kernel(int *out) {
    int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int nt = blockDim.x * blockDim.y * blockDim.z;
    out[b * nt + t] = b * 1000 + t;
}

// per block: sum of 0..n-1 through shared memory and barriers, and through warp shuffles
__global__ static void reduce_kernel(float *tree, float *warp) {
    __shared__ float sh[256];
    int t = threadIdx.x;
    sh[t] = (float)t;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (t < w) sh[t] += sh[t + w];
        __syncthreads();
    }
    if (t == 0) tree[blockIdx.x] = sh[0];
    float v = (float)t;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((t & 31) == 0) warp[blockIdx.x * 8 + t / 32] = v;
}

__global__ static void dyn_kernel(float *out, int n) {
    extern __shared__ float dyn[];
    for (int i = threadIdx.x; i < n; i += blockDim.x) dyn[i] = (float)(i % 3);
    __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0;
        for (int i = 0; i < n; i++) s += dyn[i];
        out[0] = s;
    }
}

// thread 0 reads what thread 1 wrote: right only with the barrier
__global__ static void race_kernel(int *out, int with_barrier) {
    __shared__ int v;
    if (threadIdx.x == 1) v = 42;
    if (with_barrier) __syncthreads();
    if (threadIdx.x == 0) out[0] = v;
}

__global__ static void divergent_kernel(int *out) {
    if (threadIdx.x < 16) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

static void test_kernels(void) {
    int *d = NULL;
    CHECK(cudaMalloc((void **)&d, 2 * 3 * 4 * 5 * 6 * 7 * sizeof(int)) == cudaSuccess, "cudaMalloc");
    index_kernel<<<dim3(2, 3, 4), dim3(5, 6, 7)>>>(d);
    CHECK(cudaGetLastError() == cudaSuccess, "3-D launch");
    int *h = (int *)malloc(2 * 3 * 4 * 5 * 6 * 7 * sizeof(int));
    cudaMemcpy(h, d, 2 * 3 * 4 * 5 * 6 * 7 * sizeof(int), cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int b = 0; b < 24; b++)
        for (int t = 0; t < 210; t++) bad += h[b * 210 + t] != b * 1000 + t;
    CHECK(bad == 0, "3-D indices: %d wrong", bad);
    free(h);
    cudaFree(d);

    float *tree, *warp;
    cudaMalloc((void **)&tree, 3 * sizeof(float));
    cudaMalloc((void **)&warp, 24 * sizeof(float));
    reduce_kernel<<<3, 256>>>(tree, warp);
    float ht[3], hw[24];
    cudaMemcpy(ht, tree, sizeof ht, cudaMemcpyDeviceToHost);
    cudaMemcpy(hw, warp, sizeof hw, cudaMemcpyDeviceToHost);
    for (int b = 0; b < 3; b++) CHECK(ht[b] == 255.0f * 256.0f / 2.0f, "block %d tree sum %g", b, ht[b]);
    for (int w = 0; w < 24; w++) {
        float want = 0;
        for (int l = 0; l < 32; l++) want += (float)((w % 8) * 32 + l);
        CHECK(hw[w] == want, "warp %d shuffle sum %g, want %g", w, hw[w], want);
    }
    cudaFree(tree);
    cudaFree(warp);
}

static void test_launch_errors(void) {
    float *d;
    cudaMalloc((void **)&d, 64 << 10);
    dyn_kernel<<<1, 1025, 0>>>(d, 4);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads per block refused");
    CHECK(cudaGetLastError() == cudaSuccess, "the error is cleared once read");
    dyn_kernel<<<dim3(1, 65536), 32, 0>>>(d, 4);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y 65536 refused");
    dyn_kernel<<<1, dim3(32, 1, 65), 0>>>(d, 4);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "block.z 65 refused");
    const int n = 16000; // 64000 bytes: over the default 48 KiB
    dyn_kernel<<<1, 128, n * sizeof(float)>>>(d, n);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "64000 bytes of dynamic shared memory without opt-in refused");
    CHECK(cudaFuncSetAttribute(dyn_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n * (int)sizeof(float)) ==
              cudaSuccess,
          "opt-in");
    dyn_kernel<<<1, 128, n * sizeof(float)>>>(d, n);
    CHECK(cudaGetLastError() == cudaSuccess, "64000 bytes after the opt-in");
    float s = 0;
    cudaMemcpy(&s, d, 4, cudaMemcpyDeviceToHost);
    CHECK(s == (float)(n / 3 * 3 + (n % 3 == 2 ? 1 : 0)), "dynamic shared memory sum %g", s); // exact in f32
    CHECK(cudaFuncSetAttribute(dyn_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 << 10) ==
              cudaErrorInvalidValue,
          "opt-in over 227 KiB refused");
    cudaGetLastError();
    cudaFree(d);
}

static void test_memory(void) {
    float *d = NULL, host[4] = {1, 2, 3, 4};
    cudaMalloc((void **)&d, sizeof host);
    cudaPointerAttributes a;
    CHECK(cudaPointerGetAttributes(&a, d + 2) == cudaSuccess && a.type == cudaMemoryTypeDevice, "device pointer");
    CHECK(cudaPointerGetAttributes(&a, host) == cudaSuccess && a.type == cudaMemoryTypeUnregistered, "host pointer");
    uint32_t bits;
    cudaMemcpy(&bits, d, 4, cudaMemcpyDeviceToHost);
    CHECK(bits == 0x7fc07fc0u, "fresh device memory is NaN-filled (0x%08x)", bits);
    CHECK(cudaMemcpy(d, host, sizeof host + 4, cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
          "a copy past the end of an allocation refused");
    cudaGetLastError();
    CHECK(cudaMemcpy(host, d, 4, cudaMemcpyHostToDevice) == cudaErrorInvalidValue, "a copy in the wrong direction refused");
    cudaGetLastError();
    cudaFree(d);
}

static void test_cublaslt(void) {
    // D (m x n, col-major, ld 5) = A^T B + bias, A stored k x m (ld 4), B k x n (ld 3); two batches
    const int m = 4, n = 2, k = 3, lda = 4, ldb = 3, ldd = 5, batch = 2;
    const int64_t sa = lda * m, sb = ldb * n, sd = ldd * n;
    float ha[2 * 16], hb[2 * 6], bias[4] = {0.5f, -1, 2, 0}, hd[2 * 10];
    for (int i = 0; i < 32; i++) ha[i] = (float)(i % 7) - 3;
    for (int i = 0; i < 12; i++) hb[i] = (float)(i % 5) * 0.5f;
    float *A, *B, *D, *bi;
    cudaMalloc((void **)&A, sizeof ha);
    cudaMalloc((void **)&B, sizeof hb);
    cudaMalloc((void **)&D, sizeof hd);
    cudaMalloc((void **)&bi, sizeof bias);
    cudaMemcpy(A, ha, sizeof ha, cudaMemcpyHostToDevice);
    cudaMemcpy(B, hb, sizeof hb, cudaMemcpyHostToDevice);
    cudaMemcpy(bi, bias, sizeof bias, cudaMemcpyHostToDevice);
    cublasLtHandle_t h;
    cublasLtCreate(&h);
    cublasLtMatmulDesc_t op;
    cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    int32_t ta = CUBLAS_OP_T;
    uint32_t ep = CUBLASLT_EPILOGUE_BIAS;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bi, sizeof bi);
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, k, m, lda);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, k, n, ldb);
    cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, ldd);
    int32_t bc = batch;
    cublasLtMatrixLayoutSetAttribute(la, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
    cublasLtMatrixLayoutSetAttribute(lb, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
    cublasLtMatrixLayoutSetAttribute(ld, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
    cublasLtMatrixLayoutSetAttribute(la, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa);
    cublasLtMatrixLayoutSetAttribute(lb, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof sb);
    cublasLtMatrixLayoutSetAttribute(ld, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sd, sizeof sd);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    uint32_t al = 4; // the batch strides are 16-byte multiples only: promise 4 (the default is 256)
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al);
    cublasLtMatmulHeuristicResult_t res;
    int found = 0;
    CHECK(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, ld, ld, pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS &&
              found == 1,
          "heuristic");
    float one = 1, zero = 0;
    cudaMemset(D, 0xff, sizeof hd); // NaN: beta = 0 must not read it
    CHECK(cublasLtMatmul(h, op, &one, A, la, B, lb, &zero, D, ld, D, ld, &res.algo, NULL, 0, 0) == CUBLAS_STATUS_SUCCESS,
          "matmul");
    cudaMemcpy(hd, D, sizeof hd, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double want = bias[i];
                for (int p = 0; p < k; p++) want += (double)ha[b * sa + p + i * lda] * hb[b * sb + p + j * ldb];
                bad += hd[b * sd + i + j * ldd] != (float)want;
            }
    CHECK(bad == 0, "cuBLASLt mock: %d wrong elements", bad);
    cublasLtMatrixLayout_t bad_l;
    cublasLtMatrixLayoutCreate(&bad_l, CUDA_R_32F, m, n, m - 1); // ld < rows
    CHECK(cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, bad_l, bad_l, pref, 1, &res, &found) ==
              CUBLAS_STATUS_INVALID_VALUE,
          "ld < rows refused");
    cublasLtMatrixLayoutDestroy(bad_l);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(ld);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(h);
    cudaFree(A);
    cudaFree(B);
    cudaFree(D);
    cudaFree(bi);
}

// runs fn in a child process with CUEMU_ORDER=order; returns its wait status
static int in_child(void (*fn)(void), const char *order) {
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        setenv("CUEMU_ORDER", order, 1);
        int fd = open("/dev/null", 1);
        if (fd >= 0) dup2(fd, 2); // the expected abort message
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(p, &st, 0);
    return st;
}

static void child_divergent(void) {
    int *d;
    cudaMalloc((void **)&d, 64 * sizeof(int));
    divergent_kernel<<<1, 64>>>(d);
}

static void child_race(void) { // exit status: the value thread 0 read (42: thread 1 ran first)
    int *d, v = 0;
    cudaMalloc((void **)&d, sizeof(int));
    race_kernel<<<1, 32>>>(d, 0);
    cudaMemcpy(&v, d, sizeof v, cudaMemcpyDeviceToHost);
    _exit(v == 42 ? 42 : 1);
}

static void child_race_fixed(void) {
    int *d, v = 0;
    cudaMalloc((void **)&d, sizeof(int));
    race_kernel<<<1, 32>>>(d, 1);
    cudaMemcpy(&v, d, sizeof v, cudaMemcpyDeviceToHost);
    _exit(v == 42 ? 42 : 1);
}

static void child_vmm(void) { // writes into a reserved, unmapped range: must fault
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q;
    cudaGetDriverEntryPointByVersion("cuMemAddressReserve", &fn, 12000, cudaEnableDefault, &q);
    CUdeviceptr p = 0;
    ((PFN_cuMemAddressReserve_v10020)fn)(&p, 2u << 20, 0, 0, 0);
    *(volatile float *)p = 1.0f;
    _exit(3);
}

static void test_children(void) {
    int st = in_child(child_divergent, "0");
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "a divergent barrier aborts (status 0x%x)", st);
    st = in_child(child_race, "0");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "missing barrier, threads in order: thread 0 reads before thread 1 writes");
    st = in_child(child_race, "1");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42, "missing barrier, CUEMU_ORDER=1: the other result");
    st = in_child(child_race_fixed, "0");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42, "with the barrier, in order");
    st = in_child(child_race_fixed, "2");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42, "with the barrier, shuffled");
    st = in_child(child_vmm, "0");
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "a reserved, unmapped range faults (status 0x%x)", st);
}

int main(void) {
    test_bf16();
    test_kernels();
    test_launch_errors();
    test_memory();
    test_cublaslt();
    test_children();
    printf("test_cuemu: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
