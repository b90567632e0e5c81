/* tests/ref_basic: float64 reference implementations (independent naive loops) of the
 * elementwise and reduction ops, for check_op. */
#ifndef ADDC_TESTS_REF_BASIC_H
#define ADDC_TESTS_REF_BASIC_H

#include <stdint.h>

#include "core/tensor.h"

/* numpy broadcasting of a (na dims) op b (nb dims) into out of shape oshape (no dims) */
typedef enum { REF_ADD, REF_SUB, REF_MUL, REF_DIV } RefBinKind;
void ref_binary(RefBinKind k, const double *a, int na, const int64_t *sa, const double *b, int nb,
                const int64_t *sb, double *out, int no, const int64_t *so);
/* out (shape so, right-aligned against sx) = sum of x over broadcast dims */
void ref_sum_to(const double *x, int nx, const int64_t *sx, double *out, int no, const int64_t *so);
void ref_broadcast_to(const double *x, int nx, const int64_t *sx, double *out, int no, const int64_t *so);

#endif
