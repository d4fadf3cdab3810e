use super::*;
use crate::Tensor;
use std::time::Duration;

/// A model whose logits make token (last + 1) % vocab the clear favourite, with a small
/// step delay so that requests overlap.
struct Counter {
    vocab: usize,
    delay: Duration,
}

impl StepModel for Counter {
    fn forward(&mut self, batch: &ForwardBatch) -> Result<Tensor, String> {
        std::thread::sleep(self.delay);
        let mut out = vec![0f32; batch.logits_rows.len() * self.vocab];
        for (i, &row) in batch.logits_rows.iter().enumerate() {
            let last = batch.tokens[row as usize] as usize;
            out[i * self.vocab + (last + 1) % self.vocab] = 10.0;
        }
        Tensor::from_vec(out, &[batch.logits_rows.len(), self.vocab]).map_err(|e| e.to_string())
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn max_context(&self) -> usize {
        64
    }
}

fn engine(num_blocks: usize, max_seqs: usize, max_queue: usize, delay_ms: u64) -> Engine {
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            max_batched_tokens: 32,
            max_seqs,
            num_blocks,
            block_size: 4,
            prefix_caching: true,
        },
        max_queue,
    };
    let model = Counter {
        vocab: 20,
        delay: Duration::from_millis(delay_ms),
    };
    Engine::start(Box::new(model), config).unwrap()
}

fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..Default::default()
    }
}

fn request(prompt: Vec<u32>, max_tokens: usize, stop: &[u32]) -> GenerateRequest {
    GenerateRequest {
        prompt,
        params: greedy(max_tokens),
        stop_ids: stop.to_vec(),
        processor: None,
    }
}

fn collect(h: &mut RequestHandle) -> (Vec<u32>, Option<Done>, Option<String>) {
    let mut toks = Vec::new();
    while let Some(e) = h.next_blocking() {
        match e {
            Event::Token(t) => toks.push(t),
            Event::Done(d) => return (toks, Some(d), None),
            Event::Error(m) => return (toks, None, Some(m)),
        }
    }
    (toks, None, None)
}

#[test]
fn tokens_stream_then_done_with_usage() {
    let e = engine(32, 4, 4, 0);
    let mut h = e.submit(request(vec![3, 4, 5], 4, &[])).unwrap();
    let (toks, done, err) = collect(&mut h);
    assert_eq!(err, None);
    assert_eq!(toks, vec![6, 7, 8, 9]);
    let d = done.unwrap();
    assert_eq!(
        (d.reason, d.prompt_tokens, d.completion_tokens),
        (FinishReason::Length, 3, 4)
    );
    e.shutdown();
}

#[test]
fn a_stop_id_ends_without_being_emitted() {
    let e = engine(32, 4, 4, 0);
    let mut h = e.submit(request(vec![1], 10, &[4])).unwrap();
    let (toks, done, _) = collect(&mut h);
    assert_eq!(toks, vec![2, 3]);
    assert_eq!(done.unwrap().reason, FinishReason::Stop);
}

#[test]
fn the_context_window_ends_generation() {
    let e = engine(64, 4, 4, 0);
    let mut h = e
        .submit(request((0..60).map(|t| t % 20).collect(), 100, &[]))
        .unwrap();
    let (toks, done, _) = collect(&mut h);
    // 60 prompt tokens + 4 generated = the 64-position window.
    assert_eq!(toks.len(), 4);
    assert_eq!(done.unwrap().reason, FinishReason::ContextFull);
}

#[test]
fn many_concurrent_requests_each_get_their_own_tokens() {
    let e = engine(40, 8, 64, 1);
    let mut handles: Vec<_> = (0..40u32)
        .map(|i| {
            e.submit(request(vec![i % 20, (i + 3) % 20], 6, &[]))
                .unwrap()
        })
        .collect();
    for (i, h) in handles.iter_mut().enumerate() {
        let (toks, done, err) = collect(h);
        assert_eq!(err, None, "request {i}");
        let first = (i as u32 + 4) % 20;
        let want: Vec<u32> = (0..6).map(|k| (first + k) % 20).collect();
        assert_eq!(toks, want, "request {i}");
        assert_eq!(done.unwrap().completion_tokens, 6);
    }
    let s = e.stats();
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.scheduler.kv_blocks_free, 40);
}

#[test]
fn a_full_queue_refuses_and_recovers() {
    let e = engine(64, 1, 1, 20);
    let _a = e.submit(request(vec![1], 50, &[])).unwrap();
    let _b = e.submit(request(vec![2], 50, &[])).unwrap();
    assert!(matches!(
        e.submit(request(vec![3], 1, &[])),
        Err(SubmitError::QueueFull(2))
    ));
    drop(_a);
    drop(_b);
    // Cancellation frees the slots (asynchronously).
    for _ in 0..200 {
        if e.stats().in_flight == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut h = e.submit(request(vec![3], 1, &[])).unwrap();
    assert_eq!(collect(&mut h).0, vec![4]);
}

#[test]
fn dropping_a_handle_cancels_and_frees_pages() {
    let e = engine(16, 4, 4, 5);
    let mut h = e.submit(request(vec![1, 2, 3, 4, 5], 50, &[])).unwrap();
    assert!(matches!(h.next_blocking(), Some(Event::Token(6))));
    drop(h);
    for _ in 0..200 {
        let s = e.stats();
        if s.in_flight == 0 && s.scheduler.kv_blocks_free == 16 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("cancelled request still holds pages: {:?}", e.stats());
}

#[test]
fn a_canceller_stops_a_request_from_another_thread() {
    let e = engine(16, 4, 4, 5);
    let mut h = e.submit(request(vec![1, 2, 3, 4, 5], 50, &[])).unwrap();
    let c = h.canceller();
    assert!(matches!(h.next_blocking(), Some(Event::Token(6))));
    std::thread::spawn(move || c.cancel()).join().unwrap();
    // The blocked owner's events end without a final event, well before 50 tokens.
    let mut n = 1;
    while let Some(ev) = h.next_blocking() {
        assert!(matches!(ev, Event::Token(_)), "no final event after cancel");
        n += 1;
    }
    assert!(n < 50, "{n} tokens after cancel");
    for _ in 0..200 {
        let s = e.stats();
        if s.in_flight == 0 && s.scheduler.kv_blocks_free == 16 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("cancelled request still holds pages: {:?}", e.stats());
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let e = engine(4, 4, 4, 0);
    let err = |r| match e.submit(r) {
        Err(SubmitError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {:?}", other.map(|h| h.id())),
    };
    assert!(err(request(vec![], 1, &[])).contains("empty"));
    assert!(err(request(vec![25], 1, &[])).contains("outside the vocabulary"));
    assert!(err(request(vec![1; 20], 1, &[])).contains("KV cache holds 16"));
    let mut r = request(vec![1], 1, &[]);
    r.params.temperature = 9.0;
    assert!(err(r).contains("temperature"));
}

#[test]
fn shutdown_drains_in_flight_requests() {
    let e = engine(32, 4, 4, 2);
    let mut h = e.submit(request(vec![1], 5, &[])).unwrap();
    let e2 = e.clone();
    let t = std::thread::spawn(move || e2.shutdown());
    let (toks, done, _) = collect(&mut h);
    t.join().unwrap();
    assert_eq!(toks.len(), 5);
    assert!(done.is_some());
    assert_eq!(
        e.submit(request(vec![1], 1, &[])).err(),
        Some(SubmitError::ShuttingDown)
    );
}
