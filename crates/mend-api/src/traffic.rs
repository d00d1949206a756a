//! The proxies through the API: `GET|POST|DELETE /api/v1/services/{name}/chaos` (fault injection:
//! latency, an HTTP error status, aborted connections on a share of the requests, always expiring by
//! itself) and `POST /api/v1/services/{name}/canary` (the canary's share of the traffic).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mend_config::parse_duration;
use serde::Deserialize;
use serde_json::json;

use crate::dto::TrafficStatus;
use crate::routes::{ApiError, ApiState};

/// Longest a fault may last: chaos always ends by itself.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(3600);

/// The faults to inject into a share of a service's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// Delay requests this long.
    pub latency: Option<Duration>,
    /// Answer with this status instead of forwarding.
    pub status: Option<u16>,
    /// Close the connection without an answer.
    pub abort: bool,
    /// Share of requests affected, in percent (0, 100].
    pub percent: f64,
}

/// The proxies as the API steers them, implemented by the daemon's traffic layer (which records what
/// changes as events).
pub trait TrafficApi: Send + Sync {
    /// The canary's current share of unpinned requests, in percent; None without a canary.
    fn canary_weight(&self, service: &str) -> Option<u8>;
    /// Sets the canary's share; false without a canary.
    fn set_canary_weight(&self, service: &str, weight: u8) -> bool;
    /// Whether `service` has a proxy.
    fn proxied(&self, service: &str) -> bool;
    /// Injects `faults` into `service`'s requests for `duration`; returns when they end, or None if it
    /// has no proxy.
    fn inject(&self, service: &str, faults: &FaultSpec, duration: Duration) -> Option<mend_types::Timestamp>;
    /// Removes every fault of `service`; false if it has no proxy.
    fn clear(&self, service: &str) -> bool;
    /// What `service`'s proxy adds to its status (canary share, faults, ejected replicas); None without
    /// a proxy.
    fn status(&self, service: &str) -> Option<TrafficStatus>;
}

/// A daemon without proxies.
pub struct NoTraffic;

impl TrafficApi for NoTraffic {
    fn canary_weight(&self, _service: &str) -> Option<u8> {
        None
    }
    fn set_canary_weight(&self, _service: &str, _weight: u8) -> bool {
        false
    }
    fn proxied(&self, _service: &str) -> bool {
        false
    }
    fn inject(&self, _service: &str, _faults: &FaultSpec, _duration: Duration) -> Option<mend_types::Timestamp> {
        None
    }
    fn clear(&self, _service: &str) -> bool {
        false
    }
    fn status(&self, _service: &str) -> Option<TrafficStatus> {
        None
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChaosRequest {
    latency: Option<String>,
    status: Option<u16>,
    #[serde(default)]
    abort: bool,
    percent: Option<f64>,
    #[serde(rename = "for")]
    duration: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    ApiError(status, message.into()).into_response()
}

/// Why a traffic call (`what`: "fault injection", "the canary split") cannot apply to `name`.
fn check_service(state: &ApiState, name: &str, what: &str) -> Result<(), ApiError> {
    if state.supervisor.service(name).is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("unknown service {name:?}")));
    }
    if !state.traffic.proxied(name) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("service {name:?} has no proxy: {what} works on [service.{name}.proxy]"),
        ));
    }
    Ok(())
}

fn parse_request(request: &ChaosRequest) -> Result<(FaultSpec, Duration), String> {
    let latency = request.latency.as_deref().map(parse_duration).transpose().map_err(|e| format!("latency: {e}"))?;
    if latency.is_some_and(|latency| latency > Duration::from_secs(60)) {
        return Err("latency: at most 60s".to_owned());
    }
    if let Some(status) = request.status
        && !(100..=599).contains(&status)
    {
        return Err(format!("status: {status} is not an HTTP status (100 to 599)"));
    }
    if latency.is_none() && request.status.is_none() && !request.abort {
        return Err("nothing to inject: give latency, status or abort".to_owned());
    }
    let percent = request.percent.unwrap_or(100.0);
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(format!("percent: {percent} is out of range (0 < percent <= 100)"));
    }
    let duration = request.duration.as_deref().ok_or("for: how long the fault lasts is required (e.g. \"30s\")")?;
    let duration = parse_duration(duration).map_err(|e| format!("for: {e}"))?;
    if duration.is_zero() || duration > MAX_FAULT_DURATION {
        return Err("for: between 1ms and 1h (chaos always expires by itself)".to_owned());
    }
    Ok((FaultSpec { latency, status: request.status, abort: request.abort, percent }, duration))
}

pub(crate) async fn inject(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(refused) = check_service(&state, &name, "fault injection") {
        return refused.into_response();
    }
    let request: ChaosRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid chaos request: {e}")),
    };
    let (faults, duration) = match parse_request(&request) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    // The traffic layer records and logs it (in words, as a chaos_started event per fault).
    let Some(until) = state.traffic.inject(&name, &faults, duration) else {
        return error(StatusCode::CONFLICT, format!("service {name:?} has no proxy"));
    };
    Json(json!({
        "service": name,
        "latency_ms": faults.latency.map(|l| l.as_millis() as u64),
        "status": faults.status,
        "abort": faults.abort,
        "percent": faults.percent,
        "until": until.to_string(),
    }))
    .into_response()
}

pub(crate) async fn clear(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    if let Err(refused) = check_service(&state, &name, "fault injection") {
        return refused.into_response();
    }
    // Recorded and logged by the traffic layer (a chaos_ended event per fault that was active).
    state.traffic.clear(&name);
    Json(json!({ "service": name, "cleared": true })).into_response()
}

/// `GET /api/v1/services/{name}/chaos`: the faults injected now, with their share and end.
pub(crate) async fn faults(State(state): State<ApiState>, Path(name): Path<String>) -> Response {
    if let Err(refused) = check_service(&state, &name, "fault injection") {
        return refused.into_response();
    }
    let faults = state.traffic.status(&name).map(|status| status.chaos).unwrap_or_default();
    Json(json!({ "service": name, "faults": faults })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryRequest {
    weight: i64,
}

/// `POST /api/v1/services/{name}/canary {"weight": 0..=100}`: the canary's share of unpinned requests.
pub(crate) async fn set_canary(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(refused) = check_service(&state, &name, "the canary split") {
        return refused.into_response();
    }
    if state.traffic.canary_weight(&name).is_none() {
        return error(StatusCode::CONFLICT, format!("service {name:?} has no canary ([service.{name}.canary])"));
    }
    let request: CanaryRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid canary request: {e}")),
    };
    let Some(weight) = u8::try_from(request.weight).ok().filter(|weight| *weight <= 100) else {
        return error(StatusCode::BAD_REQUEST, format!("weight: {} is out of range (0 to 100)", request.weight));
    };
    // Recorded and logged by the traffic layer (canary_weight_changed).
    state.traffic.set_canary_weight(&name, weight);
    Json(json!({ "service": name, "weight": weight })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<(FaultSpec, Duration), String> {
        parse_request(&serde_json::from_str(json).expect("valid json"))
    }

    #[test]
    fn chaos_requests_are_bounded_and_explained() {
        let (faults, duration) = request(r#"{"latency": "200ms", "percent": 10, "for": "30s"}"#).expect("valid");
        assert_eq!(
            (faults.latency, faults.percent, duration),
            (Some(Duration::from_millis(200)), 10.0, Duration::from_secs(30))
        );
        let cases = [
            (r#"{"percent": 10, "for": "30s"}"#, "nothing to inject: give latency, status or abort"),
            (r#"{"abort": true}"#, "for: how long the fault lasts is required (e.g. \"30s\")"),
            (r#"{"abort": true, "for": "2h"}"#, "for: between 1ms and 1h (chaos always expires by itself)"),
            (r#"{"status": 700, "for": "1s"}"#, "status: 700 is not an HTTP status (100 to 599)"),
            (r#"{"abort": true, "percent": 0, "for": "1s"}"#, "percent: 0 is out of range (0 < percent <= 100)"),
        ];
        for (json, message) in cases {
            assert_eq!(request(json).err().as_deref(), Some(message), "{json}");
        }
    }
}
