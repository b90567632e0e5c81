/* launch/eval: `addc eval`: how good a run's generator is, measured in the features of an
 * evaluation classifier that training never sees (the run config's eval: section,
 * launch/train_config.h TrainEvalConfig).
 *
 *   real     the images of eval.shards (the test split) in file order (no shuffle, no flip, centre
 *            crop to data.size, data.channels), up to eval.real_max, labels from the json number
 *            data.label_field
 *   gen      for each class k (label order), eval.per_class images of eval.prompts[k] made by the
 *            role's UNet (launch/generate.h) with the chosen sampler; image i of class k is global
 *            image index k * per_class + i of the noise stream keyed by eval.seed, so the images
 *            do not depend on eval.batch (up to the float32 rounding of batched products);
 *            images are clamped to [-1, 1] before classifying
 *   metrics  (losses/metrics.h) FD between the Gaussian fits of gen and real features; class
 *            accuracy (the classifier's argmax is the prompted class); diversity: the mean over
 *            classes of the mean pairwise feature distance within the class, for gen (grouped by
 *            prompted class) and real (grouped by true label); real accuracy; seconds per image
 *            of generation alone (conditioning, sampling, decoding; not classifying or saving)
 *   --real   no generation: the first classes x per_class images of data.shards (the training
 *            split, file order) stand in for the generated ones. Their FD to eval.shards is the
 *            floor a generator that drew perfectly from the training distribution would reach
 *            with this many images (FD is biased upwards at small n, so the floor is measured at
 *            the same n as the generated sets rather than between two halves of the test split).
 * The time ids of SDXL-style UNets take the original size of the first real image, as the
 * training batches of the same data carry it. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/parallel.h"
#include "data/loader.h"
#include "launch/cli.h"
#include "launch/generate.h"
#include "launch/train_config.h"
#include "losses/metrics.h"
#include "nn/forward.h"

#define EVAL_MAX_FILES 8
#define EVAL_MAX_OVERRIDES 64

static void eval_usage(FILE *f) {
    fprintf(f,
            "usage: addc eval RUN_CONFIG.yaml [MORE.yaml ...] [key.path=value ...]\n"
            "                 (--role student|teacher [--weights FILE] [--sampler add|euler_a|ddim|euler] [--steps N]\n"
            "                  [--cfg W] | --real) [--label TEXT] [--table FILE.md] [--json FILE.jsonl]\n"
            "                 [--save-images DIR]\n"
            "\n"
            "Measures a generator in the features of the evaluation classifier of the config's eval: section\n"
            "(eval.net: model YAML, weights or init_seed; a convnet or a DINOv2 with num_labels). RUN_CONFIG is a\n"
            "training config (configs/train/*.yaml or a run directory's config.yaml); files merge in order, then\n"
            "overrides, as for addc train; only what eval needs is checked.\n"
            "\n"
            "Real images: eval.shards in file order (no shuffle or flip, centre crop to data.size), at most\n"
            "eval.real_max (0: all), class labels from the json number data.label_field.\n"
            "Generated images: for each class k, eval.per_class images of the caption eval.prompts[k] (label order:\n"
            "one prompt per classifier label) from the role's UNet with the run's codec, text encoder, schedule and\n"
            "prediction; noise keyed by eval.seed and the image's global index (class k, image i: k * per_class + i),\n"
            "eval.batch images per call; clamped to [-1, 1] before classifying.\n"
            "\n"
            "  --role student       cfg.student's YAML, overrides and weights (empty in an ADD run that starts the\n"
            "                       student from the teacher: the teacher's weights); teacher: cfg.teacher\n"
            "  --weights FILE       the UNet's weights instead (e.g. RUN_DIR/student_ema.safetensors)\n"
            "  --sampler, --steps   default add; 1 step (add, euler_a) or 50 (ddim, euler), trailing spacing\n"
            "  --cfg W              classifier-free guidance with the empty prompt (default 1: off; needs text)\n"
            "  --real               no generation: the first classes x per_class images of data.shards (the training\n"
            "                       split, in file order) stand in for the generated ones; their FD to eval.shards\n"
            "                       is the floor a perfect generator reaches with that many images\n"
            "  --label TEXT         the row's name (default e.g. \"student add 1 step\", \"real (data.shards)\")\n"
            "  --table FILE.md      append a markdown row: what | steps | FD | class acc | diversity (gen/real) |\n"
            "                       s/img (the header too when the file is new or empty)\n"
            "  --json FILE.jsonl    append one JSON object: what, config, role, weights, sampler, steps, cfg, seed,\n"
            "                       per_class, classes, features, n_gen, n_real, fd, class_acc, div_gen, div_real,\n"
            "                       real_acc, s_per_image (last); non-finite numbers are null. With --real the\n"
            "                       data.shards images are the \"gen\" side.\n"
            "  --save-images DIR    the generated images as DIR/00000.png ... (global index order)\n"
            "\n"
            "Metrics: FD = ||mu_g - mu_r||^2 + tr(S_g + S_r - 2 (S_g S_r)^1/2) of the classifier's features (unbiased\n"
            "covariances, as pytorch-fid); class acc = the classifier's argmax is the prompted class; diversity =\n"
            "mean over classes of the mean pairwise L2 feature distance within the class (generated by prompted\n"
            "class / real by label); real acc = the classifier's accuracy on eval.shards; s/img = seconds of\n"
            "generation per image (conditioning, sampling, decoding), ADDC_THREADS threads.\n"
            "\n"
            "Prints a line per class while generating and a closing summary. Exit code 0; 1 when the config, a\n"
            "model, weights or shards are refused (the message names the key); 2 for a usage error.\n");
}

typedef struct EvalArgs {
    const char *files[EVAL_MAX_FILES];
    int32_t n_files;
    const char *overrides[EVAL_MAX_OVERRIDES];
    int32_t n_overrides;
    const char *role, *weights, *label, *table, *json, *save_images;
    bool real, sampler_given, cfg_given;
    SamplerKind sampler;
    int32_t steps;
    double cfg;
} EvalArgs;

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "addc eval: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see addc eval --help)\n");
    return 2;
}

static int eval_parse(int argc, char **argv, EvalArgs *a) {
    memset(a, 0, sizeof *a);
    a->sampler = SAMPLER_ADD;
    a->cfg = 1;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (o[0] != '-') {
            if (strchr(o, '=')) {
                if (a->n_overrides == EVAL_MAX_OVERRIDES) return usage_error("at most 64 overrides%s", "");
                a->overrides[a->n_overrides++] = o;
            } else {
                if (a->n_files == EVAL_MAX_FILES) return usage_error("at most 8 config files%s", "");
                a->files[a->n_files++] = o;
            }
            continue;
        }
        if (!strcmp(o, "--real")) {
            a->real = true;
            continue;
        }
        const char **slot = !strcmp(o, "--role")          ? &a->role
                            : !strcmp(o, "--weights")     ? &a->weights
                            : !strcmp(o, "--label")       ? &a->label
                            : !strcmp(o, "--table")       ? &a->table
                            : !strcmp(o, "--json")        ? &a->json
                            : !strcmp(o, "--save-images") ? &a->save_images
                                                          : NULL;
        bool known = slot || !strcmp(o, "--sampler") || !strcmp(o, "--steps") || !strcmp(o, "--cfg");
        if (!known) return usage_error("unknown option '%s'", o);
        if (!v) return usage_error("%s needs a value", o);
        i++;
        if (slot) {
            *slot = v;
        } else if (!strcmp(o, "--sampler")) {
            if (sampler_kind_parse(v, &a->sampler) != ADDC_OK) return usage_error("%s", addc_error_message());
            a->sampler_given = true;
        } else if (!strcmp(o, "--steps")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || n < 1 || n > SAMPLER_MAX_STEPS) return usage_error("--steps needs an integer in 1 .. 1000, not '%s'", v);
            a->steps = (int32_t)n;
        } else {
            char *end;
            a->cfg = strtod(v, &end);
            if (*end || !(a->cfg > 0) || a->cfg > 1e6) return usage_error("--cfg needs a positive number, not '%s'", v);
            a->cfg_given = true;
        }
    }
    if (!a->n_files) return usage_error("give the run's config (e.g. configs/train/toy_add.yaml or RUN_DIR/config.yaml)%s", "");
    if (a->real && (a->role || a->weights || a->sampler_given || a->steps || a->cfg_given || a->save_images))
        return usage_error("--real measures real images only: no --role, --weights, --sampler, --steps, --cfg or "
                           "--save-images%s", "");
    if (!a->real && !a->role) return usage_error("give --role student|teacher (generated images) or --real%s", "");
    if (a->role && strcmp(a->role, "student") && strcmp(a->role, "teacher"))
        return usage_error("--role is student or teacher, not '%s'", a->role);
    if (!a->steps) a->steps = a->sampler == SAMPLER_ADD || a->sampler == SAMPLER_EULER_A ? 1 : 50;
    return 0;
}

/* ---- config ---- */

/* What eval needs of the config (training's own checks are mode-specific and not applied). */
static Status eval_config_check(const TrainConfig *c, bool real) {
    const TrainEvalConfig *e = &c->eval;
    if (!e->net.config[0])
        return addc_error_set(ADDC_ERR_INVALID, "eval.net.config: no evaluation classifier: give its model YAML and "
                                                "weights (eval.net.config=configs/models/toy_evalnet.yaml "
                                                "eval.net.weights=FILE)");
    if (!e->shards[0])
        return addc_error_set(ADDC_ERR_INVALID, "eval.shards: no real labelled images: give the test split's shards "
                                                "(`addc shards fmnist OUT --split test` makes them)");
    if (c->data.channels != 1 && c->data.channels != 3)
        return addc_error_set(ADDC_ERR_INVALID, "data.channels: 1 or 3, not %lld", (long long)c->data.channels);
    if (!c->data.label_field[0])
        return addc_error_set(ADDC_ERR_INVALID, "data.label_field: eval reads each real image's class from this json field");
    if (real) {
        if (!c->data.shards[0])
            return addc_error_set(ADDC_ERR_INVALID, "data.shards: --real compares the training split's images with "
                                                    "eval.shards: give data.shards");
        return ADDC_OK;
    }
    if (e->n_prompts == 0)
        return addc_error_set(ADDC_ERR_INVALID, "eval.prompts: no class prompts: give one caption per class, in label "
                                                "order (eval.prompts=[\"a photo of a t-shirt\", ...])");
    if (c->codec.kind == LATENT_CODEC_VAE && !c->codec.vae.config[0])
        return addc_error_set(ADDC_ERR_INVALID, "codec.vae.config: codec.kind vae needs the VAE's model YAML");
    if (c->codec.kind != LATENT_CODEC_VAE && !(c->codec.scale > 0))
        return addc_error_set(ADDC_ERR_INVALID, "codec.scale: must be > 0");
    if (c->text.source == TEXT_SOURCE_ENCODER && !c->text.encoder.config[0])
        return addc_error_set(ADDC_ERR_INVALID, "text.encoder.config: text.source encoder needs the CLIP text model YAML");
    return add_loss_config_check(&c->loss);
}

/* ---- the evaluation classifier and what it sees ---- */

static Status classifier_build(Model *m, const TrainModelConfig *n, int64_t *F, int64_t *K) {
    const char *ov[TRAIN_MAX_MODEL_OVERRIDES];
    for (int32_t i = 0; i < n->n_overrides; i++) ov[i] = n->overrides[i];
    Status st = model_build(m, n->config, ov, n->n_overrides, DEVICE_CPU, false);
    if (st == ADDC_OK) st = model_classifier_dims(m, F, K);
    if (st != ADDC_OK) return addc_error_context(st, "eval.net.config %s", n->config);
    st = n->weights[0] ? forward_weights_load(m, n->weights, NULL, NULL)
                       : forward_weights_random(m, (uint64_t)n->init_seed);
    if (st != ADDC_OK) return addc_error_context(st, "eval.net.weights %s", n->weights[0] ? n->weights : "(fresh)");
    model_set_checkpointing(m, true); /* no tape: each block keeps only its output */
    return ADDC_OK;
}

/* Features and predictions of a set of images, with their class (true or prompted). */
typedef struct EvalSet {
    int64_t n, cap, F;
    float *features; /* (cap, F) */
    int32_t *labels; /* (cap) */
    int32_t *pred;   /* (cap) the classifier's argmax */
} EvalSet;

static void evalset_free(EvalSet *s) {
    free(s->features);
    free(s->labels);
    free(s->pred);
    memset(s, 0, sizeof *s);
}

/* Classifies images (B, H, W, C) and appends their features, argmax and labels (B). */
static Status evalset_add(EvalSet *s, Ctx *c, const Model *net, Var *images, const int32_t *labels) {
    int64_t B = images->v.shape[0];
    if (s->n + B > s->cap) {
        int64_t cap = s->cap ? s->cap : 256;
        while (cap < s->n + B) cap *= 2;
        float *f = realloc(s->features, (size_t)(cap * s->F) * sizeof(float));
        if (f) s->features = f;
        int32_t *l = f ? realloc(s->labels, (size_t)cap * sizeof(int32_t)) : NULL;
        if (l) s->labels = l;
        int32_t *p = l ? realloc(s->pred, (size_t)cap * sizeof(int32_t)) : NULL;
        if (!p) return addc_error_set(ADDC_ERR_NOMEM, "eval: features of %lld images: out of memory", (long long)cap);
        s->pred = p;
        s->cap = cap;
    }
    Var *feat, *logits;
    TRY(model_classify(c, net, images, &feat, &logits));
    int64_t K = logits->v.shape[1];
    memcpy(s->features + s->n * s->F, feat->v.data, (size_t)(B * s->F) * sizeof(float));
    memcpy(s->labels + s->n, labels, (size_t)B * sizeof(int32_t));
    metrics_argmax(logits->v.data, B, K, s->pred + s->n);
    s->n += B;
    return ADDC_OK;
}

static double evalset_accuracy(const EvalSet *s) {
    int64_t hit = 0;
    for (int64_t i = 0; i < s->n; i++) hit += s->pred[i] == s->labels[i];
    return s->n ? (double)hit / (double)s->n : NAN;
}

/* Reads `shards` (config key `key`) once in file order, at most max images (0: all), classifying
 * them into s; the first image's original size into oh, ow. */
static Status read_labelled(const TrainConfig *c, const char *shards, const char *key, int64_t max, const Model *net,
                            int64_t K, EvalSet *s, int64_t *oh, int64_t *ow) {
    LoaderConfig lc;
    loader_config_default(&lc);
    lc.shards = shards;
    lc.batch_size = c->eval.batch;
    lc.height = lc.width = (int32_t)c->data.size;
    lc.flip = false;
    lc.threads = (int32_t)c->data.threads;
    lc.shuffle = 0;
    lc.shuffle_shards = false;
    lc.require_caption = false;
    lc.json_fields[0] = c->data.label_field;
    lc.n_json_fields = 1;
    Loader *l = NULL;
    Status st = loader_open(&lc, NULL, &l);
    if (st != ADDC_OK) return addc_error_context(st, "%s %s", key, shards);
    Arena arena;
    arena_init(&arena, 16 << 20, 0);
    Ctx ctx = ctx_make(&arena, NULL, DEVICE_CPU);
    int32_t *labels = malloc((size_t)c->eval.batch * sizeof(int32_t));
    if (!labels) st = addc_error_set(ADDC_ERR_NOMEM, "eval: out of memory");
    int64_t C = c->data.channels;
    for (bool done = false; st == ADDC_OK && !done;) {
        Batch *lb;
        st = loader_next(l, &lb);
        if (st != ADDC_OK) {
            st = addc_error_context(st, "%s %s", key, shards);
            break;
        }
        /* the stream wraps around: the first image of the next epoch ends the pass */
        int64_t B = 0, left = max > 0 ? max - s->n : INT64_MAX;
        while (B < lb->n && B < left && lb->ids[B].epoch == 0) B++;
        done = B < lb->n || B == left;
        if (B == 0) break;
        if (s->n == 0) *oh = lb->original_size[0], *ow = lb->original_size[1];
        for (int64_t i = 0; i < B && st == ADDC_OK; i++) {
            double v = lb->json[i * lb->n_json_fields];
            if (!(v >= 0 && v < (double)K) || v != floor(v))
                st = addc_error_set(ADDC_ERR_INVALID,
                                    "data.label_field: sample '%s' of %s has %s %g, not a class of the classifier "
                                    "(0 .. %lld)",
                                    lb->keys[i], loader_shard_url(l, lb->ids[i].shard), c->data.label_field, v,
                                    (long long)K - 1);
            labels[i] = (int32_t)v;
        }
        int64_t shape[4] = {B, lb->h, lb->w, C};
        Var *x = st == ADDC_OK ? var_new(&ctx, DTYPE_F32, 4, shape) : NULL;
        if (st == ADDC_OK && !x) st = addc_error_status();
        if (st != ADDC_OK) break;
        float *dst = x->v.data;
        for (int64_t i = 0; i < B * lb->h * lb->w; i++)
            for (int64_t ch = 0; ch < C; ch++) dst[i * C + ch] = lb->images[i * 3 + ch];
        st = evalset_add(s, &ctx, net, x, labels);
        arena_reset(&arena);
    }
    if (st == ADDC_OK && s->n < 2)
        st = addc_error_set(ADDC_ERR_INVALID, "%s %s: %lld usable images; the statistics need at least 2", key, shards,
                            (long long)s->n);
    free(labels);
    arena_free(&arena);
    loader_free(l);
    return st;
}

/* eval.per_class images of every class prompt into s; *secs the generation time alone. */
static Status generate_all(const TrainConfig *c, const EvalArgs *a, Generator *g, const Model *net, int64_t K,
                           EvalSet *s, double *secs) {
    const TrainEvalConfig *e = &c->eval;
    Arena arena;
    arena_init(&arena, 64 << 20, 0);
    Ctx ctx = ctx_make(&arena, NULL, DEVICE_CPU);
    SamplerConfig sc = {a->sampler, a->steps, g->opt.prediction, true};
    int32_t *labels = malloc((size_t)e->batch * sizeof(int32_t));
    Status st = labels ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "eval: out of memory");
    *secs = 0;
    for (int64_t k = 0; k < K && st == ADDC_OK; k++) {
        double tk = 0;
        for (int64_t j = 0; j < e->per_class && st == ADDC_OK; j += e->batch) {
            int64_t B = e->per_class - j < e->batch ? e->per_class - j : e->batch, first = k * e->per_class + j;
            Var *img = NULL;
            double t0 = cli_now_s();
            st = generator_run(g, &ctx, e->prompts[k], k, B, (uint64_t)e->seed, (uint64_t)first, &sc, a->cfg, &img);
            tk += cli_now_s() - t0;
            if (st != ADDC_OK) break;
            const Tensor *t = &img->v;
            int64_t px = t->shape[1] * t->shape[2] * t->shape[3];
            float *x = t->data;
            for (int64_t i = 0; i < B * px; i++) x[i] = x[i] < -1 ? -1 : x[i] > 1 ? 1 : x[i];
            for (int64_t b = 0; b < B && st == ADDC_OK && a->save_images; b++) {
                char path[1200];
                snprintf(path, sizeof path, "%s/%05lld.png", a->save_images, (long long)(first + b));
                st = generator_png_write(x + b * px, t->shape[1], t->shape[2], t->shape[3], path);
            }
            for (int64_t b = 0; b < B; b++) labels[b] = (int32_t)k;
            if (st == ADDC_OK) st = evalset_add(s, &ctx, net, img, labels);
            arena_reset(&arena);
        }
        *secs += tk;
        if (st == ADDC_OK) {
            printf("generate    class %lld/%lld \"%s\": %lld images, %.4f s/image\n", (long long)k + 1, (long long)K,
                   e->prompts[k], (long long)e->per_class, tk / (double)e->per_class);
            fflush(stdout);
        }
    }
    free(labels);
    arena_free(&arena);
    return st;
}

/* ---- results ---- */

typedef struct EvalResult {
    char what[256];
    double fd, class_acc, div_gen, div_real, real_acc, s_per_image; /* s_per_image NaN: --real */
    int64_t n_gen, n_real, F, K;
} EvalResult;

static Status eval_metrics(const EvalSet *gen, const EvalSet *real, int64_t K, EvalResult *r) {
    GaussianFit fg, fr;
    TRY(metrics_gaussian_fit(gen->features, gen->n, gen->F, &fg));
    Status st = metrics_gaussian_fit(real->features, real->n, real->F, &fr);
    if (st == ADDC_OK) st = metrics_frechet_distance(&fg, &fr, &r->fd);
    if (st == ADDC_OK) st = metrics_diversity(gen->features, gen->n, gen->F, gen->labels, (int32_t)K, NULL, &r->div_gen);
    if (st == ADDC_OK)
        st = metrics_diversity(real->features, real->n, real->F, real->labels, (int32_t)K, NULL, &r->div_real);
    metrics_gaussian_free(&fg);
    metrics_gaussian_free(&fr);
    r->class_acc = evalset_accuracy(gen);
    r->real_acc = evalset_accuracy(real);
    r->n_gen = gen->n;
    r->n_real = real->n;
    return st;
}

static void json_number(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ", \"%s\": %.10g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

static Status json_append(const char *path, const EvalArgs *a, const TrainConfig *c, const char *weights,
                          const EvalResult *r) {
    FILE *f = fopen(path, "a");
    if (!f) return addc_error_set(ADDC_ERR_IO, "--json %s: %s", path, strerror(errno));
    fputs("{\"what\": ", f);
    cli_json_string(f, r->what);
    fputs(", \"config\": ", f);
    cli_json_string(f, a->files[0]);
    fprintf(f, ", \"role\": \"%s\", \"weights\": ", a->real ? "real" : a->role);
    cli_json_string(f, weights);
    if (a->real) fputs(", \"sampler\": null, \"steps\": null, \"cfg\": null", f);
    else fprintf(f, ", \"sampler\": \"%s\", \"steps\": %d, \"cfg\": %g", sampler_kind_name(a->sampler), (int)a->steps, a->cfg);
    fprintf(f, ", \"seed\": %lld, \"per_class\": %lld, \"classes\": %lld, \"features\": %lld, \"n_gen\": %lld, \"n_real\": %lld",
            (long long)c->eval.seed, (long long)c->eval.per_class, (long long)r->K, (long long)r->F, (long long)r->n_gen,
            (long long)r->n_real);
    json_number(f, "fd", r->fd);
    json_number(f, "class_acc", r->class_acc);
    json_number(f, "div_gen", r->div_gen);
    json_number(f, "div_real", r->div_real);
    json_number(f, "real_acc", r->real_acc);
    json_number(f, "s_per_image", r->s_per_image);
    fputs("}\n", f);
    if (fclose(f)) return addc_error_set(ADDC_ERR_IO, "--json %s: %s", path, strerror(errno));
    return ADDC_OK;
}

static Status table_append(const char *path, const EvalArgs *a, const EvalResult *r) {
    FILE *f = fopen(path, "a");
    if (!f) return addc_error_set(ADDC_ERR_IO, "--table %s: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) == 0 && ftell(f) == 0)
        fputs("| what | steps | FD | class acc | diversity (gen/real) | s/img |\n"
              "|---|---:|---:|---:|---:|---:|\n",
              f);
    fputs("| ", f);
    for (const char *p = r->what; *p; p++) {
        if (*p == '|') fputc('\\', f); /* a pipe would end the cell */
        fputc(*p, f);
    }
    if (a->real) fputs(" | - ", f);
    else fprintf(f, " | %d ", (int)a->steps);
    fprintf(f, "| %.2f | %.1f%% | %.3f / %.3f | ", r->fd, 100 * r->class_acc, r->div_gen, r->div_real);
    if (isfinite(r->s_per_image)) fprintf(f, "%.4f |\n", r->s_per_image);
    else fputs("- |\n", f);
    if (fclose(f)) return addc_error_set(ADDC_ERR_IO, "--table %s: %s", path, strerror(errno));
    return ADDC_OK;
}

/* ---- the command ---- */

typedef struct EvalRun {
    EvalArgs a;
    TrainConfig cfg;
    Model net;
    bool net_built;
    Generator gen;
    bool gen_built;
    EvalSet real, fake; /* fake: generated, or the data.shards stand-ins with --real */
    char weights[TRAIN_PATH_MAX + 64];
    EvalResult r;
} EvalRun;

static Status eval_run(EvalRun *e) {
    EvalArgs *a = &e->a;
    TrainConfig *c = &e->cfg;
    Status st = config_load(&train_config_schema, c, a->files, a->n_files, a->overrides, a->n_overrides);
    if (st != ADDC_OK) return addc_error_context(st, "config");
    TRY(eval_config_check(c, a->real));
    int64_t F, K;
    e->net_built = true;
    TRY(classifier_build(&e->net, &c->eval.net, &F, &K));
    if (c->eval.n_prompts && c->eval.n_prompts != K)
        return addc_error_set(ADDC_ERR_INVALID, "eval.prompts: %d prompts, but the classifier %s has %lld labels (one "
                                                "prompt per label, in label order)",
                              (int)c->eval.n_prompts, c->eval.net.config, (long long)K);
    printf("eval net    %s: %lld parameters, %lld features, %lld labels, weights %s\n", c->eval.net.config,
           (long long)e->net.params.numel, (long long)F, (long long)K,
           c->eval.net.weights[0] ? c->eval.net.weights : "fresh (eval.net.init_seed)");
    fflush(stdout);
    e->real.F = e->fake.F = F;
    e->r.F = F;
    e->r.K = K;
    int64_t oh = 0, ow = 0, toh, tow;
    TRY(read_labelled(c, c->eval.shards, "eval.shards", c->eval.real_max, &e->net, K, &e->real, &oh, &ow));
    printf("real        %lld images of %s: classifier accuracy %.1f%%\n", (long long)e->real.n, c->eval.shards,
           100 * evalset_accuracy(&e->real));
    fflush(stdout);
    if (a->real) {
        TRY(read_labelled(c, c->data.shards, "data.shards", K * c->eval.per_class, &e->net, K, &e->fake, &toh, &tow));
        snprintf(e->weights, sizeof e->weights, "none (data.shards images)");
        snprintf(e->r.what, sizeof e->r.what, "%s", a->label ? a->label : "real (data.shards)");
        e->r.s_per_image = NAN;
        return eval_metrics(&e->fake, &e->real, K, &e->r);
    }
    GeneratorOptions go;
    TRY(generator_options_from_train(&go, c, a->role));
    if (a->weights) go.unet.weights = a->weights;
    go.oh = oh, go.ow = ow;
    e->gen_built = true;
    TRY(generator_init(&e->gen, &go));
    if (generator_image_channels(&e->gen) != c->data.channels)
        return addc_error_set(ADDC_ERR_INVALID, "the generator makes %lld-channel images, data.channels is %lld",
                              (long long)generator_image_channels(&e->gen), (long long)c->data.channels);
    if (go.unet.weights && go.unet.weights[0]) snprintf(e->weights, sizeof e->weights, "%s", go.unet.weights);
    else snprintf(e->weights, sizeof e->weights, "fresh (init_seed %llu)", (unsigned long long)go.unet.seed);
    if (a->save_images && mkdir(a->save_images, 0755) && errno != EEXIST)
        return addc_error_set(ADDC_ERR_IO, "--save-images %s: %s", a->save_images, strerror(errno));
    if (a->label) snprintf(e->r.what, sizeof e->r.what, "%s", a->label);
    else if (a->cfg != 1)
        snprintf(e->r.what, sizeof e->r.what, "%s %s %d step%s cfg %g", a->role, sampler_kind_name(a->sampler),
                 (int)a->steps, a->steps == 1 ? "" : "s", a->cfg);
    else
        snprintf(e->r.what, sizeof e->r.what, "%s %s %d step%s", a->role, sampler_kind_name(a->sampler), (int)a->steps,
                 a->steps == 1 ? "" : "s");
    printf("generator   %s %s: %lld parameters, weights %s; %s, %d step%s, cfg %g, seed %lld; %lld classes x %lld "
           "images of %lldx%lldx%lld\n",
           a->role, go.unet.config, (long long)e->gen.unet.params.numel, e->weights, sampler_kind_name(a->sampler),
           (int)a->steps, a->steps == 1 ? "" : "s", a->cfg, (long long)c->eval.seed, (long long)K, (long long)c->eval.per_class,
           (long long)e->gen.h, (long long)e->gen.w, (long long)generator_image_channels(&e->gen));
    fflush(stdout);
    double secs;
    TRY(generate_all(c, a, &e->gen, &e->net, K, &e->fake, &secs));
    e->r.s_per_image = secs / (double)e->fake.n;
    return eval_metrics(&e->fake, &e->real, K, &e->r);
}

int cmd_eval(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            eval_usage(stdout);
            return 0;
        }
    EvalRun *e = calloc(1, sizeof *e);
    if (!e) {
        fprintf(stderr, "addc eval: out of memory\n");
        return 1;
    }
    int rc = eval_parse(argc, argv, &e->a);
    if (rc) {
        free(e);
        return rc;
    }
    Status st = eval_run(e);
    if (st == ADDC_OK && e->a.json) st = json_append(e->a.json, &e->a, &e->cfg, e->weights, &e->r);
    if (st == ADDC_OK && e->a.table) st = table_append(e->a.table, &e->a, &e->r);
    if (st != ADDC_OK) {
        rc = cli_fail("eval");
    } else if (e->a.real) {
        printf("eval        %s: FD %.3f between %lld data.shards and %lld eval.shards images; accuracy %.1f%% / "
               "%.1f%%, diversity %.3f / %.3f (data.shards / eval.shards)\n",
               e->r.what, e->r.fd, (long long)e->r.n_gen, (long long)e->r.n_real, 100 * e->r.class_acc,
               100 * e->r.real_acc, e->r.div_gen, e->r.div_real);
    } else {
        printf("eval        %s: FD %.3f, class accuracy %.1f%%, diversity %.3f (real %.3f), real accuracy %.1f%%, "
               "%.4f s/image (%lld generated, %lld real, %d threads)\n",
               e->r.what, e->r.fd, 100 * e->r.class_acc, e->r.div_gen, e->r.div_real, 100 * e->r.real_acc,
               e->r.s_per_image, (long long)e->r.n_gen, (long long)e->r.n_real, parallel_threads());
    }
    if (e->gen_built) generator_free(&e->gen);
    if (e->net_built) model_free(&e->net);
    evalset_free(&e->real);
    evalset_free(&e->fake);
    free(e);
    return rc;
}
