/* launch/text_cond: a UNet's text conditioning, in one place for training (train_setup.c,
 * train_grid.c), generation (generate.c: `addc sample`, `addc eval`) and `addc embed`.
 *
 * Sources:
 *   encoder     the CLIP BPE tokenizer and one or two frozen CLIP text encoders (nn/clip.h). One
 *               encoder: the context is its penultimate (or last) hidden states (B, T, D), the
 *               pooled vector its text_embeds (with a projection) else its pooled end-of-text row.
 *               Two encoders (SDXL: CLIP ViT-L, then OpenCLIP bigG), as diffusers'
 *               StableDiffusionXLPipeline.encode_prompt: both see the same caption, each padded with
 *               its own pad_token (CLIP-L "<|endoftext|>", bigG "!" = id 0) and cut to its
 *               max_position_embeddings (which must agree), the same cleaning; the context is the
 *               concatenation of their hidden states along the features (B, T, D1 + D2: 768 + 1280
 *               = 2048) and the pooled vector is the SECOND encoder's text_embeds (else pooled).
 *   embeddings  precomputed rows of a safetensors file (`addc embed` writes them):
 *                 encoder_hidden_states  (P, T, D)  the context of row p
 *                 text_embeds            (P, Dp)    its pooled vector (optional)
 *                 __metadata__ "captions": a JSON list of P strings, as a string (safetensors
 *                   metadata values are strings; Python: json.loads(f.metadata()["captions"])):
 *                   the caption of each row. A caption is looked up exactly (bytes, no cleaning) in
 *                   a hash table; the first of repeated captions wins. A file without captions is
 *                   only read by row (addc sample --embeddings). The safetensors header, captions
 *                   included, is limited to 100 MiB (nn/safetensors.h): about a million captions.
 *               The rows are what the encoder source computes for each caption alone, so training
 *               on them is bit-identical to training with the encoders.
 * The encoders run on each distinct caption of a batch alone (batch 1): OpenBLAS sgemm rounds a row
 * differently with the number of rows it is computed with, so a batched forward would make a
 * caption's numbers depend on its batch mates; one at a time, training, sampling, `addc embed` and
 * the rows read back all agree bit for bit (and repeated captions, the toy's ten classes, are
 * encoded once per batch).
 * Without text the callers use a zero context (their own shape) and a zero pooled vector. */
#ifndef ADDC_LAUNCH_TEXT_COND_H
#define ADDC_LAUNCH_TEXT_COND_H

#include <stdbool.h>
#include <stdint.h>

#include "launch/train_config.h"
#include "nn/model.h"
#include "nn/tokenizer.h"

#define NET_SPEC_MAX_OVERRIDES 32
#define TEXT_COND_MAX_ENCODERS 2

/* A network to build: its model YAML, overrides, and weights. */
typedef struct NetSpec {
    const char *config;                             /* model YAML; NULL: not used */
    const char *overrides[NET_SPEC_MAX_OVERRIDES];  /* "field=value" of the YAML */
    int32_t n_overrides;
    const char *weights;                            /* NULL or "": fresh weights keyed by seed */
    uint64_t seed;
} NetSpec;

/* A run config's model section (config "" : not used) as a NetSpec; the strings stay m's. */
void net_spec_from_train(NetSpec *n, const TrainModelConfig *m);
/* Builds n on the CPU, checks it is a `kind`, and loads its weights (or draws them from its seed).
 * Errors name key (the config's key or flag) and wkey (the weights'). */
Status net_spec_build(Model *m, const NetSpec *n, const char *key, const char *wkey, ModelKind kind);

/* How errors name each input: a run config's keys ("text.encoder.config") or the CLI's flags. */
typedef struct TextCondKeys {
    const char *text[TEXT_COND_MAX_ENCODERS], *text_weights[TEXT_COND_MAX_ENCODERS], *tokenizer, *embeddings;
} TextCondKeys;

extern const TextCondKeys text_cond_keys_train, text_cond_keys_cli;

typedef struct TextCondOptions {
    NetSpec encoder[TEXT_COND_MAX_ENCODERS]; /* config NULL: not used; [1] needs [0] */
    const char *tokenizer;  /* NULL: CLI_DEFAULT_VOCAB, here or in the addc checkout */
    TokenizerClean clean;
    bool last;              /* context = the last hidden states (else the penultimate) */
    const char *embeddings; /* a precomputed file instead of encoders; NULL: none */
    TextCondKeys keys;
} TextCondOptions;

/* An exact-match hash index over an array of strings the caller owns (slots hold array indices). */
typedef struct CaptionIndex {
    int64_t *slots; /* (n_slots) -1: empty */
    int64_t n_slots, n;
} CaptionIndex;

/* Adds strings[i]; a string already indexed keeps its first index. */
Status caption_index_add(CaptionIndex *x, char *const *strings, int64_t i);
/* The index of s, or -1. */
int64_t caption_index_find(const CaptionIndex *x, char *const *strings, const char *s);
void caption_index_free(CaptionIndex *x);

typedef enum TextCondKind { TEXT_COND_NONE = 0, TEXT_COND_ENCODER, TEXT_COND_EMBEDDINGS } TextCondKind;

typedef struct TextCond {
    TextCondKind kind;
    TextCondOptions opt;
    Model enc[TEXT_COND_MAX_ENCODERS];
    int32_t n_enc;
    int32_t pad_id[TEXT_COND_MAX_ENCODERS];
    ClipTokenizer tok;
    bool has_tok;
    int64_t T;  /* context tokens */
    int64_t D;  /* context width */
    int64_t Dp; /* pooled width; 0: none (embeddings without text_embeds) */
    /* embeddings */
    int64_t P;           /* rows */
    float *emb_context;  /* (P, T, D) */
    float *emb_pooled;   /* (P, Dp) or NULL */
    char **captions;     /* (P) or NULL when the file names none */
    CaptionIndex index;  /* caption -> row */
} TextCond;

/* Empty (no text), hf cleaning, penultimate layer, the given keys. */
void text_cond_options_default(TextCondOptions *o, const TextCondKeys *keys);
/* A training config's text section: text.source encoder gives text.encoder (and text.encoder2),
 * embeddings text.embeddings, none nothing. Points into t, which must outlive o. */
void text_cond_options_from_train(TextCondOptions *o, const TrainTextConfig *t);
/* As text_cond_options_from_train with the encoders whatever text.source says (addc embed). */
void text_cond_options_encoders(TextCondOptions *o, const TrainTextConfig *t);

/* Builds the encoders and the tokenizer, or reads the embeddings (each refusal names opt.keys).
 * Call text_cond_free afterwards, also when it fails. */
Status text_cond_init(TextCond *tc, const TextCondOptions *opt);
void text_cond_free(TextCond *tc);

/* The conditioning of B captions: context (B, T, D) and pooled (B, Dp), or NULL when Dp is 0.
 * Encoders run on each distinct caption alone (c without a tape: a caption's embedding does not
 * depend on its batch); embeddings copy each caption's row, an
 * unknown caption being an error that names it and the file. */
Status text_cond_encode(Ctx *c, const TextCond *tc, const char *const *captions, int64_t B, Var **context,
                        Var **pooled);
/* Embeddings only: rows[0 .. B) of the file. */
Status text_cond_rows(Ctx *c, const TextCond *tc, const int64_t *rows, int64_t B, Var **context, Var **pooled);
/* The embeddings' row of a caption, or -1 (also without captions or embeddings). */
int64_t text_cond_row(const TextCond *tc, const char *caption);
/* Embeddings: an error naming the first caption without a row (what, e.g. "sample.prompts",
 * says where it came from); ADDC_OK for the encoder source. */
Status text_cond_require(const TextCond *tc, const char *const *captions, int64_t n, const char *what);

/* The width of the pooled text vector SDXL's text_time embedding takes (0 without one). */
int64_t text_cond_unet_pooled_width(const UNet2D *u);
/* The text's widths against the UNet's: D == cross_attention_dim, and Dp == the pooled width when
 * both are non-zero (a UNet without text_time ignores the pooled vector; no pooled vector gives it
 * zeros). */
Status text_cond_check_unet(const TextCond *tc, const UNet2D *u);

/* Writes captions[0 .. P) with their context (P, T, D) and pooled (P, Dp) rows (pooled NULL: no
 * text_embeds) as an embeddings file (durably); n_meta more string members of __metadata__. */
Status text_cond_embeddings_write(const char *path, const char *const *captions, int64_t P, int64_t T, int64_t D,
                                  int64_t Dp, const float *context, const float *pooled,
                                  const char *const *meta_keys, const char *const *meta_values, int32_t n_meta);

#endif
