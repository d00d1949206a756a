//! Tracing in the binary: the span pipeline started from `[tracing]`, and `mend traces` (the CLI side of
//! `GET /api/v1/traces`).

use std::fmt::Write as _;

use hyper::Method;
use mend_trace::{Export, ExportEndpoint, Tracing};

use crate::client::{Client, ClientError, encode_query_value};
use crate::output;

/// Starts the span store and, when `[tracing.export]` is set, the OTLP exporter.
pub(crate) fn start(config: &mend_config::Tracing) -> Tracing {
    let export = config.export.as_ref().and_then(|export| {
        // Validation checked the URL's shape; one it still cannot use is logged and export stays off.
        let Some(endpoint) = ExportEndpoint::parse(&export.endpoint) else {
            tracing::error!(endpoint = %export.endpoint, "tracing.export.endpoint is not usable: export is off");
            return None;
        };
        Some(Export {
            endpoint,
            batch_spans: export.batch_spans,
            flush_interval: export.flush_interval,
            queue_batches: export.queue_batches,
            timeout: export.timeout,
        })
    });
    tracing::info!(
        ratio = config.ratio,
        slow_ms = config.slow.as_millis() as u64,
        export = export.is_some(),
        store_max_bytes = config.store_max_bytes,
        "tracing on"
    );
    Tracing::start(config.store_max_bytes, export)
}

/// `mend traces`.
pub(crate) async fn command(
    client: &Client,
    trace_id: Option<String>,
    service: Option<String>,
    slow: bool,
    errors: bool,
    limit: usize,
    json: bool,
) -> Result<(), ClientError> {
    if let Some(trace_id) = trace_id {
        let path = format!("/api/v1/traces/{}", encode_query_value(&trace_id));
        let trace: mend_api::TraceDto = client.json(Method::GET, &path).await?;
        if json {
            let text = serde_json::to_string_pretty(&trace).map_err(|error| ClientError::Other(error.to_string()))?;
            output::raw(format!("{text}\n").as_bytes());
        } else {
            output::raw(spans_table(&trace).as_bytes());
        }
        return Ok(());
    }
    let mut path = format!("/api/v1/traces?limit={limit}&slow={slow}&errors={errors}");
    if let Some(service) = service {
        let _ = write!(path, "&service={}", encode_query_value(&service));
    }
    let traces: mend_api::TracesDto = client.json(Method::GET, &path).await?;
    if json {
        let text = serde_json::to_string_pretty(&traces).map_err(|error| ClientError::Other(error.to_string()))?;
        output::raw(format!("{text}\n").as_bytes());
    } else {
        output::raw(traces_table(&traces).as_bytes());
    }
    Ok(())
}

fn traces_table(traces: &mend_api::TracesDto) -> String {
    let rows: Vec<Vec<String>> = traces
        .traces
        .iter()
        .map(|trace| {
            let status = trace.http_status.map_or_else(|| "-".to_owned(), |status| status.to_string());
            let flag = if trace.error { " !" } else { "" };
            vec![
                trace.trace_id.to_string(),
                format!("{:.1}ms", trace.duration_ms),
                status,
                trace.n_spans.to_string(),
                trace.service.clone(),
                format!("{}{flag}", trace.root),
            ]
        })
        .collect();
    let mut out = output::table(&["TRACE", "DURATION", "STATUS", "SPANS", "SERVICE", "ROOT"], &rows);
    let stats = &traces.stats;
    let _ = writeln!(
        out,
        "{} traces, {} spans held ({} of {} bytes); exported {}, dropped {}",
        stats.store.traces,
        stats.store.spans,
        stats.store.bytes,
        stats.store.max_bytes,
        stats.exported,
        stats.dropped_intake + stats.dropped_queue_full + stats.dropped_export_failed,
    );
    out
}

fn spans_table(trace: &mend_api::TraceDto) -> String {
    let start = trace.spans.iter().map(|span| span.start_unix_nanos).min().unwrap_or(0);
    let mut out = format!("trace {}\n", trace.trace_id);
    let _ = writeln!(
        out,
        "{:>9}  {:>10}  {:>6}  {:<16}  {:<16}  {:<16}  NAME",
        "AT", "DURATION", "STATUS", "SPAN", "PARENT", "SERVICE"
    );
    for span in &trace.spans {
        let status = span.http_status.map_or_else(|| "-".to_owned(), |status| status.to_string());
        let parent = span.parent_id.map_or_else(|| "-".to_owned(), |id| id.to_string());
        let _ = writeln!(
            out,
            "{:>7.1}ms  {:>8.1}ms  {:>6}  {:<16}  {:<16}  {:<16}  {}{}",
            span.start_unix_nanos.saturating_sub(start) as f64 / 1e6,
            span.duration.as_secs_f64() * 1e3,
            status,
            span.span_id,
            parent,
            output::escape_controls(&span.service, false),
            output::escape_controls(&span.name, false),
            if span.error { " !" } else { "" },
        );
        for event in &span.events {
            let details: Vec<String> = event.attributes.iter().map(|(key, value)| format!("{key}={value}")).collect();
            let _ = writeln!(
                out,
                "{:>7.1}ms    {} {}",
                event.unix_nanos.saturating_sub(start) as f64 / 1e6,
                output::escape_controls(&event.name, false),
                output::escape_controls(&details.join(" "), false),
            );
        }
    }
    out
}
