/* tests/unit/test_data_image: image decode and transforms.
 *
 * - Decoding against Python: every image of the webdataset fixture (JPEG 4:2:0 / 4:2:2 / 4:4:4,
 *   progressive, grayscale, CMYK; PNG RGB, gray, palette, RGBA, gray+alpha) decoded at full size
 *   and compared with Pillow's decode (convert("RGB")); JPEGs also DCT-scaled to 1/2 and compared
 *   with Pillow's draft() decode. Prints the max difference (JPEG decoders may differ by
 *   rounding; the bound is 2 levels).
 * - Resize + crop + flip against the float64 reference (tests/ref_data.c) for the three filters,
 *   down- and upscaling, odd sizes and random windows.
 * - DCT scale choice, cover size, PNG encode/decode round trip.
 * - Broken images: truncated JPEG and PNG, extraneous bytes (a libjpeg warning, must be an
 *   error), corrupt data, a header declaring 60000 x 60000 (refused before any allocation),
 *   neither JPEG nor PNG. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/image.h"
#include "data/wds.h"
#include "tests/ref_data.h"
#include "tests/test_util.h"

/* Reads the fixture shards and returns the image bytes of every sample, in order. */
static int fixture_images(const RefWdsFixture *f, uint8_t **bytes, int64_t *lens, char **keys, int max) {
    int n = 0;
    char path[700];
    for (int i = 0; i < f->n; i++) {
        if (i > 0 && !strcmp(f->s[i].shard, f->s[i - 1].shard)) continue;
        snprintf(path, sizeof path, "%s/%s", f->dir, f->s[i].shard);
        WdsReader *r;
        if (wds_reader_open(path, NULL, NULL, &r) != ADDC_OK) continue;
        WdsSample s = {0};
        while (n < max && wds_reader_next(r, &s, true) == 1) {
            bytes[n] = malloc((size_t)s.image.len);
            memcpy(bytes[n], s.image.data, (size_t)s.image.len);
            lens[n] = s.image.len;
            keys[n] = strdup(s.key);
            n++;
        }
        wds_sample_free(&s);
        wds_reader_close(r);
    }
    return n;
}

static void test_fixture_decode(void) {
    RefWdsFixture f;
    if (!ref_wds_fixture_load(&f)) {
        CHECK(0, "cannot load the webdataset fixture (run tests/ref/make_wds_shards.py)");
        return;
    }
    uint8_t *bytes[64];
    int64_t lens[64];
    char *keys[64];
    int n = fixture_images(&f, bytes, lens, keys, 64);
    CHECK(n == f.n, "fixture: %d images read, manifest has %d", n, f.n);
    ImageU8 im = {0};
    int worst_full = 0, worst_half = 0, halves = 0;
    int64_t off_by_one = 0, compared = 0;
    for (int i = 0; i < n && i < f.n; i++) {
        const RefWdsSample *s = &f.s[i];
        CHECK(!strcmp(keys[i], s->key), "sample %d key %s, fixture %s", i, keys[i], s->key);
        int32_t oh, ow;
        DataCounter fail;
        Status st = image_decode(bytes[i], lens[i], NULL, 0, 0, &im, &oh, &ow, &fail);
        CHECK(st == ADDC_OK, "%s: decode failed: %s", s->key, addc_error_message());
        addc_error_clear();
        if (st != ADDC_OK) continue;
        CHECK(im.h == s->h && im.w == s->w && oh == s->h && ow == s->w, "%s: size %dx%d, Pillow %dx%d", s->key, im.w,
              im.h, s->w, s->h);
        if (im.h != s->h || im.w != s->w) continue;
        const uint8_t *want = f.pixels + s->offset;
        int worst = 0;
        for (int64_t k = 0; k < (int64_t)s->h * s->w * 3; k++) {
            int d = abs((int)im.data[k] - (int)want[k]);
            if (d > worst) worst = d;
            off_by_one += d == 1;
            compared++;
        }
        CHECK(worst <= 2, "%s (%s): full decode differs from Pillow by %d", s->key, s->ext, worst);
        if (worst > worst_full) worst_full = worst;
        if (s->hh > 0) {
            halves++;
            st = image_decode(bytes[i], lens[i], NULL, s->hh, s->hw, &im, &oh, &ow, &fail);
            CHECK(st == ADDC_OK && im.h == s->hh && im.w == s->hw, "%s: DCT-scaled decode %dx%d, Pillow draft %dx%d (%s)",
                  s->key, im.w, im.h, s->hw, s->hh, addc_error_message());
            addc_error_clear();
            if (st == ADDC_OK && im.h == s->hh && im.w == s->hw) {
                int wh = 0;
                const uint8_t *hw = f.pixels + s->half_offset;
                for (int64_t k = 0; k < (int64_t)s->hh * s->hw * 3; k++) {
                    int d = abs((int)im.data[k] - (int)hw[k]);
                    if (d > wh) wh = d;
                }
                CHECK(wh <= 2, "%s: DCT-scaled decode differs from Pillow's draft by %d", s->key, wh);
                if (wh > worst_half) worst_half = wh;
            }
        }
    }
    printf("fixture decode: %d images vs Pillow: max |diff| %d (full size, %lld of %lld values off by one), %d at "
           "1/2 scale: max |diff| %d\n",
           n, worst_full, (long long)off_by_one, (long long)compared, halves, worst_half);
    for (int i = 0; i < n; i++) {
        free(bytes[i]);
        free(keys[i]);
    }
    image_u8_free(&im);
    ref_wds_fixture_free(&f);
}

static void test_resize_reference(void) {
    static const struct {
        int sh, sw, rh, rw, h, w;
    } cases[] = {
        {64, 96, 32, 48, 32, 32},   /* 2x down, crop the middle */
        {61, 90, 43, 64, 40, 40},   /* non-integer down */
        {37, 53, 100, 143, 77, 99}, /* upscale */
        {128, 40, 51, 16, 16, 16},  /* tall, 2.5x down */
        {17, 96, 20, 113, 20, 20},  /* mixed: up vertically, barely horizontally */
        {200, 150, 33, 25, 33, 25}, /* 6x down: wide kernels */
        {5, 7, 5, 7, 5, 7},         /* identity size */
    };
    TestRng rng = {99};
    ResizeScratch rs = {0};
    double worst = 0;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int filter = 0; filter < RESIZE_FILTER_COUNT; filter++)
            for (int flip = 0; flip < 2; flip++) {
                int sh = cases[c].sh, sw = cases[c].sw, rh = cases[c].rh, rw = cases[c].rw, h = cases[c].h, w = cases[c].w;
                uint8_t *src = ref_image_rgb(sh, sw, (uint32_t)(c * 7 + filter));
                int top = (int)(trng_uniform(&rng) * (rh - h + 1)), left = (int)(trng_uniform(&rng) * (rw - w + 1));
                float *out = malloc(sizeof(float) * (size_t)h * w * 3);
                double *ref = malloc(sizeof(double) * (size_t)h * w * 3);
                ResizeCrop rc = {rh, rw, top, left, h, w, flip, (ResizeFilter)filter};
                Status st = image_resize_crop(src, sh, sw, &rc, out, &rs);
                CHECK_OK(st);
                ref_resize_crop_f64(src, sh, sw, rh, rw, top, left, h, w, flip, filter, ref);
                char label[128];
                snprintf(label, sizeof label, "resize %dx%d->%dx%d crop %dx%d@(%d,%d) %s%s", sw, sh, rw, rh, w, h, left, top,
                         resize_filter_name((ResizeFilter)filter), flip ? " flip" : "");
                double err = 0;
                for (int64_t k = 0; k < (int64_t)h * w * 3; k++) {
                    double d = fabs(out[k] - ref[k]);
                    if (d > err) err = d;
                }
                CHECK(err < 2e-5, "%s: max |diff| %.3g", label, err);
                if (err > worst) worst = err;
                free(src);
                free(out);
                free(ref);
            }
    printf("resize vs float64 reference: %zu geometries x 3 filters x flip, max |diff| %.2e (output in [-1, 1])\n",
           sizeof cases / sizeof cases[0], worst);
    /* bad geometry is refused */
    uint8_t px[12] = {0};
    float o[12];
    ResizeCrop bad = {2, 2, 1, 0, 2, 2, false, RESIZE_BILINEAR};
    CHECK(image_resize_crop(px, 2, 2, &bad, o, &rs) == ADDC_ERR_INVALID, "crop outside the resized image");
    addc_error_clear();
    resize_scratch_free(&rs);
}

static void test_geometry(void) {
    int32_t rh, rw;
    image_cover_size(300, 451, 256, 256, &rh, &rw);
    CHECK(rh == 256 && rw == 385, "cover 451x300 -> %dx%d", rw, rh);
    image_cover_size(1000, 500, 512, 512, &rh, &rw);
    CHECK(rh == 1024 && rw == 512, "cover 500x1000 -> %dx%d", rw, rh);
    image_cover_size(100, 100, 64, 96, &rh, &rw);
    CHECK(rh == 96 && rw == 96, "cover to a non-square target -> %dx%d", rw, rh);
    image_cover_size(333, 334, 512, 512, &rh, &rw);
    CHECK(rh == 512 && rw == 514, "upscale cover -> %dx%d", rw, rh);
    /* DCT scaling picks the smallest M/8 covering the request */
    uint8_t *rgb = ref_image_rgb(200, 150, 3);
    int64_t len;
    uint8_t *jpg = ref_jpeg_encode(rgb, 200, 150, 90, 2, &len);
    ImageU8 im = {0};
    int32_t oh, ow;
    DataCounter fail;
    CHECK(image_decode(jpg, len, NULL, 60, 70, &im, &oh, &ow, &fail) == ADDC_OK && im.h == 100 && im.w == 75 && oh == 200 &&
              ow == 150,
          "DCT scale 1/2: got %dx%d (orig %dx%d)", im.w, im.h, ow, oh);
    CHECK(image_decode(jpg, len, NULL, 60, 80, &im, &oh, &ow, &fail) == ADDC_OK && im.h == 200 && im.w == 150,
          "1/2 would not cover 80 columns: full size, got %dx%d", im.w, im.h);
    CHECK(image_decode(jpg, len, NULL, 20, 10, &im, &oh, &ow, &fail) == ADDC_OK && im.h == 25 && im.w == 19, "DCT scale 1/8: %dx%d",
          im.w, im.h);
    CHECK(image_decode(jpg, len, NULL, 400, 300, &im, &oh, &ow, &fail) == ADDC_OK && im.h == 200 && im.w == 150,
          "no upscaling in the decoder: %dx%d", im.w, im.h);
    int32_t ph, pw;
    CHECK(image_probe(jpg, len, &ph, &pw) == ADDC_OK && ph == 200 && pw == 150, "probe JPEG");
    /* PNG encode -> decode is lossless, gray becomes RGB */
    uint8_t *png;
    int64_t plen;
    CHECK_OK(image_png_encode(rgb, 200, 150, 3, &png, &plen));
    CHECK(image_format_sniff(png, plen) == IMAGE_FORMAT_PNG && image_probe(png, plen, &ph, &pw) == ADDC_OK && ph == 200 &&
              pw == 150,
          "probe PNG");
    CHECK(image_decode(png, plen, NULL, 0, 0, &im, &oh, &ow, &fail) == ADDC_OK && im.h == 200 && im.w == 150 &&
              memcmp(im.data, rgb, 200 * 150 * 3) == 0,
          "PNG RGB round trip");
    free(png);
    uint8_t gray[6] = {0, 50, 100, 150, 200, 255};
    CHECK_OK(image_png_encode(gray, 2, 3, 1, &png, &plen));
    CHECK(image_decode(png, plen, NULL, 0, 0, &im, &oh, &ow, &fail) == ADDC_OK && im.h == 2 && im.w == 3 &&
              im.data[3 * 4] == 200 && im.data[3 * 4 + 1] == 200 && im.data[3 * 4 + 2] == 200,
          "PNG gray -> RGB");
    free(png);
    free(jpg);
    free(rgb);
    image_u8_free(&im);
}

static void expect_fail(const char *what, const uint8_t *buf, int64_t len, DataCounter want, const char *msg_part) {
    ImageU8 im = {0};
    int32_t oh, ow;
    DataCounter fail = DATA_COUNTER_COUNT;
    Status st = image_decode(buf, len, NULL, 0, 0, &im, &oh, &ow, &fail);
    CHECK(st != ADDC_OK && fail == want && (!msg_part || strstr(addc_error_message(), msg_part)),
          "%s: status %d counter %s message '%s'", what, st, fail < DATA_COUNTER_COUNT ? data_counter_name(fail) : "-",
          addc_error_message());
    if (want == DATA_IMAGE_TOO_LARGE) CHECK(im.cap == 0 && im.data == NULL, "%s: pixels allocated before the size check", what);
    addc_error_clear();
    image_u8_free(&im);
}

static void test_broken(void) {
    uint8_t *rgb = ref_image_rgb(64, 80, 11);
    int64_t len;
    uint8_t *jpg = ref_jpeg_encode(rgb, 64, 80, 90, 2, &len);
    expect_fail("JPEG cut in half", jpg, len / 2, DATA_BAD_JPEG, "Premature end");
    expect_fail("JPEG header only", jpg, 200, DATA_BAD_JPEG, NULL);
    expect_fail("JPEG 3 bytes", jpg, 3, DATA_BAD_JPEG, NULL);
    /* garbage between two markers: libjpeg only warns; addc must refuse */
    int64_t seg = 4 + (jpg[4] << 8 | jpg[5]); /* end of the APP0 segment after SOI */
    uint8_t *x = malloc((size_t)len + 3);
    memcpy(x, jpg, (size_t)seg);
    memcpy(x + seg, "abc", 3);
    memcpy(x + seg + 3, jpg + seg, (size_t)(len - seg));
    expect_fail("JPEG extraneous bytes", x, len + 3, DATA_BAD_JPEG, "extraneous");
    free(x);
    /* a restart marker inside the entropy data: "Corrupt JPEG data" warning */
    x = malloc((size_t)len);
    memcpy(x, jpg, (size_t)len);
    x[len / 2] = 0xFF;
    x[len / 2 + 1] = 0xD3;
    expect_fail("JPEG stray marker", x, len, DATA_BAD_JPEG, "Corrupt JPEG");
    /* SOF declaring 60000 x 60000: refused from the header */
    memcpy(x, jpg, (size_t)len);
    for (int64_t i = 2; i + 9 < len; i++)
        if (x[i] == 0xFF && x[i + 1] == 0xC0) {
            x[i + 5] = 0xEA, x[i + 6] = 0x60, x[i + 7] = 0xEA, x[i + 8] = 0x60;
            break;
        }
    expect_fail("JPEG 60000x60000", x, len, DATA_IMAGE_TOO_LARGE, "exceeds the limit");
    free(x);
    uint8_t *png;
    int64_t plen;
    CHECK_OK(image_png_encode(rgb, 64, 80, 3, &png, &plen));
    expect_fail("PNG cut in half", png, plen / 2, DATA_BAD_PNG, NULL);
    expect_fail("PNG signature only", png, 8, DATA_BAD_PNG, NULL);
    x = malloc((size_t)plen);
    memcpy(x, png, (size_t)plen);
    x[plen / 2] ^= 0x55; /* IDAT data: zlib or CRC error */
    expect_fail("PNG corrupt IDAT", x, plen, DATA_BAD_PNG, NULL);
    /* IHDR declaring 60000 x 60000 with a valid CRC */
    memcpy(x, png, (size_t)plen);
    x[16] = 0, x[17] = 0, x[18] = 0xEA, x[19] = 0x60, x[20] = 0, x[21] = 0, x[22] = 0xEA, x[23] = 0x60;
    uint32_t crc = 0xFFFFFFFFu;
    for (int i = 12; i < 29; i++) {
        crc ^= x[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    crc ^= 0xFFFFFFFFu;
    x[29] = (uint8_t)(crc >> 24), x[30] = (uint8_t)(crc >> 16), x[31] = (uint8_t)(crc >> 8), x[32] = (uint8_t)crc;
    expect_fail("PNG 60000x60000", x, plen, DATA_IMAGE_TOO_LARGE, "exceeds the limit");
    free(x);
    static const uint8_t junk[16] = "GIF89a not ours";
    expect_fail("neither JPEG nor PNG", junk, sizeof junk, DATA_BAD_JPEG, "neither");
    expect_fail("empty", junk, 0, DATA_BAD_JPEG, "neither");
    /* a small limit turns a valid image away as too large */
    ImageLimits small = {1000, 100};
    ImageU8 im = {0};
    int32_t oh, ow;
    DataCounter fail;
    CHECK(image_decode(jpg, len, &small, 0, 0, &im, &oh, &ow, &fail) != ADDC_OK && fail == DATA_IMAGE_TOO_LARGE,
          "pixel limit");
    addc_error_clear();
    image_u8_free(&im);
    free(png);
    free(jpg);
    free(rgb);
}

int main(void) {
    test_fixture_decode();
    test_resize_reference();
    test_geometry();
    test_broken();
    return test_main_end("data_image");
}
