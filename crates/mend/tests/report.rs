//! End-to-end post-incident report (issue 15 item 6): a real incident (mend-demo replicas behind mend's
//! proxy under real load, an alert whose summary is hostile, a policy's restart, a pause and a resume by
//! an operator), reported by the daemon (HTML with SVG charts checked by Python's XML parser, Markdown
//! through the CLI) and, once mend has stopped, by the CLI from the SQLite store alone.
#![allow(clippy::disallowed_methods)] // End-to-end tests wait in real time.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::{Daemon, KeepAlive, eventually, free_ports, get};
use serde_json::{Value, json};

/// What a hostile alert (or a log line an alert quotes) could carry: markup, a script, Markdown that
/// would break a table, and a CDATA end.
const HOSTILE: &str = "<script>alert('x')</script><img src=x onerror=alert(1)> | **bold** ]]> &amp;";

fn alert(status: &str) -> String {
    json!({
        "version": "4",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": {"alertname": "Sick", "service": "web", "replica": "0"},
            "annotations": {"summary": format!("web/0 logged: {HOSTILE}")}
        }]
    })
    .to_string()
}

fn post_alert(daemon: &Daemon, status: &str) {
    let response = common::http_with_body(
        "POST",
        daemon.api,
        "/api/v1/alerts",
        &[("Content-Type", "application/json")],
        &alert(status),
    )
    .expect("request");
    assert_eq!(response.status, 200, "{}", response.body);
}

fn incident(daemon: &Daemon, id: u64) -> Value {
    get(daemon.api, &format!("/api/v1/incidents/{id}")).json()
}

/// Checks each `<svg>` of `page` is well-formed XML with Python's parser (not ours); returns how many.
fn well_formed_svgs(page: &str) -> usize {
    let svgs: Vec<&str> = page
        .match_indices("<svg ")
        .map(|(start, _)| {
            let end = page[start..].find("</svg>").expect("a closed svg") + start + "</svg>".len();
            &page[start..end]
        })
        .collect();
    let script = "import sys, xml.dom.minidom\nparts = sys.stdin.read().split('\\x00')\nfor part in parts:\n    xml.dom.minidom.parseString(part)\nprint(len(parts))\n";
    let mut python = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    python.stdin.take().expect("stdin").write_all(svgs.join("\0").as_bytes()).expect("write");
    let output = python.wait_with_output().expect("python3 ran");
    assert!(output.status.success(), "an SVG is not well-formed XML: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), svgs.len().to_string());
    svgs.len()
}

fn sections_in(text: &str, sections: &[&str]) {
    for section in sections {
        assert!(text.contains(section), "{section:?} is missing from the report:\n{text}");
    }
}

fn stdout(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn issue_15_a_healed_incident_is_reported_with_every_section_charts_and_escaped_data() {
    let ports = free_ports(3);
    let proxy_port = free_ports(1);
    let mut daemon = Daemon::start(&format!(
        r#"
[api]
listen = "{{api}}"
[service.web]
command = ["{{demo}}", "--port", "{{port}}"]
replicas = 2
ports = "{ports}-{last}"
[service.web.liveness]
http = "http://127.0.0.1:{{port}}/health"
[service.web.proxy]
listen = "127.0.0.1:{proxy_port}"
[[heal]]
when = "alert:Sick"
actions = ["restart"]
verify = "60s"
"#,
        last = ports + 2
    ));
    let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
    let pids = daemon.wait_ready("web");
    eventually(Duration::from_secs(10), "the proxy routes to the replicas", || {
        KeepAlive::new(proxy).request("GET", "/", &[], b"").ok().filter(|r| r.status == 200)
    });
    // Real traffic through the proxy, so that the error ratio and latency have series to chart.
    let stop = Arc::new(AtomicBool::new(false));
    let load = common::load(proxy, "/", 2, 20_000, Duration::from_millis(20), stop.clone());
    load.wait_for_more(50);
    // Series around the incident: the charts need a few samples before it and after it.
    let samples = |what: &str| daemon.query(&format!("count_over_time({what}[1h])"));
    eventually(Duration::from_secs(30), "five samples of the replicas and of the proxy's traffic", || {
        let proxied = samples(r#"mend_proxy_requests_total{service="web",release="stable",code="2xx"}"#);
        (samples(r#"mend_replica_up{service="web",replica="0"}"#) >= 5.0 && proxied >= 5.0).then_some(())
    });

    post_alert(&daemon, "firing");
    let restart = eventually(Duration::from_secs(30), "the policy's restart succeeded", || {
        let actions = get(daemon.api, "/api/v1/actions").json()["actions"].as_array().cloned()?;
        actions.into_iter().find(|a| a["state"] == "succeeded")
    });
    let id = restart["incident"].as_u64().expect("its incident");
    assert_ne!(daemon.replica("web", 0)["pid"].as_u64(), Some(u64::from(pids[0])), "replica 0 was restarted");
    // People in the loop: a pause and a resume while the incident is open.
    assert!(daemon.cli(&["pause"]).status.success());
    assert!(daemon.cli(&["resume"]).status.success());
    eventually(Duration::from_secs(10), "the pause and the resume are in the incident's timeline", || {
        let timeline = incident(&daemon, id)["timeline"].to_string();
        (timeline.contains("paused by an operator") && timeline.contains("resumed by an operator")).then_some(())
    });
    post_alert(&daemon, "resolved");
    eventually(Duration::from_secs(30), "the incident is resolved", || {
        (incident(&daemon, id)["state"] == "resolved").then_some(())
    });
    load.wait_for_more(50);
    daemon.wait_for_runner_to_move_on("web");
    daemon.wait_for_runner_to_move_on("web");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let report = load.join();
    assert!(report.ok > 100, "{report:?}");

    // The daemon's HTML: every section, charts of the real series with the incident marked, valid SVG.
    let response = get(daemon.api, &format!("/api/v1/incidents/{id}/report?format=html"));
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = response.header("content-security-policy").expect("a content security policy");
    assert!(csp.starts_with("default-src 'none'") && !csp.contains("script"), "{csp}");
    let page = response.body;
    sections_in(
        &page,
        &[
            &format!("<h1>Incident {id}: "),
            ">Summary</h2>",
            ">Time to detect, diagnose, recover</h2>",
            ">Diagnosis</h2>",
            ">Signals</h2>",
            ">Actions</h2>",
            ">Human decisions</h2>",
            ">Charts</h2>",
            ">Timeline</h2>",
            ">What was learnt</h2>",
            "@media print",
            "resolved after ",
            "alert:Sick",
            "<td>paused</td>",
            "<td>resumed</td>",
            "<title>web: replicas</title>",
            "<title>web: latency</title>",
            "<title>web: error ratio</title>",
            ">detected</text>",
            ">action</text>",
        ],
    );
    assert!(well_formed_svgs(&page) >= 3);
    assert!(!page.contains("<script") && !page.contains("<img"), "data reached the page unescaped");
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&lt;img src=x"), "the hostile summary");
    // The outcome the learn stage recorded for the restart.
    assert!(page.contains("<td>alert:Sick</td><td>resolved</td>"), "the restart's outcome is listed");

    // Markdown through the CLI (the token and address as for every client command), and to a file.
    let markdown = stdout(&daemon.cli(&["report", &id.to_string()]));
    sections_in(
        &markdown,
        &[
            &format!("# Incident {id}: "),
            "## Summary",
            "## Time to detect, diagnose, recover",
            "## Diagnosis",
            "## Signals",
            "## Actions",
            "## Human decisions",
            "## Timeline",
            "## What was learnt",
            "## Charts",
            "charts are omitted from the Markdown",
            "| paused |",
        ],
    );
    assert!(!markdown.contains("<script") && markdown.contains("&lt;script&gt;"), "{markdown}");
    assert!(markdown.contains("\\| \\*\\*bold\\*\\*"), "table syntax in data is escaped:\n{markdown}");
    let file = daemon.dir.path().join("report.html");
    let written = daemon.cli(&["report", &id.to_string(), "--format", "html", "-o", file.to_str().expect("utf-8")]);
    assert!(written.status.success() && written.stdout.is_empty(), "{written:?}");
    assert!(common::read(&file).contains("<title>web: replicas</title>"));

    // Wrong ids and formats are refused with their reason and a failing exit code.
    let unknown = daemon.cli(&["report", "9999"]);
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("no incident 9999"));
    let bad = daemon.cli(&["report", &id.to_string(), "--format", "pdf"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let api_bad = get(daemon.api, &format!("/api/v1/incidents/{id}/report?format=pdf"));
    assert_eq!(api_bad.status, 400, "{}", api_bad.body);
    assert!(api_bad.body.contains("invalid format \\\"pdf\\\": md or html"), "{}", api_bad.body);

    // Once mend has stopped, the CLI builds the report from the store alone, and says why it has no charts.
    let state_dir = daemon.state_dir();
    let _ = daemon.signal_and_wait(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    let state_dir = state_dir.to_str().expect("utf-8");
    let offline = stdout(&daemon.cli(&["report", &id.to_string(), "--format", "html", "--state-dir", state_dir]));
    sections_in(
        &offline,
        &[">Summary</h2>", ">Human decisions</h2>", ">What was learnt</h2>", "No charts: mend is not running at "],
    );
    assert!(!offline.contains("<svg") && !offline.contains("<script"));
    let offline_unknown = daemon.cli(&["report", "9999", "--state-dir", state_dir]);
    assert!(!offline_unknown.status.success());
    assert!(String::from_utf8_lossy(&offline_unknown.stderr).contains("no incident 9999"), "{offline_unknown:?}");
}
