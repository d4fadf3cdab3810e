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
};

/// `kiln_gemv_<w>_m{1,4,8}`, `kiln_gemm_{bf16,f16}`, `kiln_sgemm_f32`:
/// out f32 [m, n] = x f32 [m, k] · w [n, k]ᵀ (w in bf16, f16 or f32). No aliasing.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MatmulParams {
    pub x: u64,
    pub w: u64,
    pub out: u64,
    pub m: u32,
    pub n: u32,
    pub k: u32,
}

const _: () = assert!(size_of::<MatmulParams>() == 40 && offset_of!(MatmulParams, k) == 32);
