use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::tokenizer::tests::tiny_llama3;

/// Pushes every id and flushes; returns the pieces.
fn stream<T: Borrow<Tokenizer>>(decoder: &mut IncrementalDecoder<T>, ids: &[u32]) -> Vec<String> {
    let mut pieces = Vec::new();
    for &id in ids {
        if let Some(piece) = decoder.push(id).expect("push") {
            assert!(!piece.is_empty(), "empty piece emitted");
            pieces.push(piece);
        }
    }
    let rest = decoder.finish().expect("finish");
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

const REAL_TEXTS: &[&str] = &[
    "Hello, world! The capital of France is Paris.",
    "emoji 🙂🚀👩‍👩‍👧 and CJK 你好，世界 — 東京は日本の首都です。",
    "  leading spaces,\ttabs\nand newlines\n\n",
    "naïve café crème brûlée 🇫🇷",
];

#[test]
fn byte_level_real_text_streams_exactly_and_never_splits_a_character() {
    let tok = tiny_llama3();
    let mut split_somewhere = false;
    for text in REAL_TEXTS {
        let ids = tok.encode(text, false).expect("encode");
        for &id in &ids {
            split_somewhere |= tok
                .decode(&[id], false)
                .expect("decode")
                .contains('\u{FFFD}');
        }
        let pieces = stream(&mut IncrementalDecoder::new(&tok, false), &ids);
        assert_eq!(pieces.concat(), *text);
        for piece in &pieces {
            assert!(
                !piece.contains('\u{FFFD}'),
                "half a character emitted: {piece:?}"
            );
        }
    }
    // Otherwise the test would not exercise the hold-back at all.
    assert!(
        split_somewhere,
        "no multi-byte character was split across tokens"
    );
}

/// xorshift64*: a fixed-seed generator, so a failure names a reproducible case.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn random_ids_concatenate_to_the_full_decode() {
    let tok = tiny_llama3();
    let vocab = tok.vocab_size() as u64;
    let mut rng = Rng(0x6b69_6c6e);
    for case in 0..300 {
        let len = rng.below(40) as usize;
        // Bias towards the first 256+ ids (single bytes) so partial characters are common.
        let ids: Vec<u32> = (0..len)
            .map(|_| if rng.below(2) == 0 { rng.below(300.min(vocab)) } else { rng.below(vocab) } as u32)
            .collect();
        for skip in [false, true] {
            let pieces = stream(&mut IncrementalDecoder::new(&tok, skip), &ids);
            let want = tok.decode(&ids, skip).expect("decode");
            assert_eq!(
                pieces.concat(),
                want,
                "case {case}, skip {skip}, ids {ids:?}"
            );
        }
    }
}

/// A Llama-2 style SentencePiece tokenizer: Metaspace, byte fallback, and a decoder that
/// strips the first token's leading space.
fn sentencepiece() -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
        vocab.insert(t.to_string(), json!(i));
    }
    for b in 0..=255u32 {
        vocab.insert(format!("<0x{b:02X}>"), json!(3 + b));
    }
    for (i, t) in ["▁", "▁Hello", "▁world", "!", "▁Paris", "你", "好"]
        .iter()
        .enumerate()
    {
        vocab.insert(t.to_string(), json!(259 + i));
    }
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let config = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false},
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    });
    let inner: tokenizers::Tokenizer = config
        .to_string()
        .parse()
        .expect("the in-test tokenizer.json is valid");
    Tokenizer::from_hf(inner)
}

fn sp_ids(tok: &Tokenizer, tokens: &[&str]) -> Vec<u32> {
    tokens
        .iter()
        .map(|t| {
            tok.token_to_id(t)
                .unwrap_or_else(|| panic!("{t} not in vocab"))
        })
        .collect()
}

#[test]
fn sentencepiece_leading_spaces_survive_streaming() {
    let tok = sentencepiece();
    let ids = sp_ids(&tok, &["<s>", "▁Hello", "▁world", "!", "▁Paris"]);
    // Decoded alone, a word loses its space: the reason for the prefix window.
    assert_eq!(tok.decode(&ids[2..3], false).expect("decode"), "world");
    let pieces = stream(&mut IncrementalDecoder::new(&tok, true), &ids);
    assert_eq!(pieces, ["Hello", " world", "!", " Paris"]);
    assert_eq!(pieces.concat(), tok.decode(&ids, true).expect("decode"));
    let with_special = stream(&mut IncrementalDecoder::new(&tok, false), &ids);
    assert_eq!(
        with_special.concat(),
        tok.decode(&ids, false).expect("decode")
    );
}

#[test]
fn sentencepiece_byte_fallback_holds_back_partial_characters() {
    let tok = sentencepiece();
    // 🙂 is F0 9F 99 82; é is C3 A9
    let ids = sp_ids(
        &tok,
        &[
            "▁Hello", "▁", "<0xF0>", "<0x9F>", "<0x99>", "<0x82>", "你", "<0xC3>", "<0xA9>", "好",
        ],
    );
    let mut decoder = IncrementalDecoder::new(&tok, false);
    let mut out = Vec::new();
    for &id in &ids {
        out.push(decoder.push(id).expect("push"));
    }
    assert_eq!(decoder.finish().expect("finish"), "");
    let out: Vec<Option<&str>> = out.iter().map(|p| p.as_deref()).collect();
    assert_eq!(
        out,
        [
            Some("Hello"),
            Some(" "),
            None,
            None,
            None,
            Some("🙂"),
            Some("你"),
            None,
            Some("é"),
            Some("好")
        ]
    );
}

#[test]
fn context_keeps_the_first_generated_space() {
    let tok = Arc::new(sentencepiece());
    let prompt = sp_ids(&tok, &["<s>", "▁Hello"]);
    let generated = sp_ids(&tok, &["▁world", "!"]);
    let mut decoder = IncrementalDecoder::with_context(Arc::clone(&tok), &prompt, false)
        .expect("context decodes");
    assert_eq!(stream(&mut decoder, &generated), [" world", "!"]);
}

#[test]
fn finish_flushes_a_dangling_partial_character_like_decode() {
    let tok = tiny_llama3();
    let ids = tok.encode("a🙂", false).expect("encode");
    let cut = &ids[..ids.len() - 1];
    let mut decoder = IncrementalDecoder::new(&tok, false);
    let pieces = stream(&mut decoder, cut);
    let want = tok.decode(cut, false).expect("decode");
    assert!(
        want.ends_with('\u{FFFD}'),
        "{want:?}: the emoji was not split"
    );
    assert_eq!(pieces.concat(), want);
    assert_eq!(decoder.finish().expect("second finish"), "");
}

#[test]
fn window_stays_small_over_a_long_generation() {
    let tok = tiny_llama3();
    let ids = tok
        .encode(&REAL_TEXTS.concat().repeat(20), false)
        .expect("encode");
    let mut decoder = IncrementalDecoder::new(&tok, false);
    let mut text = String::new();
    for &id in &ids {
        text.extend(decoder.push(id).expect("push"));
        assert!(
            decoder.ids.len() <= 16,
            "window grew to {}",
            decoder.ids.len()
        );
    }
    text.push_str(&decoder.finish().expect("finish"));
    assert_eq!(text, tok.decode(&ids, false).expect("decode"));
}

#[test]
fn out_of_vocab_id_is_an_error_and_the_stream_goes_on() {
    let tok = tiny_llama3();
    let ids = tok.encode("ok then", false).expect("encode");
    let mut decoder = IncrementalDecoder::new(&tok, false);
    assert!(decoder.push(u32::MAX).is_err());
    assert_eq!(stream(&mut decoder, &ids).concat(), "ok then");
}

#[test]
fn an_arc_decoder_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<IncrementalDecoder<Arc<Tokenizer>>>();
}
