//! Scraping Prometheus/OpenMetrics expositions into the series store.
//!
//! One task per target. Each scrape is all or nothing: a target that answers badly (unreachable, wrong
//! status, a malformed exposition) adds none of its samples and raises one event naming the reason (for
//! a malformed body, the line and column); `up` says 0. Staleness follows Prometheus: series that leave
//! the exposition, and everything of a target that stops answering or is no longer scraped, end with a
//! staleness marker; a malformed answer keeps the previous samples current (the target is up, only
//! this exposition was bad). Series are bounded per target and in total; a cardinality explosion drops
//! the new series, counts them and says so, once a minute at most.
//!
//! A replica's first scrapes usually come before it listens: until a target has been scraped once, its
//! failures are not events for a start-up grace period ([`ScrapeJob::startup_grace`]), which
//! [`ScraperHandle::settle`] ends early (the supervisor calls it when the replica's probes say it is
//! ready). They still count as failed scrapes and write `up` 0; a failure after the first success or
//! after the grace is an event as always.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use mend_config::HttpTarget;
use mend_types::{Clock, Event, EventKind, EventSink, ServiceName, Timestamp};
use tokio::net::TcpStream;

use crate::series::{AppendError, Labels, SeriesStore};

/// Largest exposition body accepted (a bigger one is a failed scrape, not an out-of-memory).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// One target to scrape.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    /// For people: `web[0]` or the static target's name.
    pub name: String,
    /// Where.
    pub target: HttpTarget,
    /// Time between scrapes.
    pub interval: Duration,
    /// Per-scrape timeout.
    pub timeout: Duration,
    /// Labels added to every sample (`service`/`replica` or `job`/`instance`, plus configured ones).
    pub labels: Vec<(String, String)>,
    /// Series this target may create.
    pub max_series: usize,
    /// Most samples one scrape may hold (Prometheus' `sample_limit`): more fail the scrape, parsing
    /// stopped at the limit.
    pub sample_limit: usize,
    /// Service and replica the target belongs to, for events.
    pub service: Option<ServiceName>,
    /// Replica index, for events.
    pub replica: Option<u32>,
    /// How long failures are not events while the target has never been scraped successfully: a
    /// replica's first scrape usually comes before it listens. Zero for targets expected up already.
    pub startup_grace: Duration,
}

/// Counters of all scrapes, for mend's /metrics.
#[derive(Debug, Default)]
pub struct ScrapeStats {
    /// Scrapes that succeeded.
    pub succeeded: AtomicU64,
    /// Scrapes that failed.
    pub failed: AtomicU64,
    /// Samples appended.
    pub samples: AtomicU64,
    /// New series refused by a per-target or total series limit.
    pub dropped_series: AtomicU64,
}

/// Why a scrape failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ScrapeFailure {
    /// Connection, timeout or protocol error.
    Unreachable(String),
    /// An answer that is not 200.
    Status(u16),
    /// The exposition holds more samples than the target's `sample_limit`: none is kept, as in
    /// Prometheus.
    SampleLimit {
        /// The limit.
        limit: usize,
    },
    /// The exposition did not parse.
    Malformed {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for ScrapeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(reason) => f.write_str(reason),
            Self::Status(status) => write!(f, "HTTP status {status}"),
            Self::SampleLimit { limit } => {
                write!(f, "more than {limit} samples (sample_limit): none kept")
            }
            Self::Malformed { line, column, reason } => {
                write!(f, "malformed exposition at line {line}, column {column}: {reason}")
            }
        }
    }
}

/// Fetches the exposition: body and content type.
async fn fetch(target: &HttpTarget) -> Result<(Bytes, String), ScrapeFailure> {
    let unreachable =
        |what: &str, error: &dyn std::fmt::Display| ScrapeFailure::Unreachable(format!("{what}: {error}"));
    let stream = match target.host.parse::<std::net::IpAddr>() {
        Ok(ip) => TcpStream::connect((ip, target.port)).await,
        Err(_) => TcpStream::connect((target.host.as_str(), target.port)).await,
    }
    .map_err(|error| unreachable(&format!("connect to {}", target.authority), &error))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable("http handshake", &e))?;
    let connection = tokio::spawn(connection);
    let request = Request::get(target.path_and_query.as_str())
        .header(HOST, target.authority.as_str())
        .header(ACCEPT, mend_promtext::Format::ACCEPT)
        .header(USER_AGENT, concat!("mend/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable("invalid request", &e))?;
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| unreachable("http request", &e))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(ScrapeFailure::Status(response.status().as_u16()));
        }
        let content_type =
            response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                let limit = mend_types::Unit::Bytes.format(MAX_BODY_BYTES as f64);
                unreachable(&format!("reading the body (limit {limit})"), &e)
            })?
            .to_bytes();
        Ok((body, content_type))
    }
    .await;
    connection.abort();
    result
}

/// The series mend writes about each scrape of a target, as Prometheus does.
const SCRAPE_SERIES: [&str; 3] = ["up", "scrape_duration_seconds", "scrape_samples_scraped"];

/// The series of one target across scrapes.
#[derive(Default)]
struct TargetSeries {
    /// Series this target created (for its series limit).
    known: HashSet<Labels>,
    /// Series the last successful scrape exposed without their own timestamps: those that vanish
    /// (from the next scrape, or with the target) get a staleness marker, as in Prometheus.
    exposed: HashSet<Labels>,
    /// Successful parses so far.
    scrapes: u64,
}

/// The state of one target across scrapes.
pub struct Scraper {
    job: ScrapeJob,
    store: Arc<RwLock<SeriesStore>>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    stats: Arc<ScrapeStats>,
    /// What ingesting needs across scrapes; ingest runs on a blocking thread (parsing a large exposition
    /// on an async worker starved the daemon: issue 20), hence the lock.
    series: Arc<Mutex<TargetSeries>>,
    /// Set once the scraper has ended and marked its series stale.
    ended: bool,
    failing: Option<String>,
    last_drop_event: Option<Instant>,
    /// When the scraper was made: the start-up grace counts from here.
    created: Instant,
    /// Set once failures are events: after a first success, [`ScraperHandle::settle`] or the grace.
    settled: Arc<AtomicBool>,
}

impl Drop for Scraper {
    /// A scraper dropped without [`ScraperHandle::stop`] ends now.
    fn drop(&mut self) {
        let at = self.clock.wall();
        self.end(at);
    }
}

/// A running scraper's task. [`ScraperHandle::stop`] (or dropping the handle) ends it: the target's
/// series, `up` included, end with staleness markers, as when Prometheus stops scraping a target.
pub struct ScraperHandle {
    stop: Option<tokio::sync::oneshot::Sender<Timestamp>>,
    settled: Arc<AtomicBool>,
}

impl ScraperHandle {
    /// Ends the start-up grace: from now on a failed scrape is an event even if the target was never
    /// scraped successfully (say, the replica is ready, so its metrics should answer too).
    pub fn settle(&self) {
        self.settled.store(true, Ordering::Relaxed);
    }

    /// Ends the scraper with its markers stamped `at`: the time it was told to stop, so that a
    /// replacement's first scrape (stamped later) is never hidden behind them.
    pub fn stop(mut self, at: Timestamp) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(at);
        }
    }
}

/// What one scrape did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeReport {
    /// Samples appended.
    pub samples: usize,
    /// New series refused.
    pub dropped_series: usize,
}

impl Scraper {
    /// A scraper for `job` writing into `store`.
    pub fn new(
        job: ScrapeJob,
        store: Arc<RwLock<SeriesStore>>,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        stats: Arc<ScrapeStats>,
    ) -> Self {
        let settled = Arc::new(AtomicBool::new(job.startup_grace.is_zero()));
        Self {
            created: clock.now(),
            settled,
            job,
            store,
            events,
            clock,
            stats,
            series: Arc::new(Mutex::new(TargetSeries::default())),
            ended: false,
            failing: None,
            last_drop_event: None,
        }
    }

    /// Starts scraping every interval on the current runtime until the handle stops it.
    pub fn spawn(self) -> ScraperHandle {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let settled = self.settled.clone();
        tokio::spawn(self.run(stopped));
        ScraperHandle { stop: Some(stop), settled }
    }

    /// Scrapes every interval until `stop` says when to end (or its sender is dropped).
    async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<Timestamp>) {
        let mut ticker = tokio::time::interval(self.job.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped_at = loop {
            tokio::select! {
                biased;
                at = &mut stop => break at.ok(),
                // Failures are recorded as events and metrics inside; the loop goes on. A scrape in
                // flight when the stop comes is dropped before it appends anything.
                _ = async {
                    ticker.tick().await;
                    let _ = self.scrape_once().await;
                } => {}
            }
        };
        let at = stopped_at.unwrap_or_else(|| self.clock.wall());
        self.end(at);
    }

    /// Ends the target's series (those it exposed and the ones written about its scrapes) with
    /// staleness markers stamped `at`; once.
    fn end(&mut self, at: Timestamp) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        self.mark_stale(at);
        if let Ok(mut store) = self.store.write() {
            let borrowed: Vec<(&str, &str)> = self.job.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            for name in SCRAPE_SERIES {
                let labels = store.labels(name, &borrowed);
                store.end_series(&labels, at);
            }
        }
    }

    /// Whether a failure now is an event: the target was scraped once, was settled, or its grace is over.
    fn failures_count(&self) -> bool {
        if self.settled.load(Ordering::Relaxed) {
            return true;
        }
        let over = self.clock.now().saturating_duration_since(self.created) >= self.job.startup_grace;
        if over {
            self.settled.store(true, Ordering::Relaxed);
        }
        over
    }

    fn event(&self, kind: EventKind, message: String) -> Event {
        let mut event = Event::new(self.clock.wall(), kind, message).detail("target", self.job.name.clone());
        event.service = self.job.service.clone();
        event.replica = self.job.replica;
        event
    }

    /// One scrape: fetch, parse, append; records `up` and the scrape's duration either way.
    pub async fn scrape_once(&mut self) -> Result<ScrapeReport, ScrapeFailure> {
        let started = self.clock.now();
        let at = self.clock.wall();
        let fetched = tokio::time::timeout(self.job.timeout, fetch(&self.job.target)).await.unwrap_or_else(|_| {
            let timeout = mend_types::format_duration(self.job.timeout);
            Err(ScrapeFailure::Unreachable(format!("timed out after {timeout}")))
        });
        let result = match fetched {
            Ok((body, content_type)) => self.ingest(body, content_type, at).await,
            Err(failure) => Err(failure),
        };
        let duration = self.clock.now().saturating_duration_since(started).as_secs_f64();
        let up = if result.is_ok() { 1.0 } else { 0.0 };
        let samples = result.as_ref().map_or(0, |report| report.samples) as f64;
        let [up_name, duration_name, samples_name] = SCRAPE_SERIES;
        self.append_synthetic(at, &[(up_name, up), (duration_name, duration), (samples_name, samples)]);
        match &result {
            Ok(report) => {
                self.settled.store(true, Ordering::Relaxed);
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                self.stats.samples.fetch_add(report.samples as u64, Ordering::Relaxed);
                if self.failing.take().is_some() {
                    let event =
                        self.event(EventKind::ScrapeRecovered, format!("scraping {} works again", self.job.name));
                    self.events.emit(event);
                }
                if report.dropped_series > 0 {
                    self.stats.dropped_series.fetch_add(report.dropped_series as u64, Ordering::Relaxed);
                    let now = self.clock.now();
                    if self
                        .last_drop_event
                        .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(60))
                    {
                        self.last_drop_event = Some(now);
                        let event = self
                            .event(
                                EventKind::SeriesDropped,
                                format!(
                                    "{} new series from {} dropped: the target may create {} series",
                                    report.dropped_series, self.job.name, self.job.max_series
                                ),
                            )
                            .detail("dropped", report.dropped_series)
                            .detail("max_series", self.job.max_series);
                        tracing::warn!(target = %self.job.name, dropped = report.dropped_series, "series limit reached");
                        self.events.emit(event);
                    }
                }
            }
            Err(failure) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                // A target that does not answer has no current values. A malformed answer keeps
                // the previous ones visible: the target is up, only this exposition was bad.
                if !matches!(failure, ScrapeFailure::Malformed { .. }) {
                    self.mark_stale_off_worker(at).await;
                }
                let reason = failure.to_string();
                if !self.failures_count() {
                    // Not yet listening, most likely: counted, written as `up` 0, but no event.
                    tracing::debug!(target = %self.job.name, reason = %reason, "scrape failed during the start-up grace");
                    return result;
                }
                // One event per change of reason, not one per failed scrape.
                if self.failing.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(target = %self.job.name, reason = %reason, "scrape failed");
                    let mut event =
                        self.event(EventKind::ScrapeFailed, format!("scraping {} failed: {reason}", self.job.name));
                    if let ScrapeFailure::Malformed { line, column, reason } = failure {
                        event = event.detail("line", *line).detail("column", *column).detail("reason", reason.clone());
                    }
                    self.events.emit(event);
                    self.failing = Some(reason);
                }
            }
        }
        result
    }

    /// Parses and appends a body on a blocking thread (a large exposition takes a core for a while; the
    /// async workers run probes and the API); nothing is appended unless the whole body parses within
    /// the target's sample limit.
    async fn ingest(&self, body: Bytes, content_type: String, at: Timestamp) -> Result<ScrapeReport, ScrapeFailure> {
        let series = self.series.clone();
        let store = self.store.clone();
        let labels = self.job.labels.clone();
        let (max_series, sample_limit) = (self.job.max_series, self.job.sample_limit);
        tokio::task::spawn_blocking(move || {
            let mut series = series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            ingest(&mut series, &store, &labels, max_series, sample_limit, &body, &content_type, at)
        })
        .await
        .unwrap_or_else(|_| Err(ScrapeFailure::Unreachable("the ingest task failed".into())))
    }

    /// Ends every series the last scrape exposed with a staleness marker at `at` (after an ingest in
    /// flight, if any, has appended its samples).
    fn mark_stale(&mut self, at: Timestamp) {
        end_exposed(&self.series, &self.store, at);
    }

    /// [`Self::mark_stale`] on a blocking thread: a target that exposed half a million series and then
    /// failed a scrape held an async worker, and the store, for seconds.
    async fn mark_stale_off_worker(&self, at: Timestamp) {
        let (series, store) = (self.series.clone(), self.store.clone());
        let _ = tokio::task::spawn_blocking(move || end_exposed(&series, &store, at)).await;
    }

    fn append_synthetic(&self, at: Timestamp, values: &[(&str, f64)]) {
        let Ok(mut store) = self.store.write() else { return };
        let borrowed: Vec<(&str, &str)> = self.job.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for (name, value) in values {
            let labels = store.labels(name, &borrowed);
            let _ = store.append(&labels, at, *value);
        }
    }
}

/// Samples appended (or series ended) under one hold of the store's write lock.
const APPEND_BATCH: usize = 2_048;

/// Ends the series `target` exposed with staleness markers at `at`, [`APPEND_BATCH`] under each hold of
/// the store's write lock, so that the sampler, the rules and queries get in between.
fn end_exposed(target: &Mutex<TargetSeries>, store: &RwLock<SeriesStore>, at: Timestamp) {
    let mut target = target.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let gone: Vec<Labels> = target.exposed.drain().collect();
    for batch in gone.chunks(APPEND_BATCH) {
        let Ok(mut store) = store.write() else { return };
        for labels in batch {
            store.end_series(labels, at);
        }
        drop(store);
        std::thread::yield_now();
    }
}

/// Parses `body` (at most `sample_limit` samples) and appends it to `store`; nothing is appended unless
/// the whole body parses.
#[allow(clippy::too_many_arguments)] // One call site; the scraper's fields, taken apart for a blocking thread.
fn ingest(
    target: &mut TargetSeries,
    store: &RwLock<SeriesStore>,
    target_labels: &[(String, String)],
    max_series: usize,
    sample_limit: usize,
    body: &[u8],
    content_type: &str,
    at: Timestamp,
) -> Result<ScrapeReport, ScrapeFailure> {
    let format = mend_promtext::Format::from_content_type(content_type);
    let limits = mend_promtext::Limits { max_samples: sample_limit, ..mend_promtext::Limits::DEFAULT };
    let families = mend_promtext::parse_bytes(body, format, &limits).map_err(|error| match error.kind {
        mend_promtext::ErrorKind::TooManySamples { limit } => ScrapeFailure::SampleLimit { limit },
        kind => ScrapeFailure::Malformed { line: error.line, column: error.column, reason: kind.to_string() },
    })?;
    // Counted before the store's lock is taken: the lock is for appending.
    let n_samples = mend_promtext::samples(&families).count();
    let write = || store.write().map_err(|_| ScrapeFailure::Unreachable("the series store is unavailable".into()));
    let mut store = write()?;
    // Series the store swept (a target whose labels churn) no longer count against the target's limit.
    target.scrapes += 1;
    if target.scrapes.is_multiple_of(60) {
        target.known.retain(|labels| store.contains(labels));
    }
    // Room for what this scrape may add, made once rather than by doublings under the lock (a target's
    // first scrape of half a million series rehashed the store's index for seconds).
    let new_at_most = n_samples.saturating_sub(target.known.len()).min(max_series);
    store.reserve(new_at_most);
    target.known.reserve(new_at_most);
    let mut report = ScrapeReport { samples: 0, dropped_series: 0 };
    let mut exposed = HashSet::with_capacity(n_samples.min(max_series));
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(16);
    for (index, (_, sample)) in mend_promtext::samples(&families).enumerate() {
        if index > 0 && index.is_multiple_of(APPEND_BATCH) {
            // A large exposition takes seconds to append on a slow machine: let the rule evaluator, the
            // /proc sampler and queries in between, rather than stall every async worker that waits on
            // the store behind one target.
            drop(store);
            std::thread::yield_now();
            store = write()?;
        }
        pairs.clear();
        for label in &sample.labels {
            // Target labels win; a clashing scraped label is kept as exported_<name>, as Prometheus does.
            let name = if target_labels.iter().any(|(target, _)| *target == label.name) {
                format!("exported_{}", label.name)
            } else {
                label.name.to_string()
            };
            pairs.push((name, label.value.to_string()));
        }
        pairs.extend(target_labels.iter().cloned());
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let labels = store.labels(&sample.name, &borrowed);
        if !target.known.contains(&labels) {
            if target.known.len() >= max_series {
                report.dropped_series += 1;
                continue;
            }
            target.known.insert(labels.clone());
        }
        let when = sample.timestamp_ms.map_or(at, Timestamp::from_millis);
        match store.append(&labels, when, sample.value) {
            Ok(()) => {
                report.samples += 1;
                if sample.timestamp_ms.is_none() {
                    exposed.insert(labels);
                }
            }
            Err(AppendError::TooManySeries { .. }) => {
                target.known.remove(&labels);
                report.dropped_series += 1;
            }
        }
    }
    for gone in target.exposed.difference(&exposed) {
        store.end_series(gone, at);
    }
    target.exposed = exposed;
    Ok(report)
}
