//! Random generation under the constraint over a toy byte-level vocabulary: every finished
//! reply must parse with serde_json and conform to its schema, and every mask must equal
//! the brute-force answer (each token tested on its own).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{conforms, Rng};
use crate::run::json_constraint::{JsonConstraint, JsonGrammar, JsonMatcher, TokenTexts};
use kiln_engine::engine_thread::LogitsProcessor;

const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "{\"",
    "\"}",
    "\":",
    "\": ",
    "\":\"",
    "\", \"",
    "\",",
    ",\"",
    "},",
    "}]",
    "[{",
    "{}",
    "[]",
    "]}",
    "\"]",
    "[\"",
    "true",
    "false",
    "null",
    "tr",
    "ue",
    "nul",
    "fa",
    "\\u00",
    "e9",
    "\\ud83d",
    "\\ude00",
    "\\n",
    "\\\"",
    "\\\\",
    "\n  ",
    "  ",
    "\n",
    " ",
    "12",
    "3.14",
    "-0",
    "e+",
    "E-1",
    "0.",
    "007",
    "name",
    "\"name\"",
    "age",
    "\"age\": ",
    "score",
    "active",
    "nickname",
    "colour",
    "size",
    "tags",
    "address",
    "city",
    "zip",
    "red",
    "green",
    "blue",
    "\"red\"",
    "id",
    "value",
    "children",
    "hello",
    " world",
    "é",
    "中文",
    "😀",
    "Ā",
    "\"id\":",
    ",\"id\":",
    "\"rows\":",
    ",\"rows\": ",
    "\"value\":",
    "\"children\":",
    "\"k\":",
    "{\"k\": ",
    "\"city\":",
    "\"zip\":",
    "\"age\":",
    "\"colour\":",
    "\"address\":",
    "\"tags\":",
];

/// The toy vocabulary: every printable ASCII byte, the fragments, split multi-byte
/// characters, invalid bytes, an empty token, random concatenations, and two specials.
fn toy_vocab() -> (Arc<TokenTexts>, u32) {
    let mut pieces: Vec<Vec<u8>> = (0x20..=0x7eu8).map(|b| vec![b]).collect();
    pieces.extend(FRAGMENTS.iter().map(|f| f.as_bytes().to_vec()));
    pieces.extend([
        vec![0xc3],
        vec![0xa9],
        vec![0xf0, 0x9f],
        vec![0x98, 0x80],
        vec![0xe4, 0xb8],
        vec![0xad],
        vec![0xff],
        vec![0xc0, 0x80],
        vec![0x01],
        Vec::new(),
    ]);
    let mut rng = Rng::new(7);
    for _ in 0..1500 {
        let n = 2 + rng.below(2);
        let mut p = Vec::new();
        for _ in 0..n {
            p.extend_from_slice(FRAGMENTS[rng.below(FRAGMENTS.len())].as_bytes());
        }
        pieces.push(p);
    }
    let eos = pieces.len() as u32;
    pieces.push(b"<|eos|>".to_vec());
    pieces.push(b"<|pad|>".to_vec());
    let specials = [eos, eos + 1];
    (Arc::new(TokenTexts::from_pieces(pieces, &specials)), eos)
}

fn schemas() -> Vec<(&'static str, Option<Value>)> {
    vec![
        ("json_object", None),
        (
            "strict person",
            Some(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer"},
                    "score": {"type": "number"},
                    "active": {"type": "boolean"},
                    "nickname": {"type": ["string", "null"]},
                    "colour": {"enum": ["red", "green", "blue"]},
                    "size": {"enum": [1, 12, 2.5]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "address": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
                        "required": ["city", "zip"],
                        "additionalProperties": false
                    }
                },
                "required": ["name", "age", "colour", "address", "tags"],
                "additionalProperties": false
            })),
        ),
        (
            "open with typed extras",
            Some(json!({
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "rows": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
                },
                "required": ["id", "rows"],
                "additionalProperties": {"type": "integer"}
            })),
        ),
        (
            "recursive tree",
            Some(json!({
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#"}}
                },
                "required": ["value", "children"],
                "additionalProperties": false
            })),
        ),
        ("top-level integer", Some(json!({"type": "integer"}))),
        (
            "enum of mixed literals",
            Some(json!({"enum": ["red", "green", 1, 12, 2.5, null, true, {"k": [1]}]})),
        ),
        (
            "top-level array",
            Some(json!({"type": "array", "items": {
                "type": "object",
                "properties": {"k": {"type": "string"}, "v": {"type": ["integer", "null"]}},
                "required": ["k"]
            }})),
        ),
    ]
}

/// Samples with Gumbel noise plus a pull towards closing that grows with length (by the
/// nesting depth and missing required keys each candidate leaves), so that a random walk
/// finishes. Returns the reply bytes and the tokens it took, or None if there was no eos
/// within `max_steps`.
pub(super) fn generate(
    texts: &Arc<TokenTexts>,
    grammar: &Arc<JsonGrammar>,
    eos: u32,
    seed: u64,
    brute_force: bool,
    max_steps: usize,
) -> Option<(Vec<u8>, usize)> {
    let mut rng = Rng::new(seed);
    let mut constraint = JsonConstraint::new(texts.clone(), grammar.clone(), &[eos]);
    let mut matcher = JsonMatcher::new(grammar.clone());
    let mut generated = Vec::new();
    let mut reply = Vec::new();
    let mut logits = vec![0f32; texts.len()];
    for step in 0..max_steps {
        logits.fill(0.0);
        constraint.process(&generated, &mut logits);
        if brute_force {
            assert_eq!(
                constraint.allowed_ids(),
                brute_force_allowed(texts, &matcher, eos),
                "seed {seed} step {step}: mask differs from testing every token after {:?}",
                String::from_utf8_lossy(&reply)
            );
        }
        let pressure = step as f32 / 30.0;
        for (id, logit) in logits.iter_mut().enumerate() {
            if !logit.is_finite() {
                continue;
            }
            let bias = if id as u32 == eos {
                8.0
            } else {
                let bytes = texts.bytes(id as u32).unwrap_or_default();
                let mut after = matcher.clone();
                assert!(
                    after.feed(bytes),
                    "seed {seed}: the mask let through {bytes:?}"
                );
                let blanks = bytes.iter().filter(|b| b.is_ascii_whitespace()).count();
                -pressure * after.remaining_work() as f32 - blanks as f32
            };
            *logit = bias - (-(rng.unit().max(1e-12)).ln()).ln() as f32;
        }
        let (pick, best) =
            logits
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (i, &l)| if l > acc.1 { (i, l) } else { acc },
                );
        assert!(
            best.is_finite(),
            "seed {seed} step {step}: everything masked"
        );
        let pick = pick as u32;
        if pick == eos {
            assert!(
                matcher.can_end(),
                "eos offered before the document is complete"
            );
            return Some((reply, step));
        }
        let bytes = texts.bytes(pick).expect("in vocab");
        assert!(matcher.feed(bytes));
        reply.extend_from_slice(bytes);
        generated.push(pick);
    }
    None
}

fn brute_force_allowed(texts: &TokenTexts, matcher: &JsonMatcher, eos: u32) -> Vec<u32> {
    let mut ids: Vec<u32> = if matcher.is_done() {
        Vec::new()
    } else {
        (0..texts.len() as u32)
            .filter(|&id| {
                !texts.is_special(id)
                    && texts
                        .bytes(id)
                        .is_some_and(|b| !b.is_empty() && matcher.accepts(b))
            })
            .collect()
    };
    if ids.is_empty() || matcher.can_end() {
        ids.push(eos);
    }
    ids
}

#[test]
fn random_generation_always_parses_and_matches_the_schema() {
    let (texts, eos) = toy_vocab();
    let mut total = 0;
    let schemas = schemas();
    for (name, schema) in &schemas {
        let grammar = Arc::new(match schema {
            None => JsonGrammar::any_object(),
            Some(s) => JsonGrammar::from_schema(s, "schema").expect("compiles"),
        });
        let mut tokens = 0;
        for seed in 0..60u64 {
            let (reply, steps) = generate(&texts, &grammar, eos, seed, seed < 8, 2000)
                .unwrap_or_else(|| panic!("{name} seed {seed}: no eos after 2000 tokens"));
            tokens += steps;
            let text = String::from_utf8(reply)
                .unwrap_or_else(|e| panic!("{name} seed {seed}: not UTF-8: {e}"));
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} seed {seed}: {e}: {text:?}"));
            match schema {
                None => assert!(value.is_object(), "{name} seed {seed}: {text}"),
                Some(s) => {
                    if let Err(e) = conforms(&value, s, s) {
                        panic!("{name} seed {seed}: {e}: {text}");
                    }
                }
            }
            let shown: String = text.chars().take(160).collect();
            println!("{name} seed {seed:2} ({steps:3} tokens): {shown:?}");
            total += 1;
        }
        println!("{name}: 60 replies, {tokens} tokens, all parse and conform");
    }
    assert_eq!(total, 60 * schemas.len());
}

#[test]
fn from_response_format_builds_the_processor_or_a_400() {
    let (texts, eos) = toy_vocab();
    let build =
        |format: Value| JsonConstraint::from_response_format(texts.clone(), &format, &[eos]);
    assert!(build(json!({"type": "text"})).expect("text").is_none());
    assert!(build(Value::Null).expect("absent").is_none());
    let mut c = build(json!({"type": "json_object"}))
        .expect("json_object")
        .expect("a processor");
    let mut logits = vec![0f32; texts.len()];
    c.process(&[], &mut logits);
    let allowed: Vec<String> = c
        .allowed_ids()
        .iter()
        .map(|&id| String::from_utf8_lossy(texts.bytes(id).unwrap_or_default()).into_owned())
        .collect();
    assert!(!allowed.is_empty());
    for text in &allowed {
        assert!(
            text.trim_start().starts_with('{') || text.trim().is_empty(),
            "{text:?} cannot start an object"
        );
    }
    let err = build(json!({"type": "json_schema", "json_schema": {"type": "date"}}))
        .err()
        .expect("a bad schema");
    assert_eq!(err.path, "response_format.json_schema.type");
}

#[test]
fn the_mask_never_offers_empty_special_or_invalid_tokens() {
    let (texts, eos) = toy_vocab();
    let id_of = |s: &[u8]| {
        (0..texts.len() as u32)
            .find(|&id| texts.bytes(id) == Some(s))
            .expect("piece in vocab")
    };
    let mut c = JsonConstraint::new(texts.clone(), Arc::new(JsonGrammar::any_value()), &[eos]);
    // Inside a string, where almost anything goes.
    let mut logits = vec![0f32; texts.len() + 3];
    c.process(&[id_of(b"\"")], &mut logits);
    let never = [
        id_of(b""),
        id_of(&[0xff]),
        id_of(&[0xc0, 0x80]),
        id_of(&[0x01]),
        eos,
        eos + 1,
        texts.len() as u32,
        texts.len() as u32 + 2,
    ];
    for id in never {
        assert_eq!(logits[id as usize], f32::NEG_INFINITY, "id {id}");
    }
    for ok in [
        &[0xc3][..],
        &[0xf0, 0x9f],
        b"hello",
        "é".as_bytes(),
        b"\\u00",
    ] {
        assert_eq!(
            logits[id_of(ok) as usize],
            0.0,
            "{ok:?} belongs in a string"
        );
    }
    // The second half of a character only after its first half.
    let mut logits = vec![0f32; texts.len()];
    c.process(&[id_of(b"\""), id_of(&[0xc3])], &mut logits);
    assert!(c.allowed(id_of(&[0xa9])) && !c.allowed(id_of(b"a")));
}

#[test]
fn stop_ids_only_once_complete_and_as_the_last_resort() {
    let (texts, eos) = toy_vocab();
    let id_of = |s: &str| {
        (0..texts.len() as u32)
            .find(|&id| texts.bytes(id) == Some(s.as_bytes()))
            .expect("fragment in vocab")
    };
    let grammar = Arc::new(JsonGrammar::any_object());
    let mut c = JsonConstraint::new(texts.clone(), grammar, &[eos]);
    let mut logits = vec![0f32; texts.len()];
    let open = id_of("{");
    c.process(&[], &mut logits);
    assert!(!c.allowed(eos), "an empty reply is not a document");
    assert!(c.allowed(open) && !c.allowed(id_of("[")));
    let close = id_of("}");
    c.process(&[open], &mut logits);
    assert!(c.allowed(close) && !c.allowed(eos));
    c.process(&[open, close], &mut logits);
    assert_eq!(c.allowed_ids(), vec![eos], "complete: only eos");
    // A token that broke the grammar (a caller that ignored the mask): only eos.
    let mut c = JsonConstraint::new(texts.clone(), Arc::new(JsonGrammar::any_object()), &[eos]);
    c.process(&[id_of("[")], &mut logits);
    assert_eq!(c.allowed_ids(), vec![eos]);
    // A history that is not an extension of the last one (a replay) starts over.
    c.process(&[open], &mut logits);
    assert!(c.allowed(close) && !c.allowed(eos));
}
