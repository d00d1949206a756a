//! Failures lose no request: retries (what, when, where, how many), outlier ejection and slow start,
//! draining and shutdown — against upstreams that refuse, reset, hang and fail on loopback.
//!
//! Where time is the subject (timeouts, ejection and its back-off, slow start), tests run on tokio's
//! paused clock, which the proxy reads: it stands still while the runtime has work (loopback I/O between
//! in-process tasks included) and jumps to the next timer when everything waits, so durations come out
//! exact and a test waits for nothing.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Request;
use mend_proxy::{BackendId, DrainOutcome, EjectionReason, LoadBalancing, ProxyConfig, Release, RouteTable};
use support::{Client, Mode, TestProxy, Upstream, backend, by_upstream, config, full, get, load, stable};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

fn table(upstreams: &[&Upstream]) -> RouteTable {
    let backends = upstreams.iter().enumerate().map(|(idx, upstream)| backend(stable(idx as u32), upstream)).collect();
    RouteTable { backends, canary: None }
}

/// Round robin, so that the first attempt of the first request goes to the first backend.
fn round_robin() -> ProxyConfig {
    let mut cfg = config();
    cfg.load_balancing = LoadBalancing::RoundRobin;
    cfg
}

fn post(body: &'static str) -> Request<support::UpBody> {
    Request::post("/submit").header("host", "svc").body(full(body)).expect("request")
}

#[tokio::test]
async fn connect_failures_are_retried_elsewhere_for_any_method() {
    let mut dead = Upstream::start("dead").await;
    dead.stop();
    let live = Upstream::start("live").await;
    let proxy = TestProxy::start(round_robin(), table(&[&dead, &live])).await;
    let mut client = Client::new(proxy.addr());
    for _ in 0..20 {
        let reply = client.send(post("order")).await;
        assert_eq!((reply.status, reply.upstream()), (200, "live"));
    }
    assert_eq!(live.count(), 20);
    assert_eq!(&live.last_seen().body[..], b"order");
    let stats = proxy.handle.stats();
    let dead_stats = stats.backend(stable(0)).expect("dead backend listed");
    assert!(dead_stats.attempts.connect_failures >= 1);
    assert_eq!(dead_stats.ejections, 1, "three connect failures in a row eject it");
    let ejection = dead_stats.last_ejection.expect("ejected");
    assert_eq!((ejection.reason, ejection.consecutive_failures), (EjectionReason::ConnectFailure, 3));
    assert_eq!(stats.total.status_2xx, 20);
}

#[tokio::test]
async fn resets_before_any_response_byte_are_retried_for_any_method_with_the_buffered_body() {
    let resetting = Upstream::start("reset").await;
    resetting.set(Mode::Reset);
    let live = Upstream::start("live").await;
    let proxy = TestProxy::start(round_robin(), table(&[&resetting, &live])).await;
    let reply = Client::new(proxy.addr()).send(post("payment")).await;
    assert_eq!((reply.status, reply.upstream()), (200, "live"));
    assert_eq!(resetting.count(), 1, "the first attempt reached the resetting backend");
    assert_eq!(&live.last_seen().body[..], b"payment", "the buffered body was replayed");
    assert_eq!(proxy.handle.stats().backend(stable(0)).map(|b| b.attempts.resets), Some(1));
}

#[tokio::test]
async fn gateway_errors_are_retried_only_for_idempotent_or_keyed_requests() {
    let failing = Upstream::start("failing").await;
    failing.set(Mode::Status(503));
    let live = Upstream::start("live").await;
    let mut cfg = round_robin();
    cfg.outlier.consecutive_failures = 1000;
    let proxy = TestProxy::start(cfg, table(&[&failing, &live])).await;
    let mut client = Client::new(proxy.addr());
    let cases: [(&str, Option<&str>, u16); 4] =
        [("GET", None, 200), ("PUT", None, 200), ("POST", None, 503), ("POST", Some("key-1"), 200)];
    for (method, key, expected) in cases {
        // Round robin alternates; a request whose first attempt goes to `failing` shows the policy.
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let mut request = Request::builder().method(method).uri("/").header("host", "svc");
            if let Some(key) = key {
                request = request.header("idempotency-key", key);
            }
            statuses.push(client.send(request.body(full("b")).expect("request")).await.status);
        }
        assert!(statuses.contains(&expected), "{method} {key:?}: {statuses:?}");
        if expected == 200 {
            assert_eq!(statuses, [200, 200], "{method} {key:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_backend_costs_at_most_the_attempt_timeout_then_is_ejected() {
    let hung = Upstream::start("hung").await;
    hung.set(Mode::Hang);
    let live = Upstream::start("live").await;
    let mut cfg = round_robin();
    cfg.attempt_timeout = Duration::from_millis(200);
    let proxy = TestProxy::start(cfg, table(&[&hung, &live])).await;
    let mut worst = Duration::ZERO;
    let mut client = Client::new(proxy.addr());
    for _ in 0..20 {
        let started = Instant::now();
        let reply = client.get("/").await;
        worst = worst.max(started.elapsed());
        assert_eq!((reply.status, reply.upstream()), (200, "live"));
    }
    support::assert_took(
        worst,
        Duration::from_millis(200),
        "the worst request (one that hit the hung backend first) waited its attempt timeout",
    );
    let stats = proxy.handle.stats();
    let hung_stats = stats.backend(stable(0)).expect("listed");
    assert_eq!((hung_stats.attempts.timeouts, hung_stats.ejections), (3, 1), "ejected after 3 timeouts");
    assert_eq!(hung_stats.last_ejection.map(|ejection| ejection.reason), Some(EjectionReason::Timeout));
    assert_eq!(hung_stats.in_flight, 0, "abandoned attempts are not in flight");
}

#[tokio::test(start_paused = true)]
async fn a_non_idempotent_request_waits_for_a_slow_backend_instead_of_being_retried() {
    let slow = Upstream::start("slow").await;
    slow.set(Mode::Slow(Duration::from_millis(400)));
    let live = Upstream::start("live").await;
    let mut cfg = round_robin();
    cfg.attempt_timeout = Duration::from_millis(100);
    let proxy = TestProxy::start(cfg.clone(), table(&[&slow, &live])).await;
    let started = Instant::now();
    let reply = Client::new(proxy.addr()).send(post("once")).await;
    assert_eq!((reply.status, reply.upstream()), (200, "slow"), "waited past the attempt timeout");
    support::assert_took(started.elapsed(), Duration::from_millis(400), "the slow answer");
    assert_eq!(live.count(), 0, "never sent twice");

    // With nothing to retry on, the request timeout answers 504.
    cfg.request_timeout = Duration::from_millis(300);
    let hung = Upstream::start("hung").await;
    hung.set(Mode::Hang);
    let proxy = TestProxy::start(cfg, table(&[&hung])).await;
    let started = Instant::now();
    let reply = get(proxy.addr(), "/").await;
    assert_eq!(reply.status, 504);
    support::assert_took(started.elapsed(), Duration::from_millis(300), "answered at the request timeout");
    assert_eq!(proxy.handle.stats().local.gateway_timeouts, 1);
}

#[tokio::test]
async fn the_retry_budget_bounds_retries() {
    let first = Upstream::start("a").await;
    let second = Upstream::start("b").await;
    first.set(Mode::Status(503));
    second.set(Mode::Status(503));
    let mut cfg = config();
    cfg.outlier.consecutive_failures = 100_000;
    cfg.retry.budget_ratio = 0.1;
    cfg.retry.min_retries_per_second = 0;
    let proxy = TestProxy::start(cfg, table(&[&first, &second])).await;
    let replies = load(300, 4, {
        let addr = proxy.addr();
        move |_| async move { get(addr, "/").await }
    })
    .await;
    assert!(replies.iter().all(|reply| reply.status == 503));
    let stats = proxy.handle.stats();
    assert!(stats.retries <= 30, "retries {} exceed 10 % of 300", stats.retries);
    assert!(stats.retries >= 25, "retries {} should use the budget", stats.retries);
    assert_eq!(first.count() + second.count(), 300 + stats.retries);
    assert!(stats.retries_denied > 0);
}

#[tokio::test]
async fn a_streamed_body_is_retried_only_if_no_byte_was_sent() {
    let resetting = Upstream::start("reset").await;
    resetting.set(Mode::Reset);
    let live = Upstream::start("live").await;
    let mut cfg = round_robin();
    cfg.retry_buffer_bytes = 1024;
    let big = || Request::post("/").header("host", "svc").body(full(vec![b'z'; 256 * 1024])).expect("request");
    let proxy = TestProxy::start(cfg.clone(), table(&[&resetting, &live])).await;
    let reply = Client::new(proxy.addr()).send(big()).await;
    assert_eq!(reply.status, 502, "the body was partly sent and cannot be replayed");
    assert_eq!(live.count(), 0);

    let mut dead = Upstream::start("dead").await;
    dead.stop();
    let proxy = TestProxy::start(cfg, table(&[&dead, &live])).await;
    let reply = Client::new(proxy.addr()).send(big()).await;
    assert_eq!((reply.status, reply.upstream()), (200, "live"), "nothing was sent on a refused connect");
    assert_eq!(live.last_seen().body.len(), 256 * 1024);
}

/// Sends `n` GETs on `client` in turn; how many each upstream answered.
async fn spread(client: &mut Client, n: usize) -> std::collections::HashMap<String, usize> {
    let mut replies = Vec::new();
    for _ in 0..n {
        replies.push(client.get("/").await);
    }
    by_upstream(&replies)
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_eject_a_backend_longer_each_time_in_a_row_then_it_returns() {
    let failing = Upstream::start("failing").await;
    failing.set(Mode::Status(500));
    let live = Upstream::start("live").await;
    let mut cfg = round_robin();
    cfg.outlier.base_ejection = Duration::from_secs(1);
    cfg.slow_start = Duration::ZERO;
    // The 500s reach the client here, so that each one shows (`retry_on.rs` has them retried).
    cfg.retry.retry_on.server_errors = false;
    let proxy = TestProxy::start(cfg, table(&[&failing, &live])).await;
    let mut client = Client::new(proxy.addr());
    let ejected = || proxy.handle.stats().backend(stable(0)).map(|b| (b.ejections, b.ejected));
    let failures = |replies: &std::collections::HashMap<String, usize>| replies.get("failing").copied().unwrap_or(0);

    // Round robin: every other request goes to `failing` until three 500s in a row eject it.
    let mut replies = Vec::new();
    while ejected() == Some((0, false)) {
        replies.push(client.get("/").await);
        assert!(replies.len() <= 6, "not ejected after {} requests", replies.len());
    }
    let first_ejected_at = Instant::now();
    assert_eq!(replies.iter().filter(|reply| reply.status == 500).count(), 3, "500 is not retried by this policy");
    assert_eq!((failing.count(), ejected()), (3, Some((1, true))));
    // Why and for how long, for the operator: the status that ended the run, the time left.
    let ejection = proxy.handle.stats().backend(stable(0)).and_then(|b| b.last_ejection).expect("ejected");
    assert_eq!(
        (ejection.reason, ejection.duration, ejection.streak),
        (EjectionReason::ServerError(500), Duration::from_secs(1), 1)
    );
    assert!(ejection.remaining > Duration::ZERO && ejection.remaining <= ejection.duration, "{ejection:?}");

    // The first ejection lasts the base ejection, to the millisecond.
    sleep_until(first_ejected_at + Duration::from_millis(999)).await;
    assert_eq!(failures(&spread(&mut client, 10).await), 0, "ejected for the base ejection");
    sleep_until(first_ejected_at + Duration::from_millis(1000)).await;
    assert_eq!(ejected(), Some((1, false)), "the ejection ends after the base ejection");
    // Back in rotation and still failing: ejected again at once, for twice as long (a streak).
    let mut replies = Vec::new();
    while ejected() == Some((1, false)) {
        replies.push(client.get("/").await);
        assert!(replies.len() <= 6, "not ejected again after {} requests", replies.len());
    }
    let second_ejected_at = Instant::now();
    assert_eq!((failing.count(), ejected()), (6, Some((2, true))), "{:?}", by_upstream(&replies));
    sleep_until(second_ejected_at + Duration::from_millis(1999)).await;
    assert_eq!(failures(&spread(&mut client, 10).await), 0, "the second ejection in a row lasts twice the base");
    assert_eq!(ejected(), Some((2, true)));

    // Recovered by the end of it: back in rotation, half the requests.
    failing.set(Mode::Ok);
    sleep_until(second_ejected_at + Duration::from_millis(2000)).await;
    assert_eq!(ejected(), Some((2, false)));
    assert_eq!(spread(&mut client, 10).await.get("failing"), Some(&5), "back in rotation after the ejection");
    let back = proxy.handle.stats().backend(stable(0)).and_then(|b| b.last_ejection).expect("was ejected");
    assert_eq!(back.remaining, Duration::ZERO, "over: {back:?}");
}

#[tokio::test]
async fn ejection_never_exceeds_the_limit_nor_takes_the_last_backend() {
    let only = Upstream::start("only").await;
    only.set(Mode::Status(500));
    let proxy = TestProxy::with(vec![backend(stable(0), &only)]).await;
    for _ in 0..10 {
        assert_eq!(get(proxy.addr(), "/").await.status, 500);
    }
    assert_eq!(only.count(), 10, "the last backend keeps receiving traffic");
    assert_eq!(proxy.handle.stats().backend(stable(0)).map(|b| b.ejections), Some(0));

    let upstreams = [Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await];
    for upstream in &upstreams {
        upstream.set(Mode::Status(500));
    }
    let mut cfg = config();
    cfg.outlier.max_ejection_percent = 50;
    let proxy = TestProxy::start(cfg, table(&[&upstreams[0], &upstreams[1], &upstreams[2]])).await;
    for _ in 0..60 {
        get(proxy.addr(), "/").await;
    }
    let ejected = proxy.handle.stats().backends.iter().filter(|b| b.ejected).count();
    assert_eq!(ejected, 1, "50 % of 3 backends allows one ejection");
}

#[tokio::test(start_paused = true)]
async fn a_new_generation_ramps_up_through_slow_start() {
    let old = Upstream::start("old").await;
    let new = Upstream::start("new").await;
    let mut cfg = round_robin();
    cfg.slow_start = Duration::from_millis(1500);
    let proxy = TestProxy::start(cfg, table(&[&old])).await;
    let mut both = table(&[&old]);
    both.backends.push(mend_proxy::Backend {
        id: BackendId { release: Release::Stable, index: 1, generation: 7 },
        addr: new.addr,
        weight: 1,
    });
    // The new backend's slow start begins when the proxy applies the table: between these two instants.
    let publishing = Instant::now();
    proxy.publish(both).await;
    let published = Instant::now();
    assert!(published - publishing < Duration::from_millis(50), "the table took {:?}", published - publishing);
    let mut client = Client::new(proxy.addr());
    // Weighted round robin is deterministic (a low-discrepancy sequence): the new backend's share of 1,000
    // requests is its weight's share to within a few requests. It starts at a tenth of its weight
    // (1 : 10 of the old one), is at half of it halfway through (1 : 2) and at all of it after (1 : 1).
    let cases = [
        (published, 91),
        (publishing + Duration::from_millis(750), 333),
        (published + Duration::from_millis(1500), 500),
    ];
    for (at, expected) in cases {
        sleep_until(at).await;
        let share = spread(&mut client, 1000).await.get("new").copied().unwrap_or(0);
        assert!(share.abs_diff(expected) <= 20, "at {:?}: {share} of 1000, not about {expected}", at - publishing);
    }
}

#[tokio::test]
async fn drain_stops_new_requests_at_once_and_waits_for_those_in_flight() {
    let gate = Arc::new(Notify::new());
    let draining = Upstream::start("draining").await;
    draining.set(Mode::Gate(gate.clone()));
    let other = Upstream::start("other").await;
    let proxy = TestProxy::start(round_robin(), table(&[&draining, &other])).await;
    // Two requests in flight on the backend about to be drained.
    let in_flight: Vec<_> = (0..4).map(|_| tokio::spawn(get(proxy.addr(), "/"))).collect();
    support::eventually("two requests waiting on the gate", || draining.count() == 2).await;

    let drain = tokio::spawn(proxy.handle.drain(stable(0), Duration::from_secs(5)));
    for _ in 0..10 {
        assert_eq!(get(proxy.addr(), "/").await.upstream(), "other", "drained backend got a new request");
    }
    assert!(!drain.is_finished());
    gate.notify_waiters();
    let outcome = drain.await.expect("drain task");
    assert!(matches!(outcome, DrainOutcome::Drained { .. }), "{outcome:?}");
    for reply in in_flight {
        assert_eq!(reply.await.expect("request").status, 200, "in-flight requests complete normally");
    }
    assert_eq!(draining.count(), 2);

    // A drain that times out says how many are left; an unknown backend says so.
    let stuck = Arc::new(Notify::new());
    other.set(Mode::Gate(stuck.clone()));
    let pending = tokio::spawn(get(proxy.addr(), "/"));
    support::eventually("request in flight", || other.count() == 13).await;
    let outcome = proxy.handle.drain(stable(1), Duration::from_millis(100)).await;
    assert_eq!(outcome, DrainOutcome::TimedOut { in_flight: 1 });
    stuck.notify_waiters();
    assert_eq!(pending.await.expect("request").status, 200);
    let unknown = BackendId { release: Release::Stable, index: 9, generation: 1 };
    assert_eq!(proxy.handle.drain(unknown, Duration::from_secs(1)).await, DrainOutcome::UnknownBackend);
    assert_eq!(get(proxy.addr(), "/").await.status, 503, "both drained: no backend");
    assert!(proxy.handle.resume(stable(1)));
}

#[tokio::test]
async fn requests_abandoned_by_their_clients_leave_nothing_in_flight() {
    let hung = Upstream::start("hung").await;
    hung.set(Mode::Hang);
    let other = Upstream::start("other").await;
    let proxy = TestProxy::start(round_robin(), table(&[&hung, &other])).await;
    // Clients that give up while the backend has not answered: their request futures are dropped
    // between the attempt's start and any response.
    let mut waiting = Vec::new();
    for _ in 0..6 {
        waiting.push(tokio::spawn(get(proxy.addr(), "/")));
    }
    support::eventually("three requests waiting on the hung backend", || hung.count() == 3).await;
    for client in &waiting {
        client.abort();
    }
    let in_flight = || proxy.handle.stats().backend(stable(0)).map(|backend| backend.in_flight);
    support::eventually("the abandoned requests end", || in_flight() == Some(0)).await;
    // So a drain of that backend does not wait out its timeout for requests nobody waits for.
    let started = Instant::now();
    let outcome = proxy.handle.drain(stable(0), Duration::from_secs(10)).await;
    assert!(matches!(outcome, DrainOutcome::Drained { .. }), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "drain took {:?}", started.elapsed());
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_stops_accepting() {
    let gate = Arc::new(Notify::new());
    let upstream = Upstream::start("a").await;
    upstream.set(Mode::Gate(gate.clone()));
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let addr = proxy.addr();
    let request = tokio::spawn(get(addr, "/"));
    support::eventually("request in flight", || upstream.count() == 1).await;
    let shutdown = tokio::spawn(proxy.handle.shutdown());
    support::stops_accepting(addr, "no longer accepting during shutdown").await;
    assert!(!shutdown.is_finished(), "shutdown waits for the request in flight");
    gate.notify_waiters();
    assert_eq!(request.await.expect("request").status, 200);
    let outcome = shutdown.await.expect("shutdown");
    assert!(outcome.graceful, "{outcome:?}");
}

#[tokio::test]
async fn a_killed_backend_loses_no_request_under_load() {
    let mut doomed = Upstream::start("doomed").await;
    doomed.set(Mode::Slow(Duration::from_millis(5)));
    let live = Upstream::start("live").await;
    let proxy = TestProxy::start(config(), table(&[&doomed, &live])).await;
    let addr = proxy.addr();
    let load = tokio::spawn(load(400, 8, move |idx| async move {
        let mut request = Request::get("/").header("host", "svc");
        if idx % 2 == 0 {
            request = Request::post("/").header("host", "svc");
        }
        Client::new(addr).send(request.body(full(Bytes::from_static(b"x"))).expect("request")).await
    }));
    support::eventually("traffic on both", || doomed.count() > 20).await;
    doomed.stop();
    let replies = load.await.expect("load");
    let failed: Vec<u16> = replies.iter().map(|reply| reply.status).filter(|&status| status != 200).collect();
    assert!(failed.is_empty(), "failed: {failed:?}");
}

/// A listener whose accept queue is full (backlog 1, two connections waiting, nobody accepting): the
/// kernel drops further SYNs and the client resends them only after a second. Overloaded, not gone. The
/// fillers keep the queue full while they live.
async fn full_accept_queue() -> (tokio::net::TcpListener, std::net::SocketAddr, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(100), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(stream);
        }
    }
    (listener, addr, fillers)
}

/// Accepts on `listener` and answers every request 200.
fn serve_ok(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-upstream: slow\r\n\r\nok").await;
            });
        }
    });
}

/// Issue 12: a backend that does not accept a connection in time (its accept queue is full) is busy, not
/// dead. With every backend busy, a request backs off and connects afresh until one has room, instead of
/// answering 502 or waiting a second for the kernel's SYN retransmission; and no backend is ejected for
/// being busy, however often.
#[tokio::test]
async fn issue_12_full_accept_queues_are_busy_not_dead_and_the_request_waits_for_room() {
    let (first, first_addr, first_fillers) = full_accept_queue().await;
    let (second, second_addr, second_fillers) = full_accept_queue().await;
    let backends = vec![
        mend_proxy::Backend { id: stable(0), addr: first_addr, weight: 1 },
        mend_proxy::Backend { id: stable(1), addr: second_addr, weight: 1 },
    ];
    let proxy = TestProxy::start(config(), RouteTable { backends, canary: None }).await;
    let started = Instant::now();
    let request = tokio::spawn(get(proxy.addr(), "/"));
    // More busy attempts than the ejection threshold on each backend, over several back-off rounds.
    let busy = |stats: &mend_proxy::ProxyStats, id| stats.backend(id).map_or(0, |backend| backend.attempts.busy);
    support::eventually("four busy attempts on each backend", || {
        let stats = proxy.handle.stats();
        busy(&stats, stable(0)) >= 4 && busy(&stats, stable(1)) >= 4
    })
    .await;
    assert!(!request.is_finished(), "the request gave up while both backends were busy");
    // The first backend makes room: the next round connects.
    serve_ok(first);
    let reply = tokio::time::timeout(Duration::from_secs(10), request).await.expect("served in time").expect("task");
    assert_eq!(reply.status, 200, "the request gave up on backends that are only busy");
    assert!(started.elapsed() > Duration::from_millis(25), "connected before the connect timeout: nothing was tested");
    let stats = proxy.handle.stats();
    for id in [stable(0), stable(1)] {
        let backend = stats.backend(id).expect("listed");
        assert_eq!((backend.ejections, backend.attempts.connect_failures), (0, 0), "{id}: busy is not a failure");
    }
    assert_eq!(stats.local.bad_gateway, 0);
    drop((first_fillers, second_fillers, second));
}

/// Issue 12: a request that found one backend busy and then another hung goes back to the busy one
/// after the attempt timeout, rather than wait on the hung one for as long as it hangs (a SIGSTOPped
/// replica next to one with a full accept queue cost 4 s).
#[tokio::test]
async fn issue_12_a_hung_backend_is_left_for_one_that_was_only_busy() {
    let (busy, busy_addr, fillers) = full_accept_queue().await;
    let hung = Upstream::start("hung").await;
    hung.set(Mode::Hang);
    let mut cfg = round_robin();
    cfg.request_timeout = std::time::Duration::from_secs(60);
    let backends = vec![mend_proxy::Backend { id: stable(0), addr: busy_addr, weight: 1 }, backend(stable(1), &hung)];
    let proxy = TestProxy::start(cfg, RouteTable { backends, canary: None }).await;
    let request = tokio::spawn(get(proxy.addr(), "/"));
    support::eventually("the hung backend's attempt was abandoned", || {
        proxy.handle.stats().backend(stable(1)).is_some_and(|backend| backend.attempts.timeouts >= 1)
    })
    .await;
    serve_ok(busy);
    let reply = tokio::time::timeout(Duration::from_secs(10), request).await.expect("served in time").expect("task");
    assert_eq!((reply.status, reply.upstream()), (200, "slow"));
    assert!(proxy.handle.stats().backend(stable(0)).is_some_and(|backend| backend.attempts.busy >= 1));
    drop(fillers);
}

/// Issue 12: a busy attempt reached nobody, so going on after it is waiting for room, not a retry that
/// adds load: it costs the retry budget nothing. With no budget at all, a request in front of two full
/// accept queues still waits (over several rounds) and is served once one has room, instead of 502.
#[tokio::test]
async fn issue_12_waiting_for_room_costs_the_retry_budget_nothing() {
    let (first, first_addr, first_fillers) = full_accept_queue().await;
    let (_second, second_addr, second_fillers) = full_accept_queue().await;
    let backends = vec![
        mend_proxy::Backend { id: stable(0), addr: first_addr, weight: 1 },
        mend_proxy::Backend { id: stable(1), addr: second_addr, weight: 1 },
    ];
    let mut cfg = config();
    cfg.retry.budget_ratio = 0.0;
    cfg.retry.min_retries_per_second = 0;
    let proxy = TestProxy::start(cfg, RouteTable { backends, canary: None }).await;
    let request = tokio::spawn(get(proxy.addr(), "/"));
    let busy = |stats: &mend_proxy::ProxyStats| stats.backends.iter().map(|backend| backend.attempts.busy).sum::<u64>();
    support::eventually("six busy attempts", || busy(&proxy.handle.stats()) >= 6).await;
    assert!(!request.is_finished(), "the request gave up while both backends were busy");
    serve_ok(first);
    let reply = tokio::time::timeout(Duration::from_secs(10), request).await.expect("served in time").expect("task");
    assert_eq!(reply.status, 200, "busy attempts were charged to the (empty) retry budget");
    let stats = proxy.handle.stats();
    assert_eq!((stats.local.bad_gateway, stats.retries_denied), (0, 0));
    drop((first_fillers, second_fillers));
}

/// Issue 12: a request that every backend turned away waits for room, and a response ending elsewhere
/// is room: it tries again then, not only when its back-off (30 s here) runs out.
#[tokio::test]
async fn issue_12_a_request_waiting_for_room_tries_again_when_a_response_ends() {
    let (_first, first_addr, first_fillers) = full_accept_queue().await;
    let (second, second_addr, second_fillers) = full_accept_queue().await;
    let backends = vec![
        mend_proxy::Backend { id: stable(0), addr: first_addr, weight: 1 },
        mend_proxy::Backend { id: stable(1), addr: second_addr, weight: 1 },
    ];
    let mut cfg = config();
    cfg.retry.backoff_base = Duration::from_secs(30);
    cfg.retry.backoff_max = Duration::from_secs(30);
    cfg.request_timeout = Duration::from_secs(120);
    let proxy = TestProxy::start(cfg, RouteTable { backends, canary: None }).await;
    let started = Instant::now();
    let waiting = tokio::spawn(get(proxy.addr(), "/"));
    let busy = |id| proxy.handle.stats().backend(id).map_or(0, |backend| backend.attempts.busy);
    support::eventually("both backends turned the request away", || busy(stable(0)) >= 1 && busy(stable(1)) >= 1).await;
    // The second backend has room again; requests through it end while the first one waits (each one
    // wakes a waiter: keep sending until the waiting request is served).
    serve_ok(second);
    let mut client = Client::new(proxy.addr());
    let mut n_others = 0;
    while !waiting.is_finished() && started.elapsed() < Duration::from_secs(10) {
        assert_eq!(client.get("/").await.status, 200);
        n_others += 1;
    }
    assert!(n_others >= 1, "the waiting request was served before any other: nothing was tested");
    let reply = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the waiting request tried again when a response ended, not after its 30 s back-off")
        .expect("task");
    assert_eq!(reply.status, 200);
    drop((first_fillers, second_fillers));
}

/// Issue 12: when every backend refused the request (replicas being restarted), it waits, backing off,
/// for one to come back within its deadline instead of answering 502 at once.
#[tokio::test(start_paused = true)]
async fn issue_12_a_request_refused_everywhere_waits_for_a_backend_to_come_back() {
    let mut first = Upstream::start("first").await;
    let mut second = Upstream::start("second").await;
    let proxy = TestProxy::start(round_robin(), table(&[&first, &second])).await;
    first.stop();
    second.stop();
    let request = tokio::spawn(get(proxy.addr(), "/"));
    let refused = |stats: &mend_proxy::ProxyStats| {
        stats.backends.iter().map(|backend| backend.attempts.connect_failures).sum::<u64>()
    };
    support::eventually("both backends refused, twice", || refused(&proxy.handle.stats()) >= 4).await;
    assert!(!request.is_finished(), "answered while no backend was there");
    second.restart().await;
    let reply = request.await.expect("request");
    assert_eq!((reply.status, reply.upstream()), (200, "second"));
    assert_eq!(proxy.handle.stats().local.bad_gateway, 0);
}

/// Issue 12: the panic threshold. A backend ejected while another was still routable, which then leaves
/// the table (its replica was stopped), is routed to again rather than the service answering 503 for
/// the rest of the ejection.
#[tokio::test(start_paused = true)]
async fn issue_12_an_ejection_never_leaves_the_table_without_a_routable_backend() {
    let healthy = Upstream::start("healthy").await;
    let flaky = Upstream::start("flaky").await;
    flaky.set(Mode::Status(503));
    let proxy = TestProxy::start(round_robin(), table(&[&healthy, &flaky])).await;
    let mut client = Client::new(proxy.addr());
    for _ in 0..6 {
        assert_eq!(client.get("/").await.status, 200, "503s are retried on the healthy backend");
    }
    let stats = proxy.handle.stats();
    assert_eq!(stats.backend(stable(1)).map(|backend| (backend.ejections, backend.ejected)), Some((1, true)));
    // The flaky replica recovers; the healthy one is stopped and leaves the table during the ejection.
    flaky.set(Mode::Ok);
    proxy.publish(RouteTable { backends: vec![backend(stable(1), &flaky)], canary: None }).await;
    for _ in 0..5 {
        let reply = client.get("/").await;
        assert_eq!((reply.status, reply.upstream()), (200, "flaky"), "the ejected backend is all there is");
    }
    let stats = proxy.handle.stats();
    assert_eq!(stats.backend(stable(1)).map(|backend| backend.ejected), Some(true), "still within its ejection");
    assert_eq!(stats.local.no_backend, 0);
}

#[tokio::test(start_paused = true)]
async fn a_service_that_answers_slowly_is_not_retried_into_double_work() {
    let slow_a = Upstream::start("a").await;
    let slow_b = Upstream::start("b").await;
    for upstream in [&slow_a, &slow_b] {
        upstream.set(Mode::Slow(Duration::from_millis(600)));
    }
    let proxy = TestProxy::start(round_robin(), table(&[&slow_a, &slow_b])).await;
    // The first slow answer costs one abandoned attempt: nothing says yet that this service is slow.
    assert_eq!(get(proxy.addr(), "/").await.status, 200);
    let retries_after_first = proxy.handle.stats().retries;
    assert_eq!(retries_after_first, 1);
    // From then on the attempt timeout stretches to twice the slowest answer: each request is answered
    // where it went, once.
    let started = Instant::now();
    for _ in 0..6 {
        assert_eq!(get(proxy.addr(), "/").await.status, 200);
    }
    let stats = proxy.handle.stats();
    assert_eq!(stats.retries, retries_after_first, "slow answers were retried");
    assert_eq!(slow_a.count() + slow_b.count(), 8, "every request ran once (the first twice)");
    assert!(stats.backends.iter().all(|backend| backend.ejections == 0), "a slow backend is not an outlier");
    support::assert_took(
        started.elapsed(),
        6 * Duration::from_millis(600),
        "each request waited for its one slow answer",
    );
}

/// A backend that answers a head announcing a 10-byte body and then stops (`hang`: keeps the connection
/// open, as a SIGSTOPped process does) or dies (closes the connection) before the body, as Python's
/// `http.server` can between its two writes.
async fn cut_after_head(hang: bool) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut byte = [0_u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Upstream: cut\r\n\r\n").await;
            let _ = stream.flush().await;
            if hang {
                open.push(stream);
            }
        }
    });
    (addr, task)
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_stops_or_dies_between_head_and_body_fails_the_attempt_not_the_response() {
    let live = Upstream::start("live").await;
    for hang in [true, false] {
        let (cut, task) = cut_after_head(hang).await;
        let mut cfg = round_robin();
        cfg.attempt_timeout = Duration::from_millis(200);
        let backends = vec![mend_proxy::Backend { id: stable(0), addr: cut, weight: 1 }, backend(stable(1), &live)];
        let proxy = TestProxy::start(cfg, RouteTable { backends, canary: None }).await;
        // Bounded: a response cut short after its head would leave the client waiting for the body.
        let reply = tokio::time::timeout(Duration::from_secs(10), get(proxy.addr(), "/")).await;
        let reply = reply.unwrap_or_else(|_| panic!("hang: {hang}: the response never completed"));
        assert_eq!((reply.status, reply.upstream(), reply.body.as_str()), (200, "live", "live"), "hang: {hang}");
        task.abort();
    }
    // A POST answered and then cut off was processed: it is not sent again, whoever else could take it.
    let (cut, task) = cut_after_head(false).await;
    let backends = vec![mend_proxy::Backend { id: stable(0), addr: cut, weight: 1 }, backend(stable(1), &live)];
    let proxy = TestProxy::start(round_robin(), RouteTable { backends, canary: None }).await;
    let served_before = live.count();
    let reply = tokio::time::timeout(Duration::from_secs(10), Client::new(proxy.addr()).send(post("charge"))).await;
    assert_eq!(reply.expect("answered").status, 502);
    assert_eq!(live.count(), served_before, "never sent twice");
    task.abort();
    // Not repeatable and nowhere else to go: a clean gateway error, not a 200 cut short.
    let (cut, task) = cut_after_head(true).await;
    let mut cfg = round_robin();
    cfg.request_timeout = Duration::from_millis(300);
    let backends = vec![mend_proxy::Backend { id: stable(0), addr: cut, weight: 1 }];
    let proxy = TestProxy::start(cfg, RouteTable { backends, canary: None }).await;
    let reply = tokio::time::timeout(Duration::from_secs(10), Client::new(proxy.addr()).send(post("once"))).await;
    assert_eq!(reply.expect("answered").status, 504);
    task.abort();
}

/// A backend that answers with `head`, then writes `chunks` one every `every`, and then (`stall`) keeps
/// the connection open without another byte, as a replica SIGSTOPped mid-stream does.
async fn streaming(
    head: &'static str,
    chunks: Vec<Vec<u8>>,
    every: Duration,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    raw_backend(head, chunks, every, false).await
}

/// A raw HTTP/1.1 backend: `head`, then `chunks` one every `every`, then it closes the connection
/// (`close`) or holds it open without another byte.
async fn raw_backend(
    head: &'static str,
    chunks: Vec<Vec<u8>>,
    every: Duration,
    close: bool,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head_in = Vec::new();
            let mut byte = [0_u8; 1];
            while !head_in.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.is_ok_and(|n| n == 1) {
                head_in.push(byte[0]);
            }
            let _ = stream.write_all(head.as_bytes()).await;
            for chunk in &chunks {
                let _ = stream.write_all(chunk).await;
                let _ = stream.flush().await;
                tokio::time::sleep(every).await;
            }
            if close {
                let _ = stream.shutdown().await;
            } else {
                open.push(stream);
            }
        }
    });
    (addr, task)
}

#[tokio::test(start_paused = true)]
async fn a_response_body_that_stalls_is_cut_off_after_the_read_timeout_and_a_steady_trickle_is_not() {
    let mut cfg = round_robin();
    cfg.upstream_read_timeout = Duration::from_millis(500);
    // Longer than the short-body read (64 KiB), so the head reaches the client before the body stalls.
    let long = vec![b'x'; 100 * 1024];
    let cases = [
        ("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n", vec![long.clone()]),
        ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", vec![b"5\r\nhello\r\n".to_vec()]),
    ];
    for (head, chunks) in cases {
        let (addr, task) = streaming(head, chunks, Duration::from_millis(10)).await;
        let backends = vec![mend_proxy::Backend { id: stable(0), addr, weight: 1 }];
        let proxy = TestProxy::start(cfg.clone(), RouteTable { backends, canary: None }).await;
        let started = Instant::now();
        let reply =
            tokio::time::timeout(Duration::from_secs(30), Client::new(proxy.addr()).try_send(get_request())).await;
        let reply = reply.unwrap_or_else(|_| panic!("{head:?}: a stalled body held the client"));
        assert!(reply.is_err(), "{head:?}: the client sees the body end early, not a complete answer");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(2),
            "{head:?}: cut after {waited:?}"
        );
        let in_flight = proxy.handle.stats().backend(stable(0)).map(|backend| backend.in_flight);
        assert_eq!(in_flight, Some(0), "{head:?}: the exchange ended with the cut");
        task.abort();
    }
    // Ten chunks 300 ms apart: 3 s in all, but never 500 ms without a byte.
    let chunks = (0..10).map(|_| b"1\r\nz\r\n".to_vec()).chain([b"0\r\n\r\n".to_vec()]).collect();
    let (addr, task) =
        streaming("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", chunks, Duration::from_millis(300)).await;
    let backends = vec![mend_proxy::Backend { id: stable(0), addr, weight: 1 }];
    let proxy = TestProxy::start(cfg, RouteTable { backends, canary: None }).await;
    let reply = tokio::time::timeout(Duration::from_secs(30), Client::new(proxy.addr()).try_send(get_request())).await;
    let reply = reply.expect("finished").expect("a steady stream completes");
    assert_eq!((reply.status, reply.body.as_str()), (200, "zzzzzzzzzz"));
    task.abort();
}

fn get_request() -> Request<support::UpBody> {
    Request::get("/").header("host", "svc.test").body(support::full("")).expect("request")
}

/// A 200 whose body the backend cuts off is a failure for outlier detection, judged when the body ends:
/// judged a success at its headers, each such response reset the backend's run of failures and a replica
/// that truncates every answer was never ejected. A client that leaves mid-body, or a body that stalls
/// past the read timeout (a quiet stream may be meant), is no fault of the backend's.
#[tokio::test]
async fn a_backend_that_cuts_its_bodies_off_is_ejected_and_a_client_leaving_mid_body_is_not_held_against_it() {
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n";
    // Past the short-body read (64 KiB): a body cut within it is an attempt that failed, and retried.
    let (cut_addr, cut_task) = raw_backend(head, vec![vec![b'x'; 100 * 1024]], Duration::ZERO, true).await;
    let good = Upstream::start("good").await;
    let backends = vec![mend_proxy::Backend { id: stable(0), addr: cut_addr, weight: 1 }, backend(stable(1), &good)];
    let proxy = TestProxy::start(round_robin(), RouteTable { backends, canary: None }).await;
    let mut broken = 0;
    for _ in 0..6 {
        // A fresh connection each time: a cut body ends the client's connection too.
        match Client::new(proxy.addr()).try_send(get_request()).await {
            Ok(reply) => assert_eq!((reply.status, reply.upstream()), (200, "good")),
            Err(_) => broken += 1,
        }
    }
    assert_eq!(broken, 3, "round robin sent every other request to the cutting backend until it was ejected");
    let stats = proxy.handle.stats();
    let cut = stats.backend(stable(0)).expect("listed");
    assert_eq!(
        cut.last_ejection.map(|ejection| (ejection.reason, ejection.consecutive_failures)),
        Some((EjectionReason::BrokenBody, 3))
    );
    for _ in 0..4 {
        let reply = Client::new(proxy.addr()).try_send(get_request()).await.expect("the ejected backend gets none");
        assert_eq!((reply.status, reply.upstream()), (200, "good"));
    }
    cut_task.abort();

    // Streams the client gives up on after their heads, and streams that stall and are cut off by the
    // read timeout: neither is the backend's failure (two backends, so that one could be ejected).
    let mut cfg = round_robin();
    cfg.upstream_read_timeout = Duration::from_millis(300);
    let chunks = || vec![vec![b'x'; 100 * 1024]];
    let (first, first_task) = streaming(head, chunks(), Duration::from_millis(10)).await;
    let (second, second_task) = streaming(head, chunks(), Duration::from_millis(10)).await;
    let backends = vec![
        mend_proxy::Backend { id: stable(0), addr: first, weight: 1 },
        mend_proxy::Backend { id: stable(1), addr: second, weight: 1 },
    ];
    let proxy = TestProxy::start(cfg, RouteTable { backends, canary: None }).await;
    for _ in 0..6 {
        let mut sender = support::connect(proxy.addr()).await;
        let response = sender.send_request(get_request()).await.expect("the head arrives");
        assert_eq!(response.status(), 200);
        drop((response, sender));
    }
    for _ in 0..6 {
        let reply = Client::new(proxy.addr()).try_send(get_request()).await;
        assert!(reply.is_err(), "cut off by the read timeout");
    }
    support::eventually("the exchanges end", || {
        let stats = proxy.handle.stats();
        stats.backends.iter().all(|backend| backend.in_flight == 0)
    })
    .await;
    let stats = proxy.handle.stats();
    for backend in &stats.backends {
        assert_eq!((backend.ejections, backend.last_ejection), (0, None), "{:?}: not its failures", backend.id);
    }
    first_task.abort();
    second_task.abort();
}
