//! Traces: recent traces from the span store (`GET /api/v1/traces`, `GET /api/v1/traces/{trace_id}`)
//! and OTLP/HTTP intake of spans from instrumented services (`POST /v1/traces`, protobuf), which join
//! the proxies' spans in the store and in the export.
//!
//! The intake sits on the API listener among the mutating endpoints: it needs the token when one is set
//! (an OTLP exporter sends it as `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer ...`), it is bound to
//! loopback by default like the rest of the API, and its body is bounded by `[tracing]
//! otlp_max_body_bytes` within the API's own 1 MiB.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mend_trace::{Span, TraceId, TraceQuery, TraceSummary, Tracing, TracingStats};
use serde::{Deserialize, Serialize};

use crate::routes::{ApiError, ApiState, bad_request, query_error};

/// Most traces one listing returns.
pub const MAX_TRACE_LIMIT: usize = 1_000;

/// What the API needs of the tracing pipeline.
#[derive(Debug)]
pub struct TraceApi {
    /// The store, the intake and the counters.
    pub tracing: Arc<Tracing>,
    /// What `slow=true` means (`[tracing] slow`).
    pub slow: Duration,
    /// Largest OTLP body accepted.
    pub max_body_bytes: usize,
}

/// `GET /api/v1/traces` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TraceParams {
    service: Option<String>,
    #[serde(default)]
    slow: bool,
    #[serde(default)]
    errors: bool,
    limit: Option<usize>,
}

/// `GET /api/v1/traces` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct TracesDto {
    /// Traces, newest first.
    pub traces: Vec<TraceSummary>,
    /// The pipeline's counters.
    pub stats: TracingStats,
    /// The `slow` threshold, in milliseconds.
    pub slow_ms: f64,
}

/// `GET /api/v1/traces/{trace_id}` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct TraceDto {
    /// The trace.
    pub trace_id: String,
    /// Its spans, by start.
    pub spans: Vec<Span>,
}

fn tracing_api(state: &ApiState) -> Result<&TraceApi, ApiError> {
    state.traces.as_deref().ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, "tracing is off: add a [tracing] table to the config".to_owned())
    })
}

pub(crate) async fn list(
    State(state): State<ApiState>,
    query: Result<Query<TraceParams>, QueryRejection>,
) -> Result<Json<TracesDto>, ApiError> {
    let Query(params) = query.map_err(query_error)?;
    let api = tracing_api(&state)?;
    let limit = params.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_TRACE_LIMIT {
        return Err(bad_request(format!("limit {limit} is out of range (allowed: 1 to {MAX_TRACE_LIMIT})")));
    }
    let query = TraceQuery {
        service: params.service,
        min_duration: params.slow.then_some(api.slow),
        errors: params.errors,
        limit,
    };
    Ok(Json(TracesDto {
        traces: api.tracing.list(&query),
        stats: api.tracing.stats(),
        slow_ms: api.slow.as_secs_f64() * 1e3,
    }))
}

pub(crate) async fn trace(
    State(state): State<ApiState>,
    Path(trace_id): Path<String>,
) -> Result<Json<TraceDto>, ApiError> {
    let api = tracing_api(&state)?;
    let id = TraceId::parse_hex(&trace_id).ok_or_else(|| {
        bad_request(format!("invalid trace id {trace_id:?} (32 lowercase hex digits, not all zeros)"))
    })?;
    let spans = api
        .tracing
        .trace(id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no trace {trace_id} in the span store")))?;
    Ok(Json(TraceDto { trace_id, spans }))
}

/// `POST /v1/traces`: an OTLP/HTTP export request in protobuf.
pub(crate) async fn accept(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let api = match tracing_api(&state) {
        Ok(api) => api,
        Err(error) => return error.into_response(),
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        return ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type {content_type:?} is not accepted: send OTLP in protobuf (application/x-protobuf)"),
        )
        .into_response();
    }
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING).filter(|value| *value != "identity") {
        return ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content encoding {encoding:?} is not accepted: send it uncompressed"),
        )
        .into_response();
    }
    if body.len() > api.max_body_bytes {
        return ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the OTLP body is larger than {} bytes (tracing.otlp_max_body_bytes)", api.max_body_bytes),
        )
        .into_response();
    }
    match api.tracing.accept_otlp(&body) {
        // An empty ExportTraceServiceResponse: every span accepted (the intake counts any it had to drop).
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/x-protobuf"))],
            Vec::<u8>::new(),
        )
            .into_response(),
        Err(error) => bad_request(error.to_string()).into_response(),
    }
}

/// The pipeline's counters in OpenMetrics text (appended to `/metrics` before its `# EOF`).
pub(crate) fn openmetrics(stats: &TracingStats) -> String {
    let mut out = String::new();
    out.push_str("# HELP mend_trace_spans Spans that entered the span pipeline, by where they came from.\n");
    out.push_str("# TYPE mend_trace_spans counter\n");
    out.push_str(&format!("mend_trace_spans_total{{outcome=\"proxy\"}} {}\n", stats.recorded));
    out.push_str(&format!("mend_trace_spans_total{{outcome=\"otlp\"}} {}\n", stats.received_otlp));
    out.push_str("# HELP mend_trace_spans_exported Spans sent to the OTLP endpoint.\n");
    out.push_str("# TYPE mend_trace_spans_exported counter\n");
    out.push_str(&format!("mend_trace_spans_exported_total {}\n", stats.exported));
    out.push_str(
        "# HELP mend_trace_spans_dropped Spans dropped, by why: intake full, export queue full, export failed.\n",
    );
    out.push_str("# TYPE mend_trace_spans_dropped counter\n");
    for (outcome, n_spans) in [
        ("intake_full", stats.dropped_intake),
        ("queue_full", stats.dropped_queue_full),
        ("export_failed", stats.dropped_export_failed),
    ] {
        out.push_str(&format!("mend_trace_spans_dropped_total{{outcome=\"{outcome}\"}} {n_spans}\n"));
    }
    out.push_str("# HELP mend_trace_store_bytes Memory the span store holds (approximate) and its bound.\n");
    out.push_str("# TYPE mend_trace_store_bytes gauge\n");
    out.push_str(&format!("mend_trace_store_bytes {}\n", stats.store.bytes));
    out.push_str("# HELP mend_trace_store_max_bytes The span store's memory bound.\n");
    out.push_str("# TYPE mend_trace_store_max_bytes gauge\n");
    out.push_str(&format!("mend_trace_store_max_bytes {}\n", stats.store.max_bytes));
    out
}
