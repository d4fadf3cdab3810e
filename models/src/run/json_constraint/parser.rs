//! The incremental JSON recogniser: a pushdown automaton over bytes that accepts exactly the
//! prefixes of documents the grammar allows (RFC 8259 syntax, UTF-8 that `serde_json`
//! accepts, the schema's shapes).
//!
//! A state is a stack of `Copy` frames plus the lexical state of the token being read, so
//! `clone_from` into a reused state is a memcpy: the token-trie walk keeps one state per
//! depth and never allocates.

use super::byte_trie::ROOT;
use super::lexemes::{num_accepting, num_step, string_sub_step, NumStep, NumSub, StrSub};
use super::schema::{
    JsonGrammar, NodeId, ANY, ARRAY, BOOLEAN, INTEGER, NULL, NUMBER, OBJECT, STRING,
};

/// A key that left the schema's key trie (a free key, allowed by additionalProperties).
const OFF_TRIE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObjPhase {
    /// After `{`: a key or `}`.
    Open,
    /// After `,`: a key.
    Comma,
    /// After a key: `:`.
    Colon,
    /// After `:`: the value.
    Value,
    /// After a value: `,` or `}`.
    AfterValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArrPhase {
    Open,
    Comma,
    AfterValue,
}

#[derive(Clone, Copy, Debug)]
enum Frame {
    Top {
        done: bool,
    },
    Array {
        items: NodeId,
        phase: ArrPhase,
    },
    Object {
        obj: u32,
        phase: ObjPhase,
        seen: u128,
        /// The schema of the value after the current key.
        value: NodeId,
    },
}

#[derive(Clone, Copy, Debug)]
enum Lex {
    /// Between tokens: the top frame says what may come.
    None,
    /// `key`: the position in the object's key trie, or `None` for a string value.
    Str {
        key: Option<u32>,
        sub: StrSub,
    },
    Num {
        int_only: bool,
        sub: NumSub,
        digits: u8,
    },
    Literal {
        text: &'static [u8],
        pos: u8,
    },
    Enum {
        trie: u32,
        node: u32,
    },
}

#[derive(Debug)]
pub(crate) struct JsonState {
    stack: Vec<Frame>,
    lex: Lex,
    /// Consecutive whitespace bytes between tokens.
    ws: u8,
}

impl Clone for JsonState {
    fn clone(&self) -> Self {
        Self {
            stack: self.stack.clone(),
            lex: self.lex,
            ws: self.ws,
        }
    }

    fn clone_from(&mut self, other: &Self) {
        self.stack.clone_from(&other.stack);
        self.lex = other.lex;
        self.ws = other.ws;
    }
}

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonState {
    pub(crate) fn new() -> Self {
        Self {
            stack: vec![Frame::Top { done: false }],
            lex: Lex::None,
            ws: 0,
        }
    }

    /// The top-level value is closed: nothing but whitespace may follow.
    pub(crate) fn is_done(&self) -> bool {
        matches!(
            (self.stack.as_slice(), self.lex),
            ([Frame::Top { done: true }], Lex::None)
        )
    }

    /// The bytes so far are a whole document (a top-level number may still grow).
    pub(crate) fn can_end(&self, g: &JsonGrammar) -> bool {
        if self.is_done() {
            return true;
        }
        if self.stack.len() != 1 {
            return false;
        }
        match self.lex {
            Lex::Num { sub, .. } => num_accepting(sub),
            Lex::Enum { trie, node } => g.enums[trie as usize].terminal(node).is_some(),
            _ => false,
        }
    }

    /// Open containers, plus one for a token being read, plus the required keys still
    /// missing, plus one for a free key while some are: how far from complete (tests steer
    /// random generation with it).
    #[cfg(test)]
    pub(crate) fn remaining_work(&self, g: &JsonGrammar) -> usize {
        let missing: u32 = self
            .stack
            .iter()
            .map(|f| match f {
                Frame::Object { obj, seen, .. } => {
                    (g.objects[*obj as usize].required & !seen).count_ones()
                }
                _ => 0,
            })
            .sum();
        let free_key = matches!(
            self.lex,
            Lex::Str {
                key: Some(OFF_TRIE),
                ..
            }
        ) && missing > 0;
        self.stack.len()
            + usize::from(!matches!(self.lex, Lex::None))
            + missing as usize
            + usize::from(free_key)
    }

    /// When plain text (see `TokenTexts`) is accepted whole, without changing what may
    /// follow: `Some(except)`, where tokens starting with a byte of `except` are the
    /// exception (they may continue a declared key instead). `None` otherwise.
    pub(crate) fn plain_text_exceptions<'g>(&self, g: &'g JsonGrammar) -> Option<&'g [(u8, u32)]> {
        let Lex::Str {
            key,
            sub: StrSub::Normal,
        } = self.lex
        else {
            return None;
        };
        match key {
            // A string value, or a free key (off the key trie): plain text keeps it so.
            None | Some(OFF_TRIE) => Some(&[]),
            // On the key trie, a byte off it starts a free key, if free keys are allowed.
            Some(node) => match self.stack.last() {
                Some(Frame::Object { obj, .. }) => {
                    let o = &g.objects[*obj as usize];
                    o.additional.map(|_| o.keys.children(node))
                }
                _ => None,
            },
        }
    }

    /// Consumes one byte; false (with the state then unspecified) when it cannot extend a
    /// document of the grammar.
    pub(crate) fn step(&mut self, g: &JsonGrammar, b: u8) -> bool {
        if !is_ws(b) {
            self.ws = 0;
        }
        match self.lex {
            Lex::None => self.structural(g, b),
            Lex::Str { key, sub } => self.string_byte(g, key, sub, b),
            Lex::Num {
                int_only,
                sub,
                digits,
            } => match num_step(int_only, sub, digits, b) {
                NumStep::Next(sub, digits) => {
                    self.lex = Lex::Num {
                        int_only,
                        sub,
                        digits,
                    };
                    true
                }
                NumStep::End => {
                    self.lex = Lex::None;
                    self.value_done();
                    self.structural(g, b)
                }
                NumStep::Reject => false,
            },
            Lex::Literal { text, pos } => {
                if text[pos as usize] != b {
                    return false;
                }
                if pos as usize + 1 == text.len() {
                    self.lex = Lex::None;
                    self.value_done();
                } else {
                    self.lex = Lex::Literal { text, pos: pos + 1 };
                }
                true
            }
            Lex::Enum { trie, node } => {
                let t = &g.enums[trie as usize];
                if let Some(c) = t.child(node, b) {
                    self.enter_enum(g, trie, c);
                    true
                } else if t.terminal(node).is_some() {
                    // A number literal (`1` of [1, 12]) ends at the first byte after it.
                    self.lex = Lex::None;
                    self.value_done();
                    self.structural(g, b)
                } else {
                    false
                }
            }
        }
    }

    fn enter_enum(&mut self, g: &JsonGrammar, trie: u32, node: u32) {
        if g.enums[trie as usize].is_leaf(node) {
            self.lex = Lex::None;
            self.value_done();
        } else {
            self.lex = Lex::Enum { trie, node };
        }
    }

    fn structural(&mut self, g: &JsonGrammar, b: u8) -> bool {
        if is_ws(b) {
            if self.ws >= g.max_whitespace {
                return false;
            }
            self.ws += 1;
            return true;
        }
        let Some(top) = self.stack.last_mut() else {
            return false;
        };
        match top {
            Frame::Top { done: false } => self.value_start(g, g.root, b),
            Frame::Top { done: true } => false,
            Frame::Array { items, phase } => match (*phase, b) {
                (ArrPhase::Open | ArrPhase::AfterValue, b']') => {
                    self.stack.pop();
                    self.value_done();
                    true
                }
                (ArrPhase::AfterValue, b',') => {
                    *phase = ArrPhase::Comma;
                    true
                }
                (ArrPhase::Open | ArrPhase::Comma, _) => {
                    let items = *items;
                    self.value_start(g, items, b)
                }
                _ => false,
            },
            Frame::Object {
                obj,
                phase,
                seen,
                value,
            } => {
                let o = &g.objects[*obj as usize];
                let can_add_key = o.additional.is_some() || o.declared & !*seen != 0;
                let can_close = o.required & !*seen == 0;
                match (*phase, b) {
                    (ObjPhase::Open | ObjPhase::Comma, b'"') if can_add_key => {
                        let key = if o.has_props() { ROOT } else { OFF_TRIE };
                        self.lex = Lex::Str {
                            key: Some(key),
                            sub: StrSub::Normal,
                        };
                        true
                    }
                    (ObjPhase::Open | ObjPhase::AfterValue, b'}') if can_close => {
                        self.stack.pop();
                        self.value_done();
                        true
                    }
                    (ObjPhase::AfterValue, b',') if can_add_key => {
                        *phase = ObjPhase::Comma;
                        true
                    }
                    (ObjPhase::Colon, b':') => {
                        *phase = ObjPhase::Value;
                        true
                    }
                    (ObjPhase::Value, _) => {
                        let value = *value;
                        self.value_start(g, value, b)
                    }
                    _ => false,
                }
            }
        }
    }

    fn value_start(&mut self, g: &JsonGrammar, id: NodeId, b: u8) -> bool {
        let node = &g.nodes[id as usize];
        if let Some(trie) = node.enum_trie {
            return match g.enums[trie as usize].child(ROOT, b) {
                Some(c) => {
                    self.enter_enum(g, trie, c);
                    true
                }
                None => false,
            };
        }
        let t = node.types;
        // Only free-form containers are depth-limited: a schema's nesting is its own.
        let deeper_ok = id != ANY || self.stack.len() < g.max_depth;
        let number = |sub, digits| Lex::Num {
            int_only: t & NUMBER == 0,
            sub,
            digits,
        };
        self.lex = match b {
            b'{' if t & OBJECT != 0 && deeper_ok => {
                self.stack.push(Frame::Object {
                    obj: node.object,
                    phase: ObjPhase::Open,
                    seen: 0,
                    value: ANY,
                });
                return true;
            }
            b'[' if t & ARRAY != 0 && deeper_ok => {
                self.stack.push(Frame::Array {
                    items: node.items,
                    phase: ArrPhase::Open,
                });
                return true;
            }
            b'"' if t & STRING != 0 => Lex::Str {
                key: None,
                sub: StrSub::Normal,
            },
            _ if t & (NUMBER | INTEGER) == 0 => return self.literal_start(t, b),
            b'-' => number(NumSub::Minus, 0),
            b'0' => number(NumSub::Zero, 1),
            b'1'..=b'9' => number(NumSub::Int, 1),
            _ => return self.literal_start(t, b),
        };
        true
    }

    fn literal_start(&mut self, t: u8, b: u8) -> bool {
        let text: &'static [u8] = match b {
            b't' if t & BOOLEAN != 0 => b"true",
            b'f' if t & BOOLEAN != 0 => b"false",
            b'n' if t & NULL != 0 => b"null",
            _ => return false,
        };
        self.lex = Lex::Literal { text, pos: 1 };
        true
    }

    fn value_done(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Top { done }) => *done = true,
            Some(Frame::Array { phase, .. }) => *phase = ArrPhase::AfterValue,
            Some(Frame::Object { phase, .. }) => *phase = ObjPhase::AfterValue,
            None => {}
        }
    }

    fn string_byte(&mut self, g: &JsonGrammar, key: Option<u32>, sub: StrSub, b: u8) -> bool {
        if sub == StrSub::Normal && b == b'"' {
            self.lex = Lex::None;
            return match key {
                None => {
                    self.value_done();
                    true
                }
                Some(node) => self.key_done(g, node),
            };
        }
        let Some(sub) = string_sub_step(sub, b) else {
            return false;
        };
        let key = match key {
            None => None,
            Some(node) => match self.key_step(g, node, b) {
                Some(next) => Some(next),
                None => return false,
            },
        };
        self.lex = Lex::Str { key, sub };
        true
    }

    /// Follows a key byte through the object's key trie.
    fn key_step(&self, g: &JsonGrammar, node: u32, b: u8) -> Option<u32> {
        let Some(Frame::Object { obj, seen, .. }) = self.stack.last() else {
            return None;
        };
        let o = &g.objects[*obj as usize];
        let free_ok = o.additional.is_some();
        if node == OFF_TRIE {
            // A free key must not be able to spell a declared key another way.
            return (!o.has_props() || b != b'\\').then_some(OFF_TRIE);
        }
        match o.keys.child(node, b) {
            Some(c) if free_ok || o.keys.below(c) & o.declared & !*seen != 0 => Some(c),
            None if free_ok && b != b'\\' => Some(OFF_TRIE),
            _ => None,
        }
    }

    fn key_done(&mut self, g: &JsonGrammar, node: u32) -> bool {
        let Some(Frame::Object {
            obj,
            phase,
            seen,
            value,
        }) = self.stack.last_mut()
        else {
            return false;
        };
        let o = &g.objects[*obj as usize];
        let declared = if node == OFF_TRIE {
            None
        } else {
            o.keys.terminal(node)
        };
        match declared {
            Some(p) => {
                let bit = 1u128 << p;
                if *seen & bit != 0 || o.declared & bit == 0 {
                    return false;
                }
                *seen |= bit;
                *value = o.props[p as usize];
            }
            None => match o.additional {
                Some(n) => *value = n,
                None => return false,
            },
        }
        *phase = ObjPhase::Colon;
        true
    }
}
