// The tensor-core core shared by the paged decode/prefill kernels (paged_attention.cu) and the
// varlen encoder kernels (varlen_attention.cu): bf16 tiles in shared memory, mma.sync m16n8k16
// bf16 x bf16 -> f32, and an online softmax (running max and sum per query row, f32, in the
// log2 domain) in registers, flash-attention style.
//
// A CTA is FA_THREADS = 128 threads (4 warps). K and V tiles are FA_BLOCK_N = 64 keys x DP
// columns of bf16 (DP = head_dim rounded up to 64, 80, 96 or 128), row stride DP + 8 elements:
// (DP + 8) / 8 is odd, so the 8 row addresses of an ldmatrix 8x8 matrix (16 bytes each) fall in
// 8 distinct 16-byte bank groups of a 128-byte line (conflict-free). Columns d..DP are zero when
// head_dim < DP (they add nothing to q.k, and their outputs are not written).
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), with
// g = lane >> 2 (groupID) and c = lane & 3 (threadID_in_group):
//   A (16 x 16, .row, 4 x .b32 = 8 bf16): reg0 = A[g][2c..2c+1], reg1 = A[g+8][2c..2c+1],
//     reg2 = A[g][2c+8..2c+9], reg3 = A[g+8][2c+8..2c+9] (low half = lower column).
//   B (16 x 8, .col, 2 x .b32): reg0 = B[2c..2c+1][g], reg1 = B[2c+8..2c+9][g] (low half = lower k).
//   C/D (16 x 8 f32): d0, d1 = C[g][2c], C[g][2c+1]; d2, d3 = C[g+8][2c], C[g+8][2c+1].
// ldmatrix.m8n8.x4.b16 (PTX ISA, "Warp-level matrix load instruction: ldmatrix"): lanes 8i..8i+7
// give the 8 row addresses of matrix i, and register i of lane L receives row L >> 2, elements
// 2(L & 3) and 2(L & 3) + 1 of matrix i; with .trans it receives elements [2(L & 3)][L >> 2] and
// [2(L & 3) + 1][L >> 2] (the matrix read column-major).
//
// So, with rows of the tiles in shared memory being tokens and columns head_dim:
// - S = Q K^T: A = Q (query rows x head_dim), B[k][n] = K[n][k]. A non-transposed ldmatrix of the
//   K rows gives lane L the pair K[g][2c..2c+1] = B[2c..2c+1][g]: exactly a B register.
// - O += P V: B[k][n] = V[k][n] with k = key, n = head_dim column. A transposed ldmatrix of the V
//   rows gives V[2c..2c+1][g] = B[2c..2c+1][g]: a B register again.
// - P as the A operand: the C fragments of two adjacent 8-key n-tiles 2j, 2j+1 of S hold, per
//   thread, S[g][16j + 2c..+1], S[g+8][16j + 2c..+1], S[g][16j + 8 + 2c..+1], S[g+8][16j + 8 + 2c..+1]:
//   the A registers 0..3 of keys 16j..16j+15, converted to bf16 pairs without moving data.
#pragma once

#include "common.cuh"

namespace kiln {

constexpr int FA_THREADS = 128;
constexpr int FA_BLOCK_M = 64;  // prefill: query rows (packed, see below) per CTA, 16 per warp
constexpr int FA_BLOCK_N = 64;  // keys per K/V tile
constexpr float FA_LOG2E = 1.4426950408889634f;

template <int DP> struct FaDims {
    static_assert(DP % 16 == 0 && DP >= 16 && DP <= 128, "head_dim tile");
    static constexpr int LD = DP + 8;        // shared row stride, bf16 elements
    static constexpr int KSTEPS = DP / 16;   // k-steps of Q K^T
    static constexpr int DTILES = DP / 8;    // 8-column n-tiles of the output
    static_assert(((DP + 8) / 8) % 2 == 1, "conflict-free ldmatrix rows");
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
}

// D = A B + D, m16n8k16, bf16 operands, f32 accumulators.
__device__ __forceinline__ void fa_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                       uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t fa_pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low 16 bits) = lo
    return *reinterpret_cast<const uint32_t*>(&v);
}

// 16-byte asynchronous global -> shared copy (sm_80+); `valid` false zero-fills the 16 bytes
// without reading (src-size 0), `src` must still be a mapped address.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Copies ROWS rows of d (<= DP) elements into the bf16 tile dst[ROWS][DP + 8]: row r from
// src + off(r), or zeros when off(r) < 0. Columns d..DP are not touched. `vec`: d is a multiple
// of 16 / sizeof(T) and src is 16-byte aligned; then bf16 rows go by cp.async (the caller waits)
// and f32 rows by 16-byte loads, 8 in flight per thread, rounded to bf16 (nearest even).
// Otherwise element by element. Element (r, col) of the tile goes to dst + at(r, col): the
// tile's layout (padded rows here, the wgmma kernels' swizzle there).
template <typename T, int DP, int ROWS, class Off, class At>
__device__ __forceinline__ void fa_load_rows_to(bf16* dst, const T* src, uint32_t d, bool vec, Off off,
                                                At at) {
    const int tid = threadIdx.x;
    if (vec) {
        constexpr int W = int(16 / sizeof(T));
        constexpr int CPR = DP / W;  // 16-byte chunks per row
        constexpr int CHUNKS = ROWS * CPR;
        constexpr int PER = (CHUNKS + FA_THREADS - 1) / FA_THREADS;
        if constexpr (sizeof(T) == 2) {
#pragma unroll
            for (int i = 0; i < PER; ++i) {
                const int c = tid + i * FA_THREADS;
                if (CHUNKS % FA_THREADS != 0 && c >= CHUNKS) break;
                const int r = c / CPR, col = (c % CPR) * W;
                if (uint32_t(col) >= d) continue;
                const long long o = off(r);
                cp_async16(dst + at(r, col), o >= 0 ? src + o + col : src, o >= 0);
            }
        } else {
            constexpr int BATCH = PER < 8 ? PER : 8;
#pragma unroll
            for (int b0 = 0; b0 < PER; b0 += BATCH) {
                float4 v[BATCH];
#pragma unroll
                for (int i = 0; i < BATCH; ++i) {
                    const int c = tid + (b0 + i) * FA_THREADS;
                    v[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    if (b0 + i < PER && c < CHUNKS) {
                        const int r = c / CPR, col = (c % CPR) * W;
                        const long long o = uint32_t(col) < d ? off(r) : -1;
                        if (o >= 0) v[i] = __ldg(reinterpret_cast<const float4*>(src + o + col));
                    }
                }
#pragma unroll
                for (int i = 0; i < BATCH; ++i) {
                    const int c = tid + (b0 + i) * FA_THREADS;
                    if (b0 + i < PER && c < CHUNKS) {
                        const int r = c / CPR, col = (c % CPR) * W;
                        if (uint32_t(col) < d) {
                            uint2 w;
                            w.x = fa_pack_bf16(v[i].x, v[i].y);
                            w.y = fa_pack_bf16(v[i].z, v[i].w);
                            *reinterpret_cast<uint2*>(dst + at(r, col)) = w;
                        }
                    }
                }
            }
        }
    } else {
        for (int e = tid; e < ROWS * DP; e += FA_THREADS) {
            const int r = e / DP, col = e % DP;
            if (uint32_t(col) >= d) continue;
            const long long o = off(r);
            dst[at(r, col)] = __float2bfloat16_rn(o >= 0 ? to_f32(src[o + col]) : 0.0f);
        }
    }
}

// fa_load_rows_to into the padded tile dst[ROWS][DP + 8].
template <typename T, int DP, int ROWS, class Off>
__device__ __forceinline__ void fa_load_rows(bf16* dst, const T* src, uint32_t d, bool vec, Off off) {
    fa_load_rows_to<T, DP, ROWS>(dst, src, d, vec, off,
                                 [](int r, int col) { return r * FaDims<DP>::LD + col; });
}

// Zeroes `n` bf16 elements of shared memory (n a multiple of 8, dst 16-byte aligned).
__device__ __forceinline__ void fa_zero(bf16* dst, int n) {
    for (int i = threadIdx.x * 8; i < n; i += FA_THREADS * 8)
        *reinterpret_cast<uint4*>(dst + i) = make_uint4(0u, 0u, 0u, 0u);
}

// The A fragments of Q for the 16 tile rows r0..r0+15, every k-step. ldmatrix.x4 matrices:
// 0 = rows r0..r0+7, columns k..k+7 (reg0); 1 = rows r0+8..r0+15, columns k..k+7 (reg1);
// 2 = rows r0..r0+7, columns k+8..k+15 (reg2); 3 = rows r0+8.., columns k+8.. (reg3).
template <int DP>
__device__ __forceinline__ void fa_load_q(uint32_t (&qf)[FaDims<DP>::KSTEPS][4], const bf16* qs,
                                          int r0) {
    constexpr int LD = FaDims<DP>::LD;
    const int lane = threadIdx.x & 31, mi = lane >> 3;
    const bf16* base = qs + (r0 + (mi & 1) * 8 + (lane & 7)) * LD + (mi >> 1) * 8;
#pragma unroll
    for (int ks = 0; ks < FaDims<DP>::KSTEPS; ++ks) ldsm_x4(qf[ks], base + ks * 16);
}

// s[n] (n-tile n = keys k0 + 8n..k0 + 8n + 7 of the K tile) = Q K^T for this warp's 16 rows.
// ldmatrix.x4 matrices: 0 = keys +0..7, columns k..k+7 (B reg0 of n-tile 2p), 1 = keys +0..7,
// columns k+8.. (reg1 of 2p), 2 = keys +8..15, columns k.. (reg0 of 2p+1), 3 = keys +8..15,
// columns k+8.. (reg1 of 2p+1).
template <int DP, int NT>
__device__ __forceinline__ void fa_qk(float (&s)[NT][4], const uint32_t (&qf)[FaDims<DP>::KSTEPS][4],
                                      const bf16* ks_tile, int k0) {
    static_assert(NT % 2 == 0, "n-tiles go in pairs");
    constexpr int LD = FaDims<DP>::LD;
    const int lane = threadIdx.x & 31, mi = lane >> 3;
#pragma unroll
    for (int n = 0; n < NT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
    const bf16* base = ks_tile + (k0 + (mi >> 1) * 8 + (lane & 7)) * LD + (mi & 1) * 8;
#pragma unroll
    for (int ks = 0; ks < FaDims<DP>::KSTEPS; ++ks) {
#pragma unroll
        for (int p = 0; p < NT / 2; ++p) {
            uint32_t b[4];
            ldsm_x4(b, base + p * 16 * LD + ks * 16);
            fa_mma(s[2 * p], qf[ks], b[0], b[1]);
            fa_mma(s[2 * p + 1], qf[ks], b[2], b[3]);
        }
    }
}

// o += P V for this warp's 16 rows over keys k0..k0 + 16 KK of the V tile; p[j] is the A operand
// of keys k0 + 16j..k0 + 16j + 15. ldmatrix.x4.trans matrices: 0 = keys +0..7, columns n..n+7
// (B reg0 of d-tile 2t), 1 = keys +8..15, columns n.. (reg1 of 2t), 2 = keys +0..7, columns
// n+8.. (reg0 of 2t+1), 3 = keys +8..15, columns n+8.. (reg1 of 2t+1).
template <int DP, int KK>
__device__ __forceinline__ void fa_pv(float (&o)[FaDims<DP>::DTILES][4], const uint32_t (&p)[KK][4],
                                      const bf16* vs_tile, int k0) {
    constexpr int LD = FaDims<DP>::LD;
    const int lane = threadIdx.x & 31, mi = lane >> 3;
    const bf16* base = vs_tile + (k0 + (mi & 1) * 8 + (lane & 7)) * LD + (mi >> 1) * 8;
#pragma unroll
    for (int j = 0; j < KK; ++j) {
#pragma unroll
        for (int t = 0; t < FaDims<DP>::DTILES / 2; ++t) {
            uint32_t b[4];
            ldsm_x4_trans(b, base + j * 16 * LD + t * 16);
            fa_mma(o[2 * t], p[j], b[0], b[1]);
            fa_mma(o[2 * t + 1], p[j], b[2], b[3]);
        }
    }
}

// Scales raw scores to the log2 domain and masks keys: the score of key `key0 + 8n + 2c + e`
// (element e of pair) for row half h (row g, or g + 8) is kept when key < lim[h], else -inf.
template <int NT>
__device__ __forceinline__ void fa_scale_mask(float (&s)[NT][4], float scale_log2, uint32_t key0,
                                              const uint32_t (&lim)[2]) {
    const uint32_t c2 = 2 * (threadIdx.x & 3);
#pragma unroll
    for (int n = 0; n < NT; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const uint32_t key = key0 + 8 * n + c2 + (e & 1);
            s[n][e] = key < lim[e >> 1] ? s[n][e] * scale_log2 : -INFINITY;
        }
    }
}

// One online-softmax step over a tile of (log2-domain, masked) scores: new running max per row
// (the quad of 4 lanes holding a row agree through two xor shuffles), p = 2^(s - max) in place,
// running sums (per thread: its own columns; the quad is summed at the end) and the output
// accumulators rescaled by 2^(old max - new max). A row with only -inf so far keeps max -inf and
// contributes p = 0 (exponents taken against 0, never -inf - -inf).
template <int NT, int DT>
__device__ __forceinline__ void fa_softmax(float (&s)[NT][4], float (&o)[DT][4], float (&m)[2],
                                           float (&l)[2]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = m[h];
#pragma unroll
        for (int n = 0; n < NT; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float base = mx == -INFINITY ? 0.0f : mx;
        const float corr = exp2f(m[h] - base);
        m[h] = mx;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < NT; ++n) {
            s[n][2 * h] = exp2f(s[n][2 * h] - base);
            s[n][2 * h + 1] = exp2f(s[n][2 * h + 1] - base);
            sum += s[n][2 * h] + s[n][2 * h + 1];
        }
        l[h] = fmaf(l[h], corr, sum);
#pragma unroll
        for (int t = 0; t < DT; ++t) {
            o[t][2 * h] *= corr;
            o[t][2 * h + 1] *= corr;
        }
    }
}

// The probabilities of n-tiles 2j, 2j+1 as the bf16 A operand of keys 16j..16j+15 (see the top).
template <int NT>
__device__ __forceinline__ void fa_p_frags(uint32_t (&p)[NT / 2][4], const float (&s)[NT][4]) {
#pragma unroll
    for (int j = 0; j < NT / 2; ++j) {
        p[j][0] = fa_pack_bf16(s[2 * j][0], s[2 * j][1]);
        p[j][1] = fa_pack_bf16(s[2 * j][2], s[2 * j][3]);
        p[j][2] = fa_pack_bf16(s[2 * j + 1][0], s[2 * j + 1][1]);
        p[j][3] = fa_pack_bf16(s[2 * j + 1][2], s[2 * j + 1][3]);
    }
}

// The row sums of the quad (each lane held its own columns' part).
__device__ __forceinline__ float fa_quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}

// Writes this thread's part of a finished 16-row output tile: row half h of d-tile t is columns
// 8t + 2c, 8t + 2c + 1 of row (g + 8h), scaled by inv[h]; dst[h] is that row's output (nullptr:
// not written); NaN everywhere when `poison`.
template <int DT>
__device__ __forceinline__ void fa_store_rows(const float (&o)[DT][4], float* const (&dst)[2],
                                              const float (&inv)[2], uint32_t d, bool poison) {
    const uint32_t c2 = 2 * (threadIdx.x & 3);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float* row = dst[h];
        if (row == nullptr) continue;
#pragma unroll
        for (int t = 0; t < DT; ++t) {
            const uint32_t col = 8 * t + c2;
            float a = o[t][2 * h] * inv[h], b = o[t][2 * h + 1] * inv[h];
            if (poison) a = b = NAN;
            if (col + 1 < d && d % 2 == 0) {
                *reinterpret_cast<float2*>(row + col) = make_float2(a, b);
            } else {
                if (col < d) row[col] = a;
                if (col + 1 < d) row[col + 1] = b;
            }
        }
    }
}

// Which (sequence, tile) tile number `t` is, when sequence s owns ceil(q_len_s * group / BLOCK_M)
// tiles in order (q_len_s = cu[s + 1] - cu[s]; a decreasing pair owns none). Each warp scans 32
// sequences at a time with a shuffle prefix sum; every lane gets the answer. False past the end.
__device__ __forceinline__ bool fa_find_tile(const uint32_t* cu, uint32_t seqs, uint32_t group,
                                             uint32_t t, uint32_t& seq, uint32_t& tile) {
    const int lane = threadIdx.x & 31;
    uint32_t before = 0;
    for (uint32_t s0 = 0; s0 < seqs; s0 += 32) {
        const uint32_t s = s0 + lane;
        uint32_t n = 0;
        if (s < seqs) {
            const uint32_t a = cu[s], b = cu[s + 1];
            if (b > a)
                n = uint32_t((uint64_t(b - a) * group + FA_BLOCK_M - 1) / FA_BLOCK_M);
        }
        uint32_t incl = n;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += y;
        }
        const uint32_t total = __shfl_sync(0xffffffffu, incl, 31);
        if (t < before + total) {
            const unsigned hit = __ballot_sync(0xffffffffu, before + incl > t);
            const int at = __ffs(hit) - 1;
            seq = s0 + at;
            tile = t - before - __shfl_sync(0xffffffffu, incl - n, at);
            return true;
        }
        before += total;
    }
    return false;
}

// One prefill CTA's job: up to FA_BLOCK_M packed query rows of one sequence for one kv head.
// Packed row P = first + m (m = 0..63 in the tile) is query token P / group of the sequence,
// query head kv_head * group + P % group: the `group` query heads that share a kv head are
// computed together, so each K/V tile is read once per kv head.
struct FaPrefillJob {
    const float* q;      // [rows, heads, d]
    float* out;          // [rows, heads, d]
    uint32_t q_row0;     // the sequence's first query row
    uint32_t q_len;
    uint32_t kv_len;
    uint32_t first;      // first packed row of the tile
    uint32_t heads;
    uint32_t group;
    uint32_t kv_head;
    uint32_t d;
    float scale_log2;
    bool causal;
    bool poison;         // bad metadata: its rows get NaN and nothing more is read; q_len is
                         // still clamped so that those rows are in bounds
};

// The flash-attention loop of one prefill tile. K/V rows come from kbase/vbase + kv_off(j)
// (element offsets; < 0 for a row that cannot be read, which also sets *bad). Shared memory:
// ks, vs [FA_BLOCK_N][DP + 8] bf16 each, offs [2][FA_BLOCK_N], bad (an int, 0 on entry).
// Pipeline (one buffer each, loads overlapping math): K(j) and V(j) alternate so that V(j)
// streams in during S = Q K(j)^T and the softmax, and K(j + 1) during O += P V(j).
template <typename T, int DP, class KvOff>
__device__ __forceinline__ void fa_prefill(const FaPrefillJob& job, const T* kbase, const T* vbase,
                                           bool kv_vec, KvOff kv_off, bf16* ks, bf16* vs,
                                           long long (*offs)[FA_BLOCK_N], int* bad) {
    using Dm = FaDims<DP>;
    constexpr int LD = Dm::LD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint32_t d = job.d, group = job.group;
    if (d < DP) {  // padding columns must read as zeros
        fa_zero(ks, FA_BLOCK_N * LD);
        fa_zero(vs, FA_BLOCK_N * LD);
        __syncthreads();
    }

    // Q tile (f32 -> bf16) staged through the K buffer, then held in registers.
    const bool q_vec = d % 4 == 0 && aligned16(job.q);
    fa_load_rows<float, DP, FA_BLOCK_M>(ks, job.q, d, q_vec, [&](int m) -> long long {
        const uint32_t pr = job.first + uint32_t(m);
        const uint32_t i = pr / group;
        if (i >= job.q_len || job.poison) return -1;
        const uint32_t head = job.kv_head * group + pr % group;
        return (long long)((uint64_t(job.q_row0 + i) * job.heads + head) * d);
    });
    __syncthreads();
    uint32_t qf[Dm::KSTEPS][4];
    fa_load_q<DP>(qf, ks, warp * 16);

    // This thread's two rows (g, g + 8 of the warp's 16) and the keys each sees.
    const uint32_t ctx_before = job.kv_len - job.q_len;  // q_len <= kv_len unless poisoned
    uint32_t lim[2];
    float* dst[2];
    for (int h = 0; h < 2; ++h) {
        const uint32_t pr = job.first + uint32_t(warp * 16 + (lane >> 2) + 8 * h);
        const uint32_t i = pr / group;
        const bool valid = i < job.q_len;
        lim[h] = !valid || job.poison ? 0u : (job.causal ? ctx_before + i + 1 : job.kv_len);
        dst[h] = valid ? job.out + (uint64_t(job.q_row0 + i) * job.heads +
                                    job.kv_head * group + pr % group) * d
                       : nullptr;
    }
    // Keys the warp's rows and the whole tile see (rows grow with the packed index).
    const uint32_t warp_first = (job.first + uint32_t(warp) * 16) / group;
    const uint32_t warp_last = (job.first + uint32_t(warp) * 16 + 15) / group;
    const uint32_t tile_last = (job.first + FA_BLOCK_M - 1) / group;
    auto keys_for = [&](uint32_t i_last) -> uint32_t {
        if (job.poison || job.q_len == 0) return 0;
        const uint32_t i = min(i_last, job.q_len - 1);
        return job.causal ? ctx_before + i + 1 : job.kv_len;
    };
    const uint32_t warp_keys = warp_first < job.q_len ? keys_for(warp_last) : 0;
    const uint32_t tile_keys = keys_for(tile_last);
    const uint32_t n_tiles = (tile_keys + FA_BLOCK_N - 1) / FA_BLOCK_N;

    float o[Dm::DTILES][4];
#pragma unroll
    for (int t = 0; t < Dm::DTILES; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    auto fill_offs = [&](uint32_t tile, long long* dst_offs) {
        if (threadIdx.x < FA_BLOCK_N) {
            const uint32_t j = tile * FA_BLOCK_N + threadIdx.x;
            long long off = -1;
            if (j < tile_keys) {
                off = kv_off(j);
                if (off < 0) *bad = 1;
            }
            dst_offs[threadIdx.x] = off;
        }
    };
    __syncthreads();  // every warp has its Q fragments: the K buffer is free
    if (n_tiles > 0) fill_offs(0, offs[0]);
    __syncthreads();
    if (n_tiles > 0) {
        const long long* o0 = offs[0];
        fa_load_rows<T, DP, FA_BLOCK_N>(ks, kbase, d, kv_vec, [&](int r) { return o0[r]; });
        cp_async_commit();
    }
    for (uint32_t jt = 0; jt < n_tiles; ++jt) {
        const uint32_t j0 = jt * FA_BLOCK_N;
        const long long* cur = offs[jt & 1];
        cp_async_wait_all();
        __syncthreads();  // K(jt) is in; every warp is done with V(jt - 1)
        fa_load_rows<T, DP, FA_BLOCK_N>(vs, vbase, d, kv_vec, [&](int r) { return cur[r]; });
        cp_async_commit();
        if (jt + 1 < n_tiles) fill_offs(jt + 1, offs[(jt + 1) & 1]);
        const bool active = j0 < warp_keys;  // warp-uniform
        float s[FA_BLOCK_N / 8][4];
        if (active) {
            fa_qk<DP, FA_BLOCK_N / 8>(s, qf, ks, 0);
            fa_scale_mask<FA_BLOCK_N / 8>(s, job.scale_log2, j0, lim);
            fa_softmax<FA_BLOCK_N / 8, Dm::DTILES>(s, o, m, l);
        }
        cp_async_wait_all();
        __syncthreads();  // V(jt) is in; every warp is done with K(jt); offsets of jt + 1 visible
        if (jt + 1 < n_tiles) {
            const long long* nxt = offs[(jt + 1) & 1];
            fa_load_rows<T, DP, FA_BLOCK_N>(ks, kbase, d, kv_vec, [&](int r) { return nxt[r]; });
            cp_async_commit();
        }
        if (active) {
            uint32_t p[FA_BLOCK_N / 16][4];
            fa_p_frags<FA_BLOCK_N / 8>(p, s);
            fa_pv<DP, FA_BLOCK_N / 16>(o, p, vs, 0);
        }
    }
    __syncthreads();  // `bad` is final
    const bool poison = job.poison || *bad != 0;
    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float sum = fa_quad_sum(l[h]);
        inv[h] = sum > 0.0f ? 1.0f / sum : 0.0f;
    }
    fa_store_rows<Dm::DTILES>(o, dst, inv, d, poison);
}

}  // namespace kiln
