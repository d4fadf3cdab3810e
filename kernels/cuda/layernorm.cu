// LayerNorm with weight and optional bias, one block per row (BERT, Whisper, CLIP):
//   mean = sum(x) / cols; var = sum((x - mean)^2) / cols (biased, as torch);
//   out = (x - mean) * (1 / sqrt(var + eps)) * w + b, f32 arithmetic, rounded once to T.
// Two reductions (mean first, then the centred sum of squares: no cancellation from
// E[x^2] - mean^2), one pass over device memory for rows that fit the register cache (as
// rmsnorm.cu: CACHE packs per thread), the rest re-read from L2. Launch as rmsnorm.cu.
#include "common.cuh"

namespace kiln {

template <typename T> struct LayerNormParams {
    const T* x;
    const T* w;  // [cols]
    const T* b;  // [cols], or null for no bias
    T* out;      // may alias x
    uint64_t rows;
    uint32_t cols;
    float eps;
};

constexpr int CACHE = 4;

template <typename T> __device__ __forceinline__ void layernorm_rows(const LayerNormParams<T>& p) {
    __shared__ float scratch[32];
    constexpr int N = Width<T>::N;
    const bool has_bias = p.b != nullptr;
    const bool vec_ok = p.cols % N == 0 && aligned16(p.x) && aligned16(p.w) && aligned16(p.out) &&
                        (!has_bias || aligned16(p.b));
    const uint32_t nvec = vec_ok ? p.cols / N : 0;
    const uint32_t cols = p.cols;
    for (uint64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const T* x = p.x + row * cols;
        T* out = p.out + row * cols;
        Pack<T, N> cache[CACHE];

        float s = 0.0f;
#pragma unroll
        for (int c = 0; c < CACHE; ++c) {
            const uint32_t v = threadIdx.x + c * blockDim.x;
            if (v < nvec) {
                cache[c] = load_pack<T, N>(x + uint64_t(v) * N);
#pragma unroll
                for (int k = 0; k < N; ++k) s += to_f32(cache[c].v[k]);
            }
        }
        for (uint32_t v = threadIdx.x + CACHE * blockDim.x; v < nvec; v += blockDim.x) {
            const Pack<T, N> q = load_pack<T, N>(x + uint64_t(v) * N);
#pragma unroll
            for (int k = 0; k < N; ++k) s += to_f32(q.v[k]);
        }
        for (uint32_t c = nvec * N + threadIdx.x; c < cols; c += blockDim.x) s += to_f32(x[c]);
        const float mean = block_sum(s, scratch) / float(cols);

        float ss = 0.0f;
#pragma unroll
        for (int c = 0; c < CACHE; ++c) {
            const uint32_t v = threadIdx.x + c * blockDim.x;
            if (v < nvec) {
#pragma unroll
                for (int k = 0; k < N; ++k) {
                    const float d = to_f32(cache[c].v[k]) - mean;
                    ss += d * d;
                }
            }
        }
        for (uint32_t v = threadIdx.x + CACHE * blockDim.x; v < nvec; v += blockDim.x) {
            const Pack<T, N> q = load_pack<T, N>(x + uint64_t(v) * N);
#pragma unroll
            for (int k = 0; k < N; ++k) {
                const float d = to_f32(q.v[k]) - mean;
                ss += d * d;
            }
        }
        for (uint32_t c = nvec * N + threadIdx.x; c < cols; c += blockDim.x) {
            const float d = to_f32(x[c]) - mean;
            ss += d * d;
        }
        const float rstd = 1.0f / sqrtf(block_sum(ss, scratch) / float(cols) + p.eps);

        auto norm1 = [&](float v, float w, float b) { return from_f32<T>((v - mean) * rstd * w + b); };
        auto write_pack = [&](uint32_t v, const Pack<T, N>& q) {
            const Pack<T, N> wp = load_pack<T, N>(p.w + uint64_t(v) * N);
            const Pack<T, N> bp = has_bias ? load_pack<T, N>(p.b + uint64_t(v) * N) : wp;
            Pack<T, N> o;
#pragma unroll
            for (int k = 0; k < N; ++k)
                o.v[k] = norm1(to_f32(q.v[k]), to_f32(wp.v[k]), has_bias ? to_f32(bp.v[k]) : 0.0f);
            store_pack<T, N>(out + uint64_t(v) * N, o);
        };
#pragma unroll
        for (int c = 0; c < CACHE; ++c) {
            const uint32_t v = threadIdx.x + c * blockDim.x;
            if (v < nvec) write_pack(v, cache[c]);
        }
        for (uint32_t v = threadIdx.x + CACHE * blockDim.x; v < nvec; v += blockDim.x)
            write_pack(v, load_pack<T, N>(x + uint64_t(v) * N));
        for (uint32_t c = nvec * N + threadIdx.x; c < cols; c += blockDim.x)
            out[c] = norm1(to_f32(x[c]), to_f32(p.w[c]), has_bias ? to_f32(p.b[c]) : 0.0f);
    }
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(LayerNormParams<float>) == 48 && offsetof(LayerNormParams<float>, eps) == 44, "params layout");

}  // namespace kiln

using namespace kiln;

// The launcher gives a row up to 1024 threads: ptxas must fit that (64 registers a thread).
extern "C" __global__ void __launch_bounds__(1024) kiln_layernorm_f32(LayerNormParams<float> p) { layernorm_rows(p); }
extern "C" __global__ void __launch_bounds__(1024) kiln_layernorm_bf16(LayerNormParams<bf16> p) { layernorm_rows(p); }
