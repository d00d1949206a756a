//! [`AnomalyLikelihood`]: Numenta-style calibration of raw anomaly scores into a tail probability.

use serde::{Deserialize, Serialize};

use crate::stats::{Ewm, log_tail_score, normal_tail};

/// Turns a stream of raw scores into "how unusual is the recent raw score for this series".
///
/// Keeps the mean of the last `short_window` raw scores and a long, exponentially weighted
/// Gaussian model (`long_alpha`) of that mean's history. The output is the upper normal tail
/// probability `p` of the current short mean under the long model, as Numenta's log-likelihood
/// `log(p + 1e-10) / log(1e-10)` in `[0, 1]`. Floors on the modelled mean and deviation stop a
/// series whose raw scores were nearly constant from treating every wobble as extreme. During
/// the first `learning` points the output is 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyLikelihood {
    recent: Vec<f32>,
    recent_idx: usize,
    recent_sum: f64,
    long: Ewm,
    learning: u32,
    min_mean: f64,
    min_std: f64,
    n_seen: u32,
}

impl AnomalyLikelihood {
    /// A likelihood over `short_window` raw scores, long memory `long_alpha`, output after `learning` points.
    pub fn new(short_window: usize, long_alpha: f64, learning: u32, min_mean: f64, min_std: f64) -> Self {
        let short_window = short_window.max(1);
        Self {
            recent: vec![0.0; short_window],
            recent_idx: 0,
            recent_sum: 0.0,
            long: Ewm::new(long_alpha),
            learning,
            min_mean,
            min_std,
            n_seen: 0,
        }
    }

    /// Feeds a raw score in `[0, 1]` and returns the calibrated score in `[0, 1]`.
    pub fn update(&mut self, raw: f64) -> f64 {
        let raw = if raw.is_finite() { raw.clamp(0.0, 1.0) } else { 0.0 };
        let stored = raw as f32;
        let slot = &mut self.recent[self.recent_idx];
        self.recent_sum += f64::from(stored) - f64::from(*slot);
        *slot = stored;
        self.recent_idx = (self.recent_idx + 1) % self.recent.len();
        if self.recent_idx == 0 {
            // Re-sum once per lap so rounding in the running sum cannot accumulate.
            self.recent_sum = self.recent.iter().map(|&v| f64::from(v)).sum();
        }
        self.n_seen = self.n_seen.saturating_add(1);
        let filled = (self.n_seen as usize).min(self.recent.len());
        let short_mean = (self.recent_sum / filled as f64).max(0.0);
        let score = if self.n_seen > self.learning {
            let mean = self.long.mean().max(self.min_mean);
            let std = self.long.std().max(self.min_std);
            log_tail_score(normal_tail((short_mean - mean) / std))
        } else {
            0.0
        };
        self.long.update(short_mean);
        score
    }

    /// Heap bytes held (the short window).
    pub fn heap_bytes(&self) -> usize {
        self.recent.capacity() * size_of::<f32>()
    }
}
