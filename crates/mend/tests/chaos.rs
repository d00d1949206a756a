//! End-to-end chaos: `mend chaos kill|hang|cpu|leak|slow|errors|partition` on real replicas (mend-demo,
//! and python3's http.server, which has no fault endpoints), each reverting by itself and recorded as
//! events; a hung replica does not outlive a killed mend; the chaos monkey injects into listed services.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Daemon, KeepAlive, alive, eventually, free_ports, get, http_with_body};

/// The scheduler state letter of `pid` (`T` when stopped), from /proc.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn post_json(daemon: &Daemon, path: &str, body: &str) -> common::Response {
    http_with_body("POST", daemon.api, path, &[("content-type", "application/json")], body).expect("the API answers")
}

/// The chaos events of one kind, with their message.
fn chaos_events(daemon: &Daemon, kind: &str) -> Vec<serde_json::Value> {
    daemon.events(Some(kind))
}

fn demo(replicas: u32, extra: &str) -> Daemon {
    let ports = free_ports(replicas as u16 + 1);
    Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
replicas = {replicas}
ports = "{ports}-{last}"
{extra}
"#,
        last = ports + replicas as u16
    ))
}

/// A short hang (under the supervisor's two stopped samples) is resumed by chaos; a long one is caught
/// by mend (replaced as hung), and chaos then has nothing to resume.
#[test]
fn hang_stops_a_replica_and_reverts_by_itself() {
    let daemon = demo(1, "");
    let pid = daemon.wait_ready("web")[0];
    let out = daemon.cli(&["chaos", "hang", "web", "--for", "300ms"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("stopped web/0 (pid {pid}) for 0.3s")), "{said}");
    let ended = eventually(Duration::from_secs(15), "the short hang ends by itself", || {
        chaos_events(&daemon, "chaos_ended").into_iter().next()
    });
    assert!(
        ended["message"].as_str().is_some_and(|m| m.contains(&format!("resumed web/0 (pid {pid})"))),
        "{ended} {}",
        daemon.replica("web", 0)
    );
    assert_eq!(ended["details"]["fault"], "hang");
    assert_ne!(proc_state(pid), Some('T'), "running again");
    assert_eq!(daemon.replica("web", 0)["pid"], pid, "the same process, resumed");
    assert_eq!(get(daemon.api, "/api/v1/chaos").json()["active"], serde_json::json!([]));

    let hung = post_json(&daemon, "/api/v1/services/web/chaos/hang", r#"{"for": "4s"}"#);
    assert_eq!(hung.status, 200, "{}", hung.body);
    eventually(Duration::from_secs(5), "the replica is stopped", || (proc_state(pid) == Some('T')).then_some(()));
    let status = get(daemon.api, "/api/v1/chaos").json();
    assert_eq!(status["active"][0]["fault"], "hang", "{status}");
    assert_eq!(post_json(&daemon, "/api/v1/services/web/chaos/hang", r#"{"for": "4s"}"#).status, 409, "one at a time");
    let ended = eventually(Duration::from_secs(20), "the long hang ends", || {
        chaos_events(&daemon, "chaos_ended").into_iter().find(|event| event["details"]["chaos_id"] == 2)
    });
    assert!(ended["message"].as_str().is_some_and(|m| m.contains("web/0 was replaced by mend")), "{ended}");
    let replica = daemon.replica("web", 0);
    assert_eq!((replica["last_exit_reason"].as_str(), replica["ready"].as_bool()), (Some("hung"), Some(true)));
    let started = chaos_events(&daemon, "chaos_started");
    assert_eq!((started.len(), &started[0]["details"]["by"]), (2, &serde_json::json!("operator")), "{started:?}");
}

#[test]
fn kill_is_recorded_and_the_supervisor_restarts_the_replica() {
    let daemon = demo(2, "");
    let pids = daemon.wait_ready("web");
    let killed = post_json(&daemon, "/api/v1/services/web/chaos/kill", r#"{"replica": 1}"#);
    assert_eq!(killed.status, 200, "{}", killed.body);
    assert_eq!(killed.json()["pid"], pids[1]);
    eventually(Duration::from_secs(15), "replica 1 is replaced", || {
        let replica = daemon.replica("web", 1);
        (replica["ready"] == true && replica["pid"] != pids[1]).then_some(())
    });
    assert_eq!(daemon.replica("web", 0)["pid"], pids[0], "the other replica is untouched");
    let started = chaos_events(&daemon, "chaos_started");
    assert_eq!(started[0]["details"]["fault"], "kill");
    assert_eq!(started[0]["details"]["replica"], 1);
    // Bounded and explained.
    let cases = [
        ("/api/v1/services/web/chaos/kill", r#"{"replica": 7}"#, 404, "service \"web\" has no replica 7"),
        ("/api/v1/services/nope/chaos/kill", "{}", 404, "unknown service \"nope\""),
        ("/api/v1/services/web/chaos/hang", r#"{"for": "1h"}"#, 400, "for: between 1ms and 10m"),
        ("/api/v1/services/web/chaos/partition", r#"{"for": "5s", "caller": "x"}"#, 409, "has no proxy"),
    ];
    for (path, body, status, message) in cases {
        let answer = post_json(&daemon, path, body);
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(answer.json()["error"].as_str().is_some_and(|e| e.contains(message)), "{path}: {}", answer.body);
    }
}

#[test]
fn a_hung_replica_does_not_outlive_a_killed_mend() {
    let mut daemon = demo(1, "");
    let pid = daemon.wait_ready("web")[0];
    let hung = post_json(&daemon, "/api/v1/services/web/chaos/hang", r#"{"for": "10m"}"#);
    assert_eq!(hung.status, 200, "{}", hung.body);
    eventually(Duration::from_secs(5), "the replica is stopped", || (proc_state(pid) == Some('T')).then_some(()));
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10));
    // The die-with-mend shim's SIGKILL reaches a stopped process too: nothing is left hanging.
    eventually(Duration::from_secs(10), "the stopped replica dies with mend", || (!alive(pid)).then_some(()));
}

#[test]
fn knob_faults_hit_the_replica_and_are_reset_at_the_end() {
    let daemon = demo(1, "");
    let pid = daemon.wait_ready("web")[0];
    let port = daemon.replica("web", 0)["port"].as_u64().expect("a port") as u16;
    let replica = SocketAddr::from(([127, 0, 0, 1], port));
    // Without a readiness probe a replica is ready once it runs, perhaps before it listens: a knob not
    // answering yet would send the fault elsewhere.
    eventually(Duration::from_secs(10), "the replica answers", || {
        common::http("GET", replica, "/", &[]).ok().filter(|r| r.status == 200)
    });
    let answer = post_json(&daemon, "/api/v1/services/web/chaos/errors", r#"{"for": "2s", "status": 503}"#);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["through"], "knob");
    assert_eq!(get(replica, "/").status, 503, "the replica answers the error it was told to");
    eventually(Duration::from_secs(15), "the fault is reset", || {
        chaos_events(&daemon, "chaos_ended").into_iter().next()
    });
    assert_eq!(get(replica, "/").status, 200);
    let leak = post_json(&daemon, "/api/v1/services/web/chaos/leak", r#"{"for": "1s", "mib_per_sec": 8}"#);
    assert_eq!(leak.status, 200, "{}", leak.body);
    eventually(Duration::from_secs(10), "memory is leaked", || {
        (get(replica, "/fault").json()["leaked_bytes"].as_u64() > Some(0)).then_some(())
    });
    eventually(Duration::from_secs(15), "the leak is reset", || {
        (chaos_events(&daemon, "chaos_ended").len() == 2).then_some(())
    });
    assert_eq!(get(replica, "/fault").json()["leaked_bytes"], 0);
    assert_eq!(daemon.replica("web", 0)["pid"], pid);
}

/// mend running python3's http.server (`files`, `replicas` of it) behind its proxy, `api_extra` added to
/// `[api]`; returns once the proxy routes, with the proxy's address.
fn files_behind_proxy(replicas: u16, api_extra: &str) -> (Daemon, SocketAddr) {
    let ports = free_ports(replicas + 1);
    let proxy_port = ports + replicas;
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
{api_extra}
[service.files]
command = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{{port}}"]
replicas = {replicas}
ports = "{ports}-{last}"
[service.files.readiness]
http = "http://127.0.0.1:{{port}}/"
[service.files.proxy]
listen = "127.0.0.1:{proxy_port}"
"#,
        last = ports + replicas - 1
    ));
    daemon.wait_ready("files");
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    eventually(Duration::from_secs(10), "the proxy routes", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    (daemon, proxy)
}

/// python3's http.server has no fault endpoints: errors and slow go through mend's proxy, cpu is refused
/// with the reason; a partition cuts one caller off.
#[test]
fn a_target_without_knobs_gets_proxy_faults_and_partitions() {
    let (daemon, proxy) = files_behind_proxy(1, "token = \"sesame\"");
    let unauthorised = post_json(&daemon, "/api/v1/services/files/chaos/kill", "{}");
    assert_eq!(unauthorised.status, 401, "the token is needed: {}", unauthorised.body);
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--token", "sesame"]);
        daemon.cli(&all)
    };
    let out = cli(&["chaos", "errors", "files", "--for", "3s", "--status", "502"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(its proxy)"), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(get(proxy, "/").status, 502);
    eventually(Duration::from_secs(15), "the proxy fault expires", || (get(proxy, "/").status == 200).then_some(()));
    let out = cli(&["chaos", "cpu", "files", "--for", "3s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no fault endpoint for cpu"), "{out:?}");
    let out = cli(&["chaos", "partition", "files", "--caller", "web", "--for", "2s"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut client = KeepAlive::new(proxy);
    assert_eq!(client.request("GET", "/", &[("x-mend-caller", "web")], b"").expect("answer").status, 503);
    assert_eq!(client.request("GET", "/", &[("x-mend-caller", "api")], b"").expect("answer").status, 200);
    eventually(Duration::from_secs(15), "the partition heals by itself", || {
        let mut client = KeepAlive::new(proxy);
        (client.request("GET", "/", &[("x-mend-caller", "web")], b"").ok()?.status == 200).then_some(())
    });
}

/// A live monkey on a listed service kills a replica within a few `every`s; an unlisted service is
/// never touched.
#[test]
fn the_monkey_hits_only_listed_services() {
    let ports = free_ports(4);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{ports}-{p1}"
[service.db]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{p2}-{p3}"
[chaos.monkey]
every = "10s"
services = ["web"]
faults = ["kill"]
dry_run = false
seed = 3
"#,
        p1 = ports + 1,
        p2 = ports + 2,
        p3 = ports + 3,
    ));
    let web = daemon.wait_ready("web")[0];
    let db = daemon.wait_ready("db")[0];
    let started = eventually(Duration::from_secs(40), "the monkey kills a web replica", || {
        chaos_events(&daemon, "chaos_started").into_iter().next()
    });
    assert_eq!((&started["service"], &started["details"]["by"]), (&"web".into(), &"monkey".into()), "{started}");
    eventually(Duration::from_secs(15), "web is replaced", || {
        let replica = daemon.replica("web", 0);
        (replica["ready"] == true && replica["pid"] != web).then_some(())
    });
    assert_eq!(daemon.replica("db", 0)["pid"], db, "db is not listed: untouched");
    let status = get(daemon.api, "/api/v1/chaos").json();
    assert_eq!(status["monkey"]["dry_run"], false, "{status}");
}

/// A service whose every replica fails alike (here python3's http.server behind a proxy answering 503 to
/// everything) raises the built-in rule `ServiceErrors` and an incident without any rule configured, and
/// it resolves once the errors stop.
#[test]
fn errors_on_every_replica_raise_the_built_in_service_errors_rule() {
    let (daemon, proxy) = files_behind_proxy(2, "");
    // Traffic throughout, bounded: 20 requests a second for at most 60 s.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut client = KeepAlive::new(proxy);
            for _ in 0..1200 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if client.request("GET", "/", &[], b"").is_err() {
                    client = KeepAlive::new(proxy);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let answer = post_json(&daemon, "/api/v1/services/files/chaos/errors", r#"{"for": "20s", "status": 503}"#);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let rule = |state: &str| {
        let signals = get(daemon.api, "/api/v1/signals?limit=1000").json();
        signals["signals"].as_array().cloned().unwrap_or_default().into_iter().find(|signal| {
            signal["name"] == "ServiceErrors" && signal["service"] == "files" && signal["state"] == state
        })
    };
    let fired = eventually(Duration::from_secs(25), "ServiceErrors fires", || rule("firing"));
    assert_eq!(fired["kind"], "rule", "{fired}");
    assert!(fired["evidence"].as_str().is_some_and(|text| text.contains("answered 5xx")), "{fired}");
    let incidents = get(daemon.api, "/api/v1/incidents?limit=10").json();
    let opened = incidents["incidents"].as_array().cloned().unwrap_or_default();
    assert!(
        opened.iter().any(|incident| incident["services"].to_string().contains("files")),
        "an incident on files: {incidents}"
    );
    eventually(Duration::from_secs(45), "ServiceErrors resolves after the fault", || rule("resolved"));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.join();
}
