//! Errors of the run API with Cloudflare Workers AI's codes and HTTP statuses.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct RunError {
    /// Workers AI error code (5007, 5006, 3006, 3007, 3040, 10000, 3001).
    pub code: u32,
    /// HTTP status the server answers with.
    pub status: u16,
    pub message: String,
}

impl RunError {
    fn new(code: u32, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
        }
    }

    /// 5007: the model name is not one kiln serves.
    pub fn no_such_model(message: impl Into<String>) -> Self {
        Self::new(5007, 400, message)
    }

    /// 5006: the input does not match the task's schema; the message names the field.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(5006, 400, message)
    }

    /// 3006: the request body is over the limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(3006, 413, message)
    }

    /// 3007: the request ran past its time limit.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(3007, 408, message)
    }

    /// 3040: the engine queue is full; retry later.
    pub fn capacity(message: impl Into<String>) -> Self {
        Self::new(3040, 429, message)
    }

    /// 10000: missing or wrong API token.
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(10000, 401, message)
    }

    /// 3001: something failed inside kiln (not the caller's fault).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(3001, 500, message)
    }

    /// The message as Workers AI words it ("AiError: ...").
    pub fn ai_message(&self) -> String {
        format!("AiError: {}", self.message)
    }

    /// The Workers AI error envelope.
    pub fn envelope(&self) -> serde_json::Value {
        serde_json::json!({
            "result": null,
            "success": false,
            "errors": [{"code": self.code, "message": self.ai_message()}],
            "messages": [],
        })
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for RunError {}

impl From<crate::ModelError> for RunError {
    fn from(e: crate::ModelError) -> Self {
        match e {
            crate::ModelError::InvalidInput(m) => RunError::bad_input(m),
            crate::ModelError::NotFound(m) => RunError::no_such_model(m),
            other => RunError::internal(other.to_string()),
        }
    }
}

/// The Workers AI success envelope around a task's output.
pub fn success_envelope(result: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "result": result,
        "success": true,
        "errors": [],
        "messages": [],
    })
}
