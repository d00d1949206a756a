//! The detect stage: every second, evaluate alerting rules, feed attached detectors and forecasters from
//! the series store, evaluate the built-in proxy diagnoses (`bad_replica`, `overload`), and turn their
//! transitions into signals. The stage owns its loop ([`DetectLoop`]); a round that panics is logged and
//! the loop goes on with the next round.
//!
//! The decisions are pure (`mend_detect::alerting`, `mend_detect::attach`, `mend_query`); this module
//! reads the store under a read lock, calls them, and emits signals afterwards, outside the lock.

pub mod builtin;
pub mod feedback;
pub mod logs;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mend_config::{Config, Detect, Forecast, Rule};
use mend_detect::Sensitivity;
use mend_detect::alerting::{AlertTransition, LabelSet, RuleState};
use mend_detect::attach::{DetectorBank, ForecastBank, SeriesTransition, TransitionReason};
use mend_observe::series::{LockedStore, SeriesStore};
use mend_query::{EvalOptions, Labels, Query, Storage, Value};
use mend_types::{Clock, ServiceName, Signal, SignalKind, SignalSink, SignalState, Timestamp, Unit, format_duration};

/// Most points one evaluation round may copy out of the store.
const MAX_POINTS_PER_ROUND: usize = 50_000_000;
/// How often rules and detectors run.
pub const EVALUATION_INTERVAL: Duration = Duration::from_secs(1);
/// How often expressions (not plain selectors) are sampled for detectors and forecasters.
const EXPRESSION_STEP: Duration = Duration::from_secs(5);
/// How far back a plain selector is read for new points each round.
const FEED_WINDOW: Duration = Duration::from_secs(120);
/// Series a single detector or forecast attachment may track.
const MAX_SERIES_PER_ATTACHMENT: usize = 10_000;
/// An anomaly resolves after this long without a new alarm.
const ANOMALY_RESOLVE_AFTER: Duration = Duration::from_secs(60);
/// How far ahead the implicit memory forecast of a service with `max_memory_bytes` looks.
const MEMORY_FORECAST_HORIZON: Duration = Duration::from_secs(600);

struct RuleEntry {
    rule: Rule,
    query: Query,
    state: RuleState,
}

impl RuleEntry {
    /// Signals for the rule's transitions; `evidence` replaces the summary when given.
    fn signals(&self, transitions: Vec<AlertTransition>, now: Timestamp, evidence: Option<&str>) -> Vec<Signal> {
        transitions
            .into_iter()
            .map(|transition| {
                let unit =
                    transition.labels.get(mend_query::METRIC_NAME).map_or(Unit::Plain, |name| Unit::of_metric(name));
                let mut labels = transition.labels.clone();
                labels.extend(self.rule.labels.clone());
                let evidence = match (evidence, &self.rule.summary) {
                    (Some(evidence), _) => evidence.to_owned(),
                    // A resolved alert has no value: the expression no longer returns it.
                    (None, _) if !transition.firing => self.resolved_evidence(),
                    (None, Some(summary)) => render_summary(summary, &unit.format(transition.value), &labels),
                    (None, None) => format!("{} = {}", self.rule.expr.trim(), unit.format(transition.value)),
                };
                signal(
                    now,
                    SignalKind::Rule,
                    &self.rule.name,
                    self.rule.severity,
                    transition.firing,
                    transition.active_since,
                    transition.value,
                    labels,
                    evidence,
                )
            })
            .collect()
    }

    fn resolved_evidence(&self) -> String {
        if self.rule.keep_firing_for.is_zero() {
            "resolved: the condition no longer holds".to_owned()
        } else {
            format!("resolved: the condition has not held for {}", format_duration(self.rule.keep_firing_for))
        }
    }
}

/// Moves into each entry of `next` the state of the entry of `old` that `same` pairs it with (through
/// `take`); returns the entries of `old` left unpaired, in their order.
fn carry_over<T>(old: &mut Vec<T>, next: &mut [T], same: impl Fn(&T, &T) -> bool, take: impl Fn(&mut T, T)) -> Vec<T> {
    for entry in next.iter_mut() {
        if let Some(idx) = old.iter().position(|previous| same(previous, entry)) {
            take(entry, old.remove(idx));
        }
    }
    std::mem::take(old)
}

/// Where an attachment reads its points: raw points of a selector, or an expression sampled every step.
enum Feed {
    Selector(Query),
    /// Sampled every [`EXPRESSION_STEP`], counted in rounds (not wall time, which may jump).
    Expression {
        query: Query,
        rounds_left: u32,
    },
}

struct DetectEntry {
    detect: Detect,
    feed: Feed,
    bank: DetectorBank,
}

struct ForecastEntry {
    forecast: Forecast,
    feed: Feed,
    bank: ForecastBank,
}

/// All rules, detector attachments and forecasts, with their state.
pub struct Detection {
    rules: Vec<RuleEntry>,
    detects: Vec<DetectEntry>,
    forecasts: Vec<ForecastEntry>,
    /// The built-in proxy diagnoses, when a service has a proxy.
    proxies: Option<builtin::ProxyDiagnoses>,
    options: EvalOptions,
    /// What operators' feedback relaxed.
    relaxations: feedback::Relaxations,
}

impl Feed {
    /// The unit of a series this feed yields: from its metric name when it has one (a selector's
    /// series), else from the expression when that is a quantile of one unit's histogram buckets
    /// (`histogram_quantile(0.99, ... x_seconds_bucket ...)` is in seconds). Other expressions (rates,
    /// ratios, sums of different metrics) are plain numbers: a wrong unit would be worse than none.
    fn unit(&self, labels: &LabelSet) -> Unit {
        if let Some(name) = labels.get(mend_query::METRIC_NAME) {
            return Unit::of_metric(name);
        }
        let Feed::Expression { query, .. } = self else { return Unit::Plain };
        if !query.text().trim_start().starts_with("histogram_quantile") {
            return Unit::Plain;
        }
        let mut units = query
            .selectors()
            .iter()
            .map(|selector| selector.metric_name().filter(|name| name.ends_with("_bucket")).map(Unit::of_metric));
        match units.next().flatten() {
            Some(first) if units.all(|unit| unit == Some(first)) => first,
            _ => Unit::Plain,
        }
    }
}

fn feed_of(query: Query) -> Feed {
    if query.plain_selector().is_some() { Feed::Selector(query) } else { Feed::Expression { query, rounds_left: 0 } }
}

/// Query parse errors cannot happen here: config validation parsed every expression already.
fn parse(expr: &str) -> Option<Query> {
    match Query::parse(expr) {
        Ok(query) => Some(query),
        Err(error) => {
            tracing::error!(expr, error = %error, "expression refused after validation");
            None
        }
    }
}

impl Detection {
    /// Builds the stage from the config, adding a memory forecast for every service with a memory limit.
    pub fn new(config: &Config) -> Self {
        let rules = config
            .rules
            .iter()
            .filter_map(|rule| {
                Some(RuleEntry { rule: rule.clone(), query: parse(&rule.expr)?, state: RuleState::default() })
            })
            .collect();
        let detects = config
            .detects
            .iter()
            .filter_map(|detect| {
                let sensitivity = Sensitivity::new(detect.sensitivity).ok()?;
                let bank = DetectorBank::new(
                    &detect.detector,
                    sensitivity,
                    MAX_SERIES_PER_ATTACHMENT,
                    ANOMALY_RESOLVE_AFTER.as_secs_f64(),
                )
                .ok()?;
                Some(DetectEntry { detect: detect.clone(), feed: feed_of(parse(&detect.series)?), bank })
            })
            .collect();
        let mut forecasts: Vec<Forecast> = config.forecasts.clone();
        for service in &config.services {
            if let Some(limit) = service.max_memory_bytes {
                forecasts.push(Forecast {
                    name: "memory_exhaustion".to_owned(),
                    series: format!("mend_replica_resident_memory_bytes{{service=\"{}\"}}", service.name),
                    limit: limit as f64,
                    horizon: MEMORY_FORECAST_HORIZON,
                    severity: mend_types::Severity::Warning,
                });
            }
        }
        let forecasts = forecasts
            .into_iter()
            .filter_map(|forecast| {
                let bank = ForecastBank::new(forecast.limit, forecast.horizon.as_secs_f64(), MAX_SERIES_PER_ATTACHMENT);
                Some(ForecastEntry { feed: feed_of(parse(&forecast.series)?), forecast, bank })
            })
            .collect();
        let proxies = if config.services.iter().any(|service| service.proxy.is_some()) {
            builtin::ProxyDiagnoses::new()
        } else {
            None
        };
        Self {
            rules,
            detects,
            forecasts,
            proxies,
            options: EvalOptions::default(),
            relaxations: feedback::Relaxations { min_for: config.learn.min_for, ..Default::default() },
        }
    }

    /// Applies what feedback relaxed: rules' `for` and detectors' alarm bars, from the next round on.
    /// What the detectors learnt stays.
    pub fn relax(&mut self, relaxations: feedback::Relaxations) {
        for entry in &mut self.detects {
            entry.bank.relax(relaxations.factor(&feedback::Source::Detect(entry.detect.name.clone())));
        }
        self.relaxations = relaxations;
    }

    /// What feedback relaxed.
    pub fn relaxations(&self) -> &feedback::Relaxations {
        &self.relaxations
    }

    /// True when there is nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.detects.is_empty() && self.forecasts.is_empty() && self.proxies.is_none()
    }

    /// Number of rules, detector attachments and forecasts (implicit memory forecasts included).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.rules.len(), self.detects.len(), self.forecasts.len())
    }

    /// Takes `next` as the configuration (a reload): every rule that keeps its name and labels keeps its
    /// pending and firing alerts, every detector attachment and forecast configured exactly as before
    /// keeps what it learnt; the conditions of the others are resolved. Returns the signals to emit.
    pub fn reconfigure(&mut self, mut next: Detection, now: Timestamp) -> Vec<Signal> {
        let now_secs = now.as_secs_f64();
        let mut signals = Vec::new();
        // As Prometheus: a rule's alerts carry over to the rule of the same name and labels, even if its
        // expression or `for` changed (the next evaluation decides whether they go on).
        let same_rule =
            |old: &RuleEntry, new: &RuleEntry| old.rule.name == new.rule.name && old.rule.labels == new.rule.labels;
        let dropped = carry_over(&mut self.rules, &mut next.rules, same_rule, |new, old| new.state = old.state);
        for mut old in dropped {
            let resolved = old.state.evaluate(Vec::new(), now_secs, 0.0, 0.0);
            signals.extend(old.signals(resolved, now, Some(REMOVED)));
        }
        let same_detect = |old: &DetectEntry, new: &DetectEntry| old.detect == new.detect;
        let take_detect = |new: &mut DetectEntry, old: DetectEntry| (new.feed, new.bank) = (old.feed, old.bank);
        for mut old in carry_over(&mut self.detects, &mut next.detects, same_detect, take_detect) {
            let resolved = old.bank.sweep(now_secs, f64::NEG_INFINITY);
            signals.extend(removed(resolved, now, SignalKind::Anomaly, &old.detect.name, old.detect.severity));
        }
        let same_forecast = |old: &ForecastEntry, new: &ForecastEntry| old.forecast == new.forecast;
        let take_forecast = |new: &mut ForecastEntry, old: ForecastEntry| (new.feed, new.bank) = (old.feed, old.bank);
        for mut old in carry_over(&mut self.forecasts, &mut next.forecasts, same_forecast, take_forecast) {
            let resolved = old.bank.sweep(now_secs, f64::NEG_INFINITY);
            signals.extend(removed(resolved, now, SignalKind::Predictive, &old.forecast.name, old.forecast.severity));
        }
        // The proxy diagnoses keep their alerts when both configs have proxies.
        if let (Some(old), true) = (self.proxies.take(), next.proxies.is_some()) {
            next.proxies = Some(old);
        }
        let mut relaxations = std::mem::take(&mut self.relaxations);
        relaxations.min_for = next.relaxations.min_for;
        *self = next;
        self.relax(relaxations);
        signals
    }

    /// One round at `now`: returns the signals to emit.
    pub fn evaluate(&mut self, storage: &dyn Storage, now: Timestamp) -> Vec<Signal> {
        let now_ms = now.as_millis();
        let now_secs = now.as_secs_f64();
        let mut signals = Vec::new();
        for entry in &mut self.rules {
            let active: Vec<(LabelSet, f64)> = match entry.query.eval_instant(storage, now_ms, &self.options) {
                Ok(Value::Vector(samples)) => samples.into_iter().map(|s| (label_set(&s.labels), s.value)).collect(),
                Ok(Value::Scalar(value)) => vec![(LabelSet::new(), value)],
                Ok(_) => Vec::new(),
                Err(error) => {
                    tracing::warn!(rule = %entry.rule.name, error = %error, "rule evaluation failed");
                    Vec::new()
                }
            };
            let for_duration = self.relaxations.rule_for(&entry.rule.name, entry.rule.for_duration);
            let transitions = entry.state.evaluate(
                active,
                now_secs,
                for_duration.as_secs_f64(),
                entry.rule.keep_firing_for.as_secs_f64(),
            );
            signals.extend(entry.signals(transitions, now, None));
        }
        for entry in &mut self.detects {
            let mut transitions = feed(&mut entry.feed, storage, now, &self.options, |labels, fed| match fed {
                Fed::Points(points) => entry.bank.feed(labels, points, now_secs),
                // A replica's process ended: what follows is a new process, learnt afresh.
                Fed::ProcessEnded(at) => {
                    entry.bank.restart(labels, at);
                    Vec::new()
                }
            });
            transitions.extend(entry.bank.sweep(now_secs, FEED_WINDOW.as_secs_f64() * 10.0));
            for transition in transitions {
                let evidence =
                    evidence(&transition.reason, entry.feed.unit(&transition.labels), &entry.detect.detector);
                signals.push(series_signal(
                    now,
                    SignalKind::Anomaly,
                    &entry.detect.name,
                    entry.detect.severity,
                    transition,
                    evidence,
                ));
            }
        }
        if let Some(proxies) = &mut self.proxies {
            signals.extend(proxies.evaluate(storage, now, &self.options));
        }
        for entry in &mut self.forecasts {
            // The forecast bank tells a restart by the fall of the series itself (`TransitionReason::Reset`).
            let mut transitions = feed(&mut entry.feed, storage, now, &self.options, |labels, fed| match fed {
                Fed::Points(points) => entry.bank.feed(labels, points, now_secs),
                Fed::ProcessEnded(_) => Vec::new(),
            });
            transitions.extend(entry.bank.sweep(now_secs, FEED_WINDOW.as_secs_f64() * 10.0));
            for transition in transitions {
                let name = entry.forecast.name.clone();
                let evidence = evidence(&transition.reason, entry.feed.unit(&transition.labels), "");
                signals.push(series_signal(
                    now,
                    SignalKind::Predictive,
                    &name,
                    entry.forecast.severity,
                    transition,
                    evidence,
                ));
            }
        }
        signals
    }
}

/// What the feed hands an attachment for one series, in time order.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fed<'a> {
    /// Points (seconds, value), oldest first.
    Points(&'a [(f64, f64)]),
    /// The replica's process whose series this is ended at this time (seconds): the supervisor wrote a
    /// staleness marker when it exited (or its scrape target stopped answering); points after it come
    /// from its next process.
    ProcessEnded(f64),
}

/// Reads the points an attachment has not seen and hands each series' points to `sink`, split where
/// a replica's process ended.
fn feed(
    feed: &mut Feed,
    storage: &dyn Storage,
    now: Timestamp,
    options: &EvalOptions,
    mut sink: impl FnMut(&LabelSet, Fed<'_>) -> Vec<SeriesTransition>,
) -> Vec<SeriesTransition> {
    let mut transitions = Vec::new();
    match feed {
        Feed::Selector(query) => {
            let Some(selector) = query.plain_selector() else { return transitions };
            let start = now.saturating_sub(FEED_WINDOW).as_millis();
            for series in storage.select(selector.matchers(), start, now.as_millis()) {
                let labels = label_set(&series.labels);
                // A staleness marker says the series ended; it is no value to learn from. In a replica's
                // series it says the replica's process ended (the supervisor ends a process's series when
                // it exits, the scraper a replica target's when it stops answering): what follows comes
                // from the next process. A series of the service as a whole only paused.
                let of_replica = labels.contains_key("replica");
                let mut points: Vec<(f64, f64)> = Vec::with_capacity(series.points.len());
                for &(t, v) in &series.points {
                    let at = t as f64 / 1000.0;
                    if !mend_query::is_stale_marker(v) {
                        points.push((at, v));
                    } else if of_replica {
                        transitions.extend(sink(&labels, Fed::Points(&points)));
                        points.clear();
                        transitions.extend(sink(&labels, Fed::ProcessEnded(at)));
                    }
                }
                transitions.extend(sink(&labels, Fed::Points(&points)));
            }
        }
        Feed::Expression { query, rounds_left } => {
            if *rounds_left > 0 {
                *rounds_left -= 1;
                return transitions;
            }
            *rounds_left = (EXPRESSION_STEP.as_millis() / EVALUATION_INTERVAL.as_millis()).saturating_sub(1) as u32;
            if let Ok(Value::Vector(samples)) = query.eval_instant(storage, now.as_millis(), options) {
                for sample in samples {
                    transitions
                        .extend(sink(&label_set(&sample.labels), Fed::Points(&[(now.as_secs_f64(), sample.value)])));
                }
            }
        }
    }
    transitions
}

fn label_set(labels: &Labels) -> LabelSet {
    labels.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Fills `{{ $value }}` (formatted for people, as `value`) and `{{ $labels.NAME }}` in a rule's summary.
fn render_summary(template: &str, value: &str, labels: &BTreeMap<String, String>) -> String {
    let mut text = template.replace("{{ $value }}", value).replace("{{$value}}", value);
    for (name, label_value) in labels {
        text = text.replace(&format!("{{{{ $labels.{name} }}}}", name = name), label_value);
        text = text.replace(&format!("{{{{$labels.{name}}}}}", name = name), label_value);
    }
    text
}

#[allow(clippy::too_many_arguments)]
fn signal(
    now: Timestamp,
    kind: SignalKind,
    name: &str,
    severity: mend_types::Severity,
    firing: bool,
    since_secs: f64,
    value: f64,
    mut labels: BTreeMap<String, String>,
    evidence: String,
) -> Signal {
    labels.remove(mend_query::METRIC_NAME);
    let service = labels.get("service").and_then(|name| ServiceName::new(name).ok());
    let replica = labels.get("replica").and_then(|replica| replica.parse().ok());
    Signal {
        at: now,
        since: Timestamp::from_millis((since_secs * 1000.0) as i64),
        state: if firing { SignalState::Firing } else { SignalState::Resolved },
        kind,
        name: name.to_owned(),
        severity,
        service,
        replica,
        value,
        labels,
        evidence,
    }
}

/// The evidence of a condition resolved because a reload removed or changed what raised it.
const REMOVED: &str = "resolved: removed or changed by a configuration reload";

/// The signals that resolve what a detector or forecast removed by a reload had firing.
fn removed(
    resolved: Vec<SeriesTransition>,
    now: Timestamp,
    kind: SignalKind,
    name: &str,
    severity: mend_types::Severity,
) -> impl Iterator<Item = Signal> + '_ {
    resolved.into_iter().map(move |transition| series_signal(now, kind, name, severity, transition, REMOVED.to_owned()))
}

/// Why a series' condition started or resolved, in words, its numbers in the series' unit; `detector`
/// names the detector of an alarm.
fn evidence(reason: &TransitionReason, unit: Unit, detector: &str) -> String {
    match *reason {
        TransitionReason::Alarm { value, score, channel } => {
            let channel = channel.map(|channel| format!(" ({channel})")).unwrap_or_default();
            format!("value {} scored {score:.2} by the {detector} detector{channel}", unit.format(value))
        }
        TransitionReason::Quiet { after_secs } => {
            format!("resolved: no alarm for {}", Unit::Seconds.format(after_secs))
        }
        TransitionReason::Forecast { level, slope_per_sec, limit, seconds, confidence } => format!(
            "{}, {}: reaches the limit {} in {} (confidence {confidence:.2})",
            unit.format(level),
            unit.format_rate(slope_per_sec),
            unit.format(limit),
            Unit::Seconds.format(seconds)
        ),
        TransitionReason::Reset { value } => {
            format!("resolved: the series fell back to {} (a restart or a cleanup)", unit.format(value))
        }
        TransitionReason::Receding => "resolved: the trend no longer reaches the limit within the horizon".to_owned(),
        TransitionReason::Gone => "resolved: the series is gone".to_owned(),
    }
}

fn series_signal(
    now: Timestamp,
    kind: SignalKind,
    name: &str,
    severity: mend_types::Severity,
    transition: SeriesTransition,
    evidence: String,
) -> Signal {
    let mut labels = transition.labels;
    if let Some(metric) = labels.remove(mend_query::METRIC_NAME) {
        labels.insert("metric".to_owned(), metric);
    }
    signal(now, kind, name, severity, transition.firing, transition.since, transition.value, labels, evidence)
}

/// The detect loop's task, started once there is something to evaluate: a mend without rules,
/// detectors or forecasts runs no loop (it would only cost memory and wake-ups) until a reload adds some.
pub struct DetectLoop {
    running: Option<(tokio::task::JoinHandle<()>, tokio::sync::mpsc::Sender<Detection>)>,
    series: Arc<RwLock<SeriesStore>>,
    signals: Arc<dyn SignalSink>,
    clock: Arc<dyn Clock>,
    relaxations: tokio::sync::watch::Receiver<feedback::Relaxations>,
    /// Where requests reach the loop's task: set when it starts (until then a request is refused at once).
    requests: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<DetectRequest>>>,
}

/// What the learn stage asks of the detect loop, between rounds.
pub enum DetectRequest {
    /// The encoded state of every attachment and forecast ([`Detection::snapshot`]).
    Snapshot(tokio::sync::oneshot::Sender<Vec<u8>>),
    /// Forget what was learnt about a service's series (all with `None`).
    Forget(Option<String>),
}

/// A handle on the detect loop for the learn stage (cloneable; bounded: a request the loop cannot take
/// now is refused, not queued without end).
#[derive(Clone)]
pub struct DetectHandle {
    requests: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<DetectRequest>>>,
}

/// How long a snapshot may take before the asker gives up (a loop that never started never answers).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

impl DetectHandle {
    /// The loop's encoded state; `None` when the loop is not running or does not answer in time.
    pub async fn snapshot(&self) -> Option<Vec<u8>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.requests.get()?.try_send(DetectRequest::Snapshot(answer)).ok()?;
        tokio::time::timeout(SNAPSHOT_WAIT, answered).await.ok()?.ok()
    }

    /// Asks the loop to forget what it learnt about `service` (all with `None`); false when it cannot
    /// take the request now.
    pub fn forget(&self, service: Option<String>) -> bool {
        self.requests.get().is_some_and(|requests| requests.try_send(DetectRequest::Forget(service)).is_ok())
    }
}

impl DetectLoop {
    /// The loop for `detection` (not started while it is empty).
    /// `relaxations` carries what operators' feedback relaxed (applied between rounds, and to every
    /// configuration the loop takes).
    pub fn start(
        detection: Detection,
        series: Arc<RwLock<SeriesStore>>,
        signals: Arc<dyn SignalSink>,
        clock: Arc<dyn Clock>,
        relaxations: tokio::sync::watch::Receiver<feedback::Relaxations>,
    ) -> Self {
        let requests = Arc::new(std::sync::OnceLock::new());
        let mut stage = Self { running: None, series, signals, clock, relaxations, requests };
        if !detection.is_empty() {
            stage.spawn(detection);
        }
        stage
    }

    fn spawn(&mut self, detection: Detection) {
        let (reloads, reloads_in) = tokio::sync::mpsc::channel(1);
        let (requests_out, requests) = tokio::sync::mpsc::channel(8);
        // The loop starts once: a second start (never made) would leave its requests unanswered.
        let _ = self.requests.set(requests_out);
        let inputs = Inputs { reloads: reloads_in, relaxations: self.relaxations.clone(), requests };
        let task = tokio::spawn(run(detection, self.series.clone(), self.signals.clone(), self.clock.clone(), inputs));
        self.running = Some((task, reloads));
    }

    /// Hands a new configuration to the loop (starting it when needed); false when the loop is gone.
    pub async fn apply(&mut self, detection: Detection) -> bool {
        match &self.running {
            Some((_, reloads)) => reloads.send(detection).await.is_ok(),
            None if detection.is_empty() => true,
            None => {
                self.spawn(detection);
                true
            }
        }
    }

    /// A handle for the learn stage's requests.
    pub fn handle(&self) -> DetectHandle {
        DetectHandle { requests: self.requests.clone() }
    }

    /// Stops the loop.
    pub fn abort(&self) {
        if let Some((task, _)) = &self.running {
            task.abort();
        }
    }
}

/// Runs the stage every [`EVALUATION_INTERVAL`] until the task is aborted, taking over a new
/// configuration from `reloads` between rounds.
/// What the loop takes between rounds: new configurations and what feedback relaxed.
struct Inputs {
    reloads: tokio::sync::mpsc::Receiver<Detection>,
    relaxations: tokio::sync::watch::Receiver<feedback::Relaxations>,
    requests: tokio::sync::mpsc::Receiver<DetectRequest>,
}

async fn run(
    mut detection: Detection,
    series: Arc<RwLock<SeriesStore>>,
    signals: Arc<dyn SignalSink>,
    clock: Arc<dyn Clock>,
    inputs: Inputs,
) {
    let Inputs { mut reloads, mut relaxations, mut requests } = inputs;
    let mut requests_open = true;
    let mut ticker = tokio::time::interval(EVALUATION_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reloads_open = true;
    let mut relaxations_open = true;
    detection.relax(relaxations.borrow_and_update().clone());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            request = requests.recv(), if requests_open => {
                match request {
                    Some(DetectRequest::Snapshot(answer)) => {
                        let _ = answer.send(detection.snapshot());
                    }
                    Some(DetectRequest::Forget(service)) => detection.forget(service.as_deref()),
                    None => requests_open = false,
                }
                continue;
            }
            changed = relaxations.changed(), if relaxations_open => {
                match changed {
                    Ok(()) => detection.relax(relaxations.borrow_and_update().clone()),
                    Err(_) => relaxations_open = false,
                }
                continue;
            }
            next = reloads.recv(), if reloads_open => {
                match next {
                    Some(next) => {
                        for signal in detection.reconfigure(next, clock.wall()) {
                            signals.signal(signal);
                        }
                    }
                    None => reloads_open = false,
                }
                continue;
            }
        }
        if detection.is_empty() {
            continue;
        }
        let now = clock.wall();
        // The lock is taken per selector, so that scrapes and replica sampling never wait for a whole round.
        let store = LockedStore::new(&series, MAX_POINTS_PER_ROUND);
        // A round that panics (a bug) loses its results, loudly, and the next round runs: the stage never
        // goes silent. Its state is what the round left, as after any round.
        let round = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| detection.evaluate(&store, now)));
        let emitted = match round {
            Ok(emitted) => emitted,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "a detect round panicked: its results are lost; the next round runs");
                continue;
            }
        };
        if store.exceeded() {
            tracing::warn!(
                max_points = MAX_POINTS_PER_ROUND,
                "rules and detectors read more points than allowed; results incomplete"
            );
        }
        for signal in emitted {
            signals.signal(signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection(rules: &[(&str, &str)]) -> Detection {
        let text: String = rules
            .iter()
            .map(|(name, expr)| format!("[[rule]]\nname = \"{name}\"\nexpr = '{expr}'\nfor = \"2s\"\n"))
            .collect();
        let config = mend_config::parse("test.toml", &text, std::path::Path::new(".")).expect("valid config");
        Detection::new(&config)
    }

    fn names(signals: &[Signal], state: SignalState) -> Vec<String> {
        signals.iter().filter(|s| s.state == state).map(|s| s.name.clone()).collect()
    }

    #[test]
    fn a_relaxed_rule_fires_later_and_keeps_its_relaxation_across_a_reload() {
        let storage = mend_query::MemoryStorage::new(Vec::new());
        let at = |secs: i64| Timestamp::from_millis(1_700_000_000_000 + secs * 1000);
        let mut running = detection(&[("Noisy", "vector(1) > 0")]);
        let relaxations = feedback::Relaxations {
            factors: BTreeMap::from([(feedback::Source::Rule("Noisy".to_owned()), 2.0)]),
            min_for: Duration::from_secs(15),
        };
        // `for = "2s"` is below min_for (15s): relaxed ×2 it waits 30s.
        running.relax(relaxations.clone());
        assert!(running.evaluate(&storage, at(0)).is_empty());
        assert!(running.evaluate(&storage, at(29)).is_empty(), "still pending at 29s");
        assert_eq!(names(&running.evaluate(&storage, at(30)), SignalState::Firing), ["Noisy"]);
        running.reconfigure(detection(&[("Noisy", "vector(1) > 0")]), at(31));
        assert_eq!(running.relaxations().factors, relaxations.factors, "a reload keeps what feedback relaxed");
    }

    #[test]
    fn a_reload_keeps_the_alerts_of_rules_that_keep_their_name_and_resolves_the_rest() {
        let storage = mend_query::MemoryStorage::new(Vec::new());
        let at = |secs: i64| Timestamp::from_millis(1_700_000_000_000 + secs * 1000);
        let mut running =
            detection(&[("Kept", "vector(1) > 0"), ("Dropped", "vector(2) > 0"), ("Edited", "vector(3) > 0")]);
        assert!(running.evaluate(&storage, at(0)).is_empty(), "pending for 2s");
        let fired = running.evaluate(&storage, at(3));
        assert_eq!(names(&fired, SignalState::Firing), ["Kept", "Dropped", "Edited"]);

        // `Edited` changes its expression: its alert carries over (as in Prometheus) and goes on
        // while the new expression still returns it; `Dropped` resolves; `New` starts pending.
        let next = detection(&[("Kept", "vector(1) > 0"), ("Edited", "vector(4) > 0"), ("New", "vector(5) > 0")]);
        let reloaded = running.reconfigure(next, at(4));
        assert_eq!(names(&reloaded, SignalState::Resolved), ["Dropped"]);
        assert!(reloaded.iter().all(|s| s.evidence.contains("configuration reload")), "{reloaded:?}");
        assert!(running.evaluate(&storage, at(5)).is_empty());
        assert_eq!(names(&running.evaluate(&storage, at(7)), SignalState::Firing), ["New"]);
        assert_eq!(running.counts(), (3, 0, 0));
    }

    #[test]
    fn a_resolved_rule_says_so_without_repeating_its_firing_value() {
        let storage = mend_query::MemoryStorage::new(Vec::new());
        let at = |secs: i64| Timestamp::from_millis(1_700_000_000_000 + secs * 1000);
        let mut running = detection(&[("Fires", "vector(0.25) > 0")]);
        running.evaluate(&storage, at(0));
        let fired = running.evaluate(&storage, at(3));
        assert_eq!((fired.len(), fired[0].value), (1, 0.25));
        assert_eq!(fired[0].evidence, "vector(0.25) > 0 = 0.25");
        // The expression stops returning the alert (the rule is edited to one that never holds).
        let mut edited = detection(&[("Fires", "vector(0.25) > 1")]);
        edited.rules[0].state = std::mem::take(&mut running.rules[0].state);
        let resolved = edited.evaluate(&storage, at(4));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, SignalState::Resolved);
        assert!(resolved[0].value.is_nan(), "no value at resolution: {:?}", resolved[0]);
        assert_eq!(resolved[0].evidence, "resolved: the condition no longer holds");
    }

    fn check_evidence(reason: TransitionReason, unit: Unit, expected: &str) {
        assert_eq!(evidence(&reason, unit, "default"), expected);
    }

    #[test]
    fn series_evidence_is_written_in_the_series_unit() {
        check_evidence(
            TransitionReason::Forecast {
                level: 3.114e7,
                slope_per_sec: 2.134e6,
                limit: 128.0 * 1024.0 * 1024.0,
                seconds: 250.0,
                confidence: 0.934,
            },
            Unit::Bytes,
            "29.7 MiB, +2.0 MiB/s: reaches the limit 128.0 MiB in 4m10s (confidence 0.93)",
        );
        check_evidence(
            TransitionReason::Alarm { value: 0.2134, score: 0.91, channel: Some("new extreme") },
            Unit::Seconds,
            "value 213 ms scored 0.91 by the default detector (new extreme)",
        );
        check_evidence(
            TransitionReason::Alarm { value: 500.0, score: 0.7, channel: None },
            Unit::Plain,
            "value 500 scored 0.70 by the default detector",
        );
        check_evidence(TransitionReason::Quiet { after_secs: 60.0 }, Unit::Plain, "resolved: no alarm for 1m00s");
        check_evidence(
            TransitionReason::Reset { value: 9.5 * 1024.0 * 1024.0 },
            Unit::Bytes,
            "resolved: the series fell back to 9.5 MiB (a restart or a cleanup)",
        );
    }

    #[test]
    fn a_series_unit_comes_from_its_name_or_a_histogram_quantile() {
        let unit = |expr: &str, name: Option<&str>| {
            let feed = feed_of(Query::parse(expr).expect("valid query"));
            let labels: LabelSet =
                name.map(|n| (mend_query::METRIC_NAME.to_owned(), n.to_owned())).into_iter().collect();
            feed.unit(&labels)
        };
        assert_eq!(unit("mend_replica_resident_memory_bytes", Some("mend_replica_resident_memory_bytes")), Unit::Bytes);
        assert_eq!(
            unit("histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[30s])))", None),
            Unit::Seconds
        );
        // A rate of bytes is bytes per second, a ratio of two counts a plain number: no unit is claimed.
        assert_eq!(unit("rate(node_network_receive_bytes_total[1m])", None), Unit::Plain);
        assert_eq!(unit("sum(rate(a_total[1m])) / sum(rate(b_total[1m]))", None), Unit::Plain);
    }

    /// Issue 10 follow-up: a replica's new process (a deploy) first seen at 0.94 MiB is no new minimum
    /// of its old process's memory, while a series of the service as a whole that paused and came back
    /// keeps what it learnt; a real growth of the new process after its warm-up still alarms.
    #[test]
    fn a_replica_process_that_ended_is_learnt_afresh_but_a_service_series_is_not() {
        let text = "[[detect]]\nname = \"replica_memory\"\nseries = 'mend_replica_resident_memory_bytes'\n\
                    detector = \"default\"\n\n[[detect]]\nname = \"service_memory\"\n\
                    series = 'shop_memory_bytes'\ndetector = \"default\"\n";
        let config = mend_config::parse("test.toml", text, std::path::Path::new(".")).expect("valid config");
        let mut detection = Detection::new(&config);
        let store = RwLock::new(SeriesStore::new(mend_observe::series::Limits::default()));
        let at = |millis: u64| Timestamp::from_millis(1_700_000_000_000 + millis as i64);
        let (replica, service) = {
            let mut series = store.write().expect("store lock");
            let replica = series.labels("mend_replica_resident_memory_bytes", &[("service", "shop"), ("replica", "0")]);
            (replica, series.labels("shop_memory_bytes", &[("service", "shop")]))
        };
        let mut fired: Vec<(String, u64)> = Vec::new();
        for second in 0..2000_u64 {
            let pages = ((second * 7) % 5) as f64 * 4096.0;
            let value = match second {
                0..900 => 4_200_000.0 + pages,
                900 => 985_000.0,
                901..1700 => 4_000_000.0 + pages,
                _ => 6_000_000.0 + pages,
            };
            {
                let mut series = store.write().expect("store lock");
                if second == 900 {
                    // The old process exits: the supervisor ends its series; the service's pauses too.
                    series.end_series(&replica, at(899_800));
                    series.end_series(&service, at(899_800));
                }
                for labels in [&replica, &service] {
                    series.append(labels, at(second * 1000 + 500), value).expect("room in the store");
                }
            }
            let signals = detection.evaluate(&LockedStore::new(&store, MAX_POINTS_PER_ROUND), at(second * 1000 + 600));
            for signal in signals.iter().filter(|s| s.state == SignalState::Firing) {
                fired.push((signal.name.clone(), second));
            }
        }
        assert_eq!(
            fired,
            [
                ("service_memory".to_owned(), 900),
                ("replica_memory".to_owned(), 1700),
                ("service_memory".to_owned(), 1700)
            ]
        );
    }

    #[test]
    fn summaries_fill_value_and_labels() {
        let labels = BTreeMap::from([("service".to_owned(), "web".to_owned())]);
        assert_eq!(
            render_summary("{{ $labels.service }} errors at {{ $value }}", "0.25", &labels),
            "web errors at 0.25"
        );
    }
}
