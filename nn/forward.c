/* nn/forward: one network's forward on named tensors in the ecosystem layout (`addc forward`).
 * See nn/forward.h for the names, shapes and layouts. */
#include "nn/forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"

#define FWD_ANY (-1)   /* a dimension the network does not fix */
#define FWD_BATCH (-2) /* the batch: the same in every input of a pass */
#define FWD_UNUSED_LIST 200 /* characters of unread input names listed */

/* the state of one run: where inputs come from, what the network expects, what it wrote */
typedef struct Fwd {
    Ctx *c;
    const SafeTensors *in;
    bool *used;          /* (in->n) inputs read */
    const char *net;     /* the class name, for messages */
    char expected[1024]; /* the inputs of the network, for messages */
    int64_t B;           /* the batch of this pass, FWD_ANY until an input fixes it */
    ForwardResult *r;
} Fwd;

static const char *shape_text(char *buf, size_t cap, int32_t nd, const int64_t *s) {
    int o = snprintf(buf, cap, "(");
    for (int32_t d = 0; d < nd && (size_t)o < cap; d++)
        o += snprintf(buf + o, cap - (size_t)o, "%s%lld", d ? ", " : "", (long long)s[d]);
    if ((size_t)o < cap) snprintf(buf + o, cap - (size_t)o, "%s)", nd == 1 ? "," : "");
    return buf;
}

static void text_append(char *buf, size_t cap, const char *fmt, const char *a, const char *b) {
    size_t l = strlen(buf);
    if (l < cap) snprintf(buf + l, cap - l, fmt, a, b);
}

static const StTensor *fwd_find(Fwd *f, const char *name) {
    if (!f->in) return NULL;
    const StTensor *t = safetensors_find(f->in, name);
    if (t) f->used[t - f->in->t] = true;
    return t;
}

static bool fwd_has(const Fwd *f, const char *name) { return f->in && safetensors_find(f->in, name) != NULL; }

static Status fwd_missing(const Fwd *f, const char *name) {
    char held[512] = "";
    for (int32_t i = 0; f->in && i < f->in->n; i++) {
        if (strlen(held) > sizeof held - 80) {
            text_append(held, sizeof held, "%s%s", ", ...", "");
            break;
        }
        text_append(held, sizeof held, "%s%s", i ? ", " : "", f->in->t[i].name);
    }
    return addc_error_set(ADDC_ERR_INVALID, "%s needs an input named '%s'. It takes: %s. The inputs file holds: %s",
                          f->net, name, f->expected, f->in ? (held[0] ? held : "no tensors") : "no file (--inputs)");
}

/* The batch of a new input: fixes the pass's batch or must equal it. */
static Status fwd_batch(Fwd *f, const char *name, int64_t b) {
    if (f->B == FWD_ANY) f->B = b;
    if (b != f->B)
        return addc_error_set(ADDC_ERR_INVALID, "%s: input '%s' has batch %lld but the inputs before it have %lld",
                              f->net, name, (long long)b, (long long)f->B);
    return ADDC_OK;
}

/* (B, C, S) -> (B, S, C) and back: the channels-first file layout and addc's */
static void layout_move(const float *src, float *dst, int64_t B, int64_t C, int64_t S, bool to_last) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t s = 0; s < S; s++) {
                int64_t first = (b * C + ch) * S + s, last = (b * S + s) * C + ch;
                if (to_last) dst[last] = src[first];
                else dst[first] = src[last];
            }
}

static void record_input(Fwd *f, const StTensor *t) {
    char s[96], item[192];
    snprintf(item, sizeof item, "%s %s %s", t->name, shape_text(s, sizeof s, t->ndim, t->shape),
             safetensors_dtype_name(t->dtype) ? safetensors_dtype_name(t->dtype) : "?");
    text_append(f->r->inputs, sizeof f->r->inputs, "%s%s", f->r->inputs[0] ? ", " : "", item);
}

/* A float input in the file's layout, checked against want (file order; FWD_ANY, FWD_BATCH or a
 * size), as an f32 Var in addc's layout: channels_first moves dimension 1 last. `doc` is the
 * shape as the messages print it. */
static Var *fwd_float(Fwd *f, const char *name, const char *doc, bool channels_first, int32_t nd, const int64_t *want) {
    const StTensor *t = fwd_find(f, name);
    if (!t) {
        fwd_missing(f, name);
        return NULL;
    }
    char s[96];
    if (!dtype_is_float(t->dtype)) {
        addc_error_set(ADDC_ERR_INVALID, "%s: input '%s' is %s; it must be a float tensor (F32, F16, BF16 or F64)",
                       f->net, name, safetensors_dtype_name(t->dtype) ? safetensors_dtype_name(t->dtype) : "?");
        return NULL;
    }
    bool ok = t->ndim == nd;
    for (int32_t d = 0; ok && d < nd; d++) ok = want[d] < 0 || t->shape[d] == want[d];
    if (!ok) {
        addc_error_set(ADDC_ERR_INVALID, "%s: input '%s' is %s but must be %s%s", f->net, name,
                       shape_text(s, sizeof s, t->ndim, t->shape), doc,
                       channels_first ? " (channels first: the torch layout, not addc's)" : "");
        return NULL;
    }
    if (want[0] == FWD_BATCH && fwd_batch(f, name, t->shape[0]) != ADDC_OK) return NULL;
    record_input(f, t);
    int64_t shape[TENSOR_MAX_DIMS], n = 1, S = 1;
    for (int32_t d = 0; d < nd; d++) {
        n *= t->shape[d];
        if (d >= 2) S *= t->shape[d];
    }
    memcpy(shape, t->shape, sizeof(int64_t) * (size_t)nd);
    if (channels_first) {
        memmove(shape + 1, t->shape + 2, sizeof(int64_t) * (size_t)(nd - 2));
        shape[nd - 1] = t->shape[1];
    }
    Var *v = var_new(f->c, DTYPE_F32, nd, shape);
    if (!v) return NULL;
    if (!channels_first) return safetensors_read_f32(t, v->v.data, n) == ADDC_OK ? v : NULL;
    float *tmp = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!tmp) {
        addc_error_set(ADDC_ERR_NOMEM, "%s: input '%s': out of memory", f->net, name);
        return NULL;
    }
    Status st = safetensors_read_f32(t, tmp, n);
    if (st == ADDC_OK) layout_move(tmp, v->v.data, t->shape[0], t->shape[1], S, true);
    free(tmp);
    return st == ADDC_OK ? v : NULL;
}

/* adds an output: data malloc'd here, copied from src (channels_first: from addc's layout) */
static Status fwd_out_raw(Fwd *f, const char *name, DType dt, int32_t nd, const int64_t *shape, const void *src,
                          bool channels_first) {
    ForwardResult *r = f->r;
    if (r->n == FORWARD_MAX_OUTPUTS) return addc_error_set(ADDC_ERR_INVALID, "forward: more than %d outputs", FORWARD_MAX_OUTPUTS);
    StTensor *t = &r->t[r->n];
    memset(t, 0, sizeof *t);
    int64_t n = 1;
    for (int32_t d = 0; d < nd; d++) n *= shape[d];
    t->nbytes = n * (int64_t)dtype_size(dt);
    t->name = strdup(name);
    void *data = malloc((size_t)(t->nbytes ? t->nbytes : 1));
    if (!t->name || !data) {
        free(t->name);
        free(data);
        return addc_error_set(ADDC_ERR_NOMEM, "forward: out of memory for output '%s'", name);
    }
    t->dtype = dt;
    t->ndim = nd;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)nd);
    if (channels_first) {
        /* addc (B, S..., C) -> file (B, C, S...) */
        int64_t S = 1, C = shape[nd - 1];
        for (int32_t d = 1; d < nd - 1; d++) S *= shape[d];
        t->shape[1] = C;
        memcpy(t->shape + 2, shape + 1, sizeof(int64_t) * (size_t)(nd - 2));
        layout_move(src, data, shape[0], C, S, false);
    } else {
        memcpy(data, src, (size_t)t->nbytes);
    }
    t->data = data;
    r->n++;
    return ADDC_OK;
}

static Status fwd_out(Fwd *f, const char *name, Var *v, bool channels_first) {
    if (!v) return addc_error_status() ? addc_error_status() : addc_error_set(ADDC_ERR_INVALID, "forward: no output");
    return fwd_out_raw(f, name, DTYPE_F32, v->v.ndim, v->v.shape, v->v.data, channels_first);
}

/* ---- the networks ---- */

/* diffusers takes a scalar, (1) or (B) timestep, float or integer */
static Var *unet_timestep(Fwd *f) {
    const StTensor *t = fwd_find(f, "timestep");
    if (!t) {
        fwd_missing(f, "timestep");
        return NULL;
    }
    int64_t n = t->ndim == 0 ? 1 : t->shape[0], B = f->B;
    if (t->ndim > 1 || (n != 1 && n != B)) {
        char s[96];
        addc_error_set(ADDC_ERR_INVALID, "%s: input 'timestep' is %s but must be () or (1,) or (%lld,) (one per sample)",
                       f->net, shape_text(s, sizeof s, t->ndim, t->shape), (long long)B);
        return NULL;
    }
    if (!dtype_is_float(t->dtype) && t->dtype != DTYPE_I64 && t->dtype != DTYPE_I32) {
        addc_error_set(ADDC_ERR_INVALID, "%s: input 'timestep' is %s; it must be a float or integer tensor", f->net,
                       safetensors_dtype_name(t->dtype) ? safetensors_dtype_name(t->dtype) : "?");
        return NULL;
    }
    record_input(f, t);
    Var *v = var_new(f->c, DTYPE_F32, 1, &B);
    if (!v) return NULL;
    float *d = v->v.data;
    dtype_convert(d, DTYPE_F32, t->data, t->dtype, n);
    for (int64_t b = n; b < B; b++) d[b] = d[0];
    return v;
}

static Status fwd_unet(Fwd *f, const UNet2D *m) {
    const UNet2DConfig *cfg = &m->cfg;
    bool tt = cfg->addition_embed_type[0] != 0;
    long long C = cfg->in_channels, D = cfg->cross_attention_dim, mult = 1ll << (m->n_blocks - 1);
    long long dtxt = cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim;
    char doc_x[64], doc_e[64], doc_t[64];
    snprintf(doc_x, sizeof doc_x, "(B, %lld, H, W)", C);
    snprintf(doc_e, sizeof doc_e, "(B, T, %lld)", D);
    snprintf(doc_t, sizeof doc_t, "(B, %lld)", dtxt);
    int o = snprintf(f->expected, sizeof f->expected,
                     "sample %s with H and W multiples of %lld, timestep () or (B,), encoder_hidden_states %s", doc_x,
                     mult, doc_e);
    if (tt) snprintf(f->expected + o, sizeof f->expected - (size_t)o, ", text_embeds %s, time_ids (B, 6)", doc_t);

    int64_t wx[4] = {FWD_BATCH, C, FWD_ANY, FWD_ANY}, we[3] = {FWD_BATCH, FWD_ANY, D}, wt[2] = {FWD_BATCH, dtxt},
            wi[2] = {FWD_BATCH, 6};
    Var *x = fwd_float(f, "sample", doc_x, true, 4, wx);
    if (!x) return addc_error_status();
    if (x->v.shape[1] % mult || x->v.shape[2] % mult)
        return addc_error_set(ADDC_ERR_INVALID, "%s: sample's H and W (%lld x %lld) must be multiples of %lld (%d levels)",
                              f->net, (long long)x->v.shape[1], (long long)x->v.shape[2], mult, m->n_blocks);
    Var *t = unet_timestep(f);
    Var *e = t ? fwd_float(f, "encoder_hidden_states", doc_e, false, 3, we) : NULL;
    if (!e) return addc_error_status();
    UNetAddedCond add = {NULL, NULL};
    if (tt) {
        add.text_embeds = fwd_float(f, "text_embeds", doc_t, false, 2, wt);
        add.time_ids = add.text_embeds ? fwd_float(f, "time_ids", "(B, 6)", false, 2, wi) : NULL;
        if (!add.time_ids) return addc_error_status();
    }
    return fwd_out(f, "sample", unet2d_forward(f->c, m, x, t, e, tt ? &add : NULL), true);
}

static Status fwd_vae(Fwd *f, const AutoencoderKL *m, ForwardVae pass) {
    const VaeConfig *cfg = &m->cfg;
    long long fac = vae_downscale(m);
    char doc_x[64], doc_z[64];
    snprintf(doc_x, sizeof doc_x, "(B, %lld, H, W)", (long long)cfg->in_channels);
    snprintf(doc_z, sizeof doc_z, "(B, %lld, h, w)", (long long)cfg->latent_channels);
    snprintf(f->expected, sizeof f->expected,
             "sample %s with H and W multiples of %lld to encode, and/or z %s to decode (with --vae decode the latent "
             "may be named sample)",
             doc_x, fac, doc_z);
    bool enc = pass == FORWARD_VAE_ENCODE || (pass == FORWARD_VAE_AUTO && fwd_has(f, "sample"));
    bool dec = pass == FORWARD_VAE_DECODE || (pass == FORWARD_VAE_AUTO && fwd_has(f, "z"));
    if (!enc && !dec) return fwd_missing(f, "sample' or 'z");
    if (enc) {
        int64_t w[4] = {FWD_BATCH, cfg->in_channels, FWD_ANY, FWD_ANY};
        Var *x = fwd_float(f, "sample", doc_x, true, 4, w);
        if (!x) return addc_error_status();
        if (x->v.shape[1] % fac || x->v.shape[2] % fac)
            return addc_error_set(ADDC_ERR_INVALID, "%s: sample's H and W (%lld x %lld) must be multiples of %lld",
                                  f->net, (long long)x->v.shape[1], (long long)x->v.shape[2], fac);
        Var *mean = NULL, *logvar = NULL;
        TRY(vae_encode(f->c, m, x, &mean, &logvar));
        TRY(fwd_out(f, "latent_dist.mean", mean, true));
        TRY(fwd_out(f, "latent_dist.logvar", logvar, true));
    }
    if (dec) {
        f->B = FWD_ANY;
        const char *name = pass == FORWARD_VAE_DECODE && !fwd_has(f, "z") ? "sample" : "z";
        int64_t w[4] = {FWD_BATCH, cfg->latent_channels, FWD_ANY, FWD_ANY};
        Var *z = fwd_float(f, name, doc_z, true, 4, w);
        if (!z) return addc_error_status();
        TRY(fwd_out(f, "sample", vae_decode(f->c, m, z), true));
    }
    return ADDC_OK;
}

static Status fwd_vit(Fwd *f, const Dinov2 *m) {
    const Dinov2Config *cfg = &m->cfg;
    char doc[64];
    snprintf(doc, sizeof doc, "(B, %lld, H, W)", (long long)cfg->num_channels);
    snprintf(f->expected, sizeof f->expected,
             "pixel_values %s normalised, H and W multiples of %lld; or image %s in [-1, 1] (addc preprocesses it)",
             doc, (long long)cfg->patch_size, doc);
    bool img = fwd_has(f, "image");
    if (img && fwd_has(f, "pixel_values"))
        return addc_error_set(ADDC_ERR_INVALID, "%s: give pixel_values or image, not both", f->net);
    int64_t w[4] = {FWD_BATCH, cfg->num_channels, FWD_ANY, FWD_ANY};
    Var *px = fwd_float(f, img ? "image" : "pixel_values", doc, true, 4, w);
    if (!px) return addc_error_status();
    if (img) {
        px = dinov2_preprocess(f->c, m, px);
        TRY(fwd_out(f, "pixel_values", px, true));
    } else if (px->v.shape[1] % cfg->patch_size || px->v.shape[2] % cfg->patch_size) {
        return addc_error_set(ADDC_ERR_INVALID, "%s: pixel_values' H and W (%lld x %lld) must be multiples of the %lld-px "
                              "patches",
                              f->net, (long long)px->v.shape[1], (long long)px->v.shape[2], (long long)cfg->patch_size);
    }
    Dinov2Output out;
    TRY(dinov2_forward(f->c, m, px, true, &out));
    char name[FORWARD_NAME_MAX];
    for (int32_t k = 0; k < out.n_taps; k++) {
        int32_t j = k - (cfg->tap_patch_embedding ? 1 : 0);
        long long idx = j < 0 ? 0 : cfg->tap_blocks[j] + 1;
        snprintf(name, sizeof name, "hidden_states[%lld]", idx);
        TRY(fwd_out(f, name, out.taps[k], false));
        if (j >= 0 && cfg->tap_blocks[j] == cfg->num_hidden_layers - 1)
            TRY(fwd_out(f, "last_hidden_state", layer_norm_forward(f->c, &m->layernorm, out.taps[k]), false));
    }
    TRY(fwd_out(f, "pooler_output", out.cls, false));
    return cfg->num_labels ? fwd_out(f, "logits", dinov2_classifier_forward(f->c, m, out.cls), false) : ADDC_OK;
}

static Status fwd_convnet(Fwd *f, const ConvNet *m) {
    char doc[64];
    snprintf(doc, sizeof doc, "(B, %lld, H, W)", (long long)m->cfg.in_channels);
    snprintf(f->expected, sizeof f->expected, "image %s in [-1, 1]", doc);
    int64_t w[4] = {FWD_BATCH, m->cfg.in_channels, FWD_ANY, FWD_ANY};
    Var *x = fwd_float(f, "image", doc, true, 4, w);
    if (!x) return addc_error_status();
    Var *features, *logits;
    TRY(convnet_forward(f->c, m, x, &features, &logits));
    TRY(fwd_out(f, "features", features, false));
    return fwd_out(f, "logits", logits, false);
}

/* every id inside the embedding table */
static Status ids_check(const Fwd *f, DType dt, const void *ids, int64_t B, int64_t T, int64_t vocab, const char *why) {
    for (int64_t i = 0; i < B * T; i++) {
        int64_t id = dt == DTYPE_I64 ? ((const int64_t *)ids)[i] : ((const int32_t *)ids)[i];
        if (id < 0 || id >= vocab)
            return addc_error_set(ADDC_ERR_INVALID, "%s: input_ids[%lld, %lld] = %lld is outside the vocabulary (vocab_size "
                                  "%lld)%s",
                                  f->net, (long long)(i / T), (long long)(i % T), (long long)id, (long long)vocab, why);
    }
    return ADDC_OK;
}

static Var *clip_ids_from_captions(Fwd *f, const ClipText *m, const ForwardOptions *o) {
    const ClipTextConfig *cfg = &m->cfg;
    if (!o->tokenizer) {
        addc_error_set(ADDC_ERR_INVALID, "%s: captions need a tokenizer", f->net);
        return NULL;
    }
    int32_t pad = clip_tokenizer_token_id(o->tokenizer, cfg->pad_token);
    if (pad < 0) {
        addc_error_set(ADDC_ERR_INVALID, "%s: the config's pad_token '%s' is not a token of the vocabulary", f->net,
                       cfg->pad_token);
        return NULL;
    }
    int64_t s[2] = {o->n_captions, cfg->max_position_embeddings};
    Var *ids = var_new(f->c, DTYPE_I64, 2, s);
    int32_t *row = malloc(sizeof(int32_t) * (size_t)s[1]);
    if (!ids || !row) {
        free(row);
        if (!row) addc_error_set(ADDC_ERR_NOMEM, "forward: out of memory");
        return NULL;
    }
    Status st = ADDC_OK;
    for (int64_t b = 0; b < s[0] && st == ADDC_OK; b++) {
        st = clip_tokenizer_tokenize(o->tokenizer, o->captions[b], -1, o->clean, (int32_t)s[1], pad, row);
        for (int64_t t = 0; t < s[1]; t++) ((int64_t *)ids->v.data)[b * s[1] + t] = row[t];
    }
    free(row);
    if (st == ADDC_OK)
        st = ids_check(f, DTYPE_I64, ids->v.data, s[0], s[1], cfg->vocab_size,
                       ": the captions' tokenizer does not fit this encoder's vocabulary");
    if (st == ADDC_OK) st = fwd_out_raw(f, "input_ids", DTYPE_I64, 2, s, ids->v.data, false);
    return st == ADDC_OK ? ids : NULL;
}

static Var *clip_ids_from_file(Fwd *f, const ClipText *m) {
    const ClipTextConfig *cfg = &m->cfg;
    const StTensor *t = fwd_find(f, "input_ids");
    if (!t) {
        fwd_missing(f, "input_ids");
        return NULL;
    }
    char s[96];
    if (t->dtype != DTYPE_I64 && t->dtype != DTYPE_I32) {
        addc_error_set(ADDC_ERR_INVALID, "%s: input 'input_ids' is %s; token ids must be I64 or I32", f->net,
                       safetensors_dtype_name(t->dtype) ? safetensors_dtype_name(t->dtype) : "?");
        return NULL;
    }
    if (t->ndim != 2 || t->shape[1] < 1 || t->shape[1] > cfg->max_position_embeddings) {
        addc_error_set(ADDC_ERR_INVALID, "%s: input 'input_ids' is %s but must be (B, T) with 1 <= T <= %lld", f->net,
                       shape_text(s, sizeof s, t->ndim, t->shape), (long long)cfg->max_position_embeddings);
        return NULL;
    }
    if (ids_check(f, t->dtype, t->data, t->shape[0], t->shape[1], cfg->vocab_size, "") != ADDC_OK) return NULL;
    record_input(f, t);
    Var *ids = var_new(f->c, t->dtype, 2, t->shape);
    if (ids) memcpy(ids->v.data, t->data, (size_t)t->nbytes);
    return ids;
}

static Status fwd_clip(Fwd *f, const ClipText *m, const ForwardOptions *o) {
    snprintf(f->expected, sizeof f->expected, "input_ids (B, T) I64 or I32 with T <= %lld, or captions (--caption)",
             (long long)m->cfg.max_position_embeddings);
    if (o->n_captions > 0 && fwd_has(f, "input_ids"))
        return addc_error_set(ADDC_ERR_INVALID, "%s: give input_ids or captions, not both", f->net);
    Var *ids = o->n_captions > 0 ? clip_ids_from_captions(f, m, o) : clip_ids_from_file(f, m);
    if (!ids) return addc_error_status();
    ClipTextOutput out;
    TRY(clip_text_forward(f->c, m, ids, &out));
    TRY(fwd_out(f, "last_hidden_state", out.last, false));
    TRY(fwd_out(f, "hidden_states[-2]", out.penultimate, false));
    TRY(fwd_out(f, "pooler_output", out.pooled, false));
    return out.text_embeds ? fwd_out(f, "text_embeds", out.text_embeds, false) : ADDC_OK;
}

/* the heads' conditioning: c, or c_text and c_img concatenated */
static Var *heads_cond(Fwd *f, int64_t c_dim) {
    char doc[64];
    snprintf(doc, sizeof doc, "(B, %lld)", (long long)c_dim);
    int64_t w[2] = {FWD_BATCH, c_dim}, wa[2] = {FWD_BATCH, FWD_ANY};
    if (fwd_has(f, "c") || !(fwd_has(f, "c_text") || fwd_has(f, "c_img"))) {
        if (fwd_has(f, "c") && (fwd_has(f, "c_text") || fwd_has(f, "c_img"))) {
            addc_error_set(ADDC_ERR_INVALID, "%s: give c, or c_text and c_img, not both", f->net);
            return NULL;
        }
        return fwd_float(f, "c", doc, false, 2, w);
    }
    Var *a = fwd_float(f, "c_text", "(B, Dt)", false, 2, wa);
    Var *b = a ? fwd_float(f, "c_img", "(B, Di)", false, 2, wa) : NULL;
    if (!b) return NULL;
    if (a->v.shape[1] + b->v.shape[1] != c_dim) {
        addc_error_set(ADDC_ERR_INVALID, "%s: c_text (%lld) and c_img (%lld) must together be c_dim %lld wide", f->net,
                       (long long)a->v.shape[1], (long long)b->v.shape[1], (long long)c_dim);
        return NULL;
    }
    return op_concat(f->c, a, b, 1);
}

static Status fwd_heads(Fwd *f, Model *model, const ForwardOptions *o) {
    const DiscHeads *d = &model->net.disc;
    const DiscHeadsConfig *cfg = &d->cfg;
    long long C = cfg->channels;
    int o_ = snprintf(f->expected, sizeof f->expected,
                      "for each head k = 0..%lld: features.k (B, %lld, N) or tokens.k (B, 1 + N, %lld) with the CLS "
                      "token first",
                      (long long)cfg->n_heads - 1, C, C);
    if (cfg->c_dim)
        snprintf(f->expected + o_, sizeof f->expected - (size_t)o_, "; c (B, %lld), or c_text and c_img (concatenated)",
                 (long long)cfg->c_dim);
    Var *x[DISC_MAX_HEADS];
    char name[FORWARD_NAME_MAX], alt[FORWARD_NAME_MAX], doc[64];
    for (int k = 0; k < cfg->n_heads; k++) {
        snprintf(name, sizeof name, "features.%d", k);
        snprintf(alt, sizeof alt, "tokens.%d", k);
        bool tok = fwd_has(f, alt);
        if (tok && fwd_has(f, name))
            return addc_error_set(ADDC_ERR_INVALID, "%s: give %s or %s, not both", f->net, name, alt);
        if (tok) {
            int64_t w[3] = {FWD_BATCH, FWD_ANY, C};
            snprintf(doc, sizeof doc, "(B, 1 + N, %lld)", C);
            x[k] = disc_tokens_readout(f->c, fwd_float(f, alt, doc, false, 3, w));
        } else {
            int64_t w[3] = {FWD_BATCH, C, FWD_ANY};
            snprintf(doc, sizeof doc, "(B, %lld, N)", C);
            x[k] = fwd_has(f, name) ? fwd_float(f, name, doc, true, 3, w) : NULL;
            if (!x[k] && !addc_error_status()) fwd_missing(f, name);
        }
        if (!x[k]) return addc_error_status();
    }
    Var *cond = cfg->c_dim ? heads_cond(f, cfg->c_dim) : NULL;
    if (cfg->c_dim && !cond) return addc_error_status();
    for (int k = 0; k < cfg->n_heads; k++) {
        snprintf(name, sizeof name, "logits.%d", k);
        TRY(fwd_out(f, name, disc_head_forward(f->c, d, k, x[k], cond, o->heads_train), false));
    }
    for (int32_t i = 0; o->heads_train && i < model->state.n; i++) {
        const Param *p = param_store_get(&model->state, i);
        TRY(fwd_out_raw(f, p->name, DTYPE_F32, p->var.v.ndim, p->var.v.shape, p->var.v.data, false));
    }
    return ADDC_OK;
}

/* ---- public ---- */

Status forward_weights_load(Model *m, const char *path, const WeightsLoadOptions *opt, WeightsReport *rep) {
    switch (m->kind) {
    case MODEL_UNET: return unet2d_load(&m->net.unet, &m->params, path, opt, rep);
    case MODEL_VAE: return vae_load(&m->net.vae, &m->params, path, opt, rep);
    case MODEL_DINOV2: return dinov2_load(&m->net.vit, &m->params, path, opt, rep);
    case MODEL_CLIP_TEXT: return clip_text_load(&m->net.clip, &m->params, path, NULL, opt, rep);
    case MODEL_DISC_HEADS: return disc_heads_load(&m->net.disc, &m->params, &m->state, path, NULL, opt);
    case MODEL_CONVNET: return convnet_load(&m->net.convnet, &m->params, path, opt, rep);
    default: return addc_error_set(ADDC_ERR_INVALID, "forward: model kind %d", (int)m->kind);
    }
}

Status forward_weights_random(Model *m, uint64_t seed) {
    if (m->kind == MODEL_DISC_HEADS) return disc_heads_init_weights(&m->net.disc, &m->params, &m->state, seed);
    return param_store_init_random(&m->params, seed);
}

Status forward_run(Model *m, const SafeTensors *in, const ForwardOptions *o, ForwardResult *r) {
    memset(r, 0, sizeof *r);
    if (m->params.device != DEVICE_CPU) return addc_error_set(ADDC_ERR_INVALID, "forward: build the model on the CPU");
    if (!in && !(m->kind == MODEL_CLIP_TEXT && o->n_captions > 0))
        return addc_error_set(ADDC_ERR_INVALID, "forward: %s needs an inputs file", m->class_name);
    Arena arena;
    arena_init(&arena, 64 << 20, 0);
    Ctx c = ctx_make(&arena, NULL, DEVICE_CPU);
    Fwd f = {&c, in, NULL, m->class_name, "", FWD_ANY, r};
    f.used = calloc(in && in->n ? (size_t)in->n : 1, sizeof(bool));
    if (!f.used) {
        arena_free(&arena);
        return addc_error_set(ADDC_ERR_NOMEM, "forward: out of memory");
    }
    /* no tape: every block is a memory scope that keeps only its output */
    model_set_checkpointing(m, true);
    Status st;
    switch (m->kind) {
    case MODEL_UNET: st = fwd_unet(&f, &m->net.unet); break;
    case MODEL_VAE: st = fwd_vae(&f, &m->net.vae, o->vae); break;
    case MODEL_DINOV2: st = fwd_vit(&f, &m->net.vit); break;
    case MODEL_CLIP_TEXT: st = fwd_clip(&f, &m->net.clip, o); break;
    case MODEL_DISC_HEADS: st = fwd_heads(&f, m, o); break;
    case MODEL_CONVNET: st = fwd_convnet(&f, &m->net.convnet); break;
    default: st = addc_error_set(ADDC_ERR_INVALID, "forward: model kind %d", (int)m->kind);
    }
    model_set_checkpointing(m, false);
    int32_t n_unused = 0, listed = 0;
    for (int32_t i = 0; in && i < in->n; i++) {
        if (f.used[i]) continue;
        n_unused++;
        if (listed == n_unused - 1 && strlen(r->unused) + strlen(in->t[i].name) < FWD_UNUSED_LIST) {
            text_append(r->unused, sizeof r->unused, "%s%s", listed ? ", " : "", in->t[i].name);
            listed++;
        }
    }
    if (listed < n_unused) {
        size_t l = strlen(r->unused);
        snprintf(r->unused + l, sizeof r->unused - l, ", ... (%d in all)", (int)n_unused);
    }
    free(f.used);
    arena_free(&arena);
    return st;
}

void forward_result_free(ForwardResult *r) {
    for (int32_t i = 0; i < r->n; i++) {
        free(r->t[i].name);
        free((void *)r->t[i].data);
    }
    r->n = 0;
}
