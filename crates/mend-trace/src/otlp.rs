//! OTLP trace messages (the OpenTelemetry protobuf, from `opentelemetry-proto`): spans to an
//! `ExportTraceServiceRequest` for export, and a received request back to spans for the store.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, span, status};
use prost::Message as _;

use crate::context::{SpanId, TraceId};
use crate::span::{MAX_ATTRIBUTES, MAX_EVENTS, Span, SpanEvent, SpanKind, SpanSource, bounded_text};

/// Why a received OTLP body was refused.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// Not an `ExportTraceServiceRequest` in protobuf.
    #[error("not an OTLP ExportTraceServiceRequest in protobuf")]
    Decode(#[source] prost::DecodeError),
    /// A span's trace id is not 16 bytes or is all zeros.
    #[error("span {index} has an invalid trace id ({len} bytes)")]
    TraceId {
        /// The span's index in the request.
        index: usize,
        /// The id's length.
        len: usize,
    },
    /// A span's span id is not 8 bytes or is all zeros.
    #[error("span {index} has an invalid span id ({len} bytes)")]
    SpanId {
        /// The span's index in the request.
        index: usize,
        /// The id's length.
        len: usize,
    },
}

fn string_value(text: &str) -> Option<AnyValue> {
    Some(AnyValue { value: Some(any_value::Value::StringValue(text.to_owned())) })
}

fn key_value(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.to_owned(), value: string_value(value), ..KeyValue::default() }
}

fn kind_to_proto(kind: SpanKind) -> span::SpanKind {
    match kind {
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    }
}

fn kind_from_proto(kind: i32) -> SpanKind {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Server) => SpanKind::Server,
        Ok(span::SpanKind::Client) => SpanKind::Client,
        Ok(span::SpanKind::Producer) => SpanKind::Producer,
        Ok(span::SpanKind::Consumer) => SpanKind::Consumer,
        _ => SpanKind::Internal,
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// `spans` as one export request: a resource per service, one scope (`mend`).
pub fn encode(spans: &[Span]) -> Vec<u8> {
    let mut by_service: Vec<ResourceSpans> = Vec::new();
    for span in spans {
        let proto = to_proto(span);
        let resource = by_service.iter_mut().find(|resource| {
            resource.resource.as_ref().is_some_and(|resource| {
                resource.attributes.iter().any(|kv| kv.key == "service.name" && kv.value == string_value(&span.service))
            })
        });
        match resource {
            Some(resource) => resource.scope_spans[0].spans.push(proto),
            None => by_service.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![key_value("service.name", &span.service)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "mend".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans: vec![proto],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }),
        }
    }
    ExportTraceServiceRequest { resource_spans: by_service }.encode_to_vec()
}

fn to_proto(span: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let mut attributes: Vec<KeyValue> = span.attributes.iter().map(|(key, value)| key_value(key, value)).collect();
    if let Some(status) = span.http_status {
        attributes.push(KeyValue {
            key: "http.response.status_code".to_owned(),
            value: Some(AnyValue { value: Some(any_value::Value::IntValue(i64::from(status))) }),
            ..KeyValue::default()
        });
    }
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: span.trace_id.0.to_vec(),
        span_id: span.span_id.0.to_vec(),
        parent_span_id: span.parent_id.map(|id| id.0.to_vec()).unwrap_or_default(),
        name: span.name.clone(),
        kind: kind_to_proto(span.kind) as i32,
        start_time_unix_nano: span.start_unix_nanos,
        end_time_unix_nano: span.start_unix_nanos.saturating_add(nanos(span.duration)),
        attributes,
        events: span
            .events
            .iter()
            .map(|event| span::Event {
                time_unix_nano: event.unix_nanos,
                name: event.name.clone(),
                attributes: event.attributes.iter().map(|(key, value)| key_value(key, value)).collect(),
                ..span::Event::default()
            })
            .collect(),
        status: span.error.then(|| opentelemetry_proto::tonic::trace::v1::Status {
            code: status::StatusCode::Error as i32,
            message: String::new(),
        }),
        ..opentelemetry_proto::tonic::trace::v1::Span::default()
    }
}

fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        Some(any_value::Value::IntValue(int)) => int.to_string(),
        Some(any_value::Value::DoubleValue(float)) => float.to_string(),
        Some(_) => "(structured)".to_owned(),
        None => String::new(),
    }
}

/// Decodes a received export request into spans (bounded as the store bounds them).
pub fn decode(body: &[u8]) -> Result<Vec<Span>, OtlpError> {
    let request = ExportTraceServiceRequest::decode(body).map_err(OtlpError::Decode)?;
    let mut spans = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|resource| resource.attributes.iter().find(|kv| kv.key == "service.name"))
            .map_or_else(|| "unknown_service".to_owned(), |kv| value_text(kv.value.as_ref()));
        for scope_spans in resource_spans.scope_spans {
            for proto in scope_spans.spans {
                let index = spans.len();
                let trace_id = <[u8; 16]>::try_from(proto.trace_id.as_slice())
                    .ok()
                    .filter(|id| *id != [0; 16])
                    .ok_or(OtlpError::TraceId { index, len: proto.trace_id.len() })?;
                let span_id = <[u8; 8]>::try_from(proto.span_id.as_slice())
                    .ok()
                    .filter(|id| *id != [0; 8])
                    .ok_or(OtlpError::SpanId { index, len: proto.span_id.len() })?;
                let parent_id =
                    <[u8; 8]>::try_from(proto.parent_span_id.as_slice()).ok().filter(|id| *id != [0; 8]).map(SpanId);
                let mut http_status = None;
                let mut attributes = Vec::new();
                for kv in proto.attributes.iter().take(MAX_ATTRIBUTES + 1) {
                    let text = value_text(kv.value.as_ref());
                    if kv.key == "http.response.status_code" || kv.key == "http.status_code" {
                        http_status = text.parse().ok();
                    } else if attributes.len() < MAX_ATTRIBUTES {
                        attributes.push((bounded_text(kv.key.clone()), bounded_text(text)));
                    }
                }
                let status_error =
                    proto.status.as_ref().is_some_and(|status| status.code == status::StatusCode::Error as i32);
                let mut span = Span {
                    trace_id: TraceId(trace_id),
                    span_id: SpanId(span_id),
                    parent_id,
                    service: service.clone(),
                    name: proto.name,
                    kind: kind_from_proto(proto.kind),
                    start_unix_nanos: proto.start_time_unix_nano,
                    duration: Duration::from_nanos(proto.end_time_unix_nano.saturating_sub(proto.start_time_unix_nano)),
                    error: status_error || http_status.is_some_and(|status| status >= 500),
                    http_status,
                    attributes,
                    events: proto
                        .events
                        .into_iter()
                        .take(MAX_EVENTS)
                        .map(|event| SpanEvent {
                            unix_nanos: event.time_unix_nano,
                            name: event.name,
                            attributes: event
                                .attributes
                                .iter()
                                .take(4)
                                .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
                                .collect(),
                        })
                        .collect(),
                    kept: None,
                    source: SpanSource::Otlp,
                };
                span.bound();
                spans.push(span);
            }
        }
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_trip_through_the_wire_format() {
        let span = Span {
            trace_id: TraceId([3; 16]),
            span_id: SpanId([4; 8]),
            parent_id: Some(SpanId([5; 8])),
            service: "web".to_owned(),
            name: "GET /orders".to_owned(),
            kind: SpanKind::Client,
            start_unix_nanos: 1_700_000_000_000_000_000,
            duration: Duration::from_micros(1500),
            http_status: Some(503),
            error: true,
            attributes: vec![("mend.replica".to_owned(), "1".to_owned())],
            events: vec![SpanEvent {
                unix_nanos: 1_700_000_000_000_100_000,
                name: "retry".to_owned(),
                attributes: vec![("mend.replica".to_owned(), "0".to_owned())],
            }],
            kept: None,
            source: SpanSource::Otlp,
        };
        let decoded = decode(&encode(std::slice::from_ref(&span))).expect("decodes");
        assert_eq!(decoded, vec![span]);
    }

    #[test]
    fn garbage_and_bad_ids_are_refused_with_a_reason() {
        assert!(matches!(decode(b"\xff\xff\xff not protobuf"), Err(OtlpError::Decode(_))));
        let bad = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![opentelemetry_proto::tonic::trace::v1::Span {
                        trace_id: vec![1; 5],
                        span_id: vec![1; 8],
                        ..Default::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let error = decode(&bad.encode_to_vec()).expect_err("bad trace id");
        assert_eq!(error.to_string(), "span 0 has an invalid trace id (5 bytes)");
    }
}
