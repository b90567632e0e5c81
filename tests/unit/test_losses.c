/* tests/unit/test_losses: the foundations of the ADD objective (losses/diffusion, losses/draw,
 * losses/add_config).
 *
 * - schedules against diffusers (fixture losses/schedule.bin, tests/ref/make_losses_fixture.py):
 *   scaled_linear and linear alphas_cumprod against diffusers' float32 tables and the float64
 *   formulas, ADD.md's alphabar_999 = 0.0046600985 and alphabar_499 = 0.27766965, zero terminal
 *   SNR against rescale_zero_terminal_snr (DDPMScheduler's exact 0, EulerDiscreteScheduler's 2^-24);
 * - conversions against DDPMScheduler.add_noise / get_velocity / step(...).pred_original_sample
 *   (epsilon and v), round trips x0 <-> eps <-> v, the refusal at alpha = 0, and every conversion's
 *   gradient against finite differences of a float64 formula (check_op);
 * - draws: timesteps in their set / range and about uniform; noise, timesteps and R1 noise for
 *   global sample i identical in one batch of 8 and in two batches of 4 (world-size freedom),
 *   and different across purposes, steps and seeds;
 * - the config: defaults as ADD.md, YAML and overrides, refusals, the written YAML reads back. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "losses/add_config.h"
#include "losses/diffusion.h"
#include "losses/draw.h"
#include "tests/test_util.h"

static const FixTensor *fx(const Fixture *f, const char *name) {
    const FixTensor *t = fixture_get(f, name);
    CHECK(t != NULL, "fixture has no tensor '%s'", name);
    return t;
}

static NoiseSchedule sched_make(int32_t kind, double b0, double b1, bool zsnr, double terminal) {
    ScheduleConfig sc = {.kind = kind, .num_train_timesteps = 1000, .beta_start = b0, .beta_end = b1,
                         .zero_terminal_snr = zsnr, .terminal_alpha_bar = terminal};
    NoiseSchedule s;
    Status st = noise_schedule_init(&s, &sc);
    CHECK_OK(st);
    return s;
}

/* max over t of |mine - want| / max(|want|, floor) */
static double table_err(const NoiseSchedule *s, const FixTensor *ft, int64_t n, double floor) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(s->alpha_bar[i] - (double)ft->data[i]) / fmax(fabs((double)ft->data[i]), floor);
        if (d > e) e = d;
    }
    return e;
}

static void test_schedule(const Fixture *f) {
    NoiseSchedule sl = sched_make(SCHEDULE_SCALED_LINEAR, 0.00085, 0.012, false, 0);
    double e999 = fabs(sl.alpha_bar[999] / 0.0046600985 - 1), e499 = fabs(sl.alpha_bar[499] / 0.27766965 - 1);
    printf("  scaled_linear: alphabar_999 %.10g (ADD.md 0.0046600985), alphabar_499 %.10g (0.27766965)\n",
           sl.alpha_bar[999], sl.alpha_bar[499]);
    CHECK(e999 < 2e-8 && e499 < 2e-8, "ADD.md values: rel err %.3g, %.3g", e999, e499);
    CHECK(fabs(noise_schedule_alpha(&sl, 999) - sqrt(0.0046600985)) < 1e-8 &&
              fabs(noise_schedule_sigma(&sl, 999) - sqrt(1 - 0.0046600985)) < 1e-8,
          "alpha_999, sigma_999");
    CHECK(fabs(noise_schedule_snr(&sl, 499) - 0.27766965 / (1 - 0.27766965)) < 1e-7, "snr_499");

    NoiseSchedule zs = sched_make(SCHEDULE_SCALED_LINEAR, 0.00085, 0.012, true, 0x1p-24);
    NoiseSchedule z0 = sched_make(SCHEDULE_SCALED_LINEAR, 0.00085, 0.012, true, 0.0);
    NoiseSchedule li = sched_make(SCHEDULE_LINEAR, 1e-4, 0.02, false, 0);
    const FixTensor *t_sl = fx(f, "sl/ddpm"), *t_sl64 = fx(f, "sl/f64"), *t_z = fx(f, "zsnr/ddpm"),
                    *t_ze = fx(f, "zsnr/euler"), *t_z64 = fx(f, "zsnr/f64"), *t_li = fx(f, "lin/ddpm"),
                    *t_li64 = fx(f, "lin/f64");
    if (!t_sl || !t_sl64 || !t_z || !t_ze || !t_z64 || !t_li || !t_li64) return;
    double e_sl = table_err(&sl, t_sl, 1000, 0), e_sl64 = table_err(&sl, t_sl64, 1000, 0);
    double e_li = table_err(&li, t_li, 1000, 0), e_li64 = table_err(&li, t_li64, 1000, 0);
    /* zero terminal SNR: relative to the value below t = 999; diffusers' float32 tail loses digits to
     * the cancellation sqrt(alphabar) - sqrt(alphabar_999), so it is compared absolutely */
    double e_z64 = table_err(&zs, t_z64, 999, 0), e_z = 0, e_ze = 0;
    for (int i = 0; i < 999; i++) {
        e_z = fmax(e_z, fabs(z0.alpha_bar[i] - t_z->data[i]));
        e_ze = fmax(e_ze, fabs(zs.alpha_bar[i] - t_ze->data[i]));
    }
    printf("  scaled_linear vs diffusers f32 %.2e rel, vs f64 formula %.2e rel; linear %.2e / %.2e\n", e_sl, e_sl64,
           e_li, e_li64);
    printf("  zero terminal SNR vs f64 rescale %.2e rel (t < 999); vs DDPM f32 %.2e abs, Euler f32 %.2e abs; "
           "alphabar_999 %g (DDPM %g), %g (Euler %g)\n",
           e_z64, e_z, e_ze, z0.alpha_bar[999], t_z->data[999], zs.alpha_bar[999], t_ze->data[999]);
    CHECK(e_sl < 2e-6 && e_li < 2e-6, "against diffusers' float32 tables: %.3g, %.3g", e_sl, e_li);
    CHECK(e_sl64 < 1e-7 && e_li64 < 1e-7, "against the float64 formulas: %.3g, %.3g", e_sl64, e_li64);
    CHECK(e_z64 < 1e-6, "zero terminal SNR against float64 rescale_zero_terminal_snr: %.3g", e_z64);
    CHECK(e_z < 2e-6 && e_ze < 2e-6, "zero terminal SNR against diffusers' float32 tables: %.3g, %.3g", e_z, e_ze);
    CHECK(z0.alpha_bar[999] == 0 && t_z->data[999] == 0, "DDPM's zero-SNR alphabar_999 is exactly 0");
    CHECK(zs.alpha_bar[999] == (double)t_ze->data[999], "Euler's alphabar_999 2^-24: %g vs %g", zs.alpha_bar[999],
          t_ze->data[999]);
    CHECK(fabs(zs.alpha_bar[0] - sl.alpha_bar[0]) < 1e-15, "the rescale keeps alphabar_0");

    ScheduleConfig bad = {.kind = SCHEDULE_SCALED_LINEAR, .num_train_timesteps = 1000, .beta_start = 0.02,
                          .beta_end = 0.01};
    NoiseSchedule s;
    CHECK(noise_schedule_init(&s, &bad) != ADDC_OK, "beta_start > beta_end refused");
    addc_error_clear();
    bad.beta_start = 0.001;
    bad.num_train_timesteps = SCHEDULE_MAX_T + 1;
    CHECK(noise_schedule_init(&s, &bad) != ADDC_OK, "T beyond SCHEDULE_MAX_T refused");
    addc_error_clear();
}

/* ---- conversions ---- */

static Var *fix_var(TestCtx *t, const FixTensor *ft, bool rg) {
    return ft ? tvar_from(t, ft->data, rg, ft->ndim, ft->shape) : NULL;
}

static double cmp_fix(const char *label, const Var *got, const FixTensor *want, double tol) {
    CHECK(got && want && tensor_numel(&got->v) == want->numel, "%s: nothing to compare (%s)", label,
          addc_error_message());
    if (!got || !want || tensor_numel(&got->v) != want->numel) return INFINITY;
    double e = compare_f32(label, got->v.data, want->data, want->numel, tol, 1e-6);
    CHECK(e <= tol, "%s: max rel err %.3g > %.1g", label, e, tol);
    return e;
}

static void test_conversions_diffusers(const Fixture *f) {
    NoiseSchedule s = sched_make(SCHEDULE_SCALED_LINEAR, 0.00085, 0.012, false, 0);
    TestCtx t;
    tctx_init(&t);
    const FixTensor *ft = fx(f, "conv/t");
    if (!ft) return;
    int64_t tt[4];
    for (int b = 0; b < 4; b++) tt[b] = (int64_t)ft->data[b];
    Var *x0 = fix_var(&t, fx(f, "conv/x0"), false), *n = fix_var(&t, fx(f, "conv/noise"), false);
    Var *z = fix_var(&t, fx(f, "conv/sample"), false), *mo = fix_var(&t, fx(f, "conv/model_output"), false);
    double e[4];
    e[0] = cmp_fix("add_noise", diffusion_noise_add(&t.nt, &s, x0, n, tt), fx(f, "conv/add_noise"), 2e-6);
    e[1] = cmp_fix("get_velocity", diffusion_v_from_x0_eps(&t.nt, &s, x0, n, tt), fx(f, "conv/velocity"), 2e-6);
    e[2] = cmp_fix("x0 from eps", diffusion_x0_from_pred(&t.nt, &s, PREDICTION_EPSILON, z, mo, tt),
                   fx(f, "conv/x0_eps"), 2e-6);
    e[3] = cmp_fix("x0 from v", diffusion_x0_from_pred(&t.nt, &s, PREDICTION_V, z, mo, tt), fx(f, "conv/x0_v"), 2e-6);
    printf("  vs diffusers (t = 999, 749, 499, 0): add_noise %.2e, get_velocity %.2e, x0 from eps %.2e, x0 from v "
           "%.2e\n",
           e[0], e[1], e[2], e[3]);
    tctx_free(&t);
}

static void test_round_trips(void) {
    NoiseSchedule s = sched_make(SCHEDULE_SCALED_LINEAR, 0.00085, 0.012, false, 0);
    TestCtx t;
    tctx_init(&t);
    TestRng r = {3};
    int64_t shape[4] = {6, 4, 4, 3}, tt[6] = {999, 749, 499, 249, 1, 0};
    Var *x0 = tvar_rand(&t, &r, false, -1, 1, 4, shape), *eps = tvar_rand(&t, &r, false, -3, 3, 4, shape);
    Ctx *c = &t.nt;
    Var *z = diffusion_noise_add(c, &s, x0, eps, tt);
    Var *v = diffusion_v_from_x0_eps(c, &s, x0, eps, tt);
    int64_t n = tensor_numel(&x0->v);
    double e1 = compare_f32("x0 <- (z, eps)", diffusion_x0_from_eps(c, &s, z, eps, tt)->v.data, x0->v.data, n, 1e-4, 1);
    double e2 = compare_f32("eps <- (z, x0)", diffusion_eps_from_x0(c, &s, z, x0, tt)->v.data, eps->v.data, n, 1e-4, 1);
    double e3 = compare_f32("x0 <- (z, v)", diffusion_x0_from_v(c, &s, z, v, tt)->v.data, x0->v.data, n, 1e-4, 1);
    double e4 = compare_f32("eps <- (z, v)", diffusion_eps_from_v(c, &s, z, v, tt)->v.data, eps->v.data, n, 1e-4, 1);
    Var *eps_v = diffusion_eps_from_pred(c, &s, PREDICTION_V, z, v, tt);
    double e5 = compare_f32("eps_from_pred(v)", eps_v->v.data, eps->v.data, n, 1e-4, 1);
    printf("  round trips (t = 999 .. 0): x0<-eps %.2e, eps<-x0 %.2e, x0<-v %.2e, eps<-v %.2e, eps_from_pred %.2e\n", e1,
           e2, e3, e4, e5);
    CHECK(e1 < 1e-5 && e2 < 1e-4 && e3 < 1e-5 && e4 < 1e-5 && e5 < 1e-5, "round trips");
    CHECK(diffusion_eps_from_pred(c, &s, PREDICTION_EPSILON, z, eps, tt) == eps, "eps_from_pred(epsilon) is the input");

    /* zero terminal SNR with alphabar_999 = 0: eps models cannot give x0 there; v models can */
    NoiseSchedule z0 = sched_make(SCHEDULE_SCALED_LINEAR, 0.00085, 0.012, true, 0.0);
    Var *zz = diffusion_noise_add(c, &z0, x0, eps, tt);
    Var *bad = diffusion_x0_from_eps(c, &z0, zz, eps, tt);
    CHECK(bad == NULL && strstr(addc_error_message(), "divides by zero"), "x0 from eps at alpha 0 refused: '%s'",
          addc_error_message());
    addc_error_clear();
    Var *vz = diffusion_v_from_x0_eps(c, &z0, x0, eps, tt);
    double e6 = compare_f32("x0 <- (z, v) at zero SNR", diffusion_x0_from_v(c, &z0, zz, vz, tt)->v.data, x0->v.data, n,
                            1e-5, 1);
    CHECK(e6 < 1e-5, "x0 from v at zero terminal SNR: %.3g", e6);
    /* at alphabar 0 the sample is pure noise: z = eps */
    double e7 = compare_f32("z at zero SNR", (float *)zz->v.data, (float *)eps->v.data, 48, 0, 1);
    CHECK(e7 == 0, "z_999 = eps under zero terminal SNR (%.3g)", e7);
    int64_t t_bad[6] = {999, 749, 499, 249, 1, 1000};
    CHECK(diffusion_noise_add(c, &s, x0, eps, t_bad) == NULL, "t = 1000 refused");
    addc_error_clear();
    tctx_free(&t);
}

typedef struct {
    const NoiseSchedule *s;
    int kind; /* 0 add_noise, 1 x0<-eps, 2 eps<-x0, 3 v, 4 x0<-v, 5 eps<-v */
    int64_t t[4];
    int64_t per;
} ConvCase;

static Var *build_conv(Ctx *c, Var **in, void *u) {
    ConvCase *cc = u;
    switch (cc->kind) {
    case 0: return diffusion_noise_add(c, cc->s, in[0], in[1], cc->t);
    case 1: return diffusion_x0_from_eps(c, cc->s, in[0], in[1], cc->t);
    case 2: return diffusion_eps_from_x0(c, cc->s, in[0], in[1], cc->t);
    case 3: return diffusion_v_from_x0_eps(c, cc->s, in[0], in[1], cc->t);
    case 4: return diffusion_x0_from_v(c, cc->s, in[0], in[1], cc->t);
    default: return diffusion_eps_from_v(c, cc->s, in[0], in[1], cc->t);
    }
}

static void ref_conv(double *const *in, double *out, void *u) {
    ConvCase *cc = u;
    for (int b = 0; b < 4; b++) {
        double ab = cc->s->alpha_bar[cc->t[b]], al = sqrt(ab), sg = sqrt(1 - ab);
        for (int64_t i = 0; i < cc->per; i++) {
            double x = in[0][b * cc->per + i], y = in[1][b * cc->per + i], o;
            switch (cc->kind) {
            case 0: o = al * x + sg * y; break;
            case 1: o = (x - sg * y) / al; break;
            case 2: o = (x - al * y) / sg; break;
            case 3: o = al * y - sg * x; break;
            case 4: o = al * x - sg * y; break;
            default: o = sg * x + al * y; break;
            }
            out[b * cc->per + i] = o;
        }
    }
}

static void test_conversion_grads(void) {
    NoiseSchedule s = sched_make(SCHEDULE_SCALED_LINEAR, 0.00085, 0.012, false, 0);
    static const char *const names[6] = {"noise_add",   "x0_from_eps", "eps_from_x0",
                                         "v_from_x0_eps", "x0_from_v",   "eps_from_v"};
    for (int k = 0; k < 6; k++) {
        ConvCase cc = {.s = &s, .kind = k, .t = {999, 600, 37, 0}, .per = 3 * 2 * 2};
        OpCheck oc = {.name = names[k], .n_in = 2, .build = build_conv, .ref = ref_conv, .user = &cc,
                      .max_fd = -1, .seed = 100 + (uint64_t)k};
        for (int i = 0; i < 2; i++) {
            oc.ndim[i] = 4;
            int64_t sh[4] = {4, 3, 2, 2};
            memcpy(oc.shape[i], sh, sizeof sh);
        }
        check_op(&oc);
    }
}

/* ---- draws ---- */

static void test_draws(void) {
    int64_t set[4] = {999, 749, 499, 249};
    enum { NS = 4000 };
    static int64_t ts[NS], tt[NS];
    DrawKey k = {.seed = 42, .step = 7, .first_index = 0};
    CHECK_OK(draw_timesteps_set(&k, DRAW_T_STUDENT, NS, set, 4, ts));
    CHECK_OK(draw_timesteps_range(&k, DRAW_T_TEACHER, NS, 1, 999, tt));
    int cnt[4] = {0}, bad = 0, lo_hit = 0, hi_hit = 0, same = 0;
    double mean_t = 0;
    for (int i = 0; i < NS; i++) {
        int j = 0;
        while (j < 4 && set[j] != ts[i]) j++;
        if (j == 4) bad++;
        else cnt[j]++;
        if (tt[i] < 1 || tt[i] > 999) bad++;
        mean_t += (double)tt[i] / NS;
    }
    int64_t small[NS];
    CHECK_OK(draw_timesteps_range(&k, DRAW_T_DIFFUSION, NS, 0, 3, small));
    for (int i = 0; i < NS; i++) {
        lo_hit += small[i] == 0;
        hi_hit += small[i] == 3;
        same += ts[i] == set[(small[i])];
    }
    printf("  student t counts %d %d %d %d of %d; teacher mean t %.1f (uniform 1..999: 500); range [0, 3] ends hit %d, "
           "%d\n",
           cnt[0], cnt[1], cnt[2], cnt[3], NS, mean_t, lo_hit, hi_hit);
    CHECK(bad == 0, "%d draws outside their set or range", bad);
    for (int j = 0; j < 4; j++) CHECK(abs(cnt[j] - NS / 4) < NS / 4 / 6, "student timestep %lld drawn %d times", (long long)set[j], cnt[j]);
    CHECK(fabs(mean_t - 500) < 20, "teacher timesteps mean %.1f", mean_t);
    CHECK(abs(lo_hit - NS / 4) < NS / 24 && abs(hi_hit - NS / 4) < NS / 24, "range ends drawn %d, %d", lo_hit, hi_hit);
    CHECK(abs(same - NS / 4) < NS / 12, "student and diffusion draws are independent (%d agreements)", same);

    /* world-size freedom: one batch of 8 against two batches of 4 */
    TestCtx t;
    tctx_init(&t);
    int64_t s8[4] = {8, 4, 4, 3}, s4[4] = {4, 4, 4, 3};
    DrawKey k8 = {.seed = 1234, .step = 99, .first_index = 16};
    DrawKey ka = k8, kb = k8;
    kb.first_index += 4;
    const RngPurpose purposes[2] = {RNG_PURPOSE_NOISE, RNG_PURPOSE_TEACHER_NOISE};
    for (int p = 0; p < 2; p++) {
        Var *n8 = draw_noise(&t.nt, &k8, purposes[p], 0, 4, s8);
        Var *na = draw_noise(&t.nt, &ka, purposes[p], 0, 4, s4), *nb = draw_noise(&t.nt, &kb, purposes[p], 0, 4, s4);
        int64_t half = tensor_numel(&na->v) * 4;
        CHECK(memcmp(n8->v.data, na->v.data, (size_t)half) == 0 &&
                  memcmp((char *)n8->v.data + half, nb->v.data, (size_t)half) == 0,
              "purpose %d: noise of a batch of 8 differs from two batches of 4", (int)purposes[p]);
        double m = 0, v = 0;
        int64_t n = tensor_numel(&n8->v);
        for (int64_t i = 0; i < n; i++) m += ((float *)n8->v.data)[i] / (double)n;
        for (int64_t i = 0; i < n; i++) v += pow(((float *)n8->v.data)[i] - m, 2) / (double)n;
        printf("  purpose %d: batch of 8 == 2 x 4 bit for bit; mean %.3f var %.3f over %lld values\n", (int)purposes[p],
               m, v, (long long)n);
        CHECK(fabs(m) < 0.1 && fabs(v - 1) < 0.15, "noise statistics mean %.3f var %.3f", m, v);
    }
    int64_t t8[8], ta[4], tb[4];
    CHECK_OK(draw_timesteps_set(&k8, DRAW_T_STUDENT, 8, set, 4, t8));
    CHECK_OK(draw_timesteps_set(&ka, DRAW_T_STUDENT, 4, set, 4, ta));
    CHECK_OK(draw_timesteps_set(&kb, DRAW_T_STUDENT, 4, set, 4, tb));
    CHECK(memcmp(t8, ta, sizeof ta) == 0 && memcmp(t8 + 4, tb, sizeof tb) == 0, "student timesteps: 8 vs 2 x 4");
    CHECK_OK(draw_timesteps_range(&k8, DRAW_T_TEACHER, 8, 1, 999, t8));
    CHECK_OK(draw_timesteps_range(&ka, DRAW_T_TEACHER, 4, 1, 999, ta));
    CHECK_OK(draw_timesteps_range(&kb, DRAW_T_TEACHER, 4, 1, 999, tb));
    CHECK(memcmp(t8, ta, sizeof ta) == 0 && memcmp(t8 + 4, tb, sizeof tb) == 0, "teacher timesteps: 8 vs 2 x 4");

    /* different purposes, steps, seeds and offsets give different noise */
    Var *base = draw_noise(&t.nt, &k8, RNG_PURPOSE_NOISE, 0, 4, s8);
    Var *tea = draw_noise(&t.nt, &k8, RNG_PURPOSE_TEACHER_NOISE, 0, 4, s8);
    DrawKey kstep = k8, kseed = k8;
    kstep.step++;
    kseed.seed++;
    Var *nstep = draw_noise(&t.nt, &kstep, RNG_PURPOSE_NOISE, 0, 4, s8);
    Var *nseed = draw_noise(&t.nt, &kseed, RNG_PURPOSE_NOISE, 0, 4, s8);
    Var *nr1 = draw_noise(&t.nt, &k8, RNG_PURPOSE_NOISE, DRAW_R1_NOISE_OFFSET, 4, s8);
    size_t nb8 = (size_t)tensor_nbytes(&base->v);
    CHECK(memcmp(base->v.data, tea->v.data, nb8) && memcmp(base->v.data, nstep->v.data, nb8) &&
              memcmp(base->v.data, nseed->v.data, nb8) && memcmp(base->v.data, nr1->v.data, nb8),
          "purpose, step, seed and offset each change the noise");
    CHECK(draw_noise(&t.nt, &k8, RNG_PURPOSE_NOISE, RNG_ELEMENT_LIMIT - 10, 4, s8) == NULL, "stream overrun refused");
    addc_error_clear();
    CHECK(draw_timesteps_range(&k8, DRAW_T_TEACHER, 8, 5, 4, t8) != ADDC_OK, "empty range refused");
    addc_error_clear();
    tctx_free(&t);
}

/* ---- config ---- */

static void test_config(void) {
    AddLossConfig d;
    CHECK_OK(add_loss_config_default(&d));
    CHECK_OK(add_loss_config_check(&d));
    CHECK(d.schedule.kind == SCHEDULE_SCALED_LINEAR && d.schedule.num_train_timesteps == 1000 &&
              d.schedule.beta_start == 0.00085 && d.schedule.beta_end == 0.012 && !d.schedule.zero_terminal_snr &&
              d.schedule.terminal_alpha_bar == 0x1p-24,
          "schedule defaults");
    CHECK(d.prediction == PREDICTION_EPSILON, "prediction default epsilon");
    CHECK(d.timesteps.n_student == 4 && d.timesteps.student[0] == 999 && d.timesteps.student[1] == 749 &&
              d.timesteps.student[2] == 499 && d.timesteps.student[3] == 249 && d.timesteps.teacher_min == 1 &&
              d.timesteps.teacher_max == 999,
          "timestep defaults");
    CHECK(d.distill.lambda == 2.5 && d.distill.weighting == DISTILL_WEIGHTING_EXPONENTIAL &&
              d.distill.sds_weight == SDS_WEIGHT_SIGMA_SQ && d.distill.reduce == LOSS_REDUCE_MEAN &&
              d.distill.space == DISTILL_SPACE_PIXEL && d.distill.cfg_scale == 1.0 && d.distill.nfsd_t_threshold == 200,
          "distill defaults");
    CHECK(d.adv.head_reduce == LOSS_REDUCE_SUM && d.adv.r1 == R1_EXACT && d.adv.r1_gamma == 1e-5 && d.adv.r1_half &&
              d.adv.r1_batch == LOSS_REDUCE_MEAN && d.adv.r1_approx_lambda == 100 && d.adv.r1_approx_sigma == 0.01,
          "adversarial defaults");
    CHECK(d.diffusion.t_min == 0 && d.diffusion.t_max == 999 && d.diffusion.min_snr_gamma == 0, "diffusion defaults");

    Config c;
    config_init(&c);
    CHECK_OK(config_load_string(&c, "loss.yaml",
                                "schedule: {zero_terminal_snr: true}\nprediction: v_prediction\n"
                                "timesteps: {student: [999, 499]}\ndistill: {weighting: sds, lambda: 1.5}\n"));
    CHECK_OK(config_override(&c, "adv.r1=approx"));
    CHECK_OK(config_override(&c, "diffusion.min_snr_gamma=5"));
    AddLossConfig y;
    CHECK_OK(config_bind(&c, &add_loss_config_schema, &y));
    CHECK_OK(add_loss_config_check(&y));
    CHECK(y.schedule.zero_terminal_snr && y.prediction == PREDICTION_V && y.timesteps.n_student == 2 &&
              y.timesteps.student[1] == 499 && y.distill.weighting == DISTILL_WEIGHTING_SDS && y.distill.lambda == 1.5 &&
              y.adv.r1 == R1_APPROX && y.diffusion.min_snr_gamma == 5 && y.adv.r1_gamma == 1e-5,
          "YAML and overrides bound");
    config_free(&c);
    char *text = config_format(&add_loss_config_schema, &y);
    CHECK(text != NULL, "config_format: %s", addc_error_message());
    if (text) {
        Config c2;
        config_init(&c2);
        AddLossConfig back;
        CHECK_OK(config_load_string(&c2, "written.yaml", text));
        CHECK_OK(config_bind(&c2, &add_loss_config_schema, &back));
        CHECK(config_equal(&add_loss_config_schema, &y, &back), "the written config reads back equal");
        config_free(&c2);
        free(text);
    }

    const char *bad_over[][2] = {{"distill.weighting=nfsds", "nfsd"},     {"adv.r1_gama=1", "r1_gamma"},
                                 {"timesteps.student=[1000]", "student"}, {"timesteps.teacher_min=1000", "teacher"},
                                 {"adv.r1_approx_sigma=0", "sigma"},      {"schedule.beta_end=0.0001", "beta"}};
    for (size_t i = 0; i < sizeof bad_over / sizeof bad_over[0]; i++) {
        AddLossConfig z;
        const char *o = bad_over[i][0];
        Status st = add_loss_config_load(&z, NULL, 0, &o, 1);
        CHECK(st != ADDC_OK && strstr(addc_error_message(), bad_over[i][1]), "'%s' refused with a message naming %s: '%s'",
              o, bad_over[i][1], addc_error_message());
        addc_error_clear();
    }
}

int main(void) {
    Fixture f;
    if (!fixture_load("losses/schedule", &f)) {
        CHECK(0, "cannot load fixture losses/schedule (python3 tests/ref/make_losses_fixture.py)");
    } else {
        printf("schedules:\n");
        test_schedule(&f);
        printf("conversions:\n");
        test_conversions_diffusers(&f);
        fixture_free(&f);
    }
    test_round_trips();
    test_conversion_grads();
    printf("draws:\n");
    test_draws();
    printf("config:\n");
    test_config();
    return test_main_end("test_losses");
}
