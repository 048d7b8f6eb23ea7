// Fused kernels of the training pass on CUDA (the `cuda` feature; model/fused.rs launches
// them): RMSNorm's backward, attention's causal softmax and its score gradient, SwiGLU forward
// and backward. Each replaces a chain of candle element-wise kernels and their intermediates.
//
// Every kernel has one signature: three inputs (unused ones repeat the first), the output,
// a count `n` (rows for the row kernels, elements for the element-wise ones), a row width
// `cols` and one float. Arithmetic is in f32 whatever the storage type.
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// The sum (or max) of `v` over the block; blockDim.x is a multiple of 32, at most 1024.
template <bool MAX>
__device__ float block_reduce(float v, float* shared) {
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffff, v, o);
        v = MAX ? fmaxf(v, w) : v + w;
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // `shared` may still be read by an earlier reduction
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / 32) ? shared[lane] : (MAX ? -INFINITY : 0.f);
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffff, v, o);
        v = MAX ? fmaxf(v, w) : v + w;
    }
    return v;
}

// RMSNorm backward, one block per row of `cols`: with r = 1/sqrt(mean(x²) + eps),
// dx = r·(g·w) − x · r³ · Σ(g·w·x) / cols.
template <typename T>
__device__ void rms_norm_bwd(const T* x, const T* w, const T* g, T* dx, int cols, float eps) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    const T* xr = x + row * cols;
    const T* gr = g + row * cols;
    T* out = dx + row * cols;
    float ss = 0.f, gwx = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float xv = to_f(xr[j]);
        ss += xv * xv;
        gwx += to_f(gr[j]) * to_f(w[j]) * xv;
    }
    ss = block_reduce<false>(ss, shared);
    gwx = block_reduce<false>(gwx, shared);
    float r = 1.f / sqrtf(ss / cols + eps);
    float c = r * r * r * gwx / cols;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) out[j] = from_f<T>(r * to_f(gr[j]) * to_f(w[j]) - to_f(xr[j]) * c);
}

// Causal softmax of attention scores, one block per row of a (…, t, t) tensor: row `i` of each
// t × t matrix is softmax(s·scale) over its first i + 1 columns and 0 after them.
template <typename T>
__device__ void softmax_causal(const T* s, T* p, int t, float scale) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    int i = row % t;
    const T* sr = s + row * t;
    T* out = p + row * t;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, to_f(sr[j]) * scale);
    mx = block_reduce<true>(mx, shared);
    float sum = 0.f;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) sum += expf(to_f(sr[j]) * scale - mx);
    sum = block_reduce<false>(sum, shared);
    float inv = 1.f / sum;
    for (int j = threadIdx.x; j < t; j += blockDim.x) out[j] = from_f<T>(j <= i ? expf(to_f(sr[j]) * scale - mx) * inv : 0.f);
}

// The scores' gradient of attention, one block per row: ds = p ⊙ (dp − Σⱼ p·dp) · scale,
// where dp = dy·vᵀ (Σⱼ pᵢⱼ·dpᵢⱼ = dyᵢ·yᵢ, so the output is not needed). 0 above the diagonal.
template <typename T>
__device__ void attention_ds(const T* p, const T* dp, T* ds, int t, float scale) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    int i = row % t;
    const T* pr = p + row * t;
    const T* dr = dp + row * t;
    T* out = ds + row * t;
    float acc = 0.f;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) acc += to_f(pr[j]) * to_f(dr[j]);
    acc = block_reduce<false>(acc, shared);
    for (int j = threadIdx.x; j < t; j += blockDim.x) out[j] = from_f<T>(j <= i ? to_f(pr[j]) * (to_f(dr[j]) - acc) * scale : 0.f);
}

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

// SwiGLU: h = silu(g) · u.
template <typename T>
__device__ void swiglu(const T* g, const T* u, T* h, size_t n) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        float gv = to_f(g[k]);
        h[k] = from_f<T>(gv * sigmoid(gv) * to_f(u[k]));
    }
}

// SwiGLU backward into one buffer of 2n: dg = dh·u·σ(g)·(1 + g·(1 − σ(g))) first, then
// du = dh·g·σ(g).
template <typename T>
__device__ void swiglu_bwd(const T* g, const T* u, const T* dh, T* out, size_t n) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        float gv = to_f(g[k]), d = to_f(dh[k]), s = sigmoid(gv);
        out[k] = from_f<T>(d * to_f(u[k]) * s * (1.f + gv * (1.f - s)));
        out[n + k] = from_f<T>(d * gv * s);
    }
}

// RoPE (Hugging Face layout) with the heads' transpose, one thread per pair (j, j + d/2) of a
// row: forward reads x (b, t, h, d) and writes (b, h, t, d) = x·cos + rotate_half(x)·sin;
// backward reads a gradient (b, h, t, d) and writes (b, t, h, d) with the rotation transposed
// (sin negated). cos and sin are (t, d/2).
template <typename T>
__device__ void rope_heads(const T* in, const T* cos, const T* sin, T* out, size_t pairs, int t, int h, int d, bool backward) {
    int half = d / 2;
    for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < pairs; p += (size_t)gridDim.x * blockDim.x) {
        int j = p % half;
        size_t rest = p / half;
        int hh = rest % h;
        rest /= h;
        int tt = rest % t;
        size_t bb = rest / t;
        size_t bthd = ((bb * t + tt) * h + hh) * d, bhtd = ((bb * h + hh) * t + tt) * d;
        size_t src = backward ? bhtd : bthd, dst = backward ? bthd : bhtd;
        float c = to_f(cos[tt * half + j]), s = to_f(sin[tt * half + j]);
        if (backward) s = -s;
        float x1 = to_f(in[src + j]), x2 = to_f(in[src + j + half]);
        out[dst + j] = from_f<T>(x1 * c - x2 * s);
        out[dst + j + half] = from_f<T>(x2 * c + x1 * s);
    }
}

#define ROPE(T, S)                                                                                                  \
    extern "C" __global__ void rope_heads_##S(const T* in, const T* cos, const T* sin, T* out, size_t pairs, int t, \
                                              int h, int d, int backward) {                                         \
        rope_heads<T>(in, cos, sin, out, pairs, t, h, d, backward != 0);                                            \
    }

ROPE(float, f32)
ROPE(__nv_bfloat16, bf16)

// AdamW in place on f32 masters, three kernels of one signature (dst, a, b, n, four floats):
// the first moment, the second moment, then the parameter from both.
// (1 − β comes from the host, computed in f64: 1.f − 0.999f is 1.3e-5 off 0.001)
extern "C" __global__ void adamw_first(float* m, const float* g, const float*, size_t n, float beta, float rest, float, float) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        m[k] = beta * m[k] + rest * g[k];
}

extern "C" __global__ void adamw_second(float* v, const float* g, const float*, size_t n, float beta, float rest, float, float) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        v[k] = beta * v[k] + rest * g[k] * g[k];
}

// p = p·decay − (lr/c1)·m / (sqrt(v/c2) + eps), with decay = 1 − lr·weight_decay.
extern "C" __global__ void adamw_apply(float* p, const float* m, const float* v, size_t n, float decay, float lr_c1, float inv_c2, float eps) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x)
        p[k] = p[k] * decay - lr_c1 * m[k] / (sqrtf(v[k] * inv_c2) + eps);
}

#define FUSED(T, S)                                                                                               \
    extern "C" __global__ void rms_norm_bwd_##S(const T* x, const T* w, const T* g, T* out, size_t n, int cols, \
                                                float eps) {                                                      \
        rms_norm_bwd<T>(x, w, g, out, cols, eps);                                                                 \
    }                                                                                                             \
    extern "C" __global__ void softmax_causal_##S(const T* s, const T*, const T*, T* out, size_t n, int cols,     \
                                                  float scale) {                                                  \
        softmax_causal<T>(s, out, cols, scale);                                                                   \
    }                                                                                                             \
    extern "C" __global__ void attention_ds_##S(const T* p, const T* dp, const T*, T* out, size_t n, int cols,    \
                                                float scale) {                                                    \
        attention_ds<T>(p, dp, out, cols, scale);                                                                 \
    }                                                                                                             \
    extern "C" __global__ void swiglu_##S(const T* g, const T* u, const T*, T* out, size_t n, int, float) {       \
        swiglu<T>(g, u, out, n);                                                                                  \
    }                                                                                                             \
    extern "C" __global__ void swiglu_bwd_##S(const T* g, const T* u, const T* dh, T* out, size_t n, int, float) { \
        swiglu_bwd<T>(g, u, dh, out, n);                                                                          \
    }

FUSED(float, f32)
FUSED(__nv_bfloat16, bf16)
