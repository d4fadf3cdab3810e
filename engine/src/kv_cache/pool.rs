//! The block pool: fixed-size KV pages with reference counts, an LRU queue of free pages and
//! the prefix-cache index.
//!
//! A page whose reference count drops to zero goes to the back of the free queue but keeps
//! its contents and its hash: until it is handed out again, a later prompt with the same
//! prefix can take it back (a prefix hit). Allocation takes from the front, so the pages
//! freed longest ago are evicted first.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

/// Index of a page in the pool (and of its K/V storage on the device).
pub type BlockId = u32;

/// Identity of a full page's contents: the hash of its parent page's identity and its token
/// ids, so equal hashes mean equal prefixes up to and including this page.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BlockHash(pub u64);

impl BlockHash {
    pub fn chain(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
        // SipHash with fixed keys: the same on every run, so hits do not depend on process.
        let mut h = DefaultHasher::new();
        parent.map(|p| p.0).hash(&mut h);
        tokens.hash(&mut h);
        BlockHash(h.finish())
    }
}

#[derive(Debug, Default, Clone)]
struct Block {
    ref_count: u32,
    /// Set once the page is full and registered in the prefix index.
    hash: Option<BlockHash>,
    /// The page's token ids, kept with the hash so a hash collision can never be a hit.
    tokens: Vec<u32>,
    /// Position in the free queue while `ref_count == 0`.
    free_stamp: Option<u64>,
}

#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    /// Free pages, least recently freed first.
    free: BTreeMap<u64, BlockId>,
    next_stamp: u64,
    cached: HashMap<BlockHash, BlockId>,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        let mut pool = Self {
            blocks: vec![Block::default(); num_blocks],
            free: BTreeMap::new(),
            next_stamp: 0,
            cached: HashMap::new(),
        };
        for id in 0..num_blocks {
            pool.push_free(id as BlockId);
        }
        pool
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Pages that can be handed out now (unreferenced, cached or not).
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Unreferenced pages that still hold a cached prefix.
    pub fn num_cached_free(&self) -> usize {
        self.free
            .values()
            .filter(|&&id| self.blocks[id as usize].hash.is_some())
            .count()
    }

    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.blocks[id as usize].ref_count
    }

    fn push_free(&mut self, id: BlockId) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.free.insert(stamp, id);
        self.blocks[id as usize].free_stamp = Some(stamp);
    }

    /// Takes `n` pages from the front of the free queue (evicting their cached prefixes), each
    /// with one reference; `None` (and nothing changed) when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if self.free.len() < n {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, id) = self.free.pop_first()?;
            let block = &mut self.blocks[id as usize];
            block.free_stamp = None;
            block.ref_count = 1;
            block.tokens.clear();
            if let Some(hash) = block.hash.take() {
                if self.cached.get(&hash) == Some(&id) {
                    self.cached.remove(&hash);
                }
            }
            out.push(id);
        }
        Some(out)
    }

    /// The cached page holding exactly `tokens` after the prefix `hash` chains from.
    pub fn lookup(&self, hash: BlockHash, tokens: &[u32]) -> Option<BlockId> {
        let id = *self.cached.get(&hash)?;
        (self.blocks[id as usize].tokens == tokens).then_some(id)
    }

    /// Adds a reference to a page (taking it out of the free queue if it was there).
    pub fn retain(&mut self, id: BlockId) {
        let block = &mut self.blocks[id as usize];
        if let Some(stamp) = block.free_stamp.take() {
            self.free.remove(&stamp);
        }
        block.ref_count += 1;
    }

    /// Drops one reference from each page, in the order given: pages reaching zero join the
    /// back of the free queue in that order (so release a sequence's pages tail first, and its
    /// prompt's first pages, the likeliest to be shared, are evicted last).
    pub fn release(&mut self, ids: impl IntoIterator<Item = BlockId>) {
        for id in ids {
            let block = &mut self.blocks[id as usize];
            assert!(block.ref_count > 0, "page {id} released more than retained");
            block.ref_count -= 1;
            if block.ref_count == 0 {
                self.push_free(id);
            }
        }
    }

    /// Registers a full page in the prefix index. A page whose contents another page already
    /// holds stays unregistered (the older copy serves hits).
    pub fn register(&mut self, id: BlockId, hash: BlockHash, tokens: &[u32]) {
        if self.cached.contains_key(&hash) {
            return;
        }
        let block = &mut self.blocks[id as usize];
        debug_assert!(block.hash.is_none());
        block.hash = Some(hash);
        block.tokens = tokens.to_vec();
        self.cached.insert(hash, id);
    }

    /// Checks the pool's own invariants (tests call it after every step).
    pub fn check(&self) -> Result<(), String> {
        for (i, b) in self.blocks.iter().enumerate() {
            if (b.ref_count == 0) != b.free_stamp.is_some() {
                return Err(format!(
                    "page {i}: ref_count {} but free {:?}",
                    b.ref_count, b.free_stamp
                ));
            }
            if let Some(s) = b.free_stamp {
                if self.free.get(&s) != Some(&(i as BlockId)) {
                    return Err(format!("page {i}: stamp {s} not in the free queue"));
                }
            }
        }
        if self.free.len() != self.blocks.iter().filter(|b| b.ref_count == 0).count() {
            return Err("free queue length differs from unreferenced pages".into());
        }
        for (h, &id) in &self.cached {
            if self.blocks[id as usize].hash != Some(*h) {
                return Err(format!(
                    "prefix index points {h:?} at page {id} holding something else"
                ));
            }
        }
        Ok(())
    }
}
