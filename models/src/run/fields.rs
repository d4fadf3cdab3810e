//! Typed access to a JSON input object, with errors that name the field.

use super::error::RunError;
use serde_json::{Map, Value};

pub struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub fn new(input: &'a Value) -> Result<Self, RunError> {
        match input {
            Value::Object(map) => Ok(Self { map }),
            other => Err(RunError::bad_input(format!(
                "the input must be a JSON object, got {}",
                kind(other)
            ))),
        }
    }

    /// A 400 naming the first field that is not in `known` (a typo must not be ignored).
    pub fn only(&self, known: &[&str]) -> Result<(), RunError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(RunError::bad_input(format!(
                "unknown field {k:?} (accepted: {})",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// A present, non-null field.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn opt_bool(f: &Fields<'_>, name: &str) -> Result<Option<bool>, RunError> {
    match f.get(name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(RunError::bad_input(format!(
            "{name}: expected a boolean, got {}",
            kind(v)
        ))),
    }
}

pub fn opt_f32(f: &Fields<'_>, name: &str) -> Result<Option<f32>, RunError> {
    match f.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().map(|x| x as f32)),
        Some(v) => Err(RunError::bad_input(format!(
            "{name}: expected a number, got {}",
            kind(v)
        ))),
    }
}

/// A non-negative integer (a float with no fraction, like 256.0, is accepted).
pub fn opt_u64(f: &Fields<'_>, name: &str) -> Result<Option<u64>, RunError> {
    match f.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                return Ok(Some(u));
            }
            match n.as_f64() {
                Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 1e19 => Ok(Some(x as u64)),
                _ => Err(RunError::bad_input(format!(
                    "{name}: expected a non-negative integer, got {n}"
                ))),
            }
        }
        Some(v) => Err(RunError::bad_input(format!(
            "{name}: expected an integer, got {}",
            kind(v)
        ))),
    }
}
