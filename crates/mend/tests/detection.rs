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

    let resolved = ALERTS.replace("\"status\": \"firing\"", "\"status\": \"resolved\"");
    assert_eq!(post_json(&daemon, "/api/v1/alerts", &resolved, Some("t0ken-t0ken")).status, 200);
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
    let output = daemon.cli(&["signals", "--limit", "10"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("external/DiskFull") && text.contains("disk 97% full"), "{text}");
    let _ = http("GET", daemon.api, "/healthz", &[]);
}
