/* tests/unit/test_eval: `addc eval` end to end, through the addc program built beside this test, on
 * tiny random networks (tiny_unet student and teacher, the toy evaluation convnet with fresh
 * weights) and Fashion-MNIST shards made here with shards_fmnist:
 *   - a generated evaluation runs: a markdown table (header once, a row per run), a JSON line with
 *     finite FD, accuracies, diversities and seconds, the images saved as PNGs;
 *   - the same command twice gives the same JSON numbers (all but s_per_image, which is last);
 *   - eval.batch does not change the images (noise keyed by the global index): the saved PNGs agree
 *     to one 8-bit level and the FD to 1e-4 (float sums in the networks may differ with the batch,
 *     which can flip a rounding);
 *   - --real: the random classifier is near chance on the real images, the FD floor is finite;
 *   - bad input is refused with a message naming the key (no prompts, a prompt count that is not
 *     the classifier's labels, missing shards, a non-classifier eval net) or a usage error (exit 2).
 * Skips (77) without the Fashion-MNIST files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "data/image.h"
#include "data/shards.h"
#include "tests/test_util.h"

static char addc[1024], tmp[256], cmdbuf[12288];

static int run(const char *args, const char *log) { return test_addc_run(addc, NULL, args, tmp, log); }


static char *tmp_path(const char *name, char *out) {
    snprintf(out, 600, "%s/%s", tmp, name);
    return out;
}

/* line i (0-based) of a text file, malloc'd, or NULL */
static char *file_line(const char *path, int i) {
    char *s = test_slurp(path, NULL), *line = s;
    for (int k = 0; line && k < i; k++) {
        line = strchr(line, '\n');
        if (line) line++;
    }
    char *out = NULL;
    if (line && *line) {
        size_t n = strcspn(line, "\n");
        out = malloc(n + 1);
        memcpy(out, line, n);
        out[n] = 0;
    }
    free(s);
    return out;
}

static int count_lines(const char *path) {
    char *s = test_slurp(path, NULL);
    int n = 0;
    for (char *p = s; p && *p; p++) n += *p == '\n';
    free(s);
    return n;
}

/* number `key` of a JSON line (NAN when absent or null) */
static double json_value(const char *line, const char *key) {
    JsonDoc doc;
    double v = NAN;
    if (!line || json_parse(line, (int64_t)strlen(line), NULL, &doc) != ADDC_OK) return NAN;
    if (!json_number(json_get(&doc, json_root(&doc), key), &v)) v = NAN;
    json_free(&doc);
    return v;
}

static void check_refused(const char *args, const char *log, const char *what, int want_rc, const char *word) {
    char p[600];
    int rc = run(args, log);
    char *msg = test_slurp(tmp_path(log, p), NULL);
    printf("%s: exit %d, %s", what, rc, msg && strstr(msg, "addc") ? strstr(msg, "addc") : "(no message)\n");
    CHECK(rc == want_rc, "%s: exit %d, want %d", what, rc, want_rc);
    CHECK(msg && strstr(msg, word), "%s: the message does not say '%s'", what, word);
    free(msg);
}

/* decoded PNG pixels, malloc'd; *n their count */
static uint8_t *png_pixels(const char *path, int64_t *n) {
    char *buf = test_slurp(path, NULL);
    int64_t len = 0;
    FILE *f = fopen(path, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        len = ftell(f);
        fclose(f);
    }
    ImageLimits lim;
    image_limits_default(&lim);
    ImageU8 im = {0};
    int32_t oh, ow;
    DataCounter fail;
    uint8_t *px = NULL;
    *n = 0;
    if (buf && image_decode((const uint8_t *)buf, len, &lim, 0, 0, &im, &oh, &ow, &fail) == ADDC_OK) {
        *n = (int64_t)im.h * im.w * 3;
        px = malloc((size_t)*n);
        memcpy(px, im.data, (size_t)*n);
    }
    image_u8_free(&im);
    free(buf);
    return px;
}

/* the largest 8-bit difference between two PNGs of the same size (256: unreadable or sizes differ) */
static int png_max_diff(const char *a, const char *b) {
    int64_t na, nb;
    uint8_t *x = png_pixels(a, &na), *y = png_pixels(b, &nb);
    int d = x && y && na == nb && na > 0 ? 0 : 256;
    for (int64_t i = 0; d < 256 && i < na; i++) d = abs((int)x[i] - (int)y[i]) > d ? abs((int)x[i] - (int)y[i]) : d;
    free(x);
    free(y);
    return d;
}

#define PER_CLASS 4
#define COMMON                                                                                                       \
    "eval configs/train/toy_add.yaml data.shards=%s/fm/fmnist-train-{000000..000001}.tar data.size=16 "               \
    "data.channels=1 data.threads=1 codec.kind=unshuffle text.source=none student.config=configs/models/tiny_unet.yaml " \
    "teacher.config=configs/models/tiny_unet.yaml teacher.weights= teacher.init_seed=3 "                              \
    "eval.shards=%s/fm/fmnist-test-{000000..000001}.tar eval.net.config=configs/models/toy_evalnet.yaml "             \
    "eval.net.weights= eval.net.init_seed=1 eval.per_class=4 eval.real_max=60"
#define PROMPTS "'eval.prompts=[t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot]'"

int main(void) {
    if (access(FMNIST_DEFAULT_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("test_eval: skipped (no Fashion-MNIST in " FMNIST_DEFAULT_DIR ")\n");
        return 77;
    }
    if (!test_addc_locate(addc, sizeof addc)) return test_main_end("eval");
    snprintf(tmp, sizeof tmp, "/tmp/addc_test_eval_%d", (int)getpid());
    char fm[300], common[4096], a[8192], p[600], q[600], table[600], json[600];
    snprintf(fm, sizeof fm, "%s/fm", tmp);
    FmnistOptions fo = {.out_dir = fm, .limit = 80, .per_shard = 40, .train = true, .test = true};
    FmnistResult fr;
    CHECK_OK(shards_fmnist(&fo, &fr));
    snprintf(common, sizeof common, COMMON, tmp, tmp);
    tmp_path("t.md", table);
    tmp_path("t.jsonl", json);

    /* 1. the student (the teacher's fresh weights) with the ADD sampler, twice */
    snprintf(a, sizeof a, "%s " PROMPTS " eval.batch=8 --role student --sampler add --steps 1 --table %s --json %s "
             "--save-images %s/img8", common, table, json, tmp);
    CHECK(run(a, "gen1.log") == 0, "addc eval (student) failed: see %s/gen1.log", tmp);
    CHECK(run(a, "gen2.log") == 0, "addc eval (student, again) failed: see %s/gen2.log", tmp);
    char *l0 = file_line(json, 0), *l1 = file_line(json, 1);
    CHECK(count_lines(json) == 2 && l0 && l1, "%s: %d lines, want 2", json, count_lines(json));
    static const char *const keys[] = {"fd", "class_acc", "div_gen", "div_real", "real_acc", "s_per_image"};
    for (int i = 0; i < 6; i++) {
        double v = json_value(l0, keys[i]);
        CHECK(isfinite(v) && v >= 0, "%s: %g, want a finite number >= 0", keys[i], v);
    }
    CHECK(json_value(l0, "n_gen") == 10 * PER_CLASS && json_value(l0, "n_real") == 60 &&
              json_value(l0, "class_acc") <= 1 && json_value(l0, "features") == 128,
          "n_gen %g (want 40), n_real %g (want 60), features %g", json_value(l0, "n_gen"), json_value(l0, "n_real"),
          json_value(l0, "features"));
    printf("student add 1 step: FD %.4f, class acc %.3f, diversity %.3f / %.3f, real acc %.3f\n", json_value(l0, "fd"),
           json_value(l0, "class_acc"), json_value(l0, "div_gen"), json_value(l0, "div_real"), json_value(l0, "real_acc"));
    /* the same numbers twice: everything before s_per_image */
    char *c0 = l0 ? strstr(l0, ", \"s_per_image\"") : NULL, *c1 = l1 ? strstr(l1, ", \"s_per_image\"") : NULL;
    if (c0) *c0 = 0;
    if (c1) *c1 = 0;
    CHECK(c0 && c1 && !strcmp(l0, l1), "the same command gave different JSON:\n%s\n%s", l0 ? l0 : "", l1 ? l1 : "");
    free(l0);
    free(l1);
    char *h0 = file_line(table, 0), *h2 = file_line(table, 2), *h3 = file_line(table, 3);
    CHECK(count_lines(table) == 4 && h0 && strstr(h0, "| what | steps | FD | class acc | diversity (gen/real) | s/img |") &&
              h2 && !strncmp(h2, "| student add 1 step | 1 | ", 27) && h3 && !strncmp(h3, "| student add 1 step | 1 | ", 27),
          "%s: %d lines, want a header, its rule and two rows:\n%s\n%s", table, count_lines(table), h0 ? h0 : "",
          h2 ? h2 : "");
    free(h0);
    free(h2);
    free(h3);
    int pngs = 0;
    for (int i = 0; i < 10 * PER_CLASS + 1; i++) {
        snprintf(p, sizeof p, "%s/img8/%05d.png", tmp, i);
        pngs += access(p, R_OK) == 0;
    }
    CHECK(pngs == 10 * PER_CLASS, "--save-images: %d PNGs, want %d", pngs, 10 * PER_CLASS);

    /* 2. eval.batch 3: the same images, the same FD up to the classifier's float sums */
    snprintf(a, sizeof a, "%s " PROMPTS " eval.batch=3 --role student --json %s --save-images %s/img3", common, json, tmp);
    CHECK(run(a, "gen3.log") == 0, "addc eval (batch 3) failed: see %s/gen3.log", tmp);
    int worst = 0;
    for (int i = 0; i < 10 * PER_CLASS; i++) {
        snprintf(p, sizeof p, "%s/img8/%05d.png", tmp, i);
        snprintf(q, sizeof q, "%s/img3/%05d.png", tmp, i);
        int d = png_max_diff(p, q);
        worst = d > worst ? d : worst;
    }
    CHECK(worst <= 1, "eval.batch 8 and 3: the saved images differ by up to %d levels of 255", worst);
    l0 = file_line(json, 0);
    l1 = file_line(json, 2);
    double f8 = json_value(l0, "fd"), f3 = json_value(l1, "fd");
    CHECK(fabs(f8 - f3) <= 1e-4 * f8, "FD %.9g with eval.batch 8, %.9g with 3", f8, f3);
    free(l0);
    free(l1);

    /* 3. the teacher with DDIM, labelled: a row of its own */
    snprintf(a, sizeof a, "%s " PROMPTS " --role teacher --sampler ddim --steps 3 --label 'teacher|ddim' --table %s --json %s",
             common, table, json);
    CHECK(run(a, "teacher.log") == 0, "addc eval (teacher ddim) failed: see %s/teacher.log", tmp);
    h3 = file_line(table, 4);
    CHECK(h3 && !strncmp(h3, "| teacher\\|ddim | 3 | ", 22), "teacher row: %s", h3 ? h3 : "(none)");
    free(h3);

    /* 4. --real: a random classifier is near chance; the floor is finite */
    snprintf(a, sizeof a, "%s --real --table %s --json %s", common, table, json);
    CHECK(run(a, "real.log") == 0, "addc eval --real failed: see %s/real.log", tmp);
    l0 = file_line(json, 4);
    double racc = json_value(l0, "real_acc"), floor_fd = json_value(l0, "fd");
    printf("--real: real accuracy %.3f (10 classes), FD floor %.4f over %g vs %g images\n", racc, floor_fd,
           json_value(l0, "n_gen"), json_value(l0, "n_real"));
    CHECK(racc >= 0 && racc <= 0.4, "real accuracy of a random classifier %g, want near 0.1", racc);
    CHECK(isfinite(floor_fd) && floor_fd > -1e-9 && json_value(l0, "n_gen") == 10 * PER_CLASS &&
              l0 && strstr(l0, "\"sampler\": null") && strstr(l0, "\"s_per_image\": null"),
          "--real JSON: %s", l0 ? l0 : "(none)");
    free(l0);
    h3 = file_line(table, 5);
    CHECK(h3 && strstr(h3, "| real (data.shards) | - | ") && strstr(h3, "| - |"), "real row: %s", h3 ? h3 : "(none)");
    free(h3);

    /* 5. refusals */
    snprintf(a, sizeof a, "%s 'eval.prompts=[]' --role student", common);
    check_refused(a, "bad1.log", "no prompts", 1, "eval.prompts");
    snprintf(a, sizeof a, "%s 'eval.prompts=[a, b, c]' --role student", common);
    check_refused(a, "bad2.log", "3 prompts for 10 labels", 1, "10 labels");
    snprintf(a, sizeof a, "%s " PROMPTS " eval.shards=%s/none.tar --role student", common, tmp);
    check_refused(a, "bad3.log", "missing shards", 1, "eval.shards");
    snprintf(a, sizeof a, "%s " PROMPTS " eval.net.config=configs/models/tiny_unet.yaml --role student", common);
    check_refused(a, "bad4.log", "a UNet as eval net", 1, "not an image classifier");
    snprintf(a, sizeof a, "%s " PROMPTS, common);
    check_refused(a, "bad5.log", "neither --role nor --real", 2, "--real");
    snprintf(a, sizeof a, "%s --real --role student", common);
    check_refused(a, "bad6.log", "--real with --role", 2, "--real");
    snprintf(a, sizeof a, "%s " PROMPTS " eval.net.config= --role student", common);
    check_refused(a, "bad7.log", "no eval net", 1, "eval.net.config");

    snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %s", tmp);
    if (test_failed == 0 && system(cmdbuf)) fprintf(stderr, "could not remove %s\n", tmp);
    return test_main_end("eval");
}
