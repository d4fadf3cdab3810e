use super::act::{lane_sum, Act};
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
        let var = lane_sum(x, |v| v * v) / cols as f32;
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

/// The fused residual add + RMSNorm of a decoder layer (CUDA twin: `kiln_residual_rmsnorm_*`):
/// per element `sum = x + residual` rounded to `T` and stored (it is the next residual), then
/// `out = rmsnorm(sum) * w` with HF's roundings: `inv = 1 / sqrt(mean(sum^2) + eps)` in f32,
/// `sum * inv` rounded to `T`, times `w`, rounded to `T`. With f32 this is exactly
/// `rmsnorm(x + residual)`.
pub fn residual_rmsnorm<T: Act>(
    x: &[T],
    residual: &[T],
    w: &[T],
    sum: &mut [T],
    out: &mut [T],
    p: RmsNormParams,
) {
    let RmsNormParams { rows, cols, eps } = p;
    let n = rows * cols;
    assert!(
        x.len() >= n && residual.len() >= n && sum.len() >= n && out.len() >= n && w.len() >= cols,
        "residual_rmsnorm: short buffers"
    );
    if cols == 0 {
        return;
    }
    let w = &w[..cols];
    let row = |x: &[T], r: &[T], s: &mut [T], o: &mut [T]| {
        for ((s, &x), &r) in s.iter_mut().zip(x).zip(r) {
            *s = T::from_f32(x.to_f32() + r.to_f32());
        }
        let var = lane_sum(s, |v| v * v) / cols as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((o, &s), &w) in o.iter_mut().zip(s.iter()).zip(w) {
            *o = T::from_f32(w.to_f32() * T::from_f32(s.to_f32() * inv).to_f32());
        }
    };
    let (x, residual) = (&x[..n], &residual[..n]);
    let (sum, out) = (&mut sum[..n], &mut out[..n]);
    if n < 1 << 15 {
        for (((x, r), s), o) in x
            .chunks_exact(cols)
            .zip(residual.chunks_exact(cols))
            .zip(sum.chunks_exact_mut(cols))
            .zip(out.chunks_exact_mut(cols))
        {
            row(x, r, s, o);
        }
    } else {
        out.par_chunks_exact_mut(cols)
            .zip(sum.par_chunks_exact_mut(cols))
            .zip(
                x.par_chunks_exact(cols)
                    .zip(residual.par_chunks_exact(cols)),
            )
            .for_each(|((o, s), (x, r))| row(x, r, s, o));
    }
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

    /// f64 reference of rmsnorm(s) * w for one row.
    fn reference_row(s: &[f64], w: &[f64], eps: f64, want: &mut Vec<f64>) {
        let var = s.iter().map(|v| v * v).sum::<f64>() / s.len() as f64;
        let inv = 1.0 / (var + eps).sqrt();
        want.extend(s.iter().zip(w).map(|(s, w)| s * inv * w));
    }

    #[test]
    fn residual_f32_matches_reference_and_plain_rmsnorm() {
        let s = seed(0x4a_0002);
        let mut rng = Rng::new(s);
        for (rows, cols) in [(1, 1), (2, 31), (3, 32), (4, 33), (128, 576), (9, 4096)] {
            let n = rows * cols;
            let (x, r, w) = (rng.vec(n), rng.vec(n), rng.vec(cols));
            let p = RmsNormParams {
                rows,
                cols,
                eps: 1e-6,
            };
            let (mut sum, mut out) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            residual_rmsnorm(&x, &r, &w, &mut sum, &mut out, p);
            let exact: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
            assert_eq!(sum, exact, "sum {rows}x{cols} (seed {s:#x})");
            let mut plain = vec![f32::NAN; n];
            rmsnorm(&exact, &w, &mut plain, p);
            assert_eq!(
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                plain.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "fused vs plain {rows}x{cols} (seed {s:#x})"
            );
            let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
            let mut want = Vec::with_capacity(n);
            for row in exact.chunks_exact(cols) {
                let s64: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                reference_row(&s64, &w64, 1e-6, &mut want);
            }
            assert_close(&out, &want, 1e-10, s, &format!("residual {rows}x{cols}"));
        }
    }

    #[test]
    fn residual_bf16_rounds_the_sum_and_the_normalised_value() {
        use half::bf16;
        let s = seed(0x4a_0003);
        let mut rng = Rng::new(s);
        let b = |v: Vec<f32>| v.into_iter().map(bf16::from_f32).collect::<Vec<_>>();
        for (rows, cols) in [(1, 1), (2, 31), (3, 32), (4, 33), (64, 2048)] {
            let n = rows * cols;
            let (x, r, w) = (b(rng.vec(n)), b(rng.vec(n)), b(rng.vec(cols)));
            let p = RmsNormParams {
                rows,
                cols,
                eps: 1e-5,
            };
            let (mut sum, mut out) = (vec![bf16::NAN; n], vec![bf16::NAN; n]);
            residual_rmsnorm(&x, &r, &w, &mut sum, &mut out, p);
            for i in 0..n {
                let want = bf16::from_f32(x[i].to_f32() + r[i].to_f32());
                assert_eq!(sum[i].to_bits(), want.to_bits(), "sum[{i}] (seed {s:#x})");
            }
            // HF's order exactly: the f32 row statistics, then two bf16 roundings.
            let mut hf = Vec::with_capacity(n);
            for row in sum.chunks_exact(cols) {
                let f: Vec<f32> = row.iter().map(|v| v.to_f32()).collect();
                let var = lane_sum(&f, |v| v * v) / cols as f32;
                let inv = 1.0 / (var + 1e-5f32).sqrt();
                for (c, &v) in f.iter().enumerate() {
                    let h = bf16::from_f32(v * inv).to_f32();
                    hf.push(bf16::from_f32(w[c].to_f32() * h));
                }
            }
            assert_eq!(out, hf, "bf16 out {rows}x{cols} (seed {s:#x})");
            let w64: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
            let mut want = Vec::with_capacity(n);
            for row in sum.chunks_exact(cols) {
                let s64: Vec<f64> = row.iter().map(|v| v.to_f64()).collect();
                reference_row(&s64, &w64, 1e-5, &mut want);
            }
            let got: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
            assert_close(
                &got,
                &want,
                1e-5,
                s,
                &format!("residual bf16 {rows}x{cols}"),
            );
        }
    }
}
