/* core/dtype: element types and conversions.
 *
 * bf16 and f16 are stored as uint16_t bit patterns. float -> bf16/f16 rounds to nearest,
 * ties to even; NaN stays NaN (quiet, sign kept); overflow gives +-inf as IEEE does.
 * f64 exists for reference checks; CPU kernels compute in f32. */
#ifndef ADDC_CORE_DTYPE_H
#define ADDC_CORE_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum DType {
    DTYPE_F32 = 0,
    DTYPE_BF16,
    DTYPE_F16,
    DTYPE_F64,
    DTYPE_I32,
    DTYPE_I64,
    DTYPE_U8,
    DTYPE_COUNT
} DType;

size_t dtype_size(DType dt);
const char *dtype_name(DType dt);
/* Parses "f32", "float32", "bf16", "bfloat16", "f16", "float16", "f64", "i32", "i64", "u8";
 * returns DTYPE_COUNT when unknown. */
DType dtype_parse(const char *s);
int dtype_is_float(DType dt);

uint16_t f32_to_bf16(float f);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);

/* Converts n elements between any two dtypes (float -> integer truncates toward zero and
 * saturates; NaN -> 0). */
void dtype_convert(void *dst, DType dst_dt, const void *src, DType src_dt, int64_t n);

#endif
