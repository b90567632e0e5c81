/* core/profile: where a step's time goes, per op and direction. ADDC_PROFILE=1 in the environment
 * turns it on: op_exec times every forward kernel and the backward walk every backward kernel,
 * keyed by (op, forward/backward, output shape); at exit the heaviest entries are printed to
 * stderr. Off (the default), the cost is one branch per op. Single-threaded by design: ops are
 * issued from one thread; kernels' own threads are inside the timed call. */
#ifndef ADDC_CORE_PROFILE_H
#define ADDC_CORE_PROFILE_H

#include <stdbool.h>

#include "core/autograd.h"

bool profile_enabled(void);
double profile_now(void);
/* Adds seconds to the entry of node n (backward: its backward kernel). */
void profile_add(const Node *n, bool backward, double seconds);

#endif
