/* The exact R1 penalty of a StyleGAN-T discriminator head against PyTorch (fixture r1_head.bin,
 * written by tests/ref/make_r1_fixture.py): the head built from addc ops, one forward with one
 * power iteration per spectral norm, g = d sum(logits) / dx by a create-graph autograd_grad,
 * R1 = sum(g^2) (summed over the batch), tape_backward(R1). Compared tensor by tensor with
 * torch.autograd.grad(..., create_graph=True) + R1.backward() in float64: logits, g, R1, the
 * power-iteration state after the forward, dR1 / d every parameter and dR1 / dx. Prints the max
 * relative error per tensor (relative to the tensor's max magnitude) and the first mismatches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test_util.h"

#define HB 16 /* batch: two BatchNormLocal groups of 8 */
#define HC 24 /* channels */
#define HN 20 /* tokens */
#define HCDIM 12
#define HCMAP 16
#define HVBS 8
#define R1_TOL 1e-4

static const char *const SN_NAMES[3] = {"main.0.0", "main.1.fn.0", "cls"};
static const int SN_K[3] = {1, 9, 1};
static const int SN_COUT[3] = {HC, HC, HCMAP};
static const PadMode SN_PAD[3] = {PAD_ZEROS, PAD_CIRCULAR, PAD_ZEROS};
static const char *const BN_NAMES[2] = {"main.0.1", "main.1.fn.1"};

typedef struct {
    Var *w[3];        /* (Cout, K, Cin), spectral-normalised in the forward */
    Var *b[3];        /* (Cout) */
    Tensor u[3];      /* (Cout) power-iteration state */
    Tensor v[3];      /* (K * Cin), (K, Cin) order */
    Var *gamma[2];    /* (C) BatchNormLocal */
    Var *beta[2];     /* (C) */
    Var *lin_w;       /* (cmap, c_dim) */
    Var *lin_b;       /* (cmap) */
} Head;

/* dst (a, c, b) = src (a, b, c): torch (Cout, Cin, K) -> addc (Cout, K, Cin), (B, C, N) -> (B, N, C) */
static void swap_last2(const float *src, float *dst, int64_t a, int64_t b, int64_t c) {
    for (int64_t i = 0; i < a; i++)
        for (int64_t j = 0; j < b; j++)
            for (int64_t k = 0; k < c; k++) dst[(i * c + k) * b + j] = src[(i * b + j) * c + k];
}

static const FixTensor *fx(const Fixture *f, const char *name) {
    const FixTensor *t = fixture_get(f, name);
    CHECK(t != NULL, "fixture r1_head has no tensor '%s'", name);
    return t;
}

static const FixTensor *fxf(const Fixture *f, const char *fmt, const char *a, const char *b) {
    char nm[128];
    snprintf(nm, sizeof nm, fmt, a, b);
    return fx(f, nm);
}

/* a leaf Var from a fixture tensor, optionally with its last two dims swapped (torch -> addc) */
static Var *leaf_from(TestCtx *t, const FixTensor *ft, bool requires_grad, bool swap) {
    if (!ft) return NULL;
    int64_t s[TENSOR_MAX_DIMS];
    memcpy(s, ft->shape, sizeof s);
    if (swap) {
        s[ft->ndim - 1] = ft->shape[ft->ndim - 2];
        s[ft->ndim - 2] = ft->shape[ft->ndim - 1];
    }
    Var *v = var_new(&t->nt, DTYPE_F32, ft->ndim, s);
    if (!v) return NULL;
    if (swap) swap_last2(ft->data, v->v.data, ft->numel / (s[ft->ndim - 1] * s[ft->ndim - 2]),
                         ft->shape[ft->ndim - 2], ft->shape[ft->ndim - 1]);
    else memcpy(v->v.data, ft->data, (size_t)ft->numel * 4);
    v->requires_grad = requires_grad;
    return v;
}

/* the spectral-norm state u (Cout) and v (Cin * K in torch's order) -> addc's (K, Cin) order */
static bool state_from(TestCtx *t, const FixTensor *fu, const FixTensor *fv, int K, Tensor *u, Tensor *v) {
    if (!fu || !fv) return false;
    *u = ctx_tensor(&t->nt, DTYPE_F32, 1, fu->shape);
    *v = ctx_tensor(&t->nt, DTYPE_F32, 1, fv->shape);
    memcpy(u->data, fu->data, (size_t)fu->numel * 4);
    swap_last2(fv->data, v->data, 1, fv->numel / K, K);
    return true;
}

static bool head_load(TestCtx *t, const Fixture *f, Head *h) {
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        h->w[i] = leaf_from(t, fxf(f, "%s%s", SN_NAMES[i], ".weight_orig"), true, true);
        h->b[i] = leaf_from(t, fxf(f, "%s%s", SN_NAMES[i], ".bias"), true, false);
        ok = ok && h->w[i] && h->b[i] &&
             state_from(t, fxf(f, "%s%s", SN_NAMES[i], ".weight_u0"), fxf(f, "%s%s", SN_NAMES[i], ".weight_v0"),
                        SN_K[i], &h->u[i], &h->v[i]);
        ok = ok && h->w[i]->v.shape[0] == SN_COUT[i] && h->w[i]->v.shape[1] == SN_K[i];
    }
    for (int i = 0; i < 2; i++) {
        h->gamma[i] = leaf_from(t, fxf(f, "%s%s", BN_NAMES[i], ".weight"), true, false);
        h->beta[i] = leaf_from(t, fxf(f, "%s%s", BN_NAMES[i], ".bias"), true, false);
        ok = ok && h->gamma[i] && h->beta[i];
    }
    h->lin_w = leaf_from(t, fx(f, "cmapper.weight"), true, false);
    h->lin_b = leaf_from(t, fx(f, "cmapper.bias"), true, false);
    return ok && h->lin_w && h->lin_b;
}

static Var *sn_conv(Ctx *c, Head *h, int i, Var *x) {
    Var *w = op_spectral_norm(c, h->w[i], &h->u[i], &h->v[i], 1, 1e-12, true);
    return op_conv1d(c, x, w, h->b[i], SN_PAD[i]);
}

static Var *sn_block(Ctx *c, Head *h, int i, Var *x) {
    Var *y = op_batch_norm_local(c, sn_conv(c, h, i, x), h->gamma[i], h->beta[i], HVBS, 1e-5);
    return op_leaky_relu(c, y, 0.2);
}

/* x (B, N, C), cvec (B, c_dim) -> logits (B, N) */
static Var *head_forward(Ctx *c, Head *h, Var *x, Var *cvec) {
    Var *a = sn_block(c, h, 0, x);
    Var *hid = op_scale(c, op_add(c, sn_block(c, h, 1, a), a), M_SQRT1_2, 0.0);
    Var *out = sn_conv(c, h, 2, hid);
    int64_t s_cmap[3] = {HB, 1, HCMAP}, s_sum[3] = {HB, HN, 1}, s_logit[2] = {HB, HN};
    Var *cmap = op_reshape(c, op_linear(c, cvec, h->lin_w, h->lin_b), 3, s_cmap);
    Var *proj = op_sum_to(c, op_mul(c, out, cmap), 3, s_sum);
    return op_scale(c, op_reshape(c, proj, 2, s_logit), 1.0 / sqrt((double)HCMAP), 0.0);
}

/* compares got (addc layout) with a fixture tensor (torch layout, swapped when `swap`) */
static void compare(const Fixture *f, const char *name, const float *got, int64_t n, bool swap) {
    const FixTensor *ft = fx(f, name);
    if (!ft) return;
    CHECK(ft->numel == n, "%s: %lld elements, torch has %lld", name, (long long)n, (long long)ft->numel);
    if (ft->numel != n) return;
    if (!got) { /* no gradient reached it: right only where torch's is zero */
        double mref = 0;
        for (int64_t i = 0; i < n; i++) mref = fmax(mref, fabs(ft->data[i]));
        printf("  %-32s no gradient in addc; torch max |value| %.2e\n", name, mref);
        CHECK(mref < 1e-6, "%s: addc computed no gradient where torch's reaches %.3g", name, mref);
        return;
    }
    float *want = malloc((size_t)n * 4);
    if (swap)
        swap_last2(ft->data, want, n / (ft->shape[ft->ndim - 1] * ft->shape[ft->ndim - 2]), ft->shape[ft->ndim - 2],
                   ft->shape[ft->ndim - 1]);
    else
        memcpy(want, ft->data, (size_t)n * 4);
    double mref = 0, mgot = 0;
    for (int64_t i = 0; i < n; i++) {
        mref = fmax(mref, fabs(want[i]));
        mgot = fmax(mgot, fabs(got[i]));
    }
    if (mref < 1e-6) {
        /* zero in exact arithmetic (no path, or a bias ahead of BatchNormLocal): rounding only */
        printf("  %-32s zero in torch (max %.2e); addc max |value| %.2e\n", name, mref, mgot);
        CHECK(mgot < 1e-4, "%s: torch has ~0, addc max |value| %.3g", name, mgot);
    } else {
        double e = compare_f32(name, got, want, n, R1_TOL, 1e-6);
        printf("  %-32s max rel err %.2e  (max |torch| %.3g)\n", name, e, mref);
        CHECK(e <= R1_TOL, "%s: max rel err %.3g > %.1g", name, e, R1_TOL);
    }
    free(want);
}

static const float *grad_of(const Var *v) { return v ? (const float *)v->g.data : NULL; }

int main(void) {
    Fixture f;
    if (!fixture_load("r1_head", &f)) {
        CHECK(0, "cannot load fixture r1_head (python3 tests/ref/make_r1_fixture.py)");
        return test_main_end("test_r1_head");
    }
    TestCtx t;
    tctx_init(&t);
    Head h;
    memset(&h, 0, sizeof h);
    bool ok = head_load(&t, &f, &h);
    Var *x = leaf_from(&t, fx(&f, "x"), true, true);
    Var *cvec = leaf_from(&t, fx(&f, "c"), false, false);
    CHECK(ok && x && cvec, "fixture r1_head does not hold the head's tensors in the expected shapes");
    if (!ok || !x || !cvec) goto done;
    CHECK(x->v.shape[0] == HB && x->v.shape[1] == HN && x->v.shape[2] == HC, "x is not (%d, %d, %d)", HB, HN, HC);

    Ctx *c = &t.c;
    Var *logits = head_forward(c, &h, x, cvec);
    CHECK_VAR(logits);
    if (!logits) goto done;
    Var *g = NULL;
    Status st = autograd_grad(c, op_sum(c, logits), NULL, &x, 1, &g, true);
    CHECK_OK(st);
    CHECK(g != NULL, "no gradient path from the logits to x");
    if (st != ADDC_OK || !g) goto done;
    Var *r1 = op_sum(c, op_mul(c, g, g));
    CHECK_VAR(r1);
    if (!r1) goto done;
    st = tape_backward(c, r1);
    CHECK_OK(st);
    if (st != ADDC_OK) goto done;

    printf("  R1 = %.7g (torch %.7g), tape %d nodes\n", *(float *)r1->v.data, fx(&f, "r1")->data[0], t.tape.n);
    compare(&f, "logits", logits->v.data, HB * HN, false);
    compare(&f, "g", g->v.data, HB * HN * HC, true);
    compare(&f, "r1", r1->v.data, 1, false);
    char nm[128];
    for (int i = 0; i < 3; i++) {
        snprintf(nm, sizeof nm, "%s.weight_u", SN_NAMES[i]);
        compare(&f, nm, h.u[i].data, tensor_numel(&h.u[i]), false);
        snprintf(nm, sizeof nm, "%s.weight_v", SN_NAMES[i]);
        const FixTensor *fv = fx(&f, nm);
        if (fv) {
            /* v: torch's (Cin, K) order; compare in that order */
            float *vt = malloc((size_t)fv->numel * 4);
            swap_last2(h.v[i].data, vt, 1, SN_K[i], fv->numel / SN_K[i]);
            compare(&f, nm, vt, fv->numel, false);
            free(vt);
        }
    }
    for (int i = 0; i < 3; i++) {
        snprintf(nm, sizeof nm, "grad/%s.weight_orig", SN_NAMES[i]);
        compare(&f, nm, grad_of(h.w[i]), tensor_numel(&h.w[i]->v), true);
        snprintf(nm, sizeof nm, "grad/%s.bias", SN_NAMES[i]);
        compare(&f, nm, grad_of(h.b[i]), tensor_numel(&h.b[i]->v), false);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(nm, sizeof nm, "grad/%s.weight", BN_NAMES[i]);
        compare(&f, nm, grad_of(h.gamma[i]), HC, false);
        snprintf(nm, sizeof nm, "grad/%s.bias", BN_NAMES[i]);
        compare(&f, nm, grad_of(h.beta[i]), HC, false);
    }
    compare(&f, "grad/cmapper.weight", grad_of(h.lin_w), HCMAP * HCDIM, false);
    compare(&f, "grad/cmapper.bias", grad_of(h.lin_b), HCMAP, false);
    compare(&f, "grad/x", grad_of(x), HB * HN * HC, true);
done:
    addc_error_clear();
    tctx_free(&t);
    fixture_free(&f);
    return test_main_end("test_r1_head");
}
