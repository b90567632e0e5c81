/* losses/metrics: not a training loss but the evaluation statistics `addc eval` reports over
 * feature vectors of an evaluation classifier (launch/eval.c). Everything is computed in double
 * precision from float features.
 *
 *   Gaussian fit     mu = mean of the rows, S = (X - mu)^T (X - mu) / (n - 1): the unbiased
 *                    estimator, as numpy.cov and pytorch-fid use it.
 *   Frechet distance ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two fits (FID's
 *                    formula, Heusel et al. 2017). tr (S1 S2)^{1/2} is the sum of the square
 *                    roots of the eigenvalues of S1^{1/2} S2 S1^{1/2}, which is symmetric positive
 *                    semi-definite and similar to S1 S2 (so it has the same eigenvalues): with
 *                    S1 = Q diag(l) Q^T, we take the eigenvalues of B S2 B^T, B = diag(sqrt l) Q^T,
 *                    by a symmetric eigendecomposition (Householder tridiagonalisation and
 *                    implicit QL, EISPACK tred2/tql2), clamping the tiny negative eigenvalues that
 *                    rounding leaves on rank-deficient covariances to 0. pytorch-fid instead takes
 *                    scipy.linalg.sqrtm of the non-symmetric S1 S2 (Schur) and drops an imaginary
 *                    part; both agree to ~1e-10 relative on full-rank covariances
 *                    (tests/unit/test_metrics.c), this one needs no complex arithmetic and stays
 *                    real and stable when n < F.
 *   Diversity        the mean L2 distance over all unordered pairs of a set's features, averaged
 *                    over groups (classes): within-class diversity. Groups with fewer than two
 *                    members are left out of the average.
 *   Accuracy         the fraction of rows whose logits' argmax (the first on ties) is the label.
 *
 * Results do not depend on the thread count: row sums are made by one thread each and added in
 * order. */
#ifndef ADDC_LOSSES_METRICS_H
#define ADDC_LOSSES_METRICS_H

#include <stdint.h>

#include "core/error.h"

/* A Gaussian fit of n feature vectors of width F (malloc'd; metrics_gaussian_free). */
typedef struct GaussianFit {
    int64_t n, F;
    double *mu;  /* (F) */
    double *cov; /* (F, F), row-major, symmetric */
} GaussianFit;

/* x (n, F), n >= 2. */
Status metrics_gaussian_fit(const float *x, int64_t n, int64_t F, GaussianFit *out);
void metrics_gaussian_free(GaussianFit *g);

/* Frechet distance between two fits of the same width. */
Status metrics_frechet_distance(const GaussianFit *a, const GaussianFit *b, double *fd);

/* Eigendecomposition of the symmetric a (n, n), row-major (only its values are read; it is
 * overwritten): eigenvalues ascending into w (n); with vecs (n, n) non-NULL, row k of vecs is the
 * unit eigenvector of w[k] (vecs NULL: values only, about a quarter of the work). */
Status metrics_eigh(double *a, int64_t n, double *w, double *vecs);

/* Mean pairwise L2 distance of the rows of x (n, F); 0 for n < 2. */
double metrics_mean_pairwise_distance(const float *x, int64_t n, int64_t F);
/* Within-group diversity: group[i] in [0, n_groups) for each row of x (n, F) (negative: row left
 * out); the mean over groups with >= 2 rows of their mean pairwise distance, NaN if there is no
 * such group. per_group (n_groups, NaN for groups left out) may be NULL. */
Status metrics_diversity(const float *x, int64_t n, int64_t F, const int32_t *group, int32_t n_groups,
                         double *per_group, double *mean);

/* Number of rows of logits (n, K) whose argmax (the first of equal maxima) equals labels[i]. */
int64_t metrics_argmax_hits(const float *logits, int64_t n, int64_t K, const int32_t *labels);
/* Fraction of rows of logits (n, K) whose argmax equals labels[i]; NaN for n = 0. */
double metrics_accuracy(const float *logits, int64_t n, int64_t K, const int32_t *labels);
/* argmax of each row of logits (n, K) into out (n) (the first of equal maxima). */
void metrics_argmax(const float *logits, int64_t n, int64_t K, int32_t *out);

#endif
