/* tests/unit/test_convnet: the classifiers of the toy experiment (nn/convnet.c, DINOv2's classification
 * head in nn/vit.c, model_classify in nn/model.c) against torch (fixtures from
 * tests/ref/make_convnet_fixture.py).
 *
 * - a tiny convnet (3 channels, 11 x 10 images: odd sizes through the stride-2 downsample, two
 *   blocks per stage, a 1x1 shortcut) and a tiny DINOv2 with num_labels on gray 12 x 12 images
 *   (repeated to 3 channels, area-resized to 8 x 8, normalised) built with model_build from their
 *   YAMLs, weights loaded by name from torch's files: every (name, shape) in torch's order, the
 *   features and logits of model_classify (max relative error <= 1e-4), the loss
 *   cross_entropy(logits, labels) + sum(features R), and its gradient with respect to the image and
 *   to every parameter (<= 1e-3), checkpointing on and off bit-identical;
 * - configs/models/toy_evalnet.yaml and toy_dinov2.yaml on the meta device: parameter counts, units,
 *   model_classifier_dims, model_classify on gray images; toy_dinov2 with num_labels=0 has exactly
 *   the classifier's parameters fewer (existing DINOv2 files are unaffected);
 * - refusals: a misspelled convnet key (did-you-mean), widths not divisible into the norm groups, a
 *   DINOv2 without num_labels, a network that is not a classifier, images of the wrong channels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/forward.h"
#include "nn/model.h"
#include "tests/ref_nn.h"
#include "tests/test_util.h"

#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3
#define FIX "tests/ref/fixtures/classify/"

typedef struct ClassifyRun {
    float *features, *logits, *grad_image, *grad_params; /* malloc'd copies */
    float loss;
    int64_t nf, nl, ni;
} ClassifyRun;

static float *copy_of(const void *src, int64_t n) {
    float *d = malloc((size_t)(n ? n : 1) * 4);
    if (src) memcpy(d, src, (size_t)n * 4);
    else memset(d, 0, (size_t)n * 4);
    return d;
}

/* model_classify on the fixture image (NCHW, permuted to NHWC inside the graph), the loss, backward */
static ClassifyRun classify_run(Model *m, const SafeTensors *io) {
    ClassifyRun r;
    memset(&r, 0, sizeof r);
    param_store_zero_grad(&m->params);
    TestCtx tc;
    tctx_init(&tc);
    Var *image = nn_io_var(&tc.nt, io, "image", true);
    Var *labels = nn_io_ids(&tc.nt, io, "labels");
    Var *R = nn_io_var(&tc.nt, io, "R", false);
    const int32_t nhwc[4] = {0, 2, 3, 1};
    Var *features = NULL, *logits = NULL;
    Status st = image && labels && R ? model_classify(&tc.c, m, op_permute(&tc.c, image, nhwc), &features, &logits)
                                     : ADDC_ERR_INVALID;
    CHECK_OK(st);
    if (st == ADDC_OK) {
        Var *loss = op_add(&tc.c, op_cross_entropy(&tc.c, logits, labels->v.data),
                           op_sum(&tc.c, op_mul(&tc.c, features, R)));
        CHECK_VAR(loss);
        if (loss) {
            CHECK_OK(tape_backward(&tc.c, loss));
            r.loss = ((float *)loss->v.data)[0];
            r.nf = tensor_numel(&features->v);
            r.nl = tensor_numel(&logits->v);
            r.ni = tensor_numel(&image->v);
            r.features = copy_of(features->v.data, r.nf);
            r.logits = copy_of(logits->v.data, r.nl);
            r.grad_image = copy_of(image->g.data, r.ni);
            r.grad_params = copy_of(m->params.grad, m->params.numel);
        }
    }
    tctx_free(&tc);
    return r;
}

static void classify_run_free(ClassifyRun *r) {
    free(r->features);
    free(r->logits);
    free(r->grad_image);
    free(r->grad_params);
}

static bool same_bits(const float *a, const float *b, int64_t n) { return a && b && !memcmp(a, b, (size_t)n * 4); }

static void test_fixture(const char *name, int64_t want_f, int64_t want_k) {
    char path[512], rel[256], wpath[512];
    snprintf(rel, sizeof rel, FIX "%s.yaml", name);
    Model m;
    Status st = model_build(&m, nn_src_path(path, sizeof path, rel), NULL, 0, DEVICE_CPU, true);
    CHECK_OK(st);
    if (st != ADDC_OK) {
        model_free(&m);
        return;
    }
    printf("%s: %s, %d tensors, %lld parameters, %d units\n", name, m.class_name, m.params.n, (long long)m.params.numel,
           m.params.n_units);
    snprintf(rel, sizeof rel, FIX "%s_params.txt", name);
    nn_check_listing(&m.params, rel, NULL, NULL);
    int64_t F = 0, K = 0;
    CHECK_OK(model_classifier_dims(&m, &F, &K));
    CHECK(F == want_f && K == want_k, "%s: classifier dims (%lld, %lld), want (%lld, %lld)", name, (long long)F,
          (long long)K, (long long)want_f, (long long)want_k);

    snprintf(rel, sizeof rel, FIX "%s.safetensors", name);
    WeightsReport rep;
    CHECK_OK(forward_weights_load(&m, nn_src_path(wpath, sizeof wpath, rel), NULL, &rep));
    CHECK(rep.n_loaded == m.params.n, "%s: loaded %d of %d", name, rep.n_loaded, m.params.n);
    weights_report_free(&rep);

    snprintf(rel, sizeof rel, FIX "%s_io.safetensors", name);
    SafeTensors io;
    CHECK_OK(safetensors_open(&io, nn_src_path(path, sizeof path, rel)));
    ClassifyRun plain = classify_run(&m, &io);
    double ef = nn_check_close("features", plain.features, plain.nf, &io, "features", FWD_TOL);
    double el = nn_check_close("logits", plain.logits, plain.nl, &io, "logits", FWD_TOL);
    double eloss = nn_check_close("loss", &plain.loss, 1, &io, "loss", FWD_TOL);
    double ei = nn_check_close("grad.image", plain.grad_image, plain.ni, &io, "grad.image", GRAD_TOL);
    /* every parameter's gradient, in the file layout, relative to the tensor's largest magnitude but
     * at least 1e-3 of the largest of all: DINOv2's key biases have a gradient of exactly 0 (softmax
     * ignores a shift of every key), which f32 meets only to ~1e-8 */
    float **want = calloc((size_t)m.params.n, sizeof *want);
    double gmax = 0;
    for (int32_t i = 0; i < m.params.n; i++) {
        const Param *p = param_store_get(&m.params, i);
        int64_t n = tensor_numel(&p->var.v);
        char key[PARAM_NAME_MAX + 8];
        snprintf(key, sizeof key, "grad.%s", p->name);
        const StTensor *t = safetensors_find(&io, key);
        CHECK(t && t->nbytes == n * 4, "%s: fixture %s missing or mis-sized", name, key);
        if (!t || t->nbytes != n * 4) continue;
        want[i] = malloc((size_t)n * 4);
        CHECK_OK(safetensors_read_f32(t, want[i], n));
        for (int64_t k = 0; k < n; k++) gmax = fmax(gmax, fabs(want[i][k]));
    }
    double worst = 0;
    const char *worst_name = "-";
    for (int32_t i = 0; plain.grad_params && i < m.params.n; i++) {
        const Param *p = param_store_get(&m.params, i);
        if (!want[i]) continue;
        int64_t n = tensor_numel(&p->var.v);
        float *file = malloc((size_t)n * 4);
        weights_layout_to_file(p, plain.grad_params + p->offset, file);
        char label[PARAM_NAME_MAX + 8];
        snprintf(label, sizeof label, "grad.%s", p->name);
        double e = compare_f32(label, file, want[i], n, GRAD_TOL, 1e-3 * gmax);
        CHECK(e <= GRAD_TOL, "%s: %s relative error %.3g > %.3g", name, label, e, GRAD_TOL);
        if (e > worst) {
            worst = e;
            worst_name = p->name;
        }
        free(file);
    }
    for (int32_t i = 0; i < m.params.n; i++) free(want[i]);
    free(want);
    printf("  features %.2e, logits %.2e, loss %.2e; grad image %.2e, params worst %.2e (%s)\n", ef, el, eloss, ei,
           worst, worst_name);

    model_set_checkpointing(&m, true);
    ClassifyRun ck = classify_run(&m, &io);
    model_set_checkpointing(&m, false);
    bool same = same_bits(ck.features, plain.features, plain.nf) && same_bits(ck.logits, plain.logits, plain.nl) &&
                same_bits(ck.grad_image, plain.grad_image, plain.ni) &&
                same_bits(ck.grad_params, plain.grad_params, m.params.numel);
    CHECK(same, "%s: checkpointing changes the outputs or the gradients", name);
    printf("  checkpointing: %s\n", same ? "bit-identical" : "DIFFERS");
    classify_run_free(&plain);
    classify_run_free(&ck);
    safetensors_close(&io);
    model_free(&m);
}

/* the toy configs on meta: counts, units, dims, a gray classify */
static void test_toy(const char *rel, int32_t want_n, int64_t want_numel, int64_t want_f, int64_t want_k,
                     const char *block_pattern, int want_blocks) {
    char path[512];
    Model m;
    Status st = model_build(&m, nn_src_path(path, sizeof path, rel), NULL, 0, DEVICE_META, true);
    CHECK_OK(st);
    if (st == ADDC_OK) {
        printf("%s: %s, %d tensors, %lld parameters, %d units\n", rel, m.class_name, m.params.n,
               (long long)m.params.numel, m.params.n_units);
        CHECK(m.params.n == want_n && m.params.numel == want_numel, "%s: %d tensors / %lld parameters, want %d / %lld",
              rel, m.params.n, (long long)m.params.numel, want_n, (long long)want_numel);
        int blocks = nn_count_units(&m.params, block_pattern);
        CHECK(blocks == want_blocks, "%s: %d block units, want %d", rel, blocks, want_blocks);
        bool cls_unit = m.params.n_units > 0 && !strcmp(m.params.units[m.params.n_units - 1].name, "classifier");
        CHECK(cls_unit, "%s: the last unit must be the classifier", rel);
        int64_t F = 0, K = 0;
        CHECK_OK(model_classifier_dims(&m, &F, &K));
        CHECK(F == want_f && K == want_k, "%s: dims (%lld, %lld)", rel, (long long)F, (long long)K);
        Arena arena;
        arena_init(&arena, 1 << 20, 0);
        Tape tape;
        tape_init(&tape);
        Ctx c = ctx_make(&arena, &tape, DEVICE_META);
        int64_t xs[4] = {5, 32, 32, 1};
        Var *x = var_new(&c, DTYPE_F32, 4, xs), *f = NULL, *l = NULL;
        x->requires_grad = true;
        CHECK_OK(model_classify(&c, &m, x, &f, &l));
        CHECK(f && l && f->v.ndim == 2 && f->v.shape[0] == 5 && f->v.shape[1] == F && l->v.ndim == 2 &&
                  l->v.shape[0] == 5 && l->v.shape[1] == K,
              "%s: meta classify of gray (5, 32, 32, 1)", rel);
        tape_free(&tape);
        arena_free(&arena);
    }
    model_free(&m);
}

static void test_refusals(void) {
    char path[512];
    Model m;
    /* a DINOv2 without the head: exactly the classifier's parameters fewer, and no classify */
    const char *ov[1] = {"num_labels=0"};
    CHECK_OK(model_build(&m, nn_src_path(path, sizeof path, "configs/models/toy_dinov2.yaml"), ov, 1, DEVICE_META, true));
    CHECK(m.params.numel == 208650 - 650 && m.params.n == 79, "toy_dinov2 num_labels=0: %d / %lld", m.params.n,
          (long long)m.params.numel);
    int64_t F, K;
    CHECK(model_classifier_dims(&m, &F, &K) != ADDC_OK && strstr(addc_error_message(), "num_labels"),
          "dims of a DINOv2 without a head: %s", addc_error_message());
    addc_error_clear();
    Arena arena;
    arena_init(&arena, 1 << 16, 0);
    Ctx c = ctx_make(&arena, NULL, DEVICE_META);
    int64_t xs[4] = {2, 32, 32, 1}, x2[4] = {2, 32, 32, 2};
    Var *f, *l;
    CHECK(model_classify(&c, &m, var_new(&c, DTYPE_F32, 4, xs), &f, &l) != ADDC_OK && f == NULL && l == NULL,
          "classify with a DINOv2 without num_labels must be refused");
    addc_error_clear();
    model_free(&m);

    CHECK_OK(model_build(&m, nn_src_path(path, sizeof path, "configs/models/toy_evalnet.yaml"), NULL, 0, DEVICE_META,
                         true));
    CHECK(model_classify(&c, &m, var_new(&c, DTYPE_F32, 4, x2), &f, &l) != ADDC_OK &&
              strstr(addc_error_message(), "(B, H, W, 1)"),
          "2-channel images: %s", addc_error_message());
    addc_error_clear();
    model_free(&m);

    CHECK_OK(model_build(&m, nn_src_path(path, sizeof path, "configs/models/tiny_disc_heads.yaml"), NULL, 0, DEVICE_META,
                         true));
    CHECK(model_classify(&c, &m, var_new(&c, DTYPE_F32, 4, xs), &f, &l) != ADDC_OK &&
              strstr(addc_error_message(), "not an image classifier"),
          "the heads are no classifier: %s", addc_error_message());
    addc_error_clear();
    model_free(&m);
    arena_free(&arena);

    static const char *const bad[][2] = {
        {"model_type: convnet\nwidht: [8, 16]\n", "widths"},
        {"model_type: convnet\nwidths: [8, 12]\nnorm_num_groups: 8\n", "widths[1] = 12"},
        {"model_type: convnet\nwidths: []\n", "at least one stage"},
        {"model_type: convnet\nnum_labels: 0\n", "num_labels"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Config cf;
        config_init(&cf);
        ConvNetConfig cfg;
        Status st = config_load_string(&cf, "bad.yaml", bad[i][0]);
        if (st == ADDC_OK) st = config_bind(&cf, &convnet_config_schema, &cfg);
        if (st == ADDC_OK) st = convnet_config_check(&cfg);
        CHECK(st != ADDC_OK && strstr(addc_error_message(), bad[i][1]) != NULL, "config %zu: status %d, message '%s'", i,
              (int)st, addc_error_message());
        addc_error_clear();
        config_free(&cf);
    }
}

int main(void) {
    test_fixture("tiny_convnet", 16, 5);
    test_fixture("tiny_dinov2_cls", 16, 3);
    test_toy("configs/models/toy_evalnet.yaml", 38, 354538, 128, 10, ".blocks.", 3);
    test_toy("configs/models/toy_dinov2.yaml", 81, 208650, 64, 10, "encoder.layer.", 4);
    test_refusals();
    return test_main_end("test_convnet");
}
