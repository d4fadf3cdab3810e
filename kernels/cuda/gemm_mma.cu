// Pipelined tensor-core GEMM for sm_80 / sm_89 (and any later card): out = a · bᵀ + epilogue,
// a = x already cast to bf16 / f16 by the launcher, b = the weights in the same type, mma.sync
// m16n8k16 with f32 accumulators (CPU twin: src/cpu/matmul.rs `linear`).
//
// Why x is cast first (one extra pass, 6 bytes per element of x) instead of converting f32 x
// in the kernel: cp.async copies bytes, it cannot convert, so f32 x would have to go through
// registers (no asynchronous pipeline for half the operands) or sit in shared memory as f32
// (twice the shared-memory bytes and bandwidth per mma, plus conversions in the inner loop,
// which is already bound by shared-memory reads). Each x tile is read by every block column,
// n / BN times, so halving its bytes pays for the cast whenever n > a few hundred.
//
// Requirements (the launcher falls back to kiln_gemm_simple_* otherwise): k > 0, k % 8 == 0 and
// a, b 16-byte aligned, so every 16-byte cp.async chunk of a row is either wholly inside k or
// wholly past it (then zero-filled, as are rows past m / n).
//
// Kernel (template `gemm_pipe`):
// - Block tile BM x BN x BK, WM x WN warps each owning a (BM / WM) x (BN / WN) tile of m16n8
//   accumulators; STAGES-deep cp.async ring (commit groups, wait_group STAGES-2, one barrier
//   per k tile: the barrier also frees the stage the next prefetch overwrites).
// - Shared memory per stage: A [BM][BK] then B [BN][BK], rows of BK * 2 bytes = CH 16-byte
//   chunks, chunk c of row r stored at chunk c ^ swz(r) (swz(r) = (r / (8 / CH)) % CH). An
//   ldmatrix phase reads one 16-byte chunk from each of 8 consecutive rows; with the XOR those
//   8 chunks fall in 8 different 16-byte bank groups (CH = 4: (r & 1) picks the 64-byte half
//   of a 128-byte line, (r >> 1) & 3 the chunk within it; CH = 8: r & 7), so no conflicts.
// - Fragments by ldmatrix.x4 (no .trans: both a and b are k-contiguous, which is the layout
//   mma's row-major A and "col" B want; see the mapping in matmul.cuh):
//     A, m16 tile at row R, k16 step kk: lane l addresses row R + (l & 15), chunk 2kk + (l >> 4)
//       -> matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
//       = a[0], a[1], a[2], a[3].
//     B, two n8 tiles at row N: lane l addresses row N + (l & 7) + 8 (l >> 4), chunk
//       2kk + ((l >> 3) & 1) -> (n 0-7, k 0-7) = b[0] of tile 0, (n 0-7, k 8-15) = b[1] of
//       tile 0, (n 8-15, k 0-7) = b[0] of tile 1, (n 8-15, k 8-15) = b[1] of tile 1.
// - Blocks: a 1-D grid of tiles in raster() order (groups of RASTER tile rows share weight
//   tiles in L2); blockIdx.y = split of k when `partial` is set (raw sums, then
//   kiln_matmul_reduce applies the epilogue), else the epilogue is fused into the stores.
//
// Instances:
// - `kiln_gemm_pipe_<t>`: 128 x 128 x 32, 2 x 4 warps of 64 x 32, 4 stages (64 KiB dynamic
//   shared memory), for large m. Launch: grid = (ceil(m/128) * ceil(n/128), 1), block 256.
// - `kiln_gemm_small_<t>`: 32 x 64 x 64, 1 x 4 warps of 32 x 16, 4 stages (48 KiB), for
//   9 <= m <= 128 (prefill of a few tokens): more, smaller blocks and a long k tile so enough
//   weight bytes are in flight; with split-K when even those are too few for the card.
//   Launch: grid = (ceil(m/32) * ceil(n/64), splits), block 128.
#include "matmul.cuh"

namespace kiln {

template <int BM_, int BN_, int BK_, int WM_, int WN_, int STAGES_, int RASTER_> struct PipeConfig {
    static constexpr int BM = BM_, BN = BN_, BK = BK_, WM = WM_, WN = WN_, STAGES = STAGES_;
    static constexpr int RASTER = RASTER_;  // tile rows per raster group
    static constexpr int THREADS = WM * WN * 32;
    static constexpr int TM = BM / WM, TN = BN / WN;  // warp tile
    static constexpr int MI = TM / 16, NJ = TN / 8;   // m16 / n8 mma tiles per warp
    static constexpr int CH = BK / 8;                 // 16-byte chunks per shared-memory row
    static constexpr int ROW_BYTES = BK * 2;
    static constexpr int A_BYTES = BM * ROW_BYTES, B_BYTES = BN * ROW_BYTES;
    static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
    static_assert(TM % 16 == 0 && TN % 16 == 0, "warp tile of whole m16 tiles and n8 pairs");
    static_assert(BK % 16 == 0 && CH >= 2 && CH <= 8, "k tile of whole k16 steps, 2..8 chunks a row");
    static_assert((BM * CH) % THREADS == 0 && (BN * CH) % THREADS == 0, "whole chunks per thread");
};

using PipeLarge = PipeConfig<128, 128, 32, 2, 4, 4, 8>;
using PipeSmall = PipeConfig<32, 64, 64, 1, 4, 4, 1 << 30>;  // all tile rows (m <= 128) in one group

// Must match GEMM_PIPE_SMEM / GEMM_SMALL_SMEM in engine/src/backend/cuda/ops_matmul.rs.
static_assert(PipeLarge::SMEM_BYTES == 65536 && PipeSmall::SMEM_BYTES == 49152, "shared memory sizes");

// Byte offset of 16-byte chunk `c` of row `r` in a tile with CH chunks per row (see the top).
template <int CH> __device__ __forceinline__ uint32_t swizzled(uint32_t r, uint32_t c) {
    return r * (CH * 16) + ((c ^ ((r / (8 / CH)) % CH)) << 4);
}

// Issues the cp.async copies of one operand tile: ROWS rows from global row `row0`, the
// 16-byte chunks from column k0 on; chunks past `rows` or `k_end` are zero-filled.
template <typename C, int ROWS, typename T>
__device__ __forceinline__ void load_tile(uint32_t dst, const T* src, uint32_t rows, uint32_t k, uint32_t row0,
                                          uint32_t k0, uint32_t k_end) {
    constexpr int PER_THREAD = ROWS * C::CH / C::THREADS;
#pragma unroll
    for (int i = 0; i < PER_THREAD; ++i) {
        const uint32_t id = threadIdx.x + i * C::THREADS;
        const uint32_t r = id / C::CH, c = id % C::CH;
        const uint32_t grow = row0 + r, gk = k0 + c * 8;
        const bool ok = grow < rows && gk < k_end;
        const T* from = ok ? src + uint64_t(grow) * k + gk : src;
        cp_async16(dst + swizzled<C::CH>(r, c), from, ok ? 16 : 0);
    }
}

template <typename T, typename C> __device__ __forceinline__ void gemm_pipe(const MatmulParams<T, T>& p) {
    extern __shared__ uint4 smem_pipe[];  // 16-byte aligned: all ldmatrix / cp.async need
    const uint32_t base = smem_addr(smem_pipe);
    const uint32_t m = p.m, n = p.n, k = p.k;
    uint32_t tm, tn;
    raster(blockIdx.x, (m + C::BM - 1) / C::BM, (n + C::BN - 1) / C::BN, C::RASTER, tm, tn);
    const uint32_t m0 = tm * C::BM, n0 = tn * C::BN;
    const uint32_t split = blockIdx.y;
    const uint32_t k_begin = split * p.k_split, k_end = min(k, k_begin + p.k_split);
    const uint32_t k_tiles = (k_end - k_begin + C::BK - 1) / C::BK;

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp / C::WN, wn = warp % C::WN;

    auto load_stage = [&](uint32_t stage, uint32_t kt) {
        const uint32_t sa = base + stage * C::STAGE_BYTES;
        const uint32_t k0 = k_begin + kt * C::BK;
        load_tile<C, C::BM>(sa, p.x, m, k, m0, k0, k_end);
        load_tile<C, C::BN>(sa + C::A_BYTES, p.w, n, k, n0, k0, k_end);
    };

    float acc[C::MI][C::NJ][4];
#pragma unroll
    for (int i = 0; i < C::MI; ++i)
#pragma unroll
        for (int j = 0; j < C::NJ; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

    // Prologue: STAGES - 1 tiles in flight. Every thread commits a group per step, empty or
    // not, so "group t is complete" is always "at most STAGES - 2 younger groups pending".
#pragma unroll
    for (int s = 0; s < C::STAGES - 1; ++s) {
        if (s < int(k_tiles)) load_stage(s, s);
        cp_async_commit();
    }
    // Per-lane ldmatrix row and chunk offsets (see the top of the file).
    const uint32_t a_row = wm * C::TM + (lane & 15), a_chunk = lane >> 4;
    const uint32_t b_row = wn * C::TN + (lane & 7) + ((lane >> 4) << 3), b_chunk = (lane >> 3) & 1;

    for (uint32_t kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<C::STAGES - 2>();  // this thread's copies of tile kt have landed
        __syncthreads();                 // everyone's have; and tile kt - 1 is consumed
        const uint32_t next = kt + C::STAGES - 1;
        if (next < k_tiles) load_stage(next % C::STAGES, next);
        cp_async_commit();

        const uint32_t sa = base + (kt % C::STAGES) * C::STAGE_BYTES;
        const uint32_t sb = sa + C::A_BYTES;
#pragma unroll
        for (int kk = 0; kk < C::BK / 16; ++kk) {
            uint32_t af[C::MI][4], bfr[C::NJ][2];
#pragma unroll
            for (int i = 0; i < C::MI; ++i)
                ldmatrix_x4(af[i], sa + swizzled<C::CH>(a_row + i * 16, 2 * kk + a_chunk));
#pragma unroll
            for (int jj = 0; jj < C::NJ / 2; ++jj) {
                uint32_t r[4];
                ldmatrix_x4(r, sb + swizzled<C::CH>(b_row + jj * 16, 2 * kk + b_chunk));
                bfr[2 * jj][0] = r[0];
                bfr[2 * jj][1] = r[1];
                bfr[2 * jj + 1][0] = r[2];
                bfr[2 * jj + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < C::MI; ++i)
#pragma unroll
                for (int j = 0; j < C::NJ; ++j) mma_16816<T>(acc[i][j], af[i], bfr[j]);
        }
    }
    cp_async_wait<0>();  // nothing may still write shared memory when the block exits

    // C fragment: c[0..1] row g, cols 2t..2t+1; c[2..3] row g + 8 (matmul.cuh).
    const bool pairs = pairs_ok(p);
    const uint32_t g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < C::MI; ++i) {
#pragma unroll
        for (int j = 0; j < C::NJ; ++j) {
            const uint32_t row = m0 + wm * C::TM + i * 16 + g;
            const uint32_t col = n0 + wn * C::TN + j * 8 + 2 * t;
            store_pair(p, pairs, split, row, col, acc[i][j][0], acc[i][j][1]);
            store_pair(p, pairs, split, row + 8, col, acc[i][j][2], acc[i][j][3]);
        }
    }
}

}  // namespace kiln

using namespace kiln;

#define KILN_PIPE_THREADS 256
#define KILN_SMALL_THREADS 128
static_assert(KILN_PIPE_THREADS == PipeLarge::THREADS && KILN_SMALL_THREADS == PipeSmall::THREADS, "block sizes");

extern "C" __global__ void __launch_bounds__(KILN_PIPE_THREADS, 2) kiln_gemm_pipe_bf16(MatmulParams<bf16, bf16> p) {
    gemm_pipe<bf16, PipeLarge>(p);
}
extern "C" __global__ void __launch_bounds__(KILN_PIPE_THREADS, 2) kiln_gemm_pipe_f16(MatmulParams<f16, f16> p) {
    gemm_pipe<f16, PipeLarge>(p);
}
extern "C" __global__ void __launch_bounds__(KILN_SMALL_THREADS, 4) kiln_gemm_small_bf16(MatmulParams<bf16, bf16> p) {
    gemm_pipe<bf16, PipeSmall>(p);
}
extern "C" __global__ void __launch_bounds__(KILN_SMALL_THREADS, 4) kiln_gemm_small_f16(MatmulParams<f16, f16> p) {
    gemm_pipe<f16, PipeSmall>(p);
}
