//! Test helpers: a minimal GGUF writer for synthetic files, and locating the committed
//! fixtures and the real SmolLM2 GGUF.

use std::path::PathBuf;

use super::value::{GgufArray, GgufValue};

/// Builds GGUF v3 bytes in memory.
#[derive(Default)]
pub struct GgufBuilder {
    kv: Vec<(String, GgufValue)>,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    pub alignment: u64,
}

impl GgufBuilder {
    pub fn new() -> Self {
        Self {
            alignment: 32,
            ..Default::default()
        }
    }

    pub fn kv(mut self, key: &str, value: GgufValue) -> Self {
        if key == "general.alignment" {
            if let Some(a) = value.as_u64() {
                self.alignment = a;
            }
        }
        self.kv.push((key.to_string(), value));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.to_string(), dims.to_vec(), type_id, data));
        self
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, ty, data) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        pad_to(&mut out, self.alignment);
        let data_start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }

    /// Writes the file into `dir` and returns its path.
    pub fn write(&self, dir: &tempfile::TempDir, name: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, self.build()).expect("write test gguf");
        path
    }
}

fn pad_to(out: &mut Vec<u8>, alignment: u64) {
    let len = (out.len() as u64).div_ceil(alignment) * alignment;
    out.resize(len as usize, 0);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    out.extend_from_slice(&type_id(v).to_le_bytes());
    put_payload(out, v);
}

fn put_payload(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(a) => put_array(out, a),
    }
}

fn put_array(out: &mut Vec<u8>, a: &GgufArray) {
    let items: Vec<GgufValue> = match a {
        GgufArray::U8(v) => v.iter().map(|&x| GgufValue::U8(x)).collect(),
        GgufArray::I8(v) => v.iter().map(|&x| GgufValue::I8(x)).collect(),
        GgufArray::U16(v) => v.iter().map(|&x| GgufValue::U16(x)).collect(),
        GgufArray::I16(v) => v.iter().map(|&x| GgufValue::I16(x)).collect(),
        GgufArray::U32(v) => v.iter().map(|&x| GgufValue::U32(x)).collect(),
        GgufArray::I32(v) => v.iter().map(|&x| GgufValue::I32(x)).collect(),
        GgufArray::U64(v) => v.iter().map(|&x| GgufValue::U64(x)).collect(),
        GgufArray::I64(v) => v.iter().map(|&x| GgufValue::I64(x)).collect(),
        GgufArray::F32(v) => v.iter().map(|&x| GgufValue::F32(x)).collect(),
        GgufArray::F64(v) => v.iter().map(|&x| GgufValue::F64(x)).collect(),
        GgufArray::Bool(v) => v.iter().map(|&x| GgufValue::Bool(x)).collect(),
        GgufArray::String(v) => v.iter().map(|x| GgufValue::String(x.clone())).collect(),
        GgufArray::Array(v) => v.iter().map(|x| GgufValue::Array(x.clone())).collect(),
    };
    let elem = match a {
        GgufArray::U8(_) => 0,
        GgufArray::I8(_) => 1,
        GgufArray::U16(_) => 2,
        GgufArray::I16(_) => 3,
        GgufArray::U32(_) => 4,
        GgufArray::I32(_) => 5,
        GgufArray::F32(_) => 6,
        GgufArray::Bool(_) => 7,
        GgufArray::String(_) => 8,
        GgufArray::Array(_) => 9,
        GgufArray::U64(_) => 10,
        GgufArray::I64(_) => 11,
        GgufArray::F64(_) => 12,
    };
    out.extend_from_slice(&(elem as u32).to_le_bytes());
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for item in &items {
        put_payload(out, item);
    }
}

pub fn str_val(s: &str) -> GgufValue {
    GgufValue::String(s.to_string())
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `tests/fixtures` at the workspace root.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests")
        .join("fixtures")
}

/// The real SmolLM2 GGUF under `$KILN_HOME` (default `~/.cache/kiln`). Panics with the fix
/// when it is missing: a test that needs the model must fail, not pass silently.
pub fn smollm2_gguf() -> PathBuf {
    let home = std::env::var_os("KILN_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")))
        .expect("neither KILN_HOME nor HOME is set");
    let path = home
        .join("models/@hf/huggingfacetb/smollm2-135m-instruct")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-models.sh to install the SmolLM2 GGUF",
        path.display()
    );
    path
}
