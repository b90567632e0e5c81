/* tests/ref_embed: float64 references for the timestep embedding and the table embedding. */
#ifndef ADDC_TESTS_REF_EMBED_H
#define ADDC_TESTS_REF_EMBED_H

#include <stdbool.h>
#include <stdint.h>

/* diffusers get_timestep_embedding in f64: t (b) -> out (b, dim) */
void ref_timestep_embedding(const double *t, int64_t b, int dim, bool flip_sin_to_cos, double freq_shift,
                            double max_period, double *out);
/* ids (n, integer-valued) rows of table (v, d) -> out (n, d) */
void ref_embedding(const double *ids, int64_t n, const double *table, int64_t d, double *out);

#endif
