//! The IO edge: a collector task that copies new points out of the series store every interval (one
//! short read lock per request's worth), encodes and compresses them and puts them in a bounded queue,
//! and a sender task that POSTs the queue's oldest request, retrying with back-off while the receiver
//! answers 5xx or 429 or not at all.
//!
//! Ingest never waits on any of this: the store is only read, a request at a time. Memory is bounded by
//! the queue: at most `queue_requests` compressed requests of `max_samples_per_request` samples. While the
//! receiver answers, the collector takes only what fits (the rest waits in the store); while it fails, the
//! collector goes on taking and the oldest requests are dropped and their samples counted (the newest data
//! is worth more to an operator looking at a dashboard than the oldest).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mend_observe::series::SeriesStore;
use mend_types::Timestamp;
use prost::Message as _;
use tokio::sync::Notify;

use crate::batch::{Cursor, Verdict, n_samples, request};

/// Where and how to send (built from `[remote_write]` by the binary).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The receiver.
    pub endpoint: Endpoint,
    /// How often the store is read for new points.
    pub interval: Duration,
    /// Samples per request at most.
    pub max_samples_per_request: usize,
    /// Requests waiting to be sent at most.
    pub queue_requests: usize,
    /// Bound on one request (connect, send, answer).
    pub timeout: Duration,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
    /// Labels added to every series.
    pub labels: BTreeMap<String, String>,
    /// Points at or before this are not sent (they went out before a restart that restored them).
    pub send_after: Option<Timestamp>,
}

/// A parsed `http://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path with its query, starting with `/`.
    pub path: String,
}

impl Endpoint {
    /// Parses `http://HOST[:PORT][/PATH]` (port 80 and path `/api/v1/write` when left out); `None` for
    /// other schemes (mend has no TLS client) or a malformed URL.
    pub fn parse(url: &str) -> Option<Self> {
        let uri: hyper::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_owned();
        let path = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("" | "/") => "/api/v1/write".to_owned(),
            Some(path) => path.to_owned(),
        };
        Some(Self { host, port: uri.port_u16().unwrap_or(80), path })
    }
}

/// Counters for /metrics (all since start).
#[derive(Debug, Default)]
pub struct Stats {
    /// Samples the receiver accepted.
    pub samples_sent: AtomicU64,
    /// Samples dropped because the queue was full (the oldest request went).
    pub samples_dropped_queue_full: AtomicU64,
    /// Samples dropped because the receiver refused their request with a 4xx other than 429.
    pub samples_rejected: AtomicU64,
    /// Requests the receiver accepted.
    pub requests_sent: AtomicU64,
    /// Attempts that failed in a way worth retrying (5xx, 429, no answer).
    pub requests_retried: AtomicU64,
    /// Compressed bytes of the accepted requests' bodies.
    pub bytes_sent: AtomicU64,
    /// Samples waiting in the queue now.
    pub queue_samples: AtomicU64,
    /// Requests waiting in the queue now.
    pub queue_requests: AtomicU64,
    /// The last attempt failed in a way worth retrying (the receiver is down or overloaded).
    pub receiver_failing: AtomicBool,
}

impl Stats {
    /// The counters as OpenMetrics families (no `# EOF`), for `/metrics`.
    pub fn openmetrics(&self, max_queue_samples: u64) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: &[(&str, u64)]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            let sample_name = if kind == "counter" { format!("{name}_total") } else { name.to_owned() };
            for (labels, value) in rows {
                out.push_str(&format!("{sample_name}{labels} {value}\n"));
            }
        };
        family(
            "mend_remote_write_samples",
            "counter",
            "Samples of the series store by what became of them: sent, dropped with the queue full, rejected by the receiver.",
            &[
                ("{outcome=\"sent\"}", self.samples_sent.load(Relaxed)),
                ("{outcome=\"queue_full\"}", self.samples_dropped_queue_full.load(Relaxed)),
                ("{outcome=\"rejected\"}", self.samples_rejected.load(Relaxed)),
            ],
        );
        family(
            "mend_remote_write_requests",
            "counter",
            "Remote write requests: accepted, and attempts to be retried (5xx, 429, no answer).",
            &[
                ("{outcome=\"sent\"}", self.requests_sent.load(Relaxed)),
                ("{outcome=\"retried\"}", self.requests_retried.load(Relaxed)),
            ],
        );
        family(
            "mend_remote_write_sent_bytes",
            "counter",
            "Compressed bytes of the accepted requests.",
            &[("", self.bytes_sent.load(Relaxed))],
        );
        family(
            "mend_remote_write_queue_samples",
            "gauge",
            "Samples waiting to be sent.",
            &[("", self.queue_samples.load(Relaxed))],
        );
        family(
            "mend_remote_write_queue_max_samples",
            "gauge",
            "The queue's bound in samples.",
            &[("", max_queue_samples)],
        );
        out
    }
}

/// One encoded request waiting in the queue.
struct Queued {
    id: u64,
    body: Bytes,
    n_samples: usize,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Queued>,
    next_id: u64,
}

/// The running remote writer; dropping it stops both tasks.
pub struct RemoteWriter {
    stats: Arc<Stats>,
    max_queue_samples: u64,
    queue: Arc<Mutex<Queue>>,
    /// Asks the collector for a pass now (at shutdown).
    pass_now: Arc<Notify>,
    /// Flushes asked for so far; a pass covers those asked before it started.
    flushes_asked: Arc<AtomicU64>,
    /// The flushes covered by a finished pass, so that a flush knows when its pass is done.
    flushes_covered: tokio::sync::watch::Receiver<u64>,
    collector: tokio::task::JoinHandle<()>,
    sender: tokio::task::JoinHandle<()>,
}

impl RemoteWriter {
    /// Starts the collector and the sender on the current runtime.
    pub fn start(settings: Settings, store: Arc<RwLock<SeriesStore>>) -> Self {
        let stats = Arc::new(Stats::default());
        let queue = Arc::new(Mutex::new(Queue::default()));
        let wake = Arc::new(Notify::new());
        let settings = Arc::new(settings);
        let pass_now = Arc::new(Notify::new());
        let flushes_asked = Arc::new(AtomicU64::new(0));
        let (covered_tx, flushes_covered) = tokio::sync::watch::channel(0);
        let collector = tokio::spawn(collect_loop(
            Collector {
                settings: settings.clone(),
                store,
                queue: queue.clone(),
                wake: wake.clone(),
                stats: stats.clone(),
            },
            Flushes { pass_now: pass_now.clone(), asked: flushes_asked.clone(), covered: covered_tx },
        ));
        let sender = tokio::spawn(send_loop(settings.clone(), queue.clone(), wake, stats.clone()));
        let max_queue_samples = (settings.queue_requests * settings.max_samples_per_request) as u64;
        Self { stats, max_queue_samples, queue, pass_now, flushes_asked, flushes_covered, collector, sender }
    }

    /// At shutdown: one last pass over the store, then waits until the queue is sent, the receiver
    /// fails, or `within` runs out (whichever comes first); says whether everything went out.
    pub async fn flush(&self, within: Duration) -> bool {
        let mut covered = self.flushes_covered.clone();
        // A pass already running when this is asked may have read the store before the newest points:
        // only a pass that starts after it counts.
        let flush = self.flushes_asked.fetch_add(1, Relaxed) + 1;
        self.pass_now.notify_one();
        let drained = async {
            while *covered.borrow_and_update() < flush {
                if covered.changed().await.is_err() {
                    return false;
                }
            }
            loop {
                if lock_queue(&self.queue).requests.is_empty() {
                    return true;
                }
                if self.stats.receiver_failing.load(Relaxed) {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(within, drained).await.unwrap_or(false)
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The counters as OpenMetrics families (no `# EOF`).
    pub fn openmetrics(&self) -> String {
        self.stats.openmetrics(self.max_queue_samples)
    }
}

impl Drop for RemoteWriter {
    fn drop(&mut self) {
        self.collector.abort();
        self.sender.abort();
    }
}

fn lock_queue(queue: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    // The queue holds plain data and no code that can panic runs under the lock; a poisoned lock still
    // holds a consistent queue.
    queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the collector works with.
struct Collector {
    settings: Arc<Settings>,
    store: Arc<RwLock<SeriesStore>>,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    stats: Arc<Stats>,
}

/// How a flush asks the collector for a pass and learns that it is done.
struct Flushes {
    pass_now: Arc<Notify>,
    asked: Arc<AtomicU64>,
    covered: tokio::sync::watch::Sender<u64>,
}

async fn collect_loop(collector: Collector, flushes: Flushes) {
    let mut cursor = Cursor::after(collector.settings.send_after);
    let mut ticks = tokio::time::interval(collector.settings.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = flushes.pass_now.notified() => {}
        }
        let asked = flushes.asked.load(Relaxed);
        collector.pass(&mut cursor);
        flushes.covered.send_replace(asked);
    }
}

impl Collector {
    /// One pass: new points out of the store into the queue.
    fn pass(&self, cursor: &mut Cursor) {
        let Self { settings, store, queue, wake, stats } = self;
        // While the receiver answers, a pass takes only what fits in the queue: points not taken stay in
        // the store (itself bounded) for the next pass, so catching up loses nothing the store still
        // holds. While it fails, a pass takes up to a full queue, pushing the oldest requests out: the
        // newest data is what an operator will look at when the receiver comes back.
        let n_queued = lock_queue(queue).requests.len();
        let max_requests_per_pass = if stats.receiver_failing.load(Relaxed) {
            settings.queue_requests
        } else {
            settings.queue_requests.saturating_sub(n_queued)
        };
        if max_requests_per_pass == 0 {
            return;
        }
        let mut pending = {
            let store = store.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            cursor.pending(&store)
        };
        for _ in 0..max_requests_per_pass {
            if pending.is_empty() {
                break;
            }
            // One short read lock per request: the points are copied out, encoded outside it.
            let batch = {
                let store = store.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                cursor.take(&store, &mut pending, settings.max_samples_per_request)
            };
            if batch.is_empty() {
                continue;
            }
            let request = request(&batch, &settings.labels);
            let n_request_samples = n_samples(&request);
            let encoded = request.encode_to_vec();
            let body = match snap::raw::Encoder::new().compress_vec(&encoded) {
                Ok(body) => Bytes::from(body),
                Err(error) => {
                    // Only an input over snappy's 4 GiB block limit fails; a request is far smaller.
                    tracing::error!(error = %error, "cannot compress a remote write request");
                    continue;
                }
            };
            enqueue(queue, stats, settings.queue_requests, body, n_request_samples);
            wake.notify_one();
        }
    }
}

fn enqueue(queue: &Mutex<Queue>, stats: &Stats, max_requests: usize, body: Bytes, n_samples: usize) {
    let mut queue = lock_queue(queue);
    while queue.requests.len() >= max_requests {
        let Some(dropped) = queue.requests.pop_front() else { break };
        stats.samples_dropped_queue_full.fetch_add(dropped.n_samples as u64, Relaxed);
        stats.queue_samples.fetch_sub(dropped.n_samples as u64, Relaxed);
    }
    let id = queue.next_id;
    queue.next_id += 1;
    queue.requests.push_back(Queued { id, body, n_samples });
    stats.queue_samples.fetch_add(n_samples as u64, Relaxed);
    stats.queue_requests.store(queue.requests.len() as u64, Relaxed);
}

/// Removes request `id` if it is still queued (the collector may have dropped it meanwhile).
fn settle(queue: &Mutex<Queue>, stats: &Stats, id: u64) -> bool {
    let mut queue = lock_queue(queue);
    let Some(idx) = queue.requests.iter().position(|queued| queued.id == id) else { return false };
    if let Some(done) = queue.requests.remove(idx) {
        stats.queue_samples.fetch_sub(done.n_samples as u64, Relaxed);
    }
    stats.queue_requests.store(queue.requests.len() as u64, Relaxed);
    true
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

async fn send_loop(settings: Arc<Settings>, queue: Arc<Mutex<Queue>>, wake: Arc<Notify>, stats: Arc<Stats>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let front = {
            let queue = lock_queue(&queue);
            queue.requests.front().map(|queued| (queued.id, queued.body.clone(), queued.n_samples))
        };
        let Some((id, body, n_request_samples)) = front else {
            wake.notified().await;
            continue;
        };
        let n_bytes = body.len() as u64;
        let answer = tokio::time::timeout(settings.timeout, post(&settings, body)).await;
        let verdict = match &answer {
            Ok(Ok(status)) => Verdict::of_status(*status),
            Ok(Err(_)) | Err(_) => Verdict::Retry,
        };
        match verdict {
            Verdict::Sent => {
                backoff = MIN_BACKOFF;
                stats.receiver_failing.store(false, Relaxed);
                if settle(&queue, &stats, id) {
                    stats.samples_sent.fetch_add(n_request_samples as u64, Relaxed);
                    stats.requests_sent.fetch_add(1, Relaxed);
                    stats.bytes_sent.fetch_add(n_bytes, Relaxed);
                }
            }
            Verdict::Rejected => {
                backoff = MIN_BACKOFF;
                stats.receiver_failing.store(false, Relaxed);
                if settle(&queue, &stats, id) {
                    stats.samples_rejected.fetch_add(n_request_samples as u64, Relaxed);
                }
                if let Ok(Ok(status)) = answer {
                    tracing::warn!(status, samples = n_request_samples, "remote write request rejected; dropped");
                }
            }
            Verdict::Retry => {
                stats.requests_retried.fetch_add(1, Relaxed);
                stats.receiver_failing.store(true, Relaxed);
                match answer {
                    Ok(Ok(status)) => tracing::warn!(status, backoff = ?backoff, "remote write failed; retrying"),
                    Ok(Err(error)) => {
                        tracing::warn!(error = %error, backoff = ?backoff, "remote write failed; retrying")
                    }
                    Err(_) => tracing::warn!(backoff = ?backoff, "remote write timed out; retrying"),
                }
                // Jitter keeps many mends that lost the same receiver from coming back in step.
                let jittered = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
                tokio::time::sleep(jittered).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why one request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("http exchange failed")]
    Http(#[source] hyper::Error),
    #[error("bad request")]
    Request(#[source] hyper::http::Error),
}

/// POSTs one compressed request; the answer's status.
async fn post(settings: &Settings, body: Bytes) -> Result<u16, PostError> {
    let endpoint = &settings.endpoint;
    let stream =
        tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await.map_err(PostError::Connect)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(PostError::Http)?;
    let conn = tokio::spawn(conn);
    let mut builder = hyper::Request::post(endpoint.path.as_str())
        .header(hyper::header::HOST, format!("{}:{}", endpoint.host, endpoint.port))
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .header(hyper::header::CONTENT_ENCODING, "snappy")
        .header(hyper::header::USER_AGENT, concat!("mend/", env!("CARGO_PKG_VERSION")))
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    if let Some(authorization) = &settings.authorization {
        builder = builder.header(hyper::header::AUTHORIZATION, authorization);
    }
    let request = builder.body(Full::new(body)).map_err(PostError::Request)?;
    let result = async {
        let response = sender.send_request(request).await.map_err(PostError::Http)?;
        let status = response.status().as_u16();
        // Read the (small) answer so the exchange ends cleanly.
        let _answer = response.into_body().collect().await.map_err(PostError::Http)?;
        Ok(status)
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let parsed = Endpoint::parse("http://127.0.0.1:9090/api/v1/write").expect("valid");
        assert_eq!(parsed, Endpoint { host: "127.0.0.1".into(), port: 9090, path: "/api/v1/write".into() });
        assert_eq!(Endpoint::parse("http://prometheus").expect("valid").path, "/api/v1/write");
        assert_eq!(Endpoint::parse("https://prometheus/api/v1/write"), None);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts() {
        let queue = Mutex::new(Queue::default());
        let stats = Stats::default();
        for n_samples in [3, 5, 7] {
            enqueue(&queue, &stats, 2, Bytes::new(), n_samples);
        }
        assert_eq!(stats.samples_dropped_queue_full.load(Relaxed), 3);
        assert_eq!(stats.queue_samples.load(Relaxed), 12);
        assert_eq!(stats.queue_requests.load(Relaxed), 2);
        // The sender settles request 0, which the collector dropped meanwhile: nothing is counted twice.
        assert!(!settle(&queue, &stats, 0));
        assert!(settle(&queue, &stats, 1));
        assert_eq!(stats.queue_samples.load(Relaxed), 7);
    }
}
