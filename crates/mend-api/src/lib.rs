//! mend's HTTP API: the only crate with wire (serde) types.
//!
//! Read endpoints are open; mutating endpoints need `Authorization: Bearer <token>` when a token is
//! configured. Every error is JSON `{"error": "..."}` with a fitting status.

mod dto;
mod metrics;
mod routes;

pub use dto::{EventDto, EventsResponse, ReplicaDto, ServiceDto, ServicesResponse};
pub use metrics::EventCounter;
pub use routes::{ApiState, router};
