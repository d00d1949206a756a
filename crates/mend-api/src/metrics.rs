//! `/metrics`: mend's own and per-replica metrics in the OpenMetrics or Prometheus 0.0.4 text format.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mend_supervisor::Supervisor;
use mend_types::{Event, EventKind, EventSink, Severity, Signal, SignalKind, SignalSink, SignalState};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The observe stage's shared state, for /metrics.
pub struct ObserveStats {
    /// Scrape counters.
    pub scrapes: Arc<mend_observe::scrape::ScrapeStats>,
    /// The series store.
    pub series: Arc<std::sync::RwLock<mend_observe::series::SeriesStore>>,
}

/// Families that a stage outside the API adds to `/metrics` (remote write's counters, say).
pub trait MetricsSource: Send + Sync {
    /// The families in OpenMetrics text, without `# EOF`.
    fn openmetrics(&self) -> String;
}

/// Counts events by kind on their way to the store.
pub struct EventCounter {
    inner: Arc<dyn EventSink>,
    counts: [AtomicU64; EventKind::ALL.len()],
}

impl EventCounter {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn EventSink>) -> Self {
        Self { inner, counts: std::array::from_fn(|_| AtomicU64::new(0)) }
    }

    /// Events seen so far, by kind.
    pub fn counts(&self) -> impl Iterator<Item = (EventKind, u64)> + '_ {
        EventKind::ALL.into_iter().zip(self.counts.iter().map(|count| count.load(Ordering::Relaxed)))
    }
}

impl EventSink for EventCounter {
    fn emit(&self, event: Event) {
        if let Some(idx) = EventKind::ALL.iter().position(|kind| *kind == event.kind) {
            self.counts[idx].fetch_add(1, Ordering::Relaxed);
        }
        self.inner.emit(event);
    }
}

/// Counts signals by kind, severity and state on their way to the store, and tracks which are firing.
pub struct SignalCounter {
    inner: Arc<dyn SignalSink>,
    counts: std::sync::Mutex<std::collections::BTreeMap<(SignalKind, Severity, SignalState), u64>>,
    firing: std::sync::Mutex<std::collections::HashMap<String, SignalKind>>,
}

impl SignalCounter {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn SignalSink>) -> Self {
        Self { inner, counts: Default::default(), firing: Default::default() }
    }

    /// Transitions seen so far, by kind, severity and state.
    pub fn counts(&self) -> Vec<((SignalKind, Severity, SignalState), u64)> {
        self.counts.lock().map(|counts| counts.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default()
    }

    /// Conditions firing now, by kind.
    pub fn firing(&self) -> Vec<(SignalKind, usize)> {
        let Ok(firing) = self.firing.lock() else { return Vec::new() };
        let mut by_kind: std::collections::BTreeMap<SignalKind, usize> = Default::default();
        for kind in firing.values() {
            *by_kind.entry(*kind).or_default() += 1;
        }
        by_kind.into_iter().collect()
    }

    /// Whether the condition with `fingerprint` is firing now.
    pub fn is_firing(&self, fingerprint: &str) -> bool {
        self.firing.lock().is_ok_and(|firing| firing.contains_key(fingerprint))
    }

    /// Takes over conditions a previous run left firing (read back from the store), without recording
    /// them again.
    pub fn restore_firing<'a>(&self, signals: impl IntoIterator<Item = &'a Signal>) {
        if let Ok(mut firing) = self.firing.lock() {
            for signal in signals {
                firing.insert(signal.fingerprint(), signal.kind);
            }
        }
    }
}

impl SignalSink for SignalCounter {
    fn signal(&self, signal: Signal) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry((signal.kind, signal.severity, signal.state)).or_default() += 1;
        }
        if let Ok(mut firing) = self.firing.lock() {
            match signal.state {
                SignalState::Firing => {
                    firing.insert(signal.fingerprint(), signal.kind);
                }
                SignalState::Resolved => {
                    firing.remove(&signal.fingerprint());
                }
            }
        }
        tracing::info!(kind = signal.kind.as_str(), name = %signal.name, state = signal.state.as_str(), "{}", signal.evidence);
        self.inner.signal(signal);
    }
}

type ReplicaLabels = Vec<(&'static str, String)>;

/// Renders the metrics page from the current state.
pub(crate) fn render(
    supervisor: &Supervisor,
    events: &EventCounter,
    signals: &SignalCounter,
    observe: &ObserveStats,
    dropped_events: u64,
    heal_actions: &[(&'static str, &'static str, u64)],
    stream: &crate::StreamHub,
) -> String {
    let mut registry = Registry::default();

    let stream_clients = Gauge::<i64>::default();
    stream_clients.set(i64::try_from(stream.clients()).unwrap_or(i64::MAX));
    registry.register("mend_api_stream_clients", "Clients following /api/v1/stream now", stream_clients);
    let stream_opened = Counter::<u64>::default();
    stream_opened.inc_by(stream.opened());
    registry.register("mend_api_stream_opened", "Streams of /api/v1/stream opened", stream_opened);
    let stream_refused = Counter::<u64>::default();
    stream_refused.inc_by(stream.refused());
    registry.register(
        "mend_api_stream_refused",
        "Streams of /api/v1/stream refused because as many as mend serves were open",
        stream_refused,
    );
    let stream_lost = Counter::<u64>::default();
    stream_lost.inc_by(stream.lost());
    registry.register(
        "mend_api_stream_lost_messages",
        "Messages lost by clients of /api/v1/stream that fell behind (each was told to read the state again)",
        stream_lost,
    );

    let actions_total = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    for (action, outcome, count) in heal_actions {
        actions_total.get_or_create(&vec![("action", *action), ("outcome", *outcome)]).inc_by(*count);
    }
    registry.register(
        "mend_heal_actions",
        "Healing actions journalled, by action and state (pending, running, succeeded, failed, dry_run, ...)",
        actions_total,
    );

    let signals_total = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    for ((kind, severity, state), count) in signals.counts() {
        signals_total
            .get_or_create(&vec![("kind", kind.as_str()), ("severity", severity.as_str()), ("state", state.as_str())])
            .inc_by(count);
    }
    registry.register("mend_signals", "Signal transitions, by kind, severity and state", signals_total);
    let firing = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    for (kind, count) in signals.firing() {
        firing.get_or_create(&vec![("kind", kind.as_str())]).set(count as i64);
    }
    registry.register("mend_signals_firing", "Conditions firing now, by kind", firing);

    let scrapes = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    scrapes
        .get_or_create(&vec![("outcome", "success")])
        .inc_by(observe.scrapes.succeeded.load(std::sync::atomic::Ordering::Relaxed));
    scrapes
        .get_or_create(&vec![("outcome", "failure")])
        .inc_by(observe.scrapes.failed.load(std::sync::atomic::Ordering::Relaxed));
    registry.register("mend_scrapes", "Scrapes, by outcome", scrapes);
    let scraped = Counter::<u64>::default();
    scraped.inc_by(observe.scrapes.samples.load(std::sync::atomic::Ordering::Relaxed));
    registry.register("mend_scrape_samples", "Samples appended by scrapes", scraped);
    let (n_series, dropped_series) = observe.series.read().map(|s| (s.len(), s.dropped_series())).unwrap_or_default();
    let series = Gauge::<i64>::default();
    series.set(n_series as i64);
    registry.register("mend_series", "Series held by the in-memory store", series);
    let series_dropped = Counter::<u64>::default();
    series_dropped.inc_by(dropped_series + observe.scrapes.dropped_series.load(std::sync::atomic::Ordering::Relaxed));
    registry.register("mend_series_dropped", "New series refused by a series limit", series_dropped);

    let build_info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))]).set(1);
    registry.register("mend_build_info", "mend's version", build_info);

    let events_total = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    for (kind, count) in events.counts() {
        events_total.get_or_create(&vec![("kind", kind.as_str())]).inc_by(count);
    }
    registry.register("mend_events", "Lifecycle events recorded, by kind", events_total);
    let dropped = Counter::<u64>::default();
    dropped.inc_by(dropped_events);
    registry.register("mend_events_dropped", "Events dropped because the store's queue was full", dropped);

    if let Some(me) = mend_observe::process::sample(std::process::id()) {
        let rss = Gauge::<i64>::default();
        rss.set(me.rss_bytes as i64);
        registry.register("mend_process_resident_memory_bytes", "mend's own resident memory", rss);
        let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        cpu.inc_by(me.cpu_seconds);
        registry.register("mend_process_cpu_seconds", "mend's own CPU time", cpu);
    }

    let desired = Family::<Vec<(&'static str, String)>, Gauge>::default();
    let ready_replicas = Family::<Vec<(&'static str, String)>, Gauge>::default();
    let up = Family::<ReplicaLabels, Gauge>::default();
    let ready = Family::<ReplicaLabels, Gauge>::default();
    let restarts = Family::<ReplicaLabels, Counter>::default();
    let cpu = Family::<ReplicaLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
    let rss = Family::<ReplicaLabels, Gauge>::default();
    let threads = Family::<ReplicaLabels, Gauge>::default();
    let fds = Family::<ReplicaLabels, Gauge>::default();
    let start_time = Family::<ReplicaLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for service in supervisor.services() {
        let name = service.config().name.to_string();
        let statuses = service.statuses();
        desired.get_or_create(&vec![("service", name.clone())]).set(i64::from(service.config().replicas));
        ready_replicas
            .get_or_create(&vec![("service", name.clone())])
            .set(statuses.iter().filter(|s| s.ready).count() as i64);
        for status in &statuses {
            let labels = vec![("service", name.clone()), ("replica", status.index.to_string())];
            up.get_or_create(&labels).set(i64::from(status.pid.is_some()));
            ready.get_or_create(&labels).set(i64::from(status.ready));
            restarts.get_or_create(&labels).inc_by(status.restarts);
            if let Some(process) = status.process {
                cpu.get_or_create(&labels).inc_by(process.cpu_seconds);
                rss.get_or_create(&labels).set(process.rss_bytes as i64);
                threads.get_or_create(&labels).set(process.threads as i64);
                if let Some(open_fds) = process.open_fds {
                    fds.get_or_create(&labels).set(open_fds as i64);
                }
            }
            if let Some(started_at) = status.started_at {
                start_time.get_or_create(&labels).set(started_at.as_secs_f64());
            }
        }
    }
    registry.register("mend_service_desired_replicas", "Configured replicas", desired);
    registry.register("mend_service_ready_replicas", "Replicas in the ready set", ready_replicas);
    registry.register("mend_replica_up", "1 when the replica's process is running", up);
    registry.register("mend_replica_ready", "1 when the replica is in the ready set", ready);
    registry.register("mend_replica_restarts", "Automatic restarts of the replica", restarts);
    registry.register("mend_replica_cpu_seconds", "CPU time of the replica's current process", cpu);
    registry.register("mend_replica_resident_memory_bytes", "Resident memory of the replica's process", rss);
    registry.register("mend_replica_threads", "Threads of the replica's process", threads);
    registry.register("mend_replica_open_fds", "Open file descriptors of the replica's process", fds);
    registry.register(
        "mend_replica_start_time_seconds",
        "Start time of the replica's process, Unix seconds",
        start_time,
    );

    let mut out = String::with_capacity(4096);
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry);
    if let Ok(series) = observe.series.read() {
        let body_end = out.strip_suffix("# EOF\n").map_or(out.len(), str::len);
        out.truncate(body_end);
        write_proxy_families(&mut out, &series);
        out.push_str("# EOF\n");
    }
    out
}

/// The families the traffic stage samples from its proxies into the series store every second
/// (`mend::traffic`), exported here too so that a Prometheus scraping mend sees them: name, type, help.
const PROXY_FAMILIES: [(&str, &str, &str); 16] = [
    ("mend_proxy_requests", "counter", "Requests through mend's proxy, by service, release and status class"),
    (
        "mend_proxy_request_duration_seconds",
        "histogram",
        "Request latency through mend's proxy, by service and release",
    ),
    ("mend_proxy_grpc_requests", "counter", "gRPC responses through mend's proxy, by service, release and status code"),
    ("mend_proxy_retries", "counter", "Retries to another replica"),
    ("mend_proxy_retries_denied", "counter", "Retries refused by the retry budget"),
    (
        "mend_proxy_partitioned_requests",
        "counter",
        "Requests refused by a chaos partition (in no status count: the service never saw them)",
    ),
    ("mend_proxy_retries_on_5xx", "counter", "Attempts answered 5xx and retried on another replica, by release"),
    ("mend_proxy_connections_open", "gauge", "Client connections open"),
    ("mend_proxy_ejections", "counter", "Replicas ejected by outlier detection"),
    ("mend_proxy_backend_in_flight", "gauge", "Requests in flight to a replica"),
    ("mend_proxy_backend_ejected", "gauge", "1 while a replica is ejected"),
    ("mend_proxy_backend_ejections", "counter", "Ejections of a replica"),
    ("mend_proxy_backend_attempts", "counter", "Attempts on a replica, by status class"),
    (
        "mend_proxy_backend_busy",
        "counter",
        "Attempts a replica was too busy to accept (a full accept queue: at capacity, not failing)",
    ),
    ("mend_proxy_edge_requests", "counter", "Requests from a calling service (x-mend-caller) to a service"),
    ("mend_proxy_edge_errors", "counter", "5xx answers to a calling service"),
];

/// Writes the latest sampling round of the proxy families in OpenMetrics text. Only that round: series of
/// replicas that were replaced keep their last point in the store until they are swept, and a stale
/// in-flight gauge would mislead.
fn write_proxy_families(out: &mut String, series: &mend_observe::series::SeriesStore) {
    use std::fmt::Write as _;
    // The sample names of a family, in the order OpenMetrics wants them within one label set.
    let suffixes = |kind: &str| -> &'static [&'static str] {
        match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            _ => &[""],
        }
    };
    let families: Vec<_> = PROXY_FAMILIES
        .iter()
        .map(|&(name, kind, help)| {
            let mut samples = Vec::new();
            for (order, suffix) in suffixes(kind).iter().enumerate() {
                for labels in series.select(&format!("{name}{suffix}"), &[]) {
                    if let Some(point) =
                        series.latest(labels).filter(|point| !mend_observe::series::is_stale_marker(point.value))
                    {
                        samples.push((order, labels.clone(), point));
                    }
                }
            }
            (name, kind, help, samples)
        })
        .collect();
    let Some(round) = families.iter().flat_map(|family| &family.3).map(|(_, _, point)| point.at).max() else {
        return;
    };
    for (name, kind, help, mut samples) in families {
        samples.retain(|(_, _, point)| point.at == round);
        if samples.is_empty() {
            continue;
        }
        // Label set by label set; within one, a histogram's buckets by increasing bound, then count and sum.
        samples.sort_by_cached_key(|(order, labels, _)| {
            let group: Vec<(String, String)> =
                labels.pairs().filter(|(key, _)| *key != "le").map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
            // Bucket bounds are non-negative, where the bit patterns of floats order as their values.
            let bound = labels.get("le").map_or(f64::INFINITY, |le| le.parse().unwrap_or(f64::INFINITY));
            (group, *order, bound.to_bits())
        });
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (_, labels, point) in samples {
            out.push_str(labels.name());
            out.push('{');
            for (idx, (key, value)) in labels.pairs().enumerate() {
                if idx > 0 {
                    out.push(',');
                }
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(out, "{key}=\"{escaped}\"");
            }
            out.push('}');
            let _ = writeln!(out, " {}", point.value);
        }
    }
}

/// The content type of the OpenMetrics page.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the 0.0.4 text page.
pub(crate) const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the request's `Accept` lists OpenMetrics with a non-zero quality.
pub(crate) fn accepts_openmetrics(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut params = range.split(';').map(str::trim);
            let media_type = params.next().unwrap_or_default();
            let refused = params
                .any(|param| param.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q <= 0.0));
            media_type.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
}

/// Converts the OpenMetrics page to the 0.0.4 text format (counters under their `_total` names, no
/// `# EOF`).
pub(crate) fn to_text_format(openmetrics: &str) -> Result<String, mend_promtext::ParseError> {
    let families = mend_promtext::parse(openmetrics, mend_promtext::Format::OpenMetrics)?;
    Ok(mend_promtext::encode(&families))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderMap;
    use axum::http::header::ACCEPT;

    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, value.parse().expect("header"));
        headers
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(accepts_openmetrics(&accept(prometheus)));
        assert!(accepts_openmetrics(&accept("Application/OpenMetrics-Text")));
        assert!(!accepts_openmetrics(&accept("application/openmetrics-text;q=0, text/plain")));
        assert!(!accepts_openmetrics(&accept("*/*")));
        assert!(!accepts_openmetrics(&accept("text/plain;version=0.0.4")));
        assert!(!accepts_openmetrics(&HeaderMap::new()));
    }

    #[test]
    fn the_text_format_names_counters_with_their_total_and_drops_eof() {
        let openmetrics = "# HELP mend_events Lifecycle events recorded, by kind.\n# TYPE mend_events counter\n\
                           mend_events_total{kind=\"started\"} 2\n# HELP mend_series Series held.\n\
                           # TYPE mend_series gauge\nmend_series 111\n# EOF\n";
        let text = to_text_format(openmetrics).expect("converts");
        assert_eq!(
            text,
            "# HELP mend_events_total Lifecycle events recorded, by kind.\n# TYPE mend_events_total counter\n\
             mend_events_total{kind=\"started\"} 2\n# HELP mend_series Series held.\n# TYPE mend_series gauge\n\
             mend_series 111\n"
        );
    }
}
