use super::*;
use crate::gguf::test_util::{f32_bytes, str_val, GgufBuilder};

fn sample() -> GgufBuilder {
    GgufBuilder::new()
        .kv("general.architecture", str_val("llama"))
        .kv("a.u8", GgufValue::U8(7))
        .kv("a.i8", GgufValue::I8(-7))
        .kv("a.u16", GgufValue::U16(700))
        .kv("a.i16", GgufValue::I16(-700))
        .kv("a.u32", GgufValue::U32(70000))
        .kv("a.i32", GgufValue::I32(-70000))
        .kv("a.u64", GgufValue::U64(1 << 40))
        .kv("a.i64", GgufValue::I64(-(1 << 40)))
        .kv("a.f32", GgufValue::F32(0.5))
        .kv("a.f64", GgufValue::F64(-0.25))
        .kv("a.bool", GgufValue::Bool(true))
        .kv(
            "a.strings",
            GgufValue::Array(GgufArray::String(vec!["x".into(), "".into(), "Ġé".into()])),
        )
        .kv("a.ints", GgufValue::Array(GgufArray::I32(vec![1, -2, 3])))
        .kv(
            "a.nested",
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::U8(vec![1, 2]),
                GgufArray::F32(vec![]),
            ])),
        )
        .tensor("w", &[3, 2], 0, f32_bytes(&[1., 2., 3., 4., 5., 6.]))
        .tensor("v", &[4], 1, vec![0, 0x3c, 0, 0x40, 0, 0xc0, 0, 0])
}

fn open_bytes(bytes: &[u8]) -> Result<GgufFile> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    std::fs::write(&path, bytes).unwrap();
    GgufFile::open(&path)
}

fn format_message(bytes: &[u8]) -> String {
    match open_bytes(bytes) {
        Err(ModelError::Format { path, message }) => {
            assert!(path.ends_with("t.gguf"), "error names the file: {path:?}");
            message
        }
        Err(other) => panic!("expected a format error, got {other}"),
        Ok(_) => panic!("a corrupt file opened"),
    }
}

#[test]
fn reads_every_value_type_and_tensor() {
    let g = open_bytes(&sample().build()).unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.alignment(), 32);
    assert_eq!(g.metadata().len(), 15);
    assert_eq!(g.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(g.get("a.i8"), Some(&GgufValue::I8(-7)));
    assert_eq!(g.get("a.i16"), Some(&GgufValue::I16(-700)));
    assert_eq!(g.get_u64("a.u8").unwrap(), Some(7));
    assert_eq!(g.get_u64("a.u16").unwrap(), Some(700));
    assert_eq!(g.get_u64("a.u32").unwrap(), Some(70000));
    assert_eq!(g.get_u64("a.u64").unwrap(), Some(1 << 40));
    assert_eq!(g.get("a.i32"), Some(&GgufValue::I32(-70000)));
    assert_eq!(g.get_f64("a.i64").unwrap(), Some(-((1u64 << 40) as f64)));
    assert_eq!(g.get_f64("a.f32").unwrap(), Some(0.5));
    assert_eq!(g.get_f64("a.f64").unwrap(), Some(-0.25));
    assert_eq!(g.get_bool("a.bool").unwrap(), Some(true));
    let strings = g.get_array("a.strings").unwrap().unwrap();
    assert_eq!(strings.as_strings().unwrap(), ["x", "", "Ġé"]);
    assert_eq!(
        g.get_array("a.ints").unwrap().unwrap().to_i64s(),
        Some(vec![1, -2, 3])
    );
    assert_eq!(
        g.get("a.nested"),
        Some(&GgufValue::Array(GgufArray::Array(vec![
            GgufArray::U8(vec![1, 2]),
            GgufArray::F32(vec![])
        ])))
    );
    assert_eq!(g.get("missing"), None);

    let w = g.tensor("w").unwrap();
    assert_eq!(w.dims, vec![3, 2]);
    assert_eq!(w.shape(), vec![2, 3]);
    assert_eq!(w.row_len(), 3);
    assert_eq!(w.ggml_type, GgmlType::F32);
    assert_eq!(w.n_elements, 6);
    assert_eq!(w.n_bytes, 24);
    assert_eq!(
        g.tensor_data(w).unwrap(),
        &f32_bytes(&[1., 2., 3., 4., 5., 6.])[..]
    );
    let v = g.tensor("v").unwrap();
    assert_eq!(
        v.offset, 32,
        "second tensor starts at the next aligned offset"
    );
    assert_eq!(
        g.tensor_data(v).unwrap(),
        &[0, 0x3c, 0, 0x40, 0, 0xc0, 0, 0]
    );
    assert_eq!(g.tensors().len(), 2);
}

#[test]
fn wrong_metadata_type_names_the_key() {
    let g = open_bytes(&sample().build()).unwrap();
    let err = g.get_u64("general.architecture").unwrap_err().to_string();
    assert!(
        err.contains("general.architecture") && err.contains("string"),
        "{err}"
    );
    assert!(
        g.get_u64("a.i8").is_err(),
        "negative is not an unsigned integer"
    );
    assert!(g.get_str("a.u8").is_err());
}

#[test]
fn custom_alignment_is_honoured() {
    let b = sample().kv("general.alignment", GgufValue::U32(64));
    let g = open_bytes(&b.build()).unwrap();
    assert_eq!(g.alignment(), 64);
    assert_eq!(g.tensor("v").unwrap().offset, 64);
    assert_eq!(g.tensor_data(g.tensor("v").unwrap()).unwrap()[1], 0x3c);
}

#[test]
fn every_truncation_is_a_clear_error() {
    let bytes = sample().build();
    for cut in 0..bytes.len() {
        let message = format_message(&bytes[..cut]);
        assert!(
            message.contains("truncated") || message.contains("impossible"),
            "cut at {cut}: {message}"
        );
    }
}

#[test]
fn bad_headers() {
    let mut bytes = sample().build();
    bytes[0] = b'X';
    assert!(format_message(&bytes).contains("not a GGUF file"));

    let mut bytes = sample().build();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(format_message(&bytes).contains("version 1"));
    bytes[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert!(format_message(&bytes).contains("unsupported GGUF version 9"));
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(format_message(&bytes).contains("big-endian"));
    assert!(format_message(b"").contains("truncated"));
}

#[test]
fn absurd_counts_and_lengths_fail_before_allocating() {
    let base = sample().build();
    // tensor count, metadata count
    for at in [8, 16] {
        let mut bytes = base.clone();
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            format_message(&bytes).contains("impossible"),
            "field at {at}"
        );
        bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(
            format_message(&bytes).contains("impossible"),
            "field at {at}"
        );
    }
    // first key length
    let mut bytes = base.clone();
    bytes[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert!(format_message(&bytes).contains("length of metadata key #0"));

    // array length: a string array whose count claims 2^60 entries
    let b = GgufBuilder::new().kv("big", GgufValue::Array(GgufArray::String(vec!["a".into()])));
    let mut bytes = b.build();
    let len_at = 24 + 8 + 3 + 4 + 4;
    assert_eq!(bytes[len_at..len_at + 8], 1u64.to_le_bytes());
    bytes[len_at..len_at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(format_message(&bytes).contains("length of metadata big"));
}

#[test]
fn corrupt_tensor_tables() {
    let t = |dims: &[u64], ty: u32, data: Vec<u8>| {
        GgufBuilder::new().tensor("t", dims, ty, data).build()
    };
    assert!(format_message(&t(&[4], 99, vec![0; 16])).contains("unknown GGML type id 99"));
    assert!(format_message(&t(&[16], 2, vec![0; 18])).contains("not a multiple of the Q4_0"));
    assert!(format_message(&t(&[0], 0, vec![])).contains("empty dimension"));
    assert!(format_message(&t(&[1, 1, 1, 1, 1], 0, vec![0; 4])).contains("5 dimensions"));
    assert!(format_message(&t(&[u64::MAX, 4], 0, vec![])).contains("impossible shape"));
    // Claims more data than the file holds.
    let message = format_message(&t(&[64], 0, vec![0; 16]));
    assert!(
        message.contains("runs past the end") && message.contains("tensor t"),
        "{message}"
    );
    // Misaligned offset.
    let mut bytes = t(&[4], 0, vec![0; 16]);
    let mut b2 = bytes.clone();
    let info_end = 24 + 8 + 1 + 4 + 8 + 4; // header, name "t", n_dims, dim, type
    b2[info_end..info_end + 8].copy_from_slice(&4u64.to_le_bytes());
    assert!(format_message(&b2).contains("not a multiple of the alignment"));
    bytes.truncate(bytes.len() - 1);
    assert!(format_message(&bytes).contains("truncated"));
}

#[test]
fn corrupt_metadata() {
    let dup = GgufBuilder::new()
        .kv("k", GgufValue::U8(1))
        .kv("k", GgufValue::U8(2));
    assert!(format_message(&dup.build()).contains("appears twice"));
    let bad_align = GgufBuilder::new().kv("general.alignment", GgufValue::U32(24));
    assert!(format_message(&bad_align.build()).contains("power of two"));
    let mut bytes = GgufBuilder::new().kv("k", GgufValue::U8(1)).build();
    bytes[24 + 8 + 1..24 + 8 + 1 + 4].copy_from_slice(&77u32.to_le_bytes());
    assert!(format_message(&bytes).contains("unknown value type 77"));
    let mut bytes = GgufBuilder::new().kv("k", str_val("ab")).build();
    // header 24, key "k" 9, type 4, length 8, then the string's bytes
    assert_eq!(&bytes[45..47], b"ab");
    bytes[45] = 0xff;
    assert!(format_message(&bytes).contains("not valid UTF-8"));
    // Arrays nested deeper than the cap.
    let mut nested = GgufArray::U8(vec![1]);
    for _ in 0..10 {
        nested = GgufArray::Array(vec![nested]);
    }
    let deep = GgufBuilder::new().kv("deep", GgufValue::Array(nested));
    assert!(format_message(&deep.build()).contains("nests arrays deeper"));
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = GgufFile::open("/nonexistent/dir/model.gguf").unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/dir/model.gguf"));
}
