use super::*;
use std::fs;

const LLAMA: &str = "@cf/meta/llama-3.1-8b-instruct";

fn touch(dir: &Path, names: &[&str]) {
    fs::create_dir_all(dir).expect("mkdir");
    for n in names {
        fs::write(dir.join(n), b"x").expect("write");
    }
}

fn hf_dir(dir: &Path) {
    touch(dir, &["config.json", "model.safetensors", "tokenizer.json"]);
}

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    opts: ResolveOptions,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let opts = ResolveOptions {
        models_file: None,
        kiln_home: root.join("kiln"),
        hf_home: root.join("hub"),
    };
    Env {
        _tmp: tmp,
        root,
        opts,
    }
}

fn hub_llama(hub: &Path, rev: &str) -> PathBuf {
    let dir = hub
        .join("models--meta-llama--Llama-3.1-8B-Instruct/snapshots")
        .join(rev);
    hf_dir(&dir);
    dir
}

fn err_text(r: Result<ResolvedModel>) -> String {
    r.expect_err("should fail").to_string()
}

#[test]
fn kiln_home_hf_dir_and_gguf() {
    let e = env();
    let dir = kiln_model_dir(&e.opts.kiln_home, LLAMA);
    assert_eq!(
        dir,
        e.opts
            .kiln_home
            .join("models/@cf/meta/llama-3.1-8b-instruct")
    );
    hf_dir(&dir);
    let r = resolve(LLAMA, &e.opts).expect("resolves");
    assert_eq!(r.entry.map(|x| x.name), Some(LLAMA));
    assert_eq!(r.source, ModelSource::HfDir(dir));

    let smol = "@hf/huggingfacetb/smollm2-135m-instruct";
    let sdir = kiln_model_dir(&e.opts.kiln_home, smol);
    touch(&sdir, &["SmolLM2-135M-Instruct.Q4_1.gguf"]);
    let r = resolve(smol, &e.opts).expect("gguf");
    assert_eq!(
        r.source,
        ModelSource::Gguf(sdir.join("SmolLM2-135M-Instruct.Q4_1.gguf"))
    );
}

#[test]
fn sharded_and_indexed_weights_count() {
    let e = env();
    let dir = kiln_model_dir(&e.opts.kiln_home, LLAMA);
    touch(
        &dir,
        &[
            "config.json",
            "tokenizer.json",
            "model-00001-of-00002.safetensors",
        ],
    );
    assert!(resolve(LLAMA, &e.opts).is_ok());
    fs::remove_file(dir.join("model-00001-of-00002.safetensors")).expect("rm");
    touch(&dir, &["model.safetensors.index.json"]);
    assert!(resolve(LLAMA, &e.opts).is_ok());
}

#[test]
fn hub_cache_prefers_refs_main_then_newest_complete_snapshot() {
    let e = env();
    let old = hub_llama(&e.opts.hf_home, "aaaa");
    let r = resolve(LLAMA, &e.opts).expect("hub");
    assert_eq!(r.source, ModelSource::HfDir(old.clone()));

    // A newer snapshot wins on modification time.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let new = hub_llama(&e.opts.hf_home, "bbbb");
    assert_eq!(
        resolve(LLAMA, &e.opts).expect("hub").source,
        ModelSource::HfDir(new.clone())
    );
    // refs/main overrides time.
    let refs = e
        .opts
        .hf_home
        .join("models--meta-llama--Llama-3.1-8B-Instruct/refs");
    touch(&refs, &[]);
    fs::write(refs.join("main"), "aaaa\n").expect("write ref");
    assert_eq!(
        resolve(LLAMA, &e.opts).expect("hub").source,
        ModelSource::HfDir(old.clone())
    );
    // An incomplete snapshot is skipped for a complete one.
    fs::remove_file(old.join("tokenizer.json")).expect("rm");
    assert_eq!(
        resolve(LLAMA, &e.opts).expect("hub").source,
        ModelSource::HfDir(new)
    );
}

#[test]
fn precedence_models_toml_then_kiln_home_then_hub() {
    let mut e = env();
    hub_llama(&e.opts.hf_home, "rev1");
    let home = kiln_model_dir(&e.opts.kiln_home, LLAMA);
    hf_dir(&home);
    assert_eq!(
        resolve(LLAMA, &e.opts).expect("home").source,
        ModelSource::HfDir(home)
    );

    let custom = e.root.join("elsewhere/llama.gguf");
    touch(custom.parent().expect("parent"), &["llama.gguf"]);
    let toml = e.root.join("conf/models.toml");
    touch(toml.parent().expect("parent"), &[]);
    // Relative paths are taken from the file's directory.
    fs::write(
        &toml,
        format!("[models.\"{LLAMA}\"]\npath = \"../elsewhere/llama.gguf\"\n"),
    )
    .expect("write toml");
    e.opts.models_file = Some(toml);
    let r = resolve(LLAMA, &e.opts).expect("toml");
    assert_eq!(
        r.source,
        ModelSource::Gguf(e.root.join("conf/../elsewhere/llama.gguf"))
    );
    assert_eq!(r.entry.map(|x| x.name), Some(LLAMA));
}

#[test]
fn models_toml_custom_name_bad_path_and_bad_syntax() {
    let mut e = env();
    let toml = e.root.join("models.toml");
    let mine = e.root.join("mine");
    hf_dir(&mine);
    fs::write(
        &toml,
        format!(
            "[models.\"my-model\"]\npath = {:?}\n[models.\"{LLAMA}\"]\npath = \"/nope\"\n",
            mine.display().to_string()
        ),
    )
    .expect("write");
    e.opts.models_file = Some(toml.clone());
    let r = resolve("my-model", &e.opts).expect("custom name");
    assert!(r.entry.is_none());
    assert_eq!(r.source, ModelSource::HfDir(mine));

    // An explicit entry that is wrong is an error, not a silent fall-through.
    let msg = err_text(resolve(LLAMA, &e.opts));
    assert!(
        msg.contains("models.toml") && msg.contains("/nope"),
        "{msg}"
    );
    assert!(msg.contains("does not exist"), "{msg}");

    fs::write(&toml, "[models.x\npath=").expect("write");
    assert!(matches!(
        resolve(LLAMA, &e.opts),
        Err(ModelError::Format { .. })
    ));
}

#[test]
fn missing_files_message_names_places_files_and_fix() {
    let e = env();
    let dir = kiln_model_dir(&e.opts.kiln_home, LLAMA);
    touch(&dir, &["tokenizer.json"]);
    let err = resolve(LLAMA, &e.opts).expect_err("incomplete");
    assert!(matches!(err, ModelError::NotFound(_)));
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("model {LLAMA} is not installed")),
        "{msg}"
    );
    assert!(msg.contains(&format!(
        "{}: is missing config.json, *.safetensors",
        dir.display()
    )));
    assert!(msg.contains("models--meta-llama--Llama-3.1-8B-Instruct: does not exist"));
    assert!(msg.contains("put an HF directory"), "{msg}");
    assert!(msg.contains(&format!("[models.\"{LLAMA}\"]")), "{msg}");

    let msg = err_text(resolve("@hf/huggingfacetb/smollm2-135m-instruct", &e.opts));
    assert!(msg.contains("scripts/fetch-models.sh"), "{msg}");
    assert!(
        msg.contains("config.json, *.safetensors, tokenizer.json"),
        "{msg}"
    );
}

#[test]
fn incomplete_hub_snapshot_is_reported() {
    let e = env();
    let snap = hub_llama(&e.opts.hf_home, "cafe");
    fs::remove_file(snap.join("model.safetensors")).expect("rm");
    let msg = err_text(resolve(LLAMA, &e.opts));
    assert!(
        msg.contains(&format!("{}: is missing *.safetensors", snap.display())),
        "{msg}"
    );
}

#[test]
fn several_ggufs_are_ambiguous() {
    let e = env();
    let dir = kiln_model_dir(&e.opts.kiln_home, LLAMA);
    touch(&dir, &["a.gguf", "b.GGUF"]);
    let msg = err_text(resolve(LLAMA, &e.opts));
    assert!(
        msg.contains("holds 2 .gguf files (a.gguf, b.GGUF)"),
        "{msg}"
    );
}

#[test]
fn unknown_name_suggests_close_names() {
    let e = env();
    let err = resolve("@cf/meta/llama-3.1-8b-instuct", &e.opts).expect_err("unknown");
    assert!(matches!(err, ModelError::InvalidInput(_)));
    let msg = err.to_string();
    assert!(msg.contains("unknown model"), "{msg}");
    assert!(msg.contains(LLAMA), "{msg}");
    assert!(matches!(
        resolve("  ", &e.opts),
        Err(ModelError::InvalidInput(_))
    ));
    assert!(matches!(
        resolve("bge-small", &e.opts),
        Err(ModelError::InvalidInput(_))
    ));
}

#[test]
fn direct_paths() {
    let e = env();
    let dir = e.root.join("tiny-llama");
    touch(&dir, &["config.json", "model.safetensors"]);
    let r = resolve(dir.to_str().expect("utf8"), &e.opts).expect("dir");
    assert!(r.entry.is_none());
    assert_eq!(r.source, ModelSource::HfDir(dir.clone()));

    let gguf = e.root.join("m.gguf");
    touch(&e.root, &["m.gguf", "notes.txt"]);
    let r = resolve(gguf.to_str().expect("utf8"), &e.opts).expect("gguf");
    assert_eq!(r.source, ModelSource::Gguf(gguf));

    let msg = err_text(resolve(
        e.root.join("notes.txt").to_str().expect("utf8"),
        &e.opts,
    ));
    assert!(msg.contains("not a .gguf"), "{msg}");
    let empty = e.root.join("empty");
    touch(&empty, &[]);
    let msg = err_text(resolve(empty.to_str().expect("utf8"), &e.opts));
    assert!(
        msg.contains("is missing config.json, *.safetensors"),
        "{msg}"
    );
    let gone = e.root.join("gone.gguf");
    let err = resolve(gone.to_str().expect("utf8"), &e.opts).expect_err("gone");
    assert!(matches!(err, ModelError::NotFound(_)));
    assert!(err.to_string().contains("no such file"));
}

#[test]
fn options_from_vars() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let o = ResolveOptions::from_vars(vars(&[("HOME", "/h")]));
    assert_eq!(o.kiln_home, PathBuf::from("/h/.cache/kiln"));
    assert_eq!(o.hf_home, PathBuf::from("/h/.cache/huggingface/hub"));
    assert_eq!(o.models_file, None);
    let o = ResolveOptions::from_vars(vars(&[
        ("HOME", "/h"),
        ("KILN_HOME", "/k"),
        ("HF_HOME", "/hf"),
    ]));
    assert_eq!(
        (o.kiln_home, o.hf_home),
        (PathBuf::from("/k"), PathBuf::from("/hf/hub"))
    );
    let o = ResolveOptions::from_vars(vars(&[("HF_HUB_CACHE", "/c"), ("HF_HOME", "/hf")]));
    assert_eq!(o.hf_home, PathBuf::from("/c"));

    let e = env();
    touch(&e.opts.kiln_home, &["models.toml"]);
    let home = e.opts.kiln_home.to_str().expect("utf8").to_owned();
    let o = ResolveOptions::from_vars(move |k| (k == "KILN_HOME").then(|| home.clone()));
    assert_eq!(o.models_file, Some(e.opts.kiln_home.join("models.toml")));
}
