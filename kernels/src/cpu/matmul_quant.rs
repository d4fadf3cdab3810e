//! `matmul` for GGML block-quantized weights (Q8_0, Q4_0, Q4_1); a child module of `matmul`.
//!
//! Every output follows the canonical order of `matmul` on the dequantized matrix (the values
//! of `dequantize_row`, bit for bit), whatever the path, so a row's result does not depend on
//! M or on which path ran (batch invariance, as for float weights):
//!
//! M >= 4 (prefill, batched decode): each block of weight rows is dequantized once per call
//! into the per-thread f32 scratch and handed to the f32 register tiles of `matmul`.
//!
//! M < 4 (decode GEMV, AVX2): fused dequant-dot that never materialises a weight row, because
//! decode is memory-bound and the quantized bytes are 3-6x smaller than bf16: per 32-element
//! block the integers are widened and scaled in registers by the same `dequant8` as the
//! dequantization, then multiply-added into eight lanes in k order, exactly as the f32 tiles.
//! (Until session 4 this path scaled per block, `d·Σqᵢxᵢ`, which differed from the M >= 4
//! path in the last bits: a request's greedy tokens could change with the batch around it.)
//! The portable fallback takes the dequantize-then-tile path for every M.

use super::{tiles, Isa, MatmulParams, OutPtr, Rows, SCRATCH};
use super::{BLOCKED_BLOCK_ELEMS, MR, NR, PARALLEL_MIN_WORK};
use crate::cpu::quant::{dequantize_row_with, Block, QuantFormat, Q4_0, Q4_1, Q8_0, QK};
use rayon::prelude::*;

/// Weight rows per GEMV task are a multiple of this: the tile widths below divide it.
const R_GEMV: usize = 8;
/// Quantized bytes per rayon task on the GEMV path.
const GEMV_TASK_BYTES: usize = 1 << 15;
/// Below this many quantized bytes a GEMV runs on the calling thread: the 192×576 projections
/// (69 KB in Q4_1) finish in a few µs, about a thread wake-up. Measured on 2 shared Zen 3 cores
/// over a whole SmolLM2-135M decode pass (weights streaming from DRAM): splitting everything
/// from 576×576 up was ~30% faster than one thread; the threshold and task size between
/// 64 KB and 256 KB made no difference above the noise.
const GEMV_PARALLEL_MIN_BYTES: usize = 1 << 17;

pub(super) fn run(
    x: &[f32],
    format: QuantFormat,
    bytes: &[u8],
    out: &mut [f32],
    p: MatmulParams,
    isa: Isa,
) {
    let MatmulParams { m, n, k } = p;
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    if m >= MR || isa == Isa::Portable {
        prefill(x, format, bytes, out, p, isa);
        return;
    }
    match format {
        QuantFormat::Q8_0 => gemv::<Q8_0>(x, bytes, out, p, isa),
        QuantFormat::Q4_0 => gemv::<Q4_0>(x, bytes, out, p, isa),
        QuantFormat::Q4_1 => gemv::<Q4_1>(x, bytes, out, p, isa),
    }
}

/// Dequantize a block of rows into the scratch, then the f32 4×3 tiles (as `matmul::run`).
fn prefill(
    x: &[f32],
    format: QuantFormat,
    bytes: &[u8],
    out: &mut [f32],
    p: MatmulParams,
    isa: Isa,
) {
    let MatmulParams { m, n, k } = p;
    let rb = format.row_bytes(k);
    let nb = super::block_rows(n, k, NR, BLOCKED_BLOCK_ELEMS);
    let blocks = n.div_ceil(nb);
    let optr = OutPtr(out.as_mut_ptr());
    let task = |b: usize| {
        let n0 = b * nb;
        let rows = nb.min(n - n0);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < rows * k {
                s.resize(rows * k, 0.0);
            }
            let wf = &mut s[..rows * k];
            for (r, dst) in wf.chunks_exact_mut(k).enumerate() {
                let src = &bytes[(n0 + r) * rb..(n0 + r + 1) * rb];
                dequantize_row_with(format, src, dst, isa);
            }
            // SAFETY: block b writes only columns n0..n0+rows of the m rows of out (in bounds
            // by the asserts in `matmul_with`); blocks do not overlap.
            unsafe {
                let o = optr.get().add(n0);
                tiles(x, m, Rows::<f32>::Widened(wf), rows, k, o, n, isa);
            }
        });
    };
    if blocks > 1 && m * n * k >= PARALLEL_MIN_WORK {
        (0..blocks).into_par_iter().for_each(task);
    } else {
        (0..blocks).for_each(task);
    }
}

/// The fused GEMV (AVX2 only: the portable path always dequantizes, see `run`).
fn gemv<B: Block>(x: &[f32], bytes: &[u8], out: &mut [f32], p: MatmulParams, isa: Isa) {
    let MatmulParams { m, n, k } = p;
    let rb = B::BYTES * (k / QK);
    let nb = (GEMV_TASK_BYTES / rb).max(1).div_ceil(R_GEMV) * R_GEMV;
    let blocks = n.div_ceil(nb);
    let optr = OutPtr(out.as_mut_ptr());
    let x = &x[..m * k];
    let task = |b: usize| {
        let n0 = b * nb;
        let rows = nb.min(n - n0);
        let w = &bytes[n0 * rb..(n0 + rows) * rb];
        // SAFETY: as in `prefill`: disjoint, in-bounds columns n0..n0+rows per task.
        unsafe {
            let o = optr.get().add(n0);
            match isa {
                Isa::Portable => unreachable!("the portable path dequantizes (see `run`)"),
                #[cfg(target_arch = "x86_64")]
                // MX·R accumulators: enough independent FMA chains (each lane's chain is
                // sequential in k) without spilling the 16 ymm registers (3 x 4 spilled).
                Isa::Avx2 => match m {
                    1 => avx2::gemv::<B, 1, 8>(x, w, rows, k, o, n),
                    2 => avx2::gemv::<B, 2, 4>(x, w, rows, k, o, n),
                    _ => avx2::gemv::<B, 3, 2>(x, w, rows, k, o, n),
                },
            }
        }
    };
    if blocks > 1 && n * rb >= GEMV_PARALLEL_MIN_BYTES {
        (0..blocks).into_par_iter().for_each(task);
    } else {
        (0..blocks).for_each(task);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Block, QK};
    use crate::cpu::quant::dequant8;
    use crate::cpu::vecops::hsum;
    use std::arch::x86_64::*;

    /// MX rows of x against R weight rows (row stride `rb` bytes): MX·R vector accumulators,
    /// lane l of each summing k ≡ l (mod 8) in k order with FMAs on the dequantized values,
    /// then `hsum` (= `reduce8`): the canonical order of `matmul`, no tail since 32 | k.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<B: Block, const MX: usize, const R: usize>(
        x: *const f32,
        k: usize,
        w: *const u8,
        rb: usize,
        pf: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        let nbk = k / QK;
        let mut acc = [[_mm256_setzero_ps(); R]; MX];
        // The R rows are one contiguous stretch of R·rb bytes read as R short interleaved
        // streams, which the hardware prefetcher follows poorly; so fetch ahead linearly,
        // R·BYTES bytes per block step, `pf` bytes past the tile's start (prefetches do not
        // fault, and wrapping_add keeps the pointer arithmetic defined past the end).
        let step = R * B::BYTES;
        for b in 0..nbk {
            if pf != 0 {
                let ahead = w.wrapping_add(pf + b * step);
                let mut off = 0;
                while off < step {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(off) as *const i8);
                    off += 64;
                }
            }
            if MX == 1 {
                // One x row: its block's 4 vectors are loaded once for the R weight rows.
                let xb = x.add(b * QK);
                let xv = [0, 8, 16, 24].map(|t| _mm256_loadu_ps(xb.add(t)));
                for (j, a) in acc[0].iter_mut().enumerate() {
                    let p = w.add(j * rb + b * B::BYTES);
                    let q = B::raw8(p);
                    let (d, mn) = B::scales8(p);
                    for (v, xt) in q.iter().zip(&xv) {
                        *a = _mm256_fmadd_ps(*xt, dequant8::<B>(*v, d, mn), *a);
                    }
                }
                continue;
            }
            for j in 0..R {
                let p = w.add(j * rb + b * B::BYTES);
                let q = B::raw8(p);
                let (d, mn) = B::scales8(p);
                for (t, v) in q.iter().enumerate() {
                    let wv = dequant8::<B>(*v, d, mn);
                    for (i, ai) in acc.iter_mut().enumerate() {
                        let xv = _mm256_loadu_ps(x.add(i * k + b * QK + 8 * t));
                        ai[j] = _mm256_fmadd_ps(xv, wv, ai[j]);
                    }
                }
            }
        }
        for (i, ai) in acc.iter().enumerate() {
            for (j, a) in ai.iter().enumerate() {
                *o.add(i * ldo + j) = hsum(*a);
            }
        }
    }

    /// All weight rows of a task, R at a time, then the remainder one by one.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `x` holds MX·k values, `w` holds `rows` rows,
    /// and `o + i * ldo + j` is writable for i < MX, j < rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemv<B: Block, const MX: usize, const R: usize>(
        x: &[f32],
        w: &[u8],
        rows: usize,
        k: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        let rb = k / QK * B::BYTES;
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        // One tile ahead: measured best (two or four tiles were no better, none ~1.5-3x slower).
        let pf = R * rb;
        let mut j = 0;
        while j + R <= rows {
            tile::<B, MX, R>(xp, k, wp.add(j * rb), rb, pf, o.add(j), ldo);
            j += R;
        }
        while j < rows {
            tile::<B, MX, 1>(xp, k, wp.add(j * rb), rb, 0, o.add(j), ldo);
            j += 1;
        }
    }
}

#[cfg(test)]
#[path = "matmul_quant_tests.rs"]
mod tests;
