/* tests/unit/test_clip: CLIP text transformers against transformers (fixtures from
 * tests/ref/make_clip_fixture.py).
 *
 * - CLIP-L, OpenCLIP bigG (with projection) and the ViT-g-14 text tower built on the meta device
 *   from configs/models/: 196 / 123,060,480, 517 / 694,659,840 and 389 / 354,032,640
 *   tensors / parameters, every (name, shape) in transformers' order, and where each lies in
 *   SDXL's single file (CLIP-L) or in the open_clip layout (bigG under
 *   "conditioner.embedders.1.model.", ViT-g bare): fused in_proj rows and the transposed
 *   text_projection, checked by the script with diffusers' converter; meta forwards at 77 tokens;
 * - the tiny CLIP-L-like and bigG-like models loaded from transformers' save_pretrained files
 *   (F16; CLIP-L without the "text_model." prefix transformers 5 writes) and from one
 *   SDXL-style single file holding both (BF16; CLIP-L with its position_ids buffer, bigG in
 *   the open_clip layout with logit_scale), told apart by the embedding width, giving identical
 *   values; penultimate, last hidden states, pooled (EOT) output and text_embeds against
 *   transformers for a caption padded with the end-of-text id, one padded with 0 and a full 77
 *   (max relative error <= 1e-4); checkpointing does not change the outputs;
 * - refusals: a file without this model's embedding, a wrong prefix, config errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/clip.h"
#include "tests/ref_nn.h"
#include "tests/test_util.h"

#define FWD_TOL 1e-4

typedef struct AltCtx {
    const ClipText *m;
    ClipLayout layout;
    const char *prefix;
} AltCtx;

static bool alt_name(const void *user, const char *name, char *out) {
    const AltCtx *a = user;
    return clip_text_file_key(a->m, a->layout, a->prefix, name, out, WEIGHTS_KEY_MAX);
}

static void test_meta(const char *yaml_rel, const char *list_rel, int32_t want_n, int64_t want_numel, ClipLayout layout,
                      const char *prefix) {
    char path[512];
    ClipTextConfig cfg;
    CHECK_OK(clip_text_config_load(&cfg, nn_src_path(path, sizeof path, yaml_rel), NULL, 0));
    ParamStore s;
    param_store_init(&s, DEVICE_META);
    ClipText m;
    CHECK_OK(clip_text_init(&m, &cfg, &s));
    CHECK_OK(param_store_alloc(&s, false));
    printf("%s: %d tensors, %lld parameters\n", yaml_rel, s.n, (long long)s.numel);
    CHECK(s.n == want_n && s.numel == want_numel, "%s: %d / %lld, want %d / %lld", yaml_rel, s.n, (long long)s.numel,
          want_n, (long long)want_numel);
    AltCtx a = {&m, layout, prefix};
    nn_check_listing(&s, list_rel, alt_name, &a);
    int layers = nn_count_units(&s, "text_model.encoder.layers.");
    CHECK(layers == cfg.num_hidden_layers, "%d layer units", layers);

    Arena arena;
    arena_init(&arena, 1 << 20, 0);
    Ctx c = ctx_make(&arena, NULL, DEVICE_META);
    int64_t is[2] = {2, 77};
    ClipTextOutput out;
    CHECK_OK(clip_text_forward(&c, &m, var_new(&c, DTYPE_I32, 2, is), &out));
    bool ok = out.penultimate && out.penultimate->v.shape[2] == cfg.hidden_size && out.pooled &&
              out.pooled->v.shape[0] == 2 && out.pooled->v.shape[1] == cfg.hidden_size &&
              (out.text_embeds != NULL) == (m.text_projection.weight != NULL);
    if (out.text_embeds) ok = ok && out.text_embeds->v.shape[1] == cfg.projection_dim;
    CHECK(ok, "meta forward shapes");
    arena_free(&arena);
    clip_text_free(&m);
    param_store_free(&s);
}

typedef struct Tiny {
    ClipTextConfig cfg;
    ParamStore s;
    ClipText m;
} Tiny;

static void tiny_build(Tiny *t, const char *yaml_rel) {
    char path[512];
    CHECK_OK(clip_text_config_load(&t->cfg, nn_src_path(path, sizeof path, yaml_rel), NULL, 0));
    param_store_init(&t->s, DEVICE_CPU);
    CHECK_OK(clip_text_init(&t->m, &t->cfg, &t->s));
    CHECK_OK(param_store_alloc(&t->s, false));
}

static void tiny_free(Tiny *t) {
    clip_text_free(&t->m);
    param_store_free(&t->s);
}

static void check_outputs(Tiny *t, const char *tag, const SafeTensors *io, bool ckpt) {
    TestCtx tc;
    tctx_init(&tc);
    t->m.gradient_checkpointing = ckpt;
    Var *ids = nn_io_ids(&tc.nt, io, "ids");
    ClipTextOutput out;
    double t0 = nn_now();
    CHECK_OK(clip_text_forward(&tc.nt, &t->m, ids, &out));
    double ms = 1e3 * (nn_now() - t0);
    char nm[64];
    const char *parts[4] = {"penultimate", "last", "pooled", "text_embeds"};
    Var *vals[4] = {out.penultimate, out.last, out.pooled, out.text_embeds};
    printf("  %s (%.1f ms%s):", tag, ms, ckpt ? ", checkpointing" : "");
    for (int i = 0; i < 4; i++) {
        snprintf(nm, sizeof nm, "%s.%s", tag, parts[i]);
        if (!safetensors_find(io, nm)) {
            CHECK(vals[i] == NULL, "%s: addc computed an output transformers does not have", nm);
            continue;
        }
        double e = nn_check_close(nm, vals[i] ? vals[i]->v.data : NULL, vals[i] ? tensor_numel(&vals[i]->v) : 0, io, nm,
                                  FWD_TOL);
        printf(" %s %.2e", parts[i], e);
    }
    printf("\n");
    tctx_free(&tc);
}

static void test_tiny(void) {
    char path[512], path2[512];
    const char *single_rel = "tests/ref/fixtures/clip/tiny_sdxl_te.safetensors";
    SafeTensors io;
    CHECK_OK(safetensors_open(&io, nn_src_path(path, sizeof path, "tests/ref/fixtures/clip/tiny_clip_io.safetensors")));
    static const char *const models[2][3] = {
        {"clip_l", "configs/models/tiny_clip_l_text.yaml", "tests/ref/fixtures/clip/tiny_clip_l/model.safetensors"},
        {"bigg", "configs/models/tiny_openclip_text.yaml", "tests/ref/fixtures/clip/tiny_bigg/model.safetensors"},
    };
    for (int k = 0; k < 2; k++) {
        Tiny a, b;
        tiny_build(&a, models[k][1]);
        tiny_build(&b, models[k][1]);
        printf("tiny %s: %d tensors, %lld parameters\n", models[k][0], a.s.n, (long long)a.s.numel);
        WeightsReport rep;
        CHECK_OK(clip_text_load(&a.m, &a.s, nn_src_path(path, sizeof path, models[k][2]), NULL, NULL, &rep));
        CHECK(rep.n_loaded == a.s.n && rep.n_missing == 0, "transformers file: %d of %d loaded", rep.n_loaded, a.s.n);
        weights_report_free(&rep);

        SafeTensors st;
        CHECK_OK(safetensors_open(&st, nn_src_path(path2, sizeof path2, single_rel)));
        ClipLayout layout;
        char prefix[128] = "";
        CHECK_OK(clip_text_detect(&b.m, &st, &layout, prefix, sizeof prefix));
        const char *want_prefix = k == 0 ? "conditioner.embedders.0.transformer." : "conditioner.embedders.1.model.";
        CHECK(strcmp(prefix, want_prefix) == 0 && layout == (k == 0 ? CLIP_LAYOUT_TRANSFORMERS : CLIP_LAYOUT_OPEN_CLIP),
              "detected prefix '%s' layout %d", prefix, (int)layout);
        safetensors_close(&st);
        CHECK_OK(clip_text_load(&b.m, &b.s, path2, NULL, NULL, &rep));
        CHECK(rep.n_loaded == b.s.n && rep.n_missing == 0 && rep.n_ignored > 0, "single file: %d of %d loaded, %d ignored",
              rep.n_loaded, b.s.n, rep.n_ignored);
        printf("  single file (%s layout under '%s'): %d loaded, %d other keys ignored\n",
               layout == CLIP_LAYOUT_OPEN_CLIP ? "open_clip" : "transformers", prefix, rep.n_loaded, rep.n_ignored);
        weights_report_free(&rep);
        CHECK(memcmp(a.s.data, b.s.data, (size_t)a.s.numel * 4) == 0,
              "%s: the single-file weights differ from transformers' file", models[k][0]);

        check_outputs(&a, models[k][0], &io, false);
        check_outputs(&b, models[k][0], &io, true);

        /* refusals: a prefix with nothing of this model, leaving the values untouched */
        float keep = a.s.data[7];
        Status st2 = clip_text_load(&a.m, &a.s, path2, "conditioner.embedders.7.", NULL, &rep);
        CHECK(st2 == ADDC_ERR_FORMAT && rep.n_missing == a.s.n && a.s.data[7] == keep, "wrong prefix: status %d, %d missing",
              (int)st2, rep.n_missing);
        if (k == 0) printf("  wrong prefix refused: %.140s...\n", addc_error_message());
        addc_error_clear();
        weights_report_free(&rep);
        tiny_free(&a);
        tiny_free(&b);
    }
    /* bigG's weights are not CLIP-L's: no embedding of that width in the CLIP-L file */
    Tiny g;
    tiny_build(&g, "configs/models/tiny_openclip_text.yaml");
    Status st = clip_text_load(&g.m, &g.s, nn_src_path(path, sizeof path, models[0][2]), NULL, NULL, NULL);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "token embedding"), "wrong file: '%s'",
          addc_error_message());
    printf("wrong model refused: %.150s\n", addc_error_message());
    addc_error_clear();
    tiny_free(&g);
    safetensors_close(&io);
}

static void test_config_refusals(void) {
    static const char *const bad[][2] = {
        {"architectures: [CLIPVisionModel]\n", "architectures"},
        {"hidden_act: relu\n", "hidden_act = relu"},
        {"num_attention_heads: 7\n", "do not divide"},
        {"dropout: 0.1\n", "dropout"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Config c;
        config_init(&c);
        ClipTextConfig cfg;
        Status st = config_load_string(&c, "bad.yaml", bad[i][0]);
        if (st == ADDC_OK) st = config_bind(&c, &clip_text_config_schema, &cfg);
        if (st == ADDC_OK) st = clip_text_config_check(&cfg);
        CHECK(st != ADDC_OK && strstr(addc_error_message(), bad[i][1]) != NULL, "config %zu: status %d, message '%s'", i,
              (int)st, addc_error_message());
        addc_error_clear();
        config_free(&c);
    }
}

int main(void) {
    test_meta("configs/models/clip_l_text.yaml", "tests/ref/fixtures/clip/clip_l_text_params.txt", 196, 123060480,
              CLIP_LAYOUT_TRANSFORMERS, "conditioner.embedders.0.transformer.");
    test_meta("configs/models/openclip_bigg_text.yaml", "tests/ref/fixtures/clip/openclip_bigg_text_params.txt", 517,
              694659840, CLIP_LAYOUT_OPEN_CLIP, "conditioner.embedders.1.model.");
    test_meta("configs/models/vitg14_text.yaml", "tests/ref/fixtures/clip/vitg14_text_params.txt", 389, 354032640,
              CLIP_LAYOUT_OPEN_CLIP, "");
    test_tiny();
    test_config_refusals();
    return test_main_end("test_clip");
}
