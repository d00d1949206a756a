//! The bounded in-memory span store: recent traces, oldest evicted first, within a byte budget.
//!
//! Bound: every span is cut to [`MAX_SPAN_BYTES`](crate::span::MAX_SPAN_BYTES) before it is stored, a
//! trace keeps at most [`MAX_SPANS_PER_TRACE`] spans, and whole traces are evicted oldest first (by when
//! their first span arrived) until the spans held, counted with [`Span::approx_bytes`] plus
//! [`TRACE_OVERHEAD_BYTES`] per trace, fit in `max_bytes`. Pure: no IO, no clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use crate::context::TraceId;
use crate::span::Span;

/// Most spans one trace keeps; later ones are dropped (and counted).
pub const MAX_SPANS_PER_TRACE: usize = 1_000;
/// What the index costs per trace, counted against the budget (map slot, order slot, vector).
pub const TRACE_OVERHEAD_BYTES: usize = 128;

/// Fewest head-sampled calls on an edge whose figures stand on their own (an unbiased sample); with
/// fewer, every kept span counts.
pub const MIN_SAMPLED_CALLS: usize = 20;

/// What the stored spans say about the calls from one service to another: spans of `callee` whose parent
/// span is `caller`'s (the W3C trace context the caller passed on, through its own instrumentation or as it
/// received it from mend's proxy).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEdge {
    /// The calling service.
    pub caller: String,
    /// The called service.
    pub callee: String,
    /// Calls the figures are from.
    pub calls: usize,
    /// Of which ended in an error.
    pub errors: usize,
    /// 99th percentile of their durations (nearest rank).
    pub p99: Duration,
    /// True when the figures come from head-sampled spans alone (a fair sample of the calls); false
    /// when every kept span counts, errors and slow calls being kept always: the error share and the p99
    /// then lean high.
    pub unbiased: bool,
}

impl SpanEdge {
    /// Share of the calls that failed, 0..1.
    pub fn error_ratio(&self) -> f64 {
        if self.calls == 0 { 0.0 } else { self.errors as f64 / self.calls as f64 }
    }
}

/// What to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceQuery {
    /// Only traces with a span of this service.
    pub service: Option<String>,
    /// Only traces at least this long.
    pub min_duration: Option<Duration>,
    /// Only traces with an error span.
    pub errors: bool,
    /// At most this many (newest first).
    pub limit: usize,
}

/// One trace in a listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TraceSummary {
    /// The trace.
    pub trace_id: String,
    /// The name of its root span (the earliest span without a parent in the store, else the earliest).
    pub root: String,
    /// The root span's service.
    pub service: String,
    /// Every service with a span in it, sorted.
    pub services: Vec<String>,
    /// Earliest start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// From the earliest start to the latest end.
    pub duration_ms: f64,
    /// Spans held.
    pub n_spans: usize,
    /// Whether any span ended in an error.
    pub error: bool,
    /// The root span's HTTP status.
    pub http_status: Option<u16>,
}

#[derive(Debug, Default)]
struct Trace {
    spans: Vec<Span>,
    bytes: usize,
}

/// Counters of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Traces held.
    pub traces: usize,
    /// Spans held.
    pub spans: usize,
    /// Bytes held (approximate, see the module doc).
    pub bytes: usize,
    /// The budget.
    pub max_bytes: usize,
    /// Traces evicted to stay within it.
    pub evicted_traces: u64,
    /// Spans dropped because their trace was full.
    pub dropped_spans: u64,
}

/// Recent traces within a byte budget.
#[derive(Debug)]
pub struct SpanStore {
    traces: HashMap<TraceId, Trace>,
    /// Trace ids by arrival of their first span, oldest first.
    order: VecDeque<TraceId>,
    bytes: usize,
    n_spans: usize,
    max_bytes: usize,
    evicted_traces: u64,
    dropped_spans: u64,
}

impl SpanStore {
    /// An empty store holding at most `max_bytes` (at least one full span's worth is always allowed).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            traces: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            n_spans: 0,
            max_bytes: max_bytes.max(crate::span::MAX_SPAN_BYTES + TRACE_OVERHEAD_BYTES),
            evicted_traces: 0,
            dropped_spans: 0,
        }
    }

    /// Stores `span` (bounded first), evicting the oldest traces as needed.
    pub fn insert(&mut self, mut span: Span) {
        span.bound();
        let span_bytes = span.approx_bytes();
        let trace_id = span.trace_id;
        let trace = match self.traces.get_mut(&trace_id) {
            Some(trace) => trace,
            None => {
                self.order.push_back(trace_id);
                self.bytes += TRACE_OVERHEAD_BYTES;
                self.traces.entry(trace_id).or_default()
            }
        };
        if trace.spans.len() >= MAX_SPANS_PER_TRACE {
            self.dropped_spans += 1;
            return;
        }
        trace.spans.push(span);
        trace.bytes += span_bytes;
        self.bytes += span_bytes;
        self.n_spans += 1;
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.order.pop_front() else { break };
            if let Some(evicted) = self.traces.remove(&oldest) {
                self.bytes -= evicted.bytes + TRACE_OVERHEAD_BYTES;
                self.n_spans -= evicted.spans.len();
                self.evicted_traces += 1;
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            traces: self.traces.len(),
            spans: self.n_spans,
            bytes: self.bytes,
            max_bytes: self.max_bytes,
            evicted_traces: self.evicted_traces,
            dropped_spans: self.dropped_spans,
        }
    }

    /// The spans of `trace_id`, by start.
    pub fn trace(&self, trace_id: TraceId) -> Option<Vec<Span>> {
        let mut spans = self.traces.get(&trace_id)?.spans.clone();
        spans.sort_by_key(|span| span.start_unix_nanos);
        Some(spans)
    }

    /// Traces matching `query`, newest first.
    pub fn list(&self, query: &TraceQuery) -> Vec<TraceSummary> {
        let mut found = Vec::new();
        for trace_id in self.order.iter().rev() {
            if found.len() >= query.limit {
                break;
            }
            let Some(trace) = self.traces.get(trace_id) else { continue };
            let summary = summarize(*trace_id, &trace.spans);
            let matches = query.service.as_ref().is_none_or(|service| summary.services.contains(service))
                && query.min_duration.is_none_or(|min| summary.duration_ms >= min.as_secs_f64() * 1e3)
                && (!query.errors || summary.error);
            if matches {
                found.push(summary);
            }
        }
        found
    }
}

impl SpanStore {
    /// Caller → callee figures of the calls that started at or after `since_unix_nanos`, by caller and
    /// callee name. Cost: one pass over the stored spans (the store is bounded in bytes).
    pub fn edges(&self, since_unix_nanos: u64) -> Vec<SpanEdge> {
        let mut calls: BTreeMap<(&str, &str), Vec<&Span>> = BTreeMap::new();
        for trace in self.traces.values() {
            let service_of: HashMap<crate::context::SpanId, &str> =
                trace.spans.iter().map(|span| (span.span_id, span.service.as_str())).collect();
            for span in trace.spans.iter().filter(|span| span.start_unix_nanos >= since_unix_nanos) {
                let Some(caller) = span.parent_id.and_then(|parent| service_of.get(&parent)) else { continue };
                if *caller != span.service {
                    calls.entry((caller, span.service.as_str())).or_default().push(span);
                }
            }
        }
        calls
            .into_iter()
            .map(|((caller, callee), spans)| {
                let sampled: Vec<&Span> =
                    spans.iter().copied().filter(|span| span.kept == Some(crate::Kept::Sampled)).collect();
                let unbiased = sampled.len() >= MIN_SAMPLED_CALLS;
                let used = if unbiased { sampled } else { spans };
                let mut durations: Vec<Duration> = used.iter().map(|span| span.duration).collect();
                durations.sort_unstable();
                // Nearest rank: the smallest duration at or above 99 % of the calls.
                let rank = (durations.len() * 99).div_ceil(100).max(1);
                SpanEdge {
                    caller: caller.to_owned(),
                    callee: callee.to_owned(),
                    calls: used.len(),
                    errors: used.iter().filter(|span| span.error).count(),
                    p99: durations.get(rank - 1).copied().unwrap_or_default(),
                    unbiased,
                }
            })
            .collect()
    }
}

fn summarize(trace_id: TraceId, spans: &[Span]) -> TraceSummary {
    let start = spans.iter().map(|span| span.start_unix_nanos).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|span| span.start_unix_nanos.saturating_add(u64::try_from(span.duration.as_nanos()).unwrap_or(u64::MAX)))
        .max()
        .unwrap_or(0);
    let ids: std::collections::HashSet<_> = spans.iter().map(|span| span.span_id).collect();
    let root = spans
        .iter()
        .filter(|span| span.parent_id.is_none_or(|parent| !ids.contains(&parent)))
        .min_by_key(|span| span.start_unix_nanos)
        .or_else(|| spans.first());
    let mut services: Vec<String> = spans.iter().map(|span| span.service.clone()).collect();
    services.sort();
    services.dedup();
    TraceSummary {
        trace_id: trace_id.to_string(),
        root: root.map(|span| span.name.clone()).unwrap_or_default(),
        service: root.map(|span| span.service.clone()).unwrap_or_default(),
        services,
        start_unix_nanos: start,
        duration_ms: end.saturating_sub(start) as f64 / 1e6,
        n_spans: spans.len(),
        error: spans.iter().any(|span| span.error),
        http_status: root.and_then(|span| span.http_status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kept;
    use crate::context::SpanId;
    use crate::span::{MAX_SPAN_BYTES, SpanKind, SpanSource};

    fn span(trace: u128, service: &str, millis: u64, error: bool) -> Span {
        Span {
            trace_id: TraceId(trace.to_be_bytes()),
            span_id: SpanId::random(),
            parent_id: None,
            service: service.to_owned(),
            name: "GET /".to_owned(),
            kind: SpanKind::Client,
            start_unix_nanos: 1_000_000_000 * u64::try_from(trace).unwrap_or(0),
            duration: Duration::from_millis(millis),
            http_status: Some(if error { 503 } else { 200 }),
            error,
            attributes: vec![("route".to_owned(), "/".to_owned())],
            events: Vec::new(),
            kept: None,
            source: SpanSource::Proxy,
        }
    }

    #[test]
    fn edges_come_from_spans_whose_parent_is_another_services_span() {
        let mut store = SpanStore::new(1 << 22);
        let child = |parent: &Span, service: &str, millis: u64, error: bool, kept: Kept| {
            let mut span = span(1, service, millis, error);
            span.trace_id = parent.trace_id;
            span.parent_id = Some(parent.span_id);
            span.start_unix_nanos = parent.start_unix_nanos + 1;
            span.kept = Some(kept);
            span
        };
        // 10 calls web → orders, kept for errors and slowness only (2 of 10 failed): every kept span counts.
        for idx in 0..10u64 {
            let mut web = span(u128::from(idx) + 10, "web", 50, false);
            web.kept = Some(Kept::Sampled);
            let orders = child(&web, "orders", 10 * (idx + 1), idx < 2, if idx < 2 { Kept::Error } else { Kept::Slow });
            // orders' own internal span (same service): no edge.
            let internal = child(&orders, "orders", 1, false, Kept::Sampled);
            // orders → db.
            let db = child(&internal, "db", 5, false, Kept::Sampled);
            for span in [web, orders, internal, db] {
                store.insert(span);
            }
        }
        let edges = store.edges(0);
        let names: Vec<(&str, &str)> = edges.iter().map(|e| (e.caller.as_str(), e.callee.as_str())).collect();
        assert_eq!(names, [("orders", "db"), ("web", "orders")]);
        let web_orders = &edges[1];
        assert_eq!((web_orders.calls, web_orders.errors, web_orders.unbiased), (10, 2, false));
        assert_eq!(web_orders.p99, Duration::from_millis(100));
        assert!((web_orders.error_ratio() - 0.2).abs() < 1e-9);
        // A span with no parent in the store, or a root: no edge. Nothing after `since`: nothing.
        assert!(store.edges(u64::MAX).is_empty());
    }

    #[test]
    fn enough_head_sampled_calls_make_the_figures_unbiased() {
        let mut store = SpanStore::new(1 << 22);
        for idx in 0..40u64 {
            let mut web = span(u128::from(idx) + 1, "web", 50, false);
            web.kept = Some(Kept::Sampled);
            let mut api = span(u128::from(idx) + 1, "api", 20, false);
            api.parent_id = Some(web.span_id);
            // 30 head-sampled calls, 1 of them failed; 10 more kept only because they failed.
            let (error, kept) = match idx {
                0 => (true, Kept::Sampled),
                1..30 => (false, Kept::Sampled),
                _ => (true, Kept::Error),
            };
            api.error = error;
            api.kept = Some(kept);
            store.insert(web);
            store.insert(api);
        }
        let edges = store.edges(0);
        assert_eq!(edges.len(), 1);
        assert_eq!((edges[0].calls, edges[0].errors, edges[0].unbiased), (30, 1, true));
    }

    #[test]
    fn lists_newest_first_with_filters() {
        let mut store = SpanStore::new(1 << 20);
        store.insert(span(1, "web", 5, false));
        store.insert(span(2, "api", 900, false));
        store.insert(span(3, "web", 5, true));
        let all = store.list(&TraceQuery { limit: 10, ..TraceQuery::default() });
        let ids: Vec<_> = all.iter().map(|t| t.trace_id.clone()).collect();
        assert_eq!(ids, [3u128, 2, 1].map(|id| TraceId(id.to_be_bytes()).to_string()));
        let web = store.list(&TraceQuery { service: Some("web".into()), limit: 10, ..TraceQuery::default() });
        assert_eq!(web.len(), 2);
        let slow = store.list(&TraceQuery {
            min_duration: Some(Duration::from_millis(500)),
            limit: 10,
            ..TraceQuery::default()
        });
        assert_eq!(slow.iter().map(|t| t.service.as_str()).collect::<Vec<_>>(), ["api"]);
        let errors = store.list(&TraceQuery { errors: true, limit: 10, ..TraceQuery::default() });
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].http_status, Some(503));
        assert_eq!(store.list(&TraceQuery { limit: 1, ..TraceQuery::default() }).len(), 1);
    }

    #[test]
    fn stays_within_its_budget_under_a_flood() {
        let max_bytes = 256 << 10;
        let mut store = SpanStore::new(max_bytes);
        let huge = "x".repeat(1_000);
        for idx in 1..=20_000u128 {
            let mut flood = span(idx, &huge, 1, false);
            flood.attributes = (0..40).map(|n| (format!("k{n}{huge}"), huge.clone())).collect();
            store.insert(flood);
            let stats = store.stats();
            assert!(stats.bytes <= max_bytes, "{stats:?}");
        }
        let stats = store.stats();
        assert!(stats.evicted_traces > 19_000, "{stats:?}");
        assert!(stats.traces >= 1 && stats.traces * MAX_SPAN_BYTES >= stats.bytes / 2, "{stats:?}");
        // The newest trace is the one kept.
        let newest = store.list(&TraceQuery { limit: 1, ..TraceQuery::default() });
        assert_eq!(newest[0].trace_id, TraceId(20_000u128.to_be_bytes()).to_string());
        // A span was cut to the bounds.
        let kept = store.trace(TraceId(20_000u128.to_be_bytes())).expect("kept");
        assert!(kept[0].approx_bytes() <= MAX_SPAN_BYTES);
    }

    #[test]
    fn one_trace_cannot_grow_without_bound() {
        let mut store = SpanStore::new(64 << 20);
        for _ in 0..(MAX_SPANS_PER_TRACE + 10) {
            store.insert(span(9, "web", 1, false));
        }
        let stats = store.stats();
        assert_eq!(stats.spans, MAX_SPANS_PER_TRACE);
        assert_eq!(stats.dropped_spans, 10);
    }
}
