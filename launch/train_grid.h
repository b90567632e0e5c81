/* launch/train_grid: the sample grids `addc train` writes into RUN/samples/ while it trains
 * (sample.every > 0, launch/train_config.h TrainSampleConfig).
 *
 * One row per sample.prompts entry; across a row, blocks of sample.per_prompt images, a few
 * pixels of gap between blocks:
 *   mode add        the student with the ADD sampler, one block per entry of sample.student_steps,
 *                   then (teacher_steps > 0) the teacher with sample.teacher_sampler at
 *                   teacher_steps, guided by teacher_cfg
 *   mode diffusion  the student (its EMA when ema_decay > 0) with sample.teacher_sampler at
 *                   teacher_steps, guided by teacher_cfg: the one block
 * Column k of row p in every block starts from the same noise, image p * per_prompt + k of the
 * sampler stream keyed by sample.seed (losses/samplers.h), never by the step: grids of different
 * steps, and the blocks of one grid, compare image for image. The prediction and schedule are the
 * training loss's (cfg.loss). Conditioning is built as in training from the prompt (no text:
 * the zero context).
 *
 * A grid changes nothing of the run: no tape, an arena of its own (the step arena's peak is a
 * reported metric), keyed noise that draws from no training stream, and the student's weights
 * back bit for bit after an EMA swap. A run with and without grids has identical metrics. */
#ifndef ADDC_LAUNCH_TRAIN_GRID_H
#define ADDC_LAUNCH_TRAIN_GRID_H

#include <stdint.h>

#include "launch/train_setup.h"

#define TRAIN_GRID_GAP 4 /* pixels between blocks (white) */

/* Blocks of a grid row (see above). */
int32_t train_grid_blocks(const TrainConfig *cfg);
/* Grid size in pixels: height rows x S, width blocks x per_prompt x S + (blocks - 1) x gap. */
void train_grid_size(const TrainConfig *cfg, int64_t *height, int64_t *width);
/* Samples the grid and writes it as a PNG (gray or RGB as data.channels) to path (temp file,
 * fsync, rename). Every rank samples (the networks' units are gathered collectively); path NULL
 * writes nothing (ranks other than 0). */
Status train_grid_write(Trainer *t, const char *path);

#endif
