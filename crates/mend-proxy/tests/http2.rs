//! HTTP/2: clients speaking h2c with prior knowledge (to HTTP/1.1 and to h2c backends), h2c backends
//! (one multiplexed connection each), trailers, and gRPC: `UNAVAILABLE` retried elsewhere, status codes
//! counted per release. A real gRPC client and server run in `crates/mend/tests/traffic.rs`.
#![allow(clippy::disallowed_methods)] // Tests wait in real time on real sockets.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mend_proxy::{Backend, GRPC_CODES, LoadBalancing, RouteTable, UpstreamProtocol};
use support::{Client, Mode, TestProxy, UpBody, Upstream, backend, channel_body, config, full, stable};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// An h2c server on 127.0.0.1:0. `/grpc` answers as a gRPC server would: `grpc-status` 14
/// (`UNAVAILABLE`, trailers-only) while `unavailable`, else a message and `grpc-status: 0` in trailers;
/// any other path answers 200 with the server's name and `x-trailer: 1` in trailers.
struct H2Upstream {
    name: &'static str,
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    _tasks: JoinSet<()>,
}

impl H2Upstream {
    async fn start(name: &'static str, unavailable: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        let (counted, accepted) = (requests.clone(), connections.clone());
        tasks.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                accepted.fetch_add(1, SeqCst);
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        counted.fetch_add(1, SeqCst);
                        answer(name, unavailable, request)
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { name, addr, requests, connections, _tasks: tasks }
    }

    fn backend(&self, index: u32) -> Backend {
        Backend { id: stable(index), addr: self.addr, weight: 1 }
    }
}

type H2Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    name: &'static str,
    unavailable: bool,
    request: Request<Incoming>,
) -> Result<Response<H2Body>, Infallible> {
    let grpc = request.uri().path() == "/grpc";
    let seen_host = request.uri().authority().map(|a| a.to_string()).unwrap_or_default();
    let forwarded_for = request.headers().get("x-forwarded-for").map(|v| v.to_str().unwrap_or("").to_owned());
    let _ = request.into_body().collect().await;
    let mut trailers = HeaderMap::new();
    let response = if grpc && unavailable {
        Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .header("x-upstream", name)
            .body(Full::new(Bytes::new()).boxed())
    } else {
        if grpc {
            trailers.insert("grpc-status", "0".parse().expect("value"));
        } else {
            trailers.insert("x-trailer", "1".parse().expect("value"));
        }
        let frames = vec![Ok::<_, Infallible>(Frame::data(Bytes::from(name))), Ok(Frame::trailers(trailers))];
        Response::builder()
            .header("content-type", if grpc { "application/grpc" } else { "text/plain" })
            .header("x-upstream", name)
            .header("x-seen-authority", seen_host)
            .header("x-seen-forwarded-for", forwarded_for.unwrap_or_default())
            .body(futures_stream(frames).boxed())
    };
    Ok(response.expect("response"))
}

/// A stream of frames, without pulling in a stream crate.
fn futures_stream(
    frames: Vec<Result<Frame<Bytes>, Infallible>>,
) -> impl hyper::body::Body<Data = Bytes, Error = Infallible> + Send + Sync + 'static {
    struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, Infallible>>);
    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            std::task::Poll::Ready(self.0.pop_front())
        }
    }
    Frames(frames.into())
}

/// What an HTTP/2 client got.
#[derive(Debug)]
struct H2Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
    trailers: Option<HeaderMap>,
}

/// An h2c client with prior knowledge on one connection to `addr`.
async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<UpBody> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

async fn h2_send(sender: &mut hyper::client::conn::http2::SendRequest<UpBody>, request: Request<UpBody>) -> H2Reply {
    sender.ready().await.expect("ready");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("answered in time")
        .expect("response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    H2Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    }
}

fn h2_get(addr: SocketAddr, path: &str) -> Request<UpBody> {
    Request::get(format!("http://svc.test:80{path}").replace(":80", &format!(":{}", addr.port())))
        .body(full(""))
        .expect("request")
}

fn grpc_call(addr: SocketAddr) -> Request<UpBody> {
    Request::post(format!("http://127.0.0.1:{}/grpc", addr.port()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(Bytes::from_static(b"\0\0\0\0\x01x")))
        .expect("request")
}

#[tokio::test]
async fn h2c_clients_with_prior_knowledge_are_served_by_http1_backends_many_streams_at_once() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let sender = h2_client(proxy.addr()).await;
    let mut calls = JoinSet::new();
    for idx in 0..20 {
        let mut sender = sender.clone();
        let addr = proxy.addr();
        calls.spawn(async move { h2_send(&mut sender, h2_get(addr, &format!("/n/{idx}"))).await });
    }
    while let Some(reply) = calls.join_next().await {
        let reply = reply.expect("call");
        assert_eq!((reply.status, reply.body.as_str()), (200, "a"), "{reply:?}");
        assert_eq!(reply.headers.get("x-upstream").map(|v| v.as_bytes()), Some(&b"a"[..]));
    }
    assert_eq!(upstream.count(), 20);
    let seen = upstream.last_seen();
    let host = seen.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(host, format!("svc.test:{}", proxy.addr().port()), "the :authority became Host");
    assert_eq!(seen.headers.get("x-forwarded-proto").map(|v| v.as_bytes()), Some(&b"http"[..]));
    assert_eq!(proxy.handle.stats().connections_accepted, 1, "one client connection carried every stream");
}

#[tokio::test]
async fn an_h2c_client_request_gets_its_own_attempt_timeout_and_goes_elsewhere() {
    let hung = Upstream::start("hung").await;
    hung.set(Mode::Hang);
    let live = Upstream::start("live").await;
    let mut cfg = config();
    cfg.load_balancing = LoadBalancing::RoundRobin;
    cfg.attempt_timeout = Duration::from_millis(200);
    let table = RouteTable { backends: vec![backend(stable(0), &hung), backend(stable(1), &live)], canary: None };
    let proxy = TestProxy::start(cfg, table).await;
    let mut sender = h2_client(proxy.addr()).await;
    for _ in 0..4 {
        let reply = h2_send(&mut sender, h2_get(proxy.addr(), "/")).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "live"));
    }
    assert!(proxy.handle.stats().backend(stable(0)).is_some_and(|b| b.attempts.timeouts >= 1));
}

#[tokio::test]
async fn h2c_backends_serve_http1_and_h2c_clients_on_one_connection_with_trailers() {
    let upstream = H2Upstream::start("h2", false).await;
    let mut cfg = config();
    cfg.upstream_protocol = UpstreamProtocol::H2c;
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![upstream.backend(0)], canary: None }).await;
    let mut http1 = support::Client::new(proxy.addr());
    for _ in 0..5 {
        let reply = http1.get("/").await;
        assert_eq!((reply.status, reply.body.as_str(), reply.upstream()), (200, "h2", "h2"), "{reply:?}");
        assert_eq!(reply.headers.get("x-seen-authority").map(|v| v.as_bytes()), Some(&b"svc.test"[..]));
        assert_eq!(reply.headers.get("x-seen-forwarded-for").map(|v| v.as_bytes()), Some(&b"127.0.0.1"[..]));
    }
    let mut sender = h2_client(proxy.addr()).await;
    let reply = h2_send(&mut sender, h2_get(proxy.addr(), "/")).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "h2"));
    let trailer = reply.trailers.as_ref().and_then(|t| t.get("x-trailer")).map(|v| v.as_bytes().to_vec());
    assert_eq!(trailer.as_deref(), Some(&b"1"[..]), "trailers pass through: {reply:?}");
    assert_eq!(upstream.requests.load(SeqCst), 6);
    assert_eq!(upstream.connections.load(SeqCst), 1, "one multiplexed connection to the backend");
    let _ = upstream.name;
}

/// Issue 12: a gRPC `UNAVAILABLE` (the request was not processed) is retried on another backend, for a
/// POST too; gRPC status codes are counted per release and per backend.
#[tokio::test]
async fn grpc_unavailable_is_retried_elsewhere_and_status_codes_are_counted() {
    let unavailable = H2Upstream::start("down", true).await;
    let available = H2Upstream::start("up", false).await;
    let mut cfg = config();
    cfg.upstream_protocol = UpstreamProtocol::H2c;
    cfg.load_balancing = LoadBalancing::RoundRobin;
    cfg.outlier.consecutive_failures = 1000;
    let table = RouteTable { backends: vec![unavailable.backend(0), available.backend(1)], canary: None };
    let proxy = TestProxy::start(cfg, table).await;
    let mut sender = h2_client(proxy.addr()).await;
    for _ in 0..10 {
        let reply = h2_send(&mut sender, grpc_call(proxy.addr())).await;
        let status = reply.trailers.as_ref().and_then(|t| t.get("grpc-status")).map(|v| v.as_bytes().to_vec());
        assert_eq!((reply.status, status.as_deref()), (200, Some(&b"0"[..])), "{reply:?}");
    }
    assert!(unavailable.requests.load(SeqCst) >= 4, "round robin sent requests to the unavailable one first");
    let stats = proxy.handle.stats();
    let ok = GRPC_CODES.iter().position(|code| *code == "OK").expect("OK");
    let unavailable_code = GRPC_CODES.iter().position(|code| *code == "UNAVAILABLE").expect("UNAVAILABLE");
    assert_eq!(stats.stable.grpc[ok], 10, "{:?}", stats.stable.grpc);
    assert_eq!(stats.stable.grpc.iter().sum::<u64>(), 10, "only what clients got counts per release");
    let down = stats.backend(stable(0)).expect("listed");
    assert_eq!(down.attempts.grpc[unavailable_code], unavailable.requests.load(SeqCst));
    assert_eq!(stats.retries, unavailable.requests.load(SeqCst));

    // With nowhere else to go (and no time to wait: the first back-off alone would outlast the request's
    // deadline), the client gets the backend's own UNAVAILABLE.
    let mut cfg = config();
    cfg.upstream_protocol = UpstreamProtocol::H2c;
    cfg.request_timeout = Duration::from_secs(10);
    cfg.retry.backoff_base = Duration::from_secs(60);
    cfg.retry.backoff_max = Duration::from_secs(60);
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![unavailable.backend(0)], canary: None }).await;
    let mut sender = h2_client(proxy.addr()).await;
    let reply = h2_send(&mut sender, grpc_call(proxy.addr())).await;
    assert_eq!(reply.headers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"14"[..]), "{reply:?}");
    assert_eq!(proxy.handle.stats().stable.grpc[unavailable_code], 1);

    // Not retried (one attempt only), an UNAVAILABLE the client gets is still its backend's failure: one
    // answering it every time is ejected (its 200 head is no success).
    let mut cfg = config();
    cfg.upstream_protocol = UpstreamProtocol::H2c;
    cfg.load_balancing = LoadBalancing::RoundRobin;
    cfg.retry.max_attempts = 1;
    let table = RouteTable { backends: vec![unavailable.backend(0), available.backend(1)], canary: None };
    let proxy = TestProxy::start(cfg, table).await;
    let mut sender = h2_client(proxy.addr()).await;
    for _ in 0..6 {
        h2_send(&mut sender, grpc_call(proxy.addr())).await;
    }
    let stats = proxy.handle.stats();
    let down = stats.backend(stable(0)).expect("listed");
    let ejection = down.last_ejection.map(|ejection| (ejection.reason, ejection.consecutive_failures));
    assert_eq!((down.ejections, ejection), (1, Some((mend_proxy::EjectionReason::ServerError(503), 3))));
}

/// A streamed request body that outgrows `max_request_body_bytes` on its way to an h2c backend gets 413
/// as on HTTP/1.1 (hyper resets the stream, which is no failure of the backend's): the backends are
/// never ejected for it.
#[tokio::test]
async fn an_oversized_streamed_body_to_an_h2c_backend_gets_413_and_ejects_no_one() {
    let first = H2Upstream::start("first", false).await;
    let second = H2Upstream::start("second", false).await;
    let mut cfg = config();
    cfg.upstream_protocol = UpstreamProtocol::H2c;
    cfg.load_balancing = LoadBalancing::RoundRobin;
    cfg.max_request_body_bytes = 100_000;
    cfg.retry_buffer_bytes = 1024;
    let proxy =
        TestProxy::start(cfg, RouteTable { backends: vec![first.backend(0), second.backend(1)], canary: None }).await;
    for _ in 0..6 {
        // Chunked, so the size is only known while streaming.
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            for _ in 0..40 {
                if tx.send(Bytes::from(vec![0; 8192])).await.is_err() {
                    break;
                }
            }
        });
        let chunked = Request::post("/upload").header("host", "a").body(body).expect("request");
        assert_eq!(Client::new(proxy.addr()).send(chunked).await.status, 413);
    }
    let stats = proxy.handle.stats();
    for backend in &stats.backends {
        assert_eq!((backend.ejections, backend.last_ejection), (0, None), "{:?}: the client's doing", backend.id);
    }
    assert_eq!(stats.local.refused, 6);
}
