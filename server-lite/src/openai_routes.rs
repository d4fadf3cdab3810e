//! OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings and
//! /v1/models (also under /client/v4/accounts/{id}/ai/v1).

use crate::reply;
use crate::run_route::{self, TokenClock};
use crate::Shared;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream;
use kiln_models::catalog;
use kiln_models::run::openai::{self, Endpoint};
use kiln_models::run::service::Prepared;
use kiln_models::run::text_generation::{TextEvent, TextJob};
use kiln_models::run::RunError;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::time::{timeout_at, Instant as Deadline};

pub fn routes(prefix: &str) -> Router<Shared> {
    Router::new()
        .route(&format!("{prefix}/chat/completions"), post(chat))
        .route(&format!("{prefix}/completions"), post(completions))
        .route(&format!("{prefix}/embeddings"), post(embeddings))
        .route(&format!("{prefix}/models"), get(models))
}

async fn chat(State(st): State<Shared>, body: Body) -> Response {
    complete(st, body, Endpoint::Chat).await
}

async fn completions(State(st): State<Shared>, body: Body) -> Response {
    complete(st, body, Endpoint::Completions).await
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn next_id(endpoint: Endpoint) -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    match endpoint {
        Endpoint::Chat => format!("chatcmpl-kiln-{:x}-{n}", now_secs()),
        Endpoint::Completions => format!("cmpl-kiln-{:x}-{n}", now_secs()),
    }
}

async fn complete(st: Shared, body: Body, endpoint: Endpoint) -> Response {
    let started = Instant::now();
    let deadline = Deadline::now() + st.config.timeout;
    let fail = |st: &Shared, model: &str, e: RunError, served: Option<String>| {
        st.metrics.request(model, e.status);
        reply::error_response(&e, served.as_deref(), true)
    };
    let value = match run_route::read_json(&st, body).await {
        Ok(v) => v,
        Err(e) => return fail(&st, "-", e, None),
    };
    let req = match openai::parse(&value, endpoint) {
        Ok(r) => r,
        Err(e) => return fail(&st, "-", e, None),
    };
    // The run core validates again from the Workers AI form; prepare starts the job.
    let route = match st.service.route(&req.model) {
        Ok(r) => r,
        Err(e) => return fail(&st, &req.model, e, None),
    };
    let served = route.served_by_label();
    let service = st.service.clone();
    let r = route.clone();
    let input = req.input.clone();
    let job = tokio::task::spawn_blocking(move || {
        let svc = service.text_service(&r)?;
        kiln_models::run::text_generation::start(&svc, input)
    })
    .await
    .map_err(|e| RunError::internal(format!("worker failed: {e}")))
    .and_then(|r| r);
    let job = match job {
        Ok(j) => j,
        Err(e) => return fail(&st, route.requested.name, e, Some(served)),
    };
    let name = route.requested.name;
    let id = next_id(endpoint);
    let created = now_secs();
    if job.stream {
        st.metrics.request(name, 200);
        let s = ChunkStream {
            st: st.clone(),
            endpoint,
            id,
            created,
            model: req.model,
            job,
            deadline,
            clock: TokenClock::new(started),
            first: true,
            done: false,
            include_usage: req.include_usage,
        };
        return reply::sse(chunk_stream(s), Some(&served));
    }
    match run_route::collect(&st, name, job, deadline, started).await {
        Ok((job, text, usage, finish)) => {
            st.metrics.request(name, 200);
            let text = match job.output(text, usage).get("response") {
                // JSON mode: the parsed document, serialised back to the content string.
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let body = openai::response(endpoint, &id, created, &req.model, text, finish, &usage);
            reply::json(axum::http::StatusCode::OK, &body, Some(&served))
        }
        Err(e) => fail(&st, name, e, Some(served)),
    }
}

struct ChunkStream {
    st: Shared,
    endpoint: Endpoint,
    id: String,
    created: u64,
    model: String,
    job: TextJob,
    deadline: Deadline,
    clock: TokenClock,
    first: bool,
    done: bool,
    include_usage: bool,
}

/// Chunks with choices[].delta, a final chunk with finish_reason, a usage chunk, [DONE].
fn chunk_stream(
    s: ChunkStream,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    stream::unfold(s, |mut s| async move {
        if s.done {
            return None;
        }
        let out = match timeout_at(s.deadline, s.job.next()).await {
            Ok(Some(Ok(TextEvent::Text(t)))) => {
                s.clock.tick(&s.st);
                let c = openai::chunk(
                    s.endpoint,
                    &s.id,
                    s.created,
                    &s.model,
                    Some(&t),
                    s.first,
                    None,
                );
                s.first = false;
                reply::event(&c)
            }
            Ok(Some(Ok(TextEvent::Done {
                usage,
                finish_reason,
            }))) => {
                s.st.metrics
                    .tokens(&s.model, usage.prompt_tokens, usage.completion_tokens);
                s.done = true;
                let last = openai::chunk(
                    s.endpoint,
                    &s.id,
                    s.created,
                    &s.model,
                    None,
                    s.first,
                    Some(finish_reason),
                );
                // The usage chunk only when asked for (stream_options.include_usage), as OpenAI.
                let mut out = vec![reply::event(&last)];
                if s.include_usage {
                    let u = openai::usage_chunk(s.endpoint, &s.id, s.created, &s.model, &usage);
                    out.push(reply::event(&u));
                }
                out.push(reply::done_event());
                out.concat().into()
            }
            Ok(Some(Err(e))) => {
                s.done = true;
                error_event(&e)
            }
            Ok(None) => {
                s.done = true;
                reply::done_event()
            }
            Err(_) => {
                s.job.cancel();
                s.done = true;
                error_event(&run_route::timeout_error(&s.st))
            }
        };
        Some((Ok(out), s))
    })
}

fn error_event(e: &RunError) -> Bytes {
    [reply::event(&openai::error_body(e)), reply::done_event()]
        .concat()
        .into()
}

async fn embeddings(State(st): State<Shared>, body: Body) -> Response {
    let value = match run_route::read_json(&st, body).await {
        Ok(v) => v,
        Err(e) => return reply::error_response(&e, None, true),
    };
    let model = value.get("model").and_then(Value::as_str).unwrap_or("");
    let input = json!({"text": value.get("input").cloned().unwrap_or(Value::Null)});
    match run_route::prepare(&st, model, input).await {
        Ok((route, Prepared::Json(out))) => {
            st.metrics.request(route.requested.name, 200);
            let data: Vec<Value> = out
                .get("data")
                .and_then(Value::as_array)
                .map(|rows| {
                    rows.iter()
                        .enumerate()
                        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
                        .collect()
                })
                .unwrap_or_default();
            let body = json!({"object": "list", "data": data, "model": model,
                              "usage": out.get("usage").cloned().unwrap_or(json!({"prompt_tokens": 0, "total_tokens": 0}))});
            reply::json(
                axum::http::StatusCode::OK,
                &body,
                Some(&route.served_by_label()),
            )
        }
        Ok((route, Prepared::Text(_))) => {
            let e = RunError::bad_input(format!(
                "{} is not an embeddings model",
                route.requested.name
            ));
            st.metrics.request(route.requested.name, e.status);
            reply::error_response(&e, None, true)
        }
        Err((e, route)) => {
            st.metrics.request(model, e.status);
            let served = route.as_ref().map(|r| r.served_by_label());
            reply::error_response(&e, served.as_deref(), true)
        }
    }
}

async fn models(State(st): State<Shared>) -> Response {
    let data: Vec<Value> = catalog::all()
        .iter()
        .filter(|e| st.service.route(e.name).is_ok())
        .map(|e| json!({"id": e.name, "object": "model", "created": 0, "owned_by": "kiln", "task": e.task.as_str()}))
        .collect();
    reply::json(
        axum::http::StatusCode::OK,
        &json!({"object": "list", "data": data}),
        None,
    )
}
