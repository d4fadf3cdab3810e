//! The paged and varlen attention ops through the tensor API on the CPU: validation messages,
//! the decode_only promise, bf16 caches, and varlen == dense per sequence.

use crate::batch::ForwardBatch;
use crate::tensor::PagedBatchTensors;
use crate::{DType, Device, Tensor};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let x = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001;
            x as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn u32s(v: &[u32]) -> Tensor {
    Tensor::from_slice(v, &[v.len()]).unwrap()
}

/// A cache [4 pages, 2 kv heads, 4 slots, 8] holding two sequences of 5 and 3 tokens, written
/// through reshape_and_cache in `dtype`.
fn caches(dtype: DType) -> (Tensor, Tensor) {
    let (tokens, kvh, d) = (8, 2, 8);
    let slots = u32s(&[4, 5, 6, 7, 12, 0, 1, 2]); // seq 0: pages 1, 3; seq 1: page 0
    let mut kc = Tensor::zeros(&[4, kvh, 4, d], dtype, Device::Cpu).unwrap();
    let mut vc = kc.clone();
    let k = Tensor::from_vec(values(tokens * kvh * d, 1), &[tokens, kvh, d]).unwrap();
    let v = Tensor::from_vec(values(tokens * kvh * d, 2), &[tokens, kvh, d]).unwrap();
    kc.reshape_and_cache(&k.to_dtype(dtype).unwrap(), &slots)
        .unwrap();
    vc.reshape_and_cache(&v.to_dtype(dtype).unwrap(), &slots)
        .unwrap();
    (kc, vc)
}

fn meta(cu: &[u32], decode_only: bool) -> PagedBatchTensors {
    PagedBatchTensors {
        block_tables: Tensor::from_slice(&[1u32, 3, 0, 0], &[2, 2]).unwrap(),
        context_lens: u32s(&[5, 3]),
        cu_seqlens: u32s(cu),
        decode_only,
    }
}

#[test]
fn decode_only_is_checked_and_changes_nothing_else() {
    let (kc, vc) = caches(DType::F32);
    let q = Tensor::from_vec(values(2 * 4 * 8, 3), &[2, 4, 8]).unwrap();
    let general = q
        .paged_attention(&kc, &vc, &meta(&[0, 1, 2], false), 0.3, true)
        .unwrap();
    let decode = q
        .paged_attention(&kc, &vc, &meta(&[0, 1, 2], true), 0.3, true)
        .unwrap();
    assert_eq!(
        general.to_vec::<f32>().unwrap(),
        decode.to_vec::<f32>().unwrap()
    );
    // Two rows for one sequence and none for the other: the promise is broken.
    let err = q
        .paged_attention(&kc, &vc, &meta(&[0, 2, 2], true), 0.3, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sequence 0: 2 query rows in a decode_only batch"),
        "{err}"
    );
    // Rows and sequences disagree: caught by the shape check before any backend.
    let q3 = Tensor::from_vec(values(3 * 4 * 8, 3), &[3, 4, 8]).unwrap();
    let err = q3
        .paged_attention(&kc, &vc, &meta(&[0, 2, 3], true), 0.3, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("decode_only with 3 query rows for 2 sequences"),
        "{err}"
    );
}

#[test]
fn bf16_cache_matches_f32_cache_of_the_same_values() {
    let (k16, v16) = caches(DType::BF16);
    let (k32, v32) = (
        k16.to_dtype(DType::F32).unwrap(),
        v16.to_dtype(DType::F32).unwrap(),
    );
    let q = Tensor::from_vec(values(5 * 4 * 8, 4), &[5, 4, 8]).unwrap();
    let m = meta(&[0, 3, 5], false);
    let a = q.paged_attention(&k16, &v16, &m, 0.3, true).unwrap();
    let b = q.paged_attention(&k32, &v32, &m, 0.3, true).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
}

#[test]
fn varlen_equals_dense_attention_per_sequence() {
    let (heads, kvh, d) = (4, 2, 8);
    let lens = [(3usize, 3usize), (1, 6), (4, 2)];
    let tq: usize = lens.iter().map(|l| l.0).sum();
    let tk: usize = lens.iter().map(|l| l.1).sum();
    let q = Tensor::from_vec(values(tq * heads * d, 5), &[tq, heads, d]).unwrap();
    let k = Tensor::from_vec(values(tk * kvh * d, 6), &[tk, kvh, d]).unwrap();
    let v = Tensor::from_vec(values(tk * kvh * d, 7), &[tk, kvh, d]).unwrap();
    let (cq, ck) = (u32s(&[0, 3, 4, 8]), u32s(&[0, 3, 9, 11]));
    let got = q.varlen_attention(&k, &v, &cq, &ck, 0.5, false).unwrap();
    let mut want = Vec::new();
    let (mut qa, mut ka) = (0, 0);
    for &(ql, kl) in &lens {
        let qs = q.narrow(0, qa, ql).unwrap();
        let (ks, vs) = (k.narrow(0, ka, kl).unwrap(), v.narrow(0, ka, kl).unwrap());
        want.extend(
            qs.attention(&ks, &vs, 0.5, false)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
        );
        qa += ql;
        ka += kl;
    }
    assert_eq!(got.to_vec::<f32>().unwrap(), want);
    // Causal with more queries than keys (the third sequence) is refused, as dense attention
    // refuses it.
    let err = q
        .varlen_attention(&k, &v, &cq, &ck, 0.5, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sequence 2: causal with 4 queries over only 2 keys"),
        "{err}"
    );
}

#[test]
fn varlen_shapes_are_checked() {
    let q = Tensor::from_vec(values(2 * 4 * 8, 1), &[2, 4, 8]).unwrap();
    let k = Tensor::from_vec(values(2 * 3 * 8, 2), &[2, 3, 8]).unwrap();
    let cu = u32s(&[0, 2]);
    let err = q
        .varlen_attention(&k, &k, &cu, &cu, 1.0, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4 query heads not a multiple of 3 kv heads"),
        "{err}"
    );
    let k = Tensor::from_vec(values(2 * 2 * 8, 2), &[2, 2, 8]).unwrap();
    let err = q
        .varlen_attention(&k, &k, &cu, &u32s(&[0, 1, 2]), 1.0, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the same count"), "{err}");
    let f = Tensor::from_vec(vec![0f32, 2.0], &[2]).unwrap();
    let err = q
        .varlen_attention(&k, &k, &f, &cu, 1.0, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("u32"), "{err}");
}

#[test]
fn forward_batch_knows_a_decode_step() {
    let mut b = ForwardBatch {
        cu_seqlens: vec![0, 1, 2, 3],
        context_lens: vec![4, 9, 1],
        ..Default::default()
    };
    assert!(b.is_decode_only());
    b.cu_seqlens = vec![0, 1, 3, 4];
    assert!(!b.is_decode_only());
    assert!(!ForwardBatch::default().is_decode_only());
}
