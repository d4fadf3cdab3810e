//! Tests of constrained JSON decoding: the byte grammar (tables and a differential check
//! against serde_json), the schema subset, random generation over a toy vocabulary, and the
//! real SmolLM2 vocabulary.

mod grammar_tests;
mod real_vocab_tests;
mod schema_tests;
mod simulation_tests;

use std::sync::Arc;

use serde_json::Value;

use super::{JsonGrammar, JsonMatcher};

/// SplitMix64: a seeded generator, so every failure is reproducible from its seed.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(super) fn schema_grammar(schema: &Value) -> Arc<JsonGrammar> {
    match JsonGrammar::from_schema(schema, "schema") {
        Ok(g) => Arc::new(g),
        Err(e) => panic!("schema {schema} should compile: {e}"),
    }
}

/// Byte index of the first byte the grammar refuses (None: all accepted), and whether the
/// bytes then make a whole document.
pub(super) fn run(grammar: &Arc<JsonGrammar>, text: &[u8]) -> (Option<usize>, bool) {
    let mut m = JsonMatcher::new(grammar.clone());
    for (i, b) in text.iter().enumerate() {
        if !m.feed(std::slice::from_ref(b)) {
            return (Some(i), false);
        }
    }
    (None, m.can_end())
}

/// Checks `value` against the schema subset the grammar enforces (`$ref` only to `#`).
pub(super) fn conforms(value: &Value, schema: &Value, root: &Value) -> Result<(), String> {
    let Some(s) = schema.as_object() else {
        return match schema {
            Value::Bool(true) => Ok(()),
            _ => Err(format!("{value} against schema {schema}")),
        };
    };
    if s.get("$ref").and_then(Value::as_str) == Some("#") {
        return conforms(value, root, root);
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return if values.contains(value) {
            Ok(())
        } else {
            Err(format!("{value} is not one of {values:?}"))
        };
    }
    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            other => other.as_str().into_iter().collect(),
        };
        let ok = names.iter().any(|&n| match n {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{value} is not of type {t}"));
        }
    }
    if let Some(obj) = value.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for name in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                return Err(format!("required key {name:?} missing from {value}"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => conforms(v, sub, root)?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("key {k:?} is not allowed in {value}"))
                    }
                    Some(sub @ Value::Object(_)) => conforms(v, sub, root)?,
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), value.as_array()) {
        for v in arr {
            conforms(v, items, root)?;
        }
    }
    Ok(())
}
