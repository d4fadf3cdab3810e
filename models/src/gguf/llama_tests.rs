use super::*;
use crate::gguf::test_util::{f32_bytes, fixtures_dir, smollm2_gguf, str_val, GgufBuilder};
use crate::gguf::value::{GgufArray, GgufValue};

/// A 2-layer Llama-shaped file: hidden 8, 2 query heads and 1 kv head of dim 4, ffn 6,
/// vocab 5, all F32, each tensor filled with its element index plus `salt`.
fn tiny_llama(with_output: bool) -> GgufBuilder {
    let mut b = GgufBuilder::new()
        .kv("general.architecture", str_val("llama"))
        .kv("llama.context_length", GgufValue::U32(128))
        .kv("llama.embedding_length", GgufValue::U32(8))
        .kv("llama.block_count", GgufValue::U32(2))
        .kv("llama.feed_forward_length", GgufValue::U32(6))
        .kv("llama.attention.head_count", GgufValue::U32(2))
        .kv("llama.attention.head_count_kv", GgufValue::U32(1))
        .kv(
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(1e-5),
        )
        .kv("llama.rope.dimension_count", GgufValue::U32(4))
        .kv("tokenizer.ggml.bos_token_id", GgufValue::U32(1))
        .kv("tokenizer.ggml.eos_token_id", GgufValue::U32(2))
        .kv("tokenizer.ggml.eot_token_id", GgufValue::U32(3))
        .kv(
            "tokenizer.ggml.tokens",
            GgufValue::Array(GgufArray::String(
                ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
            )),
        );
    let add = |b: GgufBuilder, name: &str, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
        b.tensor(name, dims, 0, f32_bytes(&values))
    };
    b = add(b, "token_embd.weight", &[8, 5]);
    for l in 0..2 {
        b = add(b, &format!("blk.{l}.attn_norm.weight"), &[8]);
        b = add(b, &format!("blk.{l}.attn_q.weight"), &[8, 8]);
        b = add(b, &format!("blk.{l}.attn_k.weight"), &[8, 4]);
        b = add(b, &format!("blk.{l}.attn_v.weight"), &[8, 4]);
        b = add(b, &format!("blk.{l}.attn_output.weight"), &[8, 8]);
        b = add(b, &format!("blk.{l}.ffn_norm.weight"), &[8]);
        b = add(b, &format!("blk.{l}.ffn_gate.weight"), &[8, 6]);
        b = add(b, &format!("blk.{l}.ffn_up.weight"), &[8, 6]);
        b = add(b, &format!("blk.{l}.ffn_down.weight"), &[6, 8]);
    }
    b = add(b, "output_norm.weight", &[8]);
    if with_output {
        b = add(b, "output.weight", &[8, 5]);
    }
    b
}

fn open(b: &GgufBuilder) -> (tempfile::TempDir, GgufFile) {
    let dir = tempfile::tempdir().unwrap();
    let path = b.write(&dir, "tiny.gguf");
    let g = GgufFile::open(path).unwrap();
    (dir, g)
}

#[test]
fn names_map_both_ways() {
    let pairs = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
        (
            "blk.0.attn_q.weight",
            "model.layers.0.self_attn.q_proj.weight",
        ),
        (
            "blk.7.attn_k.weight",
            "model.layers.7.self_attn.k_proj.weight",
        ),
        (
            "blk.12.attn_v.weight",
            "model.layers.12.self_attn.v_proj.weight",
        ),
        (
            "blk.3.attn_output.weight",
            "model.layers.3.self_attn.o_proj.weight",
        ),
        (
            "blk.3.ffn_gate.weight",
            "model.layers.3.mlp.gate_proj.weight",
        ),
        ("blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"),
        (
            "blk.3.ffn_down.weight",
            "model.layers.3.mlp.down_proj.weight",
        ),
        (
            "blk.29.attn_norm.weight",
            "model.layers.29.input_layernorm.weight",
        ),
        (
            "blk.29.ffn_norm.weight",
            "model.layers.29.post_attention_layernorm.weight",
        ),
        ("blk.1.attn_q.bias", "model.layers.1.self_attn.q_proj.bias"),
    ];
    for (g, hf) in pairs {
        assert_eq!(gguf_to_hf_name(g).as_deref(), Some(hf));
        assert_eq!(hf_to_gguf_name(hf).as_deref(), Some(g));
    }
    for bad in [
        "blk.x.attn_q.weight",
        "blk.0.ffn_gate_exps.weight",
        "rope_freqs.weight",
        "",
    ] {
        assert_eq!(gguf_to_hf_name(bad), None, "{bad}");
    }
    assert_eq!(
        hf_to_gguf_name("model.layers.0.self_attn.rotary_emb.inv_freq"),
        None
    );
}

#[test]
fn unpermute_inverts_llama_cpp_permutation() {
    // Deterministic pseudo-random data; several head counts and widths.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for (n_head, head_dim, cols) in [(1, 2, 1), (3, 8, 5), (9, 64, 7), (4, 16, 1)] {
        let original: Vec<f32> = (0..n_head * head_dim * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32
            })
            .collect();
        let mut data = original.clone();
        permute_qk_rows(&mut data, n_head, cols).unwrap();
        if head_dim > 2 {
            assert_ne!(data, original, "the permutation moves rows");
        }
        unpermute_qk_rows(&mut data, n_head, cols).unwrap();
        assert_eq!(data, original);
    }
    assert!(
        unpermute_qk_rows(&mut [0.0; 6], 1, 2).is_err(),
        "odd head_dim"
    );
    assert!(
        unpermute_qk_rows(&mut [0.0; 8], 3, 2).is_err(),
        "rows not divisible"
    );
}

#[test]
fn permutation_matches_convert_hf_to_gguf() {
    // HF rows 0..8 of one head (head_dim 8): convert_hf_to_gguf's reshape(1, 2, 4, 1)
    // .swapaxes(1, 2) writes them in the order 0 4 1 5 2 6 3 7.
    let mut rows: Vec<f32> = (0..8).map(|r| r as f32).collect();
    permute_qk_rows(&mut rows, 1, 1).unwrap();
    assert_eq!(rows, [0., 4., 1., 5., 2., 6., 3., 7.]);
}

#[test]
fn config_from_synthetic_file() {
    let (_dir, g) = open(&tiny_llama(false));
    let c = llama_config(&g).unwrap();
    assert_eq!(c.architecture, "LlamaForCausalLM");
    assert_eq!(c.vocab_size, 5);
    assert_eq!(c.hidden_size, 8);
    assert_eq!(c.intermediate_size, 6);
    assert_eq!(c.num_hidden_layers, 2);
    assert_eq!(c.num_attention_heads, 2);
    assert_eq!(c.num_key_value_heads, 1);
    assert_eq!(c.head_dim, 4);
    assert_eq!(c.max_position_embeddings, 128);
    assert_eq!(c.rms_norm_eps, 1e-5f32 as f64);
    assert_eq!(c.rope_theta, 10000.0);
    assert_eq!(c.rope_scaling, None);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.bos_token_id, Some(1));
    assert_eq!(c.eos_token_ids, vec![2, 3]);

    let (_dir, g) = open(&tiny_llama(true));
    assert!(!llama_config(&g).unwrap().tie_word_embeddings);
}

#[test]
fn config_errors_name_the_problem() {
    let other = GgufBuilder::new().kv("general.architecture", str_val("qwen2"));
    let (_dir, g) = open(&other);
    assert!(matches!(
        llama_config(&g),
        Err(ModelError::UnsupportedArchitecture(a)) if a.contains("qwen2")
    ));
    let missing = GgufBuilder::new().kv("general.architecture", str_val("llama"));
    let (_dir, g) = open(&missing);
    let err = llama_config(&g).unwrap_err().to_string();
    assert!(err.contains("llama.embedding_length is missing"), "{err}");
    let yarn = tiny_llama(false).kv("llama.rope.scaling.type", str_val("yarn"));
    let (_dir, g) = open(&yarn);
    assert!(llama_config(&g).unwrap_err().to_string().contains("yarn"));
    let linear = tiny_llama(false)
        .kv("llama.rope.scaling.type", str_val("linear"))
        .kv("llama.rope.scaling.factor", GgufValue::F32(2.0));
    let (_dir, g) = open(&linear);
    let c = llama_config(&g).unwrap();
    assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 }));
}

#[test]
fn llama3_rope_factors_become_llama3_scaling() {
    // What convert_hf_to_gguf stores for Llama 3.1 (factor 8, theta 500000, head_dim 128).
    let factors: Vec<f32> = llama3_factors(500000.0, 128, 8.0, 1.0, 4.0, 8192.0)
        .iter()
        .map(|&f| f as f32)
        .collect();
    let got = llama3_from_factors(&factors, 500000.0, 128, 8192).unwrap();
    assert_eq!(
        got,
        Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        })
    );
    let mut odd = factors.clone();
    odd[40] *= 1.5;
    assert!(llama3_from_factors(&odd, 500000.0, 128, 8192).is_err());
    assert_eq!(
        llama3_from_factors(&[1.0; 64], 500000.0, 128, 8192),
        Ok(None)
    );

    // Through the file: the tensor is consumed by the config, not listed as a weight.
    // theta 1e8 puts the lower of the two frequencies in the fully scaled band.
    let expected: Vec<f32> = llama3_factors(1e8, 4, 8.0, 1.0, 4.0, 8192.0)
        .iter()
        .map(|&f| f as f32)
        .collect();
    assert_eq!(expected, [1.0, 8.0]);
    let b = tiny_llama(false)
        .kv("llama.rope.freq_base", GgufValue::F32(1e8))
        .tensor("rope_freqs.weight", &[2], 0, f32_bytes(&expected));
    let (_dir, g) = open(&b);
    assert!(matches!(
        llama_config(&g).unwrap().rope_scaling,
        Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0
    ));
    assert!(!llama_tensor_names(&g)
        .unwrap()
        .iter()
        .any(|n| n.contains("rope")));
}

#[test]
fn tensors_load_in_hf_layout() {
    let (_dir, g) = open(&tiny_llama(true));
    let names = llama_tensor_names(&g).unwrap();
    assert_eq!(names.len(), 1 + 2 * 9 + 2);
    assert!(names.contains(&"lm_head.weight".to_string()));
    assert!(names.contains(&"model.layers.1.mlp.down_proj.weight".to_string()));

    let (shape, values) = load_llama_tensor(&g, "model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(shape, vec![8, 6]);
    assert_eq!(values[..7], [0., 1., 2., 3., 4., 5., 6.]);

    // q_proj: 2 heads of 4 rows; GGUF row 2i+j holds HF row j*2+i, so HF row order is
    // GGUF rows 0 2 1 3 within each head.
    let (shape, q) = load_llama_tensor(&g, "model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(shape, vec![8, 8]);
    let first_of_rows: Vec<f32> = q.chunks(8).map(|r| r[0] / 8.0).collect();
    assert_eq!(first_of_rows, [0., 2., 1., 3., 4., 6., 5., 7.]);
    // k_proj uses the kv head count (1 head of 4 rows).
    let (shape, k) = load_llama_tensor(&g, "model.layers.0.self_attn.k_proj.weight").unwrap();
    assert_eq!(shape, vec![4, 8]);
    let first_of_rows: Vec<f32> = k.chunks(8).map(|r| r[0] / 8.0).collect();
    assert_eq!(first_of_rows, [0., 2., 1., 3.]);
    // v_proj is not permuted.
    let (_, v) = load_llama_tensor(&g, "model.layers.0.self_attn.v_proj.weight").unwrap();
    assert_eq!(v[8], 8.0);

    let (shape, norm) = load_llama_tensor(&g, "model.norm.weight").unwrap();
    assert_eq!((shape, norm.len()), (vec![8], 8));
    assert!(matches!(
        load_llama_tensor(&g, "model.layers.5.mlp.up_proj.weight"),
        Err(ModelError::NotFound(_))
    ));
}

#[test]
fn unsupported_tensor_type_is_named() {
    let b = tiny_llama(false).tensor("blk.2.attn_q.weight", &[256, 1], 16, vec![0; 66]);
    let (_dir, g) = open(&b);
    let err = load_llama_tensor(&g, "model.layers.2.self_attn.q_proj.weight").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("unsupported GGML type IQ2_XXS in tensor blk.2.attn_q.weight"),
        "{msg}"
    );
}

#[test]
fn smollm2_config_and_names() {
    let g = GgufFile::open(smollm2_gguf()).unwrap();
    let c = llama_config(&g).unwrap();
    assert_eq!(
        (
            c.vocab_size,
            c.hidden_size,
            c.intermediate_size,
            c.num_hidden_layers
        ),
        (49152, 576, 1536, 30)
    );
    assert_eq!(
        (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
        (9, 3, 64)
    );
    assert_eq!((c.max_position_embeddings, c.rope_theta), (8192, 100000.0));
    assert_eq!(c.rms_norm_eps, 1e-5f32 as f64);
    assert_eq!(c.rope_scaling, None);
    assert!(c.tie_word_embeddings);
    assert_eq!(
        (c.bos_token_id, c.eos_token_ids.clone()),
        (Some(1), vec![2])
    );
    let names = llama_tensor_names(&g).unwrap();
    assert_eq!(names.len(), 2 + 30 * 9);
    assert!(!names.iter().any(|n| n == "lm_head.weight"));
    // Every weight loads, one at a time, with an HF shape that matches its data.
    for name in &names {
        let (shape, values) = load_llama_tensor(&g, name).unwrap();
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        assert!(values.iter().all(|v| v.is_finite()), "{name}");
    }
    let (shape, _) = load_llama_tensor(&g, "model.layers.3.self_attn.q_proj.weight").unwrap();
    assert_eq!(shape, vec![576, 576]);
    let (shape, _) = load_llama_tensor(&g, "model.embed_tokens.weight").unwrap();
    assert_eq!(shape, vec![49152, 576]);
}

/// First rows of one tensor per GGML type in the real file, dequantized by gguf-py.
#[test]
fn smollm2_rows_match_gguf_py() {
    let g = GgufFile::open(smollm2_gguf()).unwrap();
    let dir = fixtures_dir().join("smollm2");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("dequant_rows.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("dequant_rows.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let entries = meta.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    for entry in entries {
        let name = entry["name"].as_str().unwrap();
        let want: Vec<f32> = st
            .tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let info = g.tensor(name).unwrap();
        assert_eq!(info.ggml_type.name(), entry["ggml_type"].as_str().unwrap());
        let shape: Vec<u64> = serde_json::from_value(entry["shape"].clone()).unwrap();
        assert_eq!(info.dims, shape);
        let hf_name = gguf_to_hf_name(name).unwrap();
        let (_, got) = load_llama_tensor(&g, &hf_name).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}[{i}]: {a} vs gguf-py {b}");
        }
    }
    // Q/K come back in HF order: re-permuting gives the stored rows exactly.
    let info = g.tensor("blk.0.attn_k.weight").unwrap();
    let raw = dequantize(info.ggml_type, g.tensor_data(info).unwrap(), info.row_len()).unwrap();
    let (shape, mut k) = load_llama_tensor(&g, "model.layers.0.self_attn.k_proj.weight").unwrap();
    assert_eq!(shape, vec![192, 576]);
    assert_ne!(k, raw);
    permute_qk_rows(&mut k, 3, 576).unwrap();
    assert_eq!(k, raw);
}
