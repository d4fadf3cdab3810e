//! server-lite over real HTTP on the tiny golden Llama (standing in for the default text
//! model through a models.toml): the Workers AI envelope and error codes, SSE, the
//! OpenAI-compatible routes, models/search, metrics, limits, auth, cancellation on client
//! disconnect and graceful shutdown.

use kiln_models::resolve::ResolveOptions;
use kiln_models::run::service::{Service, ServiceOptions};
use kiln_models::serving::ServeOptions;
use kiln_server::{Server, ServerConfig};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const DEFAULT: &str = "@hf/huggingfacetb/smollm2-135m-instruct";
const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";
const EMBED: &str = "@hf/sentence-transformers/all-minilm-l6-v2";
const BGE: &str = "@cf/baai/bge-base-en-v1.5";

struct Harness {
    base: String,
    client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(
        config: ServerConfig,
        strict: bool,
        max_seqs: usize,
        max_queue: usize,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let fixture =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama/tiny-llama3");
        let toml = dir.path().join("models.toml");
        let bert =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/bert/tiny-bert");
        std::fs::write(
            &toml,
            format!(
                "[models.\"{DEFAULT}\"]\npath = {:?}\n[models.\"{EMBED}\"]\npath = {:?}\n",
                fixture.display().to_string(),
                bert.display().to_string()
            ),
        )
        .unwrap();
        let service = Service::new(ServiceOptions {
            resolve: ResolveOptions {
                models_file: Some(toml),
                kiln_home: dir.path().join("home"),
                hf_home: dir.path().join("hub"),
            },
            strict,
            serve: ServeOptions {
                kv_cache_memory: Some(64 << 20),
                max_seqs,
                max_queue,
                ..Default::default()
            },
            ..Default::default()
        });
        let server = Server::bind(Arc::new(service), ServerConfig { port: 0, ..config })
            .await
            .unwrap();
        let base = format!("http://{}", server.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        Harness {
            base,
            client: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn default() -> Harness {
        Self::start(ServerConfig::default(), false, 8, 32).await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
        (status, headers, v)
    }

    async fn post_raw(&self, path: &str, body: &str) -> (u16, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

fn error_code(v: &Value) -> u64 {
    assert_eq!(v["success"], json!(false), "{v}");
    assert_eq!(v["result"], Value::Null);
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.starts_with("AiError: "), "{msg}");
    v["errors"][0]["code"].as_u64().unwrap()
}

/// SSE `data:` payloads of a body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_the_envelope_and_names_the_weights() {
    let h = Harness::default().await;
    let body = json!({"prompt": "Hello there", "max_tokens": 6, "temperature": 0});
    for path in [
        format!("/ai/run/{DEFAULT}"),
        format!("/client/v4/accounts/abc123/ai/run/{DEFAULT}"),
    ] {
        let (status, headers, v) = h.post(&path, &body).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["success"], json!(true));
        assert_eq!(v["errors"], json!([]));
        let usage = &v["result"]["usage"];
        assert_eq!(usage["completion_tokens"], json!(6));
        assert_eq!(
            usage["total_tokens"].as_u64().unwrap(),
            usage["prompt_tokens"].as_u64().unwrap() + 6
        );
        assert!(v["result"]["response"].is_string());
        assert_eq!(headers["x-kiln-served-by"], DEFAULT);
    }
    // A catalog name whose weights are not installed is served by the default, and says so.
    let (status, headers, v) = h.post(&format!("/ai/run/{LLAMA}"), &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["x-kiln-served-by"], DEFAULT);
    // Same seed, same text; greedy is deterministic.
    let seeded = json!({"prompt": "Once", "max_tokens": 8, "seed": 42, "temperature": 1.0});
    let a = h.post(&format!("/ai/run/{DEFAULT}"), &seeded).await.2;
    let b = h.post(&format!("/ai/run/{DEFAULT}"), &seeded).await.2;
    assert_eq!(a["result"]["response"], b["result"]["response"]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sends_pieces_then_usage_then_done() {
    let h = Harness::default().await;
    let r = h
        .client
        .post(format!("{}/ai/run/{DEFAULT}", h.base))
        .json(&json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": true, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let body = r.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["response"], json!(""));
    assert_eq!(last["usage"]["completion_tokens"], json!(5));
    let text: String = data[..data.len() - 2]
        .iter()
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["response"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // The streamed pieces concatenate to the non-streamed response.
    let (_, _, whole) = h
        .post(&format!("/ai/run/{DEFAULT}"), &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0}))
        .await;
    assert_eq!(whole["result"]["response"].as_str().unwrap(), text);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_5006_naming_the_field() {
    let h = Harness::default().await;
    let path = format!("/ai/run/{DEFAULT}");
    let cases = [
        (json!({"prompt": "x", "temperature": 9}), "temperature"),
        (json!({"prompt": "x", "top_k": 0}), "top_k"),
        (json!({"prompt": "x", "top_p": 0}), "top_p"),
        (json!({"prompt": "x", "max_tokens": "many"}), "max_tokens"),
        (json!({"prompt": "x", "max_tokens": 0}), "max_tokens"),
        (json!({"prompt": "x", "seed": -1}), "seed"),
        (
            json!({"prompt": "x", "repetition_penalty": 3}),
            "repetition_penalty",
        ),
        (
            json!({"prompt": "x", "frequency_penalty": 3}),
            "frequency_penalty",
        ),
        (json!({"prompt": "x", "stream": "yes"}), "stream"),
        (json!({"prompt": 5}), "prompt"),
        (json!({"prompt": ""}), "prompt"),
        (json!({"messages": "hi"}), "messages"),
        (
            json!({"messages": [{"role": "user"}]}),
            "messages[0].content",
        ),
        (
            json!({"prompt": "x", "messages": []}),
            "either prompt or messages",
        ),
        (json!({}), "prompt"),
        (json!([1, 2]), "JSON object"),
        (
            json!({"prompt": "x", "response_format": {"type": "yaml"}}),
            "response_format",
        ),
    ];
    for (body, field) in cases {
        let (status, _, v) = h.post(&path, &body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(error_code(&v), 5006, "{body}");
        let msg = v["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{body}: {msg:?} does not name {field}");
    }
    let (status, text) = h.post_raw(&path, "{not json").await;
    assert_eq!(status, 400);
    assert!(
        text.contains("5006") && text.contains("invalid JSON"),
        "{text}"
    );
    let (status, text) = h.post_raw(&path, "").await;
    assert_eq!(status, 400);
    assert!(text.contains("empty"), "{text}");
    let (status, _, v) = h
        .post("/ai/run/@cf/meta/no-such-model", &json!({"prompt": "x"}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&v), 5007);
    let (status, text) = h.get("/nowhere").await;
    assert_eq!(status, 404, "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_auth_and_strict_mode() {
    let config = ServerConfig {
        api_token: Some("s3cret".into()),
        body_limit: 1000,
        ..Default::default()
    };
    let h = Harness::start(config, true, 8, 32).await;
    let path = format!("/ai/run/{DEFAULT}");
    let body = json!({"prompt": "x", "max_tokens": 1});
    let (status, _, v) = h.post(&path, &body).await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&v), 10000);
    let auth = |rb: reqwest::RequestBuilder| rb.bearer_auth("s3cret");
    let r = auth(h.client.post(format!("{}{path}", h.base)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let big = json!({"prompt": "x".repeat(2000)});
    let r = auth(h.client.post(format!("{}{path}", h.base)))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(error_code(&r.json().await.unwrap()), 3006);
    // Strict: a catalog name without weights is 5007 and says what is missing.
    let r = auth(h.client.post(format!("{}/ai/run/{LLAMA}", h.base)))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(error_code(&v), 5007);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("llama-3.1-8b"),
        "{v}"
    );
    // Health and metrics need no token.
    assert_eq!(h.get("/healthz").await.0, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_until_a_slot_frees() {
    // One running, none queued.
    let h = Harness::start(ServerConfig::default(), false, 1, 0).await;
    let path = format!("{}/ai/run/{DEFAULT}", h.base);
    let long = json!({"prompt": "x", "max_tokens": 400, "stream": true, "temperature": 0});
    let first = h.client.post(&path).json(&long).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let short = json!({"prompt": "y", "max_tokens": 1});
    let (status, _, v) = h.post(&format!("/ai/run/{DEFAULT}"), &short).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(error_code(&v), 3040);
    // Dropping the stream cancels it and frees the slot.
    drop(first);
    for _ in 0..100 {
        let (status, _, v) = h.post(&format!("/ai/run/{DEFAULT}"), &short).await;
        if status == 200 {
            h.stop().await;
            return;
        }
        assert_eq!(status, 429, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cancelled stream never freed its slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_time_limit_answers_408() {
    let config = ServerConfig {
        timeout: Duration::from_millis(1),
        ..Default::default()
    };
    let h = Harness::start(config, false, 8, 32).await;
    let body = json!({"prompt": "y", "max_tokens": 400, "temperature": 0});
    let (status, _, v) = h.post(&format!("/ai/run/{DEFAULT}"), &body).await;
    assert_eq!(status, 408, "{v}");
    assert_eq!(error_code(&v), 3007);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_and_frees_pages() {
    let h = Harness::default().await;
    let mut r = h
        .client
        .post(format!("{}/ai/run/{DEFAULT}", h.base))
        .json(&json!({"prompt": "x", "max_tokens": 400, "stream": true, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    let mut last = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        last = h.get("/metrics").await.1;
        if last.contains(&format!("kiln_kv_blocks_used{{model=\"{DEFAULT}\"}} 0"))
            && last.contains(&format!("kiln_running_requests{{model=\"{DEFAULT}\"}} 0"))
        {
            h.stop().await;
            return;
        }
    }
    panic!("the disconnected request still holds KV pages:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_an_open_stream() {
    let h = Harness::default().await;
    let r = h
        .client
        .post(format!("{}/ai/run/{DEFAULT}", h.base))
        .json(&json!({"prompt": "x", "max_tokens": 40, "stream": true, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reader = tokio::spawn(async move { r.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.stop().await;
    let body = reader.await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().unwrap(), "[DONE]", "{body}");
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], json!(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_chat_and_completions() {
    let h = Harness::default().await;
    let msgs =
        json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]);
    for prefix in ["/v1", "/client/v4/accounts/acc/ai/v1"] {
        let (status, headers, v) = h
            .post(
                &format!("{prefix}/chat/completions"),
                &json!({"model": LLAMA, "messages": msgs, "max_tokens": 4, "temperature": 0}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], LLAMA);
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["completion_tokens"], json!(4));
        assert_eq!(headers["x-kiln-served-by"], DEFAULT);
    }
    let r = h
        .client
        .post(format!("{}/v1/chat/completions", h.base))
        .json(&json!({"model": DEFAULT, "messages": msgs, "max_tokens": 4, "temperature": 0, "stream": true,
                      "stream_options": {"include_usage": true}}))
        .send()
        .await
        .unwrap();
    let data = sse_data(&r.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(
        chunks.last().unwrap()["usage"]["completion_tokens"],
        json!(4)
    );
    // Without include_usage there is no usage chunk (every chunk has a choice).
    let r = h
        .client
        .post(format!("{}/v1/chat/completions", h.base))
        .json(&json!({"model": DEFAULT, "messages": msgs, "max_tokens": 2, "stream": true}))
        .send()
        .await
        .unwrap();
    let data = sse_data(&r.text().await.unwrap());
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        assert_eq!(c["choices"].as_array().unwrap().len(), 1, "{d}");
    }
    // /v1/completions takes a raw prompt; stop strings end the text.
    let (status, _, v) = h
        .post(
            "/v1/completions",
            &json!({"model": DEFAULT, "prompt": "Once upon", "max_tokens": 3, "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());
    // Errors in OpenAI's shape.
    let (status, _, v) = h
        .post("/v1/chat/completions", &json!({"messages": msgs}))
        .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("model"),
        "{v}"
    );
    let (status, _, v) = h
        .post(
            "/v1/chat/completions",
            &json!({"model": DEFAULT, "messages": msgs, "n": 2}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    let (status, models) = h.get("/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == LLAMA));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_search_and_metrics() {
    let h = Harness::default().await;
    let (status, text) = h
        .get("/client/v4/accounts/x/ai/models/search?task=Text%20Generation&per_page=2&page=1")
        .await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["success"], json!(true));
    let rows = v["result"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["task"]["name"] == "Text Generation"));
    let smol = &rows[0];
    assert_eq!(smol["name"], DEFAULT);
    assert_eq!(smol["installed"], json!(true));
    assert!(smol["properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["property_id"] == "context_window"));
    let (_, text) = h
        .get("/client/v4/accounts/x/ai/models/search?search=llama-3.1")
        .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let llama = &v["result"][0];
    assert_eq!(llama["name"], LLAMA);
    assert_eq!(llama["installed"], json!(false));
    assert_eq!(llama["served_by"], DEFAULT);
    let (status, _) = h
        .get("/client/v4/accounts/x/ai/models/search?per_page=0")
        .await;
    assert_eq!(status, 400);

    h.post(
        &format!("/ai/run/{DEFAULT}"),
        &json!({"prompt": "x", "max_tokens": 3}),
    )
    .await;
    h.post("/ai/run/@cf/nope", &json!({"prompt": "x"})).await;
    let (status, m) = h.get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        &format!("kiln_requests_total{{model=\"{DEFAULT}\",status=\"200\"}} 1"),
        "kiln_requests_total{model=\"@cf/nope\",status=\"400\"} 1",
        &format!("kiln_generated_tokens_total{{model=\"{DEFAULT}\"}} 3"),
        "kiln_time_to_first_token_seconds_count 1",
        "kiln_inter_token_seconds_count",
        &format!("kiln_queue_depth{{model=\"{DEFAULT}\"}} 0"),
        "kiln_kv_blocks_free{model=",
    ] {
        assert!(m.contains(needle), "metrics lack {needle:?}:\n{m}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_replies_parse_and_match_the_schema() {
    let h = Harness::default().await;
    let schema = json!({
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "n": {"type": "integer"},
            "color": {"enum": ["red", "blue"]}
        },
        "required": ["ok", "n", "color"],
        "additionalProperties": false
    });
    for seed in 1..=4 {
        let body = json!({
            "prompt": "Give me JSON",
            "max_tokens": 400,
            "seed": seed,
            "temperature": 1.0,
            "response_format": {"type": "json_schema", "json_schema": schema}
        });
        let (status, _, v) = h.post(&format!("/ai/run/{DEFAULT}"), &body).await;
        assert_eq!(status, 200, "{v}");
        let r = &v["result"]["response"];
        assert!(r.is_object(), "seed {seed}: response is not an object: {v}");
        assert!(r["ok"].is_boolean(), "seed {seed}: {r}");
        assert!(r["n"].is_i64() || r["n"].is_u64(), "seed {seed}: {r}");
        assert!(
            r["color"] == "red" || r["color"] == "blue",
            "seed {seed}: {r}"
        );
        assert_eq!(r.as_object().unwrap().len(), 3, "seed {seed}: {r}");
    }
    // json_object through the OpenAI route: the content parses as an object.
    let (status, _, v) = h
        .post(
            "/v1/chat/completions",
            &json!({"model": DEFAULT, "messages": [{"role": "user", "content": "json"}],
                    "max_tokens": 200, "seed": 3, "response_format": {"type": "json_object"}}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    if v["choices"][0]["finish_reason"] == "stop" {
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        let parsed: Value =
            serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
        assert!(parsed.is_object());
    }
    // A bad schema is a 400 naming where.
    let body = json!({"prompt": "x", "response_format": {"type": "json_schema", "json_schema": {"type": "bogus"}}});
    let (status, _, v) = h.post(&format!("/ai/run/{DEFAULT}"), &body).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("response_format.json_schema"),
        "{v}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_and_wrong_bodies_are_named() {
    let h = Harness::default().await;
    let (status, _, v) = h
        .post(
            &format!("/ai/run/{DEFAULT}"),
            &json!({"prompt": "x", "max_token": 5}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(error_code(&v), 5006);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("\"max_token\""),
        "{v}"
    );
    let (status, _, v) = h
        .post(
            "/v1/chat/completions",
            &json!({"model": DEFAULT, "messages": [], "temprature": 1}),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("temprature"),
        "{v}"
    );
    // A binary body with another content type: 400, not a 5xx.
    let r = h
        .client
        .post(format!("{}/ai/run/{DEFAULT}", h.base))
        .header("content-type", "image/png")
        .body(vec![0x89u8, b'P', b'N', b'G', 0, 1, 2, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(&r.json().await.unwrap()), 5006);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_streams_match_their_sequential_text() {
    let h = Harness::start(ServerConfig::default(), false, 64, 128).await;
    let h = Arc::new(h);
    let prompts: Vec<String> = (0..10)
        .map(|i| format!("Story number {i} begins"))
        .collect();
    let body = |p: &str| json!({"prompt": p, "max_tokens": 8, "temperature": 0, "stream": true});
    async fn stream_text(h: &Harness, body: Value) -> String {
        let r = h
            .client
            .post(format!("{}/ai/run/{DEFAULT}", h.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let data = sse_data(&r.text().await.unwrap());
        assert_eq!(data.last().unwrap(), "[DONE]");
        data[..data.len() - 1]
            .iter()
            .map(|d| {
                let v: Value = serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"));
                v["response"].as_str().unwrap().to_string()
            })
            .collect()
    }
    let mut alone = Vec::new();
    for p in &prompts {
        alone.push(stream_text(&h, body(p)).await);
    }
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let h = h.clone();
            let b = body(&prompts[i % 10]);
            tokio::spawn(async move { stream_text(&h, b).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), alone[i % 10], "stream {i}");
    }
    Arc::into_inner(h).unwrap().stop().await;
}

/// Random bodies thrown at the routes: always a JSON answer with a 2xx or 4xx status, never a
/// 5xx (seeded, printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bodies_never_get_a_5xx() {
    let h = Harness::default().await;
    let seed = 0x5eed_f022u64;
    println!("fuzz seed {seed:#x}");
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let fields = [
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
        "model",
        "stop",
        "n",
        "bogus",
    ];
    fn value(depth: u32, r: &mut dyn FnMut() -> u64) -> Value {
        match r() % if depth > 2 { 6 } else { 8 } {
            0 => Value::Null,
            1 => json!(r().is_multiple_of(2)),
            2 => json!((r() % 2000) as i64 - 1000),
            3 => json!(((r() % 10_000) as f64) / 997.0 - 3.0),
            4 => json!(["", "x", "héllo", "{", "\u{0}", "json_object"][(r() % 6) as usize]),
            5 => json!(u64::MAX - r() % 3),
            6 => Value::Array((0..r() % 3).map(|_| value(depth + 1, r)).collect()),
            _ => {
                let mut m = serde_json::Map::new();
                for k in ["role", "content", "type", "json_schema"] {
                    if r().is_multiple_of(2) {
                        m.insert(k.into(), value(depth + 1, r));
                    }
                }
                Value::Object(m)
            }
        }
    }
    for i in 0..150 {
        let body = if next().is_multiple_of(10) {
            let bytes: Vec<u8> = (0..next() % 40).map(|_| next() as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            let mut m = serde_json::Map::new();
            for _ in 0..next() % 5 {
                let k = fields[(next() % fields.len() as u64) as usize];
                m.insert(k.into(), value(0, &mut next));
            }
            if next().is_multiple_of(3) {
                m.insert("max_tokens".into(), json!(next() % 4 + 1));
            }
            Value::Object(m).to_string()
        };
        let path = match i % 3 {
            0 => format!("/ai/run/{DEFAULT}"),
            1 => "/v1/chat/completions".to_string(),
            _ => "/v1/completions".to_string(),
        };
        let r = h
            .client
            .post(format!("{}{path}", h.base))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(status < 500, "case {i} {path} {body}: {status} {text}");
        if !text.starts_with("data: ") {
            serde_json::from_str::<Value>(&text)
                .unwrap_or_else(|e| panic!("case {i}: {e}: {text}"));
        }
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_over_the_run_api_and_openai() {
    let h = Harness::default().await;
    let texts = json!(["the cat", "paris is in france", "a dog"]);
    let (status, headers, v) = h
        .post(&format!("/ai/run/{BGE}"), &json!({"text": texts}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["x-kiln-served-by"], EMBED);
    let r = &v["result"];
    assert_eq!(r["shape"], json!([3, 32]));
    assert_eq!(r["pooling"], json!("mean"));
    for row in r["data"].as_array().unwrap() {
        let norm: f64 = row
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap().powi(2))
            .sum();
        assert!((norm.sqrt() - 1.0).abs() < 1e-5, "{norm}");
    }
    // A text alone embeds as it does in the batch.
    let (_, _, one) = h
        .post(
            &format!("/ai/run/{EMBED}"),
            &json!({"text": "paris is in france"}),
        )
        .await;
    let (a, b) = (&one["result"]["data"][0], &r["data"][1]);
    for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() < 1e-5);
    }
    let (_, _, cls) = h
        .post(
            &format!("/ai/run/{EMBED}"),
            &json!({"text": "a dog", "pooling": "cls"}),
        )
        .await;
    assert_eq!(cls["result"]["pooling"], json!("cls"));
    // Bad input names the problem.
    let long = "the cat ".repeat(100);
    for (body, needle) in [
        (json!({"text": []}), "must not be empty"),
        (json!({"text": ["a", ""]}), "text[1]"),
        (json!({"text": ["a", 7]}), "text[1]"),
        (json!({"text": ["a", long]}), "text[1]"),
        (json!({"text": "a", "pooling": "max"}), "pooling"),
        (
            json!({"text": (0..101).map(|i| i.to_string()).collect::<Vec<_>>()}),
            "at most 100",
        ),
    ] {
        let (status, _, v) = h.post(&format!("/ai/run/{EMBED}"), &body).await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(error_code(&v), 5006);
        assert!(
            v["errors"][0]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    let (status, _, v) = h
        .post(
            "/v1/embeddings",
            &json!({"model": EMBED, "input": ["the cat", "a dog"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["index"], json!(1));
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 32);
    h.stop().await;
}
