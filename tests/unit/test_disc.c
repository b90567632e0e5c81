/* tests/unit/test_disc: the discriminator-head module (nn/disc.c) against torch.
 *
 * - ADD's heads (configs/models/disc_heads.yaml) on the meta device: 60 tensors, 8,163,200
 *   parameters, 25,280 spectral-norm state values, one unit per head;
 * - the module reproduces tests/unit/test_r1_head.c's fixture (r1_head.bin, written by
 *   make_r1_fixture.py; a plain nn.Linear cmapper): logits, the create-graph gradient g, R1, the
 *   power-iteration state after the forward, dR1 / d every parameter and dR1 / dx (<= 1e-4);
 * - three heads with StyleGAN-T's equalized-lr cmapper (make_disc_fixture.py) loaded by name from
 *   torch's state dict (parameters and weight_u / weight_v buffers) through the token readout:
 *   logits and the updated u / v (<= 1e-4), gradients of sum_k sum(logits_k R_k) for every
 *   parameter and the tokens, and head 0's R1 with its gradients (<= 1e-3);
 * - fresh initialisation (unit u, v; BatchNormLocal scale 1) and refusals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/disc.h"
#include "tests/ref_nn.h"
#include "tests/test_util.h"

#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

static void test_add_meta(void) {
    char path[512];
    DiscHeadsConfig cfg;
    CHECK_OK(disc_heads_config_load(&cfg, nn_src_path(path, sizeof path, "configs/models/disc_heads.yaml"), NULL, 0));
    ParamStore p, s;
    param_store_init(&p, DEVICE_META);
    param_store_init(&s, DEVICE_META);
    DiscHeads d;
    CHECK_OK(disc_heads_init(&d, &cfg, &p, &s));
    CHECK_OK(param_store_alloc(&p, true));
    CHECK_OK(param_store_alloc(&s, false));
    int heads = nn_count_units(&p, "heads.");
    printf("disc_heads: %d tensors, %lld parameters, %lld state values, %d head units\n", p.n, (long long)p.numel,
           (long long)s.numel, heads);
    CHECK(p.n == 60 && p.numel == 8163200 && s.numel == 25280 && heads == 5, "ADD heads counts");
    param_store_free(&p);
    param_store_free(&s);
}

/* ---- the r1_head.bin fixture of test_r1_head.c ---- */

static bool copy_fix(const Fixture *f, const char *name, Var *dst) {
    const FixTensor *t = fixture_get(f, name);
    CHECK(t && dst && t->numel == tensor_numel(&dst->v), "r1_head fixture tensor %s", name);
    if (!t || !dst || t->numel != tensor_numel(&dst->v)) return false;
    memcpy(dst->v.data, t->data, (size_t)t->numel * 4);
    return true;
}

static double cmp_fix(const Fixture *f, const char *name, const float *got, int64_t n, double tol) {
    const FixTensor *t = fixture_get(f, name);
    CHECK(t && got && t->numel == n, "%s: nothing to compare", name);
    if (!t || !got || t->numel != n) return INFINITY;
    double mref = 0, mgot = 0;
    for (int64_t i = 0; i < n; i++) {
        mref = fmax(mref, fabs(t->data[i]));
        mgot = fmax(mgot, fabs(got[i]));
    }
    if (mref < 1e-6) { /* zero in exact arithmetic: rounding only */
        CHECK(mgot < 1e-4, "%s: torch ~0, addc max |value| %.3g", name, mgot);
        return 0;
    }
    double e = compare_f32(name, got, t->data, n, tol, 1e-6);
    CHECK(e <= tol, "%s: max rel err %.3g > %.1g", name, e, tol);
    return e;
}

static void transpose_last2(const float *src, float *dst, int64_t a, int64_t b, int64_t c) {
    for (int64_t i = 0; i < a; i++)
        for (int64_t j = 0; j < b; j++)
            for (int64_t k = 0; k < c; k++) dst[(i * c + k) * b + j] = src[(i * b + j) * c + k];
}

static void test_r1_fixture(void) {
    Fixture f;
    if (!fixture_load("r1_head", &f)) {
        CHECK(0, "cannot load fixture r1_head (python3 tests/ref/make_r1_fixture.py)");
        return;
    }
    DiscHeadsConfig cfg = {.n_heads = 1, .channels = 24, .c_dim = 12, .cmap_dim = 16, .kernel_size = 9,
                           .virtual_bs = 8, .bn_eps = 1e-5, .leaky_slope = 0.2, .sn_eps = 1e-12,
                           .sn_power_iterations = 1, .cmapper_equalized_lr = false};
    ParamStore p, s;
    param_store_init(&p, DEVICE_CPU);
    param_store_init(&s, DEVICE_CPU);
    DiscHeads d;
    CHECK_OK(disc_heads_init(&d, &cfg, &p, &s));
    CHECK_OK(param_store_alloc(&p, true));
    CHECK_OK(param_store_alloc(&s, false));
    /* torch's names without "heads.0.", and u0 / v0 for the state before the forward */
    bool ok = true;
    char nm[128];
    for (int32_t i = 0; i < p.n; i++) ok = copy_fix(&f, param_store_get(&p, i)->name + 8, &param_store_get(&p, i)->var) && ok;
    for (int32_t i = 0; i < s.n; i++) {
        snprintf(nm, sizeof nm, "%s0", param_store_get(&s, i)->name + 8);
        ok = copy_fix(&f, nm, &param_store_get(&s, i)->var) && ok;
    }
    const FixTensor *fx = fixture_get(&f, "x"), *fc = fixture_get(&f, "c");
    if (!ok || !fx || !fc) {
        CHECK(0, "r1_head fixture incomplete");
        fixture_free(&f);
        return;
    }
    TestCtx t;
    tctx_init(&t);
    int64_t B = fx->shape[0], C = fx->shape[1], N = fx->shape[2], xs[3] = {B, N, C};
    Var *x = var_new(&t.nt, DTYPE_F32, 3, xs);
    transpose_last2(fx->data, x->v.data, B, C, N);
    x->requires_grad = true;
    Var *cvec = var_new(&t.nt, DTYPE_F32, 2, fc->shape);
    memcpy(cvec->v.data, fc->data, (size_t)fc->numel * 4);
    Ctx *c = &t.c;
    Var *logits = disc_head_forward(c, &d, 0, x, cvec, true);
    CHECK_VAR(logits);
    Var *g = NULL;
    if (logits) CHECK_OK(autograd_grad(c, op_sum(c, logits), NULL, &x, 1, &g, true));
    Var *r1 = g ? op_sum(c, op_mul(c, g, g)) : NULL;
    if (r1) CHECK_OK(tape_backward(c, r1));
    if (r1) {
        double worst = 0, e;
        e = cmp_fix(&f, "logits", logits->v.data, B * N, FWD_TOL);
        worst = fmax(worst, e);
        float *gt = malloc((size_t)(B * N * C) * 4), *xg = malloc((size_t)(B * N * C) * 4);
        transpose_last2(g->v.data, gt, B, N, C);
        e = cmp_fix(&f, "g", gt, B * N * C, FWD_TOL);
        worst = fmax(worst, e);
        e = cmp_fix(&f, "r1", r1->v.data, 1, FWD_TOL);
        worst = fmax(worst, e);
        for (int32_t i = 0; i < s.n; i++) {
            Param *q = param_store_get(&s, i);
            e = cmp_fix(&f, q->name + 8, q->var.v.data, tensor_numel(&q->var.v), FWD_TOL);
            worst = fmax(worst, e);
        }
        double wg = 0;
        for (int32_t i = 0; i < p.n; i++) {
            Param *q = param_store_get(&p, i);
            snprintf(nm, sizeof nm, "grad/%s", q->name + 8);
            e = cmp_fix(&f, nm, q->var.g.data, tensor_numel(&q->var.v), FWD_TOL);
            wg = fmax(wg, e);
        }
        transpose_last2(x->g.data, xg, B, N, C);
        e = cmp_fix(&f, "grad/x", xg, B * N * C, FWD_TOL);
        wg = fmax(wg, e);
        printf("r1_head fixture through the module: R1 %.7g (torch %.7g); logits, g, R1, u, v worst %.2e; "
               "dR1/d(params, x) worst %.2e\n",
               *(float *)r1->v.data, fixture_get(&f, "r1")->data[0], worst, wg);
        free(gt);
        free(xg);
    }
    addc_error_clear();
    tctx_free(&t);
    param_store_free(&p);
    param_store_free(&s);
    fixture_free(&f);
}

/* ---- three heads from torch's state dict ---- */

/* nn_check_close, except where torch's value is zero in exact arithmetic (a conv bias ahead of
 * BatchNormLocal, no path): rounding only, checked absolutely */
static double close_or_zero(const char *name, const float *got, int64_t n, const SafeTensors *io, double tol) {
    const StTensor *t = safetensors_find(io, name);
    if (t && got && t->nbytes == n * 4) {
        float *want = malloc((size_t)n * 4);
        double mref = 0, mgot = 0;
        safetensors_read_f32(t, want, n);
        for (int64_t i = 0; i < n; i++) {
            mref = fmax(mref, fabs(want[i]));
            mgot = fmax(mgot, fabs(got[i]));
        }
        free(want);
        if (mref < 1e-6) {
            CHECK(mgot < 1e-4, "%s: torch ~0, addc max |value| %.3g", name, mgot);
            return 0;
        }
    }
    return nn_check_close(name, got, n, io, name, tol);
}

static void test_heads(void) {
    char path[512], cfgp[512];
    DiscHeadsConfig cfg;
    CHECK_OK(disc_heads_config_load(&cfg, nn_src_path(cfgp, sizeof cfgp, "configs/models/tiny_disc_heads.yaml"), NULL, 0));
    ParamStore p, s;
    param_store_init(&p, DEVICE_CPU);
    param_store_init(&s, DEVICE_CPU);
    DiscHeads d;
    CHECK_OK(disc_heads_init(&d, &cfg, &p, &s));
    CHECK_OK(param_store_alloc(&p, true));
    CHECK_OK(param_store_alloc(&s, false));
    CHECK_OK(disc_heads_load(&d, &p, &s, nn_src_path(path, sizeof path, "tests/ref/fixtures/disc/tiny_disc_heads.safetensors"),
                             NULL, NULL));
    printf("tiny_disc_heads: %d heads, %d tensors, %lld parameters\n", (int)cfg.n_heads, p.n, (long long)p.numel);
    SafeTensors io;
    CHECK_OK(safetensors_open(&io, nn_src_path(path, sizeof path, "tests/ref/fixtures/disc/tiny_disc_io.safetensors")));

    TestCtx t;
    tctx_init(&t);
    Ctx *c = &t.c;
    Var *cond = nn_io_var(&t.nt, &io, "c", false);
    Var *tokens[DISC_MAX_HEADS], *logits[DISC_MAX_HEADS], *feat0 = NULL, *loss = NULL;
    char nm[PARAM_NAME_MAX + 32];
    double t0 = nn_now();
    for (int k = 0; k < cfg.n_heads; k++) {
        snprintf(nm, sizeof nm, "tokens.%d", k);
        tokens[k] = nn_io_var(&t.nt, &io, nm, true);
        Var *f = disc_tokens_readout(c, tokens[k]);
        if (k == 0) feat0 = f;
        logits[k] = disc_head_forward(c, &d, k, f, cond, true);
        CHECK_VAR(logits[k]);
        snprintf(nm, sizeof nm, "R.%d", k);
        Var *term = op_sum(c, op_mul(c, logits[k], nn_io_var(&t.nt, &io, nm, false)));
        loss = loss ? op_add(c, loss, term) : term;
    }
    double ms = 1e3 * (nn_now() - t0);
    double wf = 0, ws = 0, wg = 0, wr = 0;
    for (int k = 0; k < cfg.n_heads && logits[k]; k++) {
        snprintf(nm, sizeof nm, "logits.%d", k);
        wf = fmax(wf, nn_check_close(nm, logits[k]->v.data, tensor_numel(&logits[k]->v), &io, nm, FWD_TOL));
    }
    for (int32_t i = 0; i < s.n; i++) {
        Param *q = param_store_get(&s, i);
        snprintf(nm, sizeof nm, "after.%s", q->name);
        ws = fmax(ws, nn_check_close(nm, q->var.v.data, tensor_numel(&q->var.v), &io, nm, FWD_TOL));
    }
    CHECK_OK(tape_backward(c, loss));
    for (int32_t i = 0; i < p.n; i++) {
        Param *q = param_store_get(&p, i);
        snprintf(nm, sizeof nm, "grad.%s", q->name);
        wg = fmax(wg, close_or_zero(nm, q->var.g.data, tensor_numel(&q->var.v), &io, GRAD_TOL));
    }
    for (int k = 0; k < cfg.n_heads; k++) {
        snprintf(nm, sizeof nm, "grad.tokens.%d", k);
        wg = fmax(wg, nn_check_close(nm, tokens[k]->g.data, tensor_numel(&tokens[k]->v), &io, nm, GRAD_TOL));
    }
    /* head 0's R1 on a fresh tape: the same forward without a second power iteration (u, v are
     * already the ones torch's forward normalised with) */
    param_store_zero_grad(&p);
    tctx_reset(&t);
    cond = nn_io_var(&t.nt, &io, "c", false);
    tokens[0] = nn_io_var(&t.nt, &io, "tokens.0", true);
    feat0 = disc_tokens_readout(c, tokens[0]);
    Var *l0 = disc_head_forward(c, &d, 0, feat0, cond, false), *g0 = NULL;
    if (l0) CHECK_OK(autograd_grad(c, op_sum(c, l0), NULL, &feat0, 1, &g0, true));
    Var *r1 = g0 ? op_sum(c, op_mul(c, g0, g0)) : NULL;
    CHECK_VAR(r1);
    if (r1) {
        wr = fmax(wr, nn_check_close("r1", r1->v.data, 1, &io, "r1", FWD_TOL));
        wr = fmax(wr, nn_check_close("g0", g0->v.data, tensor_numel(&g0->v), &io, "g0", FWD_TOL));
        CHECK_OK(tape_backward(c, r1));
        for (int32_t i = 0; i < p.n; i++) {
            Param *q = param_store_get(&p, i);
            if (strncmp(q->name, "heads.0.", 8) != 0) continue;
            snprintf(nm, sizeof nm, "r1.grad.%s", q->name);
            wr = fmax(wr, close_or_zero(nm, q->var.g.data, tensor_numel(&q->var.v), &io, GRAD_TOL));
        }
        wr = fmax(wr, nn_check_close("r1.grad.tokens.0", tokens[0]->g.data, tensor_numel(&tokens[0]->v), &io,
                                     "r1.grad.tokens.0", GRAD_TOL));
    }
    printf("  forward of %d heads %.1f ms: logits %.2e, u/v after %.2e; grads of sum(logits R) %.2e; head 0 R1 and "
           "its grads %.2e\n",
           (int)cfg.n_heads, ms, wf, ws, wg, wr);

    int64_t bad[3] = {16, 10, 20};
    CHECK(disc_head_forward(&t.nt, &d, 0, var_new(&t.nt, DTYPE_F32, 3, bad), cond, false) == NULL &&
              strstr(addc_error_message(), "(B, N, 24)"),
          "wrong feature width refused: '%s'", addc_error_message());
    addc_error_clear();
    CHECK(disc_head_forward(&t.nt, &d, 0, feat0, NULL, false) == NULL && strstr(addc_error_message(), "conditioned"),
          "missing conditioning refused: '%s'", addc_error_message());
    addc_error_clear();
    tctx_free(&t);
    safetensors_close(&io);

    /* a file with a parameter too many is refused and changes nothing */
    float keep = p.data[3];
    ParamStore p2, s2;
    param_store_init(&p2, DEVICE_CPU);
    param_store_init(&s2, DEVICE_CPU);
    DiscHeadsConfig two = cfg;
    two.n_heads = 2;
    DiscHeads d2;
    CHECK_OK(disc_heads_init(&d2, &two, &p2, &s2));
    CHECK_OK(param_store_alloc(&p2, true));
    CHECK_OK(param_store_alloc(&s2, false));
    Status st = disc_heads_load(&d2, &p2, &s2, nn_src_path(path, sizeof path, "tests/ref/fixtures/disc/tiny_disc_heads.safetensors"),
                         NULL, NULL);
    CHECK(st == ADDC_ERR_FORMAT && strstr(addc_error_message(), "unexpected"), "three heads into two: '%s'",
          addc_error_message());
    printf("  three heads' file into two heads refused: %.120s...\n", addc_error_message());
    addc_error_clear();
    CHECK(p.data[3] == keep, "store changed");

    /* fresh weights */
    CHECK_OK(disc_heads_init_weights(&d2, &p2, &s2, 5));
    double nu = 0, nv = 0;
    for (int64_t i = 0; i < tensor_numel(&d2.heads[1].conv1.u->v); i++) nu += pow(((float *)d2.heads[1].conv1.u->v.data)[i], 2);
    for (int64_t i = 0; i < tensor_numel(&d2.heads[1].conv1.v->v); i++) nv += pow(((float *)d2.heads[1].conv1.v->v.data)[i], 2);
    CHECK(fabs(nu - 1) < 1e-5 && fabs(nv - 1) < 1e-5 && ((float *)d2.heads[0].bn1.weight->v.data)[5] == 1.0f &&
              ((float *)d2.heads[0].bn1.bias->v.data)[5] == 0.0f,
          "init: |u|^2 %.6f, |v|^2 %.6f", nu, nv);
    param_store_free(&p2);
    param_store_free(&s2);
    param_store_free(&p);
    param_store_free(&s);
}

int main(void) {
    test_add_meta();
    test_r1_fixture();
    test_heads();
    return test_main_end("test_disc");
}
