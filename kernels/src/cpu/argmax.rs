use rayon::prelude::*;

/// Index of the largest value of each row of `x` [rows, cols]; the first one on ties; NaN is
/// never chosen over a number.
pub fn argmax(x: &[f32], rows: usize, cols: usize, out: &mut [u32]) {
    assert!(
        x.len() >= rows * cols && out.len() >= rows,
        "argmax: short buffers"
    );
    if cols == 0 {
        out[..rows].fill(0);
        return;
    }
    let row = |r: &[f32]| {
        let mut best = 0usize;
        for (i, &v) in r.iter().enumerate().skip(1) {
            // `>` keeps the first of equal maxima and never picks NaN; a NaN best is replaced
            // by the first number after it.
            if v > r[best] || (r[best].is_nan() && !v.is_nan()) {
                best = i;
            }
        }
        best as u32
    };
    let x = &x[..rows * cols];
    if rows * cols < 1 << 16 {
        for (o, r) in out.iter_mut().zip(x.chunks_exact(cols)) {
            *o = row(r);
        }
    } else {
        out[..rows]
            .par_iter_mut()
            .zip(x.par_chunks_exact(cols))
            .for_each(|(o, r)| *o = row(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{seed, Rng};

    #[test]
    fn matches_reference() {
        let s = seed(0xa7_0001);
        let mut rng = Rng::new(s);
        for (rows, cols) in [(1, 1), (3, 31), (2, 32), (5, 33), (4, 49_152)] {
            let x = rng.vec(rows * cols);
            let mut out = vec![u32::MAX; rows];
            argmax(&x, rows, cols, &mut out);
            for r in 0..rows {
                let row = &x[r * cols..(r + 1) * cols];
                let want = (0..cols).fold(0, |b, i| if row[i] > row[b] { i } else { b });
                assert_eq!(
                    out[r] as usize, want,
                    "rows={rows} cols={cols} row {r} (seed {s:#x})"
                );
            }
        }
    }

    #[test]
    fn ties_and_nan() {
        let mut out = [0u32; 1];
        argmax(&[1.0, 3.0, 3.0, 2.0], 1, 4, &mut out);
        assert_eq!(out[0], 1, "first max on ties");
        argmax(&[f32::NAN, -5.0, f32::NAN, -1.0], 1, 4, &mut out);
        assert_eq!(out[0], 3, "NaN never beats a number");
        argmax(&[f32::NAN, f32::NAN], 1, 2, &mut out);
        assert_eq!(out[0], 0, "all NaN: first index");
        argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY], 1, 2, &mut out);
        assert_eq!(out[0], 0);
    }
}
