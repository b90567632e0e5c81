/* core/rng: Philox-4x32-10 and the keyed stream fills (see rng.h for the packing and the
 * conversions; any other backend must follow them exactly). */
#include "core/rng.h"

#include <assert.h>
#include <math.h>

#include "core/parallel.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u
#define RNG_GRAIN 16384

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static void rng_block(const RngKey *k, uint64_t block, uint32_t out[4]) {
    const uint32_t key[2] = {(uint32_t)k->seed, (uint32_t)(k->seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)block, k->step, (uint32_t)k->index,
                             (uint32_t)(k->index >> 32) | (k->purpose << 16)};
    philox4x32_10(ctr, key, out);
}

typedef enum RngKind { RNG_KIND_U32, RNG_KIND_UNIFORM, RNG_KIND_UNIFORM_POS, RNG_KIND_NORMAL } RngKind;

typedef struct RngFill {
    const RngKey *key;
    int64_t off;
    RngKind kind;
    void *out;
} RngFill;

static void rng_fill_range(void *ctx, int64_t b, int64_t e) {
    const RngFill *f = ctx;
    uint32_t w[4];
    uint64_t have = UINT64_MAX;
    float z[2] = {0, 0};
    uint64_t have_pair = UINT64_MAX;
    for (int64_t i = b; i < e; i++) {
        uint64_t g = (uint64_t)(f->off + i);
        if (g >> 2 != have) {
            have = g >> 2;
            rng_block(f->key, have, w);
        }
        uint32_t x = w[g & 3];
        switch (f->kind) {
        case RNG_KIND_U32: ((uint32_t *)f->out)[i] = x; break;
        case RNG_KIND_UNIFORM: ((float *)f->out)[i] = (float)(x >> 8) * 0x1p-24f; break;
        case RNG_KIND_UNIFORM_POS: ((float *)f->out)[i] = (float)((x >> 8) + 1) * 0x1p-24f; break;
        case RNG_KIND_NORMAL:
            if (g >> 1 != have_pair) {
                have_pair = g >> 1;
                uint32_t w0 = w[g & 2], w1 = w[(g & 2) + 1];
                double u = ((double)w0 + 1.0) * 0x1p-32;
                double t = 2.0 * M_PI * ((double)w1 * 0x1p-32);
                double r = sqrt(-2.0 * log(u));
                z[0] = (float)(r * cos(t));
                z[1] = (float)(r * sin(t));
            }
            ((float *)f->out)[i] = z[g & 1];
            break;
        }
    }
}

static void rng_fill(const RngKey *k, int64_t off, int64_t n, RngKind kind, void *out) {
    assert(k->index < RNG_INDEX_LIMIT && k->purpose < (1u << 16));
    assert(off >= 0 && n >= 0 && off + n <= RNG_ELEMENT_LIMIT);
    RngFill f = {k, off, kind, out};
    parallel_for(n, RNG_GRAIN, rng_fill_range, &f);
}

void rng_fill_u32(const RngKey *k, int64_t off, int64_t n, uint32_t *out) {
    rng_fill(k, off, n, RNG_KIND_U32, out);
}
void rng_fill_uniform(const RngKey *k, int64_t off, int64_t n, float *out) {
    rng_fill(k, off, n, RNG_KIND_UNIFORM, out);
}
void rng_fill_uniform_pos(const RngKey *k, int64_t off, int64_t n, float *out) {
    rng_fill(k, off, n, RNG_KIND_UNIFORM_POS, out);
}
void rng_fill_normal(const RngKey *k, int64_t off, int64_t n, float *out) {
    rng_fill(k, off, n, RNG_KIND_NORMAL, out);
}
