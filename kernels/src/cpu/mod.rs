//! CPU twins of the kernels, one op family per file (same names as `cuda/*.cu`).

pub mod act;
pub mod argmax;
pub mod attention;
mod attn_core;
pub mod binary;
pub mod cast;
pub mod copy;
pub mod embedding;
pub mod gelu;
pub mod layernorm;
pub mod matmul;
pub mod paged_attention;
pub mod quant;
pub mod rmsnorm;
pub mod rope;
pub mod sample;
pub mod silu_mul;
pub mod softmax;
pub mod varlen_attention;
mod vecops;

#[cfg(test)]
mod testutil;

use half::{bf16, f16};

/// An output buffer as a raw pointer that rayon tasks may share: each task writes a disjoint
/// set of its elements (columns of a row-major [m, n] matmul output, rows of an attention
/// output), which `par_chunks_mut` cannot express.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: every user writes disjoint elements from each task (see the call sites), and only
// within the borrow of the output slice the pointer came from.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    // A method (not `.0`) so closures capture the whole Send wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// A row-major weight matrix (or table) as stored: f32, or 16-bit with f32 accumulation, or
/// GGML blocks (row n is `format.row_bytes(k)` bytes; k a multiple of 32).
#[derive(Clone, Copy, Debug)]
pub enum WeightSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    Quant {
        format: quant::QuantFormat,
        bytes: &'a [u8],
    },
}

impl WeightSlice<'_> {
    /// Number of weight elements.
    pub fn len(&self) -> usize {
        match self {
            WeightSlice::F32(s) => s.len(),
            WeightSlice::F16(s) => s.len(),
            WeightSlice::BF16(s) => s.len(),
            // Whole blocks only: a trailing partial block holds no complete element run.
            WeightSlice::Quant { format, bytes } => bytes.len() / format.block_bytes() * quant::QK,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
