//! server-lite: the Workers AI `run` API and OpenAI-compatible routes over HTTP, on axum.
//!
//! Only HTTP lives here (routes, the envelope, SSE, limits, auth, metrics); parsing, running
//! and output building are the run-API core in `kiln_models::run`, shared with the C ABI.

mod metrics;
mod openai_routes;
mod reply;
mod run_route;
mod search;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use kiln_models::run::service::Service;
use kiln_models::run::RunError;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use metrics::Metrics;

/// Workers AI's request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 25 * 1000 * 1000;
/// Per-request time limit when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// When set, every API route needs `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    pub body_limit: usize,
    pub timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8787,
            api_token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

pub(crate) struct AppState {
    pub service: Arc<Service>,
    pub config: ServerConfig,
    pub metrics: Metrics,
}

pub(crate) type Shared = Arc<AppState>;

/// A bound server: its address is known before it runs (tests bind port 0).
pub struct Server {
    listener: tokio::net::TcpListener,
    state: Shared,
}

impl Server {
    pub async fn bind(service: Arc<Service>, config: ServerConfig) -> std::io::Result<Server> {
        let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
        Ok(Server {
            listener,
            state: Arc::new(AppState {
                service,
                config,
                metrics: Metrics::default(),
            }),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests (streams included)
    /// finish and stops the engines.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let service = self.state.service.clone();
        let app = router(self.state);
        let result = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        tokio::task::spawn_blocking(move || service.shutdown())
            .await
            .ok();
        result
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("kiln: shutting down: finishing in-flight requests");
}

fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/ai/run/{*model}", post(run_route::run_short))
        .route(
            "/client/v4/accounts/{account_id}/ai/run/{*model}",
            post(run_route::run_account),
        )
        .route(
            "/client/v4/accounts/{account_id}/ai/models/search",
            get(search::models_search),
        )
        .merge(openai_routes::routes("/v1"))
        .merge(openai_routes::routes(
            "/client/v4/accounts/{account_id}/ai/v1",
        ))
        .layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::render))
        .merge(api)
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(req: Request) -> Response {
    let e = RunError::bad_input(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ));
    let mut r = reply::error_response(&e, None, false);
    *r.status_mut() = axum::http::StatusCode::NOT_FOUND;
    r
}

/// Bearer-token check when a token is configured (401, code 10000).
async fn auth(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.config.api_token {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if given != Some(token.as_str()) {
            let e = RunError::auth("Authentication error: a valid Bearer token is required");
            st.metrics.request("-", e.status);
            return reply::error_response(&e, None, req.uri().path().contains("/v1/"));
        }
    }
    next.run(req).await
}
