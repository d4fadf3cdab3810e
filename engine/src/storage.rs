use crate::dtype::{DType, Element};
use crate::error::{EngineError, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use std::sync::Arc;

/// Device memory behind a CUDA tensor (feature `cuda`).
#[cfg(feature = "cuda")]
pub use crate::backend::cuda::CudaStorage;

/// Host memory behind a CPU tensor: an owned vector, or a zero-copy window into a
/// memory-mapped weights file.
pub enum CpuStorage {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    U8(Vec<u8>),
    /// Blocks of a quantized dtype.
    Quant {
        dtype: DType,
        bytes: Vec<u8>,
    },
    Mapped {
        map: Arc<Mmap>,
        /// Byte range inside the map.
        start: usize,
        len: usize,
        dtype: DType,
    },
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I32(_) => DType::I32,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::U8(_) => DType::U8,
            CpuStorage::Quant { dtype, .. } | CpuStorage::Mapped { dtype, .. } => *dtype,
        }
    }

    pub fn zeros(dtype: DType, n: usize) -> Self {
        match dtype {
            DType::F32 => CpuStorage::F32(vec![0.0; n]),
            DType::F16 => CpuStorage::F16(vec![f16::ZERO; n]),
            DType::BF16 => CpuStorage::BF16(vec![bf16::ZERO; n]),
            DType::I32 => CpuStorage::I32(vec![0; n]),
            DType::U32 => CpuStorage::U32(vec![0; n]),
            DType::U8 => CpuStorage::U8(vec![0; n]),
            q => CpuStorage::Quant {
                dtype: q,
                bytes: vec![0; q.storage_bytes(n)],
            },
        }
    }

    pub fn from_vec<T: Element>(v: Vec<T>) -> Self {
        // One generic entry point; the match on T's dtype recovers the concrete vector type.
        fn cast<T: Element, U: Element>(v: Vec<T>) -> Vec<U> {
            bytemuck::allocation::cast_vec(v)
        }
        match T::DTYPE {
            DType::F32 => CpuStorage::F32(cast(v)),
            DType::F16 => CpuStorage::F16(cast(v)),
            DType::BF16 => CpuStorage::BF16(cast(v)),
            DType::I32 => CpuStorage::I32(cast(v)),
            DType::U32 => CpuStorage::U32(cast(v)),
            DType::U8 => CpuStorage::U8(cast(v)),
            q => unreachable!("{q} has no Rust element type"),
        }
    }

    /// Number of elements held.
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F16(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I32(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
            CpuStorage::U8(v) => v.len(),
            CpuStorage::Quant { dtype, bytes } => {
                bytes.len() / dtype.block_bytes() * dtype.block_size()
            }
            CpuStorage::Mapped { len, dtype, .. } => len / dtype.block_bytes() * dtype.block_size(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, CpuStorage::Mapped { .. })
    }

    /// The raw bytes, whatever the dtype.
    pub fn bytes(&self) -> &[u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice(v),
            CpuStorage::I32(v) => bytemuck::cast_slice(v),
            CpuStorage::U32(v) => bytemuck::cast_slice(v),
            CpuStorage::U8(v) | CpuStorage::Quant { bytes: v, .. } => v,
            CpuStorage::Mapped {
                map, start, len, ..
            } => &map[*start..*start + *len],
        }
    }

    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if self.dtype() != T::DTYPE {
            return Err(EngineError::Data(format!(
                "storage holds {}, asked for {}",
                self.dtype(),
                T::DTYPE
            )));
        }
        bytemuck::try_cast_slice(self.bytes())
            .map_err(|e| EngineError::Data(format!("unaligned tensor data: {e}")))
    }

    /// The raw bytes, writable (None for read-only mapped weights).
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        Some(match self {
            CpuStorage::F32(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::F16(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::I32(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::U32(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::U8(v) | CpuStorage::Quant { bytes: v, .. } => v,
            CpuStorage::Mapped { .. } => return None,
        })
    }

    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        let dtype = self.dtype();
        let bytes: &mut [u8] = match self {
            CpuStorage::F32(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::F16(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::BF16(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::I32(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::U32(v) => bytemuck::cast_slice_mut(v),
            CpuStorage::U8(v) | CpuStorage::Quant { bytes: v, .. } => v,
            CpuStorage::Mapped { .. } => {
                return Err(EngineError::Data(
                    "memory-mapped weights are read-only".into(),
                ))
            }
        };
        if dtype != T::DTYPE {
            return Err(EngineError::Data(format!(
                "storage holds {dtype}, asked for {}",
                T::DTYPE
            )));
        }
        bytemuck::try_cast_slice_mut(bytes)
            .map_err(|e| EngineError::Data(format!("unaligned tensor data: {e}")))
    }
}
