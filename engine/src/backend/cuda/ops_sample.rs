//! `Op::Sample` and `Op::Penalize` on CUDA (kernels/cuda/sample.cu): the per-row parameters
//! go up as one small array next to the launch; the logits never leave the device, and a
//! sampling step reads back only the token ids.

use super::launch::{launch, Shape};
use super::{cuda_storage, transfer, view_ptr, CudaStorage};
use crate::error::{shape_err, Result};
use crate::op::{PenaltyRow, SampleRow};
use crate::tensor::Tensor;
use kiln_kernels::cuda::params::{PenalizeParams, SampleParams};

fn ptr(t: &Tensor, op: &str) -> Result<u64> {
    Ok(view_ptr(t, cuda_storage(t, op)?))
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err(op, format!("{what} {v} exceeds u32")))
}

/// The rows as `kiln_kernels::cuda::params::SampleRowParams` (24 bytes each, little endian).
fn sample_row_bytes(rows: &[SampleRow]) -> Vec<u8> {
    let mut b = Vec::with_capacity(rows.len() * 24);
    for r in rows {
        b.extend_from_slice(&r.temperature.to_le_bytes());
        b.extend_from_slice(&r.top_k.to_le_bytes());
        b.extend_from_slice(&r.top_p.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&r.uniform.to_le_bytes());
    }
    b
}

/// The rows as `PenaltyRowParams` (12 bytes each).
fn penalty_row_bytes(rows: &[PenaltyRow]) -> Vec<u8> {
    let mut b = Vec::with_capacity(rows.len() * 12);
    for r in rows {
        for v in [r.repetition, r.frequency, r.presence] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    b
}

/// One block per row (up to ~8 per SM, looping over the rest); 128..1024 threads, about 16
/// logits per thread per pass.
fn row_shape(sm_count: u32, rows: usize, vocab: usize) -> Shape {
    let threads = (vocab.div_ceil(16).div_ceil(32) * 32).clamp(128, 1024);
    Shape::linear(rows.min(8 * sm_count as usize) as u32, threads as u32)
}

/// Token ids [rows] u32 into `out` from contiguous logits [.., vocab] (checked by `Op::check`).
pub(super) fn sample(rows: &[SampleRow], logits: &Tensor, out: &CudaStorage) -> Result<()> {
    let dev = out.device_ctx();
    let vocab = logits.shape().last().copied().unwrap_or(1);
    let row_params = transfer::upload(dev, &sample_row_bytes(rows))?;
    let params = SampleParams {
        logits: ptr(logits, "sample")?,
        row_params: row_params.ptr(),
        out: out.device_ptr(),
        rows: rows.len() as u64,
        vocab: u32_of("sample", "vocab", vocab)?,
    };
    let shape = row_shape(dev.sm_count, rows.len(), vocab);
    // `row_params` may go back to the allocator after the launch: the stream orders any
    // later use of that memory after this kernel.
    launch(dev, "sample", "kiln_sample_f32", shape, params)
}

/// The logits `x[0]` copied into `out`, then penalised there in place.
pub(super) fn penalize(rows: &[PenaltyRow], x: &[Tensor], out: &CudaStorage) -> Result<()> {
    let dev = out.device_ctx();
    let (logits, offsets, entries) = (&x[0], &x[1], &x[2]);
    let bytes = transfer::byte_len(logits.dtype(), out.len())?;
    transfer::copy_d2d(dev, out.device_ptr(), ptr(logits, "penalize")?, bytes)?;
    let n_entries = entries.shape()[0];
    if n_entries == 0 || rows.is_empty() {
        return Ok(());
    }
    let vocab = logits.shape().last().copied().unwrap_or(1);
    let row_params = transfer::upload(dev, &penalty_row_bytes(rows))?;
    let params = PenalizeParams {
        logits: out.device_ptr(),
        offsets: ptr(offsets, "penalize")?,
        entries: ptr(entries, "penalize")?,
        row_params: row_params.ptr(),
        rows: rows.len() as u64,
        n_entries: u32_of("penalize", "entries", n_entries)?,
        vocab: u32_of("penalize", "vocab", vocab)?,
    };
    let blocks = rows.len().min(8 * dev.sm_count as usize) as u32;
    launch(
        dev,
        "sample",
        "kiln_penalize_f32",
        Shape::linear(blocks, 256),
        params,
    )
}
