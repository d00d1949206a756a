//! End-to-end healing: real mend, real mend-demo replicas, real signals, on loopback.
#![allow(clippy::disallowed_methods)] // End-to-end tests measure and wait in real time.

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, alive, eventually, free_ports, get, post};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn demo_service(name: &str, replicas: u32, extra: &str) -> String {
    let port = free_ports(replicas as u16);
    format!(
        r#"
[service.{name}]
command = ["{{demo}}", "--port", "{{port}}"]
replicas = {replicas}
ports = "{port}-{last}"
{extra}
[service.{name}.liveness]
http = "http://127.0.0.1:{{port}}/health"
"#,
        last = port + replicas as u16 - 1
    )
}

fn config(services: &str) -> String {
    format!("[api]\nlisten = \"{{api}}\"\n{services}")
}

fn demo_address(daemon: &Daemon, service: &str, index: usize) -> std::net::SocketAddr {
    let port = daemon.replica(service, index)["port"].as_u64().expect("port") as u16;
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn crashed_replica_is_restarted_at_once_then_with_backoff() {
    let daemon = Daemon::start(&config(&demo_service(
        "web",
        1,
        "[service.web.backoff]\ninitial = \"300ms\"\nmax = \"5s\"\njitter = 0.0\n",
    )));
    let first = daemon.wait_ready("web")[0];
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill replica");
    let second = eventually(Duration::from_secs(5), "a replacement is ready", || {
        let replica = daemon.replica("web", 0);
        let pid = replica["pid"].as_u64()? as u32;
        (pid != first && replica["ready"] == true).then_some(pid)
    });
    // The second crash in a row waits for the back-off.
    let crashed_at = Instant::now();
    post(demo_address(&daemon, "web", 0), "/fault/crash");
    let third = eventually(Duration::from_secs(5), "a second replacement is ready", || {
        let replica = daemon.replica("web", 0);
        let pid = replica["pid"].as_u64()? as u32;
        (pid != second && replica["ready"] == true).then_some(pid)
    });
    assert!(crashed_at.elapsed() >= Duration::from_millis(300), "the back-off delay was skipped");
    assert!(alive(third) && !alive(first) && !alive(second));
    let delays: Vec<u64> =
        daemon.events(Some("restarted")).iter().map(|e| e["details"]["delay_ms"].as_u64().expect("delay")).collect();
    assert_eq!(delays, [0, 300]);
    let exits: Vec<String> =
        daemon.events(Some("exited")).iter().map(|e| e["message"].as_str().unwrap_or("").to_owned()).collect();
    assert!(exits[0].ends_with("killed by SIGKILL (9)"), "{exits:?}");
    assert!(exits[1].ends_with("killed by SIGABRT (6)") || exits[1].contains("core dumped"), "{exits:?}");
    assert_eq!(daemon.replica("web", 0)["restarts"], 2);
}

#[test]
fn sigstopped_replica_is_replaced_within_a_second_and_a_half() {
    let _cpu = common::cpu_to_myself();
    let daemon = Daemon::start(&config(&demo_service("web", 1, "")));
    let stopped = daemon.wait_ready("web")[0];
    let stopped_at_ms = wall_ms();
    kill(Pid::from_raw(stopped as i32), Signal::SIGSTOP).expect("stop replica");
    let replacement = eventually(Duration::from_secs(5), "a healthy replacement", || {
        let replica = daemon.replica("web", 0);
        let pid = replica["pid"].as_u64()? as u32;
        (pid != stopped && replica["ready"] == true).then_some(pid)
    });
    assert!(!alive(stopped));
    assert_eq!(get(demo_address(&daemon, "web", 0), "/").status, 200);
    let unhealthy = daemon.events(Some("unhealthy"));
    assert_eq!(unhealthy.len(), 1);
    assert_eq!(unhealthy[0]["details"]["hung"], true);
    // mend's part (seeing the hang and killing the replica) is bounded, by its probe interval and timeout;
    // how long the whole replacement takes (a debug build starting, on a machine shared with other
    // tests) is a benchmark figure: BENCHMARKS.md measures it.
    let detected_after = unhealthy[0]["at_ms"].as_u64().expect("at_ms").saturating_sub(stopped_at_ms);
    assert!(detected_after < 1500, "the hang was seen after {detected_after} ms");
    assert_eq!(daemon.events(Some("restarted"))[0]["details"]["delay_ms"], 0);
    assert!(alive(replacement));
}

/// Wall-clock milliseconds, comparable with events' `at_ms`.
fn wall_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    u64::try_from(since_epoch.as_millis()).expect("fits")
}

#[test]
fn blocked_replica_that_uses_no_cpu_is_replaced() {
    let daemon = Daemon::start(&config(&demo_service("web", 1, "")));
    let hung = daemon.wait_ready("web")[0];
    post(demo_address(&daemon, "web", 0), "/fault/hang?mode=block");
    eventually(Duration::from_secs(6), "the blocked replica is replaced", || {
        let replica = daemon.replica("web", 0);
        (replica["pid"].as_u64()? as u32 != hung && replica["ready"] == true).then_some(())
    });
    let reason = daemon.events(Some("unhealthy"))[0]["message"].as_str().unwrap_or("").to_owned();
    assert!(reason.contains("made no progress"), "{reason}");
}

#[test]
fn busy_replica_is_replaced_only_after_its_busy_timeout() {
    let _cpu = common::cpu_to_myself();
    let mut services = demo_service("web", 1, "stop_timeout = \"1s\"");
    services.push_str("busy_timeout = \"4s\"\n");
    let daemon = Daemon::start(&config(&services));
    let busy = daemon.wait_ready("web")[0];
    // Every request now spins on the CPU: the replica is overloaded, not hung.
    let address = demo_address(&daemon, "web", 0);
    std::thread::spawn(move || common::http("POST", address, "/fault/hang?mode=spin", &[]));
    eventually(Duration::from_secs(20), "the busy replica is replaced", || {
        let replica = daemon.replica("web", 0);
        (replica["pid"].as_u64()? as u32 != busy && replica["ready"] == true).then_some(())
    });
    let unhealthy = eventually(Duration::from_secs(5), "the unhealthy event is stored", || {
        daemon.events(Some("unhealthy")).first().cloned()
    });
    let reason = unhealthy["message"].as_str().unwrap_or("").to_owned();
    assert!(reason.contains("while busy"), "{reason}");
    assert_eq!(daemon.events(Some("unhealthy")).len(), 1);
    // The busy spell that ended in the replacement began with the last busy probe failure before it (a
    // probe that got through in between would have started the count again). Event times are wall-clock
    // milliseconds while mend judges on its monotonic clock: 10 ms of slack for the two to drift apart.
    let replaced_at = unhealthy["at_ms"].as_u64().expect("at_ms");
    let busy_since = daemon
        .events(Some("probe_failed"))
        .iter()
        .filter(|e| e["details"]["busy"] == true)
        .filter_map(|e| e["at_ms"].as_u64())
        .filter(|&at| at <= replaced_at)
        .max()
        .expect("the liveness probe saw a busy replica before replacing it");
    let busy_for = replaced_at - busy_since;
    assert!(busy_for >= 3_990, "replaced after {busy_for} ms of busy probes, before its 4 s busy timeout");
    // One probe interval (1 s) and a loaded machine later at most. This upper bound stays: both ends are
    // mend's own event stamps, so it measures mend's timeline and not how fast this test polls; it bounds,
    // end to end (probe cadence, the runner's reaction), how long mend lets a replica stay busy past its
    // timeout, which no other assertion here does. That the replacement comes at the first probe past the
    // timeout is asserted exactly, as data, by the lifecycle's scenario
    // `a_busy_replica_is_not_restarted_before_its_busy_timeout`; 6 s of slack over one probe interval
    // keeps a loaded 2-core machine from failing this one.
    assert!(busy_for < 10_000, "replaced only after {busy_for} ms of busy probes");
    // Nothing else stopped it earlier: the first stop of the busy replica is this one.
    let stopping = daemon.events(Some("stopping"));
    let first_stop = stopping[0]["at_ms"].as_u64().expect("at_ms");
    assert!(first_stop >= replaced_at, "stopped at {first_stop}, before the busy timeout ran out at {replaced_at}");
    // A busy replica is asked to stop gracefully first (it may still finish its work).
    let stopping = stopping[0]["message"].as_str().unwrap_or("").to_owned();
    assert!(stopping.starts_with("sending SIGTERM"), "{stopping}");
}

#[test]
fn crash_loop_gives_up_after_the_restart_limit_and_start_resets_it() {
    let port = free_ports(1);
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.broken]
command = ["{{demo}}", "--port", "{{port}}", "--exit-immediately", "3"]
ports = "{port}"
[service.broken.backoff]
initial = "10ms"
[service.broken.restart_limit]
max_restarts = 3
within = "1m"
"#
    )));
    eventually(Duration::from_secs(10), "mend gives up", || {
        (daemon.replica("broken", 0)["state"] == "failed").then_some(())
    });
    assert_eq!(daemon.events(Some("restarted")).len(), 3);
    assert_eq!(daemon.events(Some("exited")).len(), 4);
    let gave_up = daemon.events(Some("gave_up"));
    assert_eq!(gave_up.len(), 1);
    assert!(
        gave_up[0]["message"].as_str().unwrap_or("").contains("more than 3 restarts within 60s (last: exit code 3)")
    );
    // It stays down: no more restarts, though its runner goes on (long past the 80 ms back-off it
    // would have waited next).
    daemon.wait_for_runner_to_move_on("broken");
    assert_eq!(daemon.events(Some("exited")).len(), 4);
    assert_eq!(daemon.replica("broken", 0)["state"], "failed");
    // An operator's start gives it a fresh budget of restarts.
    assert_eq!(post(daemon.api, "/api/v1/services/broken/start").status, 200);
    eventually(Duration::from_secs(10), "it gives up again", || {
        (daemon.events(Some("gave_up")).len() == 2).then_some(())
    });
    assert_eq!(daemon.events(Some("exited")).len(), 8);
}

#[test]
fn startup_probe_holds_liveness_until_the_service_has_started() {
    let port = free_ports(1);
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.slow]
command = ["{{demo}}", "--port", "{{port}}", "--startup-delay", "2s"]
ports = "{port}"
[service.slow.startup]
tcp = "127.0.0.1:{{port}}"
interval = "100ms"
failure_threshold = 50
[service.slow.liveness]
http = "http://127.0.0.1:{{port}}/health"
interval = "100ms"
failure_threshold = 1
"#
    )));
    let pid = daemon.wait_ready("slow")[0];
    // From mend's own event times: ready no sooner than the 2 s the replica takes to listen (10 ms of slack
    // between the wall clock of the events and the monotonic one the replica sleeps on).
    let at = |kind: &str| daemon.events(Some(kind))[0]["at_ms"].as_u64().expect("at_ms");
    let ready_after = at("ready") - at("started");
    assert!(ready_after >= 1990, "ready {ready_after} ms after the start, before it listened");
    assert_eq!(daemon.replica("slow", 0)["restarts"], 0);
    assert!(daemon.events(Some("unhealthy")).is_empty());
    assert!(alive(pid));
}

#[test]
fn startup_probe_that_never_passes_restarts_the_replica() {
    let port = free_ports(1);
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.stuck]
command = ["{{demo}}", "--port", "{{port}}", "--startup-delay", "1h"]
ports = "{port}"
[service.stuck.startup]
tcp = "127.0.0.1:{{port}}"
interval = "50ms"
failure_threshold = 10
"#
    )));
    eventually(Duration::from_secs(10), "the startup probe gives up", || {
        daemon.events(Some("unhealthy")).first().map(|e| e["message"].as_str().unwrap_or("").to_owned())
    });
    let reason = daemon.events(Some("unhealthy"))[0]["message"].as_str().unwrap_or("").to_owned();
    assert!(reason.starts_with("startup check failed: not started after 10 startup probes"), "{reason}");
}

#[test]
fn readiness_toggles_without_restarting() {
    let port = free_ports(1);
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
[service.web.liveness]
tcp = "127.0.0.1:{{port}}"
[service.web.readiness]
http = "http://127.0.0.1:{{port}}/health"
interval = "100ms"
failure_threshold = 2
success_threshold = 2
"#
    )));
    let pid = daemon.wait_ready("web")[0];
    let address = demo_address(&daemon, "web", 0);
    post(address, "/fault/unhealthy");
    eventually(Duration::from_secs(5), "the replica leaves the ready set", || {
        (daemon.replica("web", 0)["ready"] == false).then_some(())
    });
    assert_eq!(daemon.replica("web", 0)["state"], "running");
    assert_eq!(daemon.replica("web", 0)["not_ready"], "readiness failing");
    post(address, "/fault/reset");
    eventually(Duration::from_secs(5), "the replica is ready again", || {
        (daemon.replica("web", 0)["ready"] == true).then_some(())
    });
    assert_eq!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pid)));
    let kinds: Vec<String> = daemon
        .events(None)
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_owned())
        .filter(|kind| kind == "ready" || kind == "unready")
        .collect();
    assert_eq!(kinds, ["ready", "unready", "ready"]);
}

#[test]
fn stop_escalates_to_sigkill_after_the_stop_timeout() {
    let port = free_ports(1);
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.stubborn]
command = ["{{demo}}", "--port", "{{port}}", "--ignore-sigterm"]
ports = "{port}"
stop_timeout = "500ms"
# Ready once it answers: by then it ignores SIGTERM (a replica without probes is ready once spawned).
[service.stubborn.readiness]
tcp = "127.0.0.1:{{port}}"
interval = "100ms"
"#
    )));
    let pid = daemon.wait_ready("stubborn")[0];
    let response = post(daemon.api, "/api/v1/services/stubborn/stop");
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["replicas"][0]["state"], "stopped");
    assert!(!alive(pid));
    let exit = daemon.events(Some("exited"));
    assert!(exit[0]["message"].as_str().unwrap_or("").ends_with("killed by SIGKILL (9)"), "{exit:?}");
    // SIGTERM first, SIGKILL once the stop timeout ran out (mend's event times; 10 ms of slack between
    // their wall clock and the monotonic one mend times the stop on).
    let stopping = daemon.events(Some("stopping"));
    let signals: Vec<u64> = stopping.iter().filter_map(|e| e["details"]["signal"].as_u64()).collect();
    assert_eq!(signals, [15, 9], "{stopping:?}");
    let waited = stopping[1]["at_ms"].as_u64().expect("at_ms") - stopping[0]["at_ms"].as_u64().expect("at_ms");
    assert!(waited >= 490, "SIGKILL {waited} ms after SIGTERM, before the 500 ms stop timeout");
    daemon.wait_for_runner_to_move_on("stubborn");
    assert_eq!(daemon.replica("stubborn", 0)["state"], "stopped", "a stopped replica stays stopped");
    assert_eq!(daemon.events(Some("started")).len(), 1, "a stopped replica stays stopped");
}

#[test]
fn services_start_after_their_dependencies_are_ready() {
    let (db_port, web_port) = (free_ports(1), free_ports(1));
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{web_port}"
depends_on = ["db"]
[service.db]
command = ["{{demo}}", "--port", "{{port}}", "--startup-delay", "1s"]
ports = "{db_port}"
[service.db.readiness]
http = "http://127.0.0.1:{{port}}/health"
"#
    )));
    daemon.wait_ready("web");
    // Events reach the store on its own thread, a moment after the replica's state changes.
    let order = eventually(Duration::from_secs(5), "db's ready and web's started events are stored", || {
        let order: Vec<(String, String)> = daemon
            .events(None)
            .iter()
            .filter(|e| e["kind"] == "started" || e["kind"] == "ready")
            .map(|e| (e["service"].as_str().unwrap_or("").to_owned(), e["kind"].as_str().unwrap_or("").to_owned()))
            .collect();
        let stored = |service: &str, kind: &str| order.iter().any(|(s, k)| s == service && k == kind);
        (stored("db", "ready") && stored("web", "started")).then_some(order)
    });
    let position = |service: &str, kind: &str| order.iter().position(|(s, k)| s == service && k == kind);
    assert!(position("db", "ready") < position("web", "started"), "{order:?}");
}

#[test]
fn a_service_waiting_for_its_dependency_is_not_scaled_and_keeps_the_dependency() {
    let (db_port, web_ports) = (free_ports(1), free_ports(2));
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{web_ports}-{}"
depends_on = ["db"]
[service.db]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{db_port}"
[service.db.readiness]
http = "http://127.0.0.1:{{port}}/never-ready"
"#,
        web_ports + 1
    )));
    eventually(Duration::from_secs(10), "db has a process (never ready)", || {
        (daemon.replica("db", 0)["pid"].as_u64().is_some()).then_some(())
    });
    let out = daemon.cli(&["scale", "db", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("service \"web\" depends on it and has not started yet"), "{stderr}");
    let out = daemon.cli(&["scale", "web", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("still waiting for its dependencies"), "{stderr}");
    assert_eq!(daemon.replica("web", 0)["state"], "waiting");
    assert_eq!(daemon.replicas("web").len(), 1);
}

#[test]
fn a_port_held_by_another_process_is_not_fought_over() {
    let port = free_ports(1);
    let squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold the port");
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
[service.web.backoff]
initial = "200ms"
"#
    )));
    let failure = eventually(Duration::from_secs(5), "spawn fails on the held port", || {
        daemon.events(Some("spawn_failed")).first().map(|e| e["message"].as_str().unwrap_or("").to_owned())
    });
    assert_eq!(failure, format!("spawn failed: port {port} is in use by another process"));
    assert!(daemon.events(Some("started")).is_empty(), "no process was started to fight for the port");
    drop(squatter);
    daemon.wait_ready("web");
}

#[test]
fn what_a_dead_leader_leaves_in_its_group_is_stopped() {
    let marker = format!("1000{}", std::process::id());
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.leaky]
shell = true
command = "sleep {marker} & exit 3"
stop_timeout = "500ms"
[service.leaky.backoff]
initial = "50ms"
[service.leaky.restart_limit]
max_restarts = 2
within = "1m"
"#
    )));
    eventually(Duration::from_secs(15), "mend gives up on the crash loop", || {
        (daemon.replica("leaky", 0)["state"] == "failed").then_some(())
    });
    let leftovers =
        std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().expect("pgrep");
    assert!(
        leftovers.stdout.is_empty(),
        "children of exited leaders were left running: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}

#[test]
fn a_stopped_replica_is_replaced_even_when_a_tcp_connect_would_succeed() {
    let _cpu = common::cpu_to_myself();
    let (tcp_port, bare_port) = (free_ports(1), free_ports(1));
    let daemon = Daemon::start(&config(&format!(
        r#"
[service.tcp]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{tcp_port}"
[service.tcp.liveness]
tcp = "127.0.0.1:{{port}}"
[service.bare]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{bare_port}"
"#
    )));
    let tcp = daemon.wait_ready("tcp")[0];
    let bare = daemon.wait_ready("bare")[0];
    kill(Pid::from_raw(tcp as i32), Signal::SIGSTOP).expect("stop");
    kill(Pid::from_raw(bare as i32), Signal::SIGSTOP).expect("stop");
    eventually(Duration::from_secs(5), "the TCP-probed replica is replaced", || {
        (daemon.replica("tcp", 0)["pid"].as_u64()? as u32 != tcp).then_some(())
    });
    // Without any probe, the /proc sampler sees the stopped process within a few seconds.
    eventually(Duration::from_secs(6), "the unprobed replica is replaced", || {
        (daemon.replica("bare", 0)["pid"].as_u64()? as u32 != bare).then_some(())
    });
    assert!(!alive(tcp) && !alive(bare));
    // Which check saw each: the TCP probe (whose connect the kernel still accepted) for the probed one,
    // not the slower /proc sampler that catches the unprobed one.
    let checks = eventually(Duration::from_secs(5), "both unhealthy events are stored", || {
        let events = daemon.events(Some("unhealthy"));
        let check = |service: &str| {
            events
                .iter()
                .find(|e| e["service"] == service)
                .map(|e| e["details"]["check"].as_str().unwrap_or("").to_owned())
        };
        Some((check("tcp")?, check("bare")?))
    });
    assert_eq!(checks, ("liveness".to_owned(), "process".to_owned()));
}

/// A launcher that daemonizes a server the way nginx and redis do (fork, `setsid`), then exits once the
/// server has left its group. Modes: `title`: the server clears its environment (as a program that
/// writes its process title over it looks) and listens on the port before the launcher exits (nginx);
/// `late`: the same, but it listens a moment after the launcher exited (redis); `tagged`: the server
/// keeps its environment and listens on nothing.
const DAEMONIZING_LAUNCHER: &str = r#"
import os, sys
port, mode = sys.argv[1], sys.argv[2]
ready_r, ready_w = os.pipe()
if os.fork() == 0:
    os.setsid()
    os.close(ready_r)
    if mode == "late":
        os.write(ready_w, b"x")
    server = "import os,socket,sys,time\nif sys.argv[3] == 'late': time.sleep(0.3)\nif sys.argv[3] != 'tagged':\n    s=socket.socket()\n    s.bind(('127.0.0.1', int(sys.argv[1])))\n    s.listen()\nif sys.argv[3] != 'late': os.write(int(sys.argv[2]), b'x')\ntime.sleep(300)"
    os.set_inheritable(ready_w, True)
    env = dict(os.environ) if mode == "tagged" else dict()
    os.execve(sys.executable, [sys.executable, "-c", server, port, str(ready_w), mode], env)
os.close(ready_w)
os.read(ready_r, 1)
"#;

#[test]
fn what_a_replica_daemonized_is_stopped_when_it_exits() {
    let ports = [free_ports(1), free_ports(1), free_ports(1)];
    let modes = ["title", "late", "tagged"];
    let mut services = String::new();
    for (mode, port) in modes.iter().zip(ports) {
        services.push_str(&format!(
            "[service.{mode}]\ncommand = [\"python3\", \"-c\", '''{DAEMONIZING_LAUNCHER}''', \"{{port}}\", \"{mode}\"]\nports = \"{port}\"\nrestart = \"never\"\n"
        ));
    }
    let daemon = Daemon::start(&config(&services));
    for mode in modes {
        let detached = eventually(Duration::from_secs(10), "the detached processes are found", || {
            daemon.events(Some("detached")).into_iter().find(|event| event["service"] == mode)
        });
        let pids: Vec<u32> = detached["details"]["pids"]
            .as_array()
            .expect("pids")
            .iter()
            .filter_map(|pid| pid.as_u64())
            .map(|pid| pid as u32)
            .collect();
        assert_eq!(pids.len(), 1, "{detached}");
        assert!(detached["message"].as_str().unwrap_or("").contains("run it in the foreground"), "{detached}");
        eventually(Duration::from_secs(10), "the detached process is stopped", || (!alive(pids[0])).then_some(()));
    }
    // The ports are free again for the next start.
    for port in ports {
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}

/// A replica that forks a child into a session of its own (keeping its environment, so the child carries
/// the replica's tag) and runs on; it writes `LEADER CHILD` pids to the file named by its argument.
const FORKING_REPLICA: &str = r#"
import os, sys, time
if os.fork() == 0:
    os.setsid()
    time.sleep(300)
    sys.exit(0)
with open(sys.argv[1], "a") as f:
    f.write(str(os.getpid()) + "\n")
time.sleep(300)
"#;

/// issue 19: the search for what a crashed leader left runs beside its restart. It stops what the old
/// leader left, and neither the new leader (which carries the same tag, outside the old group) nor what
/// the new leader forked.
#[test]
fn issue_19_the_restart_does_not_wait_for_the_search_and_the_search_spares_the_successor() {
    let dir = tempfile::tempdir().expect("temp dir");
    let leaders = dir.path().join("leaders");
    let daemon = Daemon::start(&config(&format!(
        "[service.forker]\ncommand = [\"python3\", \"-c\", '''{FORKING_REPLICA}''', \"{}\"]\n",
        leaders.display()
    )));
    let first = daemon.wait_ready("forker")[0];
    let read_leaders = || -> Vec<u32> {
        std::fs::read_to_string(&leaders).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
    };
    eventually(Duration::from_secs(10), "the first leader forked its child", || {
        read_leaders().contains(&first).then_some(())
    });
    let tagged_child_of = |leader: u32| -> Option<u32> {
        // The child left the leader's group and session, but its parent is still the leader.
        mend_observe::process::all_pids()
            .into_iter()
            .find(|&pid| mend_observe::process::stat_facts(pid).is_some_and(|facts| facts.ppid == leader as i32))
    };
    let first_child = eventually(Duration::from_secs(5), "the first child runs", || tagged_child_of(first));
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).expect("kill the leader");
    let detached = eventually(Duration::from_secs(10), "what the first leader left is found", || {
        daemon.events(Some("detached")).into_iter().next()
    });
    // The restart did not wait for the search: the successor started before the leftovers were found.
    let restarted = daemon.events(Some("started")).into_iter().nth(1).expect("the successor's start");
    assert!(restarted["id"].as_u64() < detached["id"].as_u64(), "{restarted}\n{detached}");
    let pids: Vec<u64> =
        detached["details"]["pids"].as_array().expect("pids").iter().filter_map(|p| p.as_u64()).collect();
    assert_eq!(pids, [u64::from(first_child)], "{detached}");
    eventually(Duration::from_secs(10), "the first child is stopped", || (!alive(first_child)).then_some(()));
    // The successor started meanwhile, and runs on with its own child.
    let second = daemon.wait_ready("forker")[0];
    assert_ne!(second, first);
    eventually(Duration::from_secs(10), "the second leader forked its child", || {
        read_leaders().contains(&second).then_some(())
    });
    let second_child = eventually(Duration::from_secs(5), "the second child runs", || tagged_child_of(second));
    // The search for the first leader's leftovers is over (its detached event named only the first child,
    // which it stopped): nothing of the successor was stopped.
    assert!(alive(second) && alive(second_child), "the successor or its child was stopped");
    assert_eq!(daemon.replica("forker", 0)["pid"].as_u64(), Some(u64::from(second)));
    assert_eq!(daemon.events(Some("detached")).len(), 1, "{:?}", daemon.events(Some("detached")));
}
