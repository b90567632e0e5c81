/* losses/metrics: Gaussian fits, the Frechet distance, within-group diversity and accuracy of
 * evaluation features (see metrics.h). The eigensolver is EISPACK's tred2 + tql2 as JAMA
 * (public domain) writes them, on row-major storage. */
#include "losses/metrics.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/parallel.h"

#define EIGH_MAX_ITER 64 /* QL sweeps per eigenvalue (usually 2 or 3) */

Status metrics_gaussian_fit(const float *x, int64_t n, int64_t F, GaussianFit *out) {
    memset(out, 0, sizeof *out);
    if (n < 2 || F < 1)
        return addc_error_set(ADDC_ERR_INVALID, "a Gaussian fit needs at least 2 vectors of width >= 1 (got %lld of %lld)",
                              (long long)n, (long long)F);
    out->n = n;
    out->F = F;
    out->mu = calloc((size_t)F, sizeof(double));
    out->cov = malloc((size_t)(F * F) * sizeof(double));
    double *xc = malloc((size_t)(n * F) * sizeof(double));
    if (!out->mu || !out->cov || !xc) {
        free(xc);
        metrics_gaussian_free(out);
        return addc_error_set(ADDC_ERR_NOMEM, "Gaussian fit of %lld x %lld features: out of memory", (long long)n,
                              (long long)F);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < F; j++) out->mu[j] += x[i * F + j];
    for (int64_t j = 0; j < F; j++) out->mu[j] /= (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < F; j++) xc[i * F + j] = x[i * F + j] - out->mu[j];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)F, (blasint)F, (blasint)n, 1.0 / (double)(n - 1), xc,
                (blasint)F, xc, (blasint)F, 0.0, out->cov, (blasint)F);
    for (int64_t i = 0; i < F; i++) /* exactly symmetric */
        for (int64_t j = 0; j < i; j++) out->cov[j * F + i] = out->cov[i * F + j];
    free(xc);
    return ADDC_OK;
}

void metrics_gaussian_free(GaussianFit *g) {
    free(g->mu);
    free(g->cov);
    memset(g, 0, sizeof *g);
}

/* ---- symmetric eigendecomposition ---- */

/* Householder reduction of the symmetric V (n, n) to tridiagonal form: diagonal d, subdiagonal
 * e[1..n), V the accumulated orthogonal transformation. A(r, c) addresses V column-major, so
 * every inner loop (over the row index k) reads contiguous memory, and V comes out transposed:
 * row k of the storage is column k of the transformation, as tql2 wants it. */
static void tred2(double *V, int64_t n, double *d, double *e, bool vectors) {
#define A(r, c) V[(c) * n + (r)]
    for (int64_t j = 0; j < n; j++) d[j] = A(n - 1, j);
    for (int64_t i = n - 1; i > 0; i--) {
        double scale = 0, h = 0;
        for (int64_t k = 0; k < i; k++) scale += fabs(d[k]);
        if (scale == 0) {
            e[i] = d[i - 1];
            for (int64_t j = 0; j < i; j++) {
                d[j] = A(i - 1, j);
                A(i, j) = 0;
                A(j, i) = 0;
            }
        } else {
            for (int64_t k = 0; k < i; k++) {
                d[k] /= scale;
                h += d[k] * d[k];
            }
            double f = d[i - 1], g = sqrt(h);
            if (f > 0) g = -g;
            e[i] = scale * g;
            h -= f * g;
            d[i - 1] = f - g;
            for (int64_t j = 0; j < i; j++) e[j] = 0;
            for (int64_t j = 0; j < i; j++) {
                f = d[j];
                A(j, i) = f;
                g = e[j] + A(j, j) * f;
                for (int64_t k = j + 1; k <= i - 1; k++) {
                    g += A(k, j) * d[k];
                    e[k] += A(k, j) * f;
                }
                e[j] = g;
            }
            f = 0;
            for (int64_t j = 0; j < i; j++) {
                e[j] /= h;
                f += e[j] * d[j];
            }
            double hh = f / (h + h);
            for (int64_t j = 0; j < i; j++) e[j] -= hh * d[j];
            for (int64_t j = 0; j < i; j++) {
                f = d[j];
                g = e[j];
                for (int64_t k = j; k <= i - 1; k++) A(k, j) -= f * e[k] + g * d[k];
                d[j] = A(i - 1, j);
                A(i, j) = 0;
            }
        }
        d[i] = h;
    }
    if (!vectors) { /* the diagonal of the tridiagonal form stayed on A's diagonal */
        for (int64_t j = 0; j < n; j++) d[j] = A(j, j);
        e[0] = 0;
        return;
    }
    for (int64_t i = 0; i < n - 1; i++) {
        A(n - 1, i) = A(i, i);
        A(i, i) = 1;
        double h = d[i + 1];
        if (h != 0) {
            for (int64_t k = 0; k <= i; k++) d[k] = A(k, i + 1) / h;
            for (int64_t j = 0; j <= i; j++) {
                double g = 0;
                for (int64_t k = 0; k <= i; k++) g += A(k, i + 1) * A(k, j);
                for (int64_t k = 0; k <= i; k++) A(k, j) -= g * d[k];
            }
        }
        for (int64_t k = 0; k <= i; k++) A(k, i + 1) = 0;
    }
    for (int64_t j = 0; j < n; j++) {
        d[j] = A(n - 1, j);
        A(n - 1, j) = 0;
    }
    A(n - 1, n - 1) = 1;
    e[0] = 0;
#undef A
}

/* Implicit QL on the tridiagonal (d, e); with vectors, Vt holds the transformation transposed
 * (row k is column k of V), so each rotation touches two contiguous rows. */
static Status tql2(double *Vt, int64_t n, double *d, double *e, bool vectors) {
    for (int64_t i = 1; i < n; i++) e[i - 1] = e[i];
    e[n - 1] = 0;
    double f = 0, tst1 = 0, eps = 0x1p-52;
    for (int64_t l = 0; l < n; l++) {
        tst1 = fmax(tst1, fabs(d[l]) + fabs(e[l]));
        int64_t m = l;
        while (m < n && fabs(e[m]) > eps * tst1) m++;
        if (m == n) m = n - 1; /* e[n-1] is 0: not reached */
        if (m > l) {
            int iter = 0;
            do {
                if (++iter > EIGH_MAX_ITER)
                    return addc_error_set(ADDC_ERR_INVALID, "symmetric eigendecomposition (%lld x %lld): no convergence "
                                                            "after %d QL sweeps (non-finite input?)",
                                          (long long)n, (long long)n, EIGH_MAX_ITER);
                double g = d[l], p = (d[l + 1] - g) / (2 * e[l]), r = hypot(p, 1);
                if (p < 0) r = -r;
                d[l] = e[l] / (p + r);
                d[l + 1] = e[l] * (p + r);
                double dl1 = d[l + 1], h = g - d[l];
                for (int64_t i = l + 2; i < n; i++) d[i] -= h;
                f += h;
                p = d[m];
                double c = 1, c2 = 1, c3 = 1, el1 = e[l + 1], s = 0, s2 = 0;
                for (int64_t i = m - 1; i >= l; i--) {
                    c3 = c2;
                    c2 = c;
                    s2 = s;
                    g = c * e[i];
                    h = c * p;
                    r = hypot(p, e[i]);
                    e[i + 1] = s * r;
                    s = e[i] / r;
                    c = p / r;
                    p = c * d[i] - s * g;
                    d[i + 1] = h + s * (c * g + s * d[i]);
                    double *vi = Vt + i * n, *vj = Vt + (i + 1) * n;
                    for (int64_t k = 0; k < n && vectors; k++) {
                        h = vj[k];
                        vj[k] = s * vi[k] + c * h;
                        vi[k] = c * vi[k] - s * h;
                    }
                }
                p = -s * s2 * c3 * el1 * e[l] / dl1;
                e[l] = s * p;
                d[l] = c * p;
            } while (fabs(e[l]) > eps * tst1);
        }
        d[l] += f;
        e[l] = 0;
    }
    return ADDC_OK;
}

Status metrics_eigh(double *a, int64_t n, double *w, double *vecs) {
    if (n < 1) return addc_error_set(ADDC_ERR_INVALID, "eigendecomposition of an empty matrix");
    for (int64_t i = 0; i < n * n; i++)
        if (!isfinite(a[i]))
            return addc_error_set(ADDC_ERR_INVALID, "symmetric eigendecomposition: element %lld is not finite",
                                  (long long)i);
    double *e = malloc((size_t)n * sizeof(double));
    if (!e) return addc_error_set(ADDC_ERR_NOMEM, "eigendecomposition: out of memory");
    tred2(a, n, w, e, vecs != NULL);
    Status st = tql2(a, n, w, e, vecs != NULL);
    free(e);
    TRY(st);
    for (int64_t i = 0; i < n - 1; i++) { /* ascending, vectors alongside (selection sort: n swaps) */
        int64_t k = i;
        for (int64_t j = i + 1; j < n; j++)
            if (w[j] < w[k]) k = j;
        if (k == i) continue;
        double t = w[i];
        w[i] = w[k];
        w[k] = t;
        for (int64_t j = 0; j < n && vecs; j++) {
            t = a[i * n + j];
            a[i * n + j] = a[k * n + j];
            a[k * n + j] = t;
        }
    }
    if (vecs) memcpy(vecs, a, (size_t)(n * n) * sizeof(double));
    return ADDC_OK;
}

/* ---- Frechet distance ---- */

Status metrics_frechet_distance(const GaussianFit *a, const GaussianFit *b, double *fd) {
    int64_t F = a->F;
    if (b->F != F)
        return addc_error_set(ADDC_ERR_INVALID, "Frechet distance between features of width %lld and %lld", (long long)F,
                              (long long)b->F);
    size_t mat = (size_t)(F * F);
    double *buf = malloc((4 * mat + (size_t)F) * sizeof(double));
    if (!buf) return addc_error_set(ADDC_ERR_NOMEM, "Frechet distance (%lld features): out of memory", (long long)F);
    double *q = buf, *t = q + mat, *m = t + mat, *tmp = m + mat, *w = tmp + mat;
    memcpy(tmp, a->cov, mat * sizeof(double));
    Status st = metrics_eigh(tmp, F, w, q); /* S1 = Q^T diag(w) Q, rows of q the eigenvectors */
    if (st == ADDC_OK) {
        for (int64_t k = 0; k < F; k++) { /* B = diag(sqrt w) Q */
            double s = sqrt(fmax(w[k], 0.0));
            for (int64_t j = 0; j < F; j++) q[k * F + j] *= s;
        }
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)F, (blasint)F, (blasint)F, 1.0, q, (blasint)F,
                    b->cov, (blasint)F, 0.0, t, (blasint)F);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)F, (blasint)F, (blasint)F, 1.0, t, (blasint)F, q,
                    (blasint)F, 0.0, m, (blasint)F);
        for (int64_t i = 0; i < F; i++)
            for (int64_t j = 0; j < i; j++) m[i * F + j] = m[j * F + i] = 0.5 * (m[i * F + j] + m[j * F + i]);
        st = metrics_eigh(m, F, w, NULL);
    }
    if (st == ADDC_OK) {
        double tr_sqrt = 0, tr = 0, d2 = 0;
        for (int64_t k = 0; k < F; k++) tr_sqrt += sqrt(fmax(w[k], 0.0));
        for (int64_t k = 0; k < F; k++) {
            double d = a->mu[k] - b->mu[k];
            d2 += d * d;
            tr += a->cov[k * F + k] + b->cov[k * F + k];
        }
        *fd = d2 + tr - 2 * tr_sqrt;
    }
    free(buf);
    return st;
}

/* ---- diversity ---- */

typedef struct PairArgs {
    const float *x;
    const int64_t *rows; /* (n) row indices into x */
    int64_t n, F;
    double *row_sum;     /* (n): sum over j > i of |x_i - x_j| */
} PairArgs;

static void pair_rows(void *ctx, int64_t begin, int64_t end) {
    const PairArgs *p = ctx;
    for (int64_t i = begin; i < end; i++) {
        const float *xi = p->x + p->rows[i] * p->F;
        double s = 0;
        for (int64_t j = i + 1; j < p->n; j++) {
            const float *xj = p->x + p->rows[j] * p->F;
            double d2 = 0;
            for (int64_t k = 0; k < p->F; k++) {
                double d = (double)xi[k] - (double)xj[k];
                d2 += d * d;
            }
            s += sqrt(d2);
        }
        p->row_sum[i] = s;
    }
}

/* mean pairwise distance of the rows x[rows[0..n)]; row_sum (n) is scratch */
static double pairwise_mean(const float *x, const int64_t *rows, int64_t n, int64_t F, double *row_sum) {
    if (n < 2) return 0;
    PairArgs p = {x, rows, n, F, row_sum};
    parallel_for(n, 1 + 4096 / (n * F + 1), pair_rows, &p);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += row_sum[i];
    return s / ((double)n * (double)(n - 1) / 2);
}

double metrics_mean_pairwise_distance(const float *x, int64_t n, int64_t F) {
    if (n < 2) return 0;
    int64_t *rows = malloc((size_t)n * sizeof(int64_t));
    double *rs = malloc((size_t)n * sizeof(double));
    double r = NAN;
    if (rows && rs) {
        for (int64_t i = 0; i < n; i++) rows[i] = i;
        r = pairwise_mean(x, rows, n, F, rs);
    }
    free(rows);
    free(rs);
    return r;
}

Status metrics_diversity(const float *x, int64_t n, int64_t F, const int32_t *group, int32_t n_groups,
                         double *per_group, double *mean) {
    int64_t *rows = malloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t));
    double *rs = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!rows || !rs) {
        free(rows);
        free(rs);
        return addc_error_set(ADDC_ERR_NOMEM, "diversity of %lld features: out of memory", (long long)n);
    }
    double sum = 0;
    int32_t used = 0;
    for (int32_t g = 0; g < n_groups; g++) {
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (group[i] == g) rows[m++] = i;
        double d = m >= 2 ? pairwise_mean(x, rows, m, F, rs) : NAN;
        if (per_group) per_group[g] = d;
        if (m >= 2) {
            sum += d;
            used++;
        }
    }
    free(rows);
    free(rs);
    *mean = used ? sum / used : NAN;
    return ADDC_OK;
}

/* ---- accuracy ---- */

static int32_t row_argmax(const float *l, int64_t K) {
    int32_t best = 0;
    for (int64_t k = 1; k < K; k++)
        if (l[k] > l[best]) best = (int32_t)k;
    return best;
}

void metrics_argmax(const float *logits, int64_t n, int64_t K, int32_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = row_argmax(logits + i * K, K);
}

int64_t metrics_argmax_hits(const float *logits, int64_t n, int64_t K, const int32_t *labels) {
    int64_t hit = 0;
    for (int64_t i = 0; i < n; i++) hit += row_argmax(logits + i * K, K) == labels[i];
    return hit;
}

double metrics_accuracy(const float *logits, int64_t n, int64_t K, const int32_t *labels) {
    if (n <= 0) return NAN;
    return (double)metrics_argmax_hits(logits, n, K, labels) / (double)n;
}
