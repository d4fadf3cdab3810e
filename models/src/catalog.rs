//! The Workers AI model names kiln answers to, with each model's task, architecture and the
//! properties the models-search API reports.
//!
//! The table is static so that the server can list and validate names without touching the
//! disk; whether a model is installed is `resolve`'s business.

use crate::config::{LlamaConfig, RopeScaling};

/// A Workers AI task, as named in its model catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    TextGeneration,
    TextEmbeddings,
    SpeechRecognition,
    ImageToText,
    ImageClassification,
    Translation,
    TextToImage,
}

impl Task {
    pub const ALL: [Task; 7] = [
        Task::TextGeneration,
        Task::TextEmbeddings,
        Task::SpeechRecognition,
        Task::ImageToText,
        Task::ImageClassification,
        Task::Translation,
        Task::TextToImage,
    ];

    /// The name Workers AI uses (models-search `task.name`).
    pub fn as_str(self) -> &'static str {
        match self {
            Task::TextGeneration => "Text Generation",
            Task::TextEmbeddings => "Text Embeddings",
            Task::SpeechRecognition => "Automatic Speech Recognition",
            Task::ImageToText => "Image-to-Text",
            Task::ImageClassification => "Image Classification",
            Task::Translation => "Translation",
            Task::TextToImage => "Text-to-Image",
        }
    }

    /// Parse a Workers AI task name, ignoring ASCII case (the search API's `task` filter).
    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The network family that runs a model; one module per family in this crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Llama-family decoders: Llama, Mistral, SmolLM2.
    Llama,
    Llava,
    Whisper,
    /// BERT encoders: BGE, MiniLM.
    Bert,
    ResNet,
    M2M100,
    StableDiffusionXl,
}

/// How token vectors become one embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pooling {
    Mean,
    Cls,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
        }
    }
}

/// The real hyper-parameters of a model, for `--random-weights` at the true shape.
#[derive(Clone, Debug, PartialEq)]
pub enum ArchConfig {
    Llama(LlamaConfig),
}

/// One model name and what kiln knows about it without reading any file.
#[derive(Debug)]
pub struct CatalogEntry {
    /// The Workers AI name, e.g. "@cf/meta/llama-3.1-8b-instruct".
    pub name: &'static str,
    pub task: Task,
    pub arch: Arch,
    pub description: &'static str,
    /// Prompt + completion tokens; Workers AI's documented figure where it has one, else the
    /// model's own maximum positions.
    pub context_window: Option<usize>,
    pub max_input_tokens: Option<usize>,
    /// Embedding width.
    pub output_dimensions: Option<usize>,
    /// Embeddings only: pooling used when the request names none.
    pub default_pooling: Option<Pooling>,
    /// "ORG/NAME" of the checkpoint in the HF hub cache, when the checkpoint is known.
    pub hf_repo: Option<&'static str>,
    /// Builds the real config; `None` until kiln has a config type for the architecture.
    pub config: Option<fn() -> ArchConfig>,
    /// The model kiln serves for its task when none is named (one that installs locally).
    pub is_default: bool,
}

impl CatalogEntry {
    /// The real config shape, if kiln has one for this model.
    pub fn real_config(&self) -> Option<ArchConfig> {
        self.config.map(|f| f())
    }

    /// The real Llama-family config, if this is a Llama-family model.
    pub fn llama_config(&self) -> Option<LlamaConfig> {
        match self.real_config()? {
            ArchConfig::Llama(c) => Some(c),
        }
    }
}

/// Other spellings of catalog names. Workers AI serves Mistral v0.2 as `@hf/...`.
const ALIASES: &[(&str, &str)] = &[(
    "@hf/mistral/mistral-7b-instruct-v0.2",
    "@cf/mistral/mistral-7b-instruct-v0.2",
)];

/// Find an entry by its Workers AI name (exact, or a known alias; case-insensitive because
/// the platform's names are all lower case and users type them by hand).
pub fn lookup(name: &str) -> Option<&'static CatalogEntry> {
    let name = name.trim();
    let canonical = ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map_or(name, |(_, target)| target);
    CATALOG
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(canonical))
}

/// Every entry, in catalog order.
pub fn all() -> &'static [CatalogEntry] {
    CATALOG
}

/// The model served for `task` when a request names none: the locally installable default
/// where there is one, else the first entry of that task.
pub fn default_for(task: Task) -> Option<&'static CatalogEntry> {
    CATALOG
        .iter()
        .find(|e| e.task == task && e.is_default)
        .or_else(|| CATALOG.iter().find(|e| e.task == task))
}

/// Llama 3.1 / 3.3 share vocabulary, special ids and RoPE scaling; only the size differs.
fn llama3(
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
) -> LlamaConfig {
    LlamaConfig {
        architecture: "LlamaForCausalLM".into(),
        vocab_size: 128_256,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim: 128,
        max_position_embeddings: 131_072,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }),
        tie_word_embeddings: false,
        bos_token_id: Some(128_000),
        // <|end_of_text|>, <|eom_id|>, <|eot_id|> as in the Instruct generation_config.json.
        eos_token_ids: vec![128_001, 128_008, 128_009],
    }
}

fn llama_3_1_8b() -> ArchConfig {
    ArchConfig::Llama(llama3(4096, 14_336, 32, 32, 8))
}

fn llama_3_3_70b() -> ArchConfig {
    ArchConfig::Llama(llama3(8192, 28_672, 80, 64, 8))
}

fn mistral_7b_v02() -> ArchConfig {
    ArchConfig::Llama(LlamaConfig {
        architecture: "MistralForCausalLM".into(),
        vocab_size: 32_000,
        hidden_size: 4096,
        intermediate_size: 14_336,
        num_hidden_layers: 32,
        num_attention_heads: 32,
        num_key_value_heads: 8,
        head_dim: 128,
        max_position_embeddings: 32_768,
        rms_norm_eps: 1e-5,
        rope_theta: 1_000_000.0,
        rope_scaling: None,
        tie_word_embeddings: false,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    })
}

fn smollm2_135m() -> ArchConfig {
    ArchConfig::Llama(LlamaConfig {
        architecture: "LlamaForCausalLM".into(),
        vocab_size: 49_152,
        hidden_size: 576,
        intermediate_size: 1536,
        num_hidden_layers: 30,
        num_attention_heads: 9,
        num_key_value_heads: 3,
        head_dim: 64,
        max_position_embeddings: 8192,
        rms_norm_eps: 1e-5,
        rope_theta: 100_000.0,
        rope_scaling: None,
        tie_word_embeddings: true,
        // <|im_start|> and <|im_end|> of its ChatML template.
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    })
}

/// Defaults for the fields most entries leave empty.
const BASE: CatalogEntry = CatalogEntry {
    name: "",
    task: Task::TextGeneration,
    arch: Arch::Llama,
    description: "",
    context_window: None,
    max_input_tokens: None,
    output_dimensions: None,
    default_pooling: None,
    hf_repo: None,
    config: None,
    is_default: false,
};

const fn bge(
    name: &'static str,
    repo: &'static str,
    dims: usize,
    description: &'static str,
) -> CatalogEntry {
    CatalogEntry {
        name,
        task: Task::TextEmbeddings,
        arch: Arch::Bert,
        description,
        max_input_tokens: Some(512),
        output_dimensions: Some(dims),
        // Workers AI pools BGE with "mean" unless the request asks for "cls".
        default_pooling: Some(Pooling::Mean),
        hf_repo: Some(repo),
        ..BASE
    }
}

static CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "@hf/huggingfacetb/smollm2-135m-instruct",
        description: "SmolLM2 135M Instruct: a small Llama-architecture chat model; kiln's \
                      local default for text generation.",
        context_window: Some(8192),
        hf_repo: Some("HuggingFaceTB/SmolLM2-135M-Instruct"),
        config: Some(smollm2_135m),
        is_default: true,
        ..BASE
    },
    CatalogEntry {
        name: "@cf/meta/llama-3.1-8b-instruct",
        description: "Meta Llama 3.1 8B Instruct: multilingual instruction-tuned chat model.",
        context_window: Some(7968),
        hf_repo: Some("meta-llama/Llama-3.1-8B-Instruct"),
        config: Some(llama_3_1_8b),
        ..BASE
    },
    CatalogEntry {
        name: "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
        description: "Meta Llama 3.3 70B Instruct, quantized to fp8 for speed.",
        context_window: Some(24_000),
        hf_repo: Some("meta-llama/Llama-3.3-70B-Instruct"),
        config: Some(llama_3_3_70b),
        ..BASE
    },
    CatalogEntry {
        name: "@cf/mistral/mistral-7b-instruct-v0.2",
        description: "Mistral 7B Instruct v0.2: 32k positions, rope theta 1e6, no sliding \
                      window.",
        // Workers AI documents max input 3072 and max total 4096 tokens for this model.
        context_window: Some(4096),
        max_input_tokens: Some(3072),
        hf_repo: Some("mistralai/Mistral-7B-Instruct-v0.2"),
        config: Some(mistral_7b_v02),
        ..BASE
    },
    CatalogEntry {
        name: "@cf/llava-hf/llava-1.5-7b-hf",
        task: Task::ImageToText,
        arch: Arch::Llava,
        description: "LLaVA 1.5 7B: CLIP ViT-L/336 vision tower + Vicuna 7B language model.",
        context_window: Some(4096),
        hf_repo: Some("llava-hf/llava-1.5-7b-hf"),
        ..BASE
    },
    CatalogEntry {
        name: "@cf/openai/whisper-tiny-en",
        task: Task::SpeechRecognition,
        arch: Arch::Whisper,
        description: "Whisper tiny.en: English-only speech recognition; kiln's local default.",
        hf_repo: Some("openai/whisper-tiny.en"),
        is_default: true,
        ..BASE
    },
    CatalogEntry {
        name: "@cf/openai/whisper",
        task: Task::SpeechRecognition,
        arch: Arch::Whisper,
        description: "Whisper: multilingual speech recognition and translation.",
        // Workers AI does not say which Whisper size backs this name.
        hf_repo: None,
        ..BASE
    },
    CatalogEntry {
        name: "@cf/openai/whisper-large-v3-turbo",
        task: Task::SpeechRecognition,
        arch: Arch::Whisper,
        description: "Whisper large-v3 turbo: large-v3 encoder with a 4-layer decoder.",
        hf_repo: Some("openai/whisper-large-v3-turbo"),
        ..BASE
    },
    CatalogEntry {
        name: "@hf/sentence-transformers/all-minilm-l6-v2",
        task: Task::TextEmbeddings,
        arch: Arch::Bert,
        description: "all-MiniLM-L6-v2: 384-dimensional sentence embeddings; kiln's local \
                      default for embeddings.",
        // BERT's 512 positions (sentence-transformers itself truncates at 256).
        max_input_tokens: Some(512),
        output_dimensions: Some(384),
        default_pooling: Some(Pooling::Mean),
        hf_repo: Some("sentence-transformers/all-MiniLM-L6-v2"),
        is_default: true,
        ..BASE
    },
    bge(
        "@cf/baai/bge-small-en-v1.5",
        "BAAI/bge-small-en-v1.5",
        384,
        "BAAI general embedding, small English v1.5: 384-dimensional vectors.",
    ),
    bge(
        "@cf/baai/bge-base-en-v1.5",
        "BAAI/bge-base-en-v1.5",
        768,
        "BAAI general embedding, base English v1.5: 768-dimensional vectors.",
    ),
    bge(
        "@cf/baai/bge-large-en-v1.5",
        "BAAI/bge-large-en-v1.5",
        1024,
        "BAAI general embedding, large English v1.5: 1024-dimensional vectors.",
    ),
    CatalogEntry {
        name: "@cf/microsoft/resnet-50",
        task: Task::ImageClassification,
        arch: Arch::ResNet,
        description: "ResNet-50 trained on ImageNet-1k: 1000-class image classification.",
        hf_repo: Some("microsoft/resnet-50"),
        ..BASE
    },
    CatalogEntry {
        name: "@cf/meta/m2m100-1.2b",
        task: Task::Translation,
        arch: Arch::M2M100,
        description: "M2M100 1.2B: many-to-many translation between 100 languages.",
        context_window: Some(1024),
        hf_repo: Some("facebook/m2m100_1.2B"),
        ..BASE
    },
    CatalogEntry {
        name: "@cf/stabilityai/stable-diffusion-xl-base-1.0",
        task: Task::TextToImage,
        arch: Arch::StableDiffusionXl,
        description: "Stable Diffusion XL base 1.0: text-to-image diffusion (catalog only; \
                      kiln does not run it yet).",
        hf_repo: Some("stabilityai/stable-diffusion-xl-base-1.0"),
        ..BASE
    },
];

/// Up to `max` catalog names closest to `name` (edit distance), for "did you mean" errors.
pub fn closest_names(name: &str, max: usize) -> Vec<&'static str> {
    let wanted = name.trim().to_ascii_lowercase();
    let mut scored: Vec<(usize, &'static str)> = CATALOG
        .iter()
        .map(|e| {
            // Users often omit the "@cf/org/" prefix, so also score the last segment.
            let short = e.name.rsplit('/').next().unwrap_or(e.name);
            let d = if e.name.contains(wanted.as_str()) {
                0
            } else {
                edit_distance(&wanted, e.name).min(edit_distance(&wanted, short))
            };
            (d, e.name)
        })
        .collect();
    scored.sort();
    scored.into_iter().take(max).map(|(_, n)| n).collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
