/* tests/unit/test_unet: UNet2DConditionModel against diffusers (fixtures from
 * tests/ref/make_unet_fixture.py).
 *
 * - SDXL and SD 2.1 built on the meta device from configs/models/: exact tensor and parameter
 *   counts, every (name, shape) in diffusers' state-dict order, the Stability single-file name
 *   of every parameter (checked by the script against diffusers' converter), one unit per
 *   resnet and transformer block, and a meta forward at full size with the right shapes;
 * - the tiny SDXL-family and SD-2.1-family UNets: weights loaded from the files diffusers and
 *   safetensors wrote (F16 / F32 diffusers folders, BF16 / F16 single files), forward against
 *   diffusers (max relative error <= 1e-4), gradients of sum(out * R) for the inputs and a
 *   dozen parameters (<= 1e-3), activation checkpointing on and off giving identical
 *   gradients, saving back to a file with the bytes diffusers wrote;
 * - config refusals with clear messages. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nn/unet.h"
#include "tests/test_util.h"

#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static char *src_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", ADDC_SOURCE_DIR, rel);
    return buf;
}

/* ---- full-size presets on the meta device ---- */

static void check_listing(const UNet2D *m, ParamStore *s, const char *list_rel) {
    char path[512], line[1024];
    FILE *f = fopen(src_path(path, sizeof path, list_rel), "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return;
    int32_t i = 0, bad_name = 0, bad_shape = 0, bad_ldm = 0;
    long long want_n = -1, want_numel = -1;
    while (fgets(line, sizeof line, f)) {
        char name[512], shp[128], ldm[512];
        if (sscanf(line, "total %lld %lld", &want_n, &want_numel) == 2) break;
        if (sscanf(line, "%511s %127s %511s", name, shp, ldm) != 3) continue;
        Param *p = param_store_get(s, i++);
        if (!p) {
            bad_name++;
            continue;
        }
        int64_t sh[TENSOR_MAX_DIMS];
        int32_t nd = weights_file_shape(p, sh);
        char mine[128];
        int o = 0;
        for (int32_t d = 0; d < nd; d++) o += snprintf(mine + o, sizeof mine - (size_t)o, "%s%lld", d ? "," : "", (long long)sh[d]);
        char lk[WEIGHTS_KEY_MAX] = "";
        bool ok_ldm = unet2d_ldm_key(&m->cfg, p->name, lk);
        if (strcmp(name, p->name) != 0 && bad_name++ < 5) fprintf(stderr, "  param %d: %s, diffusers %s\n", i - 1, p->name, name);
        if (strcmp(shp, mine) != 0 && bad_shape++ < 5) fprintf(stderr, "  %s: shape %s, diffusers %s\n", name, mine, shp);
        if ((!ok_ldm || strcmp(lk, ldm) != 0) && bad_ldm++ < 5) fprintf(stderr, "  %s: single-file %s, expected %s\n", name, lk, ldm);
    }
    fclose(f);
    CHECK(i == s->n && want_n == s->n && want_numel == s->numel, "%s lists %lld tensors / %lld parameters, addc %d / %lld",
          list_rel, want_n, want_numel, s->n, (long long)s->numel);
    CHECK(bad_name == 0 && bad_shape == 0 && bad_ldm == 0, "%s: %d names, %d shapes, %d single-file names differ", list_rel,
          bad_name, bad_shape, bad_ldm);
}

static void check_units(ParamStore *s, int want_resnets, int want_tblocks) {
    int resnets = 0, tblocks = 0, bad = 0;
    for (int32_t u = 0; u < s->n_units; u++) {
        const ParamUnit *pu = &s->units[u];
        const char *nm = pu->name;
        if (strstr(nm, ".resnets.") && !strchr(strstr(nm, ".resnets.") + 9, '.')) resnets++;
        if (strstr(nm, ".transformer_blocks.") && !strchr(strstr(nm, ".transformer_blocks.") + 20, '.')) tblocks++;
        size_t l = strlen(nm);
        for (int32_t k = pu->first; k < pu->first + pu->count; k++) {
            const char *pn = param_store_get(s, k)->name;
            if (strncmp(pn, nm, l) != 0 || pn[l] != '.') bad++;
        }
        if (pu->count == 0) bad++;
    }
    CHECK(resnets == want_resnets && tblocks == want_tblocks && bad == 0,
          "units: %d resnet, %d transformer-block units (want %d, %d), %d parameters outside their unit's name", resnets,
          tblocks, want_resnets, want_tblocks, bad);
    printf("  %d units (%d resnet blocks, %d transformer blocks)\n", s->n_units, resnets, tblocks);
}

static void test_full(const char *yaml_rel, const char *list_rel, int32_t want_n, int64_t want_numel, int want_resnets,
                      int want_tblocks, int64_t hw) {
    char path[512];
    UNet2DConfig cfg;
    CHECK_OK(unet2d_config_load(&cfg, src_path(path, sizeof path, yaml_rel), NULL, 0));
    ParamStore s;
    param_store_init(&s, DEVICE_META);
    UNet2D m;
    double t0 = now();
    CHECK_OK(unet2d_init(&m, &cfg, &s));
    CHECK_OK(param_store_alloc(&s, true));
    printf("%s: %d tensors, %lld parameters (built on meta in %.0f ms)\n", yaml_rel, s.n, (long long)s.numel,
           1e3 * (now() - t0));
    CHECK(s.n == want_n && s.numel == want_numel, "%s: %d tensors / %lld parameters, want %d / %lld", yaml_rel, s.n,
          (long long)s.numel, want_n, (long long)want_numel);
    check_listing(&m, &s, list_rel);
    check_units(&s, want_resnets, want_tblocks);

    /* the whole forward on meta: shapes only */
    Arena arena;
    arena_init(&arena, 1 << 20, 0);
    Tape tape;
    tape_init(&tape);
    Ctx c = ctx_make(&arena, &tape, DEVICE_META);
    int64_t B = 2, xs[4] = {B, hw, hw, cfg.in_channels}, ts[1] = {B}, es[3] = {B, 77, cfg.cross_attention_dim};
    int64_t txs[2] = {B, cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim}, ids[2] = {B, 6};
    Var *x = var_new(&c, DTYPE_F32, 4, xs), *t = var_new(&c, DTYPE_F32, 1, ts), *e = var_new(&c, DTYPE_F32, 3, es);
    UNetAddedCond add = {var_new(&c, DTYPE_F32, 2, txs), var_new(&c, DTYPE_F32, 2, ids)};
    m.gradient_checkpointing = true;
    Var *y = unet2d_forward(&c, &m, x, t, e, cfg.addition_embed_type[0] ? &add : NULL);
    CHECK_VAR(y);
    if (y)
        CHECK(y->v.ndim == 4 && y->v.shape[0] == B && y->v.shape[1] == hw && y->v.shape[2] == hw &&
                  y->v.shape[3] == cfg.out_channels && y->v.data == NULL,
              "meta forward output shape");
    printf("  meta forward at %lldx%lld: %d tape nodes with checkpointing\n", (long long)hw, (long long)hw, tape.n);
    tape_free(&tape);
    arena_free(&arena);
    unet2d_free(&m);
    param_store_free(&s);
}

/* ---- tiny models against diffusers ---- */

static Var *io_var(TestCtx *tc, const SafeTensors *io, const char *name, bool requires_grad) {
    const StTensor *t = safetensors_find(io, name);
    CHECK(t != NULL, "fixture tensor %s missing", name);
    if (!t) return NULL;
    Var *v = var_new(&tc->nt, DTYPE_F32, t->ndim, t->shape);
    CHECK_OK(safetensors_read_f32(t, v->v.data, tensor_numel(&v->v)));
    v->requires_grad = requires_grad;
    return v;
}

static float *io_f32(const SafeTensors *io, const char *name, int64_t n) {
    const StTensor *t = safetensors_find(io, name);
    if (!t || t->nbytes != n * 4) return NULL;
    float *d = malloc((size_t)n * sizeof(float));
    safetensors_read_f32(t, d, n);
    return d;
}

typedef struct TinyRun {
    float *out, *g_sample, *g_ehs, *g_text, *g_params; /* malloc'd copies */
    double fwd_s, bwd_s;
} TinyRun;

static void tiny_run_free(TinyRun *r) {
    free(r->out);
    free(r->g_sample);
    free(r->g_ehs);
    free(r->g_text);
    free(r->g_params);
}

static float *copy_f32(const void *src, int64_t n) {
    if (!src) return NULL;
    float *d = malloc((size_t)n * sizeof(float));
    memcpy(d, src, (size_t)n * sizeof(float));
    return d;
}

/* forward + backward of sum(out * R) with the model's checkpointing flag */
static void tiny_run(UNet2D *m, ParamStore *s, const SafeTensors *io, TinyRun *r) {
    TestCtx tc;
    tctx_init(&tc);
    memset(r, 0, sizeof *r);
    param_store_zero_grad(s);
    Var *x = io_var(&tc, io, "sample", true), *t = io_var(&tc, io, "timesteps", false);
    Var *e = io_var(&tc, io, "encoder_hidden_states", true);
    UNetAddedCond add = {NULL, NULL};
    bool tt = m->has_add_embedding;
    if (tt) add = (UNetAddedCond){io_var(&tc, io, "text_embeds", true), io_var(&tc, io, "time_ids", false)};
    double t0 = now();
    Var *y = unet2d_forward(&tc.c, m, x, t, e, tt ? &add : NULL);
    r->fwd_s = now() - t0;
    CHECK_VAR(y);
    if (!y) {
        tctx_free(&tc);
        return;
    }
    int64_t n = tensor_numel(&y->v);
    Var *R = io_var(&tc, io, "R", false);
    t0 = now();
    CHECK_OK(tape_backward_seed(&tc.c, y, &R->v));
    r->bwd_s = now() - t0;
    r->out = copy_f32(y->v.data, n);
    r->g_sample = copy_f32(x->g.data, tensor_numel(&x->v));
    r->g_ehs = copy_f32(e->g.data, tensor_numel(&e->v));
    if (tt) r->g_text = copy_f32(add.text_embeds->g.data, tensor_numel(&add.text_embeds->v));
    r->g_params = copy_f32(s->grad, s->numel);
    tctx_free(&tc);
}

static double cmp_io(const char *label, const float *got, const SafeTensors *io, const char *name, double tol) {
    const StTensor *t = safetensors_find(io, name);
    int64_t n = t ? t->nbytes / 4 : 0;
    float *want = io_f32(io, name, n);
    CHECK(got && want, "%s: nothing to compare", label);
    if (!got || !want) {
        free(want);
        return INFINITY;
    }
    double e = compare_f32(label, got, want, n, tol, 1e-6);
    CHECK(e <= tol, "%s: max relative error %.3g > %.1g", label, e, tol);
    free(want);
    return e;
}

/* every tensor of Python's file is in ours with the same dtype, shape and bytes */
static void compare_files(const char *ours_path, const char *theirs_path) {
    SafeTensors a, b;
    CHECK_OK(safetensors_open(&a, ours_path));
    CHECK_OK(safetensors_open(&b, theirs_path));
    int bad = 0;
    for (int32_t i = 0; i < b.n; i++) {
        const StTensor *tb = &b.t[i], *ta = safetensors_find(&a, tb->name);
        bool same = ta && ta->dtype == tb->dtype && ta->ndim == tb->ndim && ta->nbytes == tb->nbytes &&
                    memcmp(ta->shape, tb->shape, sizeof(int64_t) * (size_t)ta->ndim) == 0 &&
                    memcmp(ta->data, tb->data, (size_t)ta->nbytes) == 0;
        if (!same && bad++ < 5) fprintf(stderr, "  saved tensor %s differs from diffusers'\n", tb->name);
    }
    CHECK(bad == 0 && a.n == b.n, "saved file: %d of %d tensors differ from diffusers' (%d saved)", bad, b.n, a.n);
    safetensors_close(&a);
    safetensors_close(&b);
}

static void test_tiny(const char *tag, const char *yaml_rel, const char *const *grad_params, DType py_dtype) {
    char path[512], rel[256], tmp[256];
    printf("%s (%s):\n", tag, yaml_rel);
    UNet2DConfig cfg;
    CHECK_OK(unet2d_config_load(&cfg, src_path(path, sizeof path, yaml_rel), NULL, 0));
    ParamStore s;
    param_store_init(&s, DEVICE_CPU);
    UNet2D m;
    CHECK_OK(unet2d_init(&m, &cfg, &s));
    CHECK_OK(param_store_alloc(&s, true));
    printf("  %d tensors, %lld parameters, %d units\n", s.n, (long long)s.numel, s.n_units);

    /* the diffusers folder's file, as save_pretrained wrote it */
    snprintf(rel, sizeof rel, "tests/ref/fixtures/unet/%s/diffusion_pytorch_model.safetensors", tag);
    WeightsReport rep;
    CHECK_OK(unet2d_load(&m, &s, src_path(path, sizeof path, rel), NULL, &rep));
    CHECK(rep.n_loaded == s.n && rep.n_missing == 0 && rep.n_unexpected == 0, "diffusers load: %d of %d", rep.n_loaded, s.n);
    weights_report_free(&rep);

    /* the single file holds the same weights (and keys of other networks, ignored) */
    ParamStore s2;
    param_store_init(&s2, DEVICE_CPU);
    UNet2D m2;
    CHECK_OK(unet2d_init(&m2, &cfg, &s2));
    CHECK_OK(param_store_alloc(&s2, false));
    snprintf(rel, sizeof rel, "tests/ref/fixtures/unet/%s_ldm.safetensors", tag);
    CHECK_OK(unet2d_load(&m2, &s2, src_path(path, sizeof path, rel), NULL, &rep));
    CHECK(rep.n_loaded == s.n && rep.n_ignored == 2, "single-file load: %d loaded, %d ignored", rep.n_loaded, rep.n_ignored);
    CHECK(memcmp(s.data, s2.data, (size_t)s.numel * sizeof(float)) == 0,
          "the single-file weights differ from the diffusers weights");
    weights_report_free(&rep);
    /* a diffusers file is not a single file of the other layout: everything reported */
    WeightsKeyMap ldm = unet2d_key_map_ldm(&m2);
    snprintf(rel, sizeof rel, "tests/ref/fixtures/unet/%s/diffusion_pytorch_model.safetensors", tag);
    Status st = weights_load_file(&s2, src_path(path, sizeof path, rel), &ldm, NULL, &rep);
    CHECK(st == ADDC_ERR_FORMAT && rep.n_missing == s.n && rep.n_ignored == s.n, "wrong layout: %d missing, %d ignored",
          rep.n_missing, rep.n_ignored);
    printf("  wrong layout refused: %.160s...\n", addc_error_message());
    addc_error_clear();
    weights_report_free(&rep);
    unet2d_free(&m2);
    param_store_free(&s2);

    SafeTensors io;
    snprintf(rel, sizeof rel, "tests/ref/fixtures/unet/%s_io.safetensors", tag);
    CHECK_OK(safetensors_open(&io, src_path(path, sizeof path, rel)));

    TinyRun plain, ck;
    m.gradient_checkpointing = false;
    tiny_run(&m, &s, &io, &plain);
    double ef = cmp_io("out", plain.out, &io, "out", FWD_TOL);
    double eg = cmp_io("grad.sample", plain.g_sample, &io, "grad.sample", GRAD_TOL);
    double ee = cmp_io("grad.encoder_hidden_states", plain.g_ehs, &io, "grad.encoder_hidden_states", GRAD_TOL);
    printf("  forward max rel err %.2e; grad sample %.2e, encoder_hidden_states %.2e", ef, eg, ee);
    if (m.has_add_embedding) printf(", text_embeds %.2e", cmp_io("grad.text_embeds", plain.g_text, &io, "grad.text_embeds", GRAD_TOL));
    printf("\n");
    double worst = 0;
    int k = 0;
    for (; grad_params[k]; k++) {
        Param *p = param_store_find(&s, grad_params[k]);
        CHECK(p != NULL, "no parameter %s", grad_params[k]);
        if (!p || !plain.g_params) continue;
        int64_t n = tensor_numel(&p->var.v);
        float *f = malloc((size_t)n * sizeof(float));
        weights_layout_to_file(p, plain.g_params + p->offset, f);
        char name[PARAM_NAME_MAX + 8];
        snprintf(name, sizeof name, "grad.%s", p->name);
        double e = cmp_io(name, f, &io, name, GRAD_TOL);
        if (e > worst) worst = e;
        free(f);
    }
    printf("  %d parameter gradients: worst max rel err %.2e\n", k, worst);

    m.gradient_checkpointing = true;
    tiny_run(&m, &s, &io, &ck);
    int64_t nout = safetensors_find(&io, "out")->nbytes / 4, nx = safetensors_find(&io, "sample")->nbytes / 4;
    bool same_out = plain.out && ck.out && memcmp(plain.out, ck.out, (size_t)nout * 4) == 0;
    bool same_g = plain.g_params && ck.g_params && memcmp(plain.g_params, ck.g_params, (size_t)s.numel * 4) == 0 &&
                  plain.g_sample && ck.g_sample && memcmp(plain.g_sample, ck.g_sample, (size_t)nx * 4) == 0 &&
                  plain.g_ehs && ck.g_ehs && memcmp(plain.g_ehs, ck.g_ehs, (size_t)(safetensors_find(&io, "encoder_hidden_states")->nbytes)) == 0;
    double dmax = 0;
    for (int64_t i = 0; plain.g_params && ck.g_params && i < s.numel; i++)
        dmax = fmax(dmax, fabs((double)plain.g_params[i] - ck.g_params[i]));
    CHECK(same_out && same_g, "checkpointing changed the result: outputs %s, gradients max |diff| %.3g",
          same_out ? "equal" : "differ", dmax);
    printf("  checkpointing on/off: outputs and all %lld parameter gradients bitwise %s\n", (long long)s.numel,
           same_out && same_g ? "identical" : "DIFFERENT");
    printf("  forward %.1f ms, backward %.1f ms (checkpointed: %.1f, %.1f)\n", 1e3 * plain.fwd_s, 1e3 * plain.bwd_s,
           1e3 * ck.fwd_s, 1e3 * ck.bwd_s);
    tiny_run_free(&plain);
    tiny_run_free(&ck);
    safetensors_close(&io);

    /* saving gives the file diffusers wrote, byte for byte */
    snprintf(tmp, sizeof tmp, "/tmp/addc_unet_%s_%ld.safetensors", tag, (long)getpid());
    CHECK_OK(weights_save(&s, tmp, py_dtype, NULL));
    snprintf(rel, sizeof rel, "tests/ref/fixtures/unet/%s/diffusion_pytorch_model.safetensors", tag);
    compare_files(tmp, src_path(path, sizeof path, rel));
    unlink(tmp);
    unet2d_free(&m);
    param_store_free(&s);
}

/* ---- config refusals ---- */

static void test_config_errors(void) {
    char path[512];
    src_path(path, sizeof path, "configs/models/tiny_unet.yaml");
    static const struct {
        const char *override, *phrase;
    } cases[] = {
        {"down_block_types=[DownBlock2D]", "down_block_types 1"},
        {"addition_embed_type=image", "addition_embed_type = image is not supported"},
        {"use_linear_projection=false", "use_linear_projection = false"},
        {"attention_head_dim=[3, 2]", "3 heads do not divide the 8 channels"},
        {"norm_num_groups=3", "not a positive multiple of norm_num_groups"},
        {"up_block_types=[UpBlock2D, AttnUpBlock2D]", "up_block_types = AttnUpBlock2D"},
        {"class_embed_type=timestep", "class_embed_type = timestep"},
        {"transformer_layers_per_block=[1, 2, 3]", "one value or one per level"},
        {"projection_class_embeddings_input_dim=24", "text_time needs"},
        {"block_out_chanels=[8, 16]", "block_out_channels"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        UNet2DConfig cfg;
        addc_error_clear();
        const char *ov = cases[i].override;
        Status s = unet2d_config_load(&cfg, path, &ov, 1);
        CHECK(s != ADDC_OK && strstr(addc_error_message(), cases[i].phrase), "%s: status %d, '%s'", ov, (int)s,
              addc_error_message());
        printf("  %-44s -> %s\n", ov, addc_error_message());
    }
    addc_error_clear();
}

int main(void) {
    test_full("configs/models/sdxl_unet.yaml", "tests/ref/fixtures/unet/sdxl_params.txt", 1680, 2567463684LL, 17, 70, 128);
    test_full("configs/models/sd21_unet.yaml", "tests/ref/fixtures/unet/sd21_params.txt", 686, 865910724LL, 22, 16, 96);
    static const char *const xl_grads[] = {
        "conv_in.weight", "time_embedding.linear_1.weight", "add_embedding.linear_2.weight",
        "down_blocks.0.resnets.1.conv1.weight", "down_blocks.0.downsamplers.0.conv.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
        "down_blocks.1.attentions.1.transformer_blocks.1.ff.net.0.proj.weight",
        "down_blocks.1.resnets.0.conv_shortcut.weight", "mid_block.attentions.0.transformer_blocks.1.attn2.to_k.weight",
        "mid_block.resnets.1.norm2.weight", "up_blocks.0.attentions.2.proj_out.weight",
        "up_blocks.0.upsamplers.0.conv.weight", "up_blocks.1.resnets.2.conv_shortcut.weight", "conv_norm_out.weight",
        "conv_out.bias", NULL};
    static const char *const sd21_grads[] = {
        "conv_in.weight", "time_embedding.linear_2.bias", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight",
        "down_blocks.0.attentions.0.norm.weight", "down_blocks.1.resnets.0.conv2.weight",
        "mid_block.attentions.0.transformer_blocks.0.norm3.bias", "up_blocks.0.resnets.1.time_emb_proj.weight",
        "up_blocks.1.attentions.1.proj_in.weight", "conv_out.weight", NULL};
    test_tiny("tiny_xl", "configs/models/tiny_unet.yaml", xl_grads, DTYPE_F16);
    test_tiny("tiny_sd21", "configs/models/tiny_sd21_unet.yaml", sd21_grads, DTYPE_F32);
    printf("config refusals:\n");
    test_config_errors();
    return test_main_end("unet");
}
