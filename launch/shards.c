/* launch/shards: `addc shards`: build and check WebDataset shards (the work is in
 * data/shards.c; this file parses arguments and prints). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/shards.h"
#include "launch/cli.h"

static void shards_usage(FILE *f) {
    fprintf(f,
            "usage: addc shards fmnist OUTDIR [--from DIR] [--split train|test|both] [--limit N] [--per-shard N]\n"
            "       addc shards check SHARDS [--no-decode] [--no-caption] [--max-shards N] [--quiet]\n"
            "       addc shards stats SHARDS [--limit N]\n"
            "\n"
            "fmnist  converts Fashion-MNIST (Debian package dataset-fashion-mnist, read from\n"
            "        " FMNIST_DEFAULT_DIR " or --from DIR) into WebDataset shards\n"
            "        OUTDIR/fmnist-train-NNNNNN.tar and OUTDIR/fmnist-test-NNNNNN.tar: per sample KEY.png\n"
            "        (28x28 gray), KEY.txt (\"a photo of a <class>\") and KEY.json (label, class, split,\n"
            "        index, width, height). --split picks the splits (default both: 60000 + 10000 images),\n"
            "        --limit N converts only the first N images of each split, --per-shard N puts N\n"
            "        samples in a shard (default 10000). Shards are written under a temporary name, fsync'd\n"
            "        and renamed. Prints the shard spec of each split.\n"
            "check   reads every shard and every sample, decodes every image (--no-decode: headers only),\n"
            "        checks captions (--no-caption: a missing .txt is not an error) and json, and prints a\n"
            "        line per shard (--quiet: only the totals), then the totals and every kind of bad input\n"
            "        found. --max-shards N stops after N shards. Exit code 0 when nothing is wrong, 1 when\n"
            "        any sample or shard is bad, 2 for a usage error.\n"
            "stats   reads image headers (no decoding) and prints histograms of the short side, long side,\n"
            "        aspect ratio and file size of the images, and of caption lengths. --limit N stops\n"
            "        after N samples.\n"
            "\n"
            "SHARDS is a shard spec: brace patterns (data/{00000..00099}.tar), a directory (its *.tar,\n"
            "*.tar.gz, *.tgz), @FILE (one spec per line), pipe:CMD (CMD's output is the tar, e.g.\n"
            "'pipe:aws s3 cp s3://bucket/{000..999}.tar -'), several joined by '::'.\n");
}

static int parse_count(const char *opt, const char *v, int64_t *out) {
    char *end;
    long long n = v ? strtoll(v, &end, 10) : -1;
    if (!v || *end || n < 1) {
        fprintf(stderr, "addc shards: %s needs a positive integer (see addc shards --help)\n", opt);
        return 0;
    }
    *out = n;
    return 1;
}

static int cmd_fmnist(int argc, char **argv) {
    FmnistOptions o = {.train = true, .test = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--from") && v) o.from = argv[++i];
        else if (!strcmp(a, "--limit")) {
            if (!parse_count(a, v, &o.limit)) return 2;
            i++;
        } else if (!strcmp(a, "--per-shard")) {
            if (!parse_count(a, v, &o.per_shard)) return 2;
            i++;
        } else if (!strcmp(a, "--split") && v) {
            i++;
            o.train = !strcmp(v, "train") || !strcmp(v, "both");
            o.test = !strcmp(v, "test") || !strcmp(v, "both");
            if (!o.train && !o.test) {
                fprintf(stderr, "addc shards fmnist: --split is train, test or both, not '%s'\n", v);
                return 2;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "addc shards fmnist: unknown option or missing value '%s' (see addc shards --help)\n", a);
            return 2;
        } else if (!o.out_dir) o.out_dir = a;
        else {
            fprintf(stderr, "addc shards fmnist: one output directory only ('%s' is extra)\n", a);
            return 2;
        }
    }
    if (!o.out_dir) {
        fprintf(stderr, "addc shards fmnist: give the output directory (see addc shards --help)\n");
        return 2;
    }
    FmnistResult res;
    if (shards_fmnist(&o, &res) != ADDC_OK) return cli_fail("shards fmnist");
    static const char *const names[2] = {"train", "test"};
    for (int s = 0; s < 2; s++)
        if (res.split[s].shards)
            printf("%s: %lld samples in %lld shard%s (%.1f MiB): %s\n", names[s], (long long)res.split[s].samples,
                   (long long)res.split[s].shards, res.split[s].shards == 1 ? "" : "s", res.split[s].bytes / 1048576.0,
                   res.split[s].spec);
    return 0;
}

static void print_check_line(const ShardCheckResult *r, void *user) {
    if (*(int *)user) return;
    int64_t bad = data_stats_failures(&r->stats);
    printf("%-4s %s: %lld samples, %lld good, %.2f MiB%s\n", bad || r->good < r->samples ? "BAD" : "ok", r->url,
           (long long)r->samples, (long long)r->good, r->bytes / 1048576.0, bad ? " (see totals)" : "");
}

static int cmd_check(int argc, char **argv) {
    ShardCheckOptions o;
    shard_check_options_default(&o);
    const char *spec = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--no-decode")) o.decode = false;
        else if (!strcmp(a, "--no-caption")) o.require_caption = false;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (!strcmp(a, "--max-shards")) {
            if (!parse_count(a, i + 1 < argc ? argv[i + 1] : NULL, &o.max_shards)) return 2;
            i++;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "addc shards check: unknown option '%s' (see addc shards --help)\n", a);
            return 2;
        } else if (!spec) spec = a;
        else {
            fprintf(stderr, "addc shards check: one shard spec only (join several with '::')\n");
            return 2;
        }
    }
    if (!spec) {
        fprintf(stderr, "addc shards check: give the shards to check (see addc shards --help)\n");
        return 2;
    }
    ShardCheckResult tot;
    if (shards_check(spec, &o, print_check_line, &quiet, &tot) != ADDC_OK) return cli_fail("shards check");
    char summary[4096];
    printf("total: %lld shards, %lld samples, %lld good, %.2f MiB (images %.2f MiB)\n%s", (long long)tot.shards,
           (long long)tot.samples, (long long)tot.good, tot.bytes / 1048576.0, tot.image_bytes / 1048576.0,
           data_stats_format(&tot.stats, summary, sizeof summary));
    return data_stats_failures(&tot.stats) || tot.good < tot.samples ? 1 : 0;
}

static void print_hist(const char *title, char kind, const int64_t *h, int n, int64_t total) {
    printf("%s:\n", title);
    for (int i = 0; i < n; i++) {
        int bar = total ? (int)(40.0 * h[i] / total + 0.5) : 0;
        printf("  %-14s %9lld %5.1f%% %.*s\n", shard_hist_label(kind, i), (long long)h[i], total ? 100.0 * h[i] / total : 0.0,
               bar, "########################################");
    }
}

static int cmd_stats(int argc, char **argv) {
    const char *spec = NULL;
    int64_t limit = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--limit")) {
            if (!parse_count(argv[i], i + 1 < argc ? argv[i + 1] : NULL, &limit)) return 2;
            i++;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "addc shards stats: unknown option '%s' (see addc shards --help)\n", argv[i]);
            return 2;
        } else if (!spec) spec = argv[i];
        else {
            fprintf(stderr, "addc shards stats: one shard spec only (join several with '::')\n");
            return 2;
        }
    }
    if (!spec) {
        fprintf(stderr, "addc shards stats: give the shards (see addc shards --help)\n");
        return 2;
    }
    ShardSizeStats st;
    if (shards_size_stats(spec, limit, &st) != ADDC_OK) return cli_fail("shards stats");
    printf("%lld images (%lld JPEG, %lld PNG), %lld unreadable headers; mean size %.0f x %.0f, smallest short side %lld, "
           "largest long side %lld\n",
           (long long)st.images, (long long)st.jpeg, (long long)st.png, (long long)st.unreadable,
           st.images ? st.sum_w / st.images : 0.0, st.images ? st.sum_h / st.images : 0.0, (long long)st.min_short,
           (long long)st.max_long);
    print_hist("short side (px)", 's', st.short_side, SHARD_HIST_SIDE, st.images);
    print_hist("long side (px)", 's', st.long_side, SHARD_HIST_SIDE, st.images);
    print_hist("aspect ratio (long / short)", 'a', st.aspect, SHARD_HIST_ASPECT, st.images);
    print_hist("image file size", 'b', st.bytes, SHARD_HIST_BYTES, st.images);
    printf("%lld captions\n", (long long)st.captions);
    print_hist("caption length (bytes)", 'c', st.caption_len, SHARD_HIST_CAPTION, st.captions);
    char summary[4096];
    printf("%s", data_stats_format(&st.stats, summary, sizeof summary));
    return 0;
}

int cmd_shards(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        shards_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            shards_usage(stdout);
            return 0;
        }
    if (!strcmp(argv[1], "fmnist")) return cmd_fmnist(argc - 1, argv + 1);
    if (!strcmp(argv[1], "check")) return cmd_check(argc - 1, argv + 1);
    if (!strcmp(argv[1], "stats")) return cmd_stats(argc - 1, argv + 1);
    fprintf(stderr, "addc shards: unknown action '%s': fmnist, check or stats (see addc shards --help)\n", argv[1]);
    return 2;
}
