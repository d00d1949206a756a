//! Lifecycle events: what happened to mend, a service or a replica, and when.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ServiceName, Timestamp};

/// What kind of thing happened. The snake_case names are stable: they are stored, served by the API and
/// matched by users' scripts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// mend started with a validated config.
    ConfigLoaded,
    /// On a reload (SIGHUP, `POST /api/v1/reload`), the config file was read again and nothing was
    /// applied: unchanged, unreadable or invalid (the running configuration stays).
    ConfigChecked,
    /// On a reload, a changed, valid config file was applied: rules, detectors, forecasts and scrape
    /// targets; the sections that only apply on the next start are listed.
    ConfigReloaded,
    /// A service a reload removed is gone: its replicas drained and stopped, its proxy closed, its
    /// series ended and its open incidents closed.
    ServiceRemoved,
    /// A replica's process was spawned.
    Started,
    /// Spawning a replica's process failed (command not found, port held by another process, ...).
    SpawnFailed,
    /// A replica passed its readiness gate and may receive traffic.
    Ready,
    /// A replica that was ready no longer is.
    Unready,
    /// A probe failed (each failure, before thresholds apply).
    ProbeFailed,
    /// A probe succeeded again after failures.
    ProbeRecovered,
    /// A liveness, startup or hang check decided that a live process must be replaced.
    Unhealthy,
    /// A replica's process ended, with its exit code or signal.
    Exited,
    /// A replica is being restarted, with the reason and the back-off delay.
    Restarted,
    /// A replica restarted more often than its restart intensity allows; it stays down until an operator
    /// starts it again. This is an escalation.
    GaveUp,
    /// A replica is being stopped (operator request, shutdown or before a restart).
    Stopping,
    /// A replica was stopped on purpose and will not be restarted.
    Stopped,
    /// A process left behind by an earlier mend that died was found and stopped.
    OrphanKilled,
    /// A replica's program left processes running outside its process group when it exited (it
    /// daemonized itself); mend stopped them, as systemd stops what is left of a service's cgroup.
    Detached,
    /// mend is shutting down.
    ShuttingDown,
    /// A metrics scrape failed (unreachable, bad status, or a malformed exposition: the line and reason);
    /// the target's previous samples stay.
    ScrapeFailed,
    /// A target that failed to scrape is scraped again.
    ScrapeRecovered,
    /// New series were refused because a target or the whole store reached its series limit.
    SeriesDropped,
    /// Faults are injected into a share of a service's proxied requests (`mend chaos proxy`): one event
    /// per fault kind (latency, status, abort), with its share, duration and end in the details.
    ChaosStarted,
    /// An injected fault ended: it expired, was cleared (`mend chaos clear`) or was replaced by a new
    /// fault of the same kind (the `reason` detail says which).
    ChaosEnded,
    /// The canary's share of a service's unpinned requests was changed at run time (`mend canary`).
    CanaryWeightChanged,
    /// A service's proxy took a replica out of rotation after failures in a row (outlier ejection), with
    /// the reason and for how long. Reported per replica once a second at most (ejections between two
    /// looks are one event with their count) and at most 10 a minute per service: beyond that they are
    /// counted, and one event without a replica says how many were not reported individually.
    Ejected,
    /// A replica ejected by its service's proxy is back in rotation (reported for reported ejections).
    Returned,
    /// mend itself is in trouble: a probe could not judge a replica because mend is out of file
    /// descriptors, memory or processes, or its event loop lagged (`trouble` detail). mend's incident,
    /// not the replica's: no replica is stopped for it. One event per replica when the trouble begins,
    /// and one (with `over: true`) when a probe can judge the replica again.
    MendTrouble,
    /// The learner changed the order in which a policy tries its actions for a trigger and service
    /// (`details`: trigger, service, order, configured; the message says why, in figures).
    ActionsReordered,
    /// Feedback on an incident changed a detection rule's or detector's sensitivity (`details`: kind,
    /// name, service, from, to, configured, reason).
    SensitivityChanged,
    /// A snapshot of learnt state (detector state, sensitivities) could not be restored: refused
    /// (corrupt, or written by a newer mend) and learnt again from scratch.
    LearntStateRefused,
    /// An operator made mend forget what it learnt (`mend learn reset`), about a service or all.
    LearntStateReset,
    /// A rollout moved (`mend deploy`): started, stepped, held, promoted or rolled back; the `phase`,
    /// `weight`, `release` and `reason` details say where and why.
    Rollout,
}

impl EventKind {
    /// All kinds, in declaration order.
    pub const ALL: [EventKind; 33] = [
        Self::ConfigLoaded,
        Self::ConfigChecked,
        Self::ConfigReloaded,
        Self::ServiceRemoved,
        Self::Started,
        Self::SpawnFailed,
        Self::Ready,
        Self::Unready,
        Self::ProbeFailed,
        Self::ProbeRecovered,
        Self::Unhealthy,
        Self::Exited,
        Self::Restarted,
        Self::GaveUp,
        Self::Stopping,
        Self::Stopped,
        Self::OrphanKilled,
        Self::Detached,
        Self::ShuttingDown,
        Self::ScrapeFailed,
        Self::ScrapeRecovered,
        Self::SeriesDropped,
        Self::ChaosStarted,
        Self::ChaosEnded,
        Self::CanaryWeightChanged,
        Self::Ejected,
        Self::Returned,
        Self::MendTrouble,
        Self::ActionsReordered,
        Self::SensitivityChanged,
        Self::LearntStateRefused,
        Self::LearntStateReset,
        Self::Rollout,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigLoaded => "config_loaded",
            Self::Started => "started",
            Self::SpawnFailed => "spawn_failed",
            Self::Ready => "ready",
            Self::Unready => "unready",
            Self::ProbeFailed => "probe_failed",
            Self::ProbeRecovered => "probe_recovered",
            Self::Unhealthy => "unhealthy",
            Self::Exited => "exited",
            Self::Restarted => "restarted",
            Self::GaveUp => "gave_up",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::OrphanKilled => "orphan_killed",
            Self::Detached => "detached",
            Self::ShuttingDown => "shutting_down",
            Self::ScrapeFailed => "scrape_failed",
            Self::ScrapeRecovered => "scrape_recovered",
            Self::SeriesDropped => "series_dropped",
            Self::ConfigChecked => "config_checked",
            Self::ConfigReloaded => "config_reloaded",
            Self::ServiceRemoved => "service_removed",
            Self::ChaosStarted => "chaos_started",
            Self::ChaosEnded => "chaos_ended",
            Self::CanaryWeightChanged => "canary_weight_changed",
            Self::Ejected => "ejected",
            Self::Returned => "returned",
            Self::MendTrouble => "mend_trouble",
            Self::ActionsReordered => "actions_reordered",
            Self::SensitivityChanged => "sensitivity_changed",
            Self::LearntStateRefused => "learnt_state_refused",
            Self::LearntStateReset => "learnt_state_reset",
            Self::Rollout => "rollout",
        }
    }

    /// Parses a stable name back into a kind.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened: stored in the event store, served by the API, printed by `mend events`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    pub at: Timestamp,
    /// The service concerned, if any.
    pub service: Option<ServiceName>,
    /// The replica index concerned, if any.
    pub replica: Option<u32>,
    /// What happened.
    pub kind: EventKind,
    /// One line for people.
    pub message: String,
    /// Structured facts (pid, exit code, probe, reason, delay...) for machines.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub details: Map<String, Value>,
}

impl Event {
    /// An event with no service, replica or details.
    pub fn new(at: Timestamp, kind: EventKind, message: impl Into<String>) -> Self {
        Self { at, service: None, replica: None, kind, message: message.into(), details: Map::new() }
    }

    /// Sets the service.
    pub fn service(mut self, service: &ServiceName) -> Self {
        self.service = Some(service.clone());
        self
    }

    /// Sets the replica (and its service).
    pub fn replica(mut self, replica: &crate::ReplicaId) -> Self {
        self.service = Some(replica.service.clone());
        self.replica = Some(replica.index);
        self
    }

    /// Adds a structured detail.
    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Where events go: the event store in the daemon, a vector in tests.
///
/// `emit` must not block: supervision never waits on storage. Implementations queue the event and count
/// what they have to drop.
pub trait EventSink: Send + Sync {
    /// Records one event.
    fn emit(&self, event: Event);
}

/// Where captured output lines go besides the replica's log file (the log miner). `line` must not
/// block: implementations queue the line and count what they have to drop.
pub trait LineSink: Send + Sync {
    /// One line of `replica`'s output (without its newline; a piece of a cut line is a line), read at `at`.
    fn line(&self, replica: &crate::ReplicaId, at: crate::Timestamp, line: &[u8]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip_and_match_serde() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).expect("a unit enum serialises");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
