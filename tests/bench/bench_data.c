/* tests/bench/bench_data: decode + resize + crop to SIZE^2 (float NHWC in [-1, 1]) of the JPEG
 * shards given, on one core, with and without DCT scaling; then the whole loader (reader thread,
 * shuffle buffer, N decode threads) in images/s. tests/bench/run_data.sh runs it next to the
 * Python peer (bench_data.py) and prints the ratio.
 * The one-core rates use the thread's CPU time, best of 5 passes, so a busy machine distorts them
 * less; the loader rate is wall-clock. Usage: bench_data SHARDS [SIZE] [THREADS] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/image.h"
#include "data/loader.h"
#include "data/wds.h"

static double clock_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double now_s(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu_s(void) { return clock_s(CLOCK_THREAD_CPUTIME_ID); } /* per-core rate, robust to a busy machine */

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_data SHARDS [SIZE] [THREADS]\n");
        return 2;
    }
    int size = argc > 2 ? atoi(argv[2]) : 512, threads = argc > 3 ? atoi(argv[3]) : 2;
    ShardList list;
    if (shard_list_expand(argv[1], &list) != ADDC_OK) {
        fprintf(stderr, "bench_data: %s\n", addc_error_message());
        return 1;
    }
    int n = 0, cap = 1024;
    uint8_t **img = malloc(sizeof *img * (size_t)cap);
    int64_t *len = malloc(sizeof *len * (size_t)cap);
    WdsSample s = {0};
    for (int64_t i = 0; i < list.n; i++) {
        WdsReader *r;
        if (wds_reader_open(list.urls[i], NULL, NULL, &r) != ADDC_OK) continue;
        while (n < cap && wds_reader_next(r, &s, true) == 1) {
            if (!s.image.loaded) continue;
            img[n] = malloc((size_t)s.image.len);
            memcpy(img[n], s.image.data, (size_t)s.image.len);
            len[n++] = s.image.len;
        }
        wds_reader_close(r);
    }
    wds_sample_free(&s);
    ImageU8 im = {0};
    ResizeScratch rs = {0};
    float *out = malloc(sizeof(float) * (size_t)size * size * 3);
    for (int dct = 1; dct >= 0; dct--) {
        double best = 1e30;
        int ok = 0;
        for (int rep = 0; rep < 5; rep++) {
        double t0 = cpu_s();
        ok = 0;
        for (int i = 0; i < n; i++) {
            int32_t h, w, rh, rw;
            if (image_probe(img[i], len[i], &h, &w) != ADDC_OK) continue;
            image_cover_size(h, w, size, size, &rh, &rw);
            DataCounter fail;
            if (image_decode(img[i], len[i], NULL, dct ? rh : 0, dct ? rw : 0, &im, &h, &w, &fail) != ADDC_OK) continue;
            ResizeCrop rc = {rh, rw, (rh - size) / 2, (rw - size) / 2, size, size, false, RESIZE_BILINEAR};
            ok += image_resize_crop(im.data, im.h, im.w, &rc, out, &rs) == ADDC_OK;
        }
        double dt = cpu_s() - t0;
        if (dt < best) best = dt;
        }
        double dt = best;
        printf("addc %s: %d images, %.1f images/s on one core (CPU time)\n", dct ? "with DCT scaling" : "full decode", ok, ok / dt);
    }
    LoaderConfig c;
    loader_config_default(&c);
    c.shards = argv[1];
    c.batch_size = 16;
    c.height = c.width = size;
    c.threads = threads;
    c.shuffle = 64;
    Loader *l;
    if (loader_open(&c, NULL, &l) == ADDC_OK) {
        Batch *b;
        loader_next(l, &b); /* warm: fills the shuffle buffer */
        int batches = (2 * n + 15) / 16;
        double t0 = now_s(), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < batches; i++)
            if (loader_next(l, &b) != ADDC_OK) break;
        double dt = now_s() - t0, dc = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        printf("addc loader, %d decode threads: %.1f images/s wall clock, %.2f ms of CPU per image (all threads: "
               "reading, shuffling, decoding, batching)\n",
               threads, batches * 16 / dt, dc / (batches * 16) * 1e3);
        loader_free(l);
    }
    for (int i = 0; i < n; i++) free(img[i]);
    free(img);
    free(len);
    free(out);
    image_u8_free(&im);
    resize_scratch_free(&rs);
    shard_list_free(&list);
    return 0;
}
