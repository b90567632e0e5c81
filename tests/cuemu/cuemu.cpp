// tests/cuemu/cuemu.cpp: the CUDA host emulator's runtime (see tests/cuemu/README.md): device memory,
// streams and events, the kernel executor (a block's threads as coroutines), and the driver's
// virtual memory management calls. Everything runs on the host, synchronously, in issue order.
//
// Device memory is host memory: cudaMalloc'd blocks are filled with a NaN pattern (0x7fc07fc0: a NaN
// as f32 and as each bf16 half) and kept in a registry, so cudaPointerGetAttributes tells device
// from host and copies check that their device side lies inside one allocation. Reserved address
// space (cuMemAddressReserve) is PROT_NONE; a mapping is readable only after cuMemSetAccess.
//
// Kernels. A grid runs block by block; the threads of a block are coroutines on their own stacks,
// switched only at __syncthreads() (all threads must arrive: one that has exited, or a different
// barrier count, is a divergent barrier and aborts naming the kernel) and at warp primitives
// (shuffles, __syncwarp: all 32 lanes arrive, then the values are exchanged). A coroutine (a
// "runner") that finishes its thread without waiting goes on with the next thread of the order on
// the same stack, so a kernel without barriers costs about a function call per thread.
// CUEMU_ORDER=1 runs blocks and the threads of each phase in reverse order, =2 in a shuffled order
// (CUEMU_SEED), so a race or a missing barrier changes the result (read at every launch).
// Dynamic shared memory is NaN-filled for every block; its limit is 48 KiB unless
// cudaFuncSetAttribute raised it (at most 227 KiB). Bad launch configurations set the error
// cudaGetLastError returns, as on the device.
//
// Environment: ADDC_CUEMU_DEVICES (default 1; 0: no device), CUEMU_ORDER, CUEMU_SEED, CUEMU_MEM_GIB
// (device memory size, default 80), CUEMU_STACK_KIB (per thread stack, default 256),
// CUEMU_LT_NO_ALGO (cublaslt.cpp).
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>
#include <mma.h>

#include "cuemu_internal.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace {

[[noreturn]] void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cuemu: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stderr);
    abort();
}

long env_long(const char *name, long dflt) {
    const char *e = getenv(name);
    if (!e || !*e) return dflt;
    char *end = NULL;
    long v = strtol(e, &end, 10);
    if (*end) die("%s='%s' is not an integer", name, e);
    return v;
}

std::recursive_mutex mu; // the emulator's state; kernels run under it
thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t e) {
    last_error = e;
    return e;
}

const uint32_t NAN_PATTERN = 0x7fc07fc0u;

void nan_fill(void *p, size_t bytes) {
    unsigned char *c = (unsigned char *)p;
    size_t i = 0;
    for (; i + 4 <= bytes; i += 4) memcpy(c + i, &NAN_PATTERN, 4);
    for (; i < bytes; i++) c[i] = 0x7f;
}

int device_count() {
    long n = env_long("ADDC_CUEMU_DEVICES", 1);
    return n < 0 ? 0 : (int)n;
}
int current_device = 0;

size_t mem_total() { return (size_t)env_long("CUEMU_MEM_GIB", 80) << 30; }
size_t mem_used = 0;

// ---- the registry of device memory ----

enum RegionKind { REGION_MALLOC, REGION_HOST, REGION_VMM };
struct Region {
    size_t bytes;
    RegionKind kind;
};
std::map<uintptr_t, Region> regions; // by start address

// The region containing [p, p + bytes), or NULL.
const Region *region_find(const void *p, size_t bytes, uintptr_t *start) {
    uintptr_t a = (uintptr_t)p;
    auto it = regions.upper_bound(a);
    if (it == regions.begin()) return NULL;
    --it;
    if (a + bytes > it->first + it->second.bytes || a < it->first) return NULL;
    if (start) *start = it->first;
    return &it->second;
}

bool is_device(const void *p, size_t bytes) {
    const Region *r = region_find(p, bytes ? bytes : 1, NULL);
    return r && r->kind != REGION_HOST;
}

// ---- streams and events ----

struct Stream {
    unsigned flags;
};
struct Event {
    unsigned flags;
    bool recorded;
    double t;
};

double now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

std::vector<Stream *> streams;
std::vector<Event *> events;

bool stream_ok(cudaStream_t s) {
    return !s || std::find(streams.begin(), streams.end(), (Stream *)s) != streams.end();
}
bool event_ok(cudaEvent_t e) { return e && std::find(events.begin(), events.end(), (Event *)e) != events.end(); }

} // namespace

// ====================================================================================================
// the runtime API
// ====================================================================================================

extern "C" {

const char *cudaGetErrorName(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t e) {
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected (cuemu: ADDC_CUEMU_DEVICES=0)";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNotSupported: return "operation not supported";
    default: return "unknown error";
    }
}

cudaError_t cudaGetLastError(void) {
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return last_error; }

cudaError_t cudaGetDeviceCount(int *n) {
    *n = device_count();
    if (*n == 0) return fail(cudaErrorNoDevice);
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int dev) {
    if (dev < 0 || dev >= device_count()) return fail(cudaErrorInvalidDevice);
    current_device = dev;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *dev) {
    if (device_count() == 0) return fail(cudaErrorNoDevice);
    *dev = current_device;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev) {
    if (dev < 0 || dev >= device_count()) return fail(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cuemu (host emulation of an sm_90 GPU)");
    p->totalGlobalMem = mem_total();
    p->sharedMemPerBlock = 48 << 10;
    p->sharedMemPerBlockOptin = 227 << 10;
    p->sharedMemPerMultiprocessor = 228 << 10;
    p->regsPerBlock = 65536;
    p->warpSize = 32;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsDim[0] = 1024, p->maxThreadsDim[1] = 1024, p->maxThreadsDim[2] = 64;
    p->maxGridSize[0] = 0x7fffffff, p->maxGridSize[1] = 65535, p->maxGridSize[2] = 65535;
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 132;
    p->maxThreadsPerMultiProcessor = 2048;
    p->clockRate = 1980000;
    p->l2CacheSize = 50 << 20;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int dev) {
    cudaDeviceProp p;
    cudaError_t e = cudaGetDeviceProperties(&p, dev);
    if (e != cudaSuccess) return e;
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = p.maxThreadsPerBlock; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)p.sharedMemPerBlock; break;
    case cudaDevAttrWarpSize: *value = p.warpSize; break;
    case cudaDevAttrMultiProcessorCount: *value = p.multiProcessorCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = p.major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = p.minor; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)p.sharedMemPerBlockOptin; break;
    default: return fail(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return device_count() ? cudaSuccess : fail(cudaErrorNoDevice); }

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
    std::lock_guard<std::recursive_mutex> g(mu);
    *total_bytes = mem_total();
    *free_bytes = mem_used < *total_bytes ? *total_bytes - mem_used : 0;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
    std::lock_guard<std::recursive_mutex> g(mu);
    *p = NULL;
    if (device_count() == 0) return fail(cudaErrorNoDevice);
    if (bytes == 0) return cudaSuccess;
    size_t rounded = (bytes + 255) & ~(size_t)255;
    if (mem_used + rounded > mem_total()) return fail(cudaErrorMemoryAllocation);
    void *q = NULL; // exactly `bytes`: under ASan a kernel that runs past the end stops
    if (posix_memalign(&q, 256, bytes) != 0) return fail(cudaErrorMemoryAllocation);
    nan_fill(q, bytes);
    regions[(uintptr_t)q] = Region{bytes, REGION_MALLOC};
    mem_used += rounded;
    *p = q;
    return cudaSuccess;
}

cudaError_t cudaFree(void *p) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!p) return cudaSuccess; // cudaFree(0): initialises the context
    auto it = regions.find((uintptr_t)p);
    if (it == regions.end() || it->second.kind != REGION_MALLOC) return fail(cudaErrorInvalidValue);
    mem_used -= (it->second.bytes + 255) & ~(size_t)255;
    regions.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **p, size_t bytes) {
    std::lock_guard<std::recursive_mutex> g(mu);
    *p = aligned_alloc(256, (bytes + 255) & ~(size_t)255);
    if (!*p) return fail(cudaErrorMemoryAllocation);
    regions[(uintptr_t)*p] = Region{bytes ? bytes : 1, REGION_HOST};
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!p) return cudaSuccess;
    auto it = regions.find((uintptr_t)p);
    if (it == regions.end() || it->second.kind != REGION_HOST) return fail(cudaErrorInvalidValue);
    regions.erase(it);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p) {
    std::lock_guard<std::recursive_mutex> g(mu);
    memset(a, 0, sizeof *a);
    a->device = -2;
    const Region *r = region_find(p, 1, NULL);
    if (!r) {
        a->type = cudaMemoryTypeUnregistered;
        a->hostPointer = (void *)p;
    } else if (r->kind == REGION_HOST) {
        a->type = cudaMemoryTypeHost;
        a->device = current_device;
        a->hostPointer = a->devicePointer = (void *)p;
    } else {
        a->type = cudaMemoryTypeDevice;
        a->device = current_device;
        a->devicePointer = (void *)p;
    }
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
    if (bytes == 0) return cudaSuccess;
    if (kind == cudaMemcpyDefault) kind = (cudaMemcpyKind)((is_device(src, bytes) ? 2 : 0) + (is_device(dst, bytes) ? 1 : 0));
    bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDeviceToDevice) return fail(cudaErrorInvalidMemcpyDirection);
    // the device side must lie in one allocation (a GPU copy past its end faults or corrupts)
    if ((dst_dev && !is_device(dst, bytes)) || (src_dev && !is_device(src, bytes))) return fail(cudaErrorInvalidValue);
    if (!dst_dev && is_device(dst, 1)) return fail(cudaErrorInvalidValue); // wrong direction
    if (!src_dev && is_device(src, 1)) return fail(cudaErrorInvalidValue);
    memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    return cudaMemcpyAsync(dst, src, bytes, kind, 0);
}

cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t s) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
    if (bytes == 0) return cudaSuccess;
    if (!is_device(dst, bytes)) return fail(cudaErrorInvalidValue);
    memset(dst, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemset(void *dst, int value, size_t bytes) { return cudaMemsetAsync(dst, value, bytes, 0); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (device_count() == 0) return fail(cudaErrorNoDevice);
    Stream *st = new Stream{flags};
    streams.push_back(st);
    *s = (cudaStream_t)st;
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t s) {
    std::lock_guard<std::recursive_mutex> g(mu);
    auto it = std::find(streams.begin(), streams.end(), (Stream *)s);
    if (!s || it == streams.end()) return fail(cudaErrorInvalidResourceHandle);
    streams.erase(it);
    delete (Stream *)s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s) {
    std::lock_guard<std::recursive_mutex> g(mu);
    return stream_ok(s) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaStreamQuery(cudaStream_t s) { return cudaStreamSynchronize(s); }

cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!stream_ok(s) || !event_ok(e)) return fail(cudaErrorInvalidResourceHandle);
    (void)flags;
    return cudaSuccess; // everything earlier has run already
}

cudaError_t cudaLaunchHostFunc(cudaStream_t s, cudaHostFn_t fn, void *arg) {
    {
        std::lock_guard<std::recursive_mutex> g(mu);
        if (!stream_ok(s) || !fn) return fail(cudaErrorInvalidResourceHandle);
    }
    fn(arg); // in stream order: now (without the lock: it may wait for another thread)
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (device_count() == 0) return fail(cudaErrorNoDevice);
    Event *ev = new Event{flags, false, 0.0};
    events.push_back(ev);
    *e = (cudaEvent_t)ev;
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }

cudaError_t cudaEventDestroy(cudaEvent_t e) {
    std::lock_guard<std::recursive_mutex> g(mu);
    auto it = std::find(events.begin(), events.end(), (Event *)e);
    if (it == events.end()) return fail(cudaErrorInvalidResourceHandle);
    events.erase(it);
    delete (Event *)e;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!event_ok(e) || !stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
    Event *ev = (Event *)e;
    ev->recorded = true;
    ev->t = now_ms();
    return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t e) {
    std::lock_guard<std::recursive_mutex> g(mu);
    return event_ok(e) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventSynchronize(cudaEvent_t e) { return cudaEventQuery(e); }

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!event_ok(start) || !event_ok(end)) return fail(cudaErrorInvalidResourceHandle);
    Event *a = (Event *)start, *b = (Event *)end;
    // as on the device: timing needs two recorded events without cudaEventDisableTiming
    if ((a->flags | b->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
    if (!a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle);
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}

} // extern "C"

// ====================================================================================================
// the kernel executor
// ====================================================================================================

namespace {

// ---- coroutines: a minimal context switch (x86-64: the callee-saved registers; the kernels never
// change the floating-point control words, so MXCSR and the x87 control word are not switched)
#if defined(__x86_64__)
extern "C" void cuemu_ctx_swap(void **save_sp, void *new_sp);
asm(R"(
    .text
    .globl cuemu_ctx_swap
    .type cuemu_ctx_swap,@function
cuemu_ctx_swap:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cuemu_ctx_swap, .-cuemu_ctx_swap
    .section .note.GNU-stack,"",@progbits
    .text
)");
struct Ctx {
    void *sp;
};
void ctx_init(Ctx *c, char *stack, size_t size, void (*entry)(void)) {
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = NULL;          // never returned to; keeps entry's stack aligned as after a call
    *--sp = (void *)entry; // where the first switch "returns"
    for (int i = 0; i < 6; i++) *--sp = NULL; // rbp rbx r12 r13 r14 r15
    c->sp = sp;
}
void ctx_switch(Ctx *from, Ctx *to) { cuemu_ctx_swap(&from->sp, to->sp); }
#else
struct Ctx {
    ucontext_t uc;
};
void ctx_init(Ctx *c, char *stack, size_t size, void (*entry)(void)) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, entry, 0);
}
void ctx_switch(Ctx *from, Ctx *to) { swapcontext(&from->uc, &to->uc); }
#endif

enum ThreadState { T_NEW, T_RUN, T_BARRIER, T_WARP, T_DONE };

struct Thread {
    Ctx ctx;
    int stack; // index into Exec::stacks while started and not done; -1: none
    ThreadState state;
    unsigned syncs;
    uint3 idx;
    // at a warp primitive
    unsigned mask;
    uint64_t offer, result;
    int src;
    const char *what;
};

struct Exec {
    const char *name, *file;
    int line;
    dim3 grid, block;
    unsigned nthreads;
    size_t smem;
    void (*body)(void *);
    void *arg;
    std::vector<Thread> th;
    std::vector<char *> stacks;      // thread stacks (a guard page below each)
    std::vector<int> free_stacks;    // LIFO: a thread that ends hands its (warm) stack to the next
    size_t stack_bytes;
    Ctx sched;
    int cur;
    unsigned n_done, n_bar, n_warp;  // threads of the block in each state
    std::vector<unsigned> warp_wait; // per warp: lanes at a warp primitive
    unsigned char *dyn;              // dynamic shared memory of the block (256-byte aligned)
    size_t dyn_cap;
    std::vector<unsigned> ord;       // the phase's thread order
    unsigned pos;                    // the scheduler's place in ord
    std::mt19937_64 rng;
    int order;
} X;

bool exec_ready = false;

// Thread setup when it starts (on the stack of the runner that starts it).
void thread_start(unsigned t, int stack) {
    Thread &th = X.th[t];
    th.state = T_RUN;
    th.stack = stack;
    X.cur = (int)t;
    threadIdx = th.idx;
}

// A runner coroutine: runs the thread the scheduler started it for, then, as long as the next
// thread of the phase order has not started, that one too on the same stack (a thread that never
// waits costs a function call); it ends when a thread it runs waits (the scheduler resumes that
// thread later, in this coroutine) or the next thread has started already.
void runner_entry(void) {
    for (;;) {
        X.body(X.arg);
        Thread &t = X.th[X.cur];
        t.state = T_DONE;
        X.n_done++;
        int stack = t.stack;
        t.stack = -1;
        unsigned n = X.nthreads;
        if (X.pos + 1 < n && X.th[X.ord[X.pos + 1]].state == T_NEW) {
            X.pos++;
            thread_start(X.ord[X.pos], stack);
            continue;
        }
        X.free_stacks.push_back(stack);
        Ctx dead;
        ctx_switch(&dead, &X.sched); // never resumed: the stack is reused
        die("a finished runner was resumed");
    }
}

const char *kernel_where() {
    static thread_local char buf[512];
    snprintf(buf, sizeof buf, "kernel %s (launched at %s:%d) block (%u,%u,%u)", X.name, X.file, X.line, blockIdx.x,
             blockIdx.y, blockIdx.z);
    return buf;
}

void exec_init() {
    if (exec_ready) return;
    X.stack_bytes = (size_t)env_long("CUEMU_STACK_KIB", 256) << 10;
    X.rng.seed((uint64_t)env_long("CUEMU_SEED", 1));
    exec_ready = true;
}

// CUEMU_ORDER, read at every launch (a program may change it between launches)
void order_read() {
    X.order = (int)env_long("CUEMU_ORDER", 0);
    if (X.order < 0 || X.order > 2) die("CUEMU_ORDER=%d: expected 0 (in order), 1 (reversed) or 2 (shuffled)", X.order);
}

// a stack for a thread that starts: the last one freed, or a new one (a guard page below it; pages
// are committed as touched)
int stack_get() {
    if (!X.free_stacks.empty()) {
        int s = X.free_stacks.back();
        X.free_stacks.pop_back();
        return s;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE), total = X.stack_bytes + page;
    char *m = (char *)mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) die("no memory for a thread stack (%zu bytes): %s", total, strerror(errno));
    if (mprotect(m, page, PROT_NONE) != 0) die("mprotect of a stack guard page: %s", strerror(errno));
    X.stacks.push_back(m + page);
    return (int)X.stacks.size() - 1;
}

void run_block() {
    const unsigned n = X.nthreads, nwarps = (n + 31) / 32;
    for (unsigned t = 0; t < n; t++) {
        Thread &th = X.th[t];
        th.state = T_NEW;
        th.stack = -1;
        th.syncs = 0;
        th.idx = X.block.y == 1 && X.block.z == 1
                     ? uint3{t, 0, 0}
                     : uint3{t % X.block.x, t / X.block.x % X.block.y, t / (X.block.x * X.block.y)};
    }
    X.n_done = X.n_bar = X.n_warp = 0;
    X.warp_wait.assign(nwarps, 0);
    if (X.smem) nan_fill(X.dyn, X.smem);
    for (;;) {
        if (X.order == 2) std::shuffle(X.ord.begin(), X.ord.end(), X.rng);
        for (X.pos = 0; X.pos < n; X.pos++) { // runners may advance X.pos
            unsigned t = X.ord[X.pos];
            Thread &th = X.th[t];
            if (th.state == T_NEW) {
                int stack = stack_get();
                ctx_init(&th.ctx, X.stacks[stack], X.stack_bytes, runner_entry);
                thread_start(t, stack);
            } else if (th.state == T_RUN) {
                X.cur = (int)t;
                threadIdx = th.idx;
            } else {
                continue;
            }
            ctx_switch(&X.sched, &th.ctx);
        }
        if (X.n_done == n) break;
        bool released = false;
        for (unsigned w = 0; X.n_warp > 0 && w < nwarps; w++) {
            unsigned lo = w * 32, hi = std::min(n, lo + 32), at_warp = X.warp_wait[w];
            if (at_warp == 0) continue;
            if (at_warp != hi - lo) {
                unsigned tw = lo;
                while (X.th[tw].state != T_WARP) tw++;
                for (unsigned t = lo; t < hi; t++)
                    if (X.th[t].state == T_DONE)
                        die("%s: thread %u waits in %s while thread %u of its warp has exited (every lane of the "
                            "mask must take part)",
                            kernel_where(), tw, X.th[tw].what, t);
                continue; // the others wait at a barrier: a deadlock, reported below
            }
            if (hi - lo != 32)
                die("%s: %s in a warp of %u threads (the block size is not a multiple of 32)", kernel_where(),
                    X.th[lo].what, hi - lo);
            for (unsigned t = lo; t < hi; t++) {
                Thread &th = X.th[t];
                if (th.mask != 0xffffffffu)
                    die("%s: %s with mask 0x%08x: only full-warp masks are emulated", kernel_where(), th.what, th.mask);
                if (strcmp(th.what, X.th[lo].what) != 0)
                    die("%s: the lanes of a warp meet at different warp primitives (%s, %s)", kernel_where(), th.what,
                        X.th[lo].what);
                th.result = X.th[lo + (unsigned)th.src].offer;
            }
            for (unsigned t = lo; t < hi; t++) X.th[t].state = T_RUN;
            X.warp_wait[w] = 0;
            X.n_warp -= hi - lo;
            released = true;
        }
        if (released) continue;
        if (X.n_bar > 0) {
            if (X.n_bar + X.n_done != n) {
                unsigned tw = 0, tb = 0;
                while (X.th[tw].state != T_WARP) tw++;
                while (X.th[tb].state != T_BARRIER) tb++;
                die("%s: deadlock: thread %u waits at __syncthreads while thread %u waits in %s", kernel_where(), tb, tw,
                    X.th[tw].what);
            }
            if (X.n_done > 0) {
                unsigned td = 0, tb = 0;
                while (X.th[td].state != T_DONE) td++;
                while (X.th[tb].state != T_BARRIER) tb++;
                die("%s: divergent barrier: thread %u exited while thread %u waits at its __syncthreads #%u",
                    kernel_where(), td, tb, X.th[tb].syncs);
            }
            unsigned s0 = X.th[0].syncs;
            for (unsigned t = 1; t < n; t++)
                if (X.th[t].syncs != s0)
                    die("%s: divergent barrier: thread 0 waits at its __syncthreads #%u, thread %u at its #%u",
                        kernel_where(), s0, t, X.th[t].syncs);
            for (unsigned t = 0; t < n; t++) X.th[t].state = T_RUN;
            X.n_bar = 0;
            continue;
        }
        die("%s: no thread can go on", kernel_where());
    }
    for (unsigned t = 1; t < n; t++)
        if (X.th[t].syncs != X.th[0].syncs)
            die("%s: divergent barrier: thread 0 passed %u __syncthreads, thread %u %u", kernel_where(), X.th[0].syncs,
                t, X.th[t].syncs);
}

// dynamic shared memory limits set by cudaFuncSetAttribute, by kernel
std::map<const void *, int> smem_limit;

} // namespace

void cuemu_syncthreads(void) {
    Thread &t = X.th[X.cur];
    t.syncs++;
    t.state = T_BARRIER;
    X.n_bar++;
    ctx_switch(&t.ctx, &X.sched);
    threadIdx = t.idx;
}

uint64_t cuemu_shuffle(unsigned mask, uint64_t bits, int src, const char *what) {
    Thread &t = X.th[X.cur];
    t.mask = mask;
    t.offer = bits;
    t.src = src < 0 || src >= 32 ? (int)(X.cur & 31) : src;
    t.what = what;
    t.state = T_WARP;
    X.n_warp++;
    X.warp_wait[(unsigned)X.cur / 32]++;
    ctx_switch(&t.ctx, &X.sched);
    threadIdx = t.idx;
    return t.result;
}

void cuemu_launch_bounds(unsigned max_threads) {
    if (X.nthreads > max_threads)
        die("%s: launched with %u threads per block over its __launch_bounds__(%u) (the GPU refuses the launch: "
            "too many resources requested)",
            kernel_where(), X.nthreads, max_threads);
}

void *cuemu_dynamic_smem(void) { return X.smem ? (void *)X.dyn : NULL; }

void cuemu_wmma_check(const void *p, unsigned ldm, unsigned elem_bytes, const char *what) {
    if ((uintptr_t)p % 32 || (ldm * elem_bytes) % 16)
        die("%s: wmma::%s(%p, ldm %u): the pointer must be 256-bit aligned and ldm a multiple of 16 bytes",
            kernel_where(), what, p, ldm);
}

extern "C" cudaError_t cuemu_func_set_attribute(const void *func, cudaFuncAttribute attr, int value) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!func) return fail(cudaErrorInvalidValue);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > (227 << 10)) return fail(cudaErrorInvalidValue);
        smem_limit[func] = value;
        return cudaSuccess;
    }
    if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
    return fail(cudaErrorInvalidValue);
}

bool cuemu::launch_run(const char *name, const void *fn, const char *file, int line, dim3 grid, dim3 block, size_t smem,
                       cudaStream_t stream, void (*body)(void *), void *arg) {
    std::lock_guard<std::recursive_mutex> g(mu);
    exec_init();
    order_read();
    if (device_count() == 0) {
        fail(cudaErrorNoDevice);
        return false;
    }
    if (!stream_ok(stream)) {
        fail(cudaErrorInvalidResourceHandle);
        return false;
    }
    uint64_t nt = (uint64_t)block.x * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 || nt > 1024 ||
        grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        fail(cudaErrorInvalidConfiguration);
        return false;
    }
    auto lim = smem_limit.find(fn);
    size_t limit = lim == smem_limit.end() ? (48u << 10) : (size_t)std::max(lim->second, 48 << 10);
    if (smem > limit) {
        fail(cudaErrorInvalidValue);
        return false;
    }
    if (X.body) die("kernel %s launched from inside kernel %s", name, X.name);
    X.name = name;
    X.file = file;
    X.line = line;
    X.grid = grid;
    X.block = block;
    X.nthreads = (unsigned)nt;
    X.smem = smem;
    X.body = body;
    X.arg = arg;
    if (X.dyn_cap < smem) {
        free(X.dyn);
        X.dyn_cap = (smem + 255) & ~(size_t)255;
        X.dyn = (unsigned char *)aligned_alloc(256, X.dyn_cap);
        if (!X.dyn) die("no memory for %zu bytes of dynamic shared memory", smem);
    }
    if (X.th.size() < X.nthreads) X.th.resize(X.nthreads);
    X.ord.resize(X.nthreads);
    for (unsigned t = 0; t < X.nthreads; t++) X.ord[t] = X.order == 1 ? X.nthreads - 1 - t : t;
    gridDim = grid;
    blockDim = block;
    uint64_t nb = (uint64_t)grid.x * grid.y * grid.z;
    if (X.order == 0) {
        for (uint64_t b = 0; b < nb; b++) {
            blockIdx = uint3{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / ((uint64_t)grid.x * grid.y))};
            run_block();
        }
    } else {
        std::vector<uint64_t> ord(nb);
        for (uint64_t b = 0; b < nb; b++) ord[b] = b;
        if (X.order == 1) std::reverse(ord.begin(), ord.end());
        else std::shuffle(ord.begin(), ord.end(), X.rng);
        for (uint64_t b : ord) {
            blockIdx = uint3{(unsigned)(b % grid.x), (unsigned)(b / grid.x % grid.y), (unsigned)(b / ((uint64_t)grid.x * grid.y))};
            run_block();
        }
    }
    X.body = NULL;
    X.arg = NULL;
    return true;
}

// ====================================================================================================
// driver: virtual memory management
// ====================================================================================================

namespace {

const size_t VMM_GRAN = 2u << 20;

struct Reservation {
    size_t bytes;
    void *map_base; // what mmap returned (the reservation is aligned inside it)
    size_t map_bytes;
};
std::map<uintptr_t, Reservation> reservations;

struct PhysAlloc {
    int fd;
    size_t bytes;
    int maps;      // live mappings
    bool released; // cuMemRelease called
};
std::map<CUmemGenericAllocationHandle, PhysAlloc> phys;
CUmemGenericAllocationHandle next_handle = 1;

struct Mapping {
    size_t bytes;
    CUmemGenericAllocationHandle h;
    bool access;
};
std::map<uintptr_t, Mapping> mappings;

bool in_reservation(uintptr_t a, size_t bytes) {
    auto it = reservations.upper_bound(a);
    if (it == reservations.begin()) return false;
    --it;
    return a >= it->first && a + bytes <= it->first + it->second.bytes;
}

bool overlaps_mapping(uintptr_t a, size_t bytes) {
    for (auto &m : mappings)
        if (a < m.first + m.second.bytes && m.first < a + bytes) return true;
    return false;
}

void phys_drop(CUmemGenericAllocationHandle h) {
    auto it = phys.find(h);
    if (it != phys.end() && it->second.released && it->second.maps == 0) {
        close(it->second.fd);
        mem_used -= it->second.bytes;
        phys.erase(it);
    }
}

extern "C" CUresult emu_cuGetErrorString(CUresult r, const char **s) {
    switch (r) {
    case CUDA_SUCCESS: *s = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "invalid argument"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "out of memory"; break;
    case CUDA_ERROR_INVALID_DEVICE: *s = "invalid device ordinal"; break;
    case CUDA_ERROR_INVALID_HANDLE: *s = "invalid resource handle"; break;
    case CUDA_ERROR_NOT_FOUND: *s = "named symbol not found"; break;
    case CUDA_ERROR_NOT_PERMITTED: *s = "operation not permitted"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *s = "operation not supported"; break;
    default: *s = NULL; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

bool prop_ok(const CUmemAllocationProp *p) {
    return p && p->type == CU_MEM_ALLOCATION_TYPE_PINNED && p->location.type == CU_MEM_LOCATION_TYPE_DEVICE &&
           p->location.id >= 0 && p->location.id < device_count();
}

extern "C" CUresult emu_cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *prop,
                                                      CUmemAllocationGranularity_flags option) {
    (void)option;
    if (!g || !prop_ok(prop)) return CUDA_ERROR_INVALID_VALUE;
    *g = VMM_GRAN;
    return CUDA_SUCCESS;
}

extern "C" CUresult emu_cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                            unsigned long long flags) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!ptr || size == 0 || size % VMM_GRAN || flags != 0) return CUDA_ERROR_INVALID_VALUE;
    (void)addr; // a hint only
    if (alignment == 0) alignment = VMM_GRAN;
    if (alignment & (alignment - 1)) return CUDA_ERROR_INVALID_VALUE;
    size_t total = size + alignment;
    void *m = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    uintptr_t base = ((uintptr_t)m + alignment - 1) & ~(uintptr_t)(alignment - 1);
    reservations[base] = Reservation{size, m, total};
    *ptr = (CUdeviceptr)base;
    return CUDA_SUCCESS;
}

extern "C" CUresult emu_cuMemAddressFree(CUdeviceptr ptr, size_t size) {
    std::lock_guard<std::recursive_mutex> g(mu);
    auto it = reservations.find((uintptr_t)ptr);
    if (it == reservations.end() || it->second.bytes != size) return CUDA_ERROR_INVALID_VALUE;
    if (overlaps_mapping((uintptr_t)ptr, size)) return CUDA_ERROR_INVALID_VALUE; // still mapped
    munmap(it->second.map_base, it->second.map_bytes);
    reservations.erase(it);
    return CUDA_SUCCESS;
}

extern "C" CUresult emu_cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
                                    unsigned long long flags) {
    std::lock_guard<std::recursive_mutex> g(mu);
    if (!h || size == 0 || size % VMM_GRAN || flags != 0 || !prop_ok(prop)) return CUDA_ERROR_INVALID_VALUE;
    if (mem_used + size > mem_total()) return CUDA_ERROR_OUT_OF_MEMORY;
    int fd = memfd_create("cuemu-vmm", MFD_CLOEXEC);
    if (fd < 0) return CUDA_ERROR_OUT_OF_MEMORY;
    if (ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        close(fd);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    nan_fill(m, size); // contents undefined: show it
    munmap(m, size);
    *h = next_handle++;
    phys[*h] = PhysAlloc{fd, size, 0, false};
    mem_used += size;
    return CUDA_SUCCESS;
}

extern "C" CUresult emu_cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h,
                                 unsigned long long flags) {
    std::lock_guard<std::recursive_mutex> g(mu);
    auto it = phys.find(h);
    if (it == phys.end() || it->second.released) return CUDA_ERROR_INVALID_HANDLE;
    uintptr_t a = (uintptr_t)ptr;
    if (flags != 0 || size == 0 || a % VMM_GRAN || size % VMM_GRAN || offset % VMM_GRAN ||
        offset + size > it->second.bytes)
        return CUDA_ERROR_INVALID_VALUE;
    if (!in_reservation(a, size) || overlaps_mapping(a, size)) return CUDA_ERROR_INVALID_VALUE;
    void *m = mmap((void *)a, size, PROT_NONE, MAP_SHARED | MAP_FIXED, it->second.fd, (off_t)offset);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    mappings[a] = Mapping{size, h, false};
    it->second.maps++;
    return CUDA_SUCCESS;
}

extern "C" CUresult emu_cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count) {
    std::lock_guard<std::recursive_mutex> g(mu);
    uintptr_t a = (uintptr_t)ptr;
    if (!desc || count == 0 || size == 0) return CUDA_ERROR_INVALID_VALUE;
    // the range must be covered by mappings, end to end
    for (uintptr_t p = a; p < a + size;) {
        auto m = mappings.find(p);
        if (m == mappings.end()) return CUDA_ERROR_INVALID_VALUE;
        p += m->second.bytes;
        if (p > a + size) return CUDA_ERROR_INVALID_VALUE;
    }
    int prot = PROT_NONE;
    for (size_t i = 0; i < count; i++) {
        if (desc[i].location.type != CU_MEM_LOCATION_TYPE_DEVICE || desc[i].location.id < 0 ||
            desc[i].location.id >= device_count())
            return CUDA_ERROR_INVALID_DEVICE;
        if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE) prot = PROT_READ | PROT_WRITE;
        else if (desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READ) prot = PROT_READ;
    }
    if (mprotect((void *)a, size, prot) != 0) return CUDA_ERROR_INVALID_VALUE;
    for (uintptr_t p = a; p < a + size;) {
        Mapping &m = mappings[p];
        m.access = prot != PROT_NONE;
        if (m.access) regions[p] = Region{m.bytes, REGION_VMM};
        else regions.erase(p);
        p += m.bytes;
    }
    return CUDA_SUCCESS;
}

extern "C" CUresult emu_cuMemUnmap(CUdeviceptr ptr, size_t size) {
    std::lock_guard<std::recursive_mutex> g(mu);
    uintptr_t a = (uintptr_t)ptr;
    if (size == 0) return CUDA_ERROR_INVALID_VALUE;
    std::vector<uintptr_t> gone;
    for (uintptr_t p = a; p < a + size;) { // whole mappings only
        auto m = mappings.find(p);
        if (m == mappings.end()) return CUDA_ERROR_INVALID_VALUE;
        gone.push_back(p);
        p += m->second.bytes;
        if (p > a + size) return CUDA_ERROR_INVALID_VALUE;
    }
    for (uintptr_t p : gone) {
        Mapping m = mappings[p];
        void *r = mmap((void *)p, m.bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
        if (r == MAP_FAILED) die("cuMemUnmap: mmap: %s", strerror(errno));
        mappings.erase(p);
        regions.erase(p);
        phys[m.h].maps--;
        phys_drop(m.h);
    }
    return CUDA_SUCCESS;
}

extern "C" CUresult emu_cuMemRelease(CUmemGenericAllocationHandle h) {
    std::lock_guard<std::recursive_mutex> g(mu);
    auto it = phys.find(h);
    if (it == phys.end() || it->second.released) return CUDA_ERROR_INVALID_HANDLE;
    it->second.released = true;
    phys_drop(h);
    return CUDA_SUCCESS;
}

} // namespace

extern "C" cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned version,
                                                        unsigned long long flags,
                                                        cudaDriverEntryPointQueryResult *status) {
    static const struct {
        const char *name;
        void *fn;
    } table[] = {
        {"cuGetErrorString", (void *)emu_cuGetErrorString},
        {"cuMemGetAllocationGranularity", (void *)emu_cuMemGetAllocationGranularity},
        {"cuMemAddressReserve", (void *)emu_cuMemAddressReserve},
        {"cuMemAddressFree", (void *)emu_cuMemAddressFree},
        {"cuMemCreate", (void *)emu_cuMemCreate},
        {"cuMemMap", (void *)emu_cuMemMap},
        {"cuMemSetAccess", (void *)emu_cuMemSetAccess},
        {"cuMemUnmap", (void *)emu_cuMemUnmap},
        {"cuMemRelease", (void *)emu_cuMemRelease},
    };
    (void)flags;
    *fn = NULL;
    if (device_count() == 0) return fail(cudaErrorNoDevice);
    if (version > CUDART_VERSION) {
        if (status) *status = cudaDriverEntryPointVersionNotSufficent;
        return cudaSuccess;
    }
    for (auto &t : table)
        if (!strcmp(t.name, symbol)) {
            *fn = t.fn;
            if (status) *status = cudaDriverEntryPointSuccess;
            return cudaSuccess;
        }
    if (status) *status = cudaDriverEntryPointSymbolNotFound;
    return cudaSuccess;
}

// ---- shared with cublaslt.cpp and nccl.cpp (cuemu_internal.h) ----

bool cuemu_is_device(const void *p, size_t bytes) {
    std::lock_guard<std::recursive_mutex> g(mu);
    return is_device(p, bytes);
}

void cuemu_die(const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    die("%s", buf);
}

long cuemu_env_long(const char *name, long dflt) { return env_long(name, dflt); }
