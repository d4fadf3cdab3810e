//! Text embeddings in the Workers AI run API: `{text: string | string[], pooling}` ->
//! `{shape, data, pooling}`.

use super::error::RunError;
use super::fields::Fields;
use crate::bert::BertModel;
use crate::catalog::Pooling;
use crate::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// Most texts in one request (Workers AI's limit).
pub const MAX_TEXTS: usize = 100;
/// Most tokens per text, [CLS] and [SEP] included.
pub const MAX_TOKENS: usize = 512;

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsInput {
    pub texts: Vec<String>,
    pub pooling: Option<Pooling>,
}

pub fn parse(input: &Value) -> Result<EmbeddingsInput, RunError> {
    let f = Fields::new(input)?;
    f.only(&["text", "pooling"])?;
    let texts = match f.get("text") {
        None => return Err(RunError::bad_input("required properties at '/' are 'text'")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(RunError::bad_input(format!(
                    "text[{i}]: expected a string, got {}",
                    super::fields::kind(other)
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(RunError::bad_input(format!(
                "text: expected a string or an array of strings, got {}",
                super::fields::kind(other)
            )))
        }
    };
    if texts.is_empty() {
        return Err(RunError::bad_input("text: must not be empty"));
    }
    if texts.len() > MAX_TEXTS {
        return Err(RunError::bad_input(format!(
            "text: at most {MAX_TEXTS} texts per request, got {}",
            texts.len()
        )));
    }
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        let at = if texts.len() == 1 {
            "text".to_string()
        } else {
            format!("text[{i}]")
        };
        return Err(RunError::bad_input(format!("{at}: must not be empty")));
    }
    let pooling = match f.get("pooling") {
        None => None,
        Some(Value::String(p)) if p == "mean" => Some(Pooling::Mean),
        Some(Value::String(p)) if p == "cls" => Some(Pooling::Cls),
        Some(other) => {
            return Err(RunError::bad_input(format!(
                "pooling: expected \"mean\" or \"cls\", got {other}"
            )))
        }
    };
    Ok(EmbeddingsInput { texts, pooling })
}

/// Tokenizes (with [CLS]/[SEP]), checks the 512-token limit naming the text, embeds the whole
/// batch varlen in one forward pass, and builds the output.
pub fn run(
    model: &BertModel,
    tokenizer: &Tokenizer,
    input: &EmbeddingsInput,
    default_pooling: Pooling,
) -> Result<Value, RunError> {
    let limit = MAX_TOKENS.min(model.config().max_position_embeddings);
    let mut batch = Vec::with_capacity(input.texts.len());
    for (i, t) in input.texts.iter().enumerate() {
        let ids = tokenizer.encode(t, true)?;
        if ids.len() > limit {
            let at = if input.texts.len() == 1 {
                "text".to_string()
            } else {
                format!("text[{i}]")
            };
            return Err(RunError::bad_input(format!(
                "{at}: {} tokens, more than the {limit} this model takes",
                ids.len()
            )));
        }
        batch.push(ids);
    }
    let pooling = input.pooling.unwrap_or(default_pooling);
    let vectors = model.embed(&batch, pooling)?;
    let tokens: usize = batch.iter().map(Vec::len).sum();
    Ok(output(&vectors, pooling, tokens))
}

pub fn output(vectors: &[Vec<f32>], pooling: Pooling, tokens: usize) -> Value {
    let dims = vectors.first().map_or(0, Vec::len);
    json!({
        "shape": [vectors.len(), dims],
        "data": vectors,
        "pooling": pooling.as_str(),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(v: Value) -> String {
        let e = parse(&v).unwrap_err();
        assert_eq!((e.code, e.status), (5006, 400));
        e.message
    }

    #[test]
    fn inputs_and_their_errors() {
        let ok = parse(&json!({"text": "hi"})).unwrap();
        assert_eq!(ok.texts, vec!["hi"]);
        assert_eq!(ok.pooling, None);
        let ok = parse(&json!({"text": ["a", "b"], "pooling": "cls"})).unwrap();
        assert_eq!((ok.texts.len(), ok.pooling), (2, Some(Pooling::Cls)));
        assert!(err(json!({})).contains("text"));
        assert!(err(json!({"text": []})).contains("must not be empty"));
        assert!(err(json!({"text": ""})).contains("text: must not be empty"));
        assert!(err(json!({"text": ["a", ""]})).contains("text[1]"));
        assert!(err(json!({"text": ["a", 3]})).contains("text[1]: expected a string"));
        assert!(err(json!({"text": 5})).contains("text: expected"));
        let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
        assert!(err(json!({"text": many})).contains("at most 100"));
        assert!(err(json!({"text": "a", "pooling": "max"})).contains("pooling"));
        assert!(err(json!({"text": "a", "poolin": "cls"})).contains("\"poolin\""));
    }

    #[test]
    fn output_shape() {
        let v = output(&[vec![0.6, 0.8], vec![1.0, 0.0]], Pooling::Mean, 7);
        assert_eq!(v["shape"], json!([2, 2]));
        assert_eq!(v["pooling"], json!("mean"));
        assert_eq!(v["data"][0], json!([0.6f32, 0.8f32]));
    }
}
