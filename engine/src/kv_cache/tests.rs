use super::*;
use proptest::prelude::*;

fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7 + seed) % 50).collect()
}

#[test]
fn slots_follow_the_page_table() {
    let mut m = KvCacheManager::new(8, 4, false);
    m.allocate_slots(1, 6, None).unwrap();
    m.allocate_slots(2, 3, None).unwrap();
    m.allocate_slots(1, 3, None).unwrap();
    let t1 = m.block_table(1).to_vec();
    assert_eq!(t1.len(), 3);
    let slots = m.slots(1, 0..9);
    for (pos, s) in slots.iter().enumerate() {
        assert_eq!(*s, t1[pos / 4] * 4 + (pos % 4) as u32);
    }
    m.check().unwrap();
}

#[test]
fn allocation_fails_without_side_effects_when_short() {
    let mut m = KvCacheManager::new(4, 4, false);
    m.allocate_slots(1, 12, None).unwrap();
    assert_eq!(m.num_free_blocks(), 1);
    assert_eq!(m.allocate_slots(2, 8, None), None);
    assert!(!m.contains(2));
    assert_eq!(m.num_free_blocks(), 1);
    m.check().unwrap();
}

#[test]
fn prefix_hit_reuses_full_pages_and_leaves_the_last_token() {
    let mut m = KvCacheManager::new(16, 4, true);
    let prompt = tokens(10, 3);
    m.allocate_slots(1, prompt.len(), None).unwrap();
    m.cache_full_blocks(1, &prompt, prompt.len());
    // Same 10 tokens: two full pages (8 tokens) are cached; the hit never covers all tokens.
    let hit = m.find_prefix(&prompt);
    assert_eq!(hit.num_tokens, 8);
    assert_eq!(hit.blocks, m.block_table(1)[..2].to_vec());
    // Exactly 8 tokens: only one page may be reused (the last token must be computed).
    assert_eq!(m.find_prefix(&prompt[..8]).num_tokens, 4);
    // A different second page stops the chain after the first.
    let mut other = prompt.clone();
    other[5] += 1;
    assert_eq!(m.find_prefix(&other).num_tokens, 4);

    m.allocate_slots(2, 2, Some(&hit)).unwrap();
    assert_eq!(m.len(2), 10);
    assert_eq!(m.block_table(2)[..2], m.block_table(1)[..2]);
    m.check().unwrap();
}

#[test]
fn freed_prefix_survives_until_evicted_lru() {
    let mut m = KvCacheManager::new(4, 2, true);
    let a = vec![1, 2, 3, 4, 5];
    m.allocate_slots(1, a.len(), None).unwrap();
    m.cache_full_blocks(1, &a, a.len());
    m.free(1);
    assert_eq!(m.num_free_blocks(), 4);
    assert_eq!(m.num_cached_free_blocks(), 2);
    let hit = m.find_prefix(&a);
    assert_eq!(hit.num_tokens, 4);
    // One new page: the unhashed tail page goes first, the cached prefix survives.
    m.allocate_slots(2, 1, None).unwrap();
    assert_eq!(m.find_prefix(&a).num_tokens, 4);
    // Needing every page evicts the prefix.
    m.allocate_slots(3, 6, None).unwrap();
    assert_eq!(m.find_prefix(&a).num_tokens, 0);
    m.check().unwrap();
}

#[test]
fn freed_pages_are_evicted_tail_first() {
    let mut m = KvCacheManager::new(3, 2, true);
    let a = vec![1, 2, 3, 4, 5, 6];
    m.allocate_slots(1, 6, None).unwrap();
    m.cache_full_blocks(1, &a, 6);
    m.free(1);
    m.allocate_slots(2, 2, None).unwrap();
    // The third page was evicted; the first two still chain.
    let hit = m.find_prefix(&[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(hit.num_tokens, 4);
}

#[test]
fn forked_partial_page_is_copied_on_write() {
    let mut m = KvCacheManager::new(8, 4, false);
    m.allocate_slots(1, 6, None).unwrap();
    assert!(m.fork(1, 2));
    assert!(!m.fork(1, 2));
    let shared = m.block_table(1)[1];
    let alloc = m.allocate_slots(2, 1, None).unwrap();
    let private = m.block_table(2)[1];
    assert_eq!(alloc.copies, vec![(shared, private)]);
    assert_ne!(shared, private);
    assert_eq!(m.block_table(2)[0], m.block_table(1)[0]);
    // The parent now owns its page alone: no copy.
    assert_eq!(m.allocate_slots(1, 1, None).unwrap().copies, vec![]);
    m.check().unwrap();
    m.free(1);
    m.free(2);
    assert_eq!(m.num_free_blocks(), 8);
}

#[test]
fn budget_to_blocks() {
    assert_eq!(blocks_for_budget(1 << 20, 4096), 256);
    assert_eq!(blocks_for_budget(4095, 4096), 0);
    assert_eq!(blocks_for_budget(1, 0), 0);
}

#[derive(Debug, Clone)]
enum Action {
    Start { prompt_len: usize, seed: u32 },
    Grow { pick: usize, n: usize },
    Fork { pick: usize },
    Free { pick: usize },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (1usize..40, 0u32..3).prop_map(|(prompt_len, seed)| Action::Start { prompt_len, seed }),
        (any::<usize>(), 1usize..6).prop_map(|(pick, n)| Action::Grow { pick, n }),
        any::<usize>().prop_map(|pick| Action::Fork { pick }),
        any::<usize>().prop_map(|pick| Action::Free { pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Random mixes of starts (with prefix hits), growth, forks and frees: no page is owned
    /// twice by a table, reference counts equal the tables' holdings, the free count is
    /// conserved, and after freeing everything every page is back.
    #[test]
    fn random_mixes_keep_the_books(actions in proptest::collection::vec(action(), 1..80),
                                   block_size in 1usize..6, prefix in any::<bool>()) {
        let num_blocks = 24;
        let mut m = KvCacheManager::new(num_blocks, block_size, prefix);
        let mut live: Vec<(SeqId, Vec<u32>)> = Vec::new();
        let mut next_id = 0;
        for a in actions {
            match a {
                Action::Start { prompt_len, seed } => {
                    let toks = tokens(prompt_len, seed);
                    let hit = m.find_prefix(&toks);
                    prop_assert!(hit.num_tokens < toks.len());
                    let free_before = m.num_free_blocks();
                    match m.allocate_slots(next_id, toks.len() - hit.num_tokens, Some(&hit)) {
                        Some(_) => {
                            m.cache_full_blocks(next_id, &toks, toks.len());
                            prop_assert_eq!(m.len(next_id), toks.len());
                            live.push((next_id, toks));
                        }
                        None => prop_assert_eq!(m.num_free_blocks(), free_before),
                    }
                    next_id += 1;
                }
                Action::Grow { pick, n } if !live.is_empty() => {
                    let i = pick % live.len();
                    let (id, toks) = &mut live[i];
                    if m.allocate_slots(*id, n, None).is_some() {
                        let base = toks.len() as u32;
                        toks.extend((0..n as u32).map(|k| (base + k) % 50));
                        m.cache_full_blocks(*id, toks, toks.len());
                    }
                }
                Action::Fork { pick } if !live.is_empty() => {
                    let (parent, toks) = live[pick % live.len()].clone();
                    prop_assert!(m.fork(parent, next_id));
                    live.push((next_id, toks));
                    next_id += 1;
                }
                Action::Free { pick } if !live.is_empty() => {
                    let (id, _) = live.swap_remove(pick % live.len());
                    m.free(id);
                }
                _ => {}
            }
            m.check().map_err(TestCaseError::fail)?;
        }
        for (id, _) in live {
            m.free(id);
        }
        m.check().map_err(TestCaseError::fail)?;
        prop_assert_eq!(m.num_free_blocks(), num_blocks);
    }
}
