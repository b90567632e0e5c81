/* PENDING (development placeholder, removed when core/ops/attention.c lands) */
#include "core/ops/cpu_impls.h"
const OpImpl cpu_op_softmax = {0};
const OpImpl cpu_op_attention = {0};
