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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A webhook on loopback that answers its n-th request with `statuses[n]` (none: never answers) and
    /// keeps the bodies it received.
    async fn webhook(statuses: Vec<Option<u16>>) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let port = listener.local_addr().expect("bound").port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        tokio::spawn(async move {
            for status in statuses {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                // Head, then as many body bytes as Content-Length says.
                let body = loop {
                    let Ok(n) = stream.read(&mut buffer).await else { break String::new() };
                    if n == 0 {
                        break String::new();
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                    let length = head
                        .lines()
                        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break body.to_owned();
                    }
                };
                seen.lock().expect("not poisoned").push(body);
                match status {
                    Some(status) => {
                        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                        let _ = stream.write_all(answer.as_bytes()).await;
                    }
                    // Holds the connection open without answering, until the client gives up.
                    None => {
                        let _ = stream.read(&mut buffer).await;
                    }
                }
            }
        });
        (port, bodies)
    }

    fn target(port: u16, attempts: u32, timeout: Duration) -> NotifyTarget {
        let url = mend_config::HttpTarget::parse(&format!("http://127.0.0.1:{port}/hooks/mend")).expect("valid url");
        NotifyTarget { name: "ops".into(), url, timeout, attempts }
    }

    #[tokio::test]
    async fn a_failing_webhook_is_retried_until_it_takes_the_notification() {
        let (port, bodies) = webhook(vec![Some(503), Some(500), Some(200)]).await;
        let (ok, message, answer) =
            post(&target(port, 3, Duration::from_secs(5)), Bytes::from_static(b"{\"incident\":7}")).await;
        assert_eq!((ok, message.as_str(), answer.as_str()), (true, "notified ops (HTTP 200, attempt 3)", "ok"));
        assert_eq!(*bodies.lock().expect("not poisoned"), vec!["{\"incident\":7}"; 3]);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_a_client_error_is_not_repeated() {
        let (port, bodies) = webhook(vec![Some(503), Some(503), Some(200)]).await;
        let (ok, message, _) = post(&target(port, 2, Duration::from_secs(5)), Bytes::from_static(b"{}")).await;
        assert_eq!((ok, message.as_str()), (false, "cannot notify ops after 2 attempts: HTTP 503"));
        assert_eq!(bodies.lock().expect("not poisoned").len(), 2);

        let (port, bodies) = webhook(vec![Some(400), Some(200)]).await;
        let (ok, message, _) = post(&target(port, 3, Duration::from_secs(5)), Bytes::from_static(b"{}")).await;
        assert_eq!((ok, message.as_str()), (false, "ops refused the notification: HTTP 400"));
        assert_eq!(bodies.lock().expect("not poisoned").len(), 1);
    }

    #[tokio::test]
    async fn a_webhook_that_never_answers_or_is_not_there_costs_attempts_times_its_timeout() {
        let (port, bodies) = webhook(vec![None, None]).await;
        let (ok, message, _) = post(&target(port, 2, Duration::from_millis(300)), Bytes::from_static(b"{}")).await;
        assert_eq!((ok, message.as_str()), (false, "cannot notify ops after 2 attempts: timed out after 0.3s"));
        assert_eq!(bodies.lock().expect("not poisoned").len(), 2);

        // A port nobody listens on: refused at once, each attempt.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("bound").port();
        let (ok, message, _) = post(&target(closed, 2, Duration::from_secs(5)), Bytes::from_static(b"{}")).await;
        assert!(
            !ok && message.starts_with("cannot notify ops after 2 attempts: cannot connect to 127.0.0.1:"),
            "{message}"
        );
    }
}
