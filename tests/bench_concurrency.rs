//! `kiln bench --concurrency` end to end on the tiny Llama fixture: every request generates
//! exactly its tokens through the engine thread, the JSON report is complete, and bad lists
//! are refused with a message.

mod common;

use common::fixtures;
use std::process::Command;

fn kiln(args: &[&str]) -> (bool, String, String) {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_HOME", home.path())
        .env("HF_HOME", home.path().join("hf"))
        .output()
        .expect("kiln runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "kiln panicked: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        stderr,
    )
}

fn tiny() -> String {
    fixtures().join("llama/tiny-llama3").display().to_string()
}

#[test]
fn reports_every_concurrency_with_its_ratio_to_one() {
    let t = tiny();
    let args = [
        "bench",
        t.as_str(),
        "--concurrency",
        "4,1",
        "--prompt-len",
        "8",
        "--gen-len",
        "6",
        "--repeat",
        "2",
        "--json",
    ];
    let (ok, stdout, stderr) = kiln(&args);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{v}");
    for (r, n) in results.iter().zip([1u64, 4]) {
        assert_eq!(r["concurrency"], n, "{r}");
        assert_eq!(r["generated_tokens"], n * 6, "{r}");
        assert_eq!(r["decode_tokens_per_sec_runs"].as_array().unwrap().len(), 2);
        for key in [
            "decode_tokens_per_sec",
            "output_tokens_per_sec",
            "prefill_tokens_per_sec",
            "ttft_ms_p50",
            "ttft_ms_p99",
            "itl_ms_p50",
            "itl_ms_p99",
        ] {
            let x = r[key].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite() && x > 0.0, "{key} = {x} in {r}");
        }
        assert!(r["ttft_ms_p99"].as_f64() >= r["ttft_ms_p50"].as_f64());
        assert_eq!(r["preemptions"], 0, "{r}");
        // Distinct prompts: no request's prefill is skipped by the prefix cache.
        assert_eq!(r["cached_prompt_tokens"], 0, "{r}");
    }
    assert_eq!(results[0]["decode_vs_concurrency_1"].as_f64(), Some(1.0));
}

#[test]
fn the_table_and_profile_print() {
    let t = tiny();
    let (ok, stdout, stderr) = kiln(&[
        "bench",
        &t,
        "--concurrency",
        "2",
        "--prompt-len",
        "4",
        "--gen-len",
        "8",
        "--repeat",
        "1",
        "--profile",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("decode tok/s"), "{stdout}");
    assert!(
        stdout.contains("decode profile at concurrency 2"),
        "{stdout}"
    );
    assert!(stdout.contains("matmul"), "{stdout}");
}

#[test]
fn bad_concurrency_lists_are_refused() {
    let t = tiny();
    for bad in ["0", "x", "1,,2", "-3"] {
        let (ok, _, stderr) = kiln(&["bench", &t, &format!("--concurrency={bad}")]);
        assert!(!ok, "--concurrency {bad} should fail");
        assert!(stderr.contains("--concurrency"), "{bad}: {stderr}");
    }
    let (ok, _, stderr) = kiln(&["bench", &t, "--concurrency", "2", "--gen-len", "1"]);
    assert!(!ok);
    assert!(stderr.contains("--gen-len"), "{stderr}");
}
