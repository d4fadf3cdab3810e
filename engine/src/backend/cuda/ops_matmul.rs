//! `Op::Matmul` on CUDA: out f32 [m, n] = x f32 [.., k] · w [n, k]ᵀ with w in bf16, f16 or f32
//! (kernels in `kernels/cuda/matmul.cu`). m ≤ 8 (decode) takes the weight-streaming GEMV;
//! larger m takes the tensor-core GEMM for 16-bit weights (x rounded to bf16 on the way into
//! shared memory, f16 weights rounded to bf16: the bf16-matmul tolerance applies) or the
//! exact f32 FFMA SGEMM for f32 weights. Quantized weights are not supported here
//! (`supports` says so; there is no silent fallback).

use super::device::DeviceCtx;
use super::launch::{launch, Shape};
use super::{cuda_storage, view_ptr};
use crate::dtype::DType;
use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use kiln_kernels::cuda::params::MatmulParams;

/// Rows of x up to which the GEMV path is taken.
const GEMV_MAX_M: usize = 8;
/// Must match `GEMV_WARPS`, `GEMV_ROWS` and `GemvChunk` in matmul.cu: the kernel for up to
/// `M` rows stages x in chunks of `GEMV_CHUNK / M` columns.
const GEMV_THREADS: u32 = 128;
const GEMV_ROWS_PER_BLOCK: usize = 16;
const GEMV_CHUNK: usize = 8192;
/// Block tiles of `kiln_gemm_*` (128 x 128) and `kiln_sgemm_f32` (64 x 64), 256 threads each.
const GEMM_TILE: usize = 128;
const SGEMM_TILE: usize = 64;
const GEMM_THREADS: u32 = 256;

/// Dtypes `[x, w]` with a kernel.
pub(super) fn supports(op: &crate::op::Op, dtypes: &[DType]) -> bool {
    use DType::*;
    matches!(
        op,
        crate::op::Op::Matmul {
            bias: false,
            residual: false
        }
    ) && matches!(dtypes, [F32, BF16 | F16 | F32])
}

fn dim(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err("matmul", format!("{what} {v} exceeds u32")))
}

/// `x` and `w` are contiguous CUDA tensors that passed `Op::check`; `out` holds m * n f32.
pub(super) fn run(dev: &DeviceCtx, x: &Tensor, w: &Tensor, out: u64) -> Result<()> {
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let m: usize = x.shape()[..x.shape().len() - 1].iter().product();
    if m == 0 || n == 0 {
        return Ok(());
    }
    let params = MatmulParams {
        x: view_ptr(x, cuda_storage(x, "matmul")?),
        w: view_ptr(w, cuda_storage(w, "matmul")?),
        out,
        m: dim("rows of x", m)?,
        n: dim("rows of the weight", n)?,
        k: dim("inner dim", k)?,
    };
    let wd = w.dtype();
    if m <= GEMV_MAX_M {
        // Kernels for up to 1, 4 and 8 rows of x.
        let bucket = match m {
            1 => 1,
            2..=4 => 4,
            _ => 8,
        };
        let kernel = match (wd, bucket) {
            (DType::BF16, 1) => "kiln_gemv_bf16_m1",
            (DType::BF16, 4) => "kiln_gemv_bf16_m4",
            (DType::BF16, _) => "kiln_gemv_bf16_m8",
            (DType::F16, 1) => "kiln_gemv_f16_m1",
            (DType::F16, 4) => "kiln_gemv_f16_m4",
            (DType::F16, _) => "kiln_gemv_f16_m8",
            (_, 1) => "kiln_gemv_f32_m1",
            (_, 4) => "kiln_gemv_f32_m4",
            (_, _) => "kiln_gemv_f32_m8",
        };
        let chunk = GEMV_CHUNK / bucket;
        let shape = Shape {
            grid: (dim("blocks", n.div_ceil(GEMV_ROWS_PER_BLOCK))?, 1, 1),
            block: GEMV_THREADS,
            // Rows of x at a stride of one chunk; the last row needs only min(k, chunk).
            shared_bytes: (((m - 1) * chunk + k.min(chunk)) * 4) as u32,
        };
        return launch(dev, "matmul", kernel, shape, params);
    }
    let (kernel, tile) = match wd {
        DType::BF16 => ("kiln_gemm_bf16", GEMM_TILE),
        DType::F16 => ("kiln_gemm_f16", GEMM_TILE),
        _ => ("kiln_sgemm_f32", SGEMM_TILE),
    };
    let grid_y = m.div_ceil(tile);
    if grid_y > 65535 {
        return Err(shape_err(
            "matmul",
            format!(
                "{m} rows of x exceed the grid limit ({} rows)",
                65535 * tile
            ),
        ));
    }
    let shape = Shape {
        grid: (dim("blocks", n.div_ceil(tile))?, grid_y as u32, 1),
        block: GEMM_THREADS,
        shared_bytes: 0,
    };
    launch(dev, "matmul", kernel, shape, params)
}
