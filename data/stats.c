/* data/stats: counter names, atomic counting, the printable summary (see stats.h). */
#include "data/stats.h"

#include <stdio.h>
#include <string.h>

static const char *const counter_names[] = {
    [DATA_SHARDS_OPENED] = "shards opened",
    [DATA_SHARDS_FINISHED] = "shards finished",
    [DATA_MEMBERS] = "tar members",
    [DATA_SAMPLES_READ] = "samples read",
    [DATA_SAMPLES_ACCEPTED] = "samples accepted",
    [DATA_SAMPLES_DECODED] = "samples decoded",
    [DATA_MEMBERS_IGNORED] = "members ignored (other extensions)",
    [DATA_SHARD_OPEN_FAILED] = "shard open failed",
    [DATA_SHARD_TRUNCATED] = "truncated or broken tar",
    [DATA_PIPE_FAILED] = "pipe command failed",
    [DATA_MEMBER_EMPTY] = "zero-length member",
    [DATA_MEMBER_TOO_LARGE] = "member too large",
    [DATA_MEMBER_NOT_REGULAR] = "non-regular entry",
    [DATA_MEMBER_BAD_NAME] = "bad member name",
    [DATA_MEMBER_DUPLICATE] = "duplicate member",
    [DATA_KEY_NOT_ADJACENT] = "key not adjacent",
    [DATA_MISSING_IMAGE] = "missing image",
    [DATA_MISSING_CAPTION] = "missing caption",
    [DATA_BAD_CAPTION] = "caption not UTF-8",
    [DATA_BAD_JSON] = "bad json",
    [DATA_JSON_REJECTED] = "json filter rejected",
    [DATA_BAD_JPEG] = "bad JPEG",
    [DATA_BAD_PNG] = "bad PNG",
    [DATA_IMAGE_TOO_LARGE] = "image too large",
    [DATA_IMAGE_FILTERED] = "image size/aspect filter",
    [DATA_RESUME_LOST] = "resume: sample lost",
};
_Static_assert(sizeof counter_names / sizeof counter_names[0] == DATA_COUNTER_COUNT,
               "counter_names must name every DataCounter");

const char *data_counter_name(DataCounter k) {
    return (k >= 0 && k < DATA_COUNTER_COUNT) ? counter_names[k] : "unknown counter";
}

void data_stats_count(DataStats *s, DataCounter k, int64_t n) {
    if (s) __atomic_fetch_add(&s->c[k], n, __ATOMIC_RELAXED);
}

void data_stats_snapshot(const DataStats *s, DataStats *out) {
    for (int k = 0; k < DATA_COUNTER_COUNT; k++) out->c[k] = __atomic_load_n(&s->c[k], __ATOMIC_RELAXED);
}

void data_stats_merge(DataStats *into, const DataStats *add) {
    for (int k = 0; k < DATA_COUNTER_COUNT; k++) into->c[k] += add->c[k];
}

int64_t data_stats_failures(const DataStats *s) {
    int64_t n = 0;
    for (int k = DATA_FIRST_FAILURE; k < DATA_COUNTER_COUNT; k++) n += s->c[k];
    return n;
}

char *data_stats_format(const DataStats *s, char *buf, size_t cap) {
    size_t w = 0;
#define PUT(...) \
    if (w < cap) w += (size_t)snprintf(buf + w, cap - w, __VA_ARGS__)
    if (cap) buf[0] = 0;
    PUT("shards: %lld opened, %lld finished; members: %lld; samples: %lld read, %lld accepted, %lld decoded\n",
        (long long)s->c[DATA_SHARDS_OPENED], (long long)s->c[DATA_SHARDS_FINISHED], (long long)s->c[DATA_MEMBERS],
        (long long)s->c[DATA_SAMPLES_READ], (long long)s->c[DATA_SAMPLES_ACCEPTED],
        (long long)s->c[DATA_SAMPLES_DECODED]);
    if (s->c[DATA_MEMBERS_IGNORED]) PUT("members ignored (other extensions): %lld\n", (long long)s->c[DATA_MEMBERS_IGNORED]);
    int64_t bad = data_stats_failures(s);
    if (!bad) {
        PUT("bad input: none\n");
    } else {
        PUT("bad input: %lld\n", (long long)bad);
        for (int k = DATA_FIRST_FAILURE; k < DATA_COUNTER_COUNT; k++)
            if (s->c[k]) PUT("  %-26s %lld\n", counter_names[k], (long long)s->c[k]);
    }
#undef PUT
    return buf;
}
