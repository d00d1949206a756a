//! The request path: faults, limits, header rewriting, body buffering, then attempts on backends with
//! outlier bookkeeping and budgeted retries, each to a different backend.

use std::error::Error as StdError;
use std::fmt;
use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::backend::{BackendRef, InFlight};
use crate::balancer::{MAX_TRIED, PickParams, Tried};
use crate::body::{BodyFailure, ProxyBody, RequestBody, StreamBody};
use crate::clock::Nanos;
use crate::config::{RetryPolicy, UpstreamProtocol};
use crate::headers::{GRPC_STATUS, IDEMPOTENCY_KEY, X_MEND_CALLER, requested_upgrade, strip_hop_by_hop};
use crate::proxy::Shared;
use crate::server::{ActivityGuard, ConnState};
use crate::stats::{EjectionReason, GRPC_UNAVAILABLE, GRPC_UNKNOWN, LocalReason, Outcome, grpc_code};
use crate::upstream::{Call, CallError, Conn, RequestHead, UpstreamBody};
use crate::upstream_h2;

/// Most attempts per request (`retry.max_attempts` is checked against it).
pub(crate) const MAX_ATTEMPTS: usize = MAX_TRIED;

/// The service's error: the connection is closed without a response (an injected abort).
#[derive(Debug)]
pub(crate) struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection aborted by an injected fault")
    }
}

impl StdError for Aborted {}

/// A request whose response headers came from a backend; finished when the response body ends.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// Keeps the client connection counted busy until the response ends; leads to the proxy's state.
    activity: ActivityGuard,
    /// Ends the backend's in-flight count when the exchange is finished or dropped.
    in_flight: InFlight,
    status: u16,
    start: Nanos,
    attempt_start: Nanos,
    caller: Option<usize>,
    grpc: GrpcStatus,
    /// Whether outlier detection waits for the body: a response that is not a failure by its status is
    /// judged when it ends, so a backend that answers 200 and then cuts every body off is ejected (judged
    /// a success at its headers, each such response would reset its run of failures).
    judge_at_end: bool,
}

/// How a response that reached the client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// The body ended as its framing said, or was handed over (an upgraded connection).
    Complete,
    /// The client went away before the end: no fault of the backend's.
    ClientGone,
    /// The backend cut the body off: it closed or reset the connection.
    Broken,
    /// The backend sent nothing for the read timeout and the proxy cut the body off. Not judged: a quiet
    /// stream (server-sent events, a long poll) may be what the backend means to send, and a hung
    /// backend is ejected by its next requests' timeouts.
    Stalled,
}

impl Exchange {
    /// Whether the response's trailers are worth a look (a gRPC response whose status is not known yet).
    pub(crate) fn wants_trailers(&self) -> bool {
        self.grpc == GrpcStatus::Pending
    }

    /// Notes the gRPC status in a response's trailers.
    pub(crate) fn observe_trailers(&mut self, trailers: &HeaderMap) {
        self.grpc =
            GrpcStatus::Known(trailers.get(&GRPC_STATUS).map_or(GRPC_UNKNOWN, |value| grpc_code(value.as_bytes())));
    }

    /// Counts the request, ends the backend's in-flight count and returns a cleanly finished connection
    /// to the pool.
    pub(crate) fn finish(self, end: End, conn: Option<Box<Conn>>) {
        let shared = self.activity.shared();
        let now = self.activity.now();
        let outcome = Outcome::Status(self.status);
        let backend = self.in_flight.backend();
        if self.judge_at_end {
            match end {
                // gRPC's "unavailable" in the trailers is held against the backend as in a trailers-only
                // answer.
                End::Complete if self.grpc == GrpcStatus::Known(GRPC_UNAVAILABLE) => {
                    judge(shared, backend, Outcome::Status(503));
                }
                End::Complete => judge(shared, backend, outcome),
                End::Broken => judge_failure(shared, backend, Some(EjectionReason::BrokenBody)),
                End::ClientGone | End::Stalled => {}
            }
        }
        backend.attempts.record(outcome, now.since(self.attempt_start));
        let latency = now.since(self.start);
        shared.metrics.releases[backend.id.release.idx()].record(outcome, latency);
        shared.metrics.release_latencies[backend.id.release.idx()].record(latency);
        if let Some(slot) = self.caller {
            shared.metrics.callers.counters(slot).record(outcome, latency);
        }
        let grpc = match self.grpc {
            GrpcStatus::NotGrpc => None,
            GrpcStatus::Pending => Some(GRPC_UNKNOWN),
            GrpcStatus::Known(code) => Some(code),
        };
        if let Some(code) = grpc {
            backend.attempts.record_grpc(code);
            shared.metrics.releases[backend.id.release.idx()].record_grpc(code);
            if let Some(slot) = self.caller {
                shared.metrics.callers.counters(slot).record_grpc(code);
            }
        }
        if end == End::Complete
            && let Some(conn) = conn
        {
            backend.checkin(conn, now, shared.config.max_idle_per_backend);
        }
        if shared.n_waiting.load(Relaxed) > 0 {
            shared.room.notify_one();
        }
    }
}

/// The request head as parsed, rewritten once; every attempt encodes it from here, so a retry needs no
/// copy of it.
#[derive(Debug)]
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// How an attempt ended without a response.
pub(crate) enum AttemptError {
    /// No connection (refused, unreachable); the body comes back unsent.
    Connect(RequestBody),
    /// The connection was not accepted within the connect timeout: a full accept queue (the kernel
    /// drops the SYN). The body comes back unsent.
    Busy(RequestBody),
    /// The connection failed before response headers; the body comes back if no byte was written.
    /// `answered`: some of a response had arrived (or a malformed one), so the backend did handle the
    /// request.
    Reset { unsent: Option<RequestBody>, answered: bool },
    /// Our own request body failed (too large, or the client's stream broke): not the backend's fault.
    Body(BodyFailure),
}

/// How waiting for an attempt ended. Lives on the stack for one attempt, so the size difference between
/// variants costs nothing worth a box.
#[expect(clippy::large_enum_variant)]
enum Step {
    Done(Result<Answer, AttemptError>),
    /// The attempt timed out and a retry on this backend is possible.
    Abandon(BackendRef),
    /// No response within the request timeout.
    TimedOut,
}

/// Per-request context for the local answers.
struct Ctx<'a> {
    shared: &'a Shared,
    start: Nanos,
    caller: Option<usize>,
}

impl Ctx<'_> {
    fn local(
        &self,
        status: StatusCode,
        reason: LocalReason,
        body: &'static [u8],
        activity: ActivityGuard,
    ) -> Response<ProxyBody> {
        let latency = self.shared.clock.now().since(self.start);
        self.shared.metrics.local.record_local(status.as_u16(), reason, latency);
        self.answer(status, body, activity, latency)
    }

    /// The 503 a partition answers: counted on the caller's edge, not in the service's responses.
    fn partitioned(&self, activity: ActivityGuard) -> Response<ProxyBody> {
        let latency = self.shared.clock.now().since(self.start);
        self.shared.metrics.local.record_partitioned();
        self.answer(StatusCode::SERVICE_UNAVAILABLE, b"partitioned\n", activity, latency)
    }

    /// A response the proxy makes itself, counted on the caller's edge.
    fn answer(
        &self,
        status: StatusCode,
        body: &'static [u8],
        activity: ActivityGuard,
        latency: Duration,
    ) -> Response<ProxyBody> {
        if let Some(slot) = self.caller {
            self.shared.metrics.callers.counters(slot).record(Outcome::Status(status.as_u16()), latency);
        }
        let mut response = Response::new(ProxyBody::local(body, Some(activity)));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        response
    }
}

/// Serves one request from a client connection.
pub(crate) async fn handle(conn: Arc<ConnState>, request: Request<Incoming>) -> Result<Response<ProxyBody>, Aborted> {
    let shared = &conn.shared;
    let activity = ActivityGuard::new(conn.clone());
    let start = conn.now();
    let caller = request.headers().get(&X_MEND_CALLER).map(|value| shared.metrics.callers.slot(value.as_bytes()));
    let ctx = Ctx { shared, start, caller };
    let cfg = &shared.config;

    // A partition refuses the caller's requests (503, counted against the caller's edge only: the
    // service never saw them, and its own error ratio must not blame it), other callers pass.
    if shared.faults.partitioned(request.headers().get(&X_MEND_CALLER).map(|value| value.as_bytes()), start) {
        return Ok(ctx.partitioned(activity));
    }

    let faults = shared.faults.decide(start);
    if let Some(delay) = faults.delay {
        tokio::time::sleep(delay).await;
    }
    if faults.abort {
        shared.metrics.local.record_abort(shared.clock.now().since(start));
        return Err(Aborted);
    }
    if let Some(status) = faults.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Ok(ctx.local(status, LocalReason::Injected, b"injected fault\n", activity));
    }
    if request.method() == Method::CONNECT {
        return Ok(ctx.local(
            StatusCode::NOT_IMPLEMENTED,
            LocalReason::Refused,
            b"CONNECT is not supported\n",
            activity,
        ));
    }
    // RFC 9112 §3.2: an HTTP/1.1 request names its host (in Host, or in an absolute-form target).
    if request.version() == Version::HTTP_11
        && request.uri().authority().is_none()
        && !request.headers().contains_key(header::HOST)
    {
        return Ok(ctx.local(StatusCode::BAD_REQUEST, LocalReason::Refused, b"missing Host header\n", activity));
    }
    // RFC 9112 §3.2: a request with more than one Host is answered 400 (two hosts could route and be
    // read differently along the way).
    let mut hosts = request.headers().get_all(header::HOST).iter();
    if hosts.next().is_some() && hosts.next().is_some() {
        return Ok(ctx.local(StatusCode::BAD_REQUEST, LocalReason::Refused, b"more than one Host header\n", activity));
    }
    if request.body().size_hint().exact().is_some_and(|length| length > cfg.max_request_body_bytes) {
        return Ok(ctx.local(
            StatusCode::PAYLOAD_TOO_LARGE,
            LocalReason::Refused,
            b"request body too large\n",
            activity,
        ));
    }

    let (mut parts, body) = request.into_parts();
    let version = parts.version;
    // A protocol switch (WebSocket, say) is asked for by a request without a body; the client's side of
    // the tunnel comes from hyper once the 101 went out.
    let upgrade = if body.is_end_stream() && parts.version == Version::HTTP_11 {
        requested_upgrade(&parts.headers)
            .and_then(|protocol| parts.extensions.remove::<OnUpgrade>().map(|on_upgrade| (protocol, on_upgrade)))
    } else {
        None
    };
    let (upgrade, mut on_upgrade) = upgrade.unzip();
    let mut head = Head { method: parts.method, uri: parts.uri, headers: parts.headers };
    prepare_head(&mut head);
    let body = match read_body(body, cfg.retry_buffer_bytes, cfg.max_request_body_bytes).await {
        Ok(body) => body,
        Err(failure) => return Ok(body_error_response(&ctx, failure, activity)),
    };
    shared.budget.deposit();

    let idempotent = is_idempotent(&head.method) || head.headers.contains_key(&IDEMPOTENCY_KEY);
    // May go again after the backend processed it (a 5xx answer, a timeout): a method the policy names
    // (the idempotent ones by default), or an `Idempotency-Key`.
    let repeatable = cfg.retry.retry_methods.contains(&head.method) || head.headers.contains_key(&IDEMPOTENCY_KEY);
    let retry_on = cfg.retry.retry_on;
    let may_retry = cfg.retry.max_attempts > 1;
    let template = if may_retry { body.replay() } else { None };
    let mut tried = Tried::default();
    let params = |now| PickParams {
        policy: cfg.load_balancing,
        slow_start: cfg.slow_start,
        panic_threshold: cfg.outlier.panic_threshold_percent,
        now,
    };
    let (pool_idx, first) = {
        let routes = shared.routes.load();
        let pool_idx = routes.choose_pool(&head.headers);
        (pool_idx, routes.pick(pool_idx, &tried, params(start)).cloned())
    };
    let Some(mut backend) = first else {
        return Ok(ctx.local(
            StatusCode::SERVICE_UNAVAILABLE,
            LocalReason::NoBackend,
            b"no backend available\n",
            activity,
        ));
    };
    let untried = |tried: &Tried| shared.routes.load().pick(pool_idx, tried, params(shared.clock.now())).cloned();
    let spend = || {
        let granted = shared.budget.try_withdraw(shared.clock.now());
        if !granted {
            shared.metrics.retries_denied.fetch_add(1, Relaxed);
        }
        granted
    };
    let next_backend = |tried: &Tried| untried(tried).filter(|_| spend());
    let deadline = start.saturating_add(cfg.request_timeout);
    // After an attempt the backend did not process: another backend it has not tried (within
    // `max_attempts` a round), else, when every one failed it without answering, a jittered back-off and
    // a new round, within its deadline and the retry budget. After a busy attempt the request reached
    // nobody: going on is waiting for room rather than a retry, and costs the budget nothing (see
    // `Failed::Busy`).
    let plan = |tried: &Tried, retry_possible: bool, failed: Failed, n_backoffs: u32| {
        let pay = || failed == Failed::Busy || spend();
        if retry_possible && let Some(next) = untried(tried) {
            return if pay() { Retry::Now(next) } else { Retry::No };
        }
        let wake = shared.clock.now().saturating_add(backoff(&cfg.retry, n_backoffs));
        if !may_retry || failed == Failed::Answered || wake >= deadline || !pay() {
            return Retry::No;
        }
        Retry::After(wake)
    };

    // A streamed request body's failure flag: an HTTP/2 response cut off by it is not the backend's doing.
    let request_failed = body.failure_flag();
    let mut pending = Some(body);
    // Attempts in all, and in the current round (a round ends when every backend it could go to failed
    // it without processing it; the next one starts after a back-off, see `RetryPolicy::backoff_base`).
    let mut attempt = 1;
    let mut round_attempts = 1;
    // The backends whose attempts it abandoned for not answering in time.
    let mut slow = Tried::default();
    let mut n_backoffs = 0u32;
    let response = loop {
        tried.push(&backend);
        let Some(body) = pending.take().or_else(|| template.as_ref().and_then(RequestBody::replay)) else {
            break finish_failed(&ctx, StatusCode::BAD_GATEWAY, activity);
        };
        let request_head = RequestHead {
            method: &head.method,
            uri: &head.uri,
            headers: &head.headers,
            forwarded: &conn.forwarded,
            backend_addr: backend.addr,
            upgrade: upgrade.as_ref(),
        };
        let attempt_start = if attempt == 1 { start } else { shared.clock.now() };
        if cfg.tracing.is_some() {
            crate::trace::note_attempt(backend.id, backend.addr, attempt_start.0);
        }
        if attempt > 1 {
            shared.metrics.retries.fetch_add(1, Relaxed);
            backend.retries.fetch_add(1, Relaxed);
        }
        let in_flight = backend.begin();
        let retry_possible = round_attempts < cfg.retry.max_attempts;
        let timeout_retry_possible = retry_possible && repeatable && template.is_some();
        let attempt_deadline = if timeout_retry_possible {
            // At least the configured timeout, and twice the slowest answer lately: a service with slow
            // endpoints keeps its requests where they are instead of doubling them (`slow.rs`).
            let patience = cfg.attempt_timeout.max(shared.slowest.get(attempt_start).saturating_mul(2));
            deadline.min(attempt_start.saturating_add(patience))
        } else {
            deadline
        };
        let step = {
            let mut exchange = pin!(dispatch(shared, &backend, request_head, body, idempotent, attempt_start));
            let step = tokio::select! {
                biased;
                result = &mut exchange => Step::Done(result),
                () = conn.deadline(attempt_deadline) => {
                    // Another backend it has not tried, else one it tried that turned it away without
                    // taking it (busy, say; not one that was slow to answer, which may be working on
                    // it): better than waiting on one that does not answer in time.
                    let elsewhere = || {
                        next_backend(&tried).or_else(|| {
                            let mut skip = slow.clone();
                            skip.push(&backend);
                            untried(&skip).filter(|_| spend())
                        })
                    };
                    match (attempt_deadline < deadline).then(elsewhere).flatten() {
                        Some(next) => Step::Abandon(next),
                        None => tokio::select! {
                            biased;
                            result = &mut exchange => Step::Done(result),
                            () = conn.deadline(deadline) => Step::TimedOut,
                        },
                    }
                }
            };
            conn.clear_deadline();
            step
        };
        let result = match step {
            Step::Done(result) => result,
            Step::Abandon(next) => {
                // The attempt's connection closed with its future; go on elsewhere.
                attempt_failed(shared, &backend, Outcome::Timeout, attempt_start);
                slow.push(&backend);
                backend = next;
                attempt += 1;
                round_attempts += 1;
                continue;
            }
            Step::TimedOut => {
                attempt_failed(shared, &backend, Outcome::Timeout, attempt_start);
                break ctx.local(StatusCode::GATEWAY_TIMEOUT, LocalReason::Timeout, b"upstream timed out\n", activity);
            }
        };
        // How the backend failed the attempt (refused, busy, or closed before a byte of response: then it
        // did not handle the request, and waiting for it is safe).
        let mut failed = Failed::Unprocessed;
        // A retry decided before the request's response was let go (a gRPC `UNAVAILABLE`).
        let mut decided = None;
        match result {
            Ok(answer) => {
                let answered = conn.now();
                shared.slowest.observe(answered.since(attempt_start), answered);
                let status = answer.status();
                let grpc = grpc_status(answer.headers());
                let unavailable = if grpc == GrpcStatus::Known(GRPC_UNAVAILABLE) {
                    // gRPC's "the service is unavailable, the request was not processed": retried as a
                    // refused connection is, for any method, and held against the backend as a 503.
                    judge(shared, &backend, Outcome::Status(503));
                    template
                        .is_some()
                        .then(|| plan(&tried, retry_possible, Failed::Unprocessed, n_backoffs))
                        .filter(|retry| !matches!(retry, Retry::No))
                } else {
                    if EjectionReason::of(Outcome::Status(status.as_u16())).is_some() {
                        judge(shared, &backend, Outcome::Status(status.as_u16()));
                    }
                    None
                };
                if let Some(retry) = unavailable {
                    backend.attempts.record(Outcome::Status(status.as_u16()), shared.clock.now().since(attempt_start));
                    backend.attempts.record_grpc(GRPC_UNAVAILABLE);
                    drop((answer, in_flight));
                    decided = Some(retry);
                } else {
                    // An answer the policy retries (a 5xx by default) goes to a backend this request has
                    // not tried, within the attempts and the budget; it was judged above, so outlier
                    // detection counts it against this backend all the same.
                    let retriable_status =
                        retry_on.status(status.as_u16()) && repeatable && template.is_some() && retry_possible;
                    if retriable_status && let Some(next) = next_backend(&tried) {
                        backend
                            .attempts
                            .record(Outcome::Status(status.as_u16()), shared.clock.now().since(attempt_start));
                        if status.is_server_error() {
                            shared.metrics.retried_5xx[backend.id.release.idx()].fetch_add(1, Relaxed);
                        }
                        drop((answer, in_flight));
                        backend = next;
                        attempt += 1;
                        round_attempts += 1;
                        continue;
                    }
                    let exchange = Exchange {
                        activity,
                        in_flight,
                        status: status.as_u16(),
                        start,
                        attempt_start,
                        caller,
                        grpc,
                        // Judged already at its head: a failure by its status, or gRPC's "unavailable".
                        judge_at_end: EjectionReason::of(Outcome::Status(status.as_u16())).is_none()
                            && grpc != GrpcStatus::Known(GRPC_UNAVAILABLE),
                    };
                    match answer {
                        Answer::Http1(response, call) => {
                            if status == StatusCode::SWITCHING_PROTOCOLS
                                && let Some(on_upgrade) = on_upgrade.take()
                            {
                                // Counted as an exchange that ended here: a tunnel is not a request in
                                // flight, so it neither holds a drain (it ends when the replica stops) nor
                                // skews least-request.
                                exchange.finish(End::Complete, None);
                                tokio::spawn(tunnel(on_upgrade, call));
                                break response.map(|()| ProxyBody::local(b"", None));
                            }
                            break response.map(|()| {
                                ProxyBody::upstream(UpstreamBody::new(call), exchange, cfg.upstream_read_timeout)
                            });
                        }
                        Answer::Http2(mut response) => {
                            if version != Version::HTTP_2 {
                                // hyper answers in the response's version; an HTTP/1.1 client gets 1.1.
                                *response.version_mut() = Version::HTTP_11;
                            }
                            break response.map(|body| {
                                ProxyBody::upstream_h2(
                                    body,
                                    exchange,
                                    cfg.upstream_read_timeout,
                                    request_failed.clone(),
                                )
                            });
                        }
                    }
                }
            }
            Err(AttemptError::Body(failure)) => {
                break body_error_response(&ctx, failure, activity);
            }
            Err(AttemptError::Connect(body)) => {
                attempt_failed(shared, &backend, Outcome::ConnectFailure, attempt_start);
                judge(shared, &backend, Outcome::ConnectFailure);
                if !retry_on.connect_failure {
                    break finish_failed(&ctx, StatusCode::BAD_GATEWAY, activity);
                }
                pending = Some(body);
            }
            Err(AttemptError::Busy(body)) => {
                // Neither a failure nor a success for outlier detection: a full accept queue says the
                // backend is at capacity, not that it is gone.
                attempt_failed(shared, &backend, Outcome::Busy, attempt_start);
                failed = Failed::Busy;
                pending = Some(body);
            }
            Err(AttemptError::Reset { unsent, answered }) => {
                if answered {
                    failed = Failed::Answered;
                }
                attempt_failed(shared, &backend, Outcome::Reset, attempt_start);
                judge(shared, &backend, Outcome::Reset);
                // Cut off after a byte of its answer (a head, part of one, or a short body not all
                // there): the backend processed the request, so only a request the policy may repeat goes
                // again, as after a 5xx or a timeout.
                if !retry_on.reset || (answered && !repeatable) {
                    break finish_failed(&ctx, StatusCode::BAD_GATEWAY, activity);
                }
                pending = unsent;
            }
        }
        // The attempt failed without a response: retry elsewhere if the request can be sent again.
        let replayable = pending.is_some() || template.is_some();
        if !replayable {
            break finish_failed(&ctx, StatusCode::BAD_GATEWAY, activity);
        }
        match decided.unwrap_or_else(|| plan(&tried, retry_possible, failed, n_backoffs)) {
            Retry::No => break finish_failed(&ctx, StatusCode::BAD_GATEWAY, activity),
            Retry::Now(next) => {
                backend = next;
                attempt += 1;
                round_attempts += 1;
            }
            Retry::After(wake) => {
                n_backoffs += 1;
                {
                    // Until a backend has room (a response ended) or the back-off runs out.
                    let room = shared.room.notified();
                    shared.n_waiting.fetch_add(1, Relaxed);
                    tokio::select! {
                        () = room => {}
                        () = conn.deadline(wake) => {}
                    }
                    shared.n_waiting.fetch_sub(1, Relaxed);
                    conn.clear_deadline();
                }
                tried = Tried::default();
                let Some(next) = untried(&tried) else {
                    break ctx.local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        LocalReason::NoBackend,
                        b"no backend available\n",
                        activity,
                    );
                };
                backend = next;
                attempt += 1;
                round_attempts = 1;
            }
        }
    };
    Ok(response)
}

/// How an attempt ended without a response the client gets, for what the request does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// The backend did not take the connection within the connect timeout: its accept queue is full
    /// (the kernel dropped the SYN). The request reached nobody, so going on (elsewhere, or after a
    /// back-off) is waiting for room, as a request queued in front of a busy backend waits, not a retry
    /// that adds load: the retry budget, which bounds the load retries add, is not charged. The request's
    /// deadline bounds the wait, and the back-off (or a response ending, `Shared::room`) paces it.
    Busy,
    /// The backend did not process the request: refused, closed before any byte of response, or a
    /// gRPC `UNAVAILABLE`.
    Unprocessed,
    /// Some of a response had arrived (or a malformed one): the backend handled the request. Only
    /// another backend may be tried, with no back-off round.
    Answered,
}

/// What a request does after an attempt failed without processing it.
enum Retry {
    /// Go to this backend, which it has not tried yet.
    Now(BackendRef),
    /// Every backend it could go to has just failed it: wait until then, and try them again.
    After(Nanos),
    /// Give up.
    No,
}

/// A response head, from an HTTP/1.1 or an HTTP/2 backend.
#[derive(Debug)]
enum Answer {
    /// The body is read from the call's connection.
    Http1(Response<()>, Call),
    /// The body comes from the HTTP/2 connection's task.
    Http2(Response<Incoming>),
}

impl Answer {
    fn status(&self) -> StatusCode {
        match self {
            Self::Http1(response, _) => response.status(),
            Self::Http2(response) => response.status(),
        }
    }

    fn headers(&self) -> &HeaderMap {
        match self {
            Self::Http1(response, _) => response.headers(),
            Self::Http2(response) => response.headers(),
        }
    }
}

/// One attempt on `backend` in the service's upstream protocol.
async fn dispatch(
    shared: &Shared,
    backend: &BackendRef,
    head: RequestHead<'_>,
    body: RequestBody,
    idempotent: bool,
    now: Nanos,
) -> Result<Answer, AttemptError> {
    match shared.config.upstream_protocol {
        UpstreamProtocol::Http1 => send(shared, backend, head, body, idempotent, now)
            .await
            .map(|(response, call)| Answer::Http1(response, call)),
        UpstreamProtocol::H2c => upstream_h2::send(shared, backend, head, body).await.map(Answer::Http2),
    }
}

/// What a response says of its gRPC status so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcStatus {
    /// Not a gRPC response.
    NotGrpc,
    /// A gRPC response whose status comes in its trailers.
    Pending,
    /// The status, from the trailers or a trailers-only response's headers.
    Known(u8),
}

/// The gRPC status a response head carries: by its `content-type` (`application/grpc`, `+proto` and the
/// like), with `grpc-status` in a trailers-only response.
fn grpc_status(headers: &HeaderMap) -> GrpcStatus {
    let is_grpc =
        headers.get(header::CONTENT_TYPE).is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        return GrpcStatus::NotGrpc;
    }
    headers.get(&GRPC_STATUS).map_or(GrpcStatus::Pending, |value| GrpcStatus::Known(grpc_code(value.as_bytes())))
}

/// Copies bytes both ways between the client and the backend after a protocol switch, until either side
/// closes.
async fn tunnel(on_upgrade: OnUpgrade, call: Call) {
    let (mut backend, early) = call.into_tunnel();
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(error = %error, "client connection did not switch protocols");
            return;
        }
    };
    let mut client = TokioIo::new(upgraded);
    // What the backend sent right after its 101 head, read along with it.
    if !early.is_empty()
        && let Err(error) = client.write_all(&early).await
    {
        tracing::debug!(error = %error, "tunnel to the client failed");
        return;
    }
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        tracing::debug!(error = %error, "tunnel ended with an error");
    }
}

fn finish_failed(ctx: &Ctx<'_>, status: StatusCode, activity: ActivityGuard) -> Response<ProxyBody> {
    ctx.local(status, LocalReason::BadGateway, b"upstream unavailable\n", activity)
}

fn body_error_response(ctx: &Ctx<'_>, failure: BodyFailure, activity: ActivityGuard) -> Response<ProxyBody> {
    match failure {
        BodyFailure::TooLarge => {
            ctx.local(StatusCode::PAYLOAD_TOO_LARGE, LocalReason::Refused, b"request body too large\n", activity)
        }
        BodyFailure::Client => {
            ctx.local(StatusCode::BAD_REQUEST, LocalReason::Refused, b"request body unreadable\n", activity)
        }
    }
}

/// How long to wait before the `n_backoffs`-th round of attempts: a random time between half and all
/// of `base × 2^n`, capped at `max` (jittered, so that requests that failed together do not come back
/// together).
fn backoff(policy: &RetryPolicy, n_backoffs: u32) -> Duration {
    let ceiling = policy.backoff_base.saturating_mul(1 << n_backoffs.min(16)).min(policy.backoff_max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(nanos / 2 + fastrand::u64(0..=nanos / 2))
}

/// Counts an attempt that ended without a response; the caller drops its in-flight slot.
fn attempt_failed(shared: &Shared, backend: &BackendRef, outcome: Outcome, attempt_start: Nanos) {
    backend.attempts.record(outcome, shared.clock.now().since(attempt_start));
    if outcome == Outcome::Timeout {
        judge(shared, backend, outcome);
    }
}

/// Feeds outlier detection with an attempt's outcome.
fn judge(shared: &Shared, backend: &BackendRef, outcome: Outcome) {
    judge_failure(shared, backend, EjectionReason::of(outcome));
}

/// Feeds outlier detection with a success (None) or a failure and its reason.
fn judge_failure(shared: &Shared, backend: &BackendRef, failure: Option<EjectionReason>) {
    if backend.record_health(failure.is_some(), shared.config.outlier.consecutive_failures)
        && let Some(reason) = failure
    {
        shared.try_eject(backend, reason);
    }
}

/// RFC 9110 §9.2.2 idempotent methods.
fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Rewrites the head for the backend: hop-by-hop headers out, absolute-form target to origin form (its
/// authority becomes Host). The forwarding headers are added as each attempt is encoded
/// ([`crate::headers::encode_request_headers`]), and a request without Host (HTTP/1.0) gets the
/// backend's address there, since HTTP/1.1 backends require one.
fn prepare_head(head: &mut Head) {
    strip_hop_by_hop(&mut head.headers);
    if let Some(authority) = head.uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            head.headers.insert(header::HOST, host);
        }
        let origin = head.uri.path_and_query().map_or("/", |path| path.as_str());
        head.uri = Uri::try_from(origin).unwrap_or_else(|_| Uri::from_static("/"));
    }
}

/// Reads the body into memory when it fits the retry buffer, else prepares to stream it.
async fn read_body(mut body: Incoming, buffer_limit: usize, max_bytes: u64) -> Result<RequestBody, BodyFailure> {
    if body.is_end_stream() {
        return Ok(RequestBody::Empty);
    }
    let hint = body.size_hint();
    if hint.exact().is_some_and(|length| length > buffer_limit as u64) || hint.lower() > buffer_limit as u64 {
        return Ok(RequestBody::Stream(StreamBody::new(None, body, 0, max_bytes)));
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    let mut seen = 0usize;
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(_)) => return Err(BodyFailure::Client),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers of a buffered request are not forwarded.
                Err(_) => continue,
            },
        };
        seen += data.len();
        if seen as u64 > max_bytes {
            return Err(BodyFailure::TooLarge);
        }
        match (&mut first, &mut joined) {
            (None, None) => first = Some(data),
            (Some(earlier), None) => {
                let mut buffer = BytesMut::with_capacity(seen.max(8 * 1024));
                buffer.extend_from_slice(earlier);
                buffer.extend_from_slice(&data);
                first = None;
                joined = Some(buffer);
            }
            (_, Some(buffer)) => buffer.extend_from_slice(&data),
        }
        if seen > buffer_limit {
            let prefix = joined.map(BytesMut::freeze).or(first);
            return Ok(RequestBody::Stream(StreamBody::new(prefix, body, seen as u64, max_bytes)));
        }
        if body.is_end_stream() {
            break;
        }
    }
    Ok(match joined.map(BytesMut::freeze).or(first) {
        Some(bytes) => RequestBody::Full(Some(bytes)),
        None => RequestBody::Empty,
    })
}

/// One attempt on `backend`: an idle pooled connection if one works, else a new one. The connection is
/// driven here, in the request's task, until the response head arrives.
async fn send(
    shared: &Shared,
    backend: &BackendRef,
    head: RequestHead<'_>,
    mut body: RequestBody,
    idempotent: bool,
    now: Nanos,
) -> Result<(Response<()>, Call), AttemptError> {
    let cfg = &shared.config;
    while let Some(conn) = backend.checkout(now, cfg.upstream_idle_timeout) {
        // A backend may close an idle connection just as it is reused (its keep-alive timeout), which
        // the idle check cannot see yet: the request goes out and the connection ends without a byte of
        // response. A request that is safe to repeat goes again on the next (or a new) connection to the
        // same backend, as hyper's and Go's clients do; that is not the backend failing.
        let spare = if idempotent { body.replay() } else { None };
        let mut call = Call::new(conn, head, body);
        match poll_fn(|cx| call.poll_response(cx)).await {
            Ok(response) => {
                poll_fn(|cx| call.poll_short_body(cx, SHORT_BODY_BYTES)).await.map_err(attempt_error)?;
                return Ok((response, call));
            }
            // Never written (the pooled connection had just closed): try the next one.
            Err(CallError::Unsent(unsent)) => body = unsent,
            Err(error) => match (error, spare) {
                (CallError::Closed, Some(spare)) => {
                    tracing::debug!(backend = %backend.id, "pooled connection closed as it was reused");
                    body = spare;
                }
                (error, _) => return Err(attempt_error(error)),
            },
        }
    }
    let connected =
        match tokio::time::timeout(cfg.connect_timeout_for(backend.addr), TcpStream::connect(backend.addr)).await {
            Ok(connected) => connected,
            // A full accept queue drops SYNs, and the kernel sends the next only after a second: the backend
            // is busy rather than gone. The caller goes elsewhere, or backs off and connects afresh (a new
            // SYN gets in as soon as the queue has room) instead of waiting for the retransmission.
            Err(_elapsed) => {
                tracing::debug!(backend = %backend.id, "connect timed out: accept queue full");
                return Err(AttemptError::Busy(body));
            }
        };
    let stream = match connected {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(backend = %backend.id, error = %error, "connect failed");
            return Err(AttemptError::Connect(body));
        }
    };
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(backend = %backend.id, error = %error, "cannot set TCP_NODELAY");
    }
    let mut call = Call::new(Conn::new(stream), head, body);
    let response = poll_fn(|cx| call.poll_response(cx)).await.map_err(attempt_error)?;
    poll_fn(|cx| call.poll_short_body(cx, SHORT_BODY_BYTES)).await.map_err(attempt_error)?;
    Ok((response, call))
}

/// Response bodies up to this size are read whole within the attempt (its timeout and retries) before
/// the response goes out, as nginx reads into its proxy buffers; larger ones stream as they come.
const SHORT_BODY_BYTES: u64 = 64 * 1024;

/// Tells our own body's failure from the backend's.
fn attempt_error(error: CallError) -> AttemptError {
    match error {
        CallError::Unsent(body) => AttemptError::Reset { unsent: Some(body), answered: false },
        CallError::Closed => AttemptError::Reset { unsent: None, answered: false },
        CallError::Reset => AttemptError::Reset { unsent: None, answered: true },
        CallError::Body(failure) => AttemptError::Body(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        let cases = [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::OPTIONS, true),
            (Method::PUT, true),
            (Method::DELETE, true),
            (Method::TRACE, true),
            (Method::POST, false),
            (Method::PATCH, false),
        ];
        for (method, expected) in cases {
            assert_eq!(is_idempotent(&method), expected, "{method}");
        }
    }

    #[test]
    fn absolute_form_targets_become_origin_form_with_their_host() {
        let mut head = Head {
            method: Method::GET,
            uri: Uri::from_static("http://example.test:8080/a/b?c=d"),
            headers: HeaderMap::new(),
        };
        prepare_head(&mut head);
        assert_eq!(head.uri, "/a/b?c=d");
        assert_eq!(head.headers.get(header::HOST).map(HeaderValue::as_bytes), Some(&b"example.test:8080"[..]));
    }
}
