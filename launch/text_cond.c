/* launch/text_cond: text conditioning from CLIP text encoders or precomputed embeddings (see
 * text_cond.h). */
#include "launch/text_cond.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/ops.h"
#include "launch/cli.h"
#include "nn/forward.h"
#include "nn/safetensors.h"

const TextCondKeys text_cond_keys_train = {{"text.encoder.config", "text.encoder2.config"},
                                           {"text.encoder.weights", "text.encoder2.weights"},
                                           "text.tokenizer",
                                           "text.embeddings"};
const TextCondKeys text_cond_keys_cli = {{"--text-encoder", "--text-encoder2"},
                                         {"--text-weights", "--text-weights2"},
                                         "--tokenizer",
                                         "--embeddings"};

void text_cond_options_default(TextCondOptions *o, const TextCondKeys *keys) {
    memset(o, 0, sizeof *o);
    o->clean = TOKENIZER_CLEAN_HF;
    o->keys = *keys;
}

void net_spec_from_train(NetSpec *n, const TrainModelConfig *m) {
    n->config = m->config[0] ? m->config : NULL;
    n->weights = m->weights;
    n->seed = (uint64_t)m->init_seed;
    n->n_overrides = m->n_overrides;
    for (int32_t i = 0; i < m->n_overrides; i++) n->overrides[i] = m->overrides[i];
}

Status net_spec_build(Model *m, const NetSpec *n, const char *key, const char *wkey, ModelKind kind) {
    Status st = model_build(m, n->config, n->overrides, n->n_overrides, DEVICE_CPU, false);
    if (st != ADDC_OK) return addc_error_context(st, "%s %s", key, n->config);
    if (m->kind != kind)
        return addc_error_set(ADDC_ERR_INVALID, "%s %s is a %s, not a %s", key, n->config, m->class_name,
                              model_kind_name(kind));
    bool fresh = !n->weights || !n->weights[0];
    st = fresh ? forward_weights_random(m, n->seed) : forward_weights_load(m, n->weights, NULL, NULL);
    return st == ADDC_OK ? st : addc_error_context(st, "%s %s", wkey, fresh ? "(fresh)" : n->weights);
}

void text_cond_options_encoders(TextCondOptions *o, const TrainTextConfig *t) {
    text_cond_options_default(o, &text_cond_keys_train);
    net_spec_from_train(&o->encoder[0], &t->encoder);
    net_spec_from_train(&o->encoder[1], &t->encoder2);
    /* the default vocabulary is also found in the addc checkout (cli_tokenizer_open) */
    o->tokenizer = strcmp(t->tokenizer, CLI_DEFAULT_VOCAB) ? t->tokenizer : NULL;
    o->clean = (TokenizerClean)t->clean;
    o->last = t->layer == TEXT_LAYER_LAST;
}

void text_cond_options_from_train(TextCondOptions *o, const TrainTextConfig *t) {
    text_cond_options_default(o, &text_cond_keys_train);
    if (t->source == TEXT_SOURCE_ENCODER) text_cond_options_encoders(o, t);
    if (t->source == TEXT_SOURCE_EMBEDDINGS) o->embeddings = t->embeddings;
}

/* ---- encoders ---- */

static Status encoder_build(TextCond *tc, int32_t e) {
    const NetSpec *n = &tc->opt.encoder[e];
    const char *key = tc->opt.keys.text[e], *wkey = tc->opt.keys.text_weights[e];
    Model *m = &tc->enc[e];
    tc->n_enc = e + 1; /* freed from here on, whatever happens */
    TRY(net_spec_build(m, n, key, wkey, MODEL_CLIP_TEXT));
    const ClipText *ct = &m->net.clip;
    tc->pad_id[e] = clip_tokenizer_token_id(&tc->tok, ct->cfg.pad_token);
    if (tc->pad_id[e] < 0)
        return addc_error_set(ADDC_ERR_INVALID, "%s %s: pad_token '%s' is not in the vocabulary", key, n->config,
                              ct->cfg.pad_token);
    if (e > 0 && ct->cfg.max_position_embeddings != tc->T)
        return addc_error_set(ADDC_ERR_INVALID,
                              "%s %s: %lld positions, %s has %lld: the two contexts are concatenated along the "
                              "features, token for token, so both must take the same number of tokens",
                              key, n->config, (long long)ct->cfg.max_position_embeddings, tc->opt.keys.text[0],
                              (long long)tc->T);
    tc->T = ct->cfg.max_position_embeddings;
    tc->D += ct->cfg.hidden_size;
    tc->Dp = ct->text_projection.weight ? ct->cfg.projection_dim : ct->cfg.hidden_size; /* the last encoder's */
    return ADDC_OK;
}

static Status encoders_init(TextCond *tc) {
    const TextCondOptions *o = &tc->opt;
    if (o->encoder[1].config && !o->encoder[0].config)
        return addc_error_set(ADDC_ERR_INVALID, "%s: a second text encoder needs the first (%s)", o->keys.text[1],
                              o->keys.text[0]);
    Status st = cli_tokenizer_open(o->tokenizer, &tc->tok);
    if (st != ADDC_OK) return addc_error_context(st, "%s", o->keys.tokenizer);
    tc->has_tok = true;
    for (int32_t e = 0; e < TEXT_COND_MAX_ENCODERS && o->encoder[e].config; e++) TRY(encoder_build(tc, e));
    return ADDC_OK;
}

/* ---- embeddings ---- */

static uint64_t caption_hash(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) h = (h ^ *p) * 1099511628211ull;
    return h;
}

static int64_t index_slot(const CaptionIndex *x, char *const *strings, const char *s) {
    int64_t n = x->n_slots, i = (int64_t)(caption_hash(s) & (uint64_t)(n - 1));
    while (x->slots[i] >= 0 && strcmp(strings[x->slots[i]], s)) i = (i + 1) & (n - 1);
    return i;
}

Status caption_index_add(CaptionIndex *x, char *const *strings, int64_t i) {
    if (2 * (x->n + 1) > x->n_slots) { /* keep the load at most 1/2 */
        int64_t n = x->n_slots ? 2 * x->n_slots : 16, *old = x->slots, n_old = x->n_slots;
        while (2 * (x->n + 1) > n) n *= 2;
        if (!(x->slots = malloc((size_t)n * sizeof(int64_t)))) {
            x->slots = old;
            return addc_error_set(ADDC_ERR_NOMEM, "caption index: out of memory");
        }
        x->n_slots = n;
        for (int64_t k = 0; k < n; k++) x->slots[k] = -1;
        for (int64_t k = 0; k < n_old; k++)
            if (old[k] >= 0) x->slots[index_slot(x, strings, strings[old[k]])] = old[k];
        free(old);
    }
    int64_t k = index_slot(x, strings, strings[i]);
    if (x->slots[k] < 0) {
        x->slots[k] = i;
        x->n++;
    }
    return ADDC_OK;
}

int64_t caption_index_find(const CaptionIndex *x, char *const *strings, const char *s) {
    return x->n_slots ? x->slots[index_slot(x, strings, s)] : -1;
}

void caption_index_free(CaptionIndex *x) {
    free(x->slots);
    memset(x, 0, sizeof *x);
}

/* The "captions" member of the file's metadata: a JSON list of P strings, itself a string. */
static Status captions_read(TextCond *tc, const SafeTensors *f) {
    const char *path = tc->opt.embeddings;
    if (!f->metadata) return ADDC_OK;
    JsonDoc meta, list;
    TRY(json_parse(f->metadata, (int64_t)strlen(f->metadata), NULL, &meta));
    const JsonNode *cn = json_get(&meta, json_root(&meta), "captions");
    int64_t len = 0;
    const char *text = cn ? json_string(&meta, cn, &len) : NULL;
    if (!text) {
        json_free(&meta);
        return ADDC_OK;
    }
    JsonLimits lim = {0, 0, tc->P + 16};
    Status st = json_parse(text, len, &lim, &list);
    json_free(&meta);
    if (st != ADDC_OK) return addc_error_context(st, "%s: __metadata__ captions is not a JSON list of strings", path);
    const JsonNode *root = json_root(&list);
    if (root->type != JSON_ARRAY || root->count != tc->P) {
        json_free(&list);
        return addc_error_set(ADDC_ERR_INVALID, "%s: __metadata__ captions must be a JSON list of %lld strings (one per "
                              "row of encoder_hidden_states)", path, (long long)tc->P);
    }
    tc->captions = calloc((size_t)tc->P, sizeof(char *));
    st = tc->captions ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory for the captions", path);
    int64_t p = 0;
    for (const JsonNode *n = json_child(&list, root); n && st == ADDC_OK; n = json_next(&list, n), p++) {
        int64_t sl;
        const char *s = json_string(&list, n, &sl);
        if (!s || (int64_t)strlen(s) != sl)
            st = addc_error_set(ADDC_ERR_INVALID, "%s: __metadata__ captions entry %lld is not a string without NUL",
                                path, (long long)p);
        else if (!(tc->captions[p] = strdup(s)))
            st = addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory for the captions", path);
    }
    json_free(&list);
    for (p = 0; p < tc->P && st == ADDC_OK; p++) st = caption_index_add(&tc->index, tc->captions, p);
    return st;
}

static Status embeddings_init(TextCond *tc) {
    const char *path = tc->opt.embeddings;
    SafeTensors f;
    Status st = safetensors_open(&f, path);
    if (st != ADDC_OK) return addc_error_context(st, "%s", tc->opt.keys.embeddings);
    const StTensor *e = safetensors_find(&f, "encoder_hidden_states"), *te = safetensors_find(&f, "text_embeds");
    if (!e || e->ndim != 3)
        st = addc_error_set(ADDC_ERR_INVALID, "%s needs encoder_hidden_states (P, T, D)", path);
    else if (te && (te->ndim != 2 || te->shape[0] != e->shape[0]))
        st = addc_error_set(ADDC_ERR_INVALID, "%s: text_embeds must be (P, Dt) with P = %lld", path,
                            (long long)e->shape[0]);
    if (st == ADDC_OK) {
        tc->P = e->shape[0];
        tc->T = e->shape[1];
        tc->D = e->shape[2];
        tc->Dp = te ? te->shape[1] : 0;
        int64_t n = tc->P * tc->T * tc->D, np = tc->P * tc->Dp;
        tc->emb_context = malloc((size_t)(n ? n : 1) * sizeof(float));
        tc->emb_pooled = np ? malloc((size_t)np * sizeof(float)) : NULL;
        if (!tc->emb_context || (np && !tc->emb_pooled))
            st = addc_error_set(ADDC_ERR_NOMEM, "embeddings %s: out of memory", path);
        if (st == ADDC_OK) st = safetensors_read_f32(e, tc->emb_context, n);
        if (st == ADDC_OK && np) st = safetensors_read_f32(te, tc->emb_pooled, np);
        if (st == ADDC_OK) st = captions_read(tc, &f);
    }
    safetensors_close(&f);
    return st;
}

/* ---- init ---- */

Status text_cond_init(TextCond *tc, const TextCondOptions *opt) {
    memset(tc, 0, sizeof *tc);
    tc->opt = *opt;
    if (opt->encoder[0].config && opt->embeddings)
        return addc_error_set(ADDC_ERR_INVALID, "%s and %s: a text encoder or precomputed embeddings, not both",
                              opt->keys.text[0], opt->keys.embeddings);
    if (opt->embeddings) {
        tc->kind = TEXT_COND_EMBEDDINGS;
        if (!opt->embeddings[0])
            return addc_error_set(ADDC_ERR_INVALID, "%s: no embeddings file given (addc embed writes one)",
                                  opt->keys.embeddings);
        return embeddings_init(tc);
    }
    if (opt->encoder[0].config || opt->encoder[1].config) {
        tc->kind = TEXT_COND_ENCODER;
        return encoders_init(tc);
    }
    return ADDC_OK;
}

void text_cond_free(TextCond *tc) {
    for (int32_t e = 0; e < tc->n_enc; e++) model_free(&tc->enc[e]);
    if (tc->has_tok) clip_tokenizer_free(&tc->tok);
    if (tc->captions)
        for (int64_t p = 0; p < tc->P; p++) free(tc->captions[p]);
    free(tc->captions);
    caption_index_free(&tc->index);
    free(tc->emb_context);
    free(tc->emb_pooled);
    memset(tc, 0, sizeof *tc);
}

/* ---- conditioning ---- */

int64_t text_cond_row(const TextCond *tc, const char *caption) {
    return tc->captions ? caption_index_find(&tc->index, tc->captions, caption) : -1;
}

static Status unknown_caption(const TextCond *tc, const char *caption, const char *what) {
    if (!tc->captions)
        return addc_error_set(ADDC_ERR_INVALID,
                              "%s %s names no captions (no __metadata__ \"captions\"): it can only be read by row; "
                              "write it with addc embed",
                              tc->opt.keys.embeddings, tc->opt.embeddings);
    return addc_error_set(ADDC_ERR_INVALID,
                          "%s %s has no row for the caption \"%.300s\"%s%s: embed it too (addc embed CONFIG "
                          "--captions FILE, or --from-shards for every caption of data.shards)",
                          tc->opt.keys.embeddings, tc->opt.embeddings, caption, what ? " of " : "", what ? what : "");
}

Status text_cond_require(const TextCond *tc, const char *const *captions, int64_t n, const char *what) {
    if (tc->kind != TEXT_COND_EMBEDDINGS) return ADDC_OK;
    for (int64_t i = 0; i < n; i++)
        if (text_cond_row(tc, captions[i]) < 0) return unknown_caption(tc, captions[i], what);
    return ADDC_OK;
}

Status text_cond_rows(Ctx *c, const TextCond *tc, const int64_t *rows, int64_t B, Var **context, Var **pooled) {
    int64_t cs[3] = {B, tc->T, tc->D}, ps[2] = {B, tc->Dp}, row = tc->T * tc->D;
    *context = var_new(c, DTYPE_F32, 3, cs);
    *pooled = tc->Dp ? var_new(c, DTYPE_F32, 2, ps) : NULL;
    if (!*context || (tc->Dp && !*pooled)) return addc_error_status();
    for (int64_t b = 0; b < B; b++) {
        if (rows[b] < 0 || rows[b] >= tc->P)
            return addc_error_set(ADDC_ERR_INVALID, "embedding row %lld of %lld", (long long)rows[b], (long long)tc->P);
        memcpy((float *)(*context)->v.data + b * row, tc->emb_context + rows[b] * row, (size_t)row * sizeof(float));
        if (tc->Dp)
            memcpy((float *)(*pooled)->v.data + b * tc->Dp, tc->emb_pooled + rows[b] * tc->Dp,
                   (size_t)tc->Dp * sizeof(float));
    }
    return ADDC_OK;
}

/* One caption through every encoder (batch 1), its context written into ctx (T, D) (two encoders:
 * side by side along the features) and its pooled vector (the last encoder's) into pool (Dp). */
static Status encode_one(Ctx *c, const TextCond *tc, const char *caption, float *ctx, float *pool) {
    int32_t T = (int32_t)tc->T;
    int64_t ishape[2] = {1, T}, off = 0;
    Var *ids = NULL;
    for (int32_t e = 0; e < tc->n_enc; e++) {
        if (!ids || tc->pad_id[e] != tc->pad_id[e - 1]) { /* the same ids when the padding agrees */
            if (!(ids = var_new(c, DTYPE_I32, 2, ishape))) return addc_error_status();
            TRY(clip_tokenizer_tokenize(&tc->tok, caption, -1, tc->opt.clean, T, tc->pad_id[e], ids->v.data));
        }
        ClipTextOutput o;
        TRY(clip_text_forward(c, &tc->enc[e].net.clip, ids, &o));
        const Var *h = tc->opt.last ? o.last : o.penultimate, *p = o.text_embeds ? o.text_embeds : o.pooled;
        int64_t De = h->v.shape[2];
        for (int64_t t = 0; t < T; t++)
            memcpy(ctx + t * tc->D + off, (const float *)h->v.data + t * De, (size_t)De * sizeof(float));
        off += De;
        if (e == tc->n_enc - 1) memcpy(pool, p->v.data, (size_t)tc->Dp * sizeof(float));
    }
    return ADDC_OK;
}

/* The encoders on each distinct caption alone: a row never depends on the batch it came in (a
 * batched sgemm may round differently with the number of rows), so training with the encoders,
 * with their precomputed rows, and sampling all see the same numbers. */
static Status encoders_run(Ctx *c, const TextCond *tc, const char *const *captions, int64_t B, Var **context,
                           Var **pooled) {
    int64_t cs[3] = {B, tc->T, tc->D}, ps[2] = {B, tc->Dp}, row = tc->T * tc->D;
    *context = var_new(c, DTYPE_F32, 3, cs);
    *pooled = var_new(c, DTYPE_F32, 2, ps);
    if (!*context || !*pooled) return addc_error_status();
    float *ctx = (*context)->v.data, *pool = (*pooled)->v.data;
    for (int64_t b = 0; b < B; b++) {
        int64_t j = 0;
        while (j < b && strcmp(captions[j], captions[b])) j++;
        if (j < b) { /* a caption seen in this batch: its row again */
            memcpy(ctx + b * row, ctx + j * row, (size_t)row * sizeof(float));
            memcpy(pool + b * tc->Dp, pool + j * tc->Dp, (size_t)tc->Dp * sizeof(float));
            continue;
        }
        ArenaMark m = arena_mark(c->arena); /* each caption's activations go once its row is out */
        Status st = encode_one(c, tc, captions[b], ctx + b * row, pool + b * tc->Dp);
        arena_reset_to(c->arena, m);
        TRY(st);
    }
    return ADDC_OK;
}

Status text_cond_encode(Ctx *c, const TextCond *tc, const char *const *captions, int64_t B, Var **context,
                        Var **pooled) {
    *context = *pooled = NULL;
    if (tc->kind == TEXT_COND_ENCODER) return encoders_run(c, tc, captions, B, context, pooled);
    if (tc->kind != TEXT_COND_EMBEDDINGS)
        return addc_error_set(ADDC_ERR_INVALID, "text conditioning: no text encoder or embeddings configured");
    int64_t *rows = ctx_alloc(c, B * (int64_t)sizeof(int64_t));
    if (!rows) return addc_error_status();
    for (int64_t b = 0; b < B; b++)
        if ((rows[b] = text_cond_row(tc, captions[b])) < 0) return unknown_caption(tc, captions[b], NULL);
    return text_cond_rows(c, tc, rows, B, context, pooled);
}

int64_t text_cond_unet_pooled_width(const UNet2D *u) {
    return u->has_add_embedding ? u->cfg.projection_class_embeddings_input_dim - 6 * u->cfg.addition_time_embed_dim : 0;
}

Status text_cond_check_unet(const TextCond *tc, const UNet2D *u) {
    if (tc->kind == TEXT_COND_NONE) return ADDC_OK;
    int64_t cross_attention_dim = u->cfg.cross_attention_dim, pooled_width = text_cond_unet_pooled_width(u);
    bool emb = tc->kind == TEXT_COND_EMBEDDINGS;
    const char *key = emb ? tc->opt.keys.embeddings : tc->opt.keys.text[tc->n_enc - 1];
    char parts[96] = "";
    if (tc->n_enc == 2)
        snprintf(parts, sizeof parts, " (%lld + %lld)", (long long)tc->enc[0].net.clip.cfg.hidden_size,
                 (long long)tc->enc[1].net.clip.cfg.hidden_size);
    if (tc->D != cross_attention_dim)
        return addc_error_set(ADDC_ERR_INVALID, "%s: the text context is %lld wide%s; the UNet's cross_attention_dim is %lld",
                              emb ? key : tc->opt.keys.text[0], (long long)tc->D, parts,
                              (long long)cross_attention_dim);
    if (pooled_width && tc->Dp && tc->Dp != pooled_width)
        return addc_error_set(ADDC_ERR_INVALID,
                              "%s: the pooled text is %lld wide; the UNet's text_time embedding takes %lld", key,
                              (long long)tc->Dp, (long long)pooled_width);
    return ADDC_OK;
}

/* ---- writing ---- */

Status text_cond_embeddings_write(const char *path, const char *const *captions, int64_t P, int64_t T, int64_t D,
                                  int64_t Dp, const float *context, const float *pooled,
                                  const char *const *meta_keys, const char *const *meta_values, int32_t n_meta) {
    char *list = NULL, *meta = NULL;
    size_t list_len = 0, meta_len = 0;
    FILE *f = open_memstream(&list, &list_len);
    if (!f) return addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory for the captions", path);
    fputc('[', f);
    for (int64_t p = 0; p < P; p++) {
        if (p) fputs(", ", f);
        cli_json_string(f, captions[p]);
    }
    fputc(']', f);
    fclose(f);
    f = open_memstream(&meta, &meta_len);
    if (!f) {
        free(list);
        return addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory for the metadata", path);
    }
    fputs("{\"captions\": ", f);
    cli_json_string(f, list);
    for (int32_t i = 0; i < n_meta; i++) {
        fputs(", ", f);
        cli_json_string(f, meta_keys[i]);
        fputs(": ", f);
        cli_json_string(f, meta_values[i]);
    }
    fputc('}', f);
    fclose(f);
    free(list);
    StTensor t[2] = {{"encoder_hidden_states", DTYPE_F32, 3, {P, T, D}, context, P * T * D * (int64_t)sizeof(float)},
                     {"text_embeds", DTYPE_F32, 2, {P, Dp}, pooled, P * Dp * (int64_t)sizeof(float)}};
    Status st = safetensors_write(path, t, pooled ? 2 : 1, meta);
    free(meta);
    return st;
}
