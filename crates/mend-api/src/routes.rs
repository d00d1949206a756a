//! Routes and handlers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use mend_config::parse_duration;
use mend_store::{EventQuery, Store, StoreError};
use mend_supervisor::logs::{self, LogCursor};
use mend_supervisor::{ControlError, Supervisor};
use mend_types::{Clock, EventKind, ServiceName, Severity, Signal, SignalKind, SignalSink, SignalState, Timestamp};
use serde::Deserialize;
use serde_json::json;

use crate::dto::{
    AlertmanagerWebhook, EventDto, EventsResponse, ServiceDto, ServicesResponse, SignalDto, SignalsResponse,
};
use crate::metrics::{self, EventCounter, ObserveStats, SignalCounter};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The supervisor.
    pub supervisor: Arc<Supervisor>,
    /// The event store.
    pub store: Arc<Store>,
    /// Counts events by kind for /metrics.
    pub events: Arc<EventCounter>,
    /// Where signals go (store, counters).
    pub signals: Arc<SignalCounter>,
    /// Scrape counters and the series store.
    pub observe: Arc<ObserveStats>,
    /// The proxies: fault injection and canary weights.
    pub traffic: Arc<dyn crate::TrafficApi>,
    /// Bearer token for mutating calls, if set.
    pub token: Option<Arc<str>>,
    /// mend's state directory (replica logs).
    pub state_dir: PathBuf,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Asks the daemon to reload its config file; the answer is the event the reload recorded.
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// The heal stage: operators' commands, approvals, pause and resume.
    pub healing: Arc<dyn crate::HealingApi>,
    /// The log stage's mined templates, by service.
    pub log_patterns: crate::logs::PatternSource,
    /// Turns true when the API is about to stop: streams that follow (`logs?follow=true`) end, so that
    /// their connections do not hold the shutdown up.
    pub closing: tokio::sync::watch::Receiver<bool>,
    /// The stream between stages, served as server-sent events (`/api/v1/stream`).
    pub stream: Arc<crate::StreamHub>,
    /// Process chaos (`mend chaos kill|hang|...`) and the chaos monkey.
    pub chaos: Arc<dyn crate::ChaosApi>,
    /// The learn stage: what was learnt, feedback, forgetting.
    pub learn: Arc<dyn crate::LearnApi>,
    /// The rollouts: deploy, status, pause, resume, abort, promote.
    pub rollouts: Arc<dyn crate::RolloutApi>,
    /// The post-incident reports (`/api/v1/incidents/{id}/report`).
    pub reports: Arc<dyn crate::ReportApi>,
    /// The span store and OTLP intake (`None`: tracing is off).
    pub traces: Option<Arc<crate::TraceApi>>,
    /// Prometheus remote write's counters (`None`: no `[remote_write]`).
    pub remote_write: Option<Arc<dyn crate::MetricsSource>>,
    /// The fleet's view (`None`: no `[fleet]`).
    pub fleet: Option<crate::FleetSource>,
}

/// A reload asked through the API: the daemon answers with the event it recorded, whose `outcome`
/// detail is `reloaded`, `unchanged`, `invalid`, `unreadable` or `stopping`.
pub type ReloadRequest = tokio::sync::oneshot::Sender<mend_types::Event>;

/// An API error: a status and a message, rendered as JSON.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        let status = match error {
            ControlError::UnknownService(_) | ControlError::UnknownReplica { .. } => StatusCode::NOT_FOUND,
            ControlError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ControlError::NotReadyAgain { .. }
            | ControlError::CannotScale { .. }
            | ControlError::CannotRelease { .. }
            | ControlError::AlreadySupervised(_) => StatusCode::CONFLICT,
        };
        Self(status, error.to_string())
    }
}

pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

pub(crate) fn query_error(rejection: QueryRejection) -> ApiError {
    bad_request(format!("invalid query string: {}", rejection.body_text()))
}

/// Builds the API router.
pub fn router(state: ApiState) -> Router {
    let mutating = Router::new()
        .route("/api/v1/services/{name}/{action}", post(control))
        .route("/api/v1/alerts", post(alerts_in))
        .route("/api/v1/services/{name}/chaos", post(crate::traffic::inject).delete(crate::traffic::clear))
        .route("/api/v1/services/{name}/canary", post(crate::traffic::set_canary))
        .route("/api/v1/services/{name}/chaos/{fault}", post(crate::chaos::inject))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/services/{name}/scale", post(scale))
        .route("/api/v1/services/{name}/deploy", post(crate::rollout::deploy))
        .route("/api/v1/services/{name}/rollout/{order}", post(crate::rollout::order))
        .route("/api/v1/actions/{id}/{decision}", post(crate::healing::decide))
        .route("/api/v1/healing/{what}", post(crate::healing::pause))
        .route("/api/v1/incidents/{id}/feedback", post(crate::learn::feedback))
        .route("/api/v1/learn/reset", post(crate::learn::reset))
        .route("/v1/traces", post(crate::traces::accept))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(crate::ui::root))
        .route("/ui", get(crate::ui::root))
        .route("/ui/", get(crate::ui::index))
        .route("/ui/{*path}", get(crate::ui::asset))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/v1/stream", get(crate::stream::stream))
        .route("/metrics", get(metrics_page))
        .route("/api/v1/services", get(services))
        .route("/api/v1/services/{name}", get(service))
        .route("/api/v1/services/{name}/logs", get(service_logs))
        .route("/api/v1/services/{name}/log-patterns", get(crate::logs::patterns))
        .route("/api/v1/logs", get(crate::logs::aggregate))
        .route("/api/v1/services/{name}/chaos", get(crate::traffic::faults))
        .route("/api/v1/services/{name}/rollout", get(crate::rollout::status))
        .route("/api/v1/events", get(events))
        .route("/api/v1/chaos", get(crate::chaos::status))
        .route("/api/v1/signals", get(signals))
        .route("/api/v1/incidents", get(crate::healing::incidents))
        .route("/api/v1/incidents/{id}", get(crate::healing::incident))
        .route("/api/v1/incidents/{id}/report", get(crate::report::report))
        .route("/api/v1/actions", get(crate::healing::actions))
        .route("/api/v1/healing", get(crate::healing::status))
        .route("/api/v1/fleet", get(crate::fleet::view))
        .route("/api/v1/learn", get(crate::learn::report))
        .route("/api/v1/traces", get(crate::traces::list))
        .route("/api/v1/traces/{trace_id}", get(crate::traces::trace))
        .route("/api/v1/query", get(crate::query::instant).post(crate::query::instant))
        .route("/api/v1/query_range", get(crate::query::range).post(crate::query::range))
        .route("/api/v1/series", get(crate::query::series).post(crate::query::series))
        .merge(mutating)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(browser_guard))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Every error is JSON, including those axum answers itself (a body over the size limit, say).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text =
        axum::body::to_bytes(body, 64 * 1024).await.map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned());
    let message = match text {
        Ok(text) if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut json = ApiError(status, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

/// True for `localhost` and IP literals: names an attacker cannot rebind to 127.0.0.1.
fn safe_host(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| if port.chars().all(|c| c.is_ascii_digit()) { host } else { authority })
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok()
}

/// Protects a loopback API from web pages: a `Host` that is a DNS name other than `localhost` (DNS
/// rebinding) and a mutating request from another origin (cross-site request forgery) are refused.
/// Clients that are not browsers (the CLI, curl, scripts, Alertmanager) send neither and pass.
async fn browser_guard(request: Request, next: Next) -> Response {
    let headers = request.headers();
    // Every route, token or not: a token protects mutating calls, while a page on a rebound name could
    // still read logs and events (issue 20).
    if let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok())
        && !safe_host(host)
    {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!("unexpected Host {host:?}: the API answers to IP addresses and localhost only"),
        )
        .into_response();
    }
    let mutating = !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if mutating {
        let cross_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "cross-site");
        // Same origin only: the Origin's host and port must be the ones the request was sent to, so
        // that another local web app (http://localhost:3000, say) cannot act either.
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let foreign_origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).is_some_and(|origin| {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest).trim_end_matches('/');
            origin == "null" || !host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
        });
        if cross_site || foreign_origin {
            return ApiError(StatusCode::FORBIDDEN, "cross-site requests may not change anything".into())
                .into_response();
        }
    }
    next.run(request).await
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such endpoint: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError(StatusCode::METHOD_NOT_ALLOWED, format!("method {method} is not allowed on {}", uri.path()))
}

/// Compares in time independent of where the strings differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else { return next.run(request).await };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        // The scheme name is case-insensitive (RFC 9110 §11.1).
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(presented) if constant_time_eq(presented.as_bytes(), token.as_bytes()) => next.run(request).await,
        Some(_) => ApiError(StatusCode::FORBIDDEN, "invalid bearer token".into()).into_response(),
        None => {
            let mut response = ApiError(
                StatusCode::UNAUTHORIZED,
                "this call needs Authorization: Bearer <token> (api.token is set)".into(),
            )
            .into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// `/metrics` in OpenMetrics for clients that ask for it (Prometheus does), else in the 0.0.4 text format,
/// as the Go client negotiates: promtool, curl and older scrapers read 0.0.4, where a counter's family is
/// named with its `_total`.
async fn metrics_page(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let openmetrics = metrics::render(
        &state.supervisor,
        &state.events,
        &state.signals,
        &state.observe,
        state.store.dropped_events(),
        &state.healing.action_counts(),
        &state.stream,
    );
    let openmetrics = match &state.traces {
        Some(traces) => match openmetrics.strip_suffix("# EOF\n") {
            Some(head) => format!("{head}{}# EOF\n", crate::traces::openmetrics(&traces.tracing.stats())),
            None => openmetrics,
        },
        None => openmetrics,
    };
    let openmetrics = match &state.remote_write {
        Some(remote_write) => match openmetrics.strip_suffix("# EOF\n") {
            Some(head) => format!("{head}{}# EOF\n", remote_write.openmetrics()),
            None => openmetrics,
        },
        None => openmetrics,
    };
    let (content_type, body) = if metrics::accepts_openmetrics(&headers) {
        (metrics::OPENMETRICS_CONTENT_TYPE, openmetrics)
    } else {
        match metrics::to_text_format(&openmetrics) {
            Ok(text) => (metrics::TEXT_CONTENT_TYPE, text),
            Err(error) => {
                // Our own encoder's output always parses; if it ever did not, the OpenMetrics page is
                // still correct, so serve it rather than nothing.
                tracing::warn!(%error, "cannot convert /metrics to the 0.0.4 text format");
                (metrics::OPENMETRICS_CONTENT_TYPE, openmetrics)
            }
        }
    };
    ([(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], body).into_response()
}

/// A service as the API shows it: its replicas, and what its proxy says about them.
fn service_dto(state: &ApiState, service: &mend_supervisor::ServiceHandle) -> ServiceDto {
    let name = service.config().name.clone();
    let mut dto = ServiceDto::from_handle(service, state.traffic.status(name.as_str()));
    dto.autoscale = state.healing.autoscale(name.as_str());
    dto
}

async fn services(State(state): State<ApiState>) -> Json<ServicesResponse> {
    Json(ServicesResponse {
        services: state.supervisor.services().iter().map(|service| service_dto(&state, service)).collect(),
    })
}

async fn service(State(state): State<ApiState>, Path(name): Path<String>) -> Result<Json<ServiceDto>, ApiError> {
    let service = state.supervisor.service(&name).ok_or(ControlError::UnknownService(name))?;
    Ok(Json(service_dto(&state, &service)))
}

#[derive(Debug, Deserialize)]
struct ReplicaParam {
    replica: Option<u32>,
    /// Why (recorded in the journal and the events).
    reason: Option<String>,
    /// How long to wait for each replica to act (e.g. "90s"); by default the stop timeout plus a minute.
    wait: Option<String>,
}

/// `POST /api/v1/reload`: what SIGHUP does (as Prometheus' `POST /-/reload`), answered with what it did.
async fn reload(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    let shutting_down = || ApiError(StatusCode::SERVICE_UNAVAILABLE, "mend is shutting down".to_owned());
    let (answer, answered) = tokio::sync::oneshot::channel();
    state.reload.send(answer).await.map_err(|_| shutting_down())?;
    let event = tokio::time::timeout(Duration::from_secs(30), answered)
        .await
        .map_err(|_| ApiError(StatusCode::GATEWAY_TIMEOUT, "the reload did not finish within 30s".to_owned()))?
        .map_err(|_| shutting_down())?;
    let outcome = event.details.get("outcome").and_then(|o| o.as_str()).unwrap_or("").to_owned();
    match outcome.as_str() {
        "reloaded" | "unchanged" => Ok(Json(json!({
            "outcome": outcome,
            "kind": event.kind.as_str(),
            "message": event.message,
            "not_applied": event.details.get("not_applied").cloned().unwrap_or_else(|| json!([])),
        }))),
        "stopping" => Err(shutting_down()),
        "unreadable" => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, event.message)),
        _ => Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, event.message)),
    }
}

async fn control(
    State(state): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
    query: Result<Query<ReplicaParam>, QueryRejection>,
) -> Result<Json<ServiceDto>, ApiError> {
    let Query(params) = query.map_err(query_error)?;
    let kind = match action.as_str() {
        "start" => mend_types::ActionKind::Start,
        "stop" => mend_types::ActionKind::Stop,
        "restart" => mend_types::ActionKind::Restart,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("unknown action {other:?} (use start, stop or restart)"),
            ));
        }
    };
    let service = state.supervisor.service(&name).ok_or_else(|| ControlError::UnknownService(name.clone()))?;
    // Wait long enough for a drain, a graceful stop and a fresh start (per replica, for a rolling
    // restart), then report whatever state was reached.
    let wait = match params.wait.as_deref().map(parse_duration) {
        None => service.config().stop_timeout + Duration::from_secs(60),
        Some(Ok(wait)) if wait <= Duration::from_secs(3600) => wait,
        Some(_) => return Err(bad_request("invalid wait: a duration up to 1h, e.g. \"90s\"")),
    };
    if let Some(index) = params.replica
        && index as usize >= service.replicas().len()
    {
        return Err(ControlError::UnknownReplica { service: name, index }.into());
    }
    let command = crate::OperatorCommand {
        action: kind,
        service: service.config().name.clone(),
        replica: params.replica,
        reason: params.reason.clone(),
        wait,
    };
    state.healing.operator(command).await?;
    tracing::info!(service = %name, action = %action, replica = ?params.replica, reason = ?params.reason, "operator command");
    Ok(Json(service_dto(&state, &service)))
}

/// `POST /api/v1/services/{name}/scale` with `{"replicas": N}`: how many replicas of the stable release
/// to run. Waits (`?wait=`) until new replicas are ready or surplus ones have drained and stopped.
async fn scale(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<WaitParam>, QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Json<ServiceDto>, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ScaleRequest {
        replicas: i64,
    }

    let Query(params) = query.map_err(query_error)?;
    let service = state.supervisor.service(&name).ok_or_else(|| ControlError::UnknownService(name.clone()))?;
    let request: ScaleRequest = serde_json::from_slice(&body)
        .map_err(|e| bad_request(format!("invalid scale request (expected {{\"replicas\": N}}): {e}")))?;
    let Some(replicas) = u32::try_from(request.replicas).ok().filter(|n| *n <= MAX_REPLICAS) else {
        return Err(bad_request(format!("replicas: {} is out of range (0 to {MAX_REPLICAS})", request.replicas)));
    };
    let wait = match params.wait.as_deref().map(parse_duration) {
        None => service.config().stop_timeout + Duration::from_secs(60),
        Some(Ok(wait)) if wait <= Duration::from_secs(3600) => wait,
        Some(_) => return Err(bad_request("invalid wait: a duration up to 1h, e.g. \"90s\"")),
    };
    let before = service.config().replicas;
    let command = crate::OperatorCommand {
        action: mend_types::ActionKind::Scale { delta: replicas as i32 - before as i32 },
        service: service.config().name.clone(),
        replica: None,
        reason: params.reason.clone(),
        wait,
    };
    state.healing.operator(command).await?;
    tracing::info!(service = %name, from = before, to = replicas, "scaled");
    Ok(Json(service_dto(&state, &service)))
}

/// `?wait=` alone (a scale has no `replica`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitParam {
    wait: Option<String>,
    /// Why (recorded in the journal).
    reason: Option<String>,
}

/// Most replicas one service may be scaled to: what its config may say.
const MAX_REPLICAS: u32 = 1024;

#[derive(Debug, Deserialize)]
struct EventParams {
    service: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    after: Option<i64>,
    kind: Option<String>,
}

/// Parses `since`: RFC 3339, or a duration back from now (`5m`); a bare number needs a unit.
pub(crate) fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    mend_config::parse_since(text, now).map_err(|reason| bad_request(format!("invalid since {text:?}: {reason}")))
}

async fn events(
    State(state): State<ApiState>,
    query: Result<Query<EventParams>, QueryRejection>,
) -> Result<Json<EventsResponse>, ApiError> {
    let Query(params) = query.map_err(query_error)?;
    let since = params.since.as_deref().map(|text| parse_since(text, state.clock.wall())).transpose()?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(bad_request(format!("invalid limit {limit}: allowed 1 to 10000")));
    }
    let mut kinds = Vec::new();
    for name in params.kind.iter().flat_map(|kinds| kinds.split(',')).map(str::trim).filter(|k| !k.is_empty()) {
        let kind = EventKind::parse(name).ok_or_else(|| {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            bad_request(format!("unknown event kind {name:?} (known: {})", known.join(", ")))
        })?;
        kinds.push(kind);
    }
    if let Some(service) = &params.service
        && state.supervisor.service(service).is_none()
    {
        return Err(ControlError::UnknownService(service.clone()).into());
    }
    let query = EventQuery { service: params.service, since, after_id: params.after, kinds, limit };
    let page = read_committed(&state, "event", move |store| store.events_page(&query)).await?;
    Ok(Json(EventsResponse {
        events: page.items.iter().map(|stored| EventDto::new(stored.id, &stored.event)).collect(),
        next_after: page.next_after,
    }))
}

#[derive(Debug, Deserialize)]
struct SignalParams {
    active: Option<bool>,
    service: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    after: Option<i64>,
}

async fn signals(
    State(state): State<ApiState>,
    query: Result<Query<SignalParams>, QueryRejection>,
) -> Result<Json<SignalsResponse>, ApiError> {
    let Query(params) = query.map_err(query_error)?;
    let since = params.since.as_deref().map(|text| parse_since(text, state.clock.wall())).transpose()?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(bad_request(format!("invalid limit {limit}: allowed 1 to 10000")));
    }
    let query = mend_store::SignalQuery {
        active_only: params.active.unwrap_or(false),
        service: params.service,
        since,
        after_id: params.after,
        limit,
    };
    let page = read_committed(&state, "signal", move |store| store.signals_page(&query)).await?;
    Ok(Json(SignalsResponse {
        signals: page.items.iter().map(|s| SignalDto::new(s.id, &s.signal)).collect(),
        next_after: page.next_after,
    }))
}

/// Runs a `what` query on the store off the async workers, read-your-writes: whatever was queued before
/// this request (the event behind a state the caller just saw) is committed first. Once the store is
/// closed (shutdown) there is nothing to flush, and reads still work.
async fn read_committed<T: Send + 'static>(
    state: &ApiState,
    what: &str,
    read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        let _ = store.flush();
        read(&store)
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} query task failed")))?
    .map_err(|error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{what} query failed: {error}")))
}

/// Most alerts in one Alertmanager post.
const MAX_ALERTS_PER_POST: usize = 1000;
/// Most labels of one alert.
const MAX_ALERT_LABELS: usize = 32;
/// Longest label name or value of an alert.
const MAX_ALERT_LABEL_BYTES: usize = 1024;
/// Longest summary kept of an alert (longer ones are cut, saying so): 1.9 MB summaries were kept whole.
const MAX_ALERT_TEXT_BYTES: usize = 4096;
/// Most distinct external alerts firing at once.
const MAX_FIRING_ALERTS: usize = 10_000;

/// `text`, cut to at most `max_bytes` (on a character boundary) with a note saying so.
fn truncate_text(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... [cut by mend: {} bytes in all]", &text[..end], text.len())
}

/// `POST /api/v1/alerts`: Alertmanager's webhook (version 4); each alert becomes an external signal.
async fn alerts_in(
    State(state): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let webhook: AlertmanagerWebhook = serde_json::from_slice(&body)
        .map_err(|error| bad_request(format!("invalid Alertmanager webhook payload: {error}")))?;
    if webhook.version != "4" {
        return Err(bad_request(format!("unsupported webhook version {:?} (expected \"4\")", webhook.version)));
    }
    if webhook.alerts.len() > MAX_ALERTS_PER_POST {
        return Err(bad_request(format!(
            "{} alerts in one post: at most {MAX_ALERTS_PER_POST} (Alertmanager's max_alerts can say so)",
            webhook.alerts.len()
        )));
    }
    let now = state.clock.wall();
    let mut signals = Vec::with_capacity(webhook.alerts.len());
    for (idx, alert) in webhook.alerts.iter().enumerate() {
        if alert.labels.len() > MAX_ALERT_LABELS {
            return Err(bad_request(format!(
                "alerts[{idx}] has {} labels: at most {MAX_ALERT_LABELS}",
                alert.labels.len()
            )));
        }
        if let Some((label, value)) = alert
            .labels
            .iter()
            .find(|(label, value)| label.len() > MAX_ALERT_LABEL_BYTES || value.len() > MAX_ALERT_LABEL_BYTES)
        {
            let label: String = label.chars().take(64).collect();
            return Err(bad_request(format!(
                "alerts[{idx}]: label {label:?} or its value ({} bytes) is longer than {MAX_ALERT_LABEL_BYTES} bytes",
                value.len()
            )));
        }
        let name = alert
            .labels
            .get("alertname")
            .cloned()
            .ok_or_else(|| bad_request(format!("alerts[{idx}] has no \"alertname\" label")))?;
        let firing = match alert.status.as_str() {
            "firing" => SignalState::Firing,
            "resolved" => SignalState::Resolved,
            other => return Err(bad_request(format!("alerts[{idx}]: unknown status {other:?} (firing or resolved)"))),
        };
        // The `service` label names a supervised service when it matches one; otherwise it stays a label.
        let service = alert
            .labels
            .get("service")
            .and_then(|name| ServiceName::new(name).ok())
            .filter(|name| state.supervisor.service(name.as_str()).is_some());
        let replica = alert.labels.get("replica").and_then(|r| r.parse().ok());
        let since = alert.starts_at.as_deref().and_then(Timestamp::parse).unwrap_or(now);
        let evidence = alert
            .annotations
            .get("summary")
            .or_else(|| alert.annotations.get("description"))
            .map(|text| truncate_text(text, MAX_ALERT_TEXT_BYTES))
            .unwrap_or_else(|| format!("alert {name} from Alertmanager"));
        let mut labels = alert.labels.clone();
        labels.remove("alertname");
        signals.push(Signal {
            at: now,
            since,
            state: firing,
            kind: SignalKind::External,
            severity: alert.labels.get("severity").and_then(|s| Severity::parse(s)).unwrap_or_default(),
            name,
            service,
            replica,
            value: f64::NAN,
            labels,
            evidence,
        });
    }
    // Alertmanager repeats a notification every repeat_interval while an alert fires: a repeat is not a
    // new transition.
    let n_signals = signals.len();
    let mut unchanged = 0;
    let mut refused = 0;
    let mut n_firing = state
        .signals
        .firing()
        .iter()
        .find(|(kind, _)| *kind == SignalKind::External)
        .map_or(0, |(_, n_firing)| *n_firing);
    for signal in signals {
        let firing = state.signals.is_firing(&signal.fingerprint());
        if firing == (signal.state == SignalState::Firing) {
            unchanged += 1;
            continue;
        }
        // A bounded number of distinct alerts firing at once: each is kept in memory until it resolves.
        if signal.state == SignalState::Firing {
            if n_firing >= MAX_FIRING_ALERTS {
                refused += 1;
                continue;
            }
            n_firing += 1;
        }
        state.signals.signal(signal);
    }
    if refused > 0 {
        tracing::warn!(
            refused,
            limit = MAX_FIRING_ALERTS,
            "refused new Alertmanager alerts: as many are firing as mend keeps; they are taken once others resolve"
        );
        return Ok(Json(json!({
            "accepted": n_signals - refused,
            "unchanged": unchanged,
            "refused": refused,
            "reason": format!("{MAX_FIRING_ALERTS} external alerts are firing, as many as mend keeps: new ones are refused until others resolve"),
        })));
    }
    Ok(Json(json!({ "accepted": n_signals, "unchanged": unchanged })))
}

use crate::logs::{Lines, MAX_LOG_ANSWER_BYTES, answer_slot};

#[derive(Debug, Deserialize)]
struct LogParams {
    replica: Option<u32>,
    tail: Option<usize>,
    follow: Option<bool>,
    /// Each line with the time mend read it.
    timestamps: Option<bool>,
}

/// The lines of a replica's stored log as the replica wrote them (with `timestamps`, each after the time
/// mend read it), `[index] ` before each when the answer has several replicas.
fn present(bytes: &[u8], index: u32, prefix: bool, timestamps: bool, out: &mut Vec<u8>) {
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let record = logs::parse_record(line);
        if prefix {
            out.extend_from_slice(format!("[{index}] ").as_bytes());
        }
        if timestamps {
            match record.at {
                Some(at) => out.extend_from_slice(format!("{at} ").as_bytes()),
                None => out.extend_from_slice(b"-                        "),
            }
        }
        out.extend_from_slice(record.body);
        out.push(b'\n');
    }
}

async fn service_logs(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<LogParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(query_error)?;
    let service = state.supervisor.service(&name).ok_or_else(|| ControlError::UnknownService(name.clone()))?;
    let indexes: Vec<u32> = match params.replica {
        Some(index) if index < service.config().total_replicas() => vec![index],
        Some(index) => return Err(ControlError::UnknownReplica { service: name, index }.into()),
        None => (0..service.config().total_replicas()).collect(),
    };
    let prefix = indexes.len() > 1;
    let dir = service.config().log_dir(&state.state_dir);
    let tail = params.tail.unwrap_or(100).min(100_000);
    let mut cursors: HashMap<u32, LogCursor> = HashMap::new();
    for &index in &indexes {
        // The cursor is taken before reading the tail, so following never misses a line (it may repeat
        // one written in between).
        cursors.insert(index, LogCursor::at_end(&dir, index));
    }
    // The tail, one replica at a time, off the async workers and at most MAX_LOG_ANSWER_BYTES in all:
    // the line limit alone let `tail=100000` answer 137 MB (issue 20).
    let per_replica = (MAX_LOG_ANSWER_BYTES / indexes.len().max(1)) as u64;
    let timestamps = params.timestamps.unwrap_or(false);
    let slot = answer_slot().await?;
    let tails = {
        let (dir, indexes) = (dir.clone(), indexes.clone());
        futures_util::stream::iter(indexes).then(move |index| {
            let dir = dir.clone();
            async move {
                let read = tokio::task::spawn_blocking(move || logs::tail_bytes(&dir, index, tail, per_replica)).await;
                let (bytes, cut_short) = match read {
                    Ok(Ok(read)) => read,
                    Ok(Err(error)) => {
                        (format!("[mend: cannot read the logs of replica {index}: {error}]\n").into_bytes(), false)
                    }
                    Err(_) => (format!("[mend: cannot read the logs of replica {index}]\n").into_bytes(), false),
                };
                let mut chunk = Vec::with_capacity(bytes.len() + 128);
                if cut_short {
                    chunk.extend_from_slice(
                        format!(
                            "[mend: earlier lines left out: at most {per_replica} bytes per replica in one answer]\n"
                        )
                        .as_bytes(),
                    );
                }
                present(&bytes, index, prefix, timestamps, &mut chunk);
                Ok::<_, std::io::Error>(bytes::Bytes::from(chunk))
            }
        })
    };
    // The slot is held until the tails are sent (or the client goes away).
    let tails = tails.map(move |chunk| {
        let _slot = &slot;
        chunk
    });
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))];
    if !params.follow.unwrap_or(false) {
        return Ok((content_type, Body::from_stream(tails)).into_response());
    }
    let closing = state.closing.clone();
    let follow = futures_util::stream::unfold(
        (cursors, HashMap::<u32, Lines>::new(), closing),
        move |(mut cursors, mut carries, mut closing)| {
            let dir = dir.clone();
            let indexes = indexes.clone();
            async move {
                loop {
                    // Read once more after the API begins to close (the last lines of the stopped replicas),
                    // then end.
                    let last_round = *closing.borrow();
                    let mut chunk = Vec::new();
                    for &index in &indexes {
                        let cursor = cursors.get(&index).copied().unwrap_or_default();
                        let Ok((bytes, next)) = logs::read_from(&dir, index, cursor) else { continue };
                        cursors.insert(index, next);
                        if bytes.is_empty() {
                            continue;
                        }
                        carries
                            .entry(index)
                            .or_default()
                            .push(&bytes, |line| present(line, index, prefix, timestamps, &mut chunk));
                    }
                    if !chunk.is_empty() {
                        return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), (cursors, carries, closing)));
                    }
                    if last_round {
                        return None;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = closing.wait_for(|closing| *closing) => {}
                    }
                }
            }
        },
    );
    let stream = tails.chain(follow);
    Ok((content_type, Body::from_stream(stream)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_and_durations_back_from_now_and_refuses_bare_numbers() {
        let now = Timestamp::from_millis(1_000_000);
        assert_eq!(parse_since("5m", now).ok(), Some(Timestamp::from_millis(700_000)));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now).ok(), Some(Timestamp::from_millis(1000)));
        let bare = parse_since("42", now).expect_err("a bare number");
        assert_eq!(bare.0, StatusCode::BAD_REQUEST);
        assert!(bare.1.starts_with("invalid since \"42\": a number needs a unit: \"42s\""), "{}", bare.1);
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn hosts_that_cannot_be_rebound_are_safe() {
        for host in ["127.0.0.1:7070", "localhost:7070", "[::1]:7070", "10.0.0.5", "LOCALHOST"] {
            assert!(safe_host(host), "{host}");
        }
        for host in ["evil.example:7070", "evil.example", "localhost.evil.example"] {
            assert!(!safe_host(host), "{host}");
        }
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
