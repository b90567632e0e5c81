/* launch/sample: `addc sample`: the command line over launch/generate.h. Images from a UNet
 * with one of the samplers of losses/samplers.h, one PNG per image plus DIR/manifest.jsonl (one
 * JSON object per image: file, prompt, seed, index, steps, sampler, cfg) for other tools to score.
 *
 * Image i (prompt i / K, its (i % K)-th image) is global image index i of the generator: its
 * noise is keyed by (seed, i), the same whichever batch made it. Conditioning is built as
 * training builds it (launch/generate.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/parallel.h"
#include "launch/cli.h"
#include "launch/generate.h"

#define SAMPLE_MAX_PROMPTS 4096
#define SAMPLE_MAX_OVERRIDES 32

static void sample_usage(FILE *f) {
    fprintf(f,
            "usage: addc sample --model UNET.yaml [KEY=VALUE ...] --weights FILE|none [--init-seed S]\n"
            "                   [--vae VAE.yaml --vae-weights FILE|none | --latent unshuffle|none [--latent-scale X]]\n"
            "                   (--prompt TEXT ... | --prompts FILE) [--text-encoder CLIP.yaml --text-weights FILE|none\n"
            "                   [--text-seed S] [--text-encoder2 CLIP2.yaml --text-weights2 FILE|none [--text-seed2 S]]\n"
            "                   [--text-layer penultimate|last] [--clean hf|open_clip] [--tokenizer FILE]\n"
            "                   | --embeddings FILE.safetensors]\n"
            "                   [--sampler add|euler_a|ddim|euler] [--steps N] [--seed S] [--n-per-prompt K]\n"
            "                   [--size HxW] [--original-size HxW] [--cfg W] [--prediction epsilon|v_prediction]\n"
            "                   [--zero-terminal-snr] [--final-alpha-one 0|1] [--batch B] --out DIR\n"
            "\n"
            "Samples images (fp32, CPU) and writes DIR/00000.png, DIR/00001.png, ... and DIR/manifest.jsonl, one line per\n"
            "image: {\"file\", \"prompt\", \"seed\", \"index\", \"steps\", \"sampler\", \"cfg\"}. Image i is the (i %% K)-th image\n"
            "of prompt i / K; its noise is keyed by (--seed, i) alone, so it does not depend on --batch.\n"
            "\n"
            "  --model, KEY=VALUE   the UNet's model YAML (configs/models/) and overrides of its fields\n"
            "  --weights FILE       a diffusers / Stability UNet file, or addc train's student*.safetensors;\n"
            "  --weights none       random weights keyed by --init-seed (default 0): for tests\n"
            "  --vae, --vae-weights an AutoencoderKL YAML and its weights (none: random, --init-seed): latents are decoded\n"
            "                       with vae.decode(latent / scaling_factor)\n"
            "  --latent unshuffle   the toy codec (nn/latent.h): a (h, w, 4C) latent is the 2x2 pixel unshuffle of a\n"
            "                       (2h, 2w, C) image times --latent-scale (default 1); none: the UNet works on pixels\n"
            "                       (1 or 3 channels). Default: unshuffle without --vae.\n"
            "  --prompt TEXT        repeatable; --prompts FILE: one prompt per non-empty line\n"
            "  --text-encoder, --text-weights   a CLIP text model YAML and weights (none: random keyed by --text-seed,\n"
            "                       default 0, as addc train's text.encoder.init_seed); tokenised with the CLIP BPE\n"
            "                       (--tokenizer, default " CLI_DEFAULT_VOCAB "), --clean hf (default) or open_clip;\n"
            "                       the context is hidden_states[-2] (--text-layer penultimate, default) or the final\n"
            "                       layer; SDXL's pooled vector is the projected end-of-text row.\n"
            "  --text-encoder2, --text-weights2   a second CLIP text model (SDXL: --text-encoder clip_l_text.yaml,\n"
            "                       --text-encoder2 openclip_bigg_text.yaml; both weights may be SDXL's single file):\n"
            "                       as diffusers' encode_prompt, the context is both encoders' hidden states\n"
            "                       concatenated along the features (768 + 1280 = 2048), each caption padded with each\n"
            "                       model's pad_token, and the pooled vector the second's (--text-seed2 S: its random\n"
            "                       weights' seed, as text.encoder2.init_seed)\n"
            "  --embeddings FILE    precomputed conditioning instead (addc embed writes it): encoder_hidden_states\n"
            "                       (P, T, D) and, for a text_time UNet, text_embeds (P, Dt), row p for prompt p (prompts\n"
            "                       then only label the images; without prompts they are named \"embedding p\", or by\n"
            "                       the file's captions when it has them). Not with --cfg.\n"
            "                       No text options at all: unconditional (a zero context, as training without text).\n"
            "  --sampler            add (default: the ADD student's sampler), euler_a, ddim (eta 0), euler\n"
            "  --steps N            default 1 (add, euler_a) or 50 (ddim, euler); trailing timestep spacing\n"
            "  --cfg W              classifier-free guidance, u + W (c - u) with the empty prompt as u (default 1:\n"
            "                       off; ADD students sample without it)\n"
            "  --prediction         what the UNet predicts: epsilon (default) or v_prediction\n"
            "  --zero-terminal-snr  the rescaled schedule (alphabar_999 = 2^-24, as EulerDiscreteScheduler)\n"
            "  --final-alpha-one    DDIM's set_alpha_to_one (default 1)\n"
            "  --size HxW           image size (default: the UNet's sample_size times the codec's factor)\n"
            "  --original-size HxW  the time ids' original size (default --size; Fashion-MNIST training: 28x28)\n"
            "  --n-per-prompt K     images per prompt (default 1); --batch B: images per UNet call (default K)\n"
            "\n"
            "Not supported yet: negative prompts, CUDA. Exit code 0; 1 when a model, weights or file is refused (the\n"
            "message says which); 2 for a usage error.\n");
}

typedef struct SampleArgs {
    const char *model, *weights, *vae, *vae_weights, *latent, *prompts_file, *text_encoder, *text_weights,
        *text_encoder2, *text_weights2, *tokenizer, *embeddings, *out;
    const char *overrides[SAMPLE_MAX_OVERRIDES];
    int32_t n_overrides;
    const char *prompts[SAMPLE_MAX_PROMPTS];
    int32_t n_prompts;
    uint64_t seed, init_seed, text_seed, text_seed2;
    int32_t steps, n_per_prompt, batch, prediction;
    int64_t h, w, oh, ow;
    double cfg, latent_scale;
    SamplerKind sampler;
    bool zsnr, alpha_one, text_last;
    TokenizerClean clean;
} SampleArgs;

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "addc sample: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see addc sample --help)\n");
    return 2;
}

static bool parse_u64(const char *v, uint64_t *out) {
    char *end;
    if (!v || !*v || v[0] == '-') return false;
    errno = 0;
    *out = strtoull(v, &end, 10);
    return !*end && !errno;
}

static bool parse_size(const char *v, int64_t *h, int64_t *w) {
    long long a, b;
    char tail;
    return v && sscanf(v, "%lldx%lld%c", &a, &b, &tail) == 2 && a > 0 && b > 0 && (*h = a, *w = b, true);
}

static int sample_parse(int argc, char **argv, SampleArgs *a) {
    memset(a, 0, sizeof *a);
    a->sampler = SAMPLER_ADD;
    a->n_per_prompt = 1;
    a->cfg = 1;
    a->latent_scale = 1;
    a->alpha_one = true;
    a->clean = TOKENIZER_CLEAN_HF;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = !strcmp(o, "--model")          ? &a->model
                            : !strcmp(o, "--weights")      ? &a->weights
                            : !strcmp(o, "--vae")          ? &a->vae
                            : !strcmp(o, "--vae-weights")  ? &a->vae_weights
                            : !strcmp(o, "--latent")       ? &a->latent
                            : !strcmp(o, "--prompts")      ? &a->prompts_file
                            : !strcmp(o, "--text-encoder") ? &a->text_encoder
                            : !strcmp(o, "--text-weights") ? &a->text_weights
                            : !strcmp(o, "--text-encoder2") ? &a->text_encoder2
                            : !strcmp(o, "--text-weights2") ? &a->text_weights2
                            : !strcmp(o, "--tokenizer")    ? &a->tokenizer
                            : !strcmp(o, "--embeddings")   ? &a->embeddings
                            : !strcmp(o, "--out")          ? &a->out
                                                           : NULL;
        uint64_t u = 0;
        if (o[0] != '-' && strchr(o, '=')) {
            if (a->n_overrides == SAMPLE_MAX_OVERRIDES) return usage_error("at most 32 overrides%s", "");
            a->overrides[a->n_overrides++] = o;
            continue;
        }
        if (!strcmp(o, "--zero-terminal-snr")) {
            a->zsnr = true;
            continue;
        }
        if (!v) return usage_error("%s needs a value", o);
        i++;
        if (slot) {
            *slot = v;
        } else if (!strcmp(o, "--prompt")) {
            if (a->n_prompts == SAMPLE_MAX_PROMPTS) return usage_error("at most 4096 prompts%s", "");
            a->prompts[a->n_prompts++] = v;
        } else if (!strcmp(o, "--seed") || !strcmp(o, "--init-seed") || !strcmp(o, "--text-seed") ||
                   !strcmp(o, "--text-seed2")) {
            if (!parse_u64(v, &u)) return usage_error("seeds are non-negative integers, not '%s'", v);
            *(!strcmp(o, "--seed")         ? &a->seed
              : !strcmp(o, "--init-seed")  ? &a->init_seed
              : !strcmp(o, "--text-seed")  ? &a->text_seed
                                           : &a->text_seed2) = u;
        } else if (!strcmp(o, "--steps") || !strcmp(o, "--n-per-prompt") || !strcmp(o, "--batch")) {
            if (!parse_u64(v, &u) || u < 1 || u > 100000) return usage_error("%s needs a positive integer", o);
            *(!strcmp(o, "--steps") ? &a->steps : !strcmp(o, "--batch") ? &a->batch : &a->n_per_prompt) = (int32_t)u;
        } else if (!strcmp(o, "--sampler")) {
            if (sampler_kind_parse(v, &a->sampler) != ADDC_OK) return usage_error("%s", addc_error_message());
        } else if (!strcmp(o, "--size") || !strcmp(o, "--original-size")) {
            bool orig = !strcmp(o, "--original-size");
            if (!parse_size(v, orig ? &a->oh : &a->h, orig ? &a->ow : &a->w)) return usage_error("sizes are HxW, not '%s'", v);
        } else if (!strcmp(o, "--cfg") || !strcmp(o, "--latent-scale")) {
            char *end;
            double d = strtod(v, &end);
            if (*end || !(d > 0) || d > 1e6) return usage_error("%s needs a positive number", o);
            *(!strcmp(o, "--cfg") ? &a->cfg : &a->latent_scale) = d;
        } else if (!strcmp(o, "--prediction")) {
            if (strcmp(v, "epsilon") && strcmp(v, "v_prediction")) return usage_error("--prediction is epsilon or v_prediction, not '%s'", v);
            a->prediction = !strcmp(v, "epsilon") ? PREDICTION_EPSILON : PREDICTION_V;
        } else if (!strcmp(o, "--final-alpha-one")) {
            if (strcmp(v, "0") && strcmp(v, "1")) return usage_error("--final-alpha-one is 0 or 1, not '%s'", v);
            a->alpha_one = v[0] == '1';
        } else if (!strcmp(o, "--text-layer")) {
            if (strcmp(v, "penultimate") && strcmp(v, "last")) return usage_error("--text-layer is penultimate or last, not '%s'", v);
            a->text_last = !strcmp(v, "last");
        } else if (!strcmp(o, "--clean")) {
            if (strcmp(v, "hf") && strcmp(v, "open_clip")) return usage_error("--clean is hf or open_clip, not '%s'", v);
            a->clean = !strcmp(v, "hf") ? TOKENIZER_CLEAN_HF : TOKENIZER_CLEAN_OPEN_CLIP;
        } else {
            return usage_error("unknown option '%s'", o);
        }
    }
    if (!a->model) return usage_error("give the UNet's model YAML with --model%s", "");
    if (!a->weights) return usage_error("give --weights FILE, or --weights none for random weights%s", "");
    if (!a->out) return usage_error("give the output directory with --out%s", "");
    if (a->vae && !a->vae_weights) return usage_error("--vae needs --vae-weights FILE (or none)%s", "");
    if (a->vae && a->latent) return usage_error("give --vae or --latent, not both%s", "");
    if (a->latent && strcmp(a->latent, "unshuffle") && strcmp(a->latent, "none"))
        return usage_error("--latent is unshuffle or none, not '%s'", a->latent);
    if (a->n_prompts && a->prompts_file) return usage_error("give --prompt or --prompts, not both%s", "");
    if (a->text_encoder && !a->text_weights) return usage_error("--text-encoder needs --text-weights FILE (or none)%s", "");
    if (a->text_encoder2 && !a->text_weights2) return usage_error("--text-encoder2 needs --text-weights2 FILE (or none)%s", "");
    if (a->text_encoder2 && !a->text_encoder) return usage_error("--text-encoder2 needs --text-encoder (the first encoder)%s", "");
    if (a->text_encoder && a->embeddings) return usage_error("give --text-encoder or --embeddings, not both%s", "");
    if (a->embeddings && a->cfg != 1) return usage_error("--cfg needs a text encoder (the empty prompt), not --embeddings%s", "");
    if (a->cfg != 1 && !a->text_encoder) return usage_error("--cfg needs --text-encoder%s", "");
    if (!a->steps) a->steps = a->sampler == SAMPLER_ADD || a->sampler == SAMPLER_EULER_A ? 1 : 50;
    if (!a->batch) a->batch = a->n_per_prompt;
    return 0;
}

/* ---- the pieces ---- */

typedef struct Sampling {
    SampleArgs *a;
    Generator gen;
    char **prompts; /* (n_prompts) */
    int32_t n_prompts;
    bool prompts_owned;
} Sampling;

static Status prompts_read(Sampling *s) {
    SampleArgs *a = s->a;
    if (!a->prompts_file) {
        s->prompts = (char **)a->prompts;
        s->n_prompts = a->n_prompts;
        return ADDC_OK;
    }
    FILE *f = fopen(a->prompts_file, "r");
    if (!f) return addc_error_set(ADDC_ERR_IO, "cannot open the prompts file %s: %s", a->prompts_file, strerror(errno));
    s->prompts = calloc(SAMPLE_MAX_PROMPTS, sizeof(char *));
    s->prompts_owned = true;
    char line[4096];
    Status st = s->prompts ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "prompts: out of memory");
    while (st == ADDC_OK && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        if (s->n_prompts == SAMPLE_MAX_PROMPTS)
            st = addc_error_set(ADDC_ERR_INVALID, "%s: more than %d prompts", a->prompts_file, SAMPLE_MAX_PROMPTS);
        else if (!(s->prompts[s->n_prompts++] = strdup(line)))
            st = addc_error_set(ADDC_ERR_NOMEM, "prompts: out of memory");
    }
    fclose(f);
    return st;
}

/* image (B, H, W, C) in [-1, 1], C 1 or 3 -> DIR/%05d.png for indices first .. first + B */
static Status write_pngs(Sampling *s, const Var *img, int64_t first, int32_t prompt, FILE *manifest) {
    int64_t B = img->v.shape[0], H = img->v.shape[1], W = img->v.shape[2], C = img->v.shape[3];
    for (int64_t b = 0; b < B; b++) {
        char name[32], path[1200];
        snprintf(name, sizeof name, "%05lld.png", (long long)(first + b));
        snprintf(path, sizeof path, "%s/%s", s->a->out, name);
        TRY(generator_png_write((const float *)img->v.data + b * H * W * C, H, W, C, path));
        fprintf(manifest, "{\"file\": \"%s\", \"prompt\": ", name);
        cli_json_string(manifest, s->prompts[prompt]);
        fprintf(manifest, ", \"seed\": %llu, \"index\": %lld, \"steps\": %d, \"sampler\": \"%s\", \"cfg\": %g}\n",
                (unsigned long long)s->a->seed, (long long)(first + b), (int)s->a->steps,
                sampler_kind_name(s->a->sampler), s->a->cfg);
    }
    return ADDC_OK;
}

static Status setup(Sampling *s) {
    SampleArgs *a = s->a;
    GeneratorOptions o;
    generator_options_default(&o);
    o.unet = (GeneratorNet){.config = a->model, .weights = strcmp(a->weights, "none") ? a->weights : NULL,
                            .seed = a->init_seed, .n_overrides = a->n_overrides};
    memcpy(o.unet.overrides, a->overrides, sizeof a->overrides);
    if (a->vae) {
        o.codec = LATENT_CODEC_VAE;
        o.vae = (GeneratorNet){.config = a->vae, .weights = strcmp(a->vae_weights, "none") ? a->vae_weights : NULL,
                               .seed = a->init_seed};
    } else {
        o.codec = a->latent && !strcmp(a->latent, "none") ? LATENT_CODEC_NONE : LATENT_CODEC_UNSHUFFLE;
        o.latent_scale = a->latent_scale;
    }
    if (a->text_encoder)
        o.text.encoder[0] = (NetSpec){.config = a->text_encoder,
                                      .weights = strcmp(a->text_weights, "none") ? a->text_weights : NULL,
                                      .seed = a->text_seed};
    if (a->text_encoder2)
        o.text.encoder[1] = (NetSpec){.config = a->text_encoder2,
                                      .weights = strcmp(a->text_weights2, "none") ? a->text_weights2 : NULL,
                                      .seed = a->text_seed2};
    o.text.tokenizer = a->tokenizer;
    o.text.clean = a->clean;
    o.text.last = a->text_last;
    o.text.embeddings = a->embeddings;
    o.schedule.zero_terminal_snr = a->zsnr;
    o.prediction = a->prediction;
    o.h = a->h, o.w = a->w, o.oh = a->oh, o.ow = a->ow;
    TRY(generator_init(&s->gen, &o));
    TRY(prompts_read(s));
    const TextCond *tc = &s->gen.text;
    int64_t P = tc->P;
    if (P && s->n_prompts && s->n_prompts != P)
        return addc_error_set(ADDC_ERR_INVALID, "%d prompts for %lld rows of %s", (int)s->n_prompts, (long long)P,
                              a->embeddings);
    if (P && !s->n_prompts) { /* the file's captions name the images, else "embedding p" */
        s->prompts = calloc((size_t)P, sizeof(char *));
        s->prompts_owned = true;
        for (int64_t p = 0; s->prompts && p < P; p++) {
            char b[48];
            snprintf(b, sizeof b, "embedding %lld", (long long)p);
            if (!(s->prompts[s->n_prompts++] = strdup(tc->captions ? tc->captions[p] : b)))
                return addc_error_set(ADDC_ERR_NOMEM, "prompts: out of memory");
        }
    }
    if (!s->n_prompts) return addc_error_set(ADDC_ERR_INVALID, "no prompts: give --prompt TEXT or --prompts FILE");
    if (mkdir(a->out, 0755) && errno != EEXIST)
        return addc_error_set(ADDC_ERR_IO, "cannot create %s: %s", a->out, strerror(errno));
    return ADDC_OK;
}

static Status sample_all(Sampling *s, int64_t *n_images, double *secs) {
    SampleArgs *a = s->a;
    char path[1200];
    snprintf(path, sizeof path, "%s/manifest.jsonl", a->out);
    FILE *manifest = fopen(path, "w");
    if (!manifest) return addc_error_set(ADDC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    Arena arena;
    arena_init(&arena, 64 << 20, 0);
    Ctx c = ctx_make(&arena, NULL, DEVICE_CPU);
    int64_t K = a->n_per_prompt;
    SamplerConfig cfg = {a->sampler, a->steps, a->prediction, a->alpha_one};
    Status st = ADDC_OK;
    double t0 = cli_now_s();
    for (int32_t p = 0; p < s->n_prompts && st == ADDC_OK; p++)
        for (int64_t k = 0; k < K && st == ADDC_OK; k += a->batch) {
            ArenaMark m = arena_mark(&arena);
            int64_t B = K - k < a->batch ? K - k : a->batch, first = p * K + k;
            Var *img = NULL;
            st = generator_run(&s->gen, &c, s->prompts[p], p, B, a->seed, (uint64_t)first, &cfg, a->cfg, &img);
            if (st == ADDC_OK) st = write_pngs(s, img, first, p, manifest);
            arena_reset_to(&arena, m);
            *n_images += st == ADDC_OK ? B : 0;
        }
    *secs = cli_now_s() - t0;
    arena_free(&arena);
    if (fclose(manifest) && st == ADDC_OK) st = addc_error_set(ADDC_ERR_IO, "cannot write %s", path);
    return st;
}

int cmd_sample(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            sample_usage(stdout);
            return 0;
        }
    SampleArgs a;
    int rc = sample_parse(argc, argv, &a);
    if (rc) return rc;
    Sampling s;
    memset(&s, 0, sizeof s);
    s.a = &a;
    Status st = setup(&s);
    int64_t n = 0;
    double secs = 0;
    if (st == ADDC_OK) {
        const Generator *g = &s.gen;
        int64_t f = latent_codec_downscale(&g->codec);
        printf("unet        %s: %lld parameters, weights %s\n", a.model, (long long)g->unet.params.numel, a.weights);
        printf("codec       %s, images %lldx%lld, latents %lldx%lldx%lld\n", latent_codec_kind_names[g->codec.kind],
               (long long)g->h, (long long)g->w, (long long)(g->h / f), (long long)(g->w / f),
               (long long)g->unet.net.unet.cfg.in_channels);
        if (g->text.kind == TEXT_COND_ENCODER && g->text.n_enc == 2)
            printf("text        %s + %s (context %lld wide, pooled from the second)\n", a.text_encoder,
                   a.text_encoder2, (long long)g->text.D);
        else
            printf("text        %s\n", g->text.kind == TEXT_COND_ENCODER      ? a.text_encoder
                                     : g->text.kind == TEXT_COND_EMBEDDINGS ? a.embeddings
                                                                             : "none (zero context)");
        printf("sampler     %s, %d steps, %s, seed %llu, cfg %g\n", sampler_kind_name(a.sampler), (int)a.steps,
               a.prediction == PREDICTION_V ? "v_prediction" : "epsilon", (unsigned long long)a.seed, a.cfg);
        fflush(stdout);
        st = sample_all(&s, &n, &secs);
    }
    if (st != ADDC_OK) rc = cli_fail("sample");
    else
        printf("wrote       %lld images and manifest.jsonl to %s in %.2f s (%.3f s/image, %d threads)\n", (long long)n,
               a.out, secs, n ? secs / (double)n : 0.0, parallel_threads());
    if (s.prompts_owned) {
        for (int32_t i = 0; i < s.n_prompts; i++) free(s.prompts[i]);
        free(s.prompts);
    }
    generator_free(&s.gen);
    return rc;
}
