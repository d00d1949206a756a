//! Resource-exhaustion forecasting: [`TrendForecaster`] estimates when a trending series reaches a limit.

use serde::{Deserialize, Serialize};

use crate::stats::{clip, is_positive, normal_tail};

/// When a series is expected to reach a limit, and how sure the trend behind that is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Seconds from the latest sample until the fitted trend reaches the limit (0 if already there).
    pub seconds: f64,
    /// Confidence that the trend is real, `1 − p` of the slope's two-sided t-test, in `[0, 1]`.
    pub confidence: f64,
    /// Fitted level at the latest sample.
    pub level: f64,
    /// Fitted slope, in value units per second.
    pub slope_per_sec: f64,
}

/// Something that watches a series and predicts when it crosses a limit.
pub trait Forecaster {
    /// Feeds the next sample; non-finite values or timestamps are ignored.
    fn update(&mut self, timestamp_secs: f64, value: f64);

    /// The time until the trend reaches `limit`, or `None` when there is no trend toward it with
    /// at least the forecaster's minimum confidence (or too little data).
    fn time_to_reach(&self, limit: f64) -> Option<Forecast>;
}

/// Exponentially weighted least-squares line through recent samples, against real time.
///
/// Each sample's weight decays by `1 − alpha` per new sample (memory ≈ `1/alpha` samples), time
/// is measured from the latest sample so sums stay well conditioned, and after a warm-up the
/// value entering the fit is clipped at 4 residual standard deviations from the current line,
/// so a single spike barely tilts the trend. A forecast is given only when the slope's t-statistic
/// (slope over its standard error, with the effective sample size of the weights) gives at least
/// `min_confidence`, the slope points toward the limit, and at least `min_samples` were seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrendForecaster {
    alpha: f64,
    min_confidence: f64,
    min_samples: u32,
    origin: f64,
    sum_w: f64,
    sum_w2: f64,
    sum_t: f64,
    sum_v: f64,
    sum_tt: f64,
    sum_tv: f64,
    sum_vv: f64,
    n_seen: u32,
    /// Consecutive samples clipped on one side of the line: positive above, negative below.
    run: i32,
}

/// Samples in a row beyond the clipping band on one side that make a new regime rather than spikes.
const RESTART_AFTER: i32 = 3;

/// The fitted line: level at the origin, slope, residual std and slope standard error.
struct Fit {
    level: f64,
    slope: f64,
    resid_std: f64,
    slope_se: f64,
}

impl Default for TrendForecaster {
    fn default() -> Self {
        Self::new()
    }
}

impl TrendForecaster {
    /// Defaults: `alpha = 0.02` (≈ 50-sample memory), confidence 0.999, at least 20 samples.
    pub fn new() -> Self {
        Self::with_params(0.02, 0.999, 20)
    }

    /// Explicit parameters (`alpha` in (0, 1), `min_confidence` in [0, 1], `min_samples` ≥ 3).
    pub fn with_params(alpha: f64, min_confidence: f64, min_samples: u32) -> Self {
        Self {
            alpha: if alpha.is_finite() { alpha.clamp(1e-6, 0.5) } else { 0.02 },
            min_confidence: if min_confidence.is_finite() { min_confidence.clamp(0.0, 1.0) } else { 0.999 },
            min_samples: min_samples.max(3),
            origin: f64::NAN,
            sum_w: 0.0,
            sum_w2: 0.0,
            sum_t: 0.0,
            sum_v: 0.0,
            sum_tt: 0.0,
            sum_tv: 0.0,
            sum_vv: 0.0,
            n_seen: 0,
            run: 0,
        }
    }

    /// The fitted level at the latest sample and the slope per second, once there is a fit.
    pub fn trend(&self) -> Option<(f64, f64)> {
        self.fit().map(|fit| (fit.level, fit.slope))
    }

    /// Bytes of state per series.
    pub fn state_bytes(&self) -> usize {
        size_of_val(self)
    }

    fn fit(&self) -> Option<Fit> {
        if self.sum_w <= 0.0 {
            return None;
        }
        let mean_t = self.sum_t / self.sum_w;
        let mean_v = self.sum_v / self.sum_w;
        let var_t = self.sum_tt / self.sum_w - mean_t * mean_t;
        let cov_tv = self.sum_tv / self.sum_w - mean_t * mean_v;
        let var_v = self.sum_vv / self.sum_w - mean_v * mean_v;
        if !is_positive(var_t) {
            return None;
        }
        let slope = cov_tv / var_t;
        let level = mean_v - slope * mean_t;
        let resid_var = (var_v - slope * cov_tv).max(0.0);
        let n_eff = self.sum_w * self.sum_w / self.sum_w2.max(f64::MIN_POSITIVE);
        let dof = (n_eff - 2.0).max(1.0);
        let slope_se = (resid_var * n_eff / dof / (var_t * n_eff)).sqrt();
        Some(Fit { level, slope, resid_std: (resid_var * n_eff / dof).sqrt(), slope_se })
    }

    /// Forgets the fit and starts a new one at `origin`. Half the warm-up is asked again: a regime change
    /// was evidence enough that a new line is wanted, and a leak does not wait.
    fn restart(&mut self, origin: f64) {
        *self = Self {
            origin,
            n_seen: self.min_samples / 2,
            ..Self::with_params(self.alpha, self.min_confidence, self.min_samples)
        };
    }

    /// Moves the time origin to `new_origin`, re-expressing the sums.
    fn shift_origin(&mut self, new_origin: f64) {
        let d = new_origin - self.origin;
        self.sum_tt += -2.0 * d * self.sum_t + d * d * self.sum_w;
        self.sum_tv -= d * self.sum_v;
        self.sum_t -= d * self.sum_w;
        self.origin = new_origin;
    }
}

impl Forecaster for TrendForecaster {
    fn update(&mut self, timestamp_secs: f64, value: f64) {
        if !timestamp_secs.is_finite() || !value.is_finite() {
            return;
        }
        if self.origin.is_nan() {
            self.origin = timestamp_secs;
        } else if timestamp_secs > self.origin {
            self.shift_origin(timestamp_secs);
        }
        let t = timestamp_secs - self.origin;
        let mut value = value;
        let mut t = t;
        if let Some(fit) = self.fit().filter(|_| self.n_seen >= self.min_samples) {
            let expected = fit.level + fit.slope * t;
            let cap = 4.0 * fit.resid_std;
            let deviation = value - expected;
            self.run = match (deviation.abs() > cap, deviation > 0.0) {
                (false, _) => 0,
                (true, true) => self.run.max(0) + 1,
                (true, false) => self.run.min(0) - 1,
            };
            if self.run.abs() >= RESTART_AFTER {
                // Not spikes but a new regime: a leak that starts after a flat period, a level shift.
                // Clipped, these values would hold the old line for hundreds of samples (after a flat
                // history the band is nearly zero wide), so the fit starts afresh from here.
                self.restart(timestamp_secs);
                t = 0.0;
            } else {
                value = expected + clip(deviation, cap);
            }
        }
        let keep = 1.0 - self.alpha;
        self.sum_w = keep * self.sum_w + 1.0;
        self.sum_w2 = keep * keep * self.sum_w2 + 1.0;
        self.sum_t = keep * self.sum_t + t;
        self.sum_v = keep * self.sum_v + value;
        self.sum_tt = keep * self.sum_tt + t * t;
        self.sum_tv = keep * self.sum_tv + t * value;
        self.sum_vv = keep * self.sum_vv + value * value;
        self.n_seen = self.n_seen.saturating_add(1);
    }

    fn time_to_reach(&self, limit: f64) -> Option<Forecast> {
        if self.n_seen < self.min_samples || !limit.is_finite() {
            return None;
        }
        let fit = self.fit()?;
        let t_stat = if fit.slope_se > 0.0 { (fit.slope / fit.slope_se).abs() } else { f64::INFINITY };
        let confidence = (1.0 - 2.0 * normal_tail(t_stat)).clamp(0.0, 1.0);
        let gap = limit - fit.level;
        let forecast = |seconds: f64| Forecast { seconds, confidence, level: fit.level, slope_per_sec: fit.slope };
        if confidence < self.min_confidence || fit.slope == 0.0 {
            return None;
        }
        let seconds = gap / fit.slope;
        if seconds.is_finite() && seconds >= 0.0 { Some(forecast(seconds)) } else { None }
    }
}

/// The recent run of a fast trend: the last [`RUN_WINDOW`] samples, and a robust line through the run
/// of them that moves toward the limit now.
///
/// [`TrendForecaster`] weighs ~50 samples and asks a strong t-test: right for a slow leak, a day's disk
/// use; but a leak of megabytes a second reaches a limit of a few hundred MiB in a dozen samples, before
/// it has the points. This one fits a Theil–Sen line (the median of pairwise slopes: a few odd samples do
/// not tilt it) through the run that ends at the latest sample, and forecasts only when:
/// - the run has at least [`RUN_MIN_POINTS`] points, and at least 80 % of its steps go toward the limit;
/// - the line explains the run (R² ≥ 0.9) and the last step still goes at half its slope or more (a cache
///   that warmed up and stopped is flat at its last step);
/// - the run has lasted at least a third of the time it projects to remain ([`RUN_PERSISTENCE`]): the
///   extrapolation is never more than three times the evidence, so a short rise far from the limit, or
///   noise, does not forecast.
///
/// Its `confidence` is the line's R² over the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunForecaster {
    samples: std::collections::VecDeque<(f64, f64)>,
}

/// Samples a [`RunForecaster`] keeps.
pub(crate) const RUN_WINDOW: usize = 30;
/// Least points of a run that forecasts (four steps toward the limit).
pub(crate) const RUN_MIN_POINTS: usize = 5;
/// A run forecasts only when the time it projects to remain is at most this many times its length.
pub(crate) const RUN_PERSISTENCE: f64 = 3.0;
/// Least share of a run's steps that go toward the limit.
const RUN_MIN_SHARE: f64 = 0.8;
/// Least R² of the run's line.
const RUN_MIN_R2: f64 = 0.9;

impl RunForecaster {
    /// An empty one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every sample (the series was reset: a new process).
    pub fn clear(&mut self) {
        self.samples.clear();
    }
}

/// Where the run toward `direction` (+1 up, −1 down) that ends at the latest of `samples` starts: the
/// longest suffix that begins and ends with a step toward it and whose steps go toward it in at least
/// [`RUN_MIN_SHARE`] of cases (`samples.len()` when there is none). A step goes toward it when it moves at
/// least a quarter of the median of the last four steps that way: jitter around a flat level before a
/// leak is not part of the leak's run.
fn run_start(samples: &[(f64, f64)], direction: f64) -> usize {
    let n = samples.len();
    if n < 2 {
        return n;
    }
    let step = |i: usize| (samples[i].1 - samples[i - 1].1) * direction;
    let mut recent: Vec<f64> = (n.saturating_sub(RUN_MIN_POINTS - 1).max(1)..n).map(step).collect();
    let Some(typical) = median(&mut recent).filter(|typical| *typical > 0.0) else { return n };
    let toward = |i: usize| step(i) >= 0.25 * typical;
    if !toward(n - 1) {
        return n;
    }
    let (mut n_steps, mut n_toward, mut start) = (0_usize, 0_usize, n - 1);
    for i in (1..n).rev() {
        n_steps += 1;
        n_toward += usize::from(toward(i));
        if toward(i) && (n_toward as f64) >= RUN_MIN_SHARE * n_steps as f64 {
            start = i - 1;
        }
    }
    start
}

/// Theil–Sen: the median of the pairwise slopes, and the median intercept for it; with the line's R².
fn theil_sen(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 > a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    let slope = median(&mut slopes)?;
    let mut intercepts: Vec<f64> = points.iter().map(|(t, v)| v - slope * t).collect();
    let intercept = median(&mut intercepts)?;
    let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
    let total: f64 = points.iter().map(|p| (p.1 - mean).powi(2)).sum();
    let residual: f64 = points.iter().map(|(t, v)| (v - intercept - slope * t).powi(2)).sum();
    let r2 = if total > 0.0 { 1.0 - residual / total } else { 0.0 };
    Some((slope, intercept, r2))
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] })
}

impl Forecaster for RunForecaster {
    fn update(&mut self, timestamp_secs: f64, value: f64) {
        if !timestamp_secs.is_finite() || !value.is_finite() {
            return;
        }
        if self.samples.back().is_some_and(|&(last, _)| timestamp_secs <= last) {
            return;
        }
        if self.samples.len() == RUN_WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back((timestamp_secs, value));
    }

    fn time_to_reach(&self, limit: f64) -> Option<Forecast> {
        let &(t_last, v_last) = self.samples.back()?;
        if !limit.is_finite() {
            return None;
        }
        let direction = if limit >= v_last { 1.0 } else { -1.0 };
        let samples: Vec<(f64, f64)> = self.samples.iter().copied().collect();
        let run = &samples[run_start(&samples, direction)..];
        if run.len() < RUN_MIN_POINTS {
            return None;
        }
        // Time from the latest sample keeps the sums well conditioned.
        let points: Vec<(f64, f64)> = run.iter().map(|&(t, v)| (t - t_last, v)).collect();
        let (slope, level, r2) = theil_sen(&points)?;
        if slope * direction <= 0.0 || r2 < RUN_MIN_R2 {
            return None;
        }
        let [.., (t_before, v_before), _] = run else { return None };
        let last_step = (v_last - v_before) / (t_last - t_before);
        if last_step * direction < 0.5 * slope * direction {
            return None;
        }
        let seconds = ((limit - level) / slope).max(0.0);
        let lasted = t_last - run[0].0;
        if !seconds.is_finite() || seconds > RUN_PERSISTENCE * lasted {
            return None;
        }
        Some(Forecast { seconds, confidence: r2, level, slope_per_sec: slope })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    #[test]
    fn linear_growth_gives_time_to_limit_within_tolerance() {
        // RSS grows 1 MB per minute from 100 MB with ±2 MB noise, sampled every 15 s; limit 400 MB.
        let mut forecaster = TrendForecaster::new();
        let mut seed = 7;
        let mb = 1e6;
        let mut now = 0.0;
        for step in 0..400 {
            now = f64::from(step) * 15.0;
            forecaster.update(now, 100.0 * mb + now / 60.0 * mb + 4.0 * mb * noise(&mut seed));
        }
        let forecast = forecaster.time_to_reach(400.0 * mb).expect("clear upward trend");
        let truth = (400.0 - 100.0 - now / 60.0) * 60.0;
        assert!((forecast.seconds - truth).abs() < 0.1 * truth, "{} vs {truth}", forecast.seconds);
        assert!(forecast.confidence > 0.999);
        assert!(forecaster.time_to_reach(0.0).is_none(), "a limit behind the trend is never reached");
    }

    #[test]
    fn noise_without_trend_gives_no_forecast() {
        let mut forecaster = TrendForecaster::new();
        let mut seed = 11;
        for step in 0..2_000 {
            forecaster.update(f64::from(step) * 10.0, 50.0 + noise(&mut seed));
            if step > 100 && step % 50 == 0 {
                assert!(forecaster.time_to_reach(60.0).is_none(), "step {step}");
            }
        }
    }

    #[test]
    fn decreasing_series_forecasts_lower_limit_and_survives_bad_input() {
        let mut forecaster = TrendForecaster::new();
        forecaster.update(f64::NAN, 1.0);
        forecaster.update(0.0, f64::INFINITY);
        for step in 0..100 {
            let t = f64::from(step);
            forecaster.update(t, 1_000.0 - 2.0 * t);
            forecaster.update(t, 1_000.0 - 2.0 * t); // duplicate timestamp
        }
        let forecast = forecaster.time_to_reach(0.0).expect("downward trend");
        assert!((forecast.seconds - (1_000.0 - 198.0) / 2.0).abs() < 1.0, "{forecast:?}");
        assert!(forecaster.time_to_reach(f64::NAN).is_none());
    }

    #[test]
    fn state_is_96_bytes() {
        assert_eq!(TrendForecaster::new().state_bytes(), 96);
    }

    #[test]
    fn a_leak_that_starts_after_a_flat_period_is_forecast_before_the_limit() {
        // RSS flat at 10 MiB (page-sized jitter) for ten minutes, sampled every second; then it grows
        // 3 MiB/s toward a 96 MiB limit, which it reaches about 29 s later.
        let mib = 1_048_576.0;
        let mut forecaster = TrendForecaster::new();
        let mut seed = 3;
        for step in 0..600 {
            forecaster.update(f64::from(step), 10.0 * mib + 4096.0 * (noise(&mut seed) * 4.0).round());
        }
        assert!(forecaster.time_to_reach(96.0 * mib).is_none(), "no trend while flat");
        let mut first = None;
        for second in 1..=28 {
            let now = 599.0 + f64::from(second);
            forecaster.update(now, 10.0 * mib + 3.0 * mib * f64::from(second));
            if first.is_none() {
                first = forecaster.time_to_reach(96.0 * mib).map(|forecast| (second, forecast));
            }
        }
        let (second, forecast) = first.expect("forecast before the limit");
        let truth = (96.0 - 10.0) / 3.0 - f64::from(second);
        assert!(second <= 15, "forecast only {second} s into the leak");
        assert!((forecast.seconds - truth).abs() < 0.3 * truth, "{} s vs {truth} s", forecast.seconds);
        assert!((forecast.slope_per_sec / (3.0 * mib) - 1.0).abs() < 0.2, "{forecast:?}");
    }

    #[test]
    fn too_little_data_gives_no_forecast() {
        let mut forecaster = TrendForecaster::new();
        for step in 0..5 {
            forecaster.update(f64::from(step), f64::from(step));
        }
        assert!(forecaster.time_to_reach(100.0).is_none());
    }
    /// RSS of a replica (MiB) sampled every second with page-sized jitter: `mib(t)` at second t; the
    /// first second at which the run forecast fires, with its forecast.
    fn first_run_forecast(seconds: u32, limit_mib: f64, mib: impl Fn(f64) -> f64) -> Option<(u32, Forecast)> {
        let mut forecaster = RunForecaster::new();
        let mut seed = 5;
        let page = 4096.0 / 1_048_576.0;
        (0..seconds).find_map(|second| {
            let t = f64::from(second);
            forecaster.update(t, mib(t) + page * (noise(&mut seed) * 8.0).round());
            forecaster.time_to_reach(limit_mib).map(|forecast| (second, forecast))
        })
    }

    /// Issue 14's leak game day: 16 MiB/s (and 4 MiB/s) from 12 MiB toward 200 MiB, starting after a
    /// minute flat: forecast early enough to replace the replica before it gets there.
    #[test]
    fn a_fast_leak_is_forecast_within_a_few_samples_well_before_the_limit() {
        for rate in [16.0, 4.0] {
            let leak = |t: f64| if t <= 60.0 { 12.0 } else { 12.0 + rate * (t - 60.0) };
            let reaches = 60.0 + (200.0 - 12.0) / rate;
            let (second, forecast) = first_run_forecast(200, 200.0, leak).expect("forecast before the limit");
            let left = reaches - f64::from(second);
            assert!(second <= 60 + if rate > 10.0 { 5 } else { 14 }, "{rate} MiB/s: forecast at {second} s");
            assert!(left >= 6.0, "{rate} MiB/s: only {left} s left");
            assert!((forecast.seconds - left).abs() < 0.25 * left, "{rate}: {} s vs {left} s", forecast.seconds);
            assert!((forecast.slope_per_sec / rate - 1.0).abs() < 0.1, "{forecast:?}");
        }
    }

    /// A healthy replica whose memory steps up once (a cache loaded at once, or warmed over three
    /// seconds), then stays flat with page-sized jitter, is never forecast; nor is jitter alone, nor a
    /// slow creep far from the limit (the slow forecaster's job).
    #[test]
    fn a_step_a_short_warm_up_jitter_or_a_slow_creep_do_not_forecast() {
        type Memory = Box<dyn Fn(f64) -> f64>;
        let cases: [(&str, Memory); 4] = [
            ("step", Box::new(|t| if t < 30.0 { 20.0 } else { 120.0 })),
            ("warm-up", Box::new(|t| 20.0 + 30.0 * (t - 30.0).clamp(0.0, 3.0))),
            ("jitter", Box::new(|_| 40.0)),
            ("creep", Box::new(|t| 40.0 + 0.05 * t)),
        ];
        for (name, mib) in cases {
            assert_eq!(first_run_forecast(600, 200.0, mib).map(|(second, _)| second), None, "{name}");
        }
    }

    #[test]
    fn the_run_forecaster_forecasts_a_falling_series_and_ignores_bad_input() {
        let mut forecaster = RunForecaster::new();
        forecaster.update(f64::NAN, 1.0);
        forecaster.update(0.0, f64::INFINITY);
        for step in 0..10 {
            let t = f64::from(step);
            forecaster.update(t, 100.0 - 5.0 * t);
            forecaster.update(t, 0.0); // a duplicate timestamp is skipped
        }
        let forecast = forecaster.time_to_reach(40.0).expect("falling toward 40");
        assert!((forecast.seconds - 3.0).abs() < 1e-9, "{forecast:?}");
        assert!(forecaster.time_to_reach(f64::NAN).is_none());
        forecaster.clear();
        assert!(forecaster.time_to_reach(40.0).is_none());
    }
}
