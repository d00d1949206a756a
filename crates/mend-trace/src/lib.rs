//! mend's distributed tracing: W3C trace context ([`context`]), head and tail sampling ([`sampler`]),
//! finished spans ([`span`]), the bounded in-memory span store ([`store`]), OTLP encoding and decoding
//! ([`otlp`]) and the pipeline that moves spans from the proxies (and from services that send OTLP) into
//! the store and out to an OTLP/HTTP endpoint ([`pipeline`]).
//!
//! Invariants: parsing, sampling and the store are pure (no IO, no clock); the only path from a request
//! into the pipeline is [`SpanRecorder::record`], a `try_send` that never waits; every queue is bounded
//! and what overflows is dropped and counted; the store never holds more than its byte budget.
//!
//! ```
//! use mend_trace::{SpanId, TraceId, TraceParent};
//!
//! let parent = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
//! let child = TraceParent { parent_id: SpanId([1; 8]), ..parent };
//! assert_eq!(&child.encode()[..], b"00-4bf92f3577b34da6a3ce929d0e0e4736-0101010101010101-01");
//! assert!(TraceParent::parse(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
//! # let _ = TraceId::random();
//! ```

pub mod context;
pub mod otlp;
pub mod pipeline;
pub mod sampler;
pub mod span;
pub mod store;

pub use context::{SpanId, TraceId, TraceParent};
pub use pipeline::{Export, ExportEndpoint, SpanRecorder, Tracing, TracingStats};
pub use sampler::{Kept, Sampling};
pub use span::{Span, SpanEvent, SpanKind, SpanSource};
pub use store::{MIN_SAMPLED_CALLS, SpanEdge, SpanStore, TraceQuery, TraceSummary};
