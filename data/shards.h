/* data/shards: the work behind `addc shards`: convert Fashion-MNIST into WebDataset shards,
 * validate shards, and image size statistics. launch/shards.c is the command line around it.
 *
 * Fashion-MNIST comes from Debian's dataset-fashion-mnist package (idx files, gzip-compressed,
 * read through libarchive). Each image becomes a sample KEY.png (28 x 28 gray), KEY.txt
 * ("a photo of a <class>" with the class name lower-cased, "an" before a vowel) and KEY.json
 * ({"label", "class", "split", "index", "width", "height"}); KEY is the 6-digit index in its
 * split. Shards are OUT/fmnist-{train,test}-NNNNNN.tar, written to a temporary name, fsync'd and
 * renamed, so an interrupted conversion leaves no half shard under a final name. */
#ifndef ADDC_DATA_SHARDS_H
#define ADDC_DATA_SHARDS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "data/image.h"
#include "data/stats.h"
#include "data/wds.h"

#define FMNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

typedef struct FmnistOptions {
    const char *from;    /* directory of the idx .gz files (NULL: FMNIST_DEFAULT_DIR) */
    const char *out_dir; /* created if missing */
    int64_t limit;       /* at most this many samples per split (0: all) */
    int64_t per_shard;   /* samples per shard (0: 10000) */
    bool train, test;    /* splits to convert */
} FmnistOptions;

typedef struct FmnistSplitResult {
    int64_t samples, shards, bytes;
    char spec[1024]; /* brace spec of the shards written */
} FmnistSplitResult;

typedef struct FmnistResult {
    FmnistSplitResult split[2]; /* train, test */
} FmnistResult;

Status shards_fmnist(const FmnistOptions *o, FmnistResult *res);

typedef struct ShardCheckOptions {
    bool decode;          /* decode every image (else only read its header) */
    bool require_caption; /* a sample without .txt is bad */
    int64_t max_shards;   /* check at most this many shards (0: all) */
    WdsLimits limits;
    ImageLimits image_limits;
} ShardCheckOptions;

void shard_check_options_default(ShardCheckOptions *o);

/* One shard's (or all shards') findings. */
typedef struct ShardCheckResult {
    const char *url;         /* NULL in the totals */
    int64_t shards;          /* 1 per shard; the count in the totals */
    int64_t samples;         /* key groups */
    int64_t good;            /* image readable, caption present when required, json valid if present */
    int64_t bytes;           /* image + caption + json bytes of the samples */
    int64_t image_bytes;
    DataStats stats;         /* reader and image counters */
} ShardCheckResult;

typedef void (*ShardCheckFn)(const ShardCheckResult *shard, void *user);

/* Reads every shard of spec and calls fn after each (fn may be NULL). Failures are counted,
 * not returned: the status is an error only when the spec itself is unusable. */
Status shards_check(const char *spec, const ShardCheckOptions *o, ShardCheckFn fn, void *user, ShardCheckResult *total);

#define SHARD_HIST_SIDE 9
#define SHARD_HIST_ASPECT 6
#define SHARD_HIST_BYTES 8
#define SHARD_HIST_CAPTION 7

typedef struct ShardSizeStats {
    int64_t images, jpeg, png, unreadable;
    int64_t short_side[SHARD_HIST_SIDE]; /* buckets: see shard_hist_label */
    int64_t long_side[SHARD_HIST_SIDE];
    int64_t aspect[SHARD_HIST_ASPECT];   /* long / short */
    int64_t bytes[SHARD_HIST_BYTES];     /* encoded image size */
    int64_t captions;
    int64_t caption_len[SHARD_HIST_CAPTION]; /* bytes */
    int64_t min_short, max_long;
    double sum_h, sum_w;
    DataStats stats;
} ShardSizeStats;

/* Reads image headers (no decode) of at most max_samples samples (0: all). */
Status shards_size_stats(const char *spec, int64_t max_samples, ShardSizeStats *out);
/* Label of bucket i of a histogram kind: 's' side, 'a' aspect, 'b' bytes, 'c' caption length. */
const char *shard_hist_label(char kind, int i);

#endif
