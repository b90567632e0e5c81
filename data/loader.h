/* data/loader: batches of (image, caption, micro-conditioning) from WebDataset shards, with a
 * decode thread pool, a shuffle buffer, and a small state that resumes exactly.
 *
 * The stream of one rank, in order:
 *   1. Shards. Epoch e orders the expanded shard list by a Fisher-Yates permutation drawn from
 *      Philox key (seed, RNG_PURPOSE_DATA, index 0, step e) (identity order if shuffle_shards is
 *      off); rank r of w takes positions r, r + w, r + 2w, ... of that order. Every rank needs at
 *      least one shard (open fails otherwise); when w does not divide the shard count, ranks
 *      have epochs of different lengths, which is harmless because no rank ever waits for an
 *      epoch boundary.
 *   2. Samples. One reader thread streams the rank's shards one after another (data/wds.h) and
 *      checks each sample: image present and its header readable, caption present and UTF-8
 *      (unless require_caption is off), json parsed when fields or filters ask for it, json
 *      filters, size/aspect filters on the image header. A sample that fails is counted
 *      (data/stats.h) and dropped; so is a shard that cannot be opened. The accepted samples are
 *      numbered by identity: (shard = index in the expanded list, ordinal in the shard, epoch).
 *   3. Shuffle buffer of `shuffle` encoded samples. While it has empty slots a sample fills the
 *      lowest one; once full, the incoming sample with identity i picks slot
 *      j = floor(w0 * shuffle / 2^32), w0 the first 32-bit word of Philox stream (seed, DATA,
 *      index(i), step i.epoch); the sample in slot j is emitted and i takes its place. The stream never ends:
 *      after the rank's last shard of epoch e comes the first of epoch e + 1 (the buffer carries
 *      samples across the boundary), so there is no short batch and no drain.
 *   4. Decode. Emitted samples get sequence numbers 0, 1, 2, ... and go to `threads` decode
 *      threads (a pool of the loader's own, not core/parallel) through a ring of `prefetch`
 *      slots: a thread decodes (JPEG DCT-scaled to just cover the resize target), resizes so the
 *      image covers (height, width), crops (random, or centred), flips (p = 1/2 when flip is on)
 *      and writes float NHWC in [-1, 1]. Crop and flip draw words 1..3 of the sample's Philox
 *      stream, so they depend on the identity only. The batch is assembled in sequence order,
 *      whatever thread finished first: a sample that fails to decode is counted and replaced by
 *      the next one in the sequence. Batches therefore depend on (shards, seed, rank, world,
 *      config) and nothing else: not on thread count, timing or restarts.
 *   Every random draw is keyed by (seed, RNG_PURPOSE_DATA, identity or 0, epoch): there is no
 *   RNG counter to save. index(i) = ((shard + 1) * 2^24 + ordinal) mod 2^48 (ordinals above 2^24
 *   share streams with other samples, which only weakens randomness, never determinism).
 *
 * Failures never change the batch shape. Bad input is replaced by the next good sample; the
 * counters are in loader_stats(). max_consecutive_failures failures in a row (unusable samples
 * or shards at the reader, or undecodable images at the batch) is an error naming the shard and
 * the last reason, as is an epoch in which none of the rank's shards gave a usable sample. The
 * error reaches loader_next() at the batch that needs the missing sample and stays: later calls
 * return it again. (The counts of failures in a row restart at a resume.)
 *
 * Exact resume. loader_state() returns, between two loader_next() calls, the state after the
 * last batch returned: reader cursor (epoch, position in the rank's shard order, samples of that
 * shard read), samples consumed, batches, and the identity of the sample in every shuffle
 * buffer slot. (The threads run ahead of the consumer; each emitted sample carries the change
 * it made to the buffer and cursor, and the consumer applies those changes as it takes samples,
 * so the state is exact at the batch boundary without stopping anything.) loader_open() with
 * that state rebuilds the buffer by reading the shards that still hold a buffered sample, each
 * once and only up to the last buffered ordinal (member data of other samples is skipped, by
 * seeking in files; pipes are read through), puts every sample back in its slot, fast-forwards
 * the cursor shard past the samples already read (headers only), and continues. The restored
 * loader yields byte for byte the batches the uninterrupted one would have, with any number of
 * decode threads, any prefetch depth and any batch size (the state counts samples, not
 * batches). Cost of the choice (buffer identities in the state, rather than replay): the state
 * is a fixed 12 bytes per slot (sizeof(LoaderState) is about 96 KiB at LOADER_SHUFFLE_MAX);
 * the restart re-reads every shard that still has a sample in the buffer: a sample survives k
 * later insertions with probability (1 - 1/shuffle)^k, so with shard size n >> shuffle this is
 * almost always the current shard and the one before, and never more than `shuffle` shards.
 * A state restores only into a loader with the same shard list, seed, rank, world, shuffle size
 * and sample filters (checked: ADDC_ERR_INVALID otherwise); to change the world size, start the
 * new run at an epoch boundary with start_epoch. If a buffered sample cannot be read again (a
 * shard changed or vanished), its slot is refilled from the stream and DATA_RESUME_LOST counts
 * it: the run continues, no longer bit-exact.
 *
 * Memory: shuffle x the encoded sample size (LAION JPEGs ~ 50-150 KB: 1000 slots ~ 100 MB), plus
 * prefetch x height x width x 12 bytes of decoded floats, plus one batch. */
#ifndef ADDC_DATA_LOADER_H
#define ADDC_DATA_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "data/image.h"
#include "data/stats.h"
#include "data/wds.h"

#define LOADER_SHUFFLE_MAX 8192
#define LOADER_JSON_FIELDS_MAX 8
#define LOADER_FILTERS_MAX 8
#define LOADER_FIELD_NAME_MAX 64

typedef enum CropMode {
    CROP_CENTER = 0, /* top = (rh - height) / 2, left = (rw - width) / 2, rounded down */
    CROP_RANDOM,     /* uniform over every position */
} CropMode;

/* Keeps a sample only if its json has `field` as a number in [min, max]. */
typedef struct LoaderFilter {
    char field[LOADER_FIELD_NAME_MAX];
    double min, max;
} LoaderFilter;

typedef struct LoaderConfig {
    const char *shards;  /* shard spec (data/wds.h) */
    int64_t batch_size;
    int32_t height, width; /* target size (512 x 512 for ADD-XL) */
    CropMode crop;
    bool flip;           /* random horizontal flip */
    ResizeFilter filter;
    bool dct_scaling;    /* let libjpeg decode at a reduced size that still covers the target */
    uint64_t seed;
    int32_t rank, world;
    int32_t threads;     /* decode threads (0: online CPUs) */
    int32_t prefetch;    /* ring slots: samples decoded ahead (0: 2 * batch_size + threads) */
    int32_t shuffle;     /* shuffle buffer slots (0: no shuffle buffer) */
    bool shuffle_shards; /* per-epoch shard permutation */
    uint32_t start_epoch;
    bool require_caption;
    int32_t min_size;    /* drop images whose original short side is smaller (0: keep) */
    double max_aspect;   /* drop images with long / short side above this (0: keep) */
    const char *json_fields[LOADER_JSON_FIELDS_MAX]; /* numbers copied into Batch.json */
    int32_t n_json_fields;
    LoaderFilter filters[LOADER_FILTERS_MAX];
    int32_t n_filters;
    int32_t max_consecutive_failures;
    WdsLimits limits;
    ImageLimits image_limits;
} LoaderConfig;

/* Defaults: batch 1, 512 x 512, center crop, no flip, bilinear, DCT scaling on, seed 0, rank 0
 * of 1, threads 0, prefetch 0, shuffle 1000, shard shuffling on, captions required, no filters,
 * 100 consecutive failures, default member and image limits. */
void loader_config_default(LoaderConfig *cfg);

typedef struct LoaderSampleId {
    uint32_t shard;   /* index in the expanded shard list */
    uint32_t ordinal; /* sample position in the shard */
    uint32_t epoch;   /* epoch in which it was read */
} LoaderSampleId;

#define LOADER_STATE_MAGIC 0x57444441u /* "ADDW" */
#define LOADER_STATE_VERSION 1u

/* Plain old data: store it as bytes. */
typedef struct LoaderState {
    uint32_t magic, version;
    uint64_t seed;
    uint64_t list_hash;   /* the expanded shard list */
    uint64_t stream_hash; /* settings that change which samples are accepted */
    uint32_t nshards;
    int32_t rank, world;
    int32_t shuffle;
    uint32_t epoch;         /* epoch the reader is in */
    uint32_t shard_cursor;  /* position in the rank's shard order for that epoch */
    uint32_t sample_cursor; /* samples of that shard already read */
    uint32_t n_buffered;    /* filled buffer slots (0 or shuffle) */
    uint64_t samples;       /* emitted samples consumed by batches (good or failed) */
    uint64_t batches;       /* batches returned */
    LoaderSampleId buffer[LOADER_SHUFFLE_MAX]; /* slot -> sample, [0, n_buffered) */
} LoaderState;

typedef struct Batch {
    int64_t n;                /* batch size B */
    int32_t h, w;             /* target size */
    float *images;            /* (B, H, W, 3) in [-1, 1] */
    char **captions;          /* (B) UTF-8, NUL-terminated */
    char **keys;              /* (B) sample keys */
    int32_t *original_size;   /* (B, 2) height, width of the image file */
    int32_t *crop_top_left;   /* (B, 2) crop offset in the resized image (before any flip) */
    int32_t *target_size;     /* (B, 2) height, width */
    uint8_t *flipped;         /* (B) */
    double *json;             /* (B, n_json_fields) NaN when absent or not a number */
    int32_t n_json_fields;
    LoaderSampleId *ids;      /* (B) */
    uint64_t index;           /* batches returned before this one */
} Batch;

typedef struct Loader Loader;

/* Expands the shards, checks the config (and the state, when resume is not NULL) and starts
 * the reader and decode threads. */
Status loader_open(const LoaderConfig *cfg, const LoaderState *resume, Loader **out);
/* The next batch; *out points into the loader and stays valid until the next call. Fails only
 * for the errors described above (the message says which shard and why) or out of memory. */
Status loader_next(Loader *l, Batch **out);
/* The state after the last batch returned (between loader_next calls). */
void loader_state(const Loader *l, LoaderState *st);
void loader_stats(const Loader *l, DataStats *out);
int64_t loader_shard_count(const Loader *l);
const char *loader_shard_url(const Loader *l, uint32_t shard);
void loader_free(Loader *l);

#endif
