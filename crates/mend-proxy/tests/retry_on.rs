//! The retry policy (`retry_on`, `retry_methods`): a bad replica's 500s reach no client while its
//! siblings are healthy, outlier detection still ejects it, and a service failing everywhere is not
//! amplified into a retry storm (attempts per request and the retry budget bound it). Real upstreams on
//! loopback sockets.

mod support;

use hyper::Request;
use mend_proxy::{EjectionReason, LoadBalancing, MethodSet, ProxyConfig, RetryOn, RouteTable, StatusSet};
use support::{Client, Mode, TestProxy, Upstream, backend, by_upstream, config, full, get, load, stable};

fn table(upstreams: &[&Upstream]) -> RouteTable {
    let backends = upstreams.iter().enumerate().map(|(idx, upstream)| backend(stable(idx as u32), upstream)).collect();
    RouteTable { backends, canary: None }
}

fn round_robin() -> ProxyConfig {
    let mut cfg = config();
    cfg.load_balancing = LoadBalancing::RoundRobin;
    cfg
}

#[tokio::test]
async fn a_bad_replica_among_healthy_ones_costs_no_request_and_is_still_ejected() {
    let healthy = [Upstream::start("a").await, Upstream::start("c").await];
    let bad = Upstream::start("bad").await;
    bad.set(Mode::Status(500));
    // The defaults: retry on 5xx, 3 attempts, 20 % budget, 3 failures in a row eject.
    let proxy = TestProxy::start(config(), table(&[&healthy[0], &bad, &healthy[1]])).await;
    let replies = load(300, 4, {
        let addr = proxy.addr();
        move |_| async move { get(addr, "/").await }
    })
    .await;
    let statuses: Vec<u16> = replies.iter().map(|reply| reply.status).filter(|status| *status != 200).collect();
    assert!(statuses.is_empty(), "clients saw {statuses:?}; {:?}", by_upstream(&replies));
    let stats = proxy.handle.stats();
    let bad_stats = stats.backend(stable(1)).expect("listed");
    // Outlier detection counts attempts, not client responses: the bad replica's 500s ejected it.
    assert!(bad_stats.ejections >= 1, "{bad_stats:?}");
    assert_eq!(bad_stats.last_ejection.map(|ejection| ejection.reason), Some(EjectionReason::ServerError(500)));
    // Every 500 it answered was retried elsewhere, and counted as such.
    assert!(bad.count() >= 3);
    assert_eq!(bad_stats.attempts.status_5xx, bad.count());
    assert_eq!((stats.retries_on_5xx, stats.stable.retried_5xx), (bad.count(), bad.count()));
    assert_eq!(stats.total.status_5xx, 0);
}

#[tokio::test]
async fn a_service_failing_everywhere_tries_each_request_at_most_max_attempts_times() {
    let upstreams = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
        Upstream::start("d").await,
    ];
    for upstream in &upstreams {
        upstream.set(Mode::Status(500));
    }
    let mut cfg = config();
    cfg.outlier.consecutive_failures = 100_000;
    cfg.retry.max_attempts = 3;
    // A budget that never runs out here, so that only the attempt limit bounds each request.
    cfg.retry.budget_ratio = 1.0;
    cfg.retry.min_retries_per_second = 1000;
    let proxy = TestProxy::start(cfg, table(&[&upstreams[0], &upstreams[1], &upstreams[2], &upstreams[3]])).await;
    let attempts = || upstreams.iter().map(Upstream::count).sum::<u64>();
    let mut client = Client::new(proxy.addr());
    for request_idx in 0..20 {
        let before = attempts();
        assert_eq!(client.get("/").await.status, 500, "the last attempt's answer reaches the client");
        assert_eq!(attempts() - before, 3, "request {request_idx}: 3 attempts of 4 backends, each a different one");
    }
}

#[tokio::test]
async fn a_service_failing_everywhere_adds_at_most_the_budget_ratio_of_retries() {
    let upstreams = [Upstream::start("a").await, Upstream::start("b").await, Upstream::start("c").await];
    for upstream in &upstreams {
        upstream.set(Mode::Status(500));
    }
    let mut cfg = config();
    cfg.outlier.consecutive_failures = 100_000;
    cfg.retry.budget_ratio = 0.1;
    cfg.retry.min_retries_per_second = 0;
    let proxy = TestProxy::start(cfg, table(&[&upstreams[0], &upstreams[1], &upstreams[2]])).await;
    let replies = load(300, 4, {
        let addr = proxy.addr();
        move |_| async move { get(addr, "/").await }
    })
    .await;
    assert!(replies.iter().all(|reply| reply.status == 500));
    let stats = proxy.handle.stats();
    let attempts: u64 = upstreams.iter().map(Upstream::count).sum();
    // Without the budget, 3 attempts each: 900. With it, at most 10 % more than the requests.
    assert!(attempts <= 330, "{attempts} attempts for 300 requests: a retry storm");
    assert!(stats.retries >= 25, "retries {} should use the budget", stats.retries);
    assert_eq!(attempts, 300 + stats.retries);
    assert_eq!(stats.retries_on_5xx, stats.retries);
    assert!(stats.retries_denied > 0);
}

/// What one GET (or `method`) sees when its first attempt goes to a backend answering `status` and its
/// second to a healthy one, under `change`d policy.
async fn first_attempt_answers(status: u16, method: &str, change: impl FnOnce(&mut ProxyConfig)) -> u16 {
    let failing = Upstream::start("failing").await;
    failing.set(Mode::Status(status));
    let live = Upstream::start("live").await;
    let mut cfg = round_robin();
    cfg.outlier.consecutive_failures = 1000;
    change(&mut cfg);
    let proxy = TestProxy::start(cfg, table(&[&failing, &live])).await;
    let request = Request::builder().method(method).uri("/").header("host", "svc").body(full("b")).expect("request");
    // Round robin: the first request's first attempt goes to `failing`.
    let reply = Client::new(proxy.addr()).send(request).await;
    assert_eq!(failing.count(), 1, "{status} {method}");
    reply.status
}

/// A change to the proxy's config.
type Change = Box<dyn FnOnce(&mut ProxyConfig)>;

#[tokio::test]
async fn retry_on_names_what_goes_to_another_backend() {
    let gateway_only = |cfg: &mut ProxyConfig| {
        cfg.retry.retry_on = RetryOn { server_errors: false, gateway_errors: true, ..RetryOn::NONE };
    };
    let status_500 = |cfg: &mut ProxyConfig| {
        cfg.retry.retry_on = RetryOn { statuses: StatusSet::of([500]).expect("5xx"), ..RetryOn::NONE };
    };
    let post_too = |cfg: &mut ProxyConfig| {
        cfg.retry.retry_methods = MethodSet::of(["GET", "POST"]).expect("known methods");
    };
    let cases: Vec<(u16, &str, Change, u16)> = vec![
        // The default: any 5xx, for idempotent methods.
        (500, "GET", Box::new(|_| {}), 200),
        (503, "GET", Box::new(|_| {}), 200),
        (500, "PUT", Box::new(|_| {}), 200),
        (500, "POST", Box::new(|_| {}), 500),
        // Nothing: the answer reaches the client.
        (500, "GET", Box::new(|cfg| cfg.retry.retry_on = RetryOn::NONE), 500),
        // gateway-error: 502-504 only.
        (500, "GET", Box::new(gateway_only), 500),
        (504, "GET", Box::new(gateway_only), 200),
        // retriable-status-codes.
        (500, "GET", Box::new(status_500), 200),
        (503, "GET", Box::new(status_500), 503),
        // A method the service says is safe to repeat.
        (500, "POST", Box::new(post_too), 200),
        (500, "DELETE", Box::new(post_too), 500),
        // One attempt in all: nothing to retry.
        (500, "GET", Box::new(|cfg| cfg.retry.max_attempts = 1), 500),
    ];
    for (status, method, change, expected) in cases {
        assert_eq!(first_attempt_answers(status, method, change).await, expected, "{status} {method}");
    }
}

#[tokio::test]
async fn a_failed_connect_or_reset_is_not_retried_when_the_policy_leaves_it_out() {
    let mut dead = Upstream::start("dead").await;
    dead.stop();
    let reset = Upstream::start("reset").await;
    reset.set(Mode::Reset);
    let live = Upstream::start("live").await;
    for (first, retry_on, expected) in [
        (&dead, RetryOn::default(), 200),
        (&dead, RetryOn { connect_failure: false, ..RetryOn::default() }, 502),
        (&reset, RetryOn::default(), 200),
        (&reset, RetryOn { reset: false, ..RetryOn::default() }, 502),
    ] {
        let mut cfg = round_robin();
        cfg.retry.retry_on = retry_on;
        let proxy = TestProxy::start(cfg, table(&[first, &live])).await;
        assert_eq!(get(proxy.addr(), "/").await.status, expected, "{retry_on:?}");
    }
}
