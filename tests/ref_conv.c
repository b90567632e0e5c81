/* tests/ref_conv: f64 references for conv2d, conv1d and conv1d_t (see ref_conv.h). */
#include "tests/ref_conv.h"

#include <string.h>

void ref_conv2d(const double *x, const double *w, const double *bias, double *y, int64_t B, int64_t H,
                int64_t W, int64_t Cin, int64_t Cout, int64_t KH, int64_t KW, int64_t stride, int64_t pad) {
    int64_t OH = (H + 2 * pad - KH) / stride + 1, OW = (W + 2 * pad - KW) / stride + 1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++)
                for (int64_t o = 0; o < Cout; o++) {
                    double s = bias ? bias[o] : 0.0;
                    for (int64_t kh = 0; kh < KH; kh++) {
                        int64_t ih = oh * stride + kh - pad;
                        if (ih < 0 || ih >= H) continue;
                        for (int64_t kw = 0; kw < KW; kw++) {
                            int64_t iw = ow * stride + kw - pad;
                            if (iw < 0 || iw >= W) continue;
                            const double *xv = x + ((b * H + ih) * W + iw) * Cin;
                            const double *wv = w + ((o * KH + kh) * KW + kw) * Cin;
                            for (int64_t i = 0; i < Cin; i++) s += xv[i] * wv[i];
                        }
                    }
                    y[((b * OH + oh) * OW + ow) * Cout + o] = s;
                }
}

/* source position of n + k - K/2, or -1 outside (zero padding) */
static int64_t src_pos(int64_t n, int64_t k, int64_t K, int64_t N, bool circular) {
    int64_t m = n + k - K / 2;
    if (circular) return ((m % N) + N) % N;
    return m < 0 || m >= N ? -1 : m;
}

void ref_conv1d(const double *x, const double *w, const double *bias, double *y, int64_t B, int64_t N,
                int64_t Cin, int64_t Cout, int64_t K, bool circular) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < Cout; o++) {
                double s = bias ? bias[o] : 0.0;
                for (int64_t k = 0; k < K; k++) {
                    int64_t m = src_pos(n, k, K, N, circular);
                    if (m < 0) continue;
                    for (int64_t i = 0; i < Cin; i++) s += x[(b * N + m) * Cin + i] * w[(o * K + k) * Cin + i];
                }
                y[(b * N + n) * Cout + o] = s;
            }
}

void ref_conv1d_t(const double *y, const double *w, double *x, int64_t B, int64_t N, int64_t Cin, int64_t Cout,
                  int64_t K, bool circular) {
    memset(x, 0, (size_t)(B * N * Cin) * sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) {
                int64_t m = src_pos(n, k, K, N, circular);
                if (m < 0) continue;
                for (int64_t o = 0; o < Cout; o++) {
                    double g = y[(b * N + n) * Cout + o];
                    for (int64_t i = 0; i < Cin; i++) x[(b * N + m) * Cin + i] += g * w[(o * K + k) * Cin + i];
                }
            }
}
