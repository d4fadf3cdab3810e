//! Turning a model name (or a path) into files on disk. Nothing is ever downloaded.
//!
//! Order, first hit wins: a `models.toml` entry, then `$KILN_HOME/models/<name>/`, then the
//! HF hub cache (`models--ORG--NAME/snapshots/<rev>/`). A place that exists but lacks files
//! does not stop the search, but what it lacks is reported if nothing else is found, since
//! a half-copied directory is the usual reason a model "is not there".

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalog::{self, Arch, CatalogEntry};
use crate::error::{ModelError, Result};

/// Where to look for models.
#[derive(Clone, Debug, Default)]
pub struct ResolveOptions {
    /// A models.toml: `[models."<name>"] path = "<dir or .gguf>"`.
    pub models_file: Option<PathBuf>,
    /// `$KILN_HOME`; models live in its `models/<name>/`.
    pub kiln_home: PathBuf,
    /// The HF hub cache directory itself (the one holding `models--ORG--NAME`).
    pub hf_home: PathBuf,
}

impl ResolveOptions {
    /// From the process environment; see [`ResolveOptions::from_vars`].
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// `KILN_HOME` (default `~/.cache/kiln`), its `models.toml` when that file exists, and the
    /// hub cache as huggingface_hub finds it: `HF_HUB_CACHE`, `HF_HOME/hub`,
    /// `XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let cache = get("XDG_CACHE_HOME")
            .or_else(|| get("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        let kiln_home = get("KILN_HOME").unwrap_or_else(|| cache.join("kiln"));
        let hf_home = get("HF_HUB_CACHE")
            .or_else(|| get("HF_HOME").map(|h| h.join("hub")))
            .unwrap_or_else(|| cache.join("huggingface").join("hub"));
        let models_file = Some(kiln_home.join("models.toml")).filter(|p| p.is_file());
        Self {
            models_file,
            kiln_home,
            hf_home,
        }
    }
}

/// The files of one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// An HF-layout directory (config.json, safetensors, tokenizer.json, ...).
    HfDir(PathBuf),
    /// A single GGUF file.
    Gguf(PathBuf),
}

impl ModelSource {
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::HfDir(p) | ModelSource::Gguf(p) => p,
        }
    }
}

/// A name resolved to files; `entry` is `None` for a direct path or a models.toml entry that
/// is not in the catalog.
#[derive(Clone, Debug)]
pub struct ResolvedModel {
    pub entry: Option<&'static CatalogEntry>,
    pub source: ModelSource,
}

/// Models that `scripts/fetch-models.sh` installs (keep in step with the script).
const FETCHED_BY_SCRIPT: &[&str] = &[
    "@hf/huggingfacetb/smollm2-135m-instruct",
    "@cf/openai/whisper-tiny-en",
    "@hf/sentence-transformers/all-minilm-l6-v2",
];

/// Find the files for `name`: a catalog name, a models.toml name, an HF directory or a .gguf.
pub fn resolve(name: &str, opts: &ResolveOptions) -> Result<ResolvedModel> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ModelError::InvalidInput("model name is empty".into()));
    }
    let entry = catalog::lookup(name);
    if entry.is_none() && !name.starts_with('@') {
        let path = expand_home(Path::new(name));
        if path.exists() {
            return from_direct_path(&path);
        }
        if looks_like_path(name) {
            return Err(ModelError::NotFound(format!(
                "{}: no such file or directory (expected an HF model directory or a .gguf \
                 file)",
                path.display()
            )));
        }
    }

    let mut searched = Vec::new();
    if let Some(file) = &opts.models_file {
        if let Some(path) = models_file_entry(file, name, entry)? {
            let source = source_in(&path, entry.map(|e| e.arch)).map_err(|missing| {
                ModelError::NotFound(format!(
                    "models.toml {} maps {name} to {}, which {missing}",
                    file.display(),
                    path.display()
                ))
            })?;
            return Ok(ResolvedModel { entry, source });
        }
        searched.push(format!("{}: no entry for {name}", file.display()));
    }

    let Some(entry) = entry else {
        let close = catalog::closest_names(name, 3).join(", ");
        return Err(ModelError::InvalidInput(format!(
            "unknown model {name:?}: not in the catalog, not in models.toml and not a path; \
             did you mean one of: {close}?"
        )));
    };

    let home_dir = kiln_model_dir(&opts.kiln_home, entry.name);
    match source_in(&home_dir, Some(entry.arch)) {
        Ok(source) => {
            return Ok(ResolvedModel {
                entry: Some(entry),
                source,
            })
        }
        Err(why) => searched.push(format!("{}: {why}", home_dir.display())),
    }

    match entry.hf_repo {
        Some(repo) => match hub_snapshot(&opts.hf_home, repo, entry.arch) {
            Ok(source) => {
                return Ok(ResolvedModel {
                    entry: Some(entry),
                    source,
                })
            }
            Err(why) => searched.push(why),
        },
        None => searched.push("HF hub cache: skipped (no known checkpoint for this name)".into()),
    }

    Err(ModelError::NotFound(not_installed_message(
        entry, &home_dir, opts, &searched,
    )))
}

/// True when [`resolve`] would find files for `name` (for listings such as models-search).
pub fn is_installed(name: &str, opts: &ResolveOptions) -> bool {
    resolve(name, opts).is_ok()
}

/// `$KILN_HOME/models/<name>`; the name's `/` become nested directories, as
/// fetch-models.sh lays them out.
pub fn kiln_model_dir(kiln_home: &Path, name: &str) -> PathBuf {
    name.split('/')
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .fold(kiln_home.join("models"), |dir, part| dir.join(part))
}

fn not_installed_message(
    entry: &CatalogEntry,
    home_dir: &Path,
    opts: &ResolveOptions,
    searched: &[String],
) -> String {
    let mut msg = format!("model {} is not installed. Searched:\n", entry.name);
    for s in searched {
        let _ = writeln!(msg, "  - {s}");
    }
    let needs: Vec<&str> = requirements(Some(entry.arch))
        .iter()
        .map(|n| n.label)
        .collect();
    let _ = writeln!(
        msg,
        "A model is a directory with {} (or a single .gguf file).",
        needs.join(", ")
    );
    if FETCHED_BY_SCRIPT.contains(&entry.name) {
        let _ = write!(
            msg,
            "To install it, run scripts/fetch-models.sh (installs into {}).",
            opts.kiln_home.join("models").display()
        );
    } else {
        let toml = opts
            .models_file
            .clone()
            .unwrap_or_else(|| opts.kiln_home.join("models.toml"));
        let _ = write!(
            msg,
            "To install it, put an HF directory (or a .gguf) at {}, or add to {}:\n  \
             [models.\"{}\"]\n  path = \"/path/to/model\"",
            home_dir.display(),
            toml.display(),
            entry.name
        );
    }
    msg
}

fn looks_like_path(name: &str) -> bool {
    name.starts_with(['/', '.', '~'])
        || name.contains(std::path::MAIN_SEPARATOR)
        || name.to_ascii_lowercase().ends_with(".gguf")
}

/// `~/x` -> `$HOME/x`; other paths unchanged.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_path_buf(),
    }
}

fn from_direct_path(path: &Path) -> Result<ResolvedModel> {
    let source = source_in(path, None).map_err(|why| {
        ModelError::NotFound(format!(
            "{} {why}; expected an HF model directory or a .gguf file",
            path.display()
        ))
    })?;
    Ok(ResolvedModel {
        entry: None,
        source,
    })
}

#[derive(Deserialize)]
struct ModelsFile {
    #[serde(default)]
    models: BTreeMap<String, ModelsFileEntry>,
}

#[derive(Deserialize)]
struct ModelsFileEntry {
    path: PathBuf,
}

/// The path models.toml gives for `name` (or for its catalog spelling), relative paths
/// taken from the file's own directory.
fn models_file_entry(
    file: &Path,
    name: &str,
    entry: Option<&CatalogEntry>,
) -> Result<Option<PathBuf>> {
    let text = std::fs::read_to_string(file).map_err(|source| ModelError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let parsed: ModelsFile = toml::from_str(&text).map_err(|e| ModelError::Format {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let matches = |key: &str| {
        key.eq_ignore_ascii_case(name) || entry.is_some_and(|e| key.eq_ignore_ascii_case(e.name))
    };
    let Some(found) = parsed.models.into_iter().find(|(k, _)| matches(k)) else {
        return Ok(None);
    };
    let path = expand_home(&found.1.path);
    let base = file.parent().unwrap_or(Path::new("."));
    Ok(Some(if path.is_relative() {
        base.join(path)
    } else {
        path
    }))
}

/// A group of files of which at least one must be present.
struct Need {
    label: &'static str,
    satisfied: fn(&[String]) -> bool,
}

fn has(names: &[String], want: &str) -> bool {
    names.iter().any(|n| n == want)
}

fn has_ext(names: &[String], ext: &str) -> bool {
    names.iter().any(|n| n.to_ascii_lowercase().ends_with(ext))
}

const CONFIG: Need = Need {
    label: "config.json",
    satisfied: |n| has(n, "config.json"),
};
// Covers model.safetensors, sharded model-0000x-of-0000y.safetensors and the index.
const SAFETENSORS: Need = Need {
    label: "*.safetensors",
    satisfied: |n| has_ext(n, ".safetensors") || has(n, "model.safetensors.index.json"),
};
const TOKENIZER: Need = Need {
    label: "tokenizer.json",
    satisfied: |n| has(n, "tokenizer.json"),
};
// M2M100 checkpoints ship a sentencepiece model rather than tokenizer.json.
const SPM_TOKENIZER: Need = Need {
    label: "tokenizer.json or sentencepiece.bpe.model",
    satisfied: |n| has(n, "tokenizer.json") || has(n, "sentencepiece.bpe.model"),
};
// Diffusers pipelines keep their parts in subdirectories listed by model_index.json.
const DIFFUSERS_INDEX: Need = Need {
    label: "model_index.json",
    satisfied: |n| has(n, "model_index.json"),
};

/// Files an HF directory must hold for `arch`; a bare path (arch unknown) needs only the
/// config and weights, the loader reporting anything else by name.
fn requirements(arch: Option<Arch>) -> &'static [Need] {
    match arch {
        None | Some(Arch::ResNet) => &[CONFIG, SAFETENSORS],
        Some(Arch::Llama | Arch::Llava | Arch::Whisper | Arch::Bert) => {
            &[CONFIG, SAFETENSORS, TOKENIZER]
        }
        Some(Arch::M2M100) => &[CONFIG, SAFETENSORS, SPM_TOKENIZER],
        Some(Arch::StableDiffusionXl) => &[DIFFUSERS_INDEX],
    }
}

/// The model at `path` (an HF directory, a directory holding one .gguf, or a .gguf file),
/// or why there is none, phrased to follow the path in a sentence.
fn source_in(path: &Path, arch: Option<Arch>) -> std::result::Result<ModelSource, String> {
    if path.is_file() {
        return if is_gguf(path) {
            Ok(ModelSource::Gguf(path.to_path_buf()))
        } else {
            Err("is a file but not a .gguf".into())
        };
    }
    let Ok(read) = std::fs::read_dir(path) else {
        return Err("does not exist".into());
    };
    // is_file follows symlinks: hub snapshots are links into blobs/.
    let files: Vec<PathBuf> = read
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect();
    let missing: Vec<&str> = requirements(arch)
        .iter()
        .filter(|need| !(need.satisfied)(&names))
        .map(|need| need.label)
        .collect();
    if missing.is_empty() {
        return Ok(ModelSource::HfDir(path.to_path_buf()));
    }
    let mut ggufs: Vec<&PathBuf> = files.iter().filter(|p| is_gguf(p)).collect();
    ggufs.sort();
    match ggufs.as_slice() {
        [one] => Ok(ModelSource::Gguf((*one).clone())),
        [] => Err(format!("is missing {}", missing.join(", "))),
        many => Err(format!(
            "holds {} .gguf files ({}); name one in models.toml",
            many.len(),
            many.iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The hub snapshot for `repo`: the one `refs/main` names first, then newest first; the
/// first complete one wins. Err says what was found, for the not-installed message.
fn hub_snapshot(hub: &Path, repo: &str, arch: Arch) -> std::result::Result<ModelSource, String> {
    let repo_dir = hub.join(format!("models--{}", repo.replace('/', "--")));
    let snapshots_dir = repo_dir.join("snapshots");
    let Ok(read) = std::fs::read_dir(&snapshots_dir) else {
        return Err(format!("{}: does not exist", repo_dir.display()));
    };
    let mut snapshots: Vec<(std::time::SystemTime, PathBuf)> = read
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let modified = e.metadata().and_then(|m| m.modified());
            (modified.unwrap_or(std::time::UNIX_EPOCH), e.path())
        })
        .collect();
    // Newest first; equal times fall back to name so the choice is stable.
    snapshots.sort_by(|a, b| b.cmp(a));
    let main_rev = std::fs::read_to_string(repo_dir.join("refs").join("main")).ok();
    if let Some(rev) = main_rev.as_deref().map(str::trim) {
        if let Some(i) = snapshots.iter().position(|(_, p)| p.ends_with(rev)) {
            let main = snapshots.remove(i);
            snapshots.insert(0, main);
        }
    }
    let mut first_problem = None;
    for (_, dir) in &snapshots {
        match source_in(dir, Some(arch)) {
            Ok(source) => return Ok(source),
            Err(why) => {
                first_problem.get_or_insert_with(|| format!("{}: {why}", dir.display()));
            }
        }
    }
    Err(first_problem.unwrap_or_else(|| format!("{}: no snapshots", snapshots_dir.display())))
}

#[cfg(test)]
#[path = "resolve_tests.rs"]
mod tests;
