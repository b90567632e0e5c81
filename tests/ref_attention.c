/* tests/ref_attention: naive float64 softmax and attention. */
#include "tests/ref_attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ref_softmax(const double *x, double *y, int64_t rows, int64_t D) {
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * D;
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < D; j++) m = xr[j] > m ? xr[j] : m;
        for (int64_t j = 0; j < D; j++) s += exp(xr[j] - m);
        for (int64_t j = 0; j < D; j++) y[r * D + j] = exp(xr[j] - m) / s;
    }
}

/* row (b, i), head h: scores over keys j (<= i when causal), softmax, weighted sum of v */
static void ref_row_head(const RefAttnShape *s, const double *q, const double *k, const double *v, int64_t b,
                         int64_t i, int64_t h, double *sc, double *out) {
    double scale = s->scale > 0 ? s->scale : 1.0 / sqrt((double)s->Dh);
    int64_t wq = s->NH * s->Dh, wv = s->NH * s->Dv;
    int64_t nv = s->causal ? (i + 1 < s->Nk ? i + 1 : s->Nk) : s->Nk;
    const double *qi = q + (b * s->Nq + i) * wq + h * s->Dh;
    double m = -INFINITY, z = 0;
    for (int64_t j = 0; j < nv; j++) {
        const double *kj = k + (b * s->Nk + j) * wq + h * s->Dh;
        double d = 0;
        for (int64_t e = 0; e < s->Dh; e++) d += qi[e] * kj[e];
        sc[j] = scale * d;
        if (sc[j] > m) m = sc[j];
    }
    for (int64_t j = 0; j < nv; j++) {
        sc[j] = exp(sc[j] - m);
        z += sc[j];
    }
    for (int64_t e = 0; e < s->Dv; e++) {
        double acc = 0;
        for (int64_t j = 0; j < nv; j++) acc += sc[j] * v[(b * s->Nk + j) * wv + h * s->Dv + e];
        out[e] = acc / z;
    }
}

void ref_attention(const RefAttnShape *s, const double *q, const double *k, const double *v, double *out) {
    double *sc = malloc((size_t)s->Nk * sizeof(double));
    int64_t wv = s->NH * s->Dv;
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t i = 0; i < s->Nq; i++)
            for (int64_t h = 0; h < s->NH; h++)
                ref_row_head(s, q, k, v, b, i, h, sc, out + (b * s->Nq + i) * wv + h * s->Dv);
    free(sc);
}

void ref_attention_row(const RefAttnShape *s, const double *q, const double *k, const double *v, int64_t b,
                       int64_t i, double *out) {
    double *sc = malloc((size_t)s->Nk * sizeof(double));
    for (int64_t h = 0; h < s->NH; h++) ref_row_head(s, q, k, v, b, i, h, sc, out + h * s->Dv);
    free(sc);
}

void ref_attention_backward(const RefAttnShape *s, const double *q, const double *k, const double *v,
                            const double *dout, double *dq, double *dk, double *dv) {
    double scale = s->scale > 0 ? s->scale : 1.0 / sqrt((double)s->Dh);
    int64_t wq = s->NH * s->Dh, wv = s->NH * s->Dv;
    if (dq) memset(dq, 0, (size_t)(s->B * s->Nq * wq) * sizeof(double));
    if (dk) memset(dk, 0, (size_t)(s->B * s->Nk * wq) * sizeof(double));
    if (dv) memset(dv, 0, (size_t)(s->B * s->Nk * wv) * sizeof(double));
    double *p = malloc((size_t)s->Nk * sizeof(double)), *o = malloc((size_t)s->Dv * sizeof(double));
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t i = 0; i < s->Nq; i++)
            for (int64_t h = 0; h < s->NH; h++) {
                int64_t nv = s->causal ? (i + 1 < s->Nk ? i + 1 : s->Nk) : s->Nk;
                const double *qi = q + (b * s->Nq + i) * wq + h * s->Dh, *doi = dout + (b * s->Nq + i) * wv + h * s->Dv;
                ref_row_head(s, q, k, v, b, i, h, p, o);
                double z = 0, di = 0;
                for (int64_t j = 0; j < nv; j++) z += p[j];
                for (int64_t j = 0; j < nv; j++) p[j] /= z;
                for (int64_t e = 0; e < s->Dv; e++) di += doi[e] * o[e];
                for (int64_t j = 0; j < nv; j++) {
                    const double *kj = k + (b * s->Nk + j) * wq + h * s->Dh, *vj = v + (b * s->Nk + j) * wv + h * s->Dv;
                    double dp = 0;
                    for (int64_t e = 0; e < s->Dv; e++) dp += doi[e] * vj[e];
                    double ds = p[j] * (dp - di);
                    if (dv)
                        for (int64_t e = 0; e < s->Dv; e++) dv[(b * s->Nk + j) * wv + h * s->Dv + e] += p[j] * doi[e];
                    if (dq)
                        for (int64_t e = 0; e < s->Dh; e++) dq[(b * s->Nq + i) * wq + h * s->Dh + e] += scale * ds * kj[e];
                    if (dk)
                        for (int64_t e = 0; e < s->Dh; e++) dk[(b * s->Nk + j) * wq + h * s->Dh + e] += scale * ds * qi[e];
                }
            }
    free(p);
    free(o);
}
