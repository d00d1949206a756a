//! Sampling: a head decision at the start of a request (parent-based, else a ratio of trace ids) and a
//! tail decision at its end that also keeps every error and every slow request, whatever the head said.
//!
//! Both are pure: the decision is a function of the parent, the trace id, the outcome and the config.

use std::time::Duration;

use crate::context::{TraceId, TraceParent};

/// How a trace is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Share of new traces (no sampled parent) sampled at their start, 0..=1.
    pub ratio: f64,
    /// Requests at least this slow are kept whatever the head decision.
    pub slow: Duration,
    /// Whether responses with a 5xx status (or none at all) are kept whatever the head decision.
    pub keep_errors: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { ratio: 0.01, slow: Duration::from_millis(500), keep_errors: true }
    }
}

/// Why a span was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kept {
    /// The head decision sampled it (a sampled parent, or the ratio).
    Sampled,
    /// It ended in an error.
    Error,
    /// It was slow.
    Slow,
}

impl Sampling {
    /// The head decision: a parent's `sampled` flag when a parent arrives (parent-based), else the ratio
    /// applied to the trace id's random low bytes (so every hop that uses the same rule agrees).
    pub fn head(&self, parent: Option<&TraceParent>, trace_id: TraceId) -> bool {
        match parent {
            Some(parent) => parent.sampled,
            None => self.ratio_says(trace_id),
        }
    }

    fn ratio_says(&self, trace_id: TraceId) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        if self.ratio <= 0.0 {
            return false;
        }
        // `ratio` of the u64 range, as OpenTelemetry's TraceIdRatioBased does.
        let bound = (self.ratio * u64::MAX as f64) as u64;
        trace_id.low_u64() < bound
    }

    /// The tail decision, at the end of the span: whether to keep it, and why.
    pub fn keep(&self, head_sampled: bool, error: bool, duration: Duration) -> Option<Kept> {
        if head_sampled {
            Some(Kept::Sampled)
        } else if error && self.keep_errors {
            Some(Kept::Error)
        } else if duration >= self.slow {
            Some(Kept::Slow)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::SpanId;

    fn parent(sampled: bool) -> TraceParent {
        TraceParent { trace_id: TraceId([7; 16]), parent_id: SpanId([1; 8]), sampled }
    }

    #[test]
    fn a_parent_decides_the_head() {
        let never = Sampling { ratio: 0.0, ..Sampling::default() };
        let always = Sampling { ratio: 1.0, ..Sampling::default() };
        assert!(never.head(Some(&parent(true)), TraceId([7; 16])));
        assert!(!always.head(Some(&parent(false)), TraceId([7; 16])));
    }

    #[test]
    fn the_ratio_samples_about_its_share_of_new_traces() {
        let sampling = Sampling { ratio: 0.25, ..Sampling::default() };
        fastrand::seed(7);
        let n_sampled = (0..20_000).filter(|_| sampling.head(None, TraceId::random())).count();
        assert!((4_500..5_500).contains(&n_sampled), "{n_sampled} of 20000 at 25 %");
        let none = Sampling { ratio: 0.0, ..Sampling::default() };
        assert_eq!((0..1_000).filter(|_| none.head(None, TraceId::random())).count(), 0);
    }

    #[test]
    fn the_tail_keeps_errors_and_slow_requests_at_a_zero_ratio() {
        let sampling = Sampling { ratio: 0.0, slow: Duration::from_millis(100), keep_errors: true };
        let fast = Duration::from_millis(3);
        assert_eq!(sampling.keep(false, false, fast), None);
        assert_eq!(sampling.keep(false, true, fast), Some(Kept::Error));
        assert_eq!(sampling.keep(false, false, Duration::from_millis(100)), Some(Kept::Slow));
        assert_eq!(sampling.keep(true, false, fast), Some(Kept::Sampled));
        let errors_not_kept = Sampling { keep_errors: false, ..sampling };
        assert_eq!(errors_not_kept.keep(false, true, fast), None);
    }
}
