//! The proxy in a multi-thread runtime, where it serves on one event loop per worker thread, each with
//! its own `SO_REUSEPORT` listener: forwarding, pooling, stats, drain, shutdown and drop behave as on one
//! thread.
#![allow(clippy::disallowed_methods)] // Tests wait in real time on real sockets.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use mend_proxy::DrainOutcome;
use support::{Client, Mode, TestProxy, Upstream, backend, get, load, stable};
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_is_served_and_backend_connections_are_pooled() {
    let first = Upstream::start("a").await;
    let second = Upstream::start("b").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &first), backend(stable(1), &second)]).await;
    let addr = proxy.addr();
    // A fresh client connection per request: the kernel spreads them over the listeners.
    let fresh = load(300, 12, move |_| async move { get(addr, "/").await }).await;
    // Keep-alive clients.
    let kept = load(300, 6, move |_| async move {
        let mut client = Client::new(addr);
        client.get("/").await;
        client.get("/").await
    })
    .await;
    assert!(fresh.iter().chain(&kept).all(|reply| reply.status == 200));
    let stats = proxy.handle.stats();
    assert_eq!(stats.total.status_2xx, 300 + 600);
    assert_eq!(stats.connections_accepted, 300 + 300);
    assert_eq!(first.count() + second.count(), 900);
    let upstream_connections = first.connections.load(SeqCst) + second.connections.load(SeqCst);
    // At most one per concurrent request, per event loop, per backend.
    assert!(upstream_connections <= 2 * 2 * 12, "{upstream_connections} backend connections for 900 requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_shutdown_wait_for_requests_in_flight_on_any_event_loop() {
    let gate = Arc::new(Notify::new());
    let upstream = Upstream::start("a").await;
    upstream.set(Mode::Gate(gate.clone()));
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let addr = proxy.addr();
    let requests: Vec<_> = (0..6).map(|_| tokio::spawn(get(addr, "/"))).collect();
    support::eventually("requests in flight", || upstream.count() == 6).await;

    let drain = tokio::spawn(proxy.handle.drain(stable(0), Duration::from_secs(5)));
    // Both begin (the backend is drained, then nothing accepts) and wait for the requests in flight.
    support::eventually("the backend is drained", || {
        proxy.handle.stats().backend(stable(0)).is_some_and(|backend| backend.draining)
    })
    .await;
    let shutdown = tokio::spawn(proxy.handle.shutdown());
    support::stops_accepting(addr, "no longer accepting during shutdown").await;
    assert!(!drain.is_finished() && !shutdown.is_finished(), "they wait for the requests in flight");
    gate.notify_waiters();
    for request in requests {
        assert_eq!(request.await.expect("request").status, 200);
    }
    assert!(matches!(drain.await.expect("drain"), DrainOutcome::Drained { .. }));
    assert!(shutdown.await.expect("shutdown").graceful);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_closes_every_connection() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let addr = proxy.addr();
    let mut senders = Vec::new();
    for _ in 0..4 {
        let mut sender = support::connect(addr).await;
        let request = hyper::Request::get("/").header("host", "a").body(support::full("")).expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        senders.push(sender);
    }
    drop(proxy);
    support::eventually("keep-alive connections closed", || senders.iter().all(|sender| sender.is_closed())).await;
    support::stops_accepting(addr, "no longer accepting after the handle was dropped").await;
}
