//! Bounds-checked decoding of GGUF's primitive encodings: integers, strings and (typed,
//! possibly nested) metadata values. Every length is checked against the bytes left
//! before anything is allocated.

use super::value::{GgufArray, GgufValue};

/// Nested arrays are legal but nothing uses more than one level; the cap keeps a crafted
/// file from recursing the reader off the stack.
const MAX_ARRAY_DEPTH: usize = 8;

pub(super) type ParseResult<T> = std::result::Result<T, String>;

/// A bounds-checked little-endian reader over the mapped bytes.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> ParseResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "file is truncated: {} needs {n} bytes at offset {} but only {} remain",
                what(),
                self.pos,
                self.remaining()
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        what: &dyn Fn() -> String,
    ) -> ParseResult<[u8; N]> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(super) fn u32(&mut self, what: &dyn Fn() -> String) -> ParseResult<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self, what: &dyn Fn() -> String) -> ParseResult<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A count that must be backed by at least `min_item_bytes` per item in what remains.
    pub(super) fn count(
        &mut self,
        min_item_bytes: usize,
        what: &dyn Fn() -> String,
    ) -> ParseResult<usize> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_bytes) <= self.remaining());
        fits.ok_or_else(|| {
            format!(
                "{} is {n}, impossible with {} bytes left in the file (corrupt or truncated)",
                what(),
                self.remaining()
            )
        })
    }

    pub(super) fn string(&mut self, what: &dyn Fn() -> String) -> ParseResult<String> {
        let len = self.count(1, &|| format!("length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| format!("{} is not valid UTF-8: {e}", what()))
    }
}

pub(super) fn read_value(
    cur: &mut Cursor<'_>,
    ty: u32,
    depth: usize,
    what: &dyn Fn() -> String,
) -> ParseResult<GgufValue> {
    Ok(match ty {
        0 => GgufValue::U8(u8::from_le_bytes(cur.array(what)?)),
        1 => GgufValue::I8(i8::from_le_bytes(cur.array(what)?)),
        2 => GgufValue::U16(u16::from_le_bytes(cur.array(what)?)),
        3 => GgufValue::I16(i16::from_le_bytes(cur.array(what)?)),
        4 => GgufValue::U32(u32::from_le_bytes(cur.array(what)?)),
        5 => GgufValue::I32(i32::from_le_bytes(cur.array(what)?)),
        6 => GgufValue::F32(f32::from_le_bytes(cur.array(what)?)),
        7 => GgufValue::Bool(cur.array::<1>(what)?[0] != 0),
        8 => GgufValue::String(cur.string(what)?),
        9 => GgufValue::Array(read_array(cur, depth, what)?),
        10 => GgufValue::U64(u64::from_le_bytes(cur.array(what)?)),
        11 => GgufValue::I64(i64::from_le_bytes(cur.array(what)?)),
        12 => GgufValue::F64(f64::from_le_bytes(cur.array(what)?)),
        t => return Err(format!("{} has unknown value type {t}", what())),
    })
}

fn read_array(
    cur: &mut Cursor<'_>,
    depth: usize,
    what: &dyn Fn() -> String,
) -> ParseResult<GgufArray> {
    if depth >= MAX_ARRAY_DEPTH {
        return Err(format!(
            "{} nests arrays deeper than {MAX_ARRAY_DEPTH}",
            what()
        ));
    }
    let elem = cur.u32(&|| format!("element type of {}", what()))?;
    // The minimum bytes per element bound the count before anything is allocated.
    let min_bytes = match elem {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        t => return Err(format!("{} has unknown element type {t}", what())),
    };
    let len = cur.count(min_bytes, &|| format!("length of {}", what()))?;
    let item = |i: usize| move || format!("{}[{i}]", what());
    Ok(match elem {
        0 => GgufArray::U8(read_vec(cur, len, u8::from_le_bytes, what)?),
        1 => GgufArray::I8(read_vec(cur, len, i8::from_le_bytes, what)?),
        2 => GgufArray::U16(read_vec(cur, len, u16::from_le_bytes, what)?),
        3 => GgufArray::I16(read_vec(cur, len, i16::from_le_bytes, what)?),
        4 => GgufArray::U32(read_vec(cur, len, u32::from_le_bytes, what)?),
        5 => GgufArray::I32(read_vec(cur, len, i32::from_le_bytes, what)?),
        6 => GgufArray::F32(read_vec(cur, len, f32::from_le_bytes, what)?),
        7 => GgufArray::Bool(read_vec(cur, len, |b: [u8; 1]| b[0] != 0, what)?),
        10 => GgufArray::U64(read_vec(cur, len, u64::from_le_bytes, what)?),
        11 => GgufArray::I64(read_vec(cur, len, i64::from_le_bytes, what)?),
        12 => GgufArray::F64(read_vec(cur, len, f64::from_le_bytes, what)?),
        8 => GgufArray::String(
            (0..len)
                .map(|i| cur.string(&item(i)))
                .collect::<ParseResult<_>>()?,
        ),
        _ => {
            let mut out = Vec::with_capacity(len);
            for i in 0..len {
                let inner = item(i);
                match read_value(cur, 9, depth + 1, &inner)? {
                    GgufValue::Array(a) => out.push(a),
                    _ => return Err(format!("{} is not an array", inner())),
                }
            }
            GgufArray::Array(out)
        }
    })
}

fn read_vec<T, const N: usize>(
    cur: &mut Cursor<'_>,
    len: usize,
    conv: impl Fn([u8; N]) -> T,
    what: &dyn Fn() -> String,
) -> ParseResult<Vec<T>> {
    let bytes = cur.take(len * N, what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            conv(a)
        })
        .collect())
}
