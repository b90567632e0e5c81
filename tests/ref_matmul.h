/* tests/ref_matmul: float64 reference implementations (naive loops) of matmul and linear,
 * for check_op. */
#ifndef ADDC_TESTS_REF_MATMUL_H
#define ADDC_TESTS_REF_MATMUL_H

#include <stdbool.h>
#include <stdint.h>

/* c = op(a) @ op(b) with numpy broadcasting of the batch dims: a has na batch dims sa[0..na)
 * before its matrix, b nb dims sb[0..nb); c (broadcast batch, M, N). op(a) is (M, K): a is
 * stored (M, K), or (K, M) when ta; op(b) is (K, N), stored (K, N) or (N, K) when tb. */
void ref_matmul(const double *a, int na, const int64_t *sa, const double *b, int nb, const int64_t *sb, double *c,
                int64_t M, int64_t N, int64_t K, bool ta, bool tb);
/* y (rows, Dout) = x (rows, Din) w^T + bias; w (Dout, Din), bias (Dout) or NULL */
void ref_linear(const double *x, const double *w, const double *bias, double *y, int64_t rows, int64_t Din,
                int64_t Dout);

#endif
