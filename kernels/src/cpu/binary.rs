//! Elementwise add / mul / scale. Memory bound: plain loops the compiler vectorizes, split
//! across threads only when the arrays are large enough to amortise waking rayon.

use rayon::prelude::*;

/// Elements per rayon task (and the size below which everything runs on the caller).
pub(crate) const PAR_CHUNK: usize = 1 << 15;

/// Runs `f` over matching chunks of `a`, `b` and `out`, in parallel when they are large.
fn zip2(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) {
    assert!(
        a.len() == out.len() && b.len() == out.len(),
        "binary op: length mismatch"
    );
    if out.len() <= PAR_CHUNK {
        f(a, b, out);
    } else {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK).zip(b.par_chunks(PAR_CHUNK)))
            .for_each(|(o, (a, b))| f(a, b, o));
    }
}

/// out = a + b (same length).
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    zip2(a, b, out, |a, b, o| {
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = a + b;
        }
    });
}

/// out = a * b (same length).
pub fn mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    zip2(a, b, out, |a, b, o| {
        for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
            *o = a * b;
        }
    });
}

/// out = a * s.
pub fn scale(a: &[f32], s: f32, out: &mut [f32]) {
    // `a` twice keeps one code path; the second operand is ignored.
    zip2(a, a, out, |a, _, o| {
        for (o, a) in o.iter_mut().zip(a) {
            *o = a * s;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};

    #[test]
    fn ops_match_reference() {
        let s = seed(0xb1_0001);
        let mut rng = Rng::new(s);
        for n in [1, 31, 32, 33, 100_003] {
            let (a, b) = (rng.vec(n), rng.vec(n));
            let mut out = vec![f32::NAN; n];
            add(&a, &b, &mut out);
            let want: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| *x as f64 + *y as f64)
                .collect();
            assert_close(&out, &want, 1e-14, s, &format!("add n={n}"));
            mul(&a, &b, &mut out);
            let want: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| *x as f64 * *y as f64)
                .collect();
            assert_close(&out, &want, 1e-14, s, &format!("mul n={n}"));
            scale(&a, 0.37, &mut out);
            let want: Vec<f64> = a.iter().map(|x| *x as f64 * 0.37f32 as f64).collect();
            assert_close(&out, &want, 1e-14, s, &format!("scale n={n}"));
        }
    }
}
