/* core/ops/view: reshape, a view with another shape over the same elements.
 *
 * The output aliases the input's storage (no copy) and inherits its VarHome (FSDP); on the
 * tape the node's backward adds the output gradient, read under the input's shape, into the
 * input gradient (+=). */
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

static Status reshape_fwd(Ctx *c, Node *n) {
    (void)c;
    (void)n; /* op_reshape points the output at the input's storage */
    return ADDC_OK;
}

static Status reshape_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const float *dy = n->out->g.data;
    for (int64_t i = 0, m = tensor_numel(&n->out->v); i < m; i++) gx[i] += dy[i];
    return ADDC_OK;
}

static Status reshape_bwd_graph(Ctx *c, Node *n) {
    if (!ops_in_wants_gv(n, 0)) return ADDC_OK;
    Var *x = n->in[0];
    return var_accum_gv(c, x, op_reshape(c, n->out->gv, x->v.ndim, x->v.shape));
}

Var *op_reshape(Ctx *c, Var *x, int32_t ndim, const int64_t *shape) {
    OPS_NULL_GUARD1(x);
    Tensor t = tensor_make(NULL, x->v.dtype, DEVICE_META, ndim, shape);
    if (tensor_numel(&t) != tensor_numel(&x->v)) {
        char a[96], b[96];
        return ops_fail("reshape", "cannot view %s as %s", ops_shape_str(&x->v, a, sizeof a),
                        ops_shape_str(&t, b, sizeof b));
    }
    if (tensor_same_shape(&t, &x->v)) return x;
    /* run on the meta device so op_exec allocates no storage, then alias x's */
    Node n = node_make(OP_RESHAPE, 1, &x);
    Var xm = *x;
    xm.v.device = DEVICE_META;
    Var *inm = &xm;
    n.in[0] = inm;
    Var *y = op_exec(c, &n, x->v.dtype, ndim, shape);
    if (!y) return NULL;
    y->v.device = x->v.device;
    y->v.data = x->v.data;
    y->g.device = x->v.device;
    y->home = x->home; /* a view of a sharded parameter is read through its unit */
    if (y->tape) y->tape->nodes[y->node].in[0] = x; /* record the real input */
    return y;
}

const OpImpl cpu_op_reshape = {reshape_fwd, reshape_bwd, reshape_bwd_graph};
