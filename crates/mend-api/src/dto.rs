//! Wire types of the API. Field names are a contract: the CLI, scripts and tests read them.

use mend_supervisor::{ReplicaStatus, ServiceHandle};
use std::collections::BTreeMap;

use mend_types::{Event, ExitCause, Signal, StopReason};
use serde::{Deserialize, Serialize};

/// `GET /api/v1/services`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicesResponse {
    /// Every service, in start order.
    pub services: Vec<ServiceDto>,
}

/// One service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceDto {
    /// Its name.
    pub name: String,
    /// Configured replicas.
    pub desired_replicas: u32,
    /// Replicas in the ready set.
    pub ready_replicas: u32,
    /// The canary's share of unpinned requests through the proxy, in percent (null without a canary).
    #[serde(default)]
    pub canary_weight: Option<u8>,
    /// Faults injected into its proxied requests now (`mend chaos`).
    #[serde(default)]
    pub chaos: Vec<FaultDto>,
    /// Its replicas.
    pub replicas: Vec<ReplicaDto>,
    /// Its autoscaler, if it has one (`[service.NAME.autoscale]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleDto>,
}

/// A service's autoscaler: its bounds and target, and what it saw and decided last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleDto {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// `cpu` or `query`.
    pub metric: String,
    /// The value per replica aimed at (percent for CPU).
    pub target: f64,
    /// The value per replica last observed (null: none yet, or missing).
    #[serde(default)]
    pub observed: Option<f64>,
    /// The count it wanted last.
    #[serde(default)]
    pub desired: Option<u32>,
    /// Its last recommendation, for people ("cpu 142% of 70% target across 2 replicas → 5").
    #[serde(default)]
    pub last: Option<String>,
}

/// What a fault does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKindDto {
    /// Delays it.
    Latency,
    /// Answers it with a status instead of forwarding it.
    Status,
    /// Closes its connection without an answer.
    Abort,
}

impl FaultKindDto {
    /// The wire name (`latency`, `status`, `abort`), also used in event details.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Status => "status",
            Self::Abort => "abort",
        }
    }
}

/// A fault injected into a share of a service's proxied requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultDto {
    /// `latency`, `status` or `abort`.
    pub fault: FaultKindDto,
    /// The latency added (latency faults).
    pub latency_ms: Option<u64>,
    /// The status answered instead of forwarding (status faults).
    pub status: Option<u16>,
    /// Share of requests affected, in percent.
    pub percent: f64,
    /// When it ends by itself (RFC 3339).
    pub until: String,
    /// Seconds until then.
    pub seconds_left: f64,
    /// In words: `200 ms latency on 10% of requests`.
    pub description: String,
}

/// The failure that ejected a replica from its service's proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EjectionReasonDto {
    /// A 5xx answer (its status is in the ejection's `status`).
    ServerError,
    /// A connect that failed.
    ConnectFailure,
    /// A connection reset.
    Reset,
    /// An attempt that timed out.
    Timeout,
    /// A response cut off after its headers (the backend closed or reset the connection mid-body).
    BrokenBody,
}

impl EjectionReasonDto {
    /// The wire name (`server_error`, `connect_failure`, `reset`, `timeout`, `broken_body`), also used in
    /// event details.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ServerError => "server_error",
            Self::ConnectFailure => "connect_failure",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::BrokenBody => "broken_body",
        }
    }
}

/// Why, and until when, a service's proxy keeps a replica out of rotation (outlier ejection).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EjectionDto {
    /// When it is back in rotation (RFC 3339).
    pub until: String,
    /// Seconds until then.
    pub seconds_left: f64,
    /// The failure that ejected it: `server_error`, `connect_failure`, `reset`, `timeout` or `broken_body`.
    pub reason: EjectionReasonDto,
    /// The status of a `server_error`.
    pub status: Option<u16>,
    /// Failures in a row that ejected it.
    pub consecutive_failures: u32,
    /// In words: `3 failures in a row, the last a 503 answer`.
    pub description: String,
}

/// What a service's proxy adds to its status, from the daemon's traffic layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficStatus {
    /// The canary's share, when there is a canary.
    pub canary_weight: Option<u8>,
    /// Faults injected now.
    pub chaos: Vec<FaultDto>,
    /// Replicas ejected now.
    pub ejected: Vec<EjectedReplica>,
}

/// A replica that a service's proxy keeps out of rotation now.
#[derive(Debug, Clone, PartialEq)]
pub struct EjectedReplica {
    /// Its index within the service.
    pub index: u32,
    /// The pid of the process ejected (the replica may have replaced it since).
    pub pid: u32,
    /// Why, and until when.
    pub ejection: EjectionDto,
}

/// Who ended a replica's process, without why mend did (that is [`ReplicaDto::last_exit_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCauseDto {
    /// The program: it exited, or a fault of its own ended it.
    Program,
    /// A signal mend did not send.
    ExternalSignal,
    /// mend.
    Mend,
}

impl From<ExitCause> for ExitCauseDto {
    fn from(cause: ExitCause) -> Self {
        match cause {
            ExitCause::Program => Self::Program,
            ExitCause::ExternalSignal => Self::ExternalSignal,
            ExitCause::Mend(_) => Self::Mend,
        }
    }
}

/// One replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaDto {
    /// Index within the service.
    pub index: u32,
    /// The release it runs (`stable` and `canary` for a service without named releases).
    pub release: String,
    /// Pid of the live process.
    pub pid: Option<u32>,
    /// Port.
    pub port: Option<u16>,
    /// `waiting`, `starting`, `running`, `stopping`, `backoff`, `stopped`, `failed` or `exited`.
    pub state: String,
    /// In the ready set.
    pub ready: bool,
    /// Why a running replica is out of the ready set, past its start: `readiness failing`,
    /// `liveness failing` (the liveness probe gates readiness when there is no readiness probe), or
    /// `busy (... probe times out while the process uses CPU)`.
    #[serde(default)]
    pub not_ready: Option<String>,
    /// The replica has failed and stays down until an operator acts: mend gave up on it (`failed`), or
    /// its process ended unsuccessfully and is not restarted (`exited`). `mend status` then exits 3.
    #[serde(default)]
    pub failed: bool,
    /// Health as people read it: `healthy`, `unhealthy` or `down`.
    pub health: String,
    /// Automatic restarts.
    pub restarts: u64,
    /// How the last process ended and who ended it, for people: `exit code 1`, `crashed: SIGSEGV (11)`,
    /// `killed by SIGKILL (9) from outside mend`, `killed by mend: hung`,
    /// `stopped by mend: over its memory limit (exit code 0)`.
    pub last_exit: Option<String>,
    /// Who ended the last process: `program` (it exited, or crashed by its own fault), `external_signal`
    /// (a signal mend did not send: an operator's kill, the OOM killer) or `mend`.
    #[serde(default)]
    pub last_exit_cause: Option<ExitCauseDto>,
    /// Why mend ended it, when it did: `hung`, `liveness`, `busy`, `startup`, `memory`, `stop` or
    /// `restart`.
    #[serde(default)]
    pub last_exit_reason: Option<StopReason>,
    /// Exit code of the last process.
    pub last_exit_code: Option<i32>,
    /// Signal that ended the last process.
    pub last_exit_signal: Option<i32>,
    /// When the live process started (RFC 3339).
    pub started_at: Option<String>,
    /// CPU use over the last sample, percent of one core.
    pub cpu_percent: Option<f64>,
    /// CPU seconds used by the live process.
    pub cpu_seconds: Option<f64>,
    /// Resident memory in bytes.
    pub rss_bytes: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Set while the service's proxy keeps this replica out of rotation.
    #[serde(default)]
    pub ejected: Option<EjectionDto>,
}

impl ReplicaDto {
    /// From a supervisor status.
    pub fn from_status(status: &ReplicaStatus) -> Self {
        let health = if status.ready {
            "healthy"
        } else if status.pid.is_some() {
            "unhealthy"
        } else {
            "down"
        };
        Self {
            index: status.index,
            release: status.release.to_string(),
            pid: status.pid,
            port: status.port,
            state: status.state.as_str().to_owned(),
            ready: status.ready,
            not_ready: status.unready.map(|unready| unready.to_string()),
            failed: status.failed(),
            health: health.to_owned(),
            restarts: status.restarts,
            last_exit: status.last_exit.map(|last| last.to_string()),
            last_exit_cause: status.last_exit.map(|last| last.cause.into()),
            last_exit_reason: status.last_exit.and_then(|last| last.cause.stop_reason()),
            last_exit_code: status.last_exit.and_then(|last| last.exit.code),
            last_exit_signal: status.last_exit.and_then(|last| last.exit.signal),
            started_at: status.started_at.map(|at| at.to_string()),
            cpu_percent: status.process.map(|p| (p.cpu_percent * 10.0).round() / 10.0),
            cpu_seconds: status.process.map(|p| p.cpu_seconds),
            rss_bytes: status.process.map(|p| p.rss_bytes),
            threads: status.process.map(|p| p.threads),
            open_fds: status.process.and_then(|p| p.open_fds),
            ejected: None,
        }
    }
}

impl ServiceDto {
    /// From a supervised service and, if it has a proxy, what its proxy says.
    pub fn from_handle(service: &ServiceHandle, traffic: Option<TrafficStatus>) -> Self {
        let mut replicas: Vec<ReplicaDto> = service.statuses().iter().map(ReplicaDto::from_status).collect();
        let traffic = traffic.unwrap_or_default();
        for EjectedReplica { index, pid, ejection } in traffic.ejected {
            // The ejection of the process running now, not of one the replica already replaced.
            if let Some(replica) = replicas.iter_mut().find(|r| r.index == index && r.pid == Some(pid)) {
                replica.ejected = Some(ejection);
            }
        }
        Self {
            name: service.config().name.to_string(),
            desired_replicas: service.config().total_replicas(),
            ready_replicas: replicas.iter().filter(|r| r.ready).count() as u32,
            canary_weight: traffic.canary_weight,
            chaos: traffic.chaos,
            replicas,
            autoscale: None,
        }
    }
}

/// `GET /api/v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsResponse {
    /// Events, oldest first.
    pub events: Vec<EventDto>,
    /// Pass it as `after` to read only what comes next: the newest event id when this page was read,
    /// whether or not it matched (or, when a following page is full, its last id). A follower that
    /// starts from it never replays older history, even when nothing matched yet.
    #[serde(default)]
    pub next_after: i64,
}

/// One stored event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventDto {
    /// Increasing id; pass it as `after` to read only newer events.
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Service, if any.
    pub service: Option<String>,
    /// Replica index, if any.
    pub replica: Option<u32>,
    /// Stable kind name (`started`, `exited`, `gave_up`, ...).
    pub kind: String,
    /// One line for people.
    pub message: String,
    /// Structured facts.
    #[serde(default)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl EventDto {
    /// From a stored event.
    pub fn new(id: i64, event: &Event) -> Self {
        Self {
            id,
            at: event.at.to_string(),
            at_ms: event.at.as_millis(),
            service: event.service.as_ref().map(ToString::to_string),
            replica: event.replica,
            kind: event.kind.as_str().to_owned(),
            message: event.message.clone(),
            details: event.details.clone(),
        }
    }
}

/// `GET /api/v1/signals`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalsResponse {
    /// Signal transitions, oldest first.
    pub signals: Vec<SignalDto>,
    /// Pass it as `after` to read only what comes next (as [`EventsResponse::next_after`]).
    #[serde(default)]
    pub next_after: i64,
}

/// One signal transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignalDto {
    /// Increasing id; pass it as `after` to read only newer ones.
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Since when the condition holds (RFC 3339).
    pub since: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// `rule`, `anomaly`, `predictive` or `external`.
    pub kind: String,
    /// Rule, detector or forecast name, or the alert name.
    pub name: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// Service concerned.
    pub service: Option<String>,
    /// Replica concerned.
    pub replica: Option<u32>,
    /// The value behind it (null when not a number).
    pub value: Option<f64>,
    /// Identifying labels.
    pub labels: BTreeMap<String, String>,
    /// Why.
    pub evidence: String,
}

impl SignalDto {
    /// From a stored signal.
    pub fn new(id: i64, signal: &Signal) -> Self {
        Self {
            id,
            at: signal.at.to_string(),
            since: signal.since.to_string(),
            state: signal.state.as_str().to_owned(),
            kind: signal.kind.as_str().to_owned(),
            name: signal.name.clone(),
            severity: signal.severity.as_str().to_owned(),
            service: signal.service.as_ref().map(ToString::to_string),
            replica: signal.replica,
            value: signal.value.is_finite().then_some(signal.value),
            labels: signal.labels.clone(),
            evidence: signal.evidence.clone(),
        }
    }
}

/// Alertmanager's webhook payload (version 4), the parts mend reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerWebhook {
    /// Must be "4".
    pub version: String,
    /// The alerts of the notification.
    pub alerts: Vec<AlertmanagerAlert>,
}

/// One alert of an Alertmanager notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Labels, including `alertname`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations (`summary`, `description`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// When the alert started (RFC 3339).
    #[serde(default)]
    pub starts_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enums' wire values are the snake_case names the API has always sent (and `as_str` writes).
    #[test]
    fn enums_keep_their_wire_names() {
        fn check<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Copy>(cases: &[(T, &str)]) {
            for &(value, name) in cases {
                let json = serde_json::to_value(value).expect("serializes");
                assert_eq!(json, name, "{value:?}");
                assert_eq!(serde_json::from_value::<T>(json).ok(), Some(value), "{name}");
            }
        }
        check(&[(FaultKindDto::Latency, "latency"), (FaultKindDto::Status, "status"), (FaultKindDto::Abort, "abort")]);
        check(&[
            (EjectionReasonDto::ServerError, "server_error"),
            (EjectionReasonDto::ConnectFailure, "connect_failure"),
            (EjectionReasonDto::Reset, "reset"),
            (EjectionReasonDto::Timeout, "timeout"),
            (EjectionReasonDto::BrokenBody, "broken_body"),
        ]);
        check(&[
            (ExitCauseDto::Program, "program"),
            (ExitCauseDto::ExternalSignal, "external_signal"),
            (ExitCauseDto::Mend, "mend"),
        ]);
        check(&[(crate::DependencySource::Declared, "declared"), (crate::DependencySource::Observed, "observed")]);
        for kind in [FaultKindDto::Latency, FaultKindDto::Status, FaultKindDto::Abort] {
            assert_eq!(serde_json::to_value(kind).expect("serializes"), kind.as_str());
        }
        for reason in [
            EjectionReasonDto::ServerError,
            EjectionReasonDto::ConnectFailure,
            EjectionReasonDto::Reset,
            EjectionReasonDto::Timeout,
            EjectionReasonDto::BrokenBody,
        ] {
            assert_eq!(serde_json::to_value(reason).expect("serializes"), reason.as_str());
        }
        for cause in [ExitCause::Program, ExitCause::ExternalSignal, ExitCause::Mend(StopReason::Hung)] {
            assert_eq!(serde_json::to_value(ExitCauseDto::from(cause)).expect("serializes"), cause.as_str());
        }
    }
}
