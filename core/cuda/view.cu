// core/cuda/view: the CUDA kernels of core/ops/view.c: reshape.
//
// op_reshape aliases the input's storage and runs its node on the meta device, so the forward
// kernel has nothing to do (any dtype). Gradient rule: the output gradient, read under the
// input's shape (the same f32 elements in the same order), is ACCUMULATED (+=) into the input
// gradient, one element per thread (cuda_axpy_f32).
#include "core/cuda/cuda_internal.cuh"

extern "C" {
#include "core/cuda/cuda_impls.h"
}

static Status reshape_fwd(Ctx *c, Node *n) {
    (void)c;
    (void)n; /* op_reshape points the output at the input's storage */
    return ADDC_OK;
}

static Status reshape_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    return cuda_axpy_f32(gx, (const float *)n->out->g.data, tensor_numel(&n->out->v), 1.0f);
}

extern "C" const OpImpl cuda_op_reshape = {reshape_fwd, reshape_bwd, NULL};
