//! HTTP forwarding on loopback: what reaches the backend, what comes back, keep-alive pooling, streaming
//! both ways, and the limits and timeouts that protect the proxy from its clients.
#![allow(clippy::disallowed_methods)] // Tests wait in real time on real sockets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use mend_proxy::RouteTable;
use support::{Client, Mode, TestProxy, Upstream, backend, channel_body, config, full, get, stable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

#[tokio::test]
async fn forwards_method_target_headers_and_body_and_rewrites_hop_by_hop_and_forwarding_headers() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let request = Request::post("/a/b?x=1&y=%20")
        .header("host", "svc.test")
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-drop")
        .header("x-drop", "1")
        .header("keep-alive", "timeout=9")
        .header("proxy-authorization", "Basic secret")
        .header("te", "trailers")
        .header("x-forwarded-for", "192.0.2.1")
        .body(full("hello"))
        .expect("request");
    let reply = Client::new(proxy.addr()).send(request).await;

    assert_eq!((reply.status, reply.body.as_str(), reply.upstream()), (200, "a", "a"));
    for hop in ["x-hop", "keep-alive"] {
        assert!(!reply.headers.contains_key(hop), "response kept hop-by-hop header {hop}");
    }
    let seen = upstream.last_seen();
    assert_eq!((seen.method.as_str(), seen.uri.as_str(), &seen.body[..]), ("POST", "/a/b?x=1&y=%20", &b"hello"[..]));
    let header = |name: &str| seen.headers.get(name).map(|v| v.to_str().expect("ascii").to_owned());
    assert_eq!(header("host").as_deref(), Some("svc.test"), "Host is preserved");
    assert_eq!(header("x-custom").as_deref(), Some("kept"));
    assert_eq!(header("te").as_deref(), Some("trailers"));
    assert_eq!(header("x-forwarded-for").as_deref(), Some("192.0.2.1, 127.0.0.1"));
    assert_eq!(header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(header("forwarded").as_deref(), Some("for=127.0.0.1;proto=http"));
    assert_eq!(header("via").as_deref(), Some("1.1 mend"));
    for hop in ["x-drop", "keep-alive", "proxy-authorization", "upgrade"] {
        assert_eq!(header(hop), None, "request kept hop-by-hop header {hop}");
    }
}

#[tokio::test]
async fn reuses_pooled_connections_to_backends() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let mut client = Client::new(proxy.addr());
    for _ in 0..20 {
        assert_eq!(client.get("/").await.status, 200);
    }
    // Fresh client connections too: the backend side is pooled independently of the client side.
    for _ in 0..5 {
        assert_eq!(get(proxy.addr(), "/").await.status, 200);
    }
    assert_eq!(upstream.count(), 25);
    assert_eq!(upstream.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn streams_a_body_larger_than_the_retry_buffer_both_ways() {
    let upstream = Upstream::start("a").await;
    let mut cfg = config();
    cfg.retry_buffer_bytes = 64 * 1024;
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![backend(stable(0), &upstream)], canary: None }).await;
    let (tx, body) = channel_body();
    let mut sender = support::connect(proxy.addr()).await;
    let request = Request::post("/echo").header("host", "svc.test").body(body).expect("request");
    let response = tokio::spawn(async move { sender.send_request(request).await });

    // Send 1 MiB (16 × the retry buffer) and check the backend has it before the client is done.
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..16 {
        tx.send(chunk.clone()).await.expect("send chunk");
    }
    support::eventually("backend received the first MiB while the client is still sending", || {
        upstream.body_bytes.load(std::sync::atomic::Ordering::SeqCst) >= 900 * 1024
    })
    .await;
    let response = response.await.expect("task").expect("response headers before the request ended");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // The echo streams back before the request finished, too.
    let first = timeout(Duration::from_secs(5), body.frame()).await.expect("echo streamed back");
    assert!(first.is_some_and(|frame| frame.is_ok()));
    for _ in 0..16 {
        tx.send(chunk.clone()).await.expect("send chunk");
    }
    drop(tx);
    let rest = body.collect().await.expect("echo body").to_bytes();
    assert!(rest.len() >= 2 * 1024 * 1024 - 64 * 1024, "echoed {} bytes", rest.len());
}

#[tokio::test]
async fn no_backend_is_503_with_a_short_body() {
    let proxy = TestProxy::with(vec![]).await;
    let reply = get(proxy.addr(), "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (503, "no backend available\n"));
}

/// Writes raw bytes on a fresh connection and returns what comes back until the proxy closes it.
async fn raw_exchange(proxy: &TestProxy, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut reply = Vec::new();
    let _ = timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn malformed_requests_get_400_without_disturbing_other_connections() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let mut other = Client::new(proxy.addr());
    assert_eq!(other.get("/").await.status, 200);
    let cases: [&[u8]; 4] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400.
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    ];
    for case in cases {
        let reply = raw_exchange(&proxy, case).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{case:?} got {reply:?}");
    }
    assert_eq!(other.get("/").await.status, 200, "the keep-alive connection still works");
}

/// Issue 20: two `Host` headers are a 400 (RFC 9112 §3.2), never forwarded, whatever their values.
#[tokio::test]
async fn issue_20_a_request_with_two_hosts_is_refused_before_any_backend_sees_it() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let cases: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nX-A: 1\r\nhost: evil.example\r\n\r\n",
    ];
    for case in cases {
        let reply = raw_exchange(&proxy, case).await;
        assert!(reply.starts_with("HTTP/1.") && reply.contains(" 400 Bad Request\r\n"), "{reply:?}");
        assert!(reply.ends_with("more than one Host header\n"), "{reply:?}");
    }
    assert_eq!(upstream.count(), 0, "a backend saw a request with two hosts");
    assert_eq!(proxy.handle.stats().local.refused, 3);
}

/// Issue 20: the proxy says how it was reached: a client's `X-Forwarded-Proto` never passes through, and
/// it agrees with `Forwarded`; an offer to upgrade to h2c and its `HTTP2-Settings` stop at the proxy,
/// and the request is served as the HTTP/1.1 request it also is.
#[tokio::test]
async fn issue_20_forwarded_proto_is_the_proxys_and_h2c_upgrades_stop_at_the_proxy() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let reply = raw_exchange(
        &proxy,
        b"GET /x HTTP/1.1\r\nHost: svc\r\nX-Forwarded-Proto: https\r\nx-forwarded-proto: wss\r\n\
          Connection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    // Without `Connection` listing it, `HTTP2-Settings` is still connection-specific.
    let reply = raw_exchange(
        &proxy,
        b"GET /y HTTP/1.1\r\nHost: svc\r\nConnection: upgrade, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMA\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let seen = upstream.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2);
    for request in seen {
        let values = |name: &str| -> Vec<&str> {
            request.headers.get_all(name).iter().map(|value| value.to_str().expect("ascii")).collect()
        };
        assert_eq!(values("x-forwarded-proto"), ["http"], "{}", request.uri);
        assert_eq!(values("forwarded"), ["for=127.0.0.1;proto=http"], "{}", request.uri);
        for name in ["upgrade", "http2-settings", "connection"] {
            assert!(values(name).is_empty(), "{}: {name} reached the backend", request.uri);
        }
    }
}

#[tokio::test]
async fn oversized_heads_get_431_and_bodies_413() {
    let upstream = Upstream::start("a").await;
    let mut cfg = config();
    cfg.max_request_header_bytes = 8192;
    cfg.max_request_body_bytes = 100_000;
    cfg.retry_buffer_bytes = 1024;
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![backend(stable(0), &upstream)], canary: None }).await;

    let big_header = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "y".repeat(16 * 1024));
    let reply = raw_exchange(&proxy, big_header.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply:?}");

    let declared =
        Request::post("/").header("host", "a").header("content-length", "200000").body(full(vec![0; 200_000]));
    let reply = Client::new(proxy.addr()).send(declared.expect("request")).await;
    assert_eq!(reply.status, 413);

    // Chunked, so the size is only known while streaming: cut off at the limit.
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for _ in 0..40 {
            if tx.send(Bytes::from(vec![0; 8192])).await.is_err() {
                break;
            }
        }
    });
    let chunked = Request::post("/").header("host", "a").body(body).expect("request");
    let reply = Client::new(proxy.addr()).send(chunked).await;
    assert_eq!(reply.status, 413);
    assert_eq!(proxy.handle.stats().local.refused, 2);
}

/// On paused time (which the proxy reads): the client is cut off at its header timeout exactly.
#[tokio::test(start_paused = true)]
async fn slow_loris_is_cut_off_while_others_are_served() {
    let upstream = Upstream::start("a").await;
    let mut cfg = config();
    cfg.client_header_timeout = Duration::from_millis(500);
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![backend(stable(0), &upstream)], canary: None }).await;
    let mut slow = TcpStream::connect(proxy.addr()).await.expect("connect");
    let started = Instant::now();
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        // Others are served meanwhile.
        assert_eq!(get(proxy.addr(), "/").await.status, 200);
        let mut probe = [0; 1];
        if let Ok(read) = timeout(Duration::from_millis(50), slow.read(&mut probe)).await {
            cut_off = matches!(read, Ok(0) | Err(_));
            if cut_off {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(cut_off, "slow client still connected after {:?}", started.elapsed());
    support::assert_took(started.elapsed(), Duration::from_millis(500), "cut off at the header timeout");
}

/// On paused time (which the proxy reads): an idle client is closed at its idle timeout exactly.
#[tokio::test(start_paused = true)]
async fn idle_clients_are_closed_after_the_idle_timeout() {
    let upstream = Upstream::start("a").await;
    let mut cfg = config();
    cfg.client_idle_timeout = Duration::from_millis(300);
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![backend(stable(0), &upstream)], canary: None }).await;
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
    let started = Instant::now();
    let mut reply = Vec::new();
    let read = timeout(Duration::from_secs(3), stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "idle connection was not closed");
    assert!(String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"));
    support::assert_took(started.elapsed(), Duration::from_millis(300), "closed at the idle timeout");
    // A busy connection is not idle: a slow response longer than the idle timeout completes.
    upstream.set(Mode::Slow(Duration::from_millis(600)));
    let started = Instant::now();
    assert_eq!(get(proxy.addr(), "/").await.status, 200);
    support::assert_took(started.elapsed(), Duration::from_millis(600), "the slow answer");
}
