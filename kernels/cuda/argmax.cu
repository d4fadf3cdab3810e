// Index of the largest value of each row (CPU twin: src/cpu/argmax.rs): the first one on
// ties, NaN never chosen over a number, 0 for a row of NaNs (or no columns). One block per
// row: each thread scans a strided slice keeping (value, index), then the block merges with
// the lower index winning ties, so the result does not depend on the launch shape.
// Launch: grid = min(rows, ~8 * SMs), block = 256..1024 threads (a multiple of 32).
#include "common.cuh"

namespace kiln {

struct ArgmaxParams {
    const float* x;
    uint32_t* out;  // [rows]
    uint64_t rows;
    uint32_t cols;
};

constexpr uint32_t NONE = 0xffffffffu;

struct Best {
    float val;
    uint32_t idx;  // NONE until a number was seen
    __device__ __forceinline__ void offer(float v, uint32_t i) {
        if (isnan(v)) return;
        if (idx == NONE || v > val || (v == val && i < idx)) {
            val = v;
            idx = i;
        }
    }
};

__device__ __forceinline__ Best warp_best(Best b) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffffu, b.val, o);
        const uint32_t i = __shfl_xor_sync(0xffffffffu, b.idx, o);
        if (i != NONE) b.offer(v, i);
    }
    return b;
}

__device__ __forceinline__ void argmax_rows(const ArgmaxParams& p) {
    __shared__ float sval[32];
    __shared__ uint32_t sidx[32];
    constexpr int N = 4;
    const uint32_t cols = p.cols;
    const bool vec_ok = cols % N == 0 && aligned16(p.x);
    const uint32_t nvec = vec_ok ? cols / N : 0;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (uint64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
        const float* x = p.x + row * cols;
        Best b{0.0f, NONE};
        for (uint32_t v = threadIdx.x; v < nvec; v += blockDim.x) {
            const Pack<float, N> q = load_pack<float, N>(x + uint64_t(v) * N);
#pragma unroll
            for (int k = 0; k < N; ++k) b.offer(q.v[k], v * N + k);
        }
        for (uint32_t c = nvec * N + threadIdx.x; c < cols; c += blockDim.x) b.offer(x[c], c);
        b = warp_best(b);
        __syncthreads();  // the previous row's readers are done with sval/sidx
        if (lane == 0) {
            sval[warp] = b.val;
            sidx[warp] = b.idx;
        }
        __syncthreads();
        if (warp == 0) {
            const int warps = (blockDim.x + 31) >> 5;
            Best r{0.0f, NONE};
            if (lane < warps) r = Best{sval[lane], sidx[lane]};
            r = warp_best(r);
            if (lane == 0) p.out[row] = r.idx == NONE ? 0 : r.idx;
        }
    }
}

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(ArgmaxParams) == 32 && offsetof(ArgmaxParams, cols) == 24, "params layout");

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void kiln_argmax_f32(ArgmaxParams p) { argmax_rows(p); }
