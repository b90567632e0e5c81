/* tests/ref_conv: float64 reference implementations (direct loops over output positions and
 * taps) of conv2d, conv1d and its transpose, for check_op. */
#ifndef ADDC_TESTS_REF_CONV_H
#define ADDC_TESTS_REF_CONV_H

#include <stdbool.h>
#include <stdint.h>

/* x (B, H, W, Cin), w (Cout, KH, KW, Cin), bias (Cout) or NULL -> y (B, OH, OW, Cout) with
 * OH = (H + 2 pad - KH) / stride + 1 (likewise OW); zero padding. */
void ref_conv2d(const double *x, const double *w, const double *bias, double *y, int64_t B, int64_t H,
                int64_t W, int64_t Cin, int64_t Cout, int64_t KH, int64_t KW, int64_t stride, int64_t pad);
/* x (B, N, Cin), w (Cout, K, Cin), K odd, "same" padding K/2, zeros or circular (PyTorch
 * padding_mode='circular'), bias (Cout) or NULL -> y (B, N, Cout) */
void ref_conv1d(const double *x, const double *w, const double *bias, double *y, int64_t B, int64_t N,
                int64_t Cin, int64_t Cout, int64_t K, bool circular);
/* the adjoint of ref_conv1d without bias: y (B, N, Cout) -> x (B, N, Cin), by scattering */
void ref_conv1d_t(const double *y, const double *w, double *x, int64_t B, int64_t N, int64_t Cin, int64_t Cout,
                  int64_t K, bool circular);

#endif
