//! kiln kernels.
//!
//! `cpu` holds the CPU twin of every kernel: plain Rust over slices, parallel with rayon, the
//! reference every CUDA kernel is checked against. Each twin takes its sizes in a small params
//! struct and assumes its inputs were validated by the engine (lengths match the params).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
