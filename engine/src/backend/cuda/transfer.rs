//! Host <-> device copies through pinned staging buffers, device-to-device copies, and the
//! gather of a strided view into a dense buffer.

use super::alloc::CudaBuffer;
use super::device::{lock, DeviceCtx};
use crate::error::{EngineError, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use std::sync::Arc;

/// Bytes per pinned staging buffer; two alternate so the copy of one chunk into pinned
/// memory overlaps the DMA of the previous one.
const CHUNK: usize = 8 << 20;

/// Two pinned host buffers, each with an event marking when its last DMA finished.
#[derive(Default)]
pub(crate) struct Staging {
    slots: Vec<(*mut u8, sys::CUevent)>,
}

unsafe impl Send for Staging {}

impl Staging {
    fn ensure(&mut self, dev: &DeviceCtx) -> Result<()> {
        while self.slots.len() < 2 {
            let host = unsafe { cu::malloc_host(CHUNK, 0) }
                .map_err(|e| dev.err("cuMemHostAlloc (pinned staging)", e))?;
            let ev = cu::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                .map_err(|e| dev.err("cuEventCreate", e))?;
            self.slots.push((host as *mut u8, ev));
        }
        Ok(())
    }
}

/// Copies `src` to device address `dst` (enqueued; `src` may be dropped on return).
pub(crate) fn write_bytes(dev: &DeviceCtx, dst: u64, src: &[u8]) -> Result<()> {
    super::graph::refuse_in_capture(dev, "a host <-> device copy")?;
    dev.bind()?;
    let mut st = lock(&dev.staging);
    st.ensure(dev)?;
    for (i, chunk) in src.chunks(CHUNK).enumerate() {
        let (host, ev) = st.slots[i % 2];
        unsafe {
            // The slot's previous DMA must be done before its bytes are overwritten.
            cu::event::synchronize(ev).map_err(|e| dev.async_err("cuEventSynchronize", e))?;
            let pinned = std::slice::from_raw_parts_mut(host, chunk.len());
            pinned.copy_from_slice(chunk);
            cu::memcpy_htod_async(dst + (i * CHUNK) as u64, pinned, dev.stream())
                .map_err(|e| dev.async_err("cuMemcpyHtoDAsync", e))?;
            cu::event::record(ev, dev.stream()).map_err(|e| dev.err("cuEventRecord", e))?;
        }
    }
    Ok(())
}

/// Copies `dst.len()` bytes from device address `src` (waits for the stream).
pub(crate) fn read_into(dev: &DeviceCtx, src: u64, dst: &mut [u8]) -> Result<()> {
    super::graph::refuse_in_capture(dev, "a host <-> device copy")?;
    dev.bind()?;
    let mut st = lock(&dev.staging);
    st.ensure(dev)?;
    let (host, _) = st.slots[0];
    for (i, chunk) in dst.chunks_mut(CHUNK).enumerate() {
        unsafe {
            let pinned = std::slice::from_raw_parts_mut(host, chunk.len());
            cu::memcpy_dtoh_async(pinned, src + (i * CHUNK) as u64, dev.stream())
                .map_err(|e| dev.async_err("cuMemcpyDtoHAsync", e))?;
            cu::stream::synchronize(dev.stream())
                .map_err(|e| dev.async_err("cuStreamSynchronize", e))?;
            chunk.copy_from_slice(pinned);
        }
    }
    Ok(())
}

pub(crate) fn read_bytes(dev: &DeviceCtx, src: u64, len: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    read_into(dev, src, &mut out)?;
    Ok(out)
}

pub(crate) fn copy_d2d(dev: &DeviceCtx, dst: u64, src: u64, bytes: usize) -> Result<()> {
    if bytes == 0 {
        return Ok(());
    }
    dev.bind()?;
    unsafe { cu::memcpy_dtod_async(dst, src, bytes, dev.stream()) }
        .map_err(|e| dev.async_err("cuMemcpyDtoDAsync", e))
}

/// A device buffer holding `src` bytes.
pub(crate) fn upload(dev: &Arc<DeviceCtx>, src: &[u8]) -> Result<CudaBuffer> {
    let buf = CudaBuffer::alloc(dev, src.len())?;
    write_bytes(dev, buf.ptr(), src)?;
    Ok(buf)
}

/// Gathers the strided view (`shape`, `strides` in elements, starting at byte address `src`)
/// of `elem` -byte elements into the dense buffer at `dst`, with 2D copies: each call moves
/// a run of rows of the innermost contiguous extent. The fallback of `ops::copy_strided` for
/// views its kernel does not take (more than 6 dims after collapsing).
pub(crate) fn gather_strided(
    dev: &DeviceCtx,
    dst: u64,
    src: u64,
    shape: &[usize],
    strides: &[usize],
    elem: usize,
) -> Result<()> {
    if shape.contains(&0) {
        return Ok(());
    }
    // Drop size-1 dims: their strides are meaningless.
    let dims: Vec<(usize, usize)> = shape
        .iter()
        .zip(strides)
        .filter(|(&d, _)| d != 1)
        .map(|(&d, &s)| (d, s))
        .collect();
    let (run, outer): (usize, &[(usize, usize)]) = match dims.last() {
        None => (1, &[]),
        Some(&(d, 1)) => (d, &dims[..dims.len() - 1]),
        Some(_) => (1, &dims[..]),
    };
    let width = run * elem;
    // The last outer dim becomes the rows of one 2D copy; the rest are looped over.
    let (rows, pitch, loops) = match outer.split_last() {
        Some((&(d, s), rest)) if s * elem >= width => (d, s * elem, rest),
        _ => (1, width, outer),
    };
    let n_loops: usize = loops.iter().map(|&(d, _)| d).product();
    dev.bind()?;
    let mut index = vec![0usize; loops.len()];
    for i in 0..n_loops {
        if i > 0 {
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < loops[d].0 {
                    break;
                }
                index[d] = 0;
            }
        }
        let src_off: usize = index.iter().zip(loops).map(|(&k, &(_, s))| k * s).sum();
        let copy = sys::CUDA_MEMCPY2D {
            srcXInBytes: 0,
            srcY: 0,
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: src + (src_off * elem) as u64,
            srcArray: std::ptr::null_mut(),
            srcPitch: pitch,
            dstXInBytes: 0,
            dstY: 0,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstHost: std::ptr::null_mut(),
            dstDevice: dst + (i * rows * width) as u64,
            dstArray: std::ptr::null_mut(),
            dstPitch: width,
            WidthInBytes: width,
            Height: rows,
        };
        unsafe { sys::cuMemcpy2DAsync_v2(&copy, dev.stream()) }
            .result()
            .map_err(|e| dev.async_err("cuMemcpy2DAsync (strided gather)", e))?;
    }
    Ok(())
}

/// Bytes that hold `n` elements of a dtype (quantized: whole blocks).
pub(crate) fn byte_len(dtype: crate::DType, n: usize) -> Result<usize> {
    if !n.is_multiple_of(dtype.block_size()) {
        return Err(EngineError::Data(format!(
            "{n} elements of {dtype} are not whole blocks"
        )));
    }
    Ok(dtype.storage_bytes(n))
}
