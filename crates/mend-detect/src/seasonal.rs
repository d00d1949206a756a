//! [`SeasonalDetector`]: a time-of-day × (weekday | weekend) baseline from the sample's timestamp.

use serde::{Deserialize, Serialize};

use crate::point::{Detector, Point, Score, non_finite_score};
use crate::sensitivity::Sensitivity;
use crate::stats::{Ewm, log_tail_score, normal_tail};

const SECS_PER_DAY: f64 = 86_400.0;

/// Compares each value with what this time of day usually looks like.
///
/// The day is cut into `n_slots` slots, separately for weekdays and weekends (Unix day 0 was a
/// Thursday), and each slot keeps an exponentially weighted mean and mean absolute deviation of
/// the values that fell into it (weight `slot_alpha` per visit, so it follows a slowly drifting
/// pattern over a few weeks). A slot's baseline is used only once it has been visited on
/// `min_days` distinct days; until then, and for timestamps that are not finite, the point is
/// scored against the global robust moments instead. The residual's scale is the larger of the
/// slot's deviation and a fraction of the global one, so a very regular slot cannot turn noise
/// into alarms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeasonalDetector {
    n_slots: u16,
    min_days: u16,
    slot_alpha: f32,
    sensitivity: Sensitivity,
    slot_mean: Vec<f32>,
    slot_dev: Vec<f32>,
    slot_days: Vec<u16>,
    slot_visits: Vec<u16>,
    slot_last_day: Vec<i32>,
    global: Ewm,
    n_seen: u32,
}

impl SeasonalDetector {
    /// Defaults: 48 half-hour slots, weekday/weekend split, baseline after 3 days, `slot_alpha = 0.05`.
    pub fn new(sensitivity: Sensitivity) -> Self {
        Self::with_params(48, 3, 0.05, sensitivity)
    }

    /// Explicit parameters (`n_slots` in 1..=1440, `min_days` ≥ 1, `slot_alpha` in (0, 1]).
    pub fn with_params(n_slots: u16, min_days: u16, slot_alpha: f32, sensitivity: Sensitivity) -> Self {
        let n_slots = n_slots.clamp(1, 1440);
        let total = usize::from(n_slots) * 2;
        Self {
            n_slots,
            min_days: min_days.max(1),
            slot_alpha: if slot_alpha.is_finite() { slot_alpha.clamp(1e-3, 1.0) } else { 0.25 },
            sensitivity,
            slot_mean: vec![0.0; total],
            slot_dev: vec![0.0; total],
            slot_days: vec![0; total],
            slot_visits: vec![0; total],
            slot_last_day: vec![i32::MIN; total],
            global: Ewm::new(0.01),
            n_seen: 0,
        }
    }

    /// The slot index and day number of a timestamp, or `None` when it is not finite.
    fn slot_of(&self, timestamp_secs: f64) -> Option<(usize, i32)> {
        if !timestamp_secs.is_finite() {
            return None;
        }
        let day = (timestamp_secs / SECS_PER_DAY).floor();
        let day_fraction = (timestamp_secs - day * SECS_PER_DAY) / SECS_PER_DAY;
        let slot = ((day_fraction * f64::from(self.n_slots)) as usize).min(usize::from(self.n_slots) - 1);
        // 1970-01-01 was a Thursday: day mod 7 gives 0 = Thu, 2 = Sat, 3 = Sun.
        let weekday = (day as i64).rem_euclid(7);
        let weekend = usize::from(weekday == 2 || weekday == 3);
        let day_number = day.clamp(f64::from(i32::MIN + 1), f64::from(i32::MAX)) as i32;
        Some((weekend * usize::from(self.n_slots) + slot, day_number))
    }

    /// The expected value and scale for a slot, when it has enough history.
    pub fn baseline(&self, timestamp_secs: f64) -> Option<(f64, f64)> {
        let (slot, _) = self.slot_of(timestamp_secs)?;
        (self.slot_days[slot] >= self.min_days)
            .then(|| (f64::from(self.slot_mean[slot]), f64::from(self.slot_dev[slot]) * 1.2533))
    }
}

impl SeasonalDetector {
    /// Scores a finite value against its slot (or the global moments) and learns from it.
    ///
    /// Returns the raw score and, when the slot baseline exists, the slot residual and scale.
    pub(crate) fn observe(&mut self, point: Point) -> (f64, Option<(f64, f64)>) {
        let value = point.value;
        let global_scale = self.global.std();
        let slot_baseline = self.baseline(point.timestamp_secs);
        let mut residual = None;
        let raw = if self.n_seen < 30 {
            0.0
        } else {
            let (expected, scale) = match slot_baseline {
                Some((mean, slot_scale)) => {
                    let scale = slot_scale.max(0.25 * global_scale);
                    residual = Some((value - mean, scale));
                    (mean, scale)
                }
                None => (self.global.mean(), global_scale),
            };
            let scale = scale.max(1e-9 * expected.abs()).max(f64::MIN_POSITIVE);
            log_tail_score(2.0 * normal_tail((value - expected).abs() / scale))
        };
        self.n_seen = self.n_seen.saturating_add(1);
        self.global.update(value);
        if let Some((slot, day)) = self.slot_of(point.timestamp_secs) {
            // Bias-corrected start: a plain mean over the first 1/alpha visits.
            self.slot_visits[slot] = self.slot_visits[slot].saturating_add(1);
            let alpha = (1.0 / f32::from(self.slot_visits[slot])).max(self.slot_alpha);
            let value = value as f32;
            if self.slot_days[slot] == 0 {
                self.slot_mean[slot] = value;
                self.slot_dev[slot] = 0.0;
            } else {
                let deviation = (value - self.slot_mean[slot]).abs();
                // Once the slot is trusted, clip the step at 4 slot-deviations so single spikes do not stick.
                let mut step = value - self.slot_mean[slot];
                if self.slot_days[slot] >= self.min_days {
                    let cap = 4.0 * self.slot_dev[slot].max(f32::MIN_POSITIVE);
                    step = step.max(-cap).min(cap);
                }
                self.slot_mean[slot] += alpha * step;
                self.slot_dev[slot] += alpha * (deviation - self.slot_dev[slot]);
            }
            if self.slot_last_day[slot] != day {
                self.slot_last_day[slot] = day;
                self.slot_days[slot] = self.slot_days[slot].saturating_add(1);
            }
        }
        (raw, residual)
    }
}

impl Detector for SeasonalDetector {
    fn update(&mut self, point: Point) -> Score {
        if let Some(score) = non_finite_score(point.value) {
            return score;
        }
        let (raw, _) = self.observe(point);
        Score::new(self.sensitivity.apply(raw))
    }

    fn state_bytes(&self) -> usize {
        size_of_val(self) + self.heap_bytes()
    }
}

impl SeasonalDetector {
    /// Heap bytes held by the slot tables.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.slot_mean.capacity() * size_of::<f32>()
            + self.slot_dev.capacity() * size_of::<f32>()
            + (self.slot_days.capacity() + self.slot_visits.capacity()) * size_of::<u16>()
            + self.slot_last_day.capacity() * size_of::<i32>()
    }
}
