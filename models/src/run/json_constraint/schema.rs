//! Compiles `response_format` (json_object, or a JSON Schema) into a [`JsonGrammar`]: a graph
//! of value nodes (allowed types, enum literals, object and array shapes) that the byte-level
//! parser walks.
//!
//! Supported JSON Schema keywords: `type` (a name or a list of names: object, array, string,
//! number, integer, boolean, null), `properties`, `required`, `additionalProperties` (boolean
//! or a schema), `items` (a schema), `enum`, `const`, `nullable` (OpenAPI), `$ref` to a local
//! pointer (`#`, `#/$defs/..`, `#/definitions/..`, recursion included) and boolean schemas.
//! Without `type`, a schema with `properties`/`required`/`additionalProperties` is an object
//! and one with `items` an array. Every other keyword is ignored, so the reply is still valid
//! JSON of the declared shape but not checked against them: `anyOf`/`oneOf`/`allOf`/`not`,
//! `pattern`, `format`, `minLength`/`maxLength`, `minimum`/`maximum`/`multipleOf`,
//! `minItems`/`maxItems`/`uniqueItems`, tuple `items` (an array) and `prefixItems`,
//! `patternProperties`, `propertyNames`, `dependentRequired`, `if`/`then`/`else`.
//!
//! Keys of an object with declared properties must be spelled as `serde_json` writes them
//! (no alternative escapes), keys are never repeated, an object closes only once its
//! required keys are present, and a property the schema makes impossible (e.g. a required
//! recursive `$ref`) is never offered.

use std::collections::HashMap;

use serde_json::Value;

use super::byte_trie::ByteTrie;

pub(crate) type NodeId = u32;

pub(crate) const OBJECT: u8 = 1;
pub(crate) const ARRAY: u8 = 2;
pub(crate) const STRING: u8 = 4;
pub(crate) const NUMBER: u8 = 8;
pub(crate) const INTEGER: u8 = 16;
pub(crate) const BOOLEAN: u8 = 32;
pub(crate) const NULL: u8 = 64;
const ALL_TYPES: u8 = 127;

/// Any JSON value; its objects are [`ANY_OBJECT`] and its array items are `ANY`.
pub(crate) const ANY: NodeId = 0;
/// An object with any keys, each with any value.
pub(crate) const ANY_OBJECT: u32 = 0;

/// At most this many properties per schema object (the parser keeps a 128-bit set of the
/// keys seen).
pub const MAX_PROPERTIES: usize = 128;
/// A bound on schema size, so that a request cannot make the server compile forever.
const MAX_NODES: usize = 20_000;

/// A `response_format` that cannot be honoured: a 400 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ResponseFormatError {
    /// Where in the request, e.g. `response_format.json_schema.properties.age.type`.
    pub path: String,
    pub message: String,
}

impl From<ResponseFormatError> for crate::ModelError {
    fn from(e: ResponseFormatError) -> Self {
        crate::ModelError::InvalidInput(e.to_string())
    }
}

fn invalid(path: &str, message: impl Into<String>) -> ResponseFormatError {
    ResponseFormatError {
        path: path.to_string(),
        message: message.into(),
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// Bitset of OBJECT..NULL; 0 means no value is possible.
    pub(crate) types: u8,
    /// When set, the value must be one of these literals (compact JSON) and `types` is unused.
    pub(crate) enum_trie: Option<u32>,
    pub(crate) object: u32,
    pub(crate) items: NodeId,
}

#[derive(Debug)]
pub(crate) struct ObjectSchema {
    /// Property keys as JSON string contents (serde_json's escaping) -> property index.
    pub(crate) keys: ByteTrie,
    pub(crate) props: Vec<NodeId>,
    /// Properties that can be written (their value is possible).
    pub(crate) declared: u128,
    pub(crate) required: u128,
    /// Schema of keys not in `props`; `None` when they are forbidden.
    pub(crate) additional: Option<NodeId>,
}

impl ObjectSchema {
    pub(crate) fn has_props(&self) -> bool {
        !self.props.is_empty()
    }
}

/// A compiled constraint: what the reply must be. Shared (`Arc`) by every request that uses
/// the same format; the per-request progress lives in the parser state.
#[derive(Debug)]
pub struct JsonGrammar {
    pub(crate) nodes: Vec<Node>,
    pub(crate) objects: Vec<ObjectSchema>,
    pub(crate) enums: Vec<ByteTrie>,
    pub(crate) root: NodeId,
    /// Longest run of whitespace between tokens of the document.
    pub(crate) max_whitespace: u8,
    /// Deepest nesting of free-form (schema-less) containers.
    pub(crate) max_depth: usize,
}

/// Default cap on consecutive whitespace: enough for pretty-printing a few levels deep,
/// small enough that a model cannot stall on blanks.
pub const DEFAULT_MAX_WHITESPACE: u8 = 24;
const DEFAULT_MAX_DEPTH: usize = 64;

impl JsonGrammar {
    /// `json_object`: any JSON object.
    pub fn any_object() -> Self {
        let mut c = Compiler::new(&Value::Null, "");
        let root = c.push(Node {
            types: OBJECT,
            enum_trie: None,
            object: ANY_OBJECT,
            items: ANY,
        });
        c.finish(root)
            .expect("the free-form object grammar always compiles")
    }

    /// Any JSON value (the top level included).
    pub fn any_value() -> Self {
        Compiler::new(&Value::Null, "")
            .finish(ANY)
            .expect("the free-form grammar always compiles")
    }

    /// A JSON Schema (see the module docs for the subset). `path` names the schema in error
    /// messages, e.g. `response_format.json_schema`.
    pub fn from_schema(schema: &Value, path: &str) -> Result<Self, ResponseFormatError> {
        let mut c = Compiler::new(schema, path);
        let root = c.reference("#", path)?;
        c.finish(root)
    }

    /// Sets the cap on consecutive whitespace (at least 1).
    pub fn with_max_whitespace(mut self, max: u8) -> Self {
        self.max_whitespace = max.max(1);
        self
    }
}

struct ObjectDraft {
    props: Vec<(String, NodeId)>,
    required: Vec<usize>,
    additional: Option<NodeId>,
}

struct Compiler<'a> {
    root: &'a Value,
    root_path: &'a str,
    nodes: Vec<Node>,
    objects: Vec<ObjectDraft>,
    enums: Vec<ByteTrie>,
    refs: HashMap<String, NodeId>,
}

impl<'a> Compiler<'a> {
    fn new(root: &'a Value, root_path: &'a str) -> Self {
        let mut c = Self {
            root,
            root_path,
            nodes: Vec::new(),
            objects: Vec::new(),
            enums: Vec::new(),
            refs: HashMap::new(),
        };
        c.push(Node {
            types: ALL_TYPES,
            enum_trie: None,
            object: ANY_OBJECT,
            items: ANY,
        });
        c.objects.push(ObjectDraft {
            props: Vec::new(),
            required: Vec::new(),
            additional: Some(ANY),
        });
        c
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeId
    }

    fn compile(&mut self, schema: &Value, path: &str) -> Result<NodeId, ResponseFormatError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(invalid(
                path,
                format!("schema is too large (more than {MAX_NODES} subschemas)"),
            ));
        }
        let obj = match schema {
            Value::Bool(true) => return Ok(ANY),
            // Nothing matches `false`: an impossible node, dropped where it is optional.
            Value::Bool(false) => {
                return Ok(self.push(Node {
                    types: 0,
                    enum_trie: None,
                    object: ANY_OBJECT,
                    items: ANY,
                }))
            }
            Value::Object(obj) => obj,
            other => {
                return Err(invalid(
                    path,
                    format!("a schema must be an object or a boolean, not {other}"),
                ))
            }
        };
        if let Some(r) = obj.get("$ref") {
            let r = r
                .as_str()
                .ok_or_else(|| invalid(&format!("{path}.$ref"), "must be a string"))?;
            return self.reference(r, &format!("{path}.$ref"));
        }

        let declared_type = match obj.get("type") {
            None => None,
            Some(t) => Some(parse_types(t, &format!("{path}.type"))?),
        };
        let mut types = declared_type.unwrap_or_else(|| {
            let has = |k: &str| obj.contains_key(k);
            if has("properties") || has("required") || has("additionalProperties") {
                OBJECT
            } else if has("items") {
                ARRAY
            } else {
                ALL_TYPES
            }
        });
        if obj.get("nullable") == Some(&Value::Bool(true)) {
            types |= NULL;
        }

        let literals: Option<(Vec<Value>, String)> = if let Some(c) = obj.get("const") {
            Some((vec![c.clone()], format!("{path}.const")))
        } else if let Some(e) = obj.get("enum") {
            let p = format!("{path}.enum");
            let values = e
                .as_array()
                .ok_or_else(|| invalid(&p, "must be an array"))?;
            if values.is_empty() {
                return Err(invalid(&p, "must not be empty"));
            }
            Some((values.clone(), p))
        } else {
            None
        };
        if let Some((values, p)) = literals {
            let mut trie = ByteTrie::new();
            let mut kept = 0u32;
            for v in &values {
                if declared_type.is_some() && !value_has_type(v, types) {
                    continue;
                }
                let text = serde_json::to_string(v)
                    .map_err(|e| invalid(&p, format!("cannot serialise {v}: {e}")))?;
                if trie.insert(text.as_bytes(), kept, 0) {
                    kept += 1;
                }
            }
            if kept == 0 {
                return Err(invalid(&p, "no value has the declared type"));
            }
            self.enums.push(trie);
            let e = (self.enums.len() - 1) as u32;
            return Ok(self.push(Node {
                types,
                enum_trie: Some(e),
                object: ANY_OBJECT,
                items: ANY,
            }));
        }

        let object = if types & OBJECT != 0 {
            self.object(obj, path)?
        } else {
            ANY_OBJECT
        };
        let items = match obj.get("items") {
            Some(items @ (Value::Object(_) | Value::Bool(_))) if types & ARRAY != 0 => {
                self.compile(items, &format!("{path}.items"))?
            }
            _ => ANY,
        };
        Ok(self.push(Node {
            types,
            enum_trie: None,
            object,
            items,
        }))
    }

    fn object(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        path: &str,
    ) -> Result<u32, ResponseFormatError> {
        let props_path = format!("{path}.properties");
        let mut props = Vec::new();
        match obj.get("properties") {
            None => {}
            Some(Value::Object(map)) => {
                for (key, sub) in map {
                    let id = self.compile(sub, &format!("{props_path}.{key}"))?;
                    props.push((key.clone(), id));
                }
            }
            Some(_) => return Err(invalid(&props_path, "must be an object of schemas")),
        }
        let additional_path = format!("{path}.additionalProperties");
        let additional = match obj.get("additionalProperties") {
            None | Some(Value::Bool(true)) => Some(ANY),
            Some(Value::Bool(false)) => None,
            Some(s @ Value::Object(_)) => Some(self.compile(s, &additional_path)?),
            Some(_) => return Err(invalid(&additional_path, "must be a boolean or a schema")),
        };
        let required_path = format!("{path}.required");
        let mut required = Vec::new();
        match obj.get("required") {
            None => {}
            Some(Value::Array(names)) => {
                for name in names {
                    let name = name
                        .as_str()
                        .ok_or_else(|| invalid(&required_path, "must be an array of strings"))?;
                    let index = match props.iter().position(|(k, _)| k == name) {
                        Some(i) => i,
                        // A required key the schema does not describe takes the schema of
                        // additional keys; with none allowed, nothing can satisfy it.
                        None => {
                            let node = additional.ok_or_else(|| {
                                invalid(
                                    &required_path,
                                    format!(
                                        "{name:?} is required but not in properties, and \
                                         additionalProperties is false"
                                    ),
                                )
                            })?;
                            props.push((name.to_string(), node));
                            props.len() - 1
                        }
                    };
                    if !required.contains(&index) {
                        required.push(index);
                    }
                }
            }
            Some(_) => return Err(invalid(&required_path, "must be an array of strings")),
        }
        if props.len() > MAX_PROPERTIES {
            return Err(invalid(
                &props_path,
                format!(
                    "{} properties; at most {MAX_PROPERTIES} per object are supported",
                    props.len()
                ),
            ));
        }
        self.objects.push(ObjectDraft {
            props,
            required,
            additional,
        });
        Ok((self.objects.len() - 1) as u32)
    }

    /// The node of a local JSON pointer, compiled once; recursion refers back to it.
    fn reference(&mut self, pointer: &str, path: &str) -> Result<NodeId, ResponseFormatError> {
        if let Some(&id) = self.refs.get(pointer) {
            return Ok(id);
        }
        let Some(fragment) = pointer.strip_prefix('#') else {
            return Err(invalid(
                path,
                format!("{pointer:?}: only local references (\"#/...\") are supported"),
            ));
        };
        let root = self.root;
        let target = root
            .pointer(fragment)
            .ok_or_else(|| invalid(path, format!("{pointer:?} does not point into the schema")))?;
        // A placeholder, so that a cycle through this pointer resolves to this node. A pure
        // cycle of references leaves it impossible (types 0).
        let id = self.push(Node {
            types: 0,
            enum_trie: None,
            object: ANY_OBJECT,
            items: ANY,
        });
        self.refs.insert(pointer.to_string(), id);
        let target_path = if fragment.is_empty() {
            self.root_path.to_string()
        } else {
            format!("{}{}", self.root_path, fragment.replace('/', "."))
        };
        let body = self.compile(target, &target_path)?;
        self.nodes[id as usize] = self.nodes[body as usize].clone();
        Ok(id)
    }

    /// Drops whatever no finite document can contain, then builds the key tries.
    fn finish(mut self, root: NodeId) -> Result<JsonGrammar, ResponseFormatError> {
        let (node_ok, object_ok) = self.satisfiable();
        if !node_ok[root as usize] {
            return Err(invalid(
                self.root_path,
                "no finite JSON document matches this schema",
            ));
        }
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if !node_ok[i] {
                node.types = 0;
            } else if node.enum_trie.is_none() && !object_ok[node.object as usize] {
                node.types &= !OBJECT;
            }
        }
        let objects = self
            .objects
            .iter()
            .map(|draft| {
                let mut keys = ByteTrie::new();
                let mut declared = 0u128;
                let mut required = 0u128;
                for (i, (name, node)) in draft.props.iter().enumerate() {
                    let bit = 1u128 << i;
                    if draft.required.contains(&i) {
                        required |= bit;
                    }
                    if !node_ok[*node as usize] {
                        continue;
                    }
                    declared |= bit;
                    let spelled = serde_json::to_string(name).unwrap_or_default();
                    let inner = &spelled.as_bytes()[1..spelled.len().saturating_sub(1)];
                    keys.insert(inner, i as u32, bit);
                }
                ObjectSchema {
                    keys,
                    props: draft.props.iter().map(|&(_, n)| n).collect(),
                    declared,
                    required,
                    additional: draft.additional.filter(|&n| node_ok[n as usize]),
                }
            })
            .collect();
        Ok(JsonGrammar {
            nodes: self.nodes,
            objects,
            enums: self.enums,
            root,
            max_whitespace: DEFAULT_MAX_WHITESPACE,
            max_depth: DEFAULT_MAX_DEPTH,
        })
    }

    /// Least fixpoint: a node is possible when it has a scalar or array type, an enum, or an
    /// object type whose required properties are all possible.
    fn satisfiable(&self) -> (Vec<bool>, Vec<bool>) {
        let mut node_ok = vec![false; self.nodes.len()];
        let mut object_ok = vec![false; self.objects.len()];
        loop {
            let mut changed = false;
            for (i, draft) in self.objects.iter().enumerate() {
                if !object_ok[i]
                    && draft
                        .required
                        .iter()
                        .all(|&r| node_ok[draft.props[r].1 as usize])
                {
                    object_ok[i] = true;
                    changed = true;
                }
            }
            for (i, node) in self.nodes.iter().enumerate() {
                let ok = node.enum_trie.is_some() && node.types != 0
                    || node.types & !OBJECT != 0
                    || node.types & OBJECT != 0 && object_ok[node.object as usize];
                if ok && !node_ok[i] {
                    node_ok[i] = true;
                    changed = true;
                }
            }
            if !changed {
                return (node_ok, object_ok);
            }
        }
    }
}

fn parse_types(t: &Value, path: &str) -> Result<u8, ResponseFormatError> {
    let one = |name: &Value| -> Result<u8, ResponseFormatError> {
        Ok(match name.as_str() {
            Some("object") => OBJECT,
            Some("array") => ARRAY,
            Some("string") => STRING,
            Some("number") => NUMBER,
            Some("integer") => INTEGER,
            Some("boolean") => BOOLEAN,
            Some("null") => NULL,
            _ => {
                return Err(invalid(
                    path,
                    format!(
                        "unknown type {name} (expected object, array, string, number, \
                         integer, boolean or null)"
                    ),
                ))
            }
        })
    };
    match t {
        Value::Array(list) if list.is_empty() => Err(invalid(path, "must not be empty")),
        Value::Array(list) => list.iter().try_fold(0, |acc, n| Ok(acc | one(n)?)),
        other => one(other),
    }
}

fn value_has_type(v: &Value, types: u8) -> bool {
    let t = match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Number(n) if n.is_i64() || n.is_u64() => INTEGER | NUMBER,
        Value::Number(_) => NUMBER,
        Value::String(_) => STRING,
        Value::Array(_) => ARRAY,
        Value::Object(_) => OBJECT,
    };
    t & types != 0
}
