/* tests/unit/test_samplers: losses/samplers against diffusers' schedulers (fixture samplers/steps.bin,
 * tests/ref/make_samplers_fixture.py).
 *
 * - trailing timesteps equal DDIMScheduler's for 1 .. 1000 steps (ties rounded half to even: 16 steps);
 * - each sampler (add, euler_a, ddim with set_alpha_to_one true and false, euler), epsilon and v, 1, 2, 4
 *   and 50 steps, plus zero-terminal-SNR v cases, on the toy denoiser
 *   out = 0.1 z + float(1e-4 t + 0.05 cos(0.37 e)) with the fixture's noise injected: every kept step's
 *   prev_sample and pred_original_sample, max abs error <= 1e-5 where |value| <= 1, relative beyond
 *   (the Euler samples start at 14.6 times the noise);
 * - rng noise: image i of a batch equals image i made alone (keyed by seed and index only), a different
 *   seed differs; refusals (unknown name, taped Ctx, Euler at alphabar 0);
 * - `addc sample` end to end (the addc binary beside this test): the tiny UNet with random weights
 *   through the tiny VAE (random) and through the pixel-unshuffle codec with a precomputed-embeddings
 *   file written here: PNG count and sizes read back with data/image.h, manifest.jsonl parsed with
 *   core/json.h, identical PNG bytes for the same seed twice and for --batch 1 against --batch 2. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/json.h"
#include "data/image.h"
#include "losses/samplers.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"

#define TOL 1e-5
#define ELEMS 24 /* per sample: (4, 2, 3) */

static Var *toy_denoise(Ctx *c, Var *z, int64_t t, void *user) {
    (void)user;
    Var *o = var_new(c, DTYPE_F32, z->v.ndim, z->v.shape);
    if (!o) return NULL;
    const float *zi = z->v.data;
    float *oo = o->v.data;
    int64_t n = tensor_numel(&z->v);
    for (int64_t i = 0; i < n; i++) {
        float bias = (float)(1e-4 * (double)t + 0.05 * cos(0.37 * (double)(i % ELEMS)));
        oo[i] = zi[i] * 0.1f + bias;
    }
    return o;
}

typedef struct StepCheck {
    const Fixture *f;
    const char *name;
    int32_t n_steps;
    double err;      /* max over kept steps, |d| / max(1, |want|) */
    int32_t checked; /* tensors compared */
    bool missing;
} StepCheck;

static double max_err(const float *a, const FixTensor *w) {
    double e = 0;
    for (int64_t i = 0; i < w->numel; i++) {
        double d = fabs((double)a[i] - (double)w->data[i]) / fmax(1.0, fabs((double)w->data[i]));
        if (!(d <= e)) e = d; /* NaN propagates */
    }
    return e;
}

static Status step_check(int32_t i, int64_t t, const Var *x, const Var *x0, void *user) {
    StepCheck *s = user;
    char key[96];
    for (int k = 0; k < 2; k++) {
        snprintf(key, sizeof key, "%s/%s/%d", s->name, k ? "x0" : "x", (int)i);
        const FixTensor *w = fixture_get(s->f, key);
        if (!w) {
            bool kept = s->n_steps <= 4 || i == 0 || i == 1 || i == 24 || i == 48 || i == 49;
            if (kept) s->missing = true;
            continue;
        }
        const Var *v = k ? x0 : x;
        if (tensor_numel(&v->v) != w->numel) {
            s->missing = true;
            continue;
        }
        double e = max_err(v->v.data, w);
        if (!(e <= s->err)) s->err = e;
        s->checked++;
    }
    return ADDC_OK;
}

static NoiseSchedule schedule(bool zsnr, double terminal) {
    ScheduleConfig sc = {.kind = SCHEDULE_SCALED_LINEAR, .num_train_timesteps = 1000, .beta_start = 0.00085,
                         .beta_end = 0.012, .zero_terminal_snr = zsnr, .terminal_alpha_bar = terminal};
    NoiseSchedule s;
    CHECK_OK(noise_schedule_init(&s, &sc));
    return s;
}

static void test_timesteps(const Fixture *f) {
    int64_t t[SAMPLER_MAX_STEPS];
    int32_t ns[] = {1, 2, 3, 4, 6, 7, 8, 16, 40, 50, 1000}, bad = 0;
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        char key[32];
        snprintf(key, sizeof key, "ts/%d", (int)ns[k]);
        const FixTensor *w = fixture_get(f, key);
        CHECK(w && w->numel == ns[k], "fixture %s", key);
        if (!w) continue;
        CHECK_OK(sampler_timesteps(1000, ns[k], t));
        for (int32_t i = 0; i < ns[k]; i++)
            if (t[i] != (int64_t)w->data[i]) {
                if (bad++ < 5) fprintf(stderr, "  %d steps: t[%d] = %lld, diffusers %g\n", (int)ns[k], (int)i, (long long)t[i], w->data[i]);
            }
    }
    CHECK(bad == 0, "trailing timesteps: %d differ from diffusers", (int)bad);
    sampler_timesteps(1000, 4, t);
    CHECK(t[0] == 999 && t[1] == 749 && t[2] == 499 && t[3] == 249, "4 steps: 999 749 499 249");
    sampler_timesteps(1000, 1, t);
    CHECK(t[0] == 999, "1 step: 999");
    CHECK(sampler_timesteps(1000, 0, t) != ADDC_OK && sampler_timesteps(1000, 1001, t) != ADDC_OK, "0 and 1001 steps refused");
    sampler_timesteps(1000, 16, t);
    printf("  trailing timesteps: 1 to 1000 steps as DDIMScheduler (16 steps: %lld %lld %lld %lld ...)\n",
           (long long)t[0], (long long)t[1], (long long)t[2], (long long)t[3]);
}

typedef struct Case {
    const char *prefix;
    SamplerKind kind;
    bool alpha_one;
} Case;

static void run_case(const Fixture *f, const float *const *noise, const char *name, SamplerKind kind, int32_t pred,
                     int32_t n, bool alpha_one, const NoiseSchedule *s, double tol, double *worst) {
    TestCtx tc;
    tctx_init(&tc);
    SamplerConfig cfg = {.kind = kind, .steps = n, .prediction = pred, .set_alpha_to_one = alpha_one};
    SamplerNoise nz = {.seed = 0, .first_index = 0, .given = noise};
    int64_t shape[4] = {2, 4, 2, 3};
    StepCheck sc = {f, name, n, 0, 0, false};
    Var *out = sampler_run(&tc.nt, s, &cfg, 4, shape, &nz, toy_denoise, NULL, step_check, &sc);
    CHECK_VAR(out);
    char key[96];
    snprintf(key, sizeof key, "%s/x/%d", name, (int)n - 1);
    const FixTensor *last = fixture_get(f, key);
    double ef = out && last ? max_err(out->v.data, last) : INFINITY;
    CHECK(!sc.missing && sc.checked > 0, "%s: fixture tensors missing (%d compared)", name, (int)sc.checked);
    CHECK(sc.err <= tol && ef <= tol, "%s: max error %.3g over steps, %.3g final (tolerance %g)", name, sc.err, ef, tol);
    double e = fmax(sc.err, ef);
    if (!(e <= *worst)) *worst = e;
    tctx_free(&tc);
}

static void test_against_diffusers(const Fixture *f) {
    const float *noise[51];
    for (int k = 0; k < 51; k++) {
        char key[32];
        snprintf(key, sizeof key, "noise/%d", k);
        const FixTensor *t = fixture_get(f, key);
        CHECK(t && t->numel == 2 * ELEMS, "fixture %s", key);
        if (!t) return;
        noise[k] = t->data;
    }
    NoiseSchedule s = schedule(false, 0);
    const Case cases[] = {{"add", SAMPLER_ADD, true},
                          {"euler_a", SAMPLER_EULER_A, true},
                          {"ddim", SAMPLER_DDIM, true},
                          {"ddim1", SAMPLER_DDIM, false},
                          {"euler", SAMPLER_EULER, true}};
    const int32_t steps[] = {1, 2, 4, 50};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        double worst = 0;
        for (int p = 0; p < 2; p++)
            for (size_t j = 0; j < sizeof steps / sizeof steps[0]; j++) {
                char name[64];
                snprintf(name, sizeof name, "%s_%s_%d", cases[k].prefix, p ? "v" : "eps", (int)steps[j]);
                run_case(f, noise, name, cases[k].kind, p ? PREDICTION_V : PREDICTION_EPSILON, steps[j],
                         cases[k].alpha_one, &s, TOL, &worst);
            }
        printf("  %-8s eps and v, 1/2/4/50 steps: max error vs diffusers %.3g\n", cases[k].prefix, worst);
    }
    /* zero terminal SNR, v: DDIMScheduler and DDPMScheduler keep alphabar_999 = 0, Euler 2^-24. At
     * sigma_999 = 4096 diffusers' float32 x + d dt keeps x0 only to an ulp of 4096 x (4.9e-4): Euler
     * ancestral is held to 1e-5 against its formulas in float64 and to 1e-3 against diffusers. */
    NoiseSchedule z0 = schedule(true, 0), ze = schedule(true, 0x1p-24);
    double w1 = 0, w2 = 0, w3 = 0, w4 = 0;
    run_case(f, noise, "zddim_v_4", SAMPLER_DDIM, PREDICTION_V, 4, true, &z0, TOL, &w1);
    run_case(f, noise, "zadd_v_4", SAMPLER_ADD, PREDICTION_V, 4, true, &z0, TOL, &w2);
    run_case(f, noise, "zeuler_a_v_4_f64", SAMPLER_EULER_A, PREDICTION_V, 4, true, &ze, TOL, &w3);
    run_case(f, noise, "zeuler_a_v_4", SAMPLER_EULER_A, PREDICTION_V, 4, true, &ze, 1e-3, &w4);
    printf("  zero terminal SNR, v, 4 steps: ddim %.3g, add %.3g, euler_a %.3g vs float64 formulas (%.3g vs "
           "diffusers' float32)\n",
           w1, w2, w3, w4);
}

static Var *sample_rng(TestCtx *tc, SamplerKind kind, uint64_t seed, uint64_t first, int64_t B) {
    NoiseSchedule s = schedule(false, 0);
    SamplerConfig cfg = {.kind = kind, .steps = 4, .prediction = PREDICTION_EPSILON, .set_alpha_to_one = true};
    SamplerNoise nz = {.seed = seed, .first_index = first, .given = NULL};
    int64_t shape[4] = {B, 4, 2, 3};
    return sampler_run(&tc->nt, &s, &cfg, 4, shape, &nz, toy_denoise, NULL, NULL, NULL);
}

static void test_rng_noise(void) {
    for (int k = 0; k < SAMPLER_KIND_COUNT; k++) {
        TestCtx a, b;
        tctx_init(&a);
        tctx_init(&b);
        Var *batch = sample_rng(&a, (SamplerKind)k, 7, 10, 3);
        Var *alone = sample_rng(&b, (SamplerKind)k, 7, 11, 1);
        CHECK_VAR(batch);
        CHECK_VAR(alone);
        if (batch && alone) {
            const float *x = batch->v.data, *y = alone->v.data;
            CHECK(!memcmp(x + ELEMS, y, ELEMS * sizeof(float)), "%s: image 11 differs between a batch and alone",
                  sampler_kind_name((SamplerKind)k));
            CHECK(memcmp(x, x + ELEMS, ELEMS * sizeof(float)) != 0, "%s: images 10 and 11 are equal",
                  sampler_kind_name((SamplerKind)k));
            tctx_reset(&b);
            Var *other = sample_rng(&b, (SamplerKind)k, 8, 11, 1);
            CHECK(other && memcmp(x + ELEMS, other->v.data, ELEMS * sizeof(float)) != 0, "%s: seed 8 equals seed 7",
                  sampler_kind_name((SamplerKind)k));
        }
        tctx_free(&a);
        tctx_free(&b);
    }
    printf("  rng noise: an image depends on (seed, index) only, not on its batch\n");
}

static void test_refusals(void) {
    SamplerKind k;
    CHECK(sampler_kind_parse("euler_a", &k) == ADDC_OK && k == SAMPLER_EULER_A, "parse euler_a");
    CHECK(sampler_kind_parse("dpm", &k) != ADDC_OK && strstr(addc_error_message(), "euler_a"), "unknown sampler names the list");
    TestCtx tc;
    tctx_init(&tc);
    NoiseSchedule s = schedule(false, 0), z0 = schedule(true, 0);
    SamplerConfig cfg = {.kind = SAMPLER_ADD, .steps = 2, .prediction = PREDICTION_EPSILON, .set_alpha_to_one = true};
    SamplerNoise nz = {1, 0, NULL};
    int64_t shape[2] = {1, 8};
    CHECK(!sampler_run(&tc.c, &s, &cfg, 2, shape, &nz, toy_denoise, NULL, NULL, NULL) &&
              strstr(addc_error_message(), "tape"),
          "taped Ctx refused");
    cfg.kind = SAMPLER_EULER;
    cfg.prediction = PREDICTION_V;
    CHECK(!sampler_run(&tc.nt, &z0, &cfg, 2, shape, &nz, toy_denoise, NULL, NULL, NULL) &&
              strstr(addc_error_message(), "terminal_alpha_bar"),
          "euler at alphabar 0 refused with advice");
    tctx_free(&tc);
}

/* ---- addc sample, end to end ---- */

static char *file_read(const char *path, int64_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    *len = n;
    return b;
}

/* n PNGs of (h, w) in dir named 00000.png.. and a manifest of n lines with the given sampler */
static void check_outputs(const char *dir, int n, int h, int w, const char *sampler, int steps, const char *const *prompts,
                          int per_prompt) {
    char path[600];
    ImageLimits lim;
    image_limits_default(&lim);
    ImageU8 im = {0};
    int good = 0;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%05d.png", dir, i);
        int64_t len;
        char *b = file_read(path, &len);
        int32_t oh = 0, ow = 0;
        DataCounter fail;
        if (b && image_format_sniff((uint8_t *)b, len) == IMAGE_FORMAT_PNG &&
            image_decode((uint8_t *)b, len, &lim, 0, 0, &im, &oh, &ow, &fail) == ADDC_OK && oh == h && ow == w)
            good++;
        else
            fprintf(stderr, "  %s: missing, not a PNG or %dx%d (want %dx%d)\n", path, (int)oh, (int)ow, h, w);
        free(b);
    }
    image_u8_free(&im);
    snprintf(path, sizeof path, "%s/%05d.png", dir, n);
    CHECK(good == n && access(path, F_OK) != 0, "%s: %d of %d PNGs of %dx%d (and no more)", dir, good, n, h, w);
    snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
    int64_t len;
    char *text = file_read(path, &len);
    CHECK(text != NULL, "%s missing", path);
    if (!text) return;
    int lines = 0, ok = 0;
    for (char *line = text, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        int64_t l = nl ? nl - line : (int64_t)strlen(line);
        JsonDoc doc;
        if (json_parse(line, l, NULL, &doc) != ADDC_OK) {
            fprintf(stderr, "  manifest line %d does not parse: %s\n", lines, addc_error_message());
            lines++;
            continue;
        }
        const JsonNode *r = json_root(&doc);
        char want_file[32];
        snprintf(want_file, sizeof want_file, "%05d.png", lines);
        const char *file = json_string(&doc, json_get(&doc, r, "file"), NULL);
        const char *prompt = json_string(&doc, json_get(&doc, r, "prompt"), NULL);
        const char *smp = json_string(&doc, json_get(&doc, r, "sampler"), NULL);
        int64_t seed = -1, st = -1, idx = -1;
        json_int(json_get(&doc, r, "seed"), &seed);
        json_int(json_get(&doc, r, "steps"), &st);
        json_int(json_get(&doc, r, "index"), &idx);
        if (file && !strcmp(file, want_file) && prompt && !strcmp(prompt, prompts[lines / per_prompt]) && smp &&
            !strcmp(smp, sampler) && seed == 42 && st == steps && idx == lines)
            ok++;
        else
            fprintf(stderr, "  manifest line %d: %.*s\n", lines, (int)l, line);
        json_free(&doc);
        lines++;
    }
    free(text);
    CHECK(lines == n && ok == n, "%s: %d lines, %d as expected, want %d", path, lines, ok, n);
}

static bool same_files(const char *a, const char *b, int n) {
    for (int i = 0; i < n; i++) {
        char pa[600], pb[600];
        snprintf(pa, sizeof pa, "%s/%05d.png", a, i);
        snprintf(pb, sizeof pb, "%s/%05d.png", b, i);
        int64_t la, lb;
        char *x = file_read(pa, &la), *y = file_read(pb, &lb);
        bool same = x && y && la == lb && !memcmp(x, y, (size_t)la);
        free(x);
        free(y);
        if (!same) return false;
    }
    return true;
}

static int run(const char *cmd) {
    int rc = system(cmd);
    if (rc) fprintf(stderr, "  rc %d: %s\n", rc, cmd);
    return rc;
}

static void test_cli(void) {
    char self[512], addc[600], dir[] = "/tmp/addc_sample_XXXXXX", cmd[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return;
    self[n] = 0;
    *strrchr(self, '/') = 0;
    snprintf(addc, sizeof addc, "%s/addc", self);
    if (access(addc, X_OK) != 0) {
        CHECK(0, "no addc binary at %s: build the addc target first", addc);
        return;
    }
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    const char *src = getenv("ADDC_SOURCE_DIR") ? getenv("ADDC_SOURCE_DIR") : ADDC_SOURCE_DIR;
    const char *prompts[] = {"a sneaker", "an \"ankle\" boot\\"};
    /* tiny UNet + tiny VAE, random weights, no text: 2 prompts x 2 images, 32x32 RGB */
    const char *vae_args = "--model %s/configs/models/tiny_unet.yaml --weights none --vae %s/configs/models/tiny_vae.yaml "
                           "--vae-weights none --prompt 'a sneaker' --prompt 'an \"ankle\" boot\\' --n-per-prompt 2 "
                           "--sampler euler_a --steps 2 --seed 42";
    char args[1024];
    snprintf(args, sizeof args, vae_args, src, src);
    snprintf(cmd, sizeof cmd, "%s sample %s --out %s/a > %s/a.log", addc, args, dir, dir);
    CHECK(run(cmd) == 0, "addc sample (vae) failed");
    check_outputs((snprintf(cmd, sizeof cmd, "%s/a", dir), cmd), 4, 32, 32, "euler_a", 2, prompts, 2);
    snprintf(cmd, sizeof cmd, "%s sample %s --batch 1 --out %s/b > %s/b.log", addc, args, dir, dir);
    CHECK(run(cmd) == 0, "addc sample (vae, again) failed");
    char a_dir[600], b_dir[600];
    snprintf(a_dir, sizeof a_dir, "%s/a", dir);
    snprintf(b_dir, sizeof b_dir, "%s/b", dir);
    CHECK(same_files(a_dir, b_dir, 4), "same seed, --batch 2 then 1: PNG bytes differ");

    /* precomputed conditioning through the pixel-unshuffle codec: 16x16 gray images */
    float ctx[2 * 3 * 16], pooled[2 * 8];
    for (int i = 0; i < 2 * 3 * 16; i++) ctx[i] = (float)sin(0.3 * i);
    for (int i = 0; i < 2 * 8; i++) pooled[i] = (float)cos(0.7 * i);
    StTensor t[2] = {{"encoder_hidden_states", DTYPE_F32, 3, {2, 3, 16}, ctx, sizeof ctx},
                     {"text_embeds", DTYPE_F32, 2, {2, 8}, pooled, sizeof pooled}};
    char emb[600];
    snprintf(emb, sizeof emb, "%s/emb.safetensors", dir);
    CHECK_OK(safetensors_write(emb, t, 2, NULL));
    const char *eprompts[] = {"embedding 0", "embedding 1"};
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd,
                 "%s sample --model %s/configs/models/tiny_unet.yaml --weights none --init-seed 3 --latent unshuffle "
                 "--embeddings %s --sampler %s --steps 3 --seed 42 --prediction v_prediction --out %s/%c > %s/%c.log",
                 addc, src, emb, k ? "ddim" : "add", dir, 'c' + k, dir, 'c' + k);
        CHECK(run(cmd) == 0, "addc sample (embeddings, %s) failed", k ? "ddim" : "add");
        snprintf(a_dir, sizeof a_dir, "%s/%c", dir, 'c' + k);
        check_outputs(a_dir, 2, 16, 16, k ? "ddim" : "add", 3, eprompts, 1);
    }
    snprintf(a_dir, sizeof a_dir, "%s/c", dir);
    snprintf(b_dir, sizeof b_dir, "%s/d", dir);
    CHECK(!same_files(a_dir, b_dir, 1), "add and ddim gave the same image");
    /* usage errors exit 2, refusals 1 */
    snprintf(cmd, sizeof cmd, "%s sample --model x.yaml --weights none --out %s/e --sampler dpm 2>/dev/null", addc, dir);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "unknown sampler: exit %d, want 2", WEXITSTATUS(rc));
    snprintf(cmd, sizeof cmd, "%s sample --model %s/configs/models/tiny_vae.yaml --weights none --prompt a --out %s/e 2>/dev/null",
             addc, src, dir);
    rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 1, "a VAE as --model: exit %d, want 1", WEXITSTATUS(rc));
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) fprintf(stderr, "  could not remove %s\n", dir);
    printf("  addc sample: PNGs, sizes and manifest.jsonl as asked (vae and unshuffle codecs, embeddings), same "
           "bytes for the same seed at --batch 2 and 1\n");
}

int main(void) {
    Fixture f;
    if (!fixture_load("samplers/steps", &f)) {
        CHECK(0, "cannot load fixture samplers/steps (python3 tests/ref/make_samplers_fixture.py)");
        return test_main_end("samplers");
    }
    test_timesteps(&f);
    test_against_diffusers(&f);
    test_rng_noise();
    test_refusals();
    test_cli();
    fixture_free(&f);
    return test_main_end("samplers");
}
