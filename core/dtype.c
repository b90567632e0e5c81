/* core/dtype: element sizes, names and conversions (see dtype.h). */
#include "core/dtype.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
    int is_float;
} dtype_info[] = {
    [DTYPE_F32] = {"f32", 4, 1}, [DTYPE_BF16] = {"bf16", 2, 1}, [DTYPE_F16] = {"f16", 2, 1},
    [DTYPE_F64] = {"f64", 8, 1}, [DTYPE_I32] = {"i32", 4, 0},  [DTYPE_I64] = {"i64", 8, 0},
    [DTYPE_U8] = {"u8", 1, 0},
};
_Static_assert(sizeof(dtype_info) / sizeof(dtype_info[0]) == DTYPE_COUNT,
               "dtype_info must describe every DType");

size_t dtype_size(DType dt) { return dt < DTYPE_COUNT ? dtype_info[dt].size : 0; }
const char *dtype_name(DType dt) { return dt < DTYPE_COUNT ? dtype_info[dt].name : "?"; }
int dtype_is_float(DType dt) { return dt < DTYPE_COUNT && dtype_info[dt].is_float; }

DType dtype_parse(const char *s) {
    static const struct {
        const char *alias;
        DType dt;
    } aliases[] = {{"float32", DTYPE_F32}, {"float", DTYPE_F32},   {"bfloat16", DTYPE_BF16},
                   {"float16", DTYPE_F16}, {"half", DTYPE_F16},    {"float64", DTYPE_F64},
                   {"double", DTYPE_F64},  {"int32", DTYPE_I32},   {"int64", DTYPE_I64},
                   {"uint8", DTYPE_U8},    {"F32", DTYPE_F32},     {"BF16", DTYPE_BF16},
                   {"F16", DTYPE_F16},     {"F64", DTYPE_F64},     {"I32", DTYPE_I32},
                   {"I64", DTYPE_I64},     {"U8", DTYPE_U8}};
    for (int i = 0; i < DTYPE_COUNT; i++)
        if (strcmp(s, dtype_info[i].name) == 0) return (DType)i;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(s, aliases[i].alias) == 0) return aliases[i].dt;
    return DTYPE_COUNT;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb; /* round to nearest, ties to even; overflow rounds to inf */
    return (uint16_t)(u >> 16);
}

float bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (a < 0x38800000u) {
        /* result is subnormal or zero, counted in units of 2^-24 */
        if (a < 0x33000000u) return (uint16_t)sign; /* < 2^-25: rounds to zero */
        uint32_t e = a >> 23;                 /* biased exponent, 102..112 here */
        uint32_t m = (a & 0x7fffffu) | 0x800000u;
        uint32_t d = 126u - e;                /* value / 2^-24 = m >> d, d in 14..24 */
        uint32_t q = m >> d;
        uint32_t rem = m & ((1u << d) - 1u);
        uint32_t half = 1u << (d - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent 127 -> 15, round mantissa 23 -> 10 bits */
    uint32_t r = a - 0x38000000u; /* exponent - 112 */
    uint32_t lsb = (r >> 13) & 1u;
    r += 0xfffu + lsb;
    return (uint16_t)(sign | (r >> 13));
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_f32(sign | 0x7f800000u | (m << 13)); /* inf / NaN */
    if (e == 0) {
        if (m == 0) return bits_f32(sign);
        float v = (float)m * 5.9604644775390625e-8f; /* m * 2^-24, exact */
        return sign ? -v : v;
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

static double load_as_f64(const void *p, DType dt, int64_t i) {
    switch (dt) {
    case DTYPE_F32: return ((const float *)p)[i];
    case DTYPE_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case DTYPE_F16: return f16_to_f32(((const uint16_t *)p)[i]);
    case DTYPE_F64: return ((const double *)p)[i];
    case DTYPE_I32: return ((const int32_t *)p)[i];
    case DTYPE_I64: return (double)((const int64_t *)p)[i];
    case DTYPE_U8: return ((const uint8_t *)p)[i];
    default: return 0;
    }
}

static double clampd(double v, double lo, double hi) {
    if (isnan(v)) return 0;
    return v < lo ? lo : v > hi ? hi : v;
}

void dtype_convert(void *dst, DType dst_dt, const void *src, DType src_dt, int64_t n) {
    if (dst_dt == src_dt) {
        memmove(dst, src, (size_t)n * dtype_size(dst_dt));
        return;
    }
    /* fast paths for the float conversions the mixed-precision code uses */
    if (src_dt == DTYPE_F32 && dst_dt == DTYPE_BF16) {
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_bf16(((const float *)src)[i]);
        return;
    }
    if (src_dt == DTYPE_F32 && dst_dt == DTYPE_F16) {
        for (int64_t i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_f16(((const float *)src)[i]);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        double v = load_as_f64(src, src_dt, i);
        switch (dst_dt) {
        case DTYPE_F32: ((float *)dst)[i] = (float)v; break;
        case DTYPE_BF16: ((uint16_t *)dst)[i] = f32_to_bf16((float)v); break;
        case DTYPE_F16: ((uint16_t *)dst)[i] = f32_to_f16((float)v); break;
        case DTYPE_F64: ((double *)dst)[i] = v; break;
        case DTYPE_I32: ((int32_t *)dst)[i] = (int32_t)clampd(v, -2147483648.0, 2147483647.0); break;
        case DTYPE_I64:
            ((int64_t *)dst)[i] = (int64_t)clampd(v, -9223372036854775808.0, 9223372036854774784.0);
            break;
        case DTYPE_U8: ((uint8_t *)dst)[i] = (uint8_t)clampd(v, 0, 255); break;
        default: break;
        }
    }
}
