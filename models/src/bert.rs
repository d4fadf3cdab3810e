//! BERT encoder (Devlin et al. 2018; BertModel and sentence-transformers checkpoints):
//! embeddings (word + token type + position, then LayerNorm) and post-LN encoder layers of
//! bidirectional multi-head self-attention and a GELU feed-forward block. A batch is flat
//! tokens + `cu_seqlens` (no padding): attention is varlen and non-causal, each sequence sees
//! only itself. Weights are named as in the HF checkpoint, with or without the `bert.` prefix.

use crate::catalog::Pooling;
use crate::config::{opt_usize, read_json, req_usize};
use crate::error::{ModelError, Result};
use crate::llama::{LoadOptions, TensorSource};
use kiln_engine::op::GeluApprox;
use kiln_engine::{DType, Device, Op, Tensor};
use serde_json::Value;
use std::path::Path;

/// The shape and hyper-parameters of a BERT encoder, from HF config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// `hidden_act`: "gelu" is the exact (erf) GELU, "gelu_new" / "gelu_pytorch_tanh" the tanh
    /// approximation.
    pub hidden_act: GeluApprox,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
}

impl BertConfig {
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        Self::from_json(&read_json(&path)?)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
    }

    pub fn from_json(v: &Value) -> Result<Self, String> {
        if let Some(t) = v.get("model_type").and_then(Value::as_str) {
            if t != "bert" {
                return Err(format!("model_type {t:?} is not a BERT encoder (\"bert\")"));
            }
        }
        if let Some(p) = v.get("position_embedding_type").and_then(Value::as_str) {
            if p != "absolute" {
                return Err(format!(
                    "position_embedding_type {p:?} is not supported (only \"absolute\")"
                ));
            }
        }
        if v.get("is_decoder").and_then(Value::as_bool) == Some(true) {
            return Err("is_decoder: true is not supported (kiln runs BERT as an encoder)".into());
        }
        let hidden_act = match v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu")
        {
            "gelu" => GeluApprox::Erf,
            "gelu_new" | "gelu_pytorch_tanh" => GeluApprox::Tanh,
            other => {
                return Err(format!(
                    "hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh)"
                ))
            }
        };
        let hidden_size = req_usize(v, "hidden_size")?;
        let num_attention_heads = req_usize(v, "num_attention_heads")?;
        if hidden_size == 0 || num_attention_heads == 0 || hidden_size % num_attention_heads != 0 {
            return Err(format!(
                "hidden_size {hidden_size} is not a positive multiple of num_attention_heads {num_attention_heads}"
            ));
        }
        let layer_norm_eps = match v.get("layer_norm_eps") {
            None | Some(Value::Null) => 1e-12,
            Some(x) => x
                .as_f64()
                .filter(|e| *e > 0.0)
                .ok_or_else(|| format!("layer_norm_eps must be a positive number, got {x}"))?,
        };
        Ok(BertConfig {
            vocab_size: req_usize(v, "vocab_size")?,
            hidden_size,
            num_hidden_layers: req_usize(v, "num_hidden_layers")?,
            num_attention_heads,
            intermediate_size: req_usize(v, "intermediate_size")?,
            hidden_act,
            max_position_embeddings: opt_usize(v, "max_position_embeddings")?.unwrap_or(512),
            type_vocab_size: opt_usize(v, "type_vocab_size")?.unwrap_or(2),
            layer_norm_eps,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// A linear layer with bias (`dense`, `query`, ...).
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn forward(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        Ok(x.linear(&self.weight, Some(&self.bias), residual)?)
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

struct Embeddings {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    layer_norm: LayerNorm,
}

/// `attention.self`: the query, key and value projections.
struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
}

/// `attention.output`, `output`: dense, then LayerNorm of (dense + the block's input).
struct AddNorm {
    dense: Linear,
    layer_norm: LayerNorm,
}

struct Layer {
    attention: SelfAttention,
    attention_output: AddNorm,
    intermediate: Linear,
    output: AddNorm,
}

pub struct BertModel {
    config: BertConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    device: Device,
}

/// A device whose backend lacks an op the forward pass needs is refused up front.
fn check_device(opts: LoadOptions) -> Result<()> {
    if opts.device == Device::Cpu {
        return Ok(());
    }
    let backend = kiln_engine::backend::backend_for(opts.device);
    let weight = opts.dtype.unwrap_or(DType::F32);
    let f32x = |n| vec![DType::F32; n];
    let needs = [
        (Op::Embedding, vec![DType::F32, DType::U32]),
        (
            Op::Matmul {
                bias: true,
                residual: true,
            },
            vec![DType::F32, weight, DType::F32, DType::F32],
        ),
        (Op::Add, f32x(2)),
        (Op::LayerNorm { eps: 1e-12 }, f32x(3)),
        (
            Op::Gelu {
                approx: GeluApprox::Erf,
            },
            f32x(1),
        ),
        (
            Op::VarlenAttention {
                scale: 1.0,
                causal: false,
            },
            vec![DType::F32, DType::F32, DType::F32, DType::U32, DType::U32],
        ),
    ];
    for (op, dtypes) in needs {
        if !backend.supports(&op, &dtypes) {
            return Err(ModelError::InvalidInput(format!(
                "BERT cannot run on {} yet: the {} backend has no {} kernel for {dtypes:?}",
                opts.device,
                backend.name(),
                op.name()
            )));
        }
    }
    Ok(())
}

impl BertModel {
    /// Loads `embeddings.*` and `encoder.layer.N.*` (or `bert.embeddings.*`, ...); the pooler,
    /// when the checkpoint has one, is not used. Matrices take `opts.dtype`; embeddings,
    /// biases and norms are f32.
    pub fn load(src: &dyn TensorSource, config: BertConfig, opts: LoadOptions) -> Result<Self> {
        check_device(opts)?;
        let c = &config;
        let prefix = if !src.contains("embeddings.word_embeddings.weight")
            && src.contains("bert.embeddings.word_embeddings.weight")
        {
            "bert."
        } else {
            ""
        };
        let get = |name: &str, dtype: Option<DType>, shape: &[usize]| -> Result<Tensor> {
            let name = format!("{prefix}{name}");
            let t = src.tensor(&name, dtype)?;
            if t.shape() != shape {
                return Err(ModelError::Config(format!(
                    "tensor {name} has shape {:?}, config says {shape:?}",
                    t.shape()
                )));
            }
            Ok(t.to_device(opts.device)?)
        };
        let f32 = Some(DType::F32);
        let linear = |p: &str, out: usize, inp: usize| -> Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{p}.weight"), opts.dtype, &[out, inp])?,
                bias: get(&format!("{p}.bias"), f32, &[out])?,
            })
        };
        let h = c.hidden_size;
        let layer_norm = |p: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: get(&format!("{p}.weight"), f32, &[h])?,
                bias: get(&format!("{p}.bias"), f32, &[h])?,
            })
        };
        let embeddings = Embeddings {
            word_embeddings: get("embeddings.word_embeddings.weight", f32, &[c.vocab_size, h])?,
            position_embeddings: get(
                "embeddings.position_embeddings.weight",
                f32,
                &[c.max_position_embeddings, h],
            )?,
            token_type_embeddings: get(
                "embeddings.token_type_embeddings.weight",
                f32,
                &[c.type_vocab_size, h],
            )?,
            layer_norm: layer_norm("embeddings.LayerNorm")?,
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                attention: SelfAttention {
                    query: linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: linear(&format!("{p}.attention.self.value"), h, h)?,
                },
                attention_output: AddNorm {
                    dense: linear(&format!("{p}.attention.output.dense"), h, h)?,
                    layer_norm: layer_norm(&format!("{p}.attention.output.LayerNorm"))?,
                },
                intermediate: linear(&format!("{p}.intermediate.dense"), c.intermediate_size, h)?,
                output: AddNorm {
                    dense: linear(&format!("{p}.output.dense"), h, c.intermediate_size)?,
                    layer_norm: layer_norm(&format!("{p}.output.LayerNorm"))?,
                },
            });
            if let Some(report) = opts.progress {
                report(i + 1, c.num_hidden_layers);
            }
        }
        Ok(BertModel {
            config,
            embeddings,
            layers,
            device: opts.device,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The last hidden states [total tokens, hidden] of a batch of sequences, concatenated in
    /// order (sequence s owns the rows of its tokens). Token types are all 0 and each
    /// sequence's positions are 0..len.
    pub fn forward(&self, batch: &[Vec<u32>]) -> Result<Tensor> {
        let c = &self.config;
        if batch.is_empty() {
            return Err(ModelError::InvalidInput(
                "BERT forward of zero sequences".into(),
            ));
        }
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut cu_seqlens = vec![0u32];
        for (s, seq) in batch.iter().enumerate() {
            if seq.is_empty() {
                return Err(ModelError::InvalidInput(format!("sequence {s} is empty")));
            }
            if seq.len() > c.max_position_embeddings {
                return Err(ModelError::InvalidInput(format!(
                    "sequence {s} has {} tokens; the model takes at most {}",
                    seq.len(),
                    c.max_position_embeddings
                )));
            }
            if let Some(&id) = seq.iter().find(|&&id| id as usize >= c.vocab_size) {
                return Err(ModelError::InvalidInput(format!(
                    "token id {id} in sequence {s} is outside the vocabulary ({})",
                    c.vocab_size
                )));
            }
            tokens.extend_from_slice(seq);
            positions.extend(0..seq.len() as u32);
            cu_seqlens.push(tokens.len() as u32);
        }
        let t = tokens.len();
        let on_device = |data: &[u32]| -> Result<Tensor> {
            Ok(Tensor::from_slice(data, &[data.len()])?.to_device(self.device)?)
        };
        let ids = on_device(&tokens)?;
        let positions = on_device(&positions)?;
        let token_types = on_device(&vec![0u32; t])?;
        let cu_seqlens = on_device(&cu_seqlens)?;
        let mut x = self.embeddings(&ids, &token_types, &positions)?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &cu_seqlens)?;
        }
        Ok(x)
    }

    /// One embedding per sequence: the last hidden states pooled (`Cls`: the first token's,
    /// `Mean`: the average over the sequence's tokens) and L2-normalised.
    pub fn embed(&self, batch: &[Vec<u32>], pooling: Pooling) -> Result<Vec<Vec<f32>>> {
        let h = self.config.hidden_size;
        let hidden = self
            .forward(batch)?
            .to_device(Device::Cpu)?
            .to_vec::<f32>()?;
        let mut start = 0;
        let mut out = Vec::with_capacity(batch.len());
        for seq in batch {
            let rows = &hidden[start * h..(start + seq.len()) * h];
            start += seq.len();
            let mut v = match pooling {
                Pooling::Cls => rows[..h].to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0f32; h];
                    for row in rows.chunks_exact(h) {
                        sum.iter_mut().zip(row).for_each(|(s, x)| *s += x);
                    }
                    let n = seq.len() as f32;
                    sum.iter_mut().for_each(|s| *s /= n);
                    sum
                }
            };
            l2_normalize(&mut v);
            out.push(v);
        }
        Ok(out)
    }

    /// LayerNorm(word + token type + position).
    fn embeddings(&self, ids: &Tensor, token_types: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let e = &self.embeddings;
        let x = e
            .word_embeddings
            .embedding(ids)?
            .add(&e.token_type_embeddings.embedding(token_types)?)?
            .add(&e.position_embeddings.embedding(positions)?)?;
        self.layer_norm(&x, &e.layer_norm)
    }

    fn layer_norm(&self, x: &Tensor, n: &LayerNorm) -> Result<Tensor> {
        Ok(x.layer_norm(&n.weight, &n.bias, self.config.layer_norm_eps as f32)?)
    }

    /// Post-LN: x = LN(x + Attention(x)); x = LN(x + W2 gelu(W1 x)).
    fn layer(&self, layer: &Layer, x: &Tensor, cu_seqlens: &Tensor) -> Result<Tensor> {
        let attn = self.self_attention(&layer.attention, x, cu_seqlens)?;
        let x = self.add_norm(&layer.attention_output, &attn, x)?;
        let act = layer
            .intermediate
            .forward(&x, None)?
            .gelu(self.config.hidden_act)?;
        self.add_norm(&layer.output, &act, &x)
    }

    /// LayerNorm(dense(h) + residual); the add is fused into the matmul.
    fn add_norm(&self, block: &AddNorm, h: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let y = block.dense.forward(h, Some(residual))?;
        self.layer_norm(&y, &block.layer_norm)
    }

    /// softmax(q kᵀ / √d) v per head, each sequence over its own tokens -> [t, hidden].
    fn self_attention(&self, a: &SelfAttention, x: &Tensor, cu_seqlens: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let t = x.dim(0)?;
        let (heads, d) = (c.num_attention_heads, c.head_dim());
        let split =
            |p: &Linear| -> Result<Tensor> { Ok(p.forward(x, None)?.reshape(&[t, heads, d])?) };
        let (q, k, v) = (split(&a.query)?, split(&a.key)?, split(&a.value)?);
        let scale = 1.0 / (d as f32).sqrt();
        let out = q.varlen_attention(&k, &v, cu_seqlens, cu_seqlens, scale, false)?;
        Ok(out.reshape(&[t, c.hidden_size])?)
    }
}

/// v / max(‖v‖, 1e-12), as torch's `F.normalize` (sentence-transformers' Normalize).
fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "bert", "vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1,
               "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
               "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12})
    }

    #[test]
    fn reads_hf_config() {
        let c = BertConfig::from_json(&base()).unwrap();
        assert_eq!(c.hidden_act, GeluApprox::Erf);
        assert_eq!((c.head_dim(), c.type_vocab_size), (4, 2));
        for tanh in ["gelu_new", "gelu_pytorch_tanh"] {
            let mut v = base();
            v["hidden_act"] = json!(tanh);
            assert_eq!(
                BertConfig::from_json(&v).unwrap().hidden_act,
                GeluApprox::Tanh
            );
        }
    }

    #[test]
    fn rejects_unsupported_values() {
        let cases = [
            (
                "hidden_act",
                json!("relu"),
                "hidden_act \"relu\" is not supported",
            ),
            ("model_type", json!("roberta"), "not a BERT encoder"),
            (
                "position_embedding_type",
                json!("relative_key"),
                "only \"absolute\"",
            ),
            ("num_attention_heads", json!(3), "not a positive multiple"),
            ("layer_norm_eps", json!(-1.0), "layer_norm_eps must be"),
            ("vocab_size", json!(null), "missing vocab_size"),
        ];
        for (key, value, want) in cases {
            let mut v = base();
            v[key] = value;
            let err = BertConfig::from_json(&v).unwrap_err();
            assert!(err.contains(want), "{key}: {err}");
        }
    }

    #[test]
    fn l2_normalize_gives_unit_norm_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0; 3];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0; 3]);
    }
}
