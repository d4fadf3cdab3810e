//! Token sampling over rows of logits (CPU twin of `cuda/sample.cu`): penalties applied in
//! place, then per row either greedy argmax or temperature -> top-k -> top-p -> one draw.
//! One row is one sequence; every row has its own parameters and its own uniform number.
//!
//! # The rule (the kernel computes the same integers)
//!
//! For a row `x[0..V)` with temperature `T`, `top_k` (0 = off), `top_p` and uniform `u`:
//!
//! 1. Greedy when `!(T > 0)` or `top_k == 1`: the first index of the largest non-NaN logit
//!    (0 when there is none).
//! 2. `inv = 1 / T` and `z_i = x_i * inv` (f32). `m` = the largest `z`. When `inv` or `m` is
//!    not finite (an infinite logit, overflow, nothing but NaN) the row is greedy as in 1.
//! 3. Each non-NaN entry weighs `w_i = weight(z_i - m)`, an integer ~ `exp(z_i - m) * 2^40`
//!    built from separately rounded f32 multiplies and adds only (no libm `exp`, no fused
//!    multiply-add), so twin and kernel get the same integer; the largest logit weighs
//!    exactly `2^40`, and entries lighter than about `2^-41` of it weigh 0 (never drawn:
//!    probability < 1e-12). Sums of weights are exact, so no decision depends on the order
//!    in which they are added.
//! 4. Entries are ordered by `z` descending, then id ascending (`order_key`); NaN is out.
//! 5. top-k (`0 < k < ` number of non-NaN entries): keep the first `k` entries in that order.
//! 6. top-p (`top_p < 1`): with `S1` the kept mass, `need = ceil(top_p * S1)` (an f64
//!    product), keep the entries whose preceding kept mass (in the order of 4) is `< need`:
//!    the smallest prefix holding at least `top_p` of the mass.
//! 7. Draw: `S2` the kept mass, `r = min(floor(u * S2), S2 - 1)` (an f64 product); the token
//!    is the first kept id, in ascending id order, whose running kept mass exceeds `r`.
//!
//! Relation to HF transformers (`TemperatureLogitsWarper`, `TopKLogitsWarper`,
//! `TopPLogitsWarper`, then `multinomial`): the kept set is HF's, with ties at the top-k
//! boundary broken by lowest id (torch.topk leaves them unspecified) and HF's top-p rule
//! ("drop the tail whose ascending cumulative probability is <= 1 - top_p") being the same
//! prefix as 6. The temperature is applied as a multiply by `1 / T` rather than a divide
//! (equal up to one rounding). The draw scans the kept tokens in id order, not in probability
//! order, so one `u` picks another token than HF's sampler would, but each kept token is
//! drawn with probability `w_i / S2`, i.e. its renormalised softmax probability to ~2e-7.
//!
//! NaN logits are documented behaviour, not errors: a NaN is never chosen (greedy or drawn),
//! and a row with nothing but NaN gives token 0.
//!
//! Penalties (HF `RepetitionPenaltyLogitsProcessor`, then OpenAI frequency / presence) come
//! in CSR form: row `r` owns `entries[offsets[r]..offsets[r + 1]]`, each `(id, count)` with
//! `count` the occurrences of `id` in the generated text (0 for an id seen only in the
//! prompt). The ids of a row must be distinct. For each entry with `id < V`:
//! `l = l < 0 ? l * repetition : l / repetition`, then `l -= frequency * count + presence`
//! when `count > 0`.

use rayon::prelude::*;

/// Per-row sampling parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleRow {
    /// 0 (or anything not > 0) means greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 = off, 1 = greedy.
    pub top_k: u32,
    /// Nucleus mass in (0, 1]; 1 = off.
    pub top_p: f32,
    /// Uniform in [0, 1) from the sequence's random stream; unused by greedy rows.
    pub uniform: f64,
}

/// Per-row penalties; (1, 0, 0) is neutral.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PenaltyRow {
    /// HF multiplicative penalty on every id seen (prompt included).
    pub repetition: f32,
    /// OpenAI: subtracted once per occurrence in the generated text.
    pub frequency: f32,
    /// OpenAI: subtracted once if the id occurs in the generated text.
    pub presence: f32,
}

/// `weight(0)`: the weight of the largest logit.
pub const WEIGHT_ONE: u64 = 1 << WEIGHT_BITS;
const WEIGHT_BITS: i32 = 40;

/// Longest row: `MAX_VOCAB` weights of at most `2^40` sum below `2^63`.
pub const MAX_VOCAB: usize = 1 << 22;

/// f32 bit patterns shared with the kernel: log2(e); ln(2) split in a high part with few
/// bits (so `n * LN2_HI` is exact) and the rest; the Taylor coefficients 1/i! of exp.
const LOG2E: u32 = 0x3fb8_aa3b;
const LN2_HI: u32 = 0x3f31_7200;
const LN2_LO: u32 = 0x35bf_be8e;
const ROUNDER: f32 = 12_582_912.0;
const EXP_POLY: [u32; 8] = [
    0x3f80_0000,
    0x3f80_0000,
    0x3f00_0000,
    0x3e2a_aaab,
    0x3d2a_aaab,
    0x3c08_8889,
    0x3ab6_0b61,
    0x3950_0d01,
];

/// `exp(d) * 2^40` rounded to an integer, for `d <= 0` (0 for NaN or `d < -44`). Cody-Waite:
/// `d = n ln2 + r` with `n` integer and `|r| <= ln2 / 2`, `exp(r)` a degree-7 polynomial
/// in Horner form (relative error ~1.5e-7 for any `d`), then its mantissa shifted by
/// `n + 40 - 23` and rounded half up. Only f32 multiplies, subtractions and additions, each
/// rounded on its own, so the kernel (with `__fmul_rn` and friends) gets the same bits.
pub fn weight(d: f32) -> u64 {
    let t = d * f32::from_bits(LOG2E);
    // Branch-free (the sign of `shift` below is a coin flip over a row): out-of-range `t`
    // is clamped for the arithmetic and answered 0 at the end.
    let in_range = t >= -64.0;
    let t = if !in_range {
        -64.0
    } else if t > 0.0 {
        0.0
    } else {
        t
    };
    // Round to the nearest integer (ties to even) by adding and removing 1.5 * 2^23: two
    // plain adds, where a libm floor would be a call per element.
    let n = (t + ROUNDER) - ROUNDER;
    let r = (d - n * f32::from_bits(LN2_HI)) - n * f32::from_bits(LN2_LO);
    let mut p = f32::from_bits(EXP_POLY[7]);
    for &c in EXP_POLY[..7].iter().rev() {
        p = p * r + f32::from_bits(c);
    }
    let bits = p.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32 - 127;
    let mant = u64::from((bits & 0x7f_ffff) | 0x80_0000);
    // mant * 2^shift, rounded half up when shift < 0.
    let shift = exp + n as i32 + (WEIGHT_BITS - 23);
    let left = shift.clamp(0, WEIGHT_BITS - 23) as u32;
    let right = (-shift).clamp(0, 63) as u32;
    let q = ((mant << left) + ((1u64 << right) >> 1)) >> right;
    if in_range {
        q
    } else {
        0
    }
}

/// A u32 that orders non-NaN floats as the floats (-0 and +0 equal); 0 for NaN, which every
/// number exceeds (the key of -inf is 0x007f_ffff).
pub fn order_key(z: f32) -> u32 {
    if z.is_nan() {
        return 0;
    }
    let b = if z == 0.0 { 0 } else { z.to_bits() };
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// A prefix of the sampling order: entries with a larger key, or the same key and an id no
/// larger than `id`. NaN (key 0) is never in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    pub key: u32,
    pub id: u32,
}

impl Cut {
    pub const ALL: Cut = Cut {
        key: 0,
        id: u32::MAX,
    };

    pub fn keeps(self, key: u32, id: u32) -> bool {
        key != 0 && (key > self.key || (key == self.key && id <= self.id))
    }
}

/// Scratch buffers reused across calls (a 128k row allocates nothing after the first).
#[derive(Clone, Debug, Default)]
pub struct SampleScratch {
    keys: Vec<u32>,
    weights: Vec<u64>,
    cands: Vec<(u32, u32)>,
    drawn: Vec<(u32, u64)>,
}

/// Index of the first largest non-NaN value (0 if none) and the number of non-NaN values.
fn argmax_count(x: &[f32]) -> (u32, usize) {
    let mut best: Option<(usize, f32)> = None;
    let mut valid = 0;
    for (i, &v) in x.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        valid += 1;
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    (best.map_or(0, |(i, _)| i as u32), valid)
}

/// Whether a row is drawn greedily (before looking at its logits).
pub fn is_greedy(p: &SampleRow) -> bool {
    p.temperature.is_nan() || p.temperature <= 0.0 || p.top_k == 1
}

/// `ceil(top_p * total)` in [1, total]: the mass the nucleus must reach.
pub fn nucleus_need(top_p: f32, total: u64) -> u64 {
    let need = (f64::from(top_p) * total as f64).ceil() as u64;
    need.clamp(1, total)
}

/// `min(floor(u * total), total - 1)`: the draw's position in the kept mass.
pub fn draw_target(u: f64, total: u64) -> u64 {
    ((u * total as f64).floor() as u64).min(total.saturating_sub(1))
}

/// The token of one row (see the module doc for the rule).
pub fn sample_row(x: &[f32], p: &SampleRow, scratch: &mut SampleScratch) -> u32 {
    let (best, valid) = argmax_count(x);
    if is_greedy(p) || valid == 0 {
        return best;
    }
    let inv = 1.0 / p.temperature;
    let m = x[best as usize] * inv;
    if !inv.is_finite() || !m.is_finite() {
        return best;
    }
    let w = |z: f32| if z.is_nan() { 0 } else { weight(z - m) };
    let SampleScratch {
        keys,
        weights,
        cands,
        drawn,
    } = scratch;
    if p.top_k > 0 && (p.top_k as usize) < valid {
        // Only the k survivors need weights: cut, nucleus and draw all run on them.
        keys.clear();
        keys.extend(x.iter().map(|&v| order_key(v * inv)));
        collect_top_k(keys, p.top_k as usize, cands);
        cands.sort_unstable_by(by_order);
        weights.clear();
        weights.extend(cands.iter().map(|&(_, i)| w(x[i as usize] * inv)));
        let mut kept = cands.len();
        if p.top_p < 1.0 {
            let need = nucleus_need(p.top_p, weights.iter().sum());
            let mut acc = 0u64;
            kept = weights
                .iter()
                .position(|&wi| {
                    acc += wi;
                    acc >= need
                })
                .map_or(kept, |j| j + 1);
        }
        drawn.clear();
        drawn.extend(
            cands[..kept]
                .iter()
                .zip(weights.iter())
                .map(|(&(_, i), &wi)| (i, wi)),
        );
        drawn.sort_unstable_by_key(|&(i, _)| i);
        let total = drawn.iter().map(|&(_, wi)| wi).sum();
        let target = draw_target(p.uniform, total);
        let mut acc = 0u64;
        return drawn
            .iter()
            .find(|&&(_, wi)| {
                acc += wi;
                acc > target
            })
            .map_or(best, |&(i, _)| i);
    }
    weights.clear();
    weights.extend(x.iter().map(|&v| w(v * inv)));
    let mut total: u64 = weights.iter().sum();
    let mut cut = Cut::ALL;
    if p.top_p < 1.0 {
        keys.clear();
        keys.extend(x.iter().map(|&v| order_key(v * inv)));
        let need = nucleus_need(p.top_p, total);
        if let Some((c, mass)) = nucleus_radix(keys, weights, need) {
            cut = c;
            total = mass;
        }
    }
    let target = draw_target(p.uniform, total);
    let mut acc = 0u64;
    for (i, &wi) in weights.iter().enumerate() {
        if cut == Cut::ALL || cut.keeps(keys[i], i as u32) {
            acc += wi;
            if acc > target {
                return i as u32;
            }
        }
    }
    // Unreachable with exact sums (target < total); the first token is a safe answer.
    best
}

/// Sampling order: key descending, then id ascending.
fn by_order(a: &(u32, u32), b: &(u32, u32)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The `k` first non-NaN entries in sampling order, unordered. Keeps a buffer of at most
/// 2k entries and a running admission bar, so a long row costs one pass of comparisons.
fn collect_top_k(keys: &[u32], k: usize, cands: &mut Vec<(u32, u32)>) {
    cands.clear();
    let k = k.max(1);
    let mut bar: Option<(u32, u32)> = None;
    for (i, &key) in keys.iter().enumerate() {
        if key == 0 {
            continue;
        }
        let c = (key, i as u32);
        if bar.is_some_and(|b| by_order(&c, &b).is_ge()) {
            continue;
        }
        cands.push(c);
        if cands.len() >= 2 * k {
            cands.select_nth_unstable_by(k - 1, by_order);
            cands.truncate(k);
            bar = Some(cands[k - 1]);
        }
    }
    if cands.len() > k {
        cands.select_nth_unstable_by(k - 1, by_order);
        cands.truncate(k);
    }
}

/// The last entry of the smallest prefix (in sampling order) of the non-NaN entries whose
/// mass reaches `need`, and that prefix's mass, found as the kernel finds it: radix select on
/// the keys (four 8-bit digits, most significant first, a mass histogram per digit) gives
/// the key `t` where the running mass crosses `need`; the entries at `t` weigh the same, so
/// `ceil((need - mass above t) / w_t)` of them are kept, lowest ids first. Costs five passes
/// over the row whatever the shape of the distribution (no sort).
fn nucleus_radix(keys: &[u32], weights: &[u64], need: u64) -> Option<(Cut, u64)> {
    let (mut prefix, mut above) = (0u32, 0u64);
    for level in 0..4 {
        let shift = 24 - 8 * level;
        let mut hist = [0u64; 256];
        for (&k, &wi) in keys.iter().zip(weights) {
            if k == 0 || (level > 0 && k >> (shift + 8) != prefix) {
                continue;
            }
            hist[((k >> shift) & 0xff) as usize] += wi;
        }
        let b = (0..256).rev().find(|&b| {
            let crosses = above + hist[b] >= need;
            if !crosses {
                above += hist[b];
            }
            crosses
        })?;
        prefix = (prefix << 8) | b as u32;
    }
    let (mut ties, mut seen) = (0u64, 0u64);
    for (i, (&k, &wi)) in keys.iter().zip(weights).enumerate() {
        if k != prefix {
            continue;
        }
        if ties == 0 {
            // All entries at the cut key weigh `wi` (> 0, or the mass would not cross here).
            ties = (need - above).div_ceil(wi.max(1));
        }
        seen += 1;
        if seen == ties {
            let cut = Cut {
                key: prefix,
                id: i as u32,
            };
            return Some((cut, above + ties * wi));
        }
    }
    None
}

/// Samples every row of `logits` [rows, vocab] into `out` [rows].
pub fn sample(logits: &[f32], vocab: usize, rows: &[SampleRow], out: &mut [u32]) {
    let n = rows.len();
    assert!(
        vocab > 0 && logits.len() >= n * vocab && out.len() >= n,
        "sample: short buffers"
    );
    out[..n]
        .par_iter_mut()
        .zip(logits[..n * vocab].par_chunks_exact(vocab))
        .zip(rows.par_iter())
        .for_each_init(SampleScratch::default, |s, ((o, x), p)| {
            *o = sample_row(x, p, s);
        });
}

/// The penalised value of one logit (shared by [`penalize`] and the tests).
pub fn penalized(l: f32, p: &PenaltyRow, count: u32) -> f32 {
    let r = p.repetition;
    let mut l = if l < 0.0 { l * r } else { l / r };
    if count > 0 {
        l -= p.frequency * count as f32 + p.presence;
    }
    l
}

/// Applies each row's penalties in place to `logits` [rows, vocab]. `offsets` has
/// `rows + 1` entries into `entries` (flat `(id, count)` pairs); out-of-range offsets are
/// clamped and ids `>= vocab` ignored, as the kernel does.
pub fn penalize(
    logits: &mut [f32],
    vocab: usize,
    rows: &[PenaltyRow],
    offsets: &[u32],
    entries: &[u32],
) {
    let n = rows.len();
    assert!(
        logits.len() >= n * vocab && offsets.len() > n,
        "penalize: short buffers"
    );
    let pairs = entries.len() / 2;
    for (r, (row, p)) in logits.chunks_exact_mut(vocab).zip(rows).enumerate() {
        let end = (offsets[r + 1] as usize).min(pairs);
        let start = (offsets[r] as usize).min(end);
        for e in start..end {
            let (id, count) = (entries[2 * e] as usize, entries[2 * e + 1]);
            if let Some(l) = row.get_mut(id) {
                *l = penalized(*l, p, count);
            }
        }
    }
}

#[cfg(test)]
#[path = "sample_tests.rs"]
mod tests;
