//! [`EwmaDetector`]: robust exponentially weighted mean/variance z-score with a warm-up.

use serde::{Deserialize, Serialize};

use crate::point::{Detector, Point, Score, non_finite_score};
use crate::sensitivity::Sensitivity;
use crate::stats::{clip, log_tail_score, normal_tail};

/// Scores `|x − mean| / std` against exponentially weighted moments of the past.
///
/// The variance has a four times longer memory than the mean.
/// Robust: a residual beyond `clip_sigmas` standard deviations enters the moments clipped, so a
/// spike neither drags the mean nor inflates the variance much; a lasting shift still gets absorbed
/// within roughly `1/alpha` points. The score is the two-sided normal tail probability `p` of the
/// z-score mapped by `log(p)/log(1e-10)` (0.5 ≈ p of 1e-5, |z| ≈ 4.4). Points during the warm-up
/// score 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EwmaDetector {
    alpha: f64,
    clip_sigmas: f64,
    warm_up: u32,
    sensitivity: Sensitivity,
    mean: f64,
    var: f64,
    n_seen: u32,
}

impl EwmaDetector {
    /// Defaults: `alpha = 0.02` (≈ 50-point memory), clip at 3σ, 30-point warm-up.
    pub fn new(sensitivity: Sensitivity) -> Self {
        Self::with_params(0.02, 3.0, 30, sensitivity)
    }

    /// Explicit parameters; `alpha` is clamped into `(0, 1]`, `clip_sigmas` to at least 1.
    pub fn with_params(alpha: f64, clip_sigmas: f64, warm_up: u32, sensitivity: Sensitivity) -> Self {
        let alpha = if alpha.is_finite() { alpha.clamp(1e-6, 1.0) } else { 0.02 };
        let clip_sigmas = if clip_sigmas.is_finite() { clip_sigmas.max(1.0) } else { 3.0 };
        Self { alpha, clip_sigmas, warm_up, sensitivity, mean: 0.0, var: 0.0, n_seen: 0 }
    }

    /// The z-score of `value` against the current moments (0 before any data).
    fn z_score(&self, value: f64) -> f64 {
        let scale = self.var.sqrt().max(1e-9 * self.mean.abs()).max(f64::MIN_POSITIVE);
        (value - self.mean) / scale
    }
}

impl Detector for EwmaDetector {
    fn update(&mut self, point: Point) -> Score {
        if let Some(score) = non_finite_score(point.value) {
            return score;
        }
        let value = point.value;
        let raw = if self.n_seen >= self.warm_up && self.n_seen > 1 {
            let z = self.z_score(value).abs();
            log_tail_score(2.0 * normal_tail(z))
        } else {
            0.0
        };
        self.n_seen = self.n_seen.saturating_add(1);
        let rate = (1.0 / f64::from(self.n_seen)).max(self.alpha);
        let mut residual = value - self.mean;
        if self.n_seen > self.warm_up {
            let limit = self.clip_sigmas * self.var.sqrt();
            residual = clip(residual, limit);
        }
        // The variance learns four times slower than the mean: a short-memory variance is noisy,
        // and an underestimated σ turns ordinary tails into alarms.
        let var_rate = (1.0 / f64::from(self.n_seen)).max(self.alpha / 4.0);
        self.mean += rate * residual;
        self.var = (1.0 - var_rate) * (self.var + var_rate * residual * residual);
        if !(self.mean.is_finite() && self.var.is_finite()) {
            // Overflowed on extreme input: start over rather than stay poisoned.
            *self = Self::with_params(self.alpha, self.clip_sigmas, self.warm_up, self.sensitivity);
        }
        Score::new(self.sensitivity.apply(raw))
    }

    fn state_bytes(&self) -> usize {
        size_of_val(self)
    }
}
