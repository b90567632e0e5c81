/* tests/unit/test_rng: Philox-4x32-10 against Random123's known-answer vectors, the stream
 * packing and conversions against values from an independent Python implementation,
 * stream separation, independence from thread count and from how a fill is split, and the
 * moments of the uniform and normal fills on 1e6 samples. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/parallel.h"
#include "core/rng.h"
#include "tests/test_util.h"

static void test_kat(void) {
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t t = 0; t < sizeof kat / sizeof kat[0]; t++) {
        uint32_t out[4];
        philox4x32_10(kat[t].ctr, kat[t].key, out);
        for (int j = 0; j < 4; j++)
            CHECK(out[j] == kat[t].out[j], "KAT %zu word %d: got %08x want %08x", t, j, out[j],
                  kat[t].out[j]);
    }
}

/* Expected values from a 15-line Python Philox written from the paper (it reproduces the
 * three KAT vectors above) with the packing documented in rng.h; elements [5, 13). */
static void test_stream_reference(void) {
    RngKey k = rng_key(0x0123456789abcdefull, RNG_PURPOSE_TEACHER_NOISE, (5ull << 32) | 7, 1234);
    static const uint32_t want_u32[8] = {0xbb7c1812u, 0xd23d6944u, 0xaddacf6cu, 0xb4d7a0b7u,
                                         0x768ea592u, 0xdc447a50u, 0xe56c2cf4u, 0x7163d469u};
    static const float want_nrm[8] = {-2.259034157e+00f, -2.703460753e-01f, -5.663651824e-01f,
                                      -8.114380240e-01f, 1.915006042e-01f,  4.357521236e-01f,
                                      -3.328507543e-01f, 1.794720441e-02f};
    uint32_t u[8];
    float z[8], uf[8], up[8];
    rng_fill_u32(&k, 5, 8, u);
    rng_fill_normal(&k, 5, 8, z);
    rng_fill_uniform(&k, 5, 8, uf);
    rng_fill_uniform_pos(&k, 5, 8, up);
    for (int i = 0; i < 8; i++) {
        CHECK(u[i] == want_u32[i], "u32[%d]: %08x want %08x", i, u[i], want_u32[i]);
        CHECK(z[i] == want_nrm[i], "normal[%d]: %.9g want %.9g", i, z[i], want_nrm[i]);
        CHECK(uf[i] == (float)(want_u32[i] >> 8) / 16777216.0f, "uniform[%d] = %.9g", i, uf[i]);
        CHECK(up[i] == (float)((want_u32[i] >> 8) + 1) / 16777216.0f, "uniform_pos[%d] = %.9g", i,
              up[i]);
    }
}

static int block_equal(const RngKey *a, const RngKey *b) {
    uint32_t x[16], y[16];
    rng_fill_u32(a, 0, 16, x);
    rng_fill_u32(b, 0, 16, y);
    return memcmp(x, y, sizeof x) == 0;
}

static void test_streams_differ(void) {
    /* keys that a naive packing would confuse: high index bits vs step vs purpose */
    RngKey keys[] = {
        rng_key(1, RNG_PURPOSE_NOISE, 0, 0),
        rng_key(2, RNG_PURPOSE_NOISE, 0, 0),
        rng_key(1ull << 32, RNG_PURPOSE_NOISE, 0, 0),
        rng_key(1, RNG_PURPOSE_TIMESTEP, 0, 0),
        rng_key(1, RNG_PURPOSE_TEACHER_NOISE, 0, 0),
        rng_key(1, RNG_PURPOSE_NOISE, 1, 0),
        rng_key(1, RNG_PURPOSE_NOISE, 1ull << 32, 0),
        rng_key(1, RNG_PURPOSE_NOISE, (1ull << 48) - 1, 0),
        rng_key(1, RNG_PURPOSE_NOISE, 0, 1),
        rng_key(1, RNG_PURPOSE_NOISE, 0, 1u << 16),
        rng_key(1, RNG_PURPOSE_NOISE, 0, 0xffffffffu),
        rng_key(1, RNG_PURPOSE_TIMESTEP, 1ull << 32, 1u << 16),
        rng_key(1, RNG_PURPOSE_NOISE, 1ull << 47, 0),
        rng_key(1, RNG_PURPOSE_DATA, 0, 0),
    };
    int n = (int)(sizeof keys / sizeof keys[0]);
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            CHECK(!block_equal(&keys[a], &keys[b]), "streams %d and %d are equal", a, b);
    /* elements within a stream differ too: the first 4096 words are distinct */
    enum { N = 4096 };
    uint32_t *w = malloc(N * sizeof *w);
    rng_fill_u32(&keys[0], 0, N, w);
    int dup = 0;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) dup += w[i] == w[j];
    CHECK(dup == 0, "%d repeated words in one stream's first %d", dup, N);
    free(w);
}

static void test_threads_and_split(void) {
    enum { N = 300007 };
    int saved = parallel_threads();
    RngKey k = rng_key(42, RNG_PURPOSE_NOISE, 123456789, 77);
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *c = malloc(N * sizeof *c);
    uint32_t *ua = malloc(N * sizeof *ua), *ub = malloc(N * sizeof *ub);
    void (*fills[3])(const RngKey *, int64_t, int64_t, float *) = {
        rng_fill_uniform, rng_fill_uniform_pos, rng_fill_normal};
    const char *names[3] = {"uniform", "uniform_pos", "normal"};
    for (int f = 0; f < 3; f++) {
        parallel_set_threads(1);
        fills[f](&k, 0, N, a);
        parallel_set_threads(3);
        fills[f](&k, 0, N, b);
        CHECK(memcmp(a, b, N * sizeof *a) == 0, "%s: 1 thread and 3 threads differ", names[f]);
        /* split at odd offsets: a block boundary and a Box-Muller pair are cut */
        const int64_t cuts[] = {1, 3, 5, 65537, N - 1};
        for (size_t ci = 0; ci < sizeof cuts / sizeof cuts[0]; ci++) {
            int64_t cut = cuts[ci];
            fills[f](&k, 0, cut, c);
            fills[f](&k, cut, N - cut, c + cut);
            CHECK(memcmp(a, c, N * sizeof *a) == 0, "%s: split at %lld differs", names[f],
                  (long long)cut);
        }
    }
    parallel_set_threads(1);
    rng_fill_u32(&k, 0, N, ua);
    parallel_set_threads(3);
    rng_fill_u32(&k, 0, N, ub);
    CHECK(memcmp(ua, ub, N * sizeof *ua) == 0, "u32: 1 thread and 3 threads differ");
    parallel_set_threads(saved);
    free(a), free(b), free(c), free(ua), free(ub);
}

static void test_moments(void) {
    enum { N = 1000000 };
    float *x = malloc(N * sizeof *x);
    RngKey k = rng_key(2024, RNG_PURPOSE_TEST, 0, 0);

    rng_fill_uniform(&k, 0, N, x);
    double s = 0, s2 = 0, lo = 1, hi = 0;
    int64_t bins[16] = {0};
    for (int i = 0; i < N; i++) {
        s += x[i];
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
        bins[(int)(x[i] * 16)]++;
    }
    double mean = s / N;
    for (int i = 0; i < N; i++) s2 += (x[i] - mean) * (x[i] - mean);
    double var = s2 / N, chi2 = 0;
    for (int b = 0; b < 16; b++) chi2 += (bins[b] - N / 16.0) * (bins[b] - N / 16.0) / (N / 16.0);
    printf("uniform [0,1): mean %.6f (0.5) var %.6f (%.6f) min %.3g max %.9g chi2(15 dof) %.2f\n",
           mean, var, 1.0 / 12, lo, hi, chi2);
    /* 5 standard errors: sd(mean) = 2.9e-4, sd(var) = 7.5e-5; chi2_15 beyond 45 has p < 1e-4 */
    CHECK(fabs(mean - 0.5) < 1.5e-3, "uniform mean %.6f", mean);
    CHECK(fabs(var - 1.0 / 12) < 3.7e-4, "uniform var %.6f", var);
    CHECK(lo >= 0 && hi < 1, "uniform range [%g, %g]", lo, hi);
    CHECK(chi2 < 45, "uniform chi2 %.2f over 16 bins", chi2);

    rng_fill_uniform_pos(&k, 0, N, x);
    lo = 1, hi = 0;
    for (int i = 0; i < N; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    CHECK(lo > 0 && hi <= 1, "uniform_pos range [%g, %g]", lo, hi);

    rng_fill_normal(&k, 0, N, x);
    s = 0;
    for (int i = 0; i < N; i++) s += x[i];
    mean = s / N;
    double m2 = 0, m4 = 0, amax = 0, corr = 0;
    for (int i = 0; i < N; i++) {
        double d = x[i] - mean;
        m2 += d * d;
        m4 += d * d * d * d;
        amax = fabs(x[i]) > amax ? fabs(x[i]) : amax;
        if (i & 1) corr += (double)x[i] * x[i - 1]; /* the two halves of a Box-Muller pair */
    }
    m2 /= N;
    m4 /= N;
    double kurt = m4 / (m2 * m2);
    corr /= N / 2;
    printf("normal: mean %.6f (0) var %.6f (1) kurtosis %.4f (3) max|z| %.3f pair corr %.5f\n", mean,
           m2, kurt, amax, corr);
    /* 5 standard errors: sd(mean) = 1e-3, sd(var) = 1.4e-3, sd(kurtosis) = 4.9e-3 */
    CHECK(fabs(mean) < 5e-3, "normal mean %.6f", mean);
    CHECK(fabs(m2 - 1) < 7.1e-3, "normal var %.6f", m2);
    CHECK(fabs(kurt - 3) < 2.5e-2, "normal kurtosis %.4f", kurt);
    CHECK(fabs(corr) < 7.1e-3, "normal pair correlation %.5f", corr);
    CHECK(amax < 6.67, "normal max |z| %.3f beyond the Box-Muller bound", amax);
    free(x);
}

int main(void) {
    test_kat();
    test_stream_reference();
    test_streams_differ();
    test_threads_and_split();
    test_moments();
    return test_main_end("test_rng");
}
