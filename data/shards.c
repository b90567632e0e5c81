/* data/shards: Fashion-MNIST conversion, shard checking, image size statistics (see shards.h). */
#include "data/shards.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <archive.h>
#include <archive_entry.h>

#include "core/json.h"

/* ---- Fashion-MNIST ---- */

static const char *const fmnist_classes[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                               "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

/* Reads a whole gzip-compressed file (at most max bytes once decompressed). */
static Status read_gz(const char *path, int64_t max, uint8_t **out, int64_t *len) {
    *out = NULL;
    *len = 0;
    struct archive *a = archive_read_new();
    if (!a) return addc_error_set(ADDC_ERR_NOMEM, "out of memory");
    archive_read_support_filter_gzip(a);
    archive_read_support_format_raw(a);
    struct archive_entry *e;
    if (archive_read_open_filename(a, path, 1 << 16) != ARCHIVE_OK || archive_read_next_header(a, &e) != ARCHIVE_OK) {
        Status st = addc_error_set(ADDC_ERR_IO,
                                   "cannot read %s: %s (install Debian's dataset-fashion-mnist package, or point "
                                   "--from at a directory holding the four idx .gz files)",
                                   path, archive_error_string(a));
        archive_read_free(a);
        return st;
    }
    int64_t cap = 1 << 20, n = 0;
    uint8_t *buf = malloc((size_t)cap);
    Status st = buf ? ADDC_OK : addc_error_set(ADDC_ERR_NOMEM, "out of memory");
    while (st == ADDC_OK) {
        if (n == cap) {
            if (cap >= max) {
                st = addc_error_set(ADDC_ERR_FORMAT, "%s: larger than %lld bytes, not an idx file", path, (long long)max);
                break;
            }
            cap = cap * 2 < max ? cap * 2 : max;
            uint8_t *b = realloc(buf, (size_t)cap);
            if (!b) {
                st = addc_error_set(ADDC_ERR_NOMEM, "out of memory");
                break;
            }
            buf = b;
        }
        la_ssize_t k = archive_read_data(a, buf + n, (size_t)(cap - n));
        if (k < 0) st = addc_error_set(ADDC_ERR_IO, "%s: %s", path, archive_error_string(a));
        if (k <= 0) break;
        n += k;
    }
    archive_read_free(a);
    if (st != ADDC_OK) {
        free(buf);
        return st;
    }
    *out = buf;
    *len = n;
    return ADDC_OK;
}

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

typedef struct IdxSet {
    uint8_t *images, *labels; /* raw files */
    int64_t n;
    int32_t rows, cols;
} IdxSet;

static Status idx_load(const char *dir, const char *prefix, IdxSet *set) {
    char ip[1024], lp[1024];
    snprintf(ip, sizeof ip, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    snprintf(lp, sizeof lp, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    int64_t il, ll;
    memset(set, 0, sizeof *set);
    TRY(read_gz(ip, 1ll << 30, &set->images, &il));
    Status st = read_gz(lp, 1ll << 26, &set->labels, &ll);
    if (st == ADDC_OK) {
        if (il < 16 || be32(set->images) != 0x803 || ll < 8 || be32(set->labels) != 0x801)
            st = addc_error_set(ADDC_ERR_FORMAT, "%s or %s: not an idx image/label file", ip, lp);
        else {
            set->n = be32(set->images + 4);
            set->rows = (int32_t)be32(set->images + 8);
            set->cols = (int32_t)be32(set->images + 12);
            if (set->rows < 1 || set->cols < 1 || set->rows > 4096 || set->cols > 4096 ||
                il != 16 + set->n * set->rows * set->cols || be32(set->labels + 4) != set->n || ll != 8 + set->n)
                st = addc_error_set(ADDC_ERR_FORMAT, "%s: sizes do not match its header (%lld images of %dx%d, %lld labels)",
                                    ip, (long long)set->n, set->cols, set->rows, (long long)be32(set->labels + 4));
        }
    }
    if (st != ADDC_OK) {
        free(set->images);
        free(set->labels);
        memset(set, 0, sizeof *set);
    }
    return st;
}

static Status mkdir_p(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return addc_error_set(ADDC_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    return ADDC_OK;
}

static Status fmnist_split(const FmnistOptions *o, const char *split, const IdxSet *set, FmnistSplitResult *res) {
    int64_t n = o->limit > 0 && o->limit < set->n ? o->limit : set->n;
    int64_t per = o->per_shard > 0 ? o->per_shard : 10000;
    int64_t px = (int64_t)set->rows * set->cols;
    Status st = ADDC_OK;
    memset(res, 0, sizeof *res);
    for (int64_t first = 0; first < n && st == ADDC_OK; first += per) {
        char path[1200];
        snprintf(path, sizeof path, "%s/fmnist-%s-%06lld.tar", o->out_dir, split, (long long)res->shards);
        WdsWriter *w;
        TRY(wds_writer_open(path, &w));
        for (int64_t i = first; i < n && i < first + per && st == ADDC_OK; i++) {
            int label = set->labels[8 + i];
            if (label > 9) {
                st = addc_error_set(ADDC_ERR_FORMAT, "%s label %lld is %d, not a class 0..9", split, (long long)i, label);
                break;
            }
            char key[32], name[64], caption[96], json[256], cls[32];
            snprintf(key, sizeof key, "%06lld", (long long)i);
            const char *cname = fmnist_classes[label];
            size_t k = 0;
            for (; cname[k] && k + 1 < sizeof cls; k++) cls[k] = (char)(cname[k] >= 'A' && cname[k] <= 'Z' ? cname[k] + 32 : cname[k]);
            cls[k] = 0;
            snprintf(caption, sizeof caption, "a photo of %s %s", strchr("aeiou", cls[0]) ? "an" : "a", cls);
            snprintf(json, sizeof json,
                     "{\"label\": %d, \"class\": \"%s\", \"split\": \"%s\", \"index\": %lld, \"width\": %d, \"height\": %d}",
                     label, cname, split, (long long)i, set->cols, set->rows);
            uint8_t *png;
            int64_t plen;
            st = image_png_encode(set->images + 16 + i * px, set->rows, set->cols, 1, &png, &plen);
            if (st != ADDC_OK) break;
            snprintf(name, sizeof name, "%s.png", key);
            st = wds_writer_add(w, name, png, plen);
            free(png);
            snprintf(name, sizeof name, "%s.txt", key);
            if (st == ADDC_OK) st = wds_writer_add(w, name, caption, (int64_t)strlen(caption));
            snprintf(name, sizeof name, "%s.json", key);
            if (st == ADDC_OK) st = wds_writer_add(w, name, json, (int64_t)strlen(json));
            if (st == ADDC_OK) res->samples++;
        }
        if (st != ADDC_OK) {
            wds_writer_abort(w);
            break;
        }
        int64_t bytes = wds_writer_bytes(w);
        TRY(wds_writer_close(w));
        res->bytes += bytes;
        res->shards++;
    }
    if (st == ADDC_OK && res->shards == 1)
        snprintf(res->spec, sizeof res->spec, "%s/fmnist-%s-000000.tar", o->out_dir, split);
    else if (st == ADDC_OK && res->shards > 1)
        snprintf(res->spec, sizeof res->spec, "%s/fmnist-%s-{000000..%06lld}.tar", o->out_dir, split,
                 (long long)res->shards - 1);
    return st;
}

Status shards_fmnist(const FmnistOptions *o, FmnistResult *res) {
    memset(res, 0, sizeof *res);
    if (!o->out_dir || !o->out_dir[0]) return addc_error_set(ADDC_ERR_INVALID, "fmnist: no output directory");
    if (strlen(o->out_dir) > 900) return addc_error_set(ADDC_ERR_INVALID, "fmnist: output path too long");
    const char *from = o->from ? o->from : FMNIST_DEFAULT_DIR;
    TRY(mkdir_p(o->out_dir));
    static const char *const splits[2] = {"train", "test"}, *const prefixes[2] = {"train", "t10k"};
    for (int s = 0; s < 2; s++) {
        if (!(s == 0 ? o->train : o->test)) continue;
        IdxSet set;
        TRY(idx_load(from, prefixes[s], &set));
        Status st = fmnist_split(o, splits[s], &set, &res->split[s]);
        free(set.images);
        free(set.labels);
        TRY(st);
    }
    return ADDC_OK;
}

/* ---- check ---- */

void shard_check_options_default(ShardCheckOptions *o) {
    memset(o, 0, sizeof *o);
    o->decode = true;
    o->require_caption = true;
    wds_limits_default(&o->limits);
    image_limits_default(&o->image_limits);
}

static DataCounter image_fail_kind(const WdsSample *s) {
    ImageFormat f = image_format_sniff(s->image.data, s->image.len);
    return f == IMAGE_FORMAT_PNG || (f == IMAGE_FORMAT_UNKNOWN && !strcmp(s->image_ext, "png")) ? DATA_BAD_PNG : DATA_BAD_JPEG;
}

/* Counts what is wrong with one sample into st; true if it is good. */
static bool check_sample(const WdsSample *s, const ShardCheckOptions *o, ImageU8 *im, DataStats *st) {
    bool good = true;
    if (!s->image.present) {
        data_stats_count(st, DATA_MISSING_IMAGE, 1);
        good = false;
    }
    if (!s->caption.present && o->require_caption) {
        data_stats_count(st, DATA_MISSING_CAPTION, 1);
        good = false;
    }
    if (s->caption.present &&
        (memchr(s->caption.data, 0, (size_t)s->caption.len) || !json_utf8_valid((char *)s->caption.data, s->caption.len))) {
        data_stats_count(st, DATA_BAD_CAPTION, 1);
        good = false;
    }
    if (s->json.present) {
        JsonDoc d;
        JsonLimits jl = {o->limits.max_text_bytes, 64, 0};
        if (json_parse((char *)s->json.data, s->json.len, &jl, &d) != ADDC_OK || json_root(&d)->type != JSON_OBJECT) {
            data_stats_count(st, DATA_BAD_JSON, 1);
            good = false;
        }
        json_free(&d);
        addc_error_clear();
    }
    if (s->image.present) {
        int32_t h, w;
        DataCounter fail = image_fail_kind(s);
        Status ist = o->decode ? image_decode(s->image.data, s->image.len, &o->image_limits, 0, 0, im, &h, &w, &fail)
                               : image_probe(s->image.data, s->image.len, &h, &w);
        if (ist == ADDC_OK && !o->decode &&
            (h > o->image_limits.max_side || w > o->image_limits.max_side || (int64_t)h * w > o->image_limits.max_pixels)) {
            fail = DATA_IMAGE_TOO_LARGE;
            ist = ADDC_ERR_FORMAT;
        }
        if (ist != ADDC_OK) {
            data_stats_count(st, fail, 1);
            good = false;
        } else if (o->decode) {
            data_stats_count(st, DATA_SAMPLES_DECODED, 1);
        }
        addc_error_clear();
    }
    return good;
}

static void result_merge(ShardCheckResult *into, const ShardCheckResult *r) {
    into->shards += r->shards;
    into->samples += r->samples;
    into->good += r->good;
    into->bytes += r->bytes;
    into->image_bytes += r->image_bytes;
    data_stats_merge(&into->stats, &r->stats);
}

Status shards_check(const char *spec, const ShardCheckOptions *o, ShardCheckFn fn, void *user, ShardCheckResult *total) {
    memset(total, 0, sizeof *total);
    ShardList list;
    TRY(shard_list_expand(spec, &list));
    int64_t n = o->max_shards > 0 && o->max_shards < list.n ? o->max_shards : list.n;
    WdsSample s = {0};
    ImageU8 im = {0};
    for (int64_t i = 0; i < n; i++) {
        ShardCheckResult r = {.url = list.urls[i], .shards = 1};
        WdsReader *rd;
        if (wds_reader_open(list.urls[i], &o->limits, &r.stats, &rd) == ADDC_OK) {
            while (wds_reader_next(rd, &s, true) == 1) {
                r.samples++;
                r.bytes += s.image.len + s.caption.len + s.json.len;
                r.image_bytes += s.image.len;
                if (check_sample(&s, o, &im, &r.stats)) {
                    r.good++;
                    data_stats_count(&r.stats, DATA_SAMPLES_ACCEPTED, 1);
                }
            }
            wds_reader_close(rd);
        }
        addc_error_clear();
        if (fn) fn(&r, user);
        result_merge(total, &r);
    }
    wds_sample_free(&s);
    image_u8_free(&im);
    shard_list_free(&list);
    return ADDC_OK;
}

/* ---- size statistics ---- */

static int bucket(int64_t v, const int64_t *edges, int n) {
    int i = 0;
    while (i < n - 1 && v >= edges[i]) i++;
    return i;
}

static const int64_t side_edges[SHARD_HIST_SIDE - 1] = {64, 128, 256, 384, 512, 768, 1024, 2048};
static const int64_t aspect_edges_x100[SHARD_HIST_ASPECT - 1] = {125, 150, 200, 300, 500};
static const int64_t byte_edges[SHARD_HIST_BYTES - 1] = {4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20};
static const int64_t caption_edges[SHARD_HIST_CAPTION - 1] = {16, 32, 64, 128, 256, 512};

const char *shard_hist_label(char kind, int i) {
    static const char *const side[SHARD_HIST_SIDE] = {"< 64",      "64-127",    "128-255",    "256-383",  "384-511",
                                                      "512-767",   "768-1023",  "1024-2047", ">= 2048"};
    static const char *const aspect[SHARD_HIST_ASPECT] = {"< 1.25", "1.25-1.5", "1.5-2", "2-3", "3-5", ">= 5"};
    static const char *const bytes[SHARD_HIST_BYTES] = {"< 4 KiB",     "4-16 KiB", "16-64 KiB", "64-256 KiB",
                                                        "256 KiB-1 MiB", "1-4 MiB",  "4-16 MiB",  ">= 16 MiB"};
    static const char *const cap[SHARD_HIST_CAPTION] = {"< 16", "16-31", "32-63", "64-127", "128-255", "256-511", ">= 512"};
    switch (kind) {
    case 's': return i >= 0 && i < SHARD_HIST_SIDE ? side[i] : "?";
    case 'a': return i >= 0 && i < SHARD_HIST_ASPECT ? aspect[i] : "?";
    case 'b': return i >= 0 && i < SHARD_HIST_BYTES ? bytes[i] : "?";
    case 'c': return i >= 0 && i < SHARD_HIST_CAPTION ? cap[i] : "?";
    default: return "?";
    }
}

Status shards_size_stats(const char *spec, int64_t max_samples, ShardSizeStats *out) {
    memset(out, 0, sizeof *out);
    out->min_short = INT64_MAX;
    ShardList list;
    TRY(shard_list_expand(spec, &list));
    WdsLimits lim;
    wds_limits_default(&lim);
    WdsSample s = {0};
    int64_t seen = 0;
    for (int64_t i = 0; i < list.n && (max_samples <= 0 || seen < max_samples); i++) {
        WdsReader *rd;
        if (wds_reader_open(list.urls[i], &lim, &out->stats, &rd) != ADDC_OK) {
            addc_error_clear();
            continue;
        }
        while ((max_samples <= 0 || seen < max_samples) && wds_reader_next(rd, &s, true) == 1) {
            seen++;
            if (s.caption.present) {
                out->captions++;
                out->caption_len[bucket(s.caption.len, caption_edges, SHARD_HIST_CAPTION)]++;
            }
            if (!s.image.present) continue;
            int32_t h, w;
            if (image_probe(s.image.data, s.image.len, &h, &w) != ADDC_OK || h <= 0 || w <= 0) {
                out->unreadable++;
                addc_error_clear();
                continue;
            }
            out->images++;
            if (image_format_sniff(s.image.data, s.image.len) == IMAGE_FORMAT_PNG) out->png++;
            else out->jpeg++;
            int64_t sh = h < w ? h : w, lg = h < w ? w : h;
            out->short_side[bucket(sh, side_edges, SHARD_HIST_SIDE)]++;
            out->long_side[bucket(lg, side_edges, SHARD_HIST_SIDE)]++;
            out->aspect[bucket(lg * 100 / sh, aspect_edges_x100, SHARD_HIST_ASPECT)]++;
            out->bytes[bucket(s.image.len, byte_edges, SHARD_HIST_BYTES)]++;
            if (sh < out->min_short) out->min_short = sh;
            if (lg > out->max_long) out->max_long = lg;
            out->sum_h += h;
            out->sum_w += w;
        }
        wds_reader_close(rd);
        addc_error_clear();
    }
    if (!out->images) out->min_short = 0;
    wds_sample_free(&s);
    shard_list_free(&list);
    return ADDC_OK;
}
