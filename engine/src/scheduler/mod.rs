//! Iteration-level scheduling (continuous batching) over the paged KV cache.
//!
//! Every step the scheduler spends a token budget: first on the running sequences in arrival
//! order (a decode needs one token, an unfinished prefill its next chunk), then on waiting
//! sequences, first come first served, whose prompts may be split into chunks across steps
//! (chunked prefill) and may start from cached prefix pages. When the KV pool runs out, the
//! most recently arrived running sequence is preempted: its pages are freed and it goes back
//! to the head of the queue to be recomputed later (its tokens so far become its prompt). The
//! oldest running sequence can always progress, so the scheduler never deadlocks; a sequence
//! that alone outgrows the whole cache is finished with `CacheFull` rather than dropped.

#[cfg(test)]
mod tests;

use crate::kv_cache::{BlockId, KvCacheManager, SeqId};
use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Tokens computed per step, over all sequences (prefill chunks + decodes).
    pub max_batched_tokens: usize,
    /// Sequences running at once.
    pub max_seqs: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    pub prefix_caching: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_batched_tokens: 2048,
            max_seqs: 64,
            num_blocks: 1024,
            block_size: crate::kv_cache::DEFAULT_BLOCK_SIZE,
            prefix_caching: true,
        }
    }
}

/// Why `add` refused a sequence.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmitError {
    #[error("sequence {0} already exists")]
    Duplicate(SeqId),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt has {tokens} tokens but the KV cache holds at most {capacity}")]
    TooLong { tokens: usize, capacity: usize },
}

#[derive(Debug, Clone)]
struct Seq {
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Tokens whose K/V are in the cache.
    num_computed: usize,
    running: bool,
    preemptions: u32,
}

/// One sequence's share of a step: compute tokens `start..start + len`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledSeq {
    pub seq: SeqId,
    pub start: usize,
    pub len: usize,
    /// After this chunk every known token is computed: sample the next one from its logits.
    pub sample: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    pub seqs: Vec<ScheduledSeq>,
    /// KV page copies to do before the forward pass (copy-on-write).
    pub copies: Vec<(BlockId, BlockId)>,
    /// Sequences sent back to the queue this step (their progress will be recomputed).
    pub preempted: Vec<SeqId>,
    /// Sequences that cannot continue: alone they need more pages than the cache has.
    pub cache_full: Vec<SeqId>,
}

impl Step {
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SchedulerStats {
    pub waiting: usize,
    pub running: usize,
    pub kv_blocks_total: usize,
    pub kv_blocks_free: usize,
    pub preemptions: u64,
    pub prefix_hit_tokens: u64,
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    seqs: HashMap<SeqId, Seq>,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    preemptions: u64,
    prefix_hit_tokens: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let kv = KvCacheManager::new(config.num_blocks, config.block_size, config.prefix_caching);
        Self {
            config,
            kv,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            preemptions: 0,
            prefix_hit_tokens: 0,
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            kv_blocks_total: self.kv.num_blocks(),
            kv_blocks_free: self.kv.num_free_blocks(),
            preemptions: self.preemptions,
            prefix_hit_tokens: self.prefix_hit_tokens,
        }
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Queues a sequence. A prompt longer than the whole cache is refused here.
    pub fn add(&mut self, id: SeqId, prompt: Vec<u32>) -> Result<(), AdmitError> {
        if self.seqs.contains_key(&id) {
            return Err(AdmitError::Duplicate(id));
        }
        if prompt.is_empty() {
            return Err(AdmitError::EmptyPrompt);
        }
        if prompt.len() > self.kv.max_tokens() {
            return Err(AdmitError::TooLong {
                tokens: prompt.len(),
                capacity: self.kv.max_tokens(),
            });
        }
        self.seqs.insert(
            id,
            Seq {
                prompt_len: prompt.len(),
                tokens: prompt,
                num_computed: 0,
                running: false,
                preemptions: 0,
            },
        );
        self.waiting.push_back(id);
        Ok(())
    }

    /// All tokens of a sequence (prompt then generated).
    pub fn tokens(&self, id: SeqId) -> &[u32] {
        self.seqs.get(&id).map_or(&[], |s| &s.tokens)
    }

    pub fn prompt_len(&self, id: SeqId) -> usize {
        self.seqs.get(&id).map_or(0, |s| s.prompt_len)
    }

    pub fn preemptions_of(&self, id: SeqId) -> u32 {
        self.seqs.get(&id).map_or(0, |s| s.preemptions)
    }

    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    /// Picks this step's work. Call `complete` after the forward pass ran.
    pub fn schedule(&mut self) -> Step {
        let mut step = Step::default();
        let mut budget = self.config.max_batched_tokens;

        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
            let num_new = (seq.tokens.len() - seq.num_computed).min(budget);
            if num_new == 0 {
                i += 1;
                continue;
            }
            match self.kv.allocate_slots(id, num_new, None) {
                Some(alloc) => {
                    step.copies.extend(alloc.copies);
                    step.seqs.push(self.scheduled(id, num_new));
                    budget -= num_new;
                    i += 1;
                }
                None => {
                    // Preempt from the back (latest arrival) until this sequence fits.
                    let victim = self.running.pop().expect("running is not empty here");
                    if victim == id && self.running.is_empty() {
                        // Alone and still short: it can never fit.
                        self.running.push(id);
                        step.cache_full.push(id);
                        i += 1;
                    } else {
                        self.preempt(victim);
                        step.preempted.push(victim);
                    }
                }
            }
        }

        if step.preempted.is_empty() {
            while budget > 0 && self.running.len() < self.config.max_seqs {
                let Some(&id) = self.waiting.front() else {
                    break;
                };
                let tokens = &self.seqs[&id].tokens;
                let hit = self.kv.find_prefix(tokens);
                let num_new = (tokens.len() - hit.num_tokens).min(budget);
                let Some(alloc) = self.kv.allocate_slots(id, num_new, Some(&hit)) else {
                    break;
                };
                self.waiting.pop_front();
                self.prefix_hit_tokens += hit.num_tokens as u64;
                let seq = self.seqs.get_mut(&id).expect("waiting ids are known");
                seq.num_computed = hit.num_tokens;
                seq.running = true;
                self.running.push(id);
                step.copies.extend(alloc.copies);
                step.seqs.push(self.scheduled(id, num_new));
                budget -= num_new;
            }
        }
        step
    }

    fn scheduled(&self, id: SeqId, len: usize) -> ScheduledSeq {
        let seq = &self.seqs[&id];
        ScheduledSeq {
            seq: id,
            start: seq.num_computed,
            len,
            sample: seq.num_computed + len == seq.tokens.len(),
        }
    }

    fn preempt(&mut self, id: SeqId) {
        self.kv.free(id);
        self.preemptions += 1;
        let seq = self.seqs.get_mut(&id).expect("running ids are known");
        seq.num_computed = 0;
        seq.running = false;
        seq.preemptions += 1;
        self.waiting.push_front(id);
    }

    /// Records that `step`'s forward pass wrote its tokens' K/V.
    pub fn complete(&mut self, step: &Step) {
        for s in &step.seqs {
            let Some(seq) = self.seqs.get_mut(&s.seq) else {
                continue; // cancelled meanwhile
            };
            seq.num_computed = s.start + s.len;
            self.kv
                .cache_full_blocks(s.seq, &seq.tokens, seq.num_computed);
        }
    }

    /// Appends a sampled token to a running sequence (computed by a later step).
    pub fn append(&mut self, id: SeqId, token: u32) {
        if let Some(seq) = self.seqs.get_mut(&id) {
            seq.tokens.push(token);
        }
    }

    /// Removes a sequence (finished or cancelled) and frees its pages at once.
    pub fn finish(&mut self, id: SeqId) -> bool {
        let Some(seq) = self.seqs.remove(&id) else {
            return false;
        };
        if seq.running {
            self.running.retain(|&r| r != id);
        } else {
            self.waiting.retain(|&w| w != id);
        }
        self.kv.free(id);
        true
    }

    /// Positions' slots of a scheduled chunk, and the sequence's page table.
    pub fn slots(&self, s: &ScheduledSeq) -> Vec<u32> {
        self.kv.slots(s.seq, s.start..s.start + s.len)
    }

    pub fn block_table(&self, id: SeqId) -> &[BlockId] {
        self.kv.block_table(id)
    }

    /// Internal consistency (tests): the cache's books, and every sequence in exactly one
    /// queue with slots exactly for its computed tokens when running.
    pub fn check(&self) -> Result<(), String> {
        self.kv.check()?;
        for (id, seq) in &self.seqs {
            let in_run = self.running.contains(id);
            let in_wait = self.waiting.contains(id);
            if in_run == in_wait || in_run != seq.running {
                return Err(format!("seq {id}: running {in_run}, waiting {in_wait}"));
            }
            if !seq.running && self.kv.contains(*id) {
                return Err(format!("waiting seq {id} holds pages"));
            }
            if seq.running && self.kv.len(*id) != seq.num_computed {
                return Err(format!(
                    "seq {id}: {} slots for {} computed tokens",
                    self.kv.len(*id),
                    seq.num_computed
                ));
            }
        }
        if self.running.len() + self.waiting.len() != self.seqs.len() {
            return Err("a sequence is queued twice or not at all".into());
        }
        Ok(())
    }
}
