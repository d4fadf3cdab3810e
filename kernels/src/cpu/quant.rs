//! GGML 32-element block formats (Q8_0, Q4_0, Q4_1) and their exact dequantization.
//!
//! Layouts (little-endian; `d` and `m` are f16):
//! - Q8_0 `d, qs[32] i8` (34 bytes): value `d·q`
//! - Q4_0 `d, qs[16]` (18 bytes): value `d·(q − 8)`
//! - Q4_1 `d, m, qs[16]` (20 bytes): value `d·q + m`
//!
//! In the 4-bit formats byte j holds element j in its low nibble and element j + 16 in its high
//! nibble. Dequantization is bit-exact with ggml's reference `dequantize_row_*` (and gguf-py):
//! the integer is converted to f32 exactly, multiplied by `d` in f32 and, for Q4_1, `m` is added
//! in a separate rounding step (no fused multiply-add, which would round once and differ).
//!
//! The per-format decoding lives in [`Block`] so the dequantizer and the fused GEMV
//! (`matmul_quant.rs`) share one definition of each layout.

use super::matmul::Isa;

/// Elements per block in all three formats.
pub const QK: usize = 32;

/// A GGML block-quantized weight format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantFormat {
    Q8_0,
    Q4_0,
    Q4_1,
}

impl QuantFormat {
    /// Bytes of one block of [`QK`] elements.
    pub fn block_bytes(self) -> usize {
        match self {
            QuantFormat::Q8_0 => Q8_0::BYTES,
            QuantFormat::Q4_0 => Q4_0::BYTES,
            QuantFormat::Q4_1 => Q4_1::BYTES,
        }
    }

    /// Bytes of one row of `k` elements; `k` must be a multiple of [`QK`].
    pub fn row_bytes(self, k: usize) -> usize {
        k / QK * self.block_bytes()
    }

    /// The name ggml uses, for messages.
    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Q8_0 => "Q8_0",
            QuantFormat::Q4_0 => "Q4_0",
            QuantFormat::Q4_1 => "Q4_1",
        }
    }
}

/// Dequantizes `out.len()` elements (a multiple of 32) from the blocks at the start of `bytes`.
///
/// Panics if `out.len()` is not a multiple of 32 or `bytes` holds fewer blocks than needed.
pub fn dequantize_row(format: QuantFormat, bytes: &[u8], out: &mut [f32]) {
    dequantize_row_with(format, bytes, out, Isa::detect());
}

pub(crate) fn dequantize_row_with(format: QuantFormat, bytes: &[u8], out: &mut [f32], isa: Isa) {
    assert!(
        out.len() % QK == 0,
        "dequantize_row: {} elements is not a whole number of {QK}-element blocks",
        out.len()
    );
    let need = format.row_bytes(out.len());
    assert!(
        bytes.len() >= need,
        "dequantize_row: {} bytes of {} data, need {need}",
        bytes.len(),
        format.name()
    );
    match format {
        QuantFormat::Q8_0 => dequant::<Q8_0>(&bytes[..need], out, isa),
        QuantFormat::Q4_0 => dequant::<Q4_0>(&bytes[..need], out, isa),
        QuantFormat::Q4_1 => dequant::<Q4_1>(&bytes[..need], out, isa),
    }
}

fn dequant<B: Block>(bytes: &[u8], out: &mut [f32], isa: Isa) {
    match isa {
        Isa::Portable => {
            for (b, y) in bytes.chunks_exact(B::BYTES).zip(out.chunks_exact_mut(QK)) {
                let (d, m) = B::scales(b);
                let mut q = [0f32; QK];
                B::values(b, &mut q);
                for (yj, &qj) in y.iter_mut().zip(&q) {
                    // Two roundings, as ggml: the product, then the offset.
                    *yj = if B::HAS_MIN { qj * d + m } else { qj * d };
                }
            }
        }
        // SAFETY: Isa::Avx2 is only produced by `Isa::detect` after checking AVX2/FMA/F16C,
        // and the lengths were checked by the caller (whole blocks on both sides).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2_dequant::<B>(bytes, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn avx2_dequant<B: Block>(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let blocks = (bytes.len() / B::BYTES).min(out.len() / QK);
    let (src, dst) = (bytes.as_ptr(), out.as_mut_ptr());
    for i in 0..blocks {
        let p = src.add(i * B::BYTES);
        let q = B::values8(p);
        let (d, m) = B::scales8(p);
        for (t, v) in q.iter().enumerate() {
            // Separate multiply and add (not FMA) to round exactly as the scalar reference.
            let mut y = _mm256_mul_ps(*v, d);
            if B::HAS_MIN {
                y = _mm256_add_ps(y, m);
            }
            _mm256_storeu_ps(dst.add(i * QK + 8 * t), y);
        }
    }
}

/// One block format: how to read its scales and its 32 integer values.
pub(crate) trait Block: Copy + Send + Sync + 'static {
    const BYTES: usize;
    /// Q4_1 has an additive minimum `m`; the others have none (their `m` reads as 0).
    const HAS_MIN: bool;
    /// `(d, m)` as f32 (exact widening of the f16 fields).
    fn scales(b: &[u8]) -> (f32, f32);
    /// The 32 integer values as f32 (exact), already offset (q − 8 for Q4_0).
    fn values(b: &[u8], q: &mut [f32; QK]);
    /// `d` and `m` broadcast to all lanes.
    #[cfg(target_arch = "x86_64")]
    unsafe fn scales8(p: *const u8) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256);
    /// The 32 values as four f32 vectors, elements 0..8, 8..16, 16..24, 24..32.
    #[cfg(target_arch = "x86_64")]
    unsafe fn values8(p: *const u8) -> [std::arch::x86_64::__m256; 4];
}

#[derive(Clone, Copy)]
pub(crate) struct Q8_0;
#[derive(Clone, Copy)]
pub(crate) struct Q4_0;
#[derive(Clone, Copy)]
pub(crate) struct Q4_1;

fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Low nibbles then high nibbles of the 16 bytes: elements 0..16, then 16..32.
fn nibbles(qs: &[u8], q: &mut [f32; QK], offset: i32) {
    for (j, &byte) in qs[..16].iter().enumerate() {
        q[j] = ((byte & 0x0F) as i32 - offset) as f32;
        q[j + 16] = ((byte >> 4) as i32 - offset) as f32;
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Eight signed bytes (the low half of `v`) as f32.
    #[inline(always)]
    pub(super) unsafe fn widen(v: __m128i) -> __m256 {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
    }

    /// `[d, m]` from the f16 pair at `p` (m is garbage unless the format has one; unused then).
    #[inline(always)]
    pub(super) unsafe fn scales(p: *const u8, has_min: bool) -> (__m256, __m256) {
        let raw = if has_min {
            (p as *const u32).read_unaligned() as i32
        } else {
            (p as *const u16).read_unaligned() as i32
        };
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(raw));
        (
            _mm256_broadcastss_ps(v),
            _mm256_broadcastss_ps(_mm_movehdup_ps(v)),
        )
    }

    /// The 16 nibble bytes at `p` as four f32 vectors (elements 0..8, 8..16, 16..24, 24..32),
    /// minus `OFFSET`.
    #[inline(always)]
    pub(super) unsafe fn nibbles<const OFFSET: i8>(p: *const u8) -> [__m256; 4] {
        let raw = _mm_loadu_si128(p as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let off = _mm_set1_epi8(OFFSET);
        // Offsetting in bytes keeps the values within i8 (−8..7), so sign extension is exact.
        let lo = _mm_sub_epi8(_mm_and_si128(raw, mask), off);
        let hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16::<4>(raw), mask), off);
        [
            widen(lo),
            widen(_mm_unpackhi_epi64(lo, lo)),
            widen(hi),
            widen(_mm_unpackhi_epi64(hi, hi)),
        ]
    }
}

impl Block for Q8_0 {
    const BYTES: usize = 34;
    const HAS_MIN: bool = false;
    fn scales(b: &[u8]) -> (f32, f32) {
        (f16_at(b, 0), 0.0)
    }
    fn values(b: &[u8], q: &mut [f32; QK]) {
        for (qj, &byte) in q.iter_mut().zip(&b[2..2 + QK]) {
            *qj = (byte as i8) as f32;
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(p: *const u8) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        simd::scales(p, false)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn values8(p: *const u8) -> [std::arch::x86_64::__m256; 4] {
        use std::arch::x86_64::*;
        // 8-byte loads fold into vpmovsxbd's memory operand: no shuffles needed.
        let q = |t: usize| _mm_loadl_epi64(p.add(2 + 8 * t) as *const __m128i);
        [
            simd::widen(q(0)),
            simd::widen(q(1)),
            simd::widen(q(2)),
            simd::widen(q(3)),
        ]
    }
}

impl Block for Q4_0 {
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;
    fn scales(b: &[u8]) -> (f32, f32) {
        (f16_at(b, 0), 0.0)
    }
    fn values(b: &[u8], q: &mut [f32; QK]) {
        nibbles(&b[2..18], q, 8);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(p: *const u8) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        simd::scales(p, false)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn values8(p: *const u8) -> [std::arch::x86_64::__m256; 4] {
        simd::nibbles::<8>(p.add(2))
    }
}

impl Block for Q4_1 {
    const BYTES: usize = 20;
    const HAS_MIN: bool = true;
    fn scales(b: &[u8]) -> (f32, f32) {
        (f16_at(b, 0), f16_at(b, 2))
    }
    fn values(b: &[u8], q: &mut [f32; QK]) {
        nibbles(&b[4..20], q, 0);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn scales8(p: *const u8) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
        simd::scales(p, true)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn values8(p: *const u8) -> [std::arch::x86_64::__m256; 4] {
        simd::nibbles::<0>(p.add(4))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cpu::testutil::{seed, Rng};
    use half::f16;

    /// Random f16 scale with magnitude in 1e-3..1 and a random sign.
    fn scale(rng: &mut Rng) -> f16 {
        let mag = 10f32.powf(-3.0 * (rng.uniform() * 0.5 + 0.5));
        let sign = if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 };
        f16::from_f32(sign * mag)
    }

    /// `blocks` random blocks of `format` (random quants, random scales).
    pub(crate) fn random_blocks(rng: &mut Rng, format: QuantFormat, blocks: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(blocks * format.block_bytes());
        for _ in 0..blocks {
            out.extend_from_slice(&scale(rng).to_le_bytes());
            if format == QuantFormat::Q4_1 {
                out.extend_from_slice(&scale(rng).to_le_bytes());
            }
            let qs = if format == QuantFormat::Q8_0 { 32 } else { 16 };
            out.extend((0..qs).map(|_| rng.next_u64() as u8));
        }
        out
    }

    /// The formulas as written in ggml's reference dequantizers, one element at a time.
    pub(crate) fn reference(format: QuantFormat, bytes: &[u8], k: usize) -> Vec<f32> {
        let bb = format.block_bytes();
        let mut y = vec![0f32; k];
        for (i, b) in bytes[..k / QK * bb].chunks_exact(bb).enumerate() {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            let y = &mut y[i * QK..(i + 1) * QK];
            match format {
                QuantFormat::Q8_0 => {
                    for j in 0..32 {
                        y[j] = (b[2 + j] as i8) as f32 * d;
                    }
                }
                QuantFormat::Q4_0 => {
                    for j in 0..16 {
                        y[j] = ((b[2 + j] & 0x0F) as i32 - 8) as f32 * d;
                        y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
                    }
                }
                QuantFormat::Q4_1 => {
                    let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
                    for j in 0..16 {
                        y[j] = (b[4 + j] & 0x0F) as f32 * d + m;
                        y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
                    }
                }
            }
        }
        y
    }

    pub(crate) const FORMATS: [QuantFormat; 3] =
        [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4_1];

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(QuantFormat::Q8_0.block_bytes(), 34);
        assert_eq!(QuantFormat::Q4_0.block_bytes(), 18);
        assert_eq!(QuantFormat::Q4_1.block_bytes(), 20);
        assert_eq!(QuantFormat::Q4_1.row_bytes(576), 18 * 20);
        assert_eq!(QuantFormat::Q8_0.row_bytes(0), 0);
    }

    #[test]
    fn dequantize_matches_reference_bitwise() {
        let s = seed(0x9a_0001);
        let mut rng = Rng::new(s);
        for format in FORMATS {
            for blocks in [0, 1, 2, 7, 48] {
                let k = blocks * QK;
                let bytes = random_blocks(&mut rng, format, blocks);
                let want = reference(format, &bytes, k);
                for isa in [Isa::Portable, Isa::detect()] {
                    let mut got = vec![f32::NAN; k];
                    dequantize_row_with(format, &bytes, &mut got, isa);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{format:?} {isa:?} k={k} (seed {s:#x})"
                    );
                }
            }
        }
    }

    /// Edge values of the scales: zero, subnormal, negative zero, the largest f16.
    #[test]
    fn dequantize_edge_scales() {
        let mut rng = Rng::new(seed(0x9a_0002));
        let specials = [0.0f32, -0.0, 6.0e-8, -6.1e-5, 65504.0, -1.0];
        for format in FORMATS {
            let mut bytes = random_blocks(&mut rng, format, specials.len());
            let bb = format.block_bytes();
            for (i, &v) in specials.iter().enumerate() {
                let h = f16::from_f32(v).to_le_bytes();
                bytes[i * bb..i * bb + 2].copy_from_slice(&h);
                if format == QuantFormat::Q4_1 {
                    let h = f16::from_f32(-v * 0.5).to_le_bytes();
                    bytes[i * bb + 2..i * bb + 4].copy_from_slice(&h);
                }
            }
            let k = specials.len() * QK;
            let want = reference(format, &bytes, k);
            for isa in [Isa::Portable, Isa::detect()] {
                let mut got = vec![f32::NAN; k];
                dequantize_row_with(format, &bytes, &mut got, isa);
                assert_eq!(bits(&got), bits(&want), "{format:?} {isa:?}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "need")]
    fn short_input_is_rejected() {
        let mut out = vec![0f32; 64];
        dequantize_row(QuantFormat::Q4_1, &[0u8; 39], &mut out);
    }
}
