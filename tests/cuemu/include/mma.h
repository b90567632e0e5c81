// tests/cuemu/include/mma.h: nvcuda::wmma for the host emulator (cuemu), the m16n16k16 shapes with
// bf16 (or f32 accumulator) fragments. Each lane's fragment holds the whole 16 x 16 tile (the
// element layout of a real fragment is undefined, so code may only apply the same operation to all
// of x[0, num_elements)); load/store/mma are done by every lane on its own copy, at the lane's own
// pace: they are not warp barriers here, so a missing __syncwarp between one lane's shared-memory
// write and another lane's load shows up under CUEMU_ORDER=1/2. Products of bf16 are exact in f32
// and summed over k in order in f32 (tensor cores sum in an unspecified order). Pointers must be
// 256-bit aligned and ldm a multiple of 16 bytes, as wmma requires: a violation aborts.
#ifndef CUEMU_MMA_H
#define CUEMU_MMA_H

#include <stdint.h>

#include "cuda_bf16.h"
#include "cuda_runtime.h"

void cuemu_wmma_check(const void *p, unsigned ldm, unsigned elem_bytes, const char *what);

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> class fragment {
  public:
    static_assert(M == 16 && N == 16 && K == 16, "cuemu emulates the m16n16k16 wmma shape only");
    enum { num_elements = 256 };
    typedef T element_type;
    T x[num_elements]; // the tile, row-major: (row, col) at row * 16 + col
};

template <typename Use, int M, int N, int K, typename T, typename L, typename V>
static inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, const V &v) {
    for (int i = 0; i < 256; i++) f.x[i] = (T)v;
}

// matrix_a (16 x 16, rows x k) and matrix_b (k x cols) from memory in the fragment's layout
template <typename Use, typename T, typename L>
static inline void load_matrix_sync(fragment<Use, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    cuemu_wmma_check(p, ldm, sizeof(T), "load_matrix_sync");
    const bool col = std::is_same<L, col_major>::value;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = col ? p[c * ldm + r] : p[r * ldm + c];
}

static inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm,
                                    layout_t l) {
    cuemu_wmma_check(p, ldm, sizeof(float), "load_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) f.x[r * 16 + c] = l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
}

static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm,
                                     layout_t l) {
    cuemu_wmma_check(p, ldm, sizeof(float), "store_matrix_sync");
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) (l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[r * 16 + c];
}

// d = a b + c (d may be c)
template <typename TA, typename LA, typename TB, typename LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, TA, LA> &a,
                            const fragment<matrix_b, 16, 16, 16, TB, LB> &b,
                            const fragment<accumulator, 16, 16, 16, float> &c) {
    float out[256];
    for (int r = 0; r < 16; r++)
        for (int col = 0; col < 16; col++) {
            float acc = c.x[r * 16 + col];
            for (int k = 0; k < 16; k++) acc += (float)a.x[r * 16 + k] * (float)b.x[k * 16 + col];
            out[r * 16 + col] = acc;
        }
    for (int i = 0; i < 256; i++) d.x[i] = out[i];
}

} // namespace wmma
} // namespace nvcuda

#endif
