/* tests/ref_attention: float64 reference softmax and multi-head attention (naive loops over
 * the full score row), for check_op and the sampled-row memory test. */
#ifndef ADDC_TESTS_REF_ATTENTION_H
#define ADDC_TESTS_REF_ATTENTION_H

#include <stdbool.h>
#include <stdint.h>

/* x (rows, D) -> y, softmax over each row */
void ref_softmax(const double *x, double *y, int64_t rows, int64_t D);

typedef struct RefAttnShape {
    int64_t B, Nq, Nk, NH, Dh, Dv;
    double scale; /* <= 0: 1/sqrt(Dh) */
    bool causal;
} RefAttnShape;

/* q (B, Nq, NH*Dh), k (B, Nk, NH*Dh), v (B, Nk, NH*Dv) -> out (B, Nq, NH*Dv) */
void ref_attention(const RefAttnShape *s, const double *q, const double *k, const double *v, double *out);
/* Analytic gradients of ref_attention for upstream dout (B, Nq, NH*Dv): P recomputed per
 * row, dP = dO V^T, dS = P (dP - rowsum(dO O)), dq = scale dS K, dk = scale dS^T Q,
 * dv = P^T dO; dq, dk, dv are overwritten (any may be NULL). */
void ref_attention_backward(const RefAttnShape *s, const double *q, const double *k, const double *v,
                            const double *dout, double *dq, double *dk, double *dv);
/* One output row of ref_attention: query i of batch b, all heads -> out (NH*Dv). */
void ref_attention_row(const RefAttnShape *s, const double *q, const double *k, const double *v, int64_t b,
                       int64_t i, double *out);

#endif
