// out = silu(gate) * up, silu(x) = x / (1 + exp(-x)) (CPU twin: src/cpu/silu_mul.rs; the same
// expression as torch, so exp(-x) overflowing to inf gives -0 * up, not NaN). Memory bound,
// grid-stride, 16-byte packs. Launch as binary.cu.
#include "common.cuh"

namespace kiln {

template <typename T> struct SiluMulParams {
    const T* gate;
    const T* up;
    T* out;  // may alias gate or up
    uint64_t n;
};

__device__ __forceinline__ float silu_mul1(float g, float u) { return g / (1.0f + expf(-g)) * u; }

template <typename T> __device__ __forceinline__ void silu_mul(const SiluMulParams<T>& p) {
    constexpr int N = Width<T>::N;
    const bool vec_ok = aligned16(p.gate) && aligned16(p.up) && aligned16(p.out);
    grid_stride<N>(
        p.n, vec_ok,
        [&](uint64_t i) {
            Pack<T, N> g = load_pack<T, N>(p.gate + i), u = load_pack<T, N>(p.up + i);
#pragma unroll
            for (int k = 0; k < N; ++k) g.v[k] = from_f32<T>(silu_mul1(to_f32(g.v[k]), to_f32(u.v[k])));
            store_pack<T, N>(p.out + i, g);
        },
        [&](uint64_t i) { p.out[i] = from_f32<T>(silu_mul1(to_f32(p.gate[i]), to_f32(p.up[i]))); });
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(SiluMulParams<float>) == 32 && offsetof(SiluMulParams<float>, n) == 24, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_silu_mul_f32(SiluMulParams<float> p) { silu_mul<float>(p); }
extern "C" __global__ void kiln_silu_mul_bf16(SiluMulParams<bf16> p) { silu_mul<bf16>(p); }
