/* PENDING (development placeholder, removed when core/ops/embed.c lands) */
#include "core/ops/cpu_impls.h"
const OpImpl cpu_op_timestep_embedding = {0};
const OpImpl cpu_op_embedding = {0};
