//! [`ShiftDetector`]: a sustained move away from a rolling median, judged by robust spread and by rank.

use serde::{Deserialize, Serialize};

use crate::point::{Detector, Point, Score, non_finite_score};
use crate::sensitivity::Sensitivity;
use crate::stats::{SortedRing, log_tail_score};

/// Flags a run of points that all stand out from the previous `window` values in one direction.
///
/// Each point gets a robust z-score against the window: `(x − median) / scale`, where the scale is the
/// interquartile range over 1.349 (the standard deviation of a normal distribution with that IQR),
/// but at least 1 % of the median's magnitude, so that a perfectly flat series (a process's memory that
/// has not moved in an hour) does not call a change of a few pages a shift. A point counts only when its
/// |z| reaches the gate (2 at the default sensitivity: from 3 at sensitivity 0 down to 1 at
/// sensitivity 1). A counting point adds the evidence `−log10 p` of its rank, where `p = (c + 1) /
/// (n + 1)` and `c` counts the window's values at least as extreme in the point's direction: a value
/// beyond everything in a 60-point window adds `log10 61 ≈ 1.8`, a value inside the window's range
/// less. Evidence adds up over consecutive counting points in one direction and drops to zero at the
/// first point that does not count. The score is that run's evidence mapped like a tail probability
/// (`log_tail_score(10^−evidence)`): the alarm level 0.5 is evidence 5, a run as unlikely as 10⁻⁵.
///
/// So a single spike, however high, never alarms (its rank says no more than "beyond the window");
/// four consecutive points beyond the window's range do (each enters the window, so the next one is
/// beyond all but its predecessors), and so do longer runs of less extreme ones.
/// The rank keeps bursty series honest: a series that bursts every few minutes holds bursts in its
/// window, and a new burst inside their range adds little. The window follows a lasting shift, which
/// stops alarming once the window has taken it in. No warm-up beyond a third of the window.
///
/// Made for sparse samples, such as the minute-by-minute metrics of a recorded incident, where an
/// hour is 60 points and detectors that learn over hundreds of points are still warming up.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShiftDetector {
    ring: SortedRing,
    min_history: usize,
    min_z: f64,
    /// Evidence of the current run, in −log10 units.
    run_evidence: f64,
    /// +1 above, −1 below the median, 0 when no run is on.
    run_direction: i8,
}

/// Evidence kept for a run: beyond this the score is 1 anyway, and the number stays finite.
const MAX_EVIDENCE: f64 = 100.0;
/// The scale is at least this share of the median's magnitude.
const RELATIVE_FLOOR: f64 = 0.01;
/// IQR of the standard normal distribution.
const NORMAL_IQR: f64 = 1.349;

impl ShiftDetector {
    /// Default: a 60-point window (an hour of minute samples).
    pub fn new(sensitivity: Sensitivity) -> Self {
        Self::with_window(60, sensitivity)
    }

    /// A `window`-point window (at least 6); scoring starts once a third of it is filled.
    pub fn with_window(window: usize, sensitivity: Sensitivity) -> Self {
        let window = window.max(6);
        Self {
            ring: SortedRing::new(window),
            min_history: window / 3,
            min_z: 3.0 - 2.0 * sensitivity.value(),
            run_evidence: 0.0,
            run_direction: 0,
        }
    }

    /// The robust z-score of `value` against the window.
    fn z(&self, value: f64) -> f64 {
        let median = self.ring.quantile(0.5);
        let spread = (self.ring.quantile(0.75) - self.ring.quantile(0.25)) / NORMAL_IQR;
        let scale = spread.max(RELATIVE_FLOOR * median.abs()).max(f64::MIN_POSITIVE);
        let z = (value - median) / scale;
        // A difference of huge values can overflow; the direction is all that matters then.
        if z.is_finite() { z } else { f64::MAX.copysign(value - median) }
    }

    /// Evidence `−log10 p` of `value`'s rank in the window, in `direction`.
    fn rank_evidence(&self, value: f64, direction: i8) -> f64 {
        let values = self.ring.values();
        let as_extreme = if direction > 0 {
            values.len() - values.partition_point(|&v| v < value)
        } else {
            values.partition_point(|&v| v <= value)
        };
        ((values.len() + 1) as f64 / (as_extreme + 1) as f64).log10()
    }
}

impl Detector for ShiftDetector {
    fn update(&mut self, point: Point) -> Score {
        if let Some(score) = non_finite_score(point.value) {
            return score;
        }
        let value = point.value;
        if self.ring.len() < self.min_history {
            self.ring.push(value);
            return Score::ZERO;
        }
        let z = self.z(value);
        if z.abs() >= self.min_z {
            let direction: i8 = if z > 0.0 { 1 } else { -1 };
            let evidence = self.rank_evidence(value, direction);
            if direction != self.run_direction {
                self.run_evidence = 0.0;
                self.run_direction = direction;
            }
            self.run_evidence = (self.run_evidence + evidence).min(MAX_EVIDENCE);
        } else {
            self.run_evidence = 0.0;
            self.run_direction = 0;
        }
        self.ring.push(value);
        Score::new(log_tail_score(10f64.powf(-self.run_evidence)))
    }

    fn state_bytes(&self) -> usize {
        size_of_val(self) + self.ring.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(detector: &mut ShiftDetector, values: &[f64]) -> Vec<f64> {
        values.iter().enumerate().map(|(idx, &v)| detector.update(Point::new(idx as f64 * 60.0, v)).value()).collect()
    }

    fn noise(n: usize, level: f64, spread: f64) -> Vec<f64> {
        let mut state = 7_u64;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                level + spread * (((state >> 33) % 1000) as f64 / 500.0 - 1.0)
            })
            .collect()
    }

    #[test]
    fn a_sustained_shift_alarms_on_its_fourth_point_and_a_spike_never() {
        let mut values = noise(60, 0.002, 0.0003);
        values.extend([0.8, 0.8, 0.8, 0.8]);
        let scores = scores(&mut ShiftDetector::new(Sensitivity::DEFAULT), &values);
        let alarms: Vec<usize> = (0..values.len()).filter(|&i| scores[i] >= 0.5).collect();
        assert_eq!(alarms.first(), Some(&63), "{:?}", &scores[58..]);

        let mut spiky = noise(60, 0.002, 0.0003);
        spiky.extend([0.8, 0.002, 0.8, 0.002]);
        let scores = super::tests::scores(&mut ShiftDetector::new(Sensitivity::DEFAULT), &spiky);
        assert!(scores.iter().all(|&s| s < 0.5), "{:?}", &scores[58..]);
    }

    #[test]
    fn a_flat_series_moving_by_a_few_pages_is_not_a_shift() {
        let mut values = vec![743_100_000.0; 50];
        values.extend([743_104_096.0; 10]);
        let scores = scores(&mut ShiftDetector::new(Sensitivity::DEFAULT), &values);
        assert!(scores.iter().all(|&s| s == 0.0), "{scores:?}");
        // Doubling it is.
        let mut values = vec![519_000_000.0; 50];
        values.extend([1_038_000_000.0; 4]);
        let scores = super::tests::scores(&mut ShiftDetector::new(Sensitivity::DEFAULT), &values);
        assert!(scores[52] < 0.5 && scores[53] >= 0.5, "{scores:?}");
    }

    #[test]
    fn a_drop_alarms_too() {
        let mut values = noise(60, 100.0, 5.0);
        values.extend([40.0; 4]);
        let scores = scores(&mut ShiftDetector::new(Sensitivity::DEFAULT), &values);
        assert!(scores[63] >= 0.5, "{:?}", &scores[58..]);
    }

    #[test]
    fn the_sensitivity_moves_the_gate() {
        let low = ShiftDetector::new(Sensitivity::new(0.0).expect("in range"));
        let high = ShiftDetector::new(Sensitivity::new(1.0).expect("in range"));
        assert_eq!((low.min_z, ShiftDetector::new(Sensitivity::DEFAULT).min_z, high.min_z), (3.0, 2.0, 1.0));
    }
}
