//! `kiln bench --concurrency N[,N...]`: N generation requests at once through the engine
//! thread (`start_engine`, the path the server takes), each with a fixed prompt length and a
//! fixed number of greedy tokens. Reports decode tokens/s, prefill tokens/s, time to first
//! token and inter-token latency percentiles, and the ratio to concurrency 1.
//!
//! Definitions (every request is submitted at t = 0 of its run):
//! - decode tok/s: steady state with all N requests decoding: the tokens that arrive between
//!   the moment the last request got its first token and the moment the first request got its
//!   last token, divided by that window. When the window is empty (a very short `--gen-len`)
//!   it falls back to output tok/s.
//! - output tok/s: every generated token over the run's whole time.
//! - prefill tok/s: N x prompt length over the time until the last first token.
//! - TTFT: submit to first token, per request (includes queueing behind other prefills).
//! - ITL: the gap between consecutive tokens of one request, over every request.

use crate::bench::{rayon_threads, BenchArgs};
use crate::load::load_text_model;
use anyhow::{ensure, Context, Result};
use kiln_engine::engine_thread::{Engine, Event, FinishReason, GenerateRequest};
use kiln_engine::sampler::SamplingParams;
use kiln_models::serving::{plan_kv_blocks, start_engine, ServeOptions};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parses `1,8,32` into sorted, deduplicated concurrencies.
pub fn parse_concurrency(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let n: usize = part.parse().with_context(|| {
            format!("--concurrency {s:?}: {part:?} is not a positive integer (e.g. 1,8,32)")
        })?;
        ensure!(n >= 1, "--concurrency {s:?}: each value must be at least 1");
        out.push(n);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// One timed run at one concurrency.
#[derive(Debug, Clone)]
struct RunStats {
    wall_s: f64,
    decode_tps: f64,
    decode_window_s: f64,
    output_tps: f64,
    prefill_tps: f64,
    ttft_ms: Vec<f64>,
    itl_ms: Vec<f64>,
    generated: usize,
    preemptions: u32,
    cached_tokens: usize,
}

/// Per request: arrival time of each token, relative to submission.
struct Timeline {
    tokens: Vec<Duration>,
    preemptions: u32,
    cached_tokens: usize,
}

/// Nearest-rank percentile of unsorted samples (`p` in 0..=100); 0 when empty.
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A fixed pseudo-random prompt per (run, request): no two requests share a page, so prefix
/// caching never skips prefill.
fn prompt_ids(run: u64, request: u64, len: usize, vocab: u64) -> Vec<u32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (run << 32) ^ request.wrapping_mul(0xA24B_AED4);
    (0..len)
        .map(|_| {
            // splitmix64
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % vocab) as u32
        })
        .collect()
}

struct Workload {
    prompt_len: usize,
    vocab: u64,
}

/// Submits `n` requests at once and collects every token's arrival time on one
/// current-thread runtime (no thread per request competing with the engine for the cores).
fn run_once(
    engine: &Engine,
    w: &Workload,
    n: usize,
    run_id: u64,
    gen_len: usize,
    progress: Option<&str>,
    profile: bool,
) -> Result<RunStats> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the collector runtime")?;
    let mut handles = Vec::with_capacity(n);
    let started = Instant::now();
    for r in 0..n {
        let req = GenerateRequest {
            prompt: prompt_ids(run_id, r as u64, w.prompt_len, w.vocab),
            params: SamplingParams {
                temperature: 0.0,
                max_tokens: gen_len,
                seed: Some(0),
                ..SamplingParams::default()
            },
            stop_ids: Vec::new(),
            processor: None,
        };
        handles.push(
            engine
                .submit(req)
                .map_err(|e| anyhow::anyhow!("submitting request {r}: {e}"))?,
        );
    }
    let total = n * gen_len;
    let received = Rc::new(Cell::new(0usize));
    // Requests that have their first token, and whether one has finished: with `profile`,
    // op timing runs exactly over the window where all n requests decode.
    let started_reqs = Rc::new(Cell::new(0usize));
    let one_done = Rc::new(Cell::new(false));
    kiln_engine::profile::reset();
    let last_print = Rc::new(RefCell::new(Instant::now()));
    let label = progress.map(str::to_string);
    let timelines = rt.block_on(async {
        let local = tokio::task::LocalSet::new();
        let tasks: Vec<_> = handles
            .into_iter()
            .enumerate()
            .map(|(r, mut h)| {
                let received = received.clone();
                let started_reqs = started_reqs.clone();
                let one_done = one_done.clone();
                let last_print = last_print.clone();
                let label = label.clone();
                local.spawn_local(async move {
                    let mut tl = Timeline {
                        tokens: Vec::with_capacity(gen_len),
                        preemptions: 0,
                        cached_tokens: 0,
                    };
                    while let Some(e) = h.next().await {
                        match e {
                            Event::Token(_) => {
                                let now = Instant::now();
                                tl.tokens.push(now - started);
                                received.set(received.get() + 1);
                                if tl.tokens.len() == 1 {
                                    started_reqs.set(started_reqs.get() + 1);
                                    if profile && started_reqs.get() == n && !one_done.get() {
                                        kiln_engine::profile::enable(true);
                                    }
                                }
                                if let Some(label) = &label {
                                    let mut lp = last_print.borrow_mut();
                                    if now.duration_since(*lp) >= Duration::from_secs(5) {
                                        *lp = now;
                                        eprintln!(
                                            "kiln: {label}: {}/{total} tokens, {:.1} s",
                                            received.get(),
                                            (now - started).as_secs_f64()
                                        );
                                    }
                                }
                            }
                            Event::Done(d) => {
                                if !one_done.replace(true) {
                                    kiln_engine::profile::enable(false);
                                }
                                if d.reason != FinishReason::Length
                                    || d.completion_tokens != gen_len
                                {
                                    return Err(format!(
                                        "request {r} ended early ({:?} after {} tokens)",
                                        d.reason, d.completion_tokens
                                    ));
                                }
                                tl.preemptions = d.preemptions;
                                tl.cached_tokens = d.cached_tokens;
                                return Ok(tl);
                            }
                            Event::Error(m) => return Err(format!("request {r}: {m}")),
                        }
                    }
                    Err(format!("request {r}: the engine stopped"))
                })
            })
            .collect();
        local
            .run_until(async move {
                let mut out = Vec::with_capacity(tasks.len());
                for t in tasks {
                    out.push(t.await.map_err(|e| e.to_string()).and_then(|r| r));
                }
                out
            })
            .await
    });
    let wall = started.elapsed().as_secs_f64();
    kiln_engine::profile::enable(false);
    let timelines: Vec<Timeline> = timelines
        .into_iter()
        .collect::<std::result::Result<_, String>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(summarize(&timelines, w.prompt_len, wall))
}

fn summarize(timelines: &[Timeline], prompt_len: usize, wall: f64) -> RunStats {
    let secs = |d: &Duration| d.as_secs_f64();
    let first: Vec<f64> = timelines.iter().map(|t| secs(&t.tokens[0])).collect();
    let last: Vec<f64> = timelines
        .iter()
        .map(|t| secs(t.tokens.last().expect("at least one token")))
        .collect();
    let all_started = first.iter().cloned().fold(0.0, f64::max);
    let first_done = last.iter().cloned().fold(f64::MAX, f64::min);
    let generated: usize = timelines.iter().map(|t| t.tokens.len()).sum();
    let output_tps = generated as f64 / wall;
    let (decode_tps, window) = if first_done > all_started {
        let in_window = timelines
            .iter()
            .flat_map(|t| t.tokens.iter())
            .filter(|d| {
                let s = secs(d);
                s > all_started && s <= first_done
            })
            .count();
        let window = first_done - all_started;
        (in_window as f64 / window, window)
    } else {
        (output_tps, 0.0)
    };
    let itl_ms = timelines
        .iter()
        .flat_map(|t| t.tokens.windows(2).map(|w| secs(&(w[1] - w[0])) * 1e3))
        .collect();
    RunStats {
        wall_s: wall,
        decode_tps,
        decode_window_s: window,
        output_tps,
        prefill_tps: (timelines.len() * prompt_len) as f64 / all_started.max(1e-9),
        ttft_ms: first.iter().map(|s| s * 1e3).collect(),
        itl_ms,
        generated,
        preemptions: timelines.iter().map(|t| t.preemptions).sum(),
        cached_tokens: timelines.iter().map(|t| t.cached_tokens).sum(),
    }
}

struct Row {
    n: usize,
    best: RunStats,
    decode_runs: Vec<f64>,
    /// With --profile, the last run's op times over its decode window: (op, seconds, calls).
    profile: Vec<(&'static str, f64, u64)>,
    /// That run's decode window and the tokens generated in it.
    profile_window: (f64, f64),
}

pub fn bench_concurrency(args: &BenchArgs, spec: &str) -> Result<()> {
    let levels = parse_concurrency(spec)?;
    ensure!(args.prompt_len >= 1, "--prompt-len must be at least 1");
    ensure!(
        args.gen_len >= 2,
        "--gen-len must be at least 2 with --concurrency"
    );
    ensure!(args.repeat >= 1, "--repeat must be at least 1");
    let text = Arc::new(load_text_model(&args.model)?);
    let config = text.model.config();
    ensure!(
        args.prompt_len + args.gen_len <= text.context_window(),
        "--prompt-len + --gen-len = {} exceeds the context window {}",
        args.prompt_len + args.gen_len,
        text.context_window()
    );
    let w = Workload {
        prompt_len: args.prompt_len,
        vocab: config.vocab_size as u64,
    };
    let max_n = *levels
        .last()
        .expect("parse_concurrency returns at least one");
    let opts = ServeOptions {
        kv_cache_memory: args.kv_cache_memory,
        max_batched_tokens: args.max_batched_tokens,
        max_seqs: max_n,
        max_queue: max_n,
        ..ServeOptions::default()
    };
    ensure!(
        opts.max_batched_tokens >= 1,
        "--max-batched-tokens must be at least 1"
    );
    let (kv_blocks, _) = plan_kv_blocks(&text.model, &opts)?;
    let need_blocks = max_n * (args.prompt_len + args.gen_len).div_ceil(opts.block_size);
    if kv_blocks < need_blocks {
        eprintln!(
            "kiln: warning: {max_n} requests need {need_blocks} KV pages, the cache has \
             {kv_blocks}: expect preemptions (raise --kv-cache-memory)"
        );
    }
    let engine = start_engine(text.clone(), &opts)?;
    let mut rows = Vec::new();
    let mut run_id = 0u64;
    for &n in &levels {
        // Warm-up: the same concurrency, a few tokens (buffers, thread pool, page faults).
        run_id += 1;
        run_once(
            &engine,
            &w,
            n,
            run_id,
            args.warmup_tokens.max(2),
            None,
            false,
        )
        .with_context(|| format!("warm-up at concurrency {n}"))?;
        let mut runs = Vec::new();
        for rep in 0..args.repeat {
            run_id += 1;
            let label = format!("concurrency {n}, run {}/{}", rep + 1, args.repeat);
            let r = run_once(
                &engine,
                &w,
                n,
                run_id,
                args.gen_len,
                Some(&label),
                args.profile,
            )
            .with_context(|| format!("concurrency {n}"))?;
            eprintln!(
                "kiln: {label}: decode {:.1} tok/s, {:.1} s",
                r.decode_tps, r.wall_s
            );
            runs.push(r);
        }
        let decode_runs: Vec<f64> = runs.iter().map(|r| r.decode_tps).collect();
        let last = runs.last().expect("repeat >= 1");
        let profile_window = (last.decode_window_s, last.decode_window_s * last.decode_tps);
        let profile = if args.profile {
            kiln_engine::profile::report()
                .into_iter()
                .map(|(op, d, calls)| (op, d.as_secs_f64(), calls))
                .collect()
        } else {
            Vec::new()
        };
        let best = runs
            .into_iter()
            .max_by(|a, b| a.decode_tps.total_cmp(&b.decode_tps))
            .expect("repeat >= 1");
        rows.push(Row {
            n,
            best,
            decode_runs,
            profile,
            profile_window,
        });
    }
    engine.shutdown();
    let base = rows.iter().find(|r| r.n == 1).map(|r| r.best.decode_tps);
    let ratio = |r: &Row| base.map(|b| r.best.decode_tps / b);
    if args.json {
        let results: Vec<_> = rows
            .iter()
            .map(|r| {
                let b = &r.best;
                serde_json::json!({
                    "concurrency": r.n,
                    "decode_tokens_per_sec": b.decode_tps,
                    "decode_tokens_per_sec_runs": r.decode_runs,
                    "decode_vs_concurrency_1": ratio(r),
                    "decode_window_s": b.decode_window_s,
                    "output_tokens_per_sec": b.output_tps,
                    "prefill_tokens_per_sec": b.prefill_tps,
                    "ttft_ms_p50": percentile(&b.ttft_ms, 50.0),
                    "ttft_ms_p99": percentile(&b.ttft_ms, 99.0),
                    "itl_ms_p50": percentile(&b.itl_ms, 50.0),
                    "itl_ms_p99": percentile(&b.itl_ms, 99.0),
                    "wall_s": b.wall_s,
                    "generated_tokens": b.generated,
                    "preemptions": b.preemptions,
                    "cached_prompt_tokens": b.cached_tokens,
                    "profile": profile_json(r),
                })
            })
            .collect();
        let v = serde_json::json!({
            "model": args.model.model,
            "device": args.model.device,
            "threads": rayon_threads(),
            "prompt_len": args.prompt_len,
            "gen_len": args.gen_len,
            "repeat": args.repeat,
            "max_batched_tokens": opts.max_batched_tokens,
            "kv_blocks": kv_blocks,
            "results": results,
        });
        println!("{v}");
    } else {
        println!(
            "model {}  device {}  threads {}  prompt {}  gen {}  best of {}",
            args.model.model,
            args.model.device,
            rayon_threads(),
            args.prompt_len,
            args.gen_len,
            args.repeat
        );
        println!(
            "{:>5} {:>12} {:>7} {:>12} {:>12} {:>10} {:>10} {:>9} {:>9} {:>7}",
            "conc",
            "decode tok/s",
            "x N=1",
            "output tok/s",
            "prefill tok/s",
            "TTFT p50",
            "TTFT p99",
            "ITL p50",
            "ITL p99",
            "preempt"
        );
        for r in &rows {
            let b = &r.best;
            let x = ratio(r).map_or("-".to_string(), |x| format!("{x:.2}x"));
            println!(
                "{:>5} {:>12.1} {:>7} {:>12.1} {:>13.1} {:>8.1}ms {:>8.1}ms {:>7.1}ms {:>7.1}ms {:>7}",
                r.n,
                b.decode_tps,
                x,
                b.output_tps,
                b.prefill_tps,
                percentile(&b.ttft_ms, 50.0),
                percentile(&b.ttft_ms, 99.0),
                percentile(&b.itl_ms, 50.0),
                percentile(&b.itl_ms, 99.0),
                b.preemptions
            );
        }
        for r in rows.iter().filter(|r| !r.profile.is_empty()) {
            print_profile(r);
        }
        if rows.iter().any(|r| r.decode_runs.len() > 1) {
            println!("decode tok/s of every run:");
            for r in &rows {
                let runs: Vec<String> = r.decode_runs.iter().map(|x| format!("{x:.1}")).collect();
                println!("{:>5} {}", r.n, runs.join(", "));
            }
        }
    }
    Ok(())
}

/// Op time summed over the window, and the window's time no op accounts for (scheduling,
/// batch metadata, sampling, event delivery).
fn profile_split(r: &Row) -> (f64, f64) {
    let ops: f64 = r.profile.iter().map(|p| p.1).sum();
    (ops, (r.profile_window.0 - ops).max(0.0))
}

fn profile_json(r: &Row) -> serde_json::Value {
    if r.profile.is_empty() {
        return serde_json::Value::Null;
    }
    let (window, tokens) = r.profile_window;
    let (_, other) = profile_split(r);
    let ops: serde_json::Map<String, serde_json::Value> = r
        .profile
        .iter()
        .map(|(op, s, calls)| {
            (
                op.to_string(),
                serde_json::json!({"seconds": s, "calls": calls, "share": s / window}),
            )
        })
        .collect();
    serde_json::json!({
        "window_s": window,
        "tokens": tokens,
        "ops": ops,
        "outside_ops_s": other,
        "outside_ops_share": other / window,
    })
}

fn print_profile(r: &Row) {
    let (window, tokens) = r.profile_window;
    println!(
        "decode profile at concurrency {} (last run, {:.2} s window, {:.0} tokens):",
        r.n, window, tokens
    );
    let per_token = |s: f64| s * 1e6 / tokens.max(1.0);
    for (op, s, calls) in &r.profile {
        println!(
            "  {op:<14} {:>9.1} us/token {:>6.1}% {calls:>8} calls",
            per_token(*s),
            100.0 * s / window
        );
    }
    let (_, other) = profile_split(r);
    println!(
        "  {:<14} {:>9.1} us/token {:>6.1}%",
        "(outside ops)",
        per_token(other),
        100.0 * other / window
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_lists_parse_sorted_and_deduplicated() {
        assert_eq!(parse_concurrency("32,1,8,8").unwrap(), vec![1, 8, 32]);
        assert_eq!(parse_concurrency(" 4 ").unwrap(), vec![4]);
        assert!(parse_concurrency("0").is_err());
        assert!(parse_concurrency("1,,2").is_err());
        assert!(parse_concurrency("x").is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn prompts_differ_per_request_and_stay_in_the_vocabulary() {
        let a = prompt_ids(1, 0, 64, 100);
        let b = prompt_ids(1, 1, 64, 100);
        assert_ne!(a, b);
        assert_eq!(a, prompt_ids(1, 0, 64, 100));
        assert!(a.iter().chain(&b).all(|&t| t < 100));
    }

    #[test]
    fn decode_rate_counts_the_window_where_all_requests_decode() {
        let ms = Duration::from_millis;
        // Two requests: first tokens at 10 and 20 ms, then one every 10 ms until 60 / 70 ms.
        let tl = |start: u64| Timeline {
            tokens: (0..6).map(|i| ms(start + 10 * i)).collect(),
            preemptions: 0,
            cached_tokens: 0,
        };
        let s = summarize(&[tl(10), tl(20)], 4, 0.08);
        // Window (20 ms, 60 ms]: each request has 30, 40, 50, 60: two streams at 100 tok/s.
        assert!((s.decode_window_s - 0.04).abs() < 1e-12);
        assert!((s.decode_tps - 200.0).abs() < 1e-6);
        assert!((s.prefill_tps - 8.0 / 0.02).abs() < 1e-6);
        assert_eq!(percentile(&s.ttft_ms, 50.0), 10.0);
        assert_eq!(percentile(&s.itl_ms, 99.0), 10.0);
        assert_eq!(s.generated, 12);
    }
}
