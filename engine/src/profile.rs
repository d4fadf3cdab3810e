//! Op-level timing for `kiln bench --profile`: wall time and call count per op name, on
//! the calling thread's clock. Off by default; one relaxed atomic load per op when off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<Option<HashMap<&'static str, (Duration, u64)>>> = Mutex::new(None);

pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn reset() {
    if let Ok(mut t) = TOTALS.lock() {
        *t = None;
    }
}

/// Runs `f`, charging its time to `name` when profiling is on.
pub(crate) fn timed<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let spent = start.elapsed();
    if let Ok(mut t) = TOTALS.lock() {
        let entry = t.get_or_insert_with(HashMap::new).entry(name).or_default();
        entry.0 += spent;
        entry.1 += 1;
    }
    out
}

/// (op, total time, calls), slowest first.
pub fn report() -> Vec<(&'static str, Duration, u64)> {
    let mut rows: Vec<_> = TOTALS
        .lock()
        .ok()
        .and_then(|t| t.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, (d, n))| (k, d, n))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    rows
}
