use half::{bf16, f16};
use std::fmt;

/// Element types a tensor can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    U32,
    U8,
    /// GGML block formats (32 weights a block), kept quantized for matmul and embedding
    /// weights: Q8_0 = f16 scale + 32 i8; Q4_0 = f16 scale + 32 nibbles (offset 8);
    /// Q4_1 = f16 scale + f16 min + 32 nibbles.
    Q8_0,
    Q4_0,
    Q4_1,
}

impl DType {
    /// Elements per storage block: 1, or 32 for the quantized formats.
    pub fn block_size(self) -> usize {
        if self.is_quantized() {
            32
        } else {
            1
        }
    }

    /// Bytes per storage block (per element for the plain dtypes).
    pub fn block_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
            DType::Q8_0 => 34,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
        }
    }

    /// Bytes that hold `n` elements (`n` a multiple of the block size).
    pub fn storage_bytes(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }

    /// Required alignment of the data in memory.
    pub fn alignment(self) -> usize {
        if self.is_quantized() {
            1
        } else {
            self.block_bytes()
        }
    }

    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Q8_0 | DType::Q4_0 | DType::Q4_1)
    }

    /// Usable as a matmul / embedding weight.
    pub fn is_weight(self) -> bool {
        self.is_float() || self.is_quantized()
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::U8 => "u8",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
        }
    }

    /// Parses "f32", "float32", "bf16", "bfloat16", "f16", "float16".
    pub fn parse_float(s: &str) -> Option<DType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Some(DType::F32),
            "bf16" | "bfloat16" => Some(DType::BF16),
            "f16" | "float16" | "half" => Some(DType::F16),
            _ => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that is the element of some `DType`.
pub trait Element: bytemuck::Pod + Send + Sync + fmt::Debug + 'static {
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for u32 {
    const DTYPE: DType = DType::U32;
}
impl Element for u8 {
    const DTYPE: DType = DType::U8;
}
