/* tests/ref_xent: float64 reference for the softmax cross-entropy (core/ops/xent.c), an
 * independent naive loop for check_op and the fixture tests. */
#ifndef ADDC_TESTS_REF_XENT_H
#define ADDC_TESTS_REF_XENT_H

#include <stdint.h>

/* mean over b < B of log(sum_k exp(logits[b, k])) - logits[b, labels[b]], the log-sum-exp
 * shifted by the row max; logits (B, K) row-major. Returns the loss. */
double ref_cross_entropy(const double *logits, int64_t B, int64_t K, const int32_t *labels);
/* d loss / d logits (B, K) = (softmax - onehot) / B, written (not accumulated) */
void ref_cross_entropy_grad(const double *logits, int64_t B, int64_t K, const int32_t *labels, double *grad);

#endif
