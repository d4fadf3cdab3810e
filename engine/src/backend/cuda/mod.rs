//! The CUDA backend (feature `cuda`): the driver API through cudarc, loaded at run time, so
//! this builds and links with no CUDA installed; every entry point reports "no CUDA driver"
//! / "no CUDA device" as an error instead of panicking.
//!
//! - `device`: driver start-up, one context + one stream per device, cached by ordinal;
//! - `alloc`: the caching device allocator (and the guard-region hook of the test suite);
//! - `transfer`: pinned staging for host <-> device copies, 2D-memcpy strided gathers;
//! - `launch`: lazy module loading and checked kernel launches;
//! - `ops`: the op set on CUDA tensors and the strided-copy kernel behind `contiguous()`
//!   (`ops_attention`, `ops_matmul`, `ops_paged`, `ops_sample` for the larger launchers).
//!
//! The public functions here serve benchmarks and tools: device names, memory, timing.

mod alloc;
mod device;
mod graph;
mod launch;
mod ops;
mod ops_attention;
mod ops_gemm;
mod ops_matmul;
mod ops_paged;
mod ops_sample;
mod transfer;

pub use alloc::{set_guard_bytes, AllocStats, CudaBuffer, GUARD_SENTINEL};
pub use graph::{capture, with_pool, CudaGraph, GraphPool};
pub use launch::set_sync_launches;
pub use ops_matmul::{gemm_variant, gemm_variants, set_gemm_variant, GemmVariant};
pub use ops_paged::{
    attn_variant, attn_variants, attn_wgmma_unavailable, set_attn_variant, AttnVariant,
    AUTO_USES_WGMMA,
};

use crate::backend::Device;
use crate::dtype::DType;
use crate::error::{EngineError, Result};
use crate::storage::CpuStorage;
use crate::tensor::{Storage, Tensor};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use device::DeviceCtx;
use std::sync::Arc;

pub use ops::CudaBackend;

/// Device memory behind a CUDA tensor.
pub struct CudaStorage {
    buf: CudaBuffer,
    dtype: DType,
    /// Elements held.
    len: usize,
}

impl CudaStorage {
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn ordinal(&self) -> usize {
        self.buf.device().ordinal
    }

    /// Device address of element 0.
    pub fn device_ptr(&self) -> u64 {
        self.buf.ptr()
    }

    pub(crate) fn device_ctx(&self) -> &Arc<DeviceCtx> {
        self.buf.device()
    }

    /// A fresh, uninitialised buffer of `n` elements.
    pub(crate) fn alloc(dev: &Arc<DeviceCtx>, dtype: DType, n: usize) -> Result<CudaStorage> {
        let bytes = transfer::byte_len(dtype, n)?;
        Ok(CudaStorage {
            buf: CudaBuffer::alloc(dev, bytes)?,
            dtype,
            len: n,
        })
    }
}

/// Whether a CUDA driver and at least one device are present.
pub fn is_available() -> bool {
    device::device_count().is_ok_and(|n| n > 0)
}

/// Number of CUDA devices, or why there are none usable (no driver, cuInit failed).
pub fn device_count() -> Result<usize> {
    device::device_count()
}

/// "NVIDIA H100 80GB HBM3" for `cuda:ordinal`.
pub fn device_name(ordinal: usize) -> Result<String> {
    Ok(device::device(ordinal)?.name.clone())
}

/// (major, minor) compute capability of `cuda:ordinal`.
pub fn compute_capability(ordinal: usize) -> Result<(u32, u32)> {
    let a = device::device(ordinal)?.arch;
    Ok((a / 10, a % 10))
}

/// Number of streaming multiprocessors of `cuda:ordinal`.
pub fn sm_count(ordinal: usize) -> Result<u32> {
    Ok(device::device(ordinal)?.sm_count)
}

/// (free, total) bytes of device memory of `cuda:ordinal` (cuMemGetInfo).
pub fn memory_info(ordinal: usize) -> Result<(usize, usize)> {
    device::device(ordinal)?.memory_info()
}

/// Counters of the caching allocator of `cuda:ordinal`.
pub fn alloc_stats(ordinal: usize) -> Result<AllocStats> {
    let dev = device::device(ordinal)?;
    Ok(alloc::stats(&dev))
}

/// Waits until all work queued on `cuda:ordinal` has finished.
pub fn synchronize(ordinal: usize) -> Result<()> {
    device::device(ordinal)?.synchronize()
}

/// Runs `f` (which queues work on `cuda:ordinal`, e.g. tensor ops) and returns the device
/// time between its first and last queued command, in milliseconds, measured with CUDA
/// events on the device stream. Waits for the work to finish.
pub fn time_ms<F: FnMut() -> Result<()>>(ordinal: usize, mut f: F) -> Result<f32> {
    let dev = device::device(ordinal)?;
    dev.bind()?;
    let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
    let start = cu::event::create(flags).map_err(|e| dev.err("cuEventCreate", e))?;
    let end = match cu::event::create(flags) {
        Ok(e) => e,
        Err(e) => {
            let _ = unsafe { cu::event::destroy(start) };
            return Err(dev.err("cuEventCreate", e));
        }
    };
    let timed = (|| {
        unsafe { cu::event::record(start, dev.stream()) }
            .map_err(|e| dev.err("cuEventRecord", e))?;
        f()?;
        dev.bind()?;
        unsafe { cu::event::record(end, dev.stream()) }.map_err(|e| dev.err("cuEventRecord", e))?;
        unsafe { cu::event::synchronize(end) }
            .map_err(|e| dev.async_err("cuEventSynchronize", e))?;
        unsafe { cu::event::elapsed(start, end) }.map_err(|e| dev.err("cuEventElapsedTime", e))
    })();
    unsafe {
        let _ = cu::event::destroy(start);
        let _ = cu::event::destroy(end);
    }
    timed
}

/// Checks the guard bytes around `t`'s device buffer (see [`set_guard_bytes`]).
pub fn check_guards(t: &Tensor) -> Result<()> {
    match t.storage() {
        Storage::Cuda(s) => {
            s.device_ctx().synchronize()?;
            s.buf.check_guards()
        }
        Storage::Cpu(_) => Err(EngineError::Device(
            "check_guards: the tensor is on the CPU".into(),
        )),
    }
}

/// The storage of a CUDA tensor.
pub(crate) fn cuda_storage<'a>(t: &'a Tensor, op: &str) -> Result<&'a CudaStorage> {
    match t.storage() {
        Storage::Cuda(s) => Ok(s),
        Storage::Cpu(_) => Err(EngineError::Device(format!(
            "{op}: an input is on the CPU while the op runs on CUDA; move it with to_device"
        ))),
    }
}

/// Device address of the first element of `t`'s view.
pub(crate) fn view_ptr(t: &Tensor, s: &CudaStorage) -> u64 {
    s.device_ptr() + t.dtype().storage_bytes(t.layout().offset()) as u64
}

/// A zero-filled tensor on `cuda:ordinal`.
pub(crate) fn zeros(shape: &[usize], dtype: DType, ordinal: usize) -> Result<Tensor> {
    let dev = device::device(ordinal)?;
    let n: usize = shape.iter().product();
    let s = CudaStorage::alloc(&dev, dtype, n)?;
    let bytes = s.buf.bytes();
    if bytes > 0 {
        unsafe { cu::memset_d8_async(s.device_ptr(), 0, bytes, dev.stream()) }
            .map_err(|e| dev.async_err("cuMemsetD8Async", e))?;
    }
    Ok(Tensor::from_storage(Storage::Cuda(s), shape))
}

/// A dense copy of a CUDA tensor on the same device.
pub(crate) fn copy_contiguous(t: &Tensor) -> Result<Tensor> {
    let s = cuda_storage(t, "contiguous")?;
    let dev = s.device_ctx().clone();
    let n = t.elem_count();
    let out = CudaStorage::alloc(&dev, t.dtype(), n)?;
    let src = view_ptr(t, s);
    if t.is_contiguous() {
        transfer::copy_d2d(&dev, out.device_ptr(), src, out.buf.bytes())?;
    } else if t.dtype().is_quantized() {
        return Err(EngineError::Data(
            "a strided view of a quantized CUDA tensor cannot be made contiguous".into(),
        ));
    } else {
        let elem = t.dtype().block_bytes();
        let strides = t.layout().strides();
        ops::copy_strided(&dev, out.device_ptr(), src, t.shape(), strides, elem)?;
    }
    Ok(Tensor::from_storage(Storage::Cuda(out), t.shape()))
}

/// `t` copied to `device` (contiguous there). Same device: a cheap clone.
pub(crate) fn to_device(t: &Tensor, device: Device) -> Result<Tensor> {
    match (t.device(), device) {
        (a, b) if a == b => Ok(t.clone()),
        (Device::Cpu, Device::Cuda(ordinal)) => {
            let dev = device::device(ordinal)?;
            let src = t.contiguous()?;
            let bytes = src.raw_bytes()?;
            let buf = transfer::upload(&dev, bytes)?;
            let s = CudaStorage {
                buf,
                dtype: t.dtype(),
                len: t.elem_count(),
            };
            Ok(Tensor::from_storage(Storage::Cuda(s), t.shape()))
        }
        (Device::Cuda(_), Device::Cpu) => {
            let dense = t.contiguous()?;
            let s = cuda_storage(&dense, "to_device")?;
            let mut host = CpuStorage::zeros(t.dtype(), t.elem_count());
            let dst = host.bytes_mut().ok_or_else(|| {
                EngineError::Data("to_device: host storage is not writable".into())
            })?;
            transfer::read_into(s.device_ctx(), view_ptr(&dense, s), dst)?;
            Ok(Tensor::from_storage(Storage::Cpu(host), t.shape()))
        }
        (Device::Cuda(_), Device::Cuda(_)) => t.to_device(Device::Cpu)?.to_device(device),
        (Device::Cpu, Device::Cpu) => Ok(t.clone()),
    }
}

/// In-place copy-on-write support: the device of a CUDA tensor's storage.
pub(crate) fn storage_device(s: &CudaStorage) -> Device {
    Device::Cuda(s.ordinal())
}

/// Overwrites the contiguous CUDA tensor `t` with host `bytes` (enqueued on the device's
/// stream; `bytes` may be dropped on return): how a graph's fixed inputs get each step's data.
pub fn write_host_bytes(t: &Tensor, bytes: &[u8]) -> Result<()> {
    let s = cuda_storage(t, "write_host_bytes")?;
    let want = t.dtype().storage_bytes(t.elem_count());
    if !t.is_contiguous() || bytes.len() != want {
        return Err(EngineError::Data(format!(
            "write_host_bytes: {} bytes into a {}tensor of {want} bytes",
            bytes.len(),
            if t.is_contiguous() { "" } else { "strided " }
        )));
    }
    transfer::write_bytes(s.device_ctx(), view_ptr(t, s), bytes)
}

/// A dense copy of the CUDA tensor `t` in fresh memory of the device cache.
pub fn fresh_copy(t: &Tensor) -> Result<Tensor> {
    copy_contiguous(t)
}
