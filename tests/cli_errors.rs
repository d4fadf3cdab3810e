//! Bad input to the `kiln` CLI: a clear message naming the problem and a non-zero exit,
//! never a panic.

mod common;

use common::fixtures;
use std::path::Path;
use std::process::Command;

/// Runs kiln with an empty KILN_HOME; returns (success, stderr).
fn kiln(args: &[&str], home: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_HOME", home)
        .env("HF_HOME", home.join("hf"))
        .output()
        .expect("kiln runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!stderr.contains("panicked"), "kiln panicked: {stderr}");
    (out.status.success(), stderr)
}

fn expect_error(args: &[&str], needles: &[&str]) {
    let home = tempfile::tempdir().unwrap();
    let (ok, stderr) = kiln(args, home.path());
    assert!(!ok, "kiln {args:?} should fail; stderr: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "kiln {args:?}: stderr lacks {needle:?}:\n{stderr}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn tiny() -> String {
    fixtures().join("llama/tiny-llama3").display().to_string()
}

#[test]
fn unknown_model_names_the_model() {
    expect_error(
        &["run", "@cf/meta/llama-9-400b", "--prompt", "hi"],
        &["@cf/meta/llama-9-400b"],
    );
}

#[test]
fn missing_weights_say_what_is_missing_and_how_to_install() {
    expect_error(
        &[
            "run",
            "@hf/huggingfacetb/smollm2-135m-instruct",
            "--prompt",
            "hi",
        ],
        &["fetch-models.sh"],
    );
}

#[test]
fn missing_file_is_named() {
    expect_error(
        &["run", "/nonexistent/model.gguf", "--prompt", "hi"],
        &["/nonexistent/model.gguf"],
    );
}

#[test]
fn truncated_safetensors_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("llama/tiny-llama3"), dir.path());
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let path = dir.path().display().to_string();
    expect_error(&["run", &path, "--prompt", "hi"], &["model.safetensors"]);
}

#[test]
fn corrupt_safetensors_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("llama/tiny-llama3"), dir.path());
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage",
    )
    .unwrap();
    let path = dir.path().display().to_string();
    expect_error(&["run", &path, "--prompt", "hi"], &["model.safetensors"]);
}

#[test]
fn corrupt_and_truncated_gguf_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"NOTAGGUF-at-all").unwrap();
    expect_error(
        &["run", bad.to_str().unwrap(), "--prompt", "hi"],
        &["bad.gguf"],
    );
    // A real header cut short.
    let cut = dir.path().join("cut.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&10u64.to_le_bytes());
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&cut, bytes).unwrap();
    expect_error(
        &["run", cut.to_str().unwrap(), "--prompt", "hi"],
        &["cut.gguf"],
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("llama/tiny-llama3"), dir.path());
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("LlamaForCausalLM", "GPT2LMHeadModel")).unwrap();
    let path = dir.path().display().to_string();
    expect_error(&["run", &path, "--prompt", "hi"], &["GPT2LMHeadModel"]);
}

#[test]
fn prompt_longer_than_context_window() {
    let long = "word ".repeat(2000);
    expect_error(
        &["run", &tiny(), "--raw", "--prompt", &long],
        &["context window"],
    );
}

#[test]
fn invalid_sampling_values_name_the_field() {
    let t = tiny();
    expect_error(
        &["run", &t, "--prompt", "hi", "--temperature", "9"],
        &["temperature"],
    );
    expect_error(&["run", &t, "--prompt", "hi", "--top-p", "0"], &["top_p"]);
    expect_error(&["run", &t, "--prompt", "hi", "--top-k", "0"], &["top_k"]);
    expect_error(
        &["run", &t, "--prompt", "hi", "--max-tokens", "0"],
        &["max_tokens"],
    );
    expect_error(
        &["run", &t, "--prompt", "hi", "--temperature", "NaN"],
        &["temperature"],
    );
}

#[test]
fn bad_device_and_dtype_are_reported() {
    let t = tiny();
    expect_error(&["run", &t, "--prompt", "hi", "--device", "tpu"], &["tpu"]);
    expect_error(&["run", &t, "--prompt", "hi", "--dtype", "int3"], &["int3"]);
}

#[test]
fn runs_the_tiny_model_end_to_end() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            &tiny(),
            "--prompt",
            "hello",
            "--max-tokens",
            "8",
            "--temperature",
            "0",
        ])
        .env("KILN_HOME", home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("tok/s"), "{stderr}");
}

#[test]
fn random_weights_run_any_catalog_text_model_shape() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "run",
            "@hf/huggingfacetb/smollm2-135m-instruct",
            "--random-weights",
            "--prompt",
            "hello",
            "--max-tokens",
            "4",
            "--seed",
            "3",
        ])
        .env("KILN_HOME", home.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("random weights"), "{stderr}");
    assert!(stderr.contains("loaded 30/30 layers"), "{stderr}");
}

#[test]
fn random_weights_need_a_catalog_name() {
    expect_error(
        &["run", &tiny(), "--random-weights", "--prompt", "hi"],
        &["catalog name"],
    );
}

#[test]
fn models_lists_the_catalog_with_install_state() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["models"])
        .env("KILN_HOME", home.path())
        .env("HF_HOME", home.path().join("hf"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in [
        "@cf/meta/llama-3.1-8b-instruct",
        "@cf/baai/bge-base-en-v1.5",
        "@hf/huggingfacetb/smollm2-135m-instruct",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{stdout}"));
        assert!(line.contains("missing"), "{line}");
    }
    assert!(stdout.contains("Text Generation"));
}
