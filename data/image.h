/* data/image: decode JPEG (libjpeg-turbo) and PNG (libpng) into 8-bit RGB, and resize + crop +
 * flip into float NHWC in [-1, 1].
 *
 * Decoding is defensive: dimensions are read from the header and checked against ImageLimits
 * before any pixel buffer is allocated; libjpeg warnings (corrupt data, premature end of file,
 * extraneous bytes) are errors; progressive JPEGs with more than 500 scans are refused (the
 * libjpeg-turbo "scan limit" defence). Every colour model becomes RGB: grayscale is
 * replicated, CMYK/YCCK JPEGs are converted with r = (255 - c)(255 - k) / 255 (Adobe files,
 * which store inverted CMYK, are inverted first, as Pillow does), PNG palettes are expanded,
 * 16-bit PNG samples keep their high byte, alpha is dropped (as Pillow's convert("RGB")).
 *
 * DCT scaling: image_decode(want_h, want_w) lets libjpeg decode at 1/8, 1/4 or 1/2 of the size
 * (the scales libjpeg-turbo does fast; 3/8, 5/8... measured slower than a full decode), choosing
 * the smallest that still covers want_h x want_w, so a 2000x1500 photo headed for a 512 crop is
 * decoded at 1000x750 for a fraction of the cost (the same choice as Pillow's Image.draft).
 * PNG ignores it.
 *
 * Resize (Pillow's separable "convolution with antialiasing" resampling): output pixel x of a
 * size-n axis resized from size m samples the input at center c = (x + 0.5) m / n with the
 * filter stretched by s = max(m / n, 1) (so downscaling averages over every input pixel it
 * covers), taps at input pixels i in [int(c - S s + 0.5), int(c + S s + 0.5)) clipped to the
 * image, weights f((i - c + 0.5) / s) normalised to sum 1 (S = the filter's support: bilinear 1,
 * bicubic (a = -0.5) 2, lanczos3 3). Horizontal pass first, then vertical, in float; only the
 * crop window is computed, and only the input rows and columns its taps reach. Output values are
 * clamped to [0, 255] and mapped to v / 127.5 - 1 (exactly [-1, 1]). */
#ifndef ADDC_DATA_IMAGE_H
#define ADDC_DATA_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "data/stats.h"

typedef enum ImageFormat {
    IMAGE_FORMAT_UNKNOWN = 0,
    IMAGE_FORMAT_JPEG,
    IMAGE_FORMAT_PNG,
} ImageFormat;

typedef struct ImageLimits {
    int64_t max_pixels; /* width * height (default 64 M) */
    int32_t max_side;   /* either dimension (default 32768) */
} ImageLimits;

/* An 8-bit RGB image in a buffer that grows and is reused across decodes. */
typedef struct ImageU8 {
    uint8_t *data; /* (H, W, 3) */
    int32_t h, w;
    int64_t cap;
    uint8_t *aux;  /* row scratch (CMYK rows, PNG row pointers) */
    int64_t aux_cap;
} ImageU8;

typedef enum ResizeFilter {
    RESIZE_BILINEAR = 0, /* triangle, support 1 (torchvision's antialiased bilinear) */
    RESIZE_BICUBIC,      /* Keys cubic a = -0.5, support 2 (Pillow's BICUBIC) */
    RESIZE_LANCZOS,      /* lanczos3, support 3 */
    RESIZE_FILTER_COUNT
} ResizeFilter;

/* One resize + crop + flip job: the source is resized to (rh, rw), the window
 * [top, top + h) x [left, left + w) of the result is written, mirrored left-right if flip. */
typedef struct ResizeCrop {
    int32_t rh, rw;
    int32_t top, left;
    int32_t h, w;
    bool flip;
    ResizeFilter filter;
} ResizeCrop;

/* Scratch buffers for image_resize_crop, reused across calls (one per thread). */
typedef struct ResizeScratch {
    float *tmp;   /* ring of horizontally resized rows (taps, w, 3) */
    int64_t tmp_cap;
    float *coef;  /* filter taps */
    int64_t coef_cap;
    int32_t *bounds;
    int64_t bounds_cap;
    float *row;   /* one input row as floats, one output row */
    int64_t row_cap;
} ResizeScratch;

ImageFormat image_format_sniff(const uint8_t *buf, int64_t len);
const char *image_format_name(ImageFormat f);
void image_limits_default(ImageLimits *lim);

/* Reads only the header: the original height and width. Fails (ADDC_ERR_FORMAT) if the header
 * is unreadable. */
Status image_probe(const uint8_t *buf, int64_t len, int32_t *h, int32_t *w);

/* Decodes buf into out (RGB). want_h/want_w > 0 enable JPEG DCT scaling (see above); 0 decodes
 * at full size. orig_h/orig_w get the header's size (before scaling). On failure *fail names
 * the counter to bump (DATA_BAD_JPEG, DATA_BAD_PNG, DATA_IMAGE_TOO_LARGE) and the message says
 * what libjpeg/libpng reported. */
Status image_decode(const uint8_t *buf, int64_t len, const ImageLimits *lim, int32_t want_h, int32_t want_w,
                    ImageU8 *out, int32_t *orig_h, int32_t *orig_w, DataCounter *fail);
void image_u8_free(ImageU8 *im);

/* Encodes 8-bit pixels (H, W, C) with C = 1 (gray) or 3 (RGB) as a PNG in a malloc'd buffer. */
Status image_png_encode(const uint8_t *pixels, int32_t h, int32_t w, int32_t channels, uint8_t **out, int64_t *len);

/* The size (rh, rw) an (oh, ow) image is resized to so that it covers (th, tw) with its aspect
 * ratio kept: scale = max(th / oh, tw / ow), each side rounded, never below the target. */
void image_cover_size(int32_t oh, int32_t ow, int32_t th, int32_t tw, int32_t *rh, int32_t *rw);

/* Resizes src (sh, sw, 3) per rc and writes out (rc->h, rc->w, 3) float in [-1, 1]. */
Status image_resize_crop(const uint8_t *src, int32_t sh, int32_t sw, const ResizeCrop *rc, float *out,
                         ResizeScratch *scratch);
void resize_scratch_free(ResizeScratch *s);
/* The filter kernel and its support, for references and tests. */
double resize_filter_eval(ResizeFilter f, double x);
double resize_filter_support(ResizeFilter f);
const char *resize_filter_name(ResizeFilter f);

#endif
