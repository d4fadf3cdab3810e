// Varlen attention over dense f32 sequences (CPU twin: src/cpu/varlen_attention.rs): encoders
// (BERT, CLIP, the Whisper encoder) and cross-attention. q [tq, heads, d], k, v [tk, kv_heads,
// d]; sequence s owns query rows cu_seqlens_q[s]..cu_seqlens_q[s + 1] and key rows
// cu_seqlens_k[s]..cu_seqlens_k[s + 1]; causal aligns its queries at the end of its keys.
//
// kiln_varlen_attention_d<DP>: the prefill core of flash_attention.cuh (tensor cores, bf16
//   operands rounded from f32 in shared memory, f32 accumulation and softmax state) with the
//   keys read from the dense tensors. grid = (ceil(tq * group / 64) + seqs, kv_heads),
//   block = 128; a CTA finds its (sequence, tile) by a prefix sum over cu_seqlens_q.
// Boundaries the host validated on the CPU are taken on trust, but a sequence whose keys run
// past tk or whose queries run past tq, or a causal one with more queries than keys, gets NaN
// rows instead of reads outside the buffers.
#include "attention_jobs.cuh"

namespace kiln {

template <int DP>
__device__ __forceinline__ void varlen_attention(const VarlenAttentionParams& p) {
    constexpr int LD = FaDims<DP>::LD;
    __shared__ __align__(16) bf16 ks[FA_BLOCK_N * LD];
    __shared__ __align__(16) bf16 vs[FA_BLOCK_N * LD];
    __shared__ long long offs[2][FA_BLOCK_N];
    __shared__ int bad;
    if (threadIdx.x == 0) bad = 0;
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
    fa_prefill<float, DP>(job, p.k, p.v, kv_vec, kv_off, ks, vs, offs, &bad);
}

}  // namespace kiln

using namespace kiln;

extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_varlen_attention_d64(VarlenAttentionParams p) { varlen_attention<64>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_varlen_attention_d80(VarlenAttentionParams p) { varlen_attention<80>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_varlen_attention_d96(VarlenAttentionParams p) { varlen_attention<96>(p); }
extern "C" __global__ void __launch_bounds__(FA_THREADS) kiln_varlen_attention_d128(VarlenAttentionParams p) { varlen_attention<128>(p); }
