//! The remote writer against a loopback HTTP receiver that answers as told: the wire format (headers,
//! snappy, protobuf) decoded back, 5xx and 429 retried until accepted, another 4xx dropped and counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mend_observe::series::{Limits, SeriesStore};
use mend_remote_write::proto::WriteRequest;
use mend_remote_write::{Endpoint, RemoteWriter, Settings};
use mend_types::Timestamp;
use prost::Message as _;

/// What the receiver got: per accepted request its decoded body; and the headers of the first request.
#[derive(Default)]
struct Received {
    accepted: Vec<WriteRequest>,
    headers: Vec<(String, String)>,
    n_requests: usize,
}

/// A receiver whose `n`th answer (from 0) is `statuses[n]`, or the last one after the list.
async fn receiver(statuses: Vec<u16>) -> (u16, Arc<Mutex<Received>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let received = Arc::new(Mutex::new(Received::default()));
    let seen = received.clone();
    let n_answered = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (seen, statuses, n_answered) = (seen.clone(), statuses.clone(), n_answered.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (seen, statuses, n_answered) = (seen.clone(), statuses.clone(), n_answered.clone());
                    async move {
                        let headers: Vec<(String, String)> = request
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        let body = request.into_body().collect().await.expect("body").to_bytes();
                        let idx = n_answered.fetch_add(1, SeqCst);
                        let status = *statuses.get(idx).or(statuses.last()).expect("statuses");
                        let decoded = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
                        let write = WriteRequest::decode(decoded.as_slice()).expect("protobuf");
                        let mut seen = seen.lock().expect("lock");
                        seen.n_requests += 1;
                        if seen.headers.is_empty() {
                            seen.headers = headers;
                        }
                        if (200..300).contains(&status) {
                            seen.accepted.push(write);
                        }
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder().status(status).body(Full::new(Bytes::new())).expect("response"),
                        )
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (port, received)
}

fn settings(port: u16) -> Settings {
    Settings {
        endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}/api/v1/write")).expect("valid"),
        interval: Duration::from_millis(50),
        max_samples_per_request: 100,
        queue_requests: 4,
        timeout: Duration::from_secs(5),
        authorization: Some("Bearer t0ken".to_owned()),
        labels: BTreeMap::from([("host".to_owned(), "h1".to_owned())]),
        send_after: None,
    }
}

fn settings_endpoint(port: u16) -> Endpoint {
    Endpoint::parse(&format!("http://127.0.0.1:{port}/api/v1/write")).expect("valid")
}

fn store_with(n_points: i64) -> Arc<RwLock<SeriesStore>> {
    let mut store = SeriesStore::new(Limits::default());
    let labels = store.labels("mend_replica_up", &[("service", "web")]);
    for idx in 0..n_points {
        store.append(&labels, Timestamp::from_millis(1_700_000_000_000 + idx * 1000), idx as f64).expect("room");
    }
    Arc::new(RwLock::new(store))
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn retries_5xx_and_429_until_accepted_and_sends_the_wire_format() {
    let (port, received) = receiver(vec![503, 429, 500, 204]).await;
    let writer = RemoteWriter::start(settings(port), store_with(3));
    until("the samples are accepted", || !received.lock().expect("lock").accepted.is_empty()).await;
    // The writer counts once it has read the answer, just after the receiver recorded the request.
    until("the samples are counted", || writer.stats().samples_sent.load(SeqCst) == 3).await;
    let seen = received.lock().expect("lock");
    assert_eq!(seen.n_requests, 4, "three refusals retried, then accepted");
    let header = |name: &str| seen.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(header("content-encoding"), Some("snappy"));
    assert_eq!(header("content-type"), Some("application/x-protobuf"));
    assert_eq!(header("x-prometheus-remote-write-version"), Some("0.1.0"));
    assert_eq!(header("authorization"), Some("Bearer t0ken"));
    let series = &seen.accepted[0].timeseries;
    assert_eq!(series.len(), 1);
    let labels: Vec<(&str, &str)> = series[0].labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
    assert_eq!(labels, [("__name__", "mend_replica_up"), ("host", "h1"), ("service", "web")]);
    let values: Vec<(i64, f64)> = series[0].samples.iter().map(|s| (s.timestamp, s.value)).collect();
    assert_eq!(values, [(1_700_000_000_000, 0.0), (1_700_000_001_000, 1.0), (1_700_000_002_000, 2.0)]);
    let stats = writer.stats();
    assert_eq!(stats.samples_sent.load(SeqCst), 3);
    assert_eq!(stats.requests_retried.load(SeqCst), 3);
    assert_eq!(stats.samples_rejected.load(SeqCst), 0);
}

#[tokio::test]
async fn a_4xx_drops_the_request_and_counts_its_samples() {
    let (port, received) = receiver(vec![400, 204]).await;
    let store = store_with(250);
    let writer = RemoteWriter::start(settings(port), store.clone());
    // 250 samples in requests of 100: the first refused, the next two accepted; no retry of the refused.
    until("every request answered", || {
        writer.stats().samples_sent.load(SeqCst) + writer.stats().samples_rejected.load(SeqCst) == 250
    })
    .await;
    assert_eq!(writer.stats().samples_rejected.load(SeqCst), 100);
    assert_eq!(writer.stats().samples_sent.load(SeqCst), 150);
    assert_eq!(writer.stats().requests_retried.load(SeqCst), 0);
    assert_eq!(received.lock().expect("lock").n_requests, 3);
    // A new point goes out once, alone.
    {
        let mut store = store.write().expect("lock");
        let labels = store.labels("mend_replica_up", &[("service", "web")]);
        store.append(&labels, Timestamp::from_millis(1_700_000_250_000), 1.0).expect("room");
    }
    until("the new point is sent", || writer.stats().samples_sent.load(SeqCst) == 151).await;
    let metrics = writer.openmetrics();
    assert!(metrics.contains("mend_remote_write_samples_total{outcome=\"rejected\"} 100\n"), "{metrics}");
    assert!(metrics.contains("mend_remote_write_queue_max_samples 400\n"), "{metrics}");
}

#[tokio::test]
async fn a_backlog_larger_than_the_queue_is_sent_whole_while_the_receiver_answers() {
    let (port, received) = receiver(vec![204]).await;
    // 250 samples, 10 a request, 2 requests queued at most: the rest waits in the store, none is dropped.
    let settings = Settings { max_samples_per_request: 10, queue_requests: 2, ..settings(port) };
    let writer = RemoteWriter::start(settings, store_with(250));
    until("every sample sent", || writer.stats().samples_sent.load(SeqCst) == 250).await;
    assert_eq!(writer.stats().samples_dropped_queue_full.load(SeqCst), 0);
    let seen = received.lock().expect("lock");
    let timestamps: Vec<i64> = seen
        .accepted
        .iter()
        .flat_map(|request| request.timeseries.iter().flat_map(|series| series.samples.iter().map(|s| s.timestamp)))
        .collect();
    let expected: Vec<i64> = (0..250).map(|idx| 1_700_000_000_000 + idx * 1000).collect();
    assert_eq!(timestamps, expected, "each sample once, in order");
}

#[tokio::test]
async fn a_flush_sends_what_came_since_the_last_pass_and_gives_up_on_a_failing_receiver() {
    let (port, received) = receiver(vec![204]).await;
    // Passes an hour apart: only the first (at start) and the flush's.
    let settings = Settings { interval: Duration::from_secs(3600), ..settings(port) };
    let store = store_with(3);
    let writer = RemoteWriter::start(settings.clone(), store.clone());
    until("the first pass is sent", || writer.stats().samples_sent.load(SeqCst) == 3).await;
    {
        let mut store = store.write().expect("lock");
        let labels = store.labels("mend_replica_up", &[("service", "web")]);
        store.append(&labels, Timestamp::from_millis(1_700_000_003_000), 0.0).expect("room");
    }
    assert!(writer.flush(Duration::from_secs(30)).await, "everything went out");
    assert_eq!(writer.stats().samples_sent.load(SeqCst), 4);
    assert_eq!(received.lock().expect("lock").accepted.len(), 2);

    // A receiver that answers 503: the flush ends when the attempt fails, not at its bound.
    let (port, _) = receiver(vec![503]).await;
    let failing = Settings { endpoint: settings_endpoint(port), ..settings };
    let writer = RemoteWriter::start(failing, store_with(3));
    let started = tokio::time::Instant::now();
    assert!(!writer.flush(Duration::from_secs(30)).await);
    assert!(started.elapsed() < Duration::from_secs(30), "ended by the failure, not the bound");
    assert!(writer.stats().requests_retried.load(SeqCst) > 0);
}
