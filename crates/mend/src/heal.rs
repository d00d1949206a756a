//! The heal stage at the edge: feeds the pure [`Healer`] from the stream, a one-second tick and the API's
//! commands; journals its decisions through the store's acknowledged path; runs permitted actions.
//!
//! Invariants: an action is journalled (committed) before it runs and again with its outcome; if the
//! journal cannot be written the action does not run. The stage never waits on an action: each runs in
//! its own task ([`execute`]) and reports back. Operators' commands take the same path (journalled as the
//! operator's, granted by the guard, executed by the same executor).

mod autoscale;
mod execute;
pub(crate) mod hook;
mod notify;
mod observe;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mend_act::{Decision, Healer, Permit, ReplicaView, ServiceView, Settings, World};
use mend_api::{DependencyDto, DependencySource, HealingApi, HealingStatus, OperatorCommand, OperatorError, Pending};
use mend_bus::{Bus, Message, Subscription};
use mend_config::Config;
use mend_store::{JournalEntry, Store};
use mend_supervisor::Supervisor;
use mend_types::{
    ActionId, ActionRecord, ActionState, BuiltinDiagnosis, Clock, EventSink, HealMode, Incident, ServiceName,
    SignalKind, SignalSink,
};
use mend_types::{ReplicaChange, ReplicaCondition};
use tokio::sync::{mpsc, oneshot};

pub(crate) use self::execute::{Executor, Restored};

/// How often the healer's clock ticks (verify windows, expiries, escalations).
const TICK: Duration = Duration::from_secs(1);
/// How often the proxies' observed caller → callee edges are read into the dependency graph.
const EDGES_EVERY_TICKS: u32 = 10;
/// Outcomes read back at start-up (the newest): far more than ranking a policy's actions needs.
const LEARN_FROM_OUTCOMES: usize = 100_000;

/// Where an operator's command is answered.
type OperatorAnswer = oneshot::Sender<Result<ActionRecord, OperatorError>>;

/// What the heal stage acts through.
pub(crate) struct StageParts {
    /// The journal.
    pub(crate) store: Arc<Store>,
    /// The services' state.
    pub(crate) supervisor: Arc<Supervisor>,
    /// Where built-in diagnosis signals are published.
    pub(crate) signals: Arc<dyn SignalSink>,
    /// Runs permitted actions.
    pub(crate) executor: Arc<Executor>,
    /// Time.
    pub(crate) clock: Arc<dyn Clock>,
    /// The proxies' observed edges are read here.
    pub(crate) series: Arc<std::sync::RwLock<mend_observe::series::SeriesStore>>,
    /// Where the learner's events (reorderings) are published.
    pub(crate) events: Arc<dyn EventSink>,
    /// The span store (`[tracing]` on): caller → callee edges and their figures from trace context.
    pub(crate) spans: Option<Arc<mend_trace::Tracing>>,
    /// The fleet (`[fleet]`): asked for a permit before each policy's action that spends the budget.
    pub(crate) fleet: Option<mend_fleet::FleetHandle>,
    /// Where the open incidents are shown to the fleet (published in this host's state).
    pub(crate) open_incidents: Arc<std::sync::Mutex<Vec<mend_fleet::IncidentSummary>>>,
}

/// What the API and the executor ask of the stage.
enum Command {
    Operator(OperatorCommand, OperatorAnswer),
    Approve(ActionId, oneshot::Sender<Result<ActionRecord, String>>),
    Deny(ActionId, oneshot::Sender<Result<ActionRecord, String>>),
    Pause(bool, oneshot::Sender<HealingStatus>),
    Status(oneshot::Sender<HealingStatus>),
    Reconfigure(Box<Config>),
    /// An action ended.
    Outcome(Outcome),
    /// What the learner counted, and the orders it would use.
    Learnt(oneshot::Sender<Learnt>),
    /// Forget what was learnt from outcomes (about a service, or all).
    Forget(Option<ServiceName>, oneshot::Sender<()>),
    /// A reload removed this service: its open incidents close (answers how many).
    ServiceRemoved(ServiceName, oneshot::Sender<usize>),
    /// The fleet answered for a granted, journalled action that has not run yet.
    Fleet(Permit, mend_fleet::PermitAnswer),
}

/// What the healer learnt from outcomes, for `mend learn`.
pub(crate) struct Learnt {
    pub(crate) outcomes: Vec<mend_api::OutcomeRow>,
    pub(crate) orders: Vec<mend_api::OrderRow>,
}

/// How an action ended, from the executor.
pub(crate) struct Outcome {
    pub(crate) id: ActionId,
    pub(crate) succeeded: bool,
    pub(crate) message: String,
    pub(crate) output: String,
    /// The supervisor's refusal, for an operator's command (the API answers with its status).
    pub(crate) control_error: Option<mend_supervisor::ControlError>,
}

/// The handle the daemon and the API hold.
#[derive(Clone)]
pub(crate) struct HealStage {
    commands: mpsc::Sender<Command>,
    executor: Arc<Executor>,
    /// The autoscalers as the API shows them.
    autoscale: Arc<std::sync::Mutex<std::collections::BTreeMap<String, mend_api::AutoscaleDto>>>,
    /// The running config, for the learn stage (a reload reaches the heal stage first).
    config: Arc<tokio::sync::watch::Sender<Arc<Config>>>,
}

/// Everything the stage's task owns.
struct Stage {
    healer: Healer,
    store: Arc<Store>,
    supervisor: Arc<Supervisor>,
    signals: Arc<dyn SignalSink>,
    executor: Arc<Executor>,
    clock: Arc<dyn Clock>,
    commands: mpsc::Sender<Command>,
    mode: HealMode,
    n_policies: usize,
    /// Operators waiting for their command's outcome.
    operators: HashMap<ActionId, OperatorAnswer>,
    /// Records of running actions (for the operator's answer).
    running: HashMap<ActionId, ActionRecord>,
    series: Arc<std::sync::RwLock<mend_observe::series::SeriesStore>>,
    /// Operators' answers, sent once the outcome is journalled.
    pending_answers: Vec<(OperatorAnswer, Result<ActionRecord, OperatorError>)>,
    /// Recent lifecycle facts per service, for the live diagnosis.
    facts: observe::FactLog,
    /// The running config (services' replica counts and memory limits, for the live diagnosis).
    config: Arc<Config>,
    /// The services' autoscalers.
    autoscaling: autoscale::Autoscaling,
    /// Where the learner's events go.
    events: Arc<dyn EventSink>,
    /// The span store, when tracing is on.
    spans: Option<Arc<mend_trace::Tracing>>,
    /// The fleet, if any.
    fleet: Option<mend_fleet::FleetHandle>,
    /// Fleet permits held by running actions.
    fleet_permits: HashMap<ActionId, mend_fleet::FleetPermit>,
    /// Actions that run without the fleet's confirmation (etcd unreachable): local budgets only.
    local_only: HashMap<ActionId, String>,
    /// The open incidents as the fleet sees them.
    open_incidents: Arc<std::sync::Mutex<Vec<mend_fleet::IncidentSummary>>>,
}

/// The built-in diagnoses the healer draws from events itself: published by this stage, so their echo on
/// the stream is not taken again.
fn drawn_here(name: &str) -> bool {
    matches!(
        BuiltinDiagnosis::parse(name),
        Some(
            BuiltinDiagnosis::Crashed
                | BuiltinDiagnosis::CrashLoop
                | BuiltinDiagnosis::Hung
                | BuiltinDiagnosis::MemoryExhaustion
                | BuiltinDiagnosis::Unhealthy
        )
    )
}

/// The services' state, from the supervisor.
fn world(supervisor: &Supervisor) -> World {
    World {
        services: supervisor
            .services()
            .iter()
            .map(|service| {
                let replicas = service
                    .statuses()
                    .iter()
                    .map(|status| ReplicaView { index: status.index, ready: status.ready })
                    .collect();
                (service.config().name.clone(), ServiceView { replicas })
            })
            .collect(),
    }
}

impl HealStage {
    /// Starts the stage: closes what the last run left open in the journal, then follows the stream.
    pub(crate) fn start(
        config: &Config,
        subscription: Subscription,
        parts: StageParts,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        use anyhow::Context as _;
        let StageParts { store, supervisor, signals, executor, clock, series, events, spans, fleet, open_incidents } =
            parts;
        let (interrupted, stopped) =
            store.close_interrupted(clock.wall()).context("cannot close what the last run left in the journal")?;
        if !interrupted.is_empty() || !stopped.is_empty() {
            tracing::warn!(
                n_incidents = interrupted.len(),
                n_actions = stopped.len(),
                "the last run left incidents open and actions unfinished: escalated and marked interrupted"
            );
        }
        let (last_incident, last_action) = store.journal_ids().context("cannot read the journal")?;
        let mut healer = Healer::new(
            Settings::of(config),
            last_incident + 1,
            last_action + 1,
            Box::new(mend_incident::RankingDiagnoser::live()),
        );
        // What earlier runs learnt: the outcomes they recorded are counted again.
        let outcomes = store.outcomes(LEARN_FROM_OUTCOMES).context("cannot read the recorded outcomes")?;
        healer.learn_from(&outcomes);
        if !outcomes.is_empty() {
            tracing::info!(
                n_outcomes = outcomes.len(),
                "outcomes of earlier actions read back: orderings learnt from them"
            );
        }
        let (commands, inbox) = mpsc::channel(64);
        let executor_handle = executor.clone();
        let autoscaling = autoscale::Autoscaling::new(config);
        let autoscale = autoscaling.shown();
        let stage = Stage {
            healer,
            store,
            supervisor,
            signals,
            executor,
            clock,
            commands: commands.clone(),
            mode: config.healing.mode,
            n_policies: config.heal.len() + mend_act::default_policies().len(),
            operators: HashMap::new(),
            running: HashMap::new(),
            series,
            pending_answers: Vec::new(),
            facts: observe::FactLog::default(),
            config: Arc::new(config.clone()),
            autoscaling,
            events,
            spans,
            fleet,
            fleet_permits: HashMap::new(),
            local_only: HashMap::new(),
            open_incidents,
        };
        let task = tokio::spawn(stage.run(subscription, inbox));
        let config = Arc::new(tokio::sync::watch::channel(Arc::new(config.clone())).0);
        Ok((Self { commands, executor: executor_handle, autoscale, config }, task))
    }

    /// Takes a reloaded config: policies, limits, modes, hooks and targets.
    pub(crate) async fn reconfigure(&self, config: &Config) {
        self.config.send_replace(Arc::new(config.clone()));
        let _ = self.commands.send(Command::Reconfigure(Box::new(config.clone()))).await;
    }

    /// The running config, changed by each reload.
    pub(crate) fn config(&self) -> tokio::sync::watch::Receiver<Arc<Config>> {
        self.config.subscribe()
    }

    /// A reload removed `service` (its replicas have stopped): its open incidents close as "service
    /// removed". How many closed; None once the stage has stopped.
    pub(crate) async fn service_removed(&self, service: ServiceName) -> Option<usize> {
        self.ask(|answer| Command::ServiceRemoved(service, answer)).await
    }

    /// What the healer learnt from outcomes.
    pub(crate) async fn learnt(&self) -> Option<Learnt> {
        self.ask(Command::Learnt).await
    }

    /// Forgets what the healer learnt from outcomes (about `service`, or all).
    pub(crate) async fn forget(&self, service: Option<ServiceName>) -> Option<()> {
        self.ask(|answer| Command::Forget(service, answer)).await
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (answer, answered) = oneshot::channel();
        self.commands.send(make(answer)).await.ok()?;
        answered.await.ok()
    }
}

const GONE: &str = "the heal stage has stopped (mend is shutting down)";

impl HealingApi for HealStage {
    fn operator(&self, command: OperatorCommand) -> Pending<Result<ActionRecord, OperatorError>> {
        let stage = self.clone();
        Box::pin(async move {
            stage
                .ask(|answer| Command::Operator(command, answer))
                .await
                .unwrap_or(Err(OperatorError::Control(mend_supervisor::ControlError::ShuttingDown)))
        })
    }

    fn approve(&self, id: ActionId) -> Pending<Result<ActionRecord, String>> {
        let stage = self.clone();
        Box::pin(
            async move { stage.ask(|answer| Command::Approve(id, answer)).await.unwrap_or_else(|| Err(GONE.into())) },
        )
    }

    fn deny(&self, id: ActionId) -> Pending<Result<ActionRecord, String>> {
        let stage = self.clone();
        Box::pin(async move { stage.ask(|answer| Command::Deny(id, answer)).await.unwrap_or_else(|| Err(GONE.into())) })
    }

    fn set_paused(&self, paused: bool) -> Pending<Result<HealingStatus, String>> {
        let stage = self.clone();
        Box::pin(async move { stage.ask(|answer| Command::Pause(paused, answer)).await.ok_or_else(|| GONE.to_owned()) })
    }

    fn status(&self) -> Pending<Result<HealingStatus, String>> {
        let stage = self.clone();
        Box::pin(async move { stage.ask(Command::Status).await.ok_or_else(|| GONE.to_owned()) })
    }

    fn action_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.executor.counts().into_iter().map(|((action, state), n)| (action, state, n)).collect()
    }

    fn autoscale(&self, service: &str) -> Option<mend_api::AutoscaleDto> {
        self.autoscale.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(service).cloned()
    }
}

impl Stage {
    async fn run(mut self, mut stream: Subscription, mut inbox: mpsc::Receiver<Command>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n_ticks: u32 = 0;
        loop {
            let decisions = tokio::select! {
                message = stream.recv() => match message {
                    None => return,
                    Some(message) => self.on_message(message),
                },
                command = inbox.recv() => match command {
                    None => return,
                    Some(command) => self.on_command(command),
                },
                _ = ticker.tick() => {
                    n_ticks = n_ticks.wrapping_add(1);
                    if n_ticks.is_multiple_of(EDGES_EVERY_TICKS) {
                        self.observe_edges();
                    }
                    let world = world(&self.supervisor);
                    let now = self.clock.wall();
                    let mut decisions = self.healer.tick(&world, now);
                    decisions.extend(self.autoscaling.tick(&mut self.healer, &self.supervisor, &self.series, &world, now));
                    decisions
                }
            };
            self.apply(decisions).await;
        }
    }

    fn on_message(&mut self, message: Message) -> Vec<Decision> {
        let now = self.clock.wall();
        if let Message::Event(event) = &message {
            self.facts.record(event);
        }
        match message {
            Message::Event(event) if mend_incident::Builtins::concerns(event.kind) => {
                let world = world(&self.supervisor);
                self.healer.event(&event, &world, now)
            }
            Message::Event(_) => Vec::new(),
            Message::Signal(signal) if signal.kind == SignalKind::Diagnosis && drawn_here(&signal.name) => Vec::new(),
            Message::Signal(signal) => {
                let world = world(&self.supervisor);
                self.healer.signal(&signal, &world, now)
            }
            Message::Replica(_) => Vec::new(),
        }
    }

    fn status(&self) -> HealingStatus {
        HealingStatus {
            paused: self.healer.paused(),
            mode: self.mode,
            open_incidents: self.healer.active().count(),
            pending: self.healer.open_actions().filter(|a| a.state == ActionState::Pending).cloned().collect(),
            policies: self.n_policies,
            dependencies: self
                .healer
                .dependencies()
                .map(|(caller, callee, declared)| DependencyDto {
                    caller: caller.clone(),
                    callee: callee.clone(),
                    source: if declared { DependencySource::Declared } else { DependencySource::Observed },
                })
                .collect(),
        }
    }

    fn learnt(&self) -> Learnt {
        let describe = |actions: &[mend_types::ActionKind]| actions.iter().map(|a| a.describe()).collect::<Vec<_>>();
        Learnt {
            outcomes: self
                .healer
                .learner()
                .tallies()
                .map(|(key, tally)| mend_api::OutcomeRow {
                    trigger: key.trigger.clone(),
                    service: key.service.clone(),
                    action: key.action.clone(),
                    n: tally.n,
                    n_resolved: tally.n_resolved,
                    n_failed: tally.n_failed,
                    mean_recover_ms: tally.mean_recover().map(|d| d.as_millis() as u64),
                })
                .collect(),
            orders: self
                .healer
                .orders()
                .into_iter()
                .map(|(trigger, service, configured, order)| mend_api::OrderRow {
                    trigger,
                    service,
                    configured: describe(&configured),
                    learnt: describe(&order.actions),
                    why: order.why,
                })
                .collect(),
        }
    }

    fn on_command(&mut self, command: Command) -> Vec<Decision> {
        let now = self.clock.wall();
        match command {
            Command::Operator(command, answer) => {
                let reason = command.reason.clone().unwrap_or_else(|| "requested by operator".to_owned());
                let (permit, mut decisions) =
                    self.healer.operator(command.action.clone(), command.service.clone(), command.replica, reason, now);
                self.operators.insert(permit.record().id, answer);
                self.executor.set_wait(permit.record().id, command.wait);
                decisions.push(Decision::Run(permit));
                decisions
            }
            Command::Approve(id, answer) => {
                let world = world(&self.supervisor);
                match self.healer.approve(id, &world, now) {
                    Ok(decisions) => {
                        let record = decisions.iter().find_map(|d| match d {
                            Decision::Action(record) if record.id == id => Some(record.clone()),
                            _ => None,
                        });
                        let _ = answer.send(record.ok_or_else(|| format!("action {id} was not started")));
                        decisions
                    }
                    Err(message) => {
                        let _ = answer.send(Err(message));
                        Vec::new()
                    }
                }
            }
            Command::Deny(id, answer) => match self.healer.deny(id, now) {
                Ok(decisions) => {
                    let record = decisions.iter().find_map(|d| match d {
                        Decision::Action(record) if record.id == id => Some(record.clone()),
                        _ => None,
                    });
                    let _ = answer.send(record.ok_or_else(|| format!("action {id} was not denied")));
                    decisions
                }
                Err(message) => {
                    let _ = answer.send(Err(message));
                    Vec::new()
                }
            },
            Command::Pause(paused, answer) => {
                let decisions = if paused {
                    tracing::warn!("automatic healing paused by an operator");
                    self.healer.pause(now)
                } else {
                    tracing::info!("automatic healing resumed by an operator");
                    let world = world(&self.supervisor);
                    self.healer.resume(&world, now)
                };
                let _ = answer.send(self.status());
                decisions
            }
            Command::Status(answer) => {
                let _ = answer.send(self.status());
                Vec::new()
            }
            Command::Learnt(answer) => {
                let _ = answer.send(self.learnt());
                Vec::new()
            }
            Command::Forget(service, answer) => {
                self.healer.forget(service.as_ref());
                let _ = answer.send(());
                Vec::new()
            }
            Command::ServiceRemoved(service, answer) => {
                let decisions = self.healer.service_removed(&service, now);
                let n_closed = decisions.iter().filter(|d| matches!(d, mend_act::Decision::Incident(_))).count();
                let _ = answer.send(n_closed);
                decisions
            }
            Command::Reconfigure(config) => {
                self.config = Arc::new((*config).clone());
                self.mode = config.healing.mode;
                self.n_policies = config.heal.len() + mend_act::default_policies().len();
                self.healer.reconfigure(Settings::of(&config));
                self.executor.reconfigure(&config);
                self.autoscaling.reconfigure(&config, now);
                Vec::new()
            }
            Command::Fleet(permit, answer) => self.on_fleet_answer(permit, answer),
            Command::Outcome(mut outcome) => {
                let world = world(&self.supervisor);
                let record = self.running.remove(&outcome.id);
                if let Some(fleet_permit) = self.fleet_permits.remove(&outcome.id)
                    && let Some(fleet) = self.fleet.clone()
                {
                    tokio::spawn(async move { fleet.release(fleet_permit).await });
                }
                if let Some(why) = self.local_only.remove(&outcome.id) {
                    outcome.message = format!("{}; {} ({why})", outcome.message, mend_fleet::UNREACHABLE);
                }
                self.autoscaling.outcome(outcome.id, outcome.succeeded, now);
                let decisions = self.healer.outcome(
                    outcome.id,
                    outcome.succeeded,
                    outcome.message.clone(),
                    outcome.output,
                    &world,
                    now,
                );
                if let Some(answer) = self.operators.remove(&outcome.id) {
                    let answer_with = match (outcome.control_error, record) {
                        (Some(error), _) => Err(OperatorError::Control(error)),
                        (None, _) if !outcome.succeeded => Err(OperatorError::Failed(outcome.message)),
                        (None, _) => decisions
                            .iter()
                            .find_map(|d| match d {
                                Decision::Action(record) if record.id == outcome.id => Some(record.clone()),
                                _ => None,
                            })
                            .ok_or_else(|| OperatorError::Failed("the action's record is gone".to_owned())),
                    };
                    // The answer goes once the outcome is journalled (below): send after apply.
                    self.pending_answers.push((answer, answer_with));
                }
                decisions
            }
        }
    }

    /// Journals and carries out `decisions`, in order; what they lead to (a journal that cannot be
    /// written fails its action) is carried out too.
    async fn apply(&mut self, decisions: Vec<Decision>) {
        let mut queue: std::collections::VecDeque<Decision> = decisions.into();
        let mut entries: Vec<JournalEntry> = Vec::new();
        while let Some(decision) = queue.pop_front() {
            match decision {
                Decision::Incident(incident) => {
                    log_incident(&incident);
                    entries.push(JournalEntry::Incident(incident));
                }
                Decision::Action(record) => {
                    log_action(&record);
                    self.executor.count(&record);
                    entries.push(JournalEntry::Action(Box::new(record)));
                }
                Decision::Signal(signal) => self.signals.signal(signal),
                Decision::Outcome(outcome) => {
                    tracing::info!(
                        action = %outcome.action, incident = %outcome.incident, kind = outcome.kind.label(),
                        trigger = %outcome.trigger, verdict = %outcome.verdict, recover_ms = ?outcome.recover_ms,
                        "action outcome"
                    );
                    entries.push(JournalEntry::Outcome(Box::new(outcome)));
                }
                Decision::Event(event) => {
                    tracing::info!(kind = %event.kind, "{}", event.message);
                    self.events.emit(event);
                }
                Decision::Observe(request) => {
                    let started = self.clock.now();
                    let observations = self.observe(&request);
                    let gathered = started.elapsed();
                    let world = world(&self.supervisor);
                    queue.extend(self.healer.observed(request.incident, &observations, &world, self.clock.wall()));
                    tracing::info!(
                        incident = %request.incident,
                        n_services = observations.services.len(),
                        n_series = observations.series.len(),
                        n_points = observations.series.iter().map(|s| s.points.len()).sum::<usize>(),
                        gather_us = gathered.as_micros() as u64,
                        diagnose_us = started.elapsed().saturating_sub(gathered).as_micros() as u64,
                        "incident diagnosed"
                    );
                }
                Decision::Run(permit) => {
                    // Journalled before it runs: if the journal cannot be written, it does not run.
                    match self.journal(std::mem::take(&mut entries)).await {
                        Ok(()) if self.needs_fleet_permit(&permit) => self.ask_fleet(permit),
                        Ok(()) => self.spawn_action(permit),
                        Err(error) => {
                            let id = permit.record().id;
                            tracing::error!(action = %id, error = %error, "cannot journal an action: not run");
                            let world = world(&self.supervisor);
                            queue.extend(self.healer.outcome(
                                id,
                                false,
                                format!("not run: {error}"),
                                String::new(),
                                &world,
                                self.clock.wall(),
                            ));
                        }
                    }
                }
            }
        }
        if let Err(error) = self.journal(entries).await {
            tracing::error!(error = %error, "cannot journal incidents and action outcomes");
        }
        for (answer, result) in self.pending_answers.drain(..) {
            let _ = answer.send(result);
        }
        if self.fleet.is_some() {
            let summaries = self
                .healer
                .active()
                .map(|incident| mend_fleet::IncidentSummary {
                    id: incident.id.0,
                    state: incident.state.to_string(),
                    name: incident.diagnosis.name.clone(),
                    services: incident.services.iter().map(ToString::to_string).collect(),
                })
                .collect();
            *self.open_incidents.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = summaries;
        }
    }

    /// Whether `permit` needs the fleet's too: a policy's action that spends the budget, in a fleet.
    /// Operators' commands (a human decided) and the autoscaler's scales (its own limits) do not.
    fn needs_fleet_permit(&self, permit: &Permit) -> bool {
        let record = permit.record();
        self.fleet.is_some()
            && matches!(record.actor, mend_types::Actor::Policy { .. })
            && record.action.spends_budget()
            && record.service.is_some()
    }

    /// Asks the fleet for `permit`'s action in a task of its own (bounded by `permit_timeout`): the
    /// stage goes on meanwhile, and the answer comes back as [`Command::Fleet`].
    fn ask_fleet(&mut self, permit: Permit) {
        let Some(fleet) = self.fleet.clone() else { return self.spawn_action(permit) };
        let record = permit.record();
        let request = mend_fleet::PermitRequest {
            service: record.service.as_ref().map(ToString::to_string).unwrap_or_default(),
            action: record.action.label().to_owned(),
            disrupts: record.action.disrupts(),
        };
        let action_id = record.id.0;
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let answer = fleet.permit(&request, action_id).await;
            let _ = commands.send(Command::Fleet(permit, answer)).await;
        });
    }

    /// The fleet's answer: run (holding the fleet permit), refuse (journalled, the incident moves on or
    /// escalates), or run on the local budgets alone when etcd did not confirm: a host cut off from the
    /// fleet never stops protecting itself.
    fn on_fleet_answer(&mut self, permit: Permit, answer: mend_fleet::PermitAnswer) -> Vec<Decision> {
        let id = permit.record().id;
        match answer {
            mend_fleet::PermitAnswer::Granted(fleet_permit) => {
                tracing::info!(action = %id, "fleet permit granted");
                self.fleet_permits.insert(id, fleet_permit);
                self.spawn_action(permit);
                Vec::new()
            }
            mend_fleet::PermitAnswer::Refused(refusal) => {
                tracing::warn!(action = %id, refusal = %refusal, "fleet refused an action");
                let world = world(&self.supervisor);
                self.healer.fleet_refused(id, &refusal.to_string(), refusal.escalates(), &world, self.clock.wall())
            }
            mend_fleet::PermitAnswer::Unreachable(why) => {
                tracing::warn!(action = %id, why = %why, "{}", mend_fleet::UNREACHABLE);
                self.local_only.insert(id, why);
                self.spawn_action(permit);
                Vec::new()
            }
        }
    }

    async fn journal(&self, entries: Vec<JournalEntry>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.journal(entries)).await??;
        Ok(())
    }

    fn spawn_action(&mut self, permit: Permit) {
        let record = permit.record().clone();
        self.running.insert(record.id, record.clone());
        let incident: Option<Incident> = record.incident.and_then(|id| self.healer.incident(id).cloned());
        let executor = self.executor.clone();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let outcome = executor.execute(permit, incident).await;
            let _ = commands.send(Command::Outcome(outcome)).await;
        });
    }

    /// Gathers what the live diagnosis of an incident reads (synchronously: read locks on the series
    /// store, one service at a time, for a bounded window of a bounded set of services; BENCHMARKS.md has
    /// the cost).
    fn observe(&self, request: &mend_incident::ObservationRequest) -> mend_incident::Observations {
        let now = self.clock.wall();
        let span_edges = self.span_edges(now);
        observe::gather(request, &self.series, &self.facts, &self.config, &span_edges, now)
    }

    /// The calls between services that the stored spans show over the edge window (none without tracing).
    fn span_edges(&self, now: mend_types::Timestamp) -> Vec<mend_trace::SpanEdge> {
        let Some(spans) = &self.spans else { return Vec::new() };
        let since = now.saturating_sub(observe::EDGE_WINDOW);
        spans.edges(u64::try_from(since.as_millis()).unwrap_or(0).saturating_mul(1_000_000))
    }

    /// Reads the proxies' observed caller → callee edges into the dependency graph.
    fn observe_edges(&mut self) {
        let Ok(series) = self.series.read() else { return };
        let names: Vec<ServiceName> = self.supervisor.services().iter().map(|s| s.config().name.clone()).collect();
        let edges: Vec<(String, String)> = series
            .select("mend_proxy_edge_requests_total", &[])
            .filter_map(|labels| Some((labels.get("caller")?.to_owned(), labels.get("callee")?.to_owned())))
            .collect();
        drop(series);
        let now = self.clock.wall();
        let from_spans = self.span_edges(now).into_iter().map(|edge| (edge.caller, edge.callee));
        for (caller, callee) in edges.into_iter().chain(from_spans) {
            let (Some(caller), Some(callee)) = (
                names.iter().find(|n| n.as_str() == caller).cloned(),
                names.iter().find(|n| n.as_str() == callee).cloned(),
            ) else {
                continue;
            };
            self.healer.observe_edge(caller, callee, now);
        }
    }
}

fn log_incident(incident: &Incident) {
    let note = incident.timeline.last().map(|entry| entry.note.as_str()).unwrap_or_default();
    let services: Vec<&str> = incident.services.iter().map(ServiceName::as_str).collect();
    match incident.state {
        mend_types::IncidentState::Escalated => {
            tracing::error!(incident = %incident.id, state = %incident.state, services = ?services, "{note}");
        }
        _ => tracing::info!(incident = %incident.id, state = %incident.state, services = ?services, "{note}"),
    }
}

fn log_action(record: &ActionRecord) {
    let outcome = record.outcome.as_deref().unwrap_or("");
    let service = record.service.as_ref().map(ToString::to_string).unwrap_or_default();
    match record.state {
        ActionState::Failed | ActionState::Refused => tracing::error!(
            action = %record.id, kind = record.action.label(), service = %service, replica = ?record.replica,
            by = %record.actor, state = %record.state, reason = %record.reason, "{} {}: {outcome}", record.action.describe(), record.state
        ),
        _ => tracing::info!(
            action = %record.id, kind = record.action.label(), service = %service, replica = ?record.replica,
            by = %record.actor, state = %record.state, reason = %record.reason, "{} {}{}{outcome}", record.action.describe(), record.state,
            if outcome.is_empty() { "" } else { ": " }
        ),
    }
}

/// Publishes every replica's condition changes on the stream ([`Message::Replica`]), following each
/// service's membership (scaling) and the set of services (a reload adds and removes some). Aborted at
/// shutdown.
pub(crate) fn publish_replica_changes(
    supervisor: &Arc<Supervisor>,
    bus: Arc<Bus>,
    clock: Arc<dyn Clock>,
) -> tokio::task::JoinHandle<()> {
    let mut roster = supervisor.roster();
    let supervisor = Arc::downgrade(supervisor);
    tokio::spawn(async move {
        // Each service's publisher; aborted with this task (the set is dropped with it).
        let mut publishers = tokio::task::JoinSet::new();
        let mut followed: std::collections::HashMap<ServiceName, tokio::task::AbortHandle> =
            std::collections::HashMap::new();
        loop {
            roster.borrow_and_update();
            let Some(strong) = supervisor.upgrade() else { return };
            let services = strong.services();
            drop(strong);
            let names: Vec<ServiceName> = services.iter().map(|service| service.config().name.clone()).collect();
            followed.retain(|name, publisher| {
                let kept = names.contains(name);
                if !kept {
                    publisher.abort();
                }
                kept
            });
            for service in services {
                let name = service.config().name.clone();
                if followed.contains_key(&name) {
                    continue;
                }
                let mut membership = service.membership();
                drop(service);
                let (bus, clock, supervisor) = (bus.clone(), clock.clone(), supervisor.clone());
                let task_name = name.clone();
                let publisher = publishers.spawn(async move {
                    let name = task_name;
                    loop {
                        membership.borrow_and_update();
                        let replicas = match supervisor.upgrade() {
                            Some(supervisor) => {
                                supervisor.service(name.as_str()).map(|s| s.replicas()).unwrap_or_default()
                            }
                            None => return,
                        };
                        let mut followers = tokio::task::JoinSet::new();
                        for replica in replicas {
                            let mut status = replica.watch();
                            let id = replica.id.clone();
                            let (bus, clock) = (bus.clone(), clock.clone());
                            followers.spawn(async move {
                                let mut last = None;
                                loop {
                                    let change = {
                                        let status = status.borrow_and_update();
                                        let condition = condition(&status);
                                        (Some((condition, status.pid)) != last).then(|| {
                                            last = Some((condition, status.pid));
                                            ReplicaChange {
                                                at: clock.wall(),
                                                replica: id.clone(),
                                                condition,
                                                pid: status.pid,
                                                generation: status.generation,
                                            }
                                        })
                                    };
                                    if let Some(change) = change {
                                        bus.publish(Message::Replica(Arc::new(change)));
                                    }
                                    if status.changed().await.is_err() {
                                        return;
                                    }
                                }
                            });
                        }
                        if membership.changed().await.is_err() {
                            return;
                        }
                        followers.abort_all();
                    }
                });
                followed.insert(name, publisher);
            }
            if roster.changed().await.is_err() {
                return;
            }
        }
    })
}

fn condition(status: &mend_supervisor::ReplicaStatus) -> ReplicaCondition {
    use mend_supervisor::ReplicaState;
    match status.state {
        ReplicaState::Waiting => ReplicaCondition::Waiting,
        ReplicaState::Starting => ReplicaCondition::Starting,
        ReplicaState::Running if status.ready => ReplicaCondition::Ready,
        ReplicaState::Running => ReplicaCondition::Unready,
        ReplicaState::Stopping => ReplicaCondition::Stopping,
        ReplicaState::Backoff => ReplicaCondition::Backoff,
        ReplicaState::Stopped | ReplicaState::Failed | ReplicaState::Exited => ReplicaCondition::Down,
    }
}
