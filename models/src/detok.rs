//! Incremental detokenisation for streaming: turn generated ids into text pieces as they
//! arrive, such that the pieces concatenate to exactly `decode(all ids)`.
//!
//! Two things make the naive `decode([id])` per token wrong:
//! - byte-level BPE (and SentencePiece byte fallback) can split one multi-byte character
//!   across tokens; decoding half of it yields U+FFFD, which must never reach a client;
//! - SentencePiece decoders drop the leading space of the *first* token they see, so a token
//!   decoded alone loses the space it carries (`"▁Paris"` would become `"Paris"`).
//!
//! So, like HF's `decode_stream` and TGI, we decode a small window that starts one emitted
//! chunk back: `decode(window) - decode(window up to read_offset)` is the new
//! text, and the window's first token is stripped the same way in both decodes. A tail that
//! ends in U+FFFD is held back until the character completes (or `finish` flushes it).

use std::borrow::Borrow;
use std::sync::Arc;

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Streams text for one sequence. `T` is how the tokenizer is held: `Arc<Tokenizer>` (the
/// default, for the engine thread) or `&Tokenizer`.
pub struct IncrementalDecoder<T: Borrow<Tokenizer> = Arc<Tokenizer>> {
    tokenizer: T,
    skip_special_tokens: bool,
    /// The decode window: the last emitted chunk's ids, then those not yet emitted. Older
    /// ids are dropped, as they are never decoded again.
    ids: Vec<u32>,
    /// `ids[..read_offset]` are emitted (the window's prefix).
    read_offset: usize,
    /// `decode(ids[..read_offset])`, kept so that each push decodes once.
    prefix_text: String,
}

impl<T: Borrow<Tokenizer>> IncrementalDecoder<T> {
    /// A decoder for text that starts with the first pushed id.
    pub fn new(tokenizer: T, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            read_offset: 0,
            prefix_text: String::new(),
        }
    }

    /// A decoder that continues after `context` (e.g. the prompt): pushed ids are decoded as
    /// they read after it, so a SentencePiece first token keeps its leading space. Only the
    /// last few context ids are kept, as that is all the window needs.
    pub fn with_context(tokenizer: T, context: &[u32], skip_special_tokens: bool) -> Result<Self> {
        // A handful of ids is enough to get past any partial character and the first-token
        // space stripping (vLLM and TGI start their windows the same distance back).
        const CONTEXT_IDS: usize = 5;
        let tail = &context[context.len().saturating_sub(CONTEXT_IDS)..];
        let mut decoder = Self::new(tokenizer, skip_special_tokens);
        decoder.ids.extend_from_slice(tail);
        decoder.read_offset = tail.len();
        decoder.prefix_text = decoder.decode(0, tail.len())?;
        Ok(decoder)
    }

    /// Adds one id. Returns the text it completes, or `None` while it is held back (an
    /// incomplete character, or an id that decodes to nothing such as a skipped special).
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let text = match self.decode(0, self.ids.len()) {
            Ok(text) => text,
            Err(err) => {
                // A bad id is refused without poisoning the window for the ids after it.
                self.ids.pop();
                return Err(err);
            }
        };
        if text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        // A decoder whose output for a longer window does not extend the shorter one (rare:
        // byte-fallback runs with invalid bytes) holds the text back until `finish`, where it
        // is flushed; nothing already sent can be taken back.
        match text.strip_prefix(self.prefix_text.as_str()) {
            Some(new) if !new.is_empty() => {
                let new = new.to_string();
                self.advance()?;
                Ok(Some(new))
            }
            _ => Ok(None),
        }
    }

    /// Flushes whatever is held back (a dangling partial character decodes as U+FFFD, as
    /// `decode` of all ids would). The decoder can keep going afterwards.
    pub fn finish(&mut self) -> Result<String> {
        if self.read_offset == self.ids.len() {
            return Ok(String::new());
        }
        let text = self.decode(0, self.ids.len())?;
        let rest = match text.strip_prefix(self.prefix_text.as_str()) {
            Some(new) => new.to_string(),
            // Emit what differs from what was sent: the best that can be done once text is out.
            None => text[common_prefix_len(&text, &self.prefix_text)..].to_string(),
        };
        self.advance()?;
        Ok(rest)
    }

    /// Everything up to the last id is emitted: the window moves one chunk on.
    fn advance(&mut self) -> Result<()> {
        self.ids.drain(..self.read_offset);
        self.read_offset = self.ids.len();
        self.prefix_text = self.decode(0, self.read_offset)?;
        Ok(())
    }

    fn decode(&self, from: usize, to: usize) -> Result<String> {
        self.tokenizer
            .borrow()
            .decode(&self.ids[from..to], self.skip_special_tokens)
    }
}

/// Length in bytes of the longest common prefix of `a` and `b`, on a char boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests;
