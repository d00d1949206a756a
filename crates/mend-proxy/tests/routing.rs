//! Where requests go and what is counted: least-request and round robin, weights, the canary split and
//! its pins, fault injection rates and expiry, and stats that match what the clients saw.
#![allow(clippy::disallowed_methods)] // Tests wait in real time on real sockets.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use mend_proxy::{Backend, CanarySplit, Fault, FaultKind, LoadBalancing, Partition, RouteTable};
use support::{
    Client, Mode, Reply, TestProxy, Upstream, backend, by_upstream, canary, classes, config, full, get, load, stable,
};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

/// `n` sequential GETs on one keep-alive connection, each with `headers`.
async fn run(proxy: &TestProxy, n: usize, headers: &[(&str, &str)]) -> Vec<Reply> {
    let mut client = Client::new(proxy.addr());
    let mut replies = Vec::with_capacity(n);
    for _ in 0..n {
        let mut request = Request::get("/").header("host", "svc");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        replies.push(client.send(request.body(full("")).expect("request")).await);
    }
    replies
}

#[tokio::test]
async fn least_request_spreads_outstanding_requests_evenly() {
    let gates = [Arc::new(Notify::new()), Arc::new(Notify::new())];
    let upstreams = [Upstream::start("a").await, Upstream::start("b").await];
    for (upstream, gate) in upstreams.iter().zip(&gates) {
        upstream.set(Mode::Gate(gate.clone()));
    }
    let proxy = TestProxy::with(vec![backend(stable(0), &upstreams[0]), backend(stable(1), &upstreams[1])]).await;
    let mut pending = Vec::new();
    for n_sent in 1..=10u64 {
        pending.push(tokio::spawn(get(proxy.addr(), "/")));
        support::eventually("request arrived", || upstreams[0].count() + upstreams[1].count() == n_sent).await;
    }
    // Each pick compares both backends' in-flight counts, so they never differ by more than one.
    assert_eq!((upstreams[0].count(), upstreams[1].count()), (5, 5));
    let in_flight: Vec<u32> = proxy.handle.stats().backends.iter().map(|b| b.in_flight).collect();
    assert_eq!(in_flight, [5, 5]);
    for gate in &gates {
        gate.notify_waiters();
    }
    for reply in pending {
        assert_eq!(reply.await.expect("request").status, 200);
    }
}

#[tokio::test]
async fn round_robin_alternates_and_weights_are_honoured() {
    let upstreams = [Upstream::start("a").await, Upstream::start("b").await];
    let mut cfg = config();
    cfg.load_balancing = LoadBalancing::RoundRobin;
    let table = RouteTable {
        backends: vec![backend(stable(0), &upstreams[0]), backend(stable(1), &upstreams[1])],
        canary: None,
    };
    let proxy = TestProxy::start(cfg, table).await;
    let order: Vec<String> = run(&proxy, 6, &[]).await.iter().map(|reply| reply.upstream().to_owned()).collect();
    assert_eq!(order, ["a", "b", "a", "b", "a", "b"]);

    for policy in [LoadBalancing::RoundRobin, LoadBalancing::LeastRequest] {
        let mut cfg = config();
        cfg.load_balancing = policy;
        let weighted = RouteTable {
            backends: vec![
                Backend { id: stable(0), addr: upstreams[0].addr, weight: 1 },
                Backend { id: stable(1), addr: upstreams[1].addr, weight: 3 },
            ],
            canary: None,
        };
        let proxy = TestProxy::start(cfg, weighted).await;
        let replies = run(&proxy, 2000, &[]).await;
        let share = by_upstream(&replies).get("b").copied().unwrap_or(0);
        assert!((1400..=1600).contains(&share), "{policy:?}: weight 3 of 4 got {share} of 2000");
    }
}

fn canary_table(stable_up: &Upstream, canary_up: &Upstream, split: CanarySplit) -> RouteTable {
    RouteTable { backends: vec![backend(stable(0), stable_up), backend(canary(0), canary_up)], canary: Some(split) }
}

#[tokio::test]
async fn canary_split_is_within_five_percent_over_2000_requests() {
    let stable_up = Upstream::start("stable").await;
    let canary_up = Upstream::start("canary").await;
    for percent in [10u8, 50] {
        let split = CanarySplit { weight_percent: percent, pin_header: None, pin_cookie: None };
        let proxy = TestProxy::start(config(), canary_table(&stable_up, &canary_up, split)).await;
        let replies = run(&proxy, 2000, &[]).await;
        let share = by_upstream(&replies).get("canary").copied().unwrap_or(0) as f64 / 2000.0;
        assert!((share - f64::from(percent) / 100.0).abs() <= 0.05, "{percent} %: canary share {share}");
        let stats = proxy.handle.stats();
        assert_eq!(stats.canary.status_2xx + stats.stable.status_2xx, 2000);
        assert_eq!(stats.canary.status_2xx as f64 / 2000.0, share);
    }
}

#[tokio::test]
async fn canary_pins_by_header_and_cookie() {
    let stable_up = Upstream::start("stable").await;
    let canary_up = Upstream::start("canary").await;
    let split = CanarySplit {
        weight_percent: 50,
        pin_header: Some(("x-canary".to_owned(), "always".to_owned())),
        pin_cookie: Some(("release".to_owned(), "canary".to_owned())),
    };
    let proxy = TestProxy::start(config(), canary_table(&stable_up, &canary_up, split)).await;
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("x-canary", "always")], "canary"),
        (&[("x-canary", "never")], "stable"),
        (&[("cookie", "session=1; release=canary")], "canary"),
        (&[("cookie", "release=stable")], "stable"),
    ];
    for (headers, expected) in cases {
        let replies = run(&proxy, 50, headers).await;
        assert_eq!(by_upstream(&replies).get(expected), Some(&50), "{headers:?}");
    }
    // A pinned release with no eligible backend falls back to the other one rather than failing.
    drop(proxy.handle.drain(canary(0), Duration::ZERO));
    let replies = run(&proxy, 10, &[("x-canary", "always")]).await;
    assert_eq!(by_upstream(&replies).get("stable"), Some(&10));
}

/// On paused time (which the proxy reads): the injected latency and the expiry come out exact.
#[tokio::test(start_paused = true)]
async fn injected_faults_hit_their_share_and_expire() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let far = Instant::now().into_std() + Duration::from_secs(60);
    proxy.handle.set_fault(Fault { kind: FaultKind::Status(503), percent: 30.0, until: far });
    // What is injected can be read back (the API's GET .../chaos, mend status).
    let active = proxy.handle.faults();
    assert_eq!(active.len(), 1);
    assert_eq!((active[0].kind, active[0].percent), (FaultKind::Status(503), 30.0));
    assert!(active[0].until.saturating_duration_since(far) < Duration::from_millis(1), "{:?}", active[0]);
    let replies = run(&proxy, 2000, &[]).await;
    let injected = replies.iter().filter(|reply| reply.status == 503).count();
    assert!((500..=700).contains(&injected), "30 % of 2000 gave {injected}");
    assert_eq!(proxy.handle.stats().local.injected, injected as u64);
    assert_eq!(upstream.count(), 2000 - injected as u64, "an injected status never reaches the backend");

    proxy.handle.clear_faults();
    proxy.handle.set_fault(Fault { kind: FaultKind::Latency(Duration::from_millis(50)), percent: 100.0, until: far });
    let started = Instant::now();
    assert_eq!(get(proxy.addr(), "/").await.status, 200);
    support::assert_took(started.elapsed(), Duration::from_millis(50), "delayed by the injected latency");

    proxy.handle.clear_faults();
    let soon = Instant::now() + Duration::from_millis(300);
    proxy.handle.set_fault(Fault { kind: FaultKind::Abort, percent: 100.0, until: soon.into_std() });
    sleep_until(soon - Duration::from_millis(1)).await;
    let aborted = Client::new(proxy.addr()).try_send(Request::get("/").body(full("")).expect("request")).await;
    assert!(aborted.is_err(), "the connection was closed without a response until the fault's end");
    assert_eq!(proxy.handle.faults().iter().map(|fault| fault.kind).collect::<Vec<_>>(), [FaultKind::Abort]);
    sleep_until(soon).await;
    assert_eq!(get(proxy.addr(), "/").await.status, 200, "the fault expired by itself");
    assert_eq!(proxy.handle.faults(), [], "an expired fault is not listed");
    assert_eq!(proxy.handle.stats().local.aborted, 1);
}

/// A partition cuts one caller → callee edge: that caller's requests are refused (503, counted against
/// its edge, not the service), other callers and anonymous requests pass, and it heals by itself at its end (paused time).
#[tokio::test(start_paused = true)]
async fn partition_refuses_one_caller_until_it_heals() {
    let upstream = Upstream::start("a").await;
    let proxy = TestProxy::with(vec![backend(stable(0), &upstream)]).await;
    let until = Instant::now() + Duration::from_secs(10);
    proxy.handle.set_partition(&Partition { caller: "web".to_owned(), until: until.into_std() });
    assert_eq!(proxy.handle.partitions().iter().map(|p| p.caller.as_str()).collect::<Vec<_>>(), ["web"]);
    let cut = run(&proxy, 5, &[("x-mend-caller", "web")]).await;
    assert!(cut.iter().all(|reply| reply.status == 503), "{cut:?}");
    let other = run(&proxy, 5, &[("x-mend-caller", "batch")]).await;
    assert!(other.iter().all(|reply| reply.status == 200), "{other:?}");
    assert_eq!(run(&proxy, 1, &[]).await[0].status, 200, "a request without a caller passes");
    assert_eq!(upstream.count(), 6, "the refused requests never reached the backend");
    let web = proxy.handle.stats().callers.into_iter().find(|caller| caller.caller == "web").expect("web counted");
    assert_eq!(web.requests.status_5xx, 5);
    // The service never saw them: not its errors (its error ratio would blame it for the cut).
    let stats = proxy.handle.stats();
    assert_eq!((stats.local.partitioned, stats.local.status_5xx, stats.local.latency.count), (5, 0, 0));
    sleep_until(until).await;
    assert_eq!(run(&proxy, 1, &[("x-mend-caller", "web")]).await[0].status, 200, "healed by itself");
    assert_eq!(proxy.handle.partitions(), []);
    // Ended early by hand.
    proxy.handle.set_partition(&Partition {
        caller: "web".to_owned(),
        until: (Instant::now() + Duration::from_secs(10)).into_std(),
    });
    assert!(proxy.handle.heal_partition("web"));
    assert_eq!(run(&proxy, 1, &[("x-mend-caller", "web")]).await[0].status, 200);
}

#[tokio::test]
async fn stats_match_what_clients_saw() {
    let upstreams = [Upstream::start("a").await, Upstream::start("b").await];
    let proxy = TestProxy::with(vec![backend(stable(0), &upstreams[0]), backend(stable(1), &upstreams[1])]).await;
    let addr = proxy.addr();
    let mut replies = load(300, 4, move |idx| async move {
        let path = if idx % 3 == 0 { "/missing" } else { "/" };
        let caller = if idx % 2 == 0 { "web" } else { "batch" };
        let request = Request::get(path).header("host", "svc").header("x-mend-caller", caller);
        Client::new(addr).send(request.body(full("")).expect("request")).await
    })
    .await;
    upstreams[1].set(Mode::Status(404));
    replies.extend(run(&proxy, 40, &[]).await);
    proxy.publish(RouteTable::default()).await;
    replies.extend(run(&proxy, 10, &[]).await);

    let stats = proxy.handle.stats();
    let seen = classes(&replies);
    let total = &stats.total;
    assert_eq!([total.status_1xx, total.status_2xx, total.status_3xx, total.status_4xx, total.status_5xx], seen);
    assert_eq!(total.latency.count, replies.len() as u64);
    assert_eq!(total.latency.cumulative.last(), Some(&(replies.len() as u64)));
    assert_eq!(stats.local.no_backend, 10);
    let attempts: u64 = stats.backends.iter().map(|b| b.attempts.responses()).sum();
    assert_eq!(attempts, upstreams[0].count() + upstreams[1].count());
    assert!(stats.backends.iter().all(|b| b.in_flight == 0 && !b.in_table), "removed backends stay listed");
    let callers: Vec<(&str, u64)> =
        stats.callers.iter().map(|caller| (caller.caller.as_str(), caller.requests.responses())).collect();
    assert_eq!(callers, [("batch", 150), ("web", 150)]);
    assert!(stats.connections_accepted >= 302);
    support::eventually("client connections closed", || proxy.handle.stats().connections_open == 0).await;
}
