//! `kiln embed`: sentence embeddings from the command line (the Workers AI embeddings task).

use crate::load::resolve_options;
use anyhow::{bail, Result};
use clap::Args;
use kiln_engine::Device;
use kiln_models::run::service::{Prepared, Service, ServiceOptions};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct EmbedArgs {
    /// A catalog name of an embeddings model, e.g. @cf/baai/bge-base-en-v1.5.
    pub model: String,
    /// The texts to embed (at most 100).
    #[arg(required = true)]
    pub text: Vec<String>,
    /// mean or cls (default: the model's own).
    #[arg(long)]
    pub pooling: Option<String>,
    /// Print the Workers AI output ({shape, data, pooling}) instead of one vector per line.
    #[arg(long)]
    pub json: bool,
    /// cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// models.toml mapping catalog names to weight paths.
    #[arg(long)]
    pub models: Option<PathBuf>,
}

pub fn embed(args: EmbedArgs) -> Result<()> {
    let service = Service::new(ServiceOptions {
        resolve: resolve_options(args.models.clone()),
        device: Device::parse(&args.device)?,
        ..Default::default()
    });
    let route = service
        .route(&args.model)
        .map_err(|e| anyhow::anyhow!(e.message))?;
    if route.served_by.name != route.requested.name {
        eprintln!(
            "kiln: {} is served by {}",
            route.requested.name,
            route.served_by_label()
        );
    }
    let mut input = json!({ "text": args.text });
    if let Some(p) = &args.pooling {
        input["pooling"] = json!(p);
    }
    let out = match service
        .prepare(&route, &input)
        .map_err(|e| anyhow::anyhow!(e.message))?
    {
        Prepared::Json(v) => v,
        Prepared::Text(_) => bail!("{} is not an embeddings model", route.requested.name),
    };
    if args.json {
        println!("{out}");
    } else {
        for row in out["data"].as_array().into_iter().flatten() {
            let nums: Vec<String> = row
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| format!("{:.6}", x.as_f64().unwrap_or(f64::NAN)))
                .collect();
            println!("{}", nums.join(" "));
        }
    }
    Ok(())
}
