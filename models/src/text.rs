//! Text generation: a Llama-family model with its tokenizer, chat template and eos ids, and
//! the prefill + decode loop with sampling and streaming detokenisation.

use crate::catalog::CatalogEntry;
use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::config::LlamaConfig;
use crate::detok::IncrementalDecoder;
use crate::error::{ModelError, Result};
use crate::gguf::{self, GgufFile};
use crate::llama::{LlamaModel, LoadOptions, Logits};
use crate::resolve::ModelSource;
use crate::tokenizer::Tokenizer;
use crate::weights::SafetensorsWeights;
use kiln_engine::sampler::{Sampler, SamplingParams};
use kiln_engine::{DType, Device};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What to generate from.
pub enum Prompt<'a> {
    /// Text tokenized as is (with the tokenizer's special tokens, e.g. BOS).
    Raw(&'a str),
    /// Messages rendered through the model's chat template.
    Chat(&'a [ChatMessage]),
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token (not included in the output).
    Eos,
    /// `max_tokens` reached.
    Length,
    /// The context window is full.
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl Generation {
    pub fn prompt_tokens_per_sec(&self) -> f64 {
        self.prompt_ids.len() as f64 / self.prefill_secs.max(1e-9)
    }

    /// Decode rate over the tokens after the first (the first comes from the prefill).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.ids.len().saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

pub struct TextModel {
    pub model: LlamaModel,
    pub tokenizer: Arc<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
    pub eos_ids: Vec<u32>,
}

impl TextModel {
    /// An HF directory: config.json, safetensors, tokenizer.json, tokenizer_config.json.
    pub fn from_hf_dir(dir: &Path, opts: LoadOptions) -> Result<Self> {
        let config = LlamaConfig::from_hf_dir(dir)?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        let template_path = dir.join("tokenizer_config.json");
        let chat_template = if template_path.exists() {
            ChatTemplate::from_tokenizer_config(&template_path)?
        } else {
            None
        };
        let weights = SafetensorsWeights::open_dir(dir)?;
        let model = LlamaModel::load(&weights, config, opts)?;
        Ok(Self::assemble(model, tokenizer, chat_template))
    }

    /// A llama-architecture GGUF file. Q8_0 / Q4_0 / Q4_1 weights stay quantized unless
    /// `opts.dtype` asks for a float dtype (then they are dequantized exactly at load); other
    /// formats are dequantized to bf16. Tokenizer and template come from its metadata.
    pub fn from_gguf(path: &Path, opts: LoadOptions) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = gguf::llama_config(&file)?;
        let tokenizer = Tokenizer::from_hf(gguf::tokenizer_from_gguf(&file)?);
        let specials = gguf::special_tokens(&file)?;
        let chat_template = match gguf::chat_template(&file) {
            Some(source) => {
                let name = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
                Some(ChatTemplate::new(
                    &source,
                    name(specials.bos),
                    name(specials.eos),
                )?)
            }
            None => None,
        };
        // The quantized block formats have CPU kernels only: on a GPU, dequantize to bf16.
        let opts = match (opts.device, opts.dtype) {
            (Device::Cpu, _) | (_, Some(_)) => opts,
            (_, None) => LoadOptions {
                dtype: Some(DType::BF16),
                ..opts
            },
        };
        let model = LlamaModel::load(&file, config, opts)?;
        Ok(Self::assemble(model, tokenizer, chat_template))
    }

    /// A model of `config`'s shape with seeded random weights.
    pub fn random(
        config: LlamaConfig,
        tokenizer: Tokenizer,
        chat_template: Option<ChatTemplate>,
        seed: u64,
        opts: LoadOptions,
    ) -> Result<Self> {
        let src = crate::random::RandomLlamaWeights::new(config.clone(), seed);
        let model = LlamaModel::load(&src, config, opts)?;
        Ok(Self::assemble(model, tokenizer, chat_template))
    }

    /// A resolved model's files (an HF directory or a GGUF).
    pub fn load(source: &ModelSource, opts: LoadOptions) -> Result<Self> {
        match source {
            ModelSource::HfDir(dir) => Self::from_hf_dir(dir, opts),
            ModelSource::Gguf(path) => Self::from_gguf(path, opts),
        }
    }

    /// A catalog model's real shape with seeded random weights and a byte-level tokenizer.
    pub fn random_for(entry: &CatalogEntry, seed: u64, opts: LoadOptions) -> Result<Self> {
        let config = entry.llama_config().ok_or_else(|| {
            ModelError::InvalidInput(format!("{} is not a Llama-family text model", entry.name))
        })?;
        let tokenizer = crate::random::byte_level_tokenizer(config.vocab_size)?;
        Self::random(config, tokenizer, None, seed, opts)
    }

    fn assemble(
        model: LlamaModel,
        tokenizer: Tokenizer,
        chat_template: Option<ChatTemplate>,
    ) -> Self {
        let eos_ids = model.config().eos_token_ids.clone();
        TextModel {
            model,
            tokenizer: Arc::new(tokenizer),
            chat_template,
            eos_ids,
        }
    }

    pub fn context_window(&self) -> usize {
        self.model.config().max_position_embeddings
    }

    /// Token ids of a prompt. Chat prompts go through the chat template (which writes BOS
    /// itself, so the tokenizer adds no special tokens), as transformers' apply_chat_template.
    pub fn prompt_ids(&self, prompt: &Prompt<'_>) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Raw(text) => self.tokenizer.encode(text, true),
            Prompt::Chat(messages) => {
                let template = self.chat_template.as_ref().ok_or_else(|| {
                    ModelError::InvalidInput(
                        "this model has no chat template; send a raw prompt instead".into(),
                    )
                })?;
                let text = template.render(messages, true)?;
                self.tokenizer.encode(&text, false)
            }
        }
    }

    /// Generates after `prompt_ids`. `on_text` receives each complete piece of text as it is
    /// decoded and returns false to stop early.
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        params: &SamplingParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        params
            .validate()
            .map_err(|e| ModelError::InvalidInput(e.to_string()))?;
        let window = self.context_window();
        if prompt_ids.is_empty() {
            return Err(ModelError::InvalidInput("the prompt is empty".into()));
        }
        if prompt_ids.len() >= window {
            return Err(ModelError::InvalidInput(format!(
                "the prompt is {} tokens; the context window of this model is {window} (prompt plus at least one generated token)",
                prompt_ids.len()
            )));
        }
        let vocab = self.model.config().vocab_size;
        if let Some(bad) = prompt_ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(ModelError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let capacity = (prompt_ids.len() + params.max_tokens).min(window);
        let mut cache = self.model.new_cache(capacity)?;
        let mut sampler = Sampler::new(params.clone(), prompt_ids.len())
            .map_err(|e| ModelError::InvalidInput(e.to_string()))?;
        let mut decoder =
            IncrementalDecoder::with_context(self.tokenizer.clone(), prompt_ids, true)?;
        let mut history = prompt_ids.to_vec();
        let mut ids = Vec::new();
        let mut text = String::new();

        let started = Instant::now();
        let mut logits = self.model.forward(prompt_ids, &mut cache, Logits::Last)?;
        let prefill_secs = started.elapsed().as_secs_f64();
        let decode_start = Instant::now();
        let finish_reason = loop {
            // On a GPU the logits stay there: only the token id comes back.
            let next = sampler.sample_tensor(&logits, &history)?;
            if self.eos_ids.contains(&next) {
                break FinishReason::Eos;
            }
            ids.push(next);
            history.push(next);
            if let Some(piece) = decoder.push(next)? {
                text.push_str(&piece);
                if !on_text(&piece) {
                    break FinishReason::Cancelled;
                }
            }
            if ids.len() >= params.max_tokens {
                break FinishReason::Length;
            }
            if cache.len() >= cache.capacity() {
                break FinishReason::ContextFull;
            }
            logits = self.model.forward(&[next], &mut cache, Logits::Last)?;
        };
        let rest = decoder.finish()?;
        if !rest.is_empty() {
            text.push_str(&rest);
            on_text(&rest);
        }
        Ok(Generation {
            prompt_ids: prompt_ids.to_vec(),
            ids,
            text,
            finish_reason,
            prefill_secs,
            decode_secs: decode_start.elapsed().as_secs_f64(),
        })
    }
}
