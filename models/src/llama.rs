//! Llama-family decoder (Llama 2/3, Mistral, SmolLM2): pre-norm blocks of GQA attention with
//! rotary embeddings and a SwiGLU MLP. Weights are named as in the HF checkpoint.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
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

/// Per-layer key/value cache of one sequence: [capacity, kv_heads, head_dim] f32 each.
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    capacity: usize,
}

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
        let embed_tokens = expect(w(embed_name)?, embed_name, &[c.vocab_size, h])?;
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
        let c = &self.config;
        let capacity = capacity.min(c.max_position_embeddings).max(1);
        let shape = [capacity, c.num_key_value_heads, c.head_dim];
        let make = || Tensor::zeros(&shape, DType::F32, self.device);
        Ok(KvCache {
            k: (0..c.num_hidden_layers)
                .map(|_| make())
                .collect::<Result<_, _>>()?,
            v: (0..c.num_hidden_layers)
                .map(|_| make())
                .collect::<Result<_, _>>()?,
            len: 0,
            capacity,
        })
    }

    /// Runs `tokens` after what `cache` already holds and appends their keys and values.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, logits: Logits) -> Result<Tensor> {
        let c = &self.config;
        let t = tokens.len();
        if t == 0 {
            return Err(ModelError::InvalidInput("forward of zero tokens".into()));
        }
        let start = cache.len;
        if start + t > cache.capacity {
            return Err(ModelError::InvalidInput(format!(
                "{} tokens exceed the KV cache of {} (context window {})",
                start + t,
                cache.capacity,
                c.max_position_embeddings
            )));
        }
        let ids = Tensor::from_slice(tokens, &[t])?.to_device(self.device)?;
        let positions: Vec<u32> = (start..start + t).map(|p| p as u32).collect();
        let positions = Tensor::from_vec(positions, &[t])?.to_device(self.device)?;
        let mut x = self.embed_tokens.embedding(&ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.decoder_layer(layer, &x, &positions, cache, i)?;
        }
        cache.len = start + t;
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.narrow(0, t - 1, 1)?,
        };
        let h = x.rms_norm(&self.norm, c.rms_norm_eps as f32)?;
        let out = h.matmul_t(&self.lm_head)?;
        Ok(match logits {
            Logits::All => out,
            Logits::Last => out.reshape(&[c.vocab_size])?,
        })
    }

    fn decoder_layer(
        &self,
        layer: &DecoderLayer,
        x: &Tensor,
        positions: &Tensor,
        cache: &mut KvCache,
        index: usize,
    ) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps as f32;
        let h = x.rms_norm(&layer.input_layernorm, eps)?;
        let x = self.self_attention(&layer.self_attn, &h, x, positions, cache, index)?;
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
        cache: &mut KvCache,
        index: usize,
    ) -> Result<Tensor> {
        let c = &self.config;
        let t = h.dim(0)?;
        let (heads, kv_heads, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let rope = |x: Tensor| x.rope(positions, &self.inv_freq, RopeStyle::HalfSplit, 1.0);
        let q = rope(h.matmul_t(&a.q_proj)?.reshape(&[t, heads, d])?)?;
        let k = rope(h.matmul_t(&a.k_proj)?.reshape(&[t, kv_heads, d])?)?;
        let v = h.matmul_t(&a.v_proj)?.reshape(&[t, kv_heads, d])?;
        let start = cache.len;
        cache.k[index].copy_rows_from(start, &k)?;
        cache.v[index].copy_rows_from(start, &v)?;
        let keys = cache.k[index].narrow(0, 0, start + t)?;
        let values = cache.v[index].narrow(0, 0, start + t)?;
        let scale = 1.0 / (d as f32).sqrt();
        let out = q.attention(&keys, &values, scale, true)?;
        let out = out.reshape(&[t, heads * d])?;
        Ok(out.linear(&a.o_proj, None, Some(residual))?)
    }
}
