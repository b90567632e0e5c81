/* launch/train: `addc train CONFIG... [k=v ...] [--mode add|diffusion|classify] [--run-dir DIR]`.
 *
 * The ADD training step (ADD.md "Training step") reads top to bottom in add_step: encode the
 * real images, draw s and noise, student forward (taped), teacher forward (no tape) on the
 * re-noised student sample, decode both, distillation and adversarial generator losses,
 * backward and update G; then the discriminator on real and (stop-gradient) fake features,
 * hinge + R1, backward and update D. diffusion_step is plain diffusion training of a teacher
 * with the same pieces; classify_step trains a classifier (the discriminator's feature network,
 * the evaluation network) on labelled images, then measures its test accuracy. Networks,
 * batches, conditioning and the optimizer are in train_setup.c, sample grids in train_grid.c,
 * the run directory in rundir.c. One process (the distributed issue adds ranks). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/ops.h"
#include "launch/cli.h"
#include "launch/rundir.h"
#include "launch/train_grid.h"
#include "launch/train_setup.h"
#include "losses/adversarial.h"
#include "losses/distill.h"
#include "losses/draw.h"
#include "losses/metrics.h"

#define TRAIN_MAX_FILES 16
#define TRAIN_MAX_OVERRIDES 64

typedef struct StepMetrics {
    double loss_g, adv_g, distill, loss_d, hinge, r1, r1_term; /* ADD */
    double loss;                                              /* diffusion, classify */
    double accuracy;                                          /* classify: of the batch, before the update */
    double gnorm_g, gnorm_d, lr_g, lr_d;
} StepMetrics;

static double scalar(Var *v) { return ((const float *)v->v.data)[0]; }

/* A value without its history: the stop-gradient sg(x). */
static Var *stop_gradient(Ctx *c, Var *x) { return x ? var_leaf(c, x->v, false) : NULL; }

/* Student: x_theta = x0 prediction from z_s = alpha_s z0 + sigma_s eps. */
static Var *student_x0(Ctx *c, Trainer *t, Var *z_s, const int64_t *s, const TrainCond *cond) {
    Var *pred = unet_pred(c, t->student, z_s, s, cond);
    return diffusion_x0_from_pred(c, &t->schedule, t->cfg.loss.prediction, z_s, pred, s);
}

/* Teacher (no tape): x_psi from z_t = alpha_t sg(x_theta) + sigma_t eps', with classifier-free
 * guidance when distill.cfg_scale != 1; for NFSD the noise-free target (latent space). */
static Var *teacher_x0(Ctx *c, Trainer *t, Var *x_sg, Var *eps_t, const int64_t *tt, const TrainCond *cond,
                       const TrainCond *uncond) {
    const DistillConfig *d = &t->cfg.loss.distill;
    int32_t p = t->cfg.loss.prediction;
    Var *z_t = diffusion_noise_add(c, &t->schedule, x_sg, eps_t, tt);
    Var *eps_c = diffusion_eps_from_pred(c, &t->schedule, p, z_t, unet_pred(c, t->teacher, z_t, tt, cond), tt);
    Var *eps_u = NULL;
    if (uncond) eps_u = diffusion_eps_from_pred(c, &t->schedule, p, z_t, unet_pred(c, t->teacher, z_t, tt, uncond), tt);
    if (d->weighting == DISTILL_WEIGHTING_NFSD)
        return distill_nfsd_target(c, &t->schedule, d, x_sg, eps_u, eps_c, NULL, tt);
    return diffusion_x0_from_eps(c, &t->schedule, z_t, distill_cfg_combine(c, eps_u, eps_c, d->cfg_scale), tt);
}

/* R1 of the configured kind on the real features (leaves that require grad); NULL for none. */
static Var *r1_penalty(Ctx *c, Trainer *t, Var *const *real_feat, Var *const *real_logits, Var *cond,
                       const DrawKey *key) {
    const AdvConfig *a = &t->cfg.loss.adv;
    int K = disc_head_count(t);
    if (a->r1 == R1_EXACT) return adv_r1_exact(c, real_logits, real_feat, K, a);
    if (a->r1 != R1_APPROX) return NULL;
    Var *pert[DISC_MAX_HEADS], *pert_logits[DISC_MAX_HEADS];
    for (int k = 0; k < K; k++) pert[k] = adv_features_perturb(c, real_feat[k], a->r1_approx_sigma, key, k);
    if (disc_logits(c, t, pert, cond, false, pert_logits) != ADDC_OK) return NULL;
    return adv_r1_approx(c, real_logits, pert_logits, K, a->head_reduce);
}

static Status add_step(Trainer *t, StepMetrics *m) {
    Ctx g = ctx_make(&t->arena, &t->tape, DEVICE_CPU); /* taped: student, decode, features, heads */
    Ctx n = ctx_make(&t->arena, NULL, DEVICE_CPU);     /* no tape: frozen encoders, teacher */
    const AddLossConfig *L = &t->cfg.loss;
    const int64_t B = t->batch.B;
    const int K = disc_head_count(t);
    DrawKey key = {(uint64_t)t->cfg.seed, (uint32_t)t->step, (uint64_t)(t->step * B)};
    int64_t s[B], tt[B];

    /* 1. encode the real images; text conditioning */
    Var *x0 = batch_images(&n, &t->batch);
    Var *z0 = latent_encode(&n, &t->codec, x0);
    if (!z0) return addc_error_status();
    TrainCond cond, uncond;
    TRY(text_condition(&n, t, 0, false, &cond));
    bool guided = L->distill.cfg_scale != 1 || L->distill.weighting == DISTILL_WEIGHTING_NFSD;
    if (guided) TRY(text_condition(&n, t, 0, true, &uncond));

    /* 2. student timestep s and noise */
    TRY(draw_timesteps_set(&key, DRAW_T_STUDENT, B, L->timesteps.student, L->timesteps.n_student, s));
    Var *eps = draw_noise(&n, &key, RNG_PURPOSE_NOISE, 0, z0->v.ndim, z0->v.shape);
    Var *z_s = diffusion_noise_add(&n, &t->schedule, z0, eps, s);

    /* 3. student forward */
    Var *x_student = student_x0(&g, t, z_s, s, &cond);

    /* 4. teacher forward on the re-noised student sample */
    TRY(draw_timesteps_range(&key, DRAW_T_TEACHER, B, L->timesteps.teacher_min, L->timesteps.teacher_max, tt));
    Var *eps_t = draw_noise(&n, &key, RNG_PURPOSE_TEACHER_NOISE, 0, z0->v.ndim, z0->v.shape);
    Var *x_teacher = teacher_x0(&n, t, stop_gradient(&n, x_student), eps_t, tt, &cond, guided ? &uncond : NULL);

    /* 5. decode (the student's taped: the generator's gradient flows through the decoder) */
    Var *img_student = latent_decode(&g, &t->codec, x_student);
    bool pixel = L->distill.space == DISTILL_SPACE_PIXEL && L->distill.weighting != DISTILL_WEIGHTING_NFSD;
    Var *img_teacher = pixel ? latent_decode(&n, &t->codec, x_teacher) : NULL;

    /* 6. generator losses: distillation, adversarial through features and heads */
    Var *l_distill = pixel ? distill_loss(&g, &t->schedule, &L->distill, img_student, img_teacher, tt)
                           : distill_loss(&g, &t->schedule, &L->distill, x_student, x_teacher, tt);
    if (!l_distill) return addc_error_status();
    Var *feat_fake[DISC_MAX_HEADS], *logit_fake[DISC_MAX_HEADS];
    TRY(disc_features(&g, t, img_student, feat_fake));
    Var *c_disc = disc_condition(&n, t, &cond, x0);
    if (!c_disc && t->heads->net.disc.cfg.c_dim > 0) return addc_error_status();
    TRY(disc_logits(&g, t, feat_fake, c_disc, true, logit_fake)); /* the step's one power iteration */
    Var *l_adv = adv_generator_loss(&g, logit_fake, K, L->adv.head_reduce);
    Var *l_g = adv_generator_total(&g, &L->distill, op_scale(&g, l_adv, t->cfg.adv_weight, 0), l_distill);
    if (!l_g) return addc_error_status();

    /* 7. backward and update G */
    TRY(tape_backward(&g, l_g));
    m->lr_g = optimizer_lr(&t->opt_g);
    m->gnorm_g = optimizer_step(&t->opt_g);
    trainer_ema_update(t);

    /* 8. discriminator: real features (R1 needs their gradient), stop-gradient fake features */
    param_store_zero_grad(&t->heads->params); /* the generator's backward passed through the heads */
    Var *feat_real[DISC_MAX_HEADS], *logit_real[DISC_MAX_HEADS], *logit_sg[DISC_MAX_HEADS];
    TRY(disc_features(&n, t, x0, feat_real));
    for (int k = 0; k < K; k++) {
        feat_real[k] = var_leaf(&g, feat_real[k]->v, true);
        feat_fake[k] = stop_gradient(&g, feat_fake[k]);
    }
    TRY(disc_logits(&g, t, feat_real, c_disc, false, logit_real));
    TRY(disc_logits(&g, t, feat_fake, c_disc, false, logit_sg));
    Var *hinge = adv_disc_hinge_loss(&g, logit_real, logit_sg, K, L->adv.head_reduce);
    Var *r1 = r1_penalty(&g, t, feat_real, logit_real, c_disc, &key);
    if (L->adv.r1 != R1_NONE && !r1) return addc_error_status();
    Var *l_d = adv_disc_loss(&g, &L->adv, hinge, r1);
    if (!l_d) return addc_error_status();

    /* 9. backward and update D */
    TRY(tape_backward(&g, l_d));
    m->lr_d = optimizer_lr(&t->opt_d);
    m->gnorm_d = optimizer_step(&t->opt_d);

    m->loss_g = scalar(l_g);
    m->adv_g = scalar(l_adv);
    m->distill = scalar(l_distill);
    m->loss_d = scalar(l_d);
    m->hinge = scalar(hinge);
    m->r1 = r1 ? scalar(r1) : 0;
    m->r1_term = m->r1 * (L->adv.r1 == R1_NONE ? 0 : adv_r1_weight(&L->adv));
    return ADDC_OK;
}

static Status diffusion_step(Trainer *t, StepMetrics *m) {
    Ctx g = ctx_make(&t->arena, &t->tape, DEVICE_CPU);
    Ctx n = ctx_make(&t->arena, NULL, DEVICE_CPU);
    const AddLossConfig *L = &t->cfg.loss;
    const int64_t B = t->batch.B;
    DrawKey key = {(uint64_t)t->cfg.seed, (uint32_t)t->step, (uint64_t)(t->step * B)};
    int64_t tt[B];

    Var *z0 = latent_encode(&n, &t->codec, batch_images(&n, &t->batch));
    if (!z0) return addc_error_status();
    TrainCond cond;
    TRY(text_condition(&n, t, t->cfg.text.drop_prob, false, &cond));
    TRY(draw_timesteps_range(&key, DRAW_T_DIFFUSION, B, L->diffusion.t_min, L->diffusion.t_max, tt));
    Var *eps = draw_noise(&n, &key, RNG_PURPOSE_NOISE, 0, z0->v.ndim, z0->v.shape);
    Var *z_t = diffusion_noise_add(&n, &t->schedule, z0, eps, tt);
    Var *pred = unet_pred(&g, t->student, z_t, tt, &cond);
    Var *loss = diffusion_loss(&g, &t->schedule, L->prediction, L->diffusion.min_snr_gamma, pred, z0, eps, tt);
    if (!loss) return addc_error_status();

    TRY(tape_backward(&g, loss));
    m->lr_g = optimizer_lr(&t->opt_g);
    m->gnorm_g = optimizer_step(&t->opt_g);
    trainer_ema_update(t);
    m->loss = scalar(loss);
    return ADDC_OK;
}

/* Classify mode: cross-entropy of the student's logits against the batch's labels. */
static Status classify_step(Trainer *t, StepMetrics *m) {
    Ctx g = ctx_make(&t->arena, &t->tape, DEVICE_CPU);
    Var *features, *logits;
    TRY(model_classify(&g, t->student, batch_images(&g, &t->batch), &features, &logits));
    Var *loss = op_cross_entropy(&g, logits, t->batch.labels);
    if (!loss) return addc_error_status();

    TRY(tape_backward(&g, loss));
    m->lr_g = optimizer_lr(&t->opt_g);
    m->gnorm_g = optimizer_step(&t->opt_g);
    trainer_ema_update(t);
    m->loss = scalar(loss);
    int64_t hits = metrics_argmax_hits(logits->v.data, logits->v.shape[0], logits->v.shape[1], t->batch.labels);
    m->accuracy = (double)hits / (double)t->batch.B;
    return ADDC_OK;
}

typedef Status (*TrainStepFn)(Trainer *t, StepMetrics *m);
static const TrainStepFn train_steps[TRAIN_MODE_COUNT] = {add_step, diffusion_step, classify_step};

/* ---- the loop ---- */

static void format_hms(double s, char *out, size_t cap) {
    long v = s > 0 ? (long)(s + 0.5) : 0;
    snprintf(out, cap, "%ld:%02ld:%02ld", v / 3600, v / 60 % 60, v % 60);
}

static Status log_step(Trainer *t, RunDir *rd, const StepMetrics *m, double elapsed, double img_s, bool print) {
    char line[1024];
    int32_t mode = t->cfg.mode;
    if (mode == TRAIN_MODE_ADD)
        snprintf(line, sizeof line,
                 "{\"step\": %lld, \"loss_g\": %.9g, \"adv_g\": %.9g, \"distill\": %.9g, \"loss_d\": %.9g, "
                 "\"hinge\": %.9g, \"r1\": %.9g, \"r1_term\": %.9g, \"gnorm_g\": %.9g, \"gnorm_d\": %.9g, "
                 "\"lr_g\": %.9g, \"lr_d\": %.9g, \"img_per_s\": %.4g, \"elapsed_s\": %.4g}",
                 (long long)t->step, m->loss_g, m->adv_g, m->distill, m->loss_d, m->hinge, m->r1, m->r1_term,
                 m->gnorm_g, m->gnorm_d, m->lr_g, m->lr_d, img_s, elapsed);
    else if (mode == TRAIN_MODE_CLASSIFY)
        snprintf(line, sizeof line,
                 "{\"step\": %lld, \"loss\": %.9g, \"accuracy\": %.9g, \"gnorm\": %.9g, \"lr\": %.9g, "
                 "\"img_per_s\": %.4g, \"elapsed_s\": %.4g}",
                 (long long)t->step, m->loss, m->accuracy, m->gnorm_g, m->lr_g, img_s, elapsed);
    else
        snprintf(line, sizeof line,
                 "{\"step\": %lld, \"loss\": %.9g, \"gnorm\": %.9g, \"lr\": %.9g, \"img_per_s\": %.4g, "
                 "\"elapsed_s\": %.4g}",
                 (long long)t->step, m->loss, m->gnorm_g, m->lr_g, img_s, elapsed);
    TRY(rundir_metrics_append(rd, line));
    if (!print) return ADDC_OK;
    char eta[32];
    format_hms(elapsed / (double)t->step * (double)(t->cfg.steps - t->step), eta, sizeof eta);
    if (mode == TRAIN_MODE_ADD)
        printf("step %6lld/%lld | G %.4f (adv %.4f distill %.4f) | D %.4f (hinge %.4f r1 %.3g) | lr %.2e/%.2e | "
               "gnorm %.3g/%.3g | %.1f img/s | ETA %s\n",
               (long long)t->step, (long long)t->cfg.steps, m->loss_g, m->adv_g, m->distill, m->loss_d, m->hinge,
               m->r1_term, m->lr_g, m->lr_d, m->gnorm_g, m->gnorm_d, img_s, eta);
    else if (mode == TRAIN_MODE_CLASSIFY)
        printf("step %6lld/%lld | loss %.5f | acc %.3f | lr %.2e | gnorm %.3g | %.1f img/s | ETA %s\n",
               (long long)t->step, (long long)t->cfg.steps, m->loss, m->accuracy, m->lr_g, m->gnorm_g, img_s, eta);
    else
        printf("step %6lld/%lld | loss %.5f | lr %.2e | gnorm %.3g | %.1f img/s | ETA %s\n", (long long)t->step,
               (long long)t->cfg.steps, m->loss, m->lr_g, m->gnorm_g, img_s, eta);
    fflush(stdout);
    return ADDC_OK;
}

static Status save_student(Trainer *t, RunDir *rd, const char *file, bool ema) {
    char p[RUNDIR_PATH_MAX];
    return trainer_save_student(t, rundir_file(rd, file, p), ema);
}

/* RUN/samples/step-NNNNNNN.png; *secs: the time it took (left out of the run's img/s and ETA). */
static Status write_grid(Trainer *t, RunDir *rd, double *secs) {
    char f[64], p[RUNDIR_PATH_MAX];
    double t0 = cli_now_s();
    if (mkdir(rundir_file(rd, "samples", p), 0755) != 0 && errno != EEXIST)
        return addc_error_set(ADDC_ERR_IO, "cannot create %s: %s", p, strerror(errno));
    snprintf(f, sizeof f, "samples/step-%07lld.png", (long long)t->step);
    TRY(train_grid_write(t, rundir_file(rd, f, p)));
    *secs = cli_now_s() - t0;
    int64_t H, W;
    train_grid_size(&t->cfg, &H, &W);
    printf("sample grid %s: %lld x %lld px, %d prompts x %d blocks of %lld images, %.1f s\n", p, (long long)W,
           (long long)H, (int)t->cfg.sample.n_prompts, (int)train_grid_blocks(&t->cfg),
           (long long)t->cfg.sample.per_prompt, *secs);
    fflush(stdout);
    return ADDC_OK;
}

/* A sample grid is a view of training, not part of it: a failed one (disk full, say) is reported
 * and training goes on. */
static void write_grid_or_warn(Trainer *t, RunDir *rd, double *secs) {
    *secs = 0;
    if (write_grid(t, rd, secs) != ADDC_OK) {
        fprintf(stderr, "addc train: warning: sample grid at step %lld not written: %s; training goes on\n",
                (long long)t->step, addc_error_message());
        fflush(stderr);
        addc_error_clear();
    }
}

/* Classify mode with eval.shards: the test accuracy of the student (and its EMA) into the final
 * metrics line (json, appended to) and the closing message (note). */
static Status test_accuracy(Trainer *t, char *json, size_t json_cap, char *note, size_t note_cap) {
    int64_t right[2] = {0, 0}, n[2] = {0, 0};
    TRY(trainer_test_accuracy(t, &right[0], &n[0]));
    if (t->ema) {
        trainer_ema_swap(t);
        Status st = trainer_test_accuracy(t, &right[1], &n[1]);
        trainer_ema_swap(t);
        TRY(st);
    }
    if (n[0] == 0)
        return addc_error_set(ADDC_ERR_INVALID, "eval.shards %s: no test image was read", t->cfg.eval.shards);
    double acc = (double)right[0] / (double)n[0], acc_ema = (double)right[1] / (double)(n[1] ? n[1] : 1);
    size_t k = strlen(json);
    snprintf(json + k, json_cap - k, ", \"test_accuracy\": %.9g, \"test_images\": %lld", acc, (long long)n[0]);
    k = strlen(json);
    if (t->ema) snprintf(json + k, json_cap - k, ", \"test_accuracy_ema\": %.9g", acc_ema);
    k = (size_t)snprintf(note, note_cap, "test accuracy %.2f%% (%lld of %lld images of %s)", 100 * acc,
                         (long long)right[0], (long long)n[0], t->cfg.eval.shards);
    if (t->ema && k < note_cap) snprintf(note + k, note_cap - k, ", EMA %.2f%%", 100 * acc_ema);
    return ADDC_OK;
}

/* The loop; note gets what the closing message adds (classify: the test accuracy). */
static Status train_run(Trainer *t, RunDir *rd, char *note, size_t note_cap) {
    const TrainConfig *c = &t->cfg;
    double start = cli_now_s(), last = start, grid_s = 0;
    int64_t last_step = 0, every = c->sample.every;
    StepMetrics m;
    while (t->step < c->steps) {
        arena_reset(&t->arena);
        tape_clear(&t->tape);
        memset(&m, 0, sizeof m);
        TRY(trainer_next_batch(t));
        TRY(train_steps[c->mode](t, &m));
        t->step++;
        double now = cli_now_s();
        bool print = c->log_every > 0 && (t->step % c->log_every == 0 || t->step == c->steps || t->step == 1);
        double img_s = (double)((t->step - last_step) * c->batch) / (now - last + 1e-12);
        TRY(log_step(t, rd, &m, now - start, img_s, print));
        if (print) {
            last = now;
            last_step = t->step;
        }
        if (c->save_every > 0 && t->step % c->save_every == 0 && t->step < c->steps) {
            char f[64];
            snprintf(f, sizeof f, "student-step-%07lld.safetensors", (long long)t->step);
            TRY(save_student(t, rd, f, false));
            if (t->ema) {
                snprintf(f, sizeof f, "student_ema-step-%07lld.safetensors", (long long)t->step);
                TRY(save_student(t, rd, f, true));
            }
        }
        if (every > 0 && t->step % every == 0 && t->step < c->steps) {
            write_grid_or_warn(t, rd, &grid_s);
            start += grid_s;
            last += grid_s;
        }
    }
    TRY(save_student(t, rd, "student.safetensors", false));
    if (t->ema) TRY(save_student(t, rd, "student_ema.safetensors", true));
    if (every > 0) write_grid_or_warn(t, rd, &grid_s); /* after the weights are safe */
    char line[512];
    snprintf(line, sizeof line,
             "{\"final\": true, \"steps\": %lld, \"teacher_sumsq_start\": %.17g, \"teacher_sumsq_end\": %.17g, "
             "\"arena_peak_bytes\": %lld",
             (long long)t->step, t->teacher_sumsq, trainer_teacher_sumsq(t), (long long)arena_peak(&t->arena));
    note[0] = 0;
    if (c->mode == TRAIN_MODE_CLASSIFY && c->eval.shards[0])
        TRY(test_accuracy(t, line, sizeof line - 2, note, note_cap));
    strcat(line, "}");
    return rundir_metrics_append(rd, line);
}

/* ---- command line ---- */

static void train_usage(FILE *f) {
    fprintf(f,
            "usage: addc train CONFIG.yaml [CONFIG2.yaml ...] [key.path=value ...] [--mode add|diffusion|classify]\n"
            "                  [--run-dir DIR]\n"
            "\n"
            "Trains in one process: ADD distillation of a teacher UNet into a 1-4-step student (--mode add, the\n"
            "default), plain diffusion training of a teacher (--mode diffusion: epsilon or v prediction, the same\n"
            "code), or a classifier on labelled images (--mode classify: the student is a DINOv2 or convnet model\n"
            "with num_labels = classes, trained with cross-entropy on the json number data.label_field of each\n"
            "sample; no codec, text encoder, teacher or heads, text.source must be none). Config files merge in\n"
            "order, then key.path=value overrides (e.g. opt_g.lr=1e-4, loss.distill.lambda=0); unknown keys are\n"
            "refused with a did-you-mean. Recipes: configs/train/.\n"
            "\n"
            "Text conditioning (text.source): none; encoder: the CLIP tokenizer and a frozen text.encoder, with\n"
            "text.encoder2 for SDXL's two (CLIP-L + bigG: hidden states concatenated, the second's pooled vector);\n"
            "embeddings: rows precomputed once by `addc embed CONFIG.yaml --from-shards --out FILE` with the same\n"
            "encoders (text.embeddings=FILE; bit-identical training, every caption met must have a row).\n"
            "\n"
            "The run directory (--run-dir, default runs/<first config's name>-<date-time>) gets:\n"
            "  config.yaml                 the merged config, every default written out (addc train reads it back)\n"
            "  command.txt                 this command line\n"
            "  metrics.jsonl               one JSON object per step (losses, lr, grad norms, img/s; classify: loss\n"
            "                              and batch accuracy), a final summary (classify with eval.shards:\n"
            "                              test_accuracy, test_accuracy_ema over those shards read once in order, or\n"
            "                              their first eval.real_max images)\n"
            "  student-step-N.safetensors  the student every save_every steps (diffusers layout), and\n"
            "  student_ema-step-N.safetensors its EMA with ema_decay > 0\n"
            "  student.safetensors         the student at the end; student_ema.safetensors with ema_decay > 0\n"
            "  samples/step-N.png          with sample.every > 0, every `every` steps and at the end: a grid with one\n"
            "                              row per sample.prompts entry and blocks of sample.per_prompt images: add\n"
            "                              mode the student with the ADD sampler at each sample.student_steps, then\n"
            "                              the teacher with sample.teacher_sampler at teacher_steps (teacher_cfg);\n"
            "                              diffusion mode the student (its EMA if any) with the teacher sampler. The\n"
            "                              noise is keyed by sample.seed, so grids of different steps compare; grids\n"
            "                              do not change the training (same metrics with and without them)\n"
            "A progress line (step, losses, lr, grad norm, img/s, ETA) is printed every log_every steps, a line for\n"
            "each sample grid, and the test accuracy (classify) in the closing line.\n"
            "\n"
            "Not in this build yet: HDF5 checkpoints with optimizer state and exact resume (--resume) come with\n"
            "the distributed issue, as do multiple ranks.\n");
}

static const char *base_name(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    snprintf(out, cap, "%s", b ? b + 1 : path);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
    return out;
}

int cmd_train(int argc, char **argv) {
    const char *files[TRAIN_MAX_FILES], *overrides[TRAIN_MAX_OVERRIDES], *run_dir = NULL;
    char mode_override[64];
    int32_t nf = 0, no = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            train_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--mode") || !strcmp(a, "--run-dir")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "addc train: %s needs a value\n", a);
                return 2;
            }
            if (!strcmp(a, "--run-dir")) {
                run_dir = argv[++i];
            } else {
                snprintf(mode_override, sizeof mode_override, "mode=%s", argv[++i]);
                if (no < TRAIN_MAX_OVERRIDES) overrides[no++] = mode_override;
            }
        } else if (a[0] == '-') {
            fprintf(stderr, "addc train: unknown option '%s' (see addc train --help)\n", a);
            return 2;
        } else if (strchr(a, '=')) {
            if (no == TRAIN_MAX_OVERRIDES) {
                fprintf(stderr, "addc train: more than %d overrides\n", TRAIN_MAX_OVERRIDES);
                return 2;
            }
            overrides[no++] = a;
        } else {
            if (nf == TRAIN_MAX_FILES) {
                fprintf(stderr, "addc train: more than %d config files\n", TRAIN_MAX_FILES);
                return 2;
            }
            files[nf++] = a;
        }
    }
    if (nf == 0) {
        train_usage(stderr);
        return 2;
    }
    TrainConfig *cfg = calloc(1, sizeof *cfg);
    Trainer *t = calloc(1, sizeof *t);
    if (!cfg || !t) {
        fprintf(stderr, "addc train: out of memory\n");
        return 1;
    }
    int rc = 0;
    RunDir rd = {0};
    char name[256], p[RUNDIR_PATH_MAX];
    if (train_config_load(cfg, files, nf, overrides, no) != ADDC_OK) {
        rc = cli_fail("train: config");
        free(cfg);
        free(t);
        return rc;
    }
    if (trainer_init(t, cfg) != ADDC_OK) {
        rc = cli_fail("train: setup");
    } else if (rundir_open(&rd, run_dir, base_name(files[0], name, sizeof name), argc + 1, argv - 1) != ADDC_OK ||
               config_write(&train_config_schema, &t->cfg, rundir_file(&rd, "config.yaml", p)) != ADDC_OK) {
        rc = cli_fail("train: run directory");
    } else {
        printf("addc train: %s, %lld steps of batch %lld, student %lld parameters; run directory %s\n",
               train_mode_names[cfg->mode], (long long)cfg->steps, (long long)cfg->batch,
               (long long)t->student->params.numel, rd.path);
        fflush(stdout);
        char note[1024];
        if (train_run(t, &rd, note, sizeof note) != ADDC_OK) rc = cli_fail("train");
        else printf("addc train: done; %s%sstudent weights in %s/student.safetensors\n", note, note[0] ? "; " : "",
                    rd.path);
    }
    rundir_close(&rd);
    trainer_free(t);
    free(t);
    free(cfg);
    return rc;
}
