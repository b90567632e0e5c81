/* tests/ref_data: references and builders for the data tests: a float64 resize + crop written
 * from Pillow's definitions without sharing code with data/image.c, a raw tar writer that can
 * produce every malformation the reader must survive, synthetic images and JPEG encoding
 * (TurboJPEG), and small file helpers. */
#ifndef ADDC_TESTS_REF_DATA_H
#define ADDC_TESTS_REF_DATA_H

#include <stdbool.h>
#include <stdint.h>

/* out (h, w, 3) = crop [top, top + h) x [left, left + w) of src (sh, sw, 3) resized to (rh, rw)
 * with filter 0 bilinear, 1 bicubic (a = -0.5), 2 lanczos3; mirrored if flip; clamped to
 * [0, 255] and mapped to v / 127.5 - 1. Direct 2D sum over the separable weights, in double. */
void ref_resize_crop_f64(const uint8_t *src, int sh, int sw, int rh, int rw, int top, int left, int h, int w,
                         bool flip, int filter, double *out);

/* A tar built in memory, member by member, with full control over the header. */
typedef struct RefTar {
    uint8_t *buf;
    int64_t len, cap;
} RefTar;

/* typeflag '0' regular, '2' symlink, '5' directory, '3' char device, '6' fifo, '1' hard link.
 * declared_size < 0 writes len; otherwise the header declares declared_size and only len data
 * bytes follow (padded to 512). */
void ref_tar_member(RefTar *t, const char *name, char typeflag, const void *data, int64_t len, int64_t declared_size);
void ref_tar_file(RefTar *t, const char *name, const void *data, int64_t len);
void ref_tar_text(RefTar *t, const char *name, const char *text);
void ref_tar_end(RefTar *t); /* two zero blocks */
void ref_tar_free(RefTar *t);

/* A smooth synthetic RGB image with some texture; different seeds give different images. */
uint8_t *ref_image_rgb(int h, int w, uint32_t seed);
/* JPEG via TurboJPEG: subsamp 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0, 3 = gray. malloc'd. */
uint8_t *ref_jpeg_encode(const uint8_t *rgb, int h, int w, int quality, int subsamp, int64_t *len);

bool ref_write_file(const char *path, const void *buf, int64_t len);
uint8_t *ref_read_file(const char *path, int64_t *len); /* malloc'd, NUL-terminated */
/* mkdtemp under $TMPDIR or /tmp; writes the path into dir (at least 256 bytes). */
bool ref_tmpdir(char *dir, const char *tag);
void ref_rmtree(const char *dir); /* removes the files in dir (one level) and dir */

/* A synthetic WebDataset for loader and shard tests: nshards shards dir/shard-NN.tar of
 * per_shard samples "sNN_III" with a JPEG (4:4:4 / 4:2:2 / 4:2:0 by index) or every fifth a
 * PNG, random size in [20, 90] px, caption "caption NN-III" and json {"punsafe", "width",
 * "height", "index"}. With bad, these are planted (needs nshards >= 6, per_shard >= 12):
 *   shard 0 sample 9: a symlink entry between its members (sample stays good)
 *   shard 1 sample 3: JPEG cut in half (header fine: fails at decode)
 *   shard 1 sample 7: no .txt
 *   shard 2 sample 6: JPEG with garbage between markers (a libjpeg warning)
 *   shard 2 sample 11: .json that is not JSON
 *   shard 3: after sample 5, a member s03_002.txt (key not adjacent: a group with no image)
 *   shard 4: the tar ends inside the last sample's image (truncated; that sample is lost)
 *   shard 5 sample 2: zero-length .jpg */
typedef struct RefDataset {
    int nshards, per_shard;
    int64_t samples;       /* samples written (nshards * per_shard) */
    int64_t loader_good;   /* samples a loader without json fields/filters delivers per epoch */
    int64_t check_good;    /* samples shards_check calls good */
    int64_t groups;        /* key groups the reader meets */
    int64_t bad_jpeg, missing_caption, missing_image, not_adjacent, truncated, empty, not_regular, bad_json;
} RefDataset;

bool ref_make_dataset(const char *dir, int nshards, int per_shard, uint32_t seed, bool bad, RefDataset *info);
/* The original size and pixels of sample (shard, index) of a ref_make_dataset set (RGB). */
uint8_t *ref_dataset_image(int shard, int index, uint32_t seed, int *h, int *w, bool *png);

/* The Python round-trip fixture, tests/ref/fixtures/wds (tests/ref/make_wds_shards.py). */
typedef struct RefWdsSample {
    char *key, *caption, *shard, *ext;
    int h, w;          /* Pillow's full decode */
    int64_t offset;    /* into pixels */
    int hh, hw;        /* Pillow's DCT-scaled decode at 1/2 (JPEG only, else 0) */
    int64_t half_offset;
    double punsafe;
    int64_t json_width, json_height;
} RefWdsSample;

typedef struct RefWdsFixture {
    RefWdsSample *s;
    int n;
    uint8_t *pixels;
    int64_t npix;
    char dir[512];
} RefWdsFixture;

bool ref_wds_fixture_load(RefWdsFixture *f);
void ref_wds_fixture_free(RefWdsFixture *f);

#endif
