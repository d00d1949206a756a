//! mend's HTTP reverse proxy engine: the proxy mend puts in front of a service's ready replicas so
//! that failures and planned restarts lose no request.
//!
//! The pieces, in request order:
//! - [`workers`]: where it serves: the caller's runtime, or (in a multi-thread runtime) one event loop
//!   per worker thread, each with its own `SO_REUSEPORT` listener;
//! - [`server`]: accept loop, one task per client connection, idle and slow-header timeouts;
//! - [`forward`]: faults, limits, header rewriting ([`headers`]), body buffering ([`body`]), then
//!   attempts with budgeted retries ([`budget`]) on backends picked by [`balancer`] from the current
//!   route snapshot, each attempt bounded by a timeout that [`slow`] stretches for slow services;
//! - [`upstream`]: the HTTP/1.1 client side, driven inside the request's own task (no connection task,
//!   no dispatch channel): the head is encoded from the parsed request, which a retry reuses as it is;
//!   a 101 to an upgrade request (WebSocket) hands both connections to a byte tunnel;
//! - [`backend`]: per-backend state (in-flight, drain, outlier ejection, slow start, connection pool);
//! - [`stats`]: lock-free counters and histograms, snapshot by [`ProxyHandle::stats`];
//! - [`proxy`]: [`Proxy::bind`] and the [`ProxyHandle`]: route-table generations, drain, faults,
//!   shutdown.
//!
//! Invariants: the request path waits on sockets only (route table and faults are read from `ArcSwap`
//! snapshots, counters are atomics, the one mutex per backend guards its idle pool for a push or pop and
//! is never held across `.await`); a request's upstream I/O happens in the task of its client
//! connection, so one request never wakes another task; a pooled connection is reused only after both
//! messages of its last exchange ended cleanly; a request is retried only on a backend it has not tried yet, within
//! the retry budget; a drained backend gets no new request from the moment `drain` is called; an
//! attempt counts in its backend's in-flight requests exactly as long as its guard lives, however the
//! request ends (a client that goes away drops it), so drains never wait for requests nobody serves.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use mend_proxy::{Backend, BackendId, Proxy, ProxyConfig, Release, RouteTable};
//!
//! # async fn run() -> Result<(), mend_proxy::ProxyError> {
//! let backend = |index: u32, port: u16| Backend {
//!     id: BackendId { release: Release::Stable, index, generation: 1 },
//!     addr: ([127, 0, 0, 1], port).into(),
//!     weight: 1,
//! };
//! let table = RouteTable { backends: vec![backend(0, 8081), backend(1, 8082)], canary: None };
//! let (routes, routes_rx) = tokio::sync::watch::channel(Arc::new(table));
//! let proxy = Proxy::bind(ProxyConfig::new(([127, 0, 0, 1], 8080).into()), routes_rx).await?;
//!
//! // Before stopping replica 0 on purpose: no new requests, wait for the ones in flight.
//! let outcome = proxy.drain(BackendId { release: Release::Stable, index: 0, generation: 1 }, Duration::from_secs(30)).await;
//! // ... stop it, then publish the table without it (or with its next generation).
//! routes.send_replace(Arc::new(RouteTable { backends: vec![backend(1, 8082)], canary: None }));
//! # let _ = outcome;
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod backend;
mod balancer;
mod body;
mod budget;
mod clock;
mod config;
mod error;
mod fault;
mod forward;
mod headers;
mod proxy;
mod route;
mod server;
mod slow;
mod stats;
mod trace;
mod upstream;
mod upstream_h2;
mod workers;

pub use body::ProxyBody;
pub use config::{
    LoadBalancing, METHODS, MethodSet, OutlierPolicy, ProxyConfig, RetryOn, RetryPolicy, StatusSet, UpstreamProtocol,
};
pub use error::ProxyError;
pub use fault::{Fault, FaultKind, Partition};
pub use proxy::{DrainOutcome, Proxy, ProxyHandle, ShutdownOutcome};
pub use route::{Backend, BackendId, CanarySplit, Release, RouteTable};
pub use stats::{
    BackendStats, CallerStats, Ejection, EjectionReason, GRPC_CODES, LATENCY_BUCKETS, LATENCY_SAMPLE_CAPACITY,
    LatencyHistogram, LatencySnapshot, ProxyStats, RequestStats,
};
pub use trace::ProxyTracing;
