//! The caching device allocator: blocks are rounded up to a size class and, when a buffer
//! is dropped, go back to that class's free list instead of to the driver, so steady-state
//! decoding calls cuMemAlloc not at all. All work of a device runs on its one stream, so a
//! block freed by the host and handed out again is only touched by later work in stream
//! order: no event is needed before reuse.
//!
//! Debug hook for the equivalence suite: with `set_guard_bytes(n)`, every new allocation
//! gets `n` bytes before and after it filled with [`GUARD_SENTINEL`]; `check_guards` reads
//! them back, so a kernel writing outside its output is caught.

use super::device::{describe, lock, DeviceCtx};
use super::graph::GraphPoolInner;
use crate::error::{EngineError, Result};
use crate::memory::{self, format_bytes};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub const GUARD_SENTINEL: u8 = 0xA5;
static GUARD_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Puts `n` guard bytes (rounded up to 256, keeping alignment) around every later
/// allocation on every device; 0 turns guards off.
pub fn set_guard_bytes(n: usize) {
    GUARD_BYTES.store(n.div_ceil(256) * 256, Ordering::SeqCst);
}

/// Counters of one device's allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Blocks obtained from cuMemAlloc.
    pub driver_allocs: u64,
    /// Allocations served from the free lists.
    pub cache_hits: u64,
    /// Bytes in blocks handed out and not yet dropped.
    pub live_bytes: usize,
    /// Bytes in blocks on the free lists.
    pub cached_bytes: usize,
}

#[derive(Default)]
pub(crate) struct Allocator {
    free: HashMap<usize, Vec<u64>>,
    stats: AllocStats,
}

/// The size a request is rounded up to: powers of two up to 1 MiB, then steps of a
/// sixteenth of the next power of two (at most 12.5% waste).
fn size_class(bytes: usize) -> usize {
    let bytes = bytes.max(1);
    if bytes <= 1 << 20 {
        return bytes.next_power_of_two().max(256);
    }
    let step = bytes.next_power_of_two() / 16;
    bytes.div_ceil(step) * step
}

impl Allocator {
    pub fn stats(&self) -> AllocStats {
        self.stats
    }

    fn take(&mut self, class: usize) -> Option<u64> {
        let ptr = self.free.get_mut(&class)?.pop()?;
        self.stats.cache_hits += 1;
        self.stats.cached_bytes -= class;
        Some(ptr)
    }

    /// Returns every cached block to the driver (the stream must be idle).
    pub(super) fn release_cached(&mut self) {
        for (class, ptrs) in self.free.drain() {
            for p in ptrs {
                // A failed free leaks the block; nothing better to do with it here.
                let _ = unsafe { cu::free_sync(p) };
                self.stats.cached_bytes -= class;
            }
        }
    }
}

/// A block of device memory owned by one tensor storage; back to the cache on drop.
pub struct CudaBuffer {
    dev: Arc<DeviceCtx>,
    base: u64,
    class: usize,
    guard: usize,
    bytes: usize,
    /// The CUDA-graph pool the block belongs to (it goes back there, not to the cache).
    pool: Option<Arc<GraphPoolInner>>,
}

impl std::fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CudaBuffer(cuda:{}, {} bytes)",
            self.dev.ordinal, self.bytes
        )
    }
}

impl CudaBuffer {
    /// `bytes` of uninitialised device memory on `dev`.
    pub(crate) fn alloc(dev: &Arc<DeviceCtx>, bytes: usize) -> Result<CudaBuffer> {
        dev.bind()?;
        let guard = GUARD_BYTES.load(Ordering::SeqCst);
        let class = size_class(bytes + 2 * guard);
        let pool = super::graph::active_pool(dev.ordinal);
        let base = match &pool {
            Some(pool) => match pool.take(class) {
                Some(p) => p,
                None => {
                    let p = driver_alloc(dev, &mut lock(&dev.alloc), class, bytes)?;
                    pool.adopt(class, p);
                    p
                }
            },
            None => {
                let mut a = lock(&dev.alloc);
                let p = match a.take(class) {
                    Some(p) => p,
                    None => {
                        let p = driver_alloc(dev, &mut a, class, bytes)?;
                        a.stats.driver_allocs += 1;
                        p
                    }
                };
                a.stats.live_bytes += class;
                p
            }
        };
        let buf = CudaBuffer {
            dev: dev.clone(),
            base,
            class,
            guard,
            bytes,
            pool,
        };
        if guard > 0 {
            unsafe { cu::memset_d8_async(base, GUARD_SENTINEL, class, dev.stream()) }
                .map_err(|e| dev.async_err("cuMemsetD8Async (guard)", e))?;
        }
        Ok(buf)
    }

    /// The device address of the first usable byte.
    pub fn ptr(&self) -> u64 {
        self.base + self.guard as u64
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn device(&self) -> &Arc<DeviceCtx> {
        &self.dev
    }

    /// Checks the guard bytes around the buffer (none without `set_guard_bytes`).
    pub fn check_guards(&self) -> Result<()> {
        if self.guard == 0 {
            return Ok(());
        }
        let before = super::transfer::read_bytes(&self.dev, self.base, self.guard)?;
        let after_start = self.ptr() + self.bytes as u64;
        let after_len = self.class - self.guard - self.bytes;
        let after = super::transfer::read_bytes(&self.dev, after_start, after_len)?;
        let bad = |v: &[u8]| v.iter().position(|&b| b != GUARD_SENTINEL);
        if let Some(i) = bad(&before) {
            return Err(EngineError::Device(format!(
                "guard region overwritten {} bytes before a {}-byte buffer",
                self.guard - i,
                self.bytes
            )));
        }
        if let Some(i) = bad(&after) {
            return Err(EngineError::Device(format!(
                "guard region overwritten at byte {} past the end of a {}-byte buffer",
                i, self.bytes
            )));
        }
        Ok(())
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give_back(self.class, self.base);
            return;
        }
        let mut a = lock(&self.dev.alloc);
        a.stats.live_bytes -= self.class;
        a.stats.cached_bytes += self.class;
        a.free.entry(self.class).or_default().push(self.base);
    }
}

fn driver_alloc(dev: &DeviceCtx, a: &mut Allocator, class: usize, asked: usize) -> Result<u64> {
    if let Ok(p) = unsafe { cu::malloc_sync(class) } {
        return Ok(p);
    }
    // Out of memory (or another failure): give the cache back to the driver and retry once.
    let cached = a.stats.cached_bytes;
    unsafe { cu::stream::synchronize(dev.default_stream()) }
        .map_err(|e| dev.async_err("cuStreamSynchronize", e))?;
    a.release_cached();
    match unsafe { cu::malloc_sync(class) } {
        Ok(p) => Ok(p),
        Err(e) => {
            let device = crate::Device::Cuda(dev.ordinal);
            let free_total = cu::mem_get_info().ok();
            let head = if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
                memory::oom_message(device, asked, free_total)
            } else {
                format!("{device}: cuMemAlloc of {} failed", format_bytes(asked))
            };
            Err(EngineError::Device(format!(
                "{head} (a {} block; {} of kiln's cache was returned to the driver first; \
                 live tensors hold {}; {})",
                format_bytes(class),
                format_bytes(cached),
                format_bytes(a.stats.live_bytes),
                describe(e)
            )))
        }
    }
}

/// The allocator counters of an already opened device.
pub(crate) fn stats(dev: &DeviceCtx) -> AllocStats {
    lock(&dev.alloc).stats()
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_with_bounded_waste() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(257), 512);
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 17));
        for bytes in [3_000_000usize, 64 << 20, (64 << 20) + 1, 1_000_000_007] {
            let c = size_class(bytes);
            assert!(c >= bytes && (c - bytes) * 8 <= c, "{bytes} -> {c}");
            assert_eq!(size_class(c), c, "a class is its own class");
        }
    }
}
