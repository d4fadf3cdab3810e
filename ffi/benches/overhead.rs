//! Per-call overhead of the C ABI (issue #7): `kiln_run` (JSON text in, JSON text out,
//! through the exported `extern "C"` function, the same machine code a C caller runs) against
//! the Rust run-API core called directly (`Service::route` + `prepare` + `collect_blocking`
//! on an already-parsed input), for 1-token generations on the tiny test Llama, so that the
//! figures measure the boundary, not the model.
//!
//!   cargo bench -p kiln-ffi --bench overhead [-- ITERATIONS]
//!
//! The two calls alternate on one engine (same Service, same engine thread, same warm KV
//! cache) so that machine noise hits both alike; printed: p50/p99 of each, the difference of
//! the p50s and p99s, the p50/p99 of the per-pair difference (signed), and the work kiln_run
//! adds (JSON parse, JSON serialization, the C string) timed alone.

use kiln::{kiln_engine_close, kiln_engine_open, kiln_options, kiln_options_init, kiln_run};
use kiln::{kiln_status, kiln_string_free};
use kiln_models::run::service::{Prepared, Service};
use serde_json::{json, Value};
use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MODEL: &str = "@hf/huggingfacetb/smollm2-135m-instruct";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (p50, p99) = (percentile(&v, 0.5), percentile(&v, 0.99));
    println!(
        "{name:<34} n={:<6} p50 {:>8.1} us  p99 {:>8.1} us",
        v.len(),
        us(p50),
        us(p99)
    );
    (p50, p99)
}

fn direct(service: &Service, input: &Value) -> Value {
    let route = service.route(MODEL).unwrap();
    match service.prepare(&route, input).unwrap() {
        Prepared::Text(job) => job.collect_blocking().unwrap(),
        Prepared::Json(v) => v,
    }
}

fn main() {
    let iterations: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llama/tiny-llama3")
        .canonicalize()
        .unwrap();
    let tmp = std::env::temp_dir().join(format!("kiln-bench-ffi-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        tmp.join("models.toml"),
        format!(
            "[models.\"{MODEL}\"]\npath = {:?}\n",
            fixture.display().to_string()
        ),
    )
    .unwrap();
    let models = CString::new(tmp.to_str().unwrap()).unwrap();

    // The C side: one engine through the ABI.
    let mut options: kiln_options = unsafe { std::mem::zeroed() };
    let mut engine = std::ptr::null_mut();
    unsafe {
        kiln_options_init(&mut options);
        options.models = models.as_ptr();
        options.kv_cache_memory = 64 << 20;
        assert_eq!(
            kiln_engine_open(&options, &mut engine),
            kiln_status::KILN_OK
        );
    }
    // The Rust side: the very same Service (same engine thread, same KV cache), called
    // directly as the server calls it.
    let service = unsafe { kiln::engine_service(engine) };

    let input = json!({"prompt": "Hello", "max_tokens": 1, "temperature": 0, "raw": true});
    let input_c = CString::new(input.to_string()).unwrap();
    let model_c = CString::new(MODEL).unwrap();
    // What a C caller does: run, then free the output.
    let ffi = || {
        let mut out = std::ptr::null_mut();
        let status = unsafe { kiln_run(engine, model_c.as_ptr(), input_c.as_ptr(), &mut out) };
        assert_eq!(status, kiln_status::KILN_OK);
        std::hint::black_box(out);
        unsafe { kiln_string_free(out) };
    };
    // Warm up (loads the model on both sides) and check that both answer alike.
    let want = direct(&service, &input);
    let mut out = std::ptr::null_mut();
    unsafe { kiln_run(engine, model_c.as_ptr(), input_c.as_ptr(), &mut out) };
    let got: Value =
        serde_json::from_str(unsafe { CStr::from_ptr(out) }.to_str().unwrap()).unwrap();
    unsafe { kiln_string_free(out) };
    assert_eq!(got, want, "kiln_run and the Rust core disagree");
    for _ in 0..200 {
        direct(&service, &input);
        ffi();
    }

    println!(
        "1-token generations on {} ({} threads available), {iterations} pairs",
        fixture.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let (mut rust, mut c, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations {
        // Alternate which goes first, so neither always follows the other.
        let (a, b) = if i % 2 == 0 {
            let t = Instant::now();
            std::hint::black_box(direct(&service, &input));
            let a = t.elapsed();
            let t = Instant::now();
            ffi();
            (a, t.elapsed())
        } else {
            let t = Instant::now();
            ffi();
            let b = t.elapsed();
            let t = Instant::now();
            std::hint::black_box(direct(&service, &input));
            (t.elapsed(), b)
        };
        rust.push(a);
        c.push(b);
        diff.push(us(b) - us(a));
    }
    let (r50, r99) = summary("Rust core (Service) directly", rust);
    let (c50, c99) = summary("kiln_run (C ABI)", c);
    println!(
        "{:<34} p50 {:>8.1} us  p99 {:>8.1} us   (target: p50 < 50 us)",
        "overhead (difference of the pcts)",
        us(c50) - us(r50),
        us(c99) - us(r99)
    );
    diff.sort_by(f64::total_cmp);
    let pct = |p: f64| diff[((diff.len() - 1) as f64 * p).round() as usize];
    println!(
        "{:<34} p50 {:>8.1} us  p99 {:>8.1} us",
        "per-pair difference (kiln_run - Rust)",
        pct(0.5),
        pct(0.99)
    );

    // The work kiln_run adds, alone (no engine round trip, so little noise): parse the input
    // text, serialize the result, copy it into a C string, free it.
    let input_text = input.to_string();
    let mut alone = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let v: Value = serde_json::from_str(std::hint::black_box(&input_text)).unwrap();
        std::hint::black_box(v);
        let out = CString::new(want.to_string()).unwrap().into_raw();
        std::hint::black_box(out);
        drop(unsafe { CString::from_raw(out) });
        alone.push(t.elapsed());
    }
    summary("boundary work alone (JSON + C str)", alone);

    drop(service);
    unsafe { kiln_engine_close(engine) };
    let _ = std::fs::remove_dir_all(&tmp);
}
