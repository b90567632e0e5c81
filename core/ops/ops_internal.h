/* core/ops/ops_internal: helpers shared by the op family files (not a public header). */
#ifndef ADDC_CORE_OPS_INTERNAL_H
#define ADDC_CORE_OPS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/ops.h"
#include "core/parallel.h"

/* Return NULL at once when any listed input is NULL (error propagation). */
#define OPS_NULL_GUARD1(a) \
    do { if (!(a)) return NULL; } while (0)
#define OPS_NULL_GUARD2(a, b) \
    do { if (!(a) || !(b)) return NULL; } while (0)
#define OPS_NULL_GUARD3(a, b, c) \
    do { if (!(a) || !(b) || !(c)) return NULL; } while (0)

/* Records an error naming the op and returns NULL (for op_* shape checks). */
Var *ops_fail(const char *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* NULL + error unless v is f32 (any device). `what` names the argument. */
bool ops_require_f32(const char *op, const char *what, const Var *v);
/* A value dtype the op's kernels take: f32 on any device, bf16 on CUDA (the CPU kernels compute
 * in f32 only); false with an error naming op and argument otherwise. */
bool ops_require_float(const char *op, const char *what, const Var *v);
/* Both f32/bf16 as above and of the same dtype (mixed inputs need an explicit op_cast). */
bool ops_require_same_float(const char *op, const Var *a, const Var *b);
/* Formats a shape "(2, 3, 4)". */
const char *ops_shape_str(const Tensor *t, char *buf, int cap);

/* Broadcasting (numpy rules, right-aligned). Shapes are padded on the left to BC_DIMS. */
#define BC_DIMS TENSOR_MAX_DIMS
typedef struct Broadcast {
    int32_t ndim;             /* of the output */
    int64_t shape[BC_DIMS];   /* output shape, right-aligned in the last ndim slots */
    int64_t out[BC_DIMS];     /* left-padded output shape (BC_DIMS entries) */
    int64_t sa[BC_DIMS];      /* element strides of a into the padded output (0 on broadcast dims) */
    int64_t sb[BC_DIMS];
} Broadcast;
/* Fills bc for a op b; false (with error) when the shapes do not broadcast. */
bool broadcast_plan(const char *op, const Tensor *a, const Tensor *b, Broadcast *bc);
/* Left-padded shape and strides of t for a BC_DIMS-dim output; dims where t is 1 get stride 0. */
void broadcast_strides(const Tensor *t, int64_t *padded_shape, int64_t *strides);

/* dst (dshape) += src (sshape) summed over the dims where dshape is 1 or missing.
 * dshape must be broadcast-compatible with sshape. Deterministic, double accumulation
 * (scratch from the arena, released before returning). */
Status reduce_sum_to_accum(Ctx *c, float *dst, int32_t dnd, const int64_t *dshape, const float *src,
                         int32_t snd, const int64_t *sshape);

/* Helpers for backward kernels: the f32 gradient buffer of input i when it requires grad,
 * else NULL (*st set to an error status when allocation failed). */
float *ops_in_grad(Ctx *c, Node *n, int i, Status *st);

/* In a create-graph backward, true when input i wants a gradient. */
static inline bool ops_in_wants_gv(const Node *n, int i) { return n->in[i] && n->in[i]->want_gv; }

/* A constant (no grad) Var wrapping the node's saved tensor s. */
Var *ops_const(Ctx *c, Tensor s);

#endif
