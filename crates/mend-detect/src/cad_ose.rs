//! [`CadOseDetector`]: a port of Smirnov's Contextual Anomaly Detector, Open Source Edition (NAB's `context_ose`).
//!
//! The algorithm as NAB runs it: each value is normalised to `NORM_VALUE_BITS` bits of the series' range;
//! bit `s` with value `b` is the sensor fact `2s + b`. A *context* is a pair (left semi-context, right
//! semi-context) of fact sets: the left holds the facts of the previous step (its sensor facts and the
//! contexts that were active then, as "neuron" facts), the right the sensor facts of the step after it.
//! Every step stores the zero-level context (previous left facts, current sensor facts); of the stored
//! contexts whose left side is fully present in the previous step, the share whose right side is fully
//! present now is how well the current value was predicted. Partially matching zero-level contexts propose
//! their intersections as new, more general contexts. The raw anomaly is
//! `(1 − predicted share + share of proposed contexts that were really new) / 2`; after a raw anomaly of at
//! least `base_threshold` the detector is silent for `rest_points` points.
//!
//! Two departures from NAB's version, both forced by mend's contract (online, bounded state):
//! * **Range from earlier points only.** NAB hands the detector the file's minimum and maximum. Here the
//!   range is the one of the values seen so far, widened by each new value before it is normalised (a new
//!   extreme lands in the top or bottom level); the first `rest_points` points score 0 anyway (NAB starts
//!   the detector resting), which is the warm-up in which the range settles.
//! * **A bounded context table.** NAB's memory grows without bound (thousands of contexts per file). Here
//!   at most `max_contexts` (≤ [`CadOseDetector::MAX_CONTEXTS`]) are kept; when a new one must be stored into a full table,
//!   the context least recently active (or created) goes, and its neuron fact is removed from every left
//!   side that held it, so a slot reused by another context never inherits its meaning. Contexts active or
//!   created in the current step, or active in the previous one, are never evicted.
//!
//! Facts are bits of a 128-bit set (6 sensor facts, one neuron fact per table slot), so crossing a context
//! with the current facts is a mask and a popcount.

use serde::{Deserialize, Serialize};

use crate::point::{Detector, Point, Score, non_finite_score};
use crate::sensitivity::Sensitivity;

/// Bits a value is normalised to (NAB's `numNormValueBits`): 8 levels, 6 sensor facts.
const NORM_VALUE_BITS: u32 = 3;
/// Sensor facts: one per (bit, value of that bit).
const N_SENSOR_FACTS: u32 = 2 * NORM_VALUE_BITS;
/// The largest context table a 128-bit fact set can address (one neuron fact per slot).
const MAX_CONTEXTS: usize = 128 - N_SENSOR_FACTS as usize;

/// Constants of [`CadOseDetector`]; the defaults are NAB's (`cad_ose.py`), none chosen on NAB's data here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CadOseParams {
    /// Raw anomaly at which the detector rests (NAB's `baseThreshold`, 0.75); also the raw score the output
    /// map puts at 0.5, mend's alarm level.
    pub base_threshold: f64,
    /// Points of silence after a raw anomaly of at least `base_threshold`, and at the start. NAB passes its
    /// probation period / 5, which is 150 for any file of 5 000 rows or more; a live series has no length,
    /// so the long-file value is used.
    pub rest_points: u32,
    /// Most facts in the left side of a context proposed by intersection (NAB's `maxLeftSemiContextsLenght`).
    pub max_left_semi_context_len: u32,
    /// Most contexts whose neuron facts join the next step's left facts (NAB's `maxActiveNeuronsNum`).
    pub max_active_neurons: usize,
    /// Size of the context table (not in NAB, whose table is unbounded); at most [`CadOseDetector::MAX_CONTEXTS`].
    pub max_contexts: usize,
    /// Which context goes when a new one must be stored into a full table.
    pub eviction: Eviction,
}

/// Which context a full table of [`CadOseDetector`] forgets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Eviction {
    /// The one least recently active (or created): a stream forgets what has not happened lately.
    #[default]
    LeastRecent,
    /// The one least often active, the least recent among equals: established contexts stay, new ones
    /// compete for the rest.
    LeastActive,
}

impl Default for CadOseParams {
    fn default() -> Self {
        Self {
            base_threshold: 0.75,
            rest_points: 150,
            max_left_semi_context_len: 7,
            max_active_neurons: 15,
            max_contexts: MAX_CONTEXTS,
            eviction: Eviction::LeastRecent,
        }
    }
}

/// A set of facts: bits 0..6 are sensor facts, bit `6 + slot` the neuron fact of the context in `slot`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Facts([u64; 2]);

impl Facts {
    fn sensors(mask: u8) -> Self {
        Self([u64::from(mask), 0])
    }

    fn neuron_bit(slot: usize) -> (usize, u64) {
        let bit = N_SENSOR_FACTS as usize + slot;
        (bit / 64, 1u64 << (bit % 64))
    }

    fn with_neuron(mut self, slot: usize) -> Self {
        let (word, bit) = Self::neuron_bit(slot);
        self.0[word] |= bit;
        self
    }

    fn has_neuron(self, slot: usize) -> bool {
        let (word, bit) = Self::neuron_bit(slot);
        self.0[word] & bit != 0
    }

    fn without_neuron(mut self, slot: usize) -> Self {
        let (word, bit) = Self::neuron_bit(slot);
        self.0[word] &= !bit;
        self
    }

    fn and(self, other: Self) -> Self {
        Self([self.0[0] & other.0[0], self.0[1] & other.0[1]])
    }

    fn len(self) -> u32 {
        self.0[0].count_ones() + self.0[1].count_ones()
    }

    fn is_empty(self) -> bool {
        self.0 == [0, 0]
    }
}

/// One stored context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Context {
    left: Facts,
    /// Sensor facts of the right side (a right side only ever holds sensor facts).
    right: u8,
    /// Stored as a whole (previous left facts, current sensor facts) at least once, not only proposed by
    /// intersection; only such contexts propose intersections.
    zero_level: bool,
    /// Times the context was active (its neuron ranking; saturating).
    n_active: u16,
    /// Step at which it was last active or created (eviction: least recent first).
    last_used: u32,
}

/// The Contextual Anomaly Detector (CAD OSE), online and with bounded state; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CadOseDetector {
    params: CadOseParams,
    sensitivity: Sensitivity,
    /// Normalisation range: given (NAB's way, for measurement) or widened by each value.
    min_value: f64,
    max_value: f64,
    fixed_range: bool,
    /// Slot → context; `None` is a free slot.
    contexts: Vec<Option<Context>>,
    /// The facts of the previous step (its sensor facts and active neurons): the next step's left side.
    left_facts: Facts,
    /// Steps taken (finite values), the clock of `last_used`.
    n_steps: u32,
    /// Raw anomalies at or above `base_threshold`: the latest step that had one (the start counts as one).
    last_high_step: u32,
}

impl CadOseDetector {
    /// The largest context table: a 128-bit fact set holds 6 sensor facts and one neuron fact per slot.
    pub const MAX_CONTEXTS: usize = MAX_CONTEXTS;

    /// A detector with NAB's constants at `sensitivity`, its range learnt from the values as they arrive.
    pub fn new(sensitivity: Sensitivity) -> Self {
        Self::with_params(CadOseParams::default(), sensitivity)
    }

    /// A detector with `params` (the table size clamped to `1..=`[`Self::MAX_CONTEXTS`]).
    pub fn with_params(mut params: CadOseParams, sensitivity: Sensitivity) -> Self {
        params.max_contexts = params.max_contexts.clamp(1, MAX_CONTEXTS);
        params.max_active_neurons = params.max_active_neurons.max(1);
        Self {
            contexts: vec![None; params.max_contexts],
            params,
            sensitivity,
            min_value: f64::INFINITY,
            max_value: f64::NEG_INFINITY,
            fixed_range: false,
            left_facts: Facts::default(),
            n_steps: 0,
            last_high_step: 0,
        }
    }

    /// NAB's own setting: the range of the whole series given up front. Not online (the range is known from
    /// points not seen yet); only for measuring what learning the range online costs.
    pub fn with_known_range(params: CadOseParams, sensitivity: Sensitivity, min_value: f64, max_value: f64) -> Self {
        let mut detector = Self::with_params(params, sensitivity);
        if min_value.is_finite() && max_value.is_finite() && min_value <= max_value {
            detector.min_value = min_value;
            detector.max_value = max_value;
            detector.fixed_range = true;
        }
        detector
    }

    /// Contexts currently stored.
    pub fn n_contexts(&self) -> usize {
        self.contexts.iter().filter(|slot| slot.is_some()).count()
    }

    /// The sensor facts of `x` (6-bit mask): its level among `2^NORM_VALUE_BITS` of the range.
    fn sensor_facts(&self, x: f64) -> u8 {
        let max_level = f64::from((1u32 << NORM_VALUE_BITS) - 1);
        let range = self.max_value - self.min_value;
        // As NAB: a series with no range yet is measured in steps of 1.
        let step = if range > 0.0 && range.is_finite() { range / max_level } else { 1.0 };
        let level = ((x - self.min_value) / step).floor();
        let level = if level.is_finite() { level.clamp(0.0, max_level) as u32 } else { 0 };
        let mut mask = 0u8;
        for bit_idx in 0..NORM_VALUE_BITS {
            let bit = (level >> bit_idx) & 1;
            mask |= 1 << (2 * bit_idx + bit);
        }
        mask
    }

    fn find(&self, left: Facts, right: u8) -> Option<usize> {
        self.contexts.iter().position(|slot| slot.is_some_and(|c| c.left == left && c.right == right))
    }

    /// Stores a new context, evicting the least recently used one if the table is full; `None` if every
    /// context is protected (used in this step or the previous one).
    fn insert(&mut self, left: Facts, right: u8, zero_level: bool, protected: Facts) -> Option<usize> {
        let now = self.n_steps;
        let slot = match self.contexts.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                let victim = self
                    .contexts
                    .iter()
                    .enumerate()
                    .filter_map(|(slot, c)| c.map(|c| (slot, c)))
                    .filter(|&(slot, c)| c.last_used < now && !protected.has_neuron(slot))
                    .min_by_key(|&(slot, c)| match self.params.eviction {
                        Eviction::LeastRecent => (0, c.last_used, slot),
                        Eviction::LeastActive => (c.n_active, c.last_used, slot),
                    })
                    .map(|(slot, _)| slot)?;
                self.contexts[victim] = None;
                // The neuron fact of the evicted context means nothing any more.
                for context in self.contexts.iter_mut().flatten() {
                    context.left = context.left.without_neuron(victim);
                }
                victim
            }
        };
        self.contexts[slot] = Some(Context { left, right, zero_level, n_active: 0, last_used: now });
        Some(slot)
    }

    /// One step of CAD OSE on the sensor facts of the current value; the raw anomaly in `[0, 1]`.
    fn step(&mut self, sensors: u8) -> f64 {
        let previous = self.left_facts;
        let mut proposed: Vec<(Facts, u8)> = Vec::new();
        // The zero-level context (previous facts → current value): stored now if it is new.
        let mut new_zero_level = None;
        let mut n_new = 0u32;
        if !previous.is_empty() {
            proposed.push((previous, sensors));
            match self.find(previous, sensors) {
                Some(slot) => {
                    if let Some(context) = self.contexts[slot].as_mut() {
                        context.zero_level = true;
                    }
                }
                None => {
                    new_zero_level = self.insert(previous, sensors, true, previous);
                    n_new += 1;
                }
            }
        }
        // Cross every stored context with the previous facts (left) and the current ones (right).
        let mut n_selected = 0u32;
        let mut active: Vec<(u16, usize)> = Vec::new();
        let now = self.n_steps;
        let max_left = self.params.max_left_semi_context_len;
        for (slot, entry) in self.contexts.iter_mut().enumerate() {
            let Some(context) = entry.as_mut() else { continue };
            if Some(slot) == new_zero_level {
                continue;
            }
            let left_crossed = context.left.and(previous);
            if left_crossed.is_empty() {
                continue;
            }
            let right_crossed = context.right & sensors;
            let n_right = right_crossed.count_ones();
            if left_crossed == context.left {
                n_selected += 1;
                if n_right > 0 {
                    if right_crossed == context.right {
                        context.n_active = context.n_active.saturating_add(1);
                        context.last_used = now;
                        active.push((context.n_active, slot));
                    } else if context.zero_level {
                        proposed.push((context.left, right_crossed));
                    }
                }
            } else if context.zero_level && n_right > 0 && left_crossed.len() <= max_left {
                proposed.push((left_crossed, right_crossed));
            }
        }
        let predicted = if n_selected > 0 { active.len() as f64 / f64::from(n_selected) } else { 0.0 };
        // The most often active contexts become the neuron facts of the next step.
        active.sort_unstable_by(|a, b| b.cmp(a));
        active.truncate(self.params.max_active_neurons);
        let mut next_left = Facts::sensors(sensors);
        for &(_, slot) in &active {
            next_left = next_left.with_neuron(slot);
        }
        // The contexts behind the previous and the next left facts stay: proposals hold their neuron facts.
        let protected = Facts([previous.0[0] | next_left.0[0], previous.0[1] | next_left.0[1]]);
        // Store the proposed intersections that are really new.
        proposed.sort_unstable_by_key(|&(left, right)| (left.0, right));
        proposed.dedup();
        let n_proposed = proposed.len();
        for &(left, right) in &proposed {
            if self.find(left, right).is_none() && self.insert(left, right, false, protected).is_some() {
                n_new += 1;
            }
        }
        self.left_facts = next_left;
        let novel = if n_proposed > 0 { f64::from(n_new) / n_proposed as f64 } else { 0.0 };
        ((1.0 - predicted + novel) / 2.0).clamp(0.0, 1.0)
    }

    /// Maps a raw anomaly monotonically onto `[0, 1]` with `base_threshold ↦ 0.5` (mend's alarm level).
    fn output_map(&self, raw: f64) -> f64 {
        let base = self.params.base_threshold.clamp(1e-6, 1.0 - 1e-6);
        if raw <= base { 0.5 * raw / base } else { 0.5 + 0.5 * (raw - base) / (1.0 - base) }
    }
}

impl Detector for CadOseDetector {
    fn update(&mut self, point: Point) -> Score {
        if let Some(score) = non_finite_score(point.value) {
            return score;
        }
        let x = point.value;
        if !self.fixed_range {
            self.min_value = self.min_value.min(x);
            self.max_value = self.max_value.max(x);
        }
        let sensors = self.sensor_facts(x);
        self.n_steps = self.n_steps.saturating_add(1);
        let raw = self.step(sensors);
        // NAB's rest: report only if no raw anomaly reached the base threshold in the last `rest_points`
        // steps (the start counts as one), judged on the raw score, so the sensitivity cannot move it.
        let resting = self.n_steps.saturating_sub(self.last_high_step) <= self.params.rest_points;
        if raw >= self.params.base_threshold {
            self.last_high_step = self.n_steps;
        }
        if resting {
            return Score::ZERO;
        }
        // The sensitivity as the single detectors apply it (identity at 0.5): a higher one never flags fewer
        // points, and a strong enough anomaly alarms at any sensitivity above 0.
        Score::new(self.sensitivity.apply(self.output_map(raw)))
    }

    fn state_bytes(&self) -> usize {
        size_of_val(self) + self.contexts.capacity() * size_of::<Option<Context>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(detector: &mut CadOseDetector, values: &[f64]) -> Vec<f64> {
        values.iter().enumerate().map(|(idx, &v)| detector.update(Point::new(idx as f64, v)).value()).collect()
    }

    /// A steady repeating pattern over the whole range, `n` points.
    fn pattern(n: usize) -> Vec<f64> {
        const SHAPE: [f64; 8] = [0.0, 1.0, 3.0, 7.0, 6.0, 4.0, 2.0, 5.0];
        (0..n).map(|idx| SHAPE[idx % SHAPE.len()]).collect()
    }

    #[test]
    fn the_sensor_facts_are_one_fact_per_bit_of_the_level() {
        let mut detector = CadOseDetector::with_known_range(CadOseParams::default(), Sensitivity::DEFAULT, 0.0, 7.0);
        detector.update(Point::new(0.0, 0.0));
        // Level 0: bits 0,0,0 → facts 0, 2, 4; level 7: facts 1, 3, 5; level 5 (101): facts 1, 2, 5.
        assert_eq!(detector.sensor_facts(0.0), 0b01_0101);
        assert_eq!(detector.sensor_facts(7.0), 0b10_1010);
        assert_eq!(detector.sensor_facts(5.0), 0b10_0110);
        // Outside a given range: the nearest level.
        assert_eq!(detector.sensor_facts(-3.0), 0b01_0101);
        assert_eq!(detector.sensor_facts(70.0), 0b10_1010);
    }

    #[test]
    fn a_repeated_pattern_stops_scoring() {
        let mut detector = CadOseDetector::new(Sensitivity::DEFAULT);
        let found = scores(&mut detector, &pattern(2_000));
        let late = &found[1_000..];
        let worst = late.iter().copied().fold(0.0, f64::max);
        assert!(worst < 0.2, "a pattern seen 125 times still scores {worst}");
    }

    #[test]
    fn a_spike_after_a_steady_pattern_scores_high() {
        let mut values = pattern(1_600);
        values[1_500] = 40.0;
        let mut detector = CadOseDetector::new(Sensitivity::DEFAULT);
        let found = scores(&mut detector, &values);
        // The spike itself lands in the top level, where the pattern's 7 was (its facts overlap what was
        // expected); the point after it, with the range now five times wider, is a context never seen.
        let peak = found[1_500].max(found[1_501]);
        assert!(peak >= 0.5, "the spike scores {:?}", &found[1_495..1_510]);
        let before = found[1_000..1_500].iter().copied().fold(0.0, f64::max);
        assert!(before < 0.5, "the steady pattern alarmed: {before}");
        // At the cautious sensitivity of live series it still alarms (and not before).
        let cautious = scores(&mut CadOseDetector::new(Sensitivity::ACTIONABLE), &values);
        assert!(cautious[1_500].max(cautious[1_501]) >= 0.5, "{:?}", &cautious[1_495..1_510]);
        assert!(cautious[..1_500].iter().all(|&s| s < 0.5));
    }

    #[test]
    fn a_break_of_the_pattern_inside_the_range_scores_high() {
        // No new extreme: the pattern's levels in another order.
        let mut values = pattern(1_600);
        values[1_500..1_504].copy_from_slice(&[7.0, 0.0, 7.0, 0.0]);
        let mut detector = CadOseDetector::new(Sensitivity::DEFAULT);
        let found = scores(&mut detector, &values);
        let peak = found[1_500..1_505].iter().copied().fold(0.0, f64::max);
        assert!(peak >= 0.5, "the break scores {peak}");
    }

    #[test]
    fn the_start_rests_as_nab_does() {
        let mut detector = CadOseDetector::new(Sensitivity::DEFAULT);
        let values: Vec<f64> = (0..150).map(|idx| ((idx * 7919) % 101) as f64).collect();
        assert!(scores(&mut detector, &values).iter().all(|&s| s == 0.0));
    }

    #[test]
    fn a_score_does_not_change_when_later_points_are_appended() {
        let values: Vec<f64> = (0..3_000).map(|idx| ((idx * 7919 + idx * idx) % 257) as f64 / 8.0).collect();
        let full = scores(&mut CadOseDetector::new(Sensitivity::DEFAULT), &values);
        let prefix = scores(&mut CadOseDetector::new(Sensitivity::DEFAULT), &values[..1_234]);
        assert_eq!(prefix, full[..1_234]);
    }

    #[test]
    fn the_state_stays_bounded_over_a_long_random_series() {
        let mut detector = CadOseDetector::new(Sensitivity::DEFAULT);
        let before = detector.state_bytes();
        assert!(before <= 4_096, "{before} B");
        // A xorshift series: random levels, so the table fills and evicts all the time.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for idx in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let score = detector.update(Point::new(f64::from(idx), (state % 1_000) as f64)).value();
            assert!((0.0..=1.0).contains(&score));
        }
        assert_eq!(detector.n_contexts(), MAX_CONTEXTS, "a random series fills the table");
        assert_eq!(detector.state_bytes(), before, "the state does not grow");
        // Every neuron fact refers to a stored context.
        for context in detector.contexts.iter().flatten() {
            for slot in 0..MAX_CONTEXTS {
                assert!(!context.left.has_neuron(slot) || detector.contexts[slot].is_some());
            }
        }
    }

    #[test]
    fn a_full_table_forgets_by_the_eviction_rule() {
        // Four stored contexts, the table full: slot 0 active often but long ago, slot 3 the most recent.
        let mut detector = CadOseDetector::with_params(
            CadOseParams { max_contexts: 4, ..CadOseParams::default() },
            Sensitivity::DEFAULT,
        );
        let stored = [(9, 1), (1, 2), (2, 3), (3, 4)];
        for (slot, &(n_active, last_used)) in stored.iter().enumerate() {
            let left = Facts::sensors(0b01_0101).with_neuron((slot + 1) % 4);
            detector.contexts[slot] = Some(Context { left, right: 0b10_1010, zero_level: true, n_active, last_used });
        }
        detector.n_steps = 10;
        let least_recent = detector.clone().insert(Facts::sensors(1), 2, false, Facts::default());
        assert_eq!(least_recent, Some(0));
        detector.params.eviction = Eviction::LeastActive;
        let mut least_active = detector.clone();
        assert_eq!(least_active.insert(Facts::sensors(1), 2, false, Facts::default()), Some(1));
        // The evicted context's neuron fact is gone from the left side that held it (slot 0's).
        let holder = least_active.contexts[0].expect("kept");
        assert!(!holder.left.has_neuron(1));
        // A protected context is never the one to go; with every context protected, nothing is stored.
        let protected = Facts::default().with_neuron(1);
        assert_eq!(detector.clone().insert(Facts::sensors(1), 2, false, protected), Some(2));
        let all = (0..4).fold(Facts::default(), |facts, slot| facts.with_neuron(slot));
        assert_eq!(detector.clone().insert(Facts::sensors(1), 2, false, all), None);
    }

    #[test]
    fn a_small_table_still_learns_a_pattern() {
        let params = CadOseParams { max_contexts: 40, ..CadOseParams::default() };
        let mut detector = CadOseDetector::with_params(params, Sensitivity::DEFAULT);
        let found = scores(&mut detector, &pattern(3_000));
        let worst = found[2_000..].iter().copied().fold(0.0, f64::max);
        assert!(worst < 0.5, "{worst}");
    }
}
