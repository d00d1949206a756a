//! Process chaos: `mend chaos kill|hang|cpu|leak|slow|errors|partition` through the API, and the chaos
//! monkey's loop (its decision is pure: `chaos/monkey.rs`).
//!
//! Every fault is bounded: it hits only a replica mend supervises (by the pid mend has for it) or the
//! service's own proxy, lasts at most `MAX_CHAOS_DURATION`, and reverts by itself, recorded as a
//! `chaos_started` and a `chaos_ended` event. How each reverts:
//!
//! - `kill`: nothing to revert; the supervisor restarts the replica (or heal replaces it).
//! - `hang`: SIGSTOP to the replica's process group; at the end SIGCONT, unless mend replaced the
//!   replica meanwhile (another pid or generation: nothing of the old one is left to resume).
//! - `cpu`, `leak`, `slow`, `errors`: the replica's fault endpoints (mend-demo's `/fault/...` knobs),
//!   reset at the end (`POST /fault/reset`) unless the replica was replaced; `slow` and `errors` on a
//!   service without knobs go through its proxy's fault injection, which expires by itself.
//! - `partition`: the proxy refuses the caller's requests until the end (it expires by itself).
//!
//! If mend itself is killed mid-fault, nothing is left broken: replicas run under the die-with-mend
//! shim (`PR_SET_PDEATHSIG` = SIGKILL, which a stopped process receives too), so a stopped, leaking or
//! burning replica dies with mend, and proxy faults live in mend's memory. A detached reverter process
//! would outlive mend only to resume a process that no longer exists.

pub(crate) mod monkey;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use mend_api::{ChaosApi, ChaosDto, ChaosOrder, ChaosRefusal, ChaosStatus, HealingApi, MonkeyStatus, Pending};
use mend_supervisor::{ReplicaStatus, Supervisor};
use mend_types::{ChaosFault, Clock, Event, EventKind, EventSink, ServiceName, Timestamp};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::TcpStream;

use crate::traffic::Traffic;

/// How a fault was put in place, which decides how it is undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Through {
    Signal,
    Knob,
    Proxy,
}

impl Through {
    fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "signal",
            Self::Knob => "knob",
            Self::Proxy => "proxy",
        }
    }
}

/// A replica hit by a fault, as it was then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    index: u32,
    pid: u32,
    generation: u64,
    port: Option<u16>,
}

#[derive(Debug)]
struct Active {
    dto: ChaosDto,
    targets: Vec<Target>,
    through: Through,
    /// The caller a partition cuts off.
    caller: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    active: Vec<Active>,
    monkey: Option<MonkeyStatus>,
    /// When the monkey last injected (or would have, in dry-run).
    monkey_last: Option<Timestamp>,
    /// The tasks that revert active faults, ended at shutdown.
    reverters: Vec<tokio::task::AbortHandle>,
}

struct Inner {
    supervisor: Arc<Supervisor>,
    traffic: Arc<Traffic>,
    events: Arc<dyn EventSink>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// The chaos engine: the API's `ChaosApi`, shared with the monkey.
#[derive(Clone)]
pub(crate) struct Chaos(Arc<Inner>);

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Chaos {
    pub(crate) fn new(
        supervisor: Arc<Supervisor>,
        traffic: Arc<Traffic>,
        events: Arc<dyn EventSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self(Arc::new(Inner { supervisor, traffic, events, clock, state: Mutex::new(State::default()) }))
    }

    fn statuses(&self, service: &str) -> Option<Vec<ReplicaStatus>> {
        self.0.supervisor.service(service).map(|handle| handle.statuses())
    }

    /// The replica a per-replica fault hits: the one asked for, or the lowest ready one.
    fn pick(&self, order: &ChaosOrder) -> Result<Target, ChaosRefusal> {
        let statuses = self
            .statuses(&order.service)
            .ok_or_else(|| ChaosRefusal::NotFound(format!("unknown service {:?}", order.service)))?;
        let status = match order.replica {
            Some(index) => statuses
                .iter()
                .find(|status| status.index == index)
                .ok_or_else(|| ChaosRefusal::NotFound(format!("service {:?} has no replica {index}", order.service)))?,
            None => statuses.iter().find(|status| status.ready && status.pid.is_some()).ok_or_else(|| {
                ChaosRefusal::Conflict(format!("service {:?} has no ready replica to hit", order.service))
            })?,
        };
        let pid = status
            .pid
            .ok_or_else(|| ChaosRefusal::Conflict(format!("{}/{} has no process now", order.service, status.index)))?;
        Ok(Target { index: status.index, pid, generation: status.generation, port: status.port })
    }

    /// Every replica with a process, for service-wide knob faults.
    fn running(&self, service: &str) -> Vec<Target> {
        self.statuses(service)
            .unwrap_or_default()
            .iter()
            .filter_map(|status| {
                Some(Target { index: status.index, pid: status.pid?, generation: status.generation, port: status.port })
            })
            .collect()
    }

    /// Whether `target` is still the process it was (same pid and generation).
    fn still_there(&self, service: &str, target: &Target) -> bool {
        self.statuses(service).unwrap_or_default().iter().any(|status| {
            status.index == target.index && status.pid == Some(target.pid) && status.generation == target.generation
        })
    }

    /// Refuses a second fault on the same replica, or of the same kind on the same service.
    fn check_free(&self, order: &ChaosOrder, target: Option<&Target>) -> Result<(), ChaosRefusal> {
        let state = lock(&self.0.state);
        for active in &state.active {
            if active.dto.service != order.service {
                continue;
            }
            let same_replica = target.is_some_and(|target| active.targets.iter().any(|t| t.index == target.index))
                && active.dto.fault.per_replica();
            if same_replica || active.dto.fault == order.fault {
                return Err(ChaosRefusal::Conflict(format!(
                    "{} is already active on {} (one fault at a time there; it ends at {})",
                    active.dto.fault, active.dto.service, active.dto.until
                )));
            }
        }
        Ok(())
    }

    /// Injects `order` now.
    pub(crate) async fn inject_now(&self, order: ChaosOrder) -> Result<ChaosDto, ChaosRefusal> {
        let per_replica = order.fault.per_replica();
        let target = if per_replica { Some(self.pick(&order)?) } else { None };
        self.check_free(&order, target.as_ref())?;
        let secs = order.duration.as_secs_f64();
        let (through, targets, description) = match order.fault {
            ChaosFault::Kill => {
                let target = target.ok_or_else(|| ChaosRefusal::Conflict("no replica".to_owned()))?;
                signal(target.pid, Signal::SIGKILL)?;
                (
                    Through::Signal,
                    vec![target],
                    format!("killed {}/{} (pid {})", order.service, target.index, target.pid),
                )
            }
            ChaosFault::Hang => {
                let target = target.ok_or_else(|| ChaosRefusal::Conflict("no replica".to_owned()))?;
                signal(target.pid, Signal::SIGSTOP)?;
                let text = format!("stopped {}/{} (pid {}) for {secs}s", order.service, target.index, target.pid);
                (Through::Signal, vec![target], text)
            }
            ChaosFault::Cpu | ChaosFault::Leak => {
                let target = target.ok_or_else(|| ChaosRefusal::Conflict("no replica".to_owned()))?;
                let path = if order.fault == ChaosFault::Cpu {
                    format!("/fault/cpu?threads=1&for={}ms", order.duration.as_millis())
                } else {
                    format!("/fault/leak?mib_per_sec={}", order.mib_per_sec.unwrap_or(4.0))
                };
                if !knob(target.port, &path).await {
                    return Err(ChaosRefusal::Conflict(format!(
                        "{}/{} has no fault endpoint for {} (POST {path} failed): only mend-demo-like targets have it",
                        order.service, target.index, order.fault
                    )));
                }
                let what = if order.fault == ChaosFault::Cpu {
                    "burning a CPU".to_owned()
                } else {
                    format!("leaking {} MiB/s", order.mib_per_sec.unwrap_or(4.0))
                };
                (Through::Knob, vec![target], format!("{what} in {}/{} for {secs}s", order.service, target.index))
            }
            ChaosFault::Slow | ChaosFault::Errors => self.service_fault(&order).await?,
            ChaosFault::Partition => {
                let caller = order.caller.clone().unwrap_or_default();
                let proxy = self.0.traffic.proxy(&order.service).ok_or_else(|| {
                    ChaosRefusal::Conflict(format!(
                        "service {:?} has no proxy: a partition works on [service.{}.proxy]",
                        order.service, order.service
                    ))
                })?;
                proxy.set_partition(&mend_proxy::Partition {
                    caller: caller.clone(),
                    until: self.0.clock.now() + order.duration,
                });
                (Through::Proxy, Vec::new(), format!("cut {caller} → {} for {secs}s", order.service))
            }
        };
        let started = self.0.clock.wall();
        let dto = {
            let mut state = lock(&self.0.state);
            state.next_id += 1;
            let dto = ChaosDto {
                id: state.next_id,
                service: order.service.clone(),
                fault: order.fault,
                replica: targets.first().filter(|_| per_replica).map(|t| t.index),
                pid: targets.first().filter(|_| per_replica).map(|t| t.pid),
                through: through.as_str().to_owned(),
                started,
                until: started.saturating_add(order.duration),
                description: description.clone(),
                by: order.by.clone(),
            };
            if order.fault != ChaosFault::Kill {
                state.active.push(Active {
                    dto: dto.clone(),
                    targets: targets.clone(),
                    through,
                    caller: order.caller.clone(),
                });
            }
            dto
        };
        self.emit(EventKind::ChaosStarted, &dto, &description, None);
        if order.fault != ChaosFault::Kill {
            let chaos = self.clone();
            let (id, duration) = (dto.id, order.duration);
            let reverter = tokio::spawn(async move {
                tokio::time::sleep(duration).await;
                chaos.revert(id).await;
            });
            let mut state = lock(&self.0.state);
            state.reverters.retain(|task| !task.is_finished());
            state.reverters.push(reverter.abort_handle());
        }
        Ok(dto)
    }

    /// slow and errors: every replica's knob when they have one, else the proxy's fault injection.
    async fn service_fault(&self, order: &ChaosOrder) -> Result<(Through, Vec<Target>, String), ChaosRefusal> {
        let percent = order.percent.unwrap_or(100.0);
        let secs = order.duration.as_secs_f64();
        let (path, what) = if order.fault == ChaosFault::Slow {
            let delay = order.delay.unwrap_or(Duration::from_millis(500));
            (
                format!("/fault/slow?delay={}ms&percent={percent}", delay.as_millis()),
                format!("{} ms added to {percent}% of requests", delay.as_millis()),
            )
        } else {
            let status = order.status.unwrap_or(500);
            (
                format!("/fault/errors?rate={}&status={status}", percent / 100.0),
                format!("{status} on {percent}% of requests"),
            )
        };
        let replicas = self.running(&order.service);
        let mut hit = Vec::new();
        for target in &replicas {
            if knob(target.port, &path).await {
                hit.push(*target);
            }
        }
        if !hit.is_empty() {
            if hit.len() < replicas.len() {
                tracing::warn!(service = %order.service, hit = hit.len(), of = replicas.len(), "chaos: not every replica took the fault");
            }
            return Ok((Through::Knob, hit, format!("{what} of {} for {secs}s (its fault endpoints)", order.service)));
        }
        let spec = mend_api::FaultSpec {
            latency: (order.fault == ChaosFault::Slow).then(|| order.delay.unwrap_or(Duration::from_millis(500))),
            status: (order.fault == ChaosFault::Errors).then(|| order.status.unwrap_or(500)),
            abort: false,
            percent,
        };
        if mend_api::TrafficApi::inject(&*self.0.traffic, &order.service, &spec, order.duration).is_none() {
            return Err(ChaosRefusal::Conflict(format!(
                "service {:?} has neither fault endpoints nor a proxy: {} cannot be injected",
                order.service, order.fault
            )));
        }
        Ok((Through::Proxy, Vec::new(), format!("{what} of {} for {secs}s (its proxy)", order.service)))
    }

    /// Ends fault `id`: resumes, resets or lets the proxy's expiry stand; records `chaos_ended`.
    async fn revert(&self, id: u64) {
        let Some(active) = ({
            let mut state = lock(&self.0.state);
            let position = state.active.iter().position(|active| active.dto.id == id);
            position.map(|position| state.active.remove(position))
        }) else {
            return;
        };
        let service = active.dto.service.clone();
        let mut outcome = Vec::new();
        for target in &active.targets {
            let there = self.still_there(&service, target);
            let done = match (active.through, there) {
                (_, false) => format!("{service}/{} was replaced by mend: nothing to undo", target.index),
                (Through::Signal, true) => match signal(target.pid, Signal::SIGCONT) {
                    Ok(()) => format!("resumed {service}/{} (pid {})", target.index, target.pid),
                    Err(_) => format!("{service}/{} is gone", target.index),
                },
                (Through::Knob, true) => {
                    if knob(target.port, "/fault/reset").await {
                        format!("reset {service}/{}", target.index)
                    } else {
                        format!("could not reset {service}/{} (its fault endpoint did not answer)", target.index)
                    }
                }
                (Through::Proxy, true) => String::new(),
            };
            outcome.push(done);
        }
        if let (Some(caller), Some(proxy)) = (&active.caller, self.0.traffic.proxy(&service)) {
            // Expired by itself already at the proxy's clock; ending it here too keeps both in step.
            let _ = proxy.heal_partition(caller);
        }
        outcome.retain(|line| !line.is_empty());
        let message = if outcome.is_empty() {
            format!("ended: {}", active.dto.description)
        } else {
            format!("ended: {} ({})", active.dto.description, outcome.join(", "))
        };
        self.emit(EventKind::ChaosEnded, &active.dto, &message, None);
    }

    fn emit(&self, kind: EventKind, dto: &ChaosDto, message: &str, dry_run: Option<bool>) {
        let mut event = Event::new(self.0.clock.wall(), kind, format!("chaos: {message}"))
            .detail("fault", dto.fault.as_str())
            .detail("through", dto.through.as_str())
            .detail("by", dto.by.as_str())
            .detail("chaos_id", dto.id)
            .detail("until", dto.until.to_string());
        if let Ok(name) = ServiceName::new(&dto.service) {
            event = event.service(&name);
        }
        if let Some(replica) = dto.replica {
            event = event.detail("replica", replica);
        }
        if let Some(dry_run) = dry_run {
            event = event.detail("dry_run", dry_run);
        }
        match kind {
            EventKind::ChaosStarted => tracing::warn!(service = %dto.service, fault = %dto.fault, "{message}"),
            _ => tracing::info!(service = %dto.service, fault = %dto.fault, "{message}"),
        }
        self.0.events.emit(event);
    }

    /// Ends the reverter tasks (at shutdown: the supervisor then stops every replica, resuming stopped
    /// ones), so that nothing holds the supervisor or the proxies any more.
    pub(crate) fn shutdown(&self) {
        for task in lock(&self.0.state).reverters.drain(..) {
            task.abort();
        }
    }

    /// Faults active now, for the monkey's "one at a time".
    pub(crate) fn n_active(&self) -> usize {
        lock(&self.0.state).active.len()
    }

    /// Runs the chaos monkey until the daemon ends: looks often, decides purely, injects (or, in
    /// dry-run, records what it would have done).
    pub(crate) async fn monkey_loop(self, monkey: mend_config::Monkey, healing: Arc<dyn HealingApi>) {
        let mut rng = match monkey.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        let started = self.0.clock.wall();
        lock(&self.0.state).monkey = Some(MonkeyStatus { dry_run: monkey.dry_run, last: None, last_at: None });
        let look_every = (monkey.every / 10).clamp(Duration::from_secs(1), Duration::from_secs(5));
        let mut ticker = tokio::time::interval(look_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let healing_status = healing.status().await.ok();
            // Read apart: a guard inside the struct literal would live to its end, and `n_active` locks.
            let since = lock(&self.0.state).monkey_last.unwrap_or(started);
            let view = monkey::View {
                now: self.0.clock.wall(),
                since,
                healing_paused: healing_status.as_ref().is_none_or(|status| status.paused),
                open_incidents: healing_status.as_ref().map_or(0, |status| status.open_incidents),
                active_faults: self.n_active(),
                services: monkey
                    .services
                    .iter()
                    .map(|name| {
                        let statuses = self.statuses(name.as_str()).unwrap_or_default();
                        monkey::ServiceView {
                            name: name.to_string(),
                            desired: statuses.len() as u32,
                            ready: statuses.iter().filter(|s| s.ready && s.pid.is_some()).map(|s| s.index).collect(),
                        }
                    })
                    .collect(),
            };
            let decision = monkey::decide(&monkey, &view, &mut rng);
            let now = self.0.clock.wall();
            let words = decision.to_string();
            if let monkey::Decision::Inject { service, fault, replica } = &decision {
                lock(&self.0.state).monkey_last = Some(now);
                if monkey.dry_run {
                    let dto = ChaosDto {
                        id: 0,
                        service: service.clone(),
                        fault: *fault,
                        replica: *replica,
                        pid: None,
                        through: "dry_run".to_owned(),
                        started: now,
                        until: now.saturating_add(monkey.duration),
                        description: words.clone(),
                        by: "monkey".to_owned(),
                    };
                    self.emit(EventKind::ChaosStarted, &dto, &format!("monkey (dry run) would {words}"), Some(true));
                } else {
                    let order = ChaosOrder {
                        service: service.clone(),
                        fault: *fault,
                        replica: *replica,
                        duration: if *fault == ChaosFault::Kill { Duration::ZERO } else { monkey.duration },
                        caller: None,
                        delay: None,
                        percent: None,
                        status: None,
                        mib_per_sec: None,
                        by: "monkey".to_owned(),
                    };
                    if let Err(refused) = self.inject_now(order).await {
                        tracing::warn!(refused = ?refused, "chaos monkey: the fault was refused");
                    }
                }
            } else {
                tracing::debug!(decision = %words, "chaos monkey");
            }
            let mut state = lock(&self.0.state);
            if let Some(status) = state.monkey.as_mut() {
                status.last = Some(words);
                status.last_at = Some(now);
            }
        }
    }
}

impl ChaosApi for Chaos {
    fn inject(&self, order: ChaosOrder) -> Pending<Result<ChaosDto, ChaosRefusal>> {
        let chaos = self.clone();
        Box::pin(async move { chaos.inject_now(order).await })
    }

    fn status(&self) -> ChaosStatus {
        let state = lock(&self.0.state);
        ChaosStatus {
            active: state.active.iter().map(|active| active.dto.clone()).collect(),
            monkey: state.monkey.clone(),
        }
    }
}

/// Signals the process group of `pid` (a replica leads its own group).
fn signal(pid: u32, signal: Signal) -> Result<(), ChaosRefusal> {
    let group = i32::try_from(pid).map_err(|_| ChaosRefusal::Conflict(format!("pid {pid} is out of range")))?;
    killpg(Pid::from_raw(group), signal)
        .map_err(|errno| ChaosRefusal::Conflict(format!("cannot send {signal} to pid {pid}: {errno}")))
}

/// `POST http://127.0.0.1:PORT{path}`: true on a 2xx answer within two seconds. Only loopback: the
/// replica's port as the supervisor knows it.
/// How long a replica's fault endpoint has to answer.
const KNOB_TIMEOUT: Duration = Duration::from_secs(5);

async fn knob(port: Option<u16>, path: &str) -> bool {
    let Some(port) = port else { return false };
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let exchange = async {
        let stream = TcpStream::connect(address).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(hyper::header::HOST, address.to_string())
            .body(http_body_util::Full::new(Bytes::new()))
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status().is_success())
    };
    // Generous: a replica under load (or a debug build on a busy machine) may take a moment to answer, and
    // a knob taken for absent sends the fault through the proxy instead.
    matches!(tokio::time::timeout(KNOB_TIMEOUT, exchange).await, Ok(Some(true)))
}
