/* PENDING (development placeholder, removed when core/ops/norm.c lands) */
#include "core/ops/cpu_impls.h"
const OpImpl cpu_op_group_norm = {0};
const OpImpl cpu_op_layer_norm = {0};
const OpImpl cpu_op_batch_norm_local = {0};
