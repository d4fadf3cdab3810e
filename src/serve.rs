//! `kiln serve`: the Workers AI run API (and OpenAI-compatible routes) over HTTP.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use kiln_models::run::service::{Service, ServiceSettings};
use kiln_models::serving::ServeOptions;
use kiln_server::{Server, ServerConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// models.toml mapping catalog names to weight paths, or a directory laid out like
    /// $KILN_HOME (models.toml, models/<name>/).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight dtype for matmuls: f32, bf16 or f16 (default: as stored; bf16 for GGUF on GPUs).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on every API route.
    #[arg(long)]
    pub api_token: Option<String>,
    /// Serve each task's default model at its real shape with seeded random weights.
    #[arg(long)]
    pub random_weights: bool,
    /// Answer 5007 for catalog names whose weights are not installed (no stand-in model).
    #[arg(long)]
    pub strict: bool,
    /// Bytes of KV cache per model (default: 512 MiB on the CPU, 85% of free GPU memory).
    #[arg(long)]
    pub kv_cache_memory: Option<u64>,
    /// Tokens per engine step over all requests (chunked prefill + decodes).
    #[arg(long, default_value_t = 2048)]
    pub max_batched_tokens: usize,
    /// Requests generated at once per model.
    #[arg(long, default_value_t = 64)]
    pub max_seqs: usize,
    /// Requests queued beyond those running; more are answered 429 (code 3040).
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// KV page size in tokens.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Turn prefix caching off.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Run decode steps without CUDA graphs (same as KILN_CUDA_GRAPHS=0).
    #[arg(long)]
    pub no_cuda_graphs: bool,
    /// dtype of the K/V pages: auto (bf16 for 16-bit weights on a GPU, else f32), f32, bf16.
    #[arg(long, default_value = "auto", value_parser = parse_kv_dtype)]
    pub kv_cache_dtype: KvDtypeArg,
    /// Per-request time limit in seconds (408, code 3007).
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Request body limit in bytes (413, code 3006).
    #[arg(long, default_value_t = kiln_server::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let options = ServiceSettings {
        models: args.models.clone(),
        device: Some(args.device.clone()),
        dtype: args.dtype.clone(),
        strict: args.strict,
        random_weights: args.random_weights,
        serve: ServeOptions {
            kv_cache_memory: args.kv_cache_memory,
            block_size: args.block_size,
            max_batched_tokens: args.max_batched_tokens,
            max_seqs: args.max_seqs,
            max_queue: args.max_queue,
            prefix_caching: !args.no_prefix_caching,
            cuda_graphs: args.no_cuda_graphs.then_some(false),
            kv_dtype: args.kv_cache_dtype.0,
        },
    }
    .into_options()
    .map_err(|e| anyhow!("{}", e.message))?;
    let service = Arc::new(Service::new(options));
    for (name, r) in service.preload() {
        match r {
            Ok(()) => eprintln!("kiln: serving {name}"),
            Err(e) => eprintln!("kiln: {name} not loaded: {}", e.message),
        }
    }
    let config = ServerConfig {
        host: args.host,
        port: args.port,
        api_token: args.api_token,
        body_limit: args.body_limit,
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(service, config.clone())
            .await
            .with_context(|| format!("binding {}:{}", config.host, config.port))?;
        let addr = server.local_addr()?;
        eprintln!("kiln: listening on http://{addr} (POST /ai/run/{{model}}, /v1/chat/completions; GET /metrics)");
        server.run(kiln_server::shutdown_signal()).await?;
        eprintln!("kiln: stopped");
        Ok(())
    })
}

/// `--kv-cache-dtype`: `None` is auto.
#[derive(Clone, Copy, Debug)]
pub struct KvDtypeArg(Option<kiln_engine::DType>);

fn parse_kv_dtype(s: &str) -> Result<KvDtypeArg, String> {
    use kiln_engine::DType;
    match s {
        "auto" => Ok(KvDtypeArg(None)),
        "f32" => Ok(KvDtypeArg(Some(DType::F32))),
        "bf16" => Ok(KvDtypeArg(Some(DType::BF16))),
        other => Err(format!("{other:?}: expected auto, f32 or bf16")),
    }
}
