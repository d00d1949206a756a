//! Deterministic simulation of the decision core: simulated services with random fault schedules over
//! many simulated hours and seeds, checking the guard's invariants after every decision.
//!
//! A failing seed is printed; replay it alone with `MEND_SIM_SEED=<seed> cargo test -p mend-act --test
//! simulation`. `MEND_SIM_SEEDS` and `MEND_SIM_HOURS` widen the search.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mend_act::{Decision, Healer, ReplicaView, ServiceView, Settings, World};
use mend_incident::BuiltinDiagnoser;
use mend_types::{
    ActionId, ActionKind, Actor, Event, EventKind, HealMode, IncidentId, ReplicaId, ServiceName, Severity, Signal,
    SignalKind, SignalState, Timestamp,
};

const CONFIG: &str = r#"
[healing]
verify = "20s"
max_actions_per_hour = 12
service_max_actions_per_hour = 5
cooldown = "45s"
window = "2m"
escalate_after = "15m"
pending_expiry = "2m"
[service.db]
command = ["db"]
replicas = 2
[service.api]
command = ["api"]
replicas = 4
depends_on = ["db"]
[service.api.healing]
max_unavailable = 2
min_replicas = 2
max_replicas = 6
[service.web]
command = ["web"]
replicas = 3
depends_on = ["api"]
[[detect]]
name = "Slow"
series = "latency_seconds"
[[rule]]
name = "Errors"
expr = "vector(1) > 0"
[notify.ops]
url = "http://127.0.0.1:9/"
[[heal]]
when = "Slow"
actions = ["restart", "restart", "scale +1", "notify ops", "escalate"]
[[heal]]
when = "Errors"
actions = ["eject 30s", "rolling-restart", "escalate"]
"#;

fn name(text: &str) -> ServiceName {
    ServiceName::new(text).expect("valid name")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Slow,
    Errors,
    CrashLoop,
    /// The replica is down for a while (crashed, restarting slowly).
    Down,
}

#[derive(Debug, Clone)]
struct Replica {
    ready: bool,
    /// Not ready until then (restarting).
    back_at: Option<i64>,
    fault: Option<(Fault, i64)>,
}

struct Running {
    id: ActionId,
    ends_at: i64,
    permit_action: ActionKind,
    service: Option<ServiceName>,
    replica: Option<u32>,
}

struct Sim {
    rng: fastrand::Rng,
    now_ms: i64,
    services: BTreeMap<ServiceName, Vec<Replica>>,
    healer: Healer,
    running: Vec<Running>,
    pending: Vec<(ActionId, i64)>,
    mode: HealMode,
    /// Permits of disruptive policy actions per service: their times.
    disruptive: BTreeMap<ServiceName, Vec<i64>>,
    actions_per_incident: BTreeMap<IncidentId, usize>,
    incidents: BTreeSet<IncidentId>,
    n_runs: usize,
    n_incidents_closed: usize,
    /// Outcomes journalled per (trigger, service, action).
    outcomes: BTreeMap<(String, Option<ServiceName>, String), u32>,
    /// Reorderings announced.
    n_reorders: usize,
    /// The configured action lists by trigger.
    policies: BTreeMap<String, Vec<String>>,
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

impl Sim {
    fn new(seed: u64, mode: HealMode) -> Self {
        let mut config = mend_config::parse("sim.toml", CONFIG, std::path::Path::new("/")).expect("valid config");
        config.healing.mode = mode;
        let services = config
            .services
            .iter()
            .map(|s| {
                let replicas = (0..s.replicas).map(|_| Replica { ready: true, back_at: None, fault: None }).collect();
                (s.name.clone(), replicas)
            })
            .collect();
        Self {
            rng: fastrand::Rng::with_seed(seed),
            now_ms: 1_700_000_000_000,
            services,
            healer: Healer::new(Settings::of(&config), 1, 1, Box::new(BuiltinDiagnoser)),
            running: Vec::new(),
            pending: Vec::new(),
            mode,
            disruptive: BTreeMap::new(),
            actions_per_incident: BTreeMap::new(),
            incidents: BTreeSet::new(),
            n_runs: 0,
            n_incidents_closed: 0,
            outcomes: BTreeMap::new(),
            n_reorders: 0,
            policies: config
                .heal
                .iter()
                .map(|p| (p.when.name(), p.actions.iter().map(ActionKind::describe).collect()))
                .collect(),
        }
    }

    fn world(&self) -> World {
        World {
            services: self
                .services
                .iter()
                .map(|(name, replicas)| {
                    let view = ServiceView {
                        replicas: replicas
                            .iter()
                            .enumerate()
                            .map(|(index, r)| ReplicaView { index: index as u32, ready: r.ready })
                            .collect(),
                    };
                    (name.clone(), view)
                })
                .collect(),
        }
    }

    fn signal(
        &self,
        signal_name: &str,
        kind: SignalKind,
        service: &ServiceName,
        replica: Option<u32>,
        firing: bool,
    ) -> Signal {
        let mut labels = BTreeMap::from([("service".to_owned(), service.to_string())]);
        if let Some(replica) = replica {
            labels.insert("replica".to_owned(), replica.to_string());
        }
        Signal {
            at: at(self.now_ms),
            since: at(self.now_ms),
            state: if firing { SignalState::Firing } else { SignalState::Resolved },
            kind,
            name: signal_name.to_owned(),
            severity: Severity::Warning,
            service: Some(service.clone()),
            replica,
            value: 1.0,
            labels,
            evidence: "simulated".to_owned(),
        }
    }

    fn event(&self, kind: EventKind, service: &ServiceName, index: u32) -> Event {
        let mut event =
            Event::new(at(self.now_ms), kind, kind.as_str()).replica(&ReplicaId::new(service.clone(), index));
        if kind == EventKind::Exited {
            event = event.detail("cause", "program");
        }
        event
    }

    /// Checks the decisions against the invariants and executes them.
    fn apply(&mut self, decisions: Vec<Decision>) -> Result<(), String> {
        for decision in decisions {
            match decision {
                Decision::Run(permit) => self.run(permit.record().clone())?,
                Decision::Action(record) => {
                    if record.state == mend_types::ActionState::Pending {
                        let delay = self.rng.i64(5_000..200_000);
                        self.pending.push((record.id, self.now_ms + delay));
                    }
                }
                Decision::Incident(incident) => {
                    self.incidents.insert(incident.id);
                    if incident.state.is_closed() {
                        self.n_incidents_closed += 1;
                    }
                    let max_actions = 5 + 1 + incident.flaps as usize;
                    if incident.actions.len() > max_actions.max(7) {
                        return Err(format!(
                            "action storm: incident {} has {} actions",
                            incident.id,
                            incident.actions.len()
                        ));
                    }
                }
                Decision::Signal(_) | Decision::Observe(_) => {}
                Decision::Outcome(outcome) => {
                    if self.mode == HealMode::DryRun {
                        return Err(format!("dry-run learnt from an action it did not run: {outcome:?}"));
                    }
                    let key = (outcome.trigger.clone(), outcome.service.clone(), outcome.kind.describe());
                    *self.outcomes.entry(key).or_default() += 1;
                }
                Decision::Event(event) => self.check_reorder(&event)?,
            }
        }
        Ok(())
    }

    /// A reordering: a permutation of the policy's own actions (notify and escalate in place), announced
    /// only once some action has `min_outcomes` (5) outcomes for this trigger and service.
    fn check_reorder(&mut self, event: &Event) -> Result<(), String> {
        if event.kind != EventKind::ActionsReordered {
            return Err(format!("unexpected event from the healer: {event:?}"));
        }
        self.n_reorders += 1;
        let trigger = event.details["trigger"].as_str().unwrap_or_default().to_owned();
        let strings = |key: &str| -> Vec<String> {
            event.details[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        };
        let (order, configured) = (strings("order"), strings("configured"));
        if self.policies.get(&trigger) != Some(&configured) {
            return Err(format!("reordering names another policy's actions: {event:?}"));
        }
        let (mut sorted_order, mut sorted_configured) = (order.clone(), configured.clone());
        sorted_order.sort();
        sorted_configured.sort();
        if sorted_order != sorted_configured {
            return Err(format!("a reordering added or dropped an action: {event:?}"));
        }
        for (idx, action) in configured.iter().enumerate() {
            if (action == "escalate" || action.starts_with("notify ")) && order[idx] != *action {
                return Err(format!("notify/escalate moved: {event:?}"));
            }
        }
        let most = self
            .outcomes
            .iter()
            .filter(|((t, s, _), _)| *t == trigger && s.as_ref() == event.service.as_ref())
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        if order != configured && most < 5 {
            return Err(format!("reordered on thin evidence ({most} outcomes at most): {event:?}"));
        }
        Ok(())
    }

    fn run(&mut self, record: mend_types::ActionRecord) -> Result<(), String> {
        self.n_runs += 1;
        if let Actor::Policy { when, .. } = &record.actor
            && let Some(actions) = self.policies.get(when)
            && !actions.contains(&record.action.describe())
        {
            return Err(format!("an action the policy does not list ran: {record:?}"));
        }
        if self.mode == HealMode::DryRun {
            return Err(format!("dry-run acted: {record:?}"));
        }
        if let Some(incident) = record.incident {
            *self.actions_per_incident.entry(incident).or_default() += 1;
            let diagnosis = self.healer.incident(incident).map(|i| i.diagnosis.clone()).unwrap_or_default();
            if let (Some(service), Some(root)) = (&record.service, &diagnosis.root)
                && record.action.disrupts()
                && service != root
                && diagnosis.victims.contains(service)
            {
                return Err(format!("action on a victim: {record:?} (root {root})"));
            }
        }
        let duration = match record.action {
            ActionKind::Restart | ActionKind::RollingRestart => self.rng.i64(2_000..20_000),
            ActionKind::Eject { for_ms } => for_ms as i64,
            _ => 1_000,
        };
        if matches!(record.actor, Actor::Policy { .. })
            && record.action.disrupts()
            && let Some(service) = record.service.clone()
        {
            // max_unavailable: replicas down or being acted on, this one included.
            let replicas = &self.services[&service];
            let mut busy: BTreeSet<u32> =
                replicas.iter().enumerate().filter(|(_, r)| !r.ready).map(|(i, _)| i as u32).collect();
            let mut whole = 0;
            for running in &self.running {
                if running.service.as_ref() == Some(&service) && running.permit_action.disrupts() {
                    match running.replica {
                        Some(index) => {
                            busy.insert(index);
                        }
                        None => whole += 1,
                    }
                }
            }
            match record.replica {
                Some(index) => {
                    busy.insert(index);
                }
                None => whole += 1,
            }
            let max = if service.as_str() == "api" { 2 } else { 1 };
            if replicas.len() > 1 && busy.len() + whole > max {
                return Err(format!(
                    "max_unavailable exceeded on {service}: {} busy, max {max}: {record:?}",
                    busy.len() + whole
                ));
            }
            let times = self.disruptive.entry(service.clone()).or_default();
            times.push(self.now_ms);
            // Token bucket of 5 per hour: at most 5 + 5 * T/1h in any interval T.
            for (start_idx, start) in times.iter().enumerate() {
                let n = times.len() - start_idx;
                let hours = (self.now_ms - start) as f64 / 3_600_000.0;
                if n as f64 > 5.0 + 5.0 * hours + 1e-9 {
                    return Err(format!("service budget exceeded on {service}: {n} actions in {hours:.3}h"));
                }
            }
            let all: Vec<i64> = {
                let mut all: Vec<i64> = self.disruptive.values().flatten().copied().collect();
                all.sort_unstable();
                all
            };
            for (start_idx, start) in all.iter().enumerate() {
                let n = all.len() - start_idx;
                let hours = (self.now_ms - start) as f64 / 3_600_000.0;
                if n as f64 > 12.0 + 12.0 * hours + 1e-9 {
                    return Err(format!("global budget exceeded: {n} actions in {hours:.3}h"));
                }
            }
        }
        if let (Some(service), ActionKind::Restart) = (&record.service, &record.action) {
            let indexes: Vec<u32> = match record.replica {
                Some(index) => vec![index],
                None => (0..self.services[service].len() as u32).collect(),
            };
            for index in indexes {
                if let Some(replica) = self.services.get_mut(service).and_then(|r| r.get_mut(index as usize)) {
                    replica.ready = false;
                    replica.back_at = Some(self.now_ms + duration);
                }
            }
        }
        if let (Some(service), ActionKind::Scale { delta }) = (&record.service, &record.action) {
            let replicas = self.services.get_mut(service).expect("known service");
            if *delta > 0 {
                for _ in 0..*delta {
                    replicas.push(Replica { ready: true, back_at: None, fault: None });
                }
            } else {
                let keep = replicas.len().saturating_sub(delta.unsigned_abs() as usize);
                replicas.truncate(keep.max(1));
            }
        }
        self.running.push(Running {
            id: record.id,
            ends_at: self.now_ms + duration,
            permit_action: record.action.clone(),
            service: record.service.clone(),
            replica: record.replica,
        });
        Ok(())
    }

    fn second(&mut self, faulty: bool) -> Result<(), String> {
        self.now_ms += 1000;
        let now = self.now_ms;
        // Replicas come back from restarts; a restart cures its replica's fault more often than not.
        let names: Vec<ServiceName> = self.services.keys().cloned().collect();
        for service in &names {
            for index in 0..self.services[service].len() {
                let replica = &self.services[service][index];
                if replica.back_at.is_some_and(|back| now >= back) {
                    let cured = self.rng.f64() < 0.6;
                    let fault = replica.fault;
                    let replica = &mut self.services.get_mut(service).expect("known")[index];
                    replica.back_at = None;
                    replica.ready = true;
                    if cured && let Some((fault, _)) = fault {
                        replica.fault = None;
                        self.end_fault(service, index as u32, fault)?;
                    }
                    let ready = self.event(EventKind::Ready, service, index as u32);
                    let decisions = self.healer.event(&ready, &self.world(), at(now));
                    self.apply(decisions)?;
                }
            }
        }
        // Actions end.
        let ended: Vec<Running> = {
            let (ended, running): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.running).into_iter().partition(|r| now >= r.ends_at);
            self.running = running;
            ended
        };
        for action in ended {
            let succeeded = self.rng.f64() < 0.95;
            let decisions =
                self.healer.outcome(action.id, succeeded, "simulated".into(), String::new(), &self.world(), at(now));
            self.apply(decisions)?;
        }
        // An operator answers pending actions, or lets them expire.
        let due: Vec<ActionId> = self.pending.iter().filter(|(_, when)| now >= *when).map(|(id, _)| *id).collect();
        self.pending.retain(|(_, when)| now < *when);
        for id in due {
            let roll = self.rng.f64();
            let world = self.world();
            let result = if roll < 0.6 {
                self.healer.approve(id, &world, at(now))
            } else if roll < 0.8 {
                self.healer.deny(id, at(now))
            } else {
                Ok(Vec::new())
            };
            if let Ok(decisions) = result {
                self.apply(decisions)?;
            }
        }
        // Faults start (about one every ten minutes) and some heal by themselves.
        if faulty && self.rng.f64() < 1.0 / 600.0 {
            let service = names[self.rng.usize(..names.len())].clone();
            let index = self.rng.usize(..self.services[&service].len()) as u32;
            let fault = match self.rng.u8(..12) {
                0..=4 => Fault::Slow,
                5..=7 => Fault::Errors,
                8..=9 => Fault::Down,
                _ => Fault::CrashLoop,
            };
            // A third of the slow faults hit every replica at once (a bad deploy, a noisy neighbour): the
            // policy then wants to restart several replicas of one service together.
            // A replica going down often comes with another one slowing (a shared host): the policy then wants
            // to restart a replica while another is down.
            let n_replicas = self.services[&service].len() as u32;
            let targets: Vec<(u32, Fault)> = if fault == Fault::Slow && self.rng.u8(..3) == 0 {
                (0..n_replicas).map(|index| (index, Fault::Slow)).collect()
            } else if fault == Fault::Down && n_replicas > 1 {
                vec![(index, Fault::Down), ((index + 1) % n_replicas, Fault::Slow)]
            } else {
                vec![(index, fault)]
            };
            for (index, fault) in targets {
                if self.services[&service][index as usize].fault.is_none() {
                    self.services.get_mut(&service).expect("known")[index as usize].fault = Some((fault, now));
                    self.start_fault(&service, index, fault)?;
                }
            }
        }
        for service in &names {
            for index in 0..self.services[service].len() {
                let Some((fault, since)) = self.services[service][index].fault else { continue };
                if fault == Fault::CrashLoop
                    && self.services[service][index].ready
                    && (now - since) % 5_000 == 0
                    && now - since <= 30_000
                {
                    let crash = self.event(EventKind::Exited, service, index as u32);
                    let decisions = self.healer.event(&crash, &self.world(), at(now));
                    self.apply(decisions)?;
                    let ready = self.event(EventKind::Ready, service, index as u32);
                    let decisions = self.healer.event(&ready, &self.world(), at(now));
                    self.apply(decisions)?;
                }
                let heals_after = if faulty { 1_800_000 } else { 60_000 };
                if now - since > heals_after || (fault == Fault::CrashLoop && now - since > 30_000) {
                    self.services.get_mut(service).expect("known")[index].fault = None;
                    self.end_fault(service, index as u32, fault)?;
                }
            }
        }
        if now % 1000 == 0 {
            let decisions = self.healer.tick(&self.world(), at(now));
            self.apply(decisions)?;
        }
        Ok(())
    }

    fn start_fault(&mut self, service: &ServiceName, index: u32, fault: Fault) -> Result<(), String> {
        let now = at(self.now_ms);
        let signals = match fault {
            Fault::Slow => vec![self.signal("Slow", SignalKind::Anomaly, service, Some(index), true)],
            // Errors on the replica, and on its callers (victims) without a replica.
            Fault::Errors => {
                let mut signals = vec![self.signal("Errors", SignalKind::Rule, service, Some(index), true)];
                if service.as_str() == "db" {
                    signals.push(self.signal("Errors", SignalKind::Rule, &name("api"), None, true));
                }
                signals
            }
            Fault::CrashLoop => Vec::new(),
            Fault::Down => {
                let down_for = self.rng.i64(20_000..120_000);
                let replica = &mut self.services.get_mut(service).expect("known")[index as usize];
                replica.ready = false;
                replica.back_at = Some(self.now_ms + down_for);
                replica.fault = None;
                let crash = self.event(EventKind::Exited, service, index);
                let decisions = self.healer.event(&crash, &self.world(), now);
                self.apply(decisions)?;
                Vec::new()
            }
        };
        for signal in signals {
            let decisions = self.healer.signal(&signal, &self.world(), now);
            self.apply(decisions)?;
        }
        Ok(())
    }

    fn end_fault(&mut self, service: &ServiceName, index: u32, fault: Fault) -> Result<(), String> {
        let now = at(self.now_ms);
        let signals = match fault {
            Fault::Slow => vec![self.signal("Slow", SignalKind::Anomaly, service, Some(index), false)],
            Fault::Errors => {
                let mut signals = vec![self.signal("Errors", SignalKind::Rule, service, Some(index), false)];
                if service.as_str() == "db" {
                    signals.push(self.signal("Errors", SignalKind::Rule, &name("api"), None, false));
                }
                signals
            }
            Fault::CrashLoop | Fault::Down => Vec::new(),
        };
        for signal in signals {
            let decisions = self.healer.signal(&signal, &self.world(), now);
            self.apply(decisions)?;
        }
        Ok(())
    }
}

fn simulate(seed: u64, hours: u64) -> Result<String, String> {
    let mode = match seed % 4 {
        0 | 1 => HealMode::Auto,
        2 => HealMode::Approve,
        _ => HealMode::DryRun,
    };
    let mut sim = Sim::new(seed, mode);
    for _ in 0..hours * 3600 {
        sim.second(true)?;
    }
    // Faults stop; everything must end resolved or escalated within escalate_after and a margin.
    for _ in 0..(20 * 60) {
        sim.second(false)?;
    }
    let open: Vec<String> = sim.healer.active().map(|i| format!("{} {} {:?}", i.id, i.state, i.signals)).collect();
    if !open.is_empty() {
        return Err(format!("incidents still open after the faults stopped: {open:#?}"));
    }
    Ok(format!(
        "{mode:?}: {} incidents, {} closed transitions, {} outcomes, {} reorderings, {} actions run",
        sim.incidents.len(),
        sim.n_incidents_closed,
        sim.outcomes.values().sum::<u32>(),
        sim.n_reorders,
        sim.n_runs
    ))
}

#[test]
fn the_guard_holds_over_many_simulated_hours_and_seeds() {
    let env = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    let hours = env("MEND_SIM_HOURS").unwrap_or(12);
    let seeds: Vec<u64> = match env("MEND_SIM_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("MEND_SIM_SEEDS").unwrap_or(24)).collect(),
    };
    let mut total_incidents = 0;
    let (mut total_outcomes, mut total_reorders) = (0, 0);
    for seed in seeds {
        match simulate(seed, hours) {
            Ok(summary) => {
                let figure = |idx: usize| summary.split_whitespace().nth(idx).and_then(|n| n.parse::<usize>().ok());
                total_incidents += figure(1).unwrap_or(0);
                total_outcomes += figure(6).unwrap_or(0);
                total_reorders += figure(8).unwrap_or(0);
            }
            Err(error) => panic!(
                "seed {seed} failed (replay: MEND_SIM_SEED={seed} cargo test -p mend-act --test simulation): {error}"
            ),
        }
    }
    assert!(total_incidents > 50, "the simulation must produce incidents to check: {total_incidents}");
    // Learning is exercised: outcomes are recorded, and some policies get reordered (each reordering
    // checked above: only after enough evidence, only the policy's own actions).
    assert!(total_outcomes > 100, "outcomes recorded: {total_outcomes}");
    assert!(total_reorders > 0, "the learner reorders with enough evidence: {total_reorders}");
}

#[test]
fn a_single_seed_acts_in_auto_mode_and_never_in_dry_run() {
    let auto = simulate(0, 6).expect("seed 0");
    assert!(!auto.ends_with(" 0 actions run"), "auto mode acts: {auto}");
    let dry = simulate(3, 6).expect("seed 3");
    assert!(dry.ends_with(" 0 actions run"), "dry-run never acts: {dry}");
    let _ = Duration::ZERO;
}
