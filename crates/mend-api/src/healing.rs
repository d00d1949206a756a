//! Healing through the API: incidents and actions from the journal, approvals, pause and resume, and
//! the seam through which operators' commands reach the act stage ([`HealingApi`], implemented by the
//! binary's heal stage), so that they are journalled and granted like a policy's actions.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use mend_supervisor::ControlError;
use mend_types::{ActionId, ActionKind, ActionRecord, HealMode, Incident, IncidentId, ServiceName};
use serde::{Deserialize, Serialize};

use crate::routes::{ApiError, ApiState};

/// A future the API awaits.
pub type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An operator's command, as the API hands it to the act stage.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorCommand {
    /// What to do.
    pub action: ActionKind,
    /// To which service.
    pub service: ServiceName,
    /// To which replica (all when None).
    pub replica: Option<u32>,
    /// Why, as the operator said it.
    pub reason: Option<String>,
    /// How long to wait for the replicas to act.
    pub wait: Duration,
}

/// Why an operator's command did not succeed.
#[derive(Debug)]
pub enum OperatorError {
    /// The supervisor could not carry it out.
    Control(ControlError),
    /// The act stage could not journal or run it.
    Failed(String),
}

/// The heal stage, as the API uses it.
pub trait HealingApi: Send + Sync {
    /// Journals and runs an operator's command; resolves with its record once it has ended.
    fn operator(&self, command: OperatorCommand) -> Pending<Result<ActionRecord, OperatorError>>;
    /// Approves a pending action: it runs now (the answer comes once it started).
    fn approve(&self, id: ActionId) -> Pending<Result<ActionRecord, String>>;
    /// Denies a pending action: the operator takes the incident over.
    fn deny(&self, id: ActionId) -> Pending<Result<ActionRecord, String>>;
    /// Pauses (true) or resumes (false) all automatic action.
    fn set_paused(&self, paused: bool) -> Pending<Result<HealingStatus, String>>;
    /// Where healing is.
    fn status(&self) -> Pending<Result<HealingStatus, String>>;
    /// Actions journalled so far, by action and state (for `/metrics`).
    fn action_counts(&self) -> Vec<(&'static str, &'static str, u64)>;

    /// The autoscaler of `service`, if it has one.
    fn autoscale(&self, _service: &str) -> Option<crate::AutoscaleDto> {
        None
    }
}

/// `GET /api/v1/healing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealingStatus {
    /// Automatic action is paused.
    pub paused: bool,
    /// The global mode.
    pub mode: HealMode,
    /// Incidents not closed.
    pub open_incidents: usize,
    /// Actions waiting for approval.
    pub pending: Vec<ActionRecord>,
    /// Policies configured (`[[heal]]`) and shipped by default.
    pub policies: usize,
    /// The dependency graph incidents are grouped and diagnosed along: declared (`depends_on`) and
    /// observed by the proxies (requests carrying `x-mend-caller`).
    #[serde(default)]
    pub dependencies: Vec<DependencyDto>,
}

/// A caller → callee edge of the dependency graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyDto {
    /// The calling service.
    pub caller: ServiceName,
    /// The service called.
    pub callee: ServiceName,
    /// How mend knows: `declared` (`depends_on`) or `observed` (the proxy saw the calls).
    pub source: DependencySource,
}

/// How mend knows of a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencySource {
    /// `depends_on` in the config.
    Declared,
    /// The callee's proxy counted requests from the caller.
    Observed,
}

/// An incident with its actions, as the API serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentDto {
    /// The incident.
    #[serde(flatten)]
    pub incident: Incident,
    /// Its actions, in order (replaces the incident's list of ids).
    #[serde(rename = "action_records")]
    pub action_records: Vec<ActionRecord>,
}

/// `GET /api/v1/incidents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentsResponse {
    /// Newest first.
    pub incidents: Vec<IncidentDto>,
}

/// `GET /api/v1/actions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionsResponse {
    /// Newest first.
    pub actions: Vec<ActionRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    limit: Option<usize>,
    open: Option<bool>,
}

fn store_error(what: &str) -> impl Fn(mend_store::StoreError) -> ApiError + '_ {
    move |error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} query failed: {error}"))
}

async fn blocking<T: Send + 'static>(
    state: &ApiState,
    read: impl FnOnce(&mend_store::Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || read(&store))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "query task failed".to_owned()))?
}

fn limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("invalid limit {limit}: allowed 1 to 10000")));
    }
    Ok(limit)
}

/// `GET /api/v1/incidents?limit=&open=`: newest first, each with its actions.
pub(crate) async fn incidents(
    State(state): State<ApiState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<IncidentsResponse>, ApiError> {
    let Query(params) =
        query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid query string: {}", e.body_text())))?;
    let limit = limit(params.limit)?;
    let open = params.open.unwrap_or(false);
    let incidents = blocking(&state, move |store| {
        let incidents = store.incidents(limit, open).map_err(store_error("incident"))?;
        let mut list = Vec::with_capacity(incidents.len());
        for incident in incidents {
            let actions =
                store.incident(incident.id).map_err(store_error("incident"))?.map(|(_, a)| a).unwrap_or_default();
            list.push(IncidentDto { incident, action_records: actions });
        }
        Ok(list)
    })
    .await?;
    Ok(Json(IncidentsResponse { incidents }))
}

/// `GET /api/v1/incidents/{id}`.
pub(crate) async fn incident(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<IncidentDto>, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("invalid incident id {id:?}: a positive number")))?;
    let found = blocking(&state, move |store| store.incident(IncidentId(id)).map_err(store_error("incident"))).await?;
    match found {
        Some((incident, action_records)) => Ok(Json(IncidentDto { incident, action_records })),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no incident {id}"))),
    }
}

/// `GET /api/v1/actions?limit=&open=`: newest first; with `open=true`, pending and running ones.
pub(crate) async fn actions(
    State(state): State<ApiState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ActionsResponse>, ApiError> {
    let Query(params) =
        query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid query string: {}", e.body_text())))?;
    let limit = limit(params.limit)?;
    let open = params.open.unwrap_or(false);
    let actions = blocking(&state, move |store| store.actions(limit, open).map_err(store_error("action"))).await?;
    Ok(Json(ActionsResponse { actions }))
}

fn action_id(text: &str) -> Result<ActionId, ApiError> {
    text.parse()
        .map(ActionId)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("invalid action id {text:?}: a positive number")))
}

/// `POST /api/v1/actions/{id}/approve` and `/deny`.
pub(crate) async fn decide(
    State(state): State<ApiState>,
    Path((id, decision)): Path<(String, String)>,
) -> Result<Json<ActionRecord>, ApiError> {
    let id = action_id(&id)?;
    let answer = match decision.as_str() {
        "approve" => state.healing.approve(id).await,
        "deny" => state.healing.deny(id).await,
        other => {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("unknown decision {other:?} (approve or deny)")));
        }
    };
    answer.map(Json).map_err(|message| ApiError(StatusCode::CONFLICT, message))
}

/// `GET /api/v1/healing`.
pub(crate) async fn status(State(state): State<ApiState>) -> Result<Json<HealingStatus>, ApiError> {
    state.healing.status().await.map(Json).map_err(|message| ApiError(StatusCode::SERVICE_UNAVAILABLE, message))
}

/// `POST /api/v1/healing/pause` and `/resume`.
pub(crate) async fn pause(
    State(state): State<ApiState>,
    Path(what): Path<String>,
) -> Result<Json<HealingStatus>, ApiError> {
    let paused = match what.as_str() {
        "pause" => true,
        "resume" => false,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("unknown healing command {other:?} (pause or resume)"),
            ));
        }
    };
    state
        .healing
        .set_paused(paused)
        .await
        .map(Json)
        .map_err(|message| ApiError(StatusCode::SERVICE_UNAVAILABLE, message))
}

impl From<OperatorError> for ApiError {
    fn from(error: OperatorError) -> Self {
        match error {
            OperatorError::Control(error) => error.into(),
            OperatorError::Failed(message) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}
