// core/cuda/shape: the CUDA kernels of the shape family (core/ops/shape.c): concat, slice, permute,
// nearest 2x upsampling, area and bicubic resizing. Values f32 or bf16 (pure data movement keeps the
// dtype; the resizes compute in f32); gradients f32, ACCUMULATED (+=).
//
// Every kernel is a gather: one thread per destination element, which it alone reads and writes,
// so no atomics and the same bits on every run. concat and slice are strided row copies; permute
// maps each destination index to its source offset (up to 6 dims). The resizes are separable like
// the CPU kernels, in the same pass order (the cheaper axis first, decided by the same test) through
// an f32 temporary; their taps are recomputed in each thread from the same formulas as the CPU tap
// tables, and the backward (the transposed tables) finds the outputs that read an input position by
// binary search on the monotone window bounds, then adds their contributions in increasing output
// order, the order of the CPU's transposed tables.
#include <math.h>

#include "core/cuda/cuda_internal.cuh"

extern "C" {
#include "core/cuda/cuda_impls.h"
}

#define SHAPE_THREADS 256

#define GRID_STRIDE_LOOP(e, n) \
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < (n); e += (int64_t)gridDim.x * blockDim.x)

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= s[i];
    return p;
}

// ---- strided rows: dst[r * ds + k] = src[r * ss + k] (or += for f32 gradients), k < len ----

template <typename T>
__global__ static void rows_copy_kernel(T *dst, int64_t ds, const T *src, int64_t ss, int64_t rows, int64_t len) {
    GRID_STRIDE_LOOP(e, rows * len) {
        int64_t r = e / len, k = e % len;
        dst[r * ds + k] = src[r * ss + k];
    }
}

__global__ static void rows_add_kernel(float *dst, int64_t ds, const float *src, int64_t ss, int64_t rows,
                                       int64_t len) {
    GRID_STRIDE_LOOP(e, rows * len) {
        int64_t r = e / len, k = e % len;
        dst[r * ds + k] += src[r * ss + k];
    }
}

// dst (rows, ds) <- src (rows, ss): the first len elements of each row, in the value dtype dt
static Status rows_copy(DType dt, void *dst, int64_t ds, const void *src, int64_t ss, int64_t rows, int64_t len) {
    if (rows <= 0 || len <= 0) return ADDC_OK;
    DISPATCH_FLOAT(dt, T, {
        rows_copy_kernel<T><<<cuda_grid(rows * len, SHAPE_THREADS), SHAPE_THREADS, 0, STREAM>>>(
            (T *)dst, ds, (const T *)src, ss, rows, len);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status rows_add(float *dst, int64_t ds, const float *src, int64_t ss, int64_t rows, int64_t len) {
    if (rows <= 0 || len <= 0) return ADDC_OK;
    rows_add_kernel<<<cuda_grid(rows * len, SHAPE_THREADS), SHAPE_THREADS, 0, STREAM>>>(dst, ds, src, ss, rows, len);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// ---- concat: (..., La, ...) and (..., Lb, ...) -> (..., La + Lb, ...) along axis ip[0] ----

static void concat_geometry(const Node *n, int64_t *outer, int64_t *ra, int64_t *rb) {
    const Tensor *a = &n->in[0]->v, *b = &n->in[1]->v;
    int ax = (int)n->ip[0];
    int64_t inner = prod(a->shape, ax + 1, a->ndim);
    *outer = prod(a->shape, 0, ax);
    *ra = a->shape[ax] * inner;
    *rb = b->shape[ax] * inner;
}

static Status concat_fwd(Ctx *c, Node *n) {
    (void)c;
    int64_t outer, ra, rb;
    concat_geometry(n, &outer, &ra, &rb);
    DType dt = n->out->v.dtype;
    size_t es = dtype_size(dt);
    char *y = (char *)n->out->v.data;
    TRY(rows_copy(dt, y, ra + rb, n->in[0]->v.data, ra, outer, ra));
    return rows_copy(dt, y + (size_t)ra * es, ra + rb, n->in[1]->v.data, rb, outer, rb);
}

static Status concat_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *ga = ops_in_grad(c, n, 0, &st);
    float *gb = ops_in_grad(c, n, 1, &st);
    if (st) return st;
    int64_t outer, ra, rb;
    concat_geometry(n, &outer, &ra, &rb);
    const float *dy = (const float *)n->out->g.data;
    if (ga) TRY(rows_add(ga, ra, dy, ra + rb, outer, ra));
    if (gb) TRY(rows_add(gb, rb, dy + ra, ra + rb, outer, rb));
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_concat = {concat_fwd, concat_bwd, NULL};

// ---- slice: x (..., L, ...) -> (..., len, ...), elements [start, start + len) of axis ip[0] ----

static void slice_geometry(const Node *n, int64_t *outer, int64_t *rx, int64_t *ry, int64_t *off) {
    const Tensor *x = &n->in[0]->v;
    int ax = (int)n->ip[0];
    int64_t inner = prod(x->shape, ax + 1, x->ndim);
    *outer = prod(x->shape, 0, ax);
    *rx = x->shape[ax] * inner;
    *ry = n->ip[2] * inner;
    *off = n->ip[1] * inner;
}

static Status slice_fwd(Ctx *c, Node *n) {
    (void)c;
    int64_t outer, rx, ry, off;
    slice_geometry(n, &outer, &rx, &ry, &off);
    DType dt = n->in[0]->v.dtype;
    const char *x = (const char *)n->in[0]->v.data + (size_t)off * dtype_size(dt);
    return rows_copy(dt, n->out->v.data, ry, x, rx, outer, ry);
}

static Status slice_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    int64_t outer, rx, ry, off;
    slice_geometry(n, &outer, &rx, &ry, &off);
    return rows_add(gx + off, rx, (const float *)n->out->g.data, ry, outer, ry);
}

extern "C" const OpImpl cuda_op_slice = {slice_fwd, slice_bwd, NULL};

// ---- permute: y.shape[i] = x.shape[perm[i]], perm in ip[0..ndim) ----

// A destination of `nd` dims (row-major, contiguous) and, for each of its dims, the element
// stride of the source along it.
struct PermGeom {
    int nd;
    int64_t shape[TENSOR_MAX_DIMS];
    int64_t sstride[TENSOR_MAX_DIMS];
};

static __device__ __forceinline__ int64_t perm_src_offset(const PermGeom &g, int64_t e) {
    int64_t off = 0;
    for (int d = g.nd - 1; d >= 0; d--) {
        int64_t i = e % g.shape[d];
        e /= g.shape[d];
        off += i * g.sstride[d];
    }
    return off;
}

template <typename T>
__global__ static void permute_fwd_kernel(T *dst, const T *src, int64_t n, PermGeom g) {
    GRID_STRIDE_LOOP(e, n) dst[e] = src[perm_src_offset(g, e)];
}

__global__ static void permute_bwd_kernel(float *dst, const float *src, int64_t n, PermGeom g) {
    GRID_STRIDE_LOOP(e, n) dst[e] += src[perm_src_offset(g, e)];
}

// contiguous row-major strides of a shape
static void contiguous_strides(const int64_t *shape, int nd, int64_t *st) {
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        st[i] = s;
        s *= shape[i];
    }
}

static Status permute_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    int64_t numel = tensor_numel(x);
    if (numel == 0) return ADDC_OK;
    int64_t xst[TENSOR_MAX_DIMS];
    contiguous_strides(x->shape, x->ndim, xst);
    PermGeom g;
    g.nd = x->ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++) g.shape[i] = 1, g.sstride[i] = 0;
    for (int i = 0; i < x->ndim; i++) {
        g.shape[i] = x->shape[n->ip[i]];
        g.sstride[i] = xst[n->ip[i]];
    }
    DISPATCH_FLOAT(x->dtype, T, {
        permute_fwd_kernel<T><<<cuda_grid(numel, SHAPE_THREADS), SHAPE_THREADS, 0, STREAM>>>(
            (T *)n->out->v.data, (const T *)x->data, numel, g);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// gx[x index] += dy[y index]: a gather over x, dim d of x being dim inv[d] of y
static Status permute_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    int64_t numel = tensor_numel(x);
    if (numel == 0) return ADDC_OK;
    int nd = x->ndim;
    int64_t yshape[TENSOR_MAX_DIMS], yst[TENSOR_MAX_DIMS];
    int inv[TENSOR_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        yshape[i] = x->shape[n->ip[i]];
        inv[n->ip[i]] = i;
    }
    contiguous_strides(yshape, nd, yst);
    PermGeom g;
    g.nd = nd;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++) g.shape[i] = 1, g.sstride[i] = 0;
    for (int d = 0; d < nd; d++) {
        g.shape[d] = x->shape[d];
        g.sstride[d] = yst[inv[d]];
    }
    permute_bwd_kernel<<<cuda_grid(numel, SHAPE_THREADS), SHAPE_THREADS, 0, STREAM>>>(
        gx, (const float *)n->out->g.data, numel, g);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_permute = {permute_fwd, permute_bwd, NULL};

// ---- upsample_nearest2x: (B, H, W, C) -> (B, 2H, 2W, C) ----

template <typename T>
__global__ static void up_fwd_kernel(T *y, const T *x, int64_t b, int64_t h, int64_t w, int64_t ch) {
    int64_t oh = 2 * h, ow = 2 * w;
    GRID_STRIDE_LOOP(e, b * oh * ow * ch) {
        int64_t k = e % ch, t = e / ch;
        int64_t j = t % ow;
        t /= ow;
        int64_t i = t % oh, bb = t / oh;
        y[e] = x[((bb * h + i / 2) * w + j / 2) * ch + k];
    }
}

// gx[b, i, j] += (dy[2i, 2j] + dy[2i, 2j+1]) + (dy[2i+1, 2j] + dy[2i+1, 2j+1]): the CPU's order
__global__ static void up_bwd_kernel(float *gx, const float *dy, int64_t b, int64_t h, int64_t w, int64_t ch) {
    int64_t ow = 2 * w;
    GRID_STRIDE_LOOP(e, b * h * w * ch) {
        int64_t k = e % ch, t = e / ch;
        int64_t j = t % w;
        t /= w;
        int64_t i = t % h, bb = t / h;
        const float *d0 = dy + ((bb * 2 * h + 2 * i) * ow + 2 * j) * ch + k, *d1 = d0 + ow * ch;
        gx[e] += (d0[0] + d0[ch]) + (d1[0] + d1[ch]);
    }
}

static Status up_fwd(Ctx *c, Node *n) {
    (void)c;
    const Tensor *x = &n->in[0]->v;
    int64_t numel = tensor_numel(&n->out->v);
    if (numel == 0) return ADDC_OK;
    DISPATCH_FLOAT(x->dtype, T, {
        up_fwd_kernel<T><<<cuda_grid(numel, SHAPE_THREADS), SHAPE_THREADS, 0, STREAM>>>(
            (T *)n->out->v.data, (const T *)x->data, x->shape[0], x->shape[1], x->shape[2], x->shape[3]);
    });
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status up_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    const Tensor *x = &n->in[0]->v;
    int64_t numel = tensor_numel(x);
    if (numel == 0) return ADDC_OK;
    up_bwd_kernel<<<cuda_grid(numel, SHAPE_THREADS), SHAPE_THREADS, 0, STREAM>>>(
        gx, (const float *)n->out->g.data, x->shape[0], x->shape[1], x->shape[2], x->shape[3]);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

extern "C" const OpImpl cuda_op_upsample_nearest2x = {up_fwd, up_bwd, NULL};

// ---- separable resampling: area and bicubic ----

enum { RESIZE_AREA, RESIZE_BICUBIC }; // n->ip[0], as core/ops/shape.c

// One axis of a resize: input length l, output length o, scale = l / o (double, as the CPU).
struct ResizeAxis {
    int64_t l, o;
    double scale;
};

static ResizeAxis resize_axis(int64_t l, int64_t o) {
    ResizeAxis a;
    a.l = l;
    a.o = o;
    a.scale = (double)l / (double)o;
    return a;
}

// area: output i averages inputs [floor(i l / o), ceil((i + 1) l / o))
static __device__ __forceinline__ int64_t area_start(const ResizeAxis &a, int64_t i) { return (i * a.l) / a.o; }
static __device__ __forceinline__ int64_t area_end(const ResizeAxis &a, int64_t i) {
    return ((i + 1) * a.l + a.o - 1) / a.o;
}
static __device__ __forceinline__ float area_weight(int64_t s, int64_t e) { return (float)(1.0 / (double)(e - s)); }

// bicubic, align_corners=False: source x = (i + 0.5) scale - 0.5, f = floor(x), u = x - f; taps
// f - 1 + k (k < 4) clamped to [0, l). The CPU's formulas rounded operation by operation (their ISO C
// evaluation; a CPU build that contracts them to FMAs can differ in the last bit of a double, which
// the rounding of the weights to f32 almost always hides). Forward and backward share these functions,
// so the backward's search sees exactly the floors the forward used.
static __device__ __forceinline__ double bicubic_src(const ResizeAxis &a, int64_t i) {
    return __dsub_rn(__dmul_rn(a.scale, __dadd_rn((double)i, 0.5)), 0.5);
}
static __device__ __forceinline__ int64_t bicubic_floor(const ResizeAxis &a, int64_t i) {
    return (int64_t)floor(bicubic_src(a, i));
}
// torch's cubic convolution kernel, A = -0.75: |x| <= 1 and 1 < |x| < 2
static __device__ __forceinline__ double cubic_near(double x) {
    return __dadd_rn(__dmul_rn(__dmul_rn(__dsub_rn(__dmul_rn(1.25, x), 2.25), x), x), 1.0);
}
static __device__ __forceinline__ double cubic_far(double x) {
    return __dadd_rn(__dmul_rn(__dsub_rn(__dmul_rn(__dadd_rn(__dmul_rn(-0.75, x), 3.75), x), 6.0), x), 3.0);
}
static __device__ __forceinline__ void bicubic_taps(const ResizeAxis &a, int64_t i, int64_t idx[4], float w[4]) {
    double src = bicubic_src(a, i), f = floor(src), u = __dsub_rn(src, f);
    w[0] = (float)cubic_far(__dadd_rn(u, 1.0));
    w[1] = (float)cubic_near(u);
    w[2] = (float)cubic_near(__dsub_rn(1.0, u));
    w[3] = (float)cubic_far(__dsub_rn(2.0, u));
    for (int k = 0; k < 4; k++) {
        int64_t j = (int64_t)f - 1 + k;
        idx[k] = j < 0 ? 0 : j >= a.l ? a.l - 1 : j;
    }
}

// dst (outer, o, inner) = the taps applied along the middle axis of src (outer, l, inner)
template <int KIND, typename TS, typename TD>
__global__ static void resample_fwd_kernel(TD *dst, const TS *src, int64_t outer, int64_t inner, ResizeAxis a) {
    GRID_STRIDE_LOOP(e, outer * a.o * inner) {
        int64_t in = e % inner, t = e / inner;
        int64_t i = t % a.o, ob = t / a.o;
        const TS *s = src + ob * a.l * inner + in;
        float acc = 0.0f;
        if (KIND == RESIZE_AREA) {
            int64_t j0 = area_start(a, i), j1 = area_end(a, i);
            float w = area_weight(j0, j1);
            for (int64_t j = j0; j < j1; j++) acc += w * ld<TS>(s, j * inner);
        } else {
            int64_t idx[4];
            float w[4];
            bicubic_taps(a, i, idx, w);
            for (int k = 0; k < 4; k++) acc += w[k] * ld<TS>(s, idx[k] * inner);
        }
        st<TD>(dst, e, acc);
    }
}

// first i in [0, o) with pred(i) true, for a predicate false then true along i (o if none)
template <typename Pred>
static __device__ __forceinline__ int64_t first_true(int64_t o, Pred pred) {
    int64_t lo = 0, hi = o;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (pred(mid))
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

// The transposed taps: dst (outer, l, inner) (=|+=) sum over the outputs i reading input j of
// w(i -> j) src[i], src (outer, o, inner) f32, in increasing i (then tap) order.
// Area: i reads j iff start(i) <= j < end(i); both bounds are non-decreasing in i.
// Bicubic: i reads j only if floor(i) lies in [j - 2, j + 1] (also with clamping: a clamped tap
// reaches j = 0 only from floor <= 0 and j = l - 1 only from floor >= l - 2, while floor is always
// in [-1, l - 1]); floor is non-decreasing in i; each tap is then tested exactly.
template <int KIND>
__global__ static void resample_bwd_kernel(float *dst, const float *src, int64_t outer, int64_t inner, ResizeAxis a,
                                           bool accumulate) {
    GRID_STRIDE_LOOP(e, outer * a.l * inner) {
        int64_t in = e % inner, t = e / inner;
        int64_t j = t % a.l, ob = t / a.l;
        const float *s = src + ob * a.o * inner + in;
        float acc = accumulate ? dst[e] : 0.0f;
        if (KIND == RESIZE_AREA) {
            int64_t i0 = first_true(a.o, [&](int64_t i) { return area_end(a, i) > j; });
            int64_t i1 = first_true(a.o, [&](int64_t i) { return area_start(a, i) > j; });
            for (int64_t i = i0; i < i1; i++) {
                int64_t s0 = area_start(a, i), s1 = area_end(a, i);
                if (s0 <= j && j < s1) acc += area_weight(s0, s1) * s[i * inner];
            }
        } else {
            int64_t i0 = first_true(a.o, [&](int64_t i) { return bicubic_floor(a, i) >= j - 2; });
            int64_t i1 = first_true(a.o, [&](int64_t i) { return bicubic_floor(a, i) > j + 1; });
            for (int64_t i = i0; i < i1; i++) {
                int64_t idx[4];
                float w[4];
                bicubic_taps(a, i, idx, w);
                float g = s[i * inner];
                for (int k = 0; k < 4; k++)
                    if (idx[k] == j) acc += w[k] * g;
            }
        }
        dst[e] = acc;
    }
}

template <typename TS, typename TD>
static Status resample_fwd(int kind, TD *dst, const TS *src, int64_t outer, int64_t inner, ResizeAxis a) {
    int64_t n = outer * a.o * inner;
    if (n <= 0) return ADDC_OK;
    unsigned g = cuda_grid(n, SHAPE_THREADS);
    if (kind == RESIZE_AREA)
        resample_fwd_kernel<RESIZE_AREA, TS, TD><<<g, SHAPE_THREADS, 0, STREAM>>>(dst, src, outer, inner, a);
    else
        resample_fwd_kernel<RESIZE_BICUBIC, TS, TD><<<g, SHAPE_THREADS, 0, STREAM>>>(dst, src, outer, inner, a);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

static Status resample_bwd(int kind, float *dst, const float *src, int64_t outer, int64_t inner, ResizeAxis a,
                           bool accumulate) {
    int64_t n = outer * a.l * inner;
    if (n <= 0) return ADDC_OK;
    unsigned g = cuda_grid(n, SHAPE_THREADS);
    if (kind == RESIZE_AREA)
        resample_bwd_kernel<RESIZE_AREA><<<g, SHAPE_THREADS, 0, STREAM>>>(dst, src, outer, inner, a, accumulate);
    else
        resample_bwd_kernel<RESIZE_BICUBIC><<<g, SHAPE_THREADS, 0, STREAM>>>(dst, src, outer, inner, a, accumulate);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

// forward: y = Rh x Rw^T in two passes through an f32 temporary, the cheaper order first (the
// CPU's test); backward: the transposed passes in the reverse order, accumulating into gx
static Status resize_run(Ctx *c, Node *n, bool backward, float *gx) {
    const Tensor *x = &n->in[0]->v;
    int64_t b = x->shape[0], h = x->shape[1], w = x->shape[2], ch = x->shape[3];
    int64_t oh = n->out->v.shape[1], ow = n->out->v.shape[2];
    if (b * ch == 0) return ADDC_OK;
    int kind = (int)n->ip[0];
    ResizeAxis ah = resize_axis(h, oh), aw = resize_axis(w, ow);
    bool h_first = oh * w <= h * ow;
    ArenaMark mark = arena_mark(c->arena);
    float *tmp = (float *)dev_scratch(c, b * (h_first ? oh * w : h * ow) * ch * 4);
    if (!tmp) {
        arena_reset_to(c->arena, mark);
        return addc_error_status();
    }
    Status st = ADDC_OK;
    if (!backward) {
        DISPATCH_FLOAT(x->dtype, T, {
            const T *xd = (const T *)x->data;
            T *y = (T *)n->out->v.data;
            if (h_first) {
                st = resample_fwd<T, float>(kind, tmp, xd, b, w * ch, ah);
                if (!st) st = resample_fwd<float, T>(kind, y, tmp, b * oh, ch, aw);
            } else {
                st = resample_fwd<T, float>(kind, tmp, xd, b * h, ch, aw);
                if (!st) st = resample_fwd<float, T>(kind, y, tmp, b, ow * ch, ah);
            }
        });
    } else {
        const float *dy = (const float *)n->out->g.data;
        if (h_first) {
            st = resample_bwd(kind, tmp, dy, b * oh, ch, aw, false);
            if (!st) st = resample_bwd(kind, gx, tmp, b, w * ch, ah, true);
        } else {
            st = resample_bwd(kind, tmp, dy, b, ow * ch, ah, false);
            if (!st) st = resample_bwd(kind, gx, tmp, b * h, ch, aw, true);
        }
    }
    arena_reset_to(c->arena, mark); // the kernels using tmp are ordered before any later use
    return st;
}

static Status resize_fwd(Ctx *c, Node *n) { return resize_run(c, n, false, NULL); }

static Status resize_bwd(Ctx *c, Node *n) {
    Status st = ADDC_OK;
    float *gx = ops_in_grad(c, n, 0, &st);
    if (!gx) return st;
    return resize_run(c, n, true, gx);
}

extern "C" const OpImpl cuda_op_resize_area = {resize_fwd, resize_bwd, NULL};
extern "C" const OpImpl cuda_op_resize_bicubic = {resize_fwd, resize_bwd, NULL};
