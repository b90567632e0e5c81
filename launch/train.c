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
 * the run directory in rundir.c, checkpoints in train_ckpt.c.
 *
 * Ranks: `mpirun -np N addc train ...` shards every network (train_setup.h); rank 0 writes the run
 * directory's files, every rank its slabs of a checkpoint. Work is never lost: checkpoints every
 * checkpoint.every steps, on SIGUSR1 (at the next step, then training goes on), on SIGTERM (then
 * the run exits with TRAIN_EXIT_PREEMPTED) and at the end; a signal seen by any rank is agreed by
 * all at the next step. --resume auto (the default) continues from the newest complete checkpoint
 * of the run directory. A step whose loss or gradient is not finite is skipped and counted;
 * guard.max_nonfinite in a row stop the run, leaving the last checkpoint as it was. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <math.h>
#include <signal.h>

#include "core/cuda.h"
#include "core/ops.h"
#include "distributed/checkpoint.h"
#include "launch/cli.h"
#include "launch/train_ckpt.h"
#include "launch/rundir.h"
#include "launch/train_grid.h"
#include "launch/train_setup.h"
#include "losses/adversarial.h"
#include "losses/distill.h"
#include "losses/draw.h"
#include "losses/metrics.h"

#define TRAIN_MAX_FILES 16
#define TRAIN_EXIT_PREEMPTED 75 /* SIGTERM: checkpoint saved, resubmit to continue (EX_TEMPFAIL) */
#define TRAIN_MAX_OVERRIDES 64

typedef struct StepMetrics {
    double loss_g, adv_g, distill, loss_d, hinge, r1, r1_term; /* ADD */
    double loss;                                              /* diffusion, classify */
    double accuracy;                                          /* classify: of the batch, before the update */
    double gnorm_g, gnorm_d, lr_g, lr_d;                      /* global */
    int skipped;                                              /* updates skipped: non-finite loss or gradient */
    long long comm_bytes;                                     /* bytes this rank sent in collectives this step */
} StepMetrics;
#define STEP_METRICS_MEAN 8 /* the first 8 fields are per-rank means, averaged over ranks for the log */

/* The guard's test hook: steps inject_nan_at .. + inject_nan_count - 1 (1-based) get a NaN loss. */
static Var *maybe_poison(Ctx *c, const Trainer *t, Var *loss) {
    const TrainGuardConfig *gd = &t->cfg.guard;
    int64_t s = t->step + 1;
    if (!loss || gd->inject_nan_at == 0 || s < gd->inject_nan_at || s >= gd->inject_nan_at + gd->inject_nan_count)
        return loss;
    return op_scale(c, loss, NAN, 0);
}

/* After the backward of a loss with value `loss` (this rank's): the gradients reduced over ranks, then
 * one update unless the loss or the gradient is not finite anywhere (agreed: the norm is global and
 * a NaN on one rank reaches every shard; the loss is all-reduced). Returns whether it updated. */
static Status update(Trainer *t, Optimizer *o, double loss, double *lr, double *gnorm, bool *done) {
    TRY(optimizer_grads_reduce(o));
    if (t->world > 1) TRY(comm_allreduce(t->comm, &loss, &loss, 1, COMM_F64, COMM_SUM, "loss check"));
    *lr = optimizer_lr(o);
    *gnorm = optimizer_grad_norm(o);
    *done = isfinite(loss) && isfinite(*gnorm);
    if (*done) TRY(optimizer_step(o, *gnorm));
    else optimizer_zero_grad(o);
    return ADDC_OK;
}

static double scalar(Var *v) { return var_scalar(v); }

/* A value without its history: the stop-gradient sg(x). */
static Var *stop_gradient(Ctx *c, Var *x) { return x ? var_leaf(c, x->v, false) : NULL; }

/* The UNets compute in cfg.compute (bf16 on a GPU: fp32 masters cast by the layers, the output cast back
 * to f32 by unet_pred); everything else of the step in f32. The copy shares c's arena and tape. */
static Ctx unet_ctx(const Trainer *t, const Ctx *c) {
    Ctx u = *c;
    u.compute = (DType)t->cfg.compute;
    return u;
}

/* Student: x_theta = x0 prediction from z_s = alpha_s z0 + sigma_s eps. */
static Var *student_x0(Ctx *c, Trainer *t, Var *z_s, const int64_t *s, const TrainCond *cond) {
    Ctx u = unet_ctx(t, c);
    Var *pred = unet_pred(&u, t->student, z_s, s, cond);
    return diffusion_x0_from_pred(c, &t->schedule, t->cfg.loss.prediction, z_s, pred, s);
}

/* Teacher (no tape): x_psi from z_t = alpha_t sg(x_theta) + sigma_t eps', with classifier-free
 * guidance when distill.cfg_scale != 1; for NFSD the noise-free target (latent space). */
static Var *teacher_x0(Ctx *c, Trainer *t, Var *x_sg, Var *eps_t, const int64_t *tt, const TrainCond *cond,
                       const TrainCond *uncond) {
    const DistillConfig *d = &t->cfg.loss.distill;
    int32_t p = t->cfg.loss.prediction;
    Var *z_t = diffusion_noise_add(c, &t->schedule, x_sg, eps_t, tt);
    Ctx u = unet_ctx(t, c);
    Var *eps_c = diffusion_eps_from_pred(c, &t->schedule, p, z_t, unet_pred(&u, t->teacher, z_t, tt, cond), tt);
    Var *eps_u = NULL;
    if (uncond) eps_u = diffusion_eps_from_pred(c, &t->schedule, p, z_t, unet_pred(&u, t->teacher, z_t, tt, uncond), tt);
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
    Ctx g = ctx_make(&t->arena, &t->tape, t->device); /* taped: student, decode, features, heads */
    Ctx n = ctx_make(&t->arena, NULL, t->device);     /* no tape: frozen encoders, teacher */
    const AddLossConfig *L = &t->cfg.loss;
    const int64_t B = t->batch.B;
    const int K = disc_head_count(t);
    DrawKey key = {(uint64_t)t->cfg.seed, (uint32_t)t->step, trainer_first_index(t)};
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
    comm_set_phase(t->comm, "student forward");
    Var *x_student = student_x0(&g, t, z_s, s, &cond);

    /* 4. teacher forward on the re-noised student sample */
    comm_set_phase(t->comm, "teacher forward");
    TRY(draw_timesteps_range(&key, DRAW_T_TEACHER, B, L->timesteps.teacher_min, L->timesteps.teacher_max, tt));
    Var *eps_t = draw_noise(&n, &key, RNG_PURPOSE_TEACHER_NOISE, 0, z0->v.ndim, z0->v.shape);
    Var *x_teacher = teacher_x0(&n, t, stop_gradient(&n, x_student), eps_t, tt, &cond, guided ? &uncond : NULL);

    /* 5. decode (the student's taped: the generator's gradient flows through the decoder) */
    Var *img_student = latent_decode(&g, &t->codec, x_student);
    bool pixel = L->distill.space == DISTILL_SPACE_PIXEL && L->distill.weighting != DISTILL_WEIGHTING_NFSD;
    Var *img_teacher = pixel ? latent_decode(&n, &t->codec, x_teacher) : NULL;

    /* 6. generator losses: distillation, adversarial through features and heads */
    comm_set_phase(t->comm, "generator losses (features, heads)");
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
    l_g = maybe_poison(&g, t, l_g);
    if (!l_g) return addc_error_status();

    /* 7. backward and update G */
    comm_set_phase(t->comm, "generator backward and update");
    TRY(tape_backward(&g, l_g));
    bool done;
    TRY(update(t, &t->opt_g, scalar(l_g), &m->lr_g, &m->gnorm_g, &done));
    if (done) TRY(trainer_ema_update(t));
    m->skipped += !done;

    /* 8. discriminator: real features (R1 needs their gradient), stop-gradient fake features */
    comm_set_phase(t->comm, "discriminator forward and R1");
    optimizer_zero_grad(&t->opt_d); /* the generator's backward passed through the heads */
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
    comm_set_phase(t->comm, "discriminator backward and update");
    TRY(tape_backward(&g, l_d));
    TRY(update(t, &t->opt_d, scalar(l_d), &m->lr_d, &m->gnorm_d, &done));
    m->skipped += !done;

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
    Ctx g = ctx_make(&t->arena, &t->tape, t->device);
    Ctx n = ctx_make(&t->arena, NULL, t->device);
    const AddLossConfig *L = &t->cfg.loss;
    const int64_t B = t->batch.B;
    DrawKey key = {(uint64_t)t->cfg.seed, (uint32_t)t->step, trainer_first_index(t)};
    int64_t tt[B];

    Var *z0 = latent_encode(&n, &t->codec, batch_images(&n, &t->batch));
    if (!z0) return addc_error_status();
    TrainCond cond;
    TRY(text_condition(&n, t, t->cfg.text.drop_prob, false, &cond));
    TRY(draw_timesteps_range(&key, DRAW_T_DIFFUSION, B, L->diffusion.t_min, L->diffusion.t_max, tt));
    Var *eps = draw_noise(&n, &key, RNG_PURPOSE_NOISE, 0, z0->v.ndim, z0->v.shape);
    Var *z_t = diffusion_noise_add(&n, &t->schedule, z0, eps, tt);
    comm_set_phase(t->comm, "diffusion forward");
    Ctx u = unet_ctx(t, &g);
    Var *pred = unet_pred(&u, t->student, z_t, tt, &cond);
    Var *loss = diffusion_loss(&g, &t->schedule, L->prediction, L->diffusion.min_snr_gamma, pred, z0, eps, tt);
    loss = maybe_poison(&g, t, loss);
    if (!loss) return addc_error_status();

    comm_set_phase(t->comm, "diffusion backward and update");
    TRY(tape_backward(&g, loss));
    bool done;
    TRY(update(t, &t->opt_g, scalar(loss), &m->lr_g, &m->gnorm_g, &done));
    if (done) TRY(trainer_ema_update(t));
    m->skipped += !done;
    m->loss = scalar(loss);
    return ADDC_OK;
}

/* Classify mode: cross-entropy of the student's logits against the batch's labels. */
static Status classify_step(Trainer *t, StepMetrics *m) {
    Ctx g = ctx_make(&t->arena, &t->tape, t->device);
    Var *features, *logits;
    TRY(model_classify(&g, t->student, batch_images(&g, &t->batch), &features, &logits));
    Var *loss = maybe_poison(&g, t, op_cross_entropy(&g, logits, t->batch.labels));
    if (!loss) return addc_error_status();

    TRY(tape_backward(&g, loss));
    bool done;
    TRY(update(t, &t->opt_g, scalar(loss), &m->lr_g, &m->gnorm_g, &done));
    if (done) TRY(trainer_ema_update(t));
    m->skipped += !done;
    m->loss = scalar(loss);
    int64_t nl = tensor_numel(&logits->v);
    float *lh = malloc((size_t)(nl ? nl : 1) * sizeof(float));
    if (!lh) return addc_error_set(ADDC_ERR_NOMEM, "classify: out of memory");
    Status st = var_download_f32(logits, lh);
    int64_t hits = metrics_argmax_hits(lh, logits->v.shape[0], logits->v.shape[1], t->batch.labels);
    free(lh);
    TRY(st);
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

/* done: steps this process ran (the ETA's rate; a resumed run started later). */
static Status log_step(Trainer *t, RunDir *rd, const StepMetrics *m, double elapsed, int64_t done, double img_s,
                       bool print) {
    char line[1024];
    int32_t mode = t->cfg.mode;
    if (mode == TRAIN_MODE_ADD)
        snprintf(line, sizeof line,
                 "{\"step\": %lld, \"loss_g\": %.9g, \"adv_g\": %.9g, \"distill\": %.9g, \"loss_d\": %.9g, "
                 "\"hinge\": %.9g, \"r1\": %.9g, \"r1_term\": %.9g, \"gnorm_g\": %.9g, \"gnorm_d\": %.9g, "
                 "\"lr_g\": %.9g, \"lr_d\": %.9g, \"skipped\": %d, \"comm_bytes\": %lld, \"img_per_s\": %.4g, "
                 "\"elapsed_s\": %.4g}",
                 (long long)t->step, m->loss_g, m->adv_g, m->distill, m->loss_d, m->hinge, m->r1, m->r1_term,
                 m->gnorm_g, m->gnorm_d, m->lr_g, m->lr_d, m->skipped, m->comm_bytes, img_s, elapsed);
    else if (mode == TRAIN_MODE_CLASSIFY)
        snprintf(line, sizeof line,
                 "{\"step\": %lld, \"loss\": %.9g, \"accuracy\": %.9g, \"gnorm\": %.9g, \"lr\": %.9g, "
                 "\"skipped\": %d, \"comm_bytes\": %lld, \"img_per_s\": %.4g, \"elapsed_s\": %.4g}",
                 (long long)t->step, m->loss, m->accuracy, m->gnorm_g, m->lr_g, m->skipped, m->comm_bytes, img_s,
                 elapsed);
    else
        snprintf(line, sizeof line,
                 "{\"step\": %lld, \"loss\": %.9g, \"gnorm\": %.9g, \"lr\": %.9g, \"skipped\": %d, "
                 "\"comm_bytes\": %lld, \"img_per_s\": %.4g, \"elapsed_s\": %.4g}",
                 (long long)t->step, m->loss, m->gnorm_g, m->lr_g, m->skipped, m->comm_bytes, img_s, elapsed);
    TRY(rundir_metrics_append(rd, line));
    if (!print || t->rank != 0) return ADDC_OK;
    char eta[32];
    format_hms(elapsed / (double)done * (double)(t->cfg.steps - t->step), eta, sizeof eta);
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
    comm_set_phase(t->comm, "sample grid");
    if (t->rank == 0 && mkdir(rundir_file(rd, "samples", p), 0755) != 0 && errno != EEXIST)
        return addc_error_set(ADDC_ERR_IO, "cannot create %s: %s", p, strerror(errno));
    snprintf(f, sizeof f, "samples/step-%07lld.png", (long long)t->step);
    TRY(train_grid_write(t, t->rank == 0 ? rundir_file(rd, f, p) : NULL));
    *secs = cli_now_s() - t0;
    if (t->rank != 0) return ADDC_OK;
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
    if (write_grid(t, rd, secs) != ADDC_OK && t->rank == 0) {
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

/* ---- signals, checkpoints, the guard ---- */

static volatile sig_atomic_t signal_save, signal_term;

static void on_signal(int sig) {
    if (sig == SIGUSR1) signal_save = 1;
    else signal_term = 1;
}

static void signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* The signal flags of every rank, agreed (max) so that all save and stop at the same step. */
static Status signals_agree(Trainer *t, bool *save, bool *term) {
    uint64_t f[2] = {(uint64_t)signal_save, (uint64_t)signal_term};
    if (t->world > 1) TRY(comm_allreduce(t->comm, f, f, 2, COMM_U64, COMM_MAX, "signal flags"));
    *save = f[0] != 0;
    *term = f[1] != 0;
    if (*save) signal_save = 0;
    return ADDC_OK;
}

typedef struct TrainState {
    int64_t nonfinite_run, nonfinite_total;
    char last_ckpt[CKPT_PATH_MAX]; /* newest checkpoint committed or resumed from */
    bool preempted;
} TrainState;

static Status checkpoint_save(Trainer *t, RunDir *rd, TrainState *ts, const char *why) {
    char dir[RUNDIR_PATH_MAX];
    double mb_s = 0, t0 = cli_now_s();
    comm_set_phase(t->comm, "checkpoint save");
    TRY(train_ckpt_save(t, rundir_file(rd, "checkpoints", dir), (int)t->cfg.checkpoint.keep, ts->nonfinite_total,
                        ts->last_ckpt, (int)sizeof ts->last_ckpt, &mb_s));
    comm_set_phase(t->comm, "training");
    if (t->rank == 0) {
        printf("checkpoint %s (%s): %.2f s, %.1f MB/s from rank 0\n", ts->last_ckpt, why, cli_now_s() - t0, mb_s);
        fflush(stdout);
    }
    return ADDC_OK;
}

/* Every rank's step metrics that are per-rank means, averaged over ranks (for the log only). */
static Status metrics_agree(Trainer *t, StepMetrics *m) {
    if (t->world == 1) return ADDC_OK;
    double v[9] = {m->loss_g, m->adv_g, m->distill, m->loss_d, m->hinge, m->r1, m->r1_term, m->loss, m->accuracy};
    TRY(comm_allreduce(t->comm, v, v, 9, COMM_F64, COMM_SUM, "step metrics"));
    double *dst[9] = {&m->loss_g, &m->adv_g, &m->distill, &m->loss_d, &m->hinge, &m->r1, &m->r1_term, &m->loss,
                      &m->accuracy};
    for (int i = 0; i < 9; i++) *dst[i] = v[i] / t->world;
    return ADDC_OK;
}

/* The guard: a step with a skipped update is counted; max_nonfinite in a row stop the run. */
static Status guard_check(Trainer *t, TrainState *ts, const StepMetrics *m) {
    if (!m->skipped) {
        ts->nonfinite_run = 0;
        return ADDC_OK;
    }
    ts->nonfinite_run++;
    ts->nonfinite_total++;
    if (t->rank == 0) {
        fprintf(stderr, "addc train: step %lld: non-finite loss or gradient, update skipped (%lld in a row, %lld in all)\n",
                (long long)t->step, (long long)ts->nonfinite_run, (long long)ts->nonfinite_total);
        fflush(stderr);
    }
    if (ts->nonfinite_run >= t->cfg.guard.max_nonfinite)
        return addc_error_set(ADDC_ERR_INVALID,
                              "stopping at step %lld: %lld steps in a row had a non-finite loss or gradient "
                              "(guard.max_nonfinite %lld); the weights are those of the last good update and the last "
                              "checkpoint (%s) is untouched: lower the learning rate or check the data, then resume",
                              (long long)t->step, (long long)ts->nonfinite_run, (long long)t->cfg.guard.max_nonfinite,
                              ts->last_ckpt[0] ? ts->last_ckpt : "none yet");
    return ADDC_OK;
}

/* The loop; note gets what the closing message adds (classify: the test accuracy). */
static Status train_run(Trainer *t, RunDir *rd, TrainState *ts, char *note, size_t note_cap) {
    const TrainConfig *c = &t->cfg;
    double start = cli_now_s(), last = start, grid_s = 0;
    int64_t last_step = t->step, first_step = t->step, every = c->sample.every;
    StepMetrics m;
    comm_set_phase(t->comm, "training");
    while (t->step < c->steps) {
        arena_reset(&t->arena);
        tape_clear(&t->tape);
        memset(&m, 0, sizeof m);
        TRY(trainer_next_batch(t));
        TRY(train_steps[c->mode](t, &m));
        t->step++;
        TRY(metrics_agree(t, &m));
        m.comm_bytes = (long long)comm_bytes_sent_take(t->comm); /* the step's, with metrics_agree's few bytes */
        double now = cli_now_s();
        bool print = c->log_every > 0 && (t->step % c->log_every == 0 || t->step == c->steps || t->step == first_step + 1);
        double img_s = (double)((t->step - last_step) * c->batch) / (now - last + 1e-12);
        TRY(log_step(t, rd, &m, now - start, t->step - first_step, img_s, print));
        if (print) {
            last = now;
            last_step = t->step;
        }
        TRY(guard_check(t, ts, &m));
        bool save, term;
        TRY(signals_agree(t, &save, &term));
        if (term) {
            TRY(checkpoint_save(t, rd, ts, "SIGTERM"));
            ts->preempted = true;
            return ADDC_OK;
        }
        /* no periodic checkpoint inside a run of skipped steps: the last one stays the last good one */
        bool periodic = c->checkpoint.every > 0 && t->step % c->checkpoint.every == 0 && t->step < c->steps &&
                        ts->nonfinite_run == 0;
        if (save || periodic) TRY(checkpoint_save(t, rd, ts, save ? "SIGUSR1" : "periodic"));
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
    if (c->checkpoint.final) {
        TRY(checkpoint_save(t, rd, ts, "end"));
        TRY(save_student(t, rd, "student.safetensors", false));
        if (t->ema) TRY(save_student(t, rd, "student_ema.safetensors", true));
    }
    if (every > 0) write_grid_or_warn(t, rd, &grid_s); /* after the weights are safe */
    double sumsq = trainer_teacher_sumsq(t);
    char line[1024];
    snprintf(line, sizeof line,
             "{\"final\": true, \"steps\": %lld, \"teacher_sumsq_start\": %.17g, \"teacher_sumsq_end\": %.17g, "
             "\"arena_peak_bytes\": %lld, \"nonfinite_total\": %lld, \"world\": %d",
             (long long)t->step, t->teacher_sumsq, sumsq, (long long)arena_peak(&t->arena),
             (long long)ts->nonfinite_total, t->world);
    if (t->device == DEVICE_CUDA) { /* device memory at its peak: every category's and the step arena's */
        size_t k = strlen(line);
        int64_t peak = arena_peak(&t->darena);
        for (int cat = 0; cat < CUDA_MEM_COUNT; cat++)
            if (cat != CUDA_MEM_ACTIVATIONS) peak += cuda_mem_peak((CudaMemCategory)cat);
        snprintf(line + k, sizeof line - k,
                 ", \"gpu_peak_bytes\": %lld, \"gpu_params_bytes\": %lld, \"gpu_optim_bytes\": %lld, "
                 "\"gpu_step_arena_peak_bytes\": %lld",
                 (long long)peak, (long long)cuda_mem_peak(CUDA_MEM_PARAMS), (long long)cuda_mem_peak(CUDA_MEM_OPTIM),
                 (long long)arena_peak(&t->darena));
    }
    if (t->fsdp_student) {
        FsdpMemory fm = fsdp_memory(t->fsdp_student);
        size_t k = strlen(line);
        snprintf(line + k, sizeof line - k,
                 ", \"student_shard_bytes\": %lld, \"student_resident_peak_bytes\": %lld, \"student_full_bytes\": %lld",
                 (long long)fm.shard_bytes, (long long)fm.resident_peak_bytes,
                 (long long)(t->student->params.numel * 8));
    }
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
            "                  [--run-dir DIR] [--resume auto|none|FILE.h5]\n"
            "\n"
            "Trains on one process or N MPI ranks: ADD distillation of a teacher UNet into a 1-4-step student (--mode add, the\n"
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
            "  checkpoints/step-N.h5       training checkpoints (HDF5: student, EMA, heads, both optimizers' moments,\n"
            "                              step, every data stream's position, the config; launch/train_ckpt.h), every\n"
            "                              checkpoint.every steps, on SIGUSR1, on SIGTERM and at the end; the newest\n"
            "                              checkpoint.keep are kept; `latest` names the newest\n"
            "\n"
            "Ranks: mpirun -np N addc train ... shards every network over N ranks (FSDP, dist.* keys) and splits the\n"
            "global batch; data.streams (default: the world size of the first start) fixes the data order, so the\n"
            "run resumes on any N dividing it with the same samples, noise and timesteps.\n"
            "GPU: device=cuda runs the networks, the step and the optimizer on the GPU (the text encoders stay on\n"
            "the CPU); on N ranks each uses the GPU of its local rank (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID, ...)\n"
            "modulo the GPUs it sees, with NCCL collectives; compute=bf16 runs the UNets in bf16 over fp32 masters,\n"
            "ROLE.checkpointing=true recomputes a network's blocks in backward (same numbers, less memory).\n"
            "\n"
            "  --resume auto     (default) continue from the newest complete checkpoint in RUN/checkpoints, if any\n"
            "                    (a corrupt newest one is skipped with a message); run the same command again after a\n"
            "                    preemption\n"
            "  --resume none     start fresh even if checkpoints exist\n"
            "  --resume FILE.h5  continue from that checkpoint\n"
            "Signals: SIGUSR1 saves a checkpoint at the next step and goes on; SIGTERM saves one and exits with code\n"
            "%d. A step whose loss or gradient is NaN/Inf is skipped and counted (metrics \"skipped\");\n"
            "guard.max_nonfinite in a row stop the run with an error, the last checkpoint untouched. A collective\n"
            "that waits longer than dist.timeout seconds ends the job naming the ranks missing from it.\n",
            TRAIN_EXIT_PREEMPTED);
}

static const char *base_name(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    snprintf(out, cap, "%s", b ? b + 1 : path);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = 0;
    return out;
}

/* The run directory: rank 0 creates it (default name from its clock), the others attach to it. */
static Status run_dir_open(Comm *comm, RunDir *rd, const char *dir, const char *name, int argc, char **argv) {
    char path[sizeof rd->path] = {0};
    Status st = ADDC_OK;
    if (comm_rank(comm) == 0) {
        st = rundir_open(rd, dir, name, argc, argv);
        snprintf(path, sizeof path, "%s", rd->path);
    }
    uint64_t ok = st == ADDC_OK;
    TRY(comm_allreduce(comm, &ok, &ok, 1, COMM_U64, COMM_MIN, "run directory"));
    if (!ok) return st != ADDC_OK ? st : addc_error_set(ADDC_ERR_IO, "rank 0 could not open the run directory");
    _Static_assert(sizeof path % 8 == 0, "path broadcast as u64 words");
    TRY(comm_broadcast(comm, path, (int64_t)(sizeof path / 8), COMM_U64, 0, "run directory"));
    if (comm_rank(comm) != 0) rundir_attach(rd, path);
    return ADDC_OK;
}

/* The checkpoint to resume from: --resume none, auto (the run directory's newest complete one, if
 * any) or a file. *cf NULL: a fresh run. */
static Status resume_open(Comm *comm, const char *resume, const RunDir *rd, CkptFile **cf) {
    *cf = NULL;
    if (!strcmp(resume, "none")) return ADDC_OK;
    if (strcmp(resume, "auto")) return ckpt_open_path(comm, resume, cf);
    char dir[RUNDIR_PATH_MAX];
    bool found = false;
    TRY(ckpt_open_latest(comm, rundir_file(rd, "checkpoints", dir), cf, &found));
    if (!found) *cf = NULL;
    return ADDC_OK;
}

int cmd_train(int argc, char **argv) {
    const char *files[TRAIN_MAX_FILES], *overrides[TRAIN_MAX_OVERRIDES], *run_dir = NULL, *resume = "auto";
    char mode_override[64];
    int32_t nf = 0, no = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            train_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--mode") || !strcmp(a, "--run-dir") || !strcmp(a, "--resume")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "addc train: %s needs a value\n", a);
                return 2;
            }
            if (!strcmp(a, "--run-dir")) {
                run_dir = argv[++i];
            } else if (!strcmp(a, "--resume")) {
                resume = argv[++i];
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
    Comm *comm;
    if (comm_world(&comm) != ADDC_OK) return cli_fail("train: MPI");
    TrainConfig *cfg = calloc(1, sizeof *cfg);
    Trainer *t = calloc(1, sizeof *t);
    TrainState *ts = calloc(1, sizeof *ts);
    if (!cfg || !t || !ts) {
        fprintf(stderr, "addc train: out of memory\n");
        return 1;
    }
    int rc = 0;
    RunDir rd = {0};
    CkptFile *cf = NULL;
    char name[256], p[RUNDIR_PATH_MAX];
    bool built = false;
    int rank = comm_rank(comm);
    if (train_config_load(cfg, files, nf, overrides, no) != ADDC_OK) {
        rc = cli_fail("train: config");
        goto out;
    }
    comm_set_timeout(comm, cfg->dist.timeout);
    comm_set_phase(comm, "setup");
    if (run_dir_open(comm, &rd, run_dir, base_name(files[0], name, sizeof name), argc + 1, argv - 1) != ADDC_OK) {
        rc = cli_fail("train: run directory");
        goto out;
    }
    if (resume_open(comm, resume, &rd, &cf) != ADDC_OK) {
        rc = cli_fail("train: --resume");
        goto out;
    }
    if (cfg->data.streams == 0) { /* fixed at the first start: the checkpoint's, else this world size */
        int64_t s = comm_size(comm);
        if (cf && train_ckpt_streams(cf, &s) != ADDC_OK) {
            rc = cli_fail("train: --resume");
            goto out;
        }
        cfg->data.streams = s;
    }
    built = true;
    if (trainer_init(t, cfg, comm, cf == NULL) != ADDC_OK) {
        rc = cli_fail("train: setup");
        goto out;
    }
    if (cf) {
        comm_set_phase(comm, "checkpoint load");
        double t0 = cli_now_s();
        if (train_ckpt_load(t, cf, &ts->nonfinite_total) != ADDC_OK) {
            rc = cli_fail("train: --resume");
            goto out;
        }
        snprintf(ts->last_ckpt, sizeof ts->last_ckpt, "%s", ckpt_path(cf));
        double secs = cli_now_s() - t0;
        if (rank == 0)
            printf("addc train: resumed from %s at step %lld (%.2f s, %.1f MB/s read by rank 0)\n", ts->last_ckpt,
                   (long long)t->step, secs, (double)ckpt_bytes(cf) / 1e6 / (secs + 1e-9));
        ckpt_close(cf);
        cf = NULL;
    }
    if (rank == 0 && config_write(&train_config_schema, &t->cfg, rundir_file(&rd, "config.yaml", p)) != ADDC_OK) {
        rc = cli_fail("train: run directory");
        goto out;
    }
    if (rank == 0) {
        printf("addc train: %s, %lld steps of batch %lld on %d rank%s (data.streams %lld), student %lld parameters; "
               "run directory %s\n",
               train_mode_names[cfg->mode], (long long)cfg->steps, (long long)cfg->batch, t->world,
               t->world > 1 ? "s" : "", (long long)t->cfg.data.streams, (long long)t->student->params.numel, rd.path);
        fflush(stdout);
    }
    signals_install();
    char note[1024];
    if (train_run(t, &rd, ts, note, sizeof note) != ADDC_OK) {
        rc = cli_fail("train");
    } else if (ts->preempted) {
        if (rank == 0)
            printf("addc train: SIGTERM: stopped at step %lld after checkpoint %s; the same command resumes (exit %d)\n",
                   (long long)t->step, ts->last_ckpt, TRAIN_EXIT_PREEMPTED);
        rc = TRAIN_EXIT_PREEMPTED;
    } else if (rank == 0) {
        printf("addc train: done; %s%sstudent weights in %s/student.safetensors\n", note, note[0] ? "; " : "", rd.path);
    }
out:
    fflush(stdout);
    /* a failed rank must not leave the others waiting in a collective */
    if (rc != 0 && rc != TRAIN_EXIT_PREEMPTED && comm_size(comm) > 1) comm_abort(comm, rc);
    if (cf) ckpt_close(cf);
    rundir_close(&rd);
    if (built) trainer_free(t);
    free(t);
    free(cfg);
    free(ts);
    comm_finalize();
    return rc;
}
