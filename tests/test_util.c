/* tests/test_util: harness, test RNG, the op checker and the fixture reader. */
#include "tests/test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cuda.h"

int test_passed, test_failed;

/* ---- device mode: ADDC_TEST_DEVICE=cuda [ADDC_TEST_DTYPE=f32|bf16] runs every check_op case on the
 * GPU instead of the CPU (see check_op_device); without a GPU the program exits 77 (skipped)
 * before main. ---- */
static Device test_device = DEVICE_CPU;
static DType test_dtype = DTYPE_F32;

__attribute__((constructor)) static void test_device_init(void) {
    const char *d = getenv("ADDC_TEST_DEVICE");
    if (!d || !*d || !strcmp(d, "cpu")) return;
    if (strcmp(d, "cuda") != 0) {
        fprintf(stderr, "ADDC_TEST_DEVICE=%s: expected cpu or cuda\n", d);
        exit(2);
    }
    const char *t = getenv("ADDC_TEST_DTYPE");
    if (t && *t && strcmp(t, "f32") != 0 && strcmp(t, "bf16") != 0) {
        fprintf(stderr, "ADDC_TEST_DTYPE=%s: expected f32 or bf16\n", t);
        exit(2);
    }
    if (cuda_device_count() == 0) {
        printf("skipped: ADDC_TEST_DEVICE=cuda but %s\n", cuda_unavailable_reason());
        exit(77);
    }
    test_device = DEVICE_CUDA;
    test_dtype = t && !strcmp(t, "bf16") ? DTYPE_BF16 : DTYPE_F32;
}

Device test_op_device(void) { return test_device; }

int test_main_end(const char *suite) {
    printf("%s: %d passed, %d failed\n", suite, test_passed, test_failed);
    return test_failed ? 1 : 0;
}

bool test_addc_locate(char *path, size_t cap) {
    ssize_t k = cap > 8 ? readlink("/proc/self/exe", path, cap - 8) : -1;
    CHECK(k > 0, "readlink /proc/self/exe");
    if (k <= 0) return false;
    path[k] = 0;
    strcpy(strrchr(path, '/') + 1, "addc");
    bool ok = access(path, X_OK) == 0;
    CHECK(ok, "the addc program is not built beside the test: %s", path);
    return ok;
}

int test_addc_run(const char *addc, const char *threads, const char *args, const char *dir, const char *log) {
    size_t cap = strlen(args) + strlen(addc) + strlen(dir) + strlen(log) + strlen(ADDC_SOURCE_DIR) + 128;
    char *cmd = malloc(cap);
    if (!cmd) return -1;
    snprintf(cmd, cap, "cd %s && %s%s%s%s %s > %s/%s 2>&1", ADDC_SOURCE_DIR, threads ? "ADDC_THREADS=" : "",
             threads ? threads : "", threads ? " " : "", addc, args, dir, log);
    int rc = system(cmd);
    free(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

const char *test_threads_or(const char *fallback) {
    const char *t = getenv("ADDC_THREADS");
    return t && *t ? t : fallback;
}

char *test_slurp(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!s) {
        fclose(f);
        return NULL;
    }
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    if (len) *len = (long)got;
    return s;
}

int test_jsonl_values(const char *path, const char *key, double *out, int cap) {
    char *s = test_slurp(path, NULL), pat[64];
    if (!s) return 0;
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(s, "\n", &save); line && n < cap; line = strtok_r(NULL, "\n", &save)) {
        char *p = strstr(line, pat);
        if (p) out[n++] = strtod(p + strlen(pat), NULL);
    }
    free(s);
    return n;
}

double trng_uniform(TestRng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
double trng_range(TestRng *r, double lo, double hi) { return lo + (hi - lo) * trng_uniform(r); }
double trng_normal(TestRng *r) {
    double u1 = trng_uniform(r), u2 = trng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}
void trng_fill_f32(TestRng *r, float *x, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)trng_range(r, lo, hi);
}

void tctx_init(TestCtx *t) {
    arena_init(&t->arena, 16 << 20, 0);
    tape_init(&t->tape);
    t->c = ctx_make(&t->arena, &t->tape, DEVICE_CPU);
    t->nt = ctx_make(&t->arena, NULL, DEVICE_CPU);
}
void tctx_reset(TestCtx *t) {
    arena_reset(&t->arena);
    tape_clear(&t->tape);
}
void tctx_free(TestCtx *t) {
    arena_free(&t->arena);
    tape_free(&t->tape);
}

Var *tvar_rand(TestCtx *t, TestRng *r, bool requires_grad, double lo, double hi, int32_t ndim,
               const int64_t *shape) {
    Var *v = var_new(&t->nt, DTYPE_F32, ndim, shape);
    if (!v) return NULL;
    trng_fill_f32(r, v->v.data, tensor_numel(&v->v), lo, hi);
    v->requires_grad = requires_grad;
    return v;
}

Var *tvar_from(TestCtx *t, const float *data, bool requires_grad, int32_t ndim, const int64_t *shape) {
    Var *v = var_new(&t->nt, DTYPE_F32, ndim, shape);
    if (!v) return NULL;
    memcpy(v->v.data, data, (size_t)tensor_nbytes(&v->v));
    v->requires_grad = requires_grad;
    return v;
}

static double report_mismatch(const char *label, int64_t n, double tol, double denom,
                              double (*getdiff)(const void *, const void *, int64_t, double *, double *),
                              const void *a, const void *b) {
    double maxerr = 0;
    int shown = 0;
    for (int64_t i = 0; i < n; i++) {
        double av, bv;
        double d = getdiff(a, b, i, &av, &bv) / denom;
        if (isnan(d)) d = INFINITY;
        if (d > maxerr) maxerr = d;
        if (label && d > tol && shown < 5) {
            fprintf(stderr, "  %s[%lld]: got %.9g want %.9g (rel err %.3g)\n", label, (long long)i, av, bv, d);
            shown++;
        }
    }
    return maxerr;
}

static double diff_f32_f64(const void *a, const void *b, int64_t i, double *av, double *bv) {
    *av = ((const float *)a)[i];
    *bv = ((const double *)b)[i];
    return fabs(*av - *bv);
}
static double diff_f32_f32(const void *a, const void *b, int64_t i, double *av, double *bv) {
    *av = ((const float *)a)[i];
    *bv = ((const float *)b)[i];
    return fabs(*av - *bv);
}

double compare_f32_f64(const char *label, const float *a, const double *b, int64_t n, double tol, double floor) {
    double m = floor;
    for (int64_t i = 0; i < n; i++)
        if (fabs(b[i]) > m) m = fabs(b[i]);
    return report_mismatch(label, n, tol, m, diff_f32_f64, a, b);
}

double compare_f32(const char *label, const float *a, const float *b, int64_t n, double tol, double floor) {
    double m = floor;
    for (int64_t i = 0; i < n; i++)
        if (fabs(b[i]) > m) m = fabs(b[i]);
    return report_mismatch(label, n, tol, m, diff_f32_f32, a, b);
}

/* ---- op checker ---- */

static int64_t numel_of(int32_t nd, const int64_t *s) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= s[i];
    return n;
}

static double ref_loss(const OpCheck *oc, double *const *in, double *out, const double *R, int64_t nout) {
    oc->ref(in, out, oc->user);
    double L = 0;
    for (int64_t i = 0; i < nout; i++) L += R[i] * out[i];
    return L;
}

/* picks which elements of an input get a finite-difference check */
static int64_t fd_limit(const OpCheck *oc, int64_t n) {
    int64_t m = oc->max_fd == 0 ? 64 : oc->max_fd < 0 ? n : oc->max_fd;
    return n < m ? n : m;
}

static int64_t fd_pick(const OpCheck *oc, TestRng *r, int64_t n, int64_t k) {
    if (fd_limit(oc, n) == n) return k;
    return (int64_t)(trng_uniform(r) * (double)n);
}

static Var *make_input(TestCtx *tc, const OpCheck *oc, int i, TestRng *r, const float *vals) {
    int64_t n = numel_of(oc->ndim[i], oc->shape[i]);
    if (oc->is_int[i]) {
        Tensor t = tensor_make(NULL, DTYPE_I32, DEVICE_CPU, oc->ndim[i], oc->shape[i]);
        t.data = arena_alloc(&tc->arena, n * 4);
        for (int64_t k = 0; k < n; k++) ((int32_t *)t.data)[k] = (int32_t)vals[k];
        return var_leaf(&tc->nt, t, false);
    }
    (void)r;
    return tvar_from(tc, vals, !oc->no_grad[i], oc->ndim[i], oc->shape[i]);
}

/* The gradient of input i (g, on the host) against central finite differences of the f64
 * reference at the points fd_pick chooses; counts a failure beyond grad_tol; returns the error. */
static double grad_check_input(const OpCheck *oc, int i, const float *g, double **in64, int64_t nin_i,
                               double *out64, const double *R, int64_t nout, double h, double grad_tol, TestRng *r) {
    int64_t kmax = fd_limit(oc, nin_i);
    double *fd = malloc((size_t)(kmax ? kmax : 1) * 8);
    float *an = malloc((size_t)(kmax ? kmax : 1) * 4);
    for (int64_t k = 0; k < kmax; k++) {
        int64_t e = fd_pick(oc, r, nin_i, k);
        double x0 = in64[i][e];
        in64[i][e] = x0 + h;
        double lp = ref_loss(oc, in64, out64, R, nout);
        in64[i][e] = x0 - h;
        double lm = ref_loss(oc, in64, out64, R, nout);
        in64[i][e] = x0;
        fd[k] = (lp - lm) / (2 * h);
        an[k] = g[e];
    }
    char label[160];
    snprintf(label, sizeof label, "%s grad[in %d]", oc->name, i);
    double eg = compare_f32_f64(label, an, fd, kmax, grad_tol, 1e-3);
    CHECK(eg <= grad_tol, "%s: input %d gradient max rel err %.3g > %.3g (vs f64 finite differences)", oc->name, i,
          eg, grad_tol);
    free(fd);
    free(an);
    return eg;
}

static void check_op_device(const OpCheck *oc);

void check_op(const OpCheck *oc) {
    if (test_device == DEVICE_CUDA) {
        check_op_device(oc);
        return;
    }
    double fwd_tol = oc->fwd_tol > 0 ? oc->fwd_tol : 1e-5;
    double grad_tol = oc->grad_tol > 0 ? oc->grad_tol : 1e-4;
    double h = oc->fd_h > 0 ? oc->fd_h : 1e-6;
    double g2tol = oc->graph2_tol > 0 ? oc->graph2_tol : 2e-3;
    TestRng r = {oc->seed ? oc->seed : 12345};
    TestCtx tc;
    tctx_init(&tc);
    int n_in = oc->n_in;
    float *vals[CHECK_OP_MAX_IN];
    double *in64[CHECK_OP_MAX_IN];
    int64_t nin[CHECK_OP_MAX_IN];
    Var *in[CHECK_OP_MAX_IN];
    for (int i = 0; i < n_in; i++) {
        nin[i] = numel_of(oc->ndim[i], oc->shape[i]);
        vals[i] = malloc((size_t)(nin[i] ? nin[i] : 1) * 4);
        in64[i] = malloc((size_t)(nin[i] ? nin[i] : 1) * 8);
        double lo = oc->lo[i], hi = oc->hi[i];
        if (lo == 0 && hi == 0) lo = -1, hi = 1;
        for (int64_t k = 0; k < nin[i]; k++) {
            double v = oc->fixed[i] ? oc->fixed[i][k] : trng_range(&r, lo, hi);
            if (oc->is_int[i]) v = floor(v);
            vals[i][k] = (float)v;
            in64[i][k] = (double)vals[i][k];
        }
        in[i] = make_input(&tc, oc, i, &r, vals[i]);
    }
    Var *y = oc->build(&tc.c, in, oc->user);
    CHECK(y != NULL, "%s: build failed: %s", oc->name, addc_error_message());
    if (!y) {
        addc_error_clear();
        goto done;
    }
    int64_t nout = tensor_numel(&y->v);
    double *out64 = malloc((size_t)(nout ? nout : 1) * 8);
    double *R = malloc((size_t)(nout ? nout : 1) * 8);
    float *Rf = malloc((size_t)(nout ? nout : 1) * 4);
    for (int64_t k = 0; k < nout; k++) {
        Rf[k] = (float)trng_range(&r, -1, 1);
        R[k] = Rf[k];
    }
    /* forward vs f64 reference */
    oc->ref(in64, out64, oc->user);
    char label[160];
    snprintf(label, sizeof label, "%s fwd", oc->name);
    double ef = compare_f32_f64(label, y->v.data, out64, nout, fwd_tol, 1e-6);
    CHECK(ef <= fwd_tol, "%s: forward max rel err %.3g > %.3g", oc->name, ef, fwd_tol);

    /* backward vs finite differences of the f64 reference */
    Tensor seed = tensor_make(Rf, DTYPE_F32, DEVICE_CPU, y->v.ndim, y->v.shape);
    Status st = tape_backward_seed(&tc.c, y, &seed);
    CHECK_OK(st);
    double eg_max = 0;
    for (int i = 0; i < n_in && st == ADDC_OK; i++) {
        if (oc->no_grad[i] || oc->is_int[i]) continue;
        const float *g = in[i]->g.data;
        CHECK(g != NULL, "%s: input %d got no gradient", oc->name, i);
        if (!g) continue;
        double eg = grad_check_input(oc, i, g, in64, nin[i], out64, R, nout, h, grad_tol, &r);
        if (eg > eg_max) eg_max = eg;
    }

    double eg1 = 0, eg2 = 0;
    if (oc->graph && st == ADDC_OK) {
        /* a fresh graph (the plain backward above left gradients on every Var) */
        TestCtx tg;
        tctx_init(&tg);
        Var *gin[CHECK_OP_MAX_IN];
        for (int i = 0; i < n_in; i++) gin[i] = make_input(&tg, oc, i, &r, vals[i]);
        Var *gy = oc->build(&tg.c, gin, oc->user);
        /* first order: create-graph gradient equals the plain one */
        Var *wrt[CHECK_OP_MAX_IN], *grads[CHECK_OP_MAX_IN];
        int nw = 0, map[CHECK_OP_MAX_IN];
        for (int i = 0; i < n_in; i++)
            if (!oc->no_grad[i] && !oc->is_int[i]) {
                map[nw] = i;
                wrt[nw++] = gin[i];
            }
        Var *dy = tvar_from(&tg, Rf, false, gy->v.ndim, gy->v.shape);
        st = autograd_grad(&tg.c, gy, dy, wrt, nw, grads, true);
        CHECK(st == ADDC_OK, "%s: create-graph backward failed: %s", oc->name, addc_error_message());
        if (st == ADDC_OK) {
            for (int w = 0; w < nw; w++) {
                int i = map[w];
                CHECK(grads[w] != NULL, "%s: create-graph gave no gradient for input %d", oc->name, i);
                if (!grads[w]) continue;
                snprintf(label, sizeof label, "%s graph grad[in %d]", oc->name, i);
                double e = compare_f32(label, grads[w]->v.data, in[i]->g.data, nin[i], 1e-5, 1e-3);
                if (e > eg1) eg1 = e;
                CHECK(e <= 1e-5, "%s: create-graph gradient of input %d differs from plain: %.3g", oc->name, i, e);
            }
            /* second order: s = sum_i <S_i, grad_i>; d s / d in_j by backward vs finite
             * differences of the (plain, f32) first-order gradients */
            Var *s = NULL;
            float *S[CHECK_OP_MAX_IN] = {0};
            for (int w = 0; w < nw; w++) {
                if (!grads[w]) continue;
                int i = map[w];
                S[w] = malloc((size_t)nin[i] * 4);
                trng_fill_f32(&r, S[w], nin[i], -1, 1);
                Var *Sv = tvar_from(&tg, S[w], false, oc->ndim[i], oc->shape[i]);
                Var *t = op_sum(&tg.c, op_mul(&tg.c, grads[w], Sv));
                s = s ? op_add(&tg.c, s, t) : t;
            }
            bool depends = s && s->requires_grad;
            if (depends) st = tape_backward(&tg.c, s);
            CHECK(st == ADDC_OK, "%s: second-order backward failed: %s", oc->name, addc_error_message());
            /* numeric: perturb input j, recompute first-order grads with a fresh plain backward */
            double h2 = 1e-2;
            for (int wj = 0; wj < nw && st == ADDC_OK; wj++) {
                int j = map[wj];
                int64_t kmax = nin[j] < 16 ? nin[j] : 16;
                const float *g2 = gin[j]->g.data;
                for (int64_t k = 0; k < kmax; k++) {
                    int64_t e = nin[j] <= 16 ? k : (int64_t)(trng_uniform(&r) * (double)nin[j]);
                    double sv[2];
                    for (int sgn = 0; sgn < 2; sgn++) {
                        TestCtx t2;
                        tctx_init(&t2);
                        Var *in2[CHECK_OP_MAX_IN];
                        for (int i = 0; i < n_in; i++) {
                            float *vv = malloc((size_t)(nin[i] ? nin[i] : 1) * 4);
                            memcpy(vv, vals[i], (size_t)nin[i] * 4);
                            if (i == j) vv[e] += (float)(sgn ? -h2 : h2);
                            in2[i] = make_input(&t2, oc, i, &r, vv);
                            free(vv);
                        }
                        Var *y2 = oc->build(&t2.c, in2, oc->user);
                        Tensor sd = tensor_make(Rf, DTYPE_F32, DEVICE_CPU, y2->v.ndim, y2->v.shape);
                        tape_backward_seed(&t2.c, y2, &sd);
                        double acc = 0;
                        for (int w = 0; w < nw; w++) {
                            int i = map[w];
                            if (!S[w] || !in2[i]->g.data) continue;
                            for (int64_t q = 0; q < nin[i]; q++) acc += (double)S[w][q] * ((float *)in2[i]->g.data)[q];
                        }
                        sv[sgn] = acc;
                        tctx_free(&t2);
                    }
                    double num = (sv[0] - sv[1]) / (2 * h2);
                    double ana = g2 ? g2[e] : 0.0;
                    double err = fabs(num - ana) / (1.0 + fabs(num));
                    if (err > eg2) eg2 = err;
                    if (err > g2tol)
                        fprintf(stderr, "  %s second order d/d in%d[%lld]: backward %.7g, finite diff %.7g\n",
                                oc->name, j, (long long)e, ana, num);
                }
            }
            CHECK(eg2 <= g2tol, "%s: second-order gradient err %.3g > %.3g", oc->name, eg2, g2tol);
            for (int w = 0; w < nw; w++) free(S[w]);
        } else {
            addc_error_clear();
        }
        tctx_free(&tg);
    }
    printf("  %-40s fwd %.2e  grad %.2e%s", oc->name, ef, eg_max, oc->graph ? "" : "\n");
    if (oc->graph) printf("  graph %.2e  2nd %.2e\n", eg1, eg2);
    free(out64);
    free(R);
    free(Rf);
done:
    for (int i = 0; i < n_in; i++) {
        free(vals[i]);
        free(in64[i]);
    }
    tctx_free(&tc);
    addc_error_clear();
}

/* ---- check_op on the GPU ----
 * The same case with the inputs on the device (rounded to bf16 first in bf16 mode, and the f64
 * reference fed the rounded values, so only the kernels' own error counts), the device arena
 * poisoned with NaN (an element a kernel leaves unwritten shows), the output and the input
 * gradients copied back and compared: tolerances as the case's in f32, at least 1e-2 in bf16.
 * The create-graph backward is built from ops and is checked on the CPU. */
static Var *device_input(TestCtx *tc, const OpCheck *oc, int i, const float *vals, int64_t n) {
    if (oc->is_int[i]) {
        int32_t *h = malloc((size_t)(n ? n : 1) * 4);
        for (int64_t k = 0; k < n; k++) h[k] = (int32_t)vals[k];
        Tensor t = tensor_make(NULL, DTYPE_I32, DEVICE_CUDA, oc->ndim[i], oc->shape[i]);
        t.data = ctx_dev_alloc(&tc->nt, n * 4);
        Status st = t.data ? cuda_copy_to_device(t.data, h, (size_t)n * 4) : ADDC_ERR_NOMEM;
        if (st == ADDC_OK) st = cuda_synchronize();
        free(h);
        return st == ADDC_OK ? var_leaf(&tc->nt, t, false) : NULL;
    }
    Var *v = var_new(&tc->nt, test_dtype, oc->ndim[i], oc->shape[i]);
    float *staged = v ? ctx_dev_alloc(&tc->nt, n * 4) : NULL;
    if (!staged) return NULL;
    if (cuda_copy_to_device(staged, vals, (size_t)n * 4) != ADDC_OK ||
        cuda_convert(v->v.data, test_dtype, staged, DTYPE_F32, n) != ADDC_OK || cuda_synchronize() != ADDC_OK)
        return NULL;
    v->requires_grad = !oc->no_grad[i];
    return v;
}

/* A device tensor (f32 or bf16) into host f32. */
static Status device_download_f32(TestCtx *tc, const Tensor *t, float *host) {
    int64_t n = tensor_numel(t);
    if (n == 0) return ADDC_OK;
    if (t->dtype == DTYPE_F32) return cuda_copy_to_host(host, t->data, (size_t)n * 4);
    float *staged = ctx_dev_alloc(&tc->nt, n * 4);
    if (!staged) return addc_error_status();
    TRY(cuda_convert(staged, DTYPE_F32, t->data, t->dtype, n));
    return cuda_copy_to_host(host, staged, (size_t)n * 4);
}

static void check_op_device(const OpCheck *oc) {
    bool bf16 = test_dtype == DTYPE_BF16;
    double fwd_tol = oc->fwd_tol > 0 ? oc->fwd_tol : 1e-5;
    double grad_tol = oc->grad_tol > 0 ? oc->grad_tol : 1e-4;
    if (bf16) {
        if (fwd_tol < 1e-2) fwd_tol = 1e-2;
        if (grad_tol < 1e-2) grad_tol = 1e-2;
    }
    double h = oc->fd_h > 0 ? oc->fd_h : 1e-6;
    TestRng r = {oc->seed ? oc->seed : 12345};
    TestCtx tc;
    tctx_init(&tc);
    Arena dev;
    arena_init_device(&dev, 64 << 20, 0);
    arena_attach_device(&tc.arena, &dev);
    tc.c.device = tc.nt.device = DEVICE_CUDA;
    cuda_poison_set(true);
    int n_in = oc->n_in;
    float *vals[CHECK_OP_MAX_IN] = {0};
    double *in64[CHECK_OP_MAX_IN] = {0};
    int64_t nin[CHECK_OP_MAX_IN];
    Var *in[CHECK_OP_MAX_IN];
    double *out64 = NULL, *R = NULL;
    float *Rf = NULL, *yh = NULL, *gh = NULL;
    for (int i = 0; i < n_in; i++) {
        nin[i] = numel_of(oc->ndim[i], oc->shape[i]);
        vals[i] = malloc((size_t)(nin[i] ? nin[i] : 1) * 4);
        in64[i] = malloc((size_t)(nin[i] ? nin[i] : 1) * 8);
        double lo = oc->lo[i], hi = oc->hi[i];
        if (lo == 0 && hi == 0) lo = -1, hi = 1;
        for (int64_t k = 0; k < nin[i]; k++) {
            double v = oc->fixed[i] ? oc->fixed[i][k] : trng_range(&r, lo, hi);
            if (oc->is_int[i]) v = floor(v);
            float f = (float)v;
            if (bf16 && !oc->is_int[i]) f = bf16_to_f32(f32_to_bf16(f));
            vals[i][k] = f;
            in64[i][k] = (double)f;
        }
        in[i] = device_input(&tc, oc, i, vals[i], nin[i]);
        CHECK(in[i] != NULL, "%s: input %d to the device: %s", oc->name, i, addc_error_message());
        if (!in[i]) goto done;
    }
    Var *y = oc->build(&tc.c, in, oc->user);
    CHECK(y != NULL, "%s on cuda %s: build failed: %s", oc->name, dtype_name(test_dtype), addc_error_message());
    if (!y) goto done;
    int64_t nout = tensor_numel(&y->v);
    out64 = malloc((size_t)(nout ? nout : 1) * 8);
    R = malloc((size_t)(nout ? nout : 1) * 8);
    Rf = malloc((size_t)(nout ? nout : 1) * 4);
    yh = malloc((size_t)(nout ? nout : 1) * 4);
    for (int64_t k = 0; k < nout; k++) {
        Rf[k] = (float)trng_range(&r, -1, 1);
        R[k] = Rf[k];
    }
    Status st = device_download_f32(&tc, &y->v, yh);
    CHECK_OK(st);
    if (st != ADDC_OK) goto done;
    oc->ref(in64, out64, oc->user);
    char label[200];
    snprintf(label, sizeof label, "%s fwd (cuda %s)", oc->name, dtype_name(test_dtype));
    double ef = compare_f32_f64(label, yh, out64, nout, fwd_tol, 1e-6);
    CHECK(ef <= fwd_tol, "%s on cuda %s: forward max rel err %.3g > %.3g", oc->name, dtype_name(test_dtype), ef,
          fwd_tol);

    double eg_max = 0;
    if (y->requires_grad) {
        float *seed_d = ctx_dev_alloc(&tc.nt, (nout ? nout : 1) * 4);
        st = seed_d ? cuda_copy_to_device(seed_d, Rf, (size_t)nout * 4) : addc_error_status();
        Tensor seed = tensor_make(seed_d, DTYPE_F32, DEVICE_CUDA, y->v.ndim, y->v.shape);
        if (st == ADDC_OK) st = tape_backward_seed(&tc.c, y, &seed);
        CHECK_OK(st);
        for (int i = 0; i < n_in && st == ADDC_OK; i++) {
            if (oc->no_grad[i] || oc->is_int[i]) continue;
            CHECK(in[i]->g.data != NULL, "%s on cuda: input %d got no gradient", oc->name, i);
            if (!in[i]->g.data) continue;
            gh = realloc(gh, (size_t)(nin[i] ? nin[i] : 1) * 4);
            st = cuda_copy_to_host(gh, in[i]->g.data, (size_t)nin[i] * 4);
            CHECK_OK(st);
            if (st != ADDC_OK) break;
            double eg = grad_check_input(oc, i, gh, in64, nin[i], out64, R, nout, h, grad_tol, &r);
            if (eg > eg_max) eg_max = eg;
        }
    }
    printf("  cuda %-4s %-35s fwd %.2e  grad %.2e\n", dtype_name(test_dtype), oc->name, ef, eg_max);
done:
    free(out64);
    free(R);
    free(Rf);
    free(yh);
    free(gh);
    for (int i = 0; i < n_in; i++) {
        free(vals[i]);
        free(in64[i]);
    }
    cuda_synchronize();
    tctx_free(&tc);
    arena_free(&dev);
    addc_error_clear();
}

/* ---- fixtures ---- */

bool fixture_load(const char *name, Fixture *f) {
    memset(f, 0, sizeof *f);
    const char *root = getenv("ADDC_SOURCE_DIR");
    if (!root) root = ADDC_SOURCE_DIR;
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/ref/fixtures/%s.bin", root, name);
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        fprintf(stderr, "cannot open fixture %s (regenerate with tests/ref/make_fixtures.sh)\n", path);
        return false;
    }
    char magic[8];
    int32_t n;
    bool ok = fread(magic, 1, 8, fp) == 8 && memcmp(magic, "ADDCFIX1", 8) == 0 && fread(&n, 4, 1, fp) == 1 &&
              n >= 0 && n < 100000;
    if (ok) {
        f->n = n;
        f->t = calloc((size_t)(n ? n : 1), sizeof(FixTensor));
        for (int i = 0; i < n && ok; i++) {
            FixTensor *t = &f->t[i];
            int32_t len;
            ok = fread(&len, 4, 1, fp) == 1 && len > 0 && len < (int32_t)sizeof t->name &&
                 fread(t->name, 1, (size_t)len, fp) == (size_t)len && fread(&t->ndim, 4, 1, fp) == 1 &&
                 t->ndim >= 0 && t->ndim <= TENSOR_MAX_DIMS;
            if (!ok) break;
            t->name[len] = 0;
            t->numel = 1;
            for (int d = 0; d < t->ndim && ok; d++) {
                ok = fread(&t->shape[d], 8, 1, fp) == 1 && t->shape[d] >= 0;
                t->numel *= t->shape[d];
            }
            if (!ok) break;
            t->data = malloc((size_t)(t->numel ? t->numel : 1) * 4);
            ok = fread(t->data, 4, (size_t)t->numel, fp) == (size_t)t->numel;
        }
    }
    fclose(fp);
    if (!ok) {
        fprintf(stderr, "fixture %s is malformed\n", path);
        fixture_free(f);
    }
    return ok;
}

const FixTensor *fixture_get(const Fixture *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
    return NULL;
}

void fixture_free(Fixture *f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].data);
    free(f->t);
    memset(f, 0, sizeof *f);
}

/* ---- the tiny UNet fixture ---- */

bool test_unet_build(TestUNet *n, bool trainable, Device device) {
    char path[512];
    snprintf(path, sizeof path, "%s/configs/models/tiny_unet.yaml", ADDC_SOURCE_DIR);
    memset(n, 0, sizeof *n);
    param_store_init(&n->s, DEVICE_CPU);
    Status st = unet2d_config_load(&n->cfg, path, NULL, 0);
    if (st == ADDC_OK) st = unet2d_init(&n->m, &n->cfg, &n->s);
    if (st == ADDC_OK) st = param_store_alloc(&n->s, trainable);
    if (st == ADDC_OK) st = param_store_init_random(&n->s, 2024);
    if (st == ADDC_OK && device != DEVICE_CPU) st = param_store_to_device(&n->s, device);
    CHECK_OK(st);
    return st == ADDC_OK;
}

void test_unet_free(TestUNet *n) {
    unet2d_free(&n->m);
    param_store_free(&n->s);
}
