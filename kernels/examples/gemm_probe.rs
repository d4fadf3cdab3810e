//! Throughput probe for `matmul` that is robust to a loaded machine: reports multiply-adds per
//! second of wall time and per second of CPU time (summed over the process's threads from
//! /proc/self/task/*/schedstat, so time slices lost to other processes do not count).
//! Run: `cargo run --release -p kiln-kernels --example gemm_probe -- M N K [dtype] [reps]`,
//! dtype one of f32 (default), bf16, q8_0, q4_0, q4_1.

mod common;

use common::{cpu_ns, data};
use half::bf16;
use kiln_kernels::cpu::matmul::{matmul, MatmulParams};
use kiln_kernels::cpu::quant::QuantFormat;
use kiln_kernels::cpu::WeightSlice;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| a.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (m, n, k) = (num(0, 3200), num(1, 1536), num(2, 384));
    let dtype = a.get(3).cloned().unwrap_or_else(|| "f32".into());
    let reps = num(4, 5);
    let x = data(m * k, 1);
    let wf = data(n * k, 2);
    let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
    // Quantized weights: random bytes as the integers, every block's scale 0.01 (and min
    // -0.08 for Q4_1), so the values are in a plausible range.
    let format = match dtype.as_str() {
        "q8_0" => Some(QuantFormat::Q8_0),
        "q4_0" => Some(QuantFormat::Q4_0),
        "q4_1" => Some(QuantFormat::Q4_1),
        _ => None,
    };
    let q: Vec<u8> = match format {
        Some(f) => {
            let mut b: Vec<u8> = data(f.row_bytes(k) * n, 3)
                .iter()
                .map(|&v| (v * 127.0) as i8 as u8)
                .collect();
            for blk in b.chunks_exact_mut(f.block_bytes()) {
                blk[..2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                if f == QuantFormat::Q4_1 {
                    blk[2..4].copy_from_slice(&half::f16::from_f32(-0.08).to_le_bytes());
                }
            }
            b
        }
        None => Vec::new(),
    };
    let w = match (dtype.as_str(), format) {
        (_, Some(format)) => WeightSlice::Quant { format, bytes: &q },
        ("bf16", _) => WeightSlice::BF16(&wb),
        _ => WeightSlice::F32(&wf),
    };
    let mut out = vec![0f32; m * n];
    let p = MatmulParams { m, n, k };
    matmul(&x, w, &mut out, p);
    let flop = 2.0 * (m * n * k) as f64;
    // Calls per rep: about 0.2 s of work at 50 GFLOP/s, so a scheduler tick (4 ms) of error in
    // the CPU time is small.
    let calls = ((1e10 / flop) as usize).max(1);
    let (mut best_wall, mut best_cpu) = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        let (c0, t0) = (cpu_ns(), Instant::now());
        for _ in 0..calls {
            matmul(&x, w, &mut out, p);
        }
        best_wall = best_wall.min(t0.elapsed().as_secs_f64() / calls as f64);
        best_cpu = best_cpu.min((cpu_ns() - c0) as f64 * 1e-9 / calls as f64);
    }
    println!(
        "m={m} n={n} k={k} {dtype}: {:.1} GFLOP/s wall, {:.1} GFLOP/s per CPU-second ({:.3} ms best wall)",
        flop / best_wall * 1e-9,
        flop / best_cpu * 1e-9,
        best_wall * 1e3
    );
}
