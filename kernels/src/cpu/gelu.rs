//! GELU activations (CUDA twin: cuda/gelu.cu), elementwise, f32 arithmetic whatever the
//! storage type, with torch's formulas:
//! - `gelu(x, approximate="none") = x * 0.5 * (1 + erf(x / sqrt(2)))` (BERT, Whisper);
//! - `gelu(x, approximate="tanh") = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x³)))`;
//! - `quick_gelu(x) = x * sigmoid(1.702 x)` (CLIP), `sigmoid(v) = 1 / (1 + exp(-v))`.

use super::act::Act;
use super::binary::PAR_CHUNK;
use rayon::prelude::*;

/// torch's `approximate` argument of `gelu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GeluApprox {
    /// `approximate="none"`: the exact erf form.
    Erf,
    /// `approximate="tanh"`.
    Tanh,
}

/// The error function in f32: the f64 value below rounded once, so within an ulp (in
/// practice correctly rounded). Rust's std has no erf.
pub fn erf(x: f32) -> f32 {
    erf_fast(x as f64) as f32
}

/// erf for the hot path, ~1e-7 relative or better where it matters: the Maclaurin series
/// to x^13 below |x| = 0.5 (relative error < 3e-9 there, so small arguments keep their
/// precision), else 1 - erfc(|x|) with a 10-term Chebyshev fit of erfc (fractional error
/// < 1.2e-7). One exp instead of `erf_f64`'s long series: GELU over a BERT batch is tens of
/// millions of calls.
fn erf_fast(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a < 0.5 {
        let z = a * a;
        // Coefficients (-1)^n / (n! (2n + 1)).
        let p = 1.0
            + z * (-1.0 / 3.0
                + z * (1.0 / 10.0
                    + z * (-1.0 / 42.0
                        + z * (1.0 / 216.0 + z * (-1.0 / 1320.0 + z * (1.0 / 9360.0))))));
        return std::f64::consts::FRAC_2_SQRT_PI * x * p;
    }
    if a >= 6.0 {
        return 1.0f64.copysign(x);
    }
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * (-a * a + poly).exp();
    (1.0 - erfc).copysign(x)
}

#[cfg(test)]
/// erf in f64 to ~1e-15 relative: `2/sqrt(pi) * exp(-x²) * Σ (2x²)^k x / (1·3···(2k+1))`,
/// a series of positive terms (no cancellation) that converges for every x; beyond 6 erf is
/// ±1 to f64 precision.
pub(crate) fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    if a >= 6.0 {
        return 1.0f64.copysign(x);
    }
    let a2 = a * a;
    let (mut term, mut sum) = (a, a);
    let mut k = 0.0f64;
    while term > sum * 1e-17 {
        k += 1.0;
        term *= 2.0 * a2 / (2.0 * k + 1.0);
        sum += term;
    }
    (std::f64::consts::FRAC_2_SQRT_PI * (-a2).exp() * sum).copysign(x)
}

#[inline]
pub fn gelu_erf(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const BETA: f32 = 0.797_884_6; // sqrt(2 / pi)
    let inner = BETA * (x + 0.044715 * (x * x * x)); // torch's association
    0.5 * x * (1.0 + inner.tanh())
}

#[inline]
pub fn quick_gelu1(x: f32) -> f32 {
    // exp overflowing to inf gives x * 0, not NaN.
    x * (1.0 / (1.0 + (-1.702 * x).exp()))
}

fn map<T: Act>(x: &[T], out: &mut [T], f: fn(f32) -> f32) {
    assert_eq!(x.len(), out.len(), "gelu: length mismatch");
    let run = |x: &[T], o: &mut [T]| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = T::from_f32(f(x.to_f32()));
        }
    };
    if out.len() <= PAR_CHUNK {
        run(x, out);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(x.par_chunks(PAR_CHUNK))
            .for_each(|(o, x)| run(x, o));
    }
}

/// `gelu_erf` over a slice, eight lanes at a time with AVX2 (`avx2::gelu_erf8`, within
/// 2.5e-7·(1 + |x|) of the exact value like the scalar path; not bit-identical to it), the
/// scalar function elsewhere and for the tail.
fn map_gelu_erf<T: Act>(x: &[T], out: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            assert_eq!(x.len(), out.len(), "gelu: length mismatch");
            let run = |x: &[T], o: &mut [T]| {
                // Blocks of 256 through an f32 buffer (the arithmetic is f32 for every
                // storage type), the vector loop over whole blocks of eight.
                let mut xs = [0f32; 256];
                let mut ys = [0f32; 256];
                for (xb, ob) in x.chunks(256).zip(o.chunks_mut(256)) {
                    let len = xb.len();
                    for (d, s) in xs.iter_mut().zip(xb) {
                        *d = s.to_f32();
                    }
                    let full = len - len % 8;
                    // SAFETY: AVX2 and FMA are available (checked above).
                    unsafe { avx2::gelu_erf_slice(&xs[..full], &mut ys[..full]) };
                    for (y, &x) in ys[full..len].iter_mut().zip(&xs[full..len]) {
                        *y = gelu_erf(x);
                    }
                    for (d, &s) in ob.iter_mut().zip(&ys[..len]) {
                        *d = T::from_f32(s);
                    }
                }
            };
            if out.len() <= PAR_CHUNK {
                run(x, out);
            } else {
                out.par_chunks_mut(PAR_CHUNK)
                    .zip(x.par_chunks(PAR_CHUNK))
                    .for_each(|(o, x)| run(x, o));
            }
            return;
        }
    }
    map(x, out, gelu_erf)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::cpu::vecops::exp8;
    use std::arch::x86_64::*;

    /// erf of eight f32 lanes, evaluated in f32 with the formulas of `erf_fast`: the Maclaurin
    /// series to x^13 below |x| = 0.5, else 1 - t·exp(-x² + P(t)) with t = 1/(1 + |x|/2) and
    /// the same 10-term Chebyshev fit; 1 from |x| >= 4 (erf rounds to 1 in f32 from ~3.92).
    /// Absolute error ~2e-7 at most (the tests bound GELU's error element by element).
    #[inline(always)]
    unsafe fn erf8(x: __m256) -> __m256 {
        let sign_mask = _mm256_set1_ps(-0.0);
        let sign = _mm256_and_ps(x, sign_mask);
        let a = _mm256_andnot_ps(sign_mask, x);
        let z = _mm256_mul_ps(a, a);
        let mut p = _mm256_set1_ps((1.0f64 / 9360.0) as f32);
        for c in [
            -1.0f64 / 1320.0,
            1.0 / 216.0,
            -1.0 / 42.0,
            1.0 / 10.0,
            -1.0 / 3.0,
            1.0,
        ] {
            p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(c as f32));
        }
        let small = _mm256_mul_ps(
            _mm256_mul_ps(a, _mm256_set1_ps(std::f32::consts::FRAC_2_SQRT_PI)),
            p,
        );
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.5), a, one));
        // `erf_fast`'s coefficients (f64), rounded to f32.
        let mut q = _mm256_set1_ps(0.170_872_77);
        for c in [
            -0.822_152_23f64,
            1.488_515_87,
            -1.135_203_98,
            0.278_868_07,
            -0.186_288_06,
            0.096_784_18,
            0.374_091_96,
            1.000_023_68,
            -1.265_512_23,
        ] {
            q = _mm256_fmadd_ps(q, t, _mm256_set1_ps(c as f32));
        }
        let erfc = _mm256_mul_ps(t, exp8(_mm256_fnmadd_ps(a, a, q)));
        let big = _mm256_blendv_ps(
            _mm256_sub_ps(one, erfc),
            one,
            _mm256_cmp_ps::<_CMP_GE_OQ>(a, _mm256_set1_ps(4.0)),
        );
        // NaN compares false everywhere and stays NaN through the `big` formula.
        let r = _mm256_blendv_ps(
            big,
            small,
            _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(0.5)),
        );
        _mm256_or_ps(r, sign)
    }

    /// `ys[i] = x · 0.5 · (1 + erf(x / √2))` (the scalar association), eight values at a time.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; both slices hold the same multiple of 8 values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gelu_erf_slice(xs: &[f32], ys: &mut [f32]) {
        debug_assert!(xs.len() == ys.len() && xs.len().is_multiple_of(8));
        for (xb, yb) in xs.chunks_exact(8).zip(ys.chunks_exact_mut(8)) {
            let x = _mm256_loadu_ps(xb.as_ptr());
            let e = erf8(_mm256_mul_ps(
                x,
                _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2),
            ));
            let y = _mm256_mul_ps(
                _mm256_mul_ps(x, _mm256_set1_ps(0.5)),
                _mm256_add_ps(_mm256_set1_ps(1.0), e),
            );
            _mm256_storeu_ps(yb.as_mut_ptr(), y);
        }
    }
}

/// out = gelu(x) (`kiln_gelu_erf_*` / `kiln_gelu_tanh_*`).
pub fn gelu<T: Act>(x: &[T], out: &mut [T], approx: GeluApprox) {
    match approx {
        GeluApprox::Erf => map_gelu_erf(x, out),
        GeluApprox::Tanh => map(x, out, gelu_tanh),
    }
}

/// out = x * sigmoid(1.702 x) (`kiln_quick_gelu_*`).
pub fn quick_gelu<T: Act>(x: &[T], out: &mut [T]) {
    map(x, out, quick_gelu1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};
    use half::bf16;

    /// (x, erf(x)) to f64 precision (Python's math.erf); x exact in f32.
    const KNOWN: &[(f64, f64)] = &[
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (2.0, 0.9953222650189527),
        (3.0, 0.9999779095030014),
        (1.5, 0.9661051464753108),
        (0.25, 0.2763263901682369),
        (-0.75, -0.7111556336535151),
        (4.0, 0.9999999845827421),
    ];

    fn ulps(a: f32, b: f32) -> u32 {
        assert!(!a.is_nan() && !b.is_nan(), "NaN: {a} vs {b}");
        let key = |v: f32| {
            let i = v.to_bits() as i32;
            if i < 0 {
                i32::MIN - i
            } else {
                i
            }
        };
        key(a).abs_diff(key(b))
    }

    /// The hot-path erf against the f64 series over a dense sweep: relative error <= 2e-7
    /// (absolute near zero would hide a loss of precision for small arguments).
    #[test]
    fn fast_erf_tracks_the_series() {
        let mut worst = 0f64;
        for i in -80_000..=80_000 {
            let x = i as f64 * 1e-4;
            let (got, want) = (erf_fast(x), erf_f64(x));
            let rel = if want == 0.0 {
                got.abs()
            } else {
                ((got - want) / want).abs()
            };
            worst = worst.max(rel);
        }
        assert!(worst <= 2e-7, "worst relative error {worst:e}");
        assert!(erf_fast(f64::NAN).is_nan());
        assert_eq!(erf_fast(7.0), 1.0);
    }

    #[test]
    fn erf_known_values() {
        let more: &[(f64, f64)] = &[
            (-2.3, -0.9988568234026434),
            (0.1, 0.1124629160182849),
            (1e-3, 0.0011283787909692365),
            (3.9, 0.9999999652077514),
            (1e-30, 1.1283791670955127e-30),
        ];
        for &(x, want) in KNOWN.iter().chain(more) {
            let got = erf_f64(x);
            assert!(
                (got - want).abs() <= 4e-16 * want.abs(),
                "erf_f64({x}) = {got}, want {want}"
            );
        }
        for &(x, want) in KNOWN {
            let got = erf(x as f32);
            assert!(ulps(got, want as f32) <= 1, "erf({x}) = {got}, want {want}");
        }
        // Odd, saturating, NaN-preserving.
        assert_eq!(erf(0.0).to_bits(), 0);
        assert_eq!(erf(-0.0).to_bits(), (-0.0f32).to_bits());
        for x in [3.95f32, 4.5, 6.0, 50.0, f32::INFINITY] {
            assert_eq!(erf(x), 1.0, "erf({x})");
            assert_eq!(erf(-x), -1.0, "erf(-{x})");
        }
        assert!(erf(f32::NAN).is_nan());
        let tiny = f32::from_bits(1); // the smallest subnormal
        assert_eq!(
            erf(tiny),
            (tiny as f64 * std::f64::consts::FRAC_2_SQRT_PI) as f32
        );
    }

    /// Against an independent reference: 2/sqrt(pi) ∫₀ˣ exp(-t²) dt by composite Simpson.
    #[test]
    fn erf_matches_quadrature() {
        let s = seed(0xe7_0001);
        let mut rng = Rng::new(s);
        for _ in 0..200 {
            let x = rng.uniform() as f64 * 5.0;
            let n = 2000;
            let h = x / n as f64;
            let f = |t: f64| (-t * t).exp();
            let mut acc = f(0.0) + f(x);
            for i in 1..n {
                acc += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            let want = std::f64::consts::FRAC_2_SQRT_PI * acc * h / 3.0;
            let got = erf_f64(x);
            assert!(
                (got - want).abs() <= 1e-13,
                "erf({x}) = {got}, quadrature {want} (seed {s:#x})"
            );
            assert!(
                ulps(erf(x as f32), want as f32) <= 1,
                "erf({x}) (seed {s:#x})"
            );
        }
    }

    fn reference(kind: &str, x: f64) -> f64 {
        match kind {
            "erf" => x * 0.5 * (1.0 + erf_f64(x / std::f64::consts::SQRT_2)),
            "tanh" => {
                let beta = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (beta * (x + 0.044715 * x * x * x)).tanh())
            }
            _ => x / (1.0 + (-1.702 * x).exp()),
        }
    }

    fn run<T: Act>(kind: &str, x: &[T], out: &mut [T]) {
        match kind {
            "erf" => gelu(x, out, GeluApprox::Erf),
            "tanh" => gelu(x, out, GeluApprox::Tanh),
            _ => quick_gelu(x, out),
        }
    }

    #[test]
    fn matches_reference() {
        let s = seed(0x9e_0001);
        let mut rng = Rng::new(s);
        for kind in ["erf", "tanh", "quick"] {
            for n in [1, 31, 32, 33, 100_003] {
                // Inputs over [-4, 4]: past both knees of every variant.
                let x: Vec<f32> = rng.vec(n).iter().map(|v| v * 4.0).collect();
                let mut out = vec![f32::NAN; n];
                run(kind, &x, &mut out);
                let want: Vec<f64> = x.iter().map(|&v| reference(kind, v as f64)).collect();
                // Element by element: f32 rounding of the result, and of erf/tanh near ±1
                // where torch's 1 + erf(..) cancels for negative x (absolute error ~|x| 2^-25).
                for (i, (&x, &w)) in x.iter().zip(&want).enumerate() {
                    let err = (out[i] as f64 - w).abs();
                    assert!(
                        err <= 2.5e-7 * (1.0 + x.abs() as f64),
                        "gelu {kind}({x}) = {}, want {w} (seed {s:#x})",
                        out[i]
                    );
                }
                if n > 1 {
                    assert_close(&out, &want, 1e-12, s, &format!("gelu {kind} n={n}"));
                }
            }
        }
    }

    /// The eight-lane erf GELU over a dense sweep of [-8, 8] (every knee of the piecewise erf)
    /// and special values: the same element-wise bound as `matches_reference`.
    #[test]
    fn vector_gelu_erf_sweep() {
        let mut x: Vec<f32> = (-80_000..=80_000).map(|i| i as f32 * 1e-4).collect();
        x.extend([
            0.5 * std::f32::consts::SQRT_2,
            4.0 * std::f32::consts::SQRT_2,
            1e-30,
            -1e-30,
        ]);
        x.extend([f32::MIN_POSITIVE, 3.0e38, -3.0e38, 0.0, -0.0]);
        let mut out = vec![f32::NAN; x.len()];
        gelu(&x, &mut out, GeluApprox::Erf);
        for (&x, &y) in x.iter().zip(&out) {
            let w = reference("erf", x as f64);
            let err = (y as f64 - w).abs();
            assert!(
                err <= 2.5e-7 * (1.0 + x.abs() as f64) || (w.abs() > 1e38 && y == w as f32),
                "gelu erf({x}) = {y}, want {w}"
            );
        }
        let mut nan = [0f32; 9];
        gelu(&[f32::NAN; 9], &mut nan, GeluApprox::Erf);
        assert!(nan.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn bf16_rounds_once_from_f32() {
        let s = seed(0x9e_0002);
        let mut rng = Rng::new(s);
        for kind in ["erf", "tanh", "quick"] {
            for n in [1, 31, 32, 33, 40_000] {
                let x: Vec<bf16> = rng
                    .vec(n)
                    .iter()
                    .map(|&v| bf16::from_f32(v * 3.0))
                    .collect();
                let mut out = vec![bf16::NAN; n];
                run(kind, &x, &mut out);
                let wide: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
                let mut f = vec![f32::NAN; n];
                run(kind, &wide, &mut f);
                let rounded: Vec<bf16> = f.iter().map(|&v| bf16::from_f32(v)).collect();
                assert_eq!(out, rounded, "bf16 {kind} n={n} (seed {s:#x})");
                let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
                let want: Vec<f64> = wide.iter().map(|&v| reference(kind, v as f64)).collect();
                assert_close(&got, &want, 1e-5, s, &format!("bf16 {kind} n={n}"));
            }
        }
    }

    #[test]
    fn extreme_inputs_stay_finite() {
        let x = [-1e30f32, -1000.0, -88.0, -10.0, 10.0, 89.0, 1000.0, 1e30];
        for kind in ["erf", "tanh", "quick"] {
            let mut out = [f32::NAN; 8];
            run(kind, &x, &mut out);
            assert!(out.iter().all(|v| v.is_finite()), "{kind}: {out:?}");
            assert_eq!(out[0], 0.0, "{kind}");
            assert_eq!(out[7], 1e30, "{kind}");
        }
    }
}
