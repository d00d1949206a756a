//! `GET /api/v1/stream`: the stream between mend's stages (`mend_bus`) as server-sent events, for the
//! dashboard and anyone who would rather be told than poll.
//!
//! Each client is a subscription to the bus, so it is bounded as every subscriber is: it holds at most the
//! bus' capacity of messages it has not sent yet, and one that falls further behind (a client that reads
//! slowly: the answer's body is written only as fast as its socket takes it) loses the oldest. It is then
//! sent a `resync` message saying how many it lost, so that it reads the current state again, and the
//! loss is counted (`mend_api_stream_lost_messages_total`). At most [`MAX_STREAM_CLIENTS`] streams are
//! open at once (each holds one of the API's connections for as long as it lasts); more are refused with
//! 503 and counted (`mend_api_stream_refused_total`). Streams end when the API begins to close.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use mend_bus::{Bus, Message};
use mend_types::ReplicaChange;
use serde::Serialize;

use crate::dto::SignalDto;
use crate::routes::{ApiError, ApiState};

/// Most streams open at once: a few browser tabs and scripts. The API's connections are limited (16 at
/// least), and a stream holds one for as long as it lasts.
pub const MAX_STREAM_CLIENTS: usize = 8;

/// How often an idle stream sends a comment line, so that a client (or a proxy between) sees the
/// connection is alive and mend learns when the client has gone.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The bus as the API serves it, with what the streams cost so far (for `/metrics`).
pub struct StreamHub {
    bus: Arc<Bus>,
    slots: Arc<tokio::sync::Semaphore>,
    opened: AtomicU64,
    refused: AtomicU64,
    lost: Arc<AtomicU64>,
}

impl StreamHub {
    /// Serves `bus`.
    pub fn new(bus: Arc<Bus>) -> Self {
        Self {
            bus,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_STREAM_CLIENTS)),
            opened: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            lost: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Streams open now.
    pub fn clients(&self) -> usize {
        MAX_STREAM_CLIENTS - self.slots.available_permits()
    }

    /// Streams opened so far.
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Streams refused so far because [`MAX_STREAM_CLIENTS`] were open.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Messages lost so far by streams that fell behind, all clients together.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// One message of the stream, as JSON in an SSE `data` line; the SSE event name is its `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamMessage {
    /// A lifecycle event (as `GET /api/v1/events` has it, without the store's id: it may not be
    /// committed yet).
    Event {
        /// When (RFC 3339).
        at: String,
        /// Service, if any.
        service: Option<String>,
        /// Replica index, if any.
        replica: Option<u32>,
        /// Stable kind name.
        kind: String,
        /// One line for people.
        message: String,
    },
    /// A signal transition (as `GET /api/v1/signals` has it; `id` is 0: not committed yet).
    Signal(SignalDto),
    /// A replica's condition changed.
    Replica(ReplicaChange),
    /// This client fell behind and lost `lost` messages: read the state again.
    Resync {
        /// Messages lost.
        lost: u64,
    },
}

impl StreamMessage {
    fn name(&self) -> &'static str {
        match self {
            Self::Event { .. } => "event",
            Self::Signal(_) => "signal",
            Self::Replica(_) => "replica",
            Self::Resync { .. } => "resync",
        }
    }

    fn from_bus(message: &Message) -> Self {
        match message {
            Message::Event(event) => Self::Event {
                at: event.at.to_string(),
                service: event.service.as_ref().map(ToString::to_string),
                replica: event.replica,
                kind: event.kind.as_str().to_owned(),
                message: event.message.clone(),
            },
            Message::Signal(signal) => Self::Signal(SignalDto::new(0, signal)),
            Message::Replica(change) => Self::Replica(ReplicaChange::clone(change)),
        }
    }

    fn to_sse(&self) -> SseEvent {
        // Serialising these types cannot fail (string keys, no maps with other keys); should it ever,
        // the client reads the state again.
        let data = serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"resync","lost":0}"#.to_owned());
        SseEvent::default().event(self.name()).data(data)
    }
}

/// `GET /api/v1/stream`: server-sent events, from now on (the client reads the state first, then
/// follows).
pub(crate) async fn stream(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let hub = state.stream.clone();
    let Ok(slot) = hub.slots.clone().try_acquire_owned() else {
        hub.refused.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_STREAM_CLIENTS} streams are open, as many as mend serves: poll the API instead"),
        ));
    };
    hub.opened.fetch_add(1, Ordering::Relaxed);
    let subscription = hub.bus.subscribe("api-stream");
    let lost_so_far = subscription.lost();
    let total_lost = hub.lost.clone();
    let closing = state.closing.clone();
    let start = (subscription, 0_u64, closing, slot);
    let events = futures_util::stream::unfold(start, move |(mut subscription, mut reported, mut closing, slot)| {
        let (lost_so_far, total_lost) = (lost_so_far.clone(), total_lost.clone());
        async move {
            if *closing.borrow() {
                return None;
            }
            let message = tokio::select! {
                message = subscription.recv() => message?,
                _ = closing.wait_for(|closing| *closing) => return None,
            };
            // `recv` skips what the ring lost and counts it: say so before the next message.
            let lost = lost_so_far.load(Ordering::Relaxed);
            let out = if lost > reported {
                total_lost.fetch_add(lost - reported, Ordering::Relaxed);
                let resync = StreamMessage::Resync { lost: lost - reported };
                reported = lost;
                resync
            } else {
                StreamMessage::from_bus(&message)
            };
            Some((Ok::<_, Infallible>(out.to_sse()), (subscription, reported, closing, slot)))
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mend_types::{ReplicaCondition, ReplicaId, ServiceName, Timestamp};

    /// The wire shape the dashboard reads: a `type` tag, snake_case names.
    #[test]
    fn messages_carry_their_type() {
        let change = ReplicaChange {
            at: Timestamp::from_millis(1_000),
            replica: ReplicaId { service: ServiceName::new("web").expect("valid"), index: 1 },
            condition: ReplicaCondition::Backoff,
            pid: None,
            generation: 2,
        };
        let json = serde_json::to_value(StreamMessage::Replica(change)).expect("serialises");
        assert_eq!(json["type"], "replica");
        assert_eq!(json["condition"], "backoff");
        assert_eq!(StreamMessage::Resync { lost: 3 }.name(), "resync");
        let json = serde_json::to_value(StreamMessage::Resync { lost: 3 }).expect("serialises");
        assert_eq!(json, serde_json::json!({"type": "resync", "lost": 3}));
    }
}
