//! `kiln run`: stream a reply.

use crate::load::{load_text_model, ModelArgs};
use anyhow::Result;
use clap::Args;
use kiln_engine::sampler::SamplingParams;
use kiln_models::chat_template::ChatMessage;
use kiln_models::text::Prompt;
use std::io::Write;

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The user message (or, with --raw, the whole prompt).
    #[arg(long, short)]
    pub prompt: String,
    /// A system message before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Send the prompt as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Args, Clone)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
            max_tokens: self.max_tokens,
        }
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let params = args.sampling.params();
    // Bad sampling values fail before the (slow) model load.
    params.validate()?;
    let model = load_text_model(&args.model)?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage::new("system", system.as_str()));
    }
    messages.push(ChatMessage::new("user", args.prompt.as_str()));
    let prompt = if args.raw || model.chat_template.is_none() {
        if model.chat_template.is_none() && !args.raw {
            eprintln!("kiln: this model has no chat template; sending the prompt raw");
        }
        Prompt::Raw(&args.prompt)
    } else {
        Prompt::Chat(&messages)
    };
    let ids = model.prompt_ids(&prompt)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let generation = model.generate(&ids, &params, &mut |piece| {
        // A closed stdout (e.g. `| head`) stops generation instead of failing it.
        out.write_all(piece.as_bytes()).is_ok() && out.flush().is_ok()
    })?;
    let _ = writeln!(out);
    eprintln!(
        "kiln: prompt {} tokens at {:.1} tok/s, generated {} tokens at {:.1} tok/s ({:?})",
        generation.prompt_ids.len(),
        generation.prompt_tokens_per_sec(),
        generation.ids.len(),
        generation.decode_tokens_per_sec(),
        generation.finish_reason,
    );
    Ok(())
}
