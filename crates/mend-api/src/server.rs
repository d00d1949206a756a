//! The API's listener: HTTP/1.1 connections with a bounded cost whoever opens them.
//!
//! `axum::serve` sets no timer, so a partial request line, a header sent a byte a second or an idle
//! keep-alive connection stayed open for ever: 300 of them used up mend's file descriptors, and then its
//! own probes failed (issue 20). Here every connection has a deadline for its request head (which hyper
//! also applies to a keep-alive connection waiting for its next request: the idle timeout), a request
//! body must arrive within a deadline too ([`read_body_within`]), and at most
//! [`ServeLimits::max_connections`] are open at once: past that, the oldest connection without a request
//! in progress is closed to make room, and if every one has a request in progress, the kernel queues
//! new ones in the listen backlog, where they cost mend no file descriptor.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
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
///
/// At the connection limit, the oldest connection that has no request in progress (idle between
/// requests, or still sending its request's head: what slow-loris clients hold) is closed to make room,
/// as nginx reuses idle keep-alive connections, so that a client with a whole request (the CLI, a probe
/// of `/healthz`) gets in at once; only when every connection is busy with a request does a new one wait
/// in the listen backlog.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(limits.body_read_timeout, read_body_within));
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let connections: Arc<Mutex<BTreeMap<u64, Tracked>>> = Arc::default();
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).max_buf_size(64 * 1024);
    let mut shutdown = std::pin::pin!(shutdown);
    // Whether the limit was reached and said so, until a connection is accepted without waiting again.
    let mut full = false;
    let mut next_id: u64 = 0;
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
                        "the API has as many connections as it allows: idle ones are closed to make room"
                    );
                }
                evict_oldest_idle(&connections);
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
        let id = next_id;
        next_id += 1;
        let tracked = Tracked::default();
        let service = Counted { inner: TowerToHyperService::new(router.clone()), in_flight: tracked.in_flight.clone() };
        let (evict, in_flight) = (tracked.evict.clone(), tracked.in_flight.clone());
        lock(&connections).insert(id, tracked);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let (connections, mut closing) = (connections.clone(), closing_rx.clone());
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            // A connection ends with an error when its client goes away or is too slow: nothing to report.
            tokio::select! {
                _ = connection.as_mut() => {}
                () = evict.notified() => {
                    // No request in progress: closing the socket loses nothing (hyper's graceful shutdown
                    // would wait for a partial head until its deadline). A request that began meanwhile
                    // is finished first.
                    if in_flight.load(Ordering::SeqCst) > 0 {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
                () = async { let _ = closing.wait_for(|closing| *closing).await; } => {
                    if in_flight.load(Ordering::SeqCst) > 0 {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            }
            lock(&connections).remove(&id);
            drop(slot);
        });
    }
    drop(listener);
    // Every connection finishes its current request and closes; all slots back means all are gone.
    let _ = closing_tx.send(true);
    let _ = slots.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX)).await;
    Ok(())
}

/// One open connection: how many of its requests are in progress (answer not yet sent in full), and how
/// to close it.
#[derive(Default)]
struct Tracked {
    in_flight: Arc<AtomicUsize>,
    evict: Arc<tokio::sync::Notify>,
}

fn lock(connections: &Mutex<BTreeMap<u64, Tracked>>) -> std::sync::MutexGuard<'_, BTreeMap<u64, Tracked>> {
    connections.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Closes the oldest connection with no request in progress, if any.
fn evict_oldest_idle(connections: &Mutex<BTreeMap<u64, Tracked>>) {
    let mut connections = lock(connections);
    let idle = connections.iter().find(|(_, tracked)| tracked.in_flight.load(Ordering::SeqCst) == 0).map(|(id, _)| *id);
    if let Some(tracked) = idle.and_then(|id| connections.remove(&id)) {
        // `notify_one` keeps the permit if the task is not waiting yet: it closes when it next looks.
        tracked.evict.notify_one();
    }
}

/// The router as a hyper service that counts a connection's requests in progress: from the moment the
/// head is parsed until the answer's body has been sent (or dropped).
struct Counted {
    inner: TowerToHyperService<Router>,
    in_flight: Arc<AtomicUsize>,
}

impl hyper::service::Service<Request<hyper::body::Incoming>> for Counted {
    type Response = axum::response::Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let guard = InFlight::new(self.in_flight.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Body::new(GuardedBody { inner: body, _guard: guard })))
        })
    }
}

/// Counts one request in progress while it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that keeps its request counted until it has been sent.
struct GuardedBody {
    inner: Body,
    _guard: InFlight,
}

impl hyper::body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
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
