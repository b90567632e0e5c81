/* tests/ref_norm: naive float64 normalisations (two-pass mean, then biased variance). */
#include "tests/ref_norm.h"

#include <math.h>

void ref_group_norm(const double *x, const double *gamma, const double *beta, double *y, int64_t B, int64_t P,
                    int64_t C, int64_t groups, double eps) {
    int64_t cg = C / groups;
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < groups; g++) {
            double mean = 0, var = 0;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) mean += x[(b * P + p) * C + c];
            mean /= (double)(P * cg);
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                    double d = x[(b * P + p) * C + c] - mean;
                    var += d * d;
                }
            var /= (double)(P * cg);
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                    int64_t i = (b * P + p) * C + c;
                    double t = (x[i] - mean) / sqrt(var + eps);
                    y[i] = t * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0);
                }
        }
}

void ref_group_norm_silu(const double *x, const double *gamma, const double *beta, double *y, int64_t B, int64_t P,
                         int64_t C, int64_t groups, double eps) {
    ref_group_norm(x, gamma, beta, y, B, P, C, groups, eps);
    for (int64_t i = 0; i < B * P * C; i++) y[i] = y[i] / (1.0 + exp(-y[i]));
}

void ref_group_norm_backward(const double *x, const double *gamma, const double *dy, double *dx, double *dgamma,
                             double *dbeta, int64_t B, int64_t P, int64_t C, int64_t groups, double eps) {
    int64_t cg = C / groups;
    double cnt = (double)(P * cg);
    if (dgamma)
        for (int64_t c = 0; c < C; c++) dgamma[c] = 0;
    if (dbeta)
        for (int64_t c = 0; c < C; c++) dbeta[c] = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t g = 0; g < groups; g++) {
            double mean = 0, var = 0, m1 = 0, m2 = 0;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) mean += x[(b * P + p) * C + c];
            mean /= cnt;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                    double d = x[(b * P + p) * C + c] - mean;
                    var += d * d;
                }
            double rstd = 1.0 / sqrt(var / cnt + eps);
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                    int64_t i = (b * P + p) * C + c;
                    double xh = (x[i] - mean) * rstd, dxh = dy[i] * (gamma ? gamma[c] : 1.0);
                    m1 += dxh;
                    m2 += dxh * xh;
                    if (dgamma) dgamma[c] += dy[i] * xh;
                    if (dbeta) dbeta[c] += dy[i];
                }
            m1 /= cnt;
            m2 /= cnt;
            for (int64_t p = 0; p < P; p++)
                for (int64_t c = g * cg; c < (g + 1) * cg; c++) {
                    int64_t i = (b * P + p) * C + c;
                    double xh = (x[i] - mean) * rstd, dxh = dy[i] * (gamma ? gamma[c] : 1.0);
                    dx[i] = rstd * (dxh - m1 - xh * m2);
                }
        }
}

void ref_layer_norm(const double *x, const double *gamma, const double *beta, double *y, int64_t rows, int64_t D,
                    double eps) {
    ref_group_norm(x, gamma, beta, y, rows, 1, D, 1, eps);
}

void ref_batch_norm_local(const double *x, const double *gamma, const double *beta, double *y, int64_t B,
                          int64_t N, int64_t C, int64_t virtual_bs, double eps) {
    int64_t G = (B + virtual_bs - 1) / virtual_bs, bg = B / G;
    for (int64_t g = 0; g < G; g++)
        for (int64_t c = 0; c < C; c++) {
            double mean = 0, var = 0;
            for (int64_t b = g * bg; b < (g + 1) * bg; b++)
                for (int64_t t = 0; t < N; t++) mean += x[(b * N + t) * C + c];
            mean /= (double)(bg * N);
            for (int64_t b = g * bg; b < (g + 1) * bg; b++)
                for (int64_t t = 0; t < N; t++) {
                    double d = x[(b * N + t) * C + c] - mean;
                    var += d * d;
                }
            var /= (double)(bg * N);
            for (int64_t b = g * bg; b < (g + 1) * bg; b++)
                for (int64_t t = 0; t < N; t++) {
                    int64_t i = (b * N + t) * C + c;
                    y[i] = (x[i] - mean) / sqrt(var + eps) * (gamma ? gamma[c] : 1.0) + (beta ? beta[c] : 0.0);
                }
        }
}
