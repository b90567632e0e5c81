/* nn/layers: the small modules every network is built from. Each is a plain struct of
 * parameter Vars (owned by a ParamStore) plus its hyper-parameters; *_init declares the
 * parameters under a state-dict prefix, *_forward runs the ops. Shapes: tokens (B, T, D),
 * images and feature maps NHWC (B, H, W, C). */
#ifndef ADDC_NN_LAYERS_H
#define ADDC_NN_LAYERS_H

#include <stdbool.h>

#include "core/ops.h"
#include "nn/param.h"

typedef struct Linear {
    Var *weight; /* (dout, din) */
    Var *bias;   /* (dout) or NULL */
    int64_t din, dout;
} Linear;

typedef struct Conv2d {
    Var *weight; /* (cout, k, k, cin); files hold (cout, cin, k, k) */
    Var *bias;   /* (cout) or NULL */
    int64_t cin, cout;
    int k, stride, pad;
} Conv2d;

typedef struct Norm {
    Var *weight, *bias; /* (C) each, or NULL without affine */
    int64_t channels;
    int groups;         /* group norm only */
    double eps;
} Norm;

Status linear_init(Linear *l, ParamStore *s, const char *prefix, int64_t din, int64_t dout, bool bias);
Var *linear_forward(Ctx *c, const Linear *l, Var *x);

Status conv2d_init(Conv2d *m, ParamStore *s, const char *prefix, int64_t cin, int64_t cout, int k, int stride,
                   int pad, bool bias);
Var *conv2d_forward(Ctx *c, const Conv2d *m, Var *x);

Status group_norm_init(Norm *n, ParamStore *s, const char *prefix, int groups, int64_t channels, double eps,
                       bool affine);
Var *group_norm_forward(Ctx *c, const Norm *n, Var *x);
/* silu(group_norm(x)) as one fused op (the pair every UNet and VAE resnet opens with) */
Var *group_norm_silu_forward(Ctx *c, const Norm *n, Var *x);
Status layer_norm_init(Norm *n, ParamStore *s, const char *prefix, int64_t channels, double eps, bool affine);
Var *layer_norm_forward(Ctx *c, const Norm *n, Var *x);

#endif
