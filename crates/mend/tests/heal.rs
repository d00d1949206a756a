//! End to end healing (issue 9): signals become incidents, policies act through the guard, every action
//! is journalled, and people stay in the loop. Real mend, real replicas (mend-demo and a Python service),
//! a real webhook receiver (Python's http.server), a real SQLite journal.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Daemon, eventually, get, post};
use serde_json::Value;

/// The repository's examples directory.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn post_json(daemon: &Daemon, path: &str, body: &str) -> common::Response {
    common::http_with_body("POST", daemon.api, path, &[("Content-Type", "application/json")], body).expect("request")
}

/// An Alertmanager notification with one alert: the quickest trigger a test controls exactly.
fn alert(name: &str, status: &str, labels: &[(&str, &str)]) -> String {
    let mut all = serde_json::Map::new();
    all.insert("alertname".into(), Value::from(name));
    for (key, value) in labels {
        all.insert((*key).into(), Value::from(*value));
    }
    serde_json::json!({
        "version": "4",
        "status": status,
        "alerts": [{"status": status, "labels": all, "annotations": {"summary": format!("{name} {status}")}}]
    })
    .to_string()
}

fn incidents(daemon: &Daemon) -> Vec<Value> {
    get(daemon.api, "/api/v1/incidents?limit=100").json()["incidents"].as_array().cloned().unwrap_or_default()
}

fn incident(daemon: &Daemon, id: u64) -> Value {
    let response = get(daemon.api, &format!("/api/v1/incidents/{id}"));
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

/// Waits until incident `id` is in `state`; returns it.
fn wait_state(daemon: &Daemon, id: u64, state: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(timeout, &format!("incident {id} is {state}"), || {
            let response = get(daemon.api, &format!("/api/v1/incidents/{id}"));
            if response.status != 200 {
                return None;
            }
            last = response.json();
            (last["state"] == state).then(|| last.clone())
        })
    }));
    match found {
        Ok(incident) => incident,
        Err(_) => panic!(
            "incident {id} did not become {state} within {timeout:?}; last seen:\n{}\nlog:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default(),
            daemon.log_text()
        ),
    }
}

fn records(incident: &Value) -> Vec<Value> {
    incident["action_records"].as_array().cloned().unwrap_or_default()
}

/// A webhook receiver that is not ours: Python's http.server, writing each POST body to a file.
struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

const RECEIVER: &str = r#"
import http.server, os, sys, itertools
counter = itertools.count()
out = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        path = os.path.join(out, "%04d.json" % next(counter))
        with open(path + ".tmp", "wb") as f:
            f.write(body)
        os.rename(path + ".tmp", path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

impl Receiver {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = common::free_ports(1);
        let child = Command::new("python3")
            .args(["-c", RECEIVER, &port.to_string()])
            .arg(dir.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 runs the receiver");
        let address: SocketAddr = ([127, 0, 0, 1], port).into();
        eventually(Duration::from_secs(10), "the receiver listens", || {
            std::net::TcpStream::connect(address).is_ok().then_some(())
        });
        Self { child, dir, port }
    }

    /// Bodies received so far, in order.
    fn bodies(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|entries| {
                entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect()
            })
            .unwrap_or_default();
        paths.sort();
        paths.iter().filter_map(|p| serde_json::from_str(&common::read(p)).ok()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seed's worked example, as shipped in examples/heal.toml: a Python service exposing Prometheus
/// metrics, a streaming detector on its CPU series, a restart when it fires; the incident resolves.
#[test]
fn issue_9_the_worked_example_restarts_a_python_service_whose_cpu_the_detector_flags() {
    let _cpu = common::cpu_to_myself();
    let port = common::free_ports(1);
    let app = examples().join("heal/app.py");
    let example = common::read(&examples().join("heal.toml"));
    let config = example
        .replace("heal/app.py", &app.display().to_string())
        .replace("ports = \"9301\"", &format!("ports = \"{port}\"\n"))
        .replace("[service.app]", "[api]\nlisten = \"{api}\"\n\n[service.app]");
    let daemon = Daemon::start(&config);
    let pid = daemon.wait_ready("app")[0];
    // The default detector is armed for gross new extremes from its 30th point (a point a second).
    eventually(Duration::from_secs(60), "the detector has 35 points of the CPU series", || {
        (daemon.query("count_over_time(app_cpu_percent{service=\"app\"}[5m])") >= 35.0).then_some(())
    });
    assert!(incidents(&daemon).is_empty(), "no incident before the fault: {:?}", incidents(&daemon));
    let burn = common::http("POST", ([127, 0, 0, 1], port).into(), "/burn", &[]).expect("burn");
    assert_eq!(burn.status, 200);
    let opened = eventually(Duration::from_secs(30), "an incident opens on the CPU anomaly", || {
        incidents(&daemon).into_iter().next()
    });
    let id = opened["id"].as_u64().expect("an id");
    assert_eq!(opened["signals"][0]["name"], "CpuSpike");
    assert_eq!(opened["signals"][0]["service"], "app");
    assert_eq!(opened["signals"][0]["replica"], 0);
    let restarted = eventually(Duration::from_secs(30), "the replica is restarted", || {
        let replica = daemon.replica("app", 0);
        let new_pid = replica["pid"].as_u64()? as u32;
        (new_pid != pid && replica["ready"] == true).then_some(new_pid)
    });
    // The anomaly resolves a minute after its last alarm; the incident with it.
    let resolved = wait_state(&daemon, id, "resolved", Duration::from_secs(150));
    let actions = records(&resolved);
    assert_eq!(actions.len(), 1, "one restart: {actions:?}");
    let restart = &actions[0];
    assert_eq!((restart["action"]["kind"].as_str(), restart["service"].as_str()), (Some("restart"), Some("app")));
    assert_eq!((restart["replica"].as_u64(), restart["state"].as_str()), (Some(0), Some("succeeded")));
    assert_eq!(restart["actor"]["by"], "policy");
    assert!(restart["reason"].as_str().is_some_and(|r| r.starts_with("CpuSpike fired on app")), "{restart}");
    // The lifecycle event says why, not "requested by operator".
    let stopping = daemon.events(Some("stopping"));
    assert!(
        stopping.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("restart by healing policy: CpuSpike fired on app"))),
        "{stopping:?}"
    );
    assert_eq!(daemon.replica("app", 0)["pid"].as_u64(), Some(u64::from(restarted)), "restarted once");
    // The CLI shows the timeline.
    let shown = daemon.cli(&["incident", &id.to_string()]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("resolved") && text.contains("restart app/0 by policy"), "{text}");
}

/// Configs for the alert-driven tests: two mend-demo replicas of `web`, a notification target, and the
/// given healing sections.
fn demo_config(web_port: u16, healing: &str) -> String {
    format!(
        "[api]\nlisten = \"{{api}}\"\n[service.web]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nports = \"{web_port}-{}\"\nreplicas = 2\n[service.web.liveness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n{healing}",
        web_port + 3
    )
}

#[test]
fn issue_9_approve_mode_waits_and_mend_approve_runs_the_action() {
    let port = common::free_ports(4);
    let daemon = Daemon::start(&demo_config(
        port,
        "[healing]\nmode = \"approve\"\n[[heal]]\nwhen = \"alert:Sick\"\nactions = [\"restart\"]\nverify = \"2s\"\n",
    ));
    let pids = daemon.wait_ready("web");
    assert_eq!(
        post_json(&daemon, "/api/v1/alerts", &alert("Sick", "firing", &[("service", "web"), ("replica", "1")])).status,
        200
    );
    let pending = eventually(Duration::from_secs(10), "an action waits for approval", || {
        let actions = get(daemon.api, "/api/v1/actions?open=true").json()["actions"].as_array().cloned()?;
        actions.into_iter().find(|a| a["state"] == "pending")
    });
    let id = pending["id"].as_u64().expect("an id");
    assert_eq!((pending["service"].as_str(), pending["replica"].as_u64()), (Some("web"), Some(1)));
    let incident_id = pending["incident"].as_u64().expect("its incident");
    assert_eq!(incident(&daemon, incident_id)["state"], "acting");
    // Nothing runs while it waits: the healer has ticked past the decision and the replica is untouched.
    daemon.wait_for_runner_to_move_on("web");
    assert_eq!(daemon.replica("web", 1)["pid"].as_u64(), Some(u64::from(pids[1])));
    let approved = daemon.cli(&["approve", &id.to_string()]);
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
    assert!(
        String::from_utf8_lossy(&approved.stdout).contains("running"),
        "{}",
        String::from_utf8_lossy(&approved.stdout)
    );
    eventually(Duration::from_secs(30), "the approved restart replaces replica 1", || {
        let replica = daemon.replica("web", 1);
        (replica["pid"].as_u64() != Some(u64::from(pids[1])) && replica["ready"] == true).then_some(())
    });
    assert_eq!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pids[0])), "only the named replica");
    let again = daemon.cli(&["approve", &id.to_string()]);
    assert!(!again.status.success(), "an action is approved once");
    post_json(&daemon, "/api/v1/alerts", &alert("Sick", "resolved", &[("service", "web"), ("replica", "1")]));
    let resolved = wait_state(&daemon, incident_id, "resolved", Duration::from_secs(20));
    assert_eq!(records(&resolved)[0]["state"], "succeeded");
}

#[test]
fn issue_9_dry_run_records_what_it_would_do_and_changes_nothing() {
    let port = common::free_ports(4);
    let daemon = Daemon::start(&demo_config(
        port,
        "[service.web.healing]\nmode = \"dry-run\"\n[[heal]]\nwhen = \"alert:Sick\"\nactions = [\"restart\", \"scale +1\"]\nverify = \"1s\"\n",
    ));
    let pids = daemon.wait_ready("web");
    post_json(&daemon, "/api/v1/alerts", &alert("Sick", "firing", &[("service", "web"), ("replica", "0")]));
    let escalated = eventually(Duration::from_secs(20), "the dry run goes through the policy", || {
        incidents(&daemon).into_iter().find(|i| i["state"] == "escalated")
    });
    let actions = records(&escalated);
    let states: Vec<(&str, &str)> = actions
        .iter()
        .map(|a| (a["action"]["kind"].as_str().unwrap_or(""), a["state"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(states, [("restart", "dry_run"), ("scale", "dry_run"), ("escalate", "dry_run")]);
    assert_eq!(daemon.replicas("web").len(), 2, "not scaled");
    let now: Vec<u64> = daemon.replicas("web").iter().filter_map(|r| r["pid"].as_u64()).collect();
    assert_eq!(now, pids.iter().map(|p| u64::from(*p)).collect::<Vec<_>>(), "nothing restarted");
    assert!(daemon.events(Some("stopping")).is_empty());
}

#[test]
fn issue_9_pause_stops_every_automatic_action_and_resume_goes_on() {
    let port = common::free_ports(4);
    let daemon = Daemon::start(&demo_config(
        port,
        "[[heal]]\nwhen = \"alert:Sick\"\nactions = [\"restart\"]\nverify = \"2s\"\n",
    ));
    let pids = daemon.wait_ready("web");
    let paused = daemon.cli(&["pause"]);
    assert!(String::from_utf8_lossy(&paused.stdout).contains("healing paused"), "{paused:?}");
    assert_eq!(get(daemon.api, "/api/v1/healing").json()["paused"], true);
    post_json(&daemon, "/api/v1/alerts", &alert("Sick", "firing", &[("service", "web"), ("replica", "0")]));
    let opened = eventually(Duration::from_secs(10), "the incident is recorded while paused", || {
        incidents(&daemon).into_iter().next()
    });
    daemon.wait_for_runner_to_move_on("web");
    daemon.wait_for_runner_to_move_on("web");
    let id = opened["id"].as_u64().expect("an id");
    let still = incident(&daemon, id);
    assert_eq!((still["state"].as_str(), records(&still).len()), (Some("open"), 0), "{still}");
    assert_eq!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pids[0])));
    assert!(daemon.cli(&["resume"]).status.success());
    eventually(Duration::from_secs(30), "the restart runs once resumed", || {
        let replica = daemon.replica("web", 0);
        (replica["pid"].as_u64() != Some(u64::from(pids[0])) && replica["ready"] == true).then_some(())
    });
}

#[test]
fn issue_9_a_crash_loop_is_escalated_to_the_notification_target_not_restarted_forever() {
    let receiver = Receiver::start();
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\n[service.loop]\ncommand = [\"{{demo}}\", \"--exit-immediately\", \"3\"]\n[service.loop.restart_limit]\nmax_restarts = 3\nwithin = \"1m\"\n[service.loop.backoff]\ninitial = \"50ms\"\nmax = \"200ms\"\n[notify.ops]\nurl = \"http://127.0.0.1:{}/hooks/mend\"\n",
        receiver.port
    ));
    let body = eventually(Duration::from_secs(30), "the escalation reaches the webhook", || {
        receiver.bodies().into_iter().next()
    });
    assert_eq!(body["action"]["action"]["kind"], "escalate");
    assert_eq!(body["incident"]["state"], "escalated");
    assert_eq!(body["incident"]["diagnosis"]["name"], "crash_loop");
    assert_eq!(body["incident"]["services"][0], "loop");
    // The store commits events in batches, beside the heal stage: the give-up may reach the webhook first.
    let gave_up = eventually(Duration::from_secs(10), "the give-up is stored", || {
        Some(daemon.events(Some("gave_up"))).filter(|events| !events.is_empty())
    });
    assert_eq!(gave_up.len(), 1, "the supervisor gave up once: {gave_up:?}");
    let id = body["incident"]["id"].as_u64().expect("an id");
    let escalated = incident(&daemon, id);
    let actions = records(&escalated);
    assert_eq!(actions.len(), 1, "only the escalation, no restarts: {actions:?}");
    assert_eq!(actions[0]["state"], "succeeded");
    // No storm: the replica stays down and mend takes no further action.
    daemon.wait_for_runner_to_move_on("loop");
    assert_eq!(daemon.events(Some("started")).len(), 4, "the first start and 3 restarts");
    assert_eq!(get(daemon.api, "/api/v1/actions").json()["actions"].as_array().map(Vec::len), Some(1));
}

#[test]
fn issue_9_a_hook_and_a_notify_webhook_receive_the_incident() {
    let receiver = Receiver::start();
    let port = common::free_ports(4);
    let out = tempfile::tempdir().expect("temp dir");
    let hook_out = out.path().join("hook.txt");
    let daemon = Daemon::start(&demo_config(
        port,
        &format!(
            "[hook.record]\ncommand = [\"sh\", \"-c\", \"echo $MEND_INCIDENT_ID $MEND_SERVICE $MEND_REPLICA $MEND_INCIDENT_DIAGNOSIS > {}; echo hooked\"]\ntimeout = \"10s\"\n[notify.ops]\nurl = \"http://127.0.0.1:{}/hooks/mend\"\n[[heal]]\nwhen = \"alert:Sick\"\nactions = [\"hook record\", \"notify ops\"]\nverify = \"1s\"\n",
            hook_out.display(),
            receiver.port
        ),
    ));
    daemon.wait_ready("web");
    post_json(&daemon, "/api/v1/alerts", &alert("Sick", "firing", &[("service", "web"), ("replica", "1")]));
    let body = eventually(Duration::from_secs(30), "the webhook receives the incident", || {
        receiver.bodies().into_iter().find(|b| b["action"]["action"]["kind"] == "notify")
    });
    let id = body["incident"]["id"].as_u64().expect("an id");
    assert_eq!(common::read(&hook_out).trim(), format!("{id} web 1 Sick"));
    assert_eq!(body["incident"]["signals"][0]["name"], "Sick");
    assert_eq!(body["incident"]["services"][0], "web");
    let recorded = incident(&daemon, id);
    let actions = records(&recorded);
    assert_eq!(actions[0]["action"]["kind"], "hook");
    assert_eq!((actions[0]["state"].as_str(), actions[0]["output"].as_str()), (Some("succeeded"), Some("hooked\n")));
    eventually(Duration::from_secs(10), "the notify action is journalled as done", || {
        let actions = records(&incident(&daemon, id));
        (actions.len() >= 2 && actions[1]["state"] == "succeeded").then_some(())
    });
}

#[test]
fn issue_9_operator_commands_are_journalled_as_the_operators_with_their_reason() {
    let port = common::free_ports(4);
    let daemon = Daemon::start(&demo_config(port, ""));
    daemon.wait_ready("web");
    let restarted = daemon.cli(&["restart", "web", "-r", "0", "--reason", "new certificate"]);
    assert!(restarted.status.success(), "{}", String::from_utf8_lossy(&restarted.stderr));
    let actions = get(daemon.api, "/api/v1/actions").json()["actions"].as_array().cloned().unwrap_or_default();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["actor"]["by"], "operator");
    assert_eq!(
        (actions[0]["reason"].as_str(), actions[0]["state"].as_str()),
        (Some("new certificate"), Some("succeeded"))
    );
    let stopping = daemon.events(Some("stopping"));
    assert!(
        stopping.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("restart requested by operator: new certificate"))),
        "{stopping:?}"
    );
    // Refusals keep their statuses.
    assert_eq!(post(daemon.api, "/api/v1/services/web/restart?replica=9").status, 404);
    assert_eq!(post(daemon.api, "/api/v1/services/nope/restart").status, 404);
    let shown = daemon.cli(&["actions"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("operator"), "{shown:?}");
}

#[test]
fn issue_9_a_rule_without_a_service_label_is_attributed_through_the_incident() {
    let port = common::free_ports(4);
    let daemon = Daemon::start(&demo_config(
        port,
        "[[rule]]\nname = \"Degraded\"\nexpr = \"vector(1) > 0\"\nfor = \"8s\"\n[[heal]]\nwhen = \"Degraded\"\nactions = [\"restart\"]\nverify = \"2s\"\n",
    ));
    // The incident opens on web first (an alert that names it), then the rule, which names no service,
    // fires and joins it.
    post_json(&daemon, "/api/v1/alerts", &alert("WebSlow", "firing", &[("service", "web")]));
    let pids = daemon.wait_ready("web");
    let restart = eventually(Duration::from_secs(40), "the rule's restart runs", || {
        incidents(&daemon).into_iter().flat_map(|i| records(&i)).find(|a| a["action"]["kind"] == "restart")
    });
    assert_eq!(restart["service"], "web", "attributed to the incident's service: {restart}");
    assert_eq!(restart["actor"]["when"], "Degraded");
    let id = restart["incident"].as_u64().expect("its incident");
    let shown = incident(&daemon, id);
    let degraded = shown["signals"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "Degraded").cloned())
        .expect("the rule's signal");
    assert_eq!((degraded["service"].as_str(), degraded["attributed"].as_bool()), (Some("web"), Some(true)));
    eventually(Duration::from_secs(60), "both replicas restarted, one at a time", || {
        let now: Vec<u64> =
            daemon.replicas("web").iter().filter(|r| r["ready"] == true).filter_map(|r| r["pid"].as_u64()).collect();
        (now.len() == 2 && now.iter().all(|p| !pids.iter().any(|old| u64::from(*old) == *p))).then_some(())
    });
}

#[test]
fn issue_9_kill_9_mid_incident_loses_no_recorded_action() {
    let port = common::free_ports(4);
    let mut daemon = Daemon::start(&demo_config(
        port,
        "[hook.slow]\ncommand = [\"sleep\", \"60\"]\ntimeout = \"2m\"\n[[heal]]\nwhen = \"alert:Sick\"\nactions = [\"restart\", \"hook slow\"]\nverify = \"1s\"\n",
    ));
    let pids = daemon.wait_ready("web");
    post_json(&daemon, "/api/v1/alerts", &alert("Sick", "firing", &[("service", "web"), ("replica", "0")]));
    // The restart ran and ended; the hook runs (journalled before it started) when mend is killed.
    let id = eventually(Duration::from_secs(30), "the hook runs", || {
        let incident = incidents(&daemon).into_iter().next()?;
        let actions = records(&incident);
        (actions.len() == 2 && actions[1]["state"] == "running").then(|| incident["id"].as_u64())?
    });
    assert_ne!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pids[0])), "restarted");
    let before = records(&incident(&daemon, id));
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10));
    daemon.spawn();
    let after = incident(&daemon, id);
    assert_eq!(after["state"], "escalated", "a new run closes what the killed one left open");
    let actions = records(&after);
    assert_eq!(actions.len(), before.len(), "no recorded action lost: {actions:?}");
    assert_eq!(
        (actions[0]["action"]["kind"].as_str(), actions[0]["state"].as_str()),
        (Some("restart"), Some("succeeded"))
    );
    assert_eq!(
        (actions[1]["action"]["kind"].as_str(), actions[1]["state"].as_str()),
        (Some("hook"), Some("interrupted"))
    );
    assert_eq!(actions[0]["outcome"], before[0]["outcome"]);
    // Ids go on.
    post_json(&daemon, "/api/v1/alerts", &alert("Sick2", "firing", &[("service", "web")]));
    let newer = eventually(Duration::from_secs(10), "a new incident", || {
        incidents(&daemon).into_iter().find(|i| i["id"].as_u64() > Some(id))
    });
    assert_eq!(newer["id"].as_u64(), Some(id + 1));
}

#[test]
fn issue_9_errors_on_one_replica_are_a_bad_replica_ejected_then_restarted_when_it_persists() {
    let _cpu = common::cpu_to_myself();
    let ports = common::free_ports(5);
    let proxy: SocketAddr = ([127, 0, 0, 1], ports + 4).into();
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\n[service.web]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nports = \"{ports}-{}\"\nreplicas = 2\n[service.web.liveness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n[service.web.proxy]\nlisten = \"{proxy}\"\nejection_failures = 1000\n[[heal]]\nwhen = \"bad_replica\"\nactions = [\"eject 10s\", \"restart\"]\nverify = \"45s\"\n",
        ports + 3
    ));
    let pids = daemon.wait_ready("web");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = common::load(proxy, "/", 2, 20_000, Duration::from_millis(20), stop.clone());
    load.wait_for_more(50);
    let faulty: SocketAddr = ([127, 0, 0, 1], ports + 1).into();
    assert_eq!(common::http("POST", faulty, "/fault/errors?rate=0.6", &[]).expect("fault").status, 200);
    let opened = eventually(Duration::from_secs(40), "bad_replica opens an incident", || {
        incidents(&daemon).into_iter().find(|i| i["diagnosis"]["name"] == "bad_replica")
    });
    assert_eq!(
        (opened["signals"][0]["service"].as_str(), opened["signals"][0]["replica"].as_u64()),
        (Some("web"), Some(1))
    );
    let id = opened["id"].as_u64().expect("an id");
    // The ejection does not hold (the replica is back with its errors after 10 s): the restart follows once
    // the verify window is over; bad_replica resolves when its 30 s window no longer holds the errors.
    let resolved = wait_state(&daemon, id, "resolved", Duration::from_secs(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.join();
    let actions: Vec<(String, Option<u64>, String)> = records(&resolved)
        .iter()
        .map(|a| {
            (
                a["action"]["kind"].as_str().unwrap_or("").to_owned(),
                a["replica"].as_u64(),
                a["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("eject".to_owned(), Some(1), "succeeded".to_owned()),
            ("restart".to_owned(), Some(1), "succeeded".to_owned())
        ],
        "{resolved}"
    );
    assert_eq!(
        daemon.replica("web", 0)["pid"].as_u64(),
        Some(u64::from(pids[0])),
        "the healthy replica was left alone"
    );
    assert_ne!(daemon.replica("web", 1)["pid"].as_u64(), Some(u64::from(pids[1])), "the bad one was replaced");
    assert!(report.ok > 100, "traffic flowed: {report:?}");
}

#[test]
fn issue_9_a_reload_applies_changed_policies_at_once() {
    let port = common::free_ports(4);
    let daemon = Daemon::start(&demo_config(port, ""));
    let pids = daemon.wait_ready("web");
    assert_eq!(get(daemon.api, "/api/v1/healing").json()["policies"], 1, "the default policy only");
    let policy = "[[heal]]\nwhen = \"alert:Sick\"\nactions = [\"restart\"]\nverify = \"2s\"\n";
    let config = common::read(&daemon.config_path) + policy;
    std::fs::write(&daemon.config_path, config).expect("write config");
    let reloaded = post(daemon.api, "/api/v1/reload");
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert!(
        reloaded.json()["message"].as_str().is_some_and(|m| m.contains("healing policies applied")),
        "{}",
        reloaded.body
    );
    assert!(reloaded.json()["not_applied"].as_array().is_some_and(Vec::is_empty), "{}", reloaded.body);
    assert_eq!(get(daemon.api, "/api/v1/healing").json()["policies"], 2);
    post_json(&daemon, "/api/v1/alerts", &alert("Sick", "firing", &[("service", "web"), ("replica", "0")]));
    eventually(Duration::from_secs(30), "the reloaded policy restarts the replica", || {
        let replica = daemon.replica("web", 0);
        (replica["pid"].as_u64() != Some(u64::from(pids[0])) && replica["ready"] == true).then_some(())
    });
}

#[test]
fn issue_9_calls_the_proxy_observed_group_a_callers_trouble_under_its_callee_without_depends_on() {
    let ports = common::free_ports(6);
    let proxy: SocketAddr = ([127, 0, 0, 1], ports + 5).into();
    let receiver = Receiver::start();
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\n\
         [service.api]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nports = \"{ports}-{}\"\n\
         [service.api.liveness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n[service.api.proxy]\nlisten = \"{proxy}\"\n\
         [service.web]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nports = \"{}-{}\"\nreplicas = 2\n\
         [service.web.liveness]\nhttp = \"http://127.0.0.1:{{port}}/health\"\n\
         [notify.ops]\nurl = \"http://127.0.0.1:{}/hooks/mend\"\n\
         [[heal]]\nwhen = \"alert:Slow\"\nservice = \"web\"\nactions = [\"restart\"]\n",
        ports + 1,
        ports + 2,
        ports + 4,
        receiver.port
    ));
    daemon.wait_ready("api");
    let web_pids = daemon.wait_ready("web");
    // web calls api through api's proxy, saying who it is; nothing in the config says web depends on api.
    let healing = || get(daemon.api, "/api/v1/healing").json();
    assert_eq!(healing()["dependencies"], serde_json::json!([]), "no dependency before any call");
    let observed = eventually(Duration::from_secs(40), "the proxy's observed call reaches the graph", || {
        let answer = common::http("GET", proxy, "/", &[("x-mend-caller", "web")]).expect("proxied request");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let dependencies = healing()["dependencies"].clone();
        (dependencies.as_array().is_some_and(|d| !d.is_empty())).then_some(dependencies)
    });
    assert_eq!(observed, serde_json::json!([{"caller": "web", "callee": "api", "source": "observed"}]));
    // api goes down (an alert no policy acts on), then web is slow: one incident, rooted in api, and web's
    // restart (a policy limited to web, so it is not redirected to the root) is refused: web only suffers
    // from api.
    post_json(&daemon, "/api/v1/alerts", &alert("ApiDown", "firing", &[("service", "api")]));
    let id = eventually(Duration::from_secs(10), "api's incident opens", || {
        incidents(&daemon).into_iter().next().and_then(|i| i["id"].as_u64())
    });
    post_json(&daemon, "/api/v1/alerts", &alert("Slow", "firing", &[("service", "web"), ("replica", "0")]));
    let escalated = wait_state(&daemon, id, "escalated", Duration::from_secs(30));
    assert_eq!(incidents(&daemon).len(), 1, "web's trouble joined api's incident: {:?}", incidents(&daemon));
    assert_eq!(escalated["diagnosis"]["root"], "api");
    assert_eq!(escalated["diagnosis"]["victims"], serde_json::json!(["web"]));
    let actions = records(&escalated);
    assert_eq!(
        (actions[0]["action"]["kind"].as_str(), actions[0]["state"].as_str(), actions[0]["outcome"].as_str()),
        (Some("restart"), Some("refused"), Some("only a victim: the cause is in api")),
        "{escalated}"
    );
    // The escalation reached the target: the positive event after which web's replicas are compared.
    eventually(Duration::from_secs(30), "the escalation reaches the webhook", || {
        receiver.bodies().into_iter().find(|b| b["action"]["action"]["kind"] == "escalate")
    });
    assert_eq!(daemon.wait_ready("web"), web_pids, "no web replica was restarted");
}
