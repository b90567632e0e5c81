/* core/ops/simd: the 8-wide float vectors (GCC vector extensions, AVX2-sized) the CPU kernels of
 * attention and norm share: loads and stores through memcpy (no alignment assumed), a horizontal
 * sum in a fixed order, and a vector exp (internal). */
#ifndef ADDC_CORE_OPS_SIMD_H
#define ADDC_CORE_OPS_SIMD_H

#include <stdint.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f v8_load(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void v8_store(float *p, v8f v) { memcpy(p, &v, sizeof v); }
static inline v8f v8_set1(float a) { return (v8f){a, a, a, a, a, a, a, a}; }
static inline float v8_hsum(v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

/* exp(x), relative error ~2 ulp (the Cephes expf polynomial); arguments are clamped to
 * [-87.3, 88.3] and the result is 0 below -87.3 */
static inline v8f v8_exp(v8f x) {
    const v8f lo = v8_set1(-87.3f), hi = v8_set1(88.3f);
    v8i under = x < lo;
    v8i over = x > hi;
    x = (v8f)(((v8i)x & ~over) | ((v8i)hi & over));
    x = (v8f)(((v8i)x & ~under) | ((v8i)lo & under));
    const v8f magic = v8_set1(12582912.0f); /* 1.5 * 2^23: round to nearest */
    v8f t = x * v8_set1(1.44269504088896341f) + magic;
    v8i ni = (v8i)t - (v8i)magic;
    v8f nf = t - magic;
    v8f r = x - nf * v8_set1(0.693359375f);
    r = r - nf * v8_set1(-2.12194440e-4f);
    v8f p = v8_set1(1.9875691500e-4f);
    p = p * r + v8_set1(1.3981999507e-3f);
    p = p * r + v8_set1(8.3334519073e-3f);
    p = p * r + v8_set1(4.1665795894e-2f);
    p = p * r + v8_set1(1.6666665459e-1f);
    p = p * r + v8_set1(5.0000001201e-1f);
    p = p * (r * r) + r + v8_set1(1.0f);
    v8i e = (ni + 127) << 23;
    return (v8f)((v8i)(p * (v8f)e) & ~under);
}

#endif
