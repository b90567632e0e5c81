/* tests/mpi/test_train_dist: `addc train` on MPI ranks, end to end (it starts mpirun itself):
 *   1. the same 4 ADD steps on 1, 2 and 4 ranks (data.streams 4) give the same student to fp32
 *      rounding: max |difference| over every weight / max |weight| <= 1e-5 (see rel_diff_worst for
 *      the per-tensor figure, also printed);
 *   2. exact resume: a straight run of 6 steps against a run of 3 steps resumed to 6 (the second
 *      command is the same as the first but for steps), at np 1 and np 2, once at a data epoch
 *      boundary (no shuffle buffer, every stream's epoch exactly consumed) and once mid-epoch with
 *      a shuffle buffer: the final checkpoints' contents and the student weights are identical bit
 *      for bit; the negative control (the data streams not restored) must differ;
 *   3. kill -9 during a run that checkpoints every step, then resume: the same final student as
 *      the straight run; `addc export` of a checkpoint gives the bytes of the run's own safetensors;
 *   4. a checkpoint saved on 4 ranks resumed on 2 and on 1: the reloaded state written back is
 *      identical, and the continued runs match the 4-rank run's losses to rounding;
 *   5. SIGUSR1 to one rank: a checkpoint at the next step and the run goes on; SIGTERM to one rank
 *      only: every rank saves at the same step and exits with code 75, and the same command resumes;
 *   6. a NaN generator loss injected at one step: that update is skipped and counted; NaN for K steps in a row
 *      stops the run with a clear message and leaves the last checkpoint intact.
 * Skips (77) without the Fashion-MNIST files.
 *
 * GPU mode (ADDC_TEST_DEVICE=cuda, ctest test_train_dist_cuda, label cuda): every run gets device=cuda,
 * and the cases are 1 (1 and 2 ranks, and the 1-rank GPU run against the same run on the CPU to
 * 1e-4) and 2 at np 2 mid-epoch: sharded GPU stores, NCCL, checkpoints staged through the host,
 * resumed bit for bit. NCCL takes one GPU per rank: skipped (77) with fewer than 2 GPUs unless
 * ADDC_TEST_RANKS_SHARE_GPU=1 says the ranks may share one (the host emulator, tests/cuemu). */
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cuda.h"
#include "data/shards.h"
#include "distributed/checkpoint.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"

#define MPIRUN "mpirun --oversubscribe --mca btl self,vader"

static char addc[1024], tmp[256];
static const char *device_arg = ""; /* "device=cuda" in GPU mode: appended to every run */

/* The tiny ADD run every case uses: tiny UNet teacher (fresh weights) and student, the toy
 * feature network and heads, 16x16 gray images, batch 32 from 4 data streams. Constant learning
 * rates: the resume cases stop a run by giving it fewer steps, which a cosine decay (whose rate
 * depends on the run's length) would tell apart; the kill -9 case keeps the length and the
 * recipe's own schedule would do too. */
#define BASE                                                                                                       \
    "configs/train/toy_add.yaml data.shards=%s/fm/fmnist-train-{000000..000003}.tar data.size=16 "                \
    "data.channels=1 data.threads=1 data.streams=4 batch=32 codec.kind=unshuffle text.source=none "                \
    "student.config=configs/models/tiny_unet.yaml teacher.config=configs/models/tiny_unet.yaml teacher.weights= "  \
    "teacher.init_seed=3 heads.overrides=[c_dim=0] loss.prediction=epsilon loss.schedule.zero_terminal_snr=false " \
    "log_every=1 sample.every=0 save_every=0 ema_decay=0.9 checkpoint.keep=0 opt_g.decay=none opt_d.decay=none"

/* Runs `addc train BASE extra` on np ranks (np 0: no mpirun) in the background when bg, else waits;
 * returns the exit code (or the pid with bg). */
static int train(int np, const char *extra, const char *log, bool bg) {
    char cmd[8192], base[2048];
    snprintf(base, sizeof base, BASE, tmp);
    char launcher[128] = "";
    if (np > 0) snprintf(launcher, sizeof launcher, MPIRUN " -np %d ", np);
    snprintf(cmd, sizeof cmd, "cd %s && ADDC_THREADS=1 exec %s%s train %s %s %s > %s/%s 2>&1", ADDC_SOURCE_DIR,
             launcher, addc, base, device_arg, extra, tmp, log);
    if (!bg) {
        int rc = system(cmd);
        return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return (int)pid;
}

static int wait_pid(int pid) {
    int st;
    if (waitpid(pid, &st, 0) < 0) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Relative difference of two safetensors files: max |a - b| over every weight divided by max |b|
 * over every weight (the model's scale); *worst_tensor (may be NULL) gets the largest per-tensor
 * figure max |a - b| / max |b| within a tensor, which parameters whose true gradient is zero (a
 * norm's bias feeding another normalisation) inflate: their gradient is rounding noise, which
 * AdamW's first steps turn into lr-sized moves in either direction. -1 on a read error. */
static double rel_diff_worst(const char *a_path, const char *b_path, double *worst_tensor) {
    SafeTensors a, b;
    if (safetensors_open(&a, a_path) != ADDC_OK) return -1;
    if (safetensors_open(&b, b_path) != ADDC_OK) {
        safetensors_close(&a);
        return -1;
    }
    double md = 0, mx = 0, wt = 0;
    bool ok = a.n == b.n;
    for (int32_t i = 0; i < a.n && ok; i++) {
        const StTensor *ta = &a.t[i];
        const StTensor *tb = safetensors_find(&b, ta->name);
        if (!tb || tb->nbytes != ta->nbytes || ta->dtype != DTYPE_F32) {
            ok = false;
            break;
        }
        const float *x = ta->data, *y = tb->data;
        double tmx = 0, tmd = 0;
        for (int64_t k = 0; k < ta->nbytes / 4; k++) {
            tmx = fmax(tmx, fabs(y[k]));
            tmd = fmax(tmd, fabs((double)x[k] - y[k]));
        }
        md = fmax(md, tmd);
        mx = fmax(mx, tmx);
        wt = fmax(wt, tmd / (tmx + 1e-30));
    }
    safetensors_close(&a);
    safetensors_close(&b);
    if (worst_tensor) *worst_tensor = wt;
    return ok ? md / (mx + 1e-30) : -1;
}

static double rel_diff(const char *a_path, const char *b_path) { return rel_diff_worst(a_path, b_path, NULL); }

static void path(char *out, const char *run, const char *file) { sprintf(out, "%s/%s/%s", tmp, run, file); }

/* Whether two runs' checkpoint `name` hold the same contents: every dataset (student, EMA, heads,
 * their spectral-norm vectors, both optimizers' moments, each data stream's state, the config) and
 * every root attribute, bit for bit (distributed/checkpoint.h: ckpt_compare). */
static bool same_ckpt(const char *run_a, const char *run_b, const char *name) {
    char a[700], b[700], f[64], diff[512];
    snprintf(f, sizeof f, "checkpoints/%s", name);
    path(a, run_a, f);
    path(b, run_b, f);
    bool same = false;
    if (ckpt_compare(a, b, &same, diff, sizeof diff) != ADDC_OK) {
        printf("compare %s %s: %s\n", a, b, addc_error_message());
        addc_error_clear();
        return false;
    }
    if (!same) printf("%s vs %s: first difference: %s\n", a, b, diff);
    return same;
}

static void resume_case(int np, const char *tag, const char *data, int k) {
    char extra[1024], run[64], log[80];
    snprintf(run, sizeof run, "straight_%s_np%d", tag, np);
    snprintf(extra, sizeof extra, "%s steps=6 --run-dir %s/%s", data, tmp, run);
    snprintf(log, sizeof log, "%s.log", run);
    CHECK(train(np, extra, log, false) == 0, "%s failed: see %s/%s", run, tmp, log);
    char res[64];
    snprintf(res, sizeof res, "resumed_%s_np%d", tag, np);
    snprintf(extra, sizeof extra, "%s steps=%d --run-dir %s/%s", data, k, tmp, res);
    snprintf(log, sizeof log, "%s_a.log", res);
    CHECK(train(np, extra, log, false) == 0, "%s (to step %d) failed: see %s/%s", res, k, tmp, log);
    snprintf(extra, sizeof extra, "%s steps=6 --run-dir %s/%s", data, tmp, res);
    snprintf(log, sizeof log, "%s_b.log", res);
    CHECK(train(np, extra, log, false) == 0, "%s (resume) failed: see %s/%s", res, tmp, log);
    char p[700];
    snprintf(p, sizeof p, "%s/%s", tmp, log);
    char *s = test_slurp(p, NULL);
    char want[64];
    snprintf(want, sizeof want, "at step %d", k);
    CHECK(s && strstr(s, "resumed from") && strstr(s, want), "%s did not resume at step %d", res, k);
    free(s);
    bool same = same_ckpt(run, res, "step-0000006.h5");
    char a[700], b[700];
    path(a, run, "student_ema.safetensors");
    path(b, res, "student_ema.safetensors");
    double d = rel_diff(a, b);
    printf("resume np %d %s at step %d: final checkpoint %s, EMA max rel diff %g\n", np, tag, k,
           same ? "identical" : "DIFFERENT", d);
    CHECK(same && d == 0, "np %d %s: the resumed run differs from the straight one", np, tag);

    /* negative control: the data streams restart instead of resuming */
    char neg[64];
    snprintf(neg, sizeof neg, "neg_%s_np%d", tag, np);
    snprintf(extra, sizeof extra, "%s steps=%d --run-dir %s/%s", data, k, tmp, neg);
    CHECK(train(np, extra, "neg_a.log", false) == 0, "negative control (to %d) failed", k);
    snprintf(extra, sizeof extra, "%s steps=6 --run-dir %s/%s", data, tmp, neg);
    setenv("ADDC_TEST_SKIP_LOADER_RESTORE", "1", 1);
    CHECK(train(np, extra, "neg_b.log", false) == 0, "negative control (resume) failed");
    unsetenv("ADDC_TEST_SKIP_LOADER_RESTORE");
    same = same_ckpt(run, neg, "step-0000006.h5");
    printf("negative control (data streams not restored): final checkpoint %s\n", same ? "IDENTICAL" : "differs");
    CHECK(!same, "np %d %s: the negative control matched: the test cannot see a lost data position", np, tag);
}

/* GPU mode: 4 ADD steps on the GPU on 1 and 2 ranks, against each other and the 1-rank CPU run, then
 * the exact resume on 2 ranks. */
static int gpu_cases(void) {
    const char *share = getenv("ADDC_TEST_RANKS_SHARE_GPU");
    int n = cuda_device_count();
    if (n == 0 || (n < 2 && !(share && !strcmp(share, "1")))) {
        printf("test_train_dist (cuda): skipped (%d GPUs; NCCL needs one per rank)\n", n);
        return 77;
    }
    char extra[2048], a[700], b[700];
    snprintf(extra, sizeof extra, "data.shuffle=4 steps=4 --run-dir %s/cpu0", tmp);
    CHECK(train(0, extra, "cpu0.log", false) == 0, "the CPU run failed: see %s/cpu0.log", tmp);
    device_arg = "device=cuda";
    const int nps[2] = {0, 2};
    for (int i = 0; i < 2; i++) {
        snprintf(extra, sizeof extra, "data.shuffle=4 steps=4 --run-dir %s/gpu%d", tmp, nps[i]);
        char log[32];
        snprintf(log, sizeof log, "gpu%d.log", nps[i]);
        CHECK(train(nps[i], extra, log, false) == 0, "GPU np %d run failed: see %s/%s", nps[i], tmp, log);
    }
    path(a, "gpu0", "student.safetensors");
    path(b, "gpu2", "student.safetensors");
    double d = rel_diff(b, a);
    printf("4 ADD steps on the GPU, 2 ranks vs 1: student max |difference| / max |weight| %.3g\n", d);
    CHECK(d >= 0 && d <= 1e-5, "GPU np 2: relative difference %g above 1e-5", d);
    path(b, "cpu0", "student.safetensors");
    d = rel_diff(a, b);
    printf("4 ADD steps, GPU vs CPU (1 rank): student max |difference| / max |weight| %.3g\n", d);
    CHECK(d >= 0 && d <= 1e-4, "GPU vs CPU: relative difference %g above 1e-4", d);
    resume_case(2, "mid", "data.shuffle=4", 3);
    char rm[512];
    snprintf(rm, sizeof rm, "rm -rf %s", tmp);
    if (test_failed == 0) (void)!system(rm);
    return test_main_end("train_dist (cuda)");
}

int main(void) {
    if (access(FMNIST_DEFAULT_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("test_train_dist: skipped (no Fashion-MNIST in " FMNIST_DEFAULT_DIR ")\n");
        return 77;
    }
    const char *dev = getenv("ADDC_TEST_DEVICE");
    bool gpu = dev && !strcmp(dev, "cuda");
    if (!test_addc_locate(addc, sizeof addc)) return test_main_end("train_dist");
    snprintf(tmp, sizeof tmp, "/tmp/addc_test_train_dist_%d", (int)getpid());
    char fm[300], extra[2048], a[700], b[700];
    snprintf(fm, sizeof fm, "%s/fm", tmp);
    /* 4 shards of 8 images: each of the 4 streams reads one, so an epoch of a stream is 8 samples,
     * two steps of batch 32 */
    FmnistOptions fo = {.out_dir = fm, .limit = 32, .per_shard = 8, .train = true, .test = false};
    FmnistResult fr;
    CHECK_OK(shards_fmnist(&fo, &fr));
    if (gpu) return gpu_cases();

    /* 1. world-size free */
    const int nps[3] = {0, 2, 4};
    for (int i = 0; i < 3; i++) {
        snprintf(extra, sizeof extra, "data.shuffle=4 steps=4 --run-dir %s/world%d", tmp, nps[i]);
        char log[32];
        snprintf(log, sizeof log, "world%d.log", nps[i]);
        CHECK(train(nps[i], extra, log, false) == 0, "np %d run failed: see %s/%s", nps[i], tmp, log);
    }
    path(a, "world0", "student.safetensors");
    for (int i = 1; i < 3; i++) {
        char run[32];
        snprintf(run, sizeof run, "world%d", nps[i]);
        path(b, run, "student.safetensors");
        double wt = 0, d = rel_diff_worst(b, a, &wt);
        printf("4 ADD steps on %d ranks vs 1: student max |difference| / max |weight| %.3g (worst tensor on its own "
               "scale %.3g)\n",
               nps[i], d, wt);
        CHECK(d >= 0 && d <= 1e-5, "np %d: relative difference %g above 1e-5", nps[i], d);
    }

    /* 2. exact resume at an epoch boundary (step 2, no shuffle buffer) and mid-epoch (step 3) */
    resume_case(0, "boundary", "data.shuffle=0", 2);
    resume_case(0, "mid", "data.shuffle=4", 3);
    resume_case(2, "boundary", "data.shuffle=0", 2);
    resume_case(2, "mid", "data.shuffle=4", 3);

    /* 3. kill -9 mid-run (checkpoints every step), then the same command resumes */
    snprintf(extra, sizeof extra, "data.shuffle=4 steps=6 checkpoint.every=1 --run-dir %s/killed", tmp);
    int pid = train(2, extra, "killed_a.log", true);
    path(a, "killed", "checkpoints/step-0000002.h5");
    for (int i = 0; i < 600 && access(a, R_OK) != 0; i++) usleep(50000);
    usleep(150000);
    kill(-pid, SIGKILL);
    wait_pid(pid);
    char kc[1024];
    snprintf(kc, sizeof kc, "pkill -9 -f '^[^ ]*addc train .*run-dir %s/killed$' 2>/dev/null; true", tmp);
    (void)!system(kc); /* any rank the process-group kill missed */
    path(a, "killed", "student.safetensors");
    bool landed = access(a, R_OK) != 0;
    CHECK(train(2, extra, "killed_b.log", false) == 0, "resume after kill -9 failed: see %s/killed_b.log", tmp);
    path(a, "killed", "student_ema.safetensors");
    path(b, "straight_mid_np2", "student_ema.safetensors");
    double d = rel_diff(a, b);
    printf("kill -9 %s the run, resumed: EMA vs the straight run max rel diff %g\n",
           landed ? "during" : "(too late: after)", d);
    CHECK(d == 0, "after kill -9 and resume the student differs (%g)", d);

    /* addc export: the checkpoint's student and EMA are the bytes training wrote at that step */
    for (int e = 0; e < 2; e++) {
        char args[1024], out[700];
        snprintf(out, sizeof out, "%s/exported%d.safetensors", tmp, e);
        snprintf(args, sizeof args, "export %s/straight_mid_np2/checkpoints/step-0000006.h5 --out %s%s", tmp, out,
                 e ? " --ema" : "");
        CHECK(test_addc_run(addc, "1", args, tmp, "export.log") == 0, "addc export failed: see %s/export.log", tmp);
        path(b, "straight_mid_np2", e ? "student_ema.safetensors" : "student.safetensors");
        bool same = rel_diff(out, b) == 0;
        long na = 0, nb = 0;
        char *x = test_slurp(out, &na), *y = test_slurp(b, &nb);
        bool bytes = x && y && na == nb && !memcmp(x, y, (size_t)na);
        free(x);
        free(y);
        printf("addc export%s of the 2-rank run's final checkpoint: %s\n", e ? " --ema" : "",
               bytes ? "the same bytes as the run's own safetensors" : "DIFFERENT");
        CHECK(same && bytes, "export%s differs from the run's weights", e ? " --ema" : "");
    }

    /* 4. saved on 4 ranks, resumed on 2 and 1 */
    snprintf(extra, sizeof extra, "data.shuffle=4 steps=3 --run-dir %s/w4", tmp);
    CHECK(train(4, extra, "w4.log", false) == 0, "np 4 run failed: see %s/w4.log", tmp);
    snprintf(extra, sizeof extra, "data.shuffle=4 steps=6 --run-dir %s/w4full", tmp);
    CHECK(train(4, extra, "w4full.log", false) == 0, "np 4 full run failed");
    const int to[2] = {2, 0};
    for (int i = 0; i < 2; i++) {
        char run[32], log[64];
        /* the reloaded state, written straight back (steps=3: no step runs) */
        snprintf(run, sizeof run, "from4to%d", to[i] ? to[i] : 1);
        snprintf(extra, sizeof extra, "data.shuffle=4 steps=3 --resume %s/w4/checkpoints/step-0000003.h5 --run-dir %s/%s",
                 tmp, tmp, run);
        snprintf(log, sizeof log, "%s_a.log", run);
        CHECK(train(to[i], extra, log, false) == 0, "resume 4 -> %d failed: see %s/%s", to[i], tmp, log);
        bool same = same_ckpt("w4", run, "step-0000003.h5");
        printf("checkpoint of 4 ranks reloaded on %d and saved again: %s\n", to[i] ? to[i] : 1,
               same ? "identical" : "DIFFERENT");
        CHECK(same, "4 -> %d: the reloaded state differs", to[i] ? to[i] : 1);
        snprintf(extra, sizeof extra, "data.shuffle=4 steps=6 --run-dir %s/%s", tmp, run);
        snprintf(log, sizeof log, "%s_b.log", run);
        CHECK(train(to[i], extra, log, false) == 0, "4 -> %d continued run failed", to[i]);
        double lw[8], lr[8];
        path(a, "w4full", "metrics.jsonl");
        path(b, run, "metrics.jsonl");
        int na = test_jsonl_values(a, "loss_g", lw, 8), nb = test_jsonl_values(b, "loss_g", lr, 8);
        double worst = 0; /* the resumed run logged steps 4-6 only */
        for (int s = 3; s < 6 && s < na && s - 3 < nb; s++) worst = fmax(worst, fabs(lw[s] - lr[s - 3]) / fabs(lw[s]));
        path(a, "w4full", "student.safetensors");
        path(b, run, "student.safetensors");
        double dw = rel_diff(b, a);
        printf("4 -> %d ranks: losses of steps 4-6 within %.3g (relative), final student within %.3g\n",
               to[i] ? to[i] : 1, worst, dw);
        CHECK(na == 6 && nb == 3 && worst < 1e-4 && dw >= 0 && dw <= 1e-5, "4 -> %d: the continued run differs",
              to[i] ? to[i] : 1);
    }

    /* 5. signals */
    snprintf(extra, sizeof extra, "data.shuffle=4 steps=100000 --run-dir %s/sig", tmp);
    pid = train(2, extra, "sig.log", true);
    path(a, "sig", "metrics.jsonl");
    double st[4];
    for (int i = 0; i < 600 && test_jsonl_values(a, "loss_g", st, 4) < 2; i++) usleep(50000);
    char sig[1024]; /* the newest rank process (not mpirun): as a scheduler signalling one task */
    snprintf(sig, sizeof sig, "pkill -USR1 -n -f '^[^ ]*addc train .*run-dir %s/sig$'", tmp);
    (void)!system(sig);
    path(b, "sig", "checkpoints/latest");
    for (int i = 0; i < 600 && access(b, R_OK) != 0; i++) usleep(50000);
    CHECK(access(b, R_OK) == 0, "SIGUSR1: no checkpoint was written");
    usleep(300000);
    snprintf(sig, sizeof sig, "pkill -TERM -n -f '^[^ ]*addc train .*run-dir %s/sig$'", tmp);
    (void)!system(sig);
    int rc = wait_pid(pid);
    char *log = NULL;
    snprintf(b, sizeof b, "%s/sig.log", tmp);
    log = test_slurp(b, NULL);
    printf("SIGUSR1 then SIGTERM to one rank: exit code %d; %s", rc,
           log && strstr(log, "SIGTERM: stopped") ? strstr(log, "SIGTERM: stopped") : "(no closing line)\n");
    CHECK(rc == 75 && log && strstr(log, "(SIGUSR1)") && strstr(log, "(SIGTERM)"),
          "signals: exit %d, want 75 with SIGUSR1 and SIGTERM checkpoints; see %s", rc, b);
    free(log);

    /* 6. NaN guard */
    snprintf(extra, sizeof extra, "data.shuffle=4 steps=5 guard.inject_nan_at=3 --run-dir %s/nan1", tmp);
    CHECK(train(0, extra, "nan1.log", false) == 0, "one NaN step stopped the run: see %s/nan1.log", tmp);
    path(a, "nan1", "metrics.jsonl");
    double sk[8];
    int ns = test_jsonl_values(a, "skipped", sk, 8);
    printf("NaN at step 3: skipped per step %g %g %g %g %g\n", sk[0], sk[1], sk[2], sk[3], sk[4]);
    /* the NaN is in the generator's loss: its update is skipped; the discriminator's (on detached fake
     * images, which are finite) goes on */
    CHECK(ns == 5 && sk[2] == 1 && sk[0] + sk[1] + sk[3] + sk[4] == 0, "the NaN step was not skipped and counted");
    snprintf(extra, sizeof extra,
             "data.shuffle=4 steps=10 checkpoint.every=1 guard.inject_nan_at=3 guard.inject_nan_count=100 "
             "guard.max_nonfinite=3 --run-dir %s/nan3",
             tmp);
    rc = train(2, extra, "nan3.log", false);
    snprintf(b, sizeof b, "%s/nan3.log", tmp);
    log = test_slurp(b, NULL);
    const char *msg = log ? strstr(log, "stopping at step") : NULL;
    printf("NaN from step 3 on, max 3: exit %d: %.160s\n", rc, msg ? msg : "(no message)");
    CHECK(rc != 0 && msg && strstr(msg, "3 steps in a row"), "the guard did not stop the run");
    free(log);
    path(a, "nan3", "checkpoints/latest");
    char *latest = test_slurp(a, NULL);
    CHECK(latest && strstr(latest, "step-0000002.h5"), "latest is not the last good checkpoint: %s", latest);
    free(latest);
    path(a, "nan3", "checkpoints/step-0000003.h5");
    CHECK(access(a, R_OK) != 0, "a checkpoint was written after the bad steps");

    if (test_failed == 0) {
        char rm[400];
        snprintf(rm, sizeof rm, "rm -rf %s", tmp);
        (void)!system(rm);
    }
    return test_main_end("train_dist");
}
