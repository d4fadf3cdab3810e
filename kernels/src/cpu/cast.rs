//! Round-to-nearest-even conversions between the float dtypes (the `half` crate's, which keep
//! NaN a NaN and use F16C for f16 slices when the CPU has it).

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use rayon::prelude::*;

/// Elements per rayon task; smaller inputs are converted on the calling thread.
const CHUNK: usize = 1 << 16;

fn par_convert<A: Sync, B: Send>(x: &[A], out: &mut [B], f: impl Fn(&[A], &mut [B]) + Sync) {
    assert_eq!(x.len(), out.len(), "cast: length mismatch");
    if x.len() <= CHUNK {
        f(x, out);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(o, x)| f(x, o));
    }
}

/// Round-to-nearest-even conversions between the float dtypes.
pub fn f32_to_bf16(x: &[f32], out: &mut [bf16]) {
    par_convert(x, out, |x, o| o.convert_from_f32_slice(x));
}
pub fn f32_to_f16(x: &[f32], out: &mut [f16]) {
    par_convert(x, out, |x, o| o.convert_from_f32_slice(x));
}
pub fn bf16_to_f32(x: &[bf16], out: &mut [f32]) {
    par_convert(x, out, |x, o| x.convert_to_f32_slice(o));
}
pub fn f16_to_f32(x: &[f16], out: &mut [f32]) {
    par_convert(x, out, |x, o| x.convert_to_f32_slice(o));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{seed, Rng};

    /// Round-to-nearest-even to `mant` explicit mantissa bits, computed independently of `half`
    /// for normal values: the bits that fall off decide, ties go to the even neighbour.
    fn rne_bf16_bits(v: f32) -> u16 {
        let b = v.to_bits();
        let rest = b & 0xffff;
        let mut hi = b >> 16;
        if rest > 0x8000 || (rest == 0x8000 && hi & 1 == 1) {
            hi += 1;
        }
        hi as u16
    }

    #[test]
    fn bf16_round_trip_is_rne() {
        let s = seed(0xca_0001);
        let mut rng = Rng::new(s);
        for n in [1, 31, 32, 33, 200_001] {
            let mut x = rng.vec(n);
            if n == 33 {
                // Exact ties: halfway between two bf16 values, both parities.
                x[0] = f32::from_bits(0x3f80_8000);
                x[1] = f32::from_bits(0x3f81_8000);
            }
            let mut b = vec![bf16::ZERO; n];
            f32_to_bf16(&x, &mut b);
            for (i, (&v, h)) in x.iter().zip(&b).enumerate() {
                assert_eq!(
                    h.to_bits(),
                    rne_bf16_bits(v),
                    "n={n} i={i} v={v} (seed {s:#x})"
                );
            }
            let mut back = vec![f32::NAN; n];
            bf16_to_f32(&b, &mut back);
            for (h, f) in b.iter().zip(&back) {
                assert_eq!(((h.to_bits() as u32) << 16), f.to_bits());
            }
        }
    }

    #[test]
    fn f16_round_trip_is_close() {
        let s = seed(0xca_0002);
        let mut rng = Rng::new(s);
        for n in [1, 31, 32, 33, 200_001] {
            let x = rng.vec(n);
            let mut h = vec![f16::ZERO; n];
            f32_to_f16(&x, &mut h);
            let mut back = vec![f32::NAN; n];
            f16_to_f32(&h, &mut back);
            for (i, (&v, &r)) in x.iter().zip(&back).enumerate() {
                // Nearest: error at most half an f16 ulp (2^-11 relative, 2^-25 absolute near 0).
                let tol = (v.abs() * (2f32).powi(-11)).max((2f32).powi(-25));
                assert!(
                    (v - r).abs() <= tol,
                    "n={n} i={i} v={v} r={r} (seed {s:#x})"
                );
            }
        }
        let mut h = [f16::ZERO; 2];
        f32_to_f16(&[f32::NAN, 1e6], &mut h);
        assert!(h[0].is_nan() && h[1].is_infinite());
        // Tie between 1.0 and 1.0 + 2^-10 rounds to the even one (1.0).
        f32_to_f16(&[1.0 + (2f32).powi(-11), 0.0], &mut h);
        assert_eq!(h[0].to_f32(), 1.0);
    }
}
