// A server's batched step on CUDA (see decode.rs): the residual add fused into RMSNorm, RoPE
// over every row of the step with each row's keys and values stored straight into its own
// sequence's cache, attention of every row over its sequence's cache in one launch, and
// SiLU(gate) * up. Activations are bf16 or f32 (`_bf16` / `_f32` entry points); sums, norms,
// rotations and softmax run in f32.
#include <cuda_bf16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// Block-wide sum of one float per thread (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) part[warp] = v;
    __syncthreads();
    int warps = blockDim.x / 32;
    v = lane < warps ? part[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    __syncthreads();
    return v;
}

// One block per row: s = x + y (rounded to T, written to xout) when y is given, else s = x;
// h = s / sqrt(mean(s^2) + eps) * w.
template <typename T>
__device__ void add_rms_norm(const T* x, const T* y, const float* w, T* xout, T* h, int cols, float eps) {
    size_t row = blockIdx.x;
    const T* xr = x + row * cols;
    float ss = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float s = to_f(xr[c]);
        if (y) {
            T r = from_f<T>(s + to_f(y[row * cols + c]));
            xout[row * cols + c] = r;
            s = to_f(r);
        }
        ss += s * s;
    }
    float scale = rsqrtf(block_sum(ss) / cols + eps);
    const T* src = y ? xout + row * cols : xr;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) h[row * cols + c] = from_f<T>(to_f(src[c]) * scale * w[c]);
}

// The step's tables (decode.rs `Step`): rows[2r] = row r's segment, rows[2r+1] = its
// position; caps[s] = segment s's cache capacity (positions); kv[2s], kv[2s+1] = this layer's
// key and value cache of segment s, each (kv heads, capacity, head_dim).
//
// One block per row: q's heads rotated into qout (rows, heads * head_dim); k's heads rotated
// and v's copied into the row's cache at its position.
template <typename T>
__device__ void rope_store(const T* q, const T* k, const T* v, long ldq, long ldk, long ldv, const float* cos, const float* sin,
                           const int* rows, const int* caps, const uint64_t* kv, T* qout, int heads, int kv_heads, int hd) {
    int r = blockIdx.x, seg = rows[2 * r], pos = rows[2 * r + 1], half = hd / 2;
    size_t cap = caps[seg];
    T* kc = reinterpret_cast<T*>(kv[2 * seg]);
    T* vc = reinterpret_cast<T*>(kv[2 * seg + 1]);
    const float* c = cos + (size_t)pos * half;
    const float* s = sin + (size_t)pos * half;
    int qpairs = heads * half, kpairs = kv_heads * half;
    for (int i = threadIdx.x; i < qpairs + kpairs + kv_heads * hd; i += blockDim.x) {
        if (i < qpairs) {
            int h = i / half, j = i % half;
            const T* src = q + r * ldq + h * hd;
            float a = to_f(src[j]), b = to_f(src[j + half]);
            T* dst = qout + (size_t)r * heads * hd + h * hd;
            dst[j] = from_f<T>(a * c[j] - b * s[j]);
            dst[j + half] = from_f<T>(a * s[j] + b * c[j]);
        } else if (i < qpairs + kpairs) {
            int p = i - qpairs, h = p / half, j = p % half;
            const T* src = k + r * ldk + h * hd;
            float a = to_f(src[j]), b = to_f(src[j + half]);
            T* dst = kc + ((size_t)h * cap + pos) * hd;
            dst[j] = from_f<T>(a * c[j] - b * s[j]);
            dst[j + half] = from_f<T>(a * s[j] + b * c[j]);
        } else {
            int p = i - qpairs - kpairs, h = p / hd, d = p % hd;
            vc[((size_t)h * cap + pos) * hd + d] = v[r * ldv + h * hd + d];
        }
    }
}

// Attention of one row (blockIdx.y) and query head (blockIdx.x) over its segment's cached
// positions 0..=pos (causal), 4 warps a block: each warp takes every 4th key with an online
// softmax, each lane head_dim / 32 dimensions (head_dim a multiple of 32, at most 256); the
// warps' partial sums are merged at the end. out is (rows, heads * head_dim).
#define ATT_WARPS 4
#define ATT_MAX_E 8
template <typename T>
__device__ void attend(const T* q, const int* rows, const int* caps, const uint64_t* kv, T* out, int heads, int kv_heads, int hd,
                       float scale) {
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS];
    __shared__ float sacc[ATT_WARPS][ATT_MAX_E * 32];
    int h = blockIdx.x, r = blockIdx.y, seg = rows[2 * r], pos = rows[2 * r + 1];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, e = hd / 32;
    size_t cap = caps[seg];
    int kvh = h / (heads / kv_heads);
    const T* kc = reinterpret_cast<const T*>(kv[2 * seg]) + (size_t)kvh * cap * hd + lane * e;
    const T* vc = reinterpret_cast<const T*>(kv[2 * seg + 1]) + (size_t)kvh * cap * hd + lane * e;
    const T* qr = q + (size_t)r * heads * hd + h * hd + lane * e;
    float qv[ATT_MAX_E], acc[ATT_MAX_E];
    for (int i = 0; i < ATT_MAX_E; i++) {
        qv[i] = i < e ? to_f(qr[i]) * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int j = warp; j <= pos; j += ATT_WARPS) {
        const T* kj = kc + (size_t)j * hd;
        float dot = 0.0f;
        for (int i = 0; i < ATT_MAX_E; i++)
            if (i < e) dot += qv[i] * to_f(kj[i]);
        for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffff, dot, o);
        float mn = fmaxf(m, dot);
        float old = __expf(m - mn), p = __expf(dot - mn);
        const T* vj = vc + (size_t)j * hd;
        for (int i = 0; i < ATT_MAX_E; i++)
            if (i < e) acc[i] = acc[i] * old + p * to_f(vj[i]);
        l = l * old + p;
        m = mn;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
    for (int i = 0; i < ATT_MAX_E; i++)
        if (i < e) sacc[warp][lane * e + i] = acc[i];
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++) mx = fmaxf(mx, sm[w]);
    float total = 0.0f;
    for (int w = 0; w < ATT_WARPS; w++)
        if (sl[w] > 0.0f) total += sl[w] * __expf(sm[w] - mx);
    T* o = out + (size_t)r * heads * hd + h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float y = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (sl[w] > 0.0f) y += sacc[w][d] * __expf(sm[w] - mx);
        o[d] = from_f<T>(y / total);
    }
}

// out (rows, cols) = silu(g) * u, g and u rows ldg and ldu apart.
template <typename T>
__device__ void silu_mul(const T* g, const T* u, long ldg, long ldu, T* out, int rows, int cols) {
    size_t n = (size_t)rows * cols;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i % cols;
        float a = to_f(g[r * ldg + c]), b = to_f(u[r * ldu + c]);
        out[i] = from_f<T>(a / (1.0f + __expf(-a)) * b);
    }
}

#define ENTRY(T, SUFFIX)                                                                                                   \
    extern "C" __global__ void add_rms_norm_##SUFFIX(const T* x, const T* y, const float* w, T* xout, T* h, int cols,       \
                                                     float eps) {                                                          \
        add_rms_norm<T>(x, y, w, xout, h, cols, eps);                                                                      \
    }                                                                                                                      \
    extern "C" __global__ void rope_store_##SUFFIX(const T* q, const T* k, const T* v, long ldq, long ldk, long ldv,         \
                                                   const float* cos, const float* sin, const int* rows, const int* caps,    \
                                                   const uint64_t* kv, T* qout, int heads, int kv_heads, int hd) {           \
        rope_store<T>(q, k, v, ldq, ldk, ldv, cos, sin, rows, caps, kv, qout, heads, kv_heads, hd);                         \
    }                                                                                                                      \
    extern "C" __global__ void attend_##SUFFIX(const T* q, const int* rows, const int* caps, const uint64_t* kv, T* out,     \
                                               int heads, int kv_heads, int hd, float scale) {                              \
        attend<T>(q, rows, caps, kv, out, heads, kv_heads, hd, scale);                                                     \
    }                                                                                                                      \
    extern "C" __global__ void silu_mul_##SUFFIX(const T* g, const T* u, long ldg, long ldu, T* out, int rows, int cols) {   \
        silu_mul<T>(g, u, ldg, ldu, out, rows, cols);                                                                      \
    }

ENTRY(float, f32)
ENTRY(__nv_bfloat16, bf16)
