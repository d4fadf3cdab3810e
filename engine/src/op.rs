//! The op set: the single source of truth for dispatch, equivalence tests and benches.
//!
//! `Op::check` validates inputs and computes the output shape once for every backend, so a
//! backend only dispatches to its kernels.

use crate::dtype::DType;
use crate::error::{shape_err, EngineError, Result};
use crate::tensor::Tensor;
pub use kiln_kernels::cpu::gelu::GeluApprox;
pub use kiln_kernels::cpu::rope::RopeStyle;
pub use kiln_kernels::cpu::sample::{PenaltyRow, SampleRow};

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// [table [vocab, hidden] (f32/bf16/f16/q8_0/q4_0/q4_1), ids [n] (u32/i32)] -> [n, hidden] f32
    Embedding,
    /// [x [.., k] f32, w [n, k] (f32/bf16/f16/q8_0/q4_0/q4_1), bias [n] f32 if `bias`,
    /// residual [.., n] f32 if `residual`] -> x·wᵀ + bias + residual, [.., n] f32
    Matmul { bias: bool, residual: bool },
    /// [x [.., h], w [h]] f32 (or bf16 where the backend supports it) -> [.., h]
    RmsNorm { eps: f32 },
    /// [x [tokens, heads, d] f32 (or bf16), positions [tokens] u32, inv_freq [d/2] f32] -> same as x
    Rope {
        style: RopeStyle,
        attention_scaling: f32,
    },
    /// [gate, up] f32 (or both bf16) same shape -> silu(gate) * up
    SiluMul,
    /// [x [.., h], w [h], b [h]] f32 (or all bf16) -> [.., h]: torch's LayerNorm over the last
    /// dimension (biased variance), f32 arithmetic rounded once to the dtype
    LayerNorm { eps: f32 },
    /// [x] f32 (or bf16) -> gelu(x), torch's `approximate="none"` (Erf) or `"tanh"`
    Gelu { approx: GeluApprox },
    /// [x] f32 (or bf16) -> x * sigmoid(1.702 x) (CLIP)
    QuickGelu,
    /// The fused residual add + RMSNorm of a decoder layer: [x [.., h], residual (x's shape),
    /// w [h]] f32 (or all bf16) -> [2, ..x.shape]: [0] = x + residual rounded to the dtype (the
    /// next residual), [1] = rmsnorm([0]) * w as `RmsNorm` (`Tensor::add_rms_norm` splits them)
    AddRmsNorm { eps: f32 },
    /// [x [.., cols] f32] -> softmax(x * scale) per row, causal mask optional
    Softmax { scale: f32, causal: bool },
    /// [q [q_len, heads, d], k [kv_len, kv_heads, d], v [kv_len, kv_heads, d]] f32 -> [q_len, heads, d]
    Attention { scale: f32, causal: bool },
    /// [a, b] f32 (or both bf16) same shape -> a + b
    Add,
    /// [a, b] f32 (or both bf16) same shape -> a * b
    Mul,
    /// [a] f32 (or bf16) -> a * factor
    Scale { factor: f32 },
    /// [x [.., cols] f32] -> [..] u32
    Argmax,
    /// [x] float -> x as `to`
    Cast { to: DType },
    /// In place: [src [r, ..]] written into dst rows dst_row..dst_row+r (same dtype, trailing dims)
    CopyRows { dst_row: usize },
    /// In place into a paged cache [num_blocks, kv_heads, block_size, d]: [new [t, kv_heads, d]
    /// (cache dtype), slots [t] u32 (u32::MAX skips a token)]
    ReshapeAndCache,
    /// [q [rows, heads, d] f32, k_cache, v_cache [num_blocks, kv_heads, block_size, d],
    /// block_tables [seqs, max_blocks] u32, context_lens [seqs] u32, cu_seqlens [seqs + 1] u32]
    /// -> [rows, heads, d] f32: varlen attention over the paged cache (see
    /// kernels/src/cpu/paged_attention.rs). `decode_only` is the caller's promise that every
    /// sequence has exactly one query row (the host knows it from its `cu_seqlens`; the device
    /// tensor does not say it without a copy back): it selects the split-KV decode kernel on
    /// CUDA, and the CPU twin rejects a batch that breaks it.
    PagedAttention {
        scale: f32,
        causal: bool,
        decode_only: bool,
    },
    /// [q [tq, heads, d], k [tk, kv_heads, d], v [tk, kv_heads, d] f32, cu_seqlens_q [seqs + 1]
    /// u32, cu_seqlens_k [seqs + 1] u32] -> [tq, heads, d] f32: attention of each sequence's
    /// queries over its own keys (encoders, cross-attention); causal aligns the queries at the
    /// end of the keys as `Attention` does (see kernels/src/cpu/varlen_attention.rs)
    VarlenAttention { scale: f32, causal: bool },
    /// [logits [.., vocab] f32] -> [..] u32: one token per row (a row is one sequence), drawn
    /// with that row's parameters and uniform number (`rows[r]`); the rule is documented in
    /// `kiln_kernels::cpu::sample`. vocab <= 2^22.
    Sample { rows: Vec<SampleRow> },
    /// [logits [.., vocab] f32, offsets [rows + 1] u32, entries [n, 2] u32] -> the logits
    /// with `rows[r]`'s penalties applied to the (id, generated count) entries
    /// `offsets[r]..offsets[r + 1]` of row r (distinct ids within a row; ids >= vocab are
    /// ignored). Offsets must be non-decreasing and at most n: the CPU backend reports a
    /// violation; the CUDA kernel, which cannot see device data before it runs, clamps.
    Penalize { rows: Vec<PenaltyRow> },
}

/// The variants, for exhaustive coverage in the equivalence suite and benches.
pub const ALL_OPS: &[&str] = &[
    "embedding",
    "matmul",
    "rmsnorm",
    "rope",
    "silu_mul",
    "layernorm",
    "gelu",
    "quick_gelu",
    "add_rmsnorm",
    "softmax",
    "attention",
    "add",
    "mul",
    "scale",
    "argmax",
    "cast",
    "copy_rows",
    "reshape_and_cache",
    "paged_attention",
    "varlen_attention",
    "sample",
    "penalize",
];

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Embedding => "embedding",
            Op::Matmul { .. } => "matmul",
            Op::RmsNorm { .. } => "rmsnorm",
            Op::Rope { .. } => "rope",
            Op::SiluMul => "silu_mul",
            Op::LayerNorm { .. } => "layernorm",
            Op::Gelu { .. } => "gelu",
            Op::QuickGelu => "quick_gelu",
            Op::AddRmsNorm { .. } => "add_rmsnorm",
            Op::Softmax { .. } => "softmax",
            Op::Attention { .. } => "attention",
            Op::Add => "add",
            Op::Mul => "mul",
            Op::Scale { .. } => "scale",
            Op::Argmax => "argmax",
            Op::Cast { .. } => "cast",
            Op::CopyRows { .. } => "copy_rows",
            Op::ReshapeAndCache => "reshape_and_cache",
            Op::PagedAttention { .. } => "paged_attention",
            Op::VarlenAttention { .. } => "varlen_attention",
            Op::Sample { .. } => "sample",
            Op::Penalize { .. } => "penalize",
        }
    }

    pub fn arity(&self) -> usize {
        match self {
            Op::Softmax { .. } | Op::Scale { .. } | Op::Argmax | Op::Cast { .. } => 1,
            Op::CopyRows { .. } => 1,
            Op::Matmul { bias, residual } => 2 + usize::from(*bias) + usize::from(*residual),
            Op::Embedding | Op::RmsNorm { .. } | Op::SiluMul | Op::Add | Op::Mul => 2,
            Op::Rope { .. } | Op::Attention { .. } => 3,
            Op::ReshapeAndCache => 2,
            Op::PagedAttention { .. } => 6,
            Op::Gelu { .. } | Op::QuickGelu => 1,
            Op::LayerNorm { .. } | Op::AddRmsNorm { .. } => 3,
            Op::VarlenAttention { .. } => 5,
            Op::Sample { .. } => 1,
            Op::Penalize { .. } => 3,
        }
    }

    /// Validates the inputs of a pure op; returns the output shape and dtype.
    pub fn check(&self, inputs: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
        let name = self.name();
        if inputs.len() != self.arity() {
            return Err(shape_err(
                name,
                format!("{} inputs, expected {}", inputs.len(), self.arity()),
            ));
        }
        let x = inputs[0];
        match self {
            Op::Embedding => {
                let (table, ids) = (x, inputs[1]);
                want_weight(name, table)?;
                want_rank(name, "table", table, 2)?;
                if !matches!(ids.dtype(), DType::U32 | DType::I32) {
                    return Err(dtype_err(name, ids, "u32 or i32 ids"));
                }
                want_rank(name, "ids", ids, 1)?;
                Ok((vec![ids.shape()[0], table.shape()[1]], DType::F32))
            }
            Op::Matmul { bias, residual } => {
                let w = inputs[1];
                want_f32(name, x)?;
                want_weight(name, w)?;
                want_rank(name, "weight", w, 2)?;
                let k = last_dim(name, x)?;
                if w.shape()[1] != k {
                    return Err(shape_err(
                        name,
                        format!(
                            "x {:?} and weight {:?}: inner dims differ",
                            x.shape(),
                            w.shape()
                        ),
                    ));
                }
                let mut shape = x.shape().to_vec();
                shape[x.rank() - 1] = w.shape()[0];
                let mut extra = inputs[2..].iter();
                if *bias {
                    let b = extra
                        .next()
                        .copied()
                        .ok_or_else(|| shape_err(name, "no bias"))?;
                    want_f32(name, b)?;
                    if b.shape() != [w.shape()[0]] {
                        return Err(shape_err(
                            name,
                            format!("bias {:?} for weight {:?}", b.shape(), w.shape()),
                        ));
                    }
                }
                if *residual {
                    let r = extra
                        .next()
                        .copied()
                        .ok_or_else(|| shape_err(name, "no residual"))?;
                    want_f32(name, r)?;
                    if r.shape() != shape.as_slice() {
                        return Err(shape_err(
                            name,
                            format!("residual {:?} for output {shape:?}", r.shape()),
                        ));
                    }
                }
                Ok((shape, DType::F32))
            }
            Op::RmsNorm { .. } => {
                let w = inputs[1];
                want_act(name, x)?;
                want_same(name, x, w)?;
                let h = last_dim(name, x)?;
                if w.shape() != [h] {
                    return Err(shape_err(
                        name,
                        format!("weight {:?} for x {:?}", w.shape(), x.shape()),
                    ));
                }
                Ok((x.shape().to_vec(), x.dtype()))
            }
            Op::Rope { .. } => {
                let (pos, inv_freq) = (inputs[1], inputs[2]);
                want_act(name, x)?;
                want_rank(name, "x", x, 3)?;
                if pos.dtype() != DType::U32 {
                    return Err(dtype_err(name, pos, "u32 positions"));
                }
                let (t, d) = (x.shape()[0], x.shape()[2]);
                if pos.shape() != [t] {
                    return Err(shape_err(
                        name,
                        format!("positions {:?} for {t} tokens", pos.shape()),
                    ));
                }
                if d % 2 != 0 || inv_freq.shape() != [d / 2] {
                    return Err(shape_err(
                        name,
                        format!("inv_freq {:?} for head_dim {d}", inv_freq.shape()),
                    ));
                }
                want_f32(name, inv_freq)?;
                Ok((x.shape().to_vec(), x.dtype()))
            }
            Op::SiluMul | Op::Add | Op::Mul => {
                let y = inputs[1];
                want_act(name, x)?;
                want_same(name, x, y)?;
                if x.shape() != y.shape() {
                    return Err(shape_err(
                        name,
                        format!("shapes {:?} and {:?} differ", x.shape(), y.shape()),
                    ));
                }
                Ok((x.shape().to_vec(), x.dtype()))
            }
            Op::LayerNorm { .. } => {
                let (w, b) = (inputs[1], inputs[2]);
                want_act(name, x)?;
                want_same(name, x, w)?;
                want_same(name, x, b)?;
                let h = last_dim(name, x)?;
                for (what, t) in [("weight", w), ("bias", b)] {
                    if t.shape() != [h] {
                        return Err(shape_err(
                            name,
                            format!(
                                "{what} {:?} for x {:?}, expected [{h}]",
                                t.shape(),
                                x.shape()
                            ),
                        ));
                    }
                }
                Ok((x.shape().to_vec(), x.dtype()))
            }
            Op::Gelu { .. } | Op::QuickGelu => {
                want_act(name, x)?;
                Ok((x.shape().to_vec(), x.dtype()))
            }
            Op::AddRmsNorm { .. } => {
                let (residual, w) = (inputs[1], inputs[2]);
                want_act(name, x)?;
                want_same(name, x, residual)?;
                want_same(name, x, w)?;
                if residual.shape() != x.shape() {
                    return Err(shape_err(
                        name,
                        format!(
                            "x {:?} and residual {:?} differ",
                            x.shape(),
                            residual.shape()
                        ),
                    ));
                }
                let h = last_dim(name, x)?;
                if w.shape() != [h] {
                    return Err(shape_err(
                        name,
                        format!(
                            "weight {:?} for x {:?}, expected [{h}]",
                            w.shape(),
                            x.shape()
                        ),
                    ));
                }
                let mut shape = vec![2];
                shape.extend_from_slice(x.shape());
                Ok((shape, x.dtype()))
            }
            Op::Scale { .. } => {
                want_act(name, x)?;
                last_dim(name, x)?;
                Ok((x.shape().to_vec(), x.dtype()))
            }
            Op::Softmax { .. } => {
                want_f32(name, x)?;
                last_dim(name, x)?;
                Ok((x.shape().to_vec(), DType::F32))
            }
            Op::Attention { causal, .. } => {
                let (k, v) = (inputs[1], inputs[2]);
                for t in inputs {
                    want_f32(name, t)?;
                    want_rank(name, "q/k/v", t, 3)?;
                }
                let (q_len, heads, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
                let (kv_len, kv_heads) = (k.shape()[0], k.shape()[1]);
                if k.shape() != v.shape() || k.shape()[2] != d {
                    return Err(shape_err(
                        name,
                        format!("q {:?}, k {:?}, v {:?}", x.shape(), k.shape(), v.shape()),
                    ));
                }
                if kv_heads == 0 || heads % kv_heads != 0 {
                    return Err(shape_err(
                        name,
                        format!("{heads} query heads not a multiple of {kv_heads} kv heads"),
                    ));
                }
                if *causal && kv_len < q_len {
                    return Err(shape_err(
                        name,
                        format!("causal with {q_len} queries over only {kv_len} keys"),
                    ));
                }
                Ok((x.shape().to_vec(), DType::F32))
            }
            Op::Argmax => {
                want_f32(name, x)?;
                let cols = last_dim(name, x)?;
                if cols == 0 {
                    return Err(shape_err(name, "argmax of an empty row"));
                }
                let shape = x.shape()[..x.rank() - 1].to_vec();
                Ok((shape, DType::U32))
            }
            Op::Cast { to } => {
                // Quantized tensors cast to a float dtype dequantize.
                want_weight(name, x)?;
                if !to.is_float() {
                    return Err(shape_err(name, format!("cast to {to} (float dtypes only)")));
                }
                Ok((x.shape().to_vec(), *to))
            }
            Op::PagedAttention { decode_only, .. } => check_paged_attention(inputs, *decode_only),
            Op::VarlenAttention { .. } => check_varlen_attention(inputs),
            Op::Sample { rows } => {
                want_f32(name, x)?;
                let vocab = last_dim(name, x)?;
                if vocab == 0 || vocab > kiln_kernels::cpu::sample::MAX_VOCAB {
                    return Err(shape_err(
                        name,
                        format!(
                            "rows of {vocab} logits (1 to {} allowed)",
                            kiln_kernels::cpu::sample::MAX_VOCAB
                        ),
                    ));
                }
                let lead = &x.shape()[..x.rank() - 1];
                want_row_params(name, rows.len(), lead)?;
                for (r, p) in rows.iter().enumerate() {
                    check_sample_row(r, p)?;
                }
                Ok((lead.to_vec(), DType::U32))
            }
            Op::Penalize { rows } => {
                let (offsets, entries) = (inputs[1], inputs[2]);
                want_f32(name, x)?;
                last_dim(name, x)?;
                let lead = &x.shape()[..x.rank() - 1];
                want_row_params(name, rows.len(), lead)?;
                for (what, t) in [("offsets", offsets), ("entries", entries)] {
                    if t.dtype() != DType::U32 {
                        return Err(dtype_err(name, t, &format!("u32 {what}")));
                    }
                }
                if offsets.shape() != [rows.len() + 1] {
                    return Err(shape_err(
                        name,
                        format!(
                            "offsets {:?} for {} rows (expected [{}])",
                            offsets.shape(),
                            rows.len(),
                            rows.len() + 1
                        ),
                    ));
                }
                if entries.rank() != 2 || entries.shape()[1] != 2 {
                    return Err(shape_err(
                        name,
                        format!("entries {:?}, expected [n, 2]", entries.shape()),
                    ));
                }
                if u32::try_from(entries.shape()[0]).is_err() {
                    return Err(shape_err(name, "more than 2^32 entries"));
                }
                for (r, p) in rows.iter().enumerate() {
                    check_penalty_row(r, p)?;
                }
                Ok((x.shape().to_vec(), DType::F32))
            }
            Op::CopyRows { .. } | Op::ReshapeAndCache => {
                Err(shape_err(name, "runs in place (execute_inplace)"))
            }
        }
    }

    /// Validates an in-place op against its destination.
    pub fn check_inplace(&self, dst: &Tensor, inputs: &[&Tensor]) -> Result<()> {
        let name = self.name();
        if inputs.len() != self.arity() {
            return Err(shape_err(
                name,
                format!("{} inputs, expected {}", inputs.len(), self.arity()),
            ));
        }
        let src = inputs[0];
        if src.dtype() != dst.dtype() {
            return Err(dtype_err(name, src, dst.dtype().name()));
        }
        match self {
            Op::CopyRows { dst_row } => {
                if src.rank() == 0
                    || src.rank() != dst.rank()
                    || src.shape()[1..] != dst.shape()[1..]
                {
                    return Err(shape_err(
                        name,
                        format!("src {:?} into dst {:?}", src.shape(), dst.shape()),
                    ));
                }
                if dst_row + src.shape()[0] > dst.shape()[0] {
                    return Err(shape_err(
                        name,
                        format!(
                            "rows {dst_row}..{} past the end of dst ({} rows)",
                            dst_row + src.shape()[0],
                            dst.shape()[0]
                        ),
                    ));
                }
                Ok(())
            }
            Op::ReshapeAndCache => {
                let slots = inputs[1];
                want_rank(name, "cache", dst, 4)?;
                want_rank(name, "new", src, 3)?;
                if slots.dtype() != DType::U32 {
                    return Err(dtype_err(name, slots, "u32"));
                }
                let c = dst.shape();
                if src.shape()[1] != c[1]
                    || src.shape()[2] != c[3]
                    || slots.shape() != [src.shape()[0]]
                {
                    return Err(shape_err(
                        name,
                        format!(
                            "new {:?} with slots {:?} into cache {:?}",
                            src.shape(),
                            slots.shape(),
                            c
                        ),
                    ));
                }
                Ok(())
            }
            _ => Err(shape_err(name, "not an in-place op")),
        }
    }
}

fn check_paged_attention(inputs: &[&Tensor], decode_only: bool) -> Result<(Vec<usize>, DType)> {
    let name = "paged_attention";
    let [q, kc, vc, tables, ctx, cu] = inputs else {
        return Err(shape_err(name, "expects 6 inputs"));
    };
    want_f32(name, q)?;
    want_rank(name, "q", q, 3)?;
    want_rank(name, "k_cache", kc, 4)?;
    want_rank(name, "block_tables", tables, 2)?;
    want_rank(name, "context_lens", ctx, 1)?;
    want_rank(name, "cu_seqlens", cu, 1)?;
    want_same(name, kc, vc)?;
    for t in [tables, ctx, cu] {
        if t.dtype() != DType::U32 {
            return Err(dtype_err(name, t, "u32"));
        }
    }
    let (heads, d) = (q.shape()[1], q.shape()[2]);
    let (kv_heads, cache_d) = (kc.shape()[1], kc.shape()[3]);
    if kc.shape() != vc.shape() || cache_d != d {
        return Err(shape_err(
            name,
            format!(
                "q {:?}, k_cache {:?}, v_cache {:?}",
                q.shape(),
                kc.shape(),
                vc.shape()
            ),
        ));
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(shape_err(
            name,
            format!("{heads} query heads not a multiple of {kv_heads} kv heads"),
        ));
    }
    let seqs = ctx.shape()[0];
    if tables.shape()[0] != seqs || cu.shape()[0] != seqs + 1 {
        return Err(shape_err(
            name,
            format!(
                "{seqs} context lengths, block_tables {:?}, cu_seqlens {:?}",
                tables.shape(),
                cu.shape()
            ),
        ));
    }
    if decode_only && q.shape()[0] != seqs {
        return Err(shape_err(
            name,
            format!(
                "decode_only with {} query rows for {seqs} sequences (one row each)",
                q.shape()[0]
            ),
        ));
    }
    Ok((q.shape().to_vec(), DType::F32))
}

fn check_varlen_attention(inputs: &[&Tensor]) -> Result<(Vec<usize>, DType)> {
    let name = "varlen_attention";
    let [q, k, v, cu_q, cu_k] = inputs else {
        return Err(shape_err(name, "expects 5 inputs"));
    };
    for (what, t) in [("q", q), ("k", k), ("v", v)] {
        want_f32(name, t)?;
        want_rank(name, what, t, 3)?;
    }
    want_rank(name, "cu_seqlens_q", cu_q, 1)?;
    want_rank(name, "cu_seqlens_k", cu_k, 1)?;
    for t in [cu_q, cu_k] {
        if t.dtype() != DType::U32 {
            return Err(dtype_err(name, t, "u32"));
        }
    }
    let (heads, d) = (q.shape()[1], q.shape()[2]);
    let kv_heads = k.shape()[1];
    if k.shape() != v.shape() || k.shape()[2] != d {
        return Err(shape_err(
            name,
            format!("q {:?}, k {:?}, v {:?}", q.shape(), k.shape(), v.shape()),
        ));
    }
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(shape_err(
            name,
            format!("{heads} query heads not a multiple of {kv_heads} kv heads"),
        ));
    }
    if cu_q.shape()[0] == 0 || cu_q.shape() != cu_k.shape() {
        return Err(shape_err(
            name,
            format!(
                "cu_seqlens_q {:?} and cu_seqlens_k {:?}: one entry per sequence plus one, \
                 the same count",
                cu_q.shape(),
                cu_k.shape()
            ),
        ));
    }
    Ok((q.shape().to_vec(), DType::F32))
}

fn dtype_err(op: &'static str, t: &Tensor, expected: &str) -> EngineError {
    EngineError::DType {
        op,
        got: t.dtype(),
        expected: expected.to_string(),
    }
}

fn want_f32(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() == DType::F32 {
        Ok(())
    } else {
        Err(dtype_err(op, t, "f32"))
    }
}

/// Activations: f32, or bf16 on backends with bf16 kernels (`supports` decides).
fn want_act(op: &'static str, t: &Tensor) -> Result<()> {
    if matches!(t.dtype(), DType::F32 | DType::BF16) {
        Ok(())
    } else {
        Err(dtype_err(op, t, "f32 or bf16"))
    }
}

fn want_same(op: &'static str, x: &Tensor, y: &Tensor) -> Result<()> {
    if y.dtype() == x.dtype() {
        Ok(())
    } else {
        Err(dtype_err(op, y, x.dtype().name()))
    }
}

fn want_weight(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_weight() {
        Ok(())
    } else {
        Err(dtype_err(op, t, "f32, f16, bf16, q8_0, q4_0 or q4_1"))
    }
}

fn want_rank(op: &'static str, what: &str, t: &Tensor, rank: usize) -> Result<()> {
    if t.rank() == rank {
        Ok(())
    } else {
        Err(shape_err(
            op,
            format!("{what} has shape {:?}, expected rank {rank}", t.shape()),
        ))
    }
}

/// One parameter set per row of `lead` (the dims before the last).
fn want_row_params(op: &'static str, given: usize, lead: &[usize]) -> Result<()> {
    let rows: usize = lead.iter().product();
    if given == rows {
        Ok(())
    } else {
        Err(shape_err(
            op,
            format!("{given} row parameter sets for {rows} rows {lead:?}"),
        ))
    }
}

fn param_err(op: &'static str, row: usize, what: &str, got: impl std::fmt::Display) -> EngineError {
    shape_err(op, format!("row {row}: {what}, got {got}"))
}

fn check_sample_row(r: usize, p: &SampleRow) -> Result<()> {
    // Written as `!(in range)` so that NaN is rejected.
    if !(p.temperature >= 0.0 && p.temperature.is_finite()) {
        return Err(param_err(
            "sample",
            r,
            "temperature must be finite and >= 0",
            p.temperature,
        ));
    }
    if !(p.top_p > 0.0 && p.top_p <= 1.0) {
        return Err(param_err("sample", r, "top_p must be in (0, 1]", p.top_p));
    }
    if !(p.uniform >= 0.0 && p.uniform < 1.0) {
        return Err(param_err(
            "sample",
            r,
            "uniform must be in [0, 1)",
            p.uniform,
        ));
    }
    Ok(())
}

fn check_penalty_row(r: usize, p: &PenaltyRow) -> Result<()> {
    if !(p.repetition > 0.0 && p.repetition.is_finite()) {
        return Err(param_err(
            "penalize",
            r,
            "repetition must be finite and > 0",
            p.repetition,
        ));
    }
    if !(p.frequency.is_finite() && p.presence.is_finite()) {
        return Err(param_err(
            "penalize",
            r,
            "frequency and presence must be finite",
            format!("{} and {}", p.frequency, p.presence),
        ));
    }
    Ok(())
}

fn last_dim(op: &'static str, t: &Tensor) -> Result<usize> {
    t.shape()
        .last()
        .copied()
        .ok_or_else(|| shape_err(op, "a scalar has no last dimension"))
}

#[cfg(test)]
#[path = "op_norm_act_tests.rs"]
mod norm_act_tests;
#[cfg(test)]
#[path = "op_paged_tests.rs"]
mod paged_tests;
