//! Loading the embedded fatbins (lazily, once per device) and launching kernels with their
//! one by-value params struct. Every launch is checked; with `KILN_CUDA_SYNC=1` (or
//! `set_sync_launches(true)`) each launch is also waited for, so an asynchronous fault is
//! reported with the kernel that caused it.

use super::device::{lock, DeviceCtx};
use crate::error::{EngineError, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicU8, Ordering};

/// 0: not read yet, 1: off, 2: on.
static SYNC_LAUNCHES: AtomicU8 = AtomicU8::new(0);

/// Waits for every kernel right after launching it (slow; for debugging and tests).
pub fn set_sync_launches(on: bool) {
    SYNC_LAUNCHES.store(if on { 2 } else { 1 }, Ordering::SeqCst);
}

fn sync_launches() -> bool {
    match SYNC_LAUNCHES.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("KILN_CUDA_SYNC").is_ok_and(|v| v != "0" && !v.is_empty());
            set_sync_launches(on);
            on
        }
        v => v == 2,
    }
}

/// Dynamic shared memory a kernel may use without opting in.
const DEFAULT_SHARED_LIMIT: u32 = 48 * 1024;

/// Grid and block of one launch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub grid: (u32, u32, u32),
    pub block: u32,
    pub shared_bytes: u32,
}

impl Shape {
    pub fn linear(blocks: u32, threads: u32) -> Shape {
        Shape {
            grid: (blocks.max(1), 1, 1),
            block: threads,
            shared_bytes: 0,
        }
    }
}

fn function(
    dev: &DeviceCtx,
    module: &'static str,
    kernel: &'static str,
) -> Result<sys::CUfunction> {
    if let Some(&f) = lock(&dev.functions).get(kernel) {
        return Ok(f);
    }
    let m = kiln_kernels::cuda::module(module).ok_or_else(|| {
        EngineError::Device(format!(
            "no CUDA module {module:?} compiled into this build"
        ))
    })?;
    if !m.kernels.contains(&kernel) {
        return Err(EngineError::Device(format!(
            "kernel {kernel} is not in module {module} (it has {:?})",
            m.kernels
        )));
    }
    let handle = {
        let mut modules = lock(&dev.modules);
        match modules.get(module) {
            Some(&h) => h,
            None => {
                let h = unsafe { cu::module::load_data(m.fatbin.as_ptr() as *const c_void) }
                    .map_err(|e| {
                        let archs: Vec<String> = m.archs.iter().map(|a| format!("sm_{a}")).collect();
                        EngineError::Device(format!(
                            "cuda:{} ({}, sm_{}): loading kernels {module}: {} (the fatbin has SASS for {} and PTX compute_{})",
                            dev.ordinal,
                            dev.name,
                            dev.arch,
                            super::device::describe(e),
                            archs.join(", "),
                            kiln_kernels::cuda::PTX_ARCH
                        ))
                    })?;
                modules.insert(module, h);
                h
            }
        }
    };
    let name = CString::new(kernel).map_err(|e| EngineError::Device(e.to_string()))?;
    let f = unsafe { cu::module::get_function(handle, name) }
        .map_err(|e| dev.err(&format!("cuModuleGetFunction({kernel})"), e))?;
    lock(&dev.functions).insert(kernel, f);
    Ok(f)
}

/// Launches `kernel` of `cuda/<module>.cu` with `params` as its only argument.
/// `P` must be the `#[repr(C)]` twin of the kernel's params struct (kiln_kernels::cuda::params).
pub(crate) fn launch<P: Copy>(
    dev: &DeviceCtx,
    module: &'static str,
    kernel: &'static str,
    shape: Shape,
    params: P,
) -> Result<()> {
    dev.bind()?;
    let f = function(dev, module, kernel)?;
    if shape.shared_bytes > DEFAULT_SHARED_LIMIT {
        // Above 48 KiB of dynamic shared memory a kernel must opt in (per function; cheap
        // enough to repeat, and the limit then always matches this launch).
        let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        unsafe { cu::function::set_function_attribute(f, attr, shape.shared_bytes as i32) }
            .map_err(|e| {
                EngineError::Device(format!(
                    "cuda:{}: {kernel} needs {} B of shared memory: {}",
                    dev.ordinal,
                    shape.shared_bytes,
                    super::device::describe(e)
                ))
            })?;
    }
    let mut params = params;
    let mut args = [&mut params as *mut P as *mut c_void];
    *lock(&dev.last_kernel) = kernel;
    unsafe {
        cu::launch_kernel(
            f,
            shape.grid,
            (shape.block, 1, 1),
            shape.shared_bytes,
            dev.stream(),
            &mut args,
        )
    }
    .map_err(|e| {
        EngineError::Device(format!(
            "cuda:{}: launching {kernel} (grid {:?}, block {}, {} B shared): {}",
            dev.ordinal,
            shape.grid,
            shape.block,
            shape.shared_bytes,
            super::device::describe(e)
        ))
    })?;
    if sync_launches() && !super::graph::capturing_on(dev.ordinal) {
        unsafe { cu::stream::synchronize(dev.stream()) }.map_err(|e| {
            EngineError::Device(format!(
                "cuda:{}: kernel {kernel} failed: {}",
                dev.ordinal,
                super::device::describe(e)
            ))
        })?;
    }
    Ok(())
}
