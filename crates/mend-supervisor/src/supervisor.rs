//! All services: start in dependency order, route operator commands, shut down in reverse order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use mend_config::{Config, Service};
use mend_types::{ReleaseName, ServiceName};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runner::{Control, ReplicaHandle, ReplicaStatus, RunnerContext, TrafficControl, TrafficHook};

/// One supervised service and its replicas (their number changes with [`Supervisor::scale`]).
pub struct ServiceHandle {
    config: RwLock<Arc<Service>>,
    replicas: RwLock<Vec<Arc<ReplicaHandle>>>,
    /// Bumped whenever replicas are added or removed, for those who follow the set (the proxy).
    membership: watch::Sender<u64>,
    /// One scale at a time, and none once shutdown has taken it.
    scaling: tokio::sync::Mutex<()>,
    /// Replicas removed by a scale-in whose tasks may still be stopping them.
    retiring: RwLock<Vec<Arc<ReplicaHandle>>>,
    /// Set once the service's dependencies were ready and its replicas were started.
    booted: Arc<AtomicBool>,
}

impl ServiceHandle {
    fn new(config: Arc<Service>, replicas: Vec<Arc<ReplicaHandle>>) -> Self {
        Self {
            config: RwLock::new(config),
            replicas: RwLock::new(replicas),
            membership: watch::channel(0).0,
            scaling: tokio::sync::Mutex::new(()),
            retiring: RwLock::new(Vec::new()),
            booted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Retiring replicas whose tasks have not ended yet (finished ones are forgotten).
    fn still_retiring(&self) -> Vec<Arc<ReplicaHandle>> {
        let mut retiring = self.retiring.write().unwrap_or_else(PoisonError::into_inner);
        retiring.retain(|replica| !replica.is_finished());
        retiring.clone()
    }

    /// The service's config (with the replica count it is scaled to).
    pub fn config(&self) -> Arc<Service> {
        self.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Its replicas, by index.
    pub fn replicas(&self) -> Vec<Arc<ReplicaHandle>> {
        self.replicas.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Statuses of all replicas.
    pub fn statuses(&self) -> Vec<ReplicaStatus> {
        self.replicas().iter().map(|replica| replica.status()).collect()
    }

    /// Changes whenever replicas are added or removed.
    pub fn membership(&self) -> watch::Receiver<u64> {
        self.membership.subscribe()
    }
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// No such service.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The replica index does not exist.
    #[error("service {service:?} has no replica {index}")]
    UnknownReplica {
        /// The service.
        service: String,
        /// The index asked for.
        index: u32,
    },
    /// A service of that name is supervised already.
    #[error("service {0:?} is supervised already")]
    AlreadySupervised(String),
    /// The replica tasks are gone (mend is shutting down).
    #[error("mend is shutting down")]
    ShuttingDown,
    /// A scale mend cannot carry out (a canary release, too few ports).
    #[error("cannot scale {service:?}: {reason}")]
    CannotScale {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// A release change mend cannot carry out (no such release, a canary already running, none to promote).
    #[error("cannot change the releases of {service:?}: {reason}")]
    CannotRelease {
        /// The service.
        service: String,
        /// Why.
        reason: String,
    },
    /// A rolling restart stopped because a restarted replica did not come back ready in time; the
    /// replicas after it were left alone.
    #[error("replica {index} of {service:?} was not ready again within {}s: rolling restart stopped", waited.as_secs())]
    NotReadyAgain {
        /// The service.
        service: String,
        /// The replica that did not come back.
        index: u32,
        /// How long mend waited.
        waited: Duration,
    },
}

/// The supervisor of every configured service. The set of services changes with a reload
/// ([`Supervisor::add`], [`Supervisor::remove`]); those who follow it watch [`Supervisor::roster`].
pub struct Supervisor {
    /// In start order: a service comes after the services it depends on.
    services: RwLock<Vec<Arc<ServiceHandle>>>,
    /// Bumped whenever a service is added or removed.
    roster: watch::Sender<u64>,
    boot: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// True once shutdown has begun: no scale starts, and waits for replicas end.
    shutting_down: watch::Sender<bool>,
    ctx: RunnerContext,
    traffic: RwLock<HashMap<ServiceName, Arc<dyn TrafficControl>>>,
}

/// The handle of a new service: its replica tasks wait for [`Control::Start`].
fn new_service(
    service: &Service,
    ctx: &RunnerContext,
    traffic: Option<&Arc<dyn TrafficControl>>,
) -> Arc<ServiceHandle> {
    let service = Arc::new(service.clone());
    // Stable replicas first, then the canary's; each carries its release, whatever its index.
    let canary = service.canary.as_ref().and_then(|canary| service.release(&canary.release));
    let releases = std::iter::repeat_n(service.stable(), service.replicas as usize)
        .chain(std::iter::repeat_n(canary, service.total_replicas() as usize - service.replicas as usize).flatten());
    let replicas = releases
        .enumerate()
        .map(|(index, release)| {
            Arc::new(ReplicaHandle::start(
                service.clone(),
                release.clone(),
                index as u32,
                ctx.clone(),
                traffic.cloned(),
            ))
        })
        .collect();
    Arc::new(ServiceHandle::new(service, replicas))
}

/// Starts the replicas of `service` once each of its dependencies (among `services`) has a replica
/// that has been ready.
fn boot(service: &ServiceHandle, services: &[Arc<ServiceHandle>]) -> JoinHandle<()> {
    let dependencies: Vec<Vec<watch::Receiver<ReplicaStatus>>> = service
        .config()
        .depends_on
        .iter()
        .filter_map(|dependency| services.iter().find(|s| s.config().name == *dependency))
        .map(|dependency| dependency.replicas().iter().map(|r| r.watch()).collect())
        .collect();
    let replicas = service.replicas();
    let targets: Vec<_> = replicas.iter().map(|r| r.watch()).collect();
    let controls: Vec<_> = replicas.iter().map(|r| r.control_sender()).collect();
    let name = service.config().name.clone();
    let booted = service.booted.clone();
    tokio::spawn(async move {
        for replicas in dependencies {
            if replicas.is_empty() {
                continue;
            }
            tracing::info!(service = %name, "waiting for a dependency to be ready");
            // The dependency is ready as soon as any one of its replicas has been (latched: a
            // brief moment of readiness is not missed), or has run to completion.
            let mut waiting = tokio::task::JoinSet::new();
            for mut replica in replicas {
                waiting.spawn(
                    async move { replica.wait_for(|status| status.ever_ready || status.completed).await.is_ok() },
                );
            }
            loop {
                match waiting.join_next().await {
                    Some(Ok(true)) => break,
                    Some(_) => continue,
                    // Every replica task of the dependency ended (mend is shutting down; a
                    // dependency cannot be scaled to 0 while a dependent still waits).
                    None => return,
                }
            }
        }
        booted.store(true, Ordering::SeqCst);
        for (status, control) in targets.iter().zip(controls) {
            // Start only replicas nobody has touched yet (an operator may have stopped one).
            if status.borrow().state == crate::ReplicaState::Waiting {
                let _ = control.send(Control::Start).await;
            }
        }
    })
}

impl Supervisor {
    /// Starts a task per replica and starts each service once its dependencies are ready. Services with
    /// an entry in `traffic` drain their replicas before planned stops.
    pub fn start(config: &Config, ctx: RunnerContext, traffic: &HashMap<ServiceName, Arc<dyn TrafficControl>>) -> Self {
        let services: Vec<Arc<ServiceHandle>> =
            config.services.iter().map(|service| new_service(service, &ctx, traffic.get(&service.name))).collect();
        let boot = services.iter().map(|service| boot(service, &services)).collect();
        Self {
            services: RwLock::new(services),
            roster: watch::channel(0).0,
            boot: std::sync::Mutex::new(boot),
            shutting_down: watch::channel(false).0,
            ctx,
            traffic: RwLock::new(traffic.clone()),
        }
    }

    /// Adds a service while mend runs (a reload): its replicas start once its dependencies (services
    /// already supervised) are ready, as at start-up; with `traffic`, planned stops drain them first.
    pub fn add(&self, service: &Service, traffic: Option<Arc<dyn TrafficControl>>) -> Result<(), ControlError> {
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        if self.service(service.name.as_str()).is_some() {
            return Err(ControlError::AlreadySupervised(service.name.as_str().to_owned()));
        }
        if let Some(traffic) = &traffic {
            self.traffic.write().unwrap_or_else(PoisonError::into_inner).insert(service.name.clone(), traffic.clone());
        }
        let handle = new_service(service, &self.ctx, traffic.as_ref());
        let mut services = self.services.write().unwrap_or_else(PoisonError::into_inner);
        let task = boot(&handle, &services);
        services.push(handle);
        drop(services);
        self.boot.lock().unwrap_or_else(PoisonError::into_inner).push(task);
        self.roster.send_modify(|version| *version += 1);
        Ok(())
    }

    /// Removes a service while mend runs (a reload): every replica leaves the proxy's rotation, drains
    /// (through its proxy, if any) and stops (a planned stop, with its stop timeout); once their tasks
    /// have ended (or `wait` plus the stop timeout has passed) the service is no longer supervised.
    /// The caller sees that no service that stays depends on it (a reload's file is validated whole:
    /// a `depends_on` naming a service the file no longer has is refused before anything changes).
    pub async fn remove(&self, name: &str, wait: Duration) -> Result<(), ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        let config = service.config();
        let deadline = tokio::time::Instant::now() + wait;
        let scaling = service.scaling.lock().await;
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let replicas: Vec<Arc<ReplicaHandle>> =
            std::mem::take(&mut *service.replicas.write().unwrap_or_else(PoisonError::into_inner));
        service.membership.send_modify(|version| *version += 1);
        self.retire(&service, &replicas, deadline + config.stop_timeout, scaling).await;
        // The tasks end once their processes are gone (their pid files and ports with them).
        while !service.still_retiring().is_empty() && tokio::time::Instant::now() < deadline + config.stop_timeout {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.services.write().unwrap_or_else(PoisonError::into_inner).retain(|other| !Arc::ptr_eq(other, &service));
        self.traffic.write().unwrap_or_else(PoisonError::into_inner).remove(&config.name);
        self.roster.send_modify(|version| *version += 1);
        Ok(())
    }

    /// Changes whenever a service is added or removed.
    pub fn roster(&self) -> watch::Receiver<u64> {
        self.roster.subscribe()
    }

    /// Gives `name`'s replicas a proxy to drain through before planned stops, or takes it away (a reload
    /// added or removed the service's proxy): replicas started from now on get it, and
    /// [`Supervisor::respec`] hands it to the running ones.
    pub fn set_traffic(&self, name: &ServiceName, traffic: Option<Arc<dyn TrafficControl>>) {
        let mut hooks = self.traffic.write().unwrap_or_else(PoisonError::into_inner);
        match traffic {
            Some(traffic) => hooks.insert(name.clone(), traffic),
            None => hooks.remove(name),
        };
    }

    /// The drain hook of `name`'s replicas.
    fn traffic_of(&self, name: &ServiceName) -> Option<Arc<dyn TrafficControl>> {
        self.traffic.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }

    /// Runs `wait` until it ends or shutdown begins, whichever comes first: nobody waits on a replica
    /// that shutdown is stopping (an API request holding on would keep the proxies from closing).
    async fn unless_shutting_down(&self, wait: impl std::future::Future<Output = ()>) {
        let mut shutdown = self.shutting_down.subscribe();
        tokio::select! {
            () = wait => {}
            _ = shutdown.wait_for(|down| *down) => {}
        }
    }

    /// All services, in start order (as they are now: a reload may add or remove some).
    pub fn services(&self) -> Vec<Arc<ServiceHandle>> {
        self.services.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<Arc<ServiceHandle>> {
        let services = self.services.read().unwrap_or_else(PoisonError::into_inner);
        services.iter().find(|service| service.config().name.as_str() == name).cloned()
    }

    /// Sends `control` to every replica of `name` (or to one, with `replica`) and waits, up to `wait` (per
    /// replica for a restart), until they have acted on it. A restart of several replicas rolls: one at a
    /// time. Returns the statuses afterwards.
    pub async fn control(
        &self,
        name: &str,
        replica: Option<u32>,
        control: Control,
        wait: Duration,
    ) -> Result<Vec<ReplicaStatus>, ControlError> {
        let request = crate::lifecycle::Request::operator(None);
        self.control_for(name, replica, control, request, wait).await
    }

    /// [`Supervisor::control`], with who asks and why (for a restart: the reason in its events, and
    /// whether it counts against the restart intensity).
    pub async fn control_for(
        &self,
        name: &str,
        replica: Option<u32>,
        control: Control,
        request: crate::lifecycle::Request,
        wait: Duration,
    ) -> Result<Vec<ReplicaStatus>, ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let replicas = service.replicas();
        let targets: Vec<&Arc<ReplicaHandle>> = match replica {
            Some(index) => vec![
                replicas.get(index as usize).ok_or(ControlError::UnknownReplica { service: name.to_owned(), index })?,
            ],
            None => replicas.iter().collect(),
        };
        // Whether a replica has acted on the command: stopped; started and ready (or down for good); or
        // replaced by a new process that is ready (or down for good).
        // A new process is a new generation: a replica that was down and went down again after the command
        // has acted on it, whereas a status from before the command says nothing.
        let settled = |before: &ReplicaStatus, now: &ReplicaStatus| match control {
            Control::Stop => now.down,
            Control::Start => now.ready || (now.down && now.generation != before.generation),
            Control::Restart | Control::Replace { .. } | Control::Respec { .. } => {
                (now.ready || now.down) && now.generation != before.generation
            }
            Control::Retire => now.down,
        };
        if control == Control::Restart {
            // A rolling restart: one replica at a time, each back in the ready set before the next goes,
            // so that the service keeps serving.
            for replica in &targets {
                let before = replica.status();
                // Tagged with the generation seen now: a restart that happens meanwhile (another
                // operator's) is this one too.
                let replace = Control::Replace { generation: before.generation, request: request.clone() };
                if !replica.send(replace).await {
                    return Err(ControlError::ShuttingDown);
                }
                let mut status = replica.watch();
                self.unless_shutting_down(async {
                    let _ = tokio::time::timeout(wait, status.wait_for(|now| settled(&before, now))).await;
                })
                .await;
                if self.is_shutting_down() {
                    return Err(ControlError::ShuttingDown);
                }
                // Going on while a replica is not back would take the service down one replica at a time
                // (a bad release, say): stop the roll instead.
                if !replica.status().ready && targets.len() > 1 {
                    return Err(ControlError::NotReadyAgain {
                        service: name.to_owned(),
                        index: replica.id.index,
                        waited: wait,
                    });
                }
            }
        } else {
            let before: Vec<ReplicaStatus> = targets.iter().map(|r| r.status()).collect();
            for replica in &targets {
                if !replica.send(control.clone()).await {
                    return Err(ControlError::ShuttingDown);
                }
            }
            let deadline = tokio::time::Instant::now() + wait;
            for (replica, before) in targets.iter().zip(&before) {
                let mut status = replica.watch();
                self.unless_shutting_down(async {
                    let _ = tokio::time::timeout_at(deadline, status.wait_for(|now| settled(before, now))).await;
                })
                .await;
            }
        }
        Ok(targets.iter().map(|r| r.status()).collect())
    }

    /// Scales the stable release of `name` to `replicas` (a canary's replicas are left alone): new
    /// replicas take the lowest free indexes (and their ports) and, with `wait`, are waited for until
    /// ready; surplus stable replicas, the highest indexes first, leave the proxy's rotation, drain and
    /// stop (a planned stop), then go away. Returns the statuses afterwards.
    pub async fn scale(&self, name: &str, replicas: u32, wait: Duration) -> Result<Vec<ReplicaStatus>, ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        let cannot = |reason: String| ControlError::CannotScale { service: name.to_owned(), reason };
        let deadline = tokio::time::Instant::now() + wait;
        let scaling = service.scaling.lock().await;
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let config = service.config();
        let stable = config.stable().clone();
        let current_replicas = service.replicas();
        let others = current_replicas.iter().filter(|replica| replica.release != stable.name).count() as u32;
        let current = current_replicas.len() as u32 - others;
        if replicas > current && config.ports.is_some_and(|ports| ports.port_of(replicas + others - 1).is_none()) {
            let canary = if others > 0 { format!(" beside {others} of another release") } else { String::new() };
            return Err(cannot(format!("its port range has room for fewer than {replicas} replicas{canary}")));
        }
        let mut scaled = (*config).clone();
        scaled.replicas = replicas;
        let scaled = Arc::new(scaled);
        if replicas > current {
            if !service.booted.load(Ordering::SeqCst) {
                return Err(cannot("it is still waiting for its dependencies".to_owned()));
            }
            // The lowest indexes no replica holds; an index comes back only once the replica that had it
            // has stopped (same port, pid file).
            let used: Vec<u32> = current_replicas.iter().map(|replica| replica.id.index).collect();
            let indexes: Vec<u32> =
                (0..).filter(|index| !used.contains(index)).take((replicas - current) as usize).collect();
            loop {
                let busy: Vec<u32> = service
                    .still_retiring()
                    .iter()
                    .map(|replica| replica.id.index)
                    .filter(|index| indexes.contains(index))
                    .collect();
                match busy.first() {
                    None => break,
                    Some(index) if tokio::time::Instant::now() >= deadline => {
                        return Err(cannot(format!("replica {index} is still stopping")));
                    }
                    Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            if self.is_shutting_down() {
                return Err(ControlError::ShuttingDown);
            }
            let traffic = self.traffic_of(&scaled.name);
            let added: Vec<Arc<ReplicaHandle>> = indexes
                .iter()
                .map(|index| {
                    Arc::new(ReplicaHandle::start(
                        scaled.clone(),
                        stable.clone(),
                        *index,
                        self.ctx.clone(),
                        traffic.clone(),
                    ))
                })
                .collect();
            *service.config.write().unwrap_or_else(PoisonError::into_inner) = scaled;
            {
                let mut list = service.replicas.write().unwrap_or_else(PoisonError::into_inner);
                list.extend(added.iter().cloned());
                list.sort_by_key(|replica| replica.id.index);
            }
            service.membership.send_modify(|version| *version += 1);
            for replica in &added {
                if !replica.send(Control::Start).await {
                    return Err(ControlError::ShuttingDown);
                }
            }
            // Waiting happens outside the lock: a shutdown need not wait for it.
            drop(scaling);
            for replica in &added {
                let mut status = replica.watch();
                self.unless_shutting_down(async {
                    let _ = tokio::time::timeout_at(deadline, status.wait_for(|now| now.ready || now.completed)).await;
                })
                .await;
            }
        } else if replicas < current {
            if replicas == 0
                && let Some(waiting) = self.services().iter().find(|other| {
                    !other.booted.load(Ordering::SeqCst) && other.config().depends_on.contains(&config.name)
                })
            {
                // Its start waits for one of this service's replicas to be ready.
                let reason = format!("service {:?} depends on it and has not started yet", waiting.config().name);
                return Err(cannot(reason));
            }
            let surplus: Vec<Arc<ReplicaHandle>> = {
                let mut list = service.replicas.write().unwrap_or_else(PoisonError::into_inner);
                let mut stable_indexes: Vec<u32> = list
                    .iter()
                    .filter(|replica| replica.release == stable.name)
                    .map(|replica| replica.id.index)
                    .collect();
                let leaving = stable_indexes.split_off(replicas as usize);
                let (gone, kept): (Vec<_>, Vec<_>) = list
                    .drain(..)
                    .partition(|replica| replica.release == stable.name && leaving.contains(&replica.id.index));
                *list = kept;
                gone
            };
            *service.config.write().unwrap_or_else(PoisonError::into_inner) = scaled;
            service.membership.send_modify(|version| *version += 1);
            self.retire(&service, &surplus, deadline + config.stop_timeout, scaling).await;
        }
        Ok(service.statuses())
    }

    /// Starts `replicas` replicas of `release` as the canary of `name` (the split starts at 0 %: the
    /// proxy sends it only pinned requests until its weight is set) on the lowest free indexes, and waits
    /// up to `wait` until they are ready. Returns the canary's statuses.
    pub async fn start_canary(
        &self,
        name: &str,
        release: &ReleaseName,
        replicas: u32,
        wait: Duration,
    ) -> Result<Vec<ReplicaStatus>, ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        let cannot = |reason: String| ControlError::CannotRelease { service: name.to_owned(), reason };
        let deadline = tokio::time::Instant::now() + wait;
        let scaling = service.scaling.lock().await;
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let config = service.config();
        let spec = config
            .release(release)
            .cloned()
            .ok_or_else(|| cannot(format!("it has no release {release:?} (add [service.{name}.release.{release}])")))?;
        if *release == config.stable_release {
            return Err(cannot(format!("{release:?} is its stable release already")));
        }
        let current = service.replicas();
        if let Some(other) = current.iter().find(|replica| replica.release != config.stable_release) {
            return Err(cannot(format!("a canary of release {:?} runs already", other.release)));
        }
        if self.traffic_of(&config.name).is_none() {
            return Err(cannot("a canary needs [service.NAME.proxy]: the proxy is what splits the traffic".to_owned()));
        }
        let used: Vec<u32> = current.iter().chain(service.still_retiring().iter()).map(|r| r.id.index).collect();
        let indexes: Vec<u32> = (0..).filter(|index| !used.contains(index)).take(replicas as usize).collect();
        if let (Some(ports), Some(last)) = (config.ports, indexes.last())
            && ports.port_of(*last).is_none()
        {
            return Err(cannot(format!("its port range has no room for {replicas} more replicas")));
        }
        let mut changed = (*config).clone();
        let previous = config.canary.clone();
        changed.canary = Some(mend_config::Canary {
            release: release.clone(),
            replicas,
            weight_percent: 0,
            pin_header: previous.as_ref().and_then(|canary| canary.pin_header.clone()),
            pin_cookie: previous.as_ref().and_then(|canary| canary.pin_cookie.clone()),
        });
        let changed = Arc::new(changed);
        let traffic = self.traffic_of(&changed.name);
        let added: Vec<Arc<ReplicaHandle>> = indexes
            .iter()
            .map(|index| {
                Arc::new(ReplicaHandle::start(changed.clone(), spec.clone(), *index, self.ctx.clone(), traffic.clone()))
            })
            .collect();
        *service.config.write().unwrap_or_else(PoisonError::into_inner) = changed;
        {
            let mut list = service.replicas.write().unwrap_or_else(PoisonError::into_inner);
            list.extend(added.iter().cloned());
            list.sort_by_key(|replica| replica.id.index);
        }
        service.membership.send_modify(|version| *version += 1);
        for replica in &added {
            if !replica.send(Control::Start).await {
                return Err(ControlError::ShuttingDown);
            }
        }
        drop(scaling);
        for replica in &added {
            let mut status = replica.watch();
            // A canary that fails or restarts twice will not be ready: no use waiting the full time.
            self.unless_shutting_down(async {
                let settled = |now: &ReplicaStatus| now.ready || now.failed() || now.restarts >= 2;
                let _ = tokio::time::timeout_at(deadline, status.wait_for(settled)).await;
            })
            .await;
        }
        Ok(added.iter().map(|replica| replica.status()).collect())
    }

    /// Sets the canary table of `name` (its pins, weight and replica count as a reload's file has them)
    /// once its replicas run: the proxy's route table follows (its follower reads the table again).
    pub fn set_canary_table(&self, name: &str, canary: Option<mend_config::Canary>) -> Result<(), ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        let mut changed = (*service.config()).clone();
        changed.canary = canary;
        *service.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(changed);
        service.membership.send_modify(|version| *version += 1);
        Ok(())
    }

    /// Takes the canary of `name` away: out of the split first (so that no new request goes to it), then
    /// each replica drains through the proxy and stops. Waits up to `wait` (plus the stop timeout).
    /// Returns the service's statuses afterwards (without a canary, nothing changes).
    pub async fn stop_canary(&self, name: &str, wait: Duration) -> Result<Vec<ReplicaStatus>, ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        let deadline = tokio::time::Instant::now() + wait;
        let scaling = service.scaling.lock().await;
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let config = service.config();
        let canary: Vec<Arc<ReplicaHandle>> = {
            let mut list = service.replicas.write().unwrap_or_else(PoisonError::into_inner);
            let (gone, kept): (Vec<_>, Vec<_>) =
                list.drain(..).partition(|replica| replica.release != config.stable_release);
            *list = kept;
            gone
        };
        let mut changed = (*config).clone();
        changed.canary = None;
        *service.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(changed);
        service.membership.send_modify(|version| *version += 1);
        self.retire(&service, &canary, deadline + config.stop_timeout, scaling).await;
        Ok(service.statuses())
    }

    /// Makes the canary of `name` its stable release: first as many replicas of it run as the stable
    /// release had (more start where the port range has room, each ready before the old ones go; else
    /// one old replica is replaced at a time), then the old release's replicas drain and stop. Returns
    /// the statuses afterwards.
    pub async fn promote_canary(&self, name: &str, wait: Duration) -> Result<Vec<ReplicaStatus>, ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        let cannot = |reason: String| ControlError::CannotRelease { service: name.to_owned(), reason };
        let config = service.config();
        let canary = config.canary.as_ref().ok_or_else(|| cannot("it runs no canary".to_owned()))?.release.clone();
        let spec = config.release(&canary).cloned().ok_or_else(|| cannot(format!("no release {canary:?}")))?;
        let n_stable = service.replicas().iter().filter(|replica| replica.release == config.stable_release).count();
        let n_canary = service.replicas().len() - n_stable;
        // Surge: the canary's release takes as many replicas as the stable one had.
        let needed = n_stable.saturating_sub(n_canary) as u32;
        let deadline = tokio::time::Instant::now() + wait;
        let scaling = service.scaling.lock().await;
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let current = service.replicas();
        let used: Vec<u32> = current.iter().chain(service.still_retiring().iter()).map(|r| r.id.index).collect();
        let indexes: Vec<u32> = (0..).filter(|index| !used.contains(index)).take(needed as usize).collect();
        let room = indexes.last().is_none_or(|last| config.ports.is_none_or(|ports| ports.port_of(*last).is_some()));
        // The canary's release becomes stable: its replicas are the stable pool from now on, beside the
        // old release's until those have drained.
        let mut promoted = (*config).clone();
        promoted.stable_release = canary.clone();
        promoted.canary = None;
        promoted.replicas = n_stable as u32;
        let promoted = Arc::new(promoted);
        let traffic = self.traffic_of(&promoted.name);
        let start = |index: u32| {
            Arc::new(ReplicaHandle::start(promoted.clone(), spec.clone(), index, self.ctx.clone(), traffic.clone()))
        };
        let old_release = config.stable_release.clone();
        let old: Vec<Arc<ReplicaHandle>> =
            current.iter().filter(|replica| replica.release == old_release).cloned().collect();
        *service.config.write().unwrap_or_else(PoisonError::into_inner) = promoted.clone();
        service.membership.send_modify(|version| *version += 1);
        if room {
            let added: Vec<Arc<ReplicaHandle>> = indexes.iter().map(|index| start(*index)).collect();
            {
                let mut list = service.replicas.write().unwrap_or_else(PoisonError::into_inner);
                list.extend(added.iter().cloned());
                list.sort_by_key(|replica| replica.id.index);
            }
            service.membership.send_modify(|version| *version += 1);
            for replica in &added {
                if !replica.send(Control::Start).await {
                    return Err(ControlError::ShuttingDown);
                }
            }
            for replica in &added {
                let mut status = replica.watch();
                self.unless_shutting_down(async {
                    let _ = tokio::time::timeout_at(deadline, status.wait_for(|now| now.ready)).await;
                })
                .await;
            }
            if added.iter().any(|replica| !replica.status().ready) {
                return Err(cannot(format!(
                    "new replicas of {canary:?} were not ready in time; the old ones still run"
                )));
            }
            {
                let mut list = service.replicas.write().unwrap_or_else(PoisonError::into_inner);
                list.retain(|replica| replica.release != old_release);
            }
            service.membership.send_modify(|version| *version += 1);
            self.retire(&service, &old, deadline + config.stop_timeout, scaling).await;
        } else {
            // No room to surge: one old replica at a time drains and stops, and a new one takes its index.
            drop(scaling);
            for replica in old.iter().skip(n_canary) {
                let _guard = service.scaling.lock().await;
                service.replicas.write().unwrap_or_else(PoisonError::into_inner).retain(|r| !Arc::ptr_eq(r, replica));
                service.membership.send_modify(|version| *version += 1);
                service.retiring.write().unwrap_or_else(PoisonError::into_inner).push(replica.clone());
                let _ = replica.send(Control::Retire).await;
                let mut status = replica.watch();
                let _ = tokio::time::timeout_at(deadline + config.stop_timeout, status.wait_for(|now| now.down)).await;
                while !replica.is_finished() && tokio::time::Instant::now() < deadline + config.stop_timeout {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let fresh = start(replica.id.index);
                {
                    let mut list = service.replicas.write().unwrap_or_else(PoisonError::into_inner);
                    list.push(fresh.clone());
                    list.sort_by_key(|replica| replica.id.index);
                }
                service.membership.send_modify(|version| *version += 1);
                let _ = fresh.send(Control::Start).await;
                let mut status = fresh.watch();
                let _ = tokio::time::timeout_at(deadline, status.wait_for(|now| now.ready)).await;
            }
            // The canary's own replicas already run the new release; whatever old ones are left go.
            let left: Vec<Arc<ReplicaHandle>> = {
                let mut list = service.replicas.write().unwrap_or_else(PoisonError::into_inner);
                let (gone, kept): (Vec<_>, Vec<_>) = list.drain(..).partition(|r| r.release == old_release);
                *list = kept;
                gone
            };
            service.membership.send_modify(|version| *version += 1);
            let scaling = service.scaling.lock().await;
            self.retire(&service, &left, deadline + config.stop_timeout, scaling).await;
        }
        Ok(service.statuses())
    }

    /// Retires `surplus` (already out of the service's list): a planned stop, each replica drained
    /// through its proxy before its process is signalled; its task then ends, whatever commands still
    /// come its way. Waits (outside the scaling lock) until they are down or `deadline` passes.
    async fn retire(
        &self,
        service: &ServiceHandle,
        surplus: &[Arc<ReplicaHandle>],
        deadline: tokio::time::Instant,
        scaling: tokio::sync::MutexGuard<'_, ()>,
    ) {
        // Listed as retiring first: if this is cut short, shutdown still finds them.
        service.retiring.write().unwrap_or_else(PoisonError::into_inner).extend(surplus.iter().cloned());
        for replica in surplus {
            let _ = replica.send(Control::Retire).await;
        }
        drop(scaling);
        for replica in surplus {
            let mut status = replica.watch();
            self.unless_shutting_down(async {
                let _ = tokio::time::timeout_at(deadline, status.wait_for(|now| now.down)).await;
            })
            .await;
        }
    }

    /// Gives `name` a new spec. With `replace` (a reload changed its command, environment, working
    /// directory, probes or metrics) its replicas are replaced rolling: `max_unavailable` at a time (at
    /// least one), each drained through the proxy before its process stops, and the next ones only once
    /// the replaced ones are ready again. A replica that does not come back ready stops the roll: the
    /// ones after it keep running the old spec. Without `replace` the replicas take the new policy and
    /// run on. The replica count and the release stay as they run. Returns the statuses afterwards.
    pub async fn respec(
        &self,
        name: &str,
        spec: &Service,
        replace: bool,
        max_unavailable: u32,
        request: crate::lifecycle::Request,
        wait: Duration,
    ) -> Result<Vec<ReplicaStatus>, ControlError> {
        let service = self.service(name).ok_or_else(|| ControlError::UnknownService(name.to_owned()))?;
        // One change of the replica set at a time: a scale waits for the roll (and then starts replicas of
        // the new spec).
        let _scaling = service.scaling.lock().await;
        if self.is_shutting_down() {
            return Err(ControlError::ShuttingDown);
        }
        let running = service.config();
        let mut respecced = spec.clone();
        respecced.replicas = running.replicas;
        let respecced = Arc::new(respecced);
        *service.config.write().unwrap_or_else(PoisonError::into_inner) = respecced.clone();
        let replicas = service.replicas();
        for batch in replicas.chunks(max_unavailable.max(1) as usize) {
            let before: Vec<ReplicaStatus> = batch.iter().map(|r| r.status()).collect();
            for replica in batch {
                let respec = Control::Respec {
                    service: respecced.clone(),
                    replace,
                    request: request.clone(),
                    traffic: TrafficHook(self.traffic_of(&respecced.name)),
                };
                if !replica.send(respec).await {
                    return Err(ControlError::ShuttingDown);
                }
            }
            if !replace {
                continue;
            }
            let deadline = tokio::time::Instant::now() + wait;
            for (replica, before) in batch.iter().zip(&before) {
                if before.pid.is_none() {
                    // Nothing ran: it takes the spec for its next start.
                    continue;
                }
                let mut status = replica.watch();
                self.unless_shutting_down(async {
                    let _ = tokio::time::timeout_at(
                        deadline,
                        status.wait_for(|now| (now.ready || now.down) && now.generation != before.generation),
                    )
                    .await;
                })
                .await;
                if self.is_shutting_down() {
                    return Err(ControlError::ShuttingDown);
                }
                if !replica.status().ready {
                    return Err(ControlError::NotReadyAgain {
                        service: name.to_owned(),
                        index: replica.id.index,
                        waited: wait,
                    });
                }
            }
        }
        Ok(service.statuses())
    }

    /// Stops every service, dependents before their dependencies. The replica tasks end when the
    /// supervisor is dropped.
    pub async fn shutdown(&self, per_service_wait: Duration) {
        for task in self.boot.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            task.abort();
        }
        // Stop in reverse start order: a service's dependents come after it in start order, so they stop
        // before it does.
        self.shutting_down.send_replace(true);
        for service in self.services().iter().rev() {
            // A scale in progress finishes changing the set first; none starts after this.
            let _no_more_scaling = service.scaling.lock().await;
            let mut replicas = service.replicas();
            replicas.extend(service.still_retiring());
            for replica in &replicas {
                let _ = replica.send(Control::Stop).await;
            }
            let deadline = tokio::time::Instant::now() + service.config().stop_timeout + per_service_wait;
            for replica in &replicas {
                let mut status = replica.watch();
                let _ = tokio::time::timeout_at(deadline, status.wait_for(|status| status.down)).await;
            }
        }
    }
}
