/* tests/ref_nn: helpers shared by the network tests (test_vae, test_vit, test_clip, test_disc):
 * fixture tensors read from the safetensors files the Python libraries wrote, comparisons that
 * count as test checks, and the check of a store's parameter listing against the one the
 * reference library printed. */
#ifndef ADDC_TESTS_REF_NN_H
#define ADDC_TESTS_REF_NN_H

#include <stdbool.h>
#include <stddef.h>

#include "nn/param.h"
#include "nn/safetensors.h"

/* ADDC_SOURCE_DIR/rel into buf */
char *nn_src_path(char *buf, size_t cap, const char *rel);
double nn_now(void); /* seconds, monotonic */

/* A new f32 Var (from c's arena) holding fixture tensor `name`; NULL (and a failed check) if absent. */
Var *nn_io_var(Ctx *c, const SafeTensors *io, const char *name, bool requires_grad);
/* The same as an i32 Var (token ids stored as integers or floats). */
Var *nn_io_ids(Ctx *c, const SafeTensors *io, const char *name);
/* Compares n floats with fixture tensor `name` (max error relative to the tensor's largest
 * magnitude); a failed check beyond tol. Returns the error (INFINITY when nothing to compare). */
double nn_check_close(const char *label, const float *got, int64_t n, const SafeTensors *io, const char *name,
                      double tol);

/* Alternative name of a parameter in another layout (the third column of a listing). */
typedef bool (*NnAltNameFn)(const void *user, const char *name, char *out);
/* Checks every (name, file shape[, alt name]) line of the listing file list_rel (written by a
 * tests/ref script: "name d0,d1,... [alt]" lines then "total N numel") against the store, in
 * order. alt may be NULL (then a third column is ignored). */
void nn_check_listing(ParamStore *s, const char *list_rel, NnAltNameFn alt, const void *user);

/* Every parameter of a unit has the unit's name as prefix and no unit is empty; returns the
 * number of units whose name contains `pattern` followed by an index and nothing more. */
int nn_count_units(ParamStore *s, const char *pattern);

#endif
