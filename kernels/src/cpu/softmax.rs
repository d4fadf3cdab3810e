use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct SoftmaxParams {
    pub rows: usize,
    pub cols: usize,
    /// Multiplies the inputs before the softmax.
    pub scale: f32,
    /// Causal mask: row r may see columns `0..=r + (cols - rows)`; others get probability 0.
    pub causal: bool,
}

/// Row-wise softmax of `x` [rows, cols] into `out`.
pub fn softmax(x: &[f32], out: &mut [f32], p: SoftmaxParams) {
    let SoftmaxParams {
        rows,
        cols,
        scale,
        causal,
    } = p;
    assert!(
        x.len() >= rows * cols && out.len() >= rows * cols,
        "softmax: short buffers"
    );
    if cols == 0 {
        return;
    }
    let row = |r: usize, x: &[f32], o: &mut [f32]| {
        let seen = if causal { visible(r, rows, cols) } else { cols };
        let (vis, masked) = o.split_at_mut(seen);
        for (o, &x) in vis.iter_mut().zip(x) {
            *o = x * scale;
        }
        softmax_in_place(vis);
        masked.fill(0.0);
    };
    let (x, out) = (&x[..rows * cols], &mut out[..rows * cols]);
    if rows * cols < 1 << 14 {
        for (r, (x, o)) in x
            .chunks_exact(cols)
            .zip(out.chunks_exact_mut(cols))
            .enumerate()
        {
            row(r, x, o);
        }
    } else {
        out.par_chunks_exact_mut(cols)
            .zip(x.par_chunks_exact(cols))
            .enumerate()
            .for_each(|(r, (o, x))| row(r, x, o));
    }
}

/// Columns row `r` of a causal [rows, cols] mask sees: `r + (cols - rows) + 1`, clamped to
/// 0..=cols (a row before the first key sees nothing).
pub(crate) fn visible(r: usize, rows: usize, cols: usize) -> usize {
    let last = r as i64 + cols as i64 - rows as i64;
    (last + 1).clamp(0, cols as i64) as usize
}

/// Numerically stable softmax of `v` in place, f32 throughout (max subtracted, divided by the
/// sum as torch does). A row with no finite maximum (empty, or all -inf) becomes zeros rather
/// than NaN.
pub(crate) fn softmax_in_place(v: &mut [f32]) {
    let max = super::vecops::max(v);
    if max == f32::NEG_INFINITY {
        v.fill(0.0);
        return;
    }
    let sum = super::vecops::exp_shifted_sum(v, max);
    let inv = 1.0 / sum;
    for e in v.iter_mut() {
        *e *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};

    fn reference(x: &[f32], p: SoftmaxParams) -> Vec<f64> {
        let mut out = vec![0f64; p.rows * p.cols];
        for r in 0..p.rows {
            let seen = if p.causal {
                visible(r, p.rows, p.cols)
            } else {
                p.cols
            };
            let row: Vec<f64> = (0..seen)
                .map(|c| x[r * p.cols + c] as f64 * p.scale as f64)
                .collect();
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row.iter().map(|v| (v - max).exp()).sum();
            for c in 0..seen {
                out[r * p.cols + c] = (row[c] - max).exp() / sum;
            }
        }
        out
    }

    #[test]
    fn matches_reference() {
        let s = seed(0x50_0001);
        let mut rng = Rng::new(s);
        for causal in [false, true] {
            for (rows, cols) in [
                (1, 1),
                (1, 31),
                (31, 32),
                (32, 32),
                (33, 33),
                (5, 49_152),
                (300, 512),
            ] {
                let p = SoftmaxParams {
                    rows,
                    cols,
                    scale: 3.0,
                    causal,
                };
                let x = rng.vec(rows * cols);
                let mut out = vec![f32::NAN; rows * cols];
                softmax(&x, &mut out, p);
                assert_close(
                    &out,
                    &reference(&x, p),
                    1e-10,
                    s,
                    &format!("softmax {rows}x{cols} causal={causal}"),
                );
            }
        }
    }

    #[test]
    fn more_rows_than_cols_masks_early_rows() {
        let p = SoftmaxParams {
            rows: 3,
            cols: 2,
            scale: 1.0,
            causal: true,
        };
        let mut out = [f32::NAN; 6];
        softmax(&[1.0; 6], &mut out, p);
        assert_eq!(out, [0.0, 0.0, 1.0, 0.0, 0.5, 0.5]);
    }
}
