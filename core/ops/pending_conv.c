/* PENDING (development placeholder, removed when core/ops/conv.c lands) */
#include "core/ops/cpu_impls.h"
const OpImpl cpu_op_conv2d = {0};
const OpImpl cpu_op_conv1d = {0};
const OpImpl cpu_op_conv1d_t = {0};
