/* tests/unit/test_losses_objective: the loss terms of ADD (losses/distill, losses/adversarial)
 * and the plain diffusion loss (losses/diffusion).
 *
 * Each term three ways: forward against a float64 reference written here and its gradient
 * against finite differences of that reference (check_op, with a build function that composes
 * the loss); against PyTorch on fixed inputs (fixture losses/terms.bin from
 * tests/ref/make_losses_fixture.py); and by the properties that define it:
 * - distillation: c(t) for exponential / SDS / NFSD, the stop-gradient on the teacher target,
 *   classifier-free guidance, the NFSD target whose loss gradient equals NFSD's direct
 *   gradient w(t) (delta_D + s delta_C);
 * - hinge generator and discriminator losses over two heads (sum and mean over heads);
 * - exact R1: equal to the closed form N ||w||^2 (gradient 2 N w) on linear heads; an MLP head's
 *   R1 and its parameter gradients against finite differences; two heads against torch; and
 *   StyleGAN-T's head through nn/disc.h against tests/ref/fixtures/r1_head.bin (value and
 *   dR1 / d every parameter);
 * - approximated R1 and its feature noise (keyed per sample and head: a batch of 8 equals two
 *   batches of 4); the weights of the totals;
 * - the diffusion loss with epsilon and v targets, with and without min-SNR weighting. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "losses/adversarial.h"
#include "losses/distill.h"
#include "nn/disc.h"
#include "tests/test_util.h"

#define TB 4 /* batch of the loss checks */

static const FixTensor *fx(const Fixture *f, const char *name) {
    const FixTensor *t = fixture_get(f, name);
    CHECK(t != NULL, "fixture has no tensor '%s'", name);
    return t;
}

static Var *fix_var(TestCtx *t, const FixTensor *ft, bool rg) {
    return ft ? tvar_from(t, ft->data, rg, ft->ndim, ft->shape) : NULL;
}

/* got NULL is a gradient no path reaches: right where torch's is zero */
static double cmp(const char *label, const float *got, const FixTensor *want, double tol) {
    CHECK(want != NULL, "%s: no reference", label);
    if (!want) return INFINITY;
    if (!got) {
        double m = 0;
        for (int64_t i = 0; i < want->numel; i++) m = fmax(m, fabs(want->data[i]));
        CHECK(m < 1e-6, "%s: addc has no value or gradient where torch's reaches %.3g (%s)", label, m,
              addc_error_message());
        return m < 1e-6 ? 0 : INFINITY;
    }
    double e = compare_f32(label, got, want->data, want->numel, tol, 1e-6);
    CHECK(e <= tol, "%s: max rel err %.3g > %.1g", label, e, tol);
    return e;
}

static const float *val(const Var *v) { return v ? (const float *)v->v.data : NULL; }
static const float *grad(const Var *v) { return v ? (const float *)v->g.data : NULL; }

static NoiseSchedule sched_sdxl(void) {
    ScheduleConfig sc = {.kind = SCHEDULE_SCALED_LINEAR, .num_train_timesteps = 1000, .beta_start = 0.00085,
                         .beta_end = 0.012};
    NoiseSchedule s;
    CHECK_OK(noise_schedule_init(&s, &sc));
    return s;
}

/* ---- distillation ---- */

typedef struct {
    const NoiseSchedule *s;
    DistillConfig cfg;
    int64_t t[TB];
    int64_t per;
} DistillCase;

static Var *build_distill(Ctx *c, Var **in, void *u) {
    DistillCase *dc = u;
    return distill_loss(c, dc->s, &dc->cfg, in[0], in[1], dc->t);
}

static void ref_distill(double *const *in, double *out, void *u) {
    DistillCase *dc = u;
    double L = 0;
    for (int b = 0; b < TB; b++) {
        double ab = dc->s->alpha_bar[dc->t[b]], al = sqrt(ab), sg = sqrt(1 - ab), cw;
        if (dc->cfg.weighting == DISTILL_WEIGHTING_EXPONENTIAL) cw = al;
        else cw = al / (2 * sg) * (dc->cfg.sds_weight == SDS_WEIGHT_ONE ? 1.0 : 1 - ab);
        double d2 = 0;
        for (int64_t i = 0; i < dc->per; i++) d2 += pow(in[0][b * dc->per + i] - in[1][b * dc->per + i], 2);
        if (dc->cfg.reduce == LOSS_REDUCE_MEAN) d2 /= (double)dc->per;
        L += cw * d2 / TB;
    }
    out[0] = L;
}

static void test_distill(const Fixture *f) {
    NoiseSchedule s = sched_sdxl();
    DistillConfig base = {.lambda = 2.5, .cfg_scale = 1.0, .nfsd_t_threshold = 200};
    /* c(t) */
    DistillConfig ce = base, cs = base, c1 = base, cn = base;
    cs.weighting = DISTILL_WEIGHTING_SDS;
    c1.weighting = DISTILL_WEIGHTING_SDS;
    c1.sds_weight = SDS_WEIGHT_ONE;
    cn.weighting = DISTILL_WEIGHTING_NFSD;
    double a = noise_schedule_alpha(&s, 499), sg = noise_schedule_sigma(&s, 499);
    CHECK(distill_weight(&s, &ce, 499) == a && fabs(distill_weight(&s, &cs, 499) - a * sg / 2) < 1e-15 &&
              fabs(distill_weight(&s, &c1, 499) - a / (2 * sg)) < 1e-15 &&
              distill_weight(&s, &cn, 499) == distill_weight(&s, &cs, 499),
          "c(t): exponential alpha, SDS alpha sigma / 2, SDS(w = 1) alpha / (2 sigma), NFSD as SDS");
    printf("  c(t) at t = 999, 499, 10: exponential %.4f %.4f %.4f; sds %.4f %.4f %.4f\n", distill_weight(&s, &ce, 999),
           distill_weight(&s, &ce, 499), distill_weight(&s, &ce, 10), distill_weight(&s, &cs, 999),
           distill_weight(&s, &cs, 499), distill_weight(&s, &cs, 10));

    /* against the f64 reference and finite differences; the target gets no gradient */
    const struct {
        const char *name;
        int32_t w, sw, red;
    } cases[] = {{"distill exponential mean", DISTILL_WEIGHTING_EXPONENTIAL, 0, LOSS_REDUCE_MEAN},
                 {"distill sds sum", DISTILL_WEIGHTING_SDS, SDS_WEIGHT_SIGMA_SQ, LOSS_REDUCE_SUM},
                 {"distill sds(w=1) mean", DISTILL_WEIGHTING_SDS, SDS_WEIGHT_ONE, LOSS_REDUCE_MEAN},
                 {"distill nfsd sum", DISTILL_WEIGHTING_NFSD, SDS_WEIGHT_SIGMA_SQ, LOSS_REDUCE_SUM}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        DistillCase dc = {.s = &s, .cfg = base, .t = {999, 500, 120, 1}, .per = 2 * 3 * 2};
        dc.cfg.weighting = cases[k].w;
        dc.cfg.sds_weight = cases[k].sw;
        dc.cfg.reduce = cases[k].red;
        OpCheck oc = {.name = cases[k].name, .n_in = 2, .build = build_distill, .ref = ref_distill, .user = &dc,
                      .no_grad = {false, true}, .max_fd = -1, .seed = 7 + k};
        for (int i = 0; i < 2; i++) {
            int64_t sh[4] = {TB, 2, 3, 2};
            oc.ndim[i] = 4;
            memcpy(oc.shape[i], sh, sizeof sh);
        }
        check_op(&oc);
    }

    TestCtx t;
    tctx_init(&t);
    Ctx *c = &t.c;
    Var *xs = fix_var(&t, fx(f, "in/xs"), true), *xt = fix_var(&t, fx(f, "in/xt"), true);
    const FixTensor *ftt = fx(f, "in/t_teacher");
    if (!xs || !xt || !ftt) return;
    int64_t tt[TB];
    for (int b = 0; b < TB; b++) tt[b] = (int64_t)ftt->data[b];
    /* torch */
    const struct {
        const char *key;
        DistillConfig *cfg;
        int32_t red;
    } tc[] = {{"distill/exp", &ce, LOSS_REDUCE_MEAN},
              {"distill/sds", &cs, LOSS_REDUCE_MEAN},
              {"distill/sds1", &c1, LOSS_REDUCE_MEAN},
              {"distill/sds_sum", &cs, LOSS_REDUCE_SUM}};
    double worst = 0;
    for (size_t k = 0; k < sizeof tc / sizeof tc[0]; k++) {
        DistillConfig cfg = *tc[k].cfg;
        cfg.reduce = tc[k].red;
        xs->g.data = NULL;
        xt->g.data = NULL;
        Var *L = distill_loss(c, &s, &cfg, xs, xt, tt);
        CHECK_VAR(L);
        if (!L) continue;
        CHECK_OK(tape_backward(c, L));
        char key[64];
        snprintf(key, sizeof key, "%s/grad", tc[k].key);
        worst = fmax(worst, cmp(tc[k].key, val(L), fx(f, tc[k].key), 1e-5));
        worst = fmax(worst, cmp(key, grad(xs), fx(f, key), 1e-5));
        CHECK(xt->g.data == NULL, "%s: the teacher target received a gradient (stop-gradient broken)", tc[k].key);
    }
    printf("  distillation vs torch (exp, sds, sds w=1, sds sum; values and d/dx_student): worst %.2e\n", worst);

    /* classifier-free guidance */
    Var *eu = fix_var(&t, fx(f, "in/eps_u"), false), *ec = fix_var(&t, fx(f, "in/eps_c"), false),
        *en = fix_var(&t, fx(f, "in/eps_neg"), false);
    double e_cfg = cmp("cfg w=3", val(distill_cfg_combine(&t.nt, eu, ec, 3.0)), fx(f, "cfg/w3"), 1e-6);
    CHECK(distill_cfg_combine(&t.nt, NULL, ec, 1.0) == ec, "w = 1 is the conditional prediction, no uncond pass");
    CHECK(distill_cfg_combine(&t.nt, NULL, ec, 2.0) == NULL, "w != 1 without uncond refused");
    addc_error_clear();

    /* NFSD: the target, and the loss gradient equal to NFSD's direct gradient */
    DistillConfig nf = cn;
    nf.cfg_scale = 7.5;
    nf.reduce = LOSS_REDUCE_SUM;
    Var *target = distill_nfsd_target(c, &s, &nf, xs, eu, ec, en, tt);
    Var *target_nn = distill_nfsd_target(c, &s, &nf, xs, eu, ec, NULL, tt);
    double e_t = cmp("nfsd target", val(target), fx(f, "nfsd/target"), 1e-5);
    double e_tn = cmp("nfsd target, no negative", val(target_nn), fx(f, "nfsd/target_noneg"), 1e-5);
    CHECK(target && !target->requires_grad, "the NFSD target is a constant");
    xs->g.data = NULL;
    Var *L = distill_loss(c, &s, &nf, xs, target, tt);
    double e_l = INFINITY, e_g = INFINITY, e_d = INFINITY;
    if (L && tape_backward(c, L) == ADDC_OK) {
        e_l = cmp("nfsd loss", val(L), fx(f, "nfsd/loss"), 1e-5);
        e_g = cmp("nfsd grad", grad(xs), fx(f, "nfsd/grad"), 1e-4);
        e_d = cmp("nfsd grad = w(t)(delta_D + s delta_C)/B", grad(xs), fx(f, "nfsd/direct"), 1e-4);
    } else {
        CHECK(0, "nfsd loss: %s", addc_error_message());
    }
    printf("  cfg %.2e; nfsd target %.2e (no negative %.2e), loss %.2e, grad %.2e, grad vs NFSD's direct gradient %.2e\n",
           e_cfg, e_t, e_tn, e_l, e_g, e_d);
    tctx_free(&t);
}

/* ---- hinge ---- */

typedef struct {
    int mode; /* 0 generator, 1 disc sum, 2 disc mean */
} HingeCase;

static const int64_t HN[2] = {5, 7};

static Var *build_hinge(Ctx *c, Var **in, void *u) {
    HingeCase *hc = u;
    if (hc->mode == 0) {
        Var *fake[2] = {in[0], in[1]};
        return adv_generator_loss(c, fake, 2, LOSS_REDUCE_SUM);
    }
    Var *real[2] = {in[0], in[2]}, *fake[2] = {in[1], in[3]};
    return adv_disc_hinge_loss(c, real, fake, 2, hc->mode == 2 ? LOSS_REDUCE_MEAN : LOSS_REDUCE_SUM);
}

static void ref_hinge(double *const *in, double *out, void *u) {
    HingeCase *hc = u;
    double L = 0;
    for (int k = 0; k < 2; k++) {
        int64_t n = TB * HN[k];
        double m0 = 0, m1 = 0;
        if (hc->mode == 0) {
            for (int64_t i = 0; i < n; i++) m0 += in[k][i] / (double)n;
            L -= m0;
        } else {
            for (int64_t i = 0; i < n; i++) {
                m0 += fmax(0, 1 - in[2 * k][i]) / (double)n;
                m1 += fmax(0, 1 + in[2 * k + 1][i]) / (double)n;
            }
            L += (m0 + m1) * (hc->mode == 2 ? 0.5 : 1.0);
        }
    }
    out[0] = L;
}

static void test_hinge(const Fixture *f) {
    const char *names[3] = {"generator -sum_k mean D_k", "disc hinge, heads summed", "disc hinge, heads averaged"};
    for (int mode = 0; mode < 3; mode++) {
        HingeCase hc = {mode};
        OpCheck oc = {.name = names[mode], .n_in = mode ? 4 : 2, .build = build_hinge, .ref = ref_hinge, .user = &hc,
                      .max_fd = -1, .seed = 31 + (uint64_t)mode};
        for (int i = 0; i < oc.n_in; i++) {
            int k = mode ? i / 2 : i;
            oc.ndim[i] = 2;
            oc.shape[i][0] = TB;
            oc.shape[i][1] = HN[k];
            oc.lo[i] = -2.5;
            oc.hi[i] = 2.5;
        }
        check_op(&oc);
    }
    TestCtx t;
    tctx_init(&t);
    Ctx *c = &t.c;
    const char *keys[4] = {"real0", "fake0", "real1", "fake1"};
    double worst = 0;
    for (int mode = 0; mode < 3; mode++) {
        Var *lg[4];
        char key[64];
        for (int i = 0; i < 4; i++) {
            snprintf(key, sizeof key, "in/%s", keys[i]);
            lg[i] = fix_var(&t, fx(f, key), true);
        }
        Var *real[2] = {lg[0], lg[2]}, *fake[2] = {lg[1], lg[3]};
        Var *L = mode == 0 ? adv_generator_loss(c, fake, 2, LOSS_REDUCE_SUM)
                           : adv_disc_hinge_loss(c, real, fake, 2, mode == 2 ? LOSS_REDUCE_MEAN : LOSS_REDUCE_SUM);
        const char *lk = mode == 0 ? "hinge/g" : mode == 1 ? "hinge/d" : "hinge/d_mean";
        CHECK_VAR(L);
        if (!L || tape_backward(c, L) != ADDC_OK) continue;
        worst = fmax(worst, cmp(lk, val(L), fx(f, lk), 1e-6));
        for (int i = 0; i < 4; i++) {
            if (mode == 0 && i % 2 == 0) continue;
            snprintf(key, sizeof key, "%s/%s", lk, keys[i]);
            worst = fmax(worst, cmp(key, grad(lg[i]), fx(f, key), 1e-6));
        }
    }
    printf("  hinge vs torch (G, D summed, D averaged over heads; values and gradients): worst %.2e\n", worst);
    tctx_free(&t);
}

/* ---- exact R1 ---- */

/* logits (B, N) = x (B, N, C) w^T + b with w (1, C) */
static Var *linear_head(Ctx *c, Var *x, Var *w, Var *b) {
    int64_t s[2] = {x->v.shape[0], x->v.shape[1]};
    return op_reshape(c, op_linear(c, x, w, b), 2, s);
}

/* logits = leaky_relu(x W^T + b, 0.2) v^T, W (H, C), b (H), v (1, H) */
static Var *mlp_head(Ctx *c, Var *x, Var *W, Var *b, Var *v) {
    return linear_head(c, op_leaky_relu(c, op_linear(c, x, W, b), 0.2), v, NULL);
}

static void test_r1_closed_form(void) {
    TestCtx t;
    tctx_init(&t);
    TestRng r = {5};
    Ctx *c = &t.c;
    const int64_t B = 6, C = 8;
    Var *x[2], *w[2], *b[2], *lg[2];
    double nw2[2];
    for (int k = 0; k < 2; k++) {
        int64_t sx[3] = {B, HN[k], C}, sw[2] = {1, C}, sb[1] = {1};
        x[k] = tvar_rand(&t, &r, true, -2, 2, 3, sx);
        w[k] = tvar_rand(&t, &r, true, -1, 1, 2, sw);
        b[k] = tvar_rand(&t, &r, true, -1, 1, 1, sb);
        lg[k] = linear_head(c, x[k], w[k], b[k]);
        nw2[k] = 0;
        for (int i = 0; i < C; i++) nw2[k] += pow(((float *)w[k]->v.data)[i], 2);
    }
    AdvConfig cfg = {.head_reduce = LOSS_REDUCE_SUM, .r1 = R1_EXACT, .r1_gamma = 1e-5, .r1_half = true,
                     .r1_batch = LOSS_REDUCE_MEAN};
    Var *r1 = adv_r1_exact(c, lg, x, 2, &cfg);
    CHECK_VAR(r1);
    if (!r1) return;
    double want = HN[0] * nw2[0] + HN[1] * nw2[1], got = val(r1)[0];
    CHECK_OK(tape_backward(c, r1));
    double eg = 0;
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < C; i++) {
            double gw = 2.0 * (double)HN[k] * ((float *)w[k]->v.data)[i];
            eg = fmax(eg, fabs(grad(w[k])[i] - gw) / fabs(gw));
        }
    printf("  linear heads: R1 %.9g, closed form N0 |w0|^2 + N1 |w1|^2 = %.9g (rel %.1e); dR1/dw vs 2 N w: %.1e; "
           "d/db %s\n",
           got, want, fabs(got - want) / want, eg, grad(b[0]) ? "nonzero?" : "none (no path)");
    CHECK(fabs(got - want) / want < 1e-6, "R1 on linear heads %.9g vs closed form %.9g", got, want);
    CHECK(eg < 1e-6, "dR1/dw vs 2 N w: %.3g", eg);
    CHECK(grad(b[0]) == NULL || fabs(grad(b[0])[0]) < 1e-6, "bias gets no R1 gradient");
    double wd = adv_r1_weight(&cfg);
    CHECK(wd == 0.5e-5, "exact R1 weight gamma/2 = %g", wd);

    /* batch sum and head mean */
    tctx_reset(&t);
    for (int k = 0; k < 2; k++) {
        int64_t sx[3] = {B, HN[k], C}, sw[2] = {1, C};
        x[k] = tvar_rand(&t, &r, true, -2, 2, 3, sx);
        w[k] = tvar_rand(&t, &r, true, -1, 1, 2, sw);
        lg[k] = linear_head(c, x[k], w[k], NULL);
        nw2[k] = 0;
        for (int i = 0; i < C; i++) nw2[k] += pow(((float *)w[k]->v.data)[i], 2);
    }
    cfg.r1_batch = LOSS_REDUCE_SUM;
    cfg.head_reduce = LOSS_REDUCE_MEAN;
    r1 = adv_r1_exact(c, lg, x, 2, &cfg);
    want = 0.5 * (double)B * (HN[0] * nw2[0] + HN[1] * nw2[1]);
    CHECK(r1 && fabs(val(r1)[0] - want) / want < 1e-6, "R1 (batch sum, head mean) %.9g vs %.9g", r1 ? val(r1)[0] : NAN,
          want);

    /* refusals */
    Var *xn = tvar_rand(&t, &r, false, -1, 1, 3, x[0]->v.shape);
    Var *ln = linear_head(c, xn, w[0], NULL);
    CHECK(adv_r1_exact(c, &ln, &xn, 1, &cfg) == NULL, "features without requires_grad refused");
    addc_error_clear();
    CHECK(adv_r1_exact(&t.nt, &lg[0], &x[0], 1, &cfg) == NULL, "no tape refused");
    addc_error_clear();
    tctx_free(&t);
}

enum { MB = 4, MN = 5, MC = 6, MH = 8 };

typedef struct {
    float x[MB * MN * MC];
} MlpCase;

static Var *build_r1_mlp(Ctx *c, Var **in, void *u) {
    MlpCase *mc = u;
    int64_t sx[3] = {MB, MN, MC};
    Var *x = var_new(c, DTYPE_F32, 3, sx);
    memcpy(x->v.data, mc->x, sizeof mc->x);
    x->requires_grad = true;
    Var *lg = mlp_head(c, x, in[0], in[1], in[2]);
    AdvConfig cfg = {.head_reduce = LOSS_REDUCE_SUM, .r1 = R1_EXACT, .r1_gamma = 1, .r1_batch = LOSS_REDUCE_MEAN};
    return adv_r1_exact(c, &lg, &x, 1, &cfg);
}

static void ref_r1_mlp(double *const *in, double *out, void *u) {
    MlpCase *mc = u;
    const double *W = in[0], *b = in[1], *v = in[2];
    double R = 0;
    for (int t = 0; t < MB * MN; t++) {
        double g[MC] = {0};
        for (int h = 0; h < MH; h++) {
            double pre = b[h];
            for (int i = 0; i < MC; i++) pre += W[h * MC + i] * mc->x[t * MC + i];
            double a = v[h] * (pre > 0 ? 1.0 : 0.2);
            for (int i = 0; i < MC; i++) g[i] += a * W[h * MC + i];
        }
        for (int i = 0; i < MC; i++) R += g[i] * g[i];
    }
    out[0] = R / MB;
}

static void test_r1_mlp(const Fixture *f) {
    MlpCase mc;
    TestRng r = {77};
    trng_fill_f32(&r, mc.x, MB * MN * MC, -2, 2);
    /* b moves R1 only through the activation pattern: zero gradient almost everywhere, no path here */
    OpCheck oc = {.name = "R1 of an MLP head (d/d W, v)", .n_in = 3, .build = build_r1_mlp, .ref = ref_r1_mlp,
                  .user = &mc, .no_grad = {false, true, false}, .max_fd = -1, .seed = 55};
    oc.ndim[0] = 2, oc.shape[0][0] = MH, oc.shape[0][1] = MC;
    oc.ndim[1] = 1, oc.shape[1][0] = MH;
    oc.ndim[2] = 2, oc.shape[2][0] = 1, oc.shape[2][1] = MH;
    check_op(&oc);

    /* two heads against torch */
    TestCtx t;
    tctx_init(&t);
    Ctx *c = &t.c;
    Var *x[2], *W[2], *b[2], *v[2], *lg[2];
    char key[64];
    for (int k = 0; k < 2; k++) {
        snprintf(key, sizeof key, "in/r1_x%d", k);
        x[k] = fix_var(&t, fx(f, key), true);
        snprintf(key, sizeof key, "in/r1_W%d", k);
        W[k] = fix_var(&t, fx(f, key), true);
        snprintf(key, sizeof key, "in/r1_b%d", k);
        b[k] = fix_var(&t, fx(f, key), true);
        snprintf(key, sizeof key, "in/r1_v%d", k);
        const FixTensor *fv = fx(f, key);
        if (!x[k] || !W[k] || !b[k] || !fv) return;
        int64_t sv[2] = {1, fv->numel};
        v[k] = tvar_from(&t, fv->data, true, 2, sv);
        lg[k] = mlp_head(c, x[k], W[k], b[k], v[k]);
    }
    AdvConfig cfg = {.head_reduce = LOSS_REDUCE_SUM, .r1 = R1_EXACT, .r1_gamma = 1e-5, .r1_half = true,
                     .r1_batch = LOSS_REDUCE_MEAN};
    Var *r1 = adv_r1_exact(c, lg, x, 2, &cfg);
    CHECK_VAR(r1);
    if (!r1 || tape_backward(c, r1) != ADDC_OK) return;
    double worst = cmp("r1 value", val(r1), fx(f, "r1/value"), 1e-5);
    for (int k = 0; k < 2; k++) {
        snprintf(key, sizeof key, "r1/grad/W%d", k);
        worst = fmax(worst, cmp(key, grad(W[k]), fx(f, key), 1e-5));
        snprintf(key, sizeof key, "r1/grad/b%d", k);
        worst = fmax(worst, cmp(key, grad(b[k]), fx(f, key), 1e-5));
        snprintf(key, sizeof key, "r1/grad/v%d", k);
        worst = fmax(worst, cmp(key, grad(v[k]), fx(f, key), 1e-5));
    }
    printf("  two MLP heads vs torch: R1 %.6g (torch %.6g), value and dR1/d(W, b, v) worst %.2e\n", val(r1)[0],
           fx(f, "r1/value")->data[0], worst);
    tctx_free(&t);
}

static void transpose_last2(const float *src, float *dst, int64_t a, int64_t b, int64_t c) {
    for (int64_t i = 0; i < a; i++)
        for (int64_t j = 0; j < b; j++)
            for (int64_t k = 0; k < c; k++) dst[(i * c + k) * b + j] = src[(i * b + j) * c + k];
}

/* StyleGAN-T's head through nn/disc.h, R1 through adv_r1_exact, against r1_head.bin (R1 summed
 * over the batch there: r1_batch = sum) */
static void test_r1_disc_fixture(void) {
    Fixture f;
    if (!fixture_load("r1_head", &f)) {
        CHECK(0, "cannot load fixture r1_head (python3 tests/ref/make_r1_fixture.py)");
        return;
    }
    DiscHeadsConfig dcfg = {.n_heads = 1, .channels = 24, .c_dim = 12, .cmap_dim = 16, .kernel_size = 9,
                            .virtual_bs = 8, .bn_eps = 1e-5, .leaky_slope = 0.2, .sn_eps = 1e-12,
                            .sn_power_iterations = 1, .cmapper_equalized_lr = false};
    ParamStore p, s;
    param_store_init(&p, DEVICE_CPU);
    param_store_init(&s, DEVICE_CPU);
    DiscHeads d;
    CHECK_OK(disc_heads_init(&d, &dcfg, &p, &s));
    CHECK_OK(param_store_alloc(&p, true));
    CHECK_OK(param_store_alloc(&s, false));
    bool ok = true;
    char nm[160];
    for (int32_t i = 0; i < p.n && ok; i++) { /* torch's names without "heads.0." */
        Param *q = param_store_get(&p, i);
        const FixTensor *ft = fixture_get(&f, q->name + 8);
        ok = ft && ft->numel == tensor_numel(&q->var.v);
        if (ok) memcpy(q->var.v.data, ft->data, (size_t)ft->numel * 4);
    }
    for (int32_t i = 0; i < s.n && ok; i++) { /* the power-iteration state before the forward */
        Param *q = param_store_get(&s, i);
        snprintf(nm, sizeof nm, "%s0", q->name + 8);
        const FixTensor *ft = fixture_get(&f, nm);
        ok = ft && ft->numel == tensor_numel(&q->var.v);
        if (ok) memcpy(q->var.v.data, ft->data, (size_t)ft->numel * 4);
    }
    const FixTensor *fxx = fixture_get(&f, "x"), *fc = fixture_get(&f, "c"), *fr1 = fixture_get(&f, "r1");
    CHECK(ok && fxx && fc && fr1, "r1_head fixture incomplete");
    if (ok && fxx && fc && fr1) {
        TestCtx t;
        tctx_init(&t);
        int64_t B = fxx->shape[0], C = fxx->shape[1], N = fxx->shape[2], xs[3] = {B, N, C};
        Var *x = var_new(&t.nt, DTYPE_F32, 3, xs);
        transpose_last2(fxx->data, x->v.data, B, C, N);
        x->requires_grad = true;
        Var *cvec = tvar_from(&t, fc->data, false, 2, fc->shape);
        Ctx *c = &t.c;
        Var *logits = disc_head_forward(c, &d, 0, x, cvec, true);
        AdvConfig cfg = {.head_reduce = LOSS_REDUCE_SUM, .r1 = R1_EXACT, .r1_gamma = 1e-5, .r1_half = true,
                         .r1_batch = LOSS_REDUCE_SUM};
        Var *r1 = adv_r1_exact(c, &logits, &x, 1, &cfg);
        CHECK_VAR(r1);
        if (r1 && tape_backward(c, r1) == ADDC_OK) {
            double er = fabs(val(r1)[0] - fr1->data[0]) / fabs(fr1->data[0]), eg = 0;
            for (int32_t i = 0; i < p.n; i++) {
                Param *q = param_store_get(&p, i);
                snprintf(nm, sizeof nm, "grad/%s", q->name + 8);
                const FixTensor *ft = fixture_get(&f, nm);
                if (!ft) continue;
                double mref = 0, mgot = 0, e = 0;
                const float *g = grad(&q->var);
                for (int64_t j = 0; j < ft->numel; j++) {
                    mref = fmax(mref, fabs(ft->data[j]));
                    mgot = fmax(mgot, g ? fabs(g[j]) : 0);
                }
                if (mref < 1e-6) { /* no path (cls.bias) or a bias ahead of BatchNormLocal: zero up to rounding */
                    CHECK(mgot < 1e-4, "%s: torch ~0, addc %.3g", nm, mgot);
                    continue;
                }
                e = g ? compare_f32(nm, g, ft->data, ft->numel, 1e-4, 1e-6) : INFINITY;
                CHECK(e <= 1e-4, "%s: max rel err %.3g", nm, e);
                eg = fmax(eg, e);
            }
            printf("  StyleGAN-T head (nn/disc) vs r1_head.bin: R1 %.7g (torch %.7g, rel %.1e); dR1/d params worst "
                   "%.2e\n",
                   val(r1)[0], fr1->data[0], er, eg);
            CHECK(er < 1e-4, "R1 through nn/disc %.7g vs torch %.7g", val(r1)[0], fr1->data[0]);
            /* the D loss adds gamma/2 times it */
            Var *zero_hinge = var_zeros(&t.nt, DTYPE_F32, 0, NULL);
            Var *ld = adv_disc_loss(&t.nt, &cfg, zero_hinge, r1);
            CHECK(ld && fabs(val(ld)[0] - 0.5e-5 * val(r1)[0]) < 1e-6 * fabs(0.5e-5 * val(r1)[0]),
                  "L_D = hinge + gamma/2 R1");
        }
        tctx_free(&t);
    }
    addc_error_clear();
    param_store_free(&p);
    param_store_free(&s);
    fixture_free(&f);
}

/* ---- approximated R1 ---- */

static Var *build_r1a(Ctx *c, Var **in, void *u) {
    Var *real[2] = {in[0], in[2]}, *pert[2] = {in[1], in[3]};
    return adv_r1_approx(c, real, pert, 2, LOSS_REDUCE_SUM);
}

static void ref_r1a(double *const *in, double *out, void *u) {
    double L = 0;
    for (int k = 0; k < 2; k++) {
        int64_t n = TB * HN[k];
        for (int64_t i = 0; i < n; i++) L += pow(in[2 * k][i] - in[2 * k + 1][i], 2) / (double)n;
    }
    out[0] = L;
}

static void test_r1_approx(const Fixture *f) {
    OpCheck oc = {.name = "approximated R1, two heads", .n_in = 4, .build = build_r1a, .ref = ref_r1a,
                  .max_fd = -1, .seed = 91};
    for (int i = 0; i < 4; i++) {
        oc.ndim[i] = 2;
        oc.shape[i][0] = TB;
        oc.shape[i][1] = HN[i / 2];
    }
    check_op(&oc);
    TestCtx t;
    tctx_init(&t);
    Var *real[2] = {fix_var(&t, fx(f, "in/real0"), false), fix_var(&t, fx(f, "in/real1"), false)};
    Var *pert[2] = {fix_var(&t, fx(f, "in/pert0"), false), fix_var(&t, fx(f, "in/pert1"), false)};
    double e = cmp("approximated R1", val(adv_r1_approx(&t.nt, real, pert, 2, LOSS_REDUCE_SUM)), fx(f, "r1a/value"),
                   1e-6);

    /* feature noise: sigma n, keyed per sample and head */
    int64_t s8[3] = {8, 5, 6}, s4[3] = {4, 5, 6};
    Var *z8 = var_zeros(&t.nt, DTYPE_F32, 3, s8), *z4 = var_zeros(&t.nt, DTYPE_F32, 3, s4);
    DrawKey k8 = {.seed = 9, .step = 3, .first_index = 0}, kb = k8;
    kb.first_index = 4;
    Var *p8 = adv_features_perturb(&t.nt, z8, 0.01, &k8, 1), *pa = adv_features_perturb(&t.nt, z4, 0.01, &k8, 1),
        *pb = adv_features_perturb(&t.nt, z4, 0.01, &kb, 1), *h0 = adv_features_perturb(&t.nt, z8, 0.01, &k8, 0);
    Var *n8 = draw_noise(&t.nt, &k8, RNG_PURPOSE_NOISE, DRAW_R1_NOISE_OFFSET + DRAW_R1_NOISE_STRIDE, 3, s8);
    CHECK(p8 && pa && pb && h0 && n8, "adv_features_perturb: %s", addc_error_message());
    if (p8 && pa && pb && h0 && n8) {
        double en = 0;
        for (int64_t i = 0; i < 240; i++) en = fmax(en, fabs(val(p8)[i] - 0.01f * val(n8)[i]));
        CHECK(en < 1e-9, "perturbation = sigma * noise at head 1's offset (%.3g)", en);
        CHECK(memcmp(val(p8), val(pa), 120 * 4) == 0 && memcmp(val(p8) + 120, val(pb), 120 * 4) == 0,
              "R1 noise of a batch of 8 equals two batches of 4");
        CHECK(memcmp(val(p8), val(h0), 240 * 4) != 0, "heads get different noise");
    }
    AdvConfig cfg = {.r1 = R1_APPROX, .r1_approx_lambda = 100, .r1_approx_sigma = 0.01};
    CHECK(adv_r1_weight(&cfg) == 100, "approximated R1 weight lambda_a");
    cfg.r1 = R1_NONE;
    Var *hinge = fix_var(&t, fx(f, "hinge/d"), false);
    CHECK(adv_r1_weight(&cfg) == 0 && adv_disc_loss(&t.nt, &cfg, hinge, NULL) == hinge, "r1 none: the hinge alone");
    printf("  approximated R1 vs torch %.2e; feature noise keyed per sample and head\n", e);
    tctx_free(&t);
}

/* ---- generator total ---- */

static void test_totals(void) {
    TestCtx t;
    tctx_init(&t);
    float a = -0.75f, d = 0.125f;
    Var *adv = tvar_from(&t, &a, true, 0, NULL), *dist = tvar_from(&t, &d, true, 0, NULL);
    DistillConfig cfg = {.lambda = 2.5};
    Var *L = adv_generator_total(&t.c, &cfg, adv, dist);
    CHECK(L && val(L)[0] == -0.75f + 2.5f * 0.125f, "L_G = L_adv + 2.5 L_distill");
    if (L && tape_backward(&t.c, L) == ADDC_OK)
        CHECK(grad(adv)[0] == 1.0f && grad(dist)[0] == 2.5f, "dL_G/dL_adv = 1, dL_G/dL_distill = lambda");
    CHECK(adv_generator_total(&t.c, &cfg, NULL, dist) == NULL, "a missing term propagates as an error");
    addc_error_clear();
    tctx_free(&t);
}

/* ---- the plain diffusion loss ---- */

typedef struct {
    const NoiseSchedule *s;
    int32_t pred;
    double gamma;
    int64_t t[TB];
    int64_t per;
} DiffCase;

static Var *build_diff(Ctx *c, Var **in, void *u) {
    DiffCase *dc = u;
    return diffusion_loss(c, dc->s, dc->pred, dc->gamma, in[0], in[1], in[2], dc->t);
}

static void ref_diff(double *const *in, double *out, void *u) {
    DiffCase *dc = u;
    double L = 0;
    for (int b = 0; b < TB; b++) {
        double ab = dc->s->alpha_bar[dc->t[b]], al = sqrt(ab), sg = sqrt(1 - ab), snr = ab / (1 - ab), w = 1;
        if (dc->gamma > 0) w = dc->pred == PREDICTION_V ? fmin(snr, dc->gamma) / (snr + 1) : fmin(snr, dc->gamma) / snr;
        double m = 0;
        for (int64_t i = 0; i < dc->per; i++) {
            int64_t j = b * dc->per + i;
            double target = dc->pred == PREDICTION_V ? al * in[2][j] - sg * in[1][j] : in[2][j];
            m += pow(in[0][j] - target, 2) / (double)dc->per;
        }
        L += w * m / TB;
    }
    out[0] = L;
}

static void test_diffusion_loss(const Fixture *f) {
    NoiseSchedule s = sched_sdxl();
    const struct {
        const char *name;
        int32_t pred;
        double gamma;
    } cases[] = {{"diffusion eps", PREDICTION_EPSILON, 0},
                 {"diffusion eps min-SNR 5", PREDICTION_EPSILON, 5},
                 {"diffusion v min-SNR 5", PREDICTION_V, 5},
                 {"diffusion v", PREDICTION_V, 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        DiffCase dc = {.s = &s, .pred = cases[k].pred, .gamma = cases[k].gamma, .t = {999, 500, 20, 0}, .per = 12};
        OpCheck oc = {.name = cases[k].name, .n_in = 3, .build = build_diff, .ref = ref_diff, .user = &dc,
                      .no_grad = {false, true, true}, .max_fd = -1, .seed = 61 + k};
        for (int i = 0; i < 3; i++) {
            int64_t sh[4] = {TB, 3, 2, 2};
            oc.ndim[i] = 4;
            memcpy(oc.shape[i], sh, sizeof sh);
        }
        check_op(&oc);
    }
    /* min-SNR weights; at SNR 0 (zero terminal SNR) the epsilon weight is its limit 1 */
    ScheduleConfig zc = {.kind = SCHEDULE_SCALED_LINEAR, .num_train_timesteps = 1000, .beta_start = 0.00085,
                         .beta_end = 0.012, .zero_terminal_snr = true, .terminal_alpha_bar = 0};
    NoiseSchedule z;
    CHECK_OK(noise_schedule_init(&z, &zc));
    double w0 = diffusion_min_snr_weight(&z, PREDICTION_EPSILON, 5, 999), wv = diffusion_min_snr_weight(&z, PREDICTION_V, 5, 999);
    double w20 = diffusion_min_snr_weight(&s, PREDICTION_EPSILON, 5, 20), snr20 = noise_schedule_snr(&s, 20);
    CHECK(w0 == 1.0 && wv == 0.0 && fabs(w20 - 5 / snr20) < 1e-12 && diffusion_min_snr_weight(&s, 0, 0, 20) == 1.0,
          "min-SNR weights: eps at snr 0 -> %g, v -> %g, eps at t=20 %g (5/snr %g)", w0, wv, w20, 5 / snr20);

    TestCtx t;
    tctx_init(&t);
    Ctx *c = &t.c;
    Var *x0 = fix_var(&t, fx(f, "in/x0"), false), *eps = fix_var(&t, fx(f, "in/eps"), false);
    const FixTensor *ftd = fx(f, "in/t_diff");
    if (!x0 || !eps || !ftd) return;
    int64_t td[TB];
    for (int b = 0; b < TB; b++) td[b] = (int64_t)ftd->data[b];
    const struct {
        const char *key;
        int32_t pred;
        double gamma;
    } tc[] = {{"diff/eps", PREDICTION_EPSILON, 0}, {"diff/eps_snr5", PREDICTION_EPSILON, 5}, {"diff/v_snr5", PREDICTION_V, 5}};
    double worst = 0;
    for (size_t k = 0; k < sizeof tc / sizeof tc[0]; k++) {
        Var *pred = fix_var(&t, fx(f, "in/pred"), true);
        Var *L = diffusion_loss(c, &s, tc[k].pred, tc[k].gamma, pred, x0, eps, td);
        CHECK_VAR(L);
        if (!L || tape_backward(c, L) != ADDC_OK) continue;
        char key[64];
        snprintf(key, sizeof key, "%s/grad", tc[k].key);
        worst = fmax(worst, cmp(tc[k].key, val(L), fx(f, tc[k].key), 1e-5));
        worst = fmax(worst, cmp(key, grad(pred), fx(f, key), 1e-5));
    }
    printf("  diffusion loss vs diffusers' train_text_to_image formula (eps, eps min-SNR 5, v min-SNR 5): worst %.2e\n",
           worst);
    tctx_free(&t);
}

int main(void) {
    Fixture f;
    if (!fixture_load("losses/terms", &f)) {
        CHECK(0, "cannot load fixture losses/terms (python3 tests/ref/make_losses_fixture.py)");
        return test_main_end("test_losses_objective");
    }
    printf("distillation:\n");
    test_distill(&f);
    printf("hinge:\n");
    test_hinge(&f);
    printf("exact R1:\n");
    test_r1_closed_form();
    test_r1_mlp(&f);
    test_r1_disc_fixture();
    printf("approximated R1 and totals:\n");
    test_r1_approx(&f);
    test_totals();
    printf("diffusion loss:\n");
    test_diffusion_loss(&f);
    fixture_free(&f);
    return test_main_end("test_losses_objective");
}
