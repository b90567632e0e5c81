/* launch/generate: images from a UNet, the machinery behind `addc sample` (launch/sample.c) and
 * `addc eval` (launch/eval.c). A Generator holds the UNet and its weights, the latent codec (VAE,
 * the toy's 2x2 pixel unshuffle or none), the text conditioning (launch/text_cond.h: tokenizer +
 * one or two CLIP text encoders, precomputed embeddings, or none), the noise schedule and the
 * UNet's prediction type; each generator_run call samples one batch for one prompt with any
 * sampler of losses/samplers.h.
 *
 * Conditioning is training's (launch/text_cond.h, the same code): the encoders' penultimate (or
 * last) hidden states as the context (two encoders: concatenated), the pooled vector (two: the
 * second's) for SDXL's text_time embedding, with time ids (original h, w, crop 0, 0, target h, w);
 * no text: a zero context and zero pooled vector. The prompt is encoded once and broadcast to the
 * batch. Embeddings are read by row (addc sample --embeddings: prompt p is row p) or, with
 * embeddings_by_caption (a run config's text.source embeddings), by the prompt's caption.
 * Classifier-free guidance is u + w (c - u) with the empty prompt as u.
 *
 * Noise: image b of a call draws from (seed, RNG_PURPOSE_SAMPLE, first_index + b, draw), so an
 * image depends on its seed, its global index and the latent shape, never on the batch it was
 * made in. */
#ifndef ADDC_LAUNCH_GENERATE_H
#define ADDC_LAUNCH_GENERATE_H

#include <stdbool.h>
#include <stdint.h>

#include "launch/text_cond.h"
#include "launch/train_config.h"
#include "losses/samplers.h"
#include "nn/latent.h"
#include "nn/model.h"
#include "nn/safetensors.h"
#include "nn/tokenizer.h"

#define GENERATOR_MAX_OVERRIDES NET_SPEC_MAX_OVERRIDES

/* One network of the generator: its model YAML, overrides, and weights. */
typedef NetSpec GeneratorNet;

/* How errors name each input: the CLI's flags ("--model") or a run config's keys
 * ("student.config"); the text's are in opt.text.keys. */
typedef struct GeneratorKeys {
    const char *unet, *weights, *vae, *vae_weights, *size;
} GeneratorKeys;

extern const GeneratorKeys generator_keys_cli;

typedef struct GeneratorOptions {
    GeneratorNet unet;
    LatentCodecKind codec;
    GeneratorNet vae;       /* codec LATENT_CODEC_VAE */
    double latent_scale;    /* unshuffle / none: latent = scale * image */
    TextCondOptions text;   /* encoders (none: unconditional) or precomputed embeddings */
    bool embeddings_by_caption; /* embeddings: the prompt's row (else row `row` of generator_run) */
    ScheduleConfig schedule;
    int32_t prediction;     /* Prediction of the UNet */
    int64_t h, w;           /* image size; 0: the UNet's sample_size times the codec's factor */
    int64_t oh, ow;         /* the time ids' original size; 0: h, w */
    GeneratorKeys keys;
} GeneratorOptions;

/* No networks, codec unshuffle (scale 1), no text (hf cleaning, penultimate layer), the SD / SDXL
 * schedule (scaled_linear 0.00085 .. 0.012, T 1000), epsilon, CLI keys. */
void generator_options_default(GeneratorOptions *o);

/* The options of a training run's role "student" or "teacher" (cfg.student / cfg.teacher: model
 * config, weights, init_seed, overrides), codec from cfg.codec, text from cfg.text, schedule and
 * prediction from cfg.loss, size data.size; text.source embeddings are read by caption. A student without weights in an ADD run with
 * student_init teacher is the teacher's weights (what the student starts from); otherwise empty
 * weights are fresh ones keyed by the role's init_seed, as in training. The options point into
 * cfg, which must outlive them. */
Status generator_options_from_train(GeneratorOptions *o, const TrainConfig *cfg, const char *role);

typedef struct Generator {
    GeneratorOptions opt;
    Model unet, vae;
    bool has_vae;
    TextCond text;        /* kind TEXT_COND_NONE: unconditional */
    LatentCodec codec;
    NoiseSchedule schedule;
    int64_t h, w, oh, ow; /* image size and the time ids' original size */
} Generator;

/* Builds and loads everything (each refusal names the key or flag of opt.keys). Call
 * generator_free afterwards, also when it fails. */
Status generator_init(Generator *g, const GeneratorOptions *opt);
void generator_free(Generator *g);

/* C of the images the generator makes (the codec's image channels). */
int64_t generator_image_channels(const Generator *g);

/* B images for one prompt: images (B, h, w, C) in [-1, 1] (not clamped), allocated from c's
 * arena (c without a tape). prompt is the caption for the text encoders (NULL as ""); with
 * embeddings, `row` picks the row instead (by caption: the prompt's row). The sampler's kind,
 * steps and set_alpha_to_one are used; its prediction is the generator's. cfg_scale 1: no
 * guidance (else text encoders, or embeddings by caption with a "" row, are needed). Image b draws
 * its noise as image first_index + b of the stream keyed by seed. */
Status generator_run(Generator *g, Ctx *c, const char *prompt, int64_t row, int64_t B, uint64_t seed,
                     uint64_t first_index, const SamplerConfig *sampler, double cfg_scale, Var **images);

/* Classifier-free guidance: uncond + cfg (cond - uncond), as (1 - cfg) uncond + cfg cond
 * (diffusion_combine), both (B, ...) from c's arena; NULL when either is NULL or out of memory. */
Var *generator_cfg_combine(Ctx *c, Var *uncond, Var *cond, double cfg);

/* x[0 .. n) in [-1, 1] to 8-bit pixels: (x + 1) 127.5, clamped to [0, 255], rounded half up. */
void generator_pixels_quantise(const float *x, int64_t n, uint8_t *out);
/* 8-bit pixels (H, W, C), C 1 or 3, as a PNG at path, durably: path.tmp, fsync, rename. */
Status generator_png_save(const uint8_t *px, int64_t H, int64_t W, int64_t C, const char *path);
/* One image (H, W, C) in [-1, 1], C 1 or 3, as an 8-bit PNG (generator_pixels_quantise,
 * generator_png_save) at path. */
Status generator_png_write(const float *image, int64_t H, int64_t W, int64_t C, const char *path);

#endif
