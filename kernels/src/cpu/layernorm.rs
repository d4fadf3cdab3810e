//! LayerNorm (CUDA twin: cuda/layernorm.cu), per row as torch's `nn.LayerNorm`:
//! `mean = Σx / cols`, `var = Σ(x - mean)² / cols` (biased), `rstd = 1 / sqrt(var + eps)`,
//! `out = (x - mean) * rstd * w + b`, f32 arithmetic, rounded once to the storage type. The
//! variance is the centred second pass, so rows with a large mean do not cancel.

use super::act::{lane_sum, Act};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct LayerNormParams {
    pub rows: usize,
    pub cols: usize,
    pub eps: f32,
}

/// `x`, `out` [rows, cols]; `w`, `b` [cols]; no bias when `b` is `None`.
pub fn layernorm<T: Act>(x: &[T], w: &[T], b: Option<&[T]>, out: &mut [T], p: LayerNormParams) {
    let LayerNormParams { rows, cols, eps } = p;
    let n = rows * cols;
    assert!(
        x.len() >= n && out.len() >= n && w.len() >= cols && b.is_none_or(|b| b.len() >= cols),
        "layernorm: short buffers"
    );
    if cols == 0 {
        return;
    }
    let w = &w[..cols];
    let b = b.map(|b| &b[..cols]);
    let row = |x: &[T], o: &mut [T]| {
        let mean = lane_sum(x, |v| v) / cols as f32;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / cols as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        match b {
            Some(b) => {
                for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
                    *o = T::from_f32((x.to_f32() - mean) * rstd * w.to_f32() + b.to_f32());
                }
            }
            None => {
                for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                    *o = T::from_f32((x.to_f32() - mean) * rstd * w.to_f32());
                }
            }
        }
    };
    let (x, out) = (&x[..n], &mut out[..n]);
    if n < 1 << 15 {
        for (x, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            row(x, o);
        }
    } else {
        out.par_chunks_exact_mut(cols)
            .zip(x.par_chunks_exact(cols))
            .for_each(|(o, x)| row(x, o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};
    use half::bf16;

    /// The f64 reference of one row: biased variance, as torch.
    fn reference(x: &[f64], w: &[f64], b: Option<&[f64]>, eps: f64, want: &mut Vec<f64>) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (c, &v) in x.iter().enumerate() {
            want.push((v - mean) * rstd * w[c] + b.map_or(0.0, |b| b[c]));
        }
    }

    fn check_f32(rng: &mut Rng, s: u64, rows: usize, cols: usize, offset: f32, tol: f64) {
        let x: Vec<f32> = rng.vec(rows * cols).iter().map(|v| v + offset).collect();
        let (w, b) = (rng.vec(cols), rng.vec(cols));
        let eps = 1e-5f32;
        let p = LayerNormParams { rows, cols, eps };
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
        for bias in [true, false] {
            let mut out = vec![f32::NAN; rows * cols];
            layernorm(&x, &w, bias.then_some(&b[..]), &mut out, p);
            let mut want = Vec::with_capacity(rows * cols);
            for r in x.chunks_exact(cols) {
                let r64: Vec<f64> = r.iter().map(|&v| v as f64).collect();
                let b = bias.then_some(&b64[..]);
                reference(&r64, &w64, b, eps as f64, &mut want);
            }
            let case = format!("layernorm {rows}x{cols} offset {offset} bias {bias}");
            assert_close(&out, &want, tol, s, &case);
        }
    }

    #[test]
    fn matches_reference() {
        let s = seed(0x1a_0001);
        let mut rng = Rng::new(s);
        for (rows, cols) in [(1, 1), (2, 31), (3, 32), (4, 33), (128, 768), (9, 4096)] {
            check_f32(&mut rng, s, rows, cols, 0.0, 1e-10);
        }
    }

    /// A row far from zero: E[x²] - mean² would lose every digit in f32 (mean² ~ 1e6, ulp
    /// 0.06, variance 1/3); the centred pass keeps the error at the f32 mean's rounding.
    #[test]
    fn large_mean_does_not_cancel() {
        let s = seed(0x1a_0002);
        let mut rng = Rng::new(s);
        for (rows, cols) in [(3, 33), (8, 1024)] {
            check_f32(&mut rng, s, rows, cols, 1000.0, 1e-6);
        }
    }

    #[test]
    fn bf16_rounds_once_from_f32() {
        let s = seed(0x1a_0003);
        let mut rng = Rng::new(s);
        let b16 = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
        for (rows, cols) in [(1, 1), (2, 31), (3, 32), (4, 33), (64, 1024)] {
            let n = rows * cols;
            let (x, w, b) = (b16(rng.vec(n)), b16(rng.vec(cols)), b16(rng.vec(cols)));
            let p = LayerNormParams {
                rows,
                cols,
                eps: 1e-5,
            };
            let mut out = vec![bf16::NAN; n];
            layernorm(&x, &w, Some(&b), &mut out, p);
            // The same f32 arithmetic on the widened inputs, rounded once.
            let f = |v: &[bf16]| v.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
            let mut wide = vec![f32::NAN; n];
            layernorm(&f(&x), &f(&w), Some(&f(&b)), &mut wide, p);
            let rounded: Vec<bf16> = wide.iter().map(|&v| bf16::from_f32(v)).collect();
            assert_eq!(out, rounded, "bf16 {rows}x{cols} (seed {s:#x})");
            let mut want = Vec::with_capacity(n);
            let w64: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
            let b64: Vec<f64> = b.iter().map(|v| v.to_f64()).collect();
            for r in x.chunks_exact(cols) {
                let r64: Vec<f64> = r.iter().map(|v| v.to_f64()).collect();
                reference(&r64, &w64, Some(&b64), 1e-5, &mut want);
            }
            assert_close(&f(&out), &want, 1e-5, s, &format!("bf16 {rows}x{cols}"));
        }
    }

    #[test]
    fn constant_row_gives_the_bias() {
        let mut out = [f32::NAN; 4];
        let p = LayerNormParams {
            rows: 1,
            cols: 4,
            eps: 1e-5,
        };
        layernorm(
            &[3.0; 4],
            &[2.0; 4],
            Some(&[0.5, -1.0, 0.0, 7.0]),
            &mut out,
            p,
        );
        assert_eq!(out, [0.5, -1.0, 0.0, 7.0]);
    }
}
