//! A small deterministic random generator for augmenters (SplitMix64).

/// A SplitMix64 generator. The SDK seeds one per record from the run's seed and the
/// record's id, so an augmenter's output never depends on batch size or order.
pub struct Rng(u64);

impl Rng {
    /// A generator for one record of a run.
    pub fn for_record(seed: u64, record_id: &str) -> Self {
        // FNV-1a over the id, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in record_id.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let mut rng = Rng(seed ^ h);
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform index below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize % n.max(1)
    }
}
