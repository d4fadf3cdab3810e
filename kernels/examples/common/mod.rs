//! Shared by the timing examples (`gemm_probe`, `attn_time`): deterministic inputs and the
//! process's CPU time, which time slices lost to other processes on a shared machine do not
//! inflate.

/// Deterministic values in [-1, 1) (xorshift; only their finiteness matters for speed).
pub fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Nanoseconds this process's threads have run, summed from /proc/self/task/*/schedstat.
pub fn cpu_ns() -> u64 {
    let mut t = 0;
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            if let Ok(s) = std::fs::read_to_string(e.path().join("schedstat")) {
                t += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    t
}
