//! The one attention core behind dense `attention`, `varlen_attention` and `paged_attention`:
//! a task is a set of query rows that share one KV head of one sequence (a block of query
//! positions × the query heads of a GQA group), and every output value is computed by the
//! same operations in the same order whichever variant, blocking or batch it comes from:
//!
//! - score `s_j = (Σ_i q[i]·k_j[i]) · scale`, the sum one fused multiply-add per element in
//!   element order (i = 0, 1, ..., d - 1) starting from +0;
//! - `softmax::softmax_in_place` over the row's visible keys `0..seen`;
//! - `o[c] = Σ_j p_j · v_j[c]`, one fused multiply-add per key in key order starting from +0.
//!
//! The AVX2 path computes exactly that: keys sit in the lanes of the score tiles (K is packed
//! transposed, 16 keys per panel, so each loaded K vector serves up to 6 query rows and each
//! broadcast query element 16 keys), and the P·V tiles keep up to 3 rows × 32 columns of
//! output in registers (each loaded V vector serves 3 rows). The portable path is the plain
//! loop, and on an FMA machine gives the same bits (`mul_add` is the same fused operation).

use super::paged_attention::CacheElem;
use super::softmax::{softmax_in_place, visible};
use super::OutPtr;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// Minimum multiply-adds per rayon task.
const TASK_WORK: usize = 1 << 15;

/// Query rows (all heads of a GQA group together) per task: enough to amortize packing the
/// keys once per task, few enough to spread a single sequence over the threads.
pub(crate) const TASK_ROWS: usize = 192;

/// Keys per packed K^T panel (two AVX2 vectors).
pub(crate) const PANEL: usize = 16;
/// Query rows per score tile.
const MR: usize = 6;

/// Where the K (or V) rows of one (sequence, KV head) live.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a, T> {
    /// Row j at `data[off + j * stride..][..d]`.
    Dense {
        data: &'a [T],
        off: usize,
        stride: usize,
    },
    /// Row j in page `table[j / block_size]` of a [pages, kv_heads, block_size, d] cache.
    Paged {
        data: &'a [T],
        table: &'a [u32],
        kv_heads: usize,
        kv_head: usize,
        block_size: usize,
        d: usize,
    },
}

impl<T> Rows<'_, T> {
    /// Start of the contiguous run of rows holding row j, how many rows it has from j on
    /// (at least 1), and the distance between its rows. The caller keeps j below the
    /// number of rows that exist.
    #[inline(always)]
    fn seg(&self, j: usize) -> (usize, usize, usize) {
        match *self {
            Rows::Dense { off, stride, .. } => (off + j * stride, usize::MAX, stride),
            Rows::Paged {
                table,
                kv_heads,
                kv_head,
                block_size: bs,
                d,
                ..
            } => {
                let (page, r) = (j / bs, j % bs);
                let base = ((table[page] as usize * kv_heads + kv_head) * bs + r) * d;
                (base, bs - r, d)
            }
        }
    }

    fn data(&self) -> &[T] {
        match *self {
            Rows::Dense { data, .. } | Rows::Paged { data, .. } => data,
        }
    }
}

/// Offsets of rows j, j + 1, ... in order, one `seg` lookup (a division for pages) per run.
pub(crate) struct Cursor<'r, 'a, T> {
    rows: &'r Rows<'a, T>,
    j: usize,
    at: usize,
    left: usize,
    stride: usize,
}

impl<'r, 'a, T> Cursor<'r, 'a, T> {
    pub(crate) fn new(rows: &'r Rows<'a, T>, j: usize) -> Self {
        Cursor {
            rows,
            j,
            at: 0,
            left: 0,
            stride: 0,
        }
    }

    /// Offset of the next row (the caller stays below the number of rows that exist).
    #[inline(always)]
    pub(crate) fn next_at(&mut self) -> usize {
        if self.left == 0 {
            (self.at, self.left, self.stride) = self.rows.seg(self.j);
        }
        let at = self.at;
        self.at += self.stride;
        self.left -= 1;
        self.j += 1;
        at
    }
}

/// One task: query rows `rows` (each an index pair into q/out and its visible key count).
pub(crate) struct Task<'a, T> {
    pub q: &'a [f32],
    pub keys: Rows<'a, T>,
    pub values: Rows<'a, T>,
    pub d: usize,
    pub scale: f32,
}

/// A query row of a task: its offset in q and out (d values each) and its visible keys.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Row {
    pub at: usize,
    pub seen: usize,
}

/// One sequence's query rows in q and out ([rows, heads, d]): `q_len` positions from row
/// `start`, against `ctx` keys (causal: each position sees keys up to its own).
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeqRows {
    pub start: usize,
    pub q_len: usize,
    pub ctx: usize,
    pub heads: usize,
    pub d: usize,
    pub causal: bool,
}

impl SeqRows {
    /// The rows of positions `positions` for each query head in `heads` (one GQA group),
    /// head by head: the rows of one task.
    pub(crate) fn rows(&self, positions: Range<usize>, heads: Range<usize>) -> Vec<Row> {
        let mut rows = Vec::with_capacity(positions.len() * heads.len());
        for h in heads {
            for t in positions.clone() {
                let seen = if self.causal {
                    visible(t, self.q_len, self.ctx)
                } else {
                    self.ctx
                };
                rows.push(Row {
                    at: ((self.start + t) * self.heads + h) * self.d,
                    seen,
                });
            }
        }
        rows
    }
}

/// Runs tasks `0..tasks` that share `work` multiply-adds: on the calling thread when that is
/// too little to pay for waking rayon, else over rayon with at least `TASK_WORK` per job.
pub(crate) fn spread(tasks: usize, work: usize, task: impl Fn(usize) + Sync + Send) {
    if work < 2 * TASK_WORK || tasks == 1 {
        (0..tasks).for_each(task);
    } else {
        let per_task = (work / tasks.max(1)).max(1);
        let min_len = (TASK_WORK / per_task).max(1);
        (0..tasks)
            .into_par_iter()
            .with_min_len(min_len)
            .for_each(task);
    }
}

thread_local! {
    /// Packed K^T panels of the current task.
    static KT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Score / probability rows of the current task's query rows.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The current task's value rows, contiguous f32 (tasks with enough rows to repay it).
    static VALS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs one task: writes `d` values at `out + row.at` for every row.
///
/// # Safety
/// `out` is valid for writes at `row.at..row.at + d` for every row, no other thread writes
/// those ranges meanwhile; q holds `row.at + d` values; the key and value rows `0..seen`
/// exist in their data for every row.
pub(crate) unsafe fn run<T: CacheElem>(task: &Task<'_, T>, rows: &[Row], out: OutPtr) {
    #[cfg(target_arch = "x86_64")]
    if super::vecops::has_avx2_fma() {
        return avx2::run(task, rows, out);
    }
    portable(task, rows, out)
}

/// The defining loop (and the path without AVX2/FMA).
///
/// # Safety
/// As `run`.
pub(crate) unsafe fn portable<T: CacheElem>(task: &Task<'_, T>, rows: &[Row], out: OutPtr) {
    let d = task.d;
    let (kd, vd) = (task.keys.data(), task.values.data());
    let mut scores = Vec::new();
    for r in rows {
        let o = std::slice::from_raw_parts_mut(out.get().add(r.at), d);
        o.fill(0.0);
        if r.seen == 0 {
            continue;
        }
        let qv = &task.q[r.at..r.at + d];
        scores.clear();
        for j in 0..r.seen {
            let (at, _, _) = task.keys.seg(j);
            let mut acc = 0f32;
            for (i, &qi) in qv.iter().enumerate() {
                acc = qi.mul_add(kd[at + i].to_f32(), acc);
            }
            scores.push(acc * task.scale);
        }
        softmax_in_place(&mut scores);
        for (j, &pj) in scores.iter().enumerate() {
            let (at, _, _) = task.values.seg(j);
            for (c, oc) in o.iter_mut().enumerate() {
                *oc = pj.mul_add(vd[at + c].to_f32(), *oc);
            }
        }
    }
}

// The register tiles index accumulator arrays by constant ranges on purpose (fully unrolled,
// kept in registers).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Eight consecutive elements as f32 (bf16 widened exactly).
    #[inline(always)]
    unsafe fn load8<T: CacheElem>(p: *const T) -> __m256 {
        if T::BF16 {
            let h = _mm_loadu_si128(p as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        } else {
            _mm256_loadu_ps(p as *const f32)
        }
    }

    /// Keys (or values) requested ahead of their use.
    const PREFETCH: usize = 16;

    /// Requests the d elements at `p` into the caches.
    #[inline(always)]
    unsafe fn prefetch_row<T>(p: *const T, d: usize) {
        let bytes = d * std::mem::size_of::<T>();
        let p = p as *const i8;
        let mut b = 0;
        while b < bytes {
            _mm_prefetch::<_MM_HINT_T0>(p.add(b));
            b += 64;
        }
    }

    /// Rows ↔ columns of an 8 × 8 block.
    #[inline(always)]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xee>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xee>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xee>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xee>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// Packs keys `0..n` as K^T panels: panel p is [d][PANEL] with key p·PANEL + l in lane l;
    /// lanes past n are zero.
    #[inline(always)]
    unsafe fn pack_kt<T: CacheElem>(keys: &Rows<'_, T>, n: usize, d: usize, kt: &mut [f32]) {
        let data = keys.data().as_ptr();
        let ktp = kt.as_mut_ptr();
        let mut cur = Cursor::new(keys, 0);
        // Rows PREFETCH keys ahead are requested while these are transposed (pages are
        // separate 4 KiB runs the hardware prefetcher does not cross).
        let mut ahead = Cursor::new(keys, 0);
        let mut fetched = 0;
        let mut j = 0;
        while j + 8 <= n {
            let mut ptr = [data; 8];
            for p in ptr.iter_mut() {
                *p = data.add(cur.next_at());
            }
            while fetched < (j + 8 + PREFETCH).min(n) {
                prefetch_row(data.add(ahead.next_at()), d);
                fetched += 1;
            }
            let dst = ktp.add((j / PANEL) * d * PANEL + j % PANEL);
            let mut i = 0;
            while i + 8 <= d {
                let mut r = [_mm256_setzero_ps(); 8];
                for t in 0..8 {
                    r[t] = load8(ptr[t].add(i));
                }
                let c = transpose8(r);
                for (t, ct) in c.iter().enumerate() {
                    _mm256_storeu_ps(dst.add((i + t) * PANEL), *ct);
                }
                i += 8;
            }
            for i in i..d {
                for (t, p) in ptr.iter().enumerate() {
                    *dst.add(i * PANEL + t) = (*p.add(i)).to_f32();
                }
            }
            j += 8;
        }
        if j < n {
            let dst = ktp.add((j / PANEL) * d * PANEL + j % PANEL);
            let mut ptr = [data; 8];
            for p in ptr.iter_mut().take(n - j) {
                *p = data.add(cur.next_at());
            }
            for i in 0..d {
                for (t, p) in ptr.iter().enumerate() {
                    *dst.add(i * PANEL + t) = if j + t < n { (*p.add(i)).to_f32() } else { 0.0 };
                }
            }
            j += 8;
        }
        if j % PANEL != 0 {
            let dst = ktp.add((j / PANEL) * d * PANEL + j % PANEL);
            for i in 0..d {
                std::ptr::write_bytes(dst.add(i * PANEL), 0, 8);
            }
        }
    }

    /// Scores of M query rows against P consecutive panels: `s[m][l] = (Σ_i q_m[i]·kt[i][l])
    /// · scale`, one FMA per i in order.
    #[inline(always)]
    unsafe fn score_tile<const M: usize, const P: usize>(
        q: &[*const f32; MR],
        kt: *const f32,
        d: usize,
        scale: f32,
        s: &[*mut f32; MR],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 4]; M];
        for i in 0..d {
            let mut k = [_mm256_setzero_ps(); 4];
            for p in 0..P {
                let base = kt.add(p * d * PANEL + i * PANEL);
                k[2 * p] = _mm256_loadu_ps(base);
                k[2 * p + 1] = _mm256_loadu_ps(base.add(8));
            }
            for m in 0..M {
                let b = _mm256_broadcast_ss(&*q[m].add(i));
                for c in 0..2 * P {
                    acc[m][c] = _mm256_fmadd_ps(b, k[c], acc[m][c]);
                }
            }
        }
        let sc = _mm256_set1_ps(scale);
        for m in 0..M {
            for c in 0..2 * P {
                _mm256_storeu_ps(s[m].add(8 * c), _mm256_mul_ps(acc[m][c], sc));
            }
        }
    }

    /// Scores of M rows over `panels` panels starting at panel 0.
    #[inline(always)]
    unsafe fn score_rows<const M: usize>(
        q: &[*const f32; MR],
        kt: *const f32,
        panels: usize,
        d: usize,
        scale: f32,
        s: &[*mut f32; MR],
    ) {
        let mut p = 0;
        let shifted = |s: &[*mut f32; MR], p: usize| s.map(|x| x.wrapping_add(p * PANEL));
        if M <= 3 {
            while p + 2 <= panels {
                score_tile::<M, 2>(q, kt.add(p * d * PANEL), d, scale, &shifted(s, p));
                p += 2;
            }
        }
        while p < panels {
            score_tile::<M, 1>(q, kt.add(p * d * PANEL), d, scale, &shifted(s, p));
            p += 1;
        }
    }

    /// Keys `ja..jb` of `o_r[col..col + 8C] = Σ_j p_r[j] · v_j[col..]` for R rows, j below
    /// `seen[r]`, in key order: starts from zero when `ja` is 0, else from the partial sums
    /// in `o` (an f32 round trip through memory, so exact); keys below every row's count
    /// share their value loads.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv_tile<T: CacheElem, const R: usize, const C: usize, const PF: bool>(
        p: &[*const f32; 3],
        seen: &[usize; 3],
        values: &Rows<'_, T>,
        col: usize,
        o: &[*mut f32; 3],
        (ja, jb, d): (usize, usize, usize),
    ) {
        let data = values.data().as_ptr();
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        if ja > 0 {
            for r in 0..R {
                for c in 0..C {
                    acc[r][c] = _mm256_loadu_ps(o[r].add(col + 8 * c));
                }
            }
        }
        let mut lim = [0usize; 3];
        for r in 0..R {
            lim[r] = seen[r].min(jb);
        }
        let common = lim[..R].iter().copied().min().unwrap_or(0);
        // The first column tile requests whole value rows PREFETCH keys ahead, so the
        // later column tiles find them cached.
        let fetch = col == 0 && PF;
        let mut ahead = Cursor::new(values, (ja + PREFETCH).min(common));
        let mut j = ja;
        while j < common {
            let (at, run, stride) = values.seg(j);
            let end = common.min(j.saturating_add(run));
            let mut vp = data.add(at + col);
            for jj in j..end {
                if fetch && jj + PREFETCH < common {
                    prefetch_row(data.add(ahead.next_at()), d);
                }
                let mut b = [_mm256_setzero_ps(); 3];
                for r in 0..R {
                    b[r] = _mm256_broadcast_ss(&*p[r].add(jj));
                }
                for c in 0..C {
                    let x = load8(vp.add(8 * c));
                    for r in 0..R {
                        acc[r][c] = _mm256_fmadd_ps(b[r], x, acc[r][c]);
                    }
                }
                vp = vp.add(stride);
            }
            j = end;
        }
        for r in 0..R {
            let mut j = common.max(ja);
            while j < lim[r] {
                let (at, run, stride) = values.seg(j);
                let end = lim[r].min(j.saturating_add(run));
                let mut vp = data.add(at + col);
                for jj in j..end {
                    let b = _mm256_broadcast_ss(&*p[r].add(jj));
                    for c in 0..C {
                        acc[r][c] = _mm256_fmadd_ps(b, load8(vp.add(8 * c)), acc[r][c]);
                    }
                    vp = vp.add(stride);
                }
                j = end;
            }
            for c in 0..C {
                _mm256_storeu_ps(o[r].add(col + 8 * c), acc[r][c]);
            }
        }
    }

    /// Keys `ja..jb` of all d columns of R rows' weighted sums (as `pv_tile`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn pv_rows<T: CacheElem, const R: usize, const PF: bool>(
        p: &[*const f32; 3],
        seen: &[usize; 3],
        values: &Rows<'_, T>,
        d: usize,
        o: &[*mut f32; 3],
        ja: usize,
        jb: usize,
    ) {
        let mut col = 0;
        while col + 32 <= d {
            pv_tile::<T, R, 4, PF>(p, seen, values, col, o, (ja, jb, d));
            col += 32;
        }
        if col + 16 <= d {
            pv_tile::<T, R, 2, PF>(p, seen, values, col, o, (ja, jb, d));
            col += 16;
        }
        if col + 8 <= d {
            pv_tile::<T, R, 1, PF>(p, seen, values, col, o, (ja, jb, d));
            col += 8;
        }
        if col < d {
            // Columns past the last multiple of 8: the same FMAs, one element at a time.
            let data = values.data().as_ptr();
            for r in 0..R {
                for c in col..d {
                    let mut acc = if ja > 0 { *o[r].add(c) } else { 0.0 };
                    for j in ja..seen[r].min(jb) {
                        let v = (*data.add(values.seg(j).0 + c)).to_f32();
                        acc = (*p[r].add(j)).mul_add(v, acc);
                    }
                    *o[r].add(c) = acc;
                }
            }
        }
    }

    /// Bytes of K^T panels or V rows a pass works through before moving on (about half of a
    /// 32 KiB L1 data cache), so each loaded chunk serves every row of the task.
    const CHUNK_BYTES: usize = 16 << 10;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run<T: CacheElem>(task: &Task<'_, T>, rows: &[Row], out: OutPtr) {
        let d = task.d;
        let n = rows.iter().map(|r| r.seen).max().unwrap_or(0);
        let panels = n.div_ceil(PANEL);
        let ld = (panels * PANEL).max(PANEL);
        let nrows = rows.len();
        KT.with(|kt| {
            SCORES.with(|sc| {
                let (mut kt, mut sc) = (kt.borrow_mut(), sc.borrow_mut());
                if kt.len() < panels * d * PANEL {
                    kt.resize(panels * d * PANEL, 0.0);
                }
                if sc.len() < nrows * ld {
                    sc.resize(nrows * ld, 0.0);
                }
                pack_kt(&task.keys, n, d, &mut kt);
                let ktp = kt.as_ptr();
                let sp = sc.as_mut_ptr();
                // Scores of every row, a chunk of K^T panels at a time (the chunk stays in
                // L1 while every tile of rows uses it).
                let chunk = (CHUNK_BYTES / (d * PANEL * 4)).max(1);
                let mut p0 = 0;
                while p0 < panels {
                    let p1 = (p0 + chunk).min(panels);
                    for (ti, tile) in rows.chunks(MR).enumerate() {
                        let np = tile
                            .iter()
                            .map(|r| r.seen)
                            .max()
                            .unwrap_or(0)
                            .div_ceil(PANEL)
                            .min(p1);
                        if np <= p0 {
                            continue;
                        }
                        let mut q = [task.q.as_ptr(); MR];
                        let mut s = [sp; MR];
                        for (r, row) in tile.iter().enumerate() {
                            q[r] = task.q.as_ptr().add(row.at);
                            s[r] = sp.add((ti * MR + r) * ld + p0 * PANEL);
                        }
                        let kp = ktp.add(p0 * d * PANEL);
                        let np = np - p0;
                        match tile.len() {
                            1 => score_rows::<1>(&q, kp, np, d, task.scale, &s),
                            2 => score_rows::<2>(&q, kp, np, d, task.scale, &s),
                            3 => score_rows::<3>(&q, kp, np, d, task.scale, &s),
                            4 => score_rows::<4>(&q, kp, np, d, task.scale, &s),
                            5 => score_rows::<5>(&q, kp, np, d, task.scale, &s),
                            _ => score_rows::<6>(&q, kp, np, d, task.scale, &s),
                        }
                    }
                    p0 = p1;
                }
                let mut live = Vec::with_capacity(nrows);
                for (r, row) in rows.iter().enumerate() {
                    if row.seen == 0 {
                        std::slice::from_raw_parts_mut(out.get().add(row.at), d).fill(0.0);
                    } else {
                        softmax_in_place(std::slice::from_raw_parts_mut(sp.add(r * ld), row.seen));
                        live.push(r);
                    }
                }
                if nrows >= MR {
                    // Rows strided across KV heads (or pages) alias in L1 sets; a contiguous
                    // f32 copy (an exact copy or widening) streams cleanly for every row.
                    VALS.with(|vb| {
                        let mut vb = vb.borrow_mut();
                        if vb.len() < n * d {
                            vb.resize(n * d, 0.0);
                        }
                        let src = task.values.data();
                        let mut cur = Cursor::new(&task.values, 0);
                        for dst in vb[..n * d].chunks_exact_mut(d) {
                            let at = cur.next_at();
                            for (x, y) in dst.iter_mut().zip(&src[at..at + d]) {
                                *x = y.to_f32();
                            }
                        }
                        let packed = Rows::Dense {
                            data: &vb[..n * d],
                            off: 0,
                            stride: d,
                        };
                        weighted_sums::<f32, false>(&packed, rows, &live, sp, ld, n, d, out);
                    })
                } else {
                    weighted_sums::<T, true>(&task.values, rows, &live, sp, ld, n, d, out);
                }
            })
        })
    }

    /// Weighted sums of the `live` rows (probabilities at `sp + r·ld`), a chunk of value rows
    /// at a time for every group of 3 rows.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn weighted_sums<T: CacheElem, const PF: bool>(
        values: &Rows<'_, T>,
        rows: &[Row],
        live: &[usize],
        sp: *mut f32,
        ld: usize,
        n: usize,
        d: usize,
        out: OutPtr,
    ) {
        let vchunk = (CHUNK_BYTES / (d * 4)).max(PANEL);
        let mut ja = 0;
        while ja < n {
            let jb = (ja + vchunk).min(n);
            for g in live.chunks(3) {
                let mut p = [sp as *const f32; 3];
                let mut seen = [0usize; 3];
                let mut o = [out.get(); 3];
                for (x, &r) in g.iter().enumerate() {
                    p[x] = sp.add(r * ld);
                    seen[x] = rows[r].seen;
                    o[x] = out.get().add(rows[r].at);
                }
                if seen[..g.len()].iter().all(|&sn| sn <= ja) {
                    continue;
                }
                match g.len() {
                    1 => pv_rows::<T, 1, PF>(&p, &seen, values, d, &o, ja, jb),
                    2 => pv_rows::<T, 2, PF>(&p, &seen, values, d, &o, ja, jb),
                    _ => pv_rows::<T, 3, PF>(&p, &seen, values, d, &o, ja, jb),
                }
            }
            ja = jb;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{seed, Rng};
    use half::bf16;

    /// `run` (the blocked AVX2 path where the CPU has it) equals the defining loop bit for
    /// bit, for dense and paged rows, f32 and bf16, tasks of 1 to 20 rows with mixed counts.
    #[test]
    fn run_equals_portable_loop_bitwise() {
        let s = seed(0xc0de_0001);
        let mut rng = Rng::new(s);
        for &d in &[1, 8, 12, 32, 64, 72] {
            for &(nrows, n) in &[
                (1usize, 1usize),
                (3, 17),
                (3, 200),
                (6, 48),
                (7, 33),
                (20, 300),
            ] {
                let (bs, kv_heads) = (5, 2);
                let pages = n.div_ceil(bs);
                let table: Vec<u32> = (0..pages as u32)
                    .map(|p| (p * 7 + 3) % pages as u32)
                    .collect();
                let cache = pages * kv_heads * bs * d;
                let kc = rng.vec(cache);
                let vc = rng.vec(cache);
                let q = rng.vec(nrows * d);
                let rows: Vec<Row> = (0..nrows)
                    .map(|r| Row {
                        at: r * d,
                        seen: if r % 3 == 2 { n / 2 } else { n - r.min(n) },
                    })
                    .collect();
                fn paged<'a, T>(data: &'a [T], table: &'a [u32], d: usize) -> Rows<'a, T> {
                    Rows::Paged {
                        data,
                        table,
                        kv_heads: 2,
                        kv_head: 1,
                        block_size: 5,
                        d,
                    }
                }
                let (k16, v16): (Vec<bf16>, Vec<bf16>) = (
                    kc.iter().map(|&x| bf16::from_f32(x)).collect(),
                    vc.iter().map(|&x| bf16::from_f32(x)).collect(),
                );
                let check = |got: &[f32], want: &[f32], what: &str| {
                    assert!(
                        got.iter()
                            .zip(want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what} d={d} rows={nrows} n={n} (seed {s:#x})"
                    );
                };
                // SAFETY: every row's d outputs lie in `a`/`b` (nrows·d), keys below n exist
                // in the pages of `table` inside the cache.
                unsafe {
                    let t = Task {
                        q: &q,
                        keys: paged(&kc, &table, d),
                        values: paged(&vc, &table, d),
                        d,
                        scale: 0.3,
                    };
                    let (mut a, mut b) = (vec![f32::NAN; nrows * d], vec![f32::NAN; nrows * d]);
                    run(&t, &rows, OutPtr(a.as_mut_ptr()));
                    portable(&t, &rows, OutPtr(b.as_mut_ptr()));
                    check(&a, &b, "paged f32");
                    let t16 = Task {
                        q: &q,
                        keys: paged(&k16, &table, d),
                        values: paged(&v16, &table, d),
                        d,
                        scale: 0.3,
                    };
                    let mut c = vec![f32::NAN; nrows * d];
                    run(&t16, &rows, OutPtr(c.as_mut_ptr()));
                    portable(&t16, &rows, OutPtr(b.as_mut_ptr()));
                    check(&c, &b, "paged bf16");
                    let dense = |data| Rows::Dense {
                        data,
                        off: d,
                        stride: 2 * d,
                    };
                    let (kd, vd) = (rng.vec(2 * n * d), rng.vec(2 * n * d));
                    let t = Task {
                        q: &q,
                        keys: dense(&kd),
                        values: dense(&vd),
                        d,
                        scale: 0.3,
                    };
                    run(&t, &rows, OutPtr(a.as_mut_ptr()));
                    portable(&t, &rows, OutPtr(b.as_mut_ptr()));
                    check(&a, &b, "dense f32");
                    assert!(a.iter().all(|x| x.is_finite()), "NaN (seed {s:#x})");
                }
            }
        }
    }
}
