//! mend's HTTP API: the only crate with wire (serde) types.
//!
//! Read endpoints are open; mutating endpoints need `Authorization: Bearer <token>` when a token is
//! configured. Every error is JSON `{"error": "..."}` with a fitting status.

mod dto;
mod healing;
mod metrics;
mod query;
mod routes;
mod server;
mod traffic;

pub use dto::{
    AlertmanagerAlert, AlertmanagerWebhook, EjectedReplica, EjectionDto, EjectionReasonDto, EventDto, EventsResponse,
    ExitCauseDto, FaultDto, FaultKindDto, ReplicaDto, ServiceDto, ServicesResponse, SignalDto, SignalsResponse,
    TrafficStatus,
};
pub use healing::{
    ActionsResponse, DependencyDto, DependencySource, HealingApi, HealingStatus, IncidentDto, IncidentsResponse,
    OperatorCommand, OperatorError, Pending,
};
pub use metrics::{EventCounter, ObserveStats, SignalCounter};
pub use routes::{ApiState, ReloadRequest, router};
pub use server::{MAX_REQUEST_BODY_BYTES, ServeLimits, serve};
pub use traffic::{FaultSpec, MAX_FAULT_DURATION, NoTraffic, TrafficApi};
