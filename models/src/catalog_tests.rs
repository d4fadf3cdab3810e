use super::*;

#[test]
fn names_are_unique_and_lowercase() {
    for (i, e) in all().iter().enumerate() {
        assert_eq!(e.name, e.name.to_ascii_lowercase());
        assert!(e.name.starts_with("@cf/") || e.name.starts_with("@hf/"));
        assert!(!e.description.is_empty(), "{}", e.name);
        assert!(
            all()[i + 1..].iter().all(|o| o.name != e.name),
            "{}",
            e.name
        );
    }
    assert_eq!(all().len(), 15);
}

#[test]
fn lookup_exact_case_insensitive_and_alias() {
    let e = lookup("@cf/meta/llama-3.1-8b-instruct").expect("llama 3.1");
    assert_eq!((e.task, e.arch), (Task::TextGeneration, Arch::Llama));
    assert_eq!(e.context_window, Some(7968));
    assert_eq!(e.hf_repo, Some("meta-llama/Llama-3.1-8B-Instruct"));
    assert!(std::ptr::eq(
        lookup(" @CF/Meta/Llama-3.1-8B-Instruct ").expect("case"),
        e
    ));
    let m = lookup("@hf/mistral/mistral-7b-instruct-v0.2").expect("alias");
    assert_eq!(m.name, "@cf/mistral/mistral-7b-instruct-v0.2");
    assert!(lookup("@cf/meta/llama-9").is_none());
    assert!(lookup("").is_none());
}

#[test]
fn defaults_per_task() {
    let name = |t| default_for(t).map(|e| e.name);
    assert_eq!(
        name(Task::TextGeneration),
        Some("@hf/huggingfacetb/smollm2-135m-instruct")
    );
    assert_eq!(
        name(Task::TextEmbeddings),
        Some("@hf/sentence-transformers/all-minilm-l6-v2")
    );
    assert_eq!(
        name(Task::SpeechRecognition),
        Some("@cf/openai/whisper-tiny-en")
    );
    assert_eq!(
        name(Task::ImageToText),
        Some("@cf/llava-hf/llava-1.5-7b-hf")
    );
    for t in Task::ALL {
        let e = default_for(t).expect("every task has a model");
        assert_eq!(e.task, t);
        assert!(all().iter().filter(|o| o.task == t && o.is_default).count() <= 1);
    }
}

#[test]
fn embedding_properties() {
    for (name, dims) in [
        ("@cf/baai/bge-small-en-v1.5", 384),
        ("@cf/baai/bge-base-en-v1.5", 768),
        ("@cf/baai/bge-large-en-v1.5", 1024),
        ("@hf/sentence-transformers/all-minilm-l6-v2", 384),
    ] {
        let e = lookup(name).expect(name);
        assert_eq!(e.task, Task::TextEmbeddings);
        assert_eq!(e.output_dimensions, Some(dims), "{name}");
        assert_eq!(e.max_input_tokens, Some(512), "{name}");
        assert_eq!(e.default_pooling, Some(Pooling::Mean), "{name}");
    }
    for e in all().iter().filter(|e| e.task != Task::TextEmbeddings) {
        assert_eq!((e.output_dimensions, e.default_pooling), (None, None));
    }
}

#[test]
fn llama_family_real_shapes() {
    let c = |n: &str| lookup(n).and_then(CatalogEntry::llama_config).expect(n);
    let l8 = c("@cf/meta/llama-3.1-8b-instruct");
    assert_eq!(
        (l8.vocab_size, l8.hidden_size, l8.intermediate_size),
        (128_256, 4096, 14_336)
    );
    assert_eq!(
        (
            l8.num_hidden_layers,
            l8.num_attention_heads,
            l8.num_key_value_heads,
            l8.head_dim
        ),
        (32, 32, 8, 128)
    );
    assert_eq!(
        (l8.rope_theta, l8.max_position_embeddings),
        (500_000.0, 131_072)
    );
    assert_eq!(
        l8.rope_scaling,
        Some(RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192
        })
    );
    let l70 = c("@cf/meta/llama-3.3-70b-instruct-fp8-fast");
    assert_eq!(
        (
            l70.hidden_size,
            l70.intermediate_size,
            l70.num_hidden_layers,
            l70.num_attention_heads,
            l70.num_key_value_heads
        ),
        (8192, 28_672, 80, 64, 8)
    );
    let m = c("@cf/mistral/mistral-7b-instruct-v0.2");
    assert_eq!(m.architecture, "MistralForCausalLM");
    assert_eq!(
        (
            m.vocab_size,
            m.rope_theta,
            m.max_position_embeddings,
            m.rope_scaling
        ),
        (32_000, 1e6, 32_768, None)
    );
    let s = c("@hf/huggingfacetb/smollm2-135m-instruct");
    assert_eq!(
        (
            s.vocab_size,
            s.hidden_size,
            s.intermediate_size,
            s.num_hidden_layers
        ),
        (49_152, 576, 1536, 30)
    );
    assert_eq!(
        (s.num_attention_heads, s.num_key_value_heads, s.head_dim),
        (9, 3, 64)
    );
    assert_eq!((s.rope_theta, s.max_position_embeddings), (100_000.0, 8192));
    assert!(s.tie_word_embeddings && !l8.tie_word_embeddings);
    // Every Llama config is self-consistent.
    for e in all() {
        if let Some(cfg) = e.llama_config() {
            assert_eq!(e.arch, Arch::Llama, "{}", e.name);
            let groups = cfg.num_attention_heads / cfg.num_key_value_heads;
            assert_eq!(groups * cfg.num_key_value_heads, cfg.num_attention_heads);
            assert_eq!(cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim);
        }
    }
}

#[test]
fn task_names_round_trip() {
    assert_eq!(
        Task::SpeechRecognition.to_string(),
        "Automatic Speech Recognition"
    );
    assert_eq!(Task::ImageToText.as_str(), "Image-to-Text");
    for t in Task::ALL {
        assert_eq!(Task::from_name(t.as_str()), Some(t));
    }
    assert_eq!(
        Task::from_name("text generation"),
        Some(Task::TextGeneration)
    );
    assert_eq!(Task::from_name("Summarization"), None);
}

#[test]
fn closest_names_suggest_typos() {
    assert_eq!(
        closest_names("@cf/meta/llama-3.1-8b-instruc", 1),
        ["@cf/meta/llama-3.1-8b-instruct"]
    );
    assert_eq!(
        closest_names("bge-small-en", 1),
        ["@cf/baai/bge-small-en-v1.5"]
    );
    assert_eq!(
        closest_names("llama-3.1-8b", 1),
        ["@cf/meta/llama-3.1-8b-instruct"]
    );
    assert_eq!(closest_names("x", 3).len(), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}
