/* tests/unit/test_tokenizer: the CLIP BPE tokenizer in C against open_clip's SimpleTokenizer and
 * transformers' CLIPTokenizer (fixture from tests/ref/make_tokenizer_fixture.py).
 *
 * - the committed vocabulary (configs/tokenizer/bpe_simple_vocab_16e6.txt.gz, read through
 *   libarchive's gzip filter): 48,894 merges, 49,408 ids, the special and padding ids;
 * - 36 captions (case, punctuation, contractions, numbers, whitespace, emoji, CJK, Greek final
 *   sigma, Turkish dotted I, NFD input, HTML entities with and without '<', curly quotes,
 *   ligatures, full-width forms, C1 and other control characters, terminal escapes, scripts
 *   without case, super/subscripts, a 300-letter word, empty text, captions longer than 77
 *   tokens): every id of the 77-token context equals open_clip's (open_clip cleaning, pad 0) and
 *   transformers' (transformers cleaning, pad <|endoftext|>), printing the first mismatches;
 * - a plain merges.txt (transformers' layout) of the first 2000 merges against open_clip on the
 *   same merges; a broken merges file is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/safetensors.h"
#include "nn/tokenizer.h"
#include "tests/ref_nn.h"
#include "tests/test_util.h"

static void print_ids(const char *label, const int32_t *ids, int n) {
    fprintf(stderr, "    %s:", label);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

static int compare_mode(const ClipTokenizer *t, const SafeTensors *fx, const char *ids_name, TokenizerClean mode,
                        int32_t pad, const char *label) {
    const StTensor *text = safetensors_find(fx, "text"), *off = safetensors_find(fx, "offsets");
    const StTensor *want = safetensors_find(fx, ids_name), *skip = safetensors_find(fx, "hf_skip");
    CHECK(text && off && want && skip, "fixture tensors missing");
    if (!text || !off || !want || !skip) return -1;
    int64_t n = want->shape[0], ctx = want->shape[1];
    const int64_t *o = off->data;
    const int32_t *w = want->data;
    int bad = 0, compared = 0;
    for (int64_t i = 0; i < n; i++) {
        if (mode == TOKENIZER_CLEAN_HF && ((const uint8_t *)skip->data)[i]) continue;
        int64_t len = o[i + 1] - o[i];
        char *cap = malloc((size_t)len + 1);
        memcpy(cap, (const char *)text->data + o[i], (size_t)len);
        cap[len] = 0;
        int32_t got[CLIP_CONTEXT];
        Status st = clip_tokenizer_tokenize(t, cap, len, mode, (int32_t)ctx, pad, got);
        CHECK_OK(st);
        compared++;
        if (st == ADDC_OK && memcmp(got, w + i * ctx, (size_t)ctx * 4) != 0) {
            bad++;
            fprintf(stderr, "  %s caption %lld differs: \"%.80s\"\n", label, (long long)i, cap);
            print_ids("addc", got, 24);
            print_ids("want", w + i * ctx, 24);
        }
        free(cap);
    }
    CHECK(bad == 0, "%s: %d of %d captions differ", label, bad, compared);
    printf("  %s: %d of %d captions give exactly the reference's 77 ids\n", label, compared - bad, compared);
    return bad;
}

int main(void) {
    char path[512];
    ClipTokenizer t;
    double t0 = nn_now();
    Status st = clip_tokenizer_load(&t, nn_src_path(path, sizeof path, "configs/tokenizer/bpe_simple_vocab_16e6.txt.gz"));
    CHECK_OK(st);
    if (st != ADDC_OK) return test_main_end("test_tokenizer");
    printf("vocabulary: %d merges, %d ids, loaded in %.0f ms\n", t.n_merges, t.vocab_size, 1e3 * (nn_now() - t0));
    CHECK(t.n_merges == 48894 && t.vocab_size == 49408 && t.sot_id == 49406 && t.eot_id == 49407, "vocabulary sizes");
    CHECK(clip_tokenizer_token_id(&t, "!") == 0 && clip_tokenizer_token_id(&t, "<|endoftext|>") == 49407 &&
              clip_tokenizer_token_id(&t, "a</w>") == 320 && clip_tokenizer_token_id(&t, "photo</w>") == 1125 &&
              clip_tokenizer_token_id(&t, "<start_of_text>") == 49406 && clip_tokenizer_token_id(&t, "zzzzzzq") < 0,
          "token ids: ! %d, a</w> %d, photo</w> %d", clip_tokenizer_token_id(&t, "!"), clip_tokenizer_token_id(&t, "a</w>"),
          clip_tokenizer_token_id(&t, "photo</w>"));

    SafeTensors fx;
    CHECK_OK(safetensors_open(&fx, nn_src_path(path, sizeof path, "tests/ref/fixtures/tokenizer/captions.safetensors")));
    t0 = nn_now();
    compare_mode(&t, &fx, "open_clip", TOKENIZER_CLEAN_OPEN_CLIP, 0, "open_clip");
    compare_mode(&t, &fx, "hf", TOKENIZER_CLEAN_HF, clip_tokenizer_token_id(&t, "<|endoftext|>"), "transformers");
    printf("  (%.1f ms for both passes)\n", 1e3 * (nn_now() - t0));
    safetensors_close(&fx);

    /* a plain merges.txt (the first 2000 merges) against open_clip on the same merges */
    ClipTokenizer h;
    CHECK_OK(clip_tokenizer_load(&h, nn_src_path(path, sizeof path, "tests/ref/fixtures/tokenizer/merges_head.txt")));
    CHECK(h.n_merges == 2000 && h.vocab_size == 2514 && h.eot_id == 2513, "head vocabulary: %d merges, %d ids",
          h.n_merges, h.vocab_size);
    CHECK_OK(safetensors_open(&fx, nn_src_path(path, sizeof path, "tests/ref/fixtures/tokenizer/captions.safetensors")));
    compare_mode(&h, &fx, "head", TOKENIZER_CLEAN_OPEN_CLIP, 0, "plain merges.txt, 2000 merges");
    safetensors_close(&fx);
    clip_tokenizer_free(&h);

    char bad[64];
    FILE *f;
    snprintf(bad, sizeof bad, "/tmp/addc_test_badmerges_%d.txt", (int)getpid());
    f = fopen(bad, "w");
    fprintf(f, "#version: 0.2\nt h\nth e</w>\nno_such_symbol x y\n");
    fclose(f);
    ClipTokenizer u;
    st = clip_tokenizer_load(&u, bad);
    CHECK(st == ADDC_ERR_FORMAT, "a broken merges file must be refused");
    printf("  broken merges refused: %s\n", addc_error_message());
    addc_error_clear();
    unlink(bad);
    clip_tokenizer_free(&t);
    return test_main_end("test_tokenizer");
}
