/* losses/draw: timesteps and noise keyed by (seed, purpose, global sample index, step); see draw.h. */
#include "losses/draw.h"

#include <stdlib.h>

#include "core/cuda.h"

static RngKey sample_key(const DrawKey *k, RngPurpose purpose, int64_t b) {
    return rng_key(k->seed, purpose, k->first_index + (uint64_t)b, k->step);
}

static uint32_t timestep_word(const DrawKey *k, DrawTimestep which, int64_t b) {
    RngKey key = sample_key(k, RNG_PURPOSE_TIMESTEP, b);
    uint32_t u;
    rng_fill_u32(&key, (int64_t)which, 1, &u);
    return u;
}

static uint64_t pick(uint32_t u, uint64_t n) { return ((uint64_t)u * n) >> 32; }

Status draw_timesteps_set(const DrawKey *k, DrawTimestep which, int64_t B, const int64_t *set, int32_t n,
                          int64_t *t) {
    if (n < 1) return addc_error_set(ADDC_ERR_INVALID, "draw_timesteps_set: empty timestep set");
    for (int64_t b = 0; b < B; b++) t[b] = set[pick(timestep_word(k, which, b), (uint64_t)n)];
    return ADDC_OK;
}

Status draw_timesteps_range(const DrawKey *k, DrawTimestep which, int64_t B, int64_t lo, int64_t hi, int64_t *t) {
    if (lo > hi) return addc_error_set(ADDC_ERR_INVALID, "draw_timesteps_range: empty range [%lld, %lld]",
                                       (long long)lo, (long long)hi);
    uint64_t n = (uint64_t)(hi - lo) + 1;
    for (int64_t b = 0; b < B; b++) t[b] = lo + (int64_t)pick(timestep_word(k, which, b), n);
    return ADDC_OK;
}

static Status check_range(int64_t offset, int64_t per) {
    if (offset < 0 || per < 0 || offset + per > RNG_ELEMENT_LIMIT)
        return addc_error_set(ADDC_ERR_INVALID, "draw_noise: elements [%lld, %lld) exceed the stream limit 2^34",
                              (long long)offset, (long long)(offset + per));
    return ADDC_OK;
}

Status draw_noise_fill(const DrawKey *k, RngPurpose purpose, int64_t offset, Tensor *x) {
    float *d = tensor_f32(x);
    if (!d || x->ndim < 1) return addc_error_set(ADDC_ERR_INVALID, "draw_noise_fill: needs an f32 cpu tensor (B, ...)");
    int64_t B = x->shape[0], per = B ? tensor_numel(x) / B : 0;
    TRY(check_range(offset, per));
    for (int64_t b = 0; b < B; b++) {
        RngKey key = sample_key(k, purpose, b);
        rng_fill_normal(&key, offset, per, d + b * per);
    }
    return ADDC_OK;
}

Var *draw_noise(Ctx *c, const DrawKey *k, RngPurpose purpose, int64_t offset, int32_t ndim, const int64_t *shape) {
    if (ndim < 1) {
        addc_error_set(ADDC_ERR_INVALID, "draw_noise: needs a shape (B, ...)");
        return NULL;
    }
    Var *v = var_new(c, DTYPE_F32, ndim, shape);
    if (!v || !v->v.data) return v;
    if (c->device == DEVICE_CPU) return draw_noise_fill(k, purpose, offset, &v->v) == ADDC_OK ? v : NULL;
    Tensor host = v->v;
    host.device = DEVICE_CPU;
    host.data = malloc((size_t)tensor_nbytes(&host));
    if (!host.data) {
        addc_error_set(ADDC_ERR_NOMEM, "draw_noise: host staging of %lld bytes", (long long)tensor_nbytes(&host));
        return NULL;
    }
    Status st = draw_noise_fill(k, purpose, offset, &host);
    if (st == ADDC_OK) st = cuda_copy_to_device(v->v.data, host.data, (size_t)tensor_nbytes(&host));
    free(host.data);
    return st == ADDC_OK ? v : NULL;
}
