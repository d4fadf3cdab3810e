//! `ForwardBatch`: one step's tokens for every scheduled sequence, flat and unpadded, with
//! what attention needs to find each sequence's pages.

use crate::scheduler::{Scheduler, Step};
use crate::tensor::PagedBatchTensors;
use crate::{Device, Result, Tensor};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForwardBatch {
    /// Token ids of every sequence's chunk, back to back.
    pub tokens: Vec<u32>,
    /// Position of each token in its sequence.
    pub positions: Vec<u32>,
    /// KV slot of each token.
    pub slot_mapping: Vec<u32>,
    /// Sequence s owns tokens `cu_seqlens[s]..cu_seqlens[s + 1]`.
    pub cu_seqlens: Vec<u32>,
    /// Tokens in the cache per sequence once this step's are written.
    pub context_lens: Vec<u32>,
    /// [seqs, max_blocks] pages, padded with 0.
    pub block_tables: Vec<u32>,
    pub max_blocks: usize,
    /// Rows of the flat batch whose logits are wanted (one per sequence that samples).
    pub logits_rows: Vec<u32>,
    /// Page copies to do first (copy-on-write).
    pub copies: Vec<(u32, u32)>,
}

impl ForwardBatch {
    /// The batch of a scheduled step.
    pub fn from_step(s: &Scheduler, step: &Step) -> ForwardBatch {
        let mut b = ForwardBatch {
            cu_seqlens: vec![0],
            copies: step.copies.clone(),
            ..Default::default()
        };
        b.max_blocks = step
            .seqs
            .iter()
            .map(|x| s.block_table(x.seq).len())
            .max()
            .unwrap_or(0)
            .max(1);
        for x in &step.seqs {
            let end = x.start + x.len;
            b.tokens.extend_from_slice(&s.tokens(x.seq)[x.start..end]);
            b.positions.extend((x.start..end).map(|p| p as u32));
            b.slot_mapping.extend(s.slots(x));
            b.cu_seqlens.push(b.tokens.len() as u32);
            b.context_lens.push(end as u32);
            let table = s.block_table(x.seq);
            b.block_tables.extend_from_slice(table);
            b.block_tables
                .extend(std::iter::repeat_n(0, b.max_blocks - table.len()));
            if x.sample {
                b.logits_rows.push(b.tokens.len() as u32 - 1);
            }
        }
        b
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    /// Whether every sequence brings exactly one new token (a pure decode step), which lets
    /// attention take its decode path.
    pub fn is_decode_only(&self) -> bool {
        self.num_seqs() > 0 && self.cu_seqlens.windows(2).all(|w| w[1] == w[0] + 1)
    }

    /// The paging metadata as u32 tensors on `device`.
    pub fn paged_tensors(&self, device: Device) -> Result<PagedBatchTensors> {
        let seqs = self.num_seqs();
        Ok(PagedBatchTensors {
            block_tables: Tensor::from_slice(&self.block_tables, &[seqs, self.max_blocks])?
                .to_device(device)?,
            context_lens: Tensor::from_slice(&self.context_lens, &[seqs])?.to_device(device)?,
            cu_seqlens: Tensor::from_slice(&self.cu_seqlens, &[seqs + 1])?.to_device(device)?,
            decode_only: self.is_decode_only(),
        })
    }
}
