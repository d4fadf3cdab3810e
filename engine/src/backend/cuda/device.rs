//! Driver start-up and the per-device state: one primary context and one stream per device,
//! created on first use and kept for the life of the process (cached by ordinal).

use super::alloc::Allocator;
use super::transfer::Staging;
use crate::error::{EngineError, Result};
use cudarc::driver::result::{self as cu, DriverError};
use cudarc::driver::sys;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The driver handles of one device. Driver handles are usable from any thread once the
/// context is current there (`bind`), so sharing them is sound.
pub(crate) struct DeviceCtx {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability as major * 10 + minor.
    pub arch: u32,
    pub sm_count: u32,
    ctx: sys::CUcontext,
    /// The device's stream; [`DeviceCtx::stream`] is what work is queued on.
    default_stream: sys::CUstream,
    pub alloc: Mutex<Allocator>,
    pub staging: Mutex<Staging>,
    /// Loaded modules and resolved kernels, by name.
    pub modules: Mutex<HashMap<&'static str, sys::CUmodule>>,
    pub functions: Mutex<HashMap<&'static str, sys::CUfunction>>,
    /// The most recent kernel launched: an asynchronous fault surfaces at the next
    /// synchronising call, and this names the likely culprit.
    pub last_kernel: Mutex<&'static str>,
}

unsafe impl Send for DeviceCtx {}
unsafe impl Sync for DeviceCtx {}

/// Locks a mutex, recovering the data of a poisoned one (a panic elsewhere must not turn
/// every later CUDA call into a panic).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DeviceCtx {
    /// Makes this device's context current on the calling thread.
    pub fn bind(&self) -> Result<()> {
        unsafe { cu::ctx::set_current(self.ctx) }.map_err(|e| self.err("cuCtxSetCurrent", e))
    }

    /// An error from driver call `what` on this device.
    pub fn err(&self, what: &str, e: DriverError) -> EngineError {
        EngineError::Device(format!("cuda:{}: {what}: {}", self.ordinal, describe(e)))
    }

    /// An error that may have been caused asynchronously by an earlier kernel.
    pub fn async_err(&self, what: &str, e: DriverError) -> EngineError {
        let last = *lock(&self.last_kernel);
        let hint = if last.is_empty() {
            String::new()
        } else {
            format!(" (last kernel launched: {last}; set KILN_CUDA_SYNC=1 to check each launch)")
        };
        EngineError::Device(format!(
            "cuda:{}: {what}: {}{hint}",
            self.ordinal,
            describe(e)
        ))
    }

    /// Waits for all work queued on this device's stream.
    pub fn synchronize(&self) -> Result<()> {
        self.bind()?;
        if super::graph::capturing_on(self.ordinal) {
            return Err(EngineError::Device(format!(
                "cuda:{}: a stream synchronize inside a CUDA graph capture",
                self.ordinal
            )));
        }
        unsafe { cu::stream::synchronize(self.stream()) }
            .map_err(|e| self.async_err("cuStreamSynchronize", e))
    }

    /// The stream work is queued on: the device's stream, or the capture stream while the
    /// calling thread captures a CUDA graph on this device.
    pub fn stream(&self) -> sys::CUstream {
        super::graph::capture_stream(self.ordinal).unwrap_or(self.default_stream)
    }

    /// The device's own stream (graph replays and anything not being captured).
    pub fn default_stream(&self) -> sys::CUstream {
        self.default_stream
    }

    /// (free, total) device memory in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.bind()?;
        cu::mem_get_info().map_err(|e| self.err("cuMemGetInfo", e))
    }
}

pub(crate) fn describe(e: DriverError) -> String {
    let name = e
        .error_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(s) => format!("{name} ({})", s.to_string_lossy()),
        Err(_) => name,
    }
}

/// Loads libcuda and initialises the driver once; the number of devices, or why not.
pub(crate) fn device_count() -> Result<usize> {
    static COUNT: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    COUNT
        .get_or_init(|| {
            // cudarc panics on the first driver call when libcuda is missing: look first.
            if !unsafe { sys::is_culib_present() } {
                return Err(
                    "no CUDA driver: libcuda.so could not be loaded (no NVIDIA driver on this machine)"
                        .to_string(),
                );
            }
            cu::init().map_err(|e| format!("no CUDA device: cuInit failed: {}", describe(e)))?;
            let n = cu::device::get_count()
                .map_err(|e| format!("no CUDA device: cuDeviceGetCount: {}", describe(e)))?;
            Ok(n.max(0) as usize)
        })
        .clone()
        .map_err(EngineError::Device)
}

/// The state of device `ordinal`, created on first use.
pub(crate) fn device(ordinal: usize) -> Result<Arc<DeviceCtx>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<DeviceCtx>>>> = OnceLock::new();
    let mut devices = lock(DEVICES.get_or_init(Default::default));
    if let Some(d) = devices.get(&ordinal) {
        return Ok(d.clone());
    }
    let d = Arc::new(open(ordinal)?);
    devices.insert(ordinal, d.clone());
    Ok(d)
}

fn open(ordinal: usize) -> Result<DeviceCtx> {
    let count = device_count()?;
    if count == 0 {
        return Err(EngineError::Device(
            "no CUDA device: the driver is loaded but reports 0 devices".into(),
        ));
    }
    if ordinal >= count {
        return Err(EngineError::Device(format!(
            "no CUDA device cuda:{ordinal}: this machine has {count} device{} (cuda:0..cuda:{})",
            if count == 1 { "" } else { "s" },
            count - 1
        )));
    }
    let fail = |what: &str, e: DriverError| {
        EngineError::Device(format!("cuda:{ordinal}: {what}: {}", describe(e)))
    };
    let dev = cu::device::get(ordinal as i32).map_err(|e| fail("cuDeviceGet", e))?;
    let attr = |a: sys::CUdevice_attribute| {
        unsafe { cu::device::get_attribute(dev, a) }.map_err(|e| fail("cuDeviceGetAttribute", e))
    };
    use sys::CUdevice_attribute as A;
    let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let sm_count = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as u32;
    let name = cu::device::get_name(dev).map_err(|e| fail("cuDeviceGetName", e))?;
    let arch = (major * 10 + minor).max(0) as u32;
    check_arch(ordinal, &name, major, minor)?;
    let ctx =
        unsafe { cu::primary_ctx::retain(dev) }.map_err(|e| fail("cuDevicePrimaryCtxRetain", e))?;
    unsafe { cu::ctx::set_current(ctx) }.map_err(|e| fail("cuCtxSetCurrent", e))?;
    let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking)
        .map_err(|e| fail("cuStreamCreate", e))?;
    Ok(DeviceCtx {
        ordinal,
        name,
        arch,
        sm_count,
        ctx,
        default_stream: stream,
        alloc: Mutex::new(Allocator::default()),
        staging: Mutex::new(Staging::default()),
        modules: Mutex::new(HashMap::new()),
        functions: Mutex::new(HashMap::new()),
        last_kernel: Mutex::new(""),
    })
}

/// The embedded fatbins carry SASS for a few archs and compute_80 PTX the driver can JIT for
/// any newer card; an older card can run none of it.
fn check_arch(ordinal: usize, name: &str, major: i32, minor: i32) -> Result<()> {
    let arch = (major * 10 + minor).max(0) as u32;
    let ptx = kiln_kernels::cuda::PTX_ARCH;
    if arch >= ptx {
        return Ok(());
    }
    let sass: Vec<String> = kiln_kernels::cuda::modules()
        .first()
        .map(|m| m.archs.iter().map(|a| format!("sm_{a}")).collect())
        .unwrap_or_default();
    Err(EngineError::Device(format!(
        "cuda:{ordinal} ({name}) has compute capability {major}.{minor} (sm_{arch}): kiln's kernels \
         are compiled for {} and PTX compute_{ptx}, which needs compute capability >= {}.{}",
        sass.join(", "),
        ptx / 10,
        ptx % 10
    )))
}
