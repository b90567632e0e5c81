/* nn/param: parameter stores. A network declares its parameters (state-dict name, shape,
 * file layout, FSDP unit) while its modules are built, then the store allocates ONE flat
 * value buffer and one flat gradient buffer and points every parameter's Var into them
 * (STYLE §4: an FSDP shard is then offset arithmetic). On the meta device nothing is
 * allocated: building ADD-XL on meta gives exact counts for `addc inspect`.
 *
 * Names are exactly the diffusers / transformers / open_clip state-dict keys
 * ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"). Values are stored
 * in addc's layout; `layout` says how the ecosystem's file layout maps onto it (conv2d
 * weights are (Cout, KH, KW, Cin) here, OIHW in files), so loaders and savers convert.
 * Param structs live in fixed-size blocks: their addresses (and their Vars') never move. */
#ifndef ADDC_NN_PARAM_H
#define ADDC_NN_PARAM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/autograd.h"

#define PARAM_NAME_MAX 192

typedef enum ParamLayout {
    PARAM_PLAIN = 0,   /* same element order as the file */
    PARAM_CONV2D_OIHW, /* file (Cout, Cin, KH, KW) -> here (Cout, KH, KW, Cin) */
    PARAM_CONV1D_OIK,  /* file (Cout, Cin, K) -> here (Cout, K, Cin) */
} ParamLayout;

typedef struct Param {
    Var var;      /* value and gradient views into the store's flat buffers */
    char name[PARAM_NAME_MAX];
    ParamLayout layout;
    int32_t unit;   /* index of the unit (block) it belongs to */
    int64_t offset; /* element offset in the flat buffers */
    bool trainable;
} Param;

typedef struct ParamUnit {
    char name[PARAM_NAME_MAX]; /* e.g. "down_blocks.1.attentions.0.transformer_blocks.3" */
    int32_t first, count;      /* parameter indices [first, first + count) */
    int64_t offset, numel;     /* element range in the flat buffers */
} ParamUnit;

typedef struct ParamBlock ParamBlock;

typedef struct ParamStore {
    ParamBlock *head, *tail;
    int32_t n;                 /* parameters */
    ParamUnit *units;
    int32_t n_units, cap_units;
    Device device;             /* DEVICE_CPU, DEVICE_CUDA (after param_store_to_device) or DEVICE_META */
    float *data;               /* (numel) values, NULL on meta */
    float *grad;               /* (numel) gradients, NULL when not trainable or on meta */
    int64_t numel;
    bool allocated;
} ParamStore;

void param_store_init(ParamStore *s, Device dev);
void param_store_free(ParamStore *s);

/* Starts a new unit: the parameters declared from now on belong to it. Parameters
 * declared before any unit go to an implicit unit named "". */
Status param_store_begin_unit(ParamStore *s, const char *name);

/* Declares a parameter; returns its Var (value data NULL until param_store_alloc), or NULL
 * with an error (duplicate name, bad shape). `name` is the full state-dict key. */
Var *param_new(ParamStore *s, const char *name, int32_t ndim, const int64_t *shape, ParamLayout layout);

/* Allocates the flat buffers (values zeroed; gradients too when `trainable`) and binds every
 * parameter's Var. On meta, only marks the store allocated. */
Status param_store_alloc(ParamStore *s, bool trainable);

/* Moves an allocated CPU store to the GPU: values (category params) copied, gradients (category
 * grads) zeroed there, every parameter's Var rebound to the device buffers, the host buffers
 * freed. The store's layout, units and names are unchanged. */
Status param_store_to_device(ParamStore *s, Device dev);
/* Copies the values (and, when grad is set and the store has them, the gradients) of any store into
 * host f32 buffers of s->numel elements. */
Status param_store_download(const ParamStore *s, float *values, float *grad);

Param *param_store_get(ParamStore *s, int32_t i); /* 0 <= i < n */
Param *param_store_find(ParamStore *s, const char *name);
/* Fills every parameter deterministically: weights uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
 * (torch's default Linear/Conv init bound), biases the same, norms' weight 1 and bias 0
 * (parameters whose name ends in "norm*.weight"/".bias" or "ln*"), keyed by (seed,
 * RNG_PURPOSE_INIT, parameter index): the same on any machine or thread count. */
Status param_store_init_random(ParamStore *s, uint64_t seed);
void param_store_zero_grad(ParamStore *s);

/* Joins a prefix and a suffix into a state-dict key: ("down_blocks.0", "conv1.weight") ->
 * "down_blocks.0.conv1.weight"; an empty prefix gives the suffix. Returns out. */
char *param_name(char *out, const char *prefix, const char *suffix);
/* The same with printf formatting of the suffix. */
char *param_namef(char *out, const char *prefix, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
