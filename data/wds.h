/* data/wds: WebDataset shards: shard lists, a streaming tar reader that groups members into
 * samples, and a tar writer.
 *
 * Shard specs (shard_list_expand). A spec is one or more parts joined by "::" (as webdataset's
 * expand_urls). Each part is
 *   - a brace pattern, expanded exactly as Python's braceexpand does (webdataset uses it):
 *     integer ranges {0..9}, {000..255} (zero-padded when either end has a leading zero),
 *     {1..9..2} with a step, descending {9..0}, letter ranges {a..e}, lists {a,b,,c}, nesting,
 *     backslash escapes; braces that are neither a range nor a list stay literal;
 *   - "pipe:CMD": CMD runs under /bin/sh and its standard output is read as the tar (braces
 *     in CMD expand like any other: "pipe:aws s3 cp s3://b/{000..999}.tar -" is 1000 shards);
 *   - "@FILE": FILE lists specs, one per line (blank lines and lines starting with # skipped);
 *   - a directory: every *.tar, *.tar.gz, *.tgz in it, sorted by name;
 *   - anything else is a path ("file:" prefix allowed). Paths are not checked here: a missing
 *     shard is counted (DATA_SHARD_OPEN_FAILED) when it is read.
 *
 * Reader (wds_reader_*): libarchive streams the shard (a file, or a pipe from the command, with
 * gzip/bzip2/xz/zstd decompression when the stream is compressed); nothing is extracted to disk
 * and only the members of the current sample are in memory. Members are grouped as webdataset's
 * group_by_keys does: for the member path "dir/000123.Jpg", the key is the path up to the first
 * dot of the basename ("dir/000123") and the extension is the rest, lower-cased ("jpg"). A
 * sample is a run of adjacent members with the same key. Members whose basename has no dot or
 * starts with one are skipped (DATA_MEMBER_BAD_NAME), as are webdataset's "__x__" meta files.
 * If a key comes back after another key's members, webdataset starts a new sample with it, and
 * so does this reader; it also counts DATA_KEY_NOT_ADJACENT (usually one of the two pieces then
 * lacks its image or caption and is dropped by the loader). A second member with the same key
 * and extension is skipped and counted (webdataset raises ValueError); the first is kept.
 *
 * Only these extensions are read: jpg/jpeg/png (the image; the first one in a sample wins), txt
 * (caption), json; any other member is skipped without reading its data (DATA_MEMBERS_IGNORED).
 * Declared sizes are checked against WdsLimits before anything is allocated. Zero-length members
 * count as DATA_MEMBER_EMPTY and are treated as absent (so an empty .txt is a missing caption).
 * Directories, links, devices and fifos are skipped (DATA_MEMBER_NOT_REGULAR). A tar that ends
 * or breaks inside a header or a member counts DATA_SHARD_TRUNCATED: the samples before the
 * break are kept, the sample being read when it broke is dropped.
 *
 * Each sample gets its ordinal: its position among the shard's samples (0, 1, 2, ...), counting
 * every group, complete or not. (shard, ordinal) identifies a sample for the loader's shuffle
 * and resume. */
#ifndef ADDC_DATA_WDS_H
#define ADDC_DATA_WDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "data/stats.h"

/* ---- shard lists ---- */

typedef struct ShardList {
    char **urls; /* n expanded shard urls (paths or "pipe:CMD") */
    int64_t n;
} ShardList;

#define SHARD_LIST_MAX (16ll << 20)

Status shard_list_expand(const char *spec, ShardList *out);
void shard_list_free(ShardList *l);
/* Brace expansion of one pattern (Python braceexpand semantics); at most `max` results. */
Status brace_expand(const char *pattern, int64_t max, ShardList *out);

/* ---- reader ---- */

typedef struct WdsLimits {
    int64_t max_image_bytes; /* default 32 MiB */
    int64_t max_text_bytes;  /* .txt and .json, default 1 MiB */
} WdsLimits;

void wds_limits_default(WdsLimits *lim);

typedef struct WdsPart {
    uint8_t *data; /* when loaded: len bytes plus a NUL (so text parts are C strings) */
    int64_t len;
    int64_t cap;   /* the buffer is kept across samples: data may hold stale bytes when !loaded */
    bool present;  /* the sample has this part (non-empty, within the limits) */
    bool loaded;   /* data holds it (false after a read with want_data off) */
} WdsPart;

typedef struct WdsSample {
    char *key;         /* NUL-terminated */
    int64_t key_cap;
    uint32_t ordinal;  /* position of the sample in its shard */
    char image_ext[8]; /* "jpg", "jpeg" or "png" when image.present */
    WdsPart image, caption, json;
} WdsSample;

void wds_sample_free(WdsSample *s);
/* Exchanges the buffers of a and b (moves a sample without copying its bytes). */
void wds_sample_swap(WdsSample *a, WdsSample *b);

typedef struct WdsReader WdsReader;

/* Opens a shard url (path, "file:path" or "pipe:CMD"). Counts DATA_SHARDS_OPENED or
 * DATA_SHARD_OPEN_FAILED into stats (which may be NULL). */
Status wds_reader_open(const char *url, const WdsLimits *lim, DataStats *stats, WdsReader **out);
/* Reads a tar held in memory (tests and fuzzing); buf must outlive the reader. */
Status wds_reader_open_memory(const void *buf, size_t len, const WdsLimits *lim, DataStats *stats,
                              WdsReader **out);
/* Next sample: 1 with *s filled, 0 at the end of the shard, -1 when the tar is truncated or
 * broken (counted; the core/error message says where: the caller clears it). want_data false
 * skips member data (sizes and presence are still reported, loaded is false), for
 * fast-forwarding to an ordinal. */
int wds_reader_next(WdsReader *r, WdsSample *s, bool want_data);
/* Closes the shard. For a pipe, waits for the command: a non-zero exit after the whole stream
 * was read counts DATA_PIPE_FAILED and returns ADDC_ERR_IO; closing early stops the command. */
Status wds_reader_close(WdsReader *r);
/* From another thread: stops a pipe command so a blocked read returns. */
void wds_reader_interrupt(WdsReader *r);
const char *wds_reader_url(const WdsReader *r);
/* Ordinal the next sample will get (samples read so far). */
uint32_t wds_reader_ordinal(const WdsReader *r);

/* ---- writer ---- */

typedef struct WdsWriter WdsWriter;

/* Writes a tar (POSIX pax, deterministic: fixed mtime, uid/gid 0, mode 0444) to path.tmp and
 * renames it to path on close after fsync, then fsyncs the directory. */
Status wds_writer_open(const char *path, WdsWriter **out);
Status wds_writer_add(WdsWriter *w, const char *name, const void *data, int64_t len);
Status wds_writer_close(WdsWriter *w);
void wds_writer_abort(WdsWriter *w); /* removes the temporary file */
int64_t wds_writer_bytes(const WdsWriter *w);

#endif
