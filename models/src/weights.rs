//! Safetensors weights, memory-mapped: a single `model.safetensors`, a sharded set with
//! `model.safetensors.index.json`, or any `*.safetensors` files in a directory.

use crate::error::{ModelError, Result};
use kiln_engine::{DType, Tensor};
use memmap2::Mmap;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where one tensor's bytes are.
struct Entry {
    shard: usize,
    start: usize,
    dtype: DType,
    shape: Vec<usize>,
}

/// The tensors of a safetensors checkpoint, by HF name; reading one is zero-copy.
pub struct SafetensorsWeights {
    shards: Vec<(PathBuf, Arc<Mmap>)>,
    entries: HashMap<String, Entry>,
}

impl SafetensorsWeights {
    pub fn open_dir(dir: &Path) -> Result<Self> {
        Self::open_files(&shard_files(dir)?)
    }

    /// The tensors of the given safetensors files together.
    pub fn open_files(files: &[PathBuf]) -> Result<Self> {
        let mut weights = SafetensorsWeights {
            shards: Vec::new(),
            entries: HashMap::new(),
        };
        for path in files {
            weights.add_file(path)?;
        }
        Ok(weights)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only; kiln never writes weight files while they are mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let format_err = |message: String| ModelError::Format {
            path: path.to_path_buf(),
            message,
        };
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| format_err(format!("not a valid safetensors file: {e}")))?;
        let data_start = 8 + header_len;
        let shard = self.shards.len();
        for (name, info) in meta.tensors() {
            let dtype = match info.dtype {
                safetensors::Dtype::F32 => DType::F32,
                safetensors::Dtype::F16 => DType::F16,
                safetensors::Dtype::BF16 => DType::BF16,
                safetensors::Dtype::I32 => DType::I32,
                safetensors::Dtype::U32 => DType::U32,
                safetensors::Dtype::U8 => DType::U8,
                // Tensors of other dtypes (e.g. int64 counters) are skipped until asked for.
                _ => continue,
            };
            let (begin, end) = info.data_offsets;
            let n: usize = info.shape.iter().product();
            if end - begin != dtype.storage_bytes(n) || data_start + end > map.len() {
                return Err(format_err(format!(
                    "tensor {name}: data {begin}..{end} does not match shape {:?} {dtype} or the file size",
                    info.shape
                )));
            }
            self.entries.insert(
                name.clone(),
                Entry {
                    shard,
                    start: data_start + begin,
                    dtype,
                    shape: info.shape.clone(),
                },
            );
        }
        self.shards.push((path.to_path_buf(), Arc::new(map)));
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The tensor as stored (zero-copy when aligned).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let entry = self.entries.get(name).ok_or_else(|| {
            ModelError::NotFound(format!("tensor {name} is missing from {}", self.describe()))
        })?;
        let (_, map) = &self.shards[entry.shard];
        Ok(Tensor::from_mmap(
            map,
            entry.start,
            entry.dtype,
            &entry.shape,
        )?)
    }

    fn describe(&self) -> String {
        match self.shards.as_slice() {
            [(p, _)] => p.display().to_string(),
            shards => format!("{} safetensors shards", shards.len()),
        }
    }
}

/// The safetensors files of a checkpoint directory, index first.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let v = crate::config::read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::Format {
                path: index.clone(),
                message: "no weight_map object".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let missing: Vec<String> = paths
            .iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ModelError::NotFound(format!(
                "{} names shards that are missing: {}",
                index.display(),
                missing.join(", ")
            )));
        }
        return Ok(paths);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ModelError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(ModelError::NotFound(format!(
            "{}: no model.safetensors, model.safetensors.index.json or *.safetensors",
            dir.display()
        )));
    }
    Ok(found)
}

impl crate::llama::TensorSource for SafetensorsWeights {
    fn tensor(&self, name: &str, dtype: Option<DType>) -> Result<Tensor> {
        let t = self.get(name)?;
        match dtype {
            Some(d) if d != t.dtype() => Ok(t.to_dtype(d)?),
            _ => Ok(t),
        }
    }

    fn contains(&self, name: &str) -> bool {
        SafetensorsWeights::contains(self, name)
    }
}

/// GGUF tensors by HF name. With no dtype asked, Q8_0 / Q4_0 / Q4_1 stay in their blocks
/// (the CPU kernels multiply them directly), F32 / F16 / BF16 stay as stored, and the other
/// formats are dequantized to bf16. An explicit dtype dequantizes (exactly) and converts.
impl crate::llama::TensorSource for crate::gguf::GgufFile {
    fn tensor(&self, name: &str, dtype: Option<DType>) -> Result<Tensor> {
        use crate::gguf::GgmlType;
        if dtype.is_none() {
            let gguf_name = crate::gguf::hf_to_gguf_name(name);
            let stored = gguf_name.and_then(|g| self.tensor(&g)).map(|i| i.ggml_type);
            let keep = match stored {
                Some(GgmlType::Q8_0) => Some(DType::Q8_0),
                Some(GgmlType::Q4_0) => Some(DType::Q4_0),
                Some(GgmlType::Q4_1) => Some(DType::Q4_1),
                _ => None,
            };
            if let Some(q) = keep {
                let (shape, _, bytes) = crate::gguf::load_llama_tensor_raw(self, name)?;
                return Ok(Tensor::from_quant_bytes(bytes, q, &shape)?);
            }
            if let Some(plain @ (GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16)) = stored {
                let (shape, values) = crate::gguf::load_llama_tensor(self, name)?;
                let t = Tensor::from_vec(values, &shape)?;
                return Ok(match plain {
                    GgmlType::F16 => t.to_dtype(DType::F16)?,
                    GgmlType::Bf16 => t.to_dtype(DType::BF16)?,
                    _ => t,
                });
            }
        }
        let (shape, values) = crate::gguf::load_llama_tensor(self, name)?;
        let t = Tensor::from_vec(values, &shape)?;
        match dtype.unwrap_or(DType::BF16) {
            DType::F32 => Ok(t),
            d => Ok(t.to_dtype(d)?),
        }
    }

    fn contains(&self, name: &str) -> bool {
        crate::gguf::hf_to_gguf_name(name).is_some_and(|g| self.tensor(&g).is_some())
    }
}
