/* tests/ref_spectral: f64 references for spectral norm and AdamW (see ref_spectral.h). */
#include "tests/ref_spectral.h"

#include <math.h>

static void normalize(double *x, int64_t n, double eps) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
    double d = fmax(sqrt(s), eps);
    for (int64_t i = 0; i < n; i++) x[i] /= d;
}

void ref_power_iteration(const double *w, int64_t rows, int64_t cols, double *u, double *v, int n_iter,
                         double eps) {
    for (int it = 0; it < n_iter; it++) {
        for (int64_t k = 0; k < cols; k++) {
            double s = 0;
            for (int64_t r = 0; r < rows; r++) s += w[r * cols + k] * u[r];
            v[k] = s;
        }
        normalize(v, cols, eps);
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t k = 0; k < cols; k++) s += w[r * cols + k] * v[k];
            u[r] = s;
        }
        normalize(u, rows, eps);
    }
}

double ref_spectral_sigma(const double *w, int64_t rows, int64_t cols, const double *u, const double *v) {
    double sigma = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < cols; k++) sigma += u[r] * w[r * cols + k] * v[k];
    return sigma;
}

void ref_spectral_norm(const double *w, int64_t rows, int64_t cols, const double *u, const double *v, double *out) {
    double sigma = ref_spectral_sigma(w, rows, cols, u, v);
    for (int64_t i = 0; i < rows * cols; i++) out[i] = w[i] / sigma;
}

void ref_spectral_norm_grad(const double *w, int64_t rows, int64_t cols, const double *u, const double *v,
                            const double *dy, double *dw) {
    double sigma = ref_spectral_sigma(w, rows, cols, u, v), s = 0;
    for (int64_t i = 0; i < rows * cols; i++) s += dy[i] * w[i];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < cols; k++)
            dw[r * cols + k] = dy[r * cols + k] / sigma - s / (sigma * sigma) * u[r] * v[k];
}

void ref_adamw_step(double *p, const double *g, double *m, double *v, int64_t n, double lr, double beta1,
                    double beta2, double eps, double wd, int64_t step) {
    double bc1 = 1 - pow(beta1, (double)step), bc2 = 1 - pow(beta2, (double)step);
    for (int64_t i = 0; i < n; i++) {
        p[i] -= lr * wd * p[i];
        m[i] = beta1 * m[i] + (1 - beta1) * g[i];
        v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i];
        p[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
    }
}
