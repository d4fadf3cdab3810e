//! `response_format` (`json_object` / `json_schema`) by constrained decoding: before each
//! token is sampled, every token whose bytes cannot continue a document of the grammar is
//! masked out, so the reply always parses (and, for a schema, has its required keys and
//! declared types).
//!
//! Pieces: [`TokenTexts`] (the bytes of every token id, and byte tries over them: built once
//! per tokenizer, shared), [`JsonGrammar`] (the compiled format, shared by requests that use
//! it), and [`JsonConstraint`] (per request: the parser state, and the
//! [`LogitsProcessor`] the engine thread calls). The mask walks the token trie with the parser,
//! dropping a whole subtree at the first byte the grammar refuses; inside a string, the tokens
//! that are plain text are allowed wholesale and only the others are walked.
//!
//! ```text
//! let texts = Arc::new(TokenTexts::from_tokenizer(&tokenizer));          // once per model
//! let grammar = parse_response_format(&body["response_format"])?;          // 400 on error
//! let processor = grammar.map(|g| JsonConstraint::new(texts.clone(), Arc::new(g), &stop_ids));
//! ```

mod byte_trie;
mod lexemes;
mod parser;
mod schema;
pub(crate) mod token_texts;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use kiln_engine::engine_thread::LogitsProcessor;
use serde_json::Value;

use parser::JsonState;
pub use schema::{JsonGrammar, ResponseFormatError, DEFAULT_MAX_WHITESPACE, MAX_PROPERTIES};
pub use token_texts::TokenTexts;

use token_texts::TokenTrie;

/// The grammar a request's `response_format` asks for: `None` for plain text (absent, null
/// or `{"type": "text"}`). Accepts the Workers AI form (`json_schema` is the schema) and the
/// OpenAI form (`json_schema: {name, schema, strict}`).
pub fn parse_response_format(format: &Value) -> Result<Option<JsonGrammar>, ResponseFormatError> {
    const FIELD: &str = "response_format";
    let err = |path: &str, message: String| ResponseFormatError {
        path: path.to_string(),
        message,
    };
    let obj = match format {
        Value::Null => return Ok(None),
        Value::Object(obj) => obj,
        other => return Err(err(FIELD, format!("must be an object, not {other}"))),
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(JsonGrammar::any_object())),
        Some("json_schema") => {
            let path = format!("{FIELD}.json_schema");
            let schema = obj.get("json_schema").ok_or_else(|| {
                err(
                    &path,
                    "is required when type is \"json_schema\"".to_string(),
                )
            })?;
            let (schema, path) = match schema.get("schema") {
                // OpenAI wraps the schema; a schema never has a `schema` keyword of its own.
                Some(inner) if inner.is_object() || inner.is_boolean() => {
                    (inner, format!("{path}.schema"))
                }
                _ => (schema, path),
            };
            JsonGrammar::from_schema(schema, &path).map(Some)
        }
        Some(other) => Err(err(
            &format!("{FIELD}.type"),
            format!("{other:?} is not one of \"json_object\", \"json_schema\", \"text\""),
        )),
        None => Err(err(
            &format!("{FIELD}.type"),
            "is required (\"json_object\" or \"json_schema\")".to_string(),
        )),
    }
}

/// A parser over the grammar, fed bytes: what the mask is computed from, usable on its own
/// (e.g. to check a finished reply).
#[derive(Clone, Debug)]
pub struct JsonMatcher {
    grammar: Arc<JsonGrammar>,
    state: JsonState,
}

impl JsonMatcher {
    pub fn new(grammar: Arc<JsonGrammar>) -> Self {
        Self {
            grammar,
            state: JsonState::new(),
        }
    }

    /// Whether appending `bytes` keeps a prefix of a document; does not change the state.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        let mut probe = self.state.clone();
        bytes.iter().all(|&b| probe.step(&self.grammar, b))
    }

    /// Appends `bytes` if that keeps a prefix of a document (returns false and changes
    /// nothing otherwise).
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut next = self.state.clone();
        if bytes.iter().all(|&b| next.step(&self.grammar, b)) {
            self.state = next;
            true
        } else {
            false
        }
    }

    /// The bytes so far are a whole document.
    pub fn can_end(&self) -> bool {
        self.state.can_end(&self.grammar)
    }

    /// The document is closed: only whitespace can follow.
    pub fn is_done(&self) -> bool {
        self.state.is_done()
    }

    #[cfg(test)]
    pub(crate) fn remaining_work(&self) -> usize {
        self.state.remaining_work(&self.grammar)
    }
}

/// The per-request [`LogitsProcessor`]: masks tokens that would break the document; once it
/// is complete, only the stop ids remain.
pub struct JsonConstraint {
    texts: Arc<TokenTexts>,
    grammar: Arc<JsonGrammar>,
    stop_ids: Vec<u32>,
    state: JsonState,
    /// The generated ids `state` has consumed.
    consumed: Vec<u32>,
    /// A token broke the grammar (only possible if the mask was not applied): stop.
    dead: bool,
    /// Allowed ids of the last mask, 64 a word.
    allowed: Vec<u64>,
    /// One parser state per trie depth, reused across steps.
    scratch: Vec<JsonState>,
}

impl JsonConstraint {
    /// `stop_ids`: the ids that end generation (eos, end of turn); they are the only ids
    /// allowed once the document is complete, and the fallback if nothing else is.
    pub fn new(texts: Arc<TokenTexts>, grammar: Arc<JsonGrammar>, stop_ids: &[u32]) -> Self {
        let words = texts.len().div_ceil(64);
        let depth = texts.all.max_depth + 1;
        Self {
            texts,
            grammar,
            stop_ids: stop_ids.to_vec(),
            state: JsonState::new(),
            consumed: Vec::new(),
            dead: false,
            allowed: vec![0; words],
            scratch: vec![JsonState::new(); depth],
        }
    }

    /// Builds the processor a request's `response_format` asks for (`None`: no constraint).
    pub fn from_response_format(
        texts: Arc<TokenTexts>,
        format: &Value,
        stop_ids: &[u32],
    ) -> Result<Option<Self>, ResponseFormatError> {
        Ok(parse_response_format(format)?.map(|g| Self::new(texts, Arc::new(g), stop_ids)))
    }

    /// Brings the parser up to `generated` (replaying from scratch if it is not an extension
    /// of what was consumed).
    fn sync(&mut self, generated: &[u32]) {
        if !generated.starts_with(&self.consumed) {
            self.state = JsonState::new();
            self.consumed.clear();
            self.dead = false;
        }
        for &id in &generated[self.consumed.len()..] {
            self.consumed.push(id);
            if self.dead {
                continue;
            }
            let ok = !self.texts.is_special(id)
                && match self.texts.bytes(id) {
                    Some(bytes) => bytes.iter().all(|&b| self.state.step(&self.grammar, b)),
                    None => false,
                };
            self.dead = !ok;
        }
    }

    /// Computes the allowed ids for the current state into `self.allowed`.
    fn compute_allowed(&mut self) {
        self.allowed.fill(0);
        if !self.dead && !self.state.is_done() {
            let texts = &self.texts;
            let mut walker = Walker {
                grammar: &self.grammar,
                start: &self.state,
                scratch: &mut self.scratch,
                allowed: &mut self.allowed,
            };
            match self.state.plain_text_exceptions(&self.grammar) {
                None => walker.walk(&texts.all, 0..texts.all.nodes.len()),
                Some(exceptions) => {
                    // Plain tokens wholesale; the few others, and the plain ones starting
                    // with an exceptional byte, by walking their tries.
                    for (w, p) in walker.allowed.iter_mut().zip(&texts.plain) {
                        *w |= p;
                    }
                    for &(b, _) in exceptions {
                        if let Some(node) = texts.all.root(b) {
                            for &id in texts.all.subtree_tokens(node) {
                                walker.allowed[id as usize / 64] &= !(1 << (id % 64));
                            }
                            walker.walk(&texts.all, node..texts.all.nodes[node].end as usize);
                        }
                    }
                    walker.walk(&texts.non_plain, 0..texts.non_plain.nodes.len());
                }
            }
        }
        let none = self.allowed.iter().all(|&w| w == 0);
        if none || self.dead || self.state.can_end(&self.grammar) {
            for &id in &self.stop_ids {
                if let Some(w) = self.allowed.get_mut(id as usize / 64) {
                    *w |= 1 << (id % 64);
                }
            }
        }
    }

    /// Whether `id` was allowed by the last mask (for tests and diagnostics).
    pub fn allowed(&self, id: u32) -> bool {
        self.allowed
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Ids allowed by the last mask.
    pub fn allowed_ids(&self) -> Vec<u32> {
        (0..self.texts.len() as u32)
            .filter(|&id| self.allowed(id))
            .collect()
    }
}

/// Walks token tries with the parser, one state per depth, allowing the tokens at every
/// node the parser accepts and skipping the subtree of every node it refuses.
struct Walker<'a> {
    grammar: &'a JsonGrammar,
    start: &'a JsonState,
    scratch: &'a mut [JsonState],
    allowed: &'a mut [u64],
}

impl Walker<'_> {
    /// Walks the preorder node range `nodes` (whole subtrees, starting at depth 1).
    fn walk(&mut self, trie: &TokenTrie, nodes: std::ops::Range<usize>) {
        self.scratch[0].clone_from(self.start);
        let mut i = nodes.start;
        while i < nodes.end {
            let node = trie.nodes[i];
            let depth = node.depth as usize;
            let (parents, rest) = self.scratch.split_at_mut(depth);
            let state = &mut rest[0];
            state.clone_from(&parents[depth - 1]);
            if state.step(self.grammar, node.byte) {
                for &id in trie.tokens(i) {
                    self.allowed[id as usize / 64] |= 1 << (id % 64);
                }
                i += 1;
            } else {
                i = node.end as usize;
            }
        }
    }
}

impl LogitsProcessor for JsonConstraint {
    fn process(&mut self, generated: &[u32], logits: &mut [f32]) {
        self.sync(generated);
        self.compute_allowed();
        for (id, logit) in logits.iter_mut().enumerate() {
            if !self.allowed(id as u32) {
                *logit = f32::NEG_INFINITY;
            }
        }
    }
}
