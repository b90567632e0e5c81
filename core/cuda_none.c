/* core/cuda_none: core/cuda.h when addc is built without nvcc. Every call reports that CUDA
 * was not built, so the CPU build needs no #ifdefs around CUDA calls. */
#ifndef ADDC_HAVE_CUDA
#include <stdio.h>

#include "core/cuda.h"

#define NO_CUDA addc_error_set(ADDC_ERR_UNSUPPORTED, "addc was built without CUDA (nvcc not found at configure time)")

int cuda_device_count(void) { return 0; }
const char *cuda_unavailable_reason(void) { return "addc was built without CUDA"; }
Status cuda_device_describe(int dev, char *buf, int cap) {
    (void)dev;
    if (cap > 0) buf[0] = 0;
    return NO_CUDA;
}
Status cuda_init(int dev) {
    (void)dev;
    return NO_CUDA;
}
const char *cuda_mem_category_name(CudaMemCategory cat) {
    static const char *const names[CUDA_MEM_COUNT] = {"params", "grads", "optim", "activations", "workspace", "comm"};
    return (cat >= 0 && cat < CUDA_MEM_COUNT) ? names[cat] : "?";
}
Status cuda_mem_alloc(CudaMemCategory cat, void **p, size_t bytes) {
    (void)cat, (void)bytes;
    *p = NULL;
    return NO_CUDA;
}
Status cuda_mem_free(CudaMemCategory cat, void *p, size_t bytes) {
    (void)cat, (void)bytes;
    return p ? NO_CUDA : ADDC_OK;
}
int64_t cuda_mem_live(CudaMemCategory cat) { (void)cat; return 0; }
int64_t cuda_mem_peak(CudaMemCategory cat) { (void)cat; return 0; }
char *cuda_mem_report(char *buf, int cap) {
    if (cap > 0) snprintf(buf, (size_t)cap, "no CUDA");
    return buf;
}
Status cuda_malloc(void **p, size_t bytes) {
    (void)bytes;
    *p = NULL;
    return NO_CUDA;
}
Status cuda_free(void *p) { return p ? NO_CUDA : ADDC_OK; }
Status cuda_copy_to_device(void *dst, const void *src, size_t bytes) {
    (void)dst, (void)src, (void)bytes;
    return NO_CUDA;
}
Status cuda_copy_to_host(void *dst, const void *src, size_t bytes) {
    (void)dst, (void)src, (void)bytes;
    return NO_CUDA;
}
Status cuda_copy_device(void *dst, const void *src, size_t bytes) {
    (void)dst, (void)src, (void)bytes;
    return NO_CUDA;
}
Status cuda_memset(void *dst, int byte, size_t bytes) {
    (void)dst, (void)byte, (void)bytes;
    return NO_CUDA;
}
Status cuda_fill_f32(float *dst, int64_t n, float value) {
    (void)dst, (void)n, (void)value;
    return NO_CUDA;
}
Status cuda_convert(void *dst, DType dst_dt, const void *src, DType src_dt, int64_t n) {
    (void)dst, (void)dst_dt, (void)src, (void)src_dt, (void)n;
    return NO_CUDA;
}
Status cuda_synchronize(void) { return NO_CUDA; }
void *cuda_stream(void) { return NULL; }
void *cuda_comm_stream(void) { return NULL; }
Status cuda_event_create(void **ev) {
    *ev = NULL;
    return NO_CUDA;
}
Status cuda_event_destroy(void *ev) { return ev ? NO_CUDA : ADDC_OK; }
Status cuda_event_record(void *ev, void *stream) {
    (void)ev, (void)stream;
    return NO_CUDA;
}
Status cuda_stream_wait_event(void *stream, void *ev) {
    (void)ev, (void)stream;
    return NO_CUDA;
}
Status cuda_event_synchronize(void *ev) {
    (void)ev;
    return NO_CUDA;
}
Status cuda_event_elapsed_ms(void *start, void *end, float *ms) {
    (void)start, (void)end;
    *ms = 0;
    return NO_CUDA;
}
Status cuda_adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, double lr, double beta1,
                         double beta2, double eps, double weight_decay, int64_t step) {
    (void)param, (void)grad, (void)m, (void)v, (void)n, (void)lr, (void)beta1, (void)beta2, (void)eps,
        (void)weight_decay, (void)step;
    return NO_CUDA;
}
Status cuda_ema_update(float *ema, const float *param, int64_t n, double decay) {
    (void)ema, (void)param, (void)n, (void)decay;
    return NO_CUDA;
}
void cuda_poison_set(bool on) { (void)on; }
bool cuda_poison_enabled(void) { return false; }
Status cuda_sum_squares(const float *x, int64_t n, double *out) {
    (void)x, (void)n;
    *out = 0;
    return NO_CUDA;
}
Status cuda_scale_f32(float *x, int64_t n, float s) {
    (void)x, (void)n, (void)s;
    return NO_CUDA;
}
Status cuda_axpy_f32(float *y, const float *x, int64_t n, float alpha) {
    (void)y, (void)x, (void)n, (void)alpha;
    return NO_CUDA;
}
Status cuda_swap_f32(float *a, float *b, int64_t n) {
    (void)a, (void)b, (void)n;
    return NO_CUDA;
}
Status cuda_move_down(void *dst, const void *src, size_t bytes) {
    (void)dst, (void)src, (void)bytes;
    return NO_CUDA;
}
Status cuda_va_reserve(void **base, size_t bytes, size_t *granularity) {
    (void)bytes;
    *base = NULL;
    if (granularity) *granularity = 0;
    return NO_CUDA;
}
Status cuda_va_map(void *addr, size_t bytes, CudaMemCategory cat) {
    (void)addr, (void)bytes, (void)cat;
    return NO_CUDA;
}
Status cuda_va_unmap(void *addr, size_t bytes, CudaMemCategory cat) {
    (void)addr, (void)bytes, (void)cat;
    return NO_CUDA;
}
Status cuda_va_free(void *base, size_t bytes) {
    (void)bytes;
    return base ? NO_CUDA : ADDC_OK;
}
#else
typedef int cuda_none_is_empty_with_cuda; /* ISO C forbids an empty translation unit */
#endif
