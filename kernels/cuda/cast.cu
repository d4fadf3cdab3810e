// Conversions between f32, f16 and bf16, round-to-nearest-even (cvt.rn), NaN stays NaN
// (CPU twin: src/cpu/cast.rs). 16-bit <-> 16-bit goes through f32, which is exact on the way
// up, so it rounds once. Eight elements per step: one 16-byte word of the 16-bit side, two of
// the f32 side. Grid-stride; launch as binary.cu.
#include "common.cuh"

namespace kiln {

template <typename In, typename Out> struct CastParams {
    const In* x;
    Out* out;  // must not alias x (the element sizes differ)
    uint64_t n;
};

template <typename In, typename Out> __device__ __forceinline__ void cast(const CastParams<In, Out>& p) {
    constexpr int N = 8;
    grid_stride<N>(
        p.n, aligned16(p.x) && aligned16(p.out),
        [&](uint64_t i) {
            const Pack<In, N> a = load_pack<In, N>(p.x + i);
            Pack<Out, N> b;
#pragma unroll
            for (int k = 0; k < N; ++k) b.v[k] = from_f32<Out>(to_f32(a.v[k]));
            store_pack<Out, N>(p.out + i, b);
        },
        [&](uint64_t i) { p.out[i] = from_f32<Out>(to_f32(p.x[i])); });
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
typedef CastParams<float, bf16> CastF32Bf16;  // offsetof takes no commas
static_assert(sizeof(CastF32Bf16) == 24 && offsetof(CastF32Bf16, n) == 16, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_cast_f32_bf16(CastParams<float, bf16> p) { cast(p); }
extern "C" __global__ void kiln_cast_f32_f16(CastParams<float, f16> p) { cast(p); }
extern "C" __global__ void kiln_cast_bf16_f32(CastParams<bf16, float> p) { cast(p); }
extern "C" __global__ void kiln_cast_f16_f32(CastParams<f16, float> p) { cast(p); }
extern "C" __global__ void kiln_cast_bf16_f16(CastParams<bf16, f16> p) { cast(p); }
extern "C" __global__ void kiln_cast_f16_bf16(CastParams<f16, bf16> p) { cast(p); }
