//! CPU kernel benchmarks: decode GEMV and prefill GEMM at SmolLM2-135M shapes, the small ops,
//! and a 64 MiB memcpy as the memory-bandwidth ceiling for the GEMV numbers.
//! Run: `cargo bench --bench cpu_ops -- <filter>`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use kiln_kernels::cpu::attention::{attention, AttentionParams};
use kiln_kernels::cpu::matmul::{matmul, MatmulParams};
use kiln_kernels::cpu::quant::QuantFormat;
use kiln_kernels::cpu::rmsnorm::{rmsnorm, RmsNormParams};
use kiln_kernels::cpu::rope::{rope, RopeParams, RopeStyle};
use kiln_kernels::cpu::silu_mul::silu_mul;
use kiln_kernels::cpu::varlen_attention::{varlen_attention, VarlenAttentionParams, VarlenBatch};
use kiln_kernels::cpu::WeightSlice;
use std::time::Duration;

/// SmolLM2-135M projection shapes (N, K): q/o, k/v, gate/up, down, lm_head.
const SHAPES: &[(usize, usize)] = &[
    (576, 576),
    (192, 576),
    (1536, 576),
    (576, 1536),
    (49152, 576),
];

/// Deterministic inputs in [-1, 1) (values do not matter for speed, only that they are finite).
fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// `n` rows of `k` elements as random GGML blocks (scales ~0.01, random quants).
fn quantized(format: QuantFormat, n: usize, k: usize, seed: u32) -> Vec<u8> {
    let mut bytes: Vec<u8> = data(format.row_bytes(k) * n, seed)
        .iter()
        .map(|&v| (v * 127.0) as i8 as u8)
        .collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    for b in bytes.chunks_exact_mut(format.block_bytes()) {
        b[..2].copy_from_slice(&scale);
        if format == QuantFormat::Q4_1 {
            b[2..4].copy_from_slice(&half::f16::from_f32(-0.08).to_le_bytes());
        }
    }
    bytes
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(900))
}

fn gemv(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemv");
    for &(n, k) in SHAPES {
        let x = data(k, 1);
        let wf = data(n * k, 2);
        let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut out = vec![0f32; n];
        let p = MatmulParams { m: 1, n, k };
        g.throughput(Throughput::Bytes((n * k * 4) as u64));
        g.bench_function(BenchmarkId::new("f32", format!("{n}x{k}")), |b| {
            b.iter(|| matmul(black_box(&x), WeightSlice::F32(&wf), &mut out, p))
        });
        g.throughput(Throughput::Bytes((n * k * 2) as u64));
        g.bench_function(BenchmarkId::new("bf16", format!("{n}x{k}")), |b| {
            b.iter(|| matmul(black_box(&x), WeightSlice::BF16(&wb), &mut out, p))
        });
        for format in [QuantFormat::Q4_1, QuantFormat::Q8_0] {
            let bytes = quantized(format, n, k, 15);
            let w = WeightSlice::Quant {
                format,
                bytes: &bytes,
            };
            g.throughput(Throughput::Bytes(bytes.len() as u64));
            g.bench_function(BenchmarkId::new(format.name(), format!("{n}x{k}")), |b| {
                b.iter(|| matmul(black_box(&x), w, &mut out, p))
            });
        }
    }
    g.finish();
}

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    let m = 128;
    // lm_head at prefill is skipped: engines only project the last row to logits.
    for &(n, k) in &SHAPES[..4] {
        let x = data(m * k, 3);
        let wf = data(n * k, 4);
        let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut out = vec![0f32; m * n];
        let p = MatmulParams { m, n, k };
        // Elements = multiply-adds; GFLOP/s = 2 × Gelem/s.
        g.throughput(Throughput::Elements((m * n * k) as u64));
        g.bench_function(BenchmarkId::new("f32", format!("m{m}_{n}x{k}")), |b| {
            b.iter(|| matmul(black_box(&x), WeightSlice::F32(&wf), &mut out, p))
        });
        g.bench_function(BenchmarkId::new("bf16", format!("m{m}_{n}x{k}")), |b| {
            b.iter(|| matmul(black_box(&x), WeightSlice::BF16(&wb), &mut out, p))
        });
        let bytes = quantized(QuantFormat::Q4_1, n, k, 16);
        let w = WeightSlice::Quant {
            format: QuantFormat::Q4_1,
            bytes: &bytes,
        };
        g.bench_function(BenchmarkId::new("Q4_1", format!("m{m}_{n}x{k}")), |b| {
            b.iter(|| matmul(black_box(&x), w, &mut out, p))
        });
    }
    // One larger prefill to show scaling with M.
    let (m, n, k) = (512, 1536, 576);
    let x = data(m * k, 5);
    let wb: Vec<bf16> = data(n * k, 6).iter().map(|&v| bf16::from_f32(v)).collect();
    let mut out = vec![0f32; m * n];
    g.throughput(Throughput::Elements((m * n * k) as u64));
    g.bench_function(BenchmarkId::new("bf16", format!("m{m}_{n}x{k}")), |b| {
        b.iter(|| {
            matmul(
                black_box(&x),
                WeightSlice::BF16(&wb),
                &mut out,
                MatmulParams { m, n, k },
            )
        })
    });
    // BERT encoder shapes (all-MiniLM-L6-v2: hidden 384, FFN 1536) over a flat batch of 3200
    // tokens (100 texts × 32 tokens): q/k/v/o, FFN up, FFN down.
    for &(m, n, k) in &[(3200, 384, 384), (3200, 1536, 384), (3200, 384, 1536)] {
        let x = data(m * k, 7);
        let wf = data(n * k, 8);
        let mut out = vec![0f32; m * n];
        let p = MatmulParams { m, n, k };
        g.throughput(Throughput::Elements((m * n * k) as u64));
        g.bench_function(BenchmarkId::new("f32", format!("m{m}_{n}x{k}")), |b| {
            b.iter(|| matmul(black_box(&x), WeightSlice::F32(&wf), &mut out, p))
        });
    }
    g.finish();
}

fn small_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("ops");
    let (rows, cols) = (128, 576);
    let x = data(rows * cols, 7);
    let w = data(cols, 8);
    let mut out = vec![0f32; rows * cols];
    g.throughput(Throughput::Bytes((rows * cols * 8) as u64));
    g.bench_function("rmsnorm/128x576", |b| {
        b.iter(|| {
            rmsnorm(
                black_box(&x),
                &w,
                &mut out,
                RmsNormParams {
                    rows,
                    cols,
                    eps: 1e-5,
                },
            )
        })
    });

    let (tokens, heads, head_dim) = (128, 9, 64);
    let mut q = data(tokens * heads * head_dim, 9);
    let positions: Vec<u32> = (0..tokens as u32).collect();
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| 10000f32.powf(-((2 * i) as f32) / head_dim as f32))
        .collect();
    let rp = RopeParams {
        tokens,
        heads,
        head_dim,
        style: RopeStyle::HalfSplit,
        attention_scaling: 1.0,
    };
    g.throughput(Throughput::Elements((tokens * heads * head_dim) as u64));
    g.bench_function("rope/128x9x64", |b| {
        b.iter(|| rope(black_box(&mut q), &positions, &inv_freq, rp))
    });

    let n = 128 * 1536;
    let (gate, up) = (data(n, 10), data(n, 11));
    let mut o = vec![0f32; n];
    g.throughput(Throughput::Bytes((n * 12) as u64));
    g.bench_function("silu_mul/128x1536", |b| {
        b.iter(|| silu_mul(black_box(&gate), &up, &mut o))
    });

    let ap = AttentionParams {
        q_len: 1,
        kv_len: 512,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        scale: 0.125,
        causal: true,
    };
    let q1 = data(9 * 64, 12);
    let (k, v) = (data(512 * 3 * 64, 13), data(512 * 3 * 64, 14));
    let mut o1 = vec![0f32; 9 * 64];
    g.throughput(Throughput::Bytes((k.len() * 8) as u64));
    g.bench_function("attention_decode/kv512_h9_kv3_d64", |b| {
        b.iter(|| attention(black_box(&q1), &k, &v, &mut o1, ap))
    });
    g.finish();
}

/// Encoder attention at all-MiniLM-L6-v2 shapes (one layer of `kiln bench-embed --texts 8
/// --words 500`): 8 sequences of 502 tokens, 12 heads, head_dim 32, not causal; and a causal
/// prefill at SmolLM2-135M head shapes. Throughput in flops (2 per multiply-add, QK and PV).
fn attention_prefill(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    let (seqs, len, heads, d) = (8, 502, 12, 32);
    let rows = seqs * len;
    let (q, k, v) = (
        data(rows * heads * d, 21),
        data(rows * heads * d, 22),
        data(rows * heads * d, 23),
    );
    let mut o = vec![0f32; q.len()];
    let cu: Vec<u32> = (0..=seqs).map(|s| (s * len) as u32).collect();
    let batch = VarlenBatch {
        cu_seqlens_q: &cu,
        cu_seqlens_k: &cu,
    };
    let vp = VarlenAttentionParams {
        num_heads: heads,
        num_kv_heads: heads,
        head_dim: d,
        scale: 1.0 / (d as f32).sqrt(),
        causal: false,
    };
    g.throughput(Throughput::Elements(
        (seqs * len * len * heads * d * 4) as u64,
    ));
    g.bench_function("encoder_flops/8x502_h12_d32", |b| {
        b.iter(|| varlen_attention(black_box(&q), &k, &v, &mut o, &batch, vp))
    });

    let (len, heads, kv_heads, d) = (512, 9, 3, 64);
    let ap = AttentionParams {
        q_len: len,
        kv_len: len,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim: d,
        scale: 0.125,
        causal: true,
    };
    let q = data(len * heads * d, 24);
    let (k, v) = (data(len * kv_heads * d, 25), data(len * kv_heads * d, 26));
    let mut o = vec![0f32; q.len()];
    let visible: usize = (1..=len).sum();
    g.throughput(Throughput::Elements((visible * heads * d * 4) as u64));
    g.bench_function("causal_prefill_flops/512_h9_kv3_d64", |b| {
        b.iter(|| attention(black_box(&q), &k, &v, &mut o, ap))
    });
    g.finish();
}

fn memcpy(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy");
    let n = 64 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    // Bytes read; a copy also writes as many, so DRAM traffic is about twice this.
    g.throughput(Throughput::Bytes(n as u64));
    g.bench_function("64MiB", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = gemv, gemm, small_ops, attention_prefill, memcpy
}
criterion_main!(benches);
