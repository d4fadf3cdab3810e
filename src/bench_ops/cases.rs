//! The cases of `kiln bench-ops`: shapes per op, the bytes and FLOPs each call must move or
//! compute, and seeded inputs.

use anyhow::Result;
use clap::ValueEnum;
use kiln_engine::op::{GeluApprox, PenaltyRow, RopeStyle, SampleRow};
use kiln_engine::{DType, Op, Tensor};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// Quick shapes (default on cpu).
    Small,
    /// >= 64 MB of traffic per elementwise/norm op, Llama-3.1-8B matmul shapes (default on cuda).
    Large,
}

/// How an input is filled.
#[derive(Clone, Copy)]
pub enum Fill {
    /// Uniform in [-1, 1], built in f32 and cast to the dtype.
    Uniform(DType),
    /// Random u32 token ids below this bound.
    Ids(u32),
    /// Positions 0..n as u32.
    Positions,
    /// Rotary inverse frequencies (base 500000) for head_dim 2n.
    InvFreq,
    /// A paged block table [seqs, max_blocks]: every entry a distinct page of a pool of
    /// seqs * max_blocks, in shuffled order (as a long-running cache scatters pages).
    PageTable,
    /// A block table whose rows each hold distinct pages drawn from a pool of this many
    /// (rows may share pages): batches bigger than the pool a case can afford.
    PageTableIn(u32),
    /// Every entry this u32 (context lengths).
    Const(u32),
    /// cu_seqlens of sequences of this many rows each: 0, n, 2n, ...
    CuSeqlens(u32),
    /// Distinct random u32 slots below this bound (reshape_and_cache slot mappings).
    Slots(u32),
}

pub struct Input {
    pub shape: Vec<usize>,
    pub fill: Fill,
}

pub struct Spec {
    pub op: Op,
    pub inputs: Vec<Input>,
    /// Destination shape of the in-place op (copy_rows).
    pub dst: Option<Vec<usize>>,
}

fn inp(shape: &[usize], fill: Fill) -> Input {
    Input {
        shape: shape.to_vec(),
        fill,
    }
}

pub fn f32s(shape: &[usize]) -> Input {
    inp(shape, Fill::Uniform(DType::F32))
}

fn pure(op: Op, inputs: Vec<Input>) -> Spec {
    Spec {
        op,
        inputs,
        dst: None,
    }
}

/// (N, K) of the Llama-3.1-8B projections: q/o, fused qkv, fused gate+up, down, lm_head.
const LLAMA_NK: [(usize, usize); 5] = [
    (4096, 4096),
    (6144, 4096),
    (28672, 4096),
    (4096, 14336),
    (128256, 4096),
];
const LLAMA_M: [usize; 4] = [1, 16, 128, 4096];

/// The cases of one op of the op set (by its `Op::name`).
pub fn specs(name: &str, size: Size) -> Vec<Spec> {
    let large = size == Size::Large;
    // Elementwise/norm tensors: 8192 x 4096 f32 = 128 MiB each when large.
    let (r, h) = if large { (8192, 4096) } else { (256, 1024) };
    let rh = [r, h];
    match name {
        "embedding" => {
            let vocab = if large { 32768 } else { 2048 };
            vec![pure(
                Op::Embedding,
                vec![
                    inp(&[vocab, h], Fill::Uniform(DType::BF16)),
                    inp(&[r], Fill::Ids(vocab as u32)),
                ],
            )]
        }
        "matmul" => {
            let (ms, nks): (&[usize], &[(usize, usize)]) = if large {
                (&LLAMA_M, &LLAMA_NK)
            } else {
                (&[1, 16], &[(1024, 1024), (2816, 1024)])
            };
            let mut v = Vec::new();
            for &(n, k) in nks {
                for &m in ms {
                    let w = inp(&[n, k], Fill::Uniform(DType::BF16));
                    let op = Op::Matmul {
                        bias: false,
                        residual: false,
                    };
                    v.push(pure(op, vec![f32s(&[m, k]), w]));
                }
            }
            v
        }
        "rmsnorm" => vec![pure(Op::RmsNorm { eps: 1e-5 }, vec![f32s(&rh), f32s(&[h])])],
        "rope" => {
            let d = if large { 128 } else { 64 };
            vec![pure(
                Op::Rope {
                    style: RopeStyle::HalfSplit,
                    attention_scaling: 1.0,
                },
                vec![
                    f32s(&[r, h / d, d]),
                    inp(&[r], Fill::Positions),
                    inp(&[d / 2], Fill::InvFreq),
                ],
            )]
        }
        "silu_mul" => vec![pure(Op::SiluMul, vec![f32s(&rh), f32s(&rh)])],
        "layernorm" => vec![pure(
            Op::LayerNorm { eps: 1e-5 },
            vec![f32s(&rh), f32s(&[h]), f32s(&[h])],
        )],
        "gelu" => [GeluApprox::Erf, GeluApprox::Tanh]
            .into_iter()
            .map(|approx| pure(Op::Gelu { approx }, vec![f32s(&rh)]))
            .collect(),
        "quick_gelu" => vec![pure(Op::QuickGelu, vec![f32s(&rh)])],
        "add_rmsnorm" => vec![pure(
            Op::AddRmsNorm { eps: 1e-5 },
            vec![f32s(&rh), f32s(&rh), f32s(&[h])],
        )],
        "add" => vec![pure(Op::Add, vec![f32s(&rh), f32s(&rh)])],
        "mul" => vec![pure(Op::Mul, vec![f32s(&rh), f32s(&rh)])],
        "scale" => vec![pure(Op::Scale { factor: 0.5 }, vec![f32s(&rh)])],
        "softmax" => vec![pure(
            Op::Softmax {
                scale: 1.0,
                causal: false,
            },
            vec![f32s(&rh)],
        )],
        "attention" => {
            // Prefill (causal, square) and one decode step over a long cache; GQA 4:1.
            let (heads, kv_heads, d, len, ctx) = if large {
                (32, 8, 128, 1024, 4096)
            } else {
                (4, 1, 64, 64, 256)
            };
            let op = Op::Attention {
                scale: 1.0 / (d as f32).sqrt(),
                causal: true,
            };
            [(len, len), (1, ctx)]
                .iter()
                .map(|&(q, kv)| {
                    let qkv = vec![
                        f32s(&[q, heads, d]),
                        f32s(&[kv, kv_heads, d]),
                        f32s(&[kv, kv_heads, d]),
                    ];
                    pure(op.clone(), qkv)
                })
                .collect()
        }
        "reshape_and_cache" => {
            // Writing one prefill chunk's keys into a [blocks, kv_heads, 16, d] f32 cache.
            let (t, kvh, d, blocks) = if large {
                (2048, 8, 128, 4096)
            } else {
                (64, 2, 64, 64)
            };
            vec![Spec {
                op: Op::ReshapeAndCache,
                inputs: vec![
                    f32s(&[t, kvh, d]),
                    inp(&[t], Fill::Slots((blocks * 16) as u32)),
                ],
                dst: Some(vec![blocks, kvh, 16, d]),
            }]
        }
        "paged_attention" => paged_specs(large),
        "varlen_attention" => {
            // BERT-base-like encoder self-attention: 32 sequences of 512 (large).
            let (seqs, len, heads, d) = if large {
                (32, 512, 12, 64)
            } else {
                (4, 64, 4, 64)
            };
            let cu = || inp(&[seqs + 1], Fill::CuSeqlens(len as u32));
            let qkv = || f32s(&[seqs * len, heads, d]);
            let op = Op::VarlenAttention {
                scale: 1.0 / (d as f32).sqrt(),
                causal: false,
            };
            vec![pure(op, vec![qkv(), qkv(), qkv(), cu(), cu()])]
        }
        "argmax" => {
            let rows = if large { 128 } else { 4 };
            vec![pure(Op::Argmax, vec![f32s(&[rows, 128256])])]
        }
        "cast" => vec![
            pure(Op::Cast { to: DType::BF16 }, vec![f32s(&rh)]),
            pure(
                Op::Cast { to: DType::F32 },
                vec![inp(&rh, Fill::Uniform(DType::BF16))],
            ),
        ],
        "sample" => {
            // One decode step of a 128k-vocabulary batch: no cut, top-k, top-p, both.
            let rows = if large { 64 } else { 1 };
            [(0, 1.0), (50, 1.0), (0, 0.9), (40, 0.95)]
                .iter()
                .map(|&(top_k, top_p)| {
                    let row = SampleRow {
                        temperature: 0.7,
                        top_k,
                        top_p,
                        uniform: 0.5,
                    };
                    let op = Op::Sample {
                        rows: vec![row; rows],
                    };
                    pure(op, vec![f32s(&[rows, 128256])])
                })
                .collect()
        }
        "penalize" => {
            // One (id, count) entry per row (offsets 0, 1, ..): mostly the copy of the logits.
            let rows = if large { 64 } else { 1 };
            let op = Op::Penalize {
                rows: vec![
                    PenaltyRow {
                        repetition: 1.3,
                        frequency: 0.5,
                        presence: 0.2,
                    };
                    rows
                ],
            };
            vec![pure(
                op,
                vec![
                    f32s(&[rows, 128256]),
                    inp(&[rows + 1], Fill::Positions),
                    inp(&[rows, 2], Fill::Ids(128256)),
                ],
            )]
        }
        "copy_rows" => vec![Spec {
            op: Op::CopyRows { dst_row: r / 2 },
            inputs: vec![f32s(&rh)],
            dst: Some(vec![2 * r, h]),
        }],
        _ => Vec::new(),
    }
}

/// Most pages one K (or V) cache of a paged-attention case holds when large: 16384 pages of
/// [8, 16, 128] bf16 = 512 MiB each. Bigger batches draw their pages from this pool (with
/// repeats across sequences): still 20x the H100's L2, so the pages stream from DRAM.
const PAGE_POOL_CAP: usize = 16384;

/// Paged attention at a Llama-3.1-8B-like shape (32 heads, 8 kv heads, head_dim 128, block 16,
/// bf16 cache): decode (the split-KV kernel) for batch {1, 32, 128} x context {1k, 8k, 32k},
/// and causal prefill of one sequence of 1k, 4k and 16k tokens (the flash-attention kernels; the
/// attention variants are compared on these, `--attn-variants`).
fn paged_specs(large: bool) -> Vec<Spec> {
    let (heads, kv_heads, d, bs) = if large {
        (32, 8, 128, 16)
    } else {
        (4, 1, 64, 16)
    };
    let shapes: Vec<(usize, usize, usize)> = if large {
        // (sequences, query rows each, context)
        let mut v: Vec<_> = [1, 32, 128]
            .iter()
            .flat_map(|&b| [1024, 8192, 32768].map(|c| (b, 1, c)))
            .collect();
        v.extend([1024, 4096, 16384].map(|s| (1, s, s)));
        v
    } else {
        vec![(1, 1, 256), (4, 1, 256), (1, 128, 128)]
    };
    let bf16 = Fill::Uniform(DType::BF16);
    shapes
        .iter()
        .map(|&(seqs, q_len, ctx)| {
            let pages = ctx.div_ceil(bs);
            let pool = (seqs * pages).min(PAGE_POOL_CAP.max(pages));
            let cache = [pool, kv_heads, bs, d];
            let table = if pool == seqs * pages {
                Fill::PageTable
            } else {
                Fill::PageTableIn(pool as u32)
            };
            let op = Op::PagedAttention {
                scale: 1.0 / (d as f32).sqrt(),
                causal: true,
                decode_only: q_len == 1,
            };
            let inputs = vec![
                f32s(&[seqs * q_len, heads, d]),
                inp(&cache, bf16),
                inp(&cache, bf16),
                inp(&[seqs, pages], table),
                inp(&[seqs], Fill::Const(ctx as u32)),
                inp(&[seqs + 1], Fill::CuSeqlens(q_len as u32)),
            ];
            pure(op, inputs)
        })
        .collect()
}

/// Keys seen by all query rows of a varlen batch (queries at the end of their sequence's keys
/// when causal), from per-sequence (query rows, keys).
fn keys_seen(q_k: impl Iterator<Item = (usize, usize)>, causal: bool) -> f64 {
    q_k.map(|(q, k)| {
        if causal {
            (0..q)
                .map(|i| (k + i + 1).saturating_sub(q).min(k))
                .sum::<usize>()
        } else {
            q * k
        }
    })
    .sum::<usize>() as f64
}

fn tensor_bytes(t: &Tensor) -> f64 {
    t.dtype().storage_bytes(t.elem_count()) as f64
}

/// Fewest bytes moved and floating-point operations of one call. Exhaustive on purpose: a
/// new op does not compile until its traffic is defined here (and its cases in `specs`).
pub fn traffic(op: &Op, inputs: &[Tensor], dst: Option<&Tensor>) -> Result<(f64, f64)> {
    let read: f64 = inputs.iter().map(tensor_bytes).sum();
    let out = match dst {
        Some(_) => tensor_bytes(&inputs[0]),
        None => {
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let (shape, dtype) = op.check(&refs)?;
            dtype.storage_bytes(shape.iter().product()) as f64
        }
    };
    Ok(match op {
        Op::Embedding => {
            let (table, ids) = (&inputs[0], &inputs[1]);
            let row = tensor_bytes(table) / table.shape()[0] as f64;
            (tensor_bytes(ids) + row * ids.elem_count() as f64 + out, 0.0)
        }
        Op::Matmul { .. } => {
            let (x, w) = (&inputs[0], &inputs[1]);
            let m = x.elem_count() / x.shape()[x.rank() - 1];
            let (n, k) = (w.shape()[0], w.shape()[1]);
            (read + out, 2.0 * (m * n * k) as f64)
        }
        Op::Attention { causal, .. } => {
            let (q, k) = (inputs[0].shape(), inputs[1].shape());
            let (q_len, heads, d, kv_len) = (q[0], q[1], q[2], k[0]);
            // Keys each query sees; queries sit at the end of the cache.
            let keys: usize = if *causal {
                (0..q_len).map(|i| kv_len - q_len + i + 1).sum()
            } else {
                q_len * kv_len
            };
            (read + out, 4.0 * (heads * d * keys) as f64)
        }
        Op::CopyRows { .. } => (read + out, 0.0),
        // The new rows (inputs [new, slots]) are read once and written once; slots are read.
        Op::ReshapeAndCache => (
            2.0 * tensor_bytes(&inputs[0]) + tensor_bytes(&inputs[1]),
            0.0,
        ),
        Op::PagedAttention { causal, .. } => {
            // Lower bound: q, the cache pages the batch touches (at most the whole cache) and
            // the output; 4 flops per (query, key, dim) over the keys each query sees. A page
            // that several sequences' tables name is counted once per sequence (each reads it).
            let q = inputs[0].shape();
            let ctx = inputs[4].to_vec::<u32>()?;
            let (pool, bs) = (inputs[1].shape()[0], inputs[1].shape()[2]);
            let touched: usize = ctx.iter().map(|&c| (c as usize).div_ceil(bs)).sum();
            let cache = tensor_bytes(&inputs[1]) + tensor_bytes(&inputs[2]);
            let read = read - cache + cache / pool.max(1) as f64 * touched as f64;
            let cu = inputs[5].to_vec::<u32>()?;
            let per_seq = cu
                .windows(2)
                .zip(&ctx)
                .map(|(w, &c)| ((w[1] - w[0]) as usize, c as usize));
            let keys = keys_seen(per_seq, *causal);
            (read + out, 4.0 * (q[1] * q[2]) as f64 * keys)
        }
        Op::VarlenAttention { causal, .. } => {
            let q = inputs[0].shape();
            let (cq, ck) = (inputs[3].to_vec::<u32>()?, inputs[4].to_vec::<u32>()?);
            let per_seq = cq
                .windows(2)
                .zip(ck.windows(2))
                .map(|(a, b)| ((a[1] - a[0]) as usize, (b[1] - b[0]) as usize));
            let keys = keys_seen(per_seq, *causal);
            (read + out, 4.0 * (q[1] * q[2]) as f64 * keys)
        }
        Op::LayerNorm { .. } | Op::Gelu { .. } | Op::QuickGelu | Op::AddRmsNorm { .. } => {
            (read + out, 0.0)
        }
        Op::RmsNorm { .. }
        | Op::Rope { .. }
        | Op::SiluMul
        | Op::Softmax { .. }
        | Op::Add
        | Op::Mul
        | Op::Scale { .. }
        | Op::Argmax
        | Op::Cast { .. }
        | Op::Sample { .. }
        | Op::Penalize { .. } => (read + out, 0.0),
    })
}

/// Uniform [-1, 1) from splitmix64, in fixed 1 Mi-element chunks seeded by position, filled
/// in parallel: the same values for a seed on any machine and thread count.
fn uniform(n: usize, seed: u64) -> Vec<f32> {
    const CHUNK: usize = 1 << 20;
    let mut out = vec![0f32; n];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let per = (n.div_ceil(CHUNK).div_ceil(threads)).max(1) * CHUNK;
    std::thread::scope(|s| {
        for (ti, part) in out.chunks_mut(per).enumerate() {
            s.spawn(move || {
                for (ci, chunk) in part.chunks_mut(CHUNK).enumerate() {
                    let index = (ti * per / CHUNK + ci) as u64;
                    let mut state = seed ^ index.wrapping_mul(0xD134_2543_DE82_EF95);
                    for v in chunk {
                        *v = (splitmix(&mut state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
                    }
                }
            });
        }
    });
    out
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn build(input: &Input, seed: u64) -> Result<Tensor> {
    let n: usize = input.shape.iter().product();
    let shape = &input.shape;
    Ok(match input.fill {
        Fill::Uniform(dtype) => Tensor::from_vec(uniform(n, seed), shape)?.to_dtype(dtype)?,
        Fill::Ids(bound) => {
            let mut state = seed;
            let ids = (0..n)
                .map(|_| (splitmix(&mut state) % bound as u64) as u32)
                .collect();
            Tensor::from_vec::<u32>(ids, shape)?
        }
        Fill::Positions => Tensor::from_vec::<u32>((0..n as u32).collect(), shape)?,
        Fill::PageTable => {
            let mut state = seed;
            let mut pages: Vec<u32> = (0..n as u32).collect();
            for i in (1..n).rev() {
                pages.swap(i, (splitmix(&mut state) % (i as u64 + 1)) as usize);
            }
            Tensor::from_vec::<u32>(pages, shape)?
        }
        Fill::PageTableIn(pool) => {
            // Per row: the first `cols` of a fresh partial shuffle of 0..pool.
            let cols = *shape.last().unwrap_or(&1);
            let mut state = seed;
            let mut all: Vec<u32> = (0..pool).collect();
            let mut out = Vec::with_capacity(n);
            for _ in 0..n / cols.max(1) {
                for i in 0..cols.min(all.len()) {
                    let j = i + (splitmix(&mut state) % (all.len() - i) as u64) as usize;
                    all.swap(i, j);
                }
                out.extend((0..cols).map(|i| all[i % all.len()]));
            }
            Tensor::from_vec::<u32>(out, shape)?
        }
        Fill::Const(v) => Tensor::from_vec::<u32>(vec![v; n], shape)?,
        Fill::CuSeqlens(step) => {
            Tensor::from_vec::<u32>((0..n as u32).map(|i| i * step).collect(), shape)?
        }
        Fill::Slots(bound) => {
            // A partial shuffle: the first n of a random permutation of 0..bound.
            let mut state = seed;
            let mut all: Vec<u32> = (0..bound).collect();
            let n = n.min(all.len());
            for i in 0..n {
                let j = i + (splitmix(&mut state) % (all.len() - i) as u64) as usize;
                all.swap(i, j);
            }
            all.truncate(n);
            Tensor::from_vec::<u32>(all, shape)?
        }
        Fill::InvFreq => {
            let f = (0..n)
                .map(|i| 500_000f32.powf(-((2 * i) as f32) / (2 * n) as f32))
                .collect();
            Tensor::from_vec::<f32>(f, shape)?
        }
    })
}

pub fn input_dtype(fill: Fill) -> DType {
    match fill {
        Fill::Uniform(d) => d,
        Fill::Ids(_)
        | Fill::Positions
        | Fill::PageTable
        | Fill::PageTableIn(_)
        | Fill::Const(_)
        | Fill::CuSeqlens(_)
        | Fill::Slots(_) => DType::U32,
        Fill::InvFreq => DType::F32,
    }
}
