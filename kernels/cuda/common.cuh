// Helpers shared by the kernels: element conversion, 16-byte packs, the grid-stride split into a
// vector body and a scalar tail, and warp/block reductions.
//
// Conventions every kernel follows (the launchers in the engine rely on them):
// - blockDim.x is a multiple of 32 (the reductions shuffle over full warps), at most 1024;
// - a 16-byte vector path is taken only when every pointer it touches is 16-byte aligned and a
//   row length (where there are rows) is a multiple of the pack width, otherwise a scalar path
//   computes the same values; arithmetic is f32 whatever the storage type.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stddef.h>
#include <stdint.h>

namespace kiln {

typedef __nv_bfloat16 bf16;
typedef __half f16;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(f16 x) { return __half2float(x); }

// Round to nearest even, as the CPU twins (the `half` crate) do.
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) { return __float2half_rn(x); }

// `N` elements of `T` held as whole 16-byte words, so loads and stores are LDG/STG.128.
// Indexed only with compile-time constants (unrolled loops), so it stays in registers.
template <typename T, int N> union Pack {
    static_assert((N * sizeof(T)) % 16 == 0, "a pack is whole 16-byte words");
    static constexpr int WORDS = int(N * sizeof(T) / 16);
    uint4 w[WORDS];
    T v[N];
};

// Elements of `T` in one 16-byte word: 4 for f32, 8 for bf16/f16.
template <typename T> struct Width { static constexpr int N = int(16 / sizeof(T)); };

template <typename T, int N>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
    Pack<T, N> r;
#pragma unroll
    for (int i = 0; i < Pack<T, N>::WORDS; ++i) r.w[i] = reinterpret_cast<const uint4*>(p)[i];
    return r;
}

template <typename T, int N>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& r) {
#pragma unroll
    for (int i = 0; i < Pack<T, N>::WORDS; ++i) reinterpret_cast<uint4*>(p)[i] = r.w[i];
}

__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

// Grid-stride loop over `n` elements: `vec(i)` handles elements i..i+N when `vec_ok`, then
// `scalar(i)` handles the rest one at a time. Each element is visited exactly once.
template <int N, class VecFn, class ScalarFn>
__device__ __forceinline__ void grid_stride(uint64_t n, bool vec_ok, VecFn vec, ScalarFn scalar) {
    const uint64_t tid = uint64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    const uint64_t stride = uint64_t(gridDim.x) * blockDim.x;
    const uint64_t nvec = vec_ok ? n / N : 0;
    for (uint64_t v = tid; v < nvec; v += stride) vec(v * N);
    for (uint64_t i = nvec * N + tid; i < n; i += stride) scalar(i);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block, returned to every thread. Every warp reduces the per-warp partials
// itself (32 floats, a conflict-free broadcast read), which saves a second barrier. The
// leading barrier lets callers reuse `scratch` for consecutive reductions.
__device__ __forceinline__ float block_sum(float v, float* scratch /* [32] */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    return warp_sum(lane < warps ? scratch[lane] : 0.0f);
}

__device__ __forceinline__ float block_max(float v, float* scratch /* [32] */) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    return warp_max(lane < warps ? scratch[lane] : -INFINITY);
}

}  // namespace kiln
