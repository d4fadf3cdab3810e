//! Paged KV cache bookkeeping (host only; no GPU needed): a pool of fixed-size pages with
//! reference counts and an LRU free queue, prefix caching by chained hashes of full pages,
//! per-sequence page tables and slot mapping, copy-on-write of a shared partial page.
//!
//! The K/V storage itself lives with the model (one K and one V tensor per layer, laid out
//! [num_blocks, kv_heads, block_size, head_dim]); this module only decides which page and
//! slot each token uses.

mod manager;
mod pool;
mod store;
#[cfg(test)]
mod tests;

pub use manager::{Allocation, KvCacheManager, PrefixHit, SeqId};
pub use pool::{BlockHash, BlockId, BlockPool};
pub use store::{KvLayout, PagedKvStore};

/// The default page size in tokens.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// How many pages fit a memory budget, given the bytes one page takes across all layers
/// (K and V).
pub fn blocks_for_budget(budget_bytes: u64, bytes_per_block: u64) -> usize {
    if bytes_per_block == 0 {
        return 0;
    }
    (budget_bytes / bytes_per_block) as usize
}
