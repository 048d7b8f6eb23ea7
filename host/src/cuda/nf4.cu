// NF4 with double quantization -> dense weights, in one pass (the `cuda` feature's kernel).
//
// Each thread turns 4 packed bytes (8 weights, high nibble first, all in one 64-weight block)
// into 8 outputs: weight = NF4[code] * (code2[absmax_q[block]] * absmax2[block / 256] + offset).
#include <cuda_bf16.h>
#include <stdint.h>

// nf4.rs's NF4_CODE (quant::weight::tests::the_cuda_kernel_gives_the_host_weights pins them equal)
__constant__ float NF4[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

__device__ __forceinline__ float block_scale(const uint8_t* absmax_q, const float* absmax2, const float* code2, float offset, size_t block) {
    // no fused multiply-add: the same rounding as the host's `Nf4::dequantize`
    return __fadd_rn(__fmul_rn(code2[absmax_q[block]], absmax2[block / 256]), offset);
}

extern "C" __global__ void nf4_dequantize_bf16(const uint32_t* packed, const uint8_t* absmax_q, const float* absmax2, const float* code2,
                                               float offset, __nv_bfloat16* out, size_t words) {
    // the code book in shared memory: constant memory serializes a warp's different indices
    __shared__ float code[16];
    if (threadIdx.x < 16) code[threadIdx.x] = NF4[threadIdx.x];
    __syncthreads();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < words; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t p = packed[i];
        float s = block_scale(absmax_q, absmax2, code2, offset, i / 8);
        __nv_bfloat162 v[4];
#pragma unroll
        for (int b = 0; b < 4; b++) {
            uint32_t byte = (p >> (8 * b)) & 0xff;
            v[b] = __floats2bfloat162_rn(code[byte >> 4] * s, code[byte & 15] * s);
        }
        reinterpret_cast<uint4*>(out)[i] = *reinterpret_cast<uint4*>(v);
    }
}

extern "C" __global__ void nf4_dequantize_f32(const uint32_t* packed, const uint8_t* absmax_q, const float* absmax2, const float* code2,
                                              float offset, float* out, size_t words) {
    // the code book in shared memory: constant memory serializes a warp's different indices
    __shared__ float code[16];
    if (threadIdx.x < 16) code[threadIdx.x] = NF4[threadIdx.x];
    __syncthreads();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < words; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t p = packed[i];
        float s = block_scale(absmax_q, absmax2, code2, offset, i / 8);
        float4 lo, hi;
        uint32_t b0 = p & 0xff, b1 = (p >> 8) & 0xff, b2 = (p >> 16) & 0xff, b3 = p >> 24;
        lo = make_float4(code[b0 >> 4] * s, code[b0 & 15] * s, code[b1 >> 4] * s, code[b1 & 15] * s);
        hi = make_float4(code[b2 >> 4] * s, code[b2 & 15] * s, code[b3 >> 4] * s, code[b3 & 15] * s);
        reinterpret_cast<float4*>(out)[2 * i] = lo;
        reinterpret_cast<float4*>(out)[2 * i + 1] = hi;
    }
}
