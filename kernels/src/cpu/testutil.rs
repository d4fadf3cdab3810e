//! Test helpers shared by the kernel tests: a seeded PRNG and error metrics.

/// splitmix64: tiny, seedable, good enough for test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        // 24 random bits -> [0, 1) exactly representable in f32.
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * u - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }
}

/// Normalised mean squared error of `got` against `want`; panics on any NaN in `got`.
pub fn nmse(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(!g.is_nan(), "NaN at {i}");
        err += (g as f64 - w) * (g as f64 - w);
        norm += w * w;
    }
    if norm == 0.0 {
        err
    } else {
        err / norm
    }
}

/// Asserts nmse(got, want) <= tol with the seed and case in the message.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, seed: u64, case: &str) {
    let e = nmse(got, want);
    assert!(e <= tol, "{case}: nmse {e:e} > {tol:e} (seed {seed:#x})");
}

/// Seed for a test: fixed, but overridable with KILN_TEST_SEED to explore.
pub fn seed(default: u64) -> u64 {
    std::env::var("KILN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
