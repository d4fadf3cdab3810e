//! CUDA graphs: a forward step captured once and replayed with one launch.
//!
//! A captured graph bakes in every device address its kernels touch, so:
//! - its buffers come from a [`GraphPool`], memory that only graph runs use: while a thread
//!   runs `with_pool` or `capture`, its allocations on that device are served from the pool
//!   and go back to it when dropped (never to the device cache, where other tensors would
//!   get them and a replay would overwrite them). Graphs sharing a pool must not run at the
//!   same time, which holds when one thread steps them on one stream;
//! - the capture runs on a private stream of the capturing thread, so other threads keep
//!   working on the device's stream meanwhile and none of their work lands in the graph;
//! - host <-> device copies and stream synchronisations inside a capture are refused with
//!   an error (their data would be read at capture time, not at replay).
//!
//! The caller owns the graph's inputs (fixed buffers it rewrites before each replay) and
//! keeps its outputs alive (they are pool memory the next replay overwrites).

use super::device::{device, lock, DeviceCtx};
use crate::error::{EngineError, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the calling thread is doing on a device: allocating from a pool, and capturing.
struct Active {
    ordinal: usize,
    pool: Arc<GraphPoolInner>,
    capture_stream: Option<sys::CUstream>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// The pool the calling thread allocates from on `ordinal`, if any.
pub(crate) fn active_pool(ordinal: usize) -> Option<Arc<GraphPoolInner>> {
    ACTIVE.with(|a| {
        a.borrow()
            .as_ref()
            .filter(|a| a.ordinal == ordinal)
            .map(|a| a.pool.clone())
    })
}

/// The stream the calling thread captures on, on `ordinal`.
pub(crate) fn capture_stream(ordinal: usize) -> Option<sys::CUstream> {
    ACTIVE.with(|a| {
        a.borrow()
            .as_ref()
            .filter(|a| a.ordinal == ordinal)
            .and_then(|a| a.capture_stream)
    })
}

pub(crate) fn capturing_on(ordinal: usize) -> bool {
    capture_stream(ordinal).is_some()
}

/// An error for `what` attempted inside a capture on `dev`.
pub(crate) fn refuse_in_capture(dev: &DeviceCtx, what: &str) -> Result<()> {
    if capturing_on(dev.ordinal) {
        return Err(EngineError::Device(format!(
            "cuda:{}: {what} inside a CUDA graph capture (its data would be fixed at capture \
             time); move it before the captured step",
            dev.ordinal
        )));
    }
    Ok(())
}

/// Blocks owned by a pool: the free ones by size class, and the count of all of them.
pub(crate) struct GraphPoolInner {
    dev: Arc<DeviceCtx>,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    free: HashMap<usize, Vec<u64>>,
    /// Every block the pool owns, for the final free.
    blocks: Vec<u64>,
    bytes: usize,
}

impl GraphPoolInner {
    /// A free block of `class` bytes.
    pub(crate) fn take(&self, class: usize) -> Option<u64> {
        lock(&self.state).free.get_mut(&class)?.pop()
    }

    /// Takes ownership of `ptr`, a block of `class` bytes just obtained from the driver.
    pub(crate) fn adopt(&self, class: usize, ptr: u64) {
        let mut s = lock(&self.state);
        s.bytes += class;
        s.blocks.push(ptr);
    }

    pub(crate) fn give_back(&self, class: usize, ptr: u64) {
        lock(&self.state).free.entry(class).or_default().push(ptr);
    }
}

impl Drop for GraphPoolInner {
    fn drop(&mut self) {
        // Every buffer and graph holding the pool is gone; replays may still be in flight.
        let _ = self.dev.bind();
        let _ = unsafe { cu::stream::synchronize(self.dev.default_stream()) };
        let s = lock(&self.state);
        for &ptr in &s.blocks {
            let _ = unsafe { cu::free_sync(ptr) };
        }
    }
}

/// Device memory for the buffers of captured graphs (see the module notes).
#[derive(Clone)]
pub struct GraphPool(Arc<GraphPoolInner>);

impl GraphPool {
    pub fn new(ordinal: usize) -> Result<GraphPool> {
        Ok(GraphPool(Arc::new(GraphPoolInner {
            dev: device(ordinal)?,
            state: Mutex::new(PoolState::default()),
        })))
    }

    /// Bytes of device memory the pool holds.
    pub fn bytes(&self) -> usize {
        lock(&self.0.state).bytes
    }

    pub fn ordinal(&self) -> usize {
        self.0.dev.ordinal
    }
}

/// Restores the thread's previous state when a pool scope ends, even on error.
struct Scope(Option<Active>);

impl Scope {
    fn enter(active: Active) -> Result<Scope> {
        ACTIVE.with(|a| {
            let mut a = a.borrow_mut();
            if a.is_some() {
                return Err(EngineError::Device(
                    "a CUDA graph pool is already active on this thread (nested capture)".into(),
                ));
            }
            *a = Some(active);
            Ok(Scope(None))
        })
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        ACTIVE.with(|a| *a.borrow_mut() = self.0.take());
    }
}

/// Runs `f` on the device's stream with this thread's allocations served from `pool`: the
/// warm-up run before a capture, which also loads every kernel module the step needs.
pub fn with_pool<T>(pool: &GraphPool, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let _scope = Scope::enter(Active {
        ordinal: pool.ordinal(),
        pool: pool.0.clone(),
        capture_stream: None,
    })?;
    f()
}

/// An instantiated graph; `launch` replays it on the device's stream.
pub struct CudaGraph {
    dev: Arc<DeviceCtx>,
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    /// Nodes captured (kernels and copies).
    nodes: usize,
    _pool: Arc<GraphPoolInner>,
}

// The handles are plain driver objects, usable from any thread with the context bound.
unsafe impl Send for CudaGraph {}
unsafe impl Sync for CudaGraph {}

impl CudaGraph {
    /// Queues one replay on the device's stream.
    pub fn launch(&self) -> Result<()> {
        self.dev.bind()?;
        unsafe { cu::graph::launch(self.exec, self.dev.default_stream()) }
            .map_err(|e| self.dev.async_err("cuGraphLaunch", e))
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        let _ = self.dev.bind();
        unsafe {
            let _ = cu::graph::exec_destroy(self.exec);
            let _ = cu::graph::destroy(self.graph);
        }
    }
}

/// Captures the work `f` queues on the pool's device into a graph, with every allocation
/// served from `pool`; nothing runs until the graph is launched. Returns the graph and what
/// `f` returned (its outputs: pool buffers each replay rewrites). `f` must have run once
/// already under [`with_pool`] so that the pool holds its buffers and its modules are
/// loaded.
pub fn capture<T>(pool: &GraphPool, f: impl FnOnce() -> Result<T>) -> Result<(CudaGraph, T)> {
    let dev = pool.0.dev.clone();
    dev.bind()?;
    let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking)
        .map_err(|e| dev.err("cuStreamCreate (capture)", e))?;
    let result = capture_on(&dev, pool, stream, f);
    let _ = unsafe { cu::stream::destroy(stream) };
    result
}

fn capture_on<T>(
    dev: &Arc<DeviceCtx>,
    pool: &GraphPool,
    stream: sys::CUstream,
    f: impl FnOnce() -> Result<T>,
) -> Result<(CudaGraph, T)> {
    let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
    unsafe { cu::stream::begin_capture(stream, mode) }
        .map_err(|e| dev.err("cuStreamBeginCapture", e))?;
    let out = {
        let _scope = Scope::enter(Active {
            ordinal: dev.ordinal,
            pool: pool.0.clone(),
            capture_stream: Some(stream),
        });
        match _scope {
            Ok(_s) => f(),
            Err(e) => Err(e),
        }
    };
    // The capture must end whatever happened, or the stream stays unusable.
    let ended = unsafe { cu::stream::end_capture(stream) };
    let graph = match (out, ended) {
        (Ok(v), Ok(g)) => (v, g),
        (Err(e), Ok(g)) => {
            let _ = unsafe { cu::graph::destroy(g) };
            return Err(e);
        }
        (Err(e), Err(_)) => return Err(e),
        (Ok(_), Err(e)) => {
            return Err(EngineError::Device(format!(
                "cuda:{}: CUDA graph capture failed: {} (set KILN_CUDA_GRAPHS=0 to run without \
                 graphs)",
                dev.ordinal,
                super::device::describe(e)
            )))
        }
    };
    let (value, g) = graph;
    let mut nodes = 0usize;
    unsafe { sys::cuGraphGetNodes(g, std::ptr::null_mut(), &mut nodes) }
        .result()
        .map_err(|e| dev.err("cuGraphGetNodes", e))?;
    let flags = sys::CUgraphInstantiate_flags(0);
    let exec = match unsafe { cu::graph::instantiate(g, flags) } {
        Ok(x) => x,
        Err(e) => {
            let _ = unsafe { cu::graph::destroy(g) };
            return Err(dev.err("cuGraphInstantiate", e));
        }
    };
    Ok((
        CudaGraph {
            dev: dev.clone(),
            graph: g,
            exec,
            nodes,
            _pool: pool.0.clone(),
        },
        value,
    ))
}
