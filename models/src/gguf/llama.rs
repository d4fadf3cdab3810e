//! GGUF files of `general.architecture == "llama"` seen as an HF Llama checkpoint: the config
//! from `llama.*` metadata, HF tensor names, HF row-major shapes, and Q/K rows back in HF
//! order (llama.cpp's converter interleaves the two rotary halves of every head).

use rayon::prelude::*;

use super::dequant::dequantize;
use super::reader::{GgufFile, GgufTensorInfo};
use super::types::GgmlType;
use crate::config::{LlamaConfig, RopeScaling};
use crate::error::{ModelError, Result};

/// Per-layer tensors: GGUF stem -> HF stem (both followed by `.weight` or `.bias`).
const LAYER_STEMS: &[(&str, &str)] = &[
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Precomputed Llama 3 rope factors; folded into the config, not a weight.
const ROPE_FREQS: &str = "rope_freqs.weight";

/// The HF name of a GGUF tensor, `None` if it has no Llama equivalent.
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == name) {
        return Some((*hf).to_string());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (stem, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let (_, hf) = LAYER_STEMS.iter().find(|(g, _)| *g == stem)?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// The GGUF name of an HF Llama tensor, `None` if GGUF has no equivalent.
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    if let Some((g, _)) = GLOBAL_NAMES.iter().find(|(_, hf)| *hf == name) {
        return Some((*g).to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (stem, suffix) = rest.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let (g, _) = LAYER_STEMS.iter().find(|(_, hf)| *hf == stem)?;
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// HF names of all weights in the file, in file order. `lm_head.weight` is absent when the
/// embeddings are tied. A tensor with no Llama equivalent is an error (the file is some
/// other model saved under the llama architecture, e.g. a mixture of experts).
pub fn llama_tensor_names(gguf: &GgufFile) -> Result<Vec<String>> {
    gguf.tensors()
        .iter()
        .filter(|t| t.name != ROPE_FREQS)
        .map(|t| {
            gguf_to_hf_name(&t.name).ok_or_else(|| {
                gguf.format_error(format!(
                    "tensor {} has no Llama equivalent (not a plain Llama model?)",
                    t.name
                ))
            })
        })
        .collect()
}

/// Loads one tensor by HF name: dequantized to f32, Q/K rows in HF order, HF shape
/// (`[out_features, in_features]` for a linear weight). Holds only this tensor in memory.
pub fn load_llama_tensor(gguf: &GgufFile, hf_name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let (info, shape) = find_llama_tensor(gguf, hf_name)?;
    let mut values = dequantize_tensor(gguf, info)?;
    let cols = shape.iter().skip(1).product::<usize>();
    unpermute_if_qk(gguf, info, hf_name, &mut values, cols)?;
    Ok((shape, values))
}

/// Loads one tensor by HF name as stored (raw GGML blocks, no dequantization), with Q/K rows
/// moved into HF order. Returns the HF shape, the GGML type and the bytes.
pub fn load_llama_tensor_raw(
    gguf: &GgufFile,
    hf_name: &str,
) -> Result<(Vec<usize>, GgmlType, Vec<u8>)> {
    let (info, shape) = find_llama_tensor(gguf, hf_name)?;
    let mut bytes = gguf.tensor_data(info)?.to_vec();
    let rows = shape.first().copied().unwrap_or(1).max(1);
    let row_bytes = bytes.len() / rows;
    unpermute_if_qk(gguf, info, hf_name, &mut bytes, row_bytes)?;
    Ok((shape, info.ggml_type, bytes))
}

fn find_llama_tensor<'a>(
    gguf: &'a GgufFile,
    hf_name: &str,
) -> Result<(&'a GgufTensorInfo, Vec<usize>)> {
    let not_found = || {
        ModelError::NotFound(format!(
            "{}: no GGUF tensor for {hf_name}",
            gguf.path().display()
        ))
    };
    let gguf_name = hf_to_gguf_name(hf_name).ok_or_else(not_found)?;
    let info = gguf.tensor(&gguf_name).ok_or_else(not_found)?;
    Ok((info, info.shape()))
}

/// Q and K projections: undo llama.cpp's per-head row permutation; `row_len` is one row's
/// length in elements of `data` (values or bytes).
fn unpermute_if_qk<T: Copy + Send + Sync>(
    gguf: &GgufFile,
    info: &GgufTensorInfo,
    hf_name: &str,
    data: &mut [T],
    row_len: usize,
) -> Result<()> {
    let heads = if hf_name.contains(".self_attn.q_proj.") {
        Some(head_counts(gguf)?.0)
    } else if hf_name.contains(".self_attn.k_proj.") {
        Some(head_counts(gguf)?.1)
    } else {
        None
    };
    if let Some(n_head) = heads {
        unpermute_qk_rows(data, n_head, row_len)
            .map_err(|e| gguf.format_error(format!("tensor {}: {e}", info.name)))?;
    }
    Ok(())
}

fn dequantize_tensor(gguf: &GgufFile, info: &GgufTensorInfo) -> Result<Vec<f32>> {
    let data = gguf.tensor_data(info)?;
    dequantize(info.ggml_type, data, info.row_len())
        .map_err(|e| gguf.format_error(format!("{e} in tensor {}", info.name)))
}

/// (query heads, key/value heads).
fn head_counts(gguf: &GgufFile) -> Result<(usize, usize)> {
    let heads = required(gguf, "llama.attention.head_count")?;
    let kv = gguf
        .get_usize("llama.attention.head_count_kv")?
        .unwrap_or(heads);
    Ok((heads, kv))
}

fn required(gguf: &GgufFile, key: &str) -> Result<usize> {
    match gguf.get_usize(key)? {
        Some(0) => Err(gguf.format_error(format!("metadata {key} is 0"))),
        Some(v) => Ok(v),
        None => Err(gguf.format_error(format!("metadata {key} is missing"))),
    }
}

/// Undoes convert_hf_to_gguf's `permute`: within each head of `head_dim` rows it wrote HF
/// row `j * head_dim/2 + i` (j = rotary half, i = pair index) to row `2 * i + j`.
pub fn unpermute_qk_rows<T: Copy + Send + Sync>(
    data: &mut [T],
    n_head: usize,
    cols: usize,
) -> std::result::Result<(), String> {
    let head_dim = qk_head_dim(data.len(), n_head, cols)?;
    let half = head_dim / 2;
    data.par_chunks_mut(head_dim * cols).for_each(|head| {
        let gguf_order = head.to_vec();
        for i in 0..half {
            for j in 0..2 {
                let src = (2 * i + j) * cols;
                let dst = (j * half + i) * cols;
                head[dst..dst + cols].copy_from_slice(&gguf_order[src..src + cols]);
            }
        }
    });
    Ok(())
}

/// llama.cpp's permutation (HF order -> GGUF order); the inverse of [`unpermute_qk_rows`].
pub fn permute_qk_rows<T: Copy + Send + Sync>(
    data: &mut [T],
    n_head: usize,
    cols: usize,
) -> std::result::Result<(), String> {
    let head_dim = qk_head_dim(data.len(), n_head, cols)?;
    let half = head_dim / 2;
    data.par_chunks_mut(head_dim * cols).for_each(|head| {
        let hf_order = head.to_vec();
        for i in 0..half {
            for j in 0..2 {
                let src = (j * half + i) * cols;
                let dst = (2 * i + j) * cols;
                head[dst..dst + cols].copy_from_slice(&hf_order[src..src + cols]);
            }
        }
    });
    Ok(())
}

fn qk_head_dim(len: usize, n_head: usize, cols: usize) -> std::result::Result<usize, String> {
    let rows = len.checked_div(cols).unwrap_or(0);
    let head_dim = rows.checked_div(n_head).unwrap_or(0);
    if cols == 0 || rows * cols != len || head_dim * n_head != rows || !head_dim.is_multiple_of(2) {
        return Err(format!(
            "{rows} rows of {cols} cannot be split into {n_head} heads of even size"
        ));
    }
    Ok(head_dim)
}

/// The model config from `llama.*` and `tokenizer.ggml.*` metadata.
pub fn llama_config(gguf: &GgufFile) -> Result<LlamaConfig> {
    let arch = gguf
        .get_str("general.architecture")?
        .ok_or_else(|| gguf.format_error("metadata general.architecture is missing".into()))?;
    if arch != "llama" {
        return Err(ModelError::UnsupportedArchitecture(format!(
            "{arch} (GGUF general.architecture in {})",
            gguf.path().display()
        )));
    }
    let hidden_size = required(gguf, "llama.embedding_length")?;
    let (heads, kv_heads) = head_counts(gguf)?;
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(gguf.format_error(format!(
            "llama.attention.head_count {heads} is not a multiple of head_count_kv {kv_heads}"
        )));
    }
    let head_dim = match gguf.get_usize("llama.attention.key_length")? {
        Some(d) => d,
        None if hidden_size % heads == 0 => hidden_size / heads,
        None => {
            return Err(gguf.format_error(format!(
                "llama.embedding_length {hidden_size} is not divisible by head_count {heads}"
            )))
        }
    };
    if let Some(rot) = gguf.get_usize("llama.rope.dimension_count")? {
        if rot != head_dim {
            return Err(gguf.format_error(format!(
                "llama.rope.dimension_count {rot} != head_dim {head_dim}: partial rotary \
                 embeddings are not supported"
            )));
        }
    }
    let rope_theta = gguf.get_f64("llama.rope.freq_base")?.unwrap_or(10000.0);
    let max_position_embeddings = required(gguf, "llama.context_length")?;
    let rms_norm_eps = gguf
        .get_f64("llama.attention.layer_norm_rms_epsilon")?
        .ok_or_else(|| {
            gguf.format_error("metadata llama.attention.layer_norm_rms_epsilon is missing".into())
        })?;
    let tok = |key: &str| -> Result<Option<u32>> {
        match gguf.get_u64(key)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| gguf.format_error(format!("metadata {key} = {v} is too large"))),
        }
    };
    let mut eos_token_ids = Vec::new();
    for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"] {
        if let Some(id) = tok(key)? {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
    }
    Ok(LlamaConfig {
        architecture: "LlamaForCausalLM".into(),
        vocab_size: vocab_size(gguf)?,
        hidden_size,
        intermediate_size: required(gguf, "llama.feed_forward_length")?,
        num_hidden_layers: required(gguf, "llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        max_position_embeddings,
        rms_norm_eps,
        rope_theta,
        rope_scaling: rope_scaling(gguf, rope_theta, head_dim)?,
        tie_word_embeddings: gguf.tensor("output.weight").is_none(),
        bos_token_id: tok("tokenizer.ggml.bos_token_id")?,
        eos_token_ids,
    })
}

fn vocab_size(gguf: &GgufFile) -> Result<usize> {
    if let Some(n) = gguf.get_usize("llama.vocab_size")? {
        return Ok(n);
    }
    if let Some(tokens) = gguf.get_array("tokenizer.ggml.tokens")? {
        return Ok(tokens.len());
    }
    match gguf.tensor("token_embd.weight").map(|t| t.shape()) {
        Some(shape) if shape.len() == 2 => Ok(shape[0]),
        _ => Err(gguf.format_error(
            "cannot tell the vocabulary size: no llama.vocab_size, tokenizer.ggml.tokens \
             or 2-D token_embd.weight"
                .into(),
        )),
    }
}

fn rope_scaling(gguf: &GgufFile, theta: f64, head_dim: usize) -> Result<Option<RopeScaling>> {
    let kind = gguf.get_str("llama.rope.scaling.type")?;
    let factor = gguf.get_f64("llama.rope.scaling.factor")?;
    match kind {
        Some("linear") => match factor {
            Some(f) if f > 0.0 => Ok(Some(RopeScaling::Linear { factor: f })),
            _ => Err(gguf.format_error(
                "llama.rope.scaling.type is linear but llama.rope.scaling.factor is missing \
                 or not positive"
                    .into(),
            )),
        },
        None | Some("none") => match gguf.tensor(ROPE_FREQS) {
            None => Ok(None),
            Some(info) => {
                let factors = dequantize_tensor(gguf, info)?;
                let original = gguf
                    .get_usize("llama.rope.scaling.original_context_length")?
                    .unwrap_or(8192);
                llama3_from_factors(&factors, theta, head_dim, original)
                    .map_err(|e| gguf.format_error(format!("{ROPE_FREQS}: {e}")))
            }
        },
        Some(other) => Err(gguf.format_error(format!(
            "llama.rope.scaling.type {other:?} is not supported (kiln supports none and linear)"
        ))),
    }
}

/// Recovers Llama 3 rope scaling from the per-frequency factors llama.cpp stores instead of
/// the parameters. The largest factor is taken as `factor` (the lowest frequencies of every
/// Llama 3.x model are fully scaled); the band edges are the published Llama 3.1/3.2 values
/// (low 1, high 4). The result is accepted only if it reproduces every stored factor.
fn llama3_from_factors(
    stored: &[f32],
    theta: f64,
    head_dim: usize,
    original: usize,
) -> std::result::Result<Option<RopeScaling>, String> {
    if stored.len() != head_dim / 2 {
        return Err(format!(
            "{} factors for head_dim {head_dim} (expected {})",
            stored.len(),
            head_dim / 2
        ));
    }
    let factor = stored.iter().fold(1.0f32, |m, &v| m.max(v)) as f64;
    if stored.iter().all(|&v| v == 1.0) {
        return Ok(None);
    }
    let scaling = RopeScaling::Llama3 {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: original,
    };
    let expected = llama3_factors(theta, head_dim, factor, 1.0, 4.0, original as f64);
    let matches = stored
        .iter()
        .zip(&expected)
        .all(|(&s, &e)| ((s as f64) - e).abs() <= 1e-4 * e.abs().max(1.0));
    if matches {
        Ok(Some(scaling))
    } else {
        Err(
            "factors do not match Llama 3 scaling with low_freq_factor 1, high_freq_factor 4; \
             this rope scaling is not supported"
                .into(),
        )
    }
}

/// The factor convert_hf_to_gguf computes for each rotary frequency.
fn llama3_factors(
    theta: f64,
    head_dim: usize,
    factor: f64,
    low: f64,
    high: f64,
    original: f64,
) -> Vec<f64> {
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f64 / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "llama_tests.rs"]
mod tests;
