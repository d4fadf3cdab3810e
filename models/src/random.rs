//! Seeded random weights at a model's real shape, for benchmarks and contract tests
//! (`--random-weights`). Each tensor's values depend only on the seed and the tensor name.

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::llama::TensorSource;
use half::bf16;
use kiln_engine::{DType, Tensor};
use rayon::prelude::*;

pub struct RandomLlamaWeights {
    config: LlamaConfig,
    seed: u64,
}

impl RandomLlamaWeights {
    pub fn new(config: LlamaConfig, seed: u64) -> Self {
        RandomLlamaWeights { config, seed }
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        let c = &self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let q = c.num_attention_heads * c.head_dim;
        let kv = c.num_key_value_heads * c.head_dim;
        let shape = match name {
            "model.embed_tokens.weight" | "lm_head.weight" => vec![c.vocab_size, h],
            "model.norm.weight" => vec![h],
            _ => {
                let rest = name.strip_prefix("model.layers.")?;
                let (layer, suffix) = rest.split_once('.')?;
                if layer.parse::<usize>().ok()? >= c.num_hidden_layers {
                    return None;
                }
                match suffix {
                    "input_layernorm.weight" | "post_attention_layernorm.weight" => vec![h],
                    "self_attn.q_proj.weight" => vec![q, h],
                    "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, h],
                    "self_attn.o_proj.weight" => vec![h, q],
                    "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![i, h],
                    "mlp.down_proj.weight" => vec![h, i],
                    _ => return None,
                }
            }
        };
        Some(shape)
    }
}

impl TensorSource for RandomLlamaWeights {
    fn tensor(&self, name: &str, dtype: Option<DType>) -> Result<Tensor> {
        let shape = self
            .shape_of(name)
            .ok_or_else(|| ModelError::NotFound(format!("random weights have no tensor {name}")))?;
        let n: usize = shape.iter().product();
        if name.ends_with("norm.weight") {
            return Ok(Tensor::from_vec(vec![1f32; n], &shape)?);
        }
        // Uniform in ±sqrt(3)·std keeps activations in a realistic range at any depth.
        let fan_in = *shape.last().unwrap_or(&1) as f32;
        let bound = (3.0f32).sqrt() / fan_in.sqrt();
        let seed = self.seed ^ fnv1a(name);
        let value = |i: usize| (unit(seed, i as u64) * 2.0 - 1.0) * bound;
        match dtype.unwrap_or(DType::BF16) {
            DType::F32 => {
                let v: Vec<f32> = (0..n).into_par_iter().map(value).collect();
                Ok(Tensor::from_vec(v, &shape)?)
            }
            DType::BF16 => {
                let v: Vec<bf16> = (0..n)
                    .into_par_iter()
                    .map(|i| bf16::from_f32(value(i)))
                    .collect();
                Ok(Tensor::from_vec(v, &shape)?)
            }
            other => {
                let v: Vec<f32> = (0..n).into_par_iter().map(value).collect();
                Ok(Tensor::from_vec(v, &shape)?.to_dtype(other)?)
            }
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.shape_of(name).is_some() && !(name == "lm_head.weight" && self.config.tie_word_embeddings)
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A uniform value in [0, 1) from (seed, index): splitmix64 finalizer, counter based so the
/// tensor can be filled in parallel and still be reproducible.
fn unit(seed: u64, i: u64) -> f32 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 24) as f32
}
