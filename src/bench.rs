//! `kiln bench`: prefill and decode throughput and peak memory of one model.

use crate::load::{load_text_model, ModelArgs};
use anyhow::{ensure, Result};
use clap::Args;
use kiln_models::llama::Logits;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens (random ids, seeded).
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Tokens decoded one at a time after the prompt.
    #[arg(long, default_value_t = 64)]
    pub gen_len: usize,
    /// Timed repetitions (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also time each op during decode and print where the time goes.
    #[arg(long)]
    pub profile: bool,
    /// Requests at once through the engine thread (continuous batching), e.g. `1,8,32`: one
    /// table row per value with TTFT and inter-token latency percentiles. Without it, one
    /// stream is timed on the model directly.
    #[arg(long)]
    pub concurrency: Option<String>,
    /// With --concurrency: tokens computed per engine step (prefill chunks + decodes).
    #[arg(long, default_value_t = 2048)]
    pub max_batched_tokens: usize,
    /// With --concurrency: bytes of KV pages (default as `kiln serve`).
    #[arg(long)]
    pub kv_cache_memory: Option<u64>,
    /// With --concurrency: tokens each request generates in the untimed warm-up run.
    #[arg(long, default_value_t = 8)]
    pub warmup_tokens: usize,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if let Some(spec) = &args.concurrency {
        return crate::bench_concurrency::bench_concurrency(&args, spec);
    }
    ensure!(args.prompt_len >= 1, "--prompt-len must be at least 1");
    ensure!(args.gen_len >= 1, "--gen-len must be at least 1");
    ensure!(args.repeat >= 1, "--repeat must be at least 1");
    let text = load_text_model(&args.model)?;
    let model = &text.model;
    let config = model.config();
    ensure!(
        args.prompt_len + args.gen_len <= config.max_position_embeddings,
        "--prompt-len + --gen-len = {} exceeds the context window {}",
        args.prompt_len + args.gen_len,
        config.max_position_embeddings
    );
    // Fixed pseudo-random prompt ids: the same workload on every run and every engine.
    let vocab = config.vocab_size as u64;
    let prompt: Vec<u32> = (0..args.prompt_len as u64)
        .map(|i| ((i * 2_654_435_761 + 12_345) % vocab) as u32)
        .collect();
    let (mut best_prefill, mut best_decode) = (f64::MAX, f64::MAX);
    for _ in 0..args.repeat {
        let mut cache = model.new_cache(args.prompt_len + args.gen_len)?;
        let t0 = Instant::now();
        let logits = model.forward(&prompt, &mut cache, Logits::Last)?;
        let mut next = logits.argmax()?.to_vec::<u32>()?[0];
        let prefill = t0.elapsed().as_secs_f64();
        kiln_engine::profile::reset();
        kiln_engine::profile::enable(args.profile);
        let t1 = Instant::now();
        for _ in 0..args.gen_len {
            let logits = model.forward(&[next], &mut cache, Logits::Last)?;
            next = logits.argmax()?.to_vec::<u32>()?[0];
        }
        let decode = t1.elapsed().as_secs_f64();
        kiln_engine::profile::enable(false);
        best_prefill = best_prefill.min(prefill);
        best_decode = best_decode.min(decode);
    }
    let prefill_tps = args.prompt_len as f64 / best_prefill;
    let decode_tps = args.gen_len as f64 / best_decode;
    let rss_mb = peak_rss_bytes().map(|b| b as f64 / 1e6);
    let weights_mb = model.weight_bytes() as f64 / 1e6;
    if args.profile && !args.json {
        println!("decode profile (last repetition, per generated token):");
        for (op, total, calls) in kiln_engine::profile::report() {
            let per_token_us = total.as_secs_f64() * 1e6 / args.gen_len as f64;
            println!("  {op:<12} {per_token_us:>9.1} us/token  {calls:>7} calls");
        }
    }
    if args.json {
        let v = serde_json::json!({
            "model": args.model.model,
            "device": args.model.device,
            "threads": rayon_threads(),
            "prompt_len": args.prompt_len,
            "gen_len": args.gen_len,
            "prefill_tokens_per_sec": prefill_tps,
            "decode_tokens_per_sec": decode_tps,
            "weights_mb": weights_mb,
            "peak_rss_mb": rss_mb,
        });
        println!("{v}");
    } else {
        println!("model           {}", args.model.model);
        println!("threads         {}", rayon_threads());
        println!(
            "prefill         {prefill_tps:.1} tokens/s ({} tokens)",
            args.prompt_len
        );
        println!(
            "decode          {decode_tps:.1} tokens/s ({} tokens)",
            args.gen_len
        );
        println!("weights         {weights_mb:.1} MB");
        match rss_mb {
            Some(mb) => println!("peak RSS        {mb:.1} MB"),
            None => println!("peak RSS        unavailable on this platform"),
        }
    }
    Ok(())
}

pub(crate) fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// VmHWM from /proc/self/status (Linux).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
