use std::path::PathBuf;

/// Everything that can go wrong loading or running a model. Messages name the file, field or
/// value at fault and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error("unsupported architecture {0:?} (kiln runs LlamaForCausalLM and MistralForCausalLM)")]
    UnsupportedArchitecture(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Engine(#[from] kiln_engine::EngineError),
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
