//! POST /ai/run/{model} and /client/v4/accounts/{id}/ai/run/{model}: the Workers AI run API.

use crate::reply;
use crate::Shared;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::Response;
use futures_util::stream;
use kiln_models::run::service::{Prepared, Route};
use kiln_models::run::text_generation::{TextEvent, TextJob, Usage};
use kiln_models::run::RunError;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Instant;
use tokio::time::{timeout_at, Instant as Deadline};

pub async fn run_short(
    State(st): State<Shared>,
    Path(model): Path<String>,
    body: Body,
) -> Response {
    run(st, model, body).await
}

pub async fn run_account(
    State(st): State<Shared>,
    Path((_account, model)): Path<(String, String)>,
    body: Body,
) -> Response {
    run(st, model, body).await
}

async fn run(st: Shared, model: String, body: Body) -> Response {
    let started = Instant::now();
    let deadline = Deadline::now() + st.config.timeout;
    let (route, prepared) = match start(&st, &model, body).await {
        Ok(x) => x,
        Err((e, route)) => {
            st.metrics.request(&model, e.status);
            let served = route.as_ref().map(Route::served_by_label);
            return reply::error_response(&e, served.as_deref(), false);
        }
    };
    let served = route.served_by_label();
    let name = route.requested.name;
    match prepared {
        Prepared::Json(v) => {
            st.metrics.request(name, 200);
            reply::ok(v, Some(&served))
        }
        Prepared::Text(job) if job.stream => {
            st.metrics.request(name, 200);
            reply::sse(
                workers_stream(st.clone(), name, job, deadline, started),
                Some(&served),
            )
        }
        Prepared::Text(job) => match collect(&st, name, job, deadline, started).await {
            Ok((job, text, usage, _)) => {
                st.metrics.request(name, 200);
                reply::ok(job.output(text, usage), Some(&served))
            }
            Err(e) => {
                st.metrics.request(name, e.status);
                reply::error_response(&e, Some(&served), false)
            }
        },
    }
}

/// Body, JSON, route, then the (possibly model-loading, so blocking) prepare step.
pub(crate) async fn start(
    st: &Shared,
    model: &str,
    body: Body,
) -> Result<(Route, Prepared), (RunError, Option<Route>)> {
    let input = read_json(st, body).await.map_err(|e| (e, None))?;
    prepare(st, model, input).await
}

pub(crate) async fn prepare(
    st: &Shared,
    model: &str,
    input: Value,
) -> Result<(Route, Prepared), (RunError, Option<Route>)> {
    let route = st.service.route(model).map_err(|e| (e, None))?;
    let service = st.service.clone();
    let r = route.clone();
    let prepared = tokio::task::spawn_blocking(move || service.prepare(&r, &input))
        .await
        .map_err(|e| {
            (
                RunError::internal(format!("worker failed: {e}")),
                Some(route.clone()),
            )
        })?
        .map_err(|e| (e, Some(route.clone())))?;
    Ok((route, prepared))
}

/// The request body as JSON, within the size limit (413/3006) and well formed (400/5006).
pub(crate) async fn read_json(st: &Shared, body: Body) -> Result<Value, RunError> {
    let limit = st.config.body_limit;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        RunError::too_large(format!("Request is too large: the limit is {limit} bytes"))
    })?;
    if bytes.is_empty() {
        return Err(RunError::bad_input(
            "the request body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| RunError::bad_input(format!("invalid JSON: {e}")))
}

/// Runs a job to the end within the deadline, timing tokens for the metrics.
pub(crate) async fn collect(
    st: &Shared,
    model: &str,
    mut job: TextJob,
    deadline: Deadline,
    started: Instant,
) -> Result<(TextJob, String, Usage, &'static str), RunError> {
    let mut text = String::new();
    let mut clock = TokenClock::new(started);
    loop {
        match timeout_at(deadline, job.next()).await {
            Ok(Some(Ok(TextEvent::Text(t)))) => {
                clock.tick(st);
                text.push_str(&t);
            }
            Ok(Some(Ok(TextEvent::Done {
                usage,
                finish_reason,
            }))) => {
                st.metrics
                    .tokens(model, usage.prompt_tokens, usage.completion_tokens);
                return Ok((job, text, usage, finish_reason));
            }
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => return Err(RunError::internal("generation ended without usage")),
            Err(_) => {
                job.cancel();
                return Err(timeout_error(st));
            }
        }
    }
}

pub(crate) fn timeout_error(st: &Shared) -> RunError {
    RunError::timeout(format!(
        "Request timeout: not finished within {} s",
        st.config.timeout.as_secs()
    ))
}

/// Time to first token and between tokens.
pub(crate) struct TokenClock {
    started: Instant,
    last: Option<Instant>,
}

impl TokenClock {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            last: None,
        }
    }

    pub fn tick(&mut self, st: &Shared) {
        let now = Instant::now();
        match self.last {
            None => st.metrics.ttft(now - self.started),
            Some(prev) => st.metrics.inter_token(now - prev),
        }
        self.last = Some(now);
    }
}

struct StreamState {
    st: Shared,
    model: &'static str,
    job: TextJob,
    deadline: Deadline,
    clock: TokenClock,
    done: bool,
}

/// `data: {"response": "..."}` per piece, then the usage event, then `data: [DONE]`. Dropping
/// the stream (client gone) drops the job, which cancels the request.
fn workers_stream(
    st: Shared,
    model: &'static str,
    job: TextJob,
    deadline: Deadline,
    started: Instant,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let state = StreamState {
        st,
        model,
        job,
        deadline,
        clock: TokenClock::new(started),
        done: false,
    };
    stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let out = match timeout_at(s.deadline, s.job.next()).await {
            Ok(Some(Ok(TextEvent::Text(t)))) => {
                s.clock.tick(&s.st);
                reply::event(&json!({ "response": t }))
            }
            Ok(Some(Ok(TextEvent::Done { usage, .. }))) => {
                s.st.metrics
                    .tokens(s.model, usage.prompt_tokens, usage.completion_tokens);
                s.done = true;
                let last = json!({"response": "", "usage": usage.json()});
                [reply::event(&last), reply::done_event()].concat().into()
            }
            Ok(Some(Err(e))) => {
                s.done = true;
                stream_error(&e)
            }
            Ok(None) => {
                s.done = true;
                reply::done_event()
            }
            Err(_) => {
                s.job.cancel();
                s.done = true;
                stream_error(&timeout_error(&s.st))
            }
        };
        Some((Ok(out), s))
    })
}

/// An error after the stream has started: one error event, then [DONE].
pub(crate) fn stream_error(e: &RunError) -> Bytes {
    let v = json!({"errors": [{"code": e.code, "message": e.ai_message()}]});
    [reply::event(&v), reply::done_event()].concat().into()
}
