use crate::DType;

/// Engine errors: shape and dtype mismatches name the op and the offending sizes.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
    #[error("{op}: dtype {got} not supported here (expected {expected})")]
    DType {
        op: &'static str,
        got: DType,
        expected: String,
    },
    #[error("{op}: not supported on {backend} for dtypes {dtypes:?}")]
    Unsupported {
        op: &'static str,
        backend: &'static str,
        dtypes: Vec<DType>,
    },
    #[error("{op}: index {index} out of range 0..{len}")]
    IndexOutOfRange {
        op: &'static str,
        index: u64,
        len: usize,
    },
    #[error("tensor data: {0}")]
    Data(String),
    #[error("device: {0}")]
    Device(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

pub(crate) fn shape_err(op: &'static str, message: impl Into<String>) -> EngineError {
    EngineError::Shape {
        op,
        message: message.into(),
    }
}
