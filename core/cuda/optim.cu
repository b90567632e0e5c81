// core/cuda/optim: the optimizer updates of core/cuda.h over flat device f32 buffers, one fused
// element-wise kernel each: cuda_adamw_update and cuda_ema_update, the device twins of adamw_update
// and ema_update (core/ops/optim.c, whose top comment gives the formulas).
//
// Same arithmetic as the CPU, operation by operation: the scalars are derived on the host in double
// and rounded to f32 by the same code; the per-element work uses the CPU's explicit fmaf calls and
// otherwise single roundings (__f*_rn intrinsics, so nvcc contracts nothing: IEEE division and
// square root, no FMA where the CPU has none), so m, v and p come out bit for bit as the CPU's.
// EMA is computed in double like the CPU, as fma(decay, ema, (1 - decay) param) rounded to f32: the
// form GCC gives the CPU's `decay * ema + (1 - decay) * param` when it contracts (-march=native on
// an FMA machine, the default build); an uncontracted CPU build can differ by one double rounding
// before the f32 rounding, which almost never changes the f32.
#include <math.h>

#include "core/cuda/cuda_internal.cuh"

#define OPTIM_THREADS 256

// The f32 scalars of one AdamW step (as AdamJob in core/ops/optim.c).
struct AdamScalars {
    float decay;      // 1 - lr wd
    float coeff;      // the lerp coefficient: w1 = 1 - b1 when |w1| < 0.5, else w1 - 1
    int small;        // |w1| < 0.5: m = fma(w1, g - m, m), else m = fma(w1 - 1, g - m, g)
    float b2, one_b2; // b2, 1 - b2
    float neg_step;   // -lr / (1 - b1^t)
    float bc2_sqrt;   // sqrt(1 - b2^t)
    float eps;
    int decoupled;    // weight decay != 0
};

__global__ static void adamw_kernel(float *param, const float *grad, float *m_, float *v_, int64_t n, AdamScalars s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float p = param[i], g = grad[i], m = m_[i], v = v_[i];
        if (s.decoupled) p = __fmul_rn(p, s.decay);
        m = fmaf(s.coeff, __fsub_rn(g, m), s.small ? m : g);
        v = fmaf(__fmul_rn(s.one_b2, g), g, __fmul_rn(v, s.b2));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bc2_sqrt), s.eps);
        p = __fadd_rn(p, __fdiv_rn(__fmul_rn(s.neg_step, m), denom));
        param[i] = p;
        m_[i] = m;
        v_[i] = v;
    }
}

extern "C" Status cuda_adamw_update(float *param, const float *grad, float *m, float *v, int64_t n, double lr,
                                    double beta1, double beta2, double eps, double weight_decay, int64_t step) {
    if (n <= 0) return ADDC_OK;
    double t = (double)step;
    double bc1 = 1.0 - pow(beta1, t);
    double bc2 = 1.0 - pow(beta2, t);
    AdamScalars s;
    s.decay = (float)(1.0 - lr * weight_decay);
    float w1 = (float)(1.0 - beta1);
    s.small = fabsf(w1) < 0.5f;
    s.coeff = s.small ? w1 : w1 - 1.0f;
    s.b2 = (float)beta2;
    s.one_b2 = (float)(1.0 - beta2);
    s.neg_step = (float)(-(lr / bc1));
    s.bc2_sqrt = (float)pow(bc2, 0.5);
    s.eps = (float)eps;
    s.decoupled = weight_decay != 0;
    cudaStream_t stream = STREAM;
    if (!stream) return addc_error_status();
    adamw_kernel<<<cuda_grid(n, OPTIM_THREADS), OPTIM_THREADS, 0, stream>>>(param, grad, m, v, n, s);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}

__global__ static void ema_kernel(float *ema, const float *param, int64_t n, double d, double one_d) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        ema[i] = (float)__fma_rn(d, (double)ema[i], __dmul_rn(one_d, (double)param[i]));
}

extern "C" Status cuda_ema_update(float *ema, const float *param, int64_t n, double decay) {
    if (n <= 0) return ADDC_OK;
    cudaStream_t stream = STREAM;
    if (!stream) return addc_error_status();
    ema_kernel<<<cuda_grid(n, OPTIM_THREADS), OPTIM_THREADS, 0, stream>>>(ema, param, n, decay, 1.0 - decay);
    CUDA_LAUNCH_CHECK();
    return ADDC_OK;
}
