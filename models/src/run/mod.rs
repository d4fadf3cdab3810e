//! The run API core, below its three faces (HTTP server, C ABI, CLI): parsing and validating
//! each task's JSON input, running it, building its JSON output and mapping errors to
//! Workers AI codes.

pub mod embeddings;
pub mod error;
mod fields;
pub mod json_constraint;
pub mod openai;
pub mod service;
pub mod text_generation;

pub use error::{success_envelope, RunError};
