/* launch/train_ckpt: the trainer's state in and out of a checkpoint file (see train_ckpt.h). */
#include "launch/train_ckpt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/cuda.h"
#include "launch/cli.h"
#include "nn/weights.h"

/* ---- a store-shaped buffer, parameter by parameter ---- */

/* The full flat values (store numel) of buf: buf itself on one rank (on the store's device), gathered
 * into the host buffer *tmp with FSDP (unit by unit on the GPU: the full copy never sits in device
 * memory). *dev: whether *full is device memory. */
static Status full_of(Fsdp *f, const ParamStore *s, const float *buf, float **tmp, const float **full, bool *dev) {
    if (!f) {
        *full = buf;
        *dev = s->device == DEVICE_CUDA;
        return ADDC_OK;
    }
    if (!*tmp) *tmp = malloc((size_t)s->numel * sizeof(float));
    if (!*tmp) return addc_error_set(ADDC_ERR_NOMEM, "checkpoint: out of memory for %lld values", (long long)s->numel);
    TRY(fsdp_gather_full_host(f, buf, *tmp));
    *full = *tmp;
    *dev = false;
    return ADDC_OK;
}

/* A parameter's shape in files (a scalar as one row) and a scratch of at least its numel. */
static Status param_prepare(const Param *p, int64_t *shape, int32_t *nd, float **scratch, int64_t *cap) {
    *nd = weights_file_shape(p, shape);
    if (*nd == 0) {
        shape[0] = 1;
        *nd = 1;
    }
    int64_t n = tensor_numel(&p->var.v);
    if (n <= *cap) return ADDC_OK;
    free(*scratch);
    *scratch = malloc((size_t)n * sizeof(float));
    *cap = *scratch ? n : 0;
    return *scratch ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "checkpoint: out of memory for %s", p->name);
}

/* Writes (or reads) every parameter of s from (into) the flat buffer `full` (addc layout) as
 * group/NAME in its file layout. Writing, rank r writes rows [r R / N, (r + 1) R / N) of each;
 * reading, every rank reads every row. */
static Status store_io_host(CkptFile *cf, Comm *comm, const ParamStore *s, float *full, const char *group,
                            bool write);

/* dev: `full` is device memory (a GPU store's own buffers: values, and the optimizer moments and EMA
 * the trainer keeps beside them), staged through the host. */
static Status store_io(CkptFile *cf, Comm *comm, const ParamStore *s, float *full, const char *group, bool write,
                       bool dev) {
    if (!dev) return store_io_host(cf, comm, s, full, group, write);
    size_t bytes = (size_t)(s->numel ? s->numel : 1) * sizeof(float);
    float *host = malloc(bytes);
    if (!host) return addc_error_set(ADDC_ERR_NOMEM, "checkpoint: out of memory staging %s", group);
    Status st = write ? cuda_copy_to_host(host, full, bytes) : ADDC_OK;
    if (st == ADDC_OK) st = store_io_host(cf, comm, s, host, group, write);
    if (st == ADDC_OK && !write) st = cuda_copy_to_device(full, host, bytes);
    if (st == ADDC_OK && !write) st = cuda_synchronize();
    free(host);
    return st;
}

static Status store_io_host(CkptFile *cf, Comm *comm, const ParamStore *s, float *full, const char *group,
                            bool write) {
    int r = write ? comm_rank(comm) : 0, N = write ? comm_size(comm) : 1;
    float *conv = NULL;
    int64_t cap = 0;
    Status st = ADDC_OK;
    for (int32_t i = 0; i < s->n && st == ADDC_OK; i++) {
        Param *p = param_store_get((ParamStore *)s, i);
        int64_t shape[CKPT_MAX_DIMS];
        int32_t nd;
        st = param_prepare(p, shape, &nd, &conv, &cap);
        if (st != ADDC_OK) break;
        char name[PARAM_NAME_MAX + 64];
        snprintf(name, sizeof name, "%s/%s", group, p->name);
        if (write) {
            weights_layout_to_file(p, full + p->offset, conv);
            int64_t rows = shape[0], row = tensor_numel(&p->var.v) / rows, lo = rows * r / N, hi = rows * (r + 1) / N;
            st = ckpt_write_f32(cf, name, nd, shape, lo, hi, conv + lo * row);
        } else {
            st = ckpt_read_f32(cf, name, nd, shape, 0, shape[0], conv);
            if (st == ADDC_OK) weights_layout_from_file(p, conv, full + p->offset);
        }
    }
    free(conv);
    return st;
}

static Status write_store(CkptFile *cf, Comm *comm, const ParamStore *s, const float *full, const char *group,
                          bool dev) {
    return store_io(cf, comm, s, (float *)full, group, true, dev);
}

static Status read_store(CkptFile *cf, const ParamStore *s, float *full, const char *group, bool dev) {
    return store_io(cf, NULL, s, full, group, false, dev); /* every rank reads every row: no rank needed */
}

/* buf (the store's own buffer on one rank, or this rank's shard; on the store's device) <- group/ *. */
static Status load_buffer(CkptFile *cf, Fsdp *f, const ParamStore *s, float *buf, const char *group) {
    if (!f) return read_store(cf, s, buf, group, s->device == DEVICE_CUDA);
    float *full = malloc((size_t)s->numel * sizeof(float));
    if (!full) return addc_error_set(ADDC_ERR_NOMEM, "checkpoint: out of memory for %lld values", (long long)s->numel);
    Status st = read_store(cf, s, full, group, false);
    if (st == ADDC_OK) st = fsdp_scatter_full_host(f, full, buf);
    free(full);
    return st;
}

static Status save_buffer(CkptFile *cf, Comm *comm, Fsdp *f, const ParamStore *s, const float *buf,
                          const char *group, float **tmp) {
    const float *full = NULL;
    bool dev = false;
    TRY(full_of(f, s, buf, tmp, &full, &dev));
    return write_store(cf, comm, s, full, group, dev);
}

/* ---- the trainer ---- */

static Status save_contents(Trainer *t, CkptFile *cf, int64_t nonfinite_total) {
    Comm *comm = t->comm;
    float *tmp = NULL;
    Status st = ADDC_OK;
    ParamStore *sp = &t->student->params;
#define SAVE(x)                                                                                                    \
    do {                                                                                                           \
        if (st == ADDC_OK) st = (x);                                                                               \
    } while (0)
    SAVE(save_buffer(cf, comm, t->fsdp_student, sp, t->opt_g.values, "student", &tmp));
    if (t->ema) SAVE(save_buffer(cf, comm, t->fsdp_student, sp, t->ema, "ema", &tmp));
    SAVE(save_buffer(cf, comm, t->fsdp_student, sp, t->opt_g.m, "opt_g/m", &tmp));
    SAVE(save_buffer(cf, comm, t->fsdp_student, sp, t->opt_g.v, "opt_g/v", &tmp));
    free(tmp);
    tmp = NULL;
    if (t->heads) {
        ParamStore *hp = &t->heads->params;
        SAVE(save_buffer(cf, comm, t->fsdp_heads, hp, t->opt_d.values, "heads", &tmp));
        SAVE(save_buffer(cf, comm, t->fsdp_heads, hp, t->opt_d.m, "opt_d/m", &tmp));
        SAVE(save_buffer(cf, comm, t->fsdp_heads, hp, t->opt_d.v, "opt_d/v", &tmp));
        if (t->heads->state.n > 0) SAVE(write_store(cf, comm, &t->heads->state, t->heads->state.data, "heads_state",
                                                       t->heads->state.device == DEVICE_CUDA));
        free(tmp);
        tmp = NULL;
    }
    /* each stream's loader state, by the rank that reads it */
    int64_t S = t->cfg.data.streams, per = S / t->world;
    for (int64_t v = 0; v < S && st == ADDC_OK; v++) {
        LoaderState ls;
        memset(&ls, 0, sizeof ls);
        int owner = (int)(v / per);
        if (owner == t->rank) loader_state(t->loaders[v - t->first_stream], &ls);
        char name[64];
        snprintf(name, sizeof name, "loader/stream-%04lld", (long long)v);
        st = ckpt_write_bytes(cf, name, &ls, (int64_t)sizeof ls, owner);
    }
    char *yaml = config_format(&train_config_schema, &t->cfg);
    if (!yaml && st == ADDC_OK) st = addc_error_set(ADDC_ERR_NOMEM, "checkpoint: config text");
    SAVE(ckpt_write_bytes(cf, "config", yaml, yaml ? (int64_t)strlen(yaml) : 0, -1));
    free(yaml);
    SAVE(ckpt_attr_i64(cf, "step", t->step));
    SAVE(ckpt_attr_i64(cf, "opt_g_step", t->opt_g.step));
    SAVE(ckpt_attr_i64(cf, "opt_d_step", t->opt_d.step));
    SAVE(ckpt_attr_i64(cf, "seed", t->cfg.seed));
    SAVE(ckpt_attr_i64(cf, "batch", t->cfg.batch));
    SAVE(ckpt_attr_i64(cf, "streams", t->cfg.data.streams));
    SAVE(ckpt_attr_i64(cf, "nonfinite_total", nonfinite_total));
    SAVE(ckpt_attr_str(cf, "mode", train_mode_names[t->cfg.mode]));
#undef SAVE
    return st;
}

Status train_ckpt_save(Trainer *t, const char *dir, int keep, int64_t nonfinite_total, char *path, int cap,
                       double *mb_s) {
    double t0 = cli_now_s();
    CkptFile *cf;
    TRY(ckpt_create(t->comm, dir, t->step, &cf));
    Status st = save_contents(t, cf, nonfinite_total);
    if (st != ADDC_OK) {
        ckpt_abort(cf);
        return addc_error_context(st, "checkpoint of step %lld in %s", (long long)t->step, dir);
    }
    int64_t bytes = ckpt_bytes(cf);
    TRY(ckpt_commit(cf, keep, path, cap));
    if (mb_s) *mb_s = (double)bytes / 1e6 / (cli_now_s() - t0 + 1e-9);
    return ADDC_OK;
}

static Status expect_i64(CkptFile *f, const char *name, int64_t want, const char *key) {
    int64_t v;
    TRY(ckpt_get_i64(f, name, &v));
    if (v != want)
        return addc_error_set(ADDC_ERR_INVALID,
                              "checkpoint %s has %s %lld, this run %lld: resume with the checkpoint's %s (or start a "
                              "new run directory)",
                              ckpt_path(f), key, (long long)v, (long long)want, key);
    return ADDC_OK;
}

Status train_ckpt_read_params(CkptFile *f, ParamStore *s, const char *group) {
    return read_store(f, s, s->data, group, s->device == DEVICE_CUDA);
}

Status train_ckpt_config(CkptFile *f, TrainConfig *cfg) {
    int64_t n;
    TRY(ckpt_bytes_size(f, "config", &n));
    char *text = malloc((size_t)n + 1);
    if (!text) return addc_error_set(ADDC_ERR_NOMEM, "checkpoint config: out of memory");
    Status st = ckpt_read_bytes(f, "config", text, n);
    text[st == ADDC_OK ? n : 0] = 0;
    char path[] = "/tmp/addc_ckpt_config_XXXXXX";
    int fd = st == ADDC_OK ? mkstemp(path) : -1;
    if (st == ADDC_OK && fd < 0) st = addc_error_set(ADDC_ERR_IO, "cannot create a temporary file for the config");
    if (fd >= 0) {
        FILE *fp = fdopen(fd, "w");
        bool ok = fp && fwrite(text, 1, (size_t)n, fp) == (size_t)n;
        if (fp) ok = fclose(fp) == 0 && ok;
        else close(fd);
        if (!ok) st = addc_error_set(ADDC_ERR_IO, "cannot write %s", path);
        const char *files[1] = {path};
        if (st == ADDC_OK) st = train_config_load(cfg, files, 1, NULL, 0);
        unlink(path);
    }
    free(text);
    return st == ADDC_OK ? st : addc_error_context(st, "the config stored in %s", ckpt_path(f));
}

Status train_ckpt_streams(CkptFile *f, int64_t *streams) { return ckpt_get_i64(f, "streams", streams); }

Status train_ckpt_load(Trainer *t, CkptFile *f, int64_t *nonfinite_total) {
    char mode[32];
    TRY(ckpt_get_str(f, "mode", mode, sizeof mode));
    if (strcmp(mode, train_mode_names[t->cfg.mode]))
        return addc_error_set(ADDC_ERR_INVALID, "checkpoint %s is of mode %s, this run is %s", ckpt_path(f), mode,
                              train_mode_names[t->cfg.mode]);
    TRY(expect_i64(f, "seed", t->cfg.seed, "seed"));
    TRY(expect_i64(f, "batch", t->cfg.batch, "batch"));
    TRY(expect_i64(f, "streams", t->cfg.data.streams, "data.streams"));
    ParamStore *sp = &t->student->params;
    TRY(load_buffer(f, t->fsdp_student, sp, t->opt_g.values, "student"));
    if (t->ema) TRY(load_buffer(f, t->fsdp_student, sp, t->ema, "ema"));
    TRY(load_buffer(f, t->fsdp_student, sp, t->opt_g.m, "opt_g/m"));
    TRY(load_buffer(f, t->fsdp_student, sp, t->opt_g.v, "opt_g/v"));
    if (t->fsdp_student) fsdp_invalidate(t->fsdp_student);
    if (t->heads) {
        ParamStore *hp = &t->heads->params;
        TRY(load_buffer(f, t->fsdp_heads, hp, t->opt_d.values, "heads"));
        TRY(load_buffer(f, t->fsdp_heads, hp, t->opt_d.m, "opt_d/m"));
        TRY(load_buffer(f, t->fsdp_heads, hp, t->opt_d.v, "opt_d/v"));
        if (t->heads->state.n > 0) TRY(read_store(f, &t->heads->state, t->heads->state.data, "heads_state",
                                                      t->heads->state.device == DEVICE_CUDA));
        if (t->fsdp_heads) fsdp_invalidate(t->fsdp_heads);
    }
    TRY(ckpt_get_i64(f, "step", &t->step));
    TRY(ckpt_get_i64(f, "opt_g_step", &t->opt_g.step));
    TRY(ckpt_get_i64(f, "opt_d_step", &t->opt_d.step));
    TRY(ckpt_get_i64(f, "nonfinite_total", nonfinite_total));

    /* this rank's streams */
    int32_t n = (int32_t)(t->cfg.data.streams / t->world); /* the streams this rank reads */
    LoaderState *states = calloc((size_t)n, sizeof *states);
    const LoaderState *ptrs[TRAIN_MAX_STREAMS];
    if (!states) return addc_error_set(ADDC_ERR_NOMEM, "checkpoint: out of memory");
    Status st = ADDC_OK;
    for (int32_t i = 0; i < n && st == ADDC_OK; i++) {
        char name[64];
        int64_t size;
        snprintf(name, sizeof name, "loader/stream-%04lld", (long long)(t->first_stream + i));
        st = ckpt_bytes_size(f, name, &size);
        if (st == ADDC_OK && size != (int64_t)sizeof(LoaderState))
            st = addc_error_set(ADDC_ERR_FORMAT, "checkpoint %s: %s has %lld bytes, a loader state %zu", ckpt_path(f),
                                name, (long long)size, sizeof(LoaderState));
        if (st == ADDC_OK) st = ckpt_read_bytes(f, name, &states[i], size);
        ptrs[i] = &states[i];
    }
    /* ADDC_TEST_SKIP_LOADER_RESTORE: the negative control of tests/mpi/test_train_dist (a resume that
     * loses the data position must not match the straight run): fresh streams; never set in a real run */
    if (st == ADDC_OK) st = trainer_loaders_restore(t, getenv("ADDC_TEST_SKIP_LOADER_RESTORE") ? NULL : ptrs);
    free(states);
    return st;
}
