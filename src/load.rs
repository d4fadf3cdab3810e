//! Model selection shared by the subcommands: catalog names, HF directories, GGUF files,
//! random weights.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_engine::{DType, Device};
use kiln_models::catalog::{self, Task};
use kiln_models::llama::LoadOptions;
use kiln_models::resolve::{self, ResolveOptions};
use kiln_models::text::TextModel;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// A catalog name (see `kiln models`), an HF model directory, or a .gguf file.
    pub model: String,
    /// cpu (cuda[:N] once the CUDA backend is built in).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weight dtype for matmuls: f32, bf16 or f16 (default: as stored; bf16 for GGUF).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Seeded random weights at the model's real shape (benchmarks, contract tests).
    #[arg(long)]
    pub random_weights: bool,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    pub weights_seed: u64,
    /// models.toml mapping catalog names to weight paths.
    #[arg(long)]
    pub models: Option<PathBuf>,
}

#[derive(Args)]
pub struct ModelsArgs {
    /// models.toml mapping catalog names to weight paths.
    #[arg(long)]
    pub models: Option<PathBuf>,
}

pub fn resolve_options(models: Option<PathBuf>) -> ResolveOptions {
    let mut opts = ResolveOptions::from_env();
    opts.models_file = models;
    opts
}

pub fn load_options(args: &ModelArgs) -> Result<LoadOptions> {
    let device = Device::parse(&args.device)?;
    let dtype = match &args.dtype {
        None => None,
        Some(s) => Some(
            DType::parse_float(s)
                .with_context(|| format!("--dtype {s:?}: expected f32, bf16 or f16"))?,
        ),
    };
    Ok(LoadOptions {
        dtype,
        device,
        progress: Some(report_progress),
    })
}

/// Load progress on stderr, about every tenth of the layers.
fn report_progress(done: usize, total: usize) {
    let step = (total / 10).max(1);
    if done.is_multiple_of(step) || done == total {
        eprintln!("kiln: loaded {done}/{total} layers");
    }
}

/// Loads a text-generation model, printing progress to stderr.
pub fn load_text_model(args: &ModelArgs) -> Result<TextModel> {
    let opts = load_options(args)?;
    let started = Instant::now();
    let model = if args.random_weights {
        let entry = catalog::lookup(&args.model).with_context(|| {
            format!(
                "--random-weights needs a catalog name; {:?} is not one (see `kiln models`)",
                args.model
            )
        })?;
        eprintln!(
            "kiln: building {} with random weights (seed {})",
            entry.name, args.weights_seed
        );
        TextModel::random_for(entry, args.weights_seed, opts)?
    } else {
        let resolved = resolve::resolve(&args.model, &resolve_options(args.models.clone()))?;
        if let Some(entry) = resolved.entry {
            if entry.task != Task::TextGeneration {
                bail!(
                    "{} is a {} model; `kiln run` generates text",
                    entry.name,
                    entry.task.as_str()
                );
            }
        }
        eprintln!("kiln: loading {}", resolved.source.path().display());
        TextModel::load(&resolved.source, opts)?
    };
    eprintln!(
        "kiln: loaded {} MB of weights in {:.2}s",
        model.model.weight_bytes() / 1_000_000,
        started.elapsed().as_secs_f64()
    );
    Ok(model)
}

pub fn list_models(args: ModelsArgs) -> Result<()> {
    let opts = resolve_options(args.models);
    println!("{:<52} {:<30} STATUS", "NAME", "TASK");
    for entry in catalog::all() {
        let status = match resolve::resolve(entry.name, &opts) {
            Ok(r) => format!("installed ({})", r.source.path().display()),
            Err(_) => "missing".to_string(),
        };
        println!("{:<52} {:<30} {status}", entry.name, entry.task.as_str());
    }
    Ok(())
}
