//! Jittered waits: [`Backoff`] between retries, and [`jitter`] before work that many
//! sidecars would otherwise start at the same instant (a catch-up after a NATS restart).
//!
//! `denylist-client` has the same `Backoff` for the CLI and the publisher; the sidecar does
//! not depend on the client crate (it would pull in the CLI's dependencies), so the few
//! lines live here too.

use std::time::Duration;

/// Exponential backoff with jitter, for retrying NATS work.
///
/// The wait before retry `n` is a random duration between half and all of
/// `min(max, initial × 2ⁿ)`. The random half spreads the retries of many clients that failed
/// together (every sidecar after a NATS restart) instead of sending them back in lockstep;
/// the fixed half makes sure the waits still grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first wait.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << retry.min(20))
            .min(self.max);
        ceiling / 2 + ceiling.mul_f64(random_fraction() / 2.0)
    }
}

/// A uniformly random duration in `[0, max]`: spreads work that a whole fleet would
/// otherwise start together.
pub fn jitter(max: Duration) -> Duration {
    max.mul_f64(random_fraction())
}

/// A random duration between half and all of `interval`: a periodic request that stays
/// at least as frequent as `interval` while the fleet's requests drift apart.
pub fn jittered_interval(interval: Duration) -> Duration {
    interval / 2 + interval.mul_f64(random_fraction() / 2.0)
}

/// A uniformly random number in [0, 1): jitter only, so the system RNG is plenty.
fn random_fraction() -> f64 {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // No randomness: the fixed half of the backoff still applies.
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_within_bounds() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for (retry, ceiling_ms) in [(0, 100), (1, 200), (4, 1600), (5, 2000), (40, 2000)] {
            let ceiling = Duration::from_millis(ceiling_ms);
            let delays: Vec<_> = (0..200).map(|_| backoff.delay(retry)).collect();
            assert!(
                delays.iter().all(|d| *d >= ceiling / 2 && *d <= ceiling),
                "retry {retry}: {delays:?}"
            );
            assert!(delays.iter().any(|d| *d != delays[0]), "retry {retry}");
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let max = Duration::from_secs(1);
        let draws: Vec<_> = (0..200).map(|_| jitter(max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        assert!(draws.iter().any(|d| *d != draws[0]));
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        let periods: Vec<_> = (0..200).map(|_| jittered_interval(max)).collect();
        assert!(periods.iter().all(|d| *d >= max / 2 && *d <= max));
    }
}
