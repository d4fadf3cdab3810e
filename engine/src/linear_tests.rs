//! `Tensor::linear` / `Op::Matmul { bias, residual }`: validation and the CPU result.

use crate::{DType, Op, Tensor};

fn t(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    // Small distinct values, exact in f32: a wrong index or a missing term changes the sum.
    let v = (0..n)
        .map(|i| ((i as u32 * 37 + seed * 11) % 29) as f32 / 8.0 - 1.5)
        .collect();
    Tensor::from_vec::<f32>(v, shape).unwrap()
}

#[test]
fn arity_and_shapes_are_checked() {
    let (x, w) = (t(&[2, 3, 8], 1), t(&[5, 8], 2));
    let (bias, residual) = (t(&[5], 3), t(&[2, 3, 5], 4));
    let op = |bias, residual| Op::Matmul { bias, residual };
    assert_eq!(op(false, false).arity(), 2);
    assert_eq!(op(true, false).arity(), 3);
    assert_eq!(op(false, true).arity(), 3);
    assert_eq!(op(true, true).arity(), 4);
    let (shape, dtype) = op(true, true).check(&[&x, &w, &bias, &residual]).unwrap();
    assert_eq!((shape.as_slice(), dtype), (&[2, 3, 5][..], DType::F32));
    // Wrong bias length, residual shape, residual dtype, missing input.
    assert!(op(true, false).check(&[&x, &w, &t(&[4], 0)]).is_err());
    assert!(op(false, true).check(&[&x, &w, &t(&[6, 5], 0)]).is_err());
    let res_bf16 = residual.to_dtype(DType::BF16).unwrap();
    assert!(op(false, true).check(&[&x, &w, &res_bf16]).is_err());
    assert!(op(true, true).check(&[&x, &w, &bias]).is_err());
    let e = x.linear(&w, Some(&residual), None).unwrap_err().to_string();
    assert!(e.contains("bias"), "{e}");
}

#[test]
fn linear_is_matmul_plus_bias_plus_residual() {
    let (x, w) = (t(&[4, 16], 5), t(&[7, 16], 6));
    let (bias, residual) = (t(&[7], 7), t(&[4, 7], 8));
    let plain = x.matmul_t(&w).unwrap().to_vec::<f32>().unwrap();
    let b = bias.to_vec::<f32>().unwrap();
    let r = residual.to_vec::<f32>().unwrap();
    let cases = [
        (Some(&bias), None),
        (None, Some(&residual)),
        (Some(&bias), Some(&residual)),
    ];
    for (bi, re) in cases {
        let got = x.linear(&w, bi, re).unwrap().to_vec::<f32>().unwrap();
        for (i, g) in got.iter().enumerate() {
            let mut want = plain[i];
            if bi.is_some() {
                want += b[i % 7];
            }
            if re.is_some() {
                want += r[i];
            }
            assert_eq!(
                *g,
                want,
                "element {i}, bias {}, residual {}",
                bi.is_some(),
                re.is_some()
            );
        }
    }
}
