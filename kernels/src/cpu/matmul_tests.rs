use super::*;
use crate::cpu::testutil::{assert_close, seed, Rng};

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

const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 31, 33),
    (1, 32, 32),
    (1, 33, 31),
    (3, 33, 32),
    (4, 31, 33),
    (5, 32, 31),
    (33, 33, 33),
    (1, 1536, 576),
    (1, 576, 1536),
    (7, 200, 576),
    (130, 97, 1536),
];

fn check(dtype: &str, isa: Isa) {
    let s = seed(0x5eed_0001);
    let mut rng = Rng::new(s);
    for &(m, n, k) in SHAPES {
        let p = MatmulParams { m, n, k };
        let x = rng.vec(m * k);
        let wf = rng.vec(n * k);
        let mut out = vec![f32::NAN; m * n];
        // Reference on the rounded weights, so only accumulation error is measured.
        let (wr, tol): (Vec<f32>, f64) = match dtype {
            "f32" => {
                matmul_with(&x, WeightSlice::F32(&wf), &mut out, p, isa);
                (wf.clone(), 1e-7)
            }
            "bf16" => {
                let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
                matmul_with(&x, WeightSlice::BF16(&wb), &mut out, p, isa);
                (wb.iter().map(|v| v.to_f32()).collect(), 1e-7)
            }
            _ => {
                let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
                matmul_with(&x, WeightSlice::F16(&wh), &mut out, p, isa);
                (wh.iter().map(|v| v.to_f32()).collect(), 1e-7)
            }
        };
        let want = reference(&x, &wr, p);
        assert_close(
            &out,
            &want,
            tol,
            s,
            &format!("{dtype} {isa:?} m={m} n={n} k={k}"),
        );
    }
}

#[test]
fn f32_weights_match_reference() {
    check("f32", Isa::detect());
}

#[test]
fn bf16_weights_match_reference() {
    check("bf16", Isa::detect());
}

#[test]
fn f16_weights_match_reference() {
    check("f16", Isa::detect());
}

#[test]
fn portable_matches_reference() {
    check("bf16", Isa::Portable);
}

/// The SIMD path and the portable fallback compute the same sums in the same order.
#[test]
fn simd_and_portable_agree_bitwise() {
    let isa = Isa::detect();
    if isa == Isa::Portable {
        eprintln!("no AVX2+FMA+F16C: nothing to compare");
        return;
    }
    let s = seed(0x5eed_0002);
    let mut rng = Rng::new(s);
    // The last four cut K into blocks (1107: three blocks and a 3-element tail; 1536: three
    // full blocks), with edge rows and edge weight columns; 70 x 100 x 1100 also runs as two
    // row chunks x two weight blocks, chunk-major (f32) or block-major (16-bit).
    for &(m, n, k) in &[
        (1, 45, 83),
        (2, 19, 64),
        (6, 40, 77),
        (9, 300, 576),
        (7, 11, 1107),
        (12, 9, 1536),
        (5, 4, 1032),
        (70, 100, 1100),
    ] {
        let p = MatmulParams { m, n, k };
        let x = rng.vec(m * k);
        let wf = rng.vec(n * k);
        let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        for w in [
            WeightSlice::F32(&wf),
            WeightSlice::BF16(&wb),
            WeightSlice::F16(&wh),
        ] {
            let mut a = vec![0f32; m * n];
            let mut b = vec![0f32; m * n];
            matmul_with(&x, w, &mut a, p, isa);
            matmul_with(&x, w, &mut b, p, Isa::Portable);
            let same = a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits());
            assert!(
                same,
                "SIMD != portable for {w:?} m={m} n={n} k={k} (seed {s:#x})",
                w = std::mem::discriminant(&w)
            );
        }
    }
}

/// A row's result does not depend on how many rows share the call (decode == prefill row).
#[test]
fn rows_are_batch_invariant() {
    let s = seed(0x5eed_0003);
    let mut rng = Rng::new(s);
    let (m, n, k) = (9, 150, 200);
    let x = rng.vec(m * k);
    let wf = rng.vec(n * k);
    let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
    let mut all = vec![0f32; m * n];
    matmul(
        &x,
        WeightSlice::BF16(&wb),
        &mut all,
        MatmulParams { m, n, k },
    );
    for i in 0..m {
        let mut one = vec![0f32; n];
        matmul(
            &x[i * k..(i + 1) * k],
            WeightSlice::BF16(&wb),
            &mut one,
            MatmulParams { m: 1, n, k },
        );
        let same = one
            .iter()
            .zip(&all[i * n..(i + 1) * n])
            .all(|(u, v)| u.to_bits() == v.to_bits());
        assert!(same, "row {i} differs between m=1 and m={m} (seed {s:#x})");
    }
}

#[test]
fn empty_k_gives_zeros() {
    let mut out = vec![f32::NAN; 6];
    matmul(
        &[],
        WeightSlice::F32(&[]),
        &mut out,
        MatmulParams { m: 2, n: 3, k: 0 },
    );
    assert!(out.iter().all(|&v| v == 0.0));
}

/// `linear` = the plain product, then + bias[j], then + residual[i, j], for float and
/// quantized weights; the product part is bit-identical to `matmul`, and the whole is within
/// f32 rounding of an f64 reference.
#[test]
fn linear_adds_bias_then_residual() {
    use crate::cpu::quant::tests::{random_blocks, FORMATS};
    let s = seed(0x5eed_0004);
    let mut rng = Rng::new(s);
    for &(m, n, k) in &[(1, 33, 64), (3, 31, 32), (9, 64, 96), (130, 97, 128)] {
        let p = MatmulParams { m, n, k };
        let x = rng.vec(m * k);
        let wf = rng.vec(n * k);
        let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
        let bias = rng.vec(n);
        let residual = rng.vec(m * n);
        let quant: Vec<_> = FORMATS
            .iter()
            .map(|&f| (f, random_blocks(&mut rng, f, n * k / 32)))
            .collect();
        let mut weights = vec![WeightSlice::F32(&wf), WeightSlice::BF16(&wb)];
        for (f, bytes) in &quant {
            weights.push(WeightSlice::Quant { format: *f, bytes });
        }
        for w in weights {
            let mut plain = vec![f32::NAN; m * n];
            matmul(&x, w, &mut plain, p);
            for (use_bias, use_res) in [(true, false), (false, true), (true, true), (false, false)]
            {
                let e = Epilogue {
                    bias: use_bias.then_some(&bias[..]),
                    residual: use_res.then_some(&residual[..]),
                };
                let mut out = vec![f32::NAN; m * n];
                linear(&x, w, e, &mut out, p);
                let case = format!(
                    "{} m={m} n={n} k={k} bias={use_bias} residual={use_res}",
                    weight_name(&w)
                );
                let mut want = Vec::with_capacity(m * n);
                let mut want64 = Vec::with_capacity(m * n);
                for i in 0..m {
                    for j in 0..n {
                        let mut v = plain[i * n + j];
                        let mut v64 = plain[i * n + j] as f64;
                        if use_bias {
                            v += bias[j];
                            v64 += bias[j] as f64;
                        }
                        if use_res {
                            v += residual[i * n + j];
                            v64 += residual[i * n + j] as f64;
                        }
                        want.push(v);
                        want64.push(v64);
                    }
                }
                let same = out
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{case}: not (product + bias) + residual (seed {s:#x})"
                );
                assert_close(&out, &want64, 1e-12, s, &case);
            }
        }
    }
}

/// The f64 reference of a full linear layer for f32 weights (no shortcut through `matmul`).
#[test]
fn linear_matches_f64_reference() {
    let s = seed(0x5eed_0005);
    let mut rng = Rng::new(s);
    let (m, n, k) = (17, 45, 200);
    let p = MatmulParams { m, n, k };
    let x = rng.vec(m * k);
    let w = rng.vec(n * k);
    let bias = rng.vec(n);
    let residual = rng.vec(m * n);
    let mut want = reference(&x, &w, p);
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] += bias[j] as f64 + residual[i * n + j] as f64;
        }
    }
    let mut out = vec![f32::NAN; m * n];
    let e = Epilogue {
        bias: Some(&bias),
        residual: Some(&residual),
    };
    linear(&x, WeightSlice::F32(&w), e, &mut out, p);
    assert_close(&out, &want, 1e-7, s, "linear f32 m=17 n=45 k=200");
}

fn weight_name(w: &WeightSlice<'_>) -> &'static str {
    match w {
        WeightSlice::F32(_) => "f32",
        WeightSlice::F16(_) => "f16",
        WeightSlice::BF16(_) => "bf16",
        WeightSlice::Quant { format, .. } => format.name(),
    }
}

/// Sizes around register-tile and lane edges (4×3 and 1×8 tiles, 8-element lanes, and the
/// 6×16 tiles of a packed GEMM that was tried and measured slower, see docs/BENCHMARKS.md).
const EDGE_SIZES: &[usize] = &[1, 5, 6, 7, 15, 16, 17, 31, 33, 255, 257];

/// Checks `out` against the f64 product element by element: |got - want| <= 1e-5 · sqrt(k)
/// · Σ_t |x_t w_t| (rounding of a k-term f32 sum), NaN fails.
fn check_bound(out: &[f32], x: &[f32], w: &[f32], p: MatmulParams, extra: &[f64], case: &str) {
    let MatmulParams { m, n, k } = p;
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut mag) = (extra[i * n + j], extra[i * n + j].abs());
            for t in 0..k {
                let v = x[i * k + t] as f64 * w[j * k + t] as f64;
                want += v;
                mag += v.abs();
            }
            let got = out[i * n + j];
            assert!(!got.is_nan(), "{case}: NaN at ({i}, {j})");
            let err = (got as f64 - want).abs();
            let tol = 1e-5 * (k.max(1) as f64).sqrt() * mag.max(f64::MIN_POSITIVE);
            assert!(
                err <= tol,
                "{case}: ({i}, {j}) = {got}, want {want} (err {err:e} > {tol:e})"
            );
        }
    }
}

/// Every combination of edge sizes and every float weight dtype against the f64 reference
/// and bit for bit against the portable path.
#[test]
fn edge_shapes_all_dtypes() {
    let s = seed(0x5eed_0006);
    eprintln!("seed {s:#x}");
    let mut rng = Rng::new(s);
    let isa = Isa::detect();
    for &m in EDGE_SIZES {
        for &n in EDGE_SIZES {
            for &k in EDGE_SIZES {
                let p = MatmulParams { m, n, k };
                let x = rng.vec(m * k);
                let wf = rng.vec(n * k);
                let wb: Vec<bf16> = wf.iter().map(|&v| bf16::from_f32(v)).collect();
                let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
                let rounded = [
                    wf.clone(),
                    wb.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
                    wh.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
                ];
                let ws = [
                    WeightSlice::F32(&wf),
                    WeightSlice::BF16(&wb),
                    WeightSlice::F16(&wh),
                ];
                for (w, wr) in ws.into_iter().zip(&rounded) {
                    let case = format!("{} m={m} n={n} k={k} seed {s:#x}", weight_name(&w));
                    let mut out = vec![f32::NAN; m * n];
                    matmul_with(&x, w, &mut out, p, isa);
                    let mut port = vec![f32::NAN; m * n];
                    matmul_with(&x, w, &mut port, p, Isa::Portable);
                    let same = out
                        .iter()
                        .zip(&port)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{case}: SIMD != portable");
                    if m * n * k <= 1 << 22 {
                        check_bound(&out, &x, wr, p, &vec![0.0; m * n], &case);
                    }
                }
            }
        }
    }
}

/// Large shapes (BERT-like) and the linear epilogues, for float and quantized weights: bias then residual, within the f64 bound, NaN fails; quantized
/// weights equal the f32 path on the dequantized matrix bit for bit.
#[test]
fn large_shapes_and_epilogues() {
    use crate::cpu::quant::dequantize_row;
    use crate::cpu::quant::tests::{random_blocks, FORMATS};
    let s = seed(0x5eed_0008);
    eprintln!("seed {s:#x}");
    let mut rng = Rng::new(s);
    for &(m, n, k) in &[(200, 520, 384), (97, 131, 1536), (33, 1000, 64)] {
        let p = MatmulParams { m, n, k };
        let x = rng.vec(m * k);
        let wf = rng.vec(n * k);
        let wh: Vec<f16> = wf.iter().map(|&v| f16::from_f32(v)).collect();
        let bias = rng.vec(n);
        let residual = rng.vec(m * n);
        let e = Epilogue {
            bias: Some(&bias),
            residual: Some(&residual),
        };
        let extra: Vec<f64> = (0..m * n)
            .map(|t| bias[t % n] as f64 + residual[t] as f64)
            .collect();
        let mut out = vec![f32::NAN; m * n];
        linear(&x, WeightSlice::F32(&wf), e, &mut out, p);
        check_bound(
            &out,
            &x,
            &wf,
            p,
            &extra,
            &format!("f32 m={m} n={n} k={k} seed {s:#x}"),
        );
        let whr: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
        linear(&x, WeightSlice::F16(&wh), e, &mut out, p);
        check_bound(
            &out,
            &x,
            &whr,
            p,
            &extra,
            &format!("f16 m={m} n={n} k={k} seed {s:#x}"),
        );
        for format in FORMATS {
            let bytes = random_blocks(&mut rng, format, n * k / 32);
            let w = WeightSlice::Quant {
                format,
                bytes: &bytes,
            };
            let rb = format.row_bytes(k);
            let mut deq = vec![0f32; n * k];
            for (r, row) in deq.chunks_exact_mut(k).enumerate() {
                dequantize_row(format, &bytes[r * rb..(r + 1) * rb], row);
            }
            let case = format!("{} m={m} n={n} k={k} seed {s:#x}", format.name());
            let mut q = vec![f32::NAN; m * n];
            linear(&x, w, e, &mut q, p);
            check_bound(&q, &x, &deq, p, &extra, &case);
            let mut f = vec![f32::NAN; m * n];
            linear(&x, WeightSlice::F32(&deq), e, &mut f, p);
            let same = q.iter().zip(&f).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{case}: quantized != f32 on the dequantized weights");
        }
    }
}
