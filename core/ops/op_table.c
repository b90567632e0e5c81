/* core/ops/op_table: the op name table, in enum order, checked at compile time for its
 * length and by tests/unit/test_op_table.c for its order; the CPU backend's kernel table, and the
 * CUDA backend's when addc is built with CUDA. */
#include <pthread.h>

#include "core/ops.h"
#include "core/cuda.h"
#include "core/cuda/cuda_impls.h"
#include "core/ops/cpu_impls.h"

const OpInfo op_info[OP_COUNT] = {
    {OP_CHECKPOINT, "checkpoint", OPF_NONE},
    {OP_ADD, "add", OPF_GRAPH},
    {OP_SUB, "sub", OPF_GRAPH},
    {OP_MUL, "mul", OPF_GRAPH},
    {OP_DIV, "div", OPF_GRAPH},
    {OP_SCALE, "scale", OPF_GRAPH},
    {OP_RSQRT, "rsqrt", OPF_NONE},
    {OP_CAST, "cast", OPF_NONE},
    {OP_SUM_TO, "sum_to", OPF_GRAPH},
    {OP_BROADCAST_TO, "broadcast_to", OPF_GRAPH},
    {OP_SUM, "sum", OPF_GRAPH},
    {OP_MEAN, "mean", OPF_GRAPH},
    {OP_MEAN_SQUARE, "mean_square", OPF_GRAPH},
    {OP_RESHAPE, "reshape", OPF_GRAPH},
    {OP_SILU, "silu", OPF_NONE},
    {OP_GELU, "gelu", OPF_NONE},
    {OP_GEGLU, "geglu", OPF_NONE},
    {OP_LEAKY_RELU, "leaky_relu", OPF_GRAPH},
    {OP_RELU, "relu", OPF_GRAPH},
    {OP_HINGE, "hinge", OPF_GRAPH},
    {OP_MATMUL, "matmul", OPF_GRAPH},
    {OP_LINEAR, "linear", OPF_GRAPH},
    {OP_CONV2D, "conv2d", OPF_NONE},
    {OP_CONV1D, "conv1d", OPF_GRAPH},
    {OP_CONV1D_T, "conv1d_t", OPF_GRAPH},
    {OP_GROUP_NORM, "group_norm", OPF_NONE},
    {OP_LAYER_NORM, "layer_norm", OPF_NONE},
    {OP_BATCH_NORM_LOCAL, "batch_norm_local", OPF_GRAPH},
    {OP_SOFTMAX, "softmax", OPF_NONE},
    {OP_ATTENTION, "attention", OPF_NONE},
    {OP_CONCAT, "concat", OPF_GRAPH},
    {OP_SLICE, "slice", OPF_GRAPH},
    {OP_PERMUTE, "permute", OPF_GRAPH},
    {OP_UPSAMPLE_NEAREST2X, "upsample_nearest2x", OPF_NONE},
    {OP_RESIZE_AREA, "resize_area", OPF_NONE},
    {OP_RESIZE_BICUBIC, "resize_bicubic", OPF_NONE},
    {OP_TIMESTEP_EMBEDDING, "timestep_embedding", OPF_NO_INPUT_GRAD},
    {OP_EMBEDDING, "embedding", OPF_NONE},
    {OP_SPECTRAL_NORM, "spectral_norm", OPF_GRAPH},
    {OP_CROSS_ENTROPY, "cross_entropy", OPF_NONE},
};
_Static_assert(sizeof(op_info) / sizeof(op_info[0]) == OP_COUNT, "op_info must list every op");

const char *op_name(int op) { return (op >= 0 && op < OP_COUNT) ? op_info[op].name : "?"; }

const Backend backend_cpu = {
    .name = "cpu",
    .device = DEVICE_CPU,
    .ops =
        {
            [OP_CHECKPOINT] = NULL, /* handled by autograd.c itself */
            [OP_ADD] = &cpu_op_add,
            [OP_SUB] = &cpu_op_sub,
            [OP_MUL] = &cpu_op_mul,
            [OP_DIV] = &cpu_op_div,
            [OP_SCALE] = &cpu_op_scale,
            [OP_RSQRT] = &cpu_op_rsqrt,
            [OP_CAST] = &cpu_op_cast,
            [OP_SUM_TO] = &cpu_op_sum_to,
            [OP_BROADCAST_TO] = &cpu_op_broadcast_to,
            [OP_SUM] = &cpu_op_sum,
            [OP_MEAN] = &cpu_op_mean,
            [OP_MEAN_SQUARE] = &cpu_op_mean_square,
            [OP_RESHAPE] = &cpu_op_reshape,
            [OP_SILU] = &cpu_op_silu,
            [OP_GELU] = &cpu_op_gelu,
            [OP_GEGLU] = &cpu_op_geglu,
            [OP_LEAKY_RELU] = &cpu_op_leaky_relu,
            [OP_RELU] = &cpu_op_relu,
            [OP_HINGE] = &cpu_op_hinge,
            [OP_MATMUL] = &cpu_op_matmul,
            [OP_LINEAR] = &cpu_op_linear,
            [OP_CONV2D] = &cpu_op_conv2d,
            [OP_CONV1D] = &cpu_op_conv1d,
            [OP_CONV1D_T] = &cpu_op_conv1d_t,
            [OP_GROUP_NORM] = &cpu_op_group_norm,
            [OP_LAYER_NORM] = &cpu_op_layer_norm,
            [OP_BATCH_NORM_LOCAL] = &cpu_op_batch_norm_local,
            [OP_SOFTMAX] = &cpu_op_softmax,
            [OP_ATTENTION] = &cpu_op_attention,
            [OP_CONCAT] = &cpu_op_concat,
            [OP_SLICE] = &cpu_op_slice,
            [OP_PERMUTE] = &cpu_op_permute,
            [OP_UPSAMPLE_NEAREST2X] = &cpu_op_upsample_nearest2x,
            [OP_RESIZE_AREA] = &cpu_op_resize_area,
            [OP_RESIZE_BICUBIC] = &cpu_op_resize_bicubic,
            [OP_TIMESTEP_EMBEDDING] = &cpu_op_timestep_embedding,
            [OP_EMBEDDING] = &cpu_op_embedding,
            [OP_SPECTRAL_NORM] = &cpu_op_spectral_norm,
            [OP_CROSS_ENTROPY] = &cpu_op_cross_entropy,
        },
};

#ifdef ADDC_HAVE_CUDA
/* The CUDA kernels (the .cu files of core/cuda). An op without an entry fails with "op X has no
 * cuda kernel". The create-graph backward of an op is built from other ops and so runs on any
 * device: the CUDA table takes it from the CPU table. */
static const OpImpl *const cuda_kernels[OP_COUNT] = {
    [OP_CHECKPOINT] = NULL, /* handled by autograd.c itself */
    [OP_ADD] = &cuda_op_add,
    [OP_SUB] = &cuda_op_sub,
    [OP_MUL] = &cuda_op_mul,
    [OP_DIV] = &cuda_op_div,
    [OP_SCALE] = &cuda_op_scale,
    [OP_RSQRT] = &cuda_op_rsqrt,
    [OP_CAST] = &cuda_op_cast,
    [OP_SUM_TO] = &cuda_op_sum_to,
    [OP_BROADCAST_TO] = &cuda_op_broadcast_to,
    [OP_SUM] = &cuda_op_sum,
    [OP_MEAN] = &cuda_op_mean,
    [OP_MEAN_SQUARE] = &cuda_op_mean_square,
    [OP_RESHAPE] = &cuda_op_reshape,
    [OP_SILU] = &cuda_op_silu,
    [OP_GELU] = &cuda_op_gelu,
    [OP_GEGLU] = &cuda_op_geglu,
    [OP_LEAKY_RELU] = &cuda_op_leaky_relu,
    [OP_RELU] = &cuda_op_relu,
    [OP_HINGE] = &cuda_op_hinge,
    [OP_TIMESTEP_EMBEDDING] = &cuda_op_timestep_embedding,
    [OP_EMBEDDING] = &cuda_op_embedding,
    [OP_CROSS_ENTROPY] = &cuda_op_cross_entropy,
    [OP_MATMUL] = &cuda_op_matmul,
    [OP_LINEAR] = &cuda_op_linear,
    [OP_CONV2D] = &cuda_op_conv2d,
    [OP_CONV1D] = &cuda_op_conv1d,
    [OP_CONV1D_T] = &cuda_op_conv1d_t,
    [OP_GROUP_NORM] = &cuda_op_group_norm,
    [OP_LAYER_NORM] = &cuda_op_layer_norm,
    [OP_BATCH_NORM_LOCAL] = &cuda_op_batch_norm_local,
    [OP_SOFTMAX] = &cuda_op_softmax,
    [OP_ATTENTION] = &cuda_op_attention,
    [OP_CONCAT] = &cuda_op_concat,
    [OP_SLICE] = &cuda_op_slice,
    [OP_PERMUTE] = &cuda_op_permute,
    [OP_UPSAMPLE_NEAREST2X] = &cuda_op_upsample_nearest2x,
    [OP_RESIZE_AREA] = &cuda_op_resize_area,
    [OP_RESIZE_BICUBIC] = &cuda_op_resize_bicubic,
    [OP_SPECTRAL_NORM] = &cuda_op_spectral_norm,
};

static OpImpl cuda_merged[OP_COUNT];
static Backend backend_cuda = {.name = "cuda", .device = DEVICE_CUDA};
static pthread_once_t backend_cuda_once = PTHREAD_ONCE_INIT;

static void backend_cuda_build(void) {
    for (int op = 0; op < OP_COUNT; op++) {
        if (!cuda_kernels[op]) continue;
        cuda_merged[op] = *cuda_kernels[op];
        cuda_merged[op].bwd_graph = backend_cpu.ops[op] ? backend_cpu.ops[op]->bwd_graph : NULL;
        backend_cuda.ops[op] = &cuda_merged[op];
    }
}
#endif

const Backend *backend_for(Device d) {
    if (d == DEVICE_CPU || d == DEVICE_META) return &backend_cpu;
#ifdef ADDC_HAVE_CUDA
    if (d == DEVICE_CUDA) {
        if (cuda_init(0) != ADDC_OK) return NULL;
        pthread_once(&backend_cuda_once, backend_cuda_build);
        return &backend_cuda;
    }
#endif
    addc_error_set(ADDC_ERR_UNSUPPORTED, "no %s backend: addc was built without CUDA (nvcc not found at configure time)",
                   device_name(d));
    return NULL;
}
