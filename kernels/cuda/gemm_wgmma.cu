// Tensor-core GEMM for sm_90a (H100 / H200): wgmma.mma_async fed by TMA through an mbarrier
// ring, with warp specialisation. out = a · bᵀ + epilogue, a = x cast to bf16 / f16 by the
// launcher, b = the weights (CPU twin: src/cpu/matmul.rs `linear`). The body is compiled only
// for the sm_90a target (__CUDA_ARCH_FEAT_SM90_ALL); the sm_80 / sm_89 images hold a stub that
// traps, and the launcher selects this kernel only on compute capability 9.0.
//
// Block: 384 threads = 3 warpgroups. Warpgroup 0 is the producer (one thread issues the TMA
// copies; its registers are given back with setmaxnreg.dec), warpgroups 1 and 2 are the
// consumers (setmaxnreg.inc), each owning 64 rows x 256 columns of the block's 128 x 256 tile:
// two wgmma m64n128k16 per k16 step, 2 x 64 f32 accumulators per thread.
//
// Pipeline: WG_STAGES = 4 stages of A [128][64] + B [256][64] (16 + 32 KiB), each with a
// "full" mbarrier (1 arrival + the TMA's transaction bytes) and an "empty" one (one arrival per
// consumer warp, 8). For k tile `it`, stage s = it % 4, round r = it / 4:
//   producer: wait empty[s] for parity (r & 1) ^ 1 (a fresh barrier counts its phase "-1",
//             parity 1, as complete, so round 0 does not wait), arrive.expect_tx(full[s],
//             48 KiB), two cp.async.bulk.tensor.2d loads completing on full[s];
//   consumers: wait full[s] for parity r & 1, wgmma.fence, 8 wgmma, commit, wait_group 1 (so
//             the previous tile's wgmmas are done: one group stays in flight), then each
//             warp's lane 0 arrives on empty[previous stage].
// TMA fills out-of-range rows and k with zeros, so edge tiles need no special path; the
// epilogue skips rows >= m and columns >= n.
//
// Shared-memory layout and descriptors (PTX ISA "Shared Memory Matrix Layout", "Matrix
// Descriptor Format"): the tensor maps use CU_TENSOR_MAP_SWIZZLE_128B with a box 64 elements
// (128 bytes) wide, so row r of a tile is 128 bytes at r * 128 with its 16-byte chunk c stored
// at chunk c ^ (r % 8): the K-major 128B-swizzle canonical layout wgmma reads. Every stage
// starts on a 1024-byte boundary (8 rows x 128 bytes, one swizzle period), so the swizzle
// phase is the row's and the descriptor's base-offset field stays 0. Descriptor fields:
// start address >> 4 (bits 0-13), leading-dimension byte offset >> 4 (bits 16-29; unused by
// K-major swizzled layouts, set to 1), stride-dimension byte offset >> 4 = 1024 >> 4 (bits
// 32-45: from one 8-row core-matrix group to the next along m / n), swizzle mode 1 = 128B
// (bits 62-63). The k16 steps inside the 64-wide tile advance the start address by 32 bytes:
// the hardware applies the XOR to the final address bits, as it did for TMA's writes.
//
// Accumulator layout (PTX ISA, "Matrix Fragments for wgmma.mma_async.m64nNk16", f32 D): warp w
// of the warpgroup holds rows 16w..16w+15; with g = lane / 4, t = lane % 4, d[4i + q] is row
// 16w + g + 8 * (q >> 1), column 8i + 2t + (q & 1).
//
// Launch: grid = (ceil(m / 128) * ceil(n / 256), 1), block = 384, dynamic shared memory =
// WG_SMEM_BYTES (cuFuncSetAttribute raises the limit); params carry the two tensor maps
// (x: dims {k, m}, box {64, 128}; w: dims {k, n}, box {64, 256}; both 128B swizzle).
#include "matmul.cuh"
#include "wgmma.cuh"  // descriptors, fences, waits (sm_90a only)

namespace kiln {

// A CUtensorMap as built by cuTensorMapEncodeTiled on the host: opaque, 128 bytes, 128-byte
// aligned (as CUDA 13's cuda.h declares it). Read by the TMA unit from the parameter space
// (the kernel takes its params as a __grid_constant__).
struct alignas(128) TmaDesc {
    uint64_t opaque[16];
};

template <typename T> struct alignas(128) WgmmaParams {
    TmaDesc a_map;  // x cast to T, [m, k]
    TmaDesc b_map;  // w, [n, k]
    MatmulParams<T, T> p;
};
static_assert(sizeof(WgmmaParams<bf16>) == 384 && offsetof(WgmmaParams<bf16>, p) == 256, "params layout");

constexpr int WG_BM = 128, WG_BN = 256, WG_BK = 64, WG_STAGES = 4;
constexpr int WG_THREADS = 384;
constexpr int WG_CONSUMER_WARPS = 8;  // arrivals on an "empty" barrier per phase
static_assert(WG_CONSUMER_WARPS == (WG_THREADS - 128) / 32, "all warps but the producer's consume");
constexpr int WG_A_BYTES = WG_BM * WG_BK * 2;  // 16 KiB
constexpr int WG_B_BYTES = WG_BN * WG_BK * 2;  // 32 KiB
// Stages, the 2 x WG_STAGES mbarriers, and slack to align the stages to 1024 bytes.
constexpr int WG_SMEM_BYTES = WG_STAGES * (WG_A_BYTES + WG_B_BYTES) + 2 * WG_STAGES * 8 + 1024;
// Must match GEMM_WGMMA_SMEM in engine/src/backend/cuda/ops_matmul.rs.
static_assert(WG_SMEM_BYTES == 197696, "shared memory size");

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Spins until the phase of parity `parity` has completed. A wait of ~10 s (2^34 clocks; real
// waits are microseconds) can only be a lost arrival: trap, so a pipeline bug surfaces as a
// launch error instead of a process hung on the GPU.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    const long long start = clock64();
    uint32_t done;
    do {
        asm volatile(
            "{\n"
            ".reg .pred p;\n"
            "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
            "selp.u32 %0, 1, 0, p;\n"
            "}\n"
            : "=r"(done)
            : "r"(bar), "r"(parity)
            : "memory");
        if (!done && clock64() - start > (1ll << 34)) __trap();
    } while (!done);
}

// Box of `map` at element coordinates (c0 = k, c1 = row) into shared memory at `dst`,
// completing `bar`'s transaction count. (A CTA launched without clusters is its own cluster,
// so its shared::cta addresses are valid shared::cluster addresses.)
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const TmaDesc* map, uint32_t bar, uint32_t c0,
                                            uint32_t c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
            dst),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}

template <typename T> struct IsBf16 { static constexpr bool value = false; };
template <> struct IsBf16<bf16> { static constexpr bool value = true; };

// d[0..63] += A (64 x 16, descriptor desc_a) · B (128 x 16, descriptor desc_b)ᵀ; both K-major
// (transpose flags 0), scale-d = 1 (accumulate), scales of A and B 1.
template <typename T> __device__ __forceinline__ void wgmma_m64n128k16(float* d, uint64_t desc_a, uint64_t desc_b) {
    if constexpr (IsBf16<T>::value) {
        asm volatile(
            "{\n"
            ".reg .pred p;\n"
            "setp.ne.b32 p, %66, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
            "}, %64, %65, p, 1, 1, 0, 0;\n"
            "}\n"
            :
            "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
            "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
            "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
            "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
            "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
            "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
            "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
            "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
            : "l"(desc_a), "l"(desc_b), "n"(1));
    } else {
        asm volatile(
            "{\n"
            ".reg .pred p;\n"
            "setp.ne.b32 p, %66, 0;\n"
            "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
            "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
            "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
            "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
            "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
            "}, %64, %65, p, 1, 1, 0, 0;\n"
            "}\n"
            :
            "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
            "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
            "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
            "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
            "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
            "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
            "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
            "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
            : "l"(desc_a), "l"(desc_b), "n"(1));
    }
}

template <typename T> __device__ __forceinline__ void gemm_wgmma(const WgmmaParams<T>& P) {
    const MatmulParams<T, T>& p = P.p;
    extern __shared__ uint8_t smem_wg[];
    const uint32_t base = (smem_addr(smem_wg) + 1023) & ~1023u;
    const uint32_t a_base = base, b_base = base + WG_STAGES * WG_A_BYTES;
    const uint32_t bars = b_base + WG_STAGES * WG_B_BYTES;
    auto full = [&](uint32_t s) { return bars + 8 * s; };
    auto empty = [&](uint32_t s) { return bars + 8 * (WG_STAGES + s); };

    const uint32_t m = p.m, n = p.n, k = p.k;
    uint32_t tm, tn;
    raster(blockIdx.x, (m + WG_BM - 1) / WG_BM, (n + WG_BN - 1) / WG_BN, 8, tm, tn);
    const uint32_t m0 = tm * WG_BM, n0 = tn * WG_BN;
    const uint32_t k_tiles = (k + WG_BK - 1) / WG_BK;
    const uint32_t wg = threadIdx.x / 128;

    if (threadIdx.x == 0) {
        for (uint32_t s = 0; s < WG_STAGES; ++s) {
            mbar_init(full(s), 1);
            mbar_init(empty(s), WG_CONSUMER_WARPS);
        }
        // Make the initialised barriers visible to the async proxy (the TMA unit).
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();

    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n" ::: "memory");
        if (threadIdx.x == 0) {
            for (uint32_t it = 0; it < k_tiles; ++it) {
                const uint32_t s = it % WG_STAGES, round = it / WG_STAGES;
                mbar_wait(empty(s), (round & 1) ^ 1);
                mbar_expect_tx(full(s), WG_A_BYTES + WG_B_BYTES);
                tma_load_2d(a_base + s * WG_A_BYTES, &P.a_map, full(s), it * WG_BK, m0);
                tma_load_2d(b_base + s * WG_B_BYTES, &P.b_map, full(s), it * WG_BK, n0);
            }
        }
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n" ::: "memory");
        const uint32_t c = wg - 1;  // this consumer's 64 rows of the tile
        const uint32_t lane = threadIdx.x & 31, warp = (threadIdx.x / 32) & 3;
        float acc[2][64];
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int i = 0; i < 64; ++i) acc[j][i] = 0.0f;

        for (uint32_t it = 0; it < k_tiles; ++it) {
            const uint32_t s = it % WG_STAGES;
            mbar_wait(full(s), (it / WG_STAGES) & 1);
            const uint32_t sa = a_base + s * WG_A_BYTES + c * 64 * 128;
            const uint32_t sb = b_base + s * WG_B_BYTES;
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < WG_BK / 16; ++kk) {
                const uint64_t da = sw128_desc(sa + kk * 32);
                wgmma_m64n128k16<T>(acc[0], da, sw128_desc(sb + kk * 32));
                wgmma_m64n128k16<T>(acc[1], da, sw128_desc(sb + 128 * 128 + kk * 32));
            }
            wgmma_commit();
            wgmma_wait<1>();  // the wgmmas of tile it - 1 are done: free its stage
            if (it > 0 && lane == 0) mbar_arrive(empty((it - 1) % WG_STAGES));
        }
        wgmma_wait<0>();
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int i = 0; i < 64; ++i) fence_operand(acc[j][i]);

        const bool pairs = pairs_ok(p);
        const uint32_t g = lane >> 2, t = lane & 3;
        const uint32_t row = m0 + c * 64 + warp * 16 + g;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                const uint32_t col = n0 + j * 128 + i * 8 + 2 * t;
                store_pair(p, pairs, 0, row, col, acc[j][4 * i], acc[j][4 * i + 1]);
                store_pair(p, pairs, 0, row + 8, col, acc[j][4 * i + 2], acc[j][4 * i + 3]);
            }
        }
    }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace kiln

using namespace kiln;

#define KILN_WGMMA_THREADS 384
static_assert(KILN_WGMMA_THREADS == WG_THREADS, "block size");

// (threads, 1): setmaxnreg needs a register cap at entry; one block per SM (193 KiB).
extern "C" __global__ void __launch_bounds__(KILN_WGMMA_THREADS, 1)
    kiln_gemm_wgmma_bf16(const __grid_constant__ WgmmaParams<bf16> p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    gemm_wgmma<bf16>(p);
#else
    __trap();  // not an sm_90a image: the launcher never selects this kernel here
#endif
}
extern "C" __global__ void __launch_bounds__(KILN_WGMMA_THREADS, 1)
    kiln_gemm_wgmma_f16(const __grid_constant__ WgmmaParams<f16> p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    gemm_wgmma<f16>(p);
#else
    __trap();
#endif
}
