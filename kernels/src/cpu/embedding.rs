use super::quant::{dequantize_row, QK};
use super::WeightSlice;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// out[i, :] = table[ids[i], :] as f32. `table`: [vocab, hidden]; ids already bounds-checked.
/// A quantized table is dequantized row by row (exactly as `quant::dequantize_row`); its
/// `hidden` must then be a multiple of 32.
pub fn embedding(table: WeightSlice<'_>, hidden: usize, ids: &[u32], out: &mut [f32]) {
    assert!(out.len() >= ids.len() * hidden, "embedding: out too short");
    if let WeightSlice::Quant { format, .. } = table {
        assert!(
            hidden.is_multiple_of(QK),
            "embedding: hidden = {hidden} is not a multiple of the {} block size",
            format.name()
        );
    }
    if hidden == 0 {
        return;
    }
    let row = |id: u32, o: &mut [f32]| {
        let r = id as usize * hidden..(id as usize + 1) * hidden;
        match table {
            WeightSlice::F32(t) => o.copy_from_slice(&t[r]),
            WeightSlice::BF16(t) => t[r].convert_to_f32_slice(o),
            WeightSlice::F16(t) => t[r].convert_to_f32_slice(o),
            WeightSlice::Quant { format, bytes } => {
                let rb = format.row_bytes(hidden);
                dequantize_row(format, &bytes[id as usize * rb..(id as usize + 1) * rb], o)
            }
        }
    };
    let out = &mut out[..ids.len() * hidden];
    if ids.len() * hidden < 1 << 16 {
        for (&id, o) in ids.iter().zip(out.chunks_exact_mut(hidden)) {
            row(id, o);
        }
    } else {
        out.par_chunks_exact_mut(hidden)
            .zip(ids)
            .for_each(|(o, &id)| row(id, o));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::testutil::{seed, Rng};
    use half::bf16;

    #[test]
    fn gathers_rows() {
        let s = seed(0xe4_0001);
        let mut rng = Rng::new(s);
        for (vocab, hidden, n) in [(1, 1, 1), (40, 31, 33), (50, 32, 31), (1000, 576, 300)] {
            let t = rng.vec(vocab * hidden);
            let tb: Vec<bf16> = t.iter().map(|&v| bf16::from_f32(v)).collect();
            let ids: Vec<u32> = (0..n)
                .map(|_| (rng.next_u64() % vocab as u64) as u32)
                .collect();
            let mut out = vec![f32::NAN; n * hidden];
            embedding(WeightSlice::F32(&t), hidden, &ids, &mut out);
            for (i, &id) in ids.iter().enumerate() {
                let want = &t[id as usize * hidden..(id as usize + 1) * hidden];
                assert_eq!(
                    &out[i * hidden..(i + 1) * hidden],
                    want,
                    "f32 row {i} (seed {s:#x})"
                );
            }
            embedding(WeightSlice::BF16(&tb), hidden, &ids, &mut out);
            for (i, &id) in ids.iter().enumerate() {
                for c in 0..hidden {
                    assert_eq!(
                        out[i * hidden + c],
                        tb[id as usize * hidden + c].to_f32(),
                        "bf16 (seed {s:#x})"
                    );
                }
            }
        }
    }

    #[test]
    fn gathers_quantized_rows() {
        use crate::cpu::quant::tests::{random_blocks, FORMATS};
        let s = seed(0xe4_0002);
        let mut rng = Rng::new(s);
        for format in FORMATS {
            // 300 × 576 takes the parallel branch; the others the serial one.
            for (vocab, hidden, n) in [(1, 32, 1), (40, 64, 33), (1000, 576, 300)] {
                let bytes = random_blocks(&mut rng, format, vocab * hidden / QK);
                let ids: Vec<u32> = (0..n)
                    .map(|_| (rng.next_u64() % vocab as u64) as u32)
                    .collect();
                let mut out = vec![f32::NAN; n * hidden];
                embedding(
                    WeightSlice::Quant {
                        format,
                        bytes: &bytes,
                    },
                    hidden,
                    &ids,
                    &mut out,
                );
                let rb = format.row_bytes(hidden);
                for (i, &id) in ids.iter().enumerate() {
                    let mut want = vec![0f32; hidden];
                    dequantize_row(format, &bytes[id as usize * rb..], &mut want);
                    let got = &out[i * hidden..(i + 1) * hidden];
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{format:?} row {i} (seed {s:#x})");
                }
            }
        }
    }
}
