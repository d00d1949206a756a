//! The API's listener: HTTP/1.1 connections with a bounded cost whoever opens them.
//!
//! `axum::serve` sets no timer, so a partial request line, a header sent a byte a second or an idle
//! keep-alive connection stayed open for ever: 300 of them used up mend's file descriptors, and then its
//! own probes failed (issue 20). Here every connection has a deadline for its request head (which hyper
//! also applies to a keep-alive connection waiting for its next request: the idle timeout), a request
//! body must arrive within a deadline too ([`read_body_within`]), and at most
//! [`ServeLimits::max_connections`] are open at once: past that, mend stops accepting and the kernel
//! queues the rest in the listen backlog, where they cost mend no file descriptor.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::routes::ApiError;

/// What one connection to the API may cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a client has to send a request's head (request line and headers), counted from the
    /// connection's start or, on a keep-alive connection, from the end of the previous answer.
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's body, once its head has arrived.
    pub body_read_timeout: Duration,
}

impl ServeLimits {
    /// The limits for a process that may open `fd_limit` files (`RLIMIT_NOFILE`): a quarter of them at
    /// most for API connections (16 to 512), so that probes, scrapes, proxies, log files and the store
    /// keep theirs.
    pub fn for_fd_limit(fd_limit: u64) -> ServeLimits {
        let max_connections = usize::try_from(fd_limit / 4).unwrap_or(usize::MAX).clamp(16, 512);
        ServeLimits {
            max_connections,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Largest request body the API reads (the Alertmanager webhook's and the query forms' included).
pub const MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

/// Serves `router` on `listener` within `limits` until `shutdown` completes, then lets the open
/// connections finish their current request (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(limits.body_read_timeout, read_body_within));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(64 * 1024);
    let mut shutdown = std::pin::pin!(shutdown);
    // Whether the limit was reached and said so, until a connection is accepted without waiting again.
    let mut full = false;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                full = false;
                slot
            }
            Err(_) => {
                if !full {
                    full = true;
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "the API has as many connections as it allows: new ones wait in the listen backlog"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors (EMFILE, ENFILE) or memory: wait a little rather than spin;
                // the connection stays in the backlog.
                tracing::error!(%error, "the API cannot accept a connection");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A connection ends with an error when its client goes away or is too slow: nothing to report.
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Reads a request's body within `timeout` (and [`MAX_REQUEST_BODY_BYTES`]) before the handler runs:
/// a body sent a byte at a time cannot hold a connection and its handler for ever. Every body the API
/// takes is small (JSON, forms), so holding it in memory costs little.
async fn read_body_within(
    axum::extract::State(timeout): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    use http_body_util::BodyExt;
    let (parts, body) = request.into_parts();
    if axum::body::HttpBody::is_end_stream(&body) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let limited = http_body_util::Limited::new(body, MAX_REQUEST_BODY_BYTES);
    let bytes = match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_REQUEST_BODY_BYTES} bytes"),
            )
            .into_response();
        }
        Ok(Err(error)) => {
            return ApiError(StatusCode::BAD_REQUEST, format!("cannot read the request body: {error}")).into_response();
        }
        Err(_) => {
            return ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {}s", timeout.as_secs()),
            )
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}
