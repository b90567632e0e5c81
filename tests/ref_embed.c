/* tests/ref_embed: f64 references for the embeddings (see ref_embed.h). */
#include "tests/ref_embed.h"

#include <math.h>

void ref_timestep_embedding(const double *t, int64_t b, int dim, bool flip_sin_to_cos, double freq_shift,
                            double max_period, double *out) {
    int half = dim / 2;
    for (int64_t n = 0; n < b; n++) {
        double *row = out + n * dim;
        for (int i = 0; i < half; i++) {
            double f = exp(-log(max_period) * (double)i / ((double)half - freq_shift));
            double s = sin(t[n] * f), c = cos(t[n] * f);
            row[i] = flip_sin_to_cos ? c : s;
            row[half + i] = flip_sin_to_cos ? s : c;
        }
        if (dim % 2) row[dim - 1] = 0.0;
    }
}

void ref_embedding(const double *ids, int64_t n, const double *table, int64_t d, double *out) {
    for (int64_t p = 0; p < n; p++)
        for (int64_t k = 0; k < d; k++) out[p * d + k] = table[(int64_t)ids[p] * d + k];
}
