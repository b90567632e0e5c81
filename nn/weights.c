/* nn/weights: safetensors <-> ParamStore by name, with key maps and layout conversion
 * (see weights.h). A load runs in two passes: locate and check every parameter and every
 * file key, then (only when the checks allow it) convert and copy. */
#include "nn/weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "core/parallel.h"

#define WEIGHTS_REPORT_SHOWN 8 /* names per kind quoted in an error message */

WeightsKeyMap weights_map_prefix(const char *prefix) {
    return (WeightsKeyMap){.name = "diffusers", .scope = prefix, .locate = NULL, .user = prefix, .squeeze = false};
}

void weights_report_free(WeightsReport *r) {
    if (!r) return;
    for (int32_t i = 0; i < r->n_missing; i++) free(r->missing[i]);
    for (int32_t i = 0; i < r->n_unexpected; i++) free(r->unexpected[i]);
    for (int32_t i = 0; i < r->n_misshaped; i++) free(r->misshaped[i]);
    free(r->missing);
    free(r->unexpected);
    free(r->misshaped);
    memset(r, 0, sizeof *r);
}

static Status report_add(char ***list, int32_t *n, const char *text) {
    char **l = realloc(*list, (size_t)(*n + 1) * sizeof *l);
    if (!l) return addc_error_set(ADDC_ERR_NOMEM, "weights: out of memory for the load report");
    *list = l;
    size_t len = strlen(text) + 1;
    l[*n] = malloc(len);
    if (!l[*n]) return addc_error_set(ADDC_ERR_NOMEM, "weights: out of memory for the load report");
    memcpy(l[*n], text, len);
    (*n)++;
    return ADDC_OK;
}

int32_t weights_file_shape(const Param *p, int64_t *shape) {
    const Tensor *t = &p->var.v;
    switch (p->layout) {
    case PARAM_CONV2D_OIHW: /* (O, H, W, I) -> (O, I, H, W) */
        shape[0] = t->shape[0];
        shape[1] = t->shape[3];
        shape[2] = t->shape[1];
        shape[3] = t->shape[2];
        return 4;
    case PARAM_CONV1D_OIK: /* (O, K, I) -> (O, I, K) */
        shape[0] = t->shape[0];
        shape[1] = t->shape[2];
        shape[2] = t->shape[1];
        return 3;
    default:
        for (int32_t d = 0; d < t->ndim; d++) shape[d] = t->shape[d];
        return t->ndim;
    }
}

/* conv layouts as (O, I, S) in files <-> (O, S, I) here, S = spatial positions */
static void layout_dims(const Param *p, int64_t *O, int64_t *I, int64_t *S) {
    const Tensor *t = &p->var.v;
    *O = t->shape[0];
    *I = t->shape[t->ndim - 1];
    *S = 1;
    for (int32_t d = 1; d < t->ndim - 1; d++) *S *= t->shape[d];
}

typedef struct PermJob {
    const float *src;
    float *dst;
    int64_t I, S;
    bool to_file;
} PermJob;

static void permute_rows(void *ctx, int64_t begin, int64_t end) {
    const PermJob *j = ctx;
    int64_t I = j->I, S = j->S, blk = I * S;
    for (int64_t o = begin; o < end; o++) {
        const float *s = j->src + o * blk;
        float *d = j->dst + o * blk;
        if (j->to_file)
            for (int64_t i = 0; i < I; i++)
                for (int64_t q = 0; q < S; q++) d[i * S + q] = s[q * I + i];
        else
            for (int64_t q = 0; q < S; q++)
                for (int64_t i = 0; i < I; i++) d[q * I + i] = s[i * S + q];
    }
}

static void layout_convert(const Param *p, const float *src, float *dst, bool to_file) {
    int64_t n = tensor_numel(&p->var.v);
    if (p->layout == PARAM_PLAIN) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    int64_t O, I, S;
    layout_dims(p, &O, &I, &S);
    PermJob j = {src, dst, I, S, to_file};
    parallel_for(O, 1 + 4096 / (I * S + 1), permute_rows, &j);
}

void weights_layout_from_file(const Param *p, const float *file_order, float *addc_order) {
    layout_convert(p, file_order, addc_order, false);
}

void weights_layout_to_file(const Param *p, const float *addc_order, float *file_order) {
    layout_convert(p, addc_order, file_order, true);
}

int32_t weights_count_prefix(const SafeTensors *st, const char *prefix) {
    size_t n = strlen(prefix);
    int32_t c = 0;
    for (int32_t i = 0; i < st->n; i++)
        if (strncmp(st->t[i].name, prefix, n) == 0) c++;
    return c;
}

static bool in_scope(const WeightsKeyMap *m, const char *key) {
    return !m->scope || !*m->scope || strncmp(key, m->scope, strlen(m->scope)) == 0;
}

static bool locate(const WeightsKeyMap *m, const char *module_key, WeightsSource *src) {
    src->row_begin = 0;
    src->rows = -1;
    src->key[0] = 0;
    if (m->locate) return m->locate(m->user, module_key, src);
    const char *prefix = m->user ? (const char *)m->user : "";
    int w = snprintf(src->key, sizeof src->key, "%s%s", prefix, module_key);
    return w > 0 && w < (int)sizeof src->key;
}

static char *shape_str(char *buf, size_t cap, int32_t nd, const int64_t *sh) {
    size_t o = (size_t)snprintf(buf, cap, "(");
    for (int32_t d = 0; d < nd && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? ", " : "", (long long)sh[d]);
    if (o < cap) snprintf(buf + o, cap - o, nd == 1 ? ",)" : ")");
    return buf;
}

/* the file tensor, cut to the source's rows; false when the rows lie outside it */
static bool source_view(const StTensor *t, const WeightsSource *src, StTensor *view) {
    *view = *t;
    if (src->rows < 0) return true;
    if (t->ndim < 1 || src->row_begin < 0 || src->row_begin + src->rows > t->shape[0]) return false;
    int64_t row_bytes = t->shape[0] ? t->nbytes / t->shape[0] : 0;
    view->shape[0] = src->rows;
    view->data = (const char *)t->data + src->row_begin * row_bytes;
    view->nbytes = src->rows * row_bytes;
    return true;
}

static int32_t squeeze_trailing(int32_t nd, const int64_t *sh) {
    while (nd > 1 && sh[nd - 1] == 1) nd--;
    return nd;
}

static bool shapes_match(const WeightsKeyMap *m, int32_t fnd, const int64_t *fsh, int32_t pnd, const int64_t *psh) {
    if (fnd == pnd && memcmp(fsh, psh, (size_t)fnd * sizeof *fsh) == 0) return true;
    if (!m->squeeze) return false;
    int32_t a = squeeze_trailing(fnd, fsh), b = squeeze_trailing(pnd, psh);
    return a == b && memcmp(fsh, psh, (size_t)a * sizeof *fsh) == 0;
}

static void list_names(char *buf, size_t cap, const char *what, char **names, int32_t n) {
    size_t o = strlen(buf);
    if (n == 0 || o >= cap) return;
    o += (size_t)snprintf(buf + o, cap - o, "; %d %s:", n, what);
    for (int32_t i = 0; i < n && i < WEIGHTS_REPORT_SHOWN && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, " %s%s", names[i], i + 1 < n ? "," : "");
    if (n > WEIGHTS_REPORT_SHOWN && o < cap) snprintf(buf + o, cap - o, " ...");
}

/* One parameter's copy job, found in the check pass. */
typedef struct LoadItem {
    Param *p;
    StTensor view;
} LoadItem;

Status weights_load(ParamStore *s, const SafeTensors *st, const WeightsKeyMap *map, const WeightsLoadOptions *opt,
                    WeightsReport *rep_out) {
    static const WeightsLoadOptions strict = {false, false};
    if (!opt) opt = &strict;
    if (!s->allocated)
        return addc_error_set(ADDC_ERR_INVALID, "weights: allocate the parameter store before loading %s", st->path);
    WeightsReport rep;
    memset(&rep, 0, sizeof rep);
    const char *layout = map->name ? map->name : "?";
    uint8_t *used = calloc((size_t)(st->n ? st->n : 1), 1);
    LoadItem *items = malloc((size_t)(s->n ? s->n : 1) * sizeof *items);
    int32_t n_items = 0;
    Status status = ADDC_OK;
    if (!used || !items) {
        status = addc_error_set(ADDC_ERR_NOMEM, "weights: out of memory loading %s", st->path);
        goto done;
    }
    for (int32_t i = 0; i < s->n && status == ADDC_OK; i++) {
        Param *p = param_store_get(s, i);
        WeightsSource src;
        const StTensor *t = locate(map, p->name, &src) ? safetensors_find(st, src.key) : NULL;
        if (!t) {
            status = report_add(&rep.missing, &rep.n_missing, p->name);
            continue;
        }
        used[t - st->t] = 1;
        int64_t psh[TENSOR_MAX_DIMS];
        int32_t pnd = weights_file_shape(p, psh);
        StTensor view;
        bool rows_ok = source_view(t, &src, &view);
        if (!rows_ok || !shapes_match(map, view.ndim, view.shape, pnd, psh)) {
            char a[160], b[160], where[WEIGHTS_KEY_MAX + 64], msg[WEIGHTS_KEY_MAX + PARAM_NAME_MAX + 400];
            if (src.rows >= 0)
                snprintf(where, sizeof where, "%s rows [%lld, %lld)", src.key, (long long)src.row_begin,
                         (long long)(src.row_begin + src.rows));
            else
                snprintf(where, sizeof where, "%s", src.key);
            if (!rows_ok)
                snprintf(msg, sizeof msg, "%s <- %s: the file tensor %s has no such rows", p->name, where,
                         shape_str(a, sizeof a, t->ndim, t->shape));
            else
                snprintf(msg, sizeof msg, "%s <- %s: file %s but the model needs %s", p->name, where,
                         shape_str(a, sizeof a, view.ndim, view.shape), shape_str(b, sizeof b, pnd, psh));
            status = report_add(&rep.misshaped, &rep.n_misshaped, msg);
            continue;
        }
        if (view.dtype != DTYPE_F32 && view.dtype != DTYPE_F16 && view.dtype != DTYPE_BF16 && view.dtype != DTYPE_F64) {
            char msg[WEIGHTS_KEY_MAX + PARAM_NAME_MAX + 100];
            snprintf(msg, sizeof msg, "%s <- %s: dtype %s is not a float type", p->name, src.key,
                     safetensors_dtype_name(view.dtype));
            status = report_add(&rep.misshaped, &rep.n_misshaped, msg);
            continue;
        }
        items[n_items++] = (LoadItem){p, view};
    }
    for (int32_t i = 0; i < st->n && status == ADDC_OK; i++) {
        if (!in_scope(map, st->t[i].name)) rep.n_ignored++;
        else if (!used[i]) status = report_add(&rep.unexpected, &rep.n_unexpected, st->t[i].name);
    }
    if (status != ADDC_OK) goto done;
    bool refuse = rep.n_misshaped > 0 || (rep.n_missing > 0 && !opt->allow_missing) ||
                  (rep.n_unexpected > 0 && !opt->allow_unexpected);
    if (refuse) {
        char msg[3000];
        snprintf(msg, sizeof msg, "weights: %s (%s layout) does not fit the model (%d parameters)", st->path, layout,
                 s->n);
        list_names(msg, sizeof msg, "mis-shaped", rep.misshaped, rep.n_misshaped);
        list_names(msg, sizeof msg, "missing from the file", rep.missing, rep.n_missing);
        list_names(msg, sizeof msg, "unexpected in the file", rep.unexpected, rep.n_unexpected);
        size_t o = strlen(msg);
        if (rep.n_misshaped == 0 && o < sizeof msg)
            snprintf(msg + o, sizeof msg - o, "; refusing a partial load (allow_missing / allow_unexpected accept one)");
        status = addc_error_set(ADDC_ERR_FORMAT, "%s", msg);
        goto done;
    }
    rep.n_loaded = n_items;
    if (s->device == DEVICE_META || !s->data) goto done;
    int64_t scratch_n = 0;
    for (int32_t k = 0; k < n_items; k++)
        if (items[k].p->layout != PARAM_PLAIN) {
            int64_t n = tensor_numel(&items[k].p->var.v);
            if (n > scratch_n) scratch_n = n;
        }
    float *scratch = scratch_n ? malloc((size_t)scratch_n * sizeof(float)) : NULL;
    if (scratch_n && !scratch) {
        status = addc_error_set(ADDC_ERR_NOMEM, "weights: out of memory converting %s", st->path);
        goto done;
    }
    for (int32_t k = 0; k < n_items && status == ADDC_OK; k++) {
        Param *p = items[k].p;
        float *dst = p->var.v.data;
        int64_t n = tensor_numel(&p->var.v);
        if (p->layout == PARAM_PLAIN) {
            status = safetensors_read_f32(&items[k].view, dst, n);
        } else {
            status = safetensors_read_f32(&items[k].view, scratch, n);
            if (status == ADDC_OK) weights_layout_from_file(p, scratch, dst);
        }
    }
    free(scratch);
done:
    free(used);
    free(items);
    if (rep_out) *rep_out = rep;
    else weights_report_free(&rep);
    return status;
}

Status weights_load_file(ParamStore *s, const char *path, const WeightsKeyMap *map, const WeightsLoadOptions *opt,
                         WeightsReport *rep) {
    SafeTensors st;
    if (rep) memset(rep, 0, sizeof *rep);
    TRY(safetensors_open(&st, path));
    Status r = weights_load(s, &st, map, opt, rep);
    safetensors_close(&st);
    return r;
}

/* ---- saving ---- */

typedef struct SaveCtx {
    Param **params;
    DType dt;
    float *scratch; /* f32, largest parameter */
    float *staged;  /* f32, largest parameter: a GPU store's values copied down */
    const float *values; /* host flat buffer in the store's layout, or NULL: the params' own */
} SaveCtx;

static Status save_fill(void *user, int32_t i, void *dst) {
    SaveCtx *c = user;
    const Param *p = c->params[i];
    int64_t n = tensor_numel(&p->var.v);
    const float *src = c->values ? c->values + p->offset : p->var.v.data;
    if (!c->values && p->var.v.device == DEVICE_CUDA) {
        TRY(cuda_copy_to_host(c->staged, src, (size_t)n * sizeof(float)));
        src = c->staged;
    }
    if (p->layout != PARAM_PLAIN) {
        float *f = c->dt == DTYPE_F32 ? dst : c->scratch;
        weights_layout_to_file(p, src, f);
        src = f;
    }
    if (c->dt == DTYPE_F32) {
        if (src != dst) memcpy(dst, src, (size_t)n * sizeof(float));
    } else {
        dtype_convert(dst, c->dt, src, DTYPE_F32, n);
    }
    return ADDC_OK;
}

Status weights_save(const ParamStore *s, const char *path, DType dt, const char *metadata_json) {
    return weights_save_values(s, NULL, path, dt, metadata_json);
}

Status weights_save_values(const ParamStore *s, const float *values, const char *path, DType dt,
                           const char *metadata_json) {
    if (dt != DTYPE_F32 && dt != DTYPE_F16 && dt != DTYPE_BF16)
        return addc_error_set(ADDC_ERR_INVALID, "weights: save %s as F32, F16 or BF16, not %s", path, dtype_name(dt));
    if (!values && (!s->allocated || !s->data))
        return addc_error_set(ADDC_ERR_INVALID, "weights: the store has no values to save to %s (meta or unallocated)",
                              path);
    StTensor *t = calloc((size_t)(s->n ? s->n : 1), sizeof *t);
    Param **params = calloc((size_t)(s->n ? s->n : 1), sizeof *params);
    int64_t maxn = 1;
    for (int32_t i = 0; t && params && i < s->n; i++) {
        Param *p = param_store_get((ParamStore *)s, i);
        params[i] = p;
        t[i].name = p->name;
        t[i].dtype = dt;
        t[i].ndim = weights_file_shape(p, t[i].shape);
        int64_t n = tensor_numel(&p->var.v);
        t[i].nbytes = n * (int64_t)dtype_size(dt);
        if (n > maxn) maxn = n;
    }
    bool gpu = !values && s->device == DEVICE_CUDA;
    SaveCtx c = {params, dt, malloc((size_t)maxn * sizeof(float)), gpu ? malloc((size_t)maxn * sizeof(float)) : NULL,
                 values};
    Status r;
    if (!t || !params || !c.scratch || (gpu && !c.staged))
        r = addc_error_set(ADDC_ERR_NOMEM, "weights: out of memory saving %s", path);
    else
        r = safetensors_write_fill(path, t, s->n, metadata_json ? metadata_json : "{\"format\":\"pt\"}", save_fill, &c);
    free(c.scratch);
    free(c.staged);
    free(params);
    free(t);
    return r;
}
