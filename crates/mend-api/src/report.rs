//! The post-incident report through the API: `GET /api/v1/incidents/{id}/report?format=md|html`,
//! built by the binary ([`ReportApi`]), which holds the series store the charts are drawn from.
//!
//! The HTML is served with a content security policy that allows no script and no network at all: the
//! report is escaped where it is built, and the policy holds even if a bug let data through.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mend_types::IncidentId;
use serde::Deserialize;

use crate::healing::Pending;
use crate::routes::{ApiError, ApiState, bad_request, query_error};

/// What a report's HTML may load: nothing but its own inline styles and inline SVG.
pub const REPORT_CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

/// A report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Markdown that pastes into a ticket (no charts).
    Markdown,
    /// One self-contained HTML page with SVG charts.
    Html,
}

impl ReportFormat {
    /// The format called `name` (`md`, `markdown` or `html`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "md" | "markdown" => Some(Self::Markdown),
            "html" => Some(Self::Html),
            _ => None,
        }
    }

    /// The media type it is served as.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Markdown => "text/markdown; charset=utf-8",
            Self::Html => "text/html; charset=utf-8",
        }
    }
}

/// Why a report could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// No incident has that id.
    NotFound(IncidentId),
    /// The store could not be read, or the builder failed.
    Failed(String),
}

/// The report builder, as the API uses it.
pub trait ReportApi: Send + Sync {
    /// The report of incident `id` in `format`.
    fn report(&self, id: IncidentId, format: ReportFormat) -> Pending<Result<String, ReportError>>;
}

/// No reports (tests that do not need them).
#[derive(Debug, Default)]
pub struct NoReports;

impl ReportApi for NoReports {
    fn report(&self, _id: IncidentId, _format: ReportFormat) -> Pending<Result<String, ReportError>> {
        Box::pin(async { Err(ReportError::Failed("reports are not available".to_owned())) })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportParams {
    format: Option<String>,
}

/// `GET /api/v1/incidents/{id}/report?format=md|html` (Markdown when no format is given).
pub(crate) async fn report(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<ReportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = query.map_err(query_error)?;
    let id: u64 = id.parse().map_err(|_| bad_request(format!("invalid incident id {id:?}: a positive number")))?;
    let format = match params.format.as_deref() {
        None => ReportFormat::Markdown,
        Some(name) => {
            ReportFormat::parse(name).ok_or_else(|| bad_request(format!("invalid format {name:?}: md or html")))?
        }
    };
    let body = state.reports.report(IncidentId(id), format).await.map_err(|error| match error {
        ReportError::NotFound(id) => ApiError(StatusCode::NOT_FOUND, format!("no incident {id}")),
        ReportError::Failed(message) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, message),
    })?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if format == ReportFormat::Html {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(REPORT_CONTENT_SECURITY_POLICY));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name() {
        assert_eq!(ReportFormat::parse("md"), Some(ReportFormat::Markdown));
        assert_eq!(ReportFormat::parse("markdown"), Some(ReportFormat::Markdown));
        assert_eq!(ReportFormat::parse("html"), Some(ReportFormat::Html));
        assert_eq!(ReportFormat::parse("pdf"), None);
        assert!(!REPORT_CONTENT_SECURITY_POLICY.contains("script"));
    }
}
