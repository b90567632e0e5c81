/* data/wds: shard lists, the streaming tar reader that groups members into samples, and the
 * tar writer (see wds.h). */
#include "data/wds.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

extern char **environ;

#define WDS_BLOCK_BYTES (256 << 10)
#define WDS_NAME_MAX 4096
#define WDS_KEYSET_MAX (1 << 22)
#define WDS_MTIME 1700000000 /* fixed member time: written tars are byte-reproducible */

/* ---- string lists ---- */

static Status list_push_n(ShardList *l, const char *s, size_t n) {
    if (l->n >= SHARD_LIST_MAX) return addc_error_set(ADDC_ERR_INVALID, "shards: more than %lld shards", SHARD_LIST_MAX);
    if (l->n == 0 || (l->n & (l->n - 1)) == 0) {
        int64_t cap = l->n ? 2 * l->n : 1;
        char **u = realloc(l->urls, (size_t)cap * sizeof *u);
        if (!u) return addc_error_set(ADDC_ERR_NOMEM, "shards: out of memory");
        l->urls = u;
    }
    char *c = malloc(n + 1);
    if (!c) return addc_error_set(ADDC_ERR_NOMEM, "shards: out of memory");
    memcpy(c, s, n);
    c[n] = 0;
    l->urls[l->n++] = c;
    return ADDC_OK;
}

static Status list_push(ShardList *l, const char *s) { return list_push_n(l, s, strlen(s)); }

void shard_list_free(ShardList *l) {
    for (int64_t i = 0; i < l->n; i++) free(l->urls[i]);
    free(l->urls);
    l->urls = NULL;
    l->n = 0;
}

/* ---- brace expansion (Python braceexpand, escape=True) ---- */

typedef struct BraceCtx {
    int64_t max;
} BraceCtx;

static Status bx_pattern(BraceCtx *bc, const char *s, size_t n, ShardList *out);

/* out = a x b (concatenations), consuming neither. */
static Status bx_product(BraceCtx *bc, const ShardList *a, const ShardList *b, ShardList *out) {
    if (a->n * b->n > bc->max)
        return addc_error_set(ADDC_ERR_INVALID, "shards: brace pattern expands to more than %lld names", (long long)bc->max);
    for (int64_t i = 0; i < a->n; i++)
        for (int64_t j = 0; j < b->n; j++) {
            size_t la = strlen(a->urls[i]), lb = strlen(b->urls[j]);
            char *t = malloc(la + lb + 1);
            if (!t) return addc_error_set(ADDC_ERR_NOMEM, "shards: out of memory");
            memcpy(t, a->urls[i], la);
            memcpy(t + la, b->urls[j], lb + 1);
            Status st = list_push(out, t);
            free(t);
            TRY(st);
        }
    return ADDC_OK;
}

/* cur = cur x item; frees item. */
static Status bx_extend(BraceCtx *bc, ShardList *cur, ShardList *item) {
    ShardList nx = {0};
    Status st = bx_product(bc, cur, item, &nx);
    shard_list_free(item);
    shard_list_free(cur);
    if (st != ADDC_OK) {
        shard_list_free(&nx);
        return st;
    }
    *cur = nx;
    return ADDC_OK;
}

static Status bx_literal(BraceCtx *bc, ShardList *cur, const char *s, size_t n) {
    ShardList item = {0};
    TRY(list_push_n(&item, s, n));
    return bx_extend(bc, cur, &item);
}

static bool bx_int(const char *s, size_t n, long long *v) {
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i == n || n - i > 17) return false;
    for (size_t j = i; j < n; j++)
        if (!isdigit((unsigned char)s[j])) return false;
    char buf[24];
    memcpy(buf, s, n);
    buf[n] = 0;
    *v = strtoll(buf, NULL, 10);
    return true;
}

static bool bx_padded(const char *s, size_t n) {
    bool zero = (n == 1 && s[0] == '0') || (n == 2 && s[0] == '-' && s[1] == '0');
    return !zero && (s[0] == '0' || (n > 1 && s[0] == '-' && s[1] == '0'));
}

/* Splits "a..b" or "a..b..c" into up to three fields. Returns the field count or 0. */
static int bx_split_range(const char *e, size_t n, const char **f, size_t *fl) {
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (e[i] == '.' && e[i + 1] == '.') {
            if (k == 2) return 0;
            f[k] = e + start;
            fl[k++] = i - start;
            start = i + 2;
            i++;
        }
    }
    if (k == 0) return 0;
    f[k] = e + start;
    fl[k++] = n - start;
    return k;
}

static const char bx_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/* A range expression, or false when expr is not one. */
static bool bx_range(BraceCtx *bc, const char *e, size_t n, ShardList *item, Status *st) {
    const char *f[3];
    size_t fl[3];
    int k = bx_split_range(e, n, f, fl);
    if (k < 2) return false;
    long long step = 1;
    if (k == 3) { /* the step may carry a '-' that braceexpand ignores */
        const char *sp = f[2];
        size_t sl = fl[2];
        if (sl && sp[0] == '-') sp++, sl--;
        long long sv;
        if (!sl || sp[0] == '-' || !bx_int(sp, sl, &sv)) return false;
        step = sv ? sv : 1;
    }
    long long a, b;
    *st = ADDC_OK;
    if (bx_int(f[0], fl[0], &a) && bx_int(f[1], fl[1], &b)) {
        int pad = (bx_padded(f[0], fl[0]) || bx_padded(f[1], fl[1])) ? (int)(fl[0] > fl[1] ? fl[0] : fl[1]) : 0;
        long long cnt = (a <= b ? b - a : a - b) / step + 1;
        if (cnt > bc->max) {
            *st = addc_error_set(ADDC_ERR_INVALID, "shards: range {%.*s} has more than %lld names", (int)n, e,
                                 (long long)bc->max);
            return true;
        }
        for (long long i = 0; i < cnt && *st == ADDC_OK; i++) {
            char buf[48];
            long long v = a <= b ? a + i * step : a - i * step;
            snprintf(buf, sizeof buf, "%0*lld", pad, v);
            *st = list_push(item, buf);
        }
        return true;
    }
    if (fl[0] == 1 && fl[1] == 1 && isalpha((unsigned char)f[0][0]) && isalpha((unsigned char)f[1][0])) {
        int ia = (int)(strchr(bx_alphabet, f[0][0]) - bx_alphabet), ib = (int)(strchr(bx_alphabet, f[1][0]) - bx_alphabet);
        if (ia < ib)
            for (int i = ia; i <= ib && *st == ADDC_OK; i += (int)step) *st = list_push_n(item, bx_alphabet + i, 1);
        else
            for (int i = ia; i >= ib && *st == ADDC_OK; i -= (int)step) *st = list_push_n(item, bx_alphabet + i, 1);
        return true;
    }
    return false;
}

/* A comma list at the top level of expr, or false when there is none. */
static bool bx_sequence(BraceCtx *bc, const char *e, size_t n, ShardList *item, Status *st) {
    int depth = 0;
    bool comma = false;
    for (size_t i = 0; i < n; i++) {
        if (e[i] == '\\') {
            i++;
            continue;
        }
        if (e[i] == '{') depth++;
        else if (e[i] == '}') depth--;
        else if (e[i] == ',' && depth == 0) comma = true;
    }
    if (depth != 0 || !comma) return false;
    *st = ADDC_OK;
    size_t start = 0;
    depth = 0;
    for (size_t i = 0; i <= n && *st == ADDC_OK; i++) {
        if (i < n && e[i] == '\\') {
            i++;
            continue;
        }
        if (i < n && e[i] == '{') depth++;
        else if (i < n && e[i] == '}') depth--;
        else if (i == n || (e[i] == ',' && depth == 0)) {
            ShardList part = {0};
            *st = bx_pattern(bc, e + start, i - start, &part);
            for (int64_t j = 0; j < part.n && *st == ADDC_OK; j++) *st = list_push(item, part.urls[j]);
            shard_list_free(&part);
            if (*st == ADDC_OK && item->n > bc->max)
                *st = addc_error_set(ADDC_ERR_INVALID, "shards: pattern expands to more than %lld names", (long long)bc->max);
            start = i + 1;
        }
    }
    return true;
}

static Status bx_pattern(BraceCtx *bc, const char *s, size_t n, ShardList *out) {
    ShardList cur = {0};
    TRY(list_push(&cur, ""));
    size_t start = 0;
    int depth = 0;
    Status st = ADDC_OK;
    for (size_t pos = 0; pos < n && st == ADDC_OK; pos++) {
        if (s[pos] == '\\') {
            pos++;
            continue;
        }
        if (s[pos] == '{') {
            if (depth == 0 && pos > start) {
                st = bx_literal(bc, &cur, s + start, pos - start);
                start = pos;
            }
            depth++;
        } else if (s[pos] == '}') {
            if (--depth < 0) break;
            if (depth == 0) {
                const char *e = s + start + 1;
                size_t el = pos - start - 1;
                ShardList item = {0};
                if (bx_range(bc, e, el, &item, &st) || bx_sequence(bc, e, el, &item, &st)) {
                    if (st == ADDC_OK) st = bx_extend(bc, &cur, &item);
                    else shard_list_free(&item);
                } else {
                    st = bx_literal(bc, &cur, "{", 1);
                    if (st == ADDC_OK) st = bx_pattern(bc, e, el, &item);
                    if (st == ADDC_OK) st = bx_extend(bc, &cur, &item);
                    else shard_list_free(&item);
                    if (st == ADDC_OK) st = bx_literal(bc, &cur, "}", 1);
                }
                start = pos + 1;
            }
        }
    }
    if (st == ADDC_OK && depth != 0)
        st = addc_error_set(ADDC_ERR_INVALID, "shards: unbalanced braces in '%.*s'", (int)n, s);
    if (st == ADDC_OK && start < n) st = bx_literal(bc, &cur, s + start, n - start);
    if (st != ADDC_OK) {
        shard_list_free(&cur);
        return st;
    }
    *out = cur;
    return ADDC_OK;
}

Status brace_expand(const char *pattern, int64_t max, ShardList *out) {
    BraceCtx bc = {max > 0 ? max : SHARD_LIST_MAX};
    memset(out, 0, sizeof *out);
    TRY(bx_pattern(&bc, pattern, strlen(pattern), out));
    for (int64_t i = 0; i < out->n; i++) { /* strip escapes: "\x" -> "x" */
        char *r = out->urls[i], *w = r;
        for (; *r; r++) {
            if (*r == '\\' && r[1]) r++;
            *w++ = *r;
        }
        *w = 0;
    }
    return ADDC_OK;
}

/* ---- shard lists ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static Status list_dir(const char *dir, ShardList *out) {
    DIR *d = opendir(dir);
    if (!d) return addc_error_set(ADDC_ERR_IO, "shards: cannot list directory %s: %s", dir, strerror(errno));
    ShardList names = {0};
    Status st = ADDC_OK;
    struct dirent *e;
    while (st == ADDC_OK && (e = readdir(d)))
        if (has_suffix(e->d_name, ".tar") || has_suffix(e->d_name, ".tar.gz") || has_suffix(e->d_name, ".tgz"))
            st = list_push(&names, e->d_name);
    closedir(d);
    if (st == ADDC_OK && names.n) qsort(names.urls, (size_t)names.n, sizeof *names.urls, cmp_str);
    size_t dl = strlen(dir);
    bool slash = dl && dir[dl - 1] == '/';
    for (int64_t i = 0; i < names.n && st == ADDC_OK; i++) {
        size_t nl = strlen(names.urls[i]);
        char *p = malloc(dl + nl + 2);
        if (!p) {
            st = addc_error_set(ADDC_ERR_NOMEM, "shards: out of memory");
            break;
        }
        snprintf(p, dl + nl + 2, "%s%s%s", dir, slash ? "" : "/", names.urls[i]);
        st = list_push(out, p);
        free(p);
    }
    shard_list_free(&names);
    return st;
}

static Status expand_part(const char *part, size_t n, ShardList *out, int depth);

static Status expand_file(const char *path, ShardList *out, int depth) {
    FILE *f = fopen(path, "r");
    if (!f) return addc_error_set(ADDC_ERR_IO, "shards: cannot read the list %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    Status st = ADDC_OK;
    int64_t lineno = 0;
    while (st == ADDC_OK && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && isspace((unsigned char)line[len - 1])) line[--len] = 0;
        char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (!*p || *p == '#') continue;
        st = expand_part(p, strlen(p), out, depth + 1);
        if (st != ADDC_OK) addc_error_context(st, "%s:%lld", path, (long long)lineno);
    }
    free(line);
    fclose(f);
    return st;
}

static Status expand_part(const char *part, size_t n, ShardList *out, int depth) {
    while (n && isspace((unsigned char)*part)) part++, n--;
    while (n && isspace((unsigned char)part[n - 1])) n--;
    if (!n) return ADDC_OK;
    char *p = malloc(n + 1);
    if (!p) return addc_error_set(ADDC_ERR_NOMEM, "shards: out of memory");
    memcpy(p, part, n);
    p[n] = 0;
    Status st = ADDC_OK;
    if (p[0] == '@') {
        st = depth > 4 ? addc_error_set(ADDC_ERR_INVALID, "shards: list files nested too deeply at %s", p)
                       : expand_file(p + 1, out, depth);
        free(p);
        return st;
    }
    ShardList ex = {0};
    st = brace_expand(p, SHARD_LIST_MAX, &ex);
    free(p);
    for (int64_t i = 0; i < ex.n && st == ADDC_OK; i++) {
        const char *u = ex.urls[i];
        struct stat sb;
        if (strncmp(u, "pipe:", 5) != 0 && stat(u, &sb) == 0 && S_ISDIR(sb.st_mode)) st = list_dir(u, out);
        else st = list_push(out, strncmp(u, "file:", 5) == 0 ? u + 5 : u);
    }
    shard_list_free(&ex);
    return st;
}

Status shard_list_expand(const char *spec, ShardList *out) {
    memset(out, 0, sizeof *out);
    if (!spec) return addc_error_set(ADDC_ERR_INVALID, "shards: no shard spec given");
    const char *s = spec;
    Status st = ADDC_OK;
    while (st == ADDC_OK) {
        const char *sep = strstr(s, "::");
        size_t n = sep ? (size_t)(sep - s) : strlen(s);
        st = expand_part(s, n, out, 0);
        if (!sep) break;
        s = sep + 2;
    }
    if (st == ADDC_OK && out->n == 0)
        st = addc_error_set(ADDC_ERR_INVALID, "shards: '%s' names no shards", spec);
    if (st != ADDC_OK) shard_list_free(out);
    return st;
}

/* ---- reader ---- */

void wds_limits_default(WdsLimits *lim) {
    lim->max_image_bytes = 32ll << 20;
    lim->max_text_bytes = 1ll << 20;
}

typedef enum WdsKind { WDS_KIND_OTHER = 0, WDS_KIND_IMAGE, WDS_KIND_CAPTION, WDS_KIND_JSON } WdsKind;

struct WdsReader {
    struct archive *a;
    char *url;
    int fd;               /* pipe read end, -1 otherwise */
    volatile pid_t pid;   /* pipe command, 0 otherwise */
    bool at_eof, broken, any_header;
    WdsLimits lim;
    DataStats *stats;
    /* the member whose header was read but whose data was not consumed yet */
    bool pending;
    char name[WDS_NAME_MAX + 1];
    size_t key_len; /* name[0 .. key_len) is the key; the extension follows the dot */
    char ext[WDS_NAME_MAX + 1];
    int64_t size;   /* declared size, -1 if unknown */
    uint32_t ordinal;
    /* hashes of the keys seen in this shard (open addressing, 0 = empty) */
    uint64_t *seen;
    int64_t seen_cap, seen_n;
};

static void count(WdsReader *r, DataCounter k) { data_stats_count(r->stats, k, 1); }

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h ? h : 1;
}

/* Inserts h; returns true if it was already there. */
static bool seen_insert(WdsReader *r, uint64_t h) {
    if (r->seen_n * 2 >= r->seen_cap) {
        if (r->seen_cap >= WDS_KEYSET_MAX) return false; /* stop tracking in giant shards */
        int64_t cap = r->seen_cap ? r->seen_cap * 2 : 1024;
        uint64_t *t = calloc((size_t)cap, sizeof *t);
        if (!t) return false;
        for (int64_t i = 0; i < r->seen_cap; i++) {
            if (!r->seen[i]) continue;
            int64_t j = (int64_t)(r->seen[i] & (uint64_t)(cap - 1));
            while (t[j]) j = (j + 1) & (cap - 1);
            t[j] = r->seen[i];
        }
        free(r->seen);
        r->seen = t;
        r->seen_cap = cap;
    }
    int64_t j = (int64_t)(h & (uint64_t)(r->seen_cap - 1));
    while (r->seen[j]) {
        if (r->seen[j] == h) return true;
        j = (j + 1) & (r->seen_cap - 1);
    }
    r->seen[j] = h;
    r->seen_n++;
    return false;
}

static int reader_broken(WdsReader *r, const char *what) {
    const char *msg = archive_error_string(r->a);
    addc_error_set(ADDC_ERR_FORMAT, "%s: %s: %s", r->url, what, msg ? msg : "unknown error");
    if (!r->broken) count(r, r->any_header ? DATA_SHARD_TRUNCATED : DATA_SHARD_OPEN_FAILED);
    r->broken = true;
    r->pending = false;
    return -1;
}

static bool is_meta_name(const char *name) {
    /* webdataset skips r"__[^/]*__($|/)" matched at the start: a first path segment "__...__" */
    if (strncmp(name, "__", 2) != 0) return false;
    const char *slash = strchr(name, '/');
    size_t seg = slash ? (size_t)(slash - name) : strlen(name);
    return seg >= 4 && name[seg - 1] == '_' && name[seg - 2] == '_';
}

/* Reads headers up to the next usable member and makes it pending: 1, 0 at the end, -1 broken. */
static int reader_next_member(WdsReader *r) {
    for (;;) {
        struct archive_entry *e;
        int rc = archive_read_next_header(r->a, &e);
        if (rc == ARCHIVE_EOF) {
            r->at_eof = true;
            return 0;
        }
        if (rc < ARCHIVE_WARN) return reader_broken(r, r->any_header ? "broken tar" : "not a readable tar");
        r->any_header = true;
        const char *name = archive_entry_pathname(e);
        if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e)) {
            count(r, DATA_MEMBER_NOT_REGULAR);
            continue;
        }
        count(r, DATA_MEMBERS);
        size_t nl = name ? strlen(name) : 0;
        if (!name || nl > WDS_NAME_MAX || is_meta_name(name)) {
            count(r, name && is_meta_name(name) ? DATA_MEMBERS_IGNORED : DATA_MEMBER_BAD_NAME);
            continue;
        }
        const char *base = strrchr(name, '/');
        base = base ? base + 1 : name;
        const char *dot = strchr(base, '.');
        if (!dot || dot == base) {
            count(r, DATA_MEMBER_BAD_NAME);
            continue;
        }
        memcpy(r->name, name, nl + 1);
        r->key_len = (size_t)(dot - name);
        size_t i = 0;
        for (const char *p = dot + 1; *p; p++) r->ext[i++] = (char)tolower((unsigned char)*p);
        r->ext[i] = 0;
        r->size = archive_entry_size_is_set(e) ? archive_entry_size(e) : -1;
        r->pending = true;
        return 1;
    }
}

static WdsKind ext_kind(const char *ext) {
    if (!strcmp(ext, "jpg") || !strcmp(ext, "jpeg") || !strcmp(ext, "png")) return WDS_KIND_IMAGE;
    if (!strcmp(ext, "txt")) return WDS_KIND_CAPTION;
    if (!strcmp(ext, "json")) return WDS_KIND_JSON;
    return WDS_KIND_OTHER;
}

static int part_read(WdsReader *r, WdsPart *p, int64_t limit) {
    int64_t n = 0;
    for (;;) {
        int64_t want = r->size >= 0 ? r->size : (n + 65536 > limit + 1 ? limit + 1 : n + 65536);
        if (want + 1 > p->cap) {
            uint8_t *d = realloc(p->data, (size_t)want + 1);
            if (!d) {
                addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory for member %s", r->url, r->name);
                return -2;
            }
            p->data = d;
            p->cap = want + 1;
        }
        if (n == want) {
            if (r->size >= 0) break;
            if (n > limit) return 0; /* unknown size turned out too large */
        }
        la_ssize_t got = archive_read_data(r->a, p->data + n, (size_t)(want - n));
        if (got < 0) return reader_broken(r, "truncated member");
        if (got == 0) {
            if (r->size >= 0) return reader_broken(r, "truncated member");
            break;
        }
        n += got;
    }
    p->data[n] = 0;
    p->len = n;
    p->present = p->loaded = true;
    return 1;
}

/* Consumes the pending member into s. 1 ok, -1 broken. */
static int reader_take(WdsReader *r, WdsSample *s, bool want_data) {
    r->pending = false;
    WdsKind kind = ext_kind(r->ext);
    WdsPart *p = kind == WDS_KIND_IMAGE ? &s->image : kind == WDS_KIND_CAPTION ? &s->caption
               : kind == WDS_KIND_JSON  ? &s->json
                                        : NULL;
    int64_t limit = kind == WDS_KIND_IMAGE ? r->lim.max_image_bytes : r->lim.max_text_bytes;
    DataCounter skip_reason = DATA_COUNTER_COUNT;
    if (!p) skip_reason = DATA_MEMBERS_IGNORED;
    else if (p->present) skip_reason = kind == WDS_KIND_IMAGE && strcmp(s->image_ext, r->ext) ? DATA_MEMBERS_IGNORED
                                                                                              : DATA_MEMBER_DUPLICATE;
    else if (r->size == 0) skip_reason = DATA_MEMBER_EMPTY;
    else if (r->size > limit) skip_reason = DATA_MEMBER_TOO_LARGE;
    if (skip_reason != DATA_COUNTER_COUNT) {
        count(r, skip_reason);
        if (archive_read_data_skip(r->a) < ARCHIVE_WARN) return reader_broken(r, "truncated member");
        return 1;
    }
    if (!want_data && r->size >= 0) {
        if (archive_read_data_skip(r->a) < ARCHIVE_WARN) return reader_broken(r, "truncated member");
        p->present = true;
        p->len = r->size;
    } else {
        int rc = part_read(r, p, limit);
        if (rc < 0) return rc == -2 ? -1 : rc;
        if (rc == 0 || p->len == 0) {
            p->present = p->loaded = false;
            count(r, rc == 0 ? DATA_MEMBER_TOO_LARGE : DATA_MEMBER_EMPTY);
            return 1;
        }
    }
    if (kind == WDS_KIND_IMAGE) {
        size_t el = strlen(r->ext); /* "jpg", "jpeg" or "png" */
        if (el >= sizeof s->image_ext) el = sizeof s->image_ext - 1;
        memcpy(s->image_ext, r->ext, el);
        s->image_ext[el] = 0;
    }
    return 1;
}

int wds_reader_next(WdsReader *r, WdsSample *s, bool want_data) {
    if (r->broken || r->at_eof) return r->broken ? -1 : 0;
    s->image.present = s->caption.present = s->json.present = false;
    s->image.loaded = s->caption.loaded = s->json.loaded = false;
    s->image.len = s->caption.len = s->json.len = 0;
    s->image_ext[0] = 0;
    if (!r->pending) {
        int rc = reader_next_member(r);
        if (rc <= 0) return rc;
    }
    if ((int64_t)r->key_len + 1 > s->key_cap) {
        char *k = realloc(s->key, r->key_len + 1);
        if (!k) return addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory", r->url), -1;
        s->key = k;
        s->key_cap = (int64_t)r->key_len + 1;
    }
    memcpy(s->key, r->name, r->key_len);
    s->key[r->key_len] = 0;
    s->ordinal = r->ordinal++;
    if (seen_insert(r, hash_bytes(s->key, r->key_len))) count(r, DATA_KEY_NOT_ADJACENT);
    count(r, DATA_SAMPLES_READ);
    for (;;) {
        if (reader_take(r, s, want_data) < 0) return -1;
        int rc = reader_next_member(r);
        if (rc < 0) return -1; /* the sample may be incomplete: dropped */
        if (rc == 0) return 1;
        if (r->key_len != strlen(s->key) || memcmp(r->name, s->key, r->key_len) != 0) return 1;
    }
}

static WdsReader *reader_new(const char *url, const WdsLimits *lim, DataStats *stats) {
    WdsReader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->url = strdup(url);
    r->fd = -1;
    if (lim) r->lim = *lim;
    else wds_limits_default(&r->lim);
    r->stats = stats;
    r->a = archive_read_new();
    if (!r->url || !r->a) {
        if (r->a) archive_read_free(r->a);
        free(r->url);
        free(r);
        return NULL;
    }
    archive_read_support_format_tar(r->a);
    archive_read_support_filter_gzip(r->a);
    archive_read_support_filter_bzip2(r->a);
    archive_read_support_filter_xz(r->a);
    archive_read_support_filter_zstd(r->a);
    return r;
}

static void reader_destroy(WdsReader *r) {
    if (r->a) archive_read_free(r->a);
    free(r->seen);
    free(r->url);
    free(r);
}

static Status spawn_pipe(WdsReader *r, const char *cmd) {
    int fds[2];
    if (pipe(fds) != 0) return addc_error_set(ADDC_ERR_IO, "pipe: %s", strerror(errno));
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        return addc_error_set(ADDC_ERR_IO, "cannot start '%s': %s", cmd, strerror(rc));
    }
    r->fd = fds[0];
    r->pid = pid;
    return ADDC_OK;
}

static int wait_child(pid_t pid) {
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

Status wds_reader_open(const char *url, const WdsLimits *lim, DataStats *stats, WdsReader **out) {
    *out = NULL;
    WdsReader *r = reader_new(url, lim, stats);
    if (!r) return addc_error_set(ADDC_ERR_NOMEM, "%s: out of memory", url);
    int rc;
    if (!strncmp(url, "pipe:", 5)) {
        Status st = spawn_pipe(r, url + 5);
        if (st != ADDC_OK) {
            data_stats_count(stats, DATA_SHARD_OPEN_FAILED, 1);
            reader_destroy(r);
            return st;
        }
        rc = archive_read_open_fd(r->a, r->fd, WDS_BLOCK_BYTES);
    } else {
        rc = archive_read_open_filename(r->a, strncmp(url, "file:", 5) ? url : url + 5, WDS_BLOCK_BYTES);
    }
    if (rc != ARCHIVE_OK) {
        Status st = addc_error_set(ADDC_ERR_IO, "%s: cannot open: %s", url, archive_error_string(r->a));
        data_stats_count(stats, DATA_SHARD_OPEN_FAILED, 1);
        r->broken = true;
        wds_reader_close(r);
        return st;
    }
    data_stats_count(stats, DATA_SHARDS_OPENED, 1);
    *out = r;
    return ADDC_OK;
}

Status wds_reader_open_memory(const void *buf, size_t len, const WdsLimits *lim, DataStats *stats,
                              WdsReader **out) {
    *out = NULL;
    WdsReader *r = reader_new("<memory>", lim, stats);
    if (!r) return addc_error_set(ADDC_ERR_NOMEM, "wds: out of memory");
    if (archive_read_open_memory(r->a, buf, len) != ARCHIVE_OK) {
        Status st = addc_error_set(ADDC_ERR_FORMAT, "<memory>: cannot open: %s", archive_error_string(r->a));
        data_stats_count(stats, DATA_SHARD_OPEN_FAILED, 1);
        reader_destroy(r);
        return st;
    }
    data_stats_count(stats, DATA_SHARDS_OPENED, 1);
    *out = r;
    return ADDC_OK;
}

Status wds_reader_close(WdsReader *r) {
    if (!r) return ADDC_OK;
    Status st = ADDC_OK;
    bool complete = r->at_eof && !r->broken;
    archive_read_close(r->a);
    if (r->fd >= 0) close(r->fd);
    if (r->pid > 0) {
        pid_t pid = r->pid;
        if (!complete) kill(pid, SIGTERM); /* stop a command we no longer read from */
        int status = wait_child(pid);
        r->pid = 0;
        if (complete && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            data_stats_count(r->stats, DATA_PIPE_FAILED, 1);
            st = addc_error_set(ADDC_ERR_IO, "%s: command %s %d", r->url,
                                WIFEXITED(status) ? "exited with status" : "killed by signal",
                                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        }
    }
    if (complete && st == ADDC_OK) data_stats_count(r->stats, DATA_SHARDS_FINISHED, 1);
    reader_destroy(r);
    return st;
}

void wds_reader_interrupt(WdsReader *r) {
    pid_t pid = r ? r->pid : 0;
    if (pid > 0) kill(pid, SIGTERM);
}

const char *wds_reader_url(const WdsReader *r) { return r->url; }

uint32_t wds_reader_ordinal(const WdsReader *r) { return r->ordinal; }

void wds_sample_free(WdsSample *s) {
    free(s->key);
    free(s->image.data);
    free(s->caption.data);
    free(s->json.data);
    memset(s, 0, sizeof *s);
}

void wds_sample_swap(WdsSample *a, WdsSample *b) {
    WdsSample t = *a;
    *a = *b;
    *b = t;
}

/* ---- writer ---- */

struct WdsWriter {
    struct archive *a;
    int fd;
    char *path, *tmp;
    int64_t bytes;
};

static la_ssize_t writer_write(struct archive *a, void *ud, const void *buf, size_t n) {
    WdsWriter *w = ud;
    const char *p = buf;
    size_t left = n;
    while (left) {
        ssize_t k = write(w->fd, p, left);
        if (k < 0) {
            if (errno == EINTR) continue;
            archive_set_error(a, errno, "write %s: %s", w->tmp, strerror(errno));
            return -1;
        }
        p += k;
        left -= (size_t)k;
    }
    w->bytes += (int64_t)n;
    return (la_ssize_t)n;
}

Status wds_writer_open(const char *path, WdsWriter **out) {
    *out = NULL;
    WdsWriter *w = calloc(1, sizeof *w);
    if (!w) return addc_error_set(ADDC_ERR_NOMEM, "out of memory");
    size_t n = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(n + 5);
    if (!w->path || !w->tmp) {
        free(w->path);
        free(w->tmp);
        free(w);
        return addc_error_set(ADDC_ERR_NOMEM, "out of memory");
    }
    snprintf(w->tmp, n + 5, "%s.tmp", path);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        Status st = addc_error_set(ADDC_ERR_IO, "cannot create %s: %s", w->tmp, strerror(errno));
        free(w->path);
        free(w->tmp);
        free(w);
        return st;
    }
    w->a = archive_write_new();
    if (!w->a || archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
        archive_write_open(w->a, w, NULL, writer_write, NULL) != ARCHIVE_OK) {
        Status st = addc_error_set(ADDC_ERR_EXTERNAL, "libarchive: cannot start writing %s: %s", w->tmp,
                                   w->a ? archive_error_string(w->a) : "out of memory");
        wds_writer_abort(w);
        return st;
    }
    *out = w;
    return ADDC_OK;
}

Status wds_writer_add(WdsWriter *w, const char *name, const void *data, int64_t len) {
    struct archive_entry *e = archive_entry_new();
    if (!e) return addc_error_set(ADDC_ERR_NOMEM, "out of memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, len);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0444);
    archive_entry_set_mtime(e, WDS_MTIME, 0);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    Status st = ADDC_OK;
    if (archive_write_header(w->a, e) != ARCHIVE_OK ||
        (len > 0 && archive_write_data(w->a, data, (size_t)len) != (la_ssize_t)len))
        st = addc_error_set(ADDC_ERR_IO, "writing %s into %s: %s", name, w->tmp, archive_error_string(w->a));
    archive_entry_free(e);
    return st;
}

static Status fsync_dir_of(const char *path) {
    char *dir = strdup(path);
    if (!dir) return addc_error_set(ADDC_ERR_NOMEM, "out of memory");
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    Status st = ADDC_OK;
    if (fd < 0 || fsync(fd) != 0) st = addc_error_set(ADDC_ERR_IO, "fsync directory of %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return st;
}

Status wds_writer_close(WdsWriter *w) {
    Status st = ADDC_OK;
    if (archive_write_close(w->a) != ARCHIVE_OK)
        st = addc_error_set(ADDC_ERR_IO, "finishing %s: %s", w->tmp, archive_error_string(w->a));
    archive_write_free(w->a);
    w->a = NULL;
    if (st == ADDC_OK && fsync(w->fd) != 0) st = addc_error_set(ADDC_ERR_IO, "fsync %s: %s", w->tmp, strerror(errno));
    if (close(w->fd) != 0 && st == ADDC_OK) st = addc_error_set(ADDC_ERR_IO, "close %s: %s", w->tmp, strerror(errno));
    w->fd = -1;
    if (st == ADDC_OK && rename(w->tmp, w->path) != 0)
        st = addc_error_set(ADDC_ERR_IO, "rename %s to %s: %s", w->tmp, w->path, strerror(errno));
    if (st == ADDC_OK) st = fsync_dir_of(w->path);
    if (st != ADDC_OK) unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w);
    return st;
}

void wds_writer_abort(WdsWriter *w) {
    if (!w) return;
    if (w->a) archive_write_free(w->a);
    if (w->fd >= 0) close(w->fd);
    unlink(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w);
}

int64_t wds_writer_bytes(const WdsWriter *w) { return w->bytes; }
