/* nn/param: parameter stores (see param.h). */
#include "nn/param.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda.h"
#include "core/rng.h"

#define PARAM_BLOCK 256

struct ParamBlock {
    ParamBlock *next;
    int32_t n;
    Param p[PARAM_BLOCK];
};

void param_store_init(ParamStore *s, Device dev) {
    memset(s, 0, sizeof *s);
    s->device = dev;
}

void param_store_free(ParamStore *s) {
    ParamBlock *b = s->head;
    while (b) {
        ParamBlock *n = b->next;
        free(b);
        b = n;
    }
    free(s->units);
    if (s->device == DEVICE_CUDA) {
        size_t bytes = (size_t)(s->numel ? s->numel : 1) * sizeof(float);
        cuda_mem_free(CUDA_MEM_PARAMS, s->data, bytes);
        cuda_mem_free(CUDA_MEM_GRADS, s->grad, bytes);
    } else {
        free(s->data);
        free(s->grad);
    }
    memset(s, 0, sizeof *s);
}

Status param_store_to_device(ParamStore *s, Device dev) {
    if (dev != DEVICE_CUDA)
        return addc_error_set(ADDC_ERR_INVALID, "param_store_to_device: only cuda is a target, not %s", device_name(dev));
    if (s->device != DEVICE_CPU || !s->allocated || !s->data)
        return addc_error_set(ADDC_ERR_INVALID, "param_store_to_device: the store must be allocated on the cpu "
                                                "(it is on %s%s)",
                              device_name(s->device), s->allocated ? "" : ", not allocated");
    size_t bytes = (size_t)(s->numel ? s->numel : 1) * sizeof(float);
    float *d = NULL, *g = NULL;
    TRY(cuda_mem_alloc(CUDA_MEM_PARAMS, (void **)&d, bytes));
    Status st = cuda_copy_to_device(d, s->data, bytes);
    if (st == ADDC_OK && s->grad) {
        st = cuda_mem_alloc(CUDA_MEM_GRADS, (void **)&g, bytes);
        if (st == ADDC_OK) st = cuda_memset(g, 0, bytes);
    }
    if (st == ADDC_OK) st = cuda_synchronize(); /* the host buffer goes next */
    if (st != ADDC_OK) {
        cuda_mem_free(CUDA_MEM_PARAMS, d, bytes);
        if (g) cuda_mem_free(CUDA_MEM_GRADS, g, bytes);
        return st;
    }
    free(s->data);
    free(s->grad);
    s->data = d;
    s->grad = g;
    s->device = DEVICE_CUDA;
    for (int32_t i = 0; i < s->n; i++) {
        Param *p = param_store_get(s, i);
        p->var.v.data = d + p->offset;
        p->var.v.device = DEVICE_CUDA;
        p->var.g.data = g ? g + p->offset : NULL;
        p->var.g.device = DEVICE_CUDA;
    }
    return ADDC_OK;
}

Status param_store_download(const ParamStore *s, float *values, float *grad) {
    size_t bytes = (size_t)s->numel * sizeof(float);
    if (!s->data) return addc_error_set(ADDC_ERR_INVALID, "param_store_download: the store has no values");
    if (s->device == DEVICE_CUDA) {
        TRY(cuda_copy_to_host(values, s->data, bytes));
        if (grad && s->grad) TRY(cuda_copy_to_host(grad, s->grad, bytes));
        return ADDC_OK;
    }
    memcpy(values, s->data, bytes);
    if (grad && s->grad) memcpy(grad, s->grad, bytes);
    return ADDC_OK;
}

Param *param_store_get(ParamStore *s, int32_t i) {
    ParamBlock *b = s->head;
    while (b && i >= PARAM_BLOCK) {
        b = b->next;
        i -= PARAM_BLOCK;
    }
    return b && i < b->n ? &b->p[i] : NULL;
}

Param *param_store_find(ParamStore *s, const char *name) {
    for (ParamBlock *b = s->head; b; b = b->next)
        for (int32_t i = 0; i < b->n; i++)
            if (strcmp(b->p[i].name, name) == 0) return &b->p[i];
    return NULL;
}

Status param_store_begin_unit(ParamStore *s, const char *name) {
    if (s->allocated) return addc_error_set(ADDC_ERR_INVALID, "param_store_begin_unit after allocation");
    if (s->n_units == s->cap_units) {
        int32_t cap = s->cap_units ? 2 * s->cap_units : 64;
        ParamUnit *u = realloc(s->units, (size_t)cap * sizeof *u);
        if (!u) return addc_error_set(ADDC_ERR_NOMEM, "out of memory for parameter units");
        s->units = u;
        s->cap_units = cap;
    }
    ParamUnit *u = &s->units[s->n_units++];
    memset(u, 0, sizeof *u);
    snprintf(u->name, sizeof u->name, "%s", name);
    u->first = s->n;
    return ADDC_OK;
}

Var *param_new(ParamStore *s, const char *name, int32_t ndim, const int64_t *shape, ParamLayout layout) {
    if (s->allocated) {
        addc_error_set(ADDC_ERR_INVALID, "parameter '%s' declared after allocation", name);
        return NULL;
    }
    if (strlen(name) >= PARAM_NAME_MAX) {
        addc_error_set(ADDC_ERR_INVALID, "parameter name too long: %s", name);
        return NULL;
    }
    if (param_store_find(s, name)) {
        addc_error_set(ADDC_ERR_INVALID, "parameter '%s' declared twice", name);
        return NULL;
    }
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS) {
        addc_error_set(ADDC_ERR_INVALID, "parameter '%s' has rank %d", name, ndim);
        return NULL;
    }
    if (s->n_units == 0 && param_store_begin_unit(s, "") != ADDC_OK) return NULL;
    if (!s->tail || s->tail->n == PARAM_BLOCK) {
        ParamBlock *b = calloc(1, sizeof *b);
        if (!b) {
            addc_error_set(ADDC_ERR_NOMEM, "out of memory for parameters");
            return NULL;
        }
        if (s->tail) s->tail->next = b;
        else s->head = b;
        s->tail = b;
    }
    Param *p = &s->tail->p[s->tail->n++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->layout = layout;
    p->unit = s->n_units - 1;
    p->trainable = false;
    Tensor v = tensor_make(NULL, DTYPE_F32, s->device, ndim, shape);
    Tensor g = tensor_make(NULL, DTYPE_F32, s->device, ndim, shape);
    var_init_param(&p->var, v, g, false, p->name);
    p->offset = s->numel;
    s->numel += tensor_numel(&v);
    s->units[p->unit].count++;
    s->units[p->unit].numel += tensor_numel(&v);
    s->n++;
    return &p->var;
}

Status param_store_alloc(ParamStore *s, bool trainable) {
    if (s->allocated) return addc_error_set(ADDC_ERR_INVALID, "parameter store allocated twice");
    int64_t off = 0;
    for (int32_t u = 0; u < s->n_units; u++) {
        s->units[u].offset = off;
        off += s->units[u].numel;
    }
    if (s->device != DEVICE_META) {
        size_t bytes = (size_t)(s->numel ? s->numel : 1) * sizeof(float);
        s->data = calloc(1, bytes);
        if (trainable) s->grad = calloc(1, bytes);
        if (!s->data || (trainable && !s->grad))
            return addc_error_set(ADDC_ERR_NOMEM, "cannot allocate %.1f MiB of parameters",
                                  (double)bytes * (trainable ? 2 : 1) / 1048576.0);
    }
    for (int32_t i = 0; i < s->n; i++) {
        Param *p = param_store_get(s, i);
        p->trainable = trainable;
        p->var.requires_grad = trainable;
        p->var.v.data = s->data ? s->data + p->offset : NULL;
        p->var.g.data = s->grad ? s->grad + p->offset : NULL;
    }
    s->allocated = true;
    return ADDC_OK;
}

static bool name_ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* norm layers: *norm*.weight / *ln_*.weight / layernorm... get weight 1, bias 0 */
static bool is_norm(const char *name) {
    const char *last = strrchr(name, '.');
    size_t stem = last ? (size_t)(last - name) : strlen(name);
    const char *seg = name;
    for (const char *q = name; q < name + stem; q++)
        if (*q == '.') seg = q + 1;
    return strstr(seg, "norm") != NULL || strncmp(seg, "ln", 2) == 0;
}

Status param_store_init_random(ParamStore *s, uint64_t seed) {
    if (!s->allocated) return addc_error_set(ADDC_ERR_INVALID, "param_store_init_random before allocation");
    if (!s->data) return ADDC_OK;
    for (int32_t i = 0; i < s->n; i++) {
        Param *p = param_store_get(s, i);
        float *d = p->var.v.data;
        int64_t n = tensor_numel(&p->var.v);
        if (is_norm(p->name)) {
            float v = name_ends_with(p->name, ".weight") ? 1.0f : 0.0f;
            for (int64_t k = 0; k < n; k++) d[k] = v;
            continue;
        }
        int64_t fan_in = 1;
        const Tensor *t = &p->var.v;
        if (t->ndim >= 2)
            for (int k = 1; k < t->ndim; k++) fan_in *= t->shape[k];
        else
            fan_in = t->ndim == 1 ? t->shape[0] : 1;
        double bound = 1.0 / sqrt((double)(fan_in > 0 ? fan_in : 1));
        RngKey k = rng_key(seed, RNG_PURPOSE_INIT, (uint64_t)i, 0);
        rng_fill_uniform(&k, 0, n, d);
        for (int64_t q = 0; q < n; q++) d[q] = (float)((2.0 * d[q] - 1.0) * bound);
    }
    return ADDC_OK;
}

void param_store_zero_grad(ParamStore *s) {
    if (!s->grad) return;
    if (s->device == DEVICE_CUDA)
        cuda_memset(s->grad, 0, (size_t)s->numel * sizeof(float)); /* ordered before the next kernels */
    else
        memset(s->grad, 0, (size_t)s->numel * sizeof(float));
}

char *param_name(char *out, const char *prefix, const char *suffix) {
    size_t lp = prefix ? strlen(prefix) : 0, ls = strlen(suffix);
    if (lp > PARAM_NAME_MAX - 2) lp = PARAM_NAME_MAX - 2; /* names are truncated, never overflow */
    if (lp + ls + 2 > PARAM_NAME_MAX) ls = lp + 2 < PARAM_NAME_MAX ? PARAM_NAME_MAX - lp - 2 : 0;
    if (lp) {
        memmove(out, prefix, lp);
        out[lp++] = '.';
    }
    memmove(out + lp, suffix, ls);
    out[lp + ls] = 0;
    return out;
}

char *param_namef(char *out, const char *prefix, const char *fmt, ...) {
    char suf[PARAM_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(suf, sizeof suf, fmt, ap);
    va_end(ap);
    return param_name(out, prefix, suf);
}
