//! The K/V pages themselves: one K and one V tensor per layer, each
//! [num_blocks + 1, kv_heads, block_size, head_dim], on the model's device. The page past
//! the managed ones is scratch: the padding rows of a fixed-shape (CUDA graph) step write
//! their keys there and attend to it, so padding never touches a sequence's pages.
//! The store also keeps the step graphs captured over its pages (their kernels hold its
//! addresses).

use crate::graph::StepGraphs;
use crate::{DType, Device, Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvLayout {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub dtype: DType,
}

impl KvLayout {
    /// Bytes one page takes over all layers, K and V.
    pub fn bytes_per_block(&self) -> u64 {
        let elems = self.num_kv_heads * self.block_size * self.head_dim;
        2 * self.num_layers as u64 * self.dtype.storage_bytes(elems) as u64
    }
}

pub struct PagedKvStore {
    layout: KvLayout,
    num_blocks: usize,
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    graphs: StepGraphs,
}

impl PagedKvStore {
    pub fn new(layout: KvLayout, num_blocks: usize, device: Device) -> Result<Self> {
        let shape = [
            num_blocks + 1,
            layout.num_kv_heads,
            layout.block_size,
            layout.head_dim,
        ];
        let make = || Tensor::zeros(&shape, layout.dtype, device);
        Ok(Self {
            layout,
            num_blocks,
            k: (0..layout.num_layers)
                .map(|_| make())
                .collect::<Result<_>>()?,
            v: (0..layout.num_layers)
                .map(|_| make())
                .collect::<Result<_>>()?,
            graphs: StepGraphs::new(device),
        })
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Pages the block manager hands out (the scratch page is not one of them).
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// The scratch page (index `num_blocks`).
    pub fn scratch_block(&self) -> usize {
        self.num_blocks
    }

    /// The step graphs captured over these pages.
    pub fn graphs(&self) -> &StepGraphs {
        &self.graphs
    }

    /// The step graphs captured over these pages.
    pub fn graphs_mut(&mut self) -> &mut StepGraphs {
        &mut self.graphs
    }

    /// Layer `i`'s K and V pages.
    pub fn layer_mut(&mut self, i: usize) -> (&mut Tensor, &mut Tensor) {
        (&mut self.k[i], &mut self.v[i])
    }

    /// Copies page `src` to page `dst` in every layer (copy-on-write).
    pub fn copy_blocks(&mut self, copies: &[(u32, u32)]) -> Result<()> {
        for &(src, dst) in copies {
            for t in self.k.iter_mut().chain(self.v.iter_mut()) {
                let page = t.narrow(0, src as usize, 1)?;
                t.copy_rows_from(dst as usize, &page)?;
            }
        }
        Ok(())
    }
}
