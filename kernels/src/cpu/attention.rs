//! Scaled dot-product attention (GQA, optional causal mask), f32, one (query row, head) pair
//! per rayon item. Scores go to a per-thread scratch row of kv_len floats, then an exact
//! softmax and a weighted sum of V: the same operation order as HF's eager attention.

use super::softmax::{softmax_in_place, visible};
use super::vecops::{axpy, dot};
use rayon::prelude::*;
use std::cell::RefCell;

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

thread_local! {
    /// Score row reused across calls, so decode does not allocate per head.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Minimum multiply-adds per rayon task.
const TASK_WORK: usize = 1 << 15;

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
    if d == 0 {
        return;
    }
    let group = num_heads / num_kv_heads;
    let kv_stride = num_kv_heads * d;
    let item = |idx: usize, o: &mut [f32]| {
        let (t, h) = (idx / num_heads, idx % num_heads);
        let kvh = h / group;
        let qv = &q[idx * d..(idx + 1) * d];
        let seen = if causal {
            visible(t, q_len, kv_len)
        } else {
            kv_len
        };
        o.fill(0.0);
        if seen == 0 {
            return;
        }
        SCORES.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < seen {
                s.resize(seen, 0.0);
            }
            let scores = &mut s[..seen];
            for (j, sc) in scores.iter_mut().enumerate() {
                let kj = &k[j * kv_stride + kvh * d..][..d];
                *sc = dot(qv, kj) * scale;
            }
            softmax_in_place(scores);
            for (j, &pj) in scores.iter().enumerate() {
                let vj = &v[j * kv_stride + kvh * d..][..d];
                axpy(o, pj, vj);
            }
        });
    };
    let out = &mut out[..q_size];
    let work = q_len * num_heads * kv_len * d;
    if work < 2 * TASK_WORK || q_len * num_heads == 1 {
        for (idx, o) in out.chunks_exact_mut(d).enumerate() {
            item(idx, o);
        }
    } else {
        let per_item = (kv_len * d).max(1);
        let min_len = (TASK_WORK / per_item).max(1);
        out.par_chunks_exact_mut(d)
            .enumerate()
            .with_min_len(min_len)
            .for_each(|(idx, o)| item(idx, o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{assert_close, seed, Rng};

    fn reference(q: &[f32], k: &[f32], v: &[f32], p: AttentionParams) -> Vec<f64> {
        let d = p.head_dim;
        let group = p.num_heads / p.num_kv_heads;
        let mut out = vec![0f64; p.q_len * p.num_heads * d];
        for t in 0..p.q_len {
            for h in 0..p.num_heads {
                let kvh = h / group;
                let seen = if p.causal {
                    visible(t, p.q_len, p.kv_len)
                } else {
                    p.kv_len
                };
                let qv = &q[(t * p.num_heads + h) * d..][..d];
                let s: Vec<f64> = (0..seen)
                    .map(|j| {
                        let kj = &k[(j * p.num_kv_heads + kvh) * d..][..d];
                        qv.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            * p.scale as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = s.iter().map(|x| (x - max).exp()).sum();
                let o = &mut out[(t * p.num_heads + h) * d..][..d];
                for (j, sj) in s.iter().enumerate() {
                    let pj = (sj - max).exp() / sum;
                    let vj = &v[(j * p.num_kv_heads + kvh) * d..][..d];
                    for (o, &vv) in o.iter_mut().zip(vj) {
                        *o += pj * vv as f64;
                    }
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
            assert_close(&out, &reference(&q, &k, &v, p), 1e-7, s, &case);
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
