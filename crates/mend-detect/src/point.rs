//! The detector vocabulary: a timestamped [`Point`] in, a [`Score`] in `[0, 1]` out, the [`Detector`] trait.

use serde::{Deserialize, Serialize};

/// One observation of a series: when (seconds since any fixed epoch) and what.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since an epoch shared by the whole series (e.g. Unix time); may be fractional.
    pub timestamp_secs: f64,
    /// The observed value.
    pub value: f64,
}

impl Point {
    /// A point at `timestamp_secs` with `value`.
    pub fn new(timestamp_secs: f64, value: f64) -> Self {
        Self { timestamp_secs, value }
    }
}

/// An anomaly score in `[0, 1]`: 0 = perfectly ordinary, 1 = as anomalous as the detector can say.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Score(f64);

impl Score {
    /// The lowest score.
    pub const ZERO: Self = Self(0.0);
    /// The highest score.
    pub const ONE: Self = Self(1.0);

    /// Clamps `value` into `[0, 1]`; NaN becomes 0.
    pub fn new(value: f64) -> Self {
        if value.is_nan() { Self::ZERO } else { Self(value.clamp(0.0, 1.0)) }
    }

    /// The score as a plain number in `[0, 1]`.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// A streaming anomaly detector over one series.
///
/// Contract: the score of a point depends only on that point and the points before it; a
/// non-finite value scores [`Score::ZERO`] (NaN) or [`Score::ONE`] (±∞) and leaves the state
/// untouched; finite input always yields a score in `[0, 1]`; nothing panics.
pub trait Detector {
    /// Feeds the next point and returns its anomaly score.
    fn update(&mut self, point: Point) -> Score;

    /// Bytes of state held for the series: `size_of_val(self)` plus owned heap allocations.
    fn state_bytes(&self) -> usize;
}

/// The score for a non-finite value, or `None` when the value is a usable number.
pub(crate) fn non_finite_score(value: f64) -> Option<Score> {
    if value.is_nan() {
        Some(Score::ZERO)
    } else if value.is_infinite() {
        Some(Score::ONE)
    } else {
        None
    }
}
