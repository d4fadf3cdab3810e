// What the matmul kernels share (matmul.cu, gemm_mma.cu, gemm_wgmma.cu): the params struct,
// the fused epilogue, the tile raster and thin wrappers around the PTX they use
// (cp.async, ldmatrix, mma.sync). The fragment layouts are quoted from the PTX ISA
// ("Matrix Fragments for mma.m16n8k16 with floating point type", "Warp-level matrix load
// instruction: ldmatrix") next to the code that relies on them.
#pragma once

#include "common.cuh"

namespace kiln {

// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) (+ residual[m, n]), f32 out and epilogue terms.
// X is f32 for the GEMV / simple / SGEMM kernels and bf16 / f16 (= W) for the tensor-core
// GEMMs, whose x the launcher first casts into a scratch buffer.
template <typename X, typename W> struct MatmulParams {
    const X* x;             // [m, k]
    const W* w;             // [n, k]
    float* out;             // [m, n]; must not alias anything else here
    const float* bias;      // [n] or null
    const float* residual;  // [m, n] or null
    // Split-K: null, or [gridDim.y, m, n] raw partial sums (no epilogue) that
    // kiln_matmul_reduce adds up; split s covers k in [s * k_split, (s + 1) * k_split).
    float* partial;
    uint32_t m;
    uint32_t n;
    uint32_t k;
    uint32_t k_split;  // = k when not split
};

// `kiln_matmul_reduce`: out[i] = sum_s partial[s * count + i] (+ bias) (+ residual).
struct ReduceParams {
    const float* partial;
    float* out;
    const float* bias;
    const float* residual;
    uint64_t count;  // m * n
    uint32_t n;
    uint32_t splits;
};

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
typedef MatmulParams<float, bf16> MatmulParamsF32Bf16;  // offsetof takes no commas
static_assert(sizeof(MatmulParamsF32Bf16) == 64 && offsetof(MatmulParamsF32Bf16, k_split) == 60, "params layout");
static_assert(sizeof(ReduceParams) == 48 && offsetof(ReduceParams, splits) == 44, "params layout");

// The epilogue, in the order the CPU twin adds the terms: (acc + bias) + residual.
template <typename X, typename W>
__device__ __forceinline__ float epilogue(const MatmulParams<X, W>& p, float acc, uint32_t row, uint32_t col) {
    if (p.bias) acc += p.bias[col];
    if (p.residual) acc += p.residual[uint64_t(row) * p.n + col];
    return acc;
}

// Whether two adjacent output columns (col even) can be written as one float2: the row
// length is even and out / residual are 8-byte aligned. Otherwise two scalar stores.
template <typename X, typename W> __device__ __forceinline__ bool pairs_ok(const MatmulParams<X, W>& p) {
    const uintptr_t mis = reinterpret_cast<uintptr_t>(p.out) | reinterpret_cast<uintptr_t>(p.residual) |
                          reinterpret_cast<uintptr_t>(p.partial);
    return p.n % 2 == 0 && (mis & 7) == 0;
}

// Stores out[row, col] and out[row, col + 1] (each only if inside the matrix): the epilogue
// applied, or the raw sums into split `split`'s partial slice when the call is split over k.
template <typename X, typename W>
__device__ __forceinline__ void store_pair(const MatmulParams<X, W>& p, bool pairs, uint32_t split, uint32_t row,
                                           uint32_t col, float v0, float v1) {
    if (row >= p.m || col >= p.n) return;
    const uint64_t at = uint64_t(row) * p.n + col;
    if (p.partial) {
        float* dst = p.partial + uint64_t(split) * p.m * p.n + at;
        if (pairs) {
            *reinterpret_cast<float2*>(dst) = make_float2(v0, v1);
        } else {
            dst[0] = v0;
            if (col + 1 < p.n) dst[1] = v1;
        }
        return;
    }
    const float e0 = epilogue(p, v0, row, col);
    if (pairs) {
        *reinterpret_cast<float2*>(p.out + at) = make_float2(e0, epilogue(p, v1, row, col + 1));
    } else {
        p.out[at] = e0;
        if (col + 1 < p.n) p.out[at + 1] = epilogue(p, v1, row, col + 1);
    }
}

// Block `pid` of a 1-D grid -> (tile_m, tile_n), in groups of `group` tile rows: consecutive
// blocks share a weight tile (tile_n) and walk `group` tiles of x, so the blocks resident at
// one time read each weight tile from DRAM about once and keep a band of x in L2.
__device__ __forceinline__ void raster(uint32_t pid, uint32_t tiles_m, uint32_t tiles_n, uint32_t group,
                                       uint32_t& tm, uint32_t& tn) {
    group = min(group, tiles_m);
    const uint32_t per_group = group * tiles_n;
    const uint32_t first = pid / per_group * group;
    const uint32_t rows = min(tiles_m - first, group);
    const uint32_t r = pid % per_group;
    tm = first + r % rows;
    tn = r / rows;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1 (.cg); `src_bytes` = 0 writes 16 zero bytes
// and reads nothing (out-of-range rows and k), so edge tiles need no separate path.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, uint32_t src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i (8 rows of 16 bytes);
// register i of every lane receives matrix i's row (lane / 4), elements 2 * (lane % 4) and
// 2 * (lane % 4) + 1 (PTX ISA, ldmatrix, "fragment layout for a 8x8 matrix with .b16").
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// mma.sync.m16n8k16, f32 accumulators. Fragments (PTX ISA, m16n8k16 floating point; g = lane / 4,
// t = lane % 4):
//   A (16x16, row major) a[0]: row g,   k 2t..2t+1     a[1]: row g+8, k 2t..2t+1
//                        a[2]: row g,   k 2t+8..2t+9   a[3]: row g+8, k 2t+8..2t+9
//   B (16x8, "col": element (k, n) of column n)  b[0]: n g, k 2t..2t+1   b[1]: n g, k 2t+8..2t+9
//   C (16x8)  c[0..1]: row g, cols 2t, 2t+1    c[2..3]: row g+8, cols 2t, 2t+1
template <typename T> __device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, const uint32_t* b);
template <> __device__ __forceinline__ void mma_16816<bf16>(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <> __device__ __forceinline__ void mma_16816<f16>(float* c, const uint32_t* a, const uint32_t* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

}  // namespace kiln
