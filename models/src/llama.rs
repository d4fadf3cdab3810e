//! Llama-family decoder (Llama 2/3, Mistral, SmolLM2): pre-norm blocks of GQA attention with
//! rotary embeddings and a SwiGLU MLP. Weights are named as in the HF checkpoint.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use kiln_engine::batch::ForwardBatch;
use kiln_engine::kv_cache::{KvLayout, PagedKvStore};
use kiln_engine::op::RopeStyle;
use kiln_engine::tensor::PagedBatchTensors;
use kiln_engine::{DType, Device, Op, Tensor};

/// Where a model's tensors come from (safetensors, GGUF, random); names are HF names.
pub trait TensorSource: Sync {
    /// The tensor, converted to `dtype` when given (as stored otherwise).
    fn tensor(&self, name: &str, dtype: Option<DType>) -> Result<Tensor>;
    fn contains(&self, name: &str) -> bool;
}

/// How to hold the weights.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// dtype of the matmul and embedding weights; `None` keeps the stored dtype.
    pub dtype: Option<DType>,
    pub device: Device,
    /// Called after each decoder layer is loaded with (layers done, layers in all).
    pub progress: Option<fn(usize, usize)>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: None,
            device: Device::Cpu,
            progress: None,
        }
    }
}

struct Attention {
    q_proj: Tensor,
    k_proj: Tensor,
    v_proj: Tensor,
    o_proj: Tensor,
}

struct Mlp {
    gate_proj: Tensor,
    up_proj: Tensor,
    down_proj: Tensor,
}

struct DecoderLayer {
    input_layernorm: Tensor,
    self_attn: Attention,
    post_attention_layernorm: Tensor,
    mlp: Mlp,
}

pub struct LlamaModel {
    config: LlamaConfig,
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    /// The embedding table itself when the embeddings are tied.
    lm_head: Tensor,
    inv_freq: Tensor,
    /// Where the weights, activations and KV cache live.
    device: Device,
}

/// The key/value pages of one sequence (`forward`): a paged store whose page table is simply
/// 0, 1, 2, ... so that single-sequence generation runs the same batched forward path.
pub struct KvCache {
    store: PagedKvStore,
    len: usize,
    capacity: usize,
}

/// Page size of single-sequence caches.
const SINGLE_SEQ_BLOCK: usize = 16;

impl KvCache {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets everything (keeps the memory).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Decode steps through the fixed-shape path (CUDA graphs; on by default on CUDA, and on
    /// the CPU it runs eagerly, for tests).
    pub fn set_fixed_shape_decode(&mut self, on: bool) {
        self.store.graphs_mut().set_enabled(on);
    }

    /// CUDA graphs captured for this cache's decode steps, and replays of them.
    pub fn graph_stats(&self) -> (usize, u64) {
        let g = self.store.graphs();
        (g.captured(), g.replays())
    }

    /// The one-sequence batch that appends `tokens` after what the cache holds.
    fn batch(&self, tokens: &[u32], logits: Logits) -> ForwardBatch {
        let (start, t) = (self.len, tokens.len());
        let end = start + t;
        let pages = end.div_ceil(SINGLE_SEQ_BLOCK);
        ForwardBatch {
            tokens: tokens.to_vec(),
            positions: (start as u32..end as u32).collect(),
            slot_mapping: (start as u32..end as u32).collect(),
            cu_seqlens: vec![0, t as u32],
            context_lens: vec![end as u32],
            block_tables: (0..pages as u32).collect(),
            max_blocks: pages,
            logits_rows: match logits {
                Logits::Last => vec![t as u32 - 1],
                Logits::All => (0..t as u32).collect(),
            },
            copies: Vec::new(),
        }
    }
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position: [vocab].
    Last,
    /// Every position: [tokens, vocab].
    All,
}

/// The model runs where its weights are; a device whose backend lacks an op the forward pass
/// needs is refused up front (never a silent run on another device).
fn check_device(opts: LoadOptions) -> Result<()> {
    if opts.device == Device::Cpu {
        return Ok(());
    }
    let backend = kiln_engine::backend::backend_for(opts.device);
    let weight = opts.dtype.unwrap_or(DType::BF16);
    let needs = [
        // The residual adds after o_proj and down_proj are fused into those matmuls.
        (
            Op::Matmul {
                bias: false,
                residual: true,
            },
            vec![DType::F32, weight, DType::F32],
        ),
        (
            Op::Attention {
                scale: 1.0,
                causal: true,
            },
            vec![DType::F32; 3],
        ),
    ];
    for (op, dtypes) in needs {
        if !backend.supports(&op, &dtypes) {
            return Err(ModelError::InvalidInput(format!(
                "Llama cannot run on {} yet: the {} backend has no {} kernel for {dtypes:?}",
                opts.device,
                backend.name(),
                op.name()
            )));
        }
    }
    Ok(())
}

/// Bytes of the weights `LlamaModel::load` holds for `config`: matrices and the embedding in
/// `matrix` dtype, norms in f32, lm_head counted only when it is not the tied embedding.
fn weight_bytes_estimate(c: &LlamaConfig, matrix: DType, untied_head: bool) -> usize {
    let h = c.hidden_size;
    let (q, kv) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let mat = |rows: usize, cols: usize| matrix.storage_bytes(rows * cols);
    let layer = 2 * mat(q, h)
        + 2 * mat(kv, h)
        + 3 * mat(c.intermediate_size, h)
        + DType::F32.storage_bytes(2 * h);
    let tables = if untied_head { 2 } else { 1 };
    tables * mat(c.vocab_size, h) + c.num_hidden_layers * layer + DType::F32.storage_bytes(h)
}

impl LlamaModel {
    pub fn load(src: &dyn TensorSource, config: LlamaConfig, opts: LoadOptions) -> Result<Self> {
        check_device(opts)?;
        // Tensors are read on the host and moved once to the model's device.
        let on_device = |t: Tensor| -> Result<Tensor> { Ok(t.to_device(opts.device)?) };
        let w = |name: &str| on_device(src.tensor(name, opts.dtype)?);
        let norm = |name: &str| on_device(src.tensor(name, Some(DType::F32))?);
        let expect = |t: Tensor, name: &str, shape: &[usize]| -> Result<Tensor> {
            if t.shape() == shape {
                Ok(t)
            } else {
                Err(ModelError::Config(format!(
                    "tensor {name} has shape {:?}, config says {shape:?}",
                    t.shape()
                )))
            }
        };
        let c = &config;
        let (h, d) = (c.hidden_size, c.head_dim);
        let q_dim = c.num_attention_heads * d;
        let kv_dim = c.num_key_value_heads * d;
        let embed_name = "model.embed_tokens.weight";
        // The embedding is read first: its dtype is the matrices' dtype, which sizes the
        // weights, checked against the device's free memory before anything is uploaded.
        let embed_host = src.tensor(embed_name, opts.dtype)?;
        if let Some((free, _total)) = opts.device.memory_info()? {
            let untied_head = src.contains("lm_head.weight") && !c.tie_word_embeddings;
            let needs = weight_bytes_estimate(c, embed_host.dtype(), untied_head);
            kiln_engine::memory::check_weights_fit(opts.device, needs, free)
                .map_err(ModelError::InvalidInput)?;
        }
        let embed_tokens = expect(on_device(embed_host)?, embed_name, &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let get = |suffix: &str, shape: &[usize], f32_norm: bool| -> Result<Tensor> {
                let name = format!("{p}.{suffix}");
                let t = if f32_norm { norm(&name)? } else { w(&name)? };
                expect(t, &name, shape)
            };
            layers.push(DecoderLayer {
                input_layernorm: get("input_layernorm.weight", &[h], true)?,
                self_attn: Attention {
                    q_proj: get("self_attn.q_proj.weight", &[q_dim, h], false)?,
                    k_proj: get("self_attn.k_proj.weight", &[kv_dim, h], false)?,
                    v_proj: get("self_attn.v_proj.weight", &[kv_dim, h], false)?,
                    o_proj: get("self_attn.o_proj.weight", &[h, q_dim], false)?,
                },
                post_attention_layernorm: get("post_attention_layernorm.weight", &[h], true)?,
                mlp: Mlp {
                    gate_proj: get("mlp.gate_proj.weight", &[c.intermediate_size, h], false)?,
                    up_proj: get("mlp.up_proj.weight", &[c.intermediate_size, h], false)?,
                    down_proj: get("mlp.down_proj.weight", &[h, c.intermediate_size], false)?,
                },
            });
            if let Some(report) = opts.progress {
                report(i + 1, c.num_hidden_layers);
            }
        }
        let norm_w = expect(norm("model.norm.weight")?, "model.norm.weight", &[h])?;
        // Some checkpoints say tie_word_embeddings but still ship lm_head; others (GGUF)
        // imply tying by its absence.
        let lm_head = if src.contains("lm_head.weight") && !c.tie_word_embeddings {
            expect(w("lm_head.weight")?, "lm_head.weight", &[c.vocab_size, h])?
        } else {
            embed_tokens.clone()
        };
        let inv_freq = on_device(Tensor::from_vec(config.rope_inv_freq(), &[d / 2])?)?;
        Ok(LlamaModel {
            embed_tokens,
            layers,
            norm: norm_w,
            lm_head,
            inv_freq,
            config,
            device: opts.device,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// dtype of the matrices (the embedding table's).
    pub fn weight_dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// Bytes held by the weights (memory-mapped or owned).
    pub fn weight_bytes(&self) -> usize {
        let size = |t: &Tensor| t.dtype().storage_bytes(t.elem_count());
        let mut total = size(&self.embed_tokens) + size(&self.norm);
        if !std::ptr::eq(self.lm_head.storage(), self.embed_tokens.storage()) {
            total += size(&self.lm_head);
        }
        for l in &self.layers {
            let a = &l.self_attn;
            let m = &l.mlp;
            total += [
                &l.input_layernorm,
                &l.post_attention_layernorm,
                &a.q_proj,
                &a.k_proj,
                &a.v_proj,
                &a.o_proj,
                &m.gate_proj,
                &m.up_proj,
                &m.down_proj,
            ]
            .into_iter()
            .map(size)
            .sum::<usize>();
        }
        total
    }

    /// A cache for up to `capacity` tokens (clamped to the context window).
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        let capacity = capacity.min(self.config.max_position_embeddings).max(1);
        let layout = self.kv_layout(SINGLE_SEQ_BLOCK, DType::F32);
        let store = PagedKvStore::new(layout, capacity.div_ceil(SINGLE_SEQ_BLOCK), self.device)?;
        Ok(KvCache {
            store,
            len: 0,
            capacity,
        })
    }

    /// Runs `tokens` after what `cache` already holds and appends their keys and values.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Tensor> {
        let t = tokens.len();
        if t == 0 {
            return Err(ModelError::InvalidInput("forward of zero tokens".into()));
        }
        if cache.len + t > cache.capacity {
            return Err(ModelError::InvalidInput(format!(
                "{} tokens exceed the KV cache of {} (context window {})",
                cache.len + t,
                cache.capacity,
                self.config.max_position_embeddings
            )));
        }
        let batch = cache.batch(tokens, logits);
        let out = self.forward_batch(&batch, &mut cache.store)?;
        cache.len += t;
        Ok(match logits {
            Logits::All => out,
            Logits::Last => out.reshape(&[self.config.vocab_size])?,
        })
    }

    /// The K/V page layout this model needs.
    pub fn kv_layout(&self, block_size: usize, dtype: DType) -> KvLayout {
        let c = &self.config;
        KvLayout {
            num_layers: c.num_hidden_layers,
            num_kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
            block_size,
            dtype,
        }
    }

    /// One continuous-batching step: every sequence's new tokens, keys and values written to
    /// their slots in `kv`, attention over each sequence's pages. Returns the logits
    /// [batch.logits_rows.len(), vocab] of the rows that sample.
    pub fn forward_batch(&self, batch: &ForwardBatch, kv: &mut PagedKvStore) -> Result<Tensor> {
        if batch.num_tokens() == 0 {
            return Err(ModelError::InvalidInput("forward of zero tokens".into()));
        }
        if let Some(&p) = batch.positions.iter().max() {
            if p as usize >= self.config.max_position_embeddings {
                return Err(ModelError::InvalidInput(format!(
                    "position {p} is past the context window ({})",
                    self.config.max_position_embeddings
                )));
            }
        }
        kv.copy_blocks(&batch.copies)?;
        if batch.is_decode_only() && kv.graphs_mut().enabled() {
            if let Some(padded) = GraphBatch::pad(batch, kv.scratch_block(), kv.layout()) {
                return self.forward_fixed_shape(&padded, batch.logits_rows.len(), kv);
            }
        }
        let d = self.device;
        let upload =
            |v: &[u32]| -> Result<Tensor> { Ok(Tensor::from_slice(v, &[v.len()])?.to_device(d)?) };
        let x = StepInputs {
            tokens: upload(&batch.tokens)?,
            positions: upload(&batch.positions)?,
            slots: upload(&batch.slot_mapping)?,
            paged: batch.paged_tensors(d)?,
            rows: upload(&batch.logits_rows)?,
        };
        self.step(&x, kv)
    }

    /// A decode step padded to a graph shape: replayed as a CUDA graph on CUDA (captured on
    /// first use of the shape), run eagerly on the CPU. Returns the first `rows` logits rows.
    fn forward_fixed_shape(
        &self,
        g: &GraphBatch,
        rows: usize,
        kv: &mut PagedKvStore,
    ) -> Result<Tensor> {
        let (seqs, blocks) = (g.tokens.len(), g.max_blocks);
        let inputs: [(&[u32], &[usize]); 7] = [
            (&g.tokens, &[seqs]),
            (&g.positions, &[seqs]),
            (&g.slots, &[seqs]),
            (&g.block_tables, &[seqs, blocks]),
            (&g.context_lens, &[seqs]),
            (&g.cu_seqlens, &[seqs + 1]),
            (&g.rows, &[seqs]),
        ];
        let mut graphs = std::mem::take(kv.graphs_mut());
        let out = graphs.run(&[seqs, blocks], &inputs, &mut |x| {
            let x = StepInputs {
                tokens: x[0].clone(),
                positions: x[1].clone(),
                slots: x[2].clone(),
                paged: PagedBatchTensors {
                    block_tables: x[3].clone(),
                    context_lens: x[4].clone(),
                    cu_seqlens: x[5].clone(),
                    decode_only: true,
                },
                rows: x[6].clone(),
            };
            self.step(&x, kv)
                .map(|logits| vec![logits])
                .map_err(|e| kiln_engine::EngineError::Data(e.to_string()))
        });
        *kv.graphs_mut() = graphs;
        let logits = out?.pop().expect("the step returns the logits");
        Ok(logits.narrow(0, 0, rows)?)
    }

    /// The forward pass over device inputs: every token's keys and values stored in its slot,
    /// attention over each sequence's pages, logits [rows, vocab] of `x.rows`.
    fn step(&self, x: &StepInputs, kv: &mut PagedKvStore) -> Result<Tensor> {
        let scale = self.attention_scale();
        let h = self.hidden_states(&x.tokens, &x.positions, &mut |i, q, k, v| {
            let (kc, vc) = kv.layer_mut(i);
            let (k, v) = if k.dtype() == kc.dtype() {
                (k, v)
            } else {
                (k.to_dtype(kc.dtype())?, v.to_dtype(kc.dtype())?)
            };
            kc.reshape_and_cache(&k, &x.slots)?;
            vc.reshape_and_cache(&v, &x.slots)?;
            Ok(q.paged_attention(kc, vc, &x.paged, scale, true)?)
        })?;
        self.logits(&h.embedding(&x.rows)?)
    }

    fn attention_scale(&self) -> f32 {
        1.0 / (self.config.head_dim as f32).sqrt()
    }

    /// Final norm and LM head.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let h = x.rms_norm(&self.norm, self.config.rms_norm_eps as f32)?;
        Ok(h.matmul_t(&self.lm_head)?)
    }

    /// The decoder stack over `tokens` at `positions`; `attend(layer, q, k, v)` stores the new
    /// keys and values wherever this forward keeps them and returns attention [t, heads, d].
    fn hidden_states(
        &self,
        tokens: &Tensor,
        positions: &Tensor,
        attend: &mut Attend<'_>,
    ) -> Result<Tensor> {
        let mut x = self.embed_tokens.embedding(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.decoder_layer(layer, &x, positions, &mut |q, k, v| attend(i, q, k, v))?;
        }
        Ok(x)
    }

    fn decoder_layer(
        &self,
        layer: &DecoderLayer,
        x: &Tensor,
        positions: &Tensor,
        attend: &mut dyn FnMut(Tensor, Tensor, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps as f32;
        let h = x.rms_norm(&layer.input_layernorm, eps)?;
        let x = self.self_attention(&layer.self_attn, &h, x, positions, attend)?;
        let h = x.rms_norm(&layer.post_attention_layernorm, eps)?;
        let m = &layer.mlp;
        let act = h
            .matmul_t(&m.gate_proj)?
            .silu_mul(&h.matmul_t(&m.up_proj)?)?;
        Ok(act.linear(&m.down_proj, None, Some(&x))?)
    }

    /// `residual` + the attention block's output (the add is fused into o_proj).
    fn self_attention(
        &self,
        a: &Attention,
        h: &Tensor,
        residual: &Tensor,
        positions: &Tensor,
        attend: &mut dyn FnMut(Tensor, Tensor, Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let t = h.dim(0)?;
        let (heads, kv_heads, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let rope = |x: Tensor| x.rope(positions, &self.inv_freq, RopeStyle::HalfSplit, 1.0);
        let q = rope(h.matmul_t(&a.q_proj)?.reshape(&[t, heads, d])?)?;
        let k = rope(h.matmul_t(&a.k_proj)?.reshape(&[t, kv_heads, d])?)?;
        let v = h.matmul_t(&a.v_proj)?.reshape(&[t, kv_heads, d])?;
        let out = attend(q, k, v)?.reshape(&[t, heads * d])?;
        Ok(out.linear(&a.o_proj, None, Some(residual))?)
    }
}

/// Stores layer `i`'s new keys and values and attends: (i, q, k, v) -> [t, heads, d].
type Attend<'a> = dyn FnMut(usize, Tensor, Tensor, Tensor) -> Result<Tensor> + 'a;

/// One step's inputs on the model's device.
struct StepInputs {
    tokens: Tensor,
    positions: Tensor,
    /// KV slot of each token.
    slots: Tensor,
    paged: PagedBatchTensors,
    /// Rows whose logits are wanted.
    rows: Tensor,
}

/// Sequences per decode graph: exact up to 8 (powers of two), then multiples of 8; above
/// this, decode steps run without a graph.
const MAX_GRAPH_SEQS: usize = 256;
/// The narrowest block table of a decode graph (wider ones are powers of two).
const MIN_GRAPH_BLOCKS: usize = 8;

/// The graph shape a decode batch of `seqs` sequences is padded to.
fn graph_seqs(seqs: usize) -> Option<usize> {
    match seqs {
        0 => None,
        1..=8 => Some(seqs.next_power_of_two()),
        n if n <= MAX_GRAPH_SEQS => Some(n.div_ceil(8) * 8),
        _ => None,
    }
}

/// A decode batch padded to a graph shape. Padding rows decode token 0 at position 0 with a
/// one-token context in the store's scratch page (their keys and values go there and their
/// logits are dropped), so they never touch a real sequence's pages; block tables are
/// widened with page 0, which no context length reaches.
#[derive(Debug, PartialEq)]
struct GraphBatch {
    tokens: Vec<u32>,
    positions: Vec<u32>,
    slots: Vec<u32>,
    block_tables: Vec<u32>,
    max_blocks: usize,
    context_lens: Vec<u32>,
    cu_seqlens: Vec<u32>,
    rows: Vec<u32>,
}

impl GraphBatch {
    /// `batch` (decode only) padded; `None` when it is too large for a graph.
    fn pad(batch: &ForwardBatch, scratch: usize, layout: KvLayout) -> Option<GraphBatch> {
        let real = batch.num_seqs();
        let seqs = graph_seqs(real)?;
        let blocks = batch
            .max_blocks
            .max(1)
            .next_power_of_two()
            .max(MIN_GRAPH_BLOCKS);
        let (scratch, pad) = (scratch as u32, seqs - real);
        let mut block_tables = Vec::with_capacity(seqs * blocks);
        for row in batch
            .block_tables
            .chunks(batch.max_blocks.max(1))
            .take(real)
        {
            block_tables.extend_from_slice(row);
            block_tables.extend(std::iter::repeat_n(0, blocks - row.len()));
        }
        for _ in 0..pad {
            block_tables.push(scratch);
            block_tables.extend(std::iter::repeat_n(0, blocks - 1));
        }
        let with = |v: &[u32], fill: u32| -> Vec<u32> {
            v.iter()
                .copied()
                .chain(std::iter::repeat_n(fill, pad))
                .collect()
        };
        let mut rows = batch.logits_rows.clone();
        rows.resize(seqs, 0);
        Some(GraphBatch {
            tokens: with(&batch.tokens, 0),
            positions: with(&batch.positions, 0),
            slots: with(&batch.slot_mapping, scratch * layout.block_size as u32),
            block_tables,
            max_blocks: blocks,
            context_lens: with(&batch.context_lens, 1),
            cu_seqlens: (0..=seqs as u32).collect(),
            rows,
        })
    }
}
#[cfg(test)]
mod load_tests {
    use super::*;
    use crate::random::RandomLlamaWeights;

    fn config(tied: bool) -> LlamaConfig {
        LlamaConfig {
            architecture: "LlamaForCausalLM".into(),
            vocab_size: 300,
            hidden_size: 64,
            intermediate_size: 96,
            num_hidden_layers: 3,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 16,
            max_position_embeddings: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            tie_word_embeddings: tied,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    /// The estimate checked against free device memory before an upload is what the loaded
    /// model holds.
    #[test]
    fn weight_estimate_matches_the_loaded_model() {
        for dtype in [DType::F32, DType::BF16] {
            let c = config(true);
            let src = RandomLlamaWeights::new(c.clone(), 3);
            let opts = LoadOptions {
                dtype: Some(dtype),
                ..LoadOptions::default()
            };
            let model = LlamaModel::load(&src, c.clone(), opts).unwrap();
            assert_eq!(
                weight_bytes_estimate(&c, dtype, false),
                model.weight_bytes()
            );
        }
        let (tied, untied) = (config(true), config(false));
        let table = 300 * 64 * 2;
        assert_eq!(
            weight_bytes_estimate(&untied, DType::BF16, true),
            weight_bytes_estimate(&tied, DType::BF16, false) + table
        );
    }
}

#[cfg(test)]
mod graph_batch_tests {
    use super::*;

    #[test]
    fn graph_shapes() {
        let got: Vec<Option<usize>> = [0, 1, 2, 3, 5, 8, 9, 16, 17, 256, 257]
            .into_iter()
            .map(graph_seqs)
            .collect();
        let want = [
            None,
            Some(1),
            Some(2),
            Some(4),
            Some(8),
            Some(8),
            Some(16),
            Some(16),
            Some(24),
            Some(256),
            None,
        ];
        assert_eq!(got, want);
    }

    /// Three decode rows padded to four: the real rows keep their data (tables widened with
    /// page 0), the padding row reads and writes only the scratch page.
    #[test]
    fn padding_rows_use_the_scratch_page() {
        let batch = ForwardBatch {
            tokens: vec![11, 12, 13],
            positions: vec![20, 3, 40],
            slot_mapping: vec![36, 51, 88],
            cu_seqlens: vec![0, 1, 2, 3],
            context_lens: vec![21, 4, 41],
            block_tables: vec![0, 2, 0, 3, 0, 0, 4, 1, 5],
            max_blocks: 3,
            logits_rows: vec![0, 1, 2],
            copies: vec![],
        };
        let layout = KvLayout {
            num_layers: 1,
            num_kv_heads: 1,
            head_dim: 4,
            block_size: 16,
            dtype: DType::F32,
        };
        let g = GraphBatch::pad(&batch, 9, layout).unwrap();
        let mut tables = vec![0u32; 4 * 8];
        tables[..3].copy_from_slice(&[0, 2, 0]);
        tables[8..11].copy_from_slice(&[3, 0, 0]);
        tables[16..19].copy_from_slice(&[4, 1, 5]);
        tables[24] = 9;
        assert_eq!(
            g,
            GraphBatch {
                tokens: vec![11, 12, 13, 0],
                positions: vec![20, 3, 40, 0],
                slots: vec![36, 51, 88, 9 * 16],
                block_tables: tables,
                max_blocks: 8,
                context_lens: vec![21, 4, 41, 1],
                cu_seqlens: vec![0, 1, 2, 3, 4],
                rows: vec![0, 1, 2, 0],
            }
        );
        let mut big = batch.clone();
        big.max_blocks = 9;
        big.block_tables = vec![1; 27];
        assert_eq!(GraphBatch::pad(&big, 9, layout).unwrap().max_blocks, 16);
    }
}
