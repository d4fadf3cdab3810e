//! `Op::Matmul` on CUDA: out f32 [m, n] = x f32 [.., k] · w [n, k]ᵀ (+ bias [n]) (+ residual
//! [.., n]) with w in bf16, f16 or f32; the epilogue is fused into every kernel (or into the
//! split-K reduction). Kernels: `kernels/cuda/matmul.cu`, `gemm_mma.cu`, `gemm_wgmma.cu`.
//!
//! - m ≤ 8 (decode): the weight-streaming GEMV, exact f32, split over k (plus a reduction
//!   kernel) when one block per 16 rows of w leaves the card short of blocks.
//! - f32 weights: the exact f32 FFMA SGEMM.
//! - 16-bit weights, m > 8: a tensor-core GEMM (`ops_gemm.rs`), chosen by [`GemmVariant`]:
//!   the environment variable `KILN_GEMM` (auto | wgmma | mma_pipe | mma_small | mma_simple,
//!   read once) or [`set_gemm_variant`]. `auto` picks wgmma on compute capability 9.0 when its
//!   128 x 256 tiles fill the card, else the 128 x 128 mma.sync pipeline when its tiles do,
//!   else the 32 x 64 small-m kernel with split-K (a first guess: no variant has been timed
//!   yet). Every variant but mma_simple needs k % 8 == 0 (16-byte rows for cp.async / TMA)
//!   and 16-byte aligned weights; otherwise mma_simple runs whatever was asked for. x is
//!   rounded to bf16 (to f16 for f16 weights) on the tensor-core paths: the bf16-matmul
//!   tolerance applies.
//!
//! Quantized weights are not supported here (`supports` says so; no silent fallback).

use super::device::DeviceCtx;
use super::launch::{launch, Shape};
use super::{cuda_storage, view_ptr, CudaStorage};
use crate::dtype::DType;
use crate::error::{shape_err, EngineError, Result};
use crate::op::Op;
use crate::tensor::Tensor;
use kiln_kernels::cuda::params::{MatmulParams, ReduceParams};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// Rows of x up to which the GEMV path is taken.
const GEMV_MAX_M: usize = 8;
/// Must match `GEMV_WARPS`, `GEMV_ROWS` and `GemvChunk` in matmul.cu: the kernel for up to
/// `M` rows stages x in chunks of `GEMV_CHUNK / M` columns.
const GEMV_THREADS: u32 = 128;
const GEMV_ROWS_PER_BLOCK: usize = 16;
const GEMV_CHUNK: usize = 8192;
/// Block tiles of `kiln_gemm_simple_*` (128 x 128) and `kiln_sgemm_f32` (64 x 64), 256 threads.
const GEMM_TILE: usize = 128;
const SGEMM_TILE: usize = 64;
const GEMM_THREADS: u32 = 256;
/// Split-K aims at this many resident blocks per SM (GEMV and the small GEMM).
const SPLIT_BLOCKS_PER_SM: usize = 4;
const MAX_SPLITS: usize = 16;

/// Which tensor-core GEMM serves 16-bit weights at m > 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmVariant {
    /// Chosen per call from the device and the shape.
    Auto,
    /// `kiln_gemm_wgmma_*`: TMA + wgmma, 128 x 256 tiles; compute capability 9.0 only.
    Wgmma,
    /// `kiln_gemm_pipe_*`: cp.async 4-stage pipeline + ldmatrix + mma.sync, 128 x 128 tiles.
    MmaPipe,
    /// `kiln_gemm_small_*`: the same pipeline with 32 x 64 tiles and split-K, for small m.
    MmaSmall,
    /// `kiln_gemm_simple_*`: register-staged mma.sync, any k and alignment.
    MmaSimple,
}

impl GemmVariant {
    pub const ALL: [GemmVariant; 5] = [
        GemmVariant::Auto,
        GemmVariant::Wgmma,
        GemmVariant::MmaPipe,
        GemmVariant::MmaSmall,
        GemmVariant::MmaSimple,
    ];

    /// The name `KILN_GEMM` takes.
    pub fn name(self) -> &'static str {
        match self {
            GemmVariant::Auto => "auto",
            GemmVariant::Wgmma => "wgmma",
            GemmVariant::MmaPipe => "mma_pipe",
            GemmVariant::MmaSmall => "mma_small",
            GemmVariant::MmaSimple => "mma_simple",
        }
    }

    pub fn parse(s: &str) -> Option<GemmVariant> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }

    fn index(self) -> u8 {
        Self::ALL.iter().position(|v| *v == self).unwrap_or(0) as u8
    }
}

/// 0: follow `KILN_GEMM`; i + 1: `GemmVariant::ALL[i]`.
static OVERRIDE: AtomicU8 = AtomicU8::new(0);
static FROM_ENV: OnceLock<std::result::Result<GemmVariant, String>> = OnceLock::new();

/// Forces a GEMM variant for later matmuls (`None`: back to `KILN_GEMM`, default auto).
pub fn set_gemm_variant(v: Option<GemmVariant>) {
    OVERRIDE.store(v.map_or(0, |v| v.index() + 1), Ordering::SeqCst);
}

/// The variant matmuls use now: the override, else `KILN_GEMM` (read once), else auto.
pub fn gemm_variant() -> Result<GemmVariant> {
    match OVERRIDE.load(Ordering::Relaxed) {
        0 => FROM_ENV
            .get_or_init(|| match std::env::var("KILN_GEMM") {
                Err(_) => Ok(GemmVariant::Auto),
                Ok(s) if s.is_empty() => Ok(GemmVariant::Auto),
                Ok(s) => GemmVariant::parse(&s).ok_or_else(|| {
                    let names: Vec<&str> = GemmVariant::ALL.iter().map(|v| v.name()).collect();
                    format!("KILN_GEMM={s:?}: expected one of {}", names.join(", "))
                }),
            })
            .clone()
            .map_err(EngineError::Device),
        i => Ok(GemmVariant::ALL[usize::from(i - 1).min(GemmVariant::ALL.len() - 1)]),
    }
}

/// The variants other than auto that can run on `cuda:ordinal` (wgmma needs sm_90).
pub fn gemm_variants(ordinal: usize) -> Result<Vec<GemmVariant>> {
    let dev = super::device::device(ordinal)?;
    Ok(GemmVariant::ALL
        .into_iter()
        .filter(|v| *v != GemmVariant::Auto && (*v != GemmVariant::Wgmma || dev.arch == 90))
        .collect())
}

/// Dtypes `[x, w, bias?, residual?]` with a kernel (bias / residual f32, as `Op::check` has
/// already demanded).
pub(super) fn supports(op: &Op, dtypes: &[DType]) -> bool {
    use DType::*;
    matches!(op, Op::Matmul { .. })
        && matches!(dtypes, [F32, BF16 | F16 | F32, rest @ ..] if rest.iter().all(|d| *d == F32))
}

fn dim(what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err("matmul", format!("{what} {v} exceeds u32")))
}

fn ptr(t: &Tensor) -> Result<u64> {
    Ok(view_ptr(t, cuda_storage(t, "matmul")?))
}

/// `x` = [x, w, bias?, residual?], contiguous CUDA tensors that passed `Op::check`; `out`
/// holds m * n f32.
pub(super) fn run(
    dev: &DeviceCtx,
    x: &[Tensor],
    bias: bool,
    residual: bool,
    out: u64,
) -> Result<()> {
    let (xt, w) = (&x[0], &x[1]);
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let m: usize = xt.shape()[..xt.shape().len() - 1].iter().product();
    if m == 0 || n == 0 {
        return Ok(());
    }
    let mut extra = x[2..].iter();
    let mut next_ptr = |on: bool| match (on, extra.next()) {
        (true, Some(t)) => ptr(t),
        (true, None) => Err(shape_err("matmul", "missing bias / residual input")),
        (false, _) => Ok(0),
    };
    let bias = next_ptr(bias)?;
    let residual = next_ptr(residual)?;
    let arc = cuda_storage(xt, "matmul")?.device_ctx().clone();
    let p = MatmulParams {
        x: ptr(xt)?,
        w: ptr(w)?,
        out,
        bias,
        residual,
        partial: 0,
        m: dim("rows of x", m)?,
        n: dim("rows of the weight", n)?,
        k: dim("inner dim", k)?,
        k_split: dim("inner dim", k)?,
    };
    let wd = w.dtype();
    if m <= GEMV_MAX_M {
        return gemv(dev, &arc, p, wd);
    }
    if wd == DType::F32 {
        let grid_y = m.div_ceil(SGEMM_TILE);
        return grid_2d(dev, "kiln_sgemm_f32", n.div_ceil(SGEMM_TILE), grid_y, p);
    }
    // The pipelined kernels copy 16-byte rows of x (the cast scratch, fresh and aligned) and w.
    let fast_ok = k > 0 && k.is_multiple_of(8) && p.w.is_multiple_of(16);
    let requested = gemm_variant()?;
    let variant = if fast_ok {
        choose(dev, requested, m, n)?
    } else {
        GemmVariant::MmaSimple
    };
    if variant == GemmVariant::MmaSimple {
        let kernel = if wd == DType::BF16 {
            "kiln_gemm_simple_bf16"
        } else {
            "kiln_gemm_simple_f16"
        };
        return grid_2d(dev, kernel, n.div_ceil(GEMM_TILE), m.div_ceil(GEMM_TILE), p);
    }
    super::ops_gemm::run(dev, &arc, variant, wd, p)
}

/// The variant for a call the pipelined kernels can serve.
fn choose(dev: &DeviceCtx, requested: GemmVariant, m: usize, n: usize) -> Result<GemmVariant> {
    let sms = dev.sm_count as usize;
    let tiles = |bm: usize, bn: usize| m.div_ceil(bm) * n.div_ceil(bn);
    Ok(match requested {
        GemmVariant::Auto if dev.arch == 90 && tiles(128, 256) >= sms => GemmVariant::Wgmma,
        GemmVariant::Auto if tiles(128, 128) >= sms => GemmVariant::MmaPipe,
        GemmVariant::Auto => GemmVariant::MmaSmall,
        GemmVariant::Wgmma if dev.arch != 90 => {
            return Err(EngineError::Device(format!(
                "cuda:{} ({}, sm_{}): the wgmma GEMM needs compute capability 9.0 (KILN_GEMM / \
                 set_gemm_variant asked for it)",
                dev.ordinal, dev.name, dev.arch
            )))
        }
        v => v,
    })
}

/// A grid of `gx` x `gy` 256-thread blocks of one of matmul.cu's GEMMs.
fn grid_2d(
    dev: &DeviceCtx,
    kernel: &'static str,
    gx: usize,
    gy: usize,
    p: MatmulParams,
) -> Result<()> {
    if gy > 65535 {
        return Err(shape_err(
            "matmul",
            format!("{} rows of x exceed the grid limit of {kernel}", p.m),
        ));
    }
    let shape = Shape {
        grid: (dim("blocks", gx)?, gy as u32, 1),
        block: GEMM_THREADS,
        shared_bytes: 0,
    };
    launch(dev, "matmul", kernel, shape, p)
}

/// (splits, k_split): k cut into pieces of whole `unit`s so that `blocks * splits` comes near
/// SPLIT_BLOCKS_PER_SM blocks per SM, each piece at least `min_cols` columns.
pub(super) fn split_k(
    dev: &DeviceCtx,
    blocks: usize,
    k: usize,
    unit: usize,
    min_cols: usize,
) -> (usize, usize) {
    let want = (SPLIT_BLOCKS_PER_SM * dev.sm_count as usize).div_ceil(blocks.max(1));
    let splits = want
        .min(k.div_ceil(min_cols.max(unit)))
        .clamp(1, MAX_SPLITS);
    if splits == 1 {
        return (1, k);
    }
    let k_split = k.div_ceil(splits).div_ceil(unit) * unit;
    (k.div_ceil(k_split), k_split)
}

/// A split-K workspace for `splits` slices of m x n f32, set into `p` (`None` when not split).
pub(super) fn workspace(
    dev: &Arc<DeviceCtx>,
    p: &mut MatmulParams,
    splits: usize,
    k_split: usize,
) -> Result<Option<CudaStorage>> {
    if splits <= 1 {
        return Ok(None);
    }
    let ws = CudaStorage::alloc(dev, DType::F32, splits * p.m as usize * p.n as usize)?;
    p.partial = ws.device_ptr();
    p.k_split = dim("k per split", k_split)?;
    Ok(Some(ws))
}

/// Sums the split-K partials of `p` into p.out with the epilogue.
pub(super) fn reduce(dev: &DeviceCtx, p: &MatmulParams, splits: usize) -> Result<()> {
    let count = p.m as usize * p.n as usize;
    let params = ReduceParams {
        partial: p.partial,
        out: p.out,
        bias: p.bias,
        residual: p.residual,
        count: count as u64,
        n: p.n,
        splits: dim("splits", splits)?,
    };
    let blocks = count.div_ceil(256 * 4).min(8 * dev.sm_count as usize);
    let shape = Shape::linear(blocks as u32, 256);
    launch(dev, "matmul", "kiln_matmul_reduce", shape, params)
}

fn gemv(dev: &DeviceCtx, arc: &Arc<DeviceCtx>, mut p: MatmulParams, wd: DType) -> Result<()> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
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
    let blocks = n.div_ceil(GEMV_ROWS_PER_BLOCK);
    // Split only across whole chunks, so each block stages x once per chunk as before.
    let (splits, k_split) = if k > chunk {
        split_k(dev, blocks, k, chunk, chunk)
    } else {
        (1, k)
    };
    let _ws = workspace(arc, &mut p, splits, k_split)?;
    let shape = Shape {
        grid: (dim("blocks", blocks)?, dim("splits", splits)?, 1),
        block: GEMV_THREADS,
        // Rows of x at a stride of one chunk; the last row needs only min(k_split, chunk).
        shared_bytes: (((m - 1) * chunk + k_split.min(chunk)) * 4) as u32,
    };
    launch(dev, "matmul", kernel, shape, p)?;
    if splits > 1 {
        reduce(dev, &p, splits)?;
    }
    Ok(())
}
