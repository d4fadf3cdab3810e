//! Continuous-batching host work and paged-attention kernels at serving sizes:
//! - the block pool / KV manager per step at 256 sequences (decode slot allocation, admitting
//!   and freeing prompts, prefix hits), and a whole scheduler step with its `ForwardBatch`;
//! - CPU `reshape_and_cache` and paged attention (decode and a prefill chunk) at SmolLM2-135M
//!   head shapes (9 query heads, 3 KV heads, head_dim 64, pages of 16).
//!
//! Run: `cargo bench --bench kv_paged -- <filter>`. Throughput is in sequences (or sequence
//! steps) per second for the bookkeeping and in K/V bytes read or written for the kernels.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_engine::batch::ForwardBatch;
use kiln_engine::kv_cache::KvCacheManager;
use kiln_engine::scheduler::{Scheduler, SchedulerConfig};
use kiln_kernels::cpu::paged_attention::{
    paged_attention, reshape_and_cache, CacheShape, PagedAttentionParams, PagedBatch,
};
use std::time::{Duration, Instant};

const SEQS: usize = 256;
const BLOCK: usize = 16;
const PROMPT: usize = 128;
/// Decode steps between re-admissions in the steady-state decode benches.
const STEPS_PER_ROUND: usize = 64;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
}

/// Deterministic token ids / values (xorshift).
fn ids(n: usize, seed: u32) -> Vec<u32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s % 49_152
        })
        .collect()
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    ids(n, seed)
        .into_iter()
        .map(|v| v as f32 / 24_576.0 - 1.0)
        .collect()
}

/// Pages for `SEQS` sequences of `PROMPT + STEPS_PER_ROUND` tokens, with room to spare.
fn pool_blocks() -> usize {
    SEQS * (PROMPT + STEPS_PER_ROUND).div_ceil(BLOCK) * 2
}

fn prompts(seed: u32) -> Vec<Vec<u32>> {
    (0..SEQS).map(|s| ids(PROMPT, seed + s as u32)).collect()
}

/// Admits every prompt (prefix lookup + allocation + slot mapping) and registers its pages.
fn admit_all(kv: &mut KvCacheManager, prompts: &[Vec<u32>]) {
    for (s, p) in prompts.iter().enumerate() {
        let seq = s as u64;
        let hit = kv.find_prefix(p);
        let new = p.len() - hit.num_tokens;
        kv.allocate_slots(seq, new, Some(&hit))
            .expect("the pool is sized for every prompt");
        black_box(kv.slots(seq, hit.num_tokens..p.len()));
        kv.cache_full_blocks(seq, p, p.len());
    }
}

fn free_all(kv: &mut KvCacheManager) {
    for s in 0..SEQS {
        kv.free(s as u64);
    }
}

fn kv_manager(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_manager");

    // One decode step for 256 running sequences: a slot each (a fresh page every 16th step),
    // its slot mapping, full pages registered. Re-admission every 64 steps is not timed.
    g.throughput(Throughput::Elements(SEQS as u64));
    g.bench_function(BenchmarkId::new("decode_step", SEQS), |b| {
        let ps = prompts(1);
        b.iter_custom(|iters| {
            let mut kv = KvCacheManager::new(pool_blocks(), BLOCK, true);
            let mut toks: Vec<Vec<u32>> = ps.clone();
            let mut spent = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                free_all(&mut kv);
                toks.clone_from(&ps);
                admit_all(&mut kv, &toks);
                let steps = (iters - done).min(STEPS_PER_ROUND as u64);
                let t = Instant::now();
                for step in 0..steps as usize {
                    for (s, tk) in toks.iter_mut().enumerate() {
                        let seq = s as u64;
                        kv.allocate_slots(seq, 1, None).expect("room for the round");
                        let pos = PROMPT + step;
                        black_box(kv.slots(seq, pos..pos + 1));
                        tk.push((pos % 1000) as u32);
                        kv.cache_full_blocks(seq, tk, pos + 1);
                    }
                }
                spent += t.elapsed();
                done += steps;
            }
            spent
        })
    });

    // Admitting 256 distinct 128-token prompts (no prefix cached), then freeing them all.
    g.bench_function(BenchmarkId::new("admit_free_miss", SEQS), |b| {
        let mut kv = KvCacheManager::new(pool_blocks(), BLOCK, true);
        // Eight prompt sets in turn: the pool holds about three sets' pages, so by the time a
        // set comes back its cached pages were evicted and every lookup misses.
        let sets: Vec<Vec<Vec<u32>>> = (0..8).map(|r| prompts(10_000 + r * 1000)).collect();
        let mut round = 0;
        b.iter(|| {
            round = (round + 1) % sets.len();
            admit_all(&mut kv, &sets[round]);
            free_all(&mut kv);
        })
    });

    // 256 prompts sharing a 112-token (7-page) system prefix already in the cache: each
    // admission reuses those pages and allocates one of its own.
    g.bench_function(BenchmarkId::new("admit_free_prefix_hit", SEQS), |b| {
        let mut kv = KvCacheManager::new(pool_blocks(), BLOCK, true);
        let system = ids(112, 99);
        let ps: Vec<Vec<u32>> = (0..SEQS)
            .map(|s| {
                let mut p = system.clone();
                p.extend_from_slice(&ids(PROMPT - 112, 1000 + s as u32));
                p
            })
            .collect();
        admit_all(&mut kv, &ps[..1]);
        kv.free(0);
        b.iter(|| {
            admit_all(&mut kv, &ps);
            free_all(&mut kv);
        })
    });
    g.finish();
}

/// A whole engine-thread step minus the model: schedule 256 decoding sequences, build the
/// `ForwardBatch` (tokens, positions, slots, page tables), complete, append a token each.
fn scheduler(c: &mut Criterion) {
    let mut g = c.benchmark_group("scheduler");
    g.throughput(Throughput::Elements(SEQS as u64));
    g.bench_function(BenchmarkId::new("decode_step_with_batch", SEQS), |b| {
        let ps = prompts(3);
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut done = 0u64;
            let mut next_id = 0u64;
            while done < iters {
                let mut s = Scheduler::new(SchedulerConfig {
                    max_batched_tokens: SEQS * PROMPT,
                    max_seqs: SEQS,
                    num_blocks: pool_blocks(),
                    block_size: BLOCK,
                    prefix_caching: true,
                });
                for p in &ps {
                    s.add(next_id, p.clone()).expect("admissible");
                    next_id += 1;
                }
                // The prefill step (untimed).
                let step = s.schedule();
                s.complete(&step);
                for x in &step.seqs {
                    s.append(x.seq, 1);
                }
                let steps = (iters - done).min(STEPS_PER_ROUND as u64);
                let t = Instant::now();
                for i in 0..steps {
                    let step = s.schedule();
                    let batch = ForwardBatch::from_step(&s, &step);
                    black_box(&batch);
                    s.complete(&step);
                    for x in &step.seqs {
                        s.append(x.seq, (i % 1000) as u32);
                    }
                }
                spent += t.elapsed();
                done += steps;
            }
            spent
        })
    });
    g.finish();
}

/// SmolLM2-135M attention shapes.
const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;

/// A cache of `seqs` sequences of `ctx` tokens each, their pages interleaved over the pool.
struct PagedSetup {
    shape: CacheShape,
    k: Vec<f32>,
    v: Vec<f32>,
    tables: Vec<u32>,
    max_blocks: usize,
}

fn paged_setup(seqs: usize, ctx: usize) -> PagedSetup {
    let max_blocks = ctx.div_ceil(BLOCK);
    let num_blocks = seqs * max_blocks;
    let shape = CacheShape {
        num_blocks,
        num_kv_heads: KV_HEADS,
        block_size: BLOCK,
        head_dim: HEAD_DIM,
    };
    // Page j of sequence s is block j * seqs + s: neighbouring pages of a sequence are far
    // apart, as after a while of serving.
    let tables = (0..seqs)
        .flat_map(|s| (0..max_blocks).map(move |j| (j * seqs + s) as u32))
        .collect();
    PagedSetup {
        shape,
        k: data(shape.len(), 5),
        v: data(shape.len(), 6),
        tables,
        max_blocks,
    }
}

fn paged_kernels(c: &mut Criterion) {
    let mut g = c.benchmark_group("paged");

    // reshape_and_cache: one decode step of 256 sequences, and a 2048-token prefill chunk.
    for &tokens in &[SEQS, 2048] {
        let setup = paged_setup(SEQS, PROMPT + STEPS_PER_ROUND);
        let mut cache = setup.k.clone();
        let new = data(tokens * KV_HEADS * HEAD_DIM, 7);
        let slots: Vec<u32> = ids(tokens, 8)
            .into_iter()
            .map(|x| x % (setup.shape.num_blocks * BLOCK) as u32)
            .collect();
        g.throughput(Throughput::Bytes((new.len() * 4) as u64));
        g.bench_function(
            BenchmarkId::new("reshape_and_cache", format!("{tokens}tok_kv3_d64")),
            |b| {
                b.iter(|| {
                    reshape_and_cache(black_box(&new), &slots, &mut cache, setup.shape)
                        .expect("slots in range")
                })
            },
        );
    }

    // Decode: one query row per sequence over its whole context.
    for &(seqs, ctx) in &[(1, 512), (32, 192), (32, 1024), (256, 192)] {
        let s = paged_setup(seqs, ctx);
        let q = data(seqs * HEADS * HEAD_DIM, 9);
        let mut out = vec![0f32; q.len()];
        let context_lens = vec![ctx as u32; seqs];
        let cu: Vec<u32> = (0..=seqs as u32).collect();
        let p = PagedAttentionParams {
            num_heads: HEADS,
            cache: s.shape,
            max_blocks: s.max_blocks,
            scale: 0.125,
            causal: true,
            decode_only: true,
        };
        let batch = PagedBatch {
            block_tables: &s.tables,
            context_lens: &context_lens,
            cu_seqlens: &cu,
        };
        batch.validate(seqs, &p).expect("valid batch");
        // K and V of every context token, once per KV head.
        g.throughput(Throughput::Bytes(
            (seqs * ctx * KV_HEADS * HEAD_DIM * 2 * 4) as u64,
        ));
        g.bench_function(
            BenchmarkId::new("decode", format!("b{seqs}_ctx{ctx}_h9_kv3_d64")),
            |b| b.iter(|| paged_attention(black_box(&q), &s.k, &s.v, &mut out, &batch, p)),
        );
    }

    // Prefill chunk: 8 sequences of 128 new tokens after 64 cached ones (causal).
    let (seqs, new_tokens, cached) = (8, 128, 64);
    let ctx = new_tokens + cached;
    let s = paged_setup(seqs, ctx);
    let rows = seqs * new_tokens;
    let q = data(rows * HEADS * HEAD_DIM, 10);
    let mut out = vec![0f32; q.len()];
    let context_lens = vec![ctx as u32; seqs];
    let cu: Vec<u32> = (0..=seqs).map(|i| (i * new_tokens) as u32).collect();
    let p = PagedAttentionParams {
        num_heads: HEADS,
        cache: s.shape,
        max_blocks: s.max_blocks,
        scale: 0.125,
        causal: true,
        decode_only: false,
    };
    let batch = PagedBatch {
        block_tables: &s.tables,
        context_lens: &context_lens,
        cu_seqlens: &cu,
    };
    batch.validate(rows, &p).expect("valid batch");
    // Causal: row i of a sequence sees cached + i + 1 keys; 2 flops per multiply-add, QK and PV.
    let visible: usize = (0..new_tokens).map(|i| cached + i + 1).sum();
    let flops = seqs * visible * HEADS * HEAD_DIM * 4;
    g.throughput(Throughput::Elements(flops as u64));
    g.bench_function(
        BenchmarkId::new("prefill_flops", "8x128_after64_h9_kv3_d64"),
        |b| b.iter(|| paged_attention(black_box(&q), &s.k, &s.v, &mut out, &batch, p)),
    );
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = kv_manager, scheduler, paged_kernels
}
criterion_main!(benches);
