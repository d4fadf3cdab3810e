//! The exact bytes every token id stands for, and byte tries over them, built once per
//! tokenizer and shared by every constrained request.
//!
//! `decode([id])` is not good enough: byte-level BPE tokens may hold part of a UTF-8
//! character (decode turns it into U+FFFD) and SentencePiece decoders strip a leading space.
//! So the vocabulary strings are mapped back to bytes the way the decoder would: GPT-2's
//! byte-to-unicode table for byte-level BPE, `<0xNN>` and `▁` for SentencePiece.

use tokenizers::decoders::DecoderWrapper;

use crate::tokenizer::Tokenizer;

/// One trie node, in preorder: a node's subtree is `index+1 .. end`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TrieNode {
    pub(crate) byte: u8,
    /// Bytes from the root to this node, inclusive (>= 1).
    pub(crate) depth: u16,
    pub(crate) end: u32,
}

/// A byte trie over token texts, flattened in preorder so that a walk is a linear scan
/// that skips a refused subtree by jumping to its `end`.
#[derive(Debug, Default)]
pub(crate) struct TokenTrie {
    pub(crate) nodes: Vec<TrieNode>,
    /// Token ids ending at node `i`: `ids[starts[i]..starts[i + 1]]`.
    starts: Vec<u32>,
    ids: Vec<u32>,
    pub(crate) max_depth: usize,
    /// The depth-1 node of each first byte, if any token starts with it.
    roots: Vec<Option<u32>>,
}

impl TokenTrie {
    /// `ids` sorted by their texts.
    fn build(texts: &TokenTexts, ids: &[u32]) -> Self {
        let mut trie = TokenTrie::default();
        // path[k]: the node for the first k+1 bytes of the previous token.
        let mut path: Vec<usize> = Vec::new();
        let mut prev: &[u8] = &[];
        for &id in ids {
            let s = texts.text(id);
            let common = prev.iter().zip(s).take_while(|(a, b)| a == b).count();
            for &closed in &path[common..] {
                trie.nodes[closed].end = trie.nodes.len() as u32;
            }
            path.truncate(common);
            for (k, &byte) in s.iter().enumerate().skip(common) {
                path.push(trie.nodes.len());
                trie.starts.push(trie.ids.len() as u32);
                trie.nodes.push(TrieNode {
                    byte,
                    depth: (k + 1) as u16,
                    end: 0,
                });
            }
            // Sorted order puts a token right after the node spelling it is created (or
            // after its duplicate), so ids stay grouped by node.
            trie.ids.push(id);
            trie.max_depth = trie.max_depth.max(s.len());
            prev = s;
        }
        for &closed in &path {
            trie.nodes[closed].end = trie.nodes.len() as u32;
        }
        trie.starts.push(trie.ids.len() as u32);
        trie.roots = vec![None; 256];
        for (i, node) in trie.nodes.iter().enumerate() {
            if node.depth == 1 {
                trie.roots[node.byte as usize] = Some(i as u32);
            }
        }
        trie
    }

    /// The node of the one-byte prefix `b`, if any token starts with it.
    pub(crate) fn root(&self, b: u8) -> Option<usize> {
        self.roots
            .get(b as usize)
            .copied()
            .flatten()
            .map(|i| i as usize)
    }

    /// All token ids in the subtree of `node` (contiguous, as ids are stored in preorder).
    pub(crate) fn subtree_tokens(&self, node: usize) -> &[u32] {
        let end = self.nodes[node].end as usize;
        &self.ids[self.starts[node] as usize..self.starts[end] as usize]
    }

    #[inline]
    pub(crate) fn tokens(&self, node: usize) -> &[u32] {
        &self.ids[self.starts[node] as usize..self.starts[node + 1] as usize]
    }
}

/// Bytes of every token id, which ids are special, and the tries the mask walks.
#[derive(Debug)]
pub struct TokenTexts {
    data: Vec<u8>,
    offsets: Vec<u32>,
    special: Vec<bool>,
    /// Every token with text that is not special.
    pub(crate) all: TokenTrie,
    /// Tokens of `all` that are not plain string content.
    pub(crate) non_plain: TokenTrie,
    /// Bitset (64 ids a word) of tokens that are plain string content: valid UTF-8 with no
    /// quote, backslash or control byte, so a string accepts them whole, unchanged.
    pub(crate) plain: Vec<u64>,
}

impl TokenTexts {
    /// Texts of a tokenizer's whole vocabulary (added tokens included).
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Self {
        let inner = tokenizer.inner();
        let added = inner.get_added_tokens_decoder();
        let style = DecodeStyle::of(inner.get_decoder());
        let table = ByteLevelTable::new();
        let n = tokenizer.vocab_size();
        let mut data = Vec::with_capacity(n * 8);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        let mut special = vec![false; n];
        for id in 0..n as u32 {
            let is_special = added.get(&id).is_some_and(|t| t.special);
            special[id as usize] = is_special;
            match inner.id_to_token(id) {
                None => {}
                Some(piece) if is_special => data.extend_from_slice(piece.as_bytes()),
                Some(piece) => match style {
                    DecodeStyle::ByteLevel => table.push_bytes(&piece, &mut data),
                    DecodeStyle::SentencePiece { byte_fallback } => {
                        push_sentencepiece_bytes(&piece, byte_fallback, &mut data)
                    }
                    DecodeStyle::Decode => {
                        if let Ok(text) = inner.decode(&[id], false) {
                            data.extend_from_slice(text.as_bytes());
                        }
                    }
                },
            }
            offsets.push(data.len() as u32);
        }
        Self::assemble(data, offsets, special)
    }

    /// Texts given directly (tests, toy vocabularies): `pieces[id]` is the token's bytes.
    pub fn from_pieces(pieces: Vec<Vec<u8>>, special: &[u32]) -> Self {
        let mut data = Vec::with_capacity(pieces.iter().map(Vec::len).sum());
        let mut offsets = Vec::with_capacity(pieces.len() + 1);
        offsets.push(0);
        for p in &pieces {
            data.extend_from_slice(p);
            offsets.push(data.len() as u32);
        }
        let mut is_special = vec![false; pieces.len()];
        for &id in special {
            if let Some(s) = is_special.get_mut(id as usize) {
                *s = true;
            }
        }
        Self::assemble(data, offsets, is_special)
    }

    fn assemble(data: Vec<u8>, offsets: Vec<u32>, special: Vec<bool>) -> Self {
        let n = special.len();
        let mut texts = Self {
            data,
            offsets,
            special,
            all: TokenTrie::default(),
            non_plain: TokenTrie::default(),
            plain: vec![0; n.div_ceil(64)],
        };
        let mut usable: Vec<u32> = (0..n as u32)
            .filter(|&id| !texts.special[id as usize] && !texts.text(id).is_empty())
            .collect();
        usable.sort_unstable_by(|&a, &b| texts.text(a).cmp(texts.text(b)));
        let mut non_plain = Vec::new();
        for &id in &usable {
            if is_plain(texts.text(id)) {
                texts.plain[id as usize / 64] |= 1 << (id % 64);
            } else {
                non_plain.push(id);
            }
        }
        texts.non_plain = TokenTrie::build(&texts, &non_plain);
        texts.all = TokenTrie::build(&texts, &usable);
        texts
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.special.len()
    }

    pub fn is_empty(&self) -> bool {
        self.special.is_empty()
    }

    /// The bytes `id` decodes to (a special token's content), or None outside the vocabulary.
    pub fn bytes(&self, id: u32) -> Option<&[u8]> {
        ((id as usize) < self.len()).then(|| self.text(id))
    }

    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    fn text(&self, id: u32) -> &[u8] {
        &self.data[self.offsets[id as usize] as usize..self.offsets[id as usize + 1] as usize]
    }
}

fn is_plain(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
        && bytes.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

#[derive(Clone, Copy, Debug)]
enum DecodeStyle {
    ByteLevel,
    SentencePiece {
        byte_fallback: bool,
    },
    /// Anything else: whatever decoding one id gives.
    Decode,
}

impl DecodeStyle {
    fn of(decoder: Option<&DecoderWrapper>) -> Self {
        let parts: Vec<&DecoderWrapper> = match decoder {
            None => Vec::new(),
            Some(DecoderWrapper::Sequence(seq)) => seq.get_decoders().iter().collect(),
            Some(d) => vec![d],
        };
        if parts
            .iter()
            .any(|d| matches!(d, DecoderWrapper::ByteLevel(_)))
        {
            return Self::ByteLevel;
        }
        let byte_fallback = parts
            .iter()
            .any(|d| matches!(d, DecoderWrapper::ByteFallback(_)));
        let metaspace = parts
            .iter()
            .any(|d| matches!(d, DecoderWrapper::Metaspace(_) | DecoderWrapper::Replace(_)));
        if metaspace || byte_fallback {
            Self::SentencePiece { byte_fallback }
        } else {
            Self::Decode
        }
    }
}

/// `<0xNN>` is one raw byte (byte fallback); `▁` is a space.
fn push_sentencepiece_bytes(piece: &str, byte_fallback: bool, out: &mut Vec<u8>) {
    if byte_fallback {
        if let Some(hex) = piece.strip_prefix("<0x").and_then(|p| p.strip_suffix('>')) {
            if hex.len() == 2 {
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    return;
                }
            }
        }
    }
    for part in piece.split('\u{2581}').enumerate() {
        if part.0 > 0 {
            out.push(b' ');
        }
        out.extend_from_slice(part.1.as_bytes());
    }
}

/// GPT-2's byte-to-unicode map, inverted: printable Latin-1 bytes stand for themselves and
/// the other 68 bytes are U+0100.. in byte order.
struct ByteLevelTable {
    byte_of: [Option<u8>; 324],
}

impl ByteLevelTable {
    fn new() -> Self {
        let mut byte_of = [None; 324];
        let mut next = 256usize;
        for b in 0..=255u8 {
            let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
            if printable {
                byte_of[b as usize] = Some(b);
            } else {
                byte_of[next] = Some(b);
                next += 1;
            }
        }
        Self { byte_of }
    }

    /// As the ByteLevel decoder does: every char mapped, or (when one is not in the table,
    /// as in an added token) the piece's own UTF-8.
    fn push_bytes(&self, piece: &str, out: &mut Vec<u8>) {
        let start = out.len();
        for c in piece.chars() {
            match self.byte_of.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                None => {
                    out.truncate(start);
                    out.extend_from_slice(piece.as_bytes());
                    return;
                }
            }
        }
    }
}
