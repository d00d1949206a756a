//! Process chaos through the API: `POST /api/v1/services/{name}/chaos/{fault}` (kill, hang, cpu, leak,
//! slow, errors, partition; each bounded in time, reverting by itself) and `GET /api/v1/chaos` (the faults
//! active now and what the chaos monkey last decided). The proxy-only faults stay at
//! `.../{name}/chaos` (traffic.rs).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mend_config::parse_duration;
use mend_types::{ChaosFault, Timestamp};
use serde::{Deserialize, Serialize};

use crate::healing::Pending;
use crate::routes::{ApiError, ApiState};

/// Longest a process fault may last (the proxy's faults have their own cap, `MAX_FAULT_DURATION`).
pub const MAX_CHAOS_DURATION: Duration = Duration::from_secs(600);

/// A fault to inject, as checked by the API.
#[derive(Debug, Clone, PartialEq)]
pub struct ChaosOrder {
    /// The service.
    pub service: String,
    /// What to do.
    pub fault: ChaosFault,
    /// Which replica for per-replica faults (kill, hang, cpu, leak); None: one that is ready.
    pub replica: Option<u32>,
    /// How long it lasts (a kill is instant; its duration bounds nothing but the record).
    pub duration: Duration,
    /// The calling service whose requests a partition refuses.
    pub caller: Option<String>,
    /// slow: the delay added.
    pub delay: Option<Duration>,
    /// slow, errors: the share of requests hit, in percent (0, 100].
    pub percent: Option<f64>,
    /// errors: the status answered.
    pub status: Option<u16>,
    /// leak: MiB per second.
    pub mib_per_sec: Option<f64>,
    /// Who asked: "operator" (the API), "monkey", "gameday".
    pub by: String,
}

/// A fault that is active (or was just done, for a kill).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosDto {
    /// Its id, unique within this run of mend.
    pub id: u64,
    /// The service.
    pub service: String,
    /// The fault.
    pub fault: ChaosFault,
    /// The replica, for per-replica faults.
    pub replica: Option<u32>,
    /// Its process id when it was hit, for per-replica faults.
    pub pid: Option<u32>,
    /// How it was injected: `signal`, `knob` (the target's fault endpoint) or `proxy`.
    pub through: String,
    /// When it started.
    pub started: Timestamp,
    /// When it reverts by itself.
    pub until: Timestamp,
    /// In words.
    pub description: String,
    /// Who asked.
    pub by: String,
}

/// `GET /api/v1/chaos`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChaosStatus {
    /// Faults active now.
    pub active: Vec<ChaosDto>,
    /// The chaos monkey, when configured: its mode and last decision.
    pub monkey: Option<MonkeyStatus>,
}

/// What the chaos monkey is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonkeyStatus {
    /// Decides and records, injects nothing.
    pub dry_run: bool,
    /// Its last decision in words (a fault, or why none).
    pub last: Option<String>,
    /// When it decided last.
    pub last_at: Option<Timestamp>,
}

/// Why a fault was refused, with the HTTP status it maps to.
#[derive(Debug, Clone, PartialEq)]
pub enum ChaosRefusal {
    /// No such service or replica (404).
    NotFound(String),
    /// Not possible now (409): no proxy for a proxy fault, no ready replica, another fault running there.
    Conflict(String),
}

/// Process chaos as the API drives it, implemented by the daemon (which records every fault as events).
pub trait ChaosApi: Send + Sync {
    /// Injects `order`; resolves once it is in place.
    fn inject(&self, order: ChaosOrder) -> Pending<Result<ChaosDto, ChaosRefusal>>;
    /// Faults active now and the monkey's state.
    fn status(&self) -> ChaosStatus;
}

/// A daemon without process chaos (tests of other routes).
pub struct NoChaos;

impl ChaosApi for NoChaos {
    fn inject(&self, _order: ChaosOrder) -> Pending<Result<ChaosDto, ChaosRefusal>> {
        Box::pin(async { Err(ChaosRefusal::Conflict("chaos is not available".to_owned())) })
    }
    fn status(&self) -> ChaosStatus {
        ChaosStatus::default()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrder {
    #[serde(rename = "for")]
    duration: Option<String>,
    replica: Option<u32>,
    caller: Option<String>,
    delay: Option<String>,
    percent: Option<f64>,
    status: Option<u16>,
    mib_per_sec: Option<f64>,
    by: Option<String>,
}

/// Checks a request: every bound the API promises (a duration within the cap, shares and rates in
/// range, a caller exactly for partitions).
fn parse_order(service: &str, fault: &str, body: &[u8]) -> Result<ChaosOrder, String> {
    let fault: ChaosFault = fault.parse().map_err(|e: mend_types::UnknownFault| e.to_string())?;
    let raw: RawOrder = if body.iter().all(u8::is_ascii_whitespace) {
        RawOrder::default()
    } else {
        serde_json::from_slice(body).map_err(|e| format!("invalid chaos request: {e}"))?
    };
    let duration = match (&raw.duration, fault) {
        (None, ChaosFault::Kill) => Duration::ZERO,
        (None, _) => return Err("for: how long the fault lasts is required (e.g. \"30s\")".to_owned()),
        (Some(text), _) => parse_duration(text).map_err(|e| format!("for: {e}"))?,
    };
    if duration > MAX_CHAOS_DURATION || (duration.is_zero() && fault != ChaosFault::Kill) {
        return Err("for: between 1ms and 10m (chaos always reverts by itself)".to_owned());
    }
    if raw.replica.is_some() && !fault.per_replica() {
        return Err(format!("replica: {fault} hits the whole service, not one replica"));
    }
    match (fault, &raw.caller) {
        (ChaosFault::Partition, None) => {
            return Err("caller: a partition cuts the edge from a calling service (e.g. \"web\")".to_owned());
        }
        (ChaosFault::Partition, Some(caller)) if caller.is_empty() || caller.len() > 64 => {
            return Err("caller: 1 to 64 characters".to_owned());
        }
        (ChaosFault::Partition, Some(_)) | (_, None) => {}
        (_, Some(_)) => return Err(format!("caller: only a partition has a caller, not {fault}")),
    }
    let delay = raw.delay.as_deref().map(parse_duration).transpose().map_err(|e| format!("delay: {e}"))?;
    if delay.is_some_and(|delay| delay.is_zero() || delay > Duration::from_secs(60)) {
        return Err("delay: between 1ms and 60s".to_owned());
    }
    if let Some(percent) = raw.percent
        && !(percent > 0.0 && percent <= 100.0)
    {
        return Err(format!("percent: {percent} is out of range (0 < percent <= 100)"));
    }
    if let Some(status) = raw.status
        && !(100..=599).contains(&status)
    {
        return Err(format!("status: {status} is not an HTTP status (100 to 599)"));
    }
    if let Some(rate) = raw.mib_per_sec
        && !(rate > 0.0 && rate <= 1024.0)
    {
        return Err(format!("mib_per_sec: {rate} is out of range (0 < rate <= 1024)"));
    }
    let by = raw.by.unwrap_or_else(|| "operator".to_owned());
    if !["operator", "gameday"].contains(&by.as_str()) {
        return Err(format!("by: {by:?} (expected \"operator\" or \"gameday\")"));
    }
    Ok(ChaosOrder {
        service: service.to_owned(),
        fault,
        replica: raw.replica,
        duration,
        caller: raw.caller,
        delay,
        percent: raw.percent,
        status: raw.status,
        mib_per_sec: raw.mib_per_sec,
        by,
    })
}

/// `POST /api/v1/services/{name}/chaos/{fault}`.
pub(crate) async fn inject(
    State(state): State<ApiState>,
    Path((name, fault)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if state.supervisor.service(&name).is_none() {
        return ApiError(StatusCode::NOT_FOUND, format!("unknown service {name:?}")).into_response();
    }
    let order = match parse_order(&name, &fault, &body) {
        Ok(order) => order,
        Err(message) => return ApiError(StatusCode::BAD_REQUEST, message).into_response(),
    };
    match state.chaos.inject(order).await {
        Ok(injected) => Json(injected).into_response(),
        Err(ChaosRefusal::NotFound(message)) => ApiError(StatusCode::NOT_FOUND, message).into_response(),
        Err(ChaosRefusal::Conflict(message)) => ApiError(StatusCode::CONFLICT, message).into_response(),
    }
}

/// `GET /api/v1/chaos`.
pub(crate) async fn status(State(state): State<ApiState>) -> Response {
    Json(state.chaos.status()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(fault: &str, body: &str) -> Result<ChaosOrder, String> {
        parse_order("web", fault, body.as_bytes())
    }

    #[test]
    fn orders_are_bounded_and_explained() {
        let order = check("hang", r#"{"for": "5s", "replica": 1}"#).expect("valid");
        assert_eq!((order.fault, order.replica, order.duration), (ChaosFault::Hang, Some(1), Duration::from_secs(5)));
        assert_eq!(check("kill", "").expect("a kill needs no duration").duration, Duration::ZERO);
        let cases = [
            ("stop", "{}", "unknown fault \"stop\" (expected one of: kill, hang, cpu, leak, slow, errors, partition)"),
            ("hang", "{}", "for: how long the fault lasts is required (e.g. \"30s\")"),
            ("hang", r#"{"for": "11m"}"#, "for: between 1ms and 10m (chaos always reverts by itself)"),
            ("slow", r#"{"for": "1s", "replica": 0}"#, "replica: slow hits the whole service, not one replica"),
            (
                "partition",
                r#"{"for": "1s"}"#,
                "caller: a partition cuts the edge from a calling service (e.g. \"web\")",
            ),
            ("errors", r#"{"for": "1s", "caller": "x"}"#, "caller: only a partition has a caller, not errors"),
            ("errors", r#"{"for": "1s", "percent": 0}"#, "percent: 0 is out of range (0 < percent <= 100)"),
            ("slow", r#"{"for": "1s", "delay": "2m"}"#, "delay: between 1ms and 60s"),
            ("leak", r#"{"for": "1s", "mib_per_sec": 4096}"#, "mib_per_sec: 4096 is out of range (0 < rate <= 1024)"),
            ("kill", r#"{"by": "monkey"}"#, "by: \"monkey\" (expected \"operator\" or \"gameday\")"),
        ];
        for (fault, body, message) in cases {
            assert_eq!(check(fault, body).err().as_deref(), Some(message), "{fault} {body}");
        }
        assert!(check("kill", r#"{"pid": 1}"#).is_err_and(|e| e.starts_with("invalid chaos request: unknown field")));
    }
}
