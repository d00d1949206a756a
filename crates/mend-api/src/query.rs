//! Prometheus-compatible read endpoints over the in-memory series store: `/api/v1/query`,
//! `/api/v1/query_range` and `/api/v1/series`, in Prometheus's JSON shapes so that existing tools
//! (Grafana, promtool, scripts) can read them.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use mend_config::parse_duration;
use mend_query::{EvalOptions, Query, Storage, Value};
use mend_types::Timestamp;
use serde_json::{Map, json};

use crate::routes::ApiState;

/// A Prometheus-style error: `{"status": "error", "errorType": "bad_data", "error": "..."}`.
fn bad_data(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "status": "error", "errorType": "bad_data", "error": message.into() })))
        .into_response()
}

fn success(data: serde_json::Value) -> Response {
    Json(json!({ "status": "success", "data": data })).into_response()
}

/// Decodes `application/x-www-form-urlencoded` text.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        match bytes[idx] {
            b'+' => out.push(b' '),
            b'%' if idx + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[idx + 1..idx + 3]).unwrap_or("zz"), 16) {
                    Ok(byte) => {
                        out.push(byte);
                        idx += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        idx += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string's parameters, repeated keys kept (`match[]` may repeat).
fn params(raw: Option<&str>) -> Vec<(String, String)> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A time as Prometheus takes it: Unix seconds (with a fraction) or RFC 3339.
fn parse_time(text: &str, name: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0).round() as i64);
    }
    if !text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && let Some(at) = Timestamp::parse(text)
    {
        return Ok(at.as_millis());
    }
    Err(format!("invalid parameter {name:?}: cannot parse {text:?} to a valid timestamp"))
}

/// A step as Prometheus takes it: seconds (with a fraction) or a duration (`15s`).
fn parse_step(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
        && secs > 0.0
    {
        return Ok((secs * 1000.0).round() as i64);
    }
    match parse_duration(text) {
        Ok(step) if !step.is_zero() => Ok(step.as_millis() as i64),
        _ => Err(format!("invalid parameter \"step\": cannot parse {text:?} to a valid duration")),
    }
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

fn metric(labels: &mend_query::Labels) -> serde_json::Value {
    let map: Map<String, serde_json::Value> = labels.iter().map(|(k, v)| (k.to_owned(), json!(v))).collect();
    serde_json::Value::Object(map)
}

fn point(t_ms: i64, value: f64) -> serde_json::Value {
    json!([t_ms as f64 / 1000.0, format_value(value)])
}

/// Most points one query may read, as Prometheus's `query.max-samples` (50 M there); about 160 MiB.
pub(crate) const MAX_QUERY_POINTS: usize = 10_000_000;

/// Most queries evaluated at once; more wait for a slot, up to [`QUERY_QUEUE_WAIT`]. Each runs on a
/// blocking thread (the daemon has four), so that the others stay free for the store and scrapes.
pub(crate) const MAX_CONCURRENT_QUERIES: usize = 2;
/// How long a query waits for a slot before it is refused with 503.
pub(crate) const QUERY_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// The query slots: one set per process, as there is one API.
static QUERY_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_QUERIES);

fn too_busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "error",
            "errorType": "unavailable",
            "error": format!(
                "{MAX_CONCURRENT_QUERIES} queries are running and none finished within {}s: try again later",
                QUERY_QUEUE_WAIT.as_secs()
            ),
        })),
    )
        .into_response()
}

/// Runs `work` (parsing included: compiling a query's regular expressions takes time) off the async
/// workers, at most [`MAX_CONCURRENT_QUERIES`] at once, on the store, taking the store's lock per
/// selector and refusing queries that would read more than [`MAX_QUERY_POINTS`]. `work`'s own error is a
/// `bad_data` message.
async fn with_store<T: Send + 'static>(
    state: &ApiState,
    work: impl FnOnce(&dyn Storage) -> Result<T, String> + Send + 'static,
) -> Result<T, Response> {
    let Ok(Ok(_slot)) = tokio::time::timeout(QUERY_QUEUE_WAIT, QUERY_SLOTS.acquire()).await else {
        return Err(too_busy());
    };
    let series = state.observe.series.clone();
    tokio::task::spawn_blocking(move || {
        let store = mend_observe::series::LockedStore::new(&series, MAX_QUERY_POINTS);
        let result = work(&store);
        if store.exceeded() {
            return Err(format!(
                "query processing would load more than {MAX_QUERY_POINTS} samples: narrow the selectors or the range"
            ));
        }
        result
    })
    .await
    .map_err(|_| bad_data("query task failed"))?
    .map_err(bad_data)
}

/// Largest form body accepted by the POST forms of the query endpoints.
const MAX_FORM_BYTES: usize = 1 << 20;

/// The parameters of a query request: the URL's query string, and for a POST (as Grafana sends by
/// default, and Prometheus accepts) its `application/x-www-form-urlencoded` body as well.
async fn request_params(request: Request) -> Result<Vec<(String, String)>, Response> {
    let mut params = params(request.uri().query());
    if request.method() != Method::POST {
        return Ok(params);
    }
    let form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("application/x-www-form-urlencoded"));
    if !form {
        return Err(bad_data("a POST query needs Content-Type: application/x-www-form-urlencoded"));
    }
    let body = match axum::body::to_bytes(request.into_body(), MAX_FORM_BYTES).await {
        Ok(body) => body,
        Err(_) => return Err(bad_data(format!("the form body is unreadable or larger than {MAX_FORM_BYTES} bytes"))),
    };
    params.extend(self::params(Some(&String::from_utf8_lossy(&body))));
    Ok(params)
}

/// `GET|POST /api/v1/query?query=...&time=...`.
pub(crate) async fn instant(State(state): State<ApiState>, request: Request) -> Response {
    let params = match request_params(request).await {
        Ok(params) => params,
        Err(response) => return response,
    };
    let Some(text) = param(&params, "query").map(str::to_owned) else {
        return bad_data("missing parameter \"query\"");
    };
    let at = match param(&params, "time") {
        Some(time) => match parse_time(time, "time") {
            Ok(at) => at,
            Err(message) => return bad_data(message),
        },
        None => state.clock.wall().as_millis(),
    };
    let result = with_store(&state, move |store| {
        let query = Query::parse(&text).map_err(|error| error.to_string())?;
        Ok(query.eval_instant(store, at, &EvalOptions::default()))
    })
    .await;
    match result {
        Err(response) => response,
        Ok(Err(error)) => bad_data(error.to_string()),
        Ok(Ok(Value::Scalar(value))) => success(json!({ "resultType": "scalar", "result": point(at, value) })),
        Ok(Ok(Value::String(text))) => success(json!({ "resultType": "string", "result": [at as f64 / 1000.0, text] })),
        Ok(Ok(Value::Vector(samples))) => success(json!({
            "resultType": "vector",
            "result": samples.iter().map(|s| json!({ "metric": metric(&s.labels), "value": point(at, s.value) })).collect::<Vec<_>>(),
        })),
        Ok(Ok(Value::Matrix(series))) => success(json!({
            "resultType": "matrix",
            "result": series.iter().map(|s| json!({
                "metric": metric(&s.labels),
                "values": s.points.iter().map(|&(t, v)| point(t, v)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
    }
}

/// `GET|POST /api/v1/query_range?query=...&start=...&end=...&step=...`.
pub(crate) async fn range(State(state): State<ApiState>, request: Request) -> Response {
    let params = match request_params(request).await {
        Ok(params) => params,
        Err(response) => return response,
    };
    let Some(text) = param(&params, "query").map(str::to_owned) else {
        return bad_data("missing parameter \"query\"");
    };
    let (Some(start), Some(end), Some(step)) = (param(&params, "start"), param(&params, "end"), param(&params, "step"))
    else {
        return bad_data("query_range needs \"start\", \"end\" and \"step\"");
    };
    let (start, end, step) = match (parse_time(start, "start"), parse_time(end, "end"), parse_step(step)) {
        (Ok(start), Ok(end), Ok(step)) => (start, end, step),
        (Err(message), _, _) | (_, Err(message), _) | (_, _, Err(message)) => return bad_data(message),
    };
    let result = with_store(&state, move |store| {
        let query = Query::parse(&text).map_err(|error| error.to_string())?;
        Ok(query.eval_range(store, start, end, step, &EvalOptions::default()))
    })
    .await;
    match result {
        Err(response) => response,
        Ok(Err(error)) => bad_data(error.to_string()),
        Ok(Ok(series)) => success(json!({
            "resultType": "matrix",
            "result": series.iter().map(|s| json!({
                "metric": metric(&s.labels),
                "values": s.points.iter().map(|&(t, v)| point(t, v)).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
    }
}

/// `GET|POST /api/v1/series?match[]=...&start=...&end=...` (`match=` is accepted too).
pub(crate) async fn series(State(state): State<ApiState>, request: Request) -> Response {
    let params = match request_params(request).await {
        Ok(params) => params,
        Err(response) => return response,
    };
    let selectors: Vec<String> =
        params.iter().filter(|(k, _)| k == "match[]" || k == "match").map(|(_, v)| v.clone()).collect();
    if selectors.is_empty() {
        return bad_data("no match[] parameter provided");
    }
    let now = state.clock.wall().as_millis();
    let start = match param(&params, "start").map(|t| parse_time(t, "start")).transpose() {
        Ok(start) => start.unwrap_or(i64::MIN / 2),
        Err(message) => return bad_data(message),
    };
    let end = match param(&params, "end").map(|t| parse_time(t, "end")).transpose() {
        Ok(end) => end.unwrap_or(now),
        Err(message) => return bad_data(message),
    };
    let result = with_store(&state, move |store| {
        let mut matcher_sets = Vec::new();
        for selector in &selectors {
            let query = Query::parse(selector).map_err(|error| error.to_string())?;
            let Some(plain) = query.plain_selector() else {
                return Err(format!("match[] must be a series selector, not {selector:?}"));
            };
            matcher_sets.push(plain.matchers().to_vec());
        }
        let mut seen = std::collections::BTreeSet::new();
        for matchers in &matcher_sets {
            for series in store.select(matchers, start, end) {
                seen.insert(series.labels);
            }
        }
        Ok(seen.iter().map(metric).collect::<Vec<_>>())
    })
    .await;
    match result {
        Ok(found) => success(json!(found)),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode_with_repeated_keys() {
        let parsed = params(Some("match%5B%5D=up%7Bjob%3D%22a%22%7D&match[]=x&query=a+b"));
        assert_eq!(
            parsed,
            [
                ("match[]".to_owned(), "up{job=\"a\"}".to_owned()),
                ("match[]".to_owned(), "x".to_owned()),
                ("query".to_owned(), "a b".to_owned())
            ]
        );
    }

    #[test]
    fn times_and_steps_parse_like_prometheus() {
        assert_eq!(parse_time("1700000000.5", "t").ok(), Some(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", "t").ok(), Some(1_700_000_000_000));
        assert!(parse_time("soon", "t").is_err());
        assert_eq!(parse_step("15s").ok(), Some(15_000));
        assert_eq!(parse_step("0.5").ok(), Some(500));
        assert!(parse_step("0").is_err());
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1.5), "1.5");
    }
}
