//! [`Sensitivity`]: the validated `[0, 1]` knob that shifts how much a detector flags.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How eager a detector is to flag, in `[0, 1]`; 0.5 is the midpoint, 0.2 the default for live series.
///
/// Every detector must keep one promise: at any fixed threshold a higher sensitivity never flags
/// fewer points of the same series. The single detectors apply [`Sensitivity::apply`], the
/// monotone map `s ↦ s^γ` with `γ = 4^(1 − 2·sensitivity)` (γ = 1 at 0.5, ¼ at 1, 4 at 0), which
/// is increasing in the score and, for a fixed score, in the sensitivity. The default ensemble
/// acts on its evidence instead (see [`crate::EnsembleDetector`]); state-dependent alarm
/// suppression always runs on a sensitivity-independent score, for the same promise.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Sensitivity(f64);

/// A sensitivity outside `[0, 1]` or not a number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SensitivityError {
    /// The rejected value.
    pub value: f64,
}

impl fmt::Display for SensitivityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sensitivity must be a number in [0, 1], got {}", self.value)
    }
}

impl std::error::Error for SensitivityError {}

impl Sensitivity {
    /// The midpoint, 0.5: the default ensemble as tuned on NAB, whose cost profile forgives a false alarm
    /// for a tenth of a detection and rewards flagging even small new extremes.
    pub const DEFAULT: Self = Self(0.5);

    /// 0.2: alarms worth acting on, the default of a `[[detect]]` attachment in mend's configuration. Chosen
    /// on healthy services under a varying load with daily deploys (`false_alarms` example of `mend-nab`,
    /// figures in BENCHMARKS.md): on one three-replica service (13 series) it raised 1.5 false alarms a day,
    /// 0.5 raised 3.8.
    pub const ACTIONABLE: Self = Self(0.2);

    /// Validates `value` ∈ `[0, 1]`.
    pub fn new(value: f64) -> Result<Self, SensitivityError> {
        if (0.0..=1.0).contains(&value) { Ok(Self(value)) } else { Err(SensitivityError { value }) }
    }

    /// The sensitivity as a number in `[0, 1]`.
    pub fn value(self) -> f64 {
        self.0
    }

    /// Applies the sensitivity to a score in `[0, 1]` (identity at 0.5).
    pub fn apply(self, score: f64) -> f64 {
        if self.0 == 0.5 || score <= 0.0 || score >= 1.0 {
            return score.clamp(0.0, 1.0);
        }
        let gamma = 4f64.powf(1.0 - 2.0 * self.0);
        score.powf(gamma)
    }
}

impl Default for Sensitivity {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<f64> for Sensitivity {
    type Error = SensitivityError;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Sensitivity> for f64 {
    fn from(sensitivity: Sensitivity) -> Self {
        sensitivity.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_range() {
        for (value, ok) in [(0.0, true), (0.5, true), (1.0, true), (-0.01, false), (1.01, false), (f64::NAN, false)] {
            assert_eq!(Sensitivity::new(value).is_ok(), ok, "{value}");
        }
        assert_eq!(
            Sensitivity::new(2.0).map_err(|e| e.to_string()),
            Err("sensitivity must be a number in [0, 1], got 2".to_owned())
        );
    }

    #[test]
    fn apply_is_identity_at_default_and_monotone() {
        let levels = [0.0, 0.25, 0.5, 0.75, 1.0].map(|s| Sensitivity::new(s).expect("in range"));
        for score in [0.0, 0.1, 0.3, 0.5, 0.9, 1.0] {
            assert_eq!(Sensitivity::DEFAULT.apply(score), score);
            for pair in levels.windows(2) {
                assert!(pair[0].apply(score) <= pair[1].apply(score), "score {score}");
            }
        }
    }

    #[test]
    fn serde_rejects_out_of_range() {
        assert!(serde_json::from_str::<Sensitivity>("0.7").is_ok());
        assert!(serde_json::from_str::<Sensitivity>("1.7").is_err());
    }
}
