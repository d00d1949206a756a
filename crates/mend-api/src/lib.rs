//! mend's HTTP API: the only crate with wire (serde) types.
//!
//! Read endpoints are open; mutating endpoints need `Authorization: Bearer <token>` when a token is
//! configured. Every error is JSON `{"error": "..."}` with a fitting status. The dashboard's files are
//! served from the binary at `/ui/` (`ui.rs`), and the stream between stages as server-sent events at
//! `/api/v1/stream` (`stream.rs`).

mod chaos;
mod dto;
mod fleet;
mod healing;
mod learn;
mod logs;
mod metrics;
mod query;
mod report;
mod rollout;
mod routes;
mod server;
mod stream;
mod traces;
mod traffic;
mod ui;

pub use chaos::{ChaosApi, ChaosDto, ChaosOrder, ChaosRefusal, ChaosStatus, MAX_CHAOS_DURATION, MonkeyStatus, NoChaos};
pub use dto::{
    AlertmanagerAlert, AlertmanagerWebhook, AutoscaleDto, EjectedReplica, EjectionDto, EjectionReasonDto, EventDto,
    EventsResponse, ExitCauseDto, FaultDto, FaultKindDto, ReplicaDto, ServiceDto, ServicesResponse, SignalDto,
    SignalsResponse, TrafficStatus,
};
pub use fleet::FleetSource;
pub use healing::{
    ActionsResponse, DependencyDto, DependencySource, HealingApi, HealingStatus, IncidentDto, IncidentsResponse,
    OperatorCommand, OperatorError, Pending,
};
pub use learn::{
    FeedbackAnswer, FeedbackError, FeedbackRequest, FeedbackVerdict, LearnApi, LearnReport, NoLearning, OrderRow,
    OutcomeRow, PrecursorRow, ResetAnswer, ResetRequest, SensitivityChange, SensitivityRow, SourceKind,
};
pub use logs::{PatternDto, PatternSource, PatternsDto};
pub use metrics::{EventCounter, MetricsSource, ObserveStats, SignalCounter};
pub use report::{NoReports, REPORT_CONTENT_SECURITY_POLICY, ReportApi, ReportError, ReportFormat};
pub use rollout::{DeployOrder, NoRollouts, RolloutApi, RolloutError, RolloutOrder, RolloutStatus, parse_steps};
pub use routes::{ApiState, ReloadRequest, router};
pub use server::{MAX_REQUEST_BODY_BYTES, ServeLimits, serve};
pub use stream::{MAX_STREAM_CLIENTS, StreamHub, StreamMessage};
pub use traces::{MAX_TRACE_LIMIT, TraceApi, TraceDto, TracesDto};
pub use traffic::{FaultSpec, MAX_FAULT_DURATION, NoTraffic, TrafficApi};
pub use ui::CONTENT_SECURITY_POLICY;
