//! Small vector primitives: the softmax's shifted exp and sum (AVX2 + FMA path picked at run
//! time, portable path without it), the 8-lane exp and horizontal sum.

/// The largest element, NaNs skipped (as `f32::max` folds); -inf when empty or all NaN.
pub(crate) fn max(v: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { max_avx2(v) };
        }
    }
    v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_avx2(v: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = v.len();
    let p = v.as_ptr();
    // `max_ps(x, acc)` returns acc when x is NaN, so NaNs are skipped; four accumulators
    // hide the latency. The maximum is exact whatever the order.
    let mut acc = [_mm256_set1_ps(f32::NEG_INFINITY); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (a, ac) in acc.iter_mut().enumerate() {
            *ac = _mm256_max_ps(_mm256_loadu_ps(p.add(i + 8 * a)), *ac);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_max_ps(_mm256_loadu_ps(p.add(i)), acc[0]);
        i += 8;
    }
    let m = _mm256_max_ps(_mm256_max_ps(acc[0], acc[1]), _mm256_max_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    let mut best = lanes.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in &v[i..] {
        best = best.max(x);
    }
    best
}

/// v[i] = exp(v[i] - max) for every element; returns their sum (f32 accumulation).
pub(crate) fn exp_shifted_sum(v: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked above).
            return unsafe { exp_shifted_sum_avx2(v, max) };
        }
    }
    let mut sum = 0f32;
    for e in v.iter_mut() {
        *e = (*e - max).exp();
        sum += *e;
    }
    sum
}

/// Horizontal sum of 8 lanes as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)): the association the
/// matmul's portable path uses too, so both paths agree bit for bit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair)))
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// exp(x) for 8 lanes: range reduction x = n·ln2 + r (ln2 split in two so n·ln2 is exact),
/// a degree-7 minimax-style polynomial for e^r on |r| <= ln2/2, then 2^n through the exponent
/// bits. About 1 ulp of error; inputs below -87 flush towards 0 (softmax never needs more).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let x = _mm256_max_ps(
        _mm256_min_ps(x, _mm256_set1_ps(88.0)),
        _mm256_set1_ps(-87.0),
    );
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    let bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    );
    _mm256_mul_ps(y, _mm256_castsi256_ps(bits))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_shifted_sum_avx2(v: &mut [f32], max: f32) -> f32 {
    use std::arch::x86_64::*;
    let n = v.len();
    let p = v.as_mut_ptr();
    let m = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), m));
        _mm256_storeu_ps(p.add(i), e);
        acc = _mm256_add_ps(acc, e);
        i += 8;
    }
    let mut sum = hsum(acc);
    if i < n {
        // The last n % 8 through `exp8` too (one padded vector instead of libm calls),
        // added one at a time after the lanes as before.
        let mut tail = [max; 8];
        tail[..n - i].copy_from_slice(&v[i..]);
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), m));
        _mm256_storeu_ps(tail.as_mut_ptr(), e);
        for (x, &t) in v[i..].iter_mut().zip(&tail) {
            *x = t;
            sum += t;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{seed, Rng};

    #[test]
    fn exp_shifted_sum_matches_f64_on_every_length() {
        let s = seed(0x7ec0_0001);
        let mut rng = Rng::new(s);
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 80, 128, 1000] {
            let a: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
            let mut e = a.iter().map(|x| x * 40.0).collect::<Vec<f32>>();
            let max = e.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            // The shift itself rounds in f32 on every path; exp must be accurate after it.
            let want_e: Vec<f64> = e.iter().map(|x| ((x - max) as f64).exp()).collect();
            let sum = exp_shifted_sum(&mut e, max);
            for (i, (got, want)) in e.iter().zip(&want_e).enumerate() {
                assert!(
                    (*got as f64 - want).abs() <= 4e-7 * want + 1e-37,
                    "seed {s:#x} n {n} i {i}: exp {got} vs {want}"
                );
            }
            let want_sum: f64 = want_e.iter().sum();
            assert!((sum as f64 - want_sum).abs() <= 1e-6 * want_sum.max(1e-30));
        }
    }
}
