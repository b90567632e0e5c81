/* core/tensor: view construction and shape helpers (see tensor.h). */
#include "core/tensor.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static const char *const device_names[] = {[DEVICE_CPU] = "cpu", [DEVICE_CUDA] = "cuda",
                                           [DEVICE_META] = "meta"};
_Static_assert(sizeof(device_names) / sizeof(device_names[0]) == DEVICE_COUNT,
               "device_names must name every Device");

const char *device_name(Device d) { return d < DEVICE_COUNT ? device_names[d] : "?"; }

Tensor tensor_make(void *data, DType dt, Device dev, int32_t ndim, const int64_t *shape) {
    assert(ndim >= 0 && ndim <= TENSOR_MAX_DIMS);
    Tensor t;
    memset(&t, 0, sizeof t);
    t.data = dev == DEVICE_META ? NULL : data;
    t.dtype = dt;
    t.device = dev;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        assert(shape[i] >= 0);
        t.shape[i] = shape[i];
    }
    return t;
}

Tensor tensor_view(const Tensor *t, int32_t ndim, const int64_t *shape) {
    Tensor v = tensor_make(t->data, t->dtype, t->device, ndim, shape);
    assert(tensor_numel(&v) == tensor_numel(t));
    return v;
}

int64_t tensor_numel(const Tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int64_t tensor_nbytes(const Tensor *t) { return tensor_numel(t) * (int64_t)dtype_size(t->dtype); }

bool tensor_same_shape(const Tensor *a, const Tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *tensor_shape_str(const Tensor *t, char *buf, int cap) {
    int n = snprintf(buf, (size_t)cap, "(");
    for (int i = 0; i < t->ndim && n < cap; i++)
        n += snprintf(buf + n, (size_t)(cap - n), i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (n < cap) snprintf(buf + n, (size_t)(cap - n), ") %s %s", dtype_name(t->dtype), device_name(t->device));
    return buf;
}

float *tensor_f32(const Tensor *t) {
    if (t->dtype != DTYPE_F32 || t->device != DEVICE_CPU) {
        char s[128];
        addc_error_set(ADDC_ERR_UNSUPPORTED, "expected an f32 cpu tensor, got %s",
                       tensor_shape_str(t, s, sizeof s));
        return NULL;
    }
    return (float *)t->data;
}
