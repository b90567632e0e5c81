/* core/ops/ops_internal: shared checks, broadcasting plans and the sum-to reduction. */
#include "core/ops/ops_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

Var *ops_fail(const char *op, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    addc_error_set(ADDC_ERR_INVALID, "%s: %s", op, buf);
    return NULL;
}

const char *ops_shape_str(const Tensor *t, char *buf, int cap) {
    int n = snprintf(buf, (size_t)cap, "(");
    for (int i = 0; i < t->ndim && n < cap; i++)
        n += snprintf(buf + n, (size_t)(cap - n), i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (n < cap) snprintf(buf + n, (size_t)(cap - n), ")");
    return buf;
}

bool ops_require_f32(const char *op, const char *what, const Var *v) {
    if (v->v.dtype == DTYPE_F32) return true;
    ops_fail(op, "%s must be f32, got %s", what, dtype_name(v->v.dtype));
    return false;
}

bool ops_require_float(const char *op, const char *what, const Var *v) {
    if (v->v.dtype == DTYPE_F32) return true;
    if (v->v.dtype == DTYPE_BF16 && v->v.device == DEVICE_CUDA) return true;
    if (v->v.dtype == DTYPE_BF16)
        ops_fail(op, "%s is bf16 on %s: bf16 values run on CUDA only (the CPU kernels compute in f32)", what,
                 device_name(v->v.device));
    else
        ops_fail(op, "%s must be f32 (or bf16 on CUDA), got %s", what, dtype_name(v->v.dtype));
    return false;
}

bool ops_require_same_float(const char *op, const Var *a, const Var *b) {
    if (!ops_require_float(op, "the first input", a) || !ops_require_float(op, "the second input", b)) return false;
    if (a->v.dtype == b->v.dtype) return true;
    ops_fail(op, "inputs of different dtypes (%s and %s): cast one with op_cast", dtype_name(a->v.dtype),
             dtype_name(b->v.dtype));
    return false;
}

void broadcast_strides(const Tensor *t, int64_t *padded_shape, int64_t *strides) {
    int off = BC_DIMS - t->ndim;
    int64_t st = 1;
    for (int i = BC_DIMS - 1; i >= 0; i--) {
        int64_t d = i >= off ? t->shape[i - off] : 1;
        padded_shape[i] = d;
        strides[i] = d == 1 ? 0 : st;
        st *= d;
    }
}

bool broadcast_plan(const char *op, const Tensor *a, const Tensor *b, Broadcast *bc) {
    int64_t pa[BC_DIMS], pb[BC_DIMS];
    broadcast_strides(a, pa, bc->sa);
    broadcast_strides(b, pb, bc->sb);
    bc->ndim = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < BC_DIMS; i++) {
        if (pa[i] != pb[i] && pa[i] != 1 && pb[i] != 1) {
            char s1[96], s2[96];
            ops_fail(op, "shapes %s and %s do not broadcast", ops_shape_str(a, s1, sizeof s1),
                     ops_shape_str(b, s2, sizeof s2));
            return false;
        }
        bc->out[i] = pa[i] == 1 ? pb[i] : pa[i];
    }
    for (int i = 0; i < bc->ndim; i++) bc->shape[i] = bc->out[BC_DIMS - bc->ndim + i];
    return true;
}

Status reduce_sum_to_accum(Ctx *c, float *dst, int32_t dnd, const int64_t *dshape, const float *src,
                         int32_t snd, const int64_t *sshape) {
    Tensor dt = tensor_make(NULL, DTYPE_F32, DEVICE_META, dnd, dshape);
    Tensor stn = tensor_make(NULL, DTYPE_F32, DEVICE_META, snd, sshape);
    int64_t pd[BC_DIMS], ds[BC_DIMS], ps[BC_DIMS], ss[BC_DIMS];
    broadcast_strides(&dt, pd, ds);
    broadcast_strides(&stn, ps, ss);
    int64_t dn = tensor_numel(&dt), sn = tensor_numel(&stn);
    if (dn == sn) { /* nothing summed */
        for (int64_t i = 0; i < sn; i++) dst[i] += src[i];
        return ADDC_OK;
    }
    ArenaMark mark = arena_mark(c->arena);
    double *acc = arena_calloc(c->arena, (dn ? dn : 1) * (int64_t)sizeof(double));
    if (!acc) return addc_error_status();
    /* iterate the source in row-major order with a counter */
    int64_t idx[BC_DIMS] = {0};
    int64_t inner = ps[BC_DIMS - 1];
    int64_t dinner = ds[BC_DIMS - 1];
    for (int64_t base = 0; base < sn; base += inner) {
        int64_t doff = 0;
        for (int i = 0; i < BC_DIMS - 1; i++) doff += idx[i] * ds[i];
        const float *s = src + base;
        if (dinner == 0) {
            double t = 0;
            for (int64_t j = 0; j < inner; j++) t += s[j];
            acc[doff] += t;
        } else {
            for (int64_t j = 0; j < inner; j++) acc[doff + j] += s[j];
        }
        for (int i = BC_DIMS - 2; i >= 0; i--) {
            if (++idx[i] < ps[i]) break;
            idx[i] = 0;
        }
    }
    for (int64_t i = 0; i < dn; i++) dst[i] += (float)acc[i];
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

float *ops_in_grad(Ctx *c, Node *n, int i, Status *st) {
    Var *x = n->in[i];
    if (!x || !x->requires_grad) return NULL;
    float *g = var_grad_f32(c, x);
    if (!g) *st = addc_error_status() ? addc_error_status() : ADDC_ERR_NOMEM;
    return g;
}

Var *ops_const(Ctx *c, Tensor s) { return var_leaf(c, s, false); }
