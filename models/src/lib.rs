//! kiln models: weights (safetensors, GGUF), configs, tokenizers and chat templates, the
//! architectures (one module each) and the catalog of Workers AI model names.

pub mod bert;
pub mod catalog;
pub mod chat_template;
pub mod config;
pub mod detok;
pub mod error;
pub mod gguf;
pub mod llama;
pub mod random;
pub mod resolve;
pub mod run;
pub mod serving;
pub mod text;
pub mod tokenizer;
pub mod weights;

pub use error::ModelError;
