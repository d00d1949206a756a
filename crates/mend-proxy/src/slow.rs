//! How long a service's responses can legitimately take: a decaying maximum of the time backends took to
//! answer, which stretches the attempt timeout for services with slow endpoints.
//!
//! The attempt timeout (250 ms by default) is what makes a hung replica cost little: the waiting requests
//! go elsewhere. A service whose reports take two seconds would instead see every such request abandoned,
//! sent again to another replica (twice the work) and its replicas ejected for timing out. So the timeout
//! an attempt gets is at least twice the slowest answer seen lately; the maximum halves every
//! [`HALF_LIFE`], so one slow period does not slow failover for good.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::clock::Nanos;

/// How fast the remembered maximum fades.
pub(crate) const HALF_LIFE: Duration = Duration::from_secs(300);

/// The slowest answer lately: microseconds in the high 32 bits, the proxy clock in seconds when it was
/// seen in the low 32 (one atomic, so that a reader never sees one without the other).
#[derive(Debug, Default)]
pub(crate) struct SlowestAnswer(AtomicU64);

impl SlowestAnswer {
    /// Notes a backend's answer that took `latency`. Most answers are faster than the remembered
    /// maximum: one load and a comparison.
    pub(crate) fn observe(&self, latency: Duration, now: Nanos) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut current = self.0.load(Relaxed);
        loop {
            if micros <= decayed(current, now) {
                return;
            }
            match self.0.compare_exchange_weak(current, pack(micros, now), Relaxed, Relaxed) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The slowest answer lately, faded by its age.
    pub(crate) fn get(&self, now: Nanos) -> Duration {
        Duration::from_micros(u64::from(decayed(self.0.load(Relaxed), now)))
    }
}

fn pack(micros: u32, now: Nanos) -> u64 {
    let seconds = u32::try_from(now.0 / 1_000_000_000).unwrap_or(u32::MAX);
    (u64::from(micros) << 32) | u64::from(seconds)
}

/// The packed maximum, halved once per half-life since it was seen.
fn decayed(packed: u64, now: Nanos) -> u32 {
    let micros = (packed >> 32) as u32;
    let seen = packed & u64::from(u32::MAX);
    let age = (now.0 / 1_000_000_000).saturating_sub(seen);
    let halvings = age / HALF_LIFE.as_secs();
    if halvings >= 32 { 0 } else { micros >> halvings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Nanos {
        Nanos(seconds * 1_000_000_000)
    }

    #[test]
    fn keeps_the_slowest_answer_and_halves_it_every_half_life() {
        let slowest = SlowestAnswer::default();
        assert_eq!(slowest.get(at(0)), Duration::ZERO);
        slowest.observe(Duration::from_millis(5), at(1));
        slowest.observe(Duration::from_millis(800), at(2));
        slowest.observe(Duration::from_millis(20), at(3));
        assert_eq!(slowest.get(at(3)), Duration::from_millis(800));
        let half = HALF_LIFE.as_secs();
        assert_eq!(slowest.get(at(2 + half)), Duration::from_millis(400));
        assert_eq!(slowest.get(at(2 + 3 * half)), Duration::from_millis(100));
        // A slower answer than the faded maximum replaces it, and starts fading from then.
        slowest.observe(Duration::from_millis(150), at(2 + 3 * half));
        assert_eq!(slowest.get(at(2 + 3 * half)), Duration::from_millis(150));
        assert_eq!(slowest.get(at(2 + 40 * half)), Duration::ZERO);
    }

    #[test]
    fn latencies_beyond_the_field_saturate() {
        let slowest = SlowestAnswer::default();
        slowest.observe(Duration::from_secs(100_000), at(1));
        assert_eq!(slowest.get(at(1)), Duration::from_micros(u64::from(u32::MAX)));
    }
}
