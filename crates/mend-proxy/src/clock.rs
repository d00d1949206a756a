//! The proxy's monotonic clock: nanoseconds since the proxy started, cheap to store in atomics.
//!
//! Time is read through tokio (`tokio::time::Instant`) so that paused-time tests drive it too.

use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since the proxy's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Nanos(pub(crate) u64);

impl Nanos {
    pub(crate) fn saturating_add(self, duration: Duration) -> Self {
        Self(self.0.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)))
    }

    pub(crate) fn since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Reads the time relative to a fixed epoch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self { epoch: Instant::now() }
    }

    pub(crate) fn now(&self) -> Nanos {
        Nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The tokio instant of `nanos`, for timers.
    pub(crate) fn instant(&self, nanos: Nanos) -> Instant {
        self.epoch + Duration::from_nanos(nanos.0)
    }

    /// `instant` on this clock (saturating at the epoch).
    pub(crate) fn nanos_at(&self, instant: Instant) -> Nanos {
        Nanos(u64::try_from(instant.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX))
    }
}
