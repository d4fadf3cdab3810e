use serde_json::json;

use super::*;

fn render(source: &str, kwargs: serde_json::Value) -> Result<String> {
    let template = ChatTemplate::new(source, Some("<s>".into()), Some("</s>".into()))?;
    template.render_with(&[ChatMessage::new("user", "hi")], false, &kwargs)
}

fn must_render(source: &str, kwargs: serde_json::Value) -> String {
    match render(source, kwargs) {
        Ok(text) => text,
        Err(err) => panic!("render failed for {source:?}: {err}"),
    }
}

#[test]
fn templates_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ChatTemplate>();
}

#[test]
fn trim_and_lstrip_blocks_match_jinja2() {
    // trim_blocks eats the newline after a block tag; lstrip_blocks the indent before one
    let source = "{% for m in messages %}\n    {% if true %}\n[{{ m.role }}]\n    {% endif %}\n{% endfor %}\n";
    assert_eq!(must_render(source, json!(null)), "[user]\n");
}

#[test]
fn special_tokens_and_generation_prompt_are_variables() {
    let t = ChatTemplate::new(
        "{{ bos_token }}{{ messages[0].content }}{% if add_generation_prompt %}>{% endif %}{{ eos_token }}",
        Some("<s>".into()),
        Some("</s>".into()),
    )
    .expect("compiles");
    let msgs = [ChatMessage::new("user", "hi")];
    assert_eq!(t.render(&msgs, true).expect("render"), "<s>hi></s>");
    assert_eq!(t.render(&msgs, false).expect("render"), "<s>hi</s>");
}

#[test]
fn unset_special_token_is_undefined_and_tools_is_none() {
    let t = ChatTemplate::new(
        "{{ bos_token is defined }}|{{ tools is none }}|{{ documents is none }}",
        None,
        None,
    )
    .expect("compiles");
    assert_eq!(t.render(&[], false).expect("render"), "False|True|True");
}

#[test]
fn raise_exception_carries_the_template_message() {
    let err = render("{{ raise_exception('roles must alternate') }}", json!(null))
        .expect_err("must raise");
    assert!(matches!(err, ModelError::ChatTemplate(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "chat template: template raised an exception: roles must alternate"
    );
}

#[test]
fn syntax_error_is_an_error_with_the_line() {
    let err = ChatTemplate::new("line one\n{% if %}", None, None).expect_err("bad syntax");
    let text = err.to_string();
    assert!(
        text.contains("does not compile") && text.contains(":2"),
        "{text}"
    );
}

#[test]
fn attribute_of_undefined_is_an_error_not_a_panic() {
    let err = render("{{ nothing.here }}", json!(null)).expect_err("undefined");
    assert!(err.to_string().contains("failed to render"), "{err}");
}

#[test]
fn tojson_matches_python_json_dumps() {
    let kwargs =
        json!({"t": {"name": "f", "n": 1.0, "ok": true, "s": "é<\"\n", "e": [], "l": [1, null]}});
    assert_eq!(
        must_render("{{ t | tojson }}", kwargs.clone()),
        r#"{"name": "f", "n": 1.0, "ok": true, "s": "é<\"\n", "e": [], "l": [1, null]}"#
    );
    assert_eq!(
        must_render("{{ t.l | tojson(indent=2) }}", kwargs.clone()),
        "[\n  1,\n  null\n]"
    );
    assert_eq!(
        must_render(
            "{{ {'b': 1, 'a': 'ü'} | tojson(ensure_ascii=true, sort_keys=true) }}",
            kwargs.clone()
        ),
        r#"{"a": "\u00fc", "b": 1}"#
    );
    assert_eq!(
        must_render("{{ t.l | tojson(separators=(',', ':')) }}", kwargs),
        "[1,null]"
    );
    let err = render("{{ t | tojson(bogus=1) }}", json!({"t": 1})).expect_err("unknown kwarg");
    assert!(err.to_string().contains("bogus"), "{err}");
    let err = render("{{ missing | tojson }}", json!(null)).expect_err("undefined");
    assert!(err.to_string().contains("not JSON serializable"), "{err}");
}

#[test]
fn python_string_methods_loop_controls_and_namespace() {
    let source = "{% set ns = namespace(n=0) %}{% for w in '  a,b,c,d '.strip().split(',') %}\
                  {% if w == 'c' %}{% break %}{% endif %}{% set ns.n = ns.n + 1 %}{{ w.upper() }}\
                  {% endfor %}{{ ns.n }}{{ 'x'.startswith('x') }}";
    assert_eq!(must_render(source, json!(null)), "AB2True");
}

#[test]
fn python_values_print_as_python_does() {
    assert_eq!(
        must_render("{{ none }} {{ true }} {{ false }} {{ 1.5 }}", json!(null)),
        "None True False 1.5"
    );
}

#[test]
fn strftime_now_formats_today_and_rejects_bad_formats() {
    let year = must_render("{{ strftime_now('%Y') }}", json!(null));
    assert_eq!(year.len(), 4, "{year}");
    assert!(year.starts_with("20"), "{year}");
    let day = must_render("{{ strftime_now('%d %b %Y') }}", json!(null));
    assert_eq!(day.len(), 11, "{day}");
    let err = render("{{ strftime_now('%Q') }}", json!(null)).expect_err("bad format");
    assert!(err.to_string().contains("strftime_now"), "{err}");
}

#[test]
fn kwargs_must_be_an_object_and_cannot_replace_messages() {
    let err = render("x", json!([1])).expect_err("array kwargs");
    assert!(matches!(err, ModelError::InvalidInput(_)), "{err:?}");
    let err = render("x", json!({"messages": []})).expect_err("messages kwarg");
    assert!(err.to_string().contains("messages"), "{err}");
    assert_eq!(
        must_render("{{ date_string }}", json!({"date_string": "1 Jan"})),
        "1 Jan"
    );
}

fn write_config(dir: &Path, config: serde_json::Value) -> std::path::PathBuf {
    let path = dir.join("tokenizer_config.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    path
}

#[test]
fn tokenizer_config_string_template_and_added_token_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(
        dir.path(),
        json!({
            "chat_template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}{{ unk_token }}",
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "</s>",
            "unk_token": null,
        }),
    );
    let t = ChatTemplate::from_tokenizer_config(&path)
        .expect("reads")
        .expect("has a template");
    let msgs = [ChatMessage::new("user", "yo")];
    assert_eq!(t.render(&msgs, false).expect("render"), "<s>yo</s>");
}

#[test]
fn tokenizer_config_template_list_takes_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = json!([{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]);
    let path = write_config(dir.path(), json!({"chat_template": list}));
    let t = ChatTemplate::from_tokenizer_config(&path)
        .expect("reads")
        .expect("template");
    assert_eq!(t.render(&[], false).expect("render"), "D");

    let path = write_config(
        dir.path(),
        json!({"chat_template": [{"name": "rag", "template": "R"}]}),
    );
    let err = ChatTemplate::from_tokenizer_config(&path).expect_err("no default");
    assert!(err.to_string().contains("rag") && err.to_string().contains("tokenizer_config.json"));
}

#[test]
fn tokenizer_config_without_template_is_none_unless_a_sibling_file_has_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), json!({"bos_token": "<s>"}));
    assert!(ChatTemplate::from_tokenizer_config(&path)
        .expect("reads")
        .is_none());

    std::fs::write(dir.path().join("chat_template.jinja"), "{{ bos_token }}J").expect("write");
    let t = ChatTemplate::from_tokenizer_config(&path)
        .expect("reads")
        .expect("template");
    assert_eq!(t.render(&[], false).expect("render"), "<s>J");

    let err = ChatTemplate::from_tokenizer_config(dir.path().join("nope.json")).expect_err("io");
    assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
}

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chat_templates")
}

fn read_fixture(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "fixture {} missing (generate the fixtures): {err}",
            path.display()
        )
    })
}

/// Every case transformers rendered (or refused) must come out byte-identical (or refused).
#[test]
fn fixture_cases_match_transformers() {
    let tokens: serde_json::Value =
        serde_json::from_str(&read_fixture("tokens.json")).expect("tokens.json is JSON");
    let cases: serde_json::Value =
        serde_json::from_str(&read_fixture("cases.json")).expect("cases.json is JSON");
    let cases = cases.as_array().expect("cases.json is a list");
    assert!(!cases.is_empty(), "cases.json has no cases");
    let mut failures = Vec::new();
    let mut per_template = std::collections::BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let name = case["template"]
            .as_str()
            .expect("case.template is a string");
        *per_template.entry(name.to_string()).or_insert(0) += 1;
        let source = read_fixture(&format!("{name}.jinja"));
        let toks = &tokens[name];
        let token = |key: &str| toks.get(key).and_then(token_content);
        let mut template = ChatTemplate::new(&source, token("bos_token"), token("eos_token"))
            .unwrap_or_else(|err| panic!("{name}.jinja: {err}"));
        if let Some(map) = toks.as_object() {
            for (key, value) in map {
                if let Some(v) = token_content(value) {
                    template = template.with_special_token(key, v);
                }
            }
        }
        let add = case["add_generation_prompt"].as_bool().unwrap_or(false);
        let kwargs = case
            .get("kwargs")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let got = template.render_json(&case["messages"], add, &kwargs);
        let want_error = case.get("error").and_then(|e| e.as_bool()).unwrap_or(false);
        match (
            got,
            want_error,
            case.get("rendered").and_then(|r| r.as_str()),
        ) {
            (Err(err), true, _) => {
                // transformers' message is the template's own: it must come through intact
                let msg = case
                    .get("error_message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("");
                if !err.to_string().ends_with(msg) {
                    failures.push(format!("case {i} ({name}): error {err}, want {msg:?}"));
                }
            }
            (Ok(text), true, _) => failures.push(format!(
                "case {i} ({name}): rendered {text:?}, transformers raised"
            )),
            (Ok(text), false, Some(want)) if text == want => {}
            (Ok(text), false, want) => failures.push(format!(
                "case {i} ({name}):\n got  {text:?}\n want {want:?}"
            )),
            (Err(err), false, _) => failures.push(format!("case {i} ({name}): error {err}")),
        }
    }
    for name in ["llama3", "mistral", "chatml"] {
        assert!(
            per_template.contains_key(name),
            "cases.json has no {name} case"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Cases rendered by jinja2 configured as transformers configures it (see
/// gen_jinja2_cases.py beside this file): tools and tool calls through the real Llama 3.1
/// template, tojson options, python methods and reprs, loop controls, whitespace control.
#[test]
fn jinja2_cases_match() {
    let cases: serde_json::Value =
        serde_json::from_str(include_str!("jinja2_cases.json")).expect("jinja2_cases.json is JSON");
    let cases = cases.as_array().expect("a list of cases");
    assert!(cases.len() >= 10, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("case.name");
        let source = match case.get("source").and_then(|s| s.as_str()) {
            Some(source) => source.to_string(),
            None => read_fixture(&format!(
                "{}.jinja",
                case["template"].as_str().expect("template")
            )),
        };
        let template = ChatTemplate::new(&source, Some("<s>".into()), Some("</s>".into()))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let add = case["add_generation_prompt"].as_bool().unwrap_or(false);
        let got = template.render_json(&case["messages"], add, &case["kwargs"]);
        match (got, case.get("error_message").and_then(|m| m.as_str())) {
            (Err(err), Some(msg)) if err.to_string().ends_with(msg) => {}
            (Ok(text), None) if Some(text.as_str()) == case["rendered"].as_str() => {}
            (got, _) => failures.push(format!(
                "{name}:\n got  {got:?}\n want {:?}",
                case.get("rendered").or(case.get("error_message"))
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The tiny model's tokenizer_config.json carries SmolLM2's ChatML template inline with
/// AddedToken-style specials; loading it must render what transformers rendered.
#[test]
fn tiny_model_tokenizer_config_renders_the_chatml_cases() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llama/tiny-llama3/tokenizer_config.json");
    assert!(
        path.is_file(),
        "fixture {} missing (generate the fixtures)",
        path.display()
    );
    let template = ChatTemplate::from_tokenizer_config(&path)
        .expect("reads")
        .expect("the config has a chat_template");
    let cases: serde_json::Value =
        serde_json::from_str(&read_fixture("cases.json")).expect("cases.json is JSON");
    let mut checked = 0;
    for case in cases.as_array().expect("a list").iter() {
        if case["template"] != "chatml" || case.get("rendered").is_none() {
            continue;
        }
        let add = case["add_generation_prompt"].as_bool().unwrap_or(false);
        let kwargs = case
            .get("kwargs")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let got = template
            .render_json(&case["messages"], add, &kwargs)
            .expect("renders");
        assert_eq!(Some(got.as_str()), case["rendered"].as_str());
        checked += 1;
    }
    assert!(checked > 0, "no chatml cases in cases.json");
}

/// SmolLM2's own template (from its GGUF metadata) gives the prompt transformers built for
/// the greedy reference, default system prompt included.
#[test]
fn smollm2_chat_prompt_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2");
    let read = |name: &str| -> serde_json::Value {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("fixture {} missing: {err}", path.display()));
        serde_json::from_str(&text).expect("fixture is JSON")
    };
    let meta = read("tokenizer_meta.json");
    let chat = &read("greedy.json")["chat"];
    let template = ChatTemplate::new(
        meta["chat_template"]
            .as_str()
            .expect("chat_template string"),
        meta["bos_token"].as_str().map(str::to_string),
        meta["eos_token"].as_str().map(str::to_string),
    )
    .expect("compiles");
    let got = template
        .render_json(&chat["messages"], true, &serde_json::Value::Null)
        .expect("renders");
    assert_eq!(Some(got.as_str()), chat["prompt_text"].as_str());
}
