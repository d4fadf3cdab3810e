use super::binary::PAR_CHUNK;
use rayon::prelude::*;

/// out = silu(gate) * up, silu(x) = x / (1 + exp(-x)).
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "silu_mul: length mismatch"
    );
    #[cfg(target_arch = "x86_64")]
    let avx2 = super::vecops::has_avx2_fma();
    let f = |g: &[f32], u: &[f32], o: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: AVX2 and FMA were detected; the three slices have the same length.
            unsafe { avx2::silu_mul(g, u, o) };
            return;
        }
        scalar(g, u, o);
    };
    if out.len() <= PAR_CHUNK {
        f(gate, up, out);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(gate.par_chunks(PAR_CHUNK).zip(up.par_chunks(PAR_CHUNK)))
            .for_each(|(o, (g, u))| f(g, u, o));
    }
}

fn scalar(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        // Same expression as torch's silu; exp(-g) overflowing to inf gives -0 * u, not NaN.
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// Eight lanes at a time with `vecops::exp8` (about 1 ulp; libm's scalar `expf` was ~5% of a
/// batched SmolLM2 decode step). Its input is clamped to [-87, 88], so a very negative gate
/// gives a tiny negative number instead of -0, and a large one its own value, as before.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::cpu::vecops::exp8;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let n = out.len().min(gate.len()).min(up.len());
        let n8 = n - n % 8;
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i < n8 {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
            i += 8;
        }
        super::scalar(&gate[n8..n], &up[n8..n], &mut out[n8..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};

    #[test]
    fn matches_reference() {
        let s = seed(0x51_0001);
        let mut rng = Rng::new(s);
        for n in [1, 31, 32, 33, 100_003] {
            let (g, u) = (rng.vec(n), rng.vec(n));
            let mut out = vec![f32::NAN; n];
            silu_mul(&g, &u, &mut out);
            let want: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| g as f64 / (1.0 + (-g as f64).exp()) * u as f64)
                .collect();
            assert_close(&out, &want, 1e-10, s, &format!("silu_mul n={n}"));
        }
    }

    #[test]
    fn extreme_gates_stay_finite() {
        // Eight of them so the vector path runs too, then the same four in the scalar tail.
        let g = [
            -1000.0f32, 1000.0, -88.0, 89.0, -1000.0, 1000.0, -88.0, 89.0, -1000.0, 1000.0, -88.0,
            89.0,
        ];
        let mut out = [0f32; 12];
        silu_mul(&g, &[1.0; 12], &mut out);
        assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        for i in [1, 5, 9] {
            assert_eq!(out[i], 1000.0);
            assert!(out[i - 1].abs() < 1e-30, "{out:?}");
        }
    }
}
