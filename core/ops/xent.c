/* core/ops/xent: softmax cross-entropy of class logits against integer labels, the loss of the
 * classifiers addc trains (the discriminator's feature network, the evaluation network).
 *
 * Forward: logits (B, K), labels (B) in [0, K) -> the scalar mean over rows of
 * -log softmax(logits)[b, label_b] = lse_b - logits[b, label_b], with the max-subtracted
 * log-sum-exp lse_b = m_b + log(sum_k exp(logits[b, k] - m_b)) summed in double: finite for any
 * finite logits (1e4 and beyond). The labels are checked and copied into the node (an i32 Var
 * that is its second input, never differentiated; on CUDA a device copy, queued from a host copy
 * in the step arena). The forward saves per row (m_b, log s_b) (B, 2) so that backward
 * recomputes softmax = exp(logits - m_b - log s_b) without a second pass over the sums.
 *
 * Gradient rule: ACCUMULATES (+=) into the logits gradient
 *     dlogits[b, k] += g / B * (softmax(logits)[b, k] - [k == label_b])
 * where g is the upstream gradient of the scalar. Labels get none. Rows are independent, one
 * thread owns a row, so results do not depend on the thread count. No create-graph backward. */
#include <math.h>
#include <string.h>

#include "core/cuda.h"
#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

typedef struct {
    const float *x;       /* (B, K) logits */
    const int32_t *label; /* (B) */
    float *stats;         /* (B, 2): row max, log of the shifted sum */
    double *loss;         /* forward: (B) per-row loss */
    float *gx;            /* backward: (B, K) logits gradient, += */
    float scale;          /* backward: g / B */
    int64_t k;
} XentJob;

static void xent_fwd_rows(void *ctx, int64_t b0, int64_t b1) {
    const XentJob *j = ctx;
    for (int64_t b = b0; b < b1; b++) {
        const float *x = j->x + b * j->k;
        float m = x[0];
        for (int64_t i = 1; i < j->k; i++) m = x[i] > m ? x[i] : m;
        double s = 0.0;
        for (int64_t i = 0; i < j->k; i++) s += exp((double)x[i] - (double)m);
        double ls = log(s); /* s >= 1: the max term contributes exp(0) */
        j->stats[2 * b] = m;
        j->stats[2 * b + 1] = (float)ls;
        j->loss[b] = (double)m + ls - (double)x[j->label[b]];
    }
}

static Status xent_fwd(Ctx *c, Node *n) {
    const Tensor *x = &n->in[0]->v;
    int64_t B = x->shape[0], two[2] = {B, 2};
    /* the statistics are saved for backward when the node is recorded, else they are scratch */
    if (n->save) {
        n->saved[0] = ctx_tensor(c, DTYPE_F32, 2, two);
        if (!n->saved[0].data) return addc_error_status();
    }
    ArenaMark mark = arena_mark(c->arena);
    float *st = n->save ? n->saved[0].data : ctx_alloc(c, 2 * B * (int64_t)sizeof(float));
    double *loss = ctx_alloc(c, B * (int64_t)sizeof(double));
    if (!loss || !st) return addc_error_status();
    XentJob j = {x->data, n->in[1]->v.data, st, loss, NULL, 0.0f, x->shape[1]};
    parallel_for(B, j.k >= 1024 ? 1 : 1024 / j.k, xent_fwd_rows, &j);
    double sum = 0.0;
    for (int64_t b = 0; b < B; b++) sum += loss[b];
    ((float *)n->out->v.data)[0] = (float)(sum / (double)B);
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

static void xent_bwd_rows(void *ctx, int64_t b0, int64_t b1) {
    const XentJob *j = ctx;
    for (int64_t b = b0; b < b1; b++) {
        const float *x = j->x + b * j->k;
        float *g = j->gx + b * j->k;
        double m = j->stats[2 * b], ls = j->stats[2 * b + 1];
        for (int64_t i = 0; i < j->k; i++) {
            double p = exp((double)x[i] - m - ls);
            g[i] += (float)((double)j->scale * (p - (i == j->label[b] ? 1.0 : 0.0)));
        }
    }
}

static Status xent_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    int64_t B = x->shape[0];
    float g = ((const float *)n->out->g.data)[0];
    XentJob j = {x->data, n->in[1]->v.data, n->saved[0].data, NULL, gx, (float)((double)g / (double)B), x->shape[1]};
    parallel_for(B, j.k >= 1024 ? 1 : 1024 / j.k, xent_bwd_rows, &j);
    return ADDC_OK;
}

Var *op_cross_entropy(Ctx *c, Var *logits, const int32_t *labels) {
    OPS_NULL_GUARD1(logits);
    if (!ops_require_float("cross_entropy", "logits", logits)) return NULL;
    char s[96];
    const Tensor *x = &logits->v;
    if (x->ndim != 2 || x->shape[0] < 1 || x->shape[1] < 1)
        return ops_fail("cross_entropy", "logits must be (B, K) with B, K >= 1, got %s", ops_shape_str(x, s, sizeof s));
    if (!labels) return ops_fail("cross_entropy", "no labels given for the %lld rows", (long long)x->shape[0]);
    int64_t B = x->shape[0], K = x->shape[1];
    for (int64_t b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= K)
            return ops_fail("cross_entropy", "label %d of row %lld is outside the %lld classes (labels must lie in 0..%lld)",
                            (int)labels[b], (long long)b, (long long)K, (long long)K - 1);
    Tensor lt = tensor_make(NULL, DTYPE_I32, x->device, 1, &B);
    if (x->device != DEVICE_META) {
        int32_t *host = ctx_alloc(c, B * (int64_t)sizeof(int32_t));
        if (!host) return NULL;
        memcpy(host, labels, (size_t)B * sizeof(int32_t));
        lt.data = host;
        if (x->device == DEVICE_CUDA) {
            /* the copy is queued on the compute stream; its source, in the step arena, outlives it */
            lt.data = ctx_dev_alloc(c, B * (int64_t)sizeof(int32_t));
            if (!lt.data || cuda_copy_to_device(lt.data, host, (size_t)B * sizeof(int32_t)) != ADDC_OK) return NULL;
        }
    }
    Var *in[2] = {logits, var_leaf(c, lt, false)};
    if (!in[1]) return NULL;
    Node n = node_make(OP_CROSS_ENTROPY, 2, in);
    return op_exec(c, &n, DTYPE_F32, 0, NULL);
}

const OpImpl cpu_op_cross_entropy = {xent_fwd, xent_bwd, NULL};
