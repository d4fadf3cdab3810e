//! The op set on CUDA tensors: validation by `Op::check`, an honest `supports`, then one
//! kernel launch (params struct by value) per op. Launch shapes follow the notes at the top
//! of each `kernels/cuda/*.cu`.

use super::device::DeviceCtx;
use super::launch::{launch, Shape};
use super::{cuda_storage, transfer, view_ptr, CudaStorage};
use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{shape_err, EngineError, Result};
use crate::op::{GeluApprox, Op, RopeStyle};
use crate::tensor::{Storage, Tensor};
use kiln_kernels::cuda::params as p;
use std::sync::Arc;

pub struct CudaBackend;

fn act(d: DType) -> bool {
    matches!(d, DType::F32 | DType::BF16)
}

fn cast_kernel(from: DType, to: DType) -> Option<&'static str> {
    use DType::*;
    Some(match (from, to) {
        (F32, BF16) => "kiln_cast_f32_bf16",
        (F32, F16) => "kiln_cast_f32_f16",
        (BF16, F32) => "kiln_cast_bf16_f32",
        (F16, F32) => "kiln_cast_f16_f32",
        (BF16, F16) => "kiln_cast_bf16_f16",
        (F16, BF16) => "kiln_cast_f16_bf16",
        _ => return None,
    })
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn supports(&self, op: &Op, dtypes: &[DType]) -> bool {
        use DType::*;
        match op {
            Op::Embedding => matches!(dtypes, [F32 | BF16 | F16, U32 | I32]),
            Op::RmsNorm { .. } | Op::SiluMul | Op::Add | Op::Mul => {
                matches!(dtypes, [a, b] if a == b && act(*a))
            }
            Op::Rope { .. } => matches!(dtypes, [x, U32, F32] if act(*x)),
            Op::LayerNorm { .. } | Op::AddRmsNorm { .. } => {
                matches!(dtypes, [a, b, c] if a == b && b == c && act(*a))
            }
            Op::Gelu { .. } | Op::QuickGelu => matches!(dtypes, [x] if act(*x)),
            Op::Scale { .. } => matches!(dtypes, [x] if act(*x)),
            Op::Softmax { .. } | Op::Argmax => dtypes == [F32],
            Op::Cast { to } => {
                matches!(dtypes, [from] if from == to && !from.is_quantized()
                    || cast_kernel(*from, *to).is_some())
            }
            Op::CopyRows { .. } => dtypes.len() == 2 && dtypes[0] == dtypes[1],
            Op::Attention { .. } => dtypes == [F32, F32, F32],
            Op::ReshapeAndCache => matches!(dtypes, [F32 | BF16, U32]),
            Op::PagedAttention { .. } => {
                matches!(dtypes, [F32, k, v, U32, U32, U32] if k == v && matches!(k, F32 | BF16))
            }
            Op::VarlenAttention { .. } => dtypes == [F32, F32, F32, U32, U32],
            Op::Matmul { .. } => super::ops_matmul::supports(op, dtypes),
            Op::Sample { .. } => dtypes == [F32],
            Op::Penalize { .. } => dtypes == [F32, U32, U32],
        }
    }

    fn execute(&self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor> {
        let (shape, out_dtype) = super::super::check_supported(self, op, inputs)?;
        let dev = same_device(op.name(), inputs)?;
        let inputs: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.contiguous())
            .collect::<Result<_>>()?;
        let n: usize = shape.iter().product();
        let out = CudaStorage::alloc(&dev, out_dtype, n)?;
        if n > 0 {
            run(&dev, op, &inputs, &out)?;
        }
        Ok(Tensor::from_storage(Storage::Cuda(out), &shape))
    }

    fn execute_inplace(&self, op: &Op, dst: &mut Tensor, inputs: &[&Tensor]) -> Result<()> {
        op.check_inplace(dst, inputs)?;
        if *op == Op::ReshapeAndCache {
            let dtypes = [inputs[0].dtype(), inputs[1].dtype()];
            if !self.supports(op, &dtypes) {
                return Err(EngineError::Unsupported {
                    op: op.name(),
                    backend: self.name(),
                    dtypes: dtypes.to_vec(),
                });
            }
            same_device(op.name(), &[&*dst, inputs[0], inputs[1]])?;
            return super::ops_paged::reshape_and_cache(dst, inputs[0], inputs[1]);
        }
        let Op::CopyRows { dst_row } = *op else {
            return Err(EngineError::Unsupported {
                op: op.name(),
                backend: self.name(),
                dtypes: vec![dst.dtype()],
            });
        };
        let src = inputs[0];
        let dev = same_device(op.name(), &[&*dst, src])?;
        if !dst.is_contiguous() {
            return Err(shape_err(op.name(), "the destination must be contiguous"));
        }
        // Copy-on-write, as on the CPU: a destination sharing its storage is copied first.
        dst.make_storage_unique()?;
        let src = src.contiguous()?;
        let row_len: usize = dst.shape()[1..].iter().product();
        let dtype = dst.dtype();
        let offset = transfer::byte_len(dtype, dst_row * row_len)?;
        let bytes = transfer::byte_len(dtype, src.elem_count())?;
        let d = view_ptr(dst, cuda_storage(dst, op.name())?) + offset as u64;
        let s = view_ptr(&src, cuda_storage(&src, op.name())?);
        transfer::copy_d2d(&dev, d, s, bytes)
    }
}

/// The device every input is on (all must be on the same CUDA device).
fn same_device(op: &'static str, inputs: &[&Tensor]) -> Result<Arc<DeviceCtx>> {
    let first = cuda_storage(inputs[0], op)?;
    for t in &inputs[1..] {
        let s = cuda_storage(t, op)?;
        if s.ordinal() != first.ordinal() {
            return Err(EngineError::Device(format!(
                "{op}: inputs on cuda:{} and cuda:{}",
                first.ordinal(),
                s.ordinal()
            )));
        }
    }
    Ok(first.device_ctx().clone())
}

fn ptr(t: &Tensor) -> Result<u64> {
    Ok(view_ptr(t, cuda_storage(t, "launch")?))
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err(op, format!("{what} {v} exceeds u32")))
}

/// Grid of a grid-stride elementwise kernel over `n` elements of `pack` per thread step.
fn elementwise(dev: &DeviceCtx, n: usize, pack: usize) -> Shape {
    let blocks = n.div_ceil(256 * pack).min(8 * dev.sm_count as usize);
    Shape::linear(blocks as u32, 256)
}

/// Grid of a one-block-per-row kernel.
fn rows_shape(dev: &DeviceCtx, rows: usize, threads: u32) -> Shape {
    Shape::linear(rows.min(8 * dev.sm_count as usize) as u32, threads)
}

/// Threads per row for the row reductions: enough for ~4 packs a thread, 128..1024.
fn row_threads(cols: usize, pack: usize, min: usize) -> u32 {
    (cols.div_ceil(4 * pack).div_ceil(32) * 32).clamp(min, 1024) as u32
}

fn pack(d: DType) -> usize {
    if d == DType::F32 {
        4
    } else {
        8
    }
}

fn run(dev: &DeviceCtx, op: &Op, x: &[Tensor], out: &CudaStorage) -> Result<()> {
    let name = op.name();
    let o = out.device_ptr();
    let n = out.len();
    let dt = x[0].dtype();
    let bf = dt == DType::BF16;
    match op {
        Op::Add | Op::Mul => {
            let kernel = match (op, bf) {
                (Op::Add, false) => "kiln_add_f32",
                (Op::Add, true) => "kiln_add_bf16",
                (_, false) => "kiln_mul_f32",
                (_, true) => "kiln_mul_bf16",
            };
            let params = p::BinaryParams {
                a: ptr(&x[0])?,
                b: ptr(&x[1])?,
                out: o,
                n: n as u64,
            };
            launch(dev, "binary", kernel, elementwise(dev, n, pack(dt)), params)
        }
        Op::Scale { factor } => {
            let kernel = if bf {
                "kiln_scale_bf16"
            } else {
                "kiln_scale_f32"
            };
            let params = p::ScaleParams {
                a: ptr(&x[0])?,
                out: o,
                n: n as u64,
                scale: *factor,
            };
            launch(dev, "binary", kernel, elementwise(dev, n, pack(dt)), params)
        }
        Op::SiluMul => {
            let kernel = if bf {
                "kiln_silu_mul_bf16"
            } else {
                "kiln_silu_mul_f32"
            };
            let params = p::SiluMulParams {
                gate: ptr(&x[0])?,
                up: ptr(&x[1])?,
                out: o,
                n: n as u64,
            };
            launch(
                dev,
                "silu_mul",
                kernel,
                elementwise(dev, n, pack(dt)),
                params,
            )
        }
        Op::Gelu { .. } | Op::QuickGelu => {
            let approx = match op {
                Op::Gelu { approx } => Some(*approx),
                _ => None,
            };
            let kernel = match (approx, bf) {
                (Some(GeluApprox::Erf), false) => "kiln_gelu_erf_f32",
                (Some(GeluApprox::Erf), true) => "kiln_gelu_erf_bf16",
                (Some(GeluApprox::Tanh), false) => "kiln_gelu_tanh_f32",
                (Some(GeluApprox::Tanh), true) => "kiln_gelu_tanh_bf16",
                (None, false) => "kiln_quick_gelu_f32",
                (None, true) => "kiln_quick_gelu_bf16",
            };
            let params = p::UnaryParams {
                x: ptr(&x[0])?,
                out: o,
                n: n as u64,
            };
            launch(dev, "gelu", kernel, elementwise(dev, n, pack(dt)), params)
        }
        Op::LayerNorm { eps } => {
            let cols = last(&x[0]);
            let rows = n / cols;
            let kernel = if bf {
                "kiln_layernorm_bf16"
            } else {
                "kiln_layernorm_f32"
            };
            let params = p::LayerNormParams {
                x: ptr(&x[0])?,
                w: ptr(&x[1])?,
                b: ptr(&x[2])?,
                out: o,
                rows: rows as u64,
                cols: u32_of(name, "hidden size", cols)?,
                eps: *eps,
            };
            let shape = rows_shape(dev, rows, row_threads(cols, pack(dt), 128));
            launch(dev, "layernorm", kernel, shape, params)
        }
        Op::AddRmsNorm { eps } => {
            // out = [sum, normed], each x's size: the kernel writes both halves.
            let half = x[0].elem_count();
            let cols = last(&x[0]);
            let rows = half / cols;
            let kernel = if bf {
                "kiln_residual_rmsnorm_bf16"
            } else {
                "kiln_residual_rmsnorm_f32"
            };
            let params = p::ResidualRmsNormParams {
                x: ptr(&x[0])?,
                residual: ptr(&x[1])?,
                w: ptr(&x[2])?,
                sum: o,
                out: o + transfer::byte_len(dt, half)? as u64,
                rows: rows as u64,
                cols: u32_of(name, "hidden size", cols)?,
                eps: *eps,
            };
            let shape = rows_shape(dev, rows, row_threads(cols, pack(dt), 128));
            launch(dev, "rmsnorm", kernel, shape, params)
        }
        Op::RmsNorm { eps } => {
            let cols = last(&x[0]);
            let rows = n / cols;
            let kernel = if bf {
                "kiln_rmsnorm_bf16"
            } else {
                "kiln_rmsnorm_f32"
            };
            let params = p::RmsNormParams {
                x: ptr(&x[0])?,
                w: ptr(&x[1])?,
                out: o,
                rows: rows as u64,
                cols: u32_of(name, "hidden size", cols)?,
                eps: *eps,
            };
            let shape = rows_shape(dev, rows, row_threads(cols, pack(dt), 128));
            launch(dev, "rmsnorm", kernel, shape, params)
        }
        Op::Softmax { scale, causal } => {
            let cols = last(&x[0]);
            let rows = n / cols;
            let params = p::SoftmaxParams {
                x: ptr(&x[0])?,
                out: o,
                rows: rows as u64,
                cols: u32_of(name, "row length", cols)?,
                scale: *scale,
                causal: u32::from(*causal),
            };
            let shape = rows_shape(dev, rows, row_threads(cols, 4, 256));
            launch(dev, "softmax", "kiln_softmax_f32", shape, params)
        }
        Op::Argmax => {
            let cols = last(&x[0]);
            let rows = n;
            let params = p::ArgmaxParams {
                x: ptr(&x[0])?,
                out: o,
                rows: rows as u64,
                cols: u32_of(name, "row length", cols)?,
            };
            let shape = rows_shape(dev, rows, row_threads(cols, 4, 256));
            launch(dev, "argmax", "kiln_argmax_f32", shape, params)
        }
        Op::Embedding => embedding(dev, &x[0], &x[1], o),
        Op::Rope {
            style,
            attention_scaling,
        } => {
            let bytes = out.len() * dt.block_bytes();
            transfer::copy_d2d(dev, o, ptr(&x[0])?, bytes)?;
            let s = x[0].shape();
            let (tokens, heads, head_dim) = (s[0], s[1], s[2]);
            let params = p::RopeParams {
                x: o,
                positions: ptr(&x[1])?,
                inv_freq: ptr(&x[2])?,
                tokens: tokens as u64,
                heads: u32_of(name, "heads", heads)?,
                head_dim: u32_of(name, "head_dim", head_dim)?,
                interleaved: u32::from(*style == RopeStyle::Interleaved),
                attention_scaling: *attention_scaling,
            };
            let sms = dev.sm_count as usize;
            let grid_x = tokens.min(8 * sms);
            // Split the heads over gridDim.y when there are too few tokens to fill the card.
            let grid_y = heads.min((2 * sms).div_ceil(grid_x.max(1))).max(1);
            let shape = Shape {
                grid: (grid_x as u32, grid_y as u32, 1),
                block: 128,
                shared_bytes: u32_of(name, "head_dim", head_dim * 4)?,
            };
            let kernel = if bf {
                "kiln_rope_bf16"
            } else {
                "kiln_rope_f32"
            };
            launch(dev, "rope", kernel, shape, params)
        }
        Op::Cast { to } => {
            let src = ptr(&x[0])?;
            match cast_kernel(dt, *to) {
                Some(kernel) => {
                    let params = p::CastParams {
                        x: src,
                        out: o,
                        n: n as u64,
                    };
                    launch(dev, "cast", kernel, elementwise(dev, n, 8), params)
                }
                None => transfer::copy_d2d(dev, o, src, transfer::byte_len(dt, n)?),
            }
        }
        Op::Attention { scale, causal } => {
            super::ops_attention::attention(dev, *scale, *causal, x, o)
        }
        Op::Matmul { bias, residual } => super::ops_matmul::run(dev, x, *bias, *residual, o),
        Op::PagedAttention {
            scale,
            causal,
            decode_only,
        } => super::ops_paged::paged_attention(*scale, *causal, *decode_only, x, o),
        Op::VarlenAttention { scale, causal } => {
            super::ops_paged::varlen_attention(*scale, *causal, x, o)
        }
        Op::Sample { rows } => super::ops_sample::sample(rows, &x[0], out),
        Op::Penalize { rows } => super::ops_sample::penalize(rows, x, out),
        Op::CopyRows { .. } | Op::ReshapeAndCache => Err(EngineError::Unsupported {
            op: name,
            backend: "cuda",
            dtypes: x.iter().map(|t| t.dtype()).collect(),
        }),
    }
}

fn last(t: &Tensor) -> usize {
    t.shape().last().copied().unwrap_or(1).max(1)
}

/// The dense copy of a strided view (`shape`, `strides` in elements, first element at device
/// address `src`, `elem`-byte elements) into `dst`: one `kiln_copy_strided_<elem>` launch over
/// the collapsed view (`cpu::copy::collapse`). A view still wider than
/// `COPY_MAX_RANK` dims after collapsing, or with a dim past u32, takes the 2D-memcpy gather.
pub(crate) fn copy_strided(
    dev: &DeviceCtx,
    dst: u64,
    src: u64,
    shape: &[usize],
    strides: &[usize],
    elem: usize,
) -> Result<()> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(());
    }
    let dims = kiln_kernels::cpu::copy::collapse(shape, strides);
    match dims.as_slice() {
        [] => return transfer::copy_d2d(dev, dst, src, elem),
        [(_, 1)] => return transfer::copy_d2d(dev, dst, src, n * elem),
        _ => {}
    }
    let kernel = match elem {
        1 => Some("kiln_copy_strided_1"),
        2 => Some("kiln_copy_strided_2"),
        4 => Some("kiln_copy_strided_4"),
        _ => None,
    };
    let fits = dims.len() <= p::COPY_MAX_RANK && dims.iter().all(|&(d, _)| d <= u32::MAX as usize);
    let Some(kernel) = kernel.filter(|_| fits) else {
        return transfer::gather_strided(dev, dst, src, shape, strides, elem);
    };
    let mut params = p::CopyStridedParams {
        src,
        dst,
        n: n as u64,
        shape: [1; p::COPY_MAX_RANK],
        strides: [0; p::COPY_MAX_RANK],
    };
    let pad = p::COPY_MAX_RANK - dims.len();
    for (i, &(d, s)) in dims.iter().enumerate() {
        params.shape[pad + i] = d as u32;
        params.strides[pad + i] = s as u64;
    }
    launch(dev, "copy", kernel, elementwise(dev, n, 16 / elem), params)
}

/// Gathers rows of `table` for `ids`; the ids are checked against the table size on the host
/// first (a bad id is an error, as on the CPU, not a NaN row).
fn embedding(dev: &DeviceCtx, table: &Tensor, ids: &Tensor, out: u64) -> Result<()> {
    let (vocab, hidden) = (table.shape()[0], table.shape()[1]);
    let host = ids.to_device(crate::Device::Cpu)?;
    let bad = match ids.dtype() {
        DType::U32 => host
            .as_slice::<u32>()?
            .iter()
            .find(|&&i| i as usize >= vocab)
            .map(|&i| i as i64),
        _ => host
            .as_slice::<i32>()?
            .iter()
            .find(|&&i| i < 0 || i as usize >= vocab)
            .map(|&i| i as i64),
    };
    if let Some(i) = bad {
        return Err(EngineError::IndexOutOfRange {
            op: "embedding",
            index: i as u64,
            len: vocab,
        });
    }
    let tokens = ids.elem_count();
    let kernel = match table.dtype() {
        DType::BF16 => "kiln_embedding_bf16",
        DType::F16 => "kiln_embedding_f16",
        _ => "kiln_embedding_f32",
    };
    let params = p::EmbeddingParams {
        table: ptr(table)?,
        ids: ptr(ids)?,
        out,
        tokens: tokens as u64,
        hidden: u32_of("embedding", "hidden size", hidden)?,
        vocab: u32_of("embedding", "vocab", vocab)?,
    };
    let threads = if hidden <= 1024 { 128 } else { 256 };
    let blocks = tokens.min(16 * dev.sm_count as usize);
    launch(
        dev,
        "embedding",
        kernel,
        Shape::linear(blocks as u32, threads),
        params,
    )
}
