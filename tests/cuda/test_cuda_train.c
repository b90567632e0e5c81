/* tests/cuda/test_cuda_train: `addc train device=cuda` against the same run on the CPU, end to end:
 *   1. 4 ADD steps of the tiny config (tiny UNet teacher and student, toy feature network and heads,
 *      16x16 Fashion-MNIST, batch 32): the generator and discriminator losses of every step within
 *      1e-4 relative of the CPU's, and the final student within 1e-4 of the weights' scale (the GPU
 *      sums in other orders than the CPU: rounding, amplified a little by AdamW's first steps);
 *   2. the GPU is deterministic: the same run twice gives bit-identical students;
 *   3. exact resume on the GPU: 2 steps then resumed to 4 gives the straight run's student bit for bit;
 *   4. 4 diffusion-mode steps, GPU against CPU, as 1;
 *   5. compute=bf16 (the UNets in bf16, fp32 masters): 4 steps run, every loss finite, the student moves
 *      and stays within 5e-2 of the f32 GPU run's weights' scale.
 * Skips (77) without a GPU or without the Fashion-MNIST files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cuda.h"
#include "data/shards.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"

static char addc[1024], tmp[256];

#define BASE                                                                                                       \
    "configs/train/toy_add.yaml data.shards=%s/fm/fmnist-train-{000000..000003}.tar data.size=16 "                \
    "data.channels=1 data.threads=1 data.streams=1 batch=32 codec.kind=unshuffle text.source=none "                \
    "student.config=configs/models/tiny_unet.yaml teacher.config=configs/models/tiny_unet.yaml teacher.weights= "  \
    "teacher.init_seed=3 heads.overrides=[c_dim=0] loss.prediction=epsilon loss.schedule.zero_terminal_snr=false " \
    "log_every=1 sample.every=0 save_every=0 ema_decay=0.9 checkpoint.keep=0 opt_g.decay=none opt_d.decay=none "   \
    "data.shuffle=4"

static int train(const char *extra, const char *log) {
    char cmd[8192], base[2048];
    snprintf(base, sizeof base, BASE, tmp);
    /* CUEMU=1 (set by the emulated build's ctest, tests/cuemu): batch 4 instead of 32 in every run,
     * CPU and GPU alike, so that the test fits CI's time on the CPU emulator; the checks are the same */
    const char *emu = getenv("CUEMU");
    const char *small = emu && !strcmp(emu, "1") ? " batch=4" : "";
    snprintf(cmd, sizeof cmd, "cd %s && ADDC_THREADS=2 exec %s train %s%s %s > %s/%s 2>&1", ADDC_SOURCE_DIR, addc, base,
             small, extra, tmp, log);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* max |a - b| over every weight / max |b| (-1 on a read error) */
static double rel_diff(const char *a_path, const char *b_path) {
    SafeTensors a, b;
    if (safetensors_open(&a, a_path) != ADDC_OK) return -1;
    if (safetensors_open(&b, b_path) != ADDC_OK) {
        safetensors_close(&a);
        return -1;
    }
    double md = 0, mx = 0;
    bool ok = a.n == b.n;
    for (int32_t i = 0; i < a.n && ok; i++) {
        const StTensor *ta = &a.t[i], *tb = safetensors_find(&b, ta->name);
        if (!tb || tb->nbytes != ta->nbytes || ta->dtype != DTYPE_F32) {
            ok = false;
            break;
        }
        const float *x = ta->data, *y = tb->data;
        for (int64_t k = 0; k < ta->nbytes / 4; k++) {
            mx = fmax(mx, fabs(y[k]));
            md = fmax(md, fabs((double)x[k] - y[k]));
        }
    }
    safetensors_close(&a);
    safetensors_close(&b);
    return ok ? md / (mx + 1e-30) : -1;
}

static void path(char *out, const char *run, const char *file) { sprintf(out, "%s/%s/%s", tmp, run, file); }

/* the per-step values of `key` in two runs' metrics agree to rel */
static void same_losses(const char *run_a, const char *run_b, const char *key, int n, double rel) {
    char a[700], b[700];
    double va[16], vb[16];
    path(a, run_a, "metrics.jsonl");
    path(b, run_b, "metrics.jsonl");
    int na = test_jsonl_values(a, key, va, 16), nb = test_jsonl_values(b, key, vb, 16);
    CHECK(na == n && nb == n, "%s: %d and %d values of %s, want %d", run_b, na, nb, key, n);
    double worst = 0;
    for (int i = 0; i < na && i < nb; i++) {
        CHECK(isfinite(va[i]) && isfinite(vb[i]), "%s step %d: %s not finite", run_b, i + 1, key);
        worst = fmax(worst, fabs(va[i] - vb[i]) / fmax(fabs(va[i]), 1e-6));
    }
    printf("  %s vs %s: %s per step within %.2e relative\n", run_b, run_a, key, worst);
    CHECK(worst <= rel, "%s: %s differs from %s by %.3g relative (> %g)", run_b, key, run_a, worst, rel);
}

static bool same_bytes(const char *a_path, const char *b_path) {
    long na, nb;
    char *a = test_slurp(a_path, &na), *b = test_slurp(b_path, &nb);
    bool same = a && b && na == nb && memcmp(a, b, (size_t)na) == 0;
    free(a);
    free(b);
    return same;
}

int main(void) {
    if (cuda_device_count() == 0) {
        printf("test_cuda_train: skipped: %s\n", cuda_unavailable_reason());
        return 77;
    }
    /* ADDC_FMNIST_DIR: a directory of the idx .gz files (the GPU machine gets a 64-image excerpt,
     * tests/device/make-fmnist-mini.sh) */
    const char *from = getenv("ADDC_FMNIST_DIR") ? getenv("ADDC_FMNIST_DIR") : FMNIST_DEFAULT_DIR;
    char probe[600];
    snprintf(probe, sizeof probe, "%s/train-images-idx3-ubyte.gz", from);
    if (access(probe, R_OK) != 0) {
        printf("test_cuda_train: skipped (no Fashion-MNIST in %s; set ADDC_FMNIST_DIR)\n", from);
        return 77;
    }
    if (!test_addc_locate(addc, sizeof addc)) return test_main_end("test_cuda_train");
    snprintf(tmp, sizeof tmp, "/tmp/addc_test_cuda_train_%d", (int)getpid());
    char fm[300], extra[2048], a[700], b[700];
    snprintf(fm, sizeof fm, "%s/fm", tmp);
    FmnistOptions fo = {.from = from, .out_dir = fm, .limit = 32, .per_shard = 8, .train = true, .test = false};
    FmnistResult fr;
    CHECK_OK(shards_fmnist(&fo, &fr));

    /* 1. GPU against CPU */
    const char *runs[][2] = {{"cpu", "device=cpu"}, {"gpu", "device=cuda"}, {"gpu2", "device=cuda"}};
    for (int i = 0; i < 3; i++) {
        char log[64];
        snprintf(extra, sizeof extra, "%s steps=4 --run-dir %s/%s", runs[i][1], tmp, runs[i][0]);
        snprintf(log, sizeof log, "%s.log", runs[i][0]);
        CHECK(train(extra, log) == 0, "%s run failed: see %s/%s", runs[i][0], tmp, log);
    }
    printf("ADD, 4 steps:\n");
    same_losses("cpu", "gpu", "loss_g", 4, 1e-4);
    same_losses("cpu", "gpu", "loss_d", 4, 1e-4);
    path(a, "cpu", "student.safetensors");
    path(b, "gpu", "student.safetensors");
    double d = rel_diff(b, a);
    printf("  student: GPU vs CPU max |difference| / max |weight| %.3g\n", d);
    CHECK(d >= 0 && d <= 1e-4, "GPU vs CPU student differs by %g (> 1e-4)", d);

    /* 2. deterministic */
    path(a, "gpu2", "student.safetensors");
    CHECK(same_bytes(a, b), "two identical GPU runs gave different students");
    path(a, "gpu2", "student_ema.safetensors");
    path(b, "gpu", "student_ema.safetensors");
    CHECK(same_bytes(a, b), "two identical GPU runs gave different EMAs");

    /* 3. exact resume on the GPU */
    snprintf(extra, sizeof extra, "device=cuda steps=2 --run-dir %s/resume", tmp);
    CHECK(train(extra, "resume1.log") == 0, "resume part 1 failed");
    snprintf(extra, sizeof extra, "device=cuda steps=4 --run-dir %s/resume", tmp);
    CHECK(train(extra, "resume2.log") == 0, "resume part 2 failed");
    path(a, "resume", "student_ema.safetensors");
    CHECK(same_bytes(a, b), "GPU: 2 steps + resume to 4 differs from the straight 4-step run");
    printf("  GPU runs repeat bit for bit; 2 steps + resume = 4 straight steps bit for bit\n");

    /* 4. diffusion mode */
    const char *druns[][2] = {{"dcpu", "device=cpu"}, {"dgpu", "device=cuda"}};
    for (int i = 0; i < 2; i++) {
        char log[64];
        snprintf(extra, sizeof extra, "mode=diffusion %s steps=4 --run-dir %s/%s", druns[i][1], tmp, druns[i][0]);
        snprintf(log, sizeof log, "%s.log", druns[i][0]);
        CHECK(train(extra, log) == 0, "%s run failed: see %s/%s", druns[i][0], tmp, log);
    }
    printf("diffusion, 4 steps:\n");
    same_losses("dcpu", "dgpu", "loss", 4, 1e-4);
    path(a, "dcpu", "student.safetensors");
    path(b, "dgpu", "student.safetensors");
    d = rel_diff(b, a);
    printf("  student: GPU vs CPU %.3g\n", d);
    CHECK(d >= 0 && d <= 1e-4, "diffusion: GPU vs CPU student differs by %g (> 1e-4)", d);

    /* 5. bf16 compute */
    snprintf(extra, sizeof extra, "device=cuda compute=bf16 steps=4 --run-dir %s/bf16", tmp);
    CHECK(train(extra, "bf16.log") == 0, "bf16 run failed: see %s/bf16.log", tmp);
    same_losses("gpu", "bf16", "loss_g", 4, 0.1);
    path(a, "bf16", "student.safetensors");
    path(b, "gpu", "student.safetensors");
    d = rel_diff(a, b);
    printf("  bf16 student vs f32 GPU student %.3g of the weights' scale\n", d);
    CHECK(d >= 0 && d <= 5e-2, "bf16 vs f32 student differs by %g (> 5e-2)", d);

    if (test_failed == 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
        if (system(cmd) != 0) printf("could not remove %s\n", tmp);
    }
    return test_main_end("test_cuda_train");
}
