// tests/cuemu/cublaslt.cpp: the mock cuBLASLt of the CUDA host emulator (include/cublasLt.h).
//
// D = alpha op(A) op(B) + beta C (+ bias per row of D), column-major with leading dimensions and
// strided batches, computed on the host with a double accumulator (summed over k in order) and
// rounded once to D's type. C is not read when beta = 0 (it may hold NaN, as cuBLASLt allows).
// Checked as the library documents it: op shapes agree, ld >= rows, equal batch counts, supported
// type combinations (f32 x f32 -> f32, bf16 x bf16 -> bf16 or f32, f32 compute and scale), a bias
// of D's type; the heuristic honours the alignments promised in the preference (an algorithm
// needs at least element alignment) and cublasLtMatmul refuses pointers that break that promise.
// Every operand must lie inside device memory, its whole extent.
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <stdlib.h>
#include <string.h>

#include "cuemu_internal.h"

struct cuemu_lt_handle {
    int magic;
};
struct cuemu_lt_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int32_t transa, transb;
    int32_t epilogue;
    const void *bias;
    int32_t bias_type; // -1: D's type
};
struct cuemu_lt_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch;
    int64_t stride;
};
struct cuemu_lt_pref {
    uint64_t max_ws;
    uint32_t align[4]; // A, B, C, D
    uint32_t schemes;
};

static size_t type_size(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : t == CUDA_R_16BF ? 2 : 0; }

static double load(cudaDataType_t t, const void *p, int64_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
}

static void store(cudaDataType_t t, void *p, int64_t i, double v) {
    if (t == CUDA_R_32F) ((float *)p)[i] = (float)v;
    else ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v);
}

extern "C" {

const char *cublasLtGetStatusName(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    default: return "CUBLAS_STATUS_INTERNAL_ERROR";
    }
}
const char *cublasLtGetStatusString(cublasStatus_t s) { return cublasLtGetStatusName(s); }

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = new cuemu_lt_handle{0x17};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute, cudaDataType_t scale) {
    *d = new cuemu_lt_desc{compute, scale, CUBLAS_OP_N, CUBLAS_OP_N, CUBLASLT_EPILOGUE_DEFAULT, NULL, -1};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete d;
    return CUBLAS_STATUS_SUCCESS;
}

#define SET(field, type)                                                                                               \
    do {                                                                                                               \
        if (size != sizeof(type)) return CUBLAS_STATUS_INVALID_VALUE;                                                 \
        type v_;                                                                                                       \
        memcpy(&v_, buf, sizeof v_);                                                                                   \
        field = v_;                                                                                                    \
    } while (0)

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size) {
    if (!d || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: SET(d->transa, int32_t); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: SET(d->transb, int32_t); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: SET(d->epilogue, uint32_t); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: SET(d->bias, const void *); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: SET(d->bias_type, int32_t); break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED; // not emulated: addc does not use it
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t type, uint64_t rows, uint64_t cols,
                                          int64_t ld) {
    *l = new cuemu_lt_layout{type, rows, cols, ld, 1, 0};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size) {
    if (!l || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: SET(l->batch, int32_t); break;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: SET(l->stride, int64_t); break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = new cuemu_lt_pref{0, {256, 256, 256, 256}, CUBLASLT_REDUCTION_SCHEME_MASK};
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size) {
    if (!p || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: SET(p->max_ws, uint64_t); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: SET(p->align[0], uint32_t); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: SET(p->align[1], uint32_t); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: SET(p->align[2], uint32_t); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: SET(p->align[3], uint32_t); break;
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK: SET(p->schemes, uint32_t); break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

} // extern "C"

// Shapes, types and batches of a problem; CUBLAS_STATUS_SUCCESS when cuBLASLt would take it.
static cublasStatus_t problem_check(const cuemu_lt_desc *op, const cuemu_lt_layout *a, const cuemu_lt_layout *b,
                                    const cuemu_lt_layout *c, const cuemu_lt_layout *d) {
    if (!op || !a || !b || !c || !d) return CUBLAS_STATUS_INVALID_VALUE;
    if (op->compute != CUBLAS_COMPUTE_32F || op->scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if ((op->transa != CUBLAS_OP_N && op->transa != CUBLAS_OP_T) || (op->transb != CUBLAS_OP_N && op->transb != CUBLAS_OP_T))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!type_size(a->type) || !type_size(b->type) || !type_size(c->type) || !type_size(d->type))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (a->type != b->type || c->type != d->type) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (a->type == CUDA_R_32F && d->type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    uint64_t m = d->rows, n = d->cols;
    uint64_t k = op->transa == CUBLAS_OP_N ? a->cols : a->rows;
    uint64_t am = op->transa == CUBLAS_OP_N ? a->rows : a->cols;
    uint64_t bk = op->transb == CUBLAS_OP_N ? b->rows : b->cols, bn = op->transb == CUBLAS_OP_N ? b->cols : b->rows;
    if (am != m || bk != k || bn != n || c->rows != m || c->cols != n) return CUBLAS_STATUS_INVALID_VALUE;
    const cuemu_lt_layout *ls[4] = {a, b, c, d};
    for (const cuemu_lt_layout *l : ls) {
        if (l->ld < (int64_t)(l->rows ? l->rows : 1) || l->batch < 1 || l->stride < 0) return CUBLAS_STATUS_INVALID_VALUE;
        if (l->batch != d->batch) return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (d->batch > 1 && d->stride == 0) return CUBLAS_STATUS_INVALID_VALUE; // outputs would overlap
    if (op->epilogue != CUBLASLT_EPILOGUE_DEFAULT && op->epilogue != CUBLASLT_EPILOGUE_BIAS)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (op->epilogue == CUBLASLT_EPILOGUE_BIAS) {
        if (!op->bias) return CUBLAS_STATUS_INVALID_VALUE;
        int32_t bt = op->bias_type < 0 ? (int32_t)d->type : op->bias_type;
        if (bt != (int32_t)d->type) return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                                         cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                         cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                         cublasLtMatmulPreference_t pref, int requested,
                                                         cublasLtMatmulHeuristicResult_t *results, int *found) {
    if (!h || !pref || requested < 1 || !results || !found) return CUBLAS_STATUS_INVALID_VALUE;
    *found = 0;
    cublasStatus_t s = problem_check(op, a, b, c, d);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (cuemu_env_long("CUEMU_LT_NO_ALGO", 0)) return CUBLAS_STATUS_SUCCESS; // exercise the caller's fallback
    const cuemu_lt_layout *ls[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++) {
        uint32_t al = pref->align[i];
        if (al == 0 || (al & (al - 1)) || al < type_size(ls[i]->type)) return CUBLAS_STATUS_SUCCESS; // none fits
    }
    memset(&results[0], 0, sizeof results[0]);
    for (int i = 0; i < 4; i++) results[0].algo.data[i] = pref->align[i];
    results[0].algo.data[4] = 0xc0e0u; // marks an algorithm of this mock
    results[0].workspaceSize = 0;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

// bytes spanned by a layout's batches (column-major, ld)
static size_t extent(const cuemu_lt_layout *l) {
    if (l->rows == 0 || l->cols == 0) return 0;
    size_t one = ((l->cols - 1) * (size_t)l->ld + l->rows) * type_size(l->type);
    return one + (size_t)(l->batch - 1) * (size_t)l->stride * type_size(l->type);
}

extern "C" cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha, const void *A,
                                         cublasLtMatrixLayout_t a, const void *B, cublasLtMatrixLayout_t b,
                                         const void *beta, const void *C, cublasLtMatrixLayout_t c, void *D,
                                         cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t *algo, void *workspace,
                                         size_t workspace_bytes, cudaStream_t stream) {
    (void)workspace, (void)workspace_bytes, (void)stream;
    if (!h || !alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t s = problem_check(op, a, b, c, d);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (!algo || algo->data[4] != 0xc0e0u) return CUBLAS_STATUS_INVALID_VALUE;
    const void *ptr[4] = {A, B, C, D};
    const cuemu_lt_layout *ls[4] = {a, b, c, d};
    float al = *(const float *)alpha, be = *(const float *)beta;
    for (int i = 0; i < 4; i++) {
        if (i == 2 && be == 0.0f) continue; // C unread
        size_t ext = extent(ls[i]);
        if (ext == 0) continue;
        if (!ptr[i] || !cuemu_is_device(ptr[i], ext)) return CUBLAS_STATUS_INVALID_VALUE;
        uint64_t need = algo->data[i];
        uint64_t addr = (uint64_t)(uintptr_t)ptr[i] | (ls[i]->batch > 1 ? (uint64_t)ls[i]->stride * type_size(ls[i]->type) : 0);
        if (addr % need) return CUBLAS_STATUS_INVALID_VALUE; // the algorithm was chosen for a stronger alignment
    }
    const uint64_t m = d->rows, n = d->cols, k = op->transa == CUBLAS_OP_N ? a->cols : a->rows;
    const void *bias = op->epilogue == CUBLASLT_EPILOGUE_BIAS ? op->bias : NULL;
    if (bias && !cuemu_is_device(bias, m * type_size(d->type))) return CUBLAS_STATUS_INVALID_VALUE;
    const bool ta = op->transa == CUBLAS_OP_T, tb = op->transb == CUBLAS_OP_T;
    for (int32_t bi = 0; bi < d->batch; bi++) {
        const char *Ab = (const char *)A + (size_t)bi * a->stride * type_size(a->type);
        const char *Bb = (const char *)B + (size_t)bi * b->stride * type_size(b->type);
        const char *Cb = (const char *)C + (size_t)bi * c->stride * type_size(c->type);
        char *Db = (char *)D + (size_t)bi * d->stride * type_size(d->type);
        for (uint64_t j = 0; j < n; j++)
            for (uint64_t i = 0; i < m; i++) {
                double acc = 0.0;
                for (uint64_t p = 0; p < k; p++) {
                    double x = load(a->type, Ab, ta ? (int64_t)(p + i * a->ld) : (int64_t)(i + p * a->ld));
                    double y = load(b->type, Bb, tb ? (int64_t)(j + p * b->ld) : (int64_t)(p + j * b->ld));
                    acc += x * y;
                }
                double v = (double)al * acc;
                if (be != 0.0f) v += (double)be * load(c->type, Cb, (int64_t)(i + j * c->ld));
                if (bias) v += load(d->type, bias, (int64_t)i);
                store(d->type, Db, (int64_t)(i + j * d->ld), v);
            }
    }
    return CUBLAS_STATUS_SUCCESS;
}
