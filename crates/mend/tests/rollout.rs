//! End-to-end rollouts: `mend deploy` against real mend-demo replicas behind mend's proxy, real traffic
//! from bounded loopback clients; the canary is judged, then promoted or rolled back.
#![allow(clippy::disallowed_methods)] // End-to-end tests measure and wait in real time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, KeepAlive, eventually, free_ports, get, load};
use nix::sys::signal::Signal;

/// Two stable replicas of v1 and the releases the tests roll out, behind mend's proxy.
fn releases() -> (Daemon, SocketAddr) {
    let ports = free_ports(6);
    let proxy_port = free_ports(1);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
replicas = 2
ports = "{ports}-{last}"
stable_release = "v1"
[service.web.release.v1]
[service.web.release.good]
args = ["--name", "good"]
[service.web.release.bad]
args = ["--error-rate", "0.5"]
[service.web.release.subtle]
args = ["--error-rate", "0.05"]
[service.web.release.slow]
args = ["--delay", "25ms"]
[service.web.release.crashy]
args = ["--exit-immediately", "3"]
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
[service.web.proxy]
listen = "127.0.0.1:{proxy_port}"
"#,
        last = ports + 5
    ));
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    daemon.wait_ready("web");
    eventually(Duration::from_secs(10), "the proxy routes to the replicas", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    (daemon, proxy)
}

fn rollout(daemon: &Daemon) -> serde_json::Value {
    let response = get(daemon.api, "/api/v1/services/web/rollout");
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

/// Waits until the rollout's phase is `phase`; returns the status.
fn wait_for_phase(daemon: &Daemon, phase: &str, timeout: Duration) -> serde_json::Value {
    eventually(timeout, &format!("the rollout is {phase}"), || {
        let status = rollout(daemon);
        (status["rollout"]["phase"] == phase).then_some(status)
    })
}

fn deploy(daemon: &Daemon, args: &[&str]) {
    let mut all = vec!["deploy", "web"];
    all.extend_from_slice(args);
    let out = daemon.cli(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn releases_running(daemon: &Daemon) -> Vec<String> {
    daemon.replicas("web").iter().map(|r| r["release"].as_str().unwrap_or("?").to_owned()).collect()
}

#[test]
fn a_good_release_is_promoted_through_every_step_with_no_failed_request() {
    let _cpu = common::cpu_to_myself();
    let (daemon, proxy) = releases();
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 4, 500_000, Duration::from_millis(1), stop.clone());
    running.wait_for_more(200);
    deploy(&daemon, &["--release", "good", "--steps", "20,50,100", "--interval", "1s"]);
    let status = wait_for_phase(&daemon, "promoted", Duration::from_secs(60));
    assert_eq!(status["stable"], "good", "{status}");
    assert_eq!(status["last_good"], "v1", "a rollback returns to the release it replaced");
    eventually(Duration::from_secs(30), "only the new release runs", || {
        let running = releases_running(&daemon);
        (running == ["good", "good"]).then_some(())
    });
    running.wait_for_more(200);
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    // Every step was journalled as an action, and the weight walked 20, 50, 100.
    let events = daemon.events(Some("rollout"));
    let weights: Vec<u64> = events
        .iter()
        .filter(|event| event["message"].as_str().is_some_and(|m| m.contains("gets")))
        .filter_map(|event| event["details"]["weight"].as_u64())
        .collect();
    assert_eq!(weights, [20, 50, 100], "{events:?}");
    let actions = get(daemon.api, "/api/v1/actions?limit=50").json();
    let names: Vec<&str> =
        actions["actions"].as_array().into_iter().flatten().filter_map(|a| a["action"]["kind"].as_str()).collect();
    let text = actions.to_string();
    assert!(text.contains("promote") && text.contains("deploy"), "{names:?} {text}");
    let history: Vec<&str> =
        status["history"].as_array().into_iter().flatten().filter_map(|h| h["change"].as_str()).collect();
    assert_eq!(history.first().copied(), Some("promoted"), "{history:?}");
}

#[test]
fn an_erroring_release_is_rolled_back_within_one_step() {
    let _cpu = common::cpu_to_myself();
    let (daemon, proxy) = releases();
    let v1_pids: Vec<u64> = daemon.replicas("web").iter().filter_map(|r| r["pid"].as_u64()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 4, 500_000, Duration::from_millis(1), stop.clone());
    running.wait_for_more(200);
    deploy(&daemon, &["--release", "bad", "--steps", "20,100", "--interval", "1s"]);
    let status = wait_for_phase(&daemon, "rolled_back", Duration::from_secs(60));
    // Judged on its error ratio, or caught earlier by the proxy (which ejects a replica whose answers
    // fail in a row) or the healing stage (an incident on the canary): either way within its first step.
    let reason = status["rollout"]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("canary error ratio")
            || reason.contains("the proxy ejected replica")
            || reason.contains("opened on it during its bake time"),
        "{status}"
    );
    // Within one step: the weight never went past the first.
    let weights: Vec<u64> =
        daemon.events(Some("rollout")).iter().filter_map(|event| event["details"]["weight"].as_u64()).collect();
    assert!(weights.iter().all(|weight| *weight <= 20), "{weights:?}");
    eventually(Duration::from_secs(30), "only the stable release runs", || {
        (releases_running(&daemon) == ["v1", "v1"]).then_some(())
    });
    let after: Vec<u64> = daemon.replicas("web").iter().filter_map(|r| r["pid"].as_u64()).collect();
    assert_eq!(after, v1_pids, "the stable replicas were not touched");
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    // Failures came from the canary alone (its injected errors), on its share of the traffic.
    assert!(
        report.failures.iter().all(|failure| failure.contains("injected error")),
        "{:?}",
        &report.failures[..5.min(report.failures.len())]
    );
    let share = report.failed as f64 / (report.ok + report.failed) as f64;
    assert!(share < 0.2, "{} of {} failed", report.failed, report.ok + report.failed);
    // Afterwards nothing fails.
    let stop = Arc::new(AtomicBool::new(false));
    let after = load(proxy, "/", 2, 500, Duration::ZERO, stop).join();
    assert_eq!(after.failed, 0, "{:?}", after.failures);
    // An incident holds the evidence: the built-in bad_release diagnosis.
    let incidents = get(daemon.api, "/api/v1/incidents").body;
    assert!(incidents.contains("bad_release") && incidents.contains(&reason), "{reason} not in {incidents}");
}

#[test]
fn a_slower_release_fails_the_mann_whitney_judgement() {
    let _cpu = common::cpu_to_myself();
    let (daemon, proxy) = releases();
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 4, 500_000, Duration::from_millis(1), stop.clone());
    running.wait_for_more(200);
    deploy(&daemon, &["--release", "slow", "--steps", "50,100", "--interval", "2s"]);
    let status = wait_for_phase(&daemon, "rolled_back", Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    let reason = status["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Mann-Whitney"), "{status}");
    assert_eq!(
        report.failed,
        0,
        "a slower release fails no request: {:?}",
        &report.failures[..report.failures.len().min(5)]
    );
}

#[test]
fn without_traffic_the_step_holds_and_is_never_promoted_or_aborted() {
    let (daemon, _proxy) = releases();
    deploy(&daemon, &["--release", "good", "--steps", "10,100", "--interval", "300ms"]);
    let status = eventually(Duration::from_secs(30), "three inconclusive windows", || {
        let status = rollout(&daemon);
        (status["rollout"]["inconclusive"].as_u64() >= Some(3)).then_some(status)
    });
    assert_eq!(status["rollout"]["phase"], "stepping", "{status}");
    assert_eq!(status["weight"], 10);
    assert!(status["rollout"]["reason"].as_str().unwrap_or_default().contains("fewer than the 50"), "{status}");
    // An operator ends it: aborted, the canary drained and stopped.
    let out = daemon.cli(&["rollout", "abort", "web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = wait_for_phase(&daemon, "rolled_back", Duration::from_secs(30));
    assert_eq!(status["rollout"]["reason"], "aborted by an operator");
    eventually(Duration::from_secs(30), "the canary is gone", || {
        (releases_running(&daemon) == ["v1", "v1"]).then_some(())
    });
}

#[test]
fn a_crash_looping_release_is_rolled_back() {
    let (daemon, _proxy) = releases();
    deploy(&daemon, &["--release", "crashy", "--steps", "10,100", "--interval", "1s"]);
    let status = wait_for_phase(&daemon, "rolled_back", Duration::from_secs(60));
    let reason = status["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("the canary is in trouble"), "{status}");
    eventually(Duration::from_secs(30), "the canary is gone", || {
        (releases_running(&daemon) == ["v1", "v1"]).then_some(())
    });
}

#[test]
fn a_restart_mid_rollout_resumes_it_and_a_promotion_survives_the_next() {
    let mut daemon = releases().0;
    deploy(&daemon, &["--release", "good", "--steps", "10,100", "--interval", "1h"]);
    wait_for_phase(&daemon, "stepping", Duration::from_secs(30));
    let status = daemon.signal_and_wait(Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    daemon.spawn();
    // Resumed: the canary runs again at its step, beside the stable release.
    let status = eventually(Duration::from_secs(30), "the rollout resumed at its step", || {
        let status = rollout(&daemon);
        let canary_ready = daemon.replicas("web").iter().any(|r| r["release"] == "good" && r["ready"] == true);
        (status["rollout"]["phase"] == "stepping" && status["weight"] == 10 && canary_ready).then_some(status)
    });
    assert!(status["rollout"]["reason"].as_str().unwrap_or_default().contains("mend restarted"), "{status}");
    // A person promotes it; the promotion is persisted: the next mend runs the new release.
    let out = daemon.cli(&["rollout", "promote", "web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for_phase(&daemon, "promoted", Duration::from_secs(60));
    let status = daemon.signal_and_wait(Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    daemon.spawn();
    daemon.wait_ready("web");
    assert_eq!(releases_running(&daemon), ["good", "good"]);
    assert_eq!(rollout(&daemon)["stable"], "good");
}

/// mend killed with SIGKILL mid-rollout (no chance to stop its replicas or write anything more): the
/// next mend resumes the rollout at its persisted step, with the canary and the stable release both
/// running again and no replica of the killed mend left behind beside them, and a promotion completes.
#[test]
fn a_kill_9_mid_rollout_resumes_it_without_leaving_either_release_half_deployed() {
    let _cpu = common::cpu_to_myself();
    let (mut daemon, proxy) = releases();
    deploy(&daemon, &["--release", "good", "--steps", "10,100", "--interval", "1h"]);
    eventually(Duration::from_secs(30), "the canary stepping and ready", || {
        let stepping = rollout(&daemon)["rollout"]["phase"] == "stepping";
        let canary_ready = daemon.replicas("web").iter().any(|r| r["release"] == "good" && r["ready"] == true);
        (stepping && canary_ready).then_some(())
    });
    let before: Vec<i32> =
        daemon.replicas("web").iter().filter_map(|r| r["pid"].as_i64()).map(|pid| pid as i32).collect();
    assert_eq!(before.len(), 3, "two of v1 and the canary: {:?}", daemon.replicas("web"));
    let status = daemon.signal_and_wait(Signal::SIGKILL, Duration::from_secs(20));
    assert!(!status.success(), "{status:?}");
    daemon.spawn();
    let status = eventually(Duration::from_secs(60), "the rollout resumed at its step", || {
        let status = rollout(&daemon);
        let replicas = daemon.replicas("web");
        let ready = |release: &str| replicas.iter().filter(|r| r["release"] == release && r["ready"] == true).count();
        (status["rollout"]["phase"] == "stepping" && status["weight"] == 10 && ready("good") == 1 && ready("v1") == 2)
            .then_some(status)
    });
    assert!(status["rollout"]["reason"].as_str().unwrap_or_default().contains("mend restarted"), "{status}");
    // The killed mend's replicas are gone, not running beside the new ones on other ports.
    let now: Vec<i32> = daemon.replicas("web").iter().filter_map(|r| r["pid"].as_i64()).map(|pid| pid as i32).collect();
    eventually(Duration::from_secs(30), "no replica of the killed mend is left", || {
        let alive = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        };
        before.iter().all(|pid| now.contains(pid) || !alive(*pid)).then_some(())
    });
    eventually(Duration::from_secs(10), "the proxy serves again", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    let out = daemon.cli(&["rollout", "promote", "web"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for_phase(&daemon, "promoted", Duration::from_secs(60));
    eventually(Duration::from_secs(30), "only the new release runs", || {
        (releases_running(&daemon) == ["good", "good"]).then_some(())
    });
}

#[test]
fn a_release_that_regresses_after_its_promotion_is_rolled_back_by_a_healing_policy() {
    let _cpu = common::cpu_to_myself();
    let (mut daemon, _) = releases();
    // The same service with a policy: bad_release → rollback.
    let config = common::read(&daemon.config_path) + "[[heal]]\nwhen = \"bad_release\"\nactions = [\"rollback\"]\n";
    std::fs::write(&daemon.config_path, config).expect("write config");
    let status = daemon.signal_and_wait(Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    daemon.spawn();
    daemon.wait_ready("web");
    let proxy: SocketAddr = common::read(&daemon.config_path)
        .lines()
        .skip_while(|line| *line != "[service.web.proxy]")
        .find_map(|line| line.strip_prefix("listen = \"127.0.0.1:").and_then(|rest| rest.strip_suffix('"')))
        .and_then(|port| format!("127.0.0.1:{port}").parse().ok())
        .expect("proxy address");
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 4, 500_000, Duration::from_millis(1), stop.clone());
    running.wait_for_more(200);
    deploy(&daemon, &["--release", "good", "--steps", "50,100", "--interval", "1s"]);
    wait_for_phase(&daemon, "promoted", Duration::from_secs(60));
    eventually(Duration::from_secs(30), "only the new release runs", || {
        (releases_running(&daemon) == ["good", "good"]).then_some(())
    });
    // The new release starts failing a fifth of its requests right after the promotion.
    for replica in daemon.replicas("web") {
        let port = replica["port"].as_u64().expect("port") as u16;
        let answer = common::post(SocketAddr::from(([127, 0, 0, 1], port)), "/fault/errors?rate=0.2");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // bad_release fires; the policy's rollback returns the service to v1, drained.
    eventually(Duration::from_secs(60), "the service is back on its last good release", || {
        (releases_running(&daemon) == ["v1", "v1"] && rollout(&daemon)["stable"] == "v1").then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    running.join();
    let incidents = get(daemon.api, "/api/v1/incidents").body;
    assert!(incidents.contains("bad_release") && incidents.contains("right after its promotion"), "{incidents}");
    // Journalled once the old release's replicas have stopped (the action's end).
    eventually(Duration::from_secs(30), "the restored release in the history", || {
        rollout(&daemon)["history"].to_string().contains("\"restored\"").then_some(())
    });
    // Persisted: the next mend starts on v1.
    let status = daemon.signal_and_wait(Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    daemon.spawn();
    daemon.wait_ready("web");
    assert_eq!(releases_running(&daemon), ["v1", "v1"]);
}

#[test]
fn a_bad_canary_taken_out_by_a_policy_never_rolls_a_good_promoted_release_back() {
    let _cpu = common::cpu_to_myself();
    let (mut daemon, proxy) = releases();
    let config = common::read(&daemon.config_path) + "[[heal]]\nwhen = \"bad_release\"\nactions = [\"rollback\"]\n";
    std::fs::write(&daemon.config_path, config).expect("write config");
    let status = daemon.signal_and_wait(Signal::SIGTERM, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    daemon.spawn();
    daemon.wait_ready("web");
    eventually(Duration::from_secs(10), "the proxy routes to the replicas", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 4, 500_000, Duration::from_millis(1), stop.clone());
    running.wait_for_more(200);
    deploy(&daemon, &["--release", "good", "--steps", "50,100", "--interval", "1s"]);
    wait_for_phase(&daemon, "promoted", Duration::from_secs(60));
    eventually(Duration::from_secs(30), "only the promoted release runs", || {
        (releases_running(&daemon) == ["good", "good"]).then_some(())
    });
    // A bad canary next: the bad_release policy and the rollout's own verdict both roll it back.
    deploy(&daemon, &["--release", "bad", "--steps", "20,100", "--interval", "1s"]);
    wait_for_phase(&daemon, "rolled_back", Duration::from_secs(60));
    eventually(Duration::from_secs(60), "every action ended", || {
        let open = get(daemon.api, "/api/v1/actions?open=true").json()["actions"].as_array().map_or(1, Vec::len);
        (open == 0 && releases_running(&daemon) == ["good", "good"]).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    running.join();
    // The good release stays stable: nothing returned the service to v1.
    let status = rollout(&daemon);
    assert_eq!(status["stable"], "good", "{status}");
    assert!(!status["history"].to_string().contains("\"restored\""), "{status}");
    assert_eq!(releases_running(&daemon), ["good", "good"]);
}

#[test]
fn deploy_refuses_what_it_cannot_do() {
    let (daemon, _proxy) = releases();
    let out = daemon.cli(&["deploy", "web", "--release", "v9"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no release \"v9\""), "{stderr}");
    let out = daemon.cli(&["deploy", "web", "--release", "v1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("stable release already"));
    let out = daemon.cli(&["deploy", "web", "--release", "good", "--steps", "50,10"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("steps must increase"));
    let out = daemon.cli(&["rollout", "pause", "web"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rollout of web is in progress"));
    let bad = common::http_with_body(
        "POST",
        daemon.api,
        "/api/v1/services/web/deploy",
        &[("content-type", "application/json")],
        r#"{"release": "good", "interval": "0s"}"#,
    )
    .expect("request");
    assert_eq!(bad.status, 400, "{}", bad.body);
}

/// The figure for BENCHMARKS.md (`bench/rollback.sh`): time from `mend deploy` of an erroring release
/// (half its answers 500) to the rollback complete (only the stable release runs), and the requests that
/// failed meanwhile, under steady load, for a few intervals. Ignored: run on purpose.
#[test]
#[ignore = "a benchmark: bench/rollback.sh"]
#[allow(clippy::print_stdout)] // The figures are the output.
fn bench_time_to_roll_back_a_bad_release() {
    let _cpu = common::cpu_to_myself();
    let (daemon, proxy) = releases();
    println!(
        "release\terror_rate\tinterval_s\tdeploy_to_rolled_back_s\tdeploy_to_canary_gone_s\tfailed\trequests\treason"
    );
    for (release, interval) in [("bad", "1s"), ("bad", "5s"), ("subtle", "1s"), ("subtle", "2s"), ("subtle", "5s")] {
        let stop = Arc::new(AtomicBool::new(false));
        let running = load(proxy, "/", 4, 2_000_000, Duration::from_millis(1), stop.clone());
        running.wait_for_more(200);
        let started = std::time::Instant::now();
        deploy(&daemon, &["--release", release, "--steps", "10,50,100", "--interval", interval]);
        let status = wait_for_phase(&daemon, "rolled_back", Duration::from_secs(120));
        let rolled_back = started.elapsed();
        eventually(Duration::from_secs(60), "only the stable release runs", || {
            (releases_running(&daemon) == ["v1", "v1"]).then_some(())
        });
        let gone = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let report = running.join();
        let reason = status["rollout"]["reason"].as_str().unwrap_or_default().to_owned();
        println!(
            "{release}\t{}\t{}\t{:.2}\t{:.2}\t{}\t{}\t{}",
            if release == "bad" { "0.5" } else { "0.05" },
            interval.trim_end_matches('s'),
            rolled_back.as_secs_f64(),
            gone.as_secs_f64(),
            report.failed,
            report.ok + report.failed,
            reason.chars().take(70).collect::<String>()
        );
    }
}
