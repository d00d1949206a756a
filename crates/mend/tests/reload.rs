//! End-to-end reloads that change services while mend runs: a changed command replaces the replicas
//! rolling through the proxy, a `mend scale` survives the reload of another section, changed ports roll
//! the replicas onto the new range.
#![allow(clippy::disallowed_methods)] // End-to-end tests measure and wait in real time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, KeepAlive, eventually, free_ports, load};

/// Two mend-demo replicas (room for four) behind mend's proxy; `{args}` goes after the command's port.
fn config(args: &str, proxy_port: u16, ports: u16, extra: &str) -> String {
    format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"{args}]
replicas = 2
ports = "{ports}-{last}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
[service.web.proxy]
listen = "127.0.0.1:{proxy_port}"
{extra}"#,
        last = ports + 3
    )
}

fn start() -> (Daemon, SocketAddr, u16, u16) {
    let (ports, proxy_port) = (free_ports(4), free_ports(1));
    let daemon = Daemon::start(&config("", proxy_port, ports, ""));
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    daemon.wait_ready("web");
    eventually(Duration::from_secs(10), "the proxy routes to the replicas", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    (daemon, proxy, ports, proxy_port)
}

/// The rendered config file with `{demo}` and `{api}` filled in as the daemon wrote them.
fn rewrite(daemon: &Daemon, from: &str, to: &str) {
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(&daemon.config_path, text.replace(from, to)).expect("write config");
}

fn pids(daemon: &Daemon) -> Vec<u64> {
    daemon.replicas("web").iter().filter_map(|r| r["pid"].as_u64()).collect()
}

fn command_line(pid: u64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn issue_13_a_reload_that_changes_the_command_replaces_the_replicas_with_no_failed_request() {
    let _cpu = common::cpu_to_myself();
    let (daemon, proxy, _, _) = start();
    let before = pids(&daemon);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 4, 200_000, Duration::from_millis(1), stop.clone());
    running.wait_for_more(300);

    rewrite(&daemon, r#""--port", "{port}"]"#, r#""--port", "{port}", "--name", "v2"]"#);
    let reload = daemon.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&reload.stdout);
    assert!(reload.status.success(), "{reload:?}");
    assert!(stdout.contains("replacing the replicas of web (command changed)"), "{stdout}");
    assert!(!stdout.contains("next start"), "{stdout}");
    let after = eventually(Duration::from_secs(60), "both replicas run the new command, ready", || {
        let replicas = daemon.replicas("web");
        let new: Vec<u64> = replicas
            .iter()
            .filter(|r| r["ready"] == true)
            .filter_map(|r| r["pid"].as_u64())
            .filter(|pid| !before.contains(pid) && command_line(*pid).contains("--name v2"))
            .collect();
        (replicas.len() == 2 && new.len() == 2).then_some(new)
    });
    running.wait_for_more(300);
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    assert!(after.iter().all(|pid| report.pids.contains_key(&(*pid as u32))), "the new replicas served: {report:?}");
    assert!(daemon.log_text().matches("drained").count() >= 2, "each old replica was drained before it stopped");
    let replaced = daemon.events(Some("stopping"));
    assert!(
        replaced
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("the configuration changed (command)"))),
        "the stop says why: {replaced:?}"
    );
}

#[test]
fn issue_13_a_manual_scale_survives_the_reload_of_another_section() {
    let (daemon, _proxy, _, _) = start();
    let scale = daemon.cli(&["scale", "web", "3"]);
    assert!(scale.status.success(), "{scale:?}");
    assert_eq!(daemon.replicas("web").len(), 3);

    // A rule added: another section. The reload used to scale web back to the file's 2.
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    std::fs::write(&daemon.config_path, format!("{text}\n[[rule]]\nname = \"Up\"\nexpr = 'vector(1)'\n"))
        .expect("write");
    let reload = daemon.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&reload.stdout);
    assert!(reload.status.success() && stdout.contains("1 rules"), "{reload:?}");
    assert!(!stdout.contains("scaling"), "{stdout}");
    assert_eq!(daemon.replicas("web").len(), 3, "the scaled count stays");

    // The file's own count changed: that applies.
    rewrite(&daemon, "replicas = 2", "replicas = 1");
    let reload = daemon.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&reload.stdout);
    assert!(reload.status.success() && stdout.contains("scaling web to 1"), "{reload:?}");
    eventually(Duration::from_secs(30), "web scaled to 1", || (daemon.replicas("web").len() == 1).then_some(()));
}

#[test]
fn issue_13_a_changed_count_and_ports_apply_the_count_or_say_why_not() {
    let _cpu = common::cpu_to_myself();
    let (daemon, proxy, ports, _) = start();
    let range = format!("{ports}-{}", ports + 3);
    let before = std::fs::read_to_string(&daemon.config_path).expect("config");
    let before_pids = pids(&daemon);
    // A range that overlaps the running one at other indexes cannot be rolled onto (a replica would
    // start on a port another still holds): refused with the file, line and key, and nothing changes
    // (a rule added in the same file is not applied).
    let shifted = format!("{}-{}", ports + 1, ports + 3);
    rewrite(&daemon, &format!("ports = \"{range}\""), &format!("ports = \"{shifted}\""));
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    std::fs::write(&daemon.config_path, format!("{text}\n[[rule]]\nname = \"Up\"\nexpr = 'vector(1)'\n"))
        .expect("write");
    let reload = daemon.cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&reload.stderr);
    assert_eq!(reload.status.code(), Some(1), "{reload:?}");
    let line = before.lines().position(|l| l.starts_with("ports = ")).map_or(0, |idx| idx + 1);
    let why =
        format!("mend.toml:{line}:9: service.web.ports: the new port range {shifted} overlaps the running {range}");
    assert!(stderr.contains("nothing applied") && stderr.contains(&why), "{stderr}");
    assert_eq!(pids(&daemon), before_pids, "nothing replaced");
    assert!(daemon.events(Some("config_reloaded")).is_empty(), "nothing reloaded");

    // Six replicas on a range apart: the replicas roll onto the new ports, then the count applies, with
    // no failed request through the proxy.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/", 4, 200_000, Duration::from_millis(1), stop.clone());
    running.wait_for_more(300);
    let other = free_ports(8);
    let moved = format!("{other}-{}", other + 7);
    rewrite(&daemon, &format!("replicas = 2\nports = \"{shifted}\""), &format!("replicas = 6\nports = \"{moved}\""));
    let reload = daemon.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&reload.stdout);
    assert!(reload.status.success(), "{reload:?}");
    assert!(stdout.contains("replacing the replicas of web (ports changed)"), "{stdout}");
    assert!(stdout.contains("scaling web to 6"), "{stdout}");
    assert!(!stdout.contains("next start"), "{stdout}");
    eventually(Duration::from_secs(90), "six ready replicas on the new ports", || {
        let replicas = daemon.replicas("web");
        let on_new = replicas
            .iter()
            .filter(|r| r["ready"] == true)
            .filter_map(|r| r["port"].as_u64())
            .filter(|port| (u64::from(other)..u64::from(other) + 8).contains(port))
            .count();
        (replicas.len() == 6 && on_new == 6).then_some(())
    });
    running.wait_for_more(300);
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    for old in before_pids {
        assert!(!common::alive(old as u32), "replica process {old} on the old ports is gone");
    }
    for port in ports..ports + 4 {
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "old port {port} is free");
    }
}

#[test]
fn issue_13_a_reload_replaces_python_http_servers_serving_a_new_directory_with_no_failed_request() {
    let _cpu = common::cpu_to_myself();
    let dir = tempfile::tempdir().expect("temp dir");
    for version in ["v1", "v2"] {
        std::fs::create_dir(dir.path().join(version)).expect("mkdir");
        std::fs::write(dir.path().join(version).join("version.txt"), version).expect("write");
    }
    let (ports, proxy_port) = (free_ports(2), free_ports(1));
    let v1 = dir.path().join("v1");
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.files]
command = ["python3", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1", "--directory", "{v1}"]
replicas = 2
ports = "{ports}-{last}"
[service.files.readiness]
http = "http://127.0.0.1:{{port}}/version.txt"
interval = "200ms"
[service.files.proxy]
listen = "127.0.0.1:{proxy_port}"
"#,
        v1 = v1.display(),
        last = ports + 1
    ));
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    daemon.wait_ready("files");
    let version = || KeepAlive::new(proxy).request("GET", "/version.txt", &[], b"").ok().map(|r| r.body);
    eventually(Duration::from_secs(10), "v1 through the proxy", || version().filter(|body| body == "v1"));
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(proxy, "/version.txt", 2, 100_000, Duration::from_millis(2), stop.clone());
    running.wait_for_more(100);

    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    std::fs::write(&daemon.config_path, text.replace("/v1\"", "/v2\"")).expect("write config");
    let reload = daemon.cli(&["reload"]);
    assert!(
        reload.status.success()
            && String::from_utf8_lossy(&reload.stdout).contains("replacing the replicas of files (command changed)"),
        "{reload:?}"
    );
    eventually(Duration::from_secs(60), "both replicas serve v2", || {
        let replicas = daemon.replicas("files");
        let new = replicas.iter().filter(|r| r["ready"] == true).filter_map(|r| r["pid"].as_u64());
        (new.filter(|pid| command_line(*pid).contains("/v2")).count() == 2).then_some(())
    });
    running.wait_for_more(100);
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    assert_eq!(version().as_deref(), Some("v2"));
}
