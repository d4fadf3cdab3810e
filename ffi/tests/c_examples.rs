//! The C examples (ffi/examples/*.c) compiled with `cc -std=c11 -Wall -Wextra -Werror`,
//! linked once against libkiln.so and once against libkiln.a, run on the tiny fixtures, and
//! their output checked against the Rust run-API core called directly; kiln.h compiled as
//! C++17; 8 pthreads generating at once; valgrind (memcheck) on the examples; every misuse
//! case of errors.c returning its documented status.

mod common;

use common::{built, check, ffi_dir, run_ok, Models, EMBED, TEXT};
use kiln_models::run::service::{Prepared, Service, ServiceSettings};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Link {
    Shared,
    Static,
}

const LINKS: [Link; 2] = [Link::Shared, Link::Static];

/// What a static link needs besides libkiln.a (ffi/README.md lists the same).
const STATIC_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm"];

/// Compiles one example into `out_dir` with the strict flags, linked as asked.
fn compile(example: &str, link: Link, out_dir: &Path) -> PathBuf {
    let b = built();
    let src = ffi_dir().join("examples").join(format!("{example}.c"));
    let exe = out_dir.join(format!("{example}-{link:?}"));
    let mut cmd = Command::new("cc");
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg("-I")
        .arg(ffi_dir().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe);
    match link {
        Link::Shared => {
            cmd.arg(format!("-L{}", b.lib_dir.display()))
                .arg("-lkiln")
                .arg(format!("-Wl,-rpath,{}", b.lib_dir.display()));
        }
        Link::Static => {
            cmd.arg(b.static_lib());
        }
    }
    cmd.args(STATIC_LIBS);
    run_ok(&mut cmd);
    if link == Link::Static {
        // Really static: no libkiln.so among the needed libraries.
        let needed = run_ok(Command::new("readelf").arg("-d").arg(&exe));
        assert!(!needed.contains("libkiln"), "{needed}");
    }
    exe
}

fn run_example(exe: &Path, models: &Models, args: &[&str]) -> String {
    let mut cmd = Command::new(exe);
    cmd.arg(models.path()).args(args);
    models.env(&mut cmd);
    run_ok(&mut cmd)
}

/// The run-API core called directly from Rust (what the server calls), on the same models.
fn direct(models: &Models, model: &str, input: Value) -> Value {
    let opts = ServiceSettings {
        models: Some(models.path().to_path_buf()),
        ..Default::default()
    }
    .into_options()
    .unwrap();
    let service = Service::new(opts);
    let route = service.route(model).unwrap();
    let v = match service.prepare(&route, &input).unwrap() {
        Prepared::Json(v) => v,
        Prepared::Text(job) => job.collect_blocking().unwrap(),
    };
    service.shutdown();
    v
}

fn line_after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"))
}

#[test]
fn generate_stream_matches_the_rust_core_shared_and_static() {
    let models = Models::new();
    let dir = tempfile::tempdir().unwrap();
    let expected = direct(
        &models,
        TEXT,
        json!({"prompt": "Hello", "max_tokens": 12, "temperature": 0}),
    );
    let mut outputs = Vec::new();
    for link in LINKS {
        let exe = compile("generate_stream", link, dir.path());
        let out = run_example(&exe, &models, &[TEXT, "Hello"]);
        let run: Value = serde_json::from_str(line_after(&out, "run: ")).unwrap();
        assert_eq!(
            run, expected,
            "kiln_run ({link:?}) differs from the Rust core"
        );
        // The chunks add up to the response; the final event carries the same usage.
        let chunks: String = out
            .lines()
            .filter_map(|l| l.strip_prefix("chunk: "))
            .map(|c| {
                serde_json::from_str::<Value>(c).unwrap()["response"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(chunks, expected["response"].as_str().unwrap());
        let last: Value = serde_json::from_str(line_after(&out, "final: ")).unwrap();
        assert_eq!(last, json!({"response": "", "usage": expected["usage"]}));
        assert_eq!(
            line_after(&out, "streamed chunks: ").split(", ").nth(1),
            Some("final events: 1")
        );
        assert_eq!(line_after(&out, "generate equals stream: "), "yes");
        assert!(out.starts_with(&format!("kiln {} (ABI 1)", env!("CARGO_PKG_VERSION"))));
        outputs.push(out);
    }
    assert_eq!(outputs[0], outputs[1], "shared and static builds differ");
}

#[test]
fn embed_matches_the_rust_core_shared_and_static() {
    let models = Models::new();
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "The quick brown fox jumps over the lazy dog.",
        "kiln runs models",
    ];
    let expected = direct(&models, EMBED, json!({ "text": texts }));
    let data = expected["data"].as_array().unwrap();
    for link in LINKS {
        let exe = compile("embed", link, dir.path());
        let out = run_example(&exe, &models, &[EMBED]);
        let dims = data[0].as_array().unwrap().len();
        assert_eq!(line_after(&out, "rows: "), format!("2 dims: {dims}"));
        for (r, row) in data.iter().enumerate() {
            // kiln_embed's floats (printed with %.9g, exact for f32) are the core's.
            let got: Vec<f32> = line_after(&out, &format!("row {r}: "))
                .split(' ')
                .map(|x| x.parse().unwrap())
                .collect();
            let want: Vec<f32> = row
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got, want, "row {r} ({link:?})");
            let norm: f64 = line_after(&out, &format!("norm {r}: ")).parse().unwrap();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
        // kiln_run's JSON: the same floats (compared as f32: serde_json's default parser
        // may land one f64 ulp off the printed value) and the same other fields.
        let mut run: Value = serde_json::from_str(line_after(&out, "run: ")).unwrap();
        assert_eq!(
            f32_rows(&run),
            f32_rows(&expected),
            "kiln_run ({link:?}) data"
        );
        let mut expected = expected.clone();
        run["data"] = Value::Null;
        expected["data"] = Value::Null;
        assert_eq!(
            run, expected,
            "kiln_run ({link:?}) differs from the Rust core"
        );
    }
}

fn f32_rows(v: &Value) -> Vec<Vec<f32>> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

/// Every case errors.c checks; a case that disappears from its output fails here.
const ERROR_CASES: &[(&str, i32, u32)] = &[
    ("options_init_null", 1, 0),
    ("options_init", 0, 0),
    ("open_null_out", 1, 0),
    ("open_struct_size", 6, 0),
    ("open_bad_device", 6, 0),
    ("open_bad_dtype", 6, 0),
    ("open_missing_models", 6, 0),
    ("open_device_utf8", 2, 0),
    ("open", 0, 0),
    ("run_null_engine", 1, 0),
    ("run_null_model", 1, 0),
    ("run_null_input", 1, 0),
    ("run_null_output", 1, 0),
    ("run_model_utf8", 2, 0),
    ("run_input_utf8", 2, 0),
    ("run_invalid_json", 3, 5006),
    ("run_empty_json", 3, 5006),
    ("run_unknown_model", 4, 5007),
    ("run_unknown_field", 5, 5006),
    ("run_bad_type", 5, 5006),
    ("run_out_of_range", 5, 5006),
    ("run_not_an_object", 5, 5006),
    ("run_ok", 0, 0),
    ("string_free", 0, 0),
    ("stream_null_callback", 1, 0),
    ("stream_embeddings_model", 5, 5006),
    ("stream_invalid_json", 3, 5006),
    ("stream_unknown_model", 4, 5007),
    ("stream_callback_stops", 8, 0),
    ("cancel_token_new_null", 1, 0),
    ("cancel_token_new", 0, 0),
    ("cancel_null", 1, 0),
    ("cancel", 0, 0),
    ("stream_cancelled_token", 8, 0),
    ("cancel_token_free", 0, 0),
    ("stream_ok", 0, 0),
    ("generate_null_prompt", 1, 0),
    ("generate_params_not_object", 5, 5006),
    ("generate_params_invalid_json", 3, 5006),
    ("generate_embeddings_model", 5, 5006),
    ("generate_ok", 0, 0),
    ("embed_null_texts", 1, 0),
    ("embed_null_text", 1, 0),
    ("embed_null_dims", 1, 0),
    ("embed_no_texts", 5, 5006),
    ("embed_text_model", 5, 5006),
    ("embed_unknown_model", 4, 5007),
    ("embed_ok", 0, 0),
    ("embeddings_free", 0, 0),
    ("string_free_null", 0, 0),
    ("embeddings_free_null", 0, 0),
    ("cancel_token_free_null", 0, 0),
    ("close_null", 0, 0),
    ("close", 0, 0),
    ("open_strict", 0, 0),
    ("run_strict_not_installed", 4, 5007),
    ("close_strict", 0, 0),
];

fn check_error_cases(out: &str) {
    let cases: Vec<(&str, i32, u32)> = out
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("FAIL "))
        .map(|l| {
            assert!(l.starts_with("ok "), "{l}");
            let (name, rest) = l["ok ".len()..].split_once(": status ").unwrap();
            let (status, rest) = rest.split_once(" code ").unwrap();
            let code = rest.split(':').next().unwrap();
            (name, status.parse().unwrap(), code.parse().unwrap())
        })
        .collect();
    assert_eq!(cases, ERROR_CASES, "errors.c output:\n{out}");
    assert!(out.ends_with("failures: 0\n"), "{out}");
    // The statuses are kiln.h's values.
    assert!(kiln_status_values_match());
}

fn kiln_status_values_match() -> bool {
    use kiln::kiln_status::*;
    [
        KILN_OK as i32,
        KILN_ERR_NULL_ARGUMENT as i32,
        KILN_ERR_INVALID_UTF8 as i32,
        KILN_ERR_INVALID_JSON as i32,
        KILN_ERR_UNKNOWN_MODEL as i32,
        KILN_ERR_BAD_INPUT as i32,
        KILN_ERR_INVALID_OPTIONS as i32,
        KILN_ERR_BUSY as i32,
        KILN_ERR_CANCELLED as i32,
        KILN_ERR_INTERNAL as i32,
    ] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
}

#[test]
fn every_misuse_returns_its_documented_status_shared_and_static() {
    let models = Models::new();
    let dir = tempfile::tempdir().unwrap();
    for link in LINKS {
        let exe = compile("errors", link, dir.path());
        // The models as a models.toml file here (the other examples get the directory).
        let mut cmd = Command::new(&exe);
        cmd.arg(models.path().join("models.toml"))
            .args([TEXT, EMBED]);
        models.env(&mut cmd);
        check_error_cases(&run_ok(&mut cmd));
    }
}

#[test]
fn eight_pthreads_at_once_equal_the_sequential_outputs_and_cancel_works() {
    let models = Models::new();
    let dir = tempfile::tempdir().unwrap();
    for link in LINKS {
        let exe = compile("threads", link, dir.path());
        let out = run_example(&exe, &models, &[TEXT]);
        for i in 0..8 {
            assert_eq!(line_after(&out, &format!("thread {i}: ")), "equal", "{out}");
        }
        // Cancelled from the main thread after the first chunk: status 8, long before the
        // 400 tokens asked for, and no final event.
        let cancel = line_after(&out, "cancel: ");
        assert!(cancel.starts_with("status 8, chunks "), "{cancel}");
        assert!(cancel.ends_with(", final events 0"), "{cancel}");
        assert!(out.ends_with("failures: 0\n"), "{out}");
    }
}

#[test]
fn the_header_compiles_as_cpp17_and_links() {
    let b = built();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("check.cpp");
    std::fs::write(
        &src,
        r#"#include "kiln.h"
#include <cstdio>
#include <cstring>
int main() {
    kiln_options o;
    if (kiln_options_init(&o) != KILN_OK || o.struct_size != sizeof(kiln_options)) return 1;
    char *out = nullptr;
    kiln_status s = kiln_run(nullptr, "m", "{}", &out);
    std::printf("%s %u %d %s\n", kiln_version(), kiln_abi_version(), static_cast<int>(s),
                kiln_last_error_message());
    return s == KILN_ERR_NULL_ARGUMENT && out == nullptr && KILN_ABI_VERSION == 1 ? 0 : 1;
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("check");
    run_ok(
        Command::new("c++")
            .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"])
            .arg("-I")
            .arg(ffi_dir().join("include"))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", b.lib_dir.display()))
            .arg("-lkiln")
            .arg(format!("-Wl,-rpath,{}", b.lib_dir.display())),
    );
    let out = run_ok(&mut Command::new(&exe));
    assert_eq!(
        out,
        format!("{} 1 1 engine is NULL\n", env!("CARGO_PKG_VERSION"))
    );
}

/// memcheck: no invalid access, no definite leak (exit 99 otherwise). Threads the engine
/// keeps (rayon's pool) may leave "possibly lost" blocks, which are not errors.
fn valgrind(exe: &Path, models: &Models, args: &[&str]) -> String {
    let mut cmd = Command::new("/usr/bin/valgrind");
    cmd.args([
        "--tool=memcheck",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
        "--track-origins=no",
        "-q",
    ])
    .arg(exe)
    .arg(models.path())
    .args(args);
    models.env(&mut cmd);
    let out = cmd.output().unwrap();
    check(&cmd, &out);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn valgrind_finds_no_leaks_or_invalid_access() {
    if !Path::new("/usr/bin/valgrind").is_file() {
        eprintln!(
            "\n*** SKIPPED: /usr/bin/valgrind is not installed; the memcheck test of the C \
             examples did not run (apt-get install valgrind) ***\n"
        );
        return;
    }
    let models = Models::new();
    let dir = tempfile::tempdir().unwrap();
    let errors = compile("errors", Link::Shared, dir.path());
    let out = valgrind(&errors, &models, &[TEXT, EMBED]);
    check_error_cases(&out);
    let embed = compile("embed", Link::Shared, dir.path());
    let out = valgrind(&embed, &models, &[EMBED]);
    assert!(out.contains("norm 1: 1.000000"), "{out}");
    let generate = compile("generate_stream", Link::Shared, dir.path());
    let out = valgrind(&generate, &models, &[TEXT]);
    assert!(out.contains("generate equals stream: yes"), "{out}");
}
