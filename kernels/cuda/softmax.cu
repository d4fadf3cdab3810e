// Row softmax with a scale and an optional causal mask (CPU twin: src/cpu/softmax.rs): row r
// sees columns 0..=r + (cols - rows); the others, and every column of a row whose visible max
// is -inf (or that sees nothing), become 0. One block per row. Pass 1 keeps a running
// (max, sum of exp) per thread, so the row is read once before the block reduction; pass 2
// reads it again (from L2 for rows that fit) and writes exp(v - max) / sum.
// Launch: grid = min(rows, ~8 * SMs), block = 256..1024 threads (a multiple of 32).
#include "common.cuh"

namespace kiln {

struct SoftmaxParams {
    const float* x;
    float* out;  // may alias x
    uint64_t rows;
    uint32_t cols;
    float scale;
    uint32_t causal;  // 0 or 1
};

// A running softmax denominator: sum of exp(v - max) over the values seen so far.
struct MaxSum {
    float max, sum;
    __device__ __forceinline__ void add(float v) {
        if (v == -INFINITY) return;  // contributes exp(-inf) = 0; and -inf - -inf would be NaN
        if (v <= max) {
            sum += expf(v - max);
        } else {  // a new maximum (or NaN, which poisons the row as it does on the CPU)
            sum = sum * expf(max - v) + 1.0f;
            max = v;
        }
    }
    __device__ __forceinline__ void merge(float m, float s) {
        const float top = fmaxf(max, m);
        if (top == -INFINITY) return;  // both empty
        sum = sum * expf(max - top) + s * expf(m - top);
        max = top;
    }
};

__device__ __forceinline__ MaxSum block_max_sum(MaxSum a, float* smax, float* ssum) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m = __shfl_xor_sync(0xffffffffu, a.max, o);
        const float s = __shfl_xor_sync(0xffffffffu, a.sum, o);
        a.merge(m, s);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // the previous row's readers are done with smax/ssum
    if (lane == 0) {
        smax[warp] = a.max;
        ssum[warp] = a.sum;
    }
    __syncthreads();
    const int warps = (blockDim.x + 31) >> 5;
    MaxSum r{-INFINITY, 0.0f};
    if (lane < warps) r = MaxSum{smax[lane], ssum[lane]};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m = __shfl_xor_sync(0xffffffffu, r.max, o);
        const float s = __shfl_xor_sync(0xffffffffu, r.sum, o);
        r.merge(m, s);
    }
    return r;
}

__device__ __forceinline__ void softmax_rows(const SoftmaxParams& p) {
    __shared__ float smax[32], ssum[32];
    constexpr int N = 4;
    const uint32_t cols = p.cols;
    const bool vec_ok = cols % N == 0 && aligned16(p.x) && aligned16(p.out);
    const uint32_t nvec = vec_ok ? cols / N : 0;
    for (uint64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const float* x = p.x + row * cols;
        float* out = p.out + row * cols;
        // Visible columns, as `visible()` in the CPU twin, computed in 64 bits.
        int64_t last = int64_t(row) + int64_t(cols) - int64_t(p.rows);
        const uint32_t seen =
            p.causal ? uint32_t(last + 1 < 0 ? 0 : (last + 1 > cols ? cols : last + 1)) : cols;
        // __fmul_rn: the scaled value is rounded before the subtraction, as on the CPU.
        auto scaled = [&](float v) { return __fmul_rn(v, p.scale); };

        MaxSum acc{-INFINITY, 0.0f};
        for (uint32_t v = threadIdx.x; v < nvec; v += blockDim.x) {
            if (v * N >= seen) break;
            const Pack<float, N> q = load_pack<float, N>(x + uint64_t(v) * N);
#pragma unroll
            for (int k = 0; k < N; ++k)
                if (v * N + k < seen) acc.add(scaled(q.v[k]));
        }
        for (uint32_t c = nvec * N + threadIdx.x; c < seen; c += blockDim.x) acc.add(scaled(x[c]));
        const MaxSum tot = block_max_sum(acc, smax, ssum);
        // No finite maximum: the row becomes zeros, as on the CPU (never NaN).
        const bool empty = tot.max == -INFINITY;
        auto prob = [&](uint32_t c, float v) {
            return (empty || c >= seen) ? 0.0f : expf(scaled(v) - tot.max) / tot.sum;
        };
        for (uint32_t v = threadIdx.x; v < nvec; v += blockDim.x) {
            Pack<float, N> q;
            if (v * N < seen) q = load_pack<float, N>(x + uint64_t(v) * N);
#pragma unroll
            for (int k = 0; k < N; ++k) q.v[k] = prob(v * N + k, q.v[k]);
            store_pack<float, N>(out + uint64_t(v) * N, q);
        }
        for (uint32_t c = nvec * N + threadIdx.x; c < cols; c += blockDim.x)
            out[c] = prob(c, c < seen ? x[c] : 0.0f);
    }
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(SoftmaxParams) == 40 && offsetof(SoftmaxParams, causal) == 32, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_softmax_f32(SoftmaxParams p) { softmax_rows(p); }
