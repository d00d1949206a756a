//! Releases through the API: `POST /api/v1/services/{name}/deploy`, `GET /api/v1/services/{name}/rollout`
//! and `POST /api/v1/services/{name}/rollout/{pause|resume|abort|promote}`, through the seam the binary's
//! rollouts implement ([`RolloutApi`]).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mend_types::{ReleaseHistoryEntry, Rollout};
use serde::{Deserialize, Serialize};

use crate::healing::Pending;
use crate::routes::{ApiError, ApiState, bad_request};

/// What an operator asks of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutOrder {
    /// Hold the current step.
    Pause,
    /// Go on.
    Resume,
    /// Roll back now.
    Abort,
    /// Promote now.
    Promote,
}

impl RolloutOrder {
    /// The order called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pause" => Some(Self::Pause),
            "resume" => Some(Self::Resume),
            "abort" => Some(Self::Abort),
            "promote" => Some(Self::Promote),
            _ => None,
        }
    }
}

/// A deploy as asked.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployOrder {
    /// The release to roll out.
    pub release: String,
    /// Weight steps in percent, increasing.
    pub steps: Vec<u8>,
    /// Bake time of each step.
    pub interval: Duration,
    /// Canary replicas (1 by default: the split, not the canary's size, sets its share).
    pub replicas: Option<u32>,
}

/// Why a rollout request failed: the status to answer and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutError {
    /// HTTP status (404 unknown service or no rollout, 409 conflict, 400 bad request).
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// `GET /api/v1/services/{name}/rollout`: the rollout (in progress or the last one), the releases and
/// their history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// The release that runs by default.
    pub stable: String,
    /// What a rollback returns to.
    pub last_good: Option<String>,
    /// The rollout, if there was one.
    pub rollout: Option<Rollout>,
    /// The canary's share of unpinned requests now.
    pub weight: u8,
    /// Its history, newest first.
    pub history: Vec<ReleaseHistoryEntry>,
}

/// The binary's rollouts, as the API uses them.
pub trait RolloutApi: Send + Sync {
    /// Starts a rollout; answers once it has been journalled (not when it ends).
    fn deploy(&self, service: &str, order: DeployOrder) -> Pending<Result<RolloutStatus, RolloutError>>;
    /// Where `service`'s releases are.
    fn status(&self, service: &str) -> Result<RolloutStatus, RolloutError>;
    /// Hands an order to the running rollout of `service`.
    fn order(&self, service: &str, order: RolloutOrder) -> Result<RolloutStatus, RolloutError>;
}

fn rollout_error(error: RolloutError) -> ApiError {
    ApiError(StatusCode::from_u16(error.status).unwrap_or(StatusCode::CONFLICT), error.message)
}

/// Largest bake time of a step.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// `POST /api/v1/services/{name}/deploy` with `{"release": "v2", "steps": [10, 50, 100], "interval": "30s"}`.
pub(crate) async fn deploy(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<RolloutStatus>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DeployRequest {
        release: String,
        steps: Option<Vec<i64>>,
        interval: Option<String>,
        replicas: Option<i64>,
    }
    let request: DeployRequest = serde_json::from_slice(&body).map_err(|e| {
        bad_request(format!(
            "invalid deploy request (expected {{\"release\": \"v2\", \"steps\": [10, 50, 100], \"interval\": \"30s\"}}): {e}"
        ))
    })?;
    let steps = parse_steps(request.steps.unwrap_or_else(|| vec![10, 50, 100])).map_err(bad_request)?;
    let interval = match request.interval.as_deref().map(mend_config::parse_duration) {
        None => Duration::from_secs(30),
        Some(Ok(interval)) if !interval.is_zero() && interval <= MAX_INTERVAL => interval,
        Some(_) => return Err(bad_request("interval: a duration above 0 and up to 24h, e.g. \"30s\"")),
    };
    let replicas = match request.replicas {
        None => None,
        Some(n) if (1..=1024).contains(&n) => Some(n as u32),
        Some(n) => return Err(bad_request(format!("replicas: {n} is out of range (1 to 1024)"))),
    };
    let order = DeployOrder { release: request.release, steps, interval, replicas };
    state.rollouts.deploy(&name, order).await.map(Json).map_err(rollout_error)
}

/// Weight steps: 1 to 20 of them, each 1..=100, strictly increasing.
pub fn parse_steps(steps: Vec<i64>) -> Result<Vec<u8>, String> {
    if steps.is_empty() || steps.len() > 20 {
        return Err(format!("steps: {} steps (1 to 20 allowed)", steps.len()));
    }
    let mut parsed = Vec::with_capacity(steps.len());
    for step in steps {
        let Some(step) = u8::try_from(step).ok().filter(|step| (1..=100).contains(step)) else {
            return Err(format!("steps: {step} is not a percentage from 1 to 100"));
        };
        if parsed.last().is_some_and(|last| *last >= step) {
            return Err(format!("steps must increase: {step} after {}", parsed.last().copied().unwrap_or(0)));
        }
        parsed.push(step);
    }
    Ok(parsed)
}

/// `GET /api/v1/services/{name}/rollout`.
pub(crate) async fn status(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<RolloutStatus>, ApiError> {
    state.rollouts.status(&name).map(Json).map_err(rollout_error)
}

/// `POST /api/v1/services/{name}/rollout/{pause|resume|abort|promote}`.
pub(crate) async fn order(
    State(state): State<ApiState>,
    Path((name, verb)): Path<(String, String)>,
) -> Result<Json<RolloutStatus>, ApiError> {
    let order = RolloutOrder::parse(&verb).ok_or_else(|| {
        ApiError(StatusCode::NOT_FOUND, format!("unknown rollout order {verb:?} (pause, resume, abort, promote)"))
    })?;
    state.rollouts.order(&name, order).map(Json).map_err(rollout_error)
}

/// No rollouts (for tests of the API without a daemon).
pub struct NoRollouts;

impl RolloutApi for NoRollouts {
    fn deploy(&self, _service: &str, _order: DeployOrder) -> Pending<Result<RolloutStatus, RolloutError>> {
        Box::pin(async { Err(RolloutError { status: 503, message: "rollouts are not running".into() }) })
    }

    fn status(&self, service: &str) -> Result<RolloutStatus, RolloutError> {
        Err(RolloutError { status: 404, message: format!("no rollout for {service:?}") })
    }

    fn order(&self, service: &str, _order: RolloutOrder) -> Result<RolloutStatus, RolloutError> {
        Err(RolloutError { status: 404, message: format!("no rollout for {service:?}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_checked() {
        assert_eq!(parse_steps(vec![10, 50, 100]), Ok(vec![10, 50, 100]));
        assert_eq!(parse_steps(vec![]), Err("steps: 0 steps (1 to 20 allowed)".to_owned()));
        assert_eq!(parse_steps(vec![0]), Err("steps: 0 is not a percentage from 1 to 100".to_owned()));
        assert_eq!(parse_steps(vec![101]), Err("steps: 101 is not a percentage from 1 to 100".to_owned()));
        assert_eq!(parse_steps(vec![50, 10]), Err("steps must increase: 10 after 50".to_owned()));
    }
}
