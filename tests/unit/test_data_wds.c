/* tests/unit/test_data_wds: shard specs and the streaming tar reader.
 *
 * - Brace expansion against Python braceexpand's output (cases run through braceexpand 0.1.7,
 *   the version webdataset uses), '::' lists, @FILE lists, directories, pipe: and file: urls.
 * - The Python round trip: the shards webdataset.ShardWriter wrote (tests/ref/fixtures/wds) read
 *   back with the same keys (including "dirN/..." keys), captions (UTF-8, byte for byte), json
 *   and image extensions, in the same order; the same through "pipe:cat" and through a gzip
 *   pipe (compressed tar).
 * - The broken-shard corpus, built here as raw tar bytes: truncated in a member and in a header,
 *   zero-length member, huge declared size (8 GiB) and an over-limit member, symlink / hard link
 *   / directory / device / fifo entries, non-adjacent keys, duplicate members, bad names, not a
 *   tar, missing file, failing pipe command: each counted exactly, nothing crashes, the good
 *   samples around them are kept.
 * - The writer: what wds_writer writes reads back identically, no temporary file left. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/wds.h"
#include "tests/ref_data.h"
#include "tests/test_util.h"

static void expect_expand(const char *pattern, const char *const *want, int n) {
    ShardList l;
    Status st = brace_expand(pattern, 0, &l);
    CHECK(st == ADDC_OK, "'%s': %s", pattern, addc_error_message());
    addc_error_clear();
    if (st != ADDC_OK) return;
    int same = l.n == n;
    for (int i = 0; same && i < n; i++) same = !strcmp(l.urls[i], want[i]);
    CHECK(same, "'%s' expands to %lld names, first '%s' (want %d, first '%s')", pattern, (long long)l.n,
          l.n ? l.urls[0] : "", n, n ? want[0] : "");
    shard_list_free(&l);
}

#define EXPECT(pattern, ...)                                                                    \
    do {                                                                                        \
        static const char *const w_[] = {__VA_ARGS__};                                          \
        expect_expand(pattern, w_, (int)(sizeof w_ / sizeof w_[0]));                            \
    } while (0)

static void test_braces(void) {
    /* expected lists printed by Python: list(braceexpand.braceexpand(pattern)) */
    EXPECT("a{1..3}b", "a1b", "a2b", "a3b");
    EXPECT("{07..10}", "07", "08", "09", "10");
    EXPECT("{00000..00003}.tar", "00000.tar", "00001.tar", "00002.tar", "00003.tar");
    EXPECT("x{9..7}", "x9", "x8", "x7");
    EXPECT("{1..10..3}", "1", "4", "7", "10");
    EXPECT("{a..e..2}", "a", "c", "e");
    EXPECT("{Z..b}", "Z", "a", "b");
    EXPECT("{e..a}", "e", "d", "c", "b", "a");
    EXPECT("python{2.{5..7},3.{2,3}}", "python2.5", "python2.6", "python2.7", "python3.2", "python3.3");
    EXPECT("{a,b}{1,2}", "a1", "a2", "b1", "b2");
    EXPECT("{,x}y", "y", "xy");
    EXPECT("{}", "{}");
    EXPECT("{x}", "{x}");
    EXPECT("a\\{1,2\\}", "a{1,2}");
    EXPECT("{-3..2}", "-3", "-2", "-1", "0", "1", "2");
    EXPECT("{-01..2}", "-01", "000", "001", "002");
    EXPECT("{0..-02}", "000", "-01", "-02");
    EXPECT("{1..4..-2}", "1", "3");
    EXPECT("{a,{b,c}d}", "a", "bd", "cd");
    EXPECT("pipe:cat s/{0..1}.tar", "pipe:cat s/0.tar", "pipe:cat s/1.tar");
    EXPECT("plain.tar", "plain.tar");
    ShardList l;
    CHECK(brace_expand("{00000..41455}.tar", 0, &l) == ADDC_OK && l.n == 41456 && !strcmp(l.urls[41455], "41455.tar") &&
              !strcmp(l.urls[7], "00007.tar"),
          "LAION-sized range");
    shard_list_free(&l);
    CHECK(brace_expand("{1{2,3}", 0, &l) == ADDC_ERR_INVALID && strstr(addc_error_message(), "unbalanced"), "unbalanced: %s",
          addc_error_message());
    addc_error_clear();
    CHECK(brace_expand("{0..99999999}", 1000, &l) == ADDC_ERR_INVALID, "expansion limit");
    addc_error_clear();
    CHECK(brace_expand("{0..99}{0..99}", 1000, &l) == ADDC_ERR_INVALID, "product limit");
    addc_error_clear();
}

static void test_specs(void) {
    char dir[256];
    CHECK(ref_tmpdir(dir, "spec"), "tmpdir");
    char p[512];
    const char *names[] = {"b.tar", "a.tar", "c.tgz", "d.tar.gz", "notes.txt"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        ref_write_file(p, "x", 1);
    }
    snprintf(p, sizeof p, "%s/list.txt", dir);
    ref_write_file(p, "# a comment\n\n  s/{0..2}.tar  \npipe:cat x.tar\n", 44);
    char spec[1200];
    snprintf(spec, sizeof spec, "%s::@%s/list.txt:: file:/f.tar ::x{1,2}.tar", dir, dir);
    ShardList l;
    Status st = shard_list_expand(spec, &l);
    CHECK(st == ADDC_OK, "spec: %s", addc_error_message());
    static const char *const want_tail[] = {"s/0.tar", "s/1.tar", "s/2.tar", "pipe:cat x.tar", "/f.tar", "x1.tar", "x2.tar"};
    if (st == ADDC_OK) {
        CHECK(l.n == 11, "spec expands to %lld urls", (long long)l.n);
        if (l.n == 11) {
            snprintf(p, sizeof p, "%s/a.tar", dir);
            CHECK(!strcmp(l.urls[0], p), "directory sorted: %s", l.urls[0]);
            CHECK(strstr(l.urls[1], "/b.tar") && strstr(l.urls[2], "/c.tgz") && strstr(l.urls[3], "/d.tar.gz"),
                  "directory entries");
            for (int i = 0; i < 7; i++) CHECK(!strcmp(l.urls[4 + i], want_tail[i]), "url %d: %s", 4 + i, l.urls[4 + i]);
        }
        shard_list_free(&l);
    }
    addc_error_clear();
    CHECK(shard_list_expand("", &l) == ADDC_ERR_INVALID && strstr(addc_error_message(), "names no shards"), "empty spec");
    addc_error_clear();
    CHECK(shard_list_expand("@/nonexistent/list", &l) == ADDC_ERR_IO, "missing list file");
    addc_error_clear();
    snprintf(p, sizeof p, "%s/list.txt", dir);
    ref_write_file(p, "ok.tar\nbad{1.tar\n", 17);
    snprintf(spec, sizeof spec, "@%s/list.txt", dir);
    CHECK(shard_list_expand(spec, &l) == ADDC_ERR_INVALID && strstr(addc_error_message(), "list.txt:2"),
          "error names the list line: %s", addc_error_message());
    addc_error_clear();
    ref_rmtree(dir);
}

static void read_fixture_via(const RefWdsFixture *f, const char *spec_fmt, const char *what) {
    int idx = 0, ok = 1;
    for (int i = 0; i < f->n; i++) {
        if (i > 0 && !strcmp(f->s[i].shard, f->s[i - 1].shard)) continue;
        char url[1200], path[800];
        snprintf(path, sizeof path, "%s/%s", f->dir, f->s[i].shard);
        snprintf(url, sizeof url, spec_fmt, path);
        DataStats st = {0};
        WdsReader *r;
        if (wds_reader_open(url, NULL, &st, &r) != ADDC_OK) {
            CHECK(0, "%s: open %s: %s", what, url, addc_error_message());
            addc_error_clear();
            return;
        }
        WdsSample s = {0};
        int rc;
        uint32_t ord = 0;
        while ((rc = wds_reader_next(r, &s, true)) == 1) {
            const RefWdsSample *w = idx < f->n ? &f->s[idx] : NULL;
            if (!w) {
                ok = 0;
                break;
            }
            int good = !strcmp(s.key, w->key) && s.caption.present && s.caption.len == (int64_t)strlen(w->caption) &&
                       !memcmp(s.caption.data, w->caption, (size_t)s.caption.len) && s.json.present && s.image.present &&
                       !strcmp(s.image_ext, w->ext) && s.ordinal == ord && !strcmp(f->s[idx].shard, f->s[i].shard);
            CHECK(good, "%s: sample %d: key '%s' (want '%s'), caption '%s' (want '%s'), ext %s, ordinal %u", what, idx,
                  s.key, w->key, s.caption.present ? (char *)s.caption.data : "-", w->caption, s.image_ext, s.ordinal);
            ok &= good;
            idx++;
            ord++;
        }
        CHECK(rc == 0, "%s: %s ended with %d: %s", what, url, rc, addc_error_message());
        addc_error_clear();
        CHECK(wds_reader_close(r) == ADDC_OK, "%s: close: %s", what, addc_error_message());
        addc_error_clear();
        CHECK(data_stats_failures(&st) == 0 && st.c[DATA_SHARDS_FINISHED] == 1, "%s: clean shard counted %lld failures", what,
              (long long)data_stats_failures(&st));
        wds_sample_free(&s);
    }
    CHECK(idx == f->n && ok, "%s: %d of %d samples matched", what, idx, f->n);
    printf("%s: %d samples, keys, captions and parts as Python webdataset read them\n", what, idx);
}

static void test_python_roundtrip(void) {
    RefWdsFixture f;
    if (!ref_wds_fixture_load(&f)) {
        CHECK(0, "cannot load tests/ref/fixtures/wds (run tests/ref/make_wds_shards.py)");
        return;
    }
    read_fixture_via(&f, "%s", "file");
    read_fixture_via(&f, "pipe:cat '%s'", "pipe:cat");
    read_fixture_via(&f, "pipe:gzip -c '%s'", "pipe:gzip (compressed tar)");
    ref_wds_fixture_free(&f);
}

/* Reads a tar held in memory; returns the samples' keys joined with '|' (parts as
 * key:parts where parts lists i c j for image, caption, json) and the counters. */
static int read_mem(const RefTar *t, const WdsLimits *lim, char *out, size_t cap, DataStats *st, int *last_rc) {
    memset(st, 0, sizeof *st);
    out[0] = 0;
    WdsReader *r;
    if (wds_reader_open_memory(t->buf, (size_t)t->len, lim, st, &r) != ADDC_OK) {
        addc_error_clear();
        *last_rc = -2;
        return 0;
    }
    WdsSample s = {0};
    int n = 0, rc;
    size_t w = 0;
    while ((rc = wds_reader_next(r, &s, true)) == 1) {
        w += (size_t)snprintf(out + w, cap - w, "%s%s:%s%s%s", n ? "|" : "", s.key, s.image.present ? "i" : "",
                              s.caption.present ? "c" : "", s.json.present ? "j" : "");
        n++;
    }
    *last_rc = rc;
    addc_error_clear();
    wds_reader_close(r);
    addc_error_clear();
    wds_sample_free(&s);
    return n;
}

static void test_broken(void) {
    uint8_t *rgb = ref_image_rgb(16, 16, 1);
    int64_t jl;
    uint8_t *jpg = ref_jpeg_encode(rgb, 16, 16, 90, 2, &jl);
    uint8_t *bigrgb = ref_image_rgb(64, 64, 2);
    int64_t bjl;
    uint8_t *bigjpg = ref_jpeg_encode(bigrgb, 64, 64, 95, 0, &bjl);
    CHECK(jl < 1000 && bjl > 1000, "test images: %lld and %lld bytes", (long long)jl, (long long)bjl);
    char got[4096];
    DataStats st;
    int rc;
    WdsLimits lim;
    wds_limits_default(&lim);

    /* a clean shard for reference, with a meta file, dir-prefixed and upper-case names */
    RefTar t = {0};
    ref_tar_text(&t, "__meta__", "ignored");
    ref_tar_file(&t, "a.jpg", jpg, jl);
    ref_tar_text(&t, "a.txt", "caption a");
    ref_tar_text(&t, "a.json", "{}");
    ref_tar_file(&t, "sub/b.JPG", jpg, jl);
    ref_tar_text(&t, "sub/b.TXT", "caption b");
    ref_tar_text(&t, "c.d.txt", "multi-dot: key c, extension d.txt (not a caption)");
    ref_tar_end(&t);
    int n = read_mem(&t, &lim, got, sizeof got, &st, &rc);
    CHECK(n == 3 && !strcmp(got, "a:icj|sub/b:ic|c:") && rc == 0, "clean: %d samples '%s' rc %d", n, got, rc);
    CHECK(data_stats_failures(&st) == 0 && st.c[DATA_MEMBERS_IGNORED] == 2 && st.c[DATA_SAMPLES_READ] == 3,
          "clean counters: %lld failures, %lld ignored", (long long)data_stats_failures(&st),
          (long long)st.c[DATA_MEMBERS_IGNORED]);
    RefTar clean = t;

    /* truncated inside a member's data: samples before it kept, the broken one dropped */
    RefTar cut = {0};
    ref_tar_file(&cut, "a.jpg", jpg, jl);
    ref_tar_text(&cut, "a.txt", "caption a");
    ref_tar_file(&cut, "b.jpg", jpg, jl);
    ref_tar_text(&cut, "b.txt", "caption b");
    int64_t full = cut.len;
    cut.len = full - 512 - 300; /* into b.jpg's data */
    n = read_mem(&cut, &lim, got, sizeof got, &st, &rc);
    CHECK(n == 1 && !strcmp(got, "a:ic") && rc == -1 && st.c[DATA_SHARD_TRUNCATED] == 1, "truncated member: '%s' rc %d, %lld",
          got, rc, (long long)st.c[DATA_SHARD_TRUNCATED]);
    cut.len = full - 200; /* inside the last header */
    n = read_mem(&cut, &lim, got, sizeof got, &st, &rc);
    CHECK(n == 1 && rc == -1 && st.c[DATA_SHARD_TRUNCATED] == 1, "truncated header: %d '%s' rc %d %lld", n, got, rc,
          (long long)st.c[DATA_SHARD_TRUNCATED]);
    cut.len = full; /* no end-of-archive blocks: a clean end for libarchive, as for Python */
    n = read_mem(&cut, &lim, got, sizeof got, &st, &rc);
    CHECK(n == 2 && rc == 0 && data_stats_failures(&st) == 0, "missing end blocks: %d '%s' rc %d", n, got, rc);
    ref_tar_free(&cut);

    /* zero-length member, huge declared size, over-limit member */
    t = (RefTar){0};
    ref_tar_file(&t, "a.jpg", jpg, jl);
    ref_tar_text(&t, "a.txt", "");
    ref_tar_file(&t, "b.jpg", jpg, jl);
    ref_tar_text(&t, "b.txt", "caption b");
    ref_tar_file(&t, "big.jpg", bigjpg, bjl); /* above a 1000-byte limit */
    ref_tar_text(&t, "big.txt", "caption big");
    ref_tar_member(&t, "huge.jpg", '0', jpg, 100, 077777777777ll); /* declares 8 GiB, 100 bytes follow */
    ref_tar_end(&t);
    WdsLimits small = lim;
    small.max_image_bytes = 1000;
    n = read_mem(&t, &lim, got, sizeof got, &st, &rc);
    CHECK(n == 3 && !strcmp(got, "a:i|b:ic|big:ic") && rc == -1 && st.c[DATA_MEMBER_EMPTY] == 1 &&
              st.c[DATA_MEMBER_TOO_LARGE] == 1 && st.c[DATA_SHARD_TRUNCATED] == 1,
          "empty + huge: '%s' rc %d empty %lld large %lld truncated %lld", got, rc, (long long)st.c[DATA_MEMBER_EMPTY],
          (long long)st.c[DATA_MEMBER_TOO_LARGE], (long long)st.c[DATA_SHARD_TRUNCATED]);
    n = read_mem(&t, &small, got, sizeof got, &st, &rc);
    CHECK(n == 3 && !strcmp(got, "a:i|b:ic|big:c") && st.c[DATA_MEMBER_TOO_LARGE] == 2, "limit: '%s' large %lld", got,
          (long long)st.c[DATA_MEMBER_TOO_LARGE]);
    ref_tar_free(&t);

    /* non-regular entries do not split a sample */
    t = (RefTar){0};
    ref_tar_file(&t, "a.jpg", jpg, jl);
    ref_tar_member(&t, "a.lnk", '2', NULL, 0, -1);
    ref_tar_member(&t, "a.hard", '1', NULL, 0, -1);
    ref_tar_member(&t, "adir/", '5', NULL, 0, -1);
    ref_tar_member(&t, "a.dev", '3', NULL, 0, -1);
    ref_tar_member(&t, "a.fifo", '6', NULL, 0, -1);
    ref_tar_text(&t, "a.txt", "caption a");
    ref_tar_end(&t);
    n = read_mem(&t, &lim, got, sizeof got, &st, &rc);
    CHECK(n == 1 && !strcmp(got, "a:ic") && st.c[DATA_MEMBER_NOT_REGULAR] == 5 && data_stats_failures(&st) == 5,
          "non-regular: '%s' %lld", got, (long long)st.c[DATA_MEMBER_NOT_REGULAR]);
    ref_tar_free(&t);

    /* a key that comes back: webdataset starts a new sample; counted */
    t = (RefTar){0};
    ref_tar_file(&t, "a.jpg", jpg, jl);
    ref_tar_file(&t, "b.jpg", jpg, jl);
    ref_tar_text(&t, "b.txt", "caption b");
    ref_tar_text(&t, "a.txt", "caption a");
    ref_tar_file(&t, "c.jpg", jpg, jl);
    ref_tar_file(&t, "c.jpg", jpg, jl); /* duplicate */
    ref_tar_text(&t, "c.txt", "caption c");
    ref_tar_text(&t, "noext", "x");
    ref_tar_text(&t, ".hidden", "x");
    ref_tar_text(&t, "d/.x.txt", "x");
    ref_tar_end(&t);
    n = read_mem(&t, &lim, got, sizeof got, &st, &rc);
    CHECK(n == 4 && !strcmp(got, "a:i|b:ic|a:c|c:ic") && st.c[DATA_KEY_NOT_ADJACENT] == 1 &&
              st.c[DATA_MEMBER_DUPLICATE] == 1 && st.c[DATA_MEMBER_BAD_NAME] == 3,
          "non-adjacent / duplicate / names: '%s' %lld %lld %lld", got, (long long)st.c[DATA_KEY_NOT_ADJACENT],
          (long long)st.c[DATA_MEMBER_DUPLICATE], (long long)st.c[DATA_MEMBER_BAD_NAME]);
    ref_tar_free(&t);

    /* not a tar; an empty stream */
    static const uint8_t junk[2048] = "this is not a tar archive";
    t = (RefTar){(uint8_t *)junk, sizeof junk, 0};
    n = read_mem(&t, &lim, got, sizeof got, &st, &rc);
    CHECK(n == 0 && rc < 0 && st.c[DATA_SHARD_OPEN_FAILED] == 1, "not a tar: rc %d open_failed %lld", rc,
          (long long)st.c[DATA_SHARD_OPEN_FAILED]);

    /* files and pipes */
    char dir[256], path[512], url[700];
    CHECK(ref_tmpdir(dir, "wds"), "tmpdir");
    snprintf(path, sizeof path, "%s/clean.tar", dir);
    ref_write_file(path, clean.buf, clean.len);
    DataStats fs = {0};
    WdsReader *r;
    snprintf(url, sizeof url, "%s/missing.tar", dir);
    CHECK(wds_reader_open(url, &lim, &fs, &r) == ADDC_ERR_IO && fs.c[DATA_SHARD_OPEN_FAILED] == 1 &&
              strstr(addc_error_message(), "missing.tar"),
          "missing file: %s", addc_error_message());
    addc_error_clear();
    snprintf(url, sizeof url, "%s/empty.tar", dir);
    ref_write_file(url, "", 0);
    memset(&fs, 0, sizeof fs);
    WdsSample s = {0};
    if (wds_reader_open(url, &lim, &fs, &r) == ADDC_OK) {
        rc = wds_reader_next(r, &s, true);
        wds_reader_close(r);
    }
    CHECK(rc <= 0 && data_stats_failures(&fs) <= 1, "empty file: rc %d", rc);
    addc_error_clear();
    memset(&fs, 0, sizeof fs);
    snprintf(url, sizeof url, "pipe:cat '%s'; exit 3", path);
    CHECK(wds_reader_open(url, &lim, &fs, &r) == ADDC_OK, "pipe open");
    n = 0;
    while ((rc = wds_reader_next(r, &s, true)) == 1) n++;
    Status cst = wds_reader_close(r);
    CHECK(n == 3 && rc == 0 && cst == ADDC_ERR_IO && fs.c[DATA_PIPE_FAILED] == 1 && strstr(addc_error_message(), "status 3"),
          "failing pipe: %d samples, close %d: %s", n, cst, addc_error_message());
    addc_error_clear();
    memset(&fs, 0, sizeof fs);
    rc = 1;
    if (wds_reader_open("pipe:exit 1", &lim, &fs, &r) == ADDC_OK) { /* libarchive may notice at open or at read */
        rc = wds_reader_next(r, &s, true);
        wds_reader_close(r);
    } else {
        rc = -1;
    }
    CHECK(rc == -1 && fs.c[DATA_SHARD_OPEN_FAILED] == 1, "pipe with no output: rc %d, %lld", rc,
          (long long)fs.c[DATA_SHARD_OPEN_FAILED]);
    addc_error_clear();
    /* closing a pipe early stops the command, counts no failure */
    memset(&fs, 0, sizeof fs);
    snprintf(url, sizeof url, "pipe:cat '%s'; sleep 30", path);
    CHECK(wds_reader_open(url, &lim, &fs, &r) == ADDC_OK, "pipe open");
    rc = wds_reader_next(r, &s, true);
    CHECK(rc == 1 && wds_reader_close(r) == ADDC_OK && data_stats_failures(&fs) == 0, "early close");
    addc_error_clear();
    /* headers-only reading reports sizes without data */
    snprintf(url, sizeof url, "%s", path);
    CHECK(wds_reader_open(url, &lim, NULL, &r) == ADDC_OK, "open");
    rc = wds_reader_next(r, &s, false);
    CHECK(rc == 1 && s.image.present && !s.image.loaded && s.image.len == jl && wds_reader_ordinal(r) == 1, "skip data: len %lld",
          (long long)s.image.len);
    rc = wds_reader_next(r, &s, true);
    CHECK(rc == 1 && !strcmp(s.key, "sub/b") && s.caption.len == 9 && !memcmp(s.caption.data, "caption b", 9), "after skip");
    wds_reader_close(r);
    wds_sample_free(&s);

    /* the writer */
    snprintf(path, sizeof path, "%s/w.tar", dir);
    WdsWriter *w;
    CHECK_OK(wds_writer_open(path, &w));
    CHECK_OK(wds_writer_add(w, "k1.jpg", jpg, jl));
    CHECK_OK(wds_writer_add(w, "k1.txt", "hello \xc3\xa9", 8));
    CHECK_OK(wds_writer_add(w, "k2.txt", "", 0));
    CHECK_OK(wds_writer_close(w));
    struct stat sb;
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(stat(path, &sb) == 0 && stat(tmp, &sb) != 0, "writer renamed its temporary file");
    memset(&fs, 0, sizeof fs);
    CHECK(wds_reader_open(path, &lim, &fs, &r) == ADDC_OK, "open written");
    rc = wds_reader_next(r, &s, true);
    CHECK(rc == 1 && !strcmp(s.key, "k1") && s.image.len == jl && !memcmp(s.image.data, jpg, (size_t)jl) &&
              s.caption.len == 8 && !memcmp(s.caption.data, "hello \xc3\xa9", 8),
          "written sample reads back");
    rc = wds_reader_next(r, &s, true);
    CHECK(rc == 1 && !strcmp(s.key, "k2") && !s.caption.present && fs.c[DATA_MEMBER_EMPTY] == 1, "empty member written");
    CHECK(wds_reader_next(r, &s, true) == 0, "end");
    wds_reader_close(r);
    wds_sample_free(&s);
    ref_rmtree(dir);
    ref_tar_free(&clean);
    free(jpg);
    free(rgb);
    free(bigjpg);
    free(bigrgb);
}

int main(void) {
    test_braces();
    test_specs();
    test_python_roundtrip();
    test_broken();
    return test_main_end("data_wds");
}
