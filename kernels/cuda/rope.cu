// Rotary position embedding, in place on x [tokens, heads, head_dim] (CPU twin:
// src/cpu/rope.rs). Pair i of a head is (i, i + d/2) (half-split, HF rotate_half) or
// (2i, 2i + 1) (interleaved); its angle is the f32 product positions[t] * inv_freq[i], and
//   x1' = x1 * cos - x2 * sin,  x2' = x2 * cos + x1 * sin,  cos/sin times attention_scaling.
// cos/sin are evaluated in double and rounded to f32, as the CPU twin does (f64 sin_cos), so
// both agree to the last bit almost always; through sincospi of a/pi, because double sincos
// keeps a 40-byte stack frame for its large-argument reduction and sincospi needs none.
//
// Block (token, head group): the block first builds the token's cos/sin table in shared memory
// (dynamic, 2 * head_dim/2 floats), then rotates the pairs of its heads, four pairs per thread
// step (eight for bf16) with 16-byte accesses when (head_dim / 2) is a multiple of that and x is
// 16-byte aligned.
// Launch: grid = (min(tokens, ~8 * SMs), ceil(heads / heads_per_block)), block = 128 threads,
// dynamic shared memory = head_dim * 4 bytes; gridDim.y splits the heads evenly.
#include "common.cuh"

namespace kiln {

template <typename T> struct RopeParams {
    T* x;                    // [tokens, heads, head_dim], rotated in place
    const uint32_t* positions;  // [tokens]
    const float* inv_freq;   // [head_dim / 2]
    uint64_t tokens;
    uint32_t heads;
    uint32_t head_dim;
    uint32_t interleaved;    // 0: half-split, 1: interleaved
    float attention_scaling;
};

// No contraction into an FMA: the CPU twin rounds each product.
__device__ __forceinline__ float mul_sub(float a, float b, float c, float d) {
    return __fsub_rn(__fmul_rn(a, b), __fmul_rn(c, d));
}
__device__ __forceinline__ float mul_add(float a, float b, float c, float d) {
    return __fadd_rn(__fmul_rn(a, b), __fmul_rn(c, d));
}

template <typename T> __device__ __forceinline__ void rope(const RopeParams<T>& p) {
    extern __shared__ float table[];  // cos[half], then sin[half]
    const uint32_t half = p.head_dim / 2;
    if (half == 0) return;
    float* cos_t = table;
    float* sin_t = table + half;
    const uint32_t per_block = (p.heads + gridDim.y - 1) / gridDim.y;
    const uint32_t h0 = blockIdx.y * per_block;
    const uint32_t h1 = min(p.heads, h0 + per_block);
    if (h0 >= h1) return;
    const uint32_t pairs = (h1 - h0) * half;
    // Q consecutive pairs per step (one 16-byte word of each half, or two of an interleaved
    // run); whole packs need half % Q == 0, which also keeps every head 16-byte aligned.
    constexpr int Q = Width<T>::N;
    const bool vec_ok = half % Q == 0 && aligned16(p.x);

    for (uint64_t t = blockIdx.x; t < p.tokens; t += gridDim.x) {
        const float pos = float(p.positions[t]);
        __syncthreads();  // the previous token's readers are done with the table
        for (uint32_t i = threadIdx.x; i < half; i += blockDim.x) {
            const float angle = __fmul_rn(pos, p.inv_freq[i]);
            double s, c;
            sincospi(double(angle) * 0.31830988618379067154, &s, &c);  // 1/pi
            cos_t[i] = __fmul_rn(float(c), p.attention_scaling);
            sin_t[i] = __fmul_rn(float(s), p.attention_scaling);
        }
        __syncthreads();

        T* xt = p.x + (t * p.heads + h0) * p.head_dim;
        if (vec_ok) {
            for (uint32_t j = threadIdx.x * Q; j < pairs; j += blockDim.x * Q) {
                const uint32_t h = j / half, i = j % half;
                T* head = xt + uint64_t(h) * p.head_dim;
                // 16-byte shared loads: a quarter-warp covers all 32 banks, no conflicts.
                const Pack<float, Q> c = load_pack<float, Q>(cos_t + i);
                const Pack<float, Q> s = load_pack<float, Q>(sin_t + i);
                if (!p.interleaved) {
                    Pack<T, Q> a = load_pack<T, Q>(head + i), b = load_pack<T, Q>(head + half + i);
#pragma unroll
                    for (int k = 0; k < Q; ++k) {
                        const float x1 = to_f32(a.v[k]), x2 = to_f32(b.v[k]);
                        a.v[k] = from_f32<T>(mul_sub(x1, c.v[k], x2, s.v[k]));
                        b.v[k] = from_f32<T>(mul_add(x2, c.v[k], x1, s.v[k]));
                    }
                    store_pack<T, Q>(head + i, a);
                    store_pack<T, Q>(head + half + i, b);
                } else {
                    Pack<T, 2 * Q> e = load_pack<T, 2 * Q>(head + 2 * i);
#pragma unroll
                    for (int k = 0; k < Q; ++k) {
                        const float x1 = to_f32(e.v[2 * k]), x2 = to_f32(e.v[2 * k + 1]);
                        e.v[2 * k] = from_f32<T>(mul_sub(x1, c.v[k], x2, s.v[k]));
                        e.v[2 * k + 1] = from_f32<T>(mul_add(x2, c.v[k], x1, s.v[k]));
                    }
                    store_pack<T, 2 * Q>(head + 2 * i, e);
                }
            }
        } else {
            for (uint32_t j = threadIdx.x; j < pairs; j += blockDim.x) {
                const uint32_t h = j / half, i = j % half;
                T* head = xt + uint64_t(h) * p.head_dim;
                const uint32_t i1 = p.interleaved ? 2 * i : i;
                const uint32_t i2 = p.interleaved ? 2 * i + 1 : i + half;
                const float x1 = to_f32(head[i1]), x2 = to_f32(head[i2]);
                head[i1] = from_f32<T>(mul_sub(x1, cos_t[i], x2, sin_t[i]));
                head[i2] = from_f32<T>(mul_add(x2, cos_t[i], x1, sin_t[i]));
            }
        }
    }
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(RopeParams<float>) == 48 && offsetof(RopeParams<float>, attention_scaling) == 44, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_rope_f32(RopeParams<float> p) { rope(p); }
extern "C" __global__ void kiln_rope_bf16(RopeParams<bf16> p) { rope(p); }
