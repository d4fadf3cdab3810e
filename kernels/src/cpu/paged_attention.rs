//! Attention over the paged KV cache, and the write of new K/V into their slots
//! (`reshape_and_cache`). CPU twins of `cuda/paged_attention.cu`.
//!
//! Cache layout: [num_blocks, kv_heads, block_size, head_dim], so the keys of one (page, kv
//! head) are `block_size * head_dim` contiguous values. A batch is varlen: sequence s owns
//! query rows `cu_seqlens[s]..cu_seqlens[s + 1]`, has `context_lens[s]` tokens in the cache
//! (its new ones included) and its pages in row s of `block_tables` ([seqs, max_blocks]).
//! Query row i of a sequence with q_len new tokens sits at position `context_len - q_len + i`.
//!
//! Each (query row, head) pair is computed exactly as `attention.rs` computes it (both go
//! through `attn_core`: same score sums, softmax and accumulation order), so paged and dense
//! attention agree bit for bit and a row's result does not depend on the batch around it.

use super::attn_core::{self, Rows, SeqRows, Task, TASK_ROWS};
use super::OutPtr;

/// A slot value that means "no slot" (padding): its token is not written.
pub const NO_SLOT: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
pub struct CacheShape {
    pub num_blocks: usize,
    pub num_kv_heads: usize,
    pub block_size: usize,
    pub head_dim: usize,
}

impl CacheShape {
    pub fn len(&self) -> usize {
        self.num_blocks * self.num_kv_heads * self.block_size * self.head_dim
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset of (slot, kv head) in the cache.
    fn at(&self, slot: usize, kv_head: usize) -> usize {
        let (block, off) = (slot / self.block_size, slot % self.block_size);
        ((block * self.num_kv_heads + kv_head) * self.block_size + off) * self.head_dim
    }
}

/// Writes `new` ([tokens, kv_heads, head_dim]) into `cache` at `slots` (one per token;
/// `NO_SLOT` skips). Returns the first slot out of range, if any (nothing is written then).
pub fn reshape_and_cache<T: Copy>(
    new: &[T],
    slots: &[u32],
    cache: &mut [T],
    shape: CacheShape,
) -> Result<(), u32> {
    let slots_total = (shape.num_blocks * shape.block_size) as u64;
    if let Some(&bad) = slots
        .iter()
        .find(|&&s| s != NO_SLOT && s as u64 >= slots_total)
    {
        return Err(bad);
    }
    let row = shape.num_kv_heads * shape.head_dim;
    for (t, &slot) in slots.iter().enumerate() {
        if slot == NO_SLOT {
            continue;
        }
        for h in 0..shape.num_kv_heads {
            let src = &new[t * row + h * shape.head_dim..][..shape.head_dim];
            let at = shape.at(slot as usize, h);
            cache[at..at + shape.head_dim].copy_from_slice(src);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
pub struct PagedAttentionParams {
    pub num_heads: usize,
    pub cache: CacheShape,
    /// Columns of `block_tables`.
    pub max_blocks: usize,
    pub scale: f32,
    pub causal: bool,
    /// The caller promised one query row per sequence (`Op::PagedAttention`'s `decode_only`):
    /// `validate` holds it to that, so a wrong promise is an error here, not a wrong kernel
    /// choice on the GPU.
    pub decode_only: bool,
}

/// The batch description shared by every (row, head) item.
pub struct PagedBatch<'a> {
    pub block_tables: &'a [u32],
    pub context_lens: &'a [u32],
    pub cu_seqlens: &'a [u32],
}

impl PagedBatch<'_> {
    /// Checks the batch against the cache and the query rows; the message names the problem.
    pub fn validate(&self, q_rows: usize, p: &PagedAttentionParams) -> Result<(), String> {
        let seqs = self.context_lens.len();
        if self.cu_seqlens.len() != seqs + 1 {
            return Err(format!(
                "{} cu_seqlens for {seqs} sequences",
                self.cu_seqlens.len()
            ));
        }
        if self.block_tables.len() != seqs * p.max_blocks {
            return Err(format!(
                "block_tables has {} entries, expected {seqs} x {}",
                self.block_tables.len(),
                p.max_blocks
            ));
        }
        if self.cu_seqlens[0] != 0 || self.cu_seqlens[seqs] as usize != q_rows {
            return Err(format!("cu_seqlens must run from 0 to {q_rows}"));
        }
        for s in 0..seqs {
            let (a, b) = (self.cu_seqlens[s], self.cu_seqlens[s + 1]);
            let ctx = self.context_lens[s] as usize;
            if b < a || (b - a) as usize > ctx {
                return Err(format!(
                    "sequence {s}: {} queries over {ctx} cached tokens",
                    b.wrapping_sub(a)
                ));
            }
            if p.decode_only && b - a != 1 {
                return Err(format!(
                    "sequence {s}: {} query rows in a decode_only batch (one each)",
                    b - a
                ));
            }
            let pages = ctx.div_ceil(p.cache.block_size);
            if pages > p.max_blocks {
                return Err(format!(
                    "sequence {s}: {ctx} tokens need {pages} pages, table has {}",
                    p.max_blocks
                ));
            }
            let row = &self.block_tables[s * p.max_blocks..][..pages];
            if let Some(&bad) = row.iter().find(|&&b| b as usize >= p.cache.num_blocks) {
                return Err(format!(
                    "sequence {s}: page {bad} outside the cache ({} pages)",
                    p.cache.num_blocks
                ));
            }
        }
        Ok(())
    }
}

/// An element of a paged cache: f32, or bf16 widened (exactly) to f32 where it is used, so a
/// bf16 cache gives bit for bit what an f32 cache holding the same values gives.
pub trait CacheElem: Copy + Send + Sync {
    /// bf16 (the upper half of an f32's bits); otherwise the type is f32 itself.
    const BF16: bool;
    /// The value as f32 (exact).
    fn to_f32(self) -> f32;
}

impl CacheElem for f32 {
    const BF16: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl CacheElem for half::bf16 {
    const BF16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
}

/// `q`, `out`: [rows, num_heads, head_dim]; `k_cache`, `v_cache` in the cache layout (f32 or
/// bf16). The batch must have passed `PagedBatch::validate`.
///
/// The work is split into tasks of (sequence, KV head, block of that sequence's query rows),
/// each computing its rows for every query head of the KV head's group through `attn_core`,
/// which packs the keys once per task (so a decode row's whole GQA group reads each K and V
/// page once) and fixes the operation order dense and varlen attention use too.
pub fn paged_attention<T: CacheElem>(
    q: &[f32],
    k_cache: &[T],
    v_cache: &[T],
    out: &mut [f32],
    batch: &PagedBatch<'_>,
    p: PagedAttentionParams,
) {
    let c = p.cache;
    let d = c.head_dim;
    let heads = p.num_heads;
    assert!(
        c.num_kv_heads > 0 && heads.is_multiple_of(c.num_kv_heads),
        "paged attention: bad GQA ratio"
    );
    let rows = *batch.cu_seqlens.last().unwrap_or(&0) as usize;
    if d == 0 || rows == 0 {
        return;
    }
    assert!(
        q.len() >= rows * heads * d && out.len() >= rows * heads * d,
        "paged attention: q or out too short"
    );
    assert!(
        k_cache.len() >= c.len() && v_cache.len() >= c.len(),
        "paged attention: cache shorter than its shape"
    );
    let group = heads / c.num_kv_heads;
    let kv_heads = c.num_kv_heads;
    let block = (TASK_ROWS / group).max(1);
    // (sequence, KV head, first row, end row) per task; rows relative to the sequence.
    let mut tasks = Vec::new();
    let mut work = 0usize;
    for s in 0..batch.context_lens.len() {
        let q_len = (batch.cu_seqlens[s + 1] - batch.cu_seqlens[s]) as usize;
        work += q_len * heads * batch.context_lens[s] as usize * d;
        for b in 0..q_len.div_ceil(block) {
            for kvh in 0..kv_heads {
                tasks.push((s, kvh, b * block, ((b + 1) * block).min(q_len)));
            }
        }
    }
    let outp = OutPtr(out[..rows * heads * d].as_mut_ptr());
    let task = |i: usize| {
        let (s, kvh, t0, t1) = tasks[i];
        let start = batch.cu_seqlens[s] as usize;
        let q_len = batch.cu_seqlens[s + 1] as usize - start;
        let ctx = batch.context_lens[s] as usize;
        let table = &batch.block_tables[s * p.max_blocks..][..p.max_blocks];
        let seq = SeqRows {
            start,
            q_len,
            ctx,
            heads,
            d,
            causal: p.causal,
        };
        let rows = seq.rows(t0..t1, kvh * group..(kvh + 1) * group);
        let rows_of = |data| Rows::Paged {
            data,
            table,
            kv_heads,
            kv_head: kvh,
            block_size: c.block_size,
            d,
        };
        let t = Task {
            q,
            keys: rows_of(k_cache),
            values: rows_of(v_cache),
            d,
            scale: p.scale,
        };
        // SAFETY: the task writes only its own (row, head) outputs inside `out[..rows·heads·d]`
        // (tasks are disjoint); the validated batch keeps every key below ctx inside a page
        // of the table, and the pages inside the cache (length asserted above).
        unsafe { attn_core::run(&t, &rows, outp) };
    };
    attn_core::spread(tasks.len(), work, task);
}

#[cfg(test)]
mod tests {
    use super::super::attention::{attention, AttentionParams};
    use super::*;
    use crate::cpu::testutil::{seed, Rng};

    /// Random batch: per sequence (new tokens, cached before), pages shuffled over the pool,
    /// partial last pages. Paged attention must equal dense attention bit for bit.
    #[test]
    fn paged_equals_dense_with_random_tables() {
        let s = seed(0xa77e_0001);
        let mut rng = Rng::new(s);
        for &(heads, kv_heads, d, bs, causal) in &[
            (4, 2, 32, 16, true),
            (6, 6, 16, 1, true),
            (8, 1, 64, 5, true),
            (3, 3, 8, 4, false),
        ] {
            let seqs: Vec<(usize, usize)> = vec![
                (1, 0),
                (7, 9),
                (1, 40),
                (33, 0),
                (3, 17),
                (1, 230),
                (9, 140),
            ];
            let num_blocks = 600;
            let cache = CacheShape {
                num_blocks,
                num_kv_heads: kv_heads,
                block_size: bs,
                head_dim: d,
            };
            let mut perm: Vec<u32> = (0..num_blocks as u32).collect();
            for i in (1..perm.len()).rev() {
                perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
            let mut k_cache = vec![f32::NAN; cache.len()];
            let mut v_cache = vec![f32::NAN; cache.len()];
            let max_blocks = seqs
                .iter()
                .map(|&(n, c)| (n + c).div_ceil(bs))
                .max()
                .unwrap();
            let mut tables = vec![0u32; seqs.len() * max_blocks];
            let (mut cu, mut ctx_lens, mut q_all) = (vec![0u32], vec![], vec![]);
            let mut dense = Vec::new();
            let mut next_page = 0;
            for (si, &(new, cached)) in seqs.iter().enumerate() {
                let ctx = new + cached;
                let pages = ctx.div_ceil(bs);
                for pg in 0..pages {
                    tables[si * max_blocks + pg] = perm[next_page];
                    next_page += 1;
                }
                let k = rng.vec(ctx * kv_heads * d);
                let v = rng.vec(ctx * kv_heads * d);
                let slots: Vec<u32> = (0..ctx)
                    .map(|j| tables[si * max_blocks + j / bs] * bs as u32 + (j % bs) as u32)
                    .collect();
                reshape_and_cache(&k, &slots, &mut k_cache, cache).unwrap();
                reshape_and_cache(&v, &slots, &mut v_cache, cache).unwrap();
                let q = rng.vec(new * heads * d);
                let mut o = vec![0f32; q.len()];
                let dp = AttentionParams {
                    q_len: new,
                    kv_len: ctx,
                    num_heads: heads,
                    num_kv_heads: kv_heads,
                    head_dim: d,
                    scale: 0.3,
                    causal,
                };
                attention(&q, &k, &v, &mut o, dp);
                dense.extend(o);
                q_all.extend(q);
                cu.push(cu.last().unwrap() + new as u32);
                ctx_lens.push(ctx as u32);
            }
            let batch = PagedBatch {
                block_tables: &tables,
                context_lens: &ctx_lens,
                cu_seqlens: &cu,
            };
            let p = PagedAttentionParams {
                num_heads: heads,
                cache,
                max_blocks,
                scale: 0.3,
                causal,
                decode_only: false,
            };
            batch.validate(q_all.len() / (heads * d), &p).unwrap();
            let mut out = vec![f32::NAN; q_all.len()];
            paged_attention(&q_all, &k_cache, &v_cache, &mut out, &batch, p);
            assert!(out.iter().all(|x| x.is_finite()), "seed {s:#x}: NaN");
            assert_eq!(
                out, dense,
                "seed {s:#x}: paged != dense for h={heads}/{kv_heads} d={d} bs={bs}"
            );
        }
    }

    /// A bf16 cache gives exactly what an f32 cache holding the same (rounded) values gives.
    #[test]
    fn bf16_cache_equals_f32_cache_of_the_same_values() {
        use half::bf16;
        let s = seed(0xa77e_0002);
        let mut rng = Rng::new(s);
        let cache = CacheShape {
            num_blocks: 9,
            num_kv_heads: 2,
            block_size: 4,
            head_dim: 24,
        };
        let k16: Vec<bf16> = rng
            .vec(cache.len())
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let v16: Vec<bf16> = rng
            .vec(cache.len())
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let k32: Vec<f32> = k16.iter().map(|x| x.to_f32()).collect();
        let v32: Vec<f32> = v16.iter().map(|x| x.to_f32()).collect();
        let batch = PagedBatch {
            block_tables: &[3, 8, 1, 0, 5, 2, 7, 4],
            context_lens: &[13, 6],
            cu_seqlens: &[0, 5, 6],
        };
        let p = PagedAttentionParams {
            num_heads: 6,
            cache,
            max_blocks: 4,
            scale: 0.2,
            causal: true,
            decode_only: false,
        };
        batch.validate(6, &p).unwrap();
        let q = rng.vec(6 * 6 * 24);
        let (mut a, mut b) = (vec![f32::NAN; q.len()], vec![f32::NAN; q.len()]);
        paged_attention(&q, &k16, &v16, &mut a, &batch, p);
        paged_attention(&q, &k32, &v32, &mut b, &batch, p);
        assert!(a.iter().all(|x| x.is_finite()), "seed {s:#x}");
        assert_eq!(a, b, "seed {s:#x}");
    }

    #[test]
    fn bad_batches_are_named() {
        let cache = CacheShape {
            num_blocks: 2,
            num_kv_heads: 1,
            block_size: 4,
            head_dim: 2,
        };
        let p = PagedAttentionParams {
            num_heads: 1,
            cache,
            max_blocks: 2,
            scale: 1.0,
            causal: true,
            decode_only: false,
        };
        let ok = PagedBatch {
            block_tables: &[0, 1],
            context_lens: &[5],
            cu_seqlens: &[0, 2],
        };
        ok.validate(2, &p).unwrap();
        let bad_page = PagedBatch {
            block_tables: &[0, 7],
            context_lens: &[5],
            cu_seqlens: &[0, 2],
        };
        assert!(bad_page.validate(2, &p).unwrap_err().contains("page 7"));
        let too_long = PagedBatch {
            block_tables: &[0, 1],
            context_lens: &[9],
            cu_seqlens: &[0, 2],
        };
        assert!(too_long
            .validate(2, &p)
            .unwrap_err()
            .contains("need 3 pages"));
        let more_q = PagedBatch {
            block_tables: &[0, 1],
            context_lens: &[1],
            cu_seqlens: &[0, 2],
        };
        assert!(more_q.validate(2, &p).is_err());
        let decode = PagedAttentionParams {
            decode_only: true,
            ..p
        };
        let err = ok.validate(2, &decode).unwrap_err();
        assert!(err.contains("2 query rows in a decode_only batch"), "{err}");
        let one_row = PagedBatch {
            block_tables: &[0, 1],
            context_lens: &[5],
            cu_seqlens: &[0, 1],
        };
        one_row.validate(1, &decode).unwrap();
        let mut cache_buf = vec![0f32; cache.len()];
        assert_eq!(
            reshape_and_cache(&[1.0, 2.0], &[8], &mut cache_buf, cache),
            Err(8)
        );
        reshape_and_cache(&[1.0, 2.0], &[NO_SLOT], &mut cache_buf, cache).unwrap();
        reshape_and_cache(&[1.0, 2.0], &[5], &mut cache_buf, cache).unwrap();
        assert_eq!(&cache_buf[10..12], &[1.0, 2.0]);
    }
}
