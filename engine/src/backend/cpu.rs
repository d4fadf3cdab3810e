//! The CPU backend: the reference implementation of every op, calling the CPU twins in
//! kiln-kernels.

use super::Backend;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::op::Op;
use crate::tensor::Tensor;
use half::{bf16, f16};
use kiln_kernels::cpu::{self as k, WeightSlice};

pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn supports(&self, op: &Op, dtypes: &[DType]) -> bool {
        match op {
            Op::Embedding => matches!(dtypes, [t, DType::U32 | DType::I32] if t.is_weight()),
            // bias / residual: f32 (`Op::check` has placed them).
            Op::Matmul { .. } => matches!(dtypes, [DType::F32, w, rest @ ..]
                if w.is_weight() && rest.iter().all(|d| *d == DType::F32)),
            Op::Cast { to } => to.is_float() && dtypes.iter().all(|d| d.is_weight()),
            Op::CopyRows { .. } => true,
            Op::ReshapeAndCache => matches!(dtypes, [DType::F32 | DType::BF16, DType::U32]),
            // f32 and bf16 kernels (f32 arithmetic, bf16 rounding as on the GPU).
            Op::LayerNorm { .. } | Op::AddRmsNorm { .. } => {
                matches!(dtypes, [a, b, c] if a == b && b == c && matches!(a, DType::F32 | DType::BF16))
            }
            Op::Gelu { .. } | Op::QuickGelu => matches!(dtypes, [DType::F32 | DType::BF16]),
            Op::PagedAttention { .. } => matches!(
                dtypes,
                [DType::F32, k, v, DType::U32, DType::U32, DType::U32]
                    if k == v && matches!(k, DType::F32 | DType::BF16)
            ),
            Op::Sample { .. } => dtypes == [DType::F32],
            Op::Penalize { .. } => dtypes == [DType::F32, DType::U32, DType::U32],
            _ => dtypes.iter().all(|d| *d == DType::F32 || *d == DType::U32),
        }
    }

    fn execute(&self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor> {
        let (shape, dtype) = super::check_supported(self, op, inputs)?;
        let inputs: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.contiguous())
            .collect::<Result<_>>()?;
        let n: usize = shape.iter().product();
        match op {
            Op::Argmax => return argmax(&inputs[0], &shape, n),
            Op::Cast { to } => return cast(&inputs[0], *to, &shape),
            Op::Sample { rows } => return sample(&inputs[0], rows, &shape),
            Op::LayerNorm { .. } | Op::Gelu { .. } | Op::QuickGelu | Op::AddRmsNorm { .. }
                if dtype == DType::BF16 =>
            {
                return crate::profile::timed(op.name(), || {
                    let mut out = vec![bf16::ZERO; n];
                    run_act(op, &inputs, &mut out)?;
                    Tensor::from_vec(out, &shape)
                });
            }
            _ => debug_assert_eq!(dtype, DType::F32),
        }
        crate::profile::timed(op.name(), || {
            let mut out = vec![0f32; n];
            run_f32(op, &inputs, &mut out)?;
            Tensor::from_vec(out, &shape)
        })
    }

    fn execute_inplace(&self, op: &Op, dst: &mut Tensor, inputs: &[&Tensor]) -> Result<()> {
        op.check_inplace(dst, inputs)?;
        let dst_row = match op {
            Op::CopyRows { dst_row } => *dst_row,
            Op::ReshapeAndCache => return reshape_and_cache(dst, inputs[0], inputs[1]),
            _ => return Err(EngineError::Data(format!("{} is not in place", op.name()))),
        };
        let src = inputs[0].contiguous()?;
        let row_len: usize = dst.shape()[1..].iter().product();
        let start = dst_row * row_len;
        let len = src.elem_count();
        match dst.dtype() {
            DType::F32 => copy_into::<f32>(dst, &src, start, len),
            DType::F16 => copy_into::<f16>(dst, &src, start, len),
            DType::BF16 => copy_into::<bf16>(dst, &src, start, len),
            DType::I32 => copy_into::<i32>(dst, &src, start, len),
            DType::U32 => copy_into::<u32>(dst, &src, start, len),
            DType::U8 => copy_into::<u8>(dst, &src, start, len),
            q => Err(EngineError::Unsupported {
                op: op.name(),
                backend: self.name(),
                dtypes: vec![q],
            }),
        }
    }
}

fn reshape_and_cache(cache: &mut Tensor, new: &Tensor, slots: &Tensor) -> Result<()> {
    let c = cache.shape().to_vec();
    let shape = k::paged_attention::CacheShape {
        num_blocks: c[0],
        num_kv_heads: c[1],
        block_size: c[2],
        head_dim: c[3],
    };
    let new = new.contiguous()?;
    let slots = slots.contiguous()?;
    let slots = slots.as_slice::<u32>()?;
    let written = match cache.dtype() {
        DType::F32 => k::paged_attention::reshape_and_cache(
            new.as_slice::<f32>()?,
            slots,
            cache.as_mut_slice()?,
            shape,
        ),
        DType::BF16 => k::paged_attention::reshape_and_cache(
            new.as_slice::<bf16>()?,
            slots,
            cache.as_mut_slice()?,
            shape,
        ),
        other => {
            return Err(EngineError::DType {
                op: "reshape_and_cache",
                got: other,
                expected: "f32 or bf16".into(),
            })
        }
    };
    written.map_err(|bad| EngineError::IndexOutOfRange {
        op: "reshape_and_cache",
        index: bad as u64,
        len: shape.num_blocks * shape.block_size,
    })
}

fn copy_into<T: crate::dtype::Element>(
    dst: &mut Tensor,
    src: &Tensor,
    start: usize,
    len: usize,
) -> Result<()> {
    let s = src.as_slice::<T>()?;
    dst.as_mut_slice::<T>()?[start..start + len].copy_from_slice(s);
    Ok(())
}

/// A float tensor as the kernels' weight view.
fn weights(t: &Tensor) -> Result<WeightSlice<'_>> {
    Ok(match t.dtype() {
        DType::F32 => WeightSlice::F32(t.as_slice()?),
        DType::F16 => WeightSlice::F16(t.as_slice()?),
        DType::BF16 => WeightSlice::BF16(t.as_slice()?),
        q @ (DType::Q8_0 | DType::Q4_0 | DType::Q4_1) => WeightSlice::Quant {
            format: quant_format(q),
            bytes: t.raw_bytes()?,
        },
        other => {
            return Err(EngineError::DType {
                op: "weights",
                got: other,
                expected: "f32, f16 or bf16".into(),
            })
        }
    })
}

fn quant_format(d: DType) -> k::quant::QuantFormat {
    match d {
        DType::Q8_0 => k::quant::QuantFormat::Q8_0,
        DType::Q4_0 => k::quant::QuantFormat::Q4_0,
        _ => k::quant::QuantFormat::Q4_1,
    }
}

fn last(t: &Tensor) -> usize {
    t.shape().last().copied().unwrap_or(1)
}

fn run_f32(op: &Op, inputs: &[Tensor], out: &mut [f32]) -> Result<()> {
    let x = &inputs[0];
    match op {
        Op::Embedding => {
            let (table, ids) = (x, &inputs[1]);
            let vocab = table.shape()[0];
            let ids = ids_u32(ids, vocab)?;
            k::embedding::embedding(weights(table)?, table.shape()[1], &ids, out);
        }
        Op::Matmul { bias, residual } => {
            let w = &inputs[1];
            let kk = last(x);
            let p = k::matmul::MatmulParams {
                m: x.elem_count() / kk.max(1),
                n: w.shape()[0],
                k: kk,
            };
            let mut extra = inputs[2..].iter();
            let bias = if *bias { extra.next() } else { None };
            let residual = if *residual { extra.next() } else { None };
            let epilogue = k::matmul::Epilogue {
                bias: bias.map(|t| t.as_slice()).transpose()?,
                residual: residual.map(|t| t.as_slice()).transpose()?,
            };
            k::matmul::linear(x.as_slice()?, weights(w)?, epilogue, out, p);
        }
        Op::RmsNorm { eps } => {
            let cols = last(x);
            let p = k::rmsnorm::RmsNormParams {
                rows: x.elem_count() / cols.max(1),
                cols,
                eps: *eps,
            };
            k::rmsnorm::rmsnorm(x.as_slice()?, inputs[1].as_slice()?, out, p);
        }
        Op::Rope {
            style,
            attention_scaling,
        } => {
            out.copy_from_slice(x.as_slice()?);
            let s = x.shape();
            let p = k::rope::RopeParams {
                tokens: s[0],
                heads: s[1],
                head_dim: s[2],
                style: *style,
                attention_scaling: *attention_scaling,
            };
            k::rope::rope(out, inputs[1].as_slice()?, inputs[2].as_slice()?, p);
        }
        Op::SiluMul => k::silu_mul::silu_mul(x.as_slice()?, inputs[1].as_slice()?, out),
        Op::LayerNorm { .. } | Op::Gelu { .. } | Op::QuickGelu | Op::AddRmsNorm { .. } => {
            run_act(op, inputs, out)?
        }
        Op::Add => k::binary::add(x.as_slice()?, inputs[1].as_slice()?, out),
        Op::Mul => k::binary::mul(x.as_slice()?, inputs[1].as_slice()?, out),
        Op::Scale { factor } => k::binary::scale(x.as_slice()?, *factor, out),
        Op::Softmax { scale, causal } => {
            let cols = last(x);
            let p = k::softmax::SoftmaxParams {
                rows: x.elem_count() / cols.max(1),
                cols,
                scale: *scale,
                causal: *causal,
            };
            k::softmax::softmax(x.as_slice()?, out, p);
        }
        Op::Attention { scale, causal } => {
            let (kt, vt) = (&inputs[1], &inputs[2]);
            let p = k::attention::AttentionParams {
                q_len: x.shape()[0],
                kv_len: kt.shape()[0],
                num_heads: x.shape()[1],
                num_kv_heads: kt.shape()[1],
                head_dim: x.shape()[2],
                scale: *scale,
                causal: *causal,
            };
            k::attention::attention(x.as_slice()?, kt.as_slice()?, vt.as_slice()?, out, p);
        }
        Op::PagedAttention {
            scale,
            causal,
            decode_only,
        } => {
            let c = inputs[1].shape();
            let p = k::paged_attention::PagedAttentionParams {
                num_heads: x.shape()[1],
                cache: k::paged_attention::CacheShape {
                    num_blocks: c[0],
                    num_kv_heads: c[1],
                    block_size: c[2],
                    head_dim: c[3],
                },
                max_blocks: inputs[3].shape()[1],
                scale: *scale,
                causal: *causal,
                decode_only: *decode_only,
            };
            let batch = k::paged_attention::PagedBatch {
                block_tables: inputs[3].as_slice()?,
                context_lens: inputs[4].as_slice()?,
                cu_seqlens: inputs[5].as_slice()?,
            };
            batch
                .validate(x.shape()[0], &p)
                .map_err(|m| EngineError::Shape {
                    op: "paged_attention",
                    message: m,
                })?;
            let q = x.as_slice()?;
            let (kc, vc) = (&inputs[1], &inputs[2]);
            if kc.dtype() == DType::BF16 {
                let (kc, vc) = (kc.as_slice::<bf16>()?, vc.as_slice::<bf16>()?);
                k::paged_attention::paged_attention(q, kc, vc, out, &batch, p);
            } else {
                let (kc, vc) = (kc.as_slice::<f32>()?, vc.as_slice::<f32>()?);
                k::paged_attention::paged_attention(q, kc, vc, out, &batch, p);
            }
        }
        Op::VarlenAttention { scale, causal } => {
            let (kt, vt) = (&inputs[1], &inputs[2]);
            let p = k::varlen_attention::VarlenAttentionParams {
                num_heads: x.shape()[1],
                num_kv_heads: kt.shape()[1],
                head_dim: x.shape()[2],
                scale: *scale,
                causal: *causal,
            };
            let batch = k::varlen_attention::VarlenBatch {
                cu_seqlens_q: inputs[3].as_slice()?,
                cu_seqlens_k: inputs[4].as_slice()?,
            };
            batch
                .validate(x.shape()[0], kt.shape()[0], *causal)
                .map_err(|m| EngineError::Shape {
                    op: "varlen_attention",
                    message: m,
                })?;
            k::varlen_attention::varlen_attention(
                x.as_slice()?,
                kt.as_slice()?,
                vt.as_slice()?,
                out,
                &batch,
                p,
            );
        }
        Op::Penalize { rows } => {
            out.copy_from_slice(x.as_slice()?);
            let (offsets, entries) = (inputs[1].as_slice()?, inputs[2].as_slice()?);
            check_offsets(offsets, entries.len() / 2)?;
            k::sample::penalize(out, last(x), rows, offsets, entries);
        }
        Op::Argmax
        | Op::Cast { .. }
        | Op::CopyRows { .. }
        | Op::ReshapeAndCache
        | Op::Sample { .. } => {
            return Err(EngineError::Data(format!(
                "{} does not produce f32 here",
                op.name()
            )))
        }
    }
    Ok(())
}

/// The ops whose CPU kernels take f32 or bf16 (`k::act::Act`).
fn run_act<T: k::act::Act + crate::dtype::Element>(
    op: &Op,
    inputs: &[Tensor],
    out: &mut [T],
) -> Result<()> {
    let x = &inputs[0];
    let xs = x.as_slice::<T>()?;
    let cols = last(x);
    let rows = x.elem_count() / cols.max(1);
    match op {
        Op::LayerNorm { eps } => {
            let p = k::layernorm::LayerNormParams {
                rows,
                cols,
                eps: *eps,
            };
            let (w, b) = (inputs[1].as_slice()?, inputs[2].as_slice()?);
            k::layernorm::layernorm(xs, w, Some(b), out, p);
        }
        Op::Gelu { approx } => k::gelu::gelu(xs, out, *approx),
        Op::QuickGelu => k::gelu::quick_gelu(xs, out),
        Op::AddRmsNorm { eps } => {
            let p = k::rmsnorm::RmsNormParams {
                rows,
                cols,
                eps: *eps,
            };
            let (sum, normed) = out.split_at_mut(x.elem_count());
            let (residual, w) = (inputs[1].as_slice()?, inputs[2].as_slice()?);
            k::rmsnorm::residual_rmsnorm(xs, residual, w, sum, normed, p);
        }
        _ => {
            return Err(EngineError::Data(format!(
                "{} has no f32/bf16 CPU kernel",
                op.name()
            )))
        }
    }
    Ok(())
}

/// Ids as u32, each checked against the table size (a bad id is an error, not a crash).
fn ids_u32(ids: &Tensor, vocab: usize) -> Result<Vec<u32>> {
    let raw: Vec<i64> = match ids.dtype() {
        DType::U32 => ids.as_slice::<u32>()?.iter().map(|&i| i as i64).collect(),
        _ => ids.as_slice::<i32>()?.iter().map(|&i| i as i64).collect(),
    };
    raw.into_iter()
        .map(|i| {
            if i < 0 || i as usize >= vocab {
                Err(EngineError::IndexOutOfRange {
                    op: "embedding",
                    index: i as u64,
                    len: vocab,
                })
            } else {
                Ok(i as u32)
            }
        })
        .collect()
}

fn argmax(x: &Tensor, shape: &[usize], rows: usize) -> Result<Tensor> {
    let cols = last(x);
    let mut out = vec![0u32; rows];
    k::argmax::argmax(x.as_slice()?, rows, cols, &mut out);
    Tensor::from_vec(out, shape)
}

fn sample(x: &Tensor, rows: &[k::sample::SampleRow], shape: &[usize]) -> Result<Tensor> {
    let mut out = vec![0u32; rows.len()];
    k::sample::sample(x.as_slice()?, last(x), rows, &mut out);
    Tensor::from_vec(out, shape)
}

/// Penalty offsets must be non-decreasing and end within the entries (the kernel clamps; here
/// a bad CSR is an error).
fn check_offsets(offsets: &[u32], entries: usize) -> Result<()> {
    let bad = offsets.windows(2).position(|w| w[0] > w[1]);
    if let Some(r) = bad {
        return Err(EngineError::Data(format!(
            "penalize: offsets decrease at row {r} ({} then {})",
            offsets[r],
            offsets[r + 1]
        )));
    }
    match offsets.last() {
        Some(&end) if end as usize > entries => Err(EngineError::Data(format!(
            "penalize: offsets end at {end}, past the {entries} entries"
        ))),
        _ => Ok(()),
    }
}

fn cast(x: &Tensor, to: DType, shape: &[usize]) -> Result<Tensor> {
    let f32s: Vec<f32> = match x.dtype() {
        DType::F32 => x.as_slice::<f32>()?.to_vec(),
        DType::BF16 => {
            let mut v = vec![0f32; x.elem_count()];
            k::cast::bf16_to_f32(x.as_slice()?, &mut v);
            v
        }
        DType::F16 => {
            let mut v = vec![0f32; x.elem_count()];
            k::cast::f16_to_f32(x.as_slice()?, &mut v);
            v
        }
        q if q.is_quantized() => {
            let mut v = vec![0f32; x.elem_count()];
            k::quant::dequantize_row(quant_format(q), x.raw_bytes()?, &mut v);
            v
        }
        other => {
            return Err(EngineError::DType {
                op: "cast",
                got: other,
                expected: "float".into(),
            })
        }
    };
    match to {
        DType::F32 => Tensor::from_vec(f32s, shape),
        DType::BF16 => {
            let mut v = vec![bf16::ZERO; f32s.len()];
            k::cast::f32_to_bf16(&f32s, &mut v);
            Tensor::from_vec(v, shape)
        }
        DType::F16 => {
            let mut v = vec![f16::ZERO; f32s.len()];
            k::cast::f32_to_f16(&f32s, &mut v);
            Tensor::from_vec(v, shape)
        }
        other => Err(EngineError::DType {
            op: "cast",
            got: other,
            expected: "float target".into(),
        }),
    }
}
