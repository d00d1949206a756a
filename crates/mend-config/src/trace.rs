//! Tracing configuration: `[tracing]` and `[tracing.export]`, from the raw tables to the validated
//! [`Tracing`]. Without a `[tracing]` table tracing is off and the proxies read no trace header.

use std::time::Duration;

use serde::Deserialize;

use crate::raw::IntOrString;
use crate::validate::{KeyPath, Problems, duration, integer};

/// `[tracing]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTracing {
    enabled: Option<bool>,
    ratio: Option<f64>,
    slow: Option<String>,
    keep_errors: Option<bool>,
    store_max_bytes: Option<IntOrString>,
    otlp_max_body_bytes: Option<IntOrString>,
    export: Option<RawExport>,
}

/// `[tracing.export]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExport {
    endpoint: Option<String>,
    batch_spans: Option<i64>,
    flush_interval: Option<String>,
    queue_batches: Option<i64>,
    timeout: Option<String>,
}

/// `[tracing]`: W3C trace context in the proxies, the span store, OTLP export and intake.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// Trace at all (a `[tracing]` table turns it on unless it says `enabled = false`).
    pub enabled: bool,
    /// Share of new traces sampled at their start (a service's `proxy.trace_ratio` overrides it).
    pub ratio: f64,
    /// Requests at least this slow are kept whatever the ratio (also what `mend traces --slow` lists).
    pub slow: Duration,
    /// 5xx answers (and requests with no answer) are kept whatever the ratio.
    pub keep_errors: bool,
    /// Memory bound of the in-memory span store.
    pub store_max_bytes: usize,
    /// Largest OTLP request body accepted on `POST /v1/traces` (at most the API's 1 MiB).
    pub otlp_max_body_bytes: usize,
    /// Export over OTLP/HTTP, if configured.
    pub export: Option<TraceExport>,
}

/// `[tracing.export]`: where spans are sent over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceExport {
    /// `http://HOST:PORT/v1/traces`.
    pub endpoint: String,
    /// Spans per request.
    pub batch_spans: usize,
    /// A batch that is not full is sent this long after its first span.
    pub flush_interval: Duration,
    /// Batches waiting to be sent before new ones are dropped (and counted).
    pub queue_batches: usize,
    /// Bound on one export request.
    pub timeout: Duration,
}

impl Default for Tracing {
    fn default() -> Self {
        Self {
            enabled: false,
            ratio: 0.01,
            slow: Duration::from_millis(500),
            keep_errors: true,
            store_max_bytes: 16 << 20,
            otlp_max_body_bytes: 1 << 20,
            export: None,
        }
    }
}

fn size(
    problems: &mut Problems<'_>,
    path: &KeyPath,
    value: Option<&IntOrString>,
    (min, max): (usize, usize),
    default: usize,
) -> usize {
    let bytes = match value {
        None => return default,
        Some(IntOrString::Int(bytes)) => Ok(*bytes as f64),
        Some(IntOrString::String(text)) => crate::model::parse_size(text),
    };
    match bytes {
        Ok(bytes) if bytes >= min as f64 && bytes <= max as f64 => bytes as usize,
        Ok(bytes) => {
            problems.add(path, format!("{bytes} bytes is out of range (allowed: {min} to {max})"));
            default
        }
        Err(message) => {
            problems.add(path, message);
            default
        }
    }
}

/// Validates `[tracing]` (absent: tracing off), collecting every problem.
pub(crate) fn validate(problems: &mut Problems<'_>, raw: Option<&RawTracing>) -> Tracing {
    let defaults = Tracing::default();
    let Some(raw) = raw else { return defaults };
    let root = KeyPath::default().key("tracing");
    let ratio = match raw.ratio {
        None => defaults.ratio,
        Some(ratio) if (0.0..=1.0).contains(&ratio) => ratio,
        Some(ratio) => {
            problems.add(&root.key("ratio"), format!("{ratio} is out of range (allowed: 0 to 1)"));
            defaults.ratio
        }
    };
    let slow = duration(problems, &root.key("slow"), raw.slow.as_ref(), defaults.slow).unwrap_or(defaults.slow);
    if slow.is_zero() {
        problems.add(&root.key("slow"), "slow must be longer than 0s (every request would be kept)");
    }
    let export = raw.export.as_ref().and_then(|export| validate_export(problems, &root.key("export"), export));
    Tracing {
        enabled: raw.enabled.unwrap_or(true),
        ratio,
        slow,
        keep_errors: raw.keep_errors.unwrap_or(true),
        store_max_bytes: size(
            problems,
            &root.key("store_max_bytes"),
            raw.store_max_bytes.as_ref(),
            (64 << 10, 1 << 40),
            defaults.store_max_bytes,
        ),
        otlp_max_body_bytes: size(
            problems,
            &root.key("otlp_max_body_bytes"),
            raw.otlp_max_body_bytes.as_ref(),
            (1 << 10, 1 << 20),
            defaults.otlp_max_body_bytes,
        ),
        export,
    }
}

/// `http://HOST[:PORT][/PATH]` with a host (a name, IPv4, or `[IPv6]`) and a valid port.
pub(crate) fn endpoint_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            if host.contains(':') && !host.starts_with('[') {
                return false;
            }
            (host, Some(port))
        }
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':' | '_'));
    host_ok && port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port != 0))
}

fn validate_export(problems: &mut Problems<'_>, path: &KeyPath, raw: &RawExport) -> Option<TraceExport> {
    let endpoint = match raw.endpoint.as_deref() {
        None => {
            problems.add(path, "missing key \"endpoint\" (e.g. endpoint = \"http://127.0.0.1:4318/v1/traces\")");
            None
        }
        Some(url) => {
            if endpoint_ok(url) {
                Some(url.to_owned())
            } else {
                problems.add(
                    &path.key("endpoint"),
                    format!("invalid endpoint {url:?} (expected http://HOST:PORT/v1/traces; there is no TLS client)"),
                );
                None
            }
        }
    };
    let batch_spans = integer(problems, &path.key("batch_spans"), raw.batch_spans, 1..=10_000, 512);
    let queue_batches = integer(problems, &path.key("queue_batches"), raw.queue_batches, 1..=1_000, 8);
    let flush_interval =
        duration(problems, &path.key("flush_interval"), raw.flush_interval.as_ref(), Duration::from_secs(1));
    let timeout = duration(problems, &path.key("timeout"), raw.timeout.as_ref(), Duration::from_secs(5));
    for (key, value) in [("flush_interval", flush_interval), ("timeout", timeout)] {
        if value.is_some_and(|value| value < Duration::from_millis(10)) {
            problems.add(&path.key(key), "must be at least 10ms");
        }
    }
    Some(TraceExport {
        endpoint: endpoint?,
        batch_spans: batch_spans? as usize,
        flush_interval: flush_interval?,
        queue_batches: queue_batches? as usize,
        timeout: timeout?,
    })
}
