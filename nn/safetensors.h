/* nn/safetensors: read (mmap) and write safetensors files.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}},
 * then the data section; offsets are relative to the data section.
 * Every header check is made before any tensor is used: header length within the file and
 * under a size limit (100 MiB), valid JSON object, known dtype, shape entries non-negative
 * integers, dtype size x numel = end - begin, spans inside the data section, no two spans
 * overlapping, no gaps (the spans tile the data section exactly), names unique and non-empty.
 * A failed check names the file, the tensor and what is wrong. */
#ifndef ADDC_NN_SAFETENSORS_H
#define ADDC_NN_SAFETENSORS_H

#include <stdint.h>

#include "core/tensor.h"

#define SAFETENSORS_HEADER_MAX (100ll << 20) /* bytes of JSON header accepted */

typedef struct StTensor {
    char *name;
    DType dtype;            /* F32, BF16, F16, F64, I32, I64, U8 (others refused with a message) */
    int32_t ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    const void *data;       /* into the mapping (read) or the caller's buffer (write) */
    int64_t nbytes;
} StTensor;

typedef struct SafeTensors {
    char path[1024];
    void *map;              /* the whole file, read-only */
    int64_t size;
    StTensor *t;
    int32_t n;
    char *metadata;         /* the "__metadata__" object as JSON text, or NULL */
} SafeTensors;

/* Maps the file and checks the whole header; on failure st is zeroed and nothing stays open.
 * Tensors are listed sorted by name (st->t[0 .. n)). */
Status safetensors_open(SafeTensors *st, const char *path);
void safetensors_close(SafeTensors *st);
const StTensor *safetensors_find(const SafeTensors *st, const char *name);
/* Copies tensor t into dst as f32 (converting from f16/bf16/f64), n elements. */
Status safetensors_read_f32(const StTensor *t, float *dst, int64_t n);
/* The safetensors name of a dtype ("F32", "BF16", ...); NULL for none. */
const char *safetensors_dtype_name(DType dt);

/* Writes tensors (data in the given dtype, row-major) durably: temp file, fsync, rename,
 * fsync of the directory. metadata_json may be NULL or a JSON object of string values. */
Status safetensors_write(const char *path, const StTensor *tensors, int32_t n, const char *metadata_json);

/* The same, but tensor i's bytes (tensors[i].nbytes of them, in tensors[i].dtype) are produced
 * by fill(user, i, dst) into a scratch buffer as the file is written (tensors[i].data is not
 * read): a store can be saved in another dtype or layout without a second copy of it all. */
typedef Status (*SafeTensorsFillFn)(void *user, int32_t i, void *dst);
Status safetensors_write_fill(const char *path, const StTensor *tensors, int32_t n, const char *metadata_json,
                              SafeTensorsFillFn fill, void *user);

#endif
