//! Devices and backends. A backend implements the op set of `crate::op::Op`; `supports` is
//! honest: an unsupported case is an error, never a silent fallback to another device.

mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::dtype::DType;
use crate::error::Result;
use crate::op::Op;
use crate::tensor::Tensor;
pub use cpu::CpuBackend;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// A CUDA device by ordinal (tensors live there only in builds with feature `cuda`).
    Cuda(usize),
}

impl Device {
    /// Parses "cpu", "cuda" (= "cuda:0") and "cuda:N". Without feature `cuda`, a CUDA device
    /// is an error saying so.
    pub fn parse(s: &str) -> Result<Device> {
        let cuda = match s {
            "cpu" => return Ok(Device::Cpu),
            "cuda" => Some(0),
            other => other
                .strip_prefix("cuda:")
                .map(|n| {
                    n.parse::<usize>().map_err(|_| {
                        crate::EngineError::Device(format!(
                            "{other:?}: bad CUDA device ordinal {n:?} (expected cuda:N, N >= 0)"
                        ))
                    })
                })
                .transpose()?,
        };
        match cuda {
            Some(n) if cfg!(feature = "cuda") => Ok(Device::Cuda(n)),
            Some(_) => Err(crate::EngineError::Device(format!(
                "{s:?}: this build of kiln has no CUDA backend (build with --features cuda)"
            ))),
            None => Err(crate::EngineError::Device(format!(
                "unknown device {s:?} (expected cpu or cuda[:N])"
            ))),
        }
    }

    /// Whether this device can be used: always for the CPU; for CUDA, a driver and the
    /// device `N` exist (and the build has the CUDA backend).
    pub fn is_available(&self) -> bool {
        match self {
            Device::Cpu => true,
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => cuda::device_count().is_ok_and(|c| *n < c),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => false,
        }
    }

    /// (free, total) bytes of the device's memory; `None` for the CPU (host memory is not
    /// tracked).
    pub fn memory_info(&self) -> Result<Option<(usize, usize)>> {
        match self {
            Device::Cpu => Ok(None),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => cuda::memory_info(*n).map(Some),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(no_cuda()),
        }
    }

    /// Waits for all work queued on the device (a no-op on the CPU, whose ops are
    /// synchronous).
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => cuda::synchronize(*n),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(no_cuda()),
        }
    }
}

#[cfg(not(feature = "cuda"))]
pub(crate) fn no_cuda() -> crate::EngineError {
    crate::EngineError::Device(
        "this build of kiln has no CUDA backend (build with --features cuda)".into(),
    )
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Validates a pure op for `backend`: its output shape and dtype, or `Unsupported` naming the
/// op, the backend and the input dtypes (never a silent fallback).
pub(crate) fn check_supported(
    backend: &dyn Backend,
    op: &Op,
    inputs: &[&Tensor],
) -> Result<(Vec<usize>, DType)> {
    let out = op.check(inputs)?;
    let dtypes: Vec<DType> = inputs.iter().map(|t| t.dtype()).collect();
    if backend.supports(op, &dtypes) {
        Ok(out)
    } else {
        Err(crate::EngineError::Unsupported {
            op: op.name(),
            backend: backend.name(),
            dtypes,
        })
    }
}

pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether `op` runs here with inputs of these dtypes.
    fn supports(&self, op: &Op, dtypes: &[DType]) -> bool;
    /// Runs a pure op: new output tensor.
    fn execute(&self, op: &Op, inputs: &[&Tensor]) -> Result<Tensor>;
    /// Runs an in-place op writing into `dst`.
    fn execute_inplace(&self, op: &Op, dst: &mut Tensor, inputs: &[&Tensor]) -> Result<()>;
}

static CPU: CpuBackend = CpuBackend;
#[cfg(feature = "cuda")]
static CUDA: cuda::CudaBackend = cuda::CudaBackend;

/// The backend of a device. Without feature `cuda` no tensor can live on a CUDA device, and
/// asking for its backend gives one whose every op is an error.
pub fn backend_for(device: Device) -> &'static dyn Backend {
    match device {
        Device::Cpu => &CPU,
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => &CUDA,
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => &NoCuda,
    }
}

/// Stand-in for the CUDA backend in builds without it.
#[cfg(not(feature = "cuda"))]
struct NoCuda;

#[cfg(not(feature = "cuda"))]
impl Backend for NoCuda {
    fn name(&self) -> &'static str {
        "cuda (not built)"
    }
    fn supports(&self, _op: &Op, _dtypes: &[DType]) -> bool {
        false
    }
    fn execute(&self, _op: &Op, _inputs: &[&Tensor]) -> Result<Tensor> {
        Err(no_cuda())
    }
    fn execute_inplace(&self, _op: &Op, _dst: &mut Tensor, _inputs: &[&Tensor]) -> Result<()> {
        Err(no_cuda())
    }
}

#[cfg(test)]
mod tests {
    use super::Device;

    #[test]
    fn parse_and_display() {
        assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
        assert_eq!(Device::Cpu.to_string(), "cpu");
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        assert!(Device::parse("cuda:x").is_err());
        assert!(Device::parse("tpu").is_err());
        assert!(Device::Cpu.is_available());
        assert!(Device::Cpu.synchronize().is_ok());
        if cfg!(feature = "cuda") {
            assert_eq!(Device::parse("cuda").unwrap(), Device::Cuda(0));
            assert_eq!(Device::parse("cuda:2").unwrap(), Device::Cuda(2));
        } else {
            let e = Device::parse("cuda:0").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
            assert!(!Device::Cuda(0).is_available());
        }
    }
}
