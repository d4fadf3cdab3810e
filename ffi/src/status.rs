//! `kiln_status` in kiln.h.

/// What a call did; the values are those of kiln.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_NULL_ARGUMENT = 1,
    KILN_ERR_INVALID_UTF8 = 2,
    KILN_ERR_INVALID_JSON = 3,
    KILN_ERR_UNKNOWN_MODEL = 4,
    KILN_ERR_BAD_INPUT = 5,
    KILN_ERR_INVALID_OPTIONS = 6,
    KILN_ERR_BUSY = 7,
    KILN_ERR_CANCELLED = 8,
    KILN_ERR_INTERNAL = 9,
}
