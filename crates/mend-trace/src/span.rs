//! A finished span, as the store keeps it and the exporter sends it: the proxy's spans and those that
//! instrumented services send in over OTLP share this shape.

use std::time::Duration;

use crate::context::{SpanId, TraceId};
use crate::sampler::Kept;

/// Most attributes a span keeps (more are dropped, and counted in `dropped_attributes`).
pub const MAX_ATTRIBUTES: usize = 32;
/// Most events a span keeps.
pub const MAX_EVENTS: usize = 32;
/// Longest text kept in a name, attribute key or value (longer is cut at a char boundary).
pub const MAX_TEXT_BYTES: usize = 256;

/// Where a span came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanSource {
    /// mend's proxy recorded it.
    Proxy,
    /// A service sent it over OTLP.
    Otlp,
}

/// What role the span plays (OTLP's span kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// Unspecified or internal work.
    Internal,
    /// Serving a request.
    Server,
    /// Making a request (the proxy's span is one: it calls a replica for the client).
    Client,
    /// Producing a message.
    Producer,
    /// Consuming a message.
    Consumer,
}

/// A timestamped note inside a span (a retry, an ejection).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpanEvent {
    /// When, in nanoseconds since the Unix epoch.
    pub unix_nanos: u64,
    /// What happened (`retry`, `ejection`).
    pub name: String,
    /// Details.
    pub attributes: Vec<(String, String)>,
}

/// One finished span.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Span {
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its own id.
    pub span_id: SpanId,
    /// Its parent's id, if any.
    pub parent_id: Option<SpanId>,
    /// The service it describes (`service.name`).
    pub service: String,
    /// Its name: for the proxy, `METHOD ROUTE`.
    pub name: String,
    /// Its role.
    pub kind: SpanKind,
    /// Start, in nanoseconds since the Unix epoch. (OTLP's unit; [`mend_types::Timestamp`] holds
    /// milliseconds, too coarse for spans of a fast request.)
    pub start_unix_nanos: u64,
    /// How long it took.
    pub duration: Duration,
    /// The HTTP status, when it answered one.
    pub http_status: Option<u16>,
    /// Whether it ended in an error (a 5xx, no response, or an OTLP error status).
    pub error: bool,
    /// Other attributes (release, replica, method, route ...), at most [`MAX_ATTRIBUTES`].
    pub attributes: Vec<(String, String)>,
    /// Events, at most [`MAX_EVENTS`].
    pub events: Vec<SpanEvent>,
    /// Why it was kept (for proxy spans; OTLP spans were kept by their sender).
    pub kept: Option<Kept>,
    /// Where it came from.
    pub source: SpanSource,
}

/// `text` cut to at most [`MAX_TEXT_BYTES`] at a char boundary.
pub fn bounded_text(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

impl Span {
    /// The attribute `key`, if present.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    /// Cuts names, attributes and events to the span bounds, so that [`Span::approx_bytes`] is at most
    /// [`MAX_SPAN_BYTES`].
    pub fn bound(&mut self) {
        self.service = bounded_text(std::mem::take(&mut self.service));
        self.name = bounded_text(std::mem::take(&mut self.name));
        self.attributes.truncate(MAX_ATTRIBUTES);
        for (key, value) in &mut self.attributes {
            *key = bounded_text(std::mem::take(key));
            *value = bounded_text(std::mem::take(value));
        }
        self.events.truncate(MAX_EVENTS);
        for event in &mut self.events {
            event.name = bounded_text(std::mem::take(&mut event.name));
            event.attributes.truncate(4);
            for (key, value) in &mut event.attributes {
                *key = bounded_text(std::mem::take(key));
                *value = bounded_text(std::mem::take(value));
            }
        }
    }

    /// The memory the span holds, approximately (struct sizes plus text lengths).
    pub fn approx_bytes(&self) -> usize {
        let pair = |(key, value): &(String, String)| size_of::<(String, String)>() + key.len() + value.len();
        size_of::<Self>()
            + self.service.len()
            + self.name.len()
            + self.attributes.iter().map(pair).sum::<usize>()
            + self
                .events
                .iter()
                .map(|event| {
                    size_of::<SpanEvent>() + event.name.len() + event.attributes.iter().map(pair).sum::<usize>()
                })
                .sum::<usize>()
    }
}

/// The most memory one bounded span holds (see [`Span::bound`]).
pub const MAX_SPAN_BYTES: usize = size_of::<Span>()
    + 2 * MAX_TEXT_BYTES
    + MAX_ATTRIBUTES * (size_of::<(String, String)>() + 2 * MAX_TEXT_BYTES)
    + MAX_EVENTS * (size_of::<SpanEvent>() + MAX_TEXT_BYTES + 4 * (size_of::<(String, String)>() + 2 * MAX_TEXT_BYTES));
