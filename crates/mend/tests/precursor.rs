//! End to end precursors (issue 15, item 5): a service whose crash is preceded by a distinctive log line.
//! The line is mined by the log stage into `mend_log_template_total`, a `[[rule]]` fires on it, the
//! replica crashes a few seconds later; after two such incidents, the next sighting raises an early
//! warning (`precursor` signal) before the crash, which `mend learn` lists with its lead times and a
//! `[[heal]]` policy with `when = "precursor"` acts on; what was learnt survives a restart, `mend learn
//! reset --service` forgets it, and a corrupt snapshot is refused with an event. Real mend, a real `sh`
//! replica, real SQLite.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::time::Duration;

use common::{Daemon, eventually, get};
use serde_json::Value;

const ERRORS: &str = r#"mend_log_template_total{service="orders",level="error"}"#;

fn config() -> String {
    // The log stage appends a template's count when it changes: the rule fires when an error line is
    // counted and resolves 5 s later. The replica crashes 6 s after the line and logs it again 6 s after
    // its restart (crashes 12 s apart: two incidents, as the window is 10 s).
    let expr = format!("count_over_time({ERRORS}[5s]) > 0");
    format!(
        r#"[api]
listen = "{{api}}"

[learn]
precursor_window = "10s"

[service.orders]
command = ["sh", "-c", "sleep 6; echo 'ERROR pool exhausted: 0 of 16 connections free'; sleep 6; exit 3"]

[service.orders.backoff]
initial = "100ms"
max = "200ms"

[service.orders.restart_limit]
max_restarts = 1000
within = "60s"

[[rule]]
name = "PoolExhausted"
expr = '{expr}'

[[heal]]
when = "precursor"
service = "orders"
actions = ["escalate"]
"#
    )
}

fn signals(daemon: &Daemon) -> Vec<Value> {
    get(daemon.api, "/api/v1/signals?service=orders&limit=1000").json()["signals"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn at(signal: &Value) -> mend_types::Timestamp {
    signal["at"].as_str().and_then(mend_types::Timestamp::parse).expect("a signal has a time")
}

#[test]
fn issue_15_a_learnt_precursor_warns_before_the_failure_it_preceded_twice() {
    let mut daemon = Daemon::start(&config());
    // Two crashes preceded by the line teach the model; the third sighting warns.
    let warning = eventually(Duration::from_secs(180), "an early warning about orders", || {
        signals(&daemon).into_iter().find(|s| s["kind"] == "precursor" && s["state"] == "firing")
    });
    let evidence = warning["evidence"].as_str().unwrap_or_default().to_owned();
    assert_eq!(warning["service"], "orders", "{warning}");
    assert_eq!(
        (warning["labels"]["cue_kind"].as_str(), warning["labels"]["cue_name"].as_str()),
        (Some("rule"), Some("PoolExhausted")),
        "{warning}"
    );
    assert!(
        evidence.contains("incidents of orders followed rule PoolExhausted")
            && evidence.contains("orders logged `pool exhausted")
            && evidence.contains("may fail in about"),
        "{evidence}"
    );
    // The warning came before the crash it announced, and ended when that crash came.
    let warned_at = at(&warning);
    let crash = eventually(Duration::from_secs(60), "orders crashes after the warning", || {
        signals(&daemon).into_iter().find(|s| s["name"] == "crashed" && s["state"] == "firing" && at(s) > warned_at)
    });
    let lead_ms = at(&crash).as_millis() - warned_at.as_millis();
    assert!(lead_ms > 0, "warned {lead_ms} ms before the crash");
    let ended = eventually(Duration::from_secs(60), "the warning ends with the crash", || {
        signals(&daemon).into_iter().find(|s| s["kind"] == "precursor" && s["state"] == "resolved")
    });
    assert!(ended["evidence"].as_str().is_some_and(|e| e.contains("orders failed")), "{ended}");
    // `mend learn` (API and CLI) lists it with support, precision and lead times.
    let report = get(daemon.api, "/api/v1/learn").json();
    let row = report["precursors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|row| row["name"] == "PoolExhausted")
        .cloned()
        .unwrap_or_else(|| panic!("no PoolExhausted row: {report}"));
    assert!(row["n_incidents"].as_u64().is_some_and(|n| n >= 2) && row["warns"] == true, "{row}");
    assert!(row["precision"].as_f64().is_some_and(|p| p >= 0.5), "{row}");
    let (min, max) = (row["lead_min_ms"].as_u64().unwrap_or(0), row["lead_max_ms"].as_u64().unwrap_or(0));
    assert!(min > 0 && min <= max && max < 10_000, "{row}");
    let table = daemon.cli(&["learn"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.contains("PRECURSORS") && text.contains("rule PoolExhausted"), "{text}");
    // A `[[heal]]` policy took the warning through the normal path: an incident names it.
    eventually(Duration::from_secs(30), "an incident carries the precursor signal", || {
        let incidents = get(daemon.api, "/api/v1/incidents?limit=100").json();
        incidents["incidents"]
            .as_array()?
            .iter()
            .any(|i| i["signals"].as_array().is_some_and(|s| s.iter().any(|s| s["kind"] == "precursor")))
            .then_some(())
    });
    // Restarted, mend keeps what it learnt; reset forgets it.
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    daemon.spawn();
    let kept = get(daemon.api, "/api/v1/learn").json();
    assert!(
        kept["precursors"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["name"] == "PoolExhausted" && r["warns"] == true)),
        "{kept}"
    );
    let reset = daemon.cli(&["learn", "reset", "--service", "orders"]);
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    let forgotten = get(daemon.api, "/api/v1/learn").json();
    assert!(
        !forgotten["precursors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["name"] == "PoolExhausted" && r["warns"] == true),
        "{forgotten}"
    );
    // A snapshot this mend cannot read is refused with an event, and precursors are learnt again.
    daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    let connection = rusqlite::Connection::open(daemon.state_dir().join("mend.db")).expect("open the store");
    assert_eq!(
        connection.execute("UPDATE learnt SET body = x'00ff7b' WHERE key = 'precursors'", []).expect("tamper"),
        1
    );
    drop(connection);
    daemon.spawn();
    let refused = eventually(Duration::from_secs(20), "the refusal is an event", || {
        daemon
            .events(Some("learnt_state_refused"))
            .into_iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains("precursors are learnt again")))
    });
    assert!(refused["message"].as_str().is_some_and(|m| m.contains("not readable")), "{refused}");
}
