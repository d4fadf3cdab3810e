//! GET /client/v4/accounts/{id}/ai/models/search: the catalog, as Workers AI lists it.

use crate::reply;
use crate::Shared;
use axum::extract::{Query, State};
use axum::response::Response;
use kiln_models::run::RunError;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct SearchQuery {
    task: Option<String>,
    search: Option<String>,
    page: Option<String>,
    per_page: Option<String>,
}

fn positive(name: &str, v: Option<&str>, default: usize, max: usize) -> Result<usize, RunError> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(RunError::bad_input(format!(
                "{name}: expected an integer from 1 to {max}, got {s:?}"
            ))),
        },
    }
}

pub async fn models_search(State(st): State<Shared>, Query(q): Query<SearchQuery>) -> Response {
    let page = positive("page", q.page.as_deref(), 1, 1_000_000);
    let per_page = positive("per_page", q.per_page.as_deref(), 50, 1000);
    let (page, per_page) = match (page, per_page) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(e), _) | (_, Err(e)) => return reply::error_response(&e, None, false),
    };
    let results = st
        .service
        .search(q.task.as_deref(), q.search.as_deref(), page, per_page);
    let count = results.len();
    let mut body = kiln_models::run::success_envelope(json!(results));
    body["result_info"] = json!({"page": page, "per_page": per_page, "count": count});
    reply::json(axum::http::StatusCode::OK, &body, None)
}
