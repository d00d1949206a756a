//! Proxy configuration: every knob with its default and the reason for it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::ProxyError;

/// Everything the proxy needs to run, except the backends (they arrive through the route table).
///
/// `ProxyConfig::new(listen)` gives the defaults below; every field is public because no field depends on
/// another (the few ranges that matter are checked by [`ProxyConfig::validate`], which `Proxy::bind` calls).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// Address the proxy listens on (port 0 picks a free port; see `ProxyHandle::local_addr`).
    pub listen: SocketAddr,
    /// Bound on establishing a TCP connection to a backend that is not on a loopback address (those get
    /// `loopback_connect_timeout`). Default 250 ms: backends are local or in the same data centre, where
    /// a connect either completes in well under a millisecond or is refused at once; a connect that
    /// takes longer means a full accept queue (Linux drops the SYN, and resends it only after 1 s). Such
    /// a backend is busy, not dead: the attempt is not held against it (no ejection), and the request
    /// goes to another backend or, with none left, waits for room (a response ending, or a short
    /// back-off: `RetryPolicy::backoff_base`) and connects afresh.
    pub connect_timeout: Duration,
    /// `connect_timeout` for backends on a loopback address (mend's replicas), where the handshake
    /// completes inside the connecting call unless the accept queue was full and the kernel dropped the
    /// SYN (then nothing comes for a second). Default 25 ms: a request turned away by a full queue tries
    /// again soon rather than after 250 ms, which cut the worst latency in front of servers with a
    /// backlog of 5 from 0.5–1.5 s to 0.1–0.4 s, at the price of a p99 of about this timeout while
    /// queues overflow (BENCHMARKS.md, "fragile replicas"). mend sets both fields from the service's
    /// `connect_timeout` when the file sets it.
    pub loopback_connect_timeout: Duration,
    /// Per-attempt bound on waiting for a backend's response headers while a retry is still possible
    /// (idempotent request, another eligible backend, attempts and retry budget left). Default 250 ms:
    /// a hung backend then costs at most 250 ms before the request goes to another replica, so the worst
    /// latency during a hang stays well under a second. When no retry is possible the attempt is not cut
    /// off but keeps waiting until `request_timeout`, so a legitimately slow request still completes
    /// (at worst on its last attempt). See `RESULTS.md` for the reasoning against hedging.
    pub attempt_timeout: Duration,
    /// Overall bound on waiting for response headers, across all attempts. Default 15 s (Envoy's route
    /// timeout). The proxy answers 504 when it passes.
    pub request_timeout: Duration,
    /// Once a backend's response has started, the longest it may send nothing before the response is cut
    /// off (the client sees the body end early; the answer's status stays in the counts, so a stall alone
    /// does not eject the backend, a hung one is ejected by its next requests' timeouts). Default 60 s, nginx's
    /// `proxy_read_timeout`: a replica stopped or wedged mid-stream does not hold its client forever, while
    /// a stream that sends something (a heartbeat) at least once a minute is never cut.
    pub upstream_read_timeout: Duration,
    /// A client connection with no request in progress is closed after this long. Default 60 s: shorter
    /// than nginx's 75 s, long enough that clients with a 30–90 s pool idle time rarely race the close.
    pub client_idle_timeout: Duration,
    /// A client that has started a request must finish sending its headers within this long, else the
    /// connection is closed (slow-loris protection). Default 10 s (nginx: 60 s, hyper: 30 s); a real client
    /// sends its headers in one segment.
    pub client_header_timeout: Duration,
    /// Largest request head (request line plus headers) accepted; larger gets 431. Default 64 KiB (Envoy:
    /// 60 KiB, nginx: 4 × 8 KiB). At least 8 KiB (hyper's minimum read buffer).
    pub max_request_header_bytes: usize,
    /// Largest request body accepted; a larger `Content-Length` gets 413 at once, and a chunked body that
    /// grows past it is cut off (413 if no response was sent yet). Default 1 GiB: uploads stream through,
    /// so the limit guards the backends, not the proxy's memory.
    pub max_request_body_bytes: u64,
    /// Request bodies up to this size are buffered so that a failed attempt can be replayed on another
    /// backend; larger bodies stream through unbuffered and are retried only when no byte was sent yet
    /// (connect failure). Default 64 KiB: covers typical JSON APIs, bounds memory at 64 KiB per request.
    pub retry_buffer_bytes: usize,
    /// How a backend is picked.
    pub load_balancing: LoadBalancing,
    /// When and how often to retry.
    pub retry: RetryPolicy,
    /// Passive health checking.
    pub outlier: OutlierPolicy,
    /// A backend that joins (new generation, or back from ejection) receives a share of traffic that grows
    /// linearly from 10 % of its weight to its full weight over this window. Default 5 s: long enough for
    /// lazy caches and connection pools to warm, short enough that a rolling restart is not slowed
    /// (Envoy has no slow start by default). Zero disables it.
    pub slow_start: Duration,
    /// Bound on waiting for in-flight requests when draining a backend without an explicit timeout and at
    /// shutdown. Default 30 s (Kubernetes' default termination grace period).
    pub drain_timeout: Duration,
    /// Idle connections kept per backend (per worker thread, when the runtime has several). Default 256.
    pub max_idle_per_backend: usize,
    /// An idle pooled connection older than this is closed rather than reused. Default 30 s: below the
    /// usual server keep-alive timeouts (nginx 75 s, Node 5 s is the notable exception and shows up as a
    /// reset that is retried).
    pub upstream_idle_timeout: Duration,
    /// What the backends speak. Default HTTP/1.1; gRPC services need h2c. Clients may speak either
    /// HTTP/1.1 or HTTP/2 with prior knowledge (h2c) whatever this is.
    pub upstream_protocol: UpstreamProtocol,
    /// W3C trace context and spans (`trace.rs`). Default none: tracing off, which costs the request path
    /// nothing (no header is read, nothing allocated).
    pub tracing: Option<crate::trace::ProxyTracing>,
}

/// The protocol the proxy speaks to a service's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, connections pooled per backend (one request at a time on each). The default.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge: one multiplexed connection per backend and event loop.
    /// Needed for gRPC, whose requests are retried when a backend answers `UNAVAILABLE` without
    /// processing them, and whose status codes are counted per release.
    H2c,
}

/// How a backend is chosen among the eligible ones of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalancing {
    /// Least outstanding requests between two candidates drawn at random in proportion to their (slow
    /// start adjusted) weight: spreads load away from a slow or hung backend with no shared state but the
    /// in-flight counters. The default.
    #[default]
    LeastRequest,
    /// Weighted round robin over the eligible backends.
    RoundRobin,
}

/// When requests are retried, on a different backend each time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request including the first. Default 3 (Envoy: 2). 1 disables retries.
    pub max_attempts: u32,
    /// Retries may add at most this fraction of the request rate. Default 0.2 (Linkerd, Finagle).
    pub budget_ratio: f64,
    /// Retries allowed per second regardless of the ratio, so that a low-traffic service can still
    /// retry. Default 10 (Linkerd).
    pub min_retries_per_second: u32,
    /// When every backend a request could go to has just failed it without processing it (refused,
    /// reset, or too busy to accept the connection), the request waits a random time of up to
    /// `backoff_base × 2^n` (capped at `backoff_max`; "full jitter") and tries again, within its
    /// `request_timeout` and the retry budget, instead of failing at once: a replica being restarted
    /// or one whose accept queue overflowed a moment ago is usually there again within milliseconds.
    /// Default 25 ms (Envoy's retry back-off base).
    pub backoff_base: Duration,
    /// Cap on one back-off. Default 250 ms (Envoy: 10 × the base).
    pub backoff_max: Duration,
    /// What a failed attempt must be for the request to go on to another backend (Envoy's `retry_on`,
    /// nginx's `proxy_next_upstream`). Default: any 5xx answer, a reset and a failed connect
    /// ([`RetryOn::default`] says why).
    pub retry_on: RetryOn,
    /// The methods whose requests may be retried after an answer (a 5xx) or a timeout, when their body
    /// was buffered. Default: the idempotent ones of RFC 9110 (GET, HEAD, OPTIONS, PUT, DELETE, TRACE);
    /// a request with an `Idempotency-Key` header counts as idempotent whatever its method. Adding POST
    /// says the service's POSTs are safe to repeat.
    pub retry_methods: MethodSet,
}

/// The failures after which a request goes on to another backend (never the same one), within the
/// attempt limit and the retry budget. Envoy's names, with the same meaning:
///
/// | condition | Envoy | nginx `proxy_next_upstream` | retried when |
/// |---|---|---|---|
/// | `server_errors` | `5xx` | `http_500 http_502 http_503 http_504` | any 5xx answer |
/// | `gateway_errors` | `gateway-error` | `http_502 http_503 http_504` | a 502, 503 or 504 answer |
/// | `statuses` | `retriable-status-codes` | `http_NNN` | an answer with one of these statuses |
/// | `reset` | `reset` | `error` | the connection closed or reset before any response |
/// | `connect_failure` | `connect-failure` | `error` | no connection could be made |
///
/// An answer (a status) is retried only for a request whose method is in
/// [`RetryPolicy::retry_methods`] (or with an `Idempotency-Key`) and whose body was buffered: the
/// backend did process it, so only a request that is safe to repeat goes again. A reset or failed
/// connect is retried when the body can be sent again (the backend did not process it). A backend too
/// busy to accept the connection (accept queue full) is waited out whatever this says: the request
/// reached nobody (see `Failed::Busy` in the request path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    /// Any 5xx answer (Envoy's `5xx`; includes the gateway errors).
    pub server_errors: bool,
    /// 502, 503 and 504 answers (Envoy's `gateway-error`).
    pub gateway_errors: bool,
    /// A reset or closed connection before response headers (Envoy's `reset`).
    pub reset: bool,
    /// A refused or unreachable connection (Envoy's `connect-failure`).
    pub connect_failure: bool,
    /// Answers with these statuses (Envoy's `retriable-status-codes`).
    pub statuses: StatusSet,
}

impl RetryOn {
    /// Nothing is retried (but busy backends are still waited out).
    pub const NONE: Self = Self {
        server_errors: false,
        gateway_errors: false,
        reset: false,
        connect_failure: false,
        statuses: StatusSet::EMPTY,
    };

    /// Whether an answer with `status` is retried (for a request that may be).
    pub fn status(&self, status: u16) -> bool {
        (self.server_errors && (500..=599).contains(&status))
            || (self.gateway_errors && (502..=504).contains(&status))
            || self.statuses.contains(status)
    }
}

impl Default for RetryOn {
    /// `5xx`, `reset` and `connect-failure`: a self-healing proxy hides one bad replica among healthy
    /// ones. A 500 from one replica is most often that replica's fault (a bad deploy on it, a corrupt
    /// cache, a lost dependency connection), and the same request on a healthy sibling succeeds; a
    /// client should not see the errors of a replica that outlier detection is about to eject (Envoy
    /// and nginx retry no 500 by default, and their users turn it on for exactly this). What keeps
    /// this safe: only requests that are safe to repeat are retried after an answer; never on the same
    /// backend; at most `max_attempts` in all; and retries add at most `budget_ratio` of the request
    /// rate (plus `min_retries_per_second`), so a service failing everywhere sees its load grow by at
    /// most that share, not by `max_attempts` times. The 500s still count against the replica that
    /// answered them, so outlier detection ejects it as before.
    fn default() -> Self {
        Self {
            server_errors: true,
            gateway_errors: true,
            reset: true,
            connect_failure: true,
            statuses: StatusSet::EMPTY,
        }
    }
}

/// A set of 5xx statuses (500 to 599), as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet(u128);

impl StatusSet {
    /// No status.
    pub const EMPTY: Self = Self(0);

    /// The set of `statuses`; Err names one outside 500..=599 (only a server error is retried).
    pub fn of(statuses: impl IntoIterator<Item = u16>) -> Result<Self, u16> {
        let mut bits = 0u128;
        for status in statuses {
            if !(500..=599).contains(&status) {
                return Err(status);
            }
            bits |= 1 << (status - 500);
        }
        Ok(Self(bits))
    }

    /// Whether `status` is in the set.
    pub fn contains(self, status: u16) -> bool {
        (500..=599).contains(&status) && self.0 & (1 << (status - 500)) != 0
    }
}

/// A set of request methods (the standard ones of RFC 9110 and PATCH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSet(u16);

/// The methods a [`MethodSet`] can hold, in bit order.
pub const METHODS: [&str; 8] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH"];

impl MethodSet {
    /// RFC 9110 §9.2.2's idempotent methods: GET, HEAD, OPTIONS, PUT, DELETE, TRACE.
    pub const IDEMPOTENT: Self = Self(0b11_1111);

    /// The set of `methods` (upper case, as [`METHODS`] names them); Err names one it does not know.
    pub fn of<'a>(methods: impl IntoIterator<Item = &'a str>) -> Result<Self, &'a str> {
        let mut bits = 0u16;
        for method in methods {
            let idx = METHODS.iter().position(|known| *known == method).ok_or(method)?;
            bits |= 1 << idx;
        }
        Ok(Self(bits))
    }

    /// Whether `method` is in the set.
    pub fn contains(self, method: &hyper::Method) -> bool {
        METHODS.iter().position(|known| *known == method.as_str()).is_some_and(|idx| self.0 & (1 << idx) != 0)
    }
}

impl Default for MethodSet {
    fn default() -> Self {
        Self::IDEMPOTENT
    }
}

/// Passive health checking: eject backends that keep failing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierPolicy {
    /// Consecutive failures (5xx, connect failure, reset, timeout, a body cut off after its headers) that
    /// eject a backend. Default 3 (Envoy: 5); the decision is immediate, there is no sweep interval (Envoy
    /// sweeps every 10 s).
    pub consecutive_failures: u32,
    /// The n-th ejection in a row lasts `base_ejection × n`, capped at `max_ejection`. Default 5 s (Envoy:
    /// 30 s): mend replaces a sick replica with a new generation (a new backend id) within seconds, so a
    /// long ejection only keeps a recovered replica idle.
    pub base_ejection: Duration,
    /// Cap on one ejection. Default 60 s (Envoy: 300 s).
    pub max_ejection: Duration,
    /// At most this percentage of the backends are ejected at once, and never the last one. Default 50
    /// (Envoy: 10 % but at least one): with two replicas, one may be ejected.
    pub max_ejection_percent: u8,
    /// When fewer than this percentage of the backends that are not draining are free of ejection
    /// (replicas were removed while others were ejected, say), ejections are ignored and every such
    /// backend is routed to again: Envoy's panic threshold, and its default, 50. Whatever the value, a
    /// table with a backend that is not draining never routes to nothing because of ejections.
    pub panic_threshold_percent: u8,
}

impl ProxyConfig {
    /// The connect timeout for a backend at `addr`: `loopback_connect_timeout` on a loopback address
    /// (127.0.0.0/8, ::1), `connect_timeout` elsewhere.
    pub(crate) fn connect_timeout_for(&self, addr: SocketAddr) -> Duration {
        if addr.ip().is_loopback() { self.loopback_connect_timeout } else { self.connect_timeout }
    }

    /// The defaults described on each field, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            connect_timeout: Duration::from_millis(250),
            loopback_connect_timeout: Duration::from_millis(25),
            attempt_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_secs(15),
            upstream_read_timeout: Duration::from_secs(60),
            client_idle_timeout: Duration::from_secs(60),
            client_header_timeout: Duration::from_secs(10),
            max_request_header_bytes: 64 * 1024,
            max_request_body_bytes: 1 << 30,
            retry_buffer_bytes: 64 * 1024,
            load_balancing: LoadBalancing::LeastRequest,
            retry: RetryPolicy::default(),
            outlier: OutlierPolicy::default(),
            slow_start: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            max_idle_per_backend: 256,
            upstream_idle_timeout: Duration::from_secs(30),
            upstream_protocol: UpstreamProtocol::Http1,
            tracing: None,
        }
    }

    /// Checks the few ranges the proxy relies on; `Proxy::bind` calls it.
    pub fn validate(&self) -> Result<(), ProxyError> {
        let invalid = |field: &'static str, reason: &'static str| Err(ProxyError::InvalidConfig { field, reason });
        if self.max_request_header_bytes < MIN_HEADER_BYTES {
            return invalid("max_request_header_bytes", "must be at least 8192");
        }
        if self.retry.max_attempts == 0 {
            return invalid("retry.max_attempts", "must be at least 1");
        }
        if usize::try_from(self.retry.max_attempts).map_or(true, |attempts| attempts > crate::forward::MAX_ATTEMPTS) {
            return invalid("retry.max_attempts", "must be at most 8");
        }
        if !(0.0..=1.0).contains(&self.retry.budget_ratio) {
            return invalid("retry.budget_ratio", "must be within 0..=1");
        }
        if self.outlier.max_ejection_percent > 100 {
            return invalid("outlier.max_ejection_percent", "must be within 0..=100");
        }
        if self.outlier.panic_threshold_percent > 100 {
            return invalid("outlier.panic_threshold_percent", "must be within 0..=100");
        }
        if self.retry.backoff_base > self.retry.backoff_max {
            return invalid("retry.backoff_base", "must not exceed retry.backoff_max");
        }
        if self.outlier.consecutive_failures == 0 {
            return invalid("outlier.consecutive_failures", "must be at least 1");
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("loopback_connect_timeout", self.loopback_connect_timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("request_timeout", self.request_timeout),
            ("upstream_read_timeout", self.upstream_read_timeout),
            ("client_idle_timeout", self.client_idle_timeout),
            ("client_header_timeout", self.client_header_timeout),
        ] {
            if value.is_zero() {
                return invalid(field, "must be greater than zero");
            }
        }
        Ok(())
    }
}

/// hyper refuses read buffers below 8 KiB.
const MIN_HEADER_BYTES: usize = 8192;

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            budget_ratio: 0.2,
            min_retries_per_second: 10,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            retry_on: RetryOn::default(),
            retry_methods: MethodSet::IDEMPOTENT,
        }
    }
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            max_ejection_percent: 50,
            panic_threshold_percent: 50,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(change: impl FnOnce(&mut ProxyConfig), expected: Option<&str>) {
        let mut cfg = ProxyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        change(&mut cfg);
        let got = cfg.validate().err().map(|error| error.to_string());
        assert_eq!(got.as_deref(), expected);
    }

    #[test]
    fn validates_ranges() {
        check(|_| {}, None);
        check(|c| c.max_request_header_bytes = 100, Some("invalid max_request_header_bytes: must be at least 8192"));
        check(|c| c.retry.max_attempts = 0, Some("invalid retry.max_attempts: must be at least 1"));
        check(|c| c.retry.max_attempts = 9, Some("invalid retry.max_attempts: must be at most 8"));
        check(|c| c.retry.budget_ratio = 1.5, Some("invalid retry.budget_ratio: must be within 0..=1"));
        check(
            |c| c.outlier.max_ejection_percent = 101,
            Some("invalid outlier.max_ejection_percent: must be within 0..=100"),
        );
        check(
            |c| c.outlier.panic_threshold_percent = 101,
            Some("invalid outlier.panic_threshold_percent: must be within 0..=100"),
        );
        check(
            |c| c.retry.backoff_base = Duration::from_secs(1),
            Some("invalid retry.backoff_base: must not exceed retry.backoff_max"),
        );
        check(|c| c.attempt_timeout = Duration::ZERO, Some("invalid attempt_timeout: must be greater than zero"));
        check(
            |c| c.loopback_connect_timeout = Duration::ZERO,
            Some("invalid loopback_connect_timeout: must be greater than zero"),
        );
    }

    #[test]
    fn loopback_backends_get_their_own_connect_timeout() {
        let mut cfg = ProxyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.connect_timeout = Duration::from_millis(300);
        cfg.loopback_connect_timeout = Duration::from_millis(20);
        for (addr, expected) in [
            ("127.0.0.1:8080", 20),
            ("127.1.2.3:8080", 20),
            ("[::1]:8080", 20),
            ("10.0.0.7:8080", 300),
            ("192.168.1.2:80", 300),
            ("[2001:db8::1]:443", 300),
            ("0.0.0.0:8080", 300),
        ] {
            let addr: SocketAddr = addr.parse().expect("test address");
            assert_eq!(cfg.connect_timeout_for(addr), Duration::from_millis(expected), "{addr}");
        }
        // Either may be the longer one: a loopback backend is not held to the remote bound.
        cfg.loopback_connect_timeout = Duration::from_secs(1);
        assert_eq!(cfg.connect_timeout_for("127.0.0.1:1".parse().expect("test address")), Duration::from_secs(1));
    }
}
