/* distributed/checkpoint: HDF5 checkpoints written and read collectively by row slabs, committed
 * atomically (the contract is distributed/checkpoint.h).
 *
 * How the collective rules are kept. Every public call first checks its arguments on each rank,
 * then makes one all-gather of a small descriptor per rank (status, a hash of name/shape/kind, the
 * slab, the slab's checksum, its number of I/O pieces); from that every rank reaches the same
 * verdict (a rank's bad argument, ranks disagreeing on a dataset, slabs that do not cover the rows
 * exactly once) before any collective HDF5 call, so a mistake on one rank is an error on all ranks
 * rather than a hang. HDF5 failures after that are agreed by an all-reduce.
 *
 * I/O pieces. A slab is written or read in pieces of at most ADDC_CKPT_PIECE_BYTES bytes (default
 * 512 MiB, below MPI-IO's 2 GiB count limit); every rank makes as many collective H5Dwrite/H5Dread
 * calls as the rank with the most pieces, empty selections for the rest (the environment variable
 * exists so that tests can exercise unequal piece counts with small tensors).
 *
 * Checksums: element i (the index in the whole dataset, row-major) with value bits v (the f32 bits,
 * or the byte of a blob) adds splitmix64(i ^ (v << 32)); the sum wraps mod 2^64, so any split and
 * any order give the same value (tests/ref/check_ckpt_h5py.py recomputes it in numpy).
 *
 * File format: HDF5 with the 1.8 object format or later (H5Pset_libver_bounds V18..LATEST), whose
 * superblock, object headers and B-trees carry checksums, so most damaged metadata is an HDF5
 * error rather than a wrong read. The heaps that hold large or numerous attributes (the config
 * string) have none, so the root's own attributes carry one: addc_attr_checksum, a sum over them
 * of a mix of kind, name and value, verified when the file is opened. Datasets are contiguous and
 * never filled (FILL_TIME_NEVER). */
#include "distributed/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "core/parallel.h"

#define CKPT_NAME_CAP 256
#define CKPT_PIECE_BYTES_DEFAULT ((int64_t)512 << 20)
#define CKPT_GATHER_K 8 /* u64 per rank in a call's descriptor, at most */

struct CkptFile {
    Comm *comm;
    hid_t file;
    hid_t dxpl; /* collective transfers under MPI, else H5P_DEFAULT */
    hid_t lcpl; /* creates the groups along a dataset's path */
    hid_t dcpl; /* contiguous, no fill, no timestamps */
    hid_t gcpl; /* groups without timestamps */
    hid_t fcpl; /* the root group without timestamps: equal contents give byte-identical files */
    bool writing;
    int64_t bytes;                /* moved by this rank through this file */
    uint64_t attr_sum;            /* writing: the root attributes' checksum so far */
    char path[CKPT_PATH_MAX];     /* the file open now (DIR/step-N.h5.tmp while writing) */
    char dir[CKPT_PATH_MAX];      /* writing only */
    char final[CKPT_PATH_MAX];    /* writing only: DIR/step-N.h5 */
    char final_name[CKPT_NAME_CAP];
    uint64_t *gather;             /* (size * CKPT_GATHER_K) u64: the last all-gather */
};

typedef struct CkptEntry {
    int64_t step;
    char name[CKPT_NAME_CAP];
} CkptEntry;

/* ---- HDF5 errors ---- */

static void ckpt_h5_init(void) {
    static bool done = false;
    if (!done) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        done = true;
    }
}

typedef struct H5ErrWalk {
    char inner[256];
    char outer[256];
} H5ErrWalk;

static herr_t ckpt_h5_walk(unsigned n, const H5E_error2_t *e, void *data) {
    H5ErrWalk *w = data;
    const char *d = e->desc ? e->desc : "";
    if (n == 0) snprintf(w->inner, sizeof w->inner, "%s", d);
    snprintf(w->outer, sizeof w->outer, "%s", d);
    return 0;
}

/* The innermost and outermost descriptions of HDF5's error stack ("unable to open file: truncated
 * file: eof = 10, ..."); to be called right after the failing HDF5 call. */
static const char *ckpt_h5_detail(void) {
    static _Thread_local char buf[600];
    H5ErrWalk w = {{0}, {0}};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, ckpt_h5_walk, &w);
    if (!w.inner[0]) return "no detail";
    if (!strcmp(w.inner, w.outer)) snprintf(buf, sizeof buf, "%s", w.inner);
    else snprintf(buf, sizeof buf, "%s: %s", w.outer, w.inner);
    return buf;
}

/* H5_CHECK(expr, status, object): an HDF5 call returning a negative hid/herr on failure records
 * "checkpoint FILE: OBJECT: HDF5 error (DETAIL) in `expr` at file:line" and jumps to `done`. */
#define H5_CHECK(expr, st_on_fail, object)                                                        \
    do {                                                                                          \
        if ((int64_t)(expr) < 0) {                                                                \
            st = addc_error_set((st_on_fail), "checkpoint %s: %s: HDF5 error (%s) in `%s` at %s:%d", \
                                f->path, (object), ckpt_h5_detail(), #expr, __FILE__, __LINE__);  \
            goto done;                                                                            \
        }                                                                                         \
    } while (0)

/* ---- agreement over ranks ---- */

/* The worst status over ranks, on every rank; a rank that did not fail gets a message naming the
 * lowest rank that did. */
static Status ckpt_agree(Comm *c, Status st, const char *path, const char *what) {
    int size = comm_size(c), rank = comm_rank(c);
    uint64_t v[2] = {(uint64_t)st, st != ADDC_OK ? (uint64_t)(size - rank) : 0};
    TRY(comm_allreduce(c, v, v, 2, COMM_U64, COMM_MAX, "checkpoint agree"));
    if (v[0] == ADDC_OK) return ADDC_OK;
    if (st == ADDC_OK) {
        addc_error_set((Status)v[0], "checkpoint %s: %s failed on rank %d", path, what, size - (int)v[1]);
    }
    return (Status)v[0];
}

/* The descriptor of k <= CKPT_GATHER_K u64 of every rank into f->gather (rank r's at r * k). */
static Status ckpt_gather(CkptFile *f, const uint64_t *mine, int k, const char *what) {
    if (k > CKPT_GATHER_K) return addc_error_set(ADDC_ERR_INVALID, "checkpoint: descriptor of %d > %d", k, CKPT_GATHER_K);
    return comm_allgather(f->comm, mine, f->gather, k, COMM_U64, what);
}

/* The agreed status of a gathered descriptor whose slot `at` holds each rank's status. */
static Status ckpt_gathered_status(CkptFile *f, int k, int at, Status mine, const char *what) {
    int size = comm_size(f->comm);
    Status worst = ADDC_OK;
    int first = -1;
    for (int r = 0; r < size; r++) {
        Status s = (Status)f->gather[(int64_t)r * k + at];
        if (s != ADDC_OK && first < 0) first = r;
        if (s > worst) worst = s;
    }
    if (worst != ADDC_OK && mine == ADDC_OK) {
        addc_error_set(worst, "checkpoint %s: %s failed on rank %d", f->path, what, first);
    }
    return worst;
}

static Status ckpt_bcast_u64(Comm *c, uint64_t *v, int64_t n, const char *what) {
    return comm_broadcast(c, v, n, COMM_U64, 0, what);
}

/* Rank 0's len bytes to every rank (len known everywhere), as u64 words. */
static Status ckpt_bcast_bytes(Comm *c, void *bytes, uint64_t len, const char *what) {
    int64_t words = (int64_t)(len + 7) / 8;
    if (words == 0) return ADDC_OK;
    uint64_t *buf = calloc((size_t)words, 8);
    Status st = buf ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "%s: no memory for %llu bytes", what,
                                              (unsigned long long)len);
    TRY(ckpt_agree(c, st, "broadcast", what));
    if (comm_rank(c) == 0) memcpy(buf, bytes, len);
    st = ckpt_bcast_u64(c, buf, words, what);
    if (st == ADDC_OK) memcpy(bytes, buf, len);
    free(buf);
    return st;
}

/* Rank 0's string (shorter than cap) to every rank. */
static Status ckpt_bcast_str(Comm *c, char *s, size_t cap, const char *what) {
    uint64_t len = comm_rank(c) == 0 ? strlen(s) : 0;
    TRY(ckpt_bcast_u64(c, &len, 1, what));
    if (len >= cap) return addc_error_set(ADDC_ERR_INVALID, "%s: string of %llu bytes is too long", what,
                                          (unsigned long long)len);
    TRY(ckpt_bcast_bytes(c, s, len, what));
    s[len] = '\0';
    return ADDC_OK;
}

/* ---- checksums ---- */

static inline uint64_t ckpt_mix(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

typedef struct CkptSumJob {
    const unsigned char *data;
    int elem; /* 4: f32 bits, 1: bytes */
    uint64_t base;
    _Atomic uint64_t sum;
} CkptSumJob;

static void ckpt_sum_range(void *ctx, int64_t begin, int64_t end) {
    CkptSumJob *j = ctx;
    uint64_t s = 0;
    if (j->elem == 4) {
        for (int64_t i = begin; i < end; i++) {
            uint32_t bits;
            memcpy(&bits, j->data + 4 * i, 4);
            s += ckpt_mix((j->base + (uint64_t)i) ^ ((uint64_t)bits << 32));
        }
    } else {
        for (int64_t i = begin; i < end; i++) s += ckpt_mix((j->base + (uint64_t)i) ^ ((uint64_t)j->data[i] << 32));
    }
    atomic_fetch_add_explicit(&j->sum, s, memory_order_relaxed);
}

/* Sum over n elements of `elem` bytes whose first has dataset index `base`. */
static uint64_t ckpt_checksum(const void *data, int64_t n, int elem, int64_t base) {
    if (n <= 0) return 0;
    CkptSumJob j = {.data = data, .elem = elem, .base = (uint64_t)base};
    atomic_init(&j.sum, 0);
    parallel_for(n, (int64_t)1 << 16, ckpt_sum_range, &j);
    return atomic_load(&j.sum);
}

static uint64_t ckpt_hash(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

/* ---- files and directories ---- */

static Status ckpt_join(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) {
        return addc_error_set(ADDC_ERR_INVALID, "checkpoint path %s/%s is longer than %zu bytes", dir, name, cap - 1);
    }
    return ADDC_OK;
}

static Status ckpt_mkdir_p(const char *dir) {
    char p[CKPT_PATH_MAX];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p) {
        return addc_error_set(ADDC_ERR_INVALID, "checkpoint directory %s: path too long", dir);
    }
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char keep = *s;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            return addc_error_set(ADDC_ERR_IO, "cannot create checkpoint directory %s: %s", p, strerror(errno));
        }
        *s = keep;
        if (keep == '\0') break;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        return addc_error_set(ADDC_ERR_IO, "checkpoint directory %s is not a directory", dir);
    }
    return ADDC_OK;
}

static Status ckpt_fsync_path(const char *path, bool is_dir) {
    int fd = open(path, is_dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0) return addc_error_set(ADDC_ERR_IO, "cannot open %s to fsync it: %s", path, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0) return addc_error_set(ADDC_ERR_IO, "fsync of %s failed: %s", path, strerror(e));
    return ADDC_OK;
}

/* "step-<digits><suffix>" -> step. */
static bool ckpt_name_step(const char *name, const char *suffix, int64_t *step) {
    if (strncmp(name, "step-", 5) != 0) return false;
    const char *p = name + 5;
    int64_t v = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        if (v > (INT64_MAX - 9) / 10) return false;
        v = v * 10 + (*p - '0');
    }
    if (digits == 0 || strcmp(p, suffix) != 0) return false;
    *step = v;
    return true;
}

static int ckpt_entry_cmp(const void *a, const void *b) {
    const CkptEntry *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return -strcmp(x->name, y->name);
}

/* The committed checkpoints of dir, newest first, malloc'd (NULL and 0 when there are none; a
 * missing dir has none). With remove_tmp, stale step-*.h5.tmp and latest.tmp are deleted. */
static Status ckpt_scan(const char *dir, bool remove_tmp, CkptEntry **out, int *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return ADDC_OK;
        return addc_error_set(ADDC_ERR_IO, "cannot list checkpoint directory %s: %s", dir, strerror(errno));
    }
    CkptEntry *list = NULL;
    int cap = 0, count = 0;
    Status st = ADDC_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        if (remove_tmp && (ckpt_name_step(e->d_name, ".h5.tmp", &step) || !strcmp(e->d_name, "latest.tmp"))) {
            char p[CKPT_PATH_MAX];
            if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p && unlink(p) != 0 && errno != ENOENT) {
                st = addc_error_set(ADDC_ERR_IO, "cannot remove stale %s: %s", p, strerror(errno));
                break;
            }
            continue;
        }
        if (!ckpt_name_step(e->d_name, ".h5", &step) || strlen(e->d_name) >= CKPT_NAME_CAP) continue;
        if (count == cap) {
            int ncap = cap ? 2 * cap : 16;
            CkptEntry *nl = realloc(list, (size_t)ncap * sizeof *nl);
            if (!nl) {
                st = addc_error_set(ADDC_ERR_NOMEM, "listing %s: no memory for %d names", dir, ncap);
                break;
            }
            list = nl;
            cap = ncap;
        }
        list[count].step = step;
        snprintf(list[count].name, CKPT_NAME_CAP, "%s", e->d_name);
        count++;
    }
    closedir(d);
    if (st != ADDC_OK) {
        free(list);
        return st;
    }
    if (count > 1) qsort(list, (size_t)count, sizeof *list, ckpt_entry_cmp);
    *out = list;
    *n = count;
    return ADDC_OK;
}

Status ckpt_list(const char *dir, char (*names)[256], int cap, int *n) {
    CkptEntry *list;
    int count;
    *n = 0;
    TRY(ckpt_scan(dir, false, &list, &count));
    for (int i = 0; i < count && i < cap; i++) {
        snprintf(names[i], 256, "%s", list[i].name);
        (*n)++;
    }
    free(list);
    return ADDC_OK;
}

/* ---- opening and closing ---- */

static Status ckpt_file_new(Comm *comm, CkptFile **out) {
    ckpt_h5_init();
    CkptFile *f = calloc(1, sizeof *f);
    uint64_t *g = malloc((size_t)comm_size(comm) * CKPT_GATHER_K * sizeof *g);
    if (!f || !g) {
        free(f);
        free(g);
        return addc_error_set(ADDC_ERR_NOMEM, "checkpoint: no memory for a file handle");
    }
    f->gather = g;
    f->comm = comm;
    f->file = f->dxpl = f->lcpl = f->dcpl = f->gcpl = f->fcpl = H5I_INVALID_HID;
    *out = f;
    return ADDC_OK;
}

static void ckpt_file_free(CkptFile *f) {
    if (f->dxpl >= 0 && f->dxpl != H5P_DEFAULT) H5Pclose(f->dxpl);
    if (f->lcpl >= 0) H5Pclose(f->lcpl);
    if (f->dcpl >= 0) H5Pclose(f->dcpl);
    if (f->gcpl >= 0) H5Pclose(f->gcpl);
    if (f->fcpl >= 0) H5Pclose(f->fcpl);
    free(f->gather);
    free(f);
}

/* The file access list (MPI-IO under MPI, else sec2) and transfer list of f's communicator. */
static Status ckpt_plists(CkptFile *f, hid_t *fapl) {
    Status st = ADDC_OK;
    *fapl = H5I_INVALID_HID;
    H5_CHECK(*fapl = H5Pcreate(H5P_FILE_ACCESS), ADDC_ERR_EXTERNAL, "file access list");
    H5_CHECK(H5Pset_libver_bounds(*fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST), ADDC_ERR_EXTERNAL, "file access list");
    if (comm_is_mpi(f->comm)) {
        MPI_Comm *mc = comm_mpi_handle(f->comm);
        if (!mc) {
            st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: the communicator has no MPI handle", f->path);
            goto done;
        }
        H5_CHECK(H5Pset_fapl_mpio(*fapl, *mc, MPI_INFO_NULL), ADDC_ERR_EXTERNAL, "MPI-IO file access");
        H5_CHECK(f->dxpl = H5Pcreate(H5P_DATASET_XFER), ADDC_ERR_EXTERNAL, "transfer list");
        H5_CHECK(H5Pset_dxpl_mpio(f->dxpl, H5FD_MPIO_COLLECTIVE), ADDC_ERR_EXTERNAL, "collective transfer");
    } else {
        f->dxpl = H5P_DEFAULT;
    }
done:
    if (st != ADDC_OK && *fapl >= 0) {
        H5Pclose(*fapl);
        *fapl = H5I_INVALID_HID;
    }
    return st;
}

static void ckpt_h5_close(CkptFile *f) {
    if (f->file >= 0) H5Fclose(f->file);
    f->file = H5I_INVALID_HID;
}

Status ckpt_create(Comm *comm, const char *dir, int64_t step, CkptFile **out) {
    *out = NULL;
    CkptFile *f;
    TRY(ckpt_file_new(comm, &f));
    f->writing = true;
    Status st = ADDC_OK;
    hid_t fapl = H5I_INVALID_HID, space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
    bool created = false;
    snprintf(f->path, sizeof f->path, "%s", dir);
    if (step < 0) st = addc_error_set(ADDC_ERR_INVALID, "checkpoint step %lld is negative", (long long)step);
    if (st == ADDC_OK && snprintf(f->dir, sizeof f->dir, "%s", dir) >= (int)sizeof f->dir) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint directory %s: path too long", dir);
    }
    if (st == ADDC_OK) {
        snprintf(f->final_name, sizeof f->final_name, "step-%07lld.h5", (long long)step);
        st = ckpt_join(f->final, sizeof f->final, dir, f->final_name);
    }
    if (st == ADDC_OK && snprintf(f->path, sizeof f->path, "%s.tmp", f->final) >= (int)sizeof f->path) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint path %s.tmp is too long", f->final);
    }
    if (st == ADDC_OK && comm_rank(comm) == 0) {
        CkptEntry *list;
        int n;
        st = ckpt_mkdir_p(dir);
        if (st == ADDC_OK) st = ckpt_scan(dir, true, &list, &n);
        if (st == ADDC_OK) free(list);
    }
    if ((st = ckpt_agree(comm, st, dir, "preparing the directory")) != ADDC_OK) goto fail;

    st = ckpt_plists(f, &fapl);
    if (st == ADDC_OK) {
        H5_CHECK(f->lcpl = H5Pcreate(H5P_LINK_CREATE), ADDC_ERR_EXTERNAL, "link creation list");
        H5_CHECK(H5Pset_create_intermediate_group(f->lcpl, 1), ADDC_ERR_EXTERNAL, "link creation list");
        H5_CHECK(f->dcpl = H5Pcreate(H5P_DATASET_CREATE), ADDC_ERR_EXTERNAL, "dataset creation list");
        H5_CHECK(H5Pset_fill_time(f->dcpl, H5D_FILL_TIME_NEVER), ADDC_ERR_EXTERNAL, "dataset creation list");
        H5_CHECK(H5Pset_obj_track_times(f->dcpl, 0), ADDC_ERR_EXTERNAL, "dataset creation list");
        H5_CHECK(f->gcpl = H5Pcreate(H5P_GROUP_CREATE), ADDC_ERR_EXTERNAL, "group creation list");
        H5_CHECK(H5Pset_obj_track_times(f->gcpl, 0), ADDC_ERR_EXTERNAL, "group creation list");
        H5_CHECK(f->fcpl = H5Pcreate(H5P_FILE_CREATE), ADDC_ERR_EXTERNAL, "file creation list");
        H5_CHECK(H5Pset_obj_track_times(f->fcpl, 0), ADDC_ERR_EXTERNAL, "file creation list");
    }
done:
    if ((st = ckpt_agree(comm, st, f->path, "setting up HDF5")) != ADDC_OK) goto fail;
    created = true;
    f->file = H5Fcreate(f->path, H5F_ACC_TRUNC, f->fcpl, fapl); /* collective */
    if (f->file < 0) {
        st = addc_error_set(ADDC_ERR_IO, "cannot create checkpoint %s: HDF5 error (%s)", f->path, ckpt_h5_detail());
    } else {
        int64_t schema = CKPT_SCHEMA_VERSION;
        if ((space = H5Screate(H5S_SCALAR)) < 0 ||
            (attr = H5Acreate2(f->file, "addc_schema", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
            H5Awrite(attr, H5T_NATIVE_INT64, &schema) < 0) {
            st = addc_error_set(ADDC_ERR_IO, "checkpoint %s: cannot write addc_schema: HDF5 error (%s)", f->path,
                                ckpt_h5_detail());
        }
        if (attr >= 0) H5Aclose(attr);
        if (space >= 0) H5Sclose(space);
    }
    if ((st = ckpt_agree(comm, st, f->path, "creating the file")) != ADDC_OK) goto fail;
    H5Pclose(fapl);
    *out = f;
    return ADDC_OK;
fail:
    if (fapl >= 0) H5Pclose(fapl);
    ckpt_h5_close(f);
    if (created && comm_rank(comm) == 0) unlink(f->path);
    ckpt_file_free(f);
    return st;
}

static Status ckpt_root_i64(CkptFile *f, const char *name, int64_t *v);
static Status ckpt_attrs_verify(CkptFile *f);

Status ckpt_open_path(Comm *comm, const char *path, CkptFile **out) {
    *out = NULL;
    CkptFile *f;
    TRY(ckpt_file_new(comm, &f));
    Status st = ADDC_OK;
    hid_t fapl = H5I_INVALID_HID;
    if (snprintf(f->path, sizeof f->path, "%s", path) >= (int)sizeof f->path) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint path %s is too long", path);
    }
    struct stat sb;
    if (st == ADDC_OK && stat(path, &sb) != 0) {
        st = addc_error_set(ADDC_ERR_IO, "cannot open checkpoint %s: %s", path, strerror(errno));
    }
    if (st == ADDC_OK) st = ckpt_plists(f, &fapl);
    if ((st = ckpt_agree(comm, st, path, "opening")) != ADDC_OK) goto fail;

    f->file = H5Fopen(path, H5F_ACC_RDONLY, fapl); /* collective */
    if (f->file < 0) {
        st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: not a readable HDF5 file (%s)", path, ckpt_h5_detail());
    }
    int64_t complete = 0, schema = 0;
    if (st == ADDC_OK) {
        if (H5Aexists(f->file, "addc_complete") <= 0) {
            st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: incomplete (no addc_complete = 1): it was never "
                                "committed", path);
        } else if ((st = ckpt_root_i64(f, "addc_complete", &complete)) == ADDC_OK && complete != 1) {
            st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: incomplete (addc_complete = %lld)", path,
                                (long long)complete);
        }
    }
    if (st == ADDC_OK) {
        if (H5Aexists(f->file, "addc_schema") <= 0) {
            st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: no addc_schema attribute", path);
        } else if ((st = ckpt_root_i64(f, "addc_schema", &schema)) != ADDC_OK) {
            /* the message names the attribute */
        } else if (schema < 1 || schema > CKPT_SCHEMA_VERSION) {
            st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: schema version %lld, this build reads 1 to %d",
                                path, (long long)schema, CKPT_SCHEMA_VERSION);
        }
    }
    if (st == ADDC_OK) st = ckpt_attrs_verify(f);
    if ((st = ckpt_agree(comm, st, path, "opening")) != ADDC_OK) goto fail;
    H5Pclose(fapl);
    *out = f;
    return ADDC_OK;
fail:
    if (fapl >= 0) H5Pclose(fapl);
    ckpt_h5_close(f);
    ckpt_file_free(f);
    return st;
}

const char *ckpt_path(const CkptFile *f) { return f ? f->path : ""; }
int64_t ckpt_bytes(const CkptFile *f) { return f ? f->bytes : 0; }

void ckpt_abort(CkptFile *f) {
    if (!f) return;
    ckpt_h5_close(f); /* collective under MPI */
    if (f->writing && comm_rank(f->comm) == 0) unlink(f->path);
    ckpt_file_free(f);
}

void ckpt_close(CkptFile *f) {
    if (!f) return;
    if (f->writing) {
        ckpt_abort(f);
        return;
    }
    ckpt_h5_close(f);
    ckpt_file_free(f);
}

/* ---- names and attributes ---- */

/* Whether every link along `name` exists (so that H5Lexists is never asked about a child of a
 * missing group). */
bool ckpt_has(CkptFile *f, const char *name) {
    if (!f || f->file < 0 || !name || !*name) return false;
    char p[1024];
    if (snprintf(p, sizeof p, "%s", name) >= (int)sizeof p) return false;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0') continue;
        char keep = *s;
        *s = '\0';
        if (H5Lexists(f->file, p, H5P_DEFAULT) <= 0) return false;
        *s = keep;
        if (keep == '\0') return true;
    }
}

/* Root attribute names of the form addc_* belong to this layer. */
static bool ckpt_reserved(const char *name) { return !strncmp(name, "addc_", 5); }

static Status ckpt_check_writing(CkptFile *f, const char *fn) {
    if (!f || !f->writing || f->file < 0) {
        return addc_error_set(ADDC_ERR_INVALID, "%s: the checkpoint is not open for writing", fn);
    }
    return ADDC_OK;
}

/* Reads scalar attribute `name` of `obj` (the root or a dataset) as memtype after checking its class. */
static Status ckpt_attr_read(CkptFile *f, hid_t obj, const char *objname, const char *name, H5T_class_t cls,
                             hid_t memtype, void *v) {
    Status st = ADDC_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    char what[600];
    snprintf(what, sizeof what, "%s attribute '%s'", objname, name);
    htri_t ex = H5Aexists(obj, name);
    H5_CHECK(ex, ADDC_ERR_FORMAT, what);
    if (!ex) {
        st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s has no %s", f->path, what);
        goto done;
    }
    H5_CHECK(a = H5Aopen(obj, name, H5P_DEFAULT), ADDC_ERR_FORMAT, what);
    H5_CHECK(t = H5Aget_type(a), ADDC_ERR_FORMAT, what);
    H5_CHECK(s = H5Aget_space(a), ADDC_ERR_FORMAT, what);
    if (H5Tget_class(t) != cls || H5Sget_simple_extent_npoints(s) != 1) {
        st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: %s has another type or is not a scalar", f->path, what);
        goto done;
    }
    H5_CHECK(H5Aread(a, memtype, v), ADDC_ERR_FORMAT, what);
done:
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return st;
}

static Status ckpt_root_i64(CkptFile *f, const char *name, int64_t *v) {
    return ckpt_attr_read(f, f->file, "root", name, H5T_INTEGER, H5T_NATIVE_INT64, v);
}

static Status ckpt_attr_write(CkptFile *f, hid_t obj, const char *objname, const char *name, hid_t filetype,
                              hid_t memtype, const void *v) {
    Status st = ADDC_OK;
    hid_t a = H5I_INVALID_HID, s = H5I_INVALID_HID;
    char what[600];
    snprintf(what, sizeof what, "%s attribute '%s'", objname, name);
    H5_CHECK(s = H5Screate(H5S_SCALAR), ADDC_ERR_EXTERNAL, what);
    H5_CHECK(a = H5Acreate2(obj, name, filetype, s, H5P_DEFAULT, H5P_DEFAULT), ADDC_ERR_IO, what);
    H5_CHECK(H5Awrite(a, memtype, v), ADDC_ERR_IO, what);
done:
    if (a >= 0) H5Aclose(a);
    if (s >= 0) H5Sclose(s);
    return st;
}

typedef enum CkptAttrKind { CKPT_ATTR_I64, CKPT_ATTR_F64, CKPT_ATTR_STR } CkptAttrKind;

/* One root attribute's share of addc_attr_checksum: a mix of its kind, name and value bytes
 * (HDF5 keeps large and numerous attributes in heaps without checksums of their own). */
static uint64_t ckpt_attr_term(const char *name, CkptAttrKind kind, const void *value, size_t n) {
    unsigned char k = (unsigned char)kind;
    uint64_t h = ckpt_hash(0xCBF29CE484222325ull, &k, 1);
    h = ckpt_hash(h, name, strlen(name) + 1);
    return ckpt_mix(ckpt_hash(h, value, n));
}

typedef struct CkptAttrScan {
    CkptFile *f;
    uint64_t sum;
    Status st;
} CkptAttrScan;

static herr_t ckpt_attr_scan_one(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    CkptAttrScan *sc = data;
    if (ckpt_reserved(name)) return 0;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    Status st = ADDC_OK;
    if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
        unsigned char v[8];
        CkptAttrKind kind = cls == H5T_INTEGER ? CKPT_ATTR_I64 : CKPT_ATTR_F64;
        st = ckpt_attr_read(sc->f, loc, "root", name, cls, kind == CKPT_ATTR_I64 ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE,
                            v);
        if (st == ADDC_OK) sc->sum += ckpt_attr_term(name, kind, v, 8);
    } else if (cls == H5T_STRING && H5Tis_variable_str(t) == 0) {
        size_t size = H5Tget_size(t);
        char *buf = malloc(size + 1);
        if (!buf || H5Aread(a, t, buf) < 0) {
            st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: root attribute '%s' unreadable (%s)", sc->f->path,
                                name, buf ? ckpt_h5_detail() : "no memory");
        } else {
            buf[size] = '\0';
            sc->sum += ckpt_attr_term(name, CKPT_ATTR_STR, buf, strlen(buf));
        }
        free(buf);
    } else {
        st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: root attribute '%s' is not an i64, f64 or string%s",
                            sc->f->path, name, a < 0 ? " (unreadable)" : "");
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    sc->st = st;
    return st == ADDC_OK ? 0 : -1;
}

/* Recomputes addc_attr_checksum over the root's attributes and compares. */
static Status ckpt_attrs_verify(CkptFile *f) {
    uint64_t stored = 0;
    TRY(ckpt_attr_read(f, f->file, "root", "addc_attr_checksum", H5T_INTEGER, H5T_NATIVE_UINT64, &stored));
    CkptAttrScan sc = {f, 0, ADDC_OK};
    hsize_t idx = 0;
    if (H5Aiterate2(f->file, H5_INDEX_NAME, H5_ITER_NATIVE, &idx, ckpt_attr_scan_one, &sc) < 0) {
        if (sc.st != ADDC_OK) return sc.st;
        return addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: root attributes unreadable (%s)", f->path,
                              ckpt_h5_detail());
    }
    if (sc.sum != stored) {
        return addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: the root attributes are corrupt (checksum %016" PRIx64
                              " computed, %016" PRIx64 " stored)", f->path, sc.sum, stored);
    }
    return ADDC_OK;
}

/* Writes rank 0's value of a root attribute on every rank (attribute writes are collective). */
static Status ckpt_attr_put(CkptFile *f, const char *name, CkptAttrKind kind, const void *value) {
    TRY(ckpt_check_writing(f, "ckpt_attr"));
    Status st = ADDC_OK;
    if (!name || !*name || ckpt_reserved(name)) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: attribute name '%s' is empty or reserved (addc_*)", f->path,
                            name ? name : "(null)");
    } else if (H5Aexists(f->file, name) > 0) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: attribute '%s' written twice", f->path, name);
    } else if (kind == CKPT_ATTR_STR && !value) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: attribute '%s': NULL string", f->path, name);
    }
    TRY(ckpt_agree(f->comm, st, f->path, "checking an attribute"));
    if (kind == CKPT_ATTR_STR) {
        uint64_t len = comm_rank(f->comm) == 0 ? strlen(value) : 0;
        TRY(ckpt_bcast_u64(f->comm, &len, 1, "checkpoint attribute size"));
        char *s = malloc(len + 1);
        if (!s) st = addc_error_set(ADDC_ERR_NOMEM, "checkpoint attribute '%s': no memory for %llu bytes", name,
                                    (unsigned long long)len);
        if ((st = ckpt_agree(f->comm, st, f->path, "attribute buffer")) != ADDC_OK) {
            free(s);
            return st;
        }
        if (comm_rank(f->comm) == 0) memcpy(s, value, len);
        st = ckpt_bcast_bytes(f->comm, s, len, "checkpoint attribute");
        s[len] = '\0';
        hid_t t = H5I_INVALID_HID;
        if (st == ADDC_OK) {
            t = H5Tcopy(H5T_C_S1);
            if (t < 0 || H5Tset_size(t, len + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
                H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
                st = addc_error_set(ADDC_ERR_EXTERNAL, "checkpoint %s: string type: HDF5 error (%s)", f->path,
                                    ckpt_h5_detail());
            } else {
                st = ckpt_attr_write(f, f->file, "root", name, t, t, s);
            }
            f->attr_sum += ckpt_attr_term(name, kind, s, len);
        }
        if (t >= 0) H5Tclose(t);
        free(s);
    } else {
        uint64_t v;
        memcpy(&v, value, 8);
        TRY(ckpt_bcast_u64(f->comm, &v, 1, "checkpoint attribute"));
        if (kind == CKPT_ATTR_I64) st = ckpt_attr_write(f, f->file, "root", name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
        else st = ckpt_attr_write(f, f->file, "root", name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
        f->attr_sum += ckpt_attr_term(name, kind, &v, 8);
    }
    return ckpt_agree(f->comm, st, f->path, "writing an attribute");
}

Status ckpt_attr_i64(CkptFile *f, const char *name, int64_t v) { return ckpt_attr_put(f, name, CKPT_ATTR_I64, &v); }
Status ckpt_attr_f64(CkptFile *f, const char *name, double v) { return ckpt_attr_put(f, name, CKPT_ATTR_F64, &v); }
Status ckpt_attr_str(CkptFile *f, const char *name, const char *s) { return ckpt_attr_put(f, name, CKPT_ATTR_STR, s); }

static Status ckpt_check_reading(CkptFile *f, const char *fn) {
    if (!f || f->file < 0) return addc_error_set(ADDC_ERR_INVALID, "%s: the checkpoint is not open", fn);
    return ADDC_OK;
}

Status ckpt_get_i64(CkptFile *f, const char *name, int64_t *v) {
    TRY(ckpt_check_reading(f, "ckpt_get_i64"));
    Status st = ckpt_attr_read(f, f->file, "root", name, H5T_INTEGER, H5T_NATIVE_INT64, v);
    return ckpt_agree(f->comm, st, f->path, "reading an attribute");
}

Status ckpt_get_f64(CkptFile *f, const char *name, double *v) {
    TRY(ckpt_check_reading(f, "ckpt_get_f64"));
    Status st = ckpt_attr_read(f, f->file, "root", name, H5T_FLOAT, H5T_NATIVE_DOUBLE, v);
    return ckpt_agree(f->comm, st, f->path, "reading an attribute");
}

Status ckpt_get_str(CkptFile *f, const char *name, char *s, int64_t cap) {
    TRY(ckpt_check_reading(f, "ckpt_get_str"));
    Status st = ADDC_OK;
    hid_t a = H5I_INVALID_HID, t = H5I_INVALID_HID, mt = H5I_INVALID_HID, sp = H5I_INVALID_HID;
    char *buf = NULL;
    char what[600];
    snprintf(what, sizeof what, "root attribute '%s'", name);
    htri_t ex = H5Aexists(f->file, name);
    H5_CHECK(ex, ADDC_ERR_FORMAT, what);
    if (!ex) {
        st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s has no %s", f->path, what);
        goto done;
    }
    H5_CHECK(a = H5Aopen(f->file, name, H5P_DEFAULT), ADDC_ERR_FORMAT, what);
    H5_CHECK(t = H5Aget_type(a), ADDC_ERR_FORMAT, what);
    H5_CHECK(sp = H5Aget_space(a), ADDC_ERR_FORMAT, what);
    if (H5Tget_class(t) != H5T_STRING || H5Tis_variable_str(t) != 0 || H5Sget_simple_extent_npoints(sp) != 1) {
        st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: %s is not a fixed-length string", f->path, what);
        goto done;
    }
    size_t size = H5Tget_size(t);
    buf = malloc(size + 1);
    if (!buf) {
        st = addc_error_set(ADDC_ERR_NOMEM, "checkpoint %s: %s: no memory for %zu bytes", f->path, what, size);
        goto done;
    }
    H5_CHECK(mt = H5Tcopy(t), ADDC_ERR_EXTERNAL, what); /* the file's size, padding and character set */
    H5_CHECK(H5Aread(a, mt, buf), ADDC_ERR_FORMAT, what);
    buf[size] = '\0';
    size_t len = strlen(buf);
    if ((int64_t)len >= cap) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: %s has %zu bytes, the buffer holds %lld", f->path, what,
                            len, (long long)cap - 1);
        goto done;
    }
    memcpy(s, buf, len + 1);
done:
    free(buf);
    if (mt >= 0) H5Tclose(mt);
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return ckpt_agree(f->comm, st, f->path, "reading an attribute");
}

/* ---- datasets ---- */

static int64_t ckpt_piece_rows(int64_t rowsize, int elem) {
    static int64_t piece = 0;
    if (piece == 0) {
        const char *e = getenv("ADDC_CKPT_PIECE_BYTES");
        long long v = e ? atoll(e) : 0;
        piece = v > 0 ? v : CKPT_PIECE_BYTES_DEFAULT;
    }
    int64_t row_bytes = rowsize * elem;
    return row_bytes > 0 && piece / row_bytes > 0 ? piece / row_bytes : 1;
}

static int64_t ckpt_pieces(int64_t rows, int64_t rowsize, int elem) {
    if (rows <= 0 || rowsize <= 0) return 0;
    int64_t pr = ckpt_piece_rows(rowsize, elem);
    return (rows + pr - 1) / pr;
}

/* Writes or reads this rank's rows [lo, hi) of dset (dims[1..] whole) in `pieces` collective calls. */
static Status ckpt_io_rows(CkptFile *f, hid_t dset, const char *name, bool write, hid_t memtype, int elem,
                           int32_t ndim, const hsize_t *dims, int64_t lo, int64_t hi, int64_t rowsize, void *buf,
                           int64_t pieces) {
    Status st = ADDC_OK;
    int64_t pr = ckpt_piece_rows(rowsize, elem);
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    char what[600];
    snprintf(what, sizeof what, "dataset '%s'", name);
    unsigned char dummy[8];
    for (int64_t k = 0; k < pieces; k++) {
        int64_t a = lo + k * pr, b = a + pr;
        if (a > hi) a = hi;
        if (b > hi) b = hi;
        H5_CHECK(fs = H5Dget_space(dset), ADDC_ERR_FORMAT, what);
        void *ptr = dummy;
        if (b > a) {
            hsize_t start[CKPT_MAX_DIMS] = {0}, count[CKPT_MAX_DIMS];
            start[0] = (hsize_t)a;
            count[0] = (hsize_t)(b - a);
            for (int32_t d = 1; d < ndim; d++) count[d] = dims[d];
            hsize_t n = (hsize_t)((b - a) * rowsize);
            H5_CHECK(H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL), ADDC_ERR_FORMAT, what);
            H5_CHECK(ms = H5Screate_simple(1, &n, NULL), ADDC_ERR_EXTERNAL, what);
            ptr = (unsigned char *)buf + (a - lo) * rowsize * elem;
        } else {
            hsize_t one = 1;
            H5_CHECK(H5Sselect_none(fs), ADDC_ERR_EXTERNAL, what);
            H5_CHECK(ms = H5Screate_simple(1, &one, NULL), ADDC_ERR_EXTERNAL, what);
            H5_CHECK(H5Sselect_none(ms), ADDC_ERR_EXTERNAL, what);
        }
        if (write) H5_CHECK(H5Dwrite(dset, memtype, ms, fs, f->dxpl, ptr), ADDC_ERR_IO, what);
        else H5_CHECK(H5Dread(dset, memtype, ms, fs, f->dxpl, ptr), ADDC_ERR_FORMAT, what);
        H5Sclose(ms);
        H5Sclose(fs);
        ms = fs = H5I_INVALID_HID;
        f->bytes += (b - a) * rowsize * elem;
    }
done:
    if (ms >= 0) H5Sclose(ms);
    if (fs >= 0) H5Sclose(fs);
    return st;
}

/* Creates dataset `name` (every rank), writes this rank's rows [lo, hi) in `pieces` calls and the
 * agreed checksum, closes it. */
static Status ckpt_dset_write(CkptFile *f, const char *name, bool blob, int32_t ndim, const int64_t *shape,
                              int64_t lo, int64_t hi, int64_t rowsize, const void *data, int64_t pieces,
                              uint64_t checksum) {
    Status st = ADDC_OK;
    hid_t space = H5I_INVALID_HID, dset = H5I_INVALID_HID;
    hsize_t dims[CKPT_MAX_DIMS];
    for (int32_t d = 0; d < ndim; d++) dims[d] = (hsize_t)shape[d];
    char what[600];
    snprintf(what, sizeof what, "dataset '%s'", name);
    int elem = blob ? 1 : 4;
    H5_CHECK(space = H5Screate_simple(ndim, dims, NULL), ADDC_ERR_INVALID, what);
    /* the groups along the path, made here (untimed) rather than by the link list's intermediates */
    char prefix[1024];
    for (const char *slash = strchr(name + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        size_t k = (size_t)(slash - name);
        if (k >= sizeof prefix) break;
        memcpy(prefix, name, k);
        prefix[k] = 0;
        htri_t there = H5Lexists(f->file, prefix, H5P_DEFAULT);
        H5_CHECK(there, ADDC_ERR_IO, what);
        if (!there) {
            hid_t g;
            H5_CHECK(g = H5Gcreate2(f->file, prefix, H5P_DEFAULT, f->gcpl, H5P_DEFAULT), ADDC_ERR_IO, what);
            H5Gclose(g);
        }
    }
    H5_CHECK(dset = H5Dcreate2(f->file, name, blob ? H5T_STD_U8LE : H5T_IEEE_F32LE, space, f->lcpl, f->dcpl,
                               H5P_DEFAULT),
             ADDC_ERR_IO, what);
    st = ckpt_io_rows(f, dset, name, true, blob ? H5T_NATIVE_UCHAR : H5T_NATIVE_FLOAT, elem, ndim, dims, lo, hi,
                      rowsize, (void *)data, pieces);
    if (st == ADDC_OK) st = ckpt_attr_write(f, dset, what, "addc_checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &checksum);
done:
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    return st;
}

static Status ckpt_check_name(CkptFile *f, const char *name) {
    if (!name || !*name || strlen(name) >= 1024) {
        return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset name '%s' is empty or too long", f->path,
                              name ? name : "(null)");
    }
    if (ckpt_has(f, name)) {
        return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset '%s' written twice", f->path, name);
    }
    return ADDC_OK;
}

static Status ckpt_check_shape(CkptFile *f, const char *name, int32_t ndim, const int64_t *shape, int64_t *rowsize) {
    if (ndim < 1 || ndim > CKPT_MAX_DIMS || !shape) {
        return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset '%s': %d dimensions (1 to %d allowed)",
                              f->path, name, ndim, CKPT_MAX_DIMS);
    }
    *rowsize = 1;
    for (int32_t d = 0; d < ndim; d++) {
        if (shape[d] < 0) {
            return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset '%s': dimension %d is %lld", f->path, name,
                                  d, (long long)shape[d]);
        }
        if (d > 0) *rowsize *= shape[d];
    }
    return ADDC_OK;
}

typedef struct CkptSlab {
    int64_t lo, hi;
} CkptSlab;

static int ckpt_slab_cmp(const void *a, const void *b) {
    const CkptSlab *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo ? 1 : 0;
}

/* Whether the gathered slabs (slots lo_at, lo_at + 1 of each rank's k) cover [0, rows) exactly once. */
static bool ckpt_slabs_partition(CkptFile *f, int k, int lo_at, int64_t rows) {
    int size = comm_size(f->comm);
    CkptSlab small[64];
    CkptSlab *s = size <= 64 ? small : malloc((size_t)size * sizeof *s);
    if (!s) return false;
    int n = 0;
    for (int r = 0; r < size; r++) {
        int64_t lo = (int64_t)f->gather[(int64_t)r * k + lo_at], hi = (int64_t)f->gather[(int64_t)r * k + lo_at + 1];
        if (hi > lo) s[n++] = (CkptSlab){lo, hi};
    }
    qsort(s, (size_t)n, sizeof *s, ckpt_slab_cmp);
    int64_t at = 0;
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        if (s[i].lo != at) ok = false;
        at = s[i].hi;
    }
    if (at != rows) ok = false;
    if (s != small) free(s);
    return ok;
}

enum { W_HASH, W_LO, W_HI, W_ST, W_SUM, W_PIECES, W_K };

Status ckpt_write_f32(CkptFile *f, const char *name, int32_t ndim, const int64_t *shape, int64_t row_lo,
                      int64_t row_hi, const float *rows) {
    TRY(ckpt_check_writing(f, "ckpt_write_f32"));
    int64_t rowsize = 0;
    Status st = ckpt_check_name(f, name);
    if (st == ADDC_OK) st = ckpt_check_shape(f, name, ndim, shape, &rowsize);
    if (st == ADDC_OK && (row_lo < 0 || row_hi < row_lo || row_hi > shape[0])) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset '%s': rows [%lld, %lld) outside [0, %lld)",
                            f->path, name, (long long)row_lo, (long long)row_hi, (long long)shape[0]);
    }
    if (st == ADDC_OK && row_hi > row_lo && rowsize > 0 && !rows) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset '%s': NULL data", f->path, name);
    }
    uint64_t mine[W_K] = {0};
    mine[W_ST] = (uint64_t)st;
    if (st == ADDC_OK) {
        uint64_t h = ckpt_hash(0xCBF29CE484222325ull, "f32", 3);
        h = ckpt_hash(h, name, strlen(name) + 1);
        h = ckpt_hash(h, &ndim, sizeof ndim);
        h = ckpt_hash(h, shape, (size_t)ndim * sizeof *shape);
        mine[W_HASH] = h;
        mine[W_LO] = (uint64_t)row_lo;
        mine[W_HI] = (uint64_t)row_hi;
        mine[W_SUM] = ckpt_checksum(rows, (row_hi - row_lo) * rowsize, 4, row_lo * rowsize);
        mine[W_PIECES] = (uint64_t)ckpt_pieces(row_hi - row_lo, rowsize, 4);
    }
    char what[600];
    snprintf(what, sizeof what, "checkpoint write '%s'", name ? name : "(null)");
    TRY(ckpt_gather(f, mine, W_K, what));
    TRY(ckpt_gathered_status(f, W_K, W_ST, st, what));
    int size = comm_size(f->comm);
    uint64_t sum = 0, pieces = 0;
    for (int r = 0; r < size; r++) {
        const uint64_t *g = f->gather + (int64_t)r * W_K;
        if (g[W_HASH] != f->gather[W_HASH]) {
            return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: ranks 0 and %d disagree on the name or shape of "
                                  "dataset '%s' (every rank writes every dataset with the same name and shape)",
                                  f->path, r, name);
        }
        sum += g[W_SUM];
        if (g[W_PIECES] > pieces) pieces = g[W_PIECES];
    }
    if (!ckpt_slabs_partition(f, W_K, W_LO, shape[0])) {
        return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset '%s': the ranks' row slabs do not cover rows "
                              "[0, %lld) exactly once (this rank: [%lld, %lld))", f->path, name,
                              (long long)shape[0], (long long)row_lo, (long long)row_hi);
    }
    st = ckpt_dset_write(f, name, false, ndim, shape, row_lo, row_hi, rowsize, rows, (int64_t)pieces, sum);
    return ckpt_agree(f->comm, st, f->path, what);
}

enum { B_HASH, B_N, B_ST, B_SUM, B_PIECES, B_K };

Status ckpt_write_bytes(CkptFile *f, const char *name, const void *bytes, int64_t n, int owner) {
    TRY(ckpt_check_writing(f, "ckpt_write_bytes"));
    int rank = comm_rank(f->comm), size = comm_size(f->comm);
    int src = owner < 0 ? 0 : owner;
    Status st = ckpt_check_name(f, name);
    if (st == ADDC_OK && owner >= size) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: blob '%s': owner rank %d of %d", f->path, name, owner,
                            size);
    }
    bool counts = owner < 0 || rank == src;
    if (st == ADDC_OK && counts && (n < 0 || (n > 0 && !bytes))) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: blob '%s': %lld bytes at %p", f->path, name,
                            (long long)n, bytes);
    }
    uint64_t mine[B_K] = {0};
    mine[B_ST] = (uint64_t)st;
    if (st == ADDC_OK) {
        uint64_t h = ckpt_hash(0xCBF29CE484222325ull, "u8", 2);
        mine[B_HASH] = ckpt_hash(h, name, strlen(name) + 1);
        mine[B_N] = counts ? (uint64_t)n : 0;
        if (rank == src) {
            mine[B_SUM] = ckpt_checksum(bytes, n, 1, 0);
            mine[B_PIECES] = (uint64_t)ckpt_pieces(n, 1, 1);
        }
    }
    char what[600];
    snprintf(what, sizeof what, "checkpoint write blob '%s'", name ? name : "(null)");
    TRY(ckpt_gather(f, mine, B_K, what));
    TRY(ckpt_gathered_status(f, B_K, B_ST, st, what));
    const uint64_t *g0 = f->gather + (int64_t)src * B_K;
    for (int r = 0; r < size; r++) {
        const uint64_t *g = f->gather + (int64_t)r * B_K;
        if (g[B_HASH] != g0[B_HASH]) {
            return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: ranks %d and %d disagree on the name of blob '%s'",
                                  f->path, src, r, name);
        }
        if (owner < 0 && g[B_N] != g0[B_N]) {
            return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: blob '%s': rank 0 passes %llu bytes, rank %d %llu "
                                  "(pass owner >= 0 for a blob that one rank has)", f->path, name,
                                  (unsigned long long)g0[B_N], r, (unsigned long long)g[B_N]);
        }
    }
    int64_t total = (int64_t)g0[B_N];
    int64_t hi = rank == src ? total : 0;
    st = ckpt_dset_write(f, name, true, 1, &total, 0, hi, 1, bytes, (int64_t)g0[B_PIECES], g0[B_SUM]);
    return ckpt_agree(f->comm, st, f->path, what);
}

/* An open dataset with its shape and stored checksum, after checking its element type. */
typedef struct CkptDset {
    hid_t dset;
    int32_t ndim;
    hsize_t dims[CKPT_MAX_DIMS];
    uint64_t checksum;
} CkptDset;

static Status ckpt_dset_open(CkptFile *f, const char *name, bool blob, CkptDset *d) {
    Status st = ADDC_OK;
    hid_t t = H5I_INVALID_HID, s = H5I_INVALID_HID;
    d->dset = H5I_INVALID_HID;
    d->ndim = 0;
    char what[600];
    snprintf(what, sizeof what, "dataset '%s'", name ? name : "(null)");
    if (!name || !ckpt_has(f, name)) {
        return addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s has no %s", f->path, what);
    }
    H5_CHECK(d->dset = H5Dopen2(f->file, name, H5P_DEFAULT), ADDC_ERR_FORMAT, what);
    H5_CHECK(t = H5Dget_type(d->dset), ADDC_ERR_FORMAT, what);
    H5_CHECK(s = H5Dget_space(d->dset), ADDC_ERR_FORMAT, what);
    int nd = H5Sget_simple_extent_ndims(s);
    H5_CHECK(nd, ADDC_ERR_FORMAT, what);
    bool type_ok = blob ? (H5Tget_class(t) == H5T_INTEGER && H5Tget_size(t) == 1 && nd == 1)
                        : (H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4);
    if (!type_ok || nd < 1 || nd > CKPT_MAX_DIMS) {
        st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: %s is not %s (class %d, %zu bytes, %d dimensions)",
                            f->path, what, blob ? "a u8 blob" : "an f32 tensor of 1 to 8 dimensions",
                            (int)H5Tget_class(t), H5Tget_size(t), nd);
        goto done;
    }
    d->ndim = nd;
    H5_CHECK(H5Sget_simple_extent_dims(s, d->dims, NULL), ADDC_ERR_FORMAT, what);
    st = ckpt_attr_read(f, d->dset, what, "addc_checksum", H5T_INTEGER, H5T_NATIVE_UINT64, &d->checksum);
done:
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (st != ADDC_OK && d->dset >= 0) {
        H5Dclose(d->dset);
        d->dset = H5I_INVALID_HID;
    }
    return st;
}

Status ckpt_shape(CkptFile *f, const char *name, int32_t *ndim, int64_t *shape) {
    *ndim = 0;
    TRY(ckpt_check_reading(f, "ckpt_shape"));
    CkptDset d;
    Status st = ckpt_dset_open(f, name, false, &d);
    if (st == ADDC_OK) {
        *ndim = d.ndim;
        for (int32_t i = 0; i < d.ndim; i++) shape[i] = (int64_t)d.dims[i];
        H5Dclose(d.dset);
    }
    st = ckpt_agree(f->comm, st, f->path, "ckpt_shape");
    if (st != ADDC_OK) *ndim = 0;
    return st;
}

static Status ckpt_checksum_mismatch(CkptFile *f, const char *name, uint64_t stored, uint64_t got) {
    return addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: dataset '%s' is corrupt: checksum %016" PRIx64
                          " computed over the data read, %016" PRIx64 " stored", f->path, name, got, stored);
}

enum { R_ST, R_LO, R_HI, R_PIECES, R_K };
enum { V_ST, V_SUM, V_LO, V_HI, V_K };

Status ckpt_read_f32(CkptFile *f, const char *name, int32_t ndim, const int64_t *shape, int64_t row_lo,
                     int64_t row_hi, float *rows) {
    TRY(ckpt_check_reading(f, "ckpt_read_f32"));
    CkptDset d;
    int64_t rowsize = 1;
    Status st = ckpt_dset_open(f, name, false, &d);
    if (st == ADDC_OK) {
        bool same = ndim == d.ndim && shape;
        for (int32_t i = 0; same && i < ndim; i++) same = shape[i] == (int64_t)d.dims[i];
        if (!same) {
            char want[200] = "", have[200] = "";
            for (int32_t i = 0; shape && i < ndim && i < CKPT_MAX_DIMS; i++) {
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", i ? ", " : "", (long long)shape[i]);
            }
            for (int32_t i = 0; i < d.ndim; i++) {
                snprintf(have + strlen(have), sizeof have - strlen(have), "%s%llu", i ? ", " : "",
                         (unsigned long long)d.dims[i]);
            }
            st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset '%s' has shape (%s), the caller expects (%s)",
                                f->path, name, have, want);
        }
    }
    if (st == ADDC_OK) {
        for (int32_t i = 1; i < ndim; i++) rowsize *= shape[i];
        if (row_lo < 0 || row_hi < row_lo || row_hi > shape[0] || (row_hi > row_lo && rowsize > 0 && !rows)) {
            st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: dataset '%s': rows [%lld, %lld) outside [0, %lld) "
                                "or no buffer", f->path, name, (long long)row_lo, (long long)row_hi,
                                (long long)shape[0]);
        }
    }
    uint64_t mine[R_K] = {(uint64_t)st, 0, 0, 0};
    if (st == ADDC_OK) {
        mine[R_LO] = (uint64_t)row_lo;
        mine[R_HI] = (uint64_t)row_hi;
        mine[R_PIECES] = (uint64_t)ckpt_pieces(row_hi - row_lo, rowsize, 4);
    }
    char what[600];
    snprintf(what, sizeof what, "checkpoint read '%s'", name ? name : "(null)");
    st = ckpt_gather(f, mine, R_K, what);
    if (st == ADDC_OK) st = ckpt_gathered_status(f, R_K, R_ST, (Status)mine[R_ST], what);
    if (st != ADDC_OK) {
        if (d.dset >= 0) H5Dclose(d.dset);
        return st;
    }
    int size = comm_size(f->comm);
    uint64_t pieces = 0;
    for (int r = 0; r < size; r++) {
        if (f->gather[(int64_t)r * R_K + R_PIECES] > pieces) pieces = f->gather[(int64_t)r * R_K + R_PIECES];
    }
    bool partition = ckpt_slabs_partition(f, R_K, R_LO, shape[0]);
    st = ckpt_io_rows(f, d.dset, name, false, H5T_NATIVE_FLOAT, 4, ndim, d.dims, row_lo, row_hi, rowsize, rows,
                      (int64_t)pieces);
    H5Dclose(d.dset);
    uint64_t v[V_K] = {(uint64_t)st, 0, (uint64_t)row_lo, (uint64_t)row_hi};
    if (st == ADDC_OK) v[V_SUM] = ckpt_checksum(rows, (row_hi - row_lo) * rowsize, 4, row_lo * rowsize);
    TRY(ckpt_gather(f, v, V_K, what));
    TRY(ckpt_gathered_status(f, V_K, V_ST, st, what));
    /* The verdict is the same on every rank: every rank's slab and sum are known to all. Slabs
     * that partition the rows verify together; otherwise each rank that read every row does. */
    uint64_t sum = 0;
    for (int r = 0; r < size; r++) {
        const uint64_t *g = f->gather + (int64_t)r * V_K;
        if (partition) {
            sum += g[V_SUM];
        } else if (g[V_LO] == 0 && (int64_t)g[V_HI] == shape[0] && g[V_SUM] != d.checksum) {
            return ckpt_checksum_mismatch(f, name, d.checksum, g[V_SUM]);
        }
    }
    if (partition && sum != d.checksum) return ckpt_checksum_mismatch(f, name, d.checksum, sum);
    return ADDC_OK;
}

Status ckpt_bytes_size(CkptFile *f, const char *name, int64_t *n) {
    *n = 0;
    TRY(ckpt_check_reading(f, "ckpt_bytes_size"));
    CkptDset d;
    Status st = ckpt_dset_open(f, name, true, &d);
    if (st == ADDC_OK) {
        *n = (int64_t)d.dims[0];
        H5Dclose(d.dset);
    }
    return ckpt_agree(f->comm, st, f->path, "ckpt_bytes_size");
}

Status ckpt_read_bytes(CkptFile *f, const char *name, void *bytes, int64_t n) {
    TRY(ckpt_check_reading(f, "ckpt_read_bytes"));
    CkptDset d;
    Status st = ckpt_dset_open(f, name, true, &d);
    if (st == ADDC_OK && ((int64_t)d.dims[0] != n || (n > 0 && !bytes))) {
        st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: blob '%s' has %llu bytes, the caller reads %lld", f->path,
                            name, (unsigned long long)d.dims[0], (long long)n);
    }
    uint64_t mine[2] = {(uint64_t)st, st == ADDC_OK ? (uint64_t)ckpt_pieces(n, 1, 1) : 0};
    char what[600];
    snprintf(what, sizeof what, "checkpoint read blob '%s'", name ? name : "(null)");
    st = ckpt_gather(f, mine, 2, what);
    if (st == ADDC_OK) st = ckpt_gathered_status(f, 2, 0, (Status)mine[0], what);
    if (st != ADDC_OK) {
        if (d.dset >= 0) H5Dclose(d.dset);
        return st;
    }
    uint64_t pieces = 0;
    for (int r = 0; r < comm_size(f->comm); r++) {
        if (f->gather[2 * r + 1] > pieces) pieces = f->gather[2 * r + 1];
    }
    st = ckpt_io_rows(f, d.dset, name, false, H5T_NATIVE_UCHAR, 1, 1, d.dims, 0, n, 1, bytes, (int64_t)pieces);
    H5Dclose(d.dset);
    if (st == ADDC_OK) {
        uint64_t sum = ckpt_checksum(bytes, n, 1, 0);
        if (sum != d.checksum) st = ckpt_checksum_mismatch(f, name, d.checksum, sum);
    }
    return ckpt_agree(f->comm, st, f->path, what);
}

/* ---- commit ---- */

/* Rank 0, after every rank closed the .tmp: fsync, rename, fsync DIR, latest, prune. */
static Status ckpt_publish(CkptFile *f, int keep) {
    TRY(ckpt_fsync_path(f->path, false));
    if (rename(f->path, f->final) != 0) {
        return addc_error_set(ADDC_ERR_IO, "cannot rename %s to %s: %s", f->path, f->final, strerror(errno));
    }
    TRY(ckpt_fsync_path(f->dir, true));
    char latest[CKPT_PATH_MAX], latest_tmp[CKPT_PATH_MAX];
    TRY(ckpt_join(latest, sizeof latest, f->dir, "latest"));
    TRY(ckpt_join(latest_tmp, sizeof latest_tmp, f->dir, "latest.tmp"));
    int fd = open(latest_tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        return addc_error_set(ADDC_ERR_IO, "checkpoint %s committed, but %s cannot be created: %s", f->final,
                              latest_tmp, strerror(errno));
    }
    char line[CKPT_NAME_CAP + 2];
    int len = snprintf(line, sizeof line, "%s\n", f->final_name);
    bool ok = write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    int e = errno;
    close(fd);
    if (!ok || rename(latest_tmp, latest) != 0) {
        if (ok) e = errno;
        unlink(latest_tmp);
        return addc_error_set(ADDC_ERR_IO, "checkpoint %s committed, but %s was not updated: %s", f->final, latest,
                              strerror(e));
    }
    TRY(ckpt_fsync_path(f->dir, true));
    if (keep <= 0) return ADDC_OK;
    CkptEntry *list;
    int n;
    TRY(ckpt_scan(f->dir, false, &list, &n));
    Status st = ADDC_OK;
    for (int i = keep; i < n; i++) {
        if (!strcmp(list[i].name, f->final_name)) continue; /* never the one just committed */
        char p[CKPT_PATH_MAX];
        if (ckpt_join(p, sizeof p, f->dir, list[i].name) == ADDC_OK && unlink(p) != 0 && errno != ENOENT) {
            st = addc_error_set(ADDC_ERR_IO, "checkpoint %s committed, but the old %s cannot be removed: %s", f->final,
                                p, strerror(errno));
            break;
        }
    }
    free(list);
    return st;
}

Status ckpt_commit(CkptFile *f, int keep, char *final_path, int final_cap) {
    if (final_path && final_cap > 0) final_path[0] = '\0';
    TRY(ckpt_check_writing(f, "ckpt_commit"));
    Comm *c = f->comm;
    Status st = ADDC_OK;
    if (keep < 0) st = addc_error_set(ADDC_ERR_INVALID, "checkpoint %s: keep %d is negative", f->path, keep);
    st = ckpt_agree(c, st, f->path, "commit");
    if (st == ADDC_OK) {
        int64_t one = 1;
        st = ckpt_attr_write(f, f->file, "root", "addc_attr_checksum", H5T_STD_U64LE, H5T_NATIVE_UINT64, &f->attr_sum);
        if (st == ADDC_OK) st = ckpt_attr_write(f, f->file, "root", "addc_complete", H5T_STD_I64LE, H5T_NATIVE_INT64, &one);
        st = ckpt_agree(c, st, f->path, "marking complete");
        /* Under MPI-IO this is MPI_File_sync on every rank: each rank's writes reach the disk. */
        if (st == ADDC_OK && H5Fflush(f->file, H5F_SCOPE_GLOBAL) < 0) {
            st = addc_error_set(ADDC_ERR_IO, "checkpoint %s: flush failed: HDF5 error (%s)", f->path, ckpt_h5_detail());
        }
    }
    if (H5Fclose(f->file) < 0 && st == ADDC_OK) {
        st = addc_error_set(ADDC_ERR_IO, "checkpoint %s: close failed: HDF5 error (%s)", f->path, ckpt_h5_detail());
    }
    f->file = H5I_INVALID_HID;
    st = ckpt_agree(c, st, f->path, "closing");
    if (st == ADDC_OK && comm_rank(c) == 0) st = ckpt_publish(f, keep);
    st = ckpt_agree(c, st, f->final, "commit"); /* the barrier that ends the commit */
    if (comm_rank(c) == 0 && st != ADDC_OK) unlink(f->path);
    if (st == ADDC_OK && final_path && final_cap > 0) snprintf(final_path, (size_t)final_cap, "%s", f->final);
    ckpt_file_free(f);
    return st;
}

/* ---- the newest usable checkpoint ---- */

Status ckpt_open_latest(Comm *comm, const char *dir, CkptFile **out, bool *found) {
    *out = NULL;
    *found = false;
    CkptEntry *list = NULL;
    int n = 0;
    Status st = ADDC_OK;
    if (comm_rank(comm) == 0) st = ckpt_scan(dir, false, &list, &n);
    uint64_t hdr[2] = {(uint64_t)st, (uint64_t)n};
    Status bs = ckpt_bcast_u64(comm, hdr, 2, "checkpoint list");
    if (bs != ADDC_OK) {
        free(list);
        return bs;
    }
    if (hdr[0] != ADDC_OK) {
        free(list);
        if (st == ADDC_OK) st = addc_error_set((Status)hdr[0], "cannot list checkpoint directory %s (on rank 0)", dir);
        return st;
    }
    n = (int)hdr[1];
    if (n == 0) return ADDC_OK; /* no checkpoint at all */
    char first_name[CKPT_NAME_CAP] = "", first_reason[1024] = "";
    for (int i = 0; i < n; i++) {
        char name[CKPT_NAME_CAP] = "", path[CKPT_PATH_MAX];
        if (comm_rank(comm) == 0) snprintf(name, sizeof name, "%s", list[i].name);
        if ((st = ckpt_bcast_str(comm, name, sizeof name, "checkpoint name")) != ADDC_OK) break;
        if ((st = ckpt_join(path, sizeof path, dir, name)) != ADDC_OK) break;
        CkptFile *f;
        st = ckpt_open_path(comm, path, &f);
        if (st == ADDC_OK) {
            free(list);
            *out = f;
            *found = true;
            return ADDC_OK;
        }
        /* The reason without its "checkpoint PATH: " prefix, then on to the next older one. */
        const char *reason = addc_error_message();
        size_t plen = strlen("checkpoint ") + strlen(path) + 2;
        if (!strncmp(reason, "checkpoint ", 11) && !strncmp(reason + 11, path, strlen(path)) &&
            !strncmp(reason + plen - 2, ": ", 2)) {
            reason += plen;
        }
        if (i == 0) {
            snprintf(first_name, sizeof first_name, "%s", name);
            snprintf(first_reason, sizeof first_reason, "%s", reason);
        }
        if (comm_rank(comm) == 0) {
            if (i + 1 < n) fprintf(stderr, "checkpoint %s is unreadable (%s); falling back to %s\n", path, reason,
                                   list[i + 1].name);
            else fprintf(stderr, "checkpoint %s is unreadable (%s); no older checkpoint\n", path, reason);
        }
        addc_error_clear();
        st = ADDC_OK;
    }
    free(list);
    if (st != ADDC_OK) return st;
    return addc_error_set(ADDC_ERR_IO, "checkpoint directory %s: none of its %d checkpoints is usable (the newest, %s: "
                          "%s)", dir, n, first_name, first_reason);
}

/* ---- comparing two checkpoints' contents ---- */

typedef struct CkptCmp {
    hid_t b;
    char *diff;
    int cap;
    int64_t datasets;
    bool same;
} CkptCmp;

/* The raw bytes of an object's value (a dataset or an attribute) in its stored type; NULL on failure. */
static void *ckpt_raw(hid_t obj, bool attr, hid_t *type_out, size_t *n_out) {
    hid_t space = attr ? H5Aget_space(obj) : H5Dget_space(obj);
    hid_t type = attr ? H5Aget_type(obj) : H5Dget_type(obj);
    void *buf = NULL;
    if (space >= 0 && type >= 0) {
        hssize_t n = H5Sget_simple_extent_npoints(space);
        size_t sz = H5Tget_size(type);
        size_t bytes = n > 0 ? (size_t)n * sz : 0;
        buf = calloc(1, bytes + 1);
        herr_t r = -1;
        if (buf && bytes == 0) r = 0;
        else if (buf) r = attr ? H5Aread(obj, type, buf) : H5Dread(obj, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
        if (r < 0) {
            free(buf);
            buf = NULL;
        }
        *n_out = bytes;
    }
    if (space >= 0) H5Sclose(space);
    if (buf) *type_out = type;
    else if (type >= 0) H5Tclose(type);
    return buf;
}

static bool ckpt_same_value(hid_t a, hid_t b, bool attr) {
    hid_t ta = -1, tb = -1;
    size_t na = 0, nb = 0;
    void *x = ckpt_raw(a, attr, &ta, &na), *y = ckpt_raw(b, attr, &tb, &nb);
    bool same = x && y && na == nb && H5Tequal(ta, tb) > 0 && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    if (ta >= 0) H5Tclose(ta);
    if (tb >= 0) H5Tclose(tb);
    return same;
}

static void ckpt_cmp_note(CkptCmp *c, const char *what, const char *name) {
    if (c->same) snprintf(c->diff, (size_t)c->cap, "%s '%s'", what, name);
    c->same = false;
}

static herr_t ckpt_cmp_visit(hid_t a, const char *name, const H5O_info_t *info, void *user) {
    CkptCmp *c = user;
    if (info->type != H5O_TYPE_DATASET) return 0;
    c->datasets++;
    if (H5Lexists(c->b, name, H5P_DEFAULT) <= 0) {
        ckpt_cmp_note(c, "only in the first:", name);
        return 0;
    }
    hid_t da = H5Dopen2(a, name, H5P_DEFAULT), db = H5Dopen2(c->b, name, H5P_DEFAULT);
    if (da < 0 || db < 0 || !ckpt_same_value(da, db, false)) ckpt_cmp_note(c, "dataset", name);
    if (da >= 0) H5Dclose(da);
    if (db >= 0) H5Dclose(db);
    return 0;
}

static herr_t ckpt_count_visit(hid_t o, const char *name, const H5O_info_t *info, void *user) {
    (void)o;
    (void)name;
    if (info->type == H5O_TYPE_DATASET) ++*(int64_t *)user;
    return 0;
}

static int64_t ckpt_count_datasets(hid_t f) {
    int64_t n = 0;
    H5Ovisit(f, H5_INDEX_NAME, H5_ITER_INC, ckpt_count_visit, &n);
    return n;
}

static herr_t ckpt_cmp_attr(hid_t loc, const char *name, const H5A_info_t *info, void *user) {
    (void)info;
    CkptCmp *c = user;
    if (H5Aexists(c->b, name) <= 0) {
        ckpt_cmp_note(c, "root attribute only in the first:", name);
        return 0;
    }
    hid_t aa = H5Aopen(loc, name, H5P_DEFAULT), ab = H5Aopen(c->b, name, H5P_DEFAULT);
    if (aa < 0 || ab < 0 || !ckpt_same_value(aa, ab, true)) ckpt_cmp_note(c, "root attribute", name);
    if (aa >= 0) H5Aclose(aa);
    if (ab >= 0) H5Aclose(ab);
    return 0;
}

Status ckpt_compare(const char *path_a, const char *path_b, bool *same, char *diff, int diff_cap) {
    ckpt_h5_init();
    *same = false;
    if (diff_cap > 0) diff[0] = 0;
    hid_t a = H5Fopen(path_a, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t b = a >= 0 ? H5Fopen(path_b, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    Status st = ADDC_OK;
    if (a < 0 || b < 0) {
        st = addc_error_set(ADDC_ERR_IO, "checkpoint compare: cannot open %s", a < 0 ? path_a : path_b);
    } else {
        CkptCmp c = {b, diff, diff_cap, 0, true};
        if (H5Ovisit(a, H5_INDEX_NAME, H5_ITER_INC, ckpt_cmp_visit, &c) < 0 ||
            H5Aiterate2(a, H5_INDEX_NAME, H5_ITER_INC, NULL, ckpt_cmp_attr, &c) < 0)
            st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint compare: cannot walk %s", path_a);
        else if (ckpt_count_datasets(b) != c.datasets)
            ckpt_cmp_note(&c, "dataset count differs:", path_b);
        else {
            H5O_info_t ia, ib;
            if (H5Oget_info(a, &ia) < 0 || H5Oget_info(b, &ib) < 0 || ia.num_attrs != ib.num_attrs)
                ckpt_cmp_note(&c, "root attribute count differs:", path_b);
        }
        *same = st == ADDC_OK && c.same;
    }
    if (a >= 0) H5Fclose(a);
    if (b >= 0) H5Fclose(b);
    return st;
}
