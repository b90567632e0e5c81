/* core/tensor: a Tensor is a non-owning view: dtype, device, shape, data pointer.
 *
 * Storage is owned elsewhere (a flat parameter buffer, a step arena, a mapped file); a
 * Tensor never frees anything. Tensors are contiguous row-major; images and feature maps
 * are NHWC (B, H, W, C), token sequences (B, T, D), linear weights (Dout, Din) as in
 * diffusers, conv2d weights (Cout, KH, KW, Cin) (converted from OIHW at load).
 * On the meta device `data` is NULL: shapes only, which is how `addc inspect` sizes ADD-XL. */
#ifndef ADDC_CORE_TENSOR_H
#define ADDC_CORE_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

#define TENSOR_MAX_DIMS 6

typedef enum Device {
    DEVICE_CPU = 0,
    DEVICE_CUDA, /* filled by core/cuda (the CUDA backend issue) */
    DEVICE_META, /* shapes only, no data */
    DEVICE_COUNT
} Device;

typedef struct Tensor {
    void *data; /* NULL on meta */
    int64_t shape[TENSOR_MAX_DIMS];
    int32_t ndim;
    DType dtype;
    Device device;
} Tensor;

const char *device_name(Device d);

/* A view over `data` with the given shape (ndim <= 6, every dim >= 0). */
Tensor tensor_make(void *data, DType dt, Device dev, int32_t ndim, const int64_t *shape);
Tensor tensor_view(const Tensor *t, int32_t ndim, const int64_t *shape); /* reshape, same numel */
int64_t tensor_numel(const Tensor *t);
int64_t tensor_nbytes(const Tensor *t);
bool tensor_same_shape(const Tensor *a, const Tensor *b);
/* Formats "(2, 64, 64, 320) f32 cpu" into buf; returns buf. */
char *tensor_shape_str(const Tensor *t, char *buf, int cap);
/* The f32 data pointer, or NULL (with an error set) when the tensor is not f32 on cpu. */
float *tensor_f32(const Tensor *t);

#endif
