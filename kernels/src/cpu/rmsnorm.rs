use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct RmsNormParams {
    pub rows: usize,
    pub cols: usize,
    pub eps: f32,
}

/// out = x / sqrt(mean(x^2) + eps) * w, per row (as HF LlamaRMSNorm, f32 throughout).
pub fn rmsnorm(x: &[f32], w: &[f32], out: &mut [f32], p: RmsNormParams) {
    let RmsNormParams { rows, cols, eps } = p;
    assert!(
        x.len() >= rows * cols && out.len() >= rows * cols && w.len() >= cols,
        "rmsnorm: short buffers"
    );
    if cols == 0 {
        return;
    }
    let w = &w[..cols];
    let row = |x: &[f32], o: &mut [f32]| {
        let var = sum_sq(x) / cols as f32;
        // HF: hidden * rsqrt(var + eps), then weight * hidden: two roundings, in that order.
        let inv = 1.0 / (var + eps).sqrt();
        for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
            *o = w * (x * inv);
        }
    };
    let (x, out) = (&x[..rows * cols], &mut out[..rows * cols]);
    if rows * cols < 1 << 15 {
        for (x, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            row(x, o);
        }
    } else {
        out.par_chunks_exact_mut(cols)
            .zip(x.par_chunks_exact(cols))
            .for_each(|(o, x)| row(x, o));
    }
}

/// Σ x² in f32 with eight independent partial sums: vectorizes without reassociation
/// licence, and is more accurate than one serial sum.
fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l] * c[l];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for v in tail {
        s += v * v;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};

    #[test]
    fn matches_reference() {
        let s = seed(0x4a_0001);
        let mut rng = Rng::new(s);
        for (rows, cols) in [(1, 1), (2, 31), (3, 32), (4, 33), (128, 576), (1, 4096)] {
            let (x, w) = (rng.vec(rows * cols), rng.vec(cols));
            let eps = 1e-5f32;
            let mut out = vec![f32::NAN; rows * cols];
            rmsnorm(&x, &w, &mut out, RmsNormParams { rows, cols, eps });
            let mut want = vec![0f64; rows * cols];
            for r in 0..rows {
                let xr = &x[r * cols..(r + 1) * cols];
                let var = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / cols as f64;
                let inv = 1.0 / (var + eps as f64).sqrt();
                for c in 0..cols {
                    want[r * cols + c] = xr[c] as f64 * inv * w[c] as f64;
                }
            }
            assert_close(&out, &want, 1e-10, s, &format!("rmsnorm {rows}x{cols}"));
        }
    }

    #[test]
    fn zero_row_stays_finite() {
        let mut out = [f32::NAN; 4];
        rmsnorm(
            &[0.0; 4],
            &[1.0; 4],
            &mut out,
            RmsNormParams {
                rows: 1,
                cols: 4,
                eps: 1e-6,
            },
        );
        assert_eq!(out, [0.0; 4]);
    }
}
