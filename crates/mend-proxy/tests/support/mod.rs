//! Test kit: in-process upstream servers on 127.0.0.1:0 that misbehave on demand, HTTP clients, and a
//! proxy started in front of them.
#![allow(dead_code, unreachable_pub)] // Each test file uses a different part of the kit.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mend_proxy::{Backend, BackendId, Proxy, ProxyConfig, ProxyHandle, Release, RouteTable};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How an upstream answers.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200 with its name as the body (`/echo` streams the request body back).
    Ok,
    /// This status.
    Status(u16),
    /// Reads the request, never answers.
    Hang,
    /// Answers after this delay.
    Slow(Duration),
    /// Reads the request head, then resets the connection (RST).
    Reset,
    /// Waits until the notify fires, then answers 200.
    Gate(Arc<Notify>),
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP/1.1 server on 127.0.0.1 with a switchable [`Mode`].
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub mode: Arc<Mutex<Mode>>,
    /// Requests whose head arrived.
    pub requests: Arc<AtomicU64>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicU64>,
    /// Request body bytes received so far (updated while streaming).
    pub body_bytes: Arc<AtomicU64>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Option<JoinSet<()>>,
}

impl Upstream {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        Self::serve(name, listener, addr)
    }

    /// Starts again on the same port (after `stop`).
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind upstream");
        let fresh = Self::serve(&self.name, listener, self.addr);
        self.tasks = fresh.tasks;
        self.mode = fresh.mode;
    }

    fn serve(name: &str, listener: TcpListener, addr: SocketAddr) -> Self {
        let mode = Arc::new(Mutex::new(Mode::Ok));
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let body_bytes = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let state = (name.to_owned(), mode.clone(), requests.clone(), body_bytes.clone(), seen.clone());
        let accepted = connections.clone();
        tasks.spawn(async move {
            let mut connection_tasks = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                accepted.fetch_add(1, SeqCst);
                let state = state.clone();
                connection_tasks.spawn(async move {
                    // Linger 0: when a handler drops the connection, the peer sees a reset.
                    stream.set_zero_linger().expect("linger");
                    let service = service_fn(move |request| handle(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { name: name.to_owned(), addr, mode, requests, connections, body_bytes, seen, tasks: Some(tasks) }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Stops listening and drops every connection (like a killed process: connects are refused).
    pub fn stop(&mut self) {
        self.tasks = None;
    }

    pub fn count(&self) -> u64 {
        self.requests.load(SeqCst)
    }

    pub fn last_seen(&self) -> Seen {
        self.seen.lock().expect("seen").last().cloned().expect("a request was seen")
    }
}

type State = (String, Arc<Mutex<Mode>>, Arc<AtomicU64>, Arc<AtomicU64>, Arc<Mutex<Vec<Seen>>>);

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

async fn handle(state: State, request: Request<Incoming>) -> Result<Response<UpBody>, Dropped> {
    let (name, mode, requests, body_bytes, seen) = state;
    requests.fetch_add(1, SeqCst);
    let mode = mode.lock().expect("mode").clone();
    let (parts, mut body) = request.into_parts();
    let record = |body: Bytes| Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body,
    };
    if parts.uri.path() == "/echo" && matches!(mode, Mode::Ok) {
        seen.lock().expect("seen").push(record(Bytes::new()));
        let counted = body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                body_bytes.fetch_add(data.len() as u64, SeqCst);
            }
            frame
        });
        return Ok(Response::new(counted.boxed()));
    }
    if matches!(mode, Mode::Reset) {
        return Err(Dropped);
    }
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Err(Dropped) };
        if let Some(data) = frame.data_ref() {
            body_bytes.fetch_add(data.len() as u64, SeqCst);
            collected.extend_from_slice(data);
        }
    }
    seen.lock().expect("seen").push(record(Bytes::from(collected)));
    let status = match mode {
        Mode::Ok | Mode::Reset => 200,
        Mode::Status(status) => status,
        Mode::Hang => std::future::pending().await,
        Mode::Slow(delay) => {
            tokio::time::sleep(delay).await;
            200
        }
        Mode::Gate(gate) => {
            gate.notified().await;
            200
        }
    };
    let mut response = Response::new(full(name.clone()));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response.headers_mut().insert("x-upstream", name.parse().expect("name"));
    response.headers_mut().insert("connection", "x-hop".parse().expect("value"));
    response.headers_mut().insert("x-hop", "1".parse().expect("value"));
    response.headers_mut().insert("keep-alive", "timeout=5".parse().expect("value"));
    Ok(response)
}

pub type UpBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

pub fn full(text: impl Into<Bytes>) -> UpBody {
    Full::new(text.into()).map_err(|never: Infallible| match never {}).boxed()
}

/// A stable backend id.
pub fn stable(index: u32) -> BackendId {
    BackendId { release: Release::Stable, index, generation: 1 }
}

pub fn canary(index: u32) -> BackendId {
    BackendId { release: Release::Canary, index, generation: 1 }
}

pub fn backend(id: BackendId, upstream: &Upstream) -> Backend {
    Backend { id, addr: upstream.addr, weight: 1 }
}

/// Test defaults: short timeouts, everything else as shipped.
pub fn config() -> ProxyConfig {
    let mut cfg = ProxyConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.drain_timeout = Duration::from_secs(5);
    cfg
}

pub struct TestProxy {
    pub handle: ProxyHandle,
    pub routes: watch::Sender<Arc<RouteTable>>,
}

impl TestProxy {
    pub async fn start(cfg: ProxyConfig, table: RouteTable) -> Self {
        let (routes, routes_rx) = watch::channel(Arc::new(table));
        let handle = Proxy::bind(cfg, routes_rx).await.expect("bind proxy");
        Self { handle, routes }
    }

    pub async fn with(backends: Vec<Backend>) -> Self {
        Self::start(config(), RouteTable { backends, canary: None }).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Publishes a table and waits until the proxy applied it.
    pub async fn publish(&self, table: RouteTable) {
        let ids: Vec<BackendId> = table.backends.iter().map(|backend| backend.id).collect();
        self.routes.send_replace(Arc::new(table));
        eventually("route table applied", || {
            let stats = self.handle.stats();
            let live: Vec<BackendId> = stats.backends.iter().filter(|b| b.in_table).map(|b| b.id).collect();
            live == ids
        })
        .await;
    }
}

/// Asserts that `took`, measured on paused time, is `expected`: tokio's timers tick in milliseconds and
/// round a deadline up to the next tick, so each timer on the way may add up to a millisecond.
#[track_caller]
pub fn assert_took(took: Duration, expected: Duration, what: &str) {
    assert!(
        took >= expected && took <= expected + Duration::from_millis(10),
        "{what}: took {took:?}, expected {expected:?}"
    );
}

/// Waits (bounded, 5 s) until `condition` holds.
pub async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until nothing accepts connections on `addr` any more: every event loop has closed its listener
/// (with several loops on one port, the kernel may hand a connection to a loop that has not yet).
pub async fn stops_accepting(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A keep-alive HTTP/1.1 client on one connection (reconnecting when the proxy closed it).
pub struct Client {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<UpBody>>,
}

/// A response as a test looks at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn upstream(&self) -> &str {
        self.headers.get("x-upstream").and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(Request::get(path).header("host", "svc.test").body(full("")).expect("request")).await
    }

    pub async fn send(&mut self, request: Request<UpBody>) -> Reply {
        self.try_send(request).await.expect("response from the proxy")
    }

    pub async fn try_send(&mut self, request: Request<UpBody>) -> Result<Reply, hyper::Error> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.sender.insert(connect(self.addr).await),
        };
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status.as_u16(), headers: parts.headers, body: String::from_utf8_lossy(&body).into() })
    }
}

pub async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<UpBody> {
    let stream = TcpStream::connect(addr).await.expect("connect to proxy");
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("client handshake");
    tokio::spawn(connection);
    sender
}

/// One GET on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    Client::new(addr).get(path).await
}

/// Runs `n` requests from `concurrency` clients; returns the replies.
pub async fn load<F, Fut>(n: usize, concurrency: usize, make: F) -> Vec<Reply>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Reply> + Send,
{
    let mut tasks = JoinSet::new();
    let per_client = n.div_ceil(concurrency);
    for client_idx in 0..concurrency {
        let make = make.clone();
        tasks.spawn(async move {
            let mut replies = Vec::new();
            for idx in client_idx * per_client..((client_idx + 1) * per_client).min(n) {
                replies.push(make(idx).await);
            }
            replies
        });
    }
    let mut all = Vec::new();
    while let Some(replies) = tasks.join_next().await {
        all.extend(replies.expect("load task"));
    }
    all
}

/// Counts replies by upstream name.
pub fn by_upstream(replies: &[Reply]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        *counts.entry(reply.upstream().to_owned()).or_default() += 1;
    }
    counts
}

/// A request body fed chunk by chunk from a channel (to prove streaming).
pub struct ChannelBody {
    pub rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}

pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, UpBody) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    (tx, ChannelBody { rx }.map_err(|never| match never {}).boxed())
}

/// Per-class counts of what clients saw: [1xx, 2xx, 3xx, 4xx, 5xx].
pub fn classes(replies: &[Reply]) -> [u64; 5] {
    let mut counts = [0; 5];
    for reply in replies {
        counts[usize::from(reply.status / 100) - 1] += 1;
    }
    counts
}

/// `python3 -m http.server`, killed when dropped.
pub struct PythonServer {
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
    _child: tokio::process::Child,
}

impl PythonServer {
    pub async fn start(files: &[(&str, &[u8])]) -> Self {
        let dir = std::env::temp_dir().join(format!("mend-python-{}-{}", std::process::id(), next_suffix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("write file");
        }
        // Port 0 and the port read from the server's banner: picking a free port, releasing it and
        // handing it over races with every other test binding :0 in this binary.
        let mut child = tokio::process::Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(&dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (the test needs it)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut banner = String::new();
        let mut stdout = tokio::io::BufReader::new(stdout);
        let read = tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut banner);
        tokio::time::timeout(Duration::from_secs(10), read).await.expect("banner in time").expect("banner");
        // "Serving HTTP on 127.0.0.1 port 35177 (http://127.0.0.1:35177/) ..."
        let port: Option<u16> =
            banner.split(" port ").nth(1).and_then(|rest| rest.split(' ').next()).and_then(|p| p.parse().ok());
        if let Some(port) = port {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            if TcpStream::connect(addr).await.is_ok() {
                return Self { addr, dir, _child: child };
            }
        }
        panic!("python3 -m http.server did not start: {banner:?}");
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn next_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, SeqCst)
}
