//! Response building: the Workers AI envelope, errors with their codes, SSE bodies, and the
//! `x-kiln-served-by` header.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use kiln_models::run::{success_envelope, RunError};
use serde_json::Value;

pub const SERVED_BY: &str = "x-kiln-served-by";

fn with_served_by(mut r: Response, served_by: Option<&str>) -> Response {
    if let Some(v) = served_by.and_then(|s| HeaderValue::from_str(s).ok()) {
        r.headers_mut().insert(SERVED_BY, v);
    }
    r
}

pub fn json(status: StatusCode, body: &Value, served_by: Option<&str>) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let r = (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    with_served_by(r, served_by)
}

/// `{"result": ..., "success": true, ...}`.
pub fn ok(result: Value, served_by: Option<&str>) -> Response {
    json(StatusCode::OK, &success_envelope(result), served_by)
}

/// The error with its status: Workers AI's envelope, or OpenAI's `{"error": ...}` shape.
pub fn error_response(e: &RunError, served_by: Option<&str>, openai: bool) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = if openai {
        kiln_models::run::openai::error_body(e)
    } else {
        e.envelope()
    };
    json(status, &body, served_by)
}

/// A `text/event-stream` response from a stream of already formatted events.
pub fn sse<S>(events: S, served_by: Option<&str>) -> Response
where
    S: Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
{
    let r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    with_served_by(r, served_by)
}

/// One SSE event carrying JSON.
pub fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

pub fn done_event() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}
