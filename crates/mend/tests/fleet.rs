//! The fleet through a real etcd (Debian's `etcd-server`, started here on loopback with a temp data
//! directory): several `mend run` daemons, each with its own state directory and API port, sharing one
//! etcd. Registration and the fleet view, the fleet budget under the same fault everywhere at once, the
//! election after the leader is killed with -9, a killed host's permits released when its lease expires,
//! and healing on local budgets while etcd is away; over TLS with client certificates, a host with the
//! cluster's CA taking fleet permits and one with a wrong CA healing on local budgets and saying why.

#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.
#![allow(clippy::print_stderr)] // The times measured are printed for BENCHMARKS.md (never asserted).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, eventually, get};
use serde_json::Value;

/// A real etcd on loopback, stopped (SIGKILL) on drop.
struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// With TLS: the directory of [`make_pki`]'s files and a second client port, `https://`, that demands
    /// client certificates (the plain port stays for the test's own reads).
    tls: Option<(std::path::PathBuf, u16)>,
}

impl Etcd {
    fn start() -> Self {
        let ports = common::free_ports(2);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut etcd = Self { child: None, dir, client_port: ports, peer_port: ports + 1, tls: None };
        etcd.spawn();
        etcd
    }

    /// Starts etcd with [`make_pki`]'s server certificate from `pki` on an https client port, with
    /// `--client-cert-auth`.
    fn start_tls(pki: &std::path::Path) -> Self {
        let ports = common::free_ports(3);
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = Some((pki.to_path_buf(), ports + 2));
        let mut etcd = Self { child: None, dir, client_port: ports, peer_port: ports + 1, tls };
        etcd.spawn();
        etcd
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts etcd (again, on the same data directory) and waits until it is healthy.
    fn spawn(&mut self) {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let mut command = Command::new("etcd");
        command.args(["--name", "fleet-test", "--data-dir"]).arg(self.dir.path().join("data"));
        match &self.tls {
            None => command.args(["--listen-client-urls", &client, "--advertise-client-urls", &client]),
            Some((pki, tls_port)) => {
                let clients = format!("{client},https://127.0.0.1:{tls_port}");
                command
                    .args(["--listen-client-urls", &clients, "--advertise-client-urls", &clients])
                    .arg("--cert-file")
                    .arg(pki.join("server.pem"))
                    .arg("--key-file")
                    .arg(pki.join("server-key.pem"))
                    .arg("--trusted-ca-file")
                    .arg(pki.join("ca.pem"))
                    .arg("--client-cert-auth")
            }
        };
        let child = command
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("fleet-test={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("cannot run etcd ({error}): install Debian's etcd-server (scripts/test does)")
            });
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.client_port).parse().expect("address");
        eventually(Duration::from_secs(30), "etcd answers /health", || {
            let response = common::http("GET", address, "/health", &[]).ok()?;
            (response.status == 200 && response.body.contains("true")).then_some(())
        });
    }

    /// How many keys lie under `prefix`, read through etcd's JSON gateway (`/v3/kv/range`).
    fn count(&self, prefix: &str) -> u64 {
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({"key": base64(prefix.as_bytes()), "range_end": base64(&end), "count_only": true})
            .to_string();
        let address = format!("127.0.0.1:{}", self.client_port).parse().expect("address");
        let response =
            common::http_with_body("POST", address, "/v3/kv/range", &[("Content-Type", "application/json")], &body)
                .expect("etcd answers");
        assert_eq!(response.status, 200, "{}", response.body);
        // int64 fields come as strings in etcd's JSON; an empty range leaves the field out.
        response.json()["count"].as_str().map_or(0, |n| n.parse().expect("a count"))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Standard base64 with padding (etcd's JSON gateway takes keys so).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (idx, byte)| n | u32::from(*byte) << (16 - 8 * idx));
        for idx in 0..4 {
            if idx <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * idx) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Writes a test PKI into `dir`: `ca.pem` signs `server.pem` (localhost, 127.0.0.1; serving both ways, as
/// etcd's gateway dials etcd with it) and `client.pem`; `other-ca.pem` signs nothing here.
fn make_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca = |name: &str| {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("a CA certificate");
        (cert.pem(), Issuer::new(params, key))
    };
    let (ca_pem, issuer) = ca("mend test CA");
    let (other_ca_pem, _) = ca("another CA");
    let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &issuer).expect("a certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (server_pem, server_key) = leaf(
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    );
    let (client_pem, client_key) = leaf(Vec::new(), vec![ExtendedKeyUsagePurpose::ClientAuth]);
    for (name, text) in [
        ("ca.pem", ca_pem),
        ("other-ca.pem", other_ca_pem),
        ("server.pem", server_pem),
        ("server-key.pem", server_key),
        ("client.pem", client_pem),
        ("client-key.pem", client_key),
    ] {
        std::fs::write(dir.join(name), text).expect("write a PEM file");
    }
}

/// A host's config: one `web` replica of mend-demo, a restart policy on the `Sick` alert, `[fleet]`.
fn host_config(name: &str, etcd: &Etcd, port: u16, fleet: &str) -> String {
    format!(
        r#"[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}-{}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
[[heal]]
when = "alert:Sick"
actions = ["restart"]
verify = "2s"
[[heal]]
when = "alert:Sick2"
actions = ["restart"]
verify = "2s"
[fleet]
endpoints = ["{}"]
host = "{name}"
lease_ttl = "3s"
publish_every = "500ms"
# A loaded test machine can take etcd (and its disk sync) past the 2 s default: a permit not confirmed
# in time would run local-only and the test would read that as a failure of the fleet.
permit_timeout = "10s"
{fleet}
"#,
        port + 1,
        etcd.endpoint()
    )
}

fn fleet(daemon: &Daemon) -> Value {
    let response = get(daemon.api, "/api/v1/fleet");
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

fn registered(view: &Value) -> Vec<String> {
    view["hosts"]
        .as_array()
        .map(|hosts| {
            hosts
                .iter()
                .filter(|h| h["registered"] == true)
                .filter_map(|h| h["host"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn alert(daemon: &Daemon, name: &str, status: &str) {
    let body = serde_json::json!({
        "version": "4",
        "status": status,
        "alerts": [{"status": status, "labels": {"alertname": name, "service": "web", "replica": "0"}, "annotations": {}}]
    })
    .to_string();
    let response =
        common::http_with_body("POST", daemon.api, "/api/v1/alerts", &[("Content-Type", "application/json")], &body)
            .expect("post alert");
    assert_eq!(response.status, 200, "{}", response.body);
}

/// Policy restarts journalled on `daemon`, finished (succeeded, failed or refused).
fn finished_restarts(daemon: &Daemon) -> Vec<Value> {
    get(daemon.api, "/api/v1/actions?limit=100").json()["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["action"]["kind"] == "restart" || a["action"] == "restart")
        .filter(|a| ["succeeded", "failed", "refused"].contains(&a["state"].as_str().unwrap_or("")))
        .collect()
}

fn start_hosts(etcd: &Etcd, names: &[&str], fleet_extra: &str) -> Vec<Daemon> {
    names
        .iter()
        .map(|name| {
            let port = common::free_ports(2);
            Daemon::start(&host_config(name, etcd, port, fleet_extra))
        })
        .collect()
}

fn wait_all_registered(hosts: &[&Daemon], names: &[&str]) {
    for daemon in hosts {
        eventually(Duration::from_secs(30), "every host sees every other registered", || {
            let seen = registered(&fleet(daemon));
            names.iter().all(|name| seen.iter().any(|s| s == name)).then_some(())
        });
    }
}

/// Waits until every host sees every other registered, each with `web` healthy in its published state,
/// and no fleet incident: the fleet as it settles after a start (a host publishes `web` unhealthy until
/// its replica is ready, and the leader may declare a fleet incident from those first states; a host's
/// view is read every `publish_every`, so it can lag behind the host's own API).
fn wait_fleet_settled(hosts: &[&Daemon], names: &[&str]) {
    for daemon in hosts {
        eventually(Duration::from_secs(30), "every host sees every other registered, web healthy everywhere", || {
            let view = fleet(daemon);
            let seen = registered(&view);
            let web_healthy = |host: &Value| {
                host["state"]["services"].as_array().is_some_and(|services| {
                    services.iter().any(|s| s["name"] == "web" && s["healthy"] == true && s["ready"] == s["replicas"])
                })
            };
            let hosts = view["hosts"].as_array().cloned().unwrap_or_default();
            let settled = names.iter().all(|name| seen.iter().any(|s| s == name))
                && names.iter().all(|name| hosts.iter().any(|h| h["host"] == *name && web_healthy(h)))
                && view["incidents"].as_array().is_some_and(Vec::is_empty);
            settled.then_some(())
        });
    }
}

#[test]
fn issue_18_three_hosts_see_each_other_the_fleet_budget_holds_and_a_killed_leader_is_replaced() {
    let etcd = Etcd::start();
    let names = ["host-a", "host-b", "host-c"];
    let mut hosts = start_hosts(&etcd, &names, "max_actions_per_window = 1\naction_window = \"1h\"\n");
    for daemon in &hosts {
        daemon.wait_ready("web");
    }
    wait_fleet_settled(&hosts.iter().collect::<Vec<_>>(), &names);
    // One place to look: each host's CLI lists all three, with their services.
    for daemon in &hosts {
        let shown = daemon.cli(&["fleet", "status"]);
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.status.success(), "{}", String::from_utf8_lossy(&shown.stderr));
        for name in names {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains("web 1/1") && text.contains("etcd reachable"), "{text}");
    }

    // The same fault on every host at once: one restart in the fleet's window, the others refused.
    std::thread::scope(|scope| {
        for daemon in &hosts {
            scope.spawn(move || alert(daemon, "Sick", "firing"));
        }
    });
    let per_host: Vec<Vec<Value>> = hosts
        .iter()
        .map(|daemon| {
            eventually(Duration::from_secs(30), "the host decided its restart", || {
                let done = finished_restarts(daemon);
                (!done.is_empty()).then_some(done)
            })
        })
        .collect();
    let all: Vec<&Value> = per_host.iter().flatten().collect();
    let n_succeeded = all.iter().filter(|a| a["state"] == "succeeded").count();
    let refused: Vec<&&Value> = all.iter().filter(|a| a["state"] == "refused").collect();
    assert_eq!(n_succeeded, 1, "one restart across the fleet: {all:#?}");
    assert_eq!(refused.len(), 2, "{all:#?}");
    for action in &refused {
        assert!(
            action["outcome"].as_str().is_some_and(|o| o.contains("refused by the fleet: fleet action budget spent")),
            "{action}"
        );
    }

    // The leader, killed with -9, is replaced by another host once its lease ends.
    let leader = eventually(Duration::from_secs(30), "a leader is elected", || {
        fleet(&hosts[0])["leader"].as_str().map(str::to_owned)
    });
    let leader_idx = names.iter().position(|name| *name == leader).expect("the leader is one of ours");
    let killed_at = Instant::now();
    hosts[leader_idx].signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10));
    let survivor = &hosts[(leader_idx + 1) % 3];
    let new_leader = eventually(Duration::from_secs(40), "another host leads", || {
        fleet(survivor)["leader"].as_str().filter(|l| *l != leader).map(str::to_owned)
    });
    assert_ne!(new_leader, leader);
    eprintln!("new leader {new_leader} seen {:?} after the leader was killed (lease_ttl 3s)", killed_at.elapsed());
    // And the killed host is seen gone (its lease expired), by both survivors.
    for (idx, daemon) in hosts.iter().enumerate().filter(|(idx, _)| *idx != leader_idx) {
        eventually(Duration::from_secs(40), "the killed host is gone", || {
            (!registered(&fleet(daemon)).contains(&leader)).then_some(())
        });
        let _ = idx;
    }
    eprintln!("killed host seen gone {:?} after the kill", killed_at.elapsed());
    drop(hosts);
}

#[test]
fn issue_18_a_host_killed_with_minus_9_releases_its_permits_when_its_lease_expires() {
    let etcd = Etcd::start();
    // `web` ignores SIGTERM and gets 60 s to stop: host-a's restart holds its fleet permit for that long
    // (host-a is killed long before), so host-b asks while it is held however loaded the machine is.
    // (`sh -c "trap '' TERM; exec ..."` is not enough: mend-demo installs its own SIGTERM handler.)
    let port_a = common::free_ports(2);
    let port_b = common::free_ports(2);
    let slow = |name: &str, port: u16| {
        host_config(name, &etcd, port, "max_unavailable = 1\n").replace(
            "command = [\"{demo}\", \"--port\", \"{port}\"]",
            "command = [\"{demo}\", \"--port\", \"{port}\", \"--ignore-sigterm\"]\nstop_timeout = \"60s\"",
        )
    };
    let mut host_a = Daemon::start(&slow("host-a", port_a));
    let mut host_b = Daemon::start(&slow("host-b", port_b));
    host_a.wait_ready("web");
    host_b.wait_ready("web");
    wait_fleet_settled(&[&host_a, &host_b], &["host-a", "host-b"]);
    alert(&host_a, "Sick", "firing");
    eventually(Duration::from_secs(30), "host-a's restart runs with its fleet permit", || {
        host_a.log_text().contains("fleet permit granted").then_some(())
    });
    assert_eq!(etcd.count("/mend/permits/web/host-a/"), 1, "host-a's in-flight permit is in etcd");
    // While it runs, host-b may not act on web too (max_unavailable 1 across hosts).
    alert(&host_b, "Sick", "firing");
    let refused = eventually(Duration::from_secs(50), "host-b's restart is refused", || {
        finished_restarts(&host_b).into_iter().find(|a| a["state"] == "refused")
    });
    assert!(
        refused["outcome"].as_str().is_some_and(|o| o.contains("hosts are acting on this service now")),
        "{refused}"
    );
    // host-a dies mid-action: its permit goes with its lease, not before.
    host_a.signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10));
    let killed_at = Instant::now();
    eventually(Duration::from_secs(40), "host-b sees host-a gone", || {
        (!registered(&fleet(&host_b)).contains(&"host-a".to_owned())).then_some(())
    });
    eprintln!("host-a seen gone {:?} after kill -9 (lease_ttl 3s)", killed_at.elapsed());
    eventually(Duration::from_secs(40), "host-a's permit is gone with its lease", || {
        (etcd.count("/mend/permits/web/host-a/") == 0).then_some(())
    });
    alert(&host_b, "Sick2", "firing");
    eventually(Duration::from_secs(60), "host-b's next restart is granted", || {
        host_b.log_text().contains("fleet permit granted").then_some(())
    });
    // The refused restart ran nothing: it left no cooldown behind (the default is 60 s).
    assert!(!host_b.log_text().contains("cooling down"), "{}", host_b.log_text());
    // Its replica ignores SIGTERM for 60 s: a graceful stop would only wait for it.
    host_b.signal_and_wait(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10));
}

#[test]
fn issue_18_without_etcd_each_host_heals_locally_and_the_fleet_view_recovers() {
    let mut etcd = Etcd::start();
    let names = ["host-a", "host-b"];
    let hosts = start_hosts(&etcd, &names, "");
    for daemon in &hosts {
        daemon.wait_ready("web");
    }
    wait_fleet_settled(&hosts.iter().collect::<Vec<_>>(), &names);
    etcd.stop();
    for daemon in &hosts {
        eventually(Duration::from_secs(30), "the host notices etcd is gone", || {
            (fleet(daemon)["reachable"] == false).then_some(())
        });
    }
    // A crashed replica is still restarted (the supervisor never asks the fleet)...
    let host = &hosts[0];
    let before = host.replica("web", 0)["pid"].as_u64().expect("a pid");
    let killed = host.cli(&["chaos", "kill", "web"]);
    assert!(killed.status.success(), "{}", String::from_utf8_lossy(&killed.stderr));
    eventually(Duration::from_secs(30), "the crashed replica runs again", || {
        let replica = host.replica("web", 0);
        (replica["pid"].as_u64().is_some_and(|pid| pid != before) && replica["ready"] == true).then_some(())
    });
    // ...and a policy's action proceeds on the local budgets, saying so in the journal.
    alert(host, "Sick", "firing");
    let done = eventually(Duration::from_secs(60), "the policy's restart ran without the fleet", || {
        finished_restarts(host).into_iter().find(|a| a["state"] == "succeeded")
    });
    assert!(done["outcome"].as_str().is_some_and(|o| o.contains("fleet unreachable: local budget only")), "{done}");
    let status = host.cli(&["fleet", "status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("etcd unreachable"), "{status:?}");
    // etcd returns: every host registers again and the view is whole (while etcd was away the view
    // showed the hosts as last seen, so reachability is waited for first).
    etcd.spawn();
    for daemon in &hosts {
        eventually(Duration::from_secs(30), "the host reaches etcd again", || {
            (fleet(daemon)["reachable"] == true).then_some(())
        });
    }
    wait_all_registered(&hosts.iter().collect::<Vec<_>>(), &names);
}

#[test]
fn issue_18_a_service_unhealthy_on_most_hosts_is_a_fleet_incident_and_no_host_acts_alone() {
    let etcd = Etcd::start();
    let names = ["host-a", "host-b", "host-c"];
    // Approve mode: the incidents stay open (their restarts wait) while the leader looks at the fleet.
    let hosts: Vec<Daemon> = names
        .iter()
        .map(|name| {
            let port = common::free_ports(2);
            Daemon::start(&format!("[healing]\nmode = \"approve\"\n{}", host_config(name, &etcd, port, "")))
        })
        .collect();
    for daemon in &hosts {
        daemon.wait_ready("web");
    }
    wait_fleet_settled(&hosts.iter().collect::<Vec<_>>(), &names);
    // web is sick on two of three hosts at once.
    alert(&hosts[0], "Sick", "firing");
    alert(&hosts[1], "Sick", "firing");
    for daemon in &hosts {
        eventually(Duration::from_secs(30), "every host sees the fleet incident", || {
            let view = fleet(daemon);
            let incidents = view["incidents"].as_array().cloned().unwrap_or_default();
            incidents
                .iter()
                .any(|i| i["service"] == "web" && i["unhealthy"].as_array().is_some_and(|u| u.len() == 2))
                .then_some(())
        });
    }
    let shown = hosts[2].cli(&["fleet", "incidents"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("web") && text.contains("2 of 3") && text.contains("host-a"), "{text}");
    // An operator approves host-a's restart: the fleet refuses it (no host acts alone) and it escalates.
    let pending = eventually(Duration::from_secs(30), "host-a's restart waits for approval", || {
        get(hosts[0].api, "/api/v1/actions?open=true").json()["actions"]
            .as_array()
            .and_then(|actions| actions.iter().find(|a| a["state"] == "pending").cloned())
    });
    let id = pending["id"].as_u64().expect("an id").to_string();
    let approved = hosts[0].cli(&["approve", &id]);
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
    let refused = eventually(Duration::from_secs(30), "the fleet refuses it", || {
        finished_restarts(&hosts[0]).into_iter().find(|a| a["state"] == "refused")
    });
    assert!(
        refused["outcome"].as_str().is_some_and(|o| o.contains("fleet incident: unhealthy on 2 of 3 hosts")),
        "{refused}"
    );
    let incident = refused["incident"].as_u64().expect("its incident");
    eventually(Duration::from_secs(30), "host-a's incident is escalated", || {
        (get(hosts[0].api, &format!("/api/v1/incidents/{incident}")).json()["state"] == "escalated").then_some(())
    });
}

#[test]
fn issue_18_over_tls_a_host_with_the_cluster_ca_takes_fleet_permits_and_one_with_a_wrong_ca_heals_locally() {
    let pki = tempfile::tempdir().expect("temp dir");
    make_pki(pki.path());
    let etcd = Etcd::start_tls(pki.path());
    let Some((_, tls_port)) = etcd.tls else { unreachable!("started with TLS") };
    let tls_host = |name: &str, ca: &str| {
        let file = |name: &str| pki.path().join(name).display().to_string();
        let tls = format!(
            "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            file(ca),
            file("client.pem"),
            file("client-key.pem")
        );
        let port = common::free_ports(2);
        Daemon::start(&host_config(name, &etcd, port, &tls).replace(
            &format!("endpoints = [\"{}\"]", etcd.endpoint()),
            &format!("endpoints = [\"https://127.0.0.1:{tls_port}\"]"),
        ))
    };
    let trusted = tls_host("host-a", "ca.pem");
    let wrong_ca = tls_host("host-b", "other-ca.pem");
    trusted.wait_ready("web");
    wrong_ca.wait_ready("web");
    eventually(Duration::from_secs(30), "the trusted host registered over TLS", || {
        let view = fleet(&trusted);
        (view["reachable"] == true && registered(&view) == ["host-a"]).then_some(())
    });
    let refusal = eventually(Duration::from_secs(30), "the wrong CA's host says why it is out", || {
        let view = fleet(&wrong_ca);
        let error = view["error"].as_str()?.to_owned();
        (view["reachable"] == false && error.contains("UnknownIssuer")).then_some(error)
    });
    assert!(refusal.contains(&format!("TLS handshake with etcd at 127.0.0.1:{tls_port} failed")), "{refusal}");

    // The trusted host's policy restart takes its fleet permit through etcd over TLS: the budget entry
    // is there (read on etcd's plain port).
    alert(&trusted, "Sick", "firing");
    let done = eventually(Duration::from_secs(60), "the trusted host's restart", || {
        finished_restarts(&trusted).into_iter().find(|a| a["state"] == "succeeded")
    });
    assert!(done["outcome"].as_str().is_some_and(|o| !o.contains("fleet unreachable")), "{done}");
    assert_eq!(etcd.count("/mend/budget/"), 1, "one fleet budget entry, the trusted host's");

    // The wrong CA's host still heals, on its local budgets, and its journal and status say why.
    alert(&wrong_ca, "Sick", "firing");
    let done = eventually(Duration::from_secs(60), "the wrong CA's host's restart", || {
        finished_restarts(&wrong_ca).into_iter().find(|a| a["state"] == "succeeded")
    });
    let outcome = done["outcome"].as_str().unwrap_or_default();
    assert!(outcome.contains("fleet unreachable: local budget only") && outcome.contains("UnknownIssuer"), "{done}");
    let status = wrong_ca.cli(&["fleet", "status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("etcd unreachable (") && text.contains("UnknownIssuer"), "{text}");
    assert_eq!(etcd.count("/mend/budget/"), 1, "the wrong CA's host took nothing from the fleet");
}

#[test]
fn issue_18_an_unreadable_tls_file_stops_mend_at_start_before_anything_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mend.toml");
    std::fs::write(
        &config,
        format!(
            "[api]\nlisten = \"127.0.0.1:{}\"\n[service.web]\ncommand = [\"sleep\", \"60\"]\n[fleet]\nendpoints = [\"https://127.0.0.1:2379\"]\nhost = \"host-a\"\nca_file = \"missing-ca.pem\"\n",
            common::free_ports(1),
        ),
    )
    .expect("write the config");
    let mut child = Command::new(common::MEND)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mend");
    let status = eventually(Duration::from_secs(30), "mend stops", || child.try_wait().expect("wait"));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read stderr");
    assert!(!status.success(), "{stderr}");
    let expected = format!("error: [fleet] ca_file {}: cannot be read", dir.path().join("missing-ca.pem").display());
    assert!(stderr.contains(&expected), "{stderr}");
    // Stopped before the event store was opened and anything started (read later, the files stopped mend
    // after its replicas were spawned: "mend is running" was logged first).
    assert!(!stderr.contains("mend is running"), "{stderr}");
    assert!(!dir.path().join("state/mend.db").exists(), "the store was opened before the TLS files were read");
}
