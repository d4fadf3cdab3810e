//! `kiln bench-embed`: embeddings per second for a batch of generated texts (issue #6's
//! benchmark; scripts/bench-embeddings.sh runs sentence-transformers on the same texts).

use crate::load::resolve_options;
use anyhow::{anyhow, Result};
use clap::Args;
use kiln_engine::Device;
use kiln_models::run::service::{Prepared, Service, ServiceOptions};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct BenchEmbedArgs {
    /// An embeddings model's catalog name.
    #[arg(default_value = "@hf/sentence-transformers/all-minilm-l6-v2")]
    pub model: String,
    /// Texts per batch.
    #[arg(long, default_value_t = 100)]
    pub texts: usize,
    /// Words per text (about one token each with a WordPiece vocabulary).
    #[arg(long, default_value_t = 30)]
    pub words: usize,
    /// Timed batches (after one warm-up batch).
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub models: Option<PathBuf>,
}

const WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "river", "flows",
    "past", "old", "mill", "under", "grey", "sky", "and", "children", "play", "near", "bank",
];

/// Text `i` of a benchmark batch: `words` words from a fixed list, offset by `i` (the same
/// rule as scripts/bench_embeddings_peer.py).
pub fn bench_text(i: usize, words: usize) -> String {
    (0..words)
        .map(|w| WORDS[(i * 7 + w) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn bench_embed(args: BenchEmbedArgs) -> Result<()> {
    let service = Service::new(ServiceOptions {
        resolve: resolve_options(args.models.clone()),
        device: Device::parse(&args.device)?,
        ..Default::default()
    });
    let route = service.route(&args.model).map_err(|e| anyhow!(e.message))?;
    let texts: Vec<String> = (0..args.texts).map(|i| bench_text(i, args.words)).collect();
    let input = json!({ "text": texts });
    let run = || -> Result<usize> {
        match service
            .prepare(&route, &input)
            .map_err(|e| anyhow!(e.message))?
        {
            Prepared::Json(v) => Ok(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) as usize),
            Prepared::Text(_) => Err(anyhow!("{} is not an embeddings model", args.model)),
        }
    };
    let tokens = run()?;
    let started = Instant::now();
    for _ in 0..args.repeat {
        run()?;
    }
    let secs = started.elapsed().as_secs_f64() / args.repeat.max(1) as f64;
    println!(
        "kiln {} ({}): {} texts x ~{} tokens: {:.1} ms per batch, {:.1} embeddings/s",
        route.served_by.name,
        args.device,
        args.texts,
        tokens / args.texts.max(1),
        secs * 1e3,
        args.texts as f64 / secs
    );
    Ok(())
}
