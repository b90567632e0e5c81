/* data/loader: reader thread -> shuffle buffer -> ring of decode slots -> batches, with the
 * consumer-side mirror of the reader state that makes resume exact (see loader.h).
 *
 * Threads and ownership: the reader thread owns the shuffle buffer, the cursor and the open
 * shard; a ring slot belongs to the reader while FREE, to the decode thread that took it while
 * BUSY, and to the consumer (loader_next, on the caller's thread) while DONE. One mutex guards
 * the slot states and the produced / next_decode / consumed sequence numbers. */
#include "data/loader.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "core/rng.h"

#define LOADER_THREADS_MAX 256
#define LOADER_SIDE_MAX 16384

typedef struct LoaderItem {
    WdsSample s;
    LoaderSampleId id;
    int32_t oh, ow; /* image size from its header */
    double jv[LOADER_JSON_FIELDS_MAX];
    bool filled;
} LoaderItem;

typedef enum SlotState { SLOT_FREE = 0, SLOT_QUEUED, SLOT_BUSY, SLOT_DONE } SlotState;

typedef struct RingSlot {
    SlotState state;
    uint64_t seq;
    LoaderItem item;
    /* what this emission changed in the reader state, applied to the consumer's mirror */
    int32_t buf_slot; /* -1 without a shuffle buffer */
    LoaderSampleId in_id;
    uint32_t cur_epoch, cur_shard, cur_sample;
    LoaderSampleId *snapshot; /* the whole buffer after the change, after a fill phase */
    /* decode result */
    float *pixels; /* (H, W, 3) */
    bool ok;
    DataCounter fail;
    char msg[256];
    int32_t crop_top, crop_left;
    bool flipped;
} RingSlot;

struct Loader {
    LoaderConfig cfg;
    char field_names[LOADER_JSON_FIELDS_MAX][LOADER_FIELD_NAME_MAX];
    ShardList shards;
    uint64_t list_hash, stream_hash;
    int32_t threads, nslots, S;
    DataStats stats;

    pthread_mutex_t mu;
    pthread_cond_t cv_reader, cv_worker, cv_consumer;
    bool stop;
    Status err;
    char err_msg[2048];
    RingSlot *ring;
    uint64_t produced, next_decode, consumed;
    WdsReader *active; /* the reader thread's open shard, for loader_free to interrupt */

    pthread_t reader_tid, *worker_tids;
    bool reader_started;
    int32_t workers_started;

    /* reader thread */
    LoaderItem *buf; /* S slots */
    int32_t holes;
    bool need_snapshot;
    LoaderItem incoming;
    uint32_t epoch, pos, sample;
    uint32_t *perm, *order;
    int64_t order_n;
    int64_t order_epoch;
    WdsReader *cur;
    LoaderState *restore;
    int64_t consecutive;
    char last_reason[512];
    int64_t epoch_accepted;
    bool epoch_from_start;

    /* consumer */
    LoaderState mirror;
    Batch batch;
    char *strbuf;
    int64_t strcap;
    int64_t *stroff; /* (B, 2) caption and key offsets */
    int64_t decode_consecutive;
    bool failed; /* loader_next returned an error: it returns it again */
};

void loader_config_default(LoaderConfig *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->batch_size = 1;
    cfg->height = cfg->width = 512;
    cfg->crop = CROP_CENTER;
    cfg->filter = RESIZE_BILINEAR;
    cfg->dct_scaling = true;
    cfg->world = 1;
    cfg->shuffle = 1000;
    cfg->shuffle_shards = true;
    cfg->require_caption = true;
    cfg->max_consecutive_failures = 100;
    wds_limits_default(&cfg->limits);
    image_limits_default(&cfg->image_limits);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static uint64_t sample_index(LoaderSampleId id) {
    return ((((uint64_t)id.shard + 1) << 24) + id.ordinal) & (RNG_INDEX_LIMIT - 1);
}

static void sample_words(const Loader *l, LoaderSampleId id, int64_t off, int64_t n, uint32_t *out) {
    RngKey k = rng_key(l->cfg.seed, RNG_PURPOSE_DATA, sample_index(id), id.epoch);
    rng_fill_u32(&k, off, n, out);
}

static void loader_fail(Loader *l, Status st, const char *msg) {
    pthread_mutex_lock(&l->mu);
    if (l->err == ADDC_OK) {
        l->err = st;
        snprintf(l->err_msg, sizeof l->err_msg, "%s", msg);
    }
    pthread_cond_broadcast(&l->cv_consumer);
    pthread_cond_broadcast(&l->cv_reader);
    pthread_mutex_unlock(&l->mu);
}

static bool loader_stopping(Loader *l) {
    pthread_mutex_lock(&l->mu);
    bool s = l->stop || l->err != ADDC_OK;
    pthread_mutex_unlock(&l->mu);
    return s;
}

static void set_active(Loader *l, WdsReader *r) {
    pthread_mutex_lock(&l->mu);
    l->active = r;
    pthread_mutex_unlock(&l->mu);
}

/* ---- reader: sample checks ---- */

/* Checks a freshly read sample; returns DATA_COUNTER_COUNT if usable, else the counter to bump
 * (and a reason in l->last_reason). Fills item->oh/ow and item->jv. */
static DataCounter reader_accept(Loader *l, LoaderItem *it) {
    const LoaderConfig *c = &l->cfg;
    WdsSample *s = &it->s;
    const char *url = l->shards.urls[it->id.shard];
#define REJECT(counter, ...)                                                                 \
    do {                                                                                     \
        snprintf(l->last_reason, sizeof l->last_reason, __VA_ARGS__);                        \
        return counter;                                                                      \
    } while (0)
    if (!s->image.present) REJECT(DATA_MISSING_IMAGE, "%s: sample %s has no .jpg/.jpeg/.png", url, s->key);
    if (!s->caption.present && c->require_caption) REJECT(DATA_MISSING_CAPTION, "%s: sample %s has no caption", url, s->key);
    if (s->caption.present &&
        (memchr(s->caption.data, 0, (size_t)s->caption.len) || !json_utf8_valid((char *)s->caption.data, s->caption.len)))
        REJECT(DATA_BAD_CAPTION, "%s: sample %s: caption is not UTF-8 text", url, s->key);
    for (int32_t k = 0; k < LOADER_JSON_FIELDS_MAX; k++) it->jv[k] = NAN;
    if (c->n_filters > 0 || c->n_json_fields > 0) {
        JsonDoc doc = {0};
        bool parsed = false;
        if (s->json.present) {
            JsonLimits jl = {c->limits.max_text_bytes, 64, 0};
            if (json_parse((char *)s->json.data, s->json.len, &jl, &doc) == ADDC_OK &&
                json_root(&doc)->type == JSON_OBJECT) {
                parsed = true;
            } else {
                snprintf(l->last_reason, sizeof l->last_reason, "%s: sample %s: %s", url, s->key,
                         doc.n ? "json is not an object" : addc_error_message());
                addc_error_clear();
                json_free(&doc);
                if (c->n_filters > 0) return DATA_BAD_JSON; /* the filters cannot be evaluated */
                data_stats_count(&l->stats, DATA_BAD_JSON, 1); /* kept: the fields read as NaN */
            }
        }
        if (parsed) {
            const JsonNode *root = json_root(&doc);
            for (int32_t k = 0; k < c->n_json_fields; k++) json_number(json_get(&doc, root, l->field_names[k]), &it->jv[k]);
        }
        for (int32_t f = 0; f < c->n_filters; f++) {
            const LoaderFilter *flt = &c->filters[f];
            double v;
            if (!parsed || !json_number(json_get(&doc, json_root(&doc), flt->field), &v) || !(v >= flt->min && v <= flt->max)) {
                json_free(&doc);
                REJECT(DATA_JSON_REJECTED, "%s: sample %s: json field '%s' %s", url, s->key, flt->field,
                       parsed ? "missing or outside the filter range" : "unavailable (no valid .json)");
            }
        }
        json_free(&doc);
    }
    ImageFormat fmt = image_format_sniff(s->image.data, s->image.len);
    DataCounter bad_image = fmt == IMAGE_FORMAT_PNG || (fmt == IMAGE_FORMAT_UNKNOWN && !strcmp(s->image_ext, "png"))
                                ? DATA_BAD_PNG
                                : DATA_BAD_JPEG;
    if (image_probe(s->image.data, s->image.len, &it->oh, &it->ow) != ADDC_OK) {
        snprintf(l->last_reason, sizeof l->last_reason, "%s: sample %s: %s", url, s->key, addc_error_message());
        addc_error_clear();
        return bad_image;
    }
    if (it->oh <= 0 || it->ow <= 0) REJECT(bad_image, "%s: sample %s: empty image", url, s->key);
    if (it->oh > c->image_limits.max_side || it->ow > c->image_limits.max_side ||
        (int64_t)it->oh * it->ow > c->image_limits.max_pixels)
        REJECT(DATA_IMAGE_TOO_LARGE, "%s: sample %s: %dx%d image is above the limit", url, s->key, it->ow, it->oh);
    int32_t sh = it->oh < it->ow ? it->oh : it->ow, lg = it->oh < it->ow ? it->ow : it->oh;
    if ((c->min_size > 0 && sh < c->min_size) || (c->max_aspect > 0 && (double)lg / sh > c->max_aspect))
        REJECT(DATA_IMAGE_FILTERED, "%s: sample %s: %dx%d image fails the size/aspect filter", url, s->key, it->ow, it->oh);
#undef REJECT
    return DATA_COUNTER_COUNT;
}

/* One more unusable sample or shard in a row; an error past the limit. */
static Status reader_note_failure(Loader *l, const char *url) {
    if (++l->consecutive < l->cfg.max_consecutive_failures) return ADDC_OK;
    return addc_error_set(ADDC_ERR_FORMAT,
                          "data: %lld samples or shards in a row were unusable, the last in shard %s (%s); check the "
                          "shards with `addc shards check`",
                          (long long)l->consecutive, url, l->last_reason);
}

/* ---- reader: shard order ---- */

static Status reader_order(Loader *l) {
    int64_t n = l->shards.n;
    for (int64_t i = 0; i < n; i++) l->perm[i] = (uint32_t)i;
    if (l->cfg.shuffle_shards && n > 1) {
        RngKey k = rng_key(l->cfg.seed, RNG_PURPOSE_DATA, 0, l->epoch);
        uint32_t u[1024];
        for (int64_t i = n - 1; i >= 1; i--) {
            int64_t b = i & ~(int64_t)1023;
            if (i == n - 1 || (i & 1023) == 1023) rng_fill_u32(&k, b, 1024, u);
            int64_t j = (int64_t)(((uint64_t)u[i & 1023] * (uint64_t)(i + 1)) >> 32);
            uint32_t t = l->perm[i];
            l->perm[i] = l->perm[j];
            l->perm[j] = t;
        }
    }
    l->order_n = 0;
    for (int64_t i = l->cfg.rank; i < n; i += l->cfg.world) l->order[l->order_n++] = l->perm[i];
    l->order_epoch = l->epoch;
    return ADDC_OK;
}

/* ---- reader: emission into the ring ---- */

/* Emits *out (the sample leaving the buffer, or the incoming one without a buffer); the slot
 * takes ownership of snapshot. */
static Status reader_emit(Loader *l, LoaderItem *out, int32_t buf_slot, LoaderSampleId in_id,
                          LoaderSampleId *snapshot) {
    pthread_mutex_lock(&l->mu);
    while (!l->stop && l->err == ADDC_OK && l->produced - l->consumed >= (uint64_t)l->nslots)
        pthread_cond_wait(&l->cv_reader, &l->mu);
    bool stop = l->stop || l->err != ADDC_OK;
    RingSlot *slot = &l->ring[l->produced % (uint64_t)l->nslots];
    pthread_mutex_unlock(&l->mu);
    if (stop) {
        free(snapshot);
        return ADDC_OK;
    }
    LoaderItem t = slot->item;
    slot->item = *out;
    *out = t;
    slot->buf_slot = buf_slot;
    slot->in_id = in_id;
    slot->cur_epoch = l->epoch;
    slot->cur_shard = l->pos;
    slot->cur_sample = l->sample;
    slot->snapshot = snapshot;
    pthread_mutex_lock(&l->mu);
    slot->seq = l->produced++;
    slot->state = SLOT_QUEUED;
    pthread_cond_signal(&l->cv_worker);
    pthread_mutex_unlock(&l->mu);
    return ADDC_OK;
}

/* Puts the accepted l->incoming into the shuffle buffer (or straight into the ring). */
static Status reader_push(Loader *l) {
    LoaderSampleId id = l->incoming.id;
    if (l->S == 0) return reader_emit(l, &l->incoming, -1, id, NULL);
    if (l->holes > 0) {
        int32_t j = 0;
        while (l->buf[j].filled) j++;
        wds_sample_swap(&l->buf[j].s, &l->incoming.s);
        LoaderItem *b = &l->buf[j];
        b->id = id;
        b->oh = l->incoming.oh;
        b->ow = l->incoming.ow;
        memcpy(b->jv, l->incoming.jv, sizeof b->jv);
        b->filled = true;
        l->holes--;
        return ADDC_OK;
    }
    uint32_t u;
    sample_words(l, id, 0, 1, &u);
    int32_t j = (int32_t)(((uint64_t)u * (uint64_t)l->S) >> 32);
    /* ring <- buf[j] <- incoming; the ring's old item becomes the next incoming buffer */
    LoaderItem leaving = l->buf[j];
    l->buf[j] = l->incoming;
    l->buf[j].filled = true;
    l->incoming = leaving;
    LoaderSampleId *snapshot = NULL;
    if (l->need_snapshot) { /* first emission after a fill: the consumer gets the whole buffer */
        snapshot = malloc(sizeof *snapshot * (size_t)l->S);
        if (!snapshot) return addc_error_set(ADDC_ERR_NOMEM, "data: out of memory");
        for (int32_t k = 0; k < l->S; k++) snapshot[k] = l->buf[k].id;
        l->need_snapshot = false;
    }
    return reader_emit(l, &l->incoming, j, id, snapshot);
}

/* ---- reader: the main loop ---- */

static void reader_close_cur(Loader *l, bool *failed) {
    set_active(l, NULL);
    if (wds_reader_close(l->cur) != ADDC_OK) {
        snprintf(l->last_reason, sizeof l->last_reason, "%s", addc_error_message());
        *failed = true;
    }
    addc_error_clear();
    l->cur = NULL;
}

static Status reader_step(Loader *l) {
    if (!l->cur) {
        if (l->order_epoch != (int64_t)l->epoch) TRY(reader_order(l));
        if (l->pos >= l->order_n) {
            if (l->epoch_from_start && l->epoch_accepted == 0)
                return addc_error_set(ADDC_ERR_FORMAT,
                                      "data: epoch %u gave no usable sample from the %lld shards of rank %d (last "
                                      "problem: %s)",
                                      l->epoch, (long long)l->order_n, l->cfg.rank,
                                      l->last_reason[0] ? l->last_reason : "none recorded");
            l->epoch++;
            l->pos = 0;
            l->sample = 0;
            l->epoch_accepted = 0;
            l->epoch_from_start = true;
            return ADDC_OK;
        }
        const char *url = l->shards.urls[l->order[l->pos]];
        WdsReader *r;
        if (wds_reader_open(url, &l->cfg.limits, &l->stats, &r) != ADDC_OK) {
            snprintf(l->last_reason, sizeof l->last_reason, "%s", addc_error_message());
            addc_error_clear();
            l->pos++;
            l->sample = 0;
            return reader_note_failure(l, url);
        }
        l->cur = r;
        set_active(l, r);
        int rc = 1;
        while (rc == 1 && wds_reader_ordinal(r) < l->sample && !loader_stopping(l))
            rc = wds_reader_next(r, &l->incoming.s, false);
        if (rc < 0) {
            bool failed = true;
            snprintf(l->last_reason, sizeof l->last_reason, "%s", addc_error_message());
            reader_close_cur(l, &failed);
            l->pos++;
            l->sample = 0;
            return reader_note_failure(l, url);
        }
        return ADDC_OK;
    }
    const char *url = wds_reader_url(l->cur);
    int rc = wds_reader_next(l->cur, &l->incoming.s, true);
    if (rc <= 0) {
        bool failed = rc < 0;
        if (failed) snprintf(l->last_reason, sizeof l->last_reason, "%s", addc_error_message());
        addc_error_clear();
        char urlcopy[1024];
        snprintf(urlcopy, sizeof urlcopy, "%s", url);
        reader_close_cur(l, &failed);
        l->pos++;
        l->sample = 0;
        return failed ? reader_note_failure(l, urlcopy) : ADDC_OK;
    }
    l->sample = l->incoming.s.ordinal + 1;
    l->incoming.id = (LoaderSampleId){l->order[l->pos], l->incoming.s.ordinal, l->epoch};
    DataCounter bad = reader_accept(l, &l->incoming);
    if (bad != DATA_COUNTER_COUNT) {
        data_stats_count(&l->stats, bad, 1);
        return reader_note_failure(l, url);
    }
    l->consecutive = 0;
    l->epoch_accepted++;
    data_stats_count(&l->stats, DATA_SAMPLES_ACCEPTED, 1);
    return reader_push(l);
}

/* Deep copy of a buffered sample (the same shard sample buffered in two epochs). */
static Status item_copy(LoaderItem *dst, const LoaderItem *src) {
    WdsPart *dp[3] = {&dst->s.image, &dst->s.caption, &dst->s.json};
    const WdsPart *sp[3] = {&src->s.image, &src->s.caption, &src->s.json};
    for (int i = 0; i < 3; i++) {
        dp[i]->present = sp[i]->present;
        dp[i]->loaded = sp[i]->loaded;
        dp[i]->len = sp[i]->len;
        if (!sp[i]->loaded) continue;
        if (dp[i]->cap < sp[i]->len + 1) {
            uint8_t *d = realloc(dp[i]->data, (size_t)sp[i]->len + 1);
            if (!d) return addc_error_set(ADDC_ERR_NOMEM, "data: out of memory");
            dp[i]->data = d;
            dp[i]->cap = sp[i]->len + 1;
        }
        memcpy(dp[i]->data, sp[i]->data, (size_t)sp[i]->len + 1);
    }
    size_t kl = strlen(src->s.key);
    if (dst->s.key_cap < (int64_t)kl + 1) {
        char *k = realloc(dst->s.key, kl + 1);
        if (!k) return addc_error_set(ADDC_ERR_NOMEM, "data: out of memory");
        dst->s.key = k;
        dst->s.key_cap = (int64_t)kl + 1;
    }
    memcpy(dst->s.key, src->s.key, kl + 1);
    memcpy(dst->s.image_ext, src->s.image_ext, sizeof dst->s.image_ext);
    dst->s.ordinal = src->s.ordinal;
    dst->oh = src->oh;
    dst->ow = src->ow;
    memcpy(dst->jv, src->jv, sizeof dst->jv);
    return ADDC_OK;
}

typedef struct RestoreRef {
    uint32_t shard, ordinal;
    int32_t slot;
} RestoreRef;

static int restore_cmp(const void *a, const void *b) {
    const RestoreRef *x = a, *y = b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    if (x->ordinal != y->ordinal) return x->ordinal < y->ordinal ? -1 : 1;
    return x->slot - y->slot;
}

/* Puts every buffered sample of the saved state back in its slot. */
static Status reader_restore(Loader *l) {
    LoaderState *st = l->restore;
    int32_t n = (int32_t)st->n_buffered;
    RestoreRef *ref = malloc(sizeof *ref * (size_t)(n ? n : 1));
    if (!ref) return addc_error_set(ADDC_ERR_NOMEM, "data: out of memory");
    for (int32_t i = 0; i < n; i++) ref[i] = (RestoreRef){st->buffer[i].shard, st->buffer[i].ordinal, i};
    qsort(ref, (size_t)n, sizeof *ref, restore_cmp);
    int32_t lost = 0;
    Status status = ADDC_OK;
    for (int32_t g = 0; g < n && status == ADDC_OK && !loader_stopping(l);) {
        uint32_t shard = ref[g].shard;
        int32_t gend = g;
        while (gend < n && ref[gend].shard == shard) gend++;
        WdsReader *r = NULL;
        if (wds_reader_open(l->shards.urls[shard], &l->cfg.limits, &l->stats, &r) != ADDC_OK) r = NULL;
        addc_error_clear();
        set_active(l, r);
        int32_t prev = -1;
        for (int32_t k = g; k < gend; k++) {
            int32_t slot = ref[k].slot;
            LoaderSampleId id = st->buffer[slot];
            LoaderItem *b = &l->buf[slot];
            bool ok = false;
            if (prev >= 0 && st->buffer[prev].ordinal == id.ordinal && l->buf[prev].filled) {
                if (item_copy(b, &l->buf[prev]) != ADDC_OK) {
                    status = addc_error_status();
                    break;
                }
                ok = true;
            } else if (r) {
                int rc = 1;
                while (rc == 1 && wds_reader_ordinal(r) < id.ordinal) rc = wds_reader_next(r, &l->incoming.s, false);
                if (rc == 1 && wds_reader_ordinal(r) == id.ordinal) rc = wds_reader_next(r, &b->s, true);
                else rc = 0;
                b->id = id;
                ok = rc == 1 && b->s.ordinal == id.ordinal && reader_accept(l, b) == DATA_COUNTER_COUNT;
                addc_error_clear();
            }
            b->id = id;
            b->filled = ok;
            if (!ok) lost++;
            prev = slot;
        }
        set_active(l, NULL);
        if (r) {
            wds_reader_close(r);
            addc_error_clear();
        }
        g = gend;
    }
    free(ref);
    TRY(status);
    if (lost) data_stats_count(&l->stats, DATA_RESUME_LOST, lost);
    l->holes = 0;
    for (int32_t i = 0; i < l->S; i++)
        if (!l->buf[i].filled) l->holes++;
    l->need_snapshot = l->holes > 0;
    return ADDC_OK;
}

static void *reader_main(void *arg) {
    Loader *l = arg;
    Status st = ADDC_OK;
    if (l->restore) st = reader_restore(l);
    while (st == ADDC_OK && !loader_stopping(l)) st = reader_step(l);
    if (st != ADDC_OK) loader_fail(l, st, addc_error_message());
    if (l->cur) {
        bool failed = false;
        reader_close_cur(l, &failed);
    }
    addc_error_clear();
    return NULL;
}

/* ---- decode threads ---- */

static void decode_slot(Loader *l, RingSlot *slot, ImageU8 *img, ResizeScratch *rs) {
    const LoaderConfig *c = &l->cfg;
    LoaderItem *it = &slot->item;
    int32_t rh, rw, oh, ow;
    image_cover_size(it->oh, it->ow, c->height, c->width, &rh, &rw);
    DataCounter fail = DATA_BAD_JPEG;
    slot->ok = false;
    Status st = image_decode(it->s.image.data, it->s.image.len, &c->image_limits, c->dct_scaling ? rh : 0,
                             c->dct_scaling ? rw : 0, img, &oh, &ow, &fail);
    if (st == ADDC_OK) {
        uint32_t u[3];
        sample_words(l, it->id, 1, 3, u);
        ResizeCrop rc = {rh, rw, 0, 0, c->height, c->width, false, c->filter};
        if (c->crop == CROP_RANDOM) {
            rc.top = (int32_t)(((uint64_t)u[0] * (uint64_t)(rh - c->height + 1)) >> 32);
            rc.left = (int32_t)(((uint64_t)u[1] * (uint64_t)(rw - c->width + 1)) >> 32);
        } else {
            rc.top = (rh - c->height) / 2;
            rc.left = (rw - c->width) / 2;
        }
        rc.flip = c->flip && (u[2] >> 31);
        st = image_resize_crop(img->data, img->h, img->w, &rc, slot->pixels, rs);
        if (st == ADDC_OK) {
            slot->ok = true;
            slot->crop_top = rc.top;
            slot->crop_left = rc.left;
            slot->flipped = rc.flip;
            data_stats_count(&l->stats, DATA_SAMPLES_DECODED, 1);
        }
    }
    if (!slot->ok) {
        slot->fail = fail;
        snprintf(slot->msg, sizeof slot->msg, "%s", addc_error_message());
        data_stats_count(&l->stats, fail, 1);
    }
    addc_error_clear();
}

static void *worker_main(void *arg) {
    Loader *l = arg;
    ImageU8 img = {0};
    ResizeScratch rs = {0};
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->next_decode >= l->produced) pthread_cond_wait(&l->cv_worker, &l->mu);
        if (l->stop) break;
        RingSlot *slot = &l->ring[l->next_decode % (uint64_t)l->nslots];
        l->next_decode++;
        slot->state = SLOT_BUSY;
        pthread_mutex_unlock(&l->mu);
        decode_slot(l, slot, &img, &rs);
        pthread_mutex_lock(&l->mu);
        slot->state = SLOT_DONE;
        pthread_cond_broadcast(&l->cv_consumer);
    }
    pthread_mutex_unlock(&l->mu);
    image_u8_free(&img);
    resize_scratch_free(&rs);
    return NULL;
}

/* ---- consumer ---- */

static void mirror_apply(Loader *l, const RingSlot *slot) {
    LoaderState *m = &l->mirror;
    m->samples = slot->seq + 1;
    m->epoch = slot->cur_epoch;
    m->shard_cursor = slot->cur_shard;
    m->sample_cursor = slot->cur_sample;
    if (slot->snapshot) {
        memcpy(m->buffer, slot->snapshot, sizeof(LoaderSampleId) * (size_t)l->S);
        m->n_buffered = (uint32_t)l->S;
    } else if (slot->buf_slot >= 0) {
        m->buffer[slot->buf_slot] = slot->in_id;
    }
}

static Status str_append(Loader *l, int64_t *used, const char *s, int64_t n, int64_t *off) {
    if (*used + n + 1 > l->strcap) {
        int64_t cap = l->strcap * 2 > *used + n + 1 ? l->strcap * 2 : *used + n + 1 + 4096;
        char *b = realloc(l->strbuf, (size_t)cap);
        if (!b) return addc_error_set(ADDC_ERR_NOMEM, "data: out of memory for captions");
        l->strbuf = b;
        l->strcap = cap;
    }
    memcpy(l->strbuf + *used, s, (size_t)n);
    l->strbuf[*used + n] = 0;
    *off = *used;
    *used += n + 1;
    return ADDC_OK;
}

static Status loader_error(Loader *l) {
    pthread_mutex_lock(&l->mu);
    Status st = l->err;
    char msg[sizeof l->err_msg];
    memcpy(msg, l->err_msg, sizeof msg);
    pthread_mutex_unlock(&l->mu);
    return addc_error_set(st, "%s", msg);
}

static Status loader_next_batch(Loader *l) {
    const LoaderConfig *c = &l->cfg;
    Batch *bt = &l->batch;
    int64_t hw3 = (int64_t)c->height * c->width * 3, used = 0;
    for (int64_t b = 0; b < c->batch_size;) {
        pthread_mutex_lock(&l->mu);
        RingSlot *slot = &l->ring[l->consumed % (uint64_t)l->nslots];
        while (!(slot->state == SLOT_DONE && slot->seq == l->consumed) &&
               !(l->err != ADDC_OK && l->consumed >= l->produced))
            pthread_cond_wait(&l->cv_consumer, &l->mu);
        bool ready = slot->state == SLOT_DONE && slot->seq == l->consumed;
        pthread_mutex_unlock(&l->mu);
        if (!ready) return loader_error(l);
        mirror_apply(l, slot);
        Status st = ADDC_OK;
        if (slot->ok) {
            const LoaderItem *it = &slot->item;
            memcpy(bt->images + b * hw3, slot->pixels, sizeof(float) * (size_t)hw3);
            const char *cap = it->s.caption.present ? (const char *)it->s.caption.data : "";
            st = str_append(l, &used, cap, it->s.caption.present ? it->s.caption.len : 0, &l->stroff[2 * b]);
            if (st == ADDC_OK) st = str_append(l, &used, it->s.key, (int64_t)strlen(it->s.key), &l->stroff[2 * b + 1]);
            bt->original_size[2 * b] = it->oh;
            bt->original_size[2 * b + 1] = it->ow;
            bt->crop_top_left[2 * b] = slot->crop_top;
            bt->crop_top_left[2 * b + 1] = slot->crop_left;
            bt->target_size[2 * b] = c->height;
            bt->target_size[2 * b + 1] = c->width;
            bt->flipped[b] = slot->flipped;
            for (int32_t k = 0; k < c->n_json_fields; k++) bt->json[b * c->n_json_fields + k] = it->jv[k];
            bt->ids[b] = it->id;
            b++;
            l->decode_consecutive = 0;
        } else if (++l->decode_consecutive >= c->max_consecutive_failures) {
            st = addc_error_set(ADDC_ERR_FORMAT,
                                "data: %lld images in a row could not be decoded, the last is sample %s of shard %s "
                                "(%s); check the shards with `addc shards check`",
                                (long long)l->decode_consecutive, slot->item.s.key, l->shards.urls[slot->item.id.shard],
                                slot->msg);
        }
        pthread_mutex_lock(&l->mu);
        free(slot->snapshot);
        slot->snapshot = NULL;
        slot->state = SLOT_FREE;
        l->consumed++;
        pthread_cond_signal(&l->cv_reader);
        pthread_mutex_unlock(&l->mu);
        if (st != ADDC_OK) return st;
    }
    for (int64_t b = 0; b < c->batch_size; b++) {
        bt->captions[b] = l->strbuf + l->stroff[2 * b];
        bt->keys[b] = l->strbuf + l->stroff[2 * b + 1];
    }
    bt->index = l->mirror.batches++;
    return ADDC_OK;
}

Status loader_next(Loader *l, Batch **out) {
    *out = NULL;
    if (l->failed) return loader_error(l);
    Status st = loader_next_batch(l);
    if (st == ADDC_OK) {
        *out = &l->batch;
        return ADDC_OK;
    }
    l->failed = true;
    loader_fail(l, st, addc_error_message()); /* keeps the first error; the reader stops */
    return st;
}

void loader_state(const Loader *l, LoaderState *st) { memcpy(st, &l->mirror, sizeof *st); }

void loader_stats(const Loader *l, DataStats *out) { data_stats_snapshot(&l->stats, out); }

int64_t loader_shard_count(const Loader *l) { return l->shards.n; }

const char *loader_shard_url(const Loader *l, uint32_t shard) {
    return shard < l->shards.n ? l->shards.urls[shard] : NULL;
}

/* ---- open / free ---- */

static Status config_check(const LoaderConfig *c) {
#define BAD(...) return addc_error_set(ADDC_ERR_INVALID, "data: " __VA_ARGS__)
    if (!c->shards || !c->shards[0]) BAD("no shards given");
    if (c->batch_size < 1 || c->batch_size > (1 << 20)) BAD("batch size %lld is not in [1, 2^20]", (long long)c->batch_size);
    if (c->height < 1 || c->width < 1 || c->height > LOADER_SIDE_MAX || c->width > LOADER_SIDE_MAX)
        BAD("target size %dx%d is not in [1, %d]", c->width, c->height, LOADER_SIDE_MAX);
    if (c->world < 1 || c->rank < 0 || c->rank >= c->world) BAD("rank %d of world %d is impossible", c->rank, c->world);
    if (c->shuffle < 0 || c->shuffle > LOADER_SHUFFLE_MAX) BAD("shuffle buffer %d is not in [0, %d]", c->shuffle, LOADER_SHUFFLE_MAX);
    if (c->threads < 0 || c->prefetch < 0) BAD("threads and prefetch must be >= 0");
    if (c->n_json_fields < 0 || c->n_json_fields > LOADER_JSON_FIELDS_MAX) BAD("at most %d json fields", LOADER_JSON_FIELDS_MAX);
    for (int32_t k = 0; k < c->n_json_fields; k++)
        if (!c->json_fields[k] || strlen(c->json_fields[k]) >= LOADER_FIELD_NAME_MAX) BAD("json field %d has no name or a name too long", k);
    if (c->n_filters < 0 || c->n_filters > LOADER_FILTERS_MAX) BAD("at most %d json filters", LOADER_FILTERS_MAX);
    if (c->max_consecutive_failures < 1) BAD("max_consecutive_failures must be >= 1");
    if (c->filter < 0 || c->filter >= RESIZE_FILTER_COUNT) BAD("unknown resize filter %d", (int)c->filter);
    if (c->crop != CROP_CENTER && c->crop != CROP_RANDOM) BAD("unknown crop mode %d", (int)c->crop);
    if (c->limits.max_image_bytes < 1 || c->limits.max_text_bytes < 1 || c->image_limits.max_pixels < 1 ||
        c->image_limits.max_side < 1)
        BAD("member and image limits must be positive");
#undef BAD
    return ADDC_OK;
}

static uint64_t stream_hash(const LoaderConfig *c) {
    uint64_t h = 1469598103934665603ull;
    uint8_t flags[2] = {c->require_caption, c->shuffle_shards};
    h = fnv(h, flags, sizeof flags);
    h = fnv(h, &c->min_size, sizeof c->min_size);
    h = fnv(h, &c->max_aspect, sizeof c->max_aspect);
    h = fnv(h, &c->limits.max_image_bytes, sizeof(int64_t));
    h = fnv(h, &c->limits.max_text_bytes, sizeof(int64_t));
    h = fnv(h, &c->image_limits.max_pixels, sizeof(int64_t));
    h = fnv(h, &c->image_limits.max_side, sizeof(int32_t));
    for (int32_t f = 0; f < c->n_filters; f++) {
        h = fnv(h, c->filters[f].field, strnlen(c->filters[f].field, LOADER_FIELD_NAME_MAX));
        h = fnv(h, &c->filters[f].min, sizeof(double));
        h = fnv(h, &c->filters[f].max, sizeof(double));
    }
    return h;
}

static Status state_check(const Loader *l, const LoaderState *s) {
#define BAD(...) return addc_error_set(ADDC_ERR_INVALID, "data: cannot resume: " __VA_ARGS__)
    if (s->magic != LOADER_STATE_MAGIC || s->version != LOADER_STATE_VERSION)
        BAD("not a loader state of this version (magic %08x version %u)", s->magic, s->version);
    if (s->seed != l->cfg.seed) BAD("the state was saved with seed %llu, the loader has %llu", (unsigned long long)s->seed,
                                    (unsigned long long)l->cfg.seed);
    if (s->nshards != (uint32_t)l->shards.n || s->list_hash != l->list_hash)
        BAD("the shard list changed (%u shards then, %lld now)", s->nshards, (long long)l->shards.n);
    if (s->rank != l->cfg.rank || s->world != l->cfg.world)
        BAD("the state is rank %d of %d, the loader rank %d of %d; restore each rank's own state on the same world "
            "size, or start the new world at an epoch boundary (start_epoch)",
            s->rank, s->world, l->cfg.rank, l->cfg.world);
    if (s->shuffle != l->cfg.shuffle) BAD("shuffle buffer %d then, %d now", s->shuffle, l->cfg.shuffle);
    if (s->stream_hash != l->stream_hash) BAD("the sample filters or limits changed");
    if (s->n_buffered > (uint32_t)s->shuffle) BAD("corrupt state (%u buffered samples in %d slots)", s->n_buffered, s->shuffle);
    for (uint32_t i = 0; i < s->n_buffered; i++)
        if (s->buffer[i].shard >= s->nshards) BAD("corrupt state (buffered sample from shard %u)", s->buffer[i].shard);
#undef BAD
    return ADDC_OK;
}

static void *xcalloc(size_t n, size_t sz, bool *fail) {
    void *p = calloc(n ? n : 1, sz);
    if (!p) *fail = true;
    return p;
}

Status loader_open(const LoaderConfig *cfg, const LoaderState *resume, Loader **out) {
    *out = NULL;
    TRY(config_check(cfg));
    Loader *l = calloc(1, sizeof *l);
    if (!l) return addc_error_set(ADDC_ERR_NOMEM, "data: out of memory");
    l->cfg = *cfg;
    for (int32_t k = 0; k < cfg->n_json_fields; k++) {
        snprintf(l->field_names[k], LOADER_FIELD_NAME_MAX, "%s", cfg->json_fields[k]);
        l->cfg.json_fields[k] = l->field_names[k];
    }
    l->cfg.shards = NULL;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv_reader, NULL);
    pthread_cond_init(&l->cv_worker, NULL);
    pthread_cond_init(&l->cv_consumer, NULL);
    Status st = shard_list_expand(cfg->shards, &l->shards);
    if (st == ADDC_OK && l->shards.n < cfg->world)
        st = addc_error_set(ADDC_ERR_INVALID, "data: %lld shards cannot feed %d ranks: every rank needs at least one shard",
                            (long long)l->shards.n, cfg->world);
    if (st == ADDC_OK && l->shards.n >= (int64_t)UINT32_MAX)
        st = addc_error_set(ADDC_ERR_INVALID, "data: too many shards (%lld)", (long long)l->shards.n);
    if (st != ADDC_OK) {
        loader_free(l);
        return st;
    }
    l->list_hash = 1469598103934665603ull;
    for (int64_t i = 0; i < l->shards.n; i++) l->list_hash = fnv(l->list_hash, l->shards.urls[i], strlen(l->shards.urls[i]) + 1);
    l->stream_hash = stream_hash(&l->cfg);
    if (resume && (st = state_check(l, resume)) != ADDC_OK) {
        loader_free(l);
        return st;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    l->threads = cfg->threads ? cfg->threads : (int32_t)(ncpu > 0 ? ncpu : 1);
    if (l->threads > LOADER_THREADS_MAX) l->threads = LOADER_THREADS_MAX;
    l->nslots = cfg->prefetch ? cfg->prefetch : (int32_t)(2 * cfg->batch_size + l->threads);
    l->S = cfg->shuffle;
    int64_t B = cfg->batch_size, hw3 = (int64_t)cfg->height * cfg->width * 3;
    bool fail = false;
    l->ring = xcalloc((size_t)l->nslots, sizeof *l->ring, &fail);
    for (int32_t i = 0; !fail && i < l->nslots; i++) l->ring[i].pixels = xcalloc((size_t)hw3, sizeof(float), &fail);
    l->buf = xcalloc((size_t)l->S, sizeof *l->buf, &fail);
    l->perm = xcalloc((size_t)l->shards.n, sizeof *l->perm, &fail);
    l->order = xcalloc((size_t)l->shards.n, sizeof *l->order, &fail);
    l->worker_tids = xcalloc((size_t)l->threads, sizeof *l->worker_tids, &fail);
    Batch *bt = &l->batch;
    bt->n = B;
    bt->h = cfg->height;
    bt->w = cfg->width;
    bt->n_json_fields = cfg->n_json_fields;
    bt->images = xcalloc((size_t)(B * hw3), sizeof(float), &fail);
    bt->captions = xcalloc((size_t)B, sizeof(char *), &fail);
    bt->keys = xcalloc((size_t)B, sizeof(char *), &fail);
    bt->original_size = xcalloc((size_t)(2 * B), sizeof(int32_t), &fail);
    bt->crop_top_left = xcalloc((size_t)(2 * B), sizeof(int32_t), &fail);
    bt->target_size = xcalloc((size_t)(2 * B), sizeof(int32_t), &fail);
    bt->flipped = xcalloc((size_t)B, 1, &fail);
    bt->json = xcalloc((size_t)(B * (cfg->n_json_fields ? cfg->n_json_fields : 1)), sizeof(double), &fail);
    bt->ids = xcalloc((size_t)B, sizeof(LoaderSampleId), &fail);
    l->stroff = xcalloc((size_t)(2 * B), sizeof(int64_t), &fail);
    if (resume) {
        l->restore = malloc(sizeof *l->restore);
        if (!l->restore) fail = true;
    }
    if (fail) {
        loader_free(l);
        return addc_error_set(ADDC_ERR_NOMEM, "data: out of memory for the loader (%d slots of %dx%d)", l->nslots,
                              cfg->width, cfg->height);
    }
    LoaderState *m = &l->mirror;
    if (resume) {
        memcpy(l->restore, resume, sizeof *resume);
        memcpy(m, resume, sizeof *m);
        l->epoch = resume->epoch;
        l->pos = resume->shard_cursor;
        l->sample = resume->sample_cursor;
        l->produced = l->next_decode = l->consumed = resume->samples;
    } else {
        m->magic = LOADER_STATE_MAGIC;
        m->version = LOADER_STATE_VERSION;
        m->seed = cfg->seed;
        m->list_hash = l->list_hash;
        m->stream_hash = l->stream_hash;
        m->nshards = (uint32_t)l->shards.n;
        m->rank = cfg->rank;
        m->world = cfg->world;
        m->shuffle = cfg->shuffle;
        m->epoch = l->epoch = cfg->start_epoch;
    }
    l->order_epoch = -1;
    l->epoch_from_start = l->pos == 0 && l->sample == 0;
    l->holes = l->S;
    l->need_snapshot = l->S > 0;
    if (pthread_create(&l->reader_tid, NULL, reader_main, l) != 0) {
        loader_free(l);
        return addc_error_set(ADDC_ERR_EXTERNAL, "data: cannot start the reader thread");
    }
    l->reader_started = true;
    for (int32_t i = 0; i < l->threads; i++) {
        if (pthread_create(&l->worker_tids[i], NULL, worker_main, l) != 0) {
            loader_free(l);
            return addc_error_set(ADDC_ERR_EXTERNAL, "data: cannot start decode thread %d", i);
        }
        l->workers_started++;
    }
    *out = l;
    return ADDC_OK;
}

static void item_free(LoaderItem *it) { wds_sample_free(&it->s); }

void loader_free(Loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv_reader);
    pthread_cond_broadcast(&l->cv_worker);
    pthread_cond_broadcast(&l->cv_consumer);
    if (l->active) wds_reader_interrupt(l->active);
    pthread_mutex_unlock(&l->mu);
    if (l->reader_started) pthread_join(l->reader_tid, NULL);
    for (int32_t i = 0; i < l->workers_started; i++) pthread_join(l->worker_tids[i], NULL);
    if (l->ring)
        for (int32_t i = 0; i < l->nslots; i++) {
            free(l->ring[i].pixels);
            free(l->ring[i].snapshot);
            item_free(&l->ring[i].item);
        }
    if (l->buf)
        for (int32_t i = 0; i < l->S; i++) item_free(&l->buf[i]);
    item_free(&l->incoming);
    free(l->ring);
    free(l->buf);
    free(l->perm);
    free(l->order);
    free(l->worker_tids);
    free(l->restore);
    Batch *bt = &l->batch;
    free(bt->images);
    free(bt->captions);
    free(bt->keys);
    free(bt->original_size);
    free(bt->crop_top_left);
    free(bt->target_size);
    free(bt->flipped);
    free(bt->json);
    free(bt->ids);
    free(l->stroff);
    free(l->strbuf);
    shard_list_free(&l->shards);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv_reader);
    pthread_cond_destroy(&l->cv_worker);
    pthread_cond_destroy(&l->cv_consumer);
    free(l);
}
