//! End-to-end autoscaling: real mend-demo replicas behind mend's proxy, a bounded loopback load, the
//! request rate per replica from the proxy's series as the metric.
#![allow(clippy::disallowed_methods)] // End-to-end tests measure and wait in real time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Daemon, KeepAlive, eventually, free_ports, get, load};

/// One replica (room for three) scaled on the proxy's request rate: 20 requests per second per replica.
fn start(window: &str) -> (Daemon, SocketAddr) {
    let (ports, proxy_port) = (free_ports(3), free_ports(1));
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
replicas = 1
ports = "{ports}-{last}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
interval = "500ms"
[service.web.proxy]
listen = "127.0.0.1:{proxy_port}"
[service.web.autoscale]
min = 1
max = 3
query = 'sum(rate(mend_proxy_requests_total{{service="web"}}[3s]))'
target = 20
interval = "1s"
window = "{window}"
rate_window = "1s"
max_down = 3
"#,
        last = ports + 2
    ));
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    daemon.wait_ready("web");
    eventually(Duration::from_secs(10), "the proxy routes to the replica", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    (daemon, proxy)
}

fn autoscaler_actions(daemon: &Daemon) -> Vec<serde_json::Value> {
    let actions =
        get(daemon.api, "/api/v1/actions?limit=200").json()["actions"].as_array().cloned().unwrap_or_default();
    actions.into_iter().filter(|a| a["actor"]["by"] == "autoscaler").collect()
}

fn ready(daemon: &Daemon) -> usize {
    daemon.replicas("web").iter().filter(|r| r["ready"] == true).count()
}

/// A load of about 100 requests per second (2 clients, a 20 ms pause), at most 2 minutes.
fn busy(proxy: SocketAddr) -> (Arc<AtomicBool>, common::Load) {
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 2, 50_000, Duration::from_millis(20), stop.clone());
    (stop, running)
}

#[test]
fn issue_13_load_scales_out_and_its_end_scales_in_after_the_window() {
    let _cpu = common::cpu_to_myself();
    let (daemon, proxy) = start("8s");
    let (stop, running) = busy(proxy);
    let started = Instant::now();
    eventually(Duration::from_secs(60), "scaled out to 3 ready replicas", || (ready(&daemon) == 3).then_some(()));
    assert!(started.elapsed() < Duration::from_secs(60));
    let actions = autoscaler_actions(&daemon);
    assert!(!actions.is_empty(), "journalled as the autoscaler's");
    let reasons: Vec<&str> = actions.iter().filter_map(|a| a["reason"].as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("query ") && r.contains(" of 20 target across 1 replicas → ")),
        "{reasons:?}"
    );
    // The status shows it.
    let status = daemon.cli(&["status"]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("web: autoscale 1 .. 3 replicas, target query 20 per replica, 3 now"), "{stdout}");
    assert_eq!(get(daemon.api, "/api/v1/services/web").json()["autoscale"]["max"], 3);

    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    let load_gone = Instant::now();
    eventually(Duration::from_secs(60), "scaled in to 1", || (daemon.replicas("web").len() == 1).then_some(()));
    let scale_in = load_gone.elapsed();
    // The last busy recommendation came at most as the load stopped: nothing before the 8 s window.
    assert!(scale_in >= Duration::from_secs(8), "scaled in after {scale_in:?}, inside the window");
    let n_down =
        autoscaler_actions(&daemon).iter().filter(|a| a["action"]["delta"].as_i64().is_some_and(|d| d < 0)).count();
    assert!(n_down >= 1);
}

#[test]
fn issue_13_a_square_wave_shorter_than_the_window_does_not_flap() {
    let _cpu = common::cpu_to_myself();
    let (daemon, proxy) = start("60s");
    let (stop, running) = busy(proxy);
    eventually(Duration::from_secs(60), "scaled out to 3", || (ready(&daemon) == 3).then_some(()));
    stop.store(true, Ordering::Relaxed);
    running.join();
    // Three periods of 4 s quiet, 4 s busy: the quiet phases are shorter than the window.
    for _ in 0..3 {
        let quiet_until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < quiet_until {
            assert_eq!(daemon.replicas("web").len(), 3, "no scale-in during a short quiet phase");
            std::thread::sleep(Duration::from_millis(250));
        }
        let (stop, running) = busy(proxy);
        running.wait_for_more(200);
        stop.store(true, Ordering::Relaxed);
        running.join();
    }
    assert_eq!(daemon.replicas("web").len(), 3);
    let changes: Vec<i64> = autoscaler_actions(&daemon).iter().filter_map(|a| a["action"]["delta"].as_i64()).collect();
    assert!(changes.iter().all(|d| *d > 0), "only scale-outs: {changes:?}");
}
