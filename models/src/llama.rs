//! Llama-family decoder (Llama 2/3, Mistral, SmolLM2): pre-norm blocks of GQA attention with
//! rotary embeddings and a SwiGLU MLP. Weights are named as in the HF checkpoint.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use kiln_engine::batch::ForwardBatch;
use kiln_engine::kv_cache::{KvLayout, PagedKvStore};
use kiln_engine::op::RopeStyle;
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
        let meta = batch.paged_tensors(self.device)?;
        let slots = Tensor::from_slice(&batch.slot_mapping, &[batch.num_tokens()])?
            .to_device(self.device)?;
        let scale = self.attention_scale();
        let x = self.hidden_states(&batch.tokens, &batch.positions, &mut |i, q, k, v| {
            let (kc, vc) = kv.layer_mut(i);
            kc.reshape_and_cache(&k, &slots)?;
            vc.reshape_and_cache(&v, &slots)?;
            Ok(q.paged_attention(kc, vc, &meta, scale, true)?)
        })?;
        let rows = Tensor::from_slice(&batch.logits_rows, &[batch.logits_rows.len()])?
            .to_device(self.device)?;
        self.logits(&x.embedding(&rows)?)
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
        tokens: &[u32],
        positions: &[u32],
        attend: &mut Attend<'_>,
    ) -> Result<Tensor> {
        let t = tokens.len();
        let ids = Tensor::from_slice(tokens, &[t])?.to_device(self.device)?;
        let positions = Tensor::from_slice(positions, &[t])?.to_device(self.device)?;
        let mut x = self.embed_tokens.embedding(&ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.decoder_layer(layer, &x, &positions, &mut |q, k, v| attend(i, q, k, v))?;
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
