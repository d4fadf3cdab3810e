//! server-lite benchmark (issue #5): the latency the HTTP layer adds over calling the engine
//! directly (1-token generations, p50/p99), requests/s with 64 concurrent clients, and 1000
//! concurrent SSE streams held open at once (all must complete with no error).
//!
//!   cargo run --release -p kiln-server --example bench_server [-- MODEL_DIR]
//!
//! MODEL_DIR defaults to the tiny test Llama (tests/fixtures/llama/tiny-llama3), so that the
//! figures measure the server, not the model. Client and server share the process (loopback).

use kiln_models::resolve::ResolveOptions;
use kiln_models::run::service::{Service, ServiceOptions};
use kiln_models::run::text_generation;
use kiln_models::serving::ServeOptions;
use kiln_server::{Server, ServerConfig};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MODEL: &str = "@hf/huggingfacetb/smollm2-135m-instruct";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "{name:<28} n={:<5} p50 {:>8.1} us  p99 {:>8.1} us",
        v.len(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    (p50, p99)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama/tiny-llama3")
        });
    let tmp = std::env::temp_dir().join(format!("kiln-bench-server-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let toml = tmp.join("models.toml");
    std::fs::write(
        &toml,
        format!(
            "[models.\"{MODEL}\"]\npath = {:?}\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let service = Arc::new(Service::new(ServiceOptions {
        resolve: ResolveOptions {
            models_file: Some(toml),
            kiln_home: tmp.join("home"),
            hf_home: tmp.join("hub"),
        },
        serve: ServeOptions {
            kv_cache_memory: Some(256 << 20),
            max_seqs: 64,
            max_queue: 2000,
            ..Default::default()
        },
        ..Default::default()
    }));
    println!(
        "model: {} ({} threads available)",
        dir.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let route = service.route(MODEL).unwrap();
    let text = service.text_service(&route).unwrap();
    let one = json!({"prompt": "Hello", "max_tokens": 1, "temperature": 0, "raw": true});

    // Direct: the run core on a blocking thread, as the server calls it.
    let n = 300;
    let mut direct = Vec::with_capacity(n);
    for _ in 0..n + 20 {
        let t = text.clone();
        let input = text_generation::parse(&one).unwrap();
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            text_generation::start(&t, input)
                .unwrap()
                .collect_blocking()
                .unwrap()
        })
        .await
        .unwrap();
        direct.push(started.elapsed());
    }
    direct.drain(..20);

    let server = Server::bind(
        service.clone(),
        ServerConfig {
            port: 0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()
        .unwrap();
    let url = format!("{base}/ai/run/{MODEL}");
    let mut http = Vec::with_capacity(n);
    for _ in 0..n + 20 {
        let started = Instant::now();
        let r = client.post(&url).json(&one).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        http.push(started.elapsed());
    }
    http.drain(..20);
    let (d50, d99) = summary("engine (run core) direct", direct);
    let (h50, h99) = summary("over HTTP", http);
    println!(
        "added by the server: p50 {:.1} us, p99 {:.1} us",
        (h50.as_secs_f64() - d50.as_secs_f64()) * 1e6,
        (h99.as_secs_f64() - d99.as_secs_f64()) * 1e6
    );

    // Throughput: 64 clients, 1-token requests, for 5 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, one) = (client.clone(), url.clone(), one.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let r = client.post(&url).json(&one).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    println!(
        "64 concurrent clients: {total} requests in {:.2} s = {:.0} requests/s",
        started.elapsed().as_secs_f64(),
        total as f64 / started.elapsed().as_secs_f64()
    );

    // 1000 SSE streams open at once (queued behind 64 running), each 16 tokens.
    let streams = 1000;
    let long =
        json!({"prompt": "Hello", "max_tokens": 16, "temperature": 0, "stream": true, "raw": true});
    let started = Instant::now();
    let mut opened = Vec::with_capacity(streams);
    for _ in 0..streams {
        opened.push(client.post(&url).json(&long).send());
    }
    let responses = futures_util::future::join_all(opened).await;
    let open_secs = started.elapsed().as_secs_f64();
    let mut readers = Vec::new();
    let mut errors = 0;
    for r in responses {
        match r {
            Ok(r) if r.status() == 200 => readers.push(tokio::spawn(async move { r.text().await })),
            _ => errors += 1,
        }
    }
    let mut complete = 0;
    for rd in readers {
        match rd.await {
            Ok(Ok(body)) if body.ends_with("data: [DONE]\n\n") && !body.contains("\"errors\"") => {
                complete += 1
            }
            _ => errors += 1,
        }
    }
    println!(
        "{streams} concurrent SSE streams: all open after {open_secs:.2} s, {complete} complete, {errors} errors, {:.2} s in all",
        started.elapsed().as_secs_f64()
    );
    let _ = stop_tx.send(());
    task.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(errors, 0, "streams failed");
}
