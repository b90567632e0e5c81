/* tests/unit/test_inspect: `addc inspect` and the work behind it (nn/model.c).
 *
 * - every YAML in configs/models/ builds on the meta device through model_build and probes
 *   through model_probe (the command's own path); the exact parameter and tensor counts of every
 *   full-size network (ADD.md, the YAMLs' headers) and of the tiny UNets;
 * - a meta build allocates no weight memory: no buffer, no parameter data, and the process's
 *   resident memory grows by far less than SDXL's 10 GB while it is built;
 * - forward FLOPs within 2% of ADD.md (SDXL UNet at 64^2 and 128^2 latents, SD 2.1 at 64^2, SDXL
 *   VAE decoder to 512 px), exactly linear in the batch, and DINOv2 ViT-S/14 against a count
 *   written out by hand from its shapes;
 * - the activation accounting against a real CPU run of the tiny UNet: the arena bytes a
 *   forward leaves live with checkpointing off and on (no tape: outputs only), and the most
 *   bytes a checkpointed region has live;
 * - the FSDP plan's arithmetic, kind detection and its refusals;
 * - the addc binary next to this test: `inspect --help`, one inspect with --params, a usage
 *   error. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/model.h"
#include "tests/test_util.h"

static char *src_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", ADDC_SOURCE_DIR, rel);
    return buf;
}

typedef struct Want {
    const char *file;
    int32_t tensors;
    int64_t numel;
} Want;

static const Want wants[] = {
    {"sdxl_unet.yaml", 1680, 2567463684LL},     {"sd21_unet.yaml", 686, 865910724LL},
    {"sdxl_vae.yaml", 248, 83653863LL},         {"clip_l_text.yaml", 196, 123060480LL},
    {"openclip_bigg_text.yaml", 517, 694659840LL}, {"vitg14_text.yaml", 389, 354032640LL},
    {"dinov2_vits14.yaml", 223, 22056576LL},    {"dinov2_vitl14.yaml", 439, 304368640LL},
    {"disc_heads.yaml", 60, 8163200LL},         {"tiny_unet.yaml", 428, 128180LL},
    {"tiny_sd21_unet.yaml", 208, 51684LL},
};

static int64_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long long pages = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lld %lld", &pages, &res) != 2) res = 0;
        fclose(f);
    }
    return (int64_t)res * sysconf(_SC_PAGESIZE);
}

static bool store_has_no_data(const ParamStore *s) {
    if (s->data || s->grad) return false;
    for (int32_t i = 0; i < s->n; i++) {
        const Param *p = param_store_get((ParamStore *)s, i);
        if (p->var.v.data || p->var.g.data || p->var.v.device != DEVICE_META) return false;
    }
    return true;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* every model YAML: builds, probes, counts */
static void test_all_configs(void) {
    char dir[512], path[1024];
    DIR *d = opendir(src_path(dir, sizeof dir, "configs/models"));
    CHECK(d != NULL, "cannot open %s", dir);
    if (!d) return;
    char *files[128];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < 128;) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".yaml")) files[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(files, (size_t)n, sizeof files[0], cmp_str);
    int matched = 0;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        int64_t rss0 = rss_bytes();
        Model m;
        Status st = model_build(&m, path, NULL, 0, DEVICE_META, true);
        int64_t grown = rss_bytes() - rss0;
        CHECK_OK(st);
        ModelPass p[MODEL_MAX_PASSES];
        int32_t np = 0;
        ModelInput in = {0};
        if (st == ADDC_OK) CHECK_OK(model_probe(&m, &in, p, &np));
        CHECK(store_has_no_data(&m.params) && store_has_no_data(&m.state), "%s: a meta build holds data", files[i]);
        printf("%-26s %-28s %11lld params %5d tensors; %s %.4g FLOPs, activations %.1f MiB (checkpointed %.1f + %.1f)\n",
               files[i], m.class_name, (long long)m.params.numel, m.params.n, np ? p[np - 1].name : "-",
               np ? p[np - 1].flops : 0.0, np ? p[np - 1].act_bytes / 1048576.0 : 0.0,
               np ? p[np - 1].kept_bytes / 1048576.0 : 0.0, np ? p[np - 1].block_bytes / 1048576.0 : 0.0);
        for (int32_t k = 0; k < np; k++) {
            CHECK(p[k].flops > 0 && p[k].act_bytes > 0, "%s %s: nothing counted", files[i], p[k].name);
            if (p[k].n_regions)
                CHECK(p[k].kept_bytes > 0 && p[k].block_bytes > 0 && p[k].kept_bytes + p[k].block_bytes < p[k].act_bytes,
                      "%s %s: checkpointing keeps %lld + %lld of %lld bytes", files[i], p[k].name,
                      (long long)p[k].kept_bytes, (long long)p[k].block_bytes, (long long)p[k].act_bytes);
        }
        for (size_t w = 0; w < sizeof wants / sizeof wants[0]; w++) {
            if (strcmp(wants[w].file, files[i])) continue;
            matched++;
            CHECK(m.params.n == wants[w].tensors && m.params.numel == wants[w].numel,
                  "%s: %d tensors / %lld parameters, want %d / %lld", files[i], m.params.n, (long long)m.params.numel,
                  wants[w].tensors, (long long)wants[w].numel);
        }
        if (!strcmp(files[i], "sdxl_unet.yaml")) {
            printf("  SDXL UNet built on meta: resident memory grew by %.1f MiB\n", grown / 1048576.0);
            CHECK(grown < (64 << 20), "building SDXL on meta grew resident memory by %lld bytes", (long long)grown);
        }
        if (!strcmp(files[i], "sdxl_vae.yaml")) {
            int64_t enc = model_numel_prefix(&m.params, "encoder."), dec = model_numel_prefix(&m.params, "decoder.");
            CHECK(enc == 34163592 && dec == 49490179, "SDXL VAE encoder %lld, decoder %lld", (long long)enc, (long long)dec);
            CHECK(np == 2 && !strcmp(p[0].name, "encode") && !strcmp(p[1].name, "decode"), "VAE passes");
        }
        if (!strcmp(files[i], "disc_heads.yaml"))
            CHECK(m.state.numel == 25280 && m.state.n == 30, "heads' state: %lld values in %d tensors",
                  (long long)m.state.numel, m.state.n);
        if (!strcmp(files[i], "openclip_bigg_text.yaml"))
            CHECK(!strcmp(m.class_name, "CLIPTextModelWithProjection"), "bigG class %s", m.class_name);
        model_free(&m);
        free(files[i]);
    }
    CHECK(matched == (int)(sizeof wants / sizeof wants[0]), "%d of the expected YAMLs found", matched);
}

/* ---- FLOPs ---- */

static double probe_flops(const char *rel, int64_t B, int64_t hw, bool pixels, int pass) {
    char path[512];
    Model m;
    double f = -1;
    CHECK_OK(model_build(&m, src_path(path, sizeof path, rel), NULL, 0, DEVICE_META, true));
    ModelPass p[MODEL_MAX_PASSES];
    int32_t np = 0;
    ModelInput in = {.batch = B, .height = hw, .width = hw, .pixels = pixels};
    if (model_probe(&m, &in, p, &np) == ADDC_OK && pass < np) f = p[pass].flops;
    else CHECK(0, "%s: probe failed: %s", rel, addc_error_message());
    model_free(&m);
    return f;
}

static void flops_near(const char *what, double got, double want_t) {
    double rel = got / (want_t * 1e12) - 1.0;
    printf("  %-34s %.4f TFLOPs, ADD.md %.2f (%+.2f%%)\n", what, got / 1e12, want_t, 100.0 * rel);
    CHECK(rel > -0.02 && rel < 0.02, "%s: %.4g FLOPs, ADD.md %.2f T", what, got, want_t);
}

static void test_flops(void) {
    printf("forward FLOPs (2 x multiply-adds, batch 1, 77 context tokens):\n");
    double xl64 = probe_flops("configs/models/sdxl_unet.yaml", 1, 64, false, 0);
    flops_near("SDXL UNet, 64x64 latent", xl64, 1.59);
    flops_near("SDXL UNet, 128x128 latent", probe_flops("configs/models/sdxl_unet.yaml", 1, 128, false, 0), 6.76);
    flops_near("SD 2.1 UNet, 64x64 latent", probe_flops("configs/models/sd21_unet.yaml", 1, 64, false, 0), 0.80);
    flops_near("SDXL VAE decoder, 512 px", probe_flops("configs/models/sdxl_vae.yaml", 1, 512, true, 1), 2.51);
    double px = probe_flops("configs/models/sdxl_unet.yaml", 1, 512, true, 0);
    CHECK(px == xl64, "--size 512 px and --latent 64 give %.6g and %.6g", px, xl64);
    double b3 = probe_flops("configs/models/sdxl_unet.yaml", 3, 64, false, 0);
    CHECK(b3 == 3 * xl64, "batch 3: %.6g FLOPs, 3 x batch 1 = %.6g", b3, 3 * xl64);

    /* DINOv2 ViT-S/14 at 224 px, written out from its shapes */
    double D = 384, Dm = 1536, N = 1 + 16 * 16, L = 12;
    double patch = 2.0 * 256 * D * (14 * 14 * 3);
    double block = 2.0 * N * (4 * D * D + 2 * D * Dm) + 2.0 * N * N * (D + D);
    double want = patch + L * block, got = probe_flops("configs/models/dinov2_vits14.yaml", 1, 0, true, 0);
    printf("  %-34s %.6g FLOPs, by hand %.6g\n", "DINOv2 ViT-S/14, 224 px", got, want);
    CHECK(got == want, "ViT-S/14: %.9g FLOPs, by hand %.9g", got, want);
}

/* ---- activations against a real CPU run ---- */

/* the tiny UNet's forward on CPU without a tape: what the arena holds after it, and its peak */
static void cpu_forward(Model *m, int64_t hw, bool ckpt, int64_t *used, int64_t *peak) {
    const UNet2DConfig *cfg = &m->net.unet.cfg;
    Arena a;
    arena_init(&a, 1 << 20, 0);
    Ctx c = ctx_make(&a, NULL, DEVICE_CPU);
    int64_t xs[4] = {1, hw, hw, cfg->in_channels}, ts[1] = {1}, es[3] = {1, 77, cfg->cross_attention_dim};
    int64_t txs[2] = {1, cfg->projection_class_embeddings_input_dim - 6 * cfg->addition_time_embed_dim}, ids[2] = {1, 6};
    Var *x = var_zeros(&c, DTYPE_F32, 4, xs), *t = var_zeros(&c, DTYPE_F32, 1, ts), *e = var_zeros(&c, DTYPE_F32, 3, es);
    UNetAddedCond add = {var_zeros(&c, DTYPE_F32, 2, txs), var_zeros(&c, DTYPE_F32, 2, ids)};
    int64_t inputs = arena_used(&a);
    a.peak = inputs;
    m->net.unet.gradient_checkpointing = ckpt;
    CHECK_VAR(unet2d_forward(&c, &m->net.unet, x, t, e, &add));
    *used = arena_used(&a) - inputs;
    *peak = arena_peak(&a) - inputs;
    arena_free(&a);
}

static void test_activations(void) {
    char path[512];
    src_path(path, sizeof path, "configs/models/tiny_unet.yaml");
    const int64_t hw = 16;
    Model meta, cpu;
    CHECK_OK(model_build(&meta, path, NULL, 0, DEVICE_META, true));
    CHECK_OK(model_build(&cpu, path, NULL, 0, DEVICE_CPU, false));
    ModelPass p[MODEL_MAX_PASSES];
    int32_t np = 0;
    ModelInput in = {.height = hw, .width = hw};
    CHECK_OK(model_probe(&meta, &in, p, &np));
    int64_t used_all, peak_all, used_ck, peak_ck;
    cpu_forward(&cpu, hw, false, &used_all, &peak_all);
    cpu_forward(&cpu, hw, true, &used_ck, &peak_ck);
    printf("tiny UNet %lldx%lld on CPU: arena after forward %lld bytes (probe %lld), checkpointed %lld (probe %lld); "
           "checkpointed peak %lld (probe kept + block %lld)\n",
           (long long)hw, (long long)hw, (long long)used_all, (long long)p[0].act_bytes, (long long)used_ck,
           (long long)p[0].kept_bytes, (long long)peak_ck, (long long)(p[0].kept_bytes + p[0].block_bytes));
    /* the arena also holds a Var per output and 64-byte padding, and views (reshape) hold no
     * new data: the probe counts their bytes, so allow a little either way */
    double r_all = (double)used_all / (double)p[0].act_bytes, r_ck = (double)used_ck / (double)p[0].kept_bytes;
    double r_pk = (double)peak_ck / (double)(p[0].kept_bytes + p[0].block_bytes);
    CHECK(r_all > 0.8 && r_all < 1.3, "no checkpointing: the arena holds %.3f x the probe's bytes", r_all);
    CHECK(r_ck > 0.8 && r_ck < 1.3, "checkpointing: the arena holds %.3f x the probe's kept bytes", r_ck);
    CHECK(r_pk > 0.8 && r_pk < 1.3, "checkpointing: the arena's peak is %.3f x kept + block", r_pk);
    CHECK(used_ck < used_all / 2, "checkpointing keeps %lld of %lld bytes", (long long)used_ck, (long long)used_all);
    model_free(&meta);
    model_free(&cpu);
}

/* ---- the FSDP plan ---- */

static void test_plan(void) {
    char path[512];
    Model m;
    CHECK_OK(model_build(&m, src_path(path, sizeof path, "configs/models/tiny_unet.yaml"), NULL, 0, DEVICE_META, true));
    MemoryPlan one, three;
    model_memory_plan(&m.params, 1, &one);
    model_memory_plan(&m.params, 3, &three);
    int64_t shard = 0, largest = 0, covered = 0;
    for (int32_t u = 0; u < m.params.n_units; u++) {
        int64_t n = m.params.units[u].numel;
        shard += (n + 2) / 3;
        covered += n;
        if (n > largest) largest = n;
    }
    CHECK(covered == m.params.numel, "units cover %lld of %lld parameters", (long long)covered, (long long)m.params.numel);
    CHECK(one.shard_numel == m.params.numel && three.shard_numel == shard && three.shard_numel * 3 >= m.params.numel,
          "shards: world 1 %lld, world 3 %lld (want %lld)", (long long)one.shard_numel, (long long)three.shard_numel,
          (long long)shard);
    CHECK(three.weights_shard == 4 * shard && three.grads_shard == 4 * shard && three.adam == 8 * shard &&
              three.weights_gather == 4 * largest && three.grads_unit == 4 * largest && three.largest_numel == largest,
          "plan bytes");
    printf("tiny UNet plan: %d units, world 3 shard %lld of %lld parameters (padding %lld)\n", three.n_units,
           (long long)three.shard_numel, (long long)m.params.numel, (long long)(3 * shard - m.params.numel));
    model_free(&m);
}

/* ---- kind detection ---- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_detect(void) {
    char dir[] = "/tmp/addc_inspect_XXXXXX", path[600];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(path, sizeof path, "%s/x.yaml", dir);
    ModelKind k;
    Model m;

    write_text(path, "# a comment\nmodel_type: dinov2\nnested:\n  _class_name: AutoencoderKL\n");
    CHECK(model_kind_detect(path, &k) == ADDC_OK && k == MODEL_DINOV2, "nested keys are not top-level ones");
    write_text(path, "_class_name: ControlNetModel\nin_channels: 4\n");
    addc_error_clear();
    CHECK(model_kind_detect(path, &k) == ADDC_ERR_UNSUPPORTED && strstr(addc_error_message(), "ControlNetModel"),
          "unknown class: %s", addc_error_message());
    write_text(path, "in_channels: 4\n");
    addc_error_clear();
    CHECK(model_kind_detect(path, &k) == ADDC_ERR_FORMAT && strstr(addc_error_message(), "cannot tell"),
          "no class: %s", addc_error_message());
    write_text(path, "_class_name: [unclosed\n");
    addc_error_clear();
    CHECK(model_kind_detect(path, &k) == ADDC_ERR_FORMAT && strstr(addc_error_message(), "x.yaml:"),
          "syntax error: %s", addc_error_message());
    /* the network's own loader then binds the file: a typo is named */
    write_text(path, "_class_name: UNet2DConditionModel\nlayers_per_blok: 2\n");
    addc_error_clear();
    CHECK(model_build(&m, path, NULL, 0, DEVICE_META, true) != ADDC_OK && strstr(addc_error_message(), "layers_per_blok"),
          "typo: %s", addc_error_message());
    model_free(&m);
    addc_error_clear();
    CHECK(model_kind_detect("/nonexistent/x.yaml", &k) == ADDC_ERR_IO, "missing file");
    addc_error_clear();
    unlink(path);
    rmdir(dir);
}

/* ---- the program ---- */

static int run_addc(const char *args, const char *out_file) {
    char self[512], cmd[2048];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    strcpy(slash + 1, "addc");
    if (access(self, X_OK) != 0) return -1;
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", self, args, out_file);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)len + 1);
    if (s && fread(s, 1, (size_t)len, f) != (size_t)len) len = 0;
    if (s) s[len] = 0;
    fclose(f);
    return s;
}

static int count_lines_ending(const char *text, const char *tail) {
    int n = 0;
    size_t tl = strlen(tail);
    for (const char *l = text; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        if (len >= tl && !strncmp(l + len - tl, tail, tl)) n++;
        l = e ? e + 1 : NULL;
    }
    return n;
}

static void test_cli(void) {
    char log[64] = "/tmp/addc_inspect_cli_XXXXXX", args[1024], path[512];
    int fd = mkstemp(log);
    if (fd >= 0) close(fd);
    int rc = run_addc("inspect --help", log);
    if (rc < 0) {
        printf("cli: no addc binary next to this test (build the addc target to test the command line)\n");
        unlink(log);
        return;
    }
    char *t = read_all(log);
    CHECK(rc == 0 && t && strstr(t, "addc inspect CONFIG.yaml") && strstr(t, "2 x multiply-adds") &&
              strstr(t, "--world") && strstr(t, "--checkpoint on|off"),
          "inspect --help (rc %d)", rc);
    free(t);

    snprintf(args, sizeof args, "inspect '%s' --latent 64x64 --world 8 --params",
             src_path(path, sizeof path, "configs/models/sdxl_unet.yaml"));
    rc = run_addc(args, log);
    t = read_all(log);
    int listed = t ? count_lines_ending(t, " f32") : 0;
    CHECK(rc == 0 && t && strstr(t, "2,567,463,684 in 1680 tensors") && strstr(t, "1.589 TFLOPs") &&
              strstr(t, "world 8") && listed == 1680 &&
              strstr(t, "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight") &&
              strstr(t, "(320, 4, 3, 3)"),
          "inspect sdxl_unet --params (rc %d, %d parameter lines):\n%.2000s", rc, listed, t ? t : "");
    const char *summary = t ? strstr(t, "sdxl_unet.yaml: UNet2DConditionModel") : NULL;
    while (summary && summary > t && summary[-1] != '\n') summary--;
    if (summary) printf("addc %s (after its %d parameter lines):\n%s", args, listed, summary);
    free(t);

    rc = run_addc("inspect configs/models/sdxl_unet.yaml --size 64x", log);
    CHECK(rc == 2, "a bad --size is a usage error (rc %d)", rc);
    rc = run_addc("inspect /nonexistent.yaml", log);
    t = read_all(log);
    CHECK(rc == 1 && t && strstr(t, "/nonexistent.yaml"), "a missing YAML: rc %d, %s", rc, t ? t : "");
    free(t);
    unlink(log);
}

int main(void) {
    test_all_configs();
    test_flops();
    test_activations();
    test_plan();
    test_detect();
    test_cli();
    return test_main_end("inspect");
}
