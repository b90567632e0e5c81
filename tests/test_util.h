/* tests/test_util: a small test harness for addc.
 *
 * CHECK(cond, fmt...) counts a failure and prints where; test_main_end() prints the closing
 * line "N passed, M failed" and returns the exit code. Op tests use check_op(): forward
 * against a float64 reference implementation (tests/ref_*.c), backward against central
 * finite differences of that f64 reference (a float64 gradient accurate to ~1e-8), and for
 * ops with a create-graph backward, the graph gradient against the plain one and the
 * second-order gradient against finite differences of the first-order one. */
#ifndef ADDC_TESTS_TEST_UTIL_H
#define ADDC_TESTS_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/arena.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "nn/unet.h"

extern int test_passed, test_failed;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (cond) {                                                                       \
            test_passed++;                                                                \
        } else {                                                                          \
            test_failed++;                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                          \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fprintf(stderr, "\n");                                                        \
        }                                                                                 \
    } while (0)

/* Checks a Var/Status result and prints the pending error message on failure. */
#define CHECK_OK(st) CHECK((st) == ADDC_OK, "status %d: %s", (int)(st), addc_error_message())
#define CHECK_VAR(v) CHECK((v) != NULL, "op returned NULL: %s", addc_error_message())

int test_main_end(const char *suite);

/* ---- end-to-end tests through the addc program ---- */

/* The addc program built beside the running test, into path (cap bytes); false (and a failed
 * CHECK) when it is not there. */
bool test_addc_locate(char *path, size_t cap);
/* Runs `addc ARGS` in the source tree with stdout and stderr to DIR/LOG. threads: the value of
 * ADDC_THREADS for it, or NULL to inherit the environment's. Returns the exit status, -1 if the
 * program did not exit normally. */
int test_addc_run(const char *addc, const char *threads, const char *args, const char *dir, const char *log);
/* ADDC_THREADS of the environment, else fallback. */
const char *test_threads_or(const char *fallback);
/* A whole file, NUL-terminated (len: its size, may be NULL); NULL when it cannot be read. */
char *test_slurp(const char *path, long *len);
/* The numbers after `"key": ` on every line of a JSONL file that has the key (at most cap). */
int test_jsonl_values(const char *path, const char *key, double *out, int cap);

/* deterministic test RNG (splitmix64) */
typedef struct TestRng {
    uint64_t s;
} TestRng;
double trng_uniform(TestRng *r);             /* [0, 1) */
double trng_range(TestRng *r, double lo, double hi);
double trng_normal(TestRng *r);
void trng_fill_f32(TestRng *r, float *x, int64_t n, double lo, double hi);

/* A test context: arena + tape on the CPU. */
typedef struct TestCtx {
    Arena arena;
    Tape tape;
    Ctx c;  /* with tape */
    Ctx nt; /* no tape */
} TestCtx;
void tctx_init(TestCtx *t);
void tctx_reset(TestCtx *t); /* clears the arena and the tape */
void tctx_free(TestCtx *t);

/* A leaf Var of the given shape filled uniform in [lo, hi). */
Var *tvar_rand(TestCtx *t, TestRng *r, bool requires_grad, double lo, double hi, int32_t ndim,
               const int64_t *shape);
Var *tvar_from(TestCtx *t, const float *data, bool requires_grad, int32_t ndim, const int64_t *shape);

/* Max relative error max|a-b| / max(max|b|, floor); prints the first few mismatches beyond
 * tol when `label` is set. Returns the error. */
double compare_f32_f64(const char *label, const float *a, const double *b, int64_t n, double tol, double floor);
double compare_f32(const char *label, const float *a, const float *b, int64_t n, double tol, double floor);

/* ---- the op checker ---- */

#define CHECK_OP_MAX_IN 4
/* Builds the op under test from its inputs. */
typedef Var *(*OpBuildFn)(Ctx *c, Var **in, void *user);
/* The f64 reference forward: in[i] has the numel of input i; writes `out`. */
typedef void (*RefFwdFn)(double *const *in, double *out, void *user);

typedef struct OpCheck {
    const char *name;
    int n_in;
    int32_t ndim[CHECK_OP_MAX_IN];
    int64_t shape[CHECK_OP_MAX_IN][TENSOR_MAX_DIMS];
    double lo[CHECK_OP_MAX_IN], hi[CHECK_OP_MAX_IN]; /* input ranges (default -1..1) */
    bool no_grad[CHECK_OP_MAX_IN];                   /* inputs not differentiated (ids, t) */
    bool is_int[CHECK_OP_MAX_IN];                    /* integer-valued inputs (ids): i32, range [lo, hi) */
    const float *fixed[CHECK_OP_MAX_IN];             /* use these values instead of random */
    OpBuildFn build;
    RefFwdFn ref;
    void *user;
    double fwd_tol;  /* default 1e-5 */
    double grad_tol; /* default 1e-4 */
    double fd_h;     /* default 1e-6 */
    int64_t max_fd;  /* finite-difference elements checked per input (0: 64, negative: all) */
    bool graph;      /* also check the create-graph backward */
    double graph2_tol; /* second-order tolerance, default 2e-3 */
    uint64_t seed;
} OpCheck;

/* Runs all checks for one op configuration; counts passes and failures; prints a line with
 * the errors found. With ADDC_TEST_DEVICE=cuda (and ADDC_TEST_DTYPE=f32|bf16) the case runs on
 * the GPU instead, against the same f64 reference (test_util.c: check_op_device). */
void check_op(const OpCheck *oc);
/* DEVICE_CUDA when this test program runs its op checks on the GPU (ADDC_TEST_DEVICE=cuda). */
Device test_op_device(void);

/* ---- fixtures: tests/ref/fixtures/NAME.bin, written by tests/ref/make_fixtures.py ---- */
typedef struct FixTensor {
    char name[128];
    int32_t ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    float *data; /* numel floats */
    int64_t numel;
} FixTensor;
typedef struct Fixture {
    int32_t n;
    FixTensor *t;
} Fixture;
/* Loads ADDC_SOURCE_DIR/tests/ref/fixtures/<name>.bin; false with a message on failure. */
bool fixture_load(const char *name, Fixture *f);
const FixTensor *fixture_get(const Fixture *f, const char *name); /* NULL if absent */
void fixture_free(Fixture *f);

/* ---- the tiny UNet fixture (FSDP tests) ---- */

/* The tiny SDXL-family UNet (configs/models/tiny_unet.yaml), random weights of seed 2024, its store
 * allocated on the CPU (with gradients when trainable) and then moved to `device`. */
typedef struct TestUNet {
    UNet2DConfig cfg;
    ParamStore s;
    UNet2D m;
} TestUNet;
/* false (and a failed CHECK) when it cannot be built */
bool test_unet_build(TestUNet *n, bool trainable, Device device);
void test_unet_free(TestUNet *n);

#endif
