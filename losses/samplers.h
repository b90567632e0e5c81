/* losses/samplers: turning noise into images with any denoiser. Four samplers, each step as
 * diffusers computes it (diffusers 0.3x schedulers, timestep_spacing "trailing"):
 *
 *   SAMPLER_ADD      the ADD student's sampler (ADD.md): at t_i predict x0 from z, then re-noise
 *                    it with fresh noise to the next timestep, z = alpha x0 + sigma eps; the last
 *                    step returns x0. Starts from z = N(0, I). (diffusers: DDIMScheduler.step's
 *                    pred_original_sample, then DDPMScheduler.add_noise.)
 *   SAMPLER_EULER_A  EulerAncestralDiscreteScheduler in sigma space, sigma_t = sqrt((1 - ab_t) / ab_t),
 *                    sigmas ending in 0; x = N(0, I) * max sigma (init_noise_sigma with trailing
 *                    spacing), the model sees x / sqrt(sigma^2 + 1) (= z_t):
 *                      x0 = x - sigma out (eps)   or   out (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1) (v)
 *                      sigma_up = sqrt(sigma_to^2 (sigma^2 - sigma_to^2) / sigma^2),
 *                      sigma_down = sqrt(sigma_to^2 - sigma_up^2)
 *                      x <- x + (x - x0) / sigma (sigma_down - sigma) + sigma_up eps
 *   SAMPLER_DDIM     DDIMScheduler, eta 0 (no noise after the start): with prev = t - T / N
 *                    (integer division, as diffusers), ab_prev = ab[prev], or for prev < 0 1
 *                    (set_alpha_to_one) or ab[0]:  z <- sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps_hat
 *   SAMPLER_EULER    EulerDiscreteScheduler (s_churn 0): as Euler ancestral with sigma_down =
 *                    sigma_to and no noise.
 *
 * Trailing timesteps (sampler_timesteps): round(arange(T, 0, -T / N)) - 1 with numpy's
 * round-half-to-even: 1 step 999; 2 steps 999, 499; 4 steps 999, 749, 499, 249.
 *
 * Noise. Draw k = 0 is the initial latent, k = i + 1 the fresh noise of step i (ADD and Euler
 * ancestral use it). Sample b of the batch draws from core/rng's stream (seed, RNG_PURPOSE_SAMPLE,
 * first_index + b, k), elements [0, per-sample numel): an image depends on its seed, its index
 * and the latent shape only, never on the batch it was made in. Tests pass explicit arrays.
 *
 * The denoiser is any network: a callback given the model input z_t (B, ...) and the integer
 * timestep that returns the model output (epsilon or v, per SamplerConfig.prediction) of z_t's
 * shape; classifier-free guidance belongs inside it. The samplers run without a tape (the Ctx
 * must have none): each step releases what the previous one allocated from the arena. */
#ifndef ADDC_LOSSES_SAMPLERS_H
#define ADDC_LOSSES_SAMPLERS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/autograd.h"
#include "losses/diffusion.h"

#define SAMPLER_MAX_STEPS 1000

typedef enum SamplerKind {
    SAMPLER_ADD = 0,
    SAMPLER_EULER_A,
    SAMPLER_DDIM,
    SAMPLER_EULER,
    SAMPLER_KIND_COUNT
} SamplerKind;

/* "add", "euler_a", "ddim", "euler" */
const char *sampler_kind_name(SamplerKind k);
/* The kind named s; fails with the list of names. */
Status sampler_kind_parse(const char *s, SamplerKind *k);

typedef struct SamplerConfig {
    int32_t kind;           /* SamplerKind */
    int32_t steps;          /* 1 .. min(T, SAMPLER_MAX_STEPS) */
    int32_t prediction;     /* Prediction of the denoiser's output */
    bool set_alpha_to_one;  /* DDIM: ab_prev = 1 past the last step (DDIMScheduler's default), else ab[0] */
} SamplerConfig;

/* diffusers' trailing timesteps for `steps` steps of a T-step schedule, into t[0 .. steps). */
Status sampler_timesteps(int64_t T, int32_t steps, int64_t *t);

/* Model output (eps or v) for the model input z_t (B, ...) at timestep t; NULL on failure with
 * the error set. */
typedef Var *(*SamplerDenoiseFn)(Ctx *c, Var *z_t, int64_t t, void *user);
/* Called after step i with the scheduler's new sample (prev_sample: z for ADD and DDIM, x in
 * sigma space for the Euler samplers) and its x0 prediction at t. */
typedef Status (*SamplerStepFn)(int32_t i, int64_t t, const Var *sample, const Var *x0, void *user);

typedef struct SamplerNoise {
    uint64_t seed;
    uint64_t first_index;      /* global image index of sample 0 of the batch */
    const float *const *given; /* NULL: draw from core/rng; else given[k], (B, ...) each, for draw k */
} SamplerNoise;

/* Runs the sampler on a batch of `shape` (B, ...) and returns the final x0 estimate (the last
 * prev_sample; ADD: the last x0), a Var allocated from c's arena. on_step may be NULL. */
Var *sampler_run(Ctx *c, const NoiseSchedule *s, const SamplerConfig *cfg, int32_t ndim, const int64_t *shape,
                 const SamplerNoise *noise, SamplerDenoiseFn denoise, void *user, SamplerStepFn on_step,
                 void *step_user);

#endif
