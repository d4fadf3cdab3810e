//! `Op::Attention` on CUDA: one launch of `kiln_attention_f32` (kernels/cuda/attention.cu),
//! one block per (query row, head), warps splitting the visible keys.

use super::device::DeviceCtx;
use super::launch::{launch, Shape};
use super::{cuda_storage, view_ptr};
use crate::dtype::DType;
use crate::error::{shape_err, EngineError, Result};
use crate::tensor::Tensor;
use kiln_kernels::cuda::params::AttentionParams;

/// Largest head_dim the kernel handles (its per-lane register slices and shared merge buffer).
pub(super) const MAX_HEAD_DIM: usize = 256;

/// Most warps per block (the kernel's `ATT_MAX_WARPS`).
const MAX_WARPS: usize = 8;

fn u32_of(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err("attention", format!("{what} {v} exceeds u32")))
}

fn ptr(t: &Tensor) -> Result<u64> {
    Ok(view_ptr(t, cuda_storage(t, "attention")?))
}

/// Launches attention over contiguous f32 `q`, `k`, `v` (already checked by `Op::check`)
/// into `out` ([q_len, heads, head_dim] f32).
pub(super) fn attention(
    dev: &DeviceCtx,
    scale: f32,
    causal: bool,
    x: &[Tensor],
    out: u64,
) -> Result<()> {
    let (q, k, v) = (&x[0], &x[1], &x[2]);
    let (q_len, heads, d) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let (kv_len, kv_heads) = (k.shape()[0], k.shape()[1]);
    if d > MAX_HEAD_DIM {
        return Err(EngineError::Unsupported {
            op: "attention",
            backend: "cuda",
            dtypes: vec![DType::F32; 3],
        });
    }
    let items = q_len * heads;
    if items == 0 || d == 0 {
        return Ok(());
    }
    let params = AttentionParams {
        q: ptr(q)?,
        k: ptr(k)?,
        v: ptr(v)?,
        out,
        q_len: u32_of("q_len", q_len)?,
        kv_len: u32_of("kv_len", kv_len)?,
        heads: u32_of("heads", heads)?,
        kv_heads: u32_of("kv_heads", kv_heads)?,
        head_dim: u32_of("head_dim", d)?,
        scale,
        causal: u32::from(causal),
    };
    // Four warps per block when the items fill the card; more when they do not (decode),
    // but no more than there are keys for (each warp takes a chunk of at least ~8 keys).
    let sms = dev.sm_count as usize;
    let max_warps = if items >= 4 * sms { 4 } else { MAX_WARPS };
    let warps = kv_len.div_ceil(8).clamp(1, max_warps);
    let blocks = items.min(1 << 20);
    launch(
        dev,
        "attention",
        "kiln_attention_f32",
        Shape::linear(blocks as u32, (32 * warps) as u32),
        params,
    )
}
