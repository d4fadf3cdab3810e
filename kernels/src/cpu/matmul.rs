//! `out = x · wᵀ`, the CPU hot path (decode GEMV and prefill GEMM).
//!
//! Every output element is one dot product summed in a fixed order, whatever the path:
//! eight f32 lanes, lane `l` accumulating `k ≡ l (mod 8)` over the first `k - k % 8` elements
//! with fused multiply-adds, the lanes reduced as `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`, then
//! the tail added one fused multiply-add at a time. The AVX2 path and the portable path
//! therefore agree bit for bit, and a row's result does not depend on how many rows share the
//! call (batch invariance), which the tests check.
//!
//! Paths: M < 4 reads the stored weights directly (16-bit rows widened in registers), because
//! each weight is used at most three times; M >= 4 widens a block of weight rows to f32 once
//! into a per-thread scratch (f32 weights are read in place) and reuses it across all rows of
//! `x` with a 4×3 register tile. K longer than 1024 is cut into blocks with each tile's lane
//! accumulators carried from block to block (the order above is unchanged), so the 4 rows of
//! x stay in L1 while the weight rows pass. Work is split over blocks of N with rayon when the
//! call is big enough to pay for it, and for large M also over row chunks (so a few weight
//! blocks still balance over the threads; with f32 weights chunk-major, so that a chunk of x
//! stays in L2 while the weight blocks pass over it). On the 2-core EPYC VM the 4×3 tile runs
//! at ~60-75 GFLOP/s per CPU-second (peak ~83); a packed 6×16 GEMM was measured no faster and
//! dropped (docs/BENCHMARKS.md).
//!
//! GGML block-quantized weights (`WeightSlice::Quant`) go to `matmul_quant.rs`, a child module
//! that reuses the blocked path here for M >= 4 and has a fused GEMV for M < 4; both follow
//! the order above on the dequantized values, so quantized rows are batch-invariant too.

use super::{OutPtr, WeightSlice};
use half::{bf16, f16};
use rayon::prelude::*;
use std::cell::RefCell;

#[path = "matmul_quant.rs"]
mod quant;

/// out[m, n] = sum_k x[m, k] * w[n, k]   (activations times transposed weights, f32 accumulate)
#[derive(Clone, Copy, Debug)]
pub struct MatmulParams {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// `x`: [m, k] f32 row-major; `w`: [n, k] row-major; `out`: [m, n] f32.
pub fn matmul(x: &[f32], w: WeightSlice<'_>, out: &mut [f32], p: MatmulParams) {
    matmul_with(x, w, out, p, Isa::detect());
}

/// The optional terms of a linear layer added to the product: `bias` [n] and `residual`
/// [m, n], both f32.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
}

/// out[i, j] = (x·wᵀ)[i, j] + bias[j] + residual[i, j], added in that order (the CUDA kernels'
/// epilogues use the same order, so with the product equal the sums are equal). Any weight
/// dtype, quantized ones included: the terms are added to the finished dot products.
pub fn linear(
    x: &[f32],
    w: WeightSlice<'_>,
    epilogue: Epilogue<'_>,
    out: &mut [f32],
    p: MatmulParams,
) {
    matmul(x, w, out, p);
    add_epilogue(epilogue, out, p);
}

fn add_epilogue(e: Epilogue<'_>, out: &mut [f32], p: MatmulParams) {
    let MatmulParams { m, n, .. } = p;
    if let Some(b) = e.bias {
        assert!(
            b.len() >= n,
            "matmul: bias has {} elements, need {n}",
            b.len()
        );
    }
    if let Some(r) = e.residual {
        assert!(
            r.len() >= m * n,
            "matmul: residual has {} elements, need {}",
            r.len(),
            m * n
        );
    }
    if n == 0 {
        return;
    }
    for (i, row) in out[..m * n].chunks_exact_mut(n).enumerate() {
        if let Some(b) = e.bias {
            for (o, &v) in row.iter_mut().zip(b) {
                *o += v;
            }
        }
        if let Some(r) = e.residual {
            for (o, &v) in row.iter_mut().zip(&r[i * n..(i + 1) * n]) {
                *o += v;
            }
        }
    }
}

/// Instruction set a call runs on; `Portable` is the reference fallback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }
}

/// Below this many multiply-adds a call runs on the calling thread: waking rayon costs more.
const PARALLEL_MIN_WORK: usize = 1 << 18;
/// The same for the direct (small M) path, where a thread streams weights at ~20 G elem/s from
/// L2/L3: measured on 2 shared Zen 3 cores, splitting 576×576 or 1536×576 across threads was
/// slower than one thread (wake-up latency), while the 49152×576 lm_head gained ~35%.
const PARALLEL_MIN_WORK_DIRECT: usize = 1 << 20;
/// Weight elements per rayon task on the direct (small M) path.
const DIRECT_BLOCK_ELEMS: usize = 1 << 16;
/// Widened f32 weight elements per block on the blocked path (256 KiB: stays in L2).
const BLOCKED_BLOCK_ELEMS: usize = 1 << 16;
/// Rows of x per register tile on the blocked path.
const MR: usize = 4;
/// Weight rows per register tile on the blocked path (4×3 = 12 accumulators + 3 weight
/// vectors fit the 16 ymm registers).
const NR: usize = 3;
/// Weight rows per register tile for a single x row (8 independent FMA chains hide latency).
const NR_GEMV: usize = 8;
/// Longest K block of the blocked AVX2 tiles when K > 2·KC_MAX: 4 rows of x plus 3 weight
/// rows of 512 f32 are 14 KiB, which stay in the 32 KiB L1 with the carried accumulators; at
/// K = 1536 whole rows (24 KiB of x alone) did not (256 and no blocking measured slower).
const KC_MAX: usize = 512;

pub(crate) fn matmul_with(
    x: &[f32],
    w: WeightSlice<'_>,
    out: &mut [f32],
    p: MatmulParams,
    isa: Isa,
) {
    let MatmulParams { m, n, k } = p;
    // The unsafe tiles below index by these sizes, so they are checked here, once.
    assert!(
        x.len() >= m * k,
        "matmul: x has {} elements, need {}",
        x.len(),
        m * k
    );
    assert!(
        w.len() >= n * k,
        "matmul: w has {} elements, need {}",
        w.len(),
        n * k
    );
    assert!(
        out.len() >= m * n,
        "matmul: out has {} elements, need {}",
        out.len(),
        m * n
    );
    if let WeightSlice::Quant { format, .. } = w {
        assert!(
            k.is_multiple_of(super::quant::QK),
            "matmul: k = {k} is not a multiple of the {} block size",
            format.name()
        );
    }
    if m == 0 || n == 0 {
        return;
    }
    match w {
        WeightSlice::F32(w) => run(x, w, out, p, isa),
        WeightSlice::BF16(w) => run(x, w, out, p, isa),
        WeightSlice::F16(w) => run(x, w, out, p, isa),
        WeightSlice::Quant { format, bytes } => quant::run(x, format, bytes, out, p, isa),
    }
}

/// A stored weight element type.
pub(crate) trait Weight: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Widens `src` into `dst` (same length).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// True for f32: the blocked path then reads the weights in place instead of copying.
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// Loads eight consecutive weights as f32 lanes. Always inlined into the
    /// `#[target_feature]` functions of `avx2`, so the intrinsics inline there too.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl Weight for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn widen(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn as_f32(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
}

impl Weight for bf16 {
    fn to_f32(self) -> f32 {
        // bf16 is the top half of an f32: widening is exact.
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    fn widen(src: &[bf16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    fn as_f32(_: &[bf16]) -> Option<&[f32]> {
        None
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

impl Weight for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn widen(src: &[f16], dst: &mut [f32]) {
        // half uses F16C for slices when the CPU has it.
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, dst);
    }
    fn as_f32(_: &[f16]) -> Option<&[f32]> {
        None
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::*;
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

thread_local! {
    /// Widened weight block of the blocked path, reused across calls (no per-call allocation
    /// once it has grown).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn run<T: Weight>(x: &[f32], w: &[T], out: &mut [f32], p: MatmulParams, isa: Isa) {
    let MatmulParams { m, n, k } = p;
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    let blocked = m >= MR;
    // Rows of w per task: a multiple of the tile width so only the last block has an edge.
    let nr = if blocked { NR } else { NR_GEMV };
    let elems = if blocked {
        BLOCKED_BLOCK_ELEMS
    } else {
        DIRECT_BLOCK_ELEMS
    };
    let nb = block_rows(n, k, nr, elems);
    let blocks = n.div_ceil(nb);
    let min_work = if blocked {
        PARALLEL_MIN_WORK
    } else {
        PARALLEL_MIN_WORK_DIRECT
    };
    let parallel = blocks > 1 && m * n * k >= min_work;
    // Row chunks per weight block: with few blocks (e.g. 384×384 is 3 blocks) whole blocks
    // split unevenly over the threads, so large M is also cut into chunks of MR-multiples.
    let mut chunks = if blocked && m * n * k >= PARALLEL_MIN_WORK {
        row_chunks(m, blocks)
    } else {
        1
    };
    // f32 weights are read in place (no widening per chunk), so x is also cut into chunks
    // of about BLOCKED_BLOCK_ELEMS that stay in L2 while a thread's weight blocks pass over
    // them, chunk-major: x (20 MB in a 3200 x 1536 prefill) is then read from DRAM once
    // per call instead of once per weight block.
    let chunk_major = blocked && blocks > 1 && T::as_f32(w).is_some();
    if chunk_major {
        let cap = (BLOCKED_BLOCK_ELEMS / k).max(MR) / MR * MR;
        chunks = chunks.max(m.div_ceil(cap));
    }
    let mc = m.div_ceil(chunks).div_ceil(MR) * MR;
    let chunks = m.div_ceil(mc);
    let optr = OutPtr(out.as_mut_ptr());
    let task = |t: usize| {
        let (b, c) = if chunk_major {
            (t % blocks, t / blocks)
        } else {
            (t / chunks, t % chunks)
        };
        let n0 = b * nb;
        let rows = nb.min(n - n0);
        let wb = &w[n0 * k..(n0 + rows) * k];
        let (i0, i1) = (c * mc, ((c + 1) * mc).min(m));
        let (x, m) = (&x[i0 * k..i1 * k], i1 - i0);
        // SAFETY: task (b, c) writes only rows i0..i1, columns n0..n0+rows of out, which the
        // asserts in `matmul_with` put in bounds; tasks do not overlap.
        let o = unsafe { optr.get().add(i0 * n + n0) };
        if !blocked {
            unsafe { tiles(x, m, Rows::Stored(wb), rows, k, o, n, isa) };
        } else if let Some(wf) = T::as_f32(wb) {
            unsafe { tiles(x, m, Rows::Stored(wf), rows, k, o, n, isa) };
        } else {
            SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                if s.len() < rows * k {
                    s.resize(rows * k, 0.0);
                }
                let wf = &mut s[..rows * k];
                T::widen(wb, wf);
                unsafe { tiles(x, m, Rows::<T>::Widened(wf), rows, k, o, n, isa) };
            });
        }
    };
    let tasks = blocks * chunks;
    if parallel || chunks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Weight rows per block: about `elems / k` at most, rounded up to a multiple of `nr`, with
/// the blocks as equal as that allows and, when there are several, their count a multiple of
/// the thread count. (576 rows at K = 576 used to be five blocks of 114 and one of 6, so one
/// of two threads did 342 rows and the other 234.) Results do not depend on it.
pub(crate) fn block_rows(n: usize, k: usize, nr: usize, elems: usize) -> usize {
    let cap = (elems / k.max(1)).max(1).div_ceil(nr) * nr;
    let mut blocks = n.div_ceil(cap);
    if blocks > 1 {
        let threads = rayon::current_num_threads().max(1);
        blocks = blocks.div_ceil(threads) * threads;
    }
    n.div_ceil(blocks.max(1)).div_ceil(nr) * nr
}

/// Row chunks per weight block so that there are at least `TASKS_PER_THREAD` tasks per
/// thread, each chunk at least `MIN_CHUNK_ROWS` rows (the weight block is widened once per
/// chunk). Results do not depend on it: every output is one dot product either way.
fn row_chunks(m: usize, blocks: usize) -> usize {
    const TASKS_PER_THREAD: usize = 4;
    const MIN_CHUNK_ROWS: usize = 48;
    let want = (TASKS_PER_THREAD * rayon::current_num_threads()).div_ceil(blocks);
    want.min(m / MIN_CHUNK_ROWS).max(1)
}

/// A block of weight rows: as stored, or widened to f32.
enum Rows<'a, T> {
    Stored(&'a [T]),
    Widened(&'a [f32]),
}

/// Computes out[i, j] (at `o + i * ldo + j`) for all m rows of x and `rows` weight rows.
///
/// # Safety
/// `o` must be valid for writes at `i * ldo + j` for i < m, j < rows; x holds m·k values and
/// the weight block rows·k.
#[allow(clippy::too_many_arguments)]
unsafe fn tiles<T: Weight>(
    x: &[f32],
    m: usize,
    w: Rows<'_, T>,
    rows: usize,
    k: usize,
    o: *mut f32,
    ldo: usize,
    isa: Isa,
) {
    match isa {
        Isa::Portable => match w {
            Rows::Stored(w) => portable::tiles(x, m, w, rows, k, o, ldo),
            Rows::Widened(w) => portable::tiles(x, m, w, rows, k, o, ldo),
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => match w {
            Rows::Stored(w) if m < MR => avx2::tiles::<T, 1, NR_GEMV>(x, m, w, rows, k, o, ldo),
            Rows::Stored(w) => avx2::tiles::<T, MR, NR>(x, m, w, rows, k, o, ldo),
            Rows::Widened(w) => avx2::tiles::<f32, MR, NR>(x, m, w, rows, k, o, ldo),
        },
    }
}

/// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`: the lane reduction both paths use.
#[inline(always)]
fn reduce8(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// Portable reference: one dot product at a time, in the canonical order (lanes emulated).
mod portable {
    use super::{reduce8, Weight};

    pub(super) unsafe fn tiles<T: Weight>(
        x: &[f32],
        m: usize,
        w: &[T],
        rows: usize,
        k: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            for j in 0..rows {
                let wr = &w[j * k..(j + 1) * k];
                *o.add(i * ldo + j) = dot(xr, wr);
            }
        }
    }

    fn dot<T: Weight>(x: &[f32], w: &[T]) -> f32 {
        let k8 = x.len() - x.len() % 8;
        let mut acc = [0f32; 8];
        for (xc, wc) in x[..k8].chunks_exact(8).zip(w[..k8].chunks_exact(8)) {
            for l in 0..8 {
                acc[l] = xc[l].mul_add(wc[l].to_f32(), acc[l]);
            }
        }
        let mut s = reduce8(acc);
        for (a, b) in x[k8..].iter().zip(&w[k8..]) {
            s = a.mul_add(b.to_f32(), s);
        }
        s
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Weight, KC_MAX};
    use crate::cpu::vecops::hsum;
    use std::arch::x86_64::*;

    /// Register tile: R rows of x against C rows of w over `k` columns `c0..c1` (multiples of
    /// 8, `c1 <= k - k % 8`), each output one canonical-order dot. The R·C lane accumulators
    /// start at zero (`first`) or from `st`, and end in `st` or, on the `last` K block, are
    /// reduced, the `k % 8` tail added, and written to `o`. Each lane's FMA chain therefore
    /// runs over k in the same order however K is cut into blocks: bit-identical to one block.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<T: Weight, const R: usize, const C: usize>(
        x: *const f32,
        w: *const T,
        k: usize,
        (c0, c1): (usize, usize),
        st: *mut __m256,
        (first, last): (bool, bool),
        o: *mut f32,
        ldo: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        if !first {
            for (i, ai) in acc.iter_mut().enumerate() {
                for (j, a) in ai.iter_mut().enumerate() {
                    *a = *st.add(i * C + j);
                }
            }
        }
        let mut c = c0;
        while c < c1 {
            let mut wv = [_mm256_setzero_ps(); C];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = T::load8(w.add(j * k + c));
            }
            for (i, ai) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(x.add(i * k + c));
                for (a, v) in ai.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(xv, *v, *a);
                }
            }
            c += 8;
        }
        if !last {
            for (i, ai) in acc.iter().enumerate() {
                for (j, a) in ai.iter().enumerate() {
                    *st.add(i * C + j) = *a;
                }
            }
            return;
        }
        for (i, ai) in acc.iter().enumerate() {
            for (j, a) in ai.iter().enumerate() {
                let mut s = hsum(*a);
                for t in c1..k {
                    s = (*x.add(i * k + t)).mul_add((*w.add(j * k + t)).to_f32(), s);
                }
                *o.add(i * ldo + j) = s;
            }
        }
    }

    /// One group of R rows of x against all `rows` weight rows (C at a time, then the edge one
    /// by one), K cut into `nkb` blocks of `kc` columns. With several blocks, the loop over
    /// weight rows sits inside the loop over K blocks so that the R x rows' current block stays
    /// in L1 while the weight rows stream past it; `st` carries R accumulators per weight row.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row_group<T: Weight, const R: usize, const C: usize>(
        x: *const f32,
        w: *const T,
        rows: usize,
        k: usize,
        kc: usize,
        st: *mut __m256,
        o: *mut f32,
        ldo: usize,
    ) {
        let k8 = k - k % 8;
        let full_n = rows - rows % C;
        // The next group's R rows of x (contiguous after these) are fetched into L2 a slice
        // per full tile, so that its first pass over the weights does not wait on DRAM (x of
        // a 3200 x 1536 prefill is 20 MB: measured ~15% of the time without this). Prefetches
        // do not fault; wrapping_add keeps the address arithmetic defined past the end of x.
        let next = x.wrapping_add(R * k) as *const i8;
        let lines = (R * k * 4).div_ceil(64);
        let per_tile = lines.div_ceil((full_n / C * k8.div_ceil(kc.max(8))).max(1));
        let mut line = 0;
        let mut c0 = 0;
        loop {
            let c1 = (c0 + kc).min(k8);
            let fl = (c0 == 0, c1 == k8);
            let mut j = 0;
            while j < full_n {
                let end = (line + per_tile).min(lines);
                while line < end {
                    _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(line * 64));
                    line += 1;
                }
                let s = st.add(j * R);
                tile::<T, R, C>(x, w.add(j * k), k, (c0, c1), s, fl, o.add(j), ldo);
                j += C;
            }
            while j < rows {
                let s = st.add(j * R);
                tile::<T, R, 1>(x, w.add(j * k), k, (c0, c1), s, fl, o.add(j), ldo);
                j += 1;
            }
            if c1 == k8 {
                break;
            }
            c0 = c1;
        }
    }

    /// All tiles of an m × rows output block: R×C tiles, then the edges with narrower tiles.
    /// K longer than 2·`KC_MAX` is cut into equal blocks (multiples of 8) of at most `KC_MAX`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tiles<T: Weight, const R: usize, const C: usize>(
        x: &[f32],
        m: usize,
        w: &[T],
        rows: usize,
        k: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        let k8 = k - k % 8;
        // The GEMV tile (R = 1) reads each weight once: nothing to keep in L1. Up to
        // 2·KC_MAX (K = 576, 1024) whole rows fit well enough and carrying the accumulators
        // only costs (K = 576 cut in two measured slower).
        let nkb = if R == 1 || k8 <= 2 * KC_MAX {
            1
        } else {
            k8.div_ceil(KC_MAX)
        };
        let kc = k8.div_ceil(nkb).div_ceil(8) * 8;
        // Carried accumulators, only touched with several K blocks (a few KiB: R per row).
        let mut st = if nkb > 1 {
            vec![_mm256_setzero_ps(); rows * R]
        } else {
            Vec::new()
        };
        let sp = st.as_mut_ptr();
        let full_m = m - m % R;
        let mut i = 0;
        while i < full_m {
            row_group::<T, R, C>(xp.add(i * k), wp, rows, k, kc, sp, o.add(i * ldo), ldo);
            i += R;
        }
        while i < m {
            row_group::<T, 1, C>(xp.add(i * k), wp, rows, k, kc, sp, o.add(i * ldo), ldo);
            i += 1;
        }
    }
}

#[cfg(test)]
#[path = "matmul_tests.rs"]
mod tests;
