/* launch/train_setup: everything the training step of launch/train.c calls that is not the
 * algorithm itself: building each role's network from the run config, the batch (images,
 * captions, micro-conditioning, labels), text and image conditioning, the discriminator's
 * features, the optimizer step (warmup, clipping, AdamW, EMA), saving weights and, in classify
 * mode, the test accuracy.
 *
 * Ranks (ARCHITECTURE §5). Under `mpirun -np N` every rank builds every network and loads the same
 * weights, then each store is sharded with FSDP (distributed/fsdp.h): the student and heads with
 * their gradients, optimizer moments and EMA as 1/N shards, the frozen teacher, feature network,
 * image encoder and VAE forward-only (the frozen text encoders stay whole on every rank). The
 * global batch (cfg.batch) comes from data.streams loaders, batch/streams samples each, stream v
 * reading every streams-th shard (loader rank v of streams); rank r owns streams
 * [r S/N, (r+1) S/N), i.e. the global samples [r B/N, (r+1) B/N), and every random draw is keyed
 * by the global sample index, so the step's math does not depend on N (to rounding). On one rank
 * nothing is sharded and the store buffers are used directly.
 *
 * GPU (cfg.device cuda): the networks are built and loaded on the CPU, then every store moves to
 * the device (nn/param.h param_store_to_device) with the optimizer moments and the EMA beside it;
 * the step arena gets a device companion. On several ranks each rank takes the GPU of its local rank
 * and the collectives of device buffers go through NCCL (comm_enable_device) before the stores are
 * sharded on the GPU. The frozen text encoders stay on the CPU: their embeddings are copied up per
 * batch (ADD-XL precomputes them anyway). Checkpoints and saved weights are staged through the host
 * (sharded stores unit by unit: a full copy of a network never has to fit on the GPU). */
#ifndef ADDC_LAUNCH_TRAIN_SETUP_H
#define ADDC_LAUNCH_TRAIN_SETUP_H

#include <stdbool.h>
#include <stdint.h>

#include "data/loader.h"
#include "distributed/comm.h"
#include "distributed/fsdp.h"
#include "launch/text_cond.h"
#include "launch/train_config.h"
#include "losses/diffusion.h"
#include "nn/latent.h"
#include "nn/model.h"

#define TRAIN_MAX_STREAMS 256 /* loaders per rank */

/* AdamW state of one parameter store: over the store's flat buffers on one rank, over this rank's
 * FSDP shards on several. */
typedef struct Optimizer {
    const TrainOptimConfig *cfg;
    ParamStore *params;
    Fsdp *fsdp;           /* NULL on one rank */
    Comm *comm;
    float *values, *grads; /* (numel) the store's data and grad, or the shards */
    int64_t numel;
    float *m, *v; /* (numel) moments, on the store's device */
    int64_t step; /* updates done */
    int64_t total; /* the run's steps (cosine decay) */
} Optimizer;

/* One training batch, owned by the trainer (a copy of the loader's, so fixed_batch can keep it). */
typedef struct TrainBatch {
    int64_t B, S, C;
    float *images;   /* (B, S, S, C) in [-1, 1] */
    char **captions; /* (B) */
    float *time_ids; /* (B, 6): original h, w, crop top, left, target h, w (SDXL micro-conditioning) */
    int32_t *labels; /* (B) classify mode: the class of each image, from data.label_field */
} TrainBatch;

/* The conditioning of one batch. */
typedef struct TrainCond {
    Var *context;   /* (B, T, cross_attention_dim): the UNet's encoder_hidden_states */
    Var *pooled;    /* (B, P) the text's pooled vector (launch/text_cond.h); NULL without text or with
                       embeddings that have no text_embeds */
    Var *time_ids;  /* (B, 6) */
    UNetAddedCond added; /* SDXL text_time; unused otherwise */
    bool has_added;
} TrainCond;

typedef struct Trainer {
    TrainConfig cfg;
    Comm *comm;
    int rank, world;
    Model *student, *teacher, *feature, *image_encoder, *heads, *vae; /* NULL: role unused */
    Fsdp *fsdp_student, *fsdp_teacher, *fsdp_feature, *fsdp_image_encoder, *fsdp_heads, *fsdp_vae; /* world > 1 */
    LatentCodec codec;
    TextCond text;      /* kind TEXT_COND_NONE without text */
    NoiseSchedule schedule;
    Optimizer opt_g, opt_d;
    float *ema;         /* (opt_g.numel: the student's values or its shard) or NULL */
    Loader *loaders[TRAIN_MAX_STREAMS]; /* this rank's streams first_stream, first_stream + 1, ... */
    int32_t n_loaders;
    int64_t first_stream;
    int64_t first_sample; /* global index of this rank's first sample in a batch: rank * batch / world */
    TrainBatch batch;   /* this rank's batch / world samples */
    bool have_batch;
    Device device;      /* cfg.device: where the networks (all but the text encoders) and the step run */
    Arena arena;        /* the step arena (host: bookkeeping, and tensors on the CPU) */
    Arena darena;       /* its device companion on cuda */
    Tape tape;
    int64_t step;       /* optimizer steps done */
    double teacher_sumsq; /* at setup: the teacher must not change */
} Trainer;

/* Builds every network the mode needs, loads or initialises their weights, shards them over comm's
 * ranks and, with open_loaders, opens this rank's loaders fresh (a resume leaves that to
 * train_ckpt_load, which opens them from their saved states). cfg->data.streams must be set (> 0)
 * and divide batch; the world size must divide it. Classify mode: the student (any model with a
 * classifier head of `classes` labels) alone. */
Status trainer_init(Trainer *t, const TrainConfig *cfg, Comm *comm, bool open_loaders);
/* Reopens this rank's loaders from saved states (one per stream it owns, in order). */
Status trainer_loaders_restore(Trainer *t, const LoaderState *const *states);
/* The global sample index of this rank's sample 0 at the current step. */
uint64_t trainer_first_index(const Trainer *t);
void trainer_free(Trainer *t);

/* The next batch (the same one again with data.fixed_batch). Classify mode: a sample whose json
 * lacks data.label_field, or whose label is not an integer in [0, classes), is an error that names
 * the sample, its shard and the value. */
Status trainer_next_batch(Trainer *t);
/* The batch's images as a leaf Var (B, S, S, C), no gradient. */
Var *batch_images(Ctx *c, const TrainBatch *b);
/* The batch's conditioning (frozen text encoders or precomputed embeddings, no tape). drop_prob > 0
 * replaces captions by "" with a draw keyed by (seed, DROPOUT, sample, step), the same draws for
 * either source. uncond: every caption "" (teacher CFG). A caption the embeddings lack is an
 * error that names it. */
Status text_condition(Ctx *c, Trainer *t, double drop_prob, bool uncond, TrainCond *out);
/* The conditioning of B images captioned captions[0 .. B) (sample grids), time ids
 * (S, S, 0, 0, S, S) for data.size S. */
Status text_condition_prompts(Ctx *c, Trainer *t, const char *const *captions, int64_t B, TrainCond *out);
/* The UNet m's raw output (epsilon or v) at latents z (B, h, w, c), timesteps t (B), f32 (computed in
 * c->compute). */
Var *unet_pred(Ctx *c, const Model *m, Var *z, const int64_t *t, const TrainCond *cond);

/* The discriminator heads' inputs for images (B, S, S, C): the feature network's taps read out
 * as (B, N, D) tokens (CLS added to every patch), one per head. Taped when c has a tape. */
Status disc_features(Ctx *c, const Trainer *t, Var *images, Var **features);
/* The heads' conditioning (B, c_dim): pooled text then the image encoder's CLS of the real
 * images, as configured; NULL with c_dim 0. */
Var *disc_condition(Ctx *c, const Trainer *t, const TrainCond *cond, Var *real_images);
/* All heads on features[k]: logits[k] (B, N). */
Status disc_logits(Ctx *c, const Trainer *t, Var *const *features, Var *cond, bool update_sn, Var **logits);
int disc_head_count(const Trainer *t);

/* The learning rate at the next step (linear warmup, then constant or cosine decay). */
double optimizer_lr(const Optimizer *o);
/* With FSDP: reduce-scatters the gradients still pending after a backward (collective; no-op on one
 * rank). */
Status optimizer_grads_reduce(Optimizer *o);
/* The global gradient norm (all ranks' shards; collective). */
double optimizer_grad_norm(Optimizer *o);
/* Clips the gradients to the norm given, takes one AdamW step, zeroes the gradients. */
Status optimizer_step(Optimizer *o, double grad_norm);
/* Drops the gradients (a skipped step). */
void optimizer_zero_grad(Optimizer *o);
/* ema = decay ema + (1 - decay) student */
Status trainer_ema_update(Trainer *t);
/* Exchanges the student's weights and the EMA (no effect without one); twice restores both exactly. */
void trainer_ema_swap(Trainer *t);

/* The student's weights (or, with ema, its EMA) as a diffusers-layout safetensors file, written by
 * rank 0 (collective: the values are gathered). */
Status trainer_save_student(Trainer *t, const char *path, bool ema);
/* Sum of squares of the teacher's weights (0 without a teacher; collective). */
double trainer_teacher_sumsq(const Trainer *t);

/* Classify mode: the student's (current weights') correct predictions over eval.shards, read in
 * file order (no shuffle, no flip, centre crop) once through, or the first eval.real_max images;
 * eval.batch images per call, no tape, an arena of its own. */
Status trainer_test_accuracy(Trainer *t, int64_t *correct, int64_t *total);

#endif
