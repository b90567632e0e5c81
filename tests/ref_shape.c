/* tests/ref_shape: f64 references for the shape ops (see ref_shape.h). */
#include "tests/ref_shape.h"

#include <math.h>

static int64_t numel(const int64_t *s, int nd) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= s[i];
    return n;
}

static int64_t offset(const int64_t *idx, const int64_t *s, int nd) {
    int64_t o = 0;
    for (int i = 0; i < nd; i++) o = o * s[i] + idx[i];
    return o;
}

static void next_index(int64_t *idx, const int64_t *s, int nd) {
    for (int d = nd - 1; d >= 0; d--) {
        if (++idx[d] < s[d]) return;
        idx[d] = 0;
    }
}

void ref_concat(const double *a, const int64_t *sa, const double *b, const int64_t *sb, int nd, int axis,
                double *out) {
    int64_t so[8], idx[8] = {0}, j[8];
    for (int i = 0; i < nd; i++) so[i] = sa[i];
    so[axis] = sa[axis] + sb[axis];
    for (int64_t o = 0, n = numel(so, nd); o < n; o++) {
        for (int i = 0; i < nd; i++) j[i] = idx[i];
        if (idx[axis] < sa[axis]) {
            out[o] = a[offset(j, sa, nd)];
        } else {
            j[axis] -= sa[axis];
            out[o] = b[offset(j, sb, nd)];
        }
        next_index(idx, so, nd);
    }
}

void ref_slice(const double *x, const int64_t *sx, int nd, int axis, int64_t start, int64_t len,
               double *out) {
    int64_t so[8], idx[8] = {0}, j[8];
    for (int i = 0; i < nd; i++) so[i] = sx[i];
    so[axis] = len;
    for (int64_t o = 0, n = numel(so, nd); o < n; o++) {
        for (int i = 0; i < nd; i++) j[i] = idx[i];
        j[axis] += start;
        out[o] = x[offset(j, sx, nd)];
        next_index(idx, so, nd);
    }
}

void ref_permute(const double *x, const int64_t *sx, int nd, const int32_t *perm, double *out) {
    int64_t so[8], idx[8] = {0}, j[8];
    for (int i = 0; i < nd; i++) so[i] = sx[perm[i]];
    for (int64_t o = 0, n = numel(so, nd); o < n; o++) {
        for (int i = 0; i < nd; i++) j[perm[i]] = idx[i];
        out[o] = x[offset(j, sx, nd)];
        next_index(idx, so, nd);
    }
}

void ref_upsample_nearest2x(const double *x, int64_t b, int64_t h, int64_t w, int64_t c, double *out) {
    for (int64_t n = 0; n < b; n++)
        for (int64_t i = 0; i < 2 * h; i++)
            for (int64_t j = 0; j < 2 * w; j++)
                for (int64_t k = 0; k < c; k++)
                    out[((n * 2 * h + i) * 2 * w + j) * c + k] = x[((n * h + i / 2) * w + j / 2) * c + k];
}

void ref_resize_area(const double *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                     double *out) {
    for (int64_t n = 0; n < b; n++)
        for (int64_t i = 0; i < oh; i++) {
            int64_t h0 = (int64_t)floor((double)(i * h) / (double)oh);
            int64_t h1 = (int64_t)ceil((double)((i + 1) * h) / (double)oh);
            for (int64_t j = 0; j < ow; j++) {
                int64_t w0 = (int64_t)floor((double)(j * w) / (double)ow);
                int64_t w1 = (int64_t)ceil((double)((j + 1) * w) / (double)ow);
                for (int64_t k = 0; k < c; k++) {
                    double s = 0;
                    for (int64_t p = h0; p < h1; p++)
                        for (int64_t q = w0; q < w1; q++) s += x[((n * h + p) * w + q) * c + k];
                    out[((n * oh + i) * ow + j) * c + k] = s / (double)((h1 - h0) * (w1 - w0));
                }
            }
        }
}

/* Keys' cubic convolution kernel at distance d, A = -0.75 */
static double keys(double d) {
    const double a = -0.75;
    d = fabs(d);
    if (d <= 1) return (a + 2) * d * d * d - (a + 3) * d * d + 1;
    if (d < 2) return a * d * d * d - 5 * a * d * d + 8 * a * d - 4 * a;
    return 0;
}

static int64_t clampi(int64_t v, int64_t n) { return v < 0 ? 0 : v >= n ? n - 1 : v; }

void ref_resize_bicubic(const double *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                        double *out) {
    for (int64_t n = 0; n < b; n++)
        for (int64_t i = 0; i < oh; i++) {
            double sy = ((double)i + 0.5) * (double)h / (double)oh - 0.5;
            int64_t y0 = (int64_t)floor(sy);
            for (int64_t j = 0; j < ow; j++) {
                double sx = ((double)j + 0.5) * (double)w / (double)ow - 0.5;
                int64_t x0 = (int64_t)floor(sx);
                for (int64_t k = 0; k < c; k++) {
                    double s = 0;
                    for (int64_t p = y0 - 1; p <= y0 + 2; p++)
                        for (int64_t q = x0 - 1; q <= x0 + 2; q++)
                            s += keys(sy - (double)p) * keys(sx - (double)q) *
                                 x[((n * h + clampi(p, h)) * w + clampi(q, w)) * c + k];
                    out[((n * oh + i) * ow + j) * c + k] = s;
                }
            }
        }
}
