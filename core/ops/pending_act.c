/* PENDING (development placeholder, removed when core/ops/act.c lands) */
#include "core/ops/cpu_impls.h"
const OpImpl cpu_op_silu = {0};
const OpImpl cpu_op_gelu = {0};
const OpImpl cpu_op_geglu = {0};
const OpImpl cpu_op_leaky_relu = {0};
const OpImpl cpu_op_relu = {0};
const OpImpl cpu_op_hinge = {0};
