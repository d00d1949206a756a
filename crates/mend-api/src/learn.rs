//! Learning through the API: what mend learnt (`GET /api/v1/learn`), operators' feedback on an
//! incident (`POST /api/v1/incidents/ID/feedback`) and forgetting (`POST /api/v1/learn/reset`), through
//! the [`LearnApi`] seam the binary implements.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mend_types::{IncidentId, ServiceName, SignalKind};
use serde::{Deserialize, Serialize};

use crate::healing::Pending;
use crate::routes::{ApiError, ApiState, bad_request};

/// An operator's verdict on an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackVerdict {
    /// Nothing was wrong.
    FalsePositive,
    /// The detection was right.
    Correct,
}

/// What raised a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A `[[rule]]`: its sensitivity is its `for`, in seconds.
    Rule,
    /// A `[[detect]]`: its sensitivity is the score an alarm needs (0.5 as configured).
    Detect,
}

/// Outcomes of one action for one trigger and service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRow {
    /// The policy's `when`.
    pub trigger: String,
    /// The service acted on.
    pub service: Option<ServiceName>,
    /// The action, as a policy writes it.
    pub action: String,
    /// Outcomes.
    pub n: u32,
    /// Resolved within the verify window.
    pub n_resolved: u32,
    /// The action itself failed.
    pub n_failed: u32,
    /// Mean time from the action's start to the resolution, of the resolved ones.
    pub mean_recover_ms: Option<u64>,
}

/// The order a policy tries its actions in, for one trigger and service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRow {
    /// The policy's `when`.
    pub trigger: String,
    /// The service.
    pub service: Option<ServiceName>,
    /// As configured.
    pub configured: Vec<String>,
    /// As learnt (the configured order while evidence is thin).
    pub learnt: Vec<String>,
    /// Why, when they differ.
    pub why: Option<String>,
}

/// One rule's or detector's sensitivity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    /// Rule or detector.
    pub kind: SourceKind,
    /// Its name.
    pub name: String,
    /// As configured (`for` in seconds, or the alarm score).
    pub configured: f64,
    /// Now.
    pub current: f64,
    /// The relax factor (1: as configured).
    pub relax: f64,
    /// False positives reported.
    pub n_false_positive: u32,
    /// Correct verdicts since the last change.
    pub n_correct_run: u32,
}

/// `GET /api/v1/learn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnReport {
    /// `[learn] enabled`.
    pub enabled: bool,
    /// Outcomes per trigger, service and action.
    pub outcomes: Vec<OutcomeRow>,
    /// Orders per trigger and service with outcomes.
    pub orders: Vec<OrderRow>,
    /// Every rule and detector, configured beside current.
    pub sensitivities: Vec<SensitivityRow>,
    /// Signals learnt as candidate precursors of services' failures.
    #[serde(default)]
    pub precursors: Vec<PrecursorRow>,
}

/// A signal that preceded a service's failures (`GET /api/v1/learn`'s `precursors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecursorRow {
    /// The service.
    pub service: ServiceName,
    /// The signal's kind (`rule`, `anomaly`, ...).
    pub kind: SignalKind,
    /// The signal's name.
    pub name: String,
    /// The log template, for the log stage's signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<u64>,
    /// The service's incidents it preceded (its support).
    pub n_incidents: u32,
    /// The service's incidents.
    pub n_service_incidents: u32,
    /// Sightings.
    pub n_seen: u64,
    /// Sightings a failure followed within the window.
    pub n_followed: u64,
    /// Sightings no failure followed within the window.
    pub n_missed: u64,
    /// Followed / decided sightings (none decided yet: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    /// Shortest lead time before a failure, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_min_ms: Option<u64>,
    /// Median lead time, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_median_ms: Option<u64>,
    /// Longest lead time, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_max_ms: Option<u64>,
    /// Whether it warns when seen again (support and precision within `[learn]`'s bounds).
    pub warns: bool,
    /// What the signal said when last seen.
    pub evidence: String,
}

/// A change feedback made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityChange {
    /// Rule or detector.
    pub kind: SourceKind,
    /// Its name.
    pub name: String,
    /// The relax factor before.
    pub from: f64,
    /// After.
    pub to: f64,
    /// Why.
    pub why: String,
}

/// The answer to feedback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackAnswer {
    /// The incident.
    pub incident: IncidentId,
    /// The verdict taken.
    pub verdict: FeedbackVerdict,
    /// The rules and detectors whose signals raised it.
    pub sources: Vec<(SourceKind, String)>,
    /// What changed (nothing when learning is off, a bound is reached, or a run of correct verdicts is
    /// not complete).
    pub changes: Vec<SensitivityChange>,
}

/// Why feedback was not taken.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedbackError {
    /// No such incident in the journal.
    UnknownIncident(IncidentId),
    /// Something else (the store, a stopping mend).
    Failed(String),
}

/// `POST /api/v1/incidents/ID/feedback` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    /// The verdict.
    pub verdict: FeedbackVerdict,
}

/// `POST /api/v1/learn/reset` body.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Forget only what concerns this service (outcomes, detector state); all when absent.
    #[serde(default)]
    pub service: Option<ServiceName>,
}

/// The answer to a reset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResetAnswer {
    /// The service, or all.
    pub service: Option<ServiceName>,
    /// What was forgotten, for people.
    pub forgot: Vec<String>,
}

/// The learn stage, as the API uses it.
pub trait LearnApi: Send + Sync {
    /// What was learnt.
    fn report(&self) -> Pending<Result<LearnReport, String>>;
    /// An operator's verdict on an incident.
    fn feedback(
        &self,
        incident: IncidentId,
        verdict: FeedbackVerdict,
    ) -> Pending<Result<FeedbackAnswer, FeedbackError>>;
    /// Forgets what was learnt.
    fn reset(&self, service: Option<ServiceName>) -> Pending<Result<ResetAnswer, String>>;
}

/// A mend that learns nothing (for tests of other parts of the API).
pub struct NoLearning;

impl LearnApi for NoLearning {
    fn report(&self) -> Pending<Result<LearnReport, String>> {
        Box::pin(async {
            Ok(LearnReport {
                enabled: false,
                outcomes: Vec::new(),
                orders: Vec::new(),
                sensitivities: Vec::new(),
                precursors: Vec::new(),
            })
        })
    }

    fn feedback(&self, _: IncidentId, _: FeedbackVerdict) -> Pending<Result<FeedbackAnswer, FeedbackError>> {
        Box::pin(async { Err(FeedbackError::Failed("learning is not wired in".to_owned())) })
    }

    fn reset(&self, _: Option<ServiceName>) -> Pending<Result<ResetAnswer, String>> {
        Box::pin(async { Err("learning is not wired in".to_owned()) })
    }
}

pub(crate) async fn report(State(state): State<ApiState>) -> Result<Json<LearnReport>, ApiError> {
    state.learn.report().await.map(Json).map_err(|message| ApiError(StatusCode::SERVICE_UNAVAILABLE, message))
}

pub(crate) async fn feedback(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Result<Json<FeedbackAnswer>, ApiError> {
    let id: u64 = id.parse().map_err(|_| bad_request(format!("invalid incident id {id:?} (a number)")))?;
    let Json(request) = body.map_err(|rejection| {
        bad_request(format!(
            "invalid feedback: {} (expected {{\"verdict\": \"false_positive\" or \"correct\"}})",
            rejection.body_text()
        ))
    })?;
    match state.learn.feedback(IncidentId(id), request.verdict).await {
        Ok(answer) => Ok(Json(answer)),
        Err(FeedbackError::UnknownIncident(id)) => Err(ApiError(StatusCode::NOT_FOUND, format!("no incident {id}"))),
        Err(FeedbackError::Failed(message)) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, message)),
    }
}

pub(crate) async fn reset(
    State(state): State<ApiState>,
    body: Option<Json<ResetRequest>>,
) -> Result<Json<ResetAnswer>, ApiError> {
    let request = body.map(|Json(request)| request).unwrap_or_default();
    state
        .learn
        .reset(request.service)
        .await
        .map(Json)
        .map_err(|message| ApiError(StatusCode::SERVICE_UNAVAILABLE, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_snake_case() {
        let names: Vec<String> = [FeedbackVerdict::FalsePositive, FeedbackVerdict::Correct]
            .iter()
            .map(|v| serde_json::to_string(v).expect("serialises"))
            .chain([SourceKind::Rule, SourceKind::Detect].iter().map(|k| serde_json::to_string(k).expect("serialises")))
            .collect();
        assert_eq!(names, ["\"false_positive\"", "\"correct\"", "\"rule\"", "\"detect\""]);
    }
}
