/* tests/ref_data: float64 resize reference, raw tar builder, synthetic images (see ref_data.h). */
#include "tests/ref_data.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <turbojpeg.h>

#include "core/json.h"
#include "data/image.h"

static double ref_filter(int f, double x) {
    x = fabs(x);
    if (f == 0) return x < 1 ? 1 - x : 0;
    if (f == 1) {
        double a = -0.5;
        if (x < 1) return (a + 2) * x * x * x - (a + 3) * x * x + 1;
        if (x < 2) return a * x * x * x - 5 * a * x * x + 8 * a * x - 4 * a;
        return 0;
    }
    if (x >= 3) return 0;
    if (x == 0) return 1;
    double px = M_PI * x;
    return 3.0 * sin(px) * sin(px / 3.0) / (px * px);
}

/* Weights of output o along an axis in -> n: w[i] for every input i (zero outside the taps). */
static void ref_axis_weights(int f, int in, int n, int o, double *w) {
    double support = f == 0 ? 1 : f == 1 ? 2 : 3;
    double scale = (double)in / n, fs = scale > 1 ? scale : 1;
    double center = (o + 0.5) * scale;
    double lo = center - support * fs + 0.5, hi = center + support * fs + 0.5;
    int imin = (int)lo, imax = (int)hi; /* truncation toward zero, as Pillow */
    if (imin < 0) imin = 0;
    if (imax > in) imax = in;
    double sum = 0;
    for (int i = 0; i < in; i++) {
        w[i] = (i >= imin && i < imax) ? ref_filter(f, (i - center + 0.5) / fs) : 0.0;
        sum += w[i];
    }
    for (int i = 0; i < in; i++) w[i] = sum != 0 ? w[i] / sum : 0;
}

void ref_resize_crop_f64(const uint8_t *src, int sh, int sw, int rh, int rw, int top, int left, int h, int w,
                         bool flip, int filter, double *out) {
    double *wy = malloc(sizeof(double) * (size_t)sh), *wx = malloc(sizeof(double) * (size_t)sw);
    for (int i = 0; i < h; i++) {
        ref_axis_weights(filter, sh, rh, top + i, wy);
        for (int j = 0; j < w; j++) {
            ref_axis_weights(filter, sw, rw, left + j, wx);
            double acc[3] = {0, 0, 0};
            for (int y = 0; y < sh; y++) {
                if (wy[y] == 0) continue;
                for (int x = 0; x < sw; x++) {
                    if (wx[x] == 0) continue;
                    const uint8_t *p = src + ((size_t)y * sw + x) * 3;
                    for (int c = 0; c < 3; c++) acc[c] += wy[y] * wx[x] * p[c];
                }
            }
            int jo = flip ? w - 1 - j : j;
            for (int c = 0; c < 3; c++) {
                double v = acc[c] < 0 ? 0 : acc[c] > 255 ? 255 : acc[c];
                out[((size_t)i * w + jo) * 3 + c] = v / 127.5 - 1.0;
            }
        }
    }
    free(wy);
    free(wx);
}

static void tar_reserve(RefTar *t, int64_t n) {
    if (t->len + n <= t->cap) return;
    int64_t cap = t->cap * 2 > t->len + n ? t->cap * 2 : t->len + n + 65536;
    t->buf = realloc(t->buf, (size_t)cap);
    t->cap = cap;
}

void ref_tar_member(RefTar *t, const char *name, char typeflag, const void *data, int64_t len, int64_t declared_size) {
    uint8_t h[512];
    memset(h, 0, sizeof h);
    snprintf((char *)h, 100, "%s", name);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    int64_t size = declared_size >= 0 ? declared_size : len;
    if (typeflag != '0') size = declared_size >= 0 ? declared_size : 0;
    char num[32];
    snprintf(num, sizeof num, "%011llo", (unsigned long long)(size & 077777777777ll)); /* 11 octal digits */
    memcpy(h + 124, num, 12);
    snprintf((char *)h + 136, 12, "%011o", 1700000000u);
    h[156] = (uint8_t)typeflag;
    if (typeflag == '2' || typeflag == '1') snprintf((char *)h + 157, 100, "%s", "target.jpg");
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
    int64_t padded = (len + 511) / 512 * 512;
    tar_reserve(t, 512 + padded);
    memcpy(t->buf + t->len, h, 512);
    t->len += 512;
    if (len > 0) memcpy(t->buf + t->len, data, (size_t)len);
    memset(t->buf + t->len + len, 0, (size_t)(padded - len));
    t->len += padded;
}

void ref_tar_file(RefTar *t, const char *name, const void *data, int64_t len) { ref_tar_member(t, name, '0', data, len, -1); }

void ref_tar_text(RefTar *t, const char *name, const char *text) { ref_tar_file(t, name, text, (int64_t)strlen(text)); }

void ref_tar_end(RefTar *t) {
    tar_reserve(t, 1024);
    memset(t->buf + t->len, 0, 1024);
    t->len += 1024;
}

void ref_tar_free(RefTar *t) {
    free(t->buf);
    memset(t, 0, sizeof *t);
}

uint8_t *ref_image_rgb(int h, int w, uint32_t seed) {
    uint8_t *p = malloc((size_t)h * w * 3);
    double a = (seed % 7) * 0.9 + 0.5, b = (seed % 11) * 0.37 + 0.2, c = (seed % 5) * 1.3;
    uint32_t s = seed * 2654435761u + 1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            s = s * 1664525u + 1013904223u;
            double noise = ((s >> 24) & 0x1f) - 16.0;
            double u = (double)x / w, v = (double)y / h;
            double r = 128 + 100 * sin(6.0 * a * u + c) * cos(4.0 * b * v) + noise;
            double g = 255 * u * (1 - v) + noise * 0.5;
            double bl = 128 + 120 * cos(9.0 * (u + v) * b + a) + ((x / 8 + y / 8) % 2 ? 20 : -20);
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(r < 0 ? 0 : r > 255 ? 255 : r);
            q[1] = (uint8_t)(g < 0 ? 0 : g > 255 ? 255 : g);
            q[2] = (uint8_t)(bl < 0 ? 0 : bl > 255 ? 255 : bl);
        }
    return p;
}

uint8_t *ref_jpeg_encode(const uint8_t *rgb, int h, int w, int quality, int subsamp, int64_t *len) {
    tjhandle tj = tjInitCompress();
    unsigned char *jpeg = NULL;
    unsigned long size = 0;
    static const int samp[4] = {TJSAMP_444, TJSAMP_422, TJSAMP_420, TJSAMP_GRAY};
    int rc = tjCompress2(tj, rgb, w, 0, h, TJPF_RGB, &jpeg, &size, samp[subsamp & 3], quality, TJFLAG_ACCURATEDCT);
    tjDestroy(tj);
    if (rc != 0) {
        tjFree(jpeg);
        *len = 0;
        return NULL;
    }
    uint8_t *out = malloc(size);
    memcpy(out, jpeg, size);
    tjFree(jpeg);
    *len = (int64_t)size;
    return out;
}

bool ref_write_file(const char *path, const void *buf, int64_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return false;
    bool ok = fwrite(buf, 1, (size_t)len, f) == (size_t)len;
    return fclose(f) == 0 && ok;
}

uint8_t *ref_read_file(const char *path, int64_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        fclose(f);
        return NULL;
    }
    fclose(f);
    b[n] = 0;
    *len = n;
    return b;
}

bool ref_tmpdir(char *dir, const char *tag) {
    const char *base = getenv("TMPDIR");
    snprintf(dir, 256, "%s/addc-%s-XXXXXX", base && *base ? base : "/tmp", tag);
    return mkdtemp(dir) != NULL;
}

void ref_rmtree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

static char *dup_str(const JsonDoc *d, const JsonNode *obj, const char *key) {
    const char *v = json_string(d, json_get(d, obj, key), NULL);
    return strdup(v ? v : "");
}

static int64_t get_int(const JsonDoc *d, const JsonNode *obj, const char *key) {
    int64_t v = -1;
    json_int(json_get(d, obj, key), &v);
    return v;
}

bool ref_wds_fixture_load(RefWdsFixture *f) {
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "%s/tests/ref/fixtures/wds", ADDC_SOURCE_DIR);
    char path[700];
    snprintf(path, sizeof path, "%s/manifest.json", f->dir);
    int64_t len;
    uint8_t *text = ref_read_file(path, &len);
    if (!text) return false;
    JsonDoc d;
    if (json_parse((char *)text, len, NULL, &d) != ADDC_OK) {
        free(text);
        return false;
    }
    free(text);
    const JsonNode *arr = json_get(&d, json_root(&d), "samples");
    f->n = arr ? (int)arr->count : 0;
    f->s = calloc((size_t)(f->n ? f->n : 1), sizeof *f->s);
    int i = 0;
    for (const JsonNode *c = json_child(&d, arr); c; c = json_next(&d, c), i++) {
        RefWdsSample *s = &f->s[i];
        s->key = dup_str(&d, c, "key");
        s->caption = dup_str(&d, c, "caption");
        s->shard = dup_str(&d, c, "shard");
        s->ext = dup_str(&d, c, "ext");
        s->h = (int)get_int(&d, c, "height");
        s->w = (int)get_int(&d, c, "width");
        s->offset = get_int(&d, c, "offset");
        const JsonNode *half = json_get(&d, c, "half");
        if (half && half->type == JSON_OBJECT) {
            s->hh = (int)get_int(&d, half, "height");
            s->hw = (int)get_int(&d, half, "width");
            s->half_offset = get_int(&d, half, "offset");
        }
        const JsonNode *js = json_get(&d, c, "json");
        json_number(json_get(&d, js, "punsafe"), &s->punsafe);
        s->json_width = get_int(&d, js, "width");
        s->json_height = get_int(&d, js, "height");
    }
    json_free(&d);
    snprintf(path, sizeof path, "%s/pixels.bin", f->dir);
    f->pixels = ref_read_file(path, &f->npix);
    return f->pixels != NULL && f->n > 0;
}

void ref_wds_fixture_free(RefWdsFixture *f) {
    for (int i = 0; i < f->n; i++) {
        free(f->s[i].key);
        free(f->s[i].caption);
        free(f->s[i].shard);
        free(f->s[i].ext);
    }
    free(f->s);
    free(f->pixels);
    memset(f, 0, sizeof *f);
}

uint8_t *ref_dataset_image(int shard, int index, uint32_t seed, int *h, int *w, bool *png) {
    uint32_t r = (uint32_t)(shard * 1000 + index) * 2246822519u + seed * 3266489917u + 374761393u;
    r ^= r >> 15;
    *h = 20 + (int)(r % 71);
    *w = 20 + (int)((r >> 8) % 71);
    *png = index % 5 == 4;
    return ref_image_rgb(*h, *w, (uint32_t)(shard * 1000 + index) + seed);
}

bool ref_make_dataset(const char *dir, int nshards, int per_shard, uint32_t seed, bool bad, RefDataset *info) {
    memset(info, 0, sizeof *info);
    info->nshards = nshards;
    info->per_shard = per_shard;
    if (bad && (nshards < 6 || per_shard < 12)) return false;
    for (int s = 0; s < nshards; s++) {
        RefTar t = {0};
        int64_t cut = -1;
        for (int i = 0; i < per_shard; i++) {
            char key[32], name[64], text[128];
            snprintf(key, sizeof key, "s%02d_%03d", s, i);
            int h, w;
            bool is_png;
            uint8_t *rgb = ref_dataset_image(s, i, seed, &h, &w, &is_png);
            uint8_t *img;
            int64_t len;
            if (is_png) {
                if (image_png_encode(rgb, h, w, 3, &img, &len) != ADDC_OK) return false;
            } else {
                img = ref_jpeg_encode(rgb, h, w, 85, i % 3, &len);
            }
            free(rgb);
            if (bad && s == 1 && i == 3) len /= 2;
            if (bad && s == 2 && i == 6 && !is_png) {
                int64_t seg = 4 + (img[4] << 8 | img[5]);
                uint8_t *x = malloc((size_t)len + 3);
                memcpy(x, img, (size_t)seg);
                memcpy(x + seg, "abc", 3);
                memcpy(x + seg + 3, img + seg, (size_t)(len - seg));
                free(img);
                img = x;
                len += 3;
            }
            if (bad && s == 5 && i == 2) len = 0;
            if (bad && s == 4 && i == per_shard - 1) cut = t.len + 512 + len / 2;
            snprintf(name, sizeof name, "%s.%s", key, is_png ? "png" : "jpg");
            ref_tar_file(&t, name, img, len);
            free(img);
            if (bad && s == 0 && i == 9) ref_tar_member(&t, "s00_009.lnk", '2', NULL, 0, -1);
            snprintf(name, sizeof name, "%s.txt", key);
            snprintf(text, sizeof text, "caption %02d-%03d", s, i);
            if (!(bad && s == 1 && i == 7)) ref_tar_text(&t, name, text);
            snprintf(name, sizeof name, "%s.json", key);
            snprintf(text, sizeof text, "{\"punsafe\": %.2f, \"width\": %d, \"height\": %d, \"index\": %d}",
                     ((s * 31 + i * 17) % 100) / 100.0, w, h, i);
            ref_tar_text(&t, name, bad && s == 2 && i == 11 ? "{\"punsafe\": oops" : text);
            if (bad && s == 3 && i == 5) ref_tar_text(&t, "s03_002.txt", "a caption that comes back");
        }
        if (cut >= 0) t.len = cut;
        else ref_tar_end(&t);
        char path[600];
        snprintf(path, sizeof path, "%s/shard-%02d.tar", dir, s);
        bool ok = ref_write_file(path, t.buf, t.len);
        ref_tar_free(&t);
        if (!ok) return false;
    }
    info->samples = (int64_t)nshards * per_shard;
    info->groups = info->samples + (bad ? 1 : 0);
    if (bad) {
        info->bad_jpeg = 2;
        info->missing_caption = 1;
        info->missing_image = 2;
        info->not_adjacent = 1;
        info->truncated = 1;
        info->empty = 1;
        info->not_regular = 1;
        info->bad_json = 1;
        info->loader_good = info->samples - 5;
        info->check_good = info->samples - 6;
    } else {
        info->loader_good = info->check_good = info->samples;
    }
    return true;
}
