//! The OpenAI-compatible face of text generation (/v1/chat/completions, /v1/completions):
//! request parsing into the same `TextInput` the Workers AI route uses, and the response and
//! stream-chunk shapes the OpenAI SDKs read.

use super::error::RunError;
use super::fields::{opt_bool, opt_u64, Fields};
use super::text_generation::{self, PromptInput, TextInput, Usage};
use serde_json::{json, Value};

/// Which OpenAI endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiRequest {
    pub model: String,
    pub input: TextInput,
    pub include_usage: bool,
}

/// Fields both endpoints accept (plus `messages` for chat, `prompt` for completions).
const FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "response_format",
    "stream",
    "stream_options",
    "stop",
    "n",
    "user",
    "logprobs",
];

pub fn parse(body: &Value, endpoint: Endpoint) -> Result<OpenAiRequest, RunError> {
    let f = Fields::new(body)?;
    let own = match endpoint {
        Endpoint::Chat => "messages",
        Endpoint::Completions => "prompt",
    };
    let known: Vec<&str> = FIELDS.iter().copied().chain([own]).collect();
    f.only(&known)?;
    if f.get("logprobs").is_some_and(|v| v != &Value::Bool(false)) {
        return Err(RunError::bad_input("logprobs: not supported"));
    }
    let model = match f.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return Err(RunError::bad_input(
                "model: required (a catalog name, e.g. @cf/meta/llama-3.1-8b-instruct)",
            ))
        }
    };
    if let Some(n) = opt_u64(&f, "n")? {
        if n != 1 {
            return Err(RunError::bad_input(format!(
                "n: only 1 is supported, got {n}"
            )));
        }
    }
    // Workers AI field names; OpenAI's max_completion_tokens is an alias of max_tokens.
    let mut wa = serde_json::Map::new();
    for key in [
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "repetition_penalty",
        "response_format",
        "stream",
    ] {
        if let Some(v) = f.get(key) {
            wa.insert(key.into(), v.clone());
        }
    }
    if let Some(v) = f
        .get("max_completion_tokens")
        .or_else(|| f.get("max_tokens"))
    {
        wa.insert("max_tokens".into(), v.clone());
    }
    match endpoint {
        Endpoint::Chat => {
            let m = f
                .get("messages")
                .ok_or_else(|| RunError::bad_input("messages: required"))?;
            wa.insert("messages".into(), m.clone());
        }
        Endpoint::Completions => {
            let p = match f.get("prompt") {
                Some(Value::String(p)) => p.clone(),
                Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                    a[0].as_str().unwrap_or_default().to_string()
                }
                Some(_) => return Err(RunError::bad_input("prompt: expected a string")),
                None => return Err(RunError::bad_input("prompt: required")),
            };
            wa.insert("prompt".into(), Value::String(p));
            wa.insert("raw".into(), Value::Bool(true));
        }
    }
    let mut input = text_generation::parse(&Value::Object(wa))?;
    input.stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| RunError::bad_input("stop: expected strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(RunError::bad_input(
                "stop: expected a string or up to 4 strings",
            ))
        }
    };
    if endpoint == Endpoint::Completions {
        debug_assert!(matches!(input.prompt, PromptInput::Prompt(_)));
    }
    let include_usage = match f.get("stream_options") {
        Some(o) => opt_bool(&Fields::new(o)?, "include_usage")?.unwrap_or(false),
        None => false,
    };
    Ok(OpenAiRequest {
        model,
        input,
        include_usage,
    })
}

/// The complete (non-streamed) response.
pub fn response(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    text: String,
    finish_reason: &str,
    usage: &Usage,
) -> Value {
    match endpoint {
        Endpoint::Chat => json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
            "usage": usage.json(),
        }),
        Endpoint::Completions => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish_reason}],
            "usage": usage.json(),
        }),
    }
}

/// One stream chunk; `text` None with a finish reason is the last content chunk.
pub fn chunk(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    text: Option<&str>,
    first: bool,
    finish_reason: Option<&str>,
) -> Value {
    match endpoint {
        Endpoint::Chat => {
            let mut delta = serde_json::Map::new();
            if first {
                delta.insert("role".into(), json!("assistant"));
            }
            if let Some(t) = text {
                delta.insert("content".into(), json!(t));
            }
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
            })
        }
        Endpoint::Completions => json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish_reason}],
        }),
    }
}

/// The usage chunk sent last (choices empty), as OpenAI sends with include_usage.
pub fn usage_chunk(
    endpoint: Endpoint,
    id: &str,
    created: u64,
    model: &str,
    usage: &Usage,
) -> Value {
    let object = match endpoint {
        Endpoint::Chat => "chat.completion.chunk",
        Endpoint::Completions => "text_completion",
    };
    json!({"id": id, "object": object, "created": created, "model": model, "choices": [], "usage": usage.json()})
}

/// OpenAI's error body for a run error.
pub fn error_body(e: &RunError) -> Value {
    let kind = match e.status {
        400 | 413 => "invalid_request_error",
        401 => "authentication_error",
        429 => "rate_limit_exceeded",
        408 => "timeout",
        _ => "server_error",
    };
    json!({"error": {"message": e.message, "type": kind, "param": null, "code": e.code}})
}
