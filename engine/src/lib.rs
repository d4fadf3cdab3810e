//! kiln engine: tensors, devices and backends, the op set, sampling.
//!
//! Model code calls tensor ops (`Tensor::matmul_t`, `rms_norm`, ...); each op is an `Op` value
//! validated once by `Op::check` and run by the tensor's device backend.

pub mod backend;
pub mod batch;
pub mod dtype;
pub mod engine_thread;
pub mod error;
pub mod graph;
pub mod kv_cache;
pub mod layout;
pub mod memory;
pub mod op;
pub mod profile;
pub mod sampler;
pub mod scheduler;
pub mod storage;
pub mod tensor;

#[cfg(test)]
mod linear_tests;

pub use backend::{Backend, Device};
pub use dtype::{DType, Element};
pub use error::{EngineError, Result};
pub use op::Op;
pub use tensor::Tensor;
