//! The engine thread: owns the model, the scheduler and every request's sampler, and runs
//! continuous-batching steps while there is work. Callers (server, C ABI, CLI) submit
//! requests over a channel and receive each request's events (tokens, then done or error) on
//! its own channel. Dropping a request's handle, or its event receiver, cancels it and frees
//! its KV pages at once.

#[cfg(test)]
mod tests;

use crate::batch::ForwardBatch;
use crate::sampler::{Sampler, SamplingParams};
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerStats, Step};
use crate::Tensor;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What the engine thread needs from a model: one batched forward step over its own paged
/// K/V store.
pub trait StepModel: Send {
    /// Logits [batch.logits_rows.len(), vocab] f32 (any device).
    fn forward(&mut self, batch: &ForwardBatch) -> Result<Tensor, String>;
    fn vocab_size(&self) -> usize;
    /// Most positions a sequence may hold (the context window).
    fn max_context(&self) -> usize;
}

/// Adjusts a request's logits before sampling (constrained decoding, e.g. JSON mode).
pub trait LogitsProcessor: Send {
    /// `generated` are the ids sampled so far; entries of `logits` may be set to -inf.
    fn process(&mut self, generated: &[u32], logits: &mut [f32]);
}

pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Ids that end generation (not emitted).
    pub stop_ids: Vec<u32>,
    pub processor: Option<Box<dyn LogitsProcessor>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop id was sampled.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context window or the whole KV cache is full.
    ContextFull,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from cached pages the first time this request was scheduled.
    pub cached_tokens: usize,
    pub preemptions: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token(u32),
    Done(Done),
    Error(String),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the engine queue is full ({0} requests in flight)")]
    QueueFull(usize),
    #[error("the engine is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    /// Requests accepted beyond those running; more are refused with `QueueFull`.
    pub max_queue: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerConfig::default(),
            max_queue: 256,
        }
    }
}

/// A snapshot of the engine's state, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    pub scheduler: SchedulerStats,
    pub in_flight: usize,
    pub steps: u64,
    pub generated_tokens: u64,
    pub prompt_tokens: u64,
    pub finished: u64,
}

enum Command {
    Submit(u64, Box<GenerateRequest>, UnboundedSender<Event>),
    Cancel(u64),
    Shutdown,
}

struct Shared {
    in_flight: AtomicUsize,
    shutting_down: AtomicBool,
    stats: Mutex<EngineStats>,
}

/// The handle callers hold; cheap to clone; the thread stops when `shutdown` is called or the
/// last clone drops.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    tx: Mutex<mpsc::Sender<Command>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    capacity: usize,
    max_context: usize,
    vocab: usize,
    kv_tokens: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl EngineInner {
    fn send(&self, c: Command) -> bool {
        self.tx.lock().map(|tx| tx.send(c).is_ok()).unwrap_or(false)
    }

    fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        self.send(Command::Shutdown);
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// One submitted request: its events, and cancellation on drop.
pub struct RequestHandle {
    id: u64,
    events: UnboundedReceiver<Event>,
    engine: Engine,
    finished: bool,
}

impl RequestHandle {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Next event (async); `None` after the final one.
    pub async fn next(&mut self) -> Option<Event> {
        let e = self.events.recv().await;
        self.note(&e);
        e
    }

    /// Next event, blocking the calling (non-async) thread.
    pub fn next_blocking(&mut self) -> Option<Event> {
        let e = self.events.blocking_recv();
        self.note(&e);
        e
    }

    fn note(&mut self, e: &Option<Event>) {
        if matches!(e, None | Some(Event::Done(_)) | Some(Event::Error(_))) {
            self.finished = true;
        }
    }

    /// A handle that cancels this request from any thread: the engine frees its pages and
    /// this handle's events end (`None`) without a final event.
    pub fn canceller(&self) -> Canceller {
        Canceller {
            id: self.id,
            engine: self.engine.clone(),
        }
    }

    /// Stops the request now; its pages are freed by the engine thread.
    pub fn cancel(&mut self) {
        if !self.finished {
            self.engine.inner.send(Command::Cancel(self.id));
            self.finished = true;
        }
    }
}

/// Cancels one request from any thread (see [`RequestHandle::canceller`]); cancelling a
/// request that has finished does nothing.
#[derive(Clone)]
pub struct Canceller {
    id: u64,
    engine: Engine,
}

impl Canceller {
    pub fn cancel(&self) {
        self.engine.inner.send(Command::Cancel(self.id));
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl Engine {
    /// Starts the engine thread over `model`. `config.scheduler.num_blocks` must match the
    /// model's K/V store.
    pub fn start(model: Box<dyn StepModel>, config: EngineConfig) -> std::io::Result<Engine> {
        let shared = Arc::new(Shared {
            in_flight: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            stats: Mutex::new(EngineStats::default()),
        });
        let (tx, rx) = mpsc::channel();
        let capacity = config.scheduler.max_seqs + config.max_queue;
        let (max_context, vocab) = (model.max_context(), model.vocab_size());
        let kv_tokens = config.scheduler.num_blocks * config.scheduler.block_size;
        let worker = Worker {
            model,
            scheduler: Scheduler::new(config.scheduler),
            requests: HashMap::new(),
            shared: shared.clone(),
            stats: EngineStats::default(),
        };
        let thread = std::thread::Builder::new()
            .name("kiln-engine".into())
            .spawn(move || worker.run(rx))?;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                tx: Mutex::new(tx),
                shared,
                next_id: AtomicU64::new(1),
                capacity,
                max_context,
                vocab,
                kv_tokens,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Validates and queues a request; events arrive on the returned handle.
    pub fn submit(&self, req: GenerateRequest) -> Result<RequestHandle, SubmitError> {
        let inner = &self.inner;
        if inner.shared.shutting_down.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        self.validate(&req)?;
        let n = inner.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        if n >= inner.capacity {
            inner.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull(n));
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (etx, erx) = unbounded_channel();
        if !inner.send(Command::Submit(id, Box::new(req), etx)) {
            inner.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::ShuttingDown);
        }
        Ok(RequestHandle {
            id,
            events: erx,
            engine: self.clone(),
            finished: false,
        })
    }

    fn validate(&self, req: &GenerateRequest) -> Result<(), SubmitError> {
        let inner = &self.inner;
        let invalid = |m: String| Err(SubmitError::Invalid(m));
        req.params
            .validate()
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        if req.prompt.is_empty() {
            return invalid("the prompt is empty".into());
        }
        if let Some(bad) = req.prompt.iter().find(|&&t| t as usize >= inner.vocab) {
            return invalid(format!(
                "token id {bad} is outside the vocabulary (size {})",
                inner.vocab
            ));
        }
        if req.prompt.len() >= inner.max_context {
            return invalid(format!(
                "the prompt has {} tokens; the context window is {}",
                req.prompt.len(),
                inner.max_context
            ));
        }
        if req.prompt.len() >= inner.kv_tokens {
            return invalid(format!(
                "the prompt has {} tokens; the KV cache holds {}",
                req.prompt.len(),
                inner.kv_tokens
            ));
        }
        Ok(())
    }

    pub fn stats(&self) -> EngineStats {
        let mut s = self
            .inner
            .shared
            .stats
            .lock()
            .map(|s| *s)
            .unwrap_or_default();
        s.in_flight = self.inner.shared.in_flight.load(Ordering::SeqCst);
        s
    }

    /// Stops accepting requests, lets in-flight ones finish, then stops the thread.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    pub fn max_context(&self) -> usize {
        self.inner.max_context
    }
}

struct Active {
    sampler: Sampler,
    events: UnboundedSender<Event>,
    stop_ids: Vec<u32>,
    max_tokens: usize,
    processor: Option<Box<dyn LogitsProcessor>>,
    prompt_len: usize,
    generated: Vec<u32>,
    cached_tokens: Option<usize>,
}

struct Worker {
    model: Box<dyn StepModel>,
    scheduler: Scheduler,
    requests: HashMap<u64, Active>,
    shared: Arc<Shared>,
    stats: EngineStats,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        let mut draining = false;
        loop {
            // Block only when idle; otherwise take whatever arrived and keep stepping.
            if !self.scheduler.has_work() {
                if draining {
                    break;
                }
                match rx.recv() {
                    Ok(c) => draining |= self.command(c),
                    Err(_) => break,
                }
            }
            while let Ok(c) = rx.try_recv() {
                draining |= self.command(c);
            }
            if self.scheduler.has_work() {
                self.step();
            }
            self.publish();
        }
        self.publish();
    }

    /// Handles one command; true when it asks the thread to drain and stop.
    fn command(&mut self, c: Command) -> bool {
        match c {
            Command::Submit(id, req, events) => {
                let GenerateRequest {
                    prompt,
                    params,
                    stop_ids,
                    processor,
                } = *req;
                let prompt_len = prompt.len();
                let sampler = match Sampler::new(params.clone(), prompt_len) {
                    Ok(s) => s,
                    Err(e) => {
                        self.reject(&events, e.to_string());
                        return false;
                    }
                };
                if let Err(e) = self.scheduler.add(id, prompt) {
                    self.reject(&events, e.to_string());
                    return false;
                }
                self.requests.insert(
                    id,
                    Active {
                        sampler,
                        events,
                        stop_ids,
                        max_tokens: params.max_tokens,
                        processor,
                        prompt_len,
                        generated: Vec::new(),
                        cached_tokens: None,
                    },
                );
                false
            }
            Command::Cancel(id) => {
                self.end(id, None);
                false
            }
            Command::Shutdown => true,
        }
    }

    fn reject(&self, events: &UnboundedSender<Event>, message: String) {
        let _ = events.send(Event::Error(message));
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Removes a request, sending its final event (none when cancelled).
    fn end(&mut self, id: u64, last: Option<Event>) {
        self.scheduler.finish(id);
        if let Some(a) = self.requests.remove(&id) {
            // Books first, so a caller that saw the final event sees the pages returned.
            self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.stats.finished += 1;
            self.publish();
            if let Some(e) = last {
                let _ = a.events.send(e);
            }
        }
    }

    fn done(&mut self, id: u64, reason: FinishReason) {
        let Some(a) = self.requests.get(&id) else {
            return;
        };
        let done = Done {
            reason,
            prompt_tokens: a.prompt_len,
            completion_tokens: a.generated.len(),
            cached_tokens: a.cached_tokens.unwrap_or(0),
            preemptions: self.scheduler.preemptions_of(id),
        };
        self.end(id, Some(Event::Done(done)));
    }

    fn step(&mut self) {
        let step = self.scheduler.schedule();
        for &id in &step.cache_full {
            self.done(id, FinishReason::ContextFull);
        }
        if step.is_empty() {
            return;
        }
        // The first time a request is scheduled, its chunk starts after its cached prefix.
        for s in &step.seqs {
            if let Some(a) = self.requests.get_mut(&s.seq) {
                a.cached_tokens.get_or_insert(s.start);
            }
        }
        let batch = ForwardBatch::from_step(&self.scheduler, &step);
        self.stats.steps += 1;
        let drawn = self
            .model
            .forward(&batch)
            .and_then(|logits| self.draw(&logits, &step).map_err(|e| e.to_string()));
        let drawn = match drawn {
            Ok(d) => d,
            Err(e) => {
                for s in &step.seqs {
                    self.end(s.seq, Some(Event::Error(format!("forward failed: {e}"))));
                }
                return;
            }
        };
        self.scheduler.complete(&step);
        let max_context = self.model.max_context();
        for (id, token) in drawn {
            let history_len = self.scheduler.tokens(id).len();
            let Some(a) = self.requests.get_mut(&id) else {
                continue; // cancelled during the step
            };
            if a.stop_ids.contains(&token) {
                self.done(id, FinishReason::Stop);
                continue;
            }
            a.generated.push(token);
            self.stats.generated_tokens += 1;
            if a.events.send(Event::Token(token)).is_err() {
                self.end(id, None); // the receiver is gone: the caller went away
                continue;
            }
            if a.generated.len() >= a.max_tokens {
                self.done(id, FinishReason::Length);
            } else if history_len + 1 >= max_context {
                self.done(id, FinishReason::ContextFull);
            } else {
                self.scheduler.append(id, token);
            }
        }
    }

    /// The token each sampling sequence of `step` draws from its row of `logits`, for the
    /// requests still open. On a GPU the rows without a logits processor are sampled there
    /// in one batch (only their ids come back); a row with a processor (JSON mode) is copied
    /// to the host, processed and sampled there.
    fn draw(&mut self, logits: &Tensor, step: &Step) -> crate::Result<Vec<(u64, u32)>> {
        let vocab = self.model.vocab_size();
        let rows: Vec<(usize, u64)> = step
            .seqs
            .iter()
            .filter(|s| s.sample)
            .enumerate()
            .map(|(row, s)| (row, s.seq))
            .filter(|(_, id)| self.requests.contains_key(id))
            .collect();
        let on_host = logits.device() == crate::Device::Cpu;
        let mut all = if on_host {
            Some(logits.to_vec::<f32>()?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(rows.len());
        let mut batched = Vec::new();
        for &(row, id) in &rows {
            let history = self.scheduler.tokens(id);
            let a = self.requests.get_mut(&id).expect("filtered above");
            if all.is_none() && a.processor.is_none() {
                batched.push((row, id));
                continue;
            }
            // Each row is used once: the processor and the sampler work on it in place.
            let mut copied;
            let logits_row: &mut [f32] = match all.as_mut() {
                Some(all) => &mut all[row * vocab..(row + 1) * vocab],
                None => {
                    copied = logits.narrow(0, row, 1)?.to_vec::<f32>()?;
                    &mut copied
                }
            };
            if let Some(p) = a.processor.as_mut() {
                p.process(&a.generated, logits_row);
            }
            out.push((row, id, a.sampler.sample(logits_row, history)));
        }
        if !batched.is_empty() {
            let x = if batched.len() == logits.dim(0)? {
                logits.clone()
            } else {
                let idx: Vec<u32> = batched.iter().map(|&(row, _)| row as u32).collect();
                let idx = Tensor::from_slice(&idx, &[idx.len()])?.to_device(logits.device())?;
                logits.embedding(&idx)?
            };
            let ids: std::collections::HashSet<u64> = batched.iter().map(|&(_, id)| id).collect();
            let mut samplers: HashMap<u64, &mut Sampler> = self
                .requests
                .iter_mut()
                .filter(|(id, _)| ids.contains(id))
                .map(|(id, a)| (*id, &mut a.sampler))
                .collect();
            let mut ordered: Vec<&mut Sampler> = Vec::with_capacity(batched.len());
            for (_, id) in &batched {
                ordered.push(samplers.remove(id).expect("open request"));
            }
            let histories: Vec<&[u32]> = batched
                .iter()
                .map(|&(_, id)| self.scheduler.tokens(id))
                .collect();
            let tokens = Sampler::sample_batch(&x, &mut ordered, &histories)?;
            out.extend(
                batched
                    .iter()
                    .zip(tokens)
                    .map(|(&(row, id), t)| (row, id, t)),
            );
        }
        out.sort_unstable_by_key(|&(row, _, _)| row);
        Ok(out.into_iter().map(|(_, id, t)| (id, t)).collect())
    }

    fn publish(&mut self) {
        self.stats.scheduler = self.scheduler.stats();
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.stats;
        }
    }
}
