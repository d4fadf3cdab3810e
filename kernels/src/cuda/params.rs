//! The kernels' parameter structs as the launcher builds them: `#[repr(C)]` twins of the
//! structs in `cuda/*.cu`, passed by value as a kernel's only argument. Device pointers are
//! `u64` (`CUdeviceptr`). Each `.cu` file `static_assert`s the size and the offset of the last
//! field of its structs to the values asserted here, so a layout drift fails one of the two
//! builds. Launch shapes are documented at the top of each `.cu` file.

use core::mem::{offset_of, size_of};

/// `kiln_{add,mul}_{f32,bf16}`: out = a op b over `n` elements. `out` may alias `a` or `b`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BinaryParams {
    pub a: u64,
    pub b: u64,
    pub out: u64,
    pub n: u64,
}

/// `kiln_scale_{f32,bf16}`: out = a * scale.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScaleParams {
    pub a: u64,
    pub out: u64,
    pub n: u64,
    pub scale: f32,
}

/// `kiln_silu_mul_{f32,bf16}`: out = silu(gate) * up.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SiluMulParams {
    pub gate: u64,
    pub up: u64,
    pub out: u64,
    pub n: u64,
}

/// `kiln_gelu_erf_*`, `kiln_gelu_tanh_*`, `kiln_quick_gelu_*`: out = f(x).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnaryParams {
    pub x: u64,
    pub out: u64,
    pub n: u64,
}

/// `kiln_cast_<from>_<to>`: out = x converted, round to nearest even. No aliasing.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CastParams {
    pub x: u64,
    pub out: u64,
    pub n: u64,
}

/// `kiln_rmsnorm_{f32,bf16}`: x, out [rows, cols]; w [cols].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RmsNormParams {
    pub x: u64,
    pub w: u64,
    pub out: u64,
    pub rows: u64,
    pub cols: u32,
    pub eps: f32,
}

/// `kiln_residual_rmsnorm_{f32,bf16}`: sum = x + residual; out = rmsnorm(sum) * w.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ResidualRmsNormParams {
    pub x: u64,
    pub residual: u64,
    pub w: u64,
    pub sum: u64,
    pub out: u64,
    pub rows: u64,
    pub cols: u32,
    pub eps: f32,
}

/// `kiln_layernorm_{f32,bf16}`: `b` = 0 for no bias.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LayerNormParams {
    pub x: u64,
    pub w: u64,
    pub b: u64,
    pub out: u64,
    pub rows: u64,
    pub cols: u32,
    pub eps: f32,
}

/// `kiln_softmax_f32`: `causal` is 0 or 1.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxParams {
    pub x: u64,
    pub out: u64,
    pub rows: u64,
    pub cols: u32,
    pub scale: f32,
    pub causal: u32,
}

/// `kiln_argmax_f32`: out is `u32` [rows].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ArgmaxParams {
    pub x: u64,
    pub out: u64,
    pub rows: u64,
    pub cols: u32,
}

/// One row of `kiln_sample_f32` (an array of these in device memory): `top_k` 0 is off,
/// `temperature` not > 0 or `top_k` 1 is greedy, `uniform` in [0, 1).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleRowParams {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub pad: u32,
    pub uniform: f64,
}

/// `kiln_sample_f32`: logits f32 [rows, vocab] -> out u32 [rows]; `row_params` points at
/// `rows` [`SampleRowParams`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleParams {
    pub logits: u64,
    pub row_params: u64,
    pub out: u64,
    pub rows: u64,
    pub vocab: u32,
}

/// One row of `kiln_penalize_f32` (an array of these in device memory).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PenaltyRowParams {
    pub repetition: f32,
    pub frequency: f32,
    pub presence: f32,
}

/// `kiln_penalize_f32`: logits f32 [rows, vocab] penalised in place; `offsets` u32
/// [rows + 1] into `entries` u32 [n_entries, 2] (id, count in the generated text).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PenalizeParams {
    pub logits: u64,
    pub offsets: u64,
    pub entries: u64,
    pub row_params: u64,
    pub rows: u64,
    pub n_entries: u32,
    pub vocab: u32,
}

/// `kiln_embedding_{f32,bf16,f16}`: table [vocab, hidden] -> out f32 [tokens, hidden].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EmbeddingParams {
    pub table: u64,
    pub ids: u64,
    pub out: u64,
    pub tokens: u64,
    pub hidden: u32,
    pub vocab: u32,
}

/// `kiln_rope_{f32,bf16}`: x [tokens, heads, head_dim] in place; dynamic shared memory
/// `head_dim * 4` bytes; `interleaved` is 0 (half-split) or 1.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RopeParams {
    pub x: u64,
    pub positions: u64,
    pub inv_freq: u64,
    pub tokens: u64,
    pub heads: u32,
    pub head_dim: u32,
    pub interleaved: u32,
    pub attention_scaling: f32,
}

/// `kiln_attention_f32`: q [q_len, heads, head_dim], k, v [kv_len, kv_heads, head_dim],
/// out [q_len, heads, head_dim], all contiguous f32; `causal` is 0 or 1; head_dim <= 256.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub out: u64,
    pub q_len: u32,
    pub kv_len: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub scale: f32,
    pub causal: u32,
}

/// Dims the strided copy walks (`cuda/copy.cu`); a view needing more after collapsing is
/// copied another way.
pub const COPY_MAX_RANK: usize = 6;

/// `kiln_copy_strided_{1,2,4}` (element bytes): dst dense [n] = the view of `src` with
/// `shape` / `strides` (elements), outermost first, left-padded with size-1 dims. No aliasing.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CopyStridedParams {
    pub src: u64,
    pub dst: u64,
    pub n: u64,
    pub shape: [u32; COPY_MAX_RANK],
    pub strides: [u64; COPY_MAX_RANK],
}

// The same numbers are static_assert-ed in the .cu files.
const _: () = {
    assert!(size_of::<BinaryParams>() == 32 && offset_of!(BinaryParams, n) == 24);
    assert!(size_of::<ScaleParams>() == 32 && offset_of!(ScaleParams, scale) == 24);
    assert!(size_of::<SiluMulParams>() == 32 && offset_of!(SiluMulParams, n) == 24);
    assert!(size_of::<UnaryParams>() == 24 && offset_of!(UnaryParams, n) == 16);
    assert!(size_of::<CastParams>() == 24 && offset_of!(CastParams, n) == 16);
    assert!(size_of::<RmsNormParams>() == 40 && offset_of!(RmsNormParams, eps) == 36);
    assert!(
        size_of::<ResidualRmsNormParams>() == 56 && offset_of!(ResidualRmsNormParams, eps) == 52
    );
    assert!(size_of::<LayerNormParams>() == 48 && offset_of!(LayerNormParams, eps) == 44);
    assert!(size_of::<SoftmaxParams>() == 40 && offset_of!(SoftmaxParams, causal) == 32);
    assert!(size_of::<ArgmaxParams>() == 32 && offset_of!(ArgmaxParams, cols) == 24);
    assert!(size_of::<SampleRowParams>() == 24 && offset_of!(SampleRowParams, uniform) == 16);
    assert!(size_of::<SampleParams>() == 40 && offset_of!(SampleParams, vocab) == 32);
    assert!(size_of::<PenaltyRowParams>() == 12);
    assert!(size_of::<PenalizeParams>() == 48 && offset_of!(PenalizeParams, vocab) == 44);
    assert!(size_of::<EmbeddingParams>() == 40 && offset_of!(EmbeddingParams, vocab) == 36);
    assert!(size_of::<RopeParams>() == 48 && offset_of!(RopeParams, attention_scaling) == 44);
    assert!(size_of::<AttentionParams>() == 64 && offset_of!(AttentionParams, causal) == 56);
    assert!(size_of::<CopyStridedParams>() == 96 && offset_of!(CopyStridedParams, strides) == 48);
};

/// The matmul kernels (`kernels/cuda/matmul.cuh`): out f32 [m, n] = x [m, k] · w [n, k]ᵀ
/// (+ bias [n]) (+ residual [m, n]); x is f32 for `kiln_gemv_*`, `kiln_gemm_simple_*` and
/// `kiln_sgemm_f32`, and bf16 / f16 (the weights' type) for `kiln_gemm_{pipe,small,wgmma}_*`.
/// `bias`, `residual`, `partial` are 0 when absent. With `partial` set the kernel writes raw
/// sums of split `blockIdx.y` (k in [y * k_split, (y + 1) * k_split)) to `partial` [splits, m, n]
/// and `kiln_matmul_reduce` finishes; otherwise `k_split` = k. No aliasing.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MatmulParams {
    pub x: u64,
    pub w: u64,
    pub out: u64,
    pub bias: u64,
    pub residual: u64,
    pub partial: u64,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub k_split: u32,
}

/// `kiln_reshape_and_cache_{f32,bf16}`: src [tokens, kv_heads, head_dim] written into cache
/// [num_blocks, kv_heads, block_size, head_dim] at `slots` [tokens] (u32; u32::MAX and slots
/// past the cache write nothing). tokens * kv_heads * head_dim < 2^32.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ReshapeAndCacheParams {
    pub src: u64,
    pub cache: u64,
    pub slots: u64,
    pub tokens: u64,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub block_size: u32,
    pub num_blocks: u32,
}

/// `kiln_paged_decode_<T>_d<DP>` and `kiln_paged_prefill_<T>_d<DP>` (T the cache dtype, DP
/// the head_dim tile: 64, 80, 96 or 128, head_dim <= DP): q, out [rows, heads, head_dim] f32;
/// caches [num_blocks, kv_heads, block_size, head_dim]; block_tables [seqs, max_blocks],
/// context_lens [seqs], cu_seqlens [seqs + 1] u32; `causal` 0 or 1. Decode only: keys
/// split * split_len.. per CTA (split_len a multiple of 64); with splits > 1 the partial
/// results go to part_out [splits, seqs, heads, head_dim] and part_lse [splits, seqs, heads]
/// for `kiln_attention_combine_f32`, else to `out`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PagedAttentionParams {
    pub q: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub block_tables: u64,
    pub context_lens: u64,
    pub cu_seqlens: u64,
    pub out: u64,
    pub part_out: u64,
    pub part_lse: u64,
    pub rows: u32,
    pub seqs: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub block_size: u32,
    pub num_blocks: u32,
    pub max_blocks: u32,
    pub split_len: u32,
    pub splits: u32,
    pub scale: f32,
    pub causal: u32,
}

/// `kiln_attention_combine_f32`: merges split-KV partial outputs (normalised, with their
/// log2-sum-exp) into out [rows, heads, head_dim].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AttentionCombineParams {
    pub part_out: u64,
    pub part_lse: u64,
    pub out: u64,
    pub rows: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub splits: u32,
}

/// `kiln_varlen_attention_d<DP>`: q [tq, heads, head_dim], k, v [tk, kv_heads, head_dim],
/// out [tq, heads, head_dim] f32; cu_seqlens_q, cu_seqlens_k [seqs + 1] u32.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VarlenAttentionParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub cu_seqlens_q: u64,
    pub cu_seqlens_k: u64,
    pub out: u64,
    pub tq: u32,
    pub tk: u32,
    pub seqs: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub scale: f32,
    pub causal: u32,
}

const _: () = {
    assert!(
        size_of::<ReshapeAndCacheParams>() == 48
            && offset_of!(ReshapeAndCacheParams, num_blocks) == 44
    );
    assert!(
        size_of::<PagedAttentionParams>() == 120 && offset_of!(PagedAttentionParams, causal) == 116
    );
    assert!(
        size_of::<AttentionCombineParams>() == 40
            && offset_of!(AttentionCombineParams, splits) == 36
    );
    assert!(
        size_of::<VarlenAttentionParams>() == 80 && offset_of!(VarlenAttentionParams, causal) == 76
    );
};

/// `kiln_matmul_reduce`: out[i] = sum over `splits` of partial[s * count + i] (+ bias[i % n])
/// (+ residual[i]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ReduceParams {
    pub partial: u64,
    pub out: u64,
    pub bias: u64,
    pub residual: u64,
    pub count: u64,
    pub n: u32,
    pub splits: u32,
}

/// A `CUtensorMap` (cuTensorMapEncodeTiled's output): 128 opaque bytes, 128-byte aligned as
/// in CUDA 13's cuda.h.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug)]
pub struct TmaDescriptor(pub [u64; 16]);

/// `kiln_gemm_wgmma_{bf16,f16}`: tensor maps of x [m, k] (box 64 x 128) and w [n, k] (box
/// 64 x 256), both 128B-swizzled, then the usual params. Passed as a `__grid_constant__`.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug)]
pub struct WgmmaParams {
    pub a_map: TmaDescriptor,
    pub b_map: TmaDescriptor,
    pub p: MatmulParams,
}

const _: () = {
    assert!(size_of::<MatmulParams>() == 64 && offset_of!(MatmulParams, k_split) == 60);
    assert!(size_of::<ReduceParams>() == 48 && offset_of!(ReduceParams, splits) == 44);
    assert!(size_of::<WgmmaParams>() == 384 && offset_of!(WgmmaParams, p) == 256);
};
