//! Replayed forward steps: a step function over fixed-shape u32 inputs (token ids,
//! positions, paging metadata) run through a CUDA graph captured the first time its shape
//! is seen, so a decode step costs one launch instead of hundreds.
//!
//! The caller pads its batch to a few shapes (the graph key) and hands the host data of each
//! input; `StepGraphs` keeps one set of device input buffers per key, rewrites them before
//! each replay, and returns fresh copies of the step's outputs (the graph's own output
//! buffers are rewritten by the next replay).
//!
//! On the CPU, and with `KILN_CUDA_GRAPHS=0`, nothing is captured: an enabled `StepGraphs`
//! runs the same fixed-shape step eagerly, which is how the padding logic of a model is
//! tested without a GPU.

use crate::{DType, Device, EngineError, Result, Tensor};
use std::collections::HashMap;

/// The step: inputs (on the device, in the order given to `run`) -> outputs.
pub type StepFn<'a> = dyn FnMut(&[Tensor]) -> Result<Vec<Tensor>> + 'a;

struct Entry {
    inputs: Vec<Tensor>,
    #[cfg(feature = "cuda")]
    graph: Option<(crate::backend::cuda::CudaGraph, Vec<Tensor>)>,
}

pub struct StepGraphs {
    device: Device,
    enabled: bool,
    entries: HashMap<Vec<usize>, Entry>,
    #[cfg(feature = "cuda")]
    pool: Option<crate::backend::cuda::GraphPool>,
    captured: usize,
    replays: u64,
}

/// A disabled, empty set (for `std::mem::take`).
impl Default for StepGraphs {
    fn default() -> Self {
        StepGraphs::new(Device::Cpu)
    }
}

/// Graphs are on for CUDA devices unless `KILN_CUDA_GRAPHS=0`.
fn default_enabled(device: Device) -> bool {
    matches!(device, Device::Cuda(_))
        && std::env::var("KILN_CUDA_GRAPHS").map_or(true, |v| v.trim() != "0")
}

impl StepGraphs {
    pub fn new(device: Device) -> StepGraphs {
        StepGraphs {
            device,
            enabled: default_enabled(device),
            entries: HashMap::new(),
            #[cfg(feature = "cuda")]
            pool: None,
            captured: 0,
            replays: 0,
        }
    }

    /// Whether the caller should take its fixed-shape (graph) path.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Turns the fixed-shape path on or off (on the CPU it runs eagerly: for tests).
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    /// Graphs captured so far.
    pub fn captured(&self) -> usize {
        self.captured
    }

    /// Steps run by replaying a graph.
    pub fn replays(&self) -> u64 {
        self.replays
    }

    /// Runs `step` over `inputs` (host data and shape of each u32 input) for the shape class
    /// `key`: eagerly on the CPU; on CUDA by replaying the key's graph, captured on first use
    /// after one eager warm-up run (whose results are returned). The same key must always
    /// come with the same input shapes.
    pub fn run(
        &mut self,
        key: &[usize],
        inputs: &[(&[u32], &[usize])],
        step: &mut StepFn<'_>,
    ) -> Result<Vec<Tensor>> {
        let device = self.device;
        if !self.entries.contains_key(key) {
            let fixed = inputs
                .iter()
                .map(|(_, shape)| Tensor::zeros(shape, DType::U32, device))
                .collect::<Result<Vec<_>>>()?;
            self.entries.insert(
                key.to_vec(),
                Entry {
                    inputs: fixed,
                    #[cfg(feature = "cuda")]
                    graph: None,
                },
            );
        }
        let entry = self.entries.get_mut(key).expect("inserted above");
        if entry.inputs.len() != inputs.len() {
            return Err(EngineError::Data(format!(
                "step graph {key:?}: {} inputs, the key was first used with {}",
                inputs.len(),
                entry.inputs.len()
            )));
        }
        for (fixed, (data, shape)) in entry.inputs.iter_mut().zip(inputs) {
            if fixed.shape() != *shape {
                return Err(EngineError::Data(format!(
                    "step graph {key:?}: input of shape {shape:?}, the key was first used with \
                     {:?}",
                    fixed.shape()
                )));
            }
            write_input(fixed, data)?;
        }
        match device {
            Device::Cpu => step(&entry.inputs),
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => {
                let (out, captured) = replay_or_capture(entry, &mut self.pool, device, step)?;
                match captured {
                    None => self.replays += 1,
                    Some(Ok(())) => self.captured += 1,
                    Some(Err(e)) => {
                        // The step itself ran (eagerly); only the capture failed: go on
                        // without graphs rather than fail requests.
                        eprintln!("kiln: {e}; continuing without CUDA graphs on {device}");
                        self.enabled = false;
                        self.entries.clear();
                    }
                }
                Ok(out)
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => step(&entry.inputs),
        }
    }
}

/// Puts `data` into the fixed input buffer `t` (in place on CUDA, where graphs hold its
/// address; a new tensor elsewhere).
fn write_input(t: &mut Tensor, data: &[u32]) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(_) = t.device() {
        return crate::backend::cuda::write_host_bytes(t, bytemuck::cast_slice(data));
    }
    *t = Tensor::from_slice(data, t.shape())?;
    Ok(())
}

/// Replays the entry's graph, or (first use) runs the step eagerly from the pool and
/// captures it. Returns fresh copies of the outputs and, when this call tried a capture,
/// how it went.
#[cfg(feature = "cuda")]
fn replay_or_capture(
    entry: &mut Entry,
    pool: &mut Option<crate::backend::cuda::GraphPool>,
    device: Device,
    step: &mut StepFn<'_>,
) -> Result<(Vec<Tensor>, Option<Result<()>>)> {
    use crate::backend::cuda;
    let copies = |outs: &[Tensor]| {
        outs.iter()
            .map(cuda::fresh_copy)
            .collect::<Result<Vec<_>>>()
    };
    if let Some((graph, outs)) = &entry.graph {
        graph.launch()?;
        return Ok((copies(outs)?, None));
    }
    let Device::Cuda(ordinal) = device else {
        return Err(EngineError::Device("step graphs: not a CUDA device".into()));
    };
    if pool.is_none() {
        *pool = Some(cuda::GraphPool::new(ordinal)?);
    }
    let pool = pool.as_ref().expect("set above");
    let inputs = entry.inputs.clone();
    let warm = cuda::with_pool(pool, || step(&inputs))?;
    let out = copies(&warm)?;
    drop(warm);
    match cuda::capture(pool, || step(&inputs)) {
        Ok(captured) => {
            entry.graph = Some(captured);
            Ok((out, Some(Ok(()))))
        }
        Err(e) => Ok((out, Some(Err(e)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the CPU an enabled `StepGraphs` runs the step eagerly over the fixed inputs and
    /// refuses a key reused with other shapes.
    #[test]
    fn cpu_runs_eagerly_with_fixed_shapes() {
        let mut g = StepGraphs::new(Device::Cpu);
        assert!(!g.enabled());
        g.set_enabled(true);
        let mut calls = 0;
        let mut step = |x: &[Tensor]| -> Result<Vec<Tensor>> {
            calls += 1;
            Ok(vec![x[1].clone(), x[0].clone()])
        };
        for data in [[1u32, 2, 3], [4, 5, 6]] {
            let out = g
                .run(&[3], &[(&data, &[3]), (&[7], &[1])], &mut step)
                .unwrap();
            assert_eq!(out[1].to_vec::<u32>().unwrap(), data);
            assert_eq!(out[0].to_vec::<u32>().unwrap(), [7]);
        }
        let err = g
            .run(&[3], &[(&[1, 2], &[2]), (&[7], &[1])], &mut step)
            .unwrap_err();
        assert!(err.to_string().contains("first used with [3]"), "{err}");
        let err = g.run(&[3], &[(&[1, 2, 3], &[3])], &mut step).unwrap_err();
        assert!(err.to_string().contains("2"), "{err}");
        let _ = step;
        assert_eq!(calls, 2);
        assert_eq!(g.captured(), 0);
    }
}
