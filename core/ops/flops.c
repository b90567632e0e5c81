/* core/ops/flops: forward FLOPs of a node, 2 x multiply-adds, for `addc inspect`. Only the
 * ops whose cost grows with a product of dimensions count (matmul, linear, convolutions,
 * attention); elementwise, norm and reduction ops count 0, as FLOP tables usually do. */
#include "core/ops.h"

double op_node_flops(const Node *n) {
    const Tensor *y = &n->out->v;
    double out = (double)tensor_numel(y);
    switch (n->op) {
    case OP_MATMUL: {
        const Tensor *a = &n->in[0]->v;
        double k = (double)(n->ip[0] ? a->shape[a->ndim - 2] : a->shape[a->ndim - 1]);
        return 2.0 * out * k;
    }
    case OP_LINEAR: return 2.0 * out * (double)n->in[1]->v.shape[1];
    case OP_CONV2D: {
        const Tensor *w = &n->in[1]->v; /* (Cout, KH, KW, Cin) */
        return 2.0 * out * (double)(w->shape[1] * w->shape[2] * w->shape[3]);
    }
    case OP_CONV1D: {
        const Tensor *w = &n->in[1]->v; /* (Cout, K, Cin) */
        return 2.0 * out * (double)(w->shape[1] * w->shape[2]);
    }
    case OP_CONV1D_T: {
        const Tensor *w = &n->in[1]->v;
        return 2.0 * out * (double)(w->shape[1] * w->shape[0]);
    }
    case OP_ATTENTION: {
        const Tensor *q = &n->in[0]->v, *k = &n->in[1]->v; /* (B, Nq, NH*Dh), (B, Nk, NH*Dh) */
        double b = (double)q->shape[0], nq = (double)q->shape[1], nk = (double)k->shape[1];
        double dqk = (double)q->shape[2], dv = (double)y->shape[2]; /* summed over heads */
        return 2.0 * b * nq * nk * (dqk + dv);
    }
    default: return 0.0;
    }
}
