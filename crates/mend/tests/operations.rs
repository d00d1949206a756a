//! End-to-end operations: config errors, the API and its token, the CLI, the event store across
#![allow(clippy::disallowed_methods)] // End-to-end tests measure and wait in real time.
//! `kill -9`, shutdown and leftovers of a killed mend.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{DEMO, Daemon, MEND, alive, eventually, free_ports, get, http, post};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn web_config(extra_api: &str) -> String {
    let port = free_ports(2);
    format!(
        r#"
[api]
listen = "{{api}}"
{extra_api}
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
replicas = 2
ports = "{port}-{}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
"#,
        port + 1
    )
}

#[test]
fn check_config_prints_every_problem_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[service.web]\ncommand = [\"mend-demo\"]\nreplicas = -1\n[service.web.liveness]\nhttp = \"http://127.0.0.1:1/\"\ninterval = \"fast\"\n",
    )
    .expect("write config");
    let output = Command::new(MEND).arg("check-config").arg(&path).output().expect("run mend");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file = path.display();
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!("{file}:3:12: service.web.replicas: -1 is out of range (allowed: 0 to 1024)"),
            format!(
                "{file}:6:12: service.web.liveness.interval: invalid duration \"fast\": expected a number at \"fast\""
            ),
        ]
    );
    let good = dir.path().join("good.toml");
    std::fs::write(&good, mend_config::EXAMPLE_CONFIG).expect("write config");
    let output = Command::new(MEND).arg("check-config").arg(&good).output().expect("run mend");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn an_invalid_config_starts_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let api = free_ports(1);
    let marker = dir.path().join("spawned");
    let path = dir.path().join("mend.toml");
    std::fs::write(
        &path,
        format!(
            "[api]\nlisten = \"127.0.0.1:{api}\"\n[service.web]\ncommand = \"touch {}\"\nshell = true\nrestart = \"sometimes\"\n",
            marker.display()
        ),
    )
    .expect("write config");
    // Held while mend runs: had mend bound its API before validating, it would fail on the port instead.
    let held = std::net::TcpListener::bind(("127.0.0.1", api)).expect("hold the API port");
    let output = Command::new(MEND)
        .args(["run", "-c"])
        .arg(&path)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run mend");
    drop(held);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("mend.toml:6:11: service.web.restart: unknown restart policy \"sometimes\""), "{stderr}");
    assert!(!stderr.contains("cannot listen"), "{stderr}");
    // Nothing was spawned (the replica would have left its marker) or created.
    assert!(!marker.exists(), "a replica was spawned");
    assert!(!dir.path().join("state").exists());
}

#[test]
fn api_serves_services_and_events_and_404s_unknown_services() {
    let daemon = Daemon::start(&web_config(""));
    daemon.wait_ready("web");
    let services = get(daemon.api, "/api/v1/services").json();
    let web = &services["services"][0];
    assert_eq!(web["name"], "web");
    for replica in web["replicas"].as_array().expect("replicas") {
        for field in ["index", "pid", "port", "state", "ready", "restarts"] {
            assert!(!replica[field].is_null(), "missing {field}: {replica}");
        }
    }
    assert_eq!(get(daemon.api, "/healthz").status, 200);
    for (method, path) in [
        ("GET", "/api/v1/services/nope"),
        ("POST", "/api/v1/services/nope/restart"),
        ("GET", "/api/v1/events?service=nope"),
        ("GET", "/api/v1/services/nope/logs"),
        ("GET", "/api/v1/nothing-here"),
    ] {
        let response = http(method, daemon.api, path, &[]).expect("request");
        assert_eq!(response.status, 404, "{method} {path}");
        assert!(response.json()["error"].is_string(), "{method} {path}: {}", response.body);
    }
    let bad = get(daemon.api, "/api/v1/events?since=yesterday");
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().unwrap_or("").contains("invalid since \"yesterday\""));
    assert_eq!(get(daemon.api, "/api/v1/events?limit=abc").status, 400);
    assert_eq!(http("DELETE", daemon.api, "/api/v1/services", &[]).expect("request").status, 405);
    let events = get(daemon.api, "/api/v1/events?service=web&kind=ready").json();
    assert_eq!(events["events"].as_array().map(Vec::len), Some(2));
    let recent = get(daemon.api, "/api/v1/events?since=1m&limit=1").json();
    assert_eq!(recent["events"].as_array().map(Vec::len), Some(1));
}

#[test]
fn api_token_guards_mutating_calls_only() {
    let daemon = Daemon::start(&web_config("token = \"s3cret-token\""));
    daemon.wait_ready("web");
    let path = "/api/v1/services/web/restart?replica=0";
    let missing = post(daemon.api, path);
    assert_eq!(missing.status, 401);
    assert!(missing.headers.iter().any(|(name, value)| name == "www-authenticate" && value == "Bearer"));
    assert_eq!(http("POST", daemon.api, path, &[("Authorization", "Bearer wrong")]).expect("request").status, 403);
    assert_eq!(daemon.events(Some("restarted")).len(), 0, "a refused call changed nothing");
    let allowed = http("POST", daemon.api, path, &[("Authorization", "Bearer s3cret-token")]).expect("request");
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    // The scheme name is case-insensitive.
    let lower = http("POST", daemon.api, path, &[("Authorization", "bearer s3cret-token")]).expect("request");
    assert_eq!(lower.status, 200, "{}", lower.body);
    assert_eq!(get(daemon.api, "/api/v1/services").status, 200, "reads need no token");
    // Reading the injected faults is a read (409: web has no proxy); injecting them is not.
    assert_eq!(get(daemon.api, "/api/v1/services/web/chaos").status, 409);
    assert_eq!(post(daemon.api, "/api/v1/services/web/chaos").status, 401);
    assert_eq!(post(daemon.api, "/api/v1/reload").status, 401, "a reload is a mutating call");
    assert_eq!(daemon.events(Some("config_checked")).len(), 0, "a refused reload did nothing");
    // The CLI reads the token from the config.
    let output = Command::new(MEND).args(["stop", "web", "-c"]).arg(&daemon.config_path).output().expect("run mend");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = daemon.cli(&["start", "web"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("HTTP 401"));
}

#[test]
fn cli_drives_a_running_daemon() {
    let daemon = Daemon::start(&web_config(""));
    let pids = daemon.wait_ready("web");
    let status = daemon.cli(&["status"]);
    assert!(status.status.success());
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(table.starts_with("SERVICE  REPLICA  PID"), "{table}");
    assert!(table.contains(&pids[0].to_string()) && table.contains("running"), "{table}");
    let json: serde_json::Value = serde_json::from_slice(&daemon.cli(&["status", "--json"]).stdout).expect("json");
    assert_eq!(json["services"][0]["replicas"].as_array().map(Vec::len), Some(2));

    // A rolling restart: both replicas replaced, each ready again.
    let restart = daemon.cli(&["restart", "web"]);
    assert!(restart.status.success(), "{}", String::from_utf8_lossy(&restart.stderr));
    let replicas = daemon.replicas("web");
    for (replica, old) in replicas.iter().zip(&pids) {
        assert_ne!(replica["pid"].as_u64(), Some(u64::from(*old)));
        assert_eq!(replica["ready"], true);
    }
    let events = String::from_utf8_lossy(&daemon.cli(&["events", "--limit", "100"]).stdout).into_owned();
    assert!(events.contains("restarting: restart requested by operator"), "{events}");
    let logs =
        String::from_utf8_lossy(&daemon.cli(&["logs", "web", "--replica", "1", "--tail", "50"]).stdout).into_owned();
    assert!(logs.contains("mend-demo: listening on http://127.0.0.1:"), "{logs}");

    let stop = daemon.cli(&["stop", "web", "--replica", "0"]);
    assert!(stop.status.success());
    assert_eq!(daemon.replica("web", 0)["state"], "stopped");
    assert_eq!(daemon.replica("web", 1)["state"], "running");

    let unknown = daemon.cli(&["restart", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&unknown.stderr).trim(), "error: unknown service \"nope\" (HTTP 404)");
    let usage = Command::new(MEND).args(["restart"]).output().expect("run mend");
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn cli_says_in_one_line_when_no_daemon_answers() {
    let port = free_ports(1);
    let output = Command::new(MEND).args(["status", "--api", &format!("127.0.0.1:{port}")]).output().expect("run mend");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(&format!("error: mend is not running at 127.0.0.1:{port}")), "{stderr}");
}

#[test]
fn metrics_page_has_mend_and_replica_metrics() {
    let daemon = Daemon::start(&web_config(""));
    daemon.wait_ready("web");
    let metrics = eventually(Duration::from_secs(5), "process metrics are sampled", || {
        let body = get(daemon.api, "/metrics").body;
        body.contains("mend_replica_resident_memory_bytes{").then_some(body)
    });
    for needle in [
        "mend_replica_up{service=\"web\",replica=\"0\"} 1",
        "mend_replica_ready{service=\"web\",replica=\"1\"} 1",
        "mend_replica_restarts_total{service=\"web\",replica=\"0\"} 0",
        "mend_service_ready_replicas{service=\"web\"} 2",
        "mend_events_total{kind=\"started\"} 2",
        "mend_process_resident_memory_bytes ",
        // Without an Accept for OpenMetrics, the 0.0.4 text format, where a counter's family carries
        // its `_total` (what promtool and older scrapers expect).
        "# TYPE mend_events_total counter",
    ] {
        assert!(metrics.contains(needle), "missing {needle:?} in\n{metrics}");
    }
    assert!(!metrics.contains("# EOF"), "{metrics}");
    let text = get(daemon.api, "/metrics");
    assert_eq!(text.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));

    // Prometheus asks for OpenMetrics and gets it.
    let accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let openmetrics = http("GET", daemon.api, "/metrics", &[("accept", accept)]).expect("GET /metrics");
    assert_eq!(openmetrics.header("content-type"), Some("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    for needle in ["# TYPE mend_events counter", "mend_events_total{kind=\"started\"} 2", "# EOF"] {
        assert!(openmetrics.body.contains(needle), "missing {needle:?} in\n{}", openmetrics.body);
    }
}

#[test]
fn kill_9_of_mend_keeps_committed_events_and_takes_replicas_along() {
    let mut daemon = Daemon::start(&web_config(""));
    let pids = daemon.wait_ready("web");
    // The API reads from the store: what it returns is committed.
    let committed = daemon.events(None);
    assert!(committed.len() >= 5);
    daemon.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5));
    eventually(Duration::from_secs(5), "replicas die with mend", || pids.iter().all(|pid| !alive(*pid)).then_some(()));
    let connection = rusqlite::Connection::open(daemon.state_dir().join("mend.db")).expect("open the event store");
    let stored: Vec<(i64, String)> = connection
        .prepare("SELECT id, kind FROM events ORDER BY id")
        .expect("prepare")
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for event in &committed {
        let id = event["id"].as_i64().expect("id");
        assert!(
            stored.iter().any(|(stored_id, kind)| *stored_id == id && kind == event["kind"].as_str().unwrap_or(""))
        );
    }
}

#[test]
fn sigterm_stops_everything_and_leaves_no_process_behind() {
    let port = free_ports(1);
    // A shell service with a child of its own: stopping must take the whole process group.
    let mut daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
[service.family]
shell = true
command = "sleep 1000 & sleep 1001"
"#
    ));
    daemon.wait_ready("web");
    let family_pid = daemon.wait_ready("family")[0];
    let group = eventually(Duration::from_secs(5), "the family has two processes", || {
        let members = mend_observe::process::group_members(family_pid as i32);
        (members.len() >= 2).then_some(members)
    });
    let web_pid = daemon.replica("web", 0)["pid"].as_u64().expect("pid") as u32;
    let status = daemon.signal_and_wait(Signal::SIGTERM, Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    assert!(!alive(web_pid));
    for pid in group {
        assert!(!alive(pid), "pid {pid} of the shell service survived");
    }
    let connection = rusqlite::Connection::open(daemon.state_dir().join("mend.db")).expect("open the event store");
    let stopped: i64 = connection
        .query_row("SELECT COUNT(*) FROM events WHERE kind = 'stopped'", [], |row| row.get(0))
        .expect("count");
    assert_eq!(stopped, 2);
    let shutdown: i64 = connection
        .query_row("SELECT COUNT(*) FROM events WHERE kind = 'shutting_down'", [], |row| row.get(0))
        .expect("count");
    assert_eq!(shutdown, 1);
}

/// The reaper process of the mend with pid `mend` (its child running `mend __reaper`).
fn reaper_of(mend: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let parent: u32 = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (parent == mend && cmdline.split(|&b| b == 0).any(|arg| arg == b"__reaper")).then_some(pid)
    })
}

/// A replica whose shell forks `sleep` and then becomes mend-demo: the `sleep` is in the replica's
/// process group but is not mend's child. A second `sleep 2PORT` leaves the group (`setsid`).
fn forking_replica_config(port: u16) -> String {
    format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
shell = true
command = "sleep 1000 & setsid -f sleep 2{port}; exec {{demo}} --port {port}"
[service.web.liveness]
http = "http://127.0.0.1:{port}/health"
"#
    )
}

fn forked_children(leader: u32) -> Vec<u32> {
    eventually(Duration::from_secs(5), "the replica's child is running", || {
        let members: Vec<u32> =
            mend_observe::process::group_members(leader as i32).into_iter().filter(|pid| *pid != leader).collect();
        (!members.is_empty()).then_some(members)
    })
}

/// The `sleep 2PORT` the replica started in a session of its own.
fn detached_child(port: u16) -> u32 {
    eventually(Duration::from_secs(5), "the replica's detached child is running", || {
        let found = Command::new("pgrep").args(["-x", "-f", &format!("sleep 2{port}")]).output().ok()?;
        String::from_utf8_lossy(&found.stdout).split_whitespace().next()?.parse().ok()
    })
}

#[test]
fn what_a_replica_forked_dies_with_a_killed_mend_too() {
    let port = free_ports(1);
    let mut daemon = Daemon::start(&forking_replica_config(port));
    let leader = daemon.wait_ready("web")[0];
    let mut children = forked_children(leader);
    children.push(detached_child(port));
    assert!(reaper_of(daemon.pid()).is_some(), "mend runs a reaper");
    daemon.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5));
    eventually(Duration::from_secs(5), "the replica and what it forked die with mend", || {
        (!alive(leader) && children.iter().all(|pid| !alive(*pid))).then_some(())
    });
}

#[test]
fn the_next_mend_replaces_processes_a_killed_mend_left_behind() {
    let port = free_ports(1);
    let mut daemon = Daemon::start(&forking_replica_config(port));
    let leader = daemon.wait_ready("web")[0];
    let mut orphans = forked_children(leader);
    orphans.push(detached_child(port));
    // Without its reaper (killed too, say by `kill -9` of every mend process), the forked `sleep` outlives
    // mend; the next mend must stop it before it starts anything.
    let reaper = reaper_of(daemon.pid()).expect("mend runs a reaper");
    kill(Pid::from_raw(reaper as i32), Signal::SIGKILL).expect("kill the reaper");
    eventually(Duration::from_secs(5), "the reaper is gone", || (!alive(reaper)).then_some(()));
    daemon.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5));
    eventually(Duration::from_secs(5), "the replica dies with mend", || (!alive(leader)).then_some(()));
    assert!(orphans.iter().all(|pid| alive(*pid)), "the orphan should outlive the killed mend");
    daemon.spawn();
    daemon.wait_ready("web");
    assert!(orphans.iter().all(|pid| !alive(*pid)), "the next mend must stop what the last one left behind");
    let replaced = daemon.events(Some("orphan_killed"));
    assert_eq!(replaced.len(), 2, "{replaced:?}");
    assert_eq!(replaced[0]["service"], "web", "the replica's group");
    assert!(replaced[1]["message"].as_str().unwrap_or("").contains("outside their process groups"), "{replaced:?}");
}

#[test]
fn a_second_mend_on_the_same_state_dir_is_refused() {
    let daemon = Daemon::start(&web_config(""));
    let output = Command::new(MEND)
        .args(["run", "-c"])
        .arg(&daemon.config_path)
        .arg("--state-dir")
        .arg(daemon.state_dir())
        .output()
        .expect("run mend");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("another mend (pid {}) is running", daemon.pid())), "{stderr}");
}

#[test]
fn init_writes_a_config_that_checks_clean_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mend.toml");
    let output = Command::new(MEND).arg("init").arg(&path).output().expect("run mend");
    assert!(output.status.success());
    let check = Command::new(MEND).arg("check-config").arg(&path).output().expect("run mend");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let again = Command::new(MEND).arg("init").arg(&path).output().expect("run mend");
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn web_pages_cannot_drive_the_api() {
    let daemon = Daemon::start(&web_config(""));
    daemon.wait_ready("web");
    let rebound = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(daemon.api).expect("connect");
        stream
            .write_all(b"GET /api/v1/services HTTP/1.1\r\nHost: evil.example:7070\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer
    };
    assert!(rebound.starts_with("HTTP/1.1 403"), "DNS rebinding: {rebound}");
    let forged =
        http("POST", daemon.api, "/api/v1/services/web/stop", &[("Origin", "http://evil.example")]).expect("request");
    assert_eq!(forged.status, 403, "cross-site POST: {}", forged.body);
    let fetch =
        http("POST", daemon.api, "/api/v1/services/web/stop", &[("Sec-Fetch-Site", "cross-site")]).expect("request");
    assert_eq!(fetch.status, 403);
    // Another local web app is another origin too.
    let local =
        http("POST", daemon.api, "/api/v1/services/web/stop", &[("Origin", "http://localhost:9999")]).expect("request");
    assert_eq!(local.status, 403, "another local origin: {}", local.body);
    assert_eq!(daemon.replica("web", 0)["state"], "running", "nothing was stopped");
    // Scripts and the CLI send neither header, and a page on the API's own origin may act.
    let own_origin = format!("http://{}", daemon.api);
    let same_origin =
        http("POST", daemon.api, "/api/v1/services/web/restart?replica=0", &[("Origin", own_origin.as_str())])
            .expect("request");
    assert_eq!(same_origin.status, 200, "{}", same_origin.body);
}

#[test]
fn a_rolling_restart_stops_when_a_replica_does_not_come_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().display().to_string();
    for index in 0..2 {
        std::fs::write(dir.path().join(format!("ready-{index}")), "").expect("marker");
    }
    let port = free_ports(2);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
replicas = 2
ports = "{port}-{}"
[service.web.readiness]
exec = ["test", "-f", "{marker}/ready-{{replica}}"]
interval = "100ms"
"#,
        port + 1
    ));
    let pids = daemon.wait_ready("web");
    // Replica 0's next process will never be ready (a bad release, say).
    std::fs::remove_file(dir.path().join("ready-0")).expect("remove marker");
    let restart = daemon.cli(&["restart", "web", "--wait", "3s"]);
    assert_eq!(restart.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&restart.stderr);
    assert!(stderr.contains("replica 0 of \"web\" was not ready again within 3s: rolling restart stopped"), "{stderr}");
    assert_eq!(daemon.replica("web", 1)["pid"].as_u64(), Some(u64::from(pids[1])), "replica 1 was left serving");
    assert_eq!(daemon.replica("web", 1)["ready"], true);
}

#[test]
fn sighup_reloads_rules_and_scrape_targets_and_leaves_services_running() {
    let rule = |name: &str| format!("[[rule]]\nname = \"{name}\"\nexpr = 'vector(1) > 0'\nseverity = \"warning\"\n");
    let daemon = Daemon::start(&format!("{}{}", web_config(""), rule("Before")));
    let pids = daemon.wait_ready("web");
    let hangup =
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    let reports = |n: usize| {
        eventually(Duration::from_secs(5), "config_checked/config_reloaded events", || {
            let mut events = daemon.events(Some("config_checked"));
            events.extend(daemon.events(Some("config_reloaded")));
            (events.len() >= n).then_some(events)
        })
    };
    let signals = || -> Vec<serde_json::Value> {
        get(daemon.api, "/api/v1/signals?limit=100").json()["signals"].as_array().cloned().unwrap_or_default()
    };
    eventually(Duration::from_secs(5), "the rule fires", || {
        signals().iter().any(|s| s["name"] == "Before" && s["state"] == "firing").then_some(())
    });

    hangup();
    let events = reports(1);
    assert!(events[0]["message"].as_str().unwrap_or("").ends_with("is unchanged"), "{events:?}");

    // An invalid file is reported with its line and key, and changes nothing.
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    std::fs::write(&daemon.config_path, text.replace("replicas = 2", "replicas = \"two\"")).expect("write");
    hangup();
    let events = reports(2);
    let message = events.iter().map(|e| e["message"].as_str().unwrap_or("")).find(|m| m.contains("invalid"));
    let message = message.unwrap_or_else(|| panic!("no invalid report in {events:?}"));
    assert!(message.contains("mend.toml:7:") && message.contains("service.web.replicas"), "{message}");

    // A valid change: the rules and scrape targets are applied at once; the service keeps running (its
    // log rotation is taken for each replica's next start), and the reload says that the store's
    // settings wait for the next start.
    let scrape =
        format!("[[scrape]]\nname = \"self\"\nurl = \"http://{}/metrics\"\ninterval = \"200ms\"\n", daemon.api);
    let after = |service: &str| {
        text.replace("replicas = 2", service).replace(&rule("Before"), &format!("{}{scrape}", rule("After")))
    };
    let changed = format!("[storage]\nmax_series = 9999\n{}", after("replicas = 2\nlogs = { keep_files = 7 }"));
    std::fs::write(&daemon.config_path, changed).expect("write");
    hangup();
    let reloaded =
        eventually(Duration::from_secs(5), "config_reloaded", || daemon.events(Some("config_reloaded")).pop());
    let message = reloaded["message"].as_str().unwrap_or("");
    assert!(message.contains("1 rules") && message.contains("1 started"), "{message}");
    assert!(message.contains("web takes its new logs"), "{message}");
    assert!(message.contains("applied on the next start only: storage"), "{message}");
    eventually(Duration::from_secs(5), "the old rule resolves and the new one fires", || {
        let now = signals();
        let resolved = now.iter().any(|s| {
            s["name"] == "Before"
                && s["state"] == "resolved"
                && s["evidence"].as_str().is_some_and(|e| e.contains("configuration reload"))
        });
        let fired = now.iter().any(|s| s["name"] == "After" && s["state"] == "firing");
        (resolved && fired).then_some(())
    });
    eventually(Duration::from_secs(5), "the new target is scraped", || {
        let up = get(daemon.api, "/api/v1/query?query=up%7Bjob%3D%22self%22%7D").json();
        (up["data"]["result"][0]["value"][1] == "1").then_some(())
    });

    // The same through the API, with `mend reload`: nothing new says so, an invalid file fails.
    let reload = daemon.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&reload.stdout);
    assert_eq!(reload.status.code(), Some(0), "{reload:?}");
    // Nothing to reload, but the store's change still waits for a restart, and says so.
    assert!(stdout.starts_with("POST /api/v1/reload: ") && stdout.contains("are unchanged"), "{stdout}");
    assert!(stdout.trim_end().ends_with("applied on the next start only: storage"), "{stdout}");
    std::fs::write(&daemon.config_path, "[service.web\n").expect("write");
    let reload = daemon.cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&reload.stderr);
    assert_eq!(reload.status.code(), Some(1), "{reload:?}");
    assert!(stderr.contains("is invalid") && stderr.contains("mend.toml:1"), "{stderr}");

    assert!(alive(daemon.pid()), "SIGHUP must not kill mend");
    let now: Vec<u32> = daemon.replicas("web").iter().filter_map(|r| r["pid"].as_u64()).map(|pid| pid as u32).collect();
    assert_eq!(now, pids, "replicas untouched");

    // A service that differs only in its replica count is scaled at once; the others are left alone.
    std::fs::write(&daemon.config_path, after("replicas = 1")).expect("write");
    let reload = daemon.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&reload.stdout);
    assert!(reload.status.success() && stdout.contains("scaling web to 1"), "{reload:?}");
    assert!(!stdout.contains("next start"), "{stdout}");
    eventually(Duration::from_secs(10), "web scaled to 1", || (daemon.replicas("web").len() == 1).then_some(()));
    assert_eq!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pids[0])), "replica 0 untouched");
}

#[test]
fn a_log_follower_ends_with_the_daemon_instead_of_holding_it_up() {
    let mut daemon = Daemon::start(&web_config(""));
    daemon.wait_ready("web");
    let mut follower = Command::new(MEND)
        .args(["logs", "web", "-f", "--api"])
        .arg(daemon.api.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mend logs -f");
    // Following once the replica's first line is out.
    let stdout = follower.stdout.take().expect("piped stdout");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let _ = line_tx.send(line);
        }
    });
    let first = line_rx.recv_timeout(Duration::from_secs(10)).expect("the follower prints the log");
    assert!(first.expect("a line").contains("mend-demo"));
    let started = std::time::Instant::now();
    let status = daemon.signal_and_wait(Signal::SIGTERM, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    // The server used to wait its 5 s for the follower's connection, then cut it.
    assert!(started.elapsed() < Duration::from_secs(4), "shutdown took {:?}", started.elapsed());
    let ended = eventually(Duration::from_secs(5), "the follower ends", || follower.try_wait().ok().flatten());
    assert!(ended.success(), "the follow ended cleanly: {ended:?}");
}

#[test]
fn a_reload_that_adds_the_first_rule_starts_the_detect_loop() {
    let daemon = Daemon::start(&web_config(""));
    daemon.wait_ready("web");
    let mut text = std::fs::read_to_string(&daemon.config_path).expect("config");
    text.push_str("[[rule]]\nname = \"First\"\nexpr = 'vector(1) > 0'\n");
    std::fs::write(&daemon.config_path, text).expect("write");
    let reload = daemon.cli(&["reload"]);
    assert!(reload.status.success(), "{reload:?}");
    eventually(Duration::from_secs(5), "the first rule fires", || {
        let signals = get(daemon.api, "/api/v1/signals?active=true").json();
        signals["signals"].as_array().is_some_and(|s| s.iter().any(|s| s["name"] == "First")).then_some(())
    });
}

/// Runs a following client command (`events -f`, `signals -f`) against `daemon`; its lines arrive on
/// the receiver. The caller kills the child.
fn follower(daemon: &Daemon, args: &[&str]) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(MEND)
        .args(args)
        .arg("--api")
        .arg(daemon.api.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run a mend follower");
    let stdout = child.stdout.take().expect("piped stdout");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, line_rx)
}

/// Reads JSON lines from `lines` until one satisfies `wanted`; returns every line read.
fn read_until(
    lines: &std::sync::mpsc::Receiver<String>,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| panic!("timed out waiting for {what}; read {seen:?}"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let done = wanted(&value);
        seen.push(value);
        if done {
            return seen;
        }
    }
}

#[test]
fn following_starts_at_the_since_boundary_and_never_replays_history() {
    let daemon = Daemon::start(&format!("{}[[rule]]\nname = \"Always\"\nexpr = 'vector(1) > 0'\n", web_config("")));
    daemon.wait_ready("web");
    let signals =
        || get(daemon.api, "/api/v1/signals?limit=1000").json()["signals"].as_array().cloned().unwrap_or_default();
    eventually(Duration::from_secs(10), "the rule fires", || {
        signals().iter().any(|s| s["name"] == "Always" && s["state"] == "firing").then_some(())
    });
    // History that nothing after the boundary matches.
    let events = daemon.events(None);
    let last_old_event = events.iter().filter_map(|e| e["id"].as_i64()).max().expect("events");
    let newest_ms = events
        .iter()
        .chain(&signals())
        .filter_map(|item| {
            item["at_ms"]
                .as_i64()
                .or_else(|| item["at"].as_str().and_then(mend_types::Timestamp::parse).map(|t| t.as_millis()))
        })
        .max()
        .expect("history");
    let since = mend_types::Timestamp::from_millis(newest_ms + 1).to_string();
    let (mut events_follower, event_lines) = follower(&daemon, &["events", "-f", "--json", "--since", &since]);
    let (mut signals_follower, signal_lines) = follower(&daemon, &["signals", "-f", "--json", "--since", &since]);

    // Something new happens: a restart (events) and an external alert (a signal).
    let restarted = post(daemon.api, "/api/v1/services/web/restart?replica=0");
    assert_eq!(restarted.status, 200, "{}", restarted.body);
    let alert = r#"{"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "Fresh"}}]}"#;
    let posted =
        common::http_with_body("POST", daemon.api, "/api/v1/alerts", &[("content-type", "application/json")], alert)
            .expect("post an alert");
    assert_eq!(posted.status, 200, "{}", posted.body);

    let printed = read_until(&event_lines, "the restarted replica's started event", |e| e["kind"] == "started");
    let replayed: Vec<&serde_json::Value> =
        printed.iter().filter(|e| e["id"].as_i64().is_none_or(|id| id <= last_old_event)).collect();
    assert!(replayed.is_empty(), "history before --since was replayed: {replayed:?}");
    let printed = read_until(&signal_lines, "the new alert", |s| s["name"] == "Fresh");
    assert!(printed.iter().all(|s| s["name"] == "Fresh"), "history before --since was replayed: {printed:?}");
    for child in [&mut events_follower, &mut signals_follower] {
        let _ = child.kill();
        let _ = child.wait();
    }
    // A bare number is not read as milliseconds after the epoch (the whole history): it needs a unit.
    let bare = get(daemon.api, "/api/v1/events?since=5");
    assert_eq!(bare.status, 400, "{}", bare.body);
    assert!(
        bare.json()["error"].as_str().is_some_and(|e| e.contains("a number needs a unit: \"5s\"")),
        "{}",
        bare.body
    );
}

#[test]
fn a_since_without_a_unit_is_a_usage_error() {
    for command in ["events", "signals"] {
        let output = Command::new(MEND).args([command, "--since", "5"]).output().expect("run mend");
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("a number needs a unit: \"5s\" (or ms, m, h, d) for that long ago"), "{stderr}");
    }
}

#[test]
fn status_says_why_and_exits_3_when_a_replica_has_failed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marker = dir.path().join("ready");
    std::fs::write(&marker, "").expect("marker");
    let port = free_ports(3);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.broken]
command = ["{{demo}}", "--port", "{{port}}", "--exit-immediately", "3"]
ports = "{port}"
[service.broken.backoff]
initial = "10ms"
[service.broken.restart_limit]
max_restarts = 1
within = "1m"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{web}"
[service.web.liveness]
tcp = "127.0.0.1:{{port}}"
[service.web.readiness]
exec = ["test", "-f", "{marker}"]
interval = "100ms"
[service.fat]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{fat}"
max_memory_bytes = "1MiB"
[service.fat.restart_limit]
max_restarts = 1
within = "1m"
"#,
        web = port + 1,
        fat = port + 2,
        marker = marker.display(),
    ));
    eventually(Duration::from_secs(10), "mend gives up on the broken service", || {
        (daemon.replica("broken", 0)["state"] == "failed").then_some(())
    });
    let status = daemon.cli(&["status"]);
    assert_eq!(status.status.code(), Some(3), "{status:?}");
    let json = daemon.cli(&["status", "--json"]);
    assert_eq!(json.status.code(), Some(3), "{json:?}");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let broken = &json["services"][0]["replicas"][0];
    assert_eq!(broken["failed"], true, "{broken}");
    assert_eq!(
        (broken["last_exit"].as_str(), broken["last_exit_cause"].as_str()),
        (Some("exit code 3"), Some("program"))
    );

    // An operator's kill -9 is not mend's.
    let first = daemon.wait_ready("web")[0];
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill the replica");
    let web = eventually(Duration::from_secs(10), "a replacement of the killed replica", || {
        let replica = daemon.replica("web", 0);
        (replica["pid"].as_u64().is_some_and(|pid| pid != u64::from(first)) && replica["last_exit"].is_string())
            .then_some(replica)
    });
    assert_eq!(web["last_exit"], "killed by SIGKILL (9) from outside mend", "{web}");
    assert_eq!(web["last_exit_cause"], "external_signal", "{web}");

    // A readiness-only failure is not a start.
    daemon.wait_ready("web");
    std::fs::remove_file(&marker).expect("remove the marker");
    eventually(Duration::from_secs(10), "the replica leaves the ready set", || {
        (daemon.replica("web", 0)["ready"] == false).then_some(())
    });
    let web = daemon.replica("web", 0);
    assert_eq!(
        (web["state"].as_str(), web["not_ready"].as_str()),
        (Some("running"), Some("readiness failing")),
        "{web}"
    );
    let table = String::from_utf8_lossy(&daemon.cli(&["status"]).stdout).into_owned();
    assert!(table.contains("running, not ready: readiness failing"), "{table}");

    // mend's own stop for the memory limit says so.
    let fat = eventually(Duration::from_secs(15), "the replica above its memory limit is replaced", || {
        let replica = daemon.replica("fat", 0);
        (replica["last_exit_reason"] == "memory").then_some(replica)
    });
    assert_eq!(fat["last_exit_cause"], "mend", "{fat}");
    let shown = fat["last_exit"].as_str().unwrap_or("");
    assert!(
        shown.starts_with("stopped by mend: over its memory limit") || shown == "killed by mend: over its memory limit",
        "{fat}"
    );
    let table = String::from_utf8_lossy(&daemon.cli(&["status"]).stdout).into_owned();
    assert!(table.contains("by mend: over its memory limit"), "{table}");
}

#[test]
fn a_program_that_is_not_installed_is_a_warning_at_check_time_and_at_run_time() {
    let port = free_ports(1);
    let config = format!(
        "{}[service.ghost]\ncommand = [\"mend-no-such-program\", \"--port\", \"{{port}}\"]\nports = \"{port}\"\n",
        web_config("")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ghost.toml");
    std::fs::write(&path, config.replace("{demo}", DEMO).replace("{api}", "127.0.0.1:7070")).expect("write config");
    let line = std::fs::read_to_string(&path)
        .expect("config")
        .lines()
        .position(|line| line.starts_with("command = [\"mend-no-such-program\""))
        .expect("the ghost's command")
        + 1;
    let check = Command::new(MEND).arg("check-config").arg(&path).output().expect("run mend");
    assert_eq!(check.status.code(), Some(0), "a warning, not an error: {check:?}");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "{}:{line}:11: warning: service.ghost.command: command \"mend-no-such-program\" not found in PATH or next \
             to the mend binary; its replicas cannot start until it is installed",
            path.display()
        )
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("ok (2 services, 3 replicas, 1 warning)"), "{check:?}");

    // The daemon says so at WARN, with where to fix it.
    let daemon = Daemon::start(&config);
    let failed = eventually(Duration::from_secs(10), "the ghost fails to spawn", || {
        daemon.events(Some("spawn_failed")).into_iter().next()
    });
    let message = failed["message"].as_str().unwrap_or("");
    assert!(
        message.ends_with(
            "command \"mend-no-such-program\" not found in PATH or next to the mend binary: install it, or give its \
             path in service.ghost.command"
        ),
        "{message}"
    );
    eventually(Duration::from_secs(5), "a WARN line in mend's log", || {
        daemon
            .log_text()
            .lines()
            .any(|line| line.contains(" WARN ") && line.contains("mend-no-such-program"))
            .then_some(())
    });
}

/// A `mend run` started by a test as a user would (no `--state-dir`); stopped with SIGTERM when dropped.
struct Foreground(std::process::Child);

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let stopped = (0..750).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            matches!(self.0.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn each_config_has_its_own_state_and_client_commands_read_only_its_api_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("another working directory");
    let mut daemons = Vec::new();
    let mut apis = Vec::new();
    for name in ["alpha", "beta"] {
        let api = free_ports(1);
        let text = format!("[api]\nlisten = \"127.0.0.1:{api}\"\n[service.{name}]\ncommand = [\"sleep\", \"1000\"]\n");
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).expect("write config");
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log file");
        let child = Command::new(MEND)
            .args(["run", "-c"])
            .arg(&path)
            .env_remove("MEND_STATE_DIR")
            .current_dir(elsewhere.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run mend");
        daemons.push(Foreground(child));
        let address: std::net::SocketAddr = format!("127.0.0.1:{api}").parse().expect("address");
        eventually(Duration::from_secs(10), "the API answers", || {
            http("GET", address, "/api/v1/services", &[]).ok().filter(|r| r.status == 200)
        });
        apis.push((name, path, address));
    }
    // Both run (one state directory each, beside its config), and each lists its own events only.
    for (name, path, address) in &apis {
        assert!(dir.path().join(".mend").join(name).join("mend.db").exists(), "{name}'s state beside its config");
        let events =
            get(*address, "/api/v1/events?limit=1000").json()["events"].as_array().cloned().unwrap_or_default();
        let services: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["service"].as_str()).collect();
        assert!(services.iter().all(|service| service == name), "{name} lists {services:?}");
        // A client finds its daemon through -c, from anywhere.
        let status = Command::new(MEND).arg("status").arg("-c").arg(path).current_dir(elsewhere.path()).output();
        let status = status.expect("run mend status");
        assert!(status.status.success(), "{status:?}");
        let table = String::from_utf8_lossy(&status.stdout).into_owned();
        assert!(table.lines().nth(1).is_some_and(|row| row.starts_with(&format!("{name} "))), "{table}");
    }
    assert!(!elsewhere.path().join(".mend").exists(), "nothing in the working directory");

    // Only [api] is read: a PromQL typo elsewhere does not keep the client from its daemon...
    let (_, alpha, _) = &apis[0];
    let typo = dir.path().join("typo.toml");
    let text = std::fs::read_to_string(alpha).expect("config");
    std::fs::write(&typo, format!("{text}[[rule]]\nname = \"Typo\"\nexpr = 'rate(x[5m'\n")).expect("write");
    assert_eq!(Command::new(MEND).arg("check-config").arg(&typo).output().expect("run mend").status.code(), Some(1));
    let status = Command::new(MEND).args(["status", "-c"]).arg(&typo).output().expect("run mend status");
    assert!(status.status.success(), "{status:?}");
    // ... while a problem in [api] itself is named with its file and line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[service.x]\ncommand = [\"true\"]\n[api]\nlisten = \"nowhere\"\n").expect("write");
    let status = Command::new(MEND).args(["status", "-c"]).arg(&bad).output().expect("run mend status");
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.starts_with(&format!("error: {}:4:10: api.listen: invalid address \"nowhere\"", bad.display())),
        "{stderr}"
    );
}

#[test]
fn the_examples_say_how_to_reach_their_daemon() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut n_instructions = 0;
    for entry in std::fs::read_dir(&examples).expect("examples").flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let api = mend_config::load_api(&path).expect("a valid [api]");
        let own_config = format!("-c examples/{name}");
        for line in std::fs::read_to_string(&path).expect("example").lines().filter(|l| l.starts_with('#')) {
            // The client commands its comments tell to run (all but `mend run`) must reach its daemon.
            let Some((_, command)) = line.split_once("target/release/mend ") else { continue };
            if command.starts_with("run ") {
                continue;
            }
            n_instructions += 1;
            if api.listen.to_string() != mend_config::Api::DEFAULT_LISTEN {
                assert!(line.contains(&own_config), "{name}: its API is {}: `{line}` needs {own_config}", api.listen);
            }
        }
    }
    assert!(n_instructions >= 3, "{n_instructions} instructions found");
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definition() {
    let run = |args: &[&str]| Command::new(MEND).args(args).output().expect("run mend");
    let bash = run(&["completions", "bash"]);
    assert!(bash.status.success(), "{bash:?}");
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("_mend()") && script.contains("check-config") && script.contains("--since"), "{script}");
    let zsh = run(&["completions", "zsh"]);
    assert!(String::from_utf8_lossy(&zsh.stdout).starts_with("#compdef mend"), "{zsh:?}");
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2), "an unknown shell is a usage error");

    let man = run(&["man"]);
    assert!(man.status.success(), "{man:?}");
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(page.contains(".TH mend 1") && page.contains("check\\-config") && page.contains("Exit status"), "{page}");
    let dir = tempfile::tempdir().expect("temp dir");
    let pages = dir.path().join("man1");
    let written = Command::new(MEND).args(["man", "--dir"]).arg(&pages).output().expect("run mend man");
    assert!(written.status.success(), "{written:?}");
    let status_page = std::fs::read_to_string(pages.join("mend-status.1")).expect("mend-status.1");
    assert!(status_page.contains("\\-\\-json"), "{status_page}");
    assert!(pages.join("mend.1").exists() && pages.join("mend-chaos-proxy.1").exists());
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): mend says READY=1 once its API listens, RELOADING=1 and
/// READY=1 around a SIGHUP reload, pings the watchdog, and STOPPING=1 at shutdown; replicas never see
/// systemd's variables.
#[test]
fn systemd_hears_ready_reload_watchdog_and_stopping_and_replicas_do_not_inherit_its_socket() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket_path = dir.path().join("notify");
    let systemd = UnixDatagram::bind(&socket_path).expect("bind the notification socket");
    systemd.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let env_file = dir.path().join("replica-env");
    let api = free_ports(1);
    let config = dir.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nlisten = \"127.0.0.1:{api}\"\n[service.envdump]\ncommand = \"env > {} && exec sleep 300\"\nshell = true\n",
            env_file.display()
        ),
    )
    .expect("write config");
    let mut mend = Command::new(MEND)
        .args(["run", "-c"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn mend");
    let mut seen = Vec::new();
    let mut next = |wanted: &str| -> String {
        let mut buffer = [0u8; 512];
        loop {
            let n = systemd.recv(&mut buffer).unwrap_or_else(|e| panic!("waiting for {wanted}: {e}; seen {seen:?}"));
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            seen.push(message.clone());
            if message.starts_with(wanted) {
                return message;
            }
        }
    };
    let ready = next("READY=1");
    assert!(ready.contains("STATUS=supervising 1 services"), "{ready}");
    // Ready means the API answers.
    let api_address: std::net::SocketAddr = format!("127.0.0.1:{api}").parse().expect("address");
    assert_eq!(get(api_address, "/healthz").status, 200);
    next("WATCHDOG=1");
    let environment = eventually(Duration::from_secs(10), "the replica wrote its environment", || {
        std::fs::read_to_string(&env_file).ok().filter(|text| text.contains("MEND_SERVICE=envdump"))
    });
    for variable in ["NOTIFY_SOCKET=", "WATCHDOG_USEC="] {
        assert!(!environment.lines().any(|line| line.starts_with(variable)), "the replica saw {variable}");
    }
    kill(Pid::from_raw(mend.id() as i32), Signal::SIGHUP).expect("SIGHUP");
    assert!(next("RELOADING=1").contains("MONOTONIC_USEC="));
    next("READY=1");
    kill(Pid::from_raw(mend.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    next("STOPPING=1");
    let status = mend.wait().expect("mend exits");
    assert!(status.success(), "{status}");
}
