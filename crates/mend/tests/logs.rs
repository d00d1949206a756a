//! End-to-end logs: replica output of real processes (small python services) read across services,
//! interleaved by time and filtered through the CLI; mined into templates (`--patterns`, the
//! `mend_log_template_total` series); a new error template after the warm-up raises a signal, which the
//! incident's diagnosis shows as evidence.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::time::Duration;

use common::{Daemon, eventually, get};

/// `orders` logs a request line every 50 ms; at start-up an error (learnt in the warm-up, no signal);
/// after 32 s of its own clock, a new error template (the warm-up is 30 s from the first line).
/// `billing` logs a JSON line every 50 ms. (No braces: mend's placeholders use them.)
const CONFIG: &str = r#"
[api]
listen = "{api}"

[service.orders]
command = ["python3", "-u", "-c", """
import sys, time
start = time.monotonic()
print("ERROR cannot read cache file /var/cache/orders.db, starting cold", flush=True)
n = 0
while True:
    n += 1
    print("INFO request %d served in %d ms" % (n, n % 7), flush=True)
    if time.monotonic() - start > 32:
        print("ERROR connection refused to db.internal:%d" % (5432 + n % 3), file=sys.stderr, flush=True)
    time.sleep(0.05)
"""]

[service.billing]
command = ["python3", "-u", "-c", """
import json, time
n = 0
while True:
    n += 1
    print(json.dumps(dict(level="warn" if n % 2 else "info", msg="invoice %d queued" % n, n=n)), flush=True)
    time.sleep(0.05)
"""]
"#;

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn logs_are_interleaved_filtered_mined_and_a_new_error_template_raises_a_signal() {
    let daemon = Daemon::start(CONFIG);
    eventually(Duration::from_secs(30), "both services logged", || {
        let text = stdout(&daemon.cli(&["logs", "--all", "--tail", "200"]));
        let both = text.contains(" orders/0 INFO request ") && text.contains(" billing/0 {");
        (both && text.lines().count() >= 200).then_some(())
    });

    // Interleaved by time, each line with its time and service/replica.
    let text = stdout(&daemon.cli(&["logs", "orders", "billing", "--tail", "100"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100, "{text}");
    let times: Vec<mend_types::Timestamp> = lines
        .iter()
        .map(|line| mend_types::Timestamp::parse(line.split(' ').next().unwrap_or_default()).expect("a time first"))
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "not in time order:\n{text}");
    let labels: std::collections::BTreeSet<&str> = lines.iter().filter_map(|line| line.split(' ').nth(1)).collect();
    assert_eq!(labels, ["billing/0", "orders/0"].into_iter().collect(), "{text}");

    // Filters: a regular expression, a level (billing's JSON lines have theirs), a time.
    let grep = stdout(&daemon.cli(&["logs", "--all", "--grep", "invoice [0-9]*3 ", "--tail", "1000"]));
    assert!(
        !grep.is_empty() && grep.lines().all(|line| line.contains(" billing/0 ") && line.contains("3 queued")),
        "{grep}"
    );
    let warn = stdout(&daemon.cli(&["logs", "--all", "--level", "warn", "--tail", "1000"]));
    assert!(warn.contains("\"level\": \"warn\""), "{warn}");
    assert!(!warn.contains("INFO request") && !warn.contains("\"level\": \"info\""), "{warn}");
    let future = stdout(&daemon.cli(&["logs", "--all", "--since", "2999-01-01T00:00:00Z"]));
    assert_eq!(future, "");
    // One service without filters: as it wrote it, as before.
    let plain = stdout(&daemon.cli(&["logs", "orders", "--tail", "3"]));
    assert!(plain.lines().all(|line| line.starts_with("INFO request ") || line.starts_with("ERROR")), "{plain}");

    // Templates: the request lines are one template, counted as a series.
    let patterns = eventually(Duration::from_secs(30), "orders' templates", || {
        let text = stdout(&daemon.cli(&["logs", "orders", "--patterns"]));
        text.contains("request <*> served in <*> ms").then_some(text)
    });
    assert!(patterns.starts_with("ID  COUNT  LEVEL  TEMPLATE"), "{patterns}");
    let api = get(daemon.api, "/api/v1/services/orders/log-patterns").json();
    let request = api["patterns"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["template"] == "request <*> served in <*> ms").cloned())
        .expect("the request template");
    assert_eq!(request["level"], "info");
    assert!(request["example"].as_str().is_some_and(|example| example.starts_with("INFO request ")));
    let id = request["id"].as_u64().expect("an id");
    eventually(Duration::from_secs(30), "the template's series", || {
        let value =
            daemon.query(&format!("mend_log_template_total{{service=\"orders\",template_id=\"{id}\",level=\"info\"}}"));
        (value >= 10.0).then_some(())
    });

    // After the warm-up, a new error template: a signal naming it.
    let signal = eventually(Duration::from_secs(120), "a new_log_template signal", || {
        let signals = get(daemon.api, "/api/v1/signals?limit=1000").json()["signals"].as_array().cloned()?;
        signals.into_iter().find(|signal| signal["name"] == "new_log_template" && signal["state"] == "firing")
    });
    assert_eq!(signal["service"], "orders");
    assert_eq!(signal["evidence"], "orders started logging `connection refused to db.internal:<*>` (error)");
    // Only that one: the start-up error came within the warm-up, and billing logs no error.
    let signals =
        get(daemon.api, "/api/v1/signals?limit=1000").json()["signals"].as_array().cloned().unwrap_or_default();
    let new_templates: Vec<_> = signals.iter().filter(|signal| signal["name"] == "new_log_template").collect();
    assert_eq!(new_templates.len(), 1, "{new_templates:?}");
    // The incident it opened names it in its evidence, with its time (issue 16, item 5).
    let since = signal["since"].as_str().and_then(|t| t.get(11..19)).expect("a since time").to_owned();
    let incident = eventually(Duration::from_secs(30), "an incident for orders", || {
        let incidents = get(daemon.api, "/api/v1/incidents").json()["incidents"].as_array().cloned()?;
        incidents
            .into_iter()
            .find(|incident| incident["services"].as_array().is_some_and(|s| s.contains(&"orders".into())))
    });
    let ranked = incident["diagnosis"]["ranking"].as_array().cloned().unwrap_or_default();
    let orders = ranked.iter().find(|ranked| ranked["service"] == "orders").expect("orders ranked");
    let facts = orders["evidence"].as_array().cloned().unwrap_or_default();
    let wanted = format!("orders started logging `connection refused to db.internal:<*>` (error) since {since}");
    assert!(facts.iter().any(|fact| fact.as_str().is_some_and(|f| f.starts_with(&wanted))), "{wanted} in {incident:#}");
}

#[test]
fn unknown_services_and_bad_filters_are_refused_with_their_reason() {
    let daemon = Daemon::start(CONFIG);
    let unknown = daemon.cli(&["logs", "orders", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&unknown.stderr).trim(), "error: unknown service \"nope\" (HTTP 404)");
    let regex = daemon.cli(&["logs", "--all", "--grep", "("]);
    assert_eq!(regex.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&regex.stderr).contains("invalid grep \"(\""),
        "{}",
        String::from_utf8_lossy(&regex.stderr)
    );
    let level = daemon.cli(&["logs", "--all", "--level", "loud"]);
    assert_eq!(level.status.code(), Some(2), "a usage error");
    let patterns = daemon.cli(&["logs", "orders", "billing", "--patterns"]);
    assert_eq!(patterns.status.code(), Some(1));
    let neither = daemon.cli(&["logs"]);
    assert_eq!(neither.status.code(), Some(2));
    let api = get(daemon.api, "/api/v1/logs?level=loud");
    assert_eq!(api.status, 400);
}
