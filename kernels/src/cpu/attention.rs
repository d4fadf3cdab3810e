//! Scaled dot-product attention (GQA, optional causal mask), f32. The work is split into
//! tasks of (KV head, block of query rows), each computing the block's rows for every query
//! head of that KV head's group through `attn_core` (which fixes the operation order every
//! attention variant shares: sequential-FMA scores, `softmax_in_place`, key-ordered P·V).

use super::attn_core::{self, Rows, SeqRows, Task, TASK_ROWS};
use super::OutPtr;

#[derive(Clone, Copy, Debug)]
pub struct AttentionParams {
    pub q_len: usize,
    pub kv_len: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Query row i sits at absolute position `kv_len - q_len + i` and sees keys `0..=` that.
    pub causal: bool,
}

/// Scaled dot-product attention with GQA (query head h reads kv head h / (num_heads / num_kv_heads)).
/// `q`: [q_len, num_heads, head_dim]; `k`, `v`: [kv_len, num_kv_heads, head_dim];
/// `out`: [q_len, num_heads, head_dim]. f32 softmax state.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], p: AttentionParams) {
    let AttentionParams {
        q_len,
        kv_len,
        num_heads,
        num_kv_heads,
        head_dim: d,
        scale,
        causal,
    } = p;
    assert!(
        num_kv_heads > 0 && num_heads % num_kv_heads == 0,
        "attention: bad GQA ratio"
    );
    let q_size = q_len * num_heads * d;
    let kv_size = kv_len * num_kv_heads * d;
    assert!(
        q.len() >= q_size && out.len() >= q_size,
        "attention: q or out too short"
    );
    assert!(
        k.len() >= kv_size && v.len() >= kv_size,
        "attention: k or v too short"
    );
    if d == 0 || q_len == 0 {
        return;
    }
    let group = num_heads / num_kv_heads;
    let kv_stride = num_kv_heads * d;
    let block = (TASK_ROWS / group).max(1);
    let blocks = q_len.div_ceil(block);
    let seq = SeqRows {
        start: 0,
        q_len,
        ctx: kv_len,
        heads: num_heads,
        d,
        causal,
    };
    let out = OutPtr(out[..q_size].as_mut_ptr());
    let task = |i: usize| {
        let (b, kvh) = (i / num_kv_heads, i % num_kv_heads);
        let (t0, t1) = (b * block, ((b + 1) * block).min(q_len));
        let rows = seq.rows(t0..t1, kvh * group..(kvh + 1) * group);
        let rows_of = |data| Rows::Dense {
            data,
            off: kvh * d,
            stride: kv_stride,
        };
        let t = Task {
            q,
            keys: rows_of(k),
            values: rows_of(v),
            d,
            scale,
        };
        // SAFETY: task i writes only rows t0..t1 of the heads of KV head kvh (disjoint
        // across tasks) inside `out[..q_size]`; q, k and v hold those rows and kv_len keys
        // (sizes asserted above; seen <= kv_len).
        unsafe { attn_core::run(&t, &rows, out) };
    };
    attn_core::spread(blocks * num_kv_heads, q_len * num_heads * kv_len * d, task);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::softmax::{softmax_in_place, visible};
    use crate::cpu::testutil::{assert_close, seed, Rng};

    /// Every (query position, head) of `p` as (offset of its d values in q and out, its KV
    /// head, how many keys it sees): the geometry both reference loops below walk.
    fn query_rows(p: AttentionParams) -> impl Iterator<Item = (usize, usize, usize)> {
        let group = p.num_heads / p.num_kv_heads;
        (0..p.q_len).flat_map(move |t| {
            let seen = if p.causal {
                visible(t, p.q_len, p.kv_len)
            } else {
                p.kv_len
            };
            (0..p.num_heads).map(move |h| ((t * p.num_heads + h) * p.head_dim, h / group, seen))
        })
    }

    /// Key or value row j of KV head `kvh` in a [kv_len, num_kv_heads, head_dim] tensor.
    fn kv_row(x: &[f32], j: usize, kvh: usize, p: AttentionParams) -> &[f32] {
        &x[(j * p.num_kv_heads + kvh) * p.head_dim..][..p.head_dim]
    }

    /// The defining order, written out: scores one `mul_add` per element in order from +0,
    /// times the scale; `softmax_in_place`; the weighted sum one `mul_add` per key in order.
    fn sequential(q: &[f32], k: &[f32], v: &[f32], p: AttentionParams) -> Vec<f32> {
        let d = p.head_dim;
        let mut out = vec![0f32; p.q_len * p.num_heads * d];
        for (at, kvh, seen) in query_rows(p) {
            let qv = &q[at..][..d];
            let mut sc: Vec<f32> = (0..seen)
                .map(|j| {
                    let kj = kv_row(k, j, kvh, p);
                    qv.iter().zip(kj).fold(0f32, |a, (x, y)| x.mul_add(*y, a)) * p.scale
                })
                .collect();
            softmax_in_place(&mut sc);
            let o = &mut out[at..][..d];
            for (j, &pj) in sc.iter().enumerate() {
                for (o, &x) in o.iter_mut().zip(kv_row(v, j, kvh, p)) {
                    *o = pj.mul_add(x, *o);
                }
            }
        }
        out
    }

    /// The blocked path (K packed transposed, 6 × 16 score tiles, 3-row P·V tiles; AVX2
    /// where the CPU has it) computes exactly the sequential loop: compared bit for bit on
    /// odd sizes (head_dim not a multiple of 8 included), GQA, both masks.
    #[test]
    fn blocked_path_equals_sequential_loop_bitwise() {
        let s = seed(0xa77e_0003);
        let mut rng = Rng::new(s);
        for &d in &[1, 8, 13, 16, 24, 32, 40, 64, 72, 128, 136] {
            for &(q_len, kv_len) in &[
                (1, 1),
                (3, 7),
                (8, 8),
                (9, 9),
                (5, 33),
                (17, 100),
                (70, 70),
                (13, 300),
            ] {
                for causal in [false, true] {
                    let (num_heads, num_kv_heads) = (4, 2);
                    let p = AttentionParams {
                        q_len,
                        kv_len,
                        num_heads,
                        num_kv_heads,
                        head_dim: d,
                        scale: 1.0 / (d as f32).sqrt(),
                        causal,
                    };
                    let q = rng.vec(q_len * num_heads * d);
                    let k = rng.vec(kv_len * num_kv_heads * d);
                    let v = rng.vec(kv_len * num_kv_heads * d);
                    let mut got = vec![f32::NAN; q.len()];
                    attention(&q, &k, &v, &mut got, p);
                    let want = sequential(&q, &k, &v, p);
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "d={d} q_len={q_len} kv_len={kv_len} causal={causal} (seed {s:#x})"
                    );
                }
            }
        }
    }

    /// Every output element within 1e-5 of the f64 reference, relative to the largest
    /// reference magnitude of its row (NaN fails).
    fn assert_rel(got: &[f32], want: &[f64], d: usize, s: u64, case: &str) {
        for (i, (g, w)) in got.chunks(d).zip(want.chunks(d)).enumerate() {
            let scale = w.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
            for (c, (&g, &w)) in g.iter().zip(w).enumerate() {
                let err = (g as f64 - w).abs() / scale;
                assert!(
                    err <= 1e-5,
                    "{case}: row {i} col {c}: {g} vs {w} (rel {err:e}, seed {s:#x})"
                );
            }
        }
    }

    fn reference(q: &[f32], k: &[f32], v: &[f32], p: AttentionParams) -> Vec<f64> {
        let d = p.head_dim;
        let mut out = vec![0f64; p.q_len * p.num_heads * d];
        for (at, kvh, seen) in query_rows(p) {
            let qv = &q[at..][..d];
            let s: Vec<f64> = (0..seen)
                .map(|j| {
                    qv.iter()
                        .zip(kv_row(k, j, kvh, p))
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * p.scale as f64
                })
                .collect();
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = s.iter().map(|x| (x - max).exp()).sum();
            let o = &mut out[at..][..d];
            for (j, sj) in s.iter().enumerate() {
                let pj = (sj - max).exp() / sum;
                for (o, &vv) in o.iter_mut().zip(kv_row(v, j, kvh, p)) {
                    *o += pj * vv as f64;
                }
            }
        }
        out
    }

    #[test]
    fn matches_reference() {
        let s = seed(0xa1_0001);
        let mut rng = Rng::new(s);
        let cases = [
            // (q_len, kv_len, heads, kv_heads, head_dim, causal)
            (1, 1, 1, 1, 1, true),
            (1, 31, 4, 2, 32, true),
            (31, 31, 4, 4, 33, true),
            (32, 32, 6, 2, 64, true),
            (33, 33, 9, 3, 64, false),
            (1, 512, 9, 3, 64, true),
            (7, 40, 8, 1, 16, true),
            (128, 300, 9, 3, 64, true),
            (130, 140, 12, 12, 32, false),
            (20, 200, 4, 1, 128, false),
        ];
        for (q_len, kv_len, num_heads, num_kv_heads, head_dim, causal) in cases {
            let p = AttentionParams {
                q_len,
                kv_len,
                num_heads,
                num_kv_heads,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
                causal,
            };
            let q = rng.vec(q_len * num_heads * head_dim);
            let k = rng.vec(kv_len * num_kv_heads * head_dim);
            let v = rng.vec(kv_len * num_kv_heads * head_dim);
            let mut out = vec![f32::NAN; q.len()];
            attention(&q, &k, &v, &mut out, p);
            let case = format!("attention q={q_len} kv={kv_len} h={num_heads}/{num_kv_heads} d={head_dim} causal={causal}");
            let want = reference(&q, &k, &v, p);
            assert_close(&out, &want, 1e-7, s, &case);
            assert_rel(&out, &want, head_dim, s, &case);
        }
    }

    /// A row's output does not depend on the rows computed with it: each row of a causal
    /// prefill equals that position decoded alone (one query row over its prefix).
    #[test]
    fn prefill_rows_equal_single_row_decode_bitwise() {
        let s = seed(0xa77e_0004);
        let mut rng = Rng::new(s);
        for &(d, heads, kv_heads) in &[(64, 9, 3), (32, 12, 12), (24, 4, 1)] {
            let len = 230;
            let q = rng.vec(len * heads * d);
            let k = rng.vec(len * kv_heads * d);
            let v = rng.vec(len * kv_heads * d);
            let p = AttentionParams {
                q_len: len,
                kv_len: len,
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: d,
                scale: 0.2,
                causal: true,
            };
            let mut all = vec![f32::NAN; q.len()];
            attention(&q, &k, &v, &mut all, p);
            for t in [0, 1, 7, 100, 199, 229] {
                let row = heads * d;
                let mut one = vec![f32::NAN; row];
                let p1 = AttentionParams {
                    q_len: 1,
                    kv_len: t + 1,
                    ..p
                };
                attention(&q[t * row..(t + 1) * row], &k, &v, &mut one, p1);
                let same = one
                    .iter()
                    .zip(&all[t * row..(t + 1) * row])
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "d={d} h={heads}/{kv_heads} row {t} (seed {s:#x})");
            }
        }
    }

    /// Large scores must not overflow: the max is subtracted before exp.
    #[test]
    fn large_scores_are_stable() {
        let p = AttentionParams {
            q_len: 1,
            kv_len: 2,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 1,
            scale: 1.0,
            causal: true,
        };
        let mut out = [f32::NAN];
        attention(&[1000.0], &[1.0, 0.9], &[2.0, 4.0], &mut out, p);
        assert!((out[0] - 2.0).abs() < 1e-6, "{out:?}");
    }
}
