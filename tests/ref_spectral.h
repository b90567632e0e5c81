/* tests/ref_spectral: float64 references (independent naive loops) for spectral normalisation
 * and the optimizer updates. Matrices are row-major (rows, cols). */
#ifndef ADDC_TESTS_REF_SPECTRAL_H
#define ADDC_TESTS_REF_SPECTRAL_H

#include <stdint.h>

/* n_iter power iterations in place: v = normalize(W^T u), u = normalize(W v), with
 * normalize(x) = x / max(||x||, eps). */
void ref_power_iteration(const double *w, int64_t rows, int64_t cols, double *u, double *v, int n_iter,
                         double eps);
/* u . (W v) */
double ref_spectral_sigma(const double *w, int64_t rows, int64_t cols, const double *u, const double *v);
/* out = w / (u . (W v)) */
void ref_spectral_norm(const double *w, int64_t rows, int64_t cols, const double *u, const double *v, double *out);
/* the gradient with u, v constant: dw = dy / sigma - (sum(dy * w) / sigma^2) u v^T */
void ref_spectral_norm_grad(const double *w, int64_t rows, int64_t cols, const double *u, const double *v,
                            const double *dy, double *dw);

/* One AdamW step in float64 (decoupled weight decay, bias corrections at `step`, from 1). */
void ref_adamw_step(double *p, const double *g, double *m, double *v, int64_t n, double lr, double beta1,
                    double beta2, double eps, double wd, int64_t step);

#endif
