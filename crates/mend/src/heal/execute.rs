//! The executor: carries out a permitted action through the supervisor, the proxies, hooks and
//! webhooks, and says how it ended. It takes a [`Permit`]: nothing else can make it act.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use mend_act::Permit;
use mend_config::{Config, Hook, NotifyTarget};
use mend_supervisor::{Control, ControlError, Request, Supervisor};
use mend_types::{ActionId, ActionKind, ActionRecord, Actor, Incident, ReleaseName, ServiceName};

use super::{Outcome, hook, notify};
use crate::traffic::Traffic;

/// Carries out permitted actions.
pub(crate) struct Executor {
    supervisor: Weak<Supervisor>,
    traffic: Weak<Traffic>,
    hooks: RwLock<Vec<Hook>>,
    notify: RwLock<Vec<NotifyTarget>>,
    /// How long operators' commands wait for their replicas (by action).
    waits: Mutex<HashMap<ActionId, Duration>>,
    /// Actions journalled, by action and state (for /metrics and the log; they agree with the journal).
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Each service's last good release, kept by the rollouts (what a `rollback` returns to).
    pub(crate) last_good: RwLock<HashMap<ServiceName, ReleaseName>>,
    /// Told when a `rollback` returned a service to its last good release (the rollouts persist it).
    pub(crate) on_restored: RwLock<Option<Restored>>,
}

/// What the executor tells when a rollback restored a release: the service, the release, why.
pub(crate) type Restored = Arc<dyn Fn(&ServiceName, &ReleaseName, &str) + Send + Sync>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Executor {
    /// An executor for `config`'s hooks and targets, acting through `supervisor` and `traffic` (held
    /// weakly: the executor never keeps them from shutting down).
    pub(crate) fn new(config: &Config, supervisor: &Arc<Supervisor>, traffic: &Arc<Traffic>) -> Self {
        Self {
            supervisor: Arc::downgrade(supervisor),
            traffic: Arc::downgrade(traffic),
            hooks: RwLock::new(config.hooks.clone()),
            notify: RwLock::new(config.notify.clone()),
            waits: Mutex::new(HashMap::new()),
            counts: Mutex::new(BTreeMap::new()),
            last_good: RwLock::new(HashMap::new()),
            on_restored: RwLock::new(None),
        }
    }

    /// Takes a reloaded config's hooks and targets.
    pub(crate) fn reconfigure(&self, config: &Config) {
        *self.hooks.write().unwrap_or_else(PoisonError::into_inner) = config.hooks.clone();
        *self.notify.write().unwrap_or_else(PoisonError::into_inner) = config.notify.clone();
    }

    /// How long operator command `id` waits for its replicas.
    pub(crate) fn set_wait(&self, id: ActionId, wait: Duration) {
        lock(&self.waits).insert(id, wait);
    }

    /// Counts a journalled record.
    pub(crate) fn count(&self, record: &ActionRecord) {
        *lock(&self.counts).entry((record.action.label(), record.state.as_str())).or_default() += 1;
    }

    /// Actions journalled so far, by action and state.
    pub(crate) fn counts(&self) -> Vec<((&'static str, &'static str), u64)> {
        lock(&self.counts).iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// Carries out `permit`'s action; `incident` is its incident (for hooks and webhooks).
    pub(crate) async fn execute(&self, permit: Permit, incident: Option<Incident>) -> Outcome {
        let record = permit.record().clone();
        let wait = lock(&self.waits).remove(&record.id);
        let result = self.act(&record, incident.as_ref(), wait).await;
        let (succeeded, message, output, control_error) = match result {
            Ok((message, output)) => (true, message, output, None),
            Err(Failure { message, output, control }) => (false, message, output, control),
        };
        Outcome { id: record.id, succeeded, message, output, control_error }
    }

    async fn act(
        &self,
        record: &ActionRecord,
        incident: Option<&Incident>,
        wait: Option<Duration>,
    ) -> Result<(String, String), Failure> {
        let supervisor = || self.supervisor.upgrade().ok_or_else(|| Failure::from(ControlError::ShuttingDown));
        let service_name = || record.service.clone().ok_or_else(|| Failure::message("no service to act on"));
        let request = match &record.actor {
            Actor::Operator => {
                Request::operator(Some(&record.reason).filter(|r| *r != "requested by operator").map(|r| r.as_str()))
            }
            Actor::Policy { .. } => Request::policy(&record.reason),
            Actor::Autoscaler => Request { reason: format!("autoscaler: {}", record.reason).into(), counted: false },
        };
        match &record.action {
            ActionKind::Restart | ActionKind::RollingRestart | ActionKind::Stop | ActionKind::Start => {
                let supervisor = supervisor()?;
                let name = service_name()?;
                let service =
                    supervisor.service(name.as_str()).ok_or(ControlError::UnknownService(name.to_string()))?;
                let wait = wait.unwrap_or(service.config().stop_timeout + Duration::from_secs(60));
                let control = match record.action {
                    ActionKind::Stop => Control::Stop,
                    ActionKind::Start => Control::Start,
                    _ => Control::Restart,
                };
                let replica = if record.action == ActionKind::RollingRestart { None } else { record.replica };
                let before: Vec<(u32, Option<u32>)> = service.statuses().iter().map(|s| (s.index, s.pid)).collect();
                let after = supervisor.control_for(name.as_str(), replica, control, request, wait).await?;
                let described: Vec<String> = after
                    .iter()
                    .map(|status| {
                        let was = before.iter().find(|(index, _)| *index == status.index).and_then(|(_, pid)| *pid);
                        let pid = |pid: Option<u32>| pid.map_or("-".to_owned(), |p| p.to_string());
                        format!("replica {} pid {} -> {} ({})", status.index, pid(was), pid(status.pid), status.state)
                    })
                    .collect();
                let ok = match record.action {
                    ActionKind::Stop => after.iter().all(|s| s.down),
                    _ => after.iter().all(|s| s.ready || s.completed),
                };
                let message = format!("{}: {}", record.action.describe(), described.join(", "));
                if ok {
                    Ok((message, String::new()))
                } else {
                    Err(Failure::message(format!("{message}: not ready again")))
                }
            }
            ActionKind::Scale { delta } => {
                let supervisor = supervisor()?;
                let name = service_name()?;
                let service =
                    supervisor.service(name.as_str()).ok_or(ControlError::UnknownService(name.to_string()))?;
                let current = service.config().replicas;
                let target = (i64::from(current) + i64::from(*delta)).clamp(0, 1024) as u32;
                let wait = wait.unwrap_or(service.config().stop_timeout + Duration::from_secs(60));
                let after = supervisor.scale(name.as_str(), target, wait).await?;
                let n_ready = after.iter().filter(|s| s.ready).count();
                Ok((format!("scaled {name} from {current} to {target} replicas ({n_ready} ready)"), String::new()))
            }
            ActionKind::Deploy { release, replicas } => {
                let supervisor = supervisor()?;
                let name = service_name()?;
                let wait = wait.unwrap_or(Duration::from_secs(120));
                let after = supervisor.start_canary(name.as_str(), release, *replicas, wait).await?;
                let n_ready = after.iter().filter(|s| s.ready).count();
                let message =
                    format!("started {} replicas of {release} as {name}'s canary ({n_ready} ready)", after.len());
                if n_ready == after.len() { Ok((message, String::new())) } else { Err(Failure::message(message)) }
            }
            ActionKind::CanaryWeight { weight } => {
                let name = service_name()?;
                let traffic = self.traffic.upgrade().ok_or_else(|| Failure::from(ControlError::ShuttingDown))?;
                if mend_api::TrafficApi::set_canary_weight(&*traffic, name.as_str(), *weight) {
                    Ok((format!("{name}'s canary gets {weight}% of unpinned requests"), String::new()))
                } else {
                    Err(Failure::message(format!("{name} runs no canary behind a proxy")))
                }
            }
            ActionKind::Promote => {
                let supervisor = supervisor()?;
                let name = service_name()?;
                let service =
                    supervisor.service(name.as_str()).ok_or(ControlError::UnknownService(name.to_string()))?;
                let wait = wait.unwrap_or(service.config().stop_timeout + Duration::from_secs(120));
                let canary = service.config().canary.as_ref().map(|canary| canary.release.clone());
                let after = supervisor.promote_canary(name.as_str(), wait).await?;
                let n_ready = after.iter().filter(|s| s.ready).count();
                let release = canary.map_or_else(|| "?".to_owned(), |release| release.to_string());
                Ok((
                    format!("{release} is {name}'s stable release ({n_ready} of {} replicas ready)", after.len()),
                    String::new(),
                ))
            }
            ActionKind::Rollback => {
                let supervisor = supervisor()?;
                let name = service_name()?;
                let service =
                    supervisor.service(name.as_str()).ok_or(ControlError::UnknownService(name.to_string()))?;
                let config = service.config();
                let wait = wait.unwrap_or(config.stop_timeout + Duration::from_secs(120));
                if let Some(canary) = &config.canary {
                    // Out of the split at once, then drained and stopped.
                    if let Some(traffic) = self.traffic.upgrade() {
                        mend_api::TrafficApi::set_canary_weight(&*traffic, name.as_str(), 0);
                    }
                    supervisor.stop_canary(name.as_str(), wait).await?;
                    return Ok((
                        format!("{name}'s canary {} was taken out: weight 0, drained, stopped", canary.release),
                        String::new(),
                    ));
                }
                if !matches!(record.actor, Actor::Policy { .. }) {
                    // A rollout's rollback (an operator's abort or a verdict) takes its canary out and
                    // nothing more: with none left (a policy's rollback took it out first), the stable
                    // release is the good one and stays. Only a policy returns to the last good release.
                    return Ok((
                        format!("{name} runs no canary: nothing to roll back, {} stays", config.stable_release),
                        String::new(),
                    ));
                }
                let last_good = self
                    .last_good
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&name)
                    .cloned()
                    .filter(|release| *release != config.stable_release)
                    .ok_or_else(|| {
                        Failure::message(format!(
                            "{name} runs its last good release already ({})",
                            config.stable_release
                        ))
                    })?;
                let n_stable = config.replicas;
                supervisor.start_canary(name.as_str(), &last_good, n_stable.max(1), wait).await?;
                let after = supervisor.promote_canary(name.as_str(), wait).await?;
                let n_ready = after.iter().filter(|s| s.ready).count();
                let restored = self.on_restored.read().unwrap_or_else(PoisonError::into_inner).clone();
                if let Some(restored) = restored {
                    restored(&name, &last_good, &record.reason);
                }
                Ok((
                    format!(
                        "{name} was returned to its last good release {last_good} ({n_ready} of {} replicas ready)",
                        after.len()
                    ),
                    String::new(),
                ))
            }
            ActionKind::Eject { for_ms } => {
                let name = service_name()?;
                let index =
                    record.replica.ok_or_else(|| Failure::message("eject needs a replica: the signal named none"))?;
                let supervisor = supervisor()?;
                let service =
                    supervisor.service(name.as_str()).ok_or(ControlError::UnknownService(name.to_string()))?;
                let pid = service
                    .statuses()
                    .iter()
                    .find(|s| s.index == index)
                    .and_then(|s| s.pid)
                    .ok_or_else(|| Failure::message(format!("replica {index} of {name} runs no process")))?;
                drop(supervisor);
                let traffic = self.traffic.upgrade().ok_or_else(|| Failure::from(ControlError::ShuttingDown))?;
                let drained = traffic
                    .eject(name.as_str(), index, pid)
                    .ok_or_else(|| Failure::message(format!("{name} has no proxy to eject replicas from")))?;
                drop(traffic);
                let outcome = drained.await;
                tokio::time::sleep(Duration::from_millis(*for_ms)).await;
                let back = self.traffic.upgrade().is_some_and(|traffic| traffic.readmit(name.as_str(), index, pid));
                let message = format!(
                    "ejected replica {index} (pid {pid}) of {name} for {}s ({outcome:?}); {}",
                    for_ms / 1000,
                    if back { "back in rotation" } else { "its process is gone from the table" }
                );
                Ok((message, String::new()))
            }
            ActionKind::Hook { name } => {
                let hook = self
                    .hooks
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .find(|hook| hook.name == *name)
                    .cloned()
                    .ok_or_else(|| Failure::message(format!("no hook {name:?} (removed by a reload?)")))?;
                let (ok, message, output) = hook::run(&hook, &environment(record, incident)).await;
                if ok { Ok((message, output)) } else { Err(Failure { message, output, control: None }) }
            }
            ActionKind::Notify { name } => {
                let target = self
                    .notify
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .find(|target| target.name == *name)
                    .cloned()
                    .ok_or_else(|| {
                        Failure::message(format!("no notification target {name:?} (removed by a reload?)"))
                    })?;
                let (ok, message, output) = notify::post(&target, body(record, incident)).await;
                if ok { Ok((message, output)) } else { Err(Failure { message, output, control: None }) }
            }
            ActionKind::Escalate => {
                let targets = self.notify.read().unwrap_or_else(PoisonError::into_inner).clone();
                let body = body(record, incident);
                let mut told = Vec::new();
                let mut failed = Vec::new();
                for target in &targets {
                    let (ok, message, _) = notify::post(target, body.clone()).await;
                    if ok { told.push(target.name.clone()) } else { failed.push(message) }
                }
                if failed.is_empty() {
                    Ok((format!("escalated: told {}", told.join(", ")), String::new()))
                } else {
                    Err(Failure::message(format!("escalated: told {}; {}", told.join(", "), failed.join("; "))))
                }
            }
        }
    }
}

/// Why an action failed.
struct Failure {
    message: String,
    output: String,
    /// The supervisor's refusal (the API answers an operator with its status).
    control: Option<ControlError>,
}

impl Failure {
    fn message(message: impl Into<String>) -> Self {
        Self { message: message.into(), output: String::new(), control: None }
    }
}

impl From<ControlError> for Failure {
    fn from(error: ControlError) -> Self {
        Self { message: error.to_string(), output: String::new(), control: Some(error) }
    }
}

/// What a hook finds in its environment.
fn environment(record: &ActionRecord, incident: Option<&Incident>) -> Vec<(String, String)> {
    let mut env = vec![
        ("MEND_ACTION_ID".to_owned(), record.id.to_string()),
        ("MEND_ACTION".to_owned(), record.action.describe()),
        ("MEND_ACTION_REASON".to_owned(), record.reason.clone()),
    ];
    if let Some(service) = &record.service {
        env.push(("MEND_SERVICE".to_owned(), service.to_string()));
    }
    if let Some(replica) = record.replica {
        env.push(("MEND_REPLICA".to_owned(), replica.to_string()));
    }
    if let Some(incident) = incident {
        env.push(("MEND_INCIDENT_ID".to_owned(), incident.id.to_string()));
        env.push(("MEND_INCIDENT_STATE".to_owned(), incident.state.to_string()));
        env.push(("MEND_INCIDENT_DIAGNOSIS".to_owned(), incident.diagnosis.name.clone()));
        let services: Vec<&str> = incident.services.iter().map(|s| s.as_str()).collect();
        env.push(("MEND_INCIDENT_SERVICES".to_owned(), services.join(",")));
        let mut json = serde_json::to_string(incident).unwrap_or_default();
        // The environment has limits (128 KiB per string on Linux): the timeline is cut first.
        if json.len() > 64 * 1024 {
            let mut lighter = incident.clone();
            lighter.timeline.truncate(10);
            json = serde_json::to_string(&lighter).unwrap_or_default();
        }
        env.push(("MEND_INCIDENT_JSON".to_owned(), json));
    }
    env
}

/// A webhook's body: the incident and the action.
fn body(record: &ActionRecord, incident: Option<&Incident>) -> Bytes {
    let value = serde_json::json!({
        "incident": incident,
        "action": record,
        "mend": { "version": env!("CARGO_PKG_VERSION") },
    });
    Bytes::from(value.to_string())
}
