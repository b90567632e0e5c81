/* core/ops/conv: 2-D convolution (channels last), and the 1-D "same" convolution of the
 * discriminator heads (zero or circular padding) with its transpose.
 *
 * Stride 1 runs on a padded grid: x is copied once into a padded (B, H+2ph, W+2pw, Cin)
 * buffer, and the output is computed for every row of that grid, so that tap (kh, kw) of the
 * kernel is ONE sgemm over the whole batch: yp[r] += xp[r + kh*Wp + kw] @ W[kh, kw]^T. Rows
 * of the grid that are not outputs (the right-hand columns, the rows between images) are
 * computed and thrown away when the output is copied out. A 1x1 kernel without padding is a
 * single sgemm on the tensors themselves. conv1d is the same machinery with H = 1, and
 * conv1d_t is its input-gradient kernel. The conv2d forward at stride 1 on images of at least
 * ROWCOL_MIN_ROWS outputs uses im2col along W only instead (rowcol_forward: KH sgemms per
 * image with K = KW*Cin, nothing wasted, no copy-out). Strides > 1, and small images where the
 * grid would waste more than TAP_MAX_WASTE, use im2col in bounded chunks (one sgemm with
 * K = KH*KW*Cin per chunk).
 *
 * Gradient rule: ACCUMULATE (+=) into input gradients: sgemm with beta = 1 into the weight
 * gradient, a scatter through the same padded grid (and the adjoint of the padding) into the
 * input gradient, column sums of dy for the bias. conv1d and conv1d_t also have create-graph
 * backwards (each other, op_matmul over shifted copies of the input, op_sum_to) for the exact
 * R1 penalty; conv2d has none.
 * Values are f32 (bf16 too on CUDA: core/cuda/conv.cu, cuDNN or an implicit GEMM); the output
 * has their dtype. */
#include <cblas.h>
#include <string.h>

#include "core/ops/cpu_impls.h"
#include "core/ops/ops_internal.h"

/* im2col chunks: about this many floats of scratch (1 MiB: cache-sized; at least 256 rows) */
#define IM2COL_SCRATCH_FLOATS (1 << 18)
/* stride 1 runs on the padded grid while it computes at most this many rows per output
 * (the grid's extra columns and rows between images); smaller images use im2col, whose
 * copy costs less than the wasted products there */
#define TAP_MAX_WASTE 1.06
/* grid rows per block of the padded-grid forward */
#define TAP_BLOCK_ROWS 2048
/* conv2d stride 1 forward: images of at least this many outputs use im2col along W only */
#define ROWCOL_MIN_ROWS 512

static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0 || K == 0) return; /* callers never ask for K = 0 with beta = 0 */
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (blasint)M,
                (blasint)N, (blasint)K, 1.0f, A, (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

static inline int64_t imod(int64_t a, int64_t m) {
    int64_t r = a % m;
    return r < 0 ? r + m : r;
}

static int64_t grain_rows(int64_t row_floats) { return 1 + 32768 / (row_floats > 0 ? row_floats : 1); }

/* ---- stride 1 on the padded grid ---- */

typedef struct TapConv {
    int64_t B, H, W, Cin, Cout, KH, KW, ph, pw;
    PadMode mode;
    int64_t Hp, Wp, OH, OW;
    int64_t R;   /* rows of the padded grid: B * Hp * Wp */
    int64_t Rc;  /* grid rows computed: up to the last output position */
    bool direct; /* 1x1 without padding: the grid is the tensor itself */
} TapConv;

static TapConv tap_plan(int64_t B, int64_t H, int64_t W, int64_t Cin, int64_t Cout, int64_t KH, int64_t KW,
                        int64_t ph, int64_t pw, PadMode mode) {
    TapConv t = {B, H, W, Cin, Cout, KH, KW, ph, pw, mode, 0, 0, 0, 0, 0, 0, false};
    t.Hp = H + 2 * ph;
    t.Wp = W + 2 * pw;
    t.OH = t.Hp - KH + 1;
    t.OW = t.Wp - KW + 1;
    t.R = B * t.Hp * t.Wp;
    t.Rc = B > 0 && t.OH > 0 && t.OW > 0 ? (B - 1) * t.Hp * t.Wp + (t.OH - 1) * t.Wp + t.OW : 0;
    t.direct = KH == 1 && KW == 1 && ph == 0 && pw == 0;
    return t;
}

static bool tap_empty(const TapConv *t) { return t->Rc == 0 || t->Cin == 0 || t->Cout == 0; }

typedef struct {
    const TapConv *t;
    const float *x; /* (B, H, W, C) */
    float *xp;      /* (B, Hp, Wp, C) */
    float *dx;      /* (B, H, W, C), fold target */
    int64_t C;
} PadJob;

/* xp = x with the padding (zeros or wrapped), for padded rows (b, hp) in [r0, r1) */
static void pad_rows(void *ctx, int64_t r0, int64_t r1) {
    PadJob *j = ctx;
    const TapConv *t = j->t;
    int64_t C = j->C, rowf = t->Wp * C;
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / t->Hp, h = r % t->Hp - t->ph;
        float *dst = j->xp + r * rowf;
        if (t->mode == PAD_CIRCULAR) {
            const float *src = j->x + (b * t->H + imod(h, t->H)) * t->W * C;
            for (int64_t wp = 0; wp < t->Wp; wp++)
                memcpy(dst + wp * C, src + imod(wp - t->pw, t->W) * C, (size_t)C * sizeof(float));
        } else if (h < 0 || h >= t->H) {
            memset(dst, 0, (size_t)rowf * sizeof(float));
        } else {
            int64_t left = t->pw * C, mid = t->W * C;
            memset(dst, 0, (size_t)left * sizeof(float));
            memcpy(dst + left, j->x + (b * t->H + h) * mid, (size_t)mid * sizeof(float));
            memset(dst + left + mid, 0, (size_t)(rowf - left - mid) * sizeof(float));
        }
    }
}

/* dx += the adjoint of the padding applied to dxp, for rows (b, h) of dx in [r0, r1) */
static void fold_rows(void *ctx, int64_t r0, int64_t r1) {
    PadJob *j = ctx;
    const TapConv *t = j->t;
    int64_t C = j->C;
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / t->H, h = r % t->H;
        float *dst = j->dx + r * t->W * C;
        if (t->mode == PAD_ZEROS) {
            const float *src = j->xp + ((b * t->Hp + h + t->ph) * t->Wp + t->pw) * C;
            for (int64_t k = 0; k < t->W * C; k++) dst[k] += src[k];
            continue;
        }
        for (int64_t hp = (h + t->ph) % t->H; hp < t->Hp; hp += t->H) {
            const float *srow = j->xp + (b * t->Hp + hp) * t->Wp * C;
            for (int64_t w = 0; w < t->W; w++)
                for (int64_t wp = (w + t->pw) % t->W; wp < t->Wp; wp += t->W) {
                    const float *s = srow + wp * C;
                    float *d = dst + w * C;
                    for (int64_t k = 0; k < C; k++) d[k] += s[k];
                }
        }
    }
}

/* x itself when there is no padding, else a padded copy from the arena */
static const float *tap_pad(Ctx *c, const TapConv *t, const float *x) {
    if (t->ph == 0 && t->pw == 0) return x;
    float *xp = ctx_alloc(c, t->R * t->Cin * (int64_t)sizeof(float));
    if (!xp) return NULL;
    PadJob j = {t, x, xp, NULL, t->Cin};
    parallel_for(t->B * t->Hp, grain_rows(t->Wp * t->Cin), pad_rows, &j);
    return xp;
}

enum { GRID_TO_TENSOR, GRID_ADD_TO_TENSOR, TENSOR_TO_GRID };

typedef struct {
    const TapConv *t;
    float *grid;       /* (rows, C): the grid from row line0 * Wp on */
    float *ten;        /* (B, OH, OW, C) */
    const float *bias; /* (C) or NULL */
    int64_t C, line0;
    int dir;
} GridJob;

/* for grid lines (b, hp) = line0 + [r0, r1): copy between the output tensor and the grid; the
 * grid's non-output positions are zeroed when writing it */
static void grid_rows(void *ctx, int64_t r0, int64_t r1) {
    GridJob *j = ctx;
    const TapConv *t = j->t;
    int64_t C = j->C, span = t->OW * C;
    for (int64_t r = r0; r < r1; r++) {
        int64_t line = j->line0 + r, b = line / t->Hp, hp = line % t->Hp;
        int64_t g0 = line * t->Wp; /* first grid row of this line */
        if (g0 >= t->Rc) continue;
        int64_t glen = (g0 + t->Wp < t->Rc ? t->Wp : t->Rc - g0) * C;
        float *g = j->grid + r * t->Wp * C;
        if (hp >= t->OH) {
            if (j->dir == TENSOR_TO_GRID) memset(g, 0, (size_t)glen * sizeof(float));
            continue;
        }
        float *y = j->ten + (b * t->OH + hp) * span;
        if (j->dir == TENSOR_TO_GRID) {
            memcpy(g, y, (size_t)span * sizeof(float));
            memset(g + span, 0, (size_t)(glen - span) * sizeof(float));
        } else if (j->dir == GRID_ADD_TO_TENSOR) {
            for (int64_t k = 0; k < span; k++) y[k] += g[k];
            if (j->bias)
                for (int64_t p = 0; p < span; p += C)
                    for (int64_t k = 0; k < C; k++) y[p + k] += j->bias[k];
        } else if (j->bias) {
            for (int64_t p = 0; p < span; p += C)
                for (int64_t k = 0; k < C; k++) y[p + k] = g[p + k] + j->bias[k];
        } else {
            memcpy(y, g, (size_t)span * sizeof(float));
        }
    }
}

/* grid lines [l0, l1), the grid pointer at line l0 */
static void grid_copy(const TapConv *t, float *grid, int64_t l0, int64_t l1, float *ten, const float *bias,
                      int64_t C, int dir) {
    GridJob j = {t, grid, ten, bias, C, l0, dir};
    parallel_for(l1 - l0, grain_rows(t->Wp * C), grid_rows, &j);
}

typedef struct {
    float *y;          /* (rows, C) */
    const float *bias; /* (C) */
    int64_t C;
} BiasFillJob;

static void bias_fill_rows(void *ctx, int64_t r0, int64_t r1) {
    BiasFillJob *j = ctx;
    for (int64_t r = r0; r < r1; r++) memcpy(j->y + r * j->C, j->bias, (size_t)j->C * sizeof(float));
}

static void bias_fill(float *y, const float *bias, int64_t rows, int64_t C) {
    BiasFillJob j = {y, bias, C};
    parallel_for(rows, grain_rows(C), bias_fill_rows, &j);
}

/* y (B, OH, OW, Cout) = (or += when accumulate) conv(x, w) + bias. x (B, H, W, Cin),
 * w (Cout, KH, KW, Cin), bias (Cout) or NULL. */
static Status tap_forward(Ctx *c, const TapConv *t, const float *x, const float *w, const float *bias, float *y,
                          bool accumulate) {
    if (tap_empty(t)) {
        if (!accumulate) {
            int64_t rows = t->B * (t->OH > 0 ? t->OH : 0) * (t->OW > 0 ? t->OW : 0);
            if (bias) bias_fill(y, bias, rows, t->Cout);
            else memset(y, 0, (size_t)(rows * t->Cout) * sizeof(float));
        }
        return ADDC_OK;
    }
    int64_t Cin = t->Cin, Cout = t->Cout, ldw = t->KH * t->KW * Cin;
    if (t->direct) {
        int64_t rows = t->B * t->H * t->W;
        if (accumulate && bias) return addc_error_set(ADDC_ERR_INVALID, "conv: accumulate with bias");
        if (bias) bias_fill(y, bias, rows, Cout);
        gemm(false, true, rows, Cout, Cin, x, Cin, w, Cin, accumulate || bias ? 1.0f : 0.0f, y, Cout);
        return ADDC_OK;
    }
    /* blocks of whole grid lines: the block's output stays in cache from its first tap to
     * its copy-out */
    int64_t lines = t->B * t->Hp, per = TAP_BLOCK_ROWS / t->Wp > 0 ? TAP_BLOCK_ROWS / t->Wp : 1;
    ArenaMark mark = arena_mark(c->arena);
    const float *xp = tap_pad(c, t, x);
    float *yp = ctx_alloc(c, (per * t->Wp < t->Rc ? per * t->Wp : t->Rc) * Cout * (int64_t)sizeof(float));
    if (!xp || !yp) return addc_error_status();
    for (int64_t l0 = 0; l0 * t->Wp < t->Rc; l0 += per) {
        int64_t r0 = l0 * t->Wp, m = t->Rc - r0 < per * t->Wp ? t->Rc - r0 : per * t->Wp;
        for (int64_t kh = 0; kh < t->KH; kh++)
            for (int64_t kw = 0; kw < t->KW; kw++) {
                int64_t tap = kh * t->KW + kw, off = r0 + kh * t->Wp + kw;
                gemm(false, true, m, Cout, Cin, xp + off * Cin, Cin, w + tap * Cin, ldw, tap ? 1.0f : 0.0f, yp, Cout);
            }
        grid_copy(t, yp, l0, l0 + per < lines ? l0 + per : lines, y, bias, Cout,
                  accumulate ? GRID_ADD_TO_TENSOR : GRID_TO_TENSOR);
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

/* dx (B, H, W, Cin) += conv^T(dy) when dx; dw (Cout, KH, KW, Cin) += sum over positions of
 * dy (x) the input patch, when dw. dy (B, OH, OW, Cout); x is only read for dw. */
static Status tap_backward(Ctx *c, const TapConv *t, const float *dy, const float *x, const float *w, float *dx,
                           float *dw) {
    if (tap_empty(t)) return ADDC_OK;
    int64_t Cin = t->Cin, Cout = t->Cout, ldw = t->KH * t->KW * Cin;
    if (t->direct) {
        int64_t rows = t->B * t->H * t->W;
        if (dx) gemm(false, false, rows, Cin, Cout, dy, Cout, w, Cin, 1.0f, dx, Cin);
        if (dw) gemm(true, false, Cout, Cin, rows, dy, Cout, x, Cin, 1.0f, dw, Cin);
        return ADDC_OK;
    }
    ArenaMark mark = arena_mark(c->arena);
    float *dyp = ctx_alloc(c, t->Rc * Cout * (int64_t)sizeof(float));
    if (!dyp) return addc_error_status();
    grid_copy(t, dyp, 0, t->B * t->Hp, (float *)dy, NULL, Cout, TENSOR_TO_GRID);
    if (dw) {
        const float *xp = tap_pad(c, t, x);
        if (!xp) return addc_error_status();
        for (int64_t kh = 0; kh < t->KH; kh++)
            for (int64_t kw = 0; kw < t->KW; kw++) {
                int64_t tap = kh * t->KW + kw, off = kh * t->Wp + kw;
                gemm(true, false, Cout, Cin, t->Rc, dyp, Cout, xp + off * Cin, Cin, 1.0f, dw + tap * Cin, ldw);
            }
    }
    if (dx) {
        bool nopad = t->ph == 0 && t->pw == 0;
        float *dxp = nopad ? dx : arena_calloc(c->arena, t->R * Cin * (int64_t)sizeof(float));
        if (!dxp) return addc_error_status();
        for (int64_t kh = 0; kh < t->KH; kh++)
            for (int64_t kw = 0; kw < t->KW; kw++) {
                int64_t tap = kh * t->KW + kw, off = kh * t->Wp + kw;
                gemm(false, false, t->Rc, Cin, Cout, dyp, Cout, w + tap * Cin, ldw, 1.0f, dxp + off * Cin, Cin);
            }
        if (!nopad) {
            PadJob j = {t, NULL, dxp, dx, Cin};
            parallel_for(t->B * t->H, grain_rows(t->W * Cin), fold_rows, &j);
        }
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

/* ---- strides > 1: im2col in chunks of output rows ---- */

typedef struct ColConv {
    int64_t B, H, W, Cin, Cout, KH, KW, stride, pad, OH, OW;
    int64_t Kd; /* KH * KW * Cin: one im2col row, matching the weight layout */
} ColConv;

typedef struct {
    const ColConv *p;
    const float *x; /* (B, H, W, Cin) */
    float *dx;      /* (B, H, W, Cin) */
    float *col;     /* (rows, Kd) */
    int64_t r0, rows;
} ColJob;

/* col rows [a, b) of the chunk = the input patches of output rows r0 + [a, b) */
static void im2col_rows(void *ctx, int64_t a, int64_t e) {
    ColJob *j = ctx;
    const ColConv *p = j->p;
    int64_t Cin = p->Cin;
    for (int64_t r = a; r < e; r++) {
        int64_t g = j->r0 + r, ow = g % p->OW, oh = (g / p->OW) % p->OH, b = g / (p->OW * p->OH);
        float *dst = j->col + r * p->Kd;
        for (int64_t kh = 0; kh < p->KH; kh++) {
            int64_t ih = oh * p->stride - p->pad + kh;
            float *d = dst + kh * p->KW * Cin;
            if (ih < 0 || ih >= p->H) {
                memset(d, 0, (size_t)(p->KW * Cin) * sizeof(float));
                continue;
            }
            for (int64_t kw = 0; kw < p->KW; kw++) {
                int64_t iw = ow * p->stride - p->pad + kw;
                if (iw < 0 || iw >= p->W) memset(d + kw * Cin, 0, (size_t)Cin * sizeof(float));
                else memcpy(d + kw * Cin, j->x + ((b * p->H + ih) * p->W + iw) * Cin, (size_t)Cin * sizeof(float));
            }
        }
    }
}

#define COL2IM_CH_BLOCK 16

/* dx += col2im(col) for channel blocks [a, e): each block owns its channels, so no two
 * threads write one element and the order of additions is fixed */
static void col2im_blocks(void *ctx, int64_t a, int64_t e) {
    ColJob *j = ctx;
    const ColConv *p = j->p;
    int64_t Cin = p->Cin;
    for (int64_t blk = a; blk < e; blk++) {
        int64_t c0 = blk * COL2IM_CH_BLOCK, nc = Cin - c0 < COL2IM_CH_BLOCK ? Cin - c0 : COL2IM_CH_BLOCK;
        for (int64_t r = 0; r < j->rows; r++) {
            int64_t g = j->r0 + r, ow = g % p->OW, oh = (g / p->OW) % p->OH, b = g / (p->OW * p->OH);
            const float *src = j->col + r * p->Kd + c0;
            for (int64_t kh = 0; kh < p->KH; kh++) {
                int64_t ih = oh * p->stride - p->pad + kh;
                if (ih < 0 || ih >= p->H) continue;
                for (int64_t kw = 0; kw < p->KW; kw++) {
                    int64_t iw = ow * p->stride - p->pad + kw;
                    if (iw < 0 || iw >= p->W) continue;
                    float *d = j->dx + ((b * p->H + ih) * p->W + iw) * Cin + c0;
                    const float *s = src + (kh * p->KW + kw) * Cin;
                    for (int64_t k = 0; k < nc; k++) d[k] += s[k];
                }
            }
        }
    }
}

/* rows per im2col chunk: about IM2COL_SCRATCH_FLOATS of scratch (at least 256 rows), so that the
 * chunk is still in cache when the sgemm reads it (or col2im reads the sgemm's result). When an
 * image's outputs fit, a chunk is whole images, which lets col2im run images in parallel (when
 * there are at least as many images as threads; else by channel block). Both orders add the
 * same terms in the same order per element, so the result does not depend on the path. */
static int64_t col_chunk_rows(const ColConv *p) {
    int64_t M = p->B * p->OH * p->OW, img = p->OH * p->OW, rows = IM2COL_SCRATCH_FLOATS / (p->Kd > 0 ? p->Kd : 1);
    if (rows < 256) rows = 256;
    if (M <= rows) return M > 0 ? M : 1;
    if (img > 0 && img <= rows) return rows / img * img;
    int64_t n = (M + rows - 1) / rows;
    return (M + n - 1) / n;
}

/* dx += col2im(col) for the whole images [a, e) of the chunk (chunks of whole images): an
 * image's patches only reach that image, so images are independent and each adds all its
 * channels in a fixed order */
static void col2im_images(void *ctx, int64_t a, int64_t e) {
    ColJob *j = ctx;
    const ColConv *p = j->p;
    int64_t Cin = p->Cin, img = p->OH * p->OW;
    for (int64_t r = a * img; r < e * img; r++) {
        int64_t g = j->r0 + r, ow = g % p->OW, oh = (g / p->OW) % p->OH, b = g / img;
        const float *src = j->col + r * p->Kd;
        for (int64_t kh = 0; kh < p->KH; kh++) {
            int64_t ih = oh * p->stride - p->pad + kh;
            if (ih < 0 || ih >= p->H) continue;
            for (int64_t kw = 0; kw < p->KW; kw++) {
                int64_t iw = ow * p->stride - p->pad + kw;
                if (iw < 0 || iw >= p->W) continue;
                float *d = j->dx + ((b * p->H + ih) * p->W + iw) * Cin;
                const float *sp = src + (kh * p->KW + kw) * Cin;
                for (int64_t k = 0; k < Cin; k++) d[k] += sp[k];
            }
        }
    }
}

static Status col_forward(Ctx *c, const ColConv *p, const float *x, const float *w, const float *bias, float *y) {
    int64_t M = p->B * p->OH * p->OW;
    if (bias) bias_fill(y, bias, M, p->Cout);
    else if (p->Kd == 0) memset(y, 0, (size_t)(M * p->Cout) * sizeof(float));
    if (M == 0 || p->Kd == 0 || p->Cout == 0) return ADDC_OK;
    int64_t chunk = col_chunk_rows(p);
    ArenaMark mark = arena_mark(c->arena);
    float *col = ctx_alloc(c, (chunk < M ? chunk : M) * p->Kd * (int64_t)sizeof(float));
    if (!col) return addc_error_status();
    for (int64_t r0 = 0; r0 < M; r0 += chunk) {
        int64_t nr = M - r0 < chunk ? M - r0 : chunk;
        ColJob j = {p, x, NULL, col, r0, nr};
        parallel_for(nr, grain_rows(p->Kd), im2col_rows, &j);
        gemm(false, true, nr, p->Cout, p->Kd, col, p->Kd, w, p->Kd, bias ? 1.0f : 0.0f, y + r0 * p->Cout, p->Cout);
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

/* stride 1, images of at least ROWCOL_MIN_ROWS outputs: im2col along W only. Per image,
 * xw (Hp, OW, KW*Cin) holds xw[hp, ow, kw, :] = x padded at (hp, ow + kw); the outputs of
 * kernel row kh are then one sgemm over the contiguous lines kh .. kh+OH-1 with K = KW*Cin,
 * written straight into y: KH sgemms per image, no wasted rows and no copy-out. */
typedef struct {
    const ColConv *p;
    const float *x; /* (H, W, Cin) of one image */
    float *xw;      /* (Hp, OW, KW*Cin) */
} RowColJob;

static void rowcol_lines(void *ctx, int64_t l0, int64_t l1) {
    RowColJob *j = ctx;
    const ColConv *p = j->p;
    int64_t Cin = p->Cin, rowf = p->OW * p->KW * Cin;
    for (int64_t hp = l0; hp < l1; hp++) {
        int64_t h = hp - p->pad;
        float *d = j->xw + hp * rowf;
        if (h < 0 || h >= p->H) {
            memset(d, 0, (size_t)rowf * sizeof(float));
            continue;
        }
        const float *src = j->x + h * p->W * Cin;
        for (int64_t ow = 0; ow < p->OW; ow++)
            for (int64_t kw = 0; kw < p->KW; kw++) {
                int64_t iw = ow + kw - p->pad;
                float *dd = d + (ow * p->KW + kw) * Cin;
                if (iw < 0 || iw >= p->W) memset(dd, 0, (size_t)Cin * sizeof(float));
                else memcpy(dd, src + iw * Cin, (size_t)Cin * sizeof(float));
            }
    }
}

static Status rowcol_forward(Ctx *c, const ColConv *p, const float *x, const float *w, const float *bias,
                             float *y) {
    int64_t Hp = p->H + 2 * p->pad, kwc = p->KW * p->Cin, rowf = p->OW * kwc, M = p->OH * p->OW;
    ArenaMark mark = arena_mark(c->arena);
    float *xw = ctx_alloc(c, Hp * rowf * (int64_t)sizeof(float));
    if (!xw) return addc_error_status();
    for (int64_t b = 0; b < p->B; b++) {
        RowColJob j = {p, x + b * p->H * p->W * p->Cin, xw};
        parallel_for(Hp, grain_rows(rowf), rowcol_lines, &j);
        float *yb = y + b * M * p->Cout;
        if (bias) bias_fill(yb, bias, M, p->Cout);
        for (int64_t kh = 0; kh < p->KH; kh++)
            gemm(false, true, M, p->Cout, kwc, xw + kh * p->OW * kwc, kwc, w + kh * kwc, p->Kd,
                 kh || bias ? 1.0f : 0.0f, yb, p->Cout);
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

static Status col_backward(Ctx *c, const ColConv *p, const float *dy, const float *x, const float *w, float *dx,
                           float *dw) {
    int64_t M = p->B * p->OH * p->OW;
    if (M == 0 || p->Kd == 0 || p->Cout == 0) return ADDC_OK;
    int64_t chunk = col_chunk_rows(p), cr = chunk < M ? chunk : M;
    ArenaMark mark = arena_mark(c->arena);
    float *col = ctx_alloc(c, cr * p->Kd * (int64_t)sizeof(float));
    if (!col) return addc_error_status();
    for (int64_t r0 = 0; r0 < M; r0 += chunk) {
        int64_t nr = M - r0 < chunk ? M - r0 : chunk;
        const float *dyc = dy + r0 * p->Cout;
        ColJob j = {p, x, dx, col, r0, nr};
        if (dw) {
            parallel_for(nr, grain_rows(p->Kd), im2col_rows, &j);
            gemm(true, false, p->Cout, p->Kd, nr, dyc, p->Cout, col, p->Kd, 1.0f, dw, p->Kd);
        }
        if (dx) {
            gemm(false, false, nr, p->Kd, p->Cout, dyc, p->Cout, w, p->Kd, 0.0f, col, p->Kd);
            int64_t img = p->OH * p->OW;
            if (img > 0 && r0 % img == 0 && nr % img == 0 && nr / img >= parallel_threads())
                parallel_for(nr / img, 1, col2im_images, &j);
            else
                parallel_for((p->Cin + COL2IM_CH_BLOCK - 1) / COL2IM_CH_BLOCK, 1, col2im_blocks, &j);
        }
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

/* db (C) += column sums of dy (rows, C) */
static Status bias_grad(Ctx *c, float *db, const float *dy, int64_t rows, int64_t C) {
    int64_t s[2] = {rows, C};
    return reduce_sum_to_accum(c, db, 1, &C, dy, 2, s);
}

/* ---- conv2d ---- */

typedef struct {
    bool tap;    /* backward (and forward unless rowcol) on the padded grid, else im2col */
    bool rowcol; /* forward by rowcol_forward */
    TapConv t;
    ColConv p;
} Conv2dPlan;

static Conv2dPlan conv2d_plan(const Tensor *x, const Tensor *w, int64_t stride, int64_t pad) {
    Conv2dPlan cp;
    memset(&cp, 0, sizeof cp);
    int64_t B = x->shape[0], H = x->shape[1], W = x->shape[2], Cin = x->shape[3];
    int64_t Cout = w->shape[0], KH = w->shape[1], KW = w->shape[2];
    if (stride == 1) {
        cp.t = tap_plan(B, H, W, Cin, Cout, KH, KW, pad, pad, PAD_ZEROS);
        int64_t valid = B * cp.t.OH * cp.t.OW;
        cp.tap = cp.t.direct || (double)cp.t.Rc <= TAP_MAX_WASTE * (double)valid;
    }
    ColConv p = {B, H, W, Cin, Cout, KH, KW, stride, pad, (H + 2 * pad - KH) / stride + 1,
                 (W + 2 * pad - KW) / stride + 1, KH * KW * Cin};
    cp.p = p;
    cp.rowcol = stride == 1 && !cp.t.direct && p.OH * p.OW >= ROWCOL_MIN_ROWS;
    return cp;
}

static Status conv2d_fwd(Ctx *c, Node *n) {
    Conv2dPlan cp = conv2d_plan(&n->in[0]->v, &n->in[1]->v, n->ip[0], n->ip[1]);
    const float *x = n->in[0]->v.data, *w = n->in[1]->v.data, *bias = n->in[2] ? n->in[2]->v.data : NULL;
    float *y = n->out->v.data;
    if (cp.rowcol) return rowcol_forward(c, &cp.p, x, w, bias, y);
    return cp.tap ? tap_forward(c, &cp.t, x, w, bias, y, false) : col_forward(c, &cp.p, x, w, bias, y);
}

static Status conv2d_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gw = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    Conv2dPlan cp = conv2d_plan(&n->in[0]->v, &n->in[1]->v, n->ip[0], n->ip[1]);
    const float *x = n->in[0]->v.data, *w = n->in[1]->v.data, *dy = n->out->g.data;
    if (gx || gw)
        TRY(cp.tap ? tap_backward(c, &cp.t, dy, x, w, gx, gw) : col_backward(c, &cp.p, dy, x, w, gx, gw));
    if (gb) {
        const Tensor *y = &n->out->v;
        TRY(bias_grad(c, gb, dy, tensor_numel(y) / y->shape[3], y->shape[3]));
    }
    return ADDC_OK;
}

/* bias (Cout) of the values' dtype dt, or NULL */
static bool check_bias(const char *op, const Var *bias, int64_t Cout, DType dt) {
    if (!bias) return true;
    if (!ops_require_float(op, "bias", bias)) return false;
    if (bias->v.dtype != dt) {
        ops_fail(op, "bias is %s but the input and w are %s: cast one with op_cast", dtype_name(bias->v.dtype),
                 dtype_name(dt));
        return false;
    }
    if (bias->v.ndim == 1 && bias->v.shape[0] == Cout) return true;
    char s[96];
    ops_fail(op, "bias %s must be (Cout) = (%lld)", ops_shape_str(&bias->v, s, sizeof s), (long long)Cout);
    return false;
}

Var *op_conv2d(Ctx *c, Var *x, Var *w, Var *bias, int stride, int pad) {
    OPS_NULL_GUARD2(x, w);
    if (!ops_require_same_float("conv2d", x, w)) return NULL;
    char s1[96], s2[96];
    const Tensor *tx = &x->v, *tw = &w->v;
    if (tx->ndim != 4 || tw->ndim != 4 || tx->shape[3] != tw->shape[3])
        return ops_fail("conv2d", "x %s must be (B, H, W, Cin) and w %s (Cout, KH, KW, Cin)",
                        ops_shape_str(tx, s1, sizeof s1), ops_shape_str(tw, s2, sizeof s2));
    if (stride < 1 || pad < 0) return ops_fail("conv2d", "stride %d must be >= 1 and pad %d >= 0", stride, pad);
    if (tw->shape[1] < 1 || tw->shape[2] < 1 || tx->shape[1] + 2 * pad < tw->shape[1] ||
        tx->shape[2] + 2 * pad < tw->shape[2])
        return ops_fail("conv2d", "kernel %lldx%lld does not fit x %s padded by %d",
                        (long long)tw->shape[1], (long long)tw->shape[2], ops_shape_str(tx, s1, sizeof s1), pad);
    if (!check_bias("conv2d", bias, tw->shape[0], tx->dtype)) return NULL;
    Var *in[3] = {x, w, bias};
    Node n = node_make(OP_CONV2D, 3, in);
    n.ip[0] = stride;
    n.ip[1] = pad;
    int64_t shape[4] = {tx->shape[0], (tx->shape[1] + 2 * pad - tw->shape[1]) / stride + 1,
                        (tx->shape[2] + 2 * pad - tw->shape[2]) / stride + 1, tw->shape[0]};
    return op_exec(c, &n, tx->dtype, 4, shape);
}

const OpImpl cpu_op_conv2d = {conv2d_fwd, conv2d_bwd, NULL};

/* ---- conv1d and its transpose ---- */

/* x (B, N, Cin) and w (Cout, K, Cin) as a padded-grid plan with H = 1 */
static TapConv conv1d_plan(const Tensor *x, const Tensor *w, PadMode mode) {
    int64_t K = w->shape[1];
    return tap_plan(x->shape[0], 1, x->shape[1], w->shape[2], w->shape[0], 1, K, 0, K / 2, mode);
}

static Status conv1d_fwd(Ctx *c, Node *n) {
    TapConv t = conv1d_plan(&n->in[0]->v, &n->in[1]->v, (PadMode)n->ip[0]);
    return tap_forward(c, &t, n->in[0]->v.data, n->in[1]->v.data, n->in[2] ? n->in[2]->v.data : NULL,
                       n->out->v.data, false);
}

static Status conv1d_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gw = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    TapConv t = conv1d_plan(&n->in[0]->v, &n->in[1]->v, (PadMode)n->ip[0]);
    const float *dy = n->out->g.data;
    if (gx || gw) TRY(tap_backward(c, &t, dy, n->in[0]->v.data, n->in[1]->v.data, gx, gw));
    if (gb) TRY(bias_grad(c, gb, dy, t.B * t.W, t.Cout));
    return ADDC_OK;
}

/* the transpose: out (B, N, Cin) = conv1d^T(y (B, N, Cout)), i.e. conv1d's input gradient */
static Status conv1d_t_fwd(Ctx *c, Node *n) {
    Tensor *out = &n->out->v;
    TapConv t = conv1d_plan(out, &n->in[1]->v, (PadMode)n->ip[0]);
    memset(out->data, 0, (size_t)tensor_nbytes(out));
    return tap_backward(c, &t, n->in[0]->v.data, NULL, n->in[1]->v.data, out->data, NULL);
}

/* d(y) += conv1d(g, w); d(w) += the weight gradient of conv1d at input g with upstream y */
static Status conv1d_t_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gy = ops_in_grad(c, n, 0, &st);
    float *gw = ops_in_grad(c, n, 1, &st);
    if (st) return st;
    TapConv t = conv1d_plan(&n->out->v, &n->in[1]->v, (PadMode)n->ip[0]);
    const float *g = n->out->g.data, *y = n->in[0]->v.data, *w = n->in[1]->v.data;
    if (gy) TRY(tap_forward(c, &t, g, w, NULL, gy, true));
    if (gw) TRY(tap_backward(c, &t, y, g, w, NULL, gw));
    return ADDC_OK;
}

/* x (B, N, C) shifted along N: out[b, n] = x[b, n + s], wrapped (circular) or zero outside */
static Var *seq_shift(Ctx *c, Var *x, int64_t s, PadMode mode) {
    int64_t B = x->v.shape[0], N = x->v.shape[1], C = x->v.shape[2];
    if (mode == PAD_CIRCULAR) {
        s = N ? imod(s, N) : 0;
        if (s == 0) return x;
        return op_concat(c, op_slice(c, x, 1, s, N - s), op_slice(c, x, 1, 0, s), 1);
    }
    if (s == 0) return x;
    int64_t a = s < 0 ? -s : s;
    if (a >= N) return var_zeros(c, DTYPE_F32, 3, x->v.shape);
    int64_t zs[3] = {B, a, C};
    Var *z = var_zeros(c, DTYPE_F32, 3, zs);
    return s > 0 ? op_concat(c, op_slice(c, x, 1, s, N - s), z, 1) : op_concat(c, z, op_slice(c, x, 1, 0, N - a), 1);
}

/* (Cout, K, Cin): dw[o, k, i] = sum over b, n of dy[b, n, o] x[b, n + k - K/2, i], built from
 * differentiable ops. dy (B, N, Cout), x (B, N, Cin). */
static Var *conv1d_dw_graph(Ctx *c, Var *dy, Var *x, int64_t K, PadMode mode) {
    int64_t B = x->v.shape[0], N = x->v.shape[1], Cin = x->v.shape[2], Cout = dy->v.shape[2];
    int64_t sdy[2] = {B * N, Cout}, sx[2] = {B * N, Cin}, s3[3] = {Cout, 1, Cin};
    Var *dy2 = op_reshape(c, dy, 2, sdy), *dw = NULL;
    for (int64_t k = 0; k < K; k++) {
        Var *xs = op_reshape(c, seq_shift(c, x, k - K / 2, mode), 2, sx);
        Var *dk = op_reshape(c, op_matmul(c, dy2, xs, true, false), 3, s3);
        dw = dw ? op_concat(c, dw, dk, 1) : dk;
        if (!dw) return NULL;
    }
    return dw;
}

static Status conv1d_bwd_graph(Ctx *c, Node *n) {
    Var *x = n->in[0], *w = n->in[1], *bias = n->in[2], *gy = n->out->gv;
    PadMode mode = (PadMode)n->ip[0];
    if (ops_in_wants_gv(n, 0)) TRY(var_accum_gv(c, x, op_conv1d_t(c, gy, w, mode)));
    if (ops_in_wants_gv(n, 1)) TRY(var_accum_gv(c, w, conv1d_dw_graph(c, gy, x, w->v.shape[1], mode)));
    if (bias && ops_in_wants_gv(n, 2)) TRY(var_accum_gv(c, bias, op_sum_to(c, gy, 1, bias->v.shape)));
    return ADDC_OK;
}

static Status conv1d_t_bwd_graph(Ctx *c, Node *n) {
    Var *y = n->in[0], *w = n->in[1], *g = n->out->gv;
    PadMode mode = (PadMode)n->ip[0];
    if (ops_in_wants_gv(n, 0)) TRY(var_accum_gv(c, y, op_conv1d(c, g, w, NULL, mode)));
    if (ops_in_wants_gv(n, 1)) TRY(var_accum_gv(c, w, conv1d_dw_graph(c, y, g, w->v.shape[1], mode)));
    return ADDC_OK;
}

/* shared checks: in (B, N, C_in_dim) against w (Cout, K, Cin) where in's channels must equal
 * w's dim `wdim` (2 for conv1d, 0 for the transpose) */
static bool conv1d_check(const char *op, const Var *in, const Var *w, int wdim, PadMode mode) {
    if (!ops_require_same_float(op, in, w)) return false;
    char s1[96], s2[96];
    const Tensor *ti = &in->v, *tw = &w->v;
    if (ti->ndim != 3 || tw->ndim != 3 || ti->shape[2] != tw->shape[wdim]) {
        ops_fail(op, "input %s must be (B, N, %s) and w %s (Cout, K, Cin)", ops_shape_str(ti, s1, sizeof s1),
                 wdim ? "Cin" : "Cout", ops_shape_str(tw, s2, sizeof s2));
        return false;
    }
    if (tw->shape[1] % 2 == 0) {
        ops_fail(op, "kernel size %lld must be odd (\"same\" padding K/2)", (long long)tw->shape[1]);
        return false;
    }
    if (mode != PAD_ZEROS && mode != PAD_CIRCULAR) {
        ops_fail(op, "unknown padding mode %d", (int)mode);
        return false;
    }
    if (mode == PAD_CIRCULAR && tw->shape[1] / 2 > ti->shape[1]) {
        ops_fail(op, "circular padding %lld is longer than the sequence (N = %lld)", (long long)(tw->shape[1] / 2),
                 (long long)ti->shape[1]);
        return false;
    }
    return true;
}

Var *op_conv1d(Ctx *c, Var *x, Var *w, Var *bias, PadMode mode) {
    OPS_NULL_GUARD2(x, w);
    if (!conv1d_check("conv1d", x, w, 2, mode) || !check_bias("conv1d", bias, w->v.shape[0], x->v.dtype)) return NULL;
    Var *in[3] = {x, w, bias};
    Node n = node_make(OP_CONV1D, 3, in);
    n.ip[0] = mode;
    int64_t shape[3] = {x->v.shape[0], x->v.shape[1], w->v.shape[0]};
    return op_exec(c, &n, x->v.dtype, 3, shape);
}

Var *op_conv1d_t(Ctx *c, Var *y, Var *w, PadMode mode) {
    OPS_NULL_GUARD2(y, w);
    if (!conv1d_check("conv1d_t", y, w, 0, mode)) return NULL;
    Var *in[2] = {y, w};
    Node n = node_make(OP_CONV1D_T, 2, in);
    n.ip[0] = mode;
    int64_t shape[3] = {y->v.shape[0], y->v.shape[1], w->v.shape[2]};
    return op_exec(c, &n, y->v.dtype, 3, shape);
}

const OpImpl cpu_op_conv1d = {conv1d_fwd, conv1d_bwd, conv1d_bwd_graph};
const OpImpl cpu_op_conv1d_t = {conv1d_t_fwd, conv1d_t_bwd, conv1d_t_bwd_graph};
