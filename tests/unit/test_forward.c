/* tests/unit/test_forward: `addc forward` end to end. The addc binary next to this test runs on
 * the inputs tests/ref/make_forward_fixture.py wrote (the libraries' names, NCHW images) with the
 * weight files diffusers, transformers and torch wrote, and every output is compared with the
 * Python reference (max relative error <= 1e-4):
 * - the tiny SDXL-family UNet from its F16 diffusers folder (I64 timesteps, non-square latent)
 *   and from the BF16 Stability single file; the tiny SD 2.1 UNet (scalar timestep, F16 context);
 * - the tiny VAE: encode and decode chosen by the input names, --vae encode alone, --vae decode
 *   with the latent named sample, the single-file weights;
 * - the tiny DINOv2 from pixel_values (a non-square patch grid: interpolated positions) and from
 *   an image through addc's preprocessing (pixel_values written back);
 * - the tiny CLIP-L- and bigG-like text encoders from I64 ids (77), CLIP-L from I32 ids (16);
 * - the heads in eval mode from features (B, C, N) with c_text + c_img, and in train mode from
 *   DINOv2-layout tokens with c (make_disc_fixture.py's logits and spectral-norm vectors);
 * - captions: the ids written equal transformers' and open_clip's tokenizers' (the tokenizer
 *   fixture), and the forward of those captions equals the forward of the same ids given as
 *   input_ids (random weights by seed: the same both times);
 * - refusals with the message a user needs: a missing input (the expected names listed), wrong
 *   shapes, dtypes and batch, ids outside the vocabulary (given, or from captions for a tiny
 *   vocabulary), a weights file of another network,
 *   an option for another network; usage errors exit 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/safetensors.h"
#include "tests/test_util.h"

#define FWD_TOL 1e-4

static char addc_bin[600], tmp_dir[256], log_path[320];

/* paths in a ring of buffers: a few may be held at once */
static const char *src(const char *rel) {
    static char buf[32][600];
    static int k;
    k = (k + 1) % 32;
    snprintf(buf[k], sizeof buf[k], "%s/%s", ADDC_SOURCE_DIR, rel);
    return buf[k];
}

static const char *tmp(const char *name) {
    static char buf[32][400];
    static int k;
    k = (k + 1) % 32;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp_dir, name);
    return buf[k];
}

/* the addc binary next to this test; false when it was not built */
static bool find_addc(void) {
    ssize_t n = readlink("/proc/self/exe", addc_bin, sizeof addc_bin - 8);
    if (n <= 0) return false;
    addc_bin[n] = 0;
    char *slash = strrchr(addc_bin, '/');
    if (!slash) return false;
    strcpy(slash + 1, "addc");
    return access(addc_bin, X_OK) == 0;
}

/* runs `addc forward <args>`; the output (stdout and stderr) goes to log_path */
static int run_forward(const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' forward %s > '%s' 2>&1", addc_bin, args, log_path);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static char *log_text(void) {
    static char buf[16384];
    FILE *f = fopen(log_path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

static float *read_f32(const StTensor *t) {
    int64_t n = t->nbytes / (int64_t)dtype_size(t->dtype);
    float *d = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (d && safetensors_read_f32(t, d, n) != ADDC_OK) {
        free(d);
        return NULL;
    }
    return d;
}

/* Compares output `got` of out_path with `want` of ref_path (same shape); returns the error. */
static double compare_one(const SafeTensors *out, const char *got, const SafeTensors *ref, const char *want,
                          const char *label) {
    const StTensor *a = safetensors_find(out, got), *b = safetensors_find(ref, want);
    CHECK(a && b, "%s: %s missing from %s (or %s from the reference)", label, got, out->path, want);
    if (!a || !b) return 1.0;
    bool same = a->ndim == b->ndim;
    for (int32_t d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
    CHECK(same && a->dtype == DTYPE_F32, "%s: %s has another shape or dtype than the reference", label, got);
    if (!same) return 1.0;
    float *x = read_f32(a), *y = read_f32(b);
    char l[256];
    snprintf(l, sizeof l, "%s %s", label, got);
    double e = x && y ? compare_f32(l, x, y, a->nbytes / 4, FWD_TOL, 1e-6) : 1.0;
    CHECK(e <= FWD_TOL, "%s: %s max relative error %.3g > %g", label, got, e, FWD_TOL);
    free(x);
    free(y);
    return e;
}

/* Runs one forward and compares every tensor of the reference file (names: NULL = all of them,
 * else a NULL-terminated list); the output must hold n_out tensors (0: do not check). */
static void check_case(const char *label, const char *args, const char *ref_rel, const char *const *names,
                       int32_t n_out) {
    char full[3000];
    snprintf(full, sizeof full, "%s --out '%s'", args, tmp("out.safetensors"));
    int rc = run_forward(full);
    CHECK(rc == 0, "%s: addc forward exit %d:\n%s", label, rc, log_text());
    if (rc != 0) return;
    SafeTensors out, ref;
    CHECK_OK(safetensors_open(&out, tmp("out.safetensors")));
    CHECK_OK(safetensors_open(&ref, src(ref_rel)));
    double worst = 0;
    int32_t compared = 0;
    for (int32_t i = 0; names ? names[i] != NULL : i < ref.n; i++) {
        const char *name = names ? names[i] : ref.t[i].name;
        double e = compare_one(&out, name, &ref, name, label);
        if (e > worst) worst = e;
        compared++;
    }
    if (n_out) CHECK(out.n == n_out, "%s: %d outputs written, %d expected", label, out.n, n_out);
    printf("  %-34s %d outputs compared, max rel err %.2e\n", label, compared, worst);
    safetensors_close(&out);
    safetensors_close(&ref);
}

/* Writes dst: the tensors of src except `drop` (NULL: none), plus `add` (NULL: none). */
static void derive_inputs(const char *src_path, const char *dst, const char *drop, const StTensor *add) {
    SafeTensors s;
    CHECK_OK(safetensors_open(&s, src_path));
    StTensor t[64];
    int32_t n = 0;
    for (int32_t i = 0; i < s.n && n < 63; i++)
        if (!drop || strcmp(s.t[i].name, drop)) t[n++] = s.t[i];
    if (add) t[n++] = *add;
    CHECK_OK(safetensors_write(dst, t, n, NULL));
    safetensors_close(&s);
}

/* a copy of src's tensor `name` under another name, data still in the open file */
static StTensor renamed(const SafeTensors *s, const char *name, const char *as) {
    StTensor t = *safetensors_find(s, name);
    t.name = (char *)as;
    return t;
}

#define FX "tests/ref/fixtures/"
#define FWDIN(c) src(FX "forward/" c "_in.safetensors")
#define FWDREF(c) FX "forward/" c "_ref.safetensors"

static void test_networks(void) {
    char a[2000];
    printf("networks against diffusers / transformers / torch:\n");
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_unet.yaml"),
             src(FX "unet/tiny_xl/diffusion_pytorch_model.safetensors"), FWDIN("unet_xl"));
    check_case("UNet SDXL-tiny, F16 diffusers", a, FWDREF("unet_xl"), NULL, 1);
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_unet.yaml"),
             src(FX "unet/tiny_xl_ldm.safetensors"), FWDIN("unet_xl"));
    check_case("UNet SDXL-tiny, BF16 single file", a, FWDREF("unet_xl"), NULL, 1);
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_sd21_unet.yaml"),
             src(FX "unet/tiny_sd21/diffusion_pytorch_model.safetensors"), FWDIN("unet_sd21"));
    check_case("UNet SD2.1-tiny, scalar timestep", a, FWDREF("unet_sd21"), NULL, 1);

    const char *vae_w = src(FX "vae/tiny_vae/diffusion_pytorch_model.safetensors");
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_vae.yaml"), vae_w,
             FWDIN("vae"));
    check_case("VAE encode + decode", a, FWDREF("vae"), NULL, 3);
    static const char *const enc[] = {"latent_dist.mean", "latent_dist.logvar", NULL}, *const dec[] = {"sample", NULL};
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s' --vae encode", src("configs/models/tiny_vae.yaml"),
             src(FX "vae/tiny_vae_ldm.safetensors"), FWDIN("vae"));
    check_case("VAE --vae encode, single file", a, FWDREF("vae"), enc, 2);
    SafeTensors v;
    CHECK_OK(safetensors_open(&v, FWDIN("vae")));
    StTensor z = renamed(&v, "z", "sample");
    StTensor only[1] = {z};
    CHECK_OK(safetensors_write(tmp("vae_z.safetensors"), only, 1, NULL));
    safetensors_close(&v);
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s' --vae decode", src("configs/models/tiny_vae.yaml"),
             vae_w, tmp("vae_z.safetensors"));
    check_case("VAE --vae decode of 'sample'", a, FWDREF("vae"), dec, 1);

    const char *vit_w = src(FX "vit/tiny_dinov2/model.safetensors");
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_dinov2.yaml"), vit_w,
             FWDIN("vit"));
    check_case("DINOv2 pixel_values 42x56", a, FWDREF("vit"), NULL, 5);
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_dinov2.yaml"), vit_w,
             FWDIN("vit_image"));
    check_case("DINOv2 image + preprocessing", a, FWDREF("vit_image"), NULL, 6);

    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_clip_l_text.yaml"),
             src(FX "clip/tiny_clip_l/model.safetensors"), FWDIN("clip"));
    check_case("CLIP-L-tiny, I64 ids", a, FWDREF("clip_l"), NULL, 3);
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_openclip_text.yaml"),
             src(FX "clip/tiny_bigg/model.safetensors"), FWDIN("clip"));
    check_case("bigG-tiny with projection", a, FWDREF("bigg"), NULL, 4);
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_clip_l_text.yaml"),
             src(FX "clip/tiny_clip_l/model.safetensors"), FWDIN("clip_short"));
    check_case("CLIP-L-tiny, I32 ids, T = 16", a, FWDREF("clip_short"), NULL, 3);

    const char *heads_w = src(FX "disc/tiny_disc_heads.safetensors");
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s'", src("configs/models/tiny_disc_heads.yaml"),
             heads_w, FWDIN("heads"));
    check_case("heads eval, features + c_text/c_img", a, FWDREF("heads"), NULL, 3);

    /* train mode on make_disc_fixture.py's io: tokens.k, c -> logits.k and u, v after the update */
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s' --train --out '%s'",
             src("configs/models/tiny_disc_heads.yaml"), heads_w, src(FX "disc/tiny_disc_io.safetensors"),
             tmp("out.safetensors"));
    int rc = run_forward(a);
    CHECK(rc == 0 && strstr(log_text(), "not read"), "heads --train: exit %d:\n%s", rc, log_text());
    if (rc == 0) {
        SafeTensors out, ref;
        CHECK_OK(safetensors_open(&out, tmp("out.safetensors")));
        CHECK_OK(safetensors_open(&ref, src(FX "disc/tiny_disc_io.safetensors")));
        double worst = 0;
        int32_t n = 0;
        for (int32_t i = 0; i < out.n; i++) {
            char want[256];
            const char *name = out.t[i].name;
            snprintf(want, sizeof want, "%s%s", strncmp(name, "logits.", 7) ? "after." : "", name);
            double e = compare_one(&out, name, &ref, want, "heads --train");
            if (e > worst) worst = e;
            n++;
        }
        CHECK(n == 3 + 3 * 6, "heads --train: %d outputs", n);
        printf("  %-34s %d outputs compared, max rel err %.2e\n", "heads train, tokens + c, u/v after", n, worst);
        safetensors_close(&out);
        safetensors_close(&ref);
    }
}

/* captions: the ids against the tokenizer fixture; then the same ids as input_ids */
static void test_captions(void) {
    printf("captions:\n");
    SafeTensors fx;
    CHECK_OK(safetensors_open(&fx, src(FX "tokenizer/captions.safetensors")));
    const StTensor *text = safetensors_find(&fx, "text"), *off = safetensors_find(&fx, "offsets");
    const int64_t *o = off->data;
    char cap[2][256];
    for (int k = 0; k < 2; k++)
        snprintf(cap[k], sizeof cap[k], "%.*s", (int)(o[k + 1] - o[k]), (const char *)text->data + o[k]);
    static const struct {
        const char *yaml, *clean, *ids;
    } modes[] = {{"tiny_clip_l_text.yaml", "hf", "hf"}, {"tiny_openclip_text.yaml", "open_clip", "open_clip"}};
    for (int mi = 0; mi < 2; mi++) {
        char a[2000], yaml[300];
        snprintf(yaml, sizeof yaml, "configs/models/%s", modes[mi].yaml);
        snprintf(a, sizeof a,
                 "--model '%s' vocab_size=49408 --weights none --seed 7 --caption '%s' --caption '%s' --tokenizer '%s' "
                 "--clean %s --out '%s'",
                 src(yaml), cap[0], cap[1], src("configs/tokenizer/bpe_simple_vocab_16e6.txt.gz"), modes[mi].clean,
                 tmp("cap.safetensors"));
        int rc = run_forward(a);
        CHECK(rc == 0, "captions (%s): exit %d:\n%s", modes[mi].clean, rc, log_text());
        if (rc) continue;
        SafeTensors out;
        CHECK_OK(safetensors_open(&out, tmp("cap.safetensors")));
        const StTensor *ids = safetensors_find(&out, "input_ids"), *want = safetensors_find(&fx, modes[mi].ids);
        bool ok = ids && ids->dtype == DTYPE_I64 && ids->ndim == 2 && ids->shape[0] == 2 && ids->shape[1] == 77;
        int32_t bad = 0;
        for (int64_t i = 0; ok && i < 2 * 77; i++) bad += ((const int64_t *)ids->data)[i] != ((const int32_t *)want->data)[i];
        CHECK(ok && bad == 0, "captions (%s): the ids differ from the tokenizer's in %d places", modes[mi].clean, bad);

        /* the same ids as input_ids, the same seed: the same outputs */
        StTensor in_ids = *ids;
        CHECK_OK(safetensors_write(tmp("ids.safetensors"), &in_ids, 1, NULL));
        snprintf(a, sizeof a, "--model '%s' vocab_size=49408 --weights none --seed 7 --inputs '%s' --out '%s'", src(yaml),
                 tmp("ids.safetensors"), tmp("ids_out.safetensors"));
        rc = run_forward(a);
        CHECK(rc == 0, "input_ids of the captions: exit %d:\n%s", rc, log_text());
        SafeTensors again;
        int32_t same = 0;
        if (rc == 0 && safetensors_open(&again, tmp("ids_out.safetensors")) == ADDC_OK) {
            for (int32_t i = 0; i < again.n; i++) {
                const StTensor *x = safetensors_find(&out, again.t[i].name);
                same += x && x->nbytes == again.t[i].nbytes && !memcmp(x->data, again.t[i].data, (size_t)x->nbytes);
            }
            CHECK(same == again.n && again.n >= 3, "captions vs their ids: %d of %d outputs identical", same, again.n);
            safetensors_close(&again);
        }
        printf("  %-34s ids = %s tokenizer's (%d differ); forward = forward of input_ids (%d outputs identical)\n",
               modes[mi].yaml, modes[mi].ids, bad, same);
        safetensors_close(&out);
    }
    safetensors_close(&fx);
}

/* one refusal: exit code and the phrases the message must hold */
static void expect_fail(const char *label, const char *args, int want_rc, const char *const *phrases) {
    int rc = run_forward(args);
    const char *t = log_text();
    bool ok = rc == want_rc;
    for (int i = 0; ok && phrases[i]; i++) ok = strstr(t, phrases[i]) != NULL;
    CHECK(ok, "%s: exit %d (want %d), message:\n%s", label, rc, want_rc, t);
    const char *nl = strchr(t, '\n');
    printf("  %-26s exit %d: %.*s\n", label, rc, (int)(nl ? nl - t : (long)strlen(t)), t);
}

#define PHRASES(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_refusals(void) {
    printf("refusals:\n");
    char a[2000], base[1200];
    const char *xl_w = src(FX "unet/tiny_xl/diffusion_pytorch_model.safetensors");
    snprintf(base, sizeof base, "--model '%s' --weights '%s' --out '%s'", src("configs/models/tiny_unet.yaml"), xl_w,
             tmp("bad_out.safetensors"));

    derive_inputs(FWDIN("unet_xl"), tmp("no_t.safetensors"), "timestep", NULL);
    snprintf(a, sizeof a, "%s --inputs '%s'", base, tmp("no_t.safetensors"));
    expect_fail("missing timestep", a, 1,
                PHRASES("needs an input named 'timestep'", "encoder_hidden_states (B, T, 16)", "time_ids (B, 6)",
                        "The inputs file holds: encoder_hidden_states, sample, text_embeds, time_ids"));

    SafeTensors xl;
    CHECK_OK(safetensors_open(&xl, FWDIN("unet_xl")));
    /* NHWC instead of NCHW */
    StTensor s = *safetensors_find(&xl, "sample");
    int64_t nhwc[4] = {2, 8, 12, 4};
    memcpy(s.shape, nhwc, sizeof nhwc);
    derive_inputs(FWDIN("unet_xl"), tmp("nhwc.safetensors"), "sample", &s);
    snprintf(a, sizeof a, "%s --inputs '%s'", base, tmp("nhwc.safetensors"));
    expect_fail("sample in NHWC", a, 1, PHRASES("input 'sample' is (2, 8, 12, 4) but must be (B, 4, H, W)", "channels first"));
    /* integer sample */
    s = *safetensors_find(&xl, "sample");
    s.dtype = DTYPE_I64;
    s.ndim = 3;
    s.shape[2] = 4;
    s.shape[3] = 0;
    s.nbytes = 2 * 4 * 4 * 8;
    derive_inputs(FWDIN("unet_xl"), tmp("int.safetensors"), "sample", &s);
    snprintf(a, sizeof a, "%s --inputs '%s'", base, tmp("int.safetensors"));
    expect_fail("integer sample", a, 1, PHRASES("input 'sample' is I64; it must be a float tensor"));
    /* a batch of 1 in the context */
    StTensor e = *safetensors_find(&xl, "encoder_hidden_states");
    e.shape[0] = 1;
    e.nbytes /= 2;
    derive_inputs(FWDIN("unet_xl"), tmp("batch.safetensors"), "encoder_hidden_states", &e);
    snprintf(a, sizeof a, "%s --inputs '%s'", base, tmp("batch.safetensors"));
    expect_fail("batch mismatch", a, 1, PHRASES("'encoder_hidden_states' has batch 1 but the inputs before it have 2"));
    /* odd latent size */
    s = *safetensors_find(&xl, "sample");
    s.shape[3] = 11;
    s.nbytes = 2 * 4 * 8 * 11 * 4;
    derive_inputs(FWDIN("unet_xl"), tmp("odd.safetensors"), "sample", &s);
    snprintf(a, sizeof a, "%s --inputs '%s'", base, tmp("odd.safetensors"));
    expect_fail("odd latent width", a, 1, PHRASES("must be multiples of 2"));
    safetensors_close(&xl);

    /* float ids, ids outside the vocabulary */
    SafeTensors ids;
    CHECK_OK(safetensors_open(&ids, FWDIN("clip_short")));
    StTensor t = *safetensors_find(&ids, "input_ids");
    t.dtype = DTYPE_F32;
    derive_inputs(FWDIN("clip_short"), tmp("fids.safetensors"), "input_ids", &t);
    int32_t big[2 * 16];
    memcpy(big, safetensors_find(&ids, "input_ids")->data, sizeof big);
    big[17] = 600;
    t = *safetensors_find(&ids, "input_ids");
    t.data = big;
    derive_inputs(FWDIN("clip_short"), tmp("bigids.safetensors"), "input_ids", &t);
    safetensors_close(&ids);
    const char *clip_yaml = src("configs/models/tiny_clip_l_text.yaml"), *clip_w = src(FX "clip/tiny_clip_l/model.safetensors");
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s' --out '%s'", clip_yaml, clip_w,
             tmp("fids.safetensors"), tmp("bad_out.safetensors"));
    expect_fail("float input_ids", a, 1, PHRASES("input 'input_ids' is F32; token ids must be I64 or I32"));
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s' --out '%s'", clip_yaml, clip_w,
             tmp("bigids.safetensors"), tmp("bad_out.safetensors"));
    expect_fail("id outside the vocabulary", a, 1, PHRASES("input_ids[1, 1] = 600 is outside the vocabulary (vocab_size 500)"));

    snprintf(a, sizeof a, "--model '%s' --weights none --caption 'a cat' --tokenizer '%s' --out '%s'", clip_yaml,
             src("configs/tokenizer/bpe_simple_vocab_16e6.txt.gz"), tmp("bad_out.safetensors"));
    expect_fail("captions, 500-id vocabulary", a, 1, PHRASES("= 49406 is outside the vocabulary", "tokenizer does not fit"));

    /* the VAE's weights for the UNet; --vae for a UNet; a missing head input */
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s' --out '%s'", src("configs/models/tiny_unet.yaml"),
             src(FX "vae/tiny_vae/diffusion_pytorch_model.safetensors"), FWDIN("unet_xl"), tmp("bad_out.safetensors"));
    expect_fail("weights of another network", a, 1, PHRASES("addc: --weights:", "missing"));
    snprintf(a, sizeof a, "%s --inputs '%s' --vae encode", base, FWDIN("unet_xl"));
    expect_fail("--vae for a UNet", a, 1, PHRASES("--vae is for an AutoencoderKL"));
    derive_inputs(FWDIN("heads"), tmp("heads2.safetensors"), "features.2", NULL);
    snprintf(a, sizeof a, "--model '%s' --weights '%s' --inputs '%s' --out '%s'", src("configs/models/tiny_disc_heads.yaml"),
             src(FX "disc/tiny_disc_heads.safetensors"), tmp("heads2.safetensors"), tmp("bad_out.safetensors"));
    expect_fail("a head without features", a, 1, PHRASES("needs an input named 'features.2'", "tokens.k (B, 1 + N, 24)"));
    CHECK(access(tmp("bad_out.safetensors"), F_OK) != 0, "a refused forward must not write its output file");

    /* usage */
    snprintf(a, sizeof a, "--model '%s' --inputs '%s' --out '%s'", src("configs/models/tiny_unet.yaml"), FWDIN("unet_xl"),
             tmp("bad_out.safetensors"));
    expect_fail("no --weights", a, 2, PHRASES("--weights none"));
    snprintf(a, sizeof a, "%s --inputs '%s' --vae both", base, FWDIN("unet_xl"));
    expect_fail("--vae both", a, 2, PHRASES("--vae takes encode or decode"));
    expect_fail("--help", "--help", 0, PHRASES("usage: addc forward", "LAYOUT", "NCHW", "hidden_states[-2]", "logits.k"));
}

int main(void) {
    if (!find_addc()) {
        printf("no addc binary next to this test: build the addc target (skipped)\n");
        return 77;
    }
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/addc_test_forward_%d", (int)getpid());
    mkdir(tmp_dir, 0700);
    snprintf(log_path, sizeof log_path, "%s/log.txt", tmp_dir);
    test_networks();
    test_captions();
    test_refusals();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    return test_main_end("test_forward");
}
