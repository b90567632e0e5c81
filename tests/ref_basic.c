/* tests/ref_basic: f64 references for elementwise and reduction ops (see ref_basic.h). */
#include "tests/ref_basic.h"

#include <string.h>

/* offset of multi-index idx (in the out shape, no dims) into a tensor of shape s (n dims),
 * right-aligned, broadcasting size-1 dims */
static int64_t bc_offset(const int64_t *idx, int no, const int64_t *s, int n) {
    int64_t off = 0;
    for (int d = 0; d < n; d++) {
        int od = no - n + d;
        int64_t i = s[d] == 1 ? 0 : idx[od];
        off = off * s[d] + i;
    }
    return off;
}

static int next_index(int64_t *idx, int n, const int64_t *s) {
    for (int d = n - 1; d >= 0; d--) {
        if (++idx[d] < s[d]) return 1;
        idx[d] = 0;
    }
    return 0;
}

void ref_binary(RefBinKind k, const double *a, int na, const int64_t *sa, const double *b, int nb,
                const int64_t *sb, double *out, int no, const int64_t *so) {
    int64_t idx[8] = {0}, total = 1;
    for (int d = 0; d < no; d++) total *= so[d];
    for (int64_t i = 0; i < total; i++) {
        double x = a[bc_offset(idx, no, sa, na)], y = b[bc_offset(idx, no, sb, nb)];
        out[i] = k == REF_ADD ? x + y : k == REF_SUB ? x - y : k == REF_MUL ? x * y : x / y;
        next_index(idx, no, so);
    }
}

void ref_sum_to(const double *x, int nx, const int64_t *sx, double *out, int no, const int64_t *so) {
    int64_t on = 1, xn = 1, idx[8] = {0};
    for (int d = 0; d < no; d++) on *= so[d];
    for (int d = 0; d < nx; d++) xn *= sx[d];
    memset(out, 0, (size_t)on * sizeof(double));
    for (int64_t i = 0; i < xn; i++) {
        out[bc_offset(idx, nx, so, no)] += x[i];
        next_index(idx, nx, sx);
    }
}

void ref_broadcast_to(const double *x, int nx, const int64_t *sx, double *out, int no, const int64_t *so) {
    int64_t on = 1, idx[8] = {0};
    for (int d = 0; d < no; d++) on *= so[d];
    for (int64_t i = 0; i < on; i++) {
        out[i] = x[bc_offset(idx, no, sx, nx)];
        next_index(idx, no, so);
    }
}
