//! Llama end to end on CUDA: the tiny golden models give transformers' logits and greedy
//! tokens on the GPU as they do on the CPU. Needs a CUDA GPU: without one the test fails,
//! unless KILN_ALLOW_NO_GPU=1 (then it says so and skips).
#![cfg(feature = "cuda")]

mod common;

use common::{fixtures, ids, max_abs_diff, read_json};
use kiln_engine::Device;
use kiln_models::llama::{LoadOptions, Logits};
use kiln_models::text::TextModel;
use kiln_models::weights::SafetensorsWeights;

const MODELS: &[&str] = &[
    "tiny-llama3",
    "tiny-tied",
    "tiny-linear-bf16",
    "tiny-mistral",
];

fn gpu() -> Option<Device> {
    let device = Device::Cuda(0);
    if device.is_available() {
        return Some(device);
    }
    let allowed = std::env::var("KILN_ALLOW_NO_GPU").is_ok_and(|v| v == "1");
    assert!(
        allowed,
        "cuda_llama needs a CUDA GPU (set KILN_ALLOW_NO_GPU=1 to skip)"
    );
    println!("SKIP cuda_llama: no CUDA GPU (KILN_ALLOW_NO_GPU=1)");
    None
}

#[test]
fn tiny_models_match_transformers_on_cuda() {
    let Some(device) = gpu() else { return };
    for name in MODELS {
        let dir = fixtures().join("llama").join(name);
        let reference = read_json(&dir.join("reference.json"));
        let refs = SafetensorsWeights::open_files(&[dir.join("reference.safetensors")]).unwrap();
        let opts = LoadOptions {
            device,
            ..Default::default()
        };
        let model = TextModel::from_hf_dir(&dir, opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let prompts = reference["prompts"].as_array().unwrap();
        let greedy = reference["greedy"].as_array().unwrap();
        for (i, (prompt, want)) in prompts.iter().zip(greedy).enumerate() {
            let prompt = ids(prompt);
            let mut cache = model.model.new_cache(prompt.len() + 16).unwrap();
            let logits = model
                .model
                .forward(&prompt, &mut cache, Logits::All)
                .unwrap();
            let got = logits.to_vec::<f32>().unwrap();
            let want_logits = refs
                .get(&format!("logits_{i}"))
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let diff = max_abs_diff(&got, &want_logits);
            // f32 weights run exact f32 kernels (GEMV, SGEMM): 1e-3. bf16 weights with more
            // than 8 rows go through the tensor-core GEMM, which rounds the activations to
            // bf16 too: the CPU bf16 test's bound, 2% of the largest |logit|.
            let scale = want_logits.iter().fold(0f32, |m, x| m.max(x.abs()));
            let bf16 = *name == "tiny-linear-bf16";
            let bound = if bf16 && prompt.len() > 8 {
                0.02 * scale
            } else {
                1e-3
            };
            println!(
                "{name} prompt {i} on {device}: max |logit diff| {diff:.2e} (bound {bound:.1e})"
            );
            assert!(
                diff <= bound,
                "{name} prompt {i}: logits differ by {diff} on {device}"
            );
            let last = logits.narrow(0, prompt.len() - 1, 1).unwrap();
            let mut next = last.argmax().unwrap().to_vec::<u32>().unwrap()[0];
            // Restart from the prompt so decode steps run through the cache as in serving.
            let mut cache = model.model.new_cache(prompt.len() + 16).unwrap();
            model
                .model
                .forward(&prompt, &mut cache, Logits::Last)
                .unwrap();
            let mut tokens = vec![next];
            while tokens.len() < 16 {
                let l = model
                    .model
                    .forward(&[next], &mut cache, Logits::Last)
                    .unwrap();
                next = l.argmax().unwrap().to_vec::<u32>().unwrap()[0];
                tokens.push(next);
            }
            assert_eq!(
                tokens,
                ids(want),
                "{name} prompt {i}: greedy tokens differ on {device}"
            );
        }
    }
}
