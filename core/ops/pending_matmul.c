/* PENDING (development placeholder, removed when core/ops/matmul.c lands) */
#include "core/ops/cpu_impls.h"
const OpImpl cpu_op_matmul = {0};
const OpImpl cpu_op_linear = {0};
