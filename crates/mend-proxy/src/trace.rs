//! Trace context for proxied requests: the one hook around [`forward::handle`] that continues (or
//! starts) a W3C trace, forwards a `traceparent` whose parent is the proxy's span, and at the end decides
//! (tail-based) whether to keep that span and hands it to the span pipeline.
//!
//! With tracing off ([`ProxyConfig::tracing`](crate::ProxyConfig) is `None`) a request takes the
//! untraced branch at once: no header is read, nothing is allocated. Retries and ejections reach the
//! span through a task-local slot that exists only inside a traced request; the request path notes them
//! with one call each, which does nothing outside one.

use std::cell::RefCell;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Request, Response};
use mend_trace::{Sampling, Span, SpanEvent, SpanId, SpanKind, SpanRecorder, SpanSource, TraceId, TraceParent};

use crate::body::ProxyBody;
use crate::forward::{self, Aborted};
use crate::route::BackendId;
use crate::server::ConnState;
use crate::stats::EjectionReason;

/// The header name, made once (a `&str` name is parsed and hashed anew at every use).
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Most bytes of a route a span keeps (copied on the stack at the start: no allocation unless kept).
const ROUTE_BYTES: usize = 256;

/// How a proxy traces.
#[derive(Debug, Clone)]
pub struct ProxyTracing {
    /// The service name the spans carry.
    pub service: String,
    /// Head and tail sampling.
    pub sampling: Sampling,
    /// Where kept spans go.
    pub recorder: SpanRecorder,
    /// Unix time, in nanoseconds, at the moment the proxy is bound (the proxy's clock counts from
    /// there; spans' start times are this plus the proxy clock).
    pub unix_nanos_at_bind: u64,
}

impl PartialEq for ProxyTracing {
    fn eq(&self, other: &Self) -> bool {
        self.service == other.service && self.sampling == other.sampling
    }
}

/// What the request path noted during a traced request. Nothing is allocated unless a request is
/// retried or ejects a backend.
#[derive(Debug, Default)]
struct Notes {
    /// Attempts made.
    n_attempts: usize,
    /// The backend of the latest attempt.
    last: Option<(BackendId, std::net::SocketAddr)>,
    /// Attempts after the first (retries): the backend and the proxy-clock time it started.
    retries: Vec<(BackendId, u64)>,
    /// Ejections decided during the request.
    ejections: Vec<(BackendId, EjectionReason, u64)>,
}

tokio::task_local! {
    static NOTES: RefCell<Notes>;
}

/// Notes an attempt on `backend` (call only when tracing is on).
pub(crate) fn note_attempt(backend: BackendId, addr: std::net::SocketAddr, at_nanos: u64) {
    let _outside = NOTES.try_with(|notes| {
        let mut notes = notes.borrow_mut();
        notes.n_attempts += 1;
        if notes.n_attempts > 1 {
            notes.retries.push((backend, at_nanos));
        }
        notes.last = Some((backend, addr));
    });
}

/// Notes that `backend` was ejected (does nothing outside a traced request).
pub(crate) fn note_ejection(backend: BackendId, reason: EjectionReason, at_nanos: u64) {
    let _outside = NOTES.try_with(|notes| notes.borrow_mut().ejections.push((backend, reason, at_nanos)));
}

/// The incoming parent: one valid `traceparent`, else none (an invalid or repeated one counts as absent,
/// W3C Trace Context §4.3).
fn incoming_parent(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    TraceParent::parse(first.as_bytes())
}

/// Serves one request: untraced at once when tracing is off.
pub(crate) async fn serve(conn: Arc<ConnState>, request: Request<Incoming>) -> Result<Response<ProxyBody>, Aborted> {
    if conn.shared.config.tracing.is_none() {
        return forward::handle(conn, request).await;
    }
    // The connection's own `Arc` (not the proxy-wide one) keeps the config borrowed across the request.
    let held = conn.clone();
    let Some(tracing) = held.shared.config.tracing.as_ref() else { return forward::handle(conn, request).await };
    traced(tracing, conn, request).await
}

async fn traced(
    tracing: &ProxyTracing,
    conn: Arc<ConnState>,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Aborted> {
    let clock = conn.shared.clock;
    let start = clock.now();
    let parent = incoming_parent(request.headers());
    let trace_id = parent.map_or_else(TraceId::random, |parent| parent.trace_id);
    let span_id = SpanId::random();
    let sampled = tracing.sampling.head(parent.as_ref(), trace_id);
    // The backend's parent is this span; `tracestate` goes through as it came.
    let outgoing = TraceParent { trace_id, parent_id: span_id, sampled }.encode();
    let headers = request.headers_mut();
    if let Ok(value) = HeaderValue::from_bytes(&outgoing) {
        // `insert` replaces every value the request had.
        headers.insert(&TRACEPARENT, value);
    }
    // A standard method clones without allocating; the route is copied on the stack.
    let method = request.method().clone();
    let mut route_buf = [0u8; ROUTE_BYTES];
    let path = request.uri().path();
    let mut route_len = path.len().min(ROUTE_BYTES);
    while !path.is_char_boundary(route_len) {
        route_len -= 1;
    }
    route_buf[..route_len].copy_from_slice(&path.as_bytes()[..route_len]);

    let (result, notes) = NOTES
        .scope(RefCell::new(Notes::default()), async {
            let result = forward::handle(conn, request).await;
            (result, NOTES.with(|notes| std::mem::take(&mut *notes.borrow_mut())))
        })
        .await;

    let duration = clock.now().since(start);
    let http_status = result.as_ref().ok().map(|response| response.status().as_u16());
    let error = http_status.is_none_or(|status| status >= 500);
    let Some(kept) = tracing.sampling.keep(sampled, error, duration) else { return result };
    let unix = |at: u64| tracing.unix_nanos_at_bind.saturating_add(at);
    let route = std::str::from_utf8(&route_buf[..route_len]).unwrap_or("/");
    let mut attributes = vec![
        ("http.request.method".to_owned(), method.as_str().to_owned()),
        ("url.path".to_owned(), route.to_owned()),
        ("mend.retries".to_owned(), notes.retries.len().to_string()),
    ];
    if let Some((backend, addr)) = &notes.last {
        attributes.push(("mend.release".to_owned(), backend.release.as_str().to_owned()));
        attributes.push(("mend.replica".to_owned(), backend.index.to_string()));
        attributes.push(("server.address".to_owned(), addr.to_string()));
    }
    let mut events: Vec<SpanEvent> = notes
        .retries
        .iter()
        .map(|(backend, at)| SpanEvent {
            unix_nanos: unix(*at),
            name: "retry".to_owned(),
            attributes: vec![
                ("mend.release".to_owned(), backend.release.as_str().to_owned()),
                ("mend.replica".to_owned(), backend.index.to_string()),
            ],
        })
        .collect();
    events.extend(notes.ejections.iter().map(|(backend, reason, at)| SpanEvent {
        unix_nanos: unix(*at),
        name: "ejection".to_owned(),
        attributes: vec![
            ("mend.release".to_owned(), backend.release.as_str().to_owned()),
            ("mend.replica".to_owned(), backend.index.to_string()),
            ("mend.reason".to_owned(), format!("{reason:?}")),
        ],
    }));
    events.sort_by_key(|event| event.unix_nanos);
    tracing.recorder.record(Span {
        trace_id,
        span_id,
        parent_id: parent.map(|parent| parent.parent_id),
        service: tracing.service.clone(),
        name: format!("{method} {route}"),
        kind: SpanKind::Client,
        start_unix_nanos: unix(start.0),
        duration,
        http_status,
        error,
        attributes,
        events,
        kept: Some(kept),
        source: SpanSource::Proxy,
    });
    result
}
