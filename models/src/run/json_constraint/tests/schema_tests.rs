use serde_json::{json, Value};

use super::{run, schema_grammar};
use crate::run::json_constraint::{parse_response_format, JsonGrammar, MAX_PROPERTIES};

/// Each document: None = a complete, accepted document; Some(i) = refused at byte i.
fn check(schema: &Value, cases: &[(&str, Option<usize>)]) {
    let g = schema_grammar(schema);
    for &(doc, expected) in cases {
        let (refused, complete) = run(&g, doc.as_bytes());
        match expected {
            None => assert!(
                refused.is_none() && complete,
                "{doc:?} against {schema}: refused at {refused:?}, complete {complete}"
            ),
            Some(at) => assert_eq!(refused, Some(at), "{doc:?} against {schema}"),
        }
    }
}

fn person(additional: Value) -> Value {
    json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": additional,
    })
}

#[test]
fn required_keys_must_all_be_present_before_the_object_closes() {
    check(
        &person(json!(false)),
        &[
            (r#"{"name":"Ann","age":31}"#, None),
            (r#"{ "age" : 31 , "name" : "Ann" }"#, None),
            ("{}", Some(1)),
            (r#"{"name":"Ann"}"#, Some(13)),
            (r#"{"name":"Ann","age":31,"#, Some(22)),
        ],
    );
}

#[test]
fn keys_follow_the_properties_and_are_never_repeated() {
    check(
        &person(json!(false)),
        &[
            (r#"{"nam":"#, Some(5)),
            (r#"{"x":1}"#, Some(2)),
            (r#"{"Name":1}"#, Some(2)),
            (r#"{"name":"a","name":"b"}"#, Some(13)),
            (r#"{"n\u0061me":"a"}"#, Some(3)),
        ],
    );
    // With other keys allowed, a free key is fine, but a declared one still only once and
    // never spelled another way.
    check(
        &person(json!(true)),
        &[
            (r#"{"name":"a","age":1,"extra":[1,{"x":null}]}"#, None),
            (r#"{"nam":0,"name":"a","age":1}"#, None),
            (r#"{"name":"a","name":"b"}"#, Some(17)),
            (r#"{"n\u0061me":"a"}"#, Some(3)),
            (r#"{"age":1}"#, Some(8)),
        ],
    );
}

#[test]
fn values_have_their_declared_types() {
    check(
        &person(json!(false)),
        &[
            (r#"{"name":1"#, Some(8)),
            (r#"{"name":null"#, Some(8)),
            (r#"{"age":"3"#, Some(7)),
            (r#"{"age":3.5"#, Some(8)),
            (r#"{"age":3e2"#, Some(8)),
            (r#"{"age":-0"#, Some(8)),
            (r#"{"age":-30,"name":"\u00e9"}"#, None),
        ],
    );
    let cases: &[(Value, &str, &str)] = &[
        (json!("string"), r#""s""#, "1"),
        (json!("number"), "-1.5e3", r#""1""#),
        (json!("integer"), "-15", "true"),
        (json!("boolean"), "false", "0"),
        (json!("null"), "null", "{}"),
        (json!("array"), "[1,\"a\"]", "{}"),
        (json!("object"), "{\"a\":[]}", "[]"),
        (json!(["string", "null"]), "null", "[]"),
        (json!(["integer", "boolean"]), "true", "\"t\""),
    ];
    for (t, good, bad) in cases {
        let schema = json!({"type": t});
        check(&schema, &[(good, None), (bad, Some(0))]);
    }
    // nullable (OpenAPI) adds null.
    check(
        &json!({"type": "string", "nullable": true}),
        &[("null", None), ("\"x\"", None), ("1", Some(0))],
    );
}

#[test]
fn enums_allow_exactly_their_literals() {
    let colours = json!({"enum": ["red", "green", "a\"b"]});
    check(
        &colours,
        &[
            (r#""red""#, None),
            (r#""green""#, None),
            (r#""a\"b""#, None),
            (r#""blue""#, Some(1)),
            (r#""redd""#, Some(4)),
        ],
    );
    let numbers = json!({"type": "array", "items": {"enum": [1, 12, 2.5, null, true]}});
    check(
        &numbers,
        &[
            ("[1,12,2.5,null,true]", None),
            ("[ 1 , 12 ]", None),
            ("[13]", Some(2)),
            ("[2]", Some(2)),
            ("[2.50]", Some(4)),
            ("[false]", Some(1)),
        ],
    );
    // `type` filters the enum; `const` is a one-value enum.
    check(
        &json!({"type": "string", "enum": ["a", 1]}),
        &[("\"a\"", None), ("1", Some(0))],
    );
    check(
        &json!({"const": {"k": [1, "v"]}}),
        &[(r#"{"k":[1,"v"]}"#, None), (r#"{ "k""#, Some(1))],
    );
}

#[test]
fn an_enum_prefix_is_accepted_but_not_complete() {
    let g = schema_grammar(&json!({"enum": ["red", "green"]}));
    assert_eq!(run(&g, b"\"re"), (None, false));
    assert_eq!(run(&g, b"\"red"), (None, false));
    let n = schema_grammar(&json!({"enum": [1, 12]}));
    assert_eq!(
        run(&n, b"1"),
        (None, true),
        "1 is complete and may grow to 12"
    );
    assert_eq!(run(&n, b"12"), (None, true));
}

#[test]
fn nested_objects_and_arrays_follow_their_schemas() {
    let schema = json!({
        "type": "object",
        "properties": {
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
                "required": ["city"],
                "additionalProperties": false
            },
            "tags": {"type": "array", "items": {"type": "string"}},
            "points": {"type": "array", "items": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"]
            }}
        },
        "required": ["address", "tags"],
        "additionalProperties": false
    });
    check(
        &schema,
        &[
            (
                r#"{"address":{"city":"Oslo","zip":150},"tags":[],"points":[{"x":1,"y":-2.5}]}"#,
                None,
            ),
            (r#"{"tags":["a","b"],"address":{"city":""}}"#, None),
            (r#"{"address":{}"#, Some(12)),
            (r#"{"address":{"zip":1}"#, Some(19)),
            (r#"{"address":{"city":"x","country"#, Some(24)),
            (r#"{"tags":[1"#, Some(9)),
            (r#"{"tags":["a"],"points":[{"x":1}"#, Some(30)),
            (r#"{"tags":{}"#, Some(8)),
        ],
    );
}

#[test]
fn additional_properties_schema_types_extra_values() {
    let schema = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    check(
        &schema,
        &[(r#"{"a":1,"b":-2}"#, None), (r#"{"a":"x"}"#, Some(5))],
    );
}

#[test]
fn keys_that_need_escapes_are_spelled_as_serde_json_writes_them() {
    let schema = json!({
        "type": "object",
        "properties": {"a\"b": {"type": "null"}, "tab\t": {"type": "null"}, "é": {"type": "null"}},
        "required": ["a\"b", "tab\t", "é"],
        "additionalProperties": false
    });
    check(
        &schema,
        &[
            (r#"{"a\"b":null,"tab\t":null,"é":null}"#, None),
            (r#"{"\u00e9":null"#, Some(2)),
        ],
    );
}

#[test]
fn local_refs_and_recursion_compile() {
    let tree = json!({
        "type": "object",
        "properties": {
            "value": {"type": "integer"},
            "children": {"type": "array", "items": {"$ref": "#"}},
            "colour": {"$ref": "#/$defs/colour"}
        },
        "required": ["value"],
        "additionalProperties": false,
        "$defs": {"colour": {"enum": ["red", "black"]}}
    });
    check(
        &tree,
        &[
            (
                r#"{"value":1,"children":[{"value":2,"children":[]},{"value":3,"colour":"red"}]}"#,
                None,
            ),
            (r#"{"value":1,"children":[{}"#, Some(24)),
            (r#"{"value":1,"colour":"blue"}"#, Some(23)),
        ],
    );
}

#[test]
fn a_property_no_finite_document_can_hold_is_never_offered() {
    // `next` is optional but requires itself forever: it must not be writable.
    let schema = json!({
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "next": {"$ref": "#/$defs/forever"}
        },
        "additionalProperties": false,
        "$defs": {"forever": {
            "type": "object",
            "properties": {"more": {"$ref": "#/$defs/forever"}},
            "required": ["more"]
        }}
    });
    check(&schema, &[(r#"{"id":1}"#, None), (r#"{"id":1,"#, Some(7))]);
    let err = JsonGrammar::from_schema(
        &json!({"type": "object", "properties": {"me": {"$ref": "#"}}, "required": ["me"]}),
        "response_format.json_schema",
    )
    .expect_err("unsatisfiable");
    assert!(err.to_string().contains("no finite JSON document"), "{err}");
}

#[test]
fn json_object_mode_takes_only_an_object_at_the_top() {
    let g = std::sync::Arc::new(JsonGrammar::any_object());
    assert_eq!(run(&g, b"{}"), (None, true));
    assert_eq!(
        run(&g, br#" {"a": [1, {"b": "\u0041"}], "\u00e9": null}"#),
        (None, true)
    );
    for bad in ["[]", "\"s\"", "1", "null"] {
        assert_eq!(run(&g, bad.as_bytes()).0, Some(0), "{bad}");
    }
}

#[test]
fn invalid_schemas_are_clear_errors_naming_the_field() {
    let cases: &[(Value, &str, &str)] = &[
        (
            json!({"type": "int"}),
            "response_format.json_schema.type",
            "unknown type",
        ),
        (
            json!({"type": []}),
            "response_format.json_schema.type",
            "must not be empty",
        ),
        (
            json!({"type": 3}),
            "response_format.json_schema.type",
            "unknown type",
        ),
        (
            json!({"enum": []}),
            "response_format.json_schema.enum",
            "must not be empty",
        ),
        (
            json!({"enum": "a"}),
            "response_format.json_schema.enum",
            "must be an array",
        ),
        (
            json!({"type": "string", "enum": [1]}),
            "response_format.json_schema.enum",
            "no value has the declared type",
        ),
        (
            json!({"properties": {"a": {"type": "nope"}}}),
            "response_format.json_schema.properties.a.type",
            "unknown type",
        ),
        (
            json!({"properties": []}),
            "response_format.json_schema.properties",
            "object",
        ),
        (
            json!({"required": "a"}),
            "response_format.json_schema.required",
            "array",
        ),
        (
            json!({"properties": {}, "required": ["a"], "additionalProperties": false}),
            "response_format.json_schema.required",
            "\"a\" is required but not in properties",
        ),
        (
            json!({"additionalProperties": 1}),
            "response_format.json_schema.additionalProperties",
            "boolean or a schema",
        ),
        (
            json!({"$ref": "http://x/y"}),
            "response_format.json_schema.$ref",
            "local",
        ),
        (
            json!({"$ref": "#/$defs/none"}),
            "response_format.json_schema.$ref",
            "does not point",
        ),
        (
            json!("object"),
            "response_format.json_schema",
            "must be an object or a boolean",
        ),
        (
            json!(false),
            "response_format.json_schema",
            "no finite JSON document",
        ),
    ];
    for (schema, path, message) in cases {
        let format = json!({"type": "json_schema", "json_schema": schema});
        let err = parse_response_format(&format).expect_err(&schema.to_string());
        assert_eq!(err.path, *path, "{schema}: {err}");
        assert!(err.message.contains(message), "{schema}: {err}");
    }
    let many: serde_json::Map<String, Value> = (0..=MAX_PROPERTIES)
        .map(|i| (format!("k{i}"), json!({})))
        .collect();
    let err = JsonGrammar::from_schema(&json!({"properties": many}), "s").expect_err("too many");
    assert!(err.to_string().contains("at most 128"), "{err}");
}

#[test]
fn response_format_forms() {
    assert!(parse_response_format(&Value::Null).expect("null").is_none());
    assert!(parse_response_format(&json!({"type": "text"}))
        .expect("text")
        .is_none());
    let object = parse_response_format(&json!({"type": "json_object"}))
        .expect("json_object")
        .expect("a grammar");
    assert_eq!(run(&std::sync::Arc::new(object), b"[]").0, Some(0));
    // Workers AI: json_schema is the schema. OpenAI: json_schema wraps it in `schema`.
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}},
                        "required": ["a"], "additionalProperties": false});
    for format in [
        json!({"type": "json_schema", "json_schema": schema}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": schema}}),
    ] {
        let g = std::sync::Arc::new(
            parse_response_format(&format)
                .expect("valid")
                .expect("a grammar"),
        );
        assert_eq!(run(&g, br#"{"a":1}"#), (None, true), "{format}");
        assert_eq!(run(&g, br#"{"b""#).0, Some(2), "{format}");
    }
    let err = parse_response_format(
        &json!({"type": "json_schema", "json_schema": {"schema": {"type": 1}}}),
    )
    .expect_err("bad inner type");
    assert_eq!(err.path, "response_format.json_schema.schema.type");
    for (bad, path) in [
        (
            json!({"type": "json_schema"}),
            "response_format.json_schema",
        ),
        (json!({"type": "yaml"}), "response_format.type"),
        (json!({}), "response_format.type"),
        (json!("json_object"), "response_format"),
    ] {
        let err = parse_response_format(&bad).expect_err(&bad.to_string());
        assert_eq!(err.path, path, "{bad}: {err}");
        let model_err: crate::ModelError = err.into();
        assert!(matches!(model_err, crate::ModelError::InvalidInput(_)));
    }
}
