//! `matmul` for GGML block-quantized weights (Q8_0, Q4_0, Q4_1); a child module of `matmul`.
//!
//! M >= 4 (prefill): each block of weight rows is dequantized exactly (as `dequantize_row`) into
//! the per-thread f32 scratch and handed to the f32 register-tile path of `matmul`, so results
//! equal `matmul` with F32 weights on the dequantized matrix, bit for bit.
//!
//! M < 4 (decode GEMV): fused dequant-dot that never materialises a weight row, because decode
//! is memory-bound and the quantized bytes are 3-6x smaller than bf16. Per 32-element block
//! the stored integers are widened to f32 and dotted with x, and the scales are applied once
//! per block: `d·Σ qᵢxᵢ` (Q8_0), `d·Σ qᵢxᵢ + d·(−8·Σ xᵢ)` (Q4_0), `d·Σ qᵢxᵢ + m·Σ xᵢ` (Q4_1), the
//! per-block sums of x computed once per call and shared by all N rows. The summation order
//! differs from the f32 path, so these results match the exact dot product within f32 rounding
//! rather than bit for bit; they do not depend on how the rows are split over threads.

use super::{tiles, Isa, MatmulParams, OutPtr, Rows, SCRATCH};
use super::{BLOCKED_BLOCK_ELEMS, MR, NR, PARALLEL_MIN_WORK};
use crate::cpu::quant::{dequantize_row_with, Block, QuantFormat, Q4_0, Q4_1, Q8_0, QK};
use rayon::prelude::*;

/// Weight rows per GEMV register tile: independent FMA chains per x row.
const R_GEMV: usize = 4;
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
    if m >= MR {
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
    let nb = (BLOCKED_BLOCK_ELEMS / k).max(1).div_ceil(NR) * NR;
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

/// Per x row and block, `scale·Σx` in eight lanes (lane l: elements l, l+8, l+16, l+24): the
/// `m·Σx` term of Q4_1 (scale 1) or Q4_0's offset `d·(−8·Σx)` (scale −8, exact: a power of
/// two), kept as a vector so the AVX2 path adds it with one FMA per block and reduces the
/// lanes only once per output.
fn block_sums(x: &[f32], m: usize, k: usize, scale: f32) -> Vec<f32> {
    let mut xs = vec![0f32; m * k / QK * 8];
    for (xb, s) in x[..m * k].chunks_exact(QK).zip(xs.chunks_exact_mut(8)) {
        for (l, sl) in s.iter_mut().enumerate() {
            *sl = scale * ((xb[l] + xb[l + 8]) + (xb[l + 16] + xb[l + 24]));
        }
    }
    xs
}

fn gemv<B: Block>(x: &[f32], bytes: &[u8], out: &mut [f32], p: MatmulParams, isa: Isa) {
    let MatmulParams { m, n, k } = p;
    let rb = B::BYTES * (k / QK);
    // The portable path offsets the integers itself and only reads these for Q4_1's m·Σx.
    let xs = if B::HAS_MIN {
        block_sums(x, m, k, 1.0)
    } else if B::OFFSET != 0 {
        block_sums(x, m, k, -(B::OFFSET as f32))
    } else {
        Vec::new()
    };
    let nb = (GEMV_TASK_BYTES / rb).max(1).div_ceil(R_GEMV) * R_GEMV;
    let blocks = n.div_ceil(nb);
    let optr = OutPtr(out.as_mut_ptr());
    let (x, xs) = (&x[..m * k], &xs[..]);
    let task = |b: usize| {
        let n0 = b * nb;
        let rows = nb.min(n - n0);
        let w = &bytes[n0 * rb..(n0 + rows) * rb];
        // SAFETY: as in `prefill`: disjoint, in-bounds columns n0..n0+rows per task.
        unsafe {
            let o = optr.get().add(n0);
            match isa {
                Isa::Portable => portable::gemv::<B>(x, xs, m, w, rows, k, o, n),
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => match m {
                    1 => avx2::gemv::<B, 1>(x, xs, w, rows, k, o, n),
                    2 => avx2::gemv::<B, 2>(x, xs, w, rows, k, o, n),
                    _ => avx2::gemv::<B, 3>(x, xs, w, rows, k, o, n),
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

mod portable {
    use super::{Block, QK};

    /// One output at a time: per block, the f32 dot of the integer values with x, scaled.
    ///
    /// # Safety
    /// `o + i * ldo + j` must be writable for i < m, j < rows; `w` holds `rows` rows.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemv<B: Block>(
        x: &[f32],
        xs: &[f32],
        m: usize,
        w: &[u8],
        rows: usize,
        k: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        let nbk = k / QK;
        let rb = nbk * B::BYTES;
        let mut q = [0f32; QK];
        for j in 0..rows {
            let wr = &w[j * rb..(j + 1) * rb];
            for i in 0..m {
                let mut acc = 0f32;
                for (b, blk) in wr.chunks_exact(B::BYTES).enumerate() {
                    let (d, mn) = B::scales(blk);
                    B::values(blk, &mut q);
                    let xb = &x[i * k + b * QK..i * k + (b + 1) * QK];
                    let s = q.iter().zip(xb).fold(0f32, |s, (a, b)| a.mul_add(*b, s));
                    acc = d.mul_add(s, acc);
                    if B::HAS_MIN {
                        let sx: f32 = xs[(i * nbk + b) * 8..(i * nbk + b + 1) * 8].iter().sum();
                        acc = mn.mul_add(sx, acc);
                    }
                }
                *o.add(i * ldo + j) = acc;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Block, QK, R_GEMV};
    use crate::cpu::vecops::hsum;
    use std::arch::x86_64::*;

    /// MX rows of x against R weight rows (row stride `rb` bytes): MX·R vector accumulators,
    /// each block's dot kept in its own short chain and folded in with one FMA by `d`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<B: Block, const MX: usize, const R: usize>(
        x: *const f32,
        xs: *const f32,
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
            for j in 0..R {
                let p = w.add(j * rb + b * B::BYTES);
                let q = B::raw8(p);
                let (d, mn) = B::scales8(p);
                // Q4_0's offset term is d·(−8·Σx): the block sums come pre-scaled.
                let off = if B::HAS_MIN { mn } else { d };
                for (i, ai) in acc.iter_mut().enumerate() {
                    let xp = x.add(i * k + b * QK);
                    // One 4-deep chain per block; the R rows (and the next blocks, which do
                    // not depend on it) give the out-of-order core independent work.
                    let mut s = _mm256_mul_ps(_mm256_loadu_ps(xp), q[0]);
                    s = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(8)), q[1], s);
                    s = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(16)), q[2], s);
                    s = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(24)), q[3], s);
                    let mut a = _mm256_fmadd_ps(d, s, ai[j]);
                    if B::HAS_MIN || B::OFFSET != 0 {
                        let sx = _mm256_loadu_ps(xs.add((i * nbk + b) * 8));
                        a = _mm256_fmadd_ps(off, sx, a);
                    }
                    ai[j] = a;
                }
            }
        }
        for (i, ai) in acc.iter().enumerate() {
            for (j, a) in ai.iter().enumerate() {
                *o.add(i * ldo + j) = hsum(*a);
            }
        }
    }

    /// All weight rows of a task, R_GEMV at a time, then the remainder one by one.
    ///
    /// # Safety
    /// AVX2, FMA and F16C must be available; `x` holds MX·k values, `xs` the block sums (Q4_1),
    /// `w` holds `rows` rows, and `o + i * ldo + j` is writable for i < MX, j < rows.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemv<B: Block, const MX: usize>(
        x: &[f32],
        xs: &[f32],
        w: &[u8],
        rows: usize,
        k: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        let rb = k / QK * B::BYTES;
        let (xp, sp, wp) = (x.as_ptr(), xs.as_ptr(), w.as_ptr());
        // One tile ahead: measured best (two or four tiles were no better, none ~1.5-3x slower).
        let pf = R_GEMV * rb;
        let mut j = 0;
        while j + R_GEMV <= rows {
            tile::<B, MX, R_GEMV>(xp, sp, k, wp.add(j * rb), rb, pf, o.add(j), ldo);
            j += R_GEMV;
        }
        while j < rows {
            tile::<B, MX, 1>(xp, sp, k, wp.add(j * rb), rb, 0, o.add(j), ldo);
            j += 1;
        }
    }
}

#[cfg(test)]
#[path = "matmul_quant_tests.rs"]
mod tests;
