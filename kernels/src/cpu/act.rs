//! Storage types of activations for the CPU twins of kernels that have bf16 variants: the
//! arithmetic is f32 whatever the storage, and each stored value is rounded to nearest even,
//! as `to_f32` / `from_f32` in `cuda/common.cuh`.

use half::bf16;

pub trait Act: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
    /// Round to nearest even (NaN stays NaN).
    fn from_f32(v: f32) -> Self;
}

impl Act for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> f32 {
        v
    }
}

impl Act for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
}

/// Σ f(x) in f32 over eight interleaved partial sums, then the tail: vectorizes without
/// reassociation licence and is more accurate than one serial sum.
#[inline(always)]
pub(crate) fn lane_sum<T: Act>(x: &[T], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += f(c[l].to_f32());
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for &v in tail {
        s += f(v.to_f32());
    }
    s
}
