/* tests/unit/test_vit: DINOv2 against transformers' Dinov2Model (fixtures from
 * tests/ref/make_vit_fixture.py).
 *
 * - ViT-S/14 and ViT-L/14 built on the meta device from configs/models/: 223 tensors /
 *   22,056,576 parameters and 439 / 304,368,640, every (name, shape) in transformers' order under
 *   the names its files use, one unit per block, and meta forwards at 224 px (five taps of
 *   (B, 257, 384) for S/14; the CLS (B, 1024) for L/14);
 * - the tiny model loaded from transformers' save_pretrained file (BF16): the preprocessing
 *   (area resize 48 -> 42 px, ImageNet normalisation), the three taps (patch embedding with the
 *   position embeddings interpolated 4x4 -> 3x3, blocks 1 and 3) and the final-norm CLS against
 *   transformers (max relative error <= 1e-4), the CLS at the model's own grid (no
 *   interpolation), the image gradient of sum(taps R) + sum(cls R_cls) through the model and the
 *   preprocessing (<= 1e-3), checkpointing on and off bit-identical;
 * - config refusals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/vit.h"
#include "tests/ref_nn.h"
#include "tests/test_util.h"

#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

static void test_meta(const char *yaml_rel, const char *list_rel, int32_t want_n, int64_t want_numel) {
    char path[512];
    Dinov2Config cfg;
    CHECK_OK(dinov2_config_load(&cfg, nn_src_path(path, sizeof path, yaml_rel), NULL, 0));
    ParamStore s;
    param_store_init(&s, DEVICE_META);
    Dinov2 m;
    CHECK_OK(dinov2_init(&m, &cfg, &s));
    CHECK_OK(param_store_alloc(&s, false));
    printf("%s: %d tensors, %lld parameters\n", yaml_rel, s.n, (long long)s.numel);
    CHECK(s.n == want_n && s.numel == want_numel, "%s: %d / %lld, want %d / %lld", yaml_rel, s.n, (long long)s.numel,
          want_n, (long long)want_numel);
    nn_check_listing(&s, list_rel, NULL, NULL);
    int blocks = nn_count_units(&s, "encoder.layer.");
    CHECK(blocks == cfg.num_hidden_layers, "%d block units", blocks);

    Arena arena;
    arena_init(&arena, 1 << 20, 0);
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&arena, &tape, DEVICE_META);
    int64_t xs[4] = {4, 512, 512, 3};
    Var *x = var_new(&c, DTYPE_F32, 4, xs);
    x->requires_grad = true;
    m.gradient_checkpointing = true;
    Dinov2Output out;
    bool want_cls = cfg.n_tap_blocks == 0;
    CHECK_OK(dinov2_forward(&c, &m, dinov2_preprocess(&c, &m, x), want_cls, &out));
    int32_t want_taps = cfg.n_tap_blocks + (cfg.tap_patch_embedding ? 1 : 0);
    bool ok = out.n_taps == want_taps;
    for (int32_t k = 0; k < out.n_taps; k++)
        ok = ok && out.taps[k]->v.ndim == 3 && out.taps[k]->v.shape[0] == 4 && out.taps[k]->v.shape[1] == 257 &&
             out.taps[k]->v.shape[2] == cfg.hidden_size;
    if (want_cls) ok = ok && out.cls && out.cls->v.shape[0] == 4 && out.cls->v.shape[1] == cfg.hidden_size;
    CHECK(ok, "meta forward: %d taps, shapes", out.n_taps);
    printf("  meta forward 512 px -> 224 px: %d taps of (4, 257, %lld)%s, %d tape nodes with checkpointing\n",
           out.n_taps, (long long)cfg.hidden_size, want_cls ? " and the CLS" : "", tape.n);
    tape_free(&tape);
    arena_free(&arena);
    dinov2_free(&m);
    param_store_free(&s);
}

typedef struct VitRun {
    float *taps[VIT_MAX_TAPS], *cls, *grad;
    int32_t n_taps;
} VitRun;

static float *copy_of(const void *src, int64_t n) {
    if (!src) return NULL;
    float *d = malloc((size_t)n * 4);
    memcpy(d, src, (size_t)n * 4);
    return d;
}

static VitRun vit_run(Dinov2 *m, const SafeTensors *io, double *ms) {
    VitRun r;
    memset(&r, 0, sizeof r);
    TestCtx tc;
    tctx_init(&tc);
    Var *image = nn_io_var(&tc.nt, io, "image", true);
    double t0 = nn_now();
    Var *pixels = dinov2_preprocess(&tc.c, m, image);
    Dinov2Output out;
    Status st = dinov2_forward(&tc.c, m, pixels, true, &out);
    CHECK_OK(st);
    if (st == ADDC_OK) {
        /* loss = sum_k sum(tap_k R_k) + sum(cls R_cls): seed each output with its R */
        Var *loss = NULL;
        char nm[32];
        for (int32_t k = 0; k <= out.n_taps; k++) {
            Var *y = k < out.n_taps ? out.taps[k] : out.cls;
            if (k < out.n_taps) snprintf(nm, sizeof nm, "R.%d", k);
            else snprintf(nm, sizeof nm, "R_cls");
            Var *term = op_sum(&tc.c, op_mul(&tc.c, y, nn_io_var(&tc.nt, io, nm, false)));
            loss = loss ? op_add(&tc.c, loss, term) : term;
        }
        CHECK_OK(tape_backward(&tc.c, loss));
        if (ms) *ms = 1e3 * (nn_now() - t0);
        r.n_taps = out.n_taps;
        for (int32_t k = 0; k < out.n_taps; k++) r.taps[k] = copy_of(out.taps[k]->v.data, tensor_numel(&out.taps[k]->v));
        r.cls = copy_of(out.cls->v.data, tensor_numel(&out.cls->v));
        r.grad = copy_of(image->g.data, tensor_numel(&image->v));
        Var *pix = dinov2_preprocess(&tc.nt, m, nn_io_var(&tc.nt, io, "image", false));
        nn_check_close("pixels", pix ? pix->v.data : NULL, pix ? tensor_numel(&pix->v) : 0, io, "pixels", FWD_TOL);
    }
    tctx_free(&tc);
    return r;
}

static void vit_run_free(VitRun *r) {
    for (int32_t k = 0; k < r->n_taps; k++) free(r->taps[k]);
    free(r->cls);
    free(r->grad);
}

static int64_t io_numel(const SafeTensors *io, const char *name) {
    const StTensor *t = safetensors_find(io, name);
    return t ? t->nbytes / 4 : 0;
}

static void test_tiny(void) {
    char path[512];
    Dinov2Config cfg;
    CHECK_OK(dinov2_config_load(&cfg, nn_src_path(path, sizeof path, "configs/models/tiny_dinov2.yaml"), NULL, 0));
    ParamStore s;
    param_store_init(&s, DEVICE_CPU);
    Dinov2 m;
    CHECK_OK(dinov2_init(&m, &cfg, &s));
    CHECK_OK(param_store_alloc(&s, false));
    printf("tiny_dinov2: %d tensors, %lld parameters, %d units\n", s.n, (long long)s.numel, s.n_units);
    WeightsReport rep;
    CHECK_OK(dinov2_load(&m, &s, nn_src_path(path, sizeof path, "tests/ref/fixtures/vit/tiny_dinov2/model.safetensors"),
                         NULL, &rep));
    CHECK(rep.n_loaded == s.n, "loaded %d of %d", rep.n_loaded, s.n);
    weights_report_free(&rep);

    SafeTensors io;
    CHECK_OK(safetensors_open(&io, nn_src_path(path, sizeof path, "tests/ref/fixtures/vit/tiny_dinov2_io.safetensors")));
    double ms = 0;
    VitRun plain = vit_run(&m, &io, &ms);
    char nm[32];
    double worst = 0;
    for (int32_t k = 0; k < plain.n_taps; k++) {
        snprintf(nm, sizeof nm, "tap.%d", k);
        double e = nn_check_close(nm, plain.taps[k], io_numel(&io, nm), &io, nm, FWD_TOL);
        if (e > worst) worst = e;
    }
    CHECK(plain.n_taps == 3, "%d taps", plain.n_taps);
    double ec = nn_check_close("cls", plain.cls, io_numel(&io, "cls"), &io, "cls", FWD_TOL);
    double eg = nn_check_close("grad.image", plain.grad, io_numel(&io, "image"), &io, "grad.image", GRAD_TOL);
    printf("  forward + backward %.1f ms: %d taps worst %.2e, cls %.2e; grad image %.2e\n", ms, plain.n_taps, worst, ec,
           eg);

    m.gradient_checkpointing = true;
    VitRun ck = vit_run(&m, &io, NULL);
    bool same = ck.n_taps == plain.n_taps && ck.grad && plain.grad &&
                memcmp(ck.grad, plain.grad, (size_t)io_numel(&io, "image") * 4) == 0 && ck.cls && plain.cls &&
                memcmp(ck.cls, plain.cls, (size_t)io_numel(&io, "cls") * 4) == 0;
    CHECK(same, "checkpointing changes the CLS output or the image gradient");
    printf("  checkpointing: %s\n", same ? "bit-identical" : "DIFFERS");
    vit_run_free(&plain);
    vit_run_free(&ck);

    TestCtx tc;
    tctx_init(&tc);
    Dinov2Output out;
    CHECK_OK(dinov2_forward(&tc.nt, &m, nn_io_var(&tc.nt, &io, "pixels_full", false), true, &out));
    double ef = nn_check_close("cls_full", out.cls ? out.cls->v.data : NULL, io_numel(&io, "cls_full"), &io, "cls_full",
                               FWD_TOL);
    printf("  at the learned 4x4 grid (no interpolation): cls %.2e\n", ef);
    int64_t bad[4] = {1, 40, 42, 3};
    Status st = dinov2_forward(&tc.nt, &m, var_new(&tc.nt, DTYPE_F32, 4, bad), false, &out);
    CHECK(st == ADDC_ERR_INVALID, "a 40 px input must be refused");
    addc_error_clear();
    tctx_free(&tc);
    safetensors_close(&io);
    dinov2_free(&m);
    param_store_free(&s);
}

static void test_config_refusals(void) {
    static const char *const bad[][2] = {
        {"use_swiglu_ffn: true\n", "use_swiglu_ffn"},
        {"tap_blocks: [5, 2]\n", "increasing"},
        {"num_attention_heads: 5\n", "do not divide"},
        {"hidden_act: relu\n", "hidden_act = relu"},
        {"image_mean: [0.5]\n", "image_mean"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Config c;
        config_init(&c);
        Dinov2Config cfg;
        Status st = config_load_string(&c, "bad.yaml", bad[i][0]);
        if (st == ADDC_OK) st = config_bind(&c, &dinov2_config_schema, &cfg);
        if (st == ADDC_OK) st = dinov2_config_check(&cfg);
        CHECK(st != ADDC_OK && strstr(addc_error_message(), bad[i][1]) != NULL, "config %zu: status %d, message '%s'", i,
              (int)st, addc_error_message());
        addc_error_clear();
        config_free(&c);
    }
}

int main(void) {
    test_meta("configs/models/dinov2_vits14.yaml", "tests/ref/fixtures/vit/dinov2_vits14_params.txt", 223, 22056576);
    test_meta("configs/models/dinov2_vitl14.yaml", "tests/ref/fixtures/vit/dinov2_vitl14_params.txt", 439, 304368640);
    test_tiny();
    test_config_refusals();
    return test_main_end("test_vit");
}
