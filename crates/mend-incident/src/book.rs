//! The incident book: groups signal transitions into incidents and records each change.
//!
//! A firing signal joins the open incident that already has it; else an incident closed as resolved
//! within the window that had it (it reopens: flapping opens one incident, not many; an escalated
//! incident keeps it without reopening); else an open incident active within the window on its service
//! or on a service related to it in the dependency graph (one depends on the other, directly or through
//! others: a fault at the end of a chain reaches its first caller in the same second as the middle);
//! a signal without a service joins the incident most
//! recently active within the window (it is attributed through it). Otherwise it opens an incident.

use std::collections::BTreeMap;
use std::time::Duration;

use mend_types::{
    DiagnosisChange, Incident, IncidentId, IncidentSignal, IncidentState, ReplicaId, ServiceName, Signal, SignalState,
    TimelineEntry, Timestamp,
};

use crate::{DependencyGraph, Diagnoser, ObservationRequest, Observations};

/// Most signals one incident remembers (distinct conditions); beyond, new ones are counted only.
const MAX_SIGNALS: usize = 100;
/// Most timeline entries one incident keeps; beyond, the oldest signal notes go first.
const MAX_TIMELINE: usize = 400;
/// Most diagnoses one incident's history keeps; beyond, the oldest after the first goes.
const MAX_DIAGNOSES: usize = 32;

/// What a signal did to the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// It opened this incident.
    Opened(IncidentId),
    /// It joined this open incident (new to it).
    Joined(IncidentId),
    /// It fired again soon after this incident resolved: the incident is open again.
    Reopened(IncidentId),
    /// It changed a signal this incident already had (fired again, resolved).
    Updated(IncidentId),
    /// Nothing to do (a resolution of a condition no incident has).
    Ignored,
}

impl Observed {
    /// The incident concerned.
    pub fn incident(self) -> Option<IncidentId> {
        match self {
            Self::Opened(id) | Self::Joined(id) | Self::Reopened(id) | Self::Updated(id) => Some(id),
            Self::Ignored => None,
        }
    }
}

/// The incidents mend knows: open ones and those closed within the window.
pub struct IncidentBook {
    incidents: BTreeMap<IncidentId, Incident>,
    next_id: u64,
    window: Duration,
    diagnoser: Box<dyn Diagnoser>,
}

fn within(now: Timestamp, then: Timestamp, window: Duration) -> bool {
    now.as_millis().saturating_sub(then.as_millis()) <= i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

impl IncidentBook {
    /// A book whose first incident gets id `first_id` (ids go on across restarts), grouping within
    /// `window`, diagnosing with `diagnoser`.
    pub fn new(first_id: u64, window: Duration, diagnoser: Box<dyn Diagnoser>) -> Self {
        Self { incidents: BTreeMap::new(), next_id: first_id.max(1), window, diagnoser }
    }

    /// The incident `id`, if in memory.
    pub fn get(&self, id: IncidentId) -> Option<&Incident> {
        self.incidents.get(&id)
    }

    /// Groups within `window` from now on (a reload).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Incidents not closed, oldest first.
    pub fn active(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values().filter(|incident| !incident.state.is_closed())
    }

    /// Every incident in memory.
    pub fn all(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    /// Takes `signal` at `now`.
    pub fn observe(&mut self, signal: &Signal, graph: &DependencyGraph, now: Timestamp) -> Observed {
        let fingerprint = signal.fingerprint();
        let has = |incident: &Incident| incident.signals.iter().any(|s| s.fingerprint == fingerprint);
        if signal.state == SignalState::Resolved {
            let Some(id) = self.incidents.values().rev().find(|i| has(i) && !i.state.is_closed()).map(|i| i.id) else {
                return Observed::Ignored;
            };
            self.update_signal(id, &fingerprint, signal, now, false);
            return Observed::Updated(id);
        }
        // Already in an open incident: it fired again (it resolved in between), or repeats.
        if let Some(id) = self.incidents.values().rev().find(|i| has(i) && !i.state.is_closed()).map(|i| i.id) {
            self.update_signal(id, &fingerprint, signal, now, true);
            return Observed::Updated(id);
        }
        // Fired again soon after its incident closed: flapping reopens a resolved incident; an escalated
        // one keeps it (mend stopped acting on it) without opening another.
        let recent = self
            .incidents
            .values()
            .rev()
            .find(|i| has(i) && i.closed_at.is_some_and(|closed| within(now, closed, self.window)))
            .map(|i| (i.id, i.state));
        if let Some((id, state)) = recent {
            self.update_signal(id, &fingerprint, signal, now, true);
            if state == IncidentState::Resolved {
                if let Some(incident) = self.incidents.get_mut(&id) {
                    incident.closed_at = None;
                }
                let note = format!("reopened: {} fired again within the window (flapping)", signal.name);
                self.transition(id, IncidentState::Open, note, now);
                return Observed::Reopened(id);
            }
            return Observed::Updated(id);
        }
        let joined = match &signal.service {
            Some(service) => self
                .incidents
                .values()
                .rev()
                .find(|i| {
                    !i.state.is_closed()
                        && within(now, i.updated_at, self.window)
                        && (i.services.contains(service) || i.services.iter().any(|s| graph.related(s, service)))
                })
                .map(|i| i.id),
            None => self
                .incidents
                .values()
                .filter(|i| !i.state.is_closed() && within(now, i.updated_at, self.window))
                .max_by_key(|i| i.updated_at)
                .map(|i| i.id),
        };
        if let Some(id) = joined {
            self.add_signal(id, signal, fingerprint, now, graph);
            return Observed::Joined(id);
        }
        let id = IncidentId(self.next_id);
        self.next_id += 1;
        let incident = Incident {
            id,
            state: IncidentState::Open,
            opened_at: now,
            updated_at: now,
            closed_at: None,
            services: Default::default(),
            replicas: Default::default(),
            signals: Vec::new(),
            diagnosis: Default::default(),
            diagnoses: Vec::new(),
            actions: Vec::new(),
            flaps: 0,
            timeline: Vec::new(),
        };
        self.incidents.insert(id, incident);
        self.add_signal(id, signal, fingerprint, now, graph);
        Observed::Opened(id)
    }

    fn add_signal(
        &mut self,
        id: IncidentId,
        signal: &Signal,
        fingerprint: String,
        now: Timestamp,
        graph: &DependencyGraph,
    ) {
        let Some(incident) = self.incidents.get_mut(&id) else { return };
        // A signal without a service is attributed to the incident's root (or its first service).
        let attributed = signal.service.is_none();
        let service = signal
            .service
            .clone()
            .or_else(|| incident.diagnosis.root.clone())
            .or_else(|| incident.services.iter().next().cloned());
        let note = match (&signal.service, &service) {
            (None, Some(service)) => {
                format!(
                    "{} {} fired: {} (no service: attributed to {service})",
                    signal.kind.as_str(),
                    signal.name,
                    signal.evidence
                )
            }
            _ => format!("{} {} fired: {}", signal.kind.as_str(), signal.name, signal.evidence),
        };
        if incident.signals.len() < MAX_SIGNALS {
            incident.signals.push(IncidentSignal {
                fingerprint,
                name: signal.name.clone(),
                kind: signal.kind,
                service: service.clone(),
                replica: signal.replica,
                firing: true,
                since: signal.since,
                at: now,
                evidence: signal.evidence.clone(),
                attributed,
            });
        }
        if let Some(service) = service {
            if let Some(index) = signal.replica {
                incident.replicas.insert(ReplicaId::new(service.clone(), index));
            }
            incident.services.insert(service);
        }
        let state = incident.state;
        self.push(id, state, note, now);
        self.rediagnose(id, graph, now);
    }

    fn update_signal(&mut self, id: IncidentId, fingerprint: &str, signal: &Signal, now: Timestamp, firing: bool) {
        let Some(incident) = self.incidents.get_mut(&id) else { return };
        let Some(entry) = incident.signals.iter_mut().find(|s| s.fingerprint == fingerprint) else { return };
        if entry.firing == firing {
            return;
        }
        entry.firing = firing;
        entry.at = now;
        entry.evidence = signal.evidence.clone();
        if firing {
            incident.flaps += 1;
        }
        let verb = if firing { "fired again" } else { "resolved" };
        let note = format!("{} {} {verb}: {}", signal.kind.as_str(), signal.name, signal.evidence);
        let state = incident.state;
        self.push(id, state, note, now);
    }

    fn rediagnose(&mut self, id: IncidentId, graph: &DependencyGraph, now: Timestamp) {
        let Some(incident) = self.incidents.get_mut(&id) else { return };
        // A diagnosis made from observations stays until the next observations arrive (the healer asks
        // for them when a signal joins): the signals alone would know less.
        if incident.diagnosis.diagnosed_at.is_some() {
            return;
        }
        incident.diagnosis = self.diagnoser.diagnose(&incident.signals, graph, None);
        record_diagnosis(incident, now);
    }

    /// What the diagnoser wants gathered for incident `id`, if it reads observations.
    pub fn request(&self, id: IncidentId, graph: &DependencyGraph) -> Option<ObservationRequest> {
        let incident = self.incidents.get(&id)?;
        self.diagnoser.request(id, &incident.signals, &incident.services, graph)
    }

    /// Diagnoses incident `id` again with what the edge observed; returns whether its diagnosis changed
    /// (beyond the time it was made).
    pub fn diagnose_with(&mut self, id: IncidentId, graph: &DependencyGraph, observations: &Observations) -> bool {
        let Some(incident) = self.incidents.get_mut(&id) else { return false };
        let mut diagnosis = self.diagnoser.diagnose(&incident.signals, graph, Some(observations));
        let mut before = incident.diagnosis.clone();
        before.diagnosed_at = diagnosis.diagnosed_at;
        let changed = before != diagnosis;
        if !changed {
            // Only the time differs: keep the first time this diagnosis was made.
            diagnosis.diagnosed_at = incident.diagnosis.diagnosed_at.or(diagnosis.diagnosed_at);
        }
        incident.diagnosis = diagnosis;
        record_diagnosis(incident, observations.now);
        changed
    }

    /// Diagnoses the open incidents again (the dependency graph learnt an edge): a service that turns out
    /// to call the root becomes a victim.
    pub fn rediagnose_open(&mut self, graph: &DependencyGraph, now: Timestamp) {
        let open: Vec<IncidentId> = self.active().map(|incident| incident.id).collect();
        for id in open {
            self.rediagnose(id, graph, now);
        }
    }

    /// Moves incident `id` to `state`, with `note` as its evidence.
    pub fn transition(&mut self, id: IncidentId, state: IncidentState, note: String, now: Timestamp) {
        let Some(incident) = self.incidents.get_mut(&id) else { return };
        incident.state = state;
        if state.is_closed() {
            incident.closed_at = Some(now);
        }
        self.push(id, state, note, now);
    }

    /// Adds a note to incident `id`'s timeline.
    pub fn note(&mut self, id: IncidentId, note: String, now: Timestamp) {
        let Some(state) = self.incidents.get(&id).map(|i| i.state) else { return };
        self.push(id, state, note, now);
    }

    /// Records that action `action` belongs to incident `id`.
    pub fn add_action(&mut self, id: IncidentId, action: mend_types::ActionId) {
        if let Some(incident) = self.incidents.get_mut(&id) {
            incident.actions.push(action);
        }
    }

    fn push(&mut self, id: IncidentId, state: IncidentState, note: String, now: Timestamp) {
        let Some(incident) = self.incidents.get_mut(&id) else { return };
        incident.updated_at = now;
        incident.timeline.push(TimelineEntry { at: now, state, note });
        if incident.timeline.len() > MAX_TIMELINE {
            // The first entry (what opened it) stays; the oldest after it goes.
            incident.timeline.remove(1);
        }
    }

    /// Forgets incidents closed longer than the window ago (they are in the journal); returns how many.
    pub fn prune(&mut self, now: Timestamp) -> usize {
        let before = self.incidents.len();
        let window = self.window;
        self.incidents.retain(|_, incident| incident.closed_at.is_none_or(|closed| within(now, closed, window)));
        before - self.incidents.len()
    }

    /// The services of incident `id` (for targets of signals without one).
    pub fn services(&self, id: IncidentId) -> Vec<ServiceName> {
        self.incidents.get(&id).map(|i| i.services.iter().cloned().collect()).unwrap_or_default()
    }
}

/// Appends the incident's diagnosis to its history when its name or root differs from the last one
/// recorded; made at `diagnosed_at`, or (from the signals alone) `now`.
fn record_diagnosis(incident: &mut Incident, now: Timestamp) {
    let diagnosis = &incident.diagnosis;
    if diagnosis.name.is_empty()
        || incident.diagnoses.last().is_some_and(|last| last.name == diagnosis.name && last.root == diagnosis.root)
    {
        return;
    }
    let at = diagnosis.diagnosed_at.unwrap_or(now);
    incident.diagnoses.push(DiagnosisChange { at, name: diagnosis.name.clone(), root: diagnosis.root.clone() });
    if incident.diagnoses.len() > MAX_DIAGNOSES {
        incident.diagnoses.remove(1);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mend_types::{Diagnosis, Severity, SignalKind};

    use super::*;
    use crate::BuiltinDiagnoser;

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text).expect("valid name")
    }

    fn signal(at_secs: i64, signal_name: &str, service: Option<&str>, state: SignalState) -> Signal {
        let mut labels = BTreeMap::new();
        if let Some(service) = service {
            labels.insert("service".to_owned(), service.to_owned());
        }
        Signal {
            at: Timestamp::from_millis(at_secs * 1000),
            since: Timestamp::from_millis(at_secs * 1000),
            state,
            kind: SignalKind::Rule,
            name: signal_name.to_owned(),
            severity: Severity::Warning,
            service: service.map(name),
            replica: None,
            value: 1.0,
            labels,
            evidence: format!("{signal_name} evidence"),
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    #[test]
    fn signals_group_by_service_window_and_dependency_and_unlabelled_ones_are_attributed() {
        let graph = DependencyGraph::new([(name("web"), name("db"))]);
        let mut book = IncidentBook::new(1, Duration::from_secs(60), Box::new(BuiltinDiagnoser));
        let first = book.observe(&signal(0, "DbSlow", Some("db"), SignalState::Firing), &graph, at(0));
        assert_eq!(first, Observed::Opened(IncidentId(1)));
        // Along the graph: web calls db.
        assert_eq!(
            book.observe(&signal(5, "WebErrors", Some("web"), SignalState::Firing), &graph, at(5)),
            Observed::Joined(IncidentId(1))
        );
        // No service: attributed through the incident (to its root, db).
        assert_eq!(
            book.observe(&signal(6, "Latency", None, SignalState::Firing), &graph, at(6)),
            Observed::Joined(IncidentId(1))
        );
        let incident = book.get(IncidentId(1)).expect("in the book");
        assert_eq!(incident.signals[2].service, Some(name("db")));
        assert!(incident.signals[2].attributed);
        assert_eq!(incident.diagnosis.root, Some(name("db")));
        // An unrelated service opens its own incident, and so does one past the window.
        assert_eq!(
            book.observe(&signal(7, "CacheFull", Some("cache"), SignalState::Firing), &graph, at(7)),
            Observed::Opened(IncidentId(2))
        );
        assert_eq!(
            book.observe(&signal(200, "Other", Some("db"), SignalState::Firing), &graph, at(200)),
            Observed::Opened(IncidentId(3))
        );
    }

    #[test]
    fn the_ends_of_a_chain_join_one_incident_whichever_fires_first() {
        let graph = DependencyGraph::new([(name("web"), name("orders")), (name("orders"), name("stock"))]);
        let mut book = IncidentBook::new(1, Duration::from_secs(60), Box::new(BuiltinDiagnoser));
        book.observe(&signal(0, "Errors", Some("stock"), SignalState::Firing), &graph, at(0));
        // web reaches stock through orders, whose signal has not arrived yet.
        assert_eq!(
            book.observe(&signal(0, "Errors", Some("web"), SignalState::Firing), &graph, at(0)),
            Observed::Joined(IncidentId(1))
        );
        // Two callers of one service are not related through it.
        let hub = DependencyGraph::new([(name("a"), name("hub")), (name("b"), name("hub"))]);
        book.observe(&signal(1, "Slow", Some("a"), SignalState::Firing), &hub, at(1));
        assert_eq!(
            book.observe(&signal(1, "Slow", Some("b"), SignalState::Firing), &hub, at(1)),
            Observed::Opened(IncidentId(3))
        );
    }

    #[test]
    fn a_flapping_trigger_reopens_its_incident_instead_of_opening_another() {
        let graph = DependencyGraph::default();
        let mut book = IncidentBook::new(7, Duration::from_secs(60), Box::new(BuiltinDiagnoser));
        for round in 0..5 {
            let t = round * 20;
            let fired = book.observe(&signal(t, "Flappy", Some("web"), SignalState::Firing), &graph, at(t));
            assert_eq!(fired.incident(), Some(IncidentId(7)), "round {round}: {fired:?}");
            book.observe(&signal(t + 1, "Flappy", Some("web"), SignalState::Resolved), &graph, at(t + 1));
            book.transition(IncidentId(7), IncidentState::Resolved, "all resolved".into(), at(t + 2));
        }
        assert_eq!(book.all().count(), 1);
        assert_eq!(book.get(IncidentId(7)).map(|i| i.flaps), Some(4));
        // Past the window it is a new incident, and the old one is forgotten from memory.
        assert_eq!(book.prune(at(500)), 1);
        assert_eq!(
            book.observe(&signal(500, "Flappy", Some("web"), SignalState::Firing), &graph, at(500)),
            Observed::Opened(IncidentId(8))
        );
    }

    /// Names an incident `unknown` from its signals, then what the observations' clock says.
    struct ByTime;

    impl Diagnoser for ByTime {
        fn diagnose(
            &self,
            _: &[IncidentSignal],
            _: &DependencyGraph,
            observations: Option<&Observations>,
        ) -> Diagnosis {
            let Some(observations) = observations else {
                return Diagnosis { name: "unknown".into(), ..Default::default() };
            };
            let name = if observations.now < at(100) { "crashed" } else { "memory_exhaustion" };
            Diagnosis {
                name: name.into(),
                root: Some(super::tests::name("web")),
                diagnosed_at: Some(observations.now),
                ..Default::default()
            }
        }
    }

    #[test]
    fn an_incident_keeps_every_diagnosis_it_was_given_with_the_time_it_was_first_made() {
        let graph = DependencyGraph::default();
        let mut book = IncidentBook::new(1, Duration::from_secs(600), Box::new(ByTime));
        book.observe(&signal(0, "Down", Some("web"), SignalState::Firing), &graph, at(0));
        let observed = |now: i64| Observations { now: at(now), ..Default::default() };
        for now in [10, 20, 150, 160] {
            book.diagnose_with(IncidentId(1), &graph, &observed(now));
        }
        let history: Vec<(Timestamp, &str)> = book
            .get(IncidentId(1))
            .map(|incident| incident.diagnoses.iter().map(|change| (change.at, change.name.as_str())).collect())
            .unwrap_or_default();
        assert_eq!(history, [(at(0), "unknown"), (at(10), "crashed"), (at(150), "memory_exhaustion")]);
    }
}
