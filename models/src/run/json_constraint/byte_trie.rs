//! A small byte trie for the strings a schema names: object keys (value = property index,
//! with a bitmask of the properties below each node so that a key prefix whose keys are all
//! used can be refused) and enum literals (value = literal index).

#[derive(Clone, Debug)]
struct TrieNode {
    /// Sorted by byte; schemas have few keys, so a linear scan beats a map.
    children: Vec<(u8, u32)>,
    terminal: Option<u32>,
    /// Bit `i` is set when property `i` ends at or below this node (keys tries only).
    below: u128,
}

#[derive(Clone, Debug)]
pub(crate) struct ByteTrie {
    nodes: Vec<TrieNode>,
}

pub(crate) const ROOT: u32 = 0;

impl ByteTrie {
    pub(crate) fn new() -> Self {
        Self {
            nodes: vec![TrieNode {
                children: Vec::new(),
                terminal: None,
                below: 0,
            }],
        }
    }

    /// Adds `bytes` with `value`; `bit` (a property mask) is or-ed into every node on the
    /// path. Returns false when `bytes` was already present.
    pub(crate) fn insert(&mut self, bytes: &[u8], value: u32, bit: u128) -> bool {
        let mut node = ROOT;
        self.nodes[node as usize].below |= bit;
        for &b in bytes {
            node = match self.child(node, b) {
                Some(c) => c,
                None => {
                    let c = self.nodes.len() as u32;
                    self.nodes.push(TrieNode {
                        children: Vec::new(),
                        terminal: None,
                        below: 0,
                    });
                    let children = &mut self.nodes[node as usize].children;
                    let at = children.partition_point(|&(x, _)| x < b);
                    children.insert(at, (b, c));
                    c
                }
            };
            self.nodes[node as usize].below |= bit;
        }
        let slot = &mut self.nodes[node as usize].terminal;
        if slot.is_some() {
            return false;
        }
        *slot = Some(value);
        true
    }

    #[inline]
    pub(crate) fn child(&self, node: u32, b: u8) -> Option<u32> {
        self.nodes[node as usize]
            .children
            .iter()
            .find(|&&(x, _)| x == b)
            .map(|&(_, c)| c)
    }

    /// (byte, child) pairs of `node`, sorted by byte.
    pub(crate) fn children(&self, node: u32) -> &[(u8, u32)] {
        &self.nodes[node as usize].children
    }

    #[inline]
    pub(crate) fn terminal(&self, node: u32) -> Option<u32> {
        self.nodes[node as usize].terminal
    }

    #[inline]
    pub(crate) fn is_leaf(&self, node: u32) -> bool {
        self.nodes[node as usize].children.is_empty()
    }

    #[inline]
    pub(crate) fn below(&self, node: u32) -> u128 {
        self.nodes[node as usize].below
    }
}
