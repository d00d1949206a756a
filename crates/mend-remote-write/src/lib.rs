//! Prometheus remote write (protocol 1.0) of mend's in-memory series store, so that a fleet's history
//! lives in Prometheus (and Grafana) as operators expect.
//!
//! [`batch`] decides what to send without IO: per series the points newer than the last one taken
//! ([`batch::Cursor`]), size-bounded [`proto::WriteRequest`]s with the configured extra labels, and what
//! an HTTP status means ([`batch::Verdict`]). [`pipeline`] is the IO edge: a collector that reads the store
//! under short read locks, a bounded queue (full: the oldest request is dropped and its samples counted),
//! and a sender that retries 5xx, 429 and unanswered requests with capped, jittered back-off and drops (and
//! counts) what the receiver refuses with another 4xx.
//!
//! Invariants: ingest never waits on remote write (the store is only read, one request's worth per
//! lock); memory is bounded by `queue_requests` × `max_samples_per_request` samples (compressed) plus one
//! request being built; each sample is taken once and per series in strictly increasing time.
//!
//! ```
//! use mend_remote_write::batch::Verdict;
//!
//! assert_eq!(Verdict::of_status(204), Verdict::Sent);
//! assert_eq!(Verdict::of_status(503), Verdict::Retry);
//! assert_eq!(Verdict::of_status(400), Verdict::Rejected);
//! ```

pub mod batch;
pub mod pipeline;
pub mod proto;

pub use pipeline::{Endpoint, RemoteWriter, Settings, Stats};
