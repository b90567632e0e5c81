/* tests/mpi/test_checkpoint: distributed/checkpoint on N ranks (run under mpirun; registered in
 * tests/mpi/checkpoint.cmake).
 *
 * Modes:
 *   (none)         on this world: tensors written by uneven row slabs (ranks with 0 rows, I/O
 *                  in pieces of 4 KiB so that ranks make unequal numbers of pieces) read back bit
 *                  for bit with another split, by every rank whole, blobs from an owner rank,
 *                  rank 0's attribute values; a bad slab, a shape disagreement or a bad argument
 *                  on one rank is an error on every rank (no hang) and leaves the file usable; a
 *                  flipped data byte is ADDC_ERR_FORMAT on every rank.
 *   write DIR      writes step 7 to DIR with this world's uneven split (the cross-world fixture).
 *   read DIR       reads DIR's newest with this world's other split and compares.
 *   writer DIR MB  the kill loop's writer: resumes after DIR's newest, then saves checkpoints of
 *                  about MB megabytes (values a function of the step) in a loop, keeping 3,
 *                  printing "started at step S" and "committed S" (for tests/mpi/ckpt_kill_loop.sh).
 *   verify DIR     the kill loop's check: every committed checkpoint of DIR verifies and holds its
 *                  step's values; the newest opens; `latest` names a committed file. Prints
 *                  "newest step S (N files)" or "no checkpoint".
 *   bench DIR MB   not a test: write and read MB/s of an MB-megabyte checkpoint. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "distributed/checkpoint.h"
#include "tests/test_util.h"

static Comm *comm;
static int rank, size;

static uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Element i of tensor `id` at `step`: arbitrary f32 bits, compared with memcmp. */
static void fill_values(float *x, int64_t first, int64_t n, int64_t step, int id) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)mix(((uint64_t)step << 40) ^ ((uint64_t)id << 32) ^ (uint64_t)(first + i));
        memcpy(&x[i], &bits, 4);
    }
}

typedef struct SampleTensor {
    const char *name;
    int32_t ndim;
    int64_t shape[4];
} SampleTensor;

static const SampleTensor tensors[] = {
    {"net/conv.weight", 4, {37, 3, 3, 5}},
    {"net/conv.bias", 1, {101}},
    {"net/one_row", 2, {1, 17}},
    {"net/empty", 2, {0, 8}},
    {"opt/m/emb", 2, {2049, 33}},
};
#define N_TENSORS ((int)(sizeof tensors / sizeof tensors[0]))

static int64_t rowsize_of(const SampleTensor *t) {
    int64_t n = 1;
    for (int32_t d = 1; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Rank r's rows of `rows` under weight pattern `pat` (r % 4 picks the weight; weight 0: no rows). */
static void split(int pat, int64_t rows, int r, int64_t *lo, int64_t *hi) {
    static const int w[2][4] = {{3, 0, 1, 5}, {1, 4, 0, 2}};
    if (size == 1) {
        *lo = 0;
        *hi = rows;
        return;
    }
    int64_t total = 0, before = 0;
    for (int q = 0; q < size; q++) {
        total += w[pat][q % 4];
        if (q < r) before += w[pat][q % 4];
    }
    *lo = rows * before / total;
    *hi = rows * (before + w[pat][r % 4]) / total;
}

static Status write_tensors(CkptFile *f, int64_t step, int pat) {
    for (int t = 0; t < N_TENSORS; t++) {
        const SampleTensor *T = &tensors[t];
        int64_t lo, hi, rs = rowsize_of(T);
        split(pat, T->shape[0], rank, &lo, &hi);
        float *x = malloc((size_t)((hi - lo) * rs + 1) * sizeof *x);
        fill_values(x, lo * rs, (hi - lo) * rs, step, t);
        Status st = ckpt_write_f32(f, T->name, T->ndim, T->shape, lo, hi, x);
        free(x);
        TRY(st);
    }
    return ADDC_OK;
}

/* Reads every tensor with split `pat` (pat < 0: every rank reads all rows); mismatching
 * elements are counted. */
static Status read_tensors(CkptFile *f, int64_t step, int pat, int64_t *mismatches) {
    *mismatches = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        const SampleTensor *T = &tensors[t];
        int64_t lo = 0, hi = T->shape[0], rs = rowsize_of(T);
        if (pat >= 0) split(pat, T->shape[0], rank, &lo, &hi);
        int64_t n = (hi - lo) * rs;
        float *want = malloc((size_t)(n + 1) * 4), *got = malloc((size_t)(n + 1) * 4);
        fill_values(want, lo * rs, n, step, t);
        memset(got, 0xA5, (size_t)n * 4);
        Status st = ckpt_read_f32(f, T->name, T->ndim, T->shape, lo, hi, got);
        for (int64_t i = 0; st == ADDC_OK && i < n; i++) *mismatches += memcmp(&want[i], &got[i], 4) != 0;
        free(want);
        free(got);
        TRY(st);
    }
    return ADDC_OK;
}

static int64_t sum_all(int64_t v) {
    uint64_t u = (uint64_t)v;
    comm_allreduce(comm, &u, &u, 1, COMM_U64, COMM_SUM, "test sum");
    return (int64_t)u;
}

static void scratch_dir(char *dir, size_t cap, const char *tag) {
    /* Rank 0 makes it; everyone uses rank 0's name. */
    if (rank == 0) {
        snprintf(dir, cap, "%s/addc_ckpt_mpi_%s_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", tag);
        if (!mkdtemp(dir)) dir[0] = '\0';
    }
    uint64_t words[64] = {0};
    if (rank == 0) memcpy(words, dir, strlen(dir) + 1 < sizeof words ? strlen(dir) + 1 : sizeof words - 1);
    comm_broadcast(comm, words, 64, COMM_U64, 0, "test dir");
    memcpy(dir, words, cap < sizeof words ? cap : sizeof words);
    dir[cap - 1] = '\0';
}

static void rm_dir_files(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* ---- the same-world test ---- */

static void test_same_world(void) {
    char dir[512], final[CKPT_PATH_MAX];
    scratch_dir(dir, sizeof dir, "same");
    CHECK(dir[0], "scratch dir");
    CkptFile *f = NULL;
    CHECK_OK(ckpt_create(comm, dir, 3, &f));
    if (!f) return;
    CHECK_OK(write_tensors(f, 3, 0));
    /* A blob only the last rank has (others pass garbage sizes), one every rank has. */
    uint8_t blob[300];
    for (int i = 0; i < 300; i++) blob[i] = (uint8_t)(i * 7 + 1);
    CHECK_OK(ckpt_write_bytes(f, "state/owned", rank == size - 1 ? blob : NULL, rank == size - 1 ? 300 : -5, size - 1));
    CHECK_OK(ckpt_write_bytes(f, "state/shared", blob, 41, -1));
    /* Attributes: rank 0's value is written. */
    CHECK_OK(ckpt_attr_i64(f, "step", 3 + rank));
    CHECK_OK(ckpt_attr_f64(f, "lr", 0.25 + rank));
    CHECK_OK(ckpt_attr_str(f, "config", rank == 0 ? "model: toy\n" : "something else"));

    /* Mistakes on one rank are errors on every rank, and the file stays usable. */
    int64_t shape[] = {10, 3};
    float x[30] = {0};
    int64_t lo = rank == 0 ? 0 : 0, hi = rank == 0 ? 10 : (rank == size - 1 ? 1 : 0); /* overlap when size > 1 */
    Status st;
    if (size > 1) {
        st = ckpt_write_f32(f, "bad/overlap", 2, shape, lo, hi, x);
        CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "exactly once"), "overlap: %s", addc_error_message());
        addc_error_clear();
        int64_t other[] = {10, rank == 1 ? 4 : 3};
        st = ckpt_write_f32(f, "bad/shape", 2, other, rank == 0 ? 0 : 10, 10, x);
        CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "disagree"), "shape: %s", addc_error_message());
        addc_error_clear();
    }
    st = ckpt_write_f32(f, "bad/null", 2, shape, rank == size - 1 ? 0 : 0, rank == size - 1 ? 10 : 0,
                        rank == size - 1 ? NULL : x);
    CHECK(st == ADDC_ERR_INVALID && (rank == size - 1 ? strstr(addc_error_message(), "NULL") != NULL
                                                      : strstr(addc_error_message(), "failed on rank") != NULL),
          "null on the last rank: %s", addc_error_message());
    addc_error_clear();
    CHECK_OK(ckpt_commit(f, 2, final, sizeof final));

    /* Read back with the other split, then every rank whole. */
    bool found = false;
    CHECK_OK(ckpt_open_latest(comm, dir, &f, &found));
    CHECK(found && f, "found");
    if (!f) return;
    int64_t mism = -1;
    CHECK_OK(read_tensors(f, 3, 1, &mism));
    mism = sum_all(mism);
    CHECK(mism == 0, "%lld elements differ (other split)", (long long)mism);
    CHECK_OK(read_tensors(f, 3, -1, &mism));
    mism = sum_all(mism);
    CHECK(mism == 0, "%lld elements differ (every rank whole)", (long long)mism);
    CHECK(!ckpt_has(f, "bad/overlap") && !ckpt_has(f, "bad/shape") && !ckpt_has(f, "bad/null"), "refused datasets absent");
    uint8_t got[300];
    int64_t n = 0;
    CHECK_OK(ckpt_bytes_size(f, "state/owned", &n));
    CHECK(n == 300, "owned blob size %lld", (long long)n);
    memset(got, 0, sizeof got);
    CHECK_OK(ckpt_read_bytes(f, "state/owned", got, 300));
    CHECK(!memcmp(got, blob, 300), "owned blob bytes");
    CHECK_OK(ckpt_read_bytes(f, "state/shared", got, 41));
    CHECK(!memcmp(got, blob, 41), "shared blob bytes");
    int64_t s = -1;
    double lr = 0;
    char cfg[64] = "";
    CHECK_OK(ckpt_get_i64(f, "step", &s));
    CHECK_OK(ckpt_get_f64(f, "lr", &lr));
    CHECK_OK(ckpt_get_str(f, "config", cfg, sizeof cfg));
    CHECK(s == 3 && lr == 0.25 && !strcmp(cfg, "model: toy\n"), "rank 0's attributes: %lld %g '%s'", (long long)s, lr,
          cfg);
    ckpt_close(f);

    /* A flipped byte in a dataset's data: FORMAT on every rank, split or whole. Rank 0 flips it
     * at the data of opt/m/emb, found by its value pattern. */
    if (rank == 0) {
        long len = 0;
        char *b = test_slurp(final, &len);
        float probe[4];
        fill_values(probe, 1000, 4, 3, 4);
        char *at = NULL;
        for (long i = 0; b && i + 16 <= len && !at; i++) {
            if (!memcmp(b + i, probe, 16)) at = b + i;
        }
        CHECK(at != NULL, "found the data of opt/m/emb in the file");
        if (at) {
            at[5] ^= 0x04;
            FILE *fp = fopen(final, "r+b");
            fseek(fp, at - b, SEEK_SET);
            fwrite(at, 1, 16, fp);
            fclose(fp);
        }
        free(b);
    }
    comm_barrier(comm, "test flip");
    CHECK_OK(ckpt_open_path(comm, final, &f));
    if (f) {
        for (int pat = 1; pat >= -1; pat -= 2) {
            st = read_tensors(f, 3, pat, &mism);
            CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "opt/m/emb"), "flipped byte (split %d): %s", pat,
                  addc_error_message());
            addc_error_clear();
        }
        ckpt_close(f);
    }
    comm_barrier(comm, "test cleanup");
    if (rank == 0) rm_dir_files(dir);
}

/* ---- cross-world ---- */

static int mode_write(const char *dir) {
    if (rank == 0) {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "rm -f '%s'/step-*.h5 '%s'/latest", dir, dir);
        if (system(cmd) != 0) fprintf(stderr, "could not clean %s\n", dir);
    }
    comm_barrier(comm, "test clean");
    CkptFile *f = NULL;
    CHECK_OK(ckpt_create(comm, dir, 7, &f));
    if (f) {
        CHECK_OK(write_tensors(f, 7, 0));
        uint8_t blob[77];
        for (int i = 0; i < 77; i++) blob[i] = (uint8_t)(i * 3 + 7);
        CHECK_OK(ckpt_write_bytes(f, "state/rng", blob, rank == size - 1 ? 77 : 0, size - 1));
        CHECK_OK(ckpt_attr_i64(f, "world", size));
        CHECK_OK(ckpt_attr_str(f, "config", "model: toy\nsteps: 7\n"));
        char final[CKPT_PATH_MAX];
        CHECK_OK(ckpt_commit(f, 0, final, sizeof final));
        if (rank == 0) printf("wrote %s on %d ranks\n", final, size);
    }
    return test_main_end("checkpoint write");
}

static int mode_read(const char *dir) {
    CkptFile *f = NULL;
    bool found = false;
    CHECK_OK(ckpt_open_latest(comm, dir, &f, &found));
    CHECK(found && f, "a checkpoint in %s", dir);
    if (f) {
        int64_t world = 0, mism = -1;
        CHECK_OK(ckpt_get_i64(f, "world", &world));
        uint8_t blob[77];
        CHECK_OK(ckpt_read_bytes(f, "state/rng", blob, 77));
        for (int i = 0; i < 77; i++) CHECK(blob[i] == (uint8_t)(i * 3 + 7), "blob byte %d", i);
        char cfg[64] = "";
        CHECK_OK(ckpt_get_str(f, "config", cfg, sizeof cfg));
        CHECK(!strcmp(cfg, "model: toy\nsteps: 7\n"), "config '%s'", cfg);
        CHECK_OK(read_tensors(f, 7, 1, &mism));
        mism = sum_all(mism);
        CHECK(mism == 0, "%lld elements differ", (long long)mism);
        if (rank == 0) printf("read %s (written on %lld ranks) on %d ranks: %lld elements differ\n", ckpt_path(f),
                              (long long)world, size, (long long)mism);
        ckpt_close(f);
    }
    return test_main_end("checkpoint read");
}

/* ---- the kill loop ---- */

#define KILL_TENSORS 3

static int64_t kill_rows(double mb) { return (int64_t)(mb * 1e6 / 4 / 1024 / KILL_TENSORS) + 1; }

static Status kill_save(const char *dir, int64_t step, double mb) {
    CkptFile *f;
    TRY(ckpt_create(comm, dir, step, &f));
    int64_t rows = kill_rows(mb), shape[2] = {rows, 1024}, lo, hi;
    split((int)(step % 2), rows, rank, &lo, &hi);
    float *x = malloc((size_t)((hi - lo) * 1024 + 1) * sizeof *x);
    Status st = ADDC_OK;
    for (int t = 0; t < KILL_TENSORS && st == ADDC_OK; t++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", t);
        fill_values(x, lo * 1024, (hi - lo) * 1024, step, t);
        st = ckpt_write_f32(f, name, 2, shape, lo, hi, x);
    }
    free(x);
    uint8_t b[64];
    for (int i = 0; i < 64; i++) b[i] = (uint8_t)(step + i);
    if (st == ADDC_OK) st = ckpt_write_bytes(f, "state", b, 64, -1);
    if (st == ADDC_OK) st = ckpt_attr_i64(f, "step", step);
    if (st != ADDC_OK) {
        ckpt_abort(f);
        return st;
    }
    return ckpt_commit(f, 3, NULL, 0);
}

static int mode_writer(const char *dir, double mb) {
    char pidfile[CKPT_PATH_MAX + 64];
    snprintf(pidfile, sizeof pidfile, "%s.pid.%d", dir, rank);
    FILE *pf = fopen(pidfile, "w");
    if (pf) {
        fprintf(pf, "%d\n", (int)getpid());
        fclose(pf);
    }
    CkptFile *f = NULL;
    bool found = false;
    int64_t step = 1;
    Status st = ckpt_open_latest(comm, dir, &f, &found);
    if (st == ADDC_OK && found) {
        st = ckpt_get_i64(f, "step", &step);
        step++;
        ckpt_close(f);
    }
    if (st != ADDC_OK) {
        fprintf(stderr, "writer: %s\n", addc_error_message());
        return 1;
    }
    if (rank == 0) {
        printf("started at step %lld\n", (long long)step);
        fflush(stdout);
    }
    for (time_t t0 = time(NULL); time(NULL) - t0 < 60; step++) {
        if ((st = kill_save(dir, step, mb)) != ADDC_OK) {
            fprintf(stderr, "writer: %s\n", addc_error_message());
            return 1;
        }
        if (rank == 0) {
            printf("committed %lld\n", (long long)step);
            fflush(stdout);
        }
    }
    return 0;
}

static bool kill_verify_file(const char *path, int64_t *step_out, double mb) {
    CkptFile *f;
    if (ckpt_open_path(comm, path, &f) != ADDC_OK) {
        fprintf(stderr, "verify: %s\n", addc_error_message());
        return false;
    }
    int64_t step = -1;
    bool ok = ckpt_get_i64(f, "step", &step) == ADDC_OK;
    char want_name[64];
    snprintf(want_name, sizeof want_name, "/step-%07lld.h5", (long long)step);
    ok = ok && strstr(path, want_name) != NULL;
    int64_t rows = kill_rows(mb), shape[2] = {rows, 1024};
    float *x = malloc((size_t)rows * 1024 * 4), *w = malloc((size_t)rows * 1024 * 4);
    for (int t = 0; t < KILL_TENSORS && ok; t++) {
        char name[32];
        snprintf(name, sizeof name, "t%d", t);
        ok = ckpt_read_f32(f, name, 2, shape, 0, rows, x) == ADDC_OK;
        fill_values(w, 0, rows * 1024, step, t);
        ok = ok && memcmp(x, w, (size_t)rows * 1024 * 4) == 0;
    }
    uint8_t b[64];
    ok = ok && ckpt_read_bytes(f, "state", b, 64) == ADDC_OK;
    for (int i = 0; ok && i < 64; i++) ok = b[i] == (uint8_t)(step + i);
    if (!ok) fprintf(stderr, "verify: %s (step %lld): %s\n", path, (long long)step, addc_error_message());
    free(x);
    free(w);
    ckpt_close(f);
    *step_out = step;
    return ok;
}

static int mode_verify(const char *dir, double mb) {
    CkptFile *f = NULL;
    bool found = false;
    CHECK_OK(ckpt_open_latest(comm, dir, &f, &found));
    char names[16][256];
    int n = 0;
    CHECK_OK(ckpt_list(dir, names, 16, &n));
    CHECK(found == (n > 0), "open_latest found %d, %d committed", (int)found, n);
    if (!found) {
        printf("no checkpoint\n");
        return test_main_end("checkpoint verify");
    }
    char newest[CKPT_PATH_MAX + 300];
    snprintf(newest, sizeof newest, "%s/%s", dir, names[0]);
    CHECK(!strcmp(ckpt_path(f), newest), "open_latest opened %s, the newest is %s", ckpt_path(f), newest);
    ckpt_close(f);
    int64_t top = -1;
    for (int i = 0; i < n; i++) {
        char p[CKPT_PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        int64_t step = -1;
        CHECK(kill_verify_file(p, &step, mb), "%s verifies and holds its step's values", p);
        if (i == 0) top = step;
    }
    char lp[CKPT_PATH_MAX + 300];
    snprintf(lp, sizeof lp, "%s/latest", dir);
    char *latest = test_slurp(lp, NULL);
    if (latest) {
        latest[strcspn(latest, "\n")] = '\0';
        bool listed = false;
        for (int i = 0; i < n; i++) listed = listed || !strcmp(names[i], latest);
        CHECK(listed, "latest names %s, which is not committed", latest);
        free(latest);
    }
    printf("newest step %lld (%d files)\n", (long long)top, n);
    return test_main_end("checkpoint verify");
}

/* ---- benchmark ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double max_all(double v) {
    comm_allreduce(comm, &v, &v, 1, COMM_F64, COMM_MAX, "bench max");
    return v;
}

static int mode_bench(const char *dir, double mb) {
    int ntensors = 16;
    int64_t rows = (int64_t)(mb * 1024 * 1024 / 4 / 1024 / ntensors), shape[2] = {rows, 1024}, lo, hi;
    lo = rows * rank / size;
    hi = rows * (rank + 1) / size;
    float *x = malloc((size_t)((hi - lo) * 1024 + 1) * 4);
    fill_values(x, lo * 1024, (hi - lo) * 1024, 1, 0);
    double total_mb = (double)rows * 1024 * 4 * ntensors / (1024.0 * 1024.0);
    for (int rep = 0; rep < 3; rep++) {
        comm_barrier(comm, "bench");
        double t0 = now_s();
        CkptFile *f;
        if (ckpt_create(comm, dir, rep + 1, &f) != ADDC_OK) goto fail;
        for (int t = 0; t < ntensors; t++) {
            char name[32];
            snprintf(name, sizeof name, "t%02d", t);
            if (ckpt_write_f32(f, name, 2, shape, lo, hi, x) != ADDC_OK) goto fail;
        }
        double t1 = now_s();
        if (ckpt_commit(f, 1, NULL, 0) != ADDC_OK) goto fail;
        double t2 = max_all(now_s() - t0), tw = max_all(t1 - t0);
        comm_barrier(comm, "bench");
        double t3 = now_s();
        bool found;
        if (ckpt_open_latest(comm, dir, &f, &found) != ADDC_OK || !found) goto fail;
        for (int t = 0; t < ntensors; t++) {
            char name[32];
            snprintf(name, sizeof name, "t%02d", t);
            if (ckpt_read_f32(f, name, 2, shape, lo, hi, x) != ADDC_OK) goto fail;
        }
        ckpt_close(f);
        double tr = max_all(now_s() - t3);
        if (rank == 0) {
            printf("np %d, %.0f MB: write %.0f MB/s (%.3f s with commit and fsync; %.0f MB/s before the commit), "
                   "read %.0f MB/s (%.3f s, page cache)\n", size, total_mb, total_mb / t2, t2, total_mb / tw,
                   total_mb / tr, tr);
        }
    }
    free(x);
    return 0;
fail:
    fprintf(stderr, "bench: %s\n", addc_error_message());
    return 1;
}

int main(int argc, char **argv) {
    if (comm_world(&comm) != ADDC_OK) {
        fprintf(stderr, "comm_world: %s\n", addc_error_message());
        return 1;
    }
    rank = comm_rank(comm);
    size = comm_size(comm);
    const char *mode = argc > 1 ? argv[1] : "";
    double mb = argc > 3 ? atof(argv[3]) : 4.0;
    int rc;
    if (!strcmp(mode, "write") && argc > 2) rc = mode_write(argv[2]);
    else if (!strcmp(mode, "read") && argc > 2) rc = mode_read(argv[2]);
    else if (!strcmp(mode, "writer") && argc > 2) rc = mode_writer(argv[2], mb);
    else if (!strcmp(mode, "verify") && argc > 2) rc = mode_verify(argv[2], mb);
    else if (!strcmp(mode, "bench") && argc > 2) rc = mode_bench(argv[2], argc > 3 ? mb : 64.0);
    else if (argc > 1) {
        fprintf(stderr, "usage: test_checkpoint [write DIR | read DIR | writer DIR MB | verify DIR MB | bench DIR MB]\n");
        rc = 2;
    } else {
        setenv("ADDC_CKPT_PIECE_BYTES", "4096", 1); /* before the first checkpoint call reads it */
        test_same_world();
        char suite[64];
        snprintf(suite, sizeof suite, "checkpoint (rank %d of %d)", rank, size);
        rc = test_main_end(suite);
    }
    comm_finalize();
    return rc;
}
