// Flash-attention prefill on sm_90a tensor cores (wgmma): the same ops, params, tiles and CPU
// twins as the mma.sync kernels (paged_attention.cu `kiln_paged_prefill_*`, varlen_attention.cu
// `kiln_varlen_attention_*`), with both matrix products issued as warpgroup-wide wgmma.mma_async.
// The body exists only in the sm_90a image (__CUDA_ARCH_FEAT_SM90_ALL); the sm_80 / sm_89
// images hold a stub that traps, and the launcher (engine/src/backend/cuda/ops_paged.rs,
// `AttnVariant`) selects these kernels only on compute capability 9.0.
//
// kiln_attn_wgmma_paged_bf16_d<DP> (PagedAttentionParams, bf16 caches: prefill, chunked prefill
//   and prefix hits, any batch the general prefill kernel takes) and
// kiln_attn_wgmma_varlen_d<DP> (VarlenAttentionParams, dense f32 K/V rounded to bf16 on the way
//   into shared memory). DP = 64, 80, 96, 128 (head_dim rounded up, zero columns as before).
//
// A CTA is one warpgroup (128 threads) and owns 64 packed query rows of one sequence and one kv
// head (FaPrefillJob, fa_find_tile: the same grid as the mma.sync kernels,
// (ceil(rows * group / 64) + seqs, kv_heads)). Per K/V tile of 64 keys:
//   S (64 x 64, f32, registers) = Q K^T    wgmma m64n64k16, A = Q and B = K from shared memory
//                                          (K-major, 128B swizzle), DP / 16 k-steps;
//   masking, online softmax (f32, log2 domain) on the accumulators: the helpers of
//   flash_attention.cuh, since the wgmma accumulator of warp w is the m16n8 C fragment of rows
//   16w..16w+15, exactly what the mma.sync kernels hold per warp;
//   P (bf16) re-packed in registers as the A operand (fa_p_frags, no data movement);
//   O (64 x DP, f32, registers) += P V      wgmma m64n{DP}k16, A = P from registers, B = V from
//                                          shared memory, MN-major (V rows are keys, head_dim
//                                          contiguous: imm-trans-b = 1), 4 k-steps of 16 keys.
// Shared memory (dynamic, 1024-byte aligned): Q [64 rows] and two stages each of K and V [64
// keys], every one DB = ceil(DP / 64) blocks of [64 rows][64 columns] bf16, 128 bytes a row
// with 16-byte chunk c of row r at c ^ (r % 8) (the 128B-swizzle atom; wgmma.cuh explains the
// descriptors); 5 * DB * 8 KiB + the key offsets: 81 KiB at DP 128 (two CTAs per SM), 41 KiB
// at DP 64.
// Pipeline: cp.async (bf16) or 16-byte loads rounded to bf16 (f32), two stages: the loads of
// tile j + 1 are in flight while tile j is computed; the key offsets (page lookups) of tile
// j + 2 are computed meanwhile. Each thread fences its generic-proxy writes
// (fence.proxy.async.shared::cta) before the barrier that hands the stage to the wgmmas.
// Bad metadata (a page outside the table or cache, q_len > context) makes the rows concerned
// NaN, never a read outside the buffers, exactly as in the mma.sync kernels.
#include "attention_jobs.cuh"
#include "wgmma.cuh"

namespace kiln {

template <int DP> struct WgDims {
    static_assert(DP % 16 == 0 && DP >= 64 && DP <= 128, "head_dim tile");
    static constexpr int DB = (DP + 63) / 64;        // 64-column blocks of a row
    static constexpr int TILE = DB * 64 * 64;        // bf16 elements of a 64-row tile
    static constexpr int TILE_BYTES = TILE * 2;
    static constexpr int BLOCK_BYTES = 64 * 128;     // one 64-row x 64-column block
    // Q, K[2], V[2], offsets [2][64], `bad`, and slack to align the tiles to 1024 bytes.
    static constexpr int SMEM = 5 * TILE_BYTES + 2 * FA_BLOCK_N * 8 + 16 + 1024;
};
static_assert(FA_BLOCK_M == 64 && FA_BLOCK_N == 64, "a warpgroup's 64 rows, 64-key tiles");
// Must match ATTN_WGMMA_SMEM in engine/src/backend/cuda/ops_paged.rs.
static_assert(WgDims<128>::SMEM == 83984 && WgDims<96>::SMEM == 83984 && WgDims<80>::SMEM == 83984 &&
                  WgDims<64>::SMEM == 43024,
              "shared memory size");

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// Element index of (row r, column c) in a swizzled tile of 64 rows.
__device__ __forceinline__ int wg_at(int r, int c) {
    return ((c >> 6) * 64 + r) * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3) + (c & 7);
}

template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// fa_load_rows for the swizzled layout: 64 rows of d (<= DP) elements into `dst`, row r from
// src + off(r) or zeros when off(r) < 0; columns d..DP untouched (see fa_load_rows_to).
template <typename T, int DP, class Off>
__device__ __forceinline__ void wg_load_rows(bf16* dst, const T* src, uint32_t d, bool vec, Off off) {
    fa_load_rows_to<T, DP, 64>(dst, src, d, vec, off, [](int r, int col) { return wg_at(r, col); });
}

// O += P V over one 64-key tile: 4 k-steps of 16 keys; V's k-step j starts 16 rows (2 swizzle
// atoms, 2048 bytes) further, its 64-column blocks are BLOCK_BYTES apart.
template <int DP>
__device__ __forceinline__ void wg_pv(float (&o)[DP / 8][4], const uint32_t (&p)[4][4], uint32_t vs) {
    constexpr uint32_t LBO = WgDims<DP>::BLOCK_BYTES;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const uint64_t desc = sw128_desc_mn(vs + j * 2048, LBO);
        if constexpr (DP == 64) wgmma_rs_m64n64k16(o, p[j], desc);
        else if constexpr (DP == 80) wgmma_rs_m64n80k16(o, p[j], desc);
        else if constexpr (DP == 96) wgmma_rs_m64n96k16(o, p[j], desc);
        else wgmma_rs_m64n128k16(o, p[j], desc);
    }
}

// S = Q K^T: DP / 16 k-steps; k-step ks is 32 bytes into 64-column block ks / 4 of each row.
template <int DP>
__device__ __forceinline__ void wg_qk(float (&s)[8][4], uint32_t qs, uint32_t ks) {
    constexpr uint32_t BLOCK = WgDims<DP>::BLOCK_BYTES;
#pragma unroll
    for (int k = 0; k < DP / 16; ++k) {
        const uint32_t at = (k / 4) * BLOCK + (k % 4) * 32;
        wgmma_ss_m64n64k16(s, sw128_desc(qs + at), sw128_desc(ks + at), k > 0 ? 1 : 0);
    }
}

// The flash-attention loop of one prefill tile (the wgmma counterpart of fa_prefill): K/V rows
// from kbase / vbase + kv_off(j), element offsets, < 0 for a row that cannot be read (which
// also makes the tile's rows NaN).
template <typename T, int DP, class KvOff>
__device__ __forceinline__ void wg_prefill(const FaPrefillJob& job, const T* kbase, const T* vbase,
                                           bool kv_vec, KvOff kv_off, uint8_t* smem_raw) {
    using Dm = WgDims<DP>;
    constexpr int TILE = Dm::TILE;
    const uint32_t raw = smem_addr(smem_raw);
    bf16* qs = reinterpret_cast<bf16*>(smem_raw + (((raw + 1023u) & ~1023u) - raw));
    bf16* ks = qs + TILE;      // [2][TILE]
    bf16* vs = ks + 2 * TILE;  // [2][TILE]
    long long (*offs)[FA_BLOCK_N] = reinterpret_cast<long long (*)[FA_BLOCK_N]>(vs + 2 * TILE);
    int* bad = reinterpret_cast<int*>(offs + 2);
    const uint32_t qs_a = smem_addr(qs), ks_a = smem_addr(ks), vs_a = smem_addr(vs);

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint32_t d = job.d, group = job.group;
    if (threadIdx.x == 0) *bad = 0;
    if (d < DP) fa_zero(qs, 5 * TILE);  // padding columns must read as zeros (Q, K, V)
    __syncthreads();

    const bool q_vec = d % 4 == 0 && aligned16(job.q);
    wg_load_rows<float, DP>(qs, job.q, d, q_vec, [&](int m) -> long long {
        const uint32_t pr = job.first + uint32_t(m);
        const uint32_t i = pr / group;
        if (i >= job.q_len || job.poison) return -1;
        const uint32_t head = job.kv_head * group + pr % group;
        return (long long)((uint64_t(job.q_row0 + i) * job.heads + head) * d);
    });

    // This thread's two rows (g, g + 8 of its warp's 16) and the keys each sees.
    const uint32_t ctx_before = job.kv_len - job.q_len;  // q_len <= kv_len unless poisoned
    uint32_t lim[2];
    float* dst[2];
    for (int h = 0; h < 2; ++h) {
        const uint32_t pr = job.first + uint32_t(warp * 16 + (lane >> 2) + 8 * h);
        const uint32_t i = pr / group;
        const bool valid = i < job.q_len;
        lim[h] = !valid || job.poison ? 0u : (job.causal ? ctx_before + i + 1 : job.kv_len);
        dst[h] = valid ? job.out + (uint64_t(job.q_row0 + i) * job.heads + job.kv_head * group + pr % group) * d
                       : nullptr;
    }
    const uint32_t lim_min = min(lim[0], lim[1]);
    // Keys the tile's last row sees (rows grow with the packed index).
    uint32_t tile_keys = 0;
    if (!job.poison && job.q_len > 0) {
        const uint32_t i = min((job.first + FA_BLOCK_M - 1) / group, job.q_len - 1);
        tile_keys = job.causal ? ctx_before + i + 1 : job.kv_len;
    }
    const uint32_t n_tiles = (tile_keys + FA_BLOCK_N - 1) / FA_BLOCK_N;

    auto fill_offs = [&](uint32_t tile, long long* o) {
        if (threadIdx.x < FA_BLOCK_N) {
            const uint32_t j = tile * FA_BLOCK_N + threadIdx.x;
            long long off = -1;
            if (j < tile_keys) {
                off = kv_off(j);
                if (off < 0) *bad = 1;
            }
            o[threadIdx.x] = off;
        }
    };
    auto load_kv = [&](uint32_t stage) {
        const long long* rows = offs[stage];
        wg_load_rows<T, DP>(ks + stage * TILE, kbase, d, kv_vec, [&](int r) { return rows[r]; });
        wg_load_rows<T, DP>(vs + stage * TILE, vbase, d, kv_vec, [&](int r) { return rows[r]; });
    };

    float o[DP / 8][4];
#pragma unroll
    for (int t = 0; t < DP / 8; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float s[8][4];  // scores of the current tile (the first k-step overwrites them)
#pragma unroll
    for (int n = 0; n < 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;

    if (n_tiles > 0) fill_offs(0, offs[0]);
    if (n_tiles > 1) fill_offs(1, offs[1]);
    fence_proxy_async_smem();  // Q's stores, before the wgmmas read it
    __syncthreads();           // offsets 0 and 1 visible
    if (n_tiles > 0) load_kv(0);
    cp_async_commit();

    for (uint32_t jt = 0; jt < n_tiles; ++jt) {
        const uint32_t stage = jt & 1, j0 = jt * FA_BLOCK_N;
        if (jt + 1 < n_tiles) load_kv(stage ^ 1);  // the stage tile jt - 1 used, released below
        cp_async_commit();                          // (an empty group at the end keeps the count)
        cp_async_wait<1>();                         // this thread's copies of tile jt are in
        fence_proxy_async_smem();
        __syncthreads();  // everyone's are: K(jt), V(jt) visible to the wgmmas
        // Every thread has issued the loads of tile jt: its offsets' slot takes tile jt + 2
        // (read by the loads of the next iteration, after the barrier at the end of this one).
        if (jt + 2 < n_tiles) fill_offs(jt + 2, offs[stage]);

        wgmma_fence();
        wg_qk<DP>(s, qs_a, ks_a + stage * Dm::TILE_BYTES);
        wgmma_commit();
        wgmma_wait<0>();
#pragma unroll
        for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) fence_operand(s[n][e]);

        if (lim_min >= j0 + FA_BLOCK_N) {  // every key of the tile is visible to both rows
#pragma unroll
            for (int n = 0; n < 8; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[n][e] *= job.scale_log2;
        } else {
            fa_scale_mask<8>(s, job.scale_log2, j0, lim);
        }
        fa_softmax<8, DP / 8>(s, o, m, l);
        uint32_t p[4][4];
        fa_p_frags<8>(p, s);

        wgmma_fence();  // o and p were written by ordinary instructions
        wg_pv<DP>(o, p, vs_a + stage * Dm::TILE_BYTES);
        wgmma_commit();
        wgmma_wait<0>();
#pragma unroll
        for (int t = 0; t < DP / 8; ++t)
#pragma unroll
            for (int e = 0; e < 4; ++e) fence_operand(o[t][e]);
        __syncthreads();  // every warp is done with this stage before it is refilled
    }
    cp_async_wait<0>();
    __syncthreads();  // `bad` is final
    const bool poison = job.poison || *bad != 0;
    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float sum = fa_quad_sum(l[h]);
        inv[h] = sum > 0.0f ? 1.0f / sum : 0.0f;
    }
    fa_store_rows<DP / 8>(o, dst, inv, d, poison);
}

template <int DP> __device__ __forceinline__ void wg_paged_prefill(const PagedAttentionParams& p) {
    extern __shared__ uint8_t smem_attn[];
    const uint32_t group = p.heads / p.kv_heads;
    uint32_t seq, tile;
    // Same answer in every warp: the whole CTA returns or none of it does.
    if (!fa_find_tile(p.cu_seqlens, p.seqs, group, gridDim.x - 1 - blockIdx.x, seq, tile)) return;
    const FaPrefillJob job = paged_prefill_job(p, seq, tile);
    const PagedKvOffset kv = paged_kv_offset(p, seq, blockIdx.y);
    const bf16* kc = static_cast<const bf16*>(p.k_cache);
    const bf16* vc = static_cast<const bf16*>(p.v_cache);
    const bool kv_vec = p.head_dim % 8 == 0 && aligned16(kc) && aligned16(vc);
    wg_prefill<bf16, DP>(job, kc, vc, kv_vec, kv, smem_attn);
}

template <int DP> __device__ __forceinline__ void wg_varlen(const VarlenAttentionParams& p) {
    extern __shared__ uint8_t smem_attn[];
    const uint32_t group = p.heads / p.kv_heads;
    uint32_t seq, tile;
    if (!fa_find_tile(p.cu_seqlens_q, p.seqs, group, gridDim.x - 1 - blockIdx.x, seq, tile)) return;
    uint32_t k0;
    const FaPrefillJob job = varlen_prefill_job(p, seq, tile, k0);
    const uint32_t kv_heads = p.kv_heads, kvh = blockIdx.y, d = p.head_dim;
    auto kv_off = [=](uint32_t j) -> long long {
        return (long long)((uint64_t(k0 + j) * kv_heads + kvh) * d);
    };
    const bool kv_vec = d % 4 == 0 && aligned16(p.k) && aligned16(p.v);
    wg_prefill<float, DP>(job, p.k, p.v, kv_vec, kv_off, smem_attn);
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace kiln

using namespace kiln;

// Not an sm_90a image: the launcher never selects these kernels there.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KILN_WG_BODY(call) call
#else
#define KILN_WG_BODY(call) __trap()
#endif

extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_attn_wgmma_paged_bf16_d64(PagedAttentionParams p) { KILN_WG_BODY(wg_paged_prefill<64>(p)); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_attn_wgmma_paged_bf16_d80(PagedAttentionParams p) { KILN_WG_BODY(wg_paged_prefill<80>(p)); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_attn_wgmma_paged_bf16_d96(PagedAttentionParams p) { KILN_WG_BODY(wg_paged_prefill<96>(p)); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_attn_wgmma_paged_bf16_d128(PagedAttentionParams p) { KILN_WG_BODY(wg_paged_prefill<128>(p)); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_attn_wgmma_varlen_d64(VarlenAttentionParams p) { KILN_WG_BODY(wg_varlen<64>(p)); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_attn_wgmma_varlen_d80(VarlenAttentionParams p) { KILN_WG_BODY(wg_varlen<80>(p)); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_attn_wgmma_varlen_d96(VarlenAttentionParams p) { KILN_WG_BODY(wg_varlen<96>(p)); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_attn_wgmma_varlen_d128(VarlenAttentionParams p) { KILN_WG_BODY(wg_varlen<128>(p)); }
