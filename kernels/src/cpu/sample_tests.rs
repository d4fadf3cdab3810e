use super::*;
use crate::cpu::testutil::{seed, Rng};

fn row(temperature: f32, top_k: u32, top_p: f32, uniform: f64) -> SampleRow {
    SampleRow {
        temperature,
        top_k,
        top_p,
        uniform,
    }
}

fn one(x: &[f32], p: &SampleRow) -> u32 {
    sample_row(x, p, &mut SampleScratch::default())
}

/// Inverse of `order_key` on keys of numbers.
fn key_value(key: u32) -> f32 {
    f32::from_bits(if key >> 31 == 1 {
        key & 0x7fff_ffff
    } else {
        !key
    })
}

/// The rule of the module doc, spelled out with a full sort of the row.
fn reference(x: &[f32], p: &SampleRow) -> u32 {
    let valid: Vec<usize> = (0..x.len()).filter(|&i| !x[i].is_nan()).collect();
    let best = valid
        .iter()
        .copied()
        .fold(None, |b: Option<usize>, i| match b {
            Some(j) if x[i] <= x[j] => Some(j),
            _ => Some(i),
        });
    let Some(best) = best else { return 0 };
    if is_greedy(p) {
        return best as u32;
    }
    let inv = 1.0 / p.temperature;
    let z: Vec<f32> = x.iter().map(|&v| v * inv).collect();
    let m = valid
        .iter()
        .map(|&i| z[i])
        .fold(f32::NEG_INFINITY, f32::max);
    if !inv.is_finite() || !m.is_finite() {
        return best as u32;
    }
    let w = |i: usize| weight(z[i] - m);
    let mut order = valid.clone();
    // z descending (as floats: -0 == +0), then id ascending.
    order.sort_by(|&a, &b| z[b].partial_cmp(&z[a]).unwrap().then(a.cmp(&b)));
    if p.top_k > 0 && (p.top_k as usize) < order.len() {
        order.truncate(p.top_k as usize);
    }
    if p.top_p < 1.0 {
        let total: u64 = order.iter().map(|&i| w(i)).sum();
        let need = (f64::from(p.top_p) * total as f64).ceil() as u64;
        let mut before = 0u64;
        order.retain(|&i| {
            let keep = before < need;
            before += w(i);
            keep
        });
    }
    let mut kept = order;
    kept.sort_unstable();
    let total: u64 = kept.iter().map(|&i| w(i)).sum();
    let target = ((p.uniform * total as f64).floor() as u64).min(total - 1);
    let mut acc = 0;
    for &i in &kept {
        acc += w(i);
        if acc > target {
            return i as u32;
        }
    }
    unreachable!("target below the total")
}

/// The kernel's structure run serially: radix select over the keys (four 8-bit digits, a
/// histogram of counts or masses per digit), the tie cut and the draw as "first id whose
/// running sum exceeds a target" over `threads` contiguous chunks with an exclusive scan.
mod kernel_model {
    use super::*;

    pub fn sample(x: &[f32], p: &SampleRow, threads: usize) -> u32 {
        let n = x.len();
        let (best, valid) = argmax_count(x);
        if is_greedy(p) || valid == 0 {
            return best;
        }
        let inv = 1.0 / p.temperature;
        let m = x[best as usize] * inv;
        if !inv.is_finite() || !m.is_finite() {
            return best;
        }
        let key = |i: usize| order_key(x[i] * inv);
        let w = |i: usize| {
            let z = x[i] * inv;
            if z.is_nan() {
                0
            } else {
                weight(z - m)
            }
        };
        let mut cut = Cut::ALL;
        let mut kept_mass = None;
        if p.top_k > 0 && (p.top_k as usize) < valid {
            let k = u64::from(p.top_k);
            let (t, above) = radix_select(n, &key, &|_| 1, cut, k);
            let ties = k - above;
            let mut mass_above = 0;
            let val = |i: usize| u64::from(key(i) == t);
            let (id, _) = find_running(n, threads, &val, |_| ties - 1, &mut |i| {
                if key(i) > t {
                    mass_above += w(i);
                }
            });
            cut = Cut { key: t, id };
            kept_mass = Some(mass_above + ties * weight(key_value(t) - m));
        }
        if p.top_p < 1.0 {
            let total = kept_mass
                .unwrap_or_else(|| (0..n).filter(|&i| cut.keeps(key(i), i as u32)).map(w).sum());
            let need = nucleus_need(p.top_p, total);
            let (t, above) = radix_select(n, &key, &w, cut, need);
            let wt = weight(key_value(t) - m);
            let ties = (need - above).div_ceil(wt);
            let val = |i: usize| u64::from(key(i) == t && cut.keeps(t, i as u32));
            let (id, _) = find_running(n, threads, &val, |_| ties - 1, &mut |_| {});
            cut = Cut { key: t, id };
        }
        let val = |i: usize| {
            if cut.keeps(key(i), i as u32) {
                w(i)
            } else {
                0
            }
        };
        find_running(
            n,
            threads,
            &val,
            |total| draw_target(p.uniform, total),
            &mut |_| {},
        )
        .0
    }

    /// The key `t` with `above(t) < target <= above(t) + at(t)`, where `above` sums `val`
    /// over kept entries with a larger key; returns `(t, above(t))`.
    fn radix_select(
        n: usize,
        key: &dyn Fn(usize) -> u32,
        val: &dyn Fn(usize) -> u64,
        cut: Cut,
        target: u64,
    ) -> (u32, u64) {
        let (mut prefix, mut above) = (0u32, 0u64);
        for level in 0..4 {
            let shift = 24 - 8 * level;
            let mut hist = [0u64; 256];
            for i in 0..n {
                let k = key(i);
                if !cut.keeps(k, i as u32) || (level > 0 && k >> (shift + 8) != prefix) {
                    continue;
                }
                hist[((k >> shift) & 255) as usize] += val(i);
            }
            let mut chosen = 0;
            for b in (0..256).rev() {
                if above + hist[b] >= target {
                    chosen = b as u32;
                    break;
                }
                above += hist[b];
            }
            prefix = (prefix << 8) | chosen;
        }
        (prefix, above)
    }

    /// First index whose running sum of `val` (in id order) exceeds `target(total)`; each of
    /// `threads` owns a contiguous chunk, sums it (calling `each` on every index), takes its
    /// exclusive prefix, and the chunk holding the target is walked again.
    fn find_running(
        n: usize,
        threads: usize,
        val: &dyn Fn(usize) -> u64,
        target: impl Fn(u64) -> u64,
        each: &mut dyn FnMut(usize),
    ) -> (u32, u64) {
        let chunk = n.div_ceil(threads);
        let sums: Vec<u64> = (0..threads)
            .map(|t| {
                (t * chunk..((t + 1) * chunk).min(n))
                    .map(|i| {
                        each(i);
                        val(i)
                    })
                    .sum()
            })
            .collect();
        let total: u64 = sums.iter().sum();
        let goal = target(total);
        let mut excl = 0;
        for (t, &s) in sums.iter().enumerate() {
            if excl <= goal && goal < excl + s {
                let mut acc = excl;
                for i in t * chunk..((t + 1) * chunk).min(n) {
                    acc += val(i);
                    if acc > goal {
                        return (i as u32, total);
                    }
                }
            }
            excl += s;
        }
        panic!("target {goal} not below total {total}");
    }
}

#[test]
fn weight_is_exp_scaled_to_2_pow_40() {
    assert_eq!(weight(0.0), WEIGHT_ONE);
    assert_eq!(weight(-0.0), WEIGHT_ONE);
    for d in [f32::NAN, f32::NEG_INFINITY, -45.0, -1e30] {
        assert_eq!(weight(d), 0, "d = {d}");
    }
    let s = seed(0x5a_0001);
    let mut rng = Rng::new(s);
    let mut prev = (0.0f32, WEIGHT_ONE);
    for i in 0..200_000 {
        let d = if i < 100_000 {
            -(i as f32) * 3e-4
        } else {
            rng.uniform() * 15.0 - 15.0
        };
        let got = weight(d) as f64;
        let want = (d as f64).exp() * WEIGHT_ONE as f64;
        assert!(
            (got - want).abs() <= 0.5 + 4e-7 * want,
            "d = {d}: {got} vs {want} (seed {s:#x})"
        );
        if i < 100_000 {
            // Decreasing d never raises the weight by more than the polynomial's error.
            assert!(
                got <= prev.1 as f64 * (1.0 + 1e-6),
                "d = {d} after {}",
                prev.0
            );
            prev = (d, weight(d));
        }
    }
}

#[test]
fn order_key_orders_like_the_floats() {
    let mut vals = vec![
        f32::NEG_INFINITY,
        -1e30,
        -1.0,
        -f32::MIN_POSITIVE,
        -1e-45,
        -0.0,
        0.0,
        1e-45,
        1.0,
        3e38,
        f32::INFINITY,
    ];
    let s = seed(0x5a_0002);
    let mut rng = Rng::new(s);
    vals.extend((0..500).map(|_| rng.uniform() * 40.0));
    for &a in &vals {
        assert!(order_key(a) > 0, "{a}");
        for &b in &vals {
            let want = a.partial_cmp(&b).unwrap();
            assert_eq!(order_key(a).cmp(&order_key(b)), want, "{a} vs {b}");
        }
    }
    assert_eq!(order_key(f32::NAN), 0);
    assert_eq!(order_key(-f32::NAN), 0);
    for &a in &vals {
        if a != 0.0 {
            assert_eq!(key_value(order_key(a)).to_bits(), a.to_bits());
        }
    }
}

/// A random row: uniform logits, or few distinct values (many ties), with some NaN and -inf.
fn random_row(rng: &mut Rng, n: usize, kind: u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            match (kind, r % 61) {
                (_, 0) if kind >= 2 => f32::NAN,
                (_, 1) if kind >= 2 => f32::NEG_INFINITY,
                (0 | 2, _) => rng.uniform() * 12.0,
                _ => ((r >> 8) % 7) as f32 * 0.5,
            }
        })
        .collect()
}

fn random_params(rng: &mut Rng, n: usize) -> SampleRow {
    let top_k = match rng.next_u64() % 4 {
        0 => 0,
        1 => (rng.next_u64() % 50) as u32 + 1,
        2 => (rng.next_u64() % (n as u64 + 3)) as u32,
        _ => 2,
    };
    let top_p = match rng.next_u64() % 3 {
        0 => 1.0,
        1 => 0.9,
        _ => (rng.next_u64() % 1000) as f32 / 1000.0 + 0.001,
    };
    let temperature = [0.0, 0.3, 0.6, 1.0, 2.0, 5.0][(rng.next_u64() % 6) as usize];
    let uniform = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    row(temperature, top_k, top_p.min(1.0), uniform)
}

#[test]
fn twin_follows_the_rule_and_the_kernel_structure() {
    let s = seed(0x5a_0003);
    let mut rng = Rng::new(s);
    let mut scratch = SampleScratch::default();
    for case in 0..3000 {
        let n = [1, 2, 5, 31, 32, 33, 100, 1000, 5000][case % 9];
        let x = random_row(&mut rng, n, (case / 9 % 4) as u64);
        let p = random_params(&mut rng, n);
        let want = reference(&x, &p);
        let got = sample_row(&x, &p, &mut scratch);
        assert_eq!(got, want, "case {case} n {n} {p:?} (seed {s:#x})");
        let threads = [32, 128, 1024][case % 3];
        let model = kernel_model::sample(&x, &p, threads);
        assert_eq!(
            model, want,
            "kernel model, case {case} n {n} {p:?} (seed {s:#x})"
        );
    }
}

#[test]
fn large_rows_match_the_kernel_structure() {
    let s = seed(0x5a_0004);
    let mut rng = Rng::new(s);
    for (n, top_k, top_p) in [
        (32000, 0, 1.0),
        (32000, 40, 1.0),
        (128256, 0, 0.9),
        (128256, 50, 0.95),
        (128256, 0, 0.999),
    ] {
        let x: Vec<f32> = (0..n).map(|_| rng.uniform() * 8.0).collect();
        for t in [0.0, 0.7, 1.0] {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let p = row(t, top_k, top_p, u);
            let want = reference(&x, &p);
            assert_eq!(one(&x, &p), want, "n {n} {p:?} (seed {s:#x})");
            assert_eq!(kernel_model::sample(&x, &p, 1024), want, "n {n} {p:?}");
        }
    }
}

#[test]
fn greedy_nan_and_infinite_rows() {
    let g = row(0.0, 0, 1.0, 0.5);
    let t = row(1.0, 0, 1.0, 0.999);
    assert_eq!(one(&[0.1, 2.0, -1.0, 2.0, f32::NAN], &g), 1);
    assert_eq!(one(&[f32::NAN, -3.0, f32::NAN, -4.0], &g), 1);
    // Nothing to choose from: 0, greedy or not.
    assert_eq!(one(&[f32::NAN, f32::NAN], &g), 0);
    assert_eq!(one(&[f32::NAN, f32::NAN], &t), 0);
    assert_eq!(one(&[f32::NEG_INFINITY; 3], &t), 0);
    // An infinite logit wins outright.
    assert_eq!(one(&[f32::NEG_INFINITY, 0.0, f32::INFINITY], &t), 2);
    // A temperature so small that 1/T overflows is greedy on the logits.
    assert_eq!(one(&[1.0, 3.0, 2.0], &row(1e-39, 0, 1.0, 0.9)), 1);
    // top_k 1 is greedy whatever the temperature.
    assert_eq!(one(&[1.0, 3.0, 2.0], &row(5.0, 1, 1.0, 0.0)), 1);
    // NaN never drawn: with u near 1 the last number is picked, not the NaN after it.
    for u in [0.0, 0.3, 0.6, 0.999_999] {
        let got = one(&[0.0, f32::NAN, 0.0, f32::NAN], &row(1.0, 0, 1.0, u));
        assert!(got == 0 || got == 2, "u {u}: {got}");
    }
}

#[test]
fn draw_walks_kept_ids_in_order() {
    // Four equal logits: u in [i/4, (i+1)/4) picks id i.
    let x = [0.0f32; 4];
    for (u, want) in [(0.0, 0), (0.2499, 0), (0.25, 1), (0.74, 2), (0.9999, 3)] {
        assert_eq!(one(&x, &row(1.0, 0, 1.0, u)), want, "u {u}");
    }
    // top-k 2 of [1, 3, 2, 3] keeps ids 1 and 3 (the tie at 3), drawn in id order.
    let x = [1.0f32, 3.0, 2.0, 3.0];
    assert_eq!(one(&x, &row(1.0, 2, 1.0, 0.1)), 1);
    assert_eq!(one(&x, &row(1.0, 2, 1.0, 0.9)), 3);
    // Ties at the top-k boundary go to the lowest ids.
    let x = [5.0f32, 1.0, 1.0, 1.0, 1.0];
    for u in [0.0, 0.5, 0.99] {
        let got = one(&x, &row(1.0, 3, 1.0, u));
        assert!(got <= 2, "u {u}: {got}");
    }
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_the_mass() {
    // p = 0.5, 0.25, 0.15, 0.1: top_p 0.8 keeps 0.5 + 0.25 (0.75 < 0.8) + 0.15.
    let probs = [0.15f32, 0.5, 0.1, 0.25];
    let x: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
    let p = |u| row(1.0, 0, 0.8, u);
    let mut seen = [0usize; 4];
    for i in 0..1000 {
        seen[one(&x, &p(i as f64 / 1000.0)) as usize] += 1;
    }
    assert_eq!(seen[2], 0, "{seen:?}");
    // Drawn in id order over the kept mass 0.9: id 0 for u < 0.15/0.9, and so on.
    for (i, want) in [(0, 0.15 / 0.9), (1, 0.5 / 0.9), (3, 0.25 / 0.9)] {
        let f = seen[i] as f64 / 1000.0;
        assert!((f - want).abs() < 0.002, "id {i}: {f} vs {want}");
    }
    // 1000 equal logits, top_p 0.5: exactly the 500 lowest ids.
    let x = vec![0.0f32; 1000];
    for u in [0.0, 0.5, 0.999_999] {
        assert!(one(&x, &row(1.0, 0, 0.5, u)) < 500);
    }
    assert_eq!(one(&x, &row(1.0, 0, 0.5, 0.999_999)), 499);
}

#[test]
fn batch_rows_are_independent() {
    let s = seed(0x5a_0005);
    let mut rng = Rng::new(s);
    let (rows, vocab) = (6, 777);
    let x = rng.vec(rows * vocab);
    let params: Vec<SampleRow> = (0..rows).map(|_| random_params(&mut rng, vocab)).collect();
    let mut out = vec![u32::MAX; rows];
    sample(&x, vocab, &params, &mut out);
    for r in 0..rows {
        let want = reference(&x[r * vocab..(r + 1) * vocab], &params[r]);
        assert_eq!(out[r], want, "row {r} {:?} (seed {s:#x})", params[r]);
    }
}

#[test]
fn penalties_follow_hf_then_openai() {
    let p = PenaltyRow {
        repetition: 2.0,
        frequency: 0.5,
        presence: 1.0,
    };
    // Row 0: id 0 prompt only, id 1 generated 3 times, id 9 out of range; row 1: id 2 once.
    let mut x = vec![2.0f32, -1.0, 0.5, 3.0, 4.0, -2.0, 1.0, 1.0];
    let offsets = [0u32, 3, 4];
    let entries = [0u32, 0, 1, 3, 9, 1, 2, 1];
    let neutral = PenaltyRow {
        repetition: 1.0,
        frequency: 0.0,
        presence: 0.0,
    };
    penalize(&mut x, 4, &[p, neutral], &offsets, &entries);
    assert_eq!(x[..4], [1.0, -2.0 - (1.5 + 1.0), 0.5, 3.0]);
    assert_eq!(x[4..], [4.0, -2.0, 1.0, 1.0]);
    let mut y = vec![4.0f32, 4.0];
    penalize(
        &mut y,
        2,
        &[PenaltyRow {
            repetition: 2.0,
            frequency: 1.0,
            presence: 0.0,
        }],
        &[0, 1],
        &[0, 1],
    );
    // (4 / 2) - 1: the repetition penalty comes first.
    assert_eq!(y, [1.0, 4.0]);
    // Offsets past the entries are clamped rather than read out of bounds.
    let mut z = vec![1.0f32; 3];
    penalize(&mut z, 3, &[p], &[1, 99], &[0, 1, 2, 1]);
    assert_eq!(z, [1.0, 1.0, 0.5 - 1.5]);
    // NaN stays NaN; a negative presence raises the logit.
    let q = PenaltyRow {
        repetition: 1.0,
        frequency: 0.0,
        presence: -2.0,
    };
    let mut v = vec![f32::NAN, 0.0];
    penalize(&mut v, 2, &[q], &[0, 2], &[0, 1, 1, 1]);
    assert!(v[0].is_nan());
    assert_eq!(v[1], 2.0);
}
