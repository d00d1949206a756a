//! W3C trace context through the proxy (`trace.rs`): a received `traceparent` continued with the proxy's
//! span as the backend's parent, a trace started when none (or an invalid one) arrives, `tracestate`
//! passed through, and tail sampling that keeps errors and slow requests at a zero ratio. Real sockets:
//! the proxy, hyper upstreams, and `python3 -m http.server` as a backend it did not write.
#![allow(clippy::disallowed_methods)] // Tests wait in real time on real sockets.

mod support;

use std::time::Duration;

use hyper::Request;
use mend_proxy::{ProxyTracing, RouteTable};
use mend_trace::{Kept, Sampling, Span, TraceId, TraceParent, TraceQuery, Tracing};
use support::{Client, Mode, PythonServer, TestProxy, Upstream, backend, config, eventually, full, stable};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn traced_proxy(upstreams: &[&Upstream], ratio: f64) -> (TestProxy, Tracing) {
    let tracing = Tracing::start(4 << 20, None);
    let mut cfg = config();
    cfg.tracing = Some(ProxyTracing {
        service: "web".to_owned(),
        sampling: Sampling { ratio, slow: Duration::from_secs(2), keep_errors: true },
        recorder: tracing.recorder(),
        unix_nanos_at_bind: 1_700_000_000_000_000_000,
    });
    let backends = upstreams.iter().enumerate().map(|(idx, up)| backend(stable(idx as u32), up)).collect();
    let proxy = TestProxy::start(cfg, RouteTable { backends, canary: None }).await;
    (proxy, tracing)
}

/// Every span in the store, waiting until there are `n`.
async fn spans(tracing: &Tracing, n: usize) -> Vec<Span> {
    eventually(&format!("{n} spans stored"), || tracing.stats().store.spans >= n).await;
    let mut all = Vec::new();
    for summary in tracing.list(&TraceQuery { limit: 1000, ..TraceQuery::default() }) {
        all.extend(tracing.trace(TraceId::parse_hex(&summary.trace_id).expect("hex id")).expect("trace"));
    }
    all
}

fn seen_traceparent(upstream: &Upstream) -> TraceParent {
    let seen = upstream.last_seen();
    let value = seen.headers.get("traceparent").expect("a traceparent was forwarded");
    TraceParent::parse(value.as_bytes()).expect("the forwarded traceparent is valid")
}

#[tokio::test]
async fn a_received_trace_is_continued_with_the_proxy_span_as_parent() {
    let upstream = Upstream::start("a").await;
    let (proxy, tracing) = traced_proxy(&[&upstream], 0.0).await;
    let request = Request::get("/orders/7?expand=all")
        .header("host", "svc.test")
        .header("traceparent", PARENT)
        .header("tracestate", "vendor=opaque,other=1")
        .body(full(""))
        .expect("request");
    let reply = Client::new(proxy.addr()).send(request).await;
    assert_eq!(reply.status, 200);

    let spans = spans(&tracing, 1).await;
    let span = &spans[0];
    let incoming = TraceParent::parse(PARENT.as_bytes()).expect("valid");
    assert_eq!(span.trace_id, incoming.trace_id);
    assert_eq!(span.parent_id, Some(incoming.parent_id));
    // A sampled parent is followed even at a zero ratio.
    assert_eq!(span.kept, Some(Kept::Sampled));
    assert_eq!(span.name, "GET /orders/7");
    assert_eq!(span.attribute("url.path"), Some("/orders/7"));
    assert_eq!(span.attribute("mend.replica"), Some("0"));
    assert_eq!(span.attribute("mend.release"), Some("stable"));
    assert_eq!(span.http_status, Some(200));

    let forwarded = seen_traceparent(&upstream);
    assert_eq!(forwarded.trace_id, incoming.trace_id, "same trace");
    assert_eq!(forwarded.parent_id, span.span_id, "the backend's parent is the proxy's span");
    assert!(forwarded.sampled);
    let seen = upstream.last_seen();
    assert_eq!(seen.headers.get("tracestate").expect("tracestate passed"), "vendor=opaque,other=1");
    assert_eq!(seen.headers.get_all("traceparent").iter().count(), 1);
}

#[tokio::test]
async fn an_unsampled_parent_is_forwarded_unsampled_and_not_kept() {
    let upstream = Upstream::start("a").await;
    let (proxy, tracing) = traced_proxy(&[&upstream], 1.0).await;
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let mut client = Client::new(proxy.addr());
    let request =
        Request::get("/a").header("host", "svc.test").header("traceparent", unsampled).body(full("")).expect("request");
    assert_eq!(client.send(request).await.status, 200);
    let forwarded = seen_traceparent(&upstream);
    assert!(!forwarded.sampled, "parent-based: the caller's decision holds");
    // A request without a parent after it is sampled by the ratio (1.0): once its span is stored, the
    // first one would have been too had it been kept.
    assert_eq!(client.get("/b").await.status, 200);
    let spans = spans(&tracing, 1).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].name, "GET /b");
}

#[tokio::test]
async fn a_trace_is_started_when_none_arrives() {
    let upstream = Upstream::start("a").await;
    let (proxy, tracing) = traced_proxy(&[&upstream], 1.0).await;
    assert_eq!(Client::new(proxy.addr()).get("/new").await.status, 200);
    let spans = spans(&tracing, 1).await;
    assert_eq!(spans[0].parent_id, None);
    assert_eq!(spans[0].kept, Some(Kept::Sampled));
    let forwarded = seen_traceparent(&upstream);
    assert_eq!(forwarded.trace_id, spans[0].trace_id);
    assert_eq!(forwarded.parent_id, spans[0].span_id);
    assert!(forwarded.sampled);
}

#[tokio::test]
async fn an_invalid_traceparent_is_replaced_by_a_new_trace() {
    let upstream = Upstream::start("a").await;
    let (proxy, tracing) = traced_proxy(&[&upstream], 1.0).await;
    let mut client = Client::new(proxy.addr());
    for (n, invalid) in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "garbage",
    ]
    .into_iter()
    .enumerate()
    {
        let request =
            Request::get("/x").header("host", "svc.test").header("traceparent", invalid).body(full("")).expect("req");
        assert_eq!(client.send(request).await.status, 200);
        let forwarded = seen_traceparent(&upstream);
        assert_ne!(forwarded.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736", "{invalid}");
        let spans = spans(&tracing, n + 1).await;
        let span = spans.iter().find(|span| span.trace_id == forwarded.trace_id).expect("its span");
        assert_eq!(span.parent_id, None, "{invalid}: an invalid parent is treated as absent");
        assert_eq!(forwarded.parent_id, span.span_id);
    }
}

#[tokio::test]
async fn errors_are_kept_at_a_zero_ratio_and_successes_are_not() {
    let upstream = Upstream::start("a").await;
    let (proxy, tracing) = traced_proxy(&[&upstream], 0.0).await;
    let mut client = Client::new(proxy.addr());
    assert_eq!(client.get("/fine").await.status, 200);
    upstream.set(Mode::Status(500));
    assert_eq!(client.get("/broken").await.status, 500);
    let spans = spans(&tracing, 1).await;
    assert_eq!(spans.len(), 1, "only the error is kept: {spans:?}");
    assert_eq!(spans[0].name, "GET /broken");
    assert_eq!(spans[0].kept, Some(Kept::Error));
    assert!(spans[0].error);
    assert_eq!(spans[0].http_status, Some(500));
    // Unsampled at its start: the backend was told so.
    assert!(!seen_traceparent(&upstream).sampled);
}

#[tokio::test]
async fn slow_requests_are_kept_at_a_zero_ratio() {
    let upstream = Upstream::start("a").await;
    let tracing = Tracing::start(1 << 20, None);
    let mut cfg = config();
    cfg.tracing = Some(ProxyTracing {
        service: "web".to_owned(),
        sampling: Sampling { ratio: 0.0, slow: Duration::from_millis(150), keep_errors: true },
        recorder: tracing.recorder(),
        unix_nanos_at_bind: 0,
    });
    let proxy = TestProxy::start(cfg, RouteTable { backends: vec![backend(stable(0), &upstream)], canary: None }).await;
    let mut client = Client::new(proxy.addr());
    assert_eq!(client.get("/fast").await.status, 200);
    upstream.set(Mode::Slow(Duration::from_millis(300)));
    assert_eq!(client.get("/slow").await.status, 200);
    let spans = spans(&tracing, 1).await;
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].kept, Some(Kept::Slow));
    assert!(spans[0].duration >= Duration::from_millis(300));
}

#[tokio::test]
async fn retries_are_span_events() {
    let bad = Upstream::start("bad").await;
    let good = Upstream::start("good").await;
    bad.set(Mode::Status(503));
    let (proxy, tracing) = traced_proxy(&[&bad, &good], 1.0).await;
    let mut client = Client::new(proxy.addr());
    // Least-request picks either first; retry until one request went to `bad` first and was retried.
    let mut with_retry = None;
    for n in 0..40 {
        assert_eq!(client.get("/r").await.status, 200);
        let spans = spans(&tracing, n + 1).await;
        if let Some(span) = spans.iter().find(|span| span.events.iter().any(|event| event.name == "retry")) {
            with_retry = Some(span.clone());
            break;
        }
    }
    let span = with_retry.expect("a request retried on the other replica within 40");
    assert_eq!(span.attribute("mend.retries"), Some("1"));
    assert_eq!(span.attribute("mend.replica"), Some("1"), "answered by the good replica");
    let retry = span.events.iter().find(|event| event.name == "retry").expect("retry event");
    assert!(retry.attributes.contains(&("mend.replica".to_owned(), "1".to_owned())));
    assert!(retry.unix_nanos >= span.start_unix_nanos);
}

#[tokio::test]
async fn python_http_server_sees_the_forwarded_traceparent() {
    let python = PythonServer::start(&[("index.html", b"hello\n")]).await;
    let tracing = Tracing::start(1 << 20, None);
    let mut cfg = config();
    cfg.tracing = Some(ProxyTracing {
        service: "static".to_owned(),
        sampling: Sampling { ratio: 0.0, ..Sampling::default() },
        recorder: tracing.recorder(),
        unix_nanos_at_bind: 0,
    });
    let table = RouteTable {
        backends: vec![mend_proxy::Backend { id: stable(0), addr: python.addr, weight: 1 }],
        canary: None,
    };
    let proxy = TestProxy::start(cfg, table).await;
    let mut client = Client::new(proxy.addr());
    // The 404 first: its span, were it kept, would reach the store before the sampled request's.
    assert_eq!(client.get("/missing").await.status, 404);
    let request =
        Request::get("/index.html").header("host", "svc.test").header("traceparent", PARENT).body(full("")).expect("r");
    let reply = client.send(request).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello\n"));
    let spans = spans(&tracing, 1).await;
    // The 404 is neither sampled nor an error: only the sampled request's span is kept.
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].http_status, Some(200));
    assert_eq!(spans[0].trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
}
