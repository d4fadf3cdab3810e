//! CPU vs CUDA equivalence of every op (modelled on llama.cpp's test-backend-ops).
//!
//! Every `Op` variant has cases (`cases_for` matches exhaustively, so a new op without cases
//! does not compile); inputs are uniform in [-1, 1] from a fixed, printed seed; shapes include
//! 1, 31, 32, 33 and a large one; non-contiguous views where the op takes them; f32, and bf16
//! where a kernel exists. The CPU computes the reference in f32 from the same (rounded)
//! inputs. Each CUDA output is allocated between guard regions that must stay untouched.
//!
//! `KILN_OPS=add,rope` runs only those ops. Without a GPU the test fails, unless
//! `KILN_ALLOW_NO_GPU=1`, when it prints SKIP for every case and passes.
#![cfg(feature = "cuda")]

use half::{bf16, f16};
use kiln_engine::backend::{backend_for, cuda};
use kiln_engine::op::{GeluApprox, Op, RopeStyle, ALL_OPS};
use kiln_engine::{DType, Device, Tensor};

#[path = "ops_equivalence/sample.rs"]
mod sample;

const SEED: u64 = 0x6b69_6c6e_2026;
const CUDA: Device = Device::Cuda(0);

/// splitmix64: small, fixed, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn below(&mut self, n: usize) -> u32 {
        (self.next() % n as u64) as u32
    }
}

#[derive(Clone, Copy, Debug)]
enum View {
    Dense,
    /// Built as the transposed shape, then transposed back (a strided view).
    Transpose(usize, usize),
    /// Narrowed out of a dim 5 larger, starting at 3.
    Narrow(usize),
}

#[derive(Clone, Debug)]
enum Fill {
    Uniform,
    Ids(usize),
    Positions,
    InvFreq,
    /// Exactly these u32 values (paging metadata, sequence boundaries, slots).
    U32s(Vec<u32>),
    /// A paged cache [num_blocks, kv_heads, block_size, d]: uniform in the slots marked live
    /// (block * block_size + offset), NaN in every other slot, so that a kernel reading a slot
    /// outside the batch's context shows up as NaN.
    PagedCache(Vec<bool>),
    /// Sampling logits (sample.rs).
    Logits(sample::LogitFill),
    /// Penalty CSR offsets, this many entries per row.
    Offsets(usize),
    /// Penalty CSR (id, count) pairs: distinct ids below `vocab` within each row.
    Entries {
        vocab: usize,
        per_row: usize,
    },
}

#[derive(Clone, Debug)]
struct Input {
    shape: Vec<usize>,
    dtype: DType,
    fill: Fill,
    view: View,
}

fn inp(shape: &[usize], dtype: DType) -> Input {
    Input {
        shape: shape.to_vec(),
        dtype,
        fill: Fill::Uniform,
        view: View::Dense,
    }
}

impl Input {
    fn view(mut self, v: View) -> Input {
        self.view = v;
        self
    }
    fn fill(mut self, f: Fill) -> Input {
        self.fill = f;
        self
    }
}

#[derive(Clone, Copy, Debug)]
enum Check {
    Nmse(f64),
    Exact,
}

#[derive(Clone)]
struct Case {
    op: Op,
    inputs: Vec<Input>,
    check: Check,
    /// Shown after the inputs (structured cases say what their metadata holds).
    note: String,
}

fn case(op: Op, inputs: Vec<Input>, check: Check) -> Case {
    Case {
        op,
        inputs,
        check,
        note: String::new(),
    }
}

#[path = "ops_equivalence/paged_cases.rs"]
mod paged_cases;
use paged_cases::{paged_case, paged_specs, reshape_case, varlen_case, varlen_specs};

const F32: DType = DType::F32;
const BF16: DType = DType::BF16;
const F16: DType = DType::F16;

fn elementwise_tol(d: DType) -> Check {
    Check::Nmse(if d == F32 { 1e-7 } else { 1e-4 })
}

fn reduction_tol(d: DType) -> Check {
    Check::Nmse(if d == F32 { 1e-5 } else { 1e-4 })
}

/// One value of every variant: the match in `cases_for` is over these.
fn representatives() -> Vec<Op> {
    vec![
        Op::Embedding,
        Op::Matmul {
            bias: false,
            residual: false,
        },
        Op::RmsNorm { eps: 1e-5 },
        Op::Rope {
            style: RopeStyle::HalfSplit,
            attention_scaling: 1.0,
        },
        Op::SiluMul,
        Op::LayerNorm { eps: 1e-5 },
        Op::Gelu {
            approx: GeluApprox::Erf,
        },
        Op::QuickGelu,
        Op::AddRmsNorm { eps: 1e-6 },
        Op::Softmax {
            scale: 1.0,
            causal: false,
        },
        Op::Attention {
            scale: 0.125,
            causal: true,
        },
        Op::Add,
        Op::Mul,
        Op::Scale { factor: 0.37 },
        Op::Argmax,
        Op::Cast { to: BF16 },
        Op::CopyRows { dst_row: 0 },
        Op::ReshapeAndCache,
        Op::PagedAttention {
            scale: 0.125,
            causal: true,
            decode_only: false,
        },
        Op::VarlenAttention {
            scale: 0.125,
            causal: false,
        },
        Op::Sample { rows: Vec::new() },
        Op::Penalize { rows: Vec::new() },
    ]
}

fn cases_for(op: &Op) -> Vec<Case> {
    let mut v = Vec::new();
    match op {
        Op::Add | Op::Mul | Op::SiluMul | Op::Scale { .. } => {
            let binary = !matches!(op, Op::Scale { .. });
            for d in [F32, BF16] {
                let shapes: &[&[usize]] = &[&[1], &[31], &[32], &[33], &[7, 33], &[4096, 4096]];
                let mut specs: Vec<Input> = shapes.iter().map(|s| inp(s, d)).collect();
                specs.push(inp(&[33, 31], d).view(View::Transpose(0, 1)));
                specs.push(inp(&[32, 31], d).view(View::Narrow(1)));
                for x in specs {
                    let inputs = if binary { vec![x.clone(), x] } else { vec![x] };
                    v.push(case(op.clone(), inputs, elementwise_tol(d)));
                }
            }
        }
        Op::RmsNorm { .. } => {
            for d in [F32, BF16] {
                for s in [[1, 32], [31, 33], [32, 4096], [33, 31], [4096, 4096]] {
                    v.push(case(
                        op.clone(),
                        vec![inp(&s, d), inp(&s[1..], d)],
                        reduction_tol(d),
                    ));
                }
                let x = inp(&[7, 32], d).view(View::Narrow(1));
                v.push(case(op.clone(), vec![x, inp(&[32], d)], reduction_tol(d)));
            }
        }
        Op::Gelu { .. } | Op::QuickGelu => {
            let ops = match op {
                Op::QuickGelu => vec![Op::QuickGelu],
                _ => [GeluApprox::Erf, GeluApprox::Tanh]
                    .map(|approx| Op::Gelu { approx })
                    .to_vec(),
            };
            for g in ops {
                for d in [F32, BF16] {
                    let shapes: &[&[usize]] = &[&[1], &[31], &[32], &[33], &[7, 33], &[4096, 4096]];
                    let mut specs: Vec<Input> = shapes.iter().map(|s| inp(s, d)).collect();
                    specs.push(inp(&[33, 31], d).view(View::Transpose(0, 1)));
                    specs.push(inp(&[32, 31], d).view(View::Narrow(1)));
                    for x in specs {
                        v.push(case(g.clone(), vec![x], elementwise_tol(d)));
                    }
                }
            }
        }
        Op::LayerNorm { .. } | Op::AddRmsNorm { .. } => {
            // Rows in registers (<= 4 packs a thread), rows re-read past that (40000 columns
            // need more than 1024 threads x 4 packs), odd widths (the scalar path).
            let layer = matches!(op, Op::LayerNorm { .. });
            let shapes: &[[usize; 2]] = &[
                [1, 1],
                [1, 32],
                [31, 33],
                [32, 4096],
                [33, 31],
                [3, 40000],
                [4096, 4096],
            ];
            for d in [F32, BF16] {
                for s in shapes {
                    let (x, w) = (inp(s, d), inp(&s[1..], d));
                    let second = if layer { inp(&s[1..], d) } else { inp(s, d) };
                    let inputs = if layer {
                        vec![x, w, second]
                    } else {
                        vec![x, second, w]
                    };
                    v.push(case(op.clone(), inputs, reduction_tol(d)));
                }
                let x = inp(&[7, 32], d).view(View::Narrow(1));
                let inputs = if layer {
                    vec![x, inp(&[32], d), inp(&[32], d)]
                } else {
                    let r = inp(&[32, 7], d).view(View::Transpose(0, 1));
                    vec![x, r, inp(&[32], d)]
                };
                v.push(case(op.clone(), inputs, reduction_tol(d)));
            }
        }
        Op::Rope { .. } => {
            for d in [F32, BF16] {
                for style in [RopeStyle::HalfSplit, RopeStyle::Interleaved] {
                    let shapes = [
                        [1, 1, 32],
                        [31, 8, 64],
                        [32, 4, 128],
                        [33, 3, 66],
                        [512, 32, 128],
                    ];
                    for (i, s) in shapes.iter().enumerate() {
                        let rope = Op::Rope {
                            style,
                            attention_scaling: if i % 2 == 0 { 1.0 } else { 1.1 },
                        };
                        let x = inp(s, d);
                        let x = if i == 1 { x.view(View::Narrow(1)) } else { x };
                        let pos = inp(&[s[0]], DType::U32).fill(Fill::Positions);
                        let freq = inp(&[s[2] / 2], F32).fill(Fill::InvFreq);
                        v.push(case(rope, vec![x, pos, freq], reduction_tol(d)));
                    }
                }
            }
        }
        Op::Softmax { .. } => {
            for (s, causal, scale) in [
                ([1, 1], false, 1.0),
                ([31, 33], false, 0.125),
                ([32, 32], true, 1.0),
                ([33, 31], true, 0.5),
                ([64, 32000], false, 1.0),
            ] {
                let sm = Op::Softmax { scale, causal };
                v.push(case(sm, vec![inp(&s, F32)], reduction_tol(F32)));
            }
            let x = inp(&[33, 32], F32).view(View::Transpose(0, 1));
            v.push(case(op.clone(), vec![x], reduction_tol(F32)));
        }
        Op::Argmax => {
            for s in [[1, 1], [31, 33], [32, 32], [33, 4096], [8, 128256]] {
                v.push(case(op.clone(), vec![inp(&s, F32)], Check::Exact));
            }
            let x = inp(&[33, 32], F32).view(View::Transpose(0, 1));
            v.push(case(op.clone(), vec![x], Check::Exact));
        }
        Op::Embedding => {
            for table in [F32, BF16, F16] {
                for ids in [DType::U32, DType::I32] {
                    for (vocab, hidden, n) in [(33, 31, 1), (32, 32, 31), (31, 64, 33)] {
                        let t = inp(&[vocab, hidden], table);
                        let i = inp(&[n], ids).fill(Fill::Ids(vocab));
                        v.push(case(op.clone(), vec![t, i], Check::Exact));
                    }
                }
                let t = inp(&[16384, 4096], table);
                let i = inp(&[512], DType::U32).fill(Fill::Ids(16384));
                v.push(case(op.clone(), vec![t, i], Check::Exact));
            }
            let t = inp(&[33, 32], F32).view(View::Narrow(1));
            let i = inp(&[31], DType::U32).fill(Fill::Ids(33));
            v.push(case(op.clone(), vec![t, i], Check::Exact));
        }
        Op::Cast { .. } => {
            for (from, to) in [
                (F32, BF16),
                (F32, F16),
                (BF16, F32),
                (F16, F32),
                (BF16, F16),
                (F16, BF16),
            ] {
                for s in [&[1usize][..], &[31], &[33], &[32, 33], &[4096, 4096]] {
                    v.push(case(Op::Cast { to }, vec![inp(s, from)], Check::Exact));
                }
                let x = inp(&[33, 31], from).view(View::Transpose(0, 1));
                v.push(case(Op::Cast { to }, vec![x], Check::Exact));
            }
            // Dequantizing casts have no CUDA kernel yet: a SKIP, not a silent pass.
            v.push(case(
                Op::Cast { to: F32 },
                vec![inp(&[4, 64], DType::Q8_0)],
                Check::Exact,
            ));
        }
        Op::CopyRows { .. } => {
            for d in [F32, BF16] {
                for (rows, cols, at, n) in [(33, 31, 7, 5), (32, 64, 31, 1), (1, 32, 0, 1)] {
                    let c = Op::CopyRows { dst_row: at };
                    v.push(case(
                        c,
                        vec![inp(&[rows, cols], d), inp(&[n, cols], d)],
                        Check::Exact,
                    ));
                }
                let src = inp(&[5, 31], d).view(View::Transpose(0, 1));
                let c = Op::CopyRows { dst_row: 2 };
                v.push(case(c, vec![inp(&[33, 31], d), src], Check::Exact));
            }
        }
        Op::ReshapeAndCache => {
            // (tokens, kv_heads, head_dim, block_size, num_blocks): decode, prefill, block size
            // 1, a head_dim that is not a whole number of 16-byte words (scalar path).
            for d in [F32, BF16] {
                for (t, kvh, hd, bs, nb) in [
                    (1, 8, 128, 16, 64),
                    (33, 2, 64, 16, 8),
                    (300, 8, 128, 16, 40),
                    (31, 4, 80, 1, 40),
                    (17, 3, 33, 4, 9),
                ] {
                    v.push(reshape_case(
                        d,
                        t,
                        kvh,
                        hd,
                        bs,
                        nb,
                        SEED ^ (t * 131 + hd) as u64,
                    ));
                }
            }
        }
        Op::PagedAttention { .. } => {
            for (i, spec) in paged_specs().into_iter().enumerate() {
                v.push(paged_case(&spec, SEED ^ (0x9a9e_d000 + i as u64)));
            }
        }
        Op::VarlenAttention { .. } => {
            for spec in varlen_specs() {
                v.push(varlen_case(&spec));
            }
        }
        Op::Sample { .. } => v.extend(sample::sample_cases()),
        Op::Penalize { .. } => v.extend(sample::penalize_cases()),
        Op::Matmul { .. } => {
            // m: the GEMV path (1, 3, 8) and the GEMM path (9, 33, 128); (n, k): odd sizes
            // (scalar paths, partial tiles), k = 3000 (several GEMV chunks, the last partial,
            // split over k; a partial GEMM k tile; k % 8 == 0 for the pipelined GEMMs, while
            // k = 31 / 33 take mma_simple), large ones (k = 1024 / 2048 wrap the 4-stage rings
            // several times; 520 x 600 has full tiles and an even n); a rank-3 x. f32 weights
            // are exact f32 on CUDA; 16-bit weights multiply x rounded to bf16 (f16 for f16
            // weights) on the tensor-core paths. Each m > 8 case with 16-bit weights runs once
            // per GEMM variant (see `gemm_variants_for`).
            for w in [F32, BF16, F16] {
                let tol = Check::Nmse(if w == F32 { 1e-7 } else { 5e-4 });
                let mut mm = |x: &[usize], n: usize| {
                    let k = *x.last().unwrap();
                    v.push(case(op.clone(), vec![inp(x, F32), inp(&[n, k], w)], tol));
                };
                for m in [1, 3, 8, 9, 33, 128] {
                    for (n, k) in [(33, 64), (31, 33), (64, 31), (100, 3000)] {
                        mm(&[m, k], n);
                    }
                }
                mm(&[1, 4096], 4096);
                mm(&[8, 4096], 1031);
                mm(&[300, 1024], 1027);
                mm(&[520, 2048], 600);
                mm(&[2, 5, 64], 33);
                // The fused epilogue: + bias [n], + residual [m, n], both; GEMV (m = 1 with
                // k = 14336 is split over k, so the reduction kernel adds them), GEMMs.
                for (m, n, k) in [
                    (1, 64, 14336),
                    (8, 33, 64),
                    (33, 100, 3000),
                    (300, 1027, 1024),
                ] {
                    for (bias, residual) in [(true, false), (false, true), (true, true)] {
                        let mut ins = vec![inp(&[m, k], F32), inp(&[n, k], w)];
                        if bias {
                            ins.push(inp(&[n], F32));
                        }
                        if residual {
                            ins.push(inp(&[m, n], F32));
                        }
                        v.push(case(Op::Matmul { bias, residual }, ins, tol));
                    }
                }
            }
        }
        Op::Attention { .. } => {
            let q = inp(&[31, 8, 64], F32);
            let kv = inp(&[33, 2, 64], F32);
            v.push(case(op.clone(), vec![q, kv.clone(), kv], Check::Nmse(5e-4)));
            // (q_len, kv_len, heads, kv_heads, head_dim, causal): decode (q_len 1) over 1, 31,
            // 33 and 512 keys, prefill (q_len = kv_len), GQA ratios 1, 4, 8, head_dim 64, 128,
            // 256 and ones not a multiple of 4 (the kernel's scalar path).
            let shapes = [
                (1, 1, 8, 2, 64, true),
                (1, 31, 8, 8, 64, true),
                (1, 33, 32, 4, 128, false),
                (1, 512, 32, 4, 128, true),
                (1, 512, 16, 2, 64, false),
                (33, 33, 8, 1, 64, true),
                (33, 33, 4, 4, 128, false),
                (128, 128, 8, 2, 128, true),
                (128, 128, 4, 4, 64, false),
                (7, 40, 8, 1, 33, true),
                (31, 31, 6, 2, 66, false),
                (1, 300, 4, 4, 255, true),
                (33, 65, 4, 2, 256, true),
            ];
            for (q_len, kv_len, heads, kv_heads, d, causal) in shapes {
                let att = Op::Attention {
                    scale: 1.0 / (d as f32).sqrt(),
                    causal,
                };
                let q = inp(&[q_len, heads, d], F32);
                let kv = inp(&[kv_len, kv_heads, d], F32);
                v.push(case(att, vec![q, kv.clone(), kv], Check::Nmse(5e-4)));
            }
        }
    }
    v
}

/// The GEMM variants a case runs under: each one `variants` lists for a matmul that reaches
/// the tensor-core GEMMs (m > 8, 16-bit weights), plus auto; `None` (whatever is set) for
/// every other case.
fn gemm_variants_for(c: &Case, variants: &[cuda::GemmVariant]) -> Vec<Option<cuda::GemmVariant>> {
    let gemm = matches!(c.op, Op::Matmul { .. })
        && matches!(c.inputs[1].dtype, DType::BF16 | DType::F16)
        && c.inputs[0].shape[..c.inputs[0].shape.len() - 1]
            .iter()
            .product::<usize>()
            > 8;
    if !gemm || variants.is_empty() {
        return vec![None];
    }
    std::iter::once(cuda::GemmVariant::Auto)
        .chain(variants.iter().copied())
        .map(Some)
        .collect()
}

/// The attention variants a case runs under: each one `variants` lists for a prefill (a
/// `PagedAttention` that is not decode_only, or a `VarlenAttention`); `None` for every other.
fn attn_variants_for(c: &Case, variants: &[cuda::AttnVariant]) -> Vec<Option<cuda::AttnVariant>> {
    let prefill = matches!(
        c.op,
        Op::PagedAttention {
            decode_only: false,
            ..
        } | Op::VarlenAttention { .. }
    );
    if !prefill || variants.is_empty() {
        return vec![None];
    }
    variants.iter().copied().map(Some).collect()
}

/// The host data of one input: the tensor in its own dtype and the f32 twin (same values).
fn host_input(spec: &Input, rng: &mut Rng) -> Result<(Tensor, Tensor), String> {
    let mut base = spec.shape.clone();
    match spec.view {
        View::Dense => {}
        View::Transpose(a, b) => base.swap(a, b),
        View::Narrow(d) => base[d] += 5,
    }
    let n: usize = base.iter().product();
    let e = |e: kiln_engine::EngineError| e.to_string();
    let (actual, f32s) = match (spec.fill.clone(), spec.dtype) {
        (Fill::U32s(v), _) => {
            let t = Tensor::from_vec(v, &base).map_err(e)?;
            (t.clone(), t)
        }
        (Fill::PagedCache(live), d) => {
            let (kv_heads, bs, hd) = (base[1], base[2], base[3]);
            let raw: Vec<f32> = (0..n)
                .map(|i| {
                    let (block, off) = (i / (kv_heads * bs * hd), i / hd % bs);
                    let x = rng.uniform();
                    if live[block * bs + off] {
                        x
                    } else {
                        f32::NAN
                    }
                })
                .collect();
            float_pair(raw, d, &base)?
        }
        (Fill::Ids(vocab), DType::I32) => {
            let ids: Vec<i32> = (0..n).map(|_| rng.below(vocab) as i32).collect();
            let t = Tensor::from_vec(ids, &base).map_err(e)?;
            (t.clone(), t)
        }
        (Fill::Ids(vocab), _) => {
            let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab)).collect();
            let t = Tensor::from_vec(ids, &base).map_err(e)?;
            (t.clone(), t)
        }
        (Fill::Positions, _) => {
            let pos: Vec<u32> = (0..n).map(|_| rng.below(8192)).collect();
            let t = Tensor::from_vec(pos, &base).map_err(e)?;
            (t.clone(), t)
        }
        (Fill::InvFreq, _) => {
            let f: Vec<f32> = (0..n)
                .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / (2 * n) as f32))
                .collect();
            let t = Tensor::from_vec(f, &base).map_err(e)?;
            (t.clone(), t)
        }
        (Fill::Logits(f), _) => sample::pair(sample::logits(f, n, rng), &base)?,
        (Fill::Offsets(per_row), _) => sample::pair(sample::offsets(per_row, n), &base)?,
        (Fill::Entries { vocab, per_row }, _) => {
            sample::pair(sample::entries(vocab, per_row, n / 2, rng), &base)?
        }
        (Fill::Uniform, DType::Q8_0) => {
            let mut bytes = Vec::with_capacity(n / 32 * 34);
            for _ in 0..n / 32 {
                bytes.extend_from_slice(&f16::from_f32(0.01).to_le_bytes());
                bytes.extend((0..32).map(|_| rng.below(256) as u8));
            }
            let t = Tensor::from_quant_bytes(bytes, DType::Q8_0, &base).map_err(e)?;
            (t.clone(), t)
        }
        (Fill::Uniform, d) => {
            let raw: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
            float_pair(raw, d, &base)?
        }
    };
    Ok((actual, f32s))
}

/// `raw` as a tensor of dtype `d` and the f32 tensor of the same (rounded) values.
fn float_pair(raw: Vec<f32>, d: DType, shape: &[usize]) -> Result<(Tensor, Tensor), String> {
    let e = |e: kiln_engine::EngineError| e.to_string();
    let (t, rounded) = match d {
        DType::BF16 => {
            let h: Vec<bf16> = raw.iter().map(|&x| bf16::from_f32(x)).collect();
            let r = h.iter().map(|x| x.to_f32()).collect();
            (Tensor::from_vec(h, shape).map_err(e)?, r)
        }
        DType::F16 => {
            let h: Vec<f16> = raw.iter().map(|&x| f16::from_f32(x)).collect();
            let r = h.iter().map(|x| x.to_f32()).collect();
            (Tensor::from_vec(h, shape).map_err(e)?, r)
        }
        _ => (Tensor::from_vec(raw.clone(), shape).map_err(e)?, raw),
    };
    Ok((t, Tensor::from_vec(rounded, shape).map_err(e)?))
}

fn apply_view(t: &Tensor, v: View) -> Result<Tensor, String> {
    let r = match v {
        View::Dense => Ok(t.clone()),
        View::Transpose(a, b) => t.transpose(a, b),
        View::Narrow(d) => t.narrow(d, 3, t.shape()[d] - 5),
    };
    r.map_err(|e| e.to_string())
}

/// Output values as f64 (floats) or as exact u32s.
enum Values {
    Float(Vec<f64>),
    Index(Vec<u32>),
}

fn values(t: &Tensor) -> Result<Values, String> {
    let e = |e: kiln_engine::EngineError| e.to_string();
    let host = t.to_device(Device::Cpu).map_err(e)?;
    if host.dtype() == DType::U32 {
        return Ok(Values::Index(host.to_vec::<u32>().map_err(e)?));
    }
    let f = host.to_dtype(F32).map_err(e)?.to_vec::<f32>().map_err(e)?;
    Ok(Values::Float(f.into_iter().map(f64::from).collect()))
}

enum Outcome {
    Pass(String),
    Fail(String),
    Skip(String),
}

fn compare(check: Check, reference: &Values, got: &Values) -> Outcome {
    match (reference, got) {
        (Values::Index(r), Values::Index(g)) => {
            let bad = r.iter().zip(g).filter(|(a, b)| a != b).count();
            if r.len() != g.len() || bad > 0 {
                Outcome::Fail(format!("{bad} of {} indices differ", r.len()))
            } else {
                Outcome::Pass("exact".into())
            }
        }
        (Values::Float(r), Values::Float(g)) => {
            if r.len() != g.len() {
                return Outcome::Fail(format!("{} values, expected {}", g.len(), r.len()));
            }
            if let Some(i) = g.iter().position(|x| x.is_nan()) {
                return Outcome::Fail(format!("NaN at {i}"));
            }
            if let Some(i) = r.iter().position(|x| x.is_nan()) {
                return Outcome::Fail(format!("NaN in the CPU reference at {i}"));
            }
            let err: f64 = r.iter().zip(g).map(|(a, b)| (a - b) * (a - b)).sum();
            let norm: f64 = r.iter().map(|a| a * a).sum();
            let nmse = if norm > 0.0 { err / norm } else { err };
            match check {
                Check::Exact if err == 0.0 => Outcome::Pass("exact".into()),
                Check::Exact => {
                    let bad = r.iter().zip(g).filter(|(a, b)| a != b).count();
                    Outcome::Fail(format!(
                        "{bad} of {} values differ (nmse {nmse:.2e})",
                        r.len()
                    ))
                }
                Check::Nmse(t) if nmse <= t => Outcome::Pass(format!("nmse {nmse:.2e} <= {t:.0e}")),
                Check::Nmse(t) => Outcome::Fail(format!("nmse {nmse:.2e} > {t:.0e}")),
            }
        }
        _ => Outcome::Fail("output kinds differ (index vs float)".into()),
    }
}

fn run_case(c: &Case, rng: &mut Rng) -> Result<Outcome, String> {
    let e = |e: kiln_engine::EngineError| e.to_string();
    let dtypes: Vec<DType> = c.inputs.iter().map(|i| i.dtype).collect();
    // ReshapeAndCache's inputs are (new, slots); the suite lists its destination first.
    let dtypes = if c.op == Op::ReshapeAndCache {
        dtypes[1..].to_vec()
    } else {
        dtypes
    };
    if !backend_for(CUDA).supports(&c.op, &dtypes) {
        return Ok(Outcome::Skip(format!(
            "no CUDA kernel for {} {dtypes:?}",
            c.op.name()
        )));
    }
    let cpu = backend_for(Device::Cpu);
    let use_actual = cpu.supports(&c.op, &dtypes);
    let (mut refs, mut devs) = (Vec::new(), Vec::new());
    for spec in &c.inputs {
        let (actual, f32s) = host_input(spec, rng)?;
        let host = if use_actual { &actual } else { &f32s };
        refs.push(apply_view(host, spec.view)?);
        devs.push(apply_view(&actual.to_device(CUDA).map_err(e)?, spec.view)?);
    }
    let (reference, out) = if let Op::CopyRows { dst_row } = c.op {
        let (mut rdst, mut ddst) = (refs[0].clone(), devs[0].clone());
        drop(refs.remove(0));
        drop(devs.remove(0));
        rdst.copy_rows_from(dst_row, &refs[0]).map_err(e)?;
        ddst.copy_rows_from(dst_row, &devs[0]).map_err(e)?;
        (rdst, ddst)
    } else if c.op == Op::ReshapeAndCache {
        let (mut rdst, mut ddst) = (refs.remove(0), devs.remove(0));
        rdst.reshape_and_cache(&refs[0], &refs[1]).map_err(e)?;
        ddst.reshape_and_cache(&devs[0], &devs[1]).map_err(e)?;
        (rdst, ddst)
    } else {
        let r: Vec<&Tensor> = refs.iter().collect();
        let d: Vec<&Tensor> = devs.iter().collect();
        (
            cpu.execute(&c.op, &r).map_err(e)?,
            backend_for(CUDA).execute(&c.op, &d).map_err(e)?,
        )
    };
    if out.device() != CUDA {
        return Ok(Outcome::Fail(format!("output is on {}", out.device())));
    }
    CUDA.synchronize().map_err(e)?;
    if let Err(g) = cuda::check_guards(&out) {
        return Ok(Outcome::Fail(g.to_string()));
    }
    Ok(compare(c.check, &values(&reference)?, &values(&out)?))
}

fn describe(c: &Case) -> String {
    let ins: Vec<String> = c
        .inputs
        .iter()
        .map(|i| {
            let view = match i.view {
                View::Dense => String::new(),
                View::Transpose(a, b) => format!(" T{a}{b}"),
                View::Narrow(d) => format!(" narrow{d}"),
            };
            let fill = match i.fill {
                Fill::Logits(f) => format!(" {f}"),
                _ => String::new(),
            };
            format!("{}{:?}{view}{fill}", i.dtype, i.shape)
        })
        .collect();
    let params = match &c.op {
        Op::Rope {
            style,
            attention_scaling,
        } => format!(" {style:?} s={attention_scaling}"),
        Op::Softmax { scale, causal } => format!(" scale={scale} causal={causal}"),
        Op::Cast { to } => format!(" ->{to}"),
        Op::CopyRows { dst_row } => format!(" at={dst_row}"),
        Op::Gelu { approx } => format!(" {approx:?}"),
        Op::PagedAttention {
            causal,
            decode_only,
            ..
        } => format!(" causal={causal} decode_only={decode_only}"),
        Op::VarlenAttention { causal, .. } => format!(" causal={causal}"),
        Op::Sample { .. } | Op::Penalize { .. } => sample::describe(&c.op),
        _ => String::new(),
    };
    format!("{}{params}{}", ins.join(", "), c.note)
}

/// `Ok` when cuda:0 exists; otherwise the reason, after failing the test unless
/// KILN_ALLOW_NO_GPU=1 (then every case reports SKIP).
fn gpu_or_allowed_skip() -> Result<(), String> {
    let gpu = match cuda::device_count() {
        Ok(0) => Err("no CUDA device: the driver reports 0 devices".to_string()),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    let allow_no_gpu = std::env::var("KILN_ALLOW_NO_GPU").is_ok_and(|v| v == "1");
    if let Err(why) = &gpu {
        assert!(
            allow_no_gpu,
            "ops_equivalence needs a CUDA GPU: {why}\n(set KILN_ALLOW_NO_GPU=1 to report SKIP instead)"
        );
    }
    gpu
}

#[test]
fn cuda_matches_cpu() {
    let reps = representatives();
    let names: Vec<&str> = reps.iter().map(|o| o.name()).collect();
    for n in ALL_OPS {
        assert!(
            names.contains(n),
            "op {n} has no representative in the equivalence suite"
        );
    }
    let filter: Option<Vec<String>> = std::env::var("KILN_OPS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    if let Some(f) = &filter {
        for name in f {
            assert!(
                names.contains(&name.as_str()),
                "KILN_OPS: unknown op {name:?}; ops: {names:?}"
            );
        }
    }
    let selected: Vec<&Op> = reps
        .iter()
        .filter(|o| {
            filter
                .as_ref()
                .is_none_or(|f| f.iter().any(|n| n == o.name()))
        })
        .collect();

    let gpu = gpu_or_allowed_skip();
    if gpu.is_ok() {
        let name = cuda::device_name(0).unwrap_or_else(|e| e.to_string());
        println!("device: cuda:0 {name}");
        cuda::set_guard_bytes(4096);
        cuda::set_sync_launches(true);
    }
    // GEMM variants to verify one by one (forced with set_gemm_variant).
    let variants = match &gpu {
        Ok(()) => cuda::gemm_variants(0).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let names: Vec<&str> = variants.iter().map(|v| v.name()).collect();
    println!("gemm variants: auto + {names:?} for matmul cases with m > 8 and 16-bit weights");
    // Attention prefill variants likewise (forced with set_attn_variant).
    let attn = match &gpu {
        Ok(()) => cuda::attn_variants(0).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let names: Vec<&str> = attn.iter().map(|v| v.name()).collect();
    println!("attention variants: {names:?} for paged (not decode-only) and varlen cases");
    if gpu.is_ok() {
        if let Ok(Some(why)) = cuda::attn_wgmma_unavailable(0) {
            println!("attention wgmma not run: {why}");
        }
    }
    println!("seed: {SEED:#x} (case k uses seed + k)");
    println!(
        "{:<10} {:>4}  {:<6} {:<60} detail",
        "op", "case", "result", "inputs"
    );
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    let mut k = 0u64;
    for op in selected {
        for (c, gemm, att) in cases_for(op).into_iter().flat_map(|c| {
            let atts = attn_variants_for(&c, &attn);
            gemm_variants_for(&c, &variants)
                .into_iter()
                .flat_map(move |g| atts.clone().into_iter().map(move |a| (g, a)))
                .map(move |(g, a)| (c.clone(), g, a))
        }) {
            let outcome = match &gpu {
                Err(why) => Outcome::Skip(format!("no GPU: {why}")),
                Ok(()) => {
                    cuda::set_gemm_variant(gemm);
                    cuda::set_attn_variant(att);
                    let mut rng = Rng(SEED + k);
                    let r = run_case(&c, &mut rng).unwrap_or_else(Outcome::Fail);
                    cuda::set_gemm_variant(None);
                    cuda::set_attn_variant(None);
                    r
                }
            };
            let mut tag_gemm = gemm.map_or(String::new(), |g| format!(" gemm={}", g.name()));
            if let Some(a) = att {
                tag_gemm.push_str(&format!(" attn={}", a.name()));
            }
            let (tag, detail) = match outcome {
                Outcome::Pass(d) => {
                    pass += 1;
                    ("PASS", d)
                }
                Outcome::Fail(d) => {
                    fail += 1;
                    ("FAIL", d)
                }
                Outcome::Skip(d) => {
                    skip += 1;
                    ("SKIP", d)
                }
            };
            println!(
                "{:<10} {k:>4}  {tag:<6} {:<60} {detail}",
                c.op.name(),
                format!("{}{tag_gemm}", describe(&c))
            );
            k += 1;
        }
    }
    println!("ops_equivalence: {pass} passed, {fail} failed, {skip} skipped");
    assert!(k > 0, "no cases selected");
    assert_eq!(
        fail, 0,
        "{fail} equivalence case(s) failed (see the table above)"
    );
    if gpu.is_ok() {
        assert!(pass > 0, "a GPU is present but no case ran");
    }
}

/// A tensor of `dtype` with random bits-level content (any value, NaN patterns included for
/// the float types: the copy moves bits and the comparison is on bytes).
fn random_tensor(dtype: DType, shape: &[usize], rng: &mut Rng) -> Result<Tensor, String> {
    let n: usize = shape.iter().product();
    let e = |e: kiln_engine::EngineError| e.to_string();
    let words: Vec<u32> = (0..n).map(|_| rng.next() as u32).collect();
    let t = match dtype {
        DType::F32 => Tensor::from_vec(words.iter().map(|&w| f32::from_bits(w)).collect(), shape),
        DType::BF16 => Tensor::from_vec(
            words.iter().map(|&w| bf16::from_bits(w as u16)).collect(),
            shape,
        ),
        DType::F16 => Tensor::from_vec(
            words.iter().map(|&w| f16::from_bits(w as u16)).collect(),
            shape,
        ),
        DType::I32 => Tensor::from_vec(words.iter().map(|&w| w as i32).collect(), shape),
        DType::U8 => Tensor::from_vec(words.iter().map(|&w| w as u8).collect(), shape),
        _ => Tensor::from_vec(words, shape),
    };
    t.map_err(e)
}

/// `Tensor::contiguous` of strided CUDA views (the `kiln_copy_strided_*` kernels, and the
/// 2D-memcpy gather for views of more than 6 dims after collapsing) against the CPU copy of
/// the same view: bytes must match exactly and the guard regions stay untouched.
#[test]
fn cuda_contiguous_matches_cpu() {
    type ViewFn = fn(&Tensor) -> kiln_engine::Result<Tensor>;
    let views: Vec<(&str, Vec<usize>, ViewFn)> = vec![
        ("T01", vec![33, 31], |t| t.transpose(0, 1)),
        ("narrow1", vec![32, 36], |t| t.narrow(1, 3, 29)),
        ("narrow1 T01", vec![31, 40], |t| {
            t.narrow(1, 1, 32)?.transpose(0, 1)
        }),
        ("T02", vec![4, 5, 6], |t| t.transpose(0, 2)),
        ("T01 T12", vec![3, 4, 5, 6], |t| {
            t.transpose(0, 1)?.transpose(1, 2)
        }),
        ("one element", vec![5, 7], |t| {
            t.narrow(0, 2, 1)?.narrow(1, 3, 1)
        }),
        ("empty", vec![5, 7], |t| t.narrow(1, 2, 0)),
        ("rank 6", vec![2, 3, 2, 3, 2, 3], |t| {
            t.transpose(0, 1)?.transpose(2, 3)?.transpose(4, 5)
        }),
        // Reversed dims: nothing merges, 7 dims -> the memcpy fallback.
        ("rank 7 reversed", vec![2, 3, 2, 3, 2, 3, 2], |t| {
            t.transpose(0, 6)?.transpose(1, 5)?.transpose(2, 4)
        }),
        ("large T01", vec![4096, 4096], |t| t.transpose(0, 1)),
        ("large narrow", vec![2048, 4097], |t| t.narrow(1, 1, 4093)),
    ];
    let gpu = gpu_or_allowed_skip();
    if gpu.is_ok() {
        cuda::set_guard_bytes(4096);
        cuda::set_sync_launches(true);
    }
    let seed = SEED ^ 0xc0b1;
    println!("contiguous: seed {seed:#x} (case k uses seed + k)");
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    let mut k = 0u64;
    for dtype in [F32, BF16, F16, DType::I32, DType::U32, DType::U8] {
        for (name, base, view) in &views {
            let run = || -> Result<Outcome, String> {
                let e = |e: kiln_engine::EngineError| e.to_string();
                let mut rng = Rng(seed + k);
                let host = random_tensor(dtype, base, &mut rng)?;
                let want = view(&host).map_err(e)?.contiguous().map_err(e)?;
                let dev_view = view(&host.to_device(CUDA).map_err(e)?).map_err(e)?;
                let got = dev_view.contiguous().map_err(e)?;
                if !got.is_contiguous() || got.device() != CUDA || got.shape() != want.shape() {
                    return Ok(Outcome::Fail(format!("got {got:?}, want {want:?}")));
                }
                if let Err(g) = cuda::check_guards(&got) {
                    return Ok(Outcome::Fail(g.to_string()));
                }
                let got = got.to_device(Device::Cpu).map_err(e)?;
                let (g, w) = (got.raw_bytes().map_err(e)?, want.raw_bytes().map_err(e)?);
                Ok(match g.iter().zip(w).position(|(a, b)| a != b) {
                    _ if g.len() != w.len() => {
                        Outcome::Fail(format!("{} bytes, want {}", g.len(), w.len()))
                    }
                    Some(i) => Outcome::Fail(format!("first differing byte {i} of {}", w.len())),
                    None => Outcome::Pass(format!("exact, {} bytes", w.len())),
                })
            };
            let outcome = match &gpu {
                Err(why) => Outcome::Skip(format!("no GPU: {why}")),
                Ok(()) => run().unwrap_or_else(Outcome::Fail),
            };
            let (tag, detail) = match outcome {
                Outcome::Pass(d) => {
                    pass += 1;
                    ("PASS", d)
                }
                Outcome::Fail(d) => {
                    fail += 1;
                    ("FAIL", d)
                }
                Outcome::Skip(d) => {
                    skip += 1;
                    ("SKIP", d)
                }
            };
            let what = format!("{dtype}{base:?} {name}");
            println!("contiguous {k:>4}  {tag:<6} {what:<60} {detail}");
            k += 1;
        }
    }
    println!("contiguous: {pass} passed, {fail} failed, {skip} skipped");
    assert_eq!(
        fail, 0,
        "{fail} contiguous case(s) failed (see the table above)"
    );
    if gpu.is_ok() {
        assert!(pass > 0, "a GPU is present but no case ran");
    }
}

/// The structured cases (paged KV, varlen) build consistent inputs: the CPU reference accepts
/// their metadata and never reads a NaN slot, on any machine. (Without this, a broken case would
/// first show on the GPU machine, as a failure of the kernel it was meant to test.)
#[test]
fn structured_cases_are_valid_on_the_cpu() {
    let cpu = backend_for(Device::Cpu);
    let e = |e: kiln_engine::EngineError| e.to_string();
    let mut n = 0;
    for op in representatives() {
        if !matches!(
            op,
            Op::ReshapeAndCache | Op::PagedAttention { .. } | Op::VarlenAttention { .. }
        ) {
            continue;
        }
        for (k, c) in cases_for(&op).into_iter().enumerate() {
            let mut rng = Rng(SEED + k as u64);
            let mut ins = Vec::new();
            for spec in &c.inputs {
                let (actual, f32s) = host_input(spec, &mut rng).unwrap();
                ins.push(if spec.dtype == BF16 { actual } else { f32s });
            }
            let out = if c.op == Op::ReshapeAndCache {
                let mut dst = ins.remove(0);
                dst.reshape_and_cache(&ins[0], &ins[1])
                    .map_err(e)
                    .map(|()| dst)
            } else {
                let r: Vec<&Tensor> = ins.iter().collect();
                cpu.execute(&c.op, &r).map_err(e)
            };
            let out = out.unwrap_or_else(|m| panic!("{} {}: {m}", c.op.name(), describe(&c)));
            let v = out.to_dtype(F32).unwrap().to_vec::<f32>().unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{} {}: NaN in the CPU reference",
                c.op.name(),
                describe(&c)
            );
            n += 1;
        }
    }
    assert!(n >= 30, "only {n} structured cases");
}
