//! Chat templates: the Jinja template a model ships in tokenizer_config.json, rendered with
//! minijinja so that the prompt is byte-identical to transformers'
//! `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
//!
//! transformers renders in a sandboxed jinja2 environment with `trim_blocks`,
//! `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now` and its own `tojson`, and
//! passes `messages`, `tools=None`, `documents=None`, `add_generation_prompt`, the tokenizer's
//! special tokens (`bos_token`, ...) and any extra kwargs. This module builds the same
//! environment; python string methods come from `minijinja_contrib::pycompat`.

mod pyfmt;
#[cfg(test)]
mod tests;
mod tojson;

use std::path::Path;

use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

const TEMPLATE_NAME: &str = "chat_template";

/// One chat turn, as the OpenAI / Workers AI `messages` arrays carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template plus the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// `bos_token`, `eos_token`, ...: only those the tokenizer defines, as transformers passes
    /// its `special_tokens_map` (an unset token is undefined in the template, not `None`).
    special_tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("special_tokens", &self.special_tokens)
            .finish_non_exhaustive()
    }
}

/// The error `raise_exception(msg)` carries, so that [`ChatTemplate::render`] can report the
/// template's own message rather than minijinja's wording around it.
#[derive(Debug)]
struct TemplateRaised(String);

impl std::fmt::Display for TemplateRaised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateRaised {}

impl ChatTemplate {
    /// Compiles `source`. A syntax error is a `ChatTemplate` error with the line.
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // jinja2's Environment default; minijinja would otherwise escape by file extension
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_formatter(pyfmt::python_formatter);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson::tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|err| template_error("does not compile", &err))?;
        let mut special_tokens = Vec::new();
        for (name, value) in [("bos_token", bos_token), ("eos_token", eos_token)] {
            if let Some(value) = value {
                special_tokens.push((name.to_string(), value));
            }
        }
        Ok(Self {
            env,
            special_tokens,
        })
    }

    /// Adds (or replaces) a special token variable such as `unk_token` or `pad_token`.
    pub fn with_special_token(mut self, name: &str, value: impl Into<String>) -> Self {
        self.special_tokens.retain(|(n, _)| n != name);
        self.special_tokens.push((name.to_string(), value.into()));
        self
    }

    /// The special token variables the template sees, e.g. `("bos_token", "<s>")`.
    pub fn special_tokens(&self) -> &[(String, String)] {
        &self.special_tokens
    }

    /// Reads the template from a tokenizer_config.json. `Ok(None)` when the model has no
    /// template (base models): the caller decides what a prompt without one looks like.
    /// Newer transformers save the template beside it as `chat_template.jinja` (or
    /// `chat_template.json`); those are read when the config has none.
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Option<Self>> {
        let path = path.as_ref();
        let config = read_json(path)?;
        let format_err = |message: String| ModelError::Format {
            path: path.to_path_buf(),
            message,
        };
        let source = match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => sibling_template(path)?,
            Some(value) => Some(template_source(value).map_err(format_err)?),
        };
        let Some(source) = source else {
            return Ok(None);
        };
        let mut template = Self::new(&source, None, None)
            .map_err(|err| ModelError::ChatTemplate(format!("{}: {}", path.display(), err)))?;
        for name in [
            "bos_token",
            "eos_token",
            "unk_token",
            "sep_token",
            "pad_token",
            "cls_token",
            "mask_token",
        ] {
            if let Some(token) = config.get(name).and_then(token_content) {
                template = template.with_special_token(name, token);
            }
        }
        Ok(Some(template))
    }

    /// Renders the prompt for `messages`; `add_generation_prompt` appends the assistant
    /// header so that the model answers rather than continues the last turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, &serde_json::Value::Null)
    }

    /// [`ChatTemplate::render`] with extra template variables (`kwargs`: a JSON object or
    /// null), e.g. `{"date_string": "26 Jul 2024"}`, `{"tools": [...]}`.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        kwargs: &serde_json::Value,
    ) -> Result<String> {
        let messages = serde_json::to_value(messages)
            .map_err(|err| ModelError::InvalidInput(format!("messages: {err}")))?;
        self.render_json(&messages, add_generation_prompt, kwargs)
    }

    /// Renders arbitrary JSON messages (content lists, tool calls, ...): the general form
    /// behind [`ChatTemplate::render`].
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
        kwargs: &serde_json::Value,
    ) -> Result<String> {
        if !messages.is_array() {
            return Err(ModelError::InvalidInput(
                "messages: expected an array of messages".to_string(),
            ));
        }
        let extra = match kwargs {
            serde_json::Value::Null => serde_json::Map::new(),
            serde_json::Value::Object(map) => map.clone(),
            _ => {
                return Err(ModelError::InvalidInput(
                    "chat template kwargs: expected a JSON object".to_string(),
                ))
            }
        };
        let mut ctx = serde_json::Map::new();
        for (name, value) in &self.special_tokens {
            ctx.insert(name.clone(), serde_json::Value::String(value.clone()));
        }
        // tools and documents are explicit None in transformers: `tools is none` is true
        ctx.insert("tools".into(), serde_json::Value::Null);
        ctx.insert("documents".into(), serde_json::Value::Null);
        for (name, value) in extra {
            if name == "messages" || name == "add_generation_prompt" {
                return Err(ModelError::InvalidInput(format!(
                    "chat template kwargs: {name:?} is set by the renderer"
                )));
            }
            ctx.insert(name, value);
        }
        ctx.insert("messages".into(), messages.clone());
        ctx.insert(
            "add_generation_prompt".into(),
            serde_json::Value::Bool(add_generation_prompt),
        );
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|err| template_error("is missing", &err))?;
        template
            .render(Value::from_serialize(&ctx))
            .map_err(|err| template_error("failed to render", &err))
    }
}

/// Turns a minijinja error into a `ChatTemplate` error; `raise_exception` keeps its message.
fn template_error(what: &str, err: &Error) -> ModelError {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(raised) = cause.downcast_ref::<TemplateRaised>() {
            return ModelError::ChatTemplate(format!("template raised an exception: {raised}"));
        }
        source = cause.source();
    }
    ModelError::ChatTemplate(format!("template {what}: {err}"))
}

fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(TemplateRaised(message)))
}

/// `strftime_now(fmt)`: local time in a python strftime format, as transformers defines it.
fn strftime_now(format: String) -> std::result::Result<Value, Error> {
    use std::fmt::Write as _;
    let mut out = String::new();
    // chrono reports an unknown specifier as fmt::Error (to_string() would panic on it)
    write!(out, "{}", chrono::Local::now().format(&format)).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        )
    })?;
    Ok(Value::from(out))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|err| ModelError::Format {
        path: path.to_path_buf(),
        message: format!("invalid JSON: {err}"),
    })
}

/// `chat_template` is a string, or a list of `{name, template}` of which "default" is used
/// (transformers refuses a list without one rather than guessing).
fn template_source(value: &serde_json::Value) -> std::result::Result<String, String> {
    if let Some(source) = value.as_str() {
        return Ok(source.to_string());
    }
    let Some(list) = value.as_array() else {
        return Err("chat_template: expected a string or a list of {name, template}".into());
    };
    list.iter()
        .find(|item| item.get("name").and_then(|n| n.as_str()) == Some("default"))
        .and_then(|item| item.get("template"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            let names: Vec<&str> = list
                .iter()
                .filter_map(|item| item.get("name").and_then(|n| n.as_str()))
                .collect();
            format!("chat_template: several templates {names:?} and none named \"default\"")
        })
}

/// A template saved beside tokenizer_config.json (transformers >= 4.43 style).
fn sibling_template(config_path: &Path) -> Result<Option<String>> {
    let dir = config_path.parent().unwrap_or_else(|| Path::new("."));
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|source| ModelError::Io {
                path: jinja,
                source,
            });
    }
    let json = dir.join("chat_template.json");
    if json.is_file() {
        let value = read_json(&json)?;
        return match value.get("chat_template") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => template_source(v)
                .map(Some)
                .map_err(|message| ModelError::Format {
                    path: json,
                    message,
                }),
        };
    }
    Ok(None)
}

/// A special token is a string or an AddedToken object `{"content": ..., ...}`.
fn token_content(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}
