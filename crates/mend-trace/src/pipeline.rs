//! Where finished spans go: a bounded intake that the proxy writes with `try_send` (never waiting), one
//! collector task that puts each span in the [`SpanStore`] and into export batches, and one exporter
//! task that POSTs batches to an OTLP/HTTP endpoint.
//!
//! Overflow policy, written where each queue is made: the intake holds [`INTAKE_CAPACITY`] spans and a
//! span that finds it full is dropped and counted (`dropped_intake`); the export queue holds
//! `queue_batches` batches and a batch that finds it full is dropped and counted
//! (`dropped_queue_full`); a batch the endpoint refuses or that times out is dropped and counted
//! (`dropped_export_failed`), without retry (the store still has its spans).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::context::TraceId;
use crate::otlp::{self, OtlpError};
use crate::span::Span;
use crate::store::{SpanStore, StoreStats, TraceQuery, TraceSummary};

/// Spans the intake holds before new ones are dropped.
pub const INTAKE_CAPACITY: usize = 8_192;

/// Where to export, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// The OTLP/HTTP traces endpoint, `http://HOST:PORT/PATH` (usually `.../v1/traces`).
    pub endpoint: ExportEndpoint,
    /// Spans per request.
    pub batch_spans: usize,
    /// A batch not full is sent this long after its first span.
    pub flush_interval: Duration,
    /// Batches waiting for the endpoint before new ones are dropped.
    pub queue_batches: usize,
    /// Bound on one export request (connect, send, answer).
    pub timeout: Duration,
}

/// A parsed `http://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEndpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path with its query, starting with `/`.
    pub path: String,
}

impl ExportEndpoint {
    /// Parses `http://HOST[:PORT][/PATH]` (port 80 and path `/v1/traces` when left out); `None` for other
    /// schemes (there is no TLS client in mend) or a malformed URL.
    pub fn parse(url: &str) -> Option<Self> {
        let uri: hyper::Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_owned();
        let path = match uri.path_and_query().map(|pq| pq.as_str()) {
            None | Some("" | "/") => "/v1/traces".to_owned(),
            Some(path) => path.to_owned(),
        };
        Some(Self { host, port: uri.port_u16().unwrap_or(80), path })
    }
}

/// The pipeline's counters (for /metrics and `mend traces`).
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Spans that entered the intake.
    pub recorded: AtomicU64,
    /// Spans received over OTLP (accepted into the intake).
    pub received_otlp: AtomicU64,
    /// Spans dropped because the intake was full.
    pub dropped_intake: AtomicU64,
    /// Spans exported.
    pub exported: AtomicU64,
    /// Spans dropped because the export queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans dropped because their export failed.
    pub dropped_export_failed: AtomicU64,
}

/// A snapshot of [`PipelineCounters`] and the store's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TracingStats {
    /// Spans recorded by the proxies.
    pub recorded: u64,
    /// Spans received over OTLP.
    pub received_otlp: u64,
    /// Spans dropped at the intake.
    pub dropped_intake: u64,
    /// Spans exported.
    pub exported: u64,
    /// Spans dropped: export queue full.
    pub dropped_queue_full: u64,
    /// Spans dropped: export failed.
    pub dropped_export_failed: u64,
    /// The store.
    pub store: StoreStats,
}

/// What the proxy holds to hand spans on: cheap to clone, never waits.
#[derive(Debug, Clone)]
pub struct SpanRecorder {
    intake: mpsc::Sender<Span>,
    counters: Arc<PipelineCounters>,
}

impl SpanRecorder {
    /// Hands `span` on, or drops and counts it when the intake is full (or the pipeline has stopped).
    pub fn record(&self, span: Span) {
        match self.intake.try_send(span) {
            Ok(()) => self.counters.recorded.fetch_add(1, Relaxed),
            Err(_) => self.counters.dropped_intake.fetch_add(1, Relaxed),
        };
    }
}

/// The span store, the intake and the exporter of one daemon.
#[derive(Debug)]
pub struct Tracing {
    store: Arc<Mutex<SpanStore>>,
    recorder: SpanRecorder,
    counters: Arc<PipelineCounters>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn lock(store: &Mutex<SpanStore>) -> std::sync::MutexGuard<'_, SpanStore> {
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tracing {
    /// Starts the collector (and the exporter when `export` is set) on the current runtime.
    pub fn start(store_bytes: usize, export: Option<Export>) -> Self {
        let store = Arc::new(Mutex::new(SpanStore::new(store_bytes)));
        let counters = Arc::new(PipelineCounters::default());
        // Overflow: a span that finds the intake full is dropped and counted (`SpanRecorder::record`).
        let (intake, intake_rx) = mpsc::channel(INTAKE_CAPACITY);
        let mut tasks = Vec::new();
        let batches = export.map(|export| {
            // Overflow: a batch that finds the queue full is dropped and counted (`collect`).
            let (batch_tx, batch_rx) = mpsc::channel(export.queue_batches.max(1));
            tasks.push(tokio::spawn(export_loop(export.clone(), batch_rx, counters.clone())));
            (export, batch_tx)
        });
        tasks.push(tokio::spawn(collect(intake_rx, store.clone(), batches, counters.clone())));
        let recorder = SpanRecorder { intake, counters: counters.clone() };
        Self { store, recorder, counters, tasks }
    }

    /// The handle the proxies record with.
    pub fn recorder(&self) -> SpanRecorder {
        self.recorder.clone()
    }

    /// Decodes an OTLP/protobuf export request and hands its spans on like the proxy's; returns how many.
    pub fn accept_otlp(&self, body: &[u8]) -> Result<usize, OtlpError> {
        let spans = otlp::decode(body)?;
        let n_spans = spans.len();
        for span in spans {
            match self.recorder.intake.try_send(span) {
                Ok(()) => self.counters.received_otlp.fetch_add(1, Relaxed),
                Err(_) => self.counters.dropped_intake.fetch_add(1, Relaxed),
            };
        }
        Ok(n_spans)
    }

    /// Traces matching `query`, newest first.
    pub fn list(&self, query: &TraceQuery) -> Vec<TraceSummary> {
        lock(&self.store).list(query)
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: TraceId) -> Option<Vec<Span>> {
        lock(&self.store).trace(trace_id)
    }

    /// Caller → callee figures of the calls stored since `since_unix_nanos` ([`SpanStore::edges`]).
    pub fn edges(&self, since_unix_nanos: u64) -> Vec<crate::SpanEdge> {
        lock(&self.store).edges(since_unix_nanos)
    }

    /// The counters.
    pub fn stats(&self) -> TracingStats {
        let counters = &self.counters;
        TracingStats {
            recorded: counters.recorded.load(Relaxed),
            received_otlp: counters.received_otlp.load(Relaxed),
            dropped_intake: counters.dropped_intake.load(Relaxed),
            exported: counters.exported.load(Relaxed),
            dropped_queue_full: counters.dropped_queue_full.load(Relaxed),
            dropped_export_failed: counters.dropped_export_failed.load(Relaxed),
            store: lock(&self.store).stats(),
        }
    }
}

async fn collect(
    mut intake: mpsc::Receiver<Span>,
    store: Arc<Mutex<SpanStore>>,
    batches: Option<(Export, mpsc::Sender<Vec<Span>>)>,
    counters: Arc<PipelineCounters>,
) {
    let mut batch: Vec<Span> = Vec::new();
    let flush_interval = batches.as_ref().map_or(Duration::from_secs(3600), |(export, _)| export.flush_interval);
    let mut flush_at = None;
    let send = |batch: &mut Vec<Span>| {
        let Some((export, tx)) = &batches else { return };
        let full = std::mem::replace(batch, Vec::with_capacity(export.batch_spans));
        let n_spans = full.len() as u64;
        if tx.try_send(full).is_err() {
            counters.dropped_queue_full.fetch_add(n_spans, Relaxed);
        }
    };
    loop {
        let span = tokio::select! {
            span = intake.recv() => span,
            () = async {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                send(&mut batch);
                flush_at = None;
                continue;
            }
        };
        let Some(span) = span else { break };
        if let Some((export, _)) = &batches {
            batch.push(span.clone());
            if batch.len() >= export.batch_spans {
                send(&mut batch);
                flush_at = None;
            } else if flush_at.is_none() {
                flush_at = Some(tokio::time::Instant::now() + flush_interval);
            }
        }
        lock(&store).insert(span);
    }
    send(&mut batch);
}

async fn export_loop(export: Export, mut batches: mpsc::Receiver<Vec<Span>>, counters: Arc<PipelineCounters>) {
    while let Some(batch) = batches.recv().await {
        let n_spans = batch.len() as u64;
        let body = Bytes::from(otlp::encode(&batch));
        match tokio::time::timeout(export.timeout, post(&export.endpoint, body)).await {
            Ok(Ok(())) => {
                counters.exported.fetch_add(n_spans, Relaxed);
            }
            Ok(Err(error)) => {
                counters.dropped_export_failed.fetch_add(n_spans, Relaxed);
                tracing::warn!(endpoint = %export.endpoint.host, error = %error, spans = n_spans, "span export failed");
            }
            Err(_) => {
                counters.dropped_export_failed.fetch_add(n_spans, Relaxed);
                tracing::warn!(endpoint = %export.endpoint.host, spans = n_spans, "span export timed out");
            }
        }
    }
}

/// Why one export request failed.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("http exchange failed")]
    Http(#[source] hyper::Error),
    #[error("bad request")]
    Request(#[source] hyper::http::Error),
    #[error("the endpoint answered {0}")]
    Status(u16),
}

async fn post(endpoint: &ExportEndpoint, body: Bytes) -> Result<(), ExportError> {
    let stream =
        tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await.map_err(ExportError::Connect)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(ExportError::Http)?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::post(endpoint.path.as_str())
        .header(hyper::header::HOST, format!("{}:{}", endpoint.host, endpoint.port))
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(ExportError::Request)?;
    let result = async {
        let response = sender.send_request(request).await.map_err(ExportError::Http)?;
        let status = response.status();
        // Read the (small) answer so the exchange ends cleanly.
        let _answer = response.into_body().collect().await.map_err(ExportError::Http)?;
        if status.is_success() { Ok(()) } else { Err(ExportError::Status(status.as_u16())) }
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
        let parsed = ExportEndpoint::parse("http://127.0.0.1:4318/v1/traces").expect("valid");
        assert_eq!(parsed, ExportEndpoint { host: "127.0.0.1".into(), port: 4318, path: "/v1/traces".into() });
        assert_eq!(ExportEndpoint::parse("http://collector").expect("valid").path, "/v1/traces");
        assert_eq!(ExportEndpoint::parse("http://[::1]:4318/").expect("valid").host, "::1");
        assert_eq!(ExportEndpoint::parse("https://collector:4318/v1/traces"), None);
        assert_eq!(ExportEndpoint::parse("not a url"), None);
    }
}
