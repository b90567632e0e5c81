/* core/cuda: the CUDA device slot of the tensor core, as plain C.
 *
 * The kernels live in the .cu files of core/cuda/ (compiled as C++ by nvcc, exported extern "C"); this
 * header is all the C side sees. Without nvcc at build time (ADDC_HAVE_CUDA undefined) the
 * same functions exist and report that CUDA was not built, so callers need no #ifdefs.
 * The CUDA backend issue fills in the op kernels behind the same Backend table as the CPU. */
#ifndef ADDC_CORE_CUDA_H
#define ADDC_CORE_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Number of usable CUDA devices (0 when built without CUDA, no driver or no GPU). Never
 * fails: the reason for 0 is available from cuda_unavailable_reason(). */
int cuda_device_count(void);
const char *cuda_unavailable_reason(void);
/* "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" into buf */
Status cuda_device_describe(int dev, char *buf, int cap);

Status cuda_malloc(void **p, size_t bytes);
Status cuda_free(void *p);
Status cuda_copy_to_device(void *dst, const void *src, size_t bytes);
Status cuda_copy_to_host(void *dst, const void *src, size_t bytes);
/* Fills n f32 elements of device memory with `value` (poisoning outputs before op tests). */
Status cuda_fill_f32(float *dst, int64_t n, float value);
Status cuda_synchronize(void);

#endif
