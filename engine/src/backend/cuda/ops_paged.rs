//! The paged KV cache and varlen attention on CUDA (kernels/cuda/paged_attention.cu and
//! varlen_attention.cu): `ReshapeAndCache`, `PagedAttention` (the split-KV decode kernel when
//! the op says `decode_only`, else the flash-attention prefill kernel) and `VarlenAttention`.
//!
//! Only the shapes are known here: block tables, context lengths and sequence boundaries are
//! device tensors, read by the kernels. The decode grid is sized from the widest possible
//! context (max_blocks * block_size); splits past a sequence's end do no work.
//!
//! Prefill (`PagedAttention` without `decode_only`, and `VarlenAttention`) has two kernel
//! families, chosen by [`AttnVariant`]: the environment variable `KILN_ATTN` (auto | wgmma |
//! mma, read once) or [`set_attn_variant`]. `mma` is the mma.sync flash-attention of
//! flash_attention.cuh (every card); `wgmma` is kernels/cuda/attention_wgmma.cu (sm_90a only,
//! bf16 caches or dense varlen). `auto` keeps mma until the wgmma kernels have passed the
//! equivalence suite on an H100 ([`AUTO_USES_WGMMA`] is the one switch to flip). Where wgmma
//! was asked for but cannot run (not compute capability 9.0, an f32 cache) the mma kernel
//! runs; [`attn_wgmma_unavailable`] says why for a device.

use super::device::DeviceCtx;
use super::launch::{launch, Shape};
use super::{cuda_storage, view_ptr, CudaStorage};
use crate::dtype::DType;
use crate::error::{shape_err, EngineError, Result};
use crate::tensor::Tensor;
use kiln_kernels::cuda::params as p;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

/// Keys per K/V tile of the kernels (`FA_BLOCK_N`).
const TILE_KEYS: usize = 64;
/// Packed (token, query head) rows per prefill CTA (`FA_BLOCK_M`).
const TILE_ROWS: usize = 64;
/// Query heads per decode CTA (one m16 mma tile).
const DECODE_HEADS: usize = 16;
/// At most this many decode splits per (sequence, kv head): the combine kernel reads them all.
const MAX_SPLITS: usize = 32;
/// Threads of the attention kernels (`FA_THREADS`).
const THREADS: u32 = 128;

/// Dynamic shared memory of the wgmma prefill kernels at head_dim tile 64 and at 80..128 (Q and
/// two stages of K and V, `WgDims::SMEM` in attention_wgmma.cu, which asserts the same numbers).
const ATTN_WGMMA_SMEM_D64: u32 = 43_024;
const ATTN_WGMMA_SMEM: u32 = 83_984;

/// Whether `AttnVariant::Auto` runs the wgmma prefill on compute capability 9.0. Off until
/// the wgmma kernels have passed `ops_equivalence` (every `attn=wgmma` case) on an H100 and
/// `kiln bench-ops --attn-variants all` shows them ahead (docs/paged-attention.md).
pub const AUTO_USES_WGMMA: bool = false;

/// Which kernel family computes attention prefill (decode always runs the split-KV kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnVariant {
    /// mma unless [`AUTO_USES_WGMMA`] (then wgmma wherever it can run).
    Auto,
    /// `kiln_attn_wgmma_*` (attention_wgmma.cu): wgmma, sm_90a only; bf16 paged caches and
    /// dense varlen. Elsewhere the mma kernel runs ([`attn_wgmma_unavailable`] says why).
    Wgmma,
    /// `kiln_paged_prefill_*`, `kiln_varlen_attention_*`: mma.sync, every card.
    Mma,
}

impl AttnVariant {
    pub const ALL: [AttnVariant; 3] = [AttnVariant::Auto, AttnVariant::Wgmma, AttnVariant::Mma];

    /// The name `KILN_ATTN` takes.
    pub fn name(self) -> &'static str {
        match self {
            AttnVariant::Auto => "auto",
            AttnVariant::Wgmma => "wgmma",
            AttnVariant::Mma => "mma",
        }
    }

    pub fn parse(s: &str) -> Option<AttnVariant> {
        Self::ALL.into_iter().find(|v| v.name() == s)
    }

    fn index(self) -> u8 {
        Self::ALL.iter().position(|v| *v == self).unwrap_or(0) as u8
    }
}

/// 0: follow `KILN_ATTN`; i + 1: `AttnVariant::ALL[i]`.
static ATTN_OVERRIDE: AtomicU8 = AtomicU8::new(0);
static ATTN_FROM_ENV: OnceLock<std::result::Result<AttnVariant, String>> = OnceLock::new();

/// Forces an attention prefill variant for later calls (`None`: back to `KILN_ATTN`, default
/// auto).
pub fn set_attn_variant(v: Option<AttnVariant>) {
    ATTN_OVERRIDE.store(v.map_or(0, |v| v.index() + 1), Ordering::SeqCst);
}

/// The variant attention prefill uses now: the override, else `KILN_ATTN` (read once), else
/// auto.
pub fn attn_variant() -> Result<AttnVariant> {
    match ATTN_OVERRIDE.load(Ordering::Relaxed) {
        0 => ATTN_FROM_ENV
            .get_or_init(|| match std::env::var("KILN_ATTN") {
                Err(_) => Ok(AttnVariant::Auto),
                Ok(s) if s.is_empty() => Ok(AttnVariant::Auto),
                Ok(s) => AttnVariant::parse(&s).ok_or_else(|| {
                    let names: Vec<&str> = AttnVariant::ALL.iter().map(|v| v.name()).collect();
                    format!("KILN_ATTN={s:?}: expected one of {}", names.join(", "))
                }),
            })
            .clone()
            .map_err(EngineError::Device),
        i => Ok(AttnVariant::ALL[usize::from(i - 1).min(AttnVariant::ALL.len() - 1)]),
    }
}

fn wgmma_missing(dev: &DeviceCtx) -> Option<String> {
    if dev.arch != 90 {
        return Some(format!(
            "cuda:{} ({}, sm_{}): the wgmma attention kernels need compute capability 9.0 (sm_90a); \
             the mma.sync kernels run instead",
            dev.ordinal, dev.name, dev.arch
        ));
    }
    None
}

/// Why `cuda:ordinal` cannot run the wgmma attention kernels (None: it can).
pub fn attn_wgmma_unavailable(ordinal: usize) -> Result<Option<String>> {
    let dev = super::device::device(ordinal)?;
    Ok(wgmma_missing(&dev))
}

/// The variants other than auto that run their own kernels on `cuda:ordinal` (wgmma needs
/// compute capability 9.0).
pub fn attn_variants(ordinal: usize) -> Result<Vec<AttnVariant>> {
    let dev = super::device::device(ordinal)?;
    let wgmma = wgmma_missing(&dev).is_none();
    Ok(AttnVariant::ALL
        .into_iter()
        .filter(|v| *v != AttnVariant::Auto && (*v != AttnVariant::Wgmma || wgmma))
        .collect())
}

/// Whether this prefill call runs the wgmma kernel: asked for (or auto with
/// [`AUTO_USES_WGMMA`]), the device has it, and the call is one it serves (`servable`: a bf16
/// cache, or dense varlen).
fn use_wgmma(dev: &DeviceCtx, servable: bool) -> Result<bool> {
    let want = match attn_variant()? {
        AttnVariant::Auto => AUTO_USES_WGMMA,
        AttnVariant::Wgmma => true,
        AttnVariant::Mma => false,
    };
    Ok(want && servable && wgmma_missing(dev).is_none())
}

/// `kiln_attn_wgmma_<kind>_d<tile>`, looked up in the build's module table, and its shared
/// memory.
fn wgmma_kernel(kind: &str, tile: usize) -> Result<(&'static str, u32)> {
    let want = format!("kiln_attn_wgmma_{kind}_d{tile}");
    let name = kiln_kernels::cuda::module("attention_wgmma")
        .and_then(|m| m.kernels.iter().copied().find(|n| *n == want))
        .ok_or_else(|| EngineError::Device(format!("no kernel {want}")))?;
    let smem = if tile <= 64 {
        ATTN_WGMMA_SMEM_D64
    } else {
        ATTN_WGMMA_SMEM
    };
    Ok((name, smem))
}

/// The head_dim tiles with a kernel; any head_dim up to the largest runs in the smallest tile
/// that holds it (zero-padded). A larger head_dim is `Unsupported` on CUDA.
const HEAD_DIM_TILES: [usize; 4] = [64, 80, 96, 128];

fn head_dim_tile(op: &'static str, d: usize, dtypes: Vec<DType>) -> Result<usize> {
    HEAD_DIM_TILES
        .iter()
        .copied()
        .find(|&t| d <= t)
        .ok_or(EngineError::Unsupported {
            op,
            backend: "cuda",
            dtypes,
        })
}

fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| shape_err(op, format!("{what} {v} exceeds u32")))
}

fn ptr(t: &Tensor, op: &'static str) -> Result<u64> {
    Ok(view_ptr(t, cuda_storage(t, op)?))
}

fn cache_suffix(op: &'static str, d: DType) -> Result<&'static str> {
    match d {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        other => Err(EngineError::Unsupported {
            op,
            backend: "cuda",
            dtypes: vec![other],
        }),
    }
}

/// Writes `new` [t, kv_heads, d] into the paged `cache` at `slots` [t] (already checked by
/// `Op::check_inplace`). Copy-on-write, as on the CPU: a cache sharing its storage is copied
/// first.
pub(super) fn reshape_and_cache(cache: &mut Tensor, new: &Tensor, slots: &Tensor) -> Result<()> {
    const OP: &str = "reshape_and_cache";
    let suffix = cache_suffix(OP, cache.dtype())?;
    if !cache.is_contiguous() {
        return Err(shape_err(OP, "the cache must be contiguous"));
    }
    cache.make_storage_unique()?;
    let (new, slots) = (new.contiguous()?, slots.contiguous()?);
    let dev = cuda_storage(cache, OP)?.device_ctx().clone();
    let c = cache.shape().to_vec();
    let (tokens, kv_heads, d) = (new.shape()[0], new.shape()[1], new.shape()[2]);
    let elems = tokens * kv_heads * d;
    if elems == 0 {
        return Ok(());
    }
    u32_of(OP, "tokens * kv_heads * head_dim", elems)?;
    let params = p::ReshapeAndCacheParams {
        src: ptr(&new, OP)?,
        cache: ptr(cache, OP)?,
        slots: ptr(&slots, OP)?,
        tokens: tokens as u64,
        kv_heads: u32_of(OP, "kv_heads", kv_heads)?,
        head_dim: u32_of(OP, "head_dim", d)?,
        block_size: u32_of(OP, "block_size", c[2])?,
        num_blocks: u32_of(OP, "num_blocks", c[0])?,
    };
    let pack = if cache.dtype() == DType::F32 { 4 } else { 8 };
    let blocks = elems.div_ceil(256 * pack).min(8 * dev.sm_count as usize);
    let kernel = if suffix == "f32" {
        "kiln_reshape_and_cache_f32"
    } else {
        "kiln_reshape_and_cache_bf16"
    };
    launch(
        &dev,
        "paged_attention",
        kernel,
        Shape::linear(blocks as u32, 256),
        params,
    )
}

/// Kernel symbol `kiln_paged_<kind>_<cache>_d<tile>`, looked up in the build's module table.
fn paged_kernel(kind: &str, cache: &str, tile: usize) -> Result<&'static str> {
    let want = format!("kiln_paged_{kind}_{cache}_d{tile}");
    kiln_kernels::cuda::module("paged_attention")
        .and_then(|m| m.kernels.iter().copied().find(|n| *n == want))
        .ok_or_else(|| EngineError::Device(format!("no kernel {want}")))
}

/// How a decode launch splits each context: (splits, keys per split). Enough CTAs for about
/// four per SM, each split at least two tiles, at most `MAX_SPLITS`.
pub(crate) fn decode_splits(
    sms: usize,
    seqs: usize,
    kv_heads: usize,
    group: usize,
    max_ctx: usize,
) -> (usize, usize) {
    let base = (seqs * kv_heads * group.div_ceil(DECODE_HEADS)).max(1);
    let tiles = max_ctx.div_ceil(TILE_KEYS).max(1);
    let want = (4 * sms).div_ceil(base);
    let splits = want.min(MAX_SPLITS).min(tiles.div_ceil(2)).max(1);
    let per = tiles.div_ceil(splits);
    (tiles.div_ceil(per), per * TILE_KEYS)
}

/// `PagedAttention` over contiguous inputs (checked by `Op::check`) into `out` [rows, heads,
/// head_dim] f32.
pub(super) fn paged_attention(
    scale: f32,
    causal: bool,
    decode_only: bool,
    x: &[Tensor],
    out: u64,
) -> Result<()> {
    const OP: &str = "paged_attention";
    let (q, kc, vc) = (&x[0], &x[1], &x[2]);
    let (tables, ctx, cu) = (&x[3], &x[4], &x[5]);
    let (rows, heads, d) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let (num_blocks, kv_heads, block_size) = (kc.shape()[0], kc.shape()[1], kc.shape()[2]);
    let (seqs, max_blocks) = (tables.shape()[0], tables.shape()[1]);
    let dtypes = x.iter().map(|t| t.dtype()).collect();
    let tile = head_dim_tile(OP, d, dtypes)?;
    let cache = cache_suffix(OP, kc.dtype())?;
    if rows == 0 || d == 0 || seqs == 0 {
        return Ok(());
    }
    let dev: Arc<DeviceCtx> = cuda_storage(q, OP)?.device_ctx().clone();
    let group = heads / kv_heads;
    u32_of(OP, "query rows * group", rows * group)?;
    let mut params = p::PagedAttentionParams {
        q: ptr(q, OP)?,
        k_cache: ptr(kc, OP)?,
        v_cache: ptr(vc, OP)?,
        block_tables: ptr(tables, OP)?,
        context_lens: ptr(ctx, OP)?,
        cu_seqlens: ptr(cu, OP)?,
        out,
        part_out: 0,
        part_lse: 0,
        rows: u32_of(OP, "rows", rows)?,
        seqs: u32_of(OP, "sequences", seqs)?,
        heads: u32_of(OP, "heads", heads)?,
        kv_heads: u32_of(OP, "kv_heads", kv_heads)?,
        head_dim: u32_of(OP, "head_dim", d)?,
        block_size: u32_of(OP, "block_size", block_size)?,
        num_blocks: u32_of(OP, "num_blocks", num_blocks)?,
        max_blocks: u32_of(OP, "max_blocks", max_blocks)?,
        split_len: 0,
        splits: 1,
        scale,
        causal: u32::from(causal),
    };
    if !decode_only {
        let grid_x = (rows * group).div_ceil(TILE_ROWS) + seqs;
        let shape = Shape {
            grid: (
                u32_of(OP, "prefill tiles", grid_x)?,
                u32_of(OP, "kv_heads", kv_heads)?,
                1,
            ),
            block: THREADS,
            shared_bytes: 0,
        };
        if use_wgmma(&dev, cache == "bf16")? {
            let (kernel, smem) = wgmma_kernel("paged_bf16", tile)?;
            let shape = Shape {
                shared_bytes: smem,
                ..shape
            };
            return launch(&dev, "attention_wgmma", kernel, shape, params);
        }
        let kernel = paged_kernel("prefill", cache, tile)?;
        return launch(&dev, OP, kernel, shape, params);
    }
    // One query row per sequence (Op::check made rows == seqs).
    let max_ctx = max_blocks * block_size;
    let (splits, split_len) = decode_splits(dev.sm_count as usize, seqs, kv_heads, group, max_ctx);
    let chunks = group.div_ceil(DECODE_HEADS);
    if seqs > 65535 || kv_heads * chunks > 65535 {
        return Err(shape_err(
            OP,
            format!("{seqs} sequences x {kv_heads} kv heads: past the decode grid"),
        ));
    }
    params.splits = splits as u32;
    params.split_len = u32_of(OP, "split length", split_len)?;
    let kernel = paged_kernel("decode", cache, tile)?;
    let shape = Shape {
        grid: (splits as u32, (kv_heads * chunks) as u32, seqs as u32),
        block: THREADS,
        shared_bytes: 0,
    };
    if splits == 1 {
        return launch(&dev, OP, kernel, shape, params);
    }
    // Partial results live until the combine kernel has read them (stream order keeps the
    // buffers safe to reuse once dropped here).
    let part_out = CudaStorage::alloc(&dev, DType::F32, splits * seqs * heads * d)?;
    let part_lse = CudaStorage::alloc(&dev, DType::F32, splits * seqs * heads)?;
    params.part_out = part_out.device_ptr();
    params.part_lse = part_lse.device_ptr();
    launch(&dev, OP, kernel, shape, params)?;
    let combine = p::AttentionCombineParams {
        part_out: part_out.device_ptr(),
        part_lse: part_lse.device_ptr(),
        out,
        rows: params.rows,
        heads: params.heads,
        head_dim: params.head_dim,
        splits: params.splits,
    };
    let items = seqs * heads;
    launch(
        &dev,
        OP,
        "kiln_attention_combine_f32",
        Shape::linear(u32_of(OP, "combine blocks", items.div_ceil(4))?, THREADS),
        combine,
    )
}

/// `VarlenAttention` over contiguous inputs (checked by `Op::check`) into `out` [tq, heads,
/// head_dim] f32.
pub(super) fn varlen_attention(scale: f32, causal: bool, x: &[Tensor], out: u64) -> Result<()> {
    const OP: &str = "varlen_attention";
    let (q, k, v, cu_q, cu_k) = (&x[0], &x[1], &x[2], &x[3], &x[4]);
    let (tq, heads, d) = (q.shape()[0], q.shape()[1], q.shape()[2]);
    let (tk, kv_heads) = (k.shape()[0], k.shape()[1]);
    let seqs = cu_q.shape()[0] - 1;
    let dtypes = x.iter().map(|t| t.dtype()).collect();
    let tile = head_dim_tile(OP, d, dtypes)?;
    if tq == 0 || d == 0 || seqs == 0 {
        return Ok(());
    }
    let dev: Arc<DeviceCtx> = cuda_storage(q, OP)?.device_ctx().clone();
    let group = heads / kv_heads;
    let grid_x = (tq * group).div_ceil(TILE_ROWS) + seqs;
    let params = p::VarlenAttentionParams {
        q: ptr(q, OP)?,
        k: ptr(k, OP)?,
        v: ptr(v, OP)?,
        cu_seqlens_q: ptr(cu_q, OP)?,
        cu_seqlens_k: ptr(cu_k, OP)?,
        out,
        tq: u32_of(OP, "query rows", tq)?,
        tk: u32_of(OP, "key rows", tk)?,
        seqs: u32_of(OP, "sequences", seqs)?,
        heads: u32_of(OP, "heads", heads)?,
        kv_heads: u32_of(OP, "kv_heads", kv_heads)?,
        head_dim: u32_of(OP, "head_dim", d)?,
        scale,
        causal: u32::from(causal),
    };
    if use_wgmma(&dev, true)? {
        let (kernel, smem) = wgmma_kernel("varlen", tile)?;
        let shape = Shape {
            grid: (
                u32_of(OP, "tiles", grid_x)?,
                u32_of(OP, "kv_heads", kv_heads)?,
                1,
            ),
            block: THREADS,
            shared_bytes: smem,
        };
        return launch(&dev, "attention_wgmma", kernel, shape, params);
    }
    let kernel = match tile {
        64 => "kiln_varlen_attention_d64",
        80 => "kiln_varlen_attention_d80",
        96 => "kiln_varlen_attention_d96",
        _ => "kiln_varlen_attention_d128",
    };
    let shape = Shape {
        grid: (
            u32_of(OP, "tiles", grid_x)?,
            u32_of(OP, "kv_heads", kv_heads)?,
            1,
        ),
        block: THREADS,
        shared_bytes: 0,
    };
    launch(&dev, "varlen_attention", kernel, shape, params)
}

#[cfg(test)]
mod tests {
    use super::{decode_splits, AttnVariant};

    #[test]
    fn attn_variant_names_round_trip() {
        for v in AttnVariant::ALL {
            assert_eq!(AttnVariant::parse(v.name()), Some(v));
        }
        assert_eq!(AttnVariant::parse("fa3"), None);
    }

    #[test]
    fn decode_splits_fill_the_card_and_cover_the_context() {
        // Llama-3.1-8B on 132 SMs: batch 1 splits 4096 keys into 32 x 128; batch 32 needs
        // few splits; a short context is never split below two tiles.
        assert_eq!(decode_splits(132, 1, 8, 4, 4096), (32, 128));
        let (s, len) = decode_splits(132, 32, 8, 4, 4096);
        assert_eq!((s, len), (3, 1408));
        assert!(s * len >= 4096);
        assert_eq!(decode_splits(132, 1, 8, 4, 64), (1, 64));
        assert_eq!(decode_splits(132, 1, 8, 4, 200), (2, 128));
        assert_eq!(decode_splits(132, 512, 8, 4, 4096), (1, 4096));
        for (seqs, ctx) in [(1, 1), (3, 1000), (7, 65536), (64, 16)] {
            let (s, len) = decode_splits(108, seqs, 2, 8, ctx);
            assert!(
                (1..=32).contains(&s) && len % 64 == 0 && s * len >= ctx,
                "{seqs} {ctx}"
            );
            assert!((s - 1) * len < ctx.max(1), "an empty split at {seqs} {ctx}");
        }
    }
}
