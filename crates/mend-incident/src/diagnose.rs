//! The diagnosis seam: an incident's signals, the dependency graph and what the edge observed in, a
//! named [`Diagnosis`] with a root service and victims out.
//!
//! A [`Diagnoser`] that reads more than the signals (the services' series, lifecycle facts, the
//! proxies' per-edge figures) says what to gather in [`Diagnoser::request`]; the healer hands that on
//! to the IO edge as a decision, and the edge answers with [`Observations`], which the book passes back
//! to [`Diagnoser::diagnose`]. The diagnoser itself stays pure. [`BuiltinDiagnoser`] needs nothing beyond
//! the signals; [`RankingDiagnoser`](crate::RankingDiagnoser) is `mend-diagnose` plugged in here.

use std::collections::BTreeSet;

use mend_types::{
    BuiltinDiagnosis, Diagnosis, IncidentId, IncidentSignal, LOG_RATE_SIGNAL, NEW_LOG_TEMPLATE_SIGNAL,
    SERVICE_ERRORS_RULE, ServiceName, SignalKind, Timestamp,
};

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
/// (else its first signal), unless a more specific one that resolved covers it ([`named_signal`]); the
/// root is the service with signals that the others with signals depend on (declared or observed), and
/// those others are its victims.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinDiagnoser;

/// Built-in diagnoses from the most to the least specific. `bad_release` first: a release judged worse
/// than the one before it (a verdict over the release's own answers) explains what its replicas do.
const SPECIFICITY: [BuiltinDiagnosis; 8] = [
    BuiltinDiagnosis::BadRelease,
    BuiltinDiagnosis::CrashLoop,
    BuiltinDiagnosis::MemoryExhaustion,
    BuiltinDiagnosis::Hung,
    BuiltinDiagnosis::BadReplica,
    BuiltinDiagnosis::Crashed,
    BuiltinDiagnosis::Unhealthy,
    BuiltinDiagnosis::Overload,
];

/// Where `signal`'s built-in diagnosis stands in [`SPECIFICITY`] (None: not a built-in diagnosis).
fn specificity(signal: &IncidentSignal) -> Option<usize> {
    if !matches!(signal.kind, SignalKind::Diagnosis | SignalKind::Predictive) {
        return None;
    }
    SPECIFICITY.iter().position(|diagnosis| signal.name == diagnosis.as_str())
}

/// The signal that names an incident: the most specific built-in diagnosis among the firing signals
/// (else among all of them, else the first signal, the built-in rule `ServiceErrors` last), unless a more specific diagnosis resolved after
/// the chosen one's condition began: then the weaker one is read as the same fault seen later (a
/// rolled-back canary's replica whose 30 s error window still holds the canary's answers, say), and does
/// not replace it. A weaker diagnosis whose condition began after the stronger one resolved is news,
/// and names the incident.
pub fn named_signal(signals: &[IncidentSignal]) -> Option<&IncidentSignal> {
    let most_specific = |among: &mut dyn Iterator<Item = &IncidentSignal>| -> Option<(usize, usize)> {
        among.enumerate().filter_map(|(idx, signal)| specificity(signal).map(|rank| (rank, idx))).min()
    };
    let firing: Vec<&IncidentSignal> = signals.iter().filter(|s| s.firing).collect();
    let considered: Vec<&IncidentSignal> = if firing.is_empty() { signals.iter().collect() } else { firing };
    let Some((rank, idx)) = most_specific(&mut considered.iter().copied()) else {
        // The built-in rule `ServiceErrors` says only what clients see: another signal names the incident
        // better, firing, or (a `[[rule]]` of the user's on the same service, say) resolved since.
        let generic = |signal: &IncidentSignal| signal.kind == SignalKind::Rule && signal.name == SERVICE_ERRORS_RULE;
        let first = considered.first().copied()?;
        let is_log = |signal: &IncidentSignal| {
            signal.kind == SignalKind::Anomaly
                && (signal.name == NEW_LOG_TEMPLATE_SIGNAL || signal.name == LOG_RATE_SIGNAL)
        };
        return considered
            .iter()
            .copied()
            .find(|signal| !generic(signal))
            .or_else(|| {
                signals.iter().find(|signal| !generic(signal) && !is_log(signal) && signal.service == first.service)
            })
            .or(Some(first));
    };
    let chosen = considered[idx];
    let covering = signals
        .iter()
        .filter(|s| !s.firing && s.service == chosen.service && chosen.since <= s.at)
        .filter_map(|s| specificity(s).filter(|stronger| *stronger < rank).map(|stronger| (stronger, s)))
        .min_by_key(|(stronger, _)| *stronger)
        .map(|(_, s)| s);
    Some(covering.unwrap_or(chosen))
}

impl Diagnoser for BuiltinDiagnoser {
    fn diagnose(&self, signals: &[IncidentSignal], graph: &DependencyGraph, _: Option<&Observations>) -> Diagnosis {
        let firing: Vec<&IncidentSignal> = signals.iter().filter(|s| s.firing).collect();
        let considered: Vec<&IncidentSignal> = if firing.is_empty() { signals.iter().collect() } else { firing };
        let named = named_signal(signals);
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

    fn at(mut signal: IncidentSignal, since_secs: i64, at_secs: i64, firing: bool) -> IncidentSignal {
        signal.since = Timestamp::from_millis(since_secs * 1000);
        signal.at = Timestamp::from_millis(at_secs * 1000);
        signal.firing = firing;
        signal
    }

    #[test]
    fn a_weaker_diagnosis_on_the_same_evidence_does_not_replace_a_stronger_one() {
        let graph = DependencyGraph::default();
        let release = |firing, at_secs| at(signal("web", "bad_release", SignalKind::Diagnosis), 3, at_secs, firing);
        let replica = |since| at(signal("web", "bad_replica", SignalKind::Diagnosis), since, 16, true);
        let named = |signals: &[IncidentSignal]| BuiltinDiagnoser.diagnose(signals, &graph, None).name;
        let cases: [(&str, Vec<IncidentSignal>, &str); 6] = [
            ("both firing: the more specific names it", vec![release(true, 3), replica(5)], "bad_release"),
            (
                "rolled back at 6 s; the canary's errors began at 5 s: the same fault",
                vec![release(false, 6), replica(5)],
                "bad_release",
            ),
            (
                "a bad replica that began after the rollback is news",
                vec![release(false, 6), replica(20)],
                "bad_replica",
            ),
            ("bad_release alone, resolved", vec![release(false, 6)], "bad_release"),
            (
                "a resolved weaker one never covers a stronger firing one",
                vec![at(signal("web", "bad_replica", SignalKind::Diagnosis), 1, 2, false), release(true, 3)],
                "bad_release",
            ),
            (
                "another service's resolved verdict says nothing of this one",
                vec![at(signal("api", "bad_release", SignalKind::Diagnosis), 3, 6, false), replica(5)],
                "bad_replica",
            ),
        ];
        for (case, signals, expected) in cases {
            assert_eq!(named(&signals), expected, "{case}");
        }
    }

    #[test]
    fn unrelated_services_have_no_victims_and_the_named_signal_decides_the_root() {
        let graph = DependencyGraph::default();
        let signals = [signal("web", "HighLatency", SignalKind::Rule), signal("db", "hung", SignalKind::Diagnosis)];
        let diagnosis = BuiltinDiagnoser.diagnose(&signals, &graph, None);
        assert_eq!((diagnosis.name.as_str(), diagnosis.root), ("hung", Some(name("db"))));
        assert!(diagnosis.victims.is_empty());
    }

    #[test]
    fn the_built_in_service_errors_rule_names_an_incident_only_when_nothing_else_does() {
        let graph = DependencyGraph::default();
        let builtin = signal("db", SERVICE_ERRORS_RULE, SignalKind::Rule);
        let mut users = signal("db", "Errors", SignalKind::Rule);
        users.firing = false;
        // The user's rule resolved (db was restarted) while the built-in one still holds its window.
        let named = |signals: &[IncidentSignal]| BuiltinDiagnoser.diagnose(signals, &graph, None).name;
        assert_eq!(named(&[users.clone(), builtin.clone()]), "Errors");
        assert_eq!(named(&[builtin.clone(), users]), "Errors");
        assert_eq!(named(std::slice::from_ref(&builtin)), SERVICE_ERRORS_RULE);
        // Not a resolved signal of another service, nor a log line.
        let mut elsewhere = signal("web", "Slow", SignalKind::Rule);
        elsewhere.firing = false;
        let mut logged = signal("db", NEW_LOG_TEMPLATE_SIGNAL, SignalKind::Anomaly);
        logged.firing = false;
        assert_eq!(named(&[elsewhere, logged, builtin.clone()]), SERVICE_ERRORS_RULE);
        // A built-in diagnosis is more specific still.
        assert_eq!(named(&[builtin, signal("db", "crashed", SignalKind::Diagnosis)]), "crashed");
    }
}
