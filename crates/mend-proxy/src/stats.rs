//! Lock-free request counters and latency histograms, and the snapshot types `ProxyStats` returns.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crate::route::{BackendId, Release};

/// Upper bounds (seconds) of the latency histogram buckets, Prometheus style; a last `+Inf` bucket follows.
pub const LATENCY_BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The same bounds in nanoseconds, for the hot path.
const BUCKET_NANOS: [u64; 13] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

const N_BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// gRPC status codes by number (0 `OK` to 16 `UNAUTHENTICATED`), as counted in [`RequestStats::grpc`].
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// gRPC's `UNAVAILABLE`: the request was not processed (retried like a refused connection).
pub(crate) const GRPC_UNAVAILABLE: u8 = 14;
/// gRPC's `UNKNOWN`: what a response without a valid `grpc-status` counts as.
pub(crate) const GRPC_UNKNOWN: u8 = 2;

/// A `grpc-status` value as a code; `UNKNOWN` for anything but 0..=16.
pub(crate) fn grpc_code(value: &[u8]) -> u8 {
    match value {
        [digit @ b'0'..=b'9'] => digit - b'0',
        [b'1', digit @ b'0'..=b'6'] => 10 + (digit - b'0'),
        _ => GRPC_UNKNOWN,
    }
}

/// How a request (or an attempt) ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A response with this status reached the client (or, for an attempt, came from the backend).
    Status(u16),
    /// No response: the connection to the backend could not be made.
    ConnectFailure,
    /// No response: the backend did not accept the connection in time (a full accept queue).
    Busy,
    /// No response: the backend closed or reset the connection first.
    Reset,
    /// No response in time.
    Timeout,
}

/// Why the proxy itself answered, on top of the status it answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalReason {
    /// 502 after a connect failure or reset on the last attempt.
    BadGateway,
    /// 503: no eligible backend.
    NoBackend,
    /// 504: no response headers within the timeout.
    Timeout,
    /// An injected fault answered (status) or closed the connection (abort).
    Injected,
    /// 400/413/501: the request was refused.
    Refused,
}

/// Shards per counter set. Each thread writes the shard of its own index (modulo this), so that worker
/// threads counting requests do not pass the same cache lines back and forth; `snapshot` sums them.
pub(crate) const N_SHARDS: usize = 8;

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

/// The shard of the calling thread, `0..N_SHARDS`: threads are numbered as they first ask, unless
/// pinned.
pub(crate) fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    SHARD.with(|shard| {
        let mut shard_idx = shard.get();
        if shard_idx == usize::MAX {
            shard_idx = NEXT.fetch_add(1, Relaxed) % N_SHARDS;
            shard.set(shard_idx);
        }
        shard_idx
    })
}

/// Gives the calling thread (a proxy event loop) its own shard for good: its idle pool shard then holds
/// only connections registered with its runtime, and it takes from no other.
pub(crate) fn pin_thread_shard(shard_idx: usize) {
    SHARD.with(|shard| shard.set(shard_idx % N_SHARDS));
    PINNED.with(|pinned| pinned.set(true));
}

/// Whether the calling thread is a proxy event loop (see [`pin_thread_shard`]).
pub(crate) fn thread_pinned() -> bool {
    PINNED.with(Cell::get)
}

/// Counters of one subject (a backend's attempts, a release's or the proxy's own responses), sharded
/// by thread.
#[derive(Debug)]
pub(crate) struct Counters {
    shards: Box<[Shard; N_SHARDS]>,
}

/// One thread's share of a `Counters`; 128-byte aligned, since adjacent cache lines are fetched in pairs.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    classes: [AtomicU64; 5],
    connect_failures: AtomicU64,
    busy: AtomicU64,
    resets: AtomicU64,
    timeouts: AtomicU64,
    bad_gateway: AtomicU64,
    no_backend: AtomicU64,
    gateway_timeouts: AtomicU64,
    injected: AtomicU64,
    partitioned: AtomicU64,
    refused: AtomicU64,
    aborted: AtomicU64,
    buckets: [AtomicU64; N_BUCKETS],
    latency_sum_nanos: AtomicU64,
    /// gRPC responses by status code (after the fields the HTTP path touches, so as not to spread them).
    grpc: [AtomicU64; GRPC_CODES.len()],
}

impl Default for Counters {
    fn default() -> Self {
        Self { shards: Box::new(std::array::from_fn(|_| Shard::default())) }
    }
}

impl Counters {
    fn shard(&self) -> &Shard {
        &self.shards[thread_shard()]
    }

    pub(crate) fn record(&self, outcome: Outcome, latency: Duration) {
        let shard = self.shard();
        match outcome {
            Outcome::Status(status) => {
                if let Some(class) = shard.classes.get(usize::from(status / 100).wrapping_sub(1)) {
                    class.fetch_add(1, Relaxed);
                }
            }
            Outcome::ConnectFailure => {
                shard.connect_failures.fetch_add(1, Relaxed);
            }
            Outcome::Busy => {
                shard.busy.fetch_add(1, Relaxed);
            }
            Outcome::Reset => {
                shard.resets.fetch_add(1, Relaxed);
            }
            Outcome::Timeout => {
                shard.timeouts.fetch_add(1, Relaxed);
            }
        }
        shard.observe(latency);
    }

    /// Counts a response the proxy produced itself (`status` as the client saw it).
    pub(crate) fn record_local(&self, status: u16, reason: LocalReason, latency: Duration) {
        let shard = self.shard();
        let counter = match reason {
            LocalReason::BadGateway => &shard.bad_gateway,
            LocalReason::NoBackend => &shard.no_backend,
            LocalReason::Timeout => &shard.gateway_timeouts,
            LocalReason::Injected => &shard.injected,
            LocalReason::Refused => &shard.refused,
        };
        counter.fetch_add(1, Relaxed);
        self.record(Outcome::Status(status), latency);
    }

    /// Counts a gRPC response's status code (besides its HTTP status, which `record` counted).
    pub(crate) fn record_grpc(&self, code: u8) {
        if let Some(counter) = self.shard().grpc.get(usize::from(code)) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Counts a request refused by a partition: the service never saw it, so it is in no status count or
    /// latency (the caller's edge counts it as the 503 it got).
    pub(crate) fn record_partitioned(&self) {
        self.shard().partitioned.fetch_add(1, Relaxed);
    }

    /// Counts a connection closed without a response (an injected abort).
    pub(crate) fn record_abort(&self, latency: Duration) {
        let shard = self.shard();
        shard.aborted.fetch_add(1, Relaxed);
        shard.injected.fetch_add(1, Relaxed);
        shard.observe(latency);
    }

    pub(crate) fn snapshot(&self) -> RequestStats {
        let total = |field: fn(&Shard) -> &AtomicU64| -> u64 {
            self.shards.iter().map(|shard| field(shard).load(Relaxed)).sum()
        };
        let mut cumulative = [0; N_BUCKETS];
        let mut running = 0;
        for (bucket_idx, slot) in cumulative.iter_mut().enumerate() {
            running += self.shards.iter().map(|shard| shard.buckets[bucket_idx].load(Relaxed)).sum::<u64>();
            *slot = running;
        }
        RequestStats {
            status_1xx: total(|shard| &shard.classes[0]),
            status_2xx: total(|shard| &shard.classes[1]),
            status_3xx: total(|shard| &shard.classes[2]),
            status_4xx: total(|shard| &shard.classes[3]),
            status_5xx: total(|shard| &shard.classes[4]),
            connect_failures: total(|shard| &shard.connect_failures),
            busy: total(|shard| &shard.busy),
            resets: total(|shard| &shard.resets),
            timeouts: total(|shard| &shard.timeouts),
            bad_gateway: total(|shard| &shard.bad_gateway),
            no_backend: total(|shard| &shard.no_backend),
            gateway_timeouts: total(|shard| &shard.gateway_timeouts),
            injected: total(|shard| &shard.injected),
            partitioned: total(|shard| &shard.partitioned),
            refused: total(|shard| &shard.refused),
            aborted: total(|shard| &shard.aborted),
            // Kept per release by the proxy, not per counter set.
            retried_5xx: 0,
            grpc: std::array::from_fn(|code| self.shards.iter().map(|shard| shard.grpc[code].load(Relaxed)).sum()),
            latency: LatencyHistogram {
                cumulative,
                count: running,
                sum_seconds: Duration::from_nanos(total(|shard| &shard.latency_sum_nanos)).as_secs_f64(),
            },
        }
    }
}

impl Shard {
    fn observe(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NANOS.iter().position(|&bound| nanos <= bound).unwrap_or(N_BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_nanos.fetch_add(nanos, Relaxed);
    }
}

/// The latest latencies of one release's requests, for a canary judgement: a fixed ring of
/// [`LATENCY_SAMPLE_CAPACITY`] slots written lock-free on the request path (a relaxed store and one
/// fetch-add), read by [`LatencySample::since`]. A reader racing a writer may see a slot from the lap
/// before; for a statistical sample that is harmless.
#[derive(Debug)]
pub(crate) struct LatencySample {
    /// Latencies in microseconds (saturating).
    slots: Box<[AtomicU32]>,
    /// Latencies recorded so far (the next slot is `written % capacity`).
    written: AtomicU64,
}

/// Latencies a [`LatencySample`] keeps: enough for a Mann-Whitney test to see a 10 % shift, small enough
/// (4 KiB per release) to cost nothing.
pub const LATENCY_SAMPLE_CAPACITY: usize = 1024;

impl Default for LatencySample {
    fn default() -> Self {
        Self { slots: (0..LATENCY_SAMPLE_CAPACITY).map(|_| AtomicU32::new(0)).collect(), written: AtomicU64::new(0) }
    }
}

impl LatencySample {
    pub(crate) fn record(&self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let slot_idx = self.written.fetch_add(1, Relaxed) as usize % self.slots.len();
        self.slots[slot_idx].store(micros, Relaxed);
    }

    /// The latencies recorded after the first `start` (a value of `written` read earlier), at most the
    /// latest capacity's worth.
    pub(crate) fn since(&self, start: u64) -> LatencySnapshot {
        let written = self.written.load(Relaxed);
        let n_new = written.saturating_sub(start).min(self.slots.len() as u64);
        let latencies_ms = (written - n_new..written)
            .map(|position| f64::from(self.slots[position as usize % self.slots.len()].load(Relaxed)) / 1000.0)
            .collect();
        LatencySnapshot { written, latencies_ms }
    }
}

/// What [`LatencySample::since`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Latencies recorded so far: pass it to the next read to get only what came after.
    pub written: u64,
    /// Latencies in milliseconds, oldest first (at most [`LATENCY_SAMPLE_CAPACITY`]).
    pub latencies_ms: Vec<f64>,
}

/// Counts of requests (or attempts), as of the moment `stats()` was called. All counters are monotonic.
///
/// `status_*` count responses by class as the client saw them, including those the proxy produced (but
/// not a partition's 503s: `partitioned`); the fields after them say why the proxy produced one, or (for a
/// backend's attempts) how an attempt failed without a response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestStats {
    /// 1xx responses.
    pub status_1xx: u64,
    /// 2xx responses.
    pub status_2xx: u64,
    /// 3xx responses.
    pub status_3xx: u64,
    /// 4xx responses.
    pub status_4xx: u64,
    /// 5xx responses.
    pub status_5xx: u64,
    /// Attempts: the backend refused the connection (nothing listens: it is gone or restarting).
    pub connect_failures: u64,
    /// Attempts: the backend did not accept the connection within the connect timeout (its accept queue
    /// was full). Busy, not failing: not held against it by outlier detection.
    pub busy: u64,
    /// Attempts: the backend closed or reset the connection before answering.
    pub resets: u64,
    /// Attempts: no response headers within the timeout (the attempt was abandoned).
    pub timeouts: u64,
    /// Proxy responses: 502 after the last attempt failed without a response.
    pub bad_gateway: u64,
    /// Proxy responses: 503 because no backend was eligible.
    pub no_backend: u64,
    /// Proxy responses: 504 because no response came within `request_timeout`.
    pub gateway_timeouts: u64,
    /// Proxy responses: injected faults (status or abort).
    pub injected: u64,
    /// Requests a partition refused (503 to a caller cut off from this service). Like a network
    /// partition's, they never reached the service: in no status count or latency here; the caller's
    /// edge counts them.
    pub partitioned: u64,
    /// Proxy responses: requests refused (413 body too large, 400 unreadable body, 501 CONNECT).
    pub refused: u64,
    /// Connections closed by an injected abort, with no response.
    pub aborted: u64,
    /// Attempts on this release's backends answered 5xx and retried on another backend (the policy's
    /// `retry_on`): the client got the other backend's answer, so these are in no status count above.
    /// A release's own error ratio is `(status_5xx + retried_5xx) / (responses + retried_5xx)`.
    pub retried_5xx: u64,
    /// gRPC responses by status code (indexed as [`GRPC_CODES`]): from `grpc-status` in the trailers, or
    /// in the headers of a trailers-only response; `UNKNOWN` when a gRPC response ended without one.
    pub grpc: [u64; 17],
    /// Time from the request head to the end of the response body.
    pub latency: LatencyHistogram,
}

impl RequestStats {
    /// Responses of every class.
    pub fn responses(&self) -> u64 {
        self.status_1xx + self.status_2xx + self.status_3xx + self.status_4xx + self.status_5xx
    }

    fn add(&mut self, other: &Self) {
        self.status_1xx += other.status_1xx;
        self.status_2xx += other.status_2xx;
        self.status_3xx += other.status_3xx;
        self.status_4xx += other.status_4xx;
        self.status_5xx += other.status_5xx;
        self.connect_failures += other.connect_failures;
        self.busy += other.busy;
        self.resets += other.resets;
        self.timeouts += other.timeouts;
        self.bad_gateway += other.bad_gateway;
        self.no_backend += other.no_backend;
        self.gateway_timeouts += other.gateway_timeouts;
        self.injected += other.injected;
        self.partitioned += other.partitioned;
        self.refused += other.refused;
        self.aborted += other.aborted;
        self.retried_5xx += other.retried_5xx;
        for (mine, theirs) in self.grpc.iter_mut().zip(other.grpc) {
            *mine += theirs;
        }
        for (mine, theirs) in self.latency.cumulative.iter_mut().zip(other.latency.cumulative) {
            *mine += theirs;
        }
        self.latency.count += other.latency.count;
        self.latency.sum_seconds += other.latency.sum_seconds;
    }
}

/// A latency histogram with the fixed bounds [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// `cumulative[i]` counts observations ≤ `LATENCY_BUCKETS[i]`; the last entry (`+Inf`) equals `count`.
    pub cumulative: [u64; N_BUCKETS],
    /// Observations.
    pub count: u64,
    /// Sum of the observations in seconds.
    pub sum_seconds: f64,
}

/// One backend's figures. Attempts, not requests: a retried request counts on each backend it tried.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendStats {
    /// The backend.
    pub id: BackendId,
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it is in the current route table (removed backends stay listed for a minute).
    pub in_table: bool,
    /// Whether it was drained (it receives no new requests).
    pub draining: bool,
    /// Whether it is ejected right now.
    pub ejected: bool,
    /// Requests in flight on it (until their response body ends).
    pub in_flight: u32,
    /// Attempts sent to it, by outcome, with their latency.
    pub attempts: RequestStats,
    /// Of those, attempts that were retries.
    pub retries: u64,
    /// Times it was ejected.
    pub ejections: u64,
    /// Its latest ejection, if it was ever ejected (`remaining` is zero once it is over).
    pub last_ejection: Option<Ejection>,
}

/// Why outlier detection ejected a backend: the failure that made its run of failures long enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectionReason {
    /// It answered with this 5xx status.
    ServerError(u16),
    /// A connection to it could not be made.
    ConnectFailure,
    /// It closed or reset the connection before answering.
    Reset,
    /// It did not answer within the attempt timeout.
    Timeout,
    /// It cut a response off after its headers: closed or reset the connection mid-body.
    BrokenBody,
}

impl EjectionReason {
    /// The reason behind a failed attempt's outcome; None for an answer that is not a failure.
    pub(crate) fn of(outcome: Outcome) -> Option<Self> {
        match outcome {
            Outcome::Status(status) if status >= 500 => Some(Self::ServerError(status)),
            Outcome::Status(_) => None,
            Outcome::ConnectFailure => Some(Self::ConnectFailure),
            Outcome::Busy => None,
            Outcome::Reset => Some(Self::Reset),
            Outcome::Timeout => Some(Self::Timeout),
        }
    }
}

/// One ejection of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// The failure that ended the run.
    pub reason: EjectionReason,
    /// Failures in a row that ejected it (the policy's `consecutive_failures`).
    pub consecutive_failures: u32,
    /// How long it is out of rotation.
    pub duration: Duration,
    /// How much of that is left (zero once it is back).
    pub remaining: Duration,
    /// Ejections in a row (the duration grows with it, up to the maximum).
    pub streak: u32,
}

/// Requests a calling service made, from its `x-mend-caller` header.
#[derive(Debug, Clone, PartialEq)]
pub struct CallerStats {
    /// The caller's name as sent (`"(other)"` once the caller table is full or for unusable names).
    pub caller: String,
    /// Responses to it by class, with latency.
    pub requests: RequestStats,
}

/// A snapshot of every counter; cheap enough to take every second.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProxyStats {
    /// Every request the proxy answered or aborted, as its client saw it: the sum of `stable`, `canary`
    /// and `local` (a partition's refusals are in `partitioned` only).
    pub total: RequestStats,
    /// Requests whose final attempt went to a stable backend.
    pub stable: RequestStats,
    /// Requests whose final attempt went to a canary backend.
    pub canary: RequestStats,
    /// Requests answered without a backend's response headers: no backend, injected faults, refusals,
    /// and 502/504 after failed attempts.
    pub local: RequestStats,
    /// Per backend, in table order, then removed backends.
    pub backends: Vec<BackendStats>,
    /// Caller → this service counts.
    pub callers: Vec<CallerStats>,
    /// Retries sent.
    pub retries: u64,
    /// Retries not sent because the retry budget was spent.
    pub retries_denied: u64,
    /// Of the retries, those after a 5xx answer (a bad replica's errors that clients did not see).
    pub retries_on_5xx: u64,
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// Client connections open now.
    pub connections_open: u64,
}

impl ProxyStats {
    /// Figures of one release.
    pub fn release(&self, release: Release) -> &RequestStats {
        match release {
            Release::Stable => &self.stable,
            Release::Canary => &self.canary,
        }
    }

    /// The backend with this id, if listed.
    pub fn backend(&self, id: BackendId) -> Option<&BackendStats> {
        self.backends.iter().find(|backend| backend.id == id)
    }
}

/// Caller names kept apart; later callers count under `(other)`.
const CALLER_SLOTS: usize = 64;
/// Longest caller name kept.
const MAX_CALLER_LEN: usize = 64;

/// Caller → callee counters: a fixed open-addressed table written lock-free on the hot path.
#[derive(Debug)]
pub(crate) struct CallerTable {
    slots: Box<[CallerSlot]>,
    other: Counters,
}

#[derive(Debug, Default)]
struct CallerSlot {
    name: OnceLock<Box<str>>,
    counters: Counters,
}

impl Default for CallerTable {
    fn default() -> Self {
        Self { slots: (0..CALLER_SLOTS).map(|_| CallerSlot::default()).collect(), other: Counters::default() }
    }
}

impl CallerTable {
    /// The slot of `caller`, claiming one for a new name; `CALLER_SLOTS` stands for `(other)`.
    pub(crate) fn slot(&self, caller: &[u8]) -> usize {
        let Some(name) = usable_caller(caller) else { return CALLER_SLOTS };
        let start = fnv1a(name.as_bytes()) as usize % CALLER_SLOTS;
        for probe in 0..CALLER_SLOTS {
            let slot_idx = (start + probe) % CALLER_SLOTS;
            let stored = self.slots[slot_idx].name.get_or_init(|| name.into());
            if **stored == *name {
                return slot_idx;
            }
        }
        CALLER_SLOTS
    }

    /// The counters of a slot from [`CallerTable::slot`].
    pub(crate) fn counters(&self, slot_idx: usize) -> &Counters {
        self.slots.get(slot_idx).map_or(&self.other, |slot| &slot.counters)
    }

    pub(crate) fn snapshot(&self) -> Vec<CallerStats> {
        let mut callers: Vec<CallerStats> = self
            .slots
            .iter()
            .filter_map(|slot| {
                let name = slot.name.get()?;
                Some(CallerStats { caller: name.to_string(), requests: slot.counters.snapshot() })
            })
            .collect();
        callers.sort_by(|a, b| a.caller.cmp(&b.caller));
        let other = self.other.snapshot();
        if other.latency.count > 0 {
            callers.push(CallerStats { caller: "(other)".to_owned(), requests: other });
        }
        callers
    }
}

/// A caller name worth a slot: short, visible ASCII without separators.
fn usable_caller(caller: &[u8]) -> Option<&str> {
    let usable = !caller.is_empty()
        && caller.len() <= MAX_CALLER_LEN
        && caller.iter().all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'));
    if usable { std::str::from_utf8(caller).ok() } else { None }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// Sums per-release snapshots into a total.
pub(crate) fn sum(parts: &[&RequestStats]) -> RequestStats {
    let mut total = RequestStats::default();
    for part in parts {
        total.add(part);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::{LATENCY_SAMPLE_CAPACITY, LatencySample};

    #[test]
    fn the_latency_sample_keeps_the_latest_and_reads_only_what_came_after() {
        let sample = LatencySample::default();
        for millis in 1..=10u64 {
            sample.record(std::time::Duration::from_millis(millis));
        }
        let first = sample.since(0);
        assert_eq!((first.written, first.latencies_ms.len()), (10, 10));
        assert_eq!(first.latencies_ms[0], 1.0);
        sample.record(std::time::Duration::from_micros(11_500));
        assert_eq!(sample.since(first.written).latencies_ms, [11.5]);
        for _ in 0..3 * LATENCY_SAMPLE_CAPACITY {
            sample.record(std::time::Duration::from_millis(2));
        }
        let latest = sample.since(first.written);
        assert_eq!(latest.latencies_ms.len(), LATENCY_SAMPLE_CAPACITY, "bounded");
        assert!(latest.latencies_ms.iter().all(|millis| *millis == 2.0));
    }

    use super::*;

    #[test]
    fn latency_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let cases = [
            (Duration::from_micros(10), 0),
            (Duration::from_millis(1), 0),
            (Duration::from_micros(1001), 1),
            (Duration::from_millis(300), 8),
            (Duration::from_secs(10), 12),
            (Duration::from_secs(11), 13),
        ];
        for (latency, bucket) in cases {
            let counters = Counters::default();
            counters.record(Outcome::Status(200), latency);
            let snapshot = counters.snapshot();
            let first = snapshot.latency.cumulative.iter().position(|&count| count == 1);
            assert_eq!(first, Some(bucket), "{latency:?}");
            assert_eq!(snapshot.latency.count, 1);
        }
    }

    #[test]
    fn counts_from_every_thread_add_up() {
        let counters = Counters::default();
        std::thread::scope(|scope| {
            for _ in 0..N_SHARDS + 3 {
                scope.spawn(|| {
                    for _ in 0..100 {
                        counters.record(Outcome::Status(200), Duration::from_millis(2));
                    }
                });
            }
        });
        let snapshot = counters.snapshot();
        let expected = 100 * (N_SHARDS as u64 + 3);
        assert_eq!(
            (snapshot.status_2xx, snapshot.latency.count, snapshot.latency.cumulative[1]),
            (expected, expected, expected)
        );
    }

    #[test]
    fn grpc_status_values_become_codes() {
        let cases: [(&[u8], u8); 9] =
            [(b"0", 0), (b"9", 9), (b"14", 14), (b"16", 16), (b"17", 2), (b"", 2), (b"01", 2), (b" 1", 2), (b"x", 2)];
        for (value, code) in cases {
            assert_eq!(grpc_code(value), code, "{value:?}");
        }
    }

    #[test]
    fn statuses_count_by_class() {
        let counters = Counters::default();
        for status in [101, 200, 204, 302, 404, 500, 503, 999] {
            counters.record(Outcome::Status(status), Duration::ZERO);
        }
        counters.record_local(503, LocalReason::NoBackend, Duration::ZERO);
        let s = counters.snapshot();
        assert_eq!(
            (s.status_1xx, s.status_2xx, s.status_3xx, s.status_4xx, s.status_5xx, s.no_backend),
            (1, 2, 1, 1, 3, 1)
        );
    }

    #[test]
    fn callers_get_their_own_slot_until_the_table_is_full() {
        let table = CallerTable::default();
        table.counters(table.slot(b"web")).record(Outcome::Status(200), Duration::ZERO);
        table.counters(table.slot(b"web")).record(Outcome::Status(500), Duration::ZERO);
        table.counters(table.slot(b"bad name")).record(Outcome::Status(200), Duration::ZERO);
        for idx in 0..CALLER_SLOTS {
            table.counters(table.slot(format!("svc{idx}").as_bytes())).record(Outcome::Status(200), Duration::ZERO);
        }
        let snapshot = table.snapshot();
        let web = snapshot.iter().find(|c| c.caller == "web").map(|c| (c.requests.status_2xx, c.requests.status_5xx));
        assert_eq!(web, Some((1, 1)));
        assert_eq!(snapshot.len(), CALLER_SLOTS + 1);
        let other = snapshot.last().map(|c| (c.caller.as_str(), c.requests.status_2xx));
        assert_eq!(other, Some(("(other)", 2)));
    }
}
