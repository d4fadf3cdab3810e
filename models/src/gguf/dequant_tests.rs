use super::*;
use crate::gguf::test_util::fixtures_dir;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// FNV-1a over the little-endian f32 bits: a bit-exact fingerprint of a whole output.
fn fnv(values: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in values.iter().flat_map(|v| v.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn assert_bits_eq(ty: GgmlType, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{ty}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{ty}[{i}]: got {g}, gguf-py {w}");
    }
}

/// `tests/fixtures/gguf/quant_blocks.safetensors`: random blocks and gguf-py's dequantization.
#[test]
fn matches_gguf_py_on_fixture_blocks() {
    let path = fixtures_dir().join("gguf/quant_blocks.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let types = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::F16,
        GgmlType::Bf16,
    ];
    for ty in types {
        let raw = st.tensor(&format!("{}_bytes", ty.name())).unwrap();
        let want = st.tensor(&format!("{}_f32", ty.name())).unwrap();
        let want: Vec<f32> = want
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let row_len = want.len() / raw.shape()[0];
        let got = dequantize(ty, raw.data(), row_len).unwrap();
        assert_bits_eq(ty, &got, &want);
        // One row at a time through the serial entry point gives the same bits.
        let mut one = vec![0f32; row_len];
        let row_bytes = raw.data().len() / raw.shape()[0];
        dequantize_into(ty, &raw.data()[..row_bytes], row_len, &mut one).unwrap();
        assert_bits_eq(ty, &one, &want[..row_len]);
    }
}

/// Two random blocks per type (scales set to finite values) dequantized by gguf-py 0.19
/// (`gguf.quants.dequantize`), kept as a fingerprint plus the bits of three spot values.
const GGUF_PY_REFERENCES: &[(GgmlType, &str, u64, [u32; 3])] = &[
    (
        GgmlType::Q5_0,
        "22b4b6faf3fe08fa81ace9fcf7815461b43cde2b7cddcfb18e3eda1a5246fe42841e87234658b051fa763a89",
        0x401dbd1aef72cd2f,
        [0x40044000, 0xc056e800, 0xbf0b6800],
    ),
    (
        GgmlType::Q5_1,
        concat!(
            "99311e31dc4b22cbbce5cdf6fb0e55f5b68d7e4330df3c8e8b3370b4023835414d7e209c5d46a8e5084916dd",
            "74a85ea5",
        ),
        0x185cc0e420929787,
        [0x40109400, 0x408b7600, 0x3f66b800],
    ),
    (
        GgmlType::Q2K,
        concat!(
            "03391fdd4868f9dd8b870c2ca566e9c90084d3de3e969b7b403f650fcbaf8e29813c06af17eaa30a3c41d6ab",
            "24acc523a6ac6b9ce51e7a8caf28650f6d51b12d4d164ffa660e476741225f7064b00a7412a844355c9b6b31",
            "1047cd005dd64ea5800a53401c635ba88007c6db81ed4f6e4d5ae06c7ba40d2d33a25ebc1422ebb235060bec",
            "c997a5c651154a27ee13b1cd6bb304feb38d8d5bb44bad2e301d19da393dabf002b3e835",
        ),
        0x2ebf9a32a8dec909,
        [0x80000000, 0xc0878880, 0xc11bac00],
    ),
    (
        GgmlType::Q3K,
        concat!(
            "c8f73d1690b386ddc56ff6f905875d54d78b7ad7b016dd6c5961e972844be6c1f4a3d95eabe6d2c06639907b",
            "12d70f02b9359917c8e186c36ae7073a9ff213fca6675c8992babb2bca11b5bb04bdf93245d1eb7275acf394",
            "664c354e0bcd1eadb12886f26149495ae5c043c0d1374647f92ad8786672191c3408107554b3ddab88fe0fbf",
            "fd4e9650847cfbdaf7e5228509eb224b31def83fc07fbabb3b72788167870fcf25d373c6c62118e3367a1d3f",
            "26785b068e23326bcb7036832bda79adb885df9cf719efb6eaf2c447b2fb9e1ea3e7be73b2602d40f41ae8b7",
        ),
        0x1ca4f66e8717ce47,
        [0x41ea7e00, 0x41a42500, 0xbffd0000],
    ),
    (
        GgmlType::Q5K,
        concat!(
            "a9afee340ba187338a27906bb89cc241cc981d07c40d3b57d7deb3c15f89910d23a6e7fbab249553897299be",
            "7c9ac732605b2d1ea56d47d435a8418b2e671aa3d953ea6aad71df15dc19ba05366f5c38c21c5512fb8c61ae",
            "bb2531591ab3682281205a74cc14def46fb23013423cf322c0750ad8163536ccf7027b080f2a907f68bab8fe",
            "5b53014e8634c2c086edf43b4ddc35f7e42e9ce440a88e86793ba660f00241e921608b134d4f9030e690a708",
            "f6b539376a4a2c7612a60cd355edb2df8eebaf98298bc159d5bf1de62c3ed2d25bfa583577a37bf2c688527a",
            "7894291170a008a5883f3f4c35a666411c56819efdda308b93f93f4d530b6467adbcc22cdc423875b06dd97e",
            "b3e6c472e3bdb4c2941c5252ed5ff0af8aafaf315612873f388c127a13723e9f689ee3b1b4cfce50ef8502d3",
            "b5a7f74683b2cc0d7ea50beecb9802fb388e9347970ed00a01dae6f249c6370cbd68b7333b559c918131c390",
        ),
        0x67433e0b6416d6bd,
        [0xc0453000, 0xc0c53000, 0xc3df2090],
    ),
];

#[test]
fn matches_gguf_py_on_other_types() {
    for &(ty, blocks, fingerprint, spots) in GGUF_PY_REFERENCES {
        let bytes = hex(blocks);
        let block = ty.block_size();
        let got = dequantize(ty, &bytes, block).unwrap();
        assert_eq!(got.len(), 2 * block);
        let got_spots = [got[0], got[block - 1], got[block + 7]];
        assert_eq!(got_spots.map(f32::to_bits), spots, "{ty}: {got_spots:?}");
        assert_eq!(fnv(&got), fingerprint, "{ty}: output differs from gguf-py");
    }
}

#[test]
fn q8_k_is_scale_times_quant() {
    let mut block = vec![0u8; 292];
    block[..4].copy_from_slice(&0.25f32.to_le_bytes());
    for j in 0..256 {
        block[4 + j] = (j as i32 - 128) as i8 as u8;
    }
    let got = dequantize(GgmlType::Q8K, &block, 256).unwrap();
    for (j, v) in got.iter().enumerate() {
        assert_eq!(*v, 0.25 * ((j as i32 - 128) as i8) as f32);
    }
}

#[test]
fn q4_0_hand_computed_block() {
    // d = 0.5; byte j holds element j (low nibble) and element j + 16 (high nibble).
    let mut block = vec![0u8; 18];
    block[..2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    block[2] = 0xF0; // element 0 -> 0 - 8, element 16 -> 15 - 8
    block[3] = 0x19; // element 1 -> 9 - 8, element 17 -> 1 - 8
    let got = dequantize(GgmlType::Q4_0, &block, 32).unwrap();
    assert_eq!(got[0], -4.0);
    assert_eq!(got[16], 3.5);
    assert_eq!(got[1], 0.5);
    assert_eq!(got[17], -3.5);
    assert_eq!(got[2], -4.0);
}

#[test]
fn f32_f16_bf16_are_exact() {
    let values = [1.5f32, -0.0, f32::INFINITY, 3.0e-5];
    let f32_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_bits_eq(
        GgmlType::F32,
        &dequantize(GgmlType::F32, &f32_bytes, 2).unwrap(),
        &values,
    );
    let f16_bytes: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let f16_want: Vec<f32> = values
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_bits_eq(
        GgmlType::F16,
        &dequantize(GgmlType::F16, &f16_bytes, 4).unwrap(),
        &f16_want,
    );
    let bf16_bytes = [0x80, 0x3f, 0x00, 0xc0]; // 1.0, -2.0
    assert_eq!(
        dequantize(GgmlType::Bf16, &bf16_bytes, 2).unwrap(),
        vec![1.0, -2.0]
    );
}

#[test]
fn unsupported_types_and_bad_lengths_are_errors() {
    let err = dequantize(GgmlType::Iq2Xxs, &[0u8; 66], 256).unwrap_err();
    assert_eq!(err, DequantError::Unsupported(GgmlType::Iq2Xxs));
    assert_eq!(err.to_string(), "unsupported GGML type IQ2_XXS");
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 17], 32),
        Err(DequantError::BadLength { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 18], 16),
        Err(DequantError::BadLength { .. })
    ));
    assert!(matches!(
        dequantize(GgmlType::F32, &[0u8; 8], 0),
        Err(DequantError::BadLength { .. })
    ));
    let mut out = vec![0f32; 3];
    assert!(dequantize_into(GgmlType::F32, &[0u8; 8], 2, &mut out).is_err());
}

#[test]
fn many_rows_in_parallel_match_row_by_row() {
    // 64 rows of two Q8_0 blocks with distinct scales and quants.
    let mut data = Vec::new();
    for r in 0..128u32 {
        data.extend_from_slice(&half::f16::from_f32(r as f32 / 64.0).to_le_bytes());
        data.extend((0..32u32).map(|j| (r * 7 + j) as u8));
    }
    let all = dequantize(GgmlType::Q8_0, &data, 64).unwrap();
    for (r, row) in all.chunks(64).enumerate() {
        let mut one = vec![0f32; 64];
        dequantize_into(GgmlType::Q8_0, &data[r * 68..r * 68 + 68], 64, &mut one).unwrap();
        assert_eq!(row, &one[..]);
    }
    assert_eq!(all[64 + 1], (1.0 / 32.0) * ((2 * 7 + 1) as i8) as f32);
}
