//! `notify NAME` and escalations: POSTs the incident as JSON to a `[notify.NAME]` webhook over plain
//! HTTP (https targets go through a hook running curl), each attempt bounded by the target's timeout,
//! retried with back-off up to its attempts.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Request;
use hyper_util::rt::TokioIo;
use mend_config::NotifyTarget;

/// Back-off before the second attempt; doubled after each, at most [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The answer kept for the journal.
const MAX_ANSWER_BYTES: usize = 1024;

async fn attempt(target: &NotifyTarget, body: &Bytes) -> Result<(u16, String), String> {
    let address = format!("{}:{}", target.url.host, target.url.port);
    let stream =
        tokio::net::TcpStream::connect(&address).await.map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("talking to {address}: {e}"))?;
    let connection = tokio::spawn(connection);
    let request = Request::post(&target.url.path_and_query)
        .header(hyper::header::HOST, &target.url.authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, concat!("mend/", env!("CARGO_PKG_VERSION")))
        .body(http_body_util::Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| format!("talking to {address}: {e}"))?;
    let status = response.status().as_u16();
    let answer = http_body_util::Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    connection.abort();
    let mut answer = String::from_utf8_lossy(&answer[..answer.len().min(MAX_ANSWER_BYTES)]).into_owned();
    answer.truncate(MAX_ANSWER_BYTES);
    Ok((status, answer))
}

/// POSTs `body` to `target`: (succeeded, what happened, the last answer).
pub(crate) async fn post(target: &NotifyTarget, body: Bytes) -> (bool, String, String) {
    let mut backoff = FIRST_BACKOFF;
    let mut last_error = String::new();
    for attempt_idx in 1..=target.attempts {
        match tokio::time::timeout(target.timeout, attempt(target, &body)).await {
            Ok(Ok((status, answer))) if (200..300).contains(&status) => {
                return (true, format!("notified {} (HTTP {status}, attempt {attempt_idx})", target.name), answer);
            }
            Ok(Ok((status, answer))) => {
                last_error = format!("HTTP {status}");
                // A client error will not get better by repeating it.
                if (400..500).contains(&status) && status != 408 && status != 429 {
                    return (false, format!("{} refused the notification: HTTP {status}", target.name), answer);
                }
            }
            Ok(Err(error)) => last_error = error,
            Err(_) => last_error = format!("timed out after {}s", target.timeout.as_secs_f64()),
        }
        if attempt_idx < target.attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    (false, format!("cannot notify {} after {} attempts: {last_error}", target.name, target.attempts), String::new())
}
