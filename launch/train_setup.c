/* launch/train_setup: the networks, batch, conditioning, features and optimizer of a training
 * run (see train_setup.h). */
#include "launch/train_setup.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "core/ops.h"
#include "core/rng.h"
#include "losses/draw.h"
#include "losses/metrics.h"
#include "nn/forward.h"

/* ---- networks ---- */

/* role_build's kind for "any network with a classifier head" (model_classifier_dims). */
#define ROLE_CLASSIFIER MODEL_KIND_COUNT

/* Builds a role's network (kind checked), then loads its weights or draws fresh ones. */
static Status role_build(Model **out, const TrainModelConfig *mc, const char *role, ModelKind kind, bool trainable) {
    Model *m = calloc(1, sizeof *m);
    if (!m) return addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory", role);
    *out = m;
    const char *ov[TRAIN_MAX_MODEL_OVERRIDES];
    for (int32_t i = 0; i < mc->n_overrides; i++) ov[i] = mc->overrides[i];
    Status st = model_build(m, mc->config, ov, mc->n_overrides, DEVICE_CPU, trainable);
    if (st != ADDC_OK) return addc_error_context(st, "%s", role);
    int64_t features, labels;
    st = kind == ROLE_CLASSIFIER ? model_classifier_dims(m, &features, &labels) : ADDC_OK;
    if (st != ADDC_OK)
        return addc_error_context(st, "%s.config: %s: classify mode needs a classifier (num_labels)", role, mc->config);
    if (kind != ROLE_CLASSIFIER && m->kind != kind)
        return addc_error_set(ADDC_ERR_INVALID, "%s.config: %s is a %s, the role needs a %s", role, mc->config,
                              model_kind_name(m->kind), model_kind_name(kind));
    if (mc->checkpointing) model_set_checkpointing(m, true);
    if (mc->weights[0]) {
        st = forward_weights_load(m, mc->weights, NULL, NULL);
        if (st != ADDC_OK) return addc_error_context(st, "%s.weights", role);
        return ADDC_OK;
    }
    return forward_weights_random(m, (uint64_t)mc->init_seed);
}

static void role_free(Model **m) {
    if (*m) {
        model_free(*m);
        free(*m);
    }
    *m = NULL;
}

/* The student starts as a copy of the teacher (ADD.md "Networks"). */
static Status student_from_teacher(Trainer *t) {
    ParamStore *s = &t->student->params, *te = &t->teacher->params;
    if (s->n != te->n || s->numel != te->numel)
        return addc_error_set(ADDC_ERR_INVALID,
                              "student_init teacher: student.config and teacher.config describe different UNets "
                              "(%d tensors, %lld values vs %d, %lld)",
                              s->n, (long long)s->numel, te->n, (long long)te->numel);
    memcpy(s->data, te->data, (size_t)s->numel * sizeof(float));
    return ADDC_OK;
}

/* AdamW over the store's buffers (f NULL) or this rank's shards of them. */
static Status optimizer_init(Optimizer *o, ParamStore *p, Fsdp *f, Comm *comm, const TrainOptimConfig *cfg,
                             int64_t total_steps) {
    o->cfg = cfg;
    o->params = p;
    o->fsdp = f;
    o->comm = comm;
    o->values = f ? fsdp_shard_values(f) : p->data;
    o->grads = f ? fsdp_shard_grads(f) : p->grad;
    o->numel = f ? fsdp_shard_numel(f) : p->numel;
    o->total = total_steps;
    o->step = 0;
    if (p->device == DEVICE_CUDA) { /* the moments beside the weights */
        size_t bytes = (size_t)(o->numel ? o->numel : 1) * sizeof(float);
        TRY(cuda_mem_alloc(CUDA_MEM_OPTIM, (void **)&o->m, bytes));
        TRY(cuda_mem_alloc(CUDA_MEM_OPTIM, (void **)&o->v, bytes));
        TRY(cuda_memset(o->m, 0, bytes));
        return cuda_memset(o->v, 0, bytes);
    }
    o->m = calloc((size_t)o->numel, sizeof(float));
    o->v = calloc((size_t)o->numel, sizeof(float));
    if (!o->m || !o->v) return addc_error_set(ADDC_ERR_NOMEM, "optimizer state: out of memory");
    return ADDC_OK;
}

static void optimizer_free(Optimizer *o) {
    if (o->params && o->params->device == DEVICE_CUDA) {
        size_t bytes = (size_t)(o->numel ? o->numel : 1) * sizeof(float);
        cuda_mem_free(CUDA_MEM_OPTIM, o->m, bytes);
        cuda_mem_free(CUDA_MEM_OPTIM, o->v, bytes);
    } else {
        free(o->m);
        free(o->v);
    }
    o->m = o->v = NULL;
}

static Status check_shapes(const Trainer *t) {
    const UNet2DConfig *u = &t->student->net.unet.cfg;
    int64_t lc = latent_codec_channels(&t->codec);
    if (u->in_channels != lc || u->out_channels != lc)
        return addc_error_set(ADDC_ERR_INVALID,
                              "student.config: the UNet has %lld in / %lld out channels, the codec's latents %lld",
                              (long long)u->in_channels, (long long)u->out_channels, (long long)lc);
    int64_t f = latent_codec_downscale(&t->codec) << (t->student->net.unet.n_blocks - 1);
    if (t->cfg.data.size % f)
        return addc_error_set(ADDC_ERR_INVALID, "data.size: %lld is not a multiple of %lld (codec x UNet levels)",
                              (long long)t->cfg.data.size, (long long)f);
    TRY(text_cond_check_unet(&t->text, &t->student->net.unet));
    if (t->heads) {
        const DiscHeadsConfig *h = &t->heads->net.disc.cfg;
        const Dinov2Config *v = &t->feature->net.vit.cfg;
        int64_t taps = v->n_tap_blocks + (v->tap_patch_embedding ? 1 : 0);
        if (h->n_heads != taps || h->channels != v->hidden_size)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "heads.config: %lld heads of %lld channels, the feature network gives %lld taps of "
                                  "%lld",
                                  (long long)h->n_heads, (long long)h->channels, (long long)taps,
                                  (long long)v->hidden_size);
        int64_t c_dim = t->text.Dp;
        if (t->image_encoder) c_dim += t->image_encoder->net.vit.cfg.hidden_size;
        if (h->c_dim != c_dim)
            return addc_error_set(ADDC_ERR_INVALID,
                                  "heads.config: c_dim %lld, but the text and image conditioning give %lld",
                                  (long long)h->c_dim, (long long)c_dim);
    }
    return ADDC_OK;
}

/* Classify mode: the student's classifier head must have `classes` outputs. */
static Status check_classifier(const Trainer *t) {
    int64_t features, labels;
    TRY(model_classifier_dims(t->student, &features, &labels));
    if (labels != t->cfg.classes)
        return addc_error_set(ADDC_ERR_INVALID,
                              "student.config: %s has num_labels %lld, but classes is %lld (set classes=%lld, or "
                              "student.overrides=[num_labels=%lld])",
                              t->cfg.student.config, (long long)labels, (long long)t->cfg.classes, (long long)labels,
                              (long long)t->cfg.classes);
    return ADDC_OK;
}

/* The loader of the training images (shuffled as configured), or of the test images (eval: in
 * file order, no flip). Classify mode reads the label field of each sample's json. */
/* stream: the training stream (loader rank stream of data.streams), ignored for eval. */
static Status loader_open_stream(const Trainer *t, bool eval, int64_t stream, const LoaderState *state,
                                 Loader **out) {
    const TrainConfig *c = &t->cfg;
    LoaderConfig lc;
    loader_config_default(&lc);
    lc.shards = eval ? c->eval.shards : c->data.shards;
    lc.batch_size = eval ? c->eval.batch : c->batch / c->data.streams;
    if (!eval) {
        lc.rank = (int32_t)stream;
        lc.world = (int32_t)c->data.streams;
    }
    lc.height = lc.width = (int32_t)c->data.size;
    lc.flip = !eval && c->data.flip;
    lc.seed = (uint64_t)c->seed;
    lc.threads = (int32_t)c->data.threads;
    lc.shuffle = eval ? 0 : (int32_t)c->data.shuffle;
    lc.shuffle_shards = !eval;
    lc.require_caption = c->text.source != TEXT_SOURCE_NONE;
    if (c->mode == TRAIN_MODE_CLASSIFY) {
        lc.json_fields[0] = c->data.label_field;
        lc.n_json_fields = 1;
    }
    Status st = loader_open(&lc, state, out);
    if (st != ADDC_OK && !eval)
        return addc_error_context(st, "data stream %lld of %lld (data.streams)", (long long)stream,
                                  (long long)c->data.streams);
    return st;
}

static Status loader_open_for(const Trainer *t, bool eval, Loader **out) {
    return loader_open_stream(t, eval, 0, NULL, out);
}

static void loaders_free(Trainer *t) {
    for (int32_t i = 0; i < t->n_loaders; i++) loader_free(t->loaders[i]);
    t->n_loaders = 0;
}

Status trainer_loaders_restore(Trainer *t, const LoaderState *const *states) {
    int32_t n = (int32_t)(t->cfg.data.streams / t->world);
    loaders_free(t);
    for (int32_t i = 0; i < n; i++) {
        TRY(loader_open_stream(t, false, t->first_stream + i, states ? states[i] : NULL, &t->loaders[i]));
        t->n_loaders = i + 1;
    }
    t->have_batch = false;
    return ADDC_OK;
}

uint64_t trainer_first_index(const Trainer *t) { return (uint64_t)(t->step * t->cfg.batch + t->first_sample); }

/* The streams this rank reads and its share of the global batch. */
static Status streams_check(Trainer *t) {
    const TrainConfig *c = &t->cfg;
    int64_t S = c->data.streams, N = t->world;
    if (S < 1) return addc_error_set(ADDC_ERR_INVALID, "data.streams: not resolved (must be >= 1 here)");
    if (S % N)
        return addc_error_set(ADDC_ERR_INVALID,
                              "data.streams %lld cannot be split over %lld ranks: run on a world size that divides "
                              "it (the streams are fixed for the run so that every world size dividing them resumes "
                              "it with the same data)",
                              (long long)S, (long long)N);
    if (c->batch % S)
        return addc_error_set(ADDC_ERR_INVALID, "batch %lld is not a multiple of data.streams %lld", (long long)c->batch,
                              (long long)S);
    if (S / N > TRAIN_MAX_STREAMS)
        return addc_error_set(ADDC_ERR_INVALID, "data.streams %lld over %lld ranks: more than %d loaders per rank",
                              (long long)S, (long long)N, TRAIN_MAX_STREAMS);
    t->first_stream = t->rank * (S / N);
    t->first_sample = t->rank * (c->batch / N);
    return ADDC_OK;
}

/* open_loaders false: a resume opens them from their saved states (train_ckpt_load), so the fresh
 * ones would only read ahead for nothing. */
static Status loader_start(Trainer *t, bool open_loaders) {
    const TrainConfig *c = &t->cfg;
    TRY(streams_check(t));
    if (open_loaders) TRY(trainer_loaders_restore(t, NULL));
    TrainBatch *b = &t->batch;
    b->B = c->batch / t->world;
    b->S = c->data.size;
    b->C = c->data.channels;
    b->images = malloc((size_t)(b->B * b->S * b->S * b->C) * sizeof(float));
    b->captions = calloc((size_t)b->B, sizeof(char *));
    b->time_ids = malloc((size_t)b->B * 6 * sizeof(float));
    b->labels = calloc((size_t)b->B, sizeof(int32_t));
    if (!b->images || !b->captions || !b->time_ids || !b->labels)
        return addc_error_set(ADDC_ERR_NOMEM, "batch: out of memory");
    return ADDC_OK;
}

static Status batch_labels(const Trainer *t, const Loader *l, const Batch *lb, int32_t *labels);

/* The test shards' first batch, with its labels, before training: a wrong eval.shards fails now,
 * not after the run. */
static Status eval_shards_probe(const Trainer *t) {
    Loader *l = NULL;
    TRY(loader_open_for(t, true, &l));
    Batch *lb;
    int32_t *labels = malloc((size_t)t->cfg.eval.batch * sizeof(int32_t));
    Status st = labels ? loader_next(l, &lb) : addc_error_set(ADDC_ERR_NOMEM, "eval: out of memory");
    if (st == ADDC_OK) st = batch_labels(t, l, lb, labels);
    free(labels);
    loader_free(l);
    return st == ADDC_OK ? st : addc_error_context(st, "eval.shards %s", t->cfg.eval.shards);
}

/* Precomputed embeddings: a row for every fixed caption the run will ask for (the batch's are
 * looked up as they come). */
static Status check_captions(const Trainer *t) {
    const TrainConfig *c = &t->cfg;
    const char *empty[1] = {""};
    const DistillConfig *d = &c->loss.distill;
    bool grids = c->sample.every > 0;
    if (c->mode == TRAIN_MODE_DIFFUSION && c->text.drop_prob > 0)
        TRY(text_cond_require(&t->text, empty, 1, "text.drop_prob > 0 (dropped captions are \"\")"));
    if (c->mode == TRAIN_MODE_ADD && (d->cfg_scale != 1 || d->weighting == DISTILL_WEIGHTING_NFSD))
        TRY(text_cond_require(&t->text, empty, 1, "the teacher's guidance (loss.distill: the unconditional \"\")"));
    if (grids && c->sample.teacher_cfg != 1 && c->sample.teacher_steps > 0)
        TRY(text_cond_require(&t->text, empty, 1, "sample.teacher_cfg (the unconditional \"\")"));
    if (grids)
        for (int32_t i = 0; i < c->sample.n_prompts; i++) {
            const char *p = c->sample.prompts[i];
            TRY(text_cond_require(&t->text, &p, 1, "sample.prompts"));
        }
    return ADDC_OK;
}

static Status ema_init(Trainer *t) {
    if (!(t->cfg.ema_decay > 0)) return ADDC_OK;
    if (t->device == DEVICE_CUDA) {
        size_t bytes = (size_t)(t->opt_g.numel ? t->opt_g.numel : 1) * sizeof(float);
        TRY(cuda_mem_alloc(CUDA_MEM_OPTIM, (void **)&t->ema, bytes));
        return cuda_copy_device(t->ema, t->opt_g.values, (size_t)t->opt_g.numel * sizeof(float));
    }
    t->ema = malloc((size_t)t->opt_g.numel * sizeof(float));
    if (!t->ema) return addc_error_set(ADDC_ERR_NOMEM, "ema: out of memory");
    memcpy(t->ema, t->opt_g.values, (size_t)t->opt_g.numel * sizeof(float));
    return ADDC_OK;
}

/* On several ranks: every network's store sharded (the weights are identical on every rank here). */
static Status shard(Trainer *t, Model *m, Fsdp **out, const char *role) {
    if (!m || t->world == 1) return ADDC_OK;
    FsdpOptions o;
    fsdp_options_default(&o);
    o.prefetch = t->cfg.dist.prefetch;
    o.reduce_dtype = t->cfg.dist.reduce_dtype == 1 ? COMM_BF16 : COMM_F32;
    o.max_resident = (int32_t)t->cfg.dist.max_resident;
    return fsdp_wrap(out, &m->params, t->comm, &o, role);
}

static Status shard_all(Trainer *t) {
    TRY(shard(t, t->student, &t->fsdp_student, "student"));
    TRY(shard(t, t->teacher, &t->fsdp_teacher, "teacher"));
    TRY(shard(t, t->feature, &t->fsdp_feature, "feature"));
    TRY(shard(t, t->image_encoder, &t->fsdp_image_encoder, "image_encoder"));
    TRY(shard(t, t->heads, &t->fsdp_heads, "heads"));
    return shard(t, t->vae, &t->fsdp_vae, "codec.vae");
}

/* cfg.device cuda: every network's stores (the heads' spectral-norm state too) to the GPU. */
static Status role_to_device(Model *m) {
    if (!m) return ADDC_OK;
    TRY(param_store_to_device(&m->params, DEVICE_CUDA));
    if (m->state.n > 0 && m->state.allocated) TRY(param_store_to_device(&m->state, DEVICE_CUDA));
    return ADDC_OK;
}

/* This rank's index among the ranks of its node, from the launcher's environment (Open MPI, Slurm,
 * MPICH/Hydra, torchrun-style), or -1 when none says. */
static int local_rank_from_env(void) {
    static const char *const keys[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = getenv(keys[i]);
        char *end;
        long r = v && *v ? strtol(v, &end, 10) : -1;
        if (v && *v && !*end && r >= 0 && r < 1 << 20) return (int)r;
    }
    return -1;
}

/* device cuda: the GPU of this rank (its local rank modulo the GPUs it sees, so one rank per GPU
 * when a node runs as many ranks as it has GPUs), and on several ranks the device collectives
 * (NCCL) that FSDP's GPU stores use. Collective on several ranks. */
static Status device_start(Trainer *t) {
    t->device = (Device)t->cfg.device;
    if (t->device != DEVICE_CUDA) return ADDC_OK;
    int n = cuda_device_count();
    if (t->world > 1) { /* every rank goes through comm_enable_device, which agrees on failures over MPI */
        int local = local_rank_from_env();
        if (local < 0) local = t->rank;
        TRY(comm_enable_device(t->comm, n > 0 ? local % n : 0));
    } else {
        if (n == 0)
            return addc_error_set(ADDC_ERR_UNSUPPORTED, "device cuda: no usable GPU (%s)", cuda_unavailable_reason());
        TRY(cuda_init(0));
    }
    arena_init_device(&t->darena, 256 << 20, 0);
    arena_attach_device(&t->arena, &t->darena);
    return ADDC_OK;
}

static Status roles_to_device(Trainer *t) {
    if (t->device != DEVICE_CUDA) return ADDC_OK;
    TRY(role_to_device(t->student));
    TRY(role_to_device(t->teacher));
    TRY(role_to_device(t->feature));
    TRY(role_to_device(t->image_encoder));
    TRY(role_to_device(t->heads));
    return role_to_device(t->vae);
}

/* The heads' BatchNormLocal normalises groups of virtual_bs samples: a group must not straddle
 * ranks, or the math would depend on the world size. */
static Status check_groups(const Trainer *t) {
    if (!t->heads || t->world == 1) return ADDC_OK;
    int64_t vbs = t->heads->net.disc.cfg.virtual_bs, local = t->cfg.batch / t->world;
    if (vbs > 0 && local % vbs)
        return addc_error_set(ADDC_ERR_INVALID,
                              "heads: BatchNormLocal groups of virtual_bs %lld samples, but each of %d ranks has %lld "
                              "(batch / world): a group would straddle ranks; use a batch with batch / world a "
                              "multiple of %lld",
                              (long long)vbs, t->world, (long long)local, (long long)vbs);
    return ADDC_OK;
}

Status trainer_init(Trainer *t, const TrainConfig *cfg, Comm *comm, bool open_loaders) {
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    t->comm = comm;
    t->rank = comm_rank(comm);
    t->world = comm_size(comm);
    const TrainConfig *c = &t->cfg;
    if (c->batch % t->world)
        return addc_error_set(ADDC_ERR_INVALID, "batch %lld is not a multiple of the %d ranks", (long long)c->batch,
                              t->world);
    bool add = c->mode == TRAIN_MODE_ADD;
    arena_init(&t->arena, 64 << 20, 0);
    tape_init(&t->tape);
    TRY(device_start(t));
    TRY(noise_schedule_init(&t->schedule, &c->loss.schedule));

    if (c->mode == TRAIN_MODE_CLASSIFY) { /* the student alone: images and labels in, logits out */
        TRY(role_build(&t->student, &c->student, "student", ROLE_CLASSIFIER, true));
        TRY(check_classifier(t));
        TRY(roles_to_device(t));
        TRY(shard_all(t));
        TRY(optimizer_init(&t->opt_g, &t->student->params, t->fsdp_student, comm, &c->opt_g, c->steps));
        TRY(ema_init(t));
        if (c->eval.shards[0]) TRY(eval_shards_probe(t));
        return loader_start(t, open_loaders);
    }

    if (add) {
        TRY(role_build(&t->teacher, &c->teacher, "teacher", MODEL_UNET, false));
    }
    TRY(role_build(&t->student, &c->student, "student", MODEL_UNET, true));
    if (add && c->student_init == STUDENT_INIT_TEACHER) TRY(student_from_teacher(t));

    t->codec.kind = (LatentCodecKind)c->codec.kind;
    t->codec.image_channels = c->data.channels;
    t->codec.scale = c->codec.scale;
    if (t->codec.kind == LATENT_CODEC_VAE) {
        TRY(role_build(&t->vae, &c->codec.vae, "codec.vae", MODEL_VAE, false));
        t->codec.vae = &t->vae->net.vae;
        if (t->vae->net.vae.cfg.in_channels != c->data.channels)
            return addc_error_set(ADDC_ERR_INVALID, "codec.vae: the VAE takes %lld channels, data.channels is %lld",
                                  (long long)t->vae->net.vae.cfg.in_channels, (long long)c->data.channels);
    }
    if (c->text.source != TEXT_SOURCE_NONE) {
        TextCondOptions to;
        text_cond_options_from_train(&to, &c->text);
        TRY(text_cond_init(&t->text, &to));
        TRY(check_captions(t));
    }
    if (add) {
        TRY(role_build(&t->feature, &c->feature, "feature", MODEL_DINOV2, false));
        if (c->image_encoder.config[0])
            TRY(role_build(&t->image_encoder, &c->image_encoder, "image_encoder", MODEL_DINOV2, false));
        TRY(role_build(&t->heads, &c->heads, "heads", MODEL_DISC_HEADS, true));
    }
    TRY(check_shapes(t));
    TRY(check_groups(t));
    TRY(roles_to_device(t));
    TRY(shard_all(t));
    t->teacher_sumsq = trainer_teacher_sumsq(t); /* over the shards as at the end: the same sum */
    if (add) TRY(optimizer_init(&t->opt_d, &t->heads->params, t->fsdp_heads, comm, &c->opt_d, c->steps));
    TRY(optimizer_init(&t->opt_g, &t->student->params, t->fsdp_student, comm, &c->opt_g, c->steps));
    TRY(ema_init(t));
    return loader_start(t, open_loaders);
}

static void unshard(Fsdp **f) {
    if (*f) fsdp_free(*f);
    *f = NULL;
}

void trainer_free(Trainer *t) {
    loaders_free(t);
    unshard(&t->fsdp_student);
    unshard(&t->fsdp_teacher);
    unshard(&t->fsdp_feature);
    unshard(&t->fsdp_image_encoder);
    unshard(&t->fsdp_heads);
    unshard(&t->fsdp_vae);
    if (t->batch.captions)
        for (int64_t i = 0; i < t->batch.B; i++) free(t->batch.captions[i]);
    free(t->batch.captions);
    free(t->batch.images);
    free(t->batch.time_ids);
    free(t->batch.labels);
    optimizer_free(&t->opt_g);
    optimizer_free(&t->opt_d);
    if (t->device == DEVICE_CUDA)
        cuda_mem_free(CUDA_MEM_OPTIM, t->ema, (size_t)(t->opt_g.numel ? t->opt_g.numel : 1) * sizeof(float));
    else
        free(t->ema);
    text_cond_free(&t->text);
    role_free(&t->student);
    role_free(&t->teacher);
    role_free(&t->feature);
    role_free(&t->image_encoder);
    role_free(&t->heads);
    role_free(&t->vae);
    tape_free(&t->tape);
    arena_free(&t->arena);
    if (t->device == DEVICE_CUDA) arena_free(&t->darena);
}

/* ---- batch ---- */

/* Labels from the loader's json field (classify mode): integers in [0, classes). */
static Status batch_labels(const Trainer *t, const Loader *l, const Batch *lb, int32_t *labels) {
    const char *field = t->cfg.data.label_field;
    for (int64_t i = 0; i < lb->n; i++) {
        double v = lb->json[i * lb->n_json_fields];
        const char *shard = loader_shard_url(l, lb->ids[i].shard);
        if (isnan(v))
            return addc_error_set(ADDC_ERR_INVALID,
                                  "data.label_field: sample '%s' of %s has no number '%s' in its json (set "
                                  "data.label_field to the field that holds the class)",
                                  lb->keys[i], shard, field);
        if (!(v >= 0 && v < (double)t->cfg.classes) || v != floor(v))
            return addc_error_set(ADDC_ERR_INVALID,
                                  "data.label_field: sample '%s' of %s has %s %g, not a class in 0 .. %lld (classes "
                                  "%lld)",
                                  lb->keys[i], shard, field, v, (long long)t->cfg.classes - 1,
                                  (long long)t->cfg.classes);
        labels[i] = (int32_t)v;
    }
    return ADDC_OK;
}

/* Copies lb's n samples into the batch from sample `at`. */
static Status batch_take(Trainer *t, const Loader *l, const Batch *lb, int64_t at) {
    TrainBatch *b = &t->batch;
    if (t->cfg.mode == TRAIN_MODE_CLASSIFY) TRY(batch_labels(t, l, lb, b->labels + at));
    int64_t px = b->S * b->S;
    float *img = b->images + at * px * b->C;
    for (int64_t i = 0; i < lb->n * px; i++)
        for (int64_t ch = 0; ch < b->C; ch++) img[i * b->C + ch] = lb->images[i * 3 + ch];
    for (int64_t j = 0; j < lb->n; j++) {
        int64_t i = at + j;
        free(b->captions[i]);
        b->captions[i] = strdup(lb->captions[j] ? lb->captions[j] : "");
        if (!b->captions[i]) return addc_error_set(ADDC_ERR_NOMEM, "batch: out of memory");
        float *ti = b->time_ids + 6 * i;
        ti[0] = (float)lb->original_size[2 * j];
        ti[1] = (float)lb->original_size[2 * j + 1];
        ti[2] = (float)lb->crop_top_left[2 * j];
        ti[3] = (float)lb->crop_top_left[2 * j + 1];
        ti[4] = (float)lb->target_size[2 * j];
        ti[5] = (float)lb->target_size[2 * j + 1];
    }
    return ADDC_OK;
}

Status trainer_next_batch(Trainer *t) {
    if (t->have_batch && t->cfg.data.fixed_batch) return ADDC_OK;
    int64_t per = t->cfg.batch / t->cfg.data.streams;
    for (int32_t s = 0; s < t->n_loaders; s++) {
        Batch *lb;
        TRY(loader_next(t->loaders[s], &lb));
        if (lb->n != per)
            return addc_error_set(ADDC_ERR_INVALID, "data stream %lld gave %lld samples, expected %lld",
                                  (long long)(t->first_stream + s), (long long)lb->n, (long long)per);
        TRY(batch_take(t, t->loaders[s], lb, s * per));
    }
    t->have_batch = true;
    return ADDC_OK;
}

Var *batch_images(Ctx *c, const TrainBatch *b) {
    int64_t shape[4] = {b->B, b->S, b->S, b->C};
    if (c->device == DEVICE_CUDA) return var_from_host(c, DTYPE_F32, 4, shape, b->images);
    return var_leaf(c, tensor_make(b->images, DTYPE_F32, DEVICE_CPU, 4, shape), false);
}

/* ---- conditioning ---- */

static Var *zeros(Ctx *c, int32_t nd, const int64_t *shape) { return var_zeros(c, DTYPE_F32, nd, shape); }

/* The conditioning of B images with the given captions and time ids (B, 6). */
static Status condition_build(Ctx *c, Trainer *t, const char *const *captions, int64_t B, Var *time_ids,
                              TrainCond *out) {
    memset(out, 0, sizeof *out);
    const UNet2D *u = &t->student->net.unet;
    out->time_ids = var_to_device(c, time_ids, c->device);
    if (t->text.kind != TEXT_COND_NONE) {
        /* the frozen text encoders run on the CPU; their embeddings go to the step's device */
        Ctx host = *c;
        host.device = DEVICE_CPU;
        host.tape = NULL;
        TRY(text_cond_encode(&host, &t->text, captions, B, &out->context, &out->pooled));
        out->context = var_to_device(c, out->context, c->device);
        if (out->pooled) out->pooled = var_to_device(c, out->pooled, c->device);
        if (!out->context) return addc_error_status();
    } else {
        int64_t cshape[3] = {B, 1, u->cfg.cross_attention_dim};
        out->context = zeros(c, 3, cshape);
    }
    if (u->has_add_embedding) { /* widths checked at setup (text_cond_check_unet) */
        Var *pooled = out->pooled;
        if (!pooled) {
            int64_t pshape[2] = {B, text_cond_unet_pooled_width(u)};
            pooled = zeros(c, 2, pshape);
        }
        out->added.text_embeds = pooled;
        out->added.time_ids = out->time_ids;
        out->has_added = true;
    }
    return out->context && out->time_ids ? ADDC_OK : addc_error_status();
}

Status text_condition(Ctx *c, Trainer *t, double drop_prob, bool uncond, TrainCond *out) {
    const TrainBatch *b = &t->batch;
    int64_t B = b->B;
    const char *captions[B];
    float drop[1];
    for (int64_t i = 0; i < B; i++) {
        bool empty = uncond;
        if (t->text.kind != TEXT_COND_NONE && !empty && drop_prob > 0) {
            RngKey k = rng_key((uint64_t)t->cfg.seed, RNG_PURPOSE_DROPOUT, trainer_first_index(t) + (uint64_t)i,
                               (uint32_t)t->step);
            rng_fill_uniform(&k, 0, 1, drop);
            empty = drop[0] < drop_prob;
        }
        captions[i] = empty ? "" : b->captions[i];
    }
    int64_t tshape[2] = {B, 6};
    Var *time_ids = var_leaf(c, tensor_make(b->time_ids, DTYPE_F32, DEVICE_CPU, 2, tshape), false);
    return condition_build(c, t, captions, B, time_ids, out);
}

Status text_condition_prompts(Ctx *c, Trainer *t, const char *const *captions, int64_t B, TrainCond *out) {
    int64_t tshape[2] = {B, 6};
    Ctx host = *c;
    host.device = DEVICE_CPU; /* filled here, moved to the step's device by condition_build */
    Var *time_ids = var_new(&host, DTYPE_F32, 2, tshape);
    if (!time_ids) return addc_error_status();
    float S = (float)t->cfg.data.size;
    for (int64_t i = 0; i < B; i++) {
        float *ti = (float *)time_ids->v.data + 6 * i;
        ti[0] = ti[1] = ti[4] = ti[5] = S;
        ti[2] = ti[3] = 0;
    }
    return condition_build(c, t, captions, B, time_ids, out);
}

Var *unet_pred(Ctx *c, const Model *m, Var *z, const int64_t *t, const TrainCond *cond) {
    if (!z) return NULL;
    int64_t B = z->v.shape[0];
    float tf[B];
    for (int64_t b = 0; b < B; b++) tf[b] = (float)t[b];
    Var *tv = var_from_host(c, DTYPE_F32, 1, &B, tf);
    if (!tv) return NULL;
    Var *y = unet2d_forward(c, &m->net.unet, z, tv, cond->context, cond->has_added ? &cond->added : NULL);
    return y && y->v.dtype != DTYPE_F32 ? op_cast(c, y, DTYPE_F32) : y; /* a bf16 compute's output */
}

/* ---- discriminator ---- */

int disc_head_count(const Trainer *t) { return (int)t->heads->net.disc.cfg.n_heads; }

/* (B, S, S, C) -> what the network takes: gray images repeated to its channels */
static Var *vit_input(Ctx *c, const Dinov2 *vit, Var *images) {
    if (!images) return NULL;
    if (images->v.shape[3] != vit->cfg.num_channels) {
        int64_t shape[4] = {images->v.shape[0], images->v.shape[1], images->v.shape[2], vit->cfg.num_channels};
        images = op_broadcast_to(c, images, 4, shape);
    }
    return dinov2_preprocess(c, vit, images);
}

Status disc_features(Ctx *c, const Trainer *t, Var *images, Var **features) {
    const Dinov2 *vit = &t->feature->net.vit;
    Var *px = vit_input(c, vit, images);
    if (!px) return addc_error_status();
    Dinov2Output o;
    TRY(dinov2_forward(c, vit, px, false, &o));
    for (int k = 0; k < o.n_taps; k++) {
        features[k] = disc_tokens_readout(c, o.taps[k]);
        if (!features[k]) return addc_error_status();
    }
    return ADDC_OK;
}

Var *disc_condition(Ctx *c, const Trainer *t, const TrainCond *cond, Var *real_images) {
    Var *text = t->text.kind != TEXT_COND_NONE ? cond->pooled : NULL;
    Var *img = NULL;
    if (t->image_encoder) {
        const Dinov2 *vit = &t->image_encoder->net.vit;
        Dinov2Output o;
        Var *px = vit_input(c, vit, real_images);
        if (!px || dinov2_forward(c, vit, px, true, &o) != ADDC_OK) return NULL;
        img = o.cls;
    }
    if (text && img) return op_concat(c, text, img, 1);
    return text ? text : img;
}

Status disc_logits(Ctx *c, const Trainer *t, Var *const *features, Var *cond, bool update_sn, Var **logits) {
    for (int k = 0; k < disc_head_count(t); k++) {
        logits[k] = disc_head_forward(c, &t->heads->net.disc, k, features[k], cond, update_sn);
        if (!logits[k]) return addc_error_status();
    }
    return ADDC_OK;
}

/* ---- optimizer ---- */

double optimizer_lr(const Optimizer *o) {
    double lr = o->cfg->lr;
    if (o->cfg->warmup > 0 && o->step < o->cfg->warmup) return lr * (double)(o->step + 1) / (double)o->cfg->warmup;
    if (o->cfg->decay == OPTIM_DECAY_COSINE && o->total > o->cfg->warmup) {
        double p = (double)(o->step - o->cfg->warmup) / (double)(o->total - o->cfg->warmup); /* 0 .. 1 */
        double r = o->cfg->min_lr_ratio;
        lr *= r + (1 - r) * 0.5 * (1 + cos(M_PI * fmin(p, 1.0)));
    }
    return lr;
}

Status optimizer_grads_reduce(Optimizer *o) { return o->fsdp ? fsdp_grads_flush(o->fsdp) : ADDC_OK; }

static bool on_gpu(const Optimizer *o) { return o->params->device == DEVICE_CUDA; }

double optimizer_grad_norm(Optimizer *o) {
    double ss = 0;
    if (on_gpu(o)) {
        if (cuda_sum_squares(o->grads, o->numel, &ss) != ADDC_OK) return NAN;
    } else {
        ss = sum_squares(o->grads, o->numel);
    }
    if (o->fsdp && comm_allreduce(o->comm, &ss, &ss, 1, COMM_F64, COMM_SUM, "gradient norm") != ADDC_OK) return NAN;
    return sqrt(ss);
}

void optimizer_zero_grad(Optimizer *o) {
    if (o->fsdp) fsdp_zero_grad(o->fsdp);
    else param_store_zero_grad(o->params);
}

Status optimizer_step(Optimizer *o, double norm) {
    bool gpu = on_gpu(o);
    if (o->cfg->grad_clip > 0) { /* as grad_clip_global_norm (torch's clip_grad_norm_) */
        double coef = o->cfg->grad_clip / (norm + 1e-6);
        if (coef < 1.0 && gpu) TRY(cuda_scale_f32(o->grads, o->numel, (float)coef));
        else if (coef < 1.0)
            for (int64_t i = 0; i < o->numel; i++) o->grads[i] *= (float)coef;
    }
    AdamWConfig a = {optimizer_lr(o), o->cfg->beta1, o->cfg->beta2, o->cfg->eps, o->cfg->weight_decay};
    o->step++;
    if (gpu)
        TRY(cuda_adamw_update(o->values, o->grads, o->m, o->v, o->numel, a.lr, a.beta1, a.beta2, a.eps, a.weight_decay,
                              o->step));
    else
        adamw_update(o->values, o->grads, o->m, o->v, o->numel, &a, o->step);
    optimizer_zero_grad(o);
    if (o->fsdp) fsdp_invalidate(o->fsdp); /* the gathered units hold the old values */
    return ADDC_OK;
}

Status trainer_ema_update(Trainer *t) {
    if (!t->ema) return ADDC_OK;
    if (t->device == DEVICE_CUDA) return cuda_ema_update(t->ema, t->opt_g.values, t->opt_g.numel, t->cfg.ema_decay);
    ema_update(t->ema, t->opt_g.values, t->opt_g.numel, t->cfg.ema_decay);
    return ADDC_OK;
}

void trainer_ema_swap(Trainer *t) {
    if (!t->ema) return;
    if (t->device == DEVICE_CUDA) {
        cuda_swap_f32(t->opt_g.values, t->ema, t->opt_g.numel); /* a launch error shows at the next sync */
        if (t->fsdp_student) fsdp_invalidate(t->fsdp_student);
        return;
    }
    float *p = t->opt_g.values, *e = t->ema;
    for (int64_t i = 0; i < t->opt_g.numel; i++) {
        float x = p[i];
        p[i] = e[i];
        e[i] = x;
    }
    if (t->fsdp_student) fsdp_invalidate(t->fsdp_student);
}

Status trainer_save_student(Trainer *t, const char *path, bool ema) {
    ParamStore *p = &t->student->params;
    if (!t->fsdp_student) {
        if (ema) trainer_ema_swap(t);
        Status st = weights_save(p, path, DTYPE_F32, NULL);
        if (ema) trainer_ema_swap(t);
        return st;
    }
    /* sharded: every rank gathers the shards into host memory, unit by unit; rank 0 writes */
    float *full = malloc((size_t)(p->numel ? p->numel : 1) * sizeof(float));
    if (!full) return addc_error_set(ADDC_ERR_NOMEM, "saving %s: out of memory for %lld values", path, (long long)p->numel);
    Status st = fsdp_gather_full_host(t->fsdp_student, ema && t->ema ? t->ema : t->opt_g.values, full);
    if (st == ADDC_OK && t->rank == 0) st = weights_save_values(p, full, path, DTYPE_F32, NULL);
    free(full);
    return st;
}

/* ---- classifier ---- */

Status trainer_test_accuracy(Trainer *t, int64_t *correct, int64_t *total) {
    const TrainConfig *c = &t->cfg;
    *correct = *total = 0;
    Loader *l = NULL;
    TRY(loader_open_for(t, true, &l));
    /* an arena of its own (the step arena's peak stays the step's), with a device companion on cuda */
    Arena arena, darena;
    arena_init(&arena, 16 << 20, 0);
    if (t->device == DEVICE_CUDA) {
        arena_init_device(&darena, 64 << 20, 0);
        arena_attach_device(&arena, &darena);
    }
    Ctx n = ctx_make(&arena, NULL, t->device), host = ctx_make(&arena, NULL, DEVICE_CPU);
    float *logits_h = malloc((size_t)c->eval.batch * (size_t)c->classes * sizeof(float));
    int32_t *labels = malloc((size_t)c->eval.batch * sizeof(int32_t));
    Status st = labels ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "eval: out of memory");
    bool done = false;
    while (st == ADDC_OK && !done) {
        Batch *lb;
        st = loader_next(l, &lb);
        if (st != ADDC_OK) {
            st = addc_error_context(st, "eval.shards %s", c->eval.shards);
            break;
        }
        /* the stream wraps around: the first image of the next epoch ends the pass */
        int64_t B = 0, left = c->eval.real_max > 0 ? c->eval.real_max - *total : INT64_MAX;
        while (B < lb->n && B < left && lb->ids[B].epoch == 0) B++;
        done = B < lb->n || B == left;
        if (B == 0) break;
        st = batch_labels(t, l, lb, labels);
        if (st != ADDC_OK) break;
        int64_t shape[4] = {B, lb->h, lb->w, c->data.channels};
        Var *x = var_new(&host, DTYPE_F32, 4, shape);
        if (!x || !logits_h) {
            st = x ? addc_error_set(ADDC_ERR_NOMEM, "eval: out of memory") : addc_error_status();
            break;
        }
        float *dst = x->v.data;
        for (int64_t i = 0; i < B * lb->h * lb->w; i++)
            for (int64_t ch = 0; ch < c->data.channels; ch++) dst[i * c->data.channels + ch] = lb->images[i * 3 + ch];
        x = var_to_device(&n, x, n.device);
        Var *features, *logits;
        st = x ? model_classify(&n, t->student, x, &features, &logits) : addc_error_status();
        if (st == ADDC_OK) st = var_download_f32(logits, logits_h);
        if (st != ADDC_OK) break;
        *correct += metrics_argmax_hits(logits_h, logits->v.shape[0], logits->v.shape[1], labels);
        *total += B;
        arena_reset(&arena);
    }
    arena_free(&arena);
    if (t->device == DEVICE_CUDA) arena_free(&darena);
    free(labels);
    free(logits_h);
    loader_free(l);
    return st;
}

double trainer_teacher_sumsq(const Trainer *t) {
    if (!t->teacher) return 0.0;
    bool gpu = t->teacher->params.device == DEVICE_CUDA;
    /* a sharded store's own buffer is reserved address space: sum the shards, then over ranks */
    const float *x = t->fsdp_teacher ? fsdp_shard_values(t->fsdp_teacher) : t->teacher->params.data;
    int64_t n = t->fsdp_teacher ? fsdp_shard_numel(t->fsdp_teacher) : t->teacher->params.numel;
    double ss = 0;
    if (gpu && cuda_sum_squares(x, n, &ss) != ADDC_OK) return NAN;
    if (!gpu) ss = sum_squares(x, n);
    if (!t->fsdp_teacher) return ss;
    return comm_allreduce(t->comm, &ss, &ss, 1, COMM_F64, COMM_SUM, "teacher checksum") == ADDC_OK ? ss : NAN;
}
