/* tests/unit/test_checkpoint_file: distributed/checkpoint on the solo communicator (no mpirun).
 *
 * - a checkpoint with a 4-D, a 1-D, a 2-D and an empty tensor (odd sizes, arbitrary bit
 *   patterns), blobs (one empty) and attributes (a 100 KB string) reads back bit for bit, whole
 *   and in several row splits; shapes, sizes, missing names and bad arguments are reported;
 * - commits keep the newest K, `latest` names the newest; steps past 7 digits sort numerically;
 *   stale .tmp files are ignored by scans and removed by the next save; an aborted save leaves
 *   nothing;
 * - damage: the newest file truncated (0, half, all but 100 bytes) makes ckpt_open_latest fall
 *   back to the previous one with a message; a flipped byte in a dataset's data is
 *   ADDC_ERR_FORMAT naming the dataset when it is read; one byte flipped at ~100 places over the
 *   whole file never crashes and never reads wrong values; a directory of only bad files is a
 *   clean ADDC_ERR_IO naming it. */
#define _GNU_SOURCE /* nftw */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "distributed/checkpoint.h"
#include "tests/test_util.h"

static char tmpdir[256];
static Comm *comm;

/* Under LeakSanitizer: HDF5 1.10 itself leaks a few object-header blocks on its error paths when
 * it reads the deliberately corrupted metadata below (none without the corruption). Our own
 * HDF5 handles are checked instead: no object stays open after each part. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libhdf5"; }

static void check_nothing_open(const char *part) {
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    CHECK(n == 0, "%s: %zd HDF5 objects still open", part, n);
}

/* ---- the sample checkpoint: values are a function of (step, tensor, index) ---- */

typedef struct SampleTensor {
    const char *name;
    int32_t ndim;
    int64_t shape[4];
} SampleTensor;

static const SampleTensor tensors[] = {
    {"unet/down.0/conv.weight", 4, {7, 3, 5, 3}},
    {"unet/down.0/conv.bias", 1, {13}},
    {"emb.table", 2, {64, 129}},
    {"opt/empty", 2, {0, 4}},
};
#define N_TENSORS ((int)(sizeof tensors / sizeof tensors[0]))
#define BIG_BLOB 100000

static uint64_t mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static int64_t numel(const SampleTensor *t) {
    int64_t n = 1;
    for (int32_t d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Arbitrary f32 bit patterns (NaN payloads, -0, subnormals included): compared with memcmp. */
static void fill_values(float *x, int64_t n, int64_t step, int id) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)mix(((uint64_t)step << 40) ^ ((uint64_t)id << 32) ^ (uint64_t)i);
        memcpy(&x[i], &bits, 4);
    }
}

static void fill_bytes(uint8_t *b, int64_t n, int64_t step, int id) {
    for (int64_t i = 0; i < n; i++) b[i] = (uint8_t)mix(((uint64_t)step << 40) ^ ((uint64_t)(id + 100) << 32) ^ (uint64_t)i);
}

static char *big_string(int64_t step) {
    char *s = malloc(100001);
    for (int i = 0; i < 100000; i++) s[i] = (char)('a' + (i * 7 + step) % 26);
    s[100000] = '\0';
    return s;
}

static Status write_sample(const char *dir, int64_t step, int keep, char *final, int cap) {
    CkptFile *f;
    TRY(ckpt_create(comm, dir, step, &f));
    Status st = ADDC_OK;
    for (int t = 0; t < N_TENSORS && st == ADDC_OK; t++) {
        int64_t n = numel(&tensors[t]);
        float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
        fill_values(x, n, step, t);
        st = ckpt_write_f32(f, tensors[t].name, tensors[t].ndim, tensors[t].shape, 0, tensors[t].shape[0], x);
        free(x);
    }
    uint8_t *blob = malloc(BIG_BLOB);
    fill_bytes(blob, BIG_BLOB, step, 0);
    if (st == ADDC_OK) st = ckpt_write_bytes(f, "state/rng", blob, 24, -1);
    if (st == ADDC_OK) st = ckpt_write_bytes(f, "state/loader", NULL, 0, 0);
    if (st == ADDC_OK) st = ckpt_write_bytes(f, "state/big", blob, BIG_BLOB, 0);
    free(blob);
    char *cfg = big_string(step);
    if (st == ADDC_OK) st = ckpt_attr_i64(f, "step", step);
    if (st == ADDC_OK) st = ckpt_attr_f64(f, "lr", 1.0 / 3.0 + (double)step);
    if (st == ADDC_OK) st = ckpt_attr_str(f, "config", cfg);
    if (st == ADDC_OK) st = ckpt_attr_str(f, "note", "");
    free(cfg);
    if (st != ADDC_OK) {
        ckpt_abort(f);
        return st;
    }
    return ckpt_commit(f, keep, final, cap);
}

/* Reads every dataset, blob and attribute of f; true when all are exactly those of `step`. On a
 * read error, *err gets its status (and the message stays pending) and the rest is skipped. */
static bool read_sample(CkptFile *f, int64_t step, Status *err, bool splits) {
    *err = ADDC_OK;
    bool same = true;
    for (int t = 0; t < N_TENSORS && *err == ADDC_OK; t++) {
        const SampleTensor *T = &tensors[t];
        int64_t n = numel(T), rowsize = n / (T->shape[0] ? T->shape[0] : 1);
        float *want = malloc((size_t)(n > 0 ? n : 1) * sizeof *want), *got = malloc((size_t)(n > 0 ? n : 1) * 4);
        fill_values(want, n, step, t);
        memset(got, 0x55, (size_t)n * 4);
        *err = ckpt_read_f32(f, T->name, T->ndim, T->shape, 0, T->shape[0], got);
        if (*err == ADDC_OK) same = same && memcmp(want, got, (size_t)n * 4) == 0;
        /* Row splits: [0, a), [a, b), [b, rows), each read on its own. */
        int64_t rows = T->shape[0];
        int64_t cuts[][2] = {{0, rows / 3}, {rows / 3, rows / 3 + 1 < rows ? rows / 3 + 1 : rows}, {0, 0}};
        cuts[2][0] = cuts[1][1];
        cuts[2][1] = rows;
        for (int c = 0; splits && c < 3 && *err == ADDC_OK; c++) {
            memset(got, 0x55, (size_t)n * 4);
            int64_t lo = cuts[c][0], hi = cuts[c][1];
            *err = ckpt_read_f32(f, T->name, T->ndim, T->shape, lo, hi, got);
            if (*err == ADDC_OK) same = same && memcmp(want + lo * rowsize, got, (size_t)((hi - lo) * rowsize) * 4) == 0;
        }
        free(want);
        free(got);
    }
    const char *blobs[] = {"state/rng", "state/loader", "state/big"};
    const int64_t sizes[] = {24, 0, BIG_BLOB};
    uint8_t *want = malloc(BIG_BLOB), *got = malloc(BIG_BLOB);
    fill_bytes(want, BIG_BLOB, step, 0);
    for (int b = 0; b < 3 && *err == ADDC_OK; b++) {
        int64_t n = -1;
        *err = ckpt_bytes_size(f, blobs[b], &n);
        if (*err != ADDC_OK) break;
        same = same && n == sizes[b];
        if (n != sizes[b]) break;
        memset(got, 0, BIG_BLOB);
        *err = ckpt_read_bytes(f, blobs[b], got, n);
        if (*err == ADDC_OK) same = same && memcmp(want, got, (size_t)n) == 0;
    }
    free(want);
    free(got);
    int64_t s = -1;
    double lr = 0;
    char *cfg = malloc(100001), note[8] = "x";
    if (*err == ADDC_OK) *err = ckpt_get_i64(f, "step", &s);
    if (*err == ADDC_OK) *err = ckpt_get_f64(f, "lr", &lr);
    if (*err == ADDC_OK) *err = ckpt_get_str(f, "config", cfg, 100001);
    if (*err == ADDC_OK) *err = ckpt_get_str(f, "note", note, sizeof note);
    if (*err == ADDC_OK) {
        char *want_cfg = big_string(step);
        same = same && s == step && lr == 1.0 / 3.0 + (double)step && !strcmp(cfg, want_cfg) && note[0] == '\0';
        free(want_cfg);
    }
    free(cfg);
    return same;
}

/* ---- files ---- */

static char *tpath(char *buf, const char *sub, const char *name) {
    snprintf(buf, 512, "%s/%s%s%s", tmpdir, sub, name ? "/" : "", name ? name : "");
    return buf;
}

static bool exists(const char *p) { return access(p, F_OK) == 0; }

static char *read_all(const char *p, long *n) { return test_slurp(p, n); }

static bool write_all(const char *p, const void *b, long n) {
    FILE *fp = fopen(p, "wb");
    if (!fp) return false;
    bool ok = fwrite(b, 1, (size_t)n, fp) == (size_t)n;
    return fclose(fp) == 0 && ok;
}

static int rm_one(const char *p, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb, (void)type, (void)ftw;
    return remove(p);
}

static void rm_rf(const char *p) { nftw(p, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* stderr to a file while `f` runs; the text comes back in out (cap bytes). */
static int stderr_saved = -1;
static void stderr_to(const char *p) {
    fflush(stderr);
    stderr_saved = dup(2);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
}
static void stderr_back(const char *p, char *out, size_t cap) {
    fflush(stderr);
    dup2(stderr_saved, 2);
    close(stderr_saved);
    long n = 0;
    char *s = read_all(p, &n);
    snprintf(out, cap, "%s", s ? s : "");
    free(s);
}

/* The file offset of a dataset's contiguous data (HDF5 directly). */
static haddr_t data_offset(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
    haddr_t off = d >= 0 ? H5Dget_offset(d) : HADDR_UNDEF;
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    return off;
}

/* ---- tests ---- */

static void test_round_trip(void) {
    char dir[512], final[512], p[512];
    tpath(dir, "rt/checkpoints", NULL);
    CHECK_OK(write_sample(dir, 42, 0, final, sizeof final));
    CHECK(!strcmp(final, tpath(p, "rt/checkpoints", "step-0000042.h5")), "final path %s", final);
    CHECK(!exists(tpath(p, "rt/checkpoints", "step-0000042.h5.tmp")), "the .tmp is gone after the commit");

    CkptFile *f = NULL;
    bool found = false;
    CHECK_OK(ckpt_open_latest(comm, dir, &f, &found));
    CHECK(found && f, "found the checkpoint");
    if (!f) return;
    CHECK(!strcmp(ckpt_path(f), final), "opened %s", ckpt_path(f));
    Status err;
    bool same = read_sample(f, 42, &err, true);
    CHECK_OK(err);
    CHECK(same, "every dataset, blob and attribute reads back bit for bit (whole and in row splits)");
    CHECK(ckpt_bytes(f) > BIG_BLOB, "bytes read %lld", (long long)ckpt_bytes(f));

    int32_t nd = -1;
    int64_t shape[CKPT_MAX_DIMS];
    CHECK_OK(ckpt_shape(f, "unet/down.0/conv.weight", &nd, shape));
    CHECK(nd == 4 && shape[0] == 7 && shape[1] == 3 && shape[2] == 5 && shape[3] == 3, "4-D shape");
    CHECK(ckpt_has(f, "emb.table") && ckpt_has(f, "unet/down.0") && !ckpt_has(f, "unet/up.0/x") && !ckpt_has(f, "nope"),
          "ckpt_has");
    addc_error_clear();
    Status st = ckpt_shape(f, "unet/up.0/x", &nd, shape);
    CHECK(st == ADDC_ERR_FORMAT && nd == 0 && strstr(addc_error_message(), "unet/up.0/x"),
          "missing dataset: %s", addc_error_message());
    addc_error_clear();
    float buf[13 * 4];
    int64_t wrong[] = {12};
    st = ckpt_read_f32(f, "unet/down.0/conv.bias", 1, wrong, 0, 12, buf);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "(13)") && strstr(addc_error_message(), "(12)"),
          "shape mismatch named: %s", addc_error_message());
    addc_error_clear();
    int64_t bias_shape[] = {13};
    st = ckpt_read_f32(f, "unet/down.0/conv.bias", 1, bias_shape, 5, 14, buf);
    CHECK(st == ADDC_ERR_INVALID, "rows past the end: %s", addc_error_message());
    addc_error_clear();
    st = ckpt_read_f32(f, "state/rng", 1, (int64_t[]){24}, 0, 24, buf);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "state/rng"), "a blob read as f32: %s",
          addc_error_message());
    addc_error_clear();
    char small[10];
    st = ckpt_get_str(f, "config", small, sizeof small);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "config"), "small buffer: %s", addc_error_message());
    addc_error_clear();
    int64_t v;
    st = ckpt_get_i64(f, "lr", &v);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "lr"), "f64 read as i64: %s", addc_error_message());
    addc_error_clear();
    st = ckpt_get_i64(f, "absent", &v);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "absent"), "missing attr: %s", addc_error_message());
    addc_error_clear();
    uint8_t b24[24];
    st = ckpt_read_bytes(f, "state/rng", b24, 23);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "24"), "blob size mismatch: %s", addc_error_message());
    addc_error_clear();
    ckpt_close(f);

    /* A file from another schema version is refused by name. */
    hid_t h = H5Fopen(final, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = h >= 0 ? H5Aopen(h, "addc_schema", H5P_DEFAULT) : -1;
    int64_t schema = 99;
    CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &schema) >= 0, "rewrote addc_schema");
    if (a >= 0) H5Aclose(a);
    if (h >= 0) H5Fclose(h);
    st = ckpt_open_path(comm, final, &f);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "schema version 99") && !f, "schema 99: %s",
          addc_error_message());
    addc_error_clear();
}

static void test_write_errors(void) {
    char dir[512];
    tpath(dir, "errs", NULL);
    CkptFile *f;
    CHECK_OK(ckpt_create(comm, dir, 1, &f));
    float x[12] = {0};
    int64_t shape[] = {4, 3};
    Status st = ckpt_write_f32(f, "a", 2, shape, 0, 3, x);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "exactly once"), "rows uncovered: %s",
          addc_error_message());
    addc_error_clear();
    st = ckpt_write_f32(f, "a", 2, shape, 0, 5, x);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "'a'"), "rows outside: %s", addc_error_message());
    addc_error_clear();
    st = ckpt_write_f32(f, "a", 9, shape, 0, 4, x);
    CHECK(st == ADDC_ERR_INVALID, "9 dims: %s", addc_error_message());
    addc_error_clear();
    CHECK_OK(ckpt_write_f32(f, "a", 2, shape, 0, 4, x));
    st = ckpt_write_f32(f, "a", 2, shape, 0, 4, x);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "twice"), "twice: %s", addc_error_message());
    addc_error_clear();
    st = ckpt_attr_i64(f, "addc_complete", 1);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "reserved"), "reserved: %s", addc_error_message());
    addc_error_clear();
    CHECK_OK(ckpt_attr_i64(f, "k", 1));
    st = ckpt_attr_f64(f, "k", 1);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "'k'"), "attr twice: %s", addc_error_message());
    addc_error_clear();
    st = ckpt_write_bytes(f, "blob", x, 4, 3);
    CHECK(st == ADDC_ERR_INVALID && strstr(addc_error_message(), "owner"), "owner 3 of 1: %s", addc_error_message());
    addc_error_clear();
    /* After refused calls the file is still good. */
    char final[512];
    CHECK_OK(ckpt_commit(f, 0, final, sizeof final));
    CkptFile *r;
    CHECK_OK(ckpt_open_path(comm, final, &r));
    float y[12];
    memset(y, 1, sizeof y);
    if (r) {
        CHECK_OK(ckpt_read_f32(r, "a", 2, shape, 0, 4, y));
        CHECK(!memcmp(x, y, sizeof x), "values");
        ckpt_close(r);
    }
    st = ckpt_create(comm, dir, -1, &f);
    CHECK(st == ADDC_ERR_INVALID && !f, "negative step: %s", addc_error_message());
    addc_error_clear();
}

static void test_keep_latest_tmp(void) {
    char dir[512], p[512], final[512];
    tpath(dir, "keep", NULL);
    for (int64_t s = 1; s <= 5; s++) CHECK_OK(write_sample(dir, s * 100, 3, final, sizeof final));
    char names[8][256];
    int n = 0;
    CHECK_OK(ckpt_list(dir, names, 8, &n));
    CHECK(n == 3 && !strcmp(names[0], "step-0000500.h5") && !strcmp(names[1], "step-0000400.h5") &&
              !strcmp(names[2], "step-0000300.h5"),
          "keep 3: %d names, first %s", n, n ? names[0] : "-");
    long len = 0;
    char *latest = read_all(tpath(p, "keep", "latest"), &len);
    CHECK(latest && !strcmp(latest, "step-0000500.h5\n"), "latest holds '%s'", latest ? latest : "(none)");
    free(latest);
    CHECK(!exists(tpath(p, "keep", "latest.tmp")), "no latest.tmp left");
    CHECK_OK(ckpt_list(dir, names, 2, &n));
    CHECK(n == 2 && !strcmp(names[1], "step-0000400.h5"), "list capped at 2: %d", n);

    /* keep 0 keeps all. */
    CHECK_OK(write_sample(dir, 600, 0, final, sizeof final));
    CHECK_OK(ckpt_list(dir, names, 8, &n));
    CHECK(n == 4, "keep 0: %d files", n);

    /* A stale .tmp (newer step) and latest.tmp: ignored by the scan, removed by the next save. */
    CHECK(write_all(tpath(p, "keep", "step-0000900.h5.tmp"), "garbage", 7), "wrote a stale tmp");
    CHECK(write_all(tpath(p, "keep", "latest.tmp"), "x", 1), "wrote latest.tmp");
    CHECK(write_all(tpath(p, "keep", "step-12x.h5"), "junk", 4), "wrote a foreign name");
    CkptFile *f = NULL;
    bool found = false;
    CHECK_OK(ckpt_open_latest(comm, dir, &f, &found));
    CHECK(found && f && strstr(ckpt_path(f), "step-0000600.h5"), "the scan ignores the tmp: %s", f ? ckpt_path(f) : "-");
    ckpt_close(f);
    CHECK(exists(tpath(p, "keep", "step-0000900.h5.tmp")), "a scan does not delete a .tmp (a save may be writing it)");
    CHECK_OK(ckpt_create(comm, dir, 700, &f));
    CHECK(!exists(tpath(p, "keep", "step-0000900.h5.tmp")) && !exists(tpath(p, "keep", "latest.tmp")),
          "the next save removed the stale tmp files");
    CHECK(exists(tpath(p, "keep", "step-0000700.h5.tmp")), "the save's own tmp");
    ckpt_abort(f);
    CHECK(!exists(tpath(p, "keep", "step-0000700.h5.tmp")) && !exists(tpath(p, "keep", "step-0000700.h5")),
          "abort leaves nothing");
    CHECK(exists(tpath(p, "keep", "step-12x.h5")), "foreign names are left alone");

    /* Steps beyond 7 digits sort by number. */
    CHECK_OK(write_sample(dir, 123456789, 2, final, sizeof final));
    CHECK(strstr(final, "/step-123456789.h5") != NULL, "8+ digit name %s", final);
    CHECK_OK(ckpt_list(dir, names, 8, &n));
    CHECK(n == 2 && !strcmp(names[0], "step-123456789.h5") && !strcmp(names[1], "step-0000600.h5"),
          "numeric order: %s, %s", n > 0 ? names[0] : "-", n > 1 ? names[1] : "-");

    /* Nothing there: found false, no error. */
    CHECK_OK(ckpt_open_latest(comm, tpath(p, "nonexistent/dir", NULL), &f, &found));
    CHECK(!found && !f, "missing dir: not found");
    mkdir(tpath(p, "empty", NULL), 0755);
    CHECK(write_all(tpath(p, "empty", "step-0000001.h5.tmp"), "x", 1), "tmp in empty dir");
    CHECK_OK(ckpt_open_latest(comm, tpath(p, "empty", NULL), &f, &found));
    CHECK(!found && !f, "only a tmp: not found");
}

/* Damage to the newest of two checkpoints. */
static void test_damage(void) {
    char dir[512], p5[512], p4[512], log[512], msg[8192];
    tpath(dir, "dmg", NULL);
    CHECK_OK(write_sample(dir, 4, 0, p4, sizeof p4));
    CHECK_OK(write_sample(dir, 5, 0, p5, sizeof p5));
    tpath(log, "stderr.txt", NULL);
    long size = 0;
    char *orig = read_all(p5, &size);
    CHECK(orig && size > 1000, "read %s (%ld bytes)", p5, size);
    if (!orig) return;

    long cuts[] = {0, size / 2, size - 100};
    for (int c = 0; c < 3; c++) {
        CHECK(write_all(p5, orig, cuts[c]), "truncated to %ld", cuts[c]);
        CkptFile *f = NULL;
        bool found = false;
        stderr_to(log);
        Status st = ckpt_open_latest(comm, dir, &f, &found);
        stderr_back(log, msg, sizeof msg);
        CHECK(st == ADDC_OK && found && f && strstr(ckpt_path(f), "step-0000004.h5"),
              "truncated to %ld of %ld: fell back (%s)", cuts[c], size, f ? ckpt_path(f) : addc_error_message());
        CHECK(strstr(msg, "step-0000005.h5 is unreadable (") && strstr(msg, "falling back to step-0000004.h5"),
              "message: %s", msg);
        if (c == 2) printf("  truncated newest -> %s", msg);
        Status err;
        if (f) CHECK(read_sample(f, 4, &err, false) && err == ADDC_OK, "the previous one reads exactly");
        ckpt_close(f);
    }

    /* A flipped byte inside a dataset's data: found when that dataset is read. */
    const char *targets[] = {"emb.table", "state/big"};
    for (int t = 0; t < 2; t++) {
        CHECK(write_all(p5, orig, size), "restored");
        haddr_t off = data_offset(p5, targets[t]);
        CHECK(off != HADDR_UNDEF && off + 200 < (haddr_t)size, "data offset of %s", targets[t]);
        if (off == HADDR_UNDEF) continue;
        char *bad = malloc((size_t)size);
        memcpy(bad, orig, (size_t)size);
        bad[off + 123] ^= 0x10;
        CHECK(write_all(p5, bad, size), "flipped a byte");
        free(bad);
        CkptFile *f = NULL;
        bool found = false;
        CHECK_OK(ckpt_open_latest(comm, dir, &f, &found));
        CHECK(found && f && strstr(ckpt_path(f), "step-0000005.h5"), "opens (the damage is in data)");
        if (!f) continue;
        Status err;
        bool same = read_sample(f, 5, &err, false);
        CHECK(err == ADDC_ERR_FORMAT && strstr(addc_error_message(), targets[t]) &&
                  strstr(addc_error_message(), "corrupt"),
              "reading %s: status %d, %s", targets[t], (int)err, addc_error_message());
        (void)same;
        if (t == 0) printf("  flipped data byte -> %s\n", addc_error_message());
        addc_error_clear();
        ckpt_close(f);
        /* The caller's fallback: the next older one. */
        CHECK_OK(ckpt_open_path(comm, p4, &f));
        if (f) CHECK(read_sample(f, 4, &err, false) && err == ADDC_OK, "older one reads");
        ckpt_close(f);
    }

    /* One byte flipped at ~100 places over the whole file, metadata included: an error or the
     * exact values, never anything else. */
    int errors = 0, exact = 0, fallbacks = 0, wrong = 0;
    for (int k = 0; k < 101; k++) {
        long at = k < 8 ? k * 13 : (long)((double)(k - 8) / 93.0 * (double)(size - 1));
        char *bad = malloc((size_t)size);
        memcpy(bad, orig, (size_t)size);
        bad[at] ^= (char)(1u << (k % 8));
        write_all(p5, bad, size);
        free(bad);
        CkptFile *f = NULL;
        bool found = false;
        stderr_to(log);
        Status st = ckpt_open_latest(comm, dir, &f, &found);
        stderr_back(log, msg, sizeof msg);
        if (st != ADDC_OK || !f) {
            wrong++; /* step 4 is intact: this must not fail */
            addc_error_clear();
            continue;
        }
        bool newest = strstr(ckpt_path(f), "step-0000005.h5") != NULL;
        Status err;
        bool same = read_sample(f, newest ? 5 : 4, &err, false);
        if (!newest) {
            fallbacks++;
            if (err != ADDC_OK || !same) wrong++;
        } else if (err != ADDC_OK) {
            errors++;
        } else if (same) {
            exact++;
        } else {
            wrong++;
            fprintf(stderr, "FAIL: byte %ld flipped: read wrong values without an error\n", at);
        }
        addc_error_clear();
        ckpt_close(f);
    }
    CHECK(wrong == 0, "%d flips gave wrong values or lost the older checkpoint", wrong);
    printf("  101 single-byte flips over %ld bytes: %d fell back at open, %d errors at read, %d harmless (exact "
           "values), %d wrong\n", size, fallbacks, errors, exact, wrong);
    free(orig);

    /* A directory of only bad files: a clean error naming it. */
    char bad[512], p[512], h5[512];
    tpath(bad, "allbad", NULL);
    mkdir(bad, 0755);
    write_all(tpath(p, "allbad", "step-0000001.h5"), "not an hdf5 file at all", 23);
    write_all(tpath(p, "allbad", "step-0000002.h5"), "", 0);
    /* A real HDF5 file that was never committed (no addc_complete). */
    hid_t h = H5Fcreate(tpath(h5, "allbad", "step-0000003.h5"), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(h, "addc_schema", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int64_t one = 1;
    H5Awrite(a, H5T_NATIVE_INT64, &one);
    H5Aclose(a);
    H5Sclose(sp);
    H5Fclose(h);
    CkptFile *f = NULL;
    bool found = true;
    stderr_to(log);
    Status st = ckpt_open_latest(comm, bad, &f, &found);
    stderr_back(log, msg, sizeof msg);
    CHECK(st == ADDC_ERR_IO && !found && !f && strstr(addc_error_message(), bad) &&
              strstr(addc_error_message(), "none of its 3"),
          "all bad: %s", addc_error_message());
    CHECK(strstr(msg, "step-0000003.h5 is unreadable (incomplete") && strstr(msg, "falling back to step-0000002.h5") &&
              strstr(msg, "step-0000001.h5 is unreadable (not a readable HDF5 file") &&
              strstr(msg, "no older checkpoint"),
          "messages: %s", msg);
    printf("  all bad -> %s\n", addc_error_message());
    addc_error_clear();
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/addc_ckpt_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    CHECK_OK(comm_world(&comm));
    CHECK(!comm_is_mpi(comm), "the unit test runs on the solo communicator");
    test_round_trip();
    check_nothing_open("round trip");
    test_write_errors();
    check_nothing_open("write errors");
    test_keep_latest_tmp();
    check_nothing_open("keep, latest, tmp");
    test_damage();
    check_nothing_open("damage");
    rm_rf(tmpdir);
    comm_finalize();
    return test_main_end("checkpoint_file");
}
