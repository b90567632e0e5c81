/* core/cuda_none: core/cuda.h when addc is built without nvcc. Every call reports that CUDA
 * was not built, so the CPU build needs no #ifdefs around CUDA calls. */
#ifndef ADDC_HAVE_CUDA
#include "core/cuda.h"

#define NO_CUDA addc_error_set(ADDC_ERR_UNSUPPORTED, "addc was built without CUDA (nvcc not found at configure time)")

int cuda_device_count(void) { return 0; }
const char *cuda_unavailable_reason(void) { return "addc was built without CUDA"; }
Status cuda_device_describe(int dev, char *buf, int cap) {
    (void)dev;
    if (cap > 0) buf[0] = 0;
    return NO_CUDA;
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
Status cuda_fill_f32(float *dst, int64_t n, float value) {
    (void)dst, (void)n, (void)value;
    return NO_CUDA;
}
Status cuda_synchronize(void) { return NO_CUDA; }
#else
typedef int cuda_none_is_empty_with_cuda; /* ISO C forbids an empty translation unit */
#endif
