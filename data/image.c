/* data/image: JPEG/PNG decode with limits, and the antialiased resize + crop (see image.h). */
#include "data/image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

#define JPEG_SCAN_LIMIT 500
#define PNG_CHUNK_MALLOC_MAX (8 << 20)

ImageFormat image_format_sniff(const uint8_t *buf, int64_t len) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    if (len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) return IMAGE_FORMAT_JPEG;
    if (len >= 8 && memcmp(buf, png_sig, 8) == 0) return IMAGE_FORMAT_PNG;
    return IMAGE_FORMAT_UNKNOWN;
}

const char *image_format_name(ImageFormat f) {
    return f == IMAGE_FORMAT_JPEG ? "JPEG" : f == IMAGE_FORMAT_PNG ? "PNG" : "unknown";
}

void image_limits_default(ImageLimits *lim) {
    lim->max_pixels = 64ll << 20;
    lim->max_side = 32768;
}

static Status grow(void **p, int64_t *cap, int64_t need) {
    if (need <= *cap) return ADDC_OK;
    void *q = realloc(*p, (size_t)need);
    if (!q) return addc_error_set(ADDC_ERR_NOMEM, "image: out of memory for %lld bytes", (long long)need);
    *p = q;
    *cap = need;
    return ADDC_OK;
}

void image_u8_free(ImageU8 *im) {
    free(im->data);
    free(im->aux);
    memset(im, 0, sizeof *im);
}

static Status check_dims(const ImageLimits *lim, const char *fmt, int64_t h, int64_t w, DataCounter *fail) {
    if (h <= 0 || w <= 0) {
        *fail = !strcmp(fmt, "PNG") ? DATA_BAD_PNG : DATA_BAD_JPEG;
        return addc_error_set(ADDC_ERR_FORMAT, "%s: empty image %lldx%lld", fmt, (long long)w, (long long)h);
    }
    if (h > lim->max_side || w > lim->max_side || h * w > lim->max_pixels) {
        *fail = DATA_IMAGE_TOO_LARGE;
        return addc_error_set(ADDC_ERR_FORMAT, "%s: %lldx%lld image exceeds the limit (%d per side, %lld pixels)",
                              fmt, (long long)w, (long long)h, lim->max_side, (long long)lim->max_pixels);
    }
    return ADDC_OK;
}

/* ---- JPEG ---- */

typedef struct JpegErr {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 32];
} JpegErr;

static void jpeg_err_exit(j_common_ptr c) {
    JpegErr *e = (JpegErr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

static void jpeg_err_emit(j_common_ptr c, int level) {
    if (level >= 0) return; /* trace messages */
    JpegErr *e = (JpegErr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1); /* a warning means corrupt or truncated data */
}

static void jpeg_progress(j_common_ptr c) {
    j_decompress_ptr d = (j_decompress_ptr)c;
    if (c->is_decompressor && d->progressive_mode && d->input_scan_number > JPEG_SCAN_LIMIT) {
        JpegErr *e = (JpegErr *)c->err;
        snprintf(e->msg, sizeof e->msg, "progressive JPEG with more than %d scans", JPEG_SCAN_LIMIT);
        longjmp(e->jb, 1);
    }
}

static void jpeg_setup(struct jpeg_decompress_struct *d, JpegErr *e) {
    d->err = jpeg_std_error(&e->pub);
    e->pub.error_exit = jpeg_err_exit;
    e->pub.emit_message = jpeg_err_emit;
    e->msg[0] = 0;
}

/* Converts one CMYK row to RGB; Adobe files store the inks inverted. */
static void cmyk_row_to_rgb(const uint8_t *in, uint8_t *out, int32_t w, bool inverted) {
    for (int32_t x = 0; x < w; x++) {
        int c = in[4 * x], m = in[4 * x + 1], y = in[4 * x + 2], k = in[4 * x + 3];
        if (inverted) c = 255 - c, m = 255 - m, y = 255 - y, k = 255 - k;
        int nk = 255 - k;
        out[3 * x] = (uint8_t)(((255 - c) * nk + 127) / 255);
        out[3 * x + 1] = (uint8_t)(((255 - m) * nk + 127) / 255);
        out[3 * x + 2] = (uint8_t)(((255 - y) * nk + 127) / 255);
    }
}

static Status jpeg_decode(const uint8_t *buf, int64_t len, const ImageLimits *lim, int32_t want_h, int32_t want_w,
                          ImageU8 *out, int32_t *orig_h, int32_t *orig_w, DataCounter *fail) {
    struct jpeg_decompress_struct d;
    JpegErr e;
    *fail = DATA_BAD_JPEG;
    jpeg_setup(&d, &e);
    jpeg_create_decompress(&d);
    e.progress.progress_monitor = jpeg_progress;
    d.progress = &e.progress;
    volatile Status vst = ADDC_OK;
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&d);
        if (vst != ADDC_OK) return vst;
        return addc_error_set(ADDC_ERR_FORMAT, "JPEG: %s", e.msg);
    }
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    *orig_h = (int32_t)d.image_height;
    *orig_w = (int32_t)d.image_width;
    Status st = check_dims(lim, "JPEG", d.image_height, d.image_width, fail);
    if (st != ADDC_OK) {
        jpeg_destroy_decompress(&d);
        return st;
    }
    bool cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
    d.out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    int m = 8;
    if (want_h > 0 && want_w > 0) {
        for (m = 1; m < 8; m *= 2) { /* 1/8, 1/4, 1/2: the scales libjpeg-turbo does fast */
            int64_t sh = ((int64_t)d.image_height * m + 7) / 8, sw = ((int64_t)d.image_width * m + 7) / 8;
            if (sh >= want_h && sw >= want_w) break;
        }
    }
    d.scale_num = (unsigned)m;
    d.scale_denom = 8;
    jpeg_calc_output_dimensions(&d);
    int32_t h = (int32_t)d.output_height, w = (int32_t)d.output_width;
    if ((cmyk && d.output_components != 4) || (!cmyk && d.output_components != 3)) {
        jpeg_destroy_decompress(&d);
        return addc_error_set(ADDC_ERR_FORMAT, "JPEG: unexpected %d output components", d.output_components);
    }
    st = grow((void **)&out->data, &out->cap, (int64_t)h * w * 3);
    if (st == ADDC_OK && cmyk) st = grow((void **)&out->aux, &out->aux_cap, (int64_t)w * 4);
    if (st != ADDC_OK) {
        jpeg_destroy_decompress(&d);
        return st;
    }
    out->h = h;
    out->w = w;
    jpeg_start_decompress(&d);
    while (d.output_scanline < d.output_height) {
        uint8_t *row = out->data + (int64_t)d.output_scanline * w * 3;
        JSAMPROW rp = cmyk ? out->aux : row;
        if (jpeg_read_scanlines(&d, &rp, 1) != 1) {
            vst = addc_error_set(ADDC_ERR_FORMAT, "JPEG: no scanline returned");
            longjmp(e.jb, 1);
        }
        if (cmyk) cmyk_row_to_rgb(out->aux, row, w, d.saw_Adobe_marker);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    return ADDC_OK;
}

static Status jpeg_probe(const uint8_t *buf, int64_t len, int32_t *h, int32_t *w) {
    struct jpeg_decompress_struct d;
    JpegErr e;
    jpeg_setup(&d, &e);
    jpeg_create_decompress(&d);
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&d);
        return addc_error_set(ADDC_ERR_FORMAT, "JPEG: %s", e.msg);
    }
    jpeg_mem_src(&d, buf, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    *h = (int32_t)d.image_height;
    *w = (int32_t)d.image_width;
    jpeg_destroy_decompress(&d);
    return ADDC_OK;
}

/* ---- PNG ---- */

typedef struct PngSrc {
    const uint8_t *buf;
    int64_t len, pos;
    char msg[256];
} PngSrc;

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n) {
    PngSrc *s = png_get_io_ptr(png);
    if ((int64_t)n > s->len - s->pos) png_error(png, "truncated PNG data");
    memcpy(dst, s->buf + s->pos, n);
    s->pos += (int64_t)n;
}

static void png_on_error(png_structp png, png_const_charp msg) {
    PngSrc *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png, (void)msg; /* benign (profiles, ancillary chunk CRCs); real damage is an error */
}

static Status png_decode(const uint8_t *buf, int64_t len, const ImageLimits *lim, ImageU8 *out, int32_t *orig_h,
                         int32_t *orig_w, DataCounter *fail) {
    PngSrc src = {buf, len, 0, ""};
    *fail = DATA_BAD_PNG;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
    if (!png) return addc_error_set(ADDC_ERR_NOMEM, "PNG: cannot create a reader");
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return addc_error_set(ADDC_ERR_NOMEM, "PNG: cannot create a reader");
    }
    volatile Status vst = ADDC_OK;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        if (vst != ADDC_OK) return vst;
        return addc_error_set(ADDC_ERR_FORMAT, "PNG: %s", src.msg);
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff); /* sizes are judged by check_dims */
    png_set_chunk_malloc_max(png, PNG_CHUNK_MALLOC_MAX);
    png_read_info(png, info);
    png_uint_32 w32, h32;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w32, &h32, &depth, &ctype, &interlace, NULL, NULL);
    *orig_h = (int32_t)h32;
    *orig_w = (int32_t)w32;
    Status st = check_dims(lim, "PNG", h32, w32, fail);
    if (st != ADDC_OK) {
        vst = st;
        longjmp(png_jmpbuf(png), 1);
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    if (ctype & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int32_t h = (int32_t)h32, w = (int32_t)w32;
    if (png_get_rowbytes(png, info) != (png_size_t)w * 3 || png_get_channels(png, info) != 3) {
        vst = addc_error_set(ADDC_ERR_FORMAT, "PNG: unexpected row layout after conversion to RGB");
        longjmp(png_jmpbuf(png), 1);
    }
    st = grow((void **)&out->data, &out->cap, (int64_t)h * w * 3);
    if (st == ADDC_OK) st = grow((void **)&out->aux, &out->aux_cap, (int64_t)h * (int64_t)sizeof(png_bytep));
    if (st != ADDC_OK) {
        vst = st;
        longjmp(png_jmpbuf(png), 1);
    }
    out->h = h;
    out->w = w;
    png_bytep *rows = (png_bytep *)out->aux;
    for (int32_t y = 0; y < h; y++) rows[y] = out->data + (int64_t)y * w * 3;
    png_read_image(png, rows);
    png_destroy_read_struct(&png, &info, NULL);
    return ADDC_OK;
}

static Status png_probe(const uint8_t *buf, int64_t len, int32_t *h, int32_t *w) {
    if (len < 24 || memcmp(buf + 12, "IHDR", 4) != 0) return addc_error_set(ADDC_ERR_FORMAT, "PNG: no IHDR chunk");
    *w = (int32_t)((uint32_t)buf[16] << 24 | (uint32_t)buf[17] << 16 | (uint32_t)buf[18] << 8 | buf[19]);
    *h = (int32_t)((uint32_t)buf[20] << 24 | (uint32_t)buf[21] << 16 | (uint32_t)buf[22] << 8 | buf[23]);
    if (*w <= 0 || *h <= 0) return addc_error_set(ADDC_ERR_FORMAT, "PNG: invalid size in IHDR");
    return ADDC_OK;
}

Status image_probe(const uint8_t *buf, int64_t len, int32_t *h, int32_t *w) {
    switch (image_format_sniff(buf, len)) {
    case IMAGE_FORMAT_JPEG: return jpeg_probe(buf, len, h, w);
    case IMAGE_FORMAT_PNG: return png_probe(buf, len, h, w);
    default: return addc_error_set(ADDC_ERR_FORMAT, "image: neither JPEG nor PNG");
    }
}

Status image_decode(const uint8_t *buf, int64_t len, const ImageLimits *lim, int32_t want_h, int32_t want_w,
                    ImageU8 *out, int32_t *orig_h, int32_t *orig_w, DataCounter *fail) {
    ImageLimits dl;
    if (!lim) {
        image_limits_default(&dl);
        lim = &dl;
    }
    *orig_h = *orig_w = 0;
    switch (image_format_sniff(buf, len)) {
    case IMAGE_FORMAT_JPEG: return jpeg_decode(buf, len, lim, want_h, want_w, out, orig_h, orig_w, fail);
    case IMAGE_FORMAT_PNG: return png_decode(buf, len, lim, out, orig_h, orig_w, fail);
    default:
        *fail = DATA_BAD_JPEG;
        return addc_error_set(ADDC_ERR_FORMAT, "image: data is neither JPEG nor PNG (%lld bytes)", (long long)len);
    }
}

typedef struct PngSink {
    uint8_t *buf;
    int64_t len, cap;
    bool nomem;
    char msg[256];
} PngSink;

static void png_write_mem(png_structp png, png_bytep data, png_size_t n) {
    PngSink *s = png_get_io_ptr(png);
    if (s->len + (int64_t)n > s->cap) {
        int64_t cap = s->cap * 2 > s->len + (int64_t)n ? s->cap * 2 : s->len + (int64_t)n + 4096;
        uint8_t *b = realloc(s->buf, (size_t)cap);
        if (!b) {
            s->nomem = true;
            png_error(png, "out of memory");
        }
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += (int64_t)n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static void png_on_write_error(png_structp png, png_const_charp msg) {
    PngSink *s = png_get_error_ptr(png);
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    png_longjmp(png, 1);
}

Status image_png_encode(const uint8_t *pixels, int32_t h, int32_t w, int32_t channels, uint8_t **out, int64_t *len) {
    *out = NULL;
    *len = 0;
    if (h < 1 || w < 1 || (channels != 1 && channels != 3))
        return addc_error_set(ADDC_ERR_INVALID, "PNG encode: bad image %dx%dx%d", w, h, channels);
    PngSink sink = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink, png_on_write_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return addc_error_set(ADDC_ERR_NOMEM, "PNG encode: cannot create a writer");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(sink.buf);
        return addc_error_set(sink.nomem ? ADDC_ERR_NOMEM : ADDC_ERR_EXTERNAL, "PNG encode: %s", sink.msg);
    }
    png_set_write_fn(png, &sink, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int32_t y = 0; y < h; y++) png_write_row(png, (png_const_bytep)(pixels + (int64_t)y * w * channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = sink.buf;
    *len = sink.len;
    return ADDC_OK;
}

/* ---- resize ---- */

typedef float v4f __attribute__((vector_size(16))); /* GNU vector extensions (gcc, clang) */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint8_t v8u8 __attribute__((vector_size(8)));

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

double resize_filter_eval(ResizeFilter f, double x) {
    x = fabs(x);
    switch (f) {
    case RESIZE_BILINEAR: return x < 1.0 ? 1.0 - x : 0.0;
    case RESIZE_BICUBIC: {
        const double a = -0.5;
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
        if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
        return 0.0;
    }
    case RESIZE_LANCZOS: return x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0;
    default: return 0.0;
    }
}

double resize_filter_support(ResizeFilter f) {
    return f == RESIZE_BILINEAR ? 1.0 : f == RESIZE_BICUBIC ? 2.0 : 3.0;
}

const char *resize_filter_name(ResizeFilter f) {
    return f == RESIZE_BILINEAR ? "bilinear" : f == RESIZE_BICUBIC ? "bicubic" : f == RESIZE_LANCZOS ? "lanczos" : "?";
}

void image_cover_size(int32_t oh, int32_t ow, int32_t th, int32_t tw, int32_t *rh, int32_t *rw) {
    double s = fmax((double)th / oh, (double)tw / ow);
    int64_t h = (int64_t)floor(oh * s + 0.5), w = (int64_t)floor(ow * s + 0.5);
    *rh = (int32_t)(h < th ? th : h);
    *rw = (int32_t)(w < tw ? tw : w);
}

/* Taps for outputs [o0, o0 + n) of an axis resized from `in` to `outn`: bounds[2i] = first
 * input index, bounds[2i+1] = tap count, coef[i * ksize ..] = weights. Returns ksize. */
static int32_t resize_coeffs(ResizeFilter f, int32_t in, int32_t outn, int32_t o0, int32_t n, int32_t *bounds,
                             float *coef, int32_t ksize) {
    double scale = (double)in / outn;
    double fs = scale < 1.0 ? 1.0 : scale;
    double support = resize_filter_support(f) * fs, ss = 1.0 / fs;
    for (int32_t i = 0; i < n; i++) {
        double center = (o0 + i + 0.5) * scale;
        int32_t xmin = (int32_t)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int32_t xmax = (int32_t)(center + support + 0.5);
        if (xmax > in) xmax = in;
        int32_t cnt = xmax - xmin;
        if (cnt > ksize) cnt = ksize;
        if (cnt < 1) { /* cannot happen for in >= 1; keep one tap to stay defined */
            xmin = xmin >= in ? in - 1 : xmin;
            cnt = 1;
        }
        float *c = coef + (int64_t)i * ksize;
        double wsum = 0.0;
        for (int32_t k = 0; k < cnt; k++) wsum += resize_filter_eval(f, (k + xmin - center + 0.5) * ss);
        for (int32_t k = 0; k < cnt; k++) {
            double wk = resize_filter_eval(f, (k + xmin - center + 0.5) * ss);
            c[k] = (float)(wsum != 0.0 ? wk / wsum : (k == 0));
        }
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = cnt;
    }
    return ksize;
}

static int32_t resize_ksize(ResizeFilter f, int32_t in, int32_t outn) {
    double scale = (double)in / outn;
    double fs = scale < 1.0 ? 1.0 : scale;
    return (int32_t)ceil(resize_filter_support(f) * fs) * 2 + 1;
}

Status image_resize_crop(const uint8_t *src, int32_t sh, int32_t sw, const ResizeCrop *rc, float *out,
                         ResizeScratch *s) {
    if (sh < 1 || sw < 1 || rc->rh < 1 || rc->rw < 1 || rc->h < 1 || rc->w < 1 || rc->top < 0 || rc->left < 0 ||
        rc->top + rc->h > rc->rh || rc->left + rc->w > rc->rw || rc->filter < 0 || rc->filter >= RESIZE_FILTER_COUNT)
        return addc_error_set(ADDC_ERR_INVALID, "resize: bad geometry %dx%d -> %dx%d crop %dx%d at (%d, %d)", sw, sh,
                              rc->rw, rc->rh, rc->w, rc->h, rc->left, rc->top);
    int32_t kx = resize_ksize(rc->filter, sw, rc->rw), ky = resize_ksize(rc->filter, sh, rc->rh);
    TRY(grow((void **)&s->coef, &s->coef_cap, ((int64_t)rc->w * kx + (int64_t)rc->h * ky) * (int64_t)sizeof(float)));
    TRY(grow((void **)&s->bounds, &s->bounds_cap, 2 * ((int64_t)rc->w + rc->h) * (int64_t)sizeof(int32_t)));
    float *cx = s->coef, *cy = s->coef + (int64_t)rc->w * kx;
    int32_t *bx = s->bounds, *by = s->bounds + 2 * rc->w;
    resize_coeffs(rc->filter, sw, rc->rw, rc->left, rc->w, bx, cx, kx);
    resize_coeffs(rc->filter, sh, rc->rh, rc->top, rc->h, by, cy, ky);
    /* the vertical taps of output row i are input rows [by[2i], by[2i] + by[2i+1]); both ends
     * never decrease with i, so a ring of ky horizontally resized rows, each computed once when
     * first needed, holds every row a vertical tap reads */
    int32_t x0 = bx[0], x1 = bx[0] + bx[1];
    for (int32_t j = 1; j < rc->w; j++) {
        if (bx[2 * j] < x0) x0 = bx[2 * j];
        if (bx[2 * j] + bx[2 * j + 1] > x1) x1 = bx[2 * j] + bx[2 * j + 1];
    }
    int64_t wc = (int64_t)rc->w * 3;
    TRY(grow((void **)&s->tmp, &s->tmp_cap, (int64_t)ky * wc * (int64_t)sizeof(float)));
    /* one input row as floats (+1 pixel of padding for the 4-wide loads), then one output row */
    TRY(grow((void **)&s->row, &s->row_cap, ((int64_t)(x1 - x0 + 1) * 3 + wc + 8) * (int64_t)sizeof(float)));
    float *rowf = s->row, *acc = s->row + (int64_t)(x1 - x0 + 1) * 3;
    int32_t next = by[0]; /* next input row to resize horizontally */
    const v8f lo = {0, 0, 0, 0, 0, 0, 0, 0}, hi = {255, 255, 255, 255, 255, 255, 255, 255};
    for (int32_t i = 0; i < rc->h; i++) {
        for (; next < by[2 * i] + by[2 * i + 1]; next++) {
            /* horizontal pass of input row `next` into ring slot next % ky: a pixel is a 4-float vector */
            const uint8_t *in = src + ((int64_t)next * sw + x0) * 3;
            int64_t nk = (int64_t)(x1 - x0) * 3, k = 0;
            for (; k + 8 <= nk; k += 8) {
                v8u8 b;
                memcpy(&b, in + k, sizeof b);
                v8f f = __builtin_convertvector(__builtin_convertvector(b, v8i), v8f); /* via int32: vectorizes */
                memcpy(rowf + k, &f, sizeof f);
            }
            for (; k < nk; k++) rowf[k] = in[k];
            rowf[nk] = rowf[nk + 1] = rowf[nk + 2] = 0.f;
            float *t = s->tmp + (int64_t)(next % ky) * wc;
            for (int32_t j = 0; j < rc->w; j++) {
                const float *kk = cx + (int64_t)j * kx;
                const float *p = rowf + (int64_t)(bx[2 * j] - x0) * 3;
                v4f a = {0, 0, 0, 0};
                for (int32_t q = 0; q < bx[2 * j + 1]; q++) {
                    v4f v;
                    memcpy(&v, p + 3 * q, sizeof v);
                    a += v * kk[q];
                }
                t[3 * j] = a[0];
                t[3 * j + 1] = a[1];
                t[3 * j + 2] = a[2];
            }
        }
        /* vertical pass as row axpys (8-wide) */
        float *o = out + (int64_t)i * wc, *dst = rc->flip ? acc : o;
        const float *k = cy + (int64_t)i * ky;
        memset(dst, 0, sizeof(float) * (size_t)wc);
        for (int32_t q = 0; q < by[2 * i + 1]; q++) {
            const float *t = s->tmp + (int64_t)((by[2 * i] + q) % ky) * wc;
            float kq = k[q];
            int64_t j = 0;
            for (; j + 8 <= wc; j += 8) {
                v8f a, v;
                memcpy(&a, dst + j, sizeof a);
                memcpy(&v, t + j, sizeof v);
                a += v * kq;
                memcpy(dst + j, &a, sizeof a);
            }
            for (; j < wc; j++) dst[j] += t[j] * kq;
        }
        /* clamp to [0, 255] with compare masks, then v / 127.5 - 1: exact at 0 and 255, so the
         * range is exactly [-1, 1] (a multiply by 1/127.5 could be fused into 1.0000001) */
        int64_t j = 0;
        for (; j + 8 <= wc; j += 8) {
            v8f v;
            memcpy(&v, dst + j, sizeof v);
            v8i below = v < lo, above = v > hi;
            v = (v8f)(((v8i)v & ~below & ~above) | ((v8i)hi & above));
            v = v / 127.5f - 1.0f;
            memcpy(dst + j, &v, sizeof v);
        }
        for (; j < wc; j++) {
            float v = dst[j];
            v = v < 0.f ? 0.f : v > 255.f ? 255.f : v;
            dst[j] = v / 127.5f - 1.0f;
        }
        if (rc->flip)
            for (int32_t jj = 0; jj < rc->w; jj++) memcpy(o + 3 * (rc->w - 1 - jj), acc + 3 * jj, 3 * sizeof(float));
    }
    return ADDC_OK;
}

void resize_scratch_free(ResizeScratch *s) {
    free(s->tmp);
    free(s->row);
    free(s->coef);
    free(s->bounds);
    memset(s, 0, sizeof s[0]);
}
