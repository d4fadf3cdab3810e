// GELU activations, elementwise, f32 arithmetic whatever the storage type. The formulas are
// torch's (the CPU twins follow them):
//   gelu_erf(x)   = x * 0.5 * (1 + erf(x / sqrt(2)))                 (nn.GELU(), BERT, Whisper)
//   gelu_tanh(x)  = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))   (approximate="tanh")
//   quick_gelu(x) = x * sigmoid(1.702 x), sigmoid(v) = 1 / (1 + exp(-v))   (CLIP)
// Memory bound, grid-stride, 16-byte packs. Launch as binary.cu.
#include "common.cuh"

namespace kiln {

template <typename T> struct UnaryParams {
    const T* x;
    T* out;  // may alias x
    uint64_t n;
};

struct GeluErf {
    __device__ float operator()(float x) const { return x * 0.5f * (1.0f + erff(x * 0.70710678118654752f)); }
};
struct GeluTanh {
    __device__ float operator()(float x) const {
        const float k_beta = 0.79788456080286536f;  // sqrt(2 / pi)
        const float inner = k_beta * (x + 0.044715f * (x * x * x));  // torch's association
        return 0.5f * x * (1.0f + tanhf(inner));
    }
};
struct QuickGelu {
    __device__ float operator()(float x) const { return x * (1.0f / (1.0f + expf(-1.702f * x))); }
};

template <typename T, class F> __device__ __forceinline__ void unary(const UnaryParams<T>& p) {
    constexpr int N = Width<T>::N;
    const F f;
    grid_stride<N>(
        p.n, aligned16(p.x) && aligned16(p.out),
        [&](uint64_t i) {
            Pack<T, N> v = load_pack<T, N>(p.x + i);
#pragma unroll
            for (int k = 0; k < N; ++k) v.v[k] = from_f32<T>(f(to_f32(v.v[k])));
            store_pack<T, N>(p.out + i, v);
        },
        [&](uint64_t i) { p.out[i] = from_f32<T>(f(to_f32(p.x[i]))); });
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(UnaryParams<float>) == 24 && offsetof(UnaryParams<float>, n) == 16, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_gelu_erf_f32(UnaryParams<float> p) { unary<float, GeluErf>(p); }
extern "C" __global__ void kiln_gelu_tanh_f32(UnaryParams<float> p) { unary<float, GeluTanh>(p); }
extern "C" __global__ void kiln_quick_gelu_f32(UnaryParams<float> p) { unary<float, QuickGelu>(p); }
extern "C" __global__ void kiln_gelu_erf_bf16(UnaryParams<bf16> p) { unary<bf16, GeluErf>(p); }
extern "C" __global__ void kiln_gelu_tanh_bf16(UnaryParams<bf16> p) { unary<bf16, GeluTanh>(p); }
extern "C" __global__ void kiln_quick_gelu_bf16(UnaryParams<bf16> p) { unary<bf16, QuickGelu>(p); }
