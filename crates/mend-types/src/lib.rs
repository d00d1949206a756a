//! Shared vocabulary of mend: ids, time, lifecycle events, process facts and numbers for people.
//!
//! Every stage of the loop (observe → detect → diagnose → act → learn) and every edge (supervisor,
//! store, api, cli) speaks these types. The crate does no IO and has no async code.

mod chaos;
mod event;
mod exit;
mod heal;
mod ids;
mod learn;
mod probe;
mod release;
mod signal;
mod time;
mod units;

pub use chaos::{ChaosFault, UnknownFault};
pub use event::{Event, EventKind, EventSink, LineSink};
pub use exit::{ExitCause, ExitInfo, LastExit, StopReason, is_fault_signal, signal_name};
pub use heal::{
    ActionId, ActionKind, ActionRecord, ActionState, Actor, BuiltinDiagnosis, Diagnosis, DiagnosisChange, HealMode,
    Incident, IncidentId, IncidentSignal, IncidentState, RankedService, ReplicaChange, ReplicaCondition, TimelineEntry,
};
pub use ids::{InvalidName, ReleaseName, ReleaseRole, ReplicaId, ServiceName};
pub use learn::{ActionOutcome, SnapshotError, Verdict};
pub use probe::{MendTrouble, ProbeOutcome, ProcessEvidence};
pub use release::{ReleaseChange, ReleaseHistoryEntry, Rollout, RolloutPhase, ServiceReleases};
pub use signal::{
    LOG_RATE_SIGNAL, NEW_LOG_TEMPLATE_SIGNAL, SERVICE_ERRORS_RULE, Severity, Signal, SignalKind, SignalSink,
    SignalState,
};
pub use time::{Clock, SystemClock, Timestamp};
pub use units::{Unit, format_duration, format_percent};
