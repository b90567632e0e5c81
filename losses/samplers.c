/* losses/samplers: the ADD, Euler ancestral, DDIM and Euler samplers over a denoiser callback
 * (formulas in samplers.h). Updates are per-sample-coefficient combinations of Vars
 * (diffusion_combine), so they run wherever the denoiser's tensors live; coefficients are
 * computed in double from the schedule. */
#include "losses/samplers.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "losses/draw.h"

static const char *const sampler_names[SAMPLER_KIND_COUNT] = {"add", "euler_a", "ddim", "euler"};

const char *sampler_kind_name(SamplerKind k) {
    return k >= 0 && k < SAMPLER_KIND_COUNT ? sampler_names[k] : "?";
}

Status sampler_kind_parse(const char *s, SamplerKind *k) {
    for (int i = 0; i < SAMPLER_KIND_COUNT; i++)
        if (s && !strcmp(s, sampler_names[i])) {
            *k = (SamplerKind)i;
            return ADDC_OK;
        }
    return addc_error_set(ADDC_ERR_INVALID, "unknown sampler '%s': use add, euler_a, ddim or euler", s ? s : "");
}

Status sampler_timesteps(int64_t T, int32_t steps, int64_t *t) {
    if (steps < 1 || steps > T || steps > SAMPLER_MAX_STEPS)
        return addc_error_set(ADDC_ERR_INVALID, "sampler: %d steps is outside [1, %lld] for a %lld-step schedule",
                              (int)steps, (long long)(T < SAMPLER_MAX_STEPS ? T : SAMPLER_MAX_STEPS), (long long)T);
    /* numpy: arange(T, 0, -r) has ceil(T / r) elements T + i (-r); np.round is half-to-even,
     * which nearbyint is in the default rounding mode */
    double r = (double)T / (double)steps;
    int64_t n = (int64_t)ceil((double)T / r);
    if (n != steps)
        return addc_error_set(ADDC_ERR_INVALID, "sampler: trailing spacing gives %lld timesteps for %d steps",
                              (long long)n, (int)steps);
    for (int64_t i = 0; i < n; i++) t[i] = (int64_t)nearbyint((double)T + (double)i * -r) - 1;
    return ADDC_OK;
}

/* a x + b y with the same coefficients for every sample (y NULL: a x) */
static Var *lin(Ctx *c, Var *x, double a, Var *y, double b) {
    if (!x) return NULL;
    int64_t B = x->v.shape[0];
    double *ca = ctx_alloc(c, 2 * B * (int64_t)sizeof(double));
    if (!ca) return NULL;
    double *cb = ca + B;
    for (int64_t i = 0; i < B; i++) {
        ca[i] = a;
        cb[i] = b;
    }
    return y ? diffusion_combine(c, x, ca, y, cb) : diffusion_scale_per_sample(c, x, ca);
}

static Var *noise_draw(Ctx *c, const SamplerNoise *nz, int32_t k, int32_t ndim, const int64_t *shape) {
    if (!nz->given) {
        DrawKey key = {nz->seed, (uint32_t)k, nz->first_index};
        return draw_noise(c, &key, RNG_PURPOSE_SAMPLE, 0, ndim, shape);
    }
    Var *v = var_new(c, DTYPE_F32, ndim, shape);
    if (!v || !v->v.data) return v;
    if (c->device != DEVICE_CPU) {
        addc_error_set(ADDC_ERR_INVALID, "sampler: given noise arrays are for the CPU");
        return NULL;
    }
    memcpy(v->v.data, nz->given[k], (size_t)tensor_nbytes(&v->v));
    return v;
}

static bool same_shape(const Var *a, int32_t ndim, const int64_t *shape) {
    if (a->v.ndim != ndim) return false;
    for (int32_t d = 0; d < ndim; d++)
        if (a->v.shape[d] != shape[d]) return false;
    return true;
}

static Status check_args(const Ctx *c, const NoiseSchedule *s, const SamplerConfig *cfg, int32_t ndim,
                         const int64_t *shape) {
    if (c->tape) return addc_error_set(ADDC_ERR_INVALID, "sampler: run it on a Ctx without a tape");
    if (cfg->kind < 0 || cfg->kind >= SAMPLER_KIND_COUNT)
        return addc_error_set(ADDC_ERR_INVALID, "sampler: unknown kind %d", (int)cfg->kind);
    if (cfg->prediction != PREDICTION_EPSILON && cfg->prediction != PREDICTION_V)
        return addc_error_set(ADDC_ERR_INVALID, "sampler: unknown prediction %d", (int)cfg->prediction);
    if (ndim < 1 || shape[0] < 1) return addc_error_set(ADDC_ERR_INVALID, "sampler: the latent shape needs a batch (B, ...)");
    if (cfg->kind == SAMPLER_EULER_A || cfg->kind == SAMPLER_EULER)
        for (int64_t t = 0; t < s->T; t++)
            if (!(s->alpha_bar[t] > 0))
                return addc_error_set(ADDC_ERR_INVALID,
                                      "sampler %s: alphabar_%lld is 0, so sigma is infinite there; with zero terminal SNR "
                                      "set terminal_alpha_bar > 0 (EulerDiscreteScheduler uses 2^-24) or use ddim / add",
                                      sampler_kind_name(cfg->kind), (long long)t);
    return ADDC_OK;
}

Var *sampler_run(Ctx *c, const NoiseSchedule *s, const SamplerConfig *cfg, int32_t ndim, const int64_t *shape,
                 const SamplerNoise *noise, SamplerDenoiseFn denoise, void *user, SamplerStepFn on_step,
                 void *step_user) {
    if (check_args(c, s, cfg, ndim, shape) != ADDC_OK) return NULL;
    int32_t N = cfg->steps, kind = cfg->kind;
    int64_t ts[SAMPLER_MAX_STEPS];
    if (sampler_timesteps(s->T, N, ts) != ADDC_OK) return NULL;
    bool euler = kind == SAMPLER_EULER_A || kind == SAMPLER_EULER;
    double sig[SAMPLER_MAX_STEPS + 1], init = 1;
    if (euler) {
        for (int32_t i = 0; i < N; i++) {
            double ab = s->alpha_bar[ts[i]];
            sig[i] = (float)sqrt((1 - ab) / ab); /* diffusers keeps the sigmas in float32 */
            if (i == 0 || sig[i] > init) init = sig[i];
        }
        sig[N] = 0;
    }
    int64_t B = shape[0];
    ArenaMark m0 = arena_mark(c->arena);
    Var *x = noise_draw(c, noise, 0, ndim, shape);
    if (euler) x = var_compact(c, m0, lin(c, x, init, NULL, 0));
    for (int32_t i = 0; i < N && x; i++) {
        int64_t t = ts[i];
        int64_t *tv = ctx_alloc(c, B * (int64_t)sizeof(int64_t));
        if (!tv) return NULL;
        for (int64_t b = 0; b < B; b++) tv[b] = t;
        Var *z = euler ? lin(c, x, 1 / sqrt(sig[i] * sig[i] + 1), NULL, 0) : x;
        Var *out = z ? denoise(c, z, t, user) : NULL;
        if (!out) return NULL;
        if (!same_shape(out, ndim, shape)) {
            addc_error_set(ADDC_ERR_INVALID, "sampler: the denoiser's output (rank %d) differs from its input's shape",
                           (int)out->v.ndim);
            return NULL;
        }
        Var *x0 = NULL, *next = NULL;
        if (kind == SAMPLER_ADD) {
            x0 = diffusion_x0_from_pred(c, s, cfg->prediction, x, out, tv);
            if (i == N - 1) {
                next = x0;
            } else {
                Var *eps = noise_draw(c, noise, i + 1, ndim, shape);
                for (int64_t b = 0; b < B; b++) tv[b] = ts[i + 1];
                next = x0 && eps ? diffusion_noise_add(c, s, x0, eps, tv) : NULL;
            }
        } else if (kind == SAMPLER_DDIM) {
            x0 = diffusion_x0_from_pred(c, s, cfg->prediction, x, out, tv);
            Var *eps = diffusion_eps_from_pred(c, s, cfg->prediction, x, out, tv);
            int64_t prev = t - s->T / N;
            double ab = prev >= 0 ? s->alpha_bar[prev] : cfg->set_alpha_to_one ? 1.0 : s->alpha_bar[0];
            next = x0 && eps ? lin(c, x0, sqrt(ab), eps, sqrt(1 - ab)) : NULL;
        } else {
            double sg = sig[i], to = sig[i + 1];
            x0 = cfg->prediction == PREDICTION_EPSILON ? lin(c, x, 1, out, -sg)
                                                       : lin(c, out, -sg / sqrt(sg * sg + 1), x, 1 / (sg * sg + 1));
            double up = 0, down = to;
            if (kind == SAMPLER_EULER_A) {
                up = sqrt(to * to * (sg * sg - to * to) / (sg * sg));
                down = sqrt(to * to - up * up);
            }
            /* x + (x - x0) / sg (down - sg) as one combination: with zero terminal SNR sg is 4096 and
             * diffusers' x + d dt cancels away float32 digits (an ulp of 4096 x is 5e-4) */
            next = x0 ? lin(c, x, down / sg, x0, 1 - down / sg) : NULL;
            if (next && up > 0) {
                Var *eps = noise_draw(c, noise, i + 1, ndim, shape);
                next = eps ? lin(c, next, 1, eps, up) : NULL;
            }
        }
        if (!next) return NULL;
        if (on_step && on_step(i, t, next, x0, step_user) != ADDC_OK) return NULL;
        x = var_compact(c, m0, next);
    }
    return x;
}
