//! Tracing end to end: `mend run` with `[tracing]` in front of `python3 -m http.server`, spans exported
//! over OTLP/HTTP to a receiver in the test that decodes them with `opentelemetry-proto`, spans accepted
//! on `POST /v1/traces` joining the proxy's, `GET /api/v1/traces` and `mend traces`; and a receiver that
//! never answers slowing no request while the drops are counted.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Daemon, KeepAlive, eventually, free_ports, get, http, http_with_body};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER: &str = "b7ad6b7169203331";

/// An OTLP/HTTP receiver: every `POST` body decoded as an `ExportTraceServiceRequest` and sent on.
fn receiver() -> (SocketAddr, mpsc::Receiver<ExportTraceServiceRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut raw = Vec::new();
                let mut buf = [0u8; 65536];
                let (head_end, length) = loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                        assert!(head.starts_with("post /v1/traces "), "{head}");
                        assert!(head.contains("content-type: application/x-protobuf"), "{head}");
                        let length = head
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .expect("content-length");
                        break (end + 4, length);
                    }
                };
                while raw.len() < head_end + length {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                let request = ExportTraceServiceRequest::decode(&raw[head_end..head_end + length]).expect("OTLP");
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                let _ = tx.send(request);
            });
        }
    });
    (addr, rx)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|idx| u8::from_str_radix(&text[idx..idx + 2], 16).expect("hex")).collect()
}

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
        ..KeyValue::default()
    }
}

fn python_service(extra_tracing: &str) -> (Daemon, SocketAddr) {
    let port = free_ports(1);
    let proxy_port = free_ports(1);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
token = "s3cret"
[tracing]
ratio = 0.0
{extra_tracing}
[service.web]
command = ["python3", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1"]
ports = "{port}"
[service.web.readiness]
http = "http://127.0.0.1:{{port}}/"
[service.web.proxy]
listen = "127.0.0.1:{proxy_port}"
"#
    ));
    daemon.wait_ready("web");
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    eventually(Duration::from_secs(15), "the proxy routes to python", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    (daemon, proxy)
}

#[test]
fn an_error_span_is_exported_and_spans_sent_in_join_it() {
    let (receiver_addr, exported) = receiver();
    let (daemon, proxy) = python_service(&format!(
        "[tracing.export]\nendpoint = \"http://{receiver_addr}/v1/traces\"\nbatch_spans = 1\nflush_interval = \"50ms\"\n"
    ));

    // python's http.server answers DELETE with 501: an error, kept at a zero ratio; the GET is not.
    let parent = format!("00-{TRACE}-{CALLER}-00");
    let fine = http("GET", proxy, "/", &[]).expect("GET");
    assert_eq!(fine.status, 200);
    let broken = http("DELETE", proxy, "/", &[("traceparent", &parent), ("tracestate", "a=1")]).expect("DELETE");
    assert_eq!(broken.status, 501);

    let request = exported.recv_timeout(Duration::from_secs(20)).expect("an export request within 20s");
    let resource = &request.resource_spans[0];
    let service = resource.resource.as_ref().expect("resource").attributes.iter().find(|kv| kv.key == "service.name");
    assert_eq!(service, Some(&string_attr("service.name", "web")));
    let span = &resource.scope_spans[0].spans[0];
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(hex(&span.parent_span_id), CALLER);
    assert_eq!(span.name, "DELETE /");
    assert_eq!(span.status.as_ref().map(|status| status.code), Some(2), "status ERROR");
    assert!(span.end_time_unix_nano > span.start_time_unix_nano);
    // Only the error was kept: nothing else arrives.
    let proxy_span_id = hex(&span.span_id);

    // The service's own span, child of the proxy's, sent in over OTLP.
    let theirs = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attr("service.name", "web-internal")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: unhex(TRACE),
                    span_id: unhex("00000000000000aa"),
                    parent_span_id: unhex(&proxy_span_id),
                    name: "handle delete".to_owned(),
                    kind: 2,
                    start_time_unix_nano: span.start_time_unix_nano + 1_000,
                    end_time_unix_nano: span.start_time_unix_nano + 2_000,
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec();
    // A protobuf body is not text: it goes out as raw bytes.
    let send = |token: Option<&str>| {
        let mut stream = std::net::TcpStream::connect(daemon.api).expect("connect");
        let auth = token.map(|token| format!("authorization: Bearer {token}\r\n")).unwrap_or_default();
        let head = format!(
            "POST /v1/traces HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-type: application/x-protobuf\r\n{auth}content-length: {}\r\n\r\n",
            daemon.api,
            theirs.len()
        );
        stream.write_all(head.as_bytes()).expect("head");
        stream.write_all(&theirs).expect("body");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    let refused = send(None);
    assert!(refused.starts_with("HTTP/1.1 401"), "the intake needs the token like other mutating calls: {refused}");
    assert!(send(Some("s3cret")).starts_with("HTTP/1.1 200"));
    let garbage = http_with_body(
        "POST",
        daemon.api,
        "/v1/traces",
        &[("authorization", "Bearer s3cret"), ("content-type", "application/x-protobuf")],
        "not protobuf at all",
    )
    .expect("post");
    assert_eq!(garbage.status, 400, "{}", garbage.body);

    let trace = eventually(Duration::from_secs(10), "both spans in the trace", || {
        let response = get(daemon.api, &format!("/api/v1/traces/{TRACE}"));
        (response.status == 200 && response.json()["spans"].as_array()?.len() == 2).then(|| response.json())
    });
    let spans = trace["spans"].as_array().expect("spans");
    let services: Vec<&str> = spans.iter().filter_map(|span| span["service"].as_str()).collect();
    assert_eq!(services, ["web", "web-internal"]);
    assert_eq!(spans[1]["parent_id"], proxy_span_id.as_str());
    assert_eq!(spans[0]["parent_id"], CALLER);
    assert_eq!(spans[0]["kept"], "error");

    let listing = get(daemon.api, "/api/v1/traces?errors=true").json();
    assert_eq!(listing["traces"].as_array().map(Vec::len), Some(1), "{listing}");
    assert_eq!(listing["traces"][0]["trace_id"], TRACE);
    assert_eq!(get(daemon.api, "/api/v1/traces?limit=0").status, 400);
    assert_eq!(get(daemon.api, "/api/v1/traces/XYZ").status, 400);

    let cli = daemon.cli(&["traces", "--errors", "--service", "web"]);
    let out = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success() && out.contains(TRACE) && out.contains("DELETE /"), "{out}");
    let one = daemon.cli(&["traces", TRACE]);
    let out = String::from_utf8_lossy(&one.stdout);
    assert!(out.contains("handle delete") && out.contains("web-internal"), "{out}");

    // The service's span goes out with the proxy's: mend exports what it received too.
    let second = exported.recv_timeout(Duration::from_secs(20)).expect("a second export request");
    let span = &second.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!((span.name.as_str(), hex(&span.parent_span_id)), ("handle delete", proxy_span_id.clone()));
    eventually(Duration::from_secs(10), "export counted", || {
        let metrics = get(daemon.api, "/metrics").body;
        (metrics.contains("mend_trace_spans_exported_total 2")
            && metrics.contains("mend_trace_spans_total{outcome=\"otlp\"} 1")
            && metrics.contains("mend_trace_spans_total{outcome=\"proxy\"} 1"))
        .then_some(())
    });
}

#[test]
fn a_receiver_that_never_answers_slows_no_request_and_drops_are_counted() {
    // Accepts connections (the kernel does) and never reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let (daemon, proxy) = python_service(&format!(
        "[tracing.export]\nendpoint = \"http://{silent_addr}/v1/traces\"\nbatch_spans = 1\nqueue_batches = 1\n\
         flush_interval = \"10ms\"\ntimeout = \"60s\"\n"
    ));
    // Every request an error (501), so every span is kept and exported: the first export hangs for 60 s,
    // the queue holds one more, the rest are dropped.
    let started = Instant::now();
    let mut client = KeepAlive::new(proxy);
    for _ in 0..50 {
        let reply = client.request("DELETE", "/", &[], b"").expect("an answer");
        assert_eq!(reply.status, 501);
    }
    // Had a request waited on the export, it would have taken the 60 s export timeout.
    assert!(started.elapsed() < Duration::from_secs(45), "50 requests took {:?}", started.elapsed());
    eventually(Duration::from_secs(10), "drops counted", || {
        let metrics = get(daemon.api, "/metrics").body;
        let line =
            metrics.lines().find(|line| line.starts_with("mend_trace_spans_dropped_total{outcome=\"queue_full\"}"))?;
        let dropped: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (dropped >= 40).then_some(dropped)
    });
    // The store still has them all.
    let listing = get(daemon.api, "/api/v1/traces?limit=100").json();
    assert_eq!(listing["stats"]["store"]["spans"], 50, "{listing}");
    drop(silent);
}
