//! A `tokenizers::Tokenizer` rebuilt from the vocabulary GGUF keeps in `tokenizer.ggml.*`,
//! and the chat template from `tokenizer.chat_template`.
//!
//! Only byte-level BPE (`tokenizer.ggml.model == "gpt2"`) is supported. The pre-tokenizer
//! follows `tokenizer.ggml.pre`, with the same splits llama.cpp applies for that name
//! (which are the splits of the HF tokenizer.json the GGUF was converted from).

use std::str::FromStr;

use serde_json::{json, Map, Value};
use tokenizers::Tokenizer;

use super::reader::GgufFile;
use crate::error::{ModelError, Result};

/// llama.cpp `llama_token_type` values in `tokenizer.ggml.token_type`.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The Llama 3 split regex, as in Llama 3's tokenizer.json (llama.cpp "llama-bpe").
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Special token ids and BOS/EOS policy from `tokenizer.ggml.*`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GgufSpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End of turn (llama.cpp `eot_token_id`), a second stop token in chat models.
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (absent = false).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token` (absent = false).
    pub add_eos: bool,
}

pub fn special_tokens(gguf: &GgufFile) -> Result<GgufSpecialTokens> {
    let id = |key: &str| -> Result<Option<u32>> {
        let full = format!("tokenizer.ggml.{key}");
        match gguf.get_u64(&full)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| gguf.format_error(format!("metadata {full} = {v} is too large"))),
        }
    };
    Ok(GgufSpecialTokens {
        bos: id("bos_token_id")?,
        eos: id("eos_token_id")?,
        eot: id("eot_token_id")?,
        unk: id("unknown_token_id")?,
        pad: id("padding_token_id")?,
        add_bos: gguf
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false),
        add_eos: gguf
            .get_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false),
    })
}

/// The Jinja chat template stored in the file, if any.
pub fn chat_template(gguf: &GgufFile) -> Option<String> {
    gguf.get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Builds the tokenizer described by the GGUF metadata.
pub fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
    let err = |msg: String| ModelError::Tokenizer(format!("{}: {msg}", gguf.path().display()));
    let model = gguf
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| err("metadata tokenizer.ggml.model is missing".into()))?;
    if model != "gpt2" {
        return Err(err(format!(
            "tokenizer.ggml.model {model:?} is not supported (kiln builds byte-level BPE \
             \"gpt2\" vocabularies from GGUF; use the model's tokenizer.json instead)"
        )));
    }
    let tokens = gguf
        .get_array("tokenizer.ggml.tokens")?
        .and_then(|a| a.as_strings())
        .ok_or_else(|| err("tokenizer.ggml.tokens is missing or not a string array".into()))?;
    let merges = gguf
        .get_array("tokenizer.ggml.merges")?
        .and_then(|a| a.as_strings())
        .ok_or_else(|| err("tokenizer.ggml.merges is missing or not a string array".into()))?;
    let token_types = match gguf.get_array("tokenizer.ggml.token_type")? {
        None => vec![1; tokens.len()],
        Some(a) => a
            .to_i64s()
            .filter(|t| t.len() == tokens.len())
            .ok_or_else(|| {
                err(format!(
                    "tokenizer.ggml.token_type is not an integer array of {} entries",
                    tokens.len()
                ))
            })?,
    };
    let special = special_tokens(gguf)?;
    let name_of = |id: Option<u32>, what: &str| -> Result<Option<&str>> {
        match id {
            None => Ok(None),
            Some(id) => tokens
                .get(id as usize)
                .map(|t| Some(t.as_str()))
                .ok_or_else(|| err(format!("{what} id {id} is outside the vocabulary"))),
        }
    };
    let bos = name_of(special.bos, "bos")?;
    let eos = name_of(special.eos, "eos")?;
    let unk = name_of(special.unk, "unknown token")?;
    for (id, what) in [(special.eot, "eot"), (special.pad, "padding")] {
        name_of(id, what)?;
    }

    let pre = gguf.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let (pre_tokenizer, ignore_merges) = pre_tokenizer(pre).ok_or_else(|| {
        err(format!(
            "tokenizer.ggml.pre {pre:?} is not supported (kiln knows default, gpt2, smollm, \
             llama-bpe)"
        ))
    })?;

    let mut vocab = Map::with_capacity(tokens.len());
    for (id, token) in tokens.iter().enumerate() {
        // A repeated string keeps its first id, as llama.cpp's text-to-token map does.
        vocab.entry(token.clone()).or_insert(json!(id));
    }
    let merges = merges
        .iter()
        .map(|m| match m.split(' ').collect::<Vec<_>>().as_slice() {
            [a, b] => Ok(json!([a, b])),
            _ => Err(err(format!(
                "merge {m:?} is not two tokens separated by one space"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;

    let forced = [
        special.bos,
        special.eos,
        special.eot,
        special.unk,
        special.pad,
    ];
    let added_tokens: Vec<Value> = tokens
        .iter()
        .zip(&token_types)
        .enumerate()
        .filter_map(|(id, (content, &ty))| {
            // Control tokens are special (skipped when decoding with skip_special_tokens);
            // user-defined ones are ordinary text that must not be split, as in HF.
            let special = ty == TOKEN_TYPE_CONTROL || forced.contains(&Some(id as u32));
            (special || ty == TOKEN_TYPE_USER_DEFINED).then(|| {
                json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": special})
            })
        })
        .collect();

    let json = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor(&special, bos, eos),
        "decoder": byte_level(true, true, true),
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    });
    Tokenizer::from_str(&json.to_string()).map_err(|e| err(format!("building tokenizer: {e}")))
}

fn byte_level(add_prefix_space: bool, trim_offsets: bool, use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space,
           "trim_offsets": trim_offsets, "use_regex": use_regex})
}

/// (pre-tokenizer JSON, BPE ignore_merges) for a llama.cpp `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Option<(Value, bool)> {
    Some(match pre {
        // GPT-2's split, which ByteLevel applies itself when use_regex is set.
        "default" | "gpt2" => (byte_level(false, true, true), false),
        // The GPT-2 split after isolating every digit (llama.cpp's `\p{N}` first pass).
        "smollm" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(false, true, true),
            ]}),
            false,
        ),
        // Llama 3 looks whole words up in the vocabulary before merging (llama.cpp sets
        // ignore_merges for this pre-type, as Llama 3's tokenizer.json does).
        "llama-bpe" | "llama3" | "llama-v3" => (
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT},
                 "behavior": "Isolated", "invert": false},
                byte_level(false, true, false),
            ]}),
            true,
        ),
        _ => return None,
    })
}

/// Adds BOS/EOS only where the GGUF says so; otherwise ByteLevel offsets handling only.
fn post_processor(special: &GgufSpecialTokens, bos: Option<&str>, eos: Option<&str>) -> Value {
    let bos = bos.filter(|_| special.add_bos).zip(special.bos);
    let eos = eos.filter(|_| special.add_eos).zip(special.eos);
    if bos.is_none() && eos.is_none() {
        return byte_level(true, false, true);
    }
    let piece =
        |name: &str, type_id: u32| json!({"SpecialToken": {"id": name, "type_id": type_id}});
    let seq = |seq: &str, type_id: u32| json!({"Sequence": {"id": seq, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    for (list, parts) in [
        (&mut single, &[("A", 0)][..]),
        (&mut pair, &[("A", 0), ("B", 1)]),
    ] {
        for &(s, type_id) in parts {
            if let Some((name, _)) = bos {
                list.push(piece(name, type_id));
            }
            list.push(seq(s, type_id));
            if let Some((name, _)) = eos {
                list.push(piece(name, type_id));
            }
        }
    }
    let mut special_tokens = Map::new();
    for (name, id) in bos.into_iter().chain(eos) {
        special_tokens.insert(
            name.to_string(),
            json!({"id": name, "ids": [id], "tokens": [name]}),
        );
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair,
           "special_tokens": special_tokens})
}

#[cfg(test)]
#[path = "tokenizer_tests.rs"]
mod tests;
