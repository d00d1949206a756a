//! `GET /api/v1/fleet`: the fleet as this host sees it (hosts, their services and incidents, the
//! leader, whether etcd is reachable). 404 when this mend runs without `[fleet]`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::routes::{ApiError, ApiState};

/// The fleet's view, as JSON (`mend_fleet::FleetView`: the fleet crate owns its wire shape, the same
/// it publishes to etcd); None without `[fleet]`.
pub type FleetSource = std::sync::Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

pub(crate) async fn view(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    match &state.fleet {
        Some(fleet) => Ok(Json(fleet())),
        None => {
            Err(ApiError(StatusCode::NOT_FOUND, "this mend is not in a fleet (no [fleet] in its config)".to_owned()))
        }
    }
}
