//! Token sampling: penalties, temperature, top-k, top-p and a seeded draw.
//!
//! The order of the steps follows HF transformers' logits processors so that a request gives
//! the same distribution here as there: repetition penalty, frequency/presence penalties,
//! then either greedy argmax or temperature -> top-k -> top-p -> softmax -> draw.
//!
//! The random stream is our own xoshiro256** seeded with splitmix64, so a seed picks the same
//! tokens on every machine and in every future version (no dependency whose stream may move).
//! Every step that decides which token a random number maps to uses a total order (logit
//! descending, then id ascending), so the result never depends on a sort algorithm's
//! treatment of ties.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A sampling parameter outside the range Workers AI accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// `field` is the request field name; `message` says the allowed range and the value given.
    #[error("{field}: {message}")]
    OutOfRange {
        field: &'static str,
        message: String,
    },
}

/// Sampling parameters of one text-generation request, with Workers AI defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy. Allowed 0..=5.
    pub temperature: f32,
    /// Keep only the k most likely tokens. Allowed 1..=50 when set; 1 means greedy.
    pub top_k: Option<usize>,
    /// Nucleus mass, in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// HF-style multiplicative penalty on every token already seen, in (0, 2]; 1 is neutral.
    pub repetition_penalty: f32,
    /// OpenAI-style penalty per occurrence in the generated text, in [-2, 2].
    pub frequency_penalty: f32,
    /// OpenAI-style penalty once a token occurs in the generated text, in [-2, 2].
    pub presence_penalty: f32,
    /// Fixed seed for a reproducible draw; `None` seeds from entropy.
    pub seed: Option<u64>,
    /// Most tokens to generate; at least 1.
    pub max_tokens: usize,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.6,
            top_k: None,
            top_p: 1.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            max_tokens: 256,
        }
    }
}

fn out_of_range(field: &'static str, range: &str, got: impl std::fmt::Display) -> SamplingError {
    SamplingError::OutOfRange {
        field,
        message: format!("must be {range}, got {got}"),
    }
}

impl SamplingParams {
    /// Check every field against the Workers AI ranges; NaN is never accepted.
    pub fn validate(&self) -> Result<(), SamplingError> {
        // Written as `!(in range)` so that NaN, which fails every comparison, is rejected.
        let t = self.temperature;
        if !(0.0..=5.0).contains(&t) {
            return Err(out_of_range("temperature", "between 0 and 5", t));
        }
        if let Some(k) = self.top_k {
            if !(1..=50).contains(&k) {
                return Err(out_of_range("top_k", "between 1 and 50", k));
            }
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(out_of_range("top_p", "greater than 0 and at most 1", p));
        }
        let r = self.repetition_penalty;
        if !(r > 0.0 && r <= 2.0) {
            return Err(out_of_range(
                "repetition_penalty",
                "greater than 0 and at most 2",
                r,
            ));
        }
        let f = self.frequency_penalty;
        if !(-2.0..=2.0).contains(&f) {
            return Err(out_of_range("frequency_penalty", "between -2 and 2", f));
        }
        let pr = self.presence_penalty;
        if !(-2.0..=2.0).contains(&pr) {
            return Err(out_of_range("presence_penalty", "between -2 and 2", pr));
        }
        if self.max_tokens < 1 {
            return Err(out_of_range("max_tokens", "at least 1", self.max_tokens));
        }
        Ok(())
    }

    fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
    }
}

/// xoshiro256** (Blackman & Vigna), state filled by splitmix64 as its authors recommend.
#[derive(Debug, Clone)]
struct Xoshiro256 {
    s: [u64; 4],
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Xoshiro256 {
    fn from_seed(seed: u64) -> Self {
        let mut sm = seed;
        Self {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed for requests that gave none: OS randomness (through std's hasher keys), the
/// clock and a process-wide counter, so two requests started together still differ.
fn entropy_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Draws tokens for one sequence. Keeps scratch buffers so that a decode step over a
/// 128k vocabulary allocates nothing after the first.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    prompt_len: usize,
    rng: Xoshiro256,
    /// Per-token counts, all zero between calls (entries are reset after use).
    counts: Vec<u32>,
    /// (token id, logit then weight) of the tokens still in the running.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// `prompt_len` is how many leading ids of the `history` passed to [`Sampler::sample`]
    /// are prompt: frequency and presence penalties count only the ids after them.
    pub fn new(params: SamplingParams, prompt_len: usize) -> Result<Self, SamplingError> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Ok(Self {
            params,
            prompt_len,
            rng: Xoshiro256::from_seed(seed),
            counts: Vec::new(),
            candidates: Vec::new(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Pick the next token. `logits` (one per vocabulary entry) is used as scratch: it holds
    /// penalised, temperature-scaled values or weights afterwards, not the input. `history` is prompt + generated ids; ids outside the
    /// vocabulary are ignored. NaN logits are never chosen. With no usable logit at all
    /// (empty or all NaN) the answer is 0, as there is nothing to choose from.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.apply_repetition_penalty(logits, history);
        self.apply_frequency_presence(logits, history);
        if self.params.is_greedy() {
            return argmax(logits).unwrap_or(0);
        }
        self.draw(logits)
    }

    /// HF `RepetitionPenaltyLogitsProcessor`: each distinct id in the history once.
    fn apply_repetition_penalty(&mut self, logits: &mut [f32], history: &[u32]) {
        let p = self.params.repetition_penalty;
        if p == 1.0 {
            return;
        }
        self.counts.resize(logits.len(), 0);
        for &id in history {
            let Some(seen) = self.counts.get_mut(id as usize) else {
                continue;
            };
            if *seen == 0 {
                *seen = 1;
                let l = &mut logits[id as usize];
                *l = if *l < 0.0 { *l * p } else { *l / p };
            }
        }
        self.reset_counts(history);
    }

    /// OpenAI: `logit -= frequency * count + presence * (count > 0)` over generated ids.
    fn apply_frequency_presence(&mut self, logits: &mut [f32], history: &[u32]) {
        let (freq, pres) = (self.params.frequency_penalty, self.params.presence_penalty);
        if freq == 0.0 && pres == 0.0 {
            return;
        }
        let generated = history.get(self.prompt_len..).unwrap_or(&[]);
        self.counts.resize(logits.len(), 0);
        for &id in generated {
            if let Some(c) = self.counts.get_mut(id as usize) {
                *c += 1;
            }
        }
        for &id in generated {
            let Some(c) = self.counts.get_mut(id as usize) else {
                continue;
            };
            // Apply once per distinct id: zeroing the count marks it done.
            if *c > 0 {
                logits[id as usize] -= freq * *c as f32 + pres;
                *c = 0;
            }
        }
    }

    fn reset_counts(&mut self, ids: &[u32]) {
        for &id in ids {
            if let Some(c) = self.counts.get_mut(id as usize) {
                *c = 0;
            }
        }
    }

    /// Temperature -> top-k -> top-p -> softmax -> one draw.
    fn draw(&mut self, logits: &mut [f32]) -> u32 {
        let inv_t = 1.0 / self.params.temperature;
        let mut max = f32::NEG_INFINITY;
        for l in logits.iter_mut() {
            *l *= inv_t;
            // NaN compares false, so it never becomes the max.
            if *l > max {
                max = *l;
            }
        }
        // exp(l - max) is undefined for an infinite max; such a token wins outright, and an
        // all -inf (or empty, or all NaN) row has no preference, so these become an argmax.
        if !max.is_finite() {
            return argmax(logits).unwrap_or(0);
        }

        if self.params.top_k.is_none() && self.params.top_p >= 1.0 {
            // Nothing is cut: weights go in place and the draw walks ids in order, which
            // spares building and sorting a candidate list over the whole vocabulary.
            let mut total = 0.0f64;
            for l in logits.iter_mut() {
                *l = if l.is_nan() { 0.0 } else { (*l - max).exp() };
                total += *l as f64;
            }
            let target = self.rng.next_f64() * total;
            return pick(
                logits.iter().enumerate().map(|(i, &w)| (i as u32, w)),
                target,
            );
        }

        let cands = &mut self.candidates;
        match self.params.top_k {
            Some(k) => collect_top_k(logits, k, cands),
            None => {
                cands.clear();
                cands.extend(
                    logits
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| !l.is_nan())
                        .map(|(i, &l)| (i as u32, l)),
                );
            }
        }
        let mut total = 0.0f64;
        for c in cands.iter_mut() {
            c.1 = (c.1 - max).exp();
            total += c.1 as f64;
        }
        if self.params.top_p < 1.0 {
            let top_p = self.params.top_p as f64;
            // Tokens lighter than (1 - top_p) * total / n weigh less than 1 - top_p together,
            // so the rest already holds top_p of the mass and contains the nucleus.
            let floor = ((1.0 - top_p) * total / cands.len() as f64) as f32;
            cands.retain(|c| c.1 >= floor);
            total = keep_nucleus(cands, total, top_p);
        } else {
            // Only the kept set is sorted, so the mapping from a draw to a token is canonical.
            cands.sort_unstable_by(by_logit_desc);
        }
        let target = self.rng.next_f64() * total;
        pick(cands.iter().copied(), target)
    }
}

/// The token whose cumulative weight interval contains `target`. Rounding can leave
/// `target` just past the last partial sum; then the last token with weight wins. A token
/// of weight 0 is never picked.
fn pick(weights: impl Iterator<Item = (u32, f32)>, target: f64) -> u32 {
    let mut acc = 0.0f64;
    let mut last_positive = 0;
    for (id, w) in weights {
        if w > 0.0 {
            last_positive = id;
        }
        acc += w as f64;
        if target < acc {
            return id;
        }
    }
    last_positive
}

/// The `k` best (logit, then lowest id) non-NaN entries of `logits`, unordered. Keeps a
/// buffer of at most 2k entries and a running admission bar, so a 128k vocabulary costs
/// one pass of comparisons rather than a selection over all of it.
fn collect_top_k(logits: &[f32], k: usize, cands: &mut Vec<(u32, f32)>) {
    cands.clear();
    let k = k.max(1);
    // The k-th best seen so far; only entries above it can still make the cut.
    let mut bar: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() {
            continue;
        }
        let c = (i as u32, l);
        if bar.is_some_and(|b| by_logit_desc(&c, &b).is_ge()) {
            continue;
        }
        cands.push(c);
        if cands.len() >= 2 * k {
            cands.select_nth_unstable_by(k - 1, by_logit_desc);
            cands.truncate(k);
            bar = Some(cands[k - 1]);
        }
    }
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, by_logit_desc);
        cands.truncate(k);
    }
}

/// Descending weight (or logit), then ascending id: a total order on non-NaN values.
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Shrink `cands` (weights, unnormalised, summing to `total`) to the smallest prefix in
/// descending order whose mass is >= `top_p` of the total; returns the kept mass.
/// Rather than sorting the whole vocabulary it brings the next 64, 512, 4096, ... heaviest
/// to the front (selection in the unsorted tail), sorts just that chunk and keeps summing,
/// so a peaked distribution touches few entries and a flat one costs about one sort.
fn keep_nucleus(cands: &mut Vec<(u32, f32)>, total: f64, top_p: f64) -> f64 {
    let threshold = top_p * total;
    let mut acc = 0.0f64;
    let (mut start, mut chunk) = (0usize, 64usize);
    let len = cands.len();
    while start < len {
        let end = start.saturating_add(chunk).min(len);
        if end < len {
            cands[start..].select_nth_unstable_by(end - start - 1, by_logit_desc);
        }
        let head = &mut cands[start..end];
        head.sort_unstable_by(by_logit_desc);
        let reached = head.iter().position(|c| {
            acc += c.1 as f64;
            acc >= threshold
        });
        if let Some(i) = reached {
            cands.truncate(start + i + 1);
            return acc;
        }
        start = end;
        chunk = chunk.saturating_mul(8);
    }
    // Rounding kept the sum just under the threshold: everything is the nucleus.
    acc
}

/// Index of the first largest non-NaN value.
fn argmax(values: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i as u32)
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
