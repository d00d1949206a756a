//! Restart back-off: how long to wait before the next restart of a replica that keeps failing.

use std::time::Duration;

use mend_config::Backoff;

/// Delay before restart number `consecutive_failures` (1 = the first failure after a stable run).
///
/// The first restart is immediate: a single crash should cost no waiting, like a bare respawn loop. From
/// the second on, the delay is `initial · 2^(n−2)`, spread by `jitter`, and never more than `max`.
/// `jitter_sample` in [-1, 1] is drawn by the caller, which keeps this function pure.
pub fn restart_delay(backoff: &Backoff, consecutive_failures: u32, jitter_sample: f64) -> Duration {
    if consecutive_failures <= 1 {
        return Duration::ZERO;
    }
    let exponent = (consecutive_failures - 2).min(32);
    let base = backoff.initial.saturating_mul(1_u32 << exponent.min(31)).min(backoff.max);
    let factor = 1.0 + backoff.jitter * jitter_sample.clamp(-1.0, 1.0);
    Duration::from_secs_f64((base.as_secs_f64() * factor).max(0.0)).min(backoff.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(10),
            jitter: 0.1,
        }
    }

    #[test]
    fn first_restart_is_immediate_then_doubles_up_to_max() {
        let delays: Vec<u128> = (1..=12).map(|n| restart_delay(&backoff(), n, 0.0).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        assert_eq!(restart_delay(&backoff(), u32::MAX, 0.0), Duration::from_secs(30));
    }

    #[test]
    fn jitter_spreads_delays_within_bounds() {
        assert_eq!(restart_delay(&backoff(), 2, 1.0), Duration::from_millis(110));
        assert_eq!(restart_delay(&backoff(), 2, -1.0), Duration::from_millis(90));
        assert_eq!(restart_delay(&backoff(), 2, 7.0), Duration::from_millis(110));
        // `max` is a ceiling, jitter included.
        assert_eq!(restart_delay(&backoff(), 20, 1.0), Duration::from_secs(30));
        assert_eq!(restart_delay(&backoff(), 20, -1.0), Duration::from_secs(27));
    }
}
