//! `mend-diagnose` behind the [`Diagnoser`] seam: root-cause ranking across services from their series,
//! the dependency graph and their lifecycle facts, and a named diagnosis with its evidence per service.
//!
//! The incident's diagnosis is its root's: the first candidate of the ranking that may be its root (one of
//! its services, something they call, or a caller whose load explains one of them) when it is credible
//! (its own process or resources failed, a rule names what is wrong with it, or its metrics moved beyond
//! the anomaly threshold and nothing explains them); its victims are the services diagnosed `dependency_failure`, and those that depend on the
//! root without a fault of their own. When the ranking names no credible root (no series
//! yet, nothing moved), the built-in rules name the incident and the ranking is kept as information.

use std::collections::BTreeSet;
use std::time::Duration;

use mend_diagnose::{
    Component, DecideParams, DiagnosisKind, EdgeSource, IncidentDiagnosis, IncidentInput, RankParams, ServiceFacts,
};
use mend_types::{
    BuiltinDiagnosis, Diagnosis, IncidentId, IncidentSignal, RankedService, ServiceName, Severity, Signal, SignalState,
    Timestamp,
};

use crate::diagnose::{ObservationRequest, Observations};
use crate::{BuiltinDiagnoser, DependencyGraph, Diagnoser};

/// The ranking diagnoser: `mend-diagnose` with the parameters of a live daemon.
#[derive(Debug, Clone, Copy)]
pub struct RankingDiagnoser {
    /// The ranking's knobs.
    pub rank: RankParams,
    /// The decision procedure's thresholds.
    pub decide: DecideParams,
    /// Most services gathered for one incident (its own first, then the nearest along the calls): the
    /// cost of a diagnosis stays bounded however many services mend runs.
    pub max_services: usize,
    /// Most candidates an incident keeps in its ranking.
    pub max_ranked: usize,
}

impl RankingDiagnoser {
    /// The parameters for the daemon, which samples every second. Only the two windows differ from the
    /// documented method's defaults (docs/diagnosis.md, section 4), for reasons of sampling, not of any
    /// case: the baseline is the 10 minutes before the analysis (600 points at one a second, plenty for
    /// a median and an IQR, and a cost per incident that does not grow with how long mend has run), and
    /// the analysis starts 15 s before the incident's onset (live signals come from rules over rate
    /// windows of seconds and `for` durations, not from a detector confirming a shift on its fourth
    /// minute sample).
    pub fn live() -> Self {
        Self {
            rank: RankParams {
                baseline: Duration::from_secs(600),
                lookback: Duration::from_secs(15),
                ..RankParams::default()
            },
            decide: DecideParams::default(),
            max_services: 32,
            max_ranked: 10,
        }
    }
}

/// The incident's onset: the earliest `since` of its signals.
fn onset(signals: &[IncidentSignal]) -> Option<Timestamp> {
    signals.iter().map(|s| s.since).min()
}

fn component(name: &ServiceName) -> Component {
    Component::from(name)
}

/// An incident's signal as the decision procedure reads it.
fn signal(incident_signal: &IncidentSignal) -> Signal {
    let mut labels = std::collections::BTreeMap::new();
    if let Some(service) = &incident_signal.service {
        labels.insert("service".to_owned(), service.to_string());
    }
    Signal {
        at: incident_signal.at,
        since: incident_signal.since,
        state: if incident_signal.firing { SignalState::Firing } else { SignalState::Resolved },
        kind: incident_signal.kind,
        name: incident_signal.name.clone(),
        severity: Severity::Warning,
        service: incident_signal.service.clone(),
        replica: incident_signal.replica,
        value: f64::NAN,
        labels,
        evidence: incident_signal.evidence.clone(),
    }
}

impl RankingDiagnoser {
    /// The root the ranking names, when credible: the first candidate that may be the incident's root
    /// (one of its services, something they call, or a caller whose load explains one of them: the
    /// callers gathered to find the victims are not causes by being there), if it has a fault of its own,
    /// a diagnosis other than `unknown` or `dependency_failure`, or moved beyond the anomaly threshold with
    /// nothing explaining it.
    fn credible_root(
        &self,
        result: &IncidentDiagnosis,
        incident_services: &BTreeSet<ServiceName>,
        graph: &DependencyGraph,
    ) -> Option<ServiceName> {
        let own_fault =
            |component: &Component| result.diagnoses.iter().any(|d| &d.component == component && d.kind.is_own_fault());
        let explains_another = |component: &Component| {
            result.ranking.candidates.iter().any(|c| c.explained_by.as_ref().is_some_and(|e| &e.by == component))
        };
        let eligible = |component: &Component, name: &ServiceName| {
            incident_services.contains(name)
                || incident_services.iter().any(|service| graph.depends_on(service, name))
                || explains_another(component)
                || own_fault(component)
        };
        let (top, name) = result.candidates.iter().find_map(|component| {
            let name = ServiceName::new(component.as_str()).ok()?;
            eligible(component, &name).then_some((component, name))
        })?;
        let anomalous =
            result.ranking.candidate(top).is_some_and(|c| c.is_anomalous(&self.rank) && c.explained_by.is_none());
        // A rule named what is wrong with it from its own facts (its probes fail, it is busy, one of its
        // replicas misbehaves): a root before its series have moved.
        let named = result.diagnoses.iter().any(|d| {
            &d.component == top && !matches!(d.kind, DiagnosisKind::Unknown | DiagnosisKind::DependencyFailure)
        });
        (own_fault(top) || anomalous || named).then_some(name)
    }
}

impl Diagnoser for RankingDiagnoser {
    fn request(
        &self,
        incident: IncidentId,
        signals: &[IncidentSignal],
        services: &BTreeSet<ServiceName>,
        graph: &DependencyGraph,
    ) -> Option<ObservationRequest> {
        let onset = onset(signals)?;
        Some(ObservationRequest {
            incident,
            services: graph.neighbourhood(services, self.max_services),
            from: onset.saturating_sub(self.rank.lookback).saturating_sub(self.rank.baseline),
        })
    }

    fn diagnose(
        &self,
        signals: &[IncidentSignal],
        graph: &DependencyGraph,
        observations: Option<&Observations>,
    ) -> Diagnosis {
        let builtin = BuiltinDiagnoser.diagnose(signals, graph, None);
        let (Some(observations), Some(onset)) = (observations, onset(signals)) else { return builtin };

        let mut calls = mend_diagnose::DependencyGraph::new();
        for (caller, callee) in graph.edges() {
            calls.add(component(caller), component(callee), EdgeSource::Declared);
        }
        for (caller, callee, source) in &observations.edges {
            calls.add(component(caller), component(callee), *source);
        }
        let mut services: Vec<ServiceFacts> = observations.services.clone();
        for name in signals.iter().filter_map(|s| s.service.as_ref()) {
            if !services.iter().any(|facts| facts.component.as_str() == name.as_str()) {
                services.push(ServiceFacts::new(component(name), 1));
            }
        }
        for facts in &mut services {
            facts.signals = signals
                .iter()
                .filter(|s| s.service.as_ref().is_some_and(|name| name.as_str() == facts.component.as_str()))
                .map(signal)
                .collect();
        }
        let result = mend_diagnose::diagnose(&IncidentInput {
            onset,
            now: observations.now,
            services: &services,
            series: &observations.series,
            graph: &calls,
            rank: self.rank,
            decide: self.decide,
        });

        let kind_of = |name: &ServiceName| {
            result.diagnoses.iter().find(|d| d.component.as_str() == name.as_str()).map(|d| d.kind)
        };
        let incident_services: BTreeSet<ServiceName> = signals.iter().filter_map(|s| s.service.clone()).collect();
        let root = self.credible_root(&result, &incident_services, graph);
        let victims: BTreeSet<ServiceName> = match &root {
            Some(root) => result
                .diagnoses
                .iter()
                .filter_map(|d| ServiceName::new(d.component.as_str()).ok())
                .chain(incident_services.iter().cloned())
                .filter(|service| service != root)
                .filter(|service| match kind_of(service) {
                    Some(DiagnosisKind::DependencyFailure) => true,
                    Some(kind) if kind.is_own_fault() => false,
                    _ => graph.depends_on(service, root),
                })
                .collect(),
            None => builtin.victims.clone(),
        };

        let ranking: Vec<RankedService> = result
            .candidates
            .iter()
            .filter_map(|candidate| {
                let service = ServiceName::new(candidate.as_str()).ok()?;
                let ranked = result.ranking.candidate(candidate);
                let diagnosis = result.diagnoses.iter().find(|d| &d.component == candidate);
                let involved = incident_services.contains(&service)
                    || victims.contains(&service)
                    || root.as_ref() == Some(&service)
                    || ranked.is_some_and(|c| c.is_anomalous(&self.rank))
                    || diagnosis.is_some_and(|d| d.kind.is_own_fault());
                involved.then(|| RankedService {
                    score: ranked.map_or(0.0, |c| c.rank_score),
                    onset: ranked.and_then(|c| c.onset),
                    diagnosis: diagnosis.map_or(DiagnosisKind::Unknown, |d| d.kind).as_str().to_owned(),
                    confidence: diagnosis.map_or(0.0, |d| d.confidence.value()),
                    explained_by: diagnosis
                        .and_then(|d| d.cause.clone())
                        .or_else(|| ranked.and_then(|c| c.explained_by.as_ref().map(|e| e.by.clone())))
                        .and_then(|by| ServiceName::new(by.as_str()).ok()),
                    evidence: diagnosis.map(|d| d.explain()).unwrap_or_default(),
                    service,
                })
            })
            .collect();
        // The root first (a caller gathered only to find the victims may have scored higher on noise).
        let mut ranking = ranking;
        let first = root.as_ref().or(builtin.root.as_ref());
        if let Some(idx) = first.and_then(|first| ranking.iter().position(|r| &r.service == first)) {
            let entry = ranking.remove(idx);
            ranking.insert(0, entry);
        }
        ranking.truncate(self.max_ranked);

        let root_diagnosis =
            root.as_ref().and_then(|root| result.diagnoses.iter().find(|d| d.component.as_str() == root.as_str()));
        let (name, confidence, facts) = match root_diagnosis {
            Some(diagnosis) if diagnosis.kind != DiagnosisKind::Unknown => {
                (diagnosis.kind.as_str().to_owned(), Some(diagnosis.confidence.value()), diagnosis.explain())
            }
            // The root is known but no rule names what is wrong with it: the signals' name stays, with
            // what moved as the facts.
            Some(diagnosis) => (builtin.name.clone(), None, diagnosis.explain()),
            None => (builtin.name.clone(), None, Vec::new()),
        };
        // A release judged worse than the one before it (the rollout's verdict, `bad_release`) is the
        // cause of what its replicas do: the decision procedure, which knows no releases, names what it
        // sees of them (a bad replica, a crash) and must not replace the verdict; its facts stay below it.
        let (name, confidence, facts) = if builtin.name == BuiltinDiagnosis::BadRelease.as_str() {
            let mut facts = facts;
            facts.insert(0, builtin.evidence.clone());
            (builtin.name.clone(), None, facts)
        } else {
            (name, confidence, facts)
        };
        let root = root.or_else(|| builtin.root.clone());
        // The deciding fact and the victims; the built-in rules' evidence (which names them) without one.
        let evidence = match (facts.first(), &root) {
            (Some(fact), Some(root)) if !victims.is_empty() => {
                let names: Vec<&str> = victims.iter().map(ServiceName::as_str).collect();
                format!("{fact}; {} suffer(s) from {root}, where the cause is", names.join(", "))
            }
            (Some(fact), _) => fact.clone(),
            (None, _) => builtin.evidence.clone(),
        };
        Diagnosis { name, root, victims, evidence, confidence, facts, ranking, diagnosed_at: Some(observations.now) }
    }
}

#[cfg(test)]
mod tests {
    use mend_diagnose::{Lifecycle, LifecycleFact, SeriesInput};
    use mend_types::{ExitCause, ExitInfo, LastExit, SignalKind};

    use super::*;

    fn name(text: &str) -> ServiceName {
        ServiceName::new(text).expect("valid name")
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_millis(secs * 1000)
    }

    fn rule(service: &str, rule_name: &str, since: i64) -> IncidentSignal {
        IncidentSignal {
            fingerprint: format!("{rule_name}:{service}"),
            name: rule_name.to_owned(),
            kind: SignalKind::Rule,
            service: Some(name(service)),
            replica: None,
            firing: true,
            since: at(since),
            at: at(since),
            evidence: format!("{rule_name} on {service}"),
            attributed: false,
        }
    }

    /// One point a second from 0 to 700 s: `normal` until `from`, `faulty` after (a little noise on both).
    fn series(service: &str, metric: &str, from: Option<i64>, normal: f64, faulty: f64) -> SeriesInput {
        let points = (0..700)
            .map(|t| {
                let noise = [0.0, 0.01, -0.01, 0.02, -0.02][(t % 5) as usize] * normal.abs().max(0.01);
                let value = if from.is_some_and(|from| t >= from) { faulty } else { normal };
                (at(t), value + noise)
            })
            .collect();
        SeriesInput { component: Component::new(service), instance: None, metric: metric.to_owned(), points }
    }

    fn facts(service: &str) -> ServiceFacts {
        ServiceFacts::new(Component::new(service), 1)
    }

    fn chain() -> DependencyGraph {
        DependencyGraph::new([(name("front"), name("mid")), (name("mid"), name("back"))])
    }

    /// Name, root, victims, and the ranking's (service, diagnosis) pairs.
    type Expected<'a> = (&'a str, Option<&'a str>, &'a [&'a str], &'a [(&'a str, &'a str)]);

    fn check(signals: &[IncidentSignal], observations: Option<&Observations>, expected: Expected<'_>) -> Diagnosis {
        let diagnosis = RankingDiagnoser::live().diagnose(signals, &chain(), observations);
        let ranking: Vec<(&str, &str)> =
            diagnosis.ranking.iter().map(|r| (r.service.as_str(), r.diagnosis.as_str())).collect();
        let victims: Vec<&str> = diagnosis.victims.iter().map(ServiceName::as_str).collect();
        assert_eq!(
            (
                diagnosis.name.as_str(),
                diagnosis.root.as_ref().map(ServiceName::as_str),
                victims.as_slice(),
                ranking.as_slice()
            ),
            expected,
            "{diagnosis:#?}"
        );
        diagnosis
    }

    #[test]
    fn errors_at_the_end_of_a_chain_make_the_end_the_root_and_its_callers_dependency_failures() {
        let errors = "mend_proxy_error_ratio";
        let observations = Observations {
            now: at(699),
            services: vec![facts("front"), facts("mid"), facts("back")],
            series: vec![
                series("front", errors, Some(650), 0.0, 1.0),
                series("mid", errors, Some(650), 0.0, 1.0),
                series("back", errors, Some(650), 0.0, 1.0),
                series("front", "mend_replica_cpu_percent", None, 3.0, 3.0),
                series("back", "mend_replica_cpu_percent", None, 3.0, 3.0),
            ],
            edges: Vec::new(),
        };
        // The callers' rules fired first: the ranking still puts the callee first.
        let signals = [rule("front", "Errors", 652), rule("mid", "Errors", 652), rule("back", "Errors", 653)];
        let diagnosis = check(
            &signals,
            Some(&observations),
            (
                "Errors",
                Some("back"),
                &["front", "mid"],
                &[("back", "unknown"), ("mid", "dependency_failure"), ("front", "dependency_failure")],
            ),
        );
        assert_eq!(diagnosis.confidence, None, "no rule names an error ratio alone");
        assert_eq!(diagnosis.ranking[1].explained_by, Some(name("back")));
        assert!(
            diagnosis.facts[0].starts_with("mend_proxy_error_ratio of back rose from 0% to 100% at 00:10:50"),
            "{:?}",
            diagnosis.facts
        );
        assert!(
            diagnosis.evidence.ends_with("front, mid suffer(s) from back, where the cause is"),
            "{}",
            diagnosis.evidence
        );
        assert!(
            diagnosis.ranking[2].evidence[0].contains("mid is called by front"),
            "{:?}",
            diagnosis.ranking[2].evidence
        );
        assert_eq!(diagnosis.diagnosed_at, Some(at(699)));
    }

    #[test]
    fn a_named_fault_of_the_root_names_the_incident_even_when_only_a_caller_signalled() {
        let mut back = facts("back");
        let crash = LastExit { exit: ExitInfo::code(3), cause: ExitCause::Program };
        back.lifecycle.push(LifecycleFact { at: at(651), replica: 0, what: Lifecycle::Exited(crash) });
        let observations = Observations {
            now: at(699),
            services: vec![facts("front"), facts("mid"), back],
            series: vec![
                series("front", "mend_proxy_error_ratio", Some(651), 0.0, 0.5),
                series("mid", "mend_proxy_error_ratio", Some(651), 0.0, 0.5),
            ],
            edges: Vec::new(),
        };
        let diagnosis = check(
            &[rule("front", "Errors", 652)],
            Some(&observations),
            (
                "crashed",
                Some("back"),
                &["front", "mid"],
                &[("back", "crashed"), ("mid", "unknown"), ("front", "dependency_failure")],
            ),
        );
        assert_eq!(diagnosis.confidence, Some(0.9));
        assert_eq!(diagnosis.facts, ["replica 0 ended at 00:10:51: exit code 3"]);
    }

    #[test]
    fn a_caller_gathered_to_find_the_victims_is_not_the_root_however_its_noise_scored() {
        let mut stock = facts("stock");
        stock.lifecycle.push(LifecycleFact { at: at(651), replica: 0, what: Lifecycle::Unready });
        let observations = Observations {
            now: at(699),
            services: vec![facts("mid"), stock],
            series: vec![
                // The caller's CPU, quantised to whole percents, drops a point before the fault.
                series("mid", "mend_replica_cpu_percent", Some(640), 4.0, 3.0),
                series("stock", "mend_proxy_request_duration_mean_seconds", Some(650), 0.002, 0.004),
            ],
            edges: Vec::new(),
        };
        let mut unhealthy = rule("stock", "unhealthy", 651);
        unhealthy.kind = SignalKind::Diagnosis;
        let graph = DependencyGraph::new([(name("mid"), name("stock"))]);
        let diagnosis = RankingDiagnoser::live().diagnose(&[unhealthy], &graph, Some(&observations));
        let ranking: Vec<(&str, &str)> =
            diagnosis.ranking.iter().map(|r| (r.service.as_str(), r.diagnosis.as_str())).collect();
        assert_eq!(
            (diagnosis.name.as_str(), diagnosis.root.as_ref().map(ServiceName::as_str), ranking.as_slice()),
            ("unhealthy", Some("stock"), [("stock", "unhealthy"), ("mid", "unknown")].as_slice()),
            "{diagnosis:#?}"
        );
        assert!(diagnosis.ranking[1].score > diagnosis.ranking[0].score, "the caller's noise scored higher");
        assert_eq!(diagnosis.victims, BTreeSet::from([name("mid")]));
    }

    #[test]
    fn without_observations_or_a_credible_root_the_built_in_rules_decide() {
        let signals = [rule("front", "Errors", 652), rule("back", "Errors", 653)];
        check(&signals, None, ("Errors", Some("back"), &["front"], &[]));
        // Nothing moved: no credible root, the built-in root stays; the ranking lists who signalled.
        let quiet = Observations {
            now: at(699),
            services: vec![facts("front"), facts("back")],
            series: vec![series("front", "mend_proxy_error_ratio", None, 0.0, 0.0)],
            edges: Vec::new(),
        };
        let diagnosis = check(
            &signals,
            Some(&quiet),
            ("Errors", Some("back"), &["front"], &[("back", "unknown"), ("front", "unknown")]),
        );
        assert_eq!(diagnosis.confidence, None);
    }

    #[test]
    fn a_bad_release_verdict_is_not_replaced_by_what_the_decision_sees_of_its_replicas() {
        let mut verdict = rule("back", "bad_release", 650);
        verdict.kind = SignalKind::Diagnosis;
        verdict.evidence = "error ratio 26% against 0%".to_owned();
        let mut replica = rule("back", "bad_replica", 652);
        replica.kind = SignalKind::Diagnosis;
        // The canary's replica was ejected for its 500s while the stable ones answered: the decision
        // procedure, which knows no releases, calls that a bad replica.
        let ejection = mend_diagnose::EjectionFacts {
            status: Some(500),
            in_a_row: 3,
            siblings: vec![mend_diagnose::SiblingAnswers { replica: 0, attempts: 300, errors: 0 }],
            window: Duration::from_secs(30),
        };
        let mut back = ServiceFacts::new(Component::new("back"), 3);
        back.lifecycle = vec![LifecycleFact { at: at(651), replica: 2, what: Lifecycle::Ejected(ejection) }];
        let observations = Observations { now: at(699), services: vec![back], series: Vec::new(), edges: Vec::new() };
        let decided = RankingDiagnoser::live().diagnose(&[replica.clone()], &chain(), Some(&observations));
        assert_eq!(decided.name, "bad_replica", "without a verdict the ejection names it");
        let diagnosis = RankingDiagnoser::live().diagnose(&[verdict, replica], &chain(), Some(&observations));
        assert_eq!(
            (diagnosis.name.as_str(), diagnosis.root.as_ref().map(ServiceName::as_str)),
            ("bad_release", Some("back"))
        );
        assert_eq!(diagnosis.evidence, "error ratio 26% against 0%");
        assert!(diagnosis.facts.iter().any(|fact| fact.contains("replica 2 answered 500")), "{:?}", diagnosis.facts);
    }

    #[test]
    fn the_request_reaches_the_dependencies_and_the_baseline() {
        let request = RankingDiagnoser::live()
            .request(IncidentId(4), &[rule("front", "Errors", 1000)], &BTreeSet::from([name("front")]), &chain())
            .expect("the ranking observes");
        assert_eq!(request.services, BTreeSet::from([name("front"), name("mid"), name("back")]));
        assert_eq!(request.from, at(1000 - 15 - 600));
        assert_eq!(BuiltinDiagnoser.request(IncidentId(4), &[], &BTreeSet::new(), &chain()), None);
    }
}
