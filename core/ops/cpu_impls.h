/* core/ops/cpu_impls: the CPU kernel tables each op family file defines (internal). */
#ifndef ADDC_CORE_OPS_CPU_IMPLS_H
#define ADDC_CORE_OPS_CPU_IMPLS_H

#include "core/ops.h"

extern const OpImpl cpu_op_add;
extern const OpImpl cpu_op_sub;
extern const OpImpl cpu_op_mul;
extern const OpImpl cpu_op_div;
extern const OpImpl cpu_op_scale;
extern const OpImpl cpu_op_rsqrt;
extern const OpImpl cpu_op_cast;
extern const OpImpl cpu_op_sum_to;
extern const OpImpl cpu_op_broadcast_to;
extern const OpImpl cpu_op_sum;
extern const OpImpl cpu_op_mean;
extern const OpImpl cpu_op_mean_square;
extern const OpImpl cpu_op_reshape;
extern const OpImpl cpu_op_silu;
extern const OpImpl cpu_op_gelu;
extern const OpImpl cpu_op_geglu;
extern const OpImpl cpu_op_leaky_relu;
extern const OpImpl cpu_op_relu;
extern const OpImpl cpu_op_hinge;
extern const OpImpl cpu_op_matmul;
extern const OpImpl cpu_op_linear;
extern const OpImpl cpu_op_conv2d;
extern const OpImpl cpu_op_conv1d;
extern const OpImpl cpu_op_conv1d_t;
extern const OpImpl cpu_op_group_norm;
extern const OpImpl cpu_op_layer_norm;
extern const OpImpl cpu_op_batch_norm_local;
extern const OpImpl cpu_op_softmax;
extern const OpImpl cpu_op_attention;
extern const OpImpl cpu_op_concat;
extern const OpImpl cpu_op_slice;
extern const OpImpl cpu_op_permute;
extern const OpImpl cpu_op_upsample_nearest2x;
extern const OpImpl cpu_op_resize_area;
extern const OpImpl cpu_op_resize_bicubic;
extern const OpImpl cpu_op_timestep_embedding;
extern const OpImpl cpu_op_embedding;
extern const OpImpl cpu_op_spectral_norm;
extern const OpImpl cpu_op_cross_entropy;

#endif
