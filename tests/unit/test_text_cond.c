/* tests/unit/test_text_cond: text conditioning (launch/text_cond.h) end to end, through the addc
 * program built beside this test:
 *   - SDXL's two encoders against diffusers' StableDiffusionXLPipeline.encode_prompt (fixture
 *     tests/ref/fixtures/text_cond/sdxl_dual.safetensors from make_text_cond_fixture.py): `addc embed`
 *     with the toy CLIP-L and bigG twins of tests/data/text/ (weights written here by the fixture's
 *     formula) gives each caption's context (16 tokens, 8 + 8 features) and pooled vector (the
 *     second encoder's projection), the bigG one padded with "!" = 0;
 *   - the two-encoder context is exactly the two one-encoder contexts side by side, its pooled
 *     vector exactly the second encoder's;
 *   - `addc sample --text-encoder2` gives the same PNG bytes as `addc sample --embeddings` of the
 *     rows `addc embed` wrote;
 *   with Fashion-MNIST (skipped without):
 *   - training on `addc embed --from-shards` rows (text.source embeddings) is bit-identical to
 *     training with the two encoders: diffusion mode with caption dropout and guided sample grids,
 *     ADD mode with a guided teacher: the same losses, grids and weights; `addc eval` with guidance
 *     the same numbers and images;
 *   - refusals that name the problem: a batch caption without a row (naming it), a file without
 *     "" when text.drop_prob > 0 (at setup), a file without captions, a context the UNet does not
 *     take, two encoders of different lengths. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/json.h"
#include "data/shards.h"
#include "nn/model.h"
#include "nn/safetensors.h"
#include "nn/weights.h"
#include "tests/test_util.h"

static char addc[1024], tmp[256], cmdbuf[16384];
static const char *src = ADDC_SOURCE_DIR;

static int run(const char *args, const char *log) { return test_addc_run(addc, "1", args, tmp, log); }


static bool same_bytes(const char *a, const char *b) {
    long na = -1, nb = -2;
    char *x = test_slurp(a, &na), *y = test_slurp(b, &nb);
    bool same = x && y && na == nb && !memcmp(x, y, (size_t)na);
    free(x);
    free(y);
    return same;
}

/* runs addc with args, expects a failure whose output names every one of the words */
static void check_refused(const char *args, const char *log, const char *what, const char *const *words, int n) {
    char p[600];
    CHECK(run(args, log) != 0, "%s was accepted", what);
    snprintf(p, sizeof p, "%s/%s", tmp, log);
    char *msg = test_slurp(p, NULL);
    const char *line = msg ? strstr(msg, "addc:") : NULL;
    printf("%s: %s", what, line ? line : msg ? msg : "(none)\n");
    for (int i = 0; i < n; i++)
        CHECK(msg && strstr(msg, words[i]), "%s: the message does not say '%s'", what, words[i]);
    free(msg);
}

/* ---- embeddings files ---- */

typedef struct Emb {
    int64_t P, T, D, Dp;
    float *ctx, *pooled; /* (P, T, D), (P, Dp) */
    char **captions;     /* (P) */
} Emb;

static void emb_free(Emb *e) {
    for (int64_t p = 0; e->captions && p < e->P; p++) free(e->captions[p]);
    free(e->captions);
    free(e->ctx);
    free(e->pooled);
    memset(e, 0, sizeof *e);
}

static bool emb_load(const char *path, Emb *e) {
    memset(e, 0, sizeof *e);
    SafeTensors f;
    if (safetensors_open(&f, path) != ADDC_OK) {
        CHECK(0, "%s: %s", path, addc_error_message());
        return false;
    }
    const StTensor *c = safetensors_find(&f, "encoder_hidden_states"), *t = safetensors_find(&f, "text_embeds");
    bool ok = c && t && c->ndim == 3 && t->ndim == 2 && f.metadata;
    JsonDoc meta = {0}, list = {0};
    if (ok) {
        e->P = c->shape[0], e->T = c->shape[1], e->D = c->shape[2], e->Dp = t->shape[1];
        e->ctx = malloc((size_t)(e->P * e->T * e->D) * sizeof(float));
        e->pooled = malloc((size_t)(e->P * e->Dp) * sizeof(float));
        e->captions = calloc((size_t)e->P, sizeof(char *));
        ok = safetensors_read_f32(c, e->ctx, e->P * e->T * e->D) == ADDC_OK &&
             safetensors_read_f32(t, e->pooled, e->P * e->Dp) == ADDC_OK &&
             json_parse(f.metadata, (int64_t)strlen(f.metadata), NULL, &meta) == ADDC_OK;
    }
    const JsonNode *cn = ok ? json_get(&meta, json_root(&meta), "captions") : NULL;
    int64_t len = 0;
    const char *text = cn ? json_string(&meta, cn, &len) : NULL;
    ok = text && json_parse(text, len, NULL, &list) == ADDC_OK && json_root(&list)->count == e->P;
    for (int64_t p = 0; ok && p < e->P; p++) e->captions[p] = strdup(json_string(&list, json_at(&list, json_root(&list), p), NULL));
    json_free(&meta);
    json_free(&list);
    safetensors_close(&f);
    CHECK(ok, "%s: not an embeddings file (encoder_hidden_states, text_embeds, captions)", path);
    return ok;
}

static int64_t emb_row(const Emb *e, const char *caption) {
    for (int64_t p = 0; p < e->P; p++)
        if (!strcmp(e->captions[p], caption)) return p;
    return -1;
}

/* ---- the fixture's weights ---- */

static uint32_t fnv1a32(const char *s) {
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) h = (h ^ *p) * 16777619u;
    return h;
}

/* Every parameter of the model YAML as make_text_cond_fixture.py's formula, saved to out. */
static void formula_weights_write(const char *yaml, const char *out) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", src, yaml);
    Model m;
    memset(&m, 0, sizeof m);
    Status st = model_build(&m, path, NULL, 0, DEVICE_CPU, false);
    CHECK_OK(st);
    for (int32_t i = 0; st == ADDC_OK && i < m.params.n; i++) {
        Param *p = param_store_get(&m.params, i);
        const char *key = strncmp(p->name, "text_model.", 11) ? p->name : p->name + 11;
        bool norm = strstr(key, "layer_norm") != NULL;
        double base = norm && strstr(key, ".weight") ? 1.0 : 0.0, amp = norm ? 0.1 : 0.5;
        double h = 0.1 * (double)(fnv1a32(key) % 997);
        float *d = p->var.v.data;
        for (int64_t k = 0; k < tensor_numel(&p->var.v); k++) d[k] = (float)(base + amp * sin(0.731 * (double)k + h));
    }
    if (st == ADDC_OK) CHECK_OK(weights_save(&m.params, out, DTYPE_F32, NULL));
    model_free(&m);
}

#define E1 "tests/data/text/toy_clip_l_text.yaml"
#define E2 "tests/data/text/toy_bigg_text.yaml"

/* `addc embed` vs diffusers' encode_prompt; one encoder each vs both. */
static void test_dual(void) {
    char w1[400], w2[400], caps[400], a[8192], p[600], q[600], r[600];
    snprintf(w1, sizeof w1, "%s/w1.safetensors", tmp);
    snprintf(w2, sizeof w2, "%s/w2.safetensors", tmp);
    formula_weights_write(E1, w1);
    formula_weights_write(E2, w2);
    Emb ref;
    snprintf(p, sizeof p, "%s/tests/ref/fixtures/text_cond/sdxl_dual.safetensors", src);
    if (!emb_load(p, &ref)) return;
    snprintf(caps, sizeof caps, "%s/caps.txt", tmp);
    FILE *f = fopen(caps, "w");
    for (int64_t i = 0; i < ref.P; i++) fprintf(f, "%s\n", ref.captions[i]);
    fclose(f);
    const char *base = "embed configs/train/toy_teacher.yaml text.encoder.config=" E1 " text.encoder.weights=%s "
                       "text.encoder2.config=" E2 " text.encoder2.weights=%s sample.prompts=[] eval.prompts=[] "
                       "--captions %s --out %s/%s.safetensors";
    snprintf(a, sizeof a, base, w1, w2, caps, tmp, "dual");
    CHECK(run(a, "dual.log") == 0, "addc embed (two encoders) failed: see %s/dual.log", tmp);
    snprintf(a, sizeof a, base, w1, w2, caps, tmp, "one");
    strcat(a, " text.encoder2.config=");
    CHECK(run(a, "one.log") == 0, "addc embed (CLIP-L alone) failed: see %s/one.log", tmp);
    snprintf(a, sizeof a, base, w1, w2, caps, tmp, "two");
    snprintf(a + strlen(a), sizeof a - strlen(a), " text.encoder.config=" E2 " text.encoder.weights=%s text.encoder2.config=",
             w2);
    CHECK(run(a, "two.log") == 0, "addc embed (bigG alone) failed: see %s/two.log", tmp);
    Emb d, e1, e2;
    snprintf(p, sizeof p, "%s/dual.safetensors", tmp);
    snprintf(q, sizeof q, "%s/one.safetensors", tmp);
    snprintf(r, sizeof r, "%s/two.safetensors", tmp);
    if (!emb_load(p, &d) || !emb_load(q, &e1) || !emb_load(r, &e2)) {
        emb_free(&ref);
        return;
    }
    printf("addc embed, two encoders: %lld rows, context %lld x %lld, pooled %lld (one: %lld, %lld wide)\n",
           (long long)d.P, (long long)d.T, (long long)d.D, (long long)d.Dp, (long long)e1.D, (long long)e2.D);
    CHECK(d.P == ref.P && d.T == 16 && d.D == 16 && d.Dp == 8 && e1.D == 8 && e2.D == 8 && e1.P == d.P && e2.P == d.P,
          "shapes: %lld rows x %lld x %lld, pooled %lld (want %lld x 16 x 16, pooled 8)", (long long)d.P,
          (long long)d.T, (long long)d.D, (long long)d.Dp, (long long)ref.P);
    CHECK(d.P > 0 && !strcmp(d.captions[0], ""), "row 0 is not the empty caption");
    /* against diffusers */
    double worst = 0;
    for (int64_t i = 0; i < ref.P && d.D == 16 && d.Dp == 8; i++) {
        int64_t row = emb_row(&d, ref.captions[i]);
        CHECK(row >= 0, "no row for the fixture caption \"%s\"", ref.captions[i]);
        if (row < 0) continue;
        char label[300];
        snprintf(label, sizeof label, "context of \"%.40s\"", ref.captions[i]);
        double ec = compare_f32(label, d.ctx + row * 256, ref.ctx + i * 256, 256, 1e-5, 1.0);
        snprintf(label, sizeof label, "pooled of \"%.40s\"", ref.captions[i]);
        double ep = compare_f32(label, d.pooled + row * 8, ref.pooled + i * 8, 8, 1e-5, 1.0);
        CHECK(ec < 1e-5 && ep < 1e-5, "caption \"%s\": context error %.3g, pooled error %.3g vs diffusers",
              ref.captions[i], ec, ep);
        worst = fmax(worst, fmax(ec, ep));
    }
    printf("two encoders vs diffusers StableDiffusionXLPipeline.encode_prompt: %lld captions, max rel error %.3g\n",
           (long long)ref.P, worst);
    /* both = one and two side by side, pooled = the second's, exactly */
    bool concat = d.D == 16 && e1.D == 8 && e2.D == 8 && e1.P == d.P && e2.P == d.P, pooled = concat;
    for (int64_t i = 0; concat && i < d.P * d.T; i++)
        concat = !memcmp(d.ctx + i * 16, e1.ctx + i * 8, 32) && !memcmp(d.ctx + i * 16 + 8, e2.ctx + i * 8, 32);
    for (int64_t i = 0; pooled && i < d.P * 8; i++) pooled = d.pooled[i] == e2.pooled[i];
    bool differ = pooled && memcmp(d.pooled, e1.pooled, (size_t)(d.P * 8) * sizeof(float));
    printf("two encoders: context = [CLIP-L | bigG] %s, pooled = bigG's %s\n", concat ? "exactly" : "NOT",
           pooled ? "exactly" : "NOT");
    CHECK(concat, "the two-encoder context is not the one-encoder contexts side by side");
    CHECK(pooled && differ, "the pooled vector is not the second encoder's");

    /* addc sample: two encoders and their precomputed rows give the same images */
    char prompts[4096] = "";
    for (int64_t i = 0; i < d.P; i++) {
        size_t k = strlen(prompts);
        snprintf(prompts + k, sizeof prompts - k, " --prompt '%s'", d.captions[i]);
    }
    const char *smp = "sample --model configs/models/tiny_unet.yaml --weights none --init-seed 3 --sampler euler_a "
                      "--steps 2 --seed 11 --n-per-prompt 2 --out %s/%s";
    snprintf(a, sizeof a, smp, tmp, "s_enc");
    snprintf(a + strlen(a), sizeof a - strlen(a),
             " --text-encoder " E1 " --text-weights %s --text-encoder2 " E2 " --text-weights2 %s%s", w1, w2, prompts);
    CHECK(run(a, "s_enc.log") == 0, "addc sample --text-encoder2 failed: see %s/s_enc.log", tmp);
    snprintf(a, sizeof a, smp, tmp, "s_emb");
    snprintf(a + strlen(a), sizeof a - strlen(a), " --embeddings %s", p);
    CHECK(run(a, "s_emb.log") == 0, "addc sample --embeddings failed: see %s/s_emb.log", tmp);
    int same = 0;
    for (int64_t i = 0; i < 2 * d.P; i++) {
        snprintf(q, sizeof q, "%s/s_enc/%05lld.png", tmp, (long long)i);
        snprintf(r, sizeof r, "%s/s_emb/%05lld.png", tmp, (long long)i);
        same += same_bytes(q, r);
    }
    printf("addc sample: two encoders vs their embed rows: %d of %lld PNGs byte-identical\n", same,
           (long long)(2 * d.P));
    CHECK(same == 2 * d.P && same > 0, "addc sample: %d of %lld images differ", (int)(2 * d.P - same),
          (long long)(2 * d.P));
    snprintf(q, sizeof q, "%s/s_enc/manifest.jsonl", tmp);
    snprintf(r, sizeof r, "%s/s_emb/manifest.jsonl", tmp);
    CHECK(same_bytes(q, r), "the manifests differ (the embeddings' captions should name the images)");
    emb_free(&ref);
    emb_free(&d);
    emb_free(&e1);
    emb_free(&e2);
}

/* ---- training ---- */

/* the step lines of a run's metrics.jsonl without their timing fields */
static char *step_lines(const char *run_dir) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", tmp, run_dir);
    char *s = test_slurp(p, NULL);
    if (!s) return NULL;
    char *w = s;
    for (char *line = s, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) break;
        char *cut = strstr(line, ", \"img_per_s\"");
        if (strncmp(line, "{\"step\": ", 9) || !cut || cut > nl) continue;
        memmove(w, line, (size_t)(cut - line));
        w += cut - line;
        *w++ = '\n';
    }
    *w = 0;
    return s;
}

static void check_same_run(const char *a, const char *b, const char *grid, const char *what) {
    char *m0 = step_lines(a), *m1 = step_lines(b), p[600], q[600];
    CHECK(m0 && m1 && m0[0] && !strcmp(m0, m1), "%s: different metrics:\n%s---\n%s", what, m0 ? m0 : "",
          m1 ? m1 : "");
    if (m0) printf("%s: encoder run\n%s", what, m0);
    free(m0);
    free(m1);
    snprintf(p, sizeof p, "%s/%s/samples/%s", tmp, a, grid);
    snprintf(q, sizeof q, "%s/%s/samples/%s", tmp, b, grid);
    CHECK(same_bytes(p, q), "%s: the sample grids %s differ (or are missing)", what, grid);
    snprintf(p, sizeof p, "%s/%s/student.safetensors", tmp, a);
    snprintf(q, sizeof q, "%s/%s/student.safetensors", tmp, b);
    CHECK(same_bytes(p, q), "%s: the student weights differ", what);
}

#define TEXT2                                                                                                    \
    " text.encoder.config=" E1 " text.encoder.init_seed=7 text.encoder2.config=" E2 " text.encoder2.init_seed=9"
#define COMMON                                                                                                   \
    "data.shards=%s/fm/fmnist-train-{000000..000001}.tar data.size=16 data.channels=1 data.threads=1 "            \
    "data.shuffle=32 batch=4 log_every=0 codec.kind=unshuffle student.config=configs/models/tiny_unet.yaml" TEXT2
#define GRIDS " sample.every=3 'sample.prompts=[shirt, \"a photo of a bag\"]' sample.per_prompt=2 sample.teacher_steps=2"

static void test_training(void) {
    char fm[300], c[4096], a[8192], emb[400], p[600];
    snprintf(fm, sizeof fm, "%s/fm", tmp);
    FmnistOptions fo = {.out_dir = fm, .limit = 64, .per_shard = 32, .train = true, .test = true};
    FmnistResult fr;
    CHECK_OK(shards_fmnist(&fo, &fr));
    snprintf(c, sizeof c, COMMON, tmp);
    snprintf(emb, sizeof emb, "%s/train_emb.safetensors", tmp);

    /* every caption of the shards, "" and the config's prompts */
    snprintf(a, sizeof a, "embed configs/train/toy_teacher.yaml %s" GRIDS " --from-shards --out %s", c, emb);
    CHECK(run(a, "embed.log") == 0, "addc embed --from-shards failed: see %s/embed.log", tmp);
    Emb e;
    if (emb_load(emb, &e)) {
        printf("addc embed --from-shards: %lld rows\n", (long long)e.P);
        CHECK(e.P == 12 && emb_row(&e, "") == 0 && emb_row(&e, "a photo of a bag") > 0 && emb_row(&e, "shirt") > 0,
              "%lld rows (want 12: \"\", the 10 class captions and the grid prompt shirt)",
              (long long)e.P);
        emb_free(&e);
    }

    /* diffusion: caption dropout and a guided grid */
    const char *diff = "train configs/train/toy_teacher.yaml %s" GRIDS
                       " sample.teacher_cfg=2 steps=3 text.drop_prob=0.5 --mode diffusion --run-dir %s/%s";
    snprintf(a, sizeof a, diff, c, tmp, "d_enc");
    CHECK(run(a, "d_enc.log") == 0, "diffusion with encoders failed: see %s/d_enc.log", tmp);
    snprintf(a, sizeof a, diff, c, tmp, "d_emb");
    snprintf(a + strlen(a), sizeof a - strlen(a), " text.source=embeddings text.embeddings=%s", emb);
    CHECK(run(a, "d_emb.log") == 0, "diffusion with embeddings failed: see %s/d_emb.log", tmp);
    check_same_run("d_enc", "d_emb", "step-0000003.png", "diffusion (drop_prob 0.5, teacher_cfg 2)");

    /* ADD: the teacher guided by the empty caption, the heads conditioned on the pooled vector */
    const char *add = "train configs/train/toy_add.yaml %s" GRIDS
                      " sample.student_steps=[1] sample.teacher_cfg=2 steps=3 teacher.config=configs/models/tiny_unet.yaml "
                      "teacher.weights= heads.overrides=[c_dim=8] loss.distill.cfg_scale=2 --run-dir %s/%s";
    snprintf(a, sizeof a, add, c, tmp, "a_enc");
    CHECK(run(a, "a_enc.log") == 0, "ADD with encoders failed: see %s/a_enc.log", tmp);
    snprintf(a, sizeof a, add, c, tmp, "a_emb");
    snprintf(a + strlen(a), sizeof a - strlen(a), " text.source=embeddings text.embeddings=%s", emb);
    CHECK(run(a, "a_emb.log") == 0, "ADD with embeddings failed: see %s/a_emb.log", tmp);
    check_same_run("a_enc", "a_emb", "step-0000003.png", "ADD (distill cfg_scale 2)");

    /* addc eval, guided: the generator reads the class prompts' rows by caption */
    const char *ev = "eval configs/train/toy_teacher.yaml %s eval.shards=%s/fm/fmnist-test-{000000..000001}.tar "
                     "eval.net.config=configs/models/toy_evalnet.yaml eval.net.init_seed=1 eval.net.weights= "
                     "eval.per_class=1 eval.real_max=20 eval.batch=4 --role student --sampler ddim --steps 2 --cfg 2 "
                     "--save-images %s/%s --json %s/%s.jsonl";
    snprintf(a, sizeof a, ev, c, tmp, tmp, "ev_enc", tmp, "ev_enc");
    CHECK(run(a, "ev_enc.log") == 0, "addc eval with encoders failed: see %s/ev_enc.log", tmp);
    snprintf(a, sizeof a, ev, c, tmp, tmp, "ev_emb", tmp, "ev_emb");
    snprintf(a + strlen(a), sizeof a - strlen(a), " text.source=embeddings text.embeddings=%s", emb);
    CHECK(run(a, "ev_emb.log") == 0, "addc eval with embeddings failed: see %s/ev_emb.log", tmp);
    int same = 0;
    for (int i = 0; i < 10; i++) {
        char q[600];
        snprintf(p, sizeof p, "%s/ev_enc/%05d.png", tmp, i);
        snprintf(q, sizeof q, "%s/ev_emb/%05d.png", tmp, i);
        same += same_bytes(p, q);
    }
    snprintf(p, sizeof p, "%s/ev_enc.jsonl", tmp);
    char *j0 = test_slurp(p, NULL), *f0 = j0 ? strstr(j0, "\"fd\"") : NULL;
    snprintf(p, sizeof p, "%s/ev_emb.jsonl", tmp);
    char *j1 = test_slurp(p, NULL), *f1 = j1 ? strstr(j1, "\"fd\"") : NULL;
    char *t0 = f0 ? strstr(f0, ", \"s_per_image\"") : NULL, *t1 = f1 ? strstr(f1, ", \"s_per_image\"") : NULL;
    if (t0) *t0 = 0;
    if (t1) *t1 = 0;
    printf("addc eval --cfg 2, encoders vs embeddings: %d of 10 images byte-identical; %s\n", same, f0 ? f0 : "?");
    CHECK(same == 10 && f0 && f1 && !strcmp(f0, f1), "addc eval: %d of 10 images the same; numbers %s vs %s", same,
          f0 ? f0 : "?", f1 ? f1 : "?");
    free(j0);
    free(j1);

    /* refusals */
    snprintf(a, sizeof a,
             "embed configs/train/toy_teacher.yaml %s sample.prompts=[] eval.prompts=[] --captions %s/caps.txt "
             "--out %s/few.safetensors",
             c, tmp, tmp);
    CHECK(run(a, "few.log") == 0, "addc embed --captions failed: see %s/few.log", tmp);
    snprintf(a, sizeof a,
             "train configs/train/toy_teacher.yaml %s steps=2 sample.every=0 text.source=embeddings "
             "text.embeddings=%s/few.safetensors --mode diffusion --run-dir %s/bad",
             c, tmp, tmp);
    check_refused(a, "bad_caption.log", "a caption without a row",
                  (const char *[]){"text.embeddings", "no row for the caption \"a photo of a"}, 2);
    /* a file whose captions lack "" */
    float ctx[2 * 16 * 16] = {0}, pooled[2 * 8] = {0};
    StTensor t[2] = {{"encoder_hidden_states", DTYPE_F32, 3, {2, 16, 16}, ctx, sizeof ctx},
                     {"text_embeds", DTYPE_F32, 2, {2, 8}, pooled, sizeof pooled}};
    snprintf(p, sizeof p, "%s/noempty.safetensors", tmp);
    CHECK_OK(safetensors_write(p, t, 2, "{\"captions\": \"[\\\"shirt\\\", \\\"a photo of a bag\\\"]\"}"));
    snprintf(a, sizeof a,
             "train configs/train/toy_teacher.yaml %s steps=1 sample.every=0 text.drop_prob=0.2 text.source=embeddings "
             "text.embeddings=%s --mode diffusion --run-dir %s/bad",
             c, p, tmp);
    check_refused(a, "bad_empty.log", "no \"\" row with drop_prob > 0",
                  (const char *[]){"no row for the caption \"\"", "text.drop_prob", "setup"}, 3);
    snprintf(p, sizeof p, "%s/plain.safetensors", tmp);
    CHECK_OK(safetensors_write(p, t, 2, NULL));
    snprintf(a, sizeof a,
             "train configs/train/toy_teacher.yaml %s steps=1 sample.every=0 text.drop_prob=0 text.source=embeddings "
             "text.embeddings=%s --mode diffusion --run-dir %s/bad",
             c, p, tmp);
    check_refused(a, "bad_plain.log", "a file without captions", (const char *[]){"names no captions", "addc embed"},
                  2);
    snprintf(a, sizeof a,
             "train configs/train/toy_teacher.yaml %s steps=1 text.encoder2.config=configs/models/toy_clip_text.yaml "
             "--mode diffusion --run-dir %s/bad",
             c, tmp);
    check_refused(a, "bad_width.log", "a context the UNet does not take",
                  (const char *[]){"text.encoder.config", "40 wide (8 + 32)", "cross_attention_dim is 16"}, 3);
    snprintf(a, sizeof a,
             "train configs/train/toy_teacher.yaml %s steps=1 text.encoder2.config=configs/models/tiny_openclip_text.yaml "
             "--mode diffusion --run-dir %s/bad",
             c, tmp);
    check_refused(a, "bad_len.log", "encoders of different lengths",
                  (const char *[]){"text.encoder2.config", "77 positions", "16"}, 3);
    snprintf(a, sizeof a, "train configs/train/toy_teacher.yaml %s steps=1 text.source=embeddings --run-dir %s/bad", c,
             tmp);
    check_refused(a, "bad_nofile.log", "embeddings without a file", (const char *[]){"text.embeddings", "addc embed"},
                  2);
}

int main(void) {
    if (!test_addc_locate(addc, sizeof addc)) return test_main_end("text_cond");
    snprintf(tmp, sizeof tmp, "/tmp/addc_test_text_cond_%d", (int)getpid());
    snprintf(cmdbuf, sizeof cmdbuf, "mkdir -p %s", tmp);
    CHECK(system(cmdbuf) == 0, "mkdir %s", tmp);
    test_dual();
    if (access(FMNIST_DEFAULT_DIR "/train-images-idx3-ubyte.gz", R_OK) == 0)
        test_training();
    else
        printf("test_text_cond: training checks skipped (no Fashion-MNIST in " FMNIST_DEFAULT_DIR ")\n");
    if (test_failed == 0) {
        snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %s", tmp);
        if (system(cmdbuf) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
    return test_main_end("text_cond");
}
