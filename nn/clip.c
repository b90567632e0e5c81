/* nn/clip: CLIP text transformers: config schema, construction in transformers' state-dict
 * order, forward (transformers modeling_clip.py CLIPTextTransformer), and loading from the
 * transformers and open_clip layouts (see clip.h). */
#include "nn/clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ---- */

static const ConfigField clip_fields[] = {
    CONFIG_LIST(ClipTextConfig, architectures, n_architectures, CONFIG_TYPE_STRING, "[CLIPTextModel]",
                "CLIPTextModel, or CLIPTextModelWithProjection (adds text_projection)"),
    CONFIG_STRING(ClipTextConfig, model_type, "clip_text_model", "clip_text_model"),
    CONFIG_INT(ClipTextConfig, vocab_size, "49408", 1, 1 << 24, "token embedding rows"),
    CONFIG_INT(ClipTextConfig, hidden_size, "512", 1, 1 << 16, "width D"),
    CONFIG_INT(ClipTextConfig, intermediate_size, "2048", 1, 1 << 20, "MLP width"),
    CONFIG_INT(ClipTextConfig, projection_dim, "512", 1, 1 << 16, "text_projection width (WithProjection)"),
    CONFIG_INT(ClipTextConfig, num_hidden_layers, "12", 1, 1024, "transformer layers"),
    CONFIG_INT(ClipTextConfig, num_attention_heads, "8", 1, 1024, "heads"),
    CONFIG_INT(ClipTextConfig, max_position_embeddings, "77", 1, 1 << 16, "context length"),
    CONFIG_STRING(ClipTextConfig, hidden_act, "quick_gelu", "quick_gelu (OpenAI CLIP) or gelu (OpenCLIP)"),
    CONFIG_FLOAT(ClipTextConfig, layer_norm_eps, "1e-5", "LayerNorm epsilon"),
    CONFIG_FLOAT(ClipTextConfig, attention_dropout, "0", "must be 0"),
    CONFIG_FLOAT(ClipTextConfig, dropout, "0", "must be 0"),
    CONFIG_FLOAT(ClipTextConfig, initializer_range, "0.02", "unused (weights are loaded)"),
    CONFIG_FLOAT(ClipTextConfig, initializer_factor, "1.0", "unused (weights are loaded)"),
    CONFIG_INT(ClipTextConfig, pad_token_id, "1", INT64_MIN, INT64_MAX, "unused by the model"),
    CONFIG_INT(ClipTextConfig, bos_token_id, "49406", INT64_MIN, INT64_MAX, "unused by the model"),
    CONFIG_INT(ClipTextConfig, eos_token_id, "2", INT64_MIN, INT64_MAX,
               "2: pool at the largest id (legacy, every released CLIP); else at the first eos_token_id"),
    CONFIG_STRING(ClipTextConfig, pad_token, "<|endoftext|>",
                  "addc: the tokenizer's padding token (CLIP-L <|endoftext|>, open_clip models !)"),
};

const ConfigSchema clip_text_config_schema = CONFIG_SCHEMA("clip_text", clip_fields);

static bool with_projection(const ClipTextConfig *c) {
    return strcmp(c->architectures[0], "CLIPTextModelWithProjection") == 0;
}

Status clip_text_config_check(const ClipTextConfig *c) {
    static const char *unsup = "clip config: %s = %s is not supported by addc";
    if (c->n_architectures != 1 || (strcmp(c->architectures[0], "CLIPTextModel") &&
                                    strcmp(c->architectures[0], "CLIPTextModelWithProjection")))
        return addc_error_set(ADDC_ERR_UNSUPPORTED,
                              "clip config: architectures must be [CLIPTextModel] or [CLIPTextModelWithProjection]");
    if (strcmp(c->model_type, "clip_text_model"))
        return addc_error_set(ADDC_ERR_UNSUPPORTED, unsup, "model_type", c->model_type);
    if (strcmp(c->hidden_act, "quick_gelu") && strcmp(c->hidden_act, "gelu"))
        return addc_error_set(ADDC_ERR_UNSUPPORTED, unsup, "hidden_act", c->hidden_act);
    if (c->attention_dropout != 0 || c->dropout != 0)
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "clip config: dropout must be 0 (the text encoders are frozen)");
    if (c->hidden_size % c->num_attention_heads)
        return addc_error_set(ADDC_ERR_INVALID, "clip config: %lld heads do not divide hidden_size %lld",
                              (long long)c->num_attention_heads, (long long)c->hidden_size);
    if (!c->pad_token[0]) return addc_error_set(ADDC_ERR_INVALID, "clip config: pad_token is empty");
    return ADDC_OK;
}

Status clip_text_config_load(ClipTextConfig *cfg, const char *path, const char *const *overrides, int32_t n_overrides) {
    Status s = config_load(&clip_text_config_schema, cfg, &path, 1, overrides, n_overrides);
    if (s != ADDC_OK) return s;
    s = clip_text_config_check(cfg);
    if (s != ADDC_OK) return addc_error_context(s, "%s", path);
    return ADDC_OK;
}

/* ---- construction (transformers' state-dict order) ---- */

static Status declare(Var **out, ParamStore *s, const char *name, int32_t nd, const int64_t *shape) {
    *out = param_new(s, name, nd, shape, PARAM_PLAIN);
    return *out ? ADDC_OK : addc_error_status();
}

static Status layer_init(ClipLayer *l, ParamStore *s, const char *prefix, const ClipTextConfig *c) {
    char n[PARAM_NAME_MAX];
    int64_t D = c->hidden_size, F = c->intermediate_size;
    memset(l, 0, sizeof *l);
    l->heads = (int)c->num_attention_heads;
    l->quick_gelu = strcmp(c->hidden_act, "quick_gelu") == 0;
    TRY(param_store_begin_unit(s, prefix));
    TRY(linear_init(&l->k_proj, s, param_name(n, prefix, "self_attn.k_proj"), D, D, true));
    TRY(linear_init(&l->v_proj, s, param_name(n, prefix, "self_attn.v_proj"), D, D, true));
    TRY(linear_init(&l->q_proj, s, param_name(n, prefix, "self_attn.q_proj"), D, D, true));
    TRY(linear_init(&l->out_proj, s, param_name(n, prefix, "self_attn.out_proj"), D, D, true));
    TRY(layer_norm_init(&l->layer_norm1, s, param_name(n, prefix, "layer_norm1"), D, c->layer_norm_eps, true));
    TRY(linear_init(&l->fc1, s, param_name(n, prefix, "mlp.fc1"), D, F, true));
    TRY(linear_init(&l->fc2, s, param_name(n, prefix, "mlp.fc2"), F, D, true));
    return layer_norm_init(&l->layer_norm2, s, param_name(n, prefix, "layer_norm2"), D, c->layer_norm_eps, true);
}

Status clip_text_init(ClipText *m, const ClipTextConfig *cfg, ParamStore *s) {
    memset(m, 0, sizeof *m);
    TRY(clip_text_config_check(cfg));
    m->cfg = *cfg;
    const ClipTextConfig *c = &m->cfg;
    int64_t D = c->hidden_size, tok[2] = {c->vocab_size, D}, pos[2] = {c->max_position_embeddings, D};
    char n[PARAM_NAME_MAX];
    TRY(param_store_begin_unit(s, "text_model.embeddings"));
    TRY(declare(&m->token_embedding, s, "text_model.embeddings.token_embedding.weight", 2, tok));
    TRY(declare(&m->position_embedding, s, "text_model.embeddings.position_embedding.weight", 2, pos));
    m->layers = calloc((size_t)c->num_hidden_layers, sizeof *m->layers);
    if (!m->layers) return addc_error_set(ADDC_ERR_NOMEM, "out of memory building the CLIP text model");
    for (int64_t i = 0; i < c->num_hidden_layers; i++)
        TRY(layer_init(&m->layers[i], s, param_namef(n, NULL, "text_model.encoder.layers.%lld", (long long)i), c));
    TRY(param_store_begin_unit(s, "text_model.final_layer_norm"));
    TRY(layer_norm_init(&m->final_layer_norm, s, "text_model.final_layer_norm", D, c->layer_norm_eps, true));
    if (with_projection(c)) {
        TRY(param_store_begin_unit(s, "text_projection"));
        TRY(linear_init(&m->text_projection, s, "text_projection", D, c->projection_dim, false));
    }
    return ADDC_OK;
}

void clip_text_free(ClipText *m) {
    free(m->layers);
    memset(m, 0, sizeof *m);
}

/* ---- forward ---- */

/* in[0]: x (B, T, D) */
static Var *layer_region(Ctx *c, Var *const *in, int n_in, void *user) {
    const ClipLayer *l = user;
    Var *x = in[0];
    Var *h = layer_norm_forward(c, &l->layer_norm1, x);
    Var *q = linear_forward(c, &l->q_proj, h), *k = linear_forward(c, &l->k_proj, h), *v = linear_forward(c, &l->v_proj, h);
    x = op_add(c, x, linear_forward(c, &l->out_proj, op_attention(c, q, k, v, l->heads, 0.0, true)));
    h = linear_forward(c, &l->fc1, layer_norm_forward(c, &l->layer_norm2, x));
    if (l->quick_gelu) /* x sigmoid(1.702 x) = silu(1.702 x) / 1.702 */
        h = op_scale(c, op_silu(c, op_scale(c, h, 1.702, 0.0)), 1.0 / 1.702, 0.0);
    else
        h = op_gelu(c, h, GELU_ERF);
    return op_add(c, x, linear_forward(c, &l->fc2, h));
}

static int64_t id_at(const Tensor *ids, int64_t i) {
    return ids->dtype == DTYPE_I64 ? ((const int64_t *)ids->data)[i] : ((const int32_t *)ids->data)[i];
}

/* flat row index b T + position of the end-of-text token of each sequence */
static Var *eot_rows(Ctx *c, const ClipText *m, Var *ids) {
    int64_t B = ids->v.shape[0], T = ids->v.shape[1];
    Var *rows = var_new(c, DTYPE_I32, 1, &B);
    if (!rows || !rows->v.data || !ids->v.data) return rows;
    for (int64_t b = 0; b < B; b++) {
        int64_t best = 0;
        for (int64_t t = 0; t < T; t++) {
            int64_t id = id_at(&ids->v, b * T + t);
            if (m->cfg.eos_token_id == 2 ? id > id_at(&ids->v, b * T + best) : id == m->cfg.eos_token_id) {
                best = t;
                if (m->cfg.eos_token_id != 2) break;
            }
        }
        ((int32_t *)rows->v.data)[b] = (int32_t)(b * T + best);
    }
    return rows;
}

Status clip_text_forward(Ctx *c, const ClipText *m, Var *ids, ClipTextOutput *out) {
    memset(out, 0, sizeof *out);
    if (!ids) return addc_error_status() ? addc_error_status() : addc_error_set(ADDC_ERR_INVALID, "clip: no ids");
    const ClipTextConfig *cfg = &m->cfg;
    const Tensor *t = &ids->v;
    if (t->ndim != 2 || (t->dtype != DTYPE_I32 && t->dtype != DTYPE_I64) || t->shape[1] < 1 ||
        t->shape[1] > cfg->max_position_embeddings) {
        char s[96];
        return addc_error_set(ADDC_ERR_INVALID, "clip: ids %s must be i32 or i64 (B, T) with 1 <= T <= %lld",
                              tensor_shape_str(t, s, sizeof s), (long long)cfg->max_position_embeddings);
    }
    int64_t B = t->shape[0], T = t->shape[1], D = cfg->hidden_size;
    Var *x = op_embedding(c, ids, m->token_embedding);
    x = op_add(c, x, op_slice(c, m->position_embedding, 0, 0, T));
    for (int64_t i = 0; i < cfg->num_hidden_layers; i++) {
        if (i == cfg->num_hidden_layers - 1) out->penultimate = x;
        const ClipLayer *l = &m->layers[i];
        x = m->gradient_checkpointing ? op_checkpoint(c, layer_region, (void *)l, &x, 1) : layer_region(c, &x, 1, (void *)l);
    }
    out->last = layer_norm_forward(c, &m->final_layer_norm, x);
    int64_t flat[2] = {B * T, D};
    out->pooled = op_embedding(c, eot_rows(c, m, ids), op_reshape(c, out->last, 2, flat));
    if (m->text_projection.weight) out->text_embeds = linear_forward(c, &m->text_projection, out->pooled);
    if (!out->penultimate || !out->last || !out->pooled || (m->text_projection.weight && !out->text_embeds))
        return addc_error_status();
    return ADDC_OK;
}

/* ---- loading ---- */

#define CLIP_PREFIX_MAX 128

typedef struct ClipMap {
    const ClipText *m;
    ClipLayout layout;
    bool bare;                      /* transformers layout without "text_model." (transformers 5 CLIPTextModel) */
    char prefix[CLIP_PREFIX_MAX];
} ClipMap;

static bool ends_with(const char *s, const char *suf, size_t *stem) {
    size_t n = strlen(s), m = strlen(suf);
    if (n < m || strcmp(s + n - m, suf) != 0) return false;
    *stem = n - m;
    return true;
}

static Status detect(const ClipText *m, const SafeTensors *st, ClipMap *cm) {
    for (int32_t i = 0; i < st->n; i++) {
        const StTensor *t = &st->t[i];
        size_t stem;
        if (t->ndim != 2 || t->shape[0] != m->cfg.vocab_size || t->shape[1] != m->cfg.hidden_size) continue;
        if (!ends_with(t->name, "token_embedding.weight", &stem)) continue;
        if (stem > 0 && t->name[stem - 1] != '.') continue;
        const char *suffix = "token_embedding.weight";
        cm->layout = CLIP_LAYOUT_OPEN_CLIP;
        cm->bare = false;
        if (ends_with(t->name, "text_model.embeddings.token_embedding.weight", &stem)) {
            cm->layout = CLIP_LAYOUT_TRANSFORMERS;
            suffix = "text_model.embeddings.token_embedding.weight";
        } else if (ends_with(t->name, "embeddings.token_embedding.weight", &stem)) {
            cm->layout = CLIP_LAYOUT_TRANSFORMERS;
            cm->bare = true;
            suffix = "embeddings.token_embedding.weight";
        }
        ends_with(t->name, suffix, &stem);
        if (stem >= CLIP_PREFIX_MAX) continue;
        memcpy(cm->prefix, t->name, stem);
        cm->prefix[stem] = 0;
        return ADDC_OK;
    }
    return addc_error_set(ADDC_ERR_FORMAT,
                          "clip: %s holds no token embedding of shape (%lld, %lld) (a *token_embedding.weight key): not "
                          "this text encoder's weights",
                          st->path, (long long)m->cfg.vocab_size, (long long)m->cfg.hidden_size);
}

Status clip_text_detect(const ClipText *m, const SafeTensors *st, ClipLayout *layout, char *prefix, int32_t cap) {
    ClipMap cm;
    TRY(detect(m, st, &cm));
    *layout = cm.layout;
    snprintf(prefix, (size_t)cap, "%s", cm.prefix);
    return ADDC_OK;
}

/* transformers name (after "text_model.encoder.layers.<i>.") -> open_clip name */
static bool open_clip_layer_key(const char *rest, char *out, size_t cap, int64_t D, WeightsSource *src) {
    static const char *const map[][2] = {
        {"self_attn.out_proj.", "attn.out_proj."}, {"layer_norm1.", "ln_1."}, {"layer_norm2.", "ln_2."},
        {"mlp.fc1.", "mlp.c_fc."},                 {"mlp.fc2.", "mlp.c_proj."},
    };
    static const char *const qkv[3] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
    for (int i = 0; i < 3; i++)
        if (strncmp(rest, qkv[i], strlen(qkv[i])) == 0) {
            const char *leaf = rest + strlen(qkv[i]);
            src->row_begin = i * D;
            src->rows = D;
            return snprintf(out, cap, "attn.in_proj_%s", leaf) < (int)cap;
        }
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
        size_t l = strlen(map[k][0]);
        if (strncmp(rest, map[k][0], l) == 0) return snprintf(out, cap, "%s%s", map[k][1], rest + l) < (int)cap;
    }
    return false;
}

/* module key -> file source; *transposed for open_clip's text_projection (file (D, P)) */
static bool clip_file_key(const ClipMap *cm, const char *key, WeightsSource *src, bool *transposed) {
    char *out = src->key;
    const int cap = WEIGHTS_KEY_MAX;
    *transposed = false;
    if (cm->layout == CLIP_LAYOUT_TRANSFORMERS) {
        const char *k = cm->bare && strncmp(key, "text_model.", 11) == 0 ? key + 11 : key;
        return snprintf(out, cap, "%s%s", cm->prefix, k) < cap;
    }
    static const char *const fixed[][2] = {
        {"text_model.embeddings.token_embedding.weight", "token_embedding.weight"},
        {"text_model.embeddings.position_embedding.weight", "positional_embedding"},
        {"text_model.final_layer_norm.weight", "ln_final.weight"},
        {"text_model.final_layer_norm.bias", "ln_final.bias"},
        {"text_projection.weight", "text_projection"},
    };
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
        if (strcmp(key, fixed[k][0]) == 0) {
            *transposed = strcmp(key, "text_projection.weight") == 0;
            return snprintf(out, cap, "%s%s", cm->prefix, fixed[k][1]) < cap;
        }
    long long i;
    int used = 0;
    if (sscanf(key, "text_model.encoder.layers.%lld.%n", &i, &used) == 1 && used > 0) {
        char rest[WEIGHTS_KEY_MAX];
        if (!open_clip_layer_key(key + used, rest, sizeof rest, cm->m->cfg.hidden_size, src)) return false;
        return snprintf(out, cap, "%stransformer.resblocks.%lld.%s", cm->prefix, i, rest) < cap;
    }
    return false;
}

/* text_projection has no place in the open_clip layout's map: clip_text_load transposes it in */
static bool clip_locate(const void *user, const char *key, WeightsSource *src) {
    bool transposed;
    return clip_file_key(user, key, src, &transposed) && !transposed;
}

bool clip_text_file_key(const ClipText *m, ClipLayout layout, const char *prefix, const char *module_key, char *out,
                        int32_t cap) {
    ClipMap cm;
    memset(&cm, 0, sizeof cm);
    cm.m = m;
    cm.layout = layout;
    snprintf(cm.prefix, sizeof cm.prefix, "%s", prefix ? prefix : "");
    WeightsSource src = {.row_begin = 0, .rows = -1};
    bool transposed;
    if (!clip_file_key(&cm, module_key, &src, &transposed)) return false;
    int w;
    if (src.rows >= 0)
        w = snprintf(out, (size_t)cap, "%s[%lld:%lld]", src.key, (long long)src.row_begin,
                     (long long)(src.row_begin + src.rows));
    else
        w = snprintf(out, (size_t)cap, "%s%s", src.key, transposed ? ".T" : "");
    return w > 0 && w < cap;
}

/* file keys a text-encoder load passes over: buffers, the logit scale, a vision tower */
static bool skippable(const char *key, const char *prefix) {
    size_t l = strlen(prefix), stem;
    const char *k = strncmp(key, prefix, l) == 0 ? key + l : key;
    static const char *const heads[] = {"vision_model.", "visual_projection.", "visual.", "logit_scale", "logit_bias"};
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++)
        if (strncmp(k, heads[i], strlen(heads[i])) == 0) return true;
    return ends_with(k, "position_ids", &stem) || strcmp(k, "attn_mask") == 0;
}

static Status report_push(char ***list, int32_t *n, const char *s) {
    char **l = realloc(*list, (size_t)(*n + 1) * sizeof *l);
    if (!l) return addc_error_set(ADDC_ERR_NOMEM, "clip: out of memory for the load report");
    *list = l;
    l[*n] = strdup(s);
    if (!l[*n]) return addc_error_set(ADDC_ERR_NOMEM, "clip: out of memory for the load report");
    (*n)++;
    return ADDC_OK;
}

static void list_into(char *msg, size_t cap, const char *what, char **names, int32_t n) {
    size_t o = strlen(msg);
    if (!n || o >= cap) return;
    o += (size_t)snprintf(msg + o, cap - o, "; %d %s:", n, what);
    for (int32_t i = 0; i < n && i < 8 && o < cap; i++) o += (size_t)snprintf(msg + o, cap - o, " %s", names[i]);
    if (n > 8 && o < cap) snprintf(msg + o, cap - o, " ...");
}

Status clip_text_load(const ClipText *m, ParamStore *s, const char *path, const char *prefix,
                      const WeightsLoadOptions *opt, WeightsReport *rep_out) {
    static const WeightsLoadOptions strict = {false, false};
    if (!opt) opt = &strict;
    if (rep_out) memset(rep_out, 0, sizeof *rep_out);
    SafeTensors st;
    TRY(safetensors_open(&st, path));
    ClipMap cm;
    memset(&cm, 0, sizeof cm);
    cm.m = m;
    Status status = ADDC_OK;
    WeightsReport r1, r2, fin;
    memset(&r1, 0, sizeof r1);
    memset(&r2, 0, sizeof r2);
    memset(&fin, 0, sizeof fin);
    if (!prefix) {
        status = detect(m, &st, &cm);
    } else {
        snprintf(cm.prefix, sizeof cm.prefix, "%s", prefix);
        char k[WEIGHTS_KEY_MAX];
        snprintf(k, sizeof k, "%stoken_embedding.weight", prefix);
        cm.layout = safetensors_find(&st, k) ? CLIP_LAYOUT_OPEN_CLIP : CLIP_LAYOUT_TRANSFORMERS;
        snprintf(k, sizeof k, "%sembeddings.token_embedding.weight", prefix);
        cm.bare = cm.layout == CLIP_LAYOUT_TRANSFORMERS && safetensors_find(&st, k) != NULL;
    }
    if (status != ADDC_OK) goto done;
    const char *layout_name = cm.layout == CLIP_LAYOUT_OPEN_CLIP ? "open_clip" : "transformers";
    WeightsKeyMap map = {.name = layout_name, .scope = cm.prefix, .locate = clip_locate, .user = &cm, .squeeze = false};
    bool oc_proj = cm.layout == CLIP_LAYOUT_OPEN_CLIP && m->text_projection.weight;
    char proj_key[WEIGHTS_KEY_MAX];
    snprintf(proj_key, sizeof proj_key, "%stext_projection", cm.prefix);
    const StTensor *proj = oc_proj ? safetensors_find(&st, proj_key) : NULL;

    /* pass 1, strict: a clean file loads here; otherwise the report says what is there */
    status = weights_load(s, &st, &map, &strict, &r1);
    if (status == ADDC_OK && !oc_proj) {
        fin = r1;
        memset(&r1, 0, sizeof r1);
        goto done;
    }
    if (status != ADDC_OK && status != ADDC_ERR_FORMAT) goto done;
    addc_error_clear();
    status = ADDC_OK;
    int32_t n_skipped = 0;
    for (int32_t i = 0; i < r1.n_missing && status == ADDC_OK; i++)
        if (!(oc_proj && strcmp(r1.missing[i], "text_projection.weight") == 0))
            status = report_push(&fin.missing, &fin.n_missing, r1.missing[i]);
    for (int32_t i = 0; i < r1.n_unexpected && status == ADDC_OK; i++) {
        if (skippable(r1.unexpected[i], cm.prefix) || (oc_proj && strcmp(r1.unexpected[i], proj_key) == 0))
            n_skipped++;
        else
            status = report_push(&fin.unexpected, &fin.n_unexpected, r1.unexpected[i]);
    }
    for (int32_t i = 0; i < r1.n_misshaped && status == ADDC_OK; i++)
        status = report_push(&fin.misshaped, &fin.n_misshaped, r1.misshaped[i]);
    if (status != ADDC_OK) goto done;
    int64_t D = m->cfg.hidden_size, P = m->cfg.projection_dim;
    if (oc_proj && !proj && !opt->allow_missing) status = report_push(&fin.missing, &fin.n_missing, "text_projection.weight");
    if (proj && (proj->ndim != 2 || proj->shape[0] != D || proj->shape[1] != P)) {
        char msg[WEIGHTS_KEY_MAX + 160];
        snprintf(msg, sizeof msg, "text_projection.weight <- %s: the open_clip layout needs (%lld, %lld) (transposed)",
                 proj_key, (long long)D, (long long)P);
        status = report_push(&fin.misshaped, &fin.n_misshaped, msg);
    }
    if (status != ADDC_OK) goto done;
    if (fin.n_misshaped || (fin.n_missing && !opt->allow_missing) || (fin.n_unexpected && !opt->allow_unexpected)) {
        char msg[3000];
        snprintf(msg, sizeof msg, "clip: %s (%s layout, prefix '%s') does not fit the model (%d parameters)", path,
                 layout_name, cm.prefix, s->n);
        list_into(msg, sizeof msg, "mis-shaped", fin.misshaped, fin.n_misshaped);
        list_into(msg, sizeof msg, "missing from the file", fin.missing, fin.n_missing);
        list_into(msg, sizeof msg, "unexpected in the file", fin.unexpected, fin.n_unexpected);
        status = addc_error_set(ADDC_ERR_FORMAT, "%s", msg);
        goto done;
    }
    /* pass 2: everything left over is known to be acceptable */
    static const WeightsLoadOptions lenient = {true, true};
    status = weights_load(s, &st, &map, &lenient, &r2);
    if (status != ADDC_OK) goto done;
    fin.n_loaded = r2.n_loaded;
    fin.n_ignored = r2.n_ignored + n_skipped;
    if (proj) {
        Param *p = param_store_find(s, "text_projection.weight");
        fin.n_loaded++;
        if (p && p->var.v.data) {
            float *tmp = malloc((size_t)(D * P) * sizeof(float));
            if (!tmp) {
                status = addc_error_set(ADDC_ERR_NOMEM, "clip: out of memory reading %s", proj_key);
                goto done;
            }
            status = safetensors_read_f32(proj, tmp, D * P);
            float *w = p->var.v.data; /* (P, D) = file (D, P) transposed */
            for (int64_t i = 0; status == ADDC_OK && i < P; i++)
                for (int64_t j = 0; j < D; j++) w[i * D + j] = tmp[j * P + i];
            free(tmp);
        }
    }
done:
    weights_report_free(&r1);
    weights_report_free(&r2);
    if (rep_out) *rep_out = fin;
    else weights_report_free(&fin);
    safetensors_close(&st);
    return status;
}
