/* nn/layers: Linear, Conv2d, GroupNorm, LayerNorm (see layers.h). */
#include "nn/layers.h"

#include <string.h>

static Status declare(Var **out, ParamStore *s, const char *prefix, const char *suffix, int32_t nd,
                      const int64_t *shape, ParamLayout layout) {
    char name[PARAM_NAME_MAX];
    *out = param_new(s, param_name(name, prefix, suffix), nd, shape, layout);
    return *out ? ADDC_OK : addc_error_status();
}

Status linear_init(Linear *l, ParamStore *s, const char *prefix, int64_t din, int64_t dout, bool bias) {
    memset(l, 0, sizeof *l);
    l->din = din;
    l->dout = dout;
    int64_t ws[2] = {dout, din};
    TRY(declare(&l->weight, s, prefix, "weight", 2, ws, PARAM_PLAIN));
    if (bias) TRY(declare(&l->bias, s, prefix, "bias", 1, &dout, PARAM_PLAIN));
    return ADDC_OK;
}

/* x or a parameter in the context's compute dtype: a bf16 context reads the fp32 masters through
 * op_cast, whose backward accumulates the f32 gradient into the master's. */
static Var *in_compute(Ctx *c, Var *v) {
    if (!v || v->v.dtype == c->compute) return v;
    return op_cast(c, v, c->compute);
}

Var *linear_forward(Ctx *c, const Linear *l, Var *x) {
    return op_linear(c, in_compute(c, x), in_compute(c, l->weight), in_compute(c, l->bias));
}

Status conv2d_init(Conv2d *m, ParamStore *s, const char *prefix, int64_t cin, int64_t cout, int k, int stride,
                   int pad, bool bias) {
    memset(m, 0, sizeof *m);
    m->cin = cin;
    m->cout = cout;
    m->k = k;
    m->stride = stride;
    m->pad = pad;
    int64_t ws[4] = {cout, k, k, cin};
    TRY(declare(&m->weight, s, prefix, "weight", 4, ws, PARAM_CONV2D_OIHW));
    if (bias) TRY(declare(&m->bias, s, prefix, "bias", 1, &cout, PARAM_PLAIN));
    return ADDC_OK;
}

Var *conv2d_forward(Ctx *c, const Conv2d *m, Var *x) {
    return op_conv2d(c, in_compute(c, x), in_compute(c, m->weight), in_compute(c, m->bias), m->stride, m->pad);
}

static Status norm_init(Norm *n, ParamStore *s, const char *prefix, int groups, int64_t channels, double eps,
                        bool affine) {
    memset(n, 0, sizeof *n);
    n->channels = channels;
    n->groups = groups;
    n->eps = eps;
    if (affine) {
        TRY(declare(&n->weight, s, prefix, "weight", 1, &channels, PARAM_PLAIN));
        TRY(declare(&n->bias, s, prefix, "bias", 1, &channels, PARAM_PLAIN));
    }
    return ADDC_OK;
}

Status group_norm_init(Norm *n, ParamStore *s, const char *prefix, int groups, int64_t channels, double eps,
                       bool affine) {
    if (groups <= 0 || channels % groups)
        return addc_error_set(ADDC_ERR_INVALID, "%s: %lld channels do not split into %d groups", prefix,
                              (long long)channels, groups);
    return norm_init(n, s, prefix, groups, channels, eps, affine);
}

Var *group_norm_forward(Ctx *c, const Norm *n, Var *x) {
    return op_group_norm(c, in_compute(c, x), in_compute(c, n->weight), in_compute(c, n->bias), n->groups, n->eps);
}

Var *group_norm_silu_forward(Ctx *c, const Norm *n, Var *x) {
    return op_group_norm_silu(c, in_compute(c, x), in_compute(c, n->weight), in_compute(c, n->bias), n->groups,
                              n->eps);
}

Status layer_norm_init(Norm *n, ParamStore *s, const char *prefix, int64_t channels, double eps, bool affine) {
    return norm_init(n, s, prefix, 1, channels, eps, affine);
}

Var *layer_norm_forward(Ctx *c, const Norm *n, Var *x) {
    return op_layer_norm(c, in_compute(c, x), in_compute(c, n->weight), in_compute(c, n->bias), n->eps);
}
