//! A thin wrapper over the HF `tokenizers` crate: the model's own tokenizer.json is the single
//! source of truth for ids, so kiln never re-implements BPE. The wrapper exists to turn the
//! crate's boxed errors into [`ModelError`]s that say which tokenizer failed and why.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// A loaded tokenizer. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it came from, so that encode/decode errors can name it.
    source: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json`. A missing file is an `Io` error, an unparseable one a
    /// `Format` error; both name the path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut inner =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|err| ModelError::Format {
                path: PathBuf::from(path),
                message: format!("not a valid tokenizer.json: {err}"),
            })?;
        // Some checkpoints ship padding to a fixed length and silent truncation (e.g.
        // sentence-transformers' 128): kiln batches varlen and refuses over-long inputs
        // itself, so both are turned off.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|err| ModelError::Format {
                path: PathBuf::from(path),
                message: format!("tokenizer truncation: {err}"),
            })?;
        Ok(Self {
            inner,
            source: path.display().to_string(),
        })
    }

    /// Wraps a tokenizer built elsewhere (e.g. from GGUF metadata).
    pub fn from_hf(inner: tokenizers::Tokenizer) -> Self {
        Self {
            inner,
            source: "in-memory tokenizer".to_string(),
        }
    }

    /// Where this tokenizer was loaded from (a path, or "in-memory tokenizer").
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Token ids of `text`. `add_special_tokens` applies the tokenizer's post-processor
    /// (e.g. Llama's BOS); chat-templated prompts already contain BOS and pass `false`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|err| self.error("encode", err))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`. An id outside the vocabulary is an error rather than silently dropped,
    /// because a dropped id would make streamed text disagree with the ids reported.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let size = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(ModelError::Tokenizer(format!(
                "{}: token id {bad} is outside the vocabulary (size {size})",
                self.source
            )));
        }
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|err| self.error("decode", err))
    }

    /// Id of a token string (added tokens included), e.g. `"<|eot_id|>"`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token string of an id (the raw vocabulary form, e.g. `"Ġhello"` for byte-level BPE).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids, added tokens included: every valid id is below it.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped HF tokenizer, for what this wrapper does not expose (offsets, padding).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    fn error(&self, what: &str, err: tokenizers::Error) -> ModelError {
        ModelError::Tokenizer(format!("{}: {what} failed: {err}", self.source))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The tiny byte-level BPE tokenizer committed as a fixture. A missing fixture fails the
    /// test with the path, never skips it.
    pub(crate) fn tiny_llama3() -> Tokenizer {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/llama/tiny-llama3/tokenizer.json"
        );
        match Tokenizer::from_file(path) {
            Ok(tok) => tok,
            Err(err) => panic!("fixture missing or broken (generate the fixtures): {err}"),
        }
    }

    #[test]
    fn tiny_llama3_round_trips_text() {
        let tok = tiny_llama3();
        assert!(tok.vocab_size() > 256, "vocab {}", tok.vocab_size());
        let text = "Hello, world! naïve café — 你好 🙂";
        let ids = tok.encode(text, false).expect("encode");
        assert!(!ids.is_empty());
        assert_eq!(tok.decode(&ids, false).expect("decode"), text);
        for &id in &ids {
            let piece = tok.id_to_token(id).expect("id in vocab");
            assert_eq!(tok.token_to_id(&piece), Some(id));
        }
    }

    #[test]
    fn add_special_tokens_changes_only_the_ends() {
        let tok = tiny_llama3();
        let plain = tok.encode("hi there", false).expect("encode");
        let with = tok.encode("hi there", true).expect("encode");
        assert!(with.len() >= plain.len());
        // Whatever the post-processor adds, the body ids are unchanged and in order.
        assert!(with.windows(plain.len()).any(|w| w == plain.as_slice()));
    }

    #[test]
    fn out_of_vocab_id_is_an_error_naming_the_id() {
        let tok = tiny_llama3();
        let bad = tok.vocab_size() as u32 + 7;
        let err = tok.decode(&[bad], false).expect_err("must fail");
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Tokenizer::from_file("/nonexistent/kiln/tokenizer.json").expect_err("missing");
        assert!(matches!(err, ModelError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/kiln/tokenizer.json"));
    }

    #[test]
    fn garbage_file_is_a_format_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, b"{\"not\": \"a tokenizer\"}").expect("write");
        let err = Tokenizer::from_file(&path).expect_err("garbage");
        assert!(matches!(err, ModelError::Format { .. }), "{err:?}");
        assert!(err.to_string().contains("tokenizer.json"), "{err}");
    }
}
