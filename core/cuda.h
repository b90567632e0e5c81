/* core/cuda: the CUDA device slot of the tensor core, as plain C.
 *
 * The kernels live in the .cu files of core/cuda/ (compiled as C++ by nvcc, exported extern "C");
 * this header is all the C side sees. Without nvcc at build time (ADDC_HAVE_CUDA undefined) the same
 * functions exist and report that CUDA was not built, so callers need no #ifdefs.
 *
 * Memory: every device byte comes from one of a few categories (parameters, gradients, optimizer
 * state, activations, workspace, communication). Each category counts its live and peak bytes;
 * activations come from a device Arena (core/arena.h, arena_init_device) whose blocks are kept
 * across steps, so after the first step the training loop calls no cudaMalloc.
 * Execution: one compute stream per process (cuda_stream()) on which every op kernel, copy and
 * memset of this header is issued in order; copies to the host synchronise it. A second stream
 * (cuda_comm_stream()) carries collectives; events order the two.
 * Poisoning (tests): with cuda_poison_set(true) every activation-arena allocation is filled with
 * NaN before it is handed out, so an element a kernel forgot to write shows in the result. */
#ifndef ADDC_CORE_CUDA_H
#define ADDC_CORE_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

/* Number of usable CUDA devices (0 when built without CUDA, no driver or no GPU). Never
 * fails: the reason for 0 is available from cuda_unavailable_reason(). */
int cuda_device_count(void);
const char *cuda_unavailable_reason(void);
/* "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" into buf */
Status cuda_device_describe(int dev, char *buf, int cap);
/* Selects the device of this process (rank-local index) and creates its streams. Called once;
 * the other calls below call it with device 0 when it was not. */
Status cuda_init(int dev);

typedef enum CudaMemCategory {
    CUDA_MEM_PARAMS = 0, /* weights (fp32 masters, bf16 copies) */
    CUDA_MEM_GRADS,      /* parameter gradients */
    CUDA_MEM_OPTIM,      /* AdamW moments, EMA */
    CUDA_MEM_ACTIVATIONS,/* step arenas: activations, saved tensors, activation gradients */
    CUDA_MEM_WORKSPACE,  /* cuBLASLt / cuDNN workspaces, reduction scratch */
    CUDA_MEM_COMM,       /* gathered FSDP units, reduce-scatter buffers */
    CUDA_MEM_COUNT
} CudaMemCategory;
const char *cuda_mem_category_name(CudaMemCategory cat);

/* Device memory of a category (256-byte aligned). cuda_mem_free takes the size it was allocated
 * with (for the counters). */
Status cuda_mem_alloc(CudaMemCategory cat, void **p, size_t bytes);
Status cuda_mem_free(CudaMemCategory cat, void *p, size_t bytes);
/* Live and peak bytes of a category. */
int64_t cuda_mem_live(CudaMemCategory cat);
int64_t cuda_mem_peak(CudaMemCategory cat);
/* "params 1.2 GiB (peak 1.2 GiB), grads ..." into buf; returns buf. */
char *cuda_mem_report(char *buf, int cap);

/* Plain allocation (category workspace), kept for callers that predate the categories. */
Status cuda_malloc(void **p, size_t bytes);
Status cuda_free(void *p);

/* Copies and fills on the compute stream. The to-host copy synchronises the stream before it
 * returns (the data is there); to-device and device-to-device copies are asynchronous with
 * respect to the host but ordered on the stream (the source host buffer must stay valid until
 * the next synchronising call: pass pinned or long-lived memory, or call cuda_synchronize). */
Status cuda_copy_to_device(void *dst, const void *src, size_t bytes);
Status cuda_copy_to_host(void *dst, const void *src, size_t bytes);
Status cuda_copy_device(void *dst, const void *src, size_t bytes);
Status cuda_memset(void *dst, int byte, size_t bytes);
/* Fills n f32 elements of device memory with `value` (poisoning outputs before op tests). */
Status cuda_fill_f32(float *dst, int64_t n, float value);
/* Converts n elements between f32 and bf16 (either direction, or same dtype = copy) on the
 * device, round to nearest even as core/dtype.h. */
Status cuda_convert(void *dst, DType dst_dt, const void *src, DType src_dt, int64_t n);
/* Waits for all work of this process on the device. */
Status cuda_synchronize(void);

/* Streams and events, as opaque handles (cudaStream_t / cudaEvent_t). */
void *cuda_stream(void);      /* compute stream */
void *cuda_comm_stream(void); /* collectives (NCCL) */
Status cuda_event_create(void **ev);
Status cuda_event_destroy(void *ev);
Status cuda_event_record(void *ev, void *stream);
Status cuda_stream_wait_event(void *stream, void *ev);
Status cuda_event_synchronize(void *ev);
Status cuda_event_elapsed_ms(void *start, void *end, float *ms);

/* Optimizer updates over flat device f32 buffers (core/cuda/optim.cu), one fused kernel each:
 * AdamW with PyTorch semantics as adamw_update (core/ops.h: decoupled weight decay, bias
 * correction with `step` counted from 1), and ema = decay * ema + (1 - decay) * param. */
Status cuda_adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, double lr, double beta1,
                         double beta2, double eps, double weight_decay, int64_t step);
Status cuda_ema_update(float *ema, const float *param, int64_t n, double decay);

/* Test poisoning of activation-arena allocations (see the top of the file). */
void cuda_poison_set(bool on);
bool cuda_poison_enabled(void);

/* Deterministic sums over device f32 buffers (fixed tree order: the same bits every run):
 * *out (host) = sum of squares of x[0..n), accumulated in double. */
Status cuda_sum_squares(const float *x, int64_t n, double *out);
/* x[i] *= s for n elements (gradient clipping). */
Status cuda_scale_f32(float *x, int64_t n, float s);
/* y[i] += alpha * x[i] for n f32 elements (gradient seeds, accumulation). */
Status cuda_axpy_f32(float *y, const float *x, int64_t n, float alpha);
/* Exchanges n f32 elements of two device buffers (the EMA and the weights, to save the EMA). */
Status cuda_swap_f32(float *a, float *b, int64_t n);
/* memmove on the device (dst below src, regions may overlap): copied front to back in pieces no
 * longer than the distance, so no piece overlaps its source. */
Status cuda_move_down(void *dst, const void *src, size_t bytes);

/* Reserved device address space with stable addresses (the CUDA virtual memory API; FSDP's
 * sharded stores, distributed/fsdp.c). cuda_va_reserve reserves `bytes` rounded up to the
 * allocation granularity of the current device (*granularity, may be NULL), with no memory behind
 * it. cuda_va_map backs [addr, addr + bytes) (both multiples of the granularity, inside a
 * reservation, not mapped yet) with a new physical allocation, read/write for this device, counted
 * in category `cat`; its contents are undefined. cuda_va_unmap gives back exactly one range an
 * earlier cuda_va_map mapped (same address and size; `cat` as mapped): it waits for the compute
 * stream first, so kernels already enqueued on it may still use the range, but nothing on another
 * stream may. cuda_va_free ends a reservation (bytes as reserved) whose ranges are all unmapped. */
Status cuda_va_reserve(void **base, size_t bytes, size_t *granularity);
Status cuda_va_map(void *addr, size_t bytes, CudaMemCategory cat);
Status cuda_va_unmap(void *addr, size_t bytes, CudaMemCategory cat);
Status cuda_va_free(void *base, size_t bytes);

#endif
