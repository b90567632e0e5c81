/* tests/unit/test_train: `addc train` end to end, through the addc program built beside this test
 * (single process, tiny networks, Fashion-MNIST shards made here with shards_fmnist):
 *   - diffusion mode on one fixed batch overfits: the mean loss of the last steps is a clear
 *     factor below that of the first ones;
 *   - ADD mode runs a few steps: finite G and D losses in metrics.jsonl, the run directory holds
 *     command.txt, config.yaml (which `addc train` reads back) and student.safetensors; the
 *     student's weights moved away from the teacher's, and the teacher's did not change;
 *   - the same seed gives bit-identical metrics twice, one of the two runs writing sample grids
 *     (which must change nothing); the grids are PNGs of rows x blocks x images plus gaps; so in
 *     diffusion mode with an EMA (the grid samples the EMA, swapped in and back);
 *   - classify mode trains a tiny DINOv2 classifier: the loss drops, batch and test accuracy
 *     are reported, the test pass reads every test image once; a tiny convnet runs too;
 *   - bad configs fail with a message naming the key (a label field the json lacks, a
 *     classifier with the wrong number of labels, test shards that do not exist (before
 *     training), an unknown key, a missing role).
 * Skips (77) without the Fashion-MNIST files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/shards.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"

static char addc[1024], tmp[256], cmdbuf[12288];

static int run(const char *args, const char *log) { return test_addc_run(addc, test_threads_or("2"), args, tmp, log); }



/* the metrics without the timing fields (img_per_s, elapsed_s are last on every line) */
static char *metrics_untimed(const char *run_dir) {
    char p[512];
    snprintf(p, sizeof p, "%s/metrics.jsonl", run_dir);
    char *s = test_slurp(p, NULL);
    if (!s) return NULL;
    char *w = s;
    for (char *r = s; *r;) {
        char *cut = strstr(r, ", \"img_per_s\"");
        char *nl = strchr(r, '\n');
        if (!nl) nl = r + strlen(r);
        char *end = cut && cut < nl ? cut : nl;
        memmove(w, r, (size_t)(end - r));
        w += end - r;
        *w++ = '\n';
        r = *nl ? nl + 1 : nl;
    }
    *w = 0;
    return s;
}

static double max_abs_diff(const char *a_path, const char *b_path, int *n_tensors) {
    SafeTensors a, b;
    double d = -1;
    *n_tensors = 0;
    if (safetensors_open(&a, a_path) != ADDC_OK) return -1;
    if (safetensors_open(&b, b_path) != ADDC_OK) {
        safetensors_close(&a);
        return -1;
    }
    d = 0;
    for (int32_t i = 0; i < a.n; i++) {
        const StTensor *ta = &a.t[i], *tb = safetensors_find(&b, ta->name);
        if (!tb || tb->nbytes != ta->nbytes) {
            d = INFINITY;
            break;
        }
        int64_t n = ta->nbytes / 4;
        float *x = malloc((size_t)n * 8), *y = x + n;
        safetensors_read_f32(ta, x, n);
        safetensors_read_f32(tb, y, n);
        for (int64_t j = 0; j < n; j++) d = fmax(d, fabs((double)x[j] - y[j]));
        free(x);
        (*n_tensors)++;
    }
    safetensors_close(&a);
    safetensors_close(&b);
    return d;
}

/* A PNG's IHDR: width, height, bit depth, colour type (0 gray, 2 RGB); false if not a PNG. */
static bool png_header(const char *path, int64_t *w, int64_t *h, int *depth, int *color) {
    unsigned char b[26];
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n != sizeof b || memcmp(b, "\x89PNG\r\n\x1a\n", 8) || memcmp(b + 12, "IHDR", 4)) return false;
    *w = (int64_t)b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19];
    *h = (int64_t)b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23];
    *depth = b[24];
    *color = b[25];
    return true;
}

static void check_grid(const char *run_dir, int64_t step, int64_t want_w, int64_t want_h) {
    char p[600];
    int64_t w = 0, h = 0;
    int depth = 0, color = -1;
    snprintf(p, sizeof p, "%s/samples/step-%07lld.png", run_dir, (long long)step);
    bool ok = png_header(p, &w, &h, &depth, &color);
    printf("grid %s: %lld x %lld, depth %d, colour type %d\n", p, (long long)w, (long long)h, depth, color);
    CHECK(ok && w == want_w && h == want_h && depth == 8 && color == 0,
          "grid %s: %s, %lld x %lld (want %lld x %lld gray)", p, ok ? "PNG" : "missing or not a PNG", (long long)w,
          (long long)h, (long long)want_w, (long long)want_h);
}

static void check_same_metrics(const char *a_dir, const char *b_dir, const char *what) {
    char *m0 = metrics_untimed(a_dir), *m1 = metrics_untimed(b_dir);
    CHECK(m0 && m1 && m0[0] && !strcmp(m0, m1), "%s: different metrics:\n%s---\n%s", what, m0 ? m0 : "", m1 ? m1 : "");
    free(m0);
    free(m1);
}

/* runs addc with args, expects a failure whose output names every one of the words */
static void check_refused(const char *args, const char *log, const char *what, const char *const *words, int n) {
    char p[600];
    CHECK(run(args, log) != 0, "%s was accepted", what);
    snprintf(p, sizeof p, "%s/%s", tmp, log);
    char *msg = test_slurp(p, NULL);
    printf("%s: %s", what, msg ? msg : "(none)\n");
    for (int i = 0; i < n; i++)
        CHECK(msg && strstr(msg, words[i]), "%s: the message does not say '%s'", what, words[i]);
    free(msg);
}

#define COMMON                                                                                                   \
    "data.shards=%s/fm/fmnist-train-{000000..000001}.tar data.size=16 data.channels=1 data.threads=1 "            \
    "data.shuffle=32 batch=8 codec.kind=unshuffle text.source=none student.config=configs/models/tiny_unet.yaml " \
    "log_every=0 sample.every=0"

int main(void) {
    if (access(FMNIST_DEFAULT_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("test_train: skipped (no Fashion-MNIST in " FMNIST_DEFAULT_DIR ")\n");
        return 77;
    }
    if (!test_addc_locate(addc, sizeof addc)) return test_main_end("train");
    snprintf(tmp, sizeof tmp, "/tmp/addc_test_train_%d", (int)getpid());
    char fm[300], a[8192], p[600], q[600];
    snprintf(fm, sizeof fm, "%s/fm", tmp);
    FmnistOptions fo = {.out_dir = fm, .limit = 64, .per_shard = 32, .train = true, .test = true};
    FmnistResult fr;
    CHECK_OK(shards_fmnist(&fo, &fr));

    /* 1. diffusion mode overfits one fixed batch */
    snprintf(a, sizeof a,
             "train configs/train/toy_teacher.yaml " COMMON
             " data.fixed_batch=true steps=80 opt_g.lr=3e-3 opt_g.warmup=0 ema_decay=0.9 loss.prediction=epsilon "
             "loss.schedule.zero_terminal_snr=false loss.diffusion.t_min=0 loss.diffusion.t_max=999 "
             "--mode diffusion --run-dir %s/diff",
             tmp, tmp);
    CHECK(run(a, "diff.log") == 0, "diffusion run failed: see %s/diff.log", tmp);
    double loss[128];
    snprintf(p, sizeof p, "%s/diff/metrics.jsonl", tmp);
    int n = test_jsonl_values(p, "loss", loss, 128);
    CHECK(n == 80, "diffusion: %d loss lines, want 80", n);
    if (n == 80) {
        double first = 0, last = 0;
        for (int i = 0; i < 10; i++) first += loss[i] / 10, last += loss[70 + i] / 10;
        printf("diffusion overfit: mean loss steps 1-10 %.4f, steps 71-80 %.4f (x%.1f)\n", first, last, first / last);
        CHECK(last < first / 2, "diffusion loss did not drop by 2x: %.4f -> %.4f", first, last);
    }
    snprintf(p, sizeof p, "%s/diff/student_ema.safetensors", tmp);
    CHECK(access(p, R_OK) == 0, "no EMA weights written");

    /* 2. ADD mode from that teacher, twice with the same seed */
    char add_args[4096];
    snprintf(add_args, sizeof add_args,
             "train configs/train/toy_add.yaml " COMMON
             " steps=3 teacher.config=configs/models/tiny_unet.yaml teacher.weights=%s/diff/student.safetensors "
             "heads.overrides=[c_dim=0] loss.prediction=epsilon loss.schedule.zero_terminal_snr=false save_every=2",
             tmp, tmp);
    for (int r = 0; r < 2; r++) { /* run 1 writes grids at steps 2 and 3: 2 rows, 3 blocks of 2 images */
        snprintf(a, sizeof a, "%s%s --run-dir %s/add%d", add_args,
                 r ? " sample.every=2 sample.prompts=[shirt,shoe] sample.per_prompt=2 sample.student_steps=[1,2] "
                     "sample.teacher_steps=2 sample.teacher_sampler=euler_a"
                   : "",
                 tmp, r);
        CHECK(run(a, r ? "add1.log" : "add0.log") == 0, "ADD run %d failed: see %s/add%d.log", r, tmp, r);
    }
    double lg[8], ld[8], r1[8], t0[2], t1[2];
    snprintf(p, sizeof p, "%s/add0/metrics.jsonl", tmp);
    int ng = test_jsonl_values(p, "loss_g", lg, 8), nd = test_jsonl_values(p, "loss_d", ld, 8);
    test_jsonl_values(p, "r1", r1, 8);
    CHECK(ng == 3 && nd == 3, "ADD: %d loss_g and %d loss_d lines, want 3", ng, nd);
    for (int i = 0; i < ng && i < nd; i++) {
        printf("ADD step %d: loss_g %.5f loss_d %.5f r1 %.4g\n", i + 1, lg[i], ld[i], r1[i]);
        CHECK(isfinite(lg[i]) && isfinite(ld[i]) && isfinite(r1[i]), "ADD step %d: non-finite loss", i + 1);
    }
    CHECK(test_jsonl_values(p, "teacher_sumsq_start", t0, 2) == 1 && test_jsonl_values(p, "teacher_sumsq_end", t1, 2) == 1 &&
              t0[0] == t1[0] && t0[0] > 0,
          "the teacher's weights changed during ADD (or no summary line)");
    snprintf(p, sizeof p, "%s/add0/student.safetensors", tmp);
    snprintf(q, sizeof q, "%s/diff/student.safetensors", tmp);
    int nt = 0;
    double moved = max_abs_diff(p, q, &nt);
    printf("ADD: student vs teacher weights: max |diff| %.3g over %d tensors\n", moved, nt);
    CHECK(nt > 100 && moved > 1e-6 && isfinite(moved), "the student's weights did not change (%g)", moved);
    snprintf(p, sizeof p, "%s/add0/student-step-0000002.safetensors", tmp);
    CHECK(access(p, R_OK) == 0, "no interval weights at step 2");
    snprintf(p, sizeof p, "%s/add0/command.txt", tmp);
    char *cmd = test_slurp(p, NULL);
    CHECK(cmd && strstr(cmd, "toy_add.yaml") && strstr(cmd, "--run-dir"), "command.txt lacks the command line");
    free(cmd);

    /* 3. bit-identical metrics with the same seed, with and without grids; the grids' size */
    snprintf(p, sizeof p, "%s/add0", tmp);
    snprintf(q, sizeof q, "%s/add1", tmp);
    check_same_metrics(p, q, "ADD, same seed, grids off and on");
    check_grid(q, 2, 3 * 2 * 16 + 2 * 4, 2 * 16);
    check_grid(q, 3, 3 * 2 * 16 + 2 * 4, 2 * 16);
    snprintf(p, sizeof p, "%s/add0/samples", tmp);
    CHECK(access(p, F_OK) != 0, "a run without sample.every made %s", p);
    snprintf(p, sizeof p, "%s/add1.log", tmp);
    char *log1 = test_slurp(p, NULL);
    CHECK(log1 && strstr(log1, "sample grid") && strstr(log1, "step-0000002.png"), "no log line for the grid");
    free(log1);

    /* activation checkpointing of every role (student, teacher, feature network, heads' none): the same
     * losses and the same student, bit for bit, with less memory */
    snprintf(a, sizeof a,
             "%s student.checkpointing=true teacher.checkpointing=true feature.checkpointing=true --run-dir %s/addck",
             add_args, tmp);
    CHECK(run(a, "addck.log") == 0, "ADD run with checkpointing failed: see %s/addck.log", tmp);
    {
        double g0[8], g1[8], d0[8], d1[8], peak0[2], peak1[2];
        snprintf(p, sizeof p, "%s/add0/metrics.jsonl", tmp);
        snprintf(q, sizeof q, "%s/addck/metrics.jsonl", tmp);
        int n0 = test_jsonl_values(p, "loss_g", g0, 8), n1 = test_jsonl_values(q, "loss_g", g1, 8);
        test_jsonl_values(p, "loss_d", d0, 8);
        test_jsonl_values(q, "loss_d", d1, 8);
        bool same = n0 == 3 && n1 == 3;
        for (int i = 0; i < n0 && same; i++) same = g0[i] == g1[i] && d0[i] == d1[i];
        CHECK(same, "ADD with checkpointing: losses differ from the run without");
        test_jsonl_values(p, "arena_peak_bytes", peak0, 2);
        test_jsonl_values(q, "arena_peak_bytes", peak1, 2);
        printf("ADD with activation checkpointing: the same losses; step arena peak %.1f MB -> %.1f MB\n",
               peak0[0] / 1e6, peak1[0] / 1e6);
        CHECK(peak1[0] < peak0[0], "checkpointing did not lower the step arena's peak (%g -> %g)", peak0[0], peak1[0]);
        snprintf(p, sizeof p, "%s/add0/student.safetensors", tmp);
        snprintf(q, sizeof q, "%s/addck/student.safetensors", tmp);
        int nt2 = 0;
        CHECK(max_abs_diff(p, q, &nt2) == 0 && nt2 > 100, "ADD with checkpointing: a different student");
    }

    /* checkpoint.final false (step benchmarks): the run ends without its end checkpoint and weights */
    snprintf(a, sizeof a, "%s checkpoint.final=false save_every=0 --run-dir %s/addnf", add_args, tmp);
    CHECK(run(a, "addnf.log") == 0, "ADD run with checkpoint.final=false failed: see %s/addnf.log", tmp);
    snprintf(p, sizeof p, "%s/addnf/student.safetensors", tmp);
    snprintf(q, sizeof q, "%s/addnf/checkpoints/latest", tmp);
    CHECK(access(p, F_OK) != 0 && access(q, F_OK) != 0, "checkpoint.final=false still wrote %s or %s", p, q);
    {
        double gf[8];
        snprintf(p, sizeof p, "%s/addnf/metrics.jsonl", tmp);
        CHECK(test_jsonl_values(p, "loss_g", gf, 8) == 3, "checkpoint.final=false: the steps were not logged");
    }

    /* diffusion mode: the grid samples the EMA (swapped in and back) with the teacher sampler */
    for (int r = 0; r < 2; r++) {
        snprintf(a, sizeof a,
                 "train configs/train/toy_teacher.yaml " COMMON
                 " steps=4 ema_decay=0.5 loss.prediction=epsilon loss.schedule.zero_terminal_snr=false%s "
                 "--mode diffusion --run-dir %s/dg%d",
                 tmp, r ? " sample.every=2 sample.prompts=[bag] sample.per_prompt=3 sample.teacher_steps=2" : "", tmp,
                 r);
        CHECK(run(a, r ? "dg1.log" : "dg0.log") == 0, "diffusion grid run %d failed: see %s/dg%d.log", r, tmp, r);
    }
    snprintf(p, sizeof p, "%s/dg0", tmp);
    snprintf(q, sizeof q, "%s/dg1", tmp);
    check_same_metrics(p, q, "diffusion with EMA, grids off and on");
    check_grid(q, 2, 3 * 16, 16);
    check_grid(q, 4, 3 * 16, 16);

    /* 4. the written config reads back and runs */
    snprintf(a, sizeof a, "train %s/add0/config.yaml steps=1 --run-dir %s/again", tmp, tmp);
    CHECK(run(a, "again.log") == 0, "config.yaml did not read back: see %s/again.log", tmp);
    snprintf(a, sizeof a, "%s/again/config.yaml", tmp);
    snprintf(p, sizeof p, "%s/add0/config.yaml", tmp);
    char *c0 = test_slurp(p, NULL), *c1 = test_slurp(a, NULL);
    char *s0 = c0 ? strstr(c0, "\nbatch:") : NULL, *s1 = c1 ? strstr(c1, "\nbatch:") : NULL;
    CHECK(s0 && s1 && !strcmp(s0, s1), "config.yaml changed on a round trip (beyond steps)");
    free(c0);
    free(c1);

    /* 4b. the learning-rate schedule: warmup 2, then cosine down to 0.1 lr at the last step */
    snprintf(a, sizeof a,
             "train configs/train/toy_teacher.yaml " COMMON
             " steps=10 opt_g.lr=1e-3 opt_g.warmup=2 opt_g.decay=cosine opt_g.min_lr_ratio=0.1 ema_decay=0 "
             "checkpoint.every=0 --mode diffusion --run-dir %s/cos",
             tmp, tmp);
    CHECK(run(a, "cos.log") == 0, "cosine run failed: see %s/cos.log", tmp);
    double lr[16], worst = 0;
    snprintf(p, sizeof p, "%s/cos/metrics.jsonl", tmp);
    int nlr = test_jsonl_values(p, "lr", lr, 16);
    for (int i = 0; i < nlr; i++) { /* lr of update i (0-based) */
        double want = i < 2 ? 1e-3 * (i + 1) / 2 : 1e-3 * (0.1 + 0.9 * 0.5 * (1 + cos(M_PI * (i - 2) / 8.0)));
        worst = fmax(worst, fabs(lr[i] - want) / want);
    }
    printf("cosine schedule: %d steps, lr %.3g .. %.3g, worst relative error %.2g\n", nlr, lr[0], lr[nlr - 1], worst);
    CHECK(nlr == 10 && worst < 1e-6, "the lr schedule is not warmup + cosine (worst %g)", worst);

    /* 5. classify mode: a tiny DINOv2 (16x16 gray, 4x4 patches, width 16) on the labels; the test
     *    pass in batches of 20 over 64 images ends inside a batch, where the stream wraps around */
    const char *cls_args =
        "train configs/train/toy_feature.yaml data.shards=%s/fm/fmnist-train-{000000..000001}.tar data.size=16 "
        "data.threads=1 data.shuffle=32 batch=16 steps=60 log_every=10 save_every=0 ema_decay=0.9 opt_g.lr=3e-3 "
        "opt_g.warmup=0 opt_g.weight_decay=0 student.overrides=[hidden_size=16,num_attention_heads=2,image_size=16,"
        "input_size=16] eval.shards=%s/fm/fmnist-test-{000000..000001}.tar eval.batch=20";
    snprintf(a, sizeof a, cls_args, tmp, tmp);
    snprintf(a + strlen(a), sizeof a - strlen(a), " --run-dir %s/cls", tmp);
    CHECK(run(a, "cls.log") == 0, "classify run failed: see %s/cls.log", tmp);
    double closs[64], cacc[64], tacc[2] = {-1, -1}, tn[2] = {0, 0}, tema[2] = {-1, -1};
    snprintf(p, sizeof p, "%s/cls/metrics.jsonl", tmp);
    int nl = test_jsonl_values(p, "loss", closs, 64), na = test_jsonl_values(p, "accuracy", cacc, 64);
    CHECK(nl == 60 && na == 60, "classify: %d loss and %d accuracy lines, want 60", nl, na);
    if (nl == 60 && na == 60) {
        double first = 0, last = 0, acc_first = 0, acc_last = 0;
        for (int i = 0; i < 10; i++) {
            first += closs[i] / 10, last += closs[50 + i] / 10;
            acc_first += cacc[i] / 10, acc_last += cacc[50 + i] / 10;
            CHECK(cacc[i] >= 0 && cacc[i] <= 1 && cacc[50 + i] >= 0 && cacc[50 + i] <= 1, "accuracy not in [0, 1]");
        }
        printf("classify: mean loss steps 1-10 %.4f, 51-60 %.4f; batch accuracy %.3f -> %.3f\n", first, last,
               acc_first, acc_last);
        CHECK(last < 0.8 * first, "classify loss did not drop by 20%%: %.4f -> %.4f", first, last);
        CHECK(acc_last > acc_first, "classify batch accuracy did not rise: %.3f -> %.3f", acc_first, acc_last);
    }
    CHECK(test_jsonl_values(p, "test_accuracy", tacc, 2) == 1 && test_jsonl_values(p, "test_images", tn, 2) == 1 &&
              test_jsonl_values(p, "test_accuracy_ema", tema, 2) == 1,
          "classify: no test accuracy in the final metrics line");
    printf("classify: test accuracy %.3f (EMA %.3f) over %.0f images\n", tacc[0], tema[0], tn[0]);
    CHECK(tn[0] == 64, "the test pass read %.0f images, want all 64 once", tn[0]);
    CHECK(tacc[0] <= 1 && tacc[0] > 0.2, "test accuracy %.3f: not clearly above chance (0.1)", tacc[0]);
    snprintf(p, sizeof p, "%s/cls.log", tmp);
    char *clog = test_slurp(p, NULL);
    CHECK(clog && strstr(clog, "acc ") && strstr(clog, "test accuracy"), "classify: no accuracy in the output");
    free(clog);
    snprintf(p, sizeof p, "%s/cls/student_ema.safetensors", tmp);
    CHECK(access(p, R_OK) == 0, "classify: no EMA weights written");
    char *cfg_back = NULL;
    snprintf(p, sizeof p, "%s/cls/config.yaml", tmp);
    cfg_back = test_slurp(p, NULL);
    CHECK(cfg_back && strstr(cfg_back, "mode: classify") && strstr(cfg_back, "label_field: \"label\""),
          "classify: config.yaml lacks the mode or label field");
    free(cfg_back);

    /* the convnet (the evaluation network) trains in the same mode */
    snprintf(a, sizeof a,
             "train configs/train/toy_evalnet.yaml data.shards=%s/fm/fmnist-train-{000000..000001}.tar data.size=16 "
             "data.threads=1 data.shuffle=32 batch=8 steps=3 log_every=0 save_every=0 "
             "'student.overrides=[\"widths=[8, 16]\", norm_num_groups=4, image_size=16]' "
             "eval.shards=%s/fm/fmnist-test-{000000..000001}.tar --run-dir %s/cnn",
             tmp, tmp, tmp);
    CHECK(run(a, "cnn.log") == 0, "classify run of the convnet failed: see %s/cnn.log", tmp);
    snprintf(p, sizeof p, "%s/cnn/metrics.jsonl", tmp);
    CHECK(test_jsonl_values(p, "accuracy", cacc, 64) == 3 && test_jsonl_values(p, "test_images", tn, 2) == 1 && tn[0] == 64,
          "convnet: no per-step accuracy or test pass in %s", p);

    /* classify mode refuses: a label field the json lacks, a head of the wrong size, text */
    snprintf(a, sizeof a, cls_args, tmp, tmp);
    snprintf(a + strlen(a), sizeof a - strlen(a), " data.label_field=labl eval.shards= --run-dir %s/bad", tmp);
    check_refused(a, "bad_label.log", "missing label field", (const char *[]){"data.label_field", "labl"}, 2);
    snprintf(a, sizeof a, cls_args, tmp, tmp);
    snprintf(a + strlen(a), sizeof a - strlen(a), " data.label_field=index eval.shards= --run-dir %s/bad", tmp);
    check_refused(a, "bad_label2.log", "label out of range", (const char *[]){"index", "not a class in 0 .. 9"}, 2);
    snprintf(a, sizeof a, cls_args, tmp, tmp);
    snprintf(a + strlen(a), sizeof a - strlen(a), " classes=5 --run-dir %s/bad", tmp);
    check_refused(a, "bad_classes.log", "wrong num_labels", (const char *[]){"num_labels 10", "classes is 5"}, 2);
    snprintf(a, sizeof a, cls_args, tmp, tmp);
    snprintf(a + strlen(a), sizeof a - strlen(a), " text.source=encoder --run-dir %s/bad", tmp);
    check_refused(a, "bad_text.log", "classify with text", (const char *[]){"text.source"}, 1);
    snprintf(a, sizeof a, cls_args, tmp, tmp);
    snprintf(a + strlen(a), sizeof a - strlen(a), " eval.shards=%s/nope.tar --run-dir %s/bad", tmp, tmp);
    check_refused(a, "bad_eval.log", "missing test shards", (const char *[]){"eval.shards", "nope.tar"}, 2);

    /* 6. bad configs: a clear message naming the key */
    snprintf(a, sizeof a, "train configs/train/toy_add.yaml " COMMON " opt_g.lrr=1 --run-dir %s/bad", tmp, tmp);
    CHECK(run(a, "bad1.log") != 0, "an unknown key was accepted");
    snprintf(p, sizeof p, "%s/bad1.log", tmp);
    char *msg = test_slurp(p, NULL);
    printf("bad key: %s", msg ? msg : "(none)\n");
    CHECK(msg && strstr(msg, "opt_g.lrr") && strstr(msg, "lr"), "the message does not name the key");
    free(msg);
    snprintf(a, sizeof a, "train configs/train/toy_add.yaml " COMMON " teacher.config= --run-dir %s/bad", tmp, tmp);
    CHECK(run(a, "bad2.log") != 0, "ADD without a teacher was accepted");
    snprintf(p, sizeof p, "%s/bad2.log", tmp);
    msg = test_slurp(p, NULL);
    printf("no teacher: %s", msg ? msg : "(none)\n");
    CHECK(msg && strstr(msg, "teacher.config"), "the message does not name teacher.config");
    free(msg);
    snprintf(a, sizeof a, "train configs/train/toy_add.yaml " COMMON " teacher.config=configs/models/tiny_unet.yaml teacher.weights=%s/diff/student.safetensors heads.overrides=[c_dim=5] --run-dir %s/bad",
             tmp, tmp, tmp);
    CHECK(run(a, "bad3.log") != 0, "mismatched heads were accepted");
    snprintf(p, sizeof p, "%s/bad3.log", tmp);
    msg = test_slurp(p, NULL);
    printf("bad heads: %s", msg ? msg : "(none)\n");
    CHECK(msg && strstr(msg, "c_dim"), "the message does not name c_dim");
    free(msg);

    if (test_failed == 0) {
        snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %s", tmp);
        if (system(cmdbuf) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    return test_main_end("train");
}
