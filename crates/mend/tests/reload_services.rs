//! End-to-end reloads that add and remove services while mend runs (issue 13 item 2): an added service
//! starts behind its own new proxy listener; a removed one drains its in-flight requests, frees its
//! ports and leaves no process behind, touching no other service; a removal that would leave a
//! `depends_on` dangling is refused with nothing changed.
#![allow(clippy::disallowed_methods)] // End-to-end tests measure and wait in real time.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, KeepAlive, alive, eventually, free_ports, get, load};

/// mend-demo behind a proxy, two replicas.
fn web(ports: u16, proxy_port: u16) -> String {
    format!(
        r#"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
replicas = 2
ports = "{ports}-{last}"
[service.web.readiness]
http = "http://127.0.0.1:{{port}}/health"
interval = "200ms"
[service.web.proxy]
listen = "127.0.0.1:{proxy_port}"
"#,
        last = ports + 1
    )
}

fn pids(daemon: &Daemon, service: &str) -> Vec<u64> {
    daemon.replicas(service).iter().filter_map(|r| r["pid"].as_u64()).collect()
}

fn reload(daemon: &Daemon) -> (bool, String, String) {
    let output = daemon.cli(&["reload"]);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn issue_13_a_python_http_server_added_by_reload_serves_200s_through_its_new_proxy_listener() {
    let _cpu = common::cpu_to_myself();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("version.txt"), "files v1").expect("write");
    let (web_ports, web_proxy) = (free_ports(2), free_ports(1));
    let daemon = Daemon::start(&format!("[api]\nlisten = \"{{api}}\"\n{}", web(web_ports, web_proxy)));
    daemon.wait_ready("web");
    let web_pids = pids(&daemon, "web");
    let web_address = SocketAddr::from(([127, 0, 0, 1], web_proxy));
    let stop = Arc::new(AtomicBool::new(false));
    let web_load = load(web_address, "/", 2, 100_000, Duration::from_millis(2), stop.clone());
    web_load.wait_for_more(100);

    let (files_ports, files_proxy) = (free_ports(2), free_ports(1));
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    let added = format!(
        r#"
[service.files]
command = ["python3", "-m", "http.server", "{{port}}", "--bind", "127.0.0.1", "--directory", "{dir}"]
replicas = 2
ports = "{files_ports}-{last}"
depends_on = ["web"]
[service.files.readiness]
http = "http://127.0.0.1:{{port}}/version.txt"
interval = "200ms"
[service.files.proxy]
listen = "127.0.0.1:{files_proxy}"
"#,
        dir = dir.path().display(),
        last = files_ports + 1
    );
    std::fs::write(&daemon.config_path, format!("{text}{added}")).expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("adding service files (2 replicas, proxy on 127.0.0.1:{files_proxy})")),
        "{stdout}"
    );
    assert!(!stdout.contains("next start"), "nothing waits for a restart: {stdout}");

    // 200s through the new listener, from both python replicas.
    let files_address = SocketAddr::from(([127, 0, 0, 1], files_proxy));
    eventually(Duration::from_secs(30), "files' replicas ready", || {
        let replicas = daemon.replicas("files");
        (replicas.len() == 2 && replicas.iter().all(|r| r["ready"] == true)).then_some(())
    });
    let mut client = KeepAlive::new(files_address);
    eventually(Duration::from_secs(10), "200 through the new proxy listener", || {
        client.request("GET", "/version.txt", &[], b"").ok().filter(|r| r.status == 200 && r.body == "files v1")
    });
    for _ in 0..20 {
        let response = client.request("GET", "/version.txt", &[], b"").expect("answered");
        assert_eq!((response.status, response.body.as_str()), (200, "files v1"));
    }
    for pid in pids(&daemon, "files") {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(String::from_utf8_lossy(&cmdline).contains("http.server"), "replica {pid} runs python");
    }
    // Its proxy is sampled and its replicas are observed like those of a service started with mend.
    eventually(Duration::from_secs(15), "the new proxy's requests in the series store", || {
        let n = daemon.query(r#"sum(mend_proxy_requests_total{service="files",code="2xx"})"#);
        (n >= 20.0).then_some(())
    });
    eventually(Duration::from_secs(15), "the new replicas' up series", || {
        (daemon.query(r#"count(mend_replica_up{service="files"} == 1)"#) == 2.0).then_some(())
    });

    // No other service was touched: web's replicas are the same processes and served throughout.
    web_load.wait_for_more(100);
    stop.store(true, Ordering::Relaxed);
    let report = web_load.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    assert_eq!(pids(&daemon, "web"), web_pids, "web's replicas were not touched");
    // The running config is the file: a second reload changes nothing.
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok && stdout.contains("is unchanged"), "{stdout}{stderr}");
}

#[test]
fn issue_13_a_serving_service_removed_by_reload_completes_its_requests_frees_its_ports_and_leaves_no_process() {
    let _cpu = common::cpu_to_myself();
    let (web_ports, web_proxy) = (free_ports(2), free_ports(1));
    let (old_ports, old_proxy) = (free_ports(2), free_ports(1));
    // `old` answers every request in 2 s, so that requests are in flight when it goes.
    let old = format!(
        r#"
[service.old]
command = ["{{demo}}", "--port", "{{port}}", "--delay", "2s"]
replicas = 2
ports = "{old_ports}-{last}"
stop_timeout = "5s"
[service.old.readiness]
http = "http://127.0.0.1:{{port}}/health"
interval = "200ms"
[service.old.proxy]
listen = "127.0.0.1:{old_proxy}"
drain_timeout = "20s"
"#,
        last = old_ports + 1
    );
    let daemon = Daemon::start(&format!("[api]\nlisten = \"{{api}}\"\n{}{old}", web(web_ports, web_proxy)));
    daemon.wait_ready("web");
    daemon.wait_ready("old");
    let (web_pids, old_pids) = (pids(&daemon, "web"), pids(&daemon, "old"));
    assert_eq!(old_pids.len(), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let web_load =
        load(SocketAddr::from(([127, 0, 0, 1], web_proxy)), "/", 2, 100_000, Duration::from_millis(2), stop.clone());
    web_load.wait_for_more(100);

    // Four slow requests in flight through old's proxy.
    let old_address = SocketAddr::from(([127, 0, 0, 1], old_proxy));
    let in_flight: Vec<_> =
        (0..4).map(|_| std::thread::spawn(move || KeepAlive::new(old_address).request("GET", "/", &[], b""))).collect();
    eventually(Duration::from_secs(15), "four requests in flight through old's proxy", || {
        (daemon.query(r#"sum(mend_proxy_backend_in_flight{service="old"})"#) >= 4.0).then_some(())
    });

    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    let old_section = old.replace("{demo}", common::DEMO);
    assert!(text.contains(&old_section), "{text}");
    std::fs::write(&daemon.config_path, text.replace(&old_section, "")).expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok && stdout.contains("removing service old"), "{stdout}{stderr}");
    assert!(!stdout.contains("next start"), "nothing waits for a restart: {stdout}");

    // The requests in flight complete, answered by old's replicas.
    for request in in_flight {
        let response = request.join().expect("client thread").expect("an in-flight request completes");
        assert_eq!(response.status, 200, "{response:?}");
        assert!(response.body.starts_with("hello from mend-demo"), "{response:?}");
    }
    let removed = eventually(Duration::from_secs(60), "the service_removed event", || {
        daemon.events(Some("service_removed")).pop()
    });
    let message = removed["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("service old removed: its replicas drained and stopped"), "{removed}");
    assert_eq!(removed["service"], "old", "{removed}");

    // Gone: the service from the API, its processes, its replicas' ports and its proxy's listener.
    assert_eq!(get(daemon.api, "/api/v1/services/old").status, 404);
    for pid in &old_pids {
        assert!(!alive(*pid as u32), "old's replica process {pid} is gone");
    }
    for port in [old_ports, old_ports + 1, old_proxy] {
        assert!(free(port), "port {port} is free");
    }
    // Its series ended (staleness markers): its replicas' and its proxy's, which nothing samples any more,
    // are not left frozen at their last value.
    assert!(daemon.query(r#"count(mend_replica_up{service="old"})"#).is_nan(), "old's replica series ended");
    assert!(daemon.query(r#"count(mend_proxy_requests_total{service="old"})"#).is_nan(), "old's proxy series ended");
    assert!(daemon.query(r#"count(mend_proxy_requests_total{service="web"})"#) > 0.0, "web's go on");

    // No other service touched: web served throughout with the same processes.
    web_load.wait_for_more(100);
    stop.store(true, Ordering::Relaxed);
    let report = web_load.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    assert_eq!(pids(&daemon, "web"), web_pids, "web's replicas were not touched");
    let services = get(daemon.api, "/api/v1/services").json();
    let names: Vec<&str> =
        services["services"].as_array().into_iter().flatten().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["web"]);
}

#[test]
fn issue_13_removing_a_service_another_depends_on_is_refused_with_nothing_changed() {
    let (web_ports, web_proxy) = (free_ports(2), free_ports(1));
    let db_ports = free_ports(1);
    let db = format!(
        r#"
[service.db]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{db_ports}-{db_ports}"
[service.db.readiness]
http = "http://127.0.0.1:{{port}}/health"
interval = "200ms"
"#
    );
    let web = web(web_ports, web_proxy).replace("replicas = 2\n", "replicas = 2\ndepends_on = [\"db\"]\n");
    let daemon = Daemon::start(&format!("[api]\nlisten = \"{{api}}\"\n{db}{web}"));
    daemon.wait_ready("db");
    daemon.wait_ready("web");
    let (web_pids, db_pids) = (pids(&daemon, "web"), pids(&daemon, "db"));

    // db goes from the file, a rule comes: the whole reload is refused, the rule too.
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    let db_section = db.replace("{demo}", common::DEMO);
    assert!(text.contains(&db_section), "{text}");
    let text = text.replace(&db_section, "");
    std::fs::write(&daemon.config_path, format!("{text}\n[[rule]]\nname = \"Up\"\nexpr = 'vector(1)'\n"))
        .expect("write config");
    let output = daemon.cli(&["reload"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let line = text.lines().position(|l| l.starts_with("depends_on")).map_or(0, |idx| idx + 1);
    assert!(
        stderr.contains(&format!("mend.toml:{line}:15: service.web.depends_on[0]: unknown service \"db\"")),
        "{stderr}"
    );
    assert!(stderr.contains("the running configuration stays"), "{stderr}");
    assert_eq!(pids(&daemon, "db"), db_pids, "db runs on");
    assert_eq!(pids(&daemon, "web"), web_pids, "web runs on");
    assert!(daemon.events(Some("config_reloaded")).is_empty(), "nothing reloaded");
    assert!(daemon.events(Some("service_removed")).is_empty(), "nothing removed");
}

#[test]
fn issue_13_a_proxy_listen_change_binds_the_new_address_before_the_old_closes_and_a_taken_one_is_refused() {
    let (web_ports, web_proxy) = (free_ports(2), free_ports(1));
    let daemon = Daemon::start(&format!("[api]\nlisten = \"{{api}}\"\n{}", web(web_ports, web_proxy)));
    daemon.wait_ready("web");
    let web_pids = pids(&daemon, "web");
    let old_address = SocketAddr::from(([127, 0, 0, 1], web_proxy));
    let mut old_client = KeepAlive::new(old_address);
    eventually(Duration::from_secs(10), "200 through the running listener", || {
        old_client.request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });

    // An address something else holds: refused, saying why, and the running listener serves on.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("address").port();
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    let listen = format!("listen = \"127.0.0.1:{web_proxy}\"");
    std::fs::write(&daemon.config_path, text.replace(&listen, &format!("listen = \"127.0.0.1:{taken_port}\"")))
        .expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("nothing applied: cannot start the proxy of service web (service.web.proxy)")
            && stderr.contains(&format!("127.0.0.1:{taken_port}"))
            && stderr.contains("in use"),
        "{stderr}"
    );
    let response = old_client.request("GET", "/", &[], b"").expect("the running listener still answers");
    assert_eq!(response.status, 200);
    drop(taken);

    // A free address: the new listener serves at once, the old one closes.
    let new_port = free_ports(1);
    std::fs::write(&daemon.config_path, text.replace(&listen, &format!("listen = \"127.0.0.1:{new_port}\"")))
        .expect("write");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "the proxy of web takes its new settings, moved from {old_address} to 127.0.0.1:{new_port}"
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("next start"), "{stdout}");
    let mut new_client = KeepAlive::new(SocketAddr::from(([127, 0, 0, 1], new_port)));
    for _ in 0..20 {
        assert_eq!(new_client.request("GET", "/", &[], b"").expect("answered").status, 200);
    }
    eventually(Duration::from_secs(30), "the old listener closed", || free(web_proxy).then_some(()));
    assert_eq!(pids(&daemon, "web"), web_pids, "the replicas were not touched");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok && stdout.contains("is unchanged"), "{stdout}{stderr}");
}

#[test]
fn issue_13_changed_proxy_settings_on_the_same_address_apply_to_new_requests() {
    let (web_ports, web_proxy) = (free_ports(2), free_ports(1));
    // Every answer takes 300 ms: within the proxy's default request timeout, not within 100 ms.
    let config = web(web_ports, web_proxy).replace("\"{port}\"]", "\"{port}\", \"--delay\", \"300ms\"]");
    let daemon = Daemon::start(&format!("[api]\nlisten = \"{{api}}\"\n{config}"));
    daemon.wait_ready("web");
    let address = SocketAddr::from(([127, 0, 0, 1], web_proxy));
    eventually(Duration::from_secs(10), "200 through the proxy", || {
        common::http("GET", address, "/", &[]).ok().filter(|r| r.status == 200)
    });

    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    let listen = format!("listen = \"127.0.0.1:{web_proxy}\"");
    std::fs::write(&daemon.config_path, text.replace(&listen, &format!("{listen}\nrequest_timeout = \"100ms\"")))
        .expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(
        ok && stdout.contains(&format!("the proxy of web takes its new settings on {address}")),
        "{stdout}{stderr}"
    );
    // New connections (the old listener closes once its requests are done) time out at 100 ms: 504.
    let timed_out = eventually(Duration::from_secs(30), "a 504 from the new request timeout", || {
        common::http("GET", address, "/", &[]).ok().filter(|r| r.status == 504)
    });
    assert_eq!(timed_out.status, 504);
    for _ in 0..5 {
        assert_eq!(common::http("GET", address, "/", &[]).expect("answered").status, 504);
    }
}

#[test]
fn issue_13_a_proxy_added_to_a_running_service_serves_its_replicas_and_one_taken_away_closes() {
    let _cpu = common::cpu_to_myself();
    let (web_ports, web_proxy) = (free_ports(2), free_ports(1));
    let with_proxy = web(web_ports, web_proxy);
    let listen = format!("[service.web.proxy]\nlisten = \"127.0.0.1:{web_proxy}\"\n");
    assert!(with_proxy.contains(&listen));
    let bare = with_proxy.replace(&listen, "");
    let daemon = Daemon::start(&format!("[api]\nlisten = \"{{api}}\"\n{bare}"));
    daemon.wait_ready("web");
    let web_pids = pids(&daemon, "web");
    let address = SocketAddr::from(([127, 0, 0, 1], web_proxy));
    assert!(common::http("GET", address, "/", &[]).is_err(), "no proxy yet");

    // The proxy added: it binds and serves the running replicas, none of them replaced.
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    std::fs::write(&daemon.config_path, format!("{text}{listen}")).expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("web is served through a new proxy on {address}")), "{stdout}");
    assert!(!stdout.contains("next start"), "nothing waits for a restart: {stdout}");
    let mut client = KeepAlive::new(address);
    eventually(Duration::from_secs(15), "200 through the added proxy", || {
        client.request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    assert_eq!(pids(&daemon, "web"), web_pids, "the replicas were not replaced for the proxy");
    eventually(Duration::from_secs(15), "the added proxy's requests in the series store", || {
        (daemon.query(r#"sum(mend_proxy_requests_total{service="web",code="2xx"})"#) >= 1.0).then_some(())
    });

    // The running replicas drain through it now (the proxy logs each drain): a rolling restart under load
    // fails nothing.
    let drains = |daemon: &Daemon| daemon.log_text().lines().filter(|line| line.contains("drained")).count();
    assert_eq!(drains(&daemon), 0, "nothing drained before");
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(address, "/", 2, 100_000, Duration::from_millis(2), stop.clone());
    running.wait_for_more(50);
    let output = daemon.cli(&["restart", "web"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    running.wait_for_more(50);
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    let restarted = pids(&daemon, "web");
    assert!(restarted.iter().all(|pid| !web_pids.contains(pid)), "both replicas restarted: {restarted:?}");
    let drained = eventually(Duration::from_secs(10), "both replicas drained through the added proxy", || {
        let n = drains(&daemon);
        (n >= 2).then_some(n)
    });

    // Taken away: the listener closes, the replicas run on and answer on their own ports.
    std::fs::write(&daemon.config_path, &text).expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("the proxy of web closes once its requests in flight have finished"), "{stdout}");
    eventually(Duration::from_secs(30), "the proxy's listener closed", || free(web_proxy).then_some(()));
    assert_eq!(pids(&daemon, "web"), restarted, "the replicas were not touched");
    assert_eq!(get(SocketAddr::from(([127, 0, 0, 1], web_ports)), "/").status, 200);
    // And a restart without it stops the replicas without draining through the closed proxy.
    let output = daemon.cli(&["restart", "web"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(drains(&daemon), drained, "no drain through the proxy taken away");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok && stdout.contains("is unchanged"), "{stdout}{stderr}");
}

#[test]
fn issue_13_a_canary_table_added_changed_and_taken_away_by_reload() {
    let _cpu = common::cpu_to_myself();
    let (ports, proxy_port) = (free_ports(3), free_ports(1));
    // Room for a canary beside the two stable replicas.
    let config = web(ports, proxy_port).replace(&format!("{ports}-{}", ports + 1), &format!("{ports}-{}", ports + 2));
    let daemon = Daemon::start(&format!("[api]\nlisten = \"{{api}}\"\n{config}"));
    daemon.wait_ready("web");
    let stable_pids = pids(&daemon, "web");
    let address = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    let canary = |weight: u8| {
        format!(
            "{text}[service.web.canary]\nreplicas = 1\nweight = {weight}\npin_header = \"x-canary: 1\"\nenv = {{ NOTE = \"canary\" }}\n"
        )
    };
    let canary_pid = |daemon: &Daemon| {
        daemon
            .replicas("web")
            .iter()
            .find(|r| r["release"] == "canary" && r["ready"] == true)
            .and_then(|r| r["pid"].as_u64())
    };

    // Added: the canary starts and takes its share (all of it here) once ready.
    std::fs::write(&daemon.config_path, canary(100)).expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("starting 1 canary replicas of canary for 100% of web's requests"), "{stdout}");
    assert!(!stdout.contains("next start"), "nothing waits for a restart: {stdout}");
    let pid = eventually(Duration::from_secs(30), "a ready canary replica", || canary_pid(&daemon));
    let mut client = KeepAlive::new(address);
    eventually(Duration::from_secs(10), "every request goes to the canary", || {
        (0..10)
            .all(|_| client.request("GET", "/", &[], b"").is_ok_and(|r| r.body.contains(&format!("(pid {pid})"))))
            .then_some(())
    });
    assert_eq!(get(daemon.api, "/api/v1/services/web").json()["canary_weight"], 100);
    assert_eq!(pids(&daemon, "web").iter().filter(|p| stable_pids.contains(p)).count(), 2, "stable untouched");

    // Its weight changed: the same canary process, none of the unpinned requests; pinned ones still go.
    std::fs::write(&daemon.config_path, canary(0)).expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok && stdout.contains("web's canary takes 0% of its requests"), "{stdout}{stderr}");
    eventually(Duration::from_secs(10), "no unpinned request goes to the canary", || {
        (0..10)
            .all(|_| client.request("GET", "/", &[], b"").is_ok_and(|r| !r.body.contains(&format!("(pid {pid})"))))
            .then_some(())
    });
    let pinned = client.request("GET", "/", &[("x-canary", "1")], b"").expect("answered");
    assert!(pinned.body.contains(&format!("(pid {pid})")), "pinned requests go to the canary: {}", pinned.body);
    assert_eq!(canary_pid(&daemon), Some(pid), "the canary was not restarted for a weight");

    // Taken away under load: drained and stopped, nothing failed, the stable replicas untouched.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(address, "/", 2, 100_000, Duration::from_millis(2), stop.clone());
    running.wait_for_more(50);
    std::fs::write(&daemon.config_path, &text).expect("write config");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok && stdout.contains("taking web's canary away (weight 0, drained, stopped)"), "{stdout}{stderr}");
    eventually(Duration::from_secs(30), "the canary replica gone", || {
        (daemon.replicas("web").iter().all(|r| r["release"] == "stable") && !alive(pid as u32)).then_some(())
    });
    running.wait_for_more(50);
    stop.store(true, Ordering::Relaxed);
    let report = running.join();
    assert_eq!(report.failed, 0, "failures: {:?}", &report.failures[..report.failures.len().min(5)]);
    assert_eq!(pids(&daemon, "web"), stable_pids, "the stable replicas were not touched");
    let (ok, stdout, stderr) = reload(&daemon);
    assert!(ok && stdout.contains("is unchanged"), "{stdout}{stderr}");
}
