/* tests/ref_nn: fixture helpers for the network tests (see ref_nn.h). */
#include "tests/ref_nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/weights.h"
#include "tests/test_util.h"

char *nn_src_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", ADDC_SOURCE_DIR, rel);
    return buf;
}

double nn_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

Var *nn_io_var(Ctx *c, const SafeTensors *io, const char *name, bool requires_grad) {
    const StTensor *t = safetensors_find(io, name);
    CHECK(t != NULL, "fixture tensor %s missing from %s", name, io->path);
    if (!t) return NULL;
    Var *v = var_new(c, DTYPE_F32, t->ndim, t->shape);
    if (!v) return NULL;
    CHECK_OK(safetensors_read_f32(t, v->v.data, tensor_numel(&v->v)));
    v->requires_grad = requires_grad;
    return v;
}

Var *nn_io_ids(Ctx *c, const SafeTensors *io, const char *name) {
    const StTensor *t = safetensors_find(io, name);
    CHECK(t != NULL, "fixture tensor %s missing from %s", name, io->path);
    if (!t) return NULL;
    Var *v = var_new(c, DTYPE_I32, t->ndim, t->shape);
    if (!v) return NULL;
    int64_t n = tensor_numel(&v->v);
    int32_t *d = v->v.data;
    if (t->dtype == DTYPE_I64)
        for (int64_t i = 0; i < n; i++) d[i] = (int32_t)((const int64_t *)t->data)[i];
    else if (t->dtype == DTYPE_I32)
        memcpy(d, t->data, (size_t)n * 4);
    else {
        float *f = malloc((size_t)n * 4);
        CHECK_OK(safetensors_read_f32(t, f, n));
        for (int64_t i = 0; i < n; i++) d[i] = (int32_t)lrintf(f[i]);
        free(f);
    }
    return v;
}

double nn_check_close(const char *label, const float *got, int64_t n, const SafeTensors *io, const char *name,
                      double tol) {
    const StTensor *t = safetensors_find(io, name);
    CHECK(t != NULL && got != NULL, "%s: nothing to compare (fixture %s %s, result %s)", label, name,
          t ? "present" : "missing", got ? "present" : "missing");
    if (!t || !got) return INFINITY;
    int64_t tn = t->nbytes / (int64_t)dtype_size(t->dtype);
    CHECK(tn == n, "%s: %lld values, the fixture has %lld", label, (long long)n, (long long)tn);
    if (tn != n) return INFINITY;
    float *want = malloc((size_t)(n ? n : 1) * sizeof(float));
    CHECK_OK(safetensors_read_f32(t, want, n));
    double e = compare_f32(label, got, want, n, tol, 1e-6);
    CHECK(e <= tol, "%s: max relative error %.3g > %.1g", label, e, tol);
    free(want);
    return e;
}

void nn_check_listing(ParamStore *s, const char *list_rel, NnAltNameFn alt, const void *user) {
    char path[512], line[1024];
    FILE *f = fopen(nn_src_path(path, sizeof path, list_rel), "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    int32_t i = 0, bad_name = 0, bad_shape = 0, bad_alt = 0;
    long long want_n = -1, want_numel = -1;
    while (fgets(line, sizeof line, f)) {
        char name[512], shp[128], other[512];
        if (sscanf(line, "total %lld %lld", &want_n, &want_numel) == 2) break;
        int got = sscanf(line, "%511s %127s %511s", name, shp, other);
        if (got < 1) continue;
        if (got == 1) shp[0] = 0; /* a scalar */
        Param *p = param_store_get(s, i++);
        if (!p) {
            bad_name++;
            continue;
        }
        int64_t sh[TENSOR_MAX_DIMS];
        int32_t nd = weights_file_shape(p, sh);
        char mine[128] = "";
        int o = 0;
        for (int32_t d = 0; d < nd; d++)
            o += snprintf(mine + o, sizeof mine - (size_t)o, "%s%lld", d ? "," : "", (long long)sh[d]);
        if (strcmp(name, p->name) != 0 && bad_name++ < 5)
            fprintf(stderr, "  param %d: addc %s, reference %s\n", i - 1, p->name, name);
        if (strcmp(shp, mine) != 0 && bad_shape++ < 5) fprintf(stderr, "  %s: shape %s, reference %s\n", name, mine, shp);
        if (alt && got == 3) {
            char k[WEIGHTS_KEY_MAX] = "";
            bool ok = alt(user, p->name, k);
            if ((!ok || strcmp(k, other) != 0) && bad_alt++ < 5)
                fprintf(stderr, "  %s: other-layout name %s, expected %s\n", name, ok ? k : "(none)", other);
        }
    }
    fclose(f);
    CHECK(i == s->n && want_n == s->n && want_numel == s->numel,
          "%s lists %lld tensors / %lld parameters, addc has %d / %lld", list_rel, want_n, want_numel, s->n,
          (long long)s->numel);
    CHECK(bad_name == 0 && bad_shape == 0 && bad_alt == 0, "%s: %d names, %d shapes, %d other-layout names differ",
          list_rel, bad_name, bad_shape, bad_alt);
}

int nn_count_units(ParamStore *s, const char *pattern) {
    int hits = 0, bad = 0;
    size_t lp = strlen(pattern);
    for (int32_t u = 0; u < s->n_units; u++) {
        const ParamUnit *pu = &s->units[u];
        const char *nm = pu->name, *at = strstr(nm, pattern);
        if (at) {
            const char *q = at + lp;
            while (*q >= '0' && *q <= '9') q++;
            if (q > at + lp && *q == 0) hits++;
        }
        size_t l = strlen(nm);
        for (int32_t k = pu->first; k < pu->first + pu->count; k++) {
            const char *pn = param_store_get(s, k)->name;
            if (l && (strncmp(pn, nm, l) != 0 || (pn[l] != '.' && pn[l] != 0))) bad++;
        }
        if (pu->count == 0) bad++;
    }
    CHECK(bad == 0, "units: %d parameters lie outside their unit's name or units are empty", bad);
    return hits;
}
