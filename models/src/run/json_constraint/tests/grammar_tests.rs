use std::sync::Arc;

use serde_json::Value;

use super::{run, Rng};
use crate::run::json_constraint::{JsonGrammar, JsonMatcher, DEFAULT_MAX_WHITESPACE};

fn any() -> Arc<JsonGrammar> {
    Arc::new(JsonGrammar::any_value())
}

const VALID: &[&str] = &[
    "{}",
    "[]",
    "0",
    "-0",
    "12",
    "-12.5e+3",
    "1E5",
    "0.000",
    "true",
    "false",
    "null",
    r#""""#,
    r#""plain text with spaces""#,
    r#""\"\\\/\b\f\n\r\t""#,
    r#""\u00e9\u00E9 \ud83d\ude00""#,
    "\"é 😀 中文\"",
    r#"{"a":1}"#,
    " { \"a\" : [ 1 , 2.5 , -0.1e-10 , true , false , null , \"x\" ] } ",
    "\n\t[\r\n[[]], {}, {\"\": \"\"}]\n",
    r#"{"a":{"b":{"c":[{"d":null}]}}}"#,
    r#"{"dup":1,"dup":2}"#,
    r#"[1,[2,[3,[4]]],"5",{"6":7}]"#,
];

/// Invalid documents with the byte index where the grammar must stop them.
const INVALID: &[(&str, usize)] = &[
    ("{,}", 1),
    ("[1,]", 3),
    ("{\"a\"}", 4),
    ("{\"a\":}", 5),
    ("{\"a\" 1}", 5),
    ("{'a':1}", 1),
    ("{\"a\":1,}", 7),
    ("{\"a\":1}}", 7),
    ("[1 2]", 3),
    ("01", 1),
    ("[01]", 2),
    ("-a", 1),
    ("+1", 0),
    (".5", 0),
    ("1.e5", 2),
    ("[1e+]", 4),
    ("[1e]", 3),
    ("tru e", 3),
    ("nul}", 3),
    ("True", 0),
    ("\"\\x\"", 2),
    ("\"\\u12G4\"", 5),
    ("\"\\ud800x\"", 7),
    ("\"\\ud800\\n\"", 8),
    ("\"\\udc00\"", 4),
    ("\"\\ud800\\ud800\"", 10),
    ("\"a\nb\"", 2),
    ("\"\u{1}\"", 1),
    ("]", 0),
    ("}", 0),
];

#[test]
fn valid_documents_are_accepted_whole_and_at_every_prefix() {
    let g = any();
    for doc in VALID {
        assert!(
            serde_json::from_str::<Value>(doc).is_ok(),
            "table error: {doc:?} is not JSON"
        );
        let (refused, complete) = run(&g, doc.as_bytes());
        assert_eq!(refused, None, "{doc:?} refused at byte {refused:?}");
        assert!(complete, "{doc:?} not complete");
        for cut in 1..doc.len() {
            if !doc.is_char_boundary(cut) {
                continue;
            }
            let prefix = &doc[..cut];
            let (refused, _) = run(&g, prefix.as_bytes());
            assert_eq!(refused, None, "prefix {prefix:?} refused");
        }
    }
}

#[test]
fn invalid_documents_are_refused_at_the_first_bad_byte() {
    let g = any();
    for &(doc, at) in INVALID {
        assert!(
            serde_json::from_str::<Value>(doc).is_err(),
            "table error: {doc:?} is JSON"
        );
        let (refused, _) = run(&g, doc.as_bytes());
        assert_eq!(refused, Some(at), "{doc:?}");
    }
}

#[test]
fn invalid_utf8_in_strings_is_refused() {
    let g = any();
    let cases: &[(&[u8], usize)] = &[
        (b"\"\xff\"", 1),
        (b"\"\xc0\x80\"", 1),         // overlong
        (b"\"\xe0\x80\x80\"", 2),     // overlong 3-byte
        (b"\"\xed\xa0\x80\"", 2),     // an encoded surrogate
        (b"\"\xf4\x90\x80\x80\"", 2), // above U+10FFFF
        (b"\"\xc3\"", 2),             // truncated
        (b"\"\xe2\x82\"", 3),
    ];
    for &(doc, at) in cases {
        assert!(serde_json::from_slice::<Value>(doc).is_err());
        assert_eq!(run(&g, doc).0, Some(at), "{doc:?}");
    }
    // The same characters split at every byte stay acceptable prefixes.
    let ok = "\"é€😀\"".as_bytes();
    assert_eq!(run(&g, ok), (None, true));
}

#[test]
fn incomplete_prefixes_are_accepted_but_not_complete() {
    let g = any();
    for prefix in [
        "{",
        "{\"a\"",
        "{\"a\":",
        "[1,",
        "\"abc",
        "tr",
        "-",
        "1.",
        "1e",
        "1e-",
        "\"\\u00",
        "\"\\ud83d",
        "\"\\ud83d\\",
        "\"\\ud83d\\u",
        "[{\"a\":[",
    ] {
        assert_eq!(run(&g, prefix.as_bytes()), (None, false), "{prefix:?}");
    }
}

#[test]
fn a_top_level_number_can_end_or_grow() {
    let mut m = JsonMatcher::new(any());
    assert!(m.feed(b"12"));
    assert!(m.can_end() && !m.is_done());
    assert!(m.accepts(b"3") && m.accepts(b".5") && m.accepts(b" "));
    assert!(!m.accepts(b"}") && !m.accepts(b"x"));
    assert!(m.feed(b" "));
    assert!(m.is_done() && m.can_end());
    assert!(
        !m.accepts(b"3"),
        "nothing but whitespace after a closed number"
    );
}

#[test]
fn accepts_does_not_change_the_state_and_feed_is_all_or_nothing() {
    let mut m = JsonMatcher::new(any());
    assert!(m.feed(b"{\"a\""));
    assert!(m.accepts(b": 1}"));
    assert!(!m.accepts(b", 1}"));
    assert!(!m.feed(b": 1]"), "a refused feed");
    assert!(m.feed(b":1}"), "the state is as before the refused feed");
    assert!(m.is_done());
}

#[test]
fn whitespace_runs_are_capped() {
    let g = any();
    let cap = DEFAULT_MAX_WHITESPACE as usize;
    let ok = format!("[{}1]", " ".repeat(cap));
    assert_eq!(run(&g, ok.as_bytes()), (None, true));
    let long = format!("[{}1]", " ".repeat(cap + 1));
    assert_eq!(run(&g, long.as_bytes()).0, Some(1 + cap));
    // The cap is per run: whitespace again after a token is fine, and string content is
    // not whitespace between tokens.
    let runs = format!("[{sp}1,{sp}\"{sp}{sp}\"]", sp = " ".repeat(cap));
    assert_eq!(run(&g, runs.as_bytes()), (None, true));
    let tight = Arc::new(JsonGrammar::any_value().with_max_whitespace(2));
    assert_eq!(run(&tight, b"[  1 ,  2]"), (None, true));
    assert_eq!(run(&tight, b"[   1]").0, Some(3));
}

#[test]
fn number_digit_caps_keep_serde_json_in_range() {
    let g = any();
    assert_eq!(run(&g, b"1e99"), (None, true));
    assert_eq!(run(&g, b"1e999").0, Some(4), "an exponent of three digits");
    let int64 = "9".repeat(64);
    assert_eq!(run(&g, int64.as_bytes()), (None, true));
    assert_eq!(run(&g, format!("{int64}9").as_bytes()).0, Some(64));
    let i = Arc::new(
        JsonGrammar::from_schema(&serde_json::json!({"type": "integer"}), "s").expect("schema"),
    );
    let int18 = "9".repeat(18);
    assert_eq!(run(&i, int18.as_bytes()), (None, true));
    assert_eq!(run(&i, format!("{int18}9").as_bytes()).0, Some(18));
}

#[test]
fn free_form_nesting_is_capped() {
    let g = any();
    // The top frame counts: 63 arrays fit in the default depth of 64.
    let deep = format!("{}{}", "[".repeat(63), "]".repeat(63));
    assert_eq!(run(&g, deep.as_bytes()), (None, true));
    let deeper = "[".repeat(64);
    assert_eq!(run(&g, deeper.as_bytes()).0, Some(63));
}

/// Random JSON values, written compactly or pretty, then one random edit: the grammar must
/// agree with serde_json on every document (all stay within the caps).
#[test]
fn agrees_with_serde_json_on_mutated_documents() {
    let g = any();
    let alphabet = b"{}[]\":,. -+0123456789eEtrufalsn\\/bu\xc3\xa9\nx";
    let mut checked = 0;
    let mut agreed_valid = 0;
    for seed in 0..3000u64 {
        let mut rng = Rng::new(seed);
        let value = random_value(&mut rng, 0);
        let mut doc = if rng.below(2) == 0 {
            serde_json::to_vec(&value)
        } else {
            serde_json::to_vec_pretty(&value)
        }
        .expect("serialise");
        if seed % 4 != 0 && !doc.is_empty() {
            let at = rng.below(doc.len() + 1);
            let byte = alphabet[rng.below(alphabet.len())];
            match rng.below(3) {
                0 => doc.insert(at, byte),
                1 if at < doc.len() => {
                    doc.remove(at);
                }
                _ if at < doc.len() => doc[at] = byte,
                _ => doc.push(byte),
            }
        }
        let theirs = serde_json::from_slice::<Value>(&doc).is_ok();
        let (refused, complete) = run(&g, &doc);
        let ours = refused.is_none() && complete;
        assert_eq!(
            ours,
            theirs,
            "seed {seed}: {:?} (ours refused at {refused:?})",
            String::from_utf8_lossy(&doc)
        );
        checked += 1;
        agreed_valid += usize::from(ours);
    }
    println!("{checked} documents, {agreed_valid} valid, grammar == serde_json on all");
    assert!(agreed_valid > 500 && checked - agreed_valid > 500);
}

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let pick = if depth >= 4 {
        rng.below(5)
    } else {
        rng.below(7)
    };
    match pick {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => serde_json::json!((rng.next_u64() % 100_000) as i64 - 50_000),
        3 => serde_json::json!((rng.unit() - 0.5) * 1e6),
        4 => {
            let chars = ['a', 'é', '"', '\\', '\n', '😀', ' ', '/', '\u{1}', '中'];
            let n = rng.below(6);
            Value::String((0..n).map(|_| chars[rng.below(chars.len())]).collect())
        }
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(4))
                .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                .collect(),
        ),
    }
}
