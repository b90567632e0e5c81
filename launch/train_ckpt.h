/* launch/train_ckpt: what a training checkpoint holds, written and read through
 * distributed/checkpoint.h (one HDF5 file per checkpoint, every rank its slabs, atomic commit).
 *
 * Contents (HDF5 paths; parameters under their diffusers / state-dict names, in the files' logical
 * layout: a conv weight is (Cout, Cin, KH, KW) as in safetensors, so h5py reads them as torch would):
 *   student/NAME, ema/NAME, opt_g/m/NAME, opt_g/v/NAME     the student, its EMA (ema_decay > 0) and
 *                                                         AdamW moments
 *   heads/NAME, heads_state/NAME, opt_d/m/NAME, opt_d/v/NAME  ADD: the discriminator heads, their
 *                                                         spectral-norm vectors u, v, AdamW moments
 *   loader/stream-NNNN                                    each data stream's LoaderState (bytes),
 *                                                         written by the rank that reads the stream
 *   config                                                the merged config (YAML text)
 *   attributes: step, opt_g_step, opt_d_step, seed, batch, streams, mode, nonfinite_total
 * Every random draw of a step is keyed by (seed, step, global sample index), so the step and the
 * loader states are all the RNG state there is. The frozen networks are not saved: they are the
 * config's weight files. A checkpoint saved on N ranks loads on any M dividing data.streams: every
 * tensor is stored whole in its logical shape, each rank takes its shard after reading. */
#ifndef ADDC_LAUNCH_TRAIN_CKPT_H
#define ADDC_LAUNCH_TRAIN_CKPT_H

#include "distributed/checkpoint.h"
#include "launch/train_setup.h"

/* Saves the trainer's state at t->step into dir (keeping the newest `keep`); collective.
 * path (may be NULL) gets the committed file; *mb_s the write rate of this rank. */
Status train_ckpt_save(Trainer *t, const char *dir, int keep, int64_t nonfinite_total, char *path, int cap,
                       double *mb_s);
/* Restores the trainer from f (opened by ckpt_open_latest or ckpt_open_path) and opens this rank's
 * loaders from their saved states (trainer_init left them closed); collective. The
 * checkpoint must have the run's mode, seed, batch and data.streams (each mismatch named). */
Status train_ckpt_load(Trainer *t, CkptFile *f, int64_t *nonfinite_total);
/* The parameters of s (a plain store: not sharded) from group/NAME of f ("student", "ema", "heads");
 * every rank reads every row. */
Status train_ckpt_read_params(CkptFile *f, ParamStore *s, const char *group);
/* The run's merged config stored in f, bound into cfg (and checked). */
Status train_ckpt_config(CkptFile *f, TrainConfig *cfg);

/* data.streams of a checkpoint (to resolve data.streams 0 before the trainer is built). */
Status train_ckpt_streams(CkptFile *f, int64_t *streams);

#endif
