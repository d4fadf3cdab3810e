//! GGML block formats to f32, bit-exact with ggml's reference `dequantize_row_*` (and so
//! with gguf-py): the float operations are done in the same order, in f32, without fusing.
//!
//! Block layouts (all little-endian, `d`/`m`/`dmin` are f16 unless noted):
//! - Q4_0 `d, qs[16]`; Q4_1 `d, m, qs[16]`; Q5_0 `d, qh[4], qs[16]`; Q5_1 `d, m, qh[4], qs[16]`;
//!   Q8_0 `d, qs[32] i8` (32 elements per block)
//! - Q2_K `scales[16], qs[64], d, dmin`; Q3_K `hmask[32], qs[64], scales[12], d`;
//!   Q4_K `d, dmin, scales[12], qs[128]`; Q5_K `d, dmin, scales[12], qh[32], qs[128]`;
//!   Q6_K `ql[128], qh[64], scales[16] i8, d`; Q8_K `d f32, qs[256] i8, bsums[16] i16`
//!   (256 elements per block)

use kiln_kernels::cpu::quant::{dequantize_row, QuantFormat};
use rayon::prelude::*;

use super::types::GgmlType;

/// Why a buffer could not be dequantized; the caller adds file and tensor names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DequantError {
    Unsupported(GgmlType),
    BadLength {
        ty: GgmlType,
        bytes: usize,
        row_len: usize,
    },
}

impl std::fmt::Display for DequantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DequantError::Unsupported(ty) => write!(f, "unsupported GGML type {ty}"),
            DequantError::BadLength { ty, bytes, row_len } => write!(
                f,
                "{bytes} bytes of {ty} data do not hold whole rows of {row_len} elements"
            ),
        }
    }
}

impl std::error::Error for DequantError {}

type BlockFn = fn(&[u8], &mut [f32]);

/// Dequantizes a tensor stored as rows of `row_len` elements, in parallel over rows.
pub fn dequantize(ty: GgmlType, data: &[u8], row_len: usize) -> Result<Vec<f32>, DequantError> {
    let (block_fn, row_bytes) = row_plan(ty, data.len(), row_len)?;
    let rows = data.len().checked_div(row_bytes).unwrap_or(0);
    let mut out = vec![0f32; rows * row_len];
    out.par_chunks_mut(row_len.max(1))
        .zip(data.par_chunks(row_bytes.max(1)))
        .for_each(|(dst, src)| dequantize_blocks(block_fn, ty, src, dst));
    Ok(out)
}

/// Dequantizes `data` (whole rows of `row_len`) into `out`, which must be the right length.
pub fn dequantize_into(
    ty: GgmlType,
    data: &[u8],
    row_len: usize,
    out: &mut [f32],
) -> Result<(), DequantError> {
    let (block_fn, row_bytes) = row_plan(ty, data.len(), row_len)?;
    let rows = data.len().checked_div(row_bytes).unwrap_or(0);
    if out.len() != rows * row_len {
        return Err(DequantError::BadLength {
            ty,
            bytes: data.len(),
            row_len,
        });
    }
    dequantize_blocks(block_fn, ty, data, out);
    Ok(())
}

fn row_plan(ty: GgmlType, bytes: usize, row_len: usize) -> Result<(BlockFn, usize), DequantError> {
    let block_fn = block_fn(ty).ok_or(DequantError::Unsupported(ty))?;
    let (block, type_size) = ty.block_geometry();
    let bad = DequantError::BadLength { ty, bytes, row_len };
    if row_len == 0 || !row_len.is_multiple_of(block) {
        return Err(bad);
    }
    let row_bytes = row_len / block * type_size;
    if !bytes.is_multiple_of(row_bytes) {
        return Err(bad);
    }
    Ok((block_fn, row_bytes))
}

fn dequantize_blocks(block_fn: BlockFn, ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    let (block, type_size) = ty.block_geometry();
    for (b, y) in src.chunks_exact(type_size).zip(dst.chunks_exact_mut(block)) {
        block_fn(b, y);
    }
}

fn block_fn(ty: GgmlType) -> Option<BlockFn> {
    use GgmlType::*;
    Some(match ty {
        F32 => f32_block,
        F16 => f16_block,
        Bf16 => bf16_block,
        Q4_0 => q4_0,
        Q4_1 => q4_1,
        Q5_0 => q5_0,
        Q5_1 => q5_1,
        Q8_0 => q8_0,
        Q2K => q2_k,
        Q3K => q3_k,
        Q4K => q4_k,
        Q5K => q5_k,
        Q6K => q6_k,
        Q8K => q8_k,
        _ => return None,
    })
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn f32_block(b: &[u8], y: &mut [f32]) {
    y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
}

fn f16_block(b: &[u8], y: &mut [f32]) {
    y[0] = f16_at(b, 0);
}

fn bf16_block(b: &[u8], y: &mut [f32]) {
    // bf16 is the top half of an f32; widening is exact (NaN payloads included).
    y[0] = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
}

// Q4_0, Q4_1 and Q8_0 are the formats the CPU kernels also multiply directly: one decoder
// (kiln-kernels) serves both, so load-time dequantization and the fused GEMV cannot drift.
fn q4_0(b: &[u8], y: &mut [f32]) {
    dequantize_row(QuantFormat::Q4_0, b, y);
}

fn q4_1(b: &[u8], y: &mut [f32]) {
    dequantize_row(QuantFormat::Q4_1, b, y);
}

/// The 5th bits of a Q5 block: bit j of `qh` belongs to element j (low nibbles) and bit
/// j + 16 to element j + 16 (high nibbles).
fn q5_high_bits(qh: u32, j: usize) -> (u8, u8) {
    (
        (((qh >> j) << 4) & 0x10) as u8,
        ((qh >> (j + 12)) & 0x10) as u8,
    )
}

fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let (h0, h1) = q5_high_bits(qh, j);
        y[j] = (((qs[j] & 0x0F) | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) | h1) as i32 - 16) as f32 * d;
    }
}

fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let (h0, h1) = q5_high_bits(qh, j);
        y[j] = ((qs[j] & 0x0F) | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | h1) as f32 * d + m;
    }
}

fn q8_0(b: &[u8], y: &mut [f32]) {
    dequantize_row(QuantFormat::Q8_0, b, y);
}

fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (yj, &q) in y.iter_mut().zip(&b[4..260]) {
        *yj = d * (q as i8) as f32;
    }
}

fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut is = 0;
    // Two halves of 128; each reads 32 bytes of qs four times, 2 bits deeper each time.
    for (half, q) in b[16..80].chunks_exact(32).enumerate() {
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0F) as f32;
                let ml = dmin * (sc >> 4) as f32;
                let base = half * 128 + shift / 2 * 32 + part * 16;
                for l in 0..16 {
                    let v = (q[part * 16 + l] >> shift) & 3;
                    y[base + l] = dl * v as f32 - ml;
                }
            }
        }
    }
}

/// Unpacks Q3_K's twelve bytes into sixteen 6-bit scales: the low 4 bits of scale i are a
/// nibble of bytes 0..8, the high 2 bits come from bytes 8..12.
fn q3_k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { s[i] & 0x0F } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (low | (high << 4)) as i8;
    }
    out
}

fn q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let scales = q3_k_scales(&b[96..108]);
    let d_all = f16_at(b, 108);
    let mut is = 0;
    let mut m: u8 = 1;
    for (half, q) in qs.chunks_exact(32).enumerate() {
        for shift in [0, 2, 4, 6] {
            for part in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                let base = half * 128 + shift / 2 * 32 + part * 16;
                for l in 0..16 {
                    let idx = part * 16 + l;
                    let low = ((q[idx] >> shift) & 3) as i32;
                    let high = if hmask[idx] & m != 0 { 0 } else { 4 };
                    y[base + l] = dl * (low - high) as f32;
                }
            }
            m <<= 1;
        }
    }
}

/// Scale and min j (0..8) of a Q4_K/Q5_K block: 6 bits each, packed into 12 bytes.
fn k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    for (chunk, q) in b[16..144].chunks_exact(32).enumerate() {
        let (sc1, m1) = k_scale_min(2 * chunk, scales);
        let (sc2, m2) = k_scale_min(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let out = &mut y[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0x0F) as f32 - m1;
            out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    for (chunk, ql) in b[48..176].chunks_exact(32).enumerate() {
        let (sc1, m1) = k_scale_min(2 * chunk, scales);
        let (sc2, m2) = k_scale_min(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let out = &mut y[chunk * 64..chunk * 64 + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            out[l] = d1 * ((ql[l] & 0x0F) + h1) as f32 - m1;
            out[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
        }
    }
}

fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[half * 64..half * 64 + 64];
        let qh = &b[128 + half * 32..128 + half * 32 + 32];
        let sc = &b[192 + half * 8..192 + half * 8 + 8];
        let out = &mut y[half * 128..half * 128 + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
#[path = "dequant_tests.rs"]
mod tests;
