//! The seam the incident engine calls: an incident's facts in, its ranked candidates and the
//! diagnosis of each service out.

use crate::decide::{DecideInput, DecideParams, Diagnosis, DiagnosisKind, ServiceFacts, decide};
use crate::rank::{Propagation, RankInput, RankParams, Ranking, rank};
use crate::{Component, DependencyGraph, EdgeSource, Evidence, SeriesInput};
use mend_types::Timestamp;

/// Everything known about one incident when it is diagnosed.
#[derive(Clone, Copy, Debug)]
pub struct IncidentInput<'a> {
    /// When the incident began: the earliest `since` of its signals.
    pub onset: Timestamp,
    /// Now: the latest point to read.
    pub now: Timestamp,
    /// The services involved (those with signals, lifecycle facts or limits near), with their facts.
    pub services: &'a [ServiceFacts],
    /// The series of every service that may be involved, reaching back `rank.baseline` before the onset.
    pub series: &'a [SeriesInput],
    /// Who calls whom (declared `depends_on`, the proxy's observed callers); may be empty.
    pub graph: &'a DependencyGraph,
    /// The ranking's knobs.
    pub rank: RankParams,
    /// The decision procedure's thresholds.
    pub decide: DecideParams,
}

/// An incident's diagnosis.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentDiagnosis {
    /// The likely root causes, most likely first: services whose own processes or resources failed
    /// (crashes, exhaustion, hangs, earliest first), then the series ranking's order.
    pub candidates: Vec<Component>,
    /// The series ranking, with its scores and explanations.
    pub ranking: Ranking,
    /// The diagnosis of every service in [`IncidentInput::services`], the root's first.
    pub diagnoses: Vec<Diagnosis>,
}

impl IncidentDiagnosis {
    /// The diagnosis of the most likely root cause.
    pub fn root(&self) -> Option<&Diagnosis> {
        let top = self.candidates.first()?;
        self.diagnoses.iter().find(|d| &d.component == top)
    }
}

/// Diagnoses an incident: ranks the services from their series, then names what is wrong with each.
///
/// Cost: sorting each series' baseline once, `O(S · P log P)` for `S` series of `P` points, plus
/// `O(C² · E)` for the explanations among `C` anomalous components over `E` edges.
pub fn diagnose(input: &IncidentInput<'_>) -> IncidentDiagnosis {
    let ranking = rank(&RankInput {
        onset: input.onset,
        now: input.now,
        series: input.series,
        graph: input.graph,
        params: input.rank,
    });
    let mut diagnoses: Vec<Diagnosis> = input
        .services
        .iter()
        .map(|service| {
            decide(&DecideInput {
                service,
                onset: Some(input.onset),
                ranking: Some(&ranking),
                rank_params: input.rank,
                params: input.decide,
            })
        })
        .collect();
    // Own faults first, by the time of their first fact; then the ranking's order.
    let first_fact = |component: &Component| {
        input
            .services
            .iter()
            .find(|s| &s.component == component)
            .and_then(|s| s.lifecycle.first().map(|f| f.at))
            .unwrap_or(input.now)
    };
    // A service whose own probes fail is the root of its trouble unless one of its dependencies explains
    // it: a caller's traffic falling (the ranking's `FromCaller`) makes no probe fail, and onsets a second
    // apart on one-second samples cannot order the two (a caller's noise once outranked the callee).
    let explained_by_dependency = |component: &Component| {
        ranking
            .candidate(component)
            .and_then(|candidate| candidate.explained_by.as_ref())
            .is_some_and(|explanation| explanation.propagation == Propagation::FromDependency)
    };
    let mut own: Vec<&Diagnosis> = diagnoses
        .iter()
        .filter(|d| {
            d.kind.is_own_fault() || (d.kind == DiagnosisKind::Unhealthy && !explained_by_dependency(&d.component))
        })
        .collect();
    own.sort_by_key(|d| (first_fact(&d.component), d.component.clone()));
    let mut candidates: Vec<Component> = own.iter().map(|d| d.component.clone()).collect();
    for candidate in &ranking.candidates {
        if !candidates.contains(&candidate.component) {
            candidates.push(candidate.component.clone());
        }
    }
    for diagnosis in &diagnoses {
        if !candidates.contains(&diagnosis.component) && diagnosis.kind != DiagnosisKind::DependencyFailure {
            candidates.push(diagnosis.component.clone());
        }
    }
    // A victim's diagnosis shows what its calls along the path did (the proxy's edge figures).
    for diagnosis in diagnoses.iter_mut().filter(|d| d.kind == DiagnosisKind::DependencyFailure) {
        let Some(explanation) = ranking.candidate(&diagnosis.component).and_then(|c| c.explained_by.as_ref()) else {
            continue;
        };
        let hops = std::iter::once(&diagnosis.component).chain(&explanation.path);
        for (caller, callee) in hops.clone().zip(hops.skip(1)) {
            if let Some(EdgeSource::Observed { error_ratio, p99_seconds }) = input.graph.edge(caller, callee)
                && (error_ratio.is_some() || p99_seconds.is_some())
            {
                diagnosis.evidence.push(Evidence::Calls {
                    caller: caller.clone(),
                    callee: callee.clone(),
                    error_ratio,
                    p99_seconds,
                });
            }
        }
    }
    let position = |component: &Component| candidates.iter().position(|c| c == component).unwrap_or(usize::MAX);
    diagnoses.sort_by_key(|d| position(&d.component));
    IncidentDiagnosis { candidates, ranking, diagnoses }
}
