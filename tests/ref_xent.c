/* tests/ref_xent: f64 reference for the softmax cross-entropy (see ref_xent.h). */
#include "tests/ref_xent.h"

#include <math.h>

static double row_lse(const double *x, int64_t K) {
    double m = x[0], s = 0.0;
    for (int64_t k = 1; k < K; k++) m = fmax(m, x[k]);
    for (int64_t k = 0; k < K; k++) s += exp(x[k] - m);
    return m + log(s);
}

double ref_cross_entropy(const double *logits, int64_t B, int64_t K, const int32_t *labels) {
    double sum = 0.0;
    for (int64_t b = 0; b < B; b++) sum += row_lse(logits + b * K, K) - logits[b * K + labels[b]];
    return sum / (double)B;
}

void ref_cross_entropy_grad(const double *logits, int64_t B, int64_t K, const int32_t *labels, double *grad) {
    for (int64_t b = 0; b < B; b++) {
        const double *x = logits + b * K;
        double lse = row_lse(x, K);
        for (int64_t k = 0; k < K; k++)
            grad[b * K + k] = (exp(x[k] - lse) - (k == labels[b] ? 1.0 : 0.0)) / (double)B;
    }
}
