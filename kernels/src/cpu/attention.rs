//! Scaled dot-product attention (GQA, optional causal mask), f32, one (query row, head) pair
//! per rayon item. Scores go to a per-thread scratch row of kv_len floats, then an exact
//! softmax and a weighted sum of V: the same operation order as HF's eager attention.

use super::softmax::{softmax_in_place, visible};
use super::vecops::{axpy, dot};
use rayon::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    pub q_len: usize,
    pub kv_len: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Query row i sits at absolute position `kv_len - q_len + i` and sees keys `0..=` that.
    pub causal: bool,
}

thread_local! {
    /// Score row reused across calls, so decode does not allocate per head.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Minimum multiply-adds per rayon task.
const TASK_WORK: usize = 1 << 15;

/// Scaled dot-product attention with GQA (query head h reads kv head h / (num_heads / num_kv_heads)).
/// `q`: [q_len, num_heads, head_dim]; `k`, `v`: [kv_len, num_kv_heads, head_dim];
/// `out`: [q_len, num_heads, head_dim]. f32 softmax state.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], p: AttentionParams) {
    let AttentionParams {
        q_len,
        kv_len,
        num_heads,
        num_kv_heads,
        head_dim: d,
        scale,
        causal,
    } = p;
    assert!(
        num_kv_heads > 0 && num_heads % num_kv_heads == 0,
        "attention: bad GQA ratio"
    );
    let q_size = q_len * num_heads * d;
    let kv_size = kv_len * num_kv_heads * d;
    assert!(
        q.len() >= q_size && out.len() >= q_size,
        "attention: q or out too short"
    );
    assert!(
        k.len() >= kv_size && v.len() >= kv_size,
        "attention: k or v too short"
    );
    if d == 0 {
        return;
    }
    let group = num_heads / num_kv_heads;
    let kv_stride = num_kv_heads * d;
    #[cfg(target_arch = "x86_64")]
    let fast =
        d.is_multiple_of(8) && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    // Few query rows (decode): one task per (row, head) instead, so the heads still spread
    // over the threads.
    #[cfg(target_arch = "x86_64")]
    if fast && q_len >= FAST_ROWS * rayon::current_num_threads() {
        fast_rows(q, k, v, &mut out[..q_size], p);
        return;
    }
    let item = |idx: usize, o: &mut [f32]| {
        let (t, h) = (idx / num_heads, idx % num_heads);
        let kvh = h / group;
        let qv = &q[idx * d..(idx + 1) * d];
        let seen = if causal {
            visible(t, q_len, kv_len)
        } else {
            kv_len
        };
        o.fill(0.0);
        if seen == 0 {
            return;
        }
        SCORES.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < seen {
                s.resize(seen, 0.0);
            }
            let scores = &mut s[..seen];
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: AVX2 and FMA are available (`fast`); rows 0..seen of k and v hold
                // kv head kvh at kvh·d..(kvh + 1)·d (sizes asserted above); `o` holds d values.
                unsafe {
                    avx2::scores(qv, k, kv_stride, kvh * d, scale, scores);
                    softmax_in_place(scores);
                    let o = o.as_mut_ptr();
                    avx2::weighted_sum2(scores, &[], v, kv_stride, kvh * d, d, o, o);
                }
                return;
            }
            for (j, sc) in scores.iter_mut().enumerate() {
                let kj = &k[j * kv_stride + kvh * d..][..d];
                *sc = dot(qv, kj) * scale;
            }
            softmax_in_place(scores);
            for (j, &pj) in scores.iter().enumerate() {
                let vj = &v[j * kv_stride + kvh * d..][..d];
                axpy(o, pj, vj);
            }
        });
    };
    let out = &mut out[..q_size];
    let work = q_len * num_heads * kv_len * d;
    if work < 2 * TASK_WORK || q_len * num_heads == 1 {
        for (idx, o) in out.chunks_exact_mut(d).enumerate() {
            item(idx, o);
        }
    } else {
        let per_item = (kv_len * d).max(1);
        let min_len = (TASK_WORK / per_item).max(1);
        out.par_chunks_exact_mut(d)
            .enumerate()
            .with_min_len(min_len)
            .for_each(|(idx, o)| item(idx, o));
    }
}

/// Query rows per task of the AVX2 path: its weighted sums run two rows at a time (each
/// value row loaded once for both, twice the independent FMA chains).
const FAST_ROWS: usize = 4;

/// The AVX2 path (head_dim a multiple of 8): tasks of `FAST_ROWS` query rows × all heads; per
/// head the rows' scores, softmax, then weighted sums two rows at a time. Every output is
/// computed with the same operations in the same order as the per-(row, head) loop above.
#[cfg(target_arch = "x86_64")]
fn fast_rows(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], p: AttentionParams) {
    let AttentionParams {
        q_len,
        kv_len,
        num_heads,
        num_kv_heads,
        head_dim: d,
        scale,
        causal,
    } = p;
    let group = num_heads / num_kv_heads;
    let kv_stride = num_kv_heads * d;
    let row = num_heads * d;
    let task = |c: usize, oc: &mut [f32]| {
        let t0 = c * FAST_ROWS;
        let rows = oc.len() / row;
        let op = oc.as_mut_ptr();
        SCORES.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < FAST_ROWS * kv_len {
                s.resize(FAST_ROWS * kv_len, 0.0);
            }
            for h in 0..num_heads {
                let kvh = h / group;
                let mut seen = [0usize; FAST_ROWS];
                for (r, sr) in seen.iter_mut().enumerate().take(rows) {
                    let t = t0 + r;
                    *sr = if causal {
                        visible(t, q_len, kv_len)
                    } else {
                        kv_len
                    };
                    let sc = &mut s[r * kv_len..r * kv_len + *sr];
                    if !sc.is_empty() {
                        let qv = &q[(t * num_heads + h) * d..][..d];
                        // SAFETY: AVX2 and FMA (checked by the caller); rows 0..seen of k
                        // hold kv head kvh at kvh·d.. (sizes asserted by `attention`).
                        unsafe { avx2::scores(qv, k, kv_stride, kvh * d, scale, sc) };
                        softmax_in_place(sc);
                    }
                }
                let mut r = 0;
                while r < rows {
                    let p0 = &s[r * kv_len..r * kv_len + seen[r]];
                    // SAFETY: as above for v; the output rows r (and r + 1) of head h are
                    // disjoint d-element ranges of this task's chunk.
                    unsafe {
                        let o0 = op.add(r * row + h * d);
                        if r + 1 < rows {
                            let p1 = &s[(r + 1) * kv_len..(r + 1) * kv_len + seen[r + 1]];
                            let o1 = op.add((r + 1) * row + h * d);
                            avx2::weighted_sum2(p0, p1, v, kv_stride, kvh * d, d, o0, o1);
                            r += 2;
                        } else {
                            avx2::weighted_sum2(p0, &[], v, kv_stride, kvh * d, d, o0, o0);
                            r += 1;
                        }
                    }
                }
            }
        });
    };
    let work = q_len * num_heads * kv_len * d;
    let chunk = FAST_ROWS * row;
    if work < 2 * TASK_WORK || q_len == 1 {
        for (c, oc) in out.chunks_mut(chunk).enumerate() {
            task(c, oc);
        }
    } else {
        let per_task = (FAST_ROWS * num_heads * kv_len * d).max(1);
        let min_len = (TASK_WORK / per_task).max(1);
        out.par_chunks_mut(chunk)
            .enumerate()
            .with_min_len(min_len)
            .for_each(|(c, oc)| task(c, oc));
    }
}

/// The same scores and weighted sum as `vecops::dot` / `vecops::axpy`, operation for operation
/// (so bit for bit), for head_dim a multiple of 8: eight keys' dot products at a time with one
/// transposed lane reduction instead of eight, and the output row kept in registers across
/// all keys instead of loaded and stored per key.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `dot_avx2`'s accumulation before its lane sum: chunks 0, 2, 4... in one accumulator,
    /// 1, 3, 5... in the other, an odd last chunk in the first, then their sum. `D` > 0 fixes
    /// the length at compile time (fully unrolled); `D` = 0 reads it from `d`.
    #[inline(always)]
    unsafe fn dot_lanes<const D: usize>(q: *const f32, k: *const f32, d: usize) -> __m256 {
        let d = if D > 0 { D } else { d };
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= d {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i)), _mm256_loadu_ps(k.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(q.add(i + 8)),
                _mm256_loadu_ps(k.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= d {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(i)), _mm256_loadu_ps(k.add(i)), acc0);
        }
        _mm256_add_ps(acc0, acc1)
    }

    /// Lane j of the result is `hsum(v[j])`, with `hsum`'s association
    /// ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
    #[inline(always)]
    unsafe fn hsum8(v: &[__m256; 8]) -> __m256 {
        // [quad(vA) | quad(vB)], quad = (l0+l4, l1+l5, l2+l6, l3+l7).
        let quad = |a: __m256, b: __m256| {
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(a, b),
                _mm256_permute2f128_ps::<0x31>(a, b),
            )
        };
        let (q04, q15, q26, q37) = (
            quad(v[0], v[4]),
            quad(v[1], v[5]),
            quad(v[2], v[6]),
            quad(v[3], v[7]),
        );
        // [p0, p1] per vector, p0 = (l0+l4)+(l2+l6), p1 = (l1+l5)+(l3+l7).
        let pair = |a: __m256, b: __m256| {
            _mm256_add_ps(
                _mm256_shuffle_ps::<0b01_00_01_00>(a, b),
                _mm256_shuffle_ps::<0b11_10_11_10>(a, b),
            )
        };
        let (p01, p23) = (pair(q04, q15), pair(q26, q37));
        _mm256_add_ps(
            _mm256_shuffle_ps::<0b10_00_10_00>(p01, p23),
            _mm256_shuffle_ps::<0b11_01_11_01>(p01, p23),
        )
    }

    /// `scores[j] = dot(q, k_j) * scale`, k_j at `k[j * stride + off..][..q.len()]`.
    ///
    /// # Safety
    /// AVX2 and FMA; `q.len()` a multiple of 8; k holds `scores.len()` rows of `stride`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(
        q: &[f32],
        k: &[f32],
        stride: usize,
        off: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        match q.len() {
            32 => scores_d::<32>(q, k, stride, off, scale, scores),
            64 => scores_d::<64>(q, k, stride, off, scale, scores),
            128 => scores_d::<128>(q, k, stride, off, scale, scores),
            _ => scores_d::<0>(q, k, stride, off, scale, scores),
        }
    }

    #[inline(always)]
    unsafe fn scores_d<const D: usize>(
        q: &[f32],
        k: &[f32],
        stride: usize,
        off: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        let d = q.len();
        let n = scores.len();
        debug_assert!(n == 0 || k.len() >= (n - 1) * stride + off + d);
        let (qp, kp, sp) = (q.as_ptr(), k.as_ptr().add(off), scores.as_mut_ptr());
        let sc = _mm256_set1_ps(scale);
        let mut j = 0;
        while j + 8 <= n {
            let mut v = [_mm256_setzero_ps(); 8];
            for (t, vt) in v.iter_mut().enumerate() {
                *vt = dot_lanes::<D>(qp, kp.add((j + t) * stride), d);
            }
            _mm256_storeu_ps(sp.add(j), _mm256_mul_ps(hsum8(&v), sc));
            j += 8;
        }
        while j < n {
            let v = dot_lanes::<D>(qp, kp.add(j * stride), d);
            *sp.add(j) = crate::cpu::vecops::hsum(v) * scale;
            j += 1;
        }
    }

    /// 8·C columns of `o0 = Σ_j p0[j] · v_j` and `o1 = Σ_j p1[j] · v_j` (zero on entry): one
    /// fused multiply-add per key and element in key order, as `axpy` does; keys below both
    /// lengths share their value loads.
    #[inline(always)]
    unsafe fn wsum2<const C: usize>(
        p0: &[f32],
        p1: &[f32],
        v: *const f32,
        stride: usize,
        o0: *mut f32,
        o1: *mut f32,
    ) {
        let mut a0 = [_mm256_setzero_ps(); C];
        let mut a1 = [_mm256_setzero_ps(); C];
        let both = p0.len().min(p1.len());
        for j in 0..both {
            let (b0, b1) = (_mm256_set1_ps(p0[j]), _mm256_set1_ps(p1[j]));
            let vj = v.add(j * stride);
            for c in 0..C {
                let x = _mm256_loadu_ps(vj.add(8 * c));
                a0[c] = _mm256_fmadd_ps(b0, x, a0[c]);
                a1[c] = _mm256_fmadd_ps(b1, x, a1[c]);
            }
        }
        for (p, a) in [(p0, &mut a0), (p1, &mut a1)] {
            for (j, &pj) in p.iter().enumerate().skip(both) {
                let b = _mm256_set1_ps(pj);
                let vj = v.add(j * stride);
                for (c, ac) in a.iter_mut().enumerate() {
                    *ac = _mm256_fmadd_ps(b, _mm256_loadu_ps(vj.add(8 * c)), *ac);
                }
            }
        }
        for (c, a) in a0.iter().enumerate() {
            _mm256_storeu_ps(o0.add(8 * c), *a);
        }
        if o1 != o0 {
            for (c, a) in a1.iter().enumerate() {
                _mm256_storeu_ps(o1.add(8 * c), *a);
            }
        }
    }

    /// `o0 = Σ_j p0[j] · v_j` and `o1 = Σ_j p1[j] · v_j` over d columns, v_j at
    /// `v[j * stride + off..][..d]`. With `p1` empty and `o1 == o0`, just the first.
    ///
    /// # Safety
    /// AVX2 and FMA; d a multiple of 8; v holds max(len) rows of `stride`; `o0`, `o1` are
    /// writable for d values and do not overlap unless equal.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn weighted_sum2(
        p0: &[f32],
        p1: &[f32],
        v: &[f32],
        stride: usize,
        off: usize,
        d: usize,
        o0: *mut f32,
        o1: *mut f32,
    ) {
        debug_assert!(d.is_multiple_of(8));
        let vp = v.as_ptr().add(off);
        let mut c = 0;
        while c + 32 <= d {
            wsum2::<4>(p0, p1, vp.add(c), stride, o0.add(c), o1.add(c));
            c += 32;
        }
        if c + 16 <= d {
            wsum2::<2>(p0, p1, vp.add(c), stride, o0.add(c), o1.add(c));
            c += 16;
        }
        if c + 8 <= d {
            wsum2::<1>(p0, p1, vp.add(c), stride, o0.add(c), o1.add(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};

    /// The AVX2 path (scores eight keys at a time, output row in registers) computes exactly
    /// the per-key `dot` / `axpy` loop: compared bit for bit on odd sizes, GQA, both masks.
    #[test]
    fn fast_path_equals_dot_axpy_loop_bitwise() {
        let s = seed(0xa77e_0003);
        let mut rng = Rng::new(s);
        for &d in &[8, 16, 24, 32, 40, 64, 72, 128, 136] {
            for &(q_len, kv_len) in &[(1, 1), (3, 7), (8, 8), (9, 9), (5, 33), (17, 100)] {
                for causal in [false, true] {
                    let (num_heads, num_kv_heads) = (4, 2);
                    let p = AttentionParams {
                        q_len,
                        kv_len,
                        num_heads,
                        num_kv_heads,
                        head_dim: d,
                        scale: 1.0 / (d as f32).sqrt(),
                        causal,
                    };
                    let q = rng.vec(q_len * num_heads * d);
                    let k = rng.vec(kv_len * num_kv_heads * d);
                    let v = rng.vec(kv_len * num_kv_heads * d);
                    let mut got = vec![f32::NAN; q.len()];
                    attention(&q, &k, &v, &mut got, p);
                    let mut want = vec![0f32; q.len()];
                    for t in 0..q_len {
                        for h in 0..num_heads {
                            let kvh = h / (num_heads / num_kv_heads);
                            let seen = if causal {
                                visible(t, q_len, kv_len)
                            } else {
                                kv_len
                            };
                            let qv = &q[(t * num_heads + h) * d..][..d];
                            let mut sc: Vec<f32> = (0..seen)
                                .map(|j| dot(qv, &k[(j * num_kv_heads + kvh) * d..][..d]) * p.scale)
                                .collect();
                            if seen > 0 {
                                softmax_in_place(&mut sc);
                            }
                            let o = &mut want[(t * num_heads + h) * d..][..d];
                            for (j, &pj) in sc.iter().enumerate() {
                                axpy(o, pj, &v[(j * num_kv_heads + kvh) * d..][..d]);
                            }
                        }
                    }
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "d={d} q_len={q_len} kv_len={kv_len} causal={causal} (seed {s:#x})"
                    );
                }
            }
        }
    }

    fn reference(q: &[f32], k: &[f32], v: &[f32], p: AttentionParams) -> Vec<f64> {
        let d = p.head_dim;
        let group = p.num_heads / p.num_kv_heads;
        let mut out = vec![0f64; p.q_len * p.num_heads * d];
        for t in 0..p.q_len {
            for h in 0..p.num_heads {
                let kvh = h / group;
                let seen = if p.causal {
                    visible(t, p.q_len, p.kv_len)
                } else {
                    p.kv_len
                };
                let qv = &q[(t * p.num_heads + h) * d..][..d];
                let s: Vec<f64> = (0..seen)
                    .map(|j| {
                        let kj = &k[(j * p.num_kv_heads + kvh) * d..][..d];
                        qv.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * p.scale as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = s.iter().map(|x| (x - max).exp()).sum();
                let o = &mut out[(t * p.num_heads + h) * d..][..d];
                for (j, sj) in s.iter().enumerate() {
                    let pj = (sj - max).exp() / sum;
                    let vj = &v[(j * p.num_kv_heads + kvh) * d..][..d];
                    for (o, &vv) in o.iter_mut().zip(vj) {
                        *o += pj * vv as f64;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference() {
        let s = seed(0xa1_0001);
        let mut rng = Rng::new(s);
        let cases = [
            // (q_len, kv_len, heads, kv_heads, head_dim, causal)
            (1, 1, 1, 1, 1, true),
            (1, 31, 4, 2, 32, true),
            (31, 31, 4, 4, 33, true),
            (32, 32, 6, 2, 64, true),
            (33, 33, 9, 3, 64, false),
            (1, 512, 9, 3, 64, true),
            (7, 40, 8, 1, 16, true),
            (128, 300, 9, 3, 64, true),
        ];
        for (q_len, kv_len, num_heads, num_kv_heads, head_dim, causal) in cases {
            let p = AttentionParams {
                q_len,
                kv_len,
                num_heads,
                num_kv_heads,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
                causal,
            };
            let q = rng.vec(q_len * num_heads * head_dim);
            let k = rng.vec(kv_len * num_kv_heads * head_dim);
            let v = rng.vec(kv_len * num_kv_heads * head_dim);
            let mut out = vec![f32::NAN; q.len()];
            attention(&q, &k, &v, &mut out, p);
            let case = format!("attention q={q_len} kv={kv_len} h={num_heads}/{num_kv_heads} d={head_dim} causal={causal}");
            assert_close(&out, &reference(&q, &k, &v, p), 1e-7, s, &case);
        }
    }

    /// Large scores must not overflow: the max is subtracted before exp.
    #[test]
    fn large_scores_are_stable() {
        let p = AttentionParams {
            q_len: 1,
            kv_len: 2,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 1,
            scale: 1.0,
            causal: true,
        };
        let mut out = [f32::NAN];
        attention(&[1000.0], &[1.0, 0.9], &[2.0, 4.0], &mut out, p);
        assert!((out[0] - 2.0).abs() < 1e-6, "{out:?}");
    }
}
