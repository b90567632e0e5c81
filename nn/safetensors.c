/* nn/safetensors: read (mmap, every header check before any tensor is used) and write (durable:
 * temp file, fsync, rename, fsync of the directory) safetensors files. See safetensors.h.
 *
 * Reading keeps the file mapped read-only; tensors point into the mapping and are converted
 * to f32 on demand. The checks follow the reference implementation (huggingface/safetensors),
 * which also refuses trailing bytes after the last tensor. Writing lays the data out by
 * descending element size, so every tensor is aligned to its element size when the header
 * is padded to a multiple of 8, as the Python library does. */
#include "nn/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __F16C__
#include <immintrin.h>
#endif

#include "core/json.h"
#include "core/parallel.h"

typedef struct StDtypeName {
    const char *name;
    DType dt; /* DTYPE_COUNT: a valid safetensors dtype addc does not support */
} StDtypeName;

static const StDtypeName st_dtypes[] = {
    {"F32", DTYPE_F32},      {"F16", DTYPE_F16},         {"BF16", DTYPE_BF16},        {"F64", DTYPE_F64},
    {"I32", DTYPE_I32},      {"I64", DTYPE_I64},         {"U8", DTYPE_U8},            {"BOOL", DTYPE_COUNT},
    {"I8", DTYPE_COUNT},     {"I16", DTYPE_COUNT},       {"U16", DTYPE_COUNT},        {"U32", DTYPE_COUNT},
    {"U64", DTYPE_COUNT},    {"F8_E4M3", DTYPE_COUNT},   {"F8_E5M2", DTYPE_COUNT},    {"F8_E8M0", DTYPE_COUNT},
    {"F4", DTYPE_COUNT},     {"F6_E2M3", DTYPE_COUNT},   {"F6_E3M2", DTYPE_COUNT},    {"C64", DTYPE_COUNT},
};

const char *safetensors_dtype_name(DType dt) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dt == dt && dt != DTYPE_COUNT) return st_dtypes[i].name;
    return NULL;
}

/* ---- reading ---- */

static Status st_fail(const char *path, const char *tensor, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static Status st_fail(const char *path, const char *tensor, const char *fmt, ...) {
    char what[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (tensor)
        return addc_error_set(ADDC_ERR_FORMAT, "safetensors: %s: tensor '%.200s': %s", path, tensor, what);
    return addc_error_set(ADDC_ERR_FORMAT, "safetensors: %s: %s", path, what);
}

/* "an array", "a number", ... for messages */
static const char *a_type(JsonType t) {
    static const char *const names[] = {"null", "a boolean", "a boolean", "a number", "a string", "an array", "an object"};
    return (t >= 0 && t <= JSON_OBJECT) ? names[t] : "an unknown value";
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

typedef struct StSpan {
    int64_t begin, end;
    int32_t idx;
} StSpan;

static int cmp_span(const void *a, const void *b) {
    const StSpan *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* Appends s[0 .. len) as a JSON string literal to buf (cap checked by the caller's sizing). */
static char *json_quote(char *o, const char *s, int64_t len) {
    static const char hex[] = "0123456789abcdef";
    *o++ = '"';
    for (int64_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r"
                        : c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (esc) {
            *o++ = esc[0];
            *o++ = esc[1];
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    return o;
}

/* The "__metadata__" object (string values only) re-serialised as compact JSON. */
static Status metadata_to_json(const char *path, const JsonDoc *doc, const JsonNode *obj, char **out) {
    *out = NULL;
    if (obj->type != JSON_OBJECT)
        return st_fail(path, NULL, "\"__metadata__\" must be an object of strings, got %s",
                       a_type(obj->type));
    int64_t cap = 3;
    for (const JsonNode *m = json_child(doc, obj); m; m = json_next(doc, m)) {
        if (m->type != JSON_STRING)
            return st_fail(path, NULL, "\"__metadata__\" value of '%.200s' must be a string, got %s",
                           json_key(doc, m), a_type(m->type));
        cap += 6 * (m->key_len + m->str_len) + 6;
    }
    char *buf = malloc((size_t)cap), *o = buf;
    if (!buf) return addc_error_set(ADDC_ERR_NOMEM, "safetensors: out of memory for metadata");
    *o++ = '{';
    for (const JsonNode *m = json_child(doc, obj); m; m = json_next(doc, m)) {
        if (o != buf + 1) *o++ = ',';
        o = json_quote(o, json_key(doc, m), m->key_len);
        *o++ = ':';
        int64_t sl;
        const char *sv = json_string(doc, m, &sl);
        o = json_quote(o, sv, sl);
    }
    *o++ = '}';
    *o = 0;
    *out = buf;
    return ADDC_OK;
}

static const StDtypeName *dtype_lookup(const char *s) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(st_dtypes[i].name, s) == 0) return &st_dtypes[i];
    return NULL;
}

/* Reads one tensor entry; the name is already copied into t->name. */
static Status parse_entry(const char *path, const JsonDoc *doc, const JsonNode *e, int64_t data_size, StTensor *t,
                          int64_t *begin, int64_t *end) {
    const char *nm = t->name;
    if (e->type != JSON_OBJECT)
        return st_fail(path, nm, "entry must be an object with dtype, shape and data_offsets, got %s",
                       a_type(e->type));
    const JsonNode *jd = json_get(doc, e, "dtype"), *js = json_get(doc, e, "shape"),
                   *jo = json_get(doc, e, "data_offsets");
    if (!jd || !js || !jo) return st_fail(path, nm, "entry lacks \"%s\"", !jd ? "dtype" : !js ? "shape" : "data_offsets");
    const char *ds = json_string(doc, jd, NULL);
    if (!ds) return st_fail(path, nm, "dtype must be a string, got %s", a_type(jd->type));
    const StDtypeName *dn = dtype_lookup(ds);
    if (!dn) return st_fail(path, nm, "unknown dtype '%.40s'", ds);
    if (dn->dt == DTYPE_COUNT)
        return st_fail(path, nm, "dtype %s is not supported (addc reads F32, F16, BF16, F64, I32, I64, U8)", ds);
    t->dtype = dn->dt;
    if (js->type != JSON_ARRAY) return st_fail(path, nm, "shape must be an array, got %s", a_type(js->type));
    if (js->count > TENSOR_MAX_DIMS)
        return st_fail(path, nm, "rank %lld exceeds the maximum of %d", (long long)js->count, TENSOR_MAX_DIMS);
    t->ndim = (int32_t)js->count;
    int32_t d = 0;
    bool empty = false;
    for (const JsonNode *x = json_child(doc, js); x; x = json_next(doc, x), d++) {
        int64_t v;
        if (!json_int(x, &v) || v < 0) return st_fail(path, nm, "shape entry %d is not a non-negative integer", d);
        t->shape[d] = v;
        empty = empty || v == 0;
    }
    int64_t numel = empty ? 0 : 1, esz = (int64_t)dtype_size(t->dtype);
    bool overflow = false;
    for (int32_t k = 0; k < t->ndim && !empty; k++) {
        if (numel > INT64_MAX / t->shape[k]) overflow = true;
        else numel *= t->shape[k];
    }
    if (overflow || numel > INT64_MAX / esz)
        return st_fail(path, nm, "shape is too large: its byte size does not fit in 64 bits");
    t->nbytes = numel * esz;
    if (jo->type != JSON_ARRAY || jo->count != 2)
        return st_fail(path, nm, "data_offsets must be an array [begin, end]");
    if (!json_int(json_at(doc, jo, 0), begin) || !json_int(json_at(doc, jo, 1), end) || *begin < 0 || *end < *begin)
        return st_fail(path, nm, "data_offsets must be integers 0 <= begin <= end");
    if (*end - *begin != t->nbytes)
        return st_fail(path, nm, "dtype %s x %lld elements = %lld bytes, but data_offsets [%lld, %lld] span %lld", ds,
                       (long long)numel, (long long)t->nbytes, (long long)*begin, (long long)*end,
                       (long long)(*end - *begin));
    if (*end > data_size)
        return st_fail(path, nm,
                       "data_offsets [%lld, %lld] lie outside the data section of %lld bytes (is the file truncated?)",
                       (long long)*begin, (long long)*end, (long long)data_size);
    return ADDC_OK;
}

static Status parse_header(SafeTensors *st, const char *hdr, int64_t hlen, int64_t data_size, const char *data) {
    const char *path = st->path;
    JsonDoc doc;
    JsonLimits lim = {.max_bytes = hlen > 0 ? hlen : 1, .max_depth = 8, .max_nodes = 0};
    if (json_parse(hdr, hlen, &lim, &doc) != ADDC_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", addc_error_message());
        addc_error_clear();
        return st_fail(path, NULL, "the header is not valid JSON (%s)", why);
    }
    Status s = ADDC_OK;
    const JsonNode *root = json_root(&doc);
    StSpan *spans = NULL;
    if (root->type != JSON_OBJECT) {
        s = st_fail(path, NULL, "the header must be a JSON object, got %s", a_type(root->type));
        goto done;
    }
    int64_t n = 0, pool = 0;
    for (const JsonNode *m = json_child(&doc, root); m; m = json_next(&doc, m)) {
        if (strcmp(json_key(&doc, m), "__metadata__") == 0 && (int64_t)strlen(json_key(&doc, m)) == m->key_len)
            continue;
        n++;
        pool += m->key_len + 1;
    }
    if (n > INT32_MAX / 2) {
        s = st_fail(path, NULL, "%lld tensors is too many", (long long)n);
        goto done;
    }
    st->t = calloc(1, (size_t)n * sizeof(StTensor) + (size_t)pool + 1);
    spans = malloc((size_t)(n ? n : 1) * sizeof *spans);
    if (!st->t || !spans) {
        s = addc_error_set(ADDC_ERR_NOMEM, "safetensors: %s: out of memory for %lld tensors", path, (long long)n);
        goto done;
    }
    char *names = (char *)(st->t + n);
    int32_t i = 0;
    for (const JsonNode *m = json_child(&doc, root); m; m = json_next(&doc, m)) {
        const char *key = json_key(&doc, m);
        if ((int64_t)strlen(key) != m->key_len) {
            s = st_fail(path, NULL, "a tensor name contains a NUL character");
            goto done;
        }
        if (strcmp(key, "__metadata__") == 0) {
            if (st->metadata) {
                s = st_fail(path, NULL, "\"__metadata__\" appears twice");
                goto done;
            }
            if ((s = metadata_to_json(path, &doc, m, &st->metadata)) != ADDC_OK) goto done;
            continue;
        }
        if (m->key_len == 0) {
            s = st_fail(path, NULL, "a tensor has an empty name");
            goto done;
        }
        StTensor *t = &st->t[i];
        t->name = names;
        memcpy(names, key, (size_t)m->key_len + 1);
        names += m->key_len + 1;
        int64_t b, e;
        if ((s = parse_entry(path, &doc, m, data_size, t, &b, &e)) != ADDC_OK) goto done;
        t->data = data + b;
        spans[i] = (StSpan){b, e, i};
        i++;
    }
    st->n = (int32_t)n;
    qsort(spans, (size_t)n, sizeof *spans, cmp_span);
    int64_t pos = 0;
    for (int64_t k = 0; k < n; k++) {
        if (spans[k].begin < pos) {
            s = st_fail(path, st->t[spans[k].idx].name, "data_offsets [%lld, %lld] overlap tensor '%.200s' (ending at %lld)",
                        (long long)spans[k].begin, (long long)spans[k].end, st->t[spans[k - 1].idx].name, (long long)pos);
            goto done;
        }
        if (spans[k].begin > pos) {
            s = st_fail(path, NULL, "bytes [%lld, %lld) of the data section belong to no tensor (a gap before '%.200s')",
                        (long long)pos, (long long)spans[k].begin, st->t[spans[k].idx].name);
            goto done;
        }
        pos = spans[k].end;
    }
    if (pos != data_size) {
        s = st_fail(path, NULL, "bytes [%lld, %lld) at the end of the data section belong to no tensor", (long long)pos,
                    (long long)data_size);
        goto done;
    }
    qsort(st->t, (size_t)n, sizeof *st->t, cmp_by_name);
    for (int64_t k = 1; k < n; k++)
        if (strcmp(st->t[k - 1].name, st->t[k].name) == 0) {
            s = st_fail(path, st->t[k].name, "the name appears twice in the header");
            goto done;
        }
done:
    free(spans);
    json_free(&doc);
    return s;
}

Status safetensors_open(SafeTensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    if (strlen(path) >= sizeof st->path)
        return addc_error_set(ADDC_ERR_INVALID, "safetensors: path too long: %.200s...", path);
    snprintf(st->path, sizeof st->path, "%s", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return addc_error_set(ADDC_ERR_IO, "safetensors: cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return addc_error_set(ADDC_ERR_IO, "safetensors: %s is not a readable regular file", path);
    }
    st->size = (int64_t)sb.st_size;
    if (st->size < 8) {
        close(fd);
        Status s = st_fail(path, NULL, "%lld bytes is too short for a safetensors file (8-byte header length + JSON)",
                           (long long)st->size);
        memset(st, 0, sizeof *st);
        return s;
    }
    void *map = mmap(NULL, (size_t)st->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        Status s = addc_error_set(ADDC_ERR_IO, "safetensors: cannot map %s: %s", path, strerror(errno));
        memset(st, 0, sizeof *st);
        return s;
    }
    st->map = map;
    const unsigned char *b = map;
    uint64_t hlen = 0;
    for (int k = 7; k >= 0; k--) hlen = hlen << 8 | b[k];
    Status s;
    if (hlen > (uint64_t)SAFETENSORS_HEADER_MAX)
        s = st_fail(path, NULL, "header length %llu exceeds the %lld MiB limit (not a safetensors file?)",
                    (unsigned long long)hlen, SAFETENSORS_HEADER_MAX >> 20);
    else if ((int64_t)hlen > st->size - 8)
        s = st_fail(path, NULL, "header length %llu runs past the end of the %lld-byte file (is the file truncated?)",
                    (unsigned long long)hlen, (long long)st->size);
    else
        s = parse_header(st, (const char *)b + 8, (int64_t)hlen, st->size - 8 - (int64_t)hlen,
                         (const char *)b + 8 + hlen);
    if (s != ADDC_OK) safetensors_close(st);
    return s;
}

void safetensors_close(SafeTensors *st) {
    if (st->map) munmap(st->map, (size_t)st->size);
    free(st->t);
    free(st->metadata);
    memset(st, 0, sizeof *st);
}

const StTensor *safetensors_find(const SafeTensors *st, const char *name) {
    int32_t lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[mid].name, name);
        if (c == 0) return &st->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

typedef struct ConvJob {
    const unsigned char *src;
    DType dt;
    float *dst;
} ConvJob;

/* src may be unaligned (a file with an odd header length): elements are loaded with memcpy or
 * unaligned vector loads; f16 uses the F16C instruction where the build targets it (exact) */
static void convert_chunk(void *ctx, int64_t begin, int64_t end) {
    const ConvJob *j = ctx;
    size_t es = dtype_size(j->dt);
    const unsigned char *s = j->src + (size_t)begin * es;
    float *d = j->dst + begin;
    int64_t n = end - begin;
    switch (j->dt) {
    case DTYPE_F32: memcpy(d, s, (size_t)n * 4); break;
    case DTYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(d + i, &u, 4);
        }
        break;
    case DTYPE_F16: {
        int64_t i = 0;
#ifdef __F16C__
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i))));
#endif
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            d[i] = f16_to_f32(h);
        }
        break;
    }
    default: {
        unsigned char tmp[8 * 256];
        for (int64_t i = 0; i < n; i += 256) {
            int64_t m = n - i < 256 ? n - i : 256;
            memcpy(tmp, s + (size_t)i * es, (size_t)m * es);
            dtype_convert(d + i, DTYPE_F32, tmp, j->dt, m);
        }
    }
    }
}

Status safetensors_read_f32(const StTensor *t, float *dst, int64_t n) {
    int64_t numel = t->nbytes / (int64_t)dtype_size(t->dtype);
    if (n != numel)
        return addc_error_set(ADDC_ERR_INVALID, "safetensors: tensor '%s' has %lld elements, %lld requested", t->name,
                              (long long)numel, (long long)n);
    ConvJob j = {t->data, t->dtype, dst};
    parallel_for(n, 1 << 16, convert_chunk, &j);
    return ADDC_OK;
}

/* ---- writing ---- */

static Status write_all(int fd, const void *buf, size_t n, const char *path) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return addc_error_set(ADDC_ERR_IO, "safetensors: writing %s: %s", path, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return ADDC_OK;
}

static Status fsync_dir_of(const char *path) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = 0;
    else if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return addc_error_set(ADDC_ERR_IO, "safetensors: cannot open directory %s: %s", dir, strerror(errno));
    int r = fsync(fd);
    close(fd);
    if (r != 0 && errno != EINVAL)
        return addc_error_set(ADDC_ERR_IO, "safetensors: fsync of directory %s: %s", dir, strerror(errno));
    return ADDC_OK;
}

/* The header JSON (unpadded) for tensors laid out at offs[]; malloc'd. */
static Status build_header(const StTensor *t, int32_t n, const int64_t *offs, const char *meta_json, char **out,
                           int64_t *out_len) {
    int64_t cap = 64 + (meta_json ? 8 * (int64_t)strlen(meta_json) : 0);
    for (int32_t i = 0; i < n; i++) cap += 6 * (int64_t)strlen(t[i].name) + 64 + 24 * (t[i].ndim + 2);
    char *buf = malloc((size_t)cap), *o = buf;
    if (!buf) return addc_error_set(ADDC_ERR_NOMEM, "safetensors: out of memory for the header");
    *o++ = '{';
    if (meta_json) {
        JsonDoc doc;
        if (json_parse(meta_json, (int64_t)strlen(meta_json), NULL, &doc) != ADDC_OK) {
            free(buf);
            return addc_error_context(ADDC_ERR_INVALID, "safetensors: metadata is not valid JSON");
        }
        char *mj = NULL;
        Status s = metadata_to_json("(metadata to write)", &doc, json_root(&doc), &mj);
        json_free(&doc);
        if (s != ADDC_OK) {
            free(buf);
            return s;
        }
        o += sprintf(o, "\"__metadata__\":%s", mj);
        free(mj);
    }
    for (int32_t i = 0; i < n; i++) {
        if (o != buf + 1) *o++ = ',';
        o = json_quote(o, t[i].name, (int64_t)strlen(t[i].name));
        o += sprintf(o, ":{\"dtype\":\"%s\",\"shape\":[", safetensors_dtype_name(t[i].dtype));
        for (int32_t d = 0; d < t[i].ndim; d++) o += sprintf(o, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        o += sprintf(o, "],\"data_offsets\":[%lld,%lld]}", (long long)offs[i], (long long)(offs[i] + t[i].nbytes));
    }
    *o++ = '}';
    *out = buf;
    *out_len = o - buf;
    return ADDC_OK;
}

static Status check_tensors(const char *path, const StTensor *t, int32_t n) {
    if (n < 0) return addc_error_set(ADDC_ERR_INVALID, "safetensors: %s: %d tensors", path, n);
    for (int32_t i = 0; i < n; i++) {
        const char *nm = t[i].name;
        if (!nm || !*nm || !json_utf8_valid(nm, (int64_t)strlen(nm)) || strcmp(nm, "__metadata__") == 0)
            return addc_error_set(ADDC_ERR_INVALID, "safetensors: %s: tensor %d has an empty, reserved or non-UTF-8 name",
                                  path, i);
        if (!safetensors_dtype_name(t[i].dtype))
            return addc_error_set(ADDC_ERR_INVALID, "safetensors: %s: tensor '%s' has no safetensors dtype", path, nm);
        if (t[i].ndim < 0 || t[i].ndim > TENSOR_MAX_DIMS)
            return addc_error_set(ADDC_ERR_INVALID, "safetensors: %s: tensor '%s' has rank %d", path, nm, t[i].ndim);
        int64_t numel = 1;
        for (int32_t d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0)
                return addc_error_set(ADDC_ERR_INVALID, "safetensors: %s: tensor '%s' has a negative dim", path, nm);
            numel *= t[i].shape[d];
        }
        if (numel * (int64_t)dtype_size(t[i].dtype) != t[i].nbytes)
            return addc_error_set(ADDC_ERR_INVALID, "safetensors: %s: tensor '%s' has %lld bytes, its shape needs %lld",
                                  path, nm, (long long)t[i].nbytes, (long long)(numel * (int64_t)dtype_size(t[i].dtype)));
    }
    StTensor *sorted = malloc((size_t)(n ? n : 1) * sizeof *sorted);
    if (!sorted) return addc_error_set(ADDC_ERR_NOMEM, "safetensors: out of memory");
    memcpy(sorted, t, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_by_name);
    Status s = ADDC_OK;
    for (int32_t i = 1; i < n && s == ADDC_OK; i++)
        if (strcmp(sorted[i - 1].name, sorted[i].name) == 0)
            s = addc_error_set(ADDC_ERR_INVALID, "safetensors: %s: tensor name '%s' given twice", path, sorted[i].name);
    free(sorted);
    return s;
}

Status safetensors_write_fill(const char *path, const StTensor *t, int32_t n, const char *metadata_json,
                              SafeTensorsFillFn fill, void *user) {
    TRY(check_tensors(path, t, n));
    int64_t *offs = malloc((size_t)(n ? n : 1) * sizeof *offs);
    int32_t *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!offs || !order) {
        free(offs);
        free(order);
        return addc_error_set(ADDC_ERR_NOMEM, "safetensors: out of memory");
    }
    /* data order: element size descending (8, 4, 2, 1), stable */
    int32_t k = 0;
    int64_t pos = 0, maxb = 1;
    for (size_t es = 8; es >= 1; es /= 2)
        for (int32_t i = 0; i < n; i++)
            if (dtype_size(t[i].dtype) == es) {
                order[k++] = i;
                offs[i] = pos;
                pos += t[i].nbytes;
                if (t[i].nbytes > maxb) maxb = t[i].nbytes;
            }
    char *hdr = NULL;
    int64_t hlen = 0;
    Status s = build_header(t, n, offs, metadata_json, &hdr, &hlen);
    free(offs);
    if (s != ADDC_OK) {
        free(order);
        return s;
    }
    int64_t padded = (hlen + 7) / 8 * 8;
    char *tmp = malloc(strlen(path) + 32);
    void *scratch = malloc((size_t)maxb);
    char *hbuf = malloc((size_t)padded + 8);
    int fd = -1;
    if (!tmp || !scratch || !hbuf) {
        s = addc_error_set(ADDC_ERR_NOMEM, "safetensors: out of memory writing %s", path);
        goto out;
    }
    for (int b = 0; b < 8; b++) hbuf[b] = (char)((uint64_t)padded >> (8 * b));
    memcpy(hbuf + 8, hdr, (size_t)hlen);
    memset(hbuf + 8 + hlen, ' ', (size_t)(padded - hlen));
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        s = addc_error_set(ADDC_ERR_IO, "safetensors: cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if ((s = write_all(fd, hbuf, (size_t)padded + 8, tmp)) != ADDC_OK) goto out;
    for (int32_t j = 0; j < n && s == ADDC_OK; j++) {
        int32_t i = order[j];
        if (t[i].nbytes == 0) continue;
        if ((s = fill(user, i, scratch)) != ADDC_OK) {
            addc_error_context(s, "safetensors: producing tensor '%s' for %s", t[i].name, path);
            break;
        }
        s = write_all(fd, scratch, (size_t)t[i].nbytes, tmp);
    }
    if (s == ADDC_OK && fsync(fd) != 0)
        s = addc_error_set(ADDC_ERR_IO, "safetensors: fsync %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && s == ADDC_OK)
        s = addc_error_set(ADDC_ERR_IO, "safetensors: closing %s: %s", tmp, strerror(errno));
    fd = -1;
    if (s == ADDC_OK && rename(tmp, path) != 0)
        s = addc_error_set(ADDC_ERR_IO, "safetensors: rename %s -> %s: %s", tmp, path, strerror(errno));
    if (s == ADDC_OK) s = fsync_dir_of(path);
    else unlink(tmp);
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    free(order);
    free(hdr);
    free(hbuf);
    free(scratch);
    free(tmp);
    return s;
}

static Status fill_copy(void *user, int32_t i, void *dst) {
    const StTensor *t = user;
    if (!t[i].data)
        return addc_error_set(ADDC_ERR_INVALID, "safetensors: tensor '%s' has no data to write", t[i].name);
    memcpy(dst, t[i].data, (size_t)t[i].nbytes);
    return ADDC_OK;
}

Status safetensors_write(const char *path, const StTensor *tensors, int32_t n, const char *metadata_json) {
    return safetensors_write_fill(path, tensors, n, metadata_json, fill_copy, (void *)tensors);
}
