//! The diagnosis seam: an incident's signals, the dependency graph and what the edge observed in, a
//! named [`Diagnosis`] with a root service and victims out.
//!
//! A [`Diagnoser`] that reads more than the signals (the services' series, lifecycle facts, the
//! proxies' per-edge figures) says what to gather in [`Diagnoser::request`]; the healer hands that on
//! to the IO edge as a decision, and the edge answers with [`Observations`], which the book passes back
//! to [`Diagnoser::diagnose`]. The diagnoser itself stays pure. [`BuiltinDiagnoser`] needs nothing beyond
//! the signals; [`RankingDiagnoser`](crate::RankingDiagnoser) is `mend-diagnose` plugged in here.

use std::collections::BTreeSet;

use mend_types::{BuiltinDiagnosis, Diagnosis, IncidentId, IncidentSignal, ServiceName, SignalKind, Timestamp};

use crate::DependencyGraph;

/// What a diagnoser wants the edge to gather for one incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationRequest {
    /// The incident.
    pub incident: IncidentId,
    /// The services whose facts and series to gather: the incident's, what they call (transitively)
    /// and who calls them; bounded.
    pub services: BTreeSet<ServiceName>,
    /// Series points from this time on.
    pub from: Timestamp,
}

/// What the edge gathered for an [`ObservationRequest`], at `now`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// When it was gathered: the latest time the diagnosis reads.
    pub now: Timestamp,
    /// Per service asked for: its replica count, lifecycle facts and resources against limits (its
    /// signals are filled in by the diagnoser from the incident's).
    pub services: Vec<mend_diagnose::ServiceFacts>,
    /// The services' series, from the request's `from` to `now`.
    pub series: Vec<mend_diagnose::SeriesInput>,
    /// Caller → callee edges the proxies observed, with their figures.
    pub edges: Vec<(ServiceName, ServiceName, mend_diagnose::EdgeSource)>,
}

/// Names an incident and ranks its services. Must be pure and deterministic.
pub trait Diagnoser: Send + Sync {
    /// The diagnosis of an incident whose signals are `signals` (firing and resolved, oldest first), with
    /// what the edge observed for it when there is something.
    fn diagnose(
        &self,
        signals: &[IncidentSignal],
        graph: &DependencyGraph,
        observations: Option<&Observations>,
    ) -> Diagnosis;

    /// What to gather for incident `incident` with `signals` and `services`, if this diagnoser reads
    /// observations (the default reads none).
    fn request(
        &self,
        incident: IncidentId,
        signals: &[IncidentSignal],
        services: &BTreeSet<ServiceName>,
        graph: &DependencyGraph,
    ) -> Option<ObservationRequest> {
        let _ = (incident, signals, services, graph);
        None
    }
}

/// The built-in rules: the most specific built-in diagnosis among the firing signals names the incident
/// (else its first signal); the root is the service with signals that the others with signals depend on
/// (declared or observed), and those others are its victims.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinDiagnoser;

/// Built-in diagnoses from the most to the least specific.
const SPECIFICITY: [BuiltinDiagnosis; 7] = [
    BuiltinDiagnosis::CrashLoop,
    BuiltinDiagnosis::MemoryExhaustion,
    BuiltinDiagnosis::Hung,
    BuiltinDiagnosis::BadReplica,
    BuiltinDiagnosis::Crashed,
    BuiltinDiagnosis::Unhealthy,
    BuiltinDiagnosis::Overload,
];

impl Diagnoser for BuiltinDiagnoser {
    fn diagnose(&self, signals: &[IncidentSignal], graph: &DependencyGraph, _: Option<&Observations>) -> Diagnosis {
        let firing: Vec<&IncidentSignal> = signals.iter().filter(|s| s.firing).collect();
        let considered: Vec<&IncidentSignal> = if firing.is_empty() { signals.iter().collect() } else { firing };
        let named = SPECIFICITY
            .iter()
            .find_map(|diagnosis| {
                considered.iter().find(|s| {
                    s.name == diagnosis.as_str() && matches!(s.kind, SignalKind::Diagnosis | SignalKind::Predictive)
                })
            })
            .or_else(|| considered.first())
            .copied();
        let services: BTreeSet<ServiceName> = considered.iter().filter_map(|s| s.service.clone()).collect();
        // The root: a service the others depend on and that depends on none of them.
        let root = services
            .iter()
            .find(|candidate| {
                !services.iter().any(|other| other != *candidate && graph.depends_on(candidate, other))
                    && services.iter().all(|other| other == *candidate || graph.depends_on(other, candidate))
            })
            .or_else(|| named.and_then(|s| s.service.as_ref()))
            .or_else(|| services.iter().next())
            .cloned();
        let victims: BTreeSet<ServiceName> = match &root {
            Some(root) => services.iter().filter(|s| *s != root && graph.depends_on(s, root)).cloned().collect(),
            None => BTreeSet::new(),
        };
        let name = named.map(|s| s.name.clone()).unwrap_or_default();
        let mut evidence = named.map(|s| s.evidence.clone()).unwrap_or_default();
        if let (Some(root), false) = (&root, victims.is_empty()) {
            let names: Vec<&str> = victims.iter().map(ServiceName::as_str).collect();
            evidence.push_str(&format!("; {} depend(s) on {root}, where the cause is", names.join(", ")));
        }
        Diagnosis { name, root, victims, evidence, ..Diagnosis::default() }
    }
}

#[cfg(test)]
mod tests {
    use mend_types::Timestamp;

    use super::*;

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text).expect("valid name")
    }

    fn signal(service: &str, signal_name: &str, kind: SignalKind) -> IncidentSignal {
        IncidentSignal {
            fingerprint: format!("{signal_name}:{service}"),
            name: signal_name.to_owned(),
            kind,
            service: Some(name(service)),
            replica: None,
            firing: true,
            since: Timestamp::from_millis(0),
            at: Timestamp::from_millis(0),
            evidence: format!("{signal_name} on {service}"),
            attributed: false,
        }
    }

    #[test]
    fn the_root_is_the_dependency_and_callers_are_victims() {
        let graph = DependencyGraph::new([(name("web"), name("api")), (name("api"), name("db"))]);
        let signals = [
            signal("web", "HighLatency", SignalKind::Rule),
            signal("db", "crash_loop", SignalKind::Diagnosis),
            signal("api", "Errors", SignalKind::Rule),
        ];
        let diagnosis = BuiltinDiagnoser.diagnose(&signals, &graph, None);
        assert_eq!(diagnosis.name, "crash_loop");
        assert_eq!(diagnosis.root, Some(name("db")));
        assert_eq!(diagnosis.victims, BTreeSet::from([name("api"), name("web")]));
        assert!(diagnosis.evidence.ends_with("api, web depend(s) on db, where the cause is"), "{}", diagnosis.evidence);
    }

    #[test]
    fn unrelated_services_have_no_victims_and_the_named_signal_decides_the_root() {
        let graph = DependencyGraph::default();
        let signals = [signal("web", "HighLatency", SignalKind::Rule), signal("db", "hung", SignalKind::Diagnosis)];
        let diagnosis = BuiltinDiagnoser.diagnose(&signals, &graph, None);
        assert_eq!((diagnosis.name.as_str(), diagnosis.root), ("hung", Some(name("db"))));
        assert!(diagnosis.victims.is_empty());
    }
}
