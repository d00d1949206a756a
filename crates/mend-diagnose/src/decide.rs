//! The diagnostic decision procedure: from one service's facts (lifecycle, resources, signals) and the
//! incident's ranking to a named diagnosis with a confidence and its evidence.
//!
//! The rules run in a fixed order and the first that holds names the diagnosis (the order puts a
//! service's own hard facts before what its metrics suggest):
//!
//! | order | diagnosis | holds when | confidence |
//! |---|---|---|---|
//! | 1 | `memory_exhaustion` | mend replaced a replica over its memory limit; an outside SIGKILL while memory was at 90 % of the limit (the OOM killer); memory at 90 % of its limit; or its trend reaches the limit within the horizon | 0.95 / 0.9 / 0.8 / 0.7 |
//! | 2 | `fd_exhaustion` | open file descriptors at 90 % of the limit, or forecast to reach it | 0.8 / 0.7 |
//! | 3 | `disk_exhaustion` | disk use at 90 % of the file system, or forecast to fill it | 0.8 / 0.7 |
//! | 4 | `crash_loop` | mend gave up on a replica, or a replica ended 3 times within 5 minutes | 0.95 / 0.9 |
//! | 5 | `crashed` | a replica ended by itself or by an outside signal (not a planned stop of mend's) | 0.95 fault signal, 0.9 exit code, 0.7 outside signal |
//! | 6 | `dependency_failure` | the ranking explains this service's anomaly by an anomalous dependency whose onset is not later | 0.85 if the dependency started first, 0.7 if simultaneous |
//! | 7 | `hung` | mend replaced a replica as hung, or a probe timed out while the process was stopped or idle | 0.95 stopped / 0.9 / 0.75 |
//! | 8 | `overload` | mend replaced a replica as busy, a probe timed out while the process was busy, or CPU and latency (or traffic) rose together | 0.85 / 0.75 / 0.6 |
//! | 9 | `bad_replica` | the proxy ejected one replica of several for 5xx answers while its siblings answered without errors; ejected one of several otherwise (siblings not failing too); or one instance's latency or errors moved while its siblings' did not | 0.9 / 0.8 / 0.7 |
//! | 10 | *(`bad_release`)* | *reserved: once releases exist, an anomaly that began within minutes after this service's release changed, on the new release's replicas only* | |
//! | 11 | `unhealthy` | mend replaced a replica for its liveness or startup probe, a replica is not ready, or probes failed at least twice | 0.8 / 0.6 / 0.6 |
//! | 12 | `unknown` | anything else: the evidence lists what moved | 0.3 with an anomaly, 0.1 without |
//!
//! Near-misses are part of the tests (`tests/decide.rs`): one exit is `crashed`, not a loop; three
//! exits over an hour are not a loop; memory at 60 % is no exhaustion; a planned stop is no crash; a
//! probe timeout while the process burns CPU is overload, not a hang; all replicas equally slow is no
//! bad replica; a dependency that became anomalous after this service did explains nothing.

use std::fmt;
use std::time::Duration;

use mend_types::{
    ExitCause, LastExit, ProbeOutcome, Signal, SignalState, StopReason, Timestamp, Unit, is_fault_signal,
};

use crate::evidence::{Evidence, Resource, Shift};
use crate::rank::{Propagation, RankParams, Ranking};
use crate::{Component, EjectionFacts, MetricClass};

/// What diagnosis names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DiagnosisKind {
    /// A replica's process ended unexpectedly.
    Crashed,
    /// A replica keeps ending: restarting it does not help.
    CrashLoop,
    /// A replica is alive but does not answer and does no work.
    Hung,
    /// Memory reached, or is about to reach, its limit.
    MemoryExhaustion,
    /// Open file descriptors reached, or are about to reach, their limit.
    FdExhaustion,
    /// The disk is, or is about to be, full.
    DiskExhaustion,
    /// Probes fail without a more specific cause.
    Unhealthy,
    /// One replica misbehaves while its siblings do not.
    BadReplica,
    /// More work than the service can do: busy, slow, CPU high.
    Overload,
    /// The service suffers because something it calls misbehaved first.
    DependencyFailure,
    /// Something is wrong, and no rule says what.
    Unknown,
}

impl DiagnosisKind {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crashed => "crashed",
            Self::CrashLoop => "crash_loop",
            Self::Hung => "hung",
            Self::MemoryExhaustion => "memory_exhaustion",
            Self::FdExhaustion => "fd_exhaustion",
            Self::DiskExhaustion => "disk_exhaustion",
            Self::Unhealthy => "unhealthy",
            Self::BadReplica => "bad_replica",
            Self::Overload => "overload",
            Self::DependencyFailure => "dependency_failure",
            Self::Unknown => "unknown",
        }
    }

    /// Whether the diagnosis rests on the service's own hard facts (its processes or resources) rather
    /// than on what its metrics suggest.
    pub fn is_own_fault(self) -> bool {
        matches!(
            self,
            Self::Crashed
                | Self::CrashLoop
                | Self::Hung
                | Self::MemoryExhaustion
                | Self::FdExhaustion
                | Self::DiskExhaustion
        )
    }
}

impl fmt::Display for DiagnosisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A confidence in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Confidence(f64);

impl Confidence {
    /// Clamps `value` into `[0, 1]` (NaN becomes 0).
    pub fn new(value: f64) -> Self {
        if value.is_nan() { Self(0.0) } else { Self(value.clamp(0.0, 1.0)) }
    }

    /// The number.
    pub fn value(self) -> f64 {
        self.0
    }
}

/// A named diagnosis of one service.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnosis {
    /// The service.
    pub component: Component,
    /// What is wrong.
    pub kind: DiagnosisKind,
    /// How sure the rule is.
    pub confidence: Confidence,
    /// For `dependency_failure`: the service it follows.
    pub cause: Option<Component>,
    /// The facts that decided it, the deciding one first.
    pub evidence: Vec<Evidence>,
}

impl Diagnosis {
    /// The evidence in words, one fact per line.
    pub fn explain(&self) -> Vec<String> {
        self.evidence.iter().map(ToString::to_string).collect()
    }
}

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Liveness.
    Liveness,
    /// Readiness.
    Readiness,
    /// Startup.
    Startup,
}

/// Something that happened to a replica, as the supervisor and the proxy report it.
#[derive(Clone, Debug, PartialEq)]
pub enum Lifecycle {
    /// The process ended, and who ended it.
    Exited(LastExit),
    /// mend decided to replace the live process (the `unhealthy` event), and why.
    Replaced(StopReason),
    /// mend gave up restarting it.
    GaveUp,
    /// A probe failed or timed out.
    ProbeFailed {
        /// Which probe.
        probe: ProbeKind,
        /// What it found.
        outcome: ProbeOutcome,
    },
    /// It stopped being ready.
    Unready,
    /// It is ready again.
    Ready,
    /// The proxy took it out of rotation, and why.
    Ejected(EjectionFacts),
}

/// One lifecycle fact of one replica.
#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleFact {
    /// When.
    pub at: Timestamp,
    /// Which replica.
    pub replica: u32,
    /// What.
    pub what: Lifecycle,
}

/// How much of a resource is used, against its limit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResourceUse {
    /// The replica, when per replica.
    pub replica: Option<u32>,
    /// Which resource.
    pub resource: Resource,
    /// Used now.
    pub used: f64,
    /// The limit.
    pub limit: f64,
    /// Seconds until the trend reaches the limit, when a forecast says so.
    pub seconds_to_limit: Option<f64>,
}

/// What the decision procedure knows about one service during an incident.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceFacts {
    /// The service.
    pub component: Component,
    /// How many replicas it is meant to run.
    pub replicas: u32,
    /// Lifecycle facts within the incident's window, in time order.
    pub lifecycle: Vec<LifecycleFact>,
    /// Resource use against limits, latest first or in any order.
    pub resources: Vec<ResourceUse>,
    /// The incident's signals that concern this service.
    pub signals: Vec<Signal>,
}

impl ServiceFacts {
    /// A service with no facts yet.
    pub fn new(component: Component, replicas: u32) -> Self {
        Self { component, replicas, lifecycle: Vec::new(), resources: Vec::new(), signals: Vec::new() }
    }
}

/// The thresholds of the decision procedure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecideParams {
    /// This many exits of one replica within `crash_loop_window` is a crash loop.
    pub crash_loop_exits: usize,
    /// See `crash_loop_exits`.
    pub crash_loop_window: Duration,
    /// Use at or above this share of the limit is exhaustion.
    pub exhaustion_share: f64,
    /// A forecast reaching the limit within this is exhaustion.
    pub exhaustion_horizon: Duration,
    /// Failed probes (not timeouts) that make a service unhealthy without another cause.
    pub unhealthy_failures: usize,
}

impl Default for DecideParams {
    fn default() -> Self {
        Self {
            crash_loop_exits: 3,
            crash_loop_window: Duration::from_secs(300),
            exhaustion_share: 0.9,
            exhaustion_horizon: Duration::from_secs(600),
            unhealthy_failures: 2,
        }
    }
}

/// Everything [`decide`] reads.
#[derive(Clone, Copy, Debug)]
pub struct DecideInput<'a> {
    /// The service.
    pub service: &'a ServiceFacts,
    /// When the incident began (the earliest `since` of its signals), when known: for a service with
    /// signals of its own in the incident, a one-off fact (an exit, a replacement) longer than
    /// [`BEFORE_ONSET`] before it ended an earlier incident and is not this one's (exits still count
    /// towards a crash loop).
    pub onset: Option<Timestamp>,
    /// The incident's ranking (findings per series, explanations), when series are known.
    pub ranking: Option<&'a Ranking>,
    /// The ranking's knobs (what counts as anomalous).
    pub rank_params: RankParams,
    /// The thresholds.
    pub params: DecideParams,
}

fn diagnosis(
    component: &Component,
    kind: DiagnosisKind,
    confidence: f64,
    cause: Option<Component>,
    evidence: Vec<Evidence>,
) -> Diagnosis {
    Diagnosis { component: component.clone(), kind, confidence: Confidence::new(confidence), cause, evidence }
}

/// Names what is wrong with one service.
pub fn decide(input: &DecideInput<'_>) -> Diagnosis {
    let rules: [fn(&DecideInput<'_>) -> Option<Diagnosis>; 10] = [
        memory_exhaustion,
        |input| resource_exhaustion(input, Resource::FileDescriptors, DiagnosisKind::FdExhaustion),
        |input| resource_exhaustion(input, Resource::Disk, DiagnosisKind::DiskExhaustion),
        crash_loop,
        crashed,
        dependency_failure,
        hung,
        overload,
        bad_replica,
        // bad_release goes here, once releases exist: an anomaly that began within minutes after the
        // service's release changed, seen on the new release's replicas only.
        unhealthy,
    ];
    let mut found =
        rules.iter().find_map(|rule| rule(input)).unwrap_or_else(|| unknown(input, &input.service.component));
    found.evidence.extend(logged(input));
    found
}

/// Log signals raised on the service, at most this many in a diagnosis' evidence.
const MAX_LOG_EVIDENCE: usize = 3;

/// The service's firing log signals (oldest first), each placed in time against the service's first
/// anomalous move: "orders started logging `connection refused <*>` (error) since 12:00:02, 3 s before its
/// error ratio rose from 0 to 0.4".
fn logged(input: &DecideInput<'_>) -> Vec<Evidence> {
    let component = &input.service.component;
    let first_move = input.ranking.and_then(|ranking| {
        ranking
            .findings
            .iter()
            .filter(|f| &f.component == component && f.z.abs() >= input.rank_params.anomalous_z)
            .map(Shift::from)
            .min_by_key(|shift| shift.at)
    });
    let mut logs: Vec<&mend_types::Signal> =
        input.service.signals.iter().filter(|s| s.state == SignalState::Firing && s.is_log()).collect();
    logs.sort_by_key(|s| s.since);
    let mut seen = std::collections::BTreeSet::new();
    logs.into_iter()
        .filter(|s| seen.insert(s.fingerprint()))
        .take(MAX_LOG_EVIDENCE)
        .map(|s| Evidence::Logged { text: s.evidence.clone(), since: s.since, first_move: first_move.clone() })
        .collect()
}

/// Exits not caused by mend's own planned stops, with their replica.
fn unplanned_exits(service: &ServiceFacts) -> impl Iterator<Item = (&LifecycleFact, LastExit)> {
    service.lifecycle.iter().filter_map(|fact| match fact.what {
        Lifecycle::Exited(exit) => match exit.cause {
            ExitCause::Program | ExitCause::ExternalSignal => Some((fact, exit)),
            ExitCause::Mend(_) => None,
        },
        _ => None,
    })
}

fn memory_exhaustion(input: &DecideInput<'_>) -> Option<Diagnosis> {
    let service = input.service;
    let component = &service.component;
    let share = input.params.exhaustion_share;
    if let Some(fact) = service
        .lifecycle
        .iter()
        .find(|fact| matches!(fact.what, Lifecycle::Replaced(StopReason::Memory)) && current(input, fact.at))
    {
        let mut evidence = vec![Evidence::Replaced { replica: fact.replica, at: fact.at, reason: StopReason::Memory }];
        evidence.extend(near_limits(service, Resource::Memory, 0.0));
        return Some(diagnosis(component, DiagnosisKind::MemoryExhaustion, 0.95, None, evidence));
    }
    let memory_high = |replica: u32| {
        service.resources.iter().any(|r| {
            r.resource == Resource::Memory && r.replica.is_none_or(|x| x == replica) && r.used >= share * r.limit
        })
    };
    if let Some((fact, exit)) = unplanned_exits(service).find(|(fact, exit)| {
        exit.cause == ExitCause::ExternalSignal
            && exit.exit.signal == Some(9)
            && memory_high(fact.replica)
            && current(input, fact.at)
    }) {
        let mut evidence = vec![Evidence::Exited { replica: fact.replica, at: fact.at, exit }];
        evidence.extend(near_limits(service, Resource::Memory, share));
        return Some(diagnosis(component, DiagnosisKind::MemoryExhaustion, 0.9, None, evidence));
    }
    resource_exhaustion(input, Resource::Memory, DiagnosisKind::MemoryExhaustion).or_else(|| {
        let signal =
            service.signals.iter().find(|s| s.state == SignalState::Firing && s.name == "memory_exhaustion")?;
        let evidence = vec![Evidence::Signal { name: signal.name.clone(), text: signal.evidence.clone() }];
        Some(diagnosis(component, DiagnosisKind::MemoryExhaustion, 0.7, None, evidence))
    })
}

fn near_limits(service: &ServiceFacts, resource: Resource, share: f64) -> Vec<Evidence> {
    service
        .resources
        .iter()
        .filter(|r| r.resource == resource && r.limit > 0.0 && r.used >= share * r.limit)
        .map(|r| Evidence::NearLimit { replica: r.replica, resource, used: r.used, limit: r.limit })
        .collect()
}

fn resource_exhaustion(input: &DecideInput<'_>, resource: Resource, kind: DiagnosisKind) -> Option<Diagnosis> {
    let service = input.service;
    let near = near_limits(service, resource, input.params.exhaustion_share);
    if !near.is_empty() {
        return Some(diagnosis(&service.component, kind, 0.8, None, near));
    }
    let horizon = input.params.exhaustion_horizon.as_secs_f64();
    let forecasts: Vec<Evidence> = service
        .resources
        .iter()
        .filter(|r| r.resource == resource && r.seconds_to_limit.is_some_and(|s| s <= horizon))
        .map(|r| Evidence::Forecast {
            replica: r.replica,
            resource,
            used: r.used,
            limit: r.limit,
            seconds: r.seconds_to_limit.unwrap_or(f64::INFINITY),
        })
        .collect();
    (!forecasts.is_empty()).then(|| diagnosis(&service.component, kind, 0.7, None, forecasts))
}

fn crash_loop(input: &DecideInput<'_>) -> Option<Diagnosis> {
    let service = input.service;
    let component = &service.component;
    if let Some(fact) = service.lifecycle.iter().find(|fact| fact.what == Lifecycle::GaveUp) {
        let mut evidence = vec![Evidence::GaveUp { replica: fact.replica, at: fact.at }];
        evidence.extend(exit_summary(service, fact.replica));
        return Some(diagnosis(component, DiagnosisKind::CrashLoop, 0.95, None, evidence));
    }
    let window = i64::try_from(input.params.crash_loop_window.as_millis()).unwrap_or(i64::MAX);
    let needed = input.params.crash_loop_exits.max(2);
    let mut replicas: Vec<u32> = unplanned_exits(service).map(|(fact, _)| fact.replica).collect();
    replicas.dedup();
    for replica in replicas {
        let times: Vec<Timestamp> =
            unplanned_exits(service).filter(|(fact, _)| fact.replica == replica).map(|(fact, _)| fact.at).collect();
        let looping = times.windows(needed).any(|w| w[needed - 1].as_millis() - w[0].as_millis() <= window);
        if looping {
            let evidence = exit_summary(service, replica).into_iter().collect();
            return Some(diagnosis(component, DiagnosisKind::CrashLoop, 0.9, None, evidence));
        }
    }
    None
}

fn exit_summary(service: &ServiceFacts, replica: u32) -> Option<Evidence> {
    let exits: Vec<(&LifecycleFact, LastExit)> =
        unplanned_exits(service).filter(|(fact, _)| fact.replica == replica).collect();
    let (first, _) = exits.first()?;
    let (last_fact, last) = exits.last()?;
    let span = Duration::from_millis(u64::try_from(last_fact.at.as_millis() - first.at.as_millis()).unwrap_or(0));
    Some(Evidence::Exits { replica, count: exits.len(), within: span, last: *last })
}

/// How long before an incident's onset a one-off fact may be and still be its own: a crash signal's
/// `since` is the exit's time, give or take the ordering of events.
pub const BEFORE_ONSET: Duration = Duration::from_secs(2);

/// Whether the one-off fact at `at` (an exit, a replacement) is this incident's. A service with signals of
/// its own in the incident reads facts from about its onset on: one earlier ended an earlier incident (a
/// replica killed and back 7 s before another one hung). A service drawn in without signals (a dependency
/// whose own incident closed) reads every recent fact: its crash may be the cause.
fn current(input: &DecideInput<'_>, at: Timestamp) -> bool {
    match input.onset {
        Some(onset) if !input.service.signals.is_empty() => at >= onset.saturating_sub(BEFORE_ONSET),
        _ => true,
    }
}

fn crashed(input: &DecideInput<'_>) -> Option<Diagnosis> {
    let service = input.service;
    let (fact, exit) = unplanned_exits(service).filter(|(fact, _)| current(input, fact.at)).last()?;
    let confidence = match (exit.cause, exit.exit.signal) {
        (ExitCause::Program, Some(signal)) if is_fault_signal(signal) => 0.95,
        (ExitCause::Program, _) => 0.9,
        _ => 0.7,
    };
    let evidence = vec![Evidence::Exited { replica: fact.replica, at: fact.at, exit }];
    Some(diagnosis(&service.component, DiagnosisKind::Crashed, confidence, None, evidence))
}

fn dependency_failure(input: &DecideInput<'_>) -> Option<Diagnosis> {
    let ranking = input.ranking?;
    let component = &input.service.component;
    let candidate = ranking.candidate(component)?;
    let explanation = candidate.explained_by.as_ref()?;
    if explanation.propagation != Propagation::FromDependency {
        return None;
    }
    let cause = ranking.candidate(&explanation.by)?;
    let (victim_onset, cause_onset) = (candidate.onset?, cause.onset?);
    let confidence = if cause_onset < victim_onset { 0.85 } else { 0.7 };
    let evidence = vec![Evidence::FollowsDependency {
        victim: Shift::from(&candidate.finding),
        cause: Shift::from(&cause.finding),
        path: explanation.path.clone(),
        propagation: explanation.propagation,
    }];
    Some(diagnosis(component, DiagnosisKind::DependencyFailure, confidence, Some(explanation.by.clone()), evidence))
}

/// The service's probe timeouts that are this incident's ([`current`]).
fn timeouts<'a>(
    input: &DecideInput<'a>,
) -> impl Iterator<Item = (&'a LifecycleFact, Option<mend_types::ProcessEvidence>)> + use<'a> {
    let input = *input;
    input.service.lifecycle.iter().filter_map(move |fact| match &fact.what {
        Lifecycle::ProbeFailed { outcome: ProbeOutcome::Timeout { evidence }, .. } if current(&input, fact.at) => {
            Some((fact, *evidence))
        }
        _ => None,
    })
}

fn hung(input: &DecideInput<'_>) -> Option<Diagnosis> {
    let service = input.service;
    let component = &service.component;
    let stopped = timeouts(input).find(|(_, process)| process.is_some_and(|p| p.is_stopped()));
    if let Some((fact, process)) = stopped {
        let evidence = vec![Evidence::ProbeTimeout { replica: fact.replica, at: fact.at, process }];
        return Some(diagnosis(component, DiagnosisKind::Hung, 0.95, None, evidence));
    }
    if let Some(fact) = service
        .lifecycle
        .iter()
        .find(|fact| fact.what == Lifecycle::Replaced(StopReason::Hung) && current(input, fact.at))
    {
        let mut evidence = vec![Evidence::Replaced { replica: fact.replica, at: fact.at, reason: StopReason::Hung }];
        evidence.extend(
            timeouts(input)
                .filter(|(t, _)| t.replica == fact.replica)
                .last()
                .map(|(t, process)| Evidence::ProbeTimeout { replica: t.replica, at: t.at, process }),
        );
        return Some(diagnosis(component, DiagnosisKind::Hung, 0.9, None, evidence));
    }
    let (fact, process) = timeouts(input).find(|(_, process)| process.is_some_and(|p| !p.is_busy()))?;
    let evidence = vec![Evidence::ProbeTimeout { replica: fact.replica, at: fact.at, process }];
    Some(diagnosis(component, DiagnosisKind::Hung, 0.75, None, evidence))
}

/// The least CPU, in percent of a core, that `overload` reads as busy from the series alone.
const MIN_BUSY_CPU_PERCENT: f64 = 25.0;

fn overload(input: &DecideInput<'_>) -> Option<Diagnosis> {
    let service = input.service;
    let component = &service.component;
    if let Some(fact) = service
        .lifecycle
        .iter()
        .find(|fact| fact.what == Lifecycle::Replaced(StopReason::Busy) && current(input, fact.at))
    {
        let evidence = vec![Evidence::Replaced { replica: fact.replica, at: fact.at, reason: StopReason::Busy }];
        return Some(diagnosis(component, DiagnosisKind::Overload, 0.85, None, evidence));
    }
    if let Some((fact, process)) = timeouts(input).find(|(_, process)| process.is_some_and(|p| p.is_busy())) {
        let evidence = vec![Evidence::ProbeTimeout { replica: fact.replica, at: fact.at, process }];
        return Some(diagnosis(component, DiagnosisKind::Overload, 0.75, None, evidence));
    }
    let ranking = input.ranking?;
    let threshold = input.rank_params.anomalous_z;
    let rose = |class: MetricClass| {
        ranking.findings.iter().find(|f| &f.component == component && f.class == class && f.z >= threshold)
    };
    // A busy process, not a blip on an idle one (2 % → 3 % of a core moves a quiet baseline by many
    // deviations): its CPU at least doubled, and a percentage at least a quarter of a core.
    let cpu = rose(MetricClass::Cpu).filter(|cpu| {
        cpu.level >= 2.0 * cpu.baseline.median && (cpu.unit != Unit::Percent || cpu.level >= MIN_BUSY_CPU_PERCENT)
    })?;
    let strain = rose(MetricClass::Latency).or_else(|| rose(MetricClass::Traffic))?;
    let evidence = vec![Evidence::Shift(Shift::from(cpu)), Evidence::Shift(Shift::from(strain))];
    Some(diagnosis(component, DiagnosisKind::Overload, 0.6, None, evidence))
}

fn bad_replica(input: &DecideInput<'_>) -> Option<Diagnosis> {
    let service = input.service;
    let component = &service.component;
    if service.replicas < 2 {
        return None;
    }
    let ejections: Vec<(&LifecycleFact, &EjectionFacts)> = service
        .lifecycle
        .iter()
        .filter_map(|fact| match &fact.what {
            Lifecycle::Ejected(ejection) if current(input, fact.at) => Some((fact, ejection)),
            _ => None,
        })
        .collect();
    // The latest ejection of a replica whose siblings are not failing too, and no other replica ejected.
    if let Some((fact, ejection)) = ejections.iter().rev().find(|(_, ejection)| !ejection.siblings_failing()) {
        let others_ejected = ejections.iter().any(|(other, _)| other.replica != fact.replica);
        if !others_ejected {
            // Ejected for 5xx answers while its siblings answered without errors: the proxy saw it.
            let confidence = if ejection.is_bad_replica() { 0.9 } else { 0.8 };
            let evidence =
                vec![Evidence::Ejected { replica: fact.replica, at: fact.at, ejection: (*ejection).clone() }];
            return Some(diagnosis(component, DiagnosisKind::BadReplica, confidence, None, evidence));
        }
    }
    let ranking = input.ranking?;
    let threshold = input.rank_params.anomalous_z;
    for outlier in ranking.findings.iter().filter(|f| {
        &f.component == component
            && f.instance.is_some()
            && matches!(f.class, MetricClass::Latency | MetricClass::Errors)
            && f.z.abs() >= threshold
    }) {
        let siblings: Vec<_> = ranking
            .findings
            .iter()
            .filter(|f| &f.component == component && f.metric == outlier.metric && f.instance != outlier.instance)
            .collect();
        // Siblings must be seen, and all of them well within their baseline (under half the threshold).
        if !siblings.is_empty() && siblings.iter().all(|f| f.z.abs() < threshold / 2.0) {
            let evidence = vec![Evidence::Outlier { shift: Shift::from(outlier), siblings_normal: siblings.len() }];
            return Some(diagnosis(component, DiagnosisKind::BadReplica, 0.7, None, evidence));
        }
    }
    None
}

fn unhealthy(input: &DecideInput<'_>) -> Option<Diagnosis> {
    let service = input.service;
    let component = &service.component;
    if let Some(fact) = service.lifecycle.iter().find(|fact| {
        matches!(fact.what, Lifecycle::Replaced(StopReason::Liveness) | Lifecycle::Replaced(StopReason::Startup))
            && current(input, fact.at)
    }) {
        let Lifecycle::Replaced(reason) = fact.what else { return None };
        let evidence = vec![Evidence::Replaced { replica: fact.replica, at: fact.at, reason }];
        return Some(diagnosis(component, DiagnosisKind::Unhealthy, 0.8, None, evidence));
    }
    // Unready now: the last readiness change of some replica is `Unready`.
    let mut last_readiness: std::collections::BTreeMap<u32, &LifecycleFact> = std::collections::BTreeMap::new();
    for fact in &service.lifecycle {
        if matches!(fact.what, Lifecycle::Unready | Lifecycle::Ready) {
            last_readiness.insert(fact.replica, fact);
        }
    }
    if let Some(fact) = last_readiness.values().find(|fact| fact.what == Lifecycle::Unready) {
        let mut evidence = vec![Evidence::Unready { replica: fact.replica, at: fact.at }];
        evidence.extend(probe_failures(input, fact.replica));
        return Some(diagnosis(component, DiagnosisKind::Unhealthy, 0.6, None, evidence));
    }
    let mut replicas: Vec<u32> = service.lifecycle.iter().map(|fact| fact.replica).collect();
    replicas.sort_unstable();
    replicas.dedup();
    for replica in replicas {
        if let Some(Evidence::ProbeFailures { count, .. }) = probe_failures(input, replica)
            && count >= input.params.unhealthy_failures
        {
            let evidence = probe_failures(input, replica).into_iter().collect();
            return Some(diagnosis(component, DiagnosisKind::Unhealthy, 0.6, None, evidence));
        }
    }
    None
}

/// A replica's failed probes (not timeouts) that are this incident's ([`current`]).
fn probe_failures(input: &DecideInput<'_>, replica: u32) -> Option<Evidence> {
    let reasons: Vec<&str> = input
        .service
        .lifecycle
        .iter()
        .filter(|fact| fact.replica == replica && current(input, fact.at))
        .filter_map(|fact| match &fact.what {
            Lifecycle::ProbeFailed { outcome: ProbeOutcome::Failure { reason }, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    let last = reasons.last()?;
    Some(Evidence::ProbeFailures { replica, count: reasons.len(), last_reason: (*last).to_owned() })
}

fn unknown(input: &DecideInput<'_>, component: &Component) -> Diagnosis {
    let moved: Vec<Evidence> = input
        .ranking
        .map(|ranking| {
            ranking
                .findings
                .iter()
                .filter(|f| &f.component == component && f.z.abs() >= input.rank_params.anomalous_z)
                .take(3)
                .map(|f| Evidence::Shift(Shift::from(f)))
                .collect()
        })
        .unwrap_or_default();
    let mut evidence = moved;
    let anomalous = !evidence.is_empty();
    evidence.extend(
        input
            .service
            .signals
            .iter()
            // Log signals are added, placed in time, by `decide`.
            .filter(|s| s.state == SignalState::Firing && !s.is_log())
            .take(3)
            .map(|s| Evidence::Signal { name: s.name.clone(), text: s.evidence.clone() }),
    );
    let confidence = if anomalous || !input.service.signals.is_empty() { 0.3 } else { 0.1 };
    diagnosis(component, DiagnosisKind::Unknown, confidence, None, evidence)
}
