//! [`EnsembleDetector`]: the default detector, combining new extremes, value rarity and seasonal surprise.

use serde::{Deserialize, Serialize};

use crate::histogram::GrowingHistogram;
use crate::likelihood::AnomalyLikelihood;
use crate::point::{Detector, Point, Score, non_finite_score};
use crate::seasonal::SeasonalDetector;
use crate::sensitivity::Sensitivity;
use crate::stats::is_positive;

/// Tuning of [`EnsembleDetector`]; [`EnsembleParams::default`] is the tuned, recommended set.
///
/// Every field has a principled role; see `NOTES.md` of the NAB lab for how the defaults were
/// chosen and how sensitive the benchmark is to each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnsembleParams {
    /// Points before the full ensemble scores (statistics settle first); until then only a gross new
    /// extreme can alarm, from `learning_from` on.
    pub warm_up: u32,
    /// Points after which, still within the warm-up, a gross new extreme alarms (0: none during the
    /// warm-up): a series that starts with a fault is not silent for the whole warm-up.
    pub learning_from: u32,
    /// During the warm-up, how far beyond the range seen so far a value must be to alarm, in multiples of
    /// that range; it must also be at least as far as the level is from zero (a positive series doubles).
    pub learning_excess: f64,
    /// Per-point decay of the remembered extremes toward the current level (forgetting old spikes).
    pub extreme_decay: f64,
    /// Smoothing of the level the extremes decay toward.
    pub level_alpha: f64,
    /// Excess beyond the remembered range, as a fraction of the range, that brings the extreme
    /// channel to `1 − 1/e` of its full score.
    pub extreme_scale: f64,
    /// A new extreme must exceed the remembered one by this many median absolute steps before it
    /// counts (0 at the default: on NAB even hairline new extremes are worth flagging).
    pub extreme_noise_margin: f64,
    /// Bins of the value histogram.
    pub rarity_bins: usize,
    /// Per-point decay of the histogram counts.
    pub rarity_decay: f64,
    /// Raw rarity scores averaged by the rarity likelihood.
    pub rarity_window: usize,
    /// Weight of the rarity channel (its full score).
    pub rarity_weight: f64,
    /// Time-of-day slots of the seasonal baseline (split weekday / weekend).
    pub seasonal_slots: u16,
    /// Distinct days a slot must have seen before it is trusted.
    pub seasonal_min_days: u16,
    /// Per-visit learning rate of a slot.
    pub seasonal_alpha: f32,
    /// Raw seasonal scores averaged by the seasonal likelihood.
    pub seasonal_window: usize,
    /// Memory of the comparison that decides whether the seasonal baseline beats the plain level.
    pub seasonal_gate_alpha: f64,
    /// Weight of the seasonal channel (its full score).
    pub seasonal_weight: f64,
    /// Evidence, in −log10 of the run's probability, at which a stuck value reaches `alarm_level`.
    pub flatline_evidence: f64,
    /// Memory of the likelihoods' long-run model of averaged raw scores.
    pub likelihood_alpha: f64,
    /// Floor of the likelihoods' modelled standard deviation.
    pub likelihood_min_std: f64,
    /// Combined score (before the output map) that counts as an alarm and starts the refractory period.
    pub alarm_level: f64,
    /// Points after an alarm during which the detector stays silent.
    pub refractory_points: u32,
    /// Below the default sensitivity, the smallest change worth an alarm, as a fraction of the series'
    /// level, at sensitivity 0 (scaled linearly to none at 0.5): a new extreme must exceed the range seen by
    /// that much, a rare value or a time-of-day surprise must depart that far from the level or the slot.
    pub cautious_effect: f64,
}

impl Default for EnsembleParams {
    fn default() -> Self {
        Self {
            warm_up: 150,
            learning_from: 30,
            learning_excess: 3.0,
            extreme_decay: 1e-5,
            level_alpha: 0.02,
            extreme_scale: 0.05,
            extreme_noise_margin: 0.0,
            rarity_bins: 64,
            rarity_decay: 1e-4,
            rarity_window: 30,
            rarity_weight: 0.35,
            seasonal_slots: 48,
            seasonal_min_days: 3,
            seasonal_alpha: 0.25,
            seasonal_window: 20,
            seasonal_gate_alpha: 0.005,
            seasonal_weight: 0.35,
            flatline_evidence: 80.0,
            likelihood_alpha: 0.002,
            likelihood_min_std: 0.01,
            alarm_level: 0.2,
            refractory_points: 30,
            cautious_effect: 0.25,
        }
    }
}

/// The evidence behind the latest score, per channel, on the combined (pre-output-map) scale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChannelScores {
    /// New extreme beyond the remembered range.
    pub extreme: f64,
    /// Recent values unusually rare for this series (value-histogram likelihood).
    pub rarity: f64,
    /// Recent values unusual for this time of day and kind of day (seasonal likelihood).
    pub seasonal: f64,
    /// The value has been stuck far longer than this series usually repeats a value.
    pub flatline: f64,
    /// Whether the point fell in a refractory period (its score was silenced).
    pub silenced: bool,
    /// Whether the point alarmed as a gross new extreme while the detector was still learning (before
    /// `warm_up`), when the channels above do not count yet.
    #[serde(default)]
    pub learning: bool,
}

/// The default detector: new extremes, value rarity and seasonal surprise, one alarm per event.
///
/// Three channels, each scoring the latest point in `[0, weight]`:
///
/// * **extreme**: a value beyond the remembered minimum/maximum scores `1 − e^(−excess / (s · range))`.
///   The remembered extremes decay very slowly toward the level, so a spike from weeks ago stops
///   masking a new one. This is the strongest single signal on NAB (spikes, level shifts).
/// * **rarity**: each value's rarity `−log10 p / 4`, where `p` is the histogram mass of bins no
///   more populated than the value's own (a 64-bin histogram with decaying counts whose range
///   doubles to take in new values, so no range is known in advance), is averaged over a short window and calibrated by an
///   [`AnomalyLikelihood`] against this series' own history: sustained unusual levels score high.
/// * **seasonal**: the residual against a time-of-day × weekday/weekend baseline (see
///   [`SeasonalDetector`]) goes through its own likelihood; the channel counts only while the
///   seasonal baseline explains the series better than its plain level does.
///
/// * **flatline**: a run of identical values whose probability, given how often this series
///   repeats a value, falls below 10⁻⁸⁰ (a stuck sensor); reported for one refractory period.
///   A run is judged against the history before it: a short history of movement followed by a
///   long constant stretch is a series settling (an idle process after start-up) and scores 0.
///
/// For its first `warm_up` points (150) the channels do not count: the detector learns. From the
/// `learning_from`-th point (30) a gross new extreme alarms meanwhile (beyond the range seen so far by
/// `learning_excess` times that range and by at least the level's distance from zero), so that a series
/// that starts with a fault is not silent for the whole warm-up.
///
/// The combined score is the channels' maximum. Once it reaches `alarm_level`, the detector stays
/// silent for `refractory_points` (a lasting event alarms once, not on every point). The output
/// maps the combined score monotonically so that `alarm_level` lands on 0.5: **a score ≥ 0.5 is
/// an alarm**.
///
/// [`Sensitivity`] `s` multiplies the channels by `g = 2^(2s − 1)` (½ at 0, 1 at 0.5, 2 at 1),
/// except that below 0.5 only the extreme channel is damped. Below 0.5 a change must also be large
/// enough to act on, by `c = 1 − 2s` (0 at 0.5, 1 at 0): a new extreme must clear the remembered range
/// by `3c` median steps and by `c · cautious_effect` (¼ at 0) of the series' long-run level, and a rare
/// value or a time-of-day surprise counts only that far from the long-run level or from its slot (so a
/// healthy process's file descriptors going from 11 to 12, or its memory creeping by 5 %, does not
/// alarm at [`Sensitivity::ACTIONABLE`], 0.2; a stuck value is judged by its run alone). The refractory period is
/// decided on the default-sensitivity score, so at any fixed threshold a higher sensitivity never
/// flags fewer points (a cautious sensitivity may alarm up to `refractory_points` later than the
/// default would). State is about 2.7 KiB per series; throughput about 3 M points/s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleDetector {
    params: EnsembleParams,
    sensitivity: Sensitivity,
    n_seen: u32,
    level: f64,
    /// The level with the likelihoods' long memory: what "usual" means to the effect floor.
    slow_level: f64,
    min_seen: f64,
    max_seen: f64,
    histogram: GrowingHistogram,
    rarity_likelihood: AnomalyLikelihood,
    seasonal: SeasonalDetector,
    seasonal_likelihood: AnomalyLikelihood,
    seasonal_fit: f64,
    level_fit: f64,
    previous: f64,
    step_scale: f64,
    repeat_rate: f64,
    run_len: u32,
    run_q: f64,
    /// Value pairs seen before the current run started: the history its repeat rate comes from.
    run_history: u32,
    run_full_at: Option<u32>,
    n_pairs: u32,
    refractory_left: u32,
    last: ChannelScores,
}

impl EnsembleDetector {
    /// The default ensemble with the tuned parameters.
    pub fn new(sensitivity: Sensitivity) -> Self {
        Self::with_params(EnsembleParams::default(), sensitivity)
    }

    /// An ensemble with explicit parameters (for experiments; prefer [`EnsembleDetector::new`]).
    pub fn with_params(params: EnsembleParams, sensitivity: Sensitivity) -> Self {
        let likelihood =
            |window: usize| AnomalyLikelihood::new(window, params.likelihood_alpha, 0, 0.0, params.likelihood_min_std);
        let rarity_likelihood = likelihood(params.rarity_window);
        let seasonal_likelihood = likelihood(params.seasonal_window);
        let histogram = GrowingHistogram::new(params.rarity_bins, params.rarity_decay);
        let seasonal = SeasonalDetector::with_params(
            params.seasonal_slots,
            params.seasonal_min_days,
            params.seasonal_alpha,
            Sensitivity::DEFAULT,
        );
        Self {
            params,
            sensitivity,
            n_seen: 0,
            level: 0.0,
            slow_level: 0.0,
            min_seen: f64::INFINITY,
            max_seen: f64::NEG_INFINITY,
            histogram,
            rarity_likelihood,
            seasonal,
            seasonal_likelihood,
            seasonal_fit: 0.0,
            level_fit: 0.0,
            previous: f64::NAN,
            step_scale: 0.0,
            repeat_rate: 0.0,
            run_len: 0,
            run_q: 1e-3,
            run_history: 0,
            run_full_at: None,
            n_pairs: 0,
            refractory_left: 0,
            last: ChannelScores::default(),
        }
    }

    /// The parameters in use.
    pub fn params(&self) -> &EnsembleParams {
        &self.params
    }

    /// The per-channel evidence behind the latest score.
    pub fn last_channels(&self) -> ChannelScores {
        self.last
    }

    /// Gain on the combined score: `2^(2·sensitivity − 1)`, from ½ at 0 through 1 at 0.5 to 2 at 1.
    fn sensitivity_gain(&self) -> f64 {
        (2.0 * self.sensitivity.value() - 1.0).exp2()
    }

    /// Maps the combined score monotonically onto `[0, 1]` with `alarm_level ↦ 0.5`.
    fn output_map(&self, combined: f64) -> f64 {
        let alarm = self.params.alarm_level.clamp(1e-6, 1.0 - 1e-6);
        if combined <= alarm { 0.5 * combined / alarm } else { 0.5 + 0.5 * (combined - alarm) / (1.0 - alarm) }
    }

    /// The extreme channel with a margin of `margin_steps` median absolute steps.
    fn extreme_score(&self, x: f64, margin_steps: f64) -> f64 {
        self.extreme_score_beyond(x, margin_steps * self.step_scale)
    }

    /// The extreme channel for the excess beyond the remembered range less `margin`.
    fn extreme_score_beyond(&self, x: f64, margin: f64) -> f64 {
        let range = self.max_seen - self.min_seen;
        let excess = (x - self.max_seen).max(self.min_seen - x) - margin;
        if !is_positive(range) || !is_positive(excess) {
            return 0.0;
        }
        let scale = self.params.extreme_scale.max(1e-9) * range;
        1.0 - (-excess / scale).exp()
    }

    fn rarity(&self, x: f64) -> f64 {
        match self.histogram.rarity_p(x) {
            Some(p_value) => (-(p_value.max(1e-4)).log10() / 4.0).clamp(0.0, 1.0),
            // Outside the histogram's range: never seen anything like it.
            None if self.n_seen > 1 => 1.0,
            None => 0.0,
        }
    }

    /// Evidence (−log10 p) that the current run of identical values is unusually long.
    ///
    /// With `q` the series' rate of exact repeats (exponentially weighted), a run of `L` repeats
    /// has probability about `q^L`. `q` keeps adapting, so a series that becomes constant for
    /// good stops alarming.
    fn flatline_evidence(&mut self, x: f64) -> f64 {
        let repeated = x == self.previous;
        if repeated {
            if self.run_len == 0 {
                // The repeat rate before the run started is what makes the run surprising.
                self.run_q = self.repeat_rate.clamp(1e-3, 0.999);
                self.run_history = self.n_pairs;
            }
            self.run_len = self.run_len.saturating_add(1);
        } else {
            self.run_len = 0;
            self.run_full_at = None;
        }
        if !self.previous.is_nan() {
            self.n_pairs = self.n_pairs.saturating_add(1);
            let rate = (1.0 / f64::from(self.n_pairs)).max(0.01);
            // Track the median absolute step multiplicatively: robust to the spikes it must not hide.
            let step = (x - self.previous).abs();
            if self.step_scale <= 0.0 {
                self.step_scale = step;
            } else if step > self.step_scale {
                self.step_scale *= 1.0 + 2.0 * rate;
            } else if step < self.step_scale {
                self.step_scale *= 1.0 - 2.0 * rate;
            }
            self.repeat_rate += rate * (f64::from(u8::from(repeated)) - self.repeat_rate);
        }
        self.previous = x;
        if self.run_len == 0 {
            return 0.0;
        }
        // A repeat rate from a few dozen pairs cannot make a long run surprising: a run longer than
        // the history it is judged against, or one that history could never make alarming, is a
        // series settling (an idle process after its start-up), not a stuck one.
        let per_repeat = -self.run_q.log10();
        if self.run_len > self.run_history || f64::from(self.run_history) * per_repeat < self.params.flatline_evidence {
            return 0.0;
        }
        let evidence = f64::from(self.run_len) * per_repeat;
        // Once the run carries twice the evidence the default needs (enough for a cautious
        // sensitivity too), report it for one more refractory period, then treat it as old news:
        // a sensor stuck for a day alarms once or twice, not all day.
        if evidence >= 2.0 * self.params.flatline_evidence && self.run_full_at.is_none() {
            self.run_full_at = Some(self.run_len);
        }
        match self.run_full_at {
            Some(full_at) if self.run_len > full_at.saturating_add(self.params.refractory_points) => 0.0,
            _ => evidence,
        }
    }

    /// Whether `x` is a gross new extreme while the detector is still learning: beyond the range seen so
    /// far by `learning_excess` times that range, and by at least the level's distance from zero. A few
    /// dozen points give a rough range, hence the wide margin: a slow endpoint whose latency jumps from
    /// milliseconds to hundreds of them passes, noise and the slow drift of a process settling do not.
    fn gross_extreme(&self, x: f64) -> bool {
        let range = self.max_seen - self.min_seen;
        let excess = (x - self.max_seen).max(self.min_seen - x);
        is_positive(excess) && excess >= self.params.learning_excess * range && excess >= self.level.abs()
    }

    /// Learns the extremes and level from a finite value.
    fn learn_extremes(&mut self, x: f64) {
        let rate = (1.0 / f64::from(self.n_seen)).max(self.params.level_alpha);
        self.level += rate * (x - self.level);
        let slow_rate = (1.0 / f64::from(self.n_seen)).max(self.params.likelihood_alpha);
        self.slow_level += slow_rate * (x - self.slow_level);
        if !self.level.is_finite() || !self.slow_level.is_finite() {
            // Overflow on extreme input (|x| near f64::MAX): restart the levels at the value.
            self.level = x;
            self.slow_level = x;
        }
        if self.n_seen > 1 {
            let decay = self.params.extreme_decay;
            self.max_seen -= decay * (self.max_seen - self.level).max(0.0);
            self.min_seen += decay * (self.level - self.min_seen).max(0.0);
        }
        self.min_seen = self.min_seen.min(x);
        self.max_seen = self.max_seen.max(x);
    }
}

impl Detector for EnsembleDetector {
    fn update(&mut self, point: Point) -> Score {
        if let Some(score) = non_finite_score(point.value) {
            return score;
        }
        let x = point.value;
        let p = &self.params;
        let warm = self.n_seen >= p.warm_up;
        // While learning, only a gross new extreme counts, at exactly the alarm level.
        let learning_alarm = !warm && p.learning_from > 0 && self.n_seen >= p.learning_from && self.gross_extreme(x);

        // The reference (default-sensitivity) extreme drives the refractory period; the user's
        // sensitivity only changes what is reported, so at a fixed threshold a higher
        // sensitivity never flags fewer points.
        let extreme = self.extreme_score(x, p.extreme_noise_margin);
        // Below the default sensitivity (caution > 0), a change must also be large enough to matter: beyond
        // the noise by up to 3 median steps, and away from the level by up to `cautious_effect` of it.
        let caution = (1.0 - 2.0 * self.sensitivity.value()).max(0.0);
        let effect_floor = caution * p.cautious_effect * self.slow_level.abs();
        let user_extreme = if caution > 0.0 {
            let margin_steps = p.extreme_noise_margin + 3.0 * caution;
            self.extreme_score_beyond(x, (margin_steps * self.step_scale).max(effect_floor))
        } else {
            extreme
        };
        let rarity = p.rarity_weight * self.rarity_likelihood.update(self.rarity(x));
        self.histogram.insert(x);

        let (seasonal_raw, seasonal_residual) = self.seasonal.observe(point);
        let seasonal_calibrated = self.seasonal_likelihood.update(seasonal_raw);
        let mut seasonal = 0.0;
        let mut seasonal_departure = 0.0;
        if let Some((residual, _)) = seasonal_residual {
            seasonal_departure = residual.abs();
            let gate_alpha = p.seasonal_gate_alpha;
            self.seasonal_fit += gate_alpha * (residual.abs() - self.seasonal_fit);
            self.level_fit += gate_alpha * ((x - self.level).abs() - self.level_fit);
            if self.seasonal_fit < self.level_fit {
                seasonal = p.seasonal_weight * seasonal_calibrated;
            }
        }

        let evidence = self.flatline_evidence(x);
        let flatline = (self.params.alarm_level * evidence / self.params.flatline_evidence.max(1e-9)).min(1.0);
        let p = &self.params;

        let others = rarity.max(seasonal).max(flatline);
        let learning = if learning_alarm { p.alarm_level } else { 0.0 };
        let reference = if warm { extreme.max(others) } else { learning };
        // Below the default the extreme channel (the one unbounded noise trips) is damped, and a rare value
        // or a time-of-day surprise counts only as far from the level (or the slot) as the effect floor (a
        // stuck value is judged by its run alone); above it every channel is amplified.
        let gain = self.sensitivity_gain();
        let user_rarity = if (x - self.slow_level).abs() >= effect_floor { rarity } else { 0.0 };
        let user_seasonal = if seasonal_departure >= effect_floor { seasonal } else { 0.0 };
        let user = (gain * user_extreme).max(gain.max(1.0) * user_rarity.max(user_seasonal).max(flatline));
        let mut combined = if warm { user.min(1.0) } else { learning };
        let silenced = self.refractory_left > 0;
        if silenced {
            self.refractory_left -= 1;
            combined = 0.0;
        } else if reference >= p.alarm_level {
            self.refractory_left = p.refractory_points;
        }
        self.last =
            ChannelScores { extreme, rarity, seasonal, flatline, silenced, learning: learning_alarm && !silenced };

        self.n_seen = self.n_seen.saturating_add(1);
        self.learn_extremes(x);
        Score::new(self.output_map(combined))
    }

    fn state_bytes(&self) -> usize {
        size_of_val(self)
            + self.histogram.heap_bytes()
            + self.rarity_likelihood.heap_bytes()
            + self.seasonal.heap_bytes()
            + self.seasonal_likelihood.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{Shape, generate};

    /// Indices of the alarms of the default ensemble over `values`, one point a second.
    fn alarms(values: &[f64]) -> Vec<usize> {
        let mut detector = EnsembleDetector::new(Sensitivity::DEFAULT);
        values
            .iter()
            .enumerate()
            .filter(|&(idx, &value)| detector.update(Point::new(idx as f64, value)).value() >= 0.5)
            .map(|(idx, _)| idx)
            .collect::<Vec<usize>>()
    }

    /// Indices of the alarms of the default ensemble at `sensitivity` over `values`, one point a second.
    fn alarms_at(sensitivity: Sensitivity, values: &[f64]) -> Vec<usize> {
        let mut detector = EnsembleDetector::new(sensitivity);
        values
            .iter()
            .enumerate()
            .filter(|&(idx, &value)| detector.update(Point::new(idx as f64, value)).value() >= 0.5)
            .map(|(idx, _)| idx)
            .collect::<Vec<usize>>()
    }

    /// Healthy process metrics: steady, discrete, with small moves never seen before.
    fn healthy_process() -> Vec<(&'static str, Vec<f64>)> {
        // Open file descriptors: 11, a twelfth now and then, then 13 (two connections at once).
        let mut fds: Vec<f64> = (0..3000).map(|idx| if idx % 97 == 0 { 12.0 } else { 11.0 }).collect();
        fds[2500] = 13.0;
        fds[2501] = 13.0;
        // Resident memory: 4.0 MiB in pages, creeping to 4.2 MiB under a burst of load.
        let page = 4096.0;
        let mut memory: Vec<f64> = (0..3000).map(|idx| 1024.0 * page + page * (idx % 3) as f64).collect();
        for (idx, value) in memory.iter_mut().enumerate().skip(2500) {
            *value = 1075.0 * page + page * (idx % 3) as f64;
        }
        vec![("fds", fds), ("memory", memory)]
    }

    #[test]
    fn the_actionable_sensitivity_ignores_small_moves_of_a_healthy_process_that_the_default_flags() {
        for (name, values) in healthy_process() {
            assert!(!alarms_at(Sensitivity::DEFAULT, &values).is_empty(), "{name}: the midpoint flags it");
            let cautious = alarms_at(Sensitivity::ACTIONABLE, &values);
            assert!(cautious.is_empty(), "{name}: {cautious:?}");
        }
    }

    #[test]
    fn the_actionable_sensitivity_still_flags_what_matters() {
        // Latency from a millisecond to 3 ms; memory doubling; fds leaking to 40.
        let mut latency = latency(1000);
        latency[600..].fill(0.003);
        let mut memory: Vec<f64> = (0..1000).map(|idx| 4.0e6 + 4096.0 * (idx % 3) as f64).collect();
        memory[600..].fill(8.0e6);
        let mut fds: Vec<f64> = (0..1000).map(|idx| if idx % 97 == 0 { 12.0 } else { 11.0 }).collect();
        for (offset, value) in fds[600..].iter_mut().enumerate() {
            *value = 11.0 + (offset / 10) as f64;
        }
        for (name, values, within) in [("latency", latency, 0), ("memory", memory, 0), ("fds", fds, 60)] {
            let found = alarms_at(Sensitivity::ACTIONABLE, &values);
            let first = found.iter().find(|&&idx| idx >= 600);
            assert!(first.is_some_and(|&idx| idx <= 600 + within), "{name}: {found:?}");
            assert!(found.iter().all(|&idx| idx >= 600), "{name}: false alarms {found:?}");
        }
    }

    /// A request latency of about a millisecond.
    fn latency(n: usize) -> Vec<f64> {
        (0..n).map(|idx| 0.001 + 0.0001 * ((idx * 7 % 5) as f64)).collect()
    }

    #[test]
    fn a_gross_jump_alarms_after_thirty_points_not_only_after_the_warm_up() {
        // A slow endpoint: the latency jumps from a millisecond to 200 ms at point 40.
        let mut values = latency(60);
        values[40..].fill(0.2);
        assert_eq!(alarms(&values), [40]);
        // Before 30 points nothing is known: no alarm.
        let mut early = latency(60);
        early[20..].fill(0.2);
        let early = alarms(&early);
        assert!(early.is_empty(), "{early:?}");
    }

    #[test]
    fn while_learning_ordinary_changes_do_not_alarm() {
        // A process settling: memory that climbs in steps of a few percent.
        let memory: Vec<f64> = (0..150).map(|idx| 30e6 + 1e6 * (idx / 10) as f64).collect();
        let memory = alarms(&memory);
        assert!(memory.is_empty(), "{memory:?}");
        // A jump by a third of the level, however far beyond the range: not gross enough yet.
        let mut stepped = vec![90.0; 150];
        stepped[60..].fill(120.0);
        let stepped = alarms(&stepped);
        assert!(stepped.is_empty(), "{stepped:?}");
        // Noise, heavy tails: nothing during the warm-up.
        for shape in [Shape::Noise, Shape::HeavyTailed, Shape::Seasonal] {
            for seed in 1..=5 {
                let series = generate(shape, 150, 1000, seed);
                let found = alarms(&series.values);
                assert!(found.is_empty(), "{shape:?} seed {seed}: {found:?}");
            }
        }
    }
}
