//! `Proxy::bind` and the `ProxyHandle`: shared state, route-table generations, ejection, draining,
//! faults, stats and shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::backend::{BackendRef, BackendState};
use crate::balancer::RouteState;
use crate::budget::RetryBudget;
use crate::clock::{Clock, Nanos};
use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::fault::{Fault, Faults, Partition};
use crate::route::{BackendId, Release, RouteTable};
use crate::server::Phase;
use crate::slow::SlowestAnswer;
use crate::stats::{
    BackendStats, CallerTable, Counters, Ejection, EjectionReason, LatencySample, LatencySnapshot, ProxyStats, sum,
};
use crate::workers;

/// How long a backend removed from the table stays listed in `stats()` (so the last counts are sampled).
const RETIRED_TTL: Duration = Duration::from_secs(60);

/// Proxy-wide counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Responses from backends, by the release of the backend that answered.
    pub(crate) releases: [Counters; 2],
    /// The latest latencies of each release's requests (for canary judgements).
    pub(crate) release_latencies: [LatencySample; 2],
    /// Responses the proxy produced.
    pub(crate) local: Counters,
    pub(crate) callers: CallerTable,
    pub(crate) retries: AtomicU64,
    pub(crate) retries_denied: AtomicU64,
    /// Attempts answered 5xx whose request went on to another backend, by the release that answered.
    pub(crate) retried_5xx: [AtomicU64; 2],
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
}

/// Backends by id: the current table's, and recently removed ones.
#[derive(Debug, Default)]
struct Registry {
    live: HashMap<BackendId, BackendRef>,
    retired: Vec<(BackendRef, Nanos)>,
}

/// Everything the tasks of one proxy share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) clock: Clock,
    /// The current route snapshot; the request path only ever `load`s it.
    pub(crate) routes: ArcSwap<RouteState>,
    pub(crate) metrics: Metrics,
    pub(crate) faults: Faults,
    pub(crate) budget: RetryBudget,
    /// The slowest answer of a backend lately, which stretches the attempt timeout.
    pub(crate) slowest: SlowestAnswer,
    /// HTTP/1.1 and h2c (prior knowledge), told apart by the first bytes of a connection.
    pub(crate) server: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    /// Taken by route updates, drain and stats; never on the request path.
    registry: Mutex<Registry>,
    /// Serialises ejection decisions so that concurrent failures cannot exceed the ejection limit.
    ejection: Mutex<()>,
    /// Where requests that every backend just turned away wait for one to have room: woken one at a
    /// time, oldest first, as responses end (a backend that finished a request has taken the next
    /// connection from its accept queue), or when their back-off runs out.
    pub(crate) room: Notify,
    /// Requests waiting in `room`: a response ends with one atomic load when nobody waits.
    pub(crate) n_waiting: AtomicU32,
}

impl Shared {
    /// Installs a route-table generation. Backends keep their state (health, in-flight, pool, counters)
    /// across generations by id; new ids start in slow start unless this is the first table.
    fn apply(&self, table: &RouteTable, initial: bool) {
        let now = self.clock.now();
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut live = HashMap::with_capacity(table.backends.len());
        let mut all = Vec::with_capacity(table.backends.len());
        for backend in &table.backends {
            if live.contains_key(&backend.id) {
                tracing::warn!(backend = %backend.id, "duplicate backend in route table ignored");
                continue;
            }
            let known = registry.live.remove(&backend.id).or_else(|| {
                let idx = registry.retired.iter().position(|(state, _)| state.id == backend.id)?;
                Some(registry.retired.swap_remove(idx).0)
            });
            let state = match known {
                Some(state) if state.addr == backend.addr => {
                    state.weight.store(backend.weight, Relaxed);
                    state.removed.store(false, Relaxed);
                    state
                }
                _ => {
                    let active_since = if initial { Nanos(0) } else { Nanos(now.0.max(1)) };
                    tracing::info!(backend = %backend.id, addr = %backend.addr, "backend added");
                    Arc::new(BackendState::new(backend.id, backend.addr, backend.weight, active_since))
                }
            };
            live.insert(backend.id, state.clone());
            all.push(state);
        }
        let removed = std::mem::replace(&mut registry.live, live);
        for (_, old) in removed {
            tracing::info!(backend = %old.id, "backend removed");
            old.removed.store(true, Relaxed);
            old.close_idle();
            registry.retired.push((old, now));
        }
        registry.retired.retain(|(state, at)| now.since(*at) < RETIRED_TTL || state.in_flight.load(Relaxed) > 0);
        self.routes.store(Arc::new(RouteState::new(all, table.canary.as_ref())));
    }

    fn find(&self, id: BackendId) -> Option<BackendRef> {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        registry
            .live
            .get(&id)
            .cloned()
            .or_else(|| registry.retired.iter().find(|(state, _)| state.id == id).map(|(state, _)| state.clone()))
    }

    /// Ejects `backend` for `reason` unless that would exceed `max_ejection_percent` or leave no backend.
    pub(crate) fn try_eject(&self, backend: &BackendRef, reason: EjectionReason) {
        let policy = self.config.outlier;
        let _serial = self.ejection.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        // A draining backend gets no new request anyway.
        if backend.is_ejected(now) || backend.removed.load(Relaxed) || backend.draining.load(Relaxed) {
            return;
        }
        if !self.routes.load().may_eject(now, policy.max_ejection_percent) {
            tracing::debug!(backend = %backend.id, "ejection limit reached, backend kept");
            return;
        }
        // A backend that stayed healthy for a whole max ejection since its last one starts a new streak.
        let last_until = Nanos(backend.ejected_until.load(Relaxed));
        let streak = if last_until.0 == 0 || now.since(last_until) > policy.max_ejection {
            1
        } else {
            backend.ejection_streak.load(Relaxed).saturating_add(1)
        };
        let duration = policy.base_ejection.saturating_mul(streak).min(policy.max_ejection);
        let until = now.saturating_add(duration);
        backend.ejection_streak.store(streak, Relaxed);
        backend.ejected_until.store(until.0, Relaxed);
        backend.active_since.store(until.0, Relaxed);
        backend.consecutive_failures.store(0, Relaxed);
        // Why before how many: a reader that sees the new count also sees its reason.
        *backend.last_ejection.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((reason, policy.consecutive_failures, duration));
        backend.ejections.fetch_add(1, std::sync::atomic::Ordering::Release);
        backend.close_idle();
        crate::trace::note_ejection(backend.id, reason, now.0);
        tracing::warn!(backend = %backend.id, ejection_secs = duration.as_secs_f64(), streak, ?reason, "backend ejected");
    }
}

/// The reverse proxy. See [`Proxy::bind`].
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Validates `config`, binds the listener (so that a bind error surfaces here) and serves. In a
    /// current-thread runtime (or a multi-thread one with one worker) it serves on spawned tasks of that
    /// runtime; in a multi-thread runtime with N workers it starts N threads of its own (at most 8), each
    /// an event loop with its own `SO_REUSEPORT` listener on the same address, so that a connection and
    /// its upstream I/O stay on one thread. Backends come from `routes`: the proxy reads the current table
    /// now and every table sent later.
    pub async fn bind(
        config: ProxyConfig,
        routes: watch::Receiver<Arc<RouteTable>>,
    ) -> Result<ProxyHandle, ProxyError> {
        config.validate()?;
        let n_loops = workers::event_loops();
        let (listeners, local_addr) =
            workers::bind(config.listen, n_loops).map_err(|source| ProxyError::Bind { addr: config.listen, source })?;

        let mut server = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        server.http1().max_buf_size(config.max_request_header_bytes).header_read_timeout(None).keep_alive(true);
        server.http2().max_header_list_size(u32::try_from(config.max_request_header_bytes).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared {
            budget: RetryBudget::new(config.retry.budget_ratio, config.retry.min_retries_per_second),
            slowest: SlowestAnswer::default(),
            config,
            clock: Clock::new(),
            routes: ArcSwap::from_pointee(RouteState::default()),
            metrics: Metrics::default(),
            faults: Faults::default(),
            server,
            registry: Mutex::new(Registry::default()),
            ejection: Mutex::new(()),
            room: Notify::new(),
            n_waiting: AtomicU32::new(0),
        });
        let mut routes = routes;
        let first = routes.borrow_and_update().clone();
        shared.apply(&first, true);

        let route_task = tokio::spawn({
            let shared = shared.clone();
            async move {
                while routes.changed().await.is_ok() {
                    let table = routes.borrow_and_update().clone();
                    shared.apply(&table, false);
                }
            }
        });
        let (phase_tx, phase_rx) = watch::channel(Phase::Running);
        let (done_tx, done_rx) = mpsc::channel(1);
        let listen = shared.config.listen;
        let server_task = workers::serve(&shared, listeners, &phase_rx, &done_tx)
            .map_err(|source| ProxyError::Bind { addr: listen, source })?;
        drop(done_tx);
        tracing::info!(addr = %local_addr, event_loops = n_loops, "proxy listening");
        Ok(ProxyHandle { shared, local_addr, phase: phase_tx, done: done_rx, server_task, route_task })
    }
}

/// What a drain found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every in-flight request on the backend finished.
    Drained {
        /// How long that took.
        waited: Duration,
    },
    /// The timeout passed with requests still in flight.
    TimedOut {
        /// Requests still in flight.
        in_flight: u32,
    },
    /// The proxy does not know this backend (never in a route table, or removed over a minute ago).
    UnknownBackend,
}

/// What a shutdown found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownOutcome {
    /// Whether every client connection finished within the drain timeout (otherwise the rest were closed).
    pub graceful: bool,
    /// How long it took.
    pub waited: Duration,
}

/// Controls a running proxy. Dropping it closes every connection at once; prefer [`ProxyHandle::shutdown`].
#[derive(Debug)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    phase: watch::Sender<Phase>,
    done: mpsc::Receiver<()>,
    server_task: JoinHandle<()>,
    route_task: JoinHandle<()>,
}

impl ProxyHandle {
    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops sending new requests to `id` at once (even while it is still in the route table), closes its
    /// idle connections, and resolves when its in-flight requests have finished or `timeout` passed.
    ///
    /// The backend stays drained until it leaves the route table or [`ProxyHandle::resume`] is called; a
    /// restarted replica comes back as a new generation, which is a new backend.
    pub fn drain(&self, id: BackendId, timeout: Duration) -> impl Future<Output = DrainOutcome> + Send + 'static {
        let backend = self.shared.find(id);
        if let Some(backend) = &backend {
            backend.draining.store(true, Relaxed);
            backend.close_idle();
            tracing::info!(backend = %id, in_flight = backend.in_flight.load(Relaxed), "draining backend");
        }
        let clock = self.shared.clock;
        async move {
            let Some(backend) = backend else { return DrainOutcome::UnknownBackend };
            let start = clock.now();
            let deadline = clock.instant(start.saturating_add(timeout));
            loop {
                let mut notified = pin!(backend.drained.notified());
                notified.as_mut().enable();
                if backend.in_flight.load(Relaxed) == 0 {
                    return DrainOutcome::Drained { waited: clock.now().since(start) };
                }
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep_until(deadline) => {
                        let in_flight = backend.in_flight.load(Relaxed);
                        if in_flight == 0 {
                            return DrainOutcome::Drained { waited: clock.now().since(start) };
                        }
                        return DrainOutcome::TimedOut { in_flight };
                    }
                }
            }
        }
    }

    /// Undoes a drain (say, a planned restart was called off). Returns false for an unknown backend.
    pub fn resume(&self, id: BackendId) -> bool {
        let Some(backend) = self.shared.find(id) else { return false };
        backend.draining.store(false, Relaxed);
        true
    }

    /// Injects `fault` into new requests until `fault.until`, replacing an active fault of the same kind.
    pub fn set_fault(&self, fault: Fault) {
        tracing::debug!(kind = ?fault.kind, percent = fault.percent, "fault injection set");
        self.shared.faults.set(fault, &self.shared.clock);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// The faults injected now (those not expired), in the order they were set.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared.faults.active(&self.shared.clock)
    }

    /// Refuses requests that `partition.caller` makes (its `x-mend-caller` header) until
    /// `partition.until`: the edge caller → this service is cut, other callers pass. `clear_faults`
    /// ends it too.
    pub fn set_partition(&self, partition: &Partition) {
        tracing::debug!(caller = %partition.caller, "partition set");
        self.shared.faults.partition(partition, &self.shared.clock);
    }

    /// Ends the partition of `caller` now; false if there was none.
    pub fn heal_partition(&self, caller: &str) -> bool {
        self.shared.faults.heal_partition(caller, &self.shared.clock)
    }

    /// The partitions active now.
    pub fn partitions(&self) -> Vec<Partition> {
        self.shared.faults.partitions(&self.shared.clock)
    }

    /// The latencies of `release`'s requests recorded after the first `start` (0 for all it keeps; the
    /// snapshot's `written` for what comes after it), at most the latest
    /// [`LATENCY_SAMPLE_CAPACITY`](crate::LATENCY_SAMPLE_CAPACITY).
    pub fn latency_sample(&self, release: Release, start: u64) -> LatencySnapshot {
        self.shared.metrics.release_latencies[release.idx()].since(start)
    }

    /// A snapshot of every counter.
    pub fn stats(&self) -> ProxyStats {
        let shared = &self.shared;
        let metrics = &shared.metrics;
        let now = shared.clock.now();
        let routes = shared.routes.load();
        let mut backends: Vec<BackendStats> = routes.all.iter().map(|backend| backend_stats(backend, now)).collect();
        {
            let registry = shared.registry.lock().unwrap_or_else(PoisonError::into_inner);
            backends.extend(registry.retired.iter().map(|(backend, _)| backend_stats(backend, now)));
        }
        let mut stable = metrics.releases[0].snapshot();
        let mut canary = metrics.releases[1].snapshot();
        stable.retried_5xx = metrics.retried_5xx[0].load(Relaxed);
        canary.retried_5xx = metrics.retried_5xx[1].load(Relaxed);
        let local = metrics.local.snapshot();
        ProxyStats {
            total: sum(&[&stable, &canary, &local]),
            stable,
            canary,
            local,
            backends,
            callers: metrics.callers.snapshot(),
            retries: metrics.retries.load(Relaxed),
            retries_denied: metrics.retries_denied.load(Relaxed),
            retries_on_5xx: metrics.retried_5xx.iter().map(|count| count.load(Relaxed)).sum(),
            connections_accepted: metrics.connections_accepted.load(Relaxed),
            connections_open: metrics.connections_open.load(Relaxed),
        }
    }

    /// Stops accepting, lets in-flight requests finish (closing idle connections at once) for up to the
    /// configured `drain_timeout`, then closes whatever is left.
    pub async fn shutdown(mut self) -> ShutdownOutcome {
        let start = self.shared.clock.now();
        self.phase.send_replace(Phase::Draining);
        let server_task = std::mem::replace(&mut self.server_task, tokio::spawn(async {}));
        if let Err(error) = server_task.await {
            tracing::warn!(error = %error, "accept loop failed");
        }
        let graceful = tokio::time::timeout(self.shared.config.drain_timeout, self.done.recv()).await.is_ok();
        if !graceful {
            self.phase.send_replace(Phase::Closing);
            let _closed = tokio::time::timeout(Duration::from_secs(1), self.done.recv()).await;
        }
        let waited = self.shared.clock.now().since(start);
        tracing::info!(graceful, waited_secs = waited.as_secs_f64(), "proxy stopped");
        ShutdownOutcome { graceful, waited }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Closing);
        self.server_task.abort();
        self.route_task.abort();
    }
}

fn backend_stats(backend: &BackendState, now: Nanos) -> BackendStats {
    BackendStats {
        id: backend.id,
        addr: backend.addr,
        in_table: !backend.removed.load(Relaxed),
        draining: backend.draining.load(Relaxed),
        ejected: backend.is_ejected(now),
        in_flight: backend.in_flight.load(Relaxed),
        attempts: backend.attempts.snapshot(),
        retries: backend.retries.load(Relaxed),
        // Acquire: pairs with the ejection's Release, so that `last_ejection` is at least as new.
        ejections: backend.ejections.load(std::sync::atomic::Ordering::Acquire),
        last_ejection: backend.last_ejection.lock().unwrap_or_else(PoisonError::into_inner).map(
            |(reason, consecutive_failures, duration)| Ejection {
                reason,
                consecutive_failures,
                duration,
                remaining: Nanos(backend.ejected_until.load(Relaxed)).since(now),
                streak: backend.ejection_streak.load(Relaxed),
            },
        ),
    }
}
