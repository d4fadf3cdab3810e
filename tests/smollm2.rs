//! Real weights: SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to f32 at load) against HF
//! transformers on the same dequantized weights (tests/fixtures/smollm2, scripts/gen_fixtures.py).

mod common;

use common::{fixtures, ids, max_abs_diff, read_json, smollm2_gguf};
use kiln_engine::sampler::SamplingParams;
use kiln_engine::DType;
use kiln_models::chat_template::ChatMessage;
use kiln_models::llama::{LoadOptions, Logits};
use kiln_models::text::{FinishReason, Prompt, TextModel};
use kiln_models::weights::SafetensorsWeights;
use std::sync::OnceLock;

fn model() -> &'static TextModel {
    static MODEL: OnceLock<TextModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let opts = LoadOptions {
            dtype: Some(DType::F32),
            ..Default::default()
        };
        TextModel::from_gguf(&smollm2_gguf(), opts).expect("SmolLM2 GGUF loads")
    })
}

fn greedy_params(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..Default::default()
    }
}

/// For each fixture prompt: last-position logits within `tol` of transformers' and the
/// 32-token greedy continuation identical (the fixture decodes through eos, so this decodes
/// by hand rather than with generate()).
fn assert_matches_fixture(m: &TextModel, label: &str, tol: f32) {
    assert_matches_fixture(&m, "quantized", 1e-3);
    let cases = read_json(&fixtures().join("smollm2/greedy.json"));
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let prompt = m.prompt_ids(&Prompt::Chat(&messages)).unwrap();
    let out = m
        .generate(&prompt, &greedy_params(16), &mut |_| true)
        .unwrap();
    assert_eq!(out.text, cases["chat"]["reply"].as_str().unwrap());
}

#[test]
fn bf16_weights_still_answer_paris() {
    let opts = LoadOptions {
        dtype: Some(DType::BF16),
        ..Default::default()
    };
    let m = TextModel::from_gguf(&smollm2_gguf(), opts).unwrap();
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let prompt = m.prompt_ids(&Prompt::Chat(&messages)).unwrap();
    let out = m
        .generate(&prompt, &greedy_params(16), &mut |_| true)
        .unwrap();
    assert!(out.text.contains("Paris"), "bf16 reply: {}", out.text);
}

#[test]
fn same_seed_same_tokens() {
    let m = model();
    let messages = [ChatMessage::new("user", "Tell me a story.")];
    let prompt = m.prompt_ids(&Prompt::Chat(&messages)).unwrap();
    let params = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: Some(40),
        seed: Some(1234),
        max_tokens: 12,
        ..Default::default()
    };
    let a = m.generate(&prompt, &params, &mut |_| true).unwrap();
    let b = m.generate(&prompt, &params, &mut |_| true).unwrap();
    assert_eq!(a.ids, b.ids);
    assert!(!a.ids.is_empty());
}
