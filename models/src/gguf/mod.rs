//! GGUF import: the container reader, GGML dequantization, the Llama-architecture mapping
//! onto HF names/shapes/config, and the tokenizer and chat template kept in GGUF metadata.

mod cursor;
pub mod dequant;
pub mod llama;
pub mod reader;
pub mod tokenizer;
pub mod types;
pub mod value;

#[cfg(test)]
mod test_util;

pub use dequant::{dequantize, dequantize_into, DequantError};
pub use llama::{
    gguf_to_hf_name, hf_to_gguf_name, llama_config, llama_tensor_names, load_llama_tensor,
    load_llama_tensor_raw,
};
pub use reader::{GgufFile, GgufTensorInfo};
pub use tokenizer::{chat_template, special_tokens, tokenizer_from_gguf, GgufSpecialTokens};
pub use types::GgmlType;
pub use value::{GgufArray, GgufValue};
