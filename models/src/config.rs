//! Model configuration, read from HF config.json or GGUF metadata.

/// RoPE frequency scaling as in HF `rope_scaling` (v4) / `rope_parameters` (v5).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1 frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// The shape and hyper-parameters of a Llama-family decoder (Llama, Mistral, SmolLM2).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// "LlamaForCausalLM" or "MistralForCausalLM".
    pub architecture: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// All ids that end generation (config.json and generation_config.json may list several).
    pub eos_token_ids: Vec<u32>,
}

use crate::error::{ModelError, Result};
use serde_json::Value;
use std::path::Path;

const SUPPORTED: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM"];

impl LlamaConfig {
    /// Reads an HF `config.json` (transformers 4.x `rope_scaling` + `rope_theta`, or 5.x
    /// `rope_parameters`) and merges eos ids from a `generation_config.json` beside it.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let mut config = Self::from_json(&read_json(&path)?)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))?;
        let gen_path = dir.join("generation_config.json");
        if gen_path.exists() {
            let gen = read_json(&gen_path)?;
            for id in token_ids(gen.get("eos_token_id")) {
                if !config.eos_token_ids.contains(&id) {
                    config.eos_token_ids.push(id);
                }
            }
            if config.bos_token_id.is_none() {
                config.bos_token_id = token_ids(gen.get("bos_token_id")).first().copied();
            }
        }
        Ok(config)
    }

    pub fn from_json(v: &Value) -> Result<Self, String> {
        let architecture = v
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .unwrap_or("LlamaForCausalLM")
            .to_string();
        if !SUPPORTED.contains(&architecture.as_str()) {
            return Err(format!(
                "unsupported architecture {architecture:?} (kiln runs {})",
                SUPPORTED.join(", ")
            ));
        }
        let hidden_size = req_usize(v, "hidden_size")?;
        let num_attention_heads = req_usize(v, "num_attention_heads")?;
        if num_attention_heads == 0 || hidden_size == 0 {
            return Err("hidden_size and num_attention_heads must be positive".into());
        }
        let num_key_value_heads =
            opt_usize(v, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        let head_dim = opt_usize(v, "head_dim")?.unwrap_or(hidden_size / num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(format!(
                "num_attention_heads {num_attention_heads} is not a multiple of num_key_value_heads {num_key_value_heads}"
            ));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(format!("head_dim {head_dim} must be even and positive"));
        }
        // transformers 5 moved rope_theta and the scaling into `rope_parameters`.
        let rope_params = v.get("rope_parameters").filter(|p| p.is_object());
        let rope_theta = v
            .get("rope_theta")
            .or_else(|| rope_params.and_then(|p| p.get("rope_theta")))
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        let scaling = v
            .get("rope_scaling")
            .filter(|s| s.is_object())
            .or(rope_params);
        let rope_scaling = match scaling {
            Some(s) => parse_rope_scaling(s)?,
            None => None,
        };
        Ok(LlamaConfig {
            architecture,
            vocab_size: req_usize(v, "vocab_size")?,
            hidden_size,
            intermediate_size: req_usize(v, "intermediate_size")?,
            num_hidden_layers: req_usize(v, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            max_position_embeddings: opt_usize(v, "max_position_embeddings")?.unwrap_or(2048),
            rms_norm_eps: v
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos_token_id: token_ids(v.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(v.get("eos_token_id")),
        })
    }

    /// RoPE inverse frequencies (length head_dim / 2), with the configured scaling applied,
    /// as HF's `ROPE_INIT_FUNCTIONS` compute them.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base: Vec<f64> = (0..dim / 2)
            .map(|i| {
                let exponent = ((2 * i) as f32 / dim as f32) as f64;
                1.0 / self.rope_theta.powf(exponent)
            })
            .collect();
        let scaled: Vec<f64> = match &self.rope_scaling {
            None => base,
            Some(RopeScaling::Linear { factor }) => base.iter().map(|f| f / factor).collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = *original_max_position_embeddings as f64;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        };
        scaled.into_iter().map(|f| f as f32).collect()
    }
}

fn parse_rope_scaling(s: &Value) -> Result<Option<RopeScaling>, String> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64, String> {
        s.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("rope_scaling.{k} missing or not a number"))
    };
    match kind {
        "default" => Ok(None),
        "linear" => Ok(Some(RopeScaling::Linear {
            factor: num("factor")?,
        })),
        "llama3" => Ok(Some(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
        })),
        other => Err(format!(
            "rope_scaling type {other:?} is not supported (default, linear, llama3)"
        )),
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })
}

pub(crate) fn req_usize(v: &Value, key: &str) -> Result<usize, String> {
    opt_usize(v, key)?.ok_or_else(|| format!("missing {key}"))
}

pub(crate) fn opt_usize(v: &Value, key: &str) -> Result<Option<usize>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("{key} must be a non-negative integer, got {x}")),
    }
}

/// An id or a list of ids (HF allows both for eos_token_id).
fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|i| vec![i as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|i| i as u32)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"architectures": ["LlamaForCausalLM"], "vocab_size": 10, "hidden_size": 8,
               "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
               "num_key_value_heads": 1, "rope_theta": 10000.0, "eos_token_id": [1, 2]})
    }

    #[test]
    fn v4_and_v5_rope_forms_agree() {
        let mut v4 = base();
        v4["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let mut v5 = base();
        v5.as_object_mut().unwrap().remove("rope_theta");
        v5["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        let a = LlamaConfig::from_json(&v4).unwrap();
        let b = LlamaConfig::from_json(&v5).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.head_dim, 4);
        assert_eq!(a.eos_token_ids, vec![1, 2]);
        assert!(matches!(a.rope_scaling, Some(RopeScaling::Llama3 { .. })));
    }

    #[test]
    fn rejects_unsupported_and_malformed() {
        let mut v = base();
        v["architectures"] = json!(["GPT2LMHeadModel"]);
        assert!(LlamaConfig::from_json(&v)
            .unwrap_err()
            .contains("GPT2LMHeadModel"));
        let mut v = base();
        v["hidden_size"] = json!("eight");
        assert!(LlamaConfig::from_json(&v)
            .unwrap_err()
            .contains("hidden_size"));
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(LlamaConfig::from_json(&v).is_err());
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(LlamaConfig::from_json(&v).unwrap_err().contains("yarn"));
    }

    #[test]
    fn linear_scaling_divides_frequencies() {
        let plain = LlamaConfig::from_json(&base()).unwrap().rope_inv_freq();
        let mut v = base();
        v["rope_scaling"] = json!({"type": "linear", "factor": 2.0});
        let lin = LlamaConfig::from_json(&v).unwrap().rope_inv_freq();
        assert_eq!(plain[0], 1.0);
        for (p, l) in plain.iter().zip(&lin) {
            assert!((p / 2.0 - l).abs() < 1e-7);
        }
    }
}
