/* core/autograd: variables, the tape, backward, create-graph backward, checkpointed regions.
 *
 * A Var is a value Tensor plus its gradient. Ops (core/ops.h) take a Ctx: the arena new
 * tensors come from, and the tape (NULL = no tape: nothing is recorded or saved; that is how
 * frozen networks run). An op whose inputs include a Var that requires grad records one Node
 * on the tape; its output then requires grad too. A Var whose requires_grad is 0 (a frozen
 * weight) gets no gradient, but gradients still flow through the op to the other inputs, so
 * "taped with input gradients only" (the VAE decoder on the fake path) needs nothing special.
 *
 * Gradient rule everywhere: backward ACCUMULATES (+=) into Var.g. A Var's g.data == NULL
 * means "zero so far"; it is allocated zeroed from the arena on first use, except for
 * parameters, whose g points into a persistent flat gradient buffer (zeroed by the optimizer).
 *
 * tape_backward walks the tape in reverse creation order (a valid topological order).
 * The gradient of every non-leaf Var is consumed by the walk (its g is reset to "zero"), so
 * several backward passes over one tape (generator loss, then discriminator loss over the
 * shared fake path) each see only their own gradients; leaves keep accumulating.
 * autograd_grad(..., create_graph=1) computes gradients as Vars with differentiable ops,
 * recorded on the same tape, so a later backward differentiates them (the exact R1 penalty).
 * Only ops with a bwd_graph implementation may lie on such a path (the discriminator-head
 * ops); others fail with a message naming the op.
 *
 * op_checkpoint runs a region (a block) without saving anything, records one node, and in
 * backward recomputes the region on a local tape and runs that backward (ARCHITECTURE §8).
 * Every outer Var the region reads must be passed in `in` (at most NODE_MAX_IN).
 *
 * A Var may have a VarHome (FSDP parameters, distributed/fsdp.h): storage that is not always
 * resident. Every kernel that reads such a Var is preceded by home->acquire (op_exec, the
 * backward walks, checkpoint recomputes), and a backward walk calls home->grads_done after the
 * last node that reads the home. With no homes this costs one pointer test per op input. */
#ifndef ADDC_CORE_AUTOGRAD_H
#define ADDC_CORE_AUTOGRAD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/tensor.h"

typedef struct Tape Tape;
typedef struct Var Var;
typedef struct Node Node;
typedef struct Ctx Ctx;

/* Where a Var's storage lives when it is not always resident (FSDP units, distributed/fsdp.h).
 * Every parameter Var of a sharded unit points to its unit's home; views (op_reshape) inherit
 * it. */
typedef struct VarHome VarHome;
struct VarHome {
    /* Before any kernel (forward, backward, create-graph backward, checkpoint recompute) reads an
     * input Var with a home: make its value valid. `backward` is set for backward kernels and
     * checkpoint recomputes: the home's gradient range is about to be written, and the walk goes
     * towards earlier nodes. Called once per input, for the inputs of one node in turn. */
    Status (*acquire)(VarHome *h, bool backward);
    /* During a backward walk, after the last node (lowest index) that reads a Var of this home:
     * its gradients for this walk are complete. May be called more than once per step. */
    Status (*grads_done)(VarHome *h);
    int32_t walk_last; /* scratch for the backward walk's plan */
};

struct Var {
    Tensor v;        /* value */
    Tensor g;        /* accumulated gradient (same shape, f32); data NULL = zero so far */
    Var *gv;         /* gradient as a Var during a create-graph backward, else NULL */
    Tape *tape;      /* tape holding the node that produced it; NULL for leaves */
    int32_t node;    /* index of that node, -1 for leaves */
    uint8_t requires_grad;
    uint8_t want_gv;  /* set by autograd_grad on the inputs whose gradient it needs */
    const char *name; /* parameters carry their state-dict name */
    VarHome *home;    /* NULL except FSDP parameters and their views */
};

#define NODE_MAX_IN 4
#define NODE_MAX_SAVED 4
#define NODE_MAX_IP 12
#define NODE_MAX_FP 4

typedef Var *(*RegionFn)(Ctx *c, Var *const *in, int n_in, void *user);

struct Node {
    int32_t op;      /* OpKind */
    int32_t n_in;
    Var *in[NODE_MAX_IN];
    Var *out;
    Tensor saved[NODE_MAX_SAVED]; /* saved by the forward kernel when n->save is set */
    int64_t ip[NODE_MAX_IP];      /* integer parameters, meaning per op */
    double fp[NODE_MAX_FP];       /* float parameters, meaning per op */
    void *pp[2];                  /* pointer parameters (spectral-norm state, region user) */
    RegionFn region;              /* OP_CHECKPOINT only */
    uint8_t save;                 /* forward must save what backward needs */
};

struct Tape {
    Node *nodes;
    int32_t n, cap;
    uint8_t has_homes; /* some recorded node reads a Var with a home */
};

typedef struct Backend Backend;

struct Ctx {
    Arena *arena;           /* activations, saved tensors, gradients of this step */
    Tape *tape;             /* NULL: no tape */
    Device device;          /* device new tensors are made on */
    DType compute;          /* the dtype layers compute in (nn/layers.c casts weights and inputs to
                               it): DTYPE_F32 (ctx_make's default), or DTYPE_BF16 on CUDA with the
                               fp32 masters kept in the ParamStore */
    int32_t recomputing;    /* > 0 inside a checkpoint recompute */
    Tape *region_tape;      /* the local tape of the innermost recompute */
    double flops;           /* accumulated forward FLOPs (2 x multiply-adds) of the ops run */
    int64_t out_bytes;      /* accumulated bytes of op outputs made (meta included) */
};

void tape_init(Tape *t);
void tape_free(Tape *t);
void tape_clear(Tape *t); /* forget all nodes (keeps capacity) */

/* A Ctx on `arena` with `tape` (may be NULL), making tensors on `dev`. */
Ctx ctx_make(Arena *arena, Tape *tape, Device dev);

/* New Var with fresh (uninitialised) storage from the arena; data NULL on meta. */
Var *var_new(Ctx *c, DType dt, int32_t ndim, const int64_t *shape);
Var *var_zeros(Ctx *c, DType dt, int32_t ndim, const int64_t *shape);
/* A leaf Var wrapping existing storage (a view; nothing copied). */
Var *var_leaf(Ctx *c, Tensor value, bool requires_grad);
/* A leaf Var (no gradient) on c->device holding a copy of host data of dtype dt (shape only on
 * meta). The copy is complete when it returns (the host buffer may be reused at once). */
Var *var_from_host(Ctx *c, DType dt, int32_t ndim, const int64_t *shape, const void *host);
/* x itself when it is on dev already, else a leaf copy of its value on dev (no gradient, not taped:
 * for frozen inputs computed on another device, such as text embeddings). */
Var *var_to_device(Ctx *c, Var *x, Device dev);
/* x's value as host f32 (numel elements; bf16 and f16 widened); any device. */
Status var_download_f32(const Var *x, float *host);
/* The first element of x as a double (a loss); NaN with an error on failure. */
double var_scalar(const Var *x);
/* Initialise a caller-owned leaf (a parameter): value and persistent grad buffer (grad may
 * have data NULL, then it is allocated from the arena when first needed). */
void var_init_param(Var *p, Tensor value, Tensor grad, bool requires_grad, const char *name);
/* The gradient buffer of v as f32, allocated zeroed from the arena if not yet present. */
float *var_grad_f32(Ctx *c, Var *v);
/* Adds `contrib` into v->gv (create-graph mode), with op_add when v already has one. */
Status var_accum_gv(Ctx *c, Var *v, Var *contrib);

/* Seeds d(loss)/d(loss) = 1 (loss must have one element) and accumulates gradients into
 * every reachable Var that requires grad. */
Status tape_backward(Ctx *c, Var *loss);
/* Same with an explicit upstream gradient `dy` (shape of y, f32, same device). */
Status tape_backward_seed(Ctx *c, Var *y, const Tensor *dy);

/* Gradients of y (seeded with dy, or ones when dy is NULL) with respect to wrt[0..n),
 * written to grads[i] (NULL where no path exists). With create_graph they are Vars
 * recorded on c->tape (which must be set), differentiable by a later backward. Touches
 * no Var.g buffers. */
Status autograd_grad(Ctx *c, Var *y, Var *dy, Var *const *wrt, int n, Var **grads,
                     bool create_graph);

/* Runs fn(c, in, n_in, user) as a checkpointed region (see the top of this file). The
 * region is also a memory scope: everything it allocates from the arena is released when it
 * returns, except its output (moved down to where the region started). Without a tape that
 * is all it does: frozen networks use it to keep one block's activations at a time. */
Var *op_checkpoint(Ctx *c, RegionFn fn, void *user, Var *const *in, int n_in);

/* Releases everything allocated from c's arena since `m` except y, which is moved down to
 * the mark; returns the moved Var. Only for y not recorded on a tape (nothing else made
 * since the mark may still be referenced). */
Var *var_compact(Ctx *c, ArenaMark m, Var *y);

/* Forward FLOPs of one node (2 x multiply-adds of matmul, linear, conv, attention; other
 * ops count 0): what `addc inspect` reports. */
double op_node_flops(const Node *n);

/* --- for op implementations --- */

/* Runs node n whose output shape is out_shape: allocates the output, dispatches the
 * backend forward kernel (skipped on meta), records the node when a tape is set and some
 * input requires grad. Returns the output Var or NULL. */
Var *op_exec(Ctx *c, Node *n, DType out_dt, int32_t out_ndim, const int64_t *out_shape);
/* Scratch or saved storage from the step arena (host memory: bookkeeping, CPU tensors). */
void *ctx_alloc(Ctx *c, int64_t bytes);
/* Device memory from the step arena's device companion (CUDA kernels' scratch); NULL with an
 * error when the arena has none. ctx_tensor and var_new put tensors of device CUDA there. */
void *ctx_dev_alloc(Ctx *c, int64_t bytes);
Tensor ctx_tensor(Ctx *c, DType dt, int32_t ndim, const int64_t *shape);
/* Starts a node for op `op` with inputs (NULL entries allowed after the first n_req). */
Node node_make(int op, int n_in, Var *const *in);

#endif
