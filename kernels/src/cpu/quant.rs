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
        out.len().is_multiple_of(QK),
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
        let q = B::raw8(p);
        let (d, m) = B::scales8(p);
        for (t, v) in q.iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * QK + 8 * t), dequant8::<B>(*v, d, m));
        }
    }
}

/// Eight stored integers (`raw8`) to their f32 values with the block's `d` and `m`, rounding
/// exactly as the scalar reference: the one formula of the AVX2 dequantization and of the
/// fused GEMV in `matmul_quant.rs`, which must agree bit for bit.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn dequant8<B: Block>(
    v: std::arch::x86_64::__m256,
    d: std::arch::x86_64::__m256,
    m: std::arch::x86_64::__m256,
) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    // q − 8 is exact in f32 (small integers), so this equals converting (q − 8).
    let v = if B::OFFSET != 0 {
        _mm256_sub_ps(v, _mm256_set1_ps(B::OFFSET as f32))
    } else {
        v
    };
    // Separate multiply and add (not FMA) to round exactly as the scalar reference.
    let y = _mm256_mul_ps(v, d);
    if B::HAS_MIN {
        _mm256_add_ps(y, m)
    } else {
        y
    }
}

/// One block format: how to read its scales and its 32 integer values.
pub(crate) trait Block: Copy + Send + Sync + 'static {
    const BYTES: usize;
    /// Q4_1 has an additive minimum `m`; the others have none (their `m` reads as 0).
    const HAS_MIN: bool;
    /// Subtracted from the stored integer (8 for Q4_0, else 0).
    const OFFSET: i32;
    /// `(d, m)` as f32 (exact widening of the f16 fields).
    fn scales(b: &[u8]) -> (f32, f32);
    /// The 32 integer values as f32 (exact), already offset (q − 8 for Q4_0).
    fn values(b: &[u8], q: &mut [f32; QK]);
    /// `d` and `m` broadcast to all lanes.
    #[cfg(target_arch = "x86_64")]
    unsafe fn scales8(p: *const u8) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256);
    /// The 32 stored integers (before `OFFSET`) as four f32 vectors: elements 0..8, 8..16,
    /// 16..24, 24..32 (`dequant8` turns each into values).
    #[cfg(target_arch = "x86_64")]
    unsafe fn raw8(p: *const u8) -> [std::arch::x86_64::__m256; 4];
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

    /// Eight signed bytes at `p` as f32 (the 8-byte load folds into vpmovsxbd).
    #[inline(always)]
    pub(super) unsafe fn widen_i8(p: *const u8) -> __m256 {
        let v = _mm_loadl_epi64(p as *const __m128i);
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
    }

    /// Byte-shuffle controls for `nibbles`: dword i of lane 0 takes byte s + i, of lane 1 byte
    /// s + 4 + i (s = 0, then 8); -1 (bit 7 set) writes zero.
    static SPREAD: [[i8; 32]; 2] = {
        let mut c = [[-1i8; 32]; 2];
        let mut h = 0;
        while h < 2 {
            let mut i = 0;
            while i < 8 {
                c[h][4 * i] = (8 * h + i) as i8;
                i += 1;
            }
            h += 1;
        }
        c
    };

    /// The 16 nibble bytes at `p` as four f32 vectors (elements 0..8, 8..16, 16..24, 24..32).
    ///
    /// The bytes are broadcast to both 128-bit lanes and one in-lane byte shuffle puts byte j
    /// alone in the low byte of dword j (bytes 0..8, then 8..16), so the low nibble is one AND
    /// and the high nibble one dword shift away: fewer uops than separating the nibbles in
    /// bytes and sign-extending each group of eight (vpmovsxbd crosses lanes on Zen 3).
    #[inline(always)]
    pub(super) unsafe fn nibbles(p: *const u8) -> [__m256; 4] {
        let raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
        let spread = |c: &[i8; 32]| _mm256_loadu_si256(c.as_ptr() as *const __m256i);
        let mask = _mm256_set1_epi32(0x0F);
        let a = _mm256_shuffle_epi8(raw, spread(&SPREAD[0]));
        let b = _mm256_shuffle_epi8(raw, spread(&SPREAD[1]));
        [
            _mm256_cvtepi32_ps(_mm256_and_si256(a, mask)),
            _mm256_cvtepi32_ps(_mm256_and_si256(b, mask)),
            _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(a)),
            _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(b)),
        ]
    }
}

impl Block for Q8_0 {
    const BYTES: usize = 34;
    const HAS_MIN: bool = false;
    const OFFSET: i32 = 0;
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
    unsafe fn raw8(p: *const u8) -> [std::arch::x86_64::__m256; 4] {
        // 8-byte loads fold into vpmovsxbd's memory operand: no shuffles needed.
        let q = p.add(2);
        [
            simd::widen_i8(q),
            simd::widen_i8(q.add(8)),
            simd::widen_i8(q.add(16)),
            simd::widen_i8(q.add(24)),
        ]
    }
}

impl Block for Q4_0 {
    const BYTES: usize = 18;
    const HAS_MIN: bool = false;
    const OFFSET: i32 = 8;
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
    unsafe fn raw8(p: *const u8) -> [std::arch::x86_64::__m256; 4] {
        simd::nibbles(p.add(2))
    }
}

impl Block for Q4_1 {
    const BYTES: usize = 20;
    const HAS_MIN: bool = true;
    const OFFSET: i32 = 0;
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
    unsafe fn raw8(p: *const u8) -> [std::arch::x86_64::__m256; 4] {
        simd::nibbles(p.add(4))
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
