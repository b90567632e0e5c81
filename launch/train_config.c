/* launch/train_config: the schema of a training run and its checks (see train_config.h). */
#include "launch/train_config.h"

#include <stddef.h>

#include "nn/latent.h"

const char *const train_mode_names[TRAIN_MODE_COUNT] = {"add", "diffusion", "classify"};
static const char *const student_init_names[] = {"teacher", "weights", "random"};
static const char *const device_names[] = {"cpu", "cuda"}; /* Device order; meta is not a choice */
static const char *const compute_names[] = {"f32", "bf16"}; /* DType order (DTYPE_F32, DTYPE_BF16) */
static const char *const text_source_names[] = {"none", "encoder", "embeddings"};
static const char *const text_layer_names[] = {"penultimate", "last"};
static const char *const clean_names[] = {"open_clip", "hf"}; /* TokenizerClean order */

static const ConfigField model_fields[] = {
    CONFIG_STRING(TrainModelConfig, config, "", "model YAML (configs/models/); empty: role not used"),
    CONFIG_STRING(TrainModelConfig, weights, "", "safetensors weights; empty: fresh weights keyed by init_seed"),
    CONFIG_INT(TrainModelConfig, init_seed, "0", 0, INT64_MAX, "seed of fresh weights"),
    CONFIG_LIST(TrainModelConfig, overrides, n_overrides, CONFIG_TYPE_STRING, "[]",
                "field=value overrides of the model YAML"),
    CONFIG_BOOL(TrainModelConfig, checkpointing, "false",
                "activation checkpointing of the network's blocks: recomputed in backward (same numbers, less memory; "
                "without a tape each block keeps only its output)"),
};
static const ConfigSchema model_schema = CONFIG_SCHEMA("model", model_fields);

static const ConfigField codec_fields[] = {
    CONFIG_ENUM(TrainCodecConfig, kind, "vae", latent_codec_kind_names,
                "vae, unshuffle (2x2 pixel unshuffle: the toy) or none (pixel space)"),
    CONFIG_STRUCT(TrainCodecConfig, vae, model_schema, "the AutoencoderKL (kind vae)"),
    CONFIG_FLOAT(TrainCodecConfig, scale, "1", "unshuffle / none: latent = scale * image"),
};
static const ConfigSchema codec_schema = CONFIG_SCHEMA("codec", codec_fields);

static const ConfigField text_fields[] = {
    CONFIG_ENUM(TrainTextConfig, source, "none", text_source_names,
                "none (zero context), encoder (tokenizer + frozen CLIP text encoders) or embeddings (precomputed "
                "by addc embed)"),
    CONFIG_STRUCT(TrainTextConfig, encoder, model_schema, "the CLIP text encoder (SDXL: CLIP-L)"),
    CONFIG_STRUCT(TrainTextConfig, encoder2, model_schema,
                  "optional second CLIP text encoder (SDXL: bigG): contexts concatenated, its pooled vector"),
    CONFIG_STRING(TrainTextConfig, tokenizer, "configs/tokenizer/bpe_simple_vocab_16e6.txt.gz",
                  "BPE merges (bpe_simple_vocab_16e6.txt.gz or merges.txt)"),
    CONFIG_ENUM(TrainTextConfig, clean, "hf", clean_names, "caption cleaning: hf (transformers) or open_clip"),
    CONFIG_ENUM(TrainTextConfig, layer, "penultimate", text_layer_names, "hidden states the UNet attends to"),
    CONFIG_STRING(TrainTextConfig, embeddings, "",
                  "source embeddings: safetensors of encoder_hidden_states, text_embeds and their captions"),
    CONFIG_FLOAT(TrainTextConfig, drop_prob, "0", "diffusion mode: probability a caption is replaced by \"\""),
};
static const ConfigSchema text_schema = CONFIG_SCHEMA("text", text_fields);

static const ConfigField data_fields[] = {
    CONFIG_STRING(TrainDataConfig, shards, "", "WebDataset shards (brace spec)"),
    CONFIG_INT(TrainDataConfig, size, "32", 1, 65536, "image side after resize and crop"),
    CONFIG_INT(TrainDataConfig, channels, "3", 1, 3, "1 (gray: the first channel) or 3"),
    CONFIG_INT(TrainDataConfig, shuffle, "1000", 0, 8192, "shuffle buffer slots"),
    CONFIG_INT(TrainDataConfig, threads, "2", 0, 256, "decode threads (0: online CPUs)"),
    CONFIG_BOOL(TrainDataConfig, flip, "false", "random horizontal flips"),
    CONFIG_BOOL(TrainDataConfig, fixed_batch, "false", "train on the first batch every step (overfitting checks)"),
    CONFIG_STRING(TrainDataConfig, label_field, "label", "json number with the class (classify mode, eval)"),
    CONFIG_INT(TrainDataConfig, streams, "0", 0, 1 << 16,
               "data streams (each its own loader over every streams-th shard); the global batch takes batch/streams "
               "samples from each; ranks own streams/world each; 0: the world size of a fresh run"),
};
static const ConfigSchema data_schema = CONFIG_SCHEMA("data", data_fields);

static const char *const decay_names[] = {"none", "cosine"};

#define OPTIM_FIELDS(lr_, b1_, b2_)                                                                              \
    CONFIG_FLOAT(TrainOptimConfig, lr, lr_, "AdamW learning rate"),                                             \
        CONFIG_FLOAT(TrainOptimConfig, beta1, b1_, "AdamW beta1"),                                              \
        CONFIG_FLOAT(TrainOptimConfig, beta2, b2_, "AdamW beta2"),                                              \
        CONFIG_FLOAT(TrainOptimConfig, eps, "1e-8", "AdamW epsilon"),                                           \
        CONFIG_FLOAT(TrainOptimConfig, weight_decay, "0", "decoupled weight decay"),                            \
        CONFIG_INT(TrainOptimConfig, warmup, "0", 0, INT64_MAX, "linear warmup steps"),                         \
        CONFIG_ENUM(TrainOptimConfig, decay, "none", decay_names,                                               \
                    "after warmup: none (constant) or cosine (to lr * min_lr_ratio at the last step)"),          \
        CONFIG_FLOAT(TrainOptimConfig, min_lr_ratio, "0", "cosine decay: the final lr over lr"),                \
        CONFIG_FLOAT(TrainOptimConfig, grad_clip, "1", "global gradient-norm clip; 0 = off")
static const ConfigField opt_g_fields[] = {OPTIM_FIELDS("1e-5", "0.9", "0.999")};
static const ConfigSchema opt_g_schema = CONFIG_SCHEMA("opt_g", opt_g_fields);
static const ConfigField opt_d_fields[] = {OPTIM_FIELDS("1e-4", "0", "0.99")};
static const ConfigSchema opt_d_schema = CONFIG_SCHEMA("opt_d", opt_d_fields);

static const char *const reduce_dtype_names[] = {"f32", "bf16"};

static const ConfigField dist_fields[] = {
    CONFIG_BOOL(TrainDistConfig, prefetch, "true", "FSDP: gather the next unit while the current one computes"),
    CONFIG_ENUM(TrainDistConfig, reduce_dtype, "f32", reduce_dtype_names, "FSDP: gradient reduce-scatter dtype"),
    CONFIG_INT(TrainDistConfig, max_resident, "3", 2, 1 << 20, "FSDP: units kept gathered at once"),
    CONFIG_FLOAT(TrainDistConfig, timeout, "600", "seconds a collective may wait before the job ends (0: never)"),
};
static const ConfigSchema dist_schema = CONFIG_SCHEMA("dist", dist_fields);

static const ConfigField checkpoint_fields[] = {
    CONFIG_INT(TrainCheckpointConfig, every, "500", 0, INT64_MAX,
               "a checkpoint every N steps (also on SIGUSR1, SIGTERM and at the end); 0 = not periodically"),
    CONFIG_INT(TrainCheckpointConfig, keep, "3", 0, INT64_MAX, "newest checkpoints kept (0: all)"),
    CONFIG_BOOL(TrainCheckpointConfig, final, "true",
                "write the end-of-run checkpoint and student weights (false only for step benchmarks of huge models: "
                "the run's work is not kept)"),
};
static const ConfigSchema checkpoint_schema = CONFIG_SCHEMA("checkpoint", checkpoint_fields);

static const ConfigField guard_fields[] = {
    CONFIG_INT(TrainGuardConfig, max_nonfinite, "5", 1, INT64_MAX,
               "steps in a row with a NaN/Inf loss or gradient (each skipped) that stop the run"),
    CONFIG_INT(TrainGuardConfig, inject_nan_at, "0", 0, INT64_MAX, "test hook: first step given a NaN loss (0: off)"),
    CONFIG_INT(TrainGuardConfig, inject_nan_count, "1", 0, INT64_MAX, "test hook: steps given a NaN loss"),
};
static const ConfigSchema guard_schema = CONFIG_SCHEMA("guard", guard_fields);

static const char *const sampler_names[] = {"add", "euler_a", "ddim", "euler"}; /* SamplerKind order */

static const ConfigField sample_fields[] = {
    CONFIG_INT(TrainSampleConfig, every, "0", 0, INT64_MAX, "a sample grid every N steps (and at the end); 0 = never"),
    CONFIG_LIST(TrainSampleConfig, prompts, n_prompts, CONFIG_TYPE_STRING, "[]", "grid rows: one prompt each"),
    CONFIG_INT(TrainSampleConfig, per_prompt, "4", 1, 64, "images per prompt and sampler"),
    CONFIG_INT(TrainSampleConfig, seed, "1234", 0, INT64_MAX, "noise seed of the grid (fixed across steps)"),
    CONFIG_LIST(TrainSampleConfig, student_steps, n_student_steps, CONFIG_TYPE_INT, "[1, 4]",
                "ADD-sampler steps of the student blocks"),
    CONFIG_ENUM(TrainSampleConfig, teacher_sampler, "ddim", sampler_names, "sampler of the teacher block"),
    CONFIG_INT(TrainSampleConfig, teacher_steps, "50", 0, 1000, "teacher block steps; 0 = no teacher block"),
    CONFIG_FLOAT(TrainSampleConfig, teacher_cfg, "1", "teacher block classifier-free guidance (1 = off)"),
};
static const ConfigSchema sample_schema = CONFIG_SCHEMA("sample", sample_fields);

static const ConfigField eval_fields[] = {
    CONFIG_STRING(TrainEvalConfig, shards, "", "real labelled images (the test split)"),
    CONFIG_STRUCT(TrainEvalConfig, net, model_schema, "the evaluation classifier (never used in training)"),
    CONFIG_LIST(TrainEvalConfig, prompts, n_prompts, CONFIG_TYPE_STRING, "[]", "one caption per class, label order"),
    CONFIG_INT(TrainEvalConfig, per_class, "100", 1, 1 << 20, "generated images per class"),
    CONFIG_INT(TrainEvalConfig, real_max, "0", 0, INT64_MAX, "real images read (0: all)"),
    CONFIG_INT(TrainEvalConfig, batch, "100", 1, 1 << 16, "images per network call"),
    CONFIG_INT(TrainEvalConfig, seed, "777", 0, INT64_MAX, "noise seed of the generated images"),
};
static const ConfigSchema eval_schema = CONFIG_SCHEMA("eval", eval_fields);

static const ConfigField train_fields[] = {
    CONFIG_ENUM(TrainConfig, mode, "add", train_mode_names,
                "add (distillation), diffusion (teacher training) or classify (feature / evaluation networks)"),
    CONFIG_ENUM(TrainConfig, device, "cpu", device_names,
                "where the networks and the step run: cpu, or cuda (one GPU per rank)"),
    CONFIG_ENUM(TrainConfig, compute, "f32", compute_names,
                "the dtype layers compute in: f32, or bf16 on cuda (fp32 master weights and optimizer state)"),
    CONFIG_INT(TrainConfig, seed, "0", 0, INT64_MAX, "seed of every draw of the run (core/rng.h)"),
    CONFIG_INT(TrainConfig, steps, "1000", 1, INT64_MAX, "optimizer steps"),
    CONFIG_INT(TrainConfig, batch, "8", 1, 1 << 20, "images per step"),
    CONFIG_INT(TrainConfig, log_every, "10", 0, INT64_MAX, "progress line every N steps"),
    CONFIG_INT(TrainConfig, save_every, "0", 0, INT64_MAX, "student weights every N steps (and at the end)"),
    CONFIG_STRUCT(TrainConfig, data, data_schema, "training images and captions"),
    CONFIG_STRUCT(TrainConfig, student, model_schema, "the network trained"),
    CONFIG_ENUM(TrainConfig, student_init, "teacher", student_init_names,
                "ADD: start from the teacher's weights, the student's own, or random (collapses)"),
    CONFIG_STRUCT(TrainConfig, teacher, model_schema, "ADD: the frozen teacher UNet"),
    CONFIG_STRUCT(TrainConfig, feature, model_schema, "ADD: the frozen DINOv2 feature network"),
    CONFIG_STRUCT(TrainConfig, image_encoder, model_schema,
                  "ADD: optional DINOv2 whose CLS of the real image conditions the heads"),
    CONFIG_STRUCT(TrainConfig, heads, model_schema, "ADD: the discriminator heads"),
    CONFIG_STRUCT(TrainConfig, codec, codec_schema, "image <-> latent"),
    CONFIG_STRUCT(TrainConfig, text, text_schema, "text conditioning"),
    CONFIG_STRUCT(TrainConfig, opt_g, opt_g_schema, "optimizer of the student"),
    CONFIG_STRUCT(TrainConfig, opt_d, opt_d_schema, "optimizer of the discriminator heads"),
    CONFIG_INT(TrainConfig, classes, "10", 2, 1 << 20, "classify mode: classes of the labels"),
    CONFIG_STRUCT(TrainConfig, sample, sample_schema, "sample grids in the run directory"),
    CONFIG_STRUCT(TrainConfig, eval, eval_schema, "what addc eval measures"),
    CONFIG_FLOAT(TrainConfig, ema_decay, "0", "EMA decay of the student (0 = no EMA)"),
    CONFIG_FLOAT(TrainConfig, adv_weight, "1", "weight of L_adv^G in the student loss (0: distillation only)"),
    CONFIG_STRUCT(TrainConfig, loss, add_loss_config_schema, "the ADD objective and the diffusion loss"),
    CONFIG_STRUCT(TrainConfig, dist, dist_schema, "ranks: FSDP and the collective watchdog"),
    CONFIG_STRUCT(TrainConfig, checkpoint, checkpoint_schema, "training checkpoints (resume)"),
    CONFIG_STRUCT(TrainConfig, guard, guard_schema, "non-finite losses and gradients"),
};
const ConfigSchema train_config_schema = CONFIG_SCHEMA("train", train_fields);

static Status need_model(const TrainModelConfig *m, const char *key, const char *why) {
    if (m->config[0]) return ADDC_OK;
    return addc_error_set(ADDC_ERR_INVALID, "%s.config: %s needs a model YAML here (configs/models/)", key, why);
}

static Status check_optim(const TrainOptimConfig *o, const char *key) {
    if (!(o->lr >= 0) || !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0) ||
        !(o->weight_decay >= 0) || !(o->grad_clip >= 0) || !(o->min_lr_ratio >= 0 && o->min_lr_ratio <= 1))
        return addc_error_set(ADDC_ERR_INVALID,
                              "%s: lr, weight_decay, grad_clip must be >= 0, beta1 and beta2 in [0, 1), eps > 0, "
                              "min_lr_ratio in [0, 1]",
                              key);
    return ADDC_OK;
}

/* Classify mode: the student sees the images and their labels; no codec, text, teacher or heads. */
static Status check_classify(const TrainConfig *cfg) {
    if (cfg->text.source != TEXT_SOURCE_NONE)
        return addc_error_set(ADDC_ERR_INVALID,
                              "text.source: classify mode learns from labels, not captions: set text.source=none");
    if (!cfg->data.label_field[0])
        return addc_error_set(ADDC_ERR_INVALID, "data.label_field: classify mode needs the json field of the label");
    if (cfg->sample.every > 0)
        return addc_error_set(ADDC_ERR_INVALID, "sample.every: classify mode trains no generator to sample; set 0");
    return ADDC_OK;
}

/* Sample grids: rows, blocks and samplers that exist. */
static Status check_sample(const TrainConfig *cfg) {
    const TrainSampleConfig *s = &cfg->sample;
    if (s->every == 0) return ADDC_OK;
    if (s->n_prompts < 1)
        return addc_error_set(ADDC_ERR_INVALID,
                              "sample.prompts: sample.every %lld needs at least one prompt (a grid row each; \"\" "
                              "for unconditional rows)",
                              (long long)s->every);
    for (int32_t i = 0; i < s->n_student_steps; i++)
        if (s->student_steps[i] < 1 || s->student_steps[i] > 1000)
            return addc_error_set(ADDC_ERR_INVALID, "sample.student_steps: %lld is not in 1 .. 1000",
                                  (long long)s->student_steps[i]);
    if (cfg->mode == TRAIN_MODE_DIFFUSION && s->teacher_steps < 1)
        return addc_error_set(ADDC_ERR_INVALID, "sample.teacher_steps: diffusion-mode grids sample the student with "
                                                "the teacher sampler, so they need teacher_steps >= 1");
    if (cfg->mode == TRAIN_MODE_ADD && s->n_student_steps == 0 && s->teacher_steps == 0)
        return addc_error_set(ADDC_ERR_INVALID, "sample: no grid block (student_steps is empty and teacher_steps 0)");
    if (!(s->teacher_cfg > 0))
        return addc_error_set(ADDC_ERR_INVALID, "sample.teacher_cfg: must be > 0 (1 = no guidance)");
    if (s->teacher_cfg != 1 && cfg->text.source == TEXT_SOURCE_NONE)
        return addc_error_set(ADDC_ERR_INVALID,
                              "sample.teacher_cfg: guidance needs text (text.source encoder or embeddings)");
    return ADDC_OK;
}

/* The text source and what it needs. */
static Status check_text(const TrainTextConfig *t) {
    if (t->source == TEXT_SOURCE_ENCODER) TRY(need_model(&t->encoder, "text.encoder", "text.source encoder"));
    if (t->source == TEXT_SOURCE_EMBEDDINGS && !t->embeddings[0])
        return addc_error_set(ADDC_ERR_INVALID, "text.embeddings: text.source embeddings needs the file `addc embed` "
                                                "wrote (addc embed CONFIG.yaml --captions FILE --out FILE.safetensors)");
    if (t->encoder2.config[0] && !t->encoder.config[0])
        return addc_error_set(ADDC_ERR_INVALID, "text.encoder2.config: a second text encoder needs the first "
                                                "(text.encoder.config)");
    return ADDC_OK;
}

Status train_config_check(const TrainConfig *cfg) {
    bool classify = cfg->mode == TRAIN_MODE_CLASSIFY;
    if (!cfg->data.shards[0])
        return addc_error_set(ADDC_ERR_INVALID,
                              "data.shards: no training shards given (make them with `addc shards fmnist OUT`)");
    if (cfg->data.channels != 1 && cfg->data.channels != 3)
        return addc_error_set(ADDC_ERR_INVALID, "data.channels: 1 or 3, not %lld", (long long)cfg->data.channels);
    TRY(need_model(&cfg->student, "student", "every run"));
    if (cfg->compute == 1 && cfg->device != DEVICE_CUDA)
        return addc_error_set(ADDC_ERR_INVALID, "compute: bf16 runs on device cuda only (the CPU kernels are f32)");
    if (classify) TRY(check_classify(cfg));
    if (!classify && cfg->codec.kind == LATENT_CODEC_VAE)
        TRY(need_model(&cfg->codec.vae, "codec.vae", "codec.kind vae"));
    if (!classify && cfg->codec.kind != LATENT_CODEC_VAE && !(cfg->codec.scale > 0))
        return addc_error_set(ADDC_ERR_INVALID, "codec.scale: must be > 0");
    TRY(check_sample(cfg));
    TRY(check_text(&cfg->text));
    if (!(cfg->text.drop_prob >= 0 && cfg->text.drop_prob <= 1))
        return addc_error_set(ADDC_ERR_INVALID, "text.drop_prob: a probability in [0, 1]");
    if (!(cfg->adv_weight >= 0)) return addc_error_set(ADDC_ERR_INVALID, "adv_weight: must be >= 0");
    if (!(cfg->ema_decay >= 0 && cfg->ema_decay < 1))
        return addc_error_set(ADDC_ERR_INVALID, "ema_decay: in [0, 1) (0 = no EMA)");
    TRY(check_optim(&cfg->opt_g, "opt_g"));
    TRY(check_optim(&cfg->opt_d, "opt_d"));
    if (cfg->mode == TRAIN_MODE_ADD) {
        TRY(need_model(&cfg->teacher, "teacher", "mode add"));
        TRY(need_model(&cfg->feature, "feature", "mode add (the discriminator's feature network)"));
        TRY(need_model(&cfg->heads, "heads", "mode add (the discriminator heads)"));
        if (cfg->student_init == STUDENT_INIT_WEIGHTS && !cfg->student.weights[0])
            return addc_error_set(ADDC_ERR_INVALID, "student.weights: student_init weights needs a file");
    }
    return add_loss_config_check(&cfg->loss);
}

Status train_config_load(TrainConfig *cfg, const char *const *files, int32_t n_files, const char *const *overrides,
                         int32_t n_overrides) {
    TRY(config_load(&train_config_schema, cfg, files, n_files, overrides, n_overrides));
    return train_config_check(cfg);
}
