//! GET /metrics in the Prometheus text format: requests by model and status, tokens, queue
//! depth, KV pages, and histograms of time to first token and between tokens.

use crate::Shared;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Bucket upper bounds in seconds.
const TTFT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const ITL_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, secs: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if secs <= *b {
                *c += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

#[derive(Debug)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    prompt_tokens: BTreeMap<String, u64>,
    completion_tokens: BTreeMap<String, u64>,
    ttft: Histogram,
    itl: Histogram,
}

#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                prompt_tokens: BTreeMap::new(),
                completion_tokens: BTreeMap::new(),
                ttft: Histogram::new(TTFT_BUCKETS),
                itl: Histogram::new(ITL_BUCKETS),
            }),
        }
    }
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g);
    }

    pub fn request(&self, model: &str, status: u16) {
        self.with(|m| *m.requests.entry((model.to_string(), status)).or_default() += 1);
    }

    pub fn tokens(&self, model: &str, prompt: usize, completion: usize) {
        self.with(|m| {
            *m.prompt_tokens.entry(model.to_string()).or_default() += prompt as u64;
            *m.completion_tokens.entry(model.to_string()).or_default() += completion as u64;
        });
    }

    pub fn ttft(&self, d: Duration) {
        self.with(|m| m.ttft.observe(d.as_secs_f64()));
    }

    pub fn inter_token(&self, d: Duration) {
        self.with(|m| m.itl.observe(d.as_secs_f64()));
    }
}

/// Reads one gauge from a model's engine statistics.
type Gauge = fn(&kiln_engine::engine_thread::EngineStats) -> u64;

fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub async fn render(State(st): State<Shared>) -> Response {
    let mut out = String::new();
    {
        let m = st.metrics.inner.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP kiln_requests_total Requests by model and HTTP status.\n# TYPE kiln_requests_total counter\n");
        for ((model, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "kiln_requests_total{{model=\"{}\",status=\"{status}\"}} {n}",
                label(model)
            );
        }
        for (name, map, help) in [
            (
                "kiln_prompt_tokens_total",
                &m.prompt_tokens,
                "Prompt tokens processed.",
            ),
            (
                "kiln_generated_tokens_total",
                &m.completion_tokens,
                "Tokens generated.",
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (model, n) in map {
                let _ = writeln!(out, "{name}{{model=\"{}\"}} {n}", label(model));
            }
        }
        m.ttft.render(
            "kiln_time_to_first_token_seconds",
            "Time from request to first token.",
            &mut out,
        );
        m.itl.render(
            "kiln_inter_token_seconds",
            "Time between streamed tokens.",
            &mut out,
        );
    }
    let stats = st.service.stats();
    let gauges: [(&str, &str, Gauge); 5] = [
        (
            "kiln_queue_depth",
            "Requests waiting for the engine.",
            |s| s.scheduler.waiting as u64,
        ),
        ("kiln_running_requests", "Requests being generated.", |s| {
            s.scheduler.running as u64
        }),
        ("kiln_kv_blocks_used", "KV cache pages in use.", |s| {
            (s.scheduler.kv_blocks_total - s.scheduler.kv_blocks_free) as u64
        }),
        ("kiln_kv_blocks_free", "KV cache pages free.", |s| {
            s.scheduler.kv_blocks_free as u64
        }),
        (
            "kiln_preemptions_total",
            "Requests preempted for KV pages.",
            |s| s.scheduler.preemptions,
        ),
    ];
    for (name, help, f) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (model, s) in &stats {
            let _ = writeln!(out, "{name}{{model=\"{}\"}} {}", label(model), f(s));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
