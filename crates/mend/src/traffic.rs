//! Traffic: one mend-proxy per service with `[service.NAME.proxy]`, fed with the service's ready replicas,
//! draining replicas before planned stops, sampled into the series store every second, and steered by
//! the chaos and canary API. What changes in a proxy (faults, the canary's share, ejections) is recorded
//! as events (`events.rs`) and shown in the services' status.

mod events;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use mend_config::{Config, Service};
use mend_observe::series::SeriesStore;
use mend_proxy::{
    Backend, BackendId, CanarySplit, DrainOutcome, Fault, FaultKind, GRPC_CODES, LATENCY_BUCKETS, LoadBalancing, Proxy,
    ProxyConfig, ProxyHandle, Release, RequestStats, RouteTable, UpstreamProtocol,
};
use mend_supervisor::{ReplicaStatus, ServiceHandle, Supervisor, TrafficControl};
use mend_types::{Clock, Event, EventKind, EventSink, ReleaseName, ReleaseRole, ServiceName, Timestamp};

use self::events::{ChaosLog, EjectionLog};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The proxy of one service.
pub(crate) struct ServiceProxy {
    /// The service's config, with the replica count it is scaled to (releases follow from it).
    service: std::sync::RwLock<Arc<Service>>,
    /// The listener and its settings: a reload that changes the proxy table swaps in a new one.
    bound: arc_swap::ArcSwap<Bound>,
    routes: watch::Sender<Arc<RouteTable>>,
    /// Ejections as last sampled, their running total, and the events they make.
    ejections: Mutex<EjectionLog>,
    /// The faults injected, to record when each ends.
    chaos: Mutex<ChaosLog>,
    /// The canary's share of unpinned requests, in percent (set by the API at run time).
    canary_weight: watch::Sender<u8>,
}

/// How long a drain waits for another replica to be routable before it takes this one out anyway.
const WAIT_FOR_ANOTHER_BACKEND: Duration = Duration::from_secs(10);

/// The proxy pool of a replica running `release`: the canary's if it runs the service's canary release.
fn release(service: &Service, release: &ReleaseName) -> Release {
    match service.role_of(release) {
        ReleaseRole::Stable => Release::Stable,
        ReleaseRole::Canary => Release::Canary,
    }
}

/// mend-proxy's config for a service: its defaults, overridden by what the file sets.
fn proxy_config(settings: &mend_config::ProxySettings) -> ProxyConfig {
    let mut config = ProxyConfig::new(settings.listen);
    if let Some(load_balancing) = settings.load_balancing {
        config.load_balancing = match load_balancing {
            mend_config::LoadBalancing::LeastRequest => LoadBalancing::LeastRequest,
            mend_config::LoadBalancing::RoundRobin => LoadBalancing::RoundRobin,
        };
    }
    let set = |field: &mut Duration, value: Option<Duration>| {
        if let Some(value) = value {
            *field = value;
        }
    };
    // The file's `connect_timeout` holds for every replica; unset, replicas (on loopback) get mend-proxy's
    // loopback default.
    set(&mut config.connect_timeout, settings.connect_timeout);
    set(&mut config.loopback_connect_timeout, settings.connect_timeout);
    set(&mut config.attempt_timeout, settings.attempt_timeout);
    set(&mut config.request_timeout, settings.request_timeout);
    set(&mut config.upstream_read_timeout, settings.read_timeout);
    set(&mut config.client_idle_timeout, settings.idle_timeout);
    set(&mut config.client_header_timeout, settings.header_timeout);
    set(&mut config.outlier.base_ejection, settings.base_ejection);
    set(&mut config.outlier.max_ejection, settings.max_ejection);
    set(&mut config.slow_start, settings.slow_start);
    set(&mut config.drain_timeout, settings.drain_timeout);
    if let Some(bytes) = settings.max_header_bytes {
        config.max_request_header_bytes = bytes;
    }
    if let Some(bytes) = settings.max_body_bytes {
        config.max_request_body_bytes = bytes;
    }
    if let Some(bytes) = settings.retry_buffer_bytes {
        config.retry_buffer_bytes = bytes;
    }
    if let Some(attempts) = settings.max_attempts {
        config.retry.max_attempts = attempts;
    }
    if let Some(budget) = settings.retry_budget {
        config.retry.budget_ratio = budget;
    }
    if let Some(retry_on) = &settings.retry_on {
        config.retry.retry_on = mend_proxy::RetryOn {
            server_errors: retry_on.server_errors,
            gateway_errors: retry_on.gateway_errors,
            reset: retry_on.reset,
            connect_failure: retry_on.connect_failure,
            // Validated as 5xx statuses, so nothing is left out.
            statuses: mend_proxy::StatusSet::of(retry_on.statuses.iter().copied()).unwrap_or_default(),
        };
    }
    if let Some(methods) = &settings.retry_methods {
        // Validated against the same names.
        config.retry.retry_methods =
            mend_proxy::MethodSet::of(methods.iter().map(String::as_str)).unwrap_or(mend_proxy::MethodSet::IDEMPOTENT);
    }
    if let Some(failures) = settings.ejection_failures {
        config.outlier.consecutive_failures = failures;
    }
    if let Some(percent) = settings.max_ejection_percent {
        config.outlier.max_ejection_percent = percent;
    }
    if let Some(protocol) = settings.upstream_protocol {
        config.upstream_protocol = match protocol {
            mend_config::UpstreamProtocol::Http1 => UpstreamProtocol::Http1,
            mend_config::UpstreamProtocol::H2c => UpstreamProtocol::H2c,
        };
    }
    config
}

/// A bound mend-proxy with the settings it was bound with.
pub(crate) struct Bound {
    handle: ProxyHandle,
    settings: mend_config::ProxySettings,
    drain_timeout: Duration,
}

impl Bound {
    async fn bind(
        service: &Service,
        settings: &mend_config::ProxySettings,
        routes: watch::Receiver<Arc<RouteTable>>,
        tracing: Option<&TraceSource>,
        clock: &dyn Clock,
    ) -> anyhow::Result<Self> {
        let mut proxy_config = proxy_config(settings);
        proxy_config.tracing = tracing.map(|source| proxy_tracing(source, service, settings, clock));
        let drain_timeout = proxy_config.drain_timeout;
        let handle = Proxy::bind(proxy_config, routes).await.with_context(|| {
            format!("cannot start the proxy of service {} (service.{}.proxy)", service.name, service.name)
        })?;
        Ok(Self { handle, settings: settings.clone(), drain_timeout })
    }
}

/// A new listener for a service's changed proxy table, bound (before anything changes) and not yet
/// serving; [`Traffic::swap`] puts it in place.
pub(crate) struct Rebound {
    service: ServiceName,
    bound: Bound,
}

impl Rebound {
    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        self.bound.handle.local_addr()
    }
}

/// What a proxy bound now or later (a reload adds services and rebinds proxies) traces with: the
/// daemon's span recorder and the `[tracing]` table.
pub(crate) struct TraceSource {
    pub(crate) recorder: mend_trace::SpanRecorder,
    pub(crate) tracing: mend_config::Tracing,
}

/// How a service's proxy traces (`[tracing]`, with the service's `proxy.trace_ratio` over its ratio).
fn proxy_tracing(
    source: &TraceSource,
    service: &Service,
    settings: &mend_config::ProxySettings,
    clock: &dyn Clock,
) -> mend_proxy::ProxyTracing {
    let tracing = &source.tracing;
    mend_proxy::ProxyTracing {
        service: service.name.to_string(),
        sampling: mend_trace::Sampling {
            ratio: settings.trace_ratio.unwrap_or(tracing.ratio),
            slow: tracing.slow,
            keep_errors: tracing.keep_errors,
        },
        recorder: source.recorder.clone(),
        // The proxy's clock starts at its bind, just after this: spans' times are this plus that clock.
        unix_nanos_at_bind: u64::try_from(clock.wall().as_millis()).unwrap_or(0).saturating_mul(1_000_000),
    }
}

impl ServiceProxy {
    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> std::net::SocketAddr {
        self.bound.load().handle.local_addr()
    }

    fn handle(&self) -> Arc<Bound> {
        self.bound.load_full()
    }

    fn service(&self) -> Arc<Service> {
        self.service.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The id under which process `generation` of replica `index` is in the route table (its pool can
    /// change while it runs: a promoted canary becomes stable).
    fn backend_id(&self, index: u32, generation: u64) -> Option<BackendId> {
        let table = self.routes.borrow();
        table
            .backends
            .iter()
            .find(|backend| backend.id.index == index && backend.id.generation == generation)
            .map(|backend| backend.id)
    }
}

impl TrafficControl for ServiceProxy {
    fn drain(
        self: Arc<Self>,
        release_name: ReleaseName,
        index: u32,
        generation: u64,
        wait_for_others: bool,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let config = self.service();
        let id = self.backend_id(index, generation).unwrap_or(BackendId {
            release: release(&config, &release_name),
            index,
            generation,
        });
        let service = config.name.clone();
        let mut routes = self.routes.subscribe();
        let others_configured = wait_for_others && config.total_replicas() > 1;
        Box::pin(async move {
            // Taking the last routable replica out would turn requests away (503): during a rolling
            // restart, wait until the replica restarted before this one is back in the table.
            if others_configured {
                let another = |table: &RouteTable| table.backends.iter().any(|backend| backend.id.index != index);
                let found = tokio::time::timeout(WAIT_FOR_ANOTHER_BACKEND, async {
                    routes.wait_for(|table| another(table)).await.is_ok()
                })
                .await
                .unwrap_or(false);
                if !found {
                    tracing::warn!(service = %service, backend = %id, "no other replica is routable; draining anyway");
                } else {
                    // The proxy applies a new table on its own task; give it a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let bound = self.handle();
            match bound.handle.drain(id, bound.drain_timeout).await {
                DrainOutcome::Drained { waited } => {
                    tracing::info!(service = %service, backend = %id, waited_ms = waited.as_millis() as u64, "drained");
                }
                DrainOutcome::TimedOut { in_flight } => {
                    tracing::warn!(service = %service, backend = %id, in_flight, "drain timed out");
                }
                DrainOutcome::UnknownBackend => {}
            }
        })
    }
}

/// The route table of a service from its replicas' statuses: ready replicas only.
fn route_table(service: &Service, statuses: &[ReplicaStatus], canary_weight: u8) -> RouteTable {
    let backends = statuses
        .iter()
        .filter(|status| status.ready)
        .filter_map(|status| {
            let (pid, port) = (status.pid?, status.port?);
            Some(Backend {
                id: BackendId {
                    release: release(service, &status.release),
                    index: status.index,
                    generation: u64::from(pid),
                },
                addr: ([127, 0, 0, 1], port).into(),
                weight: 1,
            })
        })
        .collect();
    let canary = service.canary.as_ref().map(|canary| CanarySplit {
        weight_percent: canary_weight,
        pin_header: canary.pin_header.clone(),
        pin_cookie: canary.pin_cookie.clone(),
    });
    RouteTable { backends, canary }
}

/// Every proxy of the daemon (a reload adds and removes some).
pub(crate) struct Traffic {
    proxies: RwLock<HashMap<ServiceName, Arc<ServiceProxy>>>,
    /// Each proxy's follower of its service's replicas.
    tasks: Mutex<HashMap<ServiceName, JoinHandle<()>>>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    /// What proxies trace with (`None`: tracing is off).
    tracing: Option<TraceSource>,
}

/// Locks a log; a panic elsewhere while it was held leaves it usable (it only loses an event).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Traffic {
    /// Binds a proxy for every service that has one; nothing is served until replicas are ready. What
    /// changes in the proxies goes to `events`.
    pub(crate) async fn bind(
        config: &Config,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
        spans: Option<&mend_trace::SpanRecorder>,
    ) -> anyhow::Result<Self> {
        let tracing = spans.map(|recorder| TraceSource { recorder: recorder.clone(), tracing: config.tracing.clone() });
        let mut proxies = HashMap::new();
        for service in &config.services {
            if let Some(proxy) = Self::bind_one(service, tracing.as_ref(), clock.as_ref()).await? {
                proxies.insert(service.name.clone(), proxy);
            }
        }
        Ok(Self { proxies: RwLock::new(proxies), tasks: Mutex::new(HashMap::new()), events, clock, tracing })
    }

    /// Binds the proxy of a service a reload adds, if it has one, traced as the others; it serves
    /// nothing until [`Traffic::add`] feeds it.
    pub(crate) async fn bind_added(&self, service: &Service) -> anyhow::Result<Option<Arc<ServiceProxy>>> {
        Self::bind_one(service, self.tracing.as_ref(), self.clock.as_ref()).await
    }

    /// Binds the proxy of `service`, if it has one; it serves nothing until [`Traffic::add`] feeds it.
    async fn bind_one(
        service: &Service,
        tracing: Option<&TraceSource>,
        clock: &dyn Clock,
    ) -> anyhow::Result<Option<Arc<ServiceProxy>>> {
        let Some(settings) = &service.proxy else { return Ok(None) };
        let (routes, routes_rx) = watch::channel(Arc::new(RouteTable::default()));
        let bound = Bound::bind(service, settings, routes_rx, tracing, clock).await?;
        let proxy = ServiceProxy {
            service: std::sync::RwLock::new(Arc::new(service.clone())),
            bound: arc_swap::ArcSwap::from_pointee(bound),
            routes,
            ejections: Mutex::new(EjectionLog::default()),
            chaos: Mutex::new(ChaosLog::default()),
            canary_weight: watch::channel(service.canary.as_ref().map_or(0, |canary| canary.weight_percent)).0,
        };
        Ok(Some(Arc::new(proxy)))
    }

    /// Serves a service added by a reload (already supervised) through `proxy`, bound by
    /// [`Traffic::bind_one`].
    pub(crate) fn add(&self, proxy: Arc<ServiceProxy>, supervisor: &Arc<Supervisor>) {
        let name = proxy.service().name.clone();
        let task = tokio::spawn(follow_members(proxy.clone(), supervisor.clone(), name.clone()));
        lock(&self.tasks).insert(name.clone(), task);
        self.proxies.write().unwrap_or_else(PoisonError::into_inner).insert(name, proxy);
    }

    /// Closes the proxy of a service a reload removed (its replicas already drained and stopped): the
    /// listener closes, requests in flight finish (bounded by the drain timeout). Its statistics stop.
    pub(crate) async fn remove(&self, service: &str) {
        let Some(name) = self.service_proxy(service).map(|(name, _)| name) else { return };
        if let Some(task) = lock(&self.tasks).remove(&name) {
            task.abort();
        }
        let Some(proxy) = self.proxies.write().unwrap_or_else(PoisonError::into_inner).remove(&name) else { return };
        close(proxy).await;
    }

    /// Binds a new listener for `service`'s changed proxy table (which may listen where the running one
    /// does: mend-proxy's listeners share their port), beside the running one, fed the same route
    /// table. None when the service has no proxy running, or its table did not change.
    pub(crate) async fn rebind(&self, service: &Service) -> anyhow::Result<Option<Rebound>> {
        let (Some(settings), Some((name, proxy))) = (&service.proxy, self.service_proxy(service.name.as_str())) else {
            return Ok(None);
        };
        if proxy.handle().settings == *settings {
            return Ok(None);
        }
        let bound =
            Bound::bind(service, settings, proxy.routes.subscribe(), self.tracing.as_ref(), self.clock.as_ref())
                .await?;
        Ok(Some(Rebound { service: name, bound }))
    }

    /// Puts a listener bound by [`Traffic::rebind`] in place: new connections go to it, with its
    /// settings, faults injected now carry over; then the old listener closes, its requests in flight
    /// finishing (bounded by its drain timeout). Returns once the old one has closed.
    pub(crate) async fn swap(&self, rebound: Rebound) {
        let Some((_, proxy)) = self.service_proxy(rebound.service.as_str()) else { return };
        let new = Arc::new(rebound.bound);
        let old = proxy.bound.swap(new.clone());
        for fault in old.handle.faults() {
            new.handle.set_fault(fault);
        }
        for partition in old.handle.partitions() {
            new.handle.set_partition(&partition);
        }
        drop(proxy);
        // Held a moment longer by whoever loaded it just before the swap.
        for _ in 0..100 {
            if Arc::strong_count(&old) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Ok(old) = Arc::try_unwrap(old) {
            old.handle.shutdown().await;
        }
    }

    fn service_proxy(&self, service: &str) -> Option<(ServiceName, Arc<ServiceProxy>)> {
        let proxies = self.proxies.read().unwrap_or_else(PoisonError::into_inner);
        proxies.iter().find(|(name, _)| name.as_str() == service).map(|(name, proxy)| (name.clone(), proxy.clone()))
    }

    fn all(&self) -> Vec<(ServiceName, Arc<ServiceProxy>)> {
        let proxies = self.proxies.read().unwrap_or_else(PoisonError::into_inner);
        proxies.iter().map(|(name, proxy)| (name.clone(), proxy.clone())).collect()
    }

    /// Records `events`, each with a log line in the same words.
    fn record(&self, events: Vec<Event>) {
        for event in events {
            let service = event.service.as_ref().map(ToString::to_string).unwrap_or_default();
            match (event.kind, event.replica) {
                // Chaos on purpose degrades the service: a warning.
                (EventKind::ChaosStarted, _) => {
                    tracing::warn!(service = %service, kind = %event.kind, "{}", event.message);
                }
                (_, Some(replica)) => {
                    tracing::info!(service = %service, replica, kind = %event.kind, "{}", event.message);
                }
                (_, None) => tracing::info!(service = %service, kind = %event.kind, "{}", event.message),
            }
            self.events.emit(event);
        }
    }

    /// The longest drain any proxy may take (zero without proxies).
    pub(crate) fn longest_drain(&self) -> Duration {
        self.all().iter().map(|(_, proxy)| proxy.handle().drain_timeout).max().unwrap_or_default()
    }

    /// The drain hooks the supervisor calls before planned stops.
    pub(crate) fn controls(&self) -> HashMap<ServiceName, Arc<dyn TrafficControl>> {
        self.all().into_iter().map(|(name, proxy)| (name, proxy as Arc<dyn TrafficControl>)).collect()
    }

    /// Takes process `pid` of replica `index` of `service` out of its proxy's rotation (a healing action's
    /// `eject`): new requests go elsewhere at once; the future resolves when its requests in flight have
    /// ended (bounded by the drain timeout). None when the service has no proxy.
    pub(crate) fn eject(
        &self,
        service: &str,
        index: u32,
        pid: u32,
    ) -> Option<impl Future<Output = DrainOutcome> + Send + 'static> {
        let (_, proxy) = self.service_proxy(service)?;
        let generation = u64::from(pid);
        let id =
            proxy.backend_id(index, generation).unwrap_or(BackendId { release: Release::Stable, index, generation });
        let bound = proxy.handle();
        Some(async move { bound.handle.drain(id, bound.drain_timeout).await })
    }

    /// Puts an ejected replica's process back in rotation; false when it is no longer in the table.
    pub(crate) fn readmit(&self, service: &str, index: u32, pid: u32) -> bool {
        let Some((_, proxy)) = self.service_proxy(service) else { return false };
        // An ejected backend stays in the route table (ejection is the proxy's, not the table's).
        let generation = u64::from(pid);
        let id =
            proxy.backend_id(index, generation).unwrap_or(BackendId { release: Release::Stable, index, generation });
        proxy.handle().handle.resume(id)
    }

    /// The proxy of `service`, if it has one.
    pub(crate) fn proxy(&self, service: &str) -> Option<ProxyRef> {
        self.service_proxy(service).map(|(_, proxy)| ProxyRef(proxy.handle()))
    }

    /// Keeps every proxy's route table in step with its service's replicas, as they change state and
    /// as the service is scaled.
    pub(crate) fn follow(&mut self, supervisor: &Arc<Supervisor>) {
        for (name, proxy) in self.all() {
            let task = tokio::spawn(follow_members(proxy, supervisor.clone(), name.clone()));
            lock(&self.tasks).insert(name, task);
        }
    }

    /// Writes every proxy's counters into the series store, and records what changed since the last
    /// sample: ejections and returns, faults that expired.
    pub(crate) fn sample(&self, series: &RwLock<SeriesStore>) {
        let (now, at) = (self.clock.now(), self.clock.wall());
        let mut events = Vec::new();
        // The bookkeeping first, without the store's lock (queries and the detect loop wait on it).
        let proxies = self.all();
        let looks: Vec<_> = proxies
            .iter()
            .map(|(name, proxy)| {
                let stats = proxy.handle().handle.stats();
                let mut ejections = lock(&proxy.ejections);
                events.extend(ejections.observe(name, &stats, now, at));
                let total = ejections.total();
                drop(ejections);
                events.extend(lock(&proxy.chaos).expire(name, now, at));
                (name, stats, total)
            })
            .collect();
        if let Ok(mut store) = series.write() {
            for (name, stats, total) in &looks {
                record(&mut store, name.as_str(), stats, at);
                let labels = store.labels("mend_proxy_ejections_total", &[("service", name.as_str())]);
                let _ = store.append(&labels, at, *total as f64);
            }
        }
        self.record(events);
    }

    /// Stops every proxy (in-flight requests finish, bounded by the drain timeout).
    pub(crate) async fn shutdown(self) {
        for (_, task) in lock(&self.tasks).drain() {
            task.abort();
        }
        let proxies = std::mem::take(&mut *self.proxies.write().unwrap_or_else(PoisonError::into_inner));
        for (_, proxy) in proxies {
            close(proxy).await;
        }
    }
}

/// Stops a proxy once nothing else holds it: the listener closes, requests in flight finish (bounded by
/// the drain timeout).
async fn close(proxy: Arc<ServiceProxy>) {
    // Replica runners hold the proxy for draining until their tasks end (and a reader of its statistics
    // for a moment).
    for _ in 0..100 {
        if Arc::strong_count(&proxy) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match Arc::try_unwrap(proxy) {
        Ok(proxy) => match Arc::try_unwrap(proxy.bound.into_inner()) {
            Ok(bound) => {
                bound.handle.shutdown().await;
            }
            Err(bound) => bound.handle.clear_faults(),
        },
        Err(proxy) => proxy.handle().handle.clear_faults(),
    }
}

/// A proxy's handle, held while in use (a reload may remove or rebind the proxy meanwhile).
pub(crate) struct ProxyRef(Arc<Bound>);

impl std::ops::Deref for ProxyRef {
    type Target = ProxyHandle;

    fn deref(&self) -> &ProxyHandle {
        &self.0.handle
    }
}

fn watchers(service: &ServiceHandle) -> Vec<watch::Receiver<ReplicaStatus>> {
    service.replicas().iter().map(|replica| replica.watch()).collect()
}

/// Follows the replicas of `name`, starting over with the new set whenever the service is scaled.
async fn follow_members(proxy: Arc<ServiceProxy>, supervisor: Arc<Supervisor>, name: ServiceName) {
    let Some(service) = supervisor.service(name.as_str()) else { return };
    let mut membership = service.membership();
    loop {
        membership.borrow_and_update();
        *proxy.service.write().unwrap_or_else(std::sync::PoisonError::into_inner) = service.config();
        tokio::select! {
            () = follow_service(proxy.clone(), watchers(&service)) => {
                // Every replica's task ended (none left, or shutdown): wait for new members.
                if membership.changed().await.is_err() {
                    return;
                }
            }
            changed = membership.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

async fn follow_service(proxy: Arc<ServiceProxy>, replicas: Vec<watch::Receiver<ReplicaStatus>>) {
    let (changed, mut changes) = mpsc::channel::<()>(1);
    // Aborted however this future ends: it is dropped when the service is scaled.
    let mut forwarders = AbortOnDrop(Vec::new());
    for mut replica in replicas.iter().cloned() {
        let changed = changed.clone();
        forwarders.0.push(tokio::spawn(async move {
            while replica.changed().await.is_ok() {
                // A full channel already holds a pending rebuild.
                let _ = changed.try_send(());
            }
        }));
    }
    drop(changed);
    let mut weight = proxy.canary_weight.subscribe();
    loop {
        let statuses: Vec<ReplicaStatus> = replicas.iter().map(|r| r.borrow().clone()).collect();
        let table = route_table(&proxy.service(), &statuses, *weight.borrow_and_update());
        proxy.routes.send_if_modified(|current| {
            let changed = **current != table;
            if changed {
                *current = Arc::new(table);
            }
            changed
        });
        tokio::select! {
            change = changes.recv() => {
                if change.is_none() {
                    break;
                }
            }
            Ok(()) = weight.changed() => {}
        }
    }
}

/// Tasks that end with their owner.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn status_classes(stats: &RequestStats) -> [(&'static str, u64); 5] {
    [
        ("1xx", stats.status_1xx),
        ("2xx", stats.status_2xx),
        ("3xx", stats.status_3xx),
        ("4xx", stats.status_4xx),
        ("5xx", stats.status_5xx),
    ]
}

/// Appends a proxy's counters to the store as Prometheus-style series.
fn record(store: &mut SeriesStore, service: &str, stats: &mend_proxy::ProxyStats, at: Timestamp) {
    let append = |store: &mut SeriesStore, name: &str, pairs: &[(&str, &str)], value: f64| {
        let labels = store.labels(name, pairs);
        let _ = store.append(&labels, at, value);
    };
    for (release, figures) in [("stable", &stats.stable), ("canary", &stats.canary), ("proxy", &stats.local)] {
        for (class, count) in status_classes(figures) {
            append(
                store,
                "mend_proxy_requests_total",
                &[("service", service), ("release", release), ("code", class)],
                count as f64,
            );
        }
        let bounds = LATENCY_BUCKETS.iter().copied().chain(std::iter::once(f64::INFINITY));
        for (bound, count) in bounds.zip(figures.latency.cumulative.iter()) {
            let le = if bound.is_infinite() { "+Inf".to_owned() } else { format!("{bound}") };
            let bucket_labels = [("service", service), ("release", release), ("le", le.as_str())];
            append(store, "mend_proxy_request_duration_seconds_bucket", &bucket_labels, *count as f64);
        }
        let pairs = [("service", service), ("release", release)];
        append(store, "mend_proxy_request_duration_seconds_count", &pairs, figures.latency.count as f64);
        append(store, "mend_proxy_request_duration_seconds_sum", &pairs, figures.latency.sum_seconds);
        // gRPC responses by status code: a series per code seen (a counter, so once there it stays).
        for (code, count) in GRPC_CODES.iter().zip(figures.grpc).filter(|(_, count)| *count > 0) {
            let with_code = [("service", service), ("release", release), ("code", *code)];
            append(store, "mend_proxy_grpc_requests_total", &with_code, count as f64);
        }
    }
    append(store, "mend_proxy_retries_total", &[("service", service)], stats.retries as f64);
    append(store, "mend_proxy_retries_denied_total", &[("service", service)], stats.retries_denied as f64);
    append(store, "mend_proxy_partitioned_requests_total", &[("service", service)], stats.local.partitioned as f64);
    // A bad replica's 5xx answers that went on to another replica (clients did not see them).
    for (release, figures) in [("stable", &stats.stable), ("canary", &stats.canary)] {
        let pairs = [("service", service), ("release", release)];
        append(store, "mend_proxy_retries_on_5xx_total", &pairs, figures.retried_5xx as f64);
    }
    append(store, "mend_proxy_connections_open", &[("service", service)], stats.connections_open as f64);
    for backend in stats.backends.iter().filter(|backend| backend.in_table) {
        let replica = backend.id.index.to_string();
        let pairs = [("service", service), ("release", backend.id.release.as_str()), ("replica", replica.as_str())];
        append(store, "mend_proxy_backend_in_flight", &pairs, f64::from(backend.in_flight));
        append(store, "mend_proxy_backend_ejected", &pairs, if backend.ejected { 1.0 } else { 0.0 });
        append(store, "mend_proxy_backend_ejections_total", &pairs, backend.ejections as f64);
        // Attempts the replica was too busy to accept (a full accept queue): at capacity, not failing.
        append(store, "mend_proxy_backend_busy_total", &pairs, backend.attempts.busy as f64);
        for (class, count) in status_classes(&backend.attempts) {
            let with_code = [pairs[0], pairs[1], pairs[2], ("code", class)];
            append(store, "mend_proxy_backend_attempts_total", &with_code, count as f64);
        }
    }
    for caller in &stats.callers {
        let total = caller.requests.responses() as f64;
        append(
            store,
            "mend_proxy_edge_requests_total",
            &[("caller", caller.caller.as_str()), ("callee", service)],
            total,
        );
        let errors = caller.requests.status_5xx as f64;
        append(
            store,
            "mend_proxy_edge_errors_total",
            &[("caller", caller.caller.as_str()), ("callee", service)],
            errors,
        );
    }
}

/// Samples every proxy into the store once a second until aborted.
pub(crate) async fn sample_loop(traffic: Arc<Traffic>, series: Arc<RwLock<SeriesStore>>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        traffic.sample(&series);
    }
}

impl mend_api::TrafficApi for Traffic {
    fn canary_weight(&self, service: &str) -> Option<u8> {
        let (_, proxy) = self.service_proxy(service)?;
        proxy.service().canary.as_ref().map(|_| *proxy.canary_weight.borrow())
    }

    fn set_canary_weight(&self, service: &str, weight: u8) -> bool {
        let Some((name, proxy)) = self.service_proxy(service) else { return false };
        if proxy.service().canary.is_none() {
            return false;
        }
        let before = proxy.canary_weight.send_replace(weight.min(100));
        self.record(
            events::canary_weight_changed(&name, before, weight.min(100), self.clock.wall()).into_iter().collect(),
        );
        true
    }

    fn proxied(&self, service: &str) -> bool {
        self.proxy(service).is_some()
    }

    fn inject(&self, service: &str, faults: &mend_api::FaultSpec, duration: Duration) -> Option<Timestamp> {
        let (name, proxy) = self.service_proxy(service)?;
        let (now, wall) = (self.clock.now(), self.clock.wall());
        let until = now + duration;
        let kinds = [
            faults.latency.map(FaultKind::Latency),
            faults.status.map(FaultKind::Status),
            faults.abort.then_some(FaultKind::Abort),
        ];
        let mut chaos = lock(&proxy.chaos);
        let mut recorded = Vec::new();
        for kind in kinds.into_iter().flatten() {
            let fault = Fault { kind, percent: faults.percent, until };
            proxy.handle().handle.set_fault(fault);
            recorded.extend(chaos.started(&name, fault, now, wall));
        }
        drop(chaos);
        self.record(recorded);
        Some(wall.saturating_add(duration))
    }

    fn clear(&self, service: &str) -> bool {
        let Some((name, proxy)) = self.service_proxy(service) else { return false };
        proxy.handle().handle.clear_faults();
        let ended = lock(&proxy.chaos).cleared(&name, self.clock.now(), self.clock.wall());
        self.record(ended);
        true
    }

    fn status(&self, service: &str) -> Option<mend_api::TrafficStatus> {
        let (_, proxy) = self.service_proxy(service)?;
        let (now, wall) = (self.clock.now(), self.clock.wall());
        let chaos = proxy.handle().handle.faults().iter().map(|fault| events::fault_dto(fault, now, wall)).collect();
        let ejected = proxy
            .handle()
            .handle
            .stats()
            .backends
            .iter()
            .filter(|backend| backend.in_table && backend.ejected)
            .filter_map(|backend| {
                let ejection = backend.last_ejection.as_ref()?;
                Some(mend_api::EjectedReplica {
                    index: backend.id.index,
                    pid: u32::try_from(backend.id.generation).ok()?,
                    ejection: events::ejection_dto(ejection, wall),
                })
            })
            .collect();
        Some(mend_api::TrafficStatus { canary_weight: self.canary_weight(service), chaos, ejected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(proxy_table: &str) -> mend_config::ProxySettings {
        let text = format!(
            "[service.web]\ncommand = [\"true\"]\nports = \"9101-9110\"\n[service.web.proxy]\nlisten = \"127.0.0.1:8080\"\n{proxy_table}"
        );
        let config = mend_config::parse("mend.toml", &text, std::path::Path::new("/")).expect("valid config");
        config.services.into_iter().next().expect("one service").proxy.expect("a proxy table")
    }

    #[test]
    fn connect_timeout_from_the_file_holds_for_loopback_replicas_too() {
        let defaults = proxy_config(&settings(""));
        let library = ProxyConfig::new(defaults.listen);
        assert_eq!(
            (defaults.connect_timeout, defaults.loopback_connect_timeout),
            (library.connect_timeout, library.loopback_connect_timeout),
            "unset, mend-proxy's defaults hold"
        );
        let set = proxy_config(&settings("connect_timeout = \"400ms\"\n"));
        assert_eq!(set.connect_timeout, Duration::from_millis(400));
        assert_eq!(set.loopback_connect_timeout, Duration::from_millis(400), "the replicas are on loopback");
    }

    #[test]
    fn the_retry_policy_from_the_file_reaches_the_proxy() {
        let defaults = proxy_config(&settings(""));
        assert_eq!(defaults.retry.retry_on, mend_proxy::RetryOn::default(), "unset, mend-proxy's default holds");
        assert!(defaults.retry.retry_on.status(500));
        let set = proxy_config(&settings(
            "retry_on = [\"gateway-error\", \"retriable-status-codes\"]\nretriable_status_codes = [507]\nretry_methods = [\"GET\", \"POST\"]\n",
        ));
        let retry_on = set.retry.retry_on;
        assert_eq!((retry_on.status(500), retry_on.status(503), retry_on.status(507)), (false, true, true));
        assert!(!retry_on.reset && !retry_on.connect_failure);
        assert!(set.retry.retry_methods.contains(&hyper::Method::POST));
        assert!(!set.retry.retry_methods.contains(&hyper::Method::PUT));
    }
}
