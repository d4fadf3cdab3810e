//! Cases and inputs of `Op::Sample` and `Op::Penalize`.
//!
//! Both compare exactly: the sampling rule works on integer weights built from f32 operations
//! that are each rounded on their own (no libm `exp`, no fused multiply-add), so the kernel
//! and the CPU twin pick the same token for the same logits and uniform, near a boundary or
//! not; any differing id is a bug, not rounding. The penalties are single f32 operations.

use super::{case, inp, Case, Check, Fill, Rng, View, F32};
use kiln_engine::op::{Op, PenaltyRow, SampleRow};
use kiln_engine::{DType, Tensor};

/// How sampling logits are drawn: uniform in [-scale, scale], then rounded to multiples of
/// `step` (0: not rounded; rounding makes ties), with NaN and -inf sprinkled in when `holes`.
#[derive(Clone, Copy, Debug)]
pub struct LogitFill {
    pub scale: f32,
    pub step: f32,
    pub holes: bool,
}

impl std::fmt::Display for LogitFill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x{}", self.scale)?;
        if self.step > 0.0 {
            write!(f, " step{}", self.step)?;
        }
        if self.holes {
            f.write_str(" nan/-inf")?;
        }
        Ok(())
    }
}

const VOCABS: [usize; 6] = [1, 31, 32, 33, 32000, 128256];

fn row(temperature: f32, top_k: u32, top_p: f32, uniform: f64) -> SampleRow {
    SampleRow {
        temperature,
        top_k,
        top_p,
        uniform,
    }
}

/// Named row-parameter sets: greedy, temperature only, top-k only, top-p only, both; the
/// uniforms include the ends of [0, 1).
fn param_sets() -> Vec<(&'static str, Vec<SampleRow>)> {
    vec![
        ("greedy", vec![row(0.0, 0, 1.0, 0.0), row(0.7, 1, 0.5, 0.3)]),
        (
            "temperature",
            vec![
                row(0.7, 0, 1.0, 0.0),
                row(1.0, 0, 1.0, 0.37),
                row(2.0, 0, 1.0, 1.0 - 1e-12),
            ],
        ),
        (
            "top_k",
            vec![
                row(1.0, 50, 1.0, 0.61),
                row(0.6, 40, 1.0, 0.999_999),
                row(1.3, 2, 1.0, 0.25),
            ],
        ),
        (
            "top_p",
            vec![
                row(0.8, 0, 0.9, 0.5),
                row(1.0, 0, 0.5, 0.999_999),
                row(1.5, 0, 0.99, 0.01),
            ],
        ),
        (
            "top_k+top_p",
            vec![
                row(1.2, 50, 0.95, 0.42),
                row(0.7, 40, 0.9, 0.0),
                row(1.0, 5, 0.3, 0.77),
                row(0.0, 40, 0.9, 0.5),
            ],
        ),
    ]
}

pub fn sample_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let fills = [
        LogitFill {
            scale: 1.0,
            step: 0.0,
            holes: false,
        },
        LogitFill {
            scale: 12.0,
            step: 0.0,
            holes: true,
        },
        LogitFill {
            scale: 4.0,
            step: 0.25,
            holes: false,
        },
    ];
    for vocab in VOCABS {
        for (i, (_, rows)) in param_sets().into_iter().enumerate() {
            let fill = fills[i % fills.len()];
            let x = inp(&[rows.len(), vocab], F32).fill(Fill::Logits(fill));
            v.push(case(Op::Sample { rows }, vec![x], Check::Exact));
        }
    }
    // Every fill on the big vocabulary with both cuts; a strided view.
    for fill in fills {
        let rows = param_sets().swap_remove(4).1;
        let x = inp(&[rows.len(), 128256], F32).fill(Fill::Logits(fill));
        v.push(case(Op::Sample { rows }, vec![x], Check::Exact));
    }
    let rows = param_sets().swap_remove(3).1;
    let x = inp(&[rows.len(), 33], F32)
        .fill(Fill::Logits(fills[2]))
        .view(View::Transpose(0, 1));
    v.push(case(Op::Sample { rows }, vec![x], Check::Exact));
    v
}

pub fn penalize_cases() -> Vec<Case> {
    let pen = |repetition, frequency, presence| PenaltyRow {
        repetition,
        frequency,
        presence,
    };
    let sets = [
        pen(1.3, 0.5, 0.2),
        pen(1.0, 0.0, 0.0),
        pen(0.7, -0.4, -2.0),
        pen(2.0, 2.0, 2.0),
    ];
    let mut v = Vec::new();
    for vocab in VOCABS {
        for (rows, per_row) in [(1, vocab.min(20)), (4, vocab.min(2000))] {
            let rows_params: Vec<PenaltyRow> = (0..rows).map(|r| sets[r % sets.len()]).collect();
            let x = inp(&[rows, vocab], F32);
            let offsets = inp(&[rows + 1], DType::U32).fill(Fill::Offsets(per_row));
            let entries =
                inp(&[rows * per_row, 2], DType::U32).fill(Fill::Entries { vocab, per_row });
            let op = Op::Penalize { rows: rows_params };
            v.push(case(op, vec![x, offsets, entries], Check::Exact));
        }
    }
    v
}

/// Logits of `fill`, `n` of them.
pub fn logits(fill: LogitFill, n: usize, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = rng.uniform() * fill.scale;
            if fill.holes && i % 37 == 5 {
                f32::NAN
            } else if fill.holes && i % 41 == 7 {
                f32::NEG_INFINITY
            } else if fill.step > 0.0 {
                (x / fill.step).round() * fill.step
            } else {
                x
            }
        })
        .collect()
}

/// `n` offsets of a CSR with `per_row` entries per row.
pub fn offsets(per_row: usize, n: usize) -> Vec<u32> {
    (0..n).map(|r| (r * per_row) as u32).collect()
}

/// `n` (id, count) pairs (2n u32s): each row of `per_row` has distinct ids below `vocab` and
/// counts 0..3 (0: seen in the prompt only).
pub fn entries(vocab: usize, per_row: usize, n: usize, rng: &mut Rng) -> Vec<u32> {
    let mut out = Vec::with_capacity(2 * n);
    let mut used = vec![false; vocab];
    for chunk_start in (0..n).step_by(per_row.max(1)) {
        let len = per_row.min(n - chunk_start);
        let mut ids = Vec::with_capacity(len);
        while ids.len() < len {
            let id = rng.below(vocab) as usize;
            if !used[id] {
                used[id] = true;
                ids.push(id);
            }
        }
        for &id in &ids {
            used[id] = false;
            out.extend([id as u32, rng.below(4)]);
        }
    }
    out
}

/// The parameters in a case's description.
pub fn describe(op: &Op) -> String {
    match op {
        Op::Sample { rows } => {
            let r: Vec<String> = rows
                .iter()
                .map(|p| {
                    format!(
                        "t{} k{} p{} u{}",
                        p.temperature, p.top_k, p.top_p, p.uniform
                    )
                })
                .collect();
            format!(" [{}]", r.join("; "))
        }
        Op::Penalize { rows } => {
            let r: Vec<String> = rows
                .iter()
                .map(|p| format!("r{} f{} p{}", p.repetition, p.frequency, p.presence))
                .collect();
            format!(" [{}]", r.join("; "))
        }
        _ => String::new(),
    }
}

/// A tensor of `data` in `shape` (both the actual input and its f32 twin).
pub fn pair<T: kiln_engine::Element>(
    data: Vec<T>,
    shape: &[usize],
) -> Result<(Tensor, Tensor), String> {
    let t = Tensor::from_vec(data, shape).map_err(|e| e.to_string())?;
    Ok((t.clone(), t))
}
