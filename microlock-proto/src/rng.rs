//! The machine's only randomness: SplitMix64 from the configured seed.

/// A SplitMix64 generator (Steele, Lea, Flood 2014): tiny, fast, good enough for jitter.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniformly random duration in `[0, max]`, at microsecond resolution.
    pub(crate) fn duration_up_to(&mut self, max: std::time::Duration) -> std::time::Duration {
        let micros = max.as_micros().min(u128::from(u64::MAX)) as u64;
        if micros == 0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_micros(self.next_u64() % (micros + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn same_seed_same_sequence_and_bounded() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let d = a.duration_up_to(Duration::from_millis(10));
            assert_eq!(d, b.duration_up_to(Duration::from_millis(10)));
            assert!(d <= Duration::from_millis(10));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
        assert_eq!(Rng::new(3).duration_up_to(Duration::ZERO), Duration::ZERO);
    }
}
