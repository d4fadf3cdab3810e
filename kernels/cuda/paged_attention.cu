// The paged KV cache on the GPU (CPU twin: src/cpu/paged_attention.rs): writing new keys and
// values into their slots, and attention of a varlen batch over its pages.
//
// Cache layout [num_blocks, kv_heads, block_size, head_dim] (f32 or bf16): the keys of one
// (page, kv head) are block_size * head_dim contiguous elements. Sequence s owns query rows
// cu_seqlens[s]..cu_seqlens[s + 1], context_lens[s] cached tokens (its new ones included) and
// pages block_tables[s][..]; its query row i sits at position context_len - q_len + i.
//
// kiln_reshape_and_cache_<T>: one thread per 16-byte chunk of a (token, kv head) row (grid-
//   stride), so a warp stores whole rows with coalesced 16-byte stores; a slot of u32::MAX, or
//   one past the cache, writes nothing (the CPU reports an out-of-range slot as an error before
//   writing; the device cannot, so it only never writes outside the cache). Scalar path when
//   head_dim is not a multiple of 16 bytes or a pointer is unaligned.
//   Launch: grid = min(ceil(chunks / 256), cap), block = 256.
//
// kiln_paged_decode_<T>_d<DP> (every sequence has one query row, row s = sequence s): flash-
//   decoding. grid = (splits, kv_heads * ceil(group / 16), seqs), block = 128. A CTA takes one
//   sequence, one kv head, up to 16 of the `group` = heads / kv_heads query heads that read that
//   kv head (the M rows of its mma tiles, so each K/V page is read once per kv head), and the
//   keys split * split_len..(split + 1) * split_len of the context. K and V tiles of 64 keys go to
//   shared memory (cp.async for bf16 caches; f32 is rounded to bf16 on the way); each warp takes
//   16 keys of a tile with its own online softmax, and the 4 warps merge in shared memory at the
//   end. With one split the CTA writes `out`; with more it writes its normalised partial output
//   and log2-sum-exp to part_out / part_lse and kiln_attention_combine_f32 merges them.
//
// kiln_paged_prefill_<T>_d<DP> (any batch: prefill, chunked prefill, prefix hits, mixed with
//   decode rows): flash-attention over the pages (flash_attention.cuh). grid = (ceil(rows *
//   group / 64) + seqs, kv_heads), block = 128; a CTA finds its (sequence, tile) by a prefix sum
//   over cu_seqlens (tiles beyond the last are idle) and computes 64 packed (token, query head)
//   rows of one kv head, tiles taken last-first so the longest causal tiles start early.
//
// kiln_attention_combine_f32: out = sum_s 2^(lse_s - M) part_s / sum_s 2^(lse_s - M) with
//   M = max lse; one warp per (row, head); grid = ceil(rows * heads / 4), block = 128.
//
// Metadata the host validated on the CPU is taken on trust for speed, but a page index outside
// the cache or the table, q_len > context_len, or (decode) a sequence without exactly one query
// row makes the rows concerned NaN instead of reading outside the buffers.
#include "attention_jobs.cuh"

namespace kiln {

struct ReshapeAndCacheParams {
    const void* src;        // [tokens, kv_heads, head_dim]
    void* cache;            // [num_blocks, kv_heads, block_size, head_dim]
    const uint32_t* slots;  // [tokens]
    uint64_t tokens;
    uint32_t kv_heads;
    uint32_t head_dim;
    uint32_t block_size;
    uint32_t num_blocks;
};


struct AttentionCombineParams {
    const float* part_out;  // [splits, rows, heads, head_dim]
    const float* part_lse;  // [splits, rows, heads]
    float* out;             // [rows, heads, head_dim]
    uint32_t rows;
    uint32_t heads;
    uint32_t head_dim;
    uint32_t splits;
};

// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(ReshapeAndCacheParams) == 48 && offsetof(ReshapeAndCacheParams, num_blocks) == 44,
              "params layout");
static_assert(sizeof(AttentionCombineParams) == 40 && offsetof(AttentionCombineParams, splits) == 36,
              "params layout");

constexpr uint32_t NO_SLOT = 0xffffffffu;

template <typename T>
__device__ __forceinline__ void reshape_and_cache(const ReshapeAndCacheParams& p) {
    const T* src = static_cast<const T*>(p.src);
    T* cache = static_cast<T*>(p.cache);
    constexpr uint32_t W = Width<T>::N;
    const uint32_t d = p.head_dim, kvh = p.kv_heads, bs = p.block_size;
    const uint64_t slots_total = uint64_t(p.num_blocks) * bs;
    const bool vec = d % W == 0 && aligned16(src) && aligned16(cache);
    const uint32_t unit = vec ? W : 1;
    const uint32_t per_row = d / unit;
    // The launcher keeps tokens * kv_heads * head_dim below 2^32.
    const uint32_t n = uint32_t(p.tokens) * kvh * per_row;
    for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const uint32_t row = i / per_row;  // (token, kv head)
        const uint32_t col = (i - row * per_row) * unit;
        const uint32_t tok = row / kvh, h = row - tok * kvh;
        const uint32_t slot = p.slots[tok];
        if (slot == NO_SLOT || slot >= slots_total) continue;
        const uint64_t to = ((uint64_t(slot / bs) * kvh + h) * bs + slot % bs) * d + col;
        const uint64_t from = uint64_t(row) * d + col;
        if (vec)
            *reinterpret_cast<uint4*>(cache + to) = *reinterpret_cast<const uint4*>(src + from);
        else
            cache[to] = src[from];
    }
}

template <typename T, int DP>
__device__ __forceinline__ void paged_prefill(const PagedAttentionParams& p) {
    constexpr int LD = FaDims<DP>::LD;
    __shared__ __align__(16) bf16 ks[FA_BLOCK_N * LD];
    __shared__ __align__(16) bf16 vs[FA_BLOCK_N * LD];
    __shared__ long long offs[2][FA_BLOCK_N];
    __shared__ int bad;
    if (threadIdx.x == 0) bad = 0;
    const uint32_t group = p.heads / p.kv_heads;
    uint32_t seq, tile;
    // Same answer in every warp: the whole CTA returns or none of it does.
    if (!fa_find_tile(p.cu_seqlens, p.seqs, group, gridDim.x - 1 - blockIdx.x, seq, tile)) return;
    const FaPrefillJob job = paged_prefill_job(p, seq, tile);
    const PagedKvOffset kv = paged_kv_offset(p, seq, blockIdx.y);
    const T* kc = static_cast<const T*>(p.k_cache);
    const T* vc = static_cast<const T*>(p.v_cache);
    const bool kv_vec = p.head_dim % Width<T>::N == 0 && aligned16(kc) && aligned16(vc);
    fa_prefill<T, DP>(job, kc, vc, kv_vec, kv, ks, vs, offs, &bad);
}

template <typename T, int DP>
__device__ __forceinline__ void paged_decode(const PagedAttentionParams& p) {
    using Dm = FaDims<DP>;
    constexpr int LD = Dm::LD;
    constexpr int QROWS = 16;        // query heads per CTA (one m16 tile)
    constexpr int OLD = DP + 4;      // f32 row stride of the warps' partial outputs
    constexpr int WARPS = FA_THREADS / 32;
    __shared__ __align__(16) bf16 qs[QROWS * LD];
    __shared__ __align__(16) bf16 kv[2 * FA_BLOCK_N * LD];  // K tile, V tile; then the merge
    __shared__ long long offs[2][FA_BLOCK_N];
    __shared__ float sm_m[WARPS][QROWS], sm_l[WARPS][QROWS];
    __shared__ int bad;
    static_assert(WARPS * QROWS * OLD * sizeof(float) <= sizeof(kv), "merge buffer fits");
    bf16* ks = kv;
    bf16* vs = kv + FA_BLOCK_N * LD;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint32_t group = p.heads / p.kv_heads;
    const uint32_t chunks = (group + QROWS - 1) / QROWS;
    const uint32_t seq = blockIdx.z, kvh = blockIdx.y / chunks;
    const uint32_t h0 = (blockIdx.y - kvh * chunks) * QROWS;  // first query head of the group
    const uint32_t split = blockIdx.x;
    const uint32_t d = p.head_dim;
    if (threadIdx.x == 0) bad = 0;
    const uint32_t ctx = p.context_lens[seq];
    const bool poison = p.cu_seqlens[seq] != seq || p.cu_seqlens[seq + 1] != seq + 1 || ctx == 0;
    const uint32_t kbeg = split * p.split_len;
    const uint32_t kend = poison ? kbeg : min(ctx, kbeg + p.split_len);
    const uint32_t n_tiles = kend > kbeg ? (kend - kbeg + FA_BLOCK_N - 1) / FA_BLOCK_N : 0;
    const uint32_t head_base = kvh * group + h0;  // query head of tile row 0
    const uint32_t rows_here = min(uint32_t(QROWS), group - h0);

    if (d < DP) {
        fa_zero(qs, QROWS * LD);
        fa_zero(kv, 2 * FA_BLOCK_N * LD);
        __syncthreads();
    }
    const bool q_vec = d % 4 == 0 && aligned16(p.q);
    fa_load_rows<float, DP, QROWS>(qs, p.q, d, q_vec, [&](int r) -> long long {
        if (uint32_t(r) >= rows_here) return -1;
        return (long long)((uint64_t(seq) * p.heads + head_base + r) * d);
    });
    const PagedKvOffset kvo = paged_kv_offset(p, seq, kvh);
    auto fill_offs = [&](uint32_t jt, long long* o) {
        if (threadIdx.x < FA_BLOCK_N) {
            const uint32_t j = kbeg + jt * FA_BLOCK_N + threadIdx.x;
            long long off = -1;
            if (j < kend) {
                off = kvo(j);
                if (off < 0) bad = 1;
            }
            o[threadIdx.x] = off;
        }
    };
    if (n_tiles > 0) fill_offs(0, offs[0]);
    __syncthreads();
    uint32_t qf[Dm::KSTEPS][4];
    fa_load_q<DP>(qf, qs, 0);  // every warp: the same 16 query heads

    const T* kc = static_cast<const T*>(p.k_cache);
    const T* vc = static_cast<const T*>(p.v_cache);
    const bool kv_vec = d % Width<T>::N == 0 && aligned16(kc) && aligned16(vc);
    const float scale_log2 = p.scale * FA_LOG2E;
    const uint32_t lim[2] = {kend, kend};
    float o[Dm::DTILES][4];
#pragma unroll
    for (int t = 0; t < Dm::DTILES; ++t) o[t][0] = o[t][1] = o[t][2] = o[t][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    for (uint32_t jt = 0; jt < n_tiles; ++jt) {
        const long long* cur = offs[jt & 1];
        fa_load_rows<T, DP, FA_BLOCK_N>(ks, kc, d, kv_vec, [&](int r) { return cur[r]; });
        fa_load_rows<T, DP, FA_BLOCK_N>(vs, vc, d, kv_vec, [&](int r) { return cur[r]; });
        cp_async_commit();
        if (jt + 1 < n_tiles) fill_offs(jt + 1, offs[(jt + 1) & 1]);
        cp_async_wait_all();
        __syncthreads();  // the tile is in shared memory
        const uint32_t j0 = kbeg + jt * FA_BLOCK_N + warp * 16;
        if (j0 < kend) {  // warp-uniform
            float s[2][4];
            fa_qk<DP, 2>(s, qf, ks, warp * 16);
            fa_scale_mask<2>(s, scale_log2, j0, lim);
            fa_softmax<2, Dm::DTILES>(s, o, m, l);
            uint32_t pf[1][4];
            fa_p_frags<2>(pf, s);
            fa_pv<DP, 1>(o, pf, vs, warp * 16);
        }
        __syncthreads();  // the tile is consumed
    }

    // Merge the warps: each leaves (max, sum, unnormalised output) of its keys per row.
    float* mo = reinterpret_cast<float*>(kv);  // [WARPS][QROWS][OLD]
    const int g = lane >> 2, c2 = 2 * (lane & 3);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float sum = fa_quad_sum(l[h]);
        const int r = g + 8 * h;
        if ((lane & 3) == 0) {
            sm_m[warp][r] = m[h];
            sm_l[warp][r] = sum;
        }
#pragma unroll
        for (int t = 0; t < Dm::DTILES; ++t)
            *reinterpret_cast<float2*>(mo + (warp * QROWS + r) * OLD + 8 * t + c2) =
                make_float2(o[t][2 * h], o[t][2 * h + 1]);
    }
    __syncthreads();
    const bool nan_out = poison || bad != 0;
    for (uint32_t e = threadIdx.x; e < QROWS * uint32_t(DP); e += FA_THREADS) {
        const uint32_t r = e / DP, c = e - r * DP;
        if (r >= rows_here || c >= d) continue;
        float top = -INFINITY;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) top = fmaxf(top, sm_m[w][r]);
        float val = 0.0f, lse = -INFINITY;
        if (top != -INFINITY) {
            float num = 0.0f, den = 0.0f;
#pragma unroll
            for (int w = 0; w < WARPS; ++w) {
                if (sm_m[w][r] == -INFINITY) continue;
                const float wt = exp2f(sm_m[w][r] - top);
                num = fmaf(wt, mo[(w * QROWS + r) * OLD + c], num);
                den = fmaf(wt, sm_l[w][r], den);
            }
            val = num / den;
            lse = top + log2f(den);
        }
        const uint64_t item = uint64_t(seq) * p.heads + head_base + r;
        if (nan_out) {
            val = NAN;
            lse = 0.0f;
        }
        if (p.splits <= 1) {
            p.out[item * d + c] = val;
        } else {
            const uint64_t at = uint64_t(split) * p.seqs * p.heads + item;
            p.part_out[at * d + c] = val;
            if (c == 0) p.part_lse[at] = lse;
        }
    }
}

__device__ __forceinline__ void attention_combine(const AttentionCombineParams& p) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t items = uint64_t(p.rows) * p.heads;
    const uint64_t item = uint64_t(blockIdx.x) * (blockDim.x >> 5) + warp;
    if (item >= items) return;
    float top = -INFINITY;
    for (uint32_t s = lane; s < p.splits; s += 32) top = fmaxf(top, p.part_lse[s * items + item]);
    top = warp_max(top);
    float* o = p.out + item * p.head_dim;
    if (top == -INFINITY) {
        for (uint32_t c = lane; c < p.head_dim; c += 32) o[c] = 0.0f;
        return;
    }
    float den = 0.0f;
    for (uint32_t s = lane; s < p.splits; s += 32) den += exp2f(p.part_lse[s * items + item] - top);
    den = warp_sum(den);
    for (uint32_t c = lane; c < p.head_dim; c += 32) {
        float num = 0.0f;
        for (uint32_t s = 0; s < p.splits; ++s) {
            const float w = exp2f(p.part_lse[s * items + item] - top);
            num = fmaf(w, p.part_out[(s * items + item) * p.head_dim + c], num);
        }
        o[c] = num / den;
    }
}

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void __launch_bounds__(256) kiln_reshape_and_cache_f32(ReshapeAndCacheParams p) {
    reshape_and_cache<float>(p);
}
extern "C" __global__ void __launch_bounds__(256) kiln_reshape_and_cache_bf16(ReshapeAndCacheParams p) {
    reshape_and_cache<bf16>(p);
}

extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_decode_f32_d64(PagedAttentionParams p) { paged_decode<float, 64>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_decode_f32_d80(PagedAttentionParams p) { paged_decode<float, 80>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_decode_f32_d96(PagedAttentionParams p) { paged_decode<float, 96>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_decode_f32_d128(PagedAttentionParams p) { paged_decode<float, 128>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_decode_bf16_d64(PagedAttentionParams p) { paged_decode<bf16, 64>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_decode_bf16_d80(PagedAttentionParams p) { paged_decode<bf16, 80>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_decode_bf16_d96(PagedAttentionParams p) { paged_decode<bf16, 96>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_decode_bf16_d128(PagedAttentionParams p) { paged_decode<bf16, 128>(p); }

extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_prefill_f32_d64(PagedAttentionParams p) { paged_prefill<float, 64>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_prefill_f32_d80(PagedAttentionParams p) { paged_prefill<float, 80>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_prefill_f32_d96(PagedAttentionParams p) { paged_prefill<float, 96>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_prefill_f32_d128(PagedAttentionParams p) { paged_prefill<float, 128>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_prefill_bf16_d64(PagedAttentionParams p) { paged_prefill<bf16, 64>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_prefill_bf16_d80(PagedAttentionParams p) { paged_prefill<bf16, 80>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_prefill_bf16_d96(PagedAttentionParams p) { paged_prefill<bf16, 96>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_paged_prefill_bf16_d128(PagedAttentionParams p) { paged_prefill<bf16, 128>(p); }

extern "C" __global__ void __launch_bounds__(128) kiln_attention_combine_f32(AttentionCombineParams p) {
    attention_combine(p);
}
