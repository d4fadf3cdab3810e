//! GGUF v2/v3 container: header, metadata, tensor table, memory-mapped tensor data.
//!
//! Every length and count in the file is checked against the bytes that are actually left
//! before anything is allocated, so a corrupt or truncated file gives an error naming the
//! file and the field, never a panic or a multi-gigabyte allocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::cursor::{read_value, Cursor, ParseResult};
use super::types::GgmlType;
use super::value::{GgufArray, GgufValue};
use crate::error::{ModelError, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Smallest possible metadata entry: empty key (8), type (4), one-byte value.
const MIN_KV_BYTES: usize = 13;
/// Smallest possible tensor info: empty name (8), n_dims (4), one dim (8), type (4), offset (8).
const MIN_TENSOR_INFO_BYTES: usize = 32;

/// One entry of the tensor table. `dims` are in GGUF/ggml order: `dims[0]` is the fastest
/// varying (column) dimension, so the row-major shape is `dims` reversed.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Row-major shape (outermost first), e.g. `[out_features, in_features]` for a weight.
    pub fn shape(&self) -> Vec<usize> {
        // Every dim was checked to fit usize when the file was opened.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Elements in one row (`dims[0]`), the unit that quantization blocks tile.
    pub fn row_len(&self) -> usize {
        self.dims.first().map_or(1, |&d| d as usize)
    }
}

/// An opened GGUF file. The tensor data stays in the memory map; only metadata is parsed.
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    metadata_index: HashMap<String, usize>,
    tensors: Vec<GgufTensorInfo>,
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    data_offset: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens, memory-maps and validates a GGUF file (v2 or v3, little-endian).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let io_err = |source| ModelError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::File::open(&path).map_err(io_err)?;
        // SAFETY: the map is read-only and private to this struct. If another process
        // truncates the file while it is mapped, reads would fault; that is the accepted
        // contract of every mmap-based weight loader (safetensors, llama.cpp).
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let parsed = parse(&mmap).map_err(|message| ModelError::Format {
            path: path.clone(),
            message,
        })?;
        let Parsed {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        } = parsed;
        let metadata_index = metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path,
            mmap,
            version,
            metadata,
            metadata_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// All metadata entries in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A string entry; `Ok(None)` if absent, an error if present with another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "string", GgufValue::as_str)
    }

    /// A non-negative integer entry of any integer width.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "unsigned integer", GgufValue::as_u64)
    }

    /// An integer entry that must fit usize.
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get_u64(key)? {
            None => Ok(None),
            Some(v) => usize::try_from(v)
                .map(Some)
                .map_err(|_| self.format_error(format!("metadata {key} = {v} is too large"))),
        }
    }

    pub fn get_f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "number", GgufValue::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "bool", GgufValue::as_bool)
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&GgufArray>> {
        self.typed(key, "array", GgufValue::as_array)
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        conv: impl Fn(&'a GgufValue) -> Option<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => conv(v).map(Some).ok_or_else(|| {
                self.format_error(format!(
                    "metadata {key} should be a {expected}, found {} {v:?}",
                    v.type_name()
                ))
            }),
        }
    }

    /// The tensor table in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor of this file (range validated when the file was opened).
    pub fn tensor_data(&self, info: &GgufTensorInfo) -> Result<&[u8]> {
        let range = usize::try_from(info.offset)
            .ok()
            .and_then(|o| o.checked_add(self.data_offset))
            .and_then(|start| Some(start..start.checked_add(usize::try_from(info.n_bytes).ok()?)?));
        range.and_then(|r| self.mmap.get(r)).ok_or_else(|| {
            self.format_error(format!(
                "tensor {} data is outside the file (was the file changed on disk?)",
                info.name
            ))
        })
    }

    /// A `ModelError::Format` naming this file.
    pub fn format_error(&self, message: String) -> ModelError {
        ModelError::Format {
            path: self.path.clone(),
            message,
        }
    }
}

struct Parsed {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
    alignment: u64,
    data_offset: usize,
}

fn parse(buf: &[u8]) -> ParseResult<Parsed> {
    let mut cur = Cursor::new(buf);
    let magic = cur.take(4, &|| "the GGUF magic".into())?;
    if magic != MAGIC {
        return Err(format!(
            "not a GGUF file: starts with {magic:02x?}, expected \"GGUF\" (47 47 55 46)"
        ));
    }
    let version = cur.u32(&|| "the version".into())?;
    match version {
        2 | 3 => {}
        1 => return Err("GGUF version 1 is not supported; re-convert the model".into()),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err("big-endian GGUF files are not supported".into())
        }
        v => return Err(format!("unsupported GGUF version {v} (kiln reads 2 and 3)")),
    }
    let n_tensors = cur.count(MIN_TENSOR_INFO_BYTES, &|| "the tensor count".into())?;
    let n_kv = cur.count(MIN_KV_BYTES, &|| "the metadata entry count".into())?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen = std::collections::HashSet::with_capacity(n_kv);
    for i in 0..n_kv {
        let key = cur.string(&|| format!("metadata key #{i}"))?;
        let what = || format!("metadata {key}");
        let ty = cur.u32(&|| format!("type of {}", what()))?;
        let value = read_value(&mut cur, ty, 0, &what)?;
        if !seen.insert(key.clone()) {
            return Err(format!("metadata key {key} appears twice"));
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(format!(
                    "general.alignment is {v:?}; it must be a power of two up to 1 MiB"
                ))
            }
        },
    };

    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = std::collections::HashSet::with_capacity(n_tensors);
    for i in 0..n_tensors {
        let info = read_tensor_info(&mut cur, i)?;
        if !names.insert(info.name.clone()) {
            return Err(format!("tensor {} appears twice", info.name));
        }
        tensors.push(info);
    }

    let data_offset = align_up(cur.pos as u64, alignment);
    for t in &tensors {
        check_tensor_range(t, data_offset, alignment, buf.len())?;
    }
    let data_offset = usize::try_from(data_offset)
        .map_err(|_| "data section offset does not fit in memory".to_string())?;
    Ok(Parsed {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

fn align_up(pos: u64, alignment: u64) -> u64 {
    pos.div_ceil(alignment) * alignment
}

fn read_tensor_info(cur: &mut Cursor<'_>, index: usize) -> ParseResult<GgufTensorInfo> {
    let name = cur.string(&|| format!("name of tensor #{index}"))?;
    let what = |field: &str| format!("{field} of tensor {name}");
    let n_dims = cur.u32(&|| what("dimension count"))?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(format!(
            "tensor {name} has {n_dims} dimensions (ggml allows 1 to 4)"
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        dims.push(cur.u64(&|| what(&format!("dimension {d}")))?);
    }
    let type_id = cur.u32(&|| what("type"))?;
    let ggml_type = GgmlType::from_id(type_id)
        .ok_or_else(|| format!("tensor {name} has unknown GGML type id {type_id}"))?;
    let offset = cur.u64(&|| what("data offset"))?;

    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| format!("tensor {name} has an impossible shape {dims:?}"))?;
    if dims.contains(&0) {
        return Err(format!("tensor {name} has an empty dimension {dims:?}"));
    }
    let (block, type_size) = ggml_type.block_geometry();
    if dims[0] % block as u64 != 0 {
        return Err(format!(
            "tensor {name}: row length {} is not a multiple of the {ggml_type} block size {block}",
            dims[0]
        ));
    }
    let n_bytes = (n_elements / block as u64)
        .checked_mul(type_size as u64)
        .ok_or_else(|| format!("tensor {name} has an impossible shape {dims:?}"))?;
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        n_elements,
        n_bytes,
    })
}

fn check_tensor_range(
    t: &GgufTensorInfo,
    data_offset: u64,
    alignment: u64,
    file_len: usize,
) -> ParseResult<()> {
    if !t.offset.is_multiple_of(alignment) {
        return Err(format!(
            "tensor {} data offset {} is not a multiple of the alignment {alignment}",
            t.name, t.offset
        ));
    }
    let end = data_offset
        .checked_add(t.offset)
        .and_then(|s| s.checked_add(t.n_bytes));
    match end {
        Some(end) if end <= file_len as u64 => Ok(()),
        _ => Err(format!(
            "tensor {} ({} {:?}, {} bytes at data offset {}) runs past the end of the file \
             ({file_len} bytes): the file is truncated",
            t.name, t.ggml_type, t.dims, t.n_bytes, t.offset
        )),
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
