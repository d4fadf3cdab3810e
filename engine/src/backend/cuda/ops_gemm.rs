//! The pipelined tensor-core GEMMs behind `Op::Matmul` (m > 8, 16-bit weights, k % 8 == 0,
//! aligned weights; `ops_matmul.rs` decides): x is first cast to the weights' 16-bit type into
//! a scratch buffer (why: the top of `kernels/cuda/gemm_mma.cu`), then
//! - `mma_pipe`: `kiln_gemm_pipe_*`, 128 x 128 tiles, 64 KiB of shared memory;
//! - `mma_small`: `kiln_gemm_small_*`, 32 x 64 tiles, split over k (plus `kiln_matmul_reduce`)
//!   when the tiles alone are too few for the card;
//! - `wgmma`: `kiln_gemm_wgmma_*` (sm_90a), 128 x 256 tiles fed by TMA through two tensor maps
//!   built here with cuTensorMapEncodeTiled.
//!
//! Scratch buffers come from the caching allocator and go back to it when this returns; all
//! work runs on the device's one stream, so no later kernel can reuse them too early.

use super::device::DeviceCtx;
use super::launch::{launch, Shape};
use super::ops_matmul::{reduce, split_k, workspace, GemmVariant};
use super::CudaStorage;
use crate::dtype::DType;
use crate::error::{shape_err, EngineError, Result};
use cudarc::driver::sys;
use kiln_kernels::cuda::params::{CastParams, MatmulParams, TmaDescriptor, WgmmaParams};
use std::ffi::c_void;
use std::sync::Arc;

/// Must match gemm_mma.cu (`PipeLarge`, `PipeSmall`) and gemm_wgmma.cu.
const PIPE_TILE: (usize, usize) = (128, 128);
const PIPE_THREADS: u32 = 256;
const GEMM_PIPE_SMEM: u32 = 65536;
const SMALL_TILE: (usize, usize) = (32, 64);
const SMALL_BK: usize = 64;
const SMALL_THREADS: u32 = 128;
const GEMM_SMALL_SMEM: u32 = 49152;
const WGMMA_TILE: (usize, usize) = (128, 256);
const WGMMA_BK: u32 = 64;
const WGMMA_THREADS: u32 = 384;
const GEMM_WGMMA_SMEM: u32 = 197_696;
/// Each split of the small GEMM covers at least this many columns of k (4 k tiles).
const SMALL_MIN_SPLIT: usize = 4 * SMALL_BK;

/// Runs `variant` (not auto, not mma_simple) for `p`, whose x is still f32.
pub(super) fn run(
    dev: &DeviceCtx,
    arc: &Arc<DeviceCtx>,
    variant: GemmVariant,
    wd: DType,
    mut p: MatmulParams,
) -> Result<()> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let bf = wd == DType::BF16;
    let scratch = cast_x(dev, arc, p.x, m * k, wd)?;
    p.x = scratch.device_ptr();
    let tiles = |(bm, bn): (usize, usize)| m.div_ceil(bm) * n.div_ceil(bn);
    let blocks = |t: usize| -> Result<u32> {
        u32::try_from(t).map_err(|_| shape_err("matmul", format!("{t} tiles exceed the grid")))
    };
    match variant {
        GemmVariant::MmaPipe => {
            let kernel = if bf {
                "kiln_gemm_pipe_bf16"
            } else {
                "kiln_gemm_pipe_f16"
            };
            let shape = Shape {
                grid: (blocks(tiles(PIPE_TILE))?, 1, 1),
                block: PIPE_THREADS,
                shared_bytes: GEMM_PIPE_SMEM,
            };
            launch(dev, "gemm_mma", kernel, shape, p)
        }
        GemmVariant::MmaSmall => {
            let kernel = if bf {
                "kiln_gemm_small_bf16"
            } else {
                "kiln_gemm_small_f16"
            };
            let t = tiles(SMALL_TILE);
            let (splits, k_split) = split_k(dev, t, k, SMALL_BK, SMALL_MIN_SPLIT);
            let _ws = workspace(arc, &mut p, splits, k_split)?;
            let shape = Shape {
                grid: (blocks(t)?, splits as u32, 1),
                block: SMALL_THREADS,
                shared_bytes: GEMM_SMALL_SMEM,
            };
            launch(dev, "gemm_mma", kernel, shape, p)?;
            if splits > 1 {
                reduce(dev, &p, splits)?;
            }
            Ok(())
        }
        GemmVariant::Wgmma => {
            let kernel = if bf {
                "kiln_gemm_wgmma_bf16"
            } else {
                "kiln_gemm_wgmma_f16"
            };
            let params = WgmmaParams {
                a_map: tensor_map(dev, p.x, m, k, WGMMA_TILE.0 as u32, wd)?,
                b_map: tensor_map(dev, p.w, n, k, WGMMA_TILE.1 as u32, wd)?,
                p,
            };
            let shape = Shape {
                grid: (blocks(tiles(WGMMA_TILE))?, 1, 1),
                block: WGMMA_THREADS,
                shared_bytes: GEMM_WGMMA_SMEM,
            };
            launch(dev, "gemm_wgmma", kernel, shape, params)
        }
        GemmVariant::Auto | GemmVariant::MmaSimple => Err(EngineError::Device(format!(
            "matmul: {} is not a pipelined GEMM",
            variant.name()
        ))),
    }
}

/// x f32 [count] rounded to the weights' 16-bit type in a fresh scratch buffer.
fn cast_x(
    dev: &DeviceCtx,
    arc: &Arc<DeviceCtx>,
    x: u64,
    count: usize,
    wd: DType,
) -> Result<CudaStorage> {
    let scratch = CudaStorage::alloc(arc, wd, count)?;
    let kernel = if wd == DType::BF16 {
        "kiln_cast_f32_bf16"
    } else {
        "kiln_cast_f32_f16"
    };
    let params = CastParams {
        x,
        out: scratch.device_ptr(),
        n: count as u64,
    };
    let blocks = count.div_ceil(256 * 8).min(8 * dev.sm_count as usize);
    launch(
        dev,
        "cast",
        kernel,
        Shape::linear(blocks as u32, 256),
        params,
    )?;
    Ok(scratch)
}

/// The TMA descriptor of a row-major [rows, k] 16-bit matrix at `ptr`, read in boxes of 64
/// columns (128 bytes, the 128B-swizzle width) by `box_rows` rows; out-of-range elements read
/// as zeros. The caller guarantees k % 8 == 0 (row pitch a multiple of 16 bytes) and a
/// 16-byte aligned `ptr`.
fn tensor_map(
    dev: &DeviceCtx,
    ptr: u64,
    rows: usize,
    k: usize,
    box_rows: u32,
    wd: DType,
) -> Result<TmaDescriptor> {
    use sys::CUtensorMapDataType_enum as T;
    let dims: [u64; 2] = [k as u64, rows as u64];
    let pitch: [u64; 1] = [(k * 2) as u64];
    let boxes: [u32; 2] = [WGMMA_BK, box_rows];
    let steps: [u32; 2] = [1, 1];
    let dtype = if wd == DType::BF16 {
        T::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
    } else {
        T::CU_TENSOR_MAP_DATA_TYPE_FLOAT16
    };
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    // SAFETY: every pointer refers to a live local of the length the rank (2) implies; the
    // driver only writes `map`.
    let r = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            dtype,
            2,
            ptr as *mut c_void,
            dims.as_ptr(),
            pitch.as_ptr(),
            boxes.as_ptr(),
            steps.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    r.result()
        .map_err(|e| dev.err(&format!("cuTensorMapEncodeTiled [{rows}, {k}]"), e))?;
    // SAFETY: initialised by the successful call above (and zeroed before it).
    let map = unsafe { map.assume_init() };
    Ok(TmaDescriptor(map.opaque))
}
