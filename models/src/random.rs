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
        self.shape_of(name).is_some()
            && !(name == "lm_head.weight" && self.config.tie_word_embeddings)
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

/// A tokenizer for models without one (random weights): one token per byte (GPT-2 byte-level
/// alphabet) as ids 0..256, no merges, so any text round-trips; ids 256..vocab_size exist
/// so that whatever a random model samples decodes (as `<tN>`).
pub fn byte_level_tokenizer(vocab_size: usize) -> Result<crate::tokenizer::Tokenizer> {
    let bytes = (0u8..=255).map(|b| (byte_char(b).to_string(), b as u32));
    let fillers = (256..vocab_size.max(256) as u32).map(|id| (format!("<t{id}>"), id));
    let vocab: serde_json::Map<String, serde_json::Value> = bytes
        .chain(fillers)
        .map(|(token, id)| (token, serde_json::Value::from(id)))
        .collect();
    let spec = serde_json::json!({
        "version": "1.0",
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "vocab": vocab, "merges": []}
    });
    let inner = tokenizers::Tokenizer::from_bytes(spec.to_string().as_bytes())
        .map_err(|e| ModelError::Tokenizer(format!("byte-level tokenizer: {e}")))?;
    Ok(crate::tokenizer::Tokenizer::from_hf(inner))
}

/// GPT-2's reversible byte -> printable character map: printable Latin-1 bytes stand for
/// themselves, the rest are shifted past 255 in order.
fn byte_char(b: u8) -> char {
    let printable = |x: u8| {
        (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || (0xAE..=0xFF).contains(&x)
    };
    if printable(b) {
        return b as char;
    }
    let shifted = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + shifted).unwrap_or('?')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokenizer_round_trips_any_text() {
        let tok = byte_level_tokenizer(1000).unwrap();
        for text in ["hello world", "é 日本 🙂\n\t  x", ""] {
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(ids.len(), text.len());
            assert_eq!(tok.decode(&ids, false).unwrap(), text);
        }
        assert_eq!(tok.decode(&[999], false).unwrap(), "<t999>");
    }

    #[test]
    fn random_weights_are_seeded_and_shaped() {
        let config = crate::config::LlamaConfig {
            architecture: "LlamaForCausalLM".into(),
            vocab_size: 300,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 8,
            max_position_embeddings: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_ids: vec![],
        };
        let a = RandomLlamaWeights::new(config.clone(), 7);
        let b = RandomLlamaWeights::new(config, 8);
        let name = "model.layers.1.self_attn.k_proj.weight";
        let ta = a.tensor(name, Some(DType::F32)).unwrap();
        assert_eq!(ta.shape(), &[16, 32]);
        let va = ta.to_vec::<f32>().unwrap();
        assert_eq!(
            va,
            a.tensor(name, Some(DType::F32))
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        );
        assert_ne!(
            va,
            b.tensor(name, Some(DType::F32))
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        );
        assert!(!a.contains("lm_head.weight"));
        assert!(a.tensor("model.layers.2.mlp.up_proj.weight", None).is_err());
    }
}
