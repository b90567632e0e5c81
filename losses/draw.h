/* losses/draw: the random draws of a training step (timesteps, noise), keyed through core/rng.h
 * by (seed, purpose, global sample index, step) and nothing else, so a sample gets the same
 * timestep and noise whether its batch is split over 1, 2 or 64 ranks, over any thread count,
 * and after a resume.
 *
 * A DrawKey names the batch: the run's seed, the optimizer step and the global index of the
 * batch's first sample (its position in the global batch, or the loader's running sample
 * counter); sample b of the batch has global index first_index + b.
 *
 * Streams (element offsets inside one (seed, purpose, index, step) stream):
 *   timesteps   RNG_PURPOSE_TIMESTEP, element DRAW_T_STUDENT (0), DRAW_T_TEACHER (1) or
 *               DRAW_T_DIFFUSION (2): one u32 each; a choice among n values is
 *               floor(u32 * n / 2^32) (Lemire's multiply-shift; bias below n / 2^32)
 *   noise       RNG_PURPOSE_NOISE (student input eps) and RNG_PURPOSE_TEACHER_NOISE (eps' that
 *               re-noises the student sample), elements [0, per-sample numel), N(0, 1)
 *   R1 noise    RNG_PURPOSE_NOISE from element DRAW_R1_NOISE_OFFSET + k * DRAW_R1_NOISE_STRIDE
 *               for head k (far above any latent's numel; core/rng.h has no purpose of its
 *               own for it: a separate purpose there would be cleaner). */
#ifndef ADDC_LOSSES_DRAW_H
#define ADDC_LOSSES_DRAW_H

#include <stdint.h>

#include "core/autograd.h"
#include "core/rng.h"

typedef struct DrawKey {
    uint64_t seed;
    uint32_t step;
    uint64_t first_index; /* global sample index of sample 0 of the batch */
} DrawKey;

typedef enum DrawTimestep {
    DRAW_T_STUDENT = 0,
    DRAW_T_TEACHER = 1,
    DRAW_T_DIFFUSION = 2,
} DrawTimestep;

#define DRAW_R1_NOISE_OFFSET (1ll << 33)
#define DRAW_R1_NOISE_STRIDE (1ll << 29) /* per head: at most 2^29 feature values per sample */

/* t[b] = set[floor(u * n / 2^32)], u the sample's u32 at element `which`. */
Status draw_timesteps_set(const DrawKey *k, DrawTimestep which, int64_t B, const int64_t *set, int32_t n,
                          int64_t *t);
/* t[b] uniform over the integers [lo, hi]. */
Status draw_timesteps_range(const DrawKey *k, DrawTimestep which, int64_t B, int64_t lo, int64_t hi, int64_t *t);

/* Fills x (B, ...) f32 on the CPU with N(0, 1): sample b from stream (seed, purpose,
 * first_index + b, step), elements [offset, offset + numel / B). */
Status draw_noise_fill(const DrawKey *k, RngPurpose purpose, int64_t offset, Tensor *x);
/* A new leaf Var (no gradient) of the given shape, filled as above (shape only on meta). */
Var *draw_noise(Ctx *c, const DrawKey *k, RngPurpose purpose, int64_t offset, int32_t ndim, const int64_t *shape);

#endif
