/* core/ops: every op the ADD networks need, forward and backward, on the tape (autograd.h).
 *
 * One enum of ops with a name table checked at compile time (core/ops/op_table.c); one file
 * per op family in core/ops/, forward and backward side by side, the accumulation rule at
 * the top. A Backend is a table of kernels per op (CPU now, CUDA later); the public op_*
 * functions below check shapes, build the Node and call op_exec, which dispatches.
 *
 * Conventions: f32 on the CPU, f32 or bf16 on CUDA (an op's float inputs of one dtype, its output in
 * that dtype except the scalar reductions sum, mean, mean_square and cross_entropy, f32; gradients
 * always f32); NHWC images (B, H, W, C); tokens (B, T, D); linear weights
 * (Dout, Din); conv2d weights (Cout, KH, KW, Cin); conv1d weights (Cout, K, Cin).
 * Every op_* returns NULL on error (message in core/error) and returns NULL at once when
 * an input is NULL, so a chain of ops needs one check at its end. */
#ifndef ADDC_CORE_OPS_H
#define ADDC_CORE_OPS_H

#include "core/autograd.h"

typedef enum OpKind {
    OP_CHECKPOINT = 0, /* a recomputed region (autograd.c) */
    /* elementwise.c */
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_SCALE,
    OP_RSQRT,
    OP_CAST,
    /* reduce.c */
    OP_SUM_TO,
    OP_BROADCAST_TO,
    OP_SUM,
    OP_MEAN,
    OP_MEAN_SQUARE,
    /* view.c */
    OP_RESHAPE,
    /* act.c */
    OP_SILU,
    OP_GELU,
    OP_GEGLU,
    OP_LEAKY_RELU,
    OP_RELU,
    OP_HINGE,
    /* matmul.c */
    OP_MATMUL,
    OP_LINEAR,
    /* conv.c */
    OP_CONV2D,
    OP_CONV1D,
    OP_CONV1D_T, /* transposed conv1d: the input gradient of conv1d as an op */
    /* norm.c */
    OP_GROUP_NORM,
    OP_LAYER_NORM,
    OP_BATCH_NORM_LOCAL,
    /* attention.c */
    OP_SOFTMAX,
    OP_ATTENTION,
    /* shape.c */
    OP_CONCAT,
    OP_SLICE,
    OP_PERMUTE,
    OP_UPSAMPLE_NEAREST2X,
    OP_RESIZE_AREA,
    OP_RESIZE_BICUBIC,
    /* embed.c */
    OP_TIMESTEP_EMBEDDING,
    OP_EMBEDDING,
    /* spectral.c */
    OP_SPECTRAL_NORM,
    /* xent.c */
    OP_CROSS_ENTROPY,
    OP_COUNT
} OpKind;

/* Op flags */
enum {
    OPF_NONE = 0,
    OPF_GRAPH = 1,       /* has a create-graph backward (discriminator-head ops) */
    OPF_NO_INPUT_GRAD = 2 /* backward yields no gradient to any input (e.g. timestep embedding) */
};

typedef struct OpInfo {
    OpKind op;
    const char *name;
    int flags;
} OpInfo;

extern const OpInfo op_info[OP_COUNT];
const char *op_name(int op);

typedef Status (*OpFwdFn)(Ctx *c, Node *n);
/* Reads n->out->g, accumulates (+=) into n->in[i]->g for inputs that require grad. */
typedef Status (*OpBwdFn)(Ctx *c, Node *n);
/* Reads n->out->gv, accumulates into n->in[i]->gv (var_accum_gv) using differentiable ops. */
typedef Status (*OpBwdGraphFn)(Ctx *c, Node *n);

typedef struct OpImpl {
    OpFwdFn fwd;
    OpBwdFn bwd;
    OpBwdGraphFn bwd_graph; /* device independent (built from ops); NULL unless OPF_GRAPH */
} OpImpl;

struct Backend {
    const char *name;
    Device device;
    const OpImpl *ops[OP_COUNT];
};

extern const Backend backend_cpu;
/* The backend for a device, or NULL (with an error) when none is compiled in / present. */
const Backend *backend_for(Device d);

/* ---- elementwise.c: numpy broadcasting (right-aligned shapes) ---- */
Var *op_add(Ctx *c, Var *a, Var *b);
Var *op_sub(Ctx *c, Var *a, Var *b);
Var *op_mul(Ctx *c, Var *a, Var *b);
Var *op_div(Ctx *c, Var *a, Var *b);
Var *op_scale(Ctx *c, Var *x, double alpha, double beta); /* alpha * x + beta */
Var *op_rsqrt(Ctx *c, Var *x, double eps);                /* (x + eps)^(-1/2) */
Var *op_cast(Ctx *c, Var *x, DType dt);                   /* gradient cast back to f32 */

/* ---- reduce.c ---- */
/* Sums x down to `shape` (broadcast-compatible with x: right-aligned, each dim equal or 1;
 * missing leading dims are summed away). The inverse of op_broadcast_to. */
Var *op_sum_to(Ctx *c, Var *x, int32_t ndim, const int64_t *shape);
Var *op_broadcast_to(Ctx *c, Var *x, int32_t ndim, const int64_t *shape);
Var *op_mean_to(Ctx *c, Var *x, int32_t ndim, const int64_t *shape); /* sum_to / count */
Var *op_sum(Ctx *c, Var *x);         /* all elements -> shape () */
Var *op_mean(Ctx *c, Var *x);        /* all elements -> shape () */
Var *op_mean_square(Ctx *c, Var *x); /* mean(x^2) -> shape () */

/* ---- view.c ---- */
/* The same elements under another shape (same numel); the output aliases x's storage. */
Var *op_reshape(Ctx *c, Var *x, int32_t ndim, const int64_t *shape);

/* ---- act.c ---- */
typedef enum GeluApprox { GELU_ERF = 0, GELU_TANH = 1 } GeluApprox;
Var *op_silu(Ctx *c, Var *x);
Var *op_gelu(Ctx *c, Var *x, GeluApprox approx);
Var *op_geglu(Ctx *c, Var *x); /* (..., 2D) -> (..., D): h * gelu_erf(gate), [h | gate] */
Var *op_leaky_relu(Ctx *c, Var *x, double slope);
Var *op_relu(Ctx *c, Var *x);
Var *op_hinge(Ctx *c, Var *x, double sign); /* max(0, 1 + sign * x): D losses use sign -1/+1 */

/* ---- matmul.c (OpenBLAS sgemm) ---- */
/* (..., M, K) @ (..., K, N) -> (..., M, N); trans_a/trans_b read a/b as their last-two-dims
 * transpose. Batch dims broadcast (b may be 2-D and shared by the whole batch). */
Var *op_matmul(Ctx *c, Var *a, Var *b, bool trans_a, bool trans_b);
/* x (..., Din) @ w^T (Dout, Din) + bias (Dout) (bias may be NULL) -> (..., Dout) */
Var *op_linear(Ctx *c, Var *x, Var *w, Var *bias);

/* ---- conv.c ---- */
/* x (B, H, W, Cin), w (Cout, KH, KW, Cin), bias (Cout) or NULL; symmetric zero padding. */
Var *op_conv2d(Ctx *c, Var *x, Var *w, Var *bias, int stride, int pad);
typedef enum PadMode { PAD_ZEROS = 0, PAD_CIRCULAR = 1 } PadMode;
/* x (B, N, Cin), w (Cout, K, Cin) with K odd, "same" padding K/2 of the given mode. */
Var *op_conv1d(Ctx *c, Var *x, Var *w, Var *bias, PadMode mode);
/* The transpose of op_conv1d (no bias): y (B, N, Cout), w (Cout, K, Cin) -> (B, N, Cin);
 * it is conv1d's input gradient, as an op so that it can itself be differentiated. */
Var *op_conv1d_t(Ctx *c, Var *y, Var *w, PadMode mode);

/* ---- norm.c ---- */
/* x (B, ..., C) channels last; statistics per (sample, group) over all positions and the
 * group's C/groups channels; gamma, beta (C) or NULL. */
Var *op_group_norm(Ctx *c, Var *x, Var *gamma, Var *beta, int groups, double eps);
/* silu(group_norm(x)) as one op (one pass over memory; the pre-activation is not stored). */
Var *op_group_norm_silu(Ctx *c, Var *x, Var *gamma, Var *beta, int groups, double eps);
/* normalises over the last dim; gamma, beta (D) or NULL */
Var *op_layer_norm(Ctx *c, Var *x, Var *gamma, Var *beta, double eps);
/* StyleGAN-T BatchNormLocal: x (B, N, C); the batch is cut into G = ceil(B / virtual_bs)
 * groups of B/G samples (B must divide); statistics per (group, channel) over the group's
 * samples and all N tokens, biased variance; gamma, beta (C) or NULL. */
Var *op_batch_norm_local(Ctx *c, Var *x, Var *gamma, Var *beta, int virtual_bs, double eps);

/* ---- attention.c ---- */
Var *op_softmax(Ctx *c, Var *x); /* over the last dim */
/* Multi-head scaled dot-product attention, memory-efficient (blocks of queries, one head at
 * a time; never the full score matrix of all heads). q (B, Nq, NH*Dh), k (B, Nk, NH*Dh),
 * v (B, Nk, NH*Dv) -> (B, Nq, NH*Dv). scale <= 0 means 1/sqrt(Dh). causal: query i sees
 * keys j <= i (CLIP text). */
Var *op_attention(Ctx *c, Var *q, Var *k, Var *v, int heads, double scale, bool causal);

/* ---- shape.c ---- */
Var *op_concat(Ctx *c, Var *a, Var *b, int axis); /* negative axis counts from the end */
Var *op_slice(Ctx *c, Var *x, int axis, int64_t start, int64_t len);
/* n equal parts along axis into out[0..n) */
Status op_split(Ctx *c, Var *x, int axis, int n, Var **out);
Var *op_permute(Ctx *c, Var *x, const int32_t *perm);
Var *op_upsample_nearest2x(Ctx *c, Var *x); /* (B, H, W, C) -> (B, 2H, 2W, C) */
/* torch F.interpolate(mode="area") = adaptive average pooling: (B, H, W, C) -> (B, oh, ow, C) */
Var *op_resize_area(Ctx *c, Var *x, int64_t oh, int64_t ow);
/* torch F.interpolate(mode="bicubic", align_corners=False), A = -0.75, border-clamped */
Var *op_resize_bicubic(Ctx *c, Var *x, int64_t oh, int64_t ow);

/* ---- embed.c ---- */
/* diffusers get_timestep_embedding: t (B) f32 (bf16 on CUDA rounds 999 to 1000: keep t f32) -> (B, dim),
 * in t's dtype; half = dim/2 frequencies
 * exp(-ln(max_period) * i / (half - freq_shift)); [sin | cos], or [cos | sin] when
 * flip_sin_to_cos; odd dim zero-padded. No gradient to t. */
Var *op_timestep_embedding(Ctx *c, Var *t, int dim, bool flip_sin_to_cos, double freq_shift,
                           double max_period);
/* ids (...) i32 or i64, table (V, D) -> (..., D); gradient scatter-added into the table */
Var *op_embedding(Ctx *c, Var *ids, Var *table);

/* ---- spectral.c ---- */
/* torch.nn.utils.spectral_norm: w viewed as (rows = shape[0], cols = rest); u (rows) and
 * v (cols) are the persistent power-iteration state, updated in place n_iter times when
 * `update` (training), then sigma = u . (W v) and the result is w / sigma. Gradient flows
 * to w through sigma with u, v held constant. */
Var *op_spectral_norm(Ctx *c, Var *w, Tensor *u, Tensor *v, int n_iter, double eps, bool update);

/* ---- xent.c ---- */
/* Mean over the batch of -log softmax(logits)[b, labels[b]]: logits (B, K) f32 (or bf16 on CUDA), f32 out; labels (B) in
 * [0, K), copied into the node -> shape (). Max-subtracted log-sum-exp in double. Gradient
 * g * (softmax - onehot) / B into logits. A label outside [0, K) is refused (row and value named). */
Var *op_cross_entropy(Ctx *c, Var *logits, const int32_t *labels);

/* ---- optim.c: updates on flat f32 buffers (not tape ops) ---- */
typedef struct AdamWConfig {
    double lr, beta1, beta2, eps, weight_decay;
} AdamWConfig;
/* One AdamW step (PyTorch semantics, decoupled weight decay, bias correction with `step`
 * counted from 1) over n elements. */
void adamw_update(float *param, const float *grad, float *m, float *v, int64_t n,
                  const AdamWConfig *cfg, int64_t step);
/* ema = decay * ema + (1 - decay) * param */
void ema_update(float *ema, const float *param, int64_t n, double decay);
/* sum of squares of n elements, accumulated in double */
double sum_squares(const float *x, int64_t n);
/* sqrt of the sum of squares over several buffers */
double grad_global_norm(float *const *grads, const int64_t *sizes, int n);
/* Scales every buffer by max_norm / (norm + 1e-6) when that is < 1 (torch's
 * clip_grad_norm_); returns the norm before clipping. */
double grad_clip_global_norm(float *const *grads, const int64_t *sizes, int n, double max_norm);

#endif
