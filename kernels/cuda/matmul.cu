// out[m, n] = x[m, k] · w[n, k]ᵀ (+ bias[n]) (+ residual[m, n]) (CPU twin: src/cpu/matmul.rs,
// `linear`). x f32 [m, k] row-major, w [n, k] row-major in bf16, f16 or f32, out f32 [m, n];
// f32 accumulation everywhere. The summation order differs from the CPU twin, so results agree
// to rounding (NMSE), not bits; the epilogue adds (acc + bias) + residual as the twin does.
//
// This file holds the GEMV, the simple tensor-core GEMM, the SGEMM and the split-K reduction;
// the pipelined tensor-core GEMMs are in gemm_mma.cu (sm_80+) and gemm_wgmma.cu (sm_90a). The
// launcher (engine/src/backend/cuda/ops_matmul.rs) picks one per call:
//
// - GEMV, m <= 8 (decode): memory-bound on w. `kiln_gemv_<w>_m<M>` handles any m <= M
//   (M in 1, 4, 8). A block is GEMV_WARPS warps; each warp owns GEMV_ROWS consecutive rows of
//   w and streams them with 16-byte loads (GEMV_UNROLL packs per row in flight), so every
//   16-byte weight word is used by all m rows of x. x is staged in chunks of GEMV_KC = 8192 / M
//   columns in dynamic shared memory ([m][GEMV_KC] f32). Each warp reduces its dot products
//   with shuffles. Rows past n are clamped to n - 1 (read, never written) so every warp reaches
//   the barriers. A scalar path handles k not a multiple of the pack or unaligned w.
//   Split-K (blockIdx.y = split, when `partial` is set): a block covers k_split columns (a
//   multiple of the chunk) and writes raw sums to partial[split]; kiln_matmul_reduce adds
//   the splits and applies the epilogue. The launcher splits only when one block per 16 rows
//   would leave the card short of blocks and k spans several chunks (Llama's down_proj,
//   k = 14336 at m = 1: 256 blocks for 132 SMs, each staging x twice between bursts of loads).
//   Launch: grid = (ceil(n / (GEMV_WARPS * GEMV_ROWS)), splits), block = 32 * GEMV_WARPS,
//   dynamic shared = ((m - 1) * (8192 / M) + min(k_split, 8192 / M)) * 4 bytes (at most 32 KiB).
//
// - Simple tensor-core GEMM, m > 8, bf16/f16 weights: `kiln_gemm_simple_<w>`, the fallback of
//   the pipelined kernels (any k, any alignment). Block tile 128 x 128 x 32, 256 threads as
//   2 x 4 warps of 64 x 32, mma.sync m16n8k16 bf16 -> f32. Tiles are staged in shared memory as
//   bf16 (x rounded f32 -> bf16 to nearest even; f16 weights are also rounded to bf16, so both
//   dtypes share one kernel: the bf16-matmul tolerance applies), with the next tile prefetched
//   into registers while the current one is multiplied. Out-of-range rows / columns / k are
//   zero-filled, so any m, n, k works.
//   Launch: grid = (ceil(n / 128), ceil(m / 128)), block = 256, no dynamic shared memory.
//
// - SGEMM, m > 8, f32 weights: `kiln_sgemm_f32`, exact f32 FFMA. Block tile 64 x 64 x 16,
//   256 threads of 4 x 4 outputs each, register prefetch of the next tile.
//   Launch: grid = (ceil(n / 64), ceil(m / 64)), block = 256, no dynamic shared memory.
//
// - `kiln_matmul_reduce`: the split-K sum + epilogue, grid-stride over m * n (4 per step).
//   Launch: as binary.cu (256 threads, up to 8 blocks per SM).
#include "matmul.cuh"

namespace kiln {

template <typename W> using XParams = MatmulParams<float, W>;

// ---------------------------------------------------------------------------------------------
// GEMV

constexpr int GEMV_WARPS = 4;
constexpr int GEMV_ROWS = 4;
constexpr int GEMV_UNROLL = 2;
// Columns of x per shared-memory chunk for the kernel with M rows: 8192 / M, so a chunk is
// at most 32 KiB (decode, M = 1, stages x of k <= 8192 once). A multiple of 32 * pack * unroll.
template <int M> struct GemvChunk { static constexpr uint32_t KC = 8192 / M; };

template <typename W, int M>
__device__ __forceinline__ void gemv(const XParams<W>& p) {
    extern __shared__ uint4 xs4[];  // [m][GEMV_KC] f32
    constexpr uint32_t GEMV_KC = GemvChunk<M>::KC;
    static_assert(GEMV_KC % (32 * 8 * GEMV_UNROLL) == 0, "chunk of whole steps");
    float* xs = reinterpret_cast<float*>(xs4);
    constexpr int N = Width<W>::N;
    constexpr uint32_t STEP = 32 * N;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const uint32_t m = p.m, n = p.n, k = p.k;
    const uint32_t row0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_ROWS;
    const W* wr[GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < GEMV_ROWS; ++r) wr[r] = p.w + uint64_t(min(row0 + r, n - 1)) * k;
    const bool vec_ok = k % N == 0 && aligned16(p.w);
    const bool x_vec = k % 4 == 0 && aligned16(p.x);

    float acc[M][GEMV_ROWS];
#pragma unroll
    for (int i = 0; i < M; ++i)
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; ++r) acc[i][r] = 0.0f;

    // This block's columns: all of k, or split blockIdx.y's k_split of them.
    const uint32_t k_begin = blockIdx.y * p.k_split, k_end = min(k, k_begin + p.k_split);
    for (uint32_t k0 = k_begin; k0 < k_end; k0 += GEMV_KC) {
        const uint32_t kc = min(GEMV_KC, k_end - k0);
        __syncthreads();  // the previous chunk is consumed
        for (uint32_t mi = 0; mi < m; ++mi) {
            const float* src = p.x + uint64_t(mi) * k + k0;
            if (x_vec) {  // kc is a multiple of 4 too
                for (uint32_t c = threadIdx.x * 4; c < kc; c += blockDim.x * 4)
                    xs4[(mi * GEMV_KC + c) / 4] = *reinterpret_cast<const uint4*>(src + c);
            } else {
                for (uint32_t c = threadIdx.x; c < kc; c += blockDim.x) xs[mi * GEMV_KC + c] = src[c];
            }
        }
        __syncthreads();
        if (vec_ok) {
            for (uint32_t c = lane * N; c < kc; c += STEP * GEMV_UNROLL) {
                Pack<W, N> wp[GEMV_UNROLL][GEMV_ROWS];
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; ++u)
#pragma unroll
                    for (int r = 0; r < GEMV_ROWS; ++r)
                        if (u == 0 || c + u * STEP < kc)
                            wp[u][r] = load_pack<W, N>(wr[r] + k0 + c + u * STEP);
#pragma unroll
                for (int u = 0; u < GEMV_UNROLL; ++u) {
                    if (u != 0 && c + u * STEP >= kc) break;
#pragma unroll
                    for (int i = 0; i < M; ++i) {
                        if (i >= int(m)) break;
                        Pack<float, N> xv;
#pragma unroll
                        for (int q = 0; q < Pack<float, N>::WORDS; ++q)
                            xv.w[q] = xs4[(i * GEMV_KC + c + u * STEP) / 4 + q];
#pragma unroll
                        for (int r = 0; r < GEMV_ROWS; ++r)
#pragma unroll
                            for (int j = 0; j < N; ++j)
                                acc[i][r] = fmaf(xv.v[j], to_f32(wp[u][r].v[j]), acc[i][r]);
                    }
                }
            }
        } else {
            for (uint32_t c = lane; c < kc; c += 32) {
#pragma unroll
                for (int r = 0; r < GEMV_ROWS; ++r) {
                    const float wv = to_f32(wr[r][k0 + c]);
#pragma unroll
                    for (int i = 0; i < M; ++i)
                        if (i < int(m)) acc[i][r] = fmaf(xs[i * GEMV_KC + c], wv, acc[i][r]);
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < M; ++i) {
        if (i >= int(m)) break;
#pragma unroll
        for (int r = 0; r < GEMV_ROWS; ++r) {
            const float s = warp_sum(acc[i][r]);
            if (lane != 0 || row0 + r >= n) continue;
            const uint64_t at = uint64_t(i) * n + row0 + r;
            if (p.partial) {
                p.partial[uint64_t(blockIdx.y) * m * n + at] = s;
            } else {
                p.out[at] = epilogue(p, s, i, row0 + r);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core GEMM (bf16 mma.sync, f32 accumulate)

constexpr int BM = 128, BN = 128, BK = 32;  // the simple GEMM's block tile
constexpr int LDS = BK + 8;  // smem row stride in bf16: 80 bytes, conflict-free fragment reads
constexpr int GEMM_THREADS = 256;

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
    return *reinterpret_cast<const uint32_t*>(&v);
}

template <typename W> __device__ __forceinline__ uint32_t pack_w2(W lo, W hi) {
    return pack_bf16x2(to_f32(lo), to_f32(hi));
}

template <typename W>
__device__ __forceinline__ void gemm_simple(const XParams<W>& p) {
    static_assert(sizeof(W) == 2, "16-bit weights");
    __shared__ __align__(16) bf16 as[BM * LDS];
    __shared__ __align__(16) bf16 bs[BN * LDS];
    const uint32_t m = p.m, n = p.n, k = p.k;
    const uint32_t m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int wm = warp >> 2, wn = warp & 3;  // 2 x 4 warps, 64 x 32 each
    const int g = lane >> 2, tig = lane & 3;
    const bool a_vec = k % 4 == 0 && aligned16(p.x);
    const bool b_vec = k % 8 == 0 && aligned16(p.w);

    // Staging registers: A 4 x 4 f32 (rows t/8 + 32 i, cols (t%8)*4), B 2 x 8 (rows t/4 + 64 i,
    // cols (t%4)*8).
    float4 ra[4];
    Pack<W, 8> rb[2];
    auto load = [&](uint32_t k0) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t row = m0 + (t >> 3) + 32 * i, col = k0 + (t & 7) * 4;
            const float* src = p.x + uint64_t(row) * k + col;
            if (row < m && a_vec && col < k) {
                ra[i] = *reinterpret_cast<const float4*>(src);
            } else {
                float v[4];
#pragma unroll
                for (int j = 0; j < 4; ++j) v[j] = row < m && col + j < k ? src[j] : 0.0f;
                ra[i] = make_float4(v[0], v[1], v[2], v[3]);
            }
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const uint32_t row = n0 + (t >> 2) + 64 * i, col = k0 + (t & 3) * 8;
            const W* src = p.w + uint64_t(row) * k + col;
            if (row < n && b_vec && col < k) {
                rb[i] = load_pack<W, 8>(src);
            } else {
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    rb[i].v[j] = row < n && col + j < k ? src[j] : from_f32<W>(0.0f);
            }
        }
    };
    auto store = [&]() {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int row = (t >> 3) + 32 * i, col = (t & 7) * 4;
            uint2 v;
            v.x = pack_bf16x2(ra[i].x, ra[i].y);
            v.y = pack_bf16x2(ra[i].z, ra[i].w);
            *reinterpret_cast<uint2*>(&as[row * LDS + col]) = v;
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int row = (t >> 2) + 64 * i, col = (t & 3) * 8;
            uint4 v;
            v.x = pack_w2(rb[i].v[0], rb[i].v[1]);
            v.y = pack_w2(rb[i].v[2], rb[i].v[3]);
            v.z = pack_w2(rb[i].v[4], rb[i].v[5]);
            v.w = pack_w2(rb[i].v[6], rb[i].v[7]);
            *reinterpret_cast<uint4*>(&bs[row * LDS + col]) = v;
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int q = 0; q < 4; ++q) acc[i][j][q] = 0.0f;

    const uint32_t tiles = (k + BK - 1) / BK;
    load(0);
    for (uint32_t tile = 0; tile < tiles; ++tile) {
        __syncthreads();  // the previous tile is consumed
        store();
        __syncthreads();
        if (tile + 1 < tiles) load((tile + 1) * BK);
#pragma unroll
        for (int ks = 0; ks < BK; ks += 16) {
            uint32_t af[4][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const bf16* a = &as[(wm * 64 + i * 16 + g) * LDS + ks + tig * 2];
                af[i][0] = *reinterpret_cast<const uint32_t*>(a);
                af[i][1] = *reinterpret_cast<const uint32_t*>(a + 8 * LDS);
                af[i][2] = *reinterpret_cast<const uint32_t*>(a + 8);
                af[i][3] = *reinterpret_cast<const uint32_t*>(a + 8 * LDS + 8);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const bf16* b = &bs[(wn * 32 + j * 8 + g) * LDS + ks + tig * 2];
                bf[j][0] = *reinterpret_cast<const uint32_t*>(b);
                bf[j][1] = *reinterpret_cast<const uint32_t*>(b + 8);
            }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_16816<bf16>(acc[i][j], af[i], bf[j]);
        }
    }

    const bool pairs = pairs_ok(p);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const uint32_t row = m0 + wm * 64 + i * 16 + g;
            const uint32_t col = n0 + wn * 32 + j * 8 + tig * 2;
            store_pair(p, pairs, 0, row, col, acc[i][j][0], acc[i][j][1]);
            store_pair(p, pairs, 0, row + 8, col, acc[i][j][2], acc[i][j][3]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// f32 SGEMM (FFMA), exact f32 arithmetic

constexpr int SBM = 64, SBN = 64, SBK = 16;

__device__ __forceinline__ void sgemm(const XParams<float>& p) {
    __shared__ __align__(16) float sa[SBK][SBM + 4];
    __shared__ __align__(16) float sb[SBK][SBN + 4];
    const uint32_t m = p.m, n = p.n, k = p.k;
    const uint32_t m0 = blockIdx.y * SBM, n0 = blockIdx.x * SBN;
    const int t = threadIdx.x, tx = t & 15, ty = t >> 4;
    const bool a_vec = k % 4 == 0 && aligned16(p.x);
    const bool b_vec = k % 4 == 0 && aligned16(p.w);
    const int lrow = t >> 2, lcol = (t & 3) * 4;  // staging: one float4 of A and of B

    float4 ra, rb;
    auto load1 = [&](const float* base, uint32_t rows, uint32_t r, uint32_t col, bool vec) {
        const float* src = base + uint64_t(r) * k + col;
        if (r < rows && vec && col < k) return *reinterpret_cast<const float4*>(src);
        float v[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) v[j] = r < rows && col + j < k ? src[j] : 0.0f;
        return make_float4(v[0], v[1], v[2], v[3]);
    };
    auto load = [&](uint32_t k0) {
        ra = load1(p.x, m, m0 + lrow, k0 + lcol, a_vec);
        rb = load1(p.w, n, n0 + lrow, k0 + lcol, b_vec);
    };

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    const uint32_t tiles = (k + SBK - 1) / SBK;
    load(0);
    for (uint32_t tile = 0; tile < tiles; ++tile) {
        __syncthreads();
        sa[lcol + 0][lrow] = ra.x;
        sa[lcol + 1][lrow] = ra.y;
        sa[lcol + 2][lrow] = ra.z;
        sa[lcol + 3][lrow] = ra.w;
        sb[lcol + 0][lrow] = rb.x;
        sb[lcol + 1][lrow] = rb.y;
        sb[lcol + 2][lrow] = rb.z;
        sb[lcol + 3][lrow] = rb.w;
        __syncthreads();
        if (tile + 1 < tiles) load((tile + 1) * SBK);
#pragma unroll
        for (int kk = 0; kk < SBK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = sa[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = sb[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const uint32_t r = m0 + ty + 16 * i;
        if (r >= m) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const uint32_t c = n0 + tx + 16 * j;
            if (c < n) p.out[uint64_t(r) * n + c] = epilogue(p, acc[i][j], r, c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Split-K reduction + epilogue

__device__ __forceinline__ void reduce_splits(const ReduceParams& p) {
    const uint64_t count = p.count;
    const bool vec = p.n % 4 == 0 && aligned16(p.partial) && aligned16(p.out) &&
                     (!p.residual || aligned16(p.residual)) && (!p.bias || aligned16(p.bias));
    auto sum = [&](uint64_t i) {
        float s = p.partial[i];
        for (uint32_t z = 1; z < p.splits; ++z) s += p.partial[z * count + i];
        return s;
    };
    grid_stride<4>(
        count, vec,
        [&](uint64_t i) {  // 4 columns of one row: n is a multiple of 4
            float4 s = *reinterpret_cast<const float4*>(p.partial + i);
            for (uint32_t z = 1; z < p.splits; ++z) {
                const float4 t = *reinterpret_cast<const float4*>(p.partial + z * count + i);
                s.x += t.x, s.y += t.y, s.z += t.z, s.w += t.w;
            }
            if (p.bias) {
                const float4 b = *reinterpret_cast<const float4*>(p.bias + i % p.n);
                s.x += b.x, s.y += b.y, s.z += b.z, s.w += b.w;
            }
            if (p.residual) {
                const float4 r = *reinterpret_cast<const float4*>(p.residual + i);
                s.x += r.x, s.y += r.y, s.z += r.z, s.w += r.w;
            }
            *reinterpret_cast<float4*>(p.out + i) = s;
        },
        [&](uint64_t i) {
            float s = sum(i);
            if (p.bias) s += p.bias[i % p.n];
            if (p.residual) s += p.residual[i];
            p.out[i] = s;
        });
}

}  // namespace kiln

using namespace kiln;

#define KILN_GEMV_THREADS (32 * 4)
static_assert(KILN_GEMV_THREADS == 32 * GEMV_WARPS, "GEMV block size");

extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_f32_m1(XParams<float> p) { gemv<float, 1>(p); }
extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_f32_m4(XParams<float> p) { gemv<float, 4>(p); }
extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_f32_m8(XParams<float> p) { gemv<float, 8>(p); }
extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_bf16_m1(XParams<bf16> p) { gemv<bf16, 1>(p); }
extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_bf16_m4(XParams<bf16> p) { gemv<bf16, 4>(p); }
extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_bf16_m8(XParams<bf16> p) { gemv<bf16, 8>(p); }
extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_f16_m1(XParams<f16> p) { gemv<f16, 1>(p); }
extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_f16_m4(XParams<f16> p) { gemv<f16, 4>(p); }
extern "C" __global__ void __launch_bounds__(KILN_GEMV_THREADS) kiln_gemv_f16_m8(XParams<f16> p) { gemv<f16, 8>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) kiln_gemm_simple_bf16(XParams<bf16> p) { gemm_simple<bf16>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) kiln_gemm_simple_f16(XParams<f16> p) { gemm_simple<f16>(p); }
extern "C" __global__ void __launch_bounds__(GEMM_THREADS) kiln_sgemm_f32(XParams<float> p) { sgemm(p); }
extern "C" __global__ void kiln_matmul_reduce(ReduceParams p) { reduce_splits(p); }
