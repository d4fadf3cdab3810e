//! Devices and backends. A backend implements the op set of `crate::op::Op`; `supports` is
//! honest: an unsupported case is an error, never a silent fallback to another device.

mod cpu;

use crate::dtype::DType;
use crate::error::Result;
use crate::op::Op;
use crate::tensor::Tensor;
pub use cpu::CpuBackend;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
}

impl Device {
    /// Parses "cpu" (and, once the CUDA backend lands, "cuda" / "cuda:N").
    pub fn parse(s: &str) -> Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            other if other.starts_with("cuda") => Err(crate::EngineError::Device(format!(
                "{other:?}: this build of kiln has no CUDA backend (build with --features cuda)"
            ))),
            other => Err(crate::EngineError::Device(format!(
                "unknown device {other:?} (expected cpu or cuda[:N])"
            ))),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
        }
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

pub fn backend_for(device: Device) -> &'static dyn Backend {
    match device {
        Device::Cpu => &CPU,
    }
}
