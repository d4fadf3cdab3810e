//! Packed GEMM for the prefill shapes (M >= `PACKED_MIN_M`) on AVX2 + FMA; a child module of
//! `matmul`.
//!
//! The weights ([N, K], any dtype, quantized ones included) are widened to f32 and packed into
//! column panels of `NR` = 16 outputs, the activations into row panels of `MR` = 6 rows, and a
//! 6×16 register tile (12 ymm accumulators, x broadcast, two weight vectors per step) computes
//! each output tile from the two panels.
//!
//! The summation order is the canonical one of `matmul` (see there), so this path equals the
//! GEMV and portable paths bit for bit and a row's result does not depend on M: the packing
//! puts K in "lane-major" order — first every k ≡ 0 (mod 8) below `k8 = k - k % 8`, then
//! every k ≡ 1, ..., k ≡ 7, then the tail `k8..k` — so each of the eight lanes of the canonical
//! dot product is one contiguous run of `k8 / 8` steps. The tile computes lane l's partial sums
//! of all 96 outputs with one fused multiply-add chain per output from zero (exactly as
//! lane l of the dot product does), keeps the eight partial tiles, adds them as
//! `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`, then adds the tail one fused multiply-add at a
//! time. The K loop is therefore not cache-blocked below a lane (a lane's chain must not be
//! cut); a lane run is `k / 8` steps, so its 16-wide weight slice (k/8 × 64 bytes) fits L1 for
//! any K up to ~4096.
//!
//! Work is split over rayon in two rounds: packing (row panels of x, column panels of w), then
//! blocks of `MC` rows × `NC` columns, each task sweeping its column panels (outer) against its
//! row panels (inner), so one 16-wide weight panel stays in L1/L2 while the row panels stream.

use super::{Isa, MatmulParams, OutPtr, Weight, PARALLEL_MIN_WORK};
use rayon::prelude::*;
use std::cell::RefCell;

/// Rows of x per register tile.
pub(super) const MR: usize = 6;
/// Outputs (weight rows) per register tile: two ymm vectors.
pub(super) const NR: usize = 16;
/// Rows of x per task (a multiple of MR).
const MC: usize = 96;
/// Weight rows per task (a multiple of NR).
const NC: usize = 256;

/// Where element `t` of a length-`k` dot product sits in the packed (lane-major) order.
#[inline(always)]
fn packed_pos(t: usize, k8: usize) -> usize {
    if t < k8 {
        (t % 8) * (k8 / 8) + t / 8
    } else {
        t
    }
}

/// Packs `rows` (<= width) rows of `k` f32 values into a panel of `width` interleaved
/// columns: `dst[packed_pos(t) * width + r] = row_r[t]`; missing rows are zero.
fn pack_rows(
    src: impl Fn(usize) -> *const f32,
    rows: usize,
    k: usize,
    width: usize,
    dst: &mut [f32],
) {
    let k8 = k - k % 8;
    let seg = k8 / 8;
    if rows < width {
        dst[..k * width].fill(0.0);
    }
    for r in 0..rows {
        // SAFETY: `src(r)` points at k readable values (callers pass rows of x or widened w).
        let s = unsafe { std::slice::from_raw_parts(src(r), k) };
        for (t, chunk) in s[..k8].chunks_exact(8).enumerate() {
            for (l, &v) in chunk.iter().enumerate() {
                dst[(l * seg + t) * width + r] = v;
            }
        }
        for (t, &v) in s.iter().enumerate().skip(k8) {
            dst[t * width + r] = v;
        }
    }
}

/// Buffers of the packed operands, reused across calls on the calling thread.
struct Packed {
    a: Vec<f32>,
    b: Vec<f32>,
    row: Vec<f32>,
}

thread_local! {
    static PACKED: RefCell<Packed> = const {
        RefCell::new(Packed { a: Vec::new(), b: Vec::new(), row: Vec::new() })
    };
}

/// A source of weight rows: writes row `r` (k values) as f32 into `dst`.
pub(super) trait RowSource: Sync {
    fn row(&self, r: usize, dst: &mut [f32]);
    /// The row in place when it is stored as f32 (no copy).
    fn f32_row(&self, r: usize) -> Option<&[f32]>;
}

/// Dense weights of any float dtype.
pub(super) struct Dense<'a, T>(pub &'a [T], pub usize);

impl<T: Weight> RowSource for Dense<'_, T> {
    fn row(&self, r: usize, dst: &mut [f32]) {
        let k = self.1;
        T::widen(&self.0[r * k..(r + 1) * k], dst);
    }
    fn f32_row(&self, r: usize) -> Option<&[f32]> {
        let k = self.1;
        T::as_f32(&self.0[r * k..(r + 1) * k])
    }
}

/// Packs the weight rows `n0..n0 + rows` (rows <= NR) into one NR-wide panel.
fn pack_b_panel<S: RowSource>(
    w: &S,
    n0: usize,
    rows: usize,
    k: usize,
    dst: &mut [f32],
    tmp: &mut Vec<f32>,
) {
    if (0..rows).all(|r| w.f32_row(n0 + r).is_some()) {
        pack_rows(|r| w.f32_row(n0 + r).unwrap().as_ptr(), rows, k, NR, dst);
        return;
    }
    if tmp.len() < rows * k {
        tmp.resize(rows * k, 0.0);
    }
    for r in 0..rows {
        w.row(n0 + r, &mut tmp[r * k..(r + 1) * k]);
    }
    let t = tmp.as_ptr();
    // SAFETY (inside pack_rows): row r of tmp holds k values.
    pack_rows(|r| unsafe { t.add(r * k) }, rows, k, NR, dst);
}

/// `out = x · wᵀ` with the packed tiles; `isa` must be `Avx2`.
pub(super) fn run<S: RowSource>(x: &[f32], w: &S, out: &mut [f32], p: MatmulParams, isa: Isa) {
    let MatmulParams { m, n, k } = p;
    debug_assert!(k > 0 && m > 0 && n > 0);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    let mpanels = m.div_ceil(MR);
    let npanels = n.div_ceil(NR);
    let parallel = m * n * k >= PARALLEL_MIN_WORK;
    let optr = OutPtr(out.as_mut_ptr());
    let work = |bufs: &mut Packed| {
        let Packed { a, b, row } = bufs;
        if a.len() < mpanels * MR * k {
            a.resize(mpanels * MR * k, 0.0);
        }
        if b.len() < npanels * NR * k {
            b.resize(npanels * NR * k, 0.0);
        }
        let (a, b) = (&mut a[..mpanels * MR * k], &mut b[..npanels * NR * k]);
        let pack_a = |(ip, dst): (usize, &mut [f32])| {
            let i0 = ip * MR;
            let rows = MR.min(m - i0);
            let xp = x.as_ptr();
            // SAFETY: rows i0..i0+rows of x are in bounds (m·k checked by `matmul_with`).
            pack_rows(|r| unsafe { xp.add((i0 + r) * k) }, rows, k, MR, dst);
        };
        if parallel {
            a.par_chunks_mut(MR * k).enumerate().for_each(pack_a);
            b.par_chunks_mut(NR * k)
                .enumerate()
                .for_each_init(Vec::new, |tmp, (jp, dst)| {
                    let n0 = jp * NR;
                    pack_b_panel(w, n0, NR.min(n - n0), k, dst, tmp);
                });
        } else {
            a.chunks_mut(MR * k).enumerate().for_each(pack_a);
            for (jp, dst) in b.chunks_mut(NR * k).enumerate() {
                let n0 = jp * NR;
                pack_b_panel(w, n0, NR.min(n - n0), k, dst, row);
            }
        }
        let (a, b) = (&*a, &*b);
        let mblocks = m.div_ceil(MC);
        let nblocks = n.div_ceil(NC);
        let task = |t: usize| {
            let (ib, jb) = (t % mblocks, t / mblocks);
            let (i0, j0) = (ib * MC, jb * NC);
            let (i1, j1) = ((i0 + MC).min(m), (j0 + NC).min(n));
            for jp in j0 / NR..j1.div_ceil(NR) {
                let bp = &b[jp * NR * k..(jp + 1) * NR * k];
                let cols = NR.min(n - jp * NR);
                for ip in i0 / MR..i1.div_ceil(MR) {
                    let ap = &a[ip * MR * k..(ip + 1) * MR * k];
                    let rows = MR.min(m - ip * MR);
                    // SAFETY: the tile writes rows ip·MR.. (< m) and columns jp·NR.. (< n) of
                    // out, in bounds by the asserts in `matmul_with`; tasks own disjoint blocks.
                    unsafe {
                        let o = optr.get().add(ip * MR * n + jp * NR);
                        tile(ap, bp, k, o, n, rows, cols, isa);
                    }
                }
            }
        };
        let tasks = mblocks * nblocks;
        if parallel && tasks > 1 {
            (0..tasks).into_par_iter().for_each(task);
        } else {
            (0..tasks).for_each(task);
        }
    };
    // A rayon worker waiting inside `work` may run another matmul on this thread: then the
    // buffers are borrowed, and that call gets fresh ones.
    PACKED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => work(&mut bufs),
        Err(_) => work(&mut Packed {
            a: Vec::new(),
            b: Vec::new(),
            row: Vec::new(),
        }),
    });
}

/// One output tile of `rows` × `cols` (<= MR × NR) at `o` (row stride `ldo`).
///
/// # Safety
/// `o + i * ldo + j` must be writable for i < rows, j < cols.
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    a: &[f32],
    b: &[f32],
    k: usize,
    o: *mut f32,
    ldo: usize,
    rows: usize,
    cols: usize,
    isa: Isa,
) {
    debug_assert!(a.len() >= MR * k && b.len() >= NR * k);
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            if rows == MR && cols == NR {
                avx2::tile(a.as_ptr(), b.as_ptr(), k, o, ldo);
            } else {
                let mut t = [0f32; MR * NR];
                avx2::tile(a.as_ptr(), b.as_ptr(), k, t.as_mut_ptr(), NR);
                for i in 0..rows {
                    std::ptr::copy_nonoverlapping(t.as_ptr().add(i * NR), o.add(i * ldo), cols);
                }
            }
        }
        Isa::Portable => portable::tile(a, b, k, o, ldo, rows, cols),
    }
}

/// The same tile in plain Rust (used by the tests to check the packing on any CPU).
mod portable {
    use super::{MR, NR};

    pub(super) unsafe fn tile(
        a: &[f32],
        b: &[f32],
        k: usize,
        o: *mut f32,
        ldo: usize,
        rows: usize,
        cols: usize,
    ) {
        let k8 = k - k % 8;
        let seg = k8 / 8;
        for i in 0..rows {
            for j in 0..cols {
                let mut lanes = [0f32; 8];
                for (l, lane) in lanes.iter_mut().enumerate() {
                    for t in l * seg..(l + 1) * seg {
                        *lane = a[t * MR + i].mul_add(b[t * NR + j], *lane);
                    }
                }
                let mut s = super::super::reduce8(lanes);
                for t in k8..k {
                    s = a[t * MR + i].mul_add(b[t * NR + j], s);
                }
                *o.add(i * ldo + j) = s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    type Acc = [[__m256; 2]; MR];

    /// `seg` steps of the 6×16 outer-product update from zero: one lane's partial sums.
    #[inline(always)]
    unsafe fn lane(mut a: *const f32, mut b: *const f32, seg: usize) -> Acc {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for _ in 0..seg {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (i, ai) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(i));
                ai[0] = _mm256_fmadd_ps(x, b0, ai[0]);
                ai[1] = _mm256_fmadd_ps(x, b1, ai[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        acc
    }

    #[inline(always)]
    unsafe fn add(p: &Acc, q: &Acc) -> Acc {
        let mut r = *p;
        for (ri, qi) in r.iter_mut().zip(q) {
            ri[0] = _mm256_add_ps(ri[0], qi[0]);
            ri[1] = _mm256_add_ps(ri[1], qi[1]);
        }
        r
    }

    /// The full 6×16 tile over packed panels `a` (k × 6) and `b` (k × 16), stored at `o`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a`, `b` hold MR·k and NR·k values; `o + i * ldo + j`
    /// is writable for i < MR, j < NR.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(a: *const f32, b: *const f32, k: usize, o: *mut f32, ldo: usize) {
        let k8 = k - k % 8;
        let seg = k8 / 8;
        let at = |l: usize| a.add(l * seg * MR);
        let bt = |l: usize| b.add(l * seg * NR);
        // ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), each lane computed just before it is needed so
        // at most three partial tiles are live.
        let s04 = {
            let p0 = lane(at(0), bt(0), seg);
            let p4 = lane(at(4), bt(4), seg);
            add(&p0, &p4)
        };
        let s0246 = {
            let p2 = lane(at(2), bt(2), seg);
            let p6 = lane(at(6), bt(6), seg);
            add(&s04, &add(&p2, &p6))
        };
        let s1357 = {
            let p1 = lane(at(1), bt(1), seg);
            let p5 = lane(at(5), bt(5), seg);
            let s15 = add(&p1, &p5);
            let p3 = lane(at(3), bt(3), seg);
            let p7 = lane(at(7), bt(7), seg);
            add(&s15, &add(&p3, &p7))
        };
        let mut acc = add(&s0246, &s1357);
        for t in k8..k {
            let b0 = _mm256_loadu_ps(b.add(t * NR));
            let b1 = _mm256_loadu_ps(b.add(t * NR + 8));
            for (i, ai) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(t * MR + i));
                ai[0] = _mm256_fmadd_ps(x, b0, ai[0]);
                ai[1] = _mm256_fmadd_ps(x, b1, ai[1]);
            }
        }
        for (i, ai) in acc.iter().enumerate() {
            _mm256_storeu_ps(o.add(i * ldo), ai[0]);
            _mm256_storeu_ps(o.add(i * ldo + 8), ai[1]);
        }
    }
}
