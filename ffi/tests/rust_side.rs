//! The C ABI driven from Rust threads (the same exported functions a C caller runs): many
//! threads on one engine get the outputs they get alone, and their generations share engine
//! steps (batched), which the engine's statistics show.

mod common;

use common::{Models, TEXT};
use kiln::*;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Barrier};

struct Engine(*mut kiln_engine);
// SAFETY: kiln.h documents engines as usable from many threads at once.
unsafe impl Send for Engine {}
unsafe impl Sync for Engine {}

fn open(models: &Models) -> Engine {
    let dir = CString::new(models.path().to_str().unwrap()).unwrap();
    let mut o: kiln_options = unsafe { std::mem::zeroed() };
    let mut e = std::ptr::null_mut();
    unsafe {
        assert_eq!(kiln_options_init(&mut o), kiln_status::KILN_OK);
        o.models = dir.as_ptr();
        o.kv_cache_memory = 64 << 20;
        assert_eq!(kiln_engine_open(&o, &mut e), kiln_status::KILN_OK);
    }
    Engine(e)
}

fn generate(e: &Engine, prompt: &str) -> String {
    let model = CString::new(TEXT).unwrap();
    let prompt = CString::new(prompt).unwrap();
    let params = CString::new(r#"{"max_tokens": 32, "temperature": 0}"#).unwrap();
    let mut out = std::ptr::null_mut();
    let status = unsafe {
        kiln_generate(
            e.0,
            model.as_ptr(),
            prompt.as_ptr(),
            params.as_ptr(),
            &mut out,
        )
    };
    let message = unsafe { CStr::from_ptr(kiln_last_error_message()) };
    assert_eq!(status, kiln_status::KILN_OK, "{message:?}");
    let text = unsafe { CStr::from_ptr(out) }.to_str().unwrap().to_string();
    unsafe { kiln_string_free(out) };
    text
}

fn steps(e: &Engine) -> u64 {
    let stats = unsafe { engine_stats(e.0) };
    assert_eq!(stats.len(), 1);
    stats[0].1.steps
}

#[test]
fn threads_share_engine_steps_and_get_their_sequential_outputs() {
    let models = Models::new();
    let engine = Arc::new(open(&models));
    let prompts: Vec<String> = (0..8).map(|i| format!("Tell me about {i}")).collect();

    generate(&engine, "warm up");
    let s0 = steps(&engine);
    let alone: Vec<String> = prompts.iter().map(|p| generate(&engine, p)).collect();
    let sequential_steps = steps(&engine) - s0;

    let start = Arc::new(Barrier::new(prompts.len()));
    let s1 = steps(&engine);
    let threads: Vec<_> = prompts
        .iter()
        .cloned()
        .map(|p| {
            let (e, start) = (engine.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                generate(&e, &p)
            })
        })
        .collect();
    let together: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let concurrent_steps = steps(&engine) - s1;

    assert_eq!(together, alone, "outputs under concurrency differ");
    // Eight generations in shared steps take far fewer steps than one after another.
    assert!(
        concurrent_steps * 2 < sequential_steps,
        "not batched: {concurrent_steps} steps at once vs {sequential_steps} one by one"
    );
    assert_eq!(unsafe { kiln_engine_close(engine.0) }, kiln_status::KILN_OK);
}
