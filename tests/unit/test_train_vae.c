/* tests/unit/test_train_vae: the ADD step's latent path with a real AutoencoderKL codec
 * (codec.kind vae): the generator's gradient reaches the student THROUGH the frozen decoder.
 * The toy runs in the pixel-unshuffle latent space; this test covers the VAE path it skips.
 *
 * 1. In process, the chain launch/train.c's add_step runs for the student (tiny random UNet of
 *    configs/models/tiny_sd21_unet.yaml, tiny random VAE of configs/models/tiny_vae.yaml, batch 2,
 *    4x4x4 latents, 16x16x3 images):
 *      z_s -> UNet (v prediction) -> x0 latent (diffusion_x0_from_pred) -> latent_decode through
 *      the VAE codec (taped) -> distill_loss in pixel space with c(t) = alpha_t against a fixed
 *      target image
 *    - the student's parameter gradients against central finite differences (fourth order, step
 *      2e-2 max(1, |w|)) of the loss recomputed without a tape (float32), at the largest-gradient
 *      element of 13 tensors from conv_in, the time embedding, down, mid and up blocks and
 *      conv_out: relative error <= 1e-2;
 *    - the decoder is on the tape (decode adds nodes), and the same gradients with the decoder
 *      checkpointed (as the VAE runs at scale) are bit-identical;
 *    - negative control: the same forward with the decode run without a tape and fed as a
 *      constant gives the same loss bit for bit, but no gradient path (the loss does not require
 *      grad) and a student gradient of exactly zero;
 *    - the VAE is frozen: its store has no gradient buffer, no parameter requires grad, and its
 *      values are unchanged after the backward passes.
 * 2. End to end, `addc train` (the program built beside this test) in mode add with codec.kind=vae
 *    (tiny_vae.yaml, fresh weights keyed by init_seed), tiny_unet.yaml student and fresh teacher
 *    with the toy's text encoder, DINOv2 and heads, 4 steps of batch 4 on Fashion-MNIST shards
 *    made here:
 *    - the full objective: finite G and D losses, a nonzero generator gradient norm, the student
 *      moved away from its initialisation (rebuilt here from the same seed);
 *    - adv_weight=0 (distillation only, pixel space, so the student's one gradient path is the
 *      decoder): nonzero gradient norm at every step, the student moved;
 *    - control: adv_weight=0 and loss.distill.lambda=0: gradient norm 0 and the student exactly
 *      at its initialisation (so the rebuilt initialisation is the run's, and the changes above
 *      come from the losses).
 * Part 2 is skipped (exit 77 when part 1 passed) without the Fashion-MNIST files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/shards.h"
#include "losses/distill.h"
#include "nn/forward.h"
#include "nn/latent.h"
#include "nn/model.h"
#include "nn/safetensors.h"
#include "tests/test_util.h"

#define B 2
#define LAT 4  /* latent side: images LAT * 4 (the tiny VAE's three levels) */
#define CTX_T 3
#define FD_TOL 1e-2
#define FD_STEP 2e-2 /* relative to max(1, |w|) */

static const char *src = ADDC_SOURCE_DIR;

/* ---- 1. in process ---- */

typedef struct GradCase {
    Model unet, vae;
    LatentCodec codec;
    NoiseSchedule sched;
    AddLossConfig loss;
    int64_t s[B], tt[B];   /* student and teacher timesteps */
    float *z_s;            /* (B, LAT, LAT, 4) noised latents */
    float *context;        /* (B, CTX_T, cross_attention_dim) */
    float *target;         /* (B, 4 LAT, 4 LAT, 3) the fixed pixel-space target */
    int64_t z_shape[4], ctx_shape[3], img_shape[4];
    Arena arena;
    Tape tape;
} GradCase;

static Var *leaf(Ctx *c, float *data, int32_t nd, const int64_t *shape) {
    return var_leaf(c, tensor_make(data, DTYPE_F32, DEVICE_CPU, nd, shape), false);
}

/* The student's x0 latent: the UNet's v output converted as add_step's student_x0 does. */
static Var *case_student_x0(Ctx *c, GradCase *k) {
    Var *z = leaf(c, k->z_s, 4, k->z_shape);
    int64_t nb = B;
    Var *tv = var_new(c, DTYPE_F32, 1, &nb);
    if (!tv) return NULL;
    for (int b = 0; b < B; b++) ((float *)tv->v.data)[b] = (float)k->s[b];
    Var *pred = unet2d_forward(c, &k->unet.net.unet, z, tv, leaf(c, k->context, 3, k->ctx_shape), NULL);
    return diffusion_x0_from_pred(c, &k->sched, k->loss.prediction, z, pred, k->s);
}

/* The pixel-space distillation loss; with detach the decode runs without a tape and enters the
 * loss as a constant. *tape_after_student / *tape_after_decode: tape lengths (may be NULL). */
static Var *case_loss(Ctx *c, Ctx *nt, GradCase *k, bool detach, int32_t *tape_after_student,
                      int32_t *tape_after_decode) {
    Var *x0 = case_student_x0(c, k);
    if (tape_after_student) *tape_after_student = k->tape.n;
    Var *img = NULL;
    if (detach) {
        Var *d = latent_decode(nt, &k->codec, x0);
        img = d ? var_leaf(c, d->v, false) : NULL;
    } else {
        img = latent_decode(c, &k->codec, x0);
    }
    if (tape_after_decode) *tape_after_decode = k->tape.n;
    if (!img) return NULL;
    return distill_loss(c, &k->sched, &k->loss.distill, img, leaf(c, k->target, 4, k->img_shape), k->tt);
}

/* The loss without a tape, as a double. */
static double case_loss_value(GradCase *k) {
    arena_reset(&k->arena);
    Ctx nt = ctx_make(&k->arena, NULL, DEVICE_CPU);
    Var *l = case_loss(&nt, &nt, k, false, NULL, NULL);
    return l ? ((const float *)l->v.data)[0] : NAN;
}

/* One taped pass and backward: the loss value and (a copy of) the student's gradients. */
static float *case_backward(GradCase *k, bool detach, float *loss, bool *requires_grad, int32_t *n_student,
                            int32_t *n_decode) {
    arena_reset(&k->arena);
    tape_clear(&k->tape);
    param_store_zero_grad(&k->unet.params);
    Ctx c = ctx_make(&k->arena, &k->tape, DEVICE_CPU), nt = ctx_make(&k->arena, NULL, DEVICE_CPU);
    Var *l = case_loss(&c, &nt, k, detach, n_student, n_decode);
    CHECK_VAR(l);
    if (!l) return NULL;
    *loss = ((const float *)l->v.data)[0];
    *requires_grad = l->requires_grad;
    CHECK_OK(tape_backward(&c, l));
    float *g = malloc((size_t)k->unet.params.numel * sizeof(float));
    memcpy(g, k->unet.params.grad, (size_t)k->unet.params.numel * sizeof(float));
    return g;
}

static bool model_load(Model *m, const char *rel, const char *const *ov, int32_t n_ov, bool trainable, uint64_t seed) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", src, rel);
    Status st = model_build(m, path, ov, n_ov, DEVICE_CPU, trainable);
    if (st == ADDC_OK) st = forward_weights_random(m, seed);
    CHECK_OK(st);
    return st == ADDC_OK;
}

static void fill_normal(TestRng *r, float *x, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(scale * trng_normal(r));
}

/* d loss / d *w by the fourth-order central difference
 *   (8 (L(w + h) - L(w - h)) - (L(w + 2h) - L(w - 2h))) / 12h
 * at the step h rounded to what float32 can add to *w; *w is restored. Its O(h^4) truncation error
 * allows a step large enough that the loss's float32 rounding stays far below the change. */
static double fd_derivative(GradCase *k, float *w, double h) {
    float w0 = *w;
    *w = (float)(w0 + h);
    h = (double)*w - w0;
    double l[4];
    const double at[4] = {-2, -1, 1, 2};
    for (int i = 0; i < 4; i++) {
        *w = (float)(w0 + at[i] * h);
        l[i] = case_loss_value(k);
    }
    *w = w0;
    return (8 * (l[2] - l[1]) - (l[3] - l[0])) / (12 * h);
}

/* The parameters checked against finite differences: one tensor from each part of the UNet. */
static const char *const fd_params[] = {
    "conv_in.weight",
    "conv_in.bias",
    "time_embedding.linear_1.weight",
    "down_blocks.0.resnets.0.conv1.weight",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
    "down_blocks.1.resnets.0.conv2.weight",
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight",
    "mid_block.resnets.1.conv1.weight",
    "up_blocks.0.resnets.1.conv2.weight",
    "up_blocks.1.attentions.0.proj_out.weight",
    "conv_norm_out.weight",
    "conv_out.weight",
    "conv_out.bias",
};
#define N_FD ((int)(sizeof fd_params / sizeof fd_params[0]))

static void test_gradient(void) {
    GradCase k;
    memset(&k, 0, sizeof k);
    if (!model_load(&k.unet, "configs/models/tiny_sd21_unet.yaml", NULL, 0, true, 11) ||
        !model_load(&k.vae, "configs/models/tiny_vae.yaml", NULL, 0, false, 13)) {
        model_free(&k.unet);
        model_free(&k.vae);
        return;
    }
    const AutoencoderKL *vae = &k.vae.net.vae;
    k.codec = (LatentCodec){.kind = LATENT_CODEC_VAE, .vae = vae, .image_channels = 3, .scale = 1};
    CHECK(latent_codec_channels(&k.codec) == 4 && latent_codec_downscale(&k.codec) == 4, "tiny VAE: %lld channels, x%lld",
          (long long)latent_codec_channels(&k.codec), (long long)latent_codec_downscale(&k.codec));
    CHECK_OK(add_loss_config_default(&k.loss));
    k.loss.prediction = PREDICTION_V; /* the toy's */
    k.loss.schedule.zero_terminal_snr = true;
    CHECK_OK(noise_schedule_init(&k.sched, &k.loss.schedule));
    CHECK(k.loss.distill.space == DISTILL_SPACE_PIXEL && k.loss.distill.weighting == DISTILL_WEIGHTING_EXPONENTIAL,
          "the default distillation is not the pixel-space exponential one");
    k.s[0] = 749, k.s[1] = 249;
    k.tt[0] = 300, k.tt[1] = 650;
    printf("distillation weights c(t) = alpha_t: %.5f (t %lld), %.5f (t %lld)\n",
           distill_weight(&k.sched, &k.loss.distill, k.tt[0]), (long long)k.tt[0],
           distill_weight(&k.sched, &k.loss.distill, k.tt[1]), (long long)k.tt[1]);

    int64_t D = k.unet.net.unet.cfg.cross_attention_dim, S = LAT * 4;
    memcpy(k.z_shape, (int64_t[]){B, LAT, LAT, 4}, sizeof k.z_shape);
    memcpy(k.ctx_shape, (int64_t[]){B, CTX_T, D}, sizeof k.ctx_shape);
    memcpy(k.img_shape, (int64_t[]){B, S, S, 3}, sizeof k.img_shape);
    TestRng r = {2024};
    k.z_s = malloc(B * LAT * LAT * 4 * sizeof(float));
    k.context = malloc((size_t)(B * CTX_T * D) * sizeof(float));
    k.target = malloc((size_t)(B * S * S * 3) * sizeof(float));
    fill_normal(&r, k.z_s, B * LAT * LAT * 4, 1);
    fill_normal(&r, k.context, B * CTX_T * D, 1);
    trng_fill_f32(&r, k.target, B * S * S * 3, -1, 1);
    arena_init(&k.arena, 32 << 20, 0);
    tape_init(&k.tape);

    /* the VAE is frozen: no gradient buffer, nothing requires grad */
    ParamStore *vp = &k.vae.params;
    int vae_rg = 0;
    for (int32_t i = 0; i < vp->n; i++) vae_rg += param_store_get(vp, i)->var.requires_grad != 0;
    CHECK(vp->grad == NULL && vae_rg == 0, "the VAE is not frozen: grad buffer %p, %d parameters require grad",
          (void *)vp->grad, vae_rg);
    float *vae_before = malloc((size_t)vp->numel * sizeof(float));
    memcpy(vae_before, vp->data, (size_t)vp->numel * sizeof(float));
    printf("student %lld parameters in %d tensors; VAE %lld parameters (frozen)\n", (long long)k.unet.params.numel,
           k.unet.params.n, (long long)vp->numel);

    /* analytic gradients through the taped decoder */
    float loss = 0, loss_ck = 0, loss_det = 0;
    bool rg = false, rg_ck = false, rg_det = true;
    int32_t n_student = 0, n_decode = 0, n_s2 = 0, n_d2 = 0;
    float *g = case_backward(&k, false, &loss, &rg, &n_student, &n_decode);
    if (!g) goto done;
    printf("loss %.7f; tape: %d nodes after the student, %d after the decode\n", loss, n_student, n_decode);
    CHECK(rg && n_decode > n_student && n_student > 0, "the decoder is not on the tape (%d -> %d nodes)", n_student,
          n_decode);
    double gsq = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < k.unet.params.numel; i++) {
        gsq += (double)g[i] * g[i];
        bad += !isfinite(g[i]);
    }
    printf("student gradient norm %.6g\n", sqrt(gsq));
    CHECK(bad == 0 && gsq > 0, "student gradient: %lld non-finite, norm %g", (long long)bad, sqrt(gsq));

    /* finite differences at the largest-gradient element of each checked tensor */
    printf("%-66s %6s %12s %12s %12s %9s\n", "parameter", "index", "value", "analytic", "central FD", "rel err");
    double worst = 0;
    for (int j = 0; j < N_FD; j++) {
        Param *p = param_store_find(&k.unet.params, fd_params[j]);
        CHECK(p != NULL, "no parameter %s in the tiny UNet", fd_params[j]);
        if (!p) continue;
        int64_t n = tensor_numel(&p->var.v), best = 0;
        const float *gp = g + p->offset;
        for (int64_t i = 1; i < n; i++)
            if (fabsf(gp[i]) > fabsf(gp[best])) best = i;
        float *w = (float *)p->var.v.data + best, w0 = *w;
        double fd = fd_derivative(&k, w, FD_STEP * fmax(1.0, fabs(w0))), an = gp[best];
        double rel = fabs(fd - an) / fmax(fabs(an), 1e-30);
        worst = fmax(worst, rel);
        printf("%-66s %6lld %12.5g %12.5g %12.5g %9.2e\n", fd_params[j], (long long)best, w0, an, fd, rel);
        CHECK(fabs(an) > 1e-4 * sqrt(gsq), "%s: the largest gradient element is negligible (%g)", fd_params[j], an);
        CHECK(rel <= FD_TOL, "%s[%lld]: analytic %.6g vs finite differences %.6g (rel %.2e)", fd_params[j],
              (long long)best, an, fd, rel);
    }
    printf("finite differences: worst relative error %.2e over %d tensors (tolerance %.0e)\n", worst, N_FD, FD_TOL);
    CHECK(case_loss_value(&k) == loss, "the untaped loss differs from the taped one (or the weights were not restored)");

    /* the same with the decoder checkpointed, as at scale */
    k.vae.net.vae.gradient_checkpointing = true;
    float *g_ck = case_backward(&k, false, &loss_ck, &rg_ck, &n_s2, &n_d2);
    k.vae.net.vae.gradient_checkpointing = false;
    if (g_ck) {
        printf("checkpointed decoder: loss %.7f, %d decode nodes (%d without checkpointing)\n", loss_ck, n_d2 - n_s2,
               n_decode - n_student);
        CHECK(loss_ck == loss && memcmp(g_ck, g, (size_t)k.unet.params.numel * sizeof(float)) == 0,
              "checkpointing the decoder changed the loss or the student's gradient");
    }
    free(g_ck);

    /* negative control: the decode as a constant */
    float *g_det = case_backward(&k, true, &loss_det, &rg_det, &n_s2, &n_d2);
    if (g_det) {
        int64_t nonzero = 0;
        for (int64_t i = 0; i < k.unet.params.numel; i++) nonzero += g_det[i] != 0;
        printf("detached decoder: loss %.7f (taped %.7f), loss requires grad %d, student tape nodes %d, decode nodes "
               "%d, nonzero student gradients %lld of %lld\n",
               loss_det, loss, (int)rg_det, n_s2, n_d2 - n_s2, (long long)nonzero, (long long)k.unet.params.numel);
        CHECK(loss_det == loss, "the detached decode changed the loss value (%.9g vs %.9g)", loss_det, loss);
        CHECK(n_s2 > 0 && n_d2 == n_s2 && !rg_det, "detached decode: %d student nodes, %d decode nodes, requires grad %d",
              n_s2, n_d2 - n_s2, (int)rg_det);
        CHECK(nonzero == 0, "with the decoder detached the student still got %lld nonzero gradients", (long long)nonzero);
    }
    free(g_det);

    CHECK(memcmp(vae_before, vp->data, (size_t)vp->numel * sizeof(float)) == 0, "the VAE's weights changed");
    CHECK(vp->grad == NULL, "the VAE gained a gradient buffer");
done:
    free(g);
    free(vae_before);
    free(k.z_s);
    free(k.context);
    free(k.target);
    tape_free(&k.tape);
    arena_free(&k.arena);
    model_free(&k.unet);
    model_free(&k.vae);
}

/* ---- 2. end to end ---- */

static char addc[1024], tmp[256], cmdbuf[8192];

static int run(const char *args, const char *log) { return test_addc_run(addc, test_threads_or("2"), args, tmp, log); }



/* max |a - b| over the tensors of two safetensors files of the same names and sizes (INFINITY if
 * they differ there, -1 if one does not open) */
static double max_abs_diff(const char *a_path, const char *b_path, int *n_tensors) {
    SafeTensors a, b;
    *n_tensors = 0;
    if (safetensors_open(&a, a_path) != ADDC_OK) return -1;
    if (safetensors_open(&b, b_path) != ADDC_OK) {
        safetensors_close(&a);
        return -1;
    }
    double d = a.n == b.n ? 0 : INFINITY;
    for (int32_t i = 0; i < a.n && isfinite(d); i++) {
        const StTensor *ta = &a.t[i], *tb = safetensors_find(&b, ta->name);
        if (!tb || tb->nbytes != ta->nbytes) {
            d = INFINITY;
            break;
        }
        int64_t n = ta->nbytes / 4;
        float *x = malloc((size_t)n * 8), *y = x + n;
        safetensors_read_f32(ta, x, n);
        safetensors_read_f32(tb, y, n);
        for (int64_t j = 0; j < n; j++) d = fmax(d, fabs((double)x[j] - y[j]));
        free(x);
        (*n_tensors)++;
    }
    safetensors_close(&a);
    safetensors_close(&b);
    return d;
}

/* The UNet overrides that fit tiny_unet.yaml to the toy text encoder (32-wide context and pooled
 * vector, 6 time ids x 4); the teacher's seed (the student starts as a copy of the teacher). */
#define UNET_OV1 "cross_attention_dim=32"
#define UNET_OV2 "projection_class_embeddings_input_dim=56"
#define TEACHER_SEED 21
#define STR_(x) #x
#define STR(x) STR_(x)
#define E2E_STEPS 4
#define E2E_ARGS                                                                                                  \
    "train configs/train/toy_add.yaml data.shards=%s/fm/fmnist-train-{000000..000001}.tar data.size=16 "          \
    "data.channels=3 data.threads=1 data.shuffle=32 batch=4 steps=" STR(E2E_STEPS) " log_every=0 save_every=0 "   \
    "sample.every=0 opt_g.warmup=0 codec.kind=vae codec.vae.config=configs/models/tiny_vae.yaml "                 \
    "codec.vae.init_seed=13 teacher.config=configs/models/tiny_unet.yaml teacher.weights= "                       \
    "teacher.init_seed=" STR(TEACHER_SEED) " student.config=configs/models/tiny_unet.yaml "                       \
    "'teacher.overrides=[" UNET_OV1 ", " UNET_OV2 "]' 'student.overrides=[" UNET_OV1 ", " UNET_OV2 "]'"

/* Runs one ADD configuration; checks finite losses on every step; returns the generator's
 * gradient norms (E2E_STEPS) and the student's max |change| from init (or -1). */
static double e2e_run(const char *name, const char *extra, const char *init, double *gnorm) {
    char a[4096], p[600], log[64];
    snprintf(a, sizeof a, E2E_ARGS " %s --run-dir %s/%s", tmp, extra, tmp, name);
    snprintf(log, sizeof log, "%s.log", name);
    int rc = run(a, log);
    CHECK(rc == 0, "%s: addc train failed (%d): see %s/%s", name, rc, tmp, log);
    if (rc != 0) return -1;
    double lg[8], ld[8], dist[8];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", tmp, name);
    int ng = test_jsonl_values(p, "loss_g", lg, 8), nd = test_jsonl_values(p, "loss_d", ld, 8);
    int nn = test_jsonl_values(p, "gnorm_g", gnorm, 8), ndist = test_jsonl_values(p, "distill", dist, 8);
    CHECK(ng == E2E_STEPS && nd == E2E_STEPS && nn == E2E_STEPS && ndist == E2E_STEPS,
          "%s: %d loss_g, %d loss_d, %d gnorm_g, %d distill lines, want %d", name, ng, nd, nn, ndist, E2E_STEPS);
    for (int i = 0; i < ng && i < nd && i < nn && i < ndist; i++) {
        printf("  %s step %d: loss_g %.6f distill %.6f loss_d %.6f gnorm_g %.6g\n", name, i + 1, lg[i], dist[i], ld[i],
               gnorm[i]);
        CHECK(isfinite(lg[i]) && isfinite(ld[i]) && isfinite(gnorm[i]) && dist[i] > 0 && isfinite(dist[i]),
              "%s step %d: non-finite loss or gradient norm", name, i + 1);
    }
    snprintf(p, sizeof p, "%s/%s/student.safetensors", tmp, name);
    int nt = 0;
    double moved = max_abs_diff(p, init, &nt);
    printf("  %s: student vs its initialisation: max |diff| %.4g over %d tensors\n", name, moved, nt);
    CHECK(nt > 100 && moved >= 0 && isfinite(moved), "%s: the student's weights do not compare with the init", name);
    return moved;
}

static void test_end_to_end(void) {
    if (!test_addc_locate(addc, sizeof addc)) return;
    snprintf(tmp, sizeof tmp, "/tmp/addc_test_train_vae_%d", (int)getpid());
    char fm[300], init[600];
    snprintf(fm, sizeof fm, "%s/fm", tmp);
    FmnistOptions fo = {.out_dir = fm, .limit = 64, .per_shard = 32, .train = true};
    FmnistResult fr;
    CHECK_OK(shards_fmnist(&fo, &fr));

    /* the student's initialisation: the teacher's fresh weights (student_init teacher) */
    Model m;
    memset(&m, 0, sizeof m);
    const char *ov[] = {UNET_OV1, UNET_OV2};
    snprintf(init, sizeof init, "%s/init.safetensors", tmp);
    if (model_load(&m, "configs/models/tiny_unet.yaml", ov, 2, false, TEACHER_SEED))
        CHECK_OK(weights_save(&m.params, init, DTYPE_F32, NULL));
    model_free(&m);

    double gn[3][8];
    for (int r = 0; r < 3; r++)
        for (int i = 0; i < 8; i++) gn[r][i] = NAN;
    printf("addc train, mode add, codec.kind=vae (tiny_vae.yaml):\n");
    double moved_full = e2e_run("full", "", init, gn[0]);
    double moved_distill = e2e_run("distill", "adv_weight=0", init, gn[1]);
    double moved_none = e2e_run("none", "adv_weight=0 loss.distill.lambda=0", init, gn[2]);
    CHECK(moved_full > 1e-6, "full objective: the student did not move (%g)", moved_full);
    CHECK(moved_distill > 1e-6, "distillation only (through the decoder): the student did not move (%g)",
          moved_distill);
    CHECK(moved_none == 0, "no loss: the student moved (%g): the rebuilt initialisation is not the run's",
          moved_none);
    for (int i = 0; i < E2E_STEPS; i++) {
        CHECK(gn[0][i] > 0, "full objective step %d: generator gradient norm %g", i + 1, gn[0][i]);
        CHECK(gn[1][i] > 0, "distillation only step %d: generator gradient norm %g", i + 1, gn[1][i]);
        CHECK(gn[2][i] == 0, "no loss step %d: generator gradient norm %g", i + 1, gn[2][i]);
    }
    if (test_failed == 0) {
        snprintf(cmdbuf, sizeof cmdbuf, "rm -rf %s", tmp);
        if (system(cmdbuf) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    }
}

int main(void) {
    test_gradient();
    if (access(FMNIST_DEFAULT_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0) {
        printf("test_train_vae: end-to-end part skipped (no Fashion-MNIST in " FMNIST_DEFAULT_DIR ")\n");
        int rc = test_main_end("train_vae");
        return rc ? rc : 77;
    }
    test_end_to_end();
    return test_main_end("train_vae");
}
