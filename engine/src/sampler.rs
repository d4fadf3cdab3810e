//! Token sampling: penalties, temperature, top-k, top-p and a seeded draw.
//!
//! The order of the steps follows HF transformers' logits processors so that a request gives
//! the same distribution here as there: repetition penalty, frequency/presence penalties,
//! then either greedy argmax or temperature -> top-k -> top-p -> softmax -> draw. The work
//! is done by the sampling kernels (`Op::Penalize`, `Op::Sample`; on the CPU their twin in
//! `kiln_kernels::cpu::sample`, whose module doc states the exact rule): on a GPU the logits
//! stay on the device and only the token id comes back, and the CPU and CUDA paths pick the
//! same token for the same seed (up to float rounding of the logits themselves).
//!
//! The random stream is our own xoshiro256** seeded with splitmix64, so a seed picks the same
//! tokens on every machine and in every future version (no dependency whose stream may move).
//! A non-greedy step takes exactly one number from it, whatever the logits; a greedy one none.

use crate::backend::{backend_for, Device};
use crate::error::{shape_err, EngineError, Result};
use crate::op::{Op, PenaltyRow, SampleRow};
use crate::tensor::Tensor;
use kiln_kernels::cpu::sample::{penalize, sample_row, SampleScratch};
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
    /// Per vocabulary id: 1 + the index of its penalty entry this step, 0 for none (reset
    /// after each step).
    slot: Vec<u32>,
    /// This step's penalty entries: flat (id, occurrences in the generated text) pairs, one
    /// per distinct id, in order of first occurrence.
    entries: Vec<u32>,
    scratch: SampleScratch,
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
            slot: Vec::new(),
            entries: Vec::new(),
            scratch: SampleScratch::default(),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Pick the next token. `logits` (one per vocabulary entry) holds the penalised logits
    /// afterwards. `history` is prompt + generated ids; ids outside the vocabulary are
    /// ignored. NaN logits are never chosen; with no usable logit at all (empty or all NaN)
    /// the answer is 0, as there is nothing to choose from.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let vocab = logits.len();
        if let Some(pen) = self.penalty_row() {
            self.collect_penalty_entries(vocab, history);
            let n = (self.entries.len() / 2) as u32;
            if n > 0 {
                penalize(logits, vocab, &[pen], &[0, n], &self.entries);
            }
        }
        let row = self.next_row();
        if vocab == 0 {
            return 0;
        }
        sample_row(logits, &row, &mut self.scratch)
    }

    /// [`Sampler::sample`] on a logits tensor, [vocab] or [1, vocab] f32 on any device. On a
    /// GPU the penalties and the draw run there (`Op::Penalize`, `Op::Sample`) and only the
    /// 4-byte token id is copied back; the token is the one [`Sampler::sample`] picks from
    /// the same values with the same seed.
    pub fn sample_tensor(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32> {
        let vocab = match logits.shape() {
            [v] | [1, v] => *v,
            s => {
                return Err(shape_err(
                    "sample",
                    format!("logits {s:?}: expected [vocab] or [1, vocab]"),
                ))
            }
        };
        let device = logits.device();
        if device == Device::Cpu {
            let mut row = logits.to_vec::<f32>()?;
            return Ok(self.sample(&mut row, history));
        }
        let backend = backend_for(device);
        let mut x = logits.reshape(&[1, vocab])?;
        if let Some(pen) = self.penalty_row() {
            self.collect_penalty_entries(vocab, history);
            let n = self.entries.len() / 2;
            if n > 0 {
                let offsets = Tensor::from_vec(vec![0, n as u32], &[2])?.to_device(device)?;
                let entries = Tensor::from_slice(&self.entries, &[n, 2])?.to_device(device)?;
                let op = Op::Penalize { rows: vec![pen] };
                x = backend.execute(&op, &[&x, &offsets, &entries])?;
            }
        }
        let op = Op::Sample {
            rows: vec![self.next_row()],
        };
        let ids = backend.execute(&op, &[&x])?.to_vec::<u32>()?;
        ids.first()
            .copied()
            .ok_or_else(|| EngineError::Data("sample: no token id came back".into()))
    }

    /// One token per row of `logits` [rows, vocab] f32: row r drawn by `samplers[r]` with
    /// `histories[r]`. On the CPU each row goes through [`Sampler::sample`]; on a GPU all
    /// rows' penalties and draws are one `Op::Penalize` and one `Op::Sample` launch and only
    /// the ids come back (the same tokens, by the kernels' integer-exact rule).
    pub fn sample_batch(
        logits: &Tensor,
        samplers: &mut [&mut Sampler],
        histories: &[&[u32]],
    ) -> Result<Vec<u32>> {
        let (rows, vocab) = match logits.shape() {
            [r, v] => (*r, *v),
            s => {
                return Err(shape_err(
                    "sample",
                    format!("logits {s:?}: expected [rows, vocab]"),
                ))
            }
        };
        if samplers.len() != rows || histories.len() != rows {
            return Err(shape_err(
                "sample",
                format!(
                    "{rows} rows of logits for {} samplers and {} histories",
                    samplers.len(),
                    histories.len()
                ),
            ));
        }
        let device = logits.device();
        if device == Device::Cpu || rows == 0 {
            let all = logits.to_vec::<f32>()?;
            return Ok(samplers
                .iter_mut()
                .zip(histories)
                .zip(all.chunks(vocab.max(1)))
                .map(|((s, h), row)| s.sample(&mut row.to_vec(), h))
                .collect());
        }
        let backend = backend_for(device);
        let mut x = logits.clone();
        if samplers.iter().any(|s| s.penalty_row().is_some()) {
            let neutral = PenaltyRow {
                repetition: 1.0,
                frequency: 0.0,
                presence: 0.0,
            };
            let (mut pens, mut offsets, mut entries) = (Vec::new(), vec![0u32], Vec::new());
            for (s, h) in samplers.iter_mut().zip(histories) {
                match s.penalty_row() {
                    Some(pen) => {
                        s.collect_penalty_entries(vocab, h);
                        entries.extend_from_slice(&s.entries);
                        pens.push(pen);
                    }
                    None => pens.push(neutral),
                }
                offsets.push((entries.len() / 2) as u32);
            }
            let n = entries.len() / 2;
            if n > 0 {
                let offsets = Tensor::from_slice(&offsets, &[rows + 1])?.to_device(device)?;
                let entries = Tensor::from_slice(&entries, &[n, 2])?.to_device(device)?;
                let op = Op::Penalize { rows: pens };
                x = backend.execute(&op, &[&x, &offsets, &entries])?;
            }
        }
        let op = Op::Sample {
            rows: samplers.iter_mut().map(|s| s.next_row()).collect(),
        };
        let ids = backend.execute(&op, &[&x])?.to_vec::<u32>()?;
        if ids.len() != rows {
            return Err(EngineError::Data(format!(
                "sample: {} ids came back for {rows} rows",
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// This step's kernel parameters; draws the uniform (one number) unless greedy.
    fn next_row(&mut self) -> SampleRow {
        let p = &self.params;
        let greedy = p.is_greedy();
        SampleRow {
            temperature: if greedy { 0.0 } else { p.temperature },
            top_k: p.top_k.map_or(0, |k| k as u32),
            top_p: p.top_p,
            uniform: if greedy { 0.0 } else { self.rng.next_f64() },
        }
    }

    /// The penalties, or None when all are neutral.
    fn penalty_row(&self) -> Option<PenaltyRow> {
        let p = &self.params;
        let neutral =
            p.repetition_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0;
        (!neutral).then_some(PenaltyRow {
            repetition: p.repetition_penalty,
            frequency: p.frequency_penalty,
            presence: p.presence_penalty,
        })
    }

    /// Fills `entries` from `history`: every distinct in-vocabulary id the penalties touch
    /// (prompt ids only when the repetition penalty is on, since frequency and presence
    /// ignore them) with its count in the generated part.
    fn collect_penalty_entries(&mut self, vocab: usize, history: &[u32]) {
        let with_prompt = self.params.repetition_penalty != 1.0;
        let split = self.prompt_len.min(history.len());
        let Self { slot, entries, .. } = self;
        entries.clear();
        if slot.len() < vocab {
            slot.resize(vocab, 0);
        }
        for (pos, &id) in history.iter().enumerate() {
            let generated = pos >= split;
            if (!generated && !with_prompt) || id as usize >= vocab {
                continue;
            }
            let s = &mut slot[id as usize];
            if *s == 0 {
                entries.extend_from_slice(&[id, 0]);
                *s = (entries.len() / 2) as u32;
            }
            if generated {
                entries[2 * (*s as usize - 1) + 1] += 1;
            }
        }
        for pair in entries.chunks_exact(2) {
            slot[pair[0] as usize] = 0;
        }
    }
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
