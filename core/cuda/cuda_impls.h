/* core/cuda/cuda_impls: the CUDA kernel tables of each op family (the .cu files of core/cuda, extern "C"), gathered
 * into backend_cuda by core/ops/op_table.c when addc is built with CUDA (internal). */
#ifndef ADDC_CORE_CUDA_CUDA_IMPLS_H
#define ADDC_CORE_CUDA_CUDA_IMPLS_H

#include "core/ops.h"

extern const OpImpl cuda_op_add;
extern const OpImpl cuda_op_sub;
extern const OpImpl cuda_op_mul;
extern const OpImpl cuda_op_div;
extern const OpImpl cuda_op_scale;
extern const OpImpl cuda_op_rsqrt;
extern const OpImpl cuda_op_cast;
extern const OpImpl cuda_op_sum_to;
extern const OpImpl cuda_op_broadcast_to;
extern const OpImpl cuda_op_sum;
extern const OpImpl cuda_op_mean;
extern const OpImpl cuda_op_mean_square;
extern const OpImpl cuda_op_reshape;
extern const OpImpl cuda_op_silu;
extern const OpImpl cuda_op_gelu;
extern const OpImpl cuda_op_geglu;
extern const OpImpl cuda_op_leaky_relu;
extern const OpImpl cuda_op_relu;
extern const OpImpl cuda_op_hinge;
extern const OpImpl cuda_op_matmul;
extern const OpImpl cuda_op_linear;
extern const OpImpl cuda_op_conv2d;
extern const OpImpl cuda_op_conv1d;
extern const OpImpl cuda_op_conv1d_t;
extern const OpImpl cuda_op_group_norm;
extern const OpImpl cuda_op_layer_norm;
extern const OpImpl cuda_op_batch_norm_local;
extern const OpImpl cuda_op_softmax;
extern const OpImpl cuda_op_attention;
extern const OpImpl cuda_op_concat;
extern const OpImpl cuda_op_slice;
extern const OpImpl cuda_op_permute;
extern const OpImpl cuda_op_upsample_nearest2x;
extern const OpImpl cuda_op_resize_area;
extern const OpImpl cuda_op_resize_bicubic;
extern const OpImpl cuda_op_timestep_embedding;
extern const OpImpl cuda_op_embedding;
extern const OpImpl cuda_op_spectral_norm;
extern const OpImpl cuda_op_cross_entropy;

#endif
