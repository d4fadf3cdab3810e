use super::*;
use crate::gguf::test_util::{fixtures_dir, smollm2_gguf, str_val, GgufBuilder};
use crate::gguf::value::{GgufArray, GgufValue};

fn strings(items: &[&str]) -> GgufValue {
    GgufValue::Array(GgufArray::String(
        items.iter().map(|s| s.to_string()).collect(),
    ))
}

/// A toy byte-level vocabulary: the bytes of "ab 12", merges to "ab" and "Ġ1", a control
/// token and a user-defined one.
fn toy(pre: &str, add_bos: bool) -> GgufBuilder {
    toy_with_merges(pre, add_bos, &["a b", "Ġ 1"])
}

fn toy_with_merges(pre: &str, add_bos: bool, merges: &[&str]) -> GgufBuilder {
    GgufBuilder::new()
        .kv("tokenizer.ggml.model", str_val("gpt2"))
        .kv("tokenizer.ggml.pre", str_val(pre))
        .kv(
            "tokenizer.ggml.tokens",
            strings(&[
                "<s>", "a", "b", "Ġ", "1", "2", "ab", "Ġ1", "<ctl>", "user tok",
            ]),
        )
        .kv(
            "tokenizer.ggml.token_type",
            GgufValue::Array(GgufArray::I32(vec![3, 1, 1, 1, 1, 1, 1, 1, 3, 4])),
        )
        .kv("tokenizer.ggml.merges", strings(merges))
        .kv("tokenizer.ggml.bos_token_id", GgufValue::U32(0))
        .kv("tokenizer.ggml.add_bos_token", GgufValue::Bool(add_bos))
}

fn build(b: &GgufBuilder) -> Result<Tokenizer> {
    let dir = tempfile::tempdir().unwrap();
    let g = GgufFile::open(b.write(&dir, "tok.gguf")).unwrap();
    tokenizer_from_gguf(&g)
}

fn ids(t: &Tokenizer, text: &str, add_special: bool) -> Vec<u32> {
    t.encode(text, add_special).unwrap().get_ids().to_vec()
}

#[test]
fn toy_vocab_pre_tokenizers_and_bos() {
    let gpt2 = build(&toy("gpt2", false)).unwrap();
    // GPT-2 split keeps " 12" together: "Ġ1" merges, "2" stays.
    assert_eq!(ids(&gpt2, "ab 12", true), [6, 7, 5]);
    assert_eq!(ids(&gpt2, "<ctl>ab", false), [8, 6]);
    assert_eq!(ids(&gpt2, "user tokab", false), [9, 6]);
    assert_eq!(
        gpt2.decode(&[8, 6, 7], true).unwrap(),
        "ab 1",
        "control token skipped"
    );
    assert_eq!(gpt2.decode(&[9, 6], true).unwrap(), "user tokab");

    // smollm isolates digits first, so " 1" cannot merge into "Ġ1".
    let smollm = build(&toy("smollm", false)).unwrap();
    assert_eq!(ids(&smollm, "ab 12", false), [6, 3, 4, 5]);

    let llama3 = build(&toy("llama-bpe", true)).unwrap();
    assert_eq!(
        ids(&llama3, "ab 12", true),
        [0, 6, 3, 4, 5],
        "bos added; the space is split from the digits"
    );
    assert_eq!(ids(&llama3, "ab", false), [6]);
}

#[test]
fn unsupported_vocabularies_are_errors() {
    let spm = GgufBuilder::new().kv("tokenizer.ggml.model", str_val("llama"));
    let err = build(&spm).unwrap_err().to_string();
    assert!(
        err.contains("\"llama\"") && err.contains("not supported"),
        "{err}"
    );
    let err = build(&toy("qwen2", false)).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.pre \"qwen2\""), "{err}");
    let bad_bos = toy("gpt2", false).kv("tokenizer.ggml.eos_token_id", GgufValue::U32(99));
    assert!(build(&bad_bos)
        .unwrap_err()
        .to_string()
        .contains("eos id 99"));
    let bad_merge = toy_with_merges("gpt2", false, &["a b c"]);
    assert!(build(&bad_merge)
        .unwrap_err()
        .to_string()
        .contains("merge \"a b c\""));
    let no_tokens = GgufBuilder::new().kv("tokenizer.ggml.model", str_val("gpt2"));
    assert!(build(&no_tokens)
        .unwrap_err()
        .to_string()
        .contains("tokenizer.ggml.tokens"));
}

#[test]
fn smollm2_tokenizer_matches_hf_cases() {
    let g = GgufFile::open(smollm2_gguf()).unwrap();
    let tok = tokenizer_from_gguf(&g).unwrap();
    let path = fixtures_dir().join("smollm2/tokenizer_cases.json");
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(cases.len() >= 10, "{} cases", cases.len());
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = ids(&tok, text, false);
        assert_eq!(got, want, "ids for {text:?}");
        assert_eq!(tok.decode(&got, false).unwrap(), text, "decode of {text:?}");
    }
    // No BOS by default (add_bos_token is false in this file).
    assert_eq!(ids(&tok, "Hello", true), ids(&tok, "Hello", false));
}

#[test]
fn smollm2_specials_and_chat_template() {
    let g = GgufFile::open(smollm2_gguf()).unwrap();
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir().join("smollm2/tokenizer_meta.json")).unwrap(),
    )
    .unwrap();
    let s = special_tokens(&g).unwrap();
    assert_eq!(s.bos, Some(meta["bos_token_id"].as_u64().unwrap() as u32));
    assert_eq!(s.eos, Some(meta["eos_token_id"].as_u64().unwrap() as u32));
    assert_eq!((s.unk, s.pad, s.eot), (Some(0), Some(2), None));
    assert!(!s.add_bos && !s.add_eos);
    assert_eq!(
        chat_template(&g).as_deref(),
        Some(meta["chat_template"].as_str().unwrap())
    );
    let tok = tokenizer_from_gguf(&g).unwrap();
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.decode(&[1, 504, 2], true).unwrap(), "The");
}
