/* tests/unit/test_data_loader: the loader on a synthetic dataset with every kind of bad input
 * planted (tests/ref_data.h: 6 shards x 20 samples).
 *
 * - Thread count and prefetch depth do not change the batches (1 thread / 1 slot vs 4 threads /
 *   37 slots, byte for byte).
 * - Exact resume: a reference run of 40 batches; for k in {0, 1, 7, 23 (past an epoch
 *   boundary)}: k batches with 3 threads, save the state (copied as bytes), free, restore into a
 *   fresh loader with 1 thread and another prefetch depth: batches k..39 equal the reference byte
 *   for byte, and the final states are equal. Negative controls: a fresh loader without the
 *   state, and the state with its shuffle buffer dropped, must both differ. A restore with
 *   another batch size continues the same sample stream.
 * - No sample lost or repeated: over 3 epochs every usable sample of epoch 0 is delivered
 *   exactly once; batches always have B samples; bad samples counted.
 * - Ranks: world 2 splits each epoch's shards into disjoint halves that cover every shard.
 * - Pixels and micro-conditioning against the float64 reference (DCT scaling off, center and
 *   random crops, flips), json fields and filters.
 * - Errors: too many consecutive failures names the shard; an epoch with no usable sample; a
 *   state from another seed or world is refused. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/loader.h"
#include "tests/ref_data.h"
#include "tests/test_util.h"

static char g_dir[256];
static char g_spec[600];
static RefDataset g_ds;

static void base_config(LoaderConfig *c) {
    loader_config_default(c);
    c->shards = g_spec;
    c->batch_size = 5;
    c->height = c->width = 24;
    c->crop = CROP_RANDOM;
    c->flip = true;
    c->seed = 7;
    c->shuffle = 16;
    c->threads = 2;
}

/* A batch copied out of the loader, for byte comparisons. */
typedef struct SavedBatch {
    int64_t n;
    float *images;
    char text[4096]; /* captions and keys */
    int32_t meta[64 * 7];
    LoaderSampleId ids[64];
} SavedBatch;

static void batch_save(const Batch *b, SavedBatch *s) {
    s->n = b->n;
    size_t px = (size_t)b->n * b->h * b->w * 3;
    s->images = malloc(px * sizeof(float));
    memcpy(s->images, b->images, px * sizeof(float));
    memset(s->text, 0, sizeof s->text);
    size_t w = 0;
    for (int64_t i = 0; i < b->n; i++) w += (size_t)snprintf(s->text + w, sizeof s->text - w, "%s|%s|", b->captions[i], b->keys[i]);
    memset(s->meta, 0, sizeof s->meta);
    for (int64_t i = 0; i < b->n && i < 64; i++) {
        int32_t *m = s->meta + 7 * i;
        m[0] = b->original_size[2 * i], m[1] = b->original_size[2 * i + 1];
        m[2] = b->crop_top_left[2 * i], m[3] = b->crop_top_left[2 * i + 1];
        m[4] = b->target_size[2 * i], m[5] = b->target_size[2 * i + 1];
        m[6] = b->flipped[i];
        s->ids[i] = b->ids[i];
    }
}

static bool batch_equal(const SavedBatch *a, const SavedBatch *b, int h, int w) {
    return a->n == b->n && !memcmp(a->images, b->images, (size_t)a->n * h * w * 3 * sizeof(float)) &&
           !strcmp(a->text, b->text) && !memcmp(a->meta, b->meta, sizeof a->meta) &&
           !memcmp(a->ids, b->ids, sizeof(LoaderSampleId) * (size_t)a->n);
}

/* Runs n batches from a loader (opened from state if given); saves them into out[0 .. n). */
static Status run(const LoaderConfig *c, const LoaderState *st, int n, SavedBatch *out, LoaderState *final, DataStats *stats) {
    Loader *l;
    TRY(loader_open(c, st, &l));
    Status s = ADDC_OK;
    for (int i = 0; i < n && s == ADDC_OK; i++) {
        Batch *b;
        s = loader_next(l, &b);
        if (s == ADDC_OK) {
            CHECK(b->n == c->batch_size, "batch %d has %lld samples", i, (long long)b->n);
            batch_save(b, &out[i]);
        }
    }
    if (final) loader_state(l, final);
    if (stats) loader_stats(l, stats);
    loader_free(l);
    return s;
}

static void free_batches(SavedBatch *b, int n) {
    for (int i = 0; i < n; i++) {
        free(b[i].images);
        b[i].images = NULL;
    }
}

static void test_threads(void) {
    LoaderConfig c;
    base_config(&c);
    SavedBatch a[30], b[30];
    c.threads = 1;
    c.prefetch = 1;
    CHECK_OK(run(&c, NULL, 30, a, NULL, NULL));
    c.threads = 4;
    c.prefetch = 37;
    CHECK_OK(run(&c, NULL, 30, b, NULL, NULL));
    int same = 0;
    for (int i = 0; i < 30; i++) same += batch_equal(&a[i], &b[i], c.height, c.width);
    CHECK(same == 30, "1 thread vs 4 threads: %d of 30 batches equal", same);
    printf("threads: 30 batches equal byte for byte with 1 thread / 1 slot and 4 threads / 37 slots: %s\n",
           same == 30 ? "yes" : "NO");
    free_batches(a, 30);
    free_batches(b, 30);
}

/* Reference run of n batches, then for every k in ks: k batches with 3 threads, state saved as
 * bytes, restore with 1 thread and another prefetch depth, the rest compared. */
static void resume_sweep(LoaderConfig c, const char *label, const int *ks, int nk, int n, bool print_each) {
    SavedBatch *ref = calloc((size_t)n, sizeof *ref), *first = calloc((size_t)n, sizeof *first),
               *rest = calloc((size_t)n, sizeof *rest);
    LoaderState *ref_final = malloc(sizeof *ref_final), *st = malloc(sizeof *st), *fin = malloc(sizeof *fin);
    unsigned char *bytes = malloc(sizeof *st);
    c.threads = 2;
    CHECK_OK(run(&c, NULL, n, ref, ref_final, NULL));
    int runs_ok = 0;
    for (int t = 0; t < nk; t++) {
        int k = ks[t];
        c.threads = 3;
        c.prefetch = 0;
        CHECK_OK(run(&c, NULL, k, first, st, NULL));
        memcpy(bytes, st, sizeof *st); /* what a checkpoint would store */
        int prefix = 0;
        for (int i = 0; i < k; i++) prefix += batch_equal(&first[i], &ref[i], c.height, c.width);
        CHECK(prefix == k, "%s k=%d: the first batches already differ (%d of %d)", label, k, prefix, k);
        memset(st, 0xAB, sizeof *st);
        memcpy(st, bytes, sizeof *st);
        c.threads = 1;
        c.prefetch = 5;
        CHECK_OK(run(&c, st, n - k, rest, fin, NULL));
        int same = 0;
        for (int i = k; i < n; i++) same += batch_equal(&rest[i - k], &ref[i], c.height, c.width);
        bool fin_same = !memcmp(fin, ref_final, sizeof *fin);
        CHECK(same == n - k && fin_same,
              "%s: resume after %d batches (epoch %u, shard cursor %u, sample cursor %u, %llu samples): %d of %d batches "
              "equal, final state %s",
              label, k, st->epoch, st->shard_cursor, st->sample_cursor, (unsigned long long)st->samples, same, n - k,
              fin_same ? "equal" : "differs");
        runs_ok += same == n - k && fin_same;
        if (print_each)
            printf("%s: resume after %2d batches (epoch %u, %3llu samples, %2u buffered): %d/%d later batches identical, "
                   "final state %s\n",
                   label, k, st->epoch, (unsigned long long)st->samples, st->n_buffered, same, n - k,
                   fin_same ? "identical" : "DIFFERS");
        free_batches(first, k);
        free_batches(rest, n - k);
    }
    if (!print_each) printf("%s: %d of %d resume points give identical later batches and final state\n", label, runs_ok, nk);
    free_batches(ref, n);
    free(ref);
    free(first);
    free(rest);
    free(ref_final);
    free(st);
    free(fin);
    free(bytes);
}

static void test_resume(void) {
    enum { N = 40 };
    LoaderConfig c;
    base_config(&c);
    static const int ks[] = {0, 1, 7, 23};
    resume_sweep(c, "shuffle 16", ks, 4, N, true);
    int all[N];
    for (int k = 0; k < N; k++) all[k] = k;
    resume_sweep(c, "shuffle 16, every k", all, N, N, false);
    LoaderConfig c2 = c;
    c2.shuffle = 0;
    resume_sweep(c2, "no shuffle buffer", all, N, N, false);
    LoaderConfig c3 = c;
    c3.shuffle = 64;
    c3.world = 2;
    c3.rank = 1;
    c3.batch_size = 3;
    resume_sweep(c3, "shuffle 64, rank 1 of 2, batch 3", all, N, N, false);
    static char pipe_spec[700];
    snprintf(pipe_spec, sizeof pipe_spec, "pipe:cat %s/shard-{00..05}.tar", g_dir);
    LoaderConfig c4 = c;
    c4.shards = pipe_spec;
    static const int kp[] = {3, 17, 30};
    resume_sweep(c4, "pipe:cat shards", kp, 3, N, false);

    /* negative controls */
    SavedBatch ref[N], rest[N], first[N];
    LoaderState *st = malloc(sizeof *st);
    c.threads = 2;
    CHECK_OK(run(&c, NULL, N, ref, NULL, NULL));
    int neg_diff = 0, neg_total = 0, drop_diff = 0;
    for (int t = 1; t < 4; t++) {
        int k = ks[t];
        CHECK_OK(run(&c, NULL, k, first, st, NULL));
        free_batches(first, k);
        run(&c, NULL, N - k, rest, NULL, NULL); /* restore disabled */
        for (int i = k; i < N; i++) {
            neg_total++;
            neg_diff += !batch_equal(&rest[i - k], &ref[i], c.height, c.width);
        }
        free_batches(rest, N - k);
        st->n_buffered = 0; /* the cursor without the shuffle buffer */
        run(&c, st, 1, rest, NULL, NULL);
        drop_diff += !batch_equal(&rest[0], &ref[k], c.height, c.width);
        free_batches(rest, 1);
    }
    CHECK(neg_diff >= neg_total - 1 && neg_total > 0, "negative control: only %d of %d batches differ without the state",
          neg_diff, neg_total);
    CHECK(drop_diff == 3, "dropping the shuffle buffer from the state must change the next batch (%d of 3)", drop_diff);
    printf("negative control: without the state %d of %d batches differ; without the buffer identities %d of 3 next "
           "batches differ\n",
           neg_diff, neg_total, drop_diff);

    /* another batch size after the restore continues the same sample stream */
    CHECK_OK(run(&c, NULL, 7, first, st, NULL));
    c.batch_size = 7;
    CHECK_OK(run(&c, st, 5, rest, NULL, NULL));
    int same = 0, total = 0;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 7; j++) {
            int64_t g = 35 + 7 * i + j; /* global sample position */
            const LoaderSampleId *a = &rest[i].ids[j], *b = &ref[g / 5].ids[g % 5];
            total++;
            same += a->shard == b->shard && a->ordinal == b->ordinal && a->epoch == b->epoch;
        }
    CHECK(same == total, "batch size 5 -> 7 after resume: %d of %d samples in place", same, total);
    free_batches(first, 7);
    free_batches(rest, 5);
    free_batches(ref, N);
    free(st);
}

static void test_coverage(void) {
    LoaderConfig c;
    base_config(&c);
    int epochs = 3;
    int nb = (int)(epochs * g_ds.loader_good / c.batch_size);
    Loader *l;
    CHECK_OK(loader_open(&c, NULL, &l));
    int64_t stride = g_ds.per_shard + 8; /* ordinals go past per_shard when a key comes back */
    char *seen = calloc((size_t)(g_ds.nshards * stride), 1);
    int dup = 0, shape_ok = 1;
    uint32_t max_epoch = 0;
    for (int i = 0; i < nb; i++) {
        Batch *b;
        if (loader_next(l, &b) != ADDC_OK) {
            CHECK(0, "batch %d: %s", i, addc_error_message());
            break;
        }
        shape_ok &= b->n == 5 && b->h == 24 && b->w == 24;
        for (int64_t j = 0; j < b->n; j++) {
            LoaderSampleId id = b->ids[j];
            if (id.epoch > max_epoch) max_epoch = id.epoch;
            if (id.epoch != 0) continue;
            char *s = &seen[id.shard * stride + id.ordinal];
            dup += *s;
            *s = 1;
            float lo = 1, hi = -1;
            for (int64_t k = 0; k < 24 * 24 * 3; k++) {
                float v = b->images[j * 24 * 24 * 3 + k];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
            }
            if (lo < -1.0f || hi > 1.0f) shape_ok = 0;
        }
    }
    int64_t delivered = 0;
    for (int64_t i = 0; i < g_ds.nshards * stride; i++) delivered += seen[i];
    DataStats st;
    loader_stats(l, &st);
    loader_free(l);
    CHECK(shape_ok, "every batch is (5, 24, 24, 3) in [-1, 1]");
    CHECK(dup == 0 && delivered == g_ds.loader_good, "epoch 0: %lld of %lld usable samples delivered, %d twice",
          (long long)delivered, (long long)g_ds.loader_good, dup);
    CHECK(max_epoch >= 2, "reached epoch %u", max_epoch);
    CHECK(st.c[DATA_BAD_JPEG] >= 2 && st.c[DATA_MISSING_CAPTION] >= 1 && st.c[DATA_MISSING_IMAGE] >= 2 &&
              st.c[DATA_KEY_NOT_ADJACENT] >= 1 && st.c[DATA_SHARD_TRUNCATED] >= 1 && st.c[DATA_MEMBER_EMPTY] >= 1 &&
              st.c[DATA_MEMBER_NOT_REGULAR] >= 1,
          "bad input counted");
    char buf[4096];
    printf("coverage: %d batches over 3 epochs, epoch 0 delivered %lld of %lld usable samples once each; loader stats:\n%s",
           nb, (long long)delivered, (long long)g_ds.loader_good, data_stats_format(&st, buf, sizeof buf));
    free(seen);
}

static void test_ranks(void) {
    LoaderConfig c;
    base_config(&c);
    c.world = 2;
    c.shuffle = 0;
    int owner[64];
    for (int i = 0; i < 64; i++) owner[i] = -1;
    int conflict = 0;
    for (int r = 0; r < 2; r++) {
        c.rank = r;
        Loader *l;
        CHECK_OK(loader_open(&c, NULL, &l));
        for (int i = 0; i < 16; i++) {
            Batch *b;
            if (loader_next(l, &b) != ADDC_OK) break;
            for (int64_t j = 0; j < b->n; j++) {
                if (b->ids[j].epoch != 0) continue;
                int s = (int)b->ids[j].shard;
                if (owner[s] >= 0 && owner[s] != r) conflict++;
                owner[s] = r;
            }
        }
        loader_free(l);
    }
    int covered = 0, r0 = 0;
    for (int s = 0; s < g_ds.nshards; s++) {
        covered += owner[s] >= 0;
        r0 += owner[s] == 0;
    }
    CHECK(conflict == 0 && covered == g_ds.nshards && r0 == g_ds.nshards / 2,
          "world 2: %d shards in both ranks, %d of %d covered, %d on rank 0", conflict, covered, g_ds.nshards, r0);
    printf("ranks: epoch 0 shards split %d / %d between 2 ranks, none shared\n", r0, covered - r0);
    c.world = 7; /* 6 shards cannot feed 7 ranks */
    c.rank = 0;
    Loader *l;
    CHECK(loader_open(&c, NULL, &l) == ADDC_ERR_INVALID && strstr(addc_error_message(), "every rank needs"),
          "too many ranks: %s", addc_error_message());
    addc_error_clear();
}

static void test_pixels(void) {
    LoaderConfig c;
    base_config(&c);
    c.dct_scaling = false;
    c.filter = RESIZE_BICUBIC;
    c.height = 20;
    c.width = 28;
    c.shuffle = 0;
    c.shuffle_shards = false;
    c.json_fields[0] = "punsafe";
    c.json_fields[1] = "width";
    c.n_json_fields = 2;
    double worst = 0;
    int checked = 0, flips = 0;
    for (int mode = 0; mode < 2; mode++) {
        c.crop = mode ? CROP_RANDOM : CROP_CENTER;
        c.flip = mode == 1;
        Loader *l;
        CHECK_OK(loader_open(&c, NULL, &l));
        for (int bi = 0; bi < 3; bi++) {
            Batch *b;
            if (loader_next(l, &b) != ADDC_OK) break;
            for (int64_t j = 0; j < b->n; j++) {
                LoaderSampleId id = b->ids[j];
                int h, w;
                bool png;
                uint8_t *rgb = ref_dataset_image((int)id.shard, (int)id.ordinal, 0, &h, &w, &png);
                int32_t rh, rw;
                image_cover_size(h, w, c.height, c.width, &rh, &rw);
                int top = b->crop_top_left[2 * j], left = b->crop_top_left[2 * j + 1];
                CHECK(b->original_size[2 * j] == h && b->original_size[2 * j + 1] == w && b->target_size[2 * j] == 20 &&
                          b->target_size[2 * j + 1] == 28,
                      "sizes of %s", b->keys[j]);
                CHECK(top >= 0 && left >= 0 && top + 20 <= rh && left + 28 <= rw, "crop inside");
                if (!mode) CHECK(top == (rh - 20) / 2 && left == (rw - 28) / 2, "center crop");
                CHECK(b->json[2 * j + 1] == w && b->json[2 * j] >= 0 && b->json[2 * j] < 1, "json fields of %s", b->keys[j]);
                /* the stored file is JPEG or PNG of rgb: decode it the same way the loader does */
                char path[700];
                snprintf(path, sizeof path, "%s/shard-%02u.tar", g_dir, id.shard);
                WdsReader *r;
                WdsSample s = {0};
                if (wds_reader_open(path, NULL, NULL, &r) == ADDC_OK) {
                    while (wds_reader_next(r, &s, true) == 1 && s.ordinal != id.ordinal) {
                    }
                    wds_reader_close(r);
                }
                ImageU8 im = {0};
                int32_t oh, ow;
                DataCounter fail;
                if (image_decode(s.image.data, s.image.len, NULL, 0, 0, &im, &oh, &ow, &fail) == ADDC_OK) {
                    double *ref = malloc(sizeof(double) * 20 * 28 * 3);
                    ref_resize_crop_f64(im.data, im.h, im.w, rh, rw, top, left, 20, 28, b->flipped[j], 1, ref);
                    double err = 0;
                    for (int k = 0; k < 20 * 28 * 3; k++) err = fmax(err, fabs(b->images[j * 20 * 28 * 3 + k] - ref[k]));
                    CHECK(err < 1e-4, "%s: pixels differ from the reference by %g", b->keys[j], err);
                    worst = fmax(worst, err);
                    checked++;
                    flips += b->flipped[j];
                    free(ref);
                }
                image_u8_free(&im);
                wds_sample_free(&s);
                free(rgb);
            }
        }
        loader_free(l);
    }
    CHECK(flips > 0 && flips < 15, "random flips: %d of 15", flips);
    printf("pixels: %d samples (center and random crops, %d flipped) match decode + float64 resize/crop within %.2e\n",
           checked, flips, worst);
    /* a json filter */
    c.n_filters = 1;
    snprintf(c.filters[0].field, sizeof c.filters[0].field, "punsafe");
    c.filters[0].min = 0;
    c.filters[0].max = 0.3;
    Loader *l;
    CHECK_OK(loader_open(&c, NULL, &l));
    int ok = 1;
    for (int i = 0; i < 6; i++) {
        Batch *b;
        if (loader_next(l, &b) != ADDC_OK) break;
        for (int64_t j = 0; j < b->n; j++) ok &= b->json[2 * j] <= 0.3;
    }
    DataStats st;
    loader_stats(l, &st);
    loader_free(l);
    CHECK(ok && st.c[DATA_JSON_REJECTED] > 0, "filter punsafe <= 0.3: all kept samples pass, %lld rejected",
          (long long)st.c[DATA_JSON_REJECTED]);
}

static void test_errors(void) {
    char dir[256];
    CHECK(ref_tmpdir(dir, "loadererr"), "tmpdir");
    /* shards whose samples all lack captions */
    for (int s = 0; s < 2; s++) {
        RefTar t = {0};
        uint8_t *rgb = ref_image_rgb(64, 64, 3);
        int64_t len;
        uint8_t *jpg = ref_jpeg_encode(rgb, 64, 64, 95, 0, &len);
        for (int i = 0; i < 10; i++) {
            char name[32];
            snprintf(name, sizeof name, "k%d.jpg", i);
            ref_tar_file(&t, name, jpg, s == 0 ? len : len * 3 / 4); /* shard 1: every JPEG truncated */
            if (s == 1) {
                snprintf(name, sizeof name, "k%d.txt", i);
                ref_tar_text(&t, name, "caption");
            }
        }
        ref_tar_end(&t);
        char path[600];
        snprintf(path, sizeof path, "%s/%s.tar", dir, s == 0 ? "nocaption" : "badjpeg");
        ref_write_file(path, t.buf, t.len);
        ref_tar_free(&t);
        free(jpg);
        free(rgb);
    }
    LoaderConfig c;
    base_config(&c);
    char spec[700];
    snprintf(spec, sizeof spec, "%s/nocaption.tar", dir);
    c.shards = spec;
    c.max_consecutive_failures = 5;
    Loader *l;
    Batch *b;
    CHECK_OK(loader_open(&c, NULL, &l));
    Status st = loader_next(l, &b);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "nocaption.tar") && strstr(addc_error_message(), "in a row") &&
              strstr(addc_error_message(), "no caption"),
          "consecutive failures: %s", addc_error_message());
    addc_error_clear();
    CHECK(loader_next(l, &b) == ADDC_ERR_FORMAT, "the error is sticky");
    addc_error_clear();
    loader_free(l);
    snprintf(spec, sizeof spec, "%s/badjpeg.tar", dir);
    CHECK_OK(loader_open(&c, NULL, &l));
    st = loader_next(l, &b);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "could not be decoded") &&
              strstr(addc_error_message(), "badjpeg.tar") && strstr(addc_error_message(), "Premature end"),
          "consecutive decode failures: %s", addc_error_message());
    addc_error_clear();
    loader_free(l);
    snprintf(spec, sizeof spec, "%s/missing-{0..2}.tar", dir);
    c.max_consecutive_failures = 1000;
    CHECK_OK(loader_open(&c, NULL, &l));
    st = loader_next(l, &b);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "no usable sample") && strstr(addc_error_message(), "missing-"),
          "empty epoch: %s", addc_error_message());
    addc_error_clear();
    loader_free(l);
    /* states that do not fit */
    base_config(&c);
    LoaderState *s = malloc(sizeof *s);
    SavedBatch one[1];
    CHECK_OK(run(&c, NULL, 1, one, s, NULL));
    free_batches(one, 1);
    c.seed = 8;
    CHECK(loader_open(&c, s, &l) == ADDC_ERR_INVALID && strstr(addc_error_message(), "seed"), "other seed: %s",
          addc_error_message());
    addc_error_clear();
    c.seed = 7;
    c.world = 2;
    CHECK(loader_open(&c, s, &l) == ADDC_ERR_INVALID && strstr(addc_error_message(), "rank 0 of 1"), "other world: %s",
          addc_error_message());
    addc_error_clear();
    c.world = 1;
    c.shuffle = 8;
    CHECK(loader_open(&c, s, &l) == ADDC_ERR_INVALID, "other shuffle size");
    addc_error_clear();
    c.shuffle = 16;
    s->magic = 0;
    CHECK(loader_open(&c, s, &l) == ADDC_ERR_INVALID && strstr(addc_error_message(), "not a loader state"), "bad magic");
    addc_error_clear();
    free(s);
    c.batch_size = 0;
    CHECK(loader_open(&c, NULL, &l) == ADDC_ERR_INVALID, "batch size 0");
    addc_error_clear();
    ref_rmtree(dir);
}

int main(void) {
    if (!ref_tmpdir(g_dir, "loader") || !ref_make_dataset(g_dir, 6, 20, 0, true, &g_ds)) {
        fprintf(stderr, "cannot build the test dataset\n");
        return 1;
    }
    snprintf(g_spec, sizeof g_spec, "%s/shard-{00..05}.tar", g_dir);
    test_threads();
    test_resume();
    test_coverage();
    test_ranks();
    test_pixels();
    test_errors();
    ref_rmtree(g_dir);
    return test_main_end("data_loader");
}
