/* core/profile: per-op timing behind ADDC_PROFILE (see profile.h). */
#include "core/profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ops.h"

#define PROFILE_SLOTS 4096
#define PROFILE_PRINT 40

typedef struct ProfileEntry {
    int32_t op;
    bool backward;
    int32_t ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t calls;
    double seconds;
} ProfileEntry;

static int enabled = -1;
static ProfileEntry entries[PROFILE_SLOTS];
static int32_t n_entries;
static double total;

static int entry_cmp(const void *a, const void *b) {
    double x = ((const ProfileEntry *)a)->seconds, y = ((const ProfileEntry *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void profile_report(void) {
    if (!n_entries) return;
    double by_op[OP_COUNT][2] = {{0}};
    for (int32_t i = 0; i < n_entries; i++) by_op[entries[i].op][entries[i].backward] += entries[i].seconds;
    fprintf(stderr, "\nADDC_PROFILE: %.3f s in op kernels\n%-20s %10s %10s %6s\n", total, "op", "fwd s", "bwd s", "%");
    for (int op = 0; op < OP_COUNT; op++)
        if (by_op[op][0] + by_op[op][1] > 0)
            fprintf(stderr, "%-20s %10.3f %10.3f %6.1f\n", op_name((OpKind)op), by_op[op][0], by_op[op][1],
                    100 * (by_op[op][0] + by_op[op][1]) / total);
    qsort(entries, (size_t)n_entries, sizeof entries[0], entry_cmp);
    fprintf(stderr, "\n%-20s %-4s %-28s %8s %10s %6s\n", "op", "dir", "output shape", "calls", "s", "%");
    for (int32_t i = 0; i < n_entries && i < PROFILE_PRINT; i++) {
        const ProfileEntry *e = &entries[i];
        char shp[64] = "", *p = shp;
        for (int32_t d = 0; d < e->ndim; d++)
            p += snprintf(p, sizeof shp - (size_t)(p - shp), d ? "x%lld" : "%lld", (long long)e->shape[d]);
        fprintf(stderr, "%-20s %-4s %-28s %8lld %10.3f %6.1f\n", op_name((OpKind)e->op), e->backward ? "bwd" : "fwd",
                shp, (long long)e->calls, e->seconds, 100 * e->seconds / total);
    }
}

bool profile_enabled(void) {
    if (enabled < 0) {
        const char *v = getenv("ADDC_PROFILE");
        enabled = v && *v && strcmp(v, "0");
        if (enabled) atexit(profile_report);
    }
    return enabled;
}

double profile_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void profile_add(const Node *n, bool backward, double seconds) {
    const Tensor *y = &n->out->v;
    total += seconds;
    for (int32_t i = 0; i < n_entries; i++) {
        ProfileEntry *e = &entries[i];
        if (e->op == (int32_t)n->op && e->backward == backward && e->ndim == y->ndim &&
            !memcmp(e->shape, y->shape, (size_t)y->ndim * sizeof(int64_t))) {
            e->calls++;
            e->seconds += seconds;
            return;
        }
    }
    if (n_entries == PROFILE_SLOTS) return;
    ProfileEntry *e = &entries[n_entries++];
    e->op = (int32_t)n->op;
    e->backward = backward;
    e->ndim = y->ndim;
    memcpy(e->shape, y->shape, (size_t)y->ndim * sizeof(int64_t));
    e->calls = 1;
    e->seconds = seconds;
}
