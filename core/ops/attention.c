/* core/ops/attention: softmax over the last dim, and memory-efficient multi-head scaled
 * dot-product attention.
 *
 * Attention is flash-style: the forward works on one (batch, head, block of ATTN_QB query
 * rows) at a time, walking the keys in blocks of ATTN_KB with an online softmax (running row
 * max and sum, the output block rescaled when the max moves), so scratch is one block of
 * scores per thread, never an Nq x Nk matrix. Items run on the pool; inside an item the
 * products are register-tiled 6 x 16 kernels (mm_tiles), not BLAS: OpenBLAS is slow at
 * these shapes (K = 64 products re-packed for every block) and must not be called from the
 * pool. Operands are read in place through row strides, except K^T (and V^T in backward),
 * copied once per head into 16-key panels, and Q, K, V, dO rows, copied zero-padded only
 * when a head width is not a multiple of 16: O(inputs) extra memory. The forward saves the
 * row logsumexp (B, NH, Nq); backward runs one (batch, head) per item, recomputing P per
 * block from it. Each item is computed by one thread, so results do not depend on the
 * thread count. The CUDA kernels (core/cuda/attention.cu) save the same logsumexp in
 * saved[0]. Values are f32 on the CPU; on CUDA q, k, v may be bf16 (all three of one dtype),
 * and the output has their dtype.
 *
 * Gradient rule: += into every input gradient. Softmax: dx = y * (dy - sum(dy * y)).
 * Attention, per block: dP = dO V^T, D_i = rowsum(dO_i * O_i), dS = P * (dP - D),
 * dQ += scale dS K, dK += scale dS^T Q, dV += P^T dO. Each (batch, head) item owns its
 * columns of dq, dk, dv, so items accumulate into them directly without races. */
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"
#include "core/ops/simd.h"

#define ATTN_QB 96  /* query rows per block (a multiple of the 6-row kernel) */
#define ATTN_KB 512 /* keys per block (a multiple of 16) */

static inline v8f v8_max(v8f a, v8f b) {
    v8i m = a > b;
    return (v8f)(((v8i)a & m) | ((v8i)b & ~m));
}
static inline float v8_hmax(v8f v) {
    float m = v[0];
    for (int i = 1; i < 8; i++) m = v[i] > m ? v[i] : m;
    return m;
}


/* ---- row helpers ---- */

static inline int64_t round8(int64_t n) { return (n + 7) & ~(int64_t)7; }
static inline int64_t round16(int64_t n) { return (n + 15) & ~(int64_t)15; }

/* Score rows have room up to round8(n): s[n..round8(n)) is filled with -inf so the row
 * passes run on whole vectors (exp(-inf) = 0). */
static void row_pad_neg_inf(float *s, int64_t n) {
    for (int64_t c = n; c < round8(n); c++) s[c] = -INFINITY;
}

static float row_max8(const float *s, int64_t n8) {
    v8f vm = v8_set1(-INFINITY);
    for (int64_t j = 0; j < n8; j += 8) vm = v8_max(vm, v8_load(s + j));
    return v8_hmax(vm);
}

/* s[0..n8) <- exp(s - m); returns the sum */
static float row_exp_sub8(float *s, int64_t n8, float m) {
    v8f vm = v8_set1(m), acc = v8_set1(0.0f);
    for (int64_t j = 0; j < n8; j += 8) {
        v8f e = v8_exp(v8_load(s + j) - vm);
        acc += e;
        v8_store(s + j, e);
    }
    return v8_hsum(acc);
}

static void row_scale(float *x, int64_t n, float f) {
    v8f vf = v8_set1(f);
    int64_t e = 0;
    for (; e + 8 <= n; e += 8) v8_store(x + e, v8_load(x + e) * vf);
    for (; e < n; e++) x[e] *= f;
}

static float f_exp(float x) {
    float buf[8] = {x};
    v8_store(buf, v8_exp(v8_load(buf)));
    return buf[0];
}

static float dot_row(const float *a, const float *b, int64_t n) {
    v8f acc = v8_set1(0.0f);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) acc += v8_load(a + j) * v8_load(b + j);
    float s = v8_hsum(acc);
    for (; j < n; j++) s += a[j] * b[j];
    return s;
}

/* ---- softmax ---- */

typedef struct {
    int64_t D;
    const float *x, *y, *dy;
    float *out;
} SmJob;

static void sm_fwd_rows(void *ctx, int64_t r0, int64_t r1) {
    SmJob *j = ctx;
    int64_t D = j->D, D8 = D / 8 * 8, nt = D - D8;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = j->x + r * D;
        float *y = j->out + r * D, tail[8];
        for (int64_t k = 0; k < 8; k++) tail[k] = k < nt ? x[D8 + k] : -INFINITY;
        float m = row_max8(x, D8), mt = row_max8(tail, 8);
        m = mt > m ? mt : m;
        memcpy(y, x, (size_t)D8 * 4);
        float sum = row_exp_sub8(y, D8, m) + row_exp_sub8(tail, 8, m);
        memcpy(y + D8, tail, (size_t)nt * 4);
        row_scale(y, D, 1.0f / sum);
    }
}

static void sm_bwd_rows(void *ctx, int64_t r0, int64_t r1) {
    SmJob *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        const float *y = j->y + r * j->D, *dy = j->dy + r * j->D;
        float *gx = j->out + r * j->D;
        float s = dot_row(dy, y, j->D);
        v8f vs = v8_set1(s);
        int64_t k = 0;
        for (; k + 8 <= j->D; k += 8) v8_store(gx + k, v8_load(gx + k) + v8_load(y + k) * (v8_load(dy + k) - vs));
        for (; k < j->D; k++) gx[k] += y[k] * (dy[k] - s);
    }
}

static int64_t rows_grain(int64_t D) {
    int64_t g = 16384 / (D ? D : 1);
    return g < 1 ? 1 : g;
}

static Status sm_fwd(Ctx *c, Node *n) {
    (void)c;
    SmJob j = {.D = n->in[0]->v.shape[n->in[0]->v.ndim - 1], .x = n->in[0]->v.data, .out = n->out->v.data};
    if (j.D == 0) return ADDC_OK;
    parallel_for(tensor_numel(&n->out->v) / j.D, rows_grain(j.D), sm_fwd_rows, &j);
    return ADDC_OK;
}

static Status sm_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    SmJob j = {.D = n->out->v.shape[n->out->v.ndim - 1], .y = n->out->v.data, .dy = n->out->g.data, .out = gx};
    if (j.D == 0) return ADDC_OK;
    parallel_for(tensor_numel(&n->out->v) / j.D, rows_grain(j.D), sm_bwd_rows, &j);
    return ADDC_OK;
}

Var *op_softmax(Ctx *c, Var *x) {
    OPS_NULL_GUARD1(x);
    if (!ops_require_float("softmax", "x", x)) return NULL;
    if (x->v.ndim < 1) return ops_fail("softmax", "x must have at least one dim");
    Node n = node_make(OP_SOFTMAX, 1, &x);
    return op_exec(c, &n, x->v.dtype, x->v.ndim, x->v.shape);
}

const OpImpl cpu_op_softmax = {sm_fwd, sm_bwd, NULL};

/* ---- register-tiled products ---- */

/* C[r][0..16) (+)= alpha * sum_p A[r * sai + p * sap] * B[p * ldb + 0..16) for r < mr <= 6.
 * A row-major is sai = lda, sap = 1; A transposed (C = A^T B) is sai = 1, sap = lda. */
static inline void mk_6x16(int64_t kk, const float *A, int64_t sai, int64_t sap, int mr, const float *B,
                           int64_t ldb, float *C, int64_t ldc, float alpha, bool accum) {
    const float *a0 = A, *a1 = A + (mr > 1 ? sai : 0), *a2 = A + (mr > 2 ? 2 * sai : 0);
    const float *a3 = A + (mr > 3 ? 3 * sai : 0), *a4 = A + (mr > 4 ? 4 * sai : 0), *a5 = A + (mr > 5 ? 5 * sai : 0);
    v8f z = v8_set1(0.0f);
    v8f c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;
    for (int64_t p = 0; p < kk; p++) {
        const float *b = B + p * ldb;
        v8f b0 = v8_load(b), b1 = v8_load(b + 8), x;
        int64_t o = p * sap;
        x = v8_set1(a0[o]), c00 += x * b0, c01 += x * b1;
        x = v8_set1(a1[o]), c10 += x * b0, c11 += x * b1;
        x = v8_set1(a2[o]), c20 += x * b0, c21 += x * b1;
        x = v8_set1(a3[o]), c30 += x * b0, c31 += x * b1;
        x = v8_set1(a4[o]), c40 += x * b0, c41 += x * b1;
        x = v8_set1(a5[o]), c50 += x * b0, c51 += x * b1;
    }
    v8f acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    v8f va = v8_set1(alpha);
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc;
        v8f t0 = va * acc[r][0], t1 = va * acc[r][1];
        if (accum) t0 += v8_load(c), t1 += v8_load(c + 8);
        v8_store(c, t0);
        v8_store(c + 8, t1);
    }
}

/* C (m x n16) (+)= alpha * A (m x kk, strides sai, sap) B (kk x n16); n16 a multiple of 16.
 * B's 16-column panel t starts at B + t * bps with row stride ldb: a row-major B is
 * (ldb, bps = 16), a panel-major one (packed by pack_panels) is (16, rows * 16). The panel
 * stays in cache across the row tiles. */
static void mm_tiles(int64_t m, int64_t n16, int64_t kk, const float *A, int64_t sai, int64_t sap, const float *B,
                     int64_t ldb, int64_t bps, float *C, int64_t ldc, float alpha, bool accum) {
    for (int64_t j = 0; j < n16; j += 16)
        for (int64_t i = 0; i < m; i += 6)
            mk_6x16(kk, A + i * sai, sai, sap, m - i < 6 ? (int)(m - i) : 6, B + j / 16 * bps, ldb, C + i * ldc + j,
                    ldc, alpha, accum);
}

/* src (rows x cols, row stride lds)^T in panel-major layout: panel t (rows 16t..16t+16 of
 * src) is a contiguous (cols x 16) block at dst + t * cols * 16, zero-padded past rows. A
 * transposed row-major copy would put its 16-float rows a whole row apart, and a stride of
 * 16 KB maps every row of a panel to the same L1 set. */
static void pack_panels(float *dst, const float *src, int64_t lds, int64_t rows, int64_t cols) {
    for (int64_t t = 0; t < round16(rows); t += 16) {
        float *d = dst + t * cols;
        for (int64_t c = 0; c < cols; c++)
            for (int64_t r = 0; r < 16; r++) d[c * 16 + r] = t + r < rows ? src[(t + r) * lds + c] : 0.0f;
    }
}

/* dst (rows x ld_dst, zero-padded columns) = src (rows x cols, row stride lds) */
static void pack_rows(float *dst, int64_t ld_dst, const float *src, int64_t lds, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        memcpy(dst + r * ld_dst, src + r * lds, (size_t)cols * 4);
        memset(dst + r * ld_dst + cols, 0, (size_t)(ld_dst - cols) * 4);
    }
}

/* dst rows (+)= src rows over cols columns */
static void add_rows(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[r * ldd + c] += src[r * lds + c];
}

/* ---- attention ---- */

typedef struct {
    int64_t B, Nq, Nk, NH, Dh, Dv;
    int64_t ldq, ldk, ldv, ldo; /* row strides: NH*Dh, NH*Dh, NH*Dv, NH*Dv */
    int64_t Dh16, Dv16, Nk16;   /* rounded up to multiples of 16 */
    float scale;
    bool causal;
} AttnShape;

static AttnShape attn_shape(const Node *n) {
    const Tensor *q = &n->in[0]->v, *k = &n->in[1]->v, *v = &n->in[2]->v;
    AttnShape a;
    a.NH = n->ip[0];
    a.causal = n->ip[1] != 0;
    a.B = q->shape[0];
    a.Nq = q->shape[1];
    a.Nk = k->shape[1];
    a.ldq = a.ldk = q->shape[2];
    a.ldv = a.ldo = v->shape[2];
    a.Dh = a.ldq / a.NH;
    a.Dv = a.ldv / a.NH;
    a.Dh16 = round16(a.Dh);
    a.Dv16 = round16(a.Dv);
    a.Nk16 = round16(a.Nk);
    a.scale = (float)n->fp[0];
    return a;
}

/* keys [0, n) visible to query row qi */
static inline int64_t attn_visible(const AttnShape *a, int64_t qi) {
    if (!a->causal) return a->Nk;
    return qi + 1 < a->Nk ? qi + 1 : a->Nk;
}

static inline int64_t attn_ldS(const AttnShape *a) { return a->Nk16 < ATTN_KB ? a->Nk16 : ATTN_KB; }

/* Work items are claimed from an atomic counter by one loop per pool slot; each slot owns
 * its slot_floats of `scratch`, so nothing in the loop allocates. */
typedef struct {
    const AttnShape *a;
    const float *q, *k, *v;   /* (B, Nq, NH*Dh), (B, Nk, NH*Dh), (B, Nk, NH*Dv) */
    const float *o, *dout;    /* (B, Nq, NH*Dv): backward */
    const float *kt_all;      /* (B*NH, Nk16/16, Dh, 16): K^T panels, forward */
    const float *vp_all;      /* (B*NH, Nk, Dv16): padded V when Dv % 16 != 0, forward */
    float *out;               /* (B, Nq, NH*Dv) */
    float *lse;               /* (B, NH, Nq): written by forward when saving, read by backward */
    float *gq, *gk, *gv;      /* shapes of q, k, v; NULL where no gradient is wanted */
    int64_t nqb, nitems, slot_floats;
    float *scratch;           /* (slots, slot_floats) */
    _Atomic int64_t next;
} AttnJob;

static void attn_fwd_item(AttnJob *j, int64_t it, float *scr) {
    const AttnShape *a = j->a;
    int64_t bh = it / j->nqb, b = bh / a->NH, h = bh % a->NH, q0 = it % j->nqb * ATTN_QB;
    int64_t rows = q0 + ATTN_QB < a->Nq ? ATTN_QB : a->Nq - q0, ldS = attn_ldS(a);
    float *S = scr, *O = S + ATTN_QB * ldS, *m = O + ATTN_QB * a->Dv16, *l = m + ATTN_QB;
    const float *q = j->q + (b * a->Nq + q0) * a->ldq + h * a->Dh;
    const float *kt = j->kt_all + bh * a->Dh * a->Nk16;
    const float *vs = j->vp_all ? j->vp_all + bh * a->Nk * a->Dv16 : j->v + b * a->Nk * a->ldv + h * a->Dv;
    int64_t ldvs = j->vp_all ? a->Dv16 : a->ldv;
    memset(O, 0, (size_t)(rows * a->Dv16) * 4);
    for (int64_t i = 0; i < rows; i++) m[i] = -INFINITY, l[i] = 0.0f;
    int64_t kend = attn_visible(a, q0 + rows - 1);
    for (int64_t kb0 = 0; kb0 < kend; kb0 += ATTN_KB) {
        int64_t nk = kend - kb0 < ATTN_KB ? kend - kb0 : ATTN_KB;
        mm_tiles(rows, round16(nk), a->Dh, q, a->ldq, 1, kt + kb0 * a->Dh, 16, a->Dh * 16, S, ldS, a->scale, false);
        for (int64_t i = 0; i < rows; i++) {
            float *s = S + i * ldS, *oi = O + i * a->Dv16;
            int64_t vis = attn_visible(a, q0 + i) - kb0;
            vis = vis < 0 ? 0 : vis < nk ? vis : nk;
            if (vis > 0) {
                row_pad_neg_inf(s, vis);
                float bm = row_max8(s, round8(vis)), mn = bm > m[i] ? bm : m[i];
                float corr = f_exp(m[i] - mn);
                l[i] = l[i] * corr + row_exp_sub8(s, round8(vis), mn);
                if (corr != 1.0f) row_scale(oi, a->Dv16, corr);
                m[i] = mn;
            }
            if (round8(vis) < nk) memset(s + round8(vis), 0, (size_t)(nk - round8(vis)) * 4);
        }
        mm_tiles(rows, a->Dv16, nk, S, ldS, 1, vs + kb0 * ldvs, ldvs, 16, O, a->Dv16, 1.0f, true);
    }
    for (int64_t i = 0; i < rows; i++) {
        float *dst = j->out + (b * a->Nq + q0 + i) * a->ldo + h * a->Dv, *oi = O + i * a->Dv16;
        row_scale(oi, a->Dv, 1.0f / l[i]);
        memcpy(dst, oi, (size_t)a->Dv * 4);
        if (j->lse) j->lse[bh * a->Nq + q0 + i] = m[i] + logf(l[i]);
    }
}

/* A backward slot's scratch, in floats from its start. The key-block gradients dkb, dvb
 * stay in cache while every query block passes; qp, dop, dq (row-layout copies of Q, dO and
 * the dQ accumulator) exist only for heads whose width is not a multiple of 16. */
typedef struct {
    int64_t kt, vt, S, dP, dkb, dvb, kpb, qp, dop, dq, D, total;
} AttnBwdLayout;

static int64_t take(int64_t *off, int64_t n) {
    int64_t at = *off;
    *off += n;
    return at;
}

static AttnBwdLayout attn_bwd_layout(const AttnShape *a, bool gq, bool gk, bool gv) {
    bool kpad = a->Dh != a->Dh16, vpad = a->Dv != a->Dv16;
    int64_t ldS = attn_ldS(a), off = 0;
    AttnBwdLayout L;
    L.kt = take(&off, a->Dh * a->Nk16);
    L.vt = take(&off, (gq || gk) ? a->Dv * a->Nk16 : 0);
    L.S = take(&off, ATTN_QB * ldS);
    L.dP = take(&off, ATTN_QB * ldS);
    L.dkb = take(&off, gk ? ldS * a->Dh16 : 0);
    L.dvb = take(&off, gv ? ldS * a->Dv16 : 0);
    L.kpb = take(&off, gq && kpad ? ldS * a->Dh16 : 0);
    L.qp = take(&off, gk && kpad ? a->Nq * a->Dh16 : 0);
    L.dop = take(&off, gv && vpad ? a->Nq * a->Dv16 : 0);
    L.dq = take(&off, gq && kpad ? a->Nq * a->Dh16 : 0);
    L.D = take(&off, a->Nq);
    L.total = off + 16;
    return L;
}

/* One (batch, head), FlashAttention-2 order: for each key block, every query block that can
 * see it recomputes P from the saved logsumexp; dK, dV of the key block accumulate in the
 * slot, dQ straight into dq's rows (this item owns the head's columns). The slot's layout is
 * attn_bwd_layout's. */
static void attn_bwd_item(AttnJob *j, int64_t bh, float *scr) {
    const AttnShape *a = j->a;
    int64_t b = bh / a->NH, h = bh % a->NH, ldS = attn_ldS(a);
    bool need_ds = j->gq || j->gk, kpad = a->Dh != a->Dh16, vpad = a->Dv != a->Dv16;
    int64_t qo = b * a->Nq * a->ldq + h * a->Dh, oo = b * a->Nq * a->ldo + h * a->Dv;
    const float *kh = j->k + b * a->Nk * a->ldk + h * a->Dh, *vh = j->v + b * a->Nk * a->ldv + h * a->Dv;
    const float *qh = j->q + qo, *doh = j->dout + oo, *lse = j->lse + bh * a->Nq;
    float *gqh = j->gq ? j->gq + qo : NULL;
    float *gkh = j->gk ? j->gk + b * a->Nk * a->ldk + h * a->Dh : NULL;
    float *gvh = j->gv ? j->gv + b * a->Nk * a->ldv + h * a->Dv : NULL;
    AttnBwdLayout L = attn_bwd_layout(a, gqh, gkh, gvh);
    float *kt = scr + L.kt, *vt = scr + L.vt, *S = scr + L.S, *dP = scr + L.dP, *dkb = scr + L.dkb;
    float *dvb = scr + L.dvb, *D = scr + L.D;
    pack_panels(kt, kh, a->ldk, a->Nk, a->Dh);
    if (need_ds) pack_panels(vt, vh, a->ldv, a->Nk, a->Dv);
    /* B operands read as 16-wide rows: in place when 16-aligned, else zero-padded copies */
    const float *qs = qh, *dos = doh;
    int64_t ldqs = a->ldq, ldos = a->ldo, lddq = a->ldq;
    float *dqt = gqh;
    if (gkh && kpad) pack_rows(scr + L.qp, a->Dh16, qh, a->ldq, a->Nq, a->Dh), qs = scr + L.qp, ldqs = a->Dh16;
    if (gvh && vpad) pack_rows(scr + L.dop, a->Dv16, doh, a->ldo, a->Nq, a->Dv), dos = scr + L.dop, ldos = a->Dv16;
    if (gqh && kpad) {
        dqt = scr + L.dq, lddq = a->Dh16;
        memset(dqt, 0, (size_t)(a->Nq * a->Dh16) * 4);
    }
    for (int64_t i = 0; i < a->Nq; i++) D[i] = dot_row(doh + i * a->ldo, j->o + oo + i * a->ldo, a->Dv);
    for (int64_t kb0 = 0; kb0 < a->Nk; kb0 += ATTN_KB) {
        int64_t nk = a->Nk - kb0 < ATTN_KB ? a->Nk - kb0 : ATTN_KB, nk16 = round16(nk), nk8 = round8(nk);
        if (gkh) memset(dkb, 0, (size_t)(nk * a->Dh16) * 4);
        if (gvh) memset(dvb, 0, (size_t)(nk * a->Dv16) * 4);
        const float *ks = kh + kb0 * a->ldk;
        int64_t ldks = a->ldk;
        if (gqh && kpad) pack_rows(scr + L.kpb, a->Dh16, ks, a->ldk, nk, a->Dh), ks = scr + L.kpb, ldks = a->Dh16;
        /* causal: query rows before kb0 see none of this block */
        int64_t qstart = a->causal ? kb0 / ATTN_QB * ATTN_QB : 0;
        for (int64_t q0 = qstart; q0 < a->Nq; q0 += ATTN_QB) {
            int64_t rows = q0 + ATTN_QB < a->Nq ? ATTN_QB : a->Nq - q0;
            mm_tiles(rows, nk16, a->Dh, qh + q0 * a->ldq, a->ldq, 1, kt + kb0 * a->Dh, 16, a->Dh * 16, S, ldS,
                     a->scale, false);
            if (need_ds)
                mm_tiles(rows, nk16, a->Dv, doh + q0 * a->ldo, a->ldo, 1, vt + kb0 * a->Dv, 16, a->Dv * 16, dP, ldS,
                         1.0f, false);
            for (int64_t i = 0; i < rows; i++) {
                float *s = S + i * ldS, *dp = dP + i * ldS;
                int64_t vis = attn_visible(a, q0 + i) - kb0;
                vis = vis < 0 ? 0 : vis < nk ? vis : nk;
                row_pad_neg_inf(s, vis);
                v8f vl = v8_set1(lse[q0 + i]);
                for (int64_t c = 0; c < round8(vis); c += 8) v8_store(s + c, v8_exp(v8_load(s + c) - vl));
                if (round8(vis) < nk8) memset(s + round8(vis), 0, (size_t)(nk8 - round8(vis)) * 4);
                if (!need_ds) continue;
                v8f vd = v8_set1(D[q0 + i]);
                for (int64_t c = 0; c < nk8; c += 8) v8_store(dp + c, v8_load(s + c) * (v8_load(dp + c) - vd));
            }
            if (gvh) mm_tiles(nk, a->Dv16, rows, S, 1, ldS, dos + q0 * ldos, ldos, 16, dvb, a->Dv16, 1.0f, true);
            if (gkh) mm_tiles(nk, a->Dh16, rows, dP, 1, ldS, qs + q0 * ldqs, ldqs, 16, dkb, a->Dh16, a->scale, true);
            if (gqh)
                mm_tiles(rows, a->Dh16, nk, dP, ldS, 1, ks, ldks, 16, dqt + q0 * lddq, lddq, a->scale, true);
        }
        if (gkh) add_rows(gkh + kb0 * a->ldk, a->ldk, dkb, a->Dh16, nk, a->Dh);
        if (gvh) add_rows(gvh + kb0 * a->ldv, a->ldv, dvb, a->Dv16, nk, a->Dv);
    }
    if (gqh && kpad) add_rows(gqh, a->ldq, dqt, a->Dh16, a->Nq, a->Dh);
}

typedef struct {
    AttnJob *j;
    bool bwd;
} AttnRun;

static void attn_slots(void *ctx, int64_t s0, int64_t s1) {
    (void)s1;
    AttnRun *r = ctx;
    AttnJob *j = r->j;
    float *scr = j->scratch + s0 * j->slot_floats;
    for (;;) {
        int64_t it = atomic_fetch_add(&j->next, 1);
        if (it >= j->nitems) break;
        if (r->bwd) attn_bwd_item(j, it, scr);
        else attn_fwd_item(j, it, scr);
    }
}

/* runs every item of j on min(threads, items) slots of slot_floats scratch each */
static Status attn_run(Ctx *c, AttnJob *j, bool bwd) {
    int64_t nslots = parallel_threads();
    if (nslots > j->nitems) nslots = j->nitems;
    if (nslots < 1) return ADDC_OK;
    j->scratch = ctx_alloc(c, nslots * j->slot_floats * 4);
    if (!j->scratch) return addc_error_status();
    atomic_init(&j->next, 0);
    AttnRun r = {j, bwd};
    parallel_for(nslots, 1, attn_slots, &r);
    return ADDC_OK;
}

typedef struct {
    const AttnShape *a;
    const float *k, *v;
    float *kt_all, *vp_all;
} PackJob;

static void pack_heads(void *ctx, int64_t i0, int64_t i1) {
    PackJob *p = ctx;
    const AttnShape *a = p->a;
    for (int64_t bh = i0; bh < i1; bh++) {
        int64_t b = bh / a->NH, h = bh % a->NH;
        pack_panels(p->kt_all + bh * a->Dh * a->Nk16, p->k + b * a->Nk * a->ldk + h * a->Dh, a->ldk, a->Nk, a->Dh);
        if (p->vp_all)
            pack_rows(p->vp_all + bh * a->Nk * a->Dv16, a->Dv16, p->v + b * a->Nk * a->ldv + h * a->Dv, a->ldv,
                      a->Nk, a->Dv);
    }
}

static Status attn_fwd(Ctx *c, Node *n) {
    AttnShape a = attn_shape(n);
    AttnJob j = {.a = &a, .q = n->in[0]->v.data, .k = n->in[1]->v.data, .v = n->in[2]->v.data,
                 .out = n->out->v.data};
    if (n->save) {
        int64_t ls[3] = {a.B, a.NH, a.Nq};
        n->saved[0] = ctx_tensor(c, DTYPE_F32, 3, ls);
        if (!n->saved[0].data) return addc_error_status();
        j.lse = n->saved[0].data;
    }
    if (a.Nq == 0 || a.B == 0) return ADDC_OK;
    ArenaMark mark = arena_mark(c->arena);
    PackJob pk = {&a, j.k, j.v, ctx_alloc(c, a.B * a.NH * a.Dh * a.Nk16 * 4), NULL};
    if (a.Dv != a.Dv16) pk.vp_all = ctx_alloc(c, a.B * a.NH * a.Nk * a.Dv16 * 4);
    if (!pk.kt_all || (a.Dv != a.Dv16 && !pk.vp_all)) return addc_error_status();
    parallel_for(a.B * a.NH, 1, pack_heads, &pk);
    j.kt_all = pk.kt_all;
    j.vp_all = pk.vp_all;
    j.nqb = (a.Nq + ATTN_QB - 1) / ATTN_QB;
    j.nitems = a.B * a.NH * j.nqb;
    j.slot_floats = ATTN_QB * (attn_ldS(&a) + a.Dv16 + 2) + 16;
    Status st = attn_run(c, &j, false);
    arena_reset_to(c->arena, mark);
    return st;
}

static Status attn_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    AttnJob j = {.gq = ops_in_grad(c, n, 0, &st), .gk = ops_in_grad(c, n, 1, &st), .gv = ops_in_grad(c, n, 2, &st)};
    if (st) return st;
    if (!j.gq && !j.gk && !j.gv) return ADDC_OK;
    AttnShape a = attn_shape(n);
    if (a.Nq == 0 || a.B == 0) return ADDC_OK;
    j.a = &a;
    j.q = n->in[0]->v.data;
    j.k = n->in[1]->v.data;
    j.v = n->in[2]->v.data;
    j.o = n->out->v.data;
    j.dout = n->out->g.data;
    j.lse = n->saved[0].data;
    j.nitems = a.B * a.NH;
    j.slot_floats = attn_bwd_layout(&a, j.gq, j.gk, j.gv).total;
    ArenaMark mark = arena_mark(c->arena);
    st = attn_run(c, &j, true);
    arena_reset_to(c->arena, mark);
    return st;
}

Var *op_attention(Ctx *c, Var *q, Var *k, Var *v, int heads, double scale, bool causal) {
    OPS_NULL_GUARD3(q, k, v);
    if (!ops_require_float("attention", "q", q) || !ops_require_same_float("attention", q, k) ||
        !ops_require_same_float("attention", q, v))
        return NULL;
    const Tensor *tq = &q->v, *tk = &k->v, *tv = &v->v;
    char s1[96], s2[96], s3[96];
    if (tq->ndim != 3 || tk->ndim != 3 || tv->ndim != 3 || tk->shape[0] != tq->shape[0] ||
        tv->shape[0] != tq->shape[0] || tv->shape[1] != tk->shape[1] || tk->shape[2] != tq->shape[2])
        return ops_fail("attention",
                        "expected q (B, Nq, NH*Dh), k (B, Nk, NH*Dh), v (B, Nk, NH*Dv); got q %s, k %s, v %s",
                        ops_shape_str(tq, s1, sizeof s1), ops_shape_str(tk, s2, sizeof s2),
                        ops_shape_str(tv, s3, sizeof s3));
    if (heads < 1 || tq->shape[2] % heads != 0 || tv->shape[2] % heads != 0 || tq->shape[2] == 0 ||
        tv->shape[2] == 0)
        return ops_fail("attention", "%d heads do not divide q's width %lld and v's width %lld", heads,
                        (long long)tq->shape[2], (long long)tv->shape[2]);
    if (tk->shape[1] < 1) return ops_fail("attention", "no keys (k has Nk = 0)");
    Var *in[3] = {q, k, v};
    Node n = node_make(OP_ATTENTION, 3, in);
    n.ip[0] = heads;
    n.ip[1] = causal;
    n.fp[0] = scale > 0 ? scale : 1.0 / sqrt((double)(tq->shape[2] / heads));
    int64_t oshape[3] = {tq->shape[0], tq->shape[1], tv->shape[2]};
    return op_exec(c, &n, tq->dtype, 3, oshape);
}

const OpImpl cpu_op_attention = {attn_fwd, attn_bwd, NULL};
