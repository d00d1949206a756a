//! End-to-end detection: scraping, rules, detectors, forecasts and alerts in, through the real daemon.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::time::Duration;

use common::{Daemon, eventually, get, http};

const ALERTS: &str = r#"{
  "version": "4",
  "groupKey": "{}:{alertname=\"DiskFull\"}",
  "status": "firing",
  "receiver": "mend",
  "alerts": [
    {
      "status": "firing",
      "labels": {"alertname": "DiskFull", "service": "web", "severity": "critical", "instance": "host1"},
      "annotations": {"summary": "disk 97% full"},
      "startsAt": "2026-11-22T10:00:00Z",
      "endsAt": "0001-01-01T00:00:00Z",
      "generatorURL": "http://prometheus/graph",
      "fingerprint": "abc"
    }
  ]
}"#;

fn post_json(daemon: &Daemon, path: &str, body: &str, token: Option<&str>) -> common::Response {
    let mut headers = vec![("Content-Type", "application/json")];
    let bearer = token.map(|t| format!("Bearer {t}"));
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    common::http_with_body("POST", daemon.api, path, &headers, body).expect("request")
}

#[test]
fn alertmanager_webhook_alerts_become_signals() {
    let port = common::free_ports(1);
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\ntoken = \"t0ken-t0ken\"\n[service.web]\ncommand = [\"{{demo}}\", \"--port\", \"{{port}}\"]\nports = \"{port}\"\n"
    ));
    assert_eq!(post_json(&daemon, "/api/v1/alerts", ALERTS, None).status, 401, "mutating: needs the token");
    let accepted = post_json(&daemon, "/api/v1/alerts", ALERTS, Some("t0ken-t0ken"));
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(accepted.json()["accepted"], 1);
    let active = eventually(Duration::from_secs(5), "the signal is stored", || {
        let signals = get(daemon.api, "/api/v1/signals?active=true").json()["signals"].as_array().cloned()?;
        (!signals.is_empty()).then_some(signals)
    });
    let signal = &active[0];
    assert_eq!(signal["kind"], "external");
    assert_eq!(signal["name"], "DiskFull");
    assert_eq!(signal["severity"], "critical");
    assert_eq!(signal["service"], "web");
    assert_eq!(signal["labels"]["instance"], "host1");
    assert_eq!(signal["evidence"], "disk 97% full");
    assert_eq!(signal["since"], "2026-11-22T10:00:00.000Z");
    // Alertmanager repeats the notification while the alert fires: no new transition.
    let repeat = post_json(&daemon, "/api/v1/alerts", ALERTS, Some("t0ken-t0ken"));
    assert_eq!((repeat.status, repeat.json()["unchanged"].as_u64()), (200, Some(1)), "{}", repeat.body);

    let resolved = ALERTS.replace("\"status\": \"firing\"", "\"status\": \"resolved\"");
    assert_eq!(post_json(&daemon, "/api/v1/alerts", &resolved, Some("t0ken-t0ken")).status, 200);
    assert_eq!(post_json(&daemon, "/api/v1/alerts", &resolved, Some("t0ken-t0ken")).json()["unchanged"], 1);
    eventually(Duration::from_secs(5), "the signal resolves", || {
        let signals = get(daemon.api, "/api/v1/signals?active=true").json()["signals"].as_array().cloned()?;
        signals.is_empty().then_some(())
    });
    assert_eq!(get(daemon.api, "/api/v1/signals").json()["signals"].as_array().map(Vec::len), Some(2));
    let metrics = get(daemon.api, "/metrics").body;
    assert!(
        metrics.contains("mend_signals_total{kind=\"external\",severity=\"critical\",state=\"firing\"} 1"),
        "{metrics}"
    );

    for (body, error) in [
        ("not json", "invalid Alertmanager webhook payload"),
        (r#"{"version": "3", "alerts": []}"#, "unsupported webhook version \"3\""),
        (r#"{"version": "4", "alerts": [{"status": "firing", "labels": {}}]}"#, "alerts[0] has no \"alertname\" label"),
    ] {
        let response = post_json(&daemon, "/api/v1/alerts", body, Some("t0ken-t0ken"));
        assert_eq!(response.status, 400, "{body}");
        let message = response.json()["error"].as_str().unwrap_or("").to_owned();
        assert!(message.contains(error), "{message}");
    }
    // A body over the limit (1 MiB) gets a JSON error too.
    let huge = format!("{{\"version\":\"4\",\"alerts\":[],\"pad\":\"{}\"}}", "x".repeat(2_200_000));
    let too_large = post_json(&daemon, "/api/v1/alerts", &huge, Some("t0ken-t0ken"));
    assert_eq!(too_large.status, 413);
    assert!(
        too_large.json()["error"].as_str().is_some_and(|m| m.contains("larger than 1048576 bytes")),
        "{}",
        too_large.body
    );
    let output = daemon.cli(&["signals", "--limit", "10"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("external/DiskFull") && text.contains("disk 97% full"), "{text}");
    let _ = http("GET", daemon.api, "/healthz", &[]);
}

/// A one-metric exporter on loopback whose value the test sets.
fn gauge_exporter() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let value = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(10f64.to_bits()));
    let serving = value.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0_u8; 2048];
            let _ = stream.read(&mut request);
            let current = f64::from_bits(serving.load(std::sync::atomic::Ordering::Relaxed));
            let body = format!("# TYPE queue_depth gauge\nqueue_depth {current}\n");
            let _ = stream.write_all(
                format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
        }
    });
    (port, value)
}

fn signals(daemon: &Daemon, query: &str) -> Vec<serde_json::Value> {
    get(daemon.api, &format!("/api/v1/signals?limit=1000{query}")).json()["signals"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn errors_fault_fires_its_rule_within_the_for_duration() {
    let port = common::free_ports(1);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
metrics = {{ scrape = "http://127.0.0.1:{{port}}/metrics", interval = "500ms" }}
[[rule]]
name = "HighErrorRate"
expr = 'sum by (service) (rate(mend_demo_requests_total{{code=~"5.."}}[2s])) / sum by (service) (rate(mend_demo_requests_total[2s])) > 0.2'
for = "2s"
severity = "critical"
summary = "{{{{ $labels.service }}}} answers {{{{ $value }}}} errors"
# Fires once the detect loop has seen traffic for as long as HighErrorRate's `for`: the positive event
# after which HighErrorRate, evaluated on the same data, would have fired on answers without errors.
[[rule]]
name = "Traffic"
expr = 'sum by (service) (rate(mend_demo_requests_total[2s])) > 0'
for = "2s"
"#
    ));
    daemon.wait_ready("web");
    let demo = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Steady traffic, bounded in count and time, from a background thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for _ in 0..3000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = http("GET", demo, "/", &[]);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let error_alerts = |query: &str| -> Vec<serde_json::Value> {
        signals(&daemon, query).into_iter().filter(|s| s["name"] == "HighErrorRate").collect()
    };
    eventually(Duration::from_secs(15), "the Traffic rule fires", || {
        signals(&daemon, "&active=true").into_iter().find(|s| s["name"] == "Traffic")
    });
    assert!(error_alerts("").is_empty(), "no alert while the service answers 200");
    let faulted_at = std::time::Instant::now();
    assert_eq!(http("POST", demo, "/fault/errors?rate=0.5", &[]).expect("fault").status, 200);
    let fired = eventually(Duration::from_secs(15), "the rule fires", || {
        signals(&daemon, "&active=true").into_iter().find(|s| s["name"] == "HighErrorRate")
    });
    let took = faulted_at.elapsed();
    // The error ratio crosses 0.2 within about a second of the 2 s rate window; then `for` is 2 s.
    assert!(took >= Duration::from_secs(2), "fired before its for duration: {took:?}");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    assert_eq!(fired["kind"], "rule");
    assert_eq!(fired["severity"], "critical");
    assert_eq!(fired["service"], "web");
    let evidence = fired["evidence"].as_str().unwrap_or("");
    assert!(evidence.starts_with("web answers 0."), "{fired}");
    // Three significant digits, not a raw float (0.48333333333333334).
    let value = evidence.trim_start_matches("web answers ").split(' ').next().unwrap_or("");
    assert!(value.len() <= 5, "{evidence}");
    http("POST", demo, "/fault/reset", &[]).expect("reset");
    eventually(Duration::from_secs(15), "the rule resolves", || error_alerts("&active=true").is_empty().then_some(()));
    // Resolved: it says so, without repeating its stale firing value.
    let resolved = error_alerts("").into_iter().find(|s| s["state"] == "resolved").expect("a resolved transition");
    assert_eq!(resolved["value"], serde_json::Value::Null, "{resolved}");
    assert_eq!(resolved["evidence"], "resolved: the condition no longer holds", "{resolved}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = traffic.join();

    // The same data through the Prometheus-compatible API.
    let series = get(daemon.api, "/api/v1/series?match[]=mend_demo_requests_total").json();
    assert_eq!(series["status"], "success");
    let codes: Vec<String> =
        series["data"].as_array().expect("data").iter().map(|s| s["code"].as_str().unwrap_or("").to_owned()).collect();
    assert!(codes.contains(&"200".to_owned()) && codes.contains(&"500".to_owned()), "{codes:?}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let range = get(
        daemon.api,
        &format!(
            "/api/v1/query_range?query=sum(rate(mend_demo_requests_total%5B2s%5D))&start={}&end={now}&step=1",
            now - 10
        ),
    )
    .json();
    assert_eq!(range["data"]["resultType"], "matrix");
    assert!(range["data"]["result"][0]["values"].as_array().is_some_and(|v| v.len() >= 5), "{range}");
    let bad = get(daemon.api, "/api/v1/query?query=predict_linear(x%5B5m%5D,1)");
    assert_eq!((bad.status, bad.json()["errorType"].as_str()), (400, Some("bad_data")));

    // The POST forms, as Grafana sends them: parameters in a form body.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let body = format!("query=sum(rate(mend_demo_requests_total%5B2s%5D))&start={}&end={now}&step=1", now - 10);
    let posted = common::http_with_body("POST", daemon.api, "/api/v1/query_range", &form, &body).expect("POST");
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(posted.json()["data"]["resultType"], "matrix");
    let posted = common::http_with_body("POST", daemon.api, "/api/v1/query", &form, "query=up").expect("POST");
    assert_eq!((posted.status, posted.json()["status"].as_str()), (200, Some("success")), "{}", posted.body);
    let unformed = common::http_with_body("POST", daemon.api, "/api/v1/query", &[], "query=up").expect("POST");
    assert_eq!((unformed.status, unformed.json()["errorType"].as_str()), (400, Some("bad_data")));

    // A stopped replica's series end with staleness markers: an instant query stops returning them
    // at once, not five minutes (the lookback delta) later.
    let instant = |query: &str| -> usize {
        let encoded = query.replace('{', "%7B").replace('}', "%7D").replace('"', "%22").replace('=', "%3D");
        get(daemon.api, &format!("/api/v1/query?query={encoded}")).json()["data"]["result"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let queries = ["mend_demo_requests_total", "mend_replica_resident_memory_bytes"];
    for query in queries {
        assert!(instant(query) > 0, "{query} before the stop");
    }
    assert_eq!(common::post(daemon.api, "/api/v1/services/web/stop").status, 200);
    for query in queries {
        eventually(Duration::from_secs(5), &format!("{query} ends"), || (instant(query) == 0).then_some(()));
    }
    assert_eq!(instant("mend_replica_restarts_total"), 1, "the restart count belongs to the replica and goes on");
    // Its scrape target is gone (`up` too, as in Prometheus); the replica itself is down, and says so.
    eventually(Duration::from_secs(5), "up ends", || (instant(r#"up{service="web"}"#) == 0).then_some(()));
    eventually(Duration::from_secs(5), "mend_replica_up says 0", || {
        let down = get(daemon.api, "/api/v1/query?query=mend_replica_up%7Bservice%3D%22web%22%7D").json();
        (down["data"]["result"][0]["value"][1] == "0").then_some(())
    });
}

#[test]
fn a_memory_leak_is_forecast_before_the_limit_then_the_limit_replaces_the_replica() {
    let port = common::free_ports(1);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
max_memory_bytes = "96MiB"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
"#
    ));
    let pid = daemon.wait_ready("web")[0];
    let demo = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // A stable period first, as in production: the leak starts after the forecaster has settled on a flat
    // line (the case that once went unforecast until the limit). Thirty samples of the forecast series
    // (one a second), counted rather than slept for, as a loaded machine samples late.
    let samples = "count_over_time(mend_replica_resident_memory_bytes{service=\"web\"}[10m])";
    eventually(Duration::from_secs(90), "thirty memory samples", || (daemon.query(samples) >= 30.0).then_some(()));
    assert!(signals(&daemon, "").iter().all(|s| s["kind"] != "predictive"), "no forecast while flat");
    assert_eq!(http("POST", demo, "/fault/leak?mib_per_sec=3", &[]).expect("fault").status, 200);
    let predicted = eventually(Duration::from_secs(60), "a predictive signal", || {
        signals(&daemon, "").into_iter().find(|s| s["kind"] == "predictive")
    });
    assert_eq!(predicted["name"], "memory_exhaustion");
    assert_eq!(predicted["service"], "web");
    // In the series' unit: "60.2 MiB, +3.0 MiB/s: reaches the limit 96.0 MiB in 12 s (confidence 0.97)"
    // (the slope may read in KiB/s when the forecast fires on the leak's first seconds).
    let evidence = predicted["evidence"].as_str().unwrap_or("");
    assert!(evidence.contains("iB/s: reaches the limit 96.0 MiB in "), "{predicted}");
    // Predicted before the failure: the replica is still the original process, under its limit.
    assert_eq!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pid)));
    let rss = daemon.replica("web", 0)["rss_bytes"].as_u64().unwrap_or(0);
    assert!(rss < 96 * 1024 * 1024, "rss {rss}");
    // The warning holds until the limit acts: the leak goes on.
    let unhealthy = eventually(Duration::from_secs(60), "the memory limit replaces the replica", || {
        daemon.events(Some("unhealthy")).first().cloned()
    });
    assert!(unhealthy["message"].as_str().unwrap_or("").starts_with("memory check failed"), "{unhealthy}");
    let early_resolves: Vec<_> = signals(&daemon, "")
        .into_iter()
        .filter(|s| s["kind"] == "predictive" && s["state"] == "resolved")
        .filter(|s| s["evidence"].as_str().unwrap_or("").contains("no longer reaches"))
        .collect();
    assert!(early_resolves.is_empty(), "the warning resolved while the leak went on: {early_resolves:?}");
    daemon.wait_ready("web");
    // The restart resets the trend: the warning resolves.
    eventually(Duration::from_secs(20), "the predictive signal resolves", || {
        signals(&daemon, "&active=true").iter().all(|s| s["kind"] != "predictive").then_some(())
    });
}

/// A replica's first scrapes come before it listens: that is no `scrape_failed` event (it used to be
/// one at every start). A replica that its probe says is ready but whose metrics fail is reported at
/// once, not after the start-up grace (30 s).
#[test]
fn a_starting_replica_raises_no_scrape_failure_but_a_ready_one_with_broken_metrics_does() {
    let ports = common::free_ports(2);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}", "--startup-delay", "1s"]
ports = "{web}"
metrics = {{ scrape = "http://127.0.0.1:{{port}}/metrics", interval = "200ms" }}
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
initial_delay = "3s"
[service.broken]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{broken}"
metrics = {{ scrape = "http://127.0.0.1:{{port}}/no-metrics-here", interval = "200ms" }}
[service.broken.liveness]
http = "http://127.0.0.1:{{port}}/health"
"#,
        web = ports,
        broken = ports + 1,
    ));
    // Longer than the grace (30 s), so that a report after it would be seen, and fail the test below.
    let broken = eventually(Duration::from_secs(60), "broken's failing scrape is reported", || {
        daemon.events(Some("scrape_failed")).into_iter().find(|e| e["service"] == "broken")
    });
    let ready = daemon.events(Some("ready")).into_iter().find(|e| e["service"] == "broken").expect("broken is ready");
    let after_ready_ms = broken["at_ms"].as_i64().expect("at_ms") - ready["at_ms"].as_i64().expect("at_ms");
    // A scrape every 200 ms: the first after readiness fails (10 s leaves room for a loaded machine).
    assert!(after_ready_ms < 10_000, "reported {after_ready_ms} ms after ready, not at once: {broken}");
    assert!(broken["message"].as_str().unwrap_or("").contains("HTTP status 404"), "{broken}");
    daemon.wait_ready("web");
    eventually(Duration::from_secs(10), "web is scraped", || {
        (daemon.query(r#"up{service="web"}"#) == 1.0).then_some(())
    });
    // Its first scrapes did fail (they are counted and written as up 0)...
    assert_eq!(daemon.query(r#"min_over_time(up{service="web"}[5m])"#), 0.0);
    // ...without an event.
    let noise: Vec<_> = daemon.events(Some("scrape_failed")).into_iter().filter(|e| e["service"] == "web").collect();
    assert!(noise.is_empty(), "{noise:?}");
}

#[test]
fn a_detector_attached_to_a_scraped_series_flags_a_spike() {
    let (exporter_port, value) = gauge_exporter();
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[[scrape]]
name = "queue"
url = "http://127.0.0.1:{exporter_port}/metrics"
interval = "100ms"
[[detect]]
name = "queue_anomaly"
series = 'queue_depth{{job="queue"}}'
detector = "default"
"#
    ));
    // Warm the detector up on ordinary values: its warm-up is 150 points (15 s at 100 ms). Counted in
    // scraped points, not in time, as a loaded machine scrapes late.
    let mut tick = 0_u64;
    // NaN (no point yet) counts as none.
    let scraped = || daemon.query("count_over_time(queue_depth{job=\"queue\"}[10m])").max(0.0);
    let started = std::time::Instant::now();
    while scraped() < 200.0 {
        assert!(started.elapsed() < Duration::from_secs(90), "only {} points scraped", scraped());
        for _ in 0..10 {
            tick += 1;
            value.store((10.0 + (tick % 3) as f64).to_bits(), std::sync::atomic::Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(signals(&daemon, "").is_empty(), "ordinary values raise nothing: {:?}", signals(&daemon, ""));
    value.store(500f64.to_bits(), std::sync::atomic::Ordering::Relaxed);
    let anomaly = eventually(Duration::from_secs(10), "the spike is flagged", || {
        signals(&daemon, "").into_iter().find(|s| s["kind"] == "anomaly")
    });
    assert_eq!(anomaly["name"], "queue_anomaly");
    assert_eq!(anomaly["labels"]["job"], "queue");
    assert_eq!(anomaly["labels"]["metric"], "queue_depth");
    assert!(anomaly["evidence"].as_str().unwrap_or("").starts_with("value 500"), "{anomaly}");
}

/// The default detector's warm-up is 150 points (12.5 minutes of an expression sampled every 5 s); a
/// gross jump alarms after 30 points already, so that trying a fault on a fresh mend shows something.
#[test]
fn a_gross_jump_is_flagged_while_the_detector_still_learns() {
    let (exporter_port, value) = gauge_exporter();
    let set = |v: f64| value.store(v.to_bits(), std::sync::atomic::Ordering::Relaxed);
    set(0.001);
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[[scrape]]
name = "latency"
url = "http://127.0.0.1:{exporter_port}/metrics"
interval = "100ms"
[[detect]]
name = "latency_anomaly"
series = 'queue_depth{{job="latency"}}'
"#
    ));
    let points = || daemon.query(r#"count_over_time(queue_depth{job="latency"}[5m])"#);
    eventually(Duration::from_secs(30), "40 points scraped", || (points() >= 40.0).then_some(()));
    assert!(signals(&daemon, "").is_empty(), "a flat series raises nothing");
    // A millisecond becomes 200 ms.
    set(0.2);
    let anomaly = eventually(Duration::from_secs(10), "the jump is flagged", || {
        signals(&daemon, "").into_iter().find(|s| s["kind"] == "anomaly")
    });
    assert!(points() < 150.0, "flagged within the warm-up");
    let evidence = anomaly["evidence"].as_str().unwrap_or("");
    assert!(evidence.starts_with("value 0.2 scored "), "{anomaly}");
    assert!(evidence.ends_with("(far beyond anything seen while still learning)"), "{anomaly}");
}

#[test]
fn node_exporter_is_scraped_as_a_static_target() {
    let exporter = ["/usr/bin/prometheus-node-exporter", "/usr/bin/node_exporter"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("prometheus-node-exporter is installed (.ci/run installs it)");
    let port = common::free_ports(1);
    let mut node = std::process::Command::new(exporter)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start node_exporter");
    // Its own listener, not whatever else might hold the port: it cannot be told to bind port 0 and say.
    eventually(Duration::from_secs(10), "node_exporter listens", || common::listens_on(node.id(), port).then_some(()));
    let daemon = Daemon::start(&format!(
        "[api]\nlisten = \"{{api}}\"\n[[scrape]]\nname = \"node\"\nurl = \"http://127.0.0.1:{port}/metrics\"\ninterval = \"2s\"\nlabels = {{ host = \"test\" }}\n"
    ));
    let found = eventually(Duration::from_secs(15), "node_exporter's series are in the store", || {
        let series = get(daemon.api, "/api/v1/series?match[]=node_load1").json();
        series["data"].as_array().and_then(|data| data.first().cloned())
    });
    assert_eq!(found["job"], "node");
    assert_eq!(found["host"], "test");
    assert_eq!(found["instance"], format!("127.0.0.1:{port}"));
    // `up` is written right after the scrape's samples.
    eventually(Duration::from_secs(5), "up{job=\"node\"} is 1", || {
        let up = get(daemon.api, "/api/v1/query?query=up%7Bjob%3D%22node%22%7D").json();
        (up["data"]["result"][0]["value"][1] == "1").then_some(())
    });
    assert!(daemon.events(Some("scrape_failed")).is_empty(), "{:?}", daemon.events(Some("scrape_failed")));
    let _ = node.kill();
    let _ = node.wait();
}

#[test]
fn conditions_firing_when_mend_stopped_are_resolved_by_the_next_run() {
    let port = common::free_ports(1);
    let rule = r#"
[[rule]]
name = "AlwaysOn"
expr = 'mend_replica_resident_memory_bytes > 0'
for = "0s"
"#;
    let service = format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{port}"
"#
    );
    let mut daemon = Daemon::start(&format!("{service}{rule}"));
    eventually(Duration::from_secs(15), "the rule fires", || {
        (!signals(&daemon, "&active=true").is_empty()).then_some(())
    });
    // An Alertmanager alert is Alertmanager's to resolve: it stays.
    let alert = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"DiskFull"},"annotations":{},"startsAt":"2026-01-01T00:00:00Z"}]}"#;
    assert_eq!(post_json(&daemon, "/api/v1/alerts", alert, None).status, 200);
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(15));
    // The next run no longer has the rule: nothing would ever resolve what the last one left firing.
    let text = std::fs::read_to_string(&daemon.config_path).expect("config");
    std::fs::write(&daemon.config_path, text.replace(rule, "")).expect("write config");
    daemon.spawn();
    daemon.wait_ready("web");
    // Written through the store's queue: eventually, and then for good.
    eventually(Duration::from_secs(5), "only the external alert is active", || {
        let active = signals(&daemon, "&active=true");
        let names: Vec<&str> = active.iter().filter_map(|s| s["name"].as_str()).collect();
        (names == ["DiskFull"]).then_some(())
    });
    let resolved = signals(&daemon, "").into_iter().find(|s| s["name"] == "AlwaysOn" && s["state"] == "resolved");
    let resolved = resolved.expect("a resolved transition");
    assert!(resolved["evidence"].as_str().unwrap_or("").contains("mend restarted"), "{resolved}");
    // The new run knows the alert is firing: a repeat changes nothing, and Alertmanager's resolve lands.
    assert_eq!(post_json(&daemon, "/api/v1/alerts", alert, None).json()["unchanged"], 1);
    let resolve = alert.replace("\"status\":\"firing\"", "\"status\":\"resolved\"");
    assert_eq!(post_json(&daemon, "/api/v1/alerts", &resolve, None).json()["unchanged"], 0);
    eventually(Duration::from_secs(5), "nothing is active", || {
        signals(&daemon, "&active=true").is_empty().then_some(())
    });
}
