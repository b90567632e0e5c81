/* PENDING (development placeholder, removed when core/ops/spectral.c lands) */
#include "core/ops/cpu_impls.h"
const OpImpl cpu_op_spectral_norm = {0};
