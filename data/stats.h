/* data/stats: the counters the data pipeline keeps: what was read, and every kind of bad input
 * it met and skipped. One enum with a name table checked at compile time; counters are
 * int64 updated with relaxed atomics, so the reader thread and the decode threads can count
 * into one DataStats. data_stats_format() prints the summary users see. */
#ifndef ADDC_DATA_STATS_H
#define ADDC_DATA_STATS_H

#include <stddef.h>
#include <stdint.h>

typedef enum DataCounter {
    /* progress */
    DATA_SHARDS_OPENED = 0,  /* shards (files or pipes) opened */
    DATA_SHARDS_FINISHED,    /* shards read to their end without error */
    DATA_MEMBERS,            /* regular tar members read */
    DATA_SAMPLES_READ,       /* key groups read from tar members */
    DATA_SAMPLES_ACCEPTED,   /* groups with every required part that passed the json filters */
    DATA_SAMPLES_DECODED,    /* images decoded, transformed and delivered */
    DATA_MEMBERS_IGNORED,    /* members with an extension no one asked for (not an error) */
    /* bad input: each is counted and skipped */
    DATA_SHARD_OPEN_FAILED,  /* file missing or unreadable, not a tar, pipe would not start */
    DATA_SHARD_TRUNCATED,    /* tar stream ended or broke inside a header or member */
    DATA_PIPE_FAILED,        /* a pipe: command exited with a non-zero status */
    DATA_MEMBER_EMPTY,       /* zero-length member */
    DATA_MEMBER_TOO_LARGE,   /* declared size above the limit: skipped without reading */
    DATA_MEMBER_NOT_REGULAR, /* directory, symlink, hard link, device, fifo */
    DATA_MEMBER_BAD_NAME,    /* no extension, meta file (__x__) or name too long */
    DATA_MEMBER_DUPLICATE,   /* second member with the same key and extension (first kept) */
    DATA_KEY_NOT_ADJACENT,   /* a key seen earlier in the shard starts a new group */
    DATA_MISSING_IMAGE,      /* group without .jpg/.jpeg/.png */
    DATA_MISSING_CAPTION,    /* group without a non-empty .txt */
    DATA_BAD_CAPTION,        /* caption is not valid UTF-8 */
    DATA_BAD_JSON,           /* .json present but not valid JSON (or not an object) */
    DATA_JSON_REJECTED,      /* a json filter rejected the sample (field missing or out of range) */
    DATA_BAD_JPEG,           /* corrupt or truncated JPEG (libjpeg warnings are errors) */
    DATA_BAD_PNG,            /* corrupt or truncated PNG */
    DATA_IMAGE_TOO_LARGE,    /* declared dimensions above the limit: rejected before allocation */
    DATA_IMAGE_FILTERED,     /* short side below min_size or aspect ratio above max_aspect */
    DATA_RESUME_LOST,        /* a buffered sample of a restored state could not be read again */
    DATA_COUNTER_COUNT
} DataCounter;

#define DATA_FIRST_FAILURE DATA_SHARD_OPEN_FAILED

typedef struct DataStats {
    int64_t c[DATA_COUNTER_COUNT];
} DataStats;

const char *data_counter_name(DataCounter k);
void data_stats_count(DataStats *s, DataCounter k, int64_t n); /* atomic add */
void data_stats_snapshot(const DataStats *s, DataStats *out);  /* atomic copy */
void data_stats_merge(DataStats *into, const DataStats *add);
int64_t data_stats_failures(const DataStats *s); /* sum of the bad-input counters */
/* Writes a multi-line summary (progress, then every non-zero failure counter) into buf;
 * returns buf. */
char *data_stats_format(const DataStats *s, char *buf, size_t cap);

#endif
