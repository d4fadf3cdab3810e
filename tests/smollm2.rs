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
    let cases = read_json(&fixtures().join("smollm2/greedy.json"));
    let logits =
        SafetensorsWeights::open_files(&[fixtures().join("smollm2/last_logits.safetensors")])
            .unwrap();
    for (i, case) in cases["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = ids(&case["prompt_ids"]);
        let mut cache = m.model.new_cache(prompt.len() + 32).unwrap();
        let last = m.model.forward(&prompt, &mut cache, Logits::Last).unwrap();
        let want = logits
            .get(&format!("logits_{i}"))
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let diff = max_abs_diff(&last.to_vec::<f32>().unwrap(), &want);
        println!("{label} prompt {i}: max |last logit diff| {diff:.2e}");
        assert!(
            diff <= tol,
            "{label} prompt {i}: last logits differ by {diff}"
        );
        let mut next = last.argmax().unwrap().to_vec::<u32>().unwrap()[0];
        let mut got = vec![next];
        while got.len() < 32 {
            let l = m.model.forward(&[next], &mut cache, Logits::Last).unwrap();
            next = l.argmax().unwrap().to_vec::<u32>().unwrap()[0];
            got.push(next);
        }
        assert_eq!(
            got,
            ids(&case["greedy_ids"]),
            "{label} prompt {i}: greedy continuation differs"
        );
    }
}

#[test]
fn prompt_ids_and_greedy_continuations_match_transformers() {
    let cases = read_json(&fixtures().join("smollm2/greedy.json"));
    let m = model();
    for (i, case) in cases["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = m
            .prompt_ids(&Prompt::Raw(case["text"].as_str().unwrap()))
            .unwrap();
        assert_eq!(
            prompt,
            ids(&case["prompt_ids"]),
            "prompt {i} tokenizes differently"
        );
    }
    assert_matches_fixture(m, "f32", 2e-3);
}

#[test]
fn chat_answers_paris() {
    let cases = read_json(&fixtures().join("smollm2/greedy.json"));
    let chat = &cases["chat"];
    let m = model();
    let messages = [ChatMessage::new("user", "What is the capital of France?")];
    let prompt = m.prompt_ids(&Prompt::Chat(&messages)).unwrap();
    assert_eq!(
        prompt,
        ids(&chat["prompt_ids"]),
        "chat prompt differs from transformers"
    );
    let mut streamed = String::new();
    let out = m
        .generate(&prompt, &greedy_params(32), &mut |piece| {
            streamed.push_str(piece);
            true
        })
        .unwrap();
    let want = ids(&chat["greedy_ids"]);
    // transformers includes the final eos; kiln stops on it without emitting it.
    assert_eq!(out.finish_reason, FinishReason::Eos);
    assert_eq!(out.ids, want[..want.len() - 1]);
    assert_eq!(out.text, chat["reply"].as_str().unwrap());
    assert_eq!(streamed, out.text);
    assert!(out.text.contains("Paris"), "reply: {}", out.text);
}

/// The default load keeps the GGUF's Q4_1 / Q8_0 blocks and multiplies them directly, in the
/// f32 path's summation order on the same dequantized values: logits bit-identical to the f32
/// load, for the prompt (M >= 4, dequantize + tiles) and a decode step (M = 1, fused GEMV);
/// same greedy tokens as transformers, logits within 1e-3.
#[test]
fn quantized_default_load_matches_transformers() {
    let m = TextModel::from_gguf(&smollm2_gguf(), LoadOptions::default()).unwrap();
    assert!(
        m.model.weight_bytes() < 120_000_000,
        "weights should stay quantized: {} bytes",
        m.model.weight_bytes()
    );
    let cases = read_json(&fixtures().join("smollm2/greedy.json"));
    let prompt = ids(&cases["prompts"][0]["prompt_ids"]);
    let (f, mut fc) = (
        &model().model,
        model().model.new_cache(prompt.len() + 1).unwrap(),
    );
    let mut qc = m.model.new_cache(prompt.len() + 1).unwrap();
    for (step, input) in [prompt.clone(), vec![prompt[0]]].iter().enumerate() {
        let a = f.forward(input, &mut fc, Logits::Last).unwrap();
        let b = m.model.forward(input, &mut qc, Logits::Last).unwrap();
        let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "step {step}: quantized logits != f32-load logits");
    }
    assert_matches_fixture(&m, "quantized", 1e-3);
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
