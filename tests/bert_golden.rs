//! A tiny random BertModel against HF transformers (float32, eager attention): the last
//! hidden states of each sequence within 1e-4, alone and in one varlen batch, and pooled
//! embeddings of unit norm. Fixture: scripts/gen_bert_fixtures.py.

mod common;

use common::{fixtures, ids, max_abs_diff, read_json};
use kiln_engine::{DType, Tensor};
use kiln_models::bert::{BertConfig, BertModel};
use kiln_models::catalog::Pooling;
use kiln_models::llama::{LoadOptions, TensorSource};
use kiln_models::weights::SafetensorsWeights;
use kiln_models::ModelError;
use std::path::PathBuf;

const TOLERANCE: f32 = 1e-4;

fn dir() -> PathBuf {
    fixtures().join("bert/tiny-bert")
}

fn weights() -> SafetensorsWeights {
    SafetensorsWeights::open_dir(&dir()).unwrap()
}

fn load(src: &dyn TensorSource) -> BertModel {
    let config = BertConfig::from_hf_dir(&dir()).unwrap();
    BertModel::load(src, config, LoadOptions::default()).unwrap()
}

fn sequences() -> Vec<Vec<u32>> {
    let reference = read_json(&dir().join("reference.json"));
    reference["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect()
}

fn reference(i: usize) -> Vec<f32> {
    let refs = SafetensorsWeights::open_files(&[dir().join("reference.safetensors")]).unwrap();
    refs.get(&format!("last_hidden_state_{i}"))
        .unwrap()
        .to_vec::<f32>()
        .unwrap()
}

/// The checkpoint's tensors under `bert.`-prefixed names, as some checkpoints store them.
struct Prefixed(SafetensorsWeights);

impl TensorSource for Prefixed {
    fn tensor(&self, name: &str, dtype: Option<DType>) -> kiln_models::error::Result<Tensor> {
        match name.strip_prefix("bert.") {
            Some(rest) => self.0.tensor(rest, dtype),
            None => Err(ModelError::NotFound(format!("tensor {name} is missing"))),
        }
    }

    fn contains(&self, name: &str) -> bool {
        name.strip_prefix("bert.")
            .is_some_and(|rest| self.0.contains(rest))
    }
}

#[test]
fn hidden_states_match_transformers_alone_and_batched() {
    let model = load(&weights());
    let seqs = sequences();
    let h = model.config().hidden_size;
    let mut alone = Vec::new();
    for (i, seq) in seqs.iter().enumerate() {
        let got = model.forward(std::slice::from_ref(seq)).unwrap();
        assert_eq!(got.shape(), &[seq.len(), h]);
        let got = got.to_vec::<f32>().unwrap();
        let diff = max_abs_diff(&got, &reference(i));
        println!(
            "sequence {i} (len {}): max |kiln - HF| = {diff:.3e}",
            seq.len()
        );
        assert!(diff <= TOLERANCE, "sequence {i}: max abs diff {diff}");
        alone.push(got);
    }
    let batched = model.forward(&seqs).unwrap();
    let total: usize = seqs.iter().map(Vec::len).sum();
    assert_eq!(batched.shape(), &[total, h]);
    let batched = batched.to_vec::<f32>().unwrap();
    let mut start = 0;
    for (i, seq) in seqs.iter().enumerate() {
        let rows = &batched[start * h..(start + seq.len()) * h];
        start += seq.len();
        let vs_alone = max_abs_diff(rows, &alone[i]);
        let vs_hf = max_abs_diff(rows, &reference(i));
        println!("sequence {i} batched: vs alone {vs_alone:.3e}, vs HF {vs_hf:.3e}");
        assert!(
            vs_alone <= 1e-5,
            "sequence {i}: batched differs from alone by {vs_alone}"
        );
        assert!(
            vs_hf <= TOLERANCE,
            "sequence {i}: batched max abs diff {vs_hf}"
        );
    }
}

#[test]
fn bert_prefixed_checkpoint_loads_the_same() {
    let seqs = sequences();
    let plain = load(&weights()).forward(&seqs).unwrap();
    let prefixed = load(&Prefixed(weights())).forward(&seqs).unwrap();
    assert_eq!(
        plain.to_vec::<f32>().unwrap(),
        prefixed.to_vec::<f32>().unwrap()
    );
}

#[test]
fn pooled_embeddings_are_unit_norm_and_pool_the_hidden_states() {
    let model = load(&weights());
    let seqs = sequences();
    let h = model.config().hidden_size;
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let embs = model.embed(&seqs, pooling).unwrap();
        assert_eq!(embs.len(), seqs.len());
        for (i, (e, seq)) in embs.iter().zip(&seqs).enumerate() {
            assert_eq!(e.len(), h);
            let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{pooling:?} {i}: norm {norm}");
            // The same pooling of HF's hidden states, normalised.
            let r = reference(i);
            let mut want: Vec<f32> = match pooling {
                Pooling::Cls => r[..h].to_vec(),
                Pooling::Mean => (0..h)
                    .map(|j| r.chunks_exact(h).map(|row| row[j]).sum::<f32>() / seq.len() as f32)
                    .collect(),
            };
            let n = want.iter().map(|x| x * x).sum::<f32>().sqrt();
            want.iter_mut().for_each(|x| *x /= n);
            let diff = max_abs_diff(e, &want);
            println!("{pooling:?} {i}: max |kiln - HF| = {diff:.3e}");
            assert!(diff <= TOLERANCE, "{pooling:?} {i}: {diff}");
        }
    }
}

#[test]
fn bad_inputs_and_configs_are_clear_errors() {
    let model = load(&weights());
    let vocab = model.config().vocab_size as u32;
    let err = |r: Result<Tensor, ModelError>| match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    };
    assert!(err(model.forward(&[])).contains("zero sequences"));
    assert!(err(model.forward(&[vec![1, 2], vec![]])).contains("sequence 1 is empty"));
    assert!(err(model.forward(&[vec![1, vocab]])).contains("outside the vocabulary"));
    let too_long = vec![1; model.config().max_position_embeddings + 1];
    assert!(err(model.forward(&[too_long])).contains("at most 64"));

    let tmp = tempfile::tempdir().unwrap();
    let mut config = read_json(&dir().join("config.json"));
    config["hidden_act"] = "swish".into();
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    let e = BertConfig::from_hf_dir(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("config.json") && e.contains("hidden_act \"swish\" is not supported"),
        "{e}"
    );
}
