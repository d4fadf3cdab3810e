use rayon::prelude::*;

/// Which pairs of a head are rotated together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// (i, i + d/2): HF Llama `rotate_half` layout.
    HalfSplit,
    /// (2i, 2i + 1): GPT-J / original Meta layout.
    Interleaved,
}

#[derive(Clone, Copy, Debug)]
pub struct RopeParams {
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub style: RopeStyle,
    /// Multiplies cos and sin (HF `attention_scaling`; 1.0 for default, linear and llama3).
    pub attention_scaling: f32,
}

/// Rotates `x` [tokens, heads, head_dim] in place. Angle for pair i at token t is
/// `(positions[t] as f32) * inv_freq[i]` computed in f32 (as HF does), `inv_freq.len() == head_dim/2`.
pub fn rope(x: &mut [f32], positions: &[u32], inv_freq: &[f32], p: RopeParams) {
    let RopeParams {
        tokens,
        heads,
        head_dim,
        style,
        attention_scaling,
    } = p;
    let half = head_dim / 2;
    let per_token = heads * head_dim;
    assert!(x.len() >= tokens * per_token, "rope: x too short");
    assert!(
        positions.len() >= tokens && inv_freq.len() >= half,
        "rope: positions or inv_freq too short"
    );
    if per_token == 0 || half == 0 {
        return;
    }
    // One cos/sin table per token, shared by its heads; `table` is per-task scratch.
    let token = |table: &mut Vec<f32>, pos: u32, xt: &mut [f32]| {
        // cos then sin halves; the angle is an f32 product as in HF, its cos/sin correctly
        // rounded (f64 evaluation), as torch's f32 cos/sin are to within an ulp.
        table.clear();
        table.resize(2 * half, 0.0);
        let (cos, sin) = table.split_at_mut(half);
        for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(&inv_freq[..half]) {
            let (sa, ca) = ((pos as f32 * f) as f64).sin_cos();
            *c = ca as f32 * attention_scaling;
            *s = sa as f32 * attention_scaling;
        }
        let (cos, sin) = table.split_at(half);
        for h in xt.chunks_exact_mut(head_dim) {
            rotate(h, cos, sin, style);
        }
    };
    let x = &mut x[..tokens * per_token];
    if tokens * per_token < 1 << 14 {
        let mut table = Vec::with_capacity(2 * half);
        for (xt, &pos) in x.chunks_exact_mut(per_token).zip(positions) {
            token(&mut table, pos, xt);
        }
    } else {
        x.par_chunks_exact_mut(per_token)
            .zip(positions)
            .for_each_init(
                || Vec::with_capacity(2 * half),
                |table, (xt, &pos)| token(table, pos, xt),
            );
    }
}

/// Rotates one head. HF: q·cos + rotate_half(q)·sin with rotate_half = cat(-x2, x1).
fn rotate(h: &mut [f32], cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = cos.len();
    match style {
        RopeStyle::HalfSplit => {
            let (a, b) = h[..2 * half].split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
        RopeStyle::Interleaved => {
            for (i, pair) in h[..2 * half].chunks_exact_mut(2).enumerate() {
                let (x1, x2) = (pair[0], pair[1]);
                pair[0] = x1 * cos[i] - x2 * sin[i];
                pair[1] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};

    // Index loops mirror the formula; clarity beats iterator chains in a reference.
    #[allow(clippy::needless_range_loop)]
    fn reference(x: &[f32], positions: &[u32], inv_freq: &[f32], p: RopeParams) -> Vec<f64> {
        let half = p.head_dim / 2;
        let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        for t in 0..p.tokens {
            for h in 0..p.heads {
                let base = (t * p.heads + h) * p.head_dim;
                for i in 0..half {
                    let a = (positions[t] as f32 * inv_freq[i]) as f64;
                    let (c, s) = (
                        a.cos() * p.attention_scaling as f64,
                        a.sin() * p.attention_scaling as f64,
                    );
                    let (i1, i2) = match p.style {
                        RopeStyle::HalfSplit => (base + i, base + i + half),
                        RopeStyle::Interleaved => (base + 2 * i, base + 2 * i + 1),
                    };
                    let (x1, x2) = (x[i1] as f64, x[i2] as f64);
                    out[i1] = x1 * c - x2 * s;
                    out[i2] = x2 * c + x1 * s;
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference() {
        let s = seed(0x20_0001);
        let mut rng = Rng::new(s);
        for style in [RopeStyle::HalfSplit, RopeStyle::Interleaved] {
            for (tokens, heads, head_dim) in [
                (1, 1, 2),
                (31, 3, 32),
                (32, 2, 64),
                (33, 9, 64),
                (300, 9, 128),
            ] {
                let p = RopeParams {
                    tokens,
                    heads,
                    head_dim,
                    style,
                    attention_scaling: 1.25,
                };
                let half = head_dim / 2;
                let inv_freq: Vec<f32> = (0..half)
                    .map(|i| 10000f32.powf(-((2 * i) as f32) / head_dim as f32))
                    .collect();
                let positions: Vec<u32> = (0..tokens)
                    .map(|_| (rng.next_u64() % 8192) as u32)
                    .collect();
                let mut x = rng.vec(tokens * heads * head_dim);
                let want = reference(&x, &positions, &inv_freq, p);
                rope(&mut x, &positions, &inv_freq, p);
                assert_close(
                    &x,
                    &want,
                    1e-10,
                    s,
                    &format!("rope {style:?} {tokens}x{heads}x{head_dim}"),
                );
            }
        }
    }

    #[test]
    fn position_zero_is_identity() {
        let mut x = [0.5f32, -0.25, 0.125, 1.0];
        let p = RopeParams {
            tokens: 1,
            heads: 1,
            head_dim: 4,
            style: RopeStyle::HalfSplit,
            attention_scaling: 1.0,
        };
        rope(&mut x, &[0], &[1.0, 0.01], p);
        assert_eq!(x, [0.5, -0.25, 0.125, 1.0]);
    }
}
