//! Text generation in the Workers AI run API: input parsing and validation (field by field,
//! with the documented defaults and ranges), prompt building, submission to the engine
//! thread, streaming detokenisation and the output JSON.

use super::error::RunError;
use super::fields::{opt_bool, opt_f32, opt_u64, Fields};
use crate::chat_template::ChatMessage;
use crate::detok::IncrementalDecoder;
use crate::text::{Prompt, TextModel};
use kiln_engine::engine_thread::{
    Canceller, Engine, Event, FinishReason, GenerateRequest, LogitsProcessor, RequestHandle,
    SubmitError,
};
use kiln_engine::sampler::SamplingParams;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;

/// Workers AI's default for `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Prompt(String),
    Messages(Vec<ChatMessage>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    JsonObject,
    JsonSchema(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextInput {
    pub prompt: PromptInput,
    /// A raw prompt skips the chat template.
    pub raw: bool,
    pub stream: bool,
    pub params: SamplingParams,
    pub response_format: Option<ResponseFormat>,
    /// Strings that end generation (OpenAI `stop`); not part of the output.
    pub stop: Vec<String>,
}

/// The Workers AI text-generation input fields kiln accepts.
pub const FIELDS: &[&str] = &[
    "prompt",
    "messages",
    "raw",
    "stream",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
];

/// Parses a Workers AI text-generation input.
pub fn parse(input: &Value) -> Result<TextInput, RunError> {
    let f = Fields::new(input)?;
    f.only(FIELDS)?;
    let prompt = match (f.get("prompt"), f.get("messages")) {
        (Some(_), Some(_)) => {
            return Err(RunError::bad_input(
                "send either prompt or messages, not both",
            ))
        }
        (Some(p), None) => {
            let p = p.as_str().ok_or_else(|| {
                RunError::bad_input(format!("prompt: expected a string, got {p}"))
            })?;
            if p.is_empty() {
                return Err(RunError::bad_input("prompt: must not be empty"));
            }
            PromptInput::Prompt(p.to_string())
        }
        (None, Some(m)) => PromptInput::Messages(parse_messages(m)?),
        (None, None) => {
            return Err(RunError::bad_input(
                "required properties at '/' are 'prompt' or 'messages'",
            ))
        }
    };
    let params = sampling(&f)?;
    let response_format = match f.get("response_format") {
        None | Some(Value::Null) => None,
        Some(v) => parse_response_format(v)?,
    };
    Ok(TextInput {
        prompt,
        raw: opt_bool(&f, "raw")?.unwrap_or(false),
        stream: opt_bool(&f, "stream")?.unwrap_or(false),
        params,
        response_format,
        stop: Vec::new(),
    })
}

/// The sampling fields shared by the Workers AI and OpenAI inputs.
pub(super) fn sampling(f: &Fields<'_>) -> Result<SamplingParams, RunError> {
    let d = SamplingParams::default();
    let max_tokens = match opt_u64(f, "max_tokens")? {
        Some(0) => return Err(RunError::bad_input("max_tokens: must be at least 1")),
        Some(n) => n as usize,
        None => DEFAULT_MAX_TOKENS,
    };
    let top_k = match opt_u64(f, "top_k")? {
        Some(k) if !(1..=50).contains(&k) => {
            return Err(RunError::bad_input(format!(
                "top_k: must be between 1 and 50, got {k}"
            )))
        }
        k => k.map(|k| k as usize),
    };
    let params = SamplingParams {
        temperature: opt_f32(f, "temperature")?.unwrap_or(d.temperature),
        top_k,
        top_p: opt_f32(f, "top_p")?.unwrap_or(d.top_p),
        repetition_penalty: opt_f32(f, "repetition_penalty")?.unwrap_or(d.repetition_penalty),
        frequency_penalty: opt_f32(f, "frequency_penalty")?.unwrap_or(d.frequency_penalty),
        presence_penalty: opt_f32(f, "presence_penalty")?.unwrap_or(d.presence_penalty),
        seed: opt_u64(f, "seed")?,
        max_tokens,
    };
    params
        .validate()
        .map_err(|e| RunError::bad_input(e.to_string()))?;
    Ok(params)
}

fn parse_messages(v: &Value) -> Result<Vec<ChatMessage>, RunError> {
    let items = v
        .as_array()
        .ok_or_else(|| RunError::bad_input(format!("messages: expected an array, got {v}")))?;
    if items.is_empty() {
        return Err(RunError::bad_input("messages: must not be empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                RunError::bad_input(format!("messages[{i}].role: expected a string"))
            })?;
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                // OpenAI-style content parts: the text parts, concatenated.
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(
                        |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                            (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                            _ => Err(RunError::bad_input(format!(
                                "messages[{i}].content: only text parts are supported here"
                            ))),
                        },
                    )
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
                Some(Value::Null) | None if role == "assistant" => String::new(),
                _ => {
                    return Err(RunError::bad_input(format!(
                        "messages[{i}].content: expected a string"
                    )))
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

fn parse_response_format(v: &Value) -> Result<Option<ResponseFormat>, RunError> {
    let kind = v.get("type").and_then(Value::as_str).ok_or_else(|| {
        RunError::bad_input("response_format.type: expected \"json_object\" or \"json_schema\"")
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(ResponseFormat::JsonObject)),
        "json_schema" => {
            let schema = v.get("json_schema").ok_or_else(|| {
                RunError::bad_input(
                    "response_format.json_schema: required when type is json_schema",
                )
            })?;
            // OpenAI wraps the schema as {name, schema, strict}; Workers AI passes it directly.
            let schema = match schema.get("schema") {
                Some(inner) if schema.get("name").is_some() => inner,
                _ => schema,
            };
            if !schema.is_object() {
                return Err(RunError::bad_input(
                    "response_format.json_schema: expected an object",
                ));
            }
            Ok(Some(ResponseFormat::JsonSchema(schema.clone())))
        }
        other => Err(RunError::bad_input(format!(
            "response_format.type: expected \"json_object\" or \"json_schema\", got {other:?}"
        ))),
    }
}

/// A loaded text model and its engine thread.
pub struct TextService {
    pub model: Arc<TextModel>,
    pub engine: Engine,
    /// Builds the logits processor of a `response_format` (JSON mode).
    pub constraint: Box<dyn ConstraintFactory>,
}

/// Makes the constrained-decoding processor for a response format.
pub trait ConstraintFactory: Send + Sync {
    fn make(
        &self,
        format: &ResponseFormat,
        stop_ids: &[u32],
    ) -> Result<Box<dyn LogitsProcessor>, RunError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

impl Usage {
    pub fn json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// What a running generation yields.
#[derive(Debug, Clone, PartialEq)]
pub enum TextEvent {
    Text(String),
    Done {
        usage: Usage,
        /// "stop" or "length" (OpenAI's finish_reason).
        finish_reason: &'static str,
    },
}

/// One submitted generation: text pieces as they decode, then usage.
pub struct TextJob {
    handle: RequestHandle,
    decoder: IncrementalDecoder,
    stop: Vec<String>,
    /// Decoded text not yet released (it might be the start of a stop string).
    held: String,
    /// Events ready to hand out, oldest first.
    ready: VecDeque<Result<TextEvent, RunError>>,
    prompt_tokens: usize,
    completion_tokens: usize,
    /// The final event is in `ready` (or was handed out).
    ended: bool,
    pub json_mode: bool,
    pub stream: bool,
}

/// Builds the prompt, submits it and returns the running job.
pub fn start(service: &TextService, input: TextInput) -> Result<TextJob, RunError> {
    let model = &service.model;
    let ids = match &input.prompt {
        PromptInput::Prompt(p) if input.raw || model.chat_template.is_none() => {
            model.prompt_ids(&Prompt::Raw(p))?
        }
        PromptInput::Prompt(p) => {
            model.prompt_ids(&Prompt::Chat(&[ChatMessage::new("user", p.as_str())]))?
        }
        PromptInput::Messages(m) => model.prompt_ids(&Prompt::Chat(m))?,
    };
    let window = model.context_window();
    if ids.len() >= window {
        return Err(RunError::bad_input(format!(
            "the prompt is {} tokens; the context window of this model is {window}",
            ids.len()
        )));
    }
    let mut params = input.params.clone();
    params.max_tokens = params.max_tokens.min(window - ids.len());
    let processor = match &input.response_format {
        Some(f) => Some(service.constraint.make(f, &model.eos_ids)?),
        None => None,
    };
    let decoder = IncrementalDecoder::with_context(model.tokenizer.clone(), &ids, true)?;
    let prompt_tokens = ids.len();
    let handle = service
        .engine
        .submit(GenerateRequest {
            prompt: ids,
            params,
            stop_ids: model.eos_ids.clone(),
            processor,
        })
        .map_err(|e| match e {
            SubmitError::QueueFull(_) => RunError::capacity(format!("{e}; retry later")),
            SubmitError::ShuttingDown => RunError::capacity(e.to_string()),
            SubmitError::Invalid(m) => RunError::bad_input(m),
        })?;
    Ok(TextJob {
        handle,
        decoder,
        stop: input.stop.into_iter().filter(|s| !s.is_empty()).collect(),
        held: String::new(),
        ready: VecDeque::new(),
        prompt_tokens,
        completion_tokens: 0,
        ended: false,
        json_mode: input.response_format.is_some(),
        stream: input.stream,
    })
}

impl TextJob {
    /// Next event (async); `None` after the final one.
    pub async fn next(&mut self) -> Option<Result<TextEvent, RunError>> {
        while self.ready.is_empty() && !self.ended {
            let e = self.handle.next().await;
            self.on_event(e);
        }
        self.ready.pop_front()
    }

    /// Next event, blocking this (non-async) thread.
    pub fn next_blocking(&mut self) -> Option<Result<TextEvent, RunError>> {
        while self.ready.is_empty() && !self.ended {
            let e = self.handle.next_blocking();
            self.on_event(e);
        }
        self.ready.pop_front()
    }

    /// Stops generation now (frees the request's KV pages).
    pub fn cancel(&mut self) {
        self.handle.cancel();
        self.ended = true;
        self.ready.clear();
    }

    /// Cancels this job from another thread: its events end early (`next_blocking` then
    /// yields an error, since no final event arrives).
    pub fn canceller(&self) -> Canceller {
        self.handle.canceller()
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    fn on_event(&mut self, e: Option<Event>) {
        match e {
            Some(Event::Token(id)) => {
                self.completion_tokens += 1;
                match self.decoder.push(id) {
                    Ok(Some(piece)) => self.release(piece),
                    Ok(None) => {}
                    Err(err) => self.fail(err.to_string()),
                }
            }
            Some(Event::Done(d)) => {
                let rest = self.decoder.finish().unwrap_or_default();
                self.release(rest);
                if !self.ended {
                    let flush = std::mem::take(&mut self.held);
                    self.push_text(flush);
                    let reason = match d.reason {
                        FinishReason::Stop => "stop",
                        FinishReason::Length | FinishReason::ContextFull => "length",
                    };
                    self.finish(d.completion_tokens, reason);
                }
            }
            Some(Event::Error(m)) => self.fail(m),
            None => self.fail("the engine stopped before the request finished".into()),
        }
    }

    fn fail(&mut self, message: String) {
        if !self.ended {
            self.ready.push_back(Err(RunError::internal(message)));
            self.ended = true;
        }
    }

    fn push_text(&mut self, text: String) {
        if !text.is_empty() {
            self.ready.push_back(Ok(TextEvent::Text(text)));
        }
    }

    fn finish(&mut self, completion_tokens: usize, finish_reason: &'static str) {
        let usage = Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
        };
        self.ready.push_back(Ok(TextEvent::Done {
            usage,
            finish_reason,
        }));
        self.ended = true;
    }

    /// Passes decoded text on, holding back what could begin a stop string; a stop string
    /// ends the job (it and anything after it are dropped).
    fn release(&mut self, piece: String) {
        if self.ended {
            return;
        }
        self.held.push_str(&piece);
        let hit = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = hit {
            self.held.truncate(at);
            let text = std::mem::take(&mut self.held);
            self.push_text(text);
            self.handle.cancel();
            self.finish(self.completion_tokens, "stop");
            return;
        }
        let keep = self.stop_prefix_len();
        let text: String = self.held.drain(..self.held.len() - keep).collect();
        self.push_text(text);
    }

    /// Bytes at the end of `held` that are a proper prefix of some stop string.
    fn stop_prefix_len(&self) -> usize {
        let mut keep = 0;
        for s in &self.stop {
            for (i, _) in s.char_indices().skip(1) {
                if self.held.ends_with(&s[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        keep
    }

    /// Runs to the end and builds the Workers AI output {response, usage}.
    pub async fn collect(mut self) -> Result<Value, RunError> {
        let mut text = String::new();
        loop {
            match self.next().await {
                Some(Ok(TextEvent::Text(t))) => text.push_str(&t),
                Some(Ok(TextEvent::Done { usage, .. })) => return Ok(self.output(text, usage)),
                Some(Err(e)) => return Err(e),
                None => return Err(RunError::internal("generation ended without usage")),
            }
        }
    }

    /// `collect` for non-async callers.
    pub fn collect_blocking(mut self) -> Result<Value, RunError> {
        let mut text = String::new();
        loop {
            match self.next_blocking() {
                Some(Ok(TextEvent::Text(t))) => text.push_str(&t),
                Some(Ok(TextEvent::Done { usage, .. })) => return Ok(self.output(text, usage)),
                Some(Err(e)) => return Err(e),
                None => return Err(RunError::internal("generation ended without usage")),
            }
        }
    }

    /// {response, usage}; in JSON mode the response is the parsed object (the text as is if
    /// generation was cut short before the document closed).
    pub fn output(&self, text: String, usage: Usage) -> Value {
        let response = if self.json_mode {
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        json!({"response": response, "usage": usage.json()})
    }
}
