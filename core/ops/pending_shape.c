/* PENDING (development placeholder, removed when core/ops/shape.c lands) */
#include "core/ops/cpu_impls.h"
const OpImpl cpu_op_concat = {0};
const OpImpl cpu_op_slice = {0};
const OpImpl cpu_op_permute = {0};
const OpImpl cpu_op_upsample_nearest2x = {0};
const OpImpl cpu_op_resize_area = {0};
const OpImpl cpu_op_resize_bicubic = {0};
