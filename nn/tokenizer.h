/* nn/tokenizer: the CLIP byte-level BPE tokenizer (OpenAI CLIP's, as open_clip's SimpleTokenizer
 * and transformers' CLIPTokenizer run it), for the text encoders of nn/clip.h.
 *
 * Vocabulary: the 48,894 merges of bpe_simple_vocab_16e6.txt(.gz) (committed as
 * configs/tokenizer/bpe_simple_vocab_16e6.txt.gz; read through libarchive's gzip filter) or of a
 * transformers merges.txt (the same merges after a "#version" line). Ids: the 256 byte symbols,
 * the 256 end-of-word byte symbols, one per merge, then <start_of_text> 49406 and <end_of_text>
 * 49407 (transformers calls them <|startoftext|> and <|endoftext|>).
 *
 * encode = clean, pre-tokenise, BPE:
 *   TOKENIZER_CLEAN_OPEN_CLIP  open_clip's "lower" cleaning: ftfy.fix_text (HTML entities when the text
 *       has no '<', terminal escapes, C1 controls as Windows-1252, Latin ligatures, full-/half-width
 *       forms, curly quotes, control characters, NFC; repeated until stable), html.unescape twice,
 *       strip, whitespace runs -> one space, str.lower (full mappings, final sigma). ftfy's mojibake
 *       repair (fix_encoding: "CafÃ©" -> "Café") is NOT reproduced: such text tokenises as written.
 *   TOKENIZER_CLEAN_HF  transformers 5's CLIPTokenizer normaliser: NFC, whitespace runs -> one space,
 *       per-character lower-casing (no final sigma); no ftfy, no HTML.
 * Pre-tokenisation is the CLIP regex
 *   <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * (the special tokens spelled <|startoftext|>, <|endoftext|> in the transformers mode); each piece's
 * UTF-8 bytes are merged by rank, the last byte carrying the end-of-word mark.
 *
 * tokenize = <start_of_text>, the ids, <end_of_text>, cut to the context (the last kept id becomes
 * <end_of_text>: both libraries agree) and padded with pad_id: 0 for open_clip (and SDXL's
 * OpenCLIP bigG tokenizer, pad "!"), 49407 for transformers' CLIP-L tokenizer (pad <|endoftext|>).
 * A loaded tokenizer is read-only: any number of threads may use it. */
#ifndef ADDC_NN_TOKENIZER_H
#define ADDC_NN_TOKENIZER_H

#include <stdint.h>

#include "core/error.h"

#define CLIP_CONTEXT 77

typedef enum TokenizerClean { TOKENIZER_CLEAN_OPEN_CLIP = 0, TOKENIZER_CLEAN_HF = 1 } TokenizerClean;

typedef struct ClipTokenizer {
    int32_t vocab_size;          /* 49408 for the CLIP vocabulary */
    int32_t n_merges;
    int32_t sot_id, eot_id;
    int32_t byte_id[256];        /* symbol id of each byte; + 256 with the end-of-word mark */
    /* private: token strings and the hash tables */
    char *pool;                  /* token bytes */
    int64_t *tok_off;            /* (vocab_size) offset of each id's bytes in pool */
    int32_t *tok_len;            /* (vocab_size) */
    uint8_t *tok_eow;            /* (vocab_size) */
    int32_t *str_slots;          /* open addressing: token string -> id, -1 empty */
    int64_t str_cap;
    uint64_t *pair_keys;         /* open addressing: (a << 32 | b) + 1 -> slot, 0 empty */
    int32_t *pair_rank, *pair_id;
    int64_t pair_cap;
} ClipTokenizer;

/* Loads merges from bpe_simple_vocab_16e6.txt.gz (gzip) or a plain merges file. */
Status clip_tokenizer_load(ClipTokenizer *t, const char *path);
void clip_tokenizer_free(ClipTokenizer *t);

/* The id of a token written as the vocabularies write it ("!", "a</w>", "<|endoftext|>",
 * "<end_of_text>", ...), or -1. */
int32_t clip_tokenizer_token_id(const ClipTokenizer *t, const char *token);

/* The ids of len bytes of UTF-8 text (len < 0: up to the NUL; a caption may hold NUL bytes), no
 * start / end tokens, malloc'd into *ids (free it), *n of them. Invalid UTF-8 bytes read as U+FFFD. */
Status clip_tokenizer_encode(const ClipTokenizer *t, const char *text, int64_t len, TokenizerClean clean, int32_t **ids,
                             int32_t *n);

/* One caption to `context` ids (see the top of this file) in out[0 .. context). */
Status clip_tokenizer_tokenize(const ClipTokenizer *t, const char *text, int64_t len, TokenizerClean clean,
                               int32_t context, int32_t pad_id, int32_t *out);

#endif
