//! The proxy against real origin servers and their edge cases (RFC 9112 §6.3 message body length,
//! RFC 9110): `python3 -m http.server` (an HTTP/1.0 server), and raw-TCP origins that write exact bytes
//! for HEAD, 1xx, 204/304, chunked with extensions and trailers, TE + CL, bad Content-Length,
//! close-delimited bodies, `Connection: close`, early responses, stale pooled connections and upgrades.
#![allow(clippy::disallowed_methods)] // Tests wait in real time on real sockets.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use mend_proxy::{Backend, RouteTable};
use support::{Client, PythonServer, Reply, TestProxy, config, full, stable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

/// Bound on every exchange: a proxy that waits for a body that never comes fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(5);

/// A raw-TCP origin on 127.0.0.1:0: every accepted connection is handed to `serve`.
struct Origin {
    addr: SocketAddr,
    /// TCP connections accepted.
    connections: Arc<AtomicU64>,
    /// Every request as received (head and body), in order.
    requests: Arc<Mutex<Vec<String>>>,
    _tasks: JoinSet<()>,
}

impl Origin {
    async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(OriginConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = JoinSet::new();
        let (accepted, log) = (connections.clone(), requests.clone());
        tasks.spawn(async move {
            let mut connection_tasks = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let index = accepted.fetch_add(1, SeqCst);
                connection_tasks.spawn(serve(OriginConn { stream, buf: Vec::new(), index, log: log.clone() }));
            }
        });
        Self { addr, connections, requests, _tasks: tasks }
    }

    fn connections(&self) -> u64 {
        self.connections.load(SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }

    fn backend(&self) -> Backend {
        Backend { id: stable(0), addr: self.addr, weight: 1 }
    }
}

/// One connection accepted by an [`Origin`].
struct OriginConn {
    stream: TcpStream,
    /// Read and not consumed yet.
    buf: Vec<u8>,
    /// Which connection of the origin this is (0 for the first).
    index: u64,
    log: Arc<Mutex<Vec<String>>>,
}

impl OriginConn {
    /// Reads one request: its head, then a Content-Length or chunked body. `None` at the end of the stream.
    async fn request(&mut self) -> Option<String> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_lowercase();
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse::<usize>().ok());
        let end = if let Some(length) = length {
            while self.buf.len() < head_end + length {
                self.fill().await?;
            }
            head_end + length
        } else if head.contains("transfer-encoding: chunked") {
            loop {
                if let Some(at) = find(&self.buf[head_end..], b"0\r\n\r\n") {
                    break head_end + at + 5;
                }
                self.fill().await?;
            }
        } else {
            head_end
        };
        let request = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        self.log.lock().expect("log").push(request.clone());
        Some(request)
    }

    /// Reads a request head only (the body is left unread).
    async fn head_only(&mut self) -> Option<String> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.log.lock().expect("log").push(head.clone());
        Some(head)
    }

    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

async fn proxy_for(origin: &Origin) -> TestProxy {
    TestProxy::with(vec![origin.backend()]).await
}

async fn send(client: &mut Client, request: Request<support::UpBody>) -> Reply {
    timeout(LIMIT, client.send(request)).await.expect("the proxy answered in time")
}

async fn get(client: &mut Client, path: &str) -> Reply {
    send(client, Request::get(path).header("host", "svc.test").body(full("")).expect("request")).await
}

fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply.headers.get(name).and_then(|value| value.to_str().ok())
}

/// Writes `bytes` on a fresh connection to the proxy and reads until it closes.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut reply = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut reply)).await.expect("the proxy closed in time").expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

/// Reads one response with a Content-Length body from a raw connection; returns head and body.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = timeout(LIMIT, stream.read(&mut chunk)).await.expect("response in time").expect("read");
        assert!(n > 0, "connection closed before a response head: {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .to_lowercase()
        .lines()
        .find_map(|line| line.strip_prefix("content-length:").map(|value| value.trim().parse::<usize>()))
        .map_or(0, |parsed| parsed.expect("numeric content-length"));
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = timeout(LIMIT, stream.read(&mut chunk)).await.expect("body in time").expect("read");
        assert!(n > 0, "connection closed in the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    buf.drain(..head_end + length);
    (head, body)
}

/// Serves every request on the connection with `respond(request)`.
fn serve_with(
    respond: fn(&str) -> Vec<u8>,
) -> impl Fn(OriginConn) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    move |mut conn| {
        Box::pin(async move {
            while let Some(request) = conn.request().await {
                conn.send(&respond(&request)).await;
            }
        })
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

#[tokio::test]
async fn head_responses_have_no_body_whatever_their_framing_headers_say() {
    let origin = Origin::start(serve_with(|request| {
        if request.starts_with("HEAD /chunked") {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()
        } else if request.starts_with("HEAD") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n".to_vec()
        } else {
            ok("ok")
        }
    }))
    .await;
    let proxy = proxy_for(&origin).await;
    let mut client = Client::new(proxy.addr());
    let head = |path: &str| Request::head(path).header("host", "svc.test").body(full("")).expect("request");

    let reply = send(&mut client, head("/")).await;
    assert_eq!((reply.status, header(&reply, "content-length"), reply.body.as_str()), (200, Some("1000"), ""));
    let reply = send(&mut client, head("/chunked")).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    assert_eq!(header(&reply, "content-length"), None, "no made-up length on a HEAD response");
    assert_eq!(get(&mut client, "/").await.body, "ok");
    assert_eq!(origin.connections(), 1, "the connection was reused after the HEAD responses");

    // The same through a raw client: nothing follows the head.
    let raw = raw_exchange(proxy.addr(), b"HEAD / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n") && raw.ends_with("\r\n\r\n"), "{raw:?}");
}

#[tokio::test]
async fn interim_responses_are_skipped_even_when_split_across_writes() {
    let origin = Origin::start(|mut conn: OriginConn| async move {
        while let Some(request) = conn.request().await {
            if request.starts_with("GET /split") {
                conn.send(b"HTTP/1.1 100 Continue\r\n").await;
                sleep(Duration::from_millis(20)).await;
                conn.send(b"\r\nHTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n").await;
                sleep(Duration::from_millis(20)).await;
                conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nsplit").await;
            } else {
                conn.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nnew").await;
            }
        }
    })
    .await;
    let proxy = proxy_for(&origin).await;
    let mut client = Client::new(proxy.addr());
    let reply = get(&mut client, "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (201, "new"));
    let reply = get(&mut client, "/split").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "split"));
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body_even_with_a_content_length() {
    let origin = Origin::start(serve_with(|request| {
        if request.starts_with("GET /204") {
            b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n".to_vec()
        } else if request.starts_with("GET /304") {
            b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 100\r\n\r\n".to_vec()
        } else {
            ok("after")
        }
    }))
    .await;
    let proxy = proxy_for(&origin).await;
    let mut client = Client::new(proxy.addr());
    let reply = get(&mut client, "/204").await;
    assert_eq!((reply.status, reply.body.as_str()), (204, ""));
    let reply = get(&mut client, "/304").await;
    assert_eq!((reply.status, reply.body.as_str(), header(&reply, "etag")), (304, "", Some("\"v1\"")));
    assert_eq!(get(&mut client, "/").await.body, "after", "the next response is read from the right place");
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_are_decoded_and_the_connection_reused() {
    let origin = Origin::start(serve_with(|_| {
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
          5;name=value\r\nhello\r\n7;a=\"b c\";d\r\n, world\r\n0;last=1\r\nx-sum: 12\r\n\r\n"
            .to_vec()
    }))
    .await;
    let proxy = proxy_for(&origin).await;
    let mut client = Client::new(proxy.addr());
    for _ in 0..3 {
        let reply = get(&mut client, "/").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "hello, world"));
    }
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn endless_chunk_metadata_breaks_the_response_off_instead_of_filling_memory() {
    let origin = Origin::start(|mut conn: OriginConn| async move {
        let Some(request) = conn.request().await else { return };
        conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n").await;
        if request.starts_with("GET /extension") {
            conn.send(b"5;ext=").await;
        } else {
            conn.send(b"0\r\nx-trailer: ").await;
        }
        // Never ends the line: 2 MiB, then silence.
        for _ in 0..32 {
            conn.send(&[b'a'; 64 * 1024]).await;
        }
        std::future::pending::<()>().await;
    })
    .await;
    let proxy = proxy_for(&origin).await;
    for path in ["/extension", "/trailer"] {
        let mut client = Client::new(proxy.addr());
        let request = Request::get(path).header("host", "svc.test").body(full("")).expect("request");
        let result = timeout(LIMIT, client.try_send(request)).await.expect("broken off in time");
        assert!(result.is_err(), "{path}: the body must break off, got {result:?}");
    }
}

#[tokio::test]
async fn transfer_encoding_overrides_content_length_and_the_connection_is_not_reused() {
    let origin = Origin::start(serve_with(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\nc\r\nhello, world\r\n0\r\n\r\n"
            .to_vec()
    }))
    .await;
    let proxy = proxy_for(&origin).await;
    let mut client = Client::new(proxy.addr());
    for _ in 0..2 {
        let reply = get(&mut client, "/").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "hello, world"));
        assert_ne!(header(&reply, "content-length"), Some("3"), "the backend's Content-Length is not passed on");
    }
    assert_eq!(origin.connections(), 2, "a response with both TE and CL closes its connection");
}

#[tokio::test]
async fn invalid_or_conflicting_content_lengths_are_a_bad_gateway() {
    let origin = Origin::start(serve_with(|request| {
        let path = request.split(' ').nth(1).unwrap_or("");
        let length = match path {
            "/dup" => "content-length: 5\r\ncontent-length: 6",
            "/list" => "content-length: 5, 6",
            "/plus" => "content-length: +5",
            "/negative" => "content-length: -5",
            "/alpha" => "content-length: five",
            "/empty" => "content-length: ",
            "/huge" => "content-length: 99999999999999999999999",
            _ => "content-length: 5",
        };
        format!("HTTP/1.1 200 OK\r\n{length}\r\n\r\nhello").into_bytes()
    }))
    .await;
    let proxy = proxy_for(&origin).await;
    for path in ["/dup", "/list", "/plus", "/negative", "/alpha", "/empty", "/huge"] {
        let reply = get(&mut Client::new(proxy.addr()), path).await;
        assert_eq!(reply.status, 502, "{path}: {reply:?}");
    }
    let reply = get(&mut Client::new(proxy.addr()), "/fine").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello"));
}

#[tokio::test]
async fn identical_content_length_values_are_passed_on_as_one() {
    let origin = Origin::start(serve_with(|_| {
        b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\nhello".to_vec()
    }))
    .await;
    let proxy = proxy_for(&origin).await;
    let raw = raw_exchange(proxy.addr(), b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").await;
    let lengths: Vec<&str> = raw.lines().filter(|line| line.to_lowercase().starts_with("content-length:")).collect();
    assert_eq!(lengths.len(), 1, "{raw:?}");
    assert_eq!(lengths[0].split(':').nth(1).map(str::trim), Some("5"), "{raw:?}");
    assert!(raw.ends_with("\r\n\r\nhello"), "{raw:?}");
}

#[tokio::test]
async fn close_delimited_bodies_are_forwarded_whole_and_their_connection_not_reused() {
    let origin = Origin::start(|mut conn: OriginConn| async move {
        let Some(request) = conn.request().await else { return };
        let version = if request.starts_with("GET /http10") { "1.0" } else { "1.1" };
        conn.send(format!("HTTP/{version} 200 OK\r\ncontent-type: text/plain\r\n\r\nfirst,").as_bytes()).await;
        sleep(Duration::from_millis(20)).await;
        conn.send(&vec![b'x'; 100_000]).await;
        sleep(Duration::from_millis(20)).await;
        conn.send(b",last").await;
        // Dropped: the close ends the body.
    })
    .await;
    let proxy = proxy_for(&origin).await;
    let mut client = Client::new(proxy.addr());
    for path in ["/", "/http10", "/"] {
        let reply = get(&mut client, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.body.len(), "first,".len() + 100_000 + ",last".len(), "{path}");
        assert!(reply.body.starts_with("first,x") && reply.body.ends_with("x,last"), "{path}");
    }
    assert_eq!(origin.connections(), 3);
}

#[tokio::test]
async fn connection_close_and_http_1_0_responses_are_not_pooled_unless_kept_alive() {
    // The origin keeps every connection open and would answer more requests on it: only the proxy's
    // decision not to reuse it makes a new connection.
    let origin = Origin::start(serve_with(|request| {
        let path = request.split(' ').nth(1).unwrap_or("");
        match path {
            "/close" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            "/close-list" => b"HTTP/1.1 200 OK\r\nconnection: x-a, Close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            "/http10" => b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
            _ => b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        }
    }))
    .await;
    let proxy = proxy_for(&origin).await;
    let mut client = Client::new(proxy.addr());
    let mut expected = 0;
    for (path, new_connections) in [("/close", 2), ("/close-list", 2), ("/http10", 2), ("/keep-alive", 1)] {
        for _ in 0..2 {
            let reply = get(&mut client, path).await;
            assert_eq!((reply.status, reply.body.as_str()), (200, "ok"), "{path}");
        }
        expected += new_connections;
        assert_eq!(origin.connections(), expected, "{path}");
    }
}

#[tokio::test]
async fn clients_get_http_1_1_and_keep_alive_from_an_http_1_0_origin() {
    let origin = Origin::start(serve_with(|_| b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec())).await;
    let proxy = proxy_for(&origin).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut buf = Vec::new();
    for _ in 0..2 {
        stream.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.expect("write");
        let (head, body) = read_response(&mut stream, &mut buf).await;
        // RFC 9110 §6.2: an intermediary sends its own version.
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
        assert_eq!(body, "ok");
    }
}

#[tokio::test]
async fn http_1_0_clients_are_served_and_the_backend_gets_a_host() {
    let origin = Origin::start(serve_with(|_| ok("hello"))).await;
    let proxy = proxy_for(&origin).await;
    let raw = raw_exchange(proxy.addr(), b"GET /path HTTP/1.0\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.0 200 OK\r\n") && raw.ends_with("\r\n\r\nhello"), "{raw:?}");
    let seen = origin.requests();
    assert!(seen[0].starts_with("GET /path HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen[0].to_lowercase().contains(&format!("\r\nhost: {}\r\n", origin.addr)), "{seen:?}");
}

#[tokio::test]
async fn response_heads_split_into_single_bytes_and_large_heads() {
    let big = "v".repeat(60 * 1024);
    let origin = Origin::start(move |mut conn: OriginConn| {
        let big = big.clone();
        async move {
            conn.stream.set_nodelay(true).expect("nodelay");
            while let Some(request) = conn.request().await {
                if request.starts_with("GET /bytes") {
                    for byte in b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n" {
                        conn.send(&[*byte]).await;
                        sleep(Duration::from_millis(1)).await;
                    }
                } else if request.starts_with("GET /big") {
                    conn.send(format!("HTTP/1.1 200 OK\r\nx-big: {big}\r\ncontent-length: 2\r\n\r\nok").as_bytes())
                        .await;
                } else {
                    let huge = "h".repeat(1024 * 1024);
                    conn.send(format!("HTTP/1.1 200 OK\r\nx-huge: {huge}\r\ncontent-length: 2\r\n\r\nok").as_bytes())
                        .await;
                }
            }
        }
    })
    .await;
    let proxy = proxy_for(&origin).await;
    let mut client = Client::new(proxy.addr());
    let reply = get(&mut client, "/bytes").await;
    assert_eq!((reply.status, reply.body.as_str(), header(&reply, "x-a")), (200, "ok", Some("1")));
    let reply = get(&mut client, "/big").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    assert_eq!(header(&reply, "x-big").map(str::len), Some(60 * 1024));
    let reply = get(&mut client, "/huge").await;
    assert_eq!(reply.status, 502, "a head beyond the limit is refused");
}

#[tokio::test]
async fn an_early_response_arrives_while_the_request_body_is_still_being_sent() {
    // Like nginx or Go: answer 413 after the head, then close gracefully (lingering: read and discard
    // what the client still sends for a while) so the response is not lost to a reset.
    let origin = Origin::start(|mut conn: OriginConn| async move {
        if conn.head_only().await.is_none() {
            return;
        }
        conn.send(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big\n").await;
        let _ = conn.stream.shutdown().await;
        let mut sink = [0u8; 64 * 1024];
        let _ =
            timeout(Duration::from_secs(2), async { while conn.stream.read(&mut sink).await.is_ok_and(|n| n > 0) {} })
                .await;
    })
    .await;
    let proxy = proxy_for(&origin).await;
    for size in [1024, 8 * 1024 * 1024] {
        let request = Request::post("/upload")
            .header("host", "svc.test")
            .body(full(Bytes::from(vec![b'x'; size])))
            .expect("request");
        let reply = send(&mut Client::new(proxy.addr()), request).await;
        assert_eq!((reply.status, reply.body.as_str()), (413, "too big\n"), "{size} bytes");
    }
}

#[tokio::test]
async fn an_early_response_survives_an_abrupt_close_by_the_origin() {
    // A simpler server answers and closes at once with the request body unread: the kernel resets the
    // connection. The response was read before the reset, and must reach the client.
    let origin = Origin::start(|mut conn: OriginConn| async move {
        if conn.head_only().await.is_some() {
            let response = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo big\n";
            conn.send(response).await;
            sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let proxy = proxy_for(&origin).await;
    for size in [1024, 8 * 1024 * 1024] {
        let request = Request::post("/upload")
            .header("host", "svc.test")
            .body(full(Bytes::from(vec![b'x'; size])))
            .expect("request");
        let reply = send(&mut Client::new(proxy.addr()), request).await;
        assert_eq!((reply.status, reply.body.as_str()), (413, "too big\n"), "{size} bytes");
    }
}

#[tokio::test]
async fn expect_100_continue_from_a_client_is_honoured() {
    let origin = Origin::start(serve_with(|request| {
        let body = request.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        ok(&body)
    }))
    .await;
    let proxy = proxy_for(&origin).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        .await
        .expect("write head");
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 100 Continue\r\n"), "{head:?}");
    stream.write_all(b"hello").await.expect("write body");
    let (head, body) = read_response(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head:?}");
    assert_eq!(body, "hello");
}

#[tokio::test]
async fn a_chunked_request_body_is_forwarded() {
    let origin = Origin::start(serve_with(|request| {
        let body = request.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        ok(&body.len().to_string())
    }))
    .await;
    let mut cfg = config();
    cfg.retry_buffer_bytes = 1024;
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![origin.backend()], canary: None }).await;
    for size in [10, 100_000] {
        let (tx, body) = support::channel_body();
        let request = Request::post("/").header("host", "svc.test").body(body).expect("request");
        let mut client = Client::new(proxy.addr());
        let response = tokio::spawn(async move { timeout(LIMIT, client.send(request)).await });
        tx.send(Bytes::from(vec![b'a'; size / 2])).await.expect("send");
        tx.send(Bytes::from(vec![b'b'; size - size / 2])).await.expect("send");
        drop(tx);
        let reply = response.await.expect("task").expect("in time");
        assert_eq!(reply.status, 200);
        let seen = origin.requests();
        let (head, body) = seen.last().expect("a request").split_once("\r\n\r\n").expect("head");
        let body = if head.to_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            assert_eq!(reply.body, size.to_string(), "a Content-Length body");
            body.to_owned()
        };
        let expected = "a".repeat(size / 2) + &"b".repeat(size - size / 2);
        assert!(body == expected, "{size} bytes sent, {} received", body.len());
    }
}

/// Decodes a chunked body (without extensions or trailers).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size, 16).expect("hex chunk size");
        if size == 0 {
            assert_eq!(after, "\r\n", "the body ends after the last chunk");
            return body;
        }
        body.push_str(&after[..size]);
        assert_eq!(&after[size..size + 2], "\r\n");
        rest = &after[size + 2..];
    }
}

#[tokio::test]
async fn a_pooled_connection_closed_by_the_origin_as_it_is_reused_is_retried_on_a_fresh_one() {
    // The first connection serves one request, then closes on the next one without answering: what a
    // backend's keep-alive timeout does when it fires just as the proxy reuses the connection.
    let origin = Origin::start(|mut conn: OriginConn| async move {
        let served = if conn.index == 0 { 1 } else { usize::MAX };
        let mut count = 0;
        while let Some(_request) = conn.request().await {
            if count == served {
                return;
            }
            count += 1;
            conn.send(&ok("ok")).await;
        }
    })
    .await;
    let mut cfg = config();
    cfg.retry.max_attempts = 1;
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![origin.backend()], canary: None }).await;
    let mut client = Client::new(proxy.addr());
    for _ in 0..3 {
        let reply = get(&mut client, "/").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    }
    assert_eq!(origin.connections(), 2);
}

/// An origin that switches to an echo protocol on a WebSocket upgrade (greeting with bytes sent right
/// after its 101 head), refuses `/refuse` with 426, switches unasked on `/force-101`, and answers the rest.
async fn switching_origin() -> Origin {
    Origin::start(|mut conn: OriginConn| async move {
        while let Some(request) = conn.request().await {
            let lower = request.to_lowercase();
            if request.starts_with("GET /force-101") {
                conn.send(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n").await;
                return;
            }
            if request.starts_with("GET /refuse") {
                conn.send(b"HTTP/1.1 426 Upgrade Required\r\nupgrade: websocket\r\ncontent-length: 0\r\n\r\n").await;
                continue;
            }
            if !(lower.contains("\r\nupgrade: websocket\r\n") && lower.contains("\r\nconnection: upgrade\r\n")) {
                conn.send(&ok("plain")).await;
                continue;
            }
            conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello").await;
            // Echo whatever comes, bytes as they are, until the client closes.
            let mut pending = std::mem::take(&mut conn.buf);
            loop {
                if !pending.is_empty() {
                    conn.send(&pending).await;
                    pending.clear();
                }
                if conn.fill().await.is_none() {
                    return;
                }
                pending = std::mem::take(&mut conn.buf);
            }
        }
    })
    .await
}

const WEBSOCKET_HANDSHAKE: &[u8] = b"GET /chat HTTP/1.1\r\nhost: svc.test\r\nconnection: keep-alive, Upgrade\r\n\
    upgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// Reads from `stream` until `buf` holds `n` bytes.
async fn read_exact_into(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) {
    while buf.len() < n {
        let mut chunk = [0u8; 4096];
        let read = timeout(LIMIT, stream.read(&mut chunk)).await.expect("bytes in time").expect("read");
        assert!(read > 0, "tunnel closed after {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..read]);
    }
}

#[tokio::test]
async fn websocket_upgrades_become_tunnels_to_the_backend() {
    let origin = switching_origin().await;
    let proxy = proxy_for(&origin).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(WEBSOCKET_HANDSHAKE).await.expect("write");
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        let wanted = buf.len() + 1;
        read_exact_into(&mut stream, &mut buf, wanted).await;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head:?}");
    for line in ["\r\nupgrade: websocket\r\n", "\r\nconnection: upgrade\r\n", "sec-websocket-accept: "] {
        assert!(head.contains(line), "missing {line:?} in {head:?}");
    }
    assert!(!head.contains("content-length") && !head.contains("transfer-encoding"), "{head:?}");
    // The backend saw the switch asked for, with the forwarding headers added as for any request.
    let request = origin.requests().pop().expect("handshake reached the origin").to_lowercase();
    assert!(request.contains("\r\nupgrade: websocket\r\n") && request.contains("\r\nsec-websocket-key: "));
    assert!(request.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"), "{request}");

    // The bytes the backend sent with its 101, then both directions as they are, several times over.
    buf.drain(..head_end);
    read_exact_into(&mut stream, &mut buf, 5).await;
    assert_eq!(&buf[..5], b"hello");
    buf.clear();
    for round in 0..3u8 {
        let message = [0x81, 0x05, b'p', b'i', b'n', b'g', round];
        stream.write_all(&message).await.expect("write");
        read_exact_into(&mut stream, &mut buf, message.len()).await;
        assert_eq!(buf, message);
        buf.clear();
    }
    // The tunnel is not a request in flight: it does not hold the backend's drain.
    let outcome = timeout(LIMIT, proxy.handle.drain(stable(0), Duration::from_secs(30))).await.expect("drain at once");
    assert!(matches!(outcome, mend_proxy::DrainOutcome::Drained { .. }), "{outcome:?}");
    let stats = proxy.handle.stats();
    assert_eq!(stats.backend(stable(0)).map(|backend| backend.in_flight), Some(0));
    assert_eq!(stats.total.status_1xx, 1, "the switch is counted as its status");
    // Closing the client's side ends the backend's.
    drop(stream);
}

#[tokio::test]
async fn refused_and_unasked_switches_and_connect_are_answered_cleanly() {
    let origin = switching_origin().await;
    let proxy = proxy_for(&origin).await;
    // A backend that refuses the switch answers as for any request, and the connection goes on.
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream
        .write_all(b"GET /refuse HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head:?}");
    stream.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await.expect("write");
    let (head, body) = read_response(&mut stream, &mut buf).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    assert_eq!(body, "plain");

    // A backend that switches protocols unasked: the proxy must not pass a 101 on nor pool the connection.
    let mut client = Client::new(proxy.addr());
    let reply = get(&mut client, "/force-101").await;
    assert_eq!(reply.status, 502);
    let before = origin.connections();
    let reply = get(&mut client, "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "plain"));
    assert!(origin.connections() > before, "the switched connection was not reused");

    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(b"CONNECT example.test:443 HTTP/1.1\r\nhost: example.test:443\r\n\r\n").await.expect("write");
    let (head, _) = read_response(&mut stream, &mut Vec::new()).await;
    assert!(head.starts_with("HTTP/1.1 501"), "{head:?}");
}

#[tokio::test]
async fn python_http_server_an_http_1_0_origin() {
    let page: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let python = PythonServer::start(&[("page.txt", &page), ("small.txt", b"small\n")]).await;
    let proxy = TestProxy::with(vec![Backend { id: stable(0), addr: python.addr, weight: 1 }]).await;
    let mut client = Client::new(proxy.addr());
    for _ in 0..3 {
        let reply = get(&mut client, "/page.txt").await;
        assert_eq!(reply.status, 200);
        assert!(reply.body.as_bytes() == page.as_slice(), "whole body, {} bytes", reply.body.len());
        assert_eq!(get(&mut client, "/small.txt").await.body, "small\n");
    }
    let reply = get(&mut client, "/missing").await;
    assert_eq!(reply.status, 404);
    let head = Request::head("/page.txt").header("host", "svc.test").body(full("")).expect("request");
    let reply = send(&mut client, head).await;
    let expected = page.len().to_string();
    assert_eq!((reply.status, header(&reply, "content-length"), reply.body.as_str()), (200, Some(&expected[..]), ""));
    let reply = get(&mut client, "/").await;
    assert!(reply.status == 200 && reply.body.contains("page.txt"), "{reply:?}");

    // A streamed response body to a hyper client collects the same way.
    let mut sender = support::connect(proxy.addr()).await;
    let request = Request::get("/page.txt").header("host", "svc.test").body(full("")).expect("request");
    let response = timeout(LIMIT, sender.send_request(request)).await.expect("in time").expect("response");
    assert_eq!(response.version(), hyper::Version::HTTP_11);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body.len(), page.len());
}
