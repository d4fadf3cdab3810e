// The params of the paged and varlen attention kernels and the prefill job of one CTA, shared
// by the mma.sync kernels (paged_attention.cu, varlen_attention.cu) and the sm_90a wgmma ones
// (attention_wgmma.cu), which take the same params and compute the same tiles.
#pragma once

#include "flash_attention.cuh"

namespace kiln {

struct PagedAttentionParams {
    const float* q;                // [rows, heads, head_dim]
    const void* k_cache;           // [num_blocks, kv_heads, block_size, head_dim]
    const void* v_cache;
    const uint32_t* block_tables;  // [seqs, max_blocks]
    const uint32_t* context_lens;  // [seqs]
    const uint32_t* cu_seqlens;    // [seqs + 1]
    float* out;                    // [rows, heads, head_dim]
    float* part_out;               // decode, splits > 1: [splits, seqs, heads, head_dim]
    float* part_lse;               // decode, splits > 1: [splits, seqs, heads]
    uint32_t rows;
    uint32_t seqs;
    uint32_t heads;
    uint32_t kv_heads;
    uint32_t head_dim;
    uint32_t block_size;
    uint32_t num_blocks;
    uint32_t max_blocks;
    uint32_t split_len;  // decode: keys per split, a multiple of 64
    uint32_t splits;     // decode: CTAs per (sequence, kv head)
    float scale;
    uint32_t causal;
};

struct VarlenAttentionParams {
    const float* q;             // [tq, heads, head_dim]
    const float* k;             // [tk, kv_heads, head_dim]
    const float* v;
    const uint32_t* cu_seqlens_q;  // [seqs + 1]
    const uint32_t* cu_seqlens_k;  // [seqs + 1]
    float* out;                 // [tq, heads, head_dim]
    uint32_t tq;
    uint32_t tk;
    uint32_t seqs;
    uint32_t heads;
    uint32_t kv_heads;
    uint32_t head_dim;
    float scale;
    uint32_t causal;
};

static_assert(sizeof(VarlenAttentionParams) == 80 && offsetof(VarlenAttentionParams, causal) == 76,
              "params layout");
// Layouts shared with src/cuda/params.rs (which asserts the same numbers).
static_assert(sizeof(PagedAttentionParams) == 120 && offsetof(PagedAttentionParams, causal) == 116,
              "params layout");

// Element offset of key j's row (kv head kv_head) in the cache, or -1 if its page is outside
// the table or the cache.
struct PagedKvOffset {
    const uint32_t* table;  // the sequence's row of block_tables
    uint32_t block_size;
    uint32_t max_blocks;
    uint32_t num_blocks;
    uint32_t kv_heads;
    uint32_t kv_head;
    uint32_t d;
    __device__ __forceinline__ long long operator()(uint32_t j) const {
        const uint32_t b = j / block_size;
        if (b >= max_blocks) return -1;
        const uint32_t page = table[b];
        if (page >= num_blocks) return -1;
        return (long long)(((uint64_t(page) * kv_heads + kv_head) * block_size + (j - b * block_size)) *
                           d);
    }
};

// The cache rows of sequence `seq`, kv head `kv_head`.
__device__ __forceinline__ PagedKvOffset paged_kv_offset(const PagedAttentionParams& p, uint32_t seq,
                                                         uint32_t kv_head) {
    return PagedKvOffset{p.block_tables + uint64_t(seq) * p.max_blocks, p.block_size, p.max_blocks,
                         p.num_blocks, p.kv_heads, kv_head, p.head_dim};
}

// Prefill tile `tile` of sequence `seq` of a paged batch, kv head blockIdx.y.
__device__ __forceinline__ FaPrefillJob paged_prefill_job(const PagedAttentionParams& p, uint32_t seq,
                                                          uint32_t tile) {
    const uint32_t q0 = p.cu_seqlens[seq], q_len = p.cu_seqlens[seq + 1] - q0;
    const uint32_t ctx = p.context_lens[seq];
    FaPrefillJob job;
    job.q = p.q;
    job.out = p.out;
    job.q_row0 = q0;
    job.q_len = q0 >= p.rows ? 0 : min(q_len, p.rows - q0);
    job.kv_len = ctx;
    job.first = tile * FA_BLOCK_M;
    job.heads = p.heads;
    job.group = p.heads / p.kv_heads;
    job.kv_head = blockIdx.y;
    job.d = p.head_dim;
    job.scale_log2 = p.scale * FA_LOG2E;
    job.causal = p.causal != 0;
    job.poison = q_len > ctx || job.q_len != q_len;
    return job;
}

// Tile `tile` of sequence `seq` of a dense varlen batch, kv head blockIdx.y; `k0` receives the
// sequence's first key row.
__device__ __forceinline__ FaPrefillJob varlen_prefill_job(const VarlenAttentionParams& p, uint32_t seq,
                                                           uint32_t tile, uint32_t& k0) {
    const uint32_t q0 = p.cu_seqlens_q[seq], q_len = p.cu_seqlens_q[seq + 1] - q0;
    k0 = p.cu_seqlens_k[seq];
    const uint32_t k1 = p.cu_seqlens_k[seq + 1];
    const bool keys_ok = k1 >= k0 && k1 <= p.tk;
    FaPrefillJob job;
    job.q = p.q;
    job.out = p.out;
    job.q_row0 = q0;
    job.q_len = q0 >= p.tq ? 0 : min(q_len, p.tq - q0);
    job.kv_len = keys_ok ? k1 - k0 : 0;
    job.first = tile * FA_BLOCK_M;
    job.heads = p.heads;
    job.group = p.heads / p.kv_heads;
    job.kv_head = blockIdx.y;
    job.d = p.head_dim;
    job.scale_log2 = p.scale * FA_LOG2E;
    job.causal = p.causal != 0;
    job.poison = !keys_ok || job.q_len != q_len || (job.causal && q_len > job.kv_len);
    return job;
}

}  // namespace kiln
