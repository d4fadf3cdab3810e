//! Continuous batching on the tiny golden model (CPU): paged attention equals the dense path,
//! a request's greedy tokens are the same alone and among 64 concurrent ones (prefix caching
//! on and off), and 200 concurrent requests with a KV budget small enough to force
//! preemption all finish and give every page back.

mod common;

use common::fixtures;
use kiln_engine::batch::ForwardBatch;
use kiln_engine::engine_thread::{Event, GenerateRequest, RequestHandle};
use kiln_engine::kv_cache::PagedKvStore;
use kiln_engine::sampler::SamplingParams;
use kiln_models::llama::{LlamaModel, LoadOptions, Logits};
use kiln_models::serving::{start_engine, ServeOptions};
use kiln_models::text::TextModel;
use std::sync::Arc;

const SEED: u64 = 0x6261_7463_6821;

fn model() -> Arc<TextModel> {
    let dir = fixtures().join("llama/tiny-llama3");
    Arc::new(TextModel::from_hf_dir(&dir, LoadOptions::default()).unwrap())
}

/// splitmix64 stream for prompt lengths and ids.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Prompts of mixed lengths; a third share a 40-token system prefix (prefix-cache hits).
fn prompts(n: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let shared: Vec<u32> = (0..40).map(|_| rng.below(500) as u32 + 3).collect();
    (0..n)
        .map(|i| {
            let len = 1 + rng.below(if i % 7 == 0 { 120 } else { 30 }) as usize;
            let mut p = if i % 3 == 0 {
                shared.clone()
            } else {
                Vec::new()
            };
            p.extend((0..len).map(|_| rng.below(500) as u32 + 3));
            p
        })
        .collect()
}

/// Greedy tokens from the dense single-sequence path (no eos stop).
fn alone(model: &LlamaModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + n).unwrap();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let next = logits.argmax().unwrap().to_vec::<u32>().unwrap()[0];
        out.push(next);
        if i + 1 < n {
            logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
        }
    }
    out
}

/// Decode steps padded to graph shapes (1 sequence in a graph of 1, block tables widened to
/// 8 pages, scratch page) give the same logits, bit for bit, as the plain path.
#[test]
fn fixed_shape_decode_equals_the_plain_path() {
    let m = model();
    let llama = &m.model;
    let mut rng = Rng(SEED ^ 2);
    for p in prompts(4, &mut rng) {
        let n = 40;
        let mut plain = llama.new_cache(p.len() + n).unwrap();
        let mut fixed = llama.new_cache(p.len() + n).unwrap();
        fixed.set_fixed_shape_decode(true);
        let mut a = llama.forward(&p, &mut plain, Logits::Last).unwrap();
        let mut b = llama.forward(&p, &mut fixed, Logits::Last).unwrap();
        for step in 0..n {
            let (va, vb) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
            assert_eq!(va, vb, "seed {:#x}: step {step}", SEED ^ 2);
            let next = a.argmax().unwrap().to_vec::<u32>().unwrap()[0];
            a = llama.forward(&[next], &mut plain, Logits::Last).unwrap();
            b = llama.forward(&[next], &mut fixed, Logits::Last).unwrap();
        }
    }
}

fn greedy_request(prompt: Vec<u32>, max_tokens: usize) -> GenerateRequest {
    GenerateRequest {
        prompt,
        params: SamplingParams {
            temperature: 0.0,
            max_tokens,
            ..Default::default()
        },
        stop_ids: vec![],
        processor: None,
    }
}

fn tokens_of(h: &mut RequestHandle) -> Vec<u32> {
    let mut out = Vec::new();
    loop {
        match h.next_blocking() {
            Some(Event::Token(t)) => out.push(t),
            Some(Event::Done(_)) => return out,
            Some(Event::Error(e)) => panic!("request {} failed: {e}", h.id()),
            None => panic!("request {} ended without Done", h.id()),
        }
    }
}

#[test]
fn paged_batch_logits_equal_dense_logits() {
    let m = model();
    let llama = &m.model;
    let mut rng = Rng(SEED);
    let ps = prompts(5, &mut rng);
    // One batch holding every prompt (block size 16, pages assigned back to back).
    let bs = 16;
    let mut batch = ForwardBatch {
        cu_seqlens: vec![0],
        ..Default::default()
    };
    let pages: Vec<usize> = ps.iter().map(|p| p.len().div_ceil(bs)).collect();
    batch.max_blocks = *pages.iter().max().unwrap();
    let mut next_page = 0u32;
    for (p, &n) in ps.iter().zip(&pages) {
        let table: Vec<u32> = (next_page..next_page + n as u32).collect();
        next_page += n as u32;
        batch.tokens.extend_from_slice(p);
        batch.positions.extend(0..p.len() as u32);
        batch
            .slot_mapping
            .extend((0..p.len()).map(|i| table[i / bs] * bs as u32 + (i % bs) as u32));
        batch.cu_seqlens.push(batch.tokens.len() as u32);
        batch.context_lens.push(p.len() as u32);
        batch.block_tables.extend(&table);
        batch
            .block_tables
            .extend(std::iter::repeat_n(0, batch.max_blocks - n));
        batch.logits_rows.push(batch.tokens.len() as u32 - 1);
    }
    let layout = llama.kv_layout(bs, kiln_engine::DType::F32);
    let mut kv = PagedKvStore::new(layout, next_page as usize, llama.device()).unwrap();
    let paged = llama
        .forward_batch(&batch, &mut kv)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let vocab = llama.config().vocab_size;
    for (i, p) in ps.iter().enumerate() {
        let mut cache = llama.new_cache(p.len()).unwrap();
        let dense = llama
            .forward(p, &mut cache, Logits::Last)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(
            &paged[i * vocab..(i + 1) * vocab],
            &dense[..],
            "seed {SEED:#x}: prompt {i}"
        );
    }
}

fn run_concurrently(
    m: &Arc<TextModel>,
    opts: &ServeOptions,
    ps: &[Vec<u32>],
    n: usize,
) -> Vec<Vec<u32>> {
    let engine = start_engine(m.clone(), opts).unwrap();
    let mut handles: Vec<RequestHandle> = ps
        .iter()
        .map(|p| engine.submit(greedy_request(p.clone(), n)).unwrap())
        .collect();
    let out: Vec<Vec<u32>> = handles.iter_mut().map(tokens_of).collect();
    let stats = engine.stats();
    assert_eq!(stats.in_flight, 0);
    assert_eq!(
        stats.scheduler.kv_blocks_free, stats.scheduler.kv_blocks_total,
        "pages leaked"
    );
    out
}

#[test]
fn sixty_four_concurrent_requests_match_each_alone() {
    let m = model();
    let mut rng = Rng(SEED ^ 1);
    let ps = prompts(64, &mut rng);
    let n = 10;
    let want: Vec<Vec<u32>> = ps.iter().map(|p| alone(&m.model, p, n)).collect();
    // The third run pads decode steps to CUDA-graph shapes (eagerly, on the CPU).
    for (prefix_caching, graphs) in [(true, false), (false, false), (true, true)] {
        let opts = ServeOptions {
            max_batched_tokens: 256,
            max_seqs: 64,
            prefix_caching,
            cuda_graphs: Some(graphs),
            ..Default::default()
        };
        let got = run_concurrently(&m, &opts, &ps, n);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g,
                w,
                "seed {:#x}: request {i} (prefix caching {prefix_caching}, graph shapes {graphs})",
                SEED ^ 1
            );
        }
    }
}

/// bf16 K/V pages (the GPU default for 16-bit weights) keep batch invariance: 16 concurrent
/// requests give the tokens each gives alone on the same engine settings.
#[test]
fn bf16_pages_keep_batch_invariance() {
    let m = model();
    let mut rng = Rng(SEED ^ 3);
    let ps = prompts(16, &mut rng);
    let opts = ServeOptions {
        max_batched_tokens: 256,
        kv_cache_memory: Some(8 << 20),
        kv_dtype: Some(kiln_engine::DType::BF16),
        ..Default::default()
    };
    let together = run_concurrently(&m, &opts, &ps, 8);
    for (i, p) in ps.iter().enumerate() {
        let alone = run_concurrently(&m, &opts, std::slice::from_ref(p), 8);
        assert_eq!(alone[0], together[i], "seed {:#x}: request {i}", SEED ^ 3);
    }
}

#[test]
fn two_hundred_requests_under_preemption_all_finish() {
    let m = model();
    let mut rng = Rng(SEED ^ 2);
    let ps = prompts(200, &mut rng);
    let n = 8;
    // 48 pages of 16 tokens (and the scratch page): far fewer than 200 requests need at once.
    let layout = m.model.kv_layout(16, kiln_engine::DType::F32);
    let opts = ServeOptions {
        kv_cache_memory: Some(49 * layout.bytes_per_block()),
        max_batched_tokens: 192,
        max_seqs: 32,
        max_queue: 256,
        ..Default::default()
    };
    let engine = start_engine(m.clone(), &opts).unwrap();
    let mut handles: Vec<RequestHandle> = ps
        .iter()
        .map(|p| engine.submit(greedy_request(p.clone(), n)).unwrap())
        .collect();
    let got: Vec<Vec<u32>> = handles.iter_mut().map(tokens_of).collect();
    let stats = engine.stats();
    assert!(
        stats.scheduler.preemptions > 0,
        "the budget did not force preemption: {stats:?}"
    );
    assert_eq!(stats.in_flight, 0);
    assert_eq!(
        stats.scheduler.kv_blocks_free, 48,
        "pages leaked: {stats:?}"
    );
    // Recomputation after preemption does not change a request's tokens.
    for i in (0..200).step_by(9) {
        assert_eq!(
            got[i],
            alone(&m.model, &ps[i], n),
            "seed {:#x}: request {i}",
            SEED ^ 2
        );
    }
    assert!(got.iter().all(|g| g.len() == n));
}
