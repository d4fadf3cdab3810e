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
