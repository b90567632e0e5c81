// core/cuda/matmul: the CUDA kernels of op_matmul and op_linear (core/ops/matmul.c) on cuBLASLt,
// and the deterministic column sum that gives linear's and the convolutions' bias gradients.
//
// Every product goes through rm_gemm, a row-major GEMM with batch strides. cuBLASLt is
// column-major; a row-major matrix X (r, c) with row length ld is, byte for byte, the
// column-major matrix X^T (c, r) with leading dimension ld. So the row-major
//     C (M, N) = op(A) (M, K) @ op(B) (K, N)
// is issued as the column-major
//     C^T (N, M) = op(B)^T (N, K) @ op(A)^T (K, M)
// with cuBLASLt's "A" = our B's memory (transposed iff tb), its "B" = our A's memory (transposed
// iff ta), and D = C. Stored shapes as cuBLASLt sees them (rows, cols, ld):
//     our B: (tb ? K : N, tb ? N : K, ldb)   our A: (ta ? M : K, ta ? K : M, lda)   C: (N, M, ldc)
// and a bias of length N (one per column of row-major C) is one per row of D: the BIAS epilogue.
// Each forward and backward product below is derived from rm_gemm only.
//
// Precision: CUBLAS_COMPUTE_32F (no TF32) with f32 scale; f32 values are f32 GEMMs, bf16 values
// are bf16 x bf16 GEMMs accumulated in f32.
// Gradient rule: ACCUMULATE (+=) into the f32 gradients with beta = 1. For bf16 values dC (f32)
// is first rounded to a bf16 copy, so that the backward products are bf16 x bf16 -> f32 output
// (cuBLASLt's CUDA_R_16BF A/B with CUDA_R_32F C/D). A batched operand's gradient is one strided-
// batched GEMM; an operand broadcast over batch dims receives the products that share it one
// GEMM after the other on the stream (beta = 1, fixed order), or, for a 2-D b under an
// untransposed a, one GEMM over the flattened batch. The bias gradient is a two-pass column sum
// (fixed row blocks, double partials added in block order).
// Deterministic: cuBLASLt's in-place (atomic) split-K reduction is excluded; the heuristic's
// choice depends only on the shapes, the dtypes and the pointers' alignment. Should cuBLASLt offer
// no algorithm for a product (an unusual alignment), a plain kernel (one thread per output
// element) computes it, and a bias the epilogue refuses is written first and added to (beta = 1).
#include <cublasLt.h>
#include <string.h>

#include "core/cuda/cuda_internal.cuh"

#define LT_CHECK(expr)                                                                                         \
    ADDC_CHECK_GEN("cuBLASLt", expr, cublasStatus_t, r_ == CUBLAS_STATUS_SUCCESS, "%s", cublasLtGetStatusString(r_), \
                   ADDC_ERR_EXTERNAL)

static cudaDataType_t lt_type(DType dt) { return dt == DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// ---- row-major GEMM on cuBLASLt ----

// For i in [0, batch): C_i = op(A_i) @ op(B_i) (+ bias) + beta C_i, all row-major, where
// X_i = X + i * sX (elements; sA or sB may be 0: a shared operand; sC must not be when batch > 1).
// op(A) is (M, K): A stored (M, K) or, when ta, (K, M); op(B) is (K, N): B stored (K, N) or (N, K).
// lda, ldb, ldc: stored row lengths. A and B have dtype ab_dt, C has c_dt. bias (N) of dtype c_dt,
// only with beta = 0.
typedef struct RmGemm {
    bool ta, tb;
    int64_t M, N, K;
    DType ab_dt, c_dt;
    const void *A;
    int64_t lda, sA;
    const void *B;
    int64_t ldb, sB;
    void *C;
    int64_t ldc, sC;
    int64_t batch;
    float beta;
    const void *bias;
} RmGemm;

// the largest power of two <= 256 dividing the address (and the batch stride in bytes)
static uint32_t lt_alignment(const void *p, int64_t stride_bytes, int64_t batch) {
    uintptr_t a = (uintptr_t)p;
    if (batch > 1) a |= (uintptr_t)stride_bytes;
    uint32_t al = 256;
    while (al > 1 && a % al) al >>= 1;
    return al;
}

// cuBLASLt objects of one call, destroyed on every return path
struct LtCall {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ~LtCall() {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (lc) cublasLtMatrixLayoutDestroy(lc);
        if (lb) cublasLtMatrixLayoutDestroy(lb);
        if (la) cublasLtMatrixLayoutDestroy(la);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};

static Status lt_layout_batch(cublasLtMatrixLayout_t l, int64_t batch, int64_t stride) {
    int32_t count = (int32_t)batch;
    LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count));
    LT_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    return ADDC_OK;
}

// One cublasLtMatmul for g (bias fused when given). *no_algo: the heuristic found no algorithm
// (nothing was run).
static Status lt_matmul(const RmGemm *g, const void *bias, bool *no_algo) {
    *no_algo = false;
    cublasLtHandle_t h = (cublasLtHandle_t)cuda_cublaslt_handle();
    if (!h) return addc_error_status();
    size_t ws_bytes = 0;
    void *ws = cuda_cublaslt_workspace(&ws_bytes);
    if (!ws) return addc_error_status();
    cudaDataType_t abt = lt_type(g->ab_dt), ct = lt_type(g->c_dt);
    LtCall L;
    LT_CHECK(cublasLtMatmulDescCreate(&L.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opa = g->tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = g->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_CHECK(cublasLtMatmulDescSetAttribute(L.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    LT_CHECK(cublasLtMatmulDescSetAttribute(L.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (bias) {
        cublasLtEpilogue_t ep = CUBLASLT_EPILOGUE_BIAS;
        int32_t bt = (int32_t)ct;
        LT_CHECK(cublasLtMatmulDescSetAttribute(L.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep));
        LT_CHECK(cublasLtMatmulDescSetAttribute(L.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        LT_CHECK(cublasLtMatmulDescSetAttribute(L.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
    }
    // cuBLASLt's A is our B, its B our A (see the top of the file)
    LT_CHECK(cublasLtMatrixLayoutCreate(&L.la, abt, (uint64_t)(g->tb ? g->K : g->N), (uint64_t)(g->tb ? g->N : g->K),
                                        g->ldb));
    LT_CHECK(cublasLtMatrixLayoutCreate(&L.lb, abt, (uint64_t)(g->ta ? g->M : g->K), (uint64_t)(g->ta ? g->K : g->M),
                                        g->lda));
    LT_CHECK(cublasLtMatrixLayoutCreate(&L.lc, ct, (uint64_t)g->N, (uint64_t)g->M, g->ldc));
    if (g->batch > 1) {
        TRY(lt_layout_batch(L.la, g->batch, g->sB));
        TRY(lt_layout_batch(L.lb, g->batch, g->sA));
        TRY(lt_layout_batch(L.lc, g->batch, g->sC));
    }
    int64_t abs = (int64_t)dtype_size(g->ab_dt), cs = (int64_t)dtype_size(g->c_dt);
    uint64_t wsb = ws_bytes;
    uint32_t al_a = lt_alignment(g->B, g->sB * abs, g->batch), al_b = lt_alignment(g->A, g->sA * abs, g->batch);
    uint32_t al_c = lt_alignment(g->C, g->sC * cs, g->batch);
    uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE |
                       CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE; // not INPLACE: its partial sums race
    LT_CHECK(cublasLtMatmulPreferenceCreate(&L.pref));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(L.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(L.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(L.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(L.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(L.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(L.pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                  sizeof schemes));
    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    int found = 0;
    cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(h, L.op, L.la, L.lb, L.lc, L.lc, L.pref, 1, &res, &found);
    // with a bias any refusal falls back to the unfused form; without one only "none found" does
    if ((hs == CUBLAS_STATUS_SUCCESS && found == 0) || hs == CUBLAS_STATUS_NOT_SUPPORTED ||
        (bias && hs != CUBLAS_STATUS_SUCCESS)) {
        *no_algo = true;
        return ADDC_OK;
    }
    LT_CHECK(hs);
    float alpha = 1.0f, beta = g->beta;
    LT_CHECK(cublasLtMatmul(h, L.op, &alpha, g->B, L.la, g->A, L.lb, &beta, g->C, L.lc, g->C, L.lc, &res.algo, ws,
                            ws_bytes, STREAM));
    return ADDC_OK;
}

// C_i rows = bias (or 0) for every product: the K = 0 product, and the unfused bias
template <typename T>
__global__ static void fill_rows_kernel(T *C, const T *bias, int64_t M, int64_t N, int64_t ldc, int64_t sC,
                                        int64_t batch) {
    int64_t total = batch * M * N;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = idx % N, t = idx / N, r = t % M, i = t / M;
        st<T>(C, i * sC + r * ldc + n, bias ? ld<T>(bias, n) : 0.0f);
    }
}

static Status fill_rows(const RmGemm *g, const void *bias) {
    int64_t total = g->batch * g->M * g->N;
    DISPATCH_FLOAT(g->c_dt, T, {
        fill_rows_kernel<T><<<cuda_grid(total, 256), 256, 0, STREAM>>>((T *)g->C, (const T *)bias, g->M, g->N, g->ldc,
                                                                       g->sC, g->batch);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// The GEMM of g by one thread per output element (f32 sum over K in order): only when cuBLASLt
// offers no algorithm for g (an unusual alignment), so that the op still runs.
template <typename TA, typename TC>
__global__ static void gemm_plain_kernel(RmGemm g) {
    int64_t total = g.batch * g.M * g.N;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t n = idx % g.N, t = idx / g.N, m = t % g.M, i = t / g.M;
        const TA *A = (const TA *)g.A + i * g.sA, *B = (const TA *)g.B + i * g.sB;
        TC *C = (TC *)g.C + i * g.sC;
        float s = 0.0f;
        for (int64_t k = 0; k < g.K; k++) {
            float a = g.ta ? ld<TA>(A, k * g.lda + m) : ld<TA>(A, m * g.lda + k);
            float b = g.tb ? ld<TA>(B, n * g.ldb + k) : ld<TA>(B, k * g.ldb + n);
            s = fmaf(a, b, s);
        }
        if (g.bias) s += ld<TC>((const TC *)g.bias, n);
        if (g.beta != 0.0f) s += g.beta * ld<TC>(C, m * g.ldc + n);
        st<TC>(C, m * g.ldc + n, s);
    }
}

static Status gemm_plain(const RmGemm *g) {
    unsigned grid = cuda_grid(g->batch * g->M * g->N, 256);
    if (g->ab_dt == DTYPE_F32 && g->c_dt == DTYPE_F32)
        gemm_plain_kernel<float, float><<<grid, 256, 0, STREAM>>>(*g);
    else if (g->ab_dt == DTYPE_BF16 && g->c_dt == DTYPE_BF16)
        gemm_plain_kernel<__nv_bfloat16, __nv_bfloat16><<<grid, 256, 0, STREAM>>>(*g);
    else if (g->ab_dt == DTYPE_BF16 && g->c_dt == DTYPE_F32)
        gemm_plain_kernel<__nv_bfloat16, float><<<grid, 256, 0, STREAM>>>(*g);
    else
        return addc_error_set(ADDC_ERR_UNSUPPORTED, "GEMM of %s inputs into %s", dtype_name(g->ab_dt),
                              dtype_name(g->c_dt));
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status rm_gemm(const RmGemm *g) {
    if (g->M == 0 || g->N == 0 || g->batch <= 0) return ADDC_OK;
    if (g->bias && g->beta != 0.0f)
        return addc_error_set(ADDC_ERR_INVALID, "rm_gemm: a bias is only added with beta = 0");
    if (g->K == 0) return g->beta == 0.0f ? fill_rows(g, g->bias) : ADDC_OK; // an empty sum
    bool no_algo = false;
    if (g->bias && (uintptr_t)g->bias % 16 == 0) { // the BIAS epilogue wants an aligned vector
        TRY(lt_matmul(g, g->bias, &no_algo));
        if (!no_algo) return ADDC_OK;
    }
    RmGemm h = *g;
    if (g->bias) { // C = bias, then C += A B
        TRY(fill_rows(g, g->bias));
        h.bias = NULL;
        h.beta = 1.0f;
    }
    TRY(lt_matmul(&h, NULL, &no_algo));
    return no_algo ? gemm_plain(&h) : ADDC_OK;
}

// ---- batch dims: strided batches and loops ----

#define MM_BATCH_DIMS (TENSOR_MAX_DIMS - 2)

// g (pointers at product 0) over the batch dims bshape[0..nbd), where operand A, B, C of g
// moves by s[0][d], s[1][d], s[2][d] elements along dim d (0: shared along it). The innermost
// dims whose three strides merge into one linear stride (and along which C is not shared) form
// one strided-batched call; the outer dims are looped in order. Calls that share an output
// accumulate into it one after the other (the caller sets beta = 1).
static Status gemm_over_batch(const RmGemm *g, int nbd, const int64_t *bshape, const int64_t *sa, const int64_t *sb,
                              const int64_t *sc) {
    int nd = 0;
    int64_t shp[MM_BATCH_DIMS], s[3][MM_BATCH_DIMS];
    for (int d = 0; d < nbd; d++) {
        if (bshape[d] == 1) continue;
        if (bshape[d] == 0) return ADDC_OK; // no products
        shp[nd] = bshape[d];
        s[0][nd] = sa[d];
        s[1][nd] = sb[d];
        s[2][nd] = sc[d];
        nd++;
    }
    int inner0 = nd;
    int64_t cnt = 1, st[3] = {0, 0, 0};
    if (nd > 0 && s[2][nd - 1] != 0) {
        inner0 = nd - 1;
        cnt = shp[nd - 1];
        for (int m = 0; m < 3; m++) st[m] = s[m][nd - 1];
        while (inner0 > 0) {
            int d = inner0 - 1;
            bool ok = s[2][d] != 0;
            for (int m = 0; m < 3; m++) ok = ok && s[m][d] == st[m] * cnt;
            if (!ok) break;
            cnt *= shp[d];
            inner0 = d;
        }
    }
    int64_t outer = 1;
    for (int d = 0; d < inner0; d++) outer *= shp[d];
    int64_t abs = (int64_t)dtype_size(g->ab_dt), cs = (int64_t)dtype_size(g->c_dt);
    for (int64_t o = 0; o < outer; o++) {
        int64_t off[3] = {0, 0, 0}, r = o;
        for (int d = inner0 - 1; d >= 0; d--) {
            int64_t k = r % shp[d];
            r /= shp[d];
            for (int m = 0; m < 3; m++) off[m] += k * s[m][d];
        }
        RmGemm h = *g;
        h.A = (const char *)g->A + off[0] * abs;
        h.B = (const char *)g->B + off[1] * abs;
        h.C = (char *)g->C + off[2] * cs;
        h.batch = cnt;
        h.sA = st[0];
        h.sB = st[1];
        h.sC = st[2];
        TRY(rm_gemm(&h));
    }
    return ADDC_OK;
}

// ---- matmul ----

// The batch plan of op_matmul (the rules of matmul_plan in core/ops/matmul.c; the front-end has
// checked the shapes). Strides in elements, 0 along dims an operand is broadcast over.
typedef struct {
    int nbd;
    int64_t bshape[MM_BATCH_DIMS];
    int64_t astr[MM_BATCH_DIMS], bstr[MM_BATCH_DIMS], cstr[MM_BATCH_DIMS];
    int64_t M, N, K, lda, ldb;
    bool ta, tb;
} MmPlan;

// element strides of t's batch dims (t->ndim - 2, right-aligned) for the output batch shape
static void mm_batch_strides(const Tensor *t, int nbd, const int64_t *bshape, int64_t mat, int64_t *str) {
    int nt = t->ndim - 2;
    int64_t s = mat;
    for (int d = nbd - 1; d >= 0; d--) {
        int dt = d - (nbd - nt);
        int64_t size = dt >= 0 ? t->shape[dt] : 1;
        str[d] = size == 1 && bshape[d] != 1 ? 0 : s;
        s *= size;
    }
}

static Status mm_plan(const Tensor *a, const Tensor *b, bool ta, bool tb, MmPlan *p) {
    if (a->ndim < 2 || b->ndim < 2) return addc_error_set(ADDC_ERR_INVALID, "matmul: operands need 2 dims");
    int na = a->ndim - 2, nb = b->ndim - 2;
    p->nbd = na > nb ? na : nb;
    for (int d = 0; d < p->nbd; d++) {
        int da = d - (p->nbd - na), db = d - (p->nbd - nb);
        int64_t x = da >= 0 ? a->shape[da] : 1, y = db >= 0 ? b->shape[db] : 1;
        p->bshape[d] = x == 1 ? y : x;
    }
    const int64_t *ra = a->shape + na, *rb = b->shape + nb;
    p->ta = ta;
    p->tb = tb;
    p->M = ta ? ra[1] : ra[0];
    p->K = ta ? ra[0] : ra[1];
    p->N = tb ? rb[0] : rb[1];
    p->lda = ra[1];
    p->ldb = rb[1];
    mm_batch_strides(a, p->nbd, p->bshape, p->M * p->K, p->astr);
    mm_batch_strides(b, p->nbd, p->bshape, p->K * p->N, p->bstr);
    int64_t s = p->M * p->N;
    for (int d = p->nbd - 1; d >= 0; d--) {
        p->cstr[d] = s;
        s *= p->bshape[d];
    }
    // b shared by a whole, untransposed a: one product with batch * M rows (its gradient is then
    // one GEMM over the flattened batch)
    bool b_shared = true;
    int64_t batch = 1, abatch = 1;
    for (int d = 0; d < p->nbd; d++) {
        b_shared = b_shared && p->bstr[d] == 0;
        batch *= p->bshape[d];
    }
    for (int d = 0; d < na; d++) abatch *= a->shape[d];
    if (batch > 1 && b_shared && !ta && abatch == batch) {
        p->M *= batch;
        p->nbd = 0;
    }
    return ADDC_OK;
}

static RmGemm gemm_make(bool ta, bool tb, int64_t M, int64_t N, int64_t K, DType ab_dt, const void *A, int64_t lda,
                        const void *B, int64_t ldb, DType c_dt, void *C, int64_t ldc, float beta) {
    RmGemm g;
    memset(&g, 0, sizeof g);
    g.ta = ta;
    g.tb = tb;
    g.M = M;
    g.N = N;
    g.K = K;
    g.ab_dt = ab_dt;
    g.c_dt = c_dt;
    g.A = A;
    g.lda = lda;
    g.B = B;
    g.ldb = ldb;
    g.C = C;
    g.ldc = ldc;
    g.batch = 1;
    g.beta = beta;
    return g;
}

static Status matmul_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *a = &n->in[0]->v, *b = &n->in[1]->v;
    MmPlan p;
    TRY(mm_plan(a, b, n->ip[0], n->ip[1], &p));
    DType dt = a->dtype;
    RmGemm g = gemm_make(p.ta, p.tb, p.M, p.N, p.K, dt, a->data, p.lda, b->data, p.ldb, dt, n->out->v.data, p.N, 0.0f);
    return gemm_over_batch(&g, p.nbd, p.bshape, p.astr, p.bstr, p.cstr);
}

// The f32 upstream gradient as the dtype of the values (a bf16 copy from the arena for bf16).
static const void *grad_as(Ctx *c, const Tensor *g, DType dt) {
    if (dt == DTYPE_F32) return g->data;
    int64_t nel = tensor_numel(g);
    void *h = dev_scratch(c, (nel ? nel : 1) * (int64_t)dtype_size(dt));
    if (!h) return NULL;
    if (cuda_convert(h, dt, g->data, DTYPE_F32, nel) != ADDC_OK) return NULL;
    return h;
}

static Status matmul_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gA = ops_in_grad(c, n, 0, &st);
    float *gB = ops_in_grad(c, n, 1, &st);
    if (st) return st;
    if (!gA && !gB) return ADDC_OK;
    const Tensor *a = &n->in[0]->v, *b = &n->in[1]->v;
    MmPlan p;
    TRY(mm_plan(a, b, n->ip[0], n->ip[1], &p));
    DType dt = a->dtype;
    int64_t M = p.M, N = p.N, K = p.K;
    ArenaMark mark = arena_mark(c->arena);
    const void *dC = grad_as(c, &n->out->g, dt);
    if (!dC) return addc_error_status();
    if (gA) {
        RmGemm g = p.ta ? /* dA stored (K, M) += op(B) dC^T */
                       gemm_make(p.tb, true, K, M, N, dt, b->data, p.ldb, dC, N, DTYPE_F32, gA, M, 1.0f)
                        : /* dA (M, K) += dC op(B)^T */
                       gemm_make(false, !p.tb, M, K, N, dt, dC, N, b->data, p.ldb, DTYPE_F32, gA, K, 1.0f);
        Status s = p.ta ? gemm_over_batch(&g, p.nbd, p.bshape, p.bstr, p.cstr, p.astr)
                        : gemm_over_batch(&g, p.nbd, p.bshape, p.cstr, p.bstr, p.astr);
        if (s) return s;
    }
    if (gB) {
        RmGemm g = p.tb ? /* dB stored (N, K) += dC^T op(A) */
                       gemm_make(true, p.ta, N, K, M, dt, dC, N, a->data, p.lda, DTYPE_F32, gB, K, 1.0f)
                        : /* dB (K, N) += op(A)^T dC */
                       gemm_make(!p.ta, false, K, N, M, dt, a->data, p.lda, dC, N, DTYPE_F32, gB, N, 1.0f);
        Status s = p.tb ? gemm_over_batch(&g, p.nbd, p.bshape, p.cstr, p.astr, p.bstr)
                        : gemm_over_batch(&g, p.nbd, p.bshape, p.astr, p.cstr, p.bstr);
        if (s) return s;
    }
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_matmul = {matmul_fwd, matmul_bwd, NULL};

// ---- column sums (bias gradients) ----

#define COLSUM_ROWS 256 // rows per partial sum
#define COLSUM_TY 8     // threads per column in a block

// part[blk, c] = sum of src[r, c] over the rows r of block blk (rows_per each), in double: each
// of COLSUM_TY threads takes every COLSUM_TY-th row, then thread 0 adds their sums in order.
__global__ static void colsum_partial_kernel(const float *src, int64_t rows, int64_t cols, int64_t rows_per,
                                             double *part) {
    __shared__ double sh[COLSUM_TY][33];
    int64_t col = blockIdx.x * 32 + threadIdx.x, blk = blockIdx.y;
    double s = 0;
    if (col < cols) {
        int64_t r1 = (blk + 1) * rows_per < rows ? (blk + 1) * rows_per : rows;
        for (int64_t r = blk * rows_per + threadIdx.y; r < r1; r += COLSUM_TY) s += src[r * cols + col];
    }
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        double t = 0;
        for (int j = 0; j < COLSUM_TY; j++) t += sh[j][threadIdx.x];
        part[blk * cols + col] = t;
    }
}

// dst[c] += the partials of column c added in block order
__global__ static void colsum_finish_kernel(const double *part, int64_t nblk, int64_t cols, float *dst) {
    for (int64_t col = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; col < cols;
         col += (int64_t)gridDim.x * blockDim.x) {
        double t = 0;
        for (int64_t b = 0; b < nblk; b++) t += part[b * cols + col];
        dst[col] += (float)t;
    }
}

// dst (cols) += column sums of src (rows, cols), both f32 on the device; deterministic (the
// blocks depend on rows only). Shared with core/cuda/conv.cu (bias gradients).
extern "C" Status cuda_colsum_accum(Ctx *c, float *dst, const float *src, int64_t rows, int64_t cols) {
    if (rows <= 0 || cols <= 0) return ADDC_OK;
    int64_t rows_per = COLSUM_ROWS;
    if ((rows + rows_per - 1) / rows_per > 65535) rows_per = (rows + 65534) / 65535; // gridDim.y
    int64_t nblk = (rows + rows_per - 1) / rows_per;
    ArenaMark mark = arena_mark(c->arena);
    double *part = (double *)dev_scratch(c, nblk * cols * (int64_t)sizeof(double));
    if (!part) return addc_error_status();
    dim3 grid((unsigned)((cols + 31) / 32), (unsigned)nblk), block(32, COLSUM_TY);
    colsum_partial_kernel<<<grid, block, 0, STREAM>>>(src, rows, cols, rows_per, part);
    CUDA_LAUNCH_CHECK();
    colsum_finish_kernel<<<cuda_grid(cols, 256), 256, 0, STREAM>>>(part, nblk, cols, dst);
    CUDA_LAUNCH_CHECK();
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

// ---- linear ----

// rows of x (..., Din): the product of its leading dims
static int64_t linear_rows(const Tensor *x) {
    int64_t r = 1;
    for (int d = 0; d < x->ndim - 1; d++) r *= x->shape[d];
    return r;
}

static Status linear_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v, *w = &n->in[1]->v;
    int64_t Din = w->shape[1], Dout = w->shape[0], rows = linear_rows(x);
    DType dt = x->dtype;
    RmGemm g = gemm_make(false, true, rows, Dout, Din, dt, x->data, Din, w->data, Din, dt, n->out->v.data, Dout, 0.0f);
    g.bias = n->in[2] ? n->in[2]->v.data : NULL;
    return rm_gemm(&g);
}

static Status linear_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    float *gw = ops_in_grad(c, n, 1, &st);
    float *gb = ops_in_grad(c, n, 2, &st);
    if (st) return st;
    const Tensor *x = &n->in[0]->v, *w = &n->in[1]->v, *dy = &n->out->g;
    int64_t Din = w->shape[1], Dout = w->shape[0], rows = linear_rows(x);
    DType dt = x->dtype;
    ArenaMark mark = arena_mark(c->arena);
    if (gx || gw) {
        const void *d = grad_as(c, dy, dt);
        if (!d) return addc_error_status();
        if (gx) { // dx (rows, Din) += dy (rows, Dout) @ w (Dout, Din)
            RmGemm g = gemm_make(false, false, rows, Din, Dout, dt, d, Dout, w->data, Din, DTYPE_F32, gx, Din, 1.0f);
            TRY(rm_gemm(&g));
        }
        if (gw) { // dw (Dout, Din) += dy^T @ x (rows, Din)
            RmGemm g = gemm_make(true, false, Dout, Din, rows, dt, d, Dout, x->data, Din, DTYPE_F32, gw, Din, 1.0f);
            TRY(rm_gemm(&g));
        }
    }
    if (gb) TRY(cuda_colsum_accum(c, gb, (const float *)dy->data, rows, Dout));
    arena_reset_to(c->arena, mark);
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_linear = {linear_fwd, linear_bwd, NULL};
