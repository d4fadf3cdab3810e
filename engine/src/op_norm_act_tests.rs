//! LayerNorm, GELU, QuickGELU and the fused residual RMSNorm through the op set on the CPU:
//! validation messages, output shapes, the two views of `add_rms_norm`, the bf16 path.

use super::*;
use half::bf16;

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn ramp(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect()
}

fn err(r: Result<impl std::fmt::Debug>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn names_and_arity_cover_the_new_ops() {
    let ops = [
        Op::LayerNorm { eps: 1e-5 },
        Op::Gelu {
            approx: GeluApprox::Erf,
        },
        Op::QuickGelu,
        Op::AddRmsNorm { eps: 1e-5 },
    ];
    for (op, arity) in ops.iter().zip([3, 1, 1, 3]) {
        assert!(ALL_OPS.contains(&op.name()), "{}", op.name());
        assert_eq!(op.arity(), arity, "{}", op.name());
    }
}

#[test]
fn check_rejects_bad_inputs_clearly() {
    let x = t(&ramp(6), &[2, 3]);
    let w = t(&[1.0; 3], &[3]);
    let w4 = t(&[1.0; 4], &[4]);
    let wb = w.to_dtype(DType::BF16).unwrap();
    let ln = Op::LayerNorm { eps: 1e-5 };
    let e = err(ln.check(&[&x, &w, &w4]));
    assert!(e.contains("bias [4]") && e.contains("expected [3]"), "{e}");
    let e = err(ln.check(&[&x, &w, &wb]));
    assert!(e.contains("bf16") && e.contains("expected f32"), "{e}");
    let e = err(ln.check(&[&x, &w]));
    assert!(e.contains("2 inputs, expected 3"), "{e}");
    let ids = Tensor::from_vec(vec![1u32, 2], &[2]).unwrap();
    let gelu = Op::Gelu {
        approx: GeluApprox::Tanh,
    };
    let e = err(gelu.check(&[&ids]));
    assert!(e.contains("u32") && e.contains("f32 or bf16"), "{e}");
    let add = Op::AddRmsNorm { eps: 1e-5 };
    let r = t(&ramp(6), &[3, 2]);
    let e = err(add.check(&[&x, &r, &w]));
    assert!(e.contains("residual [3, 2]"), "{e}");
    let e = err(add.check(&[&x, &x, &w4]));
    assert!(e.contains("weight [4]"), "{e}");
    let scalar = t(&[1.0], &[]);
    let e = err(add.check(&[&scalar, &scalar, &w]));
    assert!(e.contains("scalar"), "{e}");
    assert_eq!(
        add.check(&[&x, &x, &w]).unwrap(),
        (vec![2, 2, 3], DType::F32)
    );
    assert_eq!(ln.check(&[&x, &w, &w]).unwrap(), (vec![2, 3], DType::F32));
}

#[test]
fn layer_norm_and_activations_on_the_cpu() {
    let x = t(&[1.0, 2.0, 3.0, 4.0, -1.0, 0.0, 1.0, 2.0], &[2, 4]);
    let w = t(&[1.0, 2.0, 0.5, 1.0], &[4]);
    let b = t(&[0.0, 0.0, 1.0, -1.0], &[4]);
    let out = x.layer_norm(&w, &b, 0.0).unwrap().to_vec::<f32>().unwrap();
    // Each row: mean m, biased variance 1.25.
    let z = [-1.5f32, -0.5, 0.5, 1.5].map(|v| v / 1.25f32.sqrt());
    let want = [z[0], 2.0 * z[1], 0.5 * z[2] + 1.0, z[3] - 1.0];
    for (i, g) in out.iter().enumerate() {
        assert!(
            (g - want[i % 4]).abs() < 1e-6,
            "{i}: {g} vs {}",
            want[i % 4]
        );
    }
    let v = t(&[-1.0, 0.0, 1.0], &[3]);
    let erf = v.gelu(GeluApprox::Erf).unwrap().to_vec::<f32>().unwrap();
    assert!(
        (erf[2] - 0.841_344_7).abs() < 1e-6 && erf[1] == 0.0,
        "{erf:?}"
    );
    assert!((erf[0] + 0.158_655_26).abs() < 1e-6, "{erf:?}");
    let tanh = v.gelu(GeluApprox::Tanh).unwrap().to_vec::<f32>().unwrap();
    assert!((tanh[2] - 0.841_192).abs() < 1e-6, "{tanh:?}");
    let quick = v.quick_gelu().unwrap().to_vec::<f32>().unwrap();
    assert!(
        (quick[2] - 1.0 / (1.0 + (-1.702f32).exp())).abs() < 1e-7,
        "{quick:?}"
    );
}

#[test]
fn add_rms_norm_returns_two_contiguous_views() {
    let (rows, h) = (3, 33);
    let x = t(&ramp(rows * h), &[rows, h]);
    let r = t(&ramp(rows * h + 5)[5..], &[rows, h]);
    let w = t(&ramp(h), &[h]);
    let (sum, normed) = x.add_rms_norm(&r, &w, 1e-6).unwrap();
    assert_eq!(sum.shape(), &[rows, h]);
    assert_eq!(normed.shape(), &[rows, h]);
    assert!(sum.is_contiguous() && normed.is_contiguous());
    assert_eq!(
        sum.to_vec::<f32>().unwrap(),
        x.add(&r).unwrap().to_vec::<f32>().unwrap()
    );
    let plain = sum.rms_norm(&w, 1e-6).unwrap();
    assert_eq!(
        normed.to_vec::<f32>().unwrap(),
        plain.to_vec::<f32>().unwrap()
    );
    // A view that starts past element 0 still reads as a slice.
    assert_eq!(normed.as_slice::<f32>().unwrap().len(), rows * h);
}

#[test]
fn bf16_runs_on_the_cpu_with_one_rounding() {
    let (rows, h) = (2, 40);
    let b16 = |t: &Tensor| t.to_dtype(DType::BF16).unwrap();
    let x = b16(&t(&ramp(rows * h), &[rows, h]));
    let w = b16(&t(&ramp(h + 3)[3..], &[h]));
    let b = b16(&t(&ramp(h + 7)[7..], &[h]));
    let wide = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let rounded = |t: Tensor| -> Vec<bf16> {
        t.to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(bf16::from_f32)
            .collect()
    };
    let got = x.layer_norm(&w, &b, 1e-5).unwrap();
    assert_eq!(got.dtype(), DType::BF16);
    let want = wide(&x).layer_norm(&wide(&w), &wide(&b), 1e-5).unwrap();
    assert_eq!(got.to_vec::<bf16>().unwrap(), rounded(want));
    let got = x.gelu(GeluApprox::Erf).unwrap();
    let want = wide(&x).gelu(GeluApprox::Erf).unwrap();
    assert_eq!(got.to_vec::<bf16>().unwrap(), rounded(want));
    let (sum, _) = x.add_rms_norm(&x, &w, 1e-5).unwrap();
    assert_eq!(sum.dtype(), DType::BF16);
    let twice: Vec<bf16> = x
        .to_vec::<bf16>()
        .unwrap()
        .iter()
        .map(|v| bf16::from_f32(2.0 * v.to_f32()))
        .collect();
    assert_eq!(sum.to_vec::<bf16>().unwrap(), twice);
}

#[test]
fn strided_views_copy_through_the_cpu_twin() {
    let x = t(&ramp(2 * 3 * 4), &[2, 3, 4]);
    let v = x.transpose(0, 2).unwrap().narrow(1, 1, 2).unwrap();
    let all = x.to_vec::<f32>().unwrap();
    let want: Vec<f32> = v.layout().offsets().map(|o| all[o]).collect();
    assert_eq!(v.to_vec::<f32>().unwrap(), want);
    assert_eq!(
        v.contiguous().unwrap().as_slice::<f32>().unwrap(),
        &want[..]
    );
}
