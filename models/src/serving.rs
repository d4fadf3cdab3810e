//! Serving a text model on the engine thread: the Llama `StepModel` over a paged K/V store,
//! and the KV-cache sizing (`--kv-cache-memory` or a share of free device memory).

use crate::error::{ModelError, Result};
use crate::llama::LlamaModel;
use crate::text::TextModel;
use kiln_engine::batch::ForwardBatch;
use kiln_engine::engine_thread::{Engine, EngineConfig, StepModel};
use kiln_engine::kv_cache::{blocks_for_budget, KvLayout, PagedKvStore, DEFAULT_BLOCK_SIZE};
use kiln_engine::scheduler::SchedulerConfig;
use kiln_engine::{DType, Device, Tensor};
use std::sync::Arc;

/// Host memory the CPU KV cache takes when no budget is given.
pub const DEFAULT_CPU_KV_BYTES: u64 = 512 << 20;
/// Share of free device memory the KV cache takes when no budget is given.
pub const DEFAULT_DEVICE_KV_FRACTION: f64 = 0.85;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Bytes for K/V pages; `None`: `DEFAULT_CPU_KV_BYTES` on the CPU, or
    /// `DEFAULT_DEVICE_KV_FRACTION` of the device's free memory.
    pub kv_cache_memory: Option<u64>,
    pub block_size: usize,
    pub max_batched_tokens: usize,
    pub max_seqs: usize,
    pub max_queue: usize,
    pub prefix_caching: bool,
    /// Decode steps padded to fixed shapes and replayed as CUDA graphs. `None`: on for CUDA
    /// devices unless `KILN_CUDA_GRAPHS=0`; `Some(true)` on the CPU runs the padded steps
    /// eagerly (tests); `Some(false)`: off.
    pub cuda_graphs: Option<bool>,
    /// dtype of the K/V pages; `None`: [`default_kv_dtype`].
    pub kv_dtype: Option<DType>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            kv_cache_memory: None,
            block_size: DEFAULT_BLOCK_SIZE,
            max_batched_tokens: 2048,
            max_seqs: 64,
            max_queue: 256,
            prefix_caching: true,
            cuda_graphs: None,
            kv_dtype: None,
        }
    }
}

/// A Llama model and its pages, stepped by the engine thread.
pub struct LlamaStepModel {
    model: Arc<TextModel>,
    kv: PagedKvStore,
}

impl StepModel for LlamaStepModel {
    fn forward(&mut self, batch: &ForwardBatch) -> std::result::Result<Tensor, String> {
        self.model
            .model
            .forward_batch(batch, &mut self.kv)
            .map_err(|e| e.to_string())
    }

    fn vocab_size(&self) -> usize {
        self.model.model.config().vocab_size
    }

    fn max_context(&self) -> usize {
        self.model.context_window()
    }
}

/// The K/V dtype when none is asked for: bf16 for a model with 16-bit weights on a GPU
/// (half the pages' memory and the decode kernel's traffic; keys and values are rounded once,
/// as a bf16 checkpoint's own activations are), f32 otherwise (the CPU stays exact against
/// the dense path and transformers).
pub fn default_kv_dtype(model: &LlamaModel) -> DType {
    let sixteen_bit = matches!(model.weight_dtype(), DType::BF16 | DType::F16);
    match model.device() {
        Device::Cuda(_) if sixteen_bit => DType::BF16,
        _ => DType::F32,
    }
}

/// How many pages to allocate, and the bytes that come to.
pub fn plan_kv_blocks(model: &LlamaModel, opts: &ServeOptions) -> Result<(usize, KvLayout)> {
    if opts.block_size == 0 {
        return Err(ModelError::InvalidInput(
            "block size must be at least 1".into(),
        ));
    }
    let device = model.device();
    let dtype = opts.kv_dtype.unwrap_or_else(|| default_kv_dtype(model));
    if !matches!(dtype, DType::F32 | DType::BF16) {
        return Err(ModelError::InvalidInput(format!(
            "a KV cache of {dtype} is not supported (f32 or bf16)"
        )));
    }
    let layout = model.kv_layout(opts.block_size, dtype);
    let budget = match (opts.kv_cache_memory, device.memory_info()?) {
        (Some(b), _) => b,
        (None, None) => DEFAULT_CPU_KV_BYTES,
        (None, Some((free, _))) => (free as f64 * DEFAULT_DEVICE_KV_FRACTION) as u64,
    };
    // One page of the budget is the store's scratch page (padding rows of graph steps).
    let blocks = blocks_for_budget(budget, layout.bytes_per_block()).saturating_sub(1);
    if blocks == 0 {
        return Err(ModelError::InvalidInput(format!(
            "a KV cache of {budget} bytes holds no page (one page of {} tokens takes {} bytes, \
             and one more is scratch)",
            opts.block_size,
            layout.bytes_per_block()
        )));
    }
    if let Some((free, _)) = device.memory_info()? {
        let need = (blocks as u64 + 1) * layout.bytes_per_block();
        if need > free as u64 {
            return Err(ModelError::InvalidInput(format!(
                "a KV cache of {:.2} GiB does not fit: {device} has {:.2} GiB free",
                need as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64
            )));
        }
    }
    Ok((blocks, layout))
}

/// Starts the engine thread for `model`: sizes and allocates the K/V pages, prints the page
/// count, and returns the handle.
pub fn start_engine(model: Arc<TextModel>, opts: &ServeOptions) -> Result<Engine> {
    let (num_blocks, layout) = plan_kv_blocks(&model.model, opts)?;
    let device = model.model.device();
    let mut kv = PagedKvStore::new(layout, num_blocks, device)?;
    if let Some(on) = opts.cuda_graphs {
        kv.graphs_mut().set_enabled(on);
    }
    eprintln!(
        "kiln: KV cache {num_blocks} pages of {} tokens ({} tokens, {:.1} MiB, {} on {device})",
        opts.block_size,
        num_blocks * opts.block_size,
        (num_blocks as u64 * layout.bytes_per_block()) as f64 / (1u64 << 20) as f64,
        layout.dtype,
    );
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            max_batched_tokens: opts.max_batched_tokens.max(1),
            max_seqs: opts.max_seqs.max(1),
            num_blocks,
            block_size: opts.block_size,
            prefix_caching: opts.prefix_caching,
        },
        max_queue: opts.max_queue,
    };
    Engine::start(Box::new(LlamaStepModel { model, kv }), config)
        .map_err(|e| ModelError::InvalidInput(format!("cannot start the engine thread: {e}")))
}
