//! Restart intensity in the Erlang/OTP sense: too many restarts within a window means give up.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mend_config::RestartLimit;

/// Remembers recent restarts of one replica.
#[derive(Debug, Clone, Default)]
pub struct RestartIntensity {
    recent: VecDeque<Instant>,
}

impl RestartIntensity {
    /// Asks for one more restart at `now`: true (and recorded) when it stays within `limit`, false when
    /// it would be restart number `max_restarts + 1` within the window, i.e. time to give up.
    pub fn try_restart(&mut self, limit: &RestartLimit, now: Instant) -> bool {
        while self.recent.front().is_some_and(|&at| now.saturating_duration_since(at) >= limit.within) {
            self.recent.pop_front();
        }
        if self.recent.len() >= limit.max_restarts as usize {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// Restarts counted in the window ending at `now`.
    pub fn count(&self, window: Duration, now: Instant) -> usize {
        self.recent.iter().filter(|&&at| now.saturating_duration_since(at) < window).count()
    }

    /// Forgets all restarts (an operator started the replica again).
    pub fn reset(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests build instants from a real starting point.
mod tests {
    use super::*;

    #[test]
    fn gives_up_on_the_restart_beyond_the_limit() {
        let limit = RestartLimit { max_restarts: 3, within: Duration::from_secs(10) };
        let start = Instant::now();
        let mut intensity = RestartIntensity::default();
        let at = |secs| start + Duration::from_secs(secs);
        assert!(intensity.try_restart(&limit, at(0)));
        assert!(intensity.try_restart(&limit, at(1)));
        assert!(intensity.try_restart(&limit, at(2)));
        assert!(!intensity.try_restart(&limit, at(3)));
        // The window slides: the restart at 0 s no longer counts at 10 s.
        assert!(intensity.try_restart(&limit, at(10)));
        assert_eq!(intensity.count(limit.within, at(10)), 3);
        intensity.reset();
        assert_eq!(intensity.count(limit.within, at(10)), 0);
    }
}
