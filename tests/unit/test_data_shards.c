/* tests/unit/test_data_shards: the work behind `addc shards`.
 *
 * - fmnist: converts the first 250 train and 120 test images of Debian's Fashion-MNIST
 *   (skipped, exit 77, when the package is absent) into shards of 100, checks the shard names,
 *   the spec printed, and that every sample reads back: 28 x 28 PNG equal to the idx pixels,
 *   caption "a photo of a <class>", json label equal to the idx label.
 * - check: on those shards (all good) and on the synthetic dataset with every bad input planted
 *   (tests/ref_data.h): the exact counts of each kind.
 * - stats: histograms add up.
 * - The addc program itself, when it was built next to this test: `addc shards --help`,
 *   `addc shards fmnist --limit`, `addc shards check` (exit codes 0 and 1), `addc shards stats`. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "core/json.h"
#include "data/shards.h"
#include "tests/ref_data.h"
#include "tests/test_util.h"

static uint8_t *gunzip(const char *path, int64_t *len) {
    struct archive *a = archive_read_new();
    archive_read_support_filter_gzip(a);
    archive_read_support_format_raw(a);
    struct archive_entry *e;
    uint8_t *buf = NULL;
    *len = 0;
    if (archive_read_open_filename(a, path, 65536) == ARCHIVE_OK && archive_read_next_header(a, &e) == ARCHIVE_OK) {
        int64_t cap = 1 << 20;
        buf = malloc((size_t)cap);
        la_ssize_t k;
        while ((k = archive_read_data(a, buf + *len, (size_t)(cap - *len))) > 0) {
            *len += k;
            if (*len == cap) buf = realloc(buf, (size_t)(cap *= 2));
        }
    }
    archive_read_free(a);
    return buf;
}

static void test_fmnist(const char *out) {
    FmnistOptions o = {.out_dir = out, .limit = 250, .per_shard = 100, .train = true, .test = true};
    FmnistResult res;
    Status st = shards_fmnist(&o, &res);
    CHECK(st == ADDC_OK, "fmnist: %s", addc_error_message());
    addc_error_clear();
    if (st != ADDC_OK) return;
    CHECK(res.split[0].samples == 250 && res.split[0].shards == 3 && res.split[1].samples == 250 && res.split[1].shards == 3,
          "fmnist: %lld/%lld train, %lld/%lld test", (long long)res.split[0].samples, (long long)res.split[0].shards,
          (long long)res.split[1].samples, (long long)res.split[1].shards);
    char want[600];
    snprintf(want, sizeof want, "%s/fmnist-train-{000000..000002}.tar", out);
    CHECK(!strcmp(res.split[0].spec, want), "spec %s", res.split[0].spec);
    /* read back against the idx files */
    char p[600];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", FMNIST_DEFAULT_DIR);
    int64_t il, ll;
    uint8_t *img = gunzip(p, &il);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", FMNIST_DEFAULT_DIR);
    uint8_t *lab = gunzip(p, &ll);
    ShardList list;
    CHECK_OK(shard_list_expand(res.split[0].spec, &list));
    static const char *const cls[10] = {"t-shirt/top", "trouser", "pullover", "dress", "coat",
                                        "sandal",      "shirt",   "sneaker",  "bag",   "ankle boot"};
    int64_t n = 0, good = 0;
    WdsSample s = {0};
    ImageU8 im = {0};
    for (int64_t i = 0; i < list.n; i++) {
        WdsReader *r;
        if (wds_reader_open(list.urls[i], NULL, NULL, &r) != ADDC_OK) continue;
        while (wds_reader_next(r, &s, true) == 1) {
            int label = lab[8 + n];
            char cap[64], key[32];
            snprintf(cap, sizeof cap, "a photo of %s %s", label == 9 ? "an" : "a", cls[label]);
            snprintf(key, sizeof key, "%06lld", (long long)n);
            int32_t oh, ow;
            DataCounter fail;
            bool ok = !strcmp(s.key, key) && s.caption.present && !strcmp((char *)s.caption.data, cap) &&
                      !strcmp(s.image_ext, "png") &&
                      image_decode(s.image.data, s.image.len, NULL, 0, 0, &im, &oh, &ow, &fail) == ADDC_OK && im.h == 28 &&
                      im.w == 28;
            for (int k = 0; ok && k < 784; k++) ok = im.data[3 * k] == img[16 + n * 784 + k] && im.data[3 * k + 2] == img[16 + n * 784 + k];
            JsonDoc d;
            int64_t jl = -1;
            if (ok && json_parse((char *)s.json.data, s.json.len, NULL, &d) == ADDC_OK) {
                json_int(json_get(&d, json_root(&d), "label"), &jl);
                json_free(&d);
            }
            ok = ok && jl == label;
            CHECK(ok, "fmnist train sample %lld (key %s, caption '%s')", (long long)n, s.key,
                  s.caption.present ? (char *)s.caption.data : "-");
            good += ok;
            n++;
        }
        wds_reader_close(r);
    }
    CHECK(n == 250 && good == 250, "fmnist read back: %lld of %lld samples match the idx data", (long long)good, (long long)n);
    printf("fmnist: 250 train + 250 test samples in 3 + 3 shards; %lld of 250 train samples match the idx pixels, "
           "labels and captions\n",
           (long long)good);
    wds_sample_free(&s);
    image_u8_free(&im);
    shard_list_free(&list);
    free(img);
    free(lab);
    /* check: all good */
    ShardCheckOptions co;
    shard_check_options_default(&co);
    ShardCheckResult tot;
    snprintf(p, sizeof p, "%s", out); /* a directory spec: every shard in it */
    CHECK_OK(shards_check(p, &co, NULL, NULL, &tot));
    CHECK(tot.shards == 6 && tot.samples == 500 && tot.good == 500 && data_stats_failures(&tot.stats) == 0 &&
              tot.stats.c[DATA_SAMPLES_DECODED] == 500,
          "check fmnist: %lld shards %lld samples %lld good", (long long)tot.shards, (long long)tot.samples,
          (long long)tot.good);
    ShardSizeStats ss;
    CHECK_OK(shards_size_stats(p, 0, &ss));
    CHECK(ss.images == 500 && ss.png == 500 && ss.short_side[0] == 500 && ss.aspect[0] == 500 && ss.min_short == 28 &&
              ss.max_long == 28 && ss.captions == 500,
          "stats fmnist: %lld images", (long long)ss.images);
    CHECK_OK(shards_size_stats(p, 123, &ss));
    CHECK(ss.images == 123, "stats limit: %lld", (long long)ss.images);
    /* no dataset there */
    FmnistOptions bad = o;
    bad.from = "/nonexistent";
    CHECK(shards_fmnist(&bad, &res) == ADDC_ERR_IO && strstr(addc_error_message(), "dataset-fashion-mnist"),
          "missing input names the package: %s", addc_error_message());
    addc_error_clear();
}

static void test_check_counts(void) {
    char dir[256];
    RefDataset ds;
    CHECK(ref_tmpdir(dir, "check") && ref_make_dataset(dir, 6, 12, 5, true, &ds), "dataset");
    char spec[600];
    snprintf(spec, sizeof spec, "%s/shard-{00..05}.tar::%s/missing.tar", dir, dir);
    ShardCheckOptions co;
    shard_check_options_default(&co);
    ShardCheckResult tot;
    CHECK_OK(shards_check(spec, &co, NULL, NULL, &tot));
    const DataStats *s = &tot.stats;
    CHECK(tot.shards == 7 && tot.samples == ds.groups - ds.truncated && tot.good == ds.check_good,
          "check: %lld shards, %lld samples (want %lld), %lld good (want %lld)", (long long)tot.shards,
          (long long)tot.samples, (long long)(ds.groups - ds.truncated), (long long)tot.good, (long long)ds.check_good);
    static const struct {
        DataCounter k;
        int64_t want;
    } exp[] = {{DATA_BAD_JPEG, 2},        {DATA_MISSING_CAPTION, 1}, {DATA_MISSING_IMAGE, 2},
               {DATA_KEY_NOT_ADJACENT, 1}, {DATA_SHARD_TRUNCATED, 1}, {DATA_MEMBER_EMPTY, 1},
               {DATA_MEMBER_NOT_REGULAR, 1}, {DATA_BAD_JSON, 1},       {DATA_SHARD_OPEN_FAILED, 1},
               {DATA_BAD_PNG, 0},           {DATA_MEMBER_TOO_LARGE, 0}, {DATA_PIPE_FAILED, 0}};
    for (size_t i = 0; i < sizeof exp / sizeof exp[0]; i++)
        CHECK(s->c[exp[i].k] == exp[i].want, "check counter '%s' = %lld, want %lld", data_counter_name(exp[i].k),
              (long long)s->c[exp[i].k], (long long)exp[i].want);
    char buf[4096];
    printf("check of the planted dataset (+ a missing shard):\n%s", data_stats_format(s, buf, sizeof buf));
    /* headers only: the truncated JPEG passes, the one with garbage in its header does not */
    co.decode = false;
    CHECK_OK(shards_check(spec, &co, NULL, NULL, &tot));
    CHECK(tot.stats.c[DATA_BAD_JPEG] == 1 && tot.stats.c[DATA_SAMPLES_DECODED] == 0, "no-decode: %lld bad JPEG",
          (long long)tot.stats.c[DATA_BAD_JPEG]);
    ref_rmtree(dir);
}

/* Runs the addc binary next to this test, if there is one; returns its exit code, -1 if absent. */
static int run_addc(const char *args, const char *out_file) {
    char self[512], cmd[2048];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    strcpy(slash + 1, "addc");
    if (access(self, X_OK) != 0) return -1;
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", self, args, out_file);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static void test_cli(const char *out) {
    char args[1200], log[600];
    snprintf(log, sizeof log, "%s/cli.log", out);
    int rc = run_addc("shards --help", log);
    if (rc < 0) {
        printf("cli: no addc binary next to this test (build the addc target to test the command line)\n");
        return;
    }
    int64_t len;
    char *text = (char *)ref_read_file(log, &len);
    CHECK(rc == 0 && text && strstr(text, "addc shards fmnist OUTDIR") && strstr(text, "--limit N") &&
              strstr(text, "addc shards check SHARDS") && strstr(text, "addc shards stats SHARDS"),
          "shards --help (rc %d)", rc);
    free(text);
    snprintf(args, sizeof args, "shards fmnist '%s/cli' --limit 30 --per-shard 16 --split test", out);
    rc = run_addc(args, log);
    text = (char *)ref_read_file(log, &len);
    CHECK(rc == 0 && text && strstr(text, "test: 30 samples in 2 shards") && strstr(text, "fmnist-test-{000000..000001}.tar"),
          "cli fmnist (rc %d): %s", rc, text ? text : "");
    free(text);
    snprintf(args, sizeof args, "shards check '%s/cli/fmnist-test-{000000..000001}.tar'", out);
    rc = run_addc(args, log);
    text = (char *)ref_read_file(log, &len);
    CHECK(rc == 0 && text && strstr(text, "total: 2 shards, 30 samples, 30 good") && strstr(text, "bad input: none"),
          "cli check (rc %d): %s", rc, text ? text : "");
    free(text);
    snprintf(args, sizeof args, "shards check '%s/cli/fmnist-test-000000.tar::%s/cli/nothing.tar' --quiet", out, out);
    rc = run_addc(args, log);
    text = (char *)ref_read_file(log, &len);
    CHECK(rc == 1 && text && strstr(text, "shard open failed") && !strstr(text, "ok   "), "cli check of a missing shard (rc %d)",
          rc);
    free(text);
    snprintf(args, sizeof args, "shards stats '%s/cli'", out);
    rc = run_addc(args, log);
    text = (char *)ref_read_file(log, &len);
    CHECK(rc == 0 && text && strstr(text, "30 images (0 JPEG, 30 PNG)") && strstr(text, "short side"), "cli stats (rc %d)", rc);
    free(text);
    rc = run_addc("shards fmnist", log);
    CHECK(rc == 2, "usage error exit code %d", rc);
    rc = run_addc("shards frobnicate", log);
    CHECK(rc == 2, "unknown action exit code %d", rc);
    printf("cli: addc shards --help / fmnist / check / stats behave as documented\n");
    snprintf(args, sizeof args, "%s/cli", out);
    ref_rmtree(args);
}

int main(void) {
    test_check_counts();
    struct stat sb;
    char p[600];
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", FMNIST_DEFAULT_DIR);
    if (stat(p, &sb) != 0) {
        printf("Fashion-MNIST not installed (%s): skipping the fmnist tests\n", p);
        int rc = test_main_end("data_shards");
        return rc ? rc : 77;
    }
    char out[256];
    CHECK(ref_tmpdir(out, "fmnist"), "tmpdir");
    test_fmnist(out);
    test_cli(out);
    ref_rmtree(out);
    return test_main_end("data_shards");
}
