use super::*;
use proptest::prelude::*;

fn config(num_blocks: usize, block_size: usize, budget: usize, max_seqs: usize) -> SchedulerConfig {
    SchedulerConfig {
        max_batched_tokens: budget,
        max_seqs,
        num_blocks,
        block_size,
        prefix_caching: true,
    }
}

/// Runs steps until every sequence has `want` generated tokens (or is cut by the cache),
/// appending a deterministic token per sample. Returns the generated tokens per sequence.
fn drive(
    s: &mut Scheduler,
    want: &HashMap<SeqId, usize>,
    max_steps: usize,
) -> HashMap<SeqId, Vec<u32>> {
    let mut out: HashMap<SeqId, Vec<u32>> = HashMap::new();
    for _ in 0..max_steps {
        if !s.has_work() {
            return out;
        }
        let step = s.schedule();
        assert!(step.num_tokens() <= s.config().max_batched_tokens);
        s.complete(&step);
        for id in &step.cache_full {
            s.finish(*id);
        }
        for sc in step.seqs.iter().filter(|sc| sc.sample) {
            if !s.contains(sc.seq) {
                continue;
            }
            let toks = s.tokens(sc.seq);
            let next = toks
                .iter()
                .fold(7u32, |h, &t| h.wrapping_mul(31).wrapping_add(t))
                % 97;
            s.append(sc.seq, next);
            let gen = out.entry(sc.seq).or_default();
            gen.push(next);
            if gen.len() >= want[&sc.seq] {
                s.finish(sc.seq);
            }
        }
        s.check().unwrap();
    }
    panic!("did not finish in {max_steps} steps: {:?}", s.stats());
}

#[test]
fn prefill_is_chunked_by_the_token_budget() {
    let mut s = Scheduler::new(config(64, 4, 8, 4));
    s.add(1, (0..20).collect()).unwrap();
    let step = s.schedule();
    assert_eq!(
        step.seqs,
        vec![ScheduledSeq {
            seq: 1,
            start: 0,
            len: 8,
            sample: false
        }]
    );
    s.complete(&step);
    let step = s.schedule();
    assert_eq!(step.seqs[0].start, 8);
    s.complete(&step);
    let step = s.schedule();
    assert_eq!(
        step.seqs,
        vec![ScheduledSeq {
            seq: 1,
            start: 16,
            len: 4,
            sample: true
        }]
    );
}

#[test]
fn decodes_come_before_new_prefills() {
    let mut s = Scheduler::new(config(64, 4, 6, 8));
    s.add(1, vec![1, 2, 3]).unwrap();
    let step = s.schedule();
    s.complete(&step);
    s.append(1, 9);
    s.add(2, (0..10).collect()).unwrap();
    let step = s.schedule();
    assert_eq!(
        step.seqs[0],
        ScheduledSeq {
            seq: 1,
            start: 3,
            len: 1,
            sample: true
        }
    );
    assert_eq!(
        step.seqs[1],
        ScheduledSeq {
            seq: 2,
            start: 0,
            len: 5,
            sample: false
        }
    );
}

#[test]
fn shared_prefix_skips_prefill() {
    let mut s = Scheduler::new(config(64, 4, 64, 8));
    let prompt: Vec<u32> = (0..13).collect();
    s.add(1, prompt.clone()).unwrap();
    let step = s.schedule();
    s.complete(&step);
    s.add(2, prompt).unwrap();
    s.append(1, 5);
    let step = s.schedule();
    let two = step.seqs.iter().find(|x| x.seq == 2).unwrap();
    assert_eq!((two.start, two.len), (12, 1));
    assert_eq!(s.stats().prefix_hit_tokens, 12);
}

#[test]
fn preemption_recomputes_and_everything_finishes() {
    // 6 pages of 4 tokens: three 8-token prompts fit, but not their growth.
    let mut s = Scheduler::new(config(6, 4, 64, 8));
    let mut want = HashMap::new();
    for id in 0..3u64 {
        s.add(id, (0..8).map(|t| t + id as u32 * 100).collect())
            .unwrap();
        want.insert(id, 6);
    }
    let out = drive(&mut s, &want, 200);
    assert_eq!(out.len(), 3);
    assert!(out.values().all(|g| g.len() == 6));
    assert!(s.stats().preemptions > 0);
    assert_eq!(s.kv().num_free_blocks(), 6);
}

#[test]
fn a_sequence_outgrowing_the_cache_is_cut_not_lost() {
    let mut s = Scheduler::new(config(2, 4, 64, 8));
    s.add(1, vec![1, 2, 3]).unwrap();
    let mut want = HashMap::new();
    want.insert(1, 100);
    let out = drive(&mut s, &want, 50);
    // 8 slots: 3 prompt tokens + 5 generated are computed... then the next write has no page.
    assert_eq!(out[&1].len(), 6);
    assert!(!s.has_work());
    assert_eq!(s.kv().num_free_blocks(), 2);
}

#[test]
fn admission_errors() {
    let mut s = Scheduler::new(config(2, 4, 64, 8));
    assert_eq!(s.add(1, vec![]), Err(AdmitError::EmptyPrompt));
    assert_eq!(
        s.add(1, vec![0; 9]),
        Err(AdmitError::TooLong {
            tokens: 9,
            capacity: 8
        })
    );
    s.add(1, vec![1]).unwrap();
    assert_eq!(s.add(1, vec![1]), Err(AdmitError::Duplicate(1)));
}

#[test]
fn cancel_frees_pages_at_once() {
    let mut s = Scheduler::new(config(8, 4, 64, 8));
    s.add(1, (0..10).collect()).unwrap();
    s.add(2, (0..10).collect()).unwrap();
    let step = s.schedule();
    assert_eq!(step.seqs.len(), 2);
    assert!(s.finish(2));
    s.complete(&step);
    s.check().unwrap();
    assert!(s.finish(1));
    assert!(!s.finish(1));
    assert_eq!(s.kv().num_free_blocks(), 8);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random mixes of prompt lengths, budgets and pool sizes: every admitted request
    /// finishes with all its tokens (possibly after preemption), random cancellations leak
    /// nothing, the books balance after every step, and every page returns at the end.
    #[test]
    fn random_request_mixes_all_finish(
        reqs in proptest::collection::vec((1usize..40, 1usize..12, 0u32..4, any::<bool>()), 1..24),
        num_blocks in 12usize..40, block_size in 1usize..8, budget in 1usize..64,
        max_seqs in 1usize..10, prefix in any::<bool>()
    ) {
        let mut cfg = config(num_blocks, block_size, budget, max_seqs);
        cfg.prefix_caching = prefix;
        let mut s = Scheduler::new(cfg);
        let cap = num_blocks * block_size;
        let mut want = HashMap::new();
        let mut cancel = Vec::new();
        for (i, &(len, gen, family, cancel_it)) in reqs.iter().enumerate() {
            let len = len.min(cap.saturating_sub(gen)).max(1);
            let prompt: Vec<u32> = (0..len as u32).map(|t| t * 3 + family).collect();
            s.add(i as u64, prompt).unwrap();
            want.insert(i as u64, gen.min(cap - len));
            if cancel_it { cancel.push(i as u64); }
        }
        let mut generated: HashMap<SeqId, Vec<u32>> = HashMap::new();
        for step_no in 0..5000 {
            if !s.has_work() { break; }
            let step = s.schedule();
            prop_assert!(step.cache_full.is_empty());
            prop_assert!(!step.is_empty(), "a step with work pending scheduled nothing");
            s.complete(&step);
            for sc in step.seqs.iter().filter(|sc| sc.sample) {
                if !s.contains(sc.seq) { continue; }
                let g = generated.entry(sc.seq).or_default();
                g.push(1);
                s.append(sc.seq, 1);
                if g.len() >= want[&sc.seq].max(1) { s.finish(sc.seq); }
            }
            if step_no == 0 {
                // Cancel some after the first step (some mid-prefill, some not yet started).
                for id in &cancel { s.finish(*id); }
            }
            s.check().map_err(TestCaseError::fail)?;
        }
        prop_assert!(!s.has_work());
        for (id, w) in &want {
            if cancel.contains(id) { continue; }
            prop_assert_eq!(generated.get(id).map_or(0, |g| g.len()), (*w).max(1));
        }
        prop_assert_eq!(s.kv().num_free_blocks(), num_blocks);
    }
}
