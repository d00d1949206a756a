//! [`CusumDetector`]: two-sided CUSUM change-point detection on standardised values.

use serde::{Deserialize, Serialize};

use crate::point::{Detector, Point, Score, non_finite_score};
use crate::sensitivity::Sensitivity;
use crate::stats::{clip, log_tail_score};

/// Page's two-sided CUSUM on `z = (x − mean) / std`, with reference drift `k` (in σ).
///
/// The in-control mean and standard deviation are slow exponentially weighted moments (`alpha`),
/// updated with residuals clipped at 3σ so the level they describe moves only slowly. The
/// statistics `S⁺ = max(0, S⁺ + z − k)` and `S⁻ = max(0, S⁻ − z − k)` accumulate evidence of a
/// sustained shift; under no change `P(S > h) ≈ e^(−2kh)`, which is the tail probability mapped to
/// the score (0.5 at `S ≈ 11.5` for `k = 0.5`). When the score reaches 0.5 a change is declared:
/// the statistics restart and the baseline jumps to the recent level, so one shift alarms once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CusumDetector {
    drift: f64,
    alpha: f64,
    warm_up: u32,
    sensitivity: Sensitivity,
    mean: f64,
    var: f64,
    recent_mean: f64,
    upper: f64,
    lower: f64,
    n_seen: u32,
}

impl CusumDetector {
    /// Defaults: `k = 0.5`, `alpha = 0.01`, 50-point warm-up.
    pub fn new(sensitivity: Sensitivity) -> Self {
        Self::with_params(0.5, 0.01, 50, sensitivity)
    }

    /// Explicit parameters (`drift` > 0 in σ, `alpha` in (0, 1]).
    pub fn with_params(drift: f64, alpha: f64, warm_up: u32, sensitivity: Sensitivity) -> Self {
        Self {
            drift: if drift.is_finite() { drift.max(0.01) } else { 0.5 },
            alpha: if alpha.is_finite() { alpha.clamp(1e-6, 1.0) } else { 0.01 },
            warm_up: warm_up.max(2),
            sensitivity,
            mean: 0.0,
            var: 0.0,
            recent_mean: 0.0,
            upper: 0.0,
            lower: 0.0,
            n_seen: 0,
        }
    }
}

impl Detector for CusumDetector {
    fn update(&mut self, point: Point) -> Score {
        if let Some(score) = non_finite_score(point.value) {
            return score;
        }
        let value = point.value;
        let std = self.var.sqrt();
        let mut raw = 0.0;
        if self.n_seen >= self.warm_up {
            let scale = std.max(1e-9 * self.mean.abs()).max(f64::MIN_POSITIVE);
            // Cap a single point's contribution so one spike cannot look like a level shift.
            let z = ((value - self.mean) / scale).clamp(-4.0, 4.0);
            self.upper = (self.upper + z - self.drift).max(0.0);
            self.lower = (self.lower - z - self.drift).max(0.0);
            let evidence = self.upper.max(self.lower);
            raw = log_tail_score((-2.0 * self.drift * evidence).exp());
            if raw >= 0.5 {
                self.upper = 0.0;
                self.lower = 0.0;
                self.mean = self.recent_mean;
            }
        }
        self.n_seen = self.n_seen.saturating_add(1);
        let rate = (1.0 / f64::from(self.n_seen)).max(self.alpha);
        let mut residual = value - self.mean;
        if self.n_seen > self.warm_up {
            residual = clip(residual, 3.0 * std);
        }
        self.mean += rate * residual;
        self.var = (1.0 - rate) * (self.var + rate * residual * residual);
        if !(self.mean.is_finite() && self.var.is_finite() && self.recent_mean.is_finite()) {
            // Overflowed on extreme input: start over from this value rather than stay poisoned.
            *self = Self::with_params(self.drift, self.alpha, self.warm_up, self.sensitivity);
        }
        let recent_rate = (1.0 / f64::from(self.n_seen)).max(0.1);
        self.recent_mean += recent_rate * (value - self.recent_mean);
        Score::new(self.sensitivity.apply(raw))
    }

    fn state_bytes(&self) -> usize {
        size_of_val(self)
    }
}
