//! BERT embeddings on CUDA against the CPU: the tiny golden BertModel (f32 and bf16 matmul
//! weights) and, when installed, all-MiniLM-L6-v2 on a varlen batch: cosine >= 0.999 per text.
//! Needs a CUDA GPU: without one the test fails, unless KILN_ALLOW_NO_GPU=1 (then it says so
//! and skips).
#![cfg(feature = "cuda")]

mod common;

use common::{fixtures, kiln_home};
use kiln_engine::{DType, Device};
use kiln_models::bert::{BertConfig, BertModel};
use kiln_models::catalog::Pooling;
use kiln_models::llama::LoadOptions;
use kiln_models::weights::SafetensorsWeights;
use std::path::Path;

fn gpu() -> Option<Device> {
    let device = Device::Cuda(0);
    if device.is_available() {
        return Some(device);
    }
    let allowed = std::env::var("KILN_ALLOW_NO_GPU").is_ok_and(|v| v == "1");
    assert!(
        allowed,
        "cuda_bert needs a CUDA GPU (set KILN_ALLOW_NO_GPU=1 to skip)"
    );
    println!("SKIP cuda_bert: no CUDA GPU (KILN_ALLOW_NO_GPU=1)");
    None
}

fn load(dir: &Path, device: Device, dtype: Option<DType>) -> BertModel {
    let config = BertConfig::from_hf_dir(dir).unwrap();
    let weights = SafetensorsWeights::open_dir(dir).unwrap();
    let opts = LoadOptions {
        dtype,
        device,
        progress: None,
    };
    BertModel::load(&weights, config, opts).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| *p as f64 * *q as f64)
            .sum::<f64>()
    };
    dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())
}

fn compare(dir: &Path, device: Device, batch: &[Vec<u32>]) {
    for dtype in [None, Some(DType::BF16)] {
        let cpu = load(dir, Device::Cpu, None);
        let gpu = load(dir, device, dtype);
        for pooling in [Pooling::Mean, Pooling::Cls] {
            let want = cpu.embed(batch, pooling).unwrap();
            let got = gpu.embed(batch, pooling).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let c = cosine(g, w);
                assert!(
                    g.iter().all(|x| x.is_finite()),
                    "{}: text {i}: NaN",
                    dir.display()
                );
                assert!(
                    c >= 0.999,
                    "{} {dtype:?} {pooling:?}: text {i}: cosine {c}",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn tiny_bert_on_cuda_matches_the_cpu() {
    let Some(device) = gpu() else { return };
    let batch: Vec<Vec<u32>> = vec![vec![2, 40, 3], (2..60).collect(), vec![2, 7, 9, 11, 3]];
    compare(&fixtures().join("bert/tiny-bert"), device, &batch);
}

#[test]
fn minilm_on_cuda_matches_the_cpu() {
    let Some(device) = gpu() else { return };
    let dir = kiln_home().join("models/@hf/sentence-transformers/all-minilm-l6-v2");
    // The GPU bundle cannot carry the 90 MB weights; where they are not installed (the GPU
    // machine) the tiny model above is the CUDA check and this says so.
    if !dir.join("model.safetensors").exists() {
        println!(
            "SKIP minilm_on_cuda: {} not installed (scripts/fetch-models.sh)",
            dir.display()
        );
        return;
    }
    let batch: Vec<Vec<u32>> = (0..40)
        .map(|i| {
            (0..(3 + i * 12))
                .map(|t| 1000 + ((t * 37 + i) % 20000) as u32)
                .collect()
        })
        .collect();
    compare(&dir, device, &batch);
}
