//! The healing vocabulary: incidents, actions, who asked for them and how they ended.
//!
//! These are data, shared by the decision core (`mend-incident`, `mend-act`), the journal (`mend-store`),
//! the API and the CLI. Their serde forms are stable: they are stored and served.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ReleaseName, ReplicaId, ServiceName, Timestamp};

/// A built-in diagnosis: a condition mend recognises from its own lifecycle events and proxy figures, usable
/// in a `[[heal]]` policy's `when` without writing a rule.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinDiagnosis {
    /// A replica's process ended by itself (a crash, or an exit the restart policy restarts).
    Crashed,
    /// A replica keeps crashing: mend gave up on it (restart intensity), or it crashed 3 times within
    /// the incident window.
    CrashLoop,
    /// A replica was replaced because it hung (stopped, or unresponsive without using CPU).
    Hung,
    /// A replica's memory is forecast to reach its limit, or was replaced above it.
    MemoryExhaustion,
    /// A replica's probes fail while its process runs (out of the ready set).
    Unhealthy,
    /// Errors concentrated on one replica, from the proxy's per-replica figures.
    BadReplica,
    /// Errors or load high on every replica of a service, from the proxy's figures; or, from the live
    /// diagnosis, CPU and latency (or traffic) rising together.
    Overload,
    /// Open file descriptors at or about to reach their limit (the live diagnosis).
    FdExhaustion,
    /// The disk full or about to be (the live diagnosis).
    DiskExhaustion,
    /// A service suffers because a service it calls misbehaved first (the live diagnosis). A policy on
    /// it acts on the cause, the incident's root, never on the service that suffers.
    DependencyFailure,
    /// A release is worse than the one before it: a canary judged worse than the stable release, or
    /// errors or latency that regressed right after a promotion (raised by the rollouts).
    BadRelease,
}

impl BuiltinDiagnosis {
    /// Every built-in diagnosis.
    pub const ALL: [Self; 11] = [
        Self::Crashed,
        Self::CrashLoop,
        Self::Hung,
        Self::MemoryExhaustion,
        Self::Unhealthy,
        Self::BadReplica,
        Self::Overload,
        Self::FdExhaustion,
        Self::DiskExhaustion,
        Self::DependencyFailure,
        Self::BadRelease,
    ];

    /// The name used in `when` and as the signal's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crashed => "crashed",
            Self::CrashLoop => "crash_loop",
            Self::Hung => "hung",
            Self::MemoryExhaustion => "memory_exhaustion",
            Self::Unhealthy => "unhealthy",
            Self::BadReplica => "bad_replica",
            Self::Overload => "overload",
            Self::FdExhaustion => "fd_exhaustion",
            Self::DiskExhaustion => "disk_exhaustion",
            Self::DependencyFailure => "dependency_failure",
            Self::BadRelease => "bad_release",
        }
    }

    /// The diagnosis called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|diagnosis| diagnosis.as_str() == name)
    }
}

impl fmt::Display for BuiltinDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How mend acts on what it decides, globally or per service.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum HealMode {
    /// Act at once (within the guard's limits).
    #[default]
    Auto,
    /// Record each action as pending until an operator approves or denies it; pending actions expire.
    Approve,
    /// Decide and record what would be done; change nothing.
    DryRun,
}

impl HealMode {
    /// `auto`, `approve` or `dry-run`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Approve => "approve",
            Self::DryRun => "dry-run",
        }
    }

    /// The mode called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Auto, Self::Approve, Self::DryRun].into_iter().find(|mode| mode.as_str() == name)
    }
}

/// An incident's id: increasing, never reused (it goes on across restarts of mend).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub u64);

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An action's id: increasing, never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionId(pub u64);

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an incident is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Signals are firing; no action runs.
    Open,
    /// An action runs (or waits for approval).
    Acting,
    /// An action ran; mend waits for the triggering signals to resolve.
    Verifying,
    /// Every signal resolved.
    Resolved,
    /// mend stopped acting on it and told the notification targets: its policy is exhausted, its budget
    /// spent, an operator took over, or nothing resolved it in time.
    Escalated,
}

impl IncidentState {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acting => "acting",
            Self::Verifying => "verifying",
            Self::Resolved => "resolved",
            Self::Escalated => "escalated",
        }
    }

    /// Resolved or escalated: mend no longer acts on it.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Resolved | Self::Escalated)
    }
}

impl fmt::Display for IncidentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action does.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ActionKind {
    /// Restart one replica (drained first), or every replica one at a time without `replica`.
    Restart,
    /// Restart every replica of the service, one at a time, each ready again before the next.
    RollingRestart,
    /// Run `delta` more (or fewer) replicas, within the service's bounds.
    Scale {
        /// Replicas to add (negative: remove).
        delta: i32,
    },
    /// Take a replica out of the proxy's rotation for `for_ms`.
    Eject {
        /// How long, in milliseconds.
        for_ms: u64,
    },
    /// Stop a service's replicas (an operator's command).
    Stop,
    /// Start a service's replicas (an operator's command).
    Start,
    /// Run the `[hook.NAME]` command.
    Hook {
        /// The hook.
        name: String,
    },
    /// POST the incident to the `[notify.NAME]` webhook.
    Notify {
        /// The target.
        name: String,
    },
    /// Notify every target and stop acting on the incident.
    Escalate,
    /// Start `replicas` replicas of `release` as the service's canary (no traffic yet) and wait until
    /// they are ready (a rollout's first step).
    Deploy {
        /// The release to try.
        release: ReleaseName,
        /// Its replicas.
        replicas: u32,
    },
    /// Send `weight` percent of the service's unpinned requests to its canary (a rollout's step).
    CanaryWeight {
        /// Percent.
        weight: u8,
    },
    /// Make the canary the stable release: more of its replicas start, then the old release's drain
    /// away (never fewer ready replicas than before).
    Promote,
    /// Return the service to its last good release: a canary is taken out (weight 0, drained, stopped);
    /// without one, the last good release replaces the stable one (rolling, drained).
    Rollback,
}

impl ActionKind {
    /// The action's name as a policy writes it (`restart`, `scale +1`, `notify ops`).
    pub fn describe(&self) -> String {
        match self {
            Self::Restart => "restart".to_owned(),
            Self::RollingRestart => "rolling-restart".to_owned(),
            Self::Scale { delta } => format!("scale {delta:+}"),
            Self::Eject { for_ms } => format!("eject {}s", for_ms / 1000),
            Self::Stop => "stop".to_owned(),
            Self::Start => "start".to_owned(),
            Self::Hook { name } => format!("hook {name}"),
            Self::Notify { name } => format!("notify {name}"),
            Self::Escalate => "escalate".to_owned(),
            Self::Deploy { release, replicas } => format!("deploy {release} ({replicas} replicas)"),
            Self::CanaryWeight { weight } => format!("canary weight {weight}%"),
            Self::Promote => "promote".to_owned(),
            Self::Rollback => "rollback".to_owned(),
        }
    }

    /// The metric label of the action (a fixed list).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Restart => "restart",
            Self::RollingRestart => "rolling_restart",
            Self::Scale { .. } => "scale",
            Self::Eject { .. } => "eject",
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Hook { .. } => "hook",
            Self::Notify { .. } => "notify",
            Self::Escalate => "escalate",
            Self::Deploy { .. } => "deploy",
            Self::CanaryWeight { .. } => "canary_weight",
            Self::Promote => "promote",
            Self::Rollback => "rollback",
        }
    }

    /// Whether the action spends the healing budgets and starts a cooldown: what disrupts, every scale,
    /// and a change of the running release (a rollback or promotion replaces every replica, surge first:
    /// it takes no capacity, but a signal that keeps firing must not swap releases without limit).
    pub fn spends_budget(&self) -> bool {
        self.disrupts() || matches!(self, Self::Scale { .. } | Self::Rollback | Self::Promote)
    }

    /// Whether the action takes replicas out of service (and so counts against `max_unavailable`).
    pub fn disrupts(&self) -> bool {
        matches!(
            self,
            Self::Restart | Self::RollingRestart | Self::Eject { .. } | Self::Stop | Self::Scale { delta: ..0 }
        )
    }
}

/// Who asked for an action.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by")]
pub enum Actor {
    /// A `[[heal]]` policy (its index in the file, and its `when`), or a default policy.
    Policy {
        /// The policy's `when`.
        when: String,
        /// Step of its action list.
        step: usize,
    },
    /// An operator, through the CLI or the API.
    Operator,
    /// A service's autoscaler (`[service.NAME.autoscale]`).
    Autoscaler,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Policy { when, step } => write!(f, "policy {when:?} (step {})", step + 1),
            Self::Operator => f.write_str("operator"),
            Self::Autoscaler => f.write_str("autoscaler"),
        }
    }
}

/// Where an action is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    /// Waiting for an operator's approval (approve mode).
    Pending,
    /// Running: journalled before it started.
    Running,
    /// Done, and it did what it was asked.
    Succeeded,
    /// Done, and it failed (the outcome says why).
    Failed,
    /// Dry-run: decided and recorded, nothing was changed.
    DryRun,
    /// Refused by an operator.
    Denied,
    /// Nobody approved it in time.
    Expired,
    /// The guard refused it (the outcome says why).
    Refused,
    /// mend stopped while it ran: how it ended is not known.
    Interrupted,
}

impl ActionState {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DryRun => "dry_run",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Refused => "refused",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the action is over.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Running)
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One action as the journal records it: what, to which service or replica, by whom, why, when, and how
/// it ended.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ActionRecord {
    /// Its id.
    pub id: ActionId,
    /// The incident it belongs to (none for an operator's command outside an incident).
    pub incident: Option<IncidentId>,
    /// What it does.
    pub action: ActionKind,
    /// The service acted on.
    pub service: Option<ServiceName>,
    /// The replica acted on, if one.
    pub replica: Option<u32>,
    /// Who asked.
    pub actor: Actor,
    /// Why: the trigger and the diagnosis, or the operator's reason.
    pub reason: String,
    /// Where it is.
    pub state: ActionState,
    /// When it was decided.
    #[serde(with = "crate::time::rfc3339")]
    pub requested_at: Timestamp,
    /// When it started running.
    #[serde(with = "crate::time::rfc3339::option")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(with = "crate::time::rfc3339::option")]
    pub finished_at: Option<Timestamp>,
    /// How it ended, in one line for people.
    pub outcome: Option<String>,
    /// What a hook printed, or a webhook answered (bounded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// A signal as an incident remembers it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct IncidentSignal {
    /// The condition's fingerprint (kind, name, labels).
    pub fingerprint: String,
    /// Rule, detector, forecast, alert or diagnosis name.
    pub name: String,
    /// Where it came from.
    pub kind: crate::SignalKind,
    /// The service it names, or the one the incident attributed it to.
    pub service: Option<ServiceName>,
    /// The replica it names.
    pub replica: Option<u32>,
    /// Firing now.
    pub firing: bool,
    /// When it first fired in this incident.
    #[serde(with = "crate::time::rfc3339")]
    pub since: Timestamp,
    /// When it last changed.
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// Why, from the signal.
    pub evidence: String,
    /// The signal named no service: the incident attributed it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attributed: bool,
}

/// One entry of an incident's timeline.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// When.
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// The incident's state after it.
    pub state: IncidentState,
    /// What happened, for people: a signal, a transition and its evidence, an action.
    pub note: String,
}

/// What mend concluded about an incident: a name, the root service and the victims; with the live
/// diagnosis (`mend-diagnose`), also a confidence, the deciding facts and the ranked candidates.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, Default)]
pub struct Diagnosis {
    /// The diagnosis' name: a built-in one (`crash_loop`) or the trigger that explains the incident.
    pub name: String,
    /// The service where the cause is.
    pub root: Option<ServiceName>,
    /// Services that suffer only because of the root.
    pub victims: BTreeSet<ServiceName>,
    /// Why, for people.
    pub evidence: String,
    /// How sure the rule that named it is, 0..1 (none: the built-in rules, which do not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The facts that decided the name, the deciding one first, each a sentence a person can check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<String>,
    /// The candidate root causes, most likely first, each with its own diagnosis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranking: Vec<RankedService>,
    /// When the diagnosis was made (none: from the signals alone, as they arrived).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::rfc3339::option")]
    pub diagnosed_at: Option<Timestamp>,
}

impl Diagnosis {
    /// The entry of `service` in the ranking.
    pub fn ranked(&self, service: &ServiceName) -> Option<&RankedService> {
        self.ranking.iter().find(|ranked| ranked.service == *service)
    }
}

/// A diagnosis an incident was given, and when: its history, so that what mend concluded at a time can be
/// read back (a game day credits each fault with the diagnosis made while it ran).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DiagnosisChange {
    /// When the diagnosis was first made.
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// Its name.
    pub name: String,
    /// Its root service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<ServiceName>,
}

/// One candidate of an incident's root-cause ranking.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct RankedService {
    /// The service.
    pub service: ServiceName,
    /// Its score: how far its strongest metric moved from its own baseline, in robust deviations (0
    /// when nothing of it was scored), after explanation (a victim ranks just below its cause).
    pub score: f64,
    /// When it first became anomalous.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::time::rfc3339::option")]
    pub onset: Option<Timestamp>,
    /// What is wrong with it (`dependency_failure`, `hung`, `unknown`, ...).
    pub diagnosis: String,
    /// How sure that rule is, 0..1.
    pub confidence: f64,
    /// The service whose anomaly explains its own, when one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explained_by: Option<ServiceName>,
    /// The facts behind its diagnosis, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
}

/// An incident: signals grouped by service, time and dependency, with a lifecycle and the actions taken.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Incident {
    /// Its id.
    pub id: IncidentId,
    /// Where it is.
    pub state: IncidentState,
    /// When it opened.
    #[serde(with = "crate::time::rfc3339")]
    pub opened_at: Timestamp,
    /// When it last changed.
    #[serde(with = "crate::time::rfc3339")]
    pub updated_at: Timestamp,
    /// When it closed (resolved or escalated).
    #[serde(with = "crate::time::rfc3339::option")]
    pub closed_at: Option<Timestamp>,
    /// Services involved.
    pub services: BTreeSet<ServiceName>,
    /// Replicas involved.
    pub replicas: BTreeSet<ReplicaId>,
    /// Its signals.
    pub signals: Vec<IncidentSignal>,
    /// The diagnosis.
    pub diagnosis: Diagnosis,
    /// Every diagnosis it was given (name or root changed), oldest first; bounded, the first kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnoses: Vec<DiagnosisChange>,
    /// Its actions, in order.
    pub actions: Vec<ActionId>,
    /// How often its signals resolved and fired again while it was open or freshly resolved (flapping).
    pub flaps: u32,
    /// What happened, in order.
    pub timeline: Vec<TimelineEntry>,
}

impl Incident {
    /// Whether any of its signals fires.
    pub fn firing(&self) -> bool {
        self.signals.iter().any(|signal| signal.firing)
    }
}

/// A replica's condition as the stream carries it (`mend_bus::Message::Replica`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaCondition {
    /// Not started yet.
    Waiting,
    /// Its process runs and has not been ready yet.
    Starting,
    /// Ready: in the ready set.
    Ready,
    /// Its process runs and it is out of the ready set (its probes fail).
    Unready,
    /// Being stopped.
    Stopping,
    /// Waiting out a restart delay.
    Backoff,
    /// Stopped on purpose, exited for good, or given up on.
    Down,
}

/// A change of a replica's condition.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ReplicaChange {
    /// When it was seen.
    #[serde(with = "crate::time::rfc3339")]
    pub at: Timestamp,
    /// The replica.
    pub replica: ReplicaId,
    /// Its condition now.
    pub condition: ReplicaCondition,
    /// Its live process, if any.
    pub pid: Option<u32>,
    /// Processes spawned so far.
    pub generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for diagnosis in BuiltinDiagnosis::ALL {
            assert_eq!(BuiltinDiagnosis::parse(diagnosis.as_str()), Some(diagnosis));
            let json = serde_json::to_string(&diagnosis).expect("serialises");
            assert_eq!(json, format!("\"{}\"", diagnosis.as_str()));
        }
        for mode in [HealMode::Auto, HealMode::Approve, HealMode::DryRun] {
            assert_eq!(HealMode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_string(&mode).expect("serialises"), format!("\"{}\"", mode.as_str()));
        }
        assert_eq!(ActionKind::Scale { delta: 1 }.describe(), "scale +1");
        assert_eq!(ActionKind::Scale { delta: -2 }.describe(), "scale -2");
        assert!(ActionKind::Scale { delta: -1 }.disrupts() && !ActionKind::Scale { delta: 1 }.disrupts());
    }

    #[test]
    fn times_are_rfc3339_and_milliseconds_still_read() {
        let entry = TimelineEntry { at: Timestamp::from_millis(1_000), state: IncidentState::Open, note: "x".into() };
        let json = serde_json::to_value(&entry).expect("serialises");
        assert_eq!(json["at"], "1970-01-01T00:00:01.000Z");
        let back: TimelineEntry = serde_json::from_value(json).expect("reads");
        assert_eq!(back, entry);
        let millis: TimelineEntry =
            serde_json::from_str(r#"{"at": 1000, "state": "open", "note": "x"}"#).expect("reads milliseconds");
        assert_eq!(millis, entry);
        let change = ReplicaChange {
            at: Timestamp::from_millis(0),
            replica: ReplicaId::new(ServiceName::new("web").expect("valid"), 0),
            condition: ReplicaCondition::Ready,
            pid: None,
            generation: 1,
        };
        let json = serde_json::to_string(&change).expect("serialises");
        assert_eq!(serde_json::from_str::<ReplicaChange>(&json).expect("reads"), change);
    }
}
