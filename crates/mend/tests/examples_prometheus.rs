//! The Prometheus and Grafana examples are real: `promtool` (Debian's prometheus) checks the scrape
//! config and the rules and runs the rules' unit tests; every query of the Grafana dashboard parses as
//! PromQL; and every mend metric they name is on a running mend's /metrics.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Daemon, get};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn promtool(args: &[&str]) {
    let promtool = "/usr/bin/promtool";
    assert!(Path::new(promtool).exists(), "promtool is installed (Debian's prometheus; scripts/test installs it)");
    let output =
        Command::new(promtool).args(args).current_dir(examples().join("prometheus")).output().expect("run promtool");
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_rules_and_their_tests_pass() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "rules.yml"]);
    promtool(&["test", "rules", "rules_test.yml"]);
}

fn dashboard() -> serde_json::Value {
    let path = examples().join("grafana/mend.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

/// Each panel's queries, with Grafana's interval variables replaced as Grafana does before sending them.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title").to_owned();
        let targets = panel["targets"].as_array().expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "6h");
            queries.push((title.clone(), expr));
        }
    }
    queries
}

#[test]
fn every_dashboard_query_parses_and_the_panels_cover_the_loop() {
    let queries = dashboard_queries();
    for (title, expr) in &queries {
        if let Err(error) = promql_parser::parser::parse(expr) {
            panic!("panel {title:?}: {expr}\n{error}");
        }
    }
    let titles: BTreeSet<&str> = queries.iter().map(|(title, _)| title.as_str()).collect();
    for wanted in [
        "Services ready",
        "Replicas up",
        "Restarts",
        "Incidents: conditions firing",
        "Healing actions",
        "Proxy requests",
        "Proxy error ratio",
        "Proxy latency",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted:?} in {titles:?}");
    }
    // A query that does not parse is caught (the check above is not vacuous).
    assert!(promql_parser::parser::parse("sum by (host (mend_replica_up)").is_err());
}

/// `mend_*` metric names in `text` (a histogram's `_bucket` named by its family).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut idx = 0;
    while let Some(found) = text[idx..].find("mend_") {
        let start = idx + found;
        let preceded_by_word = start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |len| start + len);
        if !preceded_by_word {
            let name = &text[start..end];
            names.insert(name.strip_suffix("_bucket").unwrap_or(name).to_owned());
        }
        idx = end;
    }
    names
}

#[test]
fn every_metric_the_examples_name_is_on_mends_metrics_page() {
    let ports = common::free_ports(2);
    // A proxied service, remote write (to a port nobody listens on) and an alert that a dry-run policy
    // acts on, so that every family has a sample (a family without one is not on the page).
    let daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
ports = "{ports}"
[service.web.proxy]
listen = "127.0.0.1:{proxy}"
[service.web.healing]
mode = "dry-run"
[[heal]]
when = "alert:Sick"
actions = ["restart"]
verify = "1s"
[remote_write]
url = "http://127.0.0.1:{nobody}/api/v1/write"
"#,
        proxy = ports + 1,
        nobody = common::free_ports(1),
    ));
    daemon.wait_ready("web");
    let mut named = BTreeSet::new();
    for (_, expr) in dashboard_queries() {
        named.extend(metric_names(&expr));
    }
    let rules = std::fs::read_to_string(examples().join("prometheus/rules.yml")).expect("rules.yml");
    // Recording rules' own names (`mend:...`) are not metrics of mend's.
    named.extend(metric_names(&rules));
    assert!(named.len() > 10, "{named:?}");
    let alert = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Sick","service":"web"},"annotations":{},"startsAt":"2026-01-01T00:00:00Z"}]}"#;
    let posted =
        common::http_with_body("POST", daemon.api, "/api/v1/alerts", &[("Content-Type", "application/json")], alert)
            .expect("post the alert");
    assert_eq!(posted.status, 200, "{}", posted.body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = get(daemon.api, "/metrics").body;
        let missing: Vec<&String> = named.iter().filter(|name| !page.contains(name.as_str())).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "named by the examples but not on /metrics after 30s: {missing:?}\n{page}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
