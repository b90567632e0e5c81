/* core/rng: counter-based random numbers (Philox-4x32-10, Salmon et al. 2011, "Parallel random
 * numbers: as easy as 1, 2, 3"; bit-identical to Random123's philox4x32 with 10 rounds).
 *
 * Every random draw in addc is keyed by (seed, purpose, global sample index, step), never by
 * rank, thread or call order: a run gives the same numbers on 1, 2 or 64 ranks, with any
 * thread count, and after a resume (the checkpoint stores only seed and step).
 *
 * A key names a stream; element i of a stream depends only on (key, i), so a fill may be
 * split at any offset, over any threads, or over devices, and gives the same values.
 *
 * Packing (the same on every backend):
 *   philox key  = { seed & 0xffffffff, seed >> 32 }
 *   counter     = { block, step, index & 0xffffffff, (index >> 32) | (purpose << 16) }
 * where block = element / 4 (each Philox call yields 4 words; element i is word i % 4 of
 * block i / 4). Distinct (seed, purpose, index, step, element) give distinct (key, counter)
 * as long as index < 2^48, purpose < 2^16 and element < 2^34; step uses all 32 bits.
 *
 * Conversions from a 32-bit word x:
 *   uniform [0,1):  (x >> 8) * 2^-24              (24 bits, exact in float; never 1)
 *   uniform (0,1]:  ((x >> 8) + 1) * 2^-24        (never 0)
 *   normal N(0,1):  Box-Muller on the word pair (w0, w1) = words (2j, 2j+1) of a block:
 *                   u = (w0 + 1) * 2^-32 in (0,1], t = w1 * 2^-32 in [0,1),
 *                   r = sqrt(-2 log u), z[2j] = (float)(r cos(2 pi t)), z[2j+1] = (float)(r sin(2 pi t))
 *                   (element 2j takes the cosine, 2j+1 the sine; |z| <= 6.67).
 * log, sqrt, cos and sin are evaluated in double and rounded to float once, so a CUDA port
 * that does the same (double-precision log/sqrt/sincos) matches the CPU bit for bit in
 * practice: the double results differ by at most an ulp or so, which changes the rounded
 * float only when it sits within that distance of a float rounding boundary (~1e-8 odds). */
#ifndef ADDC_CORE_RNG_H
#define ADDC_CORE_RNG_H

#include <stdint.h>

/* What a stream is for. Values are part of the stream packing: append, never renumber. */
typedef enum RngPurpose {
    RNG_PURPOSE_NOISE = 0,         /* forward-diffusion noise for the student's input */
    RNG_PURPOSE_TIMESTEP = 1,      /* student and teacher timestep sampling */
    RNG_PURPOSE_TEACHER_NOISE = 2, /* noise that re-noises the student sample for the teacher */
    RNG_PURPOSE_DATA = 3,          /* shard permutation, shuffle buffer, crops and flips */
    RNG_PURPOSE_INIT = 4,          /* parameter initialisation (index = parameter number) */
    RNG_PURPOSE_DROPOUT = 5,       /* dropout masks, caption dropout */
    RNG_PURPOSE_SAMPLE = 6,        /* sampling and evaluation noise */
    RNG_PURPOSE_TEST = 7,          /* tests and benchmarks */
    RNG_PURPOSE_COUNT
} RngPurpose;

#define RNG_INDEX_LIMIT (1ull << 48)     /* index must be below this */
#define RNG_ELEMENT_LIMIT (1ll << 34)    /* offset + n must not exceed this */

typedef struct RngKey {
    uint64_t seed;    /* the run's seed */
    uint32_t purpose; /* an RngPurpose (< 2^16) */
    uint64_t index;   /* global sample index (or parameter number, shard number...), < 2^48 */
    uint32_t step;    /* optimizer step (or epoch for data streams) */
} RngKey;

static inline RngKey rng_key(uint64_t seed, RngPurpose purpose, uint64_t index, uint32_t step) {
    RngKey k = {seed, (uint32_t)purpose, index, step};
    return k;
}

/* One Philox-4x32-10 block: out = philox(ctr, key). */
void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Elements [off, off + n) of the stream `k`, written to out[0 .. n). Large fills run on the
 * thread pool; the values do not depend on the thread count or on how a fill is split. */
void rng_fill_u32(const RngKey *k, int64_t off, int64_t n, uint32_t *out);
void rng_fill_uniform(const RngKey *k, int64_t off, int64_t n, float *out);     /* [0, 1) */
void rng_fill_uniform_pos(const RngKey *k, int64_t off, int64_t n, float *out); /* (0, 1] */
void rng_fill_normal(const RngKey *k, int64_t off, int64_t n, float *out);      /* N(0, 1) */

#endif
