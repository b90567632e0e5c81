/* tests/unit/test_vae: AutoencoderKL against diffusers (fixtures from tests/ref/make_vae_fixture.py).
 *
 * - the SDXL VAE built on the meta device from configs/models/sdxl_vae.yaml: 248 tensors,
 *   83,653,863 parameters (encoder 34,163,592, decoder 49,490,179), every (name, shape) in
 *   diffusers' order, every Stability single-file name (checked by the script with diffusers'
 *   converter), one unit per resnet block and attention, and meta encode / decode at 512 px;
 * - the tiny VAE: weights from diffusers' save_pretrained file (F16) and from a single file
 *   (BF16, 1x1-conv attention weights) giving identical values, a wrong layout refused, saving
 *   back giving diffusers' bytes; encoder mean / log-variance, sampled latents and decoder
 *   output against diffusers (max relative error <= 1e-4); the decoder's input gradient and
 *   the encoder's input gradient (<= 1e-3); checkpointing on and off bit-identical; sampling
 *   noise drawn per sample (independent of the batch split);
 * - config refusals with clear messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nn/vae.h"
#include "tests/ref_nn.h"
#include "tests/test_util.h"

#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

static int64_t numel_with_prefix(ParamStore *s, const char *prefix) {
    int64_t n = 0;
    for (int32_t i = 0; i < s->n; i++) {
        Param *p = param_store_get(s, i);
        if (strncmp(p->name, prefix, strlen(prefix)) == 0) n += tensor_numel(&p->var.v);
    }
    return n;
}

static bool ldm_alt(const void *user, const char *name, char *out) { return vae_ldm_key(user, name, out); }

static void test_sdxl_meta(void) {
    char path[512];
    VaeConfig cfg;
    CHECK_OK(vae_config_load(&cfg, nn_src_path(path, sizeof path, "configs/models/sdxl_vae.yaml"), NULL, 0));
    ParamStore s;
    param_store_init(&s, DEVICE_META);
    AutoencoderKL m;
    CHECK_OK(vae_init(&m, &cfg, &s));
    CHECK_OK(param_store_alloc(&s, false));
    int64_t enc = numel_with_prefix(&s, "encoder."), dec = numel_with_prefix(&s, "decoder.");
    printf("sdxl_vae: %d tensors, %lld parameters (encoder %lld, decoder %lld)\n", s.n, (long long)s.numel,
           (long long)enc, (long long)dec);
    CHECK(s.n == 248 && s.numel == 83653863 && enc == 34163592 && dec == 49490179, "SDXL VAE counts");
    nn_check_listing(&s, "tests/ref/fixtures/vae/sdxl_vae_params.txt", ldm_alt, &m.cfg);
    int resnets = nn_count_units(&s, ".resnets."), attns = nn_count_units(&s, ".attentions.");
    printf("  %d units (%d resnet blocks, %d attentions)\n", s.n_units, resnets, attns);
    CHECK(resnets == 4 * 2 + 4 * 3 + 4 && attns == 2, "units: %d resnets, %d attentions", resnets, attns);

    Arena arena;
    arena_init(&arena, 1 << 20, 0);
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&arena, &tape, DEVICE_META);
    int64_t xs[4] = {2, 512, 512, 3}, zs[4] = {2, 64, 64, 4};
    Var *x = var_new(&c, DTYPE_F32, 4, xs), *z = var_new(&c, DTYPE_F32, 4, zs);
    z->requires_grad = true;
    Var *lat = vae_encode_latents(&c, &m, x, NULL);
    CHECK_VAR(lat);
    if (lat) CHECK(lat->v.shape[1] == 64 && lat->v.shape[2] == 64 && lat->v.shape[3] == 4, "meta encode shape");
    m.gradient_checkpointing = true;
    int32_t before = tape.n;
    Var *img = vae_decode_latents(&c, &m, z);
    CHECK_VAR(img);
    if (img) CHECK(img->v.shape[1] == 512 && img->v.shape[2] == 512 && img->v.shape[3] == 3, "meta decode shape");
    printf("  meta encode 512 px -> 64x64x4; decode with checkpointing: %d tape nodes\n", tape.n - before);
    tape_free(&tape);
    arena_free(&arena);
    vae_free(&m);
    param_store_free(&s);
}

typedef struct DecRun {
    float *out, *g_z;
} DecRun;

static float *copy_f32(const Var *v, bool grad) {
    if (!v || !(grad ? v->g.data : v->v.data)) return NULL;
    int64_t n = tensor_numel(&v->v);
    float *d = malloc((size_t)n * 4);
    memcpy(d, grad ? v->g.data : v->v.data, (size_t)n * 4);
    return d;
}

static DecRun decode_run(AutoencoderKL *m, const SafeTensors *io) {
    TestCtx tc;
    tctx_init(&tc);
    DecRun r = {NULL, NULL};
    Var *z = nn_io_var(&tc.nt, io, "z", true);
    Var *y = vae_decode(&tc.c, m, z);
    CHECK_VAR(y);
    if (y) {
        Var *R = nn_io_var(&tc.nt, io, "R_dec", false);
        CHECK_OK(tape_backward_seed(&tc.c, y, &R->v));
        r.out = copy_f32(y, false);
        r.g_z = copy_f32(z, true);
    }
    tctx_free(&tc);
    return r;
}

static void compare_files(const char *ours, const char *theirs) {
    SafeTensors a, b;
    CHECK_OK(safetensors_open(&a, ours));
    CHECK_OK(safetensors_open(&b, theirs));
    int bad = 0;
    for (int32_t i = 0; i < b.n; i++) {
        const StTensor *tb = &b.t[i], *ta = safetensors_find(&a, tb->name);
        bool same = ta && ta->dtype == tb->dtype && ta->ndim == tb->ndim && ta->nbytes == tb->nbytes &&
                    memcmp(ta->shape, tb->shape, sizeof(int64_t) * (size_t)ta->ndim) == 0 &&
                    memcmp(ta->data, tb->data, (size_t)ta->nbytes) == 0;
        if (!same && bad++ < 5) fprintf(stderr, "  saved tensor %s differs from diffusers'\n", tb->name);
    }
    CHECK(bad == 0 && a.n == b.n, "saved file: %d of %d tensors differ (%d saved)", bad, b.n, a.n);
    safetensors_close(&a);
    safetensors_close(&b);
}

static void test_tiny(void) {
    char path[512], path2[512];
    VaeConfig cfg;
    CHECK_OK(vae_config_load(&cfg, nn_src_path(path, sizeof path, "configs/models/tiny_vae.yaml"), NULL, 0));
    ParamStore s;
    param_store_init(&s, DEVICE_CPU);
    AutoencoderKL m;
    CHECK_OK(vae_init(&m, &cfg, &s));
    CHECK_OK(param_store_alloc(&s, false));
    printf("tiny_vae: %d tensors, %lld parameters, %d units\n", s.n, (long long)s.numel, s.n_units);

    WeightsReport rep;
    const char *diffusers_rel = "tests/ref/fixtures/vae/tiny_vae/diffusion_pytorch_model.safetensors";
    CHECK_OK(vae_load(&m, &s, nn_src_path(path, sizeof path, diffusers_rel), NULL, &rep));
    CHECK(rep.n_loaded == s.n && rep.n_missing == 0 && rep.n_unexpected == 0, "diffusers load: %d of %d", rep.n_loaded,
          s.n);
    weights_report_free(&rep);

    ParamStore s2;
    param_store_init(&s2, DEVICE_CPU);
    AutoencoderKL m2;
    CHECK_OK(vae_init(&m2, &cfg, &s2));
    CHECK_OK(param_store_alloc(&s2, false));
    CHECK_OK(vae_load(&m2, &s2, nn_src_path(path2, sizeof path2, "tests/ref/fixtures/vae/tiny_vae_ldm.safetensors"),
                      NULL, &rep));
    CHECK(rep.n_loaded == s.n && rep.n_ignored == 2, "single-file load: %d loaded, %d ignored", rep.n_loaded,
          rep.n_ignored);
    CHECK(memcmp(s.data, s2.data, (size_t)s.numel * 4) == 0, "single-file weights differ from the diffusers weights");
    weights_report_free(&rep);
    WeightsKeyMap ldm = vae_key_map_ldm(&m2);
    Status st = weights_load_file(&s2, path, &ldm, NULL, &rep);
    CHECK(st == ADDC_ERR_FORMAT && rep.n_missing == s.n, "wrong layout: status %d, %d missing", (int)st, rep.n_missing);
    printf("  wrong layout refused: %.150s...\n", addc_error_message());
    addc_error_clear();
    weights_report_free(&rep);
    vae_free(&m2);
    param_store_free(&s2);

    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/addc_test_vae_%d.safetensors", (int)getpid());
    CHECK_OK(weights_save(&s, tmp, DTYPE_F16, NULL));
    compare_files(tmp, path);
    unlink(tmp);

    SafeTensors io;
    CHECK_OK(safetensors_open(&io, nn_src_path(path, sizeof path, "tests/ref/fixtures/vae/tiny_vae_io.safetensors")));

    /* encoder, untaped and taped */
    TestCtx tc;
    tctx_init(&tc);
    Var *x = nn_io_var(&tc.nt, &io, "image", false), *mean = NULL, *logvar = NULL;
    double t0 = nn_now();
    CHECK_OK(vae_encode(&tc.nt, &m, x, &mean, &logvar));
    double t_enc = nn_now() - t0;
    double em = nn_check_close("mean", mean ? mean->v.data : NULL, mean ? tensor_numel(&mean->v) : 0, &io, "mean", FWD_TOL);
    double el = nn_check_close("logvar", logvar ? logvar->v.data : NULL, logvar ? tensor_numel(&logvar->v) : 0, &io,
                               "logvar", FWD_TOL);
    Var *eps = nn_io_var(&tc.nt, &io, "eps", false);
    Var *lat = vae_encode_latents(&tc.nt, &m, x, eps);
    double ela = nn_check_close("latents", lat ? lat->v.data : NULL, lat ? tensor_numel(&lat->v) : 0, &io, "latents",
                                FWD_TOL);
    Var *xg = nn_io_var(&tc.nt, &io, "image", true);
    CHECK_OK(vae_encode(&tc.c, &m, xg, &mean, &logvar));
    double egi = INFINITY;
    if (mean) {
        Var *R = nn_io_var(&tc.nt, &io, "R_enc", false);
        CHECK_OK(tape_backward_seed(&tc.c, mean, &R->v));
        egi = nn_check_close("grad.image", xg->g.data, tensor_numel(&xg->v), &io, "grad.image", GRAD_TOL);
    }
    printf("  encode (%.1f ms): mean %.2e, logvar %.2e, sampled latents %.2e; grad image %.2e\n", 1e3 * t_enc, em, el,
           ela, egi);
    tctx_free(&tc);

    /* decoder with its input gradient, checkpointing off and on */
    m.gradient_checkpointing = false;
    t0 = nn_now();
    DecRun plain = decode_run(&m, &io);
    double t_dec = nn_now() - t0;
    int64_t nout = safetensors_find(&io, "decoded")->nbytes / 4, nz = safetensors_find(&io, "z")->nbytes / 4;
    double ed = nn_check_close("decoded", plain.out, nout, &io, "decoded", FWD_TOL);
    double egz = nn_check_close("grad.z", plain.g_z, nz, &io, "grad.z", GRAD_TOL);
    m.gradient_checkpointing = true;
    DecRun ck = decode_run(&m, &io);
    bool same = plain.out && ck.out && plain.g_z && ck.g_z && memcmp(plain.out, ck.out, (size_t)nout * 4) == 0 &&
                memcmp(plain.g_z, ck.g_z, (size_t)nz * 4) == 0;
    CHECK(same, "checkpointing changes the decoder's output or input gradient");
    printf("  decode + backward (%.1f ms): decoded %.2e, grad z %.2e; checkpointing %s\n", 1e3 * t_dec, ed, egz,
           same ? "bit-identical" : "DIFFERS");
    free(plain.out);
    free(plain.g_z);
    free(ck.out);
    free(ck.g_z);
    safetensors_close(&io);

    /* sampling noise: sample b of a batch is the stream of index + b, whatever the batch */
    tctx_init(&tc);
    RngKey k3 = rng_key(9, RNG_PURPOSE_NOISE, 10, 4), k1 = rng_key(9, RNG_PURPOSE_NOISE, 12, 4);
    Var *n3 = vae_noise(&tc.nt, &m, 3, 4, 4, &k3), *n1 = vae_noise(&tc.nt, &m, 1, 4, 4, &k1);
    int64_t per = 4 * 4 * cfg.latent_channels;
    double mean_sq = 0;
    for (int64_t i = 0; i < 3 * per; i++) mean_sq += (double)((float *)n3->v.data)[i] * ((float *)n3->v.data)[i];
    mean_sq /= (double)(3 * per);
    CHECK(memcmp((float *)n3->v.data + 2 * per, n1->v.data, (size_t)per * 4) == 0 &&
              memcmp(n3->v.data, (float *)n3->v.data + per, (size_t)per * 4) != 0 && mean_sq > 0.5 && mean_sq < 1.6,
          "vae_noise: per-sample streams (mean square %.3f)", mean_sq);
    tctx_free(&tc);
    vae_free(&m);
    param_store_free(&s);
}

static void test_config_refusals(void) {
    static const char *const bad[][2] = {
        {"_class_name: AutoencoderKL\nblock_out_channels: [8, 16]\n", "block_out_channels has 2 levels"},
        {"_class_name: VQModel\n", "expected AutoencoderKL"},
        {"_class_name: AutoencoderKL\nnorm_num_groups: 3\n", "not a positive multiple"},
        {"_class_name: AutoencoderKL\nact_fn: relu\n", "act_fn = relu"},
        {"_class_name: AutoencoderKL\nscaling_factr: 0.1\n", "scaling_factor"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Config c;
        config_init(&c);
        VaeConfig cfg;
        Status st = config_load_string(&c, "bad.yaml", bad[i][0]);
        if (st == ADDC_OK) st = config_bind(&c, &vae_config_schema, &cfg);
        if (st == ADDC_OK) st = vae_config_check(&cfg);
        CHECK(st != ADDC_OK && strstr(addc_error_message(), bad[i][1]) != NULL, "config %zu: status %d, message '%s'", i,
              (int)st, addc_error_message());
        if (i == 0) printf("config refused: %s\n", addc_error_message());
        addc_error_clear();
        config_free(&c);
    }
}

int main(void) {
    test_sdxl_meta();
    test_tiny();
    test_config_refusals();
    return test_main_end("test_vae");
}
