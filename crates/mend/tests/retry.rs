//! Issue 14's missed game-day targets, end to end with real mend-demo replicas behind mend's proxy and
//! bounded loopback load: a bad replica among healthy ones costs no request and is diagnosed
//! `bad_replica` from its ejection; a canary rolled back for a bad release stays `bad_release` (its
//! stopped replica is not diagnosed afterwards).
#![allow(clippy::disallowed_methods)] // End-to-end tests measure and wait in real time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, KeepAlive, eventually, free_ports, get, load};
use serde_json::Value;

fn incidents(daemon: &Daemon) -> Vec<Value> {
    get(daemon.api, "/api/v1/incidents?limit=100").json()["incidents"].as_array().cloned().unwrap_or_default()
}

fn wait_routes(proxy: SocketAddr) {
    eventually(Duration::from_secs(10), "the proxy routes to the replicas", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
}

#[test]
fn issue_14_a_bad_replica_costs_no_request_and_is_named_from_its_ejection() {
    let _cpu = common::cpu_to_myself();
    let ports = free_ports(4);
    let proxy: SocketAddr = ([127, 0, 0, 1], ports + 3).into();
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\n[service.web]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nports = \"{ports}-{}\"\nreplicas = 3\n[service.web.liveness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n[service.web.proxy]\nlisten = \"{proxy}\"\n",
        ports + 2
    ));
    daemon.wait_ready("web");
    wait_routes(proxy);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 4, 200_000, Duration::from_millis(5), stop.clone());
    running.wait_for_more(100);
    let bad: SocketAddr = ([127, 0, 0, 1], ports + 1).into();
    let fault = common::http("POST", bad, "/fault/errors?rate=1&status=500", &[]).expect("fault");
    assert_eq!(fault.status, 200);
    let opened = eventually(Duration::from_secs(30), "bad_replica names an incident", || {
        incidents(&daemon).into_iter().find(|i| i["diagnosis"]["name"] == "bad_replica")
    });
    let evidence = opened["diagnosis"]["evidence"].as_str().unwrap_or_default().to_owned();
    assert!(
        evidence.starts_with("replica 1 answered 500 to 3 attempts in a row and was ejected at ")
            && evidence.contains("; replicas 0 and 2 answered 0 errors to ")
            && evidence.ends_with(" attempts in the 30s before"),
        "{opened}"
    );
    assert_eq!(opened["diagnosis"]["root"], "web", "{opened}");
    // Opened by the ejection itself: the error share over 30 s (the detect stage's bad_replica, which
    // needs 5 attempts and 10 s) says nothing yet while ejection keeps the replica's attempts few.
    let first = &opened["signals"][0];
    assert_eq!((first["name"].as_str(), first["replica"].as_u64()), (Some("bad_replica"), Some(1)), "{opened}");
    assert!(first["fingerprint"].as_str().is_some_and(|f| f.contains("source=\"ejection\"")), "{opened}");
    // Traffic went on past the ejection: the bad replica's attempts were retried, none reached a client.
    running.wait_for_more(300);
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    assert_eq!(report.failed, 0, "{:?}", &report.failures[..5.min(report.failures.len())]);
    assert!(daemon.query("sum(mend_proxy_retries_on_5xx_total{service=\"web\"})") >= 3.0);
    assert!(daemon.query("sum(mend_proxy_backend_ejections_total{service=\"web\",replica=\"1\"})") >= 1.0);
}

#[test]
fn issue_14_a_rolled_back_canary_stays_a_bad_release_and_its_stopped_replica_is_not_diagnosed() {
    let _cpu = common::cpu_to_myself();
    let ports = free_ports(5);
    let proxy: SocketAddr = ([127, 0, 0, 1], ports + 4).into();
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\n[service.web]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nports = \"{ports}-{}\"\nreplicas = 2\nstable_release = \"v1\"\n[service.web.release.v1]\n[service.web.release.bad]\nargs = [\"--error-rate\", \"0.3\"]\n[service.web.liveness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n[service.web.proxy]\nlisten = \"{proxy}\"\n[[heal]]\nwhen = \"bad_release\"\nactions = [\"rollback\"]\n",
        ports + 3
    ));
    daemon.wait_ready("web");
    wait_routes(proxy);
    let stop = Arc::new(AtomicBool::new(false));
    // About 100 requests a second, as in the game day: the canary lives a few seconds.
    let running = load(proxy, "/", 2, 200_000, Duration::from_millis(20), stop.clone());
    running.wait_for_more(100);
    let deployed = daemon.cli(&["deploy", "web", "--release", "bad", "--steps", "20,50,100", "--interval", "3s"]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    eventually(Duration::from_secs(60), "the bad canary is rolled back", || {
        let rollout = get(daemon.api, "/api/v1/services/web/rollout").json();
        (rollout["rollout"]["phase"] == "rolled_back").then_some(())
    });
    // The positive event: 35 more seconds of the daemon's own sampling (replica 0's runner records
    // `mend_replica_up` once a second) since the rollback, so the canary's attempts have left the 30 s
    // window the detect stage reads, and a bad_replica on its stopped replica (10 s of the window holding)
    // would have fired by now.
    let samples = "count_over_time(mend_replica_up{service=\"web\",replica=\"0\"}[1h])";
    let at_rollback = daemon.query(samples);
    eventually(Duration::from_secs(90), "35 s of sampling after the rollback", || {
        (daemon.query(samples) >= at_rollback + 35.0).then_some(())
    });
    daemon.wait_for_runner_to_move_on("web");
    stop.store(true, Ordering::Relaxed);
    running.join();
    // The rollback healed it: once verified, the incident resolves (its verdict resolved when the canary
    // was out) instead of escalating as if the rollback had not helped.
    let release = eventually(Duration::from_secs(60), "the bad_release incident is closed", || {
        incidents(&daemon).into_iter().find(|i| {
            i["signals"].to_string().contains("bad_release") && (i["state"] == "resolved" || i["state"] == "escalated")
        })
    });
    assert_eq!(release["diagnosis"]["name"], "bad_release", "{release}");
    assert_eq!(release["state"], "resolved", "{release}");
    let all = incidents(&daemon);
    let bad_replicas: Vec<&Value> = all
        .iter()
        .flat_map(|i| i["signals"].as_array().cloned().unwrap_or_default().into_iter().map(move |s| (i, s)))
        .filter(|(_, signal)| signal["name"] == "bad_replica")
        .map(|(incident, _)| incident)
        .collect();
    assert!(bad_replicas.is_empty(), "a stopped canary replica was diagnosed: {bad_replicas:?}");
}
