/* tests/ref_shape: float64 reference implementations (independent naive loops over
 * multi-indices) of the shape ops, for check_op. Images are NHWC (B, H, W, C). */
#ifndef ADDC_TESTS_REF_SHAPE_H
#define ADDC_TESTS_REF_SHAPE_H

#include <stdint.h>

/* a (sa) and b (sb), nd dims, equal outside axis (>= 0) -> out */
void ref_concat(const double *a, const int64_t *sa, const double *b, const int64_t *sb, int nd, int axis,
                double *out);
/* x (sx) -> out: elements [start, start + len) of axis */
void ref_slice(const double *x, const int64_t *sx, int nd, int axis, int64_t start, int64_t len, double *out);
/* out.shape[i] = sx[perm[i]] */
void ref_permute(const double *x, const int64_t *sx, int nd, const int32_t *perm, double *out);
void ref_upsample_nearest2x(const double *x, int64_t b, int64_t h, int64_t w, int64_t c, double *out);
/* torch adaptive_avg_pool2d windows */
void ref_resize_area(const double *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                     double *out);
/* torch bicubic, align_corners=False, A = -0.75, clamped source indices */
void ref_resize_bicubic(const double *x, int64_t b, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow,
                        double *out);

#endif
