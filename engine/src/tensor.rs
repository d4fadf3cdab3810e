use crate::backend::{backend_for, Device};
use crate::dtype::{DType, Element};
use crate::error::{shape_err, EngineError, Result};
use crate::layout::Layout;
use crate::op::Op;
use crate::storage::CpuStorage;
use kiln_kernels::cpu::copy as k_copy;
use kiln_kernels::cpu::gelu::GeluApprox;
use kiln_kernels::cpu::rope::RopeStyle;
use memmap2::Mmap;
use std::sync::Arc;

/// Where a tensor's elements live.
pub enum Storage {
    Cpu(CpuStorage),
    #[cfg(feature = "cuda")]
    Cuda(crate::storage::CudaStorage),
}

/// The error for host-only accessors on a device tensor.
#[cfg(feature = "cuda")]
fn on_device(what: &str, device: Device) -> EngineError {
    EngineError::Data(format!(
        "{what}: the tensor is on {device}; copy it with to_device(Device::Cpu) or to_vec()"
    ))
}

/// An n-dimensional array on a device: shared storage plus a view (shape, strides, offset).
/// Cloning is cheap (the storage is reference counted); ops return new tensors.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    layout: Layout,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor[{:?}, {}, {:?}]",
            self.shape(),
            self.dtype,
            self.device()
        )
    }
}

impl Tensor {
    pub(crate) fn from_storage(storage: Storage, shape: &[usize]) -> Self {
        let dtype = match &storage {
            Storage::Cpu(s) => s.dtype(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => s.dtype(),
        };
        Tensor {
            storage: Arc::new(storage),
            layout: Layout::contiguous(shape),
            dtype,
        }
    }

    /// A CPU tensor owning `data`, which must hold exactly `shape.iter().product()` elements.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(shape_err(
                "from_vec",
                format!("{} elements for shape {shape:?} ({n})", data.len()),
            ));
        }
        Ok(Self::from_storage(
            Storage::Cpu(CpuStorage::from_vec(data)),
            shape,
        ))
    }

    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Self> {
        Self::from_vec(data.to_vec(), shape)
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: Device) -> Result<Self> {
        match device {
            Device::Cpu => {
                let n = shape.iter().product();
                Ok(Self::from_storage(
                    Storage::Cpu(CpuStorage::zeros(dtype, n)),
                    shape,
                ))
            }
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => crate::backend::cuda::zeros(shape, dtype, n),
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Err(crate::backend::no_cuda()),
        }
    }

    /// This tensor on `device`: a cheap clone when it is already there, otherwise a dense
    /// copy (host <-> device through pinned staging buffers).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        #[cfg(feature = "cuda")]
        {
            crate::backend::cuda::to_device(self, device)
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(crate::backend::no_cuda())
        }
    }

    /// Makes this tensor the only owner of its storage (copying it if shared), so an
    /// in-place op does not change other tensors.
    #[cfg(feature = "cuda")]
    pub(crate) fn make_storage_unique(&mut self) -> Result<()> {
        if Arc::get_mut(&mut self.storage).is_none() {
            *self = self.deep_copy()?;
        }
        Ok(())
    }

    /// A tensor backed by bytes of a memory-mapped file: zero-copy when the bytes are aligned
    /// for the dtype, otherwise copied once.
    pub fn from_mmap(
        map: &Arc<Mmap>,
        byte_start: usize,
        dtype: DType,
        shape: &[usize],
    ) -> Result<Self> {
        let n: usize = shape.iter().product();
        check_quant_shape(dtype, shape)?;
        let len = dtype.storage_bytes(n);
        let end = byte_start
            .checked_add(len)
            .filter(|&e| e <= map.len())
            .ok_or_else(|| {
                EngineError::Data(format!(
                    "tensor bytes {byte_start}..{} past the end of the file ({} bytes)",
                    byte_start + len,
                    map.len()
                ))
            })?;
        let bytes = &map[byte_start..end];
        let aligned = (bytes.as_ptr() as usize).is_multiple_of(dtype.alignment());
        let storage = if aligned {
            CpuStorage::Mapped {
                map: map.clone(),
                start: byte_start,
                len,
                dtype,
            }
        } else {
            copy_unaligned(bytes, dtype)
        };
        Ok(Self::from_storage(Storage::Cpu(storage), shape))
    }

    /// A CPU tensor of a quantized dtype from its raw blocks (row-major; the last dimension
    /// a multiple of the block size).
    pub fn from_quant_bytes(bytes: Vec<u8>, dtype: DType, shape: &[usize]) -> Result<Self> {
        check_quant_shape(dtype, shape)?;
        let n: usize = shape.iter().product();
        if !dtype.is_quantized() || bytes.len() != dtype.storage_bytes(n) {
            return Err(shape_err(
                "from_quant_bytes",
                format!("{} bytes of {dtype} for shape {shape:?}", bytes.len()),
            ));
        }
        Ok(Self::from_storage(
            Storage::Cpu(CpuStorage::Quant { dtype, bytes }),
            shape,
        ))
    }

    /// Raw bytes of a contiguous tensor (any dtype; quantized views start on a block).
    pub fn raw_bytes(&self) -> Result<&[u8]> {
        if !self.is_contiguous() || !self.layout.offset().is_multiple_of(self.dtype.block_size()) {
            return Err(EngineError::Data(
                "raw_bytes needs a contiguous tensor starting on a block".into(),
            ));
        }
        match self.storage.as_ref() {
            Storage::Cpu(s) => {
                let start = self.dtype.storage_bytes(self.layout.offset());
                let len = self.dtype.storage_bytes(self.elem_count());
                Ok(&s.bytes()[start..start + len])
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(on_device("raw_bytes", self.device())),
        }
    }

    pub fn shape(&self) -> &[usize] {
        self.layout.shape()
    }

    pub fn dims(&self) -> &[usize] {
        self.shape()
    }

    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    /// Size of dimension `d`; negative-free indexing keeps call sites explicit.
    pub fn dim(&self, d: usize) -> Result<usize> {
        self.shape()
            .get(d)
            .copied()
            .ok_or_else(|| shape_err("dim", format!("dim {d} of shape {:?}", self.shape())))
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> Device {
        match self.storage.as_ref() {
            Storage::Cpu(_) => Device::Cpu,
            #[cfg(feature = "cuda")]
            Storage::Cuda(s) => crate::backend::cuda::storage_device(s),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn elem_count(&self) -> usize {
        self.layout.elem_count()
    }

    pub fn is_contiguous(&self) -> bool {
        self.layout.is_contiguous()
    }

    /// True when the data is a zero-copy window of a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        match self.storage.as_ref() {
            Storage::Cpu(s) => s.is_mapped(),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => false,
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The elements of a contiguous CPU tensor, borrowed.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        if !self.is_contiguous() {
            return Err(EngineError::Data(
                "as_slice needs a contiguous tensor; call contiguous() first".into(),
            ));
        }
        match self.storage.as_ref() {
            Storage::Cpu(s) => {
                let all = s.as_slice::<T>()?;
                let start = self.layout.offset();
                Ok(&all[start..start + self.elem_count()])
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(on_device("as_slice", self.device())),
        }
    }

    /// Mutable elements of a contiguous tensor whose storage nothing else shares
    /// (copied first if it is shared: copy-on-write).
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        if !self.is_contiguous() {
            return Err(EngineError::Data(
                "as_mut_slice needs a contiguous tensor".into(),
            ));
        }
        #[cfg(feature = "cuda")]
        if self.device() != Device::Cpu {
            return Err(on_device("as_mut_slice", self.device()));
        }
        if Arc::get_mut(&mut self.storage).is_none() || self.is_mapped() {
            *self = self.deep_copy()?;
        }
        let start = self.layout.offset();
        let n = self.elem_count();
        let storage = Arc::get_mut(&mut self.storage)
            .ok_or_else(|| EngineError::Data("tensor storage still shared".into()))?;
        match storage {
            Storage::Cpu(s) => Ok(&mut s.as_mut_slice::<T>()?[start..start + n]),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => Err(EngineError::Data(
                "as_mut_slice: the tensor is on a CUDA device".into(),
            )),
        }
    }

    /// All elements in row-major order, copied to a vector (any layout).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        match self.storage.as_ref() {
            Storage::Cpu(s) => {
                let all = s.as_slice::<T>()?;
                if self.is_contiguous() {
                    let start = self.layout.offset();
                    Ok(all[start..start + self.elem_count()].to_vec())
                } else {
                    let mut out = vec![T::zeroed(); self.elem_count()];
                    let l = &self.layout;
                    k_copy::copy_strided(all, l.offset(), l.shape(), l.strides(), &mut out);
                    Ok(out)
                }
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => self.to_device(Device::Cpu)?.to_vec(),
        }
    }

    /// A dense copy with its own storage.
    pub fn deep_copy(&self) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Storage::Cuda(_) = self.storage.as_ref() {
            return crate::backend::cuda::copy_contiguous(self);
        }
        match self.dtype {
            DType::F32 => Tensor::from_vec(self.to_vec::<f32>()?, self.shape()),
            DType::F16 => Tensor::from_vec(self.to_vec::<half::f16>()?, self.shape()),
            DType::BF16 => Tensor::from_vec(self.to_vec::<half::bf16>()?, self.shape()),
            DType::I32 => Tensor::from_vec(self.to_vec::<i32>()?, self.shape()),
            DType::U32 => Tensor::from_vec(self.to_vec::<u32>()?, self.shape()),
            DType::U8 => Tensor::from_vec(self.to_vec::<u8>()?, self.shape()),
            q => Tensor::from_quant_bytes(self.raw_bytes()?.to_vec(), q, self.shape()),
        }
    }

    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            Ok(self.clone())
        } else {
            self.deep_copy()
        }
    }

    /// Same elements, new shape (contiguous tensors only; no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.elem_count() {
            return Err(shape_err(
                "reshape",
                format!("{:?} -> {shape:?} changes the element count", self.shape()),
            ));
        }
        let src = self.contiguous()?;
        let layout = Layout::contiguous(shape).with_offset(src.layout.offset());
        Ok(Tensor {
            storage: src.storage,
            layout,
            dtype: src.dtype,
        })
    }

    /// A view of `len` entries of dimension `dim` starting at `start` (no copy).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        Ok(Tensor {
            storage: self.storage.clone(),
            layout: self.layout.narrow(dim, start, len)?,
            dtype: self.dtype,
        })
    }

    /// A view with dimensions `a` and `b` swapped (no copy).
    pub fn transpose(&self, a: usize, b: usize) -> Result<Tensor> {
        Ok(Tensor {
            storage: self.storage.clone(),
            layout: self.layout.transpose(a, b)?,
            dtype: self.dtype,
        })
    }

    fn apply(&self, op: Op, others: &[&Tensor]) -> Result<Tensor> {
        let mut inputs = Vec::with_capacity(others.len() + 1);
        inputs.push(self);
        inputs.extend_from_slice(others);
        backend_for(self.device()).execute(&op, &inputs)
    }

    /// `self` [.., K] times `w` [N, K] transposed -> [.., N].
    pub fn matmul_t(&self, w: &Tensor) -> Result<Tensor> {
        self.linear(w, None, None)
    }

    /// A linear layer in one op: `self` [.., K] · `w` [N, K]ᵀ + `bias` [N] + `residual`
    /// [.., N] (both f32, both optional), added in that order.
    pub fn linear(
        &self,
        w: &Tensor,
        bias: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let op = Op::Matmul {
            bias: bias.is_some(),
            residual: residual.is_some(),
        };
        let mut others = vec![w];
        others.extend(bias);
        others.extend(residual);
        self.apply(op, &others)
    }

    /// Rows of `self` (a [vocab, hidden] table) selected by `ids`.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        self.apply(Op::Embedding, &[ids])
    }

    pub fn rms_norm(&self, w: &Tensor, eps: f32) -> Result<Tensor> {
        self.apply(Op::RmsNorm { eps }, &[w])
    }

    /// Rotary embedding of `self` [tokens, heads, head_dim] at `positions` [tokens] (u32).
    pub fn rope(
        &self,
        positions: &Tensor,
        inv_freq: &Tensor,
        style: RopeStyle,
        attention_scaling: f32,
    ) -> Result<Tensor> {
        self.apply(
            Op::Rope {
                style,
                attention_scaling,
            },
            &[positions, inv_freq],
        )
    }

    /// silu(self) * up.
    pub fn silu_mul(&self, up: &Tensor) -> Result<Tensor> {
        self.apply(Op::SiluMul, &[up])
    }

    /// torch's LayerNorm over the last dimension with weight `w` and bias `b` [h].
    pub fn layer_norm(&self, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
        self.apply(Op::LayerNorm { eps }, &[w, b])
    }

    /// torch's `gelu(self, approximate=...)`.
    pub fn gelu(&self, approx: GeluApprox) -> Result<Tensor> {
        self.apply(Op::Gelu { approx }, &[])
    }

    /// self * sigmoid(1.702 self) (CLIP's QuickGELU).
    pub fn quick_gelu(&self) -> Result<Tensor> {
        self.apply(Op::QuickGelu, &[])
    }

    /// The fused residual add + RMSNorm: `(sum, normed)` with `sum = self + residual` (rounded
    /// to the dtype; the next residual) and `normed = sum.rms_norm(w, eps)`. Both are
    /// contiguous views of one [2, ..shape] output.
    pub fn add_rms_norm(
        &self,
        residual: &Tensor,
        w: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor)> {
        let both = self.apply(Op::AddRmsNorm { eps }, &[residual, w])?;
        let half = |i| both.narrow(0, i, 1)?.reshape(self.shape());
        Ok((half(0)?, half(1)?))
    }

    pub fn softmax(&self, scale: f32, causal: bool) -> Result<Tensor> {
        self.apply(Op::Softmax { scale, causal }, &[])
    }

    /// Attention of queries `self` [q_len, heads, d] over `k`, `v` [kv_len, kv_heads, d].
    pub fn attention(&self, k: &Tensor, v: &Tensor, scale: f32, causal: bool) -> Result<Tensor> {
        self.apply(Op::Attention { scale, causal }, &[k, v])
    }

    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.apply(Op::Add, &[other])
    }

    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.apply(Op::Mul, &[other])
    }

    pub fn scale(&self, factor: f32) -> Result<Tensor> {
        self.apply(Op::Scale { factor }, &[])
    }

    /// Index of the maximum of each row (last dimension), as u32.
    pub fn argmax(&self) -> Result<Tensor> {
        self.apply(Op::Argmax, &[])
    }

    pub fn to_dtype(&self, to: DType) -> Result<Tensor> {
        if to == self.dtype {
            return Ok(self.clone());
        }
        self.apply(Op::Cast { to }, &[])
    }

    /// Writes `src` into rows `dst_row..dst_row + src.dim(0)` of `self` (dimension 0), in place.
    pub fn copy_rows_from(&mut self, dst_row: usize, src: &Tensor) -> Result<()> {
        backend_for(self.device()).execute_inplace(&Op::CopyRows { dst_row }, self, &[src])
    }

    /// Writes `new` [t, kv_heads, d] into this paged cache [num_blocks, kv_heads, block_size,
    /// d] at `slots` [t] (u32; `u32::MAX` skips a token), in place.
    pub fn reshape_and_cache(&mut self, new: &Tensor, slots: &Tensor) -> Result<()> {
        backend_for(self.device()).execute_inplace(&Op::ReshapeAndCache, self, &[new, slots])
    }

    /// Varlen attention of queries `self` [rows, heads, d] over paged caches; see
    /// `Op::PagedAttention`.
    pub fn paged_attention(
        &self,
        k_cache: &Tensor,
        v_cache: &Tensor,
        batch: &PagedBatchTensors,
        scale: f32,
        causal: bool,
    ) -> Result<Tensor> {
        self.apply(
            Op::PagedAttention {
                scale,
                causal,
                decode_only: batch.decode_only,
            },
            &[
                k_cache,
                v_cache,
                &batch.block_tables,
                &batch.context_lens,
                &batch.cu_seqlens,
            ],
        )
    }

    /// Attention of each sequence's queries `self` [tq, heads, d] over its own keys `k`, `v`
    /// [tk, kv_heads, d]; sequence s owns query rows `cu_seqlens_q[s]..cu_seqlens_q[s + 1]` and
    /// key rows `cu_seqlens_k[s]..cu_seqlens_k[s + 1]`. See `Op::VarlenAttention`.
    pub fn varlen_attention(
        &self,
        k: &Tensor,
        v: &Tensor,
        cu_seqlens_q: &Tensor,
        cu_seqlens_k: &Tensor,
        scale: f32,
        causal: bool,
    ) -> Result<Tensor> {
        self.apply(
            Op::VarlenAttention { scale, causal },
            &[k, v, cu_seqlens_q, cu_seqlens_k],
        )
    }
}

/// A batch's paging metadata on the device its attention runs on.
#[derive(Debug, Clone)]
pub struct PagedBatchTensors {
    /// [seqs, max_blocks] u32
    pub block_tables: Tensor,
    /// [seqs] u32
    pub context_lens: Tensor,
    /// [seqs + 1] u32
    pub cu_seqlens: Tensor,
    /// Every sequence has exactly one query row (known on the host, where `cu_seqlens` was
    /// built): attention may take its decode path. See `Op::PagedAttention`.
    pub decode_only: bool,
}

fn check_quant_shape(dtype: DType, shape: &[usize]) -> Result<()> {
    let last = shape.last().copied().unwrap_or(1);
    if dtype.is_quantized() && !last.is_multiple_of(dtype.block_size()) {
        return Err(shape_err(
            "quantized tensor",
            format!(
                "last dimension {last} of {shape:?} is not a multiple of the {dtype} block ({})",
                dtype.block_size()
            ),
        ));
    }
    Ok(())
}

fn copy_unaligned(bytes: &[u8], dtype: DType) -> CpuStorage {
    fn read<T: Element>(bytes: &[u8]) -> Vec<T> {
        let n = bytes.len() / std::mem::size_of::<T>();
        let mut out = vec![T::zeroed(); n];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
        out
    }
    match dtype {
        DType::F32 => CpuStorage::F32(read(bytes)),
        DType::F16 => CpuStorage::F16(read(bytes)),
        DType::BF16 => CpuStorage::BF16(read(bytes)),
        DType::I32 => CpuStorage::I32(read(bytes)),
        DType::U32 => CpuStorage::U32(read(bytes)),
        DType::U8 => CpuStorage::U8(bytes.to_vec()),
        q => CpuStorage::Quant {
            dtype: q,
            bytes: bytes.to_vec(),
        },
    }
}
