//! Per-backend state that outlives route-table generations: in-flight count, drain flag, outlier state,
//! slow start, the idle connection pool and the counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Nanos;
use crate::route::BackendId;
use crate::stats::{Counters, EjectionReason, N_SHARDS, thread_pinned, thread_shard};
use crate::upstream::Conn;
use crate::upstream_h2::H2Sender;

/// A backend as the proxy tracks it. Shared (`Arc`) by the route snapshots and the requests in flight.
#[derive(Debug)]
pub(crate) struct BackendState {
    pub(crate) id: BackendId,
    pub(crate) addr: SocketAddr,
    /// Relative weight from the route table (updated in place when only the weight changes).
    pub(crate) weight: AtomicU32,
    /// Attempts in flight, until their response body ends.
    pub(crate) in_flight: AtomicU32,
    /// Set by `drain`: no new attempt is sent here.
    pub(crate) draining: AtomicBool,
    /// Woken when the in-flight count reaches zero while draining.
    pub(crate) drained: Notify,
    /// Failures in a row (5xx, connect failure, reset, timeout, a cut-off body); a success resets it.
    pub(crate) consecutive_failures: AtomicU32,
    /// Ejected until this time (nanoseconds on the proxy clock; 0 = never ejected).
    pub(crate) ejected_until: AtomicU64,
    /// Ejections in a row, for `base × n`; reset when a backend stays healthy long enough.
    pub(crate) ejection_streak: AtomicU32,
    /// Slow start ramps from this time (a new generation, or the end of an ejection).
    pub(crate) active_since: AtomicU64,
    /// Set when the backend left the route table.
    pub(crate) removed: AtomicBool,
    pub(crate) attempts: Counters,
    pub(crate) retries: AtomicU64,
    pub(crate) ejections: AtomicU64,
    /// The latest ejection: why, after how many failures, for how long (written only by ejections,
    /// which are serialised; read by stats).
    pub(crate) last_ejection: Mutex<Option<(EjectionReason, u32, Duration)>>,
    /// Idle connections, sharded by thread like the counters: a request looks in its own thread's shard
    /// first, so two worker threads do not pass one mutex and vector back and forth.
    pool: Box<[Mutex<Vec<IdleConnection>>; N_SHARDS]>,
    /// HTTP/2 backends: the connection of each event loop (by shard, as the pool), shared by its requests.
    h2: Box<[Mutex<Option<H2Sender>>; N_SHARDS]>,
}

#[derive(Debug)]
struct IdleConnection {
    conn: Box<Conn>,
    since: Nanos,
}

impl BackendState {
    pub(crate) fn new(id: BackendId, addr: SocketAddr, weight: u32, active_since: Nanos) -> Self {
        Self {
            id,
            addr,
            weight: AtomicU32::new(weight),
            in_flight: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            drained: Notify::new(),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejection_streak: AtomicU32::new(0),
            active_since: AtomicU64::new(active_since.0),
            removed: AtomicBool::new(false),
            attempts: Counters::default(),
            retries: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            last_ejection: Mutex::new(None),
            pool: Box::new(std::array::from_fn(|_| Mutex::new(Vec::new()))),
            h2: Box::new(std::array::from_fn(|_| Mutex::new(None))),
        }
    }

    /// Whether a new attempt may go here now; in `panic` (too few backends free of ejection), an ejected
    /// backend may too.
    pub(crate) fn is_eligible(&self, now: Nanos, panic: bool) -> bool {
        !self.draining.load(Relaxed) && (panic || now.0 >= self.ejected_until.load(Relaxed))
    }

    pub(crate) fn is_ejected(&self, now: Nanos) -> bool {
        now.0 < self.ejected_until.load(Relaxed)
    }

    /// Weight adjusted for slow start, in thousandths: ramps linearly from 10 % to 100 % of the weight
    /// over `window` after `active_since`.
    pub(crate) fn effective_weight(&self, now: Nanos, window: Duration) -> u64 {
        let full = u64::from(self.weight.load(Relaxed)) * 1000;
        let window_nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let active_since = self.active_since.load(Relaxed);
        let elapsed = now.0.saturating_sub(active_since);
        // 0 marks the backends of the first table: they are not new, so they do not ramp.
        if active_since == 0 || window_nanos == 0 || elapsed >= window_nanos {
            return full;
        }
        let ramped = u64::try_from(u128::from(full) * u128::from(elapsed) / u128::from(window_nanos)).unwrap_or(full);
        ramped.max(full / 10).max(1)
    }

    /// Counts an attempt starting; it ends when the returned slot is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Counts an attempt ending, and wakes a drain waiting for the last one.
    fn end(&self) {
        let before = self.in_flight.fetch_sub(1, Relaxed);
        if before == 1 && self.draining.load(Relaxed) {
            self.drained.notify_waiters();
        }
    }

    /// An idle connection to reuse, most recently used first, from this thread's shard and then (unless
    /// the thread is a proxy event loop, whose connections belong to its own runtime) the others;
    /// connections idle longer than `max_idle` or closed by the backend are dropped on the way.
    pub(crate) fn checkout(&self, now: Nanos, max_idle: Duration) -> Option<Box<Conn>> {
        let max_idle = u64::try_from(max_idle.as_nanos()).unwrap_or(u64::MAX);
        let own = thread_shard();
        let n_shards = if thread_pinned() { 1 } else { N_SHARDS };
        for shard_idx in (0..n_shards).map(|offset| (own + offset) % N_SHARDS) {
            let shard = &self.pool[shard_idx];
            loop {
                let Some(idle) = shard.lock().unwrap_or_else(PoisonError::into_inner).pop() else { break };
                // Checked outside the lock: the check may cost a system call.
                if now.0.saturating_sub(idle.since.0) <= max_idle && idle.conn.is_reusable() {
                    return Some(idle.conn);
                }
            }
        }
        None
    }

    /// Returns a connection whose exchange finished cleanly to the pool, unless the backend is leaving.
    pub(crate) fn checkin(&self, conn: Box<Conn>, now: Nanos, max_idle: usize) {
        if self.draining.load(Relaxed) || self.removed.load(Relaxed) {
            return;
        }
        let mut pool = self.pool[thread_shard()].lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < max_idle {
            pool.push(IdleConnection { conn, since: now });
        }
    }

    /// Closes every idle connection (drain, ejection, removal); an HTTP/2 connection is let go, and
    /// closes once its streams in flight have ended.
    pub(crate) fn close_idle(&self) {
        for shard in self.pool.iter() {
            let idle = std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner));
            drop(idle);
        }
        for shard in self.h2.iter() {
            let sender = shard.lock().unwrap_or_else(PoisonError::into_inner).take();
            drop(sender);
        }
    }

    /// This event loop's HTTP/2 connection to the backend, if it has a live one.
    pub(crate) fn h2_sender(&self) -> Option<H2Sender> {
        let mut slot = self.h2[thread_shard()].lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Keeps a new HTTP/2 connection for this event loop's next requests, unless the backend is leaving.
    pub(crate) fn h2_keep(&self, sender: H2Sender) {
        if self.draining.load(Relaxed) || self.removed.load(Relaxed) {
            return;
        }
        *self.h2[thread_shard()].lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
    }

    /// Drops this event loop's HTTP/2 connection (it closed).
    pub(crate) fn h2_forget(&self) {
        self.h2[thread_shard()].lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Records the outcome of an attempt for outlier detection; returns true when this failure reaches
    /// the ejection threshold.
    pub(crate) fn record_health(&self, failed: bool, threshold: u32) -> bool {
        if failed {
            self.consecutive_failures.fetch_add(1, Relaxed) + 1 >= threshold
        } else {
            if self.consecutive_failures.load(Relaxed) != 0 {
                self.consecutive_failures.store(0, Relaxed);
            }
            false
        }
    }
}

/// Shared handle to a backend.
pub(crate) type BackendRef = Arc<BackendState>;

/// One attempt counted in its backend's in-flight requests until dropped. A guard rather than paired
/// calls because a request future can be dropped anywhere (its client went away, a deadline fired), and
/// a leaked count would hold a drain for its whole timeout and skew least-request forever.
#[derive(Debug)]
pub(crate) struct InFlight(BackendRef);

impl InFlight {
    pub(crate) fn backend(&self) -> &BackendRef {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Release;

    fn backend(weight: u32, active_since: u64) -> BackendState {
        let id = BackendId { release: Release::Stable, index: 0, generation: 1 };
        BackendState::new(id, SocketAddr::from(([127, 0, 0, 1], 1)), weight, Nanos(active_since))
    }

    #[test]
    fn slow_start_ramps_from_a_tenth_to_the_full_weight() {
        let window = Duration::from_secs(10);
        let second = 1_000_000_000;
        let cases = [(0, 200), (second, 200), (5 * second, 1000), (10 * second, 2000), (60 * second, 2000)];
        for (elapsed, expected) in cases {
            assert_eq!(backend(2, 1).effective_weight(Nanos(1 + elapsed), window), expected, "{elapsed}");
        }
        assert_eq!(backend(2, 1).effective_weight(Nanos(1), Duration::ZERO), 2000);
        assert_eq!(backend(2, 0).effective_weight(Nanos(1), window), 2000, "first-table backends do not ramp");
    }

    #[test]
    fn ejection_threshold_counts_failures_in_a_row() {
        let state = backend(1, 0);
        let seen: Vec<bool> =
            [true, true, false, true, true, true].iter().map(|&f| state.record_health(f, 3)).collect();
        assert_eq!(seen, [false, false, false, false, false, true]);
    }
}
