//! Detectors and forecasters attached to many series: one instance per label set, fed only new points,
//! turning scores and forecasts into firing and resolved transitions. Pure: points and time come in.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::alerting::LabelSet;
use crate::forecast::{Forecaster, RunForecaster, TrendForecaster};
use crate::point::{Detector, Point};
use crate::registry::{self, AnyDetector, UnknownDetector};
use crate::sensitivity::Sensitivity;

/// Scores at or above this are alarms, for every registered detector.
pub const ALARM_SCORE: f64 = 0.5;

/// A change worth reporting for one series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesTransition {
    /// Which series.
    pub labels: LabelSet,
    /// True when the condition starts, false when it resolves.
    pub firing: bool,
    /// When the condition started (seconds).
    pub since: f64,
    /// The score (anomalies: at the alarm, or the latest one when resolving) or seconds until the
    /// limit (forecasts; infinite once the trend no longer approaches it, NaN when unknown).
    pub value: f64,
    /// Why, as data: the caller words it, in the series' unit.
    pub reason: TransitionReason,
}

/// Why a series' condition started or resolved.
#[derive(Clone, Debug, PartialEq)]
pub enum TransitionReason {
    /// A detector alarmed on a point.
    Alarm {
        /// The point's value.
        value: f64,
        /// Its score.
        score: f64,
        /// The default ensemble's strongest channel, in words (`new extreme`, `rare level`, ...).
        channel: Option<&'static str>,
    },
    /// The detector has not alarmed for this long: the anomaly is over.
    Quiet {
        /// Seconds without an alarm that resolve an anomaly.
        after_secs: f64,
    },
    /// The series' trend reaches the limit within the horizon.
    Forecast {
        /// The fitted level now.
        level: f64,
        /// Its change per second.
        slope_per_sec: f64,
        /// The limit.
        limit: f64,
        /// Seconds until the trend reaches the limit.
        seconds: f64,
        /// Confidence of the fit, 0..1.
        confidence: f64,
    },
    /// The series fell back to this value (a restarted process, a cleaned-up disk): the trend is gone.
    Reset {
        /// The value it fell back to.
        value: f64,
    },
    /// The trend no longer reaches the limit within the horizon.
    Receding,
    /// The series is no longer fed.
    Gone,
}

#[derive(Clone, Serialize, Deserialize)]
struct TrackedDetector {
    /// Stored with its variant as an outer tag ([`AnyDetector`]'s own serde form is internally
    /// tagged, which only self-describing formats read; snapshots are bincode).
    #[serde(with = "stored_detector")]
    detector: AnyDetector,
    last_ts: f64,
    last_seen: f64,
    /// When the current anomaly started, and the time of its latest alarm.
    anomaly: Option<(f64, f64)>,
    /// The latest score.
    last_score: f64,
    /// When the series last ended (a staleness marker acted upon by [`DetectorBank::restart`]).
    ended_at: f64,
}

/// [`AnyDetector`] with an external tag, for non-self-describing formats.
mod stored_detector {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::registry::AnyDetector;
    use crate::{
        CadOseDetector, CusumDetector, EnsembleDetector, EwmaDetector, MadDetector, SeasonalDetector, ShiftDetector,
    };

    #[derive(Serialize)]
    enum Ref<'a> {
        Default(&'a EnsembleDetector),
        Ewma(&'a EwmaDetector),
        Mad(&'a MadDetector),
        Seasonal(&'a SeasonalDetector),
        Cusum(&'a CusumDetector),
        Shift(&'a ShiftDetector),
        CadOse(&'a CadOseDetector),
    }

    #[derive(Deserialize)]
    #[expect(clippy::large_enum_variant, reason = "decoded once and moved into an `AnyDetector` of the same shape")]
    enum Owned {
        Default(EnsembleDetector),
        Ewma(EwmaDetector),
        Mad(MadDetector),
        Seasonal(SeasonalDetector),
        Cusum(CusumDetector),
        Shift(ShiftDetector),
        CadOse(CadOseDetector),
    }

    pub(super) fn serialize<S: Serializer>(detector: &AnyDetector, serializer: S) -> Result<S::Ok, S::Error> {
        match detector {
            AnyDetector::Default(d) => Ref::Default(d),
            AnyDetector::Ewma(d) => Ref::Ewma(d),
            AnyDetector::Mad(d) => Ref::Mad(d),
            AnyDetector::Seasonal(d) => Ref::Seasonal(d),
            AnyDetector::Cusum(d) => Ref::Cusum(d),
            AnyDetector::Shift(d) => Ref::Shift(d),
            AnyDetector::CadOse(d) => Ref::CadOse(d),
        }
        .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<AnyDetector, D::Error> {
        Ok(match Owned::deserialize(deserializer)? {
            Owned::Default(d) => AnyDetector::Default(d),
            Owned::Ewma(d) => AnyDetector::Ewma(d),
            Owned::Mad(d) => AnyDetector::Mad(d),
            Owned::Seasonal(d) => AnyDetector::Seasonal(d),
            Owned::Cusum(d) => AnyDetector::Cusum(d),
            Owned::Shift(d) => AnyDetector::Shift(d),
            Owned::CadOse(d) => AnyDetector::CadOse(d),
        })
    }
}

/// What a [`DetectorBank`] learnt, per series: its detectors' state (bounded, as the detectors are),
/// for a snapshot. Opaque: only a bank reads it back.
#[derive(Clone, Serialize, Deserialize)]
pub struct DetectorBankState(Vec<(LabelSet, TrackedDetector)>);

impl DetectorBankState {
    /// Series in it.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has no series.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a [`ForecastBank`] learnt, per series (opaque, for a snapshot).
#[derive(Clone, Serialize, Deserialize)]
pub struct ForecastBankState(Vec<(LabelSet, TrackedForecast)>);

impl ForecastBankState {
    /// Series in it.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has no series.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One detector per series of an attachment.
pub struct DetectorBank {
    detector_name: String,
    sensitivity: Sensitivity,
    max_series: usize,
    resolve_after_secs: f64,
    series: HashMap<LabelSet, TrackedDetector>,
    refused: u64,
    /// Scores at or above this are alarms: [`ALARM_SCORE`], or higher once feedback relaxed the bank.
    alarm_score: f64,
}

impl DetectorBank {
    /// A bank of `detector_name` detectors; at most `max_series` series are tracked (the rest are refused
    /// and counted), and an anomaly resolves after `resolve_after_secs` without a new alarm.
    pub fn new(
        detector_name: &str,
        sensitivity: Sensitivity,
        max_series: usize,
        resolve_after_secs: f64,
    ) -> Result<Self, UnknownDetector> {
        registry::build(detector_name, sensitivity)?;
        Ok(Self {
            detector_name: detector_name.to_owned(),
            sensitivity,
            max_series,
            resolve_after_secs,
            series: HashMap::new(),
            refused: 0,
            alarm_score: ALARM_SCORE,
        })
    }

    /// What the bank learnt (every series' detector), for a snapshot.
    pub fn export(&self) -> DetectorBankState {
        let mut series: Vec<(LabelSet, TrackedDetector)> =
            self.series.iter().map(|(labels, tracked)| (labels.clone(), tracked.clone())).collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        DetectorBankState(series)
    }

    /// Takes what a bank of the same detector and sensitivity learnt (`export`), at `now`: the
    /// detectors go on from their state, without a warm-up. Anomalies that were open are not (the run
    /// that had them resolved them). At most `max_series` series are taken; returns how many.
    pub fn import(&mut self, state: DetectorBankState, now: f64) -> usize {
        let mut n_taken = 0;
        for (labels, mut tracked) in state.0 {
            if self.series.len() >= self.max_series {
                break;
            }
            tracked.anomaly = None;
            tracked.last_seen = now;
            self.series.insert(labels, tracked);
            n_taken += 1;
        }
        n_taken
    }

    /// Forgets the series whose labels `forget` picks (their detectors start over).
    pub fn forget(&mut self, forget: impl Fn(&LabelSet) -> bool) {
        self.series.retain(|labels, _| !forget(labels));
    }

    /// Relaxes the bank by `factor` (1 = as configured; at least 1): a score must then reach
    /// `1 − (1 − ALARM_SCORE) / factor` to alarm (0.75 at 2, 0.875 at 4). What the detectors learnt
    /// stays: only the bar moves, so fewer alarms follow without a warm-up.
    pub fn relax(&mut self, factor: f64) {
        let factor = if factor.is_finite() { factor.max(1.0) } else { 1.0 };
        self.alarm_score = 1.0 - (1.0 - ALARM_SCORE) / factor;
    }

    /// The score a point must reach to alarm.
    pub fn alarm_score(&self) -> f64 {
        self.alarm_score
    }

    /// Feeds the points of one series at `now`; points not newer than the last one fed are skipped, so
    /// the caller may pass overlapping windows.
    pub fn feed(&mut self, labels: &LabelSet, points: &[(f64, f64)], now: f64) -> Vec<SeriesTransition> {
        if !self.series.contains_key(labels) {
            if self.series.len() >= self.max_series {
                self.refused += 1;
                return Vec::new();
            }
            let Ok(detector) = registry::build(&self.detector_name, self.sensitivity) else { return Vec::new() };
            self.series.insert(
                labels.clone(),
                TrackedDetector {
                    detector,
                    last_ts: f64::NEG_INFINITY,
                    last_seen: now,
                    anomaly: None,
                    last_score: f64::NAN,
                    ended_at: f64::NEG_INFINITY,
                },
            );
        }
        let alarm_score = self.alarm_score;
        let Some(tracked) = self.series.get_mut(labels) else { return Vec::new() };
        tracked.last_seen = now;
        let mut transitions = Vec::new();
        for &(ts, value) in points {
            if ts <= tracked.last_ts {
                continue;
            }
            tracked.last_ts = ts;
            let score = tracked.detector.update(Point::new(ts, value)).value();
            tracked.last_score = score;
            if score < alarm_score {
                continue;
            }
            match &mut tracked.anomaly {
                Some((_, last_alarm)) => *last_alarm = ts,
                None => {
                    tracked.anomaly = Some((ts, ts));
                    let channel = match &tracked.detector {
                        AnyDetector::Default(ensemble) if ensemble.last_channels().learning => {
                            Some("far beyond anything seen while still learning")
                        }
                        AnyDetector::Default(ensemble) => {
                            let channels = ensemble.last_channels();
                            let mut named: Vec<(&'static str, f64)> = vec![
                                ("new extreme", channels.extreme),
                                ("rare level", channels.rarity),
                                ("unusual for the time of day", channels.seasonal),
                                ("stuck value", channels.flatline),
                            ];
                            named.sort_by(|a, b| b.1.total_cmp(&a.1));
                            Some(named[0].0)
                        }
                        _ => None,
                    };
                    transitions.push(SeriesTransition {
                        labels: labels.clone(),
                        firing: true,
                        since: ts,
                        value: score,
                        reason: TransitionReason::Alarm { value, score, channel },
                    });
                }
            }
        }
        transitions
    }

    /// The series ended at `at` (a staleness marker: the replica's process exited): the points after it
    /// come from a new process and are learnt afresh, warm-up included, as a new series' are (as
    /// Prometheus treats a counter reset, the old process's level says nothing about the new one's). An
    /// anomaly already open stays open and resolves after its quiet time. An end already acted upon, or
    /// older than the points fed, changes nothing, so the caller may pass overlapping windows.
    pub fn restart(&mut self, labels: &LabelSet, at: f64) {
        let Some(tracked) = self.series.get_mut(labels) else { return };
        if at < tracked.last_ts || at <= tracked.ended_at {
            return;
        }
        let Ok(detector) = registry::build(&self.detector_name, self.sensitivity) else { return };
        tracked.detector = detector;
        tracked.last_ts = at;
        tracked.ended_at = at;
    }

    /// Resolves anomalies quiet for the resolve time and forgets series not fed for `forget_after_secs`.
    pub fn sweep(&mut self, now: f64, forget_after_secs: f64) -> Vec<SeriesTransition> {
        let mut transitions = Vec::new();
        let resolve_after = self.resolve_after_secs;
        self.series.retain(|labels, tracked| {
            let forget = now - tracked.last_seen > forget_after_secs;
            if let Some((since, last_alarm)) = tracked.anomaly
                && (forget || tracked.last_ts - last_alarm >= resolve_after || now - last_alarm >= 2.0 * resolve_after)
            {
                tracked.anomaly = None;
                transitions.push(SeriesTransition {
                    labels: labels.clone(),
                    firing: false,
                    since,
                    value: tracked.last_score,
                    reason: TransitionReason::Quiet { after_secs: resolve_after },
                });
            }
            !forget
        });
        transitions
    }

    /// Series tracked.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Series refused because the bank was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct TrackedForecast {
    forecaster: TrendForecaster,
    /// The fast one: a leak of megabytes a second is forecast from its last few samples.
    #[serde(default)]
    run: RunForecaster,
    /// +1 when the limit is above the series (memory, disk used), −1 when below (free space).
    direction: f64,
    /// The value the current trend started from.
    run_start: f64,
    last_ts: f64,
    last_value: f64,
    last_seen: f64,
    firing_since: Option<f64>,
}

/// One forecaster per series, warning when a series will reach `limit` within `horizon_secs`.
pub struct ForecastBank {
    limit: f64,
    horizon_secs: f64,
    max_series: usize,
    series: HashMap<LabelSet, TrackedForecast>,
}

impl ForecastBank {
    /// Warns when the trend reaches `limit` within `horizon_secs`; tracks at most `max_series` series.
    pub fn new(limit: f64, horizon_secs: f64, max_series: usize) -> Self {
        Self { limit, horizon_secs, max_series, series: HashMap::new() }
    }

    /// What the bank learnt (every series' forecaster), for a snapshot.
    pub fn export(&self) -> ForecastBankState {
        let mut series: Vec<(LabelSet, TrackedForecast)> =
            self.series.iter().map(|(labels, tracked)| (labels.clone(), tracked.clone())).collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        ForecastBankState(series)
    }

    /// Takes what a bank with the same limit and horizon learnt, at `now` (warnings that were firing
    /// are not); returns how many series it took.
    pub fn import(&mut self, state: ForecastBankState, now: f64) -> usize {
        let mut n_taken = 0;
        for (labels, mut tracked) in state.0 {
            if self.series.len() >= self.max_series {
                break;
            }
            tracked.firing_since = None;
            tracked.last_seen = now;
            self.series.insert(labels, tracked);
            n_taken += 1;
        }
        n_taken
    }

    /// Forgets the series whose labels `forget` picks.
    pub fn forget(&mut self, forget: impl Fn(&LabelSet) -> bool) {
        self.series.retain(|labels, _| !forget(labels));
    }

    /// Feeds the points of one series at `now` (points not newer than the last one fed are skipped).
    pub fn feed(&mut self, labels: &LabelSet, points: &[(f64, f64)], now: f64) -> Vec<SeriesTransition> {
        if !self.series.contains_key(labels) && self.series.len() >= self.max_series {
            return Vec::new();
        }
        let limit = self.limit;
        let first_value = points.iter().map(|p| p.1).find(|v| v.is_finite()).unwrap_or(limit);
        let tracked = self.series.entry(labels.clone()).or_insert_with(|| TrackedForecast {
            forecaster: TrendForecaster::new(),
            run: RunForecaster::new(),
            direction: if first_value <= limit { 1.0 } else { -1.0 },
            run_start: first_value,
            last_ts: f64::NEG_INFINITY,
            last_value: f64::NAN,
            last_seen: now,
            firing_since: None,
        });
        tracked.last_seen = now;
        let mut fed = false;
        let mut transitions = Vec::new();
        for &(ts, value) in points {
            if ts <= tracked.last_ts || !value.is_finite() {
                continue;
            }
            // Falling back by more than half of what the run gained, and by a tenth of the way to the limit,
            // is a reset (a restarted process's memory, a cleaned disk): the old trend no longer applies.
            // Noise is far smaller than either.
            let fall = (tracked.last_value - value) * tracked.direction;
            let gained = (tracked.last_value - tracked.run_start) * tracked.direction;
            if fall > 0.5 * gained.max(0.0) && fall > 0.1 * (limit - tracked.run_start).abs() {
                tracked.forecaster = TrendForecaster::new();
                tracked.run.clear();
                tracked.run_start = value;
                if let Some(since) = tracked.firing_since.take() {
                    transitions.push(SeriesTransition {
                        labels: labels.clone(),
                        firing: false,
                        since,
                        value: f64::INFINITY,
                        reason: TransitionReason::Reset { value },
                    });
                }
            }
            tracked.forecaster.update(ts, value);
            tracked.run.update(ts, value);
            tracked.last_ts = ts;
            tracked.last_value = value;
            fed = true;
        }
        if !fed {
            return transitions;
        }
        // The sooner of the two: the slow one's fit over a long memory, the fast one's recent run.
        let forecast = match (tracked.forecaster.time_to_reach(limit), tracked.run.time_to_reach(limit)) {
            (Some(slow), Some(fast)) => Some(if fast.seconds < slow.seconds { fast } else { slow }),
            (slow, fast) => slow.or(fast),
        };
        let (fitted, slope) = tracked.forecaster.trend().unwrap_or((tracked.last_value, 0.0));
        let past_limit =
            (tracked.last_value - limit) * tracked.direction >= 0.0 || (fitted - limit) * tracked.direction >= 0.0;
        // Resolving needs evidence: the series stopped approaching the limit, or the limit is comfortably
        // beyond the horizon. An uncertain fit near the limit keeps the warning.
        // Without a fit (the forecaster just started afresh on a new regime) nothing says it recedes.
        let receding = tracked.forecaster.trend().is_some() && slope * tracked.direction <= 0.0;
        match (forecast, tracked.firing_since) {
            (Some(forecast), None) if forecast.seconds <= self.horizon_secs => {
                tracked.firing_since = Some(tracked.last_ts);
                transitions.push(SeriesTransition {
                    labels: labels.clone(),
                    firing: true,
                    since: tracked.last_ts,
                    value: forecast.seconds,
                    reason: TransitionReason::Forecast {
                        level: forecast.level,
                        slope_per_sec: forecast.slope_per_sec,
                        limit,
                        seconds: forecast.seconds,
                        confidence: forecast.confidence,
                    },
                });
            }
            // Hysteresis: resolve only once the limit is comfortably beyond the horizon, or there is no
            // trend toward it any more; a series at or past its limit stays firing until it comes back.
            (forecast, Some(since))
                if !past_limit && (receding || forecast.is_some_and(|f| f.seconds > 1.5 * self.horizon_secs)) =>
            {
                tracked.firing_since = None;
                transitions.push(SeriesTransition {
                    labels: labels.clone(),
                    firing: false,
                    since,
                    value: forecast.map_or(f64::INFINITY, |f| f.seconds),
                    reason: TransitionReason::Receding,
                });
            }
            _ => {}
        }
        transitions
    }

    /// Forgets series not fed for `forget_after_secs`, resolving their warnings.
    pub fn sweep(&mut self, now: f64, forget_after_secs: f64) -> Vec<SeriesTransition> {
        let mut transitions = Vec::new();
        self.series.retain(|labels, tracked| {
            let forget = now - tracked.last_seen > forget_after_secs;
            if forget && let Some(since) = tracked.firing_since {
                transitions.push(SeriesTransition {
                    labels: labels.clone(),
                    firing: false,
                    since,
                    value: f64::NAN,
                    reason: TransitionReason::Gone,
                });
            }
            !forget
        });
        transitions
    }

    /// Series tracked.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// True when no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imported_bank_alarms_on_the_first_spike_where_a_fresh_one_is_still_warming_up() {
        let series = labels("latency");
        let steady: Vec<(f64, f64)> = (0..200).map(|t| (f64::from(t), 10.0 + f64::from(t % 5) * 0.1)).collect();
        let mut learnt = DetectorBank::new("ewma", Sensitivity::DEFAULT, 10, 60.0).expect("known detector");
        assert!(learnt.feed(&series, &steady, 200.0).is_empty());
        let state = learnt.export();
        assert_eq!(state.len(), 1);
        // (The encoded round trip is mend-detection's snapshot test: JSON has no infinities.)
        let spike = [(201.0, 50.0)];
        let mut restored = DetectorBank::new("ewma", Sensitivity::DEFAULT, 10, 60.0).expect("known detector");
        assert_eq!(restored.import(state, 201.0), 1);
        assert_eq!(restored.feed(&series, &spike, 201.0).len(), 1, "no warm-up: the first spike alarms");
        let mut fresh = DetectorBank::new("ewma", Sensitivity::DEFAULT, 10, 60.0).expect("known detector");
        assert!(fresh.feed(&series, &spike, 201.0).is_empty(), "a fresh detector is still warming up");
        restored.forget(|l| l == &series);
        assert_eq!(restored.len(), 0);
    }

    fn labels(name: &str) -> LabelSet {
        LabelSet::from([("series".to_owned(), name.to_owned())])
    }

    #[test]
    fn a_spike_fires_once_then_resolves_after_quiet() {
        let mut bank = DetectorBank::new("default", Sensitivity::default(), 10, 60.0).expect("known detector");
        let series = labels("a");
        let mut points: Vec<(f64, f64)> = (0..700).map(|i| (i as f64, 10.0 + (i % 5) as f64)).collect();
        points[500].1 = 500.0;
        // Fed in overlapping chunks, as an evaluation loop reading windows would.
        let mut transitions = Vec::new();
        for end in (50_usize..=540).step_by(10) {
            transitions.extend(bank.feed(&series, &points[end.saturating_sub(100)..end], end as f64));
        }
        let fired: Vec<&SeriesTransition> = transitions.iter().filter(|t| t.firing).collect();
        assert_eq!(fired.len(), 1, "{transitions:?}");
        assert_eq!(fired[0].since, 500.0);
        assert!(
            matches!(fired[0].reason, TransitionReason::Alarm { value: 500.0, channel: Some("new extreme"), .. }),
            "{:?}",
            fired[0].reason
        );
        assert!(bank.sweep(540.0, 3600.0).is_empty(), "39 s without an alarm is not yet quiet");
        bank.feed(&series, &points[540..700], 700.0);
        let resolved = bank.sweep(700.0, 3600.0);
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].firing);
        // Resolved with the latest score, not the alarm's.
        assert!(resolved[0].value < ALARM_SCORE, "{:?}", resolved[0]);
        assert_eq!(resolved[0].reason, TransitionReason::Quiet { after_secs: 60.0 });
    }

    /// A replica's process series, as the detect loop reads it: 1 s samples, read every 10 s in
    /// overlapping 120 s windows, the end of a process marked where its staleness marker is.
    fn replay_process_series(
        bank: &mut DetectorBank,
        series: &LabelSet,
        points: &[(f64, f64)],
        ended_at: Option<f64>,
        end: usize,
    ) -> Vec<SeriesTransition> {
        let mut transitions = Vec::new();
        for round_end in (10..=end).step_by(10) {
            let window = &points[round_end.saturating_sub(120)..round_end];
            let now = round_end as f64;
            match ended_at.filter(|&at| window.first().is_some_and(|first| first.0 < at)) {
                Some(at) => {
                    let (before, after): (Vec<_>, Vec<_>) = window.iter().partition(|p| p.0 < at);
                    transitions.extend(bank.feed(series, &before, now));
                    bank.restart(series, at);
                    transitions.extend(bank.feed(series, &after, now));
                }
                None => transitions.extend(bank.feed(series, window, now)),
            }
            transitions.extend(bank.sweep(now, 3600.0));
        }
        transitions
    }

    /// Resident memory of a replica (issue 10, `bench/data/healthy_series.json`): about 4 MiB in
    /// page-sized steps; its process is replaced at t = 900 and the new one is first seen at 0.94 MiB,
    /// then settles at its own level; at t = 1700 the new process really grows to 1.5 times that.
    fn restarted_memory() -> Vec<(f64, f64)> {
        (0..2000_u32)
            .map(|t| {
                let pages = f64::from((t * 7) % 5) * 4096.0;
                let value = match t {
                    0..900 => 4_200_000.0 + pages,
                    900 => 985_000.0,
                    901..1700 => 4_000_000.0 + pages,
                    _ => 6_000_000.0 + pages,
                };
                (f64::from(t) + 0.5, value)
            })
            .collect()
    }

    #[test]
    fn a_restarted_process_is_learnt_afresh_and_a_real_shift_after_its_warm_up_still_alarms() {
        let series = labels("memory");
        let points = restarted_memory();
        let mut bank = DetectorBank::new("default", Sensitivity::ACTIONABLE, 10, 60.0).expect("known detector");
        let transitions = replay_process_series(&mut bank, &series, &points, Some(900.0), 2000);
        let fired: Vec<f64> = transitions.iter().filter(|t| t.firing).map(|t| t.since).collect();
        // The new process's first sample is no anomaly of the old one's; the real growth is.
        assert_eq!(fired, [1700.5], "{transitions:?}");

        // Without the end of the process, the same points alarm at the restart: the false alarm this fixes.
        let mut bank = DetectorBank::new("default", Sensitivity::ACTIONABLE, 10, 60.0).expect("known detector");
        let transitions = replay_process_series(&mut bank, &series, &points, None, 2000);
        let fired: Vec<f64> = transitions.iter().filter(|t| t.firing).map(|t| t.since).collect();
        assert_eq!(fired.first(), Some(&900.5), "{transitions:?}");
    }

    #[test]
    fn an_end_already_acted_upon_does_not_restart_learning_again() {
        let series = labels("memory");
        let points = restarted_memory();
        let mut bank = DetectorBank::new("default", Sensitivity::ACTIONABLE, 10, 60.0).expect("known detector");
        replay_process_series(&mut bank, &series, &points, Some(900.0), 1700);
        // Told of the same end again (a later window still holds the marker) and of an end older than
        // the points fed: nothing restarts, so the growth is judged against all the new process has shown.
        bank.restart(&series, 900.0);
        bank.restart(&series, 1000.0);
        let transitions = bank.feed(&series, &points[1700..1710], 1710.0);
        assert_eq!(transitions.iter().filter(|t| t.firing).count(), 1, "{transitions:?}");
        // An untracked series has nothing to forget.
        bank.restart(&labels("other"), 5.0);
        assert_eq!(bank.len(), 1);
    }

    #[test]
    fn the_bank_refuses_series_beyond_its_limit_and_forgets_stale_ones() {
        let mut bank = DetectorBank::new("ewma", Sensitivity::default(), 2, 60.0).expect("known detector");
        for name in ["a", "b", "c"] {
            bank.feed(&labels(name), &[(1.0, 1.0)], 1.0);
        }
        assert_eq!((bank.len(), bank.refused()), (2, 1));
        bank.sweep(1000.0, 100.0);
        assert!(bank.is_empty());
        assert!(DetectorBank::new("nope", Sensitivity::default(), 2, 60.0).is_err());
    }

    #[test]
    fn a_leak_is_forecast_before_the_limit_and_a_reset_clears_it() {
        let mut bank = ForecastBank::new(500.0, 120.0, 10);
        let series = labels("rss");
        // 100 MB growing 1 MB/s with noise: reaches 500 at t = 400.
        let leak: Vec<(f64, f64)> = (0..400).map(|t| (t as f64, 100.0 + t as f64 + ((t * 7) % 5) as f64)).collect();
        let mut fired_at = None;
        for (idx, point) in leak.iter().enumerate() {
            for transition in bank.feed(&series, &[*point], point.0) {
                if transition.firing && fired_at.is_none() {
                    fired_at = Some((idx, transition.value, transition.reason));
                }
            }
        }
        let (idx, seconds, reason) = fired_at.expect("the leak is forecast");
        // Warned about two minutes (the horizon) before the limit, not at the last moment.
        assert!((270..=300).contains(&idx), "fired at t = {idx}");
        assert!((seconds - (400.0 - idx as f64)).abs() < 20.0, "forecast {seconds}s at t = {idx}");
        let TransitionReason::Forecast { limit, slope_per_sec, .. } = reason else { panic!("{reason:?}") };
        assert_eq!(limit, 500.0);
        assert!((slope_per_sec - 1.0).abs() < 0.1, "{slope_per_sec}");
        // The process restarts: memory drops; the warning resolves.
        let transitions = bank.feed(&series, &[(400.0, 90.0), (401.0, 91.0)], 401.0);
        assert!(
            transitions.iter().any(|t| !t.firing && t.reason == TransitionReason::Reset { value: 90.0 }),
            "{transitions:?}"
        );
    }

    #[test]
    fn flat_noise_is_never_forecast() {
        let mut bank = ForecastBank::new(500.0, 600.0, 10);
        let series = labels("flat");
        for t in 0..2000 {
            let value = 200.0 + ((t * 37) % 11) as f64;
            assert!(bank.feed(&series, &[(t as f64, value)], t as f64).is_empty(), "t = {t}");
        }
    }

    /// Issue 14: the daemon's memory forecast (1 s samples, 200 MiB limit, 10 min horizon) warns of a
    /// 16 MiB/s leak a few samples in, with most of the way to the limit left; a replica whose memory
    /// steps up once and stays there is never warned about.
    #[test]
    fn a_fast_leak_is_warned_about_within_seconds_and_a_single_step_never() {
        let mib = 1_048_576.0;
        let mut bank = ForecastBank::new(200.0 * mib, 600.0, 10);
        let series = labels("rss");
        let jitter = |t: u32| 4096.0 * f64::from((t * 7) % 5);
        let mut fired_at = None;
        for t in 0..80_u32 {
            let value = 12.0 * mib + jitter(t) + 16.0 * mib * f64::from(t.saturating_sub(60));
            for transition in bank.feed(&series, &[(f64::from(t), value)], f64::from(t)) {
                if transition.firing {
                    fired_at.get_or_insert((t, value / mib));
                }
            }
        }
        let (t, level) = fired_at.expect("the leak is forecast");
        assert!(t <= 65 && level < 100.0, "warned at t = {t} s, at {level:.0} MiB");

        let mut bank = ForecastBank::new(200.0 * mib, 600.0, 10);
        for t in 0..900_u32 {
            let value = if t < 60 { 30.0 } else { 150.0 } * mib + jitter(t);
            assert!(bank.feed(&series, &[(f64::from(t), value)], f64::from(t)).is_empty(), "t = {t}");
        }
    }
}
