/* launch/embed: `addc embed`: precomputes the text conditioning of a run's captions once, with the
 * config's text encoders (text.encoder and, for SDXL, text.encoder2), into a safetensors file that
 * `addc train` reads with text.source embeddings (launch/text_cond.h gives the layout). Each row is
 * what training's encoder source computes for that caption, so training on the file is
 * bit-identical to training with the encoders, without running them every step.
 *
 * Rows, each caption once, in this order: "" (dropped captions, guidance), the lines of each
 * --captions file, every caption of data.shards (--from-shards: the .txt members exactly, file
 * order), then sample.prompts and eval.prompts of the config. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/parallel.h"
#include "data/wds.h"
#include "launch/cli.h"
#include "launch/text_cond.h"

#define EMBED_MAX_FILES 8
#define EMBED_MAX_OVERRIDES 64

static void embed_usage(FILE *f) {
    fprintf(f,
            "usage: addc embed CONFIG.yaml [MORE.yaml ...] [key.path=value ...] [--captions FILE ...] [--from-shards]\n"
            "                  --out FILE.safetensors\n"
            "\n"
            "Computes the text conditioning of captions with the config's text encoders (text.encoder, and\n"
            "text.encoder2 for SDXL's two; text.tokenizer, text.clean, text.layer), whatever text.source says, and\n"
            "writes FILE.safetensors for training with\n"
            "  text.source=embeddings text.embeddings=FILE.safetensors\n"
            "which is then bit-identical to text.source=encoder (same losses), without the encoders: training\n"
            "encodes each distinct caption alone, as this command does.\n"
            "\n"
            "Rows (each caption once, first appearance): \"\" (what dropped captions and guidance use), then every\n"
            "line of each --captions FILE (one caption per line, the line break and a CR before it removed, empty\n"
            "lines skipped), then with --from-shards every caption of data.shards (the .txt members byte for\n"
            "byte: captions with line breaks need this), then the config's sample.prompts and eval.prompts.\n"
            "\n"
            "The file holds encoder_hidden_states (P, T, D) F32 (two encoders: D = D1 + D2, concatenated), text_embeds\n"
            "(P, Dp) F32 (the pooled vector: the last encoder's text_embeds, else its pooled output) and in\n"
            "__metadata__ \"captions\": the P captions as a JSON list inside a string (Python:\n"
            "json.loads(safe_open(FILE, \"np\").metadata()[\"captions\"])), plus the encoders, weights, layer, cleaning\n"
            "and tokenizer used. Training looks each batch caption up exactly and refuses one without a row.\n"
            "\n"
            "Exit code 0; 1 when the config, an encoder or a file is refused; 2 for a usage error.\n");
}

typedef struct EmbedArgs {
    const char *files[EMBED_MAX_FILES];
    int32_t n_files;
    const char *overrides[EMBED_MAX_OVERRIDES];
    int32_t n_overrides;
    const char *captions[EMBED_MAX_FILES];
    int32_t n_captions;
    bool from_shards;
    const char *out;
} EmbedArgs;

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "addc embed: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see addc embed --help)\n");
    return 2;
}

static int embed_parse(int argc, char **argv, EmbedArgs *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (o[0] != '-') {
            if (strchr(o, '=')) {
                if (a->n_overrides == EMBED_MAX_OVERRIDES) return usage_error("at most 64 overrides%s", "");
                a->overrides[a->n_overrides++] = o;
            } else {
                if (a->n_files == EMBED_MAX_FILES) return usage_error("at most 8 config files%s", "");
                a->files[a->n_files++] = o;
            }
            continue;
        }
        if (!strcmp(o, "--from-shards")) {
            a->from_shards = true;
            continue;
        }
        if (strcmp(o, "--captions") && strcmp(o, "--out"))
            return usage_error("unknown option '%s'", o);
        if (!v) return usage_error("%s needs a value", o);
        i++;
        if (!strcmp(o, "--captions")) {
            if (a->n_captions == EMBED_MAX_FILES) return usage_error("at most 8 --captions files%s", "");
            a->captions[a->n_captions++] = v;
        } else {
            a->out = v;
        }
    }
    if (!a->n_files) return usage_error("give the run's config (its text.encoder is what embeds)%s", "");
    if (!a->out) return usage_error("give the output file with --out FILE.safetensors%s", "");
    return 0;
}

/* ---- the captions ---- */

typedef struct CaptionList {
    char **items; /* (n) owned */
    int64_t n, cap;
    CaptionIndex index;
} CaptionList;

/* Adds s[0 .. len) unless already there. */
static Status list_add(CaptionList *l, const char *s, size_t len) {
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 64;
        char **items = realloc(l->items, (size_t)cap * sizeof(char *));
        if (!items) return addc_error_set(ADDC_ERR_NOMEM, "captions: out of memory");
        l->items = items;
        l->cap = cap;
    }
    if (!(l->items[l->n] = strndup(s, len))) return addc_error_set(ADDC_ERR_NOMEM, "captions: out of memory");
    if (caption_index_find(&l->index, l->items, l->items[l->n]) >= 0) {
        free(l->items[l->n]);
        return ADDC_OK;
    }
    TRY(caption_index_add(&l->index, l->items, l->n));
    l->n++;
    return ADDC_OK;
}

static void list_free(CaptionList *l) {
    for (int64_t i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    caption_index_free(&l->index);
}

static Status captions_file_read(CaptionList *l, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return addc_error_set(ADDC_ERR_IO, "--captions: cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    Status st = ADDC_OK;
    int64_t lineno = 0;
    while (st == ADDC_OK && (n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (n > 0 && line[n - 1] == '\n') n--;
        if (n > 0 && line[n - 1] == '\r') n--;
        if (n == 0) continue;
        if (memchr(line, 0, (size_t)n) || !json_utf8_valid(line, n))
            st = addc_error_set(ADDC_ERR_INVALID, "--captions %s line %lld: not UTF-8 text", path, (long long)lineno);
        else
            st = list_add(l, line, (size_t)n);
    }
    free(line);
    fclose(f);
    return st;
}

/* Every caption of data.shards, as the loader reads them (UTF-8 .txt members without NUL). */
static Status captions_shards_read(CaptionList *l, const char *spec) {
    if (!spec[0]) return addc_error_set(ADDC_ERR_INVALID, "data.shards: --from-shards reads its captions: give it");
    ShardList sl;
    TRY(shard_list_expand(spec, &sl));
    WdsLimits lim;
    wds_limits_default(&lim);
    WdsSample s;
    memset(&s, 0, sizeof s);
    Status st = ADDC_OK;
    for (int64_t k = 0; k < sl.n && st == ADDC_OK; k++) {
        WdsReader *r = NULL;
        st = wds_reader_open(sl.urls[k], &lim, NULL, &r);
        if (st != ADDC_OK) break;
        int rc;
        while (st == ADDC_OK && (rc = wds_reader_next(r, &s, true)) == 1) {
            const WdsPart *c = &s.caption;
            if (c->present && c->loaded && !memchr(c->data, 0, (size_t)c->len) &&
                json_utf8_valid((const char *)c->data, c->len))
                st = list_add(l, (const char *)c->data, (size_t)c->len);
        }
        if (st == ADDC_OK && rc < 0) st = addc_error_status();
        Status cs = wds_reader_close(r);
        if (st == ADDC_OK) st = cs;
        if (st != ADDC_OK) st = addc_error_context(st, "data.shards %s", sl.urls[k]);
    }
    wds_sample_free(&s);
    shard_list_free(&sl);
    return st;
}

static Status captions_collect(CaptionList *l, const EmbedArgs *a, const TrainConfig *c) {
    TRY(list_add(l, "", 0));
    for (int32_t i = 0; i < a->n_captions; i++) TRY(captions_file_read(l, a->captions[i]));
    if (a->from_shards) TRY(captions_shards_read(l, c->data.shards));
    for (int32_t i = 0; i < c->sample.n_prompts; i++)
        TRY(list_add(l, c->sample.prompts[i], strlen(c->sample.prompts[i])));
    for (int32_t i = 0; i < c->eval.n_prompts; i++) TRY(list_add(l, c->eval.prompts[i], strlen(c->eval.prompts[i])));
    return ADDC_OK;
}

/* ---- encoding ---- */

/* The rows of every caption into context (P, T, D) and pooled (P, Dp), EMBED_CHUNK captions per call
 * (each is encoded alone: the rows do not depend on the chunks). */
#define EMBED_CHUNK 64
static Status encode_all(const TextCond *tc, const CaptionList *l, float *context, float *pooled) {
    Arena arena;
    arena_init(&arena, 16 << 20, 0);
    Ctx c = ctx_make(&arena, NULL, DEVICE_CPU);
    int64_t row = tc->T * tc->D;
    Status st = ADDC_OK;
    for (int64_t i = 0; i < l->n && st == ADDC_OK; i += EMBED_CHUNK) {
        int64_t B = l->n - i < EMBED_CHUNK ? l->n - i : EMBED_CHUNK;
        Var *ctx, *pool;
        st = text_cond_encode(&c, tc, (const char *const *)l->items + i, B, &ctx, &pool);
        if (st != ADDC_OK) break;
        memcpy(context + i * row, ctx->v.data, (size_t)(B * row) * sizeof(float));
        memcpy(pooled + i * tc->Dp, pool->v.data, (size_t)(B * tc->Dp) * sizeof(float));
        arena_reset(&arena);
    }
    arena_free(&arena);
    return st;
}

static const char *model_or_none(const TrainModelConfig *m) { return m->config[0] ? m->config : ""; }

static Status embed_run(const EmbedArgs *a, TrainConfig *c, TextCond *tc, CaptionList *l) {
    Status st = config_load(&train_config_schema, c, a->files, a->n_files, a->overrides, a->n_overrides);
    if (st != ADDC_OK) return addc_error_context(st, "config");
    if (!c->text.encoder.config[0])
        return addc_error_set(ADDC_ERR_INVALID, "text.encoder.config: addc embed computes the rows with the config's "
                                                "text encoders: give text.encoder (and text.encoder2 for two)");
    TextCondOptions o;
    text_cond_options_encoders(&o, &c->text);
    TRY(text_cond_init(tc, &o));
    TRY(captions_collect(l, a, c));
    printf("text        %s%s%s: context %lld x %lld, pooled %lld; %s layer, %s cleaning\n", c->text.encoder.config,
           tc->n_enc == 2 ? " + " : "", tc->n_enc == 2 ? c->text.encoder2.config : "", (long long)tc->T,
           (long long)tc->D, (long long)tc->Dp, c->text.layer == TEXT_LAYER_LAST ? "last" : "penultimate",
           c->text.clean == TOKENIZER_CLEAN_HF ? "hf" : "open_clip");
    printf("captions    %lld (\"\" included)\n", (long long)l->n);
    fflush(stdout);
    float *context = malloc((size_t)(l->n * tc->T * tc->D) * sizeof(float));
    float *pooled = malloc((size_t)(l->n * tc->Dp) * sizeof(float));
    st = context && pooled ? ADDC_OK
                           : addc_error_set(ADDC_ERR_NOMEM, "embeddings of %lld captions: out of memory", (long long)l->n);
    double t0 = cli_now_s();
    if (st == ADDC_OK) st = encode_all(tc, l, context, pooled);
    double secs = cli_now_s() - t0;
    const char *keys[] = {"format", "encoder", "encoder_weights", "encoder2", "encoder2_weights", "layer", "clean",
                          "tokenizer"};
    const char *values[] = {"addc embed",
                            model_or_none(&c->text.encoder),
                            c->text.encoder.weights,
                            model_or_none(&c->text.encoder2),
                            c->text.encoder2.weights,
                            c->text.layer == TEXT_LAYER_LAST ? "last" : "penultimate",
                            c->text.clean == TOKENIZER_CLEAN_HF ? "hf" : "open_clip",
                            c->text.tokenizer};
    if (st == ADDC_OK)
        st = text_cond_embeddings_write(a->out, (const char *const *)l->items, l->n, tc->T, tc->D, tc->Dp, context,
                                        pooled, keys, values, (int32_t)(sizeof keys / sizeof keys[0]));
    free(context);
    free(pooled);
    if (st == ADDC_OK)
        printf("wrote       %s: %lld rows in %.2f s (%d threads)\n", a->out, (long long)l->n, secs, parallel_threads());
    return st;
}

int cmd_embed(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            embed_usage(stdout);
            return 0;
        }
    EmbedArgs a;
    int rc = embed_parse(argc, argv, &a);
    if (rc) return rc;
    TrainConfig *c = calloc(1, sizeof *c);
    TextCond tc;
    CaptionList l;
    memset(&tc, 0, sizeof tc);
    memset(&l, 0, sizeof l);
    Status st = c ? embed_run(&a, c, &tc, &l) : addc_error_set(ADDC_ERR_NOMEM, "embed: out of memory");
    if (st != ADDC_OK) rc = cli_fail("embed");
    list_free(&l);
    text_cond_free(&tc);
    free(c);
    return rc;
}
