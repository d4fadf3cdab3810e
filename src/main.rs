//! `kiln`: run, list and benchmark models from the command line.

mod bench;
mod bench_concurrency;
mod bench_embed;
mod bench_ops;
mod embed;
mod load;
mod run;
mod serve;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "kiln: an inference engine with hand-written kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text: streams the reply to stdout, speed to stderr.
    Run(run::RunArgs),
    /// List the model catalog with each model's task and whether its weights are installed.
    Models(load::ModelsArgs),
    /// Measure prefill and decode speed and peak memory.
    Bench(bench::BenchArgs),
    /// Time every op of the engine's op set on one device (GB/s, TFLOP/s).
    BenchOps(bench_ops::BenchOpsArgs),
    /// Serve the Workers AI run API and OpenAI-compatible routes over HTTP.
    Serve(serve::ServeArgs),
    /// Embed texts with an embeddings model: one vector per line, or --json.
    Embed(embed::EmbedArgs),
    /// Embeddings per second for a generated batch of texts.
    BenchEmbed(bench_embed::BenchEmbedArgs),
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Models(args) => load::list_models(args),
        Command::Bench(args) => bench::bench(args),
        Command::BenchOps(args) => bench_ops::bench_ops(args),
        Command::Serve(args) => serve::serve(args),
        Command::Embed(args) => embed::embed(args),
        Command::BenchEmbed(args) => bench_embed::bench_embed(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kiln: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// glibc malloc serves blocks of 128 KiB and more with fresh `mmap`s and, by default, also
/// hands freed heap tops back to the kernel at 128 KiB. A CPU forward pass allocates
/// activations of tens of MiB per op (MiniLM on 100 texts: 20 MB for one FFN output), so
/// every op paid for page faults and kernel zeroing of memory it had just freed: 190 K minor
/// faults and 0.6 s of system time in two batches of `kiln bench-embed --texts 100`. Serving
/// blocks up to 32 MiB from the heap and keeping up to 1 GiB of freed heap cut that to 19 K
/// faults and 0.08 s (docs/BENCHMARKS.md). A `MALLOC_*` environment variable or
/// `GLIBC_TUNABLES` set by the user wins: then nothing is changed.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_tuned = std::env::vars_os().any(|(k, _)| {
            let k = k.to_string_lossy();
            k.starts_with("MALLOC_") || k == "GLIBC_TUNABLES"
        });
        if !user_tuned {
            // SAFETY: mallopt only changes malloc's thresholds; called before any thread
            // starts. A value glibc refuses leaves its default, which is harmless.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            }
        }
    }
}
