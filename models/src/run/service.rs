//! The models a server (or C caller) offers: which weights serve each catalog name, loading
//! them on first use, and dispatching a run by task.
//!
//! By default every catalog name answers: a name whose weights are not installed is served
//! by the installed default model of the same task, and `served_by` says so. `strict` turns
//! that off. `random_weights` serves each task's default model at its real shape with seeded
//! random weights (contract tests with no downloads).

use super::embeddings;
use super::error::RunError;
use super::json_constraint::{JsonConstraint, JsonGrammar, TokenTexts};
use super::text_generation::{self, ConstraintFactory, ResponseFormat, TextJob, TextService};
use crate::bert::{BertConfig, BertModel};
use crate::catalog::{self, CatalogEntry, Pooling, Task};
use crate::llama::LoadOptions;
use crate::resolve::ModelSource;
use crate::resolve::{self, ResolveOptions};
use crate::serving::{start_engine, ServeOptions};
use crate::text::TextModel;
use crate::tokenizer::Tokenizer;
use crate::weights::SafetensorsWeights;
use kiln_engine::engine_thread::{EngineStats, LogitsProcessor};
use kiln_engine::{DType, Device};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub resolve: ResolveOptions,
    pub device: Device,
    pub dtype: Option<DType>,
    pub strict: bool,
    pub random_weights: bool,
    pub serve: ServeOptions,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self {
            resolve: ResolveOptions::from_env(),
            device: Device::Cpu,
            dtype: None,
            strict: false,
            random_weights: false,
            serve: ServeOptions::default(),
        }
    }
}

/// What the server's command line and the C ABI's `kiln_options` both give, checked and
/// turned into [`ServiceOptions`] in one place.
#[derive(Debug, Clone, Default)]
pub struct ServiceSettings {
    /// A models.toml (`[models."<name>"] path = ...`), or a directory laid out like
    /// `$KILN_HOME` (an optional `models.toml` and `models/<name>/`). `None`: the environment
    /// (`KILN_HOME`, the HF hub cache).
    pub models: Option<PathBuf>,
    /// `cpu` (also when `None`) or `cuda[:N]`.
    pub device: Option<String>,
    /// `f32`, `bf16` or `f16`; `None`: as stored.
    pub dtype: Option<String>,
    pub strict: bool,
    pub random_weights: bool,
    /// KV-cache bytes, batching and queue limits.
    pub serve: ServeOptions,
}

impl ServiceSettings {
    /// Checks every setting (the error names it) and builds the options.
    pub fn into_options(self) -> Result<ServiceOptions, RunError> {
        let bad = |m: String| Err(RunError::bad_input(m));
        let mut resolve = ResolveOptions::from_env();
        if let Some(path) = self.models {
            if path.is_dir() {
                let toml = path.join("models.toml");
                resolve.models_file = toml.is_file().then_some(toml);
                resolve.kiln_home = path;
            } else if path.is_file() {
                resolve.models_file = Some(path);
            } else {
                return bad(format!(
                    "models: {}: no such file or directory (expected a models.toml or a \
                     directory laid out like $KILN_HOME)",
                    path.display()
                ));
            }
        }
        let name = self.device.as_deref().unwrap_or("cpu");
        let device = match Device::parse(name) {
            Ok(d) => d,
            Err(e) => return bad(e.to_string()),
        };
        if !device.is_available() {
            return bad(format!("device {name}: not available on this machine"));
        }
        let dtype = match self.dtype.as_deref() {
            None => None,
            Some(s) => match DType::parse_float(s) {
                Some(d) => Some(d),
                None => return bad(format!("dtype {s:?}: expected f32, bf16 or f16")),
            },
        };
        let sv = &self.serve;
        if sv.block_size == 0 || sv.max_seqs == 0 || sv.max_batched_tokens == 0 {
            return bad("block size, max seqs and max batched tokens must be at least 1".into());
        }
        if sv.kv_cache_memory == Some(0) {
            return bad("kv cache memory must be more than 0 bytes".into());
        }
        Ok(ServiceOptions {
            resolve,
            device,
            dtype,
            strict: self.strict,
            random_weights: self.random_weights,
            serve: self.serve,
        })
    }
}

/// Which weights answer a request for a catalog name.
#[derive(Debug, Clone)]
pub struct Route {
    pub requested: &'static CatalogEntry,
    /// The catalog name of the weights that serve it.
    pub served_by: &'static CatalogEntry,
    pub random_weights: bool,
}

impl Route {
    /// What the `x-kiln-served-by` header says.
    pub fn served_by_label(&self) -> String {
        if self.random_weights {
            format!("{} (random weights)", self.served_by.name)
        } else {
            self.served_by.name.to_string()
        }
    }
}

/// A prepared run: a generation to stream or collect, or an output computed already.
pub enum Prepared {
    Text(TextJob),
    Json(Value),
}

/// A loaded embeddings model and its tokenizer.
pub struct EmbedService {
    pub model: BertModel,
    pub tokenizer: Tokenizer,
}

pub struct Service {
    opts: ServiceOptions,
    text: Mutex<HashMap<&'static str, Arc<TextService>>>,
    embed: Mutex<HashMap<&'static str, Arc<EmbedService>>>,
    /// Serialises model loads (a second request for the same model waits for the first load).
    loading: Mutex<()>,
}

impl Service {
    pub fn new(opts: ServiceOptions) -> Self {
        Self {
            opts,
            text: Mutex::new(HashMap::new()),
            embed: Mutex::new(HashMap::new()),
            loading: Mutex::new(()),
        }
    }

    pub fn options(&self) -> &ServiceOptions {
        &self.opts
    }

    fn installed(&self, e: &CatalogEntry) -> bool {
        resolve::is_installed(e.name, &self.opts.resolve)
    }

    /// Whether a task has an engine in kiln yet.
    pub fn task_supported(task: Task) -> bool {
        matches!(task, Task::TextGeneration | Task::TextEmbeddings)
    }

    pub fn route(&self, model: &str) -> Result<Route, RunError> {
        let requested = catalog::lookup(model).ok_or_else(|| {
            let near = catalog::closest_names(model, 3);
            let hint = if near.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", near.join(", "))
            };
            RunError::no_such_model(format!("No such model {model}{hint}"))
        })?;
        let default = catalog::default_for(requested.task);
        if self.opts.random_weights {
            let served_by = default.filter(|d| d.config.is_some()).ok_or_else(|| {
                RunError::no_such_model(format!(
                    "{}: kiln has no random-weights model for {}",
                    requested.name,
                    requested.task.as_str()
                ))
            })?;
            return Ok(Route {
                requested,
                served_by,
                random_weights: true,
            });
        }
        if self.installed(requested) {
            return Ok(Route {
                requested,
                served_by: requested,
                random_weights: false,
            });
        }
        let missing = || match resolve::resolve(requested.name, &self.opts.resolve) {
            Err(e) => e.to_string(),
            Ok(_) => format!("{} is not installed", requested.name),
        };
        if self.opts.strict {
            return Err(RunError::no_such_model(missing()));
        }
        match default.filter(|d| self.installed(d)) {
            Some(d) => Ok(Route {
                requested,
                served_by: d,
                random_weights: false,
            }),
            None => Err(RunError::no_such_model(format!(
                "{} (and no installed {} model can stand in for it)",
                missing(),
                requested.task.as_str()
            ))),
        }
    }

    /// Validates `input` for the model's task and starts it. May load the model first
    /// (seconds): call from a thread that may block.
    pub fn prepare(&self, route: &Route, input: &Value) -> Result<Prepared, RunError> {
        match route.requested.task {
            Task::TextGeneration => {
                let input = text_generation::parse(input)?;
                let svc = self.text_service(route)?;
                Ok(Prepared::Text(text_generation::start(&svc, input)?))
            }
            Task::TextEmbeddings => {
                let input = embeddings::parse(input)?;
                let svc = self.embed_service(route)?;
                let pooling = route
                    .requested
                    .default_pooling
                    .or(route.served_by.default_pooling)
                    .unwrap_or(Pooling::Mean);
                Ok(Prepared::Json(embeddings::run(
                    &svc.model,
                    &svc.tokenizer,
                    &input,
                    pooling,
                )?))
            }
            other => Err(RunError::no_such_model(format!(
                "{}: kiln does not run {} models yet",
                route.requested.name,
                other.as_str()
            ))),
        }
    }

    /// The loaded text model of a route (loading it on first use).
    pub fn text_service(&self, route: &Route) -> Result<Arc<TextService>, RunError> {
        let key = route.served_by.name;
        if let Some(s) = self.lock_text().get(key) {
            return Ok(s.clone());
        }
        let _guard = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = self.lock_text().get(key) {
            return Ok(s.clone());
        }
        let svc = Arc::new(self.load_text(route)?);
        self.lock_text().insert(key, svc.clone());
        Ok(svc)
    }

    /// The loaded embeddings model of a route (loading it on first use).
    pub fn embed_service(&self, route: &Route) -> Result<Arc<EmbedService>, RunError> {
        let key = route.served_by.name;
        let lock = || self.embed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = lock().get(key) {
            return Ok(s.clone());
        }
        let _guard = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = lock().get(key) {
            return Ok(s.clone());
        }
        let resolved = resolve::resolve(key, &self.opts.resolve)?;
        let dir = match &resolved.source {
            ModelSource::HfDir(d) => d.clone(),
            ModelSource::Gguf(p) => {
                return Err(RunError::bad_input(format!(
                    "{}: embeddings models load from HF directories, not GGUF",
                    p.display()
                )))
            }
        };
        eprintln!("kiln: loading {} for {}", key, route.requested.name);
        let config = BertConfig::from_hf_dir(&dir)?;
        let weights = SafetensorsWeights::open_dir(&dir)?;
        let opts = LoadOptions {
            dtype: self.opts.dtype,
            device: self.opts.device,
            progress: None,
        };
        let model = BertModel::load(&weights, config, opts)?;
        let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))?;
        let svc = Arc::new(EmbedService { model, tokenizer });
        lock().insert(key, svc.clone());
        Ok(svc)
    }

    fn lock_text(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Arc<TextService>>> {
        self.text.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn load_text(&self, route: &Route) -> Result<TextService, RunError> {
        let opts = LoadOptions {
            dtype: self.opts.dtype,
            device: self.opts.device,
            progress: None,
        };
        let entry = route.served_by;
        eprintln!(
            "kiln: loading {} for {}",
            route.served_by_label(),
            route.requested.name
        );
        let model = if route.random_weights {
            TextModel::random_for(entry, 0, opts)?
        } else {
            let resolved = resolve::resolve(entry.name, &self.opts.resolve)?;
            TextModel::load(&resolved.source, opts)?
        };
        let model = Arc::new(model);
        let engine = start_engine(model.clone(), &self.opts.serve)?;
        Ok(TextService {
            constraint: Box::new(JsonModeFactory::new(&model)),
            model,
            engine,
        })
    }

    /// Loads the default model of every task kiln runs (when installed, or random).
    pub fn preload(&self) -> Vec<(String, Result<(), RunError>)> {
        let mut out = Vec::new();
        for task in [Task::TextGeneration, Task::TextEmbeddings] {
            let Some(d) = catalog::default_for(task) else {
                continue;
            };
            let r = self.route(d.name).and_then(|r| match task {
                Task::TextEmbeddings => self.embed_service(&r).map(|_| ()),
                _ => self.text_service(&r).map(|_| ()),
            });
            out.push((d.name.to_string(), r));
        }
        out
    }

    /// Engine statistics of each loaded model.
    pub fn stats(&self) -> Vec<(&'static str, EngineStats)> {
        let mut v: Vec<_> = self
            .lock_text()
            .iter()
            .map(|(k, s)| (*k, s.engine.stats()))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// Stops every engine after its in-flight requests finish.
    pub fn shutdown(&self) {
        let services: Vec<_> = self.lock_text().values().cloned().collect();
        for s in services {
            s.engine.shutdown();
        }
    }

    /// One catalog entry as models/search lists it.
    pub fn describe(&self, e: &CatalogEntry) -> Value {
        let mut props = Vec::new();
        let mut prop = |name: &str, v: Option<usize>| {
            if let Some(v) = v {
                props.push(json!({"property_id": name, "value": v.to_string()}));
            }
        };
        prop("context_window", e.context_window);
        prop("max_input_tokens", e.max_input_tokens);
        prop("output_dimensions", e.output_dimensions);
        let installed = self.installed(e);
        let served_by = self.route(e.name).ok().map(|r| r.served_by_label());
        json!({
            "id": e.name,
            "name": e.name,
            "description": e.description,
            "task": {"name": e.task.as_str()},
            "properties": props,
            "installed": installed,
            "supported": Self::task_supported(e.task),
            "served_by": served_by,
        })
    }

    /// GET models/search: filter by task and text, paginate.
    pub fn search(
        &self,
        task: Option<&str>,
        search: Option<&str>,
        page: usize,
        per_page: usize,
    ) -> Vec<Value> {
        let search = search.map(str::to_lowercase);
        catalog::all()
            .iter()
            .filter(|e| {
                task.is_none_or(|t| {
                    Task::from_name(t) == Some(e.task)
                        || t.eq_ignore_ascii_case(&e.task.as_str().replace(' ', "-"))
                })
            })
            .filter(|e| {
                search.as_ref().is_none_or(|s| {
                    e.name.to_lowercase().contains(s) || e.description.to_lowercase().contains(s)
                })
            })
            .skip(page.saturating_sub(1) * per_page)
            .take(per_page)
            .map(|e| self.describe(e))
            .collect()
    }
}

/// JSON mode for one model: its token texts (built once) and a grammar per request.
pub struct JsonModeFactory {
    texts: Arc<TokenTexts>,
}

impl JsonModeFactory {
    pub fn new(model: &TextModel) -> Self {
        Self {
            texts: Arc::new(TokenTexts::from_tokenizer(&model.tokenizer)),
        }
    }
}

impl ConstraintFactory for JsonModeFactory {
    fn make(
        &self,
        format: &ResponseFormat,
        stop_ids: &[u32],
    ) -> Result<Box<dyn LogitsProcessor>, RunError> {
        let grammar = match format {
            ResponseFormat::JsonObject => JsonGrammar::any_object(),
            ResponseFormat::JsonSchema(schema) => {
                JsonGrammar::from_schema(schema, "response_format.json_schema")
                    .map_err(|e| RunError::bad_input(format!("{}: {}", e.path, e.message)))?
            }
        };
        Ok(Box::new(JsonConstraint::new(
            self.texts.clone(),
            Arc::new(grammar),
            stop_ids,
        )))
    }
}
