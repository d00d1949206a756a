//! Rollouts at the edge: `mend deploy` starts one; a task per rollout feeds `mend_act::rollout`'s pure
//! controller with what the supervisor and the proxy show (the canary's readiness and trouble, the
//! per-release window of counts and latencies) and carries its decisions out as actions through the heal
//! stage (journalled before and after, like an operator's), persisting the rollout after every move.
//!
//! A mend restarted mid-rollout reads the rollout back: a step in progress resumes (the canary is started
//! again and the step bakes with a new window), a promotion is done again, a rollback is finished.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mend_act::rollout::{
    Analysis, Observation, ReleaseWindow, RolloutCommand, RolloutController, RolloutDecision, Window,
};
use mend_api::{DeployOrder, HealingApi, OperatorCommand, RolloutApi, RolloutError, RolloutOrder, RolloutStatus};
use mend_config::Config;
use mend_proxy::{ProxyHandle, Release};
use mend_store::{JournalEntry, Store};
use mend_supervisor::Supervisor;
use mend_types::{
    ActionKind, BuiltinDiagnosis, Clock, Event, EventKind, EventSink, ReleaseChange, ReleaseHistoryEntry, ReleaseName,
    ReplicaId, Rollout, RolloutPhase, ServiceName, ServiceReleases, SignalSink, SignalState, Timestamp,
};

use crate::heal::Executor;
use crate::traffic::Traffic;

/// How often a rollout looks at its canary.
const TICK: Duration = Duration::from_millis(250);
/// How long a deploy waits for the canary's replicas to be ready.
const READY_WAIT: Duration = Duration::from_secs(120);
/// Restarts of canary replicas since the rollout began that count as a crash loop.
const CRASH_LOOP_RESTARTS: u64 = 2;

/// One rollout in progress.
struct Running {
    controller: RolloutController,
    /// An operator's order, taken by the next tick.
    order: Option<RolloutCommand>,
}

/// The proxy's cumulative figures when the current window began.
#[derive(Clone, Copy, Default)]
struct WindowStart {
    since: Timestamp,
    stable: (u64, u64),
    canary: (u64, u64),
    stable_written: u64,
    canary_written: u64,
}

/// Every rollout of the daemon.
pub(crate) struct Rollouts {
    supervisor: Arc<Supervisor>,
    traffic: Arc<Traffic>,
    healing: Arc<dyn HealingApi>,
    store: Arc<Store>,
    events: Arc<dyn EventSink>,
    signals: Arc<dyn SignalSink>,
    clock: Arc<dyn Clock>,
    executor: Arc<Executor>,
    analysis: Analysis,
    running: Mutex<HashMap<ServiceName, Arc<Mutex<Running>>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(status: u16, message: impl Into<String>) -> RolloutError {
    RolloutError { status, message: message.into() }
}

/// Before the supervisor starts: each service runs the stable release the store says it promoted last
/// (when the config still has that release), not the file's.
pub(crate) fn apply_persisted_releases(config: &mut Config, store: &Store) {
    for service in &mut config.services {
        let Ok(Some(stored)) = store.service_releases(service.name.as_str()) else { continue };
        if stored.stable != service.stable_release && service.release(&stored.stable).is_some() {
            tracing::info!(service = %service.name, release = %stored.stable, "runs the release promoted last");
            if service.canary.as_ref().is_some_and(|canary| canary.release == stored.stable) {
                service.canary = None;
            }
            service.stable_release = stored.stable.clone();
            service.command = service.stable().command.clone();
        }
    }
}

/// The parts rollouts act through.
pub(crate) struct RolloutParts {
    pub(crate) supervisor: Arc<Supervisor>,
    pub(crate) traffic: Arc<Traffic>,
    pub(crate) healing: Arc<dyn HealingApi>,
    pub(crate) store: Arc<Store>,
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) signals: Arc<dyn SignalSink>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) executor: Arc<Executor>,
}

impl Rollouts {
    /// Rollouts acting through `parts`; rollouts the store holds unfinished are resumed.
    pub(crate) fn start(parts: RolloutParts) -> Arc<Self> {
        let rollouts = Arc::new(Self {
            supervisor: parts.supervisor,
            traffic: parts.traffic,
            healing: parts.healing,
            store: parts.store,
            events: parts.events,
            signals: parts.signals,
            clock: parts.clock,
            executor: parts.executor,
            analysis: Analysis::default(),
            running: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        });
        // A healing `rollback` that returned a service to its last good release is persisted: the next
        // mend starts on it.
        let (store, clock) = (rollouts.store.clone(), rollouts.clock.clone());
        let restored: crate::heal::Restored =
            Arc::new(move |service: &ServiceName, release: &ReleaseName, why: &str| {
                let stored = store.service_releases(service.as_str()).ok().flatten();
                let releases = ServiceReleases {
                    service: service.clone(),
                    stable: release.clone(),
                    last_good: Some(release.clone()),
                    rollout: stored.and_then(|stored| stored.rollout),
                };
                let entry = ReleaseHistoryEntry {
                    service: service.clone(),
                    release: release.clone(),
                    at: clock.wall(),
                    change: ReleaseChange::Restored,
                    reason: why.to_owned(),
                };
                let entries =
                    vec![JournalEntry::ReleaseHistory(Box::new(entry)), JournalEntry::Releases(Box::new(releases))];
                if let Err(error) = tokio::task::block_in_place(|| store.journal(entries)) {
                    tracing::error!(error = %error, service = %service, "cannot journal the restored release");
                }
            });
        *rollouts.executor.on_restored.write().unwrap_or_else(PoisonError::into_inner) = Some(restored);
        for service in rollouts.supervisor.services() {
            let name = service.config().name.clone();
            let Ok(Some(stored)) = rollouts.store.service_releases(name.as_str()) else { continue };
            if let Some(last_good) = &stored.last_good {
                rollouts
                    .executor
                    .last_good
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.clone(), last_good.clone());
            }
            let Some(rollout) = stored.rollout.filter(|rollout| !rollout.phase.is_done()) else { continue };
            let mut controller = RolloutController::new(rollout, rollouts.analysis);
            let now = rollouts.clock.wall();
            let decisions = if controller.rollout.phase == RolloutPhase::RollingBack {
                // The canary did not survive the restart (the supervisor starts from the config): done.
                controller.step(&Observation { finished: true, ..Observation::default() }, now);
                rollouts.persist(&controller.rollout, Some(ReleaseChange::RolledBack));
                Vec::new()
            } else {
                controller.resume_after_restart(now)
            };
            rollouts.event(&controller.rollout, "mend restarted mid-rollout: resuming".to_owned());
            if controller.rollout.phase.is_done() {
                continue;
            }
            let running = Arc::new(Mutex::new(Running { controller, order: None }));
            lock(&rollouts.running).insert(name.clone(), running.clone());
            let task = tokio::spawn(rollouts.clone().drive(name, running, decisions, true));
            lock(&rollouts.tasks).push(task);
        }
        rollouts
    }

    /// Stops every rollout task (at shutdown; the rollouts stay persisted where they were).
    pub(crate) fn abort(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    fn stored(&self, service: &ServiceName) -> ServiceReleases {
        let stable = self
            .supervisor
            .service(service.as_str())
            .map_or_else(ReleaseName::implicit_stable, |handle| handle.config().stable_release.clone());
        let stored = self.store.service_releases(service.as_str()).ok().flatten();
        ServiceReleases {
            service: service.clone(),
            stable: stored.as_ref().map_or(stable.clone(), |stored| stored.stable.clone()),
            last_good: stored.as_ref().and_then(|stored| stored.last_good.clone()).or(Some(stable)),
            rollout: stored.and_then(|stored| stored.rollout),
        }
    }

    /// Journals the rollout (and a history row): the store answers once it is on disk.
    fn persist(&self, rollout: &Rollout, change: Option<ReleaseChange>) {
        let mut releases = self.stored(&rollout.service);
        releases.rollout = Some(rollout.clone());
        let mut entries = Vec::new();
        if let Some(change) = change {
            let release = match change {
                ReleaseChange::RolledBack | ReleaseChange::Deployed | ReleaseChange::Promoted => rollout.canary.clone(),
                ReleaseChange::Stable | ReleaseChange::Restored => rollout.stable.clone(),
            };
            if change == ReleaseChange::Promoted {
                releases.stable = rollout.canary.clone();
                // The release it replaced was good: a rollback returns to it.
                releases.last_good = Some(rollout.stable.clone());
                self.executor
                    .last_good
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(rollout.service.clone(), rollout.stable.clone());
            }
            entries.push(JournalEntry::ReleaseHistory(Box::new(ReleaseHistoryEntry {
                service: rollout.service.clone(),
                release,
                at: self.clock.wall(),
                change,
                reason: rollout.reason.clone(),
            })));
        }
        entries.push(JournalEntry::Releases(Box::new(releases)));
        // The journal waits for the disk: off the runtime's worker, as the heal stage's journal is.
        if let Err(error) = tokio::task::block_in_place(|| self.store.journal(entries)) {
            tracing::error!(error = %error, service = %rollout.service, "cannot journal the rollout");
        }
    }

    fn event(&self, rollout: &Rollout, message: String) {
        let event = Event::new(self.clock.wall(), EventKind::Rollout, message)
            .service(&rollout.service)
            .detail("release", rollout.canary.as_str())
            .detail("stable", rollout.stable.as_str())
            .detail("phase", rollout.phase.as_str())
            .detail("weight", rollout.weight())
            .detail("reason", rollout.reason.as_str());
        self.events.emit(event);
    }

    /// Runs one action through the heal stage (journalled before and after).
    async fn act(
        &self,
        service: &ServiceName,
        action: ActionKind,
        reason: &str,
        wait: Duration,
    ) -> Result<String, String> {
        let command = OperatorCommand {
            action,
            service: service.clone(),
            replica: None,
            reason: Some(format!("rollout: {reason}")),
            wait,
        };
        match self.healing.operator(command).await {
            Ok(record) if record.state == mend_types::ActionState::Succeeded => Ok(record.outcome.unwrap_or_default()),
            Ok(record) => Err(record.outcome.unwrap_or_else(|| record.state.as_str().to_owned())),
            Err(mend_api::OperatorError::Control(error)) => Err(error.to_string()),
            Err(mend_api::OperatorError::Failed(message)) => Err(message),
        }
    }

    /// What the canary and the proxy show now; `start` is moved to now when the window restarts.
    fn observe(&self, rollout: &Rollout, start: &mut WindowStart, baseline_restarts: &mut Option<u64>) -> Observation {
        let Some(service) = self.supervisor.service(rollout.service.as_str()) else { return Observation::default() };
        let canary: Vec<_> = service.statuses().into_iter().filter(|status| status.release == rollout.canary).collect();
        let canary_ready = !canary.is_empty() && canary.iter().all(|status| status.ready);
        let restarts: u64 = canary.iter().map(|status| status.restarts).sum();
        let baseline = *baseline_restarts.get_or_insert(restarts);
        let mut trouble = None;
        if let Some(failed) = canary.iter().find(|status| status.failed()) {
            trouble = Some(format!("replica {} of {} failed ({})", failed.index, rollout.canary, failed.state));
        } else if restarts >= baseline + CRASH_LOOP_RESTARTS {
            trouble =
                Some(format!("its replicas crash-loop ({} restarts since the rollout began)", restarts - baseline));
        } else if rollout.phase == RolloutPhase::Stepping
            && let Some(unready) = canary.iter().find(|status| status.unready.is_some() && status.pid.is_some())
        {
            trouble = Some(format!(
                "replica {} of {} fails readiness ({})",
                unready.index,
                rollout.canary,
                unready.unready.map(|why| why.to_string()).unwrap_or_default()
            ));
        }
        // The proxy's outlier detection ejected a canary replica: its failures starve it of traffic (no
        // window would ever hold enough requests), so that is a verdict in itself.
        if trouble.is_none()
            && let Some(proxy) = self.traffic.proxy(rollout.service.as_str())
            && let Some(ejected) = proxy
                .stats()
                .backends
                .iter()
                .find(|backend| backend.id.release == Release::Canary && backend.in_table && backend.ejected)
        {
            let why = ejected.last_ejection.map_or_else(String::new, |ejection| {
                format!(" after {} failures in a row ({:?})", ejection.consecutive_failures, ejection.reason)
            });
            trouble = Some(format!("the proxy ejected replica {} of {}{why}", ejected.id.index, rollout.canary));
        }
        if trouble.is_none()
            && let Ok(incidents) = self.store.incidents(20, true)
        {
            let canary_ids: Vec<ReplicaId> =
                canary.iter().map(|status| ReplicaId::new(rollout.service.clone(), status.index)).collect();
            if let Some(incident) = incidents.iter().find(|incident| {
                incident.opened_at >= rollout.started_at
                    && incident.replicas.iter().any(|replica| canary_ids.contains(replica))
                    && !incident.signals.iter().any(|signal| signal.name == BuiltinDiagnosis::BadRelease.as_str())
            }) {
                let names: Vec<&str> = incident.signals.iter().map(|signal| signal.name.as_str()).collect();
                trouble = Some(format!(
                    "incident #{} ({}) opened on it during its bake time",
                    incident.id.0,
                    names.join(", ")
                ));
            }
        }
        let window = self.traffic.proxy(rollout.service.as_str()).map(|proxy| self.window(&proxy, rollout, start));
        Observation { canary_ready, canary_trouble: trouble, window, command: None, finished: false }
    }

    fn window(&self, proxy: &ProxyHandle, rollout: &Rollout, start: &mut WindowStart) -> Window {
        let stats = proxy.stats();
        let counts = own_answers;
        let (stable_now, canary_now) = (counts(&stats.stable), counts(&stats.canary));
        if start.since != rollout.since {
            // A new window: it counts from now.
            *start = WindowStart {
                since: rollout.since,
                stable: stable_now,
                canary: canary_now,
                stable_written: proxy.latency_sample(Release::Stable, u64::MAX).written,
                canary_written: proxy.latency_sample(Release::Canary, u64::MAX).written,
            };
        }
        let release = |now: (u64, u64), then: (u64, u64), sample: Vec<f64>| ReleaseWindow {
            requests: now.0.saturating_sub(then.0),
            errors: now.1.saturating_sub(then.1),
            latencies_ms: sample,
        };
        Window {
            stable: release(
                stable_now,
                start.stable,
                proxy.latency_sample(Release::Stable, start.stable_written).latencies_ms,
            ),
            canary: release(
                canary_now,
                start.canary,
                proxy.latency_sample(Release::Canary, start.canary_written).latencies_ms,
            ),
        }
    }

    /// Drives one rollout until it ends. `deploy` first starts the canary's replicas (a new rollout, or
    /// one resumed after a restart).
    async fn drive(
        self: Arc<Self>,
        service: ServiceName,
        running: Arc<Mutex<Running>>,
        mut pending: Vec<RolloutDecision>,
        deploy: bool,
    ) {
        let mut start = WindowStart::default();
        let mut baseline_restarts = None;
        let mut finished = false;
        let mut deploy_failed = None;
        // The replica the verdict's `bad_release` was raised on, to resolve it once the canary is out.
        let mut verdict_on = None;
        if deploy {
            let (release, replicas) = {
                let running = lock(&running);
                (running.controller.rollout.canary.clone(), running.controller.rollout.canary_replicas)
            };
            let action = ActionKind::Deploy { release: release.clone(), replicas: replicas.max(1) };
            let reason = format!("start {release} as the canary");
            if let Err(why) = self.act(&service, action, &reason, READY_WAIT).await {
                deploy_failed = Some(format!("its replicas did not start ready: {why}"));
            }
        }
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_hold = String::new();
        // The stable release's last full window before the promotion: what the promoted release must not
        // fall behind right after it.
        let mut baseline: Option<ReleaseWindow> = None;
        loop {
            if pending.is_empty() {
                ticker.tick().await;
                let rollout = lock(&running).controller.rollout.clone();
                let mut observation = self.observe(&rollout, &mut start, &mut baseline_restarts);
                if let Some(window) = &observation.window
                    && window.stable.requests >= self.analysis.min_requests
                {
                    baseline = Some(window.stable.clone());
                }
                observation.finished = std::mem::take(&mut finished);
                if let Some(why) = deploy_failed.take() {
                    observation.canary_trouble = Some(why);
                }
                let now = self.clock.wall();
                let mut running = lock(&running);
                observation.command = running.order.take();
                pending = running.controller.step(&observation, now);
                if pending.is_empty() {
                    if running.controller.rollout.phase.is_done() {
                        break;
                    }
                    continue;
                }
            }
            let rollout = lock(&running).controller.rollout.clone();
            for decision in std::mem::take(&mut pending) {
                match decision {
                    RolloutDecision::Hold { reason } => {
                        self.persist(&rollout, None);
                        if reason != last_hold {
                            self.event(&rollout, format!("{}: {reason}", rollout.service));
                            last_hold = reason;
                        }
                    }
                    RolloutDecision::SetWeight { weight, reason } => {
                        self.persist(&rollout, None);
                        self.event(
                            &rollout,
                            format!("{}'s canary {} gets {weight}%: {reason}", rollout.service, rollout.canary),
                        );
                        if let Err(why) =
                            self.act(&service, ActionKind::CanaryWeight { weight }, &reason, READY_WAIT).await
                        {
                            deploy_failed = Some(format!("its weight could not be set: {why}"));
                        }
                    }
                    RolloutDecision::Promote { reason } => {
                        self.persist(&rollout, None);
                        self.event(&rollout, format!("{} promotes {}: {reason}", rollout.service, rollout.canary));
                        match self.act(&service, ActionKind::Promote, &reason, READY_WAIT * 2).await {
                            Ok(_) => finished = true,
                            Err(why) => {
                                tracing::error!(service = %service, why = %why, "promotion failed; trying again")
                            }
                        }
                    }
                    RolloutDecision::RollBack { reason } => {
                        self.persist(&rollout, None);
                        self.event(&rollout, format!("{} rolls {} back: {reason}", rollout.service, rollout.canary));
                        if !reason.starts_with("aborted by an operator") {
                            // The evidence, as an incident: a built-in `bad_release` on the canary.
                            verdict_on = self.bad_release(&rollout, &reason);
                        }
                        let weight_zero =
                            self.act(&service, ActionKind::CanaryWeight { weight: 0 }, &reason, READY_WAIT).await;
                        if let Err(why) = weight_zero {
                            tracing::warn!(service = %service, why = %why, "cannot set the canary's weight to 0");
                        }
                        match self.act(&service, ActionKind::Rollback, &reason, READY_WAIT).await {
                            Ok(_) => finished = true,
                            Err(why) => {
                                tracing::error!(service = %service, why = %why, "rollback failed; trying again")
                            }
                        }
                    }
                }
            }
            // What the edge finished is told to the controller at once (promoted or rolled back).
            if finished {
                let now = self.clock.wall();
                let observation = Observation { finished: true, ..Observation::default() };
                finished = false;
                // Stepped on a copy, journalled, then shown: nobody sees the end before it is on disk.
                let mut controller = lock(&running).controller.clone();
                controller.step(&observation, now);
                let rollout = controller.rollout.clone();
                let change = match rollout.phase {
                    RolloutPhase::Promoted => Some(ReleaseChange::Promoted),
                    RolloutPhase::RolledBack => Some(ReleaseChange::RolledBack),
                    _ => None,
                };
                self.persist(&rollout, change);
                lock(&running).controller = controller;
                self.event(
                    &rollout,
                    format!("{}'s rollout of {} ended: {}", rollout.service, rollout.canary, rollout.phase.as_str()),
                );
                if rollout.phase == RolloutPhase::RolledBack
                    && let Some(replica) = verdict_on.take()
                {
                    // The canary is out and the stable release serves: the condition the verdict named
                    // is over (the incident resolves once verified, instead of escalating as if the
                    // rollback had not helped).
                    let evidence = format!("resolved: {} was rolled back, {} serves", rollout.canary, rollout.stable);
                    self.signals.signal(mend_incident::builtin::signal(
                        BuiltinDiagnosis::BadRelease,
                        &replica,
                        SignalState::Resolved,
                        self.clock.wall(),
                        evidence,
                    ));
                }
                if rollout.phase.is_done() {
                    break;
                }
            }
        }
        lock(&self.running).remove(&service);
        let rollout = lock(&running).controller.rollout.clone();
        if rollout.phase == RolloutPhase::Promoted
            && let Some(baseline) = baseline
        {
            self.watch_after_promotion(&rollout, baseline).await;
        }
    }

    /// Right after a promotion, the new stable release is judged against the old one's last window, once
    /// per interval for three intervals (at least 5 s, at most 10 min): errors or latency that regress
    /// raise the built-in `bad_release` diagnosis, which a `[[heal]]` policy answers with `rollback`.
    async fn watch_after_promotion(&self, rollout: &Rollout, baseline: ReleaseWindow) {
        let interval =
            Duration::from_millis(rollout.interval_ms).clamp(Duration::from_secs(2), Duration::from_secs(200));
        let Some(proxy) = self.traffic.proxy(rollout.service.as_str()) else { return };
        for _ in 0..3 {
            let stats = proxy.stats();
            let (requests, errors) = own_answers(&stats.stable);
            let written = proxy.latency_sample(Release::Stable, u64::MAX).written;
            tokio::time::sleep(interval).await;
            let stats = proxy.stats();
            let window = ReleaseWindow {
                requests: own_answers(&stats.stable).0.saturating_sub(requests),
                errors: own_answers(&stats.stable).1.saturating_sub(errors),
                latencies_ms: proxy.latency_sample(Release::Stable, written).latencies_ms,
            };
            let verdict =
                mend_act::rollout::judge(&Window { stable: baseline.clone(), canary: window }, None, &self.analysis);
            if let mend_act::rollout::Verdict::Fail(why) = verdict {
                let reason = format!("right after its promotion, {}", why.replacen("canary", "the new release's", 1));
                let mut after = rollout.clone();
                after.reason = reason.clone();
                self.event(
                    &after,
                    format!("{}: {} regressed after its promotion: {why}", rollout.service, rollout.canary),
                );
                // Left firing: the policy's rollback restores the last good release, which is what
                // the incident verifies.
                let _ = self.bad_release(&after, &reason);
                return;
            }
        }
    }

    /// Raises the built-in `bad_release` diagnosis on the canary's first replica, with the verdict as
    /// its evidence (the heal stage opens an incident from it); returns that replica. A canary's verdict
    /// resolves once its rollback is done (in `drive`).
    fn bad_release(&self, rollout: &Rollout, reason: &str) -> Option<ReplicaId> {
        let service = self.supervisor.service(rollout.service.as_str())?;
        let statuses = service.statuses();
        let index = statuses
            .iter()
            .find(|status| status.release == rollout.canary)
            .or(statuses.first())
            .map_or(0, |status| status.index);
        let replica = ReplicaId::new(rollout.service.clone(), index);
        let evidence = format!("release {} against {}: {reason}", rollout.canary, rollout.stable);
        let now = self.clock.wall();
        self.signals.signal(mend_incident::builtin::signal(
            BuiltinDiagnosis::BadRelease,
            &replica,
            SignalState::Firing,
            now,
            evidence,
        ));
        Some(replica)
    }

    fn status_of(&self, service: &ServiceName) -> RolloutStatus {
        let stored = self.stored(service);
        let rollout = lock(&self.running)
            .get(service)
            .map(|running| lock(running).controller.rollout.clone())
            .or(stored.rollout.clone());
        let weight = mend_api::TrafficApi::canary_weight(&*self.traffic, service.as_str()).unwrap_or(0);
        RolloutStatus {
            stable: self
                .supervisor
                .service(service.as_str())
                .map_or(stored.stable.to_string(), |handle| handle.config().stable_release.to_string()),
            last_good: stored.last_good.map(|release| release.to_string()),
            rollout,
            weight,
            history: self.store.release_history(service.as_str(), 20).unwrap_or_default(),
        }
    }

    fn service_name(&self, service: &str) -> Result<ServiceName, RolloutError> {
        self.supervisor
            .service(service)
            .map(|handle| handle.config().name.clone())
            .ok_or_else(|| error(404, format!("unknown service {service:?}")))
    }
}

/// The rollouts as the API sees them.
pub(crate) struct RolloutHandle(pub(crate) Arc<Rollouts>);

impl RolloutApi for RolloutHandle {
    fn deploy(&self, service: &str, order: DeployOrder) -> mend_api::Pending<Result<RolloutStatus, RolloutError>> {
        let rollouts = self.0.clone();
        let service = service.to_owned();
        Box::pin(async move {
            let name = rollouts.service_name(&service)?;
            let handle = rollouts.supervisor.service(&service).ok_or_else(|| error(404, "unknown service"))?;
            let config = handle.config();
            let release = ReleaseName::new(&order.release).map_err(|invalid| {
                error(400, format!("invalid release name {:?}: {}", invalid.name, invalid.reason))
            })?;
            if config.release(&release).is_none() {
                let known: Vec<&str> = config.releases.iter().map(|release| release.name.as_str()).collect();
                return Err(error(
                    404,
                    format!(
                        "{service} has no release {release:?} (it has {}): add [service.{service}.release.{release}]",
                        known.join(", ")
                    ),
                ));
            }
            if release == config.stable_release {
                return Err(error(409, format!("{release} is {service}'s stable release already")));
            }
            if config.proxy.is_none() {
                return Err(error(
                    409,
                    format!("{service} has no [service.{service}.proxy]: a rollout splits traffic through it"),
                ));
            }
            if config.canary.is_some() {
                return Err(error(409, format!("{service} runs a canary already; promote or abort it first")));
            }
            if lock(&rollouts.running).contains_key(&name) {
                return Err(error(
                    409,
                    format!("a rollout of {service} is in progress (mend rollout status {service})"),
                ));
            }
            let now = rollouts.clock.wall();
            let rollout = Rollout {
                service: name.clone(),
                canary: release.clone(),
                stable: config.stable_release.clone(),
                canary_replicas: order.replicas.unwrap_or(1),
                steps: order.steps.clone(),
                step_idx: 0,
                interval_ms: order.interval.as_millis() as u64,
                phase: RolloutPhase::Starting,
                paused: false,
                started_at: now,
                since: now,
                inconclusive: 0,
                reason: format!(
                    "deploy {release} to {service}: steps {:?}%, {}s each",
                    order.steps,
                    order.interval.as_secs_f64()
                ),
            };
            rollouts.persist(&rollout, Some(ReleaseChange::Deployed));
            rollouts.event(&rollout, format!("{service}: rollout of {release} started ({})", rollout.reason));
            let running = Arc::new(Mutex::new(Running {
                controller: RolloutController::new(rollout, rollouts.analysis),
                order: None,
            }));
            lock(&rollouts.running).insert(name.clone(), running.clone());
            let task = tokio::spawn(rollouts.clone().drive(name.clone(), running, Vec::new(), true));
            lock(&rollouts.tasks).push(task);
            Ok(rollouts.status_of(&name))
        })
    }

    fn status(&self, service: &str) -> Result<RolloutStatus, RolloutError> {
        let name = self.0.service_name(service)?;
        Ok(self.0.status_of(&name))
    }

    fn order(&self, service: &str, order: RolloutOrder) -> Result<RolloutStatus, RolloutError> {
        let name = self.0.service_name(service)?;
        let running = lock(&self.0.running)
            .get(&name)
            .cloned()
            .ok_or_else(|| error(409, format!("no rollout of {service} is in progress")))?;
        lock(&running).order = Some(match order {
            RolloutOrder::Pause => RolloutCommand::Pause,
            RolloutOrder::Resume => RolloutCommand::Resume,
            RolloutOrder::Abort => RolloutCommand::Abort,
            RolloutOrder::Promote => RolloutCommand::Promote,
        });
        Ok(self.0.status_of(&name))
    }
}

/// A release's own answers, (all, 5xx): those the clients got, and the 5xx the proxy retried on another
/// replica (a retry hides a bad release's errors from clients, not from its verdict).
fn own_answers(stats: &mend_proxy::RequestStats) -> (u64, u64) {
    (stats.responses() + stats.retried_5xx, stats.status_5xx + stats.retried_5xx)
}
