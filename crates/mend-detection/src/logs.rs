//! The log part of the detect stage: replica output mined into templates per service (`mend-logs`),
//! counted as series (`mend_log_template_total{service, template_id, level}`), and turned into signals:
//! `new_log_template` when a service starts logging a template never seen before at error level (after
//! a warm-up, so start-up noise does not alarm), `log_rate` when a template's rate is anomalous (the
//! `default` detector of `mend-detect` on each template's count per step).
//!
//! [`LogWatch`] is pure (lines and time in, signals out); [`LogStage`] is its edge: a [`LineSink`] that
//! queues lines on a bounded channel (full: the line is dropped and counted, capture never waits) and one
//! thread that mines them, writes the counts into the series store and publishes the signals.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use mend_detect::Sensitivity;
use mend_detect::alerting::LabelSet;
use mend_detect::attach::{DetectorBank, SeriesTransition, TransitionReason};
use mend_logs::miner::{MAX_LINE_BYTES, cut};
use mend_logs::{DrainConfig, Level, LogMiner, Pattern, TemplateId};
use mend_observe::series::SeriesStore;
use mend_types::{
    Clock, LineSink, ReplicaId, ServiceName, Severity, Signal, SignalKind, SignalSink, SignalState, Timestamp,
};

/// The signal raised when a service starts logging a new error template.
pub const NEW_TEMPLATE_SIGNAL: &str = mend_types::NEW_LOG_TEMPLATE_SIGNAL;
/// The signal raised when a template's rate is anomalous.
pub const RATE_SIGNAL: &str = mend_types::LOG_RATE_SIGNAL;
/// The counter series of lines per template and level.
pub const TEMPLATE_SERIES: &str = "mend_log_template_total";
/// Lines the miner's queue dropped (mend could not keep up).
pub const DROPPED_SERIES: &str = "mend_log_lines_dropped_total";
/// Lines queued for mining at most.
pub const QUEUE_LINES: usize = 4096;

/// Tuning of the log watch.
#[derive(Clone, Copy, Debug)]
pub struct LogWatchConfig {
    /// Mining (its template cap is per service).
    pub drain: DrainConfig,
    /// After a service's first line, new templates are learnt without signals for this long.
    pub warmup: Duration,
    /// A `new_log_template` signal resolves when its template has not been logged for this long.
    pub quiet_after: Duration,
    /// Templates' counts are fed to their rate detectors once per step.
    pub rate_step: Duration,
}

impl Default for LogWatchConfig {
    fn default() -> Self {
        Self {
            drain: DrainConfig::default(),
            warmup: Duration::from_secs(30),
            quiet_after: Duration::from_secs(60),
            rate_step: Duration::from_secs(10),
        }
    }
}

struct NewTemplate {
    since: Timestamp,
    last_seen: Timestamp,
    replica: u32,
    template: String,
}

struct ServiceWatch {
    miner: LogMiner,
    first_line: Timestamp,
    /// Lines per template since the last rate step.
    step_counts: HashMap<TemplateId, u64>,
    /// Firing `new_log_template` signals.
    new_templates: HashMap<TemplateId, NewTemplate>,
    rates: DetectorBank,
    /// Templates' text when their rate anomaly started (the resolution names it too).
    rate_firing: HashMap<TemplateId, String>,
}

/// Log mining and its signals, for every service. Pure: lines and time arrive as arguments.
pub struct LogWatch {
    config: LogWatchConfig,
    services: BTreeMap<ServiceName, ServiceWatch>,
    next_step: Option<Timestamp>,
}

impl LogWatch {
    /// An empty watch.
    pub fn new(config: LogWatchConfig) -> Self {
        Self { config, services: BTreeMap::new(), next_step: None }
    }

    /// Mines one line of `replica`'s output read at `at`; a signal when it starts a new error template
    /// after the warm-up.
    pub fn observe(&mut self, replica: &ReplicaId, at: Timestamp, line: &str) -> Option<Signal> {
        let config = self.config;
        let watch = self.services.entry(replica.service.clone()).or_insert_with(|| ServiceWatch {
            miner: LogMiner::new(config.drain),
            first_line: at,
            step_counts: HashMap::new(),
            new_templates: HashMap::new(),
            rates: DetectorBank::new("default", Sensitivity::default(), config.drain.max_templates, 60.0)
                .expect("the default detector is registered"),
            rate_firing: HashMap::new(),
        });
        let seen = watch.miner.observe(line, at);
        *watch.step_counts.entry(seen.template).or_default() += 1;
        if let Some(firing) = watch.new_templates.get_mut(&seen.template) {
            firing.last_seen = firing.last_seen.max(at);
        }
        let warm = at.as_millis() - watch.first_line.as_millis() >= duration_millis(config.warmup);
        if !(seen.new_template && seen.level.is_error() && warm) {
            return None;
        }
        let template = watch.miner.template(seen.template).unwrap_or_default();
        watch.new_templates.insert(
            seen.template,
            NewTemplate { since: at, last_seen: at, replica: replica.index, template: template.clone() },
        );
        let severity = if seen.level == Level::Fatal { Severity::Critical } else { Severity::Warning };
        Some(
            new_template_signal(&replica.service, seen.template, &template, SignalState::Firing, at, at, severity)
                .with_replica(replica.index)
                .with_evidence(format!("{} started logging `{template}` ({})", replica.service, seen.level)),
        )
    }

    /// Resolves quiet `new_log_template` signals and, once per rate step, feeds each template's count
    /// to its rate detector.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Signal> {
        let mut signals = Vec::new();
        let quiet = duration_millis(self.config.quiet_after);
        for (service, watch) in &mut self.services {
            let mut ended: Vec<TemplateId> = watch
                .new_templates
                .iter()
                .filter(|(id, firing)| {
                    now.as_millis() - firing.last_seen.as_millis() >= quiet || watch.miner.template(**id).is_none()
                })
                .map(|(id, _)| *id)
                .collect();
            ended.sort();
            for id in ended {
                let Some(firing) = watch.new_templates.remove(&id) else { continue };
                signals.push(
                    new_template_signal(
                        service,
                        id,
                        &firing.template,
                        SignalState::Resolved,
                        now,
                        firing.since,
                        Severity::Warning,
                    )
                    .with_replica(firing.replica)
                    .with_evidence(format!(
                        "resolved: {service} has not logged `{}` for {}",
                        firing.template,
                        mend_types::format_duration(self.config.quiet_after)
                    )),
                );
            }
        }
        let step = duration_millis(self.config.rate_step);
        let next_step = *self.next_step.get_or_insert(now.saturating_add(self.config.rate_step));
        if now < next_step {
            return signals;
        }
        self.next_step = Some(now.saturating_add(self.config.rate_step));
        let now_secs = now.as_secs_f64();
        for (service, watch) in &mut self.services {
            let counts = std::mem::take(&mut watch.step_counts);
            // Every template kept is fed, those silent this step with 0: a burst stands out from its quiet.
            let mut ids: Vec<TemplateId> = watch.miner.patterns().iter().map(|pattern| pattern.id).collect();
            ids.sort();
            let mut transitions = Vec::new();
            for id in ids {
                let per_sec = counts.get(&id).copied().unwrap_or(0) as f64 * 1000.0 / step as f64;
                transitions.extend(watch.rates.feed(&rate_labels(service, id), &[(now_secs, per_sec)], now_secs));
            }
            transitions.extend(watch.rates.sweep(now_secs, 10.0 * 60.0));
            for transition in transitions {
                if let Some(signal) = rate_signal(service, watch, &transition, now) {
                    signals.push(signal);
                }
            }
        }
        signals
    }

    /// The templates of `service`, most frequent first (None: it has logged nothing).
    pub fn patterns(&self, service: &str) -> Option<Vec<Pattern>> {
        self.services.iter().find(|(name, _)| name.as_str() == service).map(|(_, watch)| watch.miner.patterns())
    }

    /// Lines per (service, template, level) so far.
    pub fn counts(&self) -> Vec<(ServiceName, TemplateId, Level, u64)> {
        self.services
            .iter()
            .flat_map(|(service, watch)| {
                watch.miner.counts().map(move |(id, level, count)| (service.clone(), id, level, count))
            })
            .collect()
    }

    /// Rough bytes held by the miners.
    pub fn approx_bytes(&self) -> usize {
        self.services.values().map(|watch| watch.miner.approx_bytes()).sum()
    }
}

fn rate_labels(service: &ServiceName, id: TemplateId) -> LabelSet {
    LabelSet::from([("service".to_owned(), service.as_str().to_owned()), ("template_id".to_owned(), id.to_string())])
}

fn rate_signal(
    service: &ServiceName,
    watch: &mut ServiceWatch,
    transition: &SeriesTransition,
    now: Timestamp,
) -> Option<Signal> {
    let id = TemplateId(transition.labels.get("template_id")?.parse().ok()?);
    let since = Timestamp::from_millis((transition.since * 1000.0) as i64);
    let (state, evidence) = if transition.firing {
        let template = watch.miner.template(id).unwrap_or_default();
        watch.rate_firing.insert(id, template.clone());
        let rate = match transition.reason {
            TransitionReason::Alarm { value, .. } => format!("{value:.2}/s"),
            _ => String::from("an unusual rate"),
        };
        (SignalState::Firing, format!("{service} logs `{template}` at {rate}, unusual for it"))
    } else {
        let template = watch.rate_firing.remove(&id).or_else(|| watch.miner.template(id)).unwrap_or_default();
        (SignalState::Resolved, format!("resolved: `{template}` is back to its usual rate"))
    };
    let mut signal = new_template_signal(service, id, "", state, now, since, Severity::Warning).with_evidence(evidence);
    signal.name = RATE_SIGNAL.to_owned();
    signal.value = transition.value;
    Some(signal)
}

fn new_template_signal(
    service: &ServiceName,
    id: TemplateId,
    _template: &str,
    state: SignalState,
    at: Timestamp,
    since: Timestamp,
    severity: Severity,
) -> Signal {
    Signal {
        at,
        since,
        state,
        kind: SignalKind::Anomaly,
        name: NEW_TEMPLATE_SIGNAL.to_owned(),
        severity,
        service: Some(service.clone()),
        replica: None,
        value: 1.0,
        labels: BTreeMap::from([
            ("service".to_owned(), service.as_str().to_owned()),
            ("template_id".to_owned(), id.to_string()),
        ]),
        evidence: String::new(),
    }
}

trait SignalExt {
    fn with_replica(self, replica: u32) -> Self;
    fn with_evidence(self, evidence: String) -> Self;
}

impl SignalExt for Signal {
    fn with_replica(mut self, replica: u32) -> Self {
        self.replica = Some(replica);
        self
    }
    fn with_evidence(mut self, evidence: String) -> Self {
        self.evidence = evidence;
        self
    }
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// One captured line on its way to the miner.
struct QueuedLine {
    replica: ReplicaId,
    at: Timestamp,
    line: String,
}

/// The capture side of the log stage: queues lines for the miner without ever waiting.
pub struct LogSink {
    tx: SyncSender<QueuedLine>,
    dropped: Arc<AtomicU64>,
}

impl LineSink for LogSink {
    fn line(&self, replica: &ReplicaId, at: Timestamp, line: &[u8]) {
        let line = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE_BYTES)]);
        let queued = QueuedLine { replica: replica.clone(), at, line: cut(&line, MAX_LINE_BYTES).to_owned() };
        match self.tx.try_send(queued) {
            Ok(()) => {}
            // Full: drop the newest line and count it (the file has it all the same).
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The log stage: one thread mining what [`LogSink`] queues.
pub struct LogStage {
    watch: Arc<Mutex<LogWatch>>,
    dropped: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl LogStage {
    /// Starts the mining thread; returns the stage and the sink the supervisor hands lines to. The thread
    /// ends when every sink is dropped.
    pub fn start(
        config: LogWatchConfig,
        series: Arc<RwLock<SeriesStore>>,
        signals: Arc<dyn SignalSink>,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<(Self, Arc<LogSink>)> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let watch = Arc::new(Mutex::new(LogWatch::new(config)));
        let dropped = Arc::new(AtomicU64::new(0));
        let sink = Arc::new(LogSink { tx, dropped: dropped.clone() });
        let thread = {
            let (watch, dropped) = (watch.clone(), dropped.clone());
            std::thread::Builder::new()
                .name("mend-logs".into())
                .spawn(move || mine(rx, &watch, &dropped, &series, signals.as_ref(), clock.as_ref()))?
        };
        Ok((Self { watch, dropped, thread: Some(thread) }, sink))
    }

    /// The templates of `service`, most frequent first (None: it has logged nothing yet).
    pub fn patterns(&self, service: &str) -> Option<Vec<Pattern>> {
        self.watch.lock().ok()?.patterns(service)
    }

    /// Lines dropped because the miner could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits for the thread (after every sink is gone).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Lines mined under one lock at most, so the API's readers of patterns wait little.
const BATCH_LINES: usize = 256;

fn mine(
    rx: Receiver<QueuedLine>,
    watch: &Mutex<LogWatch>,
    dropped: &AtomicU64,
    series: &RwLock<SeriesStore>,
    signals: &dyn SignalSink,
    clock: &dyn Clock,
) {
    let tick = Duration::from_secs(1);
    let mut next_tick = clock.now() + tick;
    let mut written: HashSet<(ServiceName, TemplateId, Level, u64)> = HashSet::new();
    loop {
        let wait = next_tick.saturating_duration_since(clock.now());
        let mut raised = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(first) => {
                let Ok(mut watch) = watch.lock() else { return };
                raised.extend(watch.observe(&first.replica, first.at, &first.line));
                for queued in rx.try_iter().take(BATCH_LINES - 1) {
                    raised.extend(watch.observe(&queued.replica, queued.at, &queued.line));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if clock.now() >= next_tick {
            next_tick = clock.now() + tick;
            let now = clock.wall();
            let counts = match watch.lock() {
                Ok(mut watch) => {
                    raised.extend(watch.tick(now));
                    watch.counts()
                }
                Err(_) => return,
            };
            write_counts(series, &counts, &mut written, dropped.load(Ordering::Relaxed), now);
        }
        for signal in raised {
            signals.signal(signal);
        }
    }
}

/// Appends the counts that changed since the last write (and the dropped lines), so an idle template adds
/// no point every second; a counter's last point stays current until the series goes stale.
fn write_counts(
    series: &RwLock<SeriesStore>,
    counts: &[(ServiceName, TemplateId, Level, u64)],
    written: &mut HashSet<(ServiceName, TemplateId, Level, u64)>,
    dropped: u64,
    now: Timestamp,
) {
    let Ok(mut store) = series.write() else { return };
    let mut current = HashSet::with_capacity(counts.len());
    for (service, id, level, count) in counts {
        let key = (service.clone(), *id, *level, *count);
        if !written.contains(&key) {
            let template_id = id.to_string();
            let labels = store.labels(
                TEMPLATE_SERIES,
                &[("service", service.as_str()), ("template_id", &template_id), ("level", level.as_str())],
            );
            let _ = store.append(&labels, now, *count as f64);
        }
        current.insert(key);
    }
    *written = current;
    let labels = store.labels(DROPPED_SERIES, &[]);
    let _ = store.append(&labels, now, dropped as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(service: &str, index: u32) -> ReplicaId {
        ReplicaId { service: ServiceName::new(service).expect("valid name"), index }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_700_000_000_000 + secs * 1000)
    }

    #[test]
    fn a_new_error_template_after_the_warm_up_fires_and_resolves_when_quiet() {
        let mut watch = LogWatch::new(LogWatchConfig::default());
        let web = replica("web", 1);
        // Start-up noise within the warm-up raises nothing, errors included.
        assert_eq!(watch.observe(&web, at(0), "INFO listening on 8080"), None);
        assert_eq!(watch.observe(&web, at(5), "ERROR cannot read cache file, starting cold"), None);
        // After the warm-up: known templates and new ones below error raise nothing.
        assert_eq!(watch.observe(&web, at(40), "INFO listening on 8081"), None);
        assert_eq!(watch.observe(&web, at(41), "WARN slow request took 1200 ms"), None);
        let signal = watch.observe(&web, at(42), "ERROR connection refused to db.internal:5432").expect("a signal");
        assert_eq!(signal.name, NEW_TEMPLATE_SIGNAL);
        assert_eq!(signal.state, SignalState::Firing);
        assert_eq!((signal.service.as_ref().map(ServiceName::as_str), signal.replica), (Some("web"), Some(1)));
        assert_eq!(signal.evidence, "web started logging `connection refused to db.internal:<*>` (error)");
        // Its next lines are the same template: no second signal.
        assert_eq!(watch.observe(&web, at(50), "ERROR connection refused to db.internal:5433"), None);
        assert!(watch.tick(at(100)).iter().all(|signal| signal.name != NEW_TEMPLATE_SIGNAL));
        let resolved: Vec<Signal> =
            watch.tick(at(111)).into_iter().filter(|signal| signal.name == NEW_TEMPLATE_SIGNAL).collect();
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, SignalState::Resolved);
        assert_eq!(resolved[0].fingerprint(), signal.fingerprint());
        assert!(
            resolved[0].evidence.contains("has not logged `connection refused to db.internal:<*>` for"),
            "{}",
            resolved[0].evidence
        );
    }

    #[test]
    fn a_burst_of_one_template_raises_a_rate_anomaly() {
        let mut watch = LogWatch::new(LogWatchConfig::default());
        let api = replica("api", 0);
        let mut fired = Vec::new();
        // An hour of a steady trickle: two lines per 10 s step.
        for step in 0..360 {
            for line in 0..2 {
                watch.observe(&api, at(step * 10 + line), &format!("INFO request {step} served in {line} ms"));
            }
            fired.extend(watch.tick(at(step * 10 + 9)));
        }
        assert!(fired.is_empty(), "a steady rate raised {fired:?}");
        // Then a burst: 500 lines in one step.
        for line in 0..500 {
            watch.observe(&api, at(3600 + line / 100), &format!("INFO request {line} served in 3 ms"));
        }
        let signals = watch.tick(at(3609));
        let rate: Vec<&Signal> = signals.iter().filter(|signal| signal.name == RATE_SIGNAL).collect();
        assert_eq!(rate.len(), 1, "{signals:?}");
        assert_eq!(rate[0].state, SignalState::Firing);
        assert!(
            rate[0].evidence.starts_with("api logs `request <*> served in <*> ms` at 50.00/s"),
            "{}",
            rate[0].evidence
        );
    }
}
