// core/cuda/runtime: device discovery, the compute and communication streams, device memory by
// category, copies, fills, conversions, deterministic sums, and the shared cuBLASLt/cuDNN handles
// behind core/cuda.h. Compiled as C++ by nvcc; everything exported is extern "C".
#include <cublasLt.h>
#ifdef ADDC_HAVE_CUDNN
#include <cudnn.h>
#endif
#include <stdio.h>
#include <string.h>

#include "core/cuda/cuda_internal.cuh"

static char unavailable[256];
static int inited = 0;
static cudaStream_t compute_stream, comm_stream;
static int64_t mem_live[CUDA_MEM_COUNT], mem_peak[CUDA_MEM_COUNT];
static bool poison = false;

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

extern "C" Status cuda_init(int dev) {
    if (inited) return ADDC_OK;
    int n = cuda_device_count();
    if (n == 0) return addc_error_set(ADDC_ERR_UNSUPPORTED, "no CUDA device: %s", unavailable);
    if (dev < 0 || dev >= n)
        return addc_error_set(ADDC_ERR_INVALID, "CUDA device %d asked, %d present", dev, n);
    CUDA_CHECK(cudaSetDevice(dev));
    CUDA_CHECK(cudaStreamCreateWithFlags(&compute_stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream, cudaStreamNonBlocking));
    inited = 1;
    return ADDC_OK;
}

static Status ensure_init(void) { return inited ? ADDC_OK : cuda_init(0); }

extern "C" void *cuda_stream(void) {
    if (ensure_init() != ADDC_OK) return NULL;
    return (void *)compute_stream;
}

extern "C" void *cuda_comm_stream(void) {
    if (ensure_init() != ADDC_OK) return NULL;
    return (void *)comm_stream;
}

// ---- memory by category ----

static const char *const category_names[CUDA_MEM_COUNT] = {"params", "grads", "optim", "activations",
                                                           "workspace", "comm"};

extern "C" const char *cuda_mem_category_name(CudaMemCategory cat) {
    return (cat >= 0 && cat < CUDA_MEM_COUNT) ? category_names[cat] : "?";
}

extern "C" Status cuda_mem_alloc(CudaMemCategory cat, void **p, size_t bytes) {
    *p = NULL;
    if (cat < 0 || cat >= CUDA_MEM_COUNT) return addc_error_set(ADDC_ERR_INVALID, "bad memory category %d", (int)cat);
    TRY(ensure_init());
    if (bytes == 0) bytes = 256;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        char rep[512];
        return addc_error_set(ADDC_ERR_NOMEM,
                              "CUDA out of memory: %.1f MiB of %s asked, %.1f MiB free of %.1f MiB; in use: %s",
                              bytes / 1048576.0, category_names[cat], free_b / 1048576.0, total_b / 1048576.0,
                              cuda_mem_report(rep, sizeof rep));
    }
    mem_live[cat] += (int64_t)bytes;
    if (mem_live[cat] > mem_peak[cat]) mem_peak[cat] = mem_live[cat];
    return ADDC_OK;
}

extern "C" Status cuda_mem_free(CudaMemCategory cat, void *p, size_t bytes) {
    if (!p) return ADDC_OK;
    if (cat < 0 || cat >= CUDA_MEM_COUNT) return addc_error_set(ADDC_ERR_INVALID, "bad memory category %d", (int)cat);
    if (bytes == 0) bytes = 256;
    CUDA_CHECK(cudaFree(p));
    mem_live[cat] -= (int64_t)bytes;
    return ADDC_OK;
}

extern "C" int64_t cuda_mem_live(CudaMemCategory cat) { return (cat >= 0 && cat < CUDA_MEM_COUNT) ? mem_live[cat] : 0; }
extern "C" int64_t cuda_mem_peak(CudaMemCategory cat) { return (cat >= 0 && cat < CUDA_MEM_COUNT) ? mem_peak[cat] : 0; }

extern "C" char *cuda_mem_report(char *buf, int cap) {
    int off = 0;
    buf[0] = 0;
    for (int c = 0; c < CUDA_MEM_COUNT && off < cap; c++)
        off += snprintf(buf + off, (size_t)(cap - off), "%s%s %.1f MiB (peak %.1f)", c ? ", " : "", category_names[c],
                        mem_live[c] / 1048576.0, mem_peak[c] / 1048576.0);
    return buf;
}

extern "C" Status cuda_malloc(void **p, size_t bytes) { return cuda_mem_alloc(CUDA_MEM_WORKSPACE, p, bytes); }

extern "C" Status cuda_free(void *p) {
    // size unknown here: the workspace counter is corrected by the caller's matching cuda_malloc
    // size only through cuda_mem_free; plain cuda_free keeps the device free but not the count.
    if (!p) return ADDC_OK;
    CUDA_CHECK(cudaFree(p));
    return ADDC_OK;
}

// ---- copies and fills ----

extern "C" Status cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
    TRY(ensure_init());
    if (bytes == 0) return ADDC_OK;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, compute_stream));
    return ADDC_OK;
}

extern "C" Status cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
    TRY(ensure_init());
    if (bytes == 0) return ADDC_OK;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, compute_stream));
    CUDA_CHECK(cudaStreamSynchronize(compute_stream));
    return ADDC_OK;
}

extern "C" Status cuda_copy_device(void *dst, const void *src, size_t bytes) {
    TRY(ensure_init());
    if (bytes == 0 || dst == src) return ADDC_OK;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, compute_stream));
    return ADDC_OK;
}

extern "C" Status cuda_memset(void *dst, int byte, size_t bytes) {
    TRY(ensure_init());
    if (bytes == 0) return ADDC_OK;
    CUDA_CHECK(cudaMemsetAsync(dst, byte, bytes, compute_stream));
    return ADDC_OK;
}

__global__ static void fill_f32_kernel(float *dst, int64_t n, float value) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = value;
}

extern "C" Status cuda_fill_f32(float *dst, int64_t n, float value) {
    TRY(ensure_init());
    if (n <= 0) return ADDC_OK;
    fill_f32_kernel<<<cuda_grid(n, 256), 256, 0, compute_stream>>>(dst, n, value);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

template <typename D, typename S>
__global__ static void convert_kernel(D *dst, const S *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        st<D>(dst, i, ld<S>(src, i));
}

extern "C" Status cuda_convert(void *dst, DType dst_dt, const void *src, DType src_dt, int64_t n) {
    TRY(ensure_init());
    if (n <= 0) return ADDC_OK;
    if (dst_dt == src_dt) return cuda_copy_device(dst, src, (size_t)n * dtype_size(dst_dt));
    unsigned g = cuda_grid(n, 256);
    if (dst_dt == DTYPE_BF16 && src_dt == DTYPE_F32)
        convert_kernel<__nv_bfloat16, float><<<g, 256, 0, compute_stream>>>((__nv_bfloat16 *)dst, (const float *)src, n);
    else if (dst_dt == DTYPE_F32 && src_dt == DTYPE_BF16)
        convert_kernel<float, __nv_bfloat16><<<g, 256, 0, compute_stream>>>((float *)dst, (const __nv_bfloat16 *)src, n);
    else
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "cuda_convert: %s -> %s is not supported (f32 <-> bf16 only)",
                              dtype_name(src_dt), dtype_name(dst_dt));
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" Status cuda_synchronize(void) {
    TRY(ensure_init());
    CUDA_CHECK(cudaDeviceSynchronize());
    return ADDC_OK;
}

// ---- events ----

extern "C" Status cuda_event_create(void **ev) {
    TRY(ensure_init());
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    *ev = (void *)e;
    return ADDC_OK;
}

extern "C" Status cuda_event_destroy(void *ev) {
    if (ev) CUDA_CHECK(cudaEventDestroy((cudaEvent_t)ev));
    return ADDC_OK;
}

extern "C" Status cuda_event_record(void *ev, void *stream) {
    CUDA_CHECK(cudaEventRecord((cudaEvent_t)ev, (cudaStream_t)stream));
    return ADDC_OK;
}

extern "C" Status cuda_stream_wait_event(void *stream, void *ev) {
    CUDA_CHECK(cudaStreamWaitEvent((cudaStream_t)stream, (cudaEvent_t)ev, 0));
    return ADDC_OK;
}

extern "C" Status cuda_event_synchronize(void *ev) {
    CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)ev));
    return ADDC_OK;
}

extern "C" Status cuda_event_elapsed_ms(void *start, void *end, float *ms) {
    CUDA_CHECK(cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)end));
    return ADDC_OK;
}

// ---- poisoning ----

extern "C" void cuda_poison_set(bool on) { poison = on; }
extern "C" bool cuda_poison_enabled(void) { return poison; }

// ---- deterministic sums ----

#define SUM_THREADS 256
#define SUM_BLOCKS 1024

// Each block sums a fixed, strided set of elements into one double; a second one-block pass
// adds the partials in index order. The result depends only on n, never on timing.
__global__ static void sum_squares_partial(const float *x, int64_t n, double *partial) {
    __shared__ double sh[SUM_THREADS];
    double s = 0;
    for (int64_t i = blockIdx.x * (int64_t)SUM_THREADS + threadIdx.x; i < n; i += (int64_t)SUM_BLOCKS * SUM_THREADS) {
        double v = x[i];
        s += v * v;
    }
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = SUM_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

__global__ static void sum_partials(const double *partial, int n, double *out) {
    __shared__ double sh[SUM_THREADS];
    double s = 0;
    for (int i = threadIdx.x; i < n; i += SUM_THREADS) s += partial[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int w = SUM_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = sh[0];
}

static double *sum_scratch;  // SUM_BLOCKS partials + 1 result, workspace category

extern "C" Status cuda_sum_squares(const float *x, int64_t n, double *out) {
    TRY(ensure_init());
    *out = 0;
    if (n <= 0) return ADDC_OK;
    if (!sum_scratch) TRY(cuda_mem_alloc(CUDA_MEM_WORKSPACE, (void **)&sum_scratch, (SUM_BLOCKS + 1) * sizeof(double)));
    sum_squares_partial<<<SUM_BLOCKS, SUM_THREADS, 0, compute_stream>>>(x, n, sum_scratch);
    CUDA_LAUNCH_CHECK();
    sum_partials<<<1, SUM_THREADS, 0, compute_stream>>>(sum_scratch, SUM_BLOCKS, sum_scratch + SUM_BLOCKS);
    CUDA_LAUNCH_CHECK();
    return cuda_copy_to_host(out, sum_scratch + SUM_BLOCKS, sizeof(double));
}

__global__ static void scale_kernel(float *x, int64_t n, float s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] *= s;
}

extern "C" Status cuda_scale_f32(float *x, int64_t n, float s) {
    TRY(ensure_init());
    if (n <= 0) return ADDC_OK;
    scale_kernel<<<cuda_grid(n, 256), 256, 0, compute_stream>>>(x, n, s);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

__global__ static void axpy_kernel(float *y, const float *x, int64_t n, float alpha) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] += alpha * x[i];
}

extern "C" Status cuda_axpy_f32(float *y, const float *x, int64_t n, float alpha) {
    TRY(ensure_init());
    if (n <= 0) return ADDC_OK;
    axpy_kernel<<<cuda_grid(n, 256), 256, 0, compute_stream>>>(y, x, n, alpha);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

__global__ static void swap_kernel(float *a, float *b, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float x = a[i];
        a[i] = b[i];
        b[i] = x;
    }
}

extern "C" Status cuda_swap_f32(float *a, float *b, int64_t n) {
    TRY(ensure_init());
    if (n <= 0) return ADDC_OK;
    swap_kernel<<<cuda_grid(n, 256), 256, 0, compute_stream>>>(a, b, n);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" Status cuda_move_down(void *dst, const void *src, size_t bytes) {
    TRY(ensure_init());
    char *d = (char *)dst;
    const char *s = (const char *)src;
    if (d == s || bytes == 0) return ADDC_OK;
    if (d > s) return addc_error_set(ADDC_ERR_INVALID, "cuda_move_down: destination above source");
    size_t step = (size_t)(s - d);
    for (size_t off = 0; off < bytes; off += step) {
        size_t len = bytes - off < step ? bytes - off : step;
        CUDA_CHECK(cudaMemcpyAsync(d + off, s + off, len, cudaMemcpyDeviceToDevice, compute_stream));
    }
    return ADDC_OK;
}

// ---- Ctx scratch and library handles ----

extern "C" void *dev_scratch(Ctx *c, int64_t bytes) { return ctx_dev_alloc(c, bytes); }

static cublasLtHandle_t lt_handle;
static void *lt_workspace;
static const size_t lt_workspace_bytes = 32u << 20;

extern "C" void *cuda_cublaslt_handle(void) {
    if (!lt_handle) {
        if (cublasLtCreate(&lt_handle) != CUBLAS_STATUS_SUCCESS) {
            addc_error_set(ADDC_ERR_EXTERNAL, "cublasLtCreate failed");
            return NULL;
        }
    }
    return (void *)lt_handle;
}

extern "C" void *cuda_cublaslt_workspace(size_t *bytes) {
    if (!lt_workspace && cuda_mem_alloc(CUDA_MEM_WORKSPACE, &lt_workspace, lt_workspace_bytes) != ADDC_OK) return NULL;
    *bytes = lt_workspace_bytes;
    return lt_workspace;
}

#ifdef ADDC_HAVE_CUDNN
static cudnnHandle_t dnn_handle;

extern "C" void *cuda_cudnn_handle(void) {
    if (!dnn_handle) {
        if (ensure_init() != ADDC_OK) return NULL;
        cudnnStatus_t s = cudnnCreate(&dnn_handle);
        if (s != CUDNN_STATUS_SUCCESS) {
            addc_error_set(ADDC_ERR_EXTERNAL, "cudnnCreate failed: %s", cudnnGetErrorString(s));
            dnn_handle = NULL;
            return NULL;
        }
        cudnnSetStream(dnn_handle, compute_stream);
    }
    return (void *)dnn_handle;
}
#else
extern "C" void *cuda_cudnn_handle(void) {
    addc_error_set(ADDC_ERR_UNSUPPORTED, "addc was built without cuDNN");
    return NULL;
}
#endif

// ---- reserved address space (CUDA virtual memory management, driver API) ----
//
// A range reserved once keeps its addresses; physical memory is created and mapped in pieces of
// whole granules (cuda_va_map) and given back (cuda_va_unmap) while the addresses stay valid for
// later mappings. Each cuda_va_map is one physical allocation (handle); the table below finds the
// handle of a mapped piece by its address, so cuda_va_unmap must be called with exactly the address
// and size a cuda_va_map was.
//
// The driver functions are looked up through the runtime (cudaGetDriverEntryPointByVersion), not
// linked: linking libcuda would make every addc program need the driver library, and the CPU-only
// machines that build and test addc have none.

#include <cuda.h>
#include <cudaTypedefs.h>

static struct {
    bool loaded;
    PFN_cuGetErrorString_v6000 get_error_string;
    PFN_cuMemGetAllocationGranularity_v10020 granularity;
    PFN_cuMemAddressReserve_v10020 address_reserve;
    PFN_cuMemAddressFree_v10020 address_free;
    PFN_cuMemCreate_v10020 create;
    PFN_cuMemMap_v10020 map;
    PFN_cuMemSetAccess_v10020 set_access;
    PFN_cuMemUnmap_v10020 unmap;
    PFN_cuMemRelease_v10020 release;
} drv;

static Status drv_symbol(const char *name, void **fn) {
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    *fn = NULL;
    CUDA_CHECK(cudaGetDriverEntryPointByVersion(name, fn, 12000, cudaEnableDefault, &q));
    if (q != cudaDriverEntryPointSuccess || !*fn)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "CUDA driver: %s not found (%s)", name,
                              q == cudaDriverEntryPointVersionNotSufficent ? "driver too old" : "no such symbol");
    return ADDC_OK;
}

static Status drv_load(void) {
    if (drv.loaded) return ADDC_OK;
    TRY(drv_symbol("cuGetErrorString", (void **)&drv.get_error_string));
    TRY(drv_symbol("cuMemGetAllocationGranularity", (void **)&drv.granularity));
    TRY(drv_symbol("cuMemAddressReserve", (void **)&drv.address_reserve));
    TRY(drv_symbol("cuMemAddressFree", (void **)&drv.address_free));
    TRY(drv_symbol("cuMemCreate", (void **)&drv.create));
    TRY(drv_symbol("cuMemMap", (void **)&drv.map));
    TRY(drv_symbol("cuMemSetAccess", (void **)&drv.set_access));
    TRY(drv_symbol("cuMemUnmap", (void **)&drv.unmap));
    TRY(drv_symbol("cuMemRelease", (void **)&drv.release));
    drv.loaded = true;
    return ADDC_OK;
}

static const char *cu_error_string(CUresult r) {
    const char *s = NULL;
    if (drv.get_error_string) drv.get_error_string(r, &s);
    return s ? s : "unknown error";
}

// CU_CHECK: the generic check macro specialised for the CUDA driver API (returns a Status).
#define CU_CHECK(expr) \
    ADDC_CHECK_GEN("CUDA driver", expr, CUresult, r_ == CUDA_SUCCESS, "%s", cu_error_string(r_), ADDC_ERR_EXTERNAL)

typedef struct VaPiece {
    CUdeviceptr addr;
    size_t bytes;
    CUmemGenericAllocationHandle handle;
} VaPiece;

static VaPiece *va_pieces;  // (va_n) mapped pieces, unordered
static size_t va_n, va_cap;
static size_t va_gran;      // allocation granularity of the current device, 0 until asked

// The current device's allocation properties (pinned device memory) and granularity.
static Status va_prop(CUmemAllocationProp *prop) {
    TRY(ensure_init());
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaFree(0));  // the runtime's primary context exists and is current for the driver calls
    TRY(drv_load());
    memset(prop, 0, sizeof *prop);
    prop->type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop->location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop->location.id = dev;
    if (!va_gran) {
        size_t g = 0;
        CU_CHECK(drv.granularity(&g, prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
        if (g == 0) return addc_error_set(ADDC_ERR_EXTERNAL, "CUDA driver reports an allocation granularity of 0");
        va_gran = g;
    }
    return ADDC_OK;
}

static size_t va_round(size_t bytes) { return ((bytes ? bytes : 1) + va_gran - 1) / va_gran * va_gran; }

extern "C" Status cuda_va_reserve(void **base, size_t bytes, size_t *granularity) {
    *base = NULL;
    CUmemAllocationProp prop;
    TRY(va_prop(&prop));
    CUdeviceptr p = 0;
    CU_CHECK(drv.address_reserve(&p, va_round(bytes), va_gran, 0, 0));
    *base = (void *)p;
    if (granularity) *granularity = va_gran;
    return ADDC_OK;
}

extern "C" Status cuda_va_map(void *addr, size_t bytes, CudaMemCategory cat) {
    if (cat < 0 || cat >= CUDA_MEM_COUNT) return addc_error_set(ADDC_ERR_INVALID, "bad memory category %d", (int)cat);
    CUmemAllocationProp prop;
    TRY(va_prop(&prop));
    if (bytes == 0 || (uintptr_t)addr % va_gran || bytes % va_gran)
        return addc_error_set(ADDC_ERR_INVALID, "cuda_va_map(%p, %zu): address and size must be non-zero multiples of "
                              "the granularity %zu", addr, bytes, va_gran);
    if (va_n == va_cap) {
        size_t cap = va_cap ? 2 * va_cap : 64;
        VaPiece *p = (VaPiece *)realloc(va_pieces, cap * sizeof *p);
        if (!p) return addc_error_set(ADDC_ERR_NOMEM, "cuda_va_map: no host memory for the mapping table");
        va_pieces = p;
        va_cap = cap;
    }
    CUmemGenericAllocationHandle h;
    CUresult r = drv.create(&h, bytes, &prop, 0);
    if (r != CUDA_SUCCESS) {
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        char rep[512];
        return addc_error_set(r == CUDA_ERROR_OUT_OF_MEMORY ? ADDC_ERR_NOMEM : ADDC_ERR_EXTERNAL,
                              "cuMemCreate of %.1f MiB of %s failed: %s; %.1f MiB free of %.1f MiB; in use: %s",
                              bytes / 1048576.0, category_names[cat], cu_error_string(r), free_b / 1048576.0,
                              total_b / 1048576.0, cuda_mem_report(rep, sizeof rep));
    }
    r = drv.map((CUdeviceptr)addr, bytes, 0, h, 0);
    if (r != CUDA_SUCCESS) {
        drv.release(h);
        return addc_error_set(ADDC_ERR_EXTERNAL, "cuMemMap(%p, %zu) failed: %s", addr, bytes, cu_error_string(r));
    }
    CUmemAccessDesc acc;
    memset(&acc, 0, sizeof acc);
    acc.location = prop.location;
    acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = drv.set_access((CUdeviceptr)addr, bytes, &acc, 1);
    if (r != CUDA_SUCCESS) {
        drv.unmap((CUdeviceptr)addr, bytes);
        drv.release(h);
        return addc_error_set(ADDC_ERR_EXTERNAL, "cuMemSetAccess(%p, %zu) failed: %s", addr, bytes, cu_error_string(r));
    }
    va_pieces[va_n++] = VaPiece{(CUdeviceptr)addr, bytes, h};
    mem_live[cat] += (int64_t)bytes;
    if (mem_live[cat] > mem_peak[cat]) mem_peak[cat] = mem_live[cat];
    return ADDC_OK;
}

extern "C" Status cuda_va_unmap(void *addr, size_t bytes, CudaMemCategory cat) {
    if (cat < 0 || cat >= CUDA_MEM_COUNT) return addc_error_set(ADDC_ERR_INVALID, "bad memory category %d", (int)cat);
    size_t i = 0;
    while (i < va_n && va_pieces[i].addr != (CUdeviceptr)addr) i++;
    if (i == va_n || va_pieces[i].bytes != bytes)
        return addc_error_set(ADDC_ERR_INVALID, "cuda_va_unmap(%p, %zu): no such mapping (cuda_va_map %s)", addr, bytes,
                              i == va_n ? "never mapped this address" : "mapped another size there");
    // kernels already enqueued on the compute stream may still read or write the range
    CUDA_CHECK(cudaStreamSynchronize(compute_stream));
    VaPiece p = va_pieces[i];
    CU_CHECK(drv.unmap(p.addr, p.bytes));
    va_pieces[i] = va_pieces[--va_n];
    CU_CHECK(drv.release(p.handle));
    mem_live[cat] -= (int64_t)bytes;
    return ADDC_OK;
}

extern "C" Status cuda_va_free(void *base, size_t bytes) {
    if (!base) return ADDC_OK;
    if (!va_gran) return addc_error_set(ADDC_ERR_INVALID, "cuda_va_free(%p): nothing was reserved", base);
    CU_CHECK(drv.address_free((CUdeviceptr)base, va_round(bytes)));
    return ADDC_OK;
}
