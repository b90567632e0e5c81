/* tests/ref_matmul: f64 references for matmul and linear (see ref_matmul.h). */
#include "tests/ref_matmul.h"

/* index of output batch multi-index idx (no dims) into an operand with batch shape s (n dims),
 * right-aligned, size-1 dims broadcast */
static int64_t batch_index(const int64_t *idx, int no, const int64_t *s, int n) {
    int64_t off = 0;
    for (int d = 0; d < n; d++) off = off * s[d] + (s[d] == 1 ? 0 : idx[no - n + d]);
    return off;
}

void ref_matmul(const double *a, int na, const int64_t *sa, const double *b, int nb, const int64_t *sb, double *c,
                int64_t M, int64_t N, int64_t K, bool ta, bool tb) {
    int no = na > nb ? na : nb;
    int64_t so[8], idx[8] = {0}, batch = 1;
    for (int d = 0; d < no; d++) {
        int da = d - (no - na), db = d - (no - nb);
        int64_t x = da >= 0 ? sa[da] : 1, y = db >= 0 ? sb[db] : 1;
        so[d] = x == 1 ? y : x;
        batch *= so[d];
    }
    for (int64_t p = 0; p < batch; p++) {
        const double *ap = a + batch_index(idx, no, sa, na) * M * K, *bp = b + batch_index(idx, no, sb, nb) * K * N;
        double *cp = c + p * M * N;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) {
                    double av = ta ? ap[k * M + i] : ap[i * K + k];
                    double bv = tb ? bp[j * K + k] : bp[k * N + j];
                    s += av * bv;
                }
                cp[i * N + j] = s;
            }
        for (int d = no - 1; d >= 0; d--) {
            if (++idx[d] < so[d]) break;
            idx[d] = 0;
        }
    }
}

void ref_linear(const double *x, const double *w, const double *bias, double *y, int64_t rows, int64_t Din,
                int64_t Dout) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < Dout; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int64_t i = 0; i < Din; i++) s += x[r * Din + i] * w[o * Din + i];
            y[r * Dout + o] = s;
        }
}
