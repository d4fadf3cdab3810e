//! Per-sequence page tables over the block pool: prefix hits, slot allocation with
//! copy-on-write of a shared partial page, and freeing.

use super::pool::{BlockHash, BlockId, BlockPool};
use std::collections::HashMap;

/// A sequence's handle in the cache (the scheduler's request id).
pub type SeqId = u64;

#[derive(Debug, Clone, Default)]
struct SeqPages {
    blocks: Vec<BlockId>,
    /// Tokens with a slot in `blocks` (their K/V are written, or will be by this step).
    len: usize,
    /// Leading full pages already registered in the prefix index, and the last one's hash.
    num_hashed: usize,
    last_hash: Option<BlockHash>,
}

/// What a successful `allocate_slots` asks the model runner to do before its forward pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allocation {
    /// Copy page `src` to page `dst` (copy-on-write of a shared, partly filled page).
    pub copies: Vec<(BlockId, BlockId)>,
}

/// A prompt prefix found in the cache: its pages and how many tokens they hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrefixHit {
    pub blocks: Vec<BlockId>,
    pub hashes: Vec<BlockHash>,
    pub num_tokens: usize,
}

#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
    seqs: HashMap<SeqId, SeqPages>,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Self {
            pool: BlockPool::new(num_blocks),
            block_size,
            prefix_caching,
            seqs: HashMap::new(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.pool.num_blocks()
    }

    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_free()
    }

    pub fn num_cached_free_blocks(&self) -> usize {
        self.pool.num_cached_free()
    }

    /// Most tokens one sequence can ever hold.
    pub fn max_tokens(&self) -> usize {
        self.num_blocks() * self.block_size
    }

    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    /// Tokens of `seq` that have a slot.
    pub fn len(&self, seq: SeqId) -> usize {
        self.seqs.get(&seq).map_or(0, |s| s.len)
    }

    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.seqs.get(&seq).map_or(&[], |s| &s.blocks)
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// The longest run of full cached pages that prefixes `tokens`, leaving at least the last
    /// token to compute (its logits are needed). Changes nothing.
    pub fn find_prefix(&self, tokens: &[u32]) -> PrefixHit {
        let mut hit = PrefixHit::default();
        if !self.prefix_caching || tokens.is_empty() {
            return hit;
        }
        let full = (tokens.len() - 1) / self.block_size;
        let mut parent = None;
        for chunk in tokens.chunks(self.block_size).take(full) {
            let hash = BlockHash::chain(parent, chunk);
            match self.pool.lookup(hash, chunk) {
                Some(id) => {
                    hit.blocks.push(id);
                    hit.hashes.push(hash);
                    parent = Some(hash);
                }
                None => break,
            }
        }
        hit.num_tokens = hit.blocks.len() * self.block_size;
        hit
    }

    /// Gives `seq` slots for `num_new` more tokens (starting it from `prefix` if it is new).
    /// `None` when the pool is short: nothing has changed and the scheduler must preempt.
    pub fn allocate_slots(
        &mut self,
        seq: SeqId,
        num_new: usize,
        prefix: Option<&PrefixHit>,
    ) -> Option<Allocation> {
        let existing = self.seqs.get(&seq);
        let (have_blocks, len) = existing.map_or((0, 0), |s| (s.blocks.len(), s.len));
        let prefix = if existing.is_none() { prefix } else { None };
        let (prefix_blocks, prefix_tokens) =
            prefix.map_or((0, 0), |p| (p.blocks.len(), p.num_tokens));
        let start = len + prefix_tokens;
        let target = self.blocks_for(start + num_new);
        let new_blocks = target.saturating_sub(have_blocks + prefix_blocks);
        // Writing into a partly filled page that another sequence shares needs a private copy.
        let cow = existing.is_some_and(|s| {
            num_new > 0
                && s.len % self.block_size != 0
                && s.blocks.last().is_some_and(|&b| self.pool.ref_count(b) > 1)
        });
        // Prefix pages with no owner come out of the free queue too.
        let revived = prefix.map_or(0, |p| {
            p.blocks
                .iter()
                .filter(|&&b| self.pool.ref_count(b) == 0)
                .count()
        });
        if self.pool.num_free() < new_blocks + usize::from(cow) + revived {
            return None;
        }

        let mut alloc = Allocation::default();
        let state = self.seqs.entry(seq).or_default();
        if let Some(p) = prefix {
            for &b in &p.blocks {
                self.pool.retain(b);
            }
            state.blocks.extend_from_slice(&p.blocks);
            state.len = p.num_tokens;
            state.num_hashed = p.blocks.len();
            state.last_hash = p.hashes.last().copied();
        }
        if cow {
            let last = state.blocks.len() - 1;
            let src = state.blocks[last];
            let dst = self.pool.allocate(1)?[0];
            self.pool.release([src]);
            state.blocks[last] = dst;
            alloc.copies.push((src, dst));
        }
        let fresh = self.pool.allocate(new_blocks)?;
        state.blocks.extend(fresh);
        state.len += num_new;
        Some(alloc)
    }

    /// The flat slot (page * block_size + offset) of each position in `range` of `seq`.
    pub fn slots(&self, seq: SeqId, range: std::ops::Range<usize>) -> Vec<u32> {
        let table = self.block_table(seq);
        range
            .map(|pos| {
                table[pos / self.block_size] * self.block_size as u32
                    + (pos % self.block_size) as u32
            })
            .collect()
    }

    /// Registers `seq`'s pages that are now full of computed tokens in the prefix index.
    /// `tokens` are the sequence's ids (at least its computed ones); `computed` how many of
    /// them have their K/V written.
    pub fn cache_full_blocks(&mut self, seq: SeqId, tokens: &[u32], computed: usize) {
        if !self.prefix_caching {
            return;
        }
        let bs = self.block_size;
        let Some(state) = self.seqs.get_mut(&seq) else {
            return;
        };
        let full = computed.min(state.len).min(tokens.len()) / bs;
        while state.num_hashed < full {
            let i = state.num_hashed;
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let hash = BlockHash::chain(state.last_hash, chunk);
            self.pool.register(state.blocks[i], hash, chunk);
            state.last_hash = Some(hash);
            state.num_hashed += 1;
        }
    }

    /// A child sharing every page of `parent` (copy-on-write on its first write into the
    /// shared partial page). Returns false if `parent` is unknown or `child` exists.
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> bool {
        if self.seqs.contains_key(&child) {
            return false;
        }
        let Some(state) = self.seqs.get(&parent).cloned() else {
            return false;
        };
        for &b in &state.blocks {
            self.pool.retain(b);
        }
        self.seqs.insert(child, state);
        true
    }

    /// Returns every page of `seq` to the pool, tail first. Unknown ids are ignored.
    pub fn free(&mut self, seq: SeqId) {
        if let Some(state) = self.seqs.remove(&seq) {
            self.pool.release(state.blocks.into_iter().rev());
        }
    }

    /// Pool invariants plus: every reference is held by exactly the sequences' tables.
    pub fn check(&self) -> Result<(), String> {
        self.pool.check()?;
        let mut refs = vec![0u32; self.num_blocks()];
        for (id, s) in &self.seqs {
            if s.blocks.len() != self.blocks_for(s.len) {
                return Err(format!(
                    "seq {id}: {} pages for {} tokens",
                    s.blocks.len(),
                    s.len
                ));
            }
            let mut seen = std::collections::HashSet::new();
            for &b in &s.blocks {
                if !seen.insert(b) {
                    return Err(format!("seq {id} holds page {b} twice"));
                }
                refs[b as usize] += 1;
            }
        }
        for (b, &r) in refs.iter().enumerate() {
            if self.pool.ref_count(b as BlockId) != r {
                return Err(format!(
                    "page {b}: ref_count {} but {} tables hold it",
                    self.pool.ref_count(b as BlockId),
                    r
                ));
            }
        }
        Ok(())
    }
}
