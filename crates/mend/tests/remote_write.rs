//! Prometheus remote write end to end: mend supervises a mend-demo replica and remote-writes its series
//! store to a real Prometheus (Debian's, `--web.enable-remote-write-receiver`), whose query API then has
//! them with the extra `host` label; and a receiver that is down neither blocks mend nor grows its queue
//! past the bound, the samples it cannot take dropped and counted.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Daemon, eventually, get};

/// A Prometheus server on a loopback port with its own temporary TSDB; killed on drop.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start() -> Self {
        let binary = "/usr/bin/prometheus";
        assert!(std::path::Path::new(binary).exists(), "prometheus is installed (scripts/test installs it)");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        // Nothing to scrape: everything arrives by remote write.
        std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("write config");
        let address: SocketAddr = format!("127.0.0.1:{}", common::free_ports(1)).parse().expect("valid");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .arg("--web.enable-remote-write-receiver")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Self { child, address, _dir: dir };
        eventually(Duration::from_secs(60), "prometheus is ready", || {
            (common::listens_on(prometheus.child.id(), address.port())
                && common::http("GET", address, "/-/ready", &[]).is_ok_and(|r| r.status == 200))
            .then_some(())
        });
        prometheus
    }

    /// The result vector of an instant query.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let answer = get(self.address, &format!("/api/v1/query?query={encoded}")).json();
        assert_eq!(answer["status"], "success", "{answer}");
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A family's value on mend's /metrics (0.0.4 text), `None` when absent.
fn metric(daemon: &Daemon, sample: &str) -> Option<f64> {
    let page = get(daemon.api, "/metrics").body;
    page.lines().find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn series_arrive_in_a_real_prometheus() {
    let prometheus = Prometheus::start();
    let port = common::free_ports(1);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
[service.web.readiness]
http = "http://127.0.0.1:{{port}}/health"
interval = "1s"
[remote_write]
url = "http://{prometheus}/api/v1/write"
interval = "1s"
labels = {{ host = "test-host" }}
"#,
        prometheus = prometheus.address
    ));
    daemon.wait_ready("web");
    // The replica's memory, as mend measured it, with the extra label: a plausible process size.
    let memory = eventually(Duration::from_secs(60), "mend's replica memory is queryable in prometheus", || {
        let result = prometheus.query(r#"mend_replica_resident_memory_bytes{service="web",host="test-host"}"#);
        result.first().cloned()
    });
    let bytes: f64 = memory["value"][1].as_str().and_then(|v| v.parse().ok()).expect("a number");
    assert!(bytes > 100_000.0 && bytes < 1e9, "{memory}");
    assert_eq!(memory["metric"]["replica"], "0");
    // Readiness as mend saw it, and more than one sample of it: each new point is sent.
    eventually(Duration::from_secs(60), "several readiness samples in prometheus", || {
        let result =
            prometheus.query(r#"count_over_time(mend_replica_ready{service="web",host="test-host"}[10m]) >= 3"#);
        (!result.is_empty()).then_some(())
    });
    let ready = prometheus.query(r#"mend_replica_ready{service="web",host="test-host"}"#);
    assert_eq!(ready[0]["value"][1], "1", "{ready:?}");
    // The same samples are not sent twice: Prometheus would refuse duplicates with a 400, counted here.
    let sent = metric(&daemon, r#"mend_remote_write_samples_total{outcome="sent"}"#).expect("the counter");
    assert!(sent > 0.0, "{sent}");
    assert_eq!(metric(&daemon, r#"mend_remote_write_samples_total{outcome="rejected"}"#), Some(0.0));
}

#[test]
fn a_down_receiver_bounds_the_queue_and_drops_with_a_count() {
    // A port nothing listens on: every request fails to connect and is retried, so the queue fills.
    let nobody = common::free_ports(1);
    let port = common::free_ports(1);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
[[scrape]]
name = "mend"
url = "http://{{api}}/metrics"
interval = "1s"
[remote_write]
url = "http://127.0.0.1:{nobody}/api/v1/write"
interval = "200ms"
max_samples_per_request = 20
queue_requests = 3
"#
    ));
    daemon.wait_ready("web");
    let dropped = |daemon: &Daemon| metric(daemon, r#"mend_remote_write_samples_total{outcome="queue_full"}"#);
    let first = eventually(Duration::from_secs(60), "samples dropped with the queue full", || {
        dropped(&daemon).filter(|n| *n > 0.0)
    });
    assert_eq!(metric(&daemon, "mend_remote_write_queue_max_samples"), Some(60.0));
    // Ingest goes on while the receiver is away (scrapes keep appending) and the drops keep being
    // counted, while the queue never holds more than its bound.
    let scraped = metric(&daemon, "mend_scrape_samples_total").expect("scrape counter");
    eventually(Duration::from_secs(60), "more drops and more scraped samples", || {
        let queued = metric(&daemon, "mend_remote_write_queue_samples").expect("queue gauge");
        assert!(queued <= 60.0, "queue over its bound: {queued}");
        let more_dropped = dropped(&daemon).is_some_and(|n| n > first + 100.0);
        let more_scraped = metric(&daemon, "mend_scrape_samples_total").is_some_and(|n| n > scraped);
        (more_dropped && more_scraped).then_some(())
    });
    assert!(metric(&daemon, r#"mend_remote_write_requests_total{outcome="retried"}"#).is_some_and(|n| n > 0.0));
    assert_eq!(metric(&daemon, r#"mend_remote_write_samples_total{outcome="sent"}"#), Some(0.0));
}

#[test]
fn a_shutdown_sends_what_the_last_pass_did_not() {
    let prometheus = Prometheus::start();
    let port = common::free_ports(1);
    // Passes an hour apart: the first, at start, finds the store empty; only the flush at shutdown can
    // send the replica's samples and the staleness marker its process' exit wrote.
    let mut daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
[remote_write]
url = "http://{prometheus}/api/v1/write"
interval = "1h"
labels = {{ host = "flushed" }}
"#,
        prometheus = prometheus.address
    ));
    daemon.wait_ready("web");
    daemon.wait_for_runner_to_move_on("web");
    assert!(prometheus.query(r#"count_over_time(mend_replica_up{host="flushed"}[1h])"#).is_empty(), "nothing sent yet");
    let status = daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    assert!(status.success(), "{status:?}\n{}", daemon.log_text());
    let counted = prometheus.query(r#"count_over_time(mend_replica_up{host="flushed",service="web"}[1h])"#);
    let n_samples: f64 = counted
        .first()
        .and_then(|series| series["value"][1].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no samples in prometheus after the shutdown:\n{}", daemon.log_text()));
    assert!(n_samples >= 2.0, "{counted:?}");
    // The process' exit ended its memory series: an instant query finds it stale.
    assert!(
        prometheus.query(r#"mend_replica_resident_memory_bytes{host="flushed",service="web"}"#).is_empty(),
        "the staleness marker arrived"
    );
    assert!(
        !prometheus
            .query(r#"count_over_time(mend_replica_resident_memory_bytes{host="flushed",service="web"}[1h])"#)
            .is_empty()
    );
}
