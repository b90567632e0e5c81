// tests/cuemu/include/cuda_bf16.h: __nv_bfloat16 for the host emulator (cuemu). Conversions are
// bit-exact with CUDA's on sm_80+ (cvt.rn.bf16.f32): round to nearest, ties to even; overflow
// rounds to infinity; any NaN becomes the canonical NaN 0x7fff. Trivially copyable, so __shared__
// arrays and kernel arguments of it behave as on the device.
#ifndef CUEMU_CUDA_BF16_H
#define CUEMU_CUDA_BF16_H

#include <stdint.h>
#include <string.h>

#include "cuda_runtime.h"

struct __nv_bfloat16_raw {
    unsigned short x;
};

struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(const __nv_bfloat16_raw &r) : __x(r.x) {}
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
    inline __nv_bfloat16(float f);
    inline operator float() const;
};
typedef __nv_bfloat16 nv_bfloat16;

static inline unsigned short cuemu_f32_to_bf16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
    uint32_t r = x >> 16, rem = x << 16;
    if (rem > 0x80000000u || (rem == 0x80000000u && (r & 1u))) r++;
    return (unsigned short)r;
}

static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    __nv_bfloat16 h;
    h.__x = cuemu_f32_to_bf16_bits(f);
    return h;
}
static inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
static inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t x = (uint32_t)h.__x << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}
static inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
    __nv_bfloat16 h;
    h.__x = u;
    return h;
}

inline __nv_bfloat16::__nv_bfloat16(float f) : __x(cuemu_f32_to_bf16_bits(f)) {}
inline __nv_bfloat16::operator float() const { return __bfloat162float(*this); }

#endif
