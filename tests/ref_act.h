/* tests/ref_act: float64 reference activations (independent naive loops) for check_op. */
#ifndef ADDC_TESTS_REF_ACT_H
#define ADDC_TESTS_REF_ACT_H

#include <stdint.h>

typedef enum {
    REF_ACT_SILU,
    REF_ACT_GELU_ERF,
    REF_ACT_GELU_TANH,
    REF_ACT_LEAKY_RELU, /* p = slope */
    REF_ACT_RELU,
    REF_ACT_HINGE /* p = sign */
} RefActKind;

/* y[i] = f(x[i]) for i < n */
void ref_act(RefActKind k, double p, const double *x, double *y, int64_t n);
/* x (rows, 2D) = [h | gate] -> y (rows, D) = h * gelu_erf(gate) */
void ref_geglu(const double *x, double *y, int64_t rows, int64_t d);

#endif
