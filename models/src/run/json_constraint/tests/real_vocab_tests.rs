//! Token texts of real tokenizers, and the constraint over SmolLM2's 49k vocabulary: the
//! mask lets a real reply through token by token, random replies parse, and the time of a
//! mask step is printed.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::simulation_tests::generate;
use super::{conforms, schema_grammar};
use crate::gguf::{special_tokens, tokenizer_from_gguf, GgufFile};
use crate::run::json_constraint::{JsonConstraint, JsonGrammar, TokenTexts};
use crate::tokenizer::Tokenizer;
use kiln_engine::engine_thread::LogitsProcessor;

/// Every token's bytes decode (lossily, as decode does) to what the tokenizer decodes it to.
fn assert_bytes_match_decode(tok: &Tokenizer, texts: &TokenTexts) -> usize {
    assert_eq!(texts.len(), tok.vocab_size());
    let mut partial = 0;
    for id in 0..texts.len() as u32 {
        let bytes = texts.bytes(id).expect("in range");
        let decoded = tok.decode(&[id], false).expect("decode");
        assert_eq!(
            String::from_utf8_lossy(bytes),
            decoded,
            "id {id} ({:?})",
            tok.id_to_token(id)
        );
        partial += usize::from(std::str::from_utf8(bytes).is_err());
    }
    partial
}

#[test]
fn byte_level_texts_of_the_tiny_llama3_fixture() {
    let tok = crate::tokenizer::tests::tiny_llama3();
    let texts = TokenTexts::from_tokenizer(&tok);
    assert_bytes_match_decode(&tok, &texts);
    let text = "Hi {\"é\": [1, \"😀\"]}\n";
    let ids = tok.encode(text, false).expect("encode");
    let joined: Vec<u8> = ids
        .iter()
        .flat_map(|&id| texts.bytes(id).expect("id").to_vec())
        .collect();
    assert_eq!(joined, text.as_bytes());
    let specials: Vec<u32> = (0..texts.len() as u32)
        .filter(|&id| texts.is_special(id))
        .collect();
    assert!(!specials.is_empty(), "the fixture has special tokens");
}

#[test]
fn sentencepiece_texts_map_metaspace_and_byte_fallback() {
    let json = json!({
        "version": "1.0",
        "added_tokens": [{"id": 0, "content": "</s>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null, "pre_tokenizer": null, "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": {"</s>": 0, "<0x0A>": 1, "<0xC3>": 2, "▁{": 3, "a▁b": 4, "▁": 5},
                  "merges": []}
    });
    let inner = tokenizers::Tokenizer::from_str(&json.to_string()).expect("tokenizer");
    let texts = TokenTexts::from_tokenizer(&Tokenizer::from_hf(inner));
    let bytes = |id| texts.bytes(id).expect("id").to_vec();
    assert!(texts.is_special(0));
    assert_eq!(bytes(1), b"\n");
    assert_eq!(bytes(2), vec![0xc3]);
    assert_eq!(
        bytes(3),
        b" {",
        "the leading space a lone decode would strip"
    );
    assert_eq!(bytes(4), b"a b");
    assert_eq!(bytes(5), b" ");
}

/// The trie node spelling `bytes`, found by descending child by child.
fn find(trie: &crate::run::json_constraint::token_texts::TokenTrie, bytes: &[u8]) -> Option<usize> {
    let mut range = 0..trie.nodes.len();
    let mut found = None;
    for (depth, &b) in bytes.iter().enumerate() {
        let mut i = range.start;
        found = None;
        while i < range.end {
            let node = trie.nodes[i];
            assert_eq!(node.depth as usize, depth + 1, "siblings share a depth");
            if node.byte == b {
                found = Some(i);
                break;
            }
            i = node.end as usize;
        }
        let at = found?;
        range = at + 1..trie.nodes[at].end as usize;
    }
    found
}

#[test]
fn a_128k_vocabulary_builds_fast_and_its_tries_hold_every_token() {
    let mut rng = super::Rng::new(128);
    let alphabet = b"etaoinshrdlucmfwypvbgkqjxz ETAOINSHRDLU0123456789.,;:!?'\"{}[]()-_/\\\n\t";
    let mut pieces: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    while pieces.len() < 128_256 {
        let len = 1 + rng.below(12);
        let mut p: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        if rng.below(8) == 0 {
            p.extend_from_slice("é中😀".as_bytes().get(..rng.below(9)).unwrap_or_default());
        }
        pieces.push(p);
    }
    let specials: Vec<u32> = (128_000..128_256).collect();
    let t = Instant::now();
    let texts = TokenTexts::from_pieces(pieces.clone(), &specials);
    let built = t.elapsed();
    println!(
        "128k synthetic vocabulary: {} + {} trie nodes built in {:.1} ms",
        texts.all.nodes.len(),
        texts.non_plain.nodes.len(),
        built.as_secs_f64() * 1e3
    );
    for (id, p) in pieces.iter().enumerate() {
        let id = id as u32;
        assert_eq!(texts.bytes(id), Some(p.as_slice()));
        let in_all = find(&texts.all, p).is_some_and(|n| texts.all.tokens(n).contains(&id));
        assert_eq!(in_all, !texts.is_special(id), "id {id} {p:?}");
        let plain = texts.plain[id as usize / 64] & (1 << (id % 64)) != 0;
        let in_non_plain =
            find(&texts.non_plain, p).is_some_and(|n| texts.non_plain.tokens(n).contains(&id));
        assert_eq!(
            in_non_plain,
            !texts.is_special(id) && !plain,
            "id {id} {p:?}"
        );
        if plain {
            assert!(std::str::from_utf8(p).is_ok() && !p.contains(&b'"'));
        }
    }
    // A subtree's tokens are exactly those whose text starts with its prefix.
    let node = texts.all.root(b'{').expect("tokens start with {");
    let mut expected: Vec<u32> = (0..128_000u32)
        .filter(|&id| pieces[id as usize].first() == Some(&b'{'))
        .collect();
    let mut got = texts.all.subtree_tokens(node).to_vec();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected);
}

fn smollm2_path() -> Option<std::path::PathBuf> {
    let home = std::env::var_os("KILN_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/kiln"))
        })?;
    let path = home
        .join("models/@hf/huggingfacetb/smollm2-135m-instruct")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    path.is_file().then_some(path)
}

fn stats(times: &mut [Duration]) -> String {
    times.sort();
    let total: Duration = times.iter().sum();
    format!(
        "{} steps: mean {:.3} ms, median {:.3} ms, max {:.3} ms",
        times.len(),
        total.as_secs_f64() * 1e3 / times.len() as f64,
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3
    )
}

/// Steps `constraint` through `ids` (which must all be allowed), timing each mask.
fn replay(constraint: &mut JsonConstraint, ids: &[u32], stop: u32, vocab: usize) -> Vec<Duration> {
    let mut logits = vec![0f32; vocab];
    let mut times = Vec::new();
    for i in 0..=ids.len() {
        logits.fill(0.0);
        let t = Instant::now();
        constraint.process(&ids[..i], &mut logits);
        times.push(t.elapsed());
        let next = ids.get(i).copied().unwrap_or(stop);
        assert!(
            logits[next as usize].is_finite(),
            "step {i}: token {next} masked"
        );
    }
    assert_eq!(
        constraint.allowed_ids(),
        vec![stop],
        "complete: only the stop id"
    );
    times
}

#[test]
fn smollm2_vocabulary_masks_a_real_reply_and_times_each_step() {
    let Some(path) = smollm2_path() else {
        eprintln!(
            "\n!!!!! SKIPPED smollm2_vocabulary_masks_a_real_reply_and_times_each_step: the \
             SmolLM2 GGUF is not installed (run scripts/fetch-models.sh) !!!!!\n"
        );
        return;
    };
    let gguf = GgufFile::open(&path).expect("open gguf");
    let tok = Tokenizer::from_hf(tokenizer_from_gguf(&gguf).expect("tokenizer"));
    let eos = special_tokens(&gguf)
        .expect("specials")
        .eos
        .expect("an eos id");
    let t = Instant::now();
    let texts = Arc::new(TokenTexts::from_tokenizer(&tok));
    let built = t.elapsed();
    let partial = assert_bytes_match_decode(&tok, &texts);
    println!(
        "SmolLM2: {} ids, {} trie nodes ({} outside plain strings), {partial} partial-UTF-8 \
         tokens; TokenTexts built in {:.1} ms",
        texts.len(),
        texts.all.nodes.len(),
        texts.non_plain.nodes.len(),
        built.as_secs_f64() * 1e3
    );
    assert!(
        partial > 0,
        "byte-level BPE has tokens that split characters"
    );

    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "country": {"type": "string"},
            "population": {"type": "integer"},
            "capital": {"type": "boolean"},
            "landmarks": {"type": "array", "items": {"type": "string"}},
            "climate": {"enum": ["oceanic", "continental", "desert"]}
        },
        "required": ["city", "population", "landmarks"],
        "additionalProperties": false
    });
    let reply =
        "{\n  \"city\": \"Paris\",\n  \"country\": \"France\",\n  \"population\": 2161000,\n  \
                 \"capital\": true,\n  \"landmarks\": [\"Eiffel Tower\", \"Louvre Museum\", \
                 \"Notre-Dame de Paris, a cathedral on the Île de la Cité\"],\n  \"climate\": \
                 \"oceanic\"\n}";
    let ids = tok.encode(reply, false).expect("encode");
    let grammar = schema_grammar(&schema);
    let mut c = JsonConstraint::new(texts.clone(), grammar.clone(), &[eos]);
    let mut times = replay(&mut c, &ids, eos, texts.len());
    println!(
        "json_schema reply of {} tokens: {}",
        ids.len(),
        stats(&mut times)
    );

    let object = Arc::new(JsonGrammar::any_object());
    let free = "{\"note\": \"Plain prose inside a string is the common case: long answers, \
                descriptions, summaries and so on, written token by token.\", \"n\": [1, 2.5, \
                -3e2, null, false], \"nested\": {\"k\": \"v\"}}";
    let ids = tok.encode(free, false).expect("encode");
    let mut c = JsonConstraint::new(texts.clone(), object, &[eos]);
    let mut times = replay(&mut c, &ids, eos, texts.len());
    println!(
        "json_object reply of {} tokens: {}",
        ids.len(),
        stats(&mut times)
    );

    // The slowest states walk the whole trie: a value start inside an array of anything.
    let mut c = JsonConstraint::new(texts.clone(), Arc::new(JsonGrammar::any_value()), &[eos]);
    let open = tok.encode("[", false).expect("encode");
    let mut logits = vec![0f32; texts.len()];
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            logits.fill(0.0);
            let t = Instant::now();
            c.process(&open, &mut logits);
            t.elapsed()
        })
        .collect();
    let allowed = logits.iter().filter(|l| l.is_finite()).count();
    println!(
        "value start after '[' ({allowed} tokens allowed): {}",
        stats(&mut times)
    );
    // The most work: the first byte of a key that may be declared or free, where nearly
    // every token is allowed and the whole trie is walked.
    let open_keys = schema_grammar(&json!({"properties": {"name": {"type": "string"}}}));
    let mut c = JsonConstraint::new(texts.clone(), open_keys, &[eos]);
    let key = tok.encode("{\"", false).expect("encode");
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            logits.fill(0.0);
            let t = Instant::now();
            c.process(&key, &mut logits);
            t.elapsed()
        })
        .collect();
    let allowed = logits.iter().filter(|l| l.is_finite()).count();
    println!(
        "key start, declared or free ({allowed} tokens allowed): {}",
        stats(&mut times)
    );

    // Random replies over the real vocabulary parse and conform; the first also checks every
    // mask against testing each of the 49k tokens on its own.
    for seed in 0..3 {
        let (bytes, steps) = generate(&texts, &grammar, eos, seed, seed == 0, 2000)
            .unwrap_or_else(|| panic!("seed {seed}: no eos after 2000 tokens"));
        let text = String::from_utf8(bytes).expect("UTF-8");
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        conforms(&value, &schema, &schema).unwrap_or_else(|e| panic!("{e}"));
        let shown: String = text.chars().take(200).collect();
        println!("random SmolLM2 reply, seed {seed} ({steps} tokens): {shown:?}");
    }
    // The Workers AI docs example leaves extra keys allowed, so most masks take the
    // plain-text shortcut with declared-key exceptions: every mask of a random walk must
    // still equal testing each token. (The test sampler cannot be relied on to finish such
    // a walk, as free keys never bring it closer to the required ones.)
    let open_schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "capital": {"type": "string"},
            "languages": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["name", "capital", "languages"]
    });
    let open = schema_grammar(&open_schema);
    for seed in 0..2 {
        let done = generate(&texts, &open, eos, seed, true, 150);
        println!(
            "open schema, seed {seed}: 150 masks equal brute force (finished: {})",
            done.is_some()
        );
    }
}
