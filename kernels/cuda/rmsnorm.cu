// RMSNorm, one block per row (CPU twin: src/cpu/rmsnorm.rs), and the fused residual add +
// RMSNorm of every decoder layer: sum = x + residual (stored, it is the next residual) and
// out = rmsnorm(sum). Mirrors HF LlamaRMSNorm: inv = 1 / sqrt(mean(v^2) + eps) in f32 and
// out = w * (v * inv), rounded to the storage type before the weight multiply as HF does.
//
// One pass over device memory: a thread keeps up to CACHE 16-byte packs of its row in
// registers between the reduction and the write (256 threads cover 4096 f32 columns, 8192
// bf16); columns beyond that are read again, usually from L2. Launch: grid = min(rows, ~8 *
// SMs), block = 128..1024 threads (a multiple of 32), e.g. cols / (4 * pack) rounded up to 32.
#include "common.cuh"

namespace kiln {

template <typename T> struct RmsNormParams {
    const T* x;
    const T* w;  // [cols]
    T* out;      // may alias x
    uint64_t rows;
    uint32_t cols;
    float eps;
};

template <typename T> struct ResidualRmsNormParams {
    const T* x;
    const T* residual;
    const T* w;  // [cols]
    T* sum;      // x + residual; may alias x or residual
    T* out;      // rmsnorm(sum); may alias x or residual, not sum
    uint64_t rows;
    uint32_t cols;
    float eps;
};

constexpr int CACHE = 4;

template <typename T> __device__ __forceinline__ T norm1(float v, float inv, T w) {
    return from_f32<T>(to_f32(w) * to_f32(from_f32<T>(v * inv)));
}

// `res`/`sum` are null for the plain norm. Every element is read and written by one thread
// only, in the same order in both passes, which is what makes the aliasing above safe.
template <typename T, bool FUSED>
__device__ __forceinline__ void rmsnorm_rows(const T* x, const T* res, const T* w, T* sum, T* out,
                                             uint64_t rows, uint32_t cols, float eps) {
    __shared__ float scratch[32];
    constexpr int N = Width<T>::N;
    const bool vec_ok = cols % N == 0 && aligned16(x) && aligned16(w) && aligned16(out) &&
                        (!FUSED || (aligned16(res) && aligned16(sum)));
    const uint32_t nvec = vec_ok ? cols / N : 0;
    for (uint64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const uint64_t base = row * cols;
        // Second-pass source: the stored sum when fused (x may have been overwritten).
        const T* src = FUSED ? sum + base : x + base;
        // Pass 1 element: the value to normalise (writing the sum when fused).
        auto value = [&](uint64_t i) {
            if (!FUSED) return to_f32(x[i]);
            const T s = from_f32<T>(to_f32(x[i]) + to_f32(res[i]));
            sum[i] = s;
            return to_f32(s);
        };
        auto pack = [&](uint64_t i) {
            Pack<T, N> p = load_pack<T, N>(x + i);
            if (FUSED) {
                const Pack<T, N> r = load_pack<T, N>(res + i);
#pragma unroll
                for (int k = 0; k < N; ++k) p.v[k] = from_f32<T>(to_f32(p.v[k]) + to_f32(r.v[k]));
                store_pack<T, N>(sum + i, p);
            }
            return p;
        };
        float ss = 0.0f;
        Pack<T, N> cache[CACHE];
#pragma unroll
        for (int c = 0; c < CACHE; ++c) {
            const uint32_t v = threadIdx.x + c * blockDim.x;
            if (v < nvec) {
                cache[c] = pack(base + uint64_t(v) * N);
#pragma unroll
                for (int k = 0; k < N; ++k) ss += to_f32(cache[c].v[k]) * to_f32(cache[c].v[k]);
            }
        }
        for (uint32_t v = threadIdx.x + CACHE * blockDim.x; v < nvec; v += blockDim.x) {
            const Pack<T, N> p = pack(base + uint64_t(v) * N);
#pragma unroll
            for (int k = 0; k < N; ++k) ss += to_f32(p.v[k]) * to_f32(p.v[k]);
        }
        for (uint32_t c = nvec * N + threadIdx.x; c < cols; c += blockDim.x) {
            const float v = value(base + c);
            ss += v * v;
        }
        const float var = block_sum(ss, scratch) / float(cols);
        const float inv = 1.0f / sqrtf(var + eps);  // correctly rounded, as the CPU twin

#pragma unroll
        for (int c = 0; c < CACHE; ++c) {
            const uint32_t v = threadIdx.x + c * blockDim.x;
            if (v < nvec) {
                const Pack<T, N> wp = load_pack<T, N>(w + uint64_t(v) * N);
                Pack<T, N> o;
#pragma unroll
                for (int k = 0; k < N; ++k) o.v[k] = norm1(to_f32(cache[c].v[k]), inv, wp.v[k]);
                store_pack<T, N>(out + base + uint64_t(v) * N, o);
            }
        }
        for (uint32_t v = threadIdx.x + CACHE * blockDim.x; v < nvec; v += blockDim.x) {
            const Pack<T, N> p = load_pack<T, N>(src + uint64_t(v) * N);
            const Pack<T, N> wp = load_pack<T, N>(w + uint64_t(v) * N);
            Pack<T, N> o;
#pragma unroll
            for (int k = 0; k < N; ++k) o.v[k] = norm1(to_f32(p.v[k]), inv, wp.v[k]);
            store_pack<T, N>(out + base + uint64_t(v) * N, o);
        }
        for (uint32_t c = nvec * N + threadIdx.x; c < cols; c += blockDim.x)
            out[base + c] = norm1(to_f32(src[c]), inv, w[c]);
    }
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(RmsNormParams<float>) == 40 && offsetof(RmsNormParams<float>, eps) == 36, "params layout");
static_assert(sizeof(ResidualRmsNormParams<float>) == 56 && offsetof(ResidualRmsNormParams<float>, eps) == 52, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_rmsnorm_f32(RmsNormParams<float> p) {
    rmsnorm_rows<float, false>(p.x, nullptr, p.w, nullptr, p.out, p.rows, p.cols, p.eps);
}
extern "C" __global__ void kiln_rmsnorm_bf16(RmsNormParams<bf16> p) {
    rmsnorm_rows<bf16, false>(p.x, nullptr, p.w, nullptr, p.out, p.rows, p.cols, p.eps);
}
extern "C" __global__ void kiln_residual_rmsnorm_f32(ResidualRmsNormParams<float> p) {
    rmsnorm_rows<float, true>(p.x, p.residual, p.w, p.sum, p.out, p.rows, p.cols, p.eps);
}
extern "C" __global__ void kiln_residual_rmsnorm_bf16(ResidualRmsNormParams<bf16> p) {
    rmsnorm_rows<bf16, true>(p.x, p.residual, p.w, p.sum, p.out, p.rows, p.cols, p.eps);
}
