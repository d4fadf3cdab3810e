use super::super::matmul_with;
use super::*;
use crate::cpu::quant::tests::{random_blocks, reference as dequant_ref, FORMATS};
use crate::cpu::testutil::{assert_close, seed, Rng};
use crate::cpu::WeightSlice;

/// The whole [n, k] matrix dequantized by the scalar reference.
fn dequantized(format: QuantFormat, bytes: &[u8], n: usize, k: usize) -> Vec<f32> {
    let rb = format.row_bytes(k);
    (0..n)
        .flat_map(|r| dequant_ref(format, &bytes[r * rb..(r + 1) * rb], k))
        .collect()
}

fn reference(x: &[f32], w: &[f32], p: MatmulParams) -> Vec<f64> {
    let mut out = vec![0f64; p.m * p.n];
    for i in 0..p.m {
        for j in 0..p.n {
            out[i * p.n + j] = (0..p.k)
                .map(|t| x[i * p.k + t] as f64 * w[j * p.k + t] as f64)
                .sum();
        }
    }
    out
}

fn isas() -> Vec<Isa> {
    let mut v = vec![Isa::Portable];
    if Isa::detect() != Isa::Portable {
        v.push(Isa::detect());
    }
    v
}

/// Every format and path against the f64 product of x and the dequantized weights, and bit
/// for bit equal to the f32-weight path on the dequantized matrix (GEMV included).
#[test]
fn matches_reference_on_dequantized_weights() {
    let s = seed(0x9b_0001);
    let mut rng = Rng::new(s);
    for format in FORMATS {
        for k in [32, 64, 576, 1536] {
            for n in [1, 31, 33, 576] {
                let bytes = random_blocks(&mut rng, format, n * k / QK);
                let wf = dequantized(format, &bytes, n, k);
                for m in [1, 2, 3, 4, 7, 130] {
                    let p = MatmulParams { m, n, k };
                    let x = rng.vec(m * k);
                    let want = reference(&x, &wf, p);
                    for isa in isas() {
                        let case = format!("{format:?} {isa:?} m={m} n={n} k={k}");
                        let mut got = vec![f32::NAN; m * n];
                        let w = WeightSlice::Quant {
                            format,
                            bytes: &bytes,
                        };
                        matmul_with(&x, w, &mut got, p, isa);
                        assert_close(&got, &want, 1e-7, s, &case);
                        let mut f = vec![f32::NAN; m * n];
                        matmul_with(&x, WeightSlice::F32(&wf), &mut f, p, isa);
                        let same = got.iter().zip(&f).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{case}: quantized != f32 path (seed {s:#x})");
                    }
                }
            }
        }
    }
}

/// The AVX2 paths (fused GEMV for M < 4, dequantize + tiles above) and the portable fallback
/// compute the same sums in the same order.
#[test]
fn simd_and_portable_agree_bitwise() {
    let isa = Isa::detect();
    if isa == Isa::Portable {
        eprintln!("no AVX2+FMA+F16C: nothing to compare");
        return;
    }
    let s = seed(0x9b_0002);
    let mut rng = Rng::new(s);
    for format in FORMATS {
        for &(m, n, k) in &[
            (1, 45, 96),
            (2, 19, 576),
            (3, 300, 1536),
            (1, 1000, 576),
            (5, 40, 1536),
        ] {
            let p = MatmulParams { m, n, k };
            let bytes = random_blocks(&mut rng, format, n * k / QK);
            let x = rng.vec(m * k);
            let w = WeightSlice::Quant {
                format,
                bytes: &bytes,
            };
            let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
            matmul_with(&x, w, &mut a, p, isa);
            matmul_with(&x, w, &mut b, p, Isa::Portable);
            let same = a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits());
            assert!(
                same,
                "{format:?} m={m} n={n} k={k}: AVX2 != portable (seed {s:#x})"
            );
        }
    }
}

/// A row gives the same bits whatever M is (1..=9: the fused GEMV below 4 rows, dequantize +
/// tiles from 4) and however the rows of w are split over tasks (n large enough for several).
#[test]
fn rows_are_batch_invariant() {
    let s = seed(0x9b_0003);
    let mut rng = Rng::new(s);
    let (n, k) = (2000, 576);
    for format in FORMATS {
        let bytes = random_blocks(&mut rng, format, n * k / QK);
        let w = WeightSlice::Quant {
            format,
            bytes: &bytes,
        };
        let x = rng.vec(9 * k);
        for isa in isas() {
            let mut alone = vec![0f32; 9 * n];
            for i in 0..9 {
                let xi = &x[i * k..(i + 1) * k];
                let o = &mut alone[i * n..(i + 1) * n];
                matmul_with(xi, w, o, MatmulParams { m: 1, n, k }, isa);
            }
            for m in 2..=9 {
                let mut all = vec![0f32; m * n];
                matmul_with(&x, w, &mut all, MatmulParams { m, n, k }, isa);
                for i in 0..m {
                    let same = alone[i * n..(i + 1) * n]
                        .iter()
                        .zip(&all[i * n..(i + 1) * n])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{format:?} {isa:?} m={m} row {i} (seed {s:#x})");
                }
            }
        }
    }
}

#[test]
fn empty_k_gives_zeros() {
    let mut out = vec![f32::NAN; 6];
    let w = WeightSlice::Quant {
        format: QuantFormat::Q4_1,
        bytes: &[],
    };
    matmul_with(
        &[],
        w,
        &mut out,
        MatmulParams { m: 2, n: 3, k: 0 },
        Isa::detect(),
    );
    assert!(out.iter().all(|&v| v == 0.0));
}

#[test]
#[should_panic(expected = "not a multiple")]
fn k_not_multiple_of_block_is_rejected() {
    let bytes = vec![0u8; 20 * 4];
    let w = WeightSlice::Quant {
        format: QuantFormat::Q4_1,
        bytes: &bytes,
    };
    let mut out = vec![0f32; 4];
    matmul_with(
        &[0.0; 40],
        w,
        &mut out,
        MatmulParams { m: 1, n: 2, k: 40 },
        Isa::detect(),
    );
}

#[test]
#[should_panic(expected = "w has")]
fn short_weights_are_rejected() {
    let bytes = vec![0u8; 20 * 3 - 1];
    let w = WeightSlice::Quant {
        format: QuantFormat::Q4_1,
        bytes: &bytes,
    };
    let mut out = vec![0f32; 3];
    matmul_with(
        &[0.0; 32],
        w,
        &mut out,
        MatmulParams { m: 1, n: 3, k: 32 },
        Isa::detect(),
    );
}

/// Not a check: min-of-many single-thread timings, robust to a busy machine.
/// `cargo test -p kiln-kernels --lib -- --ignored quant_gemv_timing --nocapture`
#[test]
#[ignore]
fn quant_gemv_timing() {
    use half::bf16;
    use std::time::Instant;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut rng = Rng::new(1);
    for (n, k) in [(576, 576), (1536, 576), (576, 1536)] {
        let x = rng.vec(k);
        let wb: Vec<bf16> = rng.vec(n * k).iter().map(|&v| bf16::from_f32(v)).collect();
        let q41 = random_blocks(&mut rng, QuantFormat::Q4_1, n * k / QK);
        let q80 = random_blocks(&mut rng, QuantFormat::Q8_0, n * k / QK);
        let q40 = random_blocks(&mut rng, QuantFormat::Q4_0, n * k / QK);
        let mut out = vec![0f32; n];
        let p = MatmulParams { m: 1, n, k };
        let ws = [
            ("bf16", WeightSlice::BF16(&wb)),
            (
                "Q4_1",
                WeightSlice::Quant {
                    format: QuantFormat::Q4_1,
                    bytes: &q41,
                },
            ),
            (
                "Q4_0",
                WeightSlice::Quant {
                    format: QuantFormat::Q4_0,
                    bytes: &q40,
                },
            ),
            (
                "Q8_0",
                WeightSlice::Quant {
                    format: QuantFormat::Q8_0,
                    bytes: &q80,
                },
            ),
        ];
        for (name, w) in ws {
            let best = pool.install(|| {
                (0..300)
                    .map(|_| {
                        let t = Instant::now();
                        matmul_with(&x, w, &mut out, p, Isa::detect());
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min)
            });
            println!("{name} {n}x{k}: {:.1} us", best * 1e6);
        }
    }
}

/// Not a check: one decode token's worth of SmolLM2-135M GEMVs (30 layers + lm_head), so the
/// weights stream from DRAM as in real decoding. Min of several passes.
#[test]
#[ignore]
fn quant_decode_pass_timing() {
    use half::bf16;
    use std::time::Instant;
    let shapes = [
        (576, 576),
        (192, 576),
        (192, 576),
        (576, 576),
        (1536, 576),
        (1536, 576),
        (576, 1536),
    ];
    let mut rng = Rng::new(2);
    let fmt = std::env::var("QFMT").unwrap_or_else(|_| "Q4_1".into());
    let format = match fmt.as_str() {
        "Q8_0" => QuantFormat::Q8_0,
        "Q4_0" => QuantFormat::Q4_0,
        _ => QuantFormat::Q4_1,
    };
    let mut mats: Vec<(usize, usize, Vec<u8>, Vec<bf16>)> = Vec::new();
    let mut all = shapes.repeat(30);
    all.push((49152, 576));
    for (n, k) in all {
        if fmt == "bf16" {
            let w = (0..n * k)
                .map(|i| bf16::from_bits((i as u16 & 0x7f) | 0x3c00))
                .collect();
            mats.push((n, k, Vec::new(), w));
        } else {
            mats.push((
                n,
                k,
                random_blocks(&mut rng, format, n * k / QK),
                Vec::new(),
            ));
        }
    }
    let x = rng.vec(1536);
    let mut out = vec![0f32; 49152];
    let mut best = f64::INFINITY;
    for _ in 0..8 {
        let t = Instant::now();
        for (n, k, q, b) in &mats {
            let w = if fmt == "bf16" {
                WeightSlice::BF16(b)
            } else {
                WeightSlice::Quant { format, bytes: q }
            };
            matmul_with(
                &x[..*k],
                w,
                &mut out[..*n],
                MatmulParams { m: 1, n: *n, k: *k },
                Isa::detect(),
            );
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{fmt} decode pass: {:.2} ms", best * 1e3);
}
