use super::binary::PAR_CHUNK;
use rayon::prelude::*;

/// out = silu(gate) * up, silu(x) = x / (1 + exp(-x)).
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "silu_mul: length mismatch"
    );
    let f = |g: &[f32], u: &[f32], o: &mut [f32]| {
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            // Same expression as torch's silu; exp(-g) overflowing to inf gives -0 * u, not NaN.
            *o = g / (1.0 + (-g).exp()) * u;
        }
    };
    if out.len() <= PAR_CHUNK {
        f(gate, up, out);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(gate.par_chunks(PAR_CHUNK).zip(up.par_chunks(PAR_CHUNK)))
            .for_each(|(o, (g, u))| f(g, u, o));
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
        let g = [-1000.0f32, 1000.0, -88.0, 89.0];
        let mut out = [0f32; 4];
        silu_mul(&g, &[1.0; 4], &mut out);
        assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        assert_eq!(out[1], 1000.0);
    }
}
