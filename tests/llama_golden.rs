//! Tiny random Llama-family models against HF transformers (float32, eager attention):
//! logits of every prompt position within 1e-4 and identical 16-token greedy continuations.
//! Fixtures: scripts/gen_fixtures.py.

mod common;

use common::{fixtures, ids, max_abs_diff, read_json};
use kiln_engine::DType;
use kiln_models::llama::{LlamaModel, LoadOptions, Logits};
use kiln_models::text::TextModel;
use kiln_models::weights::SafetensorsWeights;
use std::path::Path;

const MODELS: &[&str] = &[
    "tiny-llama3",
    "tiny-tied",
    "tiny-linear-bf16",
    "tiny-mistral",
];

fn load(name: &str, dtype: Option<DType>) -> TextModel {
    let dir = fixtures().join("llama").join(name);
    let opts = LoadOptions {
        dtype,
        ..Default::default()
    };
    TextModel::from_hf_dir(&dir, opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reference_logits(dir: &Path, i: usize) -> Vec<f32> {
    let refs = SafetensorsWeights::open_files(&[dir.join("reference.safetensors")]).unwrap();
    refs.get(&format!("logits_{i}"))
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

fn greedy(model: &LlamaModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(prompt.len() + n).unwrap();
    let mut logits = model.forward(prompt, &mut cache, Logits::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let next = logits.argmax().unwrap().to_vec::<u32>().unwrap()[0];
        out.push(next);
        logits = model.forward(&[next], &mut cache, Logits::Last).unwrap();
    }
    out
}

#[test]
fn logits_match_transformers_f32() {
    for name in MODELS {
        let dir = fixtures().join("llama").join(name);
        let reference = read_json(&dir.join("reference.json"));
        let model = load(name, None);
        for (i, prompt) in reference["prompts"].as_array().unwrap().iter().enumerate() {
            let prompt = ids(prompt);
            let mut cache = model.model.new_cache(prompt.len()).unwrap();
            let logits = model
                .model
                .forward(&prompt, &mut cache, Logits::All)
                .unwrap();
            assert_eq!(logits.shape(), &[prompt.len(), 512]);
            let got = logits.to_vec::<f32>().unwrap();
            let diff = max_abs_diff(&got, &reference_logits(&dir, i));
            println!(
                "{name} prompt {i} ({} tokens): max |logit diff| {diff:.2e}",
                prompt.len()
            );
            assert!(
                diff <= 1e-4,
                "{name} prompt {i}: max |logit diff| {diff} > 1e-4"
            );
        }
    }
}

#[test]
fn greedy_continuations_match_transformers() {
    for name in MODELS {
        let dir = fixtures().join("llama").join(name);
        let reference = read_json(&dir.join("reference.json"));
        let model = load(name, None);
        let prompts = reference["prompts"].as_array().unwrap();
        let expected = reference["greedy"].as_array().unwrap();
        for (prompt, want) in prompts.iter().zip(expected) {
            let got = greedy(&model.model, &ids(prompt), 16);
            assert_eq!(got, ids(want), "{name}: greedy continuation differs");
        }
    }
}

/// The same models with weights held in bf16 (activations and accumulation stay f32): the
/// logits move by the bf16 rounding of the weights only. Stated tolerance: max |diff| within
/// 2% of the largest |logit|.
#[test]
fn bf16_weights_within_tolerance() {
    for name in MODELS {
        let dir = fixtures().join("llama").join(name);
        let reference = read_json(&dir.join("reference.json"));
        let model = load(name, Some(DType::BF16));
        for (i, prompt) in reference["prompts"].as_array().unwrap().iter().enumerate() {
            let prompt = ids(prompt);
            let mut cache = model.model.new_cache(prompt.len()).unwrap();
            let got = model
                .model
                .forward(&prompt, &mut cache, Logits::All)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let want = reference_logits(&dir, i);
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = max_abs_diff(&got, &want);
            println!("{name} bf16 prompt {i}: max |diff| {diff:.2e} (max |logit| {scale:.2})");
            assert!(diff <= 0.02 * scale, "{name} bf16: {diff} > 2% of {scale}");
        }
    }
}

#[test]
fn weights_are_memory_mapped_when_dtype_matches() {
    let model = load("tiny-llama3", None);
    assert!(model.model.weight_bytes() > 0);
    let weights = SafetensorsWeights::open_dir(&fixtures().join("llama/tiny-llama3")).unwrap();
    let t = weights
        .get("model.layers.0.self_attn.q_proj.weight")
        .unwrap();
    assert!(
        t.is_mapped(),
        "an aligned f32 tensor should be a zero-copy view of the file"
    );
}

#[test]
fn chunked_prefill_equals_one_shot() {
    // Prefill in pieces through the cache gives the same last logits as one forward.
    let model = load("tiny-llama3", None);
    let prompt: Vec<u32> = (0..23).map(|i| (i * 37 + 5) % 512).collect();
    let mut cache = model.model.new_cache(32).unwrap();
    let whole = model
        .model
        .forward(&prompt, &mut cache, Logits::Last)
        .unwrap();
    let mut cache = model.model.new_cache(32).unwrap();
    model
        .model
        .forward(&prompt[..10], &mut cache, Logits::Last)
        .unwrap();
    let parts = model
        .model
        .forward(&prompt[10..], &mut cache, Logits::Last)
        .unwrap();
    let diff = max_abs_diff(
        &whole.to_vec::<f32>().unwrap(),
        &parts.to_vec::<f32>().unwrap(),
    );
    assert!(diff <= 1e-5, "chunked prefill differs by {diff}");
}
