/* tests/ref_norm: float64 reference implementations (naive loops) of group norm (plain and
 * followed by a SiLU), layer norm and StyleGAN-T BatchNormLocal, for check_op. Channels last;
 * gamma/beta may be NULL. */
#ifndef ADDC_TESTS_REF_NORM_H
#define ADDC_TESTS_REF_NORM_H

#include <stdint.h>

/* x (B, P, C): P positions; statistics per (b, group) over P x C/groups values */
void ref_group_norm(const double *x, const double *gamma, const double *beta, double *y, int64_t B, int64_t P,
                    int64_t C, int64_t groups, double eps);
/* silu(ref_group_norm(x)): y = z / (1 + exp(-z)) on the normalised z */
void ref_group_norm_silu(const double *x, const double *gamma, const double *beta, double *y, int64_t B, int64_t P,
                         int64_t C, int64_t groups, double eps);
/* The analytic gradient of ref_group_norm for upstream dy: dx = rstd * (dxhat - mean(dxhat)
 * - xhat * mean(dxhat * xhat)) with dxhat = dy * gamma; dgamma, dbeta (C) may be NULL. */
void ref_group_norm_backward(const double *x, const double *gamma, const double *dy, double *dx, double *dgamma,
                             double *dbeta, int64_t B, int64_t P, int64_t C, int64_t groups, double eps);
/* x (rows, D): statistics per row */
void ref_layer_norm(const double *x, const double *gamma, const double *beta, double *y, int64_t rows, int64_t D,
                    double eps);
/* x (B, N, C): G = ceil(B / virtual_bs) groups of B/G consecutive samples; statistics per
 * (group, channel) over the group's samples and all N tokens */
void ref_batch_norm_local(const double *x, const double *gamma, const double *beta, double *y, int64_t B,
                          int64_t N, int64_t C, int64_t virtual_bs, double eps);

#endif
