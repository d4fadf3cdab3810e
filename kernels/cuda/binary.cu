// Elementwise add / mul / scale (CPU twin: src/cpu/binary.rs). Memory bound: one 16-byte load
// per operand and one store per pack, grid-stride. Launch: 256 threads, grid about
// min(ceil(n / (256 * pack)), 8 * SMs) blocks.
#include "common.cuh"

namespace kiln {

template <typename T> struct BinaryParams {
    const T* a;
    const T* b;
    T* out;  // may alias a or b: each element is read before it is written, by one thread
    uint64_t n;
};

template <typename T> struct ScaleParams {
    const T* a;
    T* out;  // may alias a
    uint64_t n;
    float scale;
};

struct AddOp { __device__ float operator()(float a, float b) const { return a + b; } };
struct MulOp { __device__ float operator()(float a, float b) const { return a * b; } };

template <typename T, class Op> __device__ __forceinline__ void binary(const BinaryParams<T>& p) {
    constexpr int N = Width<T>::N;
    const bool vec_ok = aligned16(p.a) && aligned16(p.b) && aligned16(p.out);
    const Op op;
    grid_stride<N>(
        p.n, vec_ok,
        [&](uint64_t i) {
            Pack<T, N> a = load_pack<T, N>(p.a + i), b = load_pack<T, N>(p.b + i);
#pragma unroll
            for (int k = 0; k < N; ++k) a.v[k] = from_f32<T>(op(to_f32(a.v[k]), to_f32(b.v[k])));
            store_pack<T, N>(p.out + i, a);
        },
        [&](uint64_t i) { p.out[i] = from_f32<T>(op(to_f32(p.a[i]), to_f32(p.b[i]))); });
}

template <typename T> __device__ __forceinline__ void scale(const ScaleParams<T>& p) {
    constexpr int N = Width<T>::N;
    const bool vec_ok = aligned16(p.a) && aligned16(p.out);
    grid_stride<N>(
        p.n, vec_ok,
        [&](uint64_t i) {
            Pack<T, N> a = load_pack<T, N>(p.a + i);
#pragma unroll
            for (int k = 0; k < N; ++k) a.v[k] = from_f32<T>(to_f32(a.v[k]) * p.scale);
            store_pack<T, N>(p.out + i, a);
        },
        [&](uint64_t i) { p.out[i] = from_f32<T>(to_f32(p.a[i]) * p.scale); });
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(BinaryParams<float>) == 32 && offsetof(BinaryParams<float>, n) == 24, "params layout");
static_assert(sizeof(BinaryParams<bf16>) == 32 && offsetof(BinaryParams<bf16>, n) == 24, "params layout");
static_assert(sizeof(ScaleParams<float>) == 32 && offsetof(ScaleParams<float>, scale) == 24, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_add_f32(BinaryParams<float> p) { binary<float, AddOp>(p); }
extern "C" __global__ void kiln_mul_f32(BinaryParams<float> p) { binary<float, MulOp>(p); }
extern "C" __global__ void kiln_scale_f32(ScaleParams<float> p) { scale<float>(p); }
extern "C" __global__ void kiln_add_bf16(BinaryParams<bf16> p) { binary<bf16, AddOp>(p); }
extern "C" __global__ void kiln_mul_bf16(BinaryParams<bf16> p) { binary<bf16, MulOp>(p); }
extern "C" __global__ void kiln_scale_bf16(ScaleParams<bf16> p) { scale<bf16>(p); }
