/* tests/ref_act: f64 references for the activations (see ref_act.h). */
#include "tests/ref_act.h"

#include <math.h>

static double ref_act_one(RefActKind k, double p, double x) {
    switch (k) {
    case REF_ACT_SILU: return x / (1.0 + exp(-x));
    case REF_ACT_GELU_ERF: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case REF_ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case REF_ACT_LEAKY_RELU: return x > 0 ? x : p * x;
    case REF_ACT_RELU: return x > 0 ? x : 0.0;
    default: return fmax(0.0, 1.0 + p * x);
    }
}

void ref_act(RefActKind k, double p, const double *x, double *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ref_act_one(k, p, x[i]);
}

void ref_geglu(const double *x, double *y, int64_t rows, int64_t d) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < d; k++)
            y[r * d + k] = x[r * 2 * d + k] * ref_act_one(REF_ACT_GELU_ERF, 0, x[r * 2 * d + d + k]);
}
