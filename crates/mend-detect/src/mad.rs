//! [`MadDetector`]: rolling median / median absolute deviation over a small window.

use serde::{Deserialize, Serialize};

use crate::point::{Detector, Point, Score, non_finite_score};
use crate::sensitivity::Sensitivity;
use crate::stats::{SortedRing, log_tail_score, normal_tail};

/// Scores `|x − median| / (1.4826 · MAD)` over the previous `window` values.
///
/// The median and MAD ignore up to half the window being outliers, so bursts do not mask each
/// other. When more than half the window is identical (MAD = 0) the mean absolute deviation from
/// the median is the scale; if that is 0 too (a flat series) any different value scores 1.
/// The score maps the two-sided normal tail like [`crate::EwmaDetector`]; warm-up is `window / 2`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MadDetector {
    ring: SortedRing,
    warm_up: usize,
    sensitivity: Sensitivity,
}

impl MadDetector {
    /// Default: a 64-point window.
    pub fn new(sensitivity: Sensitivity) -> Self {
        Self::with_window(64, sensitivity)
    }

    /// A `window`-point window (at least 3).
    pub fn with_window(window: usize, sensitivity: Sensitivity) -> Self {
        let window = window.max(3);
        Self { ring: SortedRing::new(window), warm_up: window / 2, sensitivity }
    }

    fn raw_score(&self, value: f64) -> f64 {
        if self.ring.len() < self.warm_up.max(2) {
            return 0.0;
        }
        let median = self.ring.median();
        let deviation = (value - median).abs();
        if deviation == 0.0 {
            return 0.0;
        }
        let mut scale = 1.4826 * self.ring.mad(median);
        if scale <= 0.0 {
            scale = self.ring.mean_abs_deviation(median) * 1.2533;
        }
        if scale <= 0.0 {
            return 1.0;
        }
        log_tail_score(2.0 * normal_tail(deviation / scale))
    }
}

impl SortedRing {
    /// Mean absolute deviation of the window from `center`.
    pub(crate) fn mean_abs_deviation(&self, center: f64) -> f64 {
        let values = self.values();
        if values.is_empty() {
            return 0.0;
        }
        values.iter().map(|v| (v - center).abs()).sum::<f64>() / values.len() as f64
    }
}

impl Detector for MadDetector {
    fn update(&mut self, point: Point) -> Score {
        if let Some(score) = non_finite_score(point.value) {
            return score;
        }
        let raw = self.raw_score(point.value);
        self.ring.push(point.value);
        Score::new(self.sensitivity.apply(raw))
    }

    fn state_bytes(&self) -> usize {
        size_of_val(self) + self.ring.heap_bytes()
    }
}
