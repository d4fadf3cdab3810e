//! Shared by the C-facing tests: building libkiln, the tiny fixtures as a models directory,
//! and running commands.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const TEXT: &str = "@hf/huggingfacetb/smollm2-135m-instruct";
pub const EMBED: &str = "@hf/sentence-transformers/all-minilm-l6-v2";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn ffi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built library: the directory holding libkiln.so and libkiln.a.
pub struct Built {
    pub lib_dir: PathBuf,
}

impl Built {
    pub fn shared(&self) -> PathBuf {
        self.lib_dir.join("libkiln.so")
    }
    pub fn static_lib(&self) -> PathBuf {
        self.lib_dir.join("libkiln.a")
    }
}

/// The library (cdylib + staticlib) cargo built with this test binary; when it is not there
/// (a test binary run by hand after its deps/ was cleaned), builds it with cargo, once per
/// test binary, in the profile the tests were built with.
pub fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // target/<profile dir>/deps/<test binary>
        let exe = std::env::current_exe().unwrap();
        let deps = exe.parent().unwrap();
        // `cargo test` compiles kiln-ffi's lib target with all its crate types, so the cdylib
        // and staticlib of the sources this test binary was built from are already in deps/.
        // Using them saves a second cargo build with a different feature resolution (the
        // package alone, without the workspace's dev-dependencies), which rebuilt kiln-models
        // and more: 3.5 minutes of a fresh CI run.
        if deps.join("libkiln.so").is_file() && deps.join("libkiln.a").is_file() {
            return Built {
                lib_dir: deps.to_path_buf(),
            };
        }
        let lib_dir = deps.parent().unwrap().to_path_buf();
        let target_dir = lib_dir.parent().unwrap().to_path_buf();
        let profile = if lib_dir.ends_with("release") {
            "release"
        } else {
            "test"
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo())
            .args(["build", "-p", "kiln-ffi", "--lib", "--profile", profile])
            .arg("--target-dir")
            .arg(&target_dir)
            .output()
            .expect("running cargo build");
        assert!(
            out.status.success(),
            "cargo build -p kiln-ffi failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let b = Built { lib_dir };
        assert!(b.shared().is_file(), "{} missing", b.shared().display());
        assert!(
            b.static_lib().is_file(),
            "{} missing",
            b.static_lib().display()
        );
        b
    })
}

/// A directory laid out like $KILN_HOME whose models.toml maps the default text and
/// embeddings models to the tiny golden Llama and tiny BERT (as server-lite's tests do),
/// and an empty hub cache, so that nothing installed on the machine answers.
pub struct Models {
    pub dir: tempfile::TempDir,
}

impl Models {
    pub fn new() -> Models {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = repo().join("tests/fixtures");
        let llama = fixtures.join("llama/tiny-llama3").canonicalize().unwrap();
        let bert = fixtures.join("bert/tiny-bert").canonicalize().unwrap();
        std::fs::write(
            dir.path().join("models.toml"),
            format!(
                "[models.\"{TEXT}\"]\npath = {:?}\n[models.\"{EMBED}\"]\npath = {:?}\n",
                llama.display().to_string(),
                bert.display().to_string()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("hub")).unwrap();
        Models { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment a child process gets: no installed model can answer.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("KILN_HOME", self.path())
            .env("HF_HUB_CACHE", self.path().join("hub"))
            .env_remove("HF_HOME");
    }
}

/// Runs a command; panics with its output unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    check(cmd, &out);
    String::from_utf8(out.stdout).unwrap()
}

pub fn check(cmd: &Command, out: &Output) {
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
