//! Attention over a flat batch of dense sequences of different lengths (encoders, cross-
//! attention): sequence s owns query rows `cu_seqlens_q[s]..cu_seqlens_q[s + 1]` and key/value
//! rows `cu_seqlens_k[s]..cu_seqlens_k[s + 1]`, and attends only to its own keys. CPU twin of
//! the `kiln_varlen_attention_*` kernels in `cuda/varlen_attention.cu`.
//!
//! Each sequence is exactly `attention.rs` on its slices, so the result equals dense attention
//! per sequence bit for bit (and does not depend on the other sequences in the batch).

use super::attention::{attention, AttentionParams};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub struct VarlenAttentionParams {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Query row i of a sequence with q_len queries and k_len keys sits at position
    /// `k_len - q_len + i` and sees keys `0..=` that (as `AttentionParams::causal`).
    pub causal: bool,
}

/// The sequence boundaries of one batch.
pub struct VarlenBatch<'a> {
    pub cu_seqlens_q: &'a [u32],
    pub cu_seqlens_k: &'a [u32],
}

impl VarlenBatch<'_> {
    /// Checks the boundaries against `q_rows` queries and `k_rows` keys; the message names the
    /// problem.
    pub fn validate(&self, q_rows: usize, k_rows: usize, causal: bool) -> Result<(), String> {
        let (cq, ck) = (self.cu_seqlens_q, self.cu_seqlens_k);
        if cq.is_empty() || cq.len() != ck.len() {
            return Err(format!(
                "cu_seqlens_q has {} entries and cu_seqlens_k {}: one per sequence plus one each",
                cq.len(),
                ck.len()
            ));
        }
        for (what, cu, rows) in [("cu_seqlens_q", cq, q_rows), ("cu_seqlens_k", ck, k_rows)] {
            if cu[0] != 0 || cu[cu.len() - 1] as usize != rows {
                return Err(format!("{what} must run from 0 to {rows}"));
            }
            if let Some(s) = cu.windows(2).position(|w| w[1] < w[0]) {
                return Err(format!("{what} decreases at sequence {s}"));
            }
        }
        if causal {
            for s in 0..cq.len() - 1 {
                let (q_len, k_len) = (cq[s + 1] - cq[s], ck[s + 1] - ck[s]);
                if q_len > k_len {
                    return Err(format!(
                        "sequence {s}: causal with {q_len} queries over only {k_len} keys"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `q`, `out`: [q_rows, num_heads, head_dim]; `k`, `v`: [k_rows, num_kv_heads, head_dim].
/// The batch must have passed `VarlenBatch::validate`.
pub fn varlen_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    batch: &VarlenBatch<'_>,
    p: VarlenAttentionParams,
) {
    let (cq, ck) = (batch.cu_seqlens_q, batch.cu_seqlens_k);
    let q_row = p.num_heads * p.head_dim;
    let k_row = p.num_kv_heads * p.head_dim;
    let seqs = cq.len().saturating_sub(1);
    // Each sequence's output rows, split off in order (the boundaries are validated).
    let mut parts: Vec<(usize, &mut [f32])> = Vec::with_capacity(seqs);
    let mut rest = &mut out[..cq.last().map_or(0, |&r| r as usize) * q_row];
    for s in 0..seqs {
        let n = (cq[s + 1] - cq[s]) as usize * q_row;
        let (mine, tail) = rest.split_at_mut(n);
        parts.push((s, mine));
        rest = tail;
    }
    let one = |(s, o): (usize, &mut [f32])| {
        let (qa, qb) = (cq[s] as usize, cq[s + 1] as usize);
        let (ka, kb) = (ck[s] as usize, ck[s + 1] as usize);
        let dp = AttentionParams {
            q_len: qb - qa,
            kv_len: kb - ka,
            num_heads: p.num_heads,
            num_kv_heads: p.num_kv_heads,
            head_dim: p.head_dim,
            scale: p.scale,
            causal: p.causal,
        };
        attention(
            &q[qa * q_row..qb * q_row],
            &k[ka * k_row..kb * k_row],
            &v[ka * k_row..kb * k_row],
            o,
            dp,
        );
    };
    if seqs > 1 {
        parts.into_par_iter().for_each(one);
    } else {
        parts.into_iter().for_each(one);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{seed, Rng};

    /// Random sequences (lengths 0, 1, 31, 33, ...): each sequence's rows must equal dense
    /// attention on that sequence alone, bit for bit.
    #[test]
    fn varlen_equals_dense_per_sequence() {
        let s = seed(0x7a41_0001);
        let mut rng = Rng::new(s);
        for &(heads, kv_heads, d, causal) in &[
            (4, 2, 32, false),
            (6, 6, 16, true),
            (8, 1, 64, false),
            (3, 3, 7, true),
        ] {
            // (q_len, k_len): cross-attention shapes when not causal, self-attention (and
            // chunked, q_len < k_len) when causal.
            let seqs: &[(usize, usize)] = if causal {
                &[(1, 1), (7, 9), (33, 33), (0, 5), (31, 40)]
            } else {
                &[(1, 31), (9, 4), (33, 33), (0, 3), (5, 0), (64, 17)]
            };
            let (mut cq, mut ck) = (vec![0u32], vec![0u32]);
            let (mut q, mut k, mut v, mut want) = (vec![], vec![], vec![], vec![]);
            for &(ql, kl) in seqs {
                let qs = rng.vec(ql * heads * d);
                let ks = rng.vec(kl * kv_heads * d);
                let vs = rng.vec(kl * kv_heads * d);
                let mut o = vec![0f32; qs.len()];
                let dp = AttentionParams {
                    q_len: ql,
                    kv_len: kl,
                    num_heads: heads,
                    num_kv_heads: kv_heads,
                    head_dim: d,
                    scale: 0.25,
                    causal,
                };
                attention(&qs, &ks, &vs, &mut o, dp);
                want.extend(o);
                q.extend(qs);
                k.extend(ks);
                v.extend(vs);
                cq.push(cq.last().unwrap() + ql as u32);
                ck.push(ck.last().unwrap() + kl as u32);
            }
            let batch = VarlenBatch {
                cu_seqlens_q: &cq,
                cu_seqlens_k: &ck,
            };
            let (tq, tk) = (q.len() / (heads * d), k.len() / (kv_heads * d));
            batch.validate(tq, tk, causal).unwrap();
            let p = VarlenAttentionParams {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim: d,
                scale: 0.25,
                causal,
            };
            let mut out = vec![f32::NAN; q.len()];
            varlen_attention(&q, &k, &v, &mut out, &batch, p);
            assert_eq!(
                out, want,
                "seed {s:#x}: varlen != dense for h={heads}/{kv_heads} d={d} causal={causal}"
            );
        }
    }

    #[test]
    fn bad_boundaries_are_named() {
        let b = |q: &'static [u32], k: &'static [u32]| VarlenBatch {
            cu_seqlens_q: q,
            cu_seqlens_k: k,
        };
        b(&[0, 2, 3], &[0, 4, 4]).validate(3, 4, false).unwrap();
        let e = b(&[0, 2], &[0, 1, 2]).validate(2, 2, false).unwrap_err();
        assert!(e.contains("one per sequence"), "{e}");
        let e = b(&[0, 2], &[0, 3]).validate(3, 3, false).unwrap_err();
        assert!(e.contains("cu_seqlens_q must run from 0 to 3"), "{e}");
        let e = b(&[0, 3, 2, 4], &[0, 1, 2, 3])
            .validate(4, 3, false)
            .unwrap_err();
        assert!(e.contains("cu_seqlens_q decreases at sequence 1"), "{e}");
        let e = b(&[0, 1, 3], &[0, 1, 2]).validate(3, 2, true).unwrap_err();
        assert!(
            e.contains("sequence 1: causal with 2 queries over only 1 keys"),
            "{e}"
        );
        b(&[0, 1, 3], &[0, 1, 2]).validate(3, 2, false).unwrap();
    }
}
