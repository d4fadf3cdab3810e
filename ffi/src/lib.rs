//! libkiln: the C ABI of kiln, declared in `include/kiln.h` (written by hand; the
//! `header_drift` test checks it against this file and the built library).
//!
//! Every call goes through the same run-API core as the HTTP server
//! (`kiln_models::run::service::Service`: route, prepare, collect), so a C caller gets the
//! server's outputs and error codes. Each exported function catches panics
//! (`KILN_ERR_INTERNAL`), checks its pointers and strings, and leaves a thread-local message
//! for `kiln_last_error_message`.

#![allow(non_camel_case_types)]

// `::kiln_engine` is the engine crate; `kiln_engine` alone is the C handle below.
use ::kiln_engine::engine_thread::{Canceller, EngineStats};
use kiln_models::catalog::Task;
use kiln_models::run::service::{Prepared, Service, ServiceSettings};
use kiln_models::run::text_generation::{TextEvent, TextJob};
use kiln_models::run::RunError;
use kiln_models::serving::ServeOptions;
use serde_json::{json, Value};
use std::alloc::Layout;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

mod status;
pub use status::kiln_status;
use status::kiln_status::*;

/// `KILN_ABI_VERSION` in kiln.h.
pub const KILN_ABI_VERSION: u32 = 1;

/// The library version, NUL-terminated.
const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(s) => s,
        Err(_) => panic!("version string"),
    };

/// An open service (opaque to C).
pub struct kiln_engine {
    service: Arc<Service>,
}

/// Cancels a streaming run from any thread (opaque to C).
pub struct kiln_cancel_token {
    state: Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    cancelled: bool,
    /// The run in flight with this token, if any.
    active: Option<Canceller>,
}

/// `kiln_options` in kiln.h.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_options {
    pub struct_size: usize,
    pub models: *const c_char,
    pub device: *const c_char,
    pub dtype: *const c_char,
    pub kv_cache_memory: u64,
    pub max_seqs: u32,
    pub max_queue: u32,
    pub max_batched_tokens: u32,
    pub strict: i32,
    pub random_weights: i32,
}

/// `kiln_stream_callback` in kiln.h.
pub type kiln_stream_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        text: *const c_char,
        event_json: *const c_char,
    ) -> c_int,
>;

// ---- errors ---------------------------------------------------------------------------

/// A failed call: its status, its Workers AI code (0: none) and message.
#[derive(Debug)]
struct Failure {
    status: kiln_status,
    code: u32,
    message: String,
}

impl Failure {
    fn new(status: kiln_status, message: impl Into<String>) -> Self {
        Self {
            status,
            code: 0,
            message: message.into(),
        }
    }

    fn null(name: &str) -> Self {
        Self::new(KILN_ERR_NULL_ARGUMENT, format!("{name} is NULL"))
    }

    fn cancelled(message: impl Into<String>) -> Self {
        Self::new(KILN_ERR_CANCELLED, message)
    }
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Self {
        let status = match e.code {
            5007 => KILN_ERR_UNKNOWN_MODEL,
            5006 | 3006 => KILN_ERR_BAD_INPUT,
            3040 => KILN_ERR_BUSY,
            _ => KILN_ERR_INTERNAL,
        };
        Self {
            status,
            code: e.code,
            message: e.message,
        }
    }
}

type Res<T> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<(CString, u32)> = RefCell::new((CString::default(), 0));
}

fn set_last_error(message: &str, code: u32) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|l| *l.borrow_mut() = (text, code));
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|l| {
        let mut l = l.borrow_mut();
        if !l.0.as_bytes().is_empty() || l.1 != 0 {
            *l = (CString::default(), 0);
        }
    });
}

/// Runs one exported call: clears the last error, catches panics, records a failure.
fn guard(f: impl FnOnce() -> Res<()>) -> kiln_status {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => KILN_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message, e.code);
            e.status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (panic): {what}"), 3001);
            KILN_ERR_INTERNAL
        }
    }
}

// ---- argument helpers -----------------------------------------------------------------

/// A borrowed string argument: NULL and invalid UTF-8 are failures naming the argument.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string that outlives the call.
unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Res<&'a str> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    CStr::from_ptr(p).to_str().map_err(|e| {
        Failure::new(
            KILN_ERR_INVALID_UTF8,
            format!(
                "{name} is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// An optional string argument (NULL: `None`).
///
/// # Safety
/// As [`str_arg`].
unsafe fn opt_str_arg<'a>(p: *const c_char, name: &str) -> Res<Option<&'a str>> {
    if p.is_null() {
        Ok(None)
    } else {
        str_arg(p, name).map(Some)
    }
}

/// JSON text as the server reads a body: empty or malformed is invalid JSON (code 5006).
fn parse_json(text: &str, name: &str) -> Res<Value> {
    let fail = |m: String| Failure {
        status: KILN_ERR_INVALID_JSON,
        code: 5006,
        message: m,
    };
    if text.trim().is_empty() {
        return Err(fail(format!("{name} is empty; send a JSON object")));
    }
    serde_json::from_str(text).map_err(|e| fail(format!("{name}: invalid JSON: {e}")))
}

/// The engine behind a handle.
///
/// # Safety
/// `p` is NULL or a handle from `kiln_engine_open` that is not closed.
unsafe fn engine_arg<'a>(p: *mut kiln_engine) -> Res<&'a kiln_engine> {
    p.as_ref().ok_or_else(|| Failure::null("engine"))
}

/// Checks an output pointer and clears what it points at.
///
/// # Safety
/// `p` is NULL or valid for writes.
unsafe fn out_arg<'a, T>(p: *mut *mut T, name: &str) -> Res<&'a mut *mut T> {
    let out = p.as_mut().ok_or_else(|| Failure::null(name))?;
    *out = std::ptr::null_mut();
    Ok(out)
}

/// A string handed to C (freed by `kiln_string_free`); NULs inside become U+FFFD.
fn c_string(s: String) -> CString {
    CString::new(s).unwrap_or_else(|e| {
        let s = String::from_utf8_lossy(&e.into_vec()).replace('\0', "\u{FFFD}");
        CString::new(s).unwrap_or_default()
    })
}

// ---- the run path (the same Service calls as server-lite's run route) -----------------

impl kiln_engine {
    /// Route, then prepare (validates the input; may load the model).
    fn prepare(&self, model: &str, input: &Value) -> Res<(Task, Prepared)> {
        let route = self.service.route(model)?;
        let task = route.requested.task;
        Ok((task, self.service.prepare(&route, input)?))
    }

    /// The run's result JSON, as the server puts it under `result`.
    fn run(&self, model: &str, input: &Value) -> Res<Value> {
        match self.prepare(model, input)?.1 {
            Prepared::Json(v) => Ok(v),
            Prepared::Text(job) => Ok(job.collect_blocking()?),
        }
    }

    /// Checks a model's task before any work (typed helpers and streaming).
    fn expect_task(&self, model: &str, task: Task, call: &str) -> Res<()> {
        let route = self.service.route(model)?;
        if route.requested.task != task {
            return Err(RunError::bad_input(format!(
                "{call}: {} is a {} model, not {}",
                route.requested.name,
                route.requested.task.as_str(),
                task.as_str()
            ))
            .into());
        }
        Ok(())
    }
}

/// Clears a token's run when the stream ends, however it ends.
struct ActiveRun<'a>(Option<&'a kiln_cancel_token>);

impl Drop for ActiveRun<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            t.lock().active = None;
        }
    }
}

impl kiln_cancel_token {
    fn lock(&self) -> std::sync::MutexGuard<'_, TokenState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }
}

fn stream(
    job: &mut TextJob,
    token: Option<&kiln_cancel_token>,
    callback: unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int,
    user_data: *mut c_void,
) -> Res<()> {
    let cancelled = || token.is_some_and(kiln_cancel_token::is_cancelled);
    loop {
        match job.next_blocking() {
            Some(Ok(TextEvent::Text(t))) => {
                if cancelled() {
                    job.cancel();
                    return Err(Failure::cancelled("cancelled by kiln_cancel"));
                }
                let event = c_string(json!({ "response": t }).to_string());
                let text = c_string(t);
                // SAFETY: the caller's callback, with strings that live through the call.
                let rc = unsafe { callback(user_data, text.as_ptr(), event.as_ptr()) };
                if rc != 0 {
                    job.cancel();
                    return Err(Failure::cancelled(format!(
                        "the stream callback returned {rc}"
                    )));
                }
            }
            Some(Ok(TextEvent::Done { usage, .. })) => {
                let event = c_string(json!({"response": "", "usage": usage.json()}).to_string());
                // SAFETY: as above; the final call's return value is not needed.
                unsafe { callback(user_data, std::ptr::null(), event.as_ptr()) };
                return Ok(());
            }
            Some(Err(_)) | None if cancelled() => {
                return Err(Failure::cancelled("cancelled by kiln_cancel"))
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(RunError::internal("generation ended without usage").into());
            }
        }
    }
}

// ---- float arrays ----------------------------------------------------------------------

/// Bytes before the floats: the element count, padded to keep the floats 16-byte aligned.
const FLOATS_HEADER: usize = 16;

fn floats_layout(n: usize) -> Option<Layout> {
    let bytes = n.checked_mul(4)?.checked_add(FLOATS_HEADER)?;
    Layout::from_size_align(bytes, 16).ok()
}

/// Copies `v` into memory that `kiln_embeddings_free` releases.
fn alloc_floats(v: &[f32]) -> Res<*mut f32> {
    let layout = floats_layout(v.len())
        .ok_or_else(|| Failure::new(KILN_ERR_INTERNAL, "embeddings too large to allocate"))?;
    // SAFETY: the layout has a nonzero size (the header); the count and the floats are
    // written inside it.
    unsafe {
        let base = std::alloc::alloc(layout);
        if base.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        (base as *mut usize).write(v.len());
        let floats = base.add(FLOATS_HEADER) as *mut f32;
        std::ptr::copy_nonoverlapping(v.as_ptr(), floats, v.len());
        Ok(floats)
    }
}

// ---- exported functions ----------------------------------------------------------------

/// The library version (a static string).
#[no_mangle]
pub extern "C" fn kiln_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The library's ABI version (`KILN_ABI_VERSION`).
#[no_mangle]
pub extern "C" fn kiln_abi_version() -> u32 {
    KILN_ABI_VERSION
}

/// This thread's last error message ("" when the last call succeeded).
#[no_mangle]
pub extern "C" fn kiln_last_error_message() -> *const c_char {
    LAST_ERROR
        .try_with(|l| l.borrow().0.as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// This thread's last Workers AI error code (0: none).
#[no_mangle]
pub extern "C" fn kiln_last_error_code() -> u32 {
    LAST_ERROR.try_with(|l| l.borrow().1).unwrap_or(0)
}

/// Fills `options` with the defaults.
///
/// # Safety
/// `options` is NULL or valid for writes of a `kiln_options`.
#[no_mangle]
pub unsafe extern "C" fn kiln_options_init(options: *mut kiln_options) -> kiln_status {
    guard(|| {
        let o = options.as_mut().ok_or_else(|| Failure::null("options"))?;
        *o = kiln_options {
            struct_size: std::mem::size_of::<kiln_options>(),
            models: std::ptr::null(),
            device: std::ptr::null(),
            dtype: std::ptr::null(),
            kv_cache_memory: 0,
            max_seqs: 0,
            max_queue: 0,
            max_batched_tokens: 0,
            strict: 0,
            random_weights: 0,
        };
        Ok(())
    })
}

/// Turns C options into the service settings the server's command line also builds.
///
/// # Safety
/// `o`'s strings are NULL or NUL-terminated.
unsafe fn settings(o: &kiln_options) -> Res<ServiceSettings> {
    let text =
        |p, name: &str| -> Res<Option<String>> { Ok(opt_str_arg(p, name)?.map(str::to_string)) };
    let defaults = ServeOptions::default();
    let or = |v: u32, d: usize| if v == 0 { d } else { v as usize };
    Ok(ServiceSettings {
        models: text(o.models, "options.models")?.map(PathBuf::from),
        device: text(o.device, "options.device")?,
        dtype: text(o.dtype, "options.dtype")?,
        strict: o.strict != 0,
        random_weights: o.random_weights != 0,
        serve: ServeOptions {
            kv_cache_memory: (o.kv_cache_memory != 0).then_some(o.kv_cache_memory),
            max_seqs: or(o.max_seqs, defaults.max_seqs),
            max_queue: or(o.max_queue, defaults.max_queue),
            max_batched_tokens: or(o.max_batched_tokens, defaults.max_batched_tokens),
            ..defaults
        },
    })
}

/// Creates an engine.
///
/// # Safety
/// `options` is NULL or points at a `kiln_options` of at least `struct_size` bytes;
/// `engine_out` is NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kiln_engine_open(
    options: *const kiln_options,
    engine_out: *mut *mut kiln_engine,
) -> kiln_status {
    guard(|| {
        let out = out_arg(engine_out, "engine_out")?;
        let mut o = std::mem::zeroed::<kiln_options>();
        kiln_options_init(&mut o);
        if !options.is_null() {
            let size = std::ptr::addr_of!((*options).struct_size).read();
            if size < std::mem::size_of::<kiln_options>() {
                return Err(Failure::new(
                    KILN_ERR_INVALID_OPTIONS,
                    format!(
                        "options.struct_size is {size}; this library needs at least {} \
                         (call kiln_options_init)",
                        std::mem::size_of::<kiln_options>()
                    ),
                ));
            }
            o = options.read();
        }
        let opts = settings(&o)?.into_options().map_err(|e| {
            Failure::new(KILN_ERR_INVALID_OPTIONS, format!("options.{}", e.message))
        })?;
        let engine = kiln_engine {
            service: Arc::new(Service::new(opts)),
        };
        *out = Box::into_raw(Box::new(engine));
        Ok(())
    })
}

/// Stops and frees an engine.
///
/// # Safety
/// `engine` is NULL or an open handle that no other call is using; it is invalid after.
#[no_mangle]
pub unsafe extern "C" fn kiln_engine_close(engine: *mut kiln_engine) -> kiln_status {
    guard(|| {
        if !engine.is_null() {
            let e = Box::from_raw(engine);
            e.service.shutdown();
        }
        Ok(())
    })
}

/// Runs the Workers AI run API.
///
/// # Safety
/// `engine` is an open handle or NULL; the strings are NULL or NUL-terminated;
/// `output_json` is NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kiln_run(
    engine: *mut kiln_engine,
    model: *const c_char,
    input_json: *const c_char,
    output_json: *mut *mut c_char,
) -> kiln_status {
    guard(|| {
        let out = out_arg(output_json, "output_json")?;
        let engine = engine_arg(engine)?;
        let model = str_arg(model, "model")?;
        let input = parse_json(str_arg(input_json, "input_json")?, "input_json")?;
        let result = engine.run(model, &input)?;
        *out = c_string(result.to_string()).into_raw();
        Ok(())
    })
}

/// Runs a text generation, streaming its chunks to `callback`.
///
/// # Safety
/// As [`kiln_run`]; `callback` is NULL or a function taking `user_data`; `cancel` is NULL or
/// a live token.
#[no_mangle]
pub unsafe extern "C" fn kiln_run_stream(
    engine: *mut kiln_engine,
    model: *const c_char,
    input_json: *const c_char,
    callback: kiln_stream_callback,
    user_data: *mut c_void,
    cancel: *mut kiln_cancel_token,
) -> kiln_status {
    guard(|| {
        let engine = engine_arg(engine)?;
        let model = str_arg(model, "model")?;
        let input = parse_json(str_arg(input_json, "input_json")?, "input_json")?;
        let callback = callback.ok_or_else(|| Failure::null("callback"))?;
        let token = cancel.as_ref();
        engine.expect_task(model, Task::TextGeneration, "kiln_run_stream")?;
        if token.is_some_and(kiln_cancel_token::is_cancelled) {
            return Err(Failure::cancelled("the cancel token was already cancelled"));
        }
        let mut job = match engine.prepare(model, &input)?.1 {
            Prepared::Text(job) => job,
            Prepared::Json(_) => {
                return Err(
                    RunError::bad_input("kiln_run_stream: this model does not stream").into(),
                )
            }
        };
        let _active = ActiveRun(token);
        if let Some(t) = token {
            let mut s = t.lock();
            if s.cancelled {
                job.cancel();
                return Err(Failure::cancelled("cancelled by kiln_cancel"));
            }
            s.active = Some(job.canceller());
        }
        stream(&mut job, token, callback, user_data)
    })
}

/// Creates a cancel token.
///
/// # Safety
/// `token_out` is NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kiln_cancel_token_new(
    token_out: *mut *mut kiln_cancel_token,
) -> kiln_status {
    guard(|| {
        let out = out_arg(token_out, "token_out")?;
        *out = Box::into_raw(Box::new(kiln_cancel_token {
            state: Mutex::new(TokenState::default()),
        }));
        Ok(())
    })
}

/// Cancels the run a token was given to (from any thread).
///
/// # Safety
/// `token` is NULL or a live token.
#[no_mangle]
pub unsafe extern "C" fn kiln_cancel(token: *mut kiln_cancel_token) -> kiln_status {
    guard(|| {
        let t = token.as_ref().ok_or_else(|| Failure::null("token"))?;
        let mut s = t.lock();
        s.cancelled = true;
        if let Some(c) = &s.active {
            c.cancel();
        }
        Ok(())
    })
}

/// Frees a cancel token.
///
/// # Safety
/// `token` is NULL or a live token that no run is using; it is invalid after.
#[no_mangle]
pub unsafe extern "C" fn kiln_cancel_token_free(token: *mut kiln_cancel_token) -> kiln_status {
    guard(|| {
        if !token.is_null() {
            drop(Box::from_raw(token));
        }
        Ok(())
    })
}

/// Text generation returning the response text.
///
/// # Safety
/// As [`kiln_run`]; `params_json` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn kiln_generate(
    engine: *mut kiln_engine,
    model: *const c_char,
    prompt: *const c_char,
    params_json: *const c_char,
    text_out: *mut *mut c_char,
) -> kiln_status {
    guard(|| {
        let out = out_arg(text_out, "text_out")?;
        let engine = engine_arg(engine)?;
        let model = str_arg(model, "model")?;
        let prompt = str_arg(prompt, "prompt")?;
        let mut input = match opt_str_arg(params_json, "params_json")? {
            None => json!({}),
            Some(p) => parse_json(p, "params_json")?,
        };
        let fields = input.as_object_mut().ok_or_else(|| {
            Failure::from(RunError::bad_input("params_json: expected a JSON object"))
        })?;
        fields.insert("prompt".into(), Value::String(prompt.into()));
        engine.expect_task(model, Task::TextGeneration, "kiln_generate")?;
        let result = engine.run(model, &input)?;
        let text = match &result["response"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        *out = c_string(text).into_raw();
        Ok(())
    })
}

/// Sentence embeddings returning a row-major float array.
///
/// # Safety
/// As [`kiln_run`]; `texts` is NULL or points at `n_texts` string pointers; the outputs are
/// NULL or valid for writes.
#[no_mangle]
pub unsafe extern "C" fn kiln_embed(
    engine: *mut kiln_engine,
    model: *const c_char,
    texts: *const *const c_char,
    n_texts: usize,
    vectors_out: *mut *mut f32,
    rows_out: *mut usize,
    dims_out: *mut usize,
) -> kiln_status {
    guard(|| {
        let out = out_arg(vectors_out, "vectors_out")?;
        let rows_out = rows_out.as_mut().ok_or_else(|| Failure::null("rows_out"))?;
        let dims_out = dims_out.as_mut().ok_or_else(|| Failure::null("dims_out"))?;
        (*rows_out, *dims_out) = (0, 0);
        let engine = engine_arg(engine)?;
        let model = str_arg(model, "model")?;
        if texts.is_null() && n_texts > 0 {
            return Err(Failure::null("texts"));
        }
        let mut list = Vec::with_capacity(n_texts);
        for i in 0..n_texts {
            list.push(Value::String(
                str_arg(*texts.add(i), &format!("texts[{i}]"))?.into(),
            ));
        }
        engine.expect_task(model, Task::TextEmbeddings, "kiln_embed")?;
        let result = engine.run(model, &json!({ "text": list }))?;
        let bad = || Failure::new(KILN_ERR_INTERNAL, "embeddings output without data");
        let data = result["data"].as_array().ok_or_else(bad)?;
        let dims = data.first().and_then(Value::as_array).map_or(0, Vec::len);
        let mut flat = Vec::with_capacity(data.len() * dims);
        for row in data {
            let row = row.as_array().filter(|r| r.len() == dims).ok_or_else(bad)?;
            for x in row {
                flat.push(x.as_f64().ok_or_else(bad)? as f32);
            }
        }
        *out = alloc_floats(&flat)?;
        (*rows_out, *dims_out) = (data.len(), dims);
        Ok(())
    })
}

/// Frees a string kiln returned.
///
/// # Safety
/// `s` is NULL or a string from kiln that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn kiln_string_free(s: *mut c_char) -> kiln_status {
    guard(|| {
        if !s.is_null() {
            drop(CString::from_raw(s));
        }
        Ok(())
    })
}

/// Frees the vectors of `kiln_embed`.
///
/// # Safety
/// `vectors` is NULL or an array from `kiln_embed` that was not freed yet.
#[no_mangle]
pub unsafe extern "C" fn kiln_embeddings_free(vectors: *mut f32) -> kiln_status {
    guard(|| {
        if !vectors.is_null() {
            let base = (vectors as *mut u8).sub(FLOATS_HEADER);
            let n = (base as *const usize).read();
            let layout = floats_layout(n)
                .ok_or_else(|| Failure::new(KILN_ERR_INTERNAL, "corrupt embeddings array"))?;
            std::alloc::dealloc(base, layout);
        }
        Ok(())
    })
}

/// The engine statistics of each loaded text model (for tests and benchmarks in Rust; not
/// part of the C ABI).
///
/// # Safety
/// `engine` is an open handle.
#[doc(hidden)]
pub unsafe fn engine_stats(engine: *const kiln_engine) -> Vec<(&'static str, EngineStats)> {
    (*engine).service.stats()
}

/// The run-API service behind a handle (for the overhead benchmark, which calls the same
/// service directly; not part of the C ABI).
///
/// # Safety
/// `engine` is an open handle.
#[doc(hidden)]
pub unsafe fn engine_service(engine: *const kiln_engine) -> Arc<Service> {
    (*engine).service.clone()
}

#[cfg(test)]
mod tests;
