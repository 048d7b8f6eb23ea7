// Fused kernels of the training pass on CUDA (the `cuda` feature; cuda/fused.rs launches
// them): RMSNorm's backward, attention's causal softmax and its score gradient, SwiGLU forward
// and backward, RoPE with the heads' transpose, AdamW, dropout masks, the heads' transpose, and
// the every-position cross-entropy's rows both ways.
// Each replaces a chain of candle kernels and their intermediates.
//
// The row and element-wise kernels share one signature: three inputs (unused ones repeat the first), the output,
// a count `n` (rows for the row kernels, elements for the element-wise ones), a row width
// `cols` and one float. Arithmetic is in f32 whatever the storage type; exponentials use the
// hardware's approximate exp2 (`__expf`, a few ulp), far below bf16's rounding.
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

// The sum of `v` over the warp.
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
    return v;
}

// A running softmax maximum and sum (of exp(x − max)) combined over the warp; a lane that
// saw no column holds (−∞, 0).
__device__ __forceinline__ void warp_max_sum(float& mx, float& sum) {
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffff, mx, o), s2 = __shfl_xor_sync(0xffffffff, sum, o);
        float m = fmaxf(mx, m2);
        sum = (mx == -INFINITY ? 0.f : sum * __expf(mx - m)) + (m2 == -INFINITY ? 0.f : s2 * __expf(m2 - m));
        mx = m;
    }
}

// Rows of bf16 whose width is a multiple of 8 and whose buffers are 16-byte aligned are read
// and written 8 values (16 bytes) a lane at a time: a warp then moves 512 bytes per step
// instead of 64, which the attention kernels' rows (a few hundred values) need to keep the
// memory busy.
__device__ __forceinline__ bool by_eight(const void* a, const void* b, const void* c, int t) {
    return t % 8 == 0 && ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) % 16 == 0;
}

__device__ __forceinline__ void unpack8(uint4 v, float* x) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h[k]);
        x[2 * k] = f.x;
        x[2 * k + 1] = f.y;
    }
}

__device__ __forceinline__ uint4 pack8(const float* x) {
    uint4 v;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
    for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(x[2 * k], x[2 * k + 1]);
    return v;
}

// softmax_causal (below) on rows read and written by eight; columns lo..=i are seen.
__device__ void softmax_causal8(const __nv_bfloat16* s, __nv_bfloat16* p, size_t row, int lane, int t, int lo, float scale) {
    int i = row % t, first = lo / 8, last = i / 8;
    const uint4* sr = reinterpret_cast<const uint4*>(s + row * t);
    uint4* out = reinterpret_cast<uint4*>(p + row * t);
    float mx = -INFINITY, sum = 0.f, x[8];
    for (int c = first + lane; c <= last; c += 32) {
        unpack8(sr[c], x);
        float m = mx;
        for (int k = 0; k < 8; k++) {
            int j = c * 8 + k;
            x[k] = j >= lo && j <= i ? x[k] * scale : -INFINITY;
            m = fmaxf(m, x[k]);
        }
        // every chunk from lo's to i's holds a seen column, so m is finite
        sum = (mx == -INFINITY ? 0.f : sum * __expf(mx - m));
        mx = m;
        for (int k = 0; k < 8; k++) sum += __expf(x[k] - mx);
    }
    warp_max_sum(mx, sum);
    float inv = 1.f / sum;
    for (int c = lane; c < t / 8; c += 32) {
        if (c >= first && c <= last) {
            unpack8(sr[c], x);
            for (int k = 0; k < 8; k++) {
                int j = c * 8 + k;
                x[k] = j >= lo && j <= i ? __expf(x[k] * scale - mx) * inv : 0.f;
            }
        } else {
            for (int k = 0; k < 8; k++) x[k] = 0.f;
        }
        out[c] = pack8(x);
    }
}

// attention_ds (below) on rows read and written by eight.
__device__ void attention_ds8(const __nv_bfloat16* p, const __nv_bfloat16* dp, __nv_bfloat16* ds, size_t row, int lane, int t, float scale) {
    int i = row % t, last = i / 8;
    const uint4* pr = reinterpret_cast<const uint4*>(p + row * t);
    const uint4* dr = reinterpret_cast<const uint4*>(dp + row * t);
    uint4* out = reinterpret_cast<uint4*>(ds + row * t);
    float acc = 0.f, a[8], b[8];
    for (int c = lane; c <= last; c += 32) {
        unpack8(pr[c], a);
        unpack8(dr[c], b);
        for (int k = 0; k < 8; k++) acc += c * 8 + k <= i ? a[k] * b[k] : 0.f;
    }
    acc = warp_sum(acc);
    for (int c = lane; c < t / 8; c += 32) {
        if (c <= last) {
            unpack8(pr[c], a);
            unpack8(dr[c], b);
            for (int k = 0; k < 8; k++) a[k] = c * 8 + k <= i ? a[k] * (b[k] - acc) * scale : 0.f;
        } else {
            for (int k = 0; k < 8; k++) a[k] = 0.f;
        }
        out[c] = pack8(a);
    }
}

// Causal softmax of attention scores, one warp per row of a (…, t) tensor whose rows come in
// runs of t (one run per t × t matrix, or per query head of a group sharing a key head): row
// `r` is softmax(s·scale) over its first r mod t + 1 columns and 0 after them. One pass keeps a
// running maximum and sum (rescaled when the maximum grows), a second writes. With `pos`
// (packed sequences: each token's position in its own example, (batch, t), `per_batch` rows
// of scores a batch row), query i sees only its example's columns, i − pos[i] ..= i.
template <typename T>
__device__ void softmax_causal(const T* s, T* p, size_t rows, int t, float scale, const unsigned int* pos, size_t per_batch) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    int lane = threadIdx.x % 32, i = row % t;
    int lo = pos ? i - (int)pos[(row / per_batch) * t + i] : 0;
    if constexpr (sizeof(T) == 2) {
        if (by_eight(s, p, s, t)) return softmax_causal8(s, p, row, lane, t, lo, scale);
    }
    const T* sr = s + row * t;
    T* out = p + row * t;
    float mx = -INFINITY, sum = 0.f;
    for (int j = lo + lane; j <= i; j += 32) {
        float x = to_f(sr[j]) * scale;
        if (x > mx) {
            sum = sum * __expf(mx - x) + 1.f;
            mx = x;
        } else {
            sum += __expf(x - mx);
        }
    }
    warp_max_sum(mx, sum);
    float inv = 1.f / sum;
    for (int j = lane; j < t; j += 32) out[j] = from_f<T>(j >= lo && j <= i ? __expf(to_f(sr[j]) * scale - mx) * inv : 0.f);
}

// The scores' gradient of attention, one warp per row (rows as in softmax_causal):
// ds = p ⊙ (dp − Σⱼ p·dp) · scale, where dp = dy·vᵀ (Σⱼ pᵢⱼ·dpᵢⱼ = dyᵢ·yᵢ, so the output is
// not needed). 0 above the diagonal.
template <typename T>
__device__ void attention_ds(const T* p, const T* dp, T* ds, size_t rows, int t, float scale) {
    size_t row = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    if (row >= rows) return;
    int lane = threadIdx.x % 32, i = row % t;
    if constexpr (sizeof(T) == 2) {
        if (by_eight(p, dp, ds, t)) return attention_ds8(p, dp, ds, row, lane, t, scale);
    }
    const T* pr = p + row * t;
    const T* dr = dp + row * t;
    T* out = ds + row * t;
    float acc = 0.f;
    for (int j = lane; j <= i; j += 32) acc += to_f(pr[j]) * to_f(dr[j]);
    acc = warp_sum(acc);
    for (int j = lane; j < t; j += 32) out[j] = from_f<T>(j <= i ? to_f(pr[j]) * (to_f(dr[j]) - acc) * scale : 0.f);
}

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

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
// (sin negated). cos and sin are (t, d/2), or (b, t, d/2) when `batched` (packed sequences,
// whose positions differ from row to row).
template <typename T>
__device__ void rope_heads(const T* in, const T* cos, const T* sin, T* out, size_t pairs, int t, int h, int d, bool backward,
                           bool batched) {
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
        size_t at = (batched ? bb * t + tt : tt) * half + j;
        float c = to_f(cos[at]), s = to_f(sin[at]);
        if (backward) s = -s;
        float x1 = to_f(in[src + j]), x2 = to_f(in[src + j + half]);
        out[dst + j] = from_f<T>(x1 * c - x2 * s);
        out[dst + j + half] = from_f<T>(x2 * c + x1 * s);
    }
}

#define ROPE(T, S)                                                                                                  \
    extern "C" __global__ void rope_heads_##S(const T* in, const T* cos, const T* sin, T* out, size_t pairs, int t, \
                                              int h, int d, int backward, int batched) {                            \
        rope_heads<T>(in, cos, sin, out, pairs, t, h, d, backward != 0, batched != 0);                              \
    }

ROPE(float, f32)
ROPE(__nv_bfloat16, bf16)

// AdamW in place on f32 masters, one kernel per variable: the first moment, the second
// moment, then the parameter from both, m = β1·m + (1−β1)·g, v = β2·v + (1−β2)·g²,
// p = p·decay − (lr/c1)·m / (sqrt(v/c2) + eps), with decay = 1 − lr·weight_decay.
// (1 − β comes from the host, computed in f64: 1.f − 0.999f is 1.3e-5 off 0.001)
extern "C" __global__ void adamw(float* p, float* m, float* v, const float* g, size_t n, float beta1, float rest1,
                                 float beta2, float rest2, float decay, float lr_c1, float inv_c2, float eps) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        const float gk = g[k];
        const float mk = beta1 * m[k] + rest1 * gk;
        const float vk = beta2 * v[k] + rest2 * gk * gk;
        m[k] = mk;
        v[k] = vk;
        p[k] = p[k] * decay - lr_c1 * mk / (sqrtf(vk * inv_c2) + eps);
    }
}

#define FUSED(T, S)                                                                                               \
    extern "C" __global__ void rms_norm_bwd_##S(const T* x, const T* w, const T* g, T* out, size_t n, int cols, \
                                                float eps) {                                                      \
        rms_norm_bwd<T>(x, w, g, out, cols, eps);                                                                 \
    }                                                                                                             \
    extern "C" __global__ void softmax_causal_##S(const T* s, const T*, const T*, T* out, size_t n, int cols,     \
                                                  float scale) {                                                  \
        softmax_causal<T>(s, out, n, cols, scale, nullptr, 1);                                                       \
    }                                                                                                             \
    extern "C" __global__ void softmax_packed_##S(const T* s, const unsigned int* pos, T* out, size_t n, int cols, \
                                                  unsigned long long per_batch, float scale) {                   \
        softmax_causal<T>(s, out, n, cols, scale, pos, per_batch);                                                   \
    }                                                                                                             \
    extern "C" __global__ void attention_ds_##S(const T* p, const T* dp, const T*, T* out, size_t n, int cols,    \
                                                float scale) {                                                    \
        attention_ds<T>(p, dp, out, n, cols, scale);                                                                 \
    }                                                                                                             \
    extern "C" __global__ void swiglu_##S(const T* g, const T* u, const T*, T* out, size_t n, int, float) {       \
        swiglu<T>(g, u, out, n);                                                                                  \
    }                                                                                                             \
    extern "C" __global__ void swiglu_bwd_##S(const T* g, const T* u, const T* dh, T* out, size_t n, int, float) { \
        swiglu_bwd<T>(g, u, dh, out, n);                                                                          \
    }

FUSED(float, f32)
FUSED(__nv_bfloat16, bf16)

// LoRA dropout's keep mask, element k from SplitMix64's (k+1)-th output for `seed`: the CPU
// draws the same stream one element after another (train/lora.rs `splitmix`), so both devices
// keep the same elements and a recomputed block sees its first pass's mask.
extern "C" __global__ void dropout_mask(unsigned char* out, size_t n, unsigned long long seed, float p) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < n; k += (size_t)gridDim.x * blockDim.x) {
        unsigned long long z = seed + (unsigned long long)(k + 1) * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        float u = (float)((z ^ (z >> 31)) >> 40) / 16777216.0f;
        out[k] = u >= p;
    }
}

// Dims 1 and 2 of a contiguous (b, n1, n2, row) tensor swapped, by rows: out (b, n2, n1, row).
// A row is `w` words of W (16 bytes when the rows and buffers allow, else one element), so a
// thread moves 16 bytes and a warp's reads are contiguous.
template <typename W>
__device__ void swap12(const W* in, W* out, size_t words, int n1, int n2, int w) {
    for (size_t k = blockIdx.x * (size_t)blockDim.x + threadIdx.x; k < words; k += (size_t)gridDim.x * blockDim.x) {
        size_t row = k / w;
        int c = k % w, j = row % n2;
        size_t rest = row / n2;
        int i = rest % n1;
        size_t bb = rest / n1;
        out[((bb * n2 + j) * n1 + i) * w + c] = in[k];
    }
}

extern "C" __global__ void swap12_16(const uint4* in, uint4* out, size_t words, int n1, int n2, int w) { swap12(in, out, words, n1, n2, w); }
extern "C" __global__ void swap12_4(const unsigned int* in, unsigned int* out, size_t words, int n1, int n2, int w) { swap12(in, out, words, n1, n2, w); }
extern "C" __global__ void swap12_2(const unsigned short* in, unsigned short* out, size_t words, int n1, int n2, int w) { swap12(in, out, words, n1, n2, w); }

// The every-position cross-entropy through the output layer (ops::cross_entropy), one block
// per row of `cols` logits. Forward: out[row] = the row's log-sum-exp, out[rows + row] = its
// loss, log-sum-exp − logit[target] (NaN for a target outside the row).
template <typename T>
__device__ void xent_rows(const T* l, const uint32_t* t, float* out, int rows, int cols) {
    __shared__ float shared[32];
    size_t row = blockIdx.x;
    const T* lr = l + row * cols;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) mx = fmaxf(mx, to_f(lr[j]));
    mx = block_reduce<true>(mx, shared);
    float sum = 0.f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) sum += __expf(to_f(lr[j]) - mx);
    sum = block_reduce<false>(sum, shared);
    if (threadIdx.x == 0) {
        float lse = mx + logf(sum);
        uint32_t target = t[row];
        out[row] = lse;
        out[rows + row] = target < (uint32_t)cols ? lse - to_f(lr[target]) : NAN;
    }
}

// Backward, in place over the row's logits: (softmax − onehot(target)) · g[0] · inv_n, with
// the log-sum-exp of the forward kernel.
template <typename T>
__device__ void xent_grad(T* l, const uint32_t* t, const float* lse, const float* g, int cols, float inv_n) {
    size_t row = blockIdx.x;
    T* lr = l + row * cols;
    float m = lse[row], s = g[0] * inv_n;
    uint32_t target = t[row];
    for (int j = threadIdx.x; j < cols; j += blockDim.x)
        lr[j] = from_f<T>((__expf(to_f(lr[j]) - m) - ((uint32_t)j == target ? 1.f : 0.f)) * s);
}

#define XENT(T, S)                                                                                                  \
    extern "C" __global__ void xent_rows_##S(const T* l, const uint32_t* t, float* out, int rows, int cols) {     \
        xent_rows<T>(l, t, out, rows, cols);                                                                        \
    }                                                                                                               \
    extern "C" __global__ void xent_grad_##S(T* l, const uint32_t* t, const float* lse, const float* g, int cols, \
                                             float inv_n) {                                                         \
        xent_grad<T>(l, t, lse, g, cols, inv_n);                                                                    \
    }

XENT(float, f32)
XENT(__nv_bfloat16, bf16)
