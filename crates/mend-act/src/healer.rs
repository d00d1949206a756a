//! The healer: incidents and their policies, step by step. Inputs in, [`Decision`]s out.

use std::collections::BTreeMap;
use std::time::Duration;

use mend_config::{Config, Healing, Learn, ServiceHealing};
use mend_incident::{Builtins, DependencyGraph, Diagnoser, IncidentBook, ObservationRequest, Observations, Observed};
use mend_types::{
    ActionId, ActionKind, ActionOutcome, ActionRecord, ActionState, Actor, Event, EventKind, HealMode, Incident,
    IncidentId, IncidentState, ServiceName, Signal, Timestamp, Verdict,
};

use crate::guard::{Guard, Permit};
use crate::learner::Learner;
use crate::policy::Policies;
use crate::world::World;

/// What the healer needs from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[healing]`.
    pub healing: Healing,
    /// `[service.NAME.healing]`.
    pub services: BTreeMap<ServiceName, ServiceHealing>,
    /// `[[heal]]` and the defaults.
    pub policies: Policies,
    /// The `[notify.NAME]` targets (an escalation tells them all).
    pub notify: Vec<String>,
    /// Declared dependencies (caller → callee).
    pub depends_on: Vec<(ServiceName, ServiceName)>,
    /// `[learn]`.
    pub learn: Learn,
}

impl Settings {
    /// The settings of `config`.
    pub fn of(config: &Config) -> Self {
        Self {
            healing: config.healing.clone(),
            services: config.services.iter().map(|s| (s.name.clone(), s.healing.clone())).collect(),
            policies: Policies::new(&config.heal),
            notify: config.notify.iter().map(|n| n.name.clone()).collect(),
            depends_on: config
                .services
                .iter()
                .flat_map(|s| s.depends_on.iter().map(|callee| (s.name.clone(), callee.clone())))
                .collect(),
            learn: config.learn.clone(),
        }
    }

    fn mode(&self, service: Option<&ServiceName>) -> HealMode {
        service.and_then(|s| self.services.get(s)).and_then(|s| s.mode).unwrap_or(self.healing.mode)
    }
}

/// What the edge must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Journal this incident's new state.
    Incident(Box<Incident>),
    /// Journal this action record (committed before any [`Decision::Run`] that follows it).
    Action(ActionRecord),
    /// Run this action (its record was journalled just before), then report [`Healer::outcome`].
    Run(Permit),
    /// Publish this built-in diagnosis signal (for the store and other subscribers).
    Signal(Signal),
    /// Gather what the diagnoser asks for and hand it back through [`Healer::observed`]: the incident
    /// does not act until then (at most [`OBSERVATION_WAIT`]).
    Observe(ObservationRequest),
    /// Journal how a policy's action turned out (its verify window is over, or it failed).
    Outcome(ActionOutcome),
    /// Publish this event (a reordering of a policy's actions, with why).
    Event(Event),
}

/// How long an incident waits for the observations its diagnosis asked for before it acts on the
/// diagnosis it has (the edge answers within the same turn; this covers an edge that could not).
pub(crate) const OBSERVATION_WAIT: Duration = Duration::from_secs(3);
/// Least time between two requests for observations of one incident: signals that join meanwhile are
/// diagnosed together, a second later.
pub(crate) const OBSERVATION_EVERY: Duration = Duration::from_secs(1);

/// Where an incident's policy is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Nothing runs: the next step may.
    Idle,
    /// An action waits for approval.
    Pending(ActionId),
    /// An action runs.
    Acting(ActionId),
    /// An action ran; its signals have until then to resolve.
    Verifying { until: Timestamp },
}

#[derive(Debug, Clone)]
struct Plan {
    policy: Option<usize>,
    step: usize,
    phase: Phase,
    /// The last reason the guard gave for waiting (noted once, not every tick).
    waiting: Option<String>,
    /// The current step's action ran: if the incident resolves and fires again (flapping), it did not
    /// hold, and the next step runs.
    acted: bool,
    /// Observations asked for at this time and not yet received.
    awaiting: Option<Timestamp>,
    /// When observations were last asked for.
    requested: Option<Timestamp>,
    /// A signal joined since the last request: ask again once [`OBSERVATION_EVERY`] has passed.
    stale: bool,
    /// The policy's actions in the order this incident tries them (the learner's, chosen when the
    /// policy is).
    order: Option<Vec<ActionKind>>,
    /// The action being verified: its outcome is decided when the incident resolves or the window ends.
    trial: Option<Trial>,
}

/// A policy's action that ran and is being verified.
#[derive(Debug, Clone)]
struct Trial {
    action: ActionId,
    kind: ActionKind,
    trigger: String,
    service: Option<ServiceName>,
    started_at: Timestamp,
    verify: Duration,
}

impl Plan {
    fn new() -> Self {
        Self {
            policy: None,
            step: 0,
            phase: Phase::Idle,
            waiting: None,
            acted: false,
            awaiting: None,
            requested: None,
            stale: false,
            order: None,
            trial: None,
        }
    }
}

/// The healing decision core.
pub struct Healer {
    settings: Settings,
    book: IncidentBook,
    builtins: Builtins,
    guard: Guard,
    graph: DependencyGraph,
    plans: BTreeMap<IncidentId, Plan>,
    /// Actions not finished (pending or running).
    open_actions: BTreeMap<ActionId, (ActionRecord, Option<Timestamp>)>,
    next_action: u64,
    paused: bool,
    learner: Learner,
}

/// A new action record; `target` is the service and replica acted on.
fn record(
    id: ActionId,
    incident: Option<IncidentId>,
    action: ActionKind,
    target: (Option<ServiceName>, Option<u32>),
    actor: Actor,
    reason: String,
    now: Timestamp,
) -> ActionRecord {
    let (service, replica) = target;
    ActionRecord {
        id,
        incident,
        action,
        service,
        replica,
        actor,
        reason,
        state: ActionState::Running,
        requested_at: now,
        started_at: None,
        finished_at: None,
        outcome: None,
        output: String::new(),
    }
}

impl Healer {
    /// A healer whose first incident and action ids are `first_incident` and `first_action`, diagnosing
    /// with `diagnoser`.
    pub fn new(settings: Settings, first_incident: u64, first_action: u64, diagnoser: Box<dyn Diagnoser>) -> Self {
        let window = settings.healing.window;
        let settings_learn = settings.learn.clone();
        let guard = Guard::new(settings.healing.clone(), settings.services.clone());
        let graph = DependencyGraph::new(settings.depends_on.clone());
        Self {
            book: IncidentBook::new(first_incident, window, diagnoser),
            builtins: Builtins::new(window),
            guard,
            graph,
            settings,
            plans: BTreeMap::new(),
            open_actions: BTreeMap::new(),
            next_action: first_action.max(1),
            paused: false,
            learner: Learner::new(settings_learn),
        }
    }

    /// Takes new settings (a reload): policies, limits and modes change; incidents go on.
    pub fn reconfigure(&mut self, settings: Settings) {
        self.guard.reconfigure(settings.healing.clone(), settings.services.clone());
        self.book.set_window(settings.healing.window);
        self.builtins.set_window(settings.healing.window);
        for (caller, callee) in &settings.depends_on {
            self.graph.add(caller.clone(), callee.clone());
        }
        // A policy index may now name another policy: incidents pick theirs again at their next step.
        for plan in self.plans.values_mut() {
            plan.policy = None;
            plan.order = None;
        }
        self.learner.reconfigure(settings.learn.clone());
        self.settings = settings;
    }

    /// Adds an observed caller → callee edge (from the proxies): signals on either service join one
    /// incident from now on, and the open incidents are diagnosed again with it.
    pub fn observe_edge(&mut self, caller: ServiceName, callee: ServiceName, now: Timestamp) {
        if self.graph.add(caller, callee) {
            self.book.rediagnose_open(&self.graph, now);
        }
    }

    /// The dependency graph's caller → callee edges, each with whether it was declared (`depends_on`) or
    /// only observed.
    pub fn dependencies(&self) -> impl Iterator<Item = (&ServiceName, &ServiceName, bool)> {
        self.graph.edges().map(|(caller, callee)| {
            let declared = self.settings.depends_on.iter().any(|(c, d)| c == caller && d == callee);
            (caller, callee, declared)
        })
    }

    /// Whether automatic action is paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The incident `id`, if in memory.
    pub fn incident(&self, id: IncidentId) -> Option<&Incident> {
        self.book.get(id)
    }

    /// Incidents not closed.
    pub fn active(&self) -> impl Iterator<Item = &Incident> {
        self.book.active()
    }

    /// Actions pending or running.
    pub fn open_actions(&self) -> impl Iterator<Item = &ActionRecord> {
        self.open_actions.values().map(|(record, _)| record)
    }

    /// The guard (for the simulation's checks).
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// What was learnt from outcomes.
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    /// For each trigger and service with outcomes: the policy's configured actions and the order they
    /// would be tried in now.
    pub fn orders(&self) -> Vec<(String, Option<ServiceName>, Vec<ActionKind>, crate::Order)> {
        let mut seen: Vec<(String, Option<ServiceName>)> =
            self.learner.tallies().map(|(key, _)| (key.trigger.clone(), key.service.clone())).collect();
        seen.dedup();
        seen.into_iter()
            .filter_map(|(trigger, service)| {
                let policy =
                    (0..).map_while(|idx| self.settings.policies.get(idx)).find(|p| p.when.name() == trigger)?;
                let verify = policy.verify.unwrap_or(self.settings.healing.verify);
                let order = self.learner.order(&trigger, service.as_ref(), &policy.actions, verify);
                Some((trigger, service, policy.actions.clone(), order))
            })
            .collect()
    }

    /// Counts outcomes recorded earlier (a restarted mend reads them back from the journal).
    pub fn learn_from<'a>(&mut self, outcomes: impl IntoIterator<Item = &'a ActionOutcome>) {
        for outcome in outcomes {
            self.learner.record(outcome);
        }
    }

    /// A reload removed `service`: its open incidents (those about it alone) close as resolved, noted
    /// "service removed"; an action waiting for approval on one expires. Incidents that concern other
    /// services too go on.
    pub fn service_removed(&mut self, service: &ServiceName, now: Timestamp) -> Vec<Decision> {
        let mut decisions = Vec::new();
        let ids: Vec<IncidentId> = self
            .book
            .active()
            .filter(|incident| !incident.services.is_empty() && incident.services.iter().all(|s| s == service))
            .map(|incident| incident.id)
            .collect();
        for id in ids {
            if let Some(Phase::Pending(action)) = self.plans.get(&id).map(|plan| plan.phase.clone())
                && let Some((mut record, _)) = self.open_actions.remove(&action)
            {
                record.state = ActionState::Expired;
                record.finished_at = Some(now);
                record.outcome = Some("no longer needed: the service was removed".to_owned());
                decisions.push(Decision::Action(record));
            }
            self.book.transition(id, IncidentState::Resolved, "service removed".to_owned(), now);
            self.incident_decision(id, &mut decisions);
        }
        decisions
    }

    /// Forgets what was learnt from outcomes (for `service`, or everything): the configured orders hold.
    pub fn forget(&mut self, service: Option<&ServiceName>) {
        self.learner.forget(service);
    }

    /// Ends incident `id`'s trial (if any) with `verdict`: the outcome is journalled and learnt from.
    fn conclude(&mut self, id: IncidentId, verdict: Verdict, now: Timestamp, decisions: &mut Vec<Decision>) {
        let Some(trial) = self.plans.get_mut(&id).and_then(|plan| plan.trial.take()) else { return };
        let diagnosis = self.book.get(id).map(|i| i.diagnosis.name.clone()).unwrap_or_default();
        let elapsed = (now.as_millis() - trial.started_at.as_millis()).max(0) as u64;
        let outcome = ActionOutcome {
            action: trial.action,
            incident: id,
            trigger: trial.trigger,
            diagnosis,
            service: trial.service,
            kind: trial.kind,
            verdict,
            started_at: trial.started_at,
            decided_at: now,
            verify_ms: trial.verify.as_millis() as u64,
            recover_ms: (verdict == Verdict::Resolved).then_some(elapsed),
        };
        self.learner.record(&outcome);
        decisions.push(Decision::Outcome(outcome));
    }

    fn next_id(&mut self) -> ActionId {
        let id = ActionId(self.next_action);
        self.next_action += 1;
        id
    }

    fn incident_decision(&self, id: IncidentId, decisions: &mut Vec<Decision>) {
        if let Some(incident) = self.book.get(id) {
            decisions.push(Decision::Incident(Box::new(incident.clone())));
        }
    }

    /// A signal transition.
    pub fn signal(&mut self, signal: &Signal, world: &World, now: Timestamp) -> Vec<Decision> {
        let mut decisions = Vec::new();
        let observed = self.book.observe(signal, &self.graph, now);
        if let Some(id) = observed.incident() {
            if matches!(observed, Observed::Opened(_)) {
                self.plans.insert(id, Plan::new());
            }
            if matches!(observed, Observed::Reopened(_)) {
                // It goes on where its policy was: flapping does not start the list over, and an action
                // that ran and did not hold is followed by the next one.
                if let Some(plan) = self.plans.get_mut(&id) {
                    plan.phase = Phase::Idle;
                    if plan.acted {
                        plan.step += 1;
                        plan.acted = false;
                    }
                }
            }
            if matches!(observed, Observed::Opened(_) | Observed::Joined(_) | Observed::Reopened(_)) {
                self.request_observations(id, now, &mut decisions);
            }
            self.incident_decision(id, &mut decisions);
            self.advance(id, world, now, &mut decisions);
        }
        decisions
    }

    /// Asks the edge for what the diagnoser reads about incident `id`, at most once per
    /// [`OBSERVATION_EVERY`] (a later change is asked for on a tick).
    fn request_observations(&mut self, id: IncidentId, now: Timestamp, decisions: &mut Vec<Decision>) {
        let Some(request) = self.book.request(id, &self.graph) else { return };
        let Some(plan) = self.plans.get_mut(&id) else { return };
        let every = i64::try_from(OBSERVATION_EVERY.as_millis()).unwrap_or(i64::MAX);
        if plan.requested.is_some_and(|last| now.as_millis() - last.as_millis() < every) {
            // Asked for on the next tick; meanwhile the incident waits for it (its signals changed: the
            // diagnosis it has may name another root or cause).
            plan.stale = true;
            plan.awaiting.get_or_insert(now);
            return;
        }
        plan.requested = Some(now);
        plan.awaiting = Some(now);
        plan.stale = false;
        decisions.push(Decision::Observe(request));
    }

    /// What the edge gathered for incident `id` (answering [`Decision::Observe`]): the incident is
    /// diagnosed with it, then moves on.
    pub fn observed(
        &mut self,
        id: IncidentId,
        observations: &Observations,
        world: &World,
        now: Timestamp,
    ) -> Vec<Decision> {
        let mut decisions = Vec::new();
        if let Some(plan) = self.plans.get_mut(&id) {
            plan.awaiting = None;
        }
        let Some(incident) = self.book.get(id) else { return decisions };
        if incident.state.is_closed() {
            return decisions;
        }
        let before = (incident.diagnosis.name.clone(), incident.diagnosis.root.clone());
        if self.book.diagnose_with(id, &self.graph, observations) {
            if let Some(diagnosis) = self.book.get(id).map(|i| i.diagnosis.clone())
                && (diagnosis.name.clone(), diagnosis.root.clone()) != before
            {
                let root = diagnosis.root.as_ref().map(|r| format!(", root {r}")).unwrap_or_default();
                let confidence = diagnosis.confidence.map(|c| format!(" ({:.0}%)", c * 100.0)).unwrap_or_default();
                let note = format!("diagnosed: {}{confidence}{root}: {}", diagnosis.name, diagnosis.evidence);
                self.book.note(id, note, now);
            }
            self.incident_decision(id, &mut decisions);
        }
        self.advance(id, world, now, &mut decisions);
        decisions
    }

    /// A lifecycle event: built-in diagnoses fire or resolve (and are published).
    pub fn event(&mut self, event: &Event, world: &World, now: Timestamp) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for signal in self.builtins.on_event(event) {
            decisions.push(Decision::Signal(signal.clone()));
            decisions.extend(self.signal(&signal, world, now));
        }
        decisions
    }

    /// Time passes: verify windows end, pending actions expire, incidents open too long escalate.
    pub fn tick(&mut self, world: &World, now: Timestamp) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for signal in self.builtins.on_tick(now) {
            decisions.push(Decision::Signal(signal.clone()));
            decisions.extend(self.signal(&signal, world, now));
        }
        let expired: Vec<ActionId> = self
            .open_actions
            .iter()
            .filter(|(_, (record, expires))| {
                record.state == ActionState::Pending && expires.is_some_and(|expires| now >= expires)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.close_pending(id, ActionState::Expired, "nobody approved it in time", now, &mut decisions);
        }
        let active: Vec<IncidentId> = self.book.active().map(|i| i.id).collect();
        for id in active {
            if self.plans.get(&id).is_some_and(|plan| plan.stale) {
                self.request_observations(id, now, &mut decisions);
            }
            self.advance(id, world, now, &mut decisions);
        }
        self.book.prune(now);
        self.plans.retain(|id, _| self.book.get(*id).is_some());
        decisions
    }

    /// Pauses automatic action (operators' commands still run).
    pub fn pause(&mut self, now: Timestamp) -> Vec<Decision> {
        self.paused = true;
        // A human decision that belongs in every open incident's timeline (and so in its report).
        self.note_active("automatic healing paused by an operator", now)
    }

    /// Resumes automatic action.
    pub fn resume(&mut self, world: &World, now: Timestamp) -> Vec<Decision> {
        self.paused = false;
        let mut decisions = self.note_active("automatic healing resumed by an operator", now);
        decisions.extend(self.tick(world, now));
        decisions
    }

    /// Notes `note` in every incident not closed, and journals them.
    fn note_active(&mut self, note: &str, now: Timestamp) -> Vec<Decision> {
        let ids: Vec<IncidentId> = self.book.active().map(|incident| incident.id).collect();
        let mut decisions = Vec::new();
        for id in ids {
            self.book.note(id, note.to_owned(), now);
            self.incident_decision(id, &mut decisions);
        }
        decisions
    }

    /// Action `id` ended.
    pub fn outcome(
        &mut self,
        id: ActionId,
        succeeded: bool,
        message: String,
        output: String,
        world: &World,
        now: Timestamp,
    ) -> Vec<Decision> {
        let mut decisions = Vec::new();
        self.guard.finished(id);
        let Some((mut record, _)) = self.open_actions.remove(&id) else { return decisions };
        record.state = if succeeded { ActionState::Succeeded } else { ActionState::Failed };
        record.finished_at = Some(now);
        record.outcome = Some(message.clone());
        record.output = output;
        decisions.push(Decision::Action(record.clone()));
        let Some(incident) = record.incident else { return decisions };
        if let Some(plan) = self.plans.get_mut(&incident)
            && plan.phase == Phase::Acting(id)
        {
            let verify = plan
                .policy
                .and_then(|idx| self.settings.policies.get(idx))
                .and_then(|policy| policy.verify)
                .unwrap_or(self.settings.healing.verify);
            let trigger = plan.policy.and_then(|idx| self.settings.policies.get(idx)).map(|p| p.when.name());
            if let (Actor::Policy { .. }, Some(trigger)) = (&record.actor, trigger) {
                plan.trial = Some(Trial {
                    action: id,
                    kind: record.action.clone(),
                    trigger,
                    service: record.service.clone(),
                    started_at: record.started_at.unwrap_or(now),
                    verify,
                });
            }
            if succeeded {
                plan.phase = Phase::Verifying { until: now.saturating_add(verify) };
                plan.acted = true;
                let note = format!(
                    "{} {}: {message}; verifying for {}s",
                    record.action.describe(),
                    if succeeded { "done" } else { "failed" },
                    verify.as_secs()
                );
                self.book.transition(incident, IncidentState::Verifying, note, now);
            } else {
                plan.phase = Phase::Idle;
                plan.step += 1;
                self.conclude(incident, Verdict::Failed, now, &mut decisions);
                self.book.transition(
                    incident,
                    IncidentState::Open,
                    format!("{} failed: {message}", record.action.describe()),
                    now,
                );
            }
            self.incident_decision(incident, &mut decisions);
            self.advance(incident, world, now, &mut decisions);
        } else if self.book.get(incident).is_some() {
            self.book.note(incident, format!("{} {}: {message}", record.action.describe(), record.state), now);
            self.incident_decision(incident, &mut decisions);
        }
        decisions
    }

    /// The fleet refused granted action `id` (the fleet part of the guard, decided at the edge through
    /// etcd before the action ran): it is journalled refused and nothing ran. A refusal that `escalates`
    /// (the fleet budget spent, a fleet incident) escalates the incident as a spent local budget does;
    /// another (too many hosts acting on the service) moves the policy on to its next step.
    pub fn fleet_refused(
        &mut self,
        id: ActionId,
        refusal: &str,
        escalates: bool,
        world: &World,
        now: Timestamp,
    ) -> Vec<Decision> {
        let mut decisions = Vec::new();
        let Some((mut record, _)) = self.open_actions.remove(&id) else {
            self.guard.finished(id);
            return decisions;
        };
        // Nothing ran: the local budgets and cooldown are as before the grant.
        self.guard.refund(&record, now);
        record.state = ActionState::Refused;
        record.finished_at = Some(now);
        record.outcome = Some(format!("refused by the fleet: {refusal}"));
        decisions.push(Decision::Action(record.clone()));
        let Some(incident) = record.incident else { return decisions };
        let note = format!("{} refused by the fleet: {refusal}", record.action.describe());
        if let Some(plan) = self.plans.get_mut(&incident)
            && plan.phase == Phase::Acting(id)
        {
            plan.phase = Phase::Idle;
            if escalates {
                self.escalate(incident, note, now, &mut decisions);
                return decisions;
            }
            plan.step += 1;
            self.book.note(incident, note, now);
            self.incident_decision(incident, &mut decisions);
            self.advance(incident, world, now, &mut decisions);
        }
        decisions
    }

    /// An operator approves pending action `id`: it runs now, if the guard permits.
    pub fn approve(&mut self, id: ActionId, world: &World, now: Timestamp) -> Result<Vec<Decision>, String> {
        let Some((record, _)) = self.open_actions.get(&id) else {
            return Err(format!("no pending action {id}"));
        };
        if record.state != ActionState::Pending {
            return Err(format!("action {id} is {}, not pending", record.state));
        }
        let mut record = record.clone();
        let diagnosis = record.incident.and_then(|i| self.book.get(i)).map(|i| i.diagnosis.clone()).unwrap_or_default();
        record.state = ActionState::Running;
        record.started_at = Some(now);
        let permit = self
            .guard
            .grant(record.clone(), world, &diagnosis, now)
            .map_err(|refusal| format!("the guard refuses action {id} now: {refusal}; it stays pending"))?;
        let mut decisions = vec![Decision::Action(record.clone()), Decision::Run(permit)];
        self.open_actions.insert(id, (record.clone(), None));
        if let Some(incident) = record.incident {
            if let Some(plan) = self.plans.get_mut(&incident) {
                plan.phase = Phase::Acting(id);
            }
            self.book.note(incident, format!("{} approved by an operator: running", record.action.describe()), now);
            self.incident_decision(incident, &mut decisions);
        }
        Ok(decisions)
    }

    /// An operator denies pending action `id`: the operator takes over the incident (escalated).
    pub fn deny(&mut self, id: ActionId, now: Timestamp) -> Result<Vec<Decision>, String> {
        match self.open_actions.get(&id) {
            Some((record, _)) if record.state == ActionState::Pending => {}
            Some((record, _)) => return Err(format!("action {id} is {}, not pending", record.state)),
            None => return Err(format!("no pending action {id}")),
        }
        let mut decisions = Vec::new();
        self.close_pending(id, ActionState::Denied, "denied by an operator", now, &mut decisions);
        Ok(decisions)
    }

    fn close_pending(
        &mut self,
        id: ActionId,
        state: ActionState,
        why: &str,
        now: Timestamp,
        decisions: &mut Vec<Decision>,
    ) {
        let Some((mut record, _)) = self.open_actions.remove(&id) else { return };
        record.state = state;
        record.finished_at = Some(now);
        record.outcome = Some(why.to_owned());
        decisions.push(Decision::Action(record.clone()));
        if let Some(incident) = record.incident {
            let note = format!("{} {why}: the operator takes over", record.action.describe());
            self.escalate(incident, note, now, decisions);
        }
    }

    /// The autoscaler asks to scale `service` by `delta` (its `reason`: the observation and the
    /// arithmetic). Granted by the guard within the replica bounds and `max_unavailable`; journalled
    /// either way (refused, or dry-run: nothing runs). Paused healing pauses the autoscaler too: nothing.
    pub fn autoscale(
        &mut self,
        service: ServiceName,
        delta: i32,
        reason: String,
        world: &World,
        now: Timestamp,
    ) -> (Option<Permit>, Vec<Decision>) {
        if self.paused || delta == 0 {
            return (None, Vec::new());
        }
        // A scale-in takes at most `max_unavailable` replicas out at once; the autoscaler asks again.
        let max_unavailable = i32::try_from(self.guard.max_unavailable(&service)).unwrap_or(i32::MAX).max(1);
        let (delta, reason) = if delta < -max_unavailable {
            (-max_unavailable, format!("{reason} (by {max_unavailable} at a time: max_unavailable)"))
        } else {
            (delta, reason)
        };
        let id = self.next_id();
        let mode = self.settings.mode(Some(&service));
        let mut record =
            record(id, None, ActionKind::Scale { delta }, (Some(service), None), Actor::Autoscaler, reason, now);
        if mode == HealMode::DryRun {
            record.state = ActionState::DryRun;
            record.finished_at = Some(now);
            record.outcome = Some("dry-run: nothing changed".to_owned());
            return (None, vec![Decision::Action(record)]);
        }
        match self.guard.grant_autoscale(record.clone(), world) {
            Ok(permit) => {
                record.started_at = Some(now);
                self.open_actions.insert(id, (record.clone(), None));
                (Some(permit), vec![Decision::Action(record)])
            }
            Err(refusal) => {
                record.state = ActionState::Refused;
                record.finished_at = Some(now);
                record.outcome = Some(format!("refused: {refusal}"));
                (None, vec![Decision::Action(record)])
            }
        }
    }

    /// An operator's command: journalled and granted (counted in the budgets), returned as a permit.
    pub fn operator(
        &mut self,
        action: ActionKind,
        service: ServiceName,
        replica: Option<u32>,
        reason: String,
        now: Timestamp,
    ) -> (Permit, Vec<Decision>) {
        let id = self.next_id();
        let mut record = record(id, None, action, (Some(service), replica), Actor::Operator, reason, now);
        record.started_at = Some(now);
        let permit = self.guard.grant_unchecked(record.clone(), now);
        self.open_actions.insert(id, (record.clone(), None));
        (permit, vec![Decision::Action(record)])
    }

    /// Moves incident `id` on as far as it can go now.
    fn advance(&mut self, id: IncidentId, world: &World, now: Timestamp, decisions: &mut Vec<Decision>) {
        // Each pass either runs, waits or moves one step on: bounded by the policy's length.
        for _ in 0..64 {
            if !self.step(id, world, now, decisions) {
                return;
            }
        }
    }

    /// One move of incident `id`; true when it moved on and may move again.
    fn step(&mut self, id: IncidentId, world: &World, now: Timestamp, decisions: &mut Vec<Decision>) -> bool {
        let Some(incident) = self.book.get(id).cloned() else { return false };
        if incident.state.is_closed() {
            return false;
        }
        let Some(plan) = self.plans.get(&id).cloned() else {
            self.plans.insert(id, Plan::new());
            return true;
        };
        if !incident.firing() {
            if let Phase::Pending(action) = plan.phase {
                // Resolved before anyone approved: nothing to approve any more.
                if let Some((mut record, _)) = self.open_actions.remove(&action) {
                    record.state = ActionState::Expired;
                    record.finished_at = Some(now);
                    record.outcome = Some("no longer needed: the incident resolved".to_owned());
                    decisions.push(Decision::Action(record));
                }
            } else if let Phase::Acting(_) = plan.phase {
                // Its outcome comes first: the incident resolves on the next move.
                return false;
            }
            if let Phase::Verifying { until } = plan.phase {
                let verdict = if now <= until { Verdict::Resolved } else { Verdict::NotResolved };
                self.conclude(id, verdict, now, decisions);
            }
            self.book.transition(id, IncidentState::Resolved, "every signal resolved".to_owned(), now);
            self.incident_decision(id, decisions);
            return false;
        }
        let open_for = Duration::from_millis((now.as_millis() - incident.opened_at.as_millis()).max(0) as u64);
        if open_for >= self.settings.healing.escalate_after && !matches!(plan.phase, Phase::Acting(_)) {
            let note = format!("still firing after {}s (escalate_after)", open_for.as_secs());
            self.escalate(id, note, now, decisions);
            return false;
        }
        match plan.phase {
            Phase::Acting(_) | Phase::Pending(_) => return false,
            Phase::Verifying { until } if now < until => return false,
            Phase::Verifying { .. } => {
                self.conclude(id, Verdict::NotResolved, now, decisions);
                if let Some(plan) = self.plans.get_mut(&id) {
                    plan.step += 1;
                    plan.phase = Phase::Idle;
                    plan.acted = false;
                }
                self.book.transition(
                    id,
                    IncidentState::Open,
                    "verify window over and signals still firing: next action".to_owned(),
                    now,
                );
                self.incident_decision(id, decisions);
                return true;
            }
            Phase::Idle => {}
        }
        if self.paused {
            return false;
        }
        // The diagnosis asked for observations: it decides the target (the root, not its victims).
        if let Some(asked) = plan.awaiting {
            let waited = Duration::from_millis((now.as_millis() - asked.as_millis()).max(0) as u64);
            if waited < OBSERVATION_WAIT {
                return false;
            }
            if let Some(plan) = self.plans.get_mut(&id) {
                plan.awaiting = None;
            }
            let note = format!("no observations for the diagnosis within {}s: acting on the signals", waited.as_secs());
            self.book.note(id, note, now);
            self.incident_decision(id, decisions);
        }
        let policy_idx = match plan.policy {
            Some(idx) => idx,
            None => match self.settings.policies.find(&incident) {
                Some((idx, _)) => {
                    if let Some(plan) = self.plans.get_mut(&id) {
                        plan.policy = Some(idx);
                    }
                    idx
                }
                // No policy: mend watches (the supervisor does what it always did) until it resolves.
                None => return false,
            },
        };
        let Some(policy) = self.settings.policies.get(policy_idx).cloned() else { return false };
        let trigger = policy.when.name();
        // The target: what the policy matched (a signal, the root's first; or a service's diagnosis), with
        // its replica; without a service, the incident's root. A victim's trouble is its root's: a policy
        // not scoped to a service acts on the root instead (one scoped to the victim keeps its scope, and
        // the guard refuses to disrupt a victim; but `dependency_failure` of a victim means its root).
        let matched = crate::policy::target(&policy, &incident, false);
        let mut service = matched.as_ref().and_then(|m| m.service.clone()).or_else(|| incident.diagnosis.root.clone());
        let mut matched_replica = matched.as_ref().and_then(|m| m.replica);
        let mut redirected = None;
        if let (Some(target), Some(root)) = (&service, &incident.diagnosis.root)
            && (policy.service.is_none() || crate::policy::acts_on_the_root(&policy))
            && target != root
            && incident.diagnosis.victims.contains(target)
        {
            redirected = Some(target.clone());
            service = Some(root.clone());
            matched_replica = None;
        }
        let verify = policy.verify.unwrap_or(self.settings.healing.verify);
        // The order this incident tries the policy's actions in: the learner's, chosen once.
        let order = match plan.order {
            Some(order) => order,
            None => {
                let (order, announce) = self.learner.decide(&trigger, service.as_ref(), &policy.actions, verify);
                if let Some(why) = announce {
                    let mut event =
                        Event::new(now, EventKind::ActionsReordered, format!("policy for {trigger}: {why}"))
                            .detail("trigger", trigger.clone())
                            .detail("order", order.actions.iter().map(ActionKind::describe).collect::<Vec<_>>())
                            .detail("configured", policy.actions.iter().map(ActionKind::describe).collect::<Vec<_>>());
                    if let Some(service) = &service {
                        event = event.service(service);
                    }
                    decisions.push(Decision::Event(event));
                }
                if let Some(why) = &order.why {
                    self.book.note(id, format!("learnt order: {why}"), now);
                }
                if let Some(plan) = self.plans.get_mut(&id) {
                    plan.order = Some(order.actions.clone());
                }
                order.actions
            }
        };
        let Some(action) = order.get(plan.step).cloned() else {
            let note = format!("policy for {} exhausted ({} actions)", policy.when.name(), policy.actions.len());
            self.escalate(id, note, now, decisions);
            return false;
        };
        if action == ActionKind::Escalate {
            self.escalate(id, format!("policy for {trigger} says escalate"), now, decisions);
            return false;
        }
        let replica = match action {
            ActionKind::Restart | ActionKind::Eject { .. } | ActionKind::Hook { .. } | ActionKind::Notify { .. } => {
                matched_replica
            }
            _ => None,
        };
        let needs_target = !matches!(action, ActionKind::Hook { .. } | ActionKind::Notify { .. });
        if needs_target && service.is_none() {
            self.book.note(id, format!("{}: no service to act on; skipped", action.describe()), now);
            if let Some(plan) = self.plans.get_mut(&id) {
                plan.step += 1;
            }
            self.incident_decision(id, decisions);
            return true;
        }
        // What matched, where: `alert:Slow fired on api` or `diagnosis dependency_failure of api`; then
        // where the action goes when that is a victim.
        let matched_on = redirected.as_ref().or(service.as_ref());
        let what = match &matched {
            Some(m) if m.matched.starts_with("diagnosis ") => m.matched.clone(),
            _ => format!("{trigger} fired{}", matched_on.map(|s| format!(" on {s}")).unwrap_or_default()),
        };
        let redirect = match (&redirected, &service) {
            (Some(_), Some(root)) => format!(", a victim of {root}: acting on {root}"),
            _ => String::new(),
        };
        let reason = format!(
            "{what}{redirect}; diagnosis: {}",
            if incident.diagnosis.evidence.is_empty() {
                incident.diagnosis.name.clone()
            } else {
                format!("{}: {}", incident.diagnosis.name, incident.diagnosis.evidence)
            }
        );
        let actor = Actor::Policy { when: trigger.clone(), step: plan.step };
        let diagnosis = incident.diagnosis.clone();
        let mode = self.settings.mode(service.as_ref());
        let action_id = ActionId(self.next_action);
        let mut planned = record(action_id, Some(id), action.clone(), (service, replica), actor, reason, now);
        // A trigger on a caller waits for the diagnosis to know whether the callee is the root.
        let settling = planned.service.as_ref().and_then(|service| {
            let calls: Vec<ServiceName> =
                self.graph.edges().filter(|(caller, _)| caller == service).map(|(_, callee)| callee.clone()).collect();
            crate::policy::settling(&policy, &incident, service, &calls, self.settings.healing.settle, now)
        });
        let checked = match settling {
            Some(refusal) if needs_target => Err(refusal),
            _ if needs_target => self.guard.check(&planned, world, &diagnosis, now),
            _ => Ok(()),
        };
        match (mode, checked) {
            (_, Err(refusal)) if refusal.is_transient() => {
                // Noted once per kind of wait (a cooldown's remaining time changes every tick).
                let key = match &refusal {
                    crate::Refusal::Cooldown { .. } => "cooldown".to_owned(),
                    crate::Refusal::Settling { .. } => "settling".to_owned(),
                    other => other.to_string(),
                };
                if plan.waiting.as_deref() != Some(key.as_str()) {
                    self.book.note(id, format!("{} waits: {refusal}", action.describe()), now);
                    self.incident_decision(id, decisions);
                    if let Some(plan) = self.plans.get_mut(&id) {
                        plan.waiting = Some(key);
                    }
                }
                false
            }
            (mode, Err(refusal)) => {
                self.next_id();
                planned.state = ActionState::Refused;
                planned.finished_at = Some(now);
                planned.outcome = Some(refusal.to_string());
                decisions.push(Decision::Action(planned));
                self.book.add_action(id, action_id);
                let note = format!("{} refused: {refusal}", action.describe());
                match refusal {
                    crate::Refusal::Budget { .. } if mode != HealMode::DryRun => {
                        self.escalate(id, note, now, decisions);
                        false
                    }
                    _ => {
                        self.book.note(id, note, now);
                        if let Some(plan) = self.plans.get_mut(&id) {
                            plan.step += 1;
                        }
                        self.incident_decision(id, decisions);
                        true
                    }
                }
            }
            (HealMode::DryRun, Ok(())) => {
                self.next_id();
                planned.state = ActionState::DryRun;
                planned.finished_at = Some(now);
                planned.outcome = Some("dry-run: the guard permits it; nothing was changed".to_owned());
                decisions.push(Decision::Action(planned));
                self.book.add_action(id, action_id);
                if let Some(plan) = self.plans.get_mut(&id) {
                    plan.phase = Phase::Verifying { until: now.saturating_add(verify) };
                    plan.waiting = None;
                    plan.acted = true;
                }
                let note = format!("dry-run: would {}; verifying for {}s", action.describe(), verify.as_secs());
                self.book.transition(id, IncidentState::Verifying, note, now);
                self.incident_decision(id, decisions);
                false
            }
            (HealMode::Approve, Ok(())) => {
                self.next_id();
                planned.state = ActionState::Pending;
                let expires = now.saturating_add(self.settings.healing.pending_expiry);
                decisions.push(Decision::Action(planned.clone()));
                self.open_actions.insert(action_id, (planned, Some(expires)));
                self.book.add_action(id, action_id);
                if let Some(plan) = self.plans.get_mut(&id) {
                    plan.phase = Phase::Pending(action_id);
                    plan.waiting = None;
                }
                let note = format!(
                    "{} waits for approval (mend approve {action_id} / mend deny {action_id})",
                    action.describe()
                );
                self.book.transition(id, IncidentState::Acting, note, now);
                self.incident_decision(id, decisions);
                false
            }
            (HealMode::Auto, Ok(())) => {
                self.next_id();
                planned.started_at = Some(now);
                let permit = if needs_target {
                    match self.guard.grant(planned.clone(), world, &diagnosis, now) {
                        Ok(permit) => permit,
                        // Checked just before; nothing changed in between.
                        Err(_) => return false,
                    }
                } else {
                    self.guard.grant_unchecked(planned.clone(), now)
                };
                decisions.push(Decision::Action(planned.clone()));
                decisions.push(Decision::Run(permit));
                self.open_actions.insert(action_id, (planned, None));
                self.book.add_action(id, action_id);
                if let Some(plan) = self.plans.get_mut(&id) {
                    plan.phase = Phase::Acting(action_id);
                    plan.waiting = None;
                }
                self.book.transition(id, IncidentState::Acting, format!("running {}", action.describe()), now);
                self.incident_decision(id, decisions);
                false
            }
        }
    }

    /// Escalates incident `id`: every notification target is told (one escalate action), and mend stops
    /// acting on it.
    fn escalate(&mut self, id: IncidentId, note: String, now: Timestamp, decisions: &mut Vec<Decision>) {
        let Some(incident) = self.book.get(id).cloned() else { return };
        if incident.state.is_closed() {
            return;
        }
        // An action still being verified did not resolve the incident.
        self.conclude(id, Verdict::NotResolved, now, decisions);
        let service = incident.diagnosis.root.clone().or_else(|| incident.services.iter().next().cloned());
        let action_id = self.next_id();
        let actor = Actor::Policy { when: incident.diagnosis.name.clone(), step: 0 };
        let mut escalation =
            record(action_id, Some(id), ActionKind::Escalate, (service, None), actor, note.clone(), now);
        escalation.started_at = Some(now);
        self.book.add_action(id, action_id);
        self.book.transition(id, IncidentState::Escalated, format!("escalated: {note}"), now);
        if let Some(plan) = self.plans.get_mut(&id) {
            // An action still waiting for approval is moot: mend stops acting on this incident, and an
            // approval must not run it later.
            if let Phase::Pending(pending) = plan.phase
                && let Some((mut record, _)) = self.open_actions.remove(&pending)
            {
                record.state = ActionState::Expired;
                record.finished_at = Some(now);
                record.outcome = Some("no longer needed: the incident was escalated".to_owned());
                decisions.push(Decision::Action(record));
            }
            plan.phase = Phase::Idle;
        }
        let mode = self.settings.mode(escalation.service.as_ref());
        if mode == HealMode::DryRun || self.settings.notify.is_empty() {
            escalation.state = if mode == HealMode::DryRun { ActionState::DryRun } else { ActionState::Succeeded };
            escalation.finished_at = Some(now);
            escalation.outcome = Some(if mode == HealMode::DryRun {
                "dry-run: would notify every target".to_owned()
            } else {
                "no [notify.NAME] target to tell".to_owned()
            });
            decisions.push(Decision::Action(escalation));
        } else {
            let permit = self.guard.grant_unchecked(escalation.clone(), now);
            decisions.push(Decision::Action(escalation.clone()));
            decisions.push(Decision::Run(permit));
            self.open_actions.insert(action_id, (escalation, None));
        }
        self.incident_decision(id, decisions);
    }
}
